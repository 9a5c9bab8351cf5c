//! [`Storage`] on etcd (v3 API, through `etcd-client`): for a region that outgrows one machine.
//!
//! Layout: every object under `{prefix}/` followed by its [`Key::encode`]d key (resource,
//! tenant, namespace and name joined by NUL bytes, so a scope is a key prefix and etcd's
//! byte order is the order of [`Key`]s); the value is the object's JSON without its
//! `resourceVersion`, which is the key's modification revision. A transaction is one etcd
//! transaction: all its changes share one revision.
//!
//! Errors: a request etcd cannot answer (no connection, no leader, a timeout) is
//! [`StoreError::Unavailable`] and acknowledges nothing; a read or watch before etcd's
//! compaction point is [`StoreError::Gone`]; an object over [`crate::MAX_OBJECT_BYTES`] is
//! refused before it is sent.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use etcd_client::{
    Certificate, Client, CompactionOptions, Compare, CompareOp, ConnectOptions, DeleteOptions,
    EventType as EtcdEventType, GetOptions, Identity, KeyValue, PutOptions, TlsOptions, Txn, TxnOp,
    TxnOpResponse, WatchOptions,
};
use serde_json::Value;
use tokio::sync::mpsc;

use crate::storage::{Batch, BoxFuture, Feed, Page, Storage, StorageResult};
use crate::{check, set_rv, Event, EventType, Key, Op, Precondition, Scope, StoreError};

/// How to reach an etcd cluster.
#[derive(Clone, Debug, Default)]
pub struct EtcdConfig {
    /// Client URLs (`http://host:2379` or `https://…`).
    pub endpoints: Vec<String>,
    /// CA bundle that signed the members' serving certificates (PEM).
    pub ca_file: Option<std::path::PathBuf>,
    /// Client certificate (PEM), with [`EtcdConfig::key_file`].
    pub cert_file: Option<std::path::PathBuf>,
    /// Client key (PEM).
    pub key_file: Option<std::path::PathBuf>,
    /// Key prefix of this region's objects (`/atoll`).
    pub prefix: String,
}

/// Why an etcd configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum EtcdConfigError {
    /// No endpoint, or one that is not a URL.
    #[error("--etcd-servers: {0}")]
    Endpoints(String),
    /// A TLS file could not be read.
    #[error("{0}: {1}")]
    File(std::path::PathBuf, std::io::Error),
    /// The prefix does not start with `/`, or ends with one.
    #[error("--etcd-prefix {0:?}: a prefix starts with / and does not end with one (/atoll)")]
    Prefix(String),
    /// The client could not be set up.
    #[error("etcd client: {0}")]
    Client(String),
}

/// An etcd client URL: `http://` or `https://`, a host and a port.
pub fn check_endpoint(url: &str) -> Result<(), EtcdConfigError> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .ok_or_else(|| {
            EtcdConfigError::Endpoints(format!("{url:?} is not an http:// or https:// URL"))
        })?;
    match rest.trim_end_matches('/').rsplit_once(':') {
        Some((h, p)) if !h.is_empty() && p.parse::<u16>().is_ok() => Ok(()),
        _ => Err(EtcdConfigError::Endpoints(format!(
            "{url:?} needs a host and a port (http://127.0.0.1:2379)"
        ))),
    }
}

/// A key prefix: starts with `/`, is more than that, does not end with `/`.
pub fn check_prefix(prefix: &str) -> Result<(), EtcdConfigError> {
    if prefix.len() > 1
        && prefix.starts_with('/')
        && !prefix.ends_with('/')
        && !prefix.contains('\0')
    {
        Ok(())
    } else {
        Err(EtcdConfigError::Prefix(prefix.to_string()))
    }
}

/// Requests etcd has not answered within this are failed (503 at the API).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a history read waits for etcd to replay up to its barrier.
const HISTORY_TIMEOUT: Duration = Duration::from_secs(30);
/// Objects per range request while listing.
const RANGE_PAGE: usize = 1_000;

/// Storage on an etcd cluster.
pub struct EtcdStorage {
    client: Client,
    /// `{prefix}/`.
    root: Vec<u8>,
    /// The highest compaction point seen (ours or reported by etcd), for error messages.
    compacted: AtomicU64,
    /// This storage's identity in the process (a fence applies to the storage it was won on).
    id: u64,
}

