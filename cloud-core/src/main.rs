//! `cloud-core`: parse config, start tracing, run the region, drain on a signal.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use apiserver::kubeconfig::Kubeconfig;
use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(name = "cloud-core", version, about = "Atoll regional control plane")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

// Parsed once at start: the size of `Serve` costs nothing worth boxing its flags for.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Cmd {
    /// Serve the region's Kubernetes API.
    Serve {
        /// Data directory: store, PKI, admin.kubeconfig.
        #[arg(long, env = "ATOLL_DATA_DIR")]
        data_dir: PathBuf,
        /// API listen address.
        #[arg(long, env = "ATOLL_LISTEN", default_value = "127.0.0.1:6443")]
        listen: SocketAddr,
        /// Sync (QUIC) listen address for edge sites.
        #[arg(long, env = "ATOLL_SYNC_LISTEN", default_value = "127.0.0.1:7443")]
        sync_listen: SocketAddr,
        /// Extra DNS names or IPs for the serving certificate.
        #[arg(long = "tls-san", env = "ATOLL_TLS_SANS", value_delimiter = ',')]
        tls_sans: Vec<String>,
        /// Recent events watches resume from memory; as many revisions of history stay on disk
        /// (watches from before them get 410 Gone).
        #[arg(long, env = "ATOLL_WATCH_WINDOW", default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..))]
        watch_window: u64,
        /// Lifetime of site certificates; sites renew them at two thirds of it.
        #[arg(long, env = "ATOLL_SITE_CERT_TTL", default_value = "90d", value_parser = boot::parse_duration)]
        site_cert_ttl: Duration,
        /// Largest accepted request body in bytes.
        #[arg(long, env = "ATOLL_MAX_BODY", default_value_t = 3 * 1024 * 1024, value_parser = clap::value_parser!(u64).range(1024..))]
        max_body: u64,
        /// Keep the region's objects in this etcd cluster (client URLs, comma-separated)
        /// instead of the embedded store under --data-dir.
        #[arg(long = "etcd-servers", env = "ATOLL_ETCD_SERVERS", value_delimiter = ',', value_parser = etcd_url)]
        etcd_servers: Vec<String>,
        /// CA bundle that signed the etcd members' certificates.
        #[arg(
            long = "etcd-cafile",
            env = "ATOLL_ETCD_CAFILE",
            requires = "etcd_servers"
        )]
        etcd_cafile: Option<PathBuf>,
        /// Client certificate for etcd (with --etcd-keyfile).
        #[arg(long = "etcd-certfile", env = "ATOLL_ETCD_CERTFILE", requires_all = ["etcd_servers", "etcd_keyfile"])]
        etcd_certfile: Option<PathBuf>,
        /// Client key for etcd (with --etcd-certfile).
        #[arg(long = "etcd-keyfile", env = "ATOLL_ETCD_KEYFILE", requires_all = ["etcd_servers", "etcd_certfile"])]
        etcd_keyfile: Option<PathBuf>,
        /// The IP other replicas and the written kubeconfig reach this API at (default: the
        /// --listen address, 127.0.0.1 when that is 0.0.0.0 or ::).
        #[arg(long = "advertise-address", env = "ATOLL_ADVERTISE_ADDRESS")]
        advertise_address: Option<std::net::IpAddr>,
        /// Key prefix of the region's objects in etcd.
        #[arg(long = "etcd-prefix", env = "ATOLL_ETCD_PREFIX", default_value = "/atoll", value_parser = etcd_prefix)]
        etcd_prefix: String,
        /// A tenant partition: a further etcd cluster, NAME=URL[,URL...] (repeatable; the
        /// order must stay fixed, new ones go last). Tenants name theirs in
        /// spec.storageClusterId; the same --etcd-cafile/certfile/keyfile/prefix apply.
        #[arg(long = "partition", env = "ATOLL_PARTITIONS", value_delimiter = ';', value_parser = partition, requires = "etcd_servers")]
        partitions: Vec<(String, Vec<String>)>,
    },
    /// Print a single-use join token for an edge site (creating the EdgeSite if absent).
    JoinToken {
        /// The system admin kubeconfig.
        #[arg(long, env = "ATOLL_KUBECONFIG")]
        kubeconfig: PathBuf,
        /// The site.
        #[arg(long, env = "ATOLL_SITE")]
        site: String,
        /// How long the token stays valid (e.g. 30m, 1h, 90s).
        #[arg(long, env = "ATOLL_TTL", default_value = "1h", value_parser = boot::parse_duration)]
        ttl: Duration,
    },
    /// Print a kubeconfig for an administrator of a tenant.
    Kubeconfig {
        /// The system admin kubeconfig.
        #[arg(long, env = "ATOLL_KUBECONFIG")]
        kubeconfig: PathBuf,
        /// The tenant.
        #[arg(long, env = "ATOLL_TENANT")]
        tenant: String,
        /// User name inside the tenant.
        #[arg(long, env = "ATOLL_USER", default_value = "admin")]
        user: String,
    },
}

