//! The site scheduler: binds to a node of this site every pod that has none and is this site's
//! to place: pods created here, and pods the cloud scheduler placed on this site (annotation
//! `atoll.io/site`). It works from the local replica alone, so it keeps placing while the cloud
//! is unreachable. It also keeps the site's capacity summary (what the cloud scheduler decides
//! from) and sends it up when it changes, at most every [`SUMMARY_EVERY`].
//!
//! Every write goes through the outbox in the same commit: a binding of a pod the cloud owns goes
//! up as `Bind`, of a pod the site owns as `Put`; a pod that fits nowhere gets
//! `PodScheduled=False` (`Unschedulable`, kube-scheduler's message) and a `FailedScheduling`
//! event.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use apiserver::sched::{self, Candidate, Resources};
use apiserver::store::{Key, Op, Precondition, Scope, Store};
use k8s_openapi::api::core::v1::{Node, Pod, PodSpec};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use crate::hooks::EdgeHooks;

/// The least time between two summaries sent up (changes in between are coalesced).
pub const SUMMARY_EVERY: Duration = Duration::from_secs(2);
/// Unschedulable pods are retried at least this often.
pub const RETRY: Duration = Duration::from_secs(5);
/// A pass waits this long after a change, so that a burst of pods is bound in one pass.
pub const SETTLE: Duration = Duration::from_millis(20);

const EDGESITES: &str = "edgesites.edge.atoll.io";

