//! The watch cache: the memory index that serves reads, lists and watches, fed by one watch on
//! the [`Storage`] below it, with a window of recent events for watches to replay.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, RwLock, Weak};

use serde_json::Value;
use tokio::sync::{broadcast, oneshot};

use crate::storage::{Batch, Feed, Storage};
use crate::{set_rv, Event, EventType, Key, Op, Scope, StoreError};

pub(crate) struct State {
    objects: BTreeMap<Key, Arc<Value>>,
    /// The revision the index has reached.
    rv: u64,
    /// Events with versions in `(window_start, rv]`.
    window: VecDeque<Arc<Event>>,
    window_start: u64,
}

/// One storage and the watch cache over it (one partition of a [`crate::Store`]). Reads, lists
/// and watches are served from memory; a commit returns once the cache has reached the
/// revision it committed at, so a read after a write sees it.
#[derive(Clone)]
pub(crate) struct Cache {
    /// Which partition of the store this is (stamped on its events).
    part: u16,
    state: Arc<RwLock<State>>,
    pub(crate) storage: Arc<dyn Storage>,
    events: broadcast::Sender<Arc<Event>>,
    applied: Arc<Applied>,
    window: usize,
    fence: Arc<Fence>,
    compaction: Arc<Compaction>,
}

/// When to compact: as many revisions of history as the window holds events are kept, and the
/// storage is compacted each time its history has grown a tenth past that.
struct Compaction {
    keep: u64,
    /// The last compaction point.
    done: std::sync::atomic::AtomicU64,
}

impl Compaction {
    /// The point to compact to now that the cache is at `rev`, if one is due (taken: the next
    /// call does not return it again).
    fn due(&self, rev: u64) -> Option<u64> {
        use std::sync::atomic::Ordering;
        let done = self.done.load(Ordering::Acquire);
        if rev <= done + self.keep + (self.keep / 10).max(1) {
            return None;
        }
        let target = rev - self.keep;
        self.done
            .compare_exchange(done, target, Ordering::AcqRel, Ordering::Acquire)
            .ok()
            .map(|_| target)
    }
}

/// Barriers shared by the consistent reads that wait at the same time: a caller uses the first
/// barrier started after it arrived (one that started earlier may precede a write it must see).
#[derive(Default)]
struct Fence {
    /// Callers so far (each takes a ticket on arrival).
    tickets: std::sync::atomic::AtomicU64,
    /// The last barrier: the tickets it covers (those below) and its revision.
    last: tokio::sync::Mutex<(u64, u64)>,
}

impl Fence {
    async fn pass(&self, storage: &dyn Storage) -> Result<u64, StoreError> {
        use std::sync::atomic::Ordering;
        let ticket = self.tickets.fetch_add(1, Ordering::AcqRel);
        let mut last = self.last.lock().await;
        if ticket < last.0 {
            return Ok(last.1);
        }
        let covers = self.tickets.load(Ordering::Acquire);
        let rev = storage.barrier().await?;
        *last = (covers, rev);
        Ok(rev)
    }
}

/// The revision the cache has applied, and the committers waiting for a later one: each is
/// woken once, when its revision is reached (not at every step on the way).
#[derive(Default)]
struct Applied(std::sync::Mutex<AppliedState>);

#[derive(Default)]
struct AppliedState {
    rev: u64,
    closed: bool,
    waiters: BTreeMap<u64, Vec<oneshot::Sender<()>>>,
}

