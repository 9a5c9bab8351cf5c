//! What each kind does, in one place: its strategy. The API, its validation and its delete and
//! patch paths ask a kind's [`Strategy`] instead of naming kinds; adding a kind means adding a
//! row to [`resources`](crate::resources) and, when it has rules of its own, a strategy here.
//! (The tables' cell code lives in [`table`](crate::table); field selector parsing and matching,
//! being pure, in `proto::selectors`, given the fields a strategy names.)

use serde_json::Value;

use crate::api::{
    cronjob_defaults, daemonset_defaults, deployment_defaults, job_defaults, namespace_companions,
    namespace_defaults, pod_defaults, replicaset_defaults, secret_defaults, tenant_companions,
    tenant_defaults, vm_mirror,
};
use crate::error::Cause;
use crate::resources::Resource;
use crate::{table, validate};

/// Typed decoding: `Err` carries the decoder's message.
pub type Decode = fn(&Value) -> Result<(), String>;

/// How a deletion of the kind proceeds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Deletion {
    /// Gone at once (unless finalizers hold it).
    Immediate,
    /// A pod on a node is given its grace period: its agent stops it and removes the object.
    GracefulOnNode,
    /// Terminating (phase and deletionTimestamp) until its contents are gone (namespaces,
    /// tenants), then removed by the lifecycle controller.
    Lifecycle,
}

/// A kind's strategy.
pub struct Strategy {
    /// `metadata.name` is an RFC 1123 label (else a subdomain).
    pub label_name: bool,
    /// Decode the whole object as its typed form (`None`: no typed form).
    pub decode: Option<Decode>,
    /// Decode a status alone (`None`: decode `{"status": ...}` as the whole object).
    pub decode_status: Option<Decode>,
    /// Defaults on create.
    pub defaults: Option<fn(&mut Value)>,
    /// The defaults apply again on every update (not through the status subresource).
    pub defaults_on_update: bool,
    /// What every write (create, update; not status) makes consistent: fields derived from
    /// others.
    pub normalize: Option<fn(&mut Value)>,
    /// The kind's own rules on a whole object.
    pub validate: Option<fn(&Value, &mut Vec<Cause>)>,
    /// Rules on an update (old, new): what may not change.
    pub validate_update: Option<fn(&Value, &Value, &mut Vec<Cause>)>,
    /// How deletion proceeds.
    pub deletion: Deletion,
    /// Strategic merge patches apply (Atoll's own kinds declare no merge keys).
    pub strategic_merge: bool,
    /// Objects created in the same transaction as a new one (tenant, name) → writes.
    pub companions: Option<fn(&str, &str) -> Vec<store::Op>>,
    /// Fields a field selector may name besides `metadata.name` and `metadata.namespace`.
    pub fields: &'static [&'static str],
    /// The `kubectl get` table.
    pub table: &'static table::Table,
}

const BASE: Strategy = Strategy {
    label_name: false,
    decode: None,
    decode_status: None,
    defaults: None,
    defaults_on_update: false,
    normalize: None,
    validate: None,
    validate_update: None,
    deletion: Deletion::Immediate,
    strategic_merge: true,
    companions: None,
    fields: &[],
    table: &table::DEFAULT,
};

fn typed<T: serde::de::DeserializeOwned>(v: &Value) -> Result<(), String> {
    T::deserialize(v).map(|_| ()).map_err(|e| e.to_string())
}

mod k {
    pub use k8s_openapi::api::apps::v1 as apps;
    pub use k8s_openapi::api::batch::v1 as batch;
    pub use k8s_openapi::api::coordination::v1 as coord;
    pub use k8s_openapi::api::core::v1 as core;
}

