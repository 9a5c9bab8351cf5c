//! The DaemonSet controller: one pod per eligible node (selectors, affinity, taints and
//! the daemon tolerations), template history as ControllerRevisions, rolling updates.

use super::*;

/// Tolerations kube-controller-manager adds to every daemon pod.
pub(super) fn daemon_tolerations() -> Vec<Value> {
    let mut out = Vec::new();
    for k in [
        "node.kubernetes.io/not-ready",
        "node.kubernetes.io/unreachable",
    ] {
        out.push(json!({"key": k, "operator": "Exists", "effect": "NoExecute"}));
    }
    for k in [
        "node.kubernetes.io/disk-pressure",
        "node.kubernetes.io/memory-pressure",
        "node.kubernetes.io/pid-pressure",
        "node.kubernetes.io/unschedulable",
    ] {
        out.push(json!({"key": k, "operator": "Exists", "effect": "NoSchedule"}));
    }
    out
}

pub(super) fn tolerates(t: &Value, taint: &Value) -> bool {
    let s = |v: &Value, f: &str| v.get(f).and_then(Value::as_str).unwrap_or("").to_string();
    let effect = s(t, "effect");
    if !effect.is_empty() && effect != s(taint, "effect") {
        return false;
    }
    let key = s(t, "key");
    let op = s(t, "operator");
    if key.is_empty() {
        return op == "Exists";
    }
    if key != s(taint, "key") {
        return false;
    }
    op == "Exists" || s(t, "value") == s(taint, "value")
}

/// Whether a daemon pod with `spec` belongs on `node`: nodeSelector, required node affinity,
/// every NoSchedule/NoExecute taint tolerated, and for a VM pod a node that runs VMs (as the
/// schedulers place VM pods).
pub fn should_run(spec: &Value, node: &Value) -> bool {
    let nl = labels(node);
    if spec.get("virtualMachine").is_some() && nl.get(proto::vm::NODE_LABEL).is_none() {
        return false;
    }
    if let Some(sel) = spec.get("nodeSelector").and_then(Value::as_object) {
        if !sel.iter().all(|(k, v)| nl.get(k) == Some(v)) {
            return false;
        }
    }
    if let Some(terms) = spec
        .pointer("/affinity/nodeAffinity/requiredDuringSchedulingIgnoredDuringExecution/nodeSelectorTerms")
        .and_then(Value::as_array)
    {
        let name = meta(node, "name").to_string();
        let any = terms.iter().any(|term| {
            let exprs = term.get("matchExpressions").and_then(Value::as_array);
            let fields = term.get("matchFields").and_then(Value::as_array);
            if exprs.is_none_or(Vec::is_empty) && fields.is_none_or(Vec::is_empty) {
                return false;
            }
            exprs.is_none_or(|es| {
                es.iter().all(|e| {
                    expression_matches(e, |k| nl.get(k).and_then(Value::as_str).map(String::from))
                })
            }) && fields.is_none_or(|fs| {
                fs.iter().all(|e| {
                    expression_matches(e, |k| (k == "metadata.name").then(|| name.clone()))
                })
            })
        });
        if !any {
            return false;
        }
    }
    let mut tols: Vec<Value> = spec
        .get("tolerations")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    tols.extend(daemon_tolerations());
    node.pointer("/spec/taints")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
        .iter()
        .filter(|t| {
            matches!(
                t.get("effect").and_then(Value::as_str),
                Some("NoSchedule" | "NoExecute")
            )
        })
        .all(|taint| tols.iter().any(|t| tolerates(t, taint)))
}

