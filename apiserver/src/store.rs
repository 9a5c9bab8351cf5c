//! Storage: a durable [`Backend`] (sled by default) under an in-memory index that serves reads,
//! lists and watches, and a single writer thread that group-commits.
//!
//! Invariants:
//! - one `resourceVersion` counter per store, strictly increasing, persisted atomically with the
//!   writes it numbers;
//! - a write is visible to readers and watchers only after the backend has made it durable;
//! - every write is a compare-and-swap on the version the caller read ([`Precondition`]);
//! - watchers see events in version order with no gap and no duplicate; a watch from a version
//!   older than the window gets [`StoreError::Gone`].

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, RwLock};

use serde_json::Value;
use tokio::sync::{broadcast, oneshot};

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
    /// The version this change was committed at.
    pub rv: u64,
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

    fn key(&self) -> &Key {
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
    /// The writer is gone (shutting down).
    #[error("store is shutting down")]
    Closed,
}

/// Backend failures.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// sled reported an error.
    #[error("sled")]
    Sled(#[from] sled::Error),
    /// Stored bytes could not be decoded.
    #[error("corrupt record: {0}")]
    Corrupt(String),
    /// A file operation failed.
    #[error("{0}")]
    Io(std::path::PathBuf, #[source] std::io::Error),
}

/// A durable backend. Reads are served from memory, so a backend only loads everything at start
/// and persists committed batches. `commit` must be atomic and durable before it returns.
pub trait Backend: Send + 'static {
    /// Everything stored, with the last committed version.
    fn load(&mut self) -> Result<(u64, Vec<(Key, Value)>), BackendError>;
    /// Persist a batch: `Some` puts, `None` deletes, and the new last version — atomically and
    /// durably (fsync) before returning.
    fn commit(&mut self, writes: &[(Key, Option<Arc<Value>>)], rv: u64)
        -> Result<(), BackendError>;
}

/// The sled backend: one tree, key = [`Key::encode`], value = the object's JSON; the version
/// counter lives under a reserved key in the same tree so it commits in the same batch.
///
/// Durability: sled's `flush` ends in `sync_file_range`, which persists neither the file-size
/// metadata of appended log segments nor the device's write cache (Linux documents it as unfit
/// for data integrity). So after every flush we `fdatasync` the log file ourselves; one per
/// group commit.
pub struct SledBackend {
    db: sled::Db,
    tree: sled::Tree,
    log: std::fs::File,
    dir: std::path::PathBuf,
}

const RV_KEY: &[u8] = b"\xff\xffrv";

impl SledBackend {
    /// Open (or create) the store under `dir`.
    pub fn open(dir: &std::path::Path) -> Result<Self, BackendError> {
        let db = sled::Config::new()
            .path(dir)
            .mode(sled::Mode::HighThroughput)
            .open()?;
        let tree = db.open_tree("objects")?;
        let log =
            std::fs::File::open(dir.join("db")).map_err(|e| BackendError::Io(dir.join("db"), e))?;
        // The directory entries of a fresh store must be durable too.
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(SledBackend {
            db,
            tree,
            log,
            dir: dir.to_path_buf(),
        })
    }
}

impl Backend for SledBackend {
    fn load(&mut self) -> Result<(u64, Vec<(Key, Value)>), BackendError> {
        let mut rv = 0;
        let mut out = Vec::new();
        for item in self.tree.iter() {
            let (k, v) = item?;
            if &*k == RV_KEY {
                let b: [u8; 8] = v
                    .as_ref()
                    .try_into()
                    .map_err(|_| BackendError::Corrupt("version counter".into()))?;
                rv = u64::from_be_bytes(b);
                continue;
            }
            let key = Key::decode(&k).ok_or_else(|| BackendError::Corrupt("key".into()))?;
            let value: Value = serde_json::from_slice(&v)
                .map_err(|e| BackendError::Corrupt(format!("{key:?}: {e}")))?;
            out.push((key, value));
        }
        Ok((rv, out))
    }

    fn commit(
        &mut self,
        writes: &[(Key, Option<Arc<Value>>)],
        rv: u64,
    ) -> Result<(), BackendError> {
        let mut batch = sled::Batch::default();
        for (key, value) in writes {
            match value {
                Some(v) => batch.insert(
                    key.encode(),
                    serde_json::to_vec(&**v).map_err(|e| BackendError::Corrupt(e.to_string()))?,
                ),
                None => batch.remove(key.encode()),
            }
        }
        batch.insert(RV_KEY, &rv.to_be_bytes());
        self.tree.apply_batch(batch)?;
        self.db.flush()?;
        self.log
            .sync_data()
            .map_err(|e| BackendError::Io(self.dir.join("db"), e))?;
        Ok(())
    }
}

