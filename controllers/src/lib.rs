//! The control loops: what runs against the API's objects rather than serving them.
//!
//! - [`changes`]: the change-driven loop (a pass at start, after relevant changes, and on a
//!   safety-net timer) every controller and scheduler runs on;
//! - [`lifecycle`]: namespace and tenant termination, garbage collection by ownerReferences,
//!   event expiry;
//! - [`workloads`]: ReplicaSets, Deployments, DaemonSets;
//! - [`sched`]: the scheduling library (filters, scores, site summaries), pure;
//! - [`sched_cache`]: the scheduler's pod cache and loop, shared by the cloud's and the sites'
//!   schedulers.
//!
//! It knows nothing of HTTP, sync or sites: the cores wire it to their stores.

pub mod changes;
pub mod endpoints;
pub mod lifecycle;
pub mod sched;
pub mod sched_cache;
pub mod workloads;