impl Applied {
    fn lock(&self) -> std::sync::MutexGuard<'_, AppliedState> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn rev(&self) -> u64 {
        self.lock().rev
    }

    /// The cache has reached `rev`: wake who waited for it or less.
    fn advance(&self, rev: u64) {
        let ready = {
            let mut a = self.lock();
            if rev <= a.rev {
                return;
            }
            a.rev = rev;
            let later = a.waiters.split_off(&(rev + 1));
            std::mem::replace(&mut a.waiters, later)
        };
        for tx in ready.into_values().flatten() {
            let _ = tx.send(());
        }
    }

    /// No more progress (the applier ended): waiters get [`StoreError::Closed`].
    fn close(&self) {
        let mut a = self.lock();
        a.closed = true;
        a.waiters.clear();
    }

    async fn wait(&self, rev: u64) -> Result<(), StoreError> {
        let rx = {
            let mut a = self.lock();
            if a.rev >= rev {
                return Ok(());
            }
            if a.closed {
                return Err(StoreError::Closed);
            }
            let (tx, rx) = oneshot::channel();
            a.waiters.entry(rev).or_default().push(tx);
            rx
        };
        rx.await.map_err(|_| StoreError::Closed)
    }
}

/// Objects of a list, in key order.
pub type Listing = Vec<(Key, Arc<Value>)>;

/// How long a consistent read waits for the cache to catch up with the storage.
const SYNC_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// Objects read per page when the cache loads.
const LOAD_PAGE: usize = 10_000;
/// The most events a watch replays from the storage's history (older: 410, relist).
const MAX_HISTORY_REPLAY: u64 = 100_000;

impl Cache {
    /// Load the cache from `storage` and follow it, publishing its changes (stamped with
    /// `part`) on `events`. `window` is how many recent events a watch replays from memory;
    /// the storage keeps as many revisions of history (compacted each time it grows a tenth
    /// past that), so a watch resumes after a restart too.
    pub(crate) async fn open(
        storage: Arc<dyn Storage>,
        window: usize,
        part: u16,
        events: broadcast::Sender<Arc<Event>>,
    ) -> Result<Self, StoreError> {
        let rev = storage.current_revision().await?;
        let mut objects = BTreeMap::new();
        let mut after: Option<Key> = None;
        loop {
            let page = storage.list(None, after.as_ref(), LOAD_PAGE, rev).await?;
            after = page.items.last().map(|(k, _)| k.clone());
            objects.extend(page.items);
            if !page.more {
                break;
            }
        }
        let feed = storage.watch(rev).await?;
        let state = Arc::new(RwLock::new(State {
            objects,
            rv: rev,
            window: VecDeque::new(),
            window_start: rev,
        }));
        let applied = Arc::new(Applied::default());
        let compaction = Arc::new(Compaction {
            keep: window.max(1) as u64,
            done: std::sync::atomic::AtomicU64::new(0),
        });
        applied.advance(rev);
        let applier = Applier {
            part,
            state: state.clone(),
            storage: Arc::downgrade(&storage),
            events: events.clone(),
            applied: applied.clone(),
            window: window.max(1),
            // A shared storage is compacted by one of its writers ([`Store::compact_behind`]
            // under leadership), not by every cache over it.
            compaction: (!storage.shared()).then(|| compaction.clone()),
        };
        // A task, not a thread: committers usually apply their own changes, and a task's wake
        // costs no context switch.
        tokio::spawn(applier.run(feed));
        Ok(Cache {
            part,
            state,
            storage,
            events,
            applied,
            window: window.max(1),
            fence: Arc::default(),
            compaction,
        })
    }

    pub(crate) fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    /// The current object, if any.
    pub(crate) fn get(&self, key: &Key) -> Option<Arc<Value>> {
        self.read().objects.get(key).cloned()
    }

    /// Objects held.
    pub(crate) fn len(&self) -> usize {
        self.read().objects.len()
    }

    /// The revision the cache has reached.
    pub(crate) fn current_rv(&self) -> u64 {
        self.read().rv
    }

    /// Where the window starts: a watch from an earlier revision replays from the storage.
    pub(crate) fn window_start(&self) -> u64 {
        self.read().window_start
    }

    /// The changes in `(from, to]` from the storage's history, stamped with this partition;
    /// [`StoreError::Gone`] when that is more than a watch may replay.
    pub(crate) async fn history(&self, from: u64, to: u64) -> Result<Vec<Arc<Event>>, StoreError> {
        if to.saturating_sub(from) > MAX_HISTORY_REPLAY {
            return Err(StoreError::Gone {
                requested: from,
                oldest: to,
            });
        }
        let evs = self.storage.history(from, to).await?;
        Ok(self.stamp(evs))
    }

