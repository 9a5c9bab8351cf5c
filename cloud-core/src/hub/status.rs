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
        let me = self.api.config.advertise.as_str();
        for (k, v) in sites {
            let name = k.name.clone();
            let up = connected.get(&name);
            // A site connected to another replica of the region is that replica's to report,
            // while it keeps reporting (a replica that died stops refreshing lastSeen).
            if up.is_none() && held_elsewhere(&v, me) {
                continue;
            }
            let count = counts.get(&name).copied().unwrap_or(0);
            let mut n = (*v).clone();
            let old_status = v.get("status").cloned();
            let was = connected_condition(&v)
                .and_then(|c| c.get("status"))
                .and_then(Value::as_str)
                .map(String::from);
            let status = if up.is_some() { "True" } else { "False" };
            let transition = if was.as_deref() == Some(status) {
                connected_condition(&v)
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
                n["status"]["replica"] = json!(me);
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

/// An EdgeSite's `Connected` condition.
fn connected_condition(site: &Value) -> Option<&Value> {
    site.pointer("/status/conditions")
        .and_then(Value::as_array)
        .and_then(|c| c.iter().find(|c| c["type"] == "Connected"))
}

/// How long a replica's report of a site it holds stays authoritative without a refresh.
const REPORT_STALE: Duration = Duration::from_secs(30);

/// Whether `site`'s status is another live replica's to write: it names a replica other than
/// `me` that says the site is connected and refreshed that within [`REPORT_STALE`].
fn held_elsewhere(site: &Value, me: &str) -> bool {
    let holder = site.pointer("/status/replica").and_then(Value::as_str);
    let connected = connected_condition(site).is_some_and(|c| c["status"] == "True");
    let fresh = site
        .pointer("/status/lastSeen")
        .and_then(Value::as_str)
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .is_some_and(|t| {
            chrono::Utc::now().signed_duration_since(t).num_seconds()
                < REPORT_STALE.as_secs() as i64
        });
    holder.is_some_and(|h| h != me) && connected && fresh
}

#[cfg(test)]
mod tests {
    use super::*;

    fn site(replica: &str, connected: &str, seen: chrono::DateTime<chrono::Utc>) -> Value {
        json!({"status": {"replica": replica, "lastSeen": seen.to_rfc3339(),
            "conditions": [{"type": "Connected", "status": connected}]}})
    }

    #[test]
    fn another_live_replicas_site_is_left_to_it() {
        let now = chrono::Utc::now();
        assert!(held_elsewhere(&site("b:1", "True", now), "a:1"));
        assert!(!held_elsewhere(&site("a:1", "True", now), "a:1"), "mine");
        assert!(
            !held_elsewhere(&site("b:1", "False", now), "a:1"),
            "not connected"
        );
        let old = now - chrono::Duration::seconds(60);
        assert!(
            !held_elsewhere(&site("b:1", "True", old), "a:1"),
            "its replica stopped reporting"
        );
        assert!(!held_elsewhere(&json!({}), "a:1"), "never reported");
    }
}
