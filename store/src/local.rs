//! Local [`Storage`]: multi-version records in one ordered byte map — sled on disk (the
//! embedded default) or a `BTreeMap` in memory (unit tests, `--in-memory` sites) — and one
//! writer thread that checks compares and group-commits.
//!
//! Layout of the map (one sled tree, so a commit is one atomic batch):
//! - `v` key `\0` revision (8 bytes, big-endian) → `P` + the object's JSON, or `D` (deleted):
//!   every version of a key, adjacent and in revision order;
//! - `l` revision → key: the change log, for watches and history in revision order;
//! - `m/rev`, `m/compacted` → the current and the compacted revision.
//!
//! Each op of a transaction gets a revision of its own, in order. Compaction removes the
//! versions no read at or after the compaction point can see, and the log up to it.

use std::collections::HashMap;
use std::ops::Bound;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use serde_json::Value;
use tokio::sync::{mpsc, oneshot};

use crate::storage::{BoxFuture, Feed, Page, Storage, StorageResult};
use crate::{object_rv, set_rv, Event, EventType, Key, Op, Precondition, Scope, StoreError};

/// Map failures.
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

/// One write of a batch: `Some` puts, `None` removes.
pub type Write = (Vec<u8>, Option<Vec<u8>>);

/// One entry of a map: key and value.
pub type Entry = (Vec<u8>, Vec<u8>);

/// An ordered byte map with atomic batches: what [`LocalStorage`] keeps its records in.
pub trait Map: Send + Sync + 'static {
    /// The value under `key`.
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, BackendError>;
    /// Visit the entries with keys in `[from, to)` in order until `f` returns false.
    fn scan(
        &self,
        from: &[u8],
        to: &[u8],
        f: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<(), BackendError>;
    /// The last entry with a key in `[from, to)`.
    fn last(&self, from: &[u8], to: &[u8]) -> Result<Option<Entry>, BackendError>;
    /// Apply `writes` atomically; if `durable`, on stable storage before returning.
    fn apply(&self, writes: Vec<Write>, durable: bool) -> Result<(), BackendError>;
}

/// The in-memory map (not durable).
#[derive(Default)]
pub struct MemMap(RwLock<std::collections::BTreeMap<Vec<u8>, Vec<u8>>>);

impl Map for MemMap {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, BackendError> {
        Ok(self
            .0
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
            .cloned())
    }
    fn scan(
        &self,
        from: &[u8],
        to: &[u8],
        f: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<(), BackendError> {
        let m = self.0.read().unwrap_or_else(|p| p.into_inner());
        for (k, v) in m.range::<[u8], _>((Bound::Included(from), Bound::Excluded(to))) {
            if !f(k, v) {
                break;
            }
        }
        Ok(())
    }
    fn last(&self, from: &[u8], to: &[u8]) -> Result<Option<Entry>, BackendError> {
        let m = self.0.read().unwrap_or_else(|p| p.into_inner());
        Ok(
            m.range::<[u8], _>((Bound::Included(from), Bound::Excluded(to)))
                .next_back()
                .map(|(k, v)| (k.clone(), v.clone())),
        )
    }
    fn apply(&self, writes: Vec<Write>, _durable: bool) -> Result<(), BackendError> {
        let mut m = self.0.write().unwrap_or_else(|p| p.into_inner());
        for (k, v) in writes {
            match v {
                Some(v) => m.insert(k, v),
                None => m.remove(&k),
            };
        }
        Ok(())
    }
}

/// The sled map: one tree.
///
/// Durability: sled's `flush` ends in `sync_file_range`, which persists neither the file-size
/// metadata of appended log segments nor the device's write cache (Linux documents it as unfit
/// for data integrity). So after every durable batch we `fdatasync` the log file ourselves; one
/// per group commit.
pub struct SledMap {
    db: sled::Db,
    tree: sled::Tree,
    log: std::fs::File,
    dir: std::path::PathBuf,
}

/// The tree of the layout before revisions were the storage's (key → object JSON with its
/// resourceVersion, and the counter under [`OLD_RV_KEY`]); migrated on open.
const OLD_TREE: &str = "objects";
const OLD_RV_KEY: &[u8] = b"\xff\xffrv";

impl SledMap {
    /// Open (or create) the map under `dir`, migrating a store of the earlier layout.
    pub fn open(dir: &std::path::Path) -> Result<Self, BackendError> {
        let db = sled::Config::new()
            .path(dir)
            .mode(sled::Mode::HighThroughput)
            .open()?;
        let tree = db.open_tree("mvcc")?;
        let log =
            std::fs::File::open(dir.join("db")).map_err(|e| BackendError::Io(dir.join("db"), e))?;
        // The directory entries of a fresh store must be durable too.
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        let map = SledMap {
            db,
            tree,
            log,
            dir: dir.to_path_buf(),
        };
        map.migrate()?;
        Ok(map)
    }