/// An in-memory backend for unit tests (not durable).
#[derive(Default)]
pub struct MemBackend;

impl Backend for MemBackend {
    fn load(&mut self) -> Result<(u64, Vec<(Key, Value)>), BackendError> {
        Ok((0, Vec::new()))
    }
    fn commit(&mut self, _: &[(Key, Option<Arc<Value>>)], _: u64) -> Result<(), BackendError> {
        Ok(())
    }
}

struct State {
    objects: BTreeMap<Key, Arc<Value>>,
    rv: u64,
    /// Events with versions in `(window_start, rv]`.
    window: VecDeque<Arc<Event>>,
    window_start: u64,
}

type Reply = oneshot::Sender<Result<Vec<Arc<Event>>, StoreError>>;

/// The store: memory index + watch window + group-committing writer.
#[derive(Clone)]
pub struct Store {
    state: Arc<RwLock<State>>,
    tx: tokio::sync::mpsc::Sender<(Vec<Op>, Reply)>,
    events: broadcast::Sender<Arc<Event>>,
}

/// Objects of a list, in key order.
pub type Listing = Vec<(Key, Arc<Value>)>;

/// A watch: the events to replay first, then the live stream.
pub struct Watch {
    /// Events after the requested version already in the window.
    pub replay: Vec<Arc<Event>>,
    /// Live events (filter by scope on receipt).
    pub live: broadcast::Receiver<Arc<Event>>,
}

/// Largest number of transactions committed in one group.
const MAX_GROUP: usize = 512;

