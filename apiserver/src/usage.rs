//! `metrics.k8s.io/v1beta1` (what `kubectl top` reads): NodeMetrics and PodMetrics served from
//! the node agents' usage samples (`proto::usage`), with no metrics-server to install. A core
//! plugs in where samples come from ([`UsageSource`]); what a source returns is checked against
//! the store (a node reports only itself, and only pods bound to it under their tenant).

use std::collections::HashMap;

use bytes::Bytes;
use proto::usage::NodeUsage;
use serde_json::{json, Value};
use store::{Key, Store};

use crate::auth::Identity;
use crate::error::{ApiError, ApiResult};
use crate::logs::{AgentLogs, BoxFuture, LogStream};
use proto::query::Query;
use proto::selectors::LabelSelector;

/// The group and version.
pub const GROUP: &str = "metrics.k8s.io";
/// The version served.
pub const VERSION: &str = "v1beta1";

/// Where a server gets its nodes' usage samples.
pub trait UsageSource: Send + Sync {
    /// The latest sample of every node it reaches (unreachable nodes are left out).
    fn nodes(&self) -> BoxFuture<'_, Vec<NodeUsage>>;

    /// The samples of one site's nodes, reached from here (never through another replica):
    /// what a replica answers another's relay with. `None`: this source has no sites.
    fn site(&self, _site: &str) -> BoxFuture<'_, Option<ApiResult<Vec<NodeUsage>>>> {
        Box::pin(async { None })
    }
}

/// The path of a replica's usage relay (system administrators only): `GET USAGE_RELAY_PATH
/// ?site=S` answers the samples of site S's nodes as JSON, when this replica holds the site.
pub const USAGE_RELAY_PATH: &str = "/atoll/v1/usage";

/// Read a stats document from `rx`, up to [`proto::usage::MAX_STATS`].
pub async fn collect(mut rx: LogStream) -> ApiResult<Bytes> {
    let mut buf = bytes::BytesMut::new();
    while let Some(b) = rx.recv().await {
        if buf.len() + b.len() > proto::usage::MAX_STATS {
            return Err(ApiError::from_code(502, "usage document too large"));
        }
        buf.extend_from_slice(&b);
    }
    Ok(buf.freeze())
}

/// A sample of `node` from `body`, if it is one (and is that node's).
pub fn parse(node: &str, body: &[u8]) -> Option<NodeUsage> {
    let u: NodeUsage = serde_json::from_slice(body).ok()?;
    (u.node == node).then_some(u)
}

impl AgentLogs {
    /// The latest usage sample of `node`'s agent.
    pub async fn usage_of(&self, node: &str) -> ApiResult<NodeUsage> {
        let obj = self
            .store
            .get(&Key::new("nodes", "", "", node))
            .ok_or_else(|| ApiError::not_found("", "nodes", node))?;
        let addr = crate::logs::agent_endpoint(node, &obj)?;
        let (cert, key) = (self.cert)();
        let rx = crate::logs::fetch(addr, &cert, &key, "/stats", node).await?;
        let body = collect(rx).await?;
        parse(node, &body).ok_or_else(|| ApiError::from_code(502, "invalid usage document"))
    }

    /// The samples of `nodes`, in parallel, each within a few seconds.
    pub async fn usage_all(&self, nodes: Vec<String>) -> Vec<NodeUsage> {
        let calls = nodes.into_iter().map(|n| async move {
            match tokio::time::timeout(std::time::Duration::from_secs(5), self.usage_of(&n)).await {
                Ok(Ok(u)) => Some(u),
                Ok(Err(e)) => {
                    tracing::debug!(node = %n, error = %e.message, "no usage from the node");
                    None
                }
                Err(_) => None,
            }
        });
        futures_util::future::join_all(calls)
            .await
            .into_iter()
            .flatten()
            .collect()
    }
}

impl UsageSource for AgentLogs {
    fn nodes(&self) -> BoxFuture<'_, Vec<NodeUsage>> {
        Box::pin(async move {
            let names = self
                .store
                .list_of("nodes", Some(""))
                .into_iter()
                .map(|(k, _)| k.name)
                .collect();
            self.usage_all(names).await
        })
    }
}

/// The group as `/apis` lists it.
pub fn group() -> Value {
    json!({"name": GROUP, "versions": [{"groupVersion": format!("{GROUP}/{VERSION}"), "version": VERSION}],
        "preferredVersion": {"groupVersion": format!("{GROUP}/{VERSION}"), "version": VERSION}})
}

fn item_meta(name: &str, namespace: Option<&str>, labels: Option<&Value>) -> Value {
    let mut m = json!({"name": name, "creationTimestamp": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)});
    if let Some(ns) = namespace {
        m["namespace"] = json!(ns);
    }
    if let Some(l) = labels.filter(|l| l.is_object()) {
        m["labels"] = l.clone();
    }
    m
}

/// Answer a request under `/apis/metrics.k8s.io`, or `None` when `path` is not one.
pub async fn serve(
    store: &Store,
    source: Option<&dyn UsageSource>,
    id: &Identity,
    path: &str,
    query: &Query,
) -> Option<ApiResult<Value>> {
    let rest = path.strip_prefix("/apis/metrics.k8s.io")?;
    let segs: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
    Some(answer(store, source, id, &segs, query).await)
}

