//! The EdgeSite status the hub keeps: connected, last seen, the applied uplink position.

use super::*;

impl Hub {
    /// Write every EdgeSite's status: Connected, last seen, node count, applied version.
    pub(super) async fn update_status(&self) {
        let sites = self.store.list_of(EDGESITES, Some(""));
        let nodes = self.store.list_of("nodes", Some(""));
        let connected = self.live.lock().map(|l| l.connected()).unwrap_or_default();
        let mut counts: HashMap<String, usize> = HashMap::new();
        for (_, n) in &nodes {
            if let Some(s) = node_site(n) {
                *counts.entry(s).or_default() += 1;
            }
        }
        for (k, v) in sites {
            let name = k.name.clone();
            let up = connected.get(&name);
            let count = counts.get(&name).copied().unwrap_or(0);
            let mut n = (*v).clone();
            let old_status = v.get("status").cloned();
            let was = v
                .pointer("/status/conditions")
                .and_then(Value::as_array)
                .and_then(|c| c.iter().find(|c| c["type"] == "Connected"))
                .and_then(|c| c.get("status"))
                .and_then(Value::as_str)
                .map(String::from);
            let status = if up.is_some() { "True" } else { "False" };
            let transition = if was.as_deref() == Some(status) {
                v.pointer("/status/conditions")
                    .and_then(Value::as_array)
                    .and_then(|c| c.iter().find(|c| c["type"] == "Connected"))
                    .and_then(|c| c.get("lastTransitionTime"))
                    .cloned()
                    .unwrap_or(json!(now_str()))
            } else {
                json!(now_str())
            };
            let reason = if up.is_some() {
                "SyncConnected"
            } else {
                "SyncDisconnected"
            };
            n["status"]["conditions"] = json!([{"type": "Connected", "status": status, "reason": reason, "message": "", "lastTransitionTime": transition}]);
            n["status"]["nodeCount"] = json!(count);
            if let Some(rv) = up {
                n["status"]["lastSeen"] = json!(now_str());
                if *rv > 0 {
                    n["status"]["appliedVersion"] = json!(rv.to_string());
                }
            }
            if n.get("status") == old_status.as_ref() {
                continue;
            }
            let rv = store::object_rv(&v).unwrap_or(0);
            let _ = self.store.put(k, n, Precondition::Version(rv)).await;
        }
    }
}
