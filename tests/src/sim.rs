//! Hollow sites: many real edge-cores (in-memory stores) in this process, joined to a real
//! cloud-core over the real QUIC sync protocol, each with hollow nodes (Node objects with a
//! given capacity, Ready) and a hollow pod runner that reports every pod bound to its nodes as
//! Running. The schedulers, sync, summaries and status uplinks are all the real ones.

use std::path::PathBuf;
use std::time::Duration;

use futures_util::{StreamExt, TryStreamExt};
use kube::api::{Api, PostParams, WatchEvent};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::CloudCore;

/// Hollow node capacity.
#[derive(Clone, Copy, Debug)]
pub struct NodeSize {
    /// CPUs.
    pub cpus: u32,
    /// Memory in GiB.
    pub memory_gib: u32,
    /// Pods.
    pub pods: u32,
}

/// One hollow site.
pub struct Site {
    /// Name.
    pub name: String,
    /// Its admin kubeconfig.
    pub kubeconfig: PathBuf,
}

/// A running simulation.
pub struct Sim {
    /// The sites.
    pub sites: Vec<Site>,
    _dir: tempfile::TempDir,
    cancel: CancellationToken,
    tracker: TaskTracker,
}

impl Drop for Sim {
    fn drop(&mut self) {
        self.cancel.cancel();
        self.tracker.close();
    }
}

/// A hollow node object.
pub fn hollow_node(name: &str, size: NodeSize) -> Value {
    let cap = json!({"cpu": size.cpus.to_string(), "memory": format!("{}Gi", size.memory_gib), "pods": size.pods.to_string()});
    // No kubernetes.io/hostname label: identical hollow nodes form one class in the summary.
    json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": {"kubernetes.io/os": "linux", "type": "hollow"}},
        "status": {"capacity": cap, "allocatable": cap,
            "conditions": [{"type": "Ready", "status": "True", "reason": "HollowReady", "message": "hollow node",
                "lastHeartbeatTime": chrono::Utc::now().to_rfc3339(), "lastTransitionTime": chrono::Utc::now().to_rfc3339()}],
            "nodeInfo": {"kubeletVersion": "v1.32.0-hollow", "operatingSystem": "linux", "architecture": "amd64",
                "machineID": "", "systemUUID": "", "bootID": "", "kernelVersion": "", "osImage": "hollow",
                "containerRuntimeVersion": "hollow", "kubeProxyVersion": ""}},
    })
}

/// Start `sites` hollow sites of `nodes` nodes each against `cc`.
pub async fn start(
    cc: &CloudCore,
    sites: usize,
    nodes: usize,
    size: NodeSize,
) -> anyhow::Result<Sim> {
    start_on(&[cc], sites, nodes, size).await
}

/// Start hollow sites against a region of several replicas: each site is given every
/// replica, starting with a different one, so the sites spread across them.
pub async fn start_on(
    replicas: &[&CloudCore],
    sites: usize,
    nodes: usize,
    size: NodeSize,
) -> anyhow::Result<Sim> {
    let cc = replicas
        .first()
        .ok_or_else(|| anyhow::anyhow!("no replica"))?;
    let dir = tempfile::tempdir()?;
    let cancel = CancellationToken::new();
    let tracker = TaskTracker::new();
    let mut out = Vec::new();
    for i in 0..sites {
        let name = format!("site{i:04}");
        let token = cc.join_token(&name, "1h");
        let cfg = edge_core::EdgeConfig {
            data_dir: dir.path().join(&name),
            cloud: (0..replicas.len())
                .map(|r| replicas[(i + r) % replicas.len()].sync_addr.to_string())
                .collect(),
            site: name.clone(),
            join_token: Some(token),
            listen: "127.0.0.1:0".parse()?,
            watch_window: 2_000,
            in_memory: true,
            judge_nodes: false,
        };
        edge_core::start(cfg, cancel.child_token(), &tracker).await?;
        out.push(Site {
            kubeconfig: dir.path().join(&name).join("admin.kubeconfig"),
            name,
        });
    }
    // Hollow nodes, and a runner per site.
    futures_util::stream::iter(out.iter())
        .map(|s| async move {
            let client = crate::client_for(&s.kubeconfig).await;
            let api: Api<k8s_openapi::api::core::v1::Node> = Api::all(client.clone());
            for j in 0..nodes {
                let name = format!("{}-n{j:03}", s.name);
                let node: k8s_openapi::api::core::v1::Node =
                    serde_json::from_value(hollow_node(&name, size))?;
                let created = api.create(&PostParams::default(), &node).await?;
                let mut st = node.clone();
                st.metadata = created.metadata;
                api.replace_status(&name, &PostParams::default(), serde_json::to_vec(&st)?)
                    .await?;
            }
            anyhow::Ok(())
        })
        .buffer_unordered(8)
        .try_collect::<Vec<_>>()
        .await?;
    for s in &out {
        let client = crate::client_for(&s.kubeconfig).await;
        tracker.spawn(run_pods(client, cancel.child_token()));
    }
    Ok(Sim {
        sites: out,
        _dir: dir,
        cancel,
        tracker,
    })
}

