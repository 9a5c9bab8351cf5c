//! The store: the watch caches of a region's storage partitions behind one interface.
//!
//! A region keeps its system space (tenants, nodes, edge sites, the region's own records) in
//! the system partition (index 0, named [`SYSTEM_PARTITION`]); each further partition (Arktos'
//! tenant partitions, each its own etcd cluster) holds the spaces of the tenants assigned to
//! it. A tenant's partition is what its Tenant object (in the system partition) names in
//! `spec.storageClusterId`; a Tenant without one lives in the system partition. Every key of
//! a tenant's space routes there, so a transaction within one tenant stays one storage
//! transaction.
//!
//! Revisions: every partition counts its own. An event carries its partition
//! ([`Event::part`]) and that partition's revision. A position in several partitions at once
//! (a list or watch across tenants) is a [`Position`]: one revision per partition, written
//! `R0.R1.R2` in partition order (a single partition's is the plain `R`, so a region with one
//! partition has exactly the integers it always had). A watch resumes from a position by
//! replaying each partition after its own revision, which is exact; a plain integer where a
//! position across several partitions is needed is answered [`StoreError::Gone`] (the client
//! relists). Partition order is the configuration's and must stay fixed (new partitions go at
//! the end; a position without them starts them from their beginning).

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, RwLockReadGuard};

use serde_json::Value;
use tokio::sync::broadcast;

use crate::cache::{all_locked, list_locked, rv_locked, window_after, Cache, Listing, State};
use crate::local::LocalStorage;
use crate::storage::Storage;
use crate::{Event, Key, Op, Precondition, Scope, StoreError};

/// The name of partition 0, the one that holds the system space.
pub const SYSTEM_PARTITION: &str = "system";

/// The resource of the Tenant objects whose `spec.storageClusterId` routes a tenant's space.
const TENANTS: &str = "tenants";

/// A position in the store: one revision per partition it spans (see the module text).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Position(Vec<u64>);

impl Position {
    /// The revisions, in partition order.
    pub fn revisions(&self) -> &[u64] {
        &self.0
    }

    /// Parse a resourceVersion: `R` or `R0.R1...`; `None` if it is neither.
    pub fn parse(s: &str) -> Option<Position> {
        let revs: Option<Vec<u64>> = s.split('.').map(|r| r.parse().ok()).collect();
        revs.filter(|r| !r.is_empty() && r.len() <= usize::from(u16::MAX))
            .map(Position)
    }

    /// The revision of the object in partition `part` that this resourceVersion names: the
    /// plain revision, or the partition's entry of a position (an object as a watch across
    /// partitions delivered it).
    pub fn revision_in(s: &str, part: u16) -> Option<u64> {
        let p = Position::parse(s)?;
        match p.0.as_slice() {
            [one] => Some(*one),
            many => many.get(usize::from(part)).copied(),
        }
    }
}

impl From<u64> for Position {
    /// One partition's revision.
    fn from(rev: u64) -> Self {
        Position(vec![rev])
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(".")?;
            }
            write!(f, "{r}")?;
        }
        Ok(())
    }
}

/// Where a consumer of one list-and-watch is: the partitions it follows and the revision it
/// has reached in each. [`Cursor::advance`] says whether an event is new to it.
#[derive(Clone, Debug)]
pub struct Cursor {
    /// Following one partition only (a tenant's space, or the system space).
    only: Option<u16>,
    revs: Vec<u64>,
}

impl Cursor {
    /// Whether `e` comes after the cursor in its partition (and is in a partition the cursor
    /// follows); if so the cursor moves past it.
    pub fn advance(&mut self, e: &Event) -> bool {
        let i = match self.only {
            Some(p) if p != e.part => return false,
            Some(_) => 0,
            None => usize::from(e.part),
        };
        if i >= self.revs.len() {
            self.revs.resize(i + 1, 0);
        }
        if e.rv <= self.revs[i] {
            return false;
        }
        self.revs[i] = e.rv;
        true
    }

    /// The position reached.
    pub fn position(&self) -> Position {
        Position(self.revs.clone())
    }