/// The next [`EtcdStorage`]'s identity.
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// The barrier key under the root: `0xff` starts no encoded object key (no UTF-8 byte is 0xff),
/// so it and the leader keys (`0xff leader/NAME`) are in the feed's range and in no list.
const BARRIER: &[u8] = b"\xffbarrier";
const LEADER: &[u8] = b"\xffleader/";
/// The region's tenant partitions in position order (a JSON list of names).
const PARTITIONS: &[u8] = b"\xffpartitions";

/// How long a leader's lease lives without a keep-alive: another replica takes over within
/// about this much after a leader dies.
pub const LEADER_TTL: Duration = Duration::from_secs(10);

/// A term as leader: ends (`lost` completes) when the lease can no longer be kept alive or
/// another holder is seen; dropping it resigns.
pub struct Term {
    lost: tokio::sync::watch::Receiver<bool>,
    task: tokio::task::JoinHandle<()>,
    fence: Fence,
}

impl Term {
    /// Completes when the term is over.
    pub async fn lost(&mut self) {
        let _ = self.lost.wait_for(|l| *l).await;
    }

    /// This term's fence: writes made under it (see [`fenced`]) commit only while the term's
    /// leader key is still the one this term created.
    pub fn fence(&self) -> Fence {
        self.fence.clone()
    }
}

/// A leader's fencing token: its leader key and the revision that created it. Every etcd
/// transaction made under it (in a task run by [`fenced`]) also compares the key's creation
/// revision, so a deposed leader that has not noticed yet (a pause, a partition) commits
/// nothing after another replica took over.
#[derive(Clone, Debug)]
pub struct Fence {
    key: Vec<u8>,
    created: i64,
    /// The storage the term was won on: writes to other storages (another partition's etcd
    /// cluster, where the leader key does not live) are not fenced.
    storage: u64,
}

tokio::task_local! {
    static FENCE: Fence;
}

/// Run `f` with its etcd writes fenced by `fence` (none: as it is).
pub async fn fenced<F: std::future::Future>(fence: Option<Fence>, f: F) -> F::Output {
    match fence {
        Some(fence) => FENCE.scope(fence, f).await,
        None => f.await,
    }
}

impl Drop for Term {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl EtcdStorage {
    /// Connect (lazily: an unreachable cluster fails requests, not this) to `config`.
    pub async fn connect(config: &EtcdConfig) -> Result<Self, EtcdConfigError> {
        if config.endpoints.is_empty() {
            return Err(EtcdConfigError::Endpoints("no endpoint given".into()));
        }
        for e in &config.endpoints {
            check_endpoint(e)?;
        }
        let p = &config.prefix;
        check_prefix(p)?;
        let read = |f: &std::path::Path| {
            std::fs::read(f).map_err(|e| EtcdConfigError::File(f.to_path_buf(), e))
        };
        let mut opts = ConnectOptions::new()
            .with_timeout(REQUEST_TIMEOUT)
            .with_connect_timeout(Duration::from_secs(3))
            .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5))
            .with_require_leader(true);
        if config.ca_file.is_some() || config.cert_file.is_some() {
            let mut tls = TlsOptions::new();
            if let Some(ca) = &config.ca_file {
                tls = tls.ca_certificate(Certificate::from_pem(read(ca)?));
            }
            match (&config.cert_file, &config.key_file) {
                (Some(c), Some(k)) => tls = tls.identity(Identity::from_pem(read(c)?, read(k)?)),
                (None, None) => {}
                _ => {
                    return Err(EtcdConfigError::Client(
                        "--etcd-certfile and --etcd-keyfile go together".into(),
                    ))
                }
            }
            opts = opts.with_tls(tls);
        }
        let client = Client::connect(&config.endpoints, Some(opts))
            .await
            .map_err(|e| EtcdConfigError::Client(e.to_string()))?;
        let mut root = p.as_bytes().to_vec();
        root.push(b'/');
        Ok(EtcdStorage {
            client,
            root,
            compacted: AtomicU64::new(0),
            id: NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        })
    }

    fn etcd_key(&self, key: &Key) -> Vec<u8> {
        let mut k = self.root.clone();
        k.extend_from_slice(&key.encode());
        k
    }

    /// The object key of an etcd key under the root (`None`: not one of ours).
    fn object_key(&self, k: &[u8]) -> Option<Key> {
        Key::decode(k.strip_prefix(self.root.as_slice())?)
    }

    /// `[from, to)` of the etcd keys in `scope` (`None`: every object), and whether keys in it
    /// still need [`Scope::contains`].
    fn bounds(&self, scope: Option<&Scope>) -> (Vec<u8>, Vec<u8>, bool) {
        let mut from = self.root.clone();
        let Some(s) = scope else {
            // Every object key; the barrier (0xff…) sorts after them.
            let mut to = self.root.clone();
            to.push(0xff);
            return (from, to, false);
        };
        let (prefix, filter) = s.encoded_prefix();
        from.extend_from_slice(&prefix);
        let mut to = from.clone();
        to.push(0xff);
        (from, to, filter)
    }

    fn err(&self, e: etcd_client::Error, requested: u64) -> StoreError {
        to_store_error(e, requested, self.compacted.load(Ordering::Relaxed))
    }

    fn decode(&self, kv: &KeyValue) -> StorageResult<(Key, Value)> {
        let key = self
            .object_key(kv.key())
            .ok_or_else(|| corrupt(format!("etcd key {:?}", String::from_utf8_lossy(kv.key()))))?;
        let mut v: Value = serde_json::from_slice(kv.value())
            .map_err(|e| corrupt(format!("{}: {e}", String::from_utf8_lossy(kv.key()))))?;
        set_rv(&mut v, rev_of(kv.mod_revision()));
        Ok((key, v))
    }
}

