//! The pod manager: watch the pods bound to this node (every tenant), and for each run a worker
//! that drives the node toward the pod (network, volumes, images, init containers in order,
//! containers with their restart policy and back-off), reports the real status, and on deletion
//! stops the containers (SIGTERM, grace period, SIGKILL), tears down network and files, and only
//! then removes the pod object.
//!
//! Everything the worker decides is derived from the runtime's state and a small per-pod state
//! file (restart counts, last terminations), so a restarted agent re-adopts running containers
//! instead of restarting them, and a node whose containers are all gone (a reboot) brings its
//! pods back from the local API server alone.

use proto::query::percent_encode;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{Container, Pod};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::image::{ImageError, ImageStore, PullPolicy};
use crate::network::Network;
use crate::oci;
use crate::runtime::{ContainerConfig, Runtime, State};

mod containers;
mod env;
mod probes;
mod resize;
mod sandbox;
mod state;
mod status;
mod vm;
mod volumes;

pub use env::*;
pub use sandbox::*;
pub use state::*;

/// Longest restart back-off (kubelet's).
pub const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// A container that ran this long resets its back-off.
pub const BACKOFF_RESET: Duration = Duration::from_secs(600);
/// How often a worker looks at its containers when nothing else happens.
pub const TICK: Duration = Duration::from_millis(500);

/// Settings and parts shared by every pod worker.
pub struct Node<R: Runtime> {
    /// Client of the node's API server.
    pub client: kube::Client,
    /// Node name.
    pub name: String,
    /// Agent root directory.
    pub root: PathBuf,
    /// The container runtime.
    pub runtime: R,
    /// Images.
    pub images: ImageStore,
    /// Pod networking (`None`: host network only, for tests without CNI).
    pub network: Option<Network>,
    /// The node's IP (status.hostIP).
    pub node_ip: String,
    /// First restart back-off (kubelet: 10 s).
    pub backoff: Duration,
    /// The qemu VM pods run under (`None`: this node runs no VMs).
    pub vm: Option<crate::vm::qemu::Qemu>,
}

/// A pod as the API serves it, with the fields the typed struct does not carry.
#[derive(Clone, Debug)]
pub struct PodObj {
    /// Raw object.
    pub raw: Value,
    /// Typed view.
    pub pod: Pod,
    /// Tenant ("" = system).
    pub tenant: String,
}

impl PodObj {
    /// From the API's JSON.
    pub fn from_value(raw: Value) -> Option<Self> {
        let pod: Pod = serde_json::from_value(raw.clone()).ok()?;
        let tenant = raw
            .pointer("/metadata/tenant")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        Some(PodObj { raw, pod, tenant })
    }
    fn uid(&self) -> &str {
        self.pod.metadata.uid.as_deref().unwrap_or("")
    }
    fn name(&self) -> &str {
        self.pod.metadata.name.as_deref().unwrap_or("")
    }
    fn namespace(&self) -> &str {
        self.pod.metadata.namespace.as_deref().unwrap_or("default")
    }
    fn spec(&self) -> k8s_openapi::api::core::v1::PodSpec {
        self.pod.spec.clone().unwrap_or_default()
    }
}

/// API path of a namespaced object of the core group, tenant-aware.
pub fn core_path(tenant: &str, ns: &str, plural: &str, name: &str) -> String {
    let t = if tenant.is_empty() {
        String::new()
    } else {
        format!("/tenants/{tenant}")
    };
    format!("/api/v1{t}/namespaces/{ns}/{plural}/{name}")
}

/// The runtime id of a pod's container: unique on the node, stable across agent restarts.
pub fn container_id(uid: &str, name: &str) -> String {
    let short: String = uid.chars().filter(|c| *c != '-').take(12).collect();
    format!("{short}-{name}")
}

/// Directory of a pod's logs (the layout `kubectl logs` reads through the agent).
pub fn log_dir(root: &Path, tenant: &str, ns: &str, name: &str, uid: &str) -> PathBuf {
    let t = if tenant.is_empty() { "-" } else { tenant };
    root.join("logs").join(format!("{t}_{ns}_{name}_{uid}"))
}