    /// Move objects of the earlier layout into this one: each at its resourceVersion, history
    /// before the counter compacted (its events were never kept).
    fn migrate(&self) -> Result<(), BackendError> {
        if !self
            .db
            .tree_names()
            .iter()
            .any(|n| &**n == OLD_TREE.as_bytes())
        {
            return Ok(());
        }
        let old = self.db.open_tree(OLD_TREE)?;
        if self.tree.get(META_REV)?.is_none() {
            let mut rev = 0;
            let mut writes = Vec::new();
            for item in old.iter() {
                let (k, v) = item?;
                if &*k == OLD_RV_KEY {
                    let b: [u8; 8] = v
                        .as_ref()
                        .try_into()
                        .map_err(|_| BackendError::Corrupt("version counter".into()))?;
                    rev = u64::from_be_bytes(b);
                    continue;
                }
                let value: Value = serde_json::from_slice(&v)
                    .map_err(|e| BackendError::Corrupt(format!("migrating {k:?}: {e}")))?;
                let r = object_rv(&value).unwrap_or(0);
                writes.push((version_key(&k, r), Some(put_record(&value)?)));
            }
            writes.push((META_REV.to_vec(), Some(rev.to_be_bytes().to_vec())));
            writes.push((META_COMPACTED.to_vec(), Some(rev.to_be_bytes().to_vec())));
            tracing::info!(
                objects = writes.len() - 2,
                revision = rev,
                "migrating store layout"
            );
            self.apply(writes, true)?;
        }
        self.db.drop_tree(OLD_TREE)?;
        self.db.flush()?;
        Ok(())
    }
}

impl Map for SledMap {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, BackendError> {
        Ok(self.tree.get(key)?.map(|v| v.to_vec()))
    }
    fn scan(
        &self,
        from: &[u8],
        to: &[u8],
        f: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<(), BackendError> {
        for item in self.tree.range(from..to) {
            let (k, v) = item?;
            if !f(&k, &v) {
                break;
            }
        }
        Ok(())
    }
    fn last(&self, from: &[u8], to: &[u8]) -> Result<Option<Entry>, BackendError> {
        match self.tree.range(from..to).next_back() {
            Some(item) => {
                let (k, v) = item?;
                Ok(Some((k.to_vec(), v.to_vec())))
            }
            None => Ok(None),
        }
    }
    fn apply(&self, writes: Vec<Write>, durable: bool) -> Result<(), BackendError> {
        let mut batch = sled::Batch::default();
        for (k, v) in writes {
            match v {
                Some(v) => batch.insert(k, v),
                None => batch.remove(k),
            }
        }
        self.tree.apply_batch(batch)?;
        if durable {
            self.db.flush()?;
            self.log
                .sync_data()
                .map_err(|e| BackendError::Io(self.dir.join("db"), e))?;
        }
        Ok(())
    }
}

const META_REV: &[u8] = b"m/rev";
const META_COMPACTED: &[u8] = b"m/compacted";

/// `v` key `\0` revision.
fn version_key(key: &[u8], rev: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(key.len() + 10);
    out.push(b'v');
    out.extend_from_slice(key);
    out.push(0);
    out.extend_from_slice(&rev.to_be_bytes());
    out
}

/// The bounds of every version of `key`: `[v key \0, v key \1)`.
fn versions_of(key: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let mut from = Vec::with_capacity(key.len() + 2);
    from.push(b'v');
    from.extend_from_slice(key);
    let mut to = from.clone();
    from.push(0);
    to.push(1);
    (from, to)
}

/// Split a version entry's map key into the encoded object key and the revision.
fn split_version(k: &[u8]) -> Option<(&[u8], u64)> {
    if k.len() < 10 || k[0] != b'v' || k[k.len() - 9] != 0 {
        return None;
    }
    let rev = u64::from_be_bytes(k[k.len() - 8..].try_into().ok()?);
    Some((&k[1..k.len() - 9], rev))
}

fn log_key(rev: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(9);
    out.push(b'l');
    out.extend_from_slice(&rev.to_be_bytes());
    out
}

/// The map-key bounds of the versions in `scope` (`None`: all), and whether keys inside them
/// still need [`Scope::contains`] (a namespace without a tenant is no prefix).
fn scope_bounds(scope: Option<&Scope>) -> (Vec<u8>, Vec<u8>, bool) {
    let Some(s) = scope else {
        return (b"v".to_vec(), b"w".to_vec(), false);
    };
    let mut from = vec![b'v'];
    from.extend_from_slice(s.resource.as_bytes());
    from.push(0);
    let mut filter = false;
    if let Some(t) = &s.tenant {
        from.extend_from_slice(t.as_bytes());
        from.push(0);
        if let Some(n) = &s.namespace {
            from.extend_from_slice(n.as_bytes());
            from.push(0);
        }
    } else if s.namespace.is_some() {
        filter = true;
    }
    // No UTF-8 byte is 0xff: every key under the prefix sorts before prefix + 0xff.
    let mut to = from.clone();
    to.push(0xff);
    (from, to, filter)
}

fn put_record(v: &Value) -> Result<Vec<u8>, BackendError> {
    let mut out = vec![b'P'];
    serde_json::to_writer(&mut out, v).map_err(|e| BackendError::Corrupt(e.to_string()))?;
    Ok(out)
}

fn decode_record(key: &[u8], rec: &[u8]) -> Result<Option<Value>, BackendError> {
    match rec.split_first() {
        Some((b'P', json)) => serde_json::from_slice(json)
            .map(Some)
            .map_err(|e| BackendError::Corrupt(format!("{}: {e}", String::from_utf8_lossy(key)))),
        Some((b'D', _)) => Ok(None),
        _ => Err(BackendError::Corrupt(format!(
            "record of {}",
            String::from_utf8_lossy(key)
        ))),
    }
}

fn revision(bytes: Option<Vec<u8>>) -> Result<u64, BackendError> {
    match bytes {
        None => Ok(0),
        Some(b) => b
            .as_slice()
            .try_into()
            .map(u64::from_be_bytes)
            .map_err(|_| BackendError::Corrupt("revision counter".into())),
    }
}

fn backend(e: BackendError) -> StoreError {
    StoreError::Backend(e)
}

type TxnReply = oneshot::Sender<StorageResult<Vec<Arc<Event>>>>;

enum Msg {
    Txn(Vec<Op>, TxnReply),
    Watch(
        u64,
        mpsc::Sender<Vec<Arc<Event>>>,
        oneshot::Sender<StorageResult<()>>,
    ),
    Compact(u64, oneshot::Sender<StorageResult<()>>),
}

/// Revisions shared by the writer and readers.
struct Revisions {
    current: AtomicU64,
    compacted: AtomicU64,
}

/// Local storage over a [`Map`].
pub struct LocalStorage {
    map: Arc<dyn Map>,
    revs: Arc<Revisions>,
    tx: mpsc::Sender<Msg>,
}

/// Largest number of transactions committed in one group.
const MAX_GROUP: usize = 512;
/// Log entries compacted per batch.
const COMPACT_CHUNK: usize = 4096;

impl LocalStorage {
    /// Storage over `map`; starts the writer thread (it ends when the storage is dropped).
    pub fn open(map: Arc<dyn Map>) -> StorageResult<Self> {
        let revs = Arc::new(Revisions {
            current: AtomicU64::new(
                revision(map.get(META_REV).map_err(backend)?).map_err(backend)?,
            ),
            compacted: AtomicU64::new(
                revision(map.get(META_COMPACTED).map_err(backend)?).map_err(backend)?,
            ),
        });
        let (tx, rx) = mpsc::channel(4096);
        let writer = Writer {
            map: map.clone(),
            revs: revs.clone(),
            watchers: Vec::new(),
        };
        std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(|_| StoreError::Closed)?;
        Ok(LocalStorage { map, revs, tx })
    }

