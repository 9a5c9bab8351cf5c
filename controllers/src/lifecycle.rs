//! Built-in controllers every Atoll API server runs: namespace and tenant lifecycle
//! (Terminating until the contents are gone), and garbage collection by ownerReferences
//! (background, foreground and orphan propagation). They write through the API's rules
//! (`api::Writer`) under their own identities; event expiry is the store's own (as etcd leases
//! are kube-apiserver's) and deletes directly.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio_util::sync::CancellationToken;

use apiserver::api::{component, owned_by, Api, Writer};
use apiserver::auth::TOKENS;
use apiserver::error::ApiResult;
use apiserver::resources::RESOURCES;

use crate::changes::on_changes;
use store::{Key, Precondition, Scope, Store};

fn terminating(v: &Value) -> bool {
    v.pointer("/metadata/deletionTimestamp").is_some()
}

fn finalizers(v: &Value) -> Vec<String> {
    v.pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|f| f.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// The lifecycle controllers' writers, each under its own identity (kube-controller-manager's
/// names; the tenant controller is Arktos').
pub struct Writers {
    namespaces: Writer,
    tenants: Writer,
    gc: Writer,
}

impl Writers {
    /// The lifecycle controllers writing through `api`.
    pub fn new(api: &Arc<Api>) -> Self {
        let w = |name| Writer::new(api.clone(), component(name));
        Writers {
            namespaces: w("namespace-controller"),
            tenants: w("tenant-controller"),
            gc: w("generic-garbage-collector"),
        }
    }

    fn store(&self) -> &Store {
        self.namespaces.store()
    }
}

/// Whether a write went through; a refusal is logged (the next pass retries), an object gone
/// meanwhile is no failure.
fn wrote<T>(what: &str, key: &Key, r: ApiResult<T>) -> bool {
    match r {
        Ok(_) => true,
        Err(e) if e.code == 404 || e.code == 409 => false,
        Err(e) => {
            tracing::warn!(key = ?key, error = %e.message, "{what} failed");
            false
        }
    }
}

/// Delete `v` as a `DELETE` with background propagation would, unless it is already going. A
/// pod bound to a node that does not exist is deleted at once (grace 0, as kube's pod garbage
/// collector does): no agent will ever stop it.
async fn delete_content(w: &Writer, key: &Key, v: &Value) -> bool {
    if terminating(v) {
        return false;
    }
    let node = v
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .unwrap_or("");
    let grace = (key.resource == "pods"
        && !node.is_empty()
        && w.store().get(&Key::new("nodes", "", "", node)).is_none())
    .then_some(0);
    wrote(
        "delete",
        key,
        w.delete(key, v, grace, Some("Background")).await,
    )
}

/// How old a tenant must be before a missing system namespace of it is repaired: its creation
/// writes them right after the tenant (a later partition's commit), so a younger one may still
/// be on its way.
const REPAIR_AFTER: chrono::TimeDelta = chrono::TimeDelta::seconds(60);

/// Tenants that lost their system namespaces (a crash between the system cluster's commit and
/// their partition's, or a rollback that failed): create what is missing, each namespace with
/// its ServiceAccount, as the tenant's creation would have.
async fn repair_tenants(ws: &Writers, now: chrono::DateTime<chrono::Utc>) -> bool {
    let store = ws.store();
    let mut changed = false;
    for (tkey, tenant) in store.list_of("tenants", Some("")) {
        let old_enough = tenant
            .pointer("/metadata/creationTimestamp")
            .and_then(Value::as_str)
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            .is_some_and(|t| now.signed_duration_since(t) >= REPAIR_AFTER);
        if terminating(&tenant) || !old_enough {
            continue;
        }
        for ns in apiserver::bootstrap::SYSTEM_NAMESPACES {
            let key = Key::new("namespaces", &tkey.name, "", ns);
            if store.get(&key).is_some() {
                continue;
            }
            let obj = apiserver::api::namespace_object(&tkey.name, ns);
            if wrote("create", &key, ws.tenants.create(&key, obj).await) {
                tracing::warn!(tenant = %tkey.name, namespace = %ns, "repaired a tenant's missing system namespace");
                changed = true;
            }
        }
    }
    changed
}

/// One pass over everything; returns whether it wrote anything.
pub async fn reconcile(ws: &Writers) -> bool {
    let store = ws.store();
    let mut changed = repair_tenants(ws, chrono::Utc::now()).await;
    // Tenants being deleted: delete their whole space (namespaces go through their own
    // termination below); once it is empty, their tokens, then the tenant.
    for (tkey, tenant) in store.list_of("tenants", Some("")) {
        if !terminating(&tenant) {
            continue;
        }
        let name = tkey.name.clone();
        let mut left = 0;
        for r in RESOURCES {
            for (k, v) in store.list_of(&r.store_name(), Some(&name)) {
                left += 1;
                changed |= delete_content(&ws.tenants, &k, &v).await;
            }
        }
        if left > 0 || !finalizers(&tenant).is_empty() {
            continue;
        }
        // Tokens are credentials the API never serves as objects: the store's own records.
        for (k, rec) in store.list_of(TOKENS, Some("")) {
            if rec.get("tenant").and_then(Value::as_str) == Some(name.as_str()) {
                let _ = store.delete(k, Precondition::Exists).await;
            }
        }
        if wrote("remove", &tkey, ws.tenants.remove(&tkey, &tenant).await) {
            tracing::info!(tenant = %name, "tenant removed");
            changed = true;
        }
    }
    // Namespaces being deleted: delete their contents; once none is left, the namespace.
    for (nkey, ns) in store.list_of("namespaces", None) {
        if !terminating(&ns) {
            continue;
        }
        let mut left = 0;
        for r in RESOURCES.iter().filter(|r| r.namespaced) {
            let scope = Scope {
                resource: r.store_name(),
                tenant: Some(nkey.tenant.clone()),
                namespace: Some(nkey.name.clone()),
            };
            for (k, v) in store.list(&scope, None).1 {
                left += 1;
                changed |= delete_content(&ws.namespaces, &k, &v).await;
            }
        }
        if left > 0 || !finalizers(&ns).is_empty() {
            continue;
        }
        if wrote("remove", &nkey, ws.namespaces.remove(&nkey, &ns).await) {
            tracing::info!(tenant = %nkey.tenant, namespace = %nkey.name, "namespace removed");
            changed = true;
        }
    }
    changed |= collect_garbage(&ws.gc).await;
    changed
}

/// Garbage collection by ownerReferences.
async fn collect_garbage(gc: &Writer) -> bool {
    let store = gc.store();
    let mut objects = Vec::new();
    for r in RESOURCES {
        objects.extend(store.list_of(&r.store_name(), None));
    }
    let uids: HashSet<String> = objects
        .iter()
        .filter_map(|(_, o)| {
            o.pointer("/metadata/uid")
                .and_then(Value::as_str)
                .map(String::from)
        })
        .collect();
    let mut changed = false;
    // Owners waiting on their dependents.
    for (key, owner) in &objects {
        if !terminating(owner) {
            continue;
        }
        let fins = finalizers(owner);
        let uid = owner
            .pointer("/metadata/uid")
            .and_then(Value::as_str)
            .unwrap_or("");
        let dependents: Vec<&(Key, Arc<Value>)> = objects
            .iter()
            .filter(|(k, o)| k.tenant == key.tenant && owned_by(o, uid))
            .collect();
        let done = if fins.iter().any(|f| f == "orphan") {
            for (k, d) in &dependents {
                let mut n = (**d).clone();
                if let Some(refs) = n
                    .pointer_mut("/metadata/ownerReferences")
                    .and_then(Value::as_array_mut)
                {
                    refs.retain(|r| r.get("uid").and_then(Value::as_str) != Some(uid));
                }
                wrote("orphan", k, gc.update(k, d, n, false).await);
            }
            Some("orphan")
        } else if fins.iter().any(|f| f == "foregroundDeletion") {
            for (k, d) in &dependents {
                if !terminating(d) {
                    wrote("delete", k, gc.delete(k, d, None, Some("Background")).await);
                }
            }
            dependents.is_empty().then_some("foregroundDeletion")
        } else {
            None
        };
        if let Some(f) = done {
            let mut o = (**owner).clone();
            if let Some(list) = o
                .pointer_mut("/metadata/finalizers")
                .and_then(Value::as_array_mut)
            {
                list.retain(|x| x.as_str() != Some(f));
            }
            // The update removing the last finalizer removes the object, as through the API.
            changed |= wrote("finalize", key, gc.update(key, owner, o, false).await);
        }
    }
    // Dependents whose owners are all gone (background deletion).
    for (key, o) in &objects {
        let Some(refs) = o
            .pointer("/metadata/ownerReferences")
            .and_then(Value::as_array)
        else {
            continue;
        };
        if refs.is_empty() || terminating(o) {
            continue;
        }
        if refs.iter().all(|r| {
            r.get("uid")
                .and_then(Value::as_str)
                .is_none_or(|u| !uids.contains(u))
        }) {
            changed |= wrote(
                "delete",
                key,
                gc.delete(key, o, None, Some("Background")).await,
            );
        }
    }
    changed
}

/// Run the controllers until cancelled: a pass at start, then after every deletion-related
/// change (and every few seconds as a safety net).
pub async fn run(api: Arc<Api>, cancel: CancellationToken) {
    let ws = Writers::new(&api);
    on_changes(
        ws.store(),
        Duration::from_secs(5),
        Duration::ZERO,
        &cancel,
        |e| e.kind == store::EventType::Deleted || terminating(&e.object),
        || async { while reconcile(&ws).await {} },
    )
    .await
}

/// How long events live (kube-apiserver's `--event-ttl` default).
pub const EVENT_TTL: Duration = Duration::from_secs(3600);

/// Events (every tenant) whose last occurrence is older than `ttl` at `now`.
pub fn expired_events(
    store: &Store,
    ttl: Duration,
    now: chrono::DateTime<chrono::Utc>,
) -> Vec<Key> {
    let scope = Scope {
        resource: "events".into(),
        tenant: None,
        namespace: None,
    };
    let ttl = chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::MAX);
    store
        .list(&scope, None)
        .1
        .into_iter()
        .filter(|(_, v)| {
            let last = [
                "/lastTimestamp",
                "/eventTime",
                "/metadata/creationTimestamp",
            ]
            .iter()
            .find_map(|p| v.pointer(p).and_then(Value::as_str))
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok());
            last.is_some_and(|t| now.signed_duration_since(t) > ttl)
        })
        .map(|(k, _)| k)
        .collect()
}

