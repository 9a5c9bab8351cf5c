//! The share tracker: one task follows every store event in version order and keeps, per
//! site, the keys the site needs (its nodes, the pods bound to them or placed on it, and what
//! those pods reference: namespace, tenant, service account, configmaps, secrets; the tokens of
//! those tenants; the objects the site created), refcounted, plus a bounded log of downlink
//! batches. A reconnecting site whose version is still in its log gets exactly the missed
//! batches; otherwise a snapshot. It also publishes which tenants each site serves.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use proto::sync::{Change, ChangeKind, ObjectKey};
use proto::{origin, SITE_LABEL};
use serde_json::{json, Value};
use store::{Event, EventType, Key, Store};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

/// Most downlink changes kept per site for resuming.
const LOG_LIMIT: usize = 100_000;

fn obj_key(k: &Key) -> ObjectKey {
    ObjectKey {
        resource: k.resource.clone(),
        tenant: k.tenant.clone(),
        namespace: k.namespace.clone(),
        name: k.name.clone(),
    }
}

fn put(k: &Key, v: &Value) -> Change {
    Change {
        kind: ChangeKind::Put as i32,
        key: Some(obj_key(k)),
        object: serde_json::to_vec(v).unwrap_or_default(),
    }
}

/// A deletion; `last` (the object's last version) lends it the uid, so a site deletes its own
/// copy only if it is the same object (not one recreated meanwhile).
fn del(k: &Key, last: Option<&Value>) -> Change {
    let object = last
        .and_then(|v| v.pointer("/metadata/uid"))
        .map(|uid| serde_json::to_vec(&json!({"metadata": {"uid": uid}})).unwrap_or_default())
        .unwrap_or_default();
    Change {
        kind: ChangeKind::Delete as i32,
        key: Some(obj_key(k)),
        object,
    }
}

/// What the cloud owns of a node: spec, labels and annotations (status is the site's).
fn node_cloud_part(v: &Value) -> (Option<&Value>, Option<&Value>, Option<&Value>) {
    (
        v.get("spec"),
        v.pointer("/metadata/labels"),
        v.pointer("/metadata/annotations"),
    )
}

/// Whether a change of an object `site` created must go down to it: the cloud changed its
/// part of the site's node, or asked for the object's deletion. (Its creation does not: the
/// site has what it sent.)
fn owned_change_goes_down(key: &Key, prev: Option<&Value>, now: &Value) -> bool {
    let asked = |v: &Value| v.pointer("/metadata/deletionTimestamp").is_some();
    let Some(prev) = prev else {
        return false;
    };
    (key.resource == "nodes" && node_cloud_part(prev) != node_cloud_part(now))
        || (asked(now) && !asked(prev))
}

/// Whether a site created `v` and the cloud has something to tell it about it (its node's
/// cloud part, a deletion request): such objects are sent to their site too.
fn owned_goes_down(key: &Key, v: &Value) -> bool {
    key.resource == "nodes" || v.pointer("/metadata/deletionTimestamp").is_some()
}

/// The keys a pod needs at its site (itself included). A pod a site created pulls in only its
/// namespace and tenant: what it references (configmaps, secrets, service accounts) reaches
/// the site only if the site created it too or holds it for a pod of the cloud's, so a site
/// cannot fetch the cloud's objects by naming them in a pod of its own.
pub fn pod_refs(key: &Key, pod: &Value) -> Vec<Key> {
    let (t, ns) = (key.tenant.as_str(), key.namespace.as_str());
    let mut out = vec![key.clone(), Key::new("namespaces", t, "", ns)];
    if !t.is_empty() {
        out.push(Key::new("tenants", "", "", t));
    }
    if origin(pod).is_some() {
        return out;
    }
    let sa = pod
        .pointer("/spec/serviceAccountName")
        .and_then(Value::as_str)
        .unwrap_or("default");
    out.push(Key::new("serviceaccounts", t, ns, sa));
    let mut add = |res: &str, name: Option<&str>| {
        if let Some(n) = name.filter(|n| !n.is_empty()) {
            let k = Key::new(res, t, ns, n);
            if !out.contains(&k) {
                out.push(k);
            }
        }
    };
    let s = |v: &Value, p: &str| v.pointer(p).and_then(Value::as_str).map(String::from);
    let spec = pod.get("spec").cloned().unwrap_or(Value::Null);
    for v in spec
        .get("volumes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        add("configmaps", s(v, "/configMap/name").as_deref());
        add("secrets", s(v, "/secret/secretName").as_deref());
        for src in v
            .pointer("/projected/sources")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            add("configmaps", s(src, "/configMap/name").as_deref());
            add("secrets", s(src, "/secret/name").as_deref());
        }
    }
    for list in ["containers", "initContainers"] {
        for c in spec
            .get(list)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            for e in c.get("env").and_then(Value::as_array).into_iter().flatten() {
                add(
                    "configmaps",
                    s(e, "/valueFrom/configMapKeyRef/name").as_deref(),
                );
                add("secrets", s(e, "/valueFrom/secretKeyRef/name").as_deref());
            }
            for e in c
                .get("envFrom")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                add("configmaps", s(e, "/configMapRef/name").as_deref());
                add("secrets", s(e, "/secretRef/name").as_deref());
            }
        }
    }
    for p in spec
        .get("imagePullSecrets")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        add("secrets", s(p, "/name").as_deref());
    }
    out
}

