//! The sync hub: serves edge sites over QUIC.
//!
//! - Downlink: each session pulls its site's batches from the share tracker
//!   ([`crate::shares`]).
//! - Join: a single-use, expiring token (stored hashed) buys a client certificate and a
//!   serving certificate signed by the region CA; the client certificate's fingerprint is the
//!   site's identity from then on.
//! - Uplink: each change is judged under the site's identity ([`crate::uplink`]) and applied
//!   (or refused) in one transaction with the site's applied sequence number; refusals go back
//!   with the ack and show as Warning events on the EdgeSite.
//! - Revocation: deleting an EdgeSite ends its sessions; a successor certificate in use retires
//!   its predecessors.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use apiserver::api::Api;
use proto::sync::{
    frame::Body, ChangeKind, ErrorFrame, Frame, JoinRequest, JoinResponse, ObjectKey, Refusal, Up,
};
use serde_json::{json, Value};
use store::{EventType, Key, Op, Precondition, Store, StoreError};
use sync::protocol::{Config, HubAction, HubSession};
use sync::quic;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::pki::Pki;
use crate::shares::{LogGap, Shares, SiteLog, Start};
use crate::uplink;

pub use crate::shares::{node_site, placed_site, pod_refs};

pub use proto::{origin, ORIGIN};
/// Label on every node of a site.
pub const SITE_LABEL: &str = proto::SITE_LABEL;
/// Internal resource: join tokens by hash.
pub const JOIN_TOKENS: &str = apiserver::api::JOIN_TOKENS;
/// Internal resource: the client certificates issued to sites, by fingerprint.
pub const SITE_CERTS: &str = "sitecerts";
/// Internal resource: each site's applied uplink sequence.
pub const SITE_SEQ: &str = "siteseqs";
/// Store name of EdgeSites.
pub const EDGESITES: &str = "edgesites.edge.atoll.io";

/// A live sync session: its site, the fingerprint of the certificate it authenticated with,
/// and how to end it (revocation).
struct SessionInfo {
    site: String,
    fingerprint: String,
    cancel: CancellationToken,
    conn: quinn::Connection,
    /// Downlink version the site has acknowledged on this session.
    acked_rv: u64,
    started: std::time::Instant,
}

/// What the hub knows about connected sites (for EdgeSite status and log tunnels).
#[derive(Default)]
struct Live {
    /// Every live session by connection id (a site normally has one; a reconnect may overlap
    /// the old session for a moment).
    sessions: HashMap<usize, SessionInfo>,
    /// Refusal events per site: window start and count (rate limit).
    refusal_events: HashMap<String, (std::time::Instant, u32)>,
    /// Log tunnels per site, bounded.
    tunnels: HashMap<String, Arc<tokio::sync::Semaphore>>,
}

/// Most log streams tunnelled to one site at once. With the cloud's per-stream receive window
/// (`sync::quic`) this bounds what stalled log streams can hold of the connection's window, so
/// they cannot starve the site's sync stream.
pub const MAX_LOG_TUNNELS: usize = 16;
/// A log stream whose reader takes nothing for this long is dropped (frees its window).
const TUNNEL_STALL: Duration = Duration::from_secs(60);
/// How long a site has to answer a log request (it connects to the node's agent first).
const TUNNEL_ANSWER: Duration = Duration::from_secs(30);
/// Largest error message relayed from a site.
const MAX_SITE_MESSAGE: usize = 1024;
/// Refusals kept per site for the Welcome.
const RECENT_REFUSALS: usize = 64;
/// New refusal events per site and minute (repeats of one only count up).
const REFUSAL_EVENTS_PER_MINUTE: u32 = 20;

/// The hub.
pub struct Hub {
    store: Store,
    /// The API whose admission rules judge what sites send.
    api: Arc<Api>,
    pki: Arc<Pki>,
    shares: Shares,
    live: Mutex<Live>,
    cfg: Config,
    site_cert_ttl: Duration,
}

/// Finish the stream and give the peer a moment to read what was written (an error frame)
/// before the connection goes.
async fn finish(send: &mut quinn::SendStream) {
    let _ = send.finish();
    let _ = tokio::time::timeout(Duration::from_secs(2), send.stopped()).await;
}