fn corrupt(m: String) -> StoreError {
    StoreError::Backend(crate::BackendError::Corrupt(m))
}

fn rev_of(r: i64) -> u64 {
    u64::try_from(r).unwrap_or(0)
}

fn rev_arg(r: u64) -> i64 {
    i64::try_from(r).unwrap_or(i64::MAX)
}

/// What a failed etcd request means to a caller.
fn to_store_error(e: etcd_client::Error, requested: u64, compacted: u64) -> StoreError {
    use etcd_client::Error as E;
    match e {
        E::GRpcStatus(s) => {
            let m = s.message();
            if m.contains("required revision has been compacted") {
                StoreError::Gone {
                    requested,
                    oldest: compacted.max(requested + 1),
                }
            } else if m.contains("request is too large") {
                StoreError::TooLarge {
                    size: 0,
                    limit: crate::MAX_OBJECT_BYTES,
                }
            } else {
                match s.code() {
                    tonic::Code::Unavailable
                    | tonic::Code::DeadlineExceeded
                    | tonic::Code::Cancelled
                    | tonic::Code::Unknown => StoreError::Unavailable(format!("etcd: {m}")),
                    _ => StoreError::Backend(crate::BackendError::Remote(format!("etcd: {m}"))),
                }
            }
        }
        E::TransportError(t) => StoreError::Unavailable(format!("etcd: {t}")),
        E::IoError(io) => StoreError::Unavailable(format!("etcd: {io}")),
        E::WatchError(w) => StoreError::Unavailable(format!("etcd watch: {w}")),
        other => StoreError::Backend(crate::BackendError::Remote(format!("etcd: {other}"))),
    }
}

/// The object bytes etcd keeps for `value`: its JSON without `resourceVersion`.
/// (`value`'s own resourceVersion is dropped in place: the commit sets the new one.)
fn encode_value(key: &Key, value: &mut Value) -> StorageResult<Vec<u8>> {
    if let Some(m) = value.get_mut("metadata").and_then(Value::as_object_mut) {
        m.remove("resourceVersion");
    }
    let bytes = serde_json::to_vec(value).map_err(|e| corrupt(format!("{key:?}: {e}")))?;
    if bytes.len() > crate::MAX_OBJECT_BYTES {
        return Err(StoreError::TooLarge {
            size: bytes.len(),
            limit: crate::MAX_OBJECT_BYTES,
        });
    }
    Ok(bytes)
}