/// What a subscribing session gets.
pub enum Start {
    /// Changes after the site's version follow in its log.
    Resume,
    /// The whole share at `rv`; changes after it follow in the log.
    Snapshot(u64, Vec<Change>),
}

type Batch = (u64, Arc<Vec<Change>>);

struct Subscribe {
    site: String,
    applied_rv: u64,
    reply: oneshot::Sender<(Start, Arc<SiteLog>)>,
}

/// Why a session cannot read on from the log.
#[derive(Debug, PartialEq)]
pub enum LogGap {
    /// The position was evicted (the site was away too long): it must resync by snapshot.
    Evicted,
    /// The tracker was rebuilt; this log is dead.
    Closed,
}

#[derive(Default)]
struct LogInner {
    entries: VecDeque<Batch>,
    changes: usize,
    /// Every batch with a version above `start` is in `entries`.
    start: u64,
    closed: bool,
}

/// A site's downlink log: appended by the tracker, read (pulled) by the site's session, so a
/// slow site never blocks the tracker and never silently misses a batch.
#[derive(Default)]
pub struct SiteLog {
    inner: Mutex<LogInner>,
    /// Woken on every append (and when the log is closed).
    pub notify: tokio::sync::Notify,
}

impl SiteLog {
    fn new(start: u64) -> Self {
        SiteLog {
            inner: Mutex::new(LogInner {
                start,
                ..Default::default()
            }),
            notify: tokio::sync::Notify::new(),
        }
    }

    fn append(&self, b: Batch) {
        if let Ok(mut l) = self.inner.lock() {
            l.changes += b.1.len();
            l.entries.push_back(b);
            while l.changes > LOG_LIMIT {
                match l.entries.pop_front() {
                    Some((rv, c)) => {
                        l.changes -= c.len();
                        l.start = rv;
                    }
                    None => break,
                }
            }
        }
        self.notify.notify_waiters();
    }

    fn close(&self) {
        if let Ok(mut l) = self.inner.lock() {
            l.closed = true;
        }
        self.notify.notify_waiters();
    }

    fn start(&self) -> u64 {
        self.inner.lock().map(|l| l.start).unwrap_or(u64::MAX)
    }

    /// Up to `max` batches after version `rv`.
    pub fn after(&self, rv: u64, max: usize) -> Result<Vec<Batch>, LogGap> {
        let l = self.inner.lock().map_err(|_| LogGap::Closed)?;
        if l.closed {
            return Err(LogGap::Closed);
        }
        if rv < l.start {
            return Err(LogGap::Evicted);
        }
        let first = l.entries.partition_point(|(r, _)| *r <= rv);
        Ok(l.entries.iter().skip(first).take(max).cloned().collect())
    }
}

struct SiteFeed {
    wanted: HashMap<Key, usize>,
    pods: HashMap<Key, Vec<Key>>,
    log: Arc<SiteLog>,
}

/// Per-site share state, driven by store events in version order.
struct Tracker {
    objects: HashMap<Key, Arc<Value>>,
    node_site: HashMap<String, String>,
    pod_node: HashMap<Key, String>,
    /// The site each pod is shared with (bound to its node, or placed there).
    pod_site: HashMap<Key, String>,
    sites: HashMap<String, SiteFeed>,
    /// Which sites hold each key (the inverse of every feed's `wanted`).
    holders: HashMap<Key, Vec<String>>,
    /// The downlink position: the store's revision, or (with tenant partitions, whose
    /// revisions are not one sequence) a count of this tracker's own, started at a value above
    /// any earlier tracker's (see [`local_base`]).
    rv: u64,
    /// Whether `rv` counts this tracker's events rather than following the store.
    local: bool,
    /// Set when a node joins or leaves a site (its EdgeSite's node count changed).
    nodes_moved: bool,
    /// The tenants each site's share holds (shared with the hub, which accepts objects from a
    /// site only in tenants it serves).
    served: Served,
}

/// The tenants each site serves (those its share holds), kept by the share tracker.
pub type Served = Arc<std::sync::RwLock<HashMap<String, std::collections::HashSet<String>>>>;

