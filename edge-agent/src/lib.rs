//! edge-agent: the node agent. It speaks plain Kubernetes API to its server (edge-core, or
//! cloud-core for a cloud node) through the `kube` crate: registers its Node with the host's
//! capacity, keeps a Lease, runs the pods bound to it under runc (through the [`runtime::Runtime`]
//! trait) from OCI images, networks them with the CNI plugins (one network per tenant), reports
//! their status, and serves their logs.

use std::path::Path;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

pub mod image;
pub mod logs;
pub mod network;
pub mod node;
pub mod oci;
pub mod pods;
pub mod runtime;
pub mod shim;

/// Run the agent until cancelled: node registration and heartbeats, the pod manager, and the
/// agent's HTTPS endpoint on `listener`.
pub async fn serve<R: runtime::Runtime + Clone>(
    node: Arc<pods::Node<R>>,
    listener: tokio::net::TcpListener,
    _kubeconfig: &Path,
    endpoint: node::Endpoint,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    let _listener = listener;
    let pods = tokio::spawn(pods::run(node.clone(), cancel.clone()));
    node::run(node.client.clone(), node.name.clone(), endpoint, cancel).await?;
    let _ = pods.await;
    Ok(())
}

/// Remove every container, mount, network namespace, bridge and firewall table the agent with
/// state in `root` made (what `edge-agent reset` does; the agent must be stopped).
pub async fn reset(root: &Path, pod_cidr: &str) -> anyhow::Result<()> {
    let rt = runtime::Runc::new(root, std::env::current_exe()?)?;
    use runtime::Runtime;
    for id in rt.list() {
        rt.signal(&id, "KILL").await;
        rt.remove(&id).await?;
    }
    let net = network::Network::new(network::NetConfig::new(pod_cidr, root.join("net")))?;
    net.reset().await?;
    runtime::unmount_all(root).await;
    for uid in std::fs::read_dir(root.join("pods"))
        .map(|rd| rd.filter_map(|e| e.ok()).map(|e| e.file_name()).collect::<Vec<_>>())
        .unwrap_or_default()
    {
        pods::remove_cgroups(&uid.to_string_lossy());
    }
    Ok(())
}

/// Agent failures.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Talking to the API server failed.
    #[error("api")]
    Kube(#[from] kube::Error),
    /// The kubeconfig could not be used.
    #[error("kubeconfig")]
    Config(#[from] kube::config::KubeconfigError),
    /// Reading host facts failed.
    #[error("{0}")]
    Host(String),
}