/// The DaemonSet's template history as ControllerRevisions (`kubectl rollout history/undo ds`):
/// one per template, the current one carrying the highest revision; unused ones beyond
/// `revisionHistoryLimit` go, oldest first.
pub(super) async fn sync_history(
    w: &Writer,
    key: &Key,
    ds: &Value,
    tpl: &Value,
    hash: &str,
    in_use: &std::collections::HashSet<String>,
) -> bool {
    let crs = list_ns(w.store(), REVISIONS, &key.tenant, &key.namespace);
    let mut owned = claim(w, ds, "DaemonSet", crs).await;
    owned.sort_by_key(|(_, c)| int(c, "/revision", 0));
    let cr_hash = |c: &Value| {
        c.pointer("/metadata/labels")
            .and_then(|l| l.get(DS_HASH_LABEL))
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    let max = owned
        .iter()
        .map(|(_, c)| int(c, "/revision", 0))
        .max()
        .unwrap_or(0);
    let mut changed = false;
    match owned.iter().find(|(_, c)| cr_hash(c) == hash) {
        None => {
            let name = format!("{}-{hash}", key.name);
            let mut data_tpl = tpl.clone();
            data_tpl["$patch"] = json!("replace");
            let mut labels = tpl
                .pointer("/metadata/labels")
                .cloned()
                .unwrap_or(json!({}));
            labels[DS_HASH_LABEL] = json!(hash);
            let mut cr = json!({
                "apiVersion": "apps/v1", "kind": "ControllerRevision",
                "metadata": {
                    "name": name, "namespace": key.namespace,
                    "uid": uuid::Uuid::new_v4().to_string(), "creationTimestamp": now_str(),
                    "generation": 1, "labels": labels,
                    "ownerReferences": [owner_ref("DaemonSet", ds)],
                },
                "data": {"spec": {"template": data_tpl}},
                "revision": max + 1,
            });
            if let Some(c) = meta_annotation(ds, "kubernetes.io/change-cause") {
                cr["metadata"]["annotations"] = json!({"kubernetes.io/change-cause": c});
            }
            if !key.tenant.is_empty() {
                cr["metadata"]["tenant"] = json!(key.tenant);
            }
            return create(
                w,
                Key::new(REVISIONS, &key.tenant, &key.namespace, &name),
                cr,
            )
            .await;
        }
        Some((k, c)) if int(c, "/revision", 0) < max => {
            // Rolled back to an earlier template: it becomes the newest revision.
            let mut n = c.clone();
            n["revision"] = json!(max + 1);
            return update(w, k, c, n).await;
        }
        Some(_) => {}
    }
    let limit = usize::try_from(int(ds, "/spec/revisionHistoryLimit", 10).max(0)).unwrap_or(10);
    let old: Vec<&(Key, Value)> = owned
        .iter()
        .filter(|(_, c)| cr_hash(c) != hash && !in_use.contains(&cr_hash(c)))
        .collect();
    if old.len() > limit {
        for (k, c) in old.iter().take(old.len() - limit) {
            changed |= remove(w, k, c, None).await;
        }
    }
    changed
}

pub(super) fn pod_hash(p: &Value) -> &str {
    p.pointer("/metadata/labels")
        .and_then(|l| l.get(DS_HASH_LABEL))
        .and_then(Value::as_str)
        .unwrap_or("")
}

pub(super) async fn sync_daemonset(
    w: &Writer,
    key: &Key,
    ds: &Value,
    nodes: &[(Key, Arc<Value>)],
) -> bool {
    if terminating(ds) || selector_empty(ds.pointer("/spec/selector")) {
        return false;
    }
    let now = chrono::Utc::now();
    let tpl = ds.pointer("/spec/template").cloned().unwrap_or(json!({}));
    let spec = tpl.get("spec").cloned().unwrap_or(json!({}));
    let hash = template_hash(&tpl, None);
    let generation = int(ds, "/metadata/generation", 1);
    let min_ready = int(ds, "/spec/minReadySeconds", 0);
    let pods = list_ns(w.store(), "pods", &key.tenant, &key.namespace);
    let owned = claim(w, ds, "DaemonSet", pods).await;
    let in_use: std::collections::HashSet<String> =
        owned.iter().map(|(_, p)| pod_hash(p).to_string()).collect();
    let mut changed = sync_history(w, key, ds, &tpl, &hash, &in_use).await;
    let mut by_node: HashMap<String, (Vec<(Key, Value)>, usize)> = HashMap::new();
    for (k, p) in owned {
        let node = p
            .pointer("/spec/nodeName")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let e = by_node.entry(node).or_default();
        if pod_active(&p) {
            e.0.push((k, p));
        } else if terminating(&p) {
            e.1 += 1;
        } else {
            // Finished daemon pods are replaced.
            changed |= delete_pod(w, &k, &p).await;
        }
    }
    let node_names: std::collections::HashSet<&str> =
        nodes.iter().map(|(k, _)| k.name.as_str()).collect();
    // Pods on nodes that are gone, or unbound.
    for (node, (pods, _)) in &by_node {
        if !node_names.contains(node.as_str()) {
            for (k, p) in pods {
                changed |= delete_pod(w, k, p).await;
            }
        }
    }
    let rolling = ds
        .pointer("/spec/updateStrategy/type")
        .and_then(Value::as_str)
        != Some("OnDelete");
    let mut desired = 0i64;
    let mut current = 0i64;
    let mut misscheduled = 0i64;
    let mut ready = 0i64;
    let mut updated = 0i64;
    let mut available = 0i64;
    let mut old_available: Vec<(Key, Value)> = Vec::new();
    let mut unavailable_nodes = 0i64;
    for (nk, node) in nodes {
        let (pods, terminating_pods) = by_node.remove(&nk.name).unwrap_or_default();
        if !should_run(&spec, node) {
            misscheduled += i64::try_from(pods.len()).unwrap_or(0);
            for (k, p) in &pods {
                changed |= delete_pod(w, k, p).await;
            }
            continue;
        }
        desired += 1;
        if pods.is_empty() {
            unavailable_nodes += 1;
            if terminating_pods == 0 {
                let (k, mut pod) = pod_from_template(key, ds, "DaemonSet", &tpl, &key.name);
                pod["spec"]["nodeName"] = json!(nk.name);
                let mut tols = pod["spec"]
                    .get("tolerations")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default();
                for t in daemon_tolerations() {
                    if !tols.contains(&t) {
                        tols.push(t);
                    }
                }
                pod["spec"]["tolerations"] = Value::Array(tols);
                pod["metadata"]["labels"][DS_HASH_LABEL] = json!(hash);
                pod["metadata"]["labels"]["pod-template-generation"] =
                    json!(generation.to_string());
                tracing::info!(daemonset = %key.name, node = %nk.name, pod = %k.name, "daemon pod");
                changed |= create(w, k, pod).await;
            }
            continue;
        }
        current += 1;
        let mut pods = pods;
        // Keep one: the current template's, then the oldest.
        pods.sort_by_key(|(_, p)| {
            (
                pod_hash(p) != hash,
                meta(p, "creationTimestamp").to_string(),
            )
        });
        for (k, p) in pods.iter().skip(1) {
            changed |= delete_pod(w, k, p).await;
        }
        let (k, p) = &pods[0];
        let is_new = pod_hash(p) == hash;
        let avail = pod_available(p, min_ready, now);
        if pod_ready(p) {
            ready += 1;
        }
        if is_new {
            updated += 1;
        }
        if avail {
            available += 1;
        } else {
            unavailable_nodes += 1;
        }
        if rolling && !is_new {
            if avail {
                old_available.push((k.clone(), p.clone()));
            } else {
                changed |= delete_pod(w, k, p).await;
            }
        }
    }
    if rolling {
        let max_unavailable = scaled(
            ds.pointer("/spec/updateStrategy/rollingUpdate/maxUnavailable"),
            desired,
            true,
            1,
        )
        .max(1);
        let budget = usize::try_from((max_unavailable - unavailable_nodes).max(0)).unwrap_or(0);
        old_available.sort_by_key(|(k, _)| k.name.clone());
        for (k, p) in old_available.iter().take(budget) {
            changed |= delete_pod(w, k, p).await;
        }
    }
    let mut status = ds
        .get("status")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    status.insert("desiredNumberScheduled".into(), json!(desired));
    status.insert("currentNumberScheduled".into(), json!(current));
    status.insert("numberMisscheduled".into(), json!(misscheduled));
    status.insert("numberReady".into(), json!(ready));
    status.insert("updatedNumberScheduled".into(), json!(updated));
    status.insert("numberAvailable".into(), json!(available));
    status.insert(
        "numberUnavailable".into(),
        json!((desired - available).max(0)),
    );
    status.insert("observedGeneration".into(), json!(generation));
    omit_zeros(
        &mut status,
        &[
            "numberAvailable",
            "numberUnavailable",
            "updatedNumberScheduled",
        ],
    );
    changed |= write_status(w, key, ds, status).await;
    changed
}
