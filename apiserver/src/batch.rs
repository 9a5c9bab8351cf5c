//! batch/v1 Jobs' strategy pieces: defaults as kube-apiserver sets them (the generated
//! selector on the job's uid and the labels it puts on the template), validation, and the
//! table's cells.

use chrono::{DateTime, Utc};
use proto::Cause;
use serde_json::{json, Value};

/// The label (and selector key) tying a job's pods to it.
pub const CONTROLLER_UID: &str = "batch.kubernetes.io/controller-uid";
/// The label naming a pod's job.
pub const JOB_NAME: &str = "batch.kubernetes.io/job-name";
/// The annotation (and label) carrying an indexed job's pod index.
pub const COMPLETION_INDEX: &str = "batch.kubernetes.io/job-completion-index";

fn set(obj: &mut Value, key: &str, v: Value) {
    if let Some(m) = obj.get_mut("spec").and_then(Value::as_object_mut) {
        if m.get(key).is_none_or(Value::is_null) {
            m.insert(key.into(), v);
        }
    }
}

/// A Job's own defaults (its template's pod defaults are applied by the API).
pub fn job_defaults(obj: &mut Value) {
    let uid = obj
        .pointer("/metadata/uid")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let name = obj
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let completions_set = obj
        .pointer("/spec/completions")
        .is_some_and(|v| !v.is_null());
    let parallelism_set = obj
        .pointer("/spec/parallelism")
        .is_some_and(|v| !v.is_null());
    if !completions_set && !parallelism_set {
        set(obj, "completions", json!(1));
    }
    set(obj, "parallelism", json!(1));
    set(obj, "backoffLimit", json!(6));
    set(obj, "completionMode", json!("NonIndexed"));
    set(obj, "suspend", json!(false));
    set(obj, "podReplacementPolicy", json!("TerminatingOrFailed"));
    let manual = obj
        .pointer("/spec/manualSelector")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    if manual || uid.is_empty() {
        return;
    }
    set(
        obj,
        "selector",
        json!({"matchLabels": {CONTROLLER_UID: uid}}),
    );
    if let Some(tpl) = obj.pointer_mut("/spec/template").filter(|t| t.is_object()) {
        if !tpl.get("metadata").is_some_and(Value::is_object) {
            tpl["metadata"] = json!({});
        }
        let meta = &mut tpl["metadata"];
        if !meta.get("labels").is_some_and(Value::is_object) {
            meta["labels"] = json!({});
        }
        if let Some(l) = meta["labels"].as_object_mut() {
            for (k, v) in [
                (CONTROLLER_UID, &uid),
                (JOB_NAME, &name),
                ("controller-uid", &uid),
                ("job-name", &name),
            ] {
                l.entry(k).or_insert_with(|| json!(v));
            }
        }
    }
}

fn nonnegative(spec: &Value, f: &str, causes: &mut Vec<Cause>) {
    if let Some(n) = spec.get(f).and_then(Value::as_i64) {
        if n < 0 {
            causes.push(Cause::invalid(
                format!("spec.{f}"),
                &n.to_string(),
                "must be greater than or equal to 0",
            ));
        }
    }
}

/// A Job.
pub fn validate_job(obj: &Value, causes: &mut Vec<Cause>) {
    let Some(spec) = obj.get("spec").filter(|s| s.is_object()) else {
        causes.push(Cause::required("spec"));
        return;
    };
    for f in [
        "parallelism",
        "completions",
        "backoffLimit",
        "activeDeadlineSeconds",
        "ttlSecondsAfterFinished",
    ] {
        nonnegative(spec, f, causes);
    }
    if let Some(d) = spec.get("activeDeadlineSeconds").and_then(Value::as_i64) {
        if d == 0 {
            causes.push(Cause::invalid(
                "spec.activeDeadlineSeconds",
                "0",
                "must be greater than 0",
            ));
        }
    }
    let mode = spec
        .get("completionMode")
        .and_then(Value::as_str)
        .unwrap_or("NonIndexed");
    if !matches!(mode, "NonIndexed" | "Indexed") {
        causes.push(Cause::not_supported(
            "spec.completionMode",
            mode,
            &["NonIndexed", "Indexed"],
        ));
    }
    if mode == "Indexed" && spec.get("completions").is_none_or(Value::is_null) {
        causes.push(Cause::required("spec.completions"));
    }
    let rp = spec
        .pointer("/template/spec/restartPolicy")
        .and_then(Value::as_str)
        .unwrap_or("");
    if !matches!(rp, "OnFailure" | "Never") {
        causes.push(Cause::not_supported(
            "spec.template.spec.restartPolicy",
            rp,
            &["OnFailure", "Never"],
        ));
    }
    if spec
        .pointer("/template/spec/containers")
        .and_then(Value::as_array)
        .is_none_or(Vec::is_empty)
    {
        causes.push(Cause::required("spec.template.spec.containers"));
    }
}

