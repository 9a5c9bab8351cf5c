//! edge-agent: the node agent. It speaks plain Kubernetes API to its server (edge-core, or
//! cloud-core for a cloud node) through the `kube` crate.
//!
//! Today: node registration with the host's real capacity, the node Lease, and the Ready
//! condition. Pods (runc), images, CNI, logs and VMs come with the rest of the agent's issue.

pub mod node;

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