/// A finished container attempt.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Term {
    /// Exit code.
    pub exit_code: i32,
    /// Reason (`Completed`, `Error`, `StartError`, ...).
    pub reason: String,
    /// Message.
    pub message: Option<String>,
    /// Start time.
    pub started_at: Option<DateTime<Utc>>,
    /// Finish time.
    pub finished_at: DateTime<Utc>,
    /// Runtime id.
    pub container_id: String,
}

impl Term {
    fn from_state(s: &State, id: &str) -> Option<Term> {
        match s {
            State::Exited {
                exit_code,
                started_at,
                finished_at,
                start_error,
            } => Some(Term {
                exit_code: *exit_code,
                reason: if start_error.is_some() {
                    "StartError".into()
                } else if *exit_code == 0 {
                    "Completed".into()
                } else if *exit_code == 137 {
                    "OOMKilled".into()
                } else {
                    "Error".into()
                },
                message: start_error.clone(),
                started_at: *started_at,
                finished_at: *finished_at,
                container_id: id.to_string(),
            }),
            _ => None,
        }
    }
    fn json(&self) -> Value {
        let ts = |t: &DateTime<Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let mut v = json!({"exitCode": self.exit_code, "reason": self.reason, "finishedAt": ts(&self.finished_at), "containerID": format!("runc://{}", self.container_id)});
        if let Some(s) = &self.started_at {
            v["startedAt"] = json!(ts(s));
        }
        if let Some(m) = &self.message {
            v["message"] = json!(m);
        }
        v
    }
}

/// What the agent remembers about one container of a pod (persisted per pod).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CState {
    /// Restarts so far.
    pub restart_count: u32,
    /// The previous attempt's end.
    pub last: Option<Term>,
    /// The image the current attempt runs (`imageID`).
    pub image_id: String,
    /// An init container that completed.
    pub done: bool,
    /// The current attempt was started (so finding it missing means it was lost).
    #[serde(default)]
    pub started: bool,
    /// The resources the current attempt runs with (the API's `resources` object; a resize
    /// changes them in place).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<Value>,
}

/// What the agent remembers about a pod.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodState {
    /// Tenant, namespace, name (for cleaning up after the object is gone).
    pub tenant: String,
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// When the agent first saw the pod.
    pub start_time: Option<DateTime<Utc>>,
    /// Per container.
    pub containers: BTreeMap<String, CState>,
    /// Terminal phase reached (`Succeeded` / `Failed`): nothing restarts any more.
    pub terminal: Option<String>,
}

/// Transient per-container facts (not persisted).
#[derive(Clone, Debug, Default)]
struct Transient {
    waiting: Option<(String, String)>,
    not_before: Option<tokio::time::Instant>,
    /// The next back-off.
    delay: Duration,
    /// The back-off being waited.
    wait: Duration,
    /// When the last start attempt failed.
    failed_at: Option<tokio::time::Instant>,
    /// A resize not (yet) done: its condition type, reason and message.
    resize: Option<(&'static str, &'static str, String)>,
    /// When the VM was asked to power off (its `powerSpec` became `Shutdown`).
    powering_off: Option<tokio::time::Instant>,
}

/// The restart policy the worker applies: the pod's (default `Always`), except that a VM whose
/// `shutdownBehavior` is `terminate` ends its pod when the guest powers off (`Never`).
fn restart_policy(p: &PodObj) -> String {
    if proto::vm::vm_of(&p.raw).is_some_and(|v| v.shutdown_behavior.as_deref() == Some("terminate"))
    {
        return "Never".into();
    }
    p.spec().restart_policy.unwrap_or_else(|| "Always".into())
}

/// Watch this node's pods and run a worker per pod until cancelled.
pub async fn run<R: Runtime + Clone>(node: Arc<Node<R>>, cancel: CancellationToken) {
    let mut workers: HashMap<String, watch::Sender<Option<PodObj>>> = HashMap::new();
    let mut cleaned = false;
    loop {
        if cancel.is_cancelled() {
            return;
        }
        match list_and_watch(&node, &mut workers, &mut cleaned, &cancel).await {
            Ok(()) => {}
            Err(e) => tracing::warn!(error = %e, "pod watch failed; retrying"),
        }
        workers.retain(|_, tx| !tx.is_closed());
        tokio::select! { _ = cancel.cancelled() => return, _ = tokio::time::sleep(Duration::from_secs(1)) => {} }
    }
}