/// Delete expired events once a minute until cancelled (each tier expires its own copies).
pub async fn expire_events(store: Store, ttl: Duration, cancel: CancellationToken) {
    loop {
        for key in expired_events(&store, ttl, chrono::Utc::now()) {
            let _ = store.delete(key, Precondition::Exists).await;
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(60)) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use store::Op;

    fn obj(name: &str, uid: &str, owner: Option<&str>, fins: &[&str], deleting: bool) -> Value {
        let mut v = json!({"metadata": {"name": name, "namespace": "ns", "uid": uid}});
        if let Some(o) = owner {
            v["metadata"]["ownerReferences"] =
                json!([{"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": o}]);
        }
        if !fins.is_empty() {
            v["metadata"]["finalizers"] = json!(fins);
        }
        if deleting {
            v["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
        }
        v
    }

    async fn setup(owner_fins: &[&str], owner_deleted: bool) -> (Store, Writers) {
        let s = Store::memory(100).await.expect("store");
        let ws = Writers::new(&Api::new(s.clone(), apiserver::api::ApiConfig::default()));
        let mut ops = vec![Op::Put {
            key: Key::new("configmaps", "", "ns", "dep"),
            value: obj("dep", "d1", Some("o1"), &[], false),
            pre: Precondition::Absent,
        }];
        if !owner_deleted {
            ops.push(Op::Put {
                key: Key::new("configmaps", "", "ns", "owner"),
                value: obj("owner", "o1", None, owner_fins, true),
                pre: Precondition::Absent,
            });
        }
        s.commit(ops).await.expect("commit");
        (s, ws)
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_tenant_missing_its_system_namespaces_gets_them_back() {
        let s = Store::memory(100).await.expect("store");
        let ws = Writers::new(&Api::new(s.clone(), apiserver::api::ApiConfig::default()));
        let tenant = |name: &str, created: &str| Op::Put {
            key: Key::new("tenants", "", "", name),
            value: json!({"apiVersion": "v1", "kind": "Tenant",
                "metadata": {"name": name, "uid": format!("u-{name}"), "creationTimestamp": created},
                "spec": {}, "status": {"phase": "Active"}}),
            pre: Precondition::Absent,
        };
        // Only the tenant was committed (its partition's step never happened).
        s.commit(vec![
            tenant("old", "2026-01-01T00:00:00Z"),
            tenant("new", &chrono::Utc::now().to_rfc3339()),
        ])
        .await
        .expect("commit");
        while reconcile(&ws).await {}
        for ns in apiserver::bootstrap::SYSTEM_NAMESPACES {
            assert!(
                s.get(&Key::new("namespaces", "old", "", ns)).is_some(),
                "{ns}"
            );
            assert!(
                s.get(&Key::new("serviceaccounts", "old", ns, "default"))
                    .is_some(),
                "{ns}'s ServiceAccount"
            );
            // A tenant just created may still be getting them: left alone.
            assert!(
                s.get(&Key::new("namespaces", "new", "", ns)).is_none(),
                "{ns}"
            );
        }
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn background_deletes_orphaned_dependents() {
        let (s, ws) = setup(&[], true).await;
        while reconcile(&ws).await {}
        assert!(s.get(&Key::new("configmaps", "", "ns", "dep")).is_none());
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn orphan_keeps_dependents_without_the_reference() {
        let (s, ws) = setup(&["orphan"], false).await;
        while reconcile(&ws).await {}
        assert!(
            s.get(&Key::new("configmaps", "", "ns", "owner")).is_none(),
            "owner finalized and gone"
        );
        let dep = s
            .get(&Key::new("configmaps", "", "ns", "dep"))
            .expect("dependent kept");
        assert_eq!(
            dep.pointer("/metadata/ownerReferences")
                .and_then(Value::as_array)
                .map(Vec::len),
            Some(0)
        );
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn foreground_removes_dependents_before_the_owner() {
        let (s, ws) = setup(&["foregroundDeletion"], false).await;
        // First pass deletes the dependent; the owner stays until a later pass sees none left.
        reconcile(&ws).await;
        assert!(s.get(&Key::new("configmaps", "", "ns", "dep")).is_none());
        while reconcile(&ws).await {}
        assert!(s.get(&Key::new("configmaps", "", "ns", "owner")).is_none());
    }

    /// Namespace termination deletes through the API's rules: a pod on a node is given its
    /// grace period for the agent to stop it, a pod on a node that does not exist goes at once,
    /// and the namespace goes only once nothing is left in it.
    #[tokio::test(flavor = "multi_thread")]
    async fn namespace_termination_deletes_as_the_api_does() {
        let s = Store::memory(100).await.expect("store");
        let ws = Writers::new(&Api::new(s.clone(), apiserver::api::ApiConfig::default()));
        let pod = |name: &str, node: &str| {
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "ns", "uid": name},
                "spec": {"nodeName": node, "containers": [{"name": "c", "image": "busybox"}]}})
        };
        let ns = json!({"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": "ns", "uid": "n", "deletionTimestamp": "2026-01-01T00:00:00Z"},
            "status": {"phase": "Terminating"}});
        let (on_node, orphan) = (
            Key::new("pods", "", "ns", "a"),
            Key::new("pods", "", "ns", "b"),
        );
        s.commit(vec![
            Op::Put {
                key: Key::new("namespaces", "", "", "ns"),
                value: ns,
                pre: Precondition::Absent,
            },
            Op::Put {
                key: Key::new("nodes", "", "", "n1"),
                value: json!({"metadata": {"name": "n1"}}),
                pre: Precondition::Absent,
            },
            Op::Put {
                key: on_node.clone(),
                value: pod("a", "n1"),
                pre: Precondition::Absent,
            },
            Op::Put {
                key: orphan.clone(),
                value: pod("b", "gone"),
                pre: Precondition::Absent,
            },
        ])
        .await
        .expect("commit");
        while reconcile(&ws).await {}
        let a = s
            .get(&on_node)
            .expect("the pod on a node waits for its agent");
        assert!(a.pointer("/metadata/deletionTimestamp").is_some());
        assert_eq!(
            a.pointer("/metadata/deletionGracePeriodSeconds"),
            Some(&json!(30))
        );
        assert!(
            s.get(&orphan).is_none(),
            "a pod on a missing node goes at once"
        );
        assert!(s.get(&Key::new("namespaces", "", "", "ns")).is_some());
        // The agent finishes; then the namespace goes.
        s.delete(on_node, Precondition::Exists)
            .await
            .expect("agent");
        while reconcile(&ws).await {}
        assert!(s.get(&Key::new("namespaces", "", "", "ns")).is_none());
    }

    #[tokio::test]
    async fn old_events_expire() {
        let store = Store::memory(100).await.unwrap();
        let ev = |name: &str, last: &str| json!({"metadata": {"name": name, "namespace": "default"}, "lastTimestamp": last, "reason": "x"});
        store
            .put(
                Key::new("events", "", "default", "old"),
                ev("old", "2026-01-01T00:00:00Z"),
                Precondition::Absent,
            )
            .await
            .unwrap();
        store
            .put(
                Key::new("events", "t1", "default", "new"),
                ev("new", "2026-01-01T01:30:00Z"),
                Precondition::Absent,
            )
            .await
            .unwrap();
        let now = chrono::DateTime::parse_from_rfc3339("2026-01-01T02:00:00Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        let keys = expired_events(&store, EVENT_TTL, now);
        assert_eq!(keys, vec![Key::new("events", "", "default", "old")]);
    }
}
