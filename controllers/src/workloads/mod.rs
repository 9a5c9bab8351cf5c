//! Workload controllers: ReplicaSet, Deployment and DaemonSet (apps/v1), Job and CronJob
//! (batch/v1).
//!
//! One task reacts to w events on pods, nodes and the workload kinds and runs a pass over
//! every workload: ReplicaSets first (pods), then Deployments (ReplicaSets), then DaemonSets
//! (pods bound to nodes). A pass reads the w's current state and writes through the w
//! with compare-and-swap preconditions, so it is idempotent and needs no memory of earlier
//! passes: after a restart the next pass picks up where the last one stopped.

use std::cmp::Reverse;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Map, Value};
use tokio_util::sync::CancellationToken;

use proto::selectors::{expression_matches, selector_empty, selector_matches};

use apiserver::api::{component, Api, Writer};
use store::{Key, Scope, Store};

mod cronjob;
mod daemonset;
mod deployment;
mod job;
mod replicaset;

use cronjob::*;
use daemonset::*;
use deployment::*;
use job::*;
use replicaset::*;

/// Store name of Deployments.
pub const DEPLOYMENTS: &str = "deployments.apps";
/// Store name of ReplicaSets.
pub const REPLICASETS: &str = "replicasets.apps";
/// Store name of DaemonSets.
pub const DAEMONSETS: &str = "daemonsets.apps";
/// Store name of Jobs.
pub const JOBS: &str = "jobs.batch";
/// Store name of CronJobs.
pub const CRONJOBS: &str = "cronjobs.batch";
/// Store name of ControllerRevisions (a DaemonSet's template history).
pub const REVISIONS: &str = "controllerrevisions.apps";
/// The label a Deployment puts on its ReplicaSets and their pods.
pub const HASH_LABEL: &str = "pod-template-hash";
/// The label a DaemonSet puts on its pods.
pub const DS_HASH_LABEL: &str = "controller-revision-hash";
/// The revision annotation `kubectl rollout history/undo` read.
pub const REVISION: &str = "deployment.kubernetes.io/revision";

/// Upper bound of pods created or deleted for one object in one pass.
const BURST: usize = 500;

// ---------------------------------------------------------------------------------------------
// Object helpers.

fn meta<'a>(v: &'a Value, f: &str) -> &'a str {
    v.get("metadata")
        .and_then(|m| m.get(f))
        .and_then(Value::as_str)
        .unwrap_or("")
}

fn terminating(v: &Value) -> bool {
    v.pointer("/metadata/deletionTimestamp").is_some()
}

fn labels(v: &Value) -> Map<String, Value> {
    v.pointer("/metadata/labels")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default()
}

fn int(v: &Value, ptr: &str, default: i64) -> i64 {
    v.pointer(ptr).and_then(Value::as_i64).unwrap_or(default)
}

/// The uid of the object's controller (the ownerReference with `controller: true`).
fn controller_uid(v: &Value) -> Option<&str> {
    v.pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)?
        .iter()
        .find(|r| r.get("controller").and_then(Value::as_bool) == Some(true))
        .and_then(|r| r.get("uid"))
        .and_then(Value::as_str)
}

fn owner_ref(kind: &str, owner: &Value) -> Value {
    let api_version = if matches!(kind, "Job" | "CronJob") {
        "batch/v1"
    } else {
        "apps/v1"
    };
    json!({"apiVersion": api_version, "kind": kind, "name": meta(owner, "name"),
        "uid": meta(owner, "uid"), "controller": true, "blockOwnerDeletion": true})
}

fn pod_active(p: &Value) -> bool {
    !terminating(p) && !crate::sched_cache::finished(p)
}

fn ready_condition(p: &Value) -> Option<&Value> {
    p.pointer("/status/conditions")
        .and_then(Value::as_array)?
        .iter()
        .find(|c| c.get("type").and_then(Value::as_str) == Some("Ready"))
}

