//! Node registration, heartbeats (status + Lease), and host facts.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::Error;

/// How often the agent renews its Lease and posts its status.
pub const HEARTBEAT: Duration = Duration::from_secs(10);
/// Lease duration it advertises.
pub const LEASE_SECONDS: i32 = 40;
/// Pods the node takes (kubelet's default).
pub const MAX_PODS: u32 = 110;

/// Facts about this host.
#[derive(Clone, Debug, PartialEq)]
pub struct Host {
    /// CPUs.
    pub cpus: usize,
    /// Memory in KiB.
    pub memory_kib: u64,
    /// Kernel release.
    pub kernel: String,
    /// OS pretty name.
    pub os_image: String,
    /// Host name.
    pub hostname: String,
}

/// `MemTotal` from /proc/meminfo text, in KiB.
pub fn mem_total_kib(meminfo: &str) -> Option<u64> {
    meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

/// `PRETTY_NAME` from /etc/os-release text.
pub fn os_pretty_name(os_release: &str) -> Option<String> {
    os_release
        .lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))
        .map(|v| v.trim_matches('"').to_string())
}

impl Host {
    /// Read the facts from /proc and /etc.
    pub fn read() -> Result<Self, Error> {
        let meminfo = std::fs::read_to_string("/proc/meminfo")
            .map_err(|e| Error::Host(format!("/proc/meminfo: {e}")))?;
        Ok(Host {
            cpus: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            memory_kib: mem_total_kib(&meminfo)
                .ok_or_else(|| Error::Host("no MemTotal in /proc/meminfo".into()))?,
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .map(|s| s.trim().to_string())
                .unwrap_or_default(),
            os_image: std::fs::read_to_string("/etc/os-release")
                .ok()
                .and_then(|s| os_pretty_name(&s))
                .unwrap_or_else(|| "Linux".into()),
            hostname: std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|s| s.trim().to_string())
                .unwrap_or_default(),
        })
    }
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn micro_now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// Where the node's agent answers (status.addresses InternalIP, daemonEndpoints).
#[derive(Clone, Debug, Default)]
pub struct Endpoint {
    /// The node's IP.
    pub ip: String,
    /// The agent's HTTPS port.
    pub port: u16,
    /// Labels the agent sets on its node (what it can run: `vm.atoll.io/runtime`).
    pub labels: Vec<(String, String)>,
}

/// The node's status as the agent reports it.
pub fn status(host: &Host, max_pods: u32, ep: &Endpoint) -> serde_json::Value {
    let ts = now();
    let cond = |ty: &str, status: &str, reason: &str, msg: &str| json!({"type": ty, "status": status, "reason": reason, "message": msg, "lastHeartbeatTime": ts, "lastTransitionTime": ts});
    let capacity = json!({"cpu": host.cpus.to_string(), "memory": format!("{}Ki", host.memory_kib), "pods": max_pods.to_string()});
    json!({
        "capacity": capacity,
        "allocatable": capacity,
        "conditions": [
            cond("MemoryPressure", "False", "KubeletHasSufficientMemory", "agent has sufficient memory available"),
            cond("DiskPressure", "False", "KubeletHasNoDiskPressure", "agent has no disk pressure"),
            cond("PIDPressure", "False", "KubeletHasSufficientPID", "agent has sufficient PID available"),
            cond("Ready", "True", "KubeletReady", "agent is posting ready status"),
        ],
        "addresses": [{"type": "InternalIP", "address": ep.ip}, {"type": "Hostname", "address": host.hostname}],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": ep.port}},
        "nodeInfo": {
            "machineID": "", "systemUUID": "", "bootID": "", "kernelVersion": host.kernel, "osImage": host.os_image,
            "containerRuntimeVersion": "runc", "kubeletVersion": concat!("v1.32.0-atoll.", env!("CARGO_PKG_VERSION")),
            "kubeProxyVersion": "", "operatingSystem": "linux", "architecture": std::env::consts::ARCH,
        },
    })
}

/// Register the node (create it if absent) and post its status.
pub async fn register(
    client: &kube::Client,
    name: &str,
    host: &Host,
    ep: &Endpoint,
) -> Result<(), Error> {
    let nodes: Api<Node> = Api::all(client.clone());
    if nodes.get_opt(name).await?.is_none() {
        let node: Node = serde_json::from_value(json!({
            "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux", "kubernetes.io/arch": std::env::consts::ARCH}},
        }))
        .map_err(|e| Error::Host(e.to_string()))?;
        match nodes.create(&PostParams::default(), &node).await {
            Ok(_) => tracing::info!(node = %name, "registered node"),
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => return Err(e.into()),
        }
    }
    if !ep.labels.is_empty() {
        let labels: serde_json::Map<String, serde_json::Value> = ep
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), json!(v)))
            .collect();
        nodes
            .patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(&json!({"metadata": {"labels": labels}})),
            )
            .await?;
    }
    post_status(client, name, host, ep).await?;
    renew_lease(client, name).await
}

