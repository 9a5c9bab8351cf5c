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
}

/// `10s`, `2m40s`, `300ms`: how kubelet prints a back-off.
fn human(d: Duration) -> String {
    let ms = d.as_millis();
    if !ms.is_multiple_of(1000) {
        format!("{ms}ms")
    } else if ms >= 60_000 {
        format!("{}m{}s", ms / 60_000, (ms % 60_000) / 1000)
    } else {
        format!("{}s", ms / 1000)
    }
}

fn pods_dir(root: &Path) -> PathBuf {
    root.join("pods")
}

fn load_state(root: &Path, uid: &str) -> Option<PodState> {
    serde_json::from_slice(&std::fs::read(pods_dir(root).join(uid).join("state.json")).ok()?).ok()
}

fn save_state(root: &Path, uid: &str, s: &PodState) {
    let dir = pods_dir(root).join(uid);
    if let Err(e) = std::fs::create_dir_all(&dir)
        .and_then(|_| crate::shim::write_json_atomic(&dir.join("state.json"), s))
    {
        tracing::warn!(pod = %uid, error = %e, "saving pod state failed");
    }
}

/// The pod phase from its container statuses (kubelet's rules).
pub fn phase(
    restart_policy: &str,
    init_pending: bool,
    init_failed: bool,
    statuses: &[Value],
) -> &'static str {
    if init_failed {
        return "Failed";
    }
    if init_pending {
        return "Pending";
    }
    let (mut running, mut waiting, mut stopped, mut succeeded) = (0, 0, 0, 0);
    for s in statuses {
        if s.pointer("/state/running").is_some() {
            running += 1;
        } else if let Some(t) = s.pointer("/state/terminated") {
            stopped += 1;
            if t["exitCode"] == 0 {
                succeeded += 1;
            }
        } else if s.pointer("/lastState/terminated").is_some() {
            stopped += 1;
        } else {
            waiting += 1;
        }
    }
    if waiting > 0 {
        "Pending"
    } else if running > 0 {
        "Running"
    } else if stopped > 0 {
        if restart_policy == "Always" {
            "Running"
        } else if stopped == succeeded {
            "Succeeded"
        } else if restart_policy == "Never" {
            "Failed"
        } else {
            "Running"
        }
    } else {
        "Pending"
    }
}