fn pod_ready(p: &Value) -> bool {
    ready_condition(p)
        .and_then(|c| c.get("status"))
        .and_then(Value::as_str)
        == Some("True")
}

/// Ready for at least `min_ready` seconds.
fn pod_available(p: &Value, min_ready: i64, now: chrono::DateTime<chrono::Utc>) -> bool {
    if !pod_ready(p) {
        return false;
    }
    if min_ready <= 0 {
        return true;
    }
    ready_condition(p)
        .and_then(|c| c.get("lastTransitionTime"))
        .and_then(Value::as_str)
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .is_some_and(|t| now.signed_duration_since(t).num_seconds() >= min_ready)
}

fn now_str() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// Kubernetes' `rand.SafeEncodeString` alphabet (no vowels, no confusable characters).
const SAFE: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

fn random_suffix() -> String {
    use rand::Rng;
    let mut r = rand::thread_rng();
    (0..5)
        .map(|_| SAFE[r.gen_range(0..SAFE.len())] as char)
        .collect()
}

fn canonical(v: &Value, out: &mut String) {
    match v {
        Value::Object(m) => {
            let sorted: BTreeMap<&String, &Value> = m.iter().collect();
            out.push('{');
            for (i, (k, v)) in sorted.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                canonical(v, out);
            }
            out.push('}');
        }
        Value::Array(a) => {
            out.push('[');
            for (i, v) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical(v, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

/// A pod template's hash, as kube-controller-manager spells them: FNV-32a of the template
/// (and the collision count), its decimal digits mapped onto the safe alphabet.
pub fn template_hash(tpl: &Value, collisions: Option<i64>) -> String {
    let mut text = String::new();
    canonical(&normalized_template(tpl), &mut text);
    if let Some(c) = collisions {
        text.push_str(&c.to_string());
    }
    let mut h: u32 = 0x811c_9dc5;
    for b in text.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h.to_string()
        .bytes()
        .map(|b| SAFE[usize::from(b) % SAFE.len()] as char)
        .collect()
}

/// Drop what typed clients may or may not send for the same object (`false`, `0`, `""`,
/// `null`, empty maps and lists), so templates compare semantically.
fn prune(v: &mut Value) -> bool {
    match v {
        Value::Object(m) => {
            m.retain(|_, c| !prune(c));
            m.is_empty()
        }
        Value::Array(a) => {
            for c in a.iter_mut() {
                prune(c);
            }
            a.is_empty()
        }
        Value::Null => true,
        Value::Bool(b) => !*b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => s.is_empty(),
    }
}

/// A template without the controller's hash labels and its `creationTimestamp`, pruned of
/// zero values, so templates compare by what the user wrote.
fn normalized_template(tpl: &Value) -> Value {
    let mut t = tpl.clone();
    prune(&mut t);
    if let Some(m) = t.get_mut("metadata").and_then(Value::as_object_mut) {
        m.remove("creationTimestamp");
        if let Some(l) = m.get_mut("labels").and_then(Value::as_object_mut) {
            l.remove(HASH_LABEL);
            l.remove(DS_HASH_LABEL);
            l.remove("pod-template-generation");
        }
        for f in ["labels", "annotations"] {
            if m.get(f)
                .is_some_and(|v| v.as_object().is_some_and(Map::is_empty) || v.is_null())
            {
                m.remove(f);
            }
        }
        if m.is_empty() {
            if let Some(o) = t.as_object_mut() {
                o.remove("metadata");
            }
        }
    }
    t
}

/// `maxSurge` / `maxUnavailable`: an int or a percent of `total`, rounded up or down.
fn scaled(v: Option<&Value>, total: i64, round_up: bool, default: i64) -> i64 {
    match v {
        Some(Value::Number(n)) => n.as_i64().unwrap_or(default).max(0),
        Some(Value::String(s)) => match s.strip_suffix('%').and_then(|p| p.parse::<i64>().ok()) {
            Some(p) => {
                let x = p.max(0) * total.max(0);
                if round_up {
                    (x + 99) / 100
                } else {
                    x / 100
                }
            }
            None => s.parse::<i64>().unwrap_or(default).max(0),
        },
        _ => default,
    }
}

// ---------------------------------------------------------------------------------------------
// Store access.

fn list_ns(store: &Store, resource: &str, tenant: &str, ns: &str) -> Vec<(Key, Arc<Value>)> {
    store
        .list(
            &Scope {
                resource: resource.into(),
                tenant: Some(tenant.into()),
                namespace: Some(ns.into()),
            },
            None,
        )
        .1
}

/// Write `new` over `old` if it changed (compare-and-swap on `old`'s version), through the
/// API's update path (`status`: as the status subresource). Returns whether the write happened
/// or lost a race (the next pass sees the winner).
async fn write(w: &Writer, key: &Key, old: &Value, new: Value, status: bool) -> bool {
    if *old == new {
        return false;
    }
    match w.update(key, old, new, status).await {
        Ok(_) => true,
        Err(e) if e.code == 409 || e.code == 404 => {
            tracing::debug!(object = %key.name, resource = %key.resource, "stale, retried on the next pass");
            true
        }
        Err(e) => {
            tracing::warn!(error = %e.message, object = %key.name, resource = %key.resource, "workload controller write refused");
            false
        }
    }
}

/// [`write`] of a spec (or metadata) change.
async fn update(w: &Writer, key: &Key, old: &Value, new: Value) -> bool {
    write(w, key, old, new, false).await
}

/// Delete `obj` through the API (`grace`: for a pod on a node; `None` its own period).
/// Returns whether it went or was already gone.
async fn remove(w: &Writer, key: &Key, obj: &Value, grace: Option<i64>) -> bool {
    match w.delete(key, obj, grace, None).await {
        Ok(_) => true,
        Err(e) if e.code == 404 || e.code == 409 => true,
        Err(e) => {
            tracing::warn!(error = %e.message, object = %key.name, resource = %key.resource, "workload controller delete refused");
            false
        }
    }
}

/// Record a Normal event on `obj`'s controller (the object named by its controlling
/// ownerReference), as kube-controller-manager does for what its controllers do.
async fn owner_event(w: &Writer, key: &Key, obj: &Value, reason: &str, msg: &str) {
    let Some(owner) = obj
        .pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .and_then(|refs| {
            refs.iter()
                .find(|r| r.get("controller").and_then(Value::as_bool) == Some(true))
        })
    else {
        return;
    };
    let kind = owner.get("kind").and_then(Value::as_str).unwrap_or("");
    let oname = owner.get("name").and_then(Value::as_str).unwrap_or("");
    let component = match kind {
        "Deployment" => "deployment-controller",
        "ReplicaSet" => "replicaset-controller",
        "Job" => "job-controller",
        _ => "daemonset-controller",
    };
    let involved = json!({"apiVersion": owner.get("apiVersion").cloned().unwrap_or(json!("apps/v1")),
        "kind": kind, "namespace": key.namespace, "name": oname,
        "uid": owner.get("uid").cloned().unwrap_or(Value::Null)});
    let name = format!("{oname}.{:x}", rand::random::<u64>());
    record_event(w, key, name, involved, component, "Normal", reason, msg).await;
}

/// Create an Event named `name` in `key`'s tenant and namespace about `involved` (an
/// ObjectReference), reported by `component`.
#[allow(clippy::too_many_arguments)]
async fn record_event(
    w: &Writer,
    key: &Key,
    name: String,
    involved: Value,
    component: &str,
    ty: &str,
    reason: &str,
    msg: &str,
) {
    let ts = now_str();
    let mut ev = json!({
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"name": name, "namespace": key.namespace,
            "uid": uuid::Uuid::new_v4().to_string(), "creationTimestamp": ts},
        "involvedObject": involved,
        "type": ty, "reason": reason, "message": msg,
        "source": {"component": component},
        "reportingComponent": component, "reportingInstance": "cloud-core",
        "firstTimestamp": ts, "lastTimestamp": ts, "count": 1,
    });
    if !key.tenant.is_empty() {
        ev["metadata"]["tenant"] = json!(key.tenant);
    }
    let _ = w
        .create(&Key::new("events", &key.tenant, &key.namespace, &name), ev)
        .await;
}

/// Set `spec.replicas` (a spec change: the generation moves on).
async fn set_replicas(w: &Writer, key: &Key, obj: &Value, n: i64) -> bool {
    if int(obj, "/spec/replicas", 1) == n {
        return false;
    }
    let mut new = obj.clone();
    new["spec"]["replicas"] = json!(n);
    new["metadata"]["generation"] = json!(int(obj, "/metadata/generation", 1) + 1);
    tracing::info!(replicaset = %key.name, namespace = %key.namespace, replicas = n, "scaled");
    let was = int(obj, "/spec/replicas", 1);
    let written = update(w, key, obj, new).await;
    if written {
        let dir = if n > was { "up" } else { "down" };
        let msg = format!("Scaled {dir} replica set {} from {was} to {n}", key.name);
        owner_event(w, key, obj, "ScalingReplicaSet", &msg).await;
    }
    written
}

/// Delete a pod through the API: a pod bound to an existing node is given its grace period
/// (its agent stops it and removes the object); any other pod goes at once.
async fn delete_pod(w: &Writer, key: &Key, pod: &Value) -> bool {
    if terminating(pod) {
        return false;
    }
    let node = pod
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .unwrap_or("");
    let node_exists = !node.is_empty() && w.store().get(&Key::new("nodes", "", "", node)).is_some();
    let grace = (!(node_exists && pod_active(pod))).then_some(0);
    let gone = remove(w, key, pod, grace).await;
    if gone {
        let msg = format!("Deleted pod: {}", key.name);
        owner_event(w, key, pod, "SuccessfulDelete", &msg).await;
    }
    gone
}

/// Adopt orphans the selector matches and release owned objects it no longer matches; returns
/// the objects `owner` controls afterwards.
async fn claim(
    w: &Writer,
    owner: &Value,
    kind: &str,
    candidates: Vec<(Key, Arc<Value>)>,
) -> Vec<(Key, Value)> {
    let uid = meta(owner, "uid");
    let Some(sel) = owner.pointer("/spec/selector") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (k, o) in candidates {
        let matches = selector_matches(sel, &labels(&o));
        match controller_uid(&o) {
            Some(u) if u == uid => {
                if matches {
                    out.push((k, (*o).clone()));
                } else if !terminating(&o) {
                    let mut new = (*o).clone();
                    if let Some(refs) = new
                        .pointer_mut("/metadata/ownerReferences")
                        .and_then(Value::as_array_mut)
                    {
                        refs.retain(|r| r.get("uid").and_then(Value::as_str) != Some(uid));
                    }
                    update(w, &k, &o, new).await;
                }
            }
            Some(_) => {}
            None if matches && !terminating(&o) && !terminating(owner) => {
                let mut new = (*o).clone();
                let m = &mut new["metadata"];
                if !m.get("ownerReferences").is_some_and(Value::is_array) {
                    m["ownerReferences"] = json!([]);
                }
                if let Some(refs) = m["ownerReferences"].as_array_mut() {
                    refs.push(owner_ref(kind, owner));
                }
                if update(w, &k, &o, new.clone()).await {
                    tracing::info!(owner = %meta(owner, "name"), object = %k.name, "adopted");
                    out.push((k, new));
                }
            }
            None => {}
        }
    }
    out
}

/// A new pod from `owner`'s template, named `<prefix>-xxxxx`.
fn pod_from_template(
    owner_key: &Key,
    owner: &Value,
    kind: &str,
    tpl: &Value,
    prefix: &str,
) -> (Key, Value) {
    let mut base: String = prefix.chars().take(57).collect();
    base.push('-');
    let name = format!("{base}{}", random_suffix());
    let mut pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {
            "name": name, "generateName": base, "namespace": owner_key.namespace,
            "uid": uuid::Uuid::new_v4().to_string(), "creationTimestamp": now_str(), "generation": 1,
            "labels": tpl.pointer("/metadata/labels").cloned().unwrap_or(json!({})),
            "ownerReferences": [owner_ref(kind, owner)],
        },
        "spec": tpl.get("spec").cloned().unwrap_or(json!({})),
    });
    if let Some(a) = tpl
        .pointer("/metadata/annotations")
        .filter(|a| a.as_object().is_some_and(|m| !m.is_empty()))
    {
        pod["metadata"]["annotations"] = a.clone();
    }
    if !owner_key.tenant.is_empty() {
        pod["metadata"]["tenant"] = json!(owner_key.tenant);
    }
    if let Some(pods) = apiserver::resources::find("", "v1", "pods") {
        apiserver::api::defaults(pods, &mut pod);
    }
    (
        Key::new("pods", &owner_key.tenant, &owner_key.namespace, &name),
        pod,
    )
}