impl Store {
    /// Load the backend and start the writer. `window` is how many recent events a watch can
    /// replay.
    pub fn open(mut backend: Box<dyn Backend>, window: usize) -> Result<Self, StoreError> {
        let (rv, objects) = backend.load().map_err(StoreError::Backend)?;
        let objects = objects.into_iter().map(|(k, v)| (k, Arc::new(v))).collect();
        let state = Arc::new(RwLock::new(State {
            objects,
            rv,
            window: VecDeque::new(),
            window_start: rv,
        }));
        let (tx, rx) = tokio::sync::mpsc::channel::<(Vec<Op>, Reply)>(4096);
        let (events, _) = broadcast::channel(16384);
        let writer_state = state.clone();
        let writer_events = events.clone();
        std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || writer(backend, rx, writer_state, writer_events, window.max(1)))
            .map_err(|_| StoreError::Closed)?;
        Ok(Store { state, tx, events })
    }

    /// A store on the sled backend in `dir`.
    pub fn open_sled(dir: &std::path::Path, window: usize) -> Result<Self, StoreError> {
        Self::open(
            Box::new(SledBackend::open(dir).map_err(StoreError::Backend)?),
            window,
        )
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    /// The current object, if any.
    pub fn get(&self, key: &Key) -> Option<Arc<Value>> {
        self.read().objects.get(key).cloned()
    }

    /// The last committed version.
    pub fn current_rv(&self) -> u64 {
        self.read().rv
    }

    /// All objects in `scope`, in key order, starting after `after` (for pagination), with the
    /// version the list is consistent with.
    pub fn list(&self, scope: &Scope, after: Option<&Key>) -> (u64, Vec<(Key, Arc<Value>)>) {
        let st = self.read();
        (st.rv, list_locked(&st, scope, after))
    }

    /// Every object of `resource` in `tenant` (`None`: every tenant), in key order.
    pub fn list_of(&self, resource: &str, tenant: Option<&str>) -> Listing {
        self.list(&Scope::of(resource, tenant), None).1
    }

    /// Watch everything after version `from`. Filter the events by scope on the caller's side.
    pub fn watch(&self, from: u64) -> Result<Watch, StoreError> {
        let st = self.read();
        if from < st.window_start {
            return Err(StoreError::Gone {
                requested: from,
                oldest: st.window_start,
            });
        }
        // The window is in version order: find the first newer event by bisection.
        let first = st.window.partition_point(|e| e.rv <= from);
        let replay = st.window.range(first..).cloned().collect();
        // Subscribing under the read lock: the writer publishes under the write lock, so no
        // event can fall between the replay and the live stream.
        let live = self.events.subscribe();
        Ok(Watch { replay, live })
    }

    /// List `scope` and subscribe to later changes under one lock: the live stream starts
    /// exactly after the listed version.
    pub fn list_and_watch(&self, scope: &Scope) -> (u64, Listing, broadcast::Receiver<Arc<Event>>) {
        let st = self.read();
        let live = self.events.subscribe();
        let items = list_locked(&st, scope, None);
        (st.rv, items, live)
    }

    /// Several scopes listed and a subscription to later changes, all under one lock: the
    /// stream starts exactly after the returned version (an informer's list-then-watch).
    pub fn lists_and_watch(
        &self,
        scopes: &[Scope],
    ) -> (u64, Vec<Listing>, broadcast::Receiver<Arc<Event>>) {
        let st = self.read();
        let live = self.events.subscribe();
        let lists = scopes.iter().map(|s| list_locked(&st, s, None)).collect();
        (st.rv, lists, live)
    }

    /// Every object (all resources, all spaces) and a subscription to later changes, taken
    /// under one lock: the stream starts exactly after the returned version.
    pub fn snapshot_and_watch(&self) -> (u64, Listing, broadcast::Receiver<Arc<Event>>) {
        let st = self.read();
        let live = self.events.subscribe();
        let items = st
            .objects
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        (st.rv, items, live)
    }

    /// Commit a transaction: all ops apply or none. Returns the committed events in order.
    pub async fn commit(&self, ops: Vec<Op>) -> Result<Vec<Arc<Event>>, StoreError> {
        let (reply, rx) = oneshot::channel();
        // The channel is bounded: a full queue makes writers wait rather than grow memory.
        self.tx
            .send((ops, reply))
            .await
            .map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// Put one object.
    pub async fn put(
        &self,
        key: Key,
        value: Value,
        pre: Precondition,
    ) -> Result<Arc<Event>, StoreError> {
        let mut ev = self.commit(vec![Op::Put { key, value, pre }]).await?;
        ev.pop().ok_or(StoreError::Closed)
    }

    /// Delete one object.
    pub async fn delete(&self, key: Key, pre: Precondition) -> Result<Arc<Event>, StoreError> {
        let mut ev = self.commit(vec![Op::Delete { key, pre }]).await?;
        ev.pop().ok_or(StoreError::Closed)
    }
}

fn list_locked(st: &State, scope: &Scope, after: Option<&Key>) -> Vec<(Key, Arc<Value>)> {
    let start = Key::new(
        &scope.resource,
        scope.tenant.as_deref().unwrap_or(""),
        scope.namespace.as_deref().unwrap_or(""),
        "",
    );
    let start = match after {
        Some(a) if *a >= start => a.clone(),
        _ => start,
    };
    let mut out = Vec::new();
    for (k, v) in st.objects.range(start..) {
        if k.resource != scope.resource {
            break;
        }
        if let Some(t) = &scope.tenant {
            if k.tenant > *t {
                break;
            }
        }
        if Some(k) == after {
            continue;
        }
        if scope.contains(k) {
            out.push((k.clone(), v.clone()));
        }
    }
    out
}

fn check(pre: Precondition, current: Option<&Arc<Value>>, key: &Key) -> Result<(), StoreError> {
    match (pre, current) {
        (Precondition::Any, _) => Ok(()),
        (Precondition::Absent, None) => Ok(()),
        (Precondition::Absent, Some(_)) => Err(StoreError::AlreadyExists(key.clone())),
        (_, None) => Err(StoreError::NotFound(key.clone())),
        (Precondition::Exists, Some(_)) => Ok(()),
        (Precondition::Version(v), Some(cur)) => {
            if object_rv(cur) == Some(v) {
                Ok(())
            } else {
                Err(StoreError::Conflict(key.clone()))
            }
        }
    }
}

/// The `metadata.resourceVersion` of a stored object.
pub fn object_rv(v: &Value) -> Option<u64> {
    v.pointer("/metadata/resourceVersion")?
        .as_str()?
        .parse()
        .ok()
}

fn set_rv(v: &mut Value, rv: u64) {
    if let Some(meta) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.insert("resourceVersion".into(), Value::String(rv.to_string()));
    }
}

