//! The store proper: the memory index that serves reads, lists and watches, the watch window,
//! and the single writer thread that group-commits to the backend.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, RwLock};

use serde_json::Value;
use tokio::sync::{broadcast, oneshot};

use crate::backend::{Backend, BackendError, SledBackend};
use crate::{object_rv, set_rv, Event, EventType, Key, Op, Precondition, Scope, StoreError};

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