fn dispatch<R: Runtime + Clone>(
    node: &Arc<Node<R>>,
    workers: &mut HashMap<String, watch::Sender<Option<PodObj>>>,
    p: PodObj,
    cancel: &CancellationToken,
) {
    let uid = p.uid().to_string();
    if let Some(tx) = workers.get(&uid) {
        if tx.send(Some(p.clone())).is_ok() {
            return;
        }
        // The worker finished (the pod was being deleted); a newer event means nothing to do.
        workers.remove(&uid);
        return;
    }
    let (tx, rx) = watch::channel(Some(p));
    workers.insert(uid.clone(), tx);
    let node = node.clone();
    let cancel = cancel.clone();
    tokio::spawn(async move {
        let running = &crate::metrics::get().running_pods;
        running.inc();
        Worker::new(node, uid, rx, cancel).run().await;
        running.dec();
    });
}

async fn list_and_watch<R: Runtime + Clone>(
    node: &Arc<Node<R>>,
    workers: &mut HashMap<String, watch::Sender<Option<PodObj>>>,
    cleaned: &mut bool,
    cancel: &CancellationToken,
) -> Result<(), String> {
    let sel = format!("spec.nodeName={}", node.name);
    let req = http::Request::get(format!(
        "/api/v1/tenants/all/pods?fieldSelector={}",
        percent_encode(&sel)
    ))
    .body(Vec::new())
    .map_err(|e| e.to_string())?;
    let list: Value = node.client.request(req).await.map_err(|e| e.to_string())?;
    let rv = list
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .unwrap_or("0")
        .to_string();
    let items: Vec<PodObj> = list["items"]
        .as_array()
        .map(|a| a.iter().cloned().filter_map(PodObj::from_value).collect())
        .unwrap_or_default();
    let present: std::collections::HashSet<String> =
        items.iter().map(|p| p.uid().to_string()).collect();
    // Pods that vanished while we were not watching.
    for (uid, tx) in workers.iter() {
        if !present.contains(uid) {
            let _ = tx.send(None);
        }
    }
    for p in items {
        dispatch(node, workers, p, cancel);
    }
    if !*cleaned {
        cleanup_orphans(node, &present).await;
        *cleaned = true;
    }
    let req = http::Request::get(format!(
        "/api/v1/tenants/all/pods?watch=1&allowWatchBookmarks=true&resourceVersion={rv}&fieldSelector={}",
        percent_encode(&sel)
    ))
    .body(Vec::new())
    .map_err(|e| e.to_string())?;
    let stream = node
        .client
        .request_events::<Value>(req)
        .await
        .map_err(|e| e.to_string())?;
    let mut stream = std::pin::pin!(stream);
    loop {
        let ev = tokio::select! {
            _ = cancel.cancelled() => return Ok(()),
            ev = stream.next() => ev,
        };
        match ev {
            None => return Ok(()),
            Some(Err(e)) => return Err(e.to_string()),
            Some(Ok(kube::api::WatchEvent::Added(v)))
            | Some(Ok(kube::api::WatchEvent::Modified(v))) => {
                if let Some(p) = PodObj::from_value(v) {
                    dispatch(node, workers, p, cancel);
                }
            }
            Some(Ok(kube::api::WatchEvent::Deleted(v))) => {
                if let Some(uid) = v.pointer("/metadata/uid").and_then(Value::as_str) {
                    if let Some(tx) = workers.get(uid) {
                        let _ = tx.send(None);
                    }
                }
            }
            Some(Ok(kube::api::WatchEvent::Bookmark(_))) => {}
            Some(Ok(kube::api::WatchEvent::Error(e))) => return Err(e.message),
        }
    }
}

