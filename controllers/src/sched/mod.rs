//! Pure pod placement: the filtering and scoring shared by the cloud scheduler (picks a site or
//! a cloud node) and the site scheduler (picks a node), plus the compact [`SiteSummary`] an edge
//! site sends to the cloud.
//!
//! No I/O and no async: every function maps its inputs to an answer and never panics. Semantics
//! follow kube-scheduler's default plugins (NodeUnschedulable, TaintToleration, NodeAffinity,
//! NodeResourcesFit; scoring by preferred node affinity, least-allocated and PreferNoSchedule
//! taints) and its "0/N nodes are available: ..." message.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use k8s_openapi::api::core::v1::{
    Container, Node, NodeSelectorRequirement, NodeSelectorTerm, Pod, PodSpec, Taint, Toleration,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use serde::{Deserialize, Serialize};

/// The label every site-level candidate carries, so node affinity can name a site.
pub const SITE_LABEL: &str = "atoll.io/site";
/// The label every kubelet puts on its node, unique per node: summary classes leave it out of
/// their labels and list it in [`Candidate::hosts`].
pub const HOSTNAME_LABEL: &str = "kubernetes.io/hostname";
/// The taint kube puts on cordoned nodes; tolerating it lets a pod onto an unschedulable node.
pub const TAINT_UNSCHEDULABLE: &str = "node.kubernetes.io/unschedulable";
/// The taint kube puts on nodes whose Ready condition is not True.
pub const TAINT_NOT_READY: &str = "node.kubernetes.io/not-ready";

const NO_SCHEDULE: &str = "NoSchedule";
const NO_EXECUTE: &str = "NoExecute";
const PREFER_NO_SCHEDULE: &str = "PreferNoSchedule";

/// Schedulable resources: CPU in millicores, memory in bytes, and a pod count.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resources {
    /// CPU in millicores.
    #[serde(deserialize_with = "number")]
    pub milli_cpu: u64,
    /// Memory in bytes.
    #[serde(deserialize_with = "number")]
    pub memory: u64,
    /// Pods.
    #[serde(deserialize_with = "number")]
    pub pods: u64,
}

/// A count written as a number or as a numeric string (the API normalises `allocatable` maps to
/// quantity strings when an object carrying a summary is updated through it).
fn number<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    use serde::de::Error;
    match serde_json::Value::deserialize(d)? {
        serde_json::Value::Number(n) => n
            .as_u64()
            .ok_or_else(|| D::Error::custom(format!("not a count: {n}"))),
        serde_json::Value::String(s) => s
            .parse()
            .map_err(|_| D::Error::custom(format!("not a count: {s:?}"))),
        v => Err(D::Error::custom(format!("not a count: {v}"))),
    }
}

impl Resources {
    /// Per-dimension sum (saturating).
    pub fn saturating_add(self, o: Resources) -> Resources {
        Resources {
            milli_cpu: self.milli_cpu.saturating_add(o.milli_cpu),
            memory: self.memory.saturating_add(o.memory),
            pods: self.pods.saturating_add(o.pods),
        }
    }

    /// Per-dimension difference, floored at zero.
    pub fn saturating_sub(self, o: Resources) -> Resources {
        Resources {
            milli_cpu: self.milli_cpu.saturating_sub(o.milli_cpu),
            memory: self.memory.saturating_sub(o.memory),
            pods: self.pods.saturating_sub(o.pods),
        }
    }

    /// Per-dimension maximum.
    pub fn max(self, o: Resources) -> Resources {
        Resources {
            milli_cpu: self.milli_cpu.max(o.milli_cpu),
            memory: self.memory.max(o.memory),
            pods: self.pods.max(o.pods),
        }
    }

    /// Reads `cpu`, `memory` and `pods` from a resource list; missing or bad entries are zero.
    pub fn from_list(list: &BTreeMap<String, Quantity>) -> Resources {
        let get = |k: &str, scale: f64| {
            list.get(k)
                .and_then(|q| quantity(&q.0))
                .map_or(0, |v| ceil_units(v * scale))
        };
        Resources {
            milli_cpu: get("cpu", 1000.0),
            memory: get("memory", 1.0),
            pods: get("pods", 1.0),
        }
    }
}

