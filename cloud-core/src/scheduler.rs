//! The cloud scheduler: places every pod created at the cloud without a node. It picks among the
//! cloud's own nodes (agents registered directly with cloud-core) and the connected edge sites,
//! judged from the capacity summaries the sites send up (classes of identical nodes, never every
//! node's heartbeat). A cloud node gets the pod bound; a site gets it placed (annotation
//! `atoll.io/site`): the pod then belongs to that site's share and the site's scheduler binds it
//! to one of its nodes. The same rules decide both: resources, nodeSelector, node affinity
//! (`atoll.io/site` and the site's other labels included), taints and tolerations on nodes and on
//! EdgeSites, and an EdgeSite's allowed tenants. A disconnected site gets nothing new; what runs
//! there stays. A pod that fits nowhere gets `PodScheduled=False` and a `FailedScheduling` event
//! with kube-scheduler's kind of message.

use std::collections::HashMap;
use std::time::Duration;

use apiserver::sched::{self, Candidate, Resources};
use apiserver::store::{Key, Op, Precondition, Scope, Store};
use k8s_openapi::api::core::v1::{Node, PodSpec, Taint};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use crate::hub::placed_site;

/// Unschedulable pods are retried at least this often.
pub const RETRY: Duration = Duration::from_secs(5);
/// A pass waits this long after a change, so that a burst of pods is placed in one pass.
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

