//! The API server's Prometheus metrics (`GET /metrics`, system administrators only, as
//! kube-apiserver's need the `/metrics` non-resource permission): requests by verb, resource
//! and code with latency histograms (kube-apiserver's names and labels), watches in flight,
//! and the store's commit latency and size. Other parts of a process (the sync hub, the
//! schedulers) register theirs in the same registry.

use std::sync::atomic::AtomicU64;
use std::sync::Mutex;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Metric, Registry};

/// One request's labels (kube-apiserver's `apiserver_request_total`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// `GET`, `LIST`, `WATCH`, `CREATE`, `UPDATE`, `PATCH`, `DELETE`, `DELETECOLLECTION`; the
    /// HTTP method for a non-resource path.
    pub verb: String,
    /// API group (empty: core).
    pub group: String,
    /// API version.
    pub version: String,
    /// Resource (plural); empty for a non-resource path.
    pub resource: String,
    /// Subresource.
    pub subresource: String,
    /// HTTP status code.
    pub code: String,
}

/// A request's latency labels (no code, as kube-apiserver's duration histogram).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LatencyLabels {
    /// As [`RequestLabels::verb`].
    pub verb: String,
    /// API group.
    pub group: String,
    /// Resource.
    pub resource: String,
    /// Subresource.
    pub subresource: String,
}

fn latency_histogram() -> Histogram {
    // 1 ms to about 33 s.
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

/// The metrics of one API server process.
pub struct Metrics {
    registry: Mutex<Registry>,
    /// Metrics registered by name through [`Metrics::once`] (a part that restarts, such as a
    /// singleton under leader election, gets the same ones again).
    named: Mutex<std::collections::HashMap<String, Box<dyn std::any::Any + Send>>>,
    /// Run before each scrape (gauges read from state only then, such as a queue's depth).
    on_scrape: Mutex<Vec<Box<dyn Fn() + Send + Sync>>>,
    requests: Family<RequestLabels, Counter>,
    latency: Family<LatencyLabels, Histogram, fn() -> Histogram>,
    watches: Gauge<i64, std::sync::atomic::AtomicI64>,
    commits: Histogram,
    commit_ops: Histogram,
    objects: Gauge<u64, AtomicU64>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A registry with the API server's metrics.
    pub fn new() -> Self {
        let requests = Family::<RequestLabels, Counter>::default();
        let latency = Family::<LatencyLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            latency_histogram,
        );
        let watches = Gauge::<i64, std::sync::atomic::AtomicI64>::default();
        let commits = Histogram::new(exponential_buckets(0.0001, 2.0, 16));
        let commit_ops = Histogram::new([1.0, 2.0, 4.0, 8.0, 16.0, 64.0, 256.0]);
        let objects = Gauge::<u64, AtomicU64>::default();
        let mut r = Registry::default();
        r.register(
            "apiserver_request",
            "Requests by verb, group, version, resource, subresource and HTTP code",
            requests.clone(),
        );
        r.register(
            "apiserver_request_duration_seconds",
            "Request latency (watches: until the stream opened)",
            latency.clone(),
        );
        r.register(
            "apiserver_longrunning_watches",
            "Watch streams open now",
            watches.clone(),
        );
        r.register(
            "atoll_store_commit_duration_seconds",
            "Store transaction latency, acknowledged by the storage",
            commits.clone(),
        );
        r.register(
            "atoll_store_commit_ops",
            "Operations (objects written or deleted) per store transaction",
            commit_ops.clone(),
        );
        r.register(
            "atoll_store_objects",
            "Objects in the store's watch cache",
            objects.clone(),
        );
        Metrics {
            registry: Mutex::new(r),
            named: Mutex::new(std::collections::HashMap::new()),
            on_scrape: Mutex::new(Vec::new()),
            requests,
            latency,
            watches,
            commits,
            commit_ops,
            objects,
        }
    }

    /// Register another part's metric in this registry.
    pub fn register(&self, name: &str, help: &str, metric: impl Metric) {
        self.registry
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .register(name, help, metric);
    }

    /// The metric registered as `name`, registering `make()`'s the first time (later calls,
    /// of a part that starts again, get a handle on the same one).
    pub fn once<M: Metric + Clone + Send + 'static>(
        &self,
        name: &str,
        help: &str,
        make: impl FnOnce() -> M,
    ) -> M {
        let mut named = self.named.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(m) = named.get(name).and_then(|m| m.downcast_ref::<M>()) {
            return m.clone();
        }
        let m = make();
        self.register(name, help, m.clone());
        named.insert(name.to_string(), Box::new(m.clone()));
        m
    }

    /// Count a finished request.
    pub fn request(&self, l: RequestLabels, took: Duration) {
        self.latency
            .get_or_create(&LatencyLabels {
                verb: l.verb.clone(),
                group: l.group.clone(),
                resource: l.resource.clone(),
                subresource: l.subresource.clone(),
            })
            .observe(took.as_secs_f64());
        self.requests.get_or_create(&l).inc();
    }

    /// A watch stream opened; the guard counts it until dropped.
    pub fn watch_opened(&self) -> WatchGuard {
        self.watches.inc();
        WatchGuard(self.watches.clone())
    }

    /// A committed store transaction of `ops` operations.
    pub fn commit(&self, ops: usize, took: Duration) {
        self.commits.observe(took.as_secs_f64());
        self.commit_ops.observe(ops as f64);
    }

    /// The store's object count now.
    pub fn objects(&self, n: usize) {
        self.objects.set(n as u64);
    }

    /// Run `f` before each scrape (to set gauges read from state).
    pub fn on_scrape(&self, f: impl Fn() + Send + Sync + 'static) {
        self.on_scrape
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Box::new(f));
    }

    /// The text exposition format (`text/plain; version=0.0.4`).
    pub fn encode(&self) -> String {
        for f in self
            .on_scrape
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            f();
        }
        let mut out = String::new();
        let r = self.registry.lock().unwrap_or_else(|p| p.into_inner());
        if prometheus_client::encoding::text::encode(&mut out, &r).is_err() {
            out.clear();
        }
        out
    }
}