/// The site the cloud scheduler placed a pod on (annotation `atoll.io/site`).
pub fn placed_site(pod: &Value) -> Option<String> {
    pod.pointer("/metadata/annotations")?
        .get(proto::SITE_ANNOTATION)?
        .as_str()
        .filter(|s| !s.is_empty())
        .map(String::from)
}

/// The site of a node (its `atoll.io/site` label).
pub fn node_site(v: &Value) -> Option<String> {
    v.pointer("/metadata/labels")?
        .get(SITE_LABEL)?
        .as_str()
        .map(String::from)
}

impl Tracker {
    fn new(rv: u64, items: Vec<(Key, Arc<Value>)>, served: Served) -> Self {
        if let Ok(mut s) = served.write() {
            s.clear();
        }
        let mut t = Tracker {
            objects: HashMap::new(),
            node_site: HashMap::new(),
            pod_node: HashMap::new(),
            pod_site: HashMap::new(),
            sites: HashMap::new(),
            holders: HashMap::new(),
            rv,
            local: false,
            nodes_moved: false,
            served,
        };
        let mut sink = HashMap::new();
        // Nodes first, so pods find their sites.
        let (nodes, rest): (Vec<_>, Vec<_>) =
            items.into_iter().partition(|(k, _)| k.resource == "nodes");
        for (k, v) in nodes.into_iter().chain(rest) {
            t.objects.insert(k.clone(), v.clone());
            t.track(&k, None, Some(&v), &mut sink);
        }
        for f in t.sites.values_mut() {
            f.log = Arc::new(SiteLog::new(rv));
        }
        t
    }

    fn feed(&mut self, site: &str) -> &mut SiteFeed {
        let rv = self.rv;
        self.sites
            .entry(site.to_string())
            .or_insert_with(|| SiteFeed {
                wanted: HashMap::new(),
                pods: HashMap::new(),
                log: Arc::new(SiteLog::new(rv)),
            })
    }