/// A `kube` client for the kubeconfig at `path`.
async fn client(path: &std::path::Path) -> anyhow::Result<kube::Client> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("kubeconfig {}: {e}", path.display()))?;
    let kc = kube::config::Kubeconfig::from_yaml(&text)?;
    let cfg = kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
        .await?;
    Ok(kube::Client::try_from(cfg)?)
}

/// `POST` a JSON body; the answer's JSON.
async fn post(
    client: &kube::Client,
    path: &str,
    body: &serde_json::Value,
) -> Result<serde_json::Value, kube::Error> {
    let req = http::Request::post(path)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(serde_json::to_vec(body).unwrap_or_default())
        .map_err(kube::Error::HttpError)?;
    client.request::<serde_json::Value>(req).await
}

async fn tenant_kubeconfig(
    kubeconfig: PathBuf,
    tenant: String,
    user: String,
) -> anyhow::Result<()> {
    if !proto::names::is_dns1123_label(&tenant) {
        anyhow::bail!("invalid tenant name {tenant:?}: must be an RFC 1123 label");
    }
    let admin = Kubeconfig::load(&kubeconfig)?;
    let client = client(&kubeconfig).await?;
    let body = serde_json::json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "metadata": {"name": user}, "spec": {}});
    let resp = post(&client, &format!("/api/v1/tenants/{tenant}/token"), &body).await?;
    let token = resp
        .pointer("/status/token")
        .and_then(|t| t.as_str())
        .ok_or_else(|| anyhow::anyhow!("the server returned no token"))?;
    let kc = Kubeconfig {
        token: token.to_string(),
        ..admin
    };
    print!("{}", kc.render(&format!("atoll-{tenant}"), &user));
    Ok(())
}

async fn join_token(kubeconfig: PathBuf, site: String, ttl: Duration) -> anyhow::Result<()> {
    if !proto::names::is_dns1123_label(&site) {
        anyhow::bail!("invalid site name {site:?}: must be an RFC 1123 label");
    }
    let admin = Kubeconfig::load(&kubeconfig)?;
    let client = client(&kubeconfig).await?;
    let es = serde_json::json!({"apiVersion": "edge.atoll.io/v1", "kind": "EdgeSite", "metadata": {"name": site}, "spec": {}});
    match post(&client, "/apis/edge.atoll.io/v1/edgesites", &es).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        Err(e) => return Err(e.into()),
    }
    let body = serde_json::json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {"expirationSeconds": ttl.as_secs()}});
    let resp = post(
        &client,
        &format!("/apis/edge.atoll.io/v1/edgesites/{site}/token"),
        &body,
    )
    .await?;
    let secret = resp
        .pointer("/status/token")
        .and_then(|t| t.as_str())
        .ok_or_else(|| anyhow::anyhow!("the server returned no token"))?;
    // The token carries the CA's hash, so the edge can authenticate the cloud at first contact.
    let pin = {
        use rustls_pki_types::pem::PemObject;
        let der = rustls_pki_types::CertificateDer::from_pem_slice(&admin.ca_pem)
            .map_err(|e| anyhow::anyhow!("kubeconfig CA: {e}"))?;
        sync::quic::fingerprint(&der)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    };
    println!("{secret}.{pin}");
    Ok(())
}