    /// Storage in sled under `dir`.
    pub fn sled(dir: &std::path::Path) -> StorageResult<Self> {
        Self::open(Arc::new(SledMap::open(dir).map_err(backend)?))
    }

    /// Storage in memory.
    pub fn memory() -> StorageResult<Self> {
        Self::open(Arc::new(MemMap::default()))
    }

    /// The revision a read asked for (`0`: current), refused if compacted.
    fn at(&self, revision: u64) -> StorageResult<u64> {
        let compacted = self.revs.compacted.load(Ordering::Acquire);
        let current = self.revs.current.load(Ordering::Acquire);
        if revision == 0 {
            return Ok(current);
        }
        if revision < compacted {
            return Err(StoreError::Gone {
                requested: revision,
                oldest: compacted,
            });
        }
        Ok(revision.min(current))
    }

    /// A read that raced a compaction past its revision is refused.
    fn still_readable(&self, revision: u64) -> StorageResult<()> {
        let compacted = self.revs.compacted.load(Ordering::Acquire);
        if revision < compacted {
            return Err(StoreError::Gone {
                requested: revision,
                oldest: compacted,
            });
        }
        Ok(())
    }

    fn get_at(&self, key: &Key, revision: u64) -> StorageResult<(u64, Option<Arc<Value>>)> {
        let rev = self.at(revision)?;
        let enc = key.encode();
        let (from, _) = versions_of(&enc);
        let to = version_key(&enc, rev.saturating_add(1));
        let found = match self.map.last(&from, &to).map_err(backend)? {
            Some((_, rec)) => decode_record(&enc, &rec).map_err(backend)?.map(Arc::new),
            None => None,
        };
        self.still_readable(rev)?;
        Ok((rev, found))
    }