static PODS: Strategy = Strategy {
    decode: Some(typed::<k::core::Pod>),
    decode_status: Some(typed::<k::core::PodStatus>),
    defaults: Some(pod_defaults),
    normalize: Some(vm_mirror),
    validate: Some(validate::pod),
    validate_update: Some(validate::pod_spec_update),
    deletion: Deletion::GracefulOnNode,
    fields: &[
        "spec.nodeName",
        "spec.restartPolicy",
        "spec.schedulerName",
        "spec.serviceAccountName",
        "status.phase",
        "status.podIP",
        "status.nominatedNodeName",
    ],
    table: &table::PODS,
    ..BASE
};
static NODES: Strategy = Strategy {
    decode: Some(typed::<k::core::Node>),
    decode_status: Some(typed::<k::core::NodeStatus>),
    fields: &["spec.unschedulable"],
    table: &table::NODES,
    ..BASE
};
static NAMESPACES: Strategy = Strategy {
    label_name: true,
    decode: Some(typed::<k::core::Namespace>),
    defaults: Some(namespace_defaults),
    deletion: Deletion::Lifecycle,
    companions: Some(namespace_companions),
    fields: &["status.phase"],
    table: &table::LIFECYCLE,
    ..BASE
};
static SERVICES: Strategy = Strategy {
    decode: Some(typed::<k::core::Service>),
    defaults: Some(crate::services::service_defaults),
    defaults_on_update: true,
    validate: Some(crate::services::validate_service),
    validate_update: Some(crate::services::validate_service_update),
    table: &table::SERVICES,
    ..BASE
};
static ENDPOINTS: Strategy = Strategy {
    decode: Some(typed::<k::core::Endpoints>),
    table: &table::ENDPOINTS,
    ..BASE
};
static ENDPOINTSLICES: Strategy = Strategy {
    decode: Some(typed::<k8s_openapi::api::discovery::v1::EndpointSlice>),
    table: &table::ENDPOINTSLICES,
    ..BASE
};
static CONFIGMAPS: Strategy = Strategy {
    decode: Some(typed::<k::core::ConfigMap>),
    validate: Some(validate::configmap),
    table: &table::CONFIGMAPS,
    ..BASE
};
static SECRETS: Strategy = Strategy {
    decode: Some(typed::<k::core::Secret>),
    defaults: Some(secret_defaults),
    defaults_on_update: true,
    validate: Some(validate::secret),
    fields: &["type"],
    table: &table::SECRETS,
    ..BASE
};
static SERVICEACCOUNTS: Strategy = Strategy {
    decode: Some(typed::<k::core::ServiceAccount>),
    table: &table::SERVICEACCOUNTS,
    ..BASE
};
static EVENTS: Strategy = Strategy {
    decode: Some(typed::<k::core::Event>),
    validate: Some(validate::event),
    fields: &[
        "involvedObject.kind",
        "involvedObject.namespace",
        "involvedObject.name",
        "involvedObject.uid",
        "involvedObject.apiVersion",
        "involvedObject.resourceVersion",
        "involvedObject.fieldPath",
        "reason",
        "reportingComponent",
        "source",
        "type",
    ],
    table: &table::EVENTS,
    ..BASE
};
static LEASES: Strategy = Strategy {
    decode: Some(typed::<k::coord::Lease>),
    table: &table::LEASES,
    ..BASE
};
static TENANTS: Strategy = Strategy {
    label_name: true,
    decode: Some(typed::<proto::Tenant>),
    defaults: Some(tenant_defaults),
    deletion: Deletion::Lifecycle,
    strategic_merge: false,
    companions: Some(tenant_companions),
    table: &table::LIFECYCLE,
    ..BASE
};
static EDGESITES: Strategy = Strategy {
    label_name: true,
    decode: Some(typed::<proto::EdgeSite>),
    strategic_merge: false,
    table: &table::EDGESITES,
    ..BASE
};
static JOBS: Strategy = Strategy {
    decode: Some(typed::<k::batch::Job>),
    defaults: Some(job_defaults),
    defaults_on_update: true,
    validate: Some(crate::batch::validate_job),
    validate_update: Some(crate::batch::validate_job_update),
    table: &table::JOBS,
    ..BASE
};
static CRONJOBS: Strategy = Strategy {
    decode: Some(typed::<k::batch::CronJob>),
    defaults: Some(cronjob_defaults),
    defaults_on_update: true,
    validate: Some(crate::batch::validate_cronjob),
    table: &table::CRONJOBS,
    ..BASE
};
static DEPLOYMENTS: Strategy = Strategy {
    decode: Some(typed::<k::apps::Deployment>),
    defaults: Some(deployment_defaults),
    defaults_on_update: true,
    validate: Some(validate::deployment),
    validate_update: Some(validate::workload_update),
    table: &table::DEPLOYMENTS,
    ..BASE
};
static REPLICASETS: Strategy = Strategy {
    decode: Some(typed::<k::apps::ReplicaSet>),
    defaults: Some(replicaset_defaults),
    defaults_on_update: true,
    validate: Some(validate::replicaset),
    validate_update: Some(validate::workload_update),
    table: &table::REPLICASETS,
    ..BASE
};
static DAEMONSETS: Strategy = Strategy {
    decode: Some(typed::<k::apps::DaemonSet>),
    defaults: Some(daemonset_defaults),
    defaults_on_update: true,
    validate: Some(validate::daemonset),
    validate_update: Some(validate::workload_update),
    table: &table::DAEMONSETS,
    ..BASE
};
static CONTROLLERREVISIONS: Strategy = Strategy {
    decode: Some(typed::<k::apps::ControllerRevision>),
    table: &table::CONTROLLERREVISIONS,
    ..BASE
};
static OTHER: Strategy = BASE;

