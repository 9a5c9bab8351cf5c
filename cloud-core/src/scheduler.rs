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

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use apiserver::api::{component, Api, Writer};
use controllers::sched::{self, Candidate, Resources};
use controllers::sched_cache::{
    self, finished, node_name, spec_of, take, PodCache, Scheduler, Tally, TIMING,
};
use k8s_openapi::api::core::v1::Taint;
use serde_json::Value;
use store::{Key, Scope};
use tokio_util::sync::CancellationToken;

use crate::hub::placed_site;

const EDGESITES: &str = "edgesites.edge.atoll.io";

/// Where a candidate puts the pod.
#[derive(Clone, Debug, PartialEq)]
enum Target {
    Node(String),
    Site(String),
}

/// Whether the cloud scheduler places `pod`: no node, not placed, not being deleted, not a
/// site's own pod (a site schedules what it created), and not waiting for another scheduler.
pub fn pending(pod: &Value) -> bool {
    node_name(pod).is_empty()
        && placed_site(pod).is_none()
        && pod.pointer("/metadata/deletionTimestamp").is_none()
        && proto::origin(pod).is_none()
        && sched::for_default_scheduler(pod)
}

/// A site as the scheduler sees it: decoded once per change of its EdgeSite.
struct SiteView {
    connected: bool,
    summary: Option<sched::SiteSummary>,
    taints: Vec<Taint>,
    allowed: Vec<String>,
}

impl SiteView {
    fn of(name: &str, s: &Value) -> SiteView {
        let connected = s
            .pointer("/status/conditions")
            .and_then(Value::as_array)
            .and_then(|c| c.iter().find(|c| c["type"] == "Connected"))
            .is_some_and(|c| c["status"] == "True");
        let summary = s.pointer("/status/summary").and_then(|v| {
            serde_json::from_value::<sched::SiteSummary>(v.clone())
                .map_err(|e| tracing::warn!(site = %name, error = %e, "unreadable site summary; site skipped"))
                .ok()
        });
        SiteView {
            connected,
            summary,
            taints: s
                .pointer("/spec/taints")
                .and_then(|t| serde_json::from_value(t.clone()).ok())
                .unwrap_or_default(),
            allowed: s
                .pointer("/spec/allowedTenants")
                .and_then(|t| serde_json::from_value(t.clone()).ok())
                .unwrap_or_default(),
        }
    }
}

/// The cloud scheduler: the pod cache (cloud nodes only) and the sites.
pub struct CloudScheduler {
    /// Writes go through the API, as `system:serviceaccount:kube-system:atoll-scheduler`.
    writer: Writer,
    cache: PodCache,
    sites: BTreeMap<String, SiteView>,
    /// What the unfinished pods of each site request, from the cloud's own copy of them (pods
    /// placed there, bound there or created there): current at once, where a summary lags.
    site_req: Tally,
    /// Pods a site could not bind (it set `PodScheduled=False`): taken back and placed again.
    returned: BTreeMap<Key, (String, Arc<Value>)>,
    /// Sites that gave a pod back, and when: not tried for it again for [`REJECTED_FOR`], or
    /// until the site's summary changes.
    rejected: HashMap<Key, Vec<(String, Instant)>>,
    metrics: sched::metrics::SchedulerMetrics,
}

/// How long a site that could not bind a pod is passed over for it.
pub const REJECTED_FOR: Duration = Duration::from_secs(60);

/// Whether a site's new summary may fit a pod the old one could not: a class appeared or
/// changed shape (labels, taints, cordon, hosts, readiness), or a class has more free room.
fn may_fit_more(old: Option<&sched::SiteSummary>, new: Option<&sched::SiteSummary>) -> bool {
    let (Some(old), Some(new)) = (old, new) else {
        return new.is_some();
    };
    new.classes.iter().any(|c| {
        let Some(o) = old.classes.iter().find(|o| o.name == c.name) else {
            return true;
        };
        (&c.labels, &c.taints, c.unschedulable, c.ready, &c.hosts)
            != (&o.labels, &o.taints, o.unschedulable, o.ready, &o.hosts)
            || c.free.milli_cpu > o.free.milli_cpu
            || c.free.memory > o.free.memory
            || c.free.pods > o.free.pods
    })
}

/// The site that was given `pod` and reported that it cannot bind it.
fn returned_by(pod: &Value) -> Option<String> {
    let site = placed_site(pod)?;
    let refused = node_name(pod).is_empty()
        && pod.pointer("/metadata/deletionTimestamp").is_none()
        && pod
            .pointer("/status/conditions")
            .and_then(Value::as_array)
            .and_then(|c| c.iter().find(|c| c["type"] == "PodScheduled"))
            .is_some_and(|c| c["status"] == "False" && c["reason"] == "Unschedulable");
    refused.then_some(site)
}