    fn list_at(
        &self,
        scope: Option<&Scope>,
        after: Option<&Key>,
        limit: usize,
        revision: u64,
    ) -> StorageResult<Page> {
        let rev = self.at(revision)?;
        let (mut from, to, filter) = scope_bounds(scope);
        if let Some(a) = after {
            let (_, past) = versions_of(&a.encode());
            if past > from {
                from = past;
            }
        }
        let mut page = Page {
            revision: rev,
            items: Vec::new(),
            more: false,
        };
        // The versions of one key are adjacent: keep the newest at or before `rev`, emit it
        // when the next key starts.
        let mut current: Option<(Vec<u8>, Option<Vec<u8>>)> = None;
        let mut err = None;
        let limit = limit.max(1);
        let mut emit = |k: Vec<u8>, rec: Option<Vec<u8>>, page: &mut Page| -> bool {
            let Some(rec) = rec else { return true };
            if page.items.len() >= limit {
                page.more = true;
                return false;
            }
            let Some(key) = Key::decode(&k) else {
                err = Some(BackendError::Corrupt("key".into()));
                return false;
            };
            if filter && !scope.is_some_and(|s| s.contains(&key)) {
                return true;
            }
            match decode_record(&k, &rec) {
                Ok(Some(v)) => page.items.push((key, Arc::new(v))),
                Ok(None) => {}
                Err(e) => {
                    err = Some(e);
                    return false;
                }
            }
            true
        };
        let mut stopped = false;
        self.map
            .scan(&from, &to, &mut |k, v| {
                let Some((enc, r)) = split_version(k) else {
                    return true;
                };
                match &mut current {
                    Some((ck, crec)) if ck.as_slice() == enc => {
                        if r <= rev {
                            *crec = Some(v.to_vec());
                        }
                        true
                    }
                    _ => {
                        if let Some((ck, crec)) = current.take() {
                            if !emit(ck, crec, &mut page) {
                                stopped = true;
                                return false;
                            }
                        }
                        current = Some((enc.to_vec(), (r <= rev).then(|| v.to_vec())));
                        true
                    }
                }
            })
            .map_err(backend)?;
        if !stopped {
            if let Some((ck, crec)) = current.take() {
                emit(ck, crec, &mut page);
            }
        }
        if let Some(e) = err {
            return Err(backend(e));
        }
        self.still_readable(rev)?;
        Ok(page)
    }

    fn history_of(&self, from: u64, to: u64) -> StorageResult<Vec<Arc<Event>>> {
        history(&*self.map, &self.revs, from, to)
    }

    async fn send(&self, msg: Msg) -> StorageResult<()> {
        self.tx.send(msg).await.map_err(|_| StoreError::Closed)
    }
}

/// The changes in `(from, to]`, read back from the map with the state before each.
fn history(map: &dyn Map, revs: &Revisions, from: u64, to: u64) -> StorageResult<Vec<Arc<Event>>> {
    let gone = || StoreError::Gone {
        requested: from,
        oldest: revs.compacted.load(Ordering::Acquire),
    };
    if from < revs.compacted.load(Ordering::Acquire) {
        return Err(gone());
    }
    let mut entries = Vec::new();
    map.scan(
        &log_key(from.saturating_add(1)),
        &log_key(to.saturating_add(1)),
        &mut |k, v| {
            if let Ok(b) = k[1..].try_into() {
                entries.push((u64::from_be_bytes(b), v.to_vec()));
            }
            true
        },
    )
    .map_err(backend)?;
    let mut out = Vec::with_capacity(entries.len());
    for (rev, enc) in entries {
        let key = Key::decode(&enc).ok_or_else(|| backend(BackendError::Corrupt("log".into())))?;
        let Some(rec) = map.get(&version_key(&enc, rev)).map_err(backend)? else {
            // Compacted while we read.
            return Err(gone());
        };
        let (lo, _) = versions_of(&enc);
        let prev = match map.last(&lo, &version_key(&enc, rev)).map_err(backend)? {
            Some((_, p)) => decode_record(&enc, &p).map_err(backend)?.map(Arc::new),
            None => None,
        };
        let (kind, object) = match decode_record(&enc, &rec).map_err(backend)? {
            Some(v) => (
                if prev.is_some() {
                    EventType::Modified
                } else {
                    EventType::Added
                },
                Arc::new(v),
            ),
            None => {
                let mut last = prev.as_deref().cloned().unwrap_or(Value::Null);
                set_rv(&mut last, rev);
                (EventType::Deleted, Arc::new(last))
            }
        };
        out.push(Arc::new(Event {
            rv: rev,
            kind,
            key,
            object,
            prev,
        }));
    }
    if from < revs.compacted.load(Ordering::Acquire) {
        return Err(gone());
    }
    Ok(out)
}

impl Storage for LocalStorage {
    fn current_revision(&self) -> BoxFuture<'_, StorageResult<u64>> {
        Box::pin(async move { Ok(self.revs.current.load(Ordering::Acquire)) })
    }

