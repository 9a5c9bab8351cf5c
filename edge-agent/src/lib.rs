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
pub mod metrics;
pub mod network;
pub mod node;
pub mod oci;
pub mod pods;
pub mod portforward;
pub mod runtime;
pub mod shim;
pub mod streams;
pub mod usage;
pub mod vm;

/// The CA a kubeconfig trusts for its cluster (PEM).
pub fn kubeconfig_ca(kubeconfig: &Path) -> anyhow::Result<Vec<u8>> {
    use base64::Engine;
    let kc = kube::config::Kubeconfig::read_from(kubeconfig)?;
    let ctx_name = kc.current_context.clone().unwrap_or_default();
    let cluster_name = kc
        .contexts
        .iter()
        .find(|c| c.name == ctx_name)
        .and_then(|c| c.context.as_ref())
        .map(|c| c.cluster.clone())
        .unwrap_or_default();
    let cluster = kc
        .clusters
        .iter()
        .find(|c| c.name == cluster_name)
        .or_else(|| kc.clusters.first())
        .and_then(|c| c.cluster.as_ref())
        .ok_or_else(|| anyhow::anyhow!("{}: no cluster", kubeconfig.display()))?;
    if let Some(data) = &cluster.certificate_authority_data {
        return Ok(base64::engine::general_purpose::STANDARD.decode(data.trim())?);
    }
    if let Some(file) = &cluster.certificate_authority {
        return Ok(std::fs::read(file)?);
    }
    anyhow::bail!(
        "{}: the cluster has no certificate-authority(-data)",
        kubeconfig.display()
    )
}

/// Run the agent until cancelled: node registration and heartbeats, the pod manager, and the
/// agent's HTTPS endpoint (container logs) on `listener`. The endpoint accepts clients with a
/// certificate from the API server's CA whose name is the cloud's kubelet client or this node's
/// site (learned from the Node's `atoll.io/site` label once registered).
pub async fn serve<R: runtime::Runtime + Clone>(
    node: Arc<pods::Node<R>>,
    listener: tokio::net::TcpListener,
    kubeconfig: &Path,
    endpoint: node::Endpoint,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    let ca = kubeconfig_ca(kubeconfig)?;
    let allowed: logs::Allowed = Default::default();
    let logs = tokio::spawn(logs::serve(
        listener,
        node.root.clone(),
        ca,
        allowed.clone(),
        cancel.clone(),
    ));
    let site = tokio::spawn(learn_site(
        node.client.clone(),
        node.name.clone(),
        allowed,
        cancel.clone(),
    ));
    let pods = tokio::spawn(pods::run(node.clone(), cancel.clone()));
    tokio::spawn(usage::sample(
        node.root.clone(),
        node.name.clone(),
        cancel.clone(),
    ));
    let res = node::run(
        node.client.clone(),
        node.name.clone(),
        endpoint,
        cancel.clone(),
    )
    .await;
    cancel.cancel();
    let _ = pods.await;
    let _ = site.await;
    match logs.await {
        Ok(Err(e)) => return Err(e.into()),
        Err(e) => return Err(e.into()),
        Ok(Ok(())) => {}
    }
    res.map_err(Into::into)
}

/// Add the node's site (its `atoll.io/site` label) to the log endpoint's allowed clients.
async fn learn_site(
    client: kube::Client,
    name: String,
    allowed: logs::Allowed,
    cancel: CancellationToken,
) {
    let nodes: kube::Api<k8s_openapi::api::core::v1::Node> = kube::Api::all(client);
    // Quickly at first: the Node is being registered right now.
    let mut pause = std::time::Duration::from_millis(100);
    loop {
        if let Ok(Some(n)) = nodes.get_opt(&name).await {
            if let Some(site) = n
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(proto::SITE_LABEL))
            {
                if let Ok(mut a) = allowed.write() {
                    a.insert(site.clone());
                }
                tracing::info!(%site, "log endpoint accepts the site's certificate");
                return;
            }
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(pause) => pause = (pause * 2).min(std::time::Duration::from_secs(5)),
        }
    }
}

/// Remove every container, mount, network namespace, bridge and firewall table the agent with
/// state in `root` made (what `edge-agent reset` does; the agent must be stopped).
pub async fn reset(root: &Path, pod_cidr: &str) -> anyhow::Result<()> {
    // Best effort: every step runs even when an earlier one failed; the failures are reported.
    let mut failures: Vec<String> = Vec::new();
    let rt = runtime::Runc::new(root, std::env::current_exe()?)?;
    use runtime::Runtime;
    for id in rt.list() {
        rt.signal(&id, "KILL").await;
        if let Err(e) = rt.remove(&id).await {
            failures.push(format!("container {id}: {e}"));
        }
    }
    match network::Network::for_cleanup(network::NetConfig::new(pod_cidr, root.join("net"))) {
        Ok(net) => {
            if let Err(e) = net.reset().await {
                failures.push(format!("network: {e}"));
            }
        }
        Err(e) => failures.push(format!("network: {e}")),
    }
    runtime::unmount_all(root).await;
    for uid in std::fs::read_dir(root.join("pods"))
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name())
                .collect::<Vec<_>>()
        })
        .unwrap_or_default()
    {
        pods::remove_cgroups(&uid.to_string_lossy());
    }
    if failures.is_empty() {
        Ok(())
    } else {
        anyhow::bail!("reset left things behind: {}", failures.join("; "))
    }
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