/// What may change on a Job: not its selector, template or completion mode (suspended jobs'
/// templates aside, which kube allows only for scheduling fields).
pub fn validate_job_update(new: &Value, old: &Value, causes: &mut Vec<Cause>) {
    for (ptr, field) in [
        ("/spec/selector", "spec.selector"),
        ("/spec/template", "spec.template"),
        ("/spec/completionMode", "spec.completionMode"),
    ] {
        if new.pointer(ptr) != old.pointer(ptr) {
            causes.push(Cause::immutable(field));
        }
    }
}

fn condition_true(o: &Value, ty: &str) -> bool {
    o.pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|cs| {
            cs.iter().any(|c| {
                c.get("type").and_then(Value::as_str) == Some(ty)
                    && c.get("status").and_then(Value::as_str) == Some("True")
            })
        })
}

fn time(o: &Value, ptr: &str) -> Option<DateTime<Utc>> {
    o.pointer(ptr)
        .and_then(Value::as_str)
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&Utc))
}

/// kubectl 1.32's Job columns: status, completions, duration.
pub fn job_cells(o: &Value) -> (Value, Value, Value) {
    let status = if condition_true(o, "Complete") {
        "Complete"
    } else if condition_true(o, "Failed") {
        "Failed"
    } else if condition_true(o, "FailureTarget") {
        "FailureTarget"
    } else if condition_true(o, "Suspended") {
        "Suspended"
    } else if condition_true(o, "SuccessCriteriaMet") {
        "SuccessCriteriaMet"
    } else {
        "Running"
    };
    let succeeded = o
        .pointer("/status/succeeded")
        .and_then(Value::as_i64)
        .unwrap_or(0);
    let completions = match o.pointer("/spec/completions").and_then(Value::as_i64) {
        Some(c) => format!("{succeeded}/{c}"),
        None => {
            let p = o
                .pointer("/spec/parallelism")
                .and_then(Value::as_i64)
                .unwrap_or(1);
            if p > 1 {
                format!("{succeeded}/1 of {p}")
            } else {
                format!("{succeeded}/1")
            }
        }
    };
    let duration = match time(o, "/status/startTime") {
        Some(start) => {
            let end = time(o, "/status/completionTime").unwrap_or_else(Utc::now);
            json!(crate::table::human_duration((end - start).num_seconds()))
        }
        None => json!(""),
    };
    (json!(status), json!(completions), duration)
}

// ---------------------------------------------------------------------------------------------
// CronJobs.

/// The annotation on a CronJob's Job naming the time it was scheduled for (RFC 3339, in the
/// CronJob's zone).
pub const SCHEDULED_TIMESTAMP: &str = "batch.kubernetes.io/cronjob-scheduled-timestamp";
/// The annotation `kubectl create job --from=cronjob/X` puts on the Job.
pub const INSTANTIATE: &str = "cronjob.kubernetes.io/instantiate";
/// The longest CronJob name: its Jobs add `-` and ten or eleven digits, within 63.
pub const MAX_CRONJOB_NAME: usize = 52;

/// A CronJob's own defaults, as kube-apiserver sets them (its job template's pod template
/// gets the pod defaults from the API; the job template's job spec is left as written, no
/// selector generated: each Job gets its own when it is created).
pub fn cronjob_defaults(obj: &mut Value) {
    if let Some(m) = obj.as_object_mut() {
        if m.get("spec").is_none_or(Value::is_null) {
            m.insert("spec".into(), json!({}));
        }
    }
    set(obj, "concurrencyPolicy", json!("Allow"));
    set(obj, "suspend", json!(false));
    set(obj, "successfulJobsHistoryLimit", json!(3));
    set(obj, "failedJobsHistoryLimit", json!(1));
    // Typed clients send the templates' zero `creationTimestamp`; kube-apiserver keeps none.
    for ptr in [
        "/spec/jobTemplate/metadata",
        "/spec/jobTemplate/spec/template/metadata",
    ] {
        if let Some(m) = obj.pointer_mut(ptr).and_then(Value::as_object_mut) {
            m.remove("creationTimestamp");
            m.remove("generation");
        }
    }
}