async fn create(w: &Writer, key: Key, obj: Value) -> bool {
    match w.create(&key, obj.clone()).await {
        Ok(_) => {
            if key.resource == "pods" {
                let msg = format!("Created pod: {}", key.name);
                owner_event(w, &key, &obj, "SuccessfulCreate", &msg).await;
            }
            true
        }
        Err(e) if e.code == 409 => true,
        Err(e) => {
            tracing::warn!(error = %e.message, object = %key.name, resource = %key.resource, "workload controller create refused");
            false
        }
    }
}

/// Leave out the counts that are zero, as the API's omitempty does.
fn omit_zeros(status: &mut Map<String, Value>, fields: &[&str]) {
    for f in fields {
        if status.get(*f).and_then(Value::as_i64) == Some(0) {
            status.remove(*f);
        }
    }
}

/// Replace `status` (keeping everything else) if it changed.
async fn write_status(w: &Writer, key: &Key, obj: &Value, status: Map<String, Value>) -> bool {
    if obj.get("status").and_then(Value::as_object) == Some(&status) {
        return false;
    }
    let mut new = obj.clone();
    new["status"] = Value::Object(status);
    write(w, key, obj, new, true).await
}

// ---------------------------------------------------------------------------------------------
// The loop.

/// The workload controllers' writers, each under its controller's identity (as in
/// kube-controller-manager).
#[derive(Clone)]
pub struct Writers {
    replicasets: Writer,
    deployments: Writer,
    daemonsets: Writer,
    jobs: Writer,
    cronjobs: Writer,
}