impl Storage for EtcdStorage {
    fn current_revision(&self) -> BoxFuture<'_, StorageResult<u64>> {
        Box::pin(async move {
            let mut c = self.client.clone();
            let r = c
                .get(self.root.clone(), Some(GetOptions::new().with_count_only()))
                .await
                .map_err(|e| self.err(e, 0))?;
            Ok(r.header().map(|h| rev_of(h.revision())).unwrap_or(0))
        })
    }

    fn get<'a>(
        &'a self,
        key: &'a Key,
        revision: u64,
    ) -> BoxFuture<'a, StorageResult<(u64, Option<Arc<Value>>)>> {
        Box::pin(async move {
            let mut c = self.client.clone();
            let mut opts = GetOptions::new();
            if revision > 0 {
                opts = opts.with_revision(rev_arg(revision));
            }
            let r = c
                .get(self.etcd_key(key), Some(opts))
                .await
                .map_err(|e| self.err(e, revision))?;
            let at = r.header().map(|h| rev_of(h.revision())).unwrap_or(0);
            let at = if revision > 0 { revision } else { at };
            match r.kvs().first() {
                Some(kv) => Ok((at, Some(Arc::new(self.decode(kv)?.1)))),
                None => Ok((at, None)),
            }
        })
    }

    fn list<'a>(
        &'a self,
        scope: Option<&'a Scope>,
        after: Option<&'a Key>,
        limit: usize,
        revision: u64,
    ) -> BoxFuture<'a, StorageResult<Page>> {
        Box::pin(async move {
            let (mut from, to, filter) = self.bounds(scope);
            if let Some(a) = after {
                let mut k = self.etcd_key(a);
                k.push(0);
                if k > from {
                    from = k;
                }
            }
            let mut page = Page {
                revision,
                ..Page::default()
            };
            let mut c = self.client.clone();
            loop {
                let want = if filter {
                    RANGE_PAGE
                } else {
                    limit.clamp(1, RANGE_PAGE)
                };
                let mut opts = GetOptions::new()
                    .with_range(to.clone())
                    .with_limit(i64::try_from(want).unwrap_or(i64::MAX));
                if page.revision > 0 {
                    opts = opts.with_revision(rev_arg(page.revision));
                }
                let r = c
                    .get(from.clone(), Some(opts))
                    .await
                    .map_err(|e| self.err(e, page.revision))?;
                if page.revision == 0 {
                    page.revision = r.header().map(|h| rev_of(h.revision())).unwrap_or(0);
                }
                let more = r.more();
                let mut last = None;
                for kv in r.kvs() {
                    last = Some(kv.key().to_vec());
                    let (k, v) = self.decode(kv)?;
                    if filter && !scope.is_some_and(|s| s.contains(&k)) {
                        continue;
                    }
                    if page.items.len() == limit {
                        page.more = true;
                        return Ok(page);
                    }
                    page.items.push((k, Arc::new(v)));
                }
                match last {
                    Some(mut l) if more => {
                        l.push(0);
                        from = l;
                    }
                    _ => return Ok(page),
                }
                if page.items.len() == limit {
                    page.more = true;
                    return Ok(page);
                }
            }
        })
    }

    fn txn(&self, ops: Vec<Op>) -> BoxFuture<'_, StorageResult<Vec<Arc<Event>>>> {
        Box::pin(async move {
            let mut compares = Vec::new();
            let mut then = Vec::with_capacity(ops.len());
            let mut otherwise = Vec::new();
            // For each op: its key, its precondition, and its new value (for the events).
            let mut plan = Vec::with_capacity(ops.len());
            for op in ops {
                let (key, pre, value) = match op {
                    Op::Put { key, value, pre } => (key, pre, Some(value)),
                    Op::Delete { key, pre } => (key, pre, None),
                };
                let k = self.etcd_key(&key);
                let compare = match pre {
                    Precondition::Absent => Some(Compare::version(k.clone(), CompareOp::Equal, 0)),
                    Precondition::Exists => {
                        Some(Compare::version(k.clone(), CompareOp::Greater, 0))
                    }
                    Precondition::Version(v) => Some(Compare::mod_revision(
                        k.clone(),
                        CompareOp::Equal,
                        rev_arg(v),
                    )),
                    Precondition::Any => None,
                };
                if let Some(c) = compare {
                    compares.push(c);
                    otherwise.push(TxnOp::get(k.clone(), None));
                }
                let value = match value {
                    Some(mut v) => {
                        let bytes = encode_value(&key, &mut v)?;
                        // Added or Modified follows from the compare, but for an upsert
                        // (only then is the previous value asked for).
                        let opts = match pre {
                            Precondition::Any => Some(PutOptions::new().with_prev_key()),
                            _ => None,
                        };
                        then.push(TxnOp::put(k, bytes, opts));
                        Some(v)
                    }
                    None => {
                        then.push(TxnOp::delete(k, Some(DeleteOptions::new().with_prev_key())));
                        None
                    }
                };
                plan.push((key, pre, value));
            }
            // A leader's write: only while its leader key is the one its term created.
            let fence = FENCE
                .try_with(Fence::clone)
                .ok()
                .filter(|f| f.storage == self.id);
            if let Some(f) = &fence {
                compares.push(Compare::create_revision(
                    f.key.clone(),
                    CompareOp::Equal,
                    f.created,
                ));
                otherwise.push(TxnOp::get(f.key.clone(), None));
            }
            let mut c = self.client.clone();
            let txn = Txn::new().when(compares).and_then(then).or_else(otherwise);
            let r = c.txn(txn).await.map_err(|e| self.err(e, 0))?;
            let responses = r.op_responses();
            if !r.succeeded() {
                if let (Some(f), Some(TxnOpResponse::Get(g))) = (&fence, responses.last()) {
                    if g.kvs().first().map(|kv| kv.create_revision()) != Some(f.created) {
                        return Err(StoreError::Unavailable(
                            "this replica's term as leader is over; another replica leads".into(),
                        ));
                    }
                }
                // Name the first key whose compare failed, as the local storage does.
                let mut gets = responses.into_iter();
                for (key, pre, _) in &plan {
                    if matches!(pre, Precondition::Any) {
                        continue;
                    }
                    let current = match gets.next() {
                        Some(TxnOpResponse::Get(g)) => {
                            g.kvs().first().map(|kv| rev_of(kv.mod_revision()))
                        }
                        _ => None,
                    };
                    check(*pre, current, key)?;
                }
                // Every compare held on its own read: the state moved between them.
                return match plan.into_iter().next() {
                    Some((k, _, _)) => Err(StoreError::Conflict(k)),
                    None => Ok(Vec::new()),
                };
            }
            let rev = r.header().map(|h| rev_of(h.revision())).unwrap_or(0);
            let mut events = Vec::with_capacity(plan.len());
            for ((key, pre, value), resp) in plan.into_iter().zip(responses) {
                match (value, resp) {
                    (Some(mut v), TxnOpResponse::Put(p)) => {
                        set_rv(&mut v, rev);
                        let existed = match pre {
                            Precondition::Absent => false,
                            Precondition::Exists | Precondition::Version(_) => true,
                            Precondition::Any => p.prev_key().is_some(),
                        };
                        events.push(Arc::new(Event {
                            rv: rev,
                            part: 0,
                            kind: if existed {
                                EventType::Modified
                            } else {
                                EventType::Added
                            },
                            key,
                            object: Arc::new(v),
                            prev: None,
                        }));
                    }
                    (None, TxnOpResponse::Delete(d)) => {
                        // Deleting what is not there (Precondition::Any) changes nothing.
                        let Some(kv) = d.prev_kvs().first() else {
                            continue;
                        };
                        let mut last = self.decode(kv)?.1;
                        set_rv(&mut last, rev);
                        events.push(Arc::new(Event {
                            rv: rev,
                            part: 0,
                            kind: EventType::Deleted,
                            key,
                            object: Arc::new(last),
                            prev: None,
                        }));
                    }
                    _ => return Err(corrupt("etcd answered a transaction out of order".into())),
                }
            }
            Ok(events)
        })
    }

    fn watch(&self, from: u64) -> BoxFuture<'_, StorageResult<Feed>> {
        Box::pin(async move {
            let (tx, rx) = mpsc::channel(64);
            // The cache keeps the previous state itself: etcd need not read and send it.
            let mut stream = self.open_watch(from, false).await?;
            let root = self.root.clone();
            tokio::spawn(async move {
                loop {
                    let resp = tokio::select! {
                        r = stream.1.message() => r,
                        _ = tx.closed() => break,
                    };
                    let resp = match resp {
                        Ok(Some(r)) => r,
                        Ok(None) => break,
                        Err(e) => {
                            tracing::warn!(error = %e, "etcd watch ended");
                            break;
                        }
                    };
                    if resp.canceled() || resp.compact_revision() > 0 {
                        tracing::warn!(
                            compacted = resp.compact_revision(),
                            reason = resp.cancel_reason(),
                            "etcd canceled the watch"
                        );
                        break;
                    }
                    // The feed reaches the newest event's revision, barriers and skipped keys
                    // included. Responses without events (progress) are not trusted: etcd
                    // 3.4.23 may send one ahead of queued events.
                    let Some(kv) = resp.events().iter().rev().find_map(|e| e.kv()) else {
                        continue;
                    };
                    let revision = rev_of(kv.mod_revision());
                    let events = convert_events(&root, resp.events());
                    if tx.send(Batch { revision, events }).await.is_err() {
                        break;
                    }
                }
                let _ = stream.0.cancel().await;
            });
            Ok(rx)
        })
    }

    fn history(&self, from: u64, to: u64) -> BoxFuture<'_, StorageResult<Vec<Arc<Event>>>> {
        Box::pin(async move {
            let mut out = Vec::new();
            if to <= from {
                return Ok(out);
            }
            let (mut watcher, mut stream) = self.open_watch(from, true).await?;
            // Everything up to `to` has been replayed once the watch delivers a barrier set
            // after it.
            let fence = match self.barrier().await {
                Ok(f) => f,
                Err(e) => {
                    let _ = watcher.cancel().await;
                    return Err(e);
                }
            };
            let result = tokio::time::timeout(HISTORY_TIMEOUT, async {
                loop {
                    let resp = match stream.message().await {
                        Ok(Some(r)) => r,
                        Ok(None) => {
                            return Err(StoreError::Unavailable("etcd watch closed".into()))
                        }
                        Err(e) => return Err(self.err(e, from)),
                    };
                    if resp.compact_revision() > 0 {
                        let c = rev_of(resp.compact_revision());
                        self.compacted.fetch_max(c, Ordering::Relaxed);
                        return Err(StoreError::Gone {
                            requested: from,
                            oldest: c,
                        });
                    }
                    if resp.canceled() {
                        return Err(StoreError::Unavailable(format!(
                            "etcd canceled the watch: {}",
                            resp.cancel_reason()
                        )));
                    }
                    out.extend(
                        convert_events(&self.root, resp.events())
                            .into_iter()
                            .filter(|e| e.rv <= to),
                    );
                    let reached = resp
                        .events()
                        .iter()
                        .filter_map(|e| e.kv())
                        .any(|kv| rev_of(kv.mod_revision()) >= fence);
                    if reached {
                        return Ok(());
                    }
                }
            })
            .await
            .unwrap_or_else(|_| {
                Err(StoreError::Unavailable(
                    "etcd did not replay the history in time".into(),
                ))
            });
            let _ = watcher.cancel().await;
            result.map(|()| out)
        })
    }

    fn shared(&self) -> bool {
        true
    }

    fn barrier(&self) -> BoxFuture<'_, StorageResult<u64>> {
        Box::pin(async move {
            let mut key = self.root.clone();
            key.extend_from_slice(BARRIER);
            let mut c = self.client.clone();
            let r = c
                .put(key, Vec::new(), None)
                .await
                .map_err(|e| self.err(e, 0))?;
            Ok(r.header().map(|h| rev_of(h.revision())).unwrap_or(0))
        })
    }

    fn compact(&self, revision: u64) -> BoxFuture<'_, StorageResult<()>> {
        Box::pin(async move {
            if revision == 0 {
                return Ok(());
            }
            let mut c = self.client.clone();
            match c
                .compact(
                    rev_arg(revision),
                    Some(CompactionOptions::new().with_physical()),
                )
                .await
            {
                Ok(_) => {}
                Err(e) => match self.err(e, revision) {
                    // Compacted already (by another replica): nothing to do.
                    StoreError::Gone { .. } => {}
                    other => return Err(other),
                },
            }
            self.compacted.fetch_max(revision, Ordering::Relaxed);
            Ok(())
        })
    }
}