/// A CronJob (kube's `ValidateCronJobCreate`/`Update`): the schedule parses (no zone in it),
/// the zone is known, the policy is one of three, counts are not negative, the job template
/// is a valid Job's (restartPolicy OnFailure or Never) with no selector of its own, and the
/// name leaves room for the Jobs' suffix.
pub fn validate_cronjob(obj: &Value, causes: &mut Vec<Cause>) {
    let name = obj
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    if name.len() > MAX_CRONJOB_NAME {
        causes.push(Cause::invalid(
            "metadata.name",
            name,
            "must be no more than 52 characters",
        ));
    }
    let Some(spec) = obj.get("spec").filter(|s| s.is_object()) else {
        causes.push(Cause::required("spec"));
        return;
    };
    match spec.get("schedule").and_then(Value::as_str).unwrap_or("") {
        "" => causes.push(Cause::required("spec.schedule")),
        sched => {
            if let Err(e) = crate::cron::Schedule::parse(sched) {
                causes.push(Cause::invalid("spec.schedule", sched, &e));
            }
            if sched.contains("TZ") {
                causes.push(Cause::invalid(
                    "spec.schedule",
                    sched,
                    "cannot use TZ or CRON_TZ in schedule, use timeZone field instead",
                ));
            }
        }
    }
    if let Some(tz) = spec.get("timeZone").and_then(Value::as_str) {
        if let Some(e) = crate::cron::zone_errors(tz) {
            causes.push(Cause::invalid("spec.timeZone", tz, &e));
        }
    }
    for f in [
        "startingDeadlineSeconds",
        "successfulJobsHistoryLimit",
        "failedJobsHistoryLimit",
    ] {
        nonnegative(spec, f, causes);
    }
    let policy = spec
        .get("concurrencyPolicy")
        .and_then(Value::as_str)
        .unwrap_or("");
    if policy.is_empty() {
        causes.push(Cause::required("spec.concurrencyPolicy"));
    } else if !matches!(policy, "Allow" | "Forbid" | "Replace") {
        causes.push(Cause::not_supported(
            "spec.concurrencyPolicy",
            policy,
            &["Allow", "Forbid", "Replace"],
        ));
    }
    // The job template: a Job's rules, its fields under spec.jobTemplate.spec.
    let Some(job_spec) = spec.pointer("/jobTemplate/spec") else {
        causes.push(Cause::required("spec.jobTemplate.spec"));
        return;
    };
    let mut inner = Vec::new();
    validate_job(&json!({"spec": job_spec}), &mut inner);
    causes.extend(inner.into_iter().map(|mut c| {
        c.field = match c.field.strip_prefix("spec") {
            Some(rest) => format!("spec.jobTemplate.spec{rest}"),
            None => c.field,
        };
        c
    }));
    if job_spec.get("selector").is_some_and(|s| !s.is_null()) {
        causes.push(Cause::invalid(
            "spec.jobTemplate.spec.selector",
            &job_spec["selector"].to_string(),
            "`selector` will be auto-generated",
        ));
    }
    if job_spec.get("manualSelector").and_then(Value::as_bool) == Some(true) {
        causes.push(Cause::not_supported(
            "spec.jobTemplate.spec.manualSelector",
            "true",
            &["nil", "false"],
        ));
    }
}

