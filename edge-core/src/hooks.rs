//! The edge's authority rules and transactional outbox, as API hooks.
//!
//! - Objects created at the edge carry `edge.atoll.io/origin: <site>` and are the edge's: it may
//!   change and delete them, and every change goes up.
//! - Everything else came from the cloud: the edge may write only its status (which goes up as
//!   a status change), and may delete it only once the cloud asked for its deletion.
//! - Each outgoing change is an `outbox` record committed in the same transaction as the write,
//!   so an acknowledged edge write can never miss the uplink.

use std::sync::atomic::{AtomicU64, Ordering};

use apiserver::api::{Hooks, Write};
use apiserver::error::{ApiError, ApiResult};
use apiserver::resources::Resource;
use apiserver::store::{Key, Op, Precondition};
use serde_json::{json, Value};

pub use proto::{origin, ORIGIN};

/// Store name of node leases (kept local).
const LEASES: &str = "leases.coordination.k8s.io";
/// Internal resource: outgoing changes, ordered by their commit version.
pub const OUTBOX: &str = "outbox";

/// Hooks for one site.
pub struct EdgeHooks {
    site: String,
    next: AtomicU64,
}

impl EdgeHooks {
    /// Hooks for `site`; outbox keys continue after `last_key`.
    pub fn new(site: &str, last_key: u64) -> Self {
        EdgeHooks {
            site: site.to_string(),
            next: AtomicU64::new(last_key + 1),
        }
    }

    fn owned(&self, v: &Value) -> bool {
        origin(v) == Some(self.site.as_str())
    }

    fn refuse(&self, res: &Resource, current: &Value, what: &str) -> ApiError {
        let name = current
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("");
        ApiError::forbidden_msg(format!(
            "{} {name:?} is owned by the cloud: {what} at the cloud (site {} may only write its status)",
            res.plural, self.site
        ))
    }
}

impl EdgeHooks {
    /// This site's name.
    pub fn site(&self) -> &str {
        &self.site
    }

    /// Whether the site owns `v` (created it).
    pub fn owns(&self, v: &Value) -> bool {
        self.owned(v)
    }

    /// An outbox record of `kind` (`Put`, `Status`, `Delete`, `Bind`, `Summary`) for `key`,
    /// to commit together with the write it reports.
    pub fn record(&self, kind: &str, key: &Key, object: Option<&Value>) -> Op {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let name = format!("{n:020}");
        let rec = json!({
            "metadata": {"name": name},
            "kind": kind,
            "key": {"resource": key.resource, "tenant": key.tenant, "namespace": key.namespace, "name": key.name},
            "object": object.cloned().unwrap_or(Value::Null),
        });
        Op::Put {
            key: Key::new(OUTBOX, "", "", &name),
            value: rec,
            pre: Precondition::Absent,
        }
    }
}

impl Hooks for EdgeHooks {
    fn admit(&self, res: &Resource, write: Write<'_>) -> ApiResult<()> {
        match write {
            Write::Create(obj) => {
                if !obj
                    .pointer("/metadata/annotations")
                    .is_some_and(Value::is_object)
                {
                    obj["metadata"]["annotations"] = json!({});
                }
                obj["metadata"]["annotations"][ORIGIN] = json!(self.site);
                if res.plural == "nodes" {
                    if !obj
                        .pointer("/metadata/labels")
                        .is_some_and(Value::is_object)
                    {
                        obj["metadata"]["labels"] = json!({});
                    }
                    obj["metadata"]["labels"][proto::SITE_LABEL] = json!(self.site);
                }
                Ok(())
            }
            Write::Update { current, status } => {
                if status || self.owned(current) {
                    Ok(())
                } else {
                    Err(self.refuse(res, current, "change it"))
                }
            }
            Write::Delete { current } => {
                if self.owned(current) || current.pointer("/metadata/deletionTimestamp").is_some() {
                    Ok(())
                } else {
                    Err(self.refuse(res, current, "delete it"))
                }
            }
        }
    }

    fn also(&self, _res: &Resource, key: &Key, new: Option<&Value>, status: bool) -> Vec<Op> {
        // Node leases are the site's own business: the edge judges node health locally.
        if key.resource == LEASES {
            return Vec::new();
        }
        let kind = match new {
            None => "Delete",
            Some(v) if self.owned(v) => "Put",
            Some(_) if status => "Status",
            Some(_) => return Vec::new(),
        };
        vec![self.record(kind, key, new)]
    }
}