    /// Events of this partition stamped with it (the storage does not know its partition).
    fn stamp(&self, evs: Vec<Arc<Event>>) -> Vec<Arc<Event>> {
        if self.part == 0 {
            return evs;
        }
        evs.into_iter()
            .map(|e| {
                let mut e = Arc::unwrap_or_clone(e);
                e.part = self.part;
                Arc::new(e)
            })
            .collect()
    }

    /// Commit a transaction: all ops apply or none. Returns the committed events in order
    /// (without `prev`), once the cache has them.
    pub(crate) async fn commit(&self, ops: Vec<Op>) -> Result<Vec<Arc<Event>>, StoreError> {
        let evs = self.storage.txn(ops).await?;
        if let (Some(first), Some(last)) = (evs.first(), evs.last()) {
            // When this transaction comes right after what the cache holds, apply it here
            // rather than wait for the feed to bring it (the feed then skips it).
            // Only the committer that is next takes the write lock (readers wait on it).
            if self.applied.rev() + 1 == first.rv {
                let mut st = self.state.write().unwrap_or_else(|p| p.into_inner());
                if st.rv + 1 == first.rv {
                    apply_locked(&mut st, &evs, self.window, &self.events, self.part);
                    let rev = st.rv;
                    drop(st);
                    self.applied.advance(rev);
                }
            }
            self.applied.wait(last.rv).await?;
        }
        Ok(self.stamp(evs))
    }

    /// Wait until the cache holds every change the storage had committed when this was called
    /// (a consistent read, as kube-apiserver's from its watch cache). Immediate on a storage
    /// only this process writes; on a shared one (etcd) a barrier (shared by the callers that
    /// arrive while one is in flight), then the feed reaching it.
    pub(crate) async fn sync(&self) -> Result<(), StoreError> {
        if !self.storage.shared() {
            return Ok(());
        }
        let rev = self.fence.pass(&*self.storage).await?;
        match tokio::time::timeout(SYNC_TIMEOUT, self.applied.wait(rev)).await {
            Ok(r) => r,
            Err(_) => Err(StoreError::Unavailable(format!(
                "the watch cache did not reach revision {rev} in {SYNC_TIMEOUT:?}"
            ))),
        }
    }

    /// Compact the storage behind the window if it is due (as a cache over local storage
    /// does by itself: history a tenth past the window's worth of revisions); for the one
    /// writer of a shared storage that compacts it. The compaction point, if there was one.
    pub(crate) async fn compact_behind(&self) -> Result<Option<u64>, StoreError> {
        match self.compaction.due(self.current_rv()) {
            Some(target) => {
                self.storage.compact(target).await?;
                Ok(Some(target))
            }
            None => Ok(None),
        }
    }
}

/// The events of `st`'s window after `from`, if the window reaches back that far.
pub(crate) fn window_after(st: &State, from: u64) -> Option<Vec<Arc<Event>>> {
    if from < st.window_start {
        return None;
    }
    // The window is in version order: find the first newer event by bisection.
    let first = st.window.partition_point(|e| e.rv <= from);
    Some(st.window.range(first..).cloned().collect())
}

