//! The resources Atoll serves: one table drives discovery, routing, OpenAPI and authorization.

/// The pseudo-tenant of cross-tenant reads (`/api/v1/tenants/all/pods`); no tenant may take it.
pub const ALL_TENANTS: &str = "all";

/// Who may address a resource.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Space {
    /// Lives in every tenant's space (namespaces, pods, configmaps, ...).
    Tenant,
    /// Lives only in the system space; tenant users get 403 (nodes, tenants, edge sites).
    System,
}

/// Static description of one served resource.
#[derive(Debug, PartialEq)]
pub struct Resource {
    /// API group (`""` for core).
    pub group: &'static str,
    /// API version.
    pub version: &'static str,
    /// Kind.
    pub kind: &'static str,
    /// Plural (URL) name.
    pub plural: &'static str,
    /// Singular name.
    pub singular: &'static str,
    /// Namespaced or cluster-scoped.
    pub namespaced: bool,
    /// Which spaces it lives in.
    pub space: Space,
    /// Short names for kubectl.
    pub short_names: &'static [&'static str],
    /// Categories (`all`).
    pub categories: &'static [&'static str],
    /// Subresources served (`status`, `token`, ...).
    pub subresources: &'static [&'static str],
    /// The OpenAPI schema name of the kind.
    pub schema: &'static str,
    /// Whether `metadata.generation` tracks spec changes (and status is a subresource).
    pub has_status: bool,
}

impl Resource {
    /// Key prefix used by the store: plural, qualified by group when not core.
    pub fn store_name(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_string()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }
    /// `v1` or `group/version`.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }
    /// `PodList`.
    pub fn list_kind(&self) -> String {
        format!("{}List", self.kind)
    }
}

macro_rules! res {
    ($group:expr, $version:expr, $kind:expr, $plural:expr, $singular:expr, $ns:expr, $space:expr, $short:expr, $cat:expr, $sub:expr, $schema:expr, $status:expr) => {
        Resource {
            group: $group,
            version: $version,
            kind: $kind,
            plural: $plural,
            singular: $singular,
            namespaced: $ns,
            space: $space,
            short_names: $short,
            categories: $cat,
            subresources: $sub,
            schema: $schema,
            has_status: $status,
        }
    };
}