/// kubectl 1.32's CronJob columns after the name: schedule, zone, suspend, active, last
/// schedule.
pub fn cronjob_cells(o: &Value, now: DateTime<Utc>) -> [Value; 5] {
    let suspend = match o.pointer("/spec/suspend").and_then(Value::as_bool) {
        Some(true) => "True",
        Some(false) => "False",
        None => "<unset>",
    };
    let zone = o
        .pointer("/spec/timeZone")
        .and_then(Value::as_str)
        .unwrap_or("<none>");
    let active = o
        .pointer("/status/active")
        .and_then(Value::as_array)
        .map_or(0, Vec::len);
    let last = match time(o, "/status/lastScheduleTime") {
        Some(t) => crate::table::human_duration((now - t).num_seconds()),
        None => "<none>".into(),
    };
    [
        json!(o
            .pointer("/spec/schedule")
            .and_then(Value::as_str)
            .unwrap_or("")),
        json!(zone),
        json!(suspend),
        json!(active),
        json!(last),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cronjob() -> Value {
        json!({"apiVersion": "batch/v1", "kind": "CronJob",
            "metadata": {"name": "tick", "namespace": "default"},
            "spec": {"schedule": "*/5 * * * *", "jobTemplate": {"metadata": {"creationTimestamp": null},
                "spec": {"template": {"spec": {"restartPolicy": "OnFailure",
                    "containers": [{"name": "c", "image": "busybox"}]}}}}}})
    }

    fn fields(obj: &Value) -> Vec<String> {
        let mut causes = Vec::new();
        validate_cronjob(obj, &mut causes);
        causes.into_iter().map(|c| c.field).collect()
    }

    #[test]
    fn cronjob_defaults_are_kubes() {
        let mut cj = cronjob();
        cronjob_defaults(&mut cj);
        let spec = &cj["spec"];
        assert_eq!(spec["concurrencyPolicy"], "Allow");
        assert_eq!(spec["suspend"], false);
        assert_eq!(spec["successfulJobsHistoryLimit"], 3);
        assert_eq!(spec["failedJobsHistoryLimit"], 1);
        // No selector, no job-level defaults in the template: each Job gets its own.
        assert!(spec.pointer("/jobTemplate/spec/selector").is_none());
        assert!(spec.pointer("/jobTemplate/spec/backoffLimit").is_none());
        assert_eq!(spec.pointer("/jobTemplate/metadata"), Some(&json!({})));
        // What was written stays.
        let mut cj = cronjob();
        cj["spec"]["suspend"] = json!(true);
        cj["spec"]["concurrencyPolicy"] = json!("Forbid");
        cronjob_defaults(&mut cj);
        assert_eq!(cj["spec"]["suspend"], true);
        assert_eq!(cj["spec"]["concurrencyPolicy"], "Forbid");
    }

    #[test]
    fn cronjob_validation_names_the_field() {
        let mut ok = cronjob();
        cronjob_defaults(&mut ok);
        assert!(fields(&ok).is_empty(), "{:?}", fields(&ok));
        let bad = |f: &dyn Fn(&mut Value)| {
            let mut v = ok.clone();
            f(&mut v);
            fields(&v)
        };
        assert_eq!(
            bad(&|v| v["spec"]["schedule"] = json!("61 * * * *")),
            ["spec.schedule"]
        );
        assert_eq!(
            bad(&|v| v["spec"]["schedule"] = json!("")),
            ["spec.schedule"]
        );
        assert_eq!(
            bad(&|v| v["spec"]["schedule"] = json!("CRON_TZ=UTC 0 * * * *")),
            ["spec.schedule"]
        );
        assert_eq!(
            bad(&|v| v["spec"]["timeZone"] = json!("Mars/Olympus")),
            ["spec.timeZone"]
        );
        assert!(bad(&|v| v["spec"]["timeZone"] = json!("Europe/Paris")).is_empty());
        assert_eq!(
            bad(&|v| v["spec"]["concurrencyPolicy"] = json!("Sometimes")),
            ["spec.concurrencyPolicy"]
        );
        assert_eq!(
            bad(&|v| v["spec"]["successfulJobsHistoryLimit"] = json!(-1)),
            ["spec.successfulJobsHistoryLimit"]
        );
        assert_eq!(
            bad(&|v| v["spec"]["failedJobsHistoryLimit"] = json!(-1)),
            ["spec.failedJobsHistoryLimit"]
        );
        assert_eq!(
            bad(&|v| v["spec"]["startingDeadlineSeconds"] = json!(-5)),
            ["spec.startingDeadlineSeconds"]
        );
        assert_eq!(
            bad(
                &|v| v["spec"]["jobTemplate"]["spec"]["template"]["spec"]["restartPolicy"] =
                    json!("Always")
            ),
            ["spec.jobTemplate.spec.template.spec.restartPolicy"]
        );
        assert_eq!(
            bad(&|v| v["spec"]["jobTemplate"]["spec"]["selector"] =
                json!({"matchLabels": {"a": "b"}})),
            ["spec.jobTemplate.spec.selector"]
        );
        assert_eq!(
            bad(&|v| v["metadata"]["name"] = json!("x".repeat(53))),
            ["metadata.name"]
        );
        assert!(bad(&|v| v["metadata"]["name"] = json!("x".repeat(52))).is_empty());
        let mut causes = Vec::new();
        let mut v = ok.clone();
        v["spec"]["schedule"] = json!("61 * * * *");
        validate_cronjob(&v, &mut causes);
        assert_eq!(
            causes[0].message,
            "Invalid value: \"61 * * * *\": end of range (61) above maximum (59): 61"
        );
    }

    #[test]
    fn cronjob_cells_are_kubectls() {
        let now = Utc::now();
        let mut cj = cronjob();
        cronjob_defaults(&mut cj);
        let c = cronjob_cells(&cj, now);
        assert_eq!(
            c,
            [
                json!("*/5 * * * *"),
                json!("<none>"),
                json!("False"),
                json!(0),
                json!("<none>")
            ]
        );
        cj["spec"]["timeZone"] = json!("Europe/Paris");
        cj["status"] = json!({"active": [{"name": "a"}, {"name": "b"}],
            "lastScheduleTime": (now - chrono::Duration::seconds(90)).to_rfc3339()});
        let c = cronjob_cells(&cj, now);
        assert_eq!(
            c,
            [
                json!("*/5 * * * *"),
                json!("Europe/Paris"),
                json!("False"),
                json!(2),
                json!("90s")
            ]
        );
    }
}
