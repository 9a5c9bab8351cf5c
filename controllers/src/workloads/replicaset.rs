//! The ReplicaSet controller: claims (and releases) pods by selector, creates and deletes
//! them toward `replicas` (the least useful first), and reports status.

use super::*;

/// Order in which surplus pods go: unscheduled, then pending, then not ready, then newest.
pub(super) fn deletion_rank(p: &Value) -> (u8, u8, u8, Reverse<String>) {
    let assigned = p
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .is_some_and(|n| !n.is_empty());
    let phase = match p.pointer("/status/phase").and_then(Value::as_str) {
        Some("Pending") | None => 0,
        Some("Running") => 2,
        _ => 1,
    };
    (
        u8::from(assigned),
        phase,
        u8::from(pod_ready(p)),
        Reverse(meta(p, "creationTimestamp").to_string()),
    )
}

pub(super) async fn sync_replicaset(w: &Writer, key: &Key, rs: &Value) -> bool {
    if terminating(rs) || selector_empty(rs.pointer("/spec/selector")) {
        return false;
    }
    let mut changed = false;
    let pods = list_ns(w.store(), "pods", &key.tenant, &key.namespace);
    let owned = claim(w, rs, "ReplicaSet", pods).await;
    let mut active: Vec<&(Key, Value)> = owned.iter().filter(|(_, p)| pod_active(p)).collect();
    let want = usize::try_from(int(rs, "/spec/replicas", 1).max(0)).unwrap_or(0);
    let tpl = rs.pointer("/spec/template").cloned().unwrap_or(json!({}));
    if active.len() < want {
        for _ in 0..(want - active.len()).min(BURST) {
            let (k, pod) = pod_from_template(key, rs, "ReplicaSet", &tpl, &key.name);
            changed |= create(w, k, pod).await;
        }
    } else if active.len() > want {
        active.sort_by_key(|(_, p)| deletion_rank(p));
        for (k, p) in active.iter().take((active.len() - want).min(BURST)) {
            changed |= delete_pod(w, k, p).await;
        }
    }
    // Status from what is stored now.
    let uid = meta(rs, "uid");
    let now = chrono::Utc::now();
    let min_ready = int(rs, "/spec/minReadySeconds", 0);
    let tpl_labels = tpl
        .pointer("/metadata/labels")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let pods: Vec<Arc<Value>> = list_ns(w.store(), "pods", &key.tenant, &key.namespace)
        .into_iter()
        .map(|(_, p)| p)
        .filter(|p| controller_uid(p) == Some(uid) && pod_active(p))
        .collect();
    let count = |f: &dyn Fn(&Value) -> bool| pods.iter().filter(|p| f(p)).count();
    let mut status = rs
        .get("status")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    status.insert("replicas".into(), json!(pods.len()));
    status.insert(
        "fullyLabeledReplicas".into(),
        json!(count(&|p| {
            let l = labels(p);
            tpl_labels.iter().all(|(k, v)| l.get(k) == Some(v))
        })),
    );
    status.insert("readyReplicas".into(), json!(count(&pod_ready)));
    status.insert(
        "availableReplicas".into(),
        json!(count(&|p| pod_available(p, min_ready, now))),
    );
    status.insert(
        "observedGeneration".into(),
        json!(int(rs, "/metadata/generation", 1)),
    );
    changed |= write_status(w, key, rs, status).await;
    changed
}