/// Remove what belongs to pods the API no longer has: their containers, network and files.
async fn cleanup_orphans<R: Runtime>(node: &Node<R>, present: &std::collections::HashSet<String>) {
    let dir = pods_dir(&node.root);
    let known: Vec<String> = std::fs::read_dir(&dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter_map(|e| e.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default();
    let live_prefixes: Vec<String> = present.iter().map(|u| container_id(u, "")).collect();
    for id in node.runtime.list() {
        if !live_prefixes.iter().any(|p| id.starts_with(p.as_str())) {
            tracing::info!(container = %id, "removing a container of a pod that is gone");
            node.runtime.signal(&id, "KILL").await;
            let _ = node.runtime.remove(&id).await;
        }
    }
    for uid in known {
        if present.contains(&uid) {
            continue;
        }
        let st = load_state(&node.root, &uid).unwrap_or_default();
        tracing::info!(pod = %uid, name = %st.name, "cleaning up a pod that is gone");
        teardown_files(node, &uid, &st).await;
    }
}

/// One pod's worker.
struct Worker<R: Runtime> {
    node: Arc<Node<R>>,
    uid: String,
    rx: watch::Receiver<Option<PodObj>>,
    cancel: CancellationToken,
    state: PodState,
    transient: HashMap<String, Transient>,
    posted: Option<Value>,
    pod_ip: Option<String>,
    volumes_ready: bool,
    adopted: bool,
    /// Probe state per container and probe, for the container's current attempt.
    probe_state: HashMap<String, HashMap<probes::Kind, probes::ProbeState>>,
    /// Where probe runs report.
    outcomes: probes::Outcomes,
}

enum Next {
    Continue,
    Done,
}

impl<R: Runtime> Worker<R> {
    fn new(
        node: Arc<Node<R>>,
        uid: String,
        rx: watch::Receiver<Option<PodObj>>,
        cancel: CancellationToken,
    ) -> Self {
        let state = load_state(&node.root, &uid).unwrap_or_default();
        Worker {
            node,
            uid,
            rx,
            cancel,
            state,
            transient: HashMap::new(),
            posted: None,
            pod_ip: None,
            volumes_ready: false,
            adopted: false,
            probe_state: HashMap::new(),
            outcomes: probes::channel(),
        }
    }

    async fn run(mut self) {
        loop {
            let pod = self.rx.borrow_and_update().clone();
            let next = match pod {
                None => {
                    self.terminate(None, Duration::from_secs(2)).await;
                    Next::Done
                }
                Some(p) if p.pod.metadata.deletion_timestamp.is_some() => {
                    let grace = p
                        .pod
                        .metadata
                        .deletion_grace_period_seconds
                        .or_else(|| p.spec().termination_grace_period_seconds)
                        .unwrap_or(30)
                        .max(0) as u64;
                    self.terminate(Some(&p), Duration::from_secs(grace)).await;
                    Next::Done
                }
                Some(p) => {
                    self.sync(&p).await;
                    Next::Continue
                }
            };
            if matches!(next, Next::Done) {
                return;
            }
            tokio::select! {
                _ = self.cancel.cancelled() => return,
                r = self.rx.changed() => if r.is_err() { return },
                _ = tokio::time::sleep(TICK) => {}
            }
        }
    }

    fn cid(&self, name: &str) -> String {
        container_id(&self.uid, name)
    }

    fn pod_dir(&self) -> PathBuf {
        pods_dir(&self.node.root).join(&self.uid)
    }

    /// Bring the node toward the pod, then report.
    async fn sync(&mut self, p: &PodObj) {
        if proto::vm::is_vm(&p.raw) && self.node.vm.is_none() {
            let msg = "this node runs no virtual machines (VM pods go to nodes labelled vm.atoll.io/runtime)";
            return self.refuse(p, "VMUnsupported", msg.into()).await;
        }
        if self.state.name.is_empty() {
            self.state.tenant = p.tenant.clone();
            self.state.namespace = p.namespace().to_string();
            self.state.name = p.name().to_string();
            self.state.start_time = Some(Utc::now());
            save_state(&self.node.root, &self.uid, &self.state);
            crate::metrics::get().started_pods.inc();
        }
        let spec = p.spec();
        let policy = restart_policy(p);
        if !self.adopted {
            self.adopted = true;
            for c in spec
                .init_containers
                .iter()
                .flatten()
                .chain(spec.containers.iter())
            {
                if matches!(
                    self.node.runtime.state(&self.cid(&c.name)),
                    State::Running { .. }
                ) {
                    tracing::info!(pod = %p.name(), container = %c.name, "adopted running container");
                }
            }
        }
        if self.state.terminal.is_none() {
            if let Err(msg) = self.sandbox(p).await {
                for c in spec
                    .init_containers
                    .iter()
                    .flatten()
                    .chain(spec.containers.iter())
                {
                    self.transient.entry(c.name.clone()).or_default().waiting =
                        Some(("ContainerCreating".into(), msg.clone()));
                }
            } else {
                self.containers(p, &policy).await;
                self.probes(p).await;
            }
        }
        self.report(p, &policy).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn st(running: bool, term: Option<i64>, last: bool) -> Value {
        let mut v = json!({});
        if running {
            v["state"] = json!({"running": {}});
        } else if let Some(c) = term {
            v["state"] = json!({"terminated": {"exitCode": c}});
        } else {
            v["state"] = json!({"waiting": {}});
        }
        if last {
            v["lastState"] = json!({"terminated": {"exitCode": 1}});
        }
        v
    }

    #[test]
    fn phases_follow_kubelet() {
        assert_eq!(phase("Always", true, false, &[]), "Pending");
        assert_eq!(phase("Never", false, true, &[]), "Failed");
        assert_eq!(
            phase("Always", false, false, &[st(false, None, false)]),
            "Pending"
        );
        assert_eq!(
            phase("Always", false, false, &[st(true, None, false)]),
            "Running"
        );
        // Crash-looping (waiting with a last termination) counts as stopped: Running.
        assert_eq!(
            phase("Always", false, false, &[st(false, None, true)]),
            "Running"
        );
        assert_eq!(
            phase("Never", false, false, &[st(false, Some(0), false)]),
            "Succeeded"
        );
        assert_eq!(
            phase("Never", false, false, &[st(false, Some(2), false)]),
            "Failed"
        );
        assert_eq!(
            phase(
                "OnFailure",
                false,
                false,
                &[st(false, Some(0), false), st(false, Some(0), false)]
            ),
            "Succeeded"
        );
        assert_eq!(
            phase(
                "Always",
                false,
                false,
                &[st(true, None, false), st(false, Some(0), false)]
            ),
            "Running"
        );
    }

    #[test]
    fn a_vm_that_terminates_on_shutdown_never_restarts() {
        let pod = |extra: Value| {
            let mut vm = json!({"name": "vm", "image": "i"});
            if let (Some(o), Some(e)) = (vm.as_object_mut(), extra.as_object()) {
                o.extend(e.clone());
            }
            PodObj::from_value(json!({"metadata": {"name": "p", "uid": "u"},
                "spec": {"restartPolicy": "Always", "virtualMachine": vm, "containers": [{"name": "vm", "image": "i"}]}}))
            .unwrap()
        };
        assert_eq!(restart_policy(&pod(json!({}))), "Always");
        assert_eq!(
            restart_policy(&pod(json!({"shutdownBehavior": "stop"}))),
            "Always"
        );
        assert_eq!(
            restart_policy(&pod(json!({"shutdownBehavior": "terminate"}))),
            "Never"
        );
    }

    #[test]
    fn restart_policies() {
        assert!(restarts("Always", 0));
        assert!(restarts("OnFailure", 1));
        assert!(!restarts("OnFailure", 0));
        assert!(!restarts("Never", 1));
    }

    #[test]
    fn ids_and_paths() {
        assert_eq!(
            container_id("0123-4567-89ab-cdef", "web"),
            "0123456789ab-web"
        );
        assert_eq!(
            core_path("", "ns", "pods", "p"),
            "/api/v1/namespaces/ns/pods/p"
        );
        assert_eq!(
            core_path("acme", "ns", "pods", "p"),
            "/api/v1/tenants/acme/namespaces/ns/pods/p"
        );
        assert_eq!(
            log_dir(Path::new("/r"), "", "ns", "p", "u"),
            PathBuf::from("/r/logs/-_ns_p_u")
        );
    }

    #[test]
    fn downward_fields() {
        let p = PodObj::from_value(json!({"metadata": {"name": "p", "namespace": "ns", "uid": "u", "tenant": "t", "labels": {"app": "x"}}, "spec": {"nodeName": "n1", "containers": []}})).unwrap();
        assert_eq!(
            field(&p, "metadata.labels['app']", "", "").as_deref(),
            Some("x")
        );
        assert_eq!(field(&p, "metadata.tenant", "", "").as_deref(), Some("t"));
        assert_eq!(field(&p, "spec.nodeName", "", "").as_deref(), Some("n1"));
        assert_eq!(
            field(&p, "status.podIP", "10.0.0.2", "").as_deref(),
            Some("10.0.0.2")
        );
        assert_eq!(field(&p, "spec.bogus", "", ""), None);
    }

    /// A docker-archive with one tiny layer, importable as `test/img:v1`.
    fn archive(dir: &Path) -> PathBuf {
        use sha2::Digest;
        let mut layer = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(3);
        h.set_mode(0o644);
        h.set_cksum();
        layer.append_data(&mut h, "hello", &b"hi\n"[..]).unwrap();
        let layer = layer.into_inner().unwrap();
        let diff = format!("sha256:{:x}", sha2::Sha256::digest(&layer));
        let config = serde_json::to_vec(&json!({"architecture": "amd64", "os": "linux", "config": {"Cmd": ["sh"]}, "rootfs": {"type": "layers", "diff_ids": [diff]}})).unwrap();
        let manifest = serde_json::to_vec(&json!([{"Config": "config.json", "RepoTags": ["test/img:v1"], "Layers": ["layer.tar"]}])).unwrap();
        let mut t = tar::Builder::new(Vec::new());
        for (name, body) in [
            ("manifest.json", &manifest),
            ("config.json", &config),
            ("layer.tar", &layer),
        ] {
            let mut h = tar::Header::new_gnu();
            h.set_size(body.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            t.append_data(&mut h, name, &body[..]).unwrap();
        }
        let path = dir.join("img.tar");
        std::fs::write(&path, t.into_inner().unwrap()).unwrap();
        path
    }

    /// What the fake API server was asked.
    #[derive(Default)]
    struct Seen {
        statuses: Vec<Value>,
        deletes: Vec<Value>,
    }

    fn fake_api(seen: Arc<std::sync::Mutex<Seen>>) -> kube::Client {
        use http_body_util::BodyExt;
        let svc = tower::service_fn(move |req: http::Request<kube::client::Body>| {
            let seen = seen.clone();
            async move {
                let (parts, body) = req.into_parts();
                let body = body
                    .collect()
                    .await
                    .map(|b| b.to_bytes())
                    .unwrap_or_default();
                let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                let path = parts.uri.path().to_string();
                let (code, reply) = match parts.method.as_str() {
                    "PATCH" if path.ends_with("/status") => {
                        seen.lock().unwrap().statuses.push(v["status"].clone());
                        (
                            200,
                            json!({"kind": "Pod", "apiVersion": "v1", "metadata": {"name": "p"}}),
                        )
                    }
                    "DELETE" => {
                        seen.lock().unwrap().deletes.push(v);
                        (
                            200,
                            json!({"kind": "Pod", "apiVersion": "v1", "metadata": {"name": "p"}}),
                        )
                    }
                    _ => (
                        404,
                        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404, "message": "not found"}),
                    ),
                };
                Ok::<_, std::convert::Infallible>(
                    http::Response::builder()
                        .status(code)
                        .header("content-type", "application/json")
                        .body(kube::client::Body::from(
                            serde_json::to_vec(&reply).unwrap(),
                        ))
                        .unwrap(),
                )
            }
        });
        kube::Client::new(svc, "default")
    }

    async fn until(what: &str, seen: &Arc<std::sync::Mutex<Seen>>, f: impl Fn(&Seen) -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !f(&seen.lock().unwrap()) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {what}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn last(s: &Seen, ptr: &str) -> Value {
        s.statuses
            .last()
            .and_then(|v| v.pointer(ptr).cloned())
            .unwrap_or(Value::Null)
    }

    /// The worker over the fake runtime: start, restart with back-off shown as
    /// CrashLoopBackOff, and graceful deletion ending in a uid-preconditioned delete.
    #[tokio::test]
    async fn worker_restarts_backs_off_and_deletes_gracefully() {
        let dir = tempfile::tempdir().unwrap();
        let images = ImageStore::open(dir.path(), Vec::new()).unwrap();
        images.import(&archive(dir.path())).unwrap();
        let seen: Arc<std::sync::Mutex<Seen>> = Default::default();
        let fake = crate::runtime::Fake::default();
        let node = Arc::new(Node {
            client: fake_api(seen.clone()),
            name: "n1".into(),
            root: dir.path().to_path_buf(),
            runtime: fake.clone(),
            images,
            network: None,
            node_ip: "10.0.0.1".into(),
            backoff: Duration::from_millis(300),
            vm: None,
        });
        let mut raw = json!({"metadata": {"name": "p", "namespace": "default", "uid": "u1"},
            "spec": {"nodeName": "n1", "hostNetwork": true, "containers": [{"name": "c", "image": "test/img:v1", "command": ["sleep", "1"]}]}});
        let (tx, rx) = watch::channel(PodObj::from_value(raw.clone()));
        let cancel = CancellationToken::new();
        let worker = tokio::spawn(Worker::new(node, "u1".into(), rx, cancel.clone()).run());
        let id = container_id("u1", "c");

        until("Running", &seen, |s| {
            last(s, "/phase") == "Running" && last(s, "/containerStatuses/0/ready") == true
        })
        .await;
        assert_eq!(
            fake.spec(&id).unwrap()["process"]["args"],
            json!(["sleep", "1"])
        );
        assert_eq!(
            seen.lock().unwrap().statuses.last().unwrap()["hostIP"],
            "10.0.0.1"
        );

        // First crash: restarted at once, the end kept as lastState.
        fake.exit(&id, 1);
        until("restart 1", &seen, |s| {
            last(s, "/containerStatuses/0/restartCount") == 1
                && last(s, "/containerStatuses/0/state/running").is_object()
        })
        .await;
        assert_eq!(
            last(
                &seen.lock().unwrap(),
                "/containerStatuses/0/lastState/terminated/exitCode"
            ),
            1
        );
        // Second crash: back-off first, shown as CrashLoopBackOff, then the restart.
        fake.exit(&id, 2);
        until("CrashLoopBackOff", &seen, |s| {
            last(s, "/containerStatuses/0/state/waiting/reason") == "CrashLoopBackOff"
        })
        .await;
        assert_eq!(last(&seen.lock().unwrap(), "/phase"), "Running");
        until("restart 2", &seen, |s| {
            last(s, "/containerStatuses/0/restartCount") == 2
                && last(s, "/containerStatuses/0/state/running").is_object()
        })
        .await;
        assert_eq!(fake.starts().len(), 3);

        // Deletion: SIGTERM (the fake exits on it), then the object goes, only for this uid.
        raw["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
        raw["metadata"]["deletionGracePeriodSeconds"] = json!(5);
        tx.send(PodObj::from_value(raw)).unwrap();
        until("delete", &seen, |s| !s.deletes.is_empty()).await;
        assert_eq!(fake.signals(), vec![(id.clone(), "TERM".to_string())]);
        assert_eq!(
            seen.lock().unwrap().deletes[0]["preconditions"]["uid"],
            "u1"
        );
        tokio::time::timeout(Duration::from_secs(5), worker)
            .await
            .unwrap()
            .unwrap();
        assert!(fake.list().is_empty(), "containers left: {:?}", fake.list());
    }
}