type WatchPair = (etcd_client::Watcher, etcd_client::WatchStream);

impl EtcdStorage {
    /// The order of the region's tenant partitions, as recorded in this (the system) cluster:
    /// a merged resourceVersion is positional (`R0.R1...`), so every replica and every restart
    /// must agree on it whatever order `--partition` flags come in. The first start records
    /// `given`; later starts get the recorded order with partitions new in `given` appended
    /// (and recorded). A recorded partition missing from `given` is refused: tenants live
    /// there.
    pub async fn partition_order(&self, given: &[String]) -> StorageResult<Vec<String>> {
        let mut key = self.root.clone();
        key.extend_from_slice(PARTITIONS);
        let mut c = self.client.clone();
        loop {
            let r = c.get(key.clone(), None).await.map_err(|e| self.err(e, 0))?;
            let (stored, rev): (Vec<String>, i64) = match r.kvs().first() {
                None => (Vec::new(), 0),
                Some(kv) => (
                    serde_json::from_slice(kv.value()).map_err(|e| {
                        corrupt(format!("the recorded partition order does not decode: {e}"))
                    })?,
                    kv.mod_revision(),
                ),
            };
            let missing: Vec<&String> = stored.iter().filter(|n| !given.contains(n)).collect();
            if !missing.is_empty() {
                return Err(StoreError::Invalid(format!(
                    "the region's partitions are {stored:?}; {missing:?} not given (its tenants live there): pass every recorded partition"
                )));
            }
            let mut order = stored.clone();
            order.extend(given.iter().filter(|n| !stored.contains(n)).cloned());
            if order == stored {
                return Ok(order);
            }
            let value = serde_json::to_vec(&order).unwrap_or_default();
            let txn = Txn::new()
                .when([Compare::mod_revision(key.clone(), CompareOp::Equal, rev)])
                .and_then([TxnOp::put(key.clone(), value, None)]);
            if c.txn(txn).await.map_err(|e| self.err(e, 0))?.succeeded() {
                return Ok(order);
            }
            // Another replica recorded first: read again.
        }
    }
}