/// Every served resource.
pub static RESOURCES: &[Resource] = &[
    res!(
        "",
        "v1",
        "Namespace",
        "namespaces",
        "namespace",
        false,
        Space::Tenant,
        &["ns"],
        &[],
        &["status", "finalize"],
        "io.k8s.api.core.v1.Namespace",
        true
    ),
    res!(
        "",
        "v1",
        "Pod",
        "pods",
        "pod",
        true,
        Space::Tenant,
        &["po"],
        &["all"],
        &[
            "status",
            "binding",
            "log",
            "exec",
            "attach",
            "portforward",
            "eviction",
            "resize"
        ],
        "io.k8s.api.core.v1.Pod",
        true
    ),
    res!(
        "",
        "v1",
        "Node",
        "nodes",
        "node",
        false,
        Space::System,
        &["no"],
        &[],
        &["status"],
        "io.k8s.api.core.v1.Node",
        true
    ),
    res!(
        "",
        "v1",
        "Service",
        "services",
        "service",
        true,
        Space::Tenant,
        &["svc"],
        &["all"],
        &["status"],
        "io.k8s.api.core.v1.Service",
        true
    ),
    res!(
        "",
        "v1",
        "Endpoints",
        "endpoints",
        "endpoints",
        true,
        Space::Tenant,
        &["ep"],
        &[],
        &[],
        "io.k8s.api.core.v1.Endpoints",
        false
    ),
    res!(
        "discovery.k8s.io",
        "v1",
        "EndpointSlice",
        "endpointslices",
        "endpointslice",
        true,
        Space::Tenant,
        &[],
        &[],
        &[],
        "io.k8s.api.discovery.v1.EndpointSlice",
        false
    ),
    res!(
        "",
        "v1",
        "ConfigMap",
        "configmaps",
        "configmap",
        true,
        Space::Tenant,
        &["cm"],
        &[],
        &[],
        "io.k8s.api.core.v1.ConfigMap",
        false
    ),
    res!(
        "",
        "v1",
        "Secret",
        "secrets",
        "secret",
        true,
        Space::Tenant,
        &[],
        &[],
        &[],
        "io.k8s.api.core.v1.Secret",
        false
    ),
    res!(
        "",
        "v1",
        "ServiceAccount",
        "serviceaccounts",
        "serviceaccount",
        true,
        Space::Tenant,
        &["sa"],
        &[],
        &["token"],
        "io.k8s.api.core.v1.ServiceAccount",
        false
    ),
    res!(
        "",
        "v1",
        "Event",
        "events",
        "event",
        true,
        Space::Tenant,
        &["ev"],
        &[],
        &[],
        "io.k8s.api.core.v1.Event",
        false
    ),
    res!(
        "",
        "v1",
        "Tenant",
        "tenants",
        "tenant",
        false,
        Space::System,
        &["te"],
        &[],
        &["token"],
        "io.atoll.api.core.v1.Tenant",
        true
    ),
    res!(
        "coordination.k8s.io",
        "v1",
        "Lease",
        "leases",
        "lease",
        true,
        Space::Tenant,
        &[],
        &[],
        &[],
        "io.k8s.api.coordination.v1.Lease",
        false
    ),
    res!(
        "edge.atoll.io",
        "v1",
        "EdgeSite",
        "edgesites",
        "edgesite",
        false,
        Space::System,
        &["es"],
        &[],
        &["status", "token"],
        "io.atoll.edge.v1.EdgeSite",
        true
    ),
    res!(
        "apps",
        "v1",
        "Deployment",
        "deployments",
        "deployment",
        true,
        Space::Tenant,
        &["deploy"],
        &["all"],
        &["status", "scale"],
        "io.k8s.api.apps.v1.Deployment",
        true
    ),
    res!(
        "apps",
        "v1",
        "ReplicaSet",
        "replicasets",
        "replicaset",
        true,
        Space::Tenant,
        &["rs"],
        &["all"],
        &["status", "scale"],
        "io.k8s.api.apps.v1.ReplicaSet",
        true
    ),
    res!(
        "apps",
        "v1",
        "DaemonSet",
        "daemonsets",
        "daemonset",
        true,
        Space::Tenant,
        &["ds"],
        &["all"],
        &["status"],
        "io.k8s.api.apps.v1.DaemonSet",
        true
    ),
    res!(
        "batch",
        "v1",
        "Job",
        "jobs",
        "job",
        true,
        Space::Tenant,
        &[],
        &["all"],
        &["status"],
        "io.k8s.api.batch.v1.Job",
        true
    ),
    res!(
        "batch",
        "v1",
        "CronJob",
        "cronjobs",
        "cronjob",
        true,
        Space::Tenant,
        &["cj"],
        &["all"],
        &["status"],
        "io.k8s.api.batch.v1.CronJob",
        true
    ),
    res!(
        "apps",
        "v1",
        "ControllerRevision",
        "controllerrevisions",
        "controllerrevision",
        true,
        Space::Tenant,
        &[],
        &[],
        &[],
        "io.k8s.api.apps.v1.ControllerRevision",
        false
    ),
];

/// Look a resource up by group, version and plural.
pub fn find(group: &str, version: &str, plural: &str) -> Option<&'static Resource> {
    RESOURCES
        .iter()
        .find(|r| r.group == group && r.version == version && r.plural == plural)
}

/// Look a resource up by its store name (`pods`, `deployments.apps`).
pub fn by_store_name(store_name: &str) -> Option<&'static Resource> {
    RESOURCES.iter().find(|r| r.store_name() == store_name)
}

/// Look a resource up by kind.
pub fn by_kind(group: &str, kind: &str) -> Option<&'static Resource> {
    RESOURCES
        .iter()
        .find(|r| r.group == group && r.kind == kind)
}

/// The groups (other than core) with their versions, in a stable order.
pub fn groups() -> Vec<(&'static str, &'static str)> {
    let mut out: Vec<(&str, &str)> = Vec::new();
    for r in RESOURCES {
        if !r.group.is_empty() && !out.contains(&(r.group, r.version)) {
            out.push((r.group, r.version));
        }
    }
    out
}
