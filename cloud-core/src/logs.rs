//! Pod logs at the cloud: a pod on an edge site's node is read through that site, tunnelled
//! over its live sync connection ([`Hub::open_logs`]); a pod on a cloud node (no site label)
//! straight from the node's agent, presenting the cloud's kubelet-client certificate.

use std::sync::Arc;

use apiserver::error::{ApiError, ApiResult};
use apiserver::logs::{AgentLogs, BoxFuture, LogSource, LogStream, LogTarget};
use serde_json::Value;
use store::{Key, Store};

use crate::hub::{Hub, SITE_LABEL};

/// The cloud's log source.
pub struct CloudLogs {
    store: Store,
    hub: Arc<Hub>,
    direct: AgentLogs,
}

impl CloudLogs {
    /// Logs through `hub` for site nodes, from agents with `cert_pem`/`key_pem` otherwise.
    pub fn new(store: Store, hub: Arc<Hub>, cert_pem: Vec<u8>, key_pem: Vec<u8>) -> Self {
        let direct = AgentLogs::new(
            store.clone(),
            Arc::new(move || (cert_pem.clone(), key_pem.clone())),
        );
        CloudLogs { store, hub, direct }
    }

    async fn stream(&self, target: LogTarget) -> ApiResult<LogStream> {
        let node = self
            .store
            .get(&Key::new("nodes", "", "", &target.node))
            .ok_or_else(|| ApiError::not_found("", "nodes", &target.node))?;
        let site = node
            .pointer("/metadata/labels")
            .and_then(|l| l.get(SITE_LABEL))
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty());
        match site {
            Some(site) => {
                let req = target
                    .opts
                    .to_proto(&target.tenant, &target.namespace, &target.pod);
                self.hub.open_logs(site, req).await
            }
            None => self.direct.fetch(&target).await,
        }
    }
}

impl LogSource for CloudLogs {
    fn open(&self, target: LogTarget) -> BoxFuture<'_, ApiResult<LogStream>> {
        Box::pin(self.stream(target))
    }
}
