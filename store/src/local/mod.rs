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
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use serde_json::Value;
use tokio::sync::{mpsc, oneshot};

use crate::storage::{Batch, BoxFuture, Feed, Page, Storage, StorageResult};
use crate::{check, set_rv, Event, EventType, Key, Op, Scope, StoreError};

mod map;
#[cfg(test)]
mod tests;

pub use map::{BackendError, Entry, Map, MemMap, SledMap, Write};

pub(super) const META_REV: &[u8] = b"m/rev";
pub(super) const META_COMPACTED: &[u8] = b"m/compacted";

/// `v` key `\0` revision.
pub(super) fn version_key(key: &[u8], rev: u64) -> Vec<u8> {
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
/// still need [`Scope::contains`].
fn scope_bounds(scope: Option<&Scope>) -> (Vec<u8>, Vec<u8>, bool) {
    let Some(s) = scope else {
        return (b"v".to_vec(), b"w".to_vec(), false);
    };
    let (prefix, filter) = s.encoded_prefix();
    let mut from = vec![b'v'];
    from.extend_from_slice(&prefix);
    let mut to = from.clone();
    to.push(0xff);
    (from, to, filter)
}

pub(super) fn put_record(v: &Value) -> Result<Vec<u8>, BackendError> {
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
    Watch(u64, mpsc::Sender<Batch>, oneshot::Sender<StorageResult<()>>),
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
            // Built by the writer thread before its first message, while the opener lists.
            index: KeyIndex::new(),
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
            part: 0,
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
        Box::pin(async move { history(&*self.map, &self.revs, from, to) })
    }

    fn compact(&self, revision: u64) -> BoxFuture<'_, StorageResult<()>> {
        Box::pin(async move {
            let (reply, rx) = oneshot::channel();
            self.send(Msg::Compact(revision, reply)).await?;
            rx.await.map_err(|_| StoreError::Closed)?
        })
    }
}

/// The newest revision of every key and whether it is live (a deletion otherwise), as etcd
/// keeps its key index in memory: a compare is a lookup, not a read of the map.
type KeyIndex = HashMap<Vec<u8>, (u64, bool)>;

fn key_index(map: &dyn Map) -> Result<KeyIndex, BackendError> {
    let mut index = KeyIndex::new();
    map.scan(b"v", b"w", &mut |k, v| {
        if let Some((enc, rev)) = split_version(k) {
            // Versions of a key come in revision order: the last one seen is the newest.
            match index.get_mut(enc) {
                Some(e) => *e = (rev, v != b"D"),
                None => {
                    index.insert(enc.to_vec(), (rev, v != b"D"));
                }
            }
        }
        true
    })?;
    Ok(index)
}

/// The writer thread's state.
struct Writer {
    index: KeyIndex,
    map: Arc<dyn Map>,
    revs: Arc<Revisions>,
    watchers: Vec<mpsc::Sender<Batch>>,
}

/// A key's newest version: its revision and whether it is live.
type Latest = Option<(u64, Option<Arc<Value>>)>;

impl Writer {
    fn run(mut self, mut rx: mpsc::Receiver<Msg>) {
        match key_index(&*self.map) {
            Ok(index) => self.index = index,
            Err(e) => {
                // Without its index the writer cannot check a compare: it takes no writes.
                tracing::error!(error = %e, "store index unreadable");
                return;
            }
        }
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
                            let ok = replay.is_empty()
                                || tx
                                    .blocking_send(Batch {
                                        revision: current,
                                        events: replay,
                                    })
                                    .is_ok();
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
        match self.index.get(enc) {
            None => Ok(None),
            Some(&(rev, false)) => Ok(Some((rev, None))),
            Some(&(rev, true)) if need_value => {
                let rec = self
                    .map
                    .get(&version_key(enc, rev))?
                    .ok_or_else(|| BackendError::Corrupt("index names a missing version".into()))?;
                Ok(Some((rev, decode_record(enc, &rec)?.map(Arc::new))))
            }
            // Present; the value is not needed (a put's compare only reads the revision).
            Some(&(rev, true)) => Ok(Some((rev, Some(Arc::new(Value::Null))))),
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
                            Ok(r) if r.len() > crate::MAX_OBJECT_BYTES + 1 => {
                                failed = Some(StoreError::TooLarge {
                                    size: r.len() - 1,
                                    limit: crate::MAX_OBJECT_BYTES,
                                });
                                break;
                            }
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
                            part: 0,
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
                            part: 0,
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
        for (enc, latest) in staged {
            if let Some((r, v)) = latest {
                self.index.insert(enc, (r, v.is_some()));
            }
        }
        self.revs.current.store(rev, Ordering::Release);
        let batch: Vec<Arc<Event>> = results
            .iter()
            .filter_map(|(_, r)| r.as_ref().ok())
            .flatten()
            .cloned()
            .collect();
        // A watcher that cannot keep up holds the writer back; one that is gone is dropped.
        self.watchers.retain(|w| {
            w.blocking_send(Batch {
                revision: rev,
                events: batch.clone(),
            })
            .is_ok()
        });
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
                        // Nothing newer: the key is gone from the index too.
                        if self.index.get(&enc).is_some_and(|(r, _)| {
                            split_version(&newest).is_some_and(|(_, n)| n == *r)
                        }) {
                            self.index.remove(&enc);
                        }
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