    fn get<'a>(
        &'a self,
        key: &'a Key,
        revision: u64,
    ) -> BoxFuture<'a, StorageResult<(u64, Option<Arc<Value>>)>> {
        Box::pin(async move { self.get_at(key, revision) })
    }

    fn list<'a>(
        &'a self,
        scope: Option<&'a Scope>,
        after: Option<&'a Key>,
        limit: usize,
        revision: u64,
    ) -> BoxFuture<'a, StorageResult<Page>> {
        Box::pin(async move { self.list_at(scope, after, limit, revision) })
    }

    fn txn(&self, ops: Vec<Op>) -> BoxFuture<'_, StorageResult<Vec<Arc<Event>>>> {
        Box::pin(async move {
            if ops.is_empty() {
                return Ok(Vec::new());
            }
            let (reply, rx) = oneshot::channel();
            // The channel is bounded: a full queue makes writers wait rather than grow memory.
            self.send(Msg::Txn(ops, reply)).await?;
            rx.await.map_err(|_| StoreError::Closed)?
        })
    }

    fn watch(&self, from: u64) -> BoxFuture<'_, StorageResult<Feed>> {
        Box::pin(async move {
            let (tx, feed) = mpsc::channel(1024);
            let (reply, rx) = oneshot::channel();
            self.send(Msg::Watch(from, tx, reply)).await?;
            rx.await.map_err(|_| StoreError::Closed)??;
            Ok(feed)
        })
    }

    fn history(&self, from: u64, to: u64) -> BoxFuture<'_, StorageResult<Vec<Arc<Event>>>> {
        Box::pin(async move { self.history_of(from, to) })
    }

    fn compact(&self, revision: u64) -> BoxFuture<'_, StorageResult<()>> {
        Box::pin(async move {
            let (reply, rx) = oneshot::channel();
            self.send(Msg::Compact(revision, reply)).await?;
            rx.await.map_err(|_| StoreError::Closed)?
        })
    }
}

/// The writer thread's state.
struct Writer {
    map: Arc<dyn Map>,
    revs: Arc<Revisions>,
    watchers: Vec<mpsc::Sender<Vec<Arc<Event>>>>,
}

/// A key's newest version: its revision and whether it is live.
type Latest = Option<(u64, Option<Arc<Value>>)>;

impl Writer {
    fn run(mut self, mut rx: mpsc::Receiver<Msg>) {
        let mut next: Option<Msg> = None;
        loop {
            let msg = match next.take() {
                Some(m) => m,
                None => match rx.blocking_recv() {
                    Some(m) => m,
                    None => return,
                },
            };
            match msg {
                Msg::Txn(ops, reply) => {
                    let mut group = vec![(ops, reply)];
                    while group.len() < MAX_GROUP {
                        match rx.try_recv() {
                            Ok(Msg::Txn(ops, reply)) => group.push((ops, reply)),
                            Ok(other) => {
                                next = Some(other);
                                break;
                            }
                            Err(_) => break,
                        }
                    }
                    self.commit(group);
                }
                Msg::Watch(from, tx, reply) => {
                    let current = self.revs.current.load(Ordering::Acquire);
                    match history(&*self.map, &self.revs, from, current) {
                        Ok(replay) => {
                            let ok = replay.is_empty() || tx.blocking_send(replay).is_ok();
                            if ok {
                                self.watchers.push(tx);
                            }
                            let _ = reply.send(Ok(()));
                        }
                        Err(e) => {
                            let _ = reply.send(Err(e));
                        }
                    }
                }
                Msg::Compact(rev, reply) => {
                    let _ = reply.send(self.compact(rev));
                }
            }
        }
    }

    /// The newest version of `enc` (`None`: never written or compacted away).
    fn latest(&self, enc: &[u8], need_value: bool) -> Result<Latest, BackendError> {
        let (from, to) = versions_of(enc);
        let Some((k, rec)) = self.map.last(&from, &to)? else {
            return Ok(None);
        };
        let rev = split_version(&k).map(|(_, r)| r).unwrap_or(0);
        match rec.first() {
            Some(b'D') => Ok(Some((rev, None))),
            _ if need_value => Ok(Some((rev, decode_record(enc, &rec)?.map(Arc::new)))),
            // Present; the value is not needed (a put's compare only reads the revision).
            _ => Ok(Some((rev, Some(Arc::new(Value::Null))))),
        }
    }

