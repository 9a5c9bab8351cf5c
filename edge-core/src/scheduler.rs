//! The site scheduler: binds to a node of this site every pod that has none and is this site's
//! to place: pods created here, and pods the cloud scheduler placed on this site (annotation
//! `atoll.io/site`). It works from the local replica alone, so it keeps placing while the cloud
//! is unreachable. It also keeps the site's capacity summary (what the cloud scheduler decides
//! from) and sends it up when it changes, at most every [`SUMMARY_EVERY`].
//!
//! It writes through the site's API (as `system:serviceaccount:kube-system:atoll-scheduler`), so
//! its writes pass the site's admission and go up through the outbox like any edge write: a
//! binding of a pod the cloud placed goes up as `Bind`, of a pod the site owns as `Put`; a pod
//! that fits nowhere gets `PodScheduled=False` (`Unschedulable`, kube-scheduler's message) and
//! a `FailedScheduling` event.

use std::sync::Arc;
use std::time::Duration;

use apiserver::api::{component, Api, Writer};
use controllers::sched;
use controllers::sched_cache::{self, node_name, spec_of, take, PodCache, Scheduler, TIMING};
use serde_json::Value;
use store::{Key, Scope};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::hooks::EdgeHooks;

/// The least time between two summaries sent up (changes in between are coalesced).
pub const SUMMARY_EVERY: Duration = Duration::from_secs(2);

const EDGESITES: &str = "edgesites.edge.atoll.io";

/// The site scheduler: the pod cache over the site's nodes, and the last summary sent up.
pub struct EdgeScheduler {
    writer: Writer,
    hooks: Arc<EdgeHooks>,
    cache: PodCache,
    last_summary: Option<sched::SiteSummary>,
    summary_sent: Option<Instant>,
    /// Capacity changed since the last summary was computed.
    summary_dirty: bool,
    metrics: sched::metrics::SchedulerMetrics,
}

impl EdgeScheduler {
    /// A scheduler for the site of `hooks` (its cache fills when [`run`] starts it).
    pub fn new(api: &Arc<Api>, hooks: Arc<EdgeHooks>) -> Self {
        EdgeScheduler {
            writer: Writer::new(api.clone(), component("atoll-scheduler")),
            hooks,
            cache: PodCache::default(),
            last_summary: None,
            summary_sent: None,
            summary_dirty: true,
            metrics: sched::metrics::SchedulerMetrics::register(&api.metrics, "site"),
        }
    }

    fn mine(&self, p: &Value) -> bool {
        node_name(p).is_empty()
            && p.pointer("/metadata/deletionTimestamp").is_none()
            && sched::for_default_scheduler(p)
            && (self.hooks.owns(p)
                || p.pointer("/metadata/annotations")
                    .and_then(|a| a.get(proto::SITE_ANNOTATION))
                    .and_then(Value::as_str)
                    == Some(self.hooks.site()))
    }

