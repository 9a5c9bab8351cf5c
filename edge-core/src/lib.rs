//! edge-core: a site's control plane. It serves the Kubernetes API (the `apiserver` crate) on a
//! local replica of the site's share, keeps it in sync with the cloud over QUIC (the `sync`
//! crate), and keeps serving and accepting edge-owned writes while the cloud is unreachable.

pub mod driver;
pub mod hooks;
pub mod logs;
pub mod nodes;
pub mod scheduler;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use apiserver::api::{Api, ApiConfig};
use apiserver::kubeconfig::Kubeconfig;
use proto::sync::{frame::Body, Frame, JoinRequest};
use serde_json::{json, Value};
use store::{Scope, Store};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// edge-core failures.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad configuration (exit 64).
    #[error("{0}")]
    Config(String),
    /// A file could not be read or written.
    #[error("{0}")]
    Io(PathBuf, #[source] std::io::Error),
    /// Joining the region failed.
    #[error("joining the region: {0}")]
    Join(String),
    /// The local store failed.
    #[error("store")]
    Store(#[from] store::StoreError),
    /// TLS setup failed.
    #[error("tls")]
    Tls(#[from] apiserver::server::ServerError),
    /// The API address could not be bound.
    #[error("binding {0}")]
    Bind(SocketAddr, #[source] std::io::Error),
}

/// Configuration of `edge-core serve`.
#[derive(Clone, Debug)]
pub struct EdgeConfig {
    /// Data directory.
    pub data_dir: PathBuf,
    /// The cloud's sync addresses (HOST:PORT), one per replica of the region.
    pub cloud: Vec<String>,
    /// This site's name.
    pub site: String,
    /// Join token (first start only).
    pub join_token: Option<String>,
    /// API listen address.
    pub listen: SocketAddr,
    /// Watch window of the local store.
    pub watch_window: usize,
    /// Keep the store in memory only (the hollow-site simulator; nothing survives a restart).
    pub in_memory: bool,
    /// Judge node health from Leases (off for hollow nodes, which renew none).
    pub judge_nodes: bool,
}

/// A running edge-core.
pub struct Running {
    /// API address.
    pub addr: SocketAddr,
    /// Local store.
    pub store: Store,
}

fn write_private(path: &Path, data: &[u8]) -> Result<(), Error> {
    boot::write_private(path, data).map_err(|e| Error::Io(path.to_path_buf(), e))
}

/// Credentials a site holds after joining, kept in one file (`pki/site.json`, 0600) so a
/// renewal replaces them all at once.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Creds {
    /// Region CA (PEM).
    pub ca: String,
    /// Sync client certificate (PEM).
    pub client_cert: String,
    /// Its key (PEM).
    pub client_key: String,
    /// API serving certificate (PEM).
    pub serving_cert: String,
    /// Its key (PEM).
    pub serving_key: String,
    /// Validity start (unix seconds).
    pub not_before: i64,
    /// Validity end (unix seconds).
    pub not_after: i64,
}

impl Creds {
    /// From the cloud's answer to a join or renewal.
    pub fn from_response(r: proto::sync::JoinResponse) -> Self {
        Creds {
            ca: r.ca_pem,
            client_cert: r.client_cert_pem,
            client_key: r.client_key_pem,
            serving_cert: r.serving_cert_pem,
            serving_key: r.serving_key_pem,
            not_before: r.not_before,
            not_after: r.not_after,
        }
    }

    /// Store atomically.
    pub fn save(&self, pki: &Path) -> Result<(), Error> {
        std::fs::create_dir_all(pki).map_err(|e| Error::Io(pki.to_path_buf(), e))?;
        let json = serde_json::to_vec_pretty(self).map_err(|e| Error::Join(e.to_string()))?;
        write_private(&pki.join("site.json"), &json)?;
        write_private(&pki.join("ca.crt"), self.ca.as_bytes())
    }

    /// When to renew: at two thirds of the lifetime.
    pub fn renew_at(&self) -> Option<std::time::SystemTime> {
        if self.not_after <= self.not_before {
            return None;
        }
        let at = self.not_before + (self.not_after - self.not_before) * 2 / 3;
        Some(std::time::UNIX_EPOCH + std::time::Duration::from_secs(u64::try_from(at).ok()?))
    }
}

fn load_creds(pki: &Path) -> Option<Creds> {
    serde_json::from_slice(&std::fs::read(pki.join("site.json")).ok()?).ok()
}

/// Split `HOST:PORT` into a socket address and a TLS server name.
pub fn cloud_addr(cloud: &str) -> Result<(SocketAddr, String), Error> {
    use std::net::ToSocketAddrs;
    let (host, _) = cloud
        .rsplit_once(':')
        .ok_or_else(|| Error::Config(format!("--cloud {cloud:?} must be HOST:PORT")))?;
    let addr = cloud
        .to_socket_addrs()
        .map_err(|e| Error::Config(format!("--cloud {cloud:?}: {e}")))?
        .next()
        .ok_or_else(|| Error::Config(format!("--cloud {cloud:?} resolves to nothing")))?;
    Ok((addr, host.trim_matches(['[', ']']).to_string()))
}

/// Join the region with a token (`SECRET.CAHASH`), storing the credentials under `pki`.
async fn join(cfg: &EdgeConfig, token: &str, pki: &Path) -> Result<Creds, Error> {
    let (secret, pin_hex) = token
        .rsplit_once('.')
        .ok_or_else(|| Error::Config("malformed join token (expected SECRET.CAHASH)".into()))?;
    let pin: Vec<u8> = (0..pin_hex.len())
        .step_by(2)
        .map(|i| {
            pin_hex
                .get(i..i + 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        })
        .collect::<Option<_>>()
        .filter(|p: &Vec<u8>| p.len() == 32)
        .ok_or_else(|| Error::Config("malformed join token: bad CA hash".into()))?;
    let pin: [u8; 32] = pin
        .try_into()
        .map_err(|_| Error::Config("malformed join token".into()))?;
    let ep = sync::quic::client(sync::quic::ClientAuth::Pinned(pin))
        .map_err(|e| Error::Join(e.to_string()))?;
    // The first replica that answers.
    let mut failed = Vec::new();
    let mut conn = None;
    for cloud in &cfg.cloud {
        let (addr, host) = cloud_addr(cloud)?;
        let attempt = match ep.connect(addr, &host) {
            Ok(c) => c.await.map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        match attempt {
            Ok(c) => {
                conn = Some(c);
                break;
            }
            Err(e) => failed.push(format!("{cloud}: {e}")),
        }
    }
    let conn = conn.ok_or_else(|| {
        Error::Join(format!(
            "{} (is the cloud's CA the one in the token?)",
            failed.join("; ")
        ))
    })?;
    let (mut send, mut recv) = conn
        .open_bi()
        .await
        .map_err(|e| Error::Join(e.to_string()))?;
    let req = Frame::new(Body::JoinRequest(JoinRequest {
        site: cfg.site.clone(),
        secret: secret.to_string(),
        serving_names: vec![cfg.listen.ip().to_string()],
    }));
    sync::quic::write_frame(&mut send, &req)
        .await
        .map_err(|e| Error::Join(e.to_string()))?;
    let _ = send.finish();
    let resp = sync::quic::read_frame(&mut recv)
        .await
        .map_err(|e| Error::Join(e.to_string()))?;
    conn.close(0u32.into(), b"joined");
    match resp.and_then(|f| f.body) {
        Some(Body::JoinResponse(r)) => {
            let creds = Creds::from_response(r);
            creds.save(pki)?;
            tracing::info!(site = %cfg.site, "joined the region");
            Ok(creds)
        }
        Some(Body::Error(e)) => Err(Error::Join(format!("the cloud refused: {}", e.message))),
        _ => Err(Error::Join("no answer from the cloud".into())),
    }
}

fn last_outbox_key(store: &Store) -> u64 {
    let (_, items) = store.list(
        &Scope {
            resource: hooks::OUTBOX.into(),
            tenant: Some(String::new()),
            namespace: None,
        },
        None,
    );
    items
        .last()
        .and_then(|(k, _)| k.name.parse().ok())
        .unwrap_or(0)
}

/// Start the site: join if needed, serve the API, run the sync driver.
pub async fn start(
    cfg: EdgeConfig,
    cancel: CancellationToken,
    tracker: &TaskTracker,
) -> Result<Running, Error> {
    if !proto::names::is_dns1123_label(&cfg.site) {
        return Err(Error::Config(format!(
            "invalid site name {:?}: must be an RFC 1123 label",
            cfg.site
        )));
    }
    if cfg.cloud.is_empty() {
        return Err(Error::Config("--cloud names no address".into()));
    }
    for c in &cfg.cloud {
        cloud_addr(c)?;
    }
    std::fs::create_dir_all(&cfg.data_dir).map_err(|e| Error::Io(cfg.data_dir.clone(), e))?;
    let pki = cfg.data_dir.join("pki");
    let site_file = cfg.data_dir.join("site");
    if let Ok(s) = std::fs::read_to_string(&site_file) {
        if s.trim() != cfg.site {
            return Err(Error::Config(format!(
                "this data dir belongs to site {:?}, not {:?}",
                s.trim(),
                cfg.site
            )));
        }
    }
    let creds = match load_creds(&pki) {
        Some(c) => c,
        None => {
            let token = cfg.join_token.clone().ok_or_else(|| Error::Config("this site has not joined yet: pass --join-token (from `cloud-core join-token`)".into()))?;
            let c = join(&cfg, &token, &pki).await?;
            std::fs::write(&site_file, &cfg.site).map_err(|e| Error::Io(site_file.clone(), e))?;
            c
        }
    };
    let store = if cfg.in_memory {
        Store::memory(cfg.watch_window).await?
    } else {
        Store::open_sled(&cfg.data_dir.join("store"), cfg.watch_window).await?
    };
    // The system namespaces exist before the cloud sends anything, so the site works from its
    // first offline minute; the cloud's copies replace them when they arrive.
    apiserver::bootstrap::system_namespaces(&store).await?;
    let kubeconfig_path = cfg.data_dir.join("admin.kubeconfig");
    // The local admin is the site's own: marked with its origin, never synced.
    let (token, _) = apiserver::bootstrap::admin_token(
        &store,
        &kubeconfig_path,
        Some(json!({hooks::ORIGIN: cfg.site})),
    )
    .await?;
    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .map_err(|e| Error::Bind(cfg.listen, e))?;
    let addr = listener
        .local_addr()
        .map_err(|e| Error::Bind(cfg.listen, e))?;
    let edge_hooks = Arc::new(hooks::EdgeHooks::new(
        &cfg.site,
        store.clone(),
        last_outbox_key(&store),
    ));
    tracker.spawn(controllers::lifecycle::expire_events(
        store.clone(),
        controllers::lifecycle::EVENT_TTL,
        cancel.child_token(),
    ));
    let hooks: Arc<dyn apiserver::api::Hooks> = edge_hooks.clone();
    let api = Api::with_hooks(
        store.clone(),
        ApiConfig {
            advertise: addr.to_string(),
            ..ApiConfig::default()
        },
        Some(hooks),
    );
    if cfg.judge_nodes {
        tracker.spawn(nodes::run(api.clone(), cancel.child_token()));
    }
    tracker.spawn(scheduler::run(
        api.clone(),
        edge_hooks,
        cancel.child_token(),
    ));
    let serving = apiserver::server::SwapCert::new(
        creds.serving_cert.as_bytes(),
        creds.serving_key.as_bytes(),
    )?;
    let tls = apiserver::server::tls_config_swappable(serving.clone())?;
    let names = vec![cfg.listen.ip().to_string()];
    // The outbox's depth (writes made here not yet acknowledged by the region), at each scrape.
    {
        let depth = api.metrics.once(
            "atoll_edge_outbox_depth",
            "Changes made at the site not yet acknowledged by the region",
            prometheus_client::metrics::gauge::Gauge::<i64>::default,
        );
        let store = store.clone();
        api.metrics.on_scrape(move || {
            let n = store.list_of(hooks::OUTBOX, None).len();
            depth.set(i64::try_from(n).unwrap_or(i64::MAX));
        });
    }
    let drv = driver::Driver::new(
        cfg.site.clone(),
        cfg.cloud.clone(),
        store.clone(),
        creds,
        pki.clone(),
        serving,
        names,
    );
    // Pod logs and exec/attach, here and tunnelled from the cloud: from the agents, as the site.
    let log_source = logs::source(store.clone(), drv.creds_handle());
    api.set_log_source(log_source.clone());
    api.set_stream_source(log_source.clone());
    api.set_usage_source(log_source.clone());
    let drv = drv.with_logs(log_source);
    tracker.spawn(apiserver::server::serve(
        listener,
        tls,
        api,
        cancel.child_token(),
        tracker.clone(),
    ));
    tracker.spawn(drv.run(cancel.child_token()));
    let host = if addr.ip().is_unspecified() {
        "127.0.0.1".to_string()
    } else {
        addr.ip().to_string()
    };
    let kc = Kubeconfig {
        server: format!("https://{host}:{}", addr.port()),
        ca_pem: std::fs::read(pki.join("ca.crt")).map_err(|e| Error::Io(pki.join("ca.crt"), e))?,
        token,
    };
    let rendered = kc.render(&format!("atoll-{}", cfg.site), "admin");
    if std::fs::read_to_string(&kubeconfig_path).ok().as_deref() != Some(rendered.as_str()) {
        write_private(&kubeconfig_path, rendered.as_bytes())?;
    }
    tracing::info!(%addr, site = %cfg.site, "edge-core serving");
    Ok(Running { addr, store })
}

/// Value helper shared by the driver.
pub(crate) fn is_owned(v: &Value, site: &str) -> bool {
    hooks::origin(v) == Some(site)
}