    /// Whether the cursor spans several partitions: objects delivered through it then carry
    /// the [`Cursor::position`] as their resourceVersion, so that a client resuming from the
    /// last object it saw resumes every partition.
    pub fn spans_partitions(&self) -> bool {
        self.only.is_none() && self.revs.len() > 1
    }
}

/// A watch: the events to replay first, then the live stream (every partition's: skip what
/// `cursor` does not [`Cursor::advance`] past, and filter by scope).
pub struct Watch {
    /// Events after the requested position (from the windows, or the storages' history), each
    /// partition's in revision order.
    pub replay: Vec<Arc<Event>>,
    /// Live events.
    pub live: broadcast::Receiver<Arc<Event>>,
    /// At the requested position.
    pub cursor: Cursor,
}

/// The region's store: one watch cache per partition (see the module text). Reads, lists and
/// watches are served from memory; a commit returns once the cache has it (read-your-writes).
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    parts: Vec<Cache>,
    names: Vec<String>,
    /// Every partition's changes, as each cache applies them.
    events: broadcast::Sender<Arc<Event>>,
}

/// Which partitions a scope spans.
enum Span {
    One(u16),
    All,
}

impl Store {
    /// A store on one storage (no partitions). `window` is how many recent events a watch
    /// replays from memory; the storage keeps as many revisions of history, so a watch
    /// resumes after a restart too.
    pub async fn open(storage: Arc<dyn Storage>, window: usize) -> Result<Self, StoreError> {
        Self::open_partitioned(storage, Vec::new(), window).await
    }

    /// A store on the system storage and the named tenant partitions (in this order, which
    /// must stay fixed: see the module text).
    pub async fn open_partitioned(
        system: Arc<dyn Storage>,
        partitions: Vec<(String, Arc<dyn Storage>)>,
        window: usize,
    ) -> Result<Self, StoreError> {
        if partitions.len() >= usize::from(u16::MAX) {
            return Err(StoreError::Invalid("too many partitions".into()));
        }
        let (events, _) = broadcast::channel(16384);
        let mut names = vec![SYSTEM_PARTITION.to_string()];
        let mut parts = vec![Cache::open(system, window, 0, events.clone()).await?];
        for (i, (name, storage)) in partitions.into_iter().enumerate() {
            if names.contains(&name) {
                return Err(StoreError::Invalid(format!(
                    "partition {name:?} named twice"
                )));
            }
            let part = u16::try_from(i + 1).unwrap_or(u16::MAX);
            parts.push(Cache::open(storage, window, part, events.clone()).await?);
            names.push(name);
        }
        Ok(Store {
            inner: Arc::new(Inner {
                parts,
                names,
                events,
            }),
        })
    }

    /// A store on sled in `dir`.
    pub async fn open_sled(dir: &std::path::Path, window: usize) -> Result<Self, StoreError> {
        Self::open(Arc::new(LocalStorage::sled(dir)?), window).await
    }

    /// A store in memory (not durable).
    pub async fn memory(window: usize) -> Result<Self, StoreError> {
        Self::open(Arc::new(LocalStorage::memory()?), window).await
    }

    /// The partitions' names, in order (the first is [`SYSTEM_PARTITION`]).
    pub fn partitions(&self) -> &[String] {
        &self.inner.names
    }

    /// The index of the partition called `name`.
    pub fn partition_index(&self, name: &str) -> Option<u16> {
        let i = self.inner.names.iter().position(|n| n == name)?;
        u16::try_from(i).ok()
    }

    /// The partition `tenant`'s space lives in ("": the system space).
    pub fn tenant_partition(&self, tenant: &str) -> u16 {
        if self.inner.parts.len() == 1 || tenant.is_empty() {
            return 0;
        }
        self.inner.parts[0]
            .get(&Key::new(TENANTS, "", "", tenant))
            .and_then(|t| self.named_in(&t))
            .unwrap_or(0)
    }

    /// The partition a Tenant object names (`None`: it names none, or one not configured).
    fn named_in(&self, tenant: &Value) -> Option<u16> {
        tenant
            .pointer("/spec/storageClusterId")
            .and_then(Value::as_str)
            .and_then(|n| self.partition_index(n))
    }

    /// The partition `key` lives in.
    pub fn part_of(&self, key: &Key) -> u16 {
        self.tenant_partition(&key.tenant)
    }

