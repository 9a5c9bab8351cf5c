//! The edge's sync driver: connects to the cloud with the site's certificate, runs an
//! [`EdgeSession`] per connection, applies the downlink to the local store (atomically with the
//! applied version) and feeds the persistent outbox up. Reconnects with jittered, capped
//! backoff; everything it needs across connections is in the local store.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use proto::sync::{Change, ChangeKind, Frame, ObjectKey, Up};
use serde_json::{json, Value};
use store::{EventType, Key, Op, Precondition, Scope, Store};
use sync::protocol::{Config, EdgeAction, EdgeSession};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::hooks::OUTBOX;
use crate::{cloud_addr, is_owned, Creds};

const STATE: &str = "syncstate";
/// Kinds a snapshot replaces wholesale (namespaces and tenants stay: the site keeps working
/// in them offline).
const SNAPSHOT_KINDS: &[&str] = &[
    "pods",
    "nodes",
    "configmaps",
    "secrets",
    "serviceaccounts",
    "tokens",
    "events",
    "leases.coordination.k8s.io",
];
/// Kinds whose status the edge owns even when the cloud owns the spec.
const EDGE_STATUS: &[&str] = &["pods", "nodes"];

/// Durable sync position.
#[derive(Clone, Copy, Debug, Default)]
struct State {
    applied_rv: u64,
    up_base: u64,
    /// Highest refused uplink sequence handled (refusals are repeated on every Welcome).
    refused_seen: u64,
}

/// The sync driver.
pub struct Driver {
    site: String,
    /// The region's replicas' sync addresses, tried in turn.
    cloud: Vec<String>,
    store: Store,
    creds: Arc<std::sync::RwLock<Creds>>,
    pki: std::path::PathBuf,
    serving: Arc<apiserver::server::SwapCert>,
    serving_names: Vec<String>,
    cfg: Config,
    logs: Option<Arc<apiserver::logs::AgentLogs>>,
}

/// What the cloud owns of a node (spec, labels, annotations but the origin), absent as empty.
fn node_part(v: &Value) -> (Value, Value, Value) {
    let or_empty = |p: &str| {
        v.pointer(p)
            .filter(|v| v.is_object())
            .cloned()
            .unwrap_or(json!({}))
    };
    let mut annotations = or_empty("/metadata/annotations");
    if let Some(a) = annotations.as_object_mut() {
        a.remove(crate::hooks::ORIGIN);
    }
    (or_empty("/spec"), or_empty("/metadata/labels"), annotations)
}

fn key_of(k: &ObjectKey) -> Key {
    Key::new(&k.resource, &k.tenant, &k.namespace, &k.name)
}

impl Driver {
    /// A driver for `site` against the cloud at `cloud` (HOST:PORT, one per replica).
    pub fn new(
        site: String,
        cloud: Vec<String>,
        store: Store,
        creds: Creds,
        pki: std::path::PathBuf,
        serving: Arc<apiserver::server::SwapCert>,
        serving_names: Vec<String>,
    ) -> Self {
        Driver {
            site,
            cloud,
            store,
            creds: Arc::new(std::sync::RwLock::new(creds)),
            pki,
            serving,
            serving_names,
            cfg: Config::default(),
            logs: None,
        }
    }

    /// Answer the cloud's tunnelled log requests from `logs`.
    pub fn with_logs(mut self, logs: Arc<apiserver::logs::AgentLogs>) -> Self {
        self.logs = Some(logs);
        self
    }

    /// The site's credentials as the driver keeps them (renewals replace them in place).
    pub fn creds_handle(&self) -> Arc<std::sync::RwLock<Creds>> {
        self.creds.clone()
    }