    fn commit(&mut self, group: Vec<(Vec<Op>, TxnReply)>) {
        let mut rev = self.revs.current.load(Ordering::Acquire);
        // What earlier transactions of this group staged, by encoded key.
        let mut staged: HashMap<Vec<u8>, Latest> = HashMap::new();
        let mut writes: Vec<Write> = Vec::new();
        let mut results: Vec<(TxnReply, StorageResult<Vec<Arc<Event>>>)> = Vec::new();
        for (ops, reply) in group {
            let base_rev = rev;
            let mut local: Vec<(Vec<u8>, Latest)> = Vec::new();
            let mut evs = Vec::new();
            let mut txn_writes = Vec::new();
            let mut failed = None;
            for op in ops {
                let key = op.key().clone();
                let enc = key.encode();
                let is_delete = matches!(op, Op::Delete { .. });
                let current = match local
                    .iter()
                    .rev()
                    .find(|(k, _)| *k == enc)
                    .map(|(_, l)| l.clone())
                    .or_else(|| staged.get(&enc).cloned())
                {
                    Some(l) => l,
                    None => match self.latest(&enc, is_delete) {
                        Ok(l) => l,
                        Err(e) => {
                            failed = Some(backend(e));
                            break;
                        }
                    },
                };
                let live = current.as_ref().and_then(|(_, v)| v.clone());
                let (pre, new) = match op {
                    Op::Put { value, pre, .. } => (pre, Some(value)),
                    Op::Delete { pre, .. } => (pre, None),
                };
                if let Err(e) = check(pre, live.as_ref().map(|_| current_rev(&current)), &key) {
                    failed = Some(e);
                    break;
                }
                if new.is_none() && live.is_none() {
                    // Deleting what is not there (Precondition::Any) changes nothing.
                    continue;
                }
                rev += 1;
                let ev = match new {
                    Some(mut value) => {
                        set_rv(&mut value, rev);
                        let record = match put_record(&value) {
                            Ok(r) => r,
                            Err(e) => {
                                failed = Some(backend(e));
                                break;
                            }
                        };
                        txn_writes.push((version_key(&enc, rev), Some(record)));
                        let value = Arc::new(value);
                        local.push((enc.clone(), Some((rev, Some(value.clone())))));
                        Event {
                            rv: rev,
                            kind: if live.is_some() {
                                EventType::Modified
                            } else {
                                EventType::Added
                            },
                            key,
                            object: value,
                            prev: None,
                        }
                    }
                    None => {
                        txn_writes.push((version_key(&enc, rev), Some(vec![b'D'])));
                        let mut last = live.as_deref().cloned().unwrap_or(Value::Null);
                        set_rv(&mut last, rev);
                        local.push((enc.clone(), Some((rev, None))));
                        Event {
                            rv: rev,
                            kind: EventType::Deleted,
                            key,
                            object: Arc::new(last),
                            prev: None,
                        }
                    }
                };
                txn_writes.push((log_key(rev), Some(enc)));
                evs.push(Arc::new(ev));
            }
            match failed {
                Some(e) => {
                    // A failed transaction gives its revisions back: revisions stay dense.
                    rev = base_rev;
                    results.push((reply, Err(e)));
                }
                None => {
                    staged.extend(local);
                    writes.extend(txn_writes);
                    results.push((reply, Ok(evs)));
                }
            }
        }
        if writes.is_empty() {
            for (reply, res) in results {
                let _ = reply.send(res);
            }
            return;
        }
        writes.push((META_REV.to_vec(), Some(rev.to_be_bytes().to_vec())));
        if let Err(e) = self.map.apply(writes, true) {
            tracing::error!(error = %e, "store commit failed");
            for (reply, _) in results {
                let _ = reply.send(Err(backend(BackendError::Corrupt("commit failed".into()))));
            }
            return;
        }
        self.revs.current.store(rev, Ordering::Release);
        let batch: Vec<Arc<Event>> = results
            .iter()
            .filter_map(|(_, r)| r.as_ref().ok())
            .flatten()
            .cloned()
            .collect();
        // A watcher that cannot keep up holds the writer back; one that is gone is dropped.
        self.watchers
            .retain(|w| w.blocking_send(batch.clone()).is_ok());
        for (reply, res) in results {
            let _ = reply.send(res);
        }
    }

