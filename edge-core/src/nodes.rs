//! Node lifecycle at the site: a node whose agent stopped renewing its Lease is marked
//! `Ready=Unknown` (kubectl shows NotReady) here, and — through the outbox — at the cloud.
//! The site judges its own nodes, so a site that is merely disconnected from the cloud never
//! has its nodes written off by the cloud.

use std::sync::Arc;
use std::time::Duration;

use apiserver::api::Hooks;
use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use store::{Key, Op, Precondition, Scope, Store};
use tokio_util::sync::CancellationToken;

use crate::hooks::EdgeHooks;

/// How long a node may go without renewing its Lease before it is NotReady.
pub const GRACE: Duration = Duration::from_secs(30);
/// How often nodes are checked (so NotReady shows within GRACE + PERIOD = 35 s).
pub const PERIOD: Duration = Duration::from_secs(5);

fn time(v: Option<&Value>) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(v?.as_str()?)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// One pass: returns the nodes it marked.
pub async fn check(store: &Store, hooks: &EdgeHooks, now: DateTime<Utc>) -> Vec<String> {
    let Some(res) = apiserver::resources::find("", "v1", "nodes") else {
        return Vec::new();
    };
    let (_, nodes) = store.list(
        &Scope {
            resource: "nodes".into(),
            tenant: Some(String::new()),
            namespace: None,
        },
        None,
    );
    let mut marked = Vec::new();
    for (key, node) in nodes {
        let lease = store.get(&Key::new(
            "leases.coordination.k8s.io",
            "",
            "kube-node-lease",
            &key.name,
        ));
        let last = lease
            .as_ref()
            .and_then(|l| time(l.pointer("/spec/renewTime")))
            .or_else(|| time(node.pointer("/metadata/creationTimestamp")));
        let Some(last) = last else { continue };
        if (now - last).to_std().unwrap_or_default() < GRACE {
            continue;
        }
        let conds = node
            .pointer("/status/conditions")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let ready = conds
            .iter()
            .find(|c| c.get("type").and_then(Value::as_str) == Some("Ready"));
        if ready.and_then(|c| c.get("status")).and_then(Value::as_str) == Some("Unknown") {
            continue;
        }
        let ts = now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let mut n = (*node).clone();
        let mut new_conds: Vec<Value> = conds
            .iter()
            .map(|c| {
                let mut c = c.clone();
                c["status"] = json!("Unknown");
                c["reason"] = json!("NodeStatusUnknown");
                c["message"] = json!("Kubelet stopped posting node status.");
                c["lastTransitionTime"] = json!(ts);
                c
            })
            .collect();
        if ready.is_none() {
            new_conds.push(json!({"type": "Ready", "status": "Unknown", "reason": "NodeStatusUnknown", "message": "Kubelet never posted node status.", "lastTransitionTime": ts}));
        }
        n["status"]["conditions"] = json!(new_conds);
        let rv = store::object_rv(&node).unwrap_or(0);
        let mut ops = hooks.also(
            res,
            &apiserver::api::Committing {
                key: &key,
                old: Some(&node),
                new: Some(&n),
                status: true,
                bind: false,
            },
        );
        ops.insert(
            0,
            Op::Put {
                key: key.clone(),
                value: n,
                pre: Precondition::Version(rv),
            },
        );
        if store.commit(ops).await.is_ok() {
            tracing::warn!(node = %key.name, "node stopped renewing its lease: marked NotReady");
            marked.push(key.name.clone());
        }
    }
    marked
}

/// Run until cancelled.
pub async fn run(store: Store, hooks: Arc<EdgeHooks>, cancel: CancellationToken) {
    loop {
        tokio::select! { _ = cancel.cancelled() => return, _ = tokio::time::sleep(PERIOD) => {} }
        check(&store, &hooks, Utc::now()).await;
    }
}