fn writer(
    mut backend: Box<dyn Backend>,
    mut rx: tokio::sync::mpsc::Receiver<(Vec<Op>, Reply)>,
    state: Arc<RwLock<State>>,
    events: broadcast::Sender<Arc<Event>>,
    window: usize,
) {
    while let Some(first) = rx.blocking_recv() {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(t) => group.push(t),
                Err(_) => break,
            }
        }
        // Stage every transaction against the committed state plus what earlier transactions
        // of this group staged.
        let mut rv = state.read().unwrap_or_else(|p| p.into_inner()).rv;
        let mut staged: HashMap<Key, Option<Arc<Value>>> = HashMap::new();
        let mut writes: Vec<(Key, Option<Arc<Value>>)> = Vec::new();
        let mut results: Vec<(Reply, Result<Vec<Event>, StoreError>)> = Vec::new();
        {
            let st = state.read().unwrap_or_else(|p| p.into_inner());
            for (ops, reply) in group {
                let base_rv = rv;
                let mut local: HashMap<Key, Option<Arc<Value>>> = HashMap::new();
                let mut evs = Vec::new();
                let mut failed = None;
                for op in ops {
                    let key = op.key().clone();
                    let current = match local.get(&key).or_else(|| staged.get(&key)) {
                        Some(v) => v.clone(),
                        None => st.objects.get(&key).cloned(),
                    };
                    let (pre, new) = match op {
                        Op::Put { value, pre, .. } => (pre, Some(value)),
                        Op::Delete { pre, .. } => (pre, None),
                    };
                    if let Err(e) = check(pre, current.as_ref(), &key) {
                        failed = Some(e);
                        break;
                    }
                    rv += 1;
                    let (kind, object, stored) = match new {
                        Some(mut value) => {
                            set_rv(&mut value, rv);
                            let value = Arc::new(value);
                            let kind = if current.is_some() {
                                EventType::Modified
                            } else {
                                EventType::Added
                            };
                            (kind, value.clone(), Some(value))
                        }
                        None => {
                            let mut last = current.as_deref().cloned().unwrap_or(Value::Null);
                            set_rv(&mut last, rv);
                            (EventType::Deleted, Arc::new(last), None)
                        }
                    };
                    local.insert(key.clone(), stored);
                    evs.push(Event {
                        rv,
                        kind,
                        key,
                        object,
                        prev: current,
                    });
                }
                match failed {
                    Some(e) => {
                        rv = base_rv;
                        results.push((reply, Err(e)));
                    }
                    None => {
                        for ev in &evs {
                            let stored = local.get(&ev.key).cloned().flatten();
                            staged.insert(ev.key.clone(), stored.clone());
                            writes.push((ev.key.clone(), stored));
                        }
                        results.push((reply, Ok(evs)));
                    }
                }
            }
        }
        // A failed transaction rolled `rv` back, so committed versions stay dense.
        let next = rv;
        if writes.is_empty() {
            for (reply, res) in results {
                let _ = reply.send(res.map(|_| Vec::new()));
            }
            continue;
        }
        if let Err(e) = backend.commit(&writes, next) {
            tracing::error!(error = %e, "store commit failed");
            for (reply, _) in results {
                let _ = reply.send(Err(StoreError::Backend(BackendError::Corrupt(
                    "commit failed".into(),
                ))));
            }
            continue;
        }
        let mut st = state.write().unwrap_or_else(|p| p.into_inner());
        for (reply, res) in results {
            let res = res.map(|evs| {
                evs.into_iter()
                    .map(|e| {
                        match e.kind {
                            EventType::Deleted => st.objects.remove(&e.key),
                            _ => st.objects.insert(e.key.clone(), e.object.clone()),
                        };
                        let e = Arc::new(e);
                        st.window.push_back(e.clone());
                        while st.window.len() > window {
                            if let Some(old) = st.window.pop_front() {
                                st.window_start = old.rv;
                            }
                        }
                        let _ = events.send(e.clone());
                        e
                    })
                    .collect()
            });
            let _ = reply.send(res);
        }
        st.rv = next;
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
        let s = Store::open(Box::new(MemBackend), 100).unwrap();
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
        let s = Store::open(Box::new(MemBackend), 100).unwrap();
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
    async fn watch_replays_window_and_expires() {
        let s = Store::open(Box::new(MemBackend), 3).unwrap();
        for i in 0..5 {
            s.put(
                Key::new("cm", "", "ns", &format!("c{i}")),
                obj("c"),
                Precondition::Absent,
            )
            .await
            .unwrap();
        }
        let w = s.watch(3).unwrap();
        assert_eq!(
            w.replay.iter().map(|e| e.rv).collect::<Vec<_>>(),
            vec![4, 5]
        );
        assert!(matches!(s.watch(1), Err(StoreError::Gone { .. })));
        let mut live = s.watch(5).unwrap().live;
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
            let s = Store::open_sled(dir.path(), 10).unwrap();
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
            match Store::open_sled(dir.path(), 10) {
                Ok(s) => break s,
                Err(_) if std::time::Instant::now() < deadline => std::thread::yield_now(),
                Err(e) => panic!("reopen: {e}"),
            }
        };
        assert_eq!(s.current_rv(), 3);
        assert!(s.get(&Key::new("pods", "t", "ns", "a")).is_none());
        assert_eq!(
            object_rv(&s.get(&Key::new("pods", "t", "ns", "b")).unwrap()),
            Some(3)
        );
    }

    #[test]
    fn scope_list_is_tenant_and_namespace_bounded() {
        let rt = tokio::runtime::Builder::new_multi_thread().build().unwrap();
        rt.block_on(async {
            let s = Store::open(Box::new(MemBackend), 10).unwrap();
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
        });
    }
}