impl EtcdStorage {
    /// Become the holder of leadership `name` (as `holder`), waiting while another holds it:
    /// a key under a lease of [`LEADER_TTL`], created only if absent. The term lasts while the
    /// lease is kept alive; a holder that dies loses it when the lease expires.
    pub async fn campaign(&self, name: &str, holder: &str) -> StorageResult<Term> {
        let mut key = self.root.clone();
        key.extend_from_slice(LEADER);
        key.extend_from_slice(name.as_bytes());
        let ttl = i64::try_from(LEADER_TTL.as_secs()).unwrap_or(10);
        let mut c = self.client.clone();
        loop {
            let lease = c
                .lease_grant(ttl, None)
                .await
                .map_err(|e| self.err(e, 0))?
                .id();
            let txn = Txn::new()
                .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
                .and_then([TxnOp::put(
                    key.clone(),
                    holder.as_bytes().to_vec(),
                    Some(PutOptions::new().with_lease(lease)),
                )]);
            let r = c.txn(txn).await.map_err(|e| self.err(e, 0))?;
            if r.succeeded() {
                // The key was created by this transaction: its creation revision is the
                // transaction's.
                let fence = Fence {
                    key: key.clone(),
                    created: r.header().map_or(0, |h| h.revision()),
                    storage: self.id,
                };
                let (keeper, stream) = c
                    .lease_keep_alive(lease)
                    .await
                    .map_err(|e| self.err(e, 0))?;
                let (tx, lost) = tokio::sync::watch::channel(false);
                let task = tokio::spawn(keep_alive(c.clone(), lease, keeper, stream, tx));
                tracing::info!(name, holder, "leader");
                return Ok(Term { lost, task, fence });
            }
            let _ = c.lease_revoke(lease).await;
            // Someone holds it: try again when its key goes (or a while later, whatever
            // happens to the watch).
            let (mut w, mut stream) = c
                .watch(key.clone(), None)
                .await
                .map_err(|e| self.err(e, 0))?;
            let _ = tokio::time::timeout(LEADER_TTL, async {
                while let Ok(Some(resp)) = stream.message().await {
                    if resp
                        .events()
                        .iter()
                        .any(|e| e.event_type() == EtcdEventType::Delete)
                    {
                        return;
                    }
                }
            })
            .await;
            let _ = w.cancel().await;
        }
    }
}