    fn creds(&self) -> Creds {
        self.creds
            .read()
            .map(|c| c.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    /// Renew the site's certificates over a second stream of the live connection, at two
    /// thirds of their lifetime, without dropping the connection; then store them and serve
    /// the new API certificate.
    fn renewer(&self, conn: quinn::Connection) -> tokio::task::JoinHandle<()> {
        let (creds, pki, serving, names, site) = (
            self.creds.clone(),
            self.pki.clone(),
            self.serving.clone(),
            self.serving_names.clone(),
            self.site.clone(),
        );
        tokio::spawn(async move {
            loop {
                let at = creds.read().ok().and_then(|c| c.renew_at());
                let Some(at) = at else { return };
                // At least a second between attempts, whatever the clock says.
                let wait = at
                    .duration_since(std::time::SystemTime::now())
                    .unwrap_or_default()
                    .max(Duration::from_secs(1));
                tokio::time::sleep(wait).await;
                let result: Result<Creds, String> = async {
                    let (mut send, mut recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
                    let req = Frame::new(proto::sync::frame::Body::RenewRequest(
                        proto::sync::RenewRequest {
                            serving_names: names.clone(),
                        },
                    ));
                    sync::quic::write_frame(&mut send, &req)
                        .await
                        .map_err(|e| e.to_string())?;
                    let _ = send.finish();
                    match sync::quic::read_frame(&mut recv)
                        .await
                        .map_err(|e| e.to_string())?
                        .and_then(|f| f.body)
                    {
                        Some(proto::sync::frame::Body::JoinResponse(r)) => {
                            Ok(Creds::from_response(r))
                        }
                        Some(proto::sync::frame::Body::Error(e)) => Err(e.message),
                        _ => Err("no answer".into()),
                    }
                }
                .await;
                match result {
                    Ok(new) => {
                        if let Err(e) = new.save(&pki) {
                            tracing::error!(%site, error = %e, "storing renewed certificates");
                            return;
                        }
                        if let Err(e) =
                            serving.set(new.serving_cert.as_bytes(), new.serving_key.as_bytes())
                        {
                            tracing::error!(%site, error = %e, "loading the renewed serving certificate");
                        }
                        if let Ok(mut c) = creds.write() {
                            *c = new;
                        }
                        tracing::info!(%site, "certificates renewed");
                    }
                    Err(e) => {
                        tracing::warn!(%site, error = %e, "certificate renewal failed; retrying");
                        tokio::time::sleep(Duration::from_secs(5)).await;
                    }
                }
            }
        })
    }

    fn state(&self) -> State {
        let v = self.store.get(&Key::new(STATE, "", "", "state"));
        let n = |f: &str| {
            v.as_ref()
                .and_then(|v| v.get(f))
                .and_then(Value::as_u64)
                .unwrap_or(0)
        };
        State {
            applied_rv: n("appliedRv"),
            up_base: n("upBase"),
            refused_seen: n("refusedSeen"),
        }
    }

    fn state_op(st: State) -> Op {
        Op::Put {
            key: Key::new(STATE, "", "", "state"),
            value: json!({"metadata": {"name": "state"}, "appliedRv": st.applied_rv, "upBase": st.up_base, "refusedSeen": st.refused_seen}),
            pre: Precondition::Any,
        }
    }

    /// Run until cancelled: connect, sync, reconnect.
    pub async fn run(self, cancel: CancellationToken) {
        let mut backoff = Duration::from_millis(200);
        // Which replica to try; the next one after a connection ends (any replica serves the
        // site, and the one that went away may not come back).
        let mut at = 0;
        // (Never empty: edge-core refuses a --cloud without an address.)
        let replicas = self.cloud.len().max(1);
        loop {
            let started = tokio::time::Instant::now();
            let cloud = self.cloud.get(at).cloned().unwrap_or_default();
            let result = tokio::select! {
                _ = cancel.cancelled() => return,
                r = self.connection(&cloud) => r,
            };
            match result {
                Ok(reason) => {
                    tracing::info!(site = %self.site, %cloud, %reason, "sync connection ended")
                }
                Err(e) => {
                    tracing::warn!(site = %self.site, %cloud, error = %e, "sync connection failed")
                }
            }
            at = (at + 1) % replicas;
            if started.elapsed() > Duration::from_secs(30) || (replicas > 1 && at != 0) {
                // A healthy connection ended, or other replicas are still to be tried.
                backoff = Duration::from_millis(200);
            }
            // Jittered, capped exponential backoff.
            let jitter = Duration::from_millis(
                u64::from(std::process::id() % 7) * 20
                    + (started.elapsed().subsec_millis() % 100) as u64,
            );
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(backoff + jitter) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }

    fn outbox_up(rec: &Value, seq: u64) -> Up {
        let k = rec.get("key").cloned().unwrap_or(Value::Null);
        let s = |f: &str| k.get(f).and_then(Value::as_str).unwrap_or("").to_string();
        let kind = match rec.get("kind").and_then(Value::as_str) {
            Some("Delete") => ChangeKind::Delete,
            Some("Status") => ChangeKind::Status,
            Some("Bind") => ChangeKind::Bind,
            Some("Summary") => ChangeKind::Summary,
            _ => ChangeKind::Put,
        };
        let json_of = |f: &str| match rec.get(f) {
            Some(Value::Null) | None => Vec::new(),
            Some(o) => serde_json::to_vec(o).unwrap_or_default(),
        };
        Up {
            seq,
            kind: kind as i32,
            key: Some(ObjectKey {
                resource: s("resource"),
                tenant: s("tenant"),
                namespace: s("namespace"),
                name: s("name"),
            }),
            object: json_of("object"),
            base: json_of("base"),
        }
    }

    async fn connection(&self, cloud: &str) -> Result<String, String> {
        let now = || tokio::time::Instant::now().into_std();
        // Outbox as of now, in commit order, and the stream of later entries.
        let scope = Scope {
            resource: OUTBOX.into(),
            tenant: Some(String::new()),
            namespace: None,
        };
        let (_, mut items, mut live) = self.store.list_and_watch(&scope);
        items.sort_by_key(|(_, v)| store::object_rv(v).unwrap_or(0));
        let mut st = self.state();
        let mut wire: VecDeque<(u64, Key)> = VecDeque::new();
        let mut ups = Vec::new();
        for (i, (k, v)) in items.iter().enumerate() {
            let seq = st.up_base + 1 + i as u64;
            wire.push_back((seq, k.clone()));
            ups.push(Self::outbox_up(v, seq));
        }
        let mut next_seq = st.up_base + 1 + items.len() as u64;
        let seen_keys: HashSet<Key> = items.iter().map(|(k, _)| k.clone()).collect();

        let (addr, host) = cloud_addr(cloud).map_err(|e| e.to_string())?;
        let creds = self.creds();
        let ep = sync::quic::client(sync::quic::ClientAuth::Mutual {
            ca_pem: creds.ca.as_bytes(),
            cert_pem: creds.client_cert.as_bytes(),
            key_pem: creds.client_key.as_bytes(),
        })
        .map_err(|e| e.to_string())?;
        let conn = ep
            .connect(addr, &host)
            .map_err(|e| e.to_string())?
            .await
            .map_err(|e| e.to_string())?;
        let (mut send, mut recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
        let renewer = self.renewer(conn.clone());
        let tunnels = self.logs.clone().map(|l| {
            tokio::spawn(crate::logs::serve_tunnels(
                conn.clone(),
                self.store.clone(),
                l,
            ))
        });
        let mut s = EdgeSession::new(self.cfg.clone(), &self.site, st.applied_rv, ups, now());
        let (ftx, mut frx) = mpsc::channel::<Frame>(256);
        let reader = tokio::spawn(async move {
            while let Ok(Some(f)) = sync::quic::read_frame(&mut recv).await {
                if ftx.send(f).await.is_err() {
                    break;
                }
            }
        });
        tracing::info!(site = %self.site, %cloud, applied_rv = st.applied_rv, outbox = wire.len(), "connected to the cloud");
        let mut snapshot: Option<HashSet<Key>> = None;
        let result = 'conn: loop {
            while let Some(f) = s.poll_transmit(now()) {
                if let Err(e) = sync::quic::write_frame(&mut send, &f).await {
                    break 'conn format!("write failed: {e}");
                }
            }
            let mut actions: VecDeque<EdgeAction> =
                std::iter::from_fn(|| s.poll_action()).collect();
            let acted = !actions.is_empty();
            while let Some(a) = actions.pop_front() {
                match a {
                    EdgeAction::Apply(first) => {
                        // Consecutive downlink batches are applied in one local commit (one fsync).
                        let mut batch = vec![first];
                        while matches!(actions.front(), Some(EdgeAction::Apply(_))) {
                            if let Some(EdgeAction::Apply(d)) = actions.pop_front() {
                                batch.push(d);
                            }
                        }
                        let in_snapshot = snapshot.is_some();
                        let mut ops: Vec<Op> = Vec::new();
                        let mut last = 0;
                        for d in &batch {
                            if let Some(seen) = &mut snapshot {
                                seen.extend(
                                    d.changes.iter().filter_map(|c| c.key.as_ref().map(key_of)),
                                );
                            }
                            ops.extend(d.changes.iter().filter_map(|c| self.apply_op(c)));
                            last = d.rv;
                        }
                        if !in_snapshot {
                            st.applied_rv = last;
                            ops.push(Self::state_op(st));
                        }
                        if let Err(e) = self.store.commit(ops).await {
                            break 'conn format!("applying downlink {last}: {e}");
                        }
                        if !in_snapshot {
                            s.applied(last);
                        }
                    }
                    EdgeAction::SnapshotBegin(rv) => {
                        tracing::info!(site = %self.site, rv, "receiving snapshot");
                        snapshot = Some(HashSet::new());
                    }
                    EdgeAction::SnapshotEnd(rv) => {
                        let seen = snapshot.take().unwrap_or_default();
                        let mut ops = Vec::new();
                        for res in SNAPSHOT_KINDS {
                            let (_, items) = self.store.list(
                                &Scope {
                                    resource: res.to_string(),
                                    tenant: None,
                                    namespace: None,
                                },
                                None,
                            );
                            for (k, v) in items {
                                if !seen.contains(&k) && !is_owned(&v, &self.site) {
                                    ops.push(Op::Delete {
                                        key: k,
                                        pre: Precondition::Any,
                                    });
                                }
                            }
                        }
                        st.applied_rv = rv;
                        ops.push(Self::state_op(st));
                        if let Err(e) = self.store.commit(ops).await {
                            break 'conn format!("finishing snapshot {rv}: {e}");
                        }
                        s.applied(rv);
                    }
                    EdgeAction::UpAcked(seq) => {
                        let mut ops = Vec::new();
                        while wire.front().is_some_and(|(w, _)| *w <= seq) {
                            if let Some((_, k)) = wire.pop_front() {
                                ops.push(Op::Delete {
                                    key: k,
                                    pre: Precondition::Any,
                                });
                            }
                        }
                        st.up_base = seq;
                        ops.push(Self::state_op(st));
                        if let Err(e) = self.store.commit(ops).await {
                            break 'conn format!("recording uplink ack {seq}: {e}");
                        }
                    }
                    EdgeAction::Refused(refused) => {
                        let fresh: Vec<_> = refused
                            .into_iter()
                            .filter(|r| r.seq > st.refused_seen)
                            .collect();
                        if fresh.is_empty() {
                            continue;
                        }
                        st.refused_seen = fresh.iter().map(|r| r.seq).max().unwrap_or(0);
                        let mut ops = self.repairs(&fresh, &wire);
                        ops.push(Self::state_op(st));
                        if let Err(e) = self.store.commit(ops).await {
                            break 'conn format!("recording refusals: {e}");
                        }
                    }
                    EdgeAction::Close(c) => break 'conn c.reason,
                }
            }
            if acted {
                // Actions may have queued frames: send them before blocking.
                continue;
            }
            let deadline = tokio::time::Instant::from_std(s.next_timeout());
            tokio::select! {
                f = frx.recv() => match f {
                    Some(f) => s.handle(f, now()),
                    None => break 'conn "connection closed".to_string(),
                },
                ev = live.recv() => match ev {
                    Ok(e) if e.kind == EventType::Added && e.key.resource == OUTBOX && !seen_keys.contains(&e.key) => {
                        wire.push_back((next_seq, e.key.clone()));
                        s.push_up(Self::outbox_up(&e.object, next_seq));
                        next_seq += 1;
                    }
                    Ok(_) => {}
                    Err(_) => break 'conn "fell behind the local store; reconnecting".to_string(),
                },
                _ = tokio::time::sleep_until(deadline) => s.handle_timeout(now()),
            }
        };
        reader.abort();
        renewer.abort();
        if let Some(t) = tunnels {
            t.abort();
        }
        conn.close(0u32.into(), b"bye");
        Ok(result)
    }

    /// What the site does about changes the cloud refused: a Warning event on the object here
    /// (so the site's operator sees why), and its own copy of an object it created set to the
    /// cloud's (or removed, when the cloud holds none for it), unless a later change of it is
    /// still on its way up (the cloud will judge that one too).
    fn repairs(&self, refused: &[proto::sync::Refusal], wire: &VecDeque<(u64, Key)>) -> Vec<Op> {
        let mut ops = Vec::new();
        for r in refused {
            let Some(k) = r.key.as_ref() else { continue };
            let key = key_of(k);
            tracing::warn!(site = %self.site, seq = r.seq, resource = %key.resource, namespace = %key.namespace,
                name = %key.name, reason = %r.reason, "the cloud refused a change");
            ops.push(self.refusal_event(&key, &r.reason));
            let later = wire.iter().any(|(seq, ob)| {
                *seq > r.seq
                    && self.store.get(ob).is_some_and(|rec| {
                        let s = |f: &str| {
                            rec.pointer(&format!("/key/{f}")).and_then(Value::as_str)
                                == Some(match f {
                                    "resource" => key.resource.as_str(),
                                    "tenant" => key.tenant.as_str(),
                                    "namespace" => key.namespace.as_str(),
                                    _ => key.name.as_str(),
                                })
                        };
                        s("resource") && s("tenant") && s("namespace") && s("name")
                    })
            });
            let local = self.store.get(&key);
            if later || !local.as_deref().is_some_and(|v| is_owned(v, &self.site)) {
                continue;
            }
            if r.absent {
                ops.push(Op::Delete {
                    key,
                    pre: Precondition::Any,
                });
            } else if let Ok(mut v) = serde_json::from_slice::<Value>(&r.object) {
                if let Some(m) = v.get_mut("metadata").and_then(Value::as_object_mut) {
                    m.remove("resourceVersion");
                }
                ops.push(Op::Put {
                    key,
                    value: v,
                    pre: Precondition::Any,
                });
            }
        }
        ops
    }

    /// A local Warning event about a refused change (the site's own; it does not go up).
    fn refusal_event(&self, key: &Key, reason: &str) -> Op {
        let kind = apiserver::resources::by_store_name(&key.resource).map_or("", |r| r.kind);
        let api_version = apiserver::resources::by_store_name(&key.resource)
            .map(|r| r.api_version())
            .unwrap_or_default();
        let ns = if key.namespace.is_empty() {
            "default"
        } else {
            key.namespace.as_str()
        };
        let name = format!("{}.{:x}", key.name, rand::random::<u64>());
        let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let mut ev = json!({
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"name": name, "namespace": ns, "uid": uuid::Uuid::new_v4().to_string(),
                "creationTimestamp": now, "annotations": {crate::hooks::ORIGIN: self.site}},
            "involvedObject": {"apiVersion": api_version, "kind": kind, "name": key.name},
            "type": "Warning", "reason": "RefusedByCloud",
            "message": format!("the cloud refused this site's change: {reason}"),
            "source": {"component": "atoll-edge-sync", "host": self.site},
            "firstTimestamp": now, "lastTimestamp": now, "count": 1,
        });
        if !key.namespace.is_empty() {
            ev["involvedObject"]["namespace"] = json!(key.namespace);
        }
        if !key.tenant.is_empty() {
            ev["metadata"]["tenant"] = json!(key.tenant);
        }
        Op::Put {
            key: Key::new("events", &key.tenant, ns, &name),
            value: ev,
            pre: Precondition::Absent,
        }
    }

    /// The local write for a downlink change of an object the site created: the cloud's part
    /// of its node (spec, labels, annotations), a deletion the cloud asked for, or the cloud's
    /// deletion of it — each only for the same object (uid), never a newer one of the name.
    fn apply_owned(&self, c: &Change, key: Key, local: &Value) -> Option<Op> {
        let uid = |v: &Value| {
            v.pointer("/metadata/uid")
                .and_then(Value::as_str)
                .map(String::from)
        };
        let cloud: Value = serde_json::from_slice(&c.object).ok()?;
        if uid(&cloud)? != uid(local)? {
            return None;
        }
        match ChangeKind::try_from(c.kind).ok()? {
            ChangeKind::Delete => Some(Op::Delete {
                key,
                pre: Precondition::Any,
            }),
            ChangeKind::Put => {
                let mut n = local.clone();
                let mut changed = false;
                if key.resource == "nodes" && node_part(&cloud) != node_part(local) {
                    let (spec, labels, annotations) = node_part(&cloud);
                    n["spec"] = spec;
                    n["metadata"]["labels"] = labels;
                    n["metadata"]["annotations"] = annotations;
                    n["metadata"]["annotations"][crate::hooks::ORIGIN] = json!(self.site);
                    n["metadata"]["labels"][proto::SITE_LABEL] = json!(self.site);
                    changed = true;
                }
                if local.pointer("/metadata/deletionTimestamp").is_none() {
                    if let Some(ts) = cloud.pointer("/metadata/deletionTimestamp") {
                        n["metadata"]["deletionTimestamp"] = ts.clone();
                        n["metadata"]["deletionGracePeriodSeconds"] = cloud
                            .pointer("/metadata/deletionGracePeriodSeconds")
                            .cloned()
                            .unwrap_or(json!(0));
                        changed = true;
                    }
                }
                if let Some(m) = n.get_mut("metadata").and_then(Value::as_object_mut) {
                    m.remove("resourceVersion");
                }
                changed.then_some(Op::Put {
                    key,
                    value: n,
                    pre: Precondition::Any,
                })
            }
            _ => None,
        }
    }

    /// The local write for one downlink change.
    fn apply_op(&self, c: &Change) -> Option<Op> {
        let key = key_of(c.key.as_ref()?);
        let current = self.store.get(&key);
        if let Some(local) = current.as_deref().filter(|v| is_owned(v, &self.site)) {
            return self.apply_owned(c, key, local);
        }
        match ChangeKind::try_from(c.kind).ok()? {
            ChangeKind::Delete => current.map(|_| Op::Delete {
                key,
                pre: Precondition::Any,
            }),
            // Uplink-only kinds never come down.
            ChangeKind::Bind | ChangeKind::Summary => None,
            ChangeKind::Put | ChangeKind::Status => {
                let mut v: Value = serde_json::from_slice(&c.object).ok()?;
                if let Some(m) = v.get_mut("metadata").and_then(Value::as_object_mut) {
                    m.remove("resourceVersion");
                }
                if EDGE_STATUS.contains(&key.resource.as_str()) {
                    if let Some(local) = current.as_deref().and_then(|c| c.get("status")) {
                        v["status"] = local.clone();
                    }
                }
                // A pod this site bound keeps its node until the cloud has the binding too.
                let unbound = |o: &Value| {
                    o.pointer("/spec/nodeName")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .is_empty()
                };
                if key.resource == "pods" && unbound(&v) {
                    if let Some(n) = current
                        .as_deref()
                        .and_then(|c| c.pointer("/spec/nodeName"))
                        .filter(|n| n.as_str().is_some_and(|s| !s.is_empty()))
                    {
                        v["spec"]["nodeName"] = n.clone();
                    }
                }
                Some(Op::Put {
                    key,
                    value: v,
                    pre: Precondition::Any,
                })
            }
        }
    }
}
