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

mod apply;
mod join;
mod metrics;
mod session;
mod status;
mod tunnel;

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
    /// Log and container-stream tunnels per site, bounded.
    tunnels: HashMap<String, tunnel::Pools>,
}

/// Most log streams tunnelled to one site at once. With the cloud's per-stream receive window
/// (`sync::quic`) this bounds what stalled log streams can hold of the connection's window, so
/// they cannot starve the site's sync stream.
pub const MAX_LOG_TUNNELS: usize = 16;
/// Most exec/attach streams tunnelled to one site at once (bounded for the same reason: with
/// the log streams, what stalled streams can hold stays under the connection's window minus
/// room for the sync stream).
pub const MAX_STREAM_TUNNELS: usize = 16;
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
    metrics: metrics::SyncMetrics,
}

/// Finish the stream and give the peer a moment to read what was written (an error frame)
/// before the connection goes.
async fn finish(send: &mut quinn::SendStream) {
    let _ = send.finish();
    let _ = tokio::time::timeout(Duration::from_secs(2), send.stopped()).await;
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
        let metrics = metrics::SyncMetrics::register(&api.metrics);
        let hub = Arc::new(Hub {
            metrics,
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
