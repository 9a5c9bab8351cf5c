//! Atoll's object model: the Kubernetes types it serves (re-exported from k8s-openapi) and
//! Atoll's own API types (`Tenant`, `EdgeSite`).
//!
//! No I/O and no async runtime live here: this crate is shared by every tier.

mod cause;
pub mod logs;
pub mod names;
pub mod query;
pub mod selectors;
pub mod stream;
pub mod sync;
#[cfg(feature = "tls")]
pub mod tls;
mod units;
pub mod usage;
pub mod vm;

pub use cause::Cause;
pub use units::quantity;

pub use k8s_openapi;
pub use k8s_openapi::api::core::v1 as core;
pub use k8s_openapi::apimachinery::pkg::apis::meta::v1 as meta;

use serde::{Deserialize, Serialize};

/// API group of Atoll's edge types.
pub const EDGE_GROUP: &str = "edge.atoll.io";
/// Label every Node at an edge site carries.
pub const SITE_LABEL: &str = "atoll.io/site";
/// Annotation on objects created at an edge site, naming the site that owns them. The cloud
/// and the edge must agree on it: it decides who may write an object and what syncs where.
pub const ORIGIN: &str = "edge.atoll.io/origin";
/// The kinds (plural names) a site may create and report up, in the tenants it serves: the
/// cloud refuses any other kind from a site, and so does the site's own API.
pub const SITE_CREATABLE: &[&str] = &[
    "pods",
    "configmaps",
    "secrets",
    "serviceaccounts",
    "events",
    "nodes",
];
/// Subject organization of the client certificates the region issues to sites (CN: the site).
pub const SITE_CERT_ORG: &str = "atoll:sites";
/// Subject organization of the region's own client certificates (the kubelet client).
pub const CONTROL_PLANE_ORG: &str = "atoll:control-plane";

/// The site an object was created at, if any (its [`ORIGIN`] annotation).
pub fn origin(v: &serde_json::Value) -> Option<&str> {
    v.pointer("/metadata/annotations")?.get(ORIGIN)?.as_str()
}

/// The system space: the tenant of system objects (nodes, tenants, edge sites).
pub const SYSTEM_TENANT: &str = "";

/// A tenant: a virtual cluster with its own space of namespaces and objects (Arktos model).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "schema", schemars(rename = "io.atoll.api.core.v1.Tenant"))]
pub struct Tenant {
    /// APIVersion: always `v1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    /// Kind: always `Tenant`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Standard object metadata.
    #[serde(default)]
    pub metadata: meta::ObjectMeta,
    /// Desired state of the tenant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec: Option<TenantSpec>,
    /// Observed state of the tenant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<TenantStatus>,
}

/// Desired state of a tenant.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
#[cfg_attr(
    feature = "schema",
    schemars(rename = "io.atoll.api.core.v1.TenantSpec")
)]
pub struct TenantSpec {
    /// The storage partition that holds this tenant's space (Arktos' tenant partitions): a
    /// partition name the region was started with (`system` for the system cluster). Set at
    /// creation (by the region's placement when not given) and never changed; absent on a
    /// tenant created before the region had partitions, which lives in the system cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_cluster_id: Option<String>,
    /// Another name for `storageClusterId` accepted on create (folded into it; never stored).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_cluster: Option<String>,
}

/// Observed state of a tenant.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
#[cfg_attr(
    feature = "schema",
    schemars(rename = "io.atoll.api.core.v1.TenantStatus")
)]
pub struct TenantStatus {
    /// `Active`, or `Terminating` while the tenant's space is being removed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
}

/// An edge site federated into the region (cluster-scoped, system space).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "schema", schemars(rename = "io.atoll.edge.v1.EdgeSite"))]
pub struct EdgeSite {
    /// APIVersion: always `edge.atoll.io/v1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    /// Kind: always `EdgeSite`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Standard object metadata.
    #[serde(default)]
    pub metadata: meta::ObjectMeta,
    /// Desired state of the site.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec: Option<EdgeSiteSpec>,
    /// Observed state of the site, written by the cloud's sync hub.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<EdgeSiteStatus>,
}

/// Desired state of an edge site.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "schema", schemars(rename = "io.atoll.edge.v1.EdgeSiteSpec"))]
pub struct EdgeSiteSpec {
    /// Taints of the whole site: pods that do not tolerate them are not placed there.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub taints: Vec<core::Taint>,
    /// Tenants allowed to place pods at this site; empty allows every tenant.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_tenants: Vec<String>,
}

/// Observed state of an edge site.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
#[cfg_attr(
    feature = "schema",
    schemars(rename = "io.atoll.edge.v1.EdgeSiteStatus")
)]
pub struct EdgeSiteStatus {
    /// Conditions of the site; `Connected` says whether its sync channel is up.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<meta::Condition>,
    /// When the cloud last heard from the site.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seen: Option<meta::Time>,
    /// The last resourceVersion of the site's share the site has applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied_version: Option<String>,
    /// Number of nodes at the site.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_count: Option<i32>,
    /// Allocatable capacity summed over the site's ready nodes.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub capacity:
        std::collections::BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>,
    /// What the site reports for scheduling: classes of identical ready nodes with the largest
    /// free resources of any one of them, and totals (sent by the site when it changes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<serde_json::Value>,
}

/// Annotation on a pod the cloud scheduler placed on a site: the site's scheduler binds it.
pub const SITE_ANNOTATION: &str = "atoll.io/site";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_round_trips_unknown_free_json() {
        let json = serde_json::json!({"apiVersion": "v1", "kind": "Tenant",
            "metadata": {"name": "acme"}, "spec": {"storageClusterId": "0"}});
        let t: Tenant = serde_json::from_value(json.clone()).unwrap();
        assert_eq!(t.metadata.name.as_deref(), Some("acme"));
        assert_eq!(serde_json::to_value(&t).unwrap(), json);
    }
}