    fn tokens_of(&self, tenant: &str) -> Vec<Key> {
        self.objects
            .iter()
            .filter(|(k, v)| {
                k.resource == apiserver::auth::TOKENS
                    && v.get("tenant").and_then(Value::as_str) == Some(tenant)
            })
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// Change the refcount of `key` at `site`, emitting the change when it enters or leaves.
    fn want(&mut self, site: &str, key: &Key, delta: i64, out: &mut HashMap<String, Vec<Change>>) {
        let feed = self.feed(site);
        let c = feed.wanted.entry(key.clone()).or_insert(0);
        let before = *c;
        *c = (*c as i64 + delta).max(0) as usize;
        let after = *c;
        if after == 0 {
            feed.wanted.remove(key);
        }
        if before == 0 && after > 0 {
            self.holders
                .entry(key.clone())
                .or_default()
                .push(site.to_string());
        } else if before > 0 && after == 0 {
            if let Some(h) = self.holders.get_mut(key) {
                h.retain(|s| s != site);
                if h.is_empty() {
                    self.holders.remove(key);
                }
            }
        }
        let mut keys = vec![key.clone()];
        if key.resource == "tenants" && (before == 0) != (after == 0) {
            keys.extend(self.tokens_of(&key.name));
            if let Ok(mut s) = self.served.write() {
                let set = s.entry(site.to_string()).or_default();
                if after > 0 {
                    set.insert(key.name.clone());
                } else {
                    set.remove(&key.name);
                }
            }
        }
        for k in keys {
            match (before, after) {
                (0, a) if a > 0 => {
                    // An object the site created enters its share when it is created: the
                    // site has it already.
                    if let Some(v) = self.objects.get(&k) {
                        if origin(v) != Some(site) {
                            out.entry(site.to_string()).or_default().push(put(&k, v));
                        }
                    }
                }
                (b, 0) if b > 0 => {
                    let last = self.objects.get(&k).cloned();
                    out.entry(site.to_string())
                        .or_default()
                        .push(del(&k, last.as_deref()));
                }
                _ => {}
            }
        }
    }

    fn set_pod(
        &mut self,
        pod: &Key,
        site: Option<&str>,
        value: Option<&Value>,
        out: &mut HashMap<String, Vec<Change>>,
    ) {
        // Remove from wherever it was (bound there, or only placed there).
        let old_site = self.pod_site.get(pod).cloned();
        let old_refs = old_site
            .as_ref()
            .and_then(|s| self.sites.get_mut(s))
            .and_then(|f| f.pods.remove(pod));
        let new_refs = match (site, value) {
            (Some(_), Some(v)) => Some(pod_refs(pod, v)),
            _ => None,
        };
        if let (Some(s), Some(old)) = (&old_site, &old_refs) {
            for k in old {
                if new_refs
                    .as_ref()
                    .is_none_or(|n| !n.contains(k) || site != Some(s.as_str()))
                {
                    self.want(s, k, -1, out);
                }
            }
        }
        if let (Some(s), Some(new)) = (site, &new_refs) {
            for k in new {
                let had = old_site.as_deref() == Some(s)
                    && old_refs.as_ref().is_some_and(|o| o.contains(k));
                if !had {
                    self.want(s, k, 1, out);
                }
            }
            self.feed(s).pods.insert(pod.clone(), new.clone());
            self.pod_site.insert(pod.clone(), s.to_string());
        } else {
            self.pod_site.remove(pod);
        }
    }

    /// Membership changes caused by a change of `key`.
    fn track(
        &mut self,
        key: &Key,
        prev: Option<&Value>,
        now: Option<&Value>,
        out: &mut HashMap<String, Vec<Change>>,
    ) {
        // An object a site created is held by that site (so the cloud's deletion of it, or a
        // request to delete it, reaches the site).
        let (was, is) = (prev.and_then(origin), now.and_then(origin));
        if was != is {
            if let Some(s) = was.map(String::from) {
                self.want(&s, key, -1, out);
            }
            if let Some(s) = is.map(String::from) {
                self.want(&s, key, 1, out);
            }
        }
        match key.resource.as_str() {
            "nodes" => {
                let old = prev.and_then(node_site);
                let new = now.and_then(node_site);
                if old != new {
                    if let Some(s) = &old {
                        self.want(s, key, -1, out);
                        self.node_site.remove(&key.name);
                        self.nodes_moved = true;
                    }
                    if let Some(s) = &new {
                        self.node_site.insert(key.name.clone(), s.clone());
                        self.nodes_moved = true;
                        self.want(s, key, 1, out);
                    }
                    // Pods on this node move with it.
                    let pods: Vec<Key> = self
                        .pod_node
                        .iter()
                        .filter(|(_, n)| **n == key.name)
                        .map(|(k, _)| k.clone())
                        .collect();
                    for p in pods {
                        let v = self.objects.get(&p).cloned();
                        if let Some(s) = &old {
                            if let Some(refs) =
                                self.sites.get_mut(s).and_then(|f| f.pods.remove(&p))
                            {
                                for k in refs {
                                    self.want(s, &k, -1, out);
                                }
                            }
                        }
                        self.pod_site.remove(&p);
                        if let (Some(s), Some(v)) = (&new, v) {
                            let refs = pod_refs(&p, &v);
                            for k in &refs {
                                self.want(s, k, 1, out);
                            }
                            self.feed(s).pods.insert(p.clone(), refs);
                            self.pod_site.insert(p.clone(), s.clone());
                        }
                    }
                }
            }
            "pods" => {
                let node = now
                    .and_then(|v| v.pointer("/spec/nodeName"))
                    .and_then(Value::as_str)
                    .filter(|n| !n.is_empty())
                    .map(String::from);
                // Bound: its node's site. Not yet bound but placed on a site by the cloud
                // scheduler: that site (its scheduler binds it).
                let site = match &node {
                    Some(n) => self.node_site.get(n).cloned(),
                    None => now.and_then(placed_site),
                };
                self.set_pod(key, site.as_deref(), now, out);
                match node {
                    Some(n) => {
                        self.pod_node.insert(key.clone(), n);
                    }
                    None => {
                        self.pod_node.remove(key);
                    }
                }
            }
            _ => {}
        }
    }

    fn process(&mut self, e: &Event) {
        self.rv = if self.local { self.rv + 1 } else { e.rv };
        let now = (e.kind != EventType::Deleted).then(|| e.object.clone());
        if let Some(v) = &now {
            self.objects.insert(e.key.clone(), v.clone());
        }
        let mut out: HashMap<String, Vec<Change>> = HashMap::new();
        // A deleted object stays known while its removal is tracked (its deletion carries its
        // uid to the sites).
        self.track(&e.key, e.prev.as_deref(), now.as_deref(), &mut out);
        if now.is_none() {
            self.objects.remove(&e.key);
        }
        // Content changes of keys a site already holds.
        let token_tenant = (e.key.resource == apiserver::auth::TOKENS).then(|| {
            e.object
                .get("tenant")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string()
        });
        let mut sites: Vec<String> = self.holders.get(&e.key).cloned().unwrap_or_default();
        if let Some(t) = token_tenant.filter(|t| !t.is_empty()) {
            if let Some(h) = self.holders.get(&Key::new("tenants", "", "", &t)) {
                sites.extend(
                    h.iter()
                        .filter(|s| !sites.contains(s))
                        .cloned()
                        .collect::<Vec<_>>(),
                );
            }
        }
        for s in sites {
            if out
                .get(&s)
                .is_some_and(|c| c.iter().any(|c| c.key.as_ref() == Some(&obj_key(&e.key))))
            {
                continue;
            }
            match &now {
                Some(v) if origin(v) == Some(s.as_str()) => {
                    if owned_change_goes_down(&e.key, e.prev.as_deref(), v) {
                        out.entry(s).or_default().push(put(&e.key, v));
                    }
                }
                Some(v) => out.entry(s).or_default().push(put(&e.key, v)),
                None => out.entry(s).or_default().push(del(&e.key, Some(&e.object))),
            }
        }
        for (s, changes) in out {
            let rv = self.rv;
            self.feed(&s).log.append((rv, Arc::new(changes)));
        }
    }

    fn subscribe(&mut self, site: &str, applied_rv: u64) -> (Start, Arc<SiteLog>) {
        let rv = self.rv;
        let feed = self.feed(site);
        let log = feed.log.clone();
        let start = if applied_rv > 0 && applied_rv >= log.start() && applied_rv <= rv {
            Start::Resume
        } else {
            let keys: Vec<Key> = feed.wanted.keys().cloned().collect();
            let mut changes = Vec::new();
            for k in keys {
                let mut ks = vec![k.clone()];
                if k.resource == "tenants" {
                    ks.extend(self.tokens_of(&k.name));
                }
                for k in ks {
                    if let Some(v) = self.objects.get(&k) {
                        if origin(v) != Some(site) || owned_goes_down(&k, v) {
                            changes.push(put(&k, v));
                        }
                    }
                }
            }
            Start::Snapshot(rv, changes)
        };
        (start, log)
    }
}

/// Where a tracker counting its own positions starts: milliseconds since 1970 times 2^20,
/// above every position of a tracker started earlier (unless one counted over a million events
/// a millisecond) and of one started on another replica earlier.
fn local_base() -> u64 {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    u64::try_from(ms).unwrap_or(u64::MAX >> 20) << 20
}

/// Handle to the share tracker task.
#[derive(Clone)]
pub struct Shares {
    tx: mpsc::Sender<Subscribe>,
    served: Served,
}

impl Shares {
    /// Start tracking shares over `store`.
    pub fn start(
        store: Store,
        nodes_moved: Arc<tokio::sync::Notify>,
        cancel: CancellationToken,
    ) -> Self {
        let (tx, mut rx) = mpsc::channel::<Subscribe>(64);
        let served: Served = Default::default();
        let shared = served.clone();
        tokio::spawn(async move {
            loop {
                let (mut cursor, items, mut live) = store.snapshot_and_watch();
                // With tenant partitions a site's position is this tracker's own count: a site
                // that comes from another replica (or an earlier tracker) is below its start
                // or above its end, so it resyncs by snapshot.
                let local = cursor.spans_partitions();
                let start = if local {
                    local_base()
                } else {
                    cursor.position().revisions().first().copied().unwrap_or(0)
                };
                let mut t = Tracker::new(start, items, shared.clone());
                t.local = local;
                loop {
                    tokio::select! {
                        _ = cancel.cancelled() => return,
                        ev = live.recv() => match ev {
                            Ok(e) => if cursor.advance(&e) {
                                t.process(&e);
                                if std::mem::take(&mut t.nodes_moved) {
                                    nodes_moved.notify_one();
                                }
                            },
                            Err(_) => {
                                tracing::warn!("share tracker fell behind the store; rebuilding (sites will resync)");
                                for f in t.sites.values() {
                                    f.log.close();
                                }
                                break;
                            }
                        },
                        cmd = rx.recv() => match cmd {
                            Some(s) => {
                                let r = t.subscribe(&s.site, s.applied_rv);
                                let _ = s.reply.send(r);
                            }
                            None => return,
                        },
                    }
                }
            }
        });
        Shares { tx, served }
    }