impl CloudScheduler {
    /// A scheduler over `api`'s objects (its cache fills when [`run`] starts it).
    pub fn new(api: &Arc<Api>) -> Self {
        CloudScheduler {
            writer: Writer::new(api.clone(), component("atoll-scheduler")),
            cache: PodCache::default(),
            sites: BTreeMap::new(),
            site_req: Tally::default(),
            returned: BTreeMap::new(),
            rejected: HashMap::new(),
            metrics: sched::metrics::SchedulerMetrics::register(&api.metrics, "cloud"),
        }
    }

    /// Take back the pods sites could not bind: clear their placement (the pod leaves the
    /// site's share) and remember the site, so the next pass places them elsewhere.
    async fn take_back(&mut self) {
        let now = Instant::now();
        for (key, (site, pod)) in std::mem::take(&mut self.returned) {
            let why = pod
                .pointer("/status/conditions")
                .and_then(Value::as_array)
                .and_then(|c| c.iter().find(|c| c["type"] == "PodScheduled"))
                .and_then(|c| c["message"].as_str())
                .unwrap_or("")
                .to_string();
            let mut v = (*pod).clone();
            if let Some(a) = v
                .pointer_mut("/metadata/annotations")
                .and_then(Value::as_object_mut)
            {
                a.remove(proto::SITE_ANNOTATION);
            }
            let msg = format!("site {site} could not bind the pod ({why}); placing it again");
            let ev = event(&key, &pod, "Warning", "FailedScheduling", &msg);
            match self
                .writer
                .update_with(&key, &pod, v, false, Some(ev))
                .await
            {
                Ok(_) => {
                    tracing::info!(pod = %key.name, namespace = %key.namespace, %site, "site gave the pod back");
                    let r = self.rejected.entry(key).or_default();
                    r.retain(|(s, at)| *s != site && now.duration_since(*at) < REJECTED_FOR);
                    r.push((site, now));
                }
                Err(e) => {
                    tracing::debug!(pod = %key.name, error = %e.message, "taking back a pod lost a race");
                }
            }
        }
    }

    /// Let `site` be tried again for the pods it gave back.
    fn forget_give_backs(&mut self, site: &str) {
        for sites in self.rejected.values_mut() {
            sites.retain(|(s, _)| s != site);
        }
    }

    /// Keep [`CloudScheduler::site_req`] current for a change of a pod.
    fn apply_site_pod(&mut self, key: &Key, now: Option<&Arc<Value>>) {
        let site = now
            .filter(|v| !finished(v))
            .and_then(|v| placed_site(v).or_else(|| proto::origin(v).map(String::from)));
        self.site_req.set(key, site, now);
    }