/// Every object of `st` (all resources, all spaces).
pub(crate) fn all_locked(st: &State) -> Listing {
    st.objects
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// The revision `st` has reached.
pub(crate) fn rv_locked(st: &State) -> u64 {
    st.rv
}

/// The task that applies the storage's feed to the cache.
struct Applier {
    part: u16,
    state: Arc<RwLock<State>>,
    storage: Weak<dyn Storage>,
    events: broadcast::Sender<Arc<Event>>,
    applied: Arc<Applied>,
    window: usize,
    /// When to compact (`None`: not this cache's job).
    compaction: Option<Arc<Compaction>>,
}

impl Applier {
    async fn run(self, feed: Feed) {
        // However the task ends (the storage closed, the runtime shut down), waiters are told.
        struct CloseOnDrop(Arc<Applied>);
        impl Drop for CloseOnDrop {
            fn drop(&mut self) {
                self.0.close();
            }
        }
        let _guard = CloseOnDrop(self.applied.clone());
        self.follow(feed).await;
    }

    async fn follow(mut self, mut feed: Feed) {
        loop {
            match feed.recv().await {
                Some(batch) => self.apply(batch),
                None => {
                    // The storage closed, or its feed broke: follow it again from where the
                    // cache is, unless the store is gone.
                    let Some(storage) = self.storage.upgrade() else {
                        return;
                    };
                    let from = self.state.read().unwrap_or_else(|p| p.into_inner()).rv;
                    match storage.watch(from).await {
                        Ok(f) => feed = f,
                        Err(StoreError::Closed) => return,
                        Err(e) => {
                            drop(storage);
                            tracing::error!(error = %e, from, "store feed lost");
                            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                        }
                    }
                }
            }
        }
    }

    fn apply(&mut self, batch: Batch) {
        // Usually the committers applied it already.
        let rev = if batch.revision <= self.applied.rev() {
            self.applied.rev()
        } else {
            let mut st = self.state.write().unwrap_or_else(|p| p.into_inner());
            apply_locked(&mut st, &batch.events, self.window, &self.events, self.part);
            // Progress: revisions up to here changed nothing this cache holds.
            st.rv = st.rv.max(batch.revision);
            st.rv
        };
        self.applied.advance(rev);
        if let Some(target) = self.compaction.as_ref().and_then(|c| c.due(rev)) {
            if let Some(storage) = self.storage.upgrade() {
                tokio::spawn(async move {
                    if let Err(e) = storage.compact(target).await {
                        tracing::warn!(error = %e, target, "store compaction failed");
                    }
                });
            }
        }
    }
}

/// Apply committed changes the cache has not yet seen (a revision is always applied whole, by
/// the feed or by its committer, so skipping what is at or before the cache's revision loses
/// nothing): the index, the window, the broadcast.
fn apply_locked(
    st: &mut State,
    batch: &[Arc<Event>],
    window: usize,
    events: &broadcast::Sender<Arc<Event>>,
    part: u16,
) {
    // Several changes may share a revision (one etcd transaction): skip by the revision the
    // cache had before this batch, not by the one the batch has reached so far.
    let base = st.rv;
    for e in batch {
        if e.rv <= base {
            continue;
        }
        let prev = st.objects.get(&e.key).cloned();
        let ev = match e.kind {
            EventType::Deleted => {
                let object = match (&prev, e.object.is_null()) {
                    (Some(p), true) => {
                        let mut last = (**p).clone();
                        set_rv(&mut last, e.rv);
                        Arc::new(last)
                    }
                    _ => e.object.clone(),
                };
                st.objects.remove(&e.key);
                Event {
                    rv: e.rv,
                    part,
                    kind: EventType::Deleted,
                    key: e.key.clone(),
                    object,
                    prev,
                }
            }
            _ => {
                st.objects.insert(e.key.clone(), e.object.clone());
                Event {
                    rv: e.rv,
                    part,
                    kind: if prev.is_some() {
                        EventType::Modified
                    } else {
                        EventType::Added
                    },
                    key: e.key.clone(),
                    object: e.object.clone(),
                    prev,
                }
            }
        };
        let ev = Arc::new(ev);
        st.window.push_back(ev.clone());
        while st.window.len() > window {
            if let Some(old) = st.window.pop_front() {
                st.window_start = old.rv;
            }
        }
        st.rv = ev.rv;
        let _ = events.send(ev);
    }
}

pub(crate) fn list_locked(
    st: &State,
    scope: &Scope,
    after: Option<&Key>,
) -> Vec<(Key, Arc<Value>)> {
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