pub use proto::quantity;

/// Rounds up to whole units like kube's `MilliValue`/`Value`, ignoring float noise
/// (`100 * 0.001 * 1000` is 100, not 101).
fn ceil_units(v: f64) -> u64 {
    let r = v.round();
    // `as` saturates on overflow and maps NaN to 0: no panic on any input.
    if (v - r).abs() <= 1e-9 * r.abs().max(1.0) {
        r as u64
    } else {
        v.ceil() as u64
    }
}

/// A container's effective requests: each of cpu/memory from `requests`, else from `limits`
/// (the API server defaults a missing request to the limit).
fn container_requests(c: &Container) -> Resources {
    let Some(res) = c.resources.as_ref() else {
        return Resources::default();
    };
    let empty = BTreeMap::new();
    let req = res.requests.as_ref().unwrap_or(&empty);
    let lim = res.limits.as_ref().unwrap_or(&empty);
    let get = |k: &str, scale: f64| {
        req.get(k)
            .or_else(|| lim.get(k))
            .and_then(|q| quantity(&q.0))
            .map_or(0, |v| ceil_units(v * scale))
    };
    Resources {
        milli_cpu: get("cpu", 1000.0),
        memory: get("memory", 1.0),
        pods: 0,
    }
}

/// What a pod asks of a node, as kube computes it: the sum of its containers, max'ed with each
/// init container (restartable "sidecar" init containers add to everything after them), plus
/// `spec.overhead`; `pods` is 1.
pub fn pod_requests(spec: &PodSpec) -> Resources {
    let mut reqs = spec
        .containers
        .iter()
        .map(container_requests)
        .fold(Resources::default(), Resources::saturating_add);
    let mut sidecars = Resources::default();
    let mut init_max = Resources::default();
    for ic in spec.init_containers.iter().flatten() {
        let r = container_requests(ic);
        let during = if ic.restart_policy.as_deref() == Some("Always") {
            reqs = reqs.saturating_add(r);
            sidecars = sidecars.saturating_add(r);
            sidecars
        } else {
            r.saturating_add(sidecars)
        };
        init_max = init_max.max(during);
    }
    reqs = reqs.max(init_max);
    if let Some(o) = &spec.overhead {
        reqs = reqs.saturating_add(Resources::from_list(o));
    }
    Resources { pods: 1, ..reqs }
}

/// A node's allocatable resources: `status.allocatable`, each missing entry taken from
/// `status.capacity`.
pub fn node_allocatable(node: &Node) -> Resources {
    let Some(st) = node.status.as_ref() else {
        return Resources::default();
    };
    let mut list = st.capacity.clone().unwrap_or_default();
    list.extend(st.allocatable.clone().unwrap_or_default());
    Resources::from_list(&list)
}

fn node_ready(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"))
        .is_some_and(|c| c.status == "True")
}

/// One schedulable place: a node, or a class of identical nodes in a site summary.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Candidate {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub taints: Vec<Taint>,
    /// Allocatable minus what the pods already bound there request.
    pub free: Resources,
    pub allocatable: Resources,
    pub unschedulable: bool,
    pub ready: bool,
    /// For a class of a site summary: the `kubernetes.io/hostname` of each of its nodes (the
    /// one label that differs from node to node, left out of the class's labels).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
}

impl Candidate {
    /// A node as a candidate; `requested` is the sum of [`pod_requests`] of the pods bound to it.
    pub fn from_node(node: &Node, requested: Resources) -> Candidate {
        let allocatable = node_allocatable(node);
        let spec = node.spec.as_ref();
        Candidate {
            name: node.metadata.name.clone().unwrap_or_default(),
            labels: node.metadata.labels.clone().unwrap_or_default(),
            taints: spec.and_then(|s| s.taints.clone()).unwrap_or_default(),
            free: allocatable.saturating_sub(requested),
            allocatable,
            unschedulable: spec.and_then(|s| s.unschedulable).unwrap_or(false),
            ready: node_ready(node),
            hosts: Vec::new(),
        }
    }
}

