//! The ordered byte maps local storage keeps its records in: sled on disk, a `BTreeMap` in
//! memory.

use std::ops::Bound;
use std::sync::RwLock;

use serde_json::Value;

use super::{put_record, version_key, META_COMPACTED, META_REV};
use crate::object_rv;

/// Map failures.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// sled reported an error.
    #[error("sled")]
    Sled(#[from] sled::Error),
    /// Stored bytes could not be decoded.
    #[error("corrupt record: {0}")]
    Corrupt(String),
    /// A remote storage answered with an error.
    #[error("{0}")]
    Remote(String),
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
pub(super) const OLD_TREE: &str = "objects";
pub(super) const OLD_RV_KEY: &[u8] = b"\xff\xffrv";

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