/// An etcd client URL (the storage's own check, as a flag parser).
fn etcd_url(s: &str) -> Result<String, String> {
    store::etcd::check_endpoint(s).map_err(|e| e.to_string())?;
    Ok(s.to_string())
}

/// A tenant partition, `NAME=URL[,URL...]`.
fn partition(s: &str) -> Result<(String, Vec<String>), String> {
    let (name, urls) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?}: expected NAME=URL[,URL...]"))?;
    let ok_name = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if !ok_name {
        return Err(format!(
            "partition name {name:?}: lower-case letters, digits and '-', at most 63"
        ));
    }
    if name == store::SYSTEM_PARTITION {
        return Err(format!(
            "partition name {name:?} is the system cluster's (--etcd-servers)"
        ));
    }
    let urls: Vec<String> = urls.split(',').map(str::trim).map(String::from).collect();
    for u in &urls {
        etcd_url(u)?;
    }
    Ok((name.to_string(), urls))
}

/// An etcd key prefix (the storage's own check, as a flag parser).
fn etcd_prefix(s: &str) -> Result<String, String> {
    store::etcd::check_prefix(s).map_err(|e| e.to_string())?;
    Ok(s.to_string())
}

fn main() -> ExitCode {
    let cli = match boot::parse_args::<Cli>() {
        Ok(c) => c,
        Err(code) => return code,
    };
    boot::init_tracing();
    let rt = match boot::runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    let result = rt.block_on(async move {
        match cli.cmd {
            Cmd::Serve {
                data_dir,
                listen,
                sync_listen,
                site_cert_ttl,
                tls_sans,
                watch_window,
                max_body,
                etcd_servers,
                etcd_cafile,
                etcd_certfile,
                etcd_keyfile,
                etcd_prefix,
                advertise_address,
                partitions,
            } => {
                let storage = if etcd_servers.is_empty() {
                    cloud_core::StorageConfig::Embedded
                } else {
                    let etcd = |endpoints| store::EtcdConfig {
                        endpoints,
                        ca_file: etcd_cafile.clone(),
                        cert_file: etcd_certfile.clone(),
                        key_file: etcd_keyfile.clone(),
                        prefix: etcd_prefix.clone(),
                    };
                    let mut named = Vec::new();
                    for (name, urls) in partitions {
                        if named.iter().any(|(n, _)| *n == name) {
                            eprintln!("cloud-core: partition {name:?} given twice");
                            std::process::exit(64);
                        }
                        named.push((name, etcd(urls)));
                    }
                    cloud_core::StorageConfig::Etcd(etcd(etcd_servers), named)
                };
                let cancel = CancellationToken::new();
                tokio::spawn(boot::shutdown_signal(cancel.clone()));
                let cfg = cloud_core::ServeConfig {
                    data_dir,
                    listen,
                    sync_listen,
                    site_cert_ttl,
                    tls_sans,
                    watch_window: watch_window as usize,
                    max_body: max_body as usize,
                    storage,
                    advertise_address,
                };
                cloud_core::serve(cfg, cancel, Duration::from_secs(10))
                    .await
                    .map_err(anyhow::Error::from)
            }
            Cmd::Kubeconfig {
                kubeconfig,
                tenant,
                user,
            } => tenant_kubeconfig(kubeconfig, tenant, user).await,
            Cmd::JoinToken {
                kubeconfig,
                site,
                ttl,
            } => join_token(kubeconfig, site, ttl).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}
