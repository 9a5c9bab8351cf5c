//! A scheduler's metrics in its API's registry (`/metrics`), with kube-scheduler's names:
//! scheduling attempts by result, and how long a scheduling pass (one batch of waiting pods:
//! decide, then write) takes.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};

/// An attempt's result (`scheduled`, `unschedulable`, `error`) and the scheduler (`cloud`,
/// `site`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Attempt {
    /// `scheduled`, `unschedulable` or `error` (the write lost a race or was refused).
    pub result: String,
    /// `cloud` (places on sites and cloud nodes) or `site` (binds on a site's nodes).
    pub profile: String,
}

/// A scheduler's metrics.
#[derive(Clone)]
pub struct SchedulerMetrics {
    profile: &'static str,
    attempts: Family<Attempt, Counter>,
    pass: Histogram,
}

impl SchedulerMetrics {
    /// Register the metrics of the scheduler `profile` in `m`.
    pub fn register(m: &apiserver::metrics::Metrics, profile: &'static str) -> Self {
        // Once per process: a scheduler under leader election starts again with each term.
        SchedulerMetrics {
            profile,
            attempts: m.once(
                "scheduler_schedule_attempts",
                "Scheduling attempts by result",
                Family::default,
            ),
            pass: m.once(
                "scheduler_scheduling_pass_duration_seconds",
                "How long a scheduling pass (decisions and their writes) took",
                || Histogram::new(exponential_buckets(0.0005, 2.0, 16)),
            ),
        }
    }

    /// A pass that took `secs`: `scheduled`, `unschedulable` and `error` attempts.
    pub fn pass(&self, secs: f64, scheduled: usize, unschedulable: usize, error: usize) {
        self.pass.observe(secs);
        for (result, n) in [
            ("scheduled", scheduled),
            ("unschedulable", unschedulable),
            ("error", error),
        ] {
            if n > 0 {
                self.attempts
                    .get_or_create(&Attempt {
                        result: result.into(),
                        profile: self.profile.into(),
                    })
                    .inc_by(n as u64);
            }
        }
    }
}
