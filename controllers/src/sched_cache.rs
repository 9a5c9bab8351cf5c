//! What both schedulers (the cloud's and each site's) keep between passes, and the loop that
//! drives them. Like kube-scheduler's informer cache, the [`PodCache`] is built once from a list
//! and then kept current from the store's event stream, so a pass reads only the pods that wait
//! and the nodes it may use; it never lists or decodes every pod.
//!
//! The loop ([`run`]): a pass runs shortly after a new pending pod arrives (a short settle
//! gathers a burst into one pass); pods a pass found no place for are tried again when capacity
//! may have changed (at most every `retry_min`) and every `retry`. A watch that falls behind
//! rebuilds the cache from a fresh list.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, PodSpec};
use serde_json::Value;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::sched::{self, Candidate, Resources};
use store::{EventType, Key, Scope, Store};

/// A pod's `spec.nodeName` (`""` when unbound).
pub fn node_name(p: &Value) -> &str {
    p.pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .unwrap_or("")
}

fn created(v: &Value) -> &str {
    v.pointer("/metadata/creationTimestamp")
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// A pod's spec, if it decodes. A VM pod's VM stands in as its one container (its name and
/// resources), so it is filtered, scored and counted as a container pod asking the same (its
/// `spec.overhead` included), and it selects the nodes that run VMs (as a RuntimeClass'
/// node selector would).
pub fn spec_of(v: &Value) -> Option<PodSpec> {
    let mut spec: PodSpec = serde_json::from_value(v.get("spec")?.clone()).ok()?;
    if let Some(vm) = proto::vm::vm_of(v) {
        spec.containers = vec![k8s_openapi::api::core::v1::Container {
            name: vm.name,
            resources: vm.resources,
            ..Default::default()
        }];
        spec.init_containers = None;
        spec.node_selector
            .get_or_insert_with(Default::default)
            .insert(proto::vm::NODE_LABEL.into(), "qemu".into());
    }
    Some(spec)
}

/// Whether a pod has finished (Succeeded or Failed): it no longer counts against anything.
pub fn finished(p: &Value) -> bool {
    matches!(
        p.pointer("/status/phase").and_then(Value::as_str),
        Some("Succeeded") | Some("Failed")
    )
}

/// What pods request, summed per group (a node, a site), kept current pod by pod.
#[derive(Default)]
pub struct Tally {
    per: HashMap<String, Resources>,
    pods: HashMap<Key, (String, Resources)>,
}

impl Tally {
    /// Count pod `key` (whose current state is `now`) in `group`, or in none; returns whether
    /// anything changed. The spec is decoded only when the pod moves to another group.
    pub fn set(&mut self, key: &Key, group: Option<String>, now: Option<&Arc<Value>>) -> bool {
        if self.pods.get(key).map(|o| &o.0) == group.as_ref() {
            return false;
        }
        if let Some((g, r)) = self.pods.remove(key) {
            if let Some(t) = self.per.get_mut(&g) {
                *t = t.saturating_sub(r);
            }
        }
        if let (Some(g), Some(spec)) = (group, now.and_then(|v| spec_of(v))) {
            let r = sched::pod_requests(&spec);
            let t = self.per.entry(g.clone()).or_default();
            *t = t.saturating_add(r);
            self.pods.insert(key.clone(), (g, r));
        }
        true
    }

    /// What is requested in `group`.
    pub fn of(&self, group: &str) -> Resources {
        self.per.get(group).copied().unwrap_or_default()
    }
}

/// Nodes, what is requested on each, and the pods waiting for this scheduler.
#[derive(Default)]
pub struct PodCache {
    /// The nodes this scheduler binds to as candidates, in name order (decoded once per
    /// change of the node); `free` is brought up to date by [`PodCache::refresh`].
    pub nodes: Vec<Candidate>,
    /// What bound, unfinished pods request on each node (any node, not only `nodes`).
    pub node_req: Tally,
    /// Pods waiting for this scheduler.
    pub pending: BTreeMap<Key, Arc<Value>>,
    /// Pending pods a pass found no place for; tried again on a retry.
    pub failed: HashSet<Key>,
    /// Capacity may have changed (a node, or a pod's requests on a node) since the flag was
    /// last cleared.
    pub changed: bool,
}

impl PodCache {
    /// Apply a change of a pod; `mine` says whether it waits for this scheduler.
    pub fn apply_pod(&mut self, key: &Key, now: Option<&Arc<Value>>, mine: bool) {
        // What it requests on its node, while bound and not finished.
        let node = now
            .filter(|v| !finished(v))
            .map(|v| node_name(v))
            .filter(|n| !n.is_empty())
            .map(String::from);
        if self.node_req.set(key, node, now) {
            self.changed = true;
        }
        match now.filter(|_| mine) {
            Some(v) => {
                // A new pending pod, or one whose spec changed, is worth a try at once.
                let fresh = self
                    .pending
                    .get(key)
                    .is_none_or(|old| old.get("spec") != v.get("spec"));
                if fresh {
                    self.failed.remove(key);
                }
                self.pending.insert(key.clone(), v.clone());
            }
            None => {
                self.pending.remove(key);
                self.failed.remove(key);
            }
        }
    }

    /// Apply a change of a node; `keep` says whether this scheduler binds to it.
    pub fn apply_node(&mut self, key: &Key, now: Option<&Arc<Value>>, keep: bool) {
        let at = self.nodes.binary_search_by(|c| c.name.cmp(&key.name));
        match now
            .filter(|_| keep)
            .and_then(|v| serde_json::from_value::<Node>((**v).clone()).ok())
        {
            Some(n) => {
                let c = Candidate::from_node(&n, Resources::default());
                match at {
                    Ok(i) => self.nodes[i] = c,
                    Err(i) => self.nodes.insert(i, c),
                }
            }
            None => {
                if let Ok(i) = at {
                    self.nodes.remove(i);
                }
            }
        }
        self.changed = true;
    }

    /// Whether a pod waits that no pass has tried yet.
    pub fn has_new(&self) -> bool {
        self.pending.len() > self.failed.len()
    }

    /// The pods a pass should try (all with `retry`, else the untried), oldest first like
    /// kube-scheduler's FIFO.
    pub fn waiting(&self, retry: bool) -> Vec<(Key, Arc<Value>)> {
        let mut w: Vec<(Key, Arc<Value>)> = self
            .pending
            .iter()
            .filter(|(k, _)| retry || !self.failed.contains(*k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        w.sort_by(|a, b| created(&a.1).cmp(created(&b.1)));
        w
    }

    /// Set every node's `free` from what is requested on it (undoing what a pass counted
    /// ahead with [`take`]).
    pub fn refresh(&mut self) {
        for c in &mut self.nodes {
            let r = self.node_req.of(&c.name);
            c.free = c.allocatable.saturating_sub(r);
        }
    }

    /// The nodes as candidates, in name order, with what is requested on each.
    pub fn candidates(&mut self) -> Vec<Candidate> {
        self.refresh();
        self.nodes.clone()
    }

    /// The site summary of these nodes (see [`sched::summarize`]).
    pub fn summary(&mut self, site: &str) -> sched::SiteSummary {
        sched::summarize_candidates(site, self.candidates())
    }
}

/// Count `add` against a candidate, so the rest of a pass sees the capacity it takes.
pub fn take(c: &mut Candidate, add: Resources) {
    c.free = c.free.saturating_sub(add);
}

/// A scheduler the [`run`] loop drives.
pub trait Scheduler: Send {
    /// What the cache is built from (listed, then watched).
    fn scopes(&self) -> Vec<Scope>;
    /// Forget everything (before a rebuild).
    fn clear(&mut self);
    /// Apply one change (`None`: deleted).
    fn apply(&mut self, key: &Key, now: Option<&Arc<Value>>);
    /// The pod cache.
    fn cache(&mut self) -> &mut PodCache;
    /// Place the waiting pods (all of them with `retry`) and commit what was decided.
    fn pass(&mut self, retry: bool) -> impl Future<Output = ()> + Send;
    /// Whether something besides new pending pods wants a pass.
    fn has_work(&self) -> bool {
        false
    }
    /// Work between passes (a site's summary); returns when it wants to be called again.
    fn idle(&mut self) -> impl Future<Output = Option<Instant>> + Send {
        async { None }
    }
}

/// Both schedulers' timing: a pass 20 ms after new pending pods (so a burst goes in one pass);
/// unschedulable pods retried every 5 s, and after a capacity change at most every 1 s.
pub const TIMING: Timing = Timing {
    settle: Duration::from_millis(20),
    retry: Duration::from_secs(5),
    retry_min: Duration::from_secs(1),
};

/// How often the loop settles and retries.
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    /// Wait this long after a new pending pod, so a burst goes in one pass.
    pub settle: Duration,
    /// Unschedulable pods are retried at least this often.
    pub retry: Duration,
    /// And after a capacity change, but not more often than this.
    pub retry_min: Duration,
}

/// Drive `s` until cancelled (see the module text).
pub async fn run<S: Scheduler>(store: &Store, s: &mut S, t: Timing, cancel: &CancellationToken) {
    use tokio::sync::broadcast::error::{RecvError, TryRecvError};
    'rebuild: loop {
        let (mut seen, lists, mut live) = store.lists_and_watch(&s.scopes());
        s.clear();
        for (k, v) in lists.iter().flatten() {
            s.apply(k, Some(v));
        }
        let mut last_retry = Instant::now() - t.retry;
        loop {
            let due = |c: &mut PodCache, last: Instant| {
                !c.failed.is_empty()
                    && (last.elapsed() >= t.retry || (c.changed && last.elapsed() >= t.retry_min))
            };
            if s.cache().has_new() || s.has_work() || due(s.cache(), last_retry) {
                tokio::time::sleep(t.settle).await;
                // Take in what arrived meanwhile, so the pass sees the whole burst.
                loop {
                    match live.try_recv() {
                        Ok(e) if seen.advance(&e) => {
                            s.apply(&e.key, (e.kind != EventType::Deleted).then_some(&e.object));
                        }
                        Ok(_) => {}
                        Err(TryRecvError::Empty) => break,
                        Err(TryRecvError::Lagged(_)) => continue 'rebuild,
                        Err(TryRecvError::Closed) => return,
                    }
                }
                let retry = due(s.cache(), last_retry);
                if retry {
                    last_retry = Instant::now();
                    s.cache().changed = false;
                }
                s.pass(retry).await;
                continue;
            }
            let idle_wake = s.idle().await;
            let c = s.cache();
            let retry_wake = if c.failed.is_empty() {
                Instant::now() + t.retry
            } else if c.changed {
                last_retry + t.retry_min
            } else {
                last_retry + t.retry
            };
            let wake = idle_wake.map_or(retry_wake, |w| w.min(retry_wake));
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep_until(wake) => {}
                ev = live.recv() => match ev {
                    Ok(e) if seen.advance(&e) => {
                        s.apply(&e.key, (e.kind != EventType::Deleted).then_some(&e.object));
                    }
                    Ok(_) => {}
                    Err(RecvError::Lagged(_)) => continue 'rebuild,
                    Err(RecvError::Closed) => return,
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(name: &str, node: &str, phase: &str) -> Arc<Value> {
        Arc::new(
            json!({"metadata": {"name": name, "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {"nodeName": node, "containers": [{"name": "c", "resources": {"requests": {"cpu": "100m", "memory": "1Mi"}}}]},
            "status": {"phase": phase}}),
        )
    }

    #[test]
    fn a_vm_pod_asks_for_its_vm_and_overhead() {
        let mut c = PodCache::default();
        let k = Key::new("pods", "", "default", "vm");
        let vm = Arc::new(json!({"metadata": {"name": "vm"},
            "spec": {"nodeName": "n1", "overhead": {"cpu": "100m", "memory": "40Mi"},
                "virtualMachine": {"name": "vm", "image": "r/vm:1",
                    "resources": {"requests": {"cpu": "2", "memory": "256Mi"}}}}}));
        c.apply_pod(&k, Some(&vm), false);
        let r = c.node_req.of("n1");
        assert_eq!((r.milli_cpu, r.memory, r.pods), (2100, 296 << 20, 1));
    }

    #[test]
    fn requests_follow_binding_and_phase() {
        let mut c = PodCache::default();
        let k = Key::new("pods", "", "default", "a");
        c.apply_pod(&k, Some(&pod("a", "", "Pending")), true);
        assert!(c.has_new());
        assert_eq!(c.node_req.of("n1"), Resources::default());
        c.apply_pod(&k, Some(&pod("a", "n1", "Pending")), false);
        assert!(!c.has_new());
        assert_eq!(c.node_req.of("n1").milli_cpu, 100);
        assert_eq!(c.node_req.of("n1").pods, 1);
        // A status change on the same node counts once.
        c.apply_pod(&k, Some(&pod("a", "n1", "Running")), false);
        assert_eq!(c.node_req.of("n1").milli_cpu, 100);
        // Finished pods free their node.
        c.apply_pod(&k, Some(&pod("a", "n1", "Succeeded")), false);
        assert_eq!(c.node_req.of("n1").milli_cpu, 0);
        c.apply_pod(&k, Some(&pod("a", "n1", "Running")), false);
        c.apply_pod(&k, None, false);
        assert_eq!(c.node_req.of("n1"), Resources::default());
    }

    #[test]
    fn failed_pods_wait_for_a_retry_unless_their_spec_changes() {
        let mut c = PodCache::default();
        let k = Key::new("pods", "", "default", "a");
        let p = pod("a", "", "Pending");
        c.apply_pod(&k, Some(&p), true);
        c.failed.insert(k.clone());
        assert!(!c.has_new());
        assert!(c.waiting(false).is_empty());
        assert_eq!(c.waiting(true).len(), 1);
        // A status-only change (the scheduler's own Unschedulable) is not new work.
        let mut s = (*p).clone();
        s["status"]["conditions"] = json!([{"type": "PodScheduled", "status": "False"}]);
        c.apply_pod(&k, Some(&Arc::new(s.clone())), true);
        assert!(!c.has_new());
        s["spec"]["nodeSelector"] = json!({"disk": "ssd"});
        c.apply_pod(&k, Some(&Arc::new(s)), true);
        assert!(c.has_new());
    }
}
