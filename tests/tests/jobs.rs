//! Jobs (batch/v1) at the cloud, run by a real edge agent: `kubectl create job`, `kubectl wait
//! --for=condition=complete`, `kubectl logs job/J`, kubectl's Job columns; a failing job stops
//! at its backoffLimit; an Indexed job runs each index once with JOB_COMPLETION_INDEX;
//! ttlSecondsAfterFinished removes a finished job and its pods; bad specs get kube's 422.

use std::time::Duration;

use tests::registry::Registry;
use tests::{wait_for, Agent, CloudCore, EdgeCore};

const T: Duration = Duration::from_secs(120);

#[test]
fn jobs_run_to_completion_fail_at_their_limit_and_expire() {
    let reg = Registry::start();
    let scratch = tempfile::tempdir().unwrap();
    reg.push(
        &tests::registry::busybox_image(scratch.path(), "v1"),
        "busybox:v1",
    );
    let cc = CloudCore::start();
    let edge = EdgeCore::join(&cc, "s1", &cc.join_token("s1", "10m"));
    let _agent = Agent::start_with(&edge.kubeconfig(), "n1", &[reg.addr()]);
    wait_for("n1 Ready", T, || {
        cc.kubectl_ok(&["get", "nodes"]).contains(" Ready ")
    });
    let img = format!("{}/busybox:v1", reg.addr());
    let apply = |yaml: &str| {
        let o = tests::kubectl(
            &cc.kubeconfig(),
            cc.dir.path(),
            &["create", "-f", "-"],
            Some(yaml),
        );
        (
            o.status.success(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    };

    // kubectl create job, wait, logs, the table.
    cc.kubectl_ok(&[
        "create",
        "job",
        "hello",
        &format!("--image={img}"),
        "--",
        "sh",
        "-c",
        "echo hi from the job",
    ]);
    cc.kubectl_ok(&[
        "wait",
        "--for=condition=complete",
        "job/hello",
        "--timeout=120s",
    ]);
    assert_eq!(
        cc.kubectl_ok(&["logs", "job/hello"]).trim(),
        "hi from the job"
    );
    let row = cc.kubectl_ok(&["get", "job", "hello", "--no-headers"]);
    let cols: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(cols.get(1..3), Some(&["Complete", "1/1"][..]), "{row}");
    let conds = cc.jsonpath("job", "hello", "{.status.conditions[*].type}");
    assert_eq!(conds, "SuccessCriteriaMet Complete");
    assert_eq!(cc.jsonpath("job", "hello", "{.status.succeeded}"), "1");

    // A job that keeps failing stops at its backoff limit.
    let (ok, err) = apply(&format!(
        "apiVersion: batch/v1\nkind: Job\nmetadata: {{name: sad}}\nspec:\n  backoffLimit: 1\n  template:\n    spec:\n      restartPolicy: Never\n      containers: [{{name: c, image: {img}, command: [sh, -c, 'exit 3']}}]\n"
    ));
    assert!(ok, "{err}");
    cc.kubectl_ok(&[
        "wait",
        "--for=condition=failed",
        "job/sad",
        "--timeout=120s",
    ]);
    assert_eq!(
        cc.jsonpath(
            "job",
            "sad",
            "{.status.conditions[?(@.type==\"Failed\")].reason}"
        ),
        "BackoffLimitExceeded"
    );
    assert_eq!(cc.jsonpath("job", "sad", "{.status.failed}"), "2");
    let sad_pods = cc.kubectl_ok(&["get", "pods", "-l", "job-name=sad", "-o", "name"]);
    assert_eq!(sad_pods.lines().count(), 2, "{sad_pods}");

    // An Indexed job: each index once, told its index.
    let (ok, err) = apply(&format!(
        "apiVersion: batch/v1\nkind: Job\nmetadata: {{name: idx}}\nspec:\n  completions: 3\n  parallelism: 2\n  completionMode: Indexed\n  template:\n    spec:\n      restartPolicy: Never\n      containers: [{{name: c, image: {img}, command: [sh, -c, 'echo index $JOB_COMPLETION_INDEX']}}]\n"
    ));
    assert!(ok, "{err}");
    cc.kubectl_ok(&[
        "wait",
        "--for=condition=complete",
        "job/idx",
        "--timeout=120s",
    ]);
    assert_eq!(
        cc.jsonpath("job", "idx", "{.status.completedIndexes}"),
        "0-2"
    );
    let mut said: Vec<String> = cc
        .kubectl_ok(&["get", "pods", "-l", "job-name=idx", "-o", "name"])
        .lines()
        .map(|p| cc.kubectl_ok(&["logs", p]).trim().to_string())
        .collect();
    said.sort();
    assert_eq!(said, ["index 0", "index 1", "index 2"]);

    // ttlSecondsAfterFinished: the job and its pods go once it has finished.
    let (ok, err) = apply(&format!(
        "apiVersion: batch/v1\nkind: Job\nmetadata: {{name: brief}}\nspec:\n  ttlSecondsAfterFinished: 1\n  template:\n    spec:\n      restartPolicy: Never\n      containers: [{{name: c, image: {img}, command: ['true']}}]\n"
    ));
    assert!(ok, "{err}");
    wait_for("the expired job gone", T, || {
        !cc.kubectl(&["get", "job", "brief"]).status.success()
    });
    wait_for("its pods gone", T, || {
        cc.kubectl_ok(&["get", "pods", "-l", "job-name=brief", "-o", "name"])
            .trim()
            .is_empty()
    });

    // Bad specs: kube's 422s.
    let (ok, err) = apply(&format!(
        "apiVersion: batch/v1\nkind: Job\nmetadata: {{name: bad}}\nspec:\n  template:\n    spec:\n      containers: [{{name: c, image: {img}}}]\n"
    ));
    assert!(!ok);
    assert!(
        err.contains("spec.template.spec.restartPolicy: Unsupported value: \"Always\""),
        "{err}"
    );
    let (ok, err) = apply(&format!(
        "apiVersion: batch/v1\nkind: Job\nmetadata: {{name: bad2}}\nspec:\n  parallelism: -1\n  template:\n    spec:\n      restartPolicy: Never\n      containers: [{{name: c, image: {img}}}]\n"
    ));
    assert!(!ok);
    assert!(err.contains("spec.parallelism"), "{err}");
}