    /// Bind `pod` to `node`, with its `Scheduled` event in the same commit.
    async fn bind(&self, key: &Key, pod: &Value, node: &str) -> bool {
        let msg = format!(
            "Successfully assigned {}/{} to {node}",
            key.namespace, key.name
        );
        let ev = self.event(key, pod, "Normal", "Scheduled", &msg);
        match self.writer.bind_with(key, pod, node, Some(ev)).await {
            Ok(_) => {
                tracing::debug!(pod = %key.name, namespace = %key.namespace, %node, "bound");
                true
            }
            Err(e) => {
                tracing::debug!(pod = %key.name, error = %e.message, "binding lost a race or was refused; next pass");
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
        // The site's own pod goes up whole; a placed one's condition is status.
        let status = !self.hooks.owns(pod);
        let ev = self.event(key, pod, "Warning", "FailedScheduling", msg);
        let _ = self.writer.update_with(key, pod, v, status, Some(ev)).await;
    }

    /// An event about `pod` (the site's own object: it goes up like any edge write), to commit
    /// with the write it reports.
    fn event(&self, key: &Key, pod: &Value, ty: &str, reason: &str, msg: &str) -> (Key, Value) {
        let site = self.hooks.site();
        sched::pod_event(key, pod, (ty, reason, msg), site, Some(site))
    }
}

impl Scheduler for EdgeScheduler {
    fn scopes(&self) -> Vec<Scope> {
        vec![Scope::of("nodes", None), Scope::of("pods", None)]
    }

    fn clear(&mut self) {
        self.cache = PodCache::default();
        self.summary_dirty = true;
    }

    fn apply(&mut self, key: &Key, now: Option<&Arc<Value>>) {
        let was = std::mem::take(&mut self.cache.changed);
        match key.resource.as_str() {
            "pods" => {
                let mine = now.is_some_and(|v| self.mine(v));
                self.cache.apply_pod(key, now, mine);
            }
            "nodes" => self.cache.apply_node(key, now, true),
            _ => {}
        }
        self.summary_dirty |= self.cache.changed;
        self.cache.changed |= was;
    }

    fn cache(&mut self) -> &mut PodCache {
        &mut self.cache
    }

    /// Bind what fits, mark what does not; the writes go concurrently, so the store commits
    /// them in groups.
    async fn pass(&mut self, retry: bool) {
        let started = std::time::Instant::now();
        self.cache.refresh();
        let mut binds = Vec::new();
        let mut failed = Vec::new();
        for (key, pod) in self.cache.waiting(retry) {
            let cands = &mut self.cache.nodes;
            let Some(spec) = spec_of(&pod) else {
                self.cache.failed.insert(key);
                continue;
            };
            match sched::pick(&spec, cands, "nodes") {
                Ok(i) => {
                    take(&mut cands[i], sched::pod_requests(&spec));
                    binds.push((key, pod, cands[i].name.clone()));
                }
                Err(msg) => {
                    self.cache.failed.insert(key.clone());
                    failed.push((key, pod, msg));
                }
            }
        }
        use futures_util::StreamExt;
        let this = &*self;
        let tried = binds.len();
        let bound = futures_util::stream::iter(binds)
            .map(|(key, pod, node)| async move { this.bind(&key, &pod, &node).await })
            .buffer_unordered(64)
            .filter(|b| std::future::ready(*b))
            .count()
            .await;
        let (tried, unfit) = (tried, failed.len());
        futures_util::stream::iter(failed)
            .for_each_concurrent(64, |(key, pod, msg)| async move {
                this.unschedulable(&key, &pod, &msg).await
            })
            .await;
        self.metrics.pass(
            started.elapsed().as_secs_f64(),
            bound,
            unfit,
            tried.saturating_sub(bound),
        );
        if bound > 0 {
            tracing::info!(site = %self.hooks.site(), bound, "bound pods");
        }
    }

    /// Send the summary up when it changed, at most once per [`SUMMARY_EVERY`].
    async fn idle(&mut self) -> Option<Instant> {
        if !self.summary_dirty {
            return None;
        }
        if let Some(t) = self.summary_sent.filter(|t| t.elapsed() < SUMMARY_EVERY) {
            return Some(t + SUMMARY_EVERY);
        }
        let s = self.cache.summary(self.hooks.site());
        if self.last_summary.as_ref() == Some(&s) {
            self.summary_dirty = false;
            return None;
        }
        let key = Key::new(EDGESITES, "", "", self.hooks.site());
        let body = serde_json::to_value(&s).ok()?;
        if self
            .writer
            .store()
            .commit(vec![self.hooks.record("Summary", &key, Some(&body))])
            .await
            .is_ok()
        {
            self.last_summary = Some(s);
            self.summary_sent = Some(Instant::now());
            self.summary_dirty = false;
            None
        } else {
            Some(Instant::now() + SUMMARY_EVERY)
        }
    }
}

/// Run until cancelled (see [`controllers::sched_cache::run`]).
pub async fn run(api: Arc<Api>, hooks: Arc<EdgeHooks>, cancel: CancellationToken) {
    let mut s = EdgeScheduler::new(&api, hooks);
    sched_cache::run(&api.store, &mut s, TIMING, &cancel).await
}