/// Why a candidate cannot take a pod.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reason {
    /// Not enough free CPU.
    InsufficientCpu,
    /// Not enough free memory.
    InsufficientMemory,
    /// No free pod slot.
    TooManyPods,
    /// `nodeSelector` or required node affinity does not match.
    Affinity,
    /// An untolerated NoSchedule/NoExecute taint, as `key=value:effect`.
    Taint(String),
    /// Cordoned (`spec.unschedulable`) and the pod does not tolerate it.
    Unschedulable,
    /// Ready condition not True and the pod does not tolerate `node.kubernetes.io/not-ready`.
    NotReady,
}

impl Reason {
    /// kube-scheduler's text for this reason; `what` is the plural of the place ("nodes",
    /// "sites") and yields its `(s)` form ("node(s)", "site(s)").
    pub fn text(&self, what: &str) -> String {
        let unit = what.strip_suffix('s').unwrap_or(what);
        match self {
            Reason::InsufficientCpu => "Insufficient cpu".into(),
            Reason::InsufficientMemory => "Insufficient memory".into(),
            Reason::TooManyPods => "Too many pods".into(),
            Reason::Affinity => format!("{unit}(s) didn't match Pod's node affinity/selector"),
            Reason::Taint(t) => {
                let (kv, _effect) = t.rsplit_once(':').unwrap_or((t, ""));
                let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                format!("{unit}(s) had untolerated taint {{{k}: {v}}}")
            }
            Reason::Unschedulable => format!("{unit}(s) were unschedulable"),
            Reason::NotReady => format!("{unit}(s) had untolerated taint {{{TAINT_NOT_READY}: }}"),
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text("nodes"))
    }
}

/// kube's `Toleration.ToleratesTaint`.
pub fn tolerates(t: &Toleration, taint: &Taint) -> bool {
    if let Some(e) = t.effect.as_deref().filter(|e| !e.is_empty()) {
        if e != taint.effect {
            return false;
        }
    }
    if let Some(k) = t.key.as_deref().filter(|k| !k.is_empty()) {
        if k != taint.key {
            return false;
        }
    }
    match t.operator.as_deref().unwrap_or("") {
        "Exists" => true,
        "" | "Equal" => t.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or(""),
        _ => false,
    }
}

fn tolerated(spec: &PodSpec, taint: &Taint) -> bool {
    spec.tolerations
        .iter()
        .flatten()
        .any(|t| tolerates(t, taint))
}

fn taint(key: &str, effect: &str) -> Taint {
    Taint {
        key: key.into(),
        effect: effect.into(),
        ..Taint::default()
    }
}

fn taint_id(t: &Taint) -> String {
    format!(
        "{}={}:{}",
        t.key,
        t.value.as_deref().unwrap_or(""),
        t.effect
    )
}

/// Whether the candidate's labels meet `r`. A summary class stands for several hosts: it meets
/// a `kubernetes.io/hostname` requirement when one of its hosts does.
fn label_matches(r: &NodeSelectorRequirement, c: &Candidate) -> bool {
    if r.key == HOSTNAME_LABEL && !c.hosts.is_empty() {
        return c
            .hosts
            .iter()
            .any(|h| requirement_matches(r, |_| Some(h.clone())));
    }
    requirement_matches(r, |k| c.labels.get(k).cloned())
}