/// Keep a leader's lease alive at a third of its TTL; report the term lost when etcd says the
/// lease is gone, or when no keep-alive has been answered for the TTL; revoke it on the way
/// out (a resigning leader frees the key at once).
async fn keep_alive(
    mut c: Client,
    lease: i64,
    mut keeper: etcd_client::LeaseKeeper,
    mut stream: etcd_client::LeaseKeepAliveStream,
    lost: tokio::sync::watch::Sender<bool>,
) {
    struct Revoke(Option<(Client, i64)>);
    impl Drop for Revoke {
        fn drop(&mut self) {
            if let Some((mut c, lease)) = self.0.take() {
                if let Ok(rt) = tokio::runtime::Handle::try_current() {
                    rt.spawn(async move {
                        let _ = c.lease_revoke(lease).await;
                    });
                }
            }
        }
    }
    let _revoke = Revoke(Some((c.clone(), lease)));
    let mut answered = tokio::time::Instant::now();
    let mut tick = tokio::time::interval(LEADER_TTL / 3);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                if answered.elapsed() >= LEADER_TTL || keeper.keep_alive().await.is_err() {
                    break;
                }
            }
            m = stream.message() => match m {
                Ok(Some(r)) if r.ttl() > 0 => answered = tokio::time::Instant::now(),
                Ok(Some(_)) => break,
                // The stream broke: open another while the lease may still be alive.
                _ => match c.lease_keep_alive(lease).await {
                    Ok((k, s)) => {
                        keeper = k;
                        stream = s;
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
                },
            },
        }
    }
    tracing::warn!("leadership lost");
    let _ = lost.send(true);
}

