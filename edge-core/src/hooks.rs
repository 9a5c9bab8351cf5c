//! The edge's authority rules and transactional outbox, as API hooks.
//!
//! - Objects created at the edge carry `edge.atoll.io/origin: <site>` and are the edge's: it may
//!   change and delete them, and every change goes up. A site creates only the kinds in
//!   [`SITE_KINDS`], only in tenants it serves (those in its replica), and binds pods only to
//!   its own nodes; anything else is refused here with a 403, as the cloud would refuse it.
//! - Everything else came from the cloud: the edge may write only its status (which goes up as
//!   a status change), and may delete it only once the cloud asked for its deletion.
//! - A node's status is the site's; its spec, labels and annotations are shared with the cloud
//!   (see the hub's node rules): an edit at the edge goes up with the version it was made on,
//!   so the cloud can tell which fields the site changed.
//! - Each outgoing change is an `outbox` record committed in the same transaction as the write,
//!   so an acknowledged edge write can never miss the uplink.

use std::sync::atomic::{AtomicU64, Ordering};

use apiserver::api::{Committing, Hooks, Write};
use apiserver::error::{ApiError, ApiResult};
use apiserver::resources::Resource;
use serde_json::{json, Value};
use store::{Key, Op, Precondition, Store};

pub use proto::{origin, ORIGIN};

/// Store name of node leases (kept local).
const LEASES: &str = "leases.coordination.k8s.io";
/// Internal resource: outgoing changes, ordered by their commit version.
pub const OUTBOX: &str = "outbox";
/// What a site may create (plural names): the cloud accepts these from a site, in the tenants
/// it serves. Leases stay at the site (node heartbeats); every other kind (namespaces,
/// tenants, edge sites, workloads) is created at the cloud.
pub const SITE_KINDS: &[&str] = proto::SITE_CREATABLE;

/// Hooks for one site.
pub struct EdgeHooks {
    site: String,
    store: Store,
    next: AtomicU64,
}