fn requirement_matches(r: &NodeSelectorRequirement, get: impl Fn(&str) -> Option<String>) -> bool {
    let values = r.values.as_deref().unwrap_or(&[]);
    let have = get(&r.key);
    let int = |s: &str| s.trim().parse::<i64>().ok();
    match r.operator.as_str() {
        "In" => have.is_some_and(|h| values.contains(&h)),
        "NotIn" => !have.is_some_and(|h| values.contains(&h)),
        "Exists" => have.is_some(),
        "DoesNotExist" => have.is_none(),
        "Gt" | "Lt" => {
            let (Some(h), [v]) = (have.as_deref().and_then(int), values) else {
                return false;
            };
            let Some(v) = int(v) else {
                return false;
            };
            if r.operator == "Gt" {
                h > v
            } else {
                h < v
            }
        }
        _ => false,
    }
}

/// A node selector term: all its expressions and fields match; an empty term matches nothing.
fn term_matches(term: &NodeSelectorTerm, c: &Candidate) -> bool {
    let exprs = term.match_expressions.as_deref().unwrap_or(&[]);
    let fields = term.match_fields.as_deref().unwrap_or(&[]);
    if exprs.is_empty() && fields.is_empty() {
        return false;
    }
    exprs.iter().all(|r| label_matches(r, c))
        && fields.iter().all(|r| {
            r.key == "metadata.name"
                && matches!(r.operator.as_str(), "In" | "NotIn")
                && requirement_matches(r, |_| Some(c.name.clone()))
        })
}

fn affinity_matches(spec: &PodSpec, c: &Candidate) -> bool {
    let selector_ok = spec.node_selector.iter().flatten().all(|(k, v)| {
        if k == HOSTNAME_LABEL && !c.hosts.is_empty() {
            c.hosts.contains(v)
        } else {
            c.labels.get(k) == Some(v)
        }
    });
    let required = spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|na| {
            na.required_during_scheduling_ignored_during_execution
                .as_ref()
        });
    selector_ok
        && required.is_none_or(|ns| ns.node_selector_terms.iter().any(|t| term_matches(t, c)))
}

/// Why `c` cannot take the pod; empty when it fits.
///
/// Like kube-scheduler, the checks run in plugin order (unschedulable, taints, not-ready,
/// affinity, resources) and stop at the first that fails, so a candidate yields one reason,
/// except that resources report every short dimension. Only the first untolerated taint is
/// reported.
pub fn filter(spec: &PodSpec, c: &Candidate) -> Vec<Reason> {
    if c.unschedulable && !tolerated(spec, &taint(TAINT_UNSCHEDULABLE, NO_SCHEDULE)) {
        return vec![Reason::Unschedulable];
    }
    if let Some(t) = c
        .taints
        .iter()
        .filter(|t| t.effect == NO_SCHEDULE || t.effect == NO_EXECUTE)
        .find(|t| !tolerated(spec, t))
    {
        return vec![Reason::Taint(taint_id(t))];
    }
    if !c.ready && !tolerated(spec, &taint(TAINT_NOT_READY, NO_SCHEDULE)) {
        return vec![Reason::NotReady];
    }
    if !affinity_matches(spec, c) {
        return vec![Reason::Affinity];
    }
    let req = pod_requests(spec);
    let mut out = Vec::new();
    if c.free.pods < req.pods {
        out.push(Reason::TooManyPods);
    }
    if c.free.milli_cpu < req.milli_cpu {
        out.push(Reason::InsufficientCpu);
    }
    if c.free.memory < req.memory {
        out.push(Reason::InsufficientMemory);
    }
    out
}

