//! CronJobs (batch/v1) at the cloud, their Jobs run by a real edge agent: `kubectl create
//! cronjob` with a `* * * * *` schedule runs a Job at the next minute that completes, named
//! and annotated as kube names them and created within moments of its time; kubectl's
//! CronJob columns (and `-o wide`); `kubectl create job --from=cronjob/X`; a CronJob
//! suspended with `kubectl patch` starts nothing; a history limit of 0 deletes the finished
//! Job; deleting a CronJob deletes its Jobs; bad schedules and zones get kube's 422 naming the
//! field.
//!
//! Forbid and Replace, longer histories, missed times, deadlines and zones are the
//! controller's unit tests (a controlled clock): here a schedule costs real minutes.

use std::time::Duration;

use chrono::{DateTime, Utc};
use tests::registry::Registry;
use tests::{wait_for, Agent, CloudCore, EdgeCore};

const T: Duration = Duration::from_secs(120);

fn time(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s.trim())
        .unwrap_or_else(|e| panic!("{s:?}: {e}"))
        .with_timezone(&Utc)
}

#[test]
fn cronjobs_run_on_schedule_suspend_and_instantiate() {
    let reg = Registry::start();
    let scratch = tempfile::tempdir().unwrap();
    reg.push(
        &tests::registry::busybox_image(scratch.path(), "v1"),
        "busybox:v1",
    );
    let cc = CloudCore::start();
    let edge = EdgeCore::join(&cc, "s1", &cc.join_token("s1", "10m"));
    let _agent = Agent::start_with(&edge.kubeconfig(), "n1", &[reg.addr()]);
    let img = format!("{}/busybox:v1", reg.addr());
    // kubectl -v=6 logs each response's status line: the 422s are seen as such.
    let create = |yaml: &str| {
        let o = tests::kubectl(
            &cc.kubeconfig(),
            cc.dir.path(),
            &["create", "-v=6", "-f", "-"],
            Some(yaml),
        );
        (
            o.status.success(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    };
    let cronjob = |name: &str, spec: &str| {
        format!(
            "apiVersion: batch/v1\nkind: CronJob\nmetadata: {{name: {name}}}\nspec:\n{spec}  jobTemplate:\n    spec:\n      template:\n        spec:\n          restartPolicy: OnFailure\n          containers: [{{name: c, image: {img}, command: [sh, -c, 'echo tick']}}]\n"
        )
    };

    // Bad input: kube's 422, naming the field.
    let (ok, err) = create(&cronjob("bad", "  schedule: '61 * * * *'\n"));
    assert!(!ok);
    assert!(err.contains("422 Unprocessable Entity"), "{err}");
    assert!(
        err.contains(
            "spec.schedule: Invalid value: \"61 * * * *\": end of range (61) above maximum (59): 61"
        ),
        "{err}"
    );
    let (ok, err) = create(&cronjob(
        "bad",
        "  schedule: '* * * * *'\n  timeZone: Mars/Olympus\n",
    ));
    assert!(!ok);
    assert!(err.contains("422 Unprocessable Entity"), "{err}");
    assert!(
        err.contains(
            "spec.timeZone: Invalid value: \"Mars/Olympus\": unknown time zone Mars/Olympus"
        ),
        "{err}"
    );
    let (ok, err) = create(&cronjob("bad", "  schedule: 'CRON_TZ=UTC * * * * *'\n"));
    assert!(!ok);
    assert!(
        err.contains("cannot use TZ or CRON_TZ in schedule, use timeZone field instead"),
        "{err}"
    );
    assert!(
        !cc.kubectl(&["get", "cronjob", "bad"]).status.success(),
        "nothing stored"
    );

    wait_for("n1 Ready", T, || {
        cc.kubectl_ok(&["get", "nodes"]).contains(" Ready ")
    });
    // kubectl create cronjob: every minute.
    cc.kubectl_ok(&[
        "create",
        "cronjob",
        "every",
        &format!("--image={img}"),
        "--schedule=* * * * *",
        "--",
        "sh",
        "-c",
        "echo tick",
    ]);
    // Suspended right after it is made: it starts nothing from then on.
    cc.kubectl_ok(&[
        "create",
        "cronjob",
        "quiet",
        &format!("--image={img}"),
        "--schedule=* * * * *",
        "--",
        "true",
    ]);
    cc.kubectl_ok(&[
        "patch",
        "cronjob",
        "quiet",
        "-p",
        r#"{"spec":{"suspend":true}}"#,
    ]);
    let suspended_at = Utc::now();
    // No history: its finished Job goes at once.
    let (ok, err) = create(&cronjob(
        "brief",
        "  schedule: '* * * * *'\n  successfulJobsHistoryLimit: 0\n",
    ));
    assert!(ok, "{err}");

    // kube's defaults and kubectl's columns.
    assert_eq!(
        cc.jsonpath(
            "cronjob",
            "every",
            "{.spec.concurrencyPolicy} {.spec.suspend} {.spec.successfulJobsHistoryLimit} {.spec.failedJobsHistoryLimit}"
        ),
        "Allow false 3 1"
    );
    let table = cc.kubectl_ok(&["get", "cronjobs"]);
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        ["NAME", "SCHEDULE", "TIMEZONE", "SUSPEND", "ACTIVE", "LAST", "SCHEDULE", "AGE"],
        "{table}"
    );
    let row = |table: &str, name: &str| -> Vec<String> {
        table
            .lines()
            .find(|l| l.starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("no {name} in {table}"))
            .split_whitespace()
            .map(String::from)
            .collect()
    };
    let quiet = row(&table, "quiet");
    // NAME, the schedule's five fields, TIMEZONE, SUSPEND, ACTIVE, LAST SCHEDULE, AGE.
    assert_eq!(
        quiet[1..10],
        ["*", "*", "*", "*", "*", "<none>", "True", "0", "<none>"],
        "{table}"
    );
    let wide = cc.kubectl_ok(&["get", "cronjob", "every", "-o", "wide"]);
    let header: Vec<&str> = wide.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header[header.len() - 3..],
        ["CONTAINERS", "IMAGES", "SELECTOR"],
        "{wide}"
    );
    let every = row(&wide, "every");
    assert_eq!(
        every[every.len() - 3..],
        ["every".to_string(), img.clone(), "<none>".into()],
        "{wide}"
    );
    assert_eq!(
        cc.kubectl_ok(&["get", "cj", "-o", "name"]).lines().count(),
        3
    );

    // kubectl create job --from=cronjob/every: a Job of the template, now.
    cc.kubectl_ok(&["create", "job", "manual", "--from=cronjob/every"]);
    cc.kubectl_ok(&[
        "wait",
        "--for=condition=complete",
        "job/manual",
        "--timeout=120s",
    ]);
    assert_eq!(cc.kubectl_ok(&["logs", "job/manual"]).trim(), "tick");
    assert_eq!(
        cc.jsonpath(
            "job",
            "manual",
            "{.metadata.annotations.cronjob\\.kubernetes\\.io/instantiate} {.metadata.ownerReferences[0].kind} {.metadata.ownerReferences[0].name}"
        ),
        "manual CronJob every"
    );

    // The schedule: at the next minute a Job of `every` starts, and completes.
    let jobs_of = |cj: &str| -> Vec<String> {
        cc.kubectl_ok(&["get", "jobs", "-o", "name"])
            .lines()
            .filter_map(|l| l.strip_prefix("job.batch/"))
            .filter(|n| {
                n.strip_prefix(&format!("{cj}-"))
                    .is_some_and(|rest| rest.bytes().all(|b| b.is_ascii_digit()))
            })
            .map(String::from)
            .collect()
    };
    let mut first = String::new();
    wait_for(
        "a scheduled job of every",
        Duration::from_secs(150),
        || match jobs_of("every").first() {
            Some(j) => {
                first = j.clone();
                true
            }
            None => false,
        },
    );
    let scheduled = cc.jsonpath(
        "job",
        &first,
        "{.metadata.annotations.batch\\.kubernetes\\.io/cronjob-scheduled-timestamp}",
    );
    let scheduled = time(&scheduled);
    assert_eq!(first, format!("every-{}", scheduled.timestamp() / 60));
    assert_eq!(scheduled.timestamp() % 60, 0, "a minute's start");
    let created = time(&cc.jsonpath("job", &first, "{.metadata.creationTimestamp}"));
    let late = created - scheduled;
    assert!(
        late >= chrono::Duration::zero() && late <= chrono::Duration::seconds(5),
        "created {late} after its time"
    );
    assert_eq!(
        cc.jsonpath(
            "job",
            &first,
            "{.metadata.ownerReferences[0].kind}/{.metadata.ownerReferences[0].name} {.metadata.ownerReferences[0].controller}"
        ),
        "CronJob/every true"
    );
    cc.kubectl_ok(&[
        "wait",
        "--for=condition=complete",
        &format!("job/{first}"),
        "--timeout=120s",
    ]);
    assert_eq!(
        cc.kubectl_ok(&["logs", &format!("job/{first}")]).trim(),
        "tick"
    );
    wait_for("every's status to record the success", T, || {
        !cc.jsonpath("cronjob", "every", "{.status.lastSuccessfulTime}")
            .is_empty()
            && cc
                .jsonpath("cronjob", "every", "{.status.active}")
                .is_empty()
    });
    assert!(time(&cc.jsonpath("cronjob", "every", "{.status.lastScheduleTime}")) >= scheduled);
    let every = row(&cc.kubectl_ok(&["get", "cronjobs"]), "every");
    assert_eq!(every[6..9], ["<none>", "False", "0"], "{every:?}");
    assert_ne!(every[9], "<none>", "LAST SCHEDULE: {every:?}");
    let described = cc.kubectl_ok(&["describe", "cronjob", "every"]);
    for want in [
        "Schedule:",
        "Concurrency Policy:",
        "Allow",
        "Last Schedule Time:",
        "SuccessfulCreate",
    ] {
        assert!(described.contains(want), "{want}: {described}");
    }
    assert!(cc
        .kubectl_ok(&["get", "all", "-o", "name"])
        .contains("cronjob.batch/every"));
    let events = cc.kubectl_ok(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.kind=CronJob,involvedObject.name=every",
        "-o",
        "jsonpath={range .items[*]}{.reason}: {.message}{\"\\n\"}{end}",
    ]);
    assert!(
        events.contains(&format!("SuccessfulCreate: Created job {first}")),
        "{events}"
    );
    assert!(
        events.contains(&format!(
            "SawCompletedJob: Saw completed job: {first}, condition: Complete"
        )),
        "{events}"
    );

    // Suspended: nothing for the times since the patch (once one has passed: almost always
    // the first job's, unless a minute began between the two creates).
    let minutes = |j: &str, cj: &str| -> i64 { j[cj.len() + 1..].parse().unwrap_or(0) };
    wait_for(
        "a schedule time after the patch",
        Duration::from_secs(150),
        || {
            jobs_of("every")
                .iter()
                .any(|j| minutes(j, "every") * 60 > suspended_at.timestamp())
        },
    );
    let after_patch: Vec<String> = jobs_of("quiet")
        .into_iter()
        .filter(|j| minutes(j, "quiet") * 60 > suspended_at.timestamp())
        .collect();
    assert!(after_patch.is_empty(), "{after_patch:?}");

    // History limit 0: brief's finished Job is deleted once the success is seen.
    wait_for("brief's success recorded", T, || {
        !cc.jsonpath("cronjob", "brief", "{.status.lastSuccessfulTime}")
            .is_empty()
    });
    wait_for("brief's finished job deleted", T, || {
        jobs_of("brief").is_empty()
    });
    let events = cc.kubectl_ok(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.kind=CronJob,involvedObject.name=brief",
        "-o",
        "jsonpath={range .items[*]}{.reason}{\"\\n\"}{end}",
    ]);
    assert!(events.contains("SuccessfulDelete"), "{events}");

    // Deleting a CronJob deletes its Jobs (the scheduled ones and the one made from it).
    cc.kubectl_ok(&["delete", "cronjob", "every"]);
    wait_for("every's jobs gone with it", T, || {
        jobs_of("every").is_empty() && !cc.kubectl(&["get", "job", "manual"]).status.success()
    });
}
