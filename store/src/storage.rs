//! The revision-based storage contract, shaped like etcd's key-value API (and kine's backend):
//! every committed change gets a revision from one increasing counter; reads are at a revision;
//! writes are multi-key transactions that compare each key's modification revision; a watch
//! streams the changes after a revision; history older than the compaction point is gone.
//!
//! An object's `metadata.resourceVersion` is its modification revision. One transaction may
//! give all its changes one revision (etcd) or one each, in order ([`crate::LocalStorage`]):
//! a consumer resumes "after revision R" only at the end of a revision, never inside one.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use serde_json::Value;
use tokio::sync::mpsc;

use crate::{Event, Key, Listing, Op, Scope, StoreError};

/// A boxed future (the storage contract is object-safe).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A storage result.
pub type StorageResult<T> = Result<T, StoreError>;

/// The live stream of a [`Storage::watch`]: batches of changes in revision order, never splitting
/// a revision across two batches. Live events need not carry `prev` (the watch cache fills it
/// in from its own state). The
/// stream ends when the storage closes or can no longer follow (the watcher then re-watches from
/// the last revision it saw, or relists if that is compacted).
pub type Feed = mpsc::Receiver<Batch>;

/// One step of a [`Feed`]: every change up to `revision` has now been sent. A batch may carry
/// no events (the revision changed a key that is not an object, such as a [`Storage::barrier`]'s),
/// which lets a consistent read wait for a revision.
#[derive(Debug, Default)]
pub struct Batch {
    /// The revision the feed has reached.
    pub revision: u64,
    /// The changes after the previous batch, up to `revision`.
    pub events: Vec<Arc<Event>>,
}

/// One page of a [`Storage::list`].
#[derive(Debug, Default)]
pub struct Page {
    /// The revision the page was read at (every page of one list uses the first page's).
    pub revision: u64,
    /// Objects in key order, each with `metadata.resourceVersion` its modification revision.
    pub items: Listing,
    /// Whether objects after the last one remain.
    pub more: bool,
}

/// Durable, revision-based storage of JSON objects under [`Key`]s.
///
/// `revision` arguments: `0` is "the current revision"; any other value reads the state as it
/// was at that revision, or fails with [`StoreError::Gone`] if that is before the compaction
/// point. A transaction applies all its ops or none; an op's [`crate::Precondition`] is its
/// compare (absent, present, or at exactly a modification revision); a key appears at most once
/// in a transaction. A transaction is acknowledged only once durable.
pub trait Storage: Send + Sync + 'static {
    /// The last committed revision.
    fn current_revision(&self) -> BoxFuture<'_, StorageResult<u64>>;

    /// One object at `revision`, with the revision read at.
    fn get<'a>(
        &'a self,
        key: &'a Key,
        revision: u64,
    ) -> BoxFuture<'a, StorageResult<(u64, Option<Arc<Value>>)>>;

    /// Objects in `scope` (`None`: every object) after `after`, at most `limit`, at `revision`.
    fn list<'a>(
        &'a self,
        scope: Option<&'a Scope>,
        after: Option<&'a Key>,
        limit: usize,
        revision: u64,
    ) -> BoxFuture<'a, StorageResult<Page>>;

    /// Commit `ops` atomically; the committed changes in order (without `prev`). A failed
    /// compare is [`StoreError::AlreadyExists`], [`StoreError::NotFound`] or
    /// [`StoreError::Conflict`] for the first key whose compare failed.
    fn txn(&self, ops: Vec<Op>) -> BoxFuture<'_, StorageResult<Vec<Arc<Event>>>>;

    /// Every change after revision `from`, then live ones.
    fn watch(&self, from: u64) -> BoxFuture<'_, StorageResult<Feed>>;

    /// The changes with revisions in `(from, to]`, each with the object before it (`prev`).
    fn history(&self, from: u64, to: u64) -> BoxFuture<'_, StorageResult<Vec<Arc<Event>>>>;

    /// Forget history up to `revision`: reads and watches before it get [`StoreError::Gone`].
    fn compact(&self, revision: u64) -> BoxFuture<'_, StorageResult<()>>;

    /// Whether other processes write this storage too (etcd behind several replicas): a
    /// consistent read must then first wait for the feed to pass a [`Storage::barrier`].
    fn shared(&self) -> bool {
        false
    }

    /// Commit a change that no reader sees as an object but every feed delivers in order (as
    /// a [`Batch`] at its revision); its revision. Once a feed reached it, the feed holds every
    /// change committed before the barrier. (etcd's progress notifications would do, but
    /// etcd 3.4 before 3.4.25 may send one ahead of events still queued.)
    fn barrier(&self) -> BoxFuture<'_, StorageResult<u64>> {
        self.current_revision()
    }
}