/// How good a fit `c` is (higher is better): 100 × the weights of the matching preferred
/// node-affinity terms, plus the least-allocated score (0..=100, mean of cpu and memory left
/// after placing the pod), minus 10 × the untolerated PreferNoSchedule taints.
pub fn score(spec: &PodSpec, c: &Candidate) -> i64 {
    let preferred: i64 = spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|na| {
            na.preferred_during_scheduling_ignored_during_execution
                .as_ref()
        })
        .into_iter()
        .flatten()
        .filter(|p| term_matches(&p.preference, c))
        .map(|p| i64::from(p.weight))
        .sum();
    let req = pod_requests(spec);
    let left = |free: u64, req: u64, alloc: u64| -> i64 {
        if alloc == 0 {
            return 0;
        }
        let pct = u128::from(free.saturating_sub(req)) * 100 / u128::from(alloc);
        i64::try_from(pct.min(100)).unwrap_or(0)
    };
    let least_allocated = (left(c.free.milli_cpu, req.milli_cpu, c.allocatable.milli_cpu)
        + left(c.free.memory, req.memory, c.allocatable.memory))
        / 2;
    let prefer_no_schedule = c
        .taints
        .iter()
        .filter(|t| t.effect == PREFER_NO_SCHEDULE && !tolerated(spec, t))
        .count();
    let penalty = i64::try_from(prefer_no_schedule)
        .unwrap_or(i64::MAX)
        .saturating_mul(10);
    preferred
        .saturating_mul(100)
        .saturating_add(least_allocated)
        .saturating_sub(penalty)
}

/// kube-scheduler's message for a pod that fits nowhere, e.g. `0/3 nodes are available: 1
/// Insufficient cpu, 2 node(s) didn't match Pod's node affinity/selector.`
///
/// `counts` holds how many candidates failed with each reason. Like kube, reasons with the same
/// text are merged and the entries are sorted as the strings `"<count> <text>"`.
pub fn unschedulable_message(total: usize, counts: &BTreeMap<Reason, usize>, what: &str) -> String {
    if total == 0 {
        return format!("no {what} available to schedule pods");
    }
    let mut by_text: BTreeMap<String, usize> = BTreeMap::new();
    for (r, n) in counts.iter().filter(|(_, n)| **n > 0) {
        *by_text.entry(r.text(what)).or_default() += n;
    }
    let mut parts: Vec<String> = by_text.iter().map(|(t, n)| format!("{n} {t}")).collect();
    parts.sort();
    if parts.is_empty() {
        format!("0/{total} {what} are available.")
    } else {
        format!("0/{total} {what} are available: {}.", parts.join(", "))
    }
}

/// The best candidate for the pod: the highest [`score`] among those that pass [`filter`], ties
/// to the lowest name, then the lowest index. `Err` carries [`unschedulable_message`].
pub fn pick(spec: &PodSpec, cands: &[Candidate], what: &str) -> Result<usize, String> {
    let mut counts = BTreeMap::new();
    let mut best: Option<(usize, i64)> = None;
    for (i, c) in cands.iter().enumerate() {
        let reasons = filter(spec, c);
        if !reasons.is_empty() {
            for r in reasons {
                *counts.entry(r).or_default() += 1;
            }
            continue;
        }
        let s = score(spec, c);
        let better = match best {
            None => true,
            Some((j, bs)) => s > bs || (s == bs && c.name < cands[j].name),
        };
        if better {
            best = Some((i, s));
        }
    }
    best.map(|(i, _)| i)
        .ok_or_else(|| unschedulable_message(cands.len(), &counts, what))
}

/// [`pick`] over groups of candidates (a site's classes): returns (group, candidate) indices.
/// The message counts groups: a failing group counts once per distinct reason of its
/// candidates, and an empty group (no ready node) counts as [`Reason::NotReady`].
pub fn pick_group(
    spec: &PodSpec,
    groups: &[Vec<Candidate>],
    what: &str,
) -> Result<(usize, usize), String> {
    let mut counts = BTreeMap::new();
    let mut best: Option<(usize, usize, i64)> = None;
    for (g, cands) in groups.iter().enumerate() {
        let mut reasons = BTreeSet::new();
        if cands.is_empty() {
            reasons.insert(Reason::NotReady);
        }
        let mut fits = false;
        for (i, c) in cands.iter().enumerate() {
            let rs = filter(spec, c);
            if !rs.is_empty() {
                reasons.extend(rs);
                continue;
            }
            fits = true;
            let s = score(spec, c);
            let better = match best {
                None => true,
                Some((bg, bi, bs)) => {
                    s > bs
                        || (s == bs
                            && groups
                                .get(bg)
                                .and_then(|v| v.get(bi))
                                .is_some_and(|b| c.name < b.name))
                }
            };
            if better {
                best = Some((g, i, s));
            }
        }
        if !fits {
            for r in reasons {
                *counts.entry(r).or_default() += 1;
            }
        }
    }
    best.map(|(g, i, _)| (g, i))
        .ok_or_else(|| unschedulable_message(groups.len(), &counts, what))
}