    fn part(&self, i: u16) -> &Cache {
        // Indexes come from this store's routing, so always in range.
        &self.inner.parts[usize::from(i).min(self.inner.parts.len() - 1)]
    }

    fn span(&self, scope: &Scope) -> Span {
        match &scope.tenant {
            _ if self.inner.parts.len() == 1 => Span::One(0),
            Some(t) => Span::One(self.tenant_partition(t)),
            None => Span::All,
        }
    }

    fn indexes(&self, span: &Span) -> Vec<u16> {
        match span {
            Span::One(p) => vec![*p],
            Span::All => (0..self.inner.parts.len())
                .map(|i| u16::try_from(i).unwrap_or(u16::MAX))
                .collect(),
        }
    }

    fn cursor(span: &Span, revs: Vec<u64>) -> Cursor {
        Cursor {
            only: match span {
                Span::One(p) => Some(*p),
                Span::All => None,
            },
            revs,
        }
    }

    /// Read locks on the partitions `idx`, taken in index order (an applier holds one write
    /// lock at a time, so readers holding several never deadlock), and each one's revision.
    /// Subscribing while they are held starts the live stream exactly after those revisions.
    fn lock(&self, idx: &[u16]) -> (Vec<RwLockReadGuard<'_, State>>, Vec<u64>) {
        let guards: Vec<_> = idx.iter().map(|&i| self.part(i).read()).collect();
        let revs = guards.iter().map(|g| rv_locked(g)).collect();
        (guards, revs)
    }

    /// The current object, if any.
    pub fn get(&self, key: &Key) -> Option<Arc<Value>> {
        self.part(self.part_of(key)).get(key)
    }

    /// Objects held, every partition's.
    pub fn object_count(&self) -> usize {
        self.inner.parts.iter().map(|p| p.len()).sum()
    }

    /// The revision the system partition's cache has reached.
    pub fn current_rv(&self) -> u64 {
        self.inner.parts[0].current_rv()
    }

    /// The position every partition's cache has reached.
    pub fn position(&self) -> Position {
        Position(self.inner.parts.iter().map(Cache::current_rv).collect())
    }

    /// All objects in `scope`, in key order, starting after `after` (for pagination), with the
    /// position the list is consistent with.
    pub fn list(&self, scope: &Scope, after: Option<&Key>) -> (Position, Listing) {
        let span = self.span(scope);
        let idx = self.indexes(&span);
        let (guards, revs) = self.lock(&idx);
        let lists = guards
            .iter()
            .map(|g| list_locked(g, scope, after))
            .collect();
        drop(guards);
        (Position(revs), merge(lists))
    }

    /// Every object of `resource` in `tenant` (`None`: every tenant), in key order.
    pub fn list_of(&self, resource: &str, tenant: Option<&str>) -> Listing {
        self.list(&Scope::of(resource, tenant), None).1
    }

    /// Watch `scope` after position `from`: replayed from the windows, or from the storages'
    /// history where a window no longer reaches back that far (after a restart, say).
    pub async fn watch(&self, scope: &Scope, from: &Position) -> Result<Watch, StoreError> {
        let span = self.span(scope);
        let idx = self.indexes(&span);
        let mut at: Vec<u64> = match (&span, from.0.as_slice()) {
            (Span::One(_), [one]) => vec![*one],
            (Span::One(p), many) => vec![many.get(usize::from(*p)).copied().unwrap_or(0)],
            // A plain revision cannot say where a watch across partitions was.
            (Span::All, [one]) if idx.len() > 1 => {
                return Err(StoreError::Gone {
                    requested: *one,
                    oldest: 0,
                })
            }
            (Span::All, many) => (0..idx.len())
                .map(|i| many.get(i).copied().unwrap_or(0))
                .collect(),
        };
        let cursor = Self::cursor(&span, at.clone());
        let mut replays: Vec<Vec<Arc<Event>>> = vec![Vec::new(); idx.len()];
        loop {
            // What a window no longer holds comes from the storage, outside the locks.
            for (n, &i) in idx.iter().enumerate() {
                let c = self.part(i);
                let start = c.window_start();
                if at[n] < start {
                    replays[n].extend(c.history(at[n], start).await?);
                    at[n] = start;
                }
            }
            // Subscribing under every read lock: each applier publishes under its write lock,
            // so no event can fall between a replay and the live stream.
            let (guards, _) = self.lock(&idx);
            let windows: Option<Vec<_>> = guards
                .iter()
                .zip(&at)
                .map(|(g, &a)| window_after(g, a))
                .collect();
            let Some(windows) = windows else {
                // A window moved on meanwhile: fetch the rest from history.
                continue;
            };
            let live = self.inner.events.subscribe();
            drop(guards);
            for (r, w) in replays.iter_mut().zip(windows) {
                r.extend(w);
            }
            return Ok(Watch {
                replay: replays.concat(),
                live,
                cursor,
            });
        }
    }

