//! cloud-core: the regional control plane. Today: the Kubernetes API over the embedded store,
//! the region PKI, and the built-in controllers. (Sync hub, scheduler and workload controllers
//! arrive with their issues.)

pub mod hooks;
pub mod hub;
pub mod logs;
pub mod pki;
pub mod scheduler;
pub mod shares;
pub mod uplink;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use apiserver::api::{Api, ApiConfig};
use apiserver::kubeconfig::Kubeconfig;
use store::Store;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// cloud-core failures.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read or written.
    #[error("{0}")]
    Io(PathBuf, #[source] std::io::Error),
    /// Certificate generation failed.
    #[error("pki")]
    Pki(#[source] rcgen::Error),
    /// The region CA's record in the store lacks its certificate or key.
    #[error("the region CA record in the store is malformed")]
    BadCaRecord,
    /// The store could not be opened or written.
    #[error("store")]
    Store(#[from] store::StoreError),
    /// TLS setup failed.
    #[error("tls")]
    Tls(#[from] apiserver::server::ServerError),
    /// The listen address could not be bound.
    #[error("binding {0}")]
    Bind(SocketAddr, #[source] std::io::Error),
    /// The etcd configuration is not usable.
    #[error(transparent)]
    Etcd(#[from] store::EtcdConfigError),
    /// The sync endpoint could not start.
    #[error("sync endpoint on {0}")]
    Sync(SocketAddr, #[source] sync::quic::QuicError),
}

/// Configuration of `cloud-core serve`.
#[derive(Clone, Debug)]
pub struct ServeConfig {
    /// Data directory (store, PKI, admin kubeconfig).
    pub data_dir: PathBuf,
    /// API listen address.
    pub listen: SocketAddr,
    /// Sync (QUIC) listen address for edge sites.
    pub sync_listen: SocketAddr,
    /// Lifetime of the certificates issued to sites (renewed at two thirds of it).
    pub site_cert_ttl: Duration,
    /// Extra names for the serving certificate.
    pub tls_sans: Vec<String>,
    /// Number of recent events a watch can resume from.
    pub watch_window: usize,
    /// Largest request body.
    pub max_body: usize,
    /// Where the region's objects live.
    pub storage: StorageConfig,
    /// The address other replicas and the written kubeconfig reach this API at (default: the
    /// listen address, 127.0.0.1 when that is unspecified).
    pub advertise_address: Option<std::net::IpAddr>,
}

/// The storage of a region.
#[derive(Clone, Debug, Default)]
pub enum StorageConfig {
    /// sled under the data directory.
    #[default]
    Embedded,
    /// An etcd cluster for the system space, and further named etcd clusters (tenant
    /// partitions) in their fixed order.
    Etcd(store::EtcdConfig, Vec<(String, store::EtcdConfig)>),
}

/// Open the region's store; an etcd cluster not reachable yet is waited for (it may be
/// starting beside this process), until `cancel`. Every partition is waited for: a replica
/// serves only once it has loaded them all.
async fn open_store(
    cfg: &ServeConfig,
    cancel: &CancellationToken,
) -> Result<(Store, Option<Arc<store::EtcdStorage>>), Error> {
    let window = cfg.watch_window;
    let (system, partitions) = match &cfg.storage {
        StorageConfig::Embedded => {
            return Ok((
                Store::open_sled(&cfg.data_dir.join("store"), window).await?,
                None,
            ))
        }
        StorageConfig::Etcd(e, p) => (e, p),
    };
    let storage = Arc::new(store::EtcdStorage::connect(system).await?);
    let mut parts: Vec<(String, Arc<dyn store::Storage>)> = Vec::new();
    for (name, e) in partitions {
        parts.push((
            name.clone(),
            Arc::new(store::EtcdStorage::connect(e).await?),
        ));
    }
    let mut waited = false;
    loop {
        // Positions are merged in the region's recorded partition order, not the flags'.
        let given: Vec<String> = parts.iter().map(|(n, _)| n.clone()).collect();
        let opened = match storage.partition_order(&given).await {
            Ok(order) => {
                let mut ordered = parts.clone();
                ordered.sort_by_key(|(n, _)| order.iter().position(|o| o == n));
                Store::open_partitioned(storage.clone(), ordered, window).await
            }
            Err(e) => Err(e),
        };
        match opened {
            Ok(s) => {
                tracing::info!(endpoints = ?system.endpoints, prefix = %system.prefix,
                    partitions = ?s.partitions(), "storage on etcd");
                return Ok((s, Some(storage)));
            }
            Err(store::StoreError::Unavailable(why)) => {
                if !waited {
                    tracing::warn!(error = %why, "waiting for etcd");
                    waited = true;
                }
                tokio::select! {
                    _ = cancel.cancelled() => return Err(store::StoreError::Closed.into()),
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// A running cloud-core.
pub struct Running {
    /// The bound API address.
    pub addr: SocketAddr,
    /// The bound sync address.
    pub sync_addr: SocketAddr,
    /// The store.
    pub store: Store,
    /// Path of the admin kubeconfig.
    pub admin_kubeconfig: PathBuf,
}

/// Start serving; returns once the API accepts connections and the admin kubeconfig exists.
pub async fn start(
    cfg: ServeConfig,
    cancel: CancellationToken,
    tracker: &TaskTracker,
) -> Result<Running, Error> {
    std::fs::create_dir_all(&cfg.data_dir).map_err(|e| Error::Io(cfg.data_dir.clone(), e))?;
    let mut sans = vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
    ];
    let ips = [cfg.listen.ip(), cfg.sync_listen.ip()]
        .into_iter()
        .chain(cfg.advertise_address);
    for ip in ips {
        if !ip.is_unspecified() && !sans.contains(&ip.to_string()) {
            sans.push(ip.to_string());
        }
    }
    sans.extend(cfg.tls_sans.iter().cloned());
    let (store, etcd) = open_store(&cfg, &cancel).await?;
    pki::share_ca(&cfg.data_dir.join("pki"), &store).await?;
    let pki = pki::ensure(&cfg.data_dir.join("pki"), &sans)?;
    let (kubelet_cert, kubelet_key) = pki.kubelet_client(&cfg.data_dir.join("pki"))?;
    apiserver::bootstrap::system_namespaces(&store).await?;
    let kubeconfig_path = cfg.data_dir.join("admin.kubeconfig");
    let (token, fresh) = apiserver::bootstrap::admin_token(&store, &kubeconfig_path, None).await?;
    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .map_err(|e| Error::Bind(cfg.listen, e))?;
    let addr = listener
        .local_addr()
        .map_err(|e| Error::Bind(cfg.listen, e))?;
    let host_ip = match cfg.advertise_address {
        Some(ip) => ip,
        None if addr.ip().is_unspecified() => std::net::Ipv4Addr::LOCALHOST.into(),
        None => addr.ip(),
    };
    let advertised = SocketAddr::new(host_ip, addr.port());
    let server = format!("https://{advertised}");
    let api = Api::with_hooks(
        store.clone(),
        ApiConfig {
            max_body: cfg.max_body,
            advertise: advertised.to_string(),
            ..ApiConfig::default()
        },
        Some(Arc::new(hooks::CloudHooks::new(store.clone()))),
    );
    let tls = apiserver::server::tls_config(&pki.cert_pem, &pki.key_pem)?;
    // The region's singletons: one replica runs them at a time.
    let singletons = {
        let (store, api) = (store.clone(), api.clone());
        // Each runs fenced by the term it runs in (on etcd): a deposed leader's writes fail.
        move |term: &CancellationToken, tracker: &TaskTracker, fence: Option<store::Fence>| {
            let f = || fence.clone();
            tracker.spawn(store::fenced(
                f(),
                controllers::lifecycle::expire_events(
                    store.clone(),
                    controllers::lifecycle::EVENT_TTL,
                    term.child_token(),
                ),
            ));
            tracker.spawn(store::fenced(
                f(),
                scheduler::run(api.clone(), term.child_token()),
            ));
            tracker.spawn(store::fenced(
                f(),
                controllers::lifecycle::run(api.clone(), term.child_token()),
            ));
            tracker.spawn(store::fenced(
                f(),
                controllers::workloads::run(api.clone(), term.child_token()),
            ));
            tracker.spawn(store::fenced(
                f(),
                controllers::endpoints::run(api.clone(), term.child_token()),
            ));
        }
    };
    match etcd {
        None => singletons(&cancel, tracker, None),
        Some(etcd) => {
            // On etcd, compaction is one of the singletons too.
            let singletons = {
                let store = store.clone();
                move |term: &CancellationToken,
                      tracker: &TaskTracker,
                      fence: Option<store::Fence>| {
                    singletons(term, tracker, fence.clone());
                    tracker.spawn(store::fenced(
                        fence,
                        compact(store.clone(), term.child_token()),
                    ));
                }
            };
            let holder = format!(
                "{}/{addr}/{}",
                std::fs::read_to_string("/proc/sys/kernel/hostname")
                    .unwrap_or_default()
                    .trim(),
                std::process::id()
            );
            tracker.spawn(lead(etcd, holder, cancel.child_token(), singletons));
        }
    }
    // The sync endpoint presents the serving certificate and the CA, so a joining edge can
    // check the CA against the hash pinned in its join token.
    let mut chain = pki.cert_pem.clone();
    chain.extend_from_slice(&pki.ca_pem);
    let endpoint = sync::quic::server(cfg.sync_listen, &chain, &pki.key_pem, &pki.ca_pem)
        .map_err(|e| Error::Sync(cfg.sync_listen, e))?;
    let sync_addr = endpoint
        .local_addr()
        .map_err(|e| Error::Bind(cfg.sync_listen, e))?;
    let ca_pem = pki.ca_pem.clone();
    let hub = hub::Hub::start(
        api.clone(),
        Arc::new(pki),
        cfg.site_cert_ttl,
        cancel.child_token(),
    );
    let cloud_logs = Arc::new(logs::CloudLogs::new(
        store.clone(),
        hub.clone(),
        kubelet_cert,
        kubelet_key,
        logs::Relay {
            me: advertised.to_string(),
            ca_pem: ca_pem.clone(),
            token: token.clone(),
        },
    ));
    api.set_log_source(cloud_logs.clone());
    api.set_stream_source(cloud_logs.clone());
    api.set_usage_source(cloud_logs);
    tracker.spawn(apiserver::server::serve(
        listener,
        tls,
        api,
        cancel.child_token(),
        tracker.clone(),
    ));
    tracker.spawn(hub.serve(endpoint, cancel.child_token()));
    // Written only now that the listeners are up, so "file exists" means "server is ready". A
    // changed address rewrites it with the same token.
    let kc = Kubeconfig {
        server,
        ca_pem,
        token,
    };
    let rendered = kc.render("atoll", "admin");
    if fresh || std::fs::read_to_string(&kubeconfig_path).ok().as_deref() != Some(rendered.as_str())
    {
        boot::write_private(&kubeconfig_path, rendered.as_bytes())
            .map_err(|e| Error::Io(kubeconfig_path.clone(), e))?;
    }
    tracing::info!(%addr, %sync_addr, kubeconfig = %kubeconfig_path.display(), "cloud-core serving");
    Ok(Running {
        addr,
        sync_addr,
        store,
        admin_kubeconfig: kubeconfig_path,
    })
}

/// Run the singletons (`start`) while this replica holds the region's leadership on etcd:
/// campaign, start them under a term token and fenced by the term (each of their writes also
/// compares the leader key's creation revision, so a deposed leader that has not noticed yet
/// commits nothing), stop them when the term is lost, campaign again.
async fn lead(
    etcd: Arc<store::EtcdStorage>,
    holder: String,
    cancel: CancellationToken,
    start: impl Fn(&CancellationToken, &TaskTracker, Option<store::Fence>),
) {
    loop {
        let term = tokio::select! {
            _ = cancel.cancelled() => return,
            t = etcd.campaign("controllers", &holder) => t,
        };
        let mut term = match term {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(error = %e, "leader election failed; retrying");
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                }
            }
        };
        let token = cancel.child_token();
        let loops = TaskTracker::new();
        start(&token, &loops, Some(term.fence()));
        loops.close();
        tokio::select! {
            _ = cancel.cancelled() => {}
            _ = term.lost() => {}
        }
        token.cancel();
        loops.wait().await;
        drop(term);
    }
}

/// How often the leader checks whether a shared storage needs compacting.
const COMPACT_CHECK: Duration = Duration::from_secs(1);

/// Compact the store behind its window whenever that is due, until `cancel`.
async fn compact(store: Store, cancel: CancellationToken) {
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(COMPACT_CHECK) => {}
        }
        match store.compact_behind().await {
            Ok(Some(rev)) => tracing::debug!(rev, "compacted"),
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "compaction failed"),
        }
    }
}

/// Run until `cancel`, then drain for at most `grace`.
pub async fn serve(
    cfg: ServeConfig,
    cancel: CancellationToken,
    grace: Duration,
) -> Result<(), Error> {
    let tracker = TaskTracker::new();
    let _running = start(cfg, cancel.clone(), &tracker).await?;
    cancel.cancelled().await;
    tracker.close();
    let _ = tokio::time::timeout(grace, tracker.wait()).await;
    Ok(())
}