/// The record that makes a client certificate a site's: by fingerprint, for the EdgeSite (name
/// and uid) it was issued to.
fn cert_record(fp: &[u8; 32], site: &str, site_uid: &str) -> Value {
    json!({"metadata": {"name": hex(fp)}, "site": site, "siteUid": site_uid, "issued": now_str()})
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn now_str() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

impl Hub {
    /// Build the hub and start its share tracker and status loop.
    pub fn start(
        api: Arc<Api>,
        pki: Arc<Pki>,
        site_cert_ttl: Duration,
        cancel: CancellationToken,
    ) -> Arc<Self> {
        let kick = Arc::new(tokio::sync::Notify::new());
        let store = api.store.clone();
        let shares = Shares::start(store.clone(), kick.clone(), cancel.clone());
        let hub = Arc::new(Hub {
            store,
            api,
            pki,
            shares,
            live: Mutex::new(Live::default()),
            cfg: Config::default(),
            site_cert_ttl,
        });
        tokio::spawn(hub.clone().follow_deletions(cancel.clone()));
        let h = hub.clone();
        tokio::spawn(async move {
            loop {
                h.update_status().await;
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(5)) => {}
                    _ = kick.notified() => {}
                }
            }
        });
        hub
    }

    /// Accept site connections on `endpoint` until cancelled.
    pub async fn serve(self: Arc<Self>, endpoint: quinn::Endpoint, cancel: CancellationToken) {
        loop {
            let incoming = tokio::select! {
                _ = cancel.cancelled() => { endpoint.close(0u32.into(), b"shutting down"); return }
                i = endpoint.accept() => match i { Some(i) => i, None => return },
            };
            let hub = self.clone();
            tokio::spawn(async move {
                let remote = incoming.remote_address();
                if let Err(e) = hub.connection(incoming).await {
                    tracing::info!(%remote, error = %e, "sync connection ended");
                }
            });
        }
    }

    /// The site a connection's client certificate was issued to, with the certificate's
    /// fingerprint. A certificate is honoured only while its record exists (deleting the
    /// EdgeSite, or the site using a successor, removes it) and only for the EdgeSite it was
    /// issued to: a site deleted and created again under the same name has a new uid, and
    /// the old certificates stay refused though they have not expired.
    fn site_of_cert(&self, conn: &quinn::Connection) -> Option<(String, String)> {
        let certs = conn
            .peer_identity()?
            .downcast::<Vec<rustls::pki_types::CertificateDer<'static>>>()
            .ok()?;
        let fp = hex(&quic::fingerprint(certs.first()?));
        let rec = self.store.get(&Key::new(SITE_CERTS, "", "", &fp))?;
        let site = rec.get("site").and_then(Value::as_str)?.to_string();
        let es = self.store.get(&Key::new(EDGESITES, "", "", &site))?;
        let uid = es.pointer("/metadata/uid").and_then(Value::as_str);
        if rec.get("siteUid").and_then(Value::as_str) != uid {
            return None;
        }
        Some((site, fp))
    }

    /// End every live session of `site` (its EdgeSite was deleted).
    fn end_sessions(&self, why: &str, pred: impl Fn(&SessionInfo) -> bool) {
        if let Ok(l) = self.live.lock() {
            for info in l.sessions.values().filter(|i| pred(i)) {
                tracing::warn!(site = %info.site, reason = %why, "ending the site's sync session");
                info.cancel.cancel();
            }
        }
    }

    /// A site authenticated with the certificate `fp`: its predecessors (issued earlier to the
    /// same site) stop working from now on, and sessions still using them end.
    async fn retire_predecessors(&self, site: &str, fp: &str) {
        let certs = self.store.list_of(SITE_CERTS, Some(""));
        let rv_of = |v: &Value| store::object_rv(v).unwrap_or(0);
        let Some(mine) = certs
            .iter()
            .find(|(k, _)| k.name == fp)
            .map(|(_, v)| rv_of(v))
        else {
            return;
        };
        let mut retired = Vec::new();
        for (k, v) in certs.iter() {
            if k.name != fp
                && v.get("site").and_then(Value::as_str) == Some(site)
                && rv_of(v) < mine
                && self
                    .store
                    .delete(k.clone(), Precondition::Exists)
                    .await
                    .is_ok()
            {
                retired.push(k.name.clone());
            }
        }
        if !retired.is_empty() {
            tracing::info!(%site, count = retired.len(), "retired the site's earlier certificates");
            self.end_sessions("its certificate was replaced by a newer one", |i| {
                retired.contains(&i.fingerprint)
            });
        }
    }

    /// Follow EdgeSite deletions: the site's sessions end at once (its certificate records go
    /// in the same transaction as the EdgeSite, see [`crate::hooks`]).
    async fn follow_deletions(self: Arc<Self>, cancel: CancellationToken) {
        loop {
            let (_, _, mut live) = self
                .store
                .list_and_watch(&store::Scope::of(EDGESITES, Some("")));
            // Anything deleted while this watch was not running.
            let sites: std::collections::HashSet<String> = self
                .store
                .list_of(EDGESITES, Some(""))
                .iter()
                .map(|(k, _)| k.name.clone())
                .collect();
            self.end_sessions("its edge site was deleted", |i| !sites.contains(&i.site));
            loop {
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    ev = live.recv() => match ev {
                        Ok(e) if e.kind == EventType::Deleted && e.key.resource == EDGESITES => {
                            let site = e.key.name.clone();
                            tracing::info!(%site, "edge site deleted: its certificates are revoked");
                            self.end_sessions("its edge site was deleted", |i| i.site == site);
                        }
                        Ok(_) => {}
                        Err(_) => break,
                    },
                }
            }
        }
    }

    async fn connection(self: Arc<Self>, incoming: quinn::Incoming) -> Result<(), String> {
        let conn = incoming.await.map_err(|e| e.to_string())?;
        let site = self.site_of_cert(&conn);
        let (mut send, mut recv) = conn.accept_bi().await.map_err(|e| e.to_string())?;
        let first = quic::read_frame(&mut recv)
            .await
            .map_err(|e| e.to_string())?
            .ok_or("stream closed before hello")?;
        match (first.body, site) {
            (Some(Body::JoinRequest(j)), _) => {
                let reply = match self.join(&j).await {
                    Ok(r) => Frame::new(Body::JoinResponse(r)),
                    Err(msg) => {
                        tracing::warn!(site = %j.site, reason = %msg, "join refused");
                        Frame::new(Body::Error(ErrorFrame {
                            retryable: false,
                            message: msg,
                        }))
                    }
                };
                quic::write_frame(&mut send, &reply)
                    .await
                    .map_err(|e| e.to_string())?;
                let _ = send.finish();
                let _ = tokio::time::timeout(Duration::from_secs(5), conn.closed()).await;
                Ok(())
            }
            (Some(Body::Hello(h)), Some((site, fp))) => {
                let renewals = self.serve_renewals(conn.clone(), site.clone());
                let r = self.clone().session(conn, send, recv, site, fp, h).await;
                renewals.abort();
                r
            }
            (Some(Body::Hello(h)), None) => {
                let msg = format!(
                    "site {:?} presented no valid certificate issued at join (unknown, replaced by a newer one, or revoked with its edge site); join first",
                    h.site
                );
                let f = Frame::new(Body::Error(ErrorFrame {
                    retryable: false,
                    message: msg.clone(),
                }));
                let _ = quic::write_frame(&mut send, &f).await;
                finish(&mut send).await;
                Err(msg)
            }
            _ => Err("unexpected first frame".into()),
        }
    }

    async fn join(&self, j: &JoinRequest) -> Result<JoinResponse, String> {
        let key = Key::new(JOIN_TOKENS, "", "", &apiserver::auth::hash_token(&j.secret));
        let rec = self.store.get(&key).ok_or("invalid join token")?;
        let site = rec.get("site").and_then(Value::as_str).unwrap_or("");
        if site != j.site {
            return Err(format!("join token is for site {site:?}, not {:?}", j.site));
        }
        if rec.get("used").and_then(Value::as_bool) == Some(true) {
            return Err("join token already used".into());
        }
        let expired = rec
            .get("expires")
            .and_then(Value::as_str)
            .and_then(|e| chrono::DateTime::parse_from_rfc3339(e).ok())
            .is_none_or(|e| e < chrono::Utc::now());
        if expired {
            return Err("join token expired".into());
        }
        let site_uid = self.site_uid(site)?;
        let (resp, fp) = self.issue_site(site, &j.serving_names)?;
        let mut used = (*rec).clone();
        used["used"] = json!(true);
        let rv = store::object_rv(&rec).unwrap_or(0);
        let cert_rec = cert_record(&fp, site, &site_uid);
        self.store
            .commit(vec![
                Op::Put {
                    key,
                    value: used,
                    pre: Precondition::Version(rv),
                },
                Op::Put {
                    key: Key::new(SITE_CERTS, "", "", &hex(&fp)),
                    value: cert_rec,
                    pre: Precondition::Absent,
                },
            ])
            .await
            .map_err(|_| "join token already used".to_string())?;
        tracing::info!(%site, "site joined");
        Ok(resp)
    }

    /// The uid of an existing EdgeSite.
    fn site_uid(&self, site: &str) -> Result<String, String> {
        self.store
            .get(&Key::new(EDGESITES, "", "", site))
            .and_then(|v| {
                v.pointer("/metadata/uid")
                    .and_then(Value::as_str)
                    .map(String::from)
            })
            .ok_or_else(|| format!("edge site {site:?} does not exist"))
    }

    /// A site's client and serving certificates, signed by the region CA.
    fn issue_site(
        &self,
        site: &str,
        serving_names: &[String],
    ) -> Result<(JoinResponse, [u8; 32]), String> {
        let ttl = self.site_cert_ttl;
        let client = self
            .pki
            .issue(site, &[format!("{site}.sites.atoll.internal")], true, ttl)
            .map_err(|e| format!("issuing certificate: {e}"))?;
        let mut names = vec![
            "localhost".to_string(),
            "127.0.0.1".to_string(),
            "::1".to_string(),
        ];
        names.extend(
            serving_names
                .iter()
                .filter(|n| !n.is_empty() && n.len() < 254)
                .take(16)
                .cloned(),
        );
        let serving = self
            .pki
            .issue(&format!("edge-{site}"), &names, false, ttl)
            .map_err(|e| format!("issuing certificate: {e}"))?;
        let resp = JoinResponse {
            ca_pem: String::from_utf8_lossy(&self.pki.ca_pem).into_owned(),
            client_cert_pem: client.cert_pem,
            client_key_pem: client.key_pem,
            serving_cert_pem: serving.cert_pem,
            serving_key_pem: serving.key_pem,
            not_before: client.not_before,
            not_after: client.not_after,
        };
        Ok((resp, client.fingerprint))
    }

    /// Renew an authenticated site's certificates; the old ones stay valid until they expire,
    /// so nothing is dropped.
    async fn renew(&self, site: &str, names: &[String]) -> Result<JoinResponse, String> {
        let site_uid = self.site_uid(site)?;
        let (resp, fp) = self.issue_site(site, names)?;
        let rec = cert_record(&fp, site, &site_uid);
        self.store
            .put(
                Key::new(SITE_CERTS, "", "", &hex(&fp)),
                rec,
                Precondition::Absent,
            )
            .await
            .map_err(|e| e.to_string())?;
        tracing::info!(%site, "site certificates renewed");
        Ok(resp)
    }

    /// Serve renewal requests on further streams of an authenticated connection.
    fn serve_renewals(
        self: &Arc<Self>,
        conn: quinn::Connection,
        site: String,
    ) -> tokio::task::JoinHandle<()> {
        let hub = self.clone();
        tokio::spawn(async move {
            while let Ok((mut send, mut recv)) = conn.accept_bi().await {
                let (hub, site) = (hub.clone(), site.clone());
                tokio::spawn(async move {
                    let reply = match quic::read_frame(&mut recv).await {
                        Ok(Some(Frame {
                            body: Some(Body::RenewRequest(r)),
                        })) => match hub.renew(&site, &r.serving_names).await {
                            Ok(resp) => Frame::new(Body::JoinResponse(resp)),
                            Err(e) => Frame::new(Body::Error(ErrorFrame {
                                retryable: true,
                                message: e,
                            })),
                        },
                        _ => Frame::new(Body::Error(ErrorFrame {
                            retryable: false,
                            message: "expected a renewal request".into(),
                        })),
                    };
                    let _ = quic::write_frame(&mut send, &reply).await;
                    finish(&mut send).await;
                });
            }
        })
    }

    fn up_applied(&self, site: &str) -> u64 {
        self.store
            .get(&Key::new(SITE_SEQ, "", "", site))
            .and_then(|v| v.get("seq").and_then(Value::as_u64))
            .unwrap_or(0)
    }

    async fn session(
        self: Arc<Self>,
        conn: quinn::Connection,
        mut send: quinn::SendStream,
        mut recv: quinn::RecvStream,
        site: String,
        fingerprint: String,
        hello: proto::sync::Hello,
    ) -> Result<(), String> {
        let now = || tokio::time::Instant::now().into_std();
        let ended = CancellationToken::new();
        let mut s = HubSession::new(self.cfg.clone(), &site, self.up_applied(&site), now());
        s.handle(Frame::new(Body::Hello(hello)), now());
        // Frames are read on their own task: reads are not cancel-safe inside select!.
        let (ftx, mut frx) = mpsc::channel::<Frame>(256);
        let reader = tokio::spawn(async move {
            while let Ok(Some(f)) = quic::read_frame(&mut recv).await {
                if ftx.send(f).await.is_err() {
                    break;
                }
            }
        });
        let mut log: Option<Arc<SiteLog>> = None;
        self.live
            .lock()
            .map(|mut l| {
                l.sessions.insert(
                    conn.stable_id(),
                    SessionInfo {
                        site: site.clone(),
                        fingerprint: fingerprint.clone(),
                        cancel: ended.clone(),
                        conn: conn.clone(),
                        acked_rv: 0,
                        started: std::time::Instant::now(),
                    },
                );
            })
            .ok();
        self.update_status().await;
        tracing::info!(%site, remote = %conn.remote_address(), "site connected");
        self.retire_predecessors(&site, &fingerprint).await;
        let result = 'session: loop {
            while let Some(f) = s.poll_transmit(now()) {
                if let Err(e) = quic::write_frame(&mut send, &f).await {
                    break 'session format!("write failed: {e}");
                }
            }
            let mut closed = None;
            let mut actions: VecDeque<HubAction> = std::iter::from_fn(|| s.poll_action()).collect();
            let acted = !actions.is_empty();
            while let Some(a) = actions.pop_front() {
                match a {
                    HubAction::Hello { applied_rv } => {
                        s.set_recent_refused(self.recent_refusals(&site));
                        match self.shares.subscribe(&site, applied_rv).await {
                            Some((Start::Resume, rx)) => {
                                s.resume(applied_rv, now());
                                log = Some(rx);
                            }
                            Some((Start::Snapshot(rv, changes), rx)) => {
                                tracing::info!(%site, applied_rv, rv, objects = changes.len(), "sending snapshot");
                                s.snapshot(rv, changes, now());
                                log = Some(rx);
                            }
                            None => closed = Some("hub shutting down".to_string()),
                        }
                    }
                    HubAction::ApplyUp(first) => {
                        // Consecutive uplink changes are applied together (see apply_ups).
                        let mut batch = vec![first];
                        while matches!(actions.front(), Some(HubAction::ApplyUp(_))) {
                            if let Some(HubAction::ApplyUp(u)) = actions.pop_front() {
                                batch.push(u);
                            }
                        }
                        let last = batch.last().map_or(0, |u| u.seq);
                        match self.apply_ups(&site, batch).await {
                            Ok(refused) => {
                                let refused = refused
                                    .into_iter()
                                    .map(|r| {
                                        let key = r.key.unwrap_or_default();
                                        self.refusal(&site, r.seq, key, r.reason)
                                    })
                                    .collect();
                                s.up_applied(last, refused);
                            }
                            Err(e) => {
                                closed = Some(format!("applying uplink up to {last}: {e}"));
                                break;
                            }
                        }
                    }
                    HubAction::DownAcked(rv) => {
                        self.live
                            .lock()
                            .map(|mut l| {
                                if let Some(i) = l.sessions.get_mut(&conn.stable_id()) {
                                    i.acked_rv = rv;
                                }
                            })
                            .ok();
                    }
                    HubAction::Close(c) => closed = Some(c.reason),
                }
            }
            if let Some(reason) = closed {
                while let Some(f) = s.poll_transmit(now()) {
                    let _ = quic::write_frame(&mut send, &f).await;
                }
                break reason;
            }
            if acted {
                // Actions may have queued frames: send them before blocking.
                continue;
            }
            // Pull the next batches from the site's log; register for a wakeup first so an
            // append between the check and the wait is not missed.
            // Before the session has a log (no Hello yet) it waits on a log nobody appends to.
            let site_log = log.clone().unwrap_or_default();
            let notified = site_log.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let mut pulled = false;
            if let (Some(l), true) = (&log, s.wants_down()) {
                match l.after(s.sent_rv(), 64) {
                    Ok(batches) => {
                        for (rv, changes) in batches {
                            pulled = true;
                            s.push_down(rv, (*changes).clone());
                        }
                    }
                    Err(LogGap::Evicted) => {
                        break "the site fell out of its downlink log; it will resync by snapshot"
                            .to_string()
                    }
                    Err(LogGap::Closed) => {
                        break "share tracker rebuilt; the site will resync".to_string()
                    }
                }
            }
            if pulled {
                continue;
            }
            let wants = s.wants_down() && log.is_some();
            let deadline = tokio::time::Instant::from_std(s.next_timeout());
            tokio::select! {
                f = frx.recv() => match f {
                    Some(f) => s.handle(f, now()),
                    None => break "connection closed".to_string(),
                },
                _ = &mut notified, if wants => {}
                _ = tokio::time::sleep_until(deadline) => s.handle_timeout(now()),
                _ = ended.cancelled() => {
                    let msg = format!("site {site}: certificate revoked (its edge site was deleted, or a newer certificate is in use)");
                    let f = Frame::new(Body::Error(ErrorFrame { retryable: false, message: msg.clone() }));
                    let _ = quic::write_frame(&mut send, &f).await;
                    break msg;
                }
            }
        };
        finish(&mut send).await;
        reader.abort();
        conn.close(0u32.into(), b"bye");
        self.live
            .lock()
            .map(|mut l| {
                l.sessions.remove(&conn.stable_id());
            })
            .ok();
        self.update_status().await;
        tracing::info!(%site, reason = %result, "site disconnected");
        Ok(())
    }

    /// Stream container logs from `site` over its live connection: a new stream carries the
    /// request; the site answers a `LogResponse` and then the bytes. What the site sends is
    /// bounded: one capped frame, then bytes passed on only as fast as the reader takes them
    /// (QUIC flow control holds the site back), and a reader that stalls drops the stream.
    pub async fn open_logs(
        &self,
        site: &str,
        req: proto::sync::LogRequest,
    ) -> apiserver::error::ApiResult<apiserver::logs::LogStream> {
        use apiserver::error::ApiError;
        let not_connected = || ApiError::unavailable(format!("site {site} is not connected"));
        let (conn, slots) = {
            let mut l = self.live.lock().map_err(|_| not_connected())?;
            let slots = l
                .tunnels
                .entry(site.to_string())
                .or_insert_with(|| Arc::new(tokio::sync::Semaphore::new(MAX_LOG_TUNNELS)))
                .clone();
            (l.newest(site).map(|i| i.conn.clone()), slots)
        };
        let conn = conn.ok_or_else(not_connected)?;
        let permit = slots.try_acquire_owned().map_err(|_| {
            ApiError::from_code(
                429,
                format!("too many log streams to site {site}; try again later"),
            )
        })?;
        let (mut send, mut recv) = tokio::time::timeout(Duration::from_secs(5), conn.open_bi())
            .await
            .map_err(|_| not_connected())?
            .map_err(|_| not_connected())?;
        quic::write_frame(&mut send, &Frame::new(Body::LogRequest(req)))
            .await
            .map_err(|_| not_connected())?;
        let _ = send.finish();
        let bad = |why: &str| {
            tracing::warn!(%site, reason = %why, "bad answer to a log request");
            ApiError::from_code(502, format!("site {site} gave no valid answer: {why}"))
        };
        let head = match tokio::time::timeout(TUNNEL_ANSWER, quic::read_frame(&mut recv)).await {
            Ok(Ok(Some(Frame {
                body: Some(Body::LogResponse(r)),
            }))) => r,
            Ok(Ok(Some(_))) => return Err(bad("unexpected frame")),
            Ok(Ok(None)) => return Err(bad("stream ended")),
            Ok(Err(e)) => return Err(bad(&e.to_string())),
            Err(_) => {
                let _ = recv.stop(0u32.into());
                return Err(ApiError::from_code(
                    504,
                    format!("site {site} did not answer the log request in time"),
                ));
            }
        };
        if head.code != 200 {
            let _ = recv.stop(0u32.into());
            let mut msg = head.message;
            if msg.len() > MAX_SITE_MESSAGE {
                let mut cut = MAX_SITE_MESSAGE;
                while !msg.is_char_boundary(cut) {
                    cut -= 1;
                }
                msg.truncate(cut);
            }
            let code = u16::try_from(head.code).unwrap_or(502);
            return Err(ApiError::from_code(code, msg));
        }
        let (tx, rx) = mpsc::channel(proto::logs::STREAM_CHUNKS);
        let site = site.to_string();
        tokio::spawn(async move {
            let _permit = permit;
            loop {
                tokio::select! {
                    c = recv.read_chunk(64 * 1024, true) => match c {
                        Ok(Some(chunk)) => match tx.send_timeout(chunk.bytes, TUNNEL_STALL).await {
                            Ok(()) => {}
                            Err(mpsc::error::SendTimeoutError::Timeout(_)) => {
                                tracing::info!(%site, "log reader stalled; dropping the stream");
                                let _ = recv.stop(0u32.into());
                                return;
                            }
                            Err(mpsc::error::SendTimeoutError::Closed(_)) => {
                                let _ = recv.stop(0u32.into());
                                return;
                            }
                        },
                        // Finished, reset by the site, or the connection went away.
                        _ => return,
                    },
                    _ = tx.closed() => {
                        // The client went away: tell the site to stop.
                        let _ = recv.stop(0u32.into());
                        return;
                    }
                }
            }
        });
        Ok(rx)
    }

    /// Apply a run of uplink changes in order, as if one by one, but without one synced commit
    /// each: changes run concurrently (so the store commits them in groups) in waves that never
    /// hold the same object twice, and a node change goes in a wave of its own (pods' bindings
    /// and statuses are checked against nodes). The site's sequence number (with the run's
    /// refusals) is recorded once, after every change of the run is durable; a crash before
    /// that makes the site send the run again, and every kind of change is safe to judge and
    /// apply twice. Returns the run's refusals.
    async fn apply_ups(&self, site: &str, ups: Vec<Up>) -> Result<Vec<Refusal>, String> {
        let last = ups.last().map_or(0, |u| u.seq);
        let mut refused = Vec::new();
        if ups.len() == 1 {
            if let Some(r) = self.apply_up(site, &ups[0], true).await? {
                refused.push(r);
            }
            return Ok(refused);
        }
        let mut wave: Vec<&Up> = Vec::new();
        let mut keys: std::collections::HashSet<(&str, &str, &str, &str)> = Default::default();
        for u in &ups {
            let (k, alone) = match u.key.as_ref() {
                Some(k) => (
                    (
                        k.resource.as_str(),
                        k.tenant.as_str(),
                        k.namespace.as_str(),
                        k.name.as_str(),
                    ),
                    k.resource == "nodes",
                ),
                None => (("", "", "", ""), true),
            };
            let clash = keys.contains(&k) || (alone && !wave.is_empty());
            if clash {
                refused.extend(self.apply_wave(site, &std::mem::take(&mut wave)).await?);
                keys.clear();
            }
            wave.push(u);
            keys.insert(k);
            if alone {
                refused.extend(self.apply_wave(site, &std::mem::take(&mut wave)).await?);
                keys.clear();
            }
        }
        refused.extend(self.apply_wave(site, &wave).await?);
        self.store
            .commit(vec![self.seq_op(site, last, &refused)])
            .await
            .map_err(|e| e.to_string())?;
        Ok(refused)
    }

    /// Apply independent uplink changes concurrently, recording no sequence number.
    async fn apply_wave(&self, site: &str, wave: &[&Up]) -> Result<Vec<Refusal>, String> {
        let results =
            futures_util::future::join_all(wave.iter().map(|u| self.apply_up(site, u, false)))
                .await;
        let mut out = Vec::new();
        for r in results {
            out.extend(r?);
        }
        Ok(out)
    }

    /// The site's uplink position: its applied sequence and its most recent refusals (bounded:
    /// the Welcome repeats them, so a refusal whose ack was lost still reaches the site).
    fn seq_op(&self, site: &str, seq: u64, refused: &[Refusal]) -> Op {
        let key = Key::new(SITE_SEQ, "", "", site);
        let mut recent: Vec<Value> = self
            .store
            .get(&key)
            .and_then(|v| v.get("refused").and_then(Value::as_array).cloned())
            .unwrap_or_default();
        for r in refused {
            let k = r.key.clone().unwrap_or_default();
            recent.push(json!({"seq": r.seq, "reason": r.reason,
                "key": {"resource": k.resource, "tenant": k.tenant, "namespace": k.namespace, "name": k.name}}));
        }
        let excess = recent.len().saturating_sub(RECENT_REFUSALS);
        recent.drain(..excess);
        Op::Put {
            key,
            value: json!({"metadata": {"name": site}, "seq": seq, "refused": recent}),
            pre: Precondition::Any,
        }
    }

    /// The site's recorded recent refusals, as the Welcome carries them.
    fn recent_refusals(&self, site: &str) -> Vec<Refusal> {
        let rec = self.store.get(&Key::new(SITE_SEQ, "", "", site));
        let list = rec
            .as_deref()
            .and_then(|v| v.get("refused"))
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        list.iter()
            .map(|r| {
                let k = &r["key"];
                let s = |v: &Value| v.as_str().unwrap_or("").to_string();
                let key = ObjectKey {
                    resource: s(&k["resource"]),
                    tenant: s(&k["tenant"]),
                    namespace: s(&k["namespace"]),
                    name: s(&k["name"]),
                };
                self.refusal(site, r["seq"].as_u64().unwrap_or(0), key, s(&r["reason"]))
            })
            .collect()
    }

    /// A refusal as the site receives it: with the cloud's copy of the object when it is one
    /// the site created (so the site replaces its own copy with it), or word that the cloud
    /// holds none of the site's under that key.
    fn refusal(&self, site: &str, seq: u64, key: ObjectKey, mut reason: String) -> Refusal {
        let current = self
            .store
            .get(&Key::new(
                &key.resource,
                &key.tenant,
                &key.namespace,
                &key.name,
            ))
            .filter(|c| origin(c) == Some(site));
        let object = current
            .as_deref()
            .and_then(|c| serde_json::to_vec(c).ok())
            .filter(|o| o.len() <= proto::sync::MAX_REFUSAL_OBJECT)
            .unwrap_or_default();
        if reason.len() > proto::sync::MAX_REFUSAL_REASON {
            let mut cut = proto::sync::MAX_REFUSAL_REASON;
            while !reason.is_char_boundary(cut) {
                cut -= 1;
            }
            reason.truncate(cut);
        }
        Refusal {
            seq,
            key: Some(key),
            reason,
            object,
            absent: current.is_none(),
        }
    }

    /// Judge and apply one uplink change; `record_seq` commits the site's sequence number
    /// with it. A change that lost a race with a cloud write is judged again on the newer
    /// state. A refusal is logged, shown as a Warning event on the EdgeSite, and returned.
    async fn apply_up(
        &self,
        site: &str,
        up: &Up,
        record_seq: bool,
    ) -> Result<Option<Refusal>, String> {
        let serves = |t: &str| self.shares.serves(site, t);
        let who = uplink::Site {
            name: site,
            serves: &serves,
        };
        for _attempt in 0..5 {
            let mut ops = match uplink::judge(&self.api, &who, up) {
                uplink::Verdict::Apply(ops) => ops,
                uplink::Verdict::Nothing => Vec::new(),
                uplink::Verdict::Refuse(reason) => {
                    return self.refuse(site, up, reason, record_seq).await
                }
            };
            if record_seq {
                ops.push(self.seq_op(site, up.seq, &[]));
            }
            if ops.is_empty() {
                return Ok(None);
            }
            match self.store.commit(ops).await {
                Ok(_) => return Ok(None),
                Err(
                    StoreError::Conflict(_)
                    | StoreError::AlreadyExists(_)
                    | StoreError::NotFound(_),
                ) => continue,
                Err(e) => return Err(e.to_string()),
            }
        }
        let reason = "it lost every race with concurrent writes at the cloud".to_string();
        self.refuse(site, up, reason, record_seq).await
    }

    async fn refuse(
        &self,
        site: &str,
        up: &Up,
        reason: String,
        record_seq: bool,
    ) -> Result<Option<Refusal>, String> {
        let key = up.key.clone().unwrap_or_default();
        let kind = ChangeKind::try_from(up.kind)
            .map(|k| format!("{k:?}"))
            .unwrap_or_else(|_| "unknown".into());
        let kind = kind.as_str();
        tracing::warn!(%site, seq = up.seq, kind, resource = %key.resource, tenant = %key.tenant,
            namespace = %key.namespace, name = %key.name, %reason, "uplink change refused");
        let r = Refusal {
            seq: up.seq,
            key: Some(key.clone()),
            reason: reason.clone(),
            ..Default::default()
        };
        if record_seq {
            self.store
                .commit(vec![self.seq_op(site, up.seq, std::slice::from_ref(&r))])
                .await
                .map_err(|e| e.to_string())?;
        }
        self.warn_site(site, kind, &key, &reason).await;
        Ok(Some(r))
    }

    /// A Warning event on the EdgeSite (system space, namespace `default`, as for other
    /// cluster-scoped objects), one per refused object and reason with a count; at most
    /// [`REFUSAL_EVENTS_PER_MINUTE`] new ones per site a minute, the rest only logged.
    async fn warn_site(&self, site: &str, kind: &str, key: &ObjectKey, reason: &str) {
        use sha2::Digest;
        let what = if key.namespace.is_empty() {
            format!("{} {}", key.resource, key.name)
        } else {
            format!("{} {}/{}", key.resource, key.namespace, key.name)
        };
        let what = if key.tenant.is_empty() {
            what
        } else {
            format!("{what} of tenant {}", key.tenant)
        };
        let msg = format!("refused {kind} of {what}: {reason}");
        let digest = sha2::Sha256::digest(msg.as_bytes());
        let name = format!(
            "{site}.{}",
            digest
                .iter()
                .take(8)
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        );
        let ekey = Key::new("events", "", "default", &name);
        let now = now_str();
        let op = match self.store.get(&ekey) {
            Some(e) => {
                let mut n = (*e).clone();
                n["count"] = json!(e.get("count").and_then(Value::as_i64).unwrap_or(1) + 1);
                n["lastTimestamp"] = json!(now);
                Op::replace(ekey, &e, n)
            }
            None => {
                let allowed = self.live.lock().is_ok_and(|mut l| {
                    let (start, n) = l
                        .refusal_events
                        .entry(site.to_string())
                        .or_insert((std::time::Instant::now(), 0));
                    if start.elapsed() > Duration::from_secs(60) {
                        *start = std::time::Instant::now();
                        *n = 0;
                    }
                    *n += 1;
                    *n <= REFUSAL_EVENTS_PER_MINUTE
                });
                if !allowed {
                    return;
                }
                let uid = self
                    .store
                    .get(&Key::new(EDGESITES, "", "", site))
                    .and_then(|v| v.pointer("/metadata/uid").cloned())
                    .unwrap_or(Value::Null);
                let ev = json!({
                    "apiVersion": "v1", "kind": "Event",
                    "metadata": {"name": name, "namespace": "default", "uid": uuid::Uuid::new_v4().to_string(), "creationTimestamp": now},
                    "involvedObject": {"apiVersion": "edge.atoll.io/v1", "kind": "EdgeSite", "name": site, "uid": uid},
                    "type": "Warning", "reason": "UplinkRefused", "message": msg,
                    "source": {"component": "atoll-hub"}, "reportingComponent": "atoll-hub",
                    "firstTimestamp": now, "lastTimestamp": now, "count": 1,
                });
                Op::Put {
                    key: ekey,
                    value: ev,
                    pre: Precondition::Absent,
                }
            }
        };
        let _ = self.store.commit(vec![op]).await;
    }

    /// Write every EdgeSite's status: Connected, last seen, node count, applied version.
    async fn update_status(&self) {
        let sites = self.store.list_of(EDGESITES, Some(""));
        let nodes = self.store.list_of("nodes", Some(""));
        let connected = self.live.lock().map(|l| l.connected()).unwrap_or_default();
        let mut counts: HashMap<String, usize> = HashMap::new();
        for (_, n) in &nodes {
            if let Some(s) = node_site(n) {
                *counts.entry(s).or_default() += 1;
            }
        }
        for (k, v) in sites {
            let name = k.name.clone();
            let up = connected.get(&name);
            let count = counts.get(&name).copied().unwrap_or(0);
            let mut n = (*v).clone();
            let old_status = v.get("status").cloned();
            let was = v
                .pointer("/status/conditions")
                .and_then(Value::as_array)
                .and_then(|c| c.iter().find(|c| c["type"] == "Connected"))
                .and_then(|c| c.get("status"))
                .and_then(Value::as_str)
                .map(String::from);
            let status = if up.is_some() { "True" } else { "False" };
            let transition = if was.as_deref() == Some(status) {
                v.pointer("/status/conditions")
                    .and_then(Value::as_array)
                    .and_then(|c| c.iter().find(|c| c["type"] == "Connected"))
                    .and_then(|c| c.get("lastTransitionTime"))
                    .cloned()
                    .unwrap_or(json!(now_str()))
            } else {
                json!(now_str())
            };
            let reason = if up.is_some() {
                "SyncConnected"
            } else {
                "SyncDisconnected"
            };
            n["status"]["conditions"] = json!([{"type": "Connected", "status": status, "reason": reason, "message": "", "lastTransitionTime": transition}]);
            n["status"]["nodeCount"] = json!(count);
            if let Some(rv) = up {
                n["status"]["lastSeen"] = json!(now_str());
                if *rv > 0 {
                    n["status"]["appliedVersion"] = json!(rv.to_string());
                }
            }
            if n.get("status") == old_status.as_ref() {
                continue;
            }
            let rv = store::object_rv(&v).unwrap_or(0);
            let _ = self.store.put(k, n, Precondition::Version(rv)).await;
        }
    }
}

impl Live {
    /// The newest live session of `site`.
    fn newest(&self, site: &str) -> Option<&SessionInfo> {
        self.sessions
            .values()
            .filter(|i| i.site == site)
            .max_by_key(|i| i.started)
    }

    /// Connected sites with the downlink version each acknowledged (on its newest session).
    fn connected(&self) -> HashMap<String, u64> {
        let mut out = HashMap::new();
        for i in self.sessions.values() {
            if self
                .newest(&i.site)
                .is_some_and(|n| n.conn.stable_id() == i.conn.stable_id())
            {
                out.insert(i.site.clone(), i.acked_rv);
            }
        }
        out
    }
}