fn node_name(p: &Value) -> &str {
    p.pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// Where a candidate puts the pod.
#[derive(Clone, Debug, PartialEq)]
enum Target {
    Node(String),
    Site(String),
}

/// Whether the cloud scheduler places `pod`: no node, not placed, not being deleted, and not a
/// site's own pod (a site schedules what it created).
pub fn pending(pod: &Value) -> bool {
    node_name(pod).is_empty()
        && placed_site(pod).is_none()
        && pod.pointer("/metadata/deletionTimestamp").is_none()
        && proto::origin(pod).is_none()
}

/// One pass over the pending pods; returns how many it placed.
pub async fn pass(store: &Store) -> usize {
    let (_, nodes) = store.list(&all("nodes"), None);
    let (_, pods) = store.list(&all("pods"), None);
    let (_, sites) = store.list(&all(EDGESITES), None);
    // Only pods bound to cloud nodes count here (sites account for their own nodes).
    let cloud_nodes: std::collections::HashSet<&str> = nodes
        .iter()
        .filter(|(_, v)| {
            v.pointer("/metadata/labels")
                .and_then(|l| l.get(proto::SITE_LABEL))
                .is_none()
        })
        .map(|(k, _)| k.name.as_str())
        .collect();
    let mut requested: HashMap<String, Resources> = HashMap::new();
    let mut waiting = Vec::new();
    for (k, v) in &pods {
        let n = node_name(v);
        if !n.is_empty() {
            if !cloud_nodes.contains(n) {
                continue;
            }
            let done = matches!(
                v.pointer("/status/phase").and_then(Value::as_str),
                Some("Succeeded") | Some("Failed")
            );
            if !done {
                if let Some(spec) = spec_of(v) {
                    let add = sched::pod_requests(&spec);
                    let r = requested.entry(n.to_string()).or_default();
                    r.milli_cpu += add.milli_cpu;
                    r.memory += add.memory;
                    r.pods += add.pods;
                }
            }
        } else if pending(v) {
            waiting.push((k.clone(), v.clone()));
        }
    }
    if waiting.is_empty() {
        return 0;
    }
    // Cloud nodes, one candidate each.
    let mut node_cands: Vec<(Candidate, Target)> = nodes
        .iter()
        .filter(|(_, v)| {
            v.pointer("/metadata/labels")
                .and_then(|l| l.get(proto::SITE_LABEL))
                .is_none()
        })
        .filter_map(|(_, v)| serde_json::from_value::<Node>((**v).clone()).ok())
        .map(|n| {
            let name = n.metadata.name.clone().unwrap_or_default();
            let c = Candidate::from_node(&n, requested.get(&name).copied().unwrap_or_default());
            (c, Target::Node(name))
        })
        .collect();
    node_cands.sort_by(|a, b| a.0.name.cmp(&b.0.name));
    // Connected sites, from their summaries.
    let mut site_cands: Vec<(Candidate, Target, Vec<String>)> = Vec::new();
    // Each site's free share of its total capacity (cpu, memory), kept current through the pass
    // so that placements spread over sites instead of piling onto the best-scoring one.
    let mut site_free: HashMap<String, (Resources, Resources)> = HashMap::new();
    let mut disconnected = 0usize;
    for (k, s) in &sites {
        let connected = s
            .pointer("/status/conditions")
            .and_then(Value::as_array)
            .and_then(|c| c.iter().find(|c| c["type"] == "Connected"))
            .is_some_and(|c| c["status"] == "True");
        if !connected {
            disconnected += 1;
            continue;
        }
        let summary = match s.pointer("/status/summary") {
            None => continue,
            Some(v) => match serde_json::from_value::<sched::SiteSummary>(v.clone()) {
                Ok(sum) => sum,
                Err(e) => {
                    tracing::warn!(site = %k.name, error = %e, "unreadable site summary; site skipped");
                    continue;
                }
            },
        };
        let taints: Vec<Taint> = s
            .pointer("/spec/taints")
            .and_then(|t| serde_json::from_value(t.clone()).ok())
            .unwrap_or_default();
        let allowed: Vec<String> = s
            .pointer("/spec/allowedTenants")
            .and_then(|t| serde_json::from_value(t.clone()).ok())
            .unwrap_or_default();
        site_free.insert(
            k.name.clone(),
            (
                summary.allocatable.saturating_sub(summary.requested),
                summary.allocatable,
            ),
        );
        for c in sched::site_candidates(&k.name, &summary, &taints) {
            site_cands.push((c, Target::Site(k.name.clone()), allowed.clone()));
        }
    }
    let mut decisions: Vec<(Key, std::sync::Arc<Value>, Result<Target, String>)> = Vec::new();
    waiting.sort_by(|a, b| created(&a.1).cmp(created(&b.1)));
    for (key, pod) in waiting {
        let Some(spec) = spec_of(&pod) else { continue };
        let tenant = if key.tenant.is_empty() {
            "system"
        } else {
            key.tenant.as_str()
        };
        // Sites this tenant may use.
        let sites_ok: Vec<usize> = (0..site_cands.len())
            .filter(|&i| site_cands[i].2.is_empty() || site_cands[i].2.iter().any(|t| t == tenant))
            .collect();
        let barred = site_cands.len() - sites_ok.len();
        let mut all: Vec<Candidate> = node_cands.iter().map(|c| c.0.clone()).collect();
        all.extend(sites_ok.iter().map(|&i| site_cands[i].0.clone()));
        // Best fit by the shared score plus how free the whole place is (a node's own share, or
        // its site's).
        let share = |free: Resources, total: Resources| -> i64 {
            let f = |a: u64, b: u64| if b == 0 { 0.0 } else { a as f64 / b as f64 };
            ((f(free.milli_cpu, total.milli_cpu) + f(free.memory, total.memory)) * 50.0) as i64
        };
        let mut best: Option<(i64, usize)> = None;
        for (i, c) in all.iter().enumerate() {
            if !sched::filter(&spec, c).is_empty() {
                continue;
            }
            let spread = if i < node_cands.len() {
                share(c.free, c.allocatable)
            } else {
                match &site_cands[sites_ok[i - node_cands.len()]].1 {
                    Target::Site(s) => site_free.get(s).map_or(0, |(f, t)| share(*f, *t)),
                    Target::Node(_) => 0,
                }
            };
            let score = sched::score(&spec, c) + spread;
            if best.is_none_or(|(b, _)| score > b) {
                best = Some((score, i));
            }
        }
        match best.map(|(_, i)| i).ok_or(()) {
            Ok(i) => {
                let (target, slot) = if i < node_cands.len() {
                    (node_cands[i].1.clone(), &mut node_cands[i].0)
                } else {
                    let j = sites_ok[i - node_cands.len()];
                    (site_cands[j].1.clone(), &mut site_cands[j].0)
                };
                // Count it now, so the rest of this pass sees the capacity it takes.
                let add = sched::pod_requests(&spec);
                slot.free.milli_cpu = slot.free.milli_cpu.saturating_sub(add.milli_cpu);
                slot.free.memory = slot.free.memory.saturating_sub(add.memory);
                slot.free.pods = slot.free.pods.saturating_sub(add.pods);
                if let Target::Site(s) = &target {
                    if let Some((free, _)) = site_free.get_mut(s) {
                        *free = free.saturating_sub(add);
                    }
                }
                decisions.push((key, pod, Ok(target)));
            }
            Err(_) => {
                let nodes: Vec<Candidate> = node_cands.iter().map(|c| c.0.clone()).collect();
                let sites: Vec<Candidate> =
                    sites_ok.iter().map(|&i| site_cands[i].0.clone()).collect();
                let mut msg = Vec::new();
                if !nodes.is_empty() || sites.is_empty() {
                    msg.push(
                        sched::pick(&spec, &nodes, "nodes")
                            .err()
                            .unwrap_or_default(),
                    );
                }
                if !sites.is_empty() {
                    msg.push(
                        sched::pick(&spec, &sites, "sites")
                            .err()
                            .unwrap_or_default(),
                    );
                }
                if disconnected > 0 {
                    msg.push(format!("{disconnected} site(s) were disconnected."));
                }
                if barred > 0 {
                    msg.push(format!(
                        "{barred} site class(es) do not allow tenant {tenant}."
                    ));
                }
                decisions.push((key, pod, Err(msg.join(" ").trim().to_string())));
            }
        }
    }
    // The writes go concurrently, so the store commits them in groups (one sync per group).
    use futures_util::StreamExt;
    futures_util::stream::iter(decisions)
        .map(|(key, pod, d)| async move {
            match d {
                Ok(target) => place(store, &key, &pod, &target).await,
                Err(msg) => {
                    unschedulable(store, &key, &pod, &msg).await;
                    false
                }
            }
        })
        .buffer_unordered(64)
        .filter(|placed| std::future::ready(*placed))
        .count()
        .await
}

fn created(v: &Value) -> &str {
    v.pointer("/metadata/creationTimestamp")
        .and_then(Value::as_str)
        .unwrap_or("")
}

fn spec_of(v: &Value) -> Option<PodSpec> {
    serde_json::from_value(v.get("spec")?.clone()).ok()
}

async fn place(store: &Store, key: &Key, pod: &Value, target: &Target) -> bool {
    let mut v = pod.clone();
    let msg = match target {
        Target::Node(n) => {
            v["spec"]["nodeName"] = json!(n);
            sched::set_scheduled(&mut v, "True", None, None);
            format!(
                "Successfully assigned {}/{} to {n}",
                key.namespace, key.name
            )
        }
        Target::Site(s) => {
            if !v
                .pointer("/metadata/annotations")
                .is_some_and(Value::is_object)
            {
                v["metadata"]["annotations"] = json!({});
            }
            v["metadata"]["annotations"][proto::SITE_ANNOTATION] = json!(s);
            format!(
                "Successfully assigned {}/{} to site {s} (its scheduler picks the node)",
                key.namespace, key.name
            )
        }
    };
    let rv = apiserver::store::object_rv(pod).unwrap_or(0);
    let ops = vec![
        Op::Put {
            key: key.clone(),
            value: v,
            pre: Precondition::Version(rv),
        },
        event(key, pod, "Normal", "Scheduled", &msg),
    ];
    match store.commit(ops).await {
        Ok(_) => {
            tracing::debug!(pod = %key.name, namespace = %key.namespace, ?target, "placed");
            true
        }
        Err(e) => {
            tracing::debug!(pod = %key.name, error = %e, "placement lost a race; next pass");
            false
        }
    }
}

async fn unschedulable(store: &Store, key: &Key, pod: &Value, msg: &str) {
    if sched::already_unschedulable(pod, msg) {
        return;
    }
    let mut v = pod.clone();
    sched::set_scheduled(&mut v, "False", Some("Unschedulable"), Some(msg));
    let rv = apiserver::store::object_rv(pod).unwrap_or(0);
    let ops = vec![
        Op::Put {
            key: key.clone(),
            value: v,
            pre: Precondition::Version(rv),
        },
        event(key, pod, "Warning", "FailedScheduling", msg),
    ];
    let _ = store.commit(ops).await;
}

/// An event about `pod`, as a write to commit with the change it reports.
fn event(key: &Key, pod: &Value, ty: &str, reason: &str, msg: &str) -> Op {
    let name = format!("{}.{:x}", key.name, rand::random::<u64>());
    let ts = now();
    let mut ev = json!({
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"name": name, "namespace": key.namespace, "uid": uuid::Uuid::new_v4().to_string(), "creationTimestamp": ts},
        "involvedObject": {"apiVersion": "v1", "kind": "Pod", "namespace": key.namespace, "name": key.name,
            "uid": pod.pointer("/metadata/uid").cloned().unwrap_or(Value::Null)},
        "type": ty, "reason": reason, "message": msg,
        "source": {"component": "atoll-scheduler"},
        "reportingComponent": "atoll-scheduler", "reportingInstance": "cloud-core",
        "firstTimestamp": ts, "lastTimestamp": ts, "count": 1,
    });
    if !key.tenant.is_empty() {
        ev["metadata"]["tenant"] = json!(key.tenant);
    }
    Op::Put {
        key: Key::new("events", &key.tenant, &key.namespace, &name),
        value: ev,
        pre: Precondition::Absent,
    }
}

/// Run until cancelled: a pass on every change of pods, nodes or sites (and every [`RETRY`]).
pub async fn run(store: Store, cancel: CancellationToken) {
    apiserver::controllers::on_changes(
        &store,
        RETRY,
        SETTLE,
        &cancel,
        |e| matches!(e.key.resource.as_str(), "pods" | "nodes" | EDGESITES),
        || async {
            pass(&store).await;
        },
    )
    .await
}
