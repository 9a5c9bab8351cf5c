//! The Job controller (batch/v1): runs a job's pods to completion, `parallelism` at a time,
//! until `completions` have succeeded (each index once, for an Indexed job); counts failures
//! (a pod that failed, or a container restart under `OnFailure`) against `backoffLimit`; ends
//! the job at `activeDeadlineSeconds`; stops its pods while it is suspended; and deletes a
//! finished job `ttlSecondsAfterFinished` after it finished. The conditions are kube's
//! (`SuccessCriteriaMet` then `Complete`; `FailureTarget` then `Failed`; `Suspended`).

use apiserver::batch::{COMPLETION_INDEX, CONTROLLER_UID, JOB_NAME};

use super::*;

fn condition<'a>(job: &'a Value, ty: &str) -> Option<&'a Value> {
    job.pointer("/status/conditions")
        .and_then(Value::as_array)?
        .iter()
        .find(|c| c.get("type").and_then(Value::as_str) == Some(ty))
}

fn is_true(job: &Value, ty: &str) -> bool {
    condition(job, ty)
        .and_then(|c| c.get("status"))
        .and_then(Value::as_str)
        == Some("True")
}

fn set_condition(conds: &mut Vec<Value>, ty: &str, status: &str, reason: &str, msg: &str) {
    let now = now_str();
    match conds
        .iter_mut()
        .find(|c| c.get("type").and_then(Value::as_str) == Some(ty))
    {
        Some(c) if c.get("status").and_then(Value::as_str) == Some(status) => {}
        Some(c) => {
            *c = json!({"type": ty, "status": status, "reason": reason, "message": msg,
                "lastProbeTime": now, "lastTransitionTime": now});
        }
        None => conds.push(
            json!({"type": ty, "status": status, "reason": reason, "message": msg,
            "lastProbeTime": now, "lastTransitionTime": now}),
        ),
    }
}

fn time(v: &Value, ptr: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    v.pointer(ptr)
        .and_then(Value::as_str)
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&chrono::Utc))
}

fn index_of(p: &Value) -> Option<i64> {
    p.pointer("/metadata/annotations")
        .and_then(|a| a.get(COMPLETION_INDEX))
        .and_then(Value::as_str)
        .and_then(|s| s.parse().ok())
}

/// Container restarts of a pod (failures under `OnFailure`).
fn restarts(p: &Value) -> i64 {
    ["containerStatuses", "initContainerStatuses"]
        .iter()
        .filter_map(|k| p.pointer(&format!("/status/{k}"))?.as_array())
        .flatten()
        .filter_map(|c| c.get("restartCount")?.as_i64())
        .sum()
}

