//! Storage: a revision-based [`Storage`] (etcd-shaped: reads at a revision, transactions that
//! compare modification revisions, watches from a revision, compaction) and the watch cache
//! over it ([`Store`]) that serves reads, lists and watches from memory.
//!
//! This crate knows keys, revisions and JSON values, nothing of kinds, tenants' rules, defaults
//! or validation: those are the API's. Modules: the key layout and the change types here,
//! [`storage`] (the contract), [`local`] (sled and memory storage with a group-committing
//! writer), `cache` (the watch cache and its window).
//!
//! Invariants:
//! - one revision counter per storage, strictly increasing, persisted atomically with the
//!   writes it numbers; an object's `resourceVersion` is its modification revision;
//! - a write is visible to readers and watchers only after the storage has made it durable;
//!   a commit returns only after the cache has applied it (read-your-writes);
//! - every write is a compare-and-swap on the revision the caller read ([`Precondition`]);
//! - watchers see events in revision order with no gap and no duplicate; a watch from a
//!   revision the window no longer holds is replayed from the storage's history, and one from
//!   before the compaction point gets [`StoreError::Gone`].

use std::sync::Arc;

use serde_json::Value;

mod cache;
#[cfg(feature = "etcd")]
pub mod etcd;
pub mod local;
mod partitions;
pub mod storage;

pub use cache::Listing;
#[cfg(feature = "etcd")]
pub use etcd::{fenced, EtcdConfig, EtcdConfigError, EtcdStorage, Fence, Term};
pub use local::{BackendError, LocalStorage};
pub use partitions::{Cursor, Position, Store, Watch, SYSTEM_PARTITION};
pub use storage::{Page, Storage};

/// The largest object a storage keeps (its JSON): etcd's default request limit, 1.5 MiB, so a
/// region behaves the same on either backend.
pub const MAX_OBJECT_BYTES: usize = 1536 * 1024;

/// The identity of an object: (resource, tenant, namespace, name). The system space is
/// tenant `""`; cluster-scoped objects have namespace `""`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Key {
    /// Plural resource name, qualified by group for non-core groups (`edgesites.edge.atoll.io`).
    pub resource: String,
    /// Tenant, `""` for the system space.
    pub tenant: String,
    /// Namespace, `""` for cluster-scoped objects.
    pub namespace: String,
    /// Object name.
    pub name: String,
}

impl Key {
    /// A key from its parts.
    pub fn new(resource: &str, tenant: &str, namespace: &str, name: &str) -> Self {
        Key {
            resource: resource.into(),
            tenant: tenant.into(),
            namespace: namespace.into(),
            name: name.into(),
        }
    }

    /// Encoded form for the backend: the four parts joined by NUL (names never contain NUL).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(
            self.resource.len() + self.tenant.len() + self.namespace.len() + self.name.len() + 3,
        );
        for (i, part) in [&self.resource, &self.tenant, &self.namespace, &self.name]
            .iter()
            .enumerate()
        {
            if i > 0 {
                out.push(0);
            }
            out.extend_from_slice(part.as_bytes());
        }
        out
    }

    /// Inverse of [`Key::encode`]; `None` for bytes that are not a key.
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        let s = std::str::from_utf8(bytes).ok()?;
        let mut parts = s.split('\0');
        let k = Key::new(parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() {
            return None;
        }
        Some(k)
    }
}

/// What a list or watch covers: a resource, optionally narrowed to a tenant and a namespace.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Scope {
    /// Plural resource (qualified as in [`Key::resource`]).
    pub resource: String,
    /// `None` spans every tenant (internal controllers only).
    pub tenant: Option<String>,
    /// `None` spans every namespace.
    pub namespace: Option<String>,
}