impl Writers {
    /// The controllers writing through `api`.
    pub fn new(api: &Arc<Api>) -> Self {
        let w = |name| Writer::new(api.clone(), component(name));
        Writers {
            replicasets: w("replicaset-controller"),
            deployments: w("deployment-controller"),
            daemonsets: w("daemonset-controller"),
            jobs: w("job-controller"),
            cronjobs: w("cronjob-controller"),
        }
    }
}

/// One pass over every workload; returns whether it wrote anything.
pub async fn reconcile(ws: &Writers) -> bool {
    reconcile_at(ws, chrono::Utc::now()).await.0
}

/// One pass over every workload at `now`; returns whether it wrote anything, and how soon
/// something falls due (a CronJob's next schedule time).
pub async fn reconcile_at(
    ws: &Writers,
    now: chrono::DateTime<chrono::Utc>,
) -> (bool, Option<Duration>) {
    let mut changed = false;
    let mut due: Option<Duration> = None;
    let store = ws.replicasets.store();
    for (k, rs) in store.list_of(REPLICASETS, None) {
        changed |= sync_replicaset(&ws.replicasets, &k, &rs).await;
    }
    for (k, d) in store.list_of(DEPLOYMENTS, None) {
        changed |= sync_deployment(&ws.deployments, &k, &d).await;
    }
    // CronJobs before Jobs: a Job created now gets its pods in this pass.
    for (k, cj) in store.list_of(CRONJOBS, None) {
        let (c, d) = sync_cronjob(&ws.cronjobs, &k, &cj, now).await;
        changed |= c;
        due = match (due, d) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }
    for (k, j) in store.list_of(JOBS, None) {
        changed |= sync_job(&ws.jobs, &k, &j).await;
    }
    let daemonsets = store.list_of(DAEMONSETS, None);
    if daemonsets.is_empty() {
        return (changed, due);
    }
    let nodes = store.list_of("nodes", Some(""));
    for (k, ds) in daemonsets {
        changed |= sync_daemonset(&ws.daemonsets, &k, &ds, &nodes).await;
    }
    (changed, due)
}