/// `1,3-5,7`: kube's compressed list of completed indexes.
fn compress(idx: &std::collections::BTreeSet<i64>) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut it = idx.iter().copied().peekable();
    while let Some(start) = it.next() {
        let mut end = start;
        while it.peek() == Some(&(end + 1)) {
            end += 1;
            it.next();
        }
        out.push(if start == end {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
    }
    out.join(",")
}

/// A new pod of `job` (`index`: an Indexed job's), with the job's labels.
fn job_pod(key: &Key, job: &Value, index: Option<i64>) -> (Key, Value) {
    let tpl = job.pointer("/spec/template").cloned().unwrap_or(json!({}));
    let prefix = match index {
        Some(i) => format!("{}-{i}", key.name),
        None => key.name.clone(),
    };
    let (k, mut pod) = pod_from_template(key, job, "Job", &tpl, &prefix);
    let m = &mut pod["metadata"];
    if !m.get("labels").is_some_and(Value::is_object) {
        m["labels"] = json!({});
    }
    m["labels"][CONTROLLER_UID] = json!(meta(job, "uid"));
    m["labels"][JOB_NAME] = json!(key.name);
    if let Some(i) = index {
        m["labels"][COMPLETION_INDEX] = json!(i.to_string());
        if !m.get("annotations").is_some_and(Value::is_object) {
            m["annotations"] = json!({});
        }
        m["annotations"][COMPLETION_INDEX] = json!(i.to_string());
        // kube's downward-API variable for the index.
        for list in ["containers", "initContainers"] {
            if let Some(cs) = pod["spec"][list].as_array_mut() {
                for c in cs {
                    if !c.get("env").is_some_and(Value::is_array) {
                        c["env"] = json!([]);
                    }
                    if let Some(env) = c["env"].as_array_mut() {
                        env.push(json!({"name": "JOB_COMPLETION_INDEX", "valueFrom": {"fieldRef": {"fieldPath": format!("metadata.annotations['{COMPLETION_INDEX}']")}}}));
                    }
                }
            }
        }
    }
    (k, pod)
}

pub(super) async fn sync_job(w: &Writer, key: &Key, job: &Value) -> bool {
    if terminating(job) {
        return false;
    }
    let now = chrono::Utc::now();
    let finished = is_true(job, "Complete") || is_true(job, "Failed");
    if finished {
        // ttlSecondsAfterFinished: the job goes (its pods with it, by the garbage collector).
        if let Some(ttl) = job
            .pointer("/spec/ttlSecondsAfterFinished")
            .and_then(Value::as_i64)
        {
            let done = time(job, "/status/completionTime")
                .or_else(|| {
                    ["Complete", "Failed"].iter().find_map(|t| {
                        condition(job, t)
                            .and_then(|c| c.get("lastTransitionTime"))
                            .and_then(Value::as_str)
                            .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
                            .map(|d| d.with_timezone(&chrono::Utc))
                    })
                })
                .unwrap_or(now);
            if (now - done).num_seconds() >= ttl {
                tracing::info!(job = %key.name, namespace = %key.namespace, "finished job past its TTL; deleting");
                return w.delete(key, job, None, Some("Background")).await.is_ok();
            }
        }
        // A failed job's pods that still run are stopped.
        if is_true(job, "Failed") {
            let mut changed = false;
            for (k, p) in list_ns(w.store(), "pods", &key.tenant, &key.namespace) {
                if controller_uid(&p) == Some(meta(job, "uid")) && pod_active(&p) {
                    changed |= delete_pod(w, &k, &p).await;
                }
            }
            return changed;
        }
        return false;
    }
    let mut changed = false;
    let pods = list_ns(w.store(), "pods", &key.tenant, &key.namespace);
    let owned = claim(w, job, "Job", pods).await;
    let spec = job.get("spec").cloned().unwrap_or(json!({}));
    let indexed = spec.get("completionMode").and_then(Value::as_str) == Some("Indexed");
    let completions = spec.get("completions").and_then(Value::as_i64);
    let parallelism = spec
        .get("parallelism")
        .and_then(Value::as_i64)
        .unwrap_or(1)
        .max(0);
    let backoff_limit = spec
        .get("backoffLimit")
        .and_then(Value::as_i64)
        .unwrap_or(6);
    let suspended = spec
        .get("suspend")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let on_failure = spec
        .pointer("/template/spec/restartPolicy")
        .and_then(Value::as_str)
        == Some("OnFailure");

    let phase = |p: &Value| {
        p.pointer("/status/phase")
            .and_then(Value::as_str)
            .map(String::from)
    };
    let active: Vec<&(Key, Value)> = owned.iter().filter(|(_, p)| pod_active(p)).collect();
    let succeeded_pods: Vec<&(Key, Value)> = owned
        .iter()
        .filter(|(_, p)| phase(p).as_deref() == Some("Succeeded"))
        .collect();
    let failed_pods = owned
        .iter()
        .filter(|(_, p)| phase(p).as_deref() == Some("Failed"))
        .count() as i64;
    let restarted: i64 = if on_failure {
        owned.iter().map(|(_, p)| restarts(p)).sum()
    } else {
        0
    };
    // Counters never go down (pods of a finished count may be removed by then).
    let prev = |f: &str| {
        job.pointer(&format!("/status/{f}"))
            .and_then(Value::as_i64)
            .unwrap_or(0)
    };
    let mut done_idx: std::collections::BTreeSet<i64> = job
        .pointer("/status/completedIndexes")
        .and_then(Value::as_str)
        .unwrap_or("")
        .split(',')
        .filter(|s| !s.is_empty())
        .flat_map(|r| match r.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (a.parse().unwrap_or(0), b.parse().unwrap_or(-1));
                (a..=b).collect::<Vec<i64>>()
            }
            None => r.parse().ok().into_iter().collect(),
        })
        .collect();
    for (_, p) in &succeeded_pods {
        if let Some(i) = index_of(p) {
            done_idx.insert(i);
        }
    }
    let succeeded = if indexed {
        done_idx.len() as i64
    } else {
        prev("succeeded").max(succeeded_pods.len() as i64)
    };
    let failed = prev("failed").max(failed_pods + restarted);

    let mut status = job
        .get("status")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let mut conds: Vec<Value> = status
        .get("conditions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if !suspended && !status.contains_key("startTime") {
        status.insert("startTime".into(), json!(now_str()));
    }
    let started = status
        .get("startTime")
        .and_then(Value::as_str)
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&chrono::Utc));
    let complete = match completions {
        Some(c) => succeeded >= c,
        // A work queue: done once one pod succeeded and none is left running.
        None => succeeded > 0 && active.is_empty(),
    };
    let deadline_hit = !suspended
        && spec
            .get("activeDeadlineSeconds")
            .and_then(Value::as_i64)
            .zip(started)
            .is_some_and(|(d, s)| (now - s).num_seconds() >= d);
    let failure = if complete {
        None
    } else if failed > backoff_limit {
        Some((
            "BackoffLimitExceeded",
            "Job has reached the specified backoff limit",
        ))
    } else if deadline_hit {
        Some((
            "DeadlineExceeded",
            "Job was active longer than specified deadline",
        ))
    } else {
        None
    };

    if complete {
        set_condition(
            &mut conds,
            "SuccessCriteriaMet",
            "True",
            "CompletionsReached",
            "Reached expected number of succeeded pods",
        );
        set_condition(
            &mut conds,
            "Complete",
            "True",
            "CompletionsReached",
            "Reached expected number of succeeded pods",
        );
        status.insert("completionTime".into(), json!(now_str()));
        owner_event_on(w, key, job, "Normal", "Completed", "Job completed").await;
    } else if let Some((reason, msg)) = failure {
        set_condition(&mut conds, "FailureTarget", "True", reason, msg);
        set_condition(&mut conds, "Failed", "True", reason, msg);
        owner_event_on(w, key, job, "Warning", reason, msg).await;
        for (k, p) in &active {
            changed |= delete_pod(w, k, p).await;
        }
    } else if suspended {
        set_condition(
            &mut conds,
            "Suspended",
            "True",
            "JobSuspended",
            "Job suspended",
        );
        for (k, p) in &active {
            changed |= delete_pod(w, k, p).await;
        }
    } else {
        if condition(job, "Suspended").is_some() {
            set_condition(
                &mut conds,
                "Suspended",
                "False",
                "JobResumed",
                "Job resumed",
            );
        }
        // Start pods toward parallelism, never beyond what is left to complete.
        let running = active.len() as i64;
        if indexed {
            let c = completions.unwrap_or(0);
            let busy: std::collections::HashSet<i64> =
                active.iter().filter_map(|(_, p)| index_of(p)).collect();
            let todo: Vec<i64> = (0..c)
                .filter(|i| !done_idx.contains(i) && !busy.contains(i))
                .take(
                    usize::try_from((parallelism - running).max(0))
                        .unwrap_or(0)
                        .min(BURST),
                )
                .collect();
            for i in todo {
                let (k, pod) = job_pod(key, job, Some(i));
                changed |= create(w, k, pod).await;
            }
        } else {
            let left = match completions {
                Some(c) => (c - succeeded).max(0),
                // A work queue: no more pods once one succeeded.
                None if succeeded > 0 => 0,
                None => parallelism,
            };
            let want = parallelism.min(left);
            for _ in 0..usize::try_from((want - running).max(0))
                .unwrap_or(0)
                .min(BURST)
            {
                let (k, pod) = job_pod(key, job, None);
                changed |= create(w, k, pod).await;
            }
        }
    }
    let still: Vec<Arc<Value>> = list_ns(w.store(), "pods", &key.tenant, &key.namespace)
        .into_iter()
        .map(|(_, p)| p)
        .filter(|p| controller_uid(p) == Some(meta(job, "uid")) && pod_active(p))
        .collect();
    status.insert("active".into(), json!(still.len()));
    status.insert(
        "ready".into(),
        json!(still.iter().filter(|p| pod_ready(p)).count()),
    );
    status.insert("succeeded".into(), json!(succeeded));
    status.insert("failed".into(), json!(failed));
    status.insert("terminating".into(), json!(0));
    if indexed {
        status.insert("completedIndexes".into(), json!(compress(&done_idx)));
    }
    if !conds.is_empty() {
        status.insert("conditions".into(), json!(conds));
    }
    status.insert("uncountedTerminatedPods".into(), json!({}));
    omit_zeros(
        &mut status,
        &["active", "succeeded", "failed", "terminating"],
    );
    changed |= write_status(w, key, job, status).await;
    changed
}

/// An event on the job itself (`owner_event` records on an object's owner).
async fn owner_event_on(w: &Writer, key: &Key, job: &Value, ty: &str, reason: &str, msg: &str) {
    let involved = json!({"apiVersion": "batch/v1", "kind": "Job", "namespace": key.namespace,
        "name": key.name, "uid": meta(job, "uid")});
    let name = format!("{}.{:x}", key.name, rand::random::<u64>());
    record_event(w, key, name, involved, "job-controller", ty, reason, msg).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completed_indexes_compress_like_kube() {
        let s: std::collections::BTreeSet<i64> = [0, 1, 2, 4, 6, 7].into_iter().collect();
        assert_eq!(compress(&s), "0-2,4,6-7");
        assert_eq!(compress(&Default::default()), "");
    }
}