/// Whether a container that exited with `code` restarts under `policy`.
pub fn restarts(policy: &str, code: i32) -> bool {
    match policy {
        "Never" => false,
        "OnFailure" => code != 0,
        _ => true,
    }
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
        Worker::new(node, uid, rx, cancel).run().await;
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

/// Remove the pod's (empty) cgroup directories; runc removes the containers' own.
pub fn remove_cgroups(uid: &str) {
    let Ok(rd) = std::fs::read_dir("/sys/fs/cgroup") else {
        return;
    };
    for sub in rd.filter_map(|e| e.ok()) {
        let _ = std::fs::remove_dir(sub.path().join("atoll").join(uid));
    }
}

async fn teardown_files<R: Runtime>(node: &Node<R>, uid: &str, st: &PodState) {
    remove_cgroups(uid);
    if let Some(net) = &node.network {
        if let Err(e) = net.teardown(uid, &st.tenant).await {
            tracing::warn!(pod = %uid, error = %e, "network teardown failed");
        }
    }
    let dir = pods_dir(&node.root).join(uid);
    crate::runtime::unmount_all(&dir).await;
    let _ = std::fs::remove_dir_all(&dir);
    if !st.name.is_empty() {
        let _ = std::fs::remove_dir_all(log_dir(
            &node.root,
            &st.tenant,
            &st.namespace,
            &st.name,
            uid,
        ));
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
        if self.state.name.is_empty() {
            self.state.tenant = p.tenant.clone();
            self.state.namespace = p.namespace().to_string();
            self.state.name = p.name().to_string();
            self.state.start_time = Some(Utc::now());
            save_state(&self.node.root, &self.uid, &self.state);
        }
        let spec = p.spec();
        let policy = spec
            .restart_policy
            .clone()
            .unwrap_or_else(|| "Always".into());
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
            }
        }
        self.report(p, &policy).await;
    }

    async fn sandbox(&mut self, p: &PodObj) -> Result<(), String> {
        let spec = p.spec();
        let host_network = spec.host_network.unwrap_or(false);
        if self.pod_ip.is_none() {
            if host_network {
                self.pod_ip = Some(self.node.node_ip.clone());
            } else if let Some(net) = &self.node.network {
                let n = net
                    .setup(&self.uid, &p.tenant)
                    .await
                    .map_err(|e| format!("setting up the pod network: {e}"))?;
                self.pod_ip = Some(n.ip.to_string());
            } else {
                return Err("this node has no pod network (CNI) configured".into());
            }
        }
        if !self.volumes_ready {
            self.write_etc(p, host_network)?;
            self.volumes(p).await?;
            self.volumes_ready = true;
        }
        Ok(())
    }

    fn hostname(p: &PodObj) -> String {
        p.spec().hostname.unwrap_or_else(|| p.name().to_string())
    }

    fn write_etc(&self, p: &PodObj, host_network: bool) -> Result<(), String> {
        let dir = self.pod_dir().join("etc");
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let host = Self::hostname(p);
        let hosts = if host_network {
            std::fs::read_to_string("/etc/hosts").unwrap_or_default()
        } else {
            format!(
                "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n{}\t{host}\n",
                self.pod_ip.as_deref().unwrap_or("")
            )
        };
        let resolv = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
        for (f, body) in [
            ("hosts", hosts),
            ("resolv.conf", resolv),
            ("hostname", format!("{host}\n")),
        ] {
            std::fs::write(dir.join(f), body).map_err(|e| format!("{f}: {e}"))?;
        }
        Ok(())
    }

    async fn get_obj(&self, p: &PodObj, plural: &str, name: &str) -> Result<Option<Value>, String> {
        let req = http::Request::get(core_path(&p.tenant, p.namespace(), plural, name))
            .body(Vec::new())
            .map_err(|e| e.to_string())?;
        match self.node.client.request::<Value>(req).await {
            Ok(v) => Ok(Some(v)),
            Err(kube::Error::Api(e)) if e.code == 404 => Ok(None),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Key → bytes of a configmap or secret.
    async fn data(
        &self,
        p: &PodObj,
        plural: &str,
        name: &str,
    ) -> Result<Option<BTreeMap<String, Vec<u8>>>, String> {
        use base64::Engine;
        let Some(v) = self.get_obj(p, plural, name).await? else {
            return Ok(None);
        };
        let mut out = BTreeMap::new();
        let b64 = |s: &str| {
            base64::engine::general_purpose::STANDARD
                .decode(s)
                .unwrap_or_default()
        };
        if let Some(m) = v.get("data").and_then(Value::as_object) {
            for (k, val) in m {
                let s = val.as_str().unwrap_or("");
                out.insert(
                    k.clone(),
                    if plural == "secrets" {
                        b64(s)
                    } else {
                        s.as_bytes().to_vec()
                    },
                );
            }
        }
        if let Some(m) = v.get("binaryData").and_then(Value::as_object) {
            for (k, val) in m {
                out.insert(k.clone(), b64(val.as_str().unwrap_or("")));
            }
        }
        if let Some(m) = v.get("stringData").and_then(Value::as_object) {
            for (k, val) in m {
                out.insert(k.clone(), val.as_str().unwrap_or("").as_bytes().to_vec());
            }
        }
        Ok(Some(out))
    }

    async fn volumes(&self, p: &PodObj) -> Result<(), String> {
        use std::os::unix::fs::PermissionsExt;
        let spec = p.spec();
        let vdir = self.pod_dir().join("volumes");
        for v in spec.volumes.iter().flatten() {
            let dir = vdir.join(&v.name);
            std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            let projected = |plural: &str,
                             name: &str,
                             items: &Option<Vec<k8s_openapi::api::core::v1::KeyToPath>>,
                             mode: Option<i32>,
                             optional: Option<bool>| {
                (
                    plural.to_string(),
                    name.to_string(),
                    items.clone(),
                    mode,
                    optional.unwrap_or(false),
                )
            };
            let sources = if let Some(cm) = &v.config_map {
                vec![projected(
                    "configmaps",
                    &cm.name,
                    &cm.items,
                    cm.default_mode,
                    cm.optional,
                )]
            } else if let Some(s) = &v.secret {
                vec![projected(
                    "secrets",
                    s.secret_name.as_deref().unwrap_or(""),
                    &s.items,
                    s.default_mode,
                    s.optional,
                )]
            } else if let Some(pr) = &v.projected {
                let mut out = Vec::new();
                for src in pr.sources.iter().flatten() {
                    if let Some(cm) = &src.config_map {
                        out.push(projected(
                            "configmaps",
                            &cm.name,
                            &cm.items,
                            pr.default_mode,
                            cm.optional,
                        ));
                    } else if let Some(s) = &src.secret {
                        out.push(projected(
                            "secrets",
                            &s.name,
                            &s.items,
                            pr.default_mode,
                            s.optional,
                        ));
                    } else {
                        return Err(format!(
                            "volume {:?}: only configMap and secret projections are supported",
                            v.name
                        ));
                    }
                }
                out
            } else if let Some(e) = &v.empty_dir {
                if e.medium.as_deref() == Some("Memory") && !crate::runtime::is_mounted(&dir) {
                    let mut c = tokio::process::Command::new("mount");
                    c.args(["-t", "tmpfs", "-o", "mode=1777", "tmpfs"])
                        .arg(&dir);
                    crate::runtime::run_cmd(&mut c, Duration::from_secs(10))
                        .await
                        .map_err(|e| format!("volume {:?}: {e}", v.name))?;
                } else {
                    let _ = std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777));
                }
                continue;
            } else if v.host_path.is_some() {
                continue;
            } else {
                return Err(format!("volume {:?}: unsupported volume type", v.name));
            };
            for (plural, name, items, mode, optional) in sources {
                let kind = if plural == "secrets" {
                    "secret"
                } else {
                    "configmap"
                };
                let Some(data) = self.data(p, &plural, &name).await? else {
                    if optional {
                        continue;
                    }
                    return Err(format!("{kind} {name:?} not found"));
                };
                let mode = mode.unwrap_or(0o644) as u32 & 0o777;
                let files: Vec<(String, Vec<u8>, u32)> = match &items {
                    Some(items) => {
                        let mut f = Vec::new();
                        for it in items {
                            let Some(b) = data.get(&it.key) else {
                                if optional {
                                    continue;
                                }
                                return Err(format!("{kind} {name:?}: key {:?} not found", it.key));
                            };
                            f.push((
                                it.path.clone(),
                                b.clone(),
                                it.mode.map_or(mode, |m| m as u32 & 0o777),
                            ));
                        }
                        f
                    }
                    None => data.into_iter().map(|(k, b)| (k, b, mode)).collect(),
                };
                for (rel, body, m) in files {
                    let rel_path = Path::new(&rel);
                    if rel_path.is_absolute()
                        || rel_path
                            .components()
                            .any(|c| matches!(c, std::path::Component::ParentDir))
                    {
                        return Err(format!(
                            "volume {:?}: path {rel:?} must be relative and may not contain '..'",
                            v.name
                        ));
                    }
                    let f = dir.join(rel_path);
                    if let Some(parent) = f.parent() {
                        std::fs::create_dir_all(parent).map_err(|e| e.to_string())?;
                    }
                    std::fs::write(&f, body).map_err(|e| format!("{}: {e}", f.display()))?;
                    let _ = std::fs::set_permissions(&f, std::fs::Permissions::from_mode(m));
                }
            }
        }
        Ok(())
    }

    fn mounts(&self, p: &PodObj, c: &Container) -> Result<Vec<oci::Mount>, String> {
        let spec = p.spec();
        let vdir = self.pod_dir().join("volumes");
        let etc = self.pod_dir().join("etc");
        let mut out = vec![
            oci::Mount {
                destination: "/etc/hosts".into(),
                source: Some(etc.join("hosts")),
                read_only: false,
            },
            oci::Mount {
                destination: "/etc/resolv.conf".into(),
                source: Some(etc.join("resolv.conf")),
                read_only: false,
            },
            oci::Mount {
                destination: "/etc/hostname".into(),
                source: Some(etc.join("hostname")),
                read_only: false,
            },
        ];
        for m in c.volume_mounts.iter().flatten() {
            let v = spec
                .volumes
                .iter()
                .flatten()
                .find(|v| v.name == m.name)
                .ok_or_else(|| format!("volumeMount {:?}: no volume by that name", m.name))?;
            let mut src = match &v.host_path {
                Some(hp) => {
                    let path = PathBuf::from(&hp.path);
                    if matches!(hp.type_.as_deref(), Some("DirectoryOrCreate")) {
                        let _ = std::fs::create_dir_all(&path);
                    }
                    path
                }
                None => vdir.join(&v.name),
            };
            if let Some(sp) = m.sub_path.as_deref().filter(|s| !s.is_empty()) {
                let rel = Path::new(sp);
                if rel.is_absolute()
                    || rel
                        .components()
                        .any(|c| matches!(c, std::path::Component::ParentDir))
                {
                    return Err(format!(
                        "subPath {sp:?} must be relative and may not contain '..'"
                    ));
                }
                src = src.join(rel);
                if !src.exists() {
                    std::fs::create_dir_all(&src).map_err(|e| e.to_string())?;
                }
            }
            let ro = m.read_only.unwrap_or(false)
                || v.config_map.is_some()
                || v.secret.is_some()
                || v.projected.is_some();
            out.push(oci::Mount {
                destination: m.mount_path.clone(),
                source: Some(src),
                read_only: ro,
            });
        }
        Ok(out)
    }

    async fn env(
        &self,
        p: &PodObj,
        c: &Container,
        image_env: &[String],
    ) -> Result<Vec<String>, (String, String)> {
        let cfg_err = |m: String| ("CreateContainerConfigError".to_string(), m);
        let mut env: BTreeMap<String, String> = BTreeMap::new();
        let mut order: Vec<String> = Vec::new();
        let mut set = |env: &mut BTreeMap<String, String>, k: String, v: String| {
            if !order.contains(&k) {
                order.push(k.clone());
            }
            env.insert(k, v);
        };
        for kv in image_env {
            if let Some((k, v)) = kv.split_once('=') {
                set(&mut env, k.to_string(), v.to_string());
            }
        }
        if !env.contains_key("PATH") {
            set(
                &mut env,
                "PATH".into(),
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
            );
        }
        set(&mut env, "HOSTNAME".into(), Self::hostname(p));
        for ef in c.env_from.iter().flatten() {
            let prefix = ef.prefix.clone().unwrap_or_default();
            let (plural, name, optional) = if let Some(r) = &ef.config_map_ref {
                ("configmaps", r.name.clone(), r.optional.unwrap_or(false))
            } else if let Some(r) = &ef.secret_ref {
                ("secrets", r.name.clone(), r.optional.unwrap_or(false))
            } else {
                continue;
            };
            match self.data(p, plural, &name).await.map_err(cfg_err)? {
                Some(d) => {
                    for (k, v) in d {
                        set(
                            &mut env,
                            format!("{prefix}{k}"),
                            String::from_utf8_lossy(&v).into_owned(),
                        );
                    }
                }
                None if optional => {}
                None => {
                    let kind = if plural == "secrets" {
                        "secret"
                    } else {
                        "configmap"
                    };
                    return Err(cfg_err(format!("{kind} {name:?} not found")));
                }
            }
        }
        for e in c.env.iter().flatten() {
            let val = if let Some(v) = &e.value {
                oci::expand(v, &env)
            } else if let Some(vf) = &e.value_from {
                if let Some(f) = &vf.field_ref {
                    field(
                        p,
                        &f.field_path,
                        self.pod_ip.as_deref().unwrap_or(""),
                        &self.node.node_ip,
                    )
                    .ok_or_else(|| {
                        cfg_err(format!(
                            "env {:?}: unsupported fieldPath {:?}",
                            e.name, f.field_path
                        ))
                    })?
                } else if let Some(r) = vf
                    .config_map_key_ref
                    .as_ref()
                    .map(|r| ("configmaps", &r.name, &r.key, r.optional))
                    .or_else(|| {
                        vf.secret_key_ref
                            .as_ref()
                            .map(|r| ("secrets", &r.name, &r.key, r.optional))
                    })
                {
                    let (plural, name, key, optional) = r;
                    let kind = if plural == "secrets" {
                        "secret"
                    } else {
                        "configmap"
                    };
                    match self.data(p, plural, name).await.map_err(cfg_err)? {
                        Some(d) => match d.get(key) {
                            Some(v) => String::from_utf8_lossy(v).into_owned(),
                            None if optional.unwrap_or(false) => continue,
                            None => {
                                return Err(cfg_err(format!(
                                    "couldn't find key {key} in {kind} {}/{name}",
                                    p.namespace()
                                )))
                            }
                        },
                        None if optional.unwrap_or(false) => continue,
                        None => return Err(cfg_err(format!("{kind} {name:?} not found"))),
                    }
                } else {
                    return Err(cfg_err(format!("env {:?}: unsupported valueFrom", e.name)));
                }
            } else {
                String::new()
            };
            set(&mut env, e.name.clone(), val);
        }
        Ok(order
            .iter()
            .map(|k| format!("{k}={}", env.get(k).map(String::as_str).unwrap_or("")))
            .collect())
    }

    /// Start container `c` (attempt = its restart count).
    async fn start(&mut self, p: &PodObj, c: &Container) -> Result<State, (String, String)> {
        let policy = PullPolicy::parse(
            c.image_pull_policy.as_deref(),
            c.image.as_deref().unwrap_or(""),
        );
        let image_ref = c.image.clone().unwrap_or_default();
        let img = match self.node.images.ensure(&image_ref, policy).await {
            Ok(i) => i,
            Err(ImageError::NeverPull(m)) => return Err(("ErrImageNeverPull".into(), m)),
            Err(ImageError::InvalidName(m)) => return Err(("InvalidImageName".into(), m)),
            Err(e) => return Err(("ErrImagePull".into(), e.to_string())),
        };
        let env = self.env(p, c, &img.config.env).await?;
        let env_map: BTreeMap<String, String> = env
            .iter()
            .filter_map(|kv| {
                kv.split_once('=')
                    .map(|(k, v)| (k.to_string(), v.to_string()))
            })
            .collect();
        let cfg_err = |m: String| ("CreateContainerConfigError".to_string(), m);
        let user = oci::resolve_user(&img.config.user, &img.rootfs).map_err(cfg_err)?;
        let mounts = self.mounts(p, c).map_err(cfg_err)?;
        let spec = p.spec();
        let netns = if spec.host_network.unwrap_or(false) {
            None
        } else {
            self.node
                .network
                .as_ref()
                .and_then(|n| n.get(&self.uid))
                .map(|n| n.netns)
        };
        let hostname = if spec.host_network.unwrap_or(false) {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .unwrap_or_default()
                .trim()
                .to_string()
        } else {
            Self::hostname(p)
        };
        let id = self.cid(&c.name);
        let parts = oci::PodParts {
            spec: &spec,
            netns: netns.as_deref(),
            hostname: &hostname,
            cgroups_path: format!("/atoll/{}/{}", self.uid, c.name),
        };
        let cwd = c
            .working_dir
            .clone()
            .unwrap_or_else(|| img.config.working_dir.clone());
        let oci_spec = oci::spec(
            c,
            &parts,
            oci::argv(c, &img.config, &env_map),
            env,
            &cwd,
            user,
            &mounts,
        );
        let cs = self.state.containers.entry(c.name.clone()).or_default();
        cs.image_id = img.id.clone();
        let attempt = cs.restart_count;
        let log = log_dir(
            &self.node.root,
            &p.tenant,
            p.namespace(),
            p.name(),
            &self.uid,
        )
        .join(&c.name)
        .join(format!("{attempt}.log"));
        save_state(&self.node.root, &self.uid, &self.state);
        self.node
            .runtime
            .start(ContainerConfig {
                id,
                image_rootfs: img.rootfs.clone(),
                spec: oci_spec,
                log,
            })
            .await
            .map_err(|e| ("RunContainerError".to_string(), e.to_string()))
    }

    /// Drive init containers (in order), then app containers.
    async fn containers(&mut self, p: &PodObj, policy: &str) {
        let spec = p.spec();
        for c in spec.init_containers.iter().flatten() {
            if self.state.containers.get(&c.name).is_some_and(|s| s.done) {
                continue;
            }
            let id = self.cid(&c.name);
            match self.node.runtime.state(&id) {
                State::Running { .. } => return,
                State::Exited { exit_code: 0, .. } => {
                    self.state
                        .containers
                        .entry(c.name.clone())
                        .or_default()
                        .done = true;
                    save_state(&self.node.root, &self.uid, &self.state);
                    continue;
                }
                s @ State::Exited { .. } => {
                    if policy == "Never" {
                        return;
                    }
                    self.restart(p, c, &s).await;
                    return;
                }
                State::Missing => {
                    self.lost(&c.name);
                    self.try_start(p, c).await;
                    return;
                }
            }
        }
        for c in &spec.containers {
            let id = self.cid(&c.name);
            match self.node.runtime.state(&id) {
                State::Running { .. } => {}
                State::Missing => {
                    self.lost(&c.name);
                    self.try_start(p, c).await
                }
                s @ State::Exited { exit_code, .. } => {
                    if restarts(policy, exit_code) {
                        self.restart(p, c, &s).await;
                    }
                }
            }
        }
    }

    /// A container that was started is gone without a recorded exit (the node rebooted, or
    /// someone removed it): count it as a restart with an unknown end, like kubelet.
    fn lost(&mut self, name: &str) {
        let id = self.cid(name);
        let cs = self.state.containers.entry(name.to_string()).or_default();
        if !cs.started {
            return;
        }
        cs.started = false;
        cs.restart_count += 1;
        cs.last = Some(Term {
            exit_code: 255,
            reason: "Unknown".into(),
            message: None,
            started_at: None,
            finished_at: Utc::now(),
            container_id: id,
        });
        save_state(&self.node.root, &self.uid, &self.state);
    }

    async fn try_start(&mut self, p: &PodObj, c: &Container) {
        let t = self.transient.entry(c.name.clone()).or_default();
        if t.not_before
            .is_some_and(|nb| tokio::time::Instant::now() < nb)
        {
            // Backing off: say so in the status, once the pull error has been shown for a
            // while (our own status update wakes this worker at once).
            let shown = t
                .failed_at
                .is_some_and(|f| f.elapsed() >= (t.delay / 2).min(Duration::from_secs(5)));
            if let Some((r, _)) = &t.waiting {
                if r == "ErrImagePull" && shown {
                    t.waiting = Some((
                        "ImagePullBackOff".into(),
                        format!(
                            "Back-off pulling image {:?}",
                            c.image.as_deref().unwrap_or("")
                        ),
                    ));
                }
            }
            return;
        }
        match self.start(p, c).await {
            Ok(_) => {
                self.event(
                    p,
                    Some(&c.name),
                    "Normal",
                    "Started",
                    format!("Started container {}", c.name),
                );
                let t = self.transient.entry(c.name.clone()).or_default();
                t.waiting = None;
                t.not_before = None;
                self.state
                    .containers
                    .entry(c.name.clone())
                    .or_default()
                    .started = true;
                save_state(&self.node.root, &self.uid, &self.state);
            }
            Err((reason, msg)) => {
                tracing::info!(pod = %p.name(), container = %c.name, %reason, %msg, "container not started");
                self.event(
                    p,
                    Some(&c.name),
                    "Warning",
                    "Failed",
                    format!("Error: {reason}: {msg}"),
                );
                let base = self.node.backoff;
                let t = self.transient.entry(c.name.clone()).or_default();
                t.delay = if t.delay.is_zero() {
                    base
                } else {
                    (t.delay * 2).min(MAX_BACKOFF)
                };
                t.not_before = Some(tokio::time::Instant::now() + t.delay);
                t.failed_at = Some(tokio::time::Instant::now());
                t.waiting = Some((reason, msg));
            }
        }
    }

    /// Restart an exited container, after its back-off.
    async fn restart(&mut self, p: &PodObj, c: &Container, s: &State) {
        let now = tokio::time::Instant::now();
        let base = self.node.backoff;
        let t = self.transient.entry(c.name.clone()).or_default();
        if let State::Exited {
            started_at: Some(st),
            finished_at,
            ..
        } = s
        {
            if (*finished_at - *st).to_std().unwrap_or_default() >= BACKOFF_RESET {
                t.delay = Duration::ZERO;
            }
        }
        if t.not_before.is_none() {
            // First sight of this exit: wait the current back-off (none before the first
            // restart), and double it for the next one.
            if !t.delay.is_zero() {
                let msg = format!(
                    "Back-off restarting failed container {} in pod {}_{}({})",
                    c.name,
                    p.name(),
                    p.namespace(),
                    self.uid
                );
                self.event(p, Some(&c.name), "Warning", "BackOff", msg);
            }
            let t = self.transient.entry(c.name.clone()).or_default();
            t.not_before = Some(now + t.delay);
            t.wait = t.delay;
            t.delay = if t.delay.is_zero() {
                base
            } else {
                (t.delay * 2).min(MAX_BACKOFF)
            };
        }
        let t = self.transient.entry(c.name.clone()).or_default();
        if t.not_before.is_some_and(|nb| now < nb) {
            let ns = p.namespace().to_string();
            t.waiting = Some((
                "CrashLoopBackOff".into(),
                format!(
                    "back-off {} restarting failed container={} pod={}_{ns}({})",
                    human(t.wait),
                    c.name,
                    p.name(),
                    self.uid
                ),
            ));
            return;
        }
        t.not_before = None;
        t.waiting = None;
        let id = self.cid(&c.name);
        let cs = self.state.containers.entry(c.name.clone()).or_default();
        cs.last = Term::from_state(s, &id);
        cs.restart_count += 1;
        cs.started = false;
        save_state(&self.node.root, &self.uid, &self.state);
        let delay = self
            .transient
            .get(&c.name)
            .map(|t| t.delay)
            .unwrap_or_default();
        if let Err(e) = self.node.runtime.remove(&id).await {
            tracing::warn!(container = %id, error = %e, "removing the exited container failed");
        }
        self.try_start(p, c).await;
        // try_start may have set its own back-off; keep the crash back-off otherwise.
        let t = self.transient.entry(c.name.clone()).or_default();
        if t.delay < delay {
            t.delay = delay;
        }
    }

    fn container_status(
        &self,
        c: &Container,
        init: bool,
        policy: &str,
        app_blocked: bool,
    ) -> Value {
        let id = self.cid(&c.name);
        let cs = self
            .state
            .containers
            .get(&c.name)
            .cloned()
            .unwrap_or_default();
        let tr = self.transient.get(&c.name).cloned().unwrap_or_default();
        let ts = |t: &DateTime<Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let rs = self.node.runtime.state(&id);
        let (state, ready, started) = match &rs {
            State::Running { started_at } => (
                json!({"running": {"startedAt": ts(started_at)}}),
                !init,
                true,
            ),
            State::Exited { exit_code, .. } => {
                let term = Term::from_state(&rs, &id)
                    .map(|t| t.json())
                    .unwrap_or(Value::Null);
                let will_restart = if init {
                    *exit_code != 0 && policy != "Never"
                } else {
                    restarts(policy, *exit_code)
                };
                match (&tr.waiting, will_restart) {
                    (Some((r, m)), true) => (
                        json!({"waiting": {"reason": r, "message": m}}),
                        false,
                        false,
                    ),
                    _ => (json!({"terminated": term}), false, false),
                }
            }
            State::Missing => {
                let (r, m) = tr.waiting.clone().unwrap_or_else(|| {
                    if app_blocked {
                        ("PodInitializing".into(), String::new())
                    } else {
                        ("ContainerCreating".into(), String::new())
                    }
                });
                let mut w = json!({"reason": r});
                if !m.is_empty() {
                    w["message"] = json!(m);
                }
                (json!({"waiting": w}), false, false)
            }
        };
        // A waiting container whose current attempt ended shows that attempt as lastState.
        let last = match (&rs, state.get("waiting")) {
            (State::Exited { .. }, Some(_)) => Term::from_state(&rs, &id).map(|t| t.json()),
            _ => cs.last.as_ref().map(Term::json),
        };
        let mut v = json!({
            "name": c.name,
            "image": c.image.clone().unwrap_or_default(),
            "imageID": cs.image_id,
            "ready": ready,
            "restartCount": cs.restart_count,
            "started": started,
            "state": state,
            "lastState": last.map_or(json!({}), |t| json!({"terminated": t})),
        });
        if !matches!(rs, State::Missing) {
            v["containerID"] = json!(format!("runc://{id}"));
        }
        v
    }

    async fn report(&mut self, p: &PodObj, policy: &str) {
        let spec = p.spec();
        let inits: Vec<Value> = spec
            .init_containers
            .iter()
            .flatten()
            .map(|c| self.container_status(c, true, policy, false))
            .collect();
        let init_done = spec
            .init_containers
            .iter()
            .flatten()
            .all(|c| self.state.containers.get(&c.name).is_some_and(|s| s.done));
        let init_failed = policy == "Never"
            && inits.iter().any(|s| {
                s.pointer("/state/terminated/exitCode")
                    .and_then(Value::as_i64)
                    .is_some_and(|c| c != 0)
            });
        let apps: Vec<Value> = spec
            .containers
            .iter()
            .map(|c| self.container_status(c, false, policy, !init_done))
            .collect();
        let mut phase = phase(policy, !init_done, init_failed, &apps);
        if let Some(t) = &self.state.terminal {
            phase = if t == "Succeeded" {
                "Succeeded"
            } else {
                "Failed"
            };
        } else if matches!(phase, "Succeeded" | "Failed") {
            self.state.terminal = Some(phase.to_string());
            save_state(&self.node.root, &self.uid, &self.state);
        }
        let all_running = apps.iter().all(|s| s["ready"] == true);
        let existing = |ty: &str| -> Option<Value> {
            p.raw
                .pointer("/status/conditions")
                .and_then(Value::as_array)
                .and_then(|a| a.iter().find(|c| c["type"] == ty).cloned())
        };
        let now = Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let cond = |ty: &str, ok: bool, reason: Option<&str>| {
            let status = if ok { "True" } else { "False" };
            let since = existing(ty)
                .filter(|c| c["status"] == status)
                .and_then(|c| c.get("lastTransitionTime").cloned())
                .unwrap_or_else(|| json!(now));
            let mut c = json!({"type": ty, "status": status, "lastProbeTime": null, "lastTransitionTime": since});
            if let Some(r) = reason.filter(|_| !ok) {
                c["reason"] = json!(r);
            }
            c
        };
        let terminal = matches!(phase, "Succeeded" | "Failed");
        let ready = all_running && !terminal;
        let conditions = vec![
            cond("PodReadyToStartContainers", self.pod_ip.is_some(), None),
            cond("Initialized", init_done, Some("ContainersNotInitialized")),
            cond(
                "Ready",
                ready,
                Some(if terminal {
                    "PodCompleted"
                } else {
                    "ContainersNotReady"
                }),
            ),
            cond(
                "ContainersReady",
                ready,
                Some(if terminal {
                    "PodCompleted"
                } else {
                    "ContainersNotReady"
                }),
            ),
            existing("PodScheduled").unwrap_or_else(|| cond("PodScheduled", true, None)),
        ];
        let mut status = json!({
            "phase": phase,
            "conditions": conditions,
            "hostIP": self.node.node_ip,
            "hostIPs": [{"ip": self.node.node_ip}],
            "containerStatuses": apps,
        });
        if !inits.is_empty() {
            status["initContainerStatuses"] = json!(inits);
        }
        if let Some(ip) = &self.pod_ip {
            status["podIP"] = json!(ip);
            status["podIPs"] = json!([{"ip": ip}]);
        }
        if let Some(st) = &self.state.start_time {
            status["startTime"] = json!(st.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
        }
        // Post only what changed (the API's copy included: another writer may have reset it).
        let api_copy = p.raw.get("status").cloned().unwrap_or(Value::Null);
        if self.posted.as_ref() == Some(&status) && same_status(&api_copy, &status) {
            return;
        }
        if same_status(&api_copy, &status) {
            self.posted = Some(status);
            return;
        }
        let body = serde_json::to_vec(&json!({"status": status})).unwrap_or_default();
        let req = http::Request::patch(format!(
            "{}/status",
            core_path(&p.tenant, p.namespace(), "pods", p.name())
        ))
        .header("content-type", "application/merge-patch+json")
        .body(body);
        let Ok(req) = req else { return };
        match self.node.client.request::<Value>(req).await {
            Ok(_) => self.posted = Some(status),
            Err(e) => {
                tracing::debug!(pod = %p.name(), error = %e, "posting pod status failed");
                self.posted = None;
            }
        }
    }

    /// Stop every container (SIGTERM, up to `grace`, SIGKILL), tear the pod down, and remove
    /// the pod object (when there still is one).
    /// Record an event about the pod (like kubelet's; fire and forget).
    fn event(&self, p: &PodObj, container: Option<&str>, ty: &str, reason: &str, message: String) {
        let now = Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let mut involved = json!({"apiVersion": "v1", "kind": "Pod", "namespace": p.namespace(), "name": p.name(), "uid": self.uid});
        if let Some(c) = container {
            involved["fieldPath"] = json!(format!("spec.containers{{{c}}}"));
        }
        let ev = json!({
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"generateName": format!("{}.", p.name()), "namespace": p.namespace()},
            "involvedObject": involved, "type": ty, "reason": reason, "message": message,
            "source": {"component": "kubelet", "host": self.node.name},
            "reportingComponent": "kubelet", "reportingInstance": self.node.name,
            "firstTimestamp": now, "lastTimestamp": now, "count": 1,
        });
        let path = format!(
            "{}/events",
            core_path(&p.tenant, p.namespace(), "x", "").trim_end_matches("/x/")
        );
        let client = self.node.client.clone();
        tokio::spawn(async move {
            let Ok(req) = http::Request::post(path)
                .header("content-type", "application/json")
                .body(serde_json::to_vec(&ev).unwrap_or_default())
            else {
                return;
            };
            if let Err(e) = client.request::<Value>(req).await {
                tracing::debug!(error = %e, "recording an event failed");
            }
        });
    }

    async fn terminate(&mut self, p: Option<&PodObj>, grace: Duration) {
        let ids: Vec<String> = match p {
            Some(p) => {
                let s = p.spec();
                s.containers
                    .iter()
                    .chain(s.init_containers.iter().flatten())
                    .map(|c| self.cid(&c.name))
                    .collect()
            }
            None => {
                let prefix = container_id(&self.uid, "");
                self.node
                    .runtime
                    .list()
                    .into_iter()
                    .filter(|i| i.starts_with(&prefix))
                    .collect()
            }
        };
        let running = |rt: &R| {
            ids.iter()
                .filter(|i| matches!(rt.state(i), State::Running { .. }))
                .cloned()
                .collect::<Vec<_>>()
        };
        if let Some(p) = p {
            for c in p.spec().containers.iter() {
                if matches!(
                    self.node.runtime.state(&self.cid(&c.name)),
                    State::Running { .. }
                ) {
                    self.event(
                        p,
                        Some(&c.name),
                        "Normal",
                        "Killing",
                        format!("Stopping container {}", c.name),
                    );
                }
            }
        }
        for id in running(&self.node.runtime) {
            self.node.runtime.signal(&id, "TERM").await;
        }
        let deadline = tokio::time::Instant::now() + grace;
        while !running(&self.node.runtime).is_empty() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let left = running(&self.node.runtime);
        for id in &left {
            tracing::info!(container = %id, "grace period over: SIGKILL");
            self.node.runtime.signal(id, "KILL").await;
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !running(&self.node.runtime).is_empty() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        for id in &ids {
            if let Err(e) = self.node.runtime.remove(id).await {
                tracing::warn!(container = %id, error = %e, "removing container failed");
            }
        }
        teardown_files(&self.node, &self.uid, &self.state).await;
        if let Some(p) = p {
            let body = serde_json::to_vec(&json!({"kind": "DeleteOptions", "apiVersion": "v1", "gracePeriodSeconds": 0, "preconditions": {"uid": self.uid}})).unwrap_or_default();
            let path = core_path(&p.tenant, p.namespace(), "pods", p.name());
            // The API server may be briefly unreachable: keep trying until it answers.
            loop {
                let Ok(req) = http::Request::delete(path.as_str())
                    .header("content-type", "application/json")
                    .body(body.clone())
                else {
                    return;
                };
                match self.node.client.request::<Value>(req).await {
                    Ok(_) => break,
                    Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => break,
                    Err(e) => {
                        tracing::warn!(pod = %p.name(), error = %e, "deleting the pod object failed; retrying");
                        tokio::select! { _ = self.cancel.cancelled() => return, _ = tokio::time::sleep(Duration::from_secs(1)) => {} }
                    }
                }
            }
            tracing::info!(pod = %p.name(), namespace = %p.namespace(), "pod stopped and removed");
        }
    }
}