impl Scope {
    /// The [`Key::encode`]d prefix every key in the scope starts with, and whether keys under
    /// it still need [`Scope::contains`] (a namespace across tenants is no prefix). Every key
    /// under the prefix sorts before the prefix + `0xff` (no UTF-8 byte is 0xff).
    pub(crate) fn encoded_prefix(&self) -> (Vec<u8>, bool) {
        let mut out = self.resource.as_bytes().to_vec();
        out.push(0);
        match &self.tenant {
            Some(t) => {
                out.extend_from_slice(t.as_bytes());
                out.push(0);
                if let Some(n) = &self.namespace {
                    out.extend_from_slice(n.as_bytes());
                    out.push(0);
                }
                (out, false)
            }
            None => (out, self.namespace.is_some()),
        }
    }

    /// Every object of `resource` in `tenant` (`None`: every tenant), in every namespace.
    pub fn of(resource: &str, tenant: Option<&str>) -> Scope {
        Scope {
            resource: resource.into(),
            tenant: tenant.map(String::from),
            namespace: None,
        }
    }

    /// Whether `key` falls inside this scope.
    pub fn contains(&self, key: &Key) -> bool {
        key.resource == self.resource
            && self.tenant.as_ref().is_none_or(|t| *t == key.tenant)
            && self.namespace.as_ref().is_none_or(|n| *n == key.namespace)
    }
}

/// Kind of change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventType {
    /// Created.
    Added,
    /// Changed.
    Modified,
    /// Removed.
    Deleted,
}

impl EventType {
    /// The watch event type string.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// One committed change.
#[derive(Clone, Debug)]
pub struct Event {
    /// The version this change was committed at (a revision of its partition's storage).
    pub rv: u64,
    /// The partition it was committed in (0: the system cluster; see [`Store`]).
    pub part: u16,
    /// Added, modified or deleted.
    pub kind: EventType,
    /// Which object.
    pub key: Key,
    /// The object after the change (for deletions: the last state, with the deletion's version).
    pub object: Arc<Value>,
    /// The object before the change, if any.
    pub prev: Option<Arc<Value>>,
}

/// Condition on the current state for a write to apply.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Precondition {
    /// The object must not exist (create).
    Absent,
    /// The object must exist (unconditional update/delete).
    Exists,
    /// The object must exist at exactly this version.
    Version(u64),
    /// Whatever the current state (upsert, or delete if present).
    Any,
}

/// One write in a transaction.
#[derive(Clone, Debug)]
pub enum Op {
    /// Store `value` (its `metadata.resourceVersion` is set by the store).
    Put {
        /// Object key.
        key: Key,
        /// New value.
        value: Value,
        /// Condition.
        pre: Precondition,
    },
    /// Remove the object.
    Delete {
        /// Object key.
        key: Key,
        /// Condition.
        pre: Precondition,
    },
}

impl Op {
    /// Replace `current` (as read) with `value`: a compare-and-swap on `current`'s version.
    pub fn replace(key: Key, current: &Value, value: Value) -> Op {
        Op::Put {
            key,
            value,
            pre: Precondition::Version(object_rv(current).unwrap_or(0)),
        }
    }

    pub(crate) fn key(&self) -> &Key {
        match self {
            Op::Put { key, .. } | Op::Delete { key, .. } => key,
        }
    }
}