/// The strategy of `res`.
pub fn of(res: &Resource) -> &'static Strategy {
    match (res.group, res.plural) {
        ("", "pods") => &PODS,
        ("", "nodes") => &NODES,
        ("", "namespaces") => &NAMESPACES,
        ("", "configmaps") => &CONFIGMAPS,
        ("", "services") => &SERVICES,
        ("", "endpoints") => &ENDPOINTS,
        ("discovery.k8s.io", "endpointslices") => &ENDPOINTSLICES,
        ("", "secrets") => &SECRETS,
        ("", "serviceaccounts") => &SERVICEACCOUNTS,
        ("", "events") => &EVENTS,
        ("", "tenants") => &TENANTS,
        ("coordination.k8s.io", "leases") => &LEASES,
        (proto::EDGE_GROUP, "edgesites") => &EDGESITES,
        ("apps", "deployments") => &DEPLOYMENTS,
        ("batch", "jobs") => &JOBS,
        ("batch", "cronjobs") => &CRONJOBS,
        ("apps", "replicasets") => &REPLICASETS,
        ("apps", "daemonsets") => &DAEMONSETS,
        ("apps", "controllerrevisions") => &CONTROLLERREVISIONS,
        _ => &OTHER,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::RESOURCES;

    #[test]
    fn every_served_kind_with_a_typed_form_decodes_through_its_strategy() {
        for r in RESOURCES {
            let s = of(r);
            // Everything served has a typed form, so a wrong type is a 400, never stored.
            assert!(s.decode.is_some(), "{} has no typed decoding", r.plural);
            if s.defaults_on_update {
                assert!(s.defaults.is_some(), "{}", r.plural);
            }
        }
        // Every table's rows have as many cells as it has columns, whatever the object holds.
        let now = chrono::Utc::now();
        for obj in [
            serde_json::json!({}),
            serde_json::json!({"metadata": {"name": "a", "creationTimestamp": "2026-01-01T00:00:00Z"},
                "spec": {"containers": [{"name": "c", "image": "i"}]}, "status": {}}),
        ] {
            for r in RESOURCES {
                let t = of(r).table;
                assert_eq!((t.cells)(&obj, now).len(), t.columns.len(), "{}", r.plural);
            }
        }
        let pods = RESOURCES.iter().find(|r| r.plural == "pods").expect("pods");
        assert_eq!(of(pods).deletion, Deletion::GracefulOnNode);
        // The agents watch their node's pods by field selector.
        assert!(of(pods).fields.contains(&"spec.nodeName"));
        assert!((of(pods).decode.expect("decode"))(
            &serde_json::json!({"spec": {"containers": 5}})
        )
        .is_err());
    }
}