/// Whether the API's copy of a status already says what we would post.
fn same_status(api: &Value, ours: &Value) -> bool {
    let Some(o) = ours.as_object() else {
        return false;
    };
    o.iter().all(|(k, v)| api.get(k) == Some(v))
}

/// A downward-API field of the pod.
pub fn field(p: &PodObj, path: &str, pod_ip: &str, host_ip: &str) -> Option<String> {
    let m = &p.pod.metadata;
    let label = |map: &Option<BTreeMap<String, String>>, key: &str| {
        map.as_ref()
            .and_then(|l| l.get(key).cloned())
            .unwrap_or_default()
    };
    if let Some(k) = path
        .strip_prefix("metadata.labels['")
        .and_then(|s| s.strip_suffix("']"))
    {
        return Some(label(&m.labels, k));
    }
    if let Some(k) = path
        .strip_prefix("metadata.annotations['")
        .and_then(|s| s.strip_suffix("']"))
    {
        return Some(label(&m.annotations, k));
    }
    let spec = p.pod.spec.as_ref();
    Some(match path {
        "metadata.name" => m.name.clone().unwrap_or_default(),
        "metadata.namespace" => m.namespace.clone().unwrap_or_default(),
        "metadata.uid" => m.uid.clone().unwrap_or_default(),
        "metadata.tenant" => p.tenant.clone(),
        "spec.nodeName" => spec.and_then(|s| s.node_name.clone()).unwrap_or_default(),
        "spec.serviceAccountName" => spec
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_default(),
        "status.podIP" | "status.podIPs" => pod_ip.to_string(),
        "status.hostIP" | "status.hostIPs" => host_ip.to_string(),
        _ => return None,
    })
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
