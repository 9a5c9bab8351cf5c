//! Resource usage a node agent reports (`GET /stats` on its endpoint) and the API servers turn
//! into `metrics.k8s.io/v1beta1` NodeMetrics and PodMetrics, as metrics-server does from
//! kubelet's summary: CPU as a rate over the sampling window, memory as the working set.

use serde::{Deserialize, Serialize};

/// Largest stats document accepted from an agent or a site.
pub const MAX_STATS: usize = 8 * 1024 * 1024;

/// One sample of a node and its pods.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeUsage {
    /// The node's name.
    pub node: String,
    /// When the sample was taken (RFC 3339).
    pub timestamp: String,
    /// The window the CPU rates are over, seconds.
    pub window_seconds: u64,
    /// The node's usage.
    pub usage: Usage,
    /// Its pods' containers.
    pub pods: Vec<PodUsage>,
}

/// A pod's containers' usage.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodUsage {
    /// Tenant (empty: the system tenant).
    pub tenant: String,
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// Per container.
    pub containers: Vec<ContainerUsage>,
}

/// A container's usage.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ContainerUsage {
    /// The container's name.
    pub name: String,
    /// Its usage.
    pub usage: Usage,
}

/// CPU and memory in use.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Usage {
    /// CPU, nanocores (a rate).
    pub cpu_nanocores: u64,
    /// Working set, bytes.
    pub memory_bytes: u64,
}

impl Usage {
    /// The `usage` object of NodeMetrics/PodMetrics (`123456n`, `4567Ki`, as metrics-server).
    pub fn quantities(&self) -> serde_json::Value {
        serde_json::json!({
            "cpu": format!("{}n", self.cpu_nanocores),
            "memory": format!("{}Ki", self.memory_bytes / 1024),
        })
    }
}
