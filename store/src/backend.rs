//! Durable backends: sled (the default) and memory (unit tests).

use std::sync::Arc;

use serde_json::Value;

use crate::Key;

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
