//! Built-in controllers every Atoll API server runs: namespace and tenant lifecycle
//! (Terminating until the contents are gone), and garbage collection by ownerReferences
//! (background, foreground and orphan propagation).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use apiserver::api::owned_by;
use apiserver::auth::TOKENS;
use apiserver::resources::RESOURCES;

use crate::changes::on_changes;
use store::{Key, Precondition, Scope, Store, StoreError};

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

async fn delete_quiet(store: &Store, key: Key) {
    match store.delete(key, Precondition::Exists).await {
        Ok(_) | Err(StoreError::NotFound(_)) => {}
        Err(e) => tracing::warn!(error = %e, "controller delete failed"),
    }
}

/// One pass over everything; returns whether it changed anything.
pub async fn reconcile(store: &Store) -> bool {
    let mut changed = false;
    // Tenants being deleted: remove their whole space, their tokens, then the tenant.
    for (tkey, tenant) in store.list_of("tenants", Some("")) {
        if !terminating(&tenant) {
            continue;
        }
        let name = tkey.name.clone();
        for r in RESOURCES {
            for (k, _) in store.list_of(&r.store_name(), Some(&name)) {
                delete_quiet(store, k).await;
            }
        }
        for (k, rec) in store.list_of(TOKENS, Some("")) {
            if rec.get("tenant").and_then(Value::as_str) == Some(name.as_str()) {
                delete_quiet(store, k).await;
            }
        }
        delete_quiet(store, tkey).await;
        tracing::info!(tenant = %name, "tenant removed");
        changed = true;
    }
    // Namespaces being deleted: remove their contents, then the namespace.
    for (nkey, ns) in store.list_of("namespaces", None) {
        if !terminating(&ns) {
            continue;
        }
        for r in RESOURCES.iter().filter(|r| r.namespaced) {
            let scope = Scope {
                resource: r.store_name(),
                tenant: Some(nkey.tenant.clone()),
                namespace: Some(nkey.name.clone()),
            };
            for (k, _) in store.list(&scope, None).1 {
                delete_quiet(store, k).await;
            }
        }
        delete_quiet(store, nkey.clone()).await;
        tracing::info!(tenant = %nkey.tenant, namespace = %nkey.name, "namespace removed");
        changed = true;
    }
    changed |= collect_garbage(store).await;
    changed
}

/// Garbage collection by ownerReferences.
async fn collect_garbage(store: &Store) -> bool {
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
                let mut d = (**d).clone();
                if let Some(refs) = d
                    .pointer_mut("/metadata/ownerReferences")
                    .and_then(Value::as_array_mut)
                {
                    refs.retain(|r| r.get("uid").and_then(Value::as_str) != Some(uid));
                }
                let _ = store.put(k.clone(), d, Precondition::Exists).await;
            }
            Some("orphan")
        } else if fins.iter().any(|f| f == "foregroundDeletion") {
            for (k, d) in &dependents {
                if !terminating(d) {
                    let mut d = (**d).clone();
                    d["metadata"]["deletionTimestamp"] = json!(
                        chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                    );
                    if finalizers(&d).is_empty() {
                        delete_quiet(store, k.clone()).await;
                    } else {
                        let _ = store.put(k.clone(), d, Precondition::Exists).await;
                    }
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
            let rest = finalizers(&o);
            if rest.is_empty() && !matches!(key.resource.as_str(), "namespaces" | "tenants") {
                delete_quiet(store, key.clone()).await;
            } else {
                let _ = store.put(key.clone(), o, Precondition::Exists).await;
            }
            changed = true;
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
            delete_quiet(store, key.clone()).await;
            changed = true;
        }
    }
    changed
}

/// Run the controllers until cancelled: a pass at start, then after every deletion-related
/// change (and every few seconds as a safety net).
pub async fn run(store: Store, cancel: CancellationToken) {
    on_changes(
        &store,
        Duration::from_secs(5),
        Duration::ZERO,
        &cancel,
        |e| e.kind == store::EventType::Deleted || terminating(&e.object),
        || async { while reconcile(&store).await {} },
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

    async fn setup(owner_fins: &[&str], owner_deleted: bool) -> Store {
        let s = Store::memory(100).await.expect("store");
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
        s
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn background_deletes_orphaned_dependents() {
        let s = setup(&[], true).await;
        while reconcile(&s).await {}
        assert!(s.get(&Key::new("configmaps", "", "ns", "dep")).is_none());
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn orphan_keeps_dependents_without_the_reference() {
        let s = setup(&["orphan"], false).await;
        while reconcile(&s).await {}
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
        let s = setup(&["foregroundDeletion"], false).await;
        // First pass deletes the dependent; the owner stays until a later pass sees none left.
        reconcile(&s).await;
        assert!(s.get(&Key::new("configmaps", "", "ns", "dep")).is_none());
        while reconcile(&s).await {}
        assert!(s.get(&Key::new("configmaps", "", "ns", "owner")).is_none());
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