/// Counts one open watch until dropped.
pub struct WatchGuard(Gauge<i64, std::sync::atomic::AtomicI64>);

impl Drop for WatchGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_commits_are_exposed() {
        let m = Metrics::new();
        let l = RequestLabels {
            verb: "LIST".into(),
            group: String::new(),
            version: "v1".into(),
            resource: "pods".into(),
            subresource: String::new(),
            code: "200".into(),
        };
        m.request(l.clone(), Duration::from_millis(3));
        m.request(l, Duration::from_millis(5));
        m.commit(2, Duration::from_micros(700));
        let g = m.watch_opened();
        let text = m.encode();
        assert!(text.contains("# TYPE apiserver_request counter"), "{text}");
        assert!(
            text.contains(r#"apiserver_request_total{verb="LIST",group="",version="v1",resource="pods",subresource="",code="200"} 2"#),
            "{text}"
        );
        assert!(text.contains("apiserver_request_duration_seconds_count{verb=\"LIST\""));
        assert!(text.contains("apiserver_longrunning_watches 1"), "{text}");
        drop(g);
        assert!(m.encode().contains("apiserver_longrunning_watches 0"));
        // A part that starts twice registers once.
        let a = m.once("x_things", "Things", Counter::<u64>::default);
        let b = m.once("x_things", "Things", Counter::<u64>::default);
        a.inc();
        b.inc();
        assert_eq!(m.encode().matches("# TYPE x_things counter").count(), 1);
        assert!(m.encode().contains("x_things_total 2"));
        assert!(m
            .encode()
            .contains("atoll_store_commit_duration_seconds_count 1"));
    }
}