/// Report every pod bound to a node of this site as Running (hollow: nothing runs).
async fn run_pods(client: kube::Client, cancel: CancellationToken) {
    loop {
        if cancel.is_cancelled() {
            return;
        }
        if let Err(e) = watch_pods(&client, &cancel).await {
            tracing::debug!(error = %e, "hollow runner: watch ended");
        }
        tokio::select! { _ = cancel.cancelled() => return, _ = tokio::time::sleep(Duration::from_millis(200)) => {} }
    }
}

async fn watch_pods(client: &kube::Client, cancel: &CancellationToken) -> anyhow::Result<()> {
    let req = http::Request::get("/api/v1/tenants/all/pods").body(Vec::new())?;
    let list: Value = client.request(req).await?;
    let rv = list
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .unwrap_or("0")
        .to_string();
    for p in list["items"].as_array().cloned().unwrap_or_default() {
        run_one(client, &p).await;
    }
    let req = http::Request::get(format!(
        "/api/v1/tenants/all/pods?watch=1&resourceVersion={rv}"
    ))
    .body(Vec::new())?;
    let stream = client.request_events::<Value>(req).await?;
    let mut stream = std::pin::pin!(stream);
    loop {
        let ev = tokio::select! {
            _ = cancel.cancelled() => return Ok(()),
            ev = stream.next() => ev,
        };
        match ev {
            None => return Ok(()),
            Some(Err(e)) => return Err(e.into()),
            Some(Ok(WatchEvent::Added(p))) | Some(Ok(WatchEvent::Modified(p))) => {
                run_one(client, &p).await
            }
            Some(Ok(_)) => {}
        }
    }
}

async fn run_one(client: &kube::Client, p: &Value) {
    let node = p
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .unwrap_or("");
    if node.is_empty()
        || p.pointer("/status/phase").and_then(Value::as_str) == Some("Running")
        || p.pointer("/metadata/deletionTimestamp").is_some()
    {
        return;
    }
    let ns = p
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or("default");
    let name = p
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    let tenant = p
        .pointer("/metadata/tenant")
        .and_then(Value::as_str)
        .unwrap_or("");
    let t = if tenant.is_empty() {
        String::new()
    } else {
        format!("/tenants/{tenant}")
    };
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let conds: Vec<Value> = p
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|c| c["type"] == "PodScheduled")
        .chain([
            json!({"type": "Initialized", "status": "True", "lastTransitionTime": now}),
            json!({"type": "Ready", "status": "True", "lastTransitionTime": now}),
            json!({"type": "ContainersReady", "status": "True", "lastTransitionTime": now}),
        ])
        .collect();
    let cs: Vec<Value> = p
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|c| json!({"name": c["name"], "image": c["image"], "imageID": "", "ready": true, "started": true, "restartCount": 0, "state": {"running": {"startedAt": now}}}))
        .collect();
    let status = json!({"status": {"phase": "Running", "conditions": conds, "containerStatuses": cs,
        "hostIP": "10.0.0.1", "podIP": "10.1.0.1", "startTime": now}});
    let Ok(req) = http::Request::patch(format!("/api/v1{t}/namespaces/{ns}/pods/{name}/status"))
        .header("content-type", "application/merge-patch+json")
        .body(serde_json::to_vec(&status).unwrap_or_default())
    else {
        return;
    };
    if let Err(e) = client.request::<Value>(req).await {
        tracing::debug!(pod = %name, error = %e, "hollow runner: status");
    }
}