impl EtcdStorage {
    /// A watch of every object after revision `from` (with previous values when `prev`); a
    /// `from` before the compaction point is [`StoreError::Gone`] here, not a canceled stream
    /// later.
    async fn open_watch(&self, from: u64, prev: bool) -> StorageResult<WatchPair> {
        let mut c = self.client.clone();
        if from > 0 {
            // A read at `from` fails exactly when `from` is compacted.
            c.get(
                self.root.clone(),
                Some(
                    GetOptions::new()
                        .with_count_only()
                        .with_revision(rev_arg(from)),
                ),
            )
            .await
            .map_err(|e| self.err(e, from))?;
        }
        // The whole prefix: the objects and the barrier.
        let from_key = self.root.clone();
        let mut to_key = self.root.clone();
        if let Some(last) = to_key.last_mut() {
            *last += 1;
        }
        let mut opts = WatchOptions::new()
            .with_range(to_key)
            .with_start_revision(rev_arg(from + 1));
        if prev {
            opts = opts.with_prev_key();
        }
        c.watch(from_key, Some(opts))
            .await
            .map_err(|e| self.err(e, from))
    }
}

/// etcd's events as the store's, in order; keys that are not objects are skipped.
fn convert_events(root: &[u8], events: &[etcd_client::Event]) -> Vec<Arc<Event>> {
    let mut out = Vec::with_capacity(events.len());
    for e in events {
        let Some(kv) = e.kv() else { continue };
        let own = kv.key().strip_prefix(root);
        // The barrier and leader keys.
        if own.is_some_and(|k| k.first() == Some(&0xff)) {
            continue;
        }
        let Some(key) = own.and_then(Key::decode) else {
            tracing::warn!(key = %String::from_utf8_lossy(kv.key()), "skipping a foreign etcd key");
            continue;
        };
        let rv = rev_of(kv.mod_revision());
        let parse = |bytes: &[u8]| -> Option<Value> {
            match serde_json::from_slice::<Value>(bytes) {
                Ok(v) => Some(v),
                Err(err) => {
                    tracing::error!(key = ?key, error = %err, "undecodable object in etcd");
                    None
                }
            }
        };
        let prev = e.prev_kv().and_then(|p| {
            let mut v = parse(p.value())?;
            set_rv(&mut v, rev_of(p.mod_revision()));
            Some(Arc::new(v))
        });
        let ev = match e.event_type() {
            EtcdEventType::Put => {
                let Some(mut v) = parse(kv.value()) else {
                    continue;
                };
                set_rv(&mut v, rv);
                Event {
                    rv,
                    part: 0,
                    kind: if kv.version() == 1 {
                        EventType::Added
                    } else {
                        EventType::Modified
                    },
                    key,
                    object: Arc::new(v),
                    prev,
                }
            }
            EtcdEventType::Delete => {
                let object = match &prev {
                    Some(p) => {
                        let mut last = (**p).clone();
                        set_rv(&mut last, rv);
                        Arc::new(last)
                    }
                    // The cache fills the last state in from its own copy.
                    None => Arc::new(Value::Null),
                };
                Event {
                    rv,
                    part: 0,
                    kind: EventType::Deleted,
                    key,
                    object,
                    prev,
                }
            }
        };
        out.push(Arc::new(ev));
    }
    out
}