    fn compact(&mut self, target: u64) -> StorageResult<()> {
        let current = self.revs.current.load(Ordering::Acquire);
        let target = target.min(current);
        let mut done = self.revs.compacted.load(Ordering::Acquire);
        while done < target {
            let mut entries = Vec::new();
            self.map
                .scan(&log_key(done + 1), &log_key(target + 1), &mut |k, v| {
                    if let Ok(b) = k[1..].try_into() {
                        entries.push((u64::from_be_bytes(b), v.to_vec()));
                    }
                    entries.len() < COMPACT_CHUNK
                })
                .map_err(backend)?;
            let upto = if entries.len() < COMPACT_CHUNK {
                target
            } else {
                entries.last().map(|(r, _)| *r).unwrap_or(target)
            };
            let mut writes = Vec::new();
            let mut keys: Vec<Vec<u8>> = Vec::new();
            for (r, enc) in entries {
                writes.push((log_key(r), None));
                keys.push(enc);
            }
            keys.sort_unstable();
            keys.dedup();
            for enc in keys {
                // Of a key's versions up to `target`, reads at or after it see only the newest:
                // every older one goes (whether or not an earlier compaction passed its log
                // entry), and the newest too if it is a deletion.
                let (from, _) = versions_of(&enc);
                let mut upto_target = Vec::new();
                self.map
                    .scan(&from, &version_key(&enc, target + 1), &mut |k, v| {
                        upto_target.push((k.to_vec(), v == b"D"));
                        true
                    })
                    .map_err(backend)?;
                if let Some((newest, tombstone)) = upto_target.pop() {
                    writes.extend(upto_target.into_iter().map(|(k, _)| (k, None)));
                    if tombstone {
                        writes.push((newest, None));
                    }
                }
            }
            writes.push((META_COMPACTED.to_vec(), Some(upto.to_be_bytes().to_vec())));
            // Compaction need not be durable: lost, it is redone.
            self.map.apply(writes, false).map_err(backend)?;
            self.revs.compacted.store(upto, Ordering::Release);
            done = upto;
        }
        Ok(())
    }
}

fn current_rev(l: &Latest) -> u64 {
    l.as_ref().map(|(r, _)| *r).unwrap_or(0)
}