async fn answer(
    store: &Store,
    source: Option<&dyn UsageSource>,
    id: &Identity,
    segs: &[&str],
    query: &Query,
) -> ApiResult<Value> {
    let gv = format!("{GROUP}/{VERSION}");
    match segs {
        [] => {
            let mut g = group();
            g["kind"] = json!("APIGroup");
            g["apiVersion"] = json!("v1");
            return Ok(g);
        }
        [v] if *v == VERSION => {
            return Ok(
                json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": [
                    {"name": "nodes", "singularName": "", "namespaced": false, "kind": "NodeMetrics", "verbs": ["get", "list"]},
                    {"name": "pods", "singularName": "", "namespaced": true, "kind": "PodMetrics", "verbs": ["get", "list"]},
                ]}),
            );
        }
        _ => {}
    }
    let Some((&VERSION, rest)) = segs.split_first() else {
        return Err(ApiError::no_route(&format!(
            "/apis/{GROUP}/{}",
            segs.join("/")
        )));
    };
    let source = source.ok_or_else(|| ApiError::unavailable("this server has no usage figures"))?;
    let selector = LabelSelector::parse(query.get("labelSelector").unwrap_or(""))
        .map_err(ApiError::bad_request)?;
    let find = |plural| crate::resources::find("", "v1", plural);
    match rest {
        ["nodes"] | ["nodes", _] => {
            let nodes_res = find("nodes").ok_or_else(|| ApiError::internal("nodes"))?;
            let verb = if rest.len() == 2 { "get" } else { "list" };
            crate::auth::authorize(
                id,
                verb,
                nodes_res,
                "",
                None,
                rest.get(1).copied().unwrap_or(""),
            )?;
            let samples = source.nodes().await;
            let items: Vec<Value> =
                samples
                    .iter()
                    .filter(|u| rest.get(1).is_none_or(|n| *n == u.node))
                    .filter_map(|u| {
                        let obj = store.get(&Key::new("nodes", "", "", &u.node))?;
                        let labels = obj.pointer("/metadata/labels");
                        selector.matches(&obj).then(|| json!({
                        "metadata": item_meta(&u.node, None, labels),
                        "timestamp": u.timestamp, "window": format!("{}s", u.window_seconds),
                        "usage": u.usage.quantities(),
                    }))
                    })
                    .collect();
            if let Some(name) = rest.get(1) {
                let mut it = items
                    .into_iter()
                    .next()
                    .ok_or_else(|| ApiError::not_found(GROUP, "nodemetrics", name))?;
                it["kind"] = json!("NodeMetrics");
                it["apiVersion"] = json!(gv);
                return Ok(it);
            }
            Ok(json!({"kind": "NodeMetricsList", "apiVersion": gv, "metadata": {}, "items": items}))
        }
        ["pods"] | ["namespaces", _, "pods"] | ["namespaces", _, "pods", _] => {
            let pods_res = find("pods").ok_or_else(|| ApiError::internal("pods"))?;
            let (ns, name) = match rest {
                ["namespaces", ns, "pods", n] => (Some(*ns), Some(*n)),
                ["namespaces", ns, "pods"] => (Some(*ns), None),
                _ => (None, None),
            };
            let verb = if name.is_some() { "get" } else { "list" };
            crate::auth::authorize(id, verb, pods_res, &id.tenant, ns, name.unwrap_or(""))?;
            let samples = source.nodes().await;
            let mut items = Vec::new();
            for u in &samples {
                for p in &u.pods {
                    if p.tenant != id.tenant
                        || ns.is_some_and(|ns| ns != p.namespace)
                        || name.is_some_and(|n| n != p.name)
                    {
                        continue;
                    }
                    // Only a pod the store has bound to that node is the node's to report.
                    let Some(obj) = store.get(&Key::new("pods", &p.tenant, &p.namespace, &p.name))
                    else {
                        continue;
                    };
                    if obj.pointer("/spec/nodeName").and_then(Value::as_str)
                        != Some(u.node.as_str())
                    {
                        continue;
                    }
                    let labels = obj.pointer("/metadata/labels");
                    if !selector.matches(&obj) {
                        continue;
                    }
                    let declared: HashMap<&str, ()> = obj
                        .pointer("/spec/containers")
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                        .filter_map(|c| Some((c.get("name")?.as_str()?, ())))
                        .collect();
                    let containers: Vec<Value> = p
                        .containers
                        .iter()
                        .filter(|c| declared.contains_key(c.name.as_str()))
                        .map(|c| json!({"name": c.name, "usage": c.usage.quantities()}))
                        .collect();
                    items.push(json!({
                        "metadata": item_meta(&p.name, Some(&p.namespace), labels),
                        "timestamp": u.timestamp, "window": format!("{}s", u.window_seconds),
                        "containers": containers,
                    }));
                }
            }
            if let Some(n) = name {
                let mut it = items
                    .into_iter()
                    .next()
                    .ok_or_else(|| ApiError::not_found(GROUP, "podmetrics", n))?;
                it["kind"] = json!("PodMetrics");
                it["apiVersion"] = json!(gv);
                return Ok(it);
            }
            Ok(json!({"kind": "PodMetricsList", "apiVersion": gv, "metadata": {}, "items": items}))
        }
        _ => Err(ApiError::no_route(&format!(
            "/apis/{GROUP}/{}",
            segs.join("/")
        ))),
    }
}
