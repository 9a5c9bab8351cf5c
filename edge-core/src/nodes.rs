//! Node lifecycle at the site: a node whose agent stopped renewing its Lease is marked
//! `Ready=Unknown` (kubectl shows NotReady) here, and — through the outbox — at the cloud.
//! The site judges its own nodes, so a site that is merely disconnected from the cloud never
//! has its nodes written off by the cloud.

use std::sync::Arc;
use std::time::Duration;

use apiserver::api::{component, Api, Writer};
use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use store::{Key, Scope};
use tokio_util::sync::CancellationToken;

/// How long a node may go without renewing its Lease before it is NotReady.
pub const GRACE: Duration = Duration::from_secs(30);
/// How often nodes are checked (so NotReady shows within GRACE + PERIOD = 35 s).
pub const PERIOD: Duration = Duration::from_secs(5);

fn time(v: Option<&Value>) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(v?.as_str()?)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// The identity the site's node lifecycle writes under (kube-controller-manager's name).
pub const IDENTITY: &str = "node-controller";

/// One pass: returns the nodes it marked. Marks go through the site's API as status writes
/// (the hooks put them in the outbox for the cloud).
pub async fn check(writer: &Writer, now: DateTime<Utc>) -> Vec<String> {
    let store = writer.store();
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
        match writer.update(&key, &node, n, true).await {
            Ok(_) => {
                tracing::warn!(node = %key.name, "node stopped renewing its lease: marked NotReady");
                marked.push(key.name.clone());
            }
            Err(e) => {
                tracing::debug!(node = %key.name, error = %e.message, "node mark not written")
            }
        }
    }
    marked
}

/// Run until cancelled.
pub async fn run(api: Arc<Api>, cancel: CancellationToken) {
    let writer = Writer::new(api, component(IDENTITY));
    loop {
        tokio::select! { _ = cancel.cancelled() => return, _ = tokio::time::sleep(PERIOD) => {} }
        check(&writer, Utc::now()).await;
    }
}
