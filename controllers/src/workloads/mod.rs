//! Workload controllers (apps/v1): ReplicaSet, Deployment and DaemonSet.
//!
//! One task reacts to store events on pods, nodes and the workload kinds and runs a pass over
//! every workload: ReplicaSets first (pods), then Deployments (ReplicaSets), then DaemonSets
//! (pods bound to nodes). A pass reads the store's current state and writes through the store
//! with compare-and-swap preconditions, so it is idempotent and needs no memory of earlier
//! passes: after a restart the next pass picks up where the last one stopped.

use std::cmp::Reverse;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Map, Value};
use tokio_util::sync::CancellationToken;

use proto::selectors::{expression_matches, selector_empty, selector_matches};

use store::{Key, Precondition, Scope, Store, StoreError};

/// Store name of Deployments.
pub const DEPLOYMENTS: &str = "deployments.apps";
/// Store name of ReplicaSets.
pub const REPLICASETS: &str = "replicasets.apps";
/// Store name of DaemonSets.
pub const DAEMONSETS: &str = "daemonsets.apps";
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
    json!({"apiVersion": "apps/v1", "kind": kind, "name": meta(owner, "name"),
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

/// Write `new` over `old` if it changed (compare-and-swap on `old`'s version). Returns whether
/// the write happened.
async fn update(store: &Store, key: &Key, old: &Value, new: Value) -> bool {
    if *old == new {
        return false;
    }
    let pre = match store::object_rv(old) {
        Some(rv) => Precondition::Version(rv),
        None => Precondition::Exists,
    };
    match store.put(key.clone(), new, pre).await {
        Ok(_) => true,
        Err(StoreError::Conflict(_) | StoreError::NotFound(_)) => {
            tracing::debug!(object = %key.name, resource = %key.resource, "stale, retried on the next pass");
            true
        }
        Err(e) => {
            tracing::warn!(error = %e, object = %key.name, "workload controller write failed");
            false
        }
    }
}

/// Record a Normal event on `obj`'s controller (the object named by its controlling
/// ownerReference), as kube-controller-manager does for what its controllers do.
async fn owner_event(store: &Store, key: &Key, obj: &Value, reason: &str, msg: &str) {
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
        _ => "daemonset-controller",
    };
    let name = format!("{oname}.{:x}", rand::random::<u64>());
    let ts = now_str();
    let mut ev = json!({
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"name": name, "namespace": key.namespace,
            "uid": uuid::Uuid::new_v4().to_string(), "creationTimestamp": ts},
        "involvedObject": {"apiVersion": owner.get("apiVersion").cloned().unwrap_or(json!("apps/v1")),
            "kind": kind, "namespace": key.namespace, "name": oname,
            "uid": owner.get("uid").cloned().unwrap_or(Value::Null)},
        "type": "Normal", "reason": reason, "message": msg,
        "source": {"component": component},
        "reportingComponent": component, "reportingInstance": "cloud-core",
        "firstTimestamp": ts, "lastTimestamp": ts, "count": 1,
    });
    if !key.tenant.is_empty() {
        ev["metadata"]["tenant"] = json!(key.tenant);
    }
    let _ = store
        .put(
            Key::new("events", &key.tenant, &key.namespace, &name),
            ev,
            Precondition::Absent,
        )
        .await;
}

/// Set `spec.replicas` (a spec change: the generation moves on).
async fn set_replicas(store: &Store, key: &Key, obj: &Value, n: i64) -> bool {
    if int(obj, "/spec/replicas", 1) == n {
        return false;
    }
    let mut new = obj.clone();
    new["spec"]["replicas"] = json!(n);
    new["metadata"]["generation"] = json!(int(obj, "/metadata/generation", 1) + 1);
    tracing::info!(replicaset = %key.name, namespace = %key.namespace, replicas = n, "scaled");
    let was = int(obj, "/spec/replicas", 1);
    let written = update(store, key, obj, new).await;
    if written {
        let dir = if n > was { "up" } else { "down" };
        let msg = format!("Scaled {dir} replica set {} from {was} to {n}", key.name);
        owner_event(store, key, obj, "ScalingReplicaSet", &msg).await;
    }
    written
}