/// What an edge site tells the cloud about its capacity. Compact and stable: it only changes
/// when a class appears or goes, or the best free space of a class, or a total, changes.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SiteSummary {
    /// One per distinct (labels, taints, unschedulable) among Ready nodes. `free` and
    /// `allocatable` are those of the class's node with the most free cpu (ties: memory, then
    /// name); `name` is `<site>/<first node name>`; sorted by name.
    pub classes: Vec<Candidate>,
    /// Nodes in the site.
    pub nodes: u32,
    /// Nodes whose Ready condition is True.
    pub ready: u32,
    /// Total allocatable over all nodes.
    pub allocatable: Resources,
    /// Total requested by the non-terminated pods bound to the site's nodes.
    pub requested: Resources,
}

/// Computes a site's summary from its nodes and pods. Pods count against their `spec.nodeName`
/// unless their phase is Succeeded or Failed.
pub fn summarize(site: &str, nodes: &[Node], pods: &[Pod]) -> SiteSummary {
    let mut per_node: BTreeMap<&str, Resources> = BTreeMap::new();
    for p in pods {
        let phase = p.status.as_ref().and_then(|s| s.phase.as_deref());
        if matches!(phase, Some("Succeeded" | "Failed")) {
            continue;
        }
        let Some(spec) = p.spec.as_ref() else {
            continue;
        };
        if let Some(n) = spec.node_name.as_deref().filter(|n| !n.is_empty()) {
            let e = per_node.entry(n).or_default();
            *e = e.saturating_add(pod_requests(spec));
        }
    }
    let cands = nodes.iter().map(|node| {
        let name = node.metadata.name.as_deref().unwrap_or("");
        Candidate::from_node(node, per_node.get(name).copied().unwrap_or_default())
    });
    summarize_candidates(site, cands.collect())
}