    /// List `scope` and subscribe to later changes under one set of locks: the live stream
    /// starts exactly after the returned cursor.
    pub fn list_and_watch(
        &self,
        scope: &Scope,
    ) -> (Cursor, Listing, broadcast::Receiver<Arc<Event>>) {
        let span = self.span(scope);
        let idx = self.indexes(&span);
        let (guards, revs) = self.lock(&idx);
        let live = self.inner.events.subscribe();
        let lists = guards.iter().map(|g| list_locked(g, scope, None)).collect();
        drop(guards);
        (Self::cursor(&span, revs), merge(lists), live)
    }

    /// Several scopes listed (across every partition) and a subscription to later changes,
    /// all under one set of locks (an informer's list-then-watch).
    pub fn lists_and_watch(
        &self,
        scopes: &[Scope],
    ) -> (Cursor, Vec<Listing>, broadcast::Receiver<Arc<Event>>) {
        let (guards, revs) = self.lock(&self.indexes(&Span::All));
        let live = self.inner.events.subscribe();
        let lists = scopes
            .iter()
            .map(|s| merge(guards.iter().map(|g| list_locked(g, s, None)).collect()))
            .collect();
        drop(guards);
        (Self::cursor(&Span::All, revs), lists, live)
    }

    /// Every object (all resources, all spaces, all partitions) and a subscription to later
    /// changes, under one set of locks.
    pub fn snapshot_and_watch(&self) -> (Cursor, Listing, broadcast::Receiver<Arc<Event>>) {
        let (guards, revs) = self.lock(&self.indexes(&Span::All));
        let live = self.inner.events.subscribe();
        let lists = guards.iter().map(|g| all_locked(g)).collect();
        drop(guards);
        (Self::cursor(&Span::All, revs), merge(lists), live)
    }