/// Delete a pod the way the API does: a pod bound to a node is given its grace period (its
/// agent stops it and removes the object); any other pod goes at once.
async fn delete_pod(store: &Store, key: &Key, pod: &Value) -> bool {
    if terminating(pod) {
        return false;
    }
    let bound = pod
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .is_some_and(|n| !n.is_empty());
    let node_exists = bound && {
        let node = pod
            .pointer("/spec/nodeName")
            .and_then(Value::as_str)
            .unwrap_or("");
        store.get(&Key::new("nodes", "", "", node)).is_some()
    };
    let pre = store::object_rv(pod).map_or(Precondition::Exists, Precondition::Version);
    if node_exists && pod_active(pod) {
        let grace = int(pod, "/spec/terminationGracePeriodSeconds", 30).max(0);
        let mut new = pod.clone();
        let ts = chrono::Utc::now() + chrono::Duration::seconds(grace);
        new["metadata"]["deletionTimestamp"] =
            json!(ts.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
        new["metadata"]["deletionGracePeriodSeconds"] = json!(grace);
        let written = update(store, key, pod, new).await;
        if written {
            let msg = format!("Deleted pod: {}", key.name);
            owner_event(store, key, pod, "SuccessfulDelete", &msg).await;
        }
        return written;
    }
    match store.delete(key.clone(), pre).await {
        Ok(_) => {
            let msg = format!("Deleted pod: {}", key.name);
            owner_event(store, key, pod, "SuccessfulDelete", &msg).await;
            true
        }
        Err(StoreError::NotFound(_) | StoreError::Conflict(_)) => true,
        Err(e) => {
            tracing::warn!(error = %e, pod = %key.name, "pod delete failed");
            false
        }
    }
}

/// Adopt orphans the selector matches and release owned objects it no longer matches; returns
/// the objects `owner` controls afterwards.
async fn claim(
    store: &Store,
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
                    update(store, &k, &o, new).await;
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
                if update(store, &k, &o, new.clone()).await {
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

async fn create(store: &Store, key: Key, obj: Value) -> bool {
    match store
        .put(key.clone(), obj.clone(), Precondition::Absent)
        .await
    {
        Ok(_) => {
            if key.resource == "pods" {
                let msg = format!("Created pod: {}", key.name);
                owner_event(store, &key, &obj, "SuccessfulCreate", &msg).await;
            }
            true
        }
        Err(StoreError::AlreadyExists(_)) => true,
        Err(e) => {
            tracing::warn!(error = %e, object = %key.name, "workload controller create failed");
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
async fn write_status(store: &Store, key: &Key, obj: &Value, status: Map<String, Value>) -> bool {
    if obj.get("status").and_then(Value::as_object) == Some(&status) {
        return false;
    }
    let mut new = obj.clone();
    new["status"] = Value::Object(status);
    update(store, key, obj, new).await
}

// ---------------------------------------------------------------------------------------------
// ReplicaSet.

/// Order in which surplus pods go: unscheduled, then pending, then not ready, then newest.
fn deletion_rank(p: &Value) -> (u8, u8, u8, Reverse<String>) {
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

async fn sync_replicaset(store: &Store, key: &Key, rs: &Value) -> bool {
    if terminating(rs) || selector_empty(rs.pointer("/spec/selector")) {
        return false;
    }
    let mut changed = false;
    let pods = list_ns(store, "pods", &key.tenant, &key.namespace);
    let owned = claim(store, rs, "ReplicaSet", pods).await;
    let mut active: Vec<&(Key, Value)> = owned.iter().filter(|(_, p)| pod_active(p)).collect();
    let want = usize::try_from(int(rs, "/spec/replicas", 1).max(0)).unwrap_or(0);
    let tpl = rs.pointer("/spec/template").cloned().unwrap_or(json!({}));
    if active.len() < want {
        for _ in 0..(want - active.len()).min(BURST) {
            let (k, pod) = pod_from_template(key, rs, "ReplicaSet", &tpl, &key.name);
            changed |= create(store, k, pod).await;
        }
    } else if active.len() > want {
        active.sort_by_key(|(_, p)| deletion_rank(p));
        for (k, p) in active.iter().take((active.len() - want).min(BURST)) {
            changed |= delete_pod(store, k, p).await;
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
    let pods: Vec<Arc<Value>> = list_ns(store, "pods", &key.tenant, &key.namespace)
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
    changed |= write_status(store, key, rs, status).await;
    changed
}

// ---------------------------------------------------------------------------------------------
// Deployment.

fn revision(v: &Value) -> i64 {
    v.pointer("/metadata/annotations")
        .and_then(|a| a.get(REVISION))
        .and_then(Value::as_str)
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

/// Pods of a ReplicaSet: (active, available).
fn rs_pods(
    pods: &[(Key, Arc<Value>)],
    rs: &Value,
    now: chrono::DateTime<chrono::Utc>,
) -> (i64, i64) {
    let uid = meta(rs, "uid");
    let min_ready = int(rs, "/spec/minReadySeconds", 0);
    let mut active = 0;
    let mut available = 0;
    for (_, p) in pods {
        if controller_uid(p) == Some(uid) && pod_active(p) {
            active += 1;
            if pod_available(p, min_ready, now) {
                available += 1;
            }
        }
    }
    (active, available)
}

fn new_replicaset(
    key: &Key,
    d: &Value,
    tpl: &Value,
    hash: &str,
    replicas: i64,
    rev: i64,
) -> (Key, Value) {
    let name = format!("{}-{hash}", key.name);
    let mut tpl = tpl.clone();
    if !tpl.get("metadata").is_some_and(Value::is_object) {
        tpl["metadata"] = json!({});
    }
    if !tpl["metadata"].get("labels").is_some_and(Value::is_object) {
        tpl["metadata"]["labels"] = json!({});
    }
    tpl["metadata"]["labels"][HASH_LABEL] = json!(hash);
    let mut selector = d.pointer("/spec/selector").cloned().unwrap_or(json!({}));
    if !selector.get("matchLabels").is_some_and(Value::is_object) {
        selector["matchLabels"] = json!({});
    }
    selector["matchLabels"][HASH_LABEL] = json!(hash);
    let mut annotations = json!({
        REVISION: rev.to_string(),
        "deployment.kubernetes.io/desired-replicas": int(d, "/spec/replicas", 1).to_string(),
    });
    if let Some(c) = d
        .pointer("/metadata/annotations")
        .and_then(|a| a.get("kubernetes.io/change-cause"))
    {
        annotations["kubernetes.io/change-cause"] = c.clone();
    }
    let mut rs = json!({
        "apiVersion": "apps/v1", "kind": "ReplicaSet",
        "metadata": {
            "name": name, "namespace": key.namespace,
            "uid": uuid::Uuid::new_v4().to_string(), "creationTimestamp": now_str(), "generation": 1,
            "labels": tpl["metadata"]["labels"].clone(),
            "annotations": annotations,
            "ownerReferences": [owner_ref("Deployment", d)],
        },
        "spec": {
            "replicas": replicas,
            "minReadySeconds": int(d, "/spec/minReadySeconds", 0),
            "selector": selector,
            "template": tpl,
        },
        "status": {"replicas": 0},
    });
    if !key.tenant.is_empty() {
        rs["metadata"]["tenant"] = json!(key.tenant);
    }
    (
        Key::new(REPLICASETS, &key.tenant, &key.namespace, &name),
        rs,
    )
}

fn set_annotation(obj: &mut Value, k: &str, v: &str) {
    if !obj["metadata"]
        .get("annotations")
        .is_some_and(Value::is_object)
    {
        obj["metadata"]["annotations"] = json!({});
    }
    obj["metadata"]["annotations"][k] = json!(v);
}

/// A deployment condition, keeping its timestamps when nothing about it changed.
fn condition(old: &[Value], ty: &str, status: &str, reason: &str, message: &str) -> Value {
    let now = now_str();
    let prev = old
        .iter()
        .find(|c| c.get("type").and_then(Value::as_str) == Some(ty));
    let same_status = prev.is_some_and(|p| p.get("status").and_then(Value::as_str) == Some(status));
    let same = same_status
        && prev.is_some_and(|p| {
            p.get("reason").and_then(Value::as_str) == Some(reason)
                && p.get("message").and_then(Value::as_str) == Some(message)
        });
    let keep = |f: &str| {
        prev.and_then(|p| p.get(f))
            .cloned()
            .unwrap_or_else(|| json!(now))
    };
    json!({
        "type": ty, "status": status,
        "lastUpdateTime": if same { keep("lastUpdateTime") } else { json!(now) },
        "lastTransitionTime": if same_status { keep("lastTransitionTime") } else { json!(now) },
        "reason": reason, "message": message,
    })
}

async fn sync_deployment(store: &Store, key: &Key, d: &Value) -> bool {
    if terminating(d) || selector_empty(d.pointer("/spec/selector")) {
        return false;
    }
    let now = chrono::Utc::now();
    let rss = list_ns(store, REPLICASETS, &key.tenant, &key.namespace);
    let mut owned = claim(store, d, "Deployment", rss).await;
    owned.sort_by_key(|(_, rs)| (revision(rs), meta(rs, "creationTimestamp").to_string()));
    let tpl = d.pointer("/spec/template").cloned().unwrap_or(json!({}));
    let want_tpl = normalized_template(&tpl);
    let replicas = int(d, "/spec/replicas", 1).max(0);
    let paused = d.pointer("/spec/paused").and_then(Value::as_bool) == Some(true);
    let recreate = d.pointer("/spec/strategy/type").and_then(Value::as_str) == Some("Recreate");
    let surge = if recreate {
        0
    } else {
        scaled(
            d.pointer("/spec/strategy/rollingUpdate/maxSurge"),
            replicas,
            true,
            0,
        )
    };
    let mut unavailable = if recreate {
        replicas
    } else {
        scaled(
            d.pointer("/spec/strategy/rollingUpdate/maxUnavailable"),
            replicas,
            false,
            0,
        )
    };
    if surge == 0 && unavailable == 0 {
        unavailable = 1;
    }
    let new_idx = owned.iter().position(|(_, rs)| {
        normalized_template(rs.pointer("/spec/template").unwrap_or(&Value::Null)) == want_tpl
    });
    let max_old_rev = owned
        .iter()
        .enumerate()
        .filter(|(i, _)| Some(*i) != new_idx)
        .map(|(_, (_, rs))| revision(rs))
        .max()
        .unwrap_or(0);
    let pods = list_ns(store, "pods", &key.tenant, &key.namespace);

    let Some(new_idx) = new_idx else {
        if paused {
            return false;
        }
        // A new ReplicaSet for the current template.
        let old_total: i64 = owned
            .iter()
            .map(|(_, rs)| int(rs, "/spec/replicas", 0))
            .sum();
        let initial = if recreate {
            0
        } else if old_total == 0 {
            replicas
        } else {
            (replicas + surge - old_total).clamp(0, replicas)
        };
        let collisions = d.pointer("/status/collisionCount").and_then(Value::as_i64);
        let hash = template_hash(&tpl, collisions);
        let (rk, rs) = new_replicaset(key, d, &tpl, &hash, initial, max_old_rev + 1);
        if let Some(existing) = store.get(&rk) {
            // Someone else's ReplicaSet, or ours with another template: a hash collision.
            if controller_uid(&existing) != Some(meta(d, "uid"))
                || normalized_template(existing.pointer("/spec/template").unwrap_or(&Value::Null))
                    != want_tpl
            {
                let mut new = d.clone();
                new["status"]["collisionCount"] = json!(collisions.unwrap_or(0) + 1);
                return update(store, key, d, new).await;
            }
            return false;
        }
        tracing::info!(deployment = %key.name, namespace = %key.namespace, replicaset = %rk.name, "new replicaset");
        let created = create(store, rk.clone(), rs.clone()).await;
        if created && initial > 0 {
            let msg = format!("Scaled up replica set {} from 0 to {initial}", rk.name);
            owner_event(store, &rk, &rs, "ScalingReplicaSet", &msg).await;
        }
        return created;
    };

    let (new_key, new_rs) = owned[new_idx].clone();
    let mut changed = false;
    // The new ReplicaSet carries the newest revision (again, after a rollback).
    let rev = revision(&new_rs);
    if rev <= max_old_rev || rev == 0 {
        let mut n = new_rs.clone();
        set_annotation(&mut n, REVISION, &(max_old_rev + 1).to_string());
        return update(store, &new_key, &new_rs, n).await;
    }
    if meta_annotation(d, REVISION) != Some(rev.to_string()) {
        let mut n = d.clone();
        set_annotation(&mut n, REVISION, &rev.to_string());
        return update(store, key, d, n).await;
    }
    let min_ready = int(d, "/spec/minReadySeconds", 0);
    if int(&new_rs, "/spec/minReadySeconds", 0) != min_ready {
        let mut n = new_rs.clone();
        n["spec"]["minReadySeconds"] = json!(min_ready);
        n["metadata"]["generation"] = json!(int(&new_rs, "/metadata/generation", 1) + 1);
        return update(store, &new_key, &new_rs, n).await;
    }
    let olds: Vec<&(Key, Value)> = owned
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != new_idx)
        .map(|(_, x)| x)
        .collect();

    if !paused {
        changed |= if recreate {
            rollout_recreate(store, &pods, &new_key, &new_rs, &olds, replicas).await
        } else {
            rollout_rolling(
                store,
                &pods,
                &new_key,
                &new_rs,
                &olds,
                replicas,
                surge,
                unavailable,
                now,
            )
            .await
        };
    }

    // History: old ReplicaSets at zero beyond revisionHistoryLimit go, oldest first.
    let limit = usize::try_from(int(d, "/spec/revisionHistoryLimit", 10).max(0)).unwrap_or(10);
    let idle: Vec<&&(Key, Value)> = olds
        .iter()
        .filter(|(_, rs)| int(rs, "/spec/replicas", 0) == 0 && rs_pods(&pods, rs, now).0 == 0)
        .collect();
    if idle.len() > limit {
        for (k, rs) in idle.iter().take(idle.len() - limit) {
            let pre = store::object_rv(rs).map_or(Precondition::Exists, Precondition::Version);
            if store.delete(k.clone(), pre).await.is_ok() {
                changed = true;
            }
        }
    }

    // Status, from what is stored now.
    let rss: Vec<Value> = list_ns(store, REPLICASETS, &key.tenant, &key.namespace)
        .into_iter()
        .filter(|(_, rs)| controller_uid(rs) == Some(meta(d, "uid")))
        .map(|(_, rs)| (*rs).clone())
        .collect();
    let pods = list_ns(store, "pods", &key.tenant, &key.namespace);
    let new_uid = meta(&new_rs, "uid");
    let mut total = 0;
    let mut updated = 0;
    let mut ready = 0;
    let mut available = 0;
    let mut spec_total = 0;
    for rs in &rss {
        spec_total += int(rs, "/spec/replicas", 0);
        let uid = meta(rs, "uid");
        let min_ready = int(rs, "/spec/minReadySeconds", 0);
        for (_, p) in pods
            .iter()
            .filter(|(_, p)| controller_uid(p) == Some(uid) && pod_active(p))
        {
            total += 1;
            if uid == new_uid {
                updated += 1;
            }
            if pod_ready(p) {
                ready += 1;
            }
            if pod_available(p, min_ready, now) {
                available += 1;
            }
        }
    }
    let generation = int(d, "/metadata/generation", 1);
    let mut status = d
        .get("status")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let old_conds: Vec<Value> = status
        .get("conditions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let min_available = replicas - if recreate { 0 } else { unavailable };
    let avail_cond = if available >= min_available {
        condition(
            &old_conds,
            "Available",
            "True",
            "MinimumReplicasAvailable",
            "Deployment has minimum availability.",
        )
    } else {
        condition(
            &old_conds,
            "Available",
            "False",
            "MinimumReplicasUnavailable",
            "Deployment does not have minimum availability.",
        )
    };
    let complete = updated == replicas && total == replicas && available == replicas;
    let prog_cond = if paused {
        condition(
            &old_conds,
            "Progressing",
            "Unknown",
            "DeploymentPaused",
            "Deployment is paused",
        )
    } else if complete {
        condition(
            &old_conds,
            "Progressing",
            "True",
            "NewReplicaSetAvailable",
            &format!("ReplicaSet {:?} has successfully progressed.", new_key.name),
        )
    } else {
        // Progress (more updated, ready or available pods, fewer old ones, a new generation)
        // renews `lastUpdateTime`; none for `progressDeadlineSeconds` fails the rollout.
        let was = |f: &str| status.get(f).and_then(Value::as_i64).unwrap_or(0);
        let progressed = updated > was("updatedReplicas")
            || ready > was("readyReplicas")
            || available > was("availableReplicas")
            || total < was("replicas")
            || generation != was("observedGeneration");
        let prev = old_conds
            .iter()
            .find(|c| c.get("type").and_then(Value::as_str) == Some("Progressing"));
        let prev_reason = prev
            .and_then(|c| c.get("reason"))
            .and_then(Value::as_str)
            .unwrap_or("");
        let stalled_for = prev
            .and_then(|c| c.get("lastUpdateTime"))
            .and_then(Value::as_str)
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            .map_or(0, |t| now.signed_duration_since(t).num_seconds());
        let deadline = int(d, "/spec/progressDeadlineSeconds", 600);
        let exceeded = !progressed
            && prev_reason != "NewReplicaSetAvailable"
            && (prev_reason == "ProgressDeadlineExceeded" || stalled_for > deadline);
        if exceeded {
            condition(
                &old_conds,
                "Progressing",
                "False",
                "ProgressDeadlineExceeded",
                &format!("ReplicaSet {:?} has timed out progressing.", new_key.name),
            )
        } else {
            let mut c = condition(
                &old_conds,
                "Progressing",
                "True",
                "ReplicaSetUpdated",
                &format!("ReplicaSet {:?} is progressing.", new_key.name),
            );
            if progressed {
                c["lastUpdateTime"] = json!(now_str());
            }
            c
        }
    };
    status.insert("observedGeneration".into(), json!(generation));
    status.insert("replicas".into(), json!(total));
    status.insert("updatedReplicas".into(), json!(updated));
    status.insert("readyReplicas".into(), json!(ready));
    status.insert("availableReplicas".into(), json!(available));
    status.insert(
        "unavailableReplicas".into(),
        json!((spec_total - available).max(0)),
    );
    status.insert("conditions".into(), json!([avail_cond, prog_cond]));
    omit_zeros(
        &mut status,
        &[
            "readyReplicas",
            "availableReplicas",
            "updatedReplicas",
            "replicas",
            "unavailableReplicas",
        ],
    );
    changed |= write_status(store, key, d, status).await;
    changed
}

fn meta_annotation(v: &Value, k: &str) -> Option<String> {
    v.pointer("/metadata/annotations")
        .and_then(|a| a.get(k))
        .and_then(Value::as_str)
        .map(String::from)
}

async fn rollout_recreate(
    store: &Store,
    pods: &[(Key, Arc<Value>)],
    new_key: &Key,
    new_rs: &Value,
    olds: &[&(Key, Value)],
    replicas: i64,
) -> bool {
    let mut changed = false;
    for (k, rs) in olds {
        changed |= set_replicas(store, k, rs, 0).await;
    }
    let old_running = olds.iter().any(|(_, rs)| {
        let uid = meta(rs, "uid");
        pods.iter().any(|(_, p)| {
            controller_uid(p) == Some(uid)
                && !matches!(
                    p.pointer("/status/phase").and_then(Value::as_str),
                    Some("Succeeded" | "Failed")
                )
        })
    });
    if changed || old_running {
        return changed;
    }
    set_replicas(store, new_key, new_rs, replicas).await
}

#[allow(clippy::too_many_arguments)]
async fn rollout_rolling(
    store: &Store,
    pods: &[(Key, Arc<Value>)],
    new_key: &Key,
    new_rs: &Value,
    olds: &[&(Key, Value)],
    replicas: i64,
    surge: i64,
    max_unavailable: i64,
    now: chrono::DateTime<chrono::Utc>,
) -> bool {
    let new_spec = int(new_rs, "/spec/replicas", 0);
    let old_spec: i64 = olds
        .iter()
        .map(|(_, rs)| int(rs, "/spec/replicas", 0))
        .sum();
    // Scale the new ReplicaSet up (within maxSurge) or down to the wanted count.
    if new_spec > replicas {
        return set_replicas(store, new_key, new_rs, replicas).await;
    }
    if new_spec < replicas {
        let max_total = replicas + surge;
        let total = new_spec + old_spec;
        if total < max_total {
            let up = (max_total - total).min(replicas - new_spec);
            return set_replicas(store, new_key, new_rs, new_spec + up).await;
        }
    }
    if old_spec == 0 {
        return false;
    }
    // Scale old ReplicaSets down, keeping `replicas - maxUnavailable` available.
    let min_available = replicas - max_unavailable;
    let (_, new_available) = rs_pods(pods, new_rs, now);
    let new_unavailable = (new_spec - new_available).max(0);
    let all = new_spec + old_spec;
    let mut budget = all - min_available - new_unavailable;
    if budget <= 0 {
        return false;
    }
    let mut changed = false;
    // First the old replicas that are not available anyway.
    let mut olds_now: Vec<(Key, Value, i64)> = Vec::new();
    for (k, rs) in olds {
        let spec = int(rs, "/spec/replicas", 0);
        let (_, avail) = rs_pods(pods, rs, now);
        let unhealthy = (spec - avail).max(0).min(budget);
        if unhealthy > 0 && spec > 0 {
            changed |= set_replicas(store, k, rs, spec - unhealthy).await;
            budget -= unhealthy;
            olds_now.push((k.clone(), (*rs).clone(), avail));
            continue;
        }
        olds_now.push((k.clone(), (*rs).clone(), avail));
    }
    if changed {
        return true;
    }
    // Then available ones, oldest first, while availability allows.
    let total_available: i64 = new_available + olds_now.iter().map(|(_, _, a)| a).sum::<i64>();
    let mut down = (total_available - min_available).max(0);
    for (k, rs, _) in olds_now {
        if down == 0 {
            break;
        }
        let spec = int(&rs, "/spec/replicas", 0);
        let by = spec.min(down);
        if by > 0 {
            changed |= set_replicas(store, &k, &rs, spec - by).await;
            down -= by;
        }
    }
    changed
}

// ---------------------------------------------------------------------------------------------
// DaemonSet.

/// Tolerations kube-controller-manager adds to every daemon pod.
fn daemon_tolerations() -> Vec<Value> {
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

fn tolerates(t: &Value, taint: &Value) -> bool {
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
/// and every NoSchedule/NoExecute taint tolerated.
pub fn should_run(spec: &Value, node: &Value) -> bool {
    let nl = labels(node);
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
async fn sync_history(
    store: &Store,
    key: &Key,
    ds: &Value,
    tpl: &Value,
    hash: &str,
    in_use: &std::collections::HashSet<String>,
) -> bool {
    let crs = list_ns(store, REVISIONS, &key.tenant, &key.namespace);
    let mut owned = claim(store, ds, "DaemonSet", crs).await;
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
                store,
                Key::new(REVISIONS, &key.tenant, &key.namespace, &name),
                cr,
            )
            .await;
        }
        Some((k, c)) if int(c, "/revision", 0) < max => {
            // Rolled back to an earlier template: it becomes the newest revision.
            let mut n = c.clone();
            n["revision"] = json!(max + 1);
            return update(store, k, c, n).await;
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
            let pre = store::object_rv(c).map_or(Precondition::Exists, Precondition::Version);
            changed |= store.delete(k.clone(), pre).await.is_ok();
        }
    }
    changed
}

fn pod_hash(p: &Value) -> &str {
    p.pointer("/metadata/labels")
        .and_then(|l| l.get(DS_HASH_LABEL))
        .and_then(Value::as_str)
        .unwrap_or("")
}

async fn sync_daemonset(store: &Store, key: &Key, ds: &Value, nodes: &[(Key, Arc<Value>)]) -> bool {
    if terminating(ds) || selector_empty(ds.pointer("/spec/selector")) {
        return false;
    }
    let now = chrono::Utc::now();
    let tpl = ds.pointer("/spec/template").cloned().unwrap_or(json!({}));
    let spec = tpl.get("spec").cloned().unwrap_or(json!({}));
    let hash = template_hash(&tpl, None);
    let generation = int(ds, "/metadata/generation", 1);
    let min_ready = int(ds, "/spec/minReadySeconds", 0);
    let pods = list_ns(store, "pods", &key.tenant, &key.namespace);
    let owned = claim(store, ds, "DaemonSet", pods).await;
    let in_use: std::collections::HashSet<String> =
        owned.iter().map(|(_, p)| pod_hash(p).to_string()).collect();
    let mut changed = sync_history(store, key, ds, &tpl, &hash, &in_use).await;
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
            changed |= delete_pod(store, &k, &p).await;
        }
    }
    let node_names: std::collections::HashSet<&str> =
        nodes.iter().map(|(k, _)| k.name.as_str()).collect();
    // Pods on nodes that are gone, or unbound.
    for (node, (pods, _)) in &by_node {
        if !node_names.contains(node.as_str()) {
            for (k, p) in pods {
                changed |= delete_pod(store, k, p).await;
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
                changed |= delete_pod(store, k, p).await;
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
                changed |= create(store, k, pod).await;
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
            changed |= delete_pod(store, k, p).await;
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
                changed |= delete_pod(store, k, p).await;
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
            changed |= delete_pod(store, k, p).await;
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
    changed |= write_status(store, key, ds, status).await;
    changed
}

// ---------------------------------------------------------------------------------------------
// The loop.

/// One pass over every workload; returns whether it wrote anything.
pub async fn reconcile(store: &Store) -> bool {
    let mut changed = false;
    for (k, rs) in store.list_of(REPLICASETS, None) {
        changed |= sync_replicaset(store, &k, &rs).await;
    }
    for (k, d) in store.list_of(DEPLOYMENTS, None) {
        changed |= sync_deployment(store, &k, &d).await;
    }
    let daemonsets = store.list_of(DAEMONSETS, None);
    if daemonsets.is_empty() {
        return changed;
    }
    let nodes = store.list_of("nodes", Some(""));
    for (k, ds) in daemonsets {
        changed |= sync_daemonset(store, &k, &ds, &nodes).await;
    }
    changed
}

fn relevant(resource: &str) -> bool {
    matches!(
        resource,
        "pods" | "nodes" | DEPLOYMENTS | REPLICASETS | DAEMONSETS | REVISIONS
    )
}

/// Run the workload controllers until cancelled: a pass at start, after every relevant store
/// change (coalesced), and every few seconds (minReadySeconds, retries).
pub async fn run(store: Store, cancel: CancellationToken) {
    crate::changes::on_changes(
        &store,
        Duration::from_secs(5),
        Duration::ZERO,
        &cancel,
        |e| relevant(&e.key.resource),
        || async {
            reconcile(&store).await;
        },
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use store::MemBackend;

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
        let s = Store::open(Box::new(MemBackend), 10_000).expect("store");
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
            reconcile(&s).await;
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
            reconcile(&s).await;
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
            reconcile(&s).await;
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
            !reconcile(&s).await,
            "a converged deployment writes nothing"
        );
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn replicaset_converges_adopts_and_scales_down() {
        let s = Store::open(Box::new(MemBackend), 1000).expect("store");
        let k = Key::new(REPLICASETS, "", "default", "web");
        s.put(k.clone(), rs(3), Precondition::Absent)
            .await
            .expect("rs");
        // An orphan with matching labels is adopted rather than duplicated.
        s.put(
            Key::new("pods", "", "default", "stray"),
            json!({"metadata": {"name": "stray", "namespace": "default", "labels": {"app": "web"}}, "spec": {}}),
            Precondition::Absent,
        )
        .await
        .expect("pod");
        for _ in 0..5 {
            reconcile(&s).await;
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
        assert!(!reconcile(&s).await);
        let mut down = (*cur).clone();
        down["spec"]["replicas"] = json!(1);
        s.put(k.clone(), down, Precondition::Exists)
            .await
            .expect("scale");
        for _ in 0..5 {
            reconcile(&s).await;
        }
        assert_eq!(owned_pods(&s).len(), 1);
    }
}