fn all(resource: &str) -> Scope {
    Scope {
        resource: resource.into(),
        tenant: None,
        namespace: None,
    }
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// Whether a pod still counts against its node.
fn active(p: &Value) -> bool {
    !matches!(
        p.pointer("/status/phase").and_then(Value::as_str),
        Some("Succeeded") | Some("Failed")
    )
}

fn node_name(p: &Value) -> &str {
    p.pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// The site scheduler's state across passes.
pub struct Scheduler {
    store: Store,
    hooks: Arc<EdgeHooks>,
    last_summary: Option<sched::SiteSummary>,
    summary_sent: Option<tokio::time::Instant>,
}

impl Scheduler {
    /// A scheduler for the site of `hooks`.
    pub fn new(store: Store, hooks: Arc<EdgeHooks>) -> Self {
        Scheduler {
            store,
            hooks,
            last_summary: None,
            summary_sent: None,
        }
    }

    fn mine(&self, p: &Value) -> bool {
        node_name(p).is_empty()
            && p.pointer("/metadata/deletionTimestamp").is_none()
            && (self.hooks.owns(p)
                || p.pointer("/metadata/annotations")
                    .and_then(|a| a.get(proto::SITE_ANNOTATION))
                    .and_then(Value::as_str)
                    == Some(self.hooks.site()))
    }

    /// One pass: bind what fits, mark what does not; returns how many pods it bound.
    pub async fn pass(&mut self) -> usize {
        let (_, nodes) = self.store.list(&all("nodes"), None);
        let (_, pods) = self.store.list(&all("pods"), None);
        let nodes: Vec<Node> = nodes
            .iter()
            .filter_map(|(_, v)| serde_json::from_value((**v).clone()).ok())
            .collect();
        let mut requested: HashMap<String, Resources> = HashMap::new();
        let mut pending = Vec::new();
        for (k, v) in &pods {
            let n = node_name(v);
            if !n.is_empty() {
                if active(v) {
                    if let Some(spec) = v
                        .get("spec")
                        .and_then(|s| serde_json::from_value::<PodSpec>(s.clone()).ok())
                    {
                        let r = requested.entry(n.to_string()).or_default();
                        let add = sched::pod_requests(&spec);
                        r.milli_cpu += add.milli_cpu;
                        r.memory += add.memory;
                        r.pods += add.pods;
                    }
                }
            } else if self.mine(v) {
                pending.push((k.clone(), v.clone()));
            }
        }
        let mut cands: Vec<Candidate> = nodes
            .iter()
            .map(|n| {
                let name = n.metadata.name.clone().unwrap_or_default();
                Candidate::from_node(n, requested.get(&name).copied().unwrap_or_default())
            })
            .collect();
        cands.sort_by(|a, b| a.name.cmp(&b.name));
        let mut bound = 0;
        // Oldest first, like kube-scheduler's FIFO.
        pending.sort_by(|a, b| {
            let ts = |v: &Value| {
                v.pointer("/metadata/creationTimestamp")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string()
            };
            ts(&a.1).cmp(&ts(&b.1))
        });
        for (key, pod) in pending {
            let Some(spec) = pod
                .get("spec")
                .and_then(|s| serde_json::from_value::<PodSpec>(s.clone()).ok())
            else {
                continue;
            };
            match sched::pick(&spec, &cands, "nodes") {
                Ok(i) => {
                    let node = cands[i].name.clone();
                    if self.bind(&key, &pod, &node).await {
                        bound += 1;
                        let add = sched::pod_requests(&spec);
                        let c = &mut cands[i];
                        c.free.milli_cpu = c.free.milli_cpu.saturating_sub(add.milli_cpu);
                        c.free.memory = c.free.memory.saturating_sub(add.memory);
                        c.free.pods = c.free.pods.saturating_sub(add.pods);
                    }
                }
                Err(msg) => self.unschedulable(&key, &pod, &msg).await,
            }
        }
        self.summarize(&nodes, &pods).await;
        bound
    }

    async fn bind(&self, key: &Key, pod: &Value, node: &str) -> bool {
        let mut v = pod.clone();
        v["spec"]["nodeName"] = json!(node);
        sched::set_scheduled(&mut v, "True", None, None);
        let rv = apiserver::store::object_rv(pod).unwrap_or(0);
        let kind = if self.hooks.owns(pod) { "Put" } else { "Bind" };
        let ops = vec![
            self.hooks.record(kind, key, Some(&v)),
            Op::Put {
                key: key.clone(),
                value: v,
                pre: Precondition::Version(rv),
            },
        ];
        match self.store.commit(ops).await {
            Ok(_) => {
                tracing::info!(pod = %key.name, namespace = %key.namespace, %node, "bound");
                self.event(
                    key,
                    pod,
                    "Normal",
                    "Scheduled",
                    &format!(
                        "Successfully assigned {}/{} to {node}",
                        key.namespace, key.name
                    ),
                )
                .await;
                true
            }
            Err(e) => {
                tracing::debug!(pod = %key.name, error = %e, "binding lost a race; next pass");
                false
            }
        }
    }

    async fn unschedulable(&self, key: &Key, pod: &Value, msg: &str) {
        if sched::already_unschedulable(pod, msg) {
            return;
        }
        let mut v = pod.clone();
        sched::set_scheduled(&mut v, "False", Some("Unschedulable"), Some(msg));
        let rv = apiserver::store::object_rv(pod).unwrap_or(0);
        let kind = if self.hooks.owns(pod) {
            "Put"
        } else {
            "Status"
        };
        let ops = vec![
            self.hooks.record(kind, key, Some(&v)),
            Op::Put {
                key: key.clone(),
                value: v,
                pre: Precondition::Version(rv),
            },
        ];
        if self.store.commit(ops).await.is_ok() {
            self.event(key, pod, "Warning", "FailedScheduling", msg)
                .await;
        }
    }

    /// Record an event (the site's own object: it goes up like any edge write).
    async fn event(&self, key: &Key, pod: &Value, ty: &str, reason: &str, msg: &str) {
        let name = format!("{}.{:x}", key.name, rand::random::<u64>());
        let ts = now();
        let ev = json!({
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"name": name, "namespace": key.namespace, "uid": uuid::Uuid::new_v4().to_string(),
                "creationTimestamp": ts, "annotations": {proto::ORIGIN: self.hooks.site()}},
            "involvedObject": {"apiVersion": "v1", "kind": "Pod", "namespace": key.namespace, "name": key.name,
                "uid": pod.pointer("/metadata/uid").cloned().unwrap_or(Value::Null)},
            "type": ty, "reason": reason, "message": msg,
            "source": {"component": "atoll-scheduler", "host": self.hooks.site()},
            "reportingComponent": "atoll-scheduler", "reportingInstance": self.hooks.site(),
            "firstTimestamp": ts, "lastTimestamp": ts, "count": 1,
        });
        let ekey = Key::new("events", &key.tenant, &key.namespace, &name);
        let ops = vec![
            self.hooks.record("Put", &ekey, Some(&ev)),
            Op::Put {
                key: ekey,
                value: ev,
                pre: Precondition::Absent,
            },
        ];
        let _ = self.store.commit(ops).await;
    }

    /// Send the summary up when it changed (coalesced to one per [`SUMMARY_EVERY`]).
    async fn summarize(&mut self, nodes: &[Node], pods: &[(Key, std::sync::Arc<Value>)]) {
        let pods: Vec<Pod> = pods
            .iter()
            .filter_map(|(_, v)| serde_json::from_value((**v).clone()).ok())
            .collect();
        let s = sched::summarize(self.hooks.site(), nodes, &pods);
        if self.last_summary.as_ref() == Some(&s) {
            return;
        }
        if self
            .summary_sent
            .is_some_and(|t| t.elapsed() < SUMMARY_EVERY)
        {
            return;
        }
        let key = Key::new(EDGESITES, "", "", self.hooks.site());
        let body = match serde_json::to_value(&s) {
            Ok(b) => b,
            Err(_) => return,
        };
        if self
            .store
            .commit(vec![self.hooks.record("Summary", &key, Some(&body))])
            .await
            .is_ok()
        {
            self.last_summary = Some(s);
            self.summary_sent = Some(tokio::time::Instant::now());
        }
    }
}

/// Run until cancelled: a pass on every change of pods or nodes (and every [`RETRY`]).
pub async fn run(store: Store, hooks: Arc<EdgeHooks>, cancel: CancellationToken) {
    let s = tokio::sync::Mutex::new(Scheduler::new(store.clone(), hooks));
    apiserver::controllers::on_changes(
        &store,
        RETRY,
        SETTLE,
        &cancel,
        |e| e.key.resource == "pods" || e.key.resource == "nodes",
        || async {
            s.lock().await.pass().await;
        },
    )
    .await
}