fn check(pre: Precondition, current: Option<u64>, key: &Key) -> Result<(), StoreError> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::collections::BTreeMap;

    fn obj(name: &str, n: u64) -> Value {
        json!({"metadata": {"name": name}, "n": n})
    }

    fn put(key: &Key, n: u64, pre: Precondition) -> Op {
        Op::Put {
            key: key.clone(),
            value: obj(&key.name, n),
            pre,
        }
    }

    /// A tiny deterministic generator (xorshift64*).
    struct Rng(u64);
    impl Rng {
        fn next(&mut self, n: u64) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n
        }
    }

    /// Random transactions against the storage and a model that keeps every revision's state;
    /// reads at random revisions, pages, history and compaction must agree with the model.
    #[tokio::test(flavor = "multi_thread")]
    async fn reads_at_revisions_match_a_model_through_compaction() {
        for seed in 1..=20u64 {
            let s = LocalStorage::memory().unwrap();
            let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
            let keys: Vec<Key> = (0..12)
                .map(|i| {
                    Key::new(
                        ["pods", "secrets"][i % 2],
                        ["", "t"][i / 6],
                        "ns",
                        &format!("k{i}"),
                    )
                })
                .collect();
            // model[rev] = state after rev.
            let mut model: Vec<BTreeMap<Key, u64>> = vec![BTreeMap::new()];
            let mut compacted = 0;
            for step in 0..300u64 {
                let state = model.last().cloned().unwrap_or_default();
                let n = 1 + rng.next(3) as usize;
                let mut ops = Vec::new();
                let mut used = Vec::new();
                for _ in 0..n {
                    let k = &keys[rng.next(keys.len() as u64) as usize];
                    if used.contains(k) {
                        continue;
                    }
                    used.push(k.clone());
                    let live = state.contains_key(k);
                    ops.push(match (rng.next(4), live) {
                        (0, true) => Op::Delete {
                            key: k.clone(),
                            pre: Precondition::Exists,
                        },
                        (1, _) => put(k, step, Precondition::Absent),
                        _ => put(k, step, Precondition::Any),
                    });
                }
                let expect_ok = ops.iter().all(|op| match op {
                    Op::Put {
                        key,
                        pre: Precondition::Absent,
                        ..
                    } => !state.contains_key(key),
                    _ => true,
                });
                let res = s.txn(ops.clone()).await;
                assert_eq!(
                    res.is_ok(),
                    expect_ok,
                    "seed {seed} step {step}: {:?} {ops:?}",
                    res.as_ref().err()
                );
                if let Ok(evs) = res {
                    let mut st = state;
                    for (op, ev) in ops.iter().zip(&evs) {
                        assert_eq!(ev.rv as usize, model.len(), "dense revisions");
                        match op {
                            Op::Put { key, .. } => {
                                assert_eq!(ev.kind == EventType::Added, !st.contains_key(key));
                                st.insert(key.clone(), step);
                            }
                            Op::Delete { key, .. } => {
                                st.remove(key);
                            }
                        }
                        model.push(st.clone());
                    }
                }
                if step % 50 == 49 {
                    compacted = model.len() as u64 - 1 - rng.next(20);
                    s.compact(compacted).await.unwrap();
                }
            }
            let current = s.current_revision().await.unwrap();
            assert_eq!(current as usize, model.len() - 1);
            for _ in 0..200 {
                let rev = compacted + rng.next(current - compacted + 1);
                let want: Vec<(Key, u64)> = model[rev as usize]
                    .iter()
                    .filter(|(k, _)| k.resource == "pods")
                    .map(|(k, n)| (k.clone(), *n))
                    .collect();
                // Paged by 2 at one revision.
                let mut got = Vec::new();
                let mut after = None;
                loop {
                    let scope = Scope::of("pods", None);
                    let page = s.list(Some(&scope), after.as_ref(), 2, rev).await.unwrap();
                    assert_eq!(page.revision, rev);
                    after = page.items.last().map(|(k, _)| k.clone());
                    got.extend(
                        page.items
                            .into_iter()
                            .map(|(k, v)| (k, v["n"].as_u64().unwrap())),
                    );
                    if !page.more {
                        break;
                    }
                }
                assert_eq!(got, want, "seed {seed} list at {rev}");
                let k = &keys[rng.next(keys.len() as u64) as usize];
                let (_, v) = s.get(k, rev).await.unwrap();
                assert_eq!(
                    v.map(|v| v["n"].as_u64().unwrap()),
                    model[rev as usize].get(k).copied(),
                    "seed {seed} get {k:?} at {rev}"
                );
            }
            // History from the compaction point replays to the current state.
            let mut replayed = model[compacted as usize].clone();
            for e in s.history(compacted, current).await.unwrap() {
                assert_eq!(
                    e.kind == EventType::Modified,
                    replayed.contains_key(&e.key) && e.kind != EventType::Deleted
                );
                match e.kind {
                    EventType::Deleted => replayed.remove(&e.key),
                    _ => replayed.insert(e.key.clone(), e.object["n"].as_u64().unwrap()),
                };
            }
            assert_eq!(&replayed, model.last().unwrap());
            if compacted > 0 {
                assert!(matches!(
                    s.get(&keys[0], compacted - 1).await,
                    Err(StoreError::Gone { .. })
                ));
                assert!(matches!(
                    s.history(compacted - 1, current).await,
                    Err(StoreError::Gone { .. })
                ));
            }
        }
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_watch_replays_from_a_revision_then_follows() {
        let s = LocalStorage::memory().unwrap();
        let a = Key::new("pods", "", "ns", "a");
        s.txn(vec![put(&a, 1, Precondition::Absent)]).await.unwrap();
        s.txn(vec![put(&a, 2, Precondition::Version(1))])
            .await
            .unwrap();
        assert!(matches!(
            s.txn(vec![put(&a, 3, Precondition::Version(1))]).await,
            Err(StoreError::Conflict(_))
        ));
        let mut feed = s.watch(1).await.unwrap();
        let first = feed.recv().await.unwrap();
        assert_eq!((first[0].rv, first[0].kind), (2, EventType::Modified));
        s.txn(vec![Op::Delete {
            key: a.clone(),
            pre: Precondition::Version(2),
        }])
        .await
        .unwrap();
        let next = feed.recv().await.unwrap();
        assert_eq!((next[0].rv, next[0].kind), (3, EventType::Deleted));
        assert_eq!(next[0].object["n"], 2, "a deletion carries the last state");
        // Deleting what is not there changes nothing.
        assert!(s
            .txn(vec![Op::Delete {
                key: a.clone(),
                pre: Precondition::Any
            }])
            .await
            .unwrap()
            .is_empty());
        assert_eq!(s.current_revision().await.unwrap(), 3);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn the_earlier_sled_layout_is_migrated() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = sled::open(dir.path()).unwrap();
            let old = db.open_tree(OLD_TREE).unwrap();
            let k = Key::new("pods", "t", "ns", "a");
            old.insert(
                k.encode(),
                serde_json::to_vec(&json!({"metadata": {"name": "a", "resourceVersion": "7"}}))
                    .unwrap(),
            )
            .unwrap();
            old.insert(OLD_RV_KEY, &9u64.to_be_bytes()).unwrap();
            db.flush().unwrap();
        }
        let s = LocalStorage::sled(dir.path()).unwrap();
        assert_eq!(s.current_revision().await.unwrap(), 9);
        let (_, v) = s.get(&Key::new("pods", "t", "ns", "a"), 0).await.unwrap();
        assert_eq!(v.unwrap()["metadata"]["resourceVersion"], "7");
        // Its events were never kept: history before the migration is gone.
        assert!(matches!(
            s.history(8, 9).await,
            Err(StoreError::Gone { .. })
        ));
        let evs = s
            .txn(vec![put(
                &Key::new("pods", "t", "ns", "b"),
                1,
                Precondition::Absent,
            )])
            .await
            .unwrap();
        assert_eq!(evs[0].rv, 10);
    }
}
