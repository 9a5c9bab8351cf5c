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