/// [`summarize`] from the site's nodes as candidates (`free` = allocatable minus requested).
pub fn summarize_candidates(site: &str, mut cands: Vec<Candidate>) -> SiteSummary {
    cands.sort_by(|a, b| a.name.cmp(&b.name));
    let mut out = SiteSummary::default();
    for mut c in cands {
        let requested = c.allocatable.saturating_sub(c.free);
        out.nodes = out.nodes.saturating_add(1);
        out.allocatable = out.allocatable.saturating_add(c.allocatable);
        out.requested = out.requested.saturating_add(requested);
        if !c.ready {
            continue;
        }
        out.ready = out.ready.saturating_add(1);
        // Normalise taints so that equal nodes compare equal and the summary stays stable.
        for t in &mut c.taints {
            t.time_added = None;
        }
        c.taints
            .sort_by(|a, b| (&a.key, &a.value, &a.effect).cmp(&(&b.key, &b.value, &b.effect)));
        c.taints.dedup();
        // Nodes that differ only in their hostname are one class.
        let host = c.labels.remove(HOSTNAME_LABEL);
        let same = |k: &Candidate| {
            k.labels == c.labels && k.taints == c.taints && k.unschedulable == c.unschedulable
        };
        match out.classes.iter_mut().find(|k| same(k)) {
            Some(k) => {
                if (c.free.milli_cpu, c.free.memory) > (k.free.milli_cpu, k.free.memory) {
                    k.free = c.free;
                    k.allocatable = c.allocatable;
                }
                k.hosts.extend(host);
            }
            None => {
                c.name = format!("{site}/{}", c.name);
                c.hosts.extend(host);
                out.classes.push(c);
            }
        }
    }
    for k in &mut out.classes {
        k.hosts.sort();
    }
    out.classes.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// The cloud scheduler's candidates for a site: its classes, each labelled
/// `atoll.io/site: <site>` and carrying the EdgeSite's own taints after its nodes'.
pub fn site_candidates(site: &str, summary: &SiteSummary, site_taints: &[Taint]) -> Vec<Candidate> {
    summary
        .classes
        .iter()
        .map(|k| {
            let mut c = k.clone();
            c.labels.insert(SITE_LABEL.into(), site.into());
            c.taints.extend(site_taints.iter().cloned());
            c
        })
        .collect()
}

/// The scheduler pods name when they name none (the API sets it on create).
pub const DEFAULT_SCHEDULER: &str = "default-scheduler";

/// Whether Atoll's schedulers place `pod`: it names the default scheduler (or none). A pod
/// naming another scheduler waits for that one, as on Kubernetes.
pub fn for_default_scheduler(pod: &serde_json::Value) -> bool {
    pod.pointer("/spec/schedulerName")
        .and_then(serde_json::Value::as_str)
        .is_none_or(|s| s.is_empty() || s == DEFAULT_SCHEDULER)
}

/// A scheduler's Event about `pod` (`Scheduled`, `FailedScheduling`), reported by `instance`
/// (the site, for a site's scheduler: also its `source.host`), as the key and object to create.
pub fn pod_event(
    key: &store::Key,
    pod: &serde_json::Value,
    (ty, reason, msg): (&str, &str, &str),
    instance: &str,
    host: Option<&str>,
) -> (store::Key, serde_json::Value) {
    let name = format!("{}.{:x}", key.name, rand::random::<u64>());
    let ts = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let mut source = serde_json::json!({"component": "atoll-scheduler"});
    if let Some(h) = host {
        source["host"] = serde_json::json!(h);
    }
    let ev = serde_json::json!({
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"name": name, "namespace": key.namespace, "uid": uuid::Uuid::new_v4().to_string(),
            "creationTimestamp": ts},
        "involvedObject": {"apiVersion": "v1", "kind": "Pod", "namespace": key.namespace, "name": key.name,
            "uid": pod.pointer("/metadata/uid").cloned().unwrap_or(serde_json::Value::Null)},
        "type": ty, "reason": reason, "message": msg,
        "source": source,
        "reportingComponent": "atoll-scheduler", "reportingInstance": instance,
        "firstTimestamp": ts, "lastTimestamp": ts, "count": 1,
    });
    (
        store::Key::new("events", &key.tenant, &key.namespace, &name),
        ev,
    )
}

/// Set a pod's `PodScheduled` condition (and phase Pending when it has none), as both
/// schedulers report placements and failures.
pub fn set_scheduled(
    pod: &mut serde_json::Value,
    status: &str,
    reason: Option<&str>,
    msg: Option<&str>,
) {
    use serde_json::{json, Value};
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let mut c = json!({"type": "PodScheduled", "status": status, "lastProbeTime": null, "lastTransitionTime": now});
    if let Some(r) = reason {
        c["reason"] = json!(r);
    }
    if let Some(m) = msg {
        c["message"] = json!(m);
    }
    if !pod.get("status").is_some_and(Value::is_object) {
        pod["status"] = json!({});
    }
    let mut conds: Vec<Value> = pod
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|c| c["type"] != "PodScheduled")
        .collect();
    conds.push(c);
    pod["status"]["conditions"] = json!(conds);
    if pod.pointer("/status/phase").is_none() {
        pod["status"]["phase"] = json!("Pending");
    }
}

/// Whether the pod already carries `PodScheduled=False` with this message (nothing to write).
pub fn already_unschedulable(pod: &serde_json::Value, msg: &str) -> bool {
    pod.pointer("/status/conditions")
        .and_then(serde_json::Value::as_array)
        .and_then(|c| c.iter().find(|c| c["type"] == "PodScheduled"))
        .is_some_and(|c| c["status"] == "False" && c["message"] == msg)
}

pub mod metrics;
#[cfg(test)]
mod tests;