    /// Decide where the pending pods go (all of them with `retry`, else the untried ones).
    fn decide(&mut self, retry: bool) -> Vec<(Key, Arc<Value>, Result<Target, String>)> {
        let mut node_cands: Vec<(Candidate, Target)> = self
            .cache
            .candidates()
            .into_iter()
            .map(|c| {
                let t = Target::Node(c.name.clone());
                (c, t)
            })
            .collect();
        // Connected sites, from their summaries.
        let mut site_cands: Vec<(Candidate, String, &[String])> = Vec::new();
        // Each site's free share of its total capacity (cpu, memory), kept current through the
        // pass so that placements spread over sites instead of piling onto the best-scoring one.
        let mut site_free: HashMap<&str, (Resources, Resources)> = HashMap::new();
        let mut disconnected = 0usize;
        for (name, s) in &self.sites {
            if !s.connected {
                disconnected += 1;
                continue;
            }
            let Some(summary) = &s.summary else { continue };
            let requested = summary.requested.max(self.site_req.of(name));
            site_free.insert(
                name,
                (
                    summary.allocatable.saturating_sub(requested),
                    summary.allocatable,
                ),
            );
            let free = summary.allocatable.saturating_sub(requested);
            for mut c in sched::site_candidates(name, summary, &s.taints) {
                // No node of the site has more free than the whole site.
                c.free.milli_cpu = c.free.milli_cpu.min(free.milli_cpu);
                c.free.memory = c.free.memory.min(free.memory);
                c.free.pods = c.free.pods.min(free.pods);
                site_cands.push((c, name.clone(), &s.allowed));
            }
        }
        let waiting = self.cache.waiting(retry);
        // Unrounded: a pod is small beside a whole site, and rounding would tie every site
        // (the first would then take them all) until one had lost a whole point.
        let share = |free: Resources, total: Resources| -> f64 {
            let f = |a: u64, b: u64| if b == 0 { 0.0 } else { a as f64 / b as f64 };
            (f(free.milli_cpu, total.milli_cpu) + f(free.memory, total.memory)) * 50.0
        };
        let mut decisions = Vec::with_capacity(waiting.len());
        let mut unreadable = Vec::new();
        for (key, pod) in waiting {
            let Some(spec) = spec_of(&pod) else {
                unreadable.push(key.clone());
                continue;
            };
            let tenant = if key.tenant.is_empty() {
                "system"
            } else {
                key.tenant.as_str()
            };
            let allowed = |a: &[String]| a.is_empty() || a.iter().any(|t| t == tenant);
            // Sites that recently gave this pod back.
            let gave_back: Vec<&str> = self
                .rejected
                .get(&key)
                .map(|r| {
                    r.iter()
                        .filter(|(_, at)| at.elapsed() < REJECTED_FOR)
                        .map(|(s, _)| s.as_str())
                        .collect()
                })
                .unwrap_or_default();
            // Best fit by the shared score plus how free the whole place is (a node's own share,
            // or its site's).
            let mut best: Option<(f64, Option<usize>, Option<usize>)> = None;
            for (i, (c, _)) in node_cands.iter().enumerate() {
                if sched::filter(&spec, c).is_empty() {
                    let score = sched::score(&spec, c) as f64 + share(c.free, c.allocatable);
                    if best.is_none_or(|(b, _, _)| score > b) {
                        best = Some((score, Some(i), None));
                    }
                }
            }
            for (j, (c, site, allow)) in site_cands.iter().enumerate() {
                if allowed(allow)
                    && !gave_back.contains(&site.as_str())
                    && sched::filter(&spec, c).is_empty()
                {
                    let spread = site_free
                        .get(site.as_str())
                        .map_or(0.0, |(f, t)| share(*f, *t));
                    let score = sched::score(&spec, c) as f64 + spread;
                    if best.is_none_or(|(b, _, _)| score > b) {
                        best = Some((score, None, Some(j)));
                    }
                }
            }
            let add = sched::pod_requests(&spec);
            let decision = match best {
                Some((_, Some(i), _)) => {
                    take(&mut node_cands[i].0, add);
                    Ok(node_cands[i].1.clone())
                }
                Some((_, _, Some(j))) => {
                    take(&mut site_cands[j].0, add);
                    let site = site_cands[j].1.clone();
                    if let Some((free, _)) = site_free.get_mut(site.as_str()) {
                        *free = free.saturating_sub(add);
                    }
                    Ok(Target::Site(site))
                }
                _ => {
                    let nodes: Vec<Candidate> = node_cands.iter().map(|c| c.0.clone()).collect();
                    let sites: Vec<Candidate> = site_cands
                        .iter()
                        .filter(|c| allowed(c.2) && !gave_back.contains(&c.1.as_str()))
                        .map(|c| c.0.clone())
                        .collect();
                    let barred = site_cands.iter().filter(|c| !allowed(c.2)).count();
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
                    if !gave_back.is_empty() {
                        msg.push(format!(
                            "{} site(s) could not bind it: {}.",
                            gave_back.len(),
                            gave_back.join(", ")
                        ));
                    }
                    Err(msg.join(" ").trim().to_string())
                }
            };
            decisions.push((key, pod, decision));
        }
        for (k, _, d) in &decisions {
            if d.is_err() {
                self.cache.failed.insert(k.clone());
            }
        }
        self.cache.failed.extend(unreadable);
        decisions
    }
}

impl Scheduler for CloudScheduler {
    fn scopes(&self) -> Vec<Scope> {
        vec![
            Scope::of("nodes", None),
            Scope::of("pods", None),
            Scope::of(EDGESITES, None),
        ]
    }

    fn clear(&mut self) {
        self.cache = PodCache::default();
        self.sites.clear();
        self.site_req = Tally::default();
        self.returned.clear();
    }

