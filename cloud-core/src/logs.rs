//! Pod logs and exec/attach streams at the cloud: a pod on an edge site's node is read through that site, tunnelled
//! over its live sync connection ([`Hub::open_logs`]), or, when the site is connected to
//! another replica of the region (its EdgeSite's `status.replica`), through that replica's API;
//! a pod on a cloud node (no site label) straight from the node's agent, presenting the cloud's
//! kubelet-client certificate.

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
    relay: Relay,
}

/// How this replica reaches the others: its own API address (not to relay to itself), the
/// region CA their certificates chain to, and its admin token (valid at every replica: tokens
/// live in the shared store).
pub struct Relay {
    /// This replica's API address.
    pub me: String,
    /// The region CA (PEM).
    pub ca_pem: Vec<u8>,
    /// A system-admin token.
    pub token: String,
}

impl CloudLogs {
    /// Logs through `hub` for site nodes (or the replica holding the site, via `relay`), from
    /// agents with `cert_pem`/`key_pem` otherwise.
    pub fn new(
        store: Store,
        hub: Arc<Hub>,
        cert_pem: Vec<u8>,
        key_pem: Vec<u8>,
        relay: Relay,
    ) -> Self {
        let direct = AgentLogs::new(
            store.clone(),
            Arc::new(move || (cert_pem.clone(), key_pem.clone())),
        );
        CloudLogs {
            store,
            hub,
            direct,
            relay,
        }
    }

    /// The API address of the other replica holding `site`'s connection, if one does.
    fn holder(&self, site: &str) -> Option<std::net::SocketAddr> {
        let es = self
            .store
            .get(&Key::new(crate::hub::EDGESITES, "", "", site))?;
        let at = es.pointer("/status/replica").and_then(Value::as_str)?;
        (at != self.relay.me).then(|| at.parse().ok()).flatten()
    }

    /// `here` (what this replica got from `site`), or, when the site is not connected here but
    /// to another replica, what `relay` gets from that replica.
    async fn or_holder<T, F, Fut>(&self, site: &str, here: ApiResult<T>, relay: F) -> ApiResult<T>
    where
        F: FnOnce(std::net::SocketAddr) -> Fut,
        Fut: std::future::Future<Output = ApiResult<T>>,
    {
        match here {
            Err(e) if e.code == 503 => match self.holder(site) {
                Some(addr) => relay(addr).await,
                None => Err(e),
            },
            r => r,
        }
    }

    /// The API path of `target`'s log (the options as kube-apiserver takes them).
    fn api_path(target: &LogTarget) -> String {
        use apiserver::path::percent_encode;
        let space = if target.tenant.is_empty() {
            String::new()
        } else {
            format!("tenants/{}/", percent_encode(&target.tenant))
        };
        let q = target.opts.agent_query("");
        format!(
            "/api/v1/{space}namespaces/{}/pods/{}/log?container={}{}{q}",
            percent_encode(&target.namespace),
            percent_encode(&target.pod),
            percent_encode(&target.container),
            if q.is_empty() { "" } else { "&" },
        )
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
                let here = self.hub.open_logs(site, req).await;
                let path = Self::api_path(&target);
                self.or_holder(site, here, |addr| {
                    apiserver::logs::relay(addr, &self.relay.ca_pem, &self.relay.token, &path)
                })
                .await
            }
            None => self.direct.fetch(&target).await,
        }
    }
}

impl CloudLogs {
    /// exec, attach and port-forward connections: through the site's connection for a site's
    /// node (or, when another replica holds it, through that replica's relay endpoint, unless
    /// `relay` is off: a relayed request itself), straight to the agent for a cloud node.
    async fn container_stream(
        &self,
        target: apiserver::streams::StreamTarget,
        relay: bool,
    ) -> ApiResult<apiserver::streams::BoxPipe> {
        let node = self
            .store
            .get(&Key::new("nodes", "", "", &target.node))
            .ok_or_else(|| ApiError::not_found("", "nodes", &target.node))?;
        let site = node
            .pointer("/metadata/labels")
            .and_then(|l| l.get(SITE_LABEL))
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty());
        let Some(site) = site else {
            return self.direct.open_stream(&target).await;
        };
        let req = target
            .opts
            .to_proto(&target.tenant, &target.namespace, &target.pod);
        let here = self.hub.open_stream(site, req.clone()).await;
        if !relay {
            return here;
        }
        self.or_holder(site, here, |addr| {
            apiserver::logs::relay_stream(addr, &self.relay.ca_pem, &self.relay.token, &req)
        })
        .await
    }
}

impl apiserver::streams::StreamSource for CloudLogs {
    fn open(
        &self,
        target: apiserver::streams::StreamTarget,
    ) -> BoxFuture<'_, ApiResult<apiserver::streams::BoxPipe>> {
        Box::pin(self.container_stream(target, true))
    }

    fn open_here(
        &self,
        target: apiserver::streams::StreamTarget,
    ) -> BoxFuture<'_, ApiResult<apiserver::streams::BoxPipe>> {
        Box::pin(self.container_stream(target, false))
    }
}

impl apiserver::usage::UsageSource for CloudLogs {
    /// The site's nodes through its connection here, or (when another replica holds it)
    /// through that replica's usage relay.
    fn site(&self, site: &str) -> BoxFuture<'_, Option<ApiResult<Vec<proto::usage::NodeUsage>>>> {
        let site = site.to_string();
        Box::pin(async move { Some(self.hub.open_usage(&site).await) })
    }

    /// Cloud nodes from their agents; each site's nodes through the site (or the replica
    /// holding it), all at once.
    fn nodes(&self) -> BoxFuture<'_, Vec<proto::usage::NodeUsage>> {
        Box::pin(async move {
            let mut cloud_nodes = Vec::new();
            let mut sites = std::collections::BTreeSet::new();
            for (k, n) in self.store.list_of("nodes", Some("")) {
                match n
                    .pointer("/metadata/labels")
                    .and_then(|l| l.get(SITE_LABEL))
                    .and_then(Value::as_str)
                    .filter(|s| !s.is_empty())
                {
                    Some(s) => {
                        sites.insert(s.to_string());
                    }
                    None => cloud_nodes.push(k.name),
                }
            }
            let from_sites = futures_util::future::join_all(sites.iter().map(|s| async move {
                let here = self.hub.open_usage(s).await;
                let got = self
                    .or_holder(s, here, |addr| {
                        apiserver::logs::relay_usage(addr, &self.relay.ca_pem, &self.relay.token, s)
                    })
                    .await;
                match got {
                    Ok(v) => v,
                    Err(e) => {
                        tracing::debug!(site = %s, error = %e.message, "no usage from the site");
                        Vec::new()
                    }
                }
            }));
            let (mut all, sites) = tokio::join!(self.direct.usage_all(cloud_nodes), from_sites);
            all.extend(sites.into_iter().flatten());
            all
        })
    }
}

impl LogSource for CloudLogs {
    fn open(&self, target: LogTarget) -> BoxFuture<'_, ApiResult<LogStream>> {
        Box::pin(self.stream(target))
    }
}