fn relevant(resource: &str) -> bool {
    matches!(
        resource,
        "pods" | "nodes" | DEPLOYMENTS | REPLICASETS | DAEMONSETS | REVISIONS | JOBS | CRONJOBS
    )
}

/// Run the workload controllers until cancelled: a pass at start, after every relevant store
/// change (coalesced), every few seconds (minReadySeconds, retries), and just after a
/// CronJob's next schedule time.
pub async fn run(api: Arc<Api>, cancel: CancellationToken) {
    let ws = Writers::new(&api);
    crate::changes::on_changes_or_at(
        &api.store,
        Duration::from_secs(5),
        Duration::ZERO,
        &cancel,
        |e| relevant(&e.key.resource),
        || async { reconcile_at(&ws, chrono::Utc::now()).await.1 },
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use store::Precondition;

    /// The controllers' writers over an API on `s`, with the system namespaces in place.
    async fn writers(s: &Store) -> Writers {
        apiserver::bootstrap::system_namespaces(s)
            .await
            .expect("namespaces");
        Writers::new(&Api::new(s.clone(), apiserver::api::ApiConfig::default()))
    }

    #[test]
    fn percents_round_like_kube() {
        assert_eq!(scaled(Some(&json!("25%")), 3, true, 0), 1);
        assert_eq!(scaled(Some(&json!("25%")), 3, false, 0), 0);
        assert_eq!(scaled(Some(&json!(2)), 3, false, 0), 2);
    }

    #[test]
    fn hash_ignores_its_own_label_and_key_order() {
        let a = json!({"metadata": {"labels": {"app": "x"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}});
        let b = json!({"spec": {"containers": [{"image": "i", "name": "c"}]}, "metadata": {"creationTimestamp": null, "labels": {"app": "x", "pod-template-hash": "zzz"}}});
        assert_eq!(template_hash(&a, None), template_hash(&b, None));
        assert_ne!(template_hash(&a, None), template_hash(&a, Some(1)));
        assert!(template_hash(&a, None).bytes().all(|c| SAFE.contains(&c)));
    }

    #[test]
    fn daemon_placement() {
        let node = json!({"metadata": {"name": "n1", "labels": {"atoll.io/site": "s1"}},
            "spec": {"taints": [{"key": "dedicated", "value": "x", "effect": "NoSchedule"}]}});
        let spec = json!({"nodeSelector": {"atoll.io/site": "s1"}});
        assert!(!should_run(&spec, &node), "taint not tolerated");
        let spec = json!({"nodeSelector": {"atoll.io/site": "s1"}, "tolerations": [{"key": "dedicated", "operator": "Exists"}]});
        assert!(should_run(&spec, &node));
        let spec = json!({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
            {"matchExpressions": [{"key": "atoll.io/site", "operator": "In", "values": ["s2"]}]}]}}}, "tolerations": [{"operator": "Exists"}]});
        assert!(!should_run(&spec, &node));
        // A VM daemon only on nodes that run VMs.
        let vm = json!({"virtualMachine": {"name": "vm", "image": "i"}});
        assert!(!should_run(&vm, &json!({"metadata": {"name": "n1"}})));
        let vm_node =
            json!({"metadata": {"name": "n2", "labels": {proto::vm::NODE_LABEL: "qemu"}}});
        assert!(should_run(&vm, &vm_node));
    }

    fn rs(replicas: i64) -> Value {
        let mut v = json!({"apiVersion": "apps/v1", "kind": "ReplicaSet",
            "metadata": {"name": "web", "namespace": "default", "uid": "u1", "generation": 1},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}}});
        apiserver::apps::defaults("replicasets", &mut v);
        v
    }

    fn owned_pods(s: &Store) -> Vec<Arc<Value>> {
        list_ns(s, "pods", "", "default")
            .into_iter()
            .map(|(_, p)| p)
            .filter(|p| controller_uid(p) == Some("u1") && pod_active(p))
            .collect()
    }

    fn active_pods(s: &Store) -> Vec<(Key, Arc<Value>)> {
        list_ns(s, "pods", "", "default")
            .into_iter()
            .filter(|(_, p)| pod_active(p))
            .collect()
    }

    async fn make_one_ready(s: &Store) {
        if let Some((k, p)) = active_pods(s).into_iter().find(|(_, p)| !pod_ready(p)) {
            let mut n = (*p).clone();
            n["status"] =
                json!({"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]});
            s.put(k, n, Precondition::Exists).await.expect("ready");
        }
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn rolling_update_respects_surge_and_unavailability() {
        let s = Store::memory(10_000).await.expect("store");
        let ws = writers(&s).await;
        let k = Key::new(DEPLOYMENTS, "", "default", "web");
        let mut d = json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "default", "uid": "d1", "generation": 1},
            "spec": {"replicas": 4, "selector": {"matchLabels": {"app": "web"}},
                "strategy": {"rollingUpdate": {"maxSurge": 1, "maxUnavailable": 1}},
                "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "v1"}]}}}});
        apiserver::apps::defaults("deployments", &mut d);
        s.put(k.clone(), d, Precondition::Absent).await.expect("d");
        let image = |p: &Value| {
            p.pointer("/spec/containers/0/image")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string()
        };
        for _ in 0..40 {
            reconcile(&ws).await;
            make_one_ready(&s).await;
        }
        assert_eq!(active_pods(&s).len(), 4);
        let cur = s.get(&k).expect("d");
        assert_eq!(
            cur.pointer("/status/availableReplicas")
                .and_then(Value::as_i64),
            Some(4)
        );
        let mut next = (*cur).clone();
        next["spec"]["template"]["spec"]["containers"][0]["image"] = json!("v2");
        next["metadata"]["generation"] = json!(2);
        s.put(k.clone(), next, Precondition::Exists)
            .await
            .expect("update");
        let mut steps = 0;
        loop {
            reconcile(&ws).await;
            let pods = active_pods(&s);
            let ready = pods.iter().filter(|(_, p)| pod_ready(p)).count();
            assert!(pods.len() <= 5, "surge exceeded: {}", pods.len());
            assert!(ready >= 3, "too few ready: {ready}");
            if pods.len() == 4 && pods.iter().all(|(_, p)| image(p) == "v2" && pod_ready(p)) {
                break;
            }
            make_one_ready(&s).await;
            steps += 1;
            assert!(steps < 100, "rollout did not converge");
        }
        for _ in 0..3 {
            reconcile(&ws).await;
        }
        let cur = s.get(&k).expect("d");
        assert_eq!(revision(&cur), 2);
        assert_eq!(
            cur.pointer("/status/updatedReplicas")
                .and_then(Value::as_i64),
            Some(4)
        );
        let conds = cur
            .pointer("/status/conditions")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        assert!(conds
            .iter()
            .any(|c| c["type"] == "Progressing" && c["reason"] == "NewReplicaSetAvailable"));
        assert!(
            !reconcile(&ws).await,
            "a converged deployment writes nothing"
        );
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn controllers_write_through_the_api_rules() {
        let s = Store::memory(1000).await.expect("store");
        let ws = writers(&s).await;
        // A namespace being terminated takes no new pods, from a controller either.
        let nk = Key::new("namespaces", "", "", "default");
        let mut ns = (*s.get(&nk).expect("default namespace")).clone();
        ns["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
        s.put(nk, ns, Precondition::Exists)
            .await
            .expect("terminate");
        let k = Key::new(REPLICASETS, "", "default", "web");
        s.put(k.clone(), rs(2), Precondition::Absent)
            .await
            .expect("rs");
        reconcile(&ws).await;
        assert!(
            active_pods(&s).is_empty(),
            "pods in a terminating namespace"
        );
        // A template the API would refuse (an invalid container name) creates nothing.
        let k2 = Key::new(REPLICASETS, "", "kube-public", "bad");
        let mut bad = rs(1);
        bad["metadata"]["name"] = json!("bad");
        bad["metadata"]["namespace"] = json!("kube-public");
        bad["spec"]["template"]["spec"]["containers"][0]["name"] = json!("Not_A_Name");
        s.put(k2, bad, Precondition::Absent).await.expect("rs");
        reconcile(&ws).await;
        assert!(list_ns(&s, "pods", "", "kube-public").is_empty());
        // What a controller creates carries no site origin, whatever its template says.
        let k3 = Key::new(REPLICASETS, "", "kube-system", "o");
        let mut o = rs(1);
        o["metadata"]["name"] = json!("o");
        o["metadata"]["namespace"] = json!("kube-system");
        o["spec"]["template"]["metadata"]["annotations"] = json!({ proto::ORIGIN: "site-x" });
        s.put(k3, o, Precondition::Absent).await.expect("rs");
        reconcile(&ws).await;
        let pods = list_ns(&s, "pods", "", "kube-system");
        assert_eq!(pods.len(), 1);
        assert_eq!(proto::origin(&pods[0].1), None);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn replicaset_converges_adopts_and_scales_down() {
        let s = Store::memory(1000).await.expect("store");
        let ws = writers(&s).await;
        let k = Key::new(REPLICASETS, "", "default", "web");
        s.put(k.clone(), rs(3), Precondition::Absent)
            .await
            .expect("rs");
        // An orphan with matching labels is adopted rather than duplicated.
        s.put(
            Key::new("pods", "", "default", "stray"),
            json!({"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": "stray", "namespace": "default", "labels": {"app": "web"}},
                "spec": {"containers": [{"name": "c", "image": "i"}]}}),
            Precondition::Absent,
        )
        .await
        .expect("pod");
        for _ in 0..5 {
            reconcile(&ws).await;
        }
        let pods = owned_pods(&s);
        assert_eq!(pods.len(), 3);
        assert!(pods.iter().any(|p| meta(p, "name") == "stray"));
        assert!(pods
            .iter()
            .all(|p| meta(p, "name").starts_with("web-") || meta(p, "name") == "stray"));
        let cur = s.get(&k).expect("rs");
        assert_eq!(
            cur.pointer("/status/replicas").and_then(Value::as_i64),
            Some(3)
        );
        // Idempotent: another pass changes nothing.
        assert!(!reconcile(&ws).await);
        let mut down = (*cur).clone();
        down["spec"]["replicas"] = json!(1);
        s.put(k.clone(), down, Precondition::Exists)
            .await
            .expect("scale");
        for _ in 0..5 {
            reconcile(&ws).await;
        }
        assert_eq!(owned_pods(&s).len(), 1);
    }
}