    /// Whether `site` serves `tenant` (its share holds it).
    pub fn serves(&self, site: &str, tenant: &str) -> bool {
        self.served
            .read()
            .is_ok_and(|s| s.get(site).is_some_and(|t| t.contains(tenant)))
    }

    /// Subscribe `site`'s session at its applied version: resume or snapshot, and its log.
    pub async fn subscribe(&self, site: &str, applied_rv: u64) -> Option<(Start, Arc<SiteLog>)> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Subscribe {
                site: site.to_string(),
                applied_rv,
                reply,
            })
            .await
            .ok()?;
        rx.await.ok()
    }
}

#[cfg(test)]
mod tests {
    //! Deterministic simulation of the tracker: seeded random histories of nodes moving between
    //! sites, pods bound, placed and moved, the objects they reference, tenants and their
    //! tokens, objects sites created, deletions. After every history, for every site:
    //! replaying its downlink log gives what a snapshot gives, the snapshot holds exactly the
    //! share computed from scratch from the final objects, and a tracker rebuilt from the final
    //! objects agrees with the one that followed the events.

    use super::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};
    use std::collections::{BTreeMap, BTreeSet};

    const SITES: [&str; 3] = ["s1", "s2", "s3"];

    struct World {
        objects: BTreeMap<Key, Value>,
        rv: u64,
    }

    impl World {
        /// Commit `new` (or a deletion) at `key` and return the store event for it.
        fn write(&mut self, key: Key, new: Option<Value>) -> Option<Event> {
            let prev = self.objects.get(&key).cloned();
            if prev.is_none() && new.is_none() {
                return None;
            }
            self.rv += 1;
            let rv = self.rv;
            let (kind, object) = match new {
                Some(mut v) => {
                    // The origin is an object's for life (the API keeps it on every write).
                    if let Some(p) = &prev {
                        match origin(p) {
                            Some(o) => {
                                if !v
                                    .pointer("/metadata/annotations")
                                    .is_some_and(Value::is_object)
                                {
                                    v["metadata"]["annotations"] = json!({});
                                }
                                v["metadata"]["annotations"][proto::ORIGIN] = json!(o);
                            }
                            None => {
                                if let Some(a) = v
                                    .pointer_mut("/metadata/annotations")
                                    .and_then(Value::as_object_mut)
                                {
                                    a.remove(proto::ORIGIN);
                                }
                            }
                        }
                    }
                    v["metadata"]["resourceVersion"] = json!(rv.to_string());
                    self.objects.insert(key.clone(), v.clone());
                    let kind = if prev.is_some() {
                        EventType::Modified
                    } else {
                        EventType::Added
                    };
                    (kind, v)
                }
                None => {
                    self.objects.remove(&key);
                    let mut last = prev.clone().unwrap_or(Value::Null);
                    last["metadata"]["resourceVersion"] = json!(rv.to_string());
                    (EventType::Deleted, last)
                }
            };
            Some(Event {
                rv,
                part: 0,
                kind,
                key,
                object: Arc::new(object),
                prev: prev.map(Arc::new),
            })
        }
    }

    fn meta(name: &str, uid: u64) -> Value {
        json!({"name": name, "uid": format!("u-{uid}")})
    }

    /// One random write over a small universe (so objects collide and move often).
    fn step(rng: &mut StdRng, w: &mut World) -> Option<Event> {
        let uid = w.rv + 1;
        let pick = |rng: &mut StdRng, xs: &[&str]| xs[rng.gen_range(0..xs.len())].to_string();
        let tenant = pick(rng, &["", "", "t1"]);
        let nsname = "default";
        match rng.gen_range(0..100) {
            // Nodes join, leave and move between sites; some were created by their site.
            0..=14 => {
                let n = pick(rng, &["n1", "n2", "n3", "n4"]);
                let key = Key::new("nodes", "", "", &n);
                if rng.gen_bool(0.1) {
                    return w.write(key, None);
                }
                let mut v = json!({"metadata": meta(&n, uid), "spec": {}});
                if let Some(s) = [None, Some("s1"), Some("s2"), Some("s3")][rng.gen_range(0..4)] {
                    v["metadata"]["labels"] = json!({ SITE_LABEL: s });
                    if rng.gen_bool(0.3) {
                        v["metadata"]["annotations"] = json!({ proto::ORIGIN: s });
                    }
                }
                if rng.gen_bool(0.3) {
                    v["spec"]["unschedulable"] = json!(true);
                }
                w.write(key, Some(v))
            }
            // Pods: bound, placed, or neither; referencing configmaps and secrets.
            15..=54 => {
                let p = pick(rng, &["p1", "p2", "p3", "p4", "p5", "p6"]);
                let key = Key::new("pods", &tenant, nsname, &p);
                if rng.gen_bool(0.12) {
                    return w.write(key, None);
                }
                let cm = pick(rng, &["cm1", "cm2", "cm3"]);
                let sec = pick(rng, &["sec1", "sec2"]);
                let mut v = json!({"metadata": meta(&p, uid),
                    "spec": {"serviceAccountName": pick(rng, &["default", "sa1"]),
                        "volumes": [{"name": "c", "configMap": {"name": cm}}],
                        "containers": [{"name": "c", "image": "i",
                            "env": [{"name": "E", "valueFrom": {"secretKeyRef": {"name": sec, "key": "k"}}}]}]}});
                match rng.gen_range(0..4) {
                    0 => {
                        v["spec"]["nodeName"] = json!(pick(rng, &["n1", "n2", "n3", "n4", "gone"]))
                    }
                    1 => {
                        v["metadata"]["annotations"] =
                            json!({ proto::SITE_ANNOTATION: pick(rng, &SITES) })
                    }
                    2 => v["metadata"]["annotations"] = json!({ proto::ORIGIN: pick(rng, &SITES) }),
                    _ => {}
                }
                if rng.gen_bool(0.1) {
                    v["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
                }
                w.write(key, Some(v))
            }
            // What pods reference, changing content (and sometimes gone).
            55..=79 => {
                let (res, name) = match rng.gen_range(0..4) {
                    0 => ("configmaps", pick(rng, &["cm1", "cm2", "cm3"])),
                    1 => ("secrets", pick(rng, &["sec1", "sec2"])),
                    2 => ("serviceaccounts", pick(rng, &["default", "sa1"])),
                    _ => ("namespaces", nsname.to_string()),
                };
                let ns = if res == "namespaces" { "" } else { nsname };
                let key = Key::new(res, &tenant, ns, &name);
                if rng.gen_bool(0.15) {
                    return w.write(key, None);
                }
                let mut v = json!({"metadata": meta(&name, uid), "data": {"v": uid.to_string()}});
                if rng.gen_bool(0.2) {
                    v["metadata"]["annotations"] = json!({ proto::ORIGIN: pick(rng, &SITES) });
                }
                w.write(key, Some(v))
            }
            // The tenant and its tokens (which follow the tenant to every site serving it).
            80..=89 => {
                let key = Key::new("tenants", "", "", "t1");
                if rng.gen_bool(0.1) {
                    return w.write(key, None);
                }
                w.write(key, Some(json!({"metadata": meta("t1", uid), "spec": {}})))
            }
            _ => {
                let name = pick(rng, &["tok1", "tok2"]);
                let key = Key::new(apiserver::auth::TOKENS, "", "", &name);
                if rng.gen_bool(0.2) {
                    return w.write(key, None);
                }
                // A token belongs to its tenant for life.
                let t = match w.objects.get(&key) {
                    Some(old) => old["tenant"].as_str().unwrap_or("").to_string(),
                    None => pick(rng, &["t1", ""]),
                };
                w.write(
                    key,
                    Some(json!({"metadata": meta(&name, uid), "tenant": t})),
                )
            }
        }
    }

    /// The keys `site` should hold, from the objects alone (the tracker's rules restated);
    /// with `referenced`, also the keys its pods name that do not exist (a tenant being
    /// deleted is still served while pods in it remain).
    fn expected(objects: &BTreeMap<Key, Value>, site: &str, referenced: bool) -> BTreeSet<Key> {
        let node_site = |n: &str| {
            objects
                .get(&Key::new("nodes", "", "", n))
                .and_then(node_site)
        };
        let mut want = BTreeSet::new();
        for (k, v) in objects {
            if origin(v) == Some(site) {
                want.insert(k.clone());
            }
            if k.resource == "nodes" && node_site(&k.name).as_deref() == Some(site) {
                want.insert(k.clone());
            }
            if k.resource == "pods" {
                let at = match v.pointer("/spec/nodeName").and_then(Value::as_str) {
                    Some(n) if !n.is_empty() => node_site(n),
                    _ => placed_site(v),
                };
                if at.as_deref() == Some(site) {
                    want.extend(pod_refs(k, v));
                }
            }
        }
        let tenants: Vec<String> = want
            .iter()
            .filter(|k| k.resource == "tenants")
            .map(|k| k.name.clone())
            .collect();
        for (k, v) in objects {
            if k.resource == apiserver::auth::TOKENS
                && v.get("tenant")
                    .and_then(Value::as_str)
                    .is_some_and(|t| tenants.iter().any(|x| x == t))
            {
                want.insert(k.clone());
            }
        }
        if !referenced {
            want.retain(|k| objects.contains_key(k));
        }
        want
    }

    fn key_of(c: &Change) -> Key {
        let k = c.key.clone().unwrap_or_default();
        Key::new(&k.resource, &k.tenant, &k.namespace, &k.name)
    }

    /// The snapshot a site would get now, as key → object (the site's own objects left out:
    /// it has them already, and only the cloud's changes to them go down).
    fn snapshot(t: &mut Tracker, site: &str) -> BTreeMap<Key, Value> {
        match t.subscribe(site, 0).0 {
            Start::Snapshot(_, changes) => changes
                .iter()
                .map(|c| {
                    (
                        key_of(c),
                        serde_json::from_slice(&c.object).unwrap_or(Value::Null),
                    )
                })
                .filter(|(_, v)| origin(v) != Some(site))
                .collect(),
            Start::Resume => panic!("a site at version 0 resumes"),
        }
    }

    #[test]
    fn logs_snapshots_and_rebuilds_agree_over_random_histories() {
        for seed in 0..200u64 {
            let mut rng = StdRng::seed_from_u64(seed);
            let mut w = World {
                objects: BTreeMap::new(),
                rv: 0,
            };
            let mut t = Tracker::new(0, Vec::new(), Served::default());
            // Every site is subscribed from the start, so its log holds its whole history.
            let mut replay: HashMap<&str, BTreeMap<Key, Value>> = HashMap::new();
            for s in SITES {
                let _ = t.subscribe(s, 0);
                replay.insert(s, BTreeMap::new());
            }
            let steps = rng.gen_range(20..160);
            for _ in 0..steps {
                if let Some(e) = step(&mut rng, &mut w) {
                    t.process(&e);
                }
            }
            for s in SITES {
                let log = t.feed(s).log.clone();
                let batches = log.after(0, usize::MAX).expect("log from the start");
                assert!(
                    batches.windows(2).all(|b| b[0].0 < b[1].0),
                    "seed {seed}: {s}'s batches out of order"
                );
                let r = replay.get_mut(s).expect("site");
                for (_, changes) in batches {
                    for c in changes.iter() {
                        let k = key_of(c);
                        if c.kind == ChangeKind::Delete as i32 {
                            r.remove(&k);
                        } else {
                            r.insert(k, serde_json::from_slice(&c.object).unwrap_or(Value::Null));
                        }
                    }
                }
                r.retain(|_, v| origin(v) != Some(s));
                let snap = snapshot(&mut t, s);
                if *r != snap {
                    let a: BTreeSet<&Key> = r.keys().collect();
                    let b: BTreeSet<&Key> = snap.keys().collect();
                    let diff: Vec<_> = r
                        .iter()
                        .filter(|(k, v)| snap.get(*k) != Some(*v))
                        .map(|(k, _)| k)
                        .collect();
                    panic!("seed {seed}: {s}: log replay differs from snapshot: only in log {:?}, only in snapshot {:?}, differing {:?}", a.difference(&b).collect::<Vec<_>>(), b.difference(&a).collect::<Vec<_>>(), diff);
                }
                let want: BTreeSet<Key> = expected(&w.objects, s, false)
                    .into_iter()
                    .filter(|k| w.objects.get(k).is_some_and(|v| origin(v) != Some(s)))
                    .collect();
                let got: BTreeSet<Key> = snap.keys().cloned().collect();
                assert_eq!(got, want, "seed {seed}: {s}: share differs from the rules");
                for (k, v) in &snap {
                    assert_eq!(Some(v), w.objects.get(k), "seed {seed}: {s}: stale {k:?}");
                }
                let served: BTreeSet<String> = t
                    .served
                    .read()
                    .map(|m| m.get(s).cloned().unwrap_or_default())
                    .unwrap_or_default()
                    .into_iter()
                    .collect();
                let tenants: BTreeSet<String> = expected(&w.objects, s, true)
                    .into_iter()
                    .filter(|k| k.resource == "tenants")
                    .map(|k| k.name)
                    .collect();
                assert_eq!(served, tenants, "seed {seed}: {s}: served tenants");
            }
            // A tracker rebuilt from the final objects (a cloud-core restart) agrees.
            let items: Vec<(Key, Arc<Value>)> = w
                .objects
                .iter()
                .map(|(k, v)| (k.clone(), Arc::new(v.clone())))
                .collect();
            let mut fresh = Tracker::new(w.rv, items, Served::default());
            for s in SITES {
                assert_eq!(
                    snapshot(&mut fresh, s),
                    snapshot(&mut t, s),
                    "seed {seed}: {s}: rebuilt tracker differs"
                );
            }
        }
    }

    #[test]
    fn a_site_resumes_from_its_log_or_gets_a_snapshot() {
        let mut w = World {
            objects: BTreeMap::new(),
            rv: 0,
        };
        let mut t = Tracker::new(0, Vec::new(), Served::default());
        let _ = t.subscribe("s1", 0);
        let mut last = 0;
        for n in ["n1", "n2"] {
            let node = json!({"metadata": {"name": n, "uid": n, "labels": {SITE_LABEL: "s1"}}});
            let e = w
                .write(Key::new("nodes", "", "", n), Some(node))
                .expect("event");
            t.process(&e);
            last = e.rv;
        }
        assert!(matches!(t.subscribe("s1", 1).0, Start::Resume));
        assert_eq!(t.feed("s1").log.after(1, 10).map(|b| b.len()), Ok(1));
        // A position the log never had (ahead of the tracker) gets a snapshot.
        assert!(matches!(
            t.subscribe("s1", last + 10).0,
            Start::Snapshot(..)
        ));
        // A log that fills past its limit evicts its oldest positions.
        let log = t.feed("s1").log.clone();
        let big: Vec<Change> = (0..LOG_LIMIT)
            .map(|i| del(&Key::new("pods", "", "default", &format!("p{i}")), None))
            .collect();
        log.append((last + 1, Arc::new(big)));
        assert_eq!(log.after(1, 10).err(), Some(LogGap::Evicted));
        assert!(matches!(t.subscribe("s1", 1).0, Start::Snapshot(..)));
        assert!(matches!(t.subscribe("s1", last).0, Start::Resume));
    }
}