/// Post the node's status.
pub async fn post_status(
    client: &kube::Client,
    name: &str,
    host: &Host,
    ep: &Endpoint,
) -> Result<(), Error> {
    let nodes: Api<Node> = Api::all(client.clone());
    nodes
        .patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(&json!({"status": status(host, MAX_PODS, ep)})),
        )
        .await?;
    Ok(())
}

/// Renew the node's Lease (the cheap, frequent heartbeat).
pub async fn renew_lease(client: &kube::Client, name: &str) -> Result<(), Error> {
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    let spec = json!({"holderIdentity": name, "leaseDurationSeconds": LEASE_SECONDS, "renewTime": micro_now()});
    match leases
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": spec})),
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => {
            let lease: Lease = serde_json::from_value(
                json!({"metadata": {"name": name, "namespace": "kube-node-lease"}, "spec": spec}),
            )
            .map_err(|e| Error::Host(e.to_string()))?;
            leases.create(&PostParams::default(), &lease).await?;
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

/// Register, then heartbeat until cancelled; API errors are logged and retried (the server may
/// be restarting).
pub async fn run(
    client: kube::Client,
    name: String,
    ep: Endpoint,
    cancel: CancellationToken,
) -> Result<(), Error> {
    let host = Host::read()?;
    loop {
        match register(&client, &name, &host, &ep).await {
            Ok(()) => break,
            Err(e) => {
                tracing::warn!(node = %name, error = %e, "registering the node failed; retrying")
            }
        }
        tokio::select! { _ = cancel.cancelled() => return Ok(()), _ = tokio::time::sleep(Duration::from_secs(2)) => {} }
    }
    // Like kubelet: the Lease is the frequent heartbeat; status is posted when it changes, and
    // at least every five minutes (it also re-asserts Ready after the server marked it Unknown).
    let mut last_status = tokio::time::Instant::now();
    loop {
        tokio::select! { _ = cancel.cancelled() => return Ok(()), _ = tokio::time::sleep(HEARTBEAT) => {} }
        if let Err(e) = renew_lease(&client, &name).await {
            tracing::warn!(node = %name, error = %e, "lease renewal failed");
            continue;
        }
        let nodes: Api<Node> = Api::all(client.clone());
        let not_ready = nodes
            .get_opt(&name)
            .await
            .ok()
            .flatten()
            .and_then(|n| n.status)
            .and_then(|s| s.conditions)
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status != "True"));
        if not_ready || last_status.elapsed() >= Duration::from_secs(300) {
            match post_status(&client, &name, &host, &ep).await {
                Ok(()) => last_status = tokio::time::Instant::now(),
                Err(e) => tracing::warn!(node = %name, error = %e, "posting node status failed"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_host_facts() {
        assert_eq!(
            mem_total_kib("MemTotal:       24542164 kB\nMemFree: 1 kB\n"),
            Some(24_542_164)
        );
        assert_eq!(mem_total_kib("nothing"), None);
        assert_eq!(
            os_pretty_name("NAME=x\nPRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\n").as_deref(),
            Some("Debian GNU/Linux 12 (bookworm)")
        );
    }

    #[test]
    fn status_reports_capacity_and_ready() {
        let h = Host {
            cpus: 2,
            memory_kib: 1024,
            kernel: "6.1".into(),
            os_image: "Debian".into(),
            hostname: "h".into(),
        };
        let s = status(
            &h,
            110,
            &Endpoint {
                ip: "10.0.0.1".into(),
                port: 10250,
                labels: Vec::new(),
            },
        );
        assert_eq!(s["addresses"][0]["address"], "10.0.0.1");
        assert_eq!(s["daemonEndpoints"]["kubeletEndpoint"]["Port"], 10250);
        assert_eq!(s["capacity"]["cpu"], "2");
        assert_eq!(s["capacity"]["memory"], "1024Ki");
        assert!(s["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True"));
        // What the agent sends must decode as a Kubernetes NodeStatus.
        let _: k8s_openapi::api::core::v1::NodeStatus = serde_json::from_value(s).unwrap();
    }
}
