//! The agent's Prometheus metrics (`GET /metrics` on its HTTPS endpoint, for the same client
//! certificates as its logs): pods started and the pods it runs, container starts, runtime
//! operation latency and errors by operation (kubelet's names), exec/attach sessions open.
//! One set per process, as kubelet's.

use std::sync::OnceLock;
use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use serde_json::Value;

use crate::runtime::{ContainerConfig, Exec, Runtime, RuntimeError, State};

/// A runtime operation's label (kubelet's `operation_type`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Operation {
    /// `start_container`, `stop_container` (a signal), `remove_container`,
    /// `update_container`, `start_vm`.
    pub operation_type: String,
}

/// The agent's metrics.
pub struct Metrics {
    registry: Registry,
    /// Pods this agent admitted and started (`kubelet_started_pods_total`).
    pub started_pods: Counter,
    /// Containers started, restarts included (`kubelet_started_containers_total`).
    pub started_containers: Counter,
    /// Pods this agent runs now (`kubelet_running_pods`).
    pub running_pods: Gauge,
    /// exec and attach sessions open.
    pub stream_sessions: Gauge,
    ops: Family<Operation, Histogram>,
    errors: Family<Operation, Counter>,
}

/// The process's metrics.
pub fn get() -> &'static Metrics {
    static M: OnceLock<Metrics> = OnceLock::new();
    M.get_or_init(|| {
        let mut registry = Registry::default();
        let m = Metrics {
            registry: Registry::default(),
            started_pods: Counter::default(),
            started_containers: Counter::default(),
            running_pods: Gauge::default(),
            stream_sessions: Gauge::default(),
            // 1 ms to about 65 s.
            ops: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.001, 2.0, 17))
            }),
            errors: Family::default(),
        };
        registry.register(
            "kubelet_started_pods",
            "Pods started by this node's agent",
            m.started_pods.clone(),
        );
        registry.register(
            "kubelet_started_containers",
            "Containers started by this node's agent",
            m.started_containers.clone(),
        );
        registry.register(
            "kubelet_running_pods",
            "Pods this node's agent runs",
            m.running_pods.clone(),
        );
        registry.register(
            "atoll_agent_stream_sessions",
            "exec and attach sessions open on this node",
            m.stream_sessions.clone(),
        );
        registry.register(
            "kubelet_runtime_operations_duration_seconds",
            "Duration of runtime operations, by operation",
            m.ops.clone(),
        );
        registry.register(
            "kubelet_runtime_operations_errors",
            "Runtime operations that failed, by operation",
            m.errors.clone(),
        );
        Metrics { registry, ..m }
    })
}

impl Metrics {
    /// The text exposition format (`text/plain; version=0.0.4`).
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }

    fn observe<T>(&self, op: &str, started: Instant, r: &Result<T, RuntimeError>) {
        let l = Operation {
            operation_type: op.to_string(),
        };
        self.ops
            .get_or_create(&l)
            .observe(started.elapsed().as_secs_f64());
        if r.is_err() {
            self.errors.get_or_create(&l).inc();
        }
    }
}

/// A runtime whose operations are timed and counted.
#[derive(Clone)]
pub struct Timed<R>(pub R);

impl<R: Runtime> Runtime for Timed<R> {
    async fn start(&self, c: ContainerConfig) -> Result<State, RuntimeError> {
        let t = Instant::now();
        let r = self.0.start(c).await;
        get().observe("start_container", t, &r);
        if r.is_ok() {
            get().started_containers.inc();
        }
        r
    }

    fn state(&self, id: &str) -> State {
        self.0.state(id)
    }

    async fn signal(&self, id: &str, signal: &str) {
        let t = Instant::now();
        self.0.signal(id, signal).await;
        get().observe::<()>("stop_container", t, &Ok(()));
    }

    async fn remove(&self, id: &str) -> Result<(), RuntimeError> {
        let t = Instant::now();
        let r = self.0.remove(id).await;
        get().observe("remove_container", t, &r);
        r
    }

    fn list(&self) -> Vec<String> {
        self.0.list()
    }

    async fn update(&self, id: &str, resources: &Value) -> Result<(), RuntimeError> {
        let t = Instant::now();
        let r = self.0.update(id, resources).await;
        get().observe("update_container", t, &r);
        r
    }

    async fn exec_probe(
        &self,
        id: &str,
        command: &[String],
        timeout: std::time::Duration,
    ) -> Result<(i32, String), RuntimeError> {
        let t = Instant::now();
        let r = self.0.exec_probe(id, command, timeout).await;
        get().observe("exec_sync", t, &r);
        r
    }

    async fn start_exec(
        &self,
        id: &str,
        exec: Exec,
        log: std::path::PathBuf,
    ) -> Result<State, RuntimeError> {
        let t = Instant::now();
        let r = self.0.start_exec(id, exec, log).await;
        get().observe("start_vm", t, &r);
        if r.is_ok() {
            get().started_containers.inc();
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operations_are_timed_and_failures_counted() {
        let m = get();
        m.observe::<()>("test_op", Instant::now(), &Ok(()));
        m.observe::<()>(
            "test_op",
            Instant::now(),
            &Err(RuntimeError::Start("no".into())),
        );
        let text = m.encode();
        assert!(
            text.contains(
                "kubelet_runtime_operations_duration_seconds_count{operation_type=\"test_op\"} 2"
            ),
            "{text}"
        );
        assert!(
            text.contains("kubelet_runtime_operations_errors_total{operation_type=\"test_op\"} 1"),
            "{text}"
        );
    }
}