    fn apply(&mut self, key: &Key, now: Option<&Arc<Value>>) {
        match key.resource.as_str() {
            "pods" => {
                let mine = now.is_some_and(|v| pending(v));
                self.cache.apply_pod(key, now, mine);
                self.apply_site_pod(key, now);
                match now.and_then(|v| returned_by(v).map(|s| (s, v.clone()))) {
                    Some(r) => {
                        self.returned.insert(key.clone(), r);
                    }
                    None => {
                        self.returned.remove(key);
                    }
                }
                if now.is_none_or(|v| !node_name(v).is_empty()) {
                    self.rejected.remove(key);
                }
            }
            "nodes" => {
                // Cloud nodes only: a site's nodes are its scheduler's.
                let site = now.and_then(|v| {
                    v.pointer("/metadata/labels")
                        .and_then(|l| l.get(proto::SITE_LABEL))
                        .and_then(Value::as_str)
                });
                // A site's node changed (say, uncordoned at the cloud): what it gave back may
                // fit now, before its next summary says so.
                if let Some(site) = site {
                    self.forget_give_backs(site);
                }
                self.cache.apply_node(key, now, site.is_none());
            }
            EDGESITES => {
                match now {
                    Some(v) => {
                        let view = SiteView::of(&key.name, v);
                        // A site whose nodes changed (a new summary: uncordoned, untainted,
                        // relabelled, grown) may bind what it gave back: try it again at once,
                        // as kube-scheduler requeues unschedulable pods on a node change.
                        let changed = self.sites.get(&key.name).is_some_and(|old| {
                            may_fit_more(old.summary.as_ref(), view.summary.as_ref())
                        });
                        if changed {
                            self.forget_give_backs(&key.name);
                        }
                        self.sites.insert(key.name.clone(), view);
                    }
                    None => {
                        self.sites.remove(&key.name);
                    }
                }
                self.cache.changed = true;
            }
            _ => {}
        }
    }

    fn cache(&mut self) -> &mut PodCache {
        &mut self.cache
    }

    fn has_work(&self) -> bool {
        !self.returned.is_empty()
    }

    async fn pass(&mut self, retry: bool) {
        self.take_back().await;
        let t = std::time::Instant::now();
        let decisions = self.decide(retry);
        let (tried, decided) = (decisions.len(), t.elapsed());
        let unfit = decisions.iter().filter(|d| d.2.is_err()).count();
        let placed = commit(&self.writer, decisions).await;
        self.metrics.pass(
            t.elapsed().as_secs_f64(),
            placed,
            unfit,
            tried.saturating_sub(placed + unfit),
        );
        tracing::debug!(
            tried,
            placed,
            decide_ms = decided.as_millis() as u64,
            total_ms = t.elapsed().as_millis() as u64,
            "scheduling pass"
        );
    }
}

/// Commit a pass's decisions: placements, bindings, and `FailedScheduling` for the rest.
/// Returns how many pods it placed.
async fn commit(w: &Writer, decisions: Vec<(Key, Arc<Value>, Result<Target, String>)>) -> usize {
    // The writes go concurrently, so the store commits them in groups (one sync per group).
    use futures_util::StreamExt;
    futures_util::stream::iter(decisions)
        .map(|(key, pod, d)| async move {
            match d {
                Ok(target) => place(w, &key, &pod, &target).await,
                Err(msg) => {
                    unschedulable(w, &key, &pod, &msg).await;
                    false
                }
            }
        })
        .buffer_unordered(256)
        .filter(|placed| std::future::ready(*placed))
        .count()
        .await
}

async fn place(w: &Writer, key: &Key, pod: &Value, target: &Target) -> bool {
    let written = match target {
        Target::Node(n) => {
            let msg = format!(
                "Successfully assigned {}/{} to {n}",
                key.namespace, key.name
            );
            let ev = event(key, pod, "Normal", "Scheduled", &msg);
            w.bind_with(key, pod, n, Some(ev)).await
        }
        Target::Site(s) => {
            let msg = format!(
                "Successfully assigned {}/{} to site {s} (its scheduler picks the node)",
                key.namespace, key.name
            );
            let ev = event(key, pod, "Normal", "Scheduled", &msg);
            w.place_with(key, pod, s, Some(ev)).await
        }
    };
    match written {
        Ok(_) => {
            tracing::debug!(pod = %key.name, namespace = %key.namespace, ?target, "placed");
            true
        }
        Err(e) => {
            tracing::debug!(pod = %key.name, error = %e.message, "placement lost a race or was refused; next pass");
            false
        }
    }
}

async fn unschedulable(w: &Writer, key: &Key, pod: &Value, msg: &str) {
    if sched::already_unschedulable(pod, msg) {
        return;
    }
    let mut v = pod.clone();
    sched::set_scheduled(&mut v, "False", Some("Unschedulable"), Some(msg));
    let ev = event(key, pod, "Warning", "FailedScheduling", msg);
    let _ = w.update_with(key, pod, v, true, Some(ev)).await;
}

/// An event about `pod`, to commit with the write it reports.
fn event(key: &Key, pod: &Value, ty: &str, reason: &str, msg: &str) -> (Key, Value) {
    sched::pod_event(key, pod, (ty, reason, msg), "cloud-core", None)
}

/// Run until cancelled (see [`controllers::sched_cache::run`]).
pub async fn run(api: Arc<Api>, cancel: CancellationToken) {
    let mut s = CloudScheduler::new(&api);
    sched_cache::run(&api.store, &mut s, TIMING, &cancel).await
}