/// Store failures.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The object exists (create) — carries the key.
    #[error("object already exists")]
    AlreadyExists(Key),
    /// The object does not exist.
    #[error("object not found")]
    NotFound(Key),
    /// The object is at another version than the precondition named.
    #[error("object has been modified")]
    Conflict(Key),
    /// The requested version is older than the watch window.
    #[error("too old resource version: {requested} ({oldest})")]
    Gone {
        /// The version asked for.
        requested: u64,
        /// The oldest version the window can replay from.
        oldest: u64,
    },
    /// The backend failed to persist; nothing of the transaction was applied.
    #[error("storage backend failed")]
    Backend(#[source] BackendError),
    /// The storage cannot be reached now (a remote store down, no quorum, a timeout); nothing
    /// of the transaction was acknowledged. Worth retrying.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// An object is larger than the storage keeps.
    #[error("object of {size} bytes is larger than the limit of {limit} bytes")]
    TooLarge {
        /// Its size (0: not known, the storage refused the request).
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The writer is gone (shutting down).
    #[error("store is shutting down")]
    Closed,
    /// The store was configured wrongly (two partitions of one name, say).
    #[error("invalid store configuration: {0}")]
    Invalid(String),
}

/// The `metadata.resourceVersion` of a stored object.
pub fn object_rv(v: &Value) -> Option<u64> {
    v.pointer("/metadata/resourceVersion")?
        .as_str()?
        .parse()
        .ok()
}

/// Whether `pre` holds for an object at modification revision `current` (`None`: absent).
pub(crate) fn check(pre: Precondition, current: Option<u64>, key: &Key) -> Result<(), StoreError> {
    match (pre, current) {
        (Precondition::Any, _) => Ok(()),
        (Precondition::Absent, None) => Ok(()),
        (Precondition::Absent, Some(_)) => Err(StoreError::AlreadyExists(key.clone())),
        (_, None) => Err(StoreError::NotFound(key.clone())),
        (Precondition::Exists, Some(_)) => Ok(()),
        (Precondition::Version(v), Some(cur)) => {
            if cur == v {
                Ok(())
            } else {
                Err(StoreError::Conflict(key.clone()))
            }
        }
    }
}

pub(crate) fn set_rv(v: &mut Value, rv: u64) {
    if let Some(meta) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.insert("resourceVersion".into(), Value::String(rv.to_string()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(name: &str) -> Value {
        json!({"metadata": {"name": name}})
    }

    #[test]
    fn key_encoding_round_trips() {
        let k = Key::new("pods", "acme", "default", "web-1");
        assert_eq!(Key::decode(&k.encode()), Some(k));
        assert_eq!(Key::decode(b"a\0b"), None);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn cas_and_versions() {
        let s = Store::memory(100).await.unwrap();
        let k = Key::new("pods", "", "default", "a");
        let e = s
            .put(k.clone(), obj("a"), Precondition::Absent)
            .await
            .unwrap();
        assert_eq!(e.rv, 1);
        assert!(matches!(
            s.put(k.clone(), obj("a"), Precondition::Absent).await,
            Err(StoreError::AlreadyExists(_))
        ));
        assert!(matches!(
            s.put(k.clone(), obj("a"), Precondition::Version(7)).await,
            Err(StoreError::Conflict(_))
        ));
        let e = s
            .put(k.clone(), obj("a"), Precondition::Version(1))
            .await
            .unwrap();
        assert_eq!(e.rv, 2);
        assert_eq!(object_rv(&s.get(&k).unwrap()), Some(2));
        let e = s.delete(k.clone(), Precondition::Exists).await.unwrap();
        assert_eq!((e.rv, e.kind), (3, EventType::Deleted));
        assert!(s.get(&k).is_none());
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn failed_transaction_applies_nothing() {
        let s = Store::memory(100).await.unwrap();
        let a = Key::new("pods", "", "ns", "a");
        let b = Key::new("pods", "", "ns", "b");
        s.put(b.clone(), obj("b"), Precondition::Absent)
            .await
            .unwrap();
        let r = s
            .commit(vec![
                Op::Put {
                    key: a.clone(),
                    value: obj("a"),
                    pre: Precondition::Absent,
                },
                Op::Put {
                    key: b.clone(),
                    value: obj("b"),
                    pre: Precondition::Absent,
                },
            ])
            .await;
        assert!(r.is_err());
        assert!(s.get(&a).is_none());
        assert_eq!(s.current_rv(), 1);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn watch_replays_window_then_history_then_expires() {
        let s = Store::memory(3).await.unwrap();
        for i in 0..5 {
            s.put(
                Key::new("cm", "", "ns", &format!("c{i}")),
                obj("c"),
                Precondition::Absent,
            )
            .await
            .unwrap();
        }
        let rvs = |w: &Watch| w.replay.iter().map(|e| e.rv).collect::<Vec<_>>();
        assert_eq!(
            rvs(&s.watch(&Scope::default(), &3.into()).await.unwrap()),
            vec![4, 5]
        );
        // Older than the window and the storage's history (as long as the window, compacted
        // as it grows past it): 410.
        s.compact(2).await.unwrap();
        assert!(matches!(
            s.watch(&Scope::default(), &1.into()).await,
            Err(StoreError::Gone { .. })
        ));
        assert_eq!(
            rvs(&s.watch(&Scope::default(), &3.into()).await.unwrap()),
            vec![4, 5]
        );
        let mut live = s.watch(&Scope::default(), &5.into()).await.unwrap().live;
        s.put(
            Key::new("cm", "", "ns", "x"),
            obj("x"),
            Precondition::Absent,
        )
        .await
        .unwrap();
        assert_eq!(live.recv().await.unwrap().rv, 6);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn sled_persists_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = Store::open_sled(dir.path(), 10).await.unwrap();
            s.put(
                Key::new("pods", "t", "ns", "a"),
                obj("a"),
                Precondition::Absent,
            )
            .await
            .unwrap();
            s.delete(Key::new("pods", "t", "ns", "a"), Precondition::Exists)
                .await
                .unwrap();
            s.put(
                Key::new("pods", "t", "ns", "b"),
                obj("b"),
                Precondition::Absent,
            )
            .await
            .unwrap();
        }
        // The writer thread holds the db until its channel closes; wait for the lock to go.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let s = loop {
            match Store::open_sled(dir.path(), 10).await {
                Ok(s) => break s,
                Err(_) if std::time::Instant::now() < deadline => std::thread::yield_now(),
                Err(e) => panic!("reopen: {e}"),
            }
        };
        assert_eq!(s.current_rv(), 3);
        // The window starts empty after a restart: the storage's history replays what came
        // before, each change with the state before it.
        let w = s.watch(&Scope::default(), &0.into()).await.unwrap();
        let seen: Vec<_> = w
            .replay
            .iter()
            .map(|e| (e.rv, e.kind, e.key.name.as_str(), e.prev.is_some()))
            .collect();
        assert_eq!(
            seen,
            vec![
                (1, EventType::Added, "a", false),
                (2, EventType::Deleted, "a", true),
                (3, EventType::Added, "b", false)
            ]
        );
        assert_eq!(w.replay[1].object["metadata"]["name"], "a");
        assert!(s.get(&Key::new("pods", "t", "ns", "a")).is_none());
        assert_eq!(
            object_rv(&s.get(&Key::new("pods", "t", "ns", "b")).unwrap()),
            Some(3)
        );
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn scope_list_is_tenant_and_namespace_bounded() {
        {
            let s = Store::memory(10).await.unwrap();
            for (t, ns, n) in [
                ("", "default", "a"),
                ("acme", "default", "a"),
                ("acme", "prod", "b"),
                ("zeta", "default", "c"),
            ] {
                s.put(Key::new("pods", t, ns, n), obj(n), Precondition::Absent)
                    .await
                    .unwrap();
            }
            s.put(
                Key::new("secrets", "acme", "default", "s"),
                obj("s"),
                Precondition::Absent,
            )
            .await
            .unwrap();
            let scope = Scope {
                resource: "pods".into(),
                tenant: Some("acme".into()),
                namespace: None,
            };
            let names: Vec<_> = s
                .list(&scope, None)
                .1
                .into_iter()
                .map(|(k, _)| k.name)
                .collect();
            assert_eq!(names, vec!["a", "b"]);
            let scope = Scope {
                resource: "pods".into(),
                tenant: None,
                namespace: Some("default".into()),
            };
            assert_eq!(s.list(&scope, None).1.len(), 3);
        }
    }
}