    /// Live changes from now on, every partition's.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.inner.events.subscribe()
    }

    /// Commit a transaction: all ops apply or none. Returns the committed events in order
    /// (without `prev`), once the cache has them.
    ///
    /// Ops in several partitions (a Tenant and the namespaces created with it) commit one
    /// partition after another, the system partition first; if a later one fails, what the
    /// earlier ones created is deleted again (best effort) and the error returned.
    pub async fn commit(&self, ops: Vec<Op>) -> Result<Vec<Arc<Event>>, StoreError> {
        if self.inner.parts.len() == 1 {
            return self.inner.parts[0].commit(ops).await;
        }
        // A Tenant created in this transaction routes its space by what it names.
        let created: Vec<(String, u16)> = ops
            .iter()
            .filter_map(|op| match op {
                Op::Put { key, value, .. } if key.resource == TENANTS && key.tenant.is_empty() => {
                    Some((key.name.clone(), self.named_in(value).unwrap_or(0)))
                }
                _ => None,
            })
            .collect();
        let mut groups: BTreeMap<u16, Vec<Op>> = BTreeMap::new();
        for op in ops {
            let t = &op.key().tenant;
            let p = match created.iter().find(|(n, _)| n == t) {
                Some((_, p)) => *p,
                None => self.tenant_partition(t),
            };
            groups.entry(p).or_default().push(op);
        }
        if groups.len() == 1 {
            let (p, ops) = groups.pop_first().unwrap_or_default();
            return self.part(p).commit(ops).await;
        }
        let mut done: Vec<(u16, Vec<Arc<Event>>, Vec<Key>)> = Vec::new();
        for (p, ops) in groups {
            let fresh: Vec<Key> = ops
                .iter()
                .filter(|o| {
                    matches!(
                        o,
                        Op::Put {
                            pre: Precondition::Absent,
                            ..
                        }
                    )
                })
                .map(|o| o.key().clone())
                .collect();
            match self.part(p).commit(ops).await {
                Ok(evs) => done.push((p, evs, fresh)),
                Err(e) => {
                    for (p, evs, fresh) in done.into_iter().rev() {
                        let undo: Vec<Op> = evs
                            .iter()
                            .filter(|ev| fresh.contains(&ev.key))
                            .map(|ev| Op::Delete {
                                key: ev.key.clone(),
                                pre: Precondition::Version(ev.rv),
                            })
                            .collect();
                        if let Err(u) = self.part(p).commit(undo).await {
                            tracing::warn!(error = %u, "undoing a partial cross-partition commit failed");
                        }
                    }
                    return Err(e);
                }
            }
        }
        Ok(done.into_iter().flat_map(|(_, evs, _)| evs).collect())
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

    /// Delete one object (deleting what is not there is [`StoreError::NotFound`]).
    pub async fn delete(&self, key: Key, pre: Precondition) -> Result<Arc<Event>, StoreError> {
        let mut ev = self
            .commit(vec![Op::Delete {
                key: key.clone(),
                pre,
            }])
            .await?;
        ev.pop().ok_or(StoreError::NotFound(key))
    }

    /// Wait until every partition's cache holds what its storage had committed when this was
    /// called (a consistent read; immediate on storage only this process writes).
    pub async fn sync(&self) -> Result<(), StoreError> {
        self.sync_for(None).await
    }

    /// [`Store::sync`] for a read of `tenant`'s space (`None`: every tenant's): the system
    /// partition, then the tenant's, so another partition being down does not fail it.
    pub async fn sync_for(&self, tenant: Option<&str>) -> Result<(), StoreError> {
        self.inner.parts[0].sync().await?;
        match tenant {
            Some(t) => match self.tenant_partition(t) {
                0 => Ok(()),
                p => self.part(p).sync().await,
            },
            None => {
                for c in &self.inner.parts[1..] {
                    c.sync().await?;
                }
                Ok(())
            }
        }
    }

    /// Compact every partition's storage behind its window if due (see
    /// [`crate::Store::open`]); for the one writer of shared storage that compacts it. The
    /// system partition's compaction point, if there was one; the first error, after trying
    /// every partition.
    pub async fn compact_behind(&self) -> Result<Option<u64>, StoreError> {
        let mut first_err = None;
        let mut system = None;
        for (i, c) in self.inner.parts.iter().enumerate() {
            match c.compact_behind().await {
                Ok(at) if i == 0 => system = at,
                Ok(_) => {}
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(system),
        }
    }

    /// Forget the system partition's history up to `revision` (watches from before it get
    /// 410).
    pub async fn compact(&self, revision: u64) -> Result<(), StoreError> {
        self.inner.parts[0].storage.compact(revision).await
    }
}

/// Lists from several partitions as one, in key order (their keys never coincide: a tenant's
/// space is in one partition only).
fn merge(mut lists: Vec<Listing>) -> Listing {
    if lists.len() == 1 {
        return lists.pop().unwrap_or_default();
    }
    let mut all: Listing = lists.into_iter().flatten().collect();
    all.sort_by(|a, b| a.0.cmp(&b.0));
    all
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    async fn two() -> Store {
        Store::open_partitioned(
            Arc::new(LocalStorage::memory().unwrap()),
            vec![("p1".into(), Arc::new(LocalStorage::memory().unwrap()) as _)],
            100,
        )
        .await
        .unwrap()
    }

    fn obj(name: &str) -> Value {
        json!({"metadata": {"name": name}})
    }

    fn create(key: Key, value: Value) -> Op {
        Op::Put {
            key,
            value,
            pre: Precondition::Absent,
        }
    }

    /// Tenant `name` in partition p1 and the default namespace of `ns_tenant`, in one commit.
    fn tenant_in_p1(name: &str, ns_tenant: &str) -> Vec<Op> {
        vec![
            create(
                Key::new("tenants", "", "", name),
                json!({"metadata": {"name": name}, "spec": {"storageClusterId": "p1"}}),
            ),
            create(
                Key::new("namespaces", ns_tenant, "", "default"),
                obj("default"),
            ),
        ]
    }

    #[test]
    fn positions_parse_and_print() {
        assert_eq!(Position::parse("12").unwrap().to_string(), "12");
        assert_eq!(Position::parse("12.0.7").unwrap().revisions(), &[12, 0, 7]);
        assert_eq!(Position::parse("12.x"), None);
        assert_eq!(Position::parse(""), None);
        assert_eq!(Position::parse("1..2"), None);
        assert_eq!(Position::revision_in("5", 1), Some(5));
        assert_eq!(Position::revision_in("5.9", 1), Some(9));
        assert_eq!(Position::revision_in("5.9", 2), None);
    }

    #[tokio::test]
    async fn tenants_route_to_their_partition_and_merge_back() {
        let s = two().await;
        // Tenant a in p1 (with its namespace in the same commit), b in the system partition.
        s.commit(tenant_in_p1("a", "a")).await.unwrap();
        s.put(
            Key::new("tenants", "", "", "b"),
            obj("b"),
            Precondition::Absent,
        )
        .await
        .unwrap();
        assert_eq!(s.tenant_partition("a"), 1);
        assert_eq!(s.tenant_partition("b"), 0);
        let (c0, _, mut live) = s.list_and_watch(&Scope::of("pods", None));
        let pa = s
            .put(
                Key::new("pods", "a", "default", "x"),
                obj("x"),
                Precondition::Absent,
            )
            .await
            .unwrap();
        let pb = s
            .put(
                Key::new("pods", "b", "default", "y"),
                obj("y"),
                Precondition::Absent,
            )
            .await
            .unwrap();
        assert_eq!((pa.part, pb.part), (1, 0));
        // The pod of a is in p1 only: its revisions are p1's.
        assert!(s.part(1).get(&pa.key).is_some());
        assert!(s.part(0).get(&pa.key).is_none());
        let (pos, all) = s.list(&Scope::of("pods", None), None);
        assert_eq!(all.len(), 2);
        assert_eq!(pos.revisions().len(), 2);
        // A single tenant's list is its partition's plain revision.
        let (one, _) = s.list(&Scope::of("pods", Some("a")), None);
        assert_eq!(one.revisions(), &[pa.rv]);
        // The merged live stream has both, and a cursor tracks each partition.
        let mut c = c0.clone();
        let e1 = live.recv().await.unwrap();
        let e2 = live.recv().await.unwrap();
        assert!(c.advance(&e1) && c.advance(&e2));
        assert!(!c.advance(&e1), "an event is new to a cursor once");
        // Resuming the merged watch from the cursor's start replays both, exactly.
        let w = s
            .watch(&Scope::of("pods", None), &c0.position())
            .await
            .unwrap();
        let keys: Vec<_> = w.replay.iter().map(|e| e.key.name.clone()).collect();
        assert_eq!(keys.len(), 2);
        assert!(keys.contains(&"x".to_string()) && keys.contains(&"y".to_string()));
        // From the position after both: nothing to replay.
        let w = s
            .watch(&Scope::of("pods", None), &c.position())
            .await
            .unwrap();
        assert!(w.replay.is_empty());
        // A plain revision cannot resume a watch across partitions.
        assert!(matches!(
            s.watch(&Scope::of("pods", None), &Position::parse("3").unwrap())
                .await,
            Err(StoreError::Gone { .. })
        ));
    }

    #[tokio::test]
    async fn a_failed_later_partition_undoes_the_earlier_creates() {
        let s = two().await;
        s.commit(tenant_in_p1("a", "a")).await.unwrap();
        // Tenant d (system partition, committed first) is removed again when its
        // namespace op (p1) fails.
        let r = s.commit(tenant_in_p1("d", "a")).await;
        assert!(matches!(r, Err(StoreError::AlreadyExists(_))));
        assert!(s.get(&Key::new("tenants", "", "", "d")).is_none());
    }
}