impl EdgeHooks {
    /// Hooks for `site` over its local `store`; outbox keys continue after `last_key`.
    pub fn new(site: &str, store: Store, last_key: u64) -> Self {
        EdgeHooks {
            site: site.to_string(),
            store,
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

    /// A new object the site may create, or why not.
    fn admit_create(&self, res: &Resource, obj: &mut Value) -> ApiResult<()> {
        let plural = res.plural;
        if !(SITE_KINDS.contains(&plural) || res.store_name() == LEASES) {
            return Err(ApiError::forbidden_msg(format!(
                "{plural} cannot be created at edge site {}: a site creates only {}; create {plural} at the cloud",
                self.site,
                SITE_KINDS.join(", ")
            )));
        }
        if plural == "pods" {
            let node = obj
                .pointer("/spec/nodeName")
                .and_then(Value::as_str)
                .unwrap_or("");
            let ours = |n: &str| {
                self.store
                    .get(&Key::new("nodes", "", "", n))
                    .is_some_and(|v| node_site(&v) == Some(self.site.as_str()))
            };
            if !node.is_empty() && !ours(node) {
                return Err(ApiError::forbidden_msg(format!(
                    "pods cannot be bound to node {node:?} at edge site {}: it is not one of the site's nodes",
                    self.site
                )));
            }
            if let Some(placed) = obj
                .pointer("/metadata/annotations")
                .and_then(|a| a.get(proto::SITE_ANNOTATION))
                .and_then(Value::as_str)
                .filter(|s| *s != self.site)
            {
                return Err(ApiError::forbidden_msg(format!(
                    "a pod created at edge site {} cannot be placed on site {placed:?}",
                    self.site
                )));
            }
        }
        if !obj
            .pointer("/metadata/annotations")
            .is_some_and(Value::is_object)
        {
            obj["metadata"]["annotations"] = json!({});
        }
        obj["metadata"]["annotations"][ORIGIN] = json!(self.site);
        if plural == "nodes" {
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
}

fn node_site(v: &Value) -> Option<&str> {
    v.pointer("/metadata/labels")?
        .get(proto::SITE_LABEL)?
        .as_str()
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
        self.record_on(kind, key, object, None)
    }

    /// [`EdgeHooks::record`] of a change made on `base` (the version it replaced).
    pub fn record_on(
        &self,
        kind: &str,
        key: &Key,
        object: Option<&Value>,
        base: Option<&Value>,
    ) -> Op {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let name = format!("{n:020}");
        let mut rec = json!({
            "metadata": {"name": name},
            "kind": kind,
            "key": {"resource": key.resource, "tenant": key.tenant, "namespace": key.namespace, "name": key.name},
            "object": object.cloned().unwrap_or(Value::Null),
        });
        if let Some(b) = base {
            rec["base"] = b.clone();
        }
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
            Write::Create(obj) => self.admit_create(res, obj),
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
            // A site binds its own pods and the pods the cloud placed on it, to its own nodes.
            Write::Bind { current, node } => {
                let placed_here = current
                    .pointer("/metadata/annotations")
                    .and_then(|a| a.get(proto::SITE_ANNOTATION))
                    .and_then(Value::as_str)
                    == Some(self.site.as_str());
                let ours = self
                    .store
                    .get(&Key::new("nodes", "", "", node))
                    .is_some_and(|v| node_site(&v) == Some(self.site.as_str()));
                if !ours {
                    Err(ApiError::forbidden_msg(format!(
                        "pods cannot be bound to node {node:?} at edge site {}: it is not one of the site's nodes",
                        self.site
                    )))
                } else if self.owned(current) || placed_here {
                    Ok(())
                } else {
                    Err(self.refuse(res, current, "bind it"))
                }
            }
        }
    }

    fn tenant(&self, tenant: &str, verb: &str) -> ApiResult<()> {
        let writes = !matches!(verb, "get" | "list" | "watch");
        if writes
            && self
                .store
                .get(&Key::new("tenants", "", "", tenant))
                .is_none()
        {
            return Err(ApiError::forbidden_msg(format!(
                "edge site {} does not serve tenant {tenant:?}: write to it at the cloud",
                self.site
            )));
        }
        Ok(())
    }

    fn also(&self, _res: &Resource, w: &Committing<'_>) -> Vec<Op> {
        let key = w.key;
        // Node leases are the site's own business: the edge judges node health locally.
        if key.resource == LEASES {
            return Vec::new();
        }
        match w.new {
            None => vec![self.record("Delete", key, None)],
            Some(v) if w.status => vec![self.record("Status", key, Some(v))],
            // A binding goes up as the site's own pod, or as a binding of a placed one.
            Some(v) if w.bind => {
                let kind = if self.owned(v) { "Put" } else { "Bind" };
                vec![self.record(kind, key, Some(v))]
            }
            // A node edit goes up with the version it was made on: the cloud applies only the
            // fields the site changed.
            Some(v) if self.owned(v) && key.resource == "nodes" => {
                vec![self.record_on("Put", key, Some(v), w.old)]
            }
            Some(v) if self.owned(v) => vec![self.record("Put", key, Some(v))],
            Some(_) => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use apiserver::api::{component, Api, ApiConfig, Writer};
    use std::sync::Arc;

    /// The site's API with one node of its own (`n1`) and one of another site (`x1`).
    async fn site() -> (Store, Writer) {
        let s = Store::memory(1000).await.expect("store");
        apiserver::bootstrap::system_namespaces(&s)
            .await
            .expect("namespaces");
        for (n, site) in [("n1", "s1"), ("x1", "s2")] {
            let node = json!({"apiVersion": "v1", "kind": "Node",
                "metadata": {"name": n, "labels": {proto::SITE_LABEL: site}}});
            s.put(Key::new("nodes", "", "", n), node, Precondition::Absent)
                .await
                .expect("node");
        }
        let hooks: Arc<dyn Hooks> = Arc::new(EdgeHooks::new("s1", s.clone(), 0));
        let api = Api::with_hooks(s.clone(), ApiConfig::default(), Some(hooks));
        (s.clone(), Writer::new(api, component("atoll-scheduler")))
    }

    fn pod(name: &str, annotations: Value) -> Value {
        json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "default", "uid": format!("u-{name}"),
                "annotations": annotations},
            "spec": {"containers": [{"name": "c", "image": "i"}]}})
    }

    fn outbox(s: &Store) -> Vec<String> {
        s.list_of(OUTBOX, None)
            .iter()
            .map(|(_, r)| {
                format!(
                    "{} {}",
                    r["kind"].as_str().unwrap_or(""),
                    r["key"]["name"].as_str().unwrap_or("")
                )
            })
            .collect()
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn bindings_go_to_the_sites_nodes_only_and_up_through_the_outbox() {
        let (s, w) = site().await;
        // A pod the cloud placed here, stored as the downlink stores it.
        let k = Key::new("pods", "", "default", "placed");
        s.put(
            k.clone(),
            pod("placed", json!({ proto::SITE_ANNOTATION: "s1" })),
            Precondition::Absent,
        )
        .await
        .expect("pod");
        let placed = s.get(&k).expect("pod");
        let e = w.bind_with(&k, &placed, "x1", None).await.expect_err("x1");
        assert_eq!(e.code, 403, "{}", e.message);
        assert!(
            e.message.contains("not one of the site's nodes"),
            "{}",
            e.message
        );
        w.bind_with(&k, &placed, "n1", None).await.expect("n1");
        assert_eq!(s.get(&k).expect("pod")["spec"]["nodeName"], json!("n1"));
        assert_eq!(outbox(&s), vec!["Bind placed".to_string()]);
        // A pod of the cloud's that was not placed here is not the site's to bind.
        let k2 = Key::new("pods", "", "default", "elsewhere");
        s.put(
            k2.clone(),
            pod("elsewhere", json!({ proto::SITE_ANNOTATION: "s2" })),
            Precondition::Absent,
        )
        .await
        .expect("pod");
        let other = s.get(&k2).expect("pod");
        let e = w
            .bind_with(&k2, &other, "n1", None)
            .await
            .expect_err("not ours");
        assert_eq!(e.code, 403, "{}", e.message);
        // A pod created here binds to its own node and goes up whole, with its event.
        let k3 = Key::new("pods", "", "default", "local");
        w.create(&k3, pod("local", json!({})))
            .await
            .expect("create");
        let local = s.get(&k3).expect("pod");
        let ev = json!({"apiVersion": "v1", "kind": "Event",
            "metadata": {"name": "local.1", "namespace": "default"},
            "involvedObject": {"kind": "Pod", "name": "local", "namespace": "default"},
            "reason": "Scheduled", "message": "m", "type": "Normal"});
        w.bind_with(
            &k3,
            &local,
            "n1",
            Some((Key::new("events", "", "default", "local.1"), ev)),
        )
        .await
        .expect("bind");
        let ups = outbox(&s);
        assert!(ups.contains(&"Put local".to_string()), "{ups:?}");
        assert!(ups.contains(&"Put local.1".to_string()), "{ups:?}");
        assert_eq!(
            proto::origin(
                &s.get(&Key::new("events", "", "default", "local.1"))
                    .expect("event")
            ),
            Some("s1")
        );
    }
}
