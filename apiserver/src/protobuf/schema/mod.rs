//! Protobuf field tables for the Kubernetes types Atoll decodes (from Kubernetes' generated.proto).
//!
//! Transcribed from the upstream `generated.proto` files (core/v1 taken from a v1.35/v1.36-era
//! tree, so it is a superset of v1.32: a few newer fields are listed too; they are harmless
//! because clients only put them on the wire when set). Field numbers of fields that existed in
//! 2019 were machine-checked against an independent copy of the compiled descriptors, and every
//! JSON name, repetition and value type was machine-checked against the v1.32 Go/OpenAPI types.
//!
//! Conventions a decoder must follow:
//! * A field whose `json` is empty (`""`) is a Go embedded struct with `json:",inline"`
//!   (e.g. `ConfigMapKeySelector.localObjectReference`, `Probe.handler`, `Volume.volumeSource`,
//!   `EphemeralContainer.ephemeralContainerCommon`, `runtime.Unknown.typeMeta`): decode the nested
//!   message and merge its JSON keys into the parent object instead of nesting it.
//! * Field numbers not listed here (fields removed upstream, e.g. `ObjectMeta.clusterName = 15`)
//!   must be skipped, like Go's unmarshaller does.
//! * Repeated scalar fields (`repeated int32/int64`) are written unpacked by Kubernetes (proto2),
//!   but a decoder should accept the packed form as well.
//! * `int32` values are varints that may be sign-extended to 10 bytes; read them as `i64`.
//! * Map entries are messages `{key = 1, value = 2}`.
//! * The special messages (`meta.v1.Time`/`MicroTime`, `resource.Quantity`, `intstr.IntOrString`,
//!   `meta.v1.FieldsV1`, `meta.v1.Duration`, `runtime.RawExtension`) are listed with their real
//!   proto fields, but render to JSON specially (RFC 3339 string, quantity string, int-or-string,
//!   raw JSON object, duration string, raw embedded object).

/// How a field's value is encoded and rendered to JSON.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Kind {
    /// string
    Str,
    /// int32 / int64 (varint) rendered as a JSON number
    Int,
    /// bool
    Bool,
    /// bytes, rendered as base64 (like Go's []byte in JSON)
    Bytes,
    /// double (fixed64), rendered as a JSON number
    F64,
    /// a nested message, by full name
    Msg(&'static str),
    /// map<string,string>
    MapStr,
    /// map<string,bytes> (rendered as base64 values)
    MapBytes,
    /// map<string, message> (value message by full name, e.g. Quantity)
    MapMsg(&'static str),
}

/// One field of a message.
#[derive(Clone, Copy, Debug)]
pub struct Field {
    /// Protobuf field number.
    pub no: u32,
    /// JSON name. Empty for a Go embedded struct (`json:",inline"`): the nested message's
    /// JSON fields are merged into the parent object.
    pub json: &'static str,
    /// Encoding.
    pub kind: Kind,
    /// `repeated` (rendered as a JSON array).
    pub repeated: bool,
}

impl Field {
    /// True for a Go embedded struct (`json:",inline"`), whose fields merge into the parent.
    pub fn is_inline(&self) -> bool {
        self.json.is_empty()
    }
}

/// Looks up a message's fields by full name (e.g. "k8s.io.api.core.v1.Pod").
pub fn message(name: &str) -> Option<&'static [Field]> {
    all().find(|(n, _)| *n == name).map(|(_, f)| *f)
}

/// Every message: apimachinery's and the API groups' below, then core/v1's ([`core_v1`]).
pub fn all() -> impl Iterator<Item = &'static (&'static str, &'static [Field])> {
    MESSAGES.iter().chain(core_v1::MESSAGES.iter())
}

pub(super) const fn f(no: u32, json: &'static str, kind: Kind) -> Field {
    Field {
        no,
        json,
        kind,
        repeated: false,
    }
}

pub(super) const fn r(no: u32, json: &'static str, kind: Kind) -> Field {
    Field {
        no,
        json,
        kind,
        repeated: true,
    }
}

mod core_v1;

use self::Kind as K;

/// Messages by full name (e.g. "k8s.io.api.apps.v1.Deployment"), core/v1 apart.
#[rustfmt::skip]
pub static MESSAGES: &[(&str, &[Field])] = &[
    // ---- k8s.io.apimachinery.pkg.runtime ----
    ("k8s.io.apimachinery.pkg.runtime.RawExtension", &[
        f(1, "raw", K::Bytes),
    ]),
    ("k8s.io.apimachinery.pkg.runtime.TypeMeta", &[
        f(1, "apiVersion", K::Str),
        f(2, "kind", K::Str),
    ]),
    ("k8s.io.apimachinery.pkg.runtime.Unknown", &[
        f(1, "", K::Msg("k8s.io.apimachinery.pkg.runtime.TypeMeta")), // typeMeta: json inline
        f(2, "raw", K::Bytes),
        f(3, "contentEncoding", K::Str),
        f(4, "contentType", K::Str),
    ]),
    // ---- k8s.io.apimachinery.pkg.apis.meta.v1 ----
    ("k8s.io.apimachinery.pkg.apis.meta.v1.Condition", &[
        f(1, "type", K::Str),
        f(2, "status", K::Str),
        f(3, "observedGeneration", K::Int),
        f(4, "lastTransitionTime", K::Msg("k8s.io.apimachinery.pkg.apis.meta.v1.Time")),
        f(5, "reason", K::Str),
        f(6, "message", K::Str),
    ]),
    ("k8s.io.apimachinery.pkg.apis.meta.v1.DeleteOptions", &[
        f(1, "gracePeriodSeconds", K::Int),
        f(2, "preconditions", K::Msg("k8s.io.apimachinery.pkg.apis.meta.v1.Preconditions")),
        f(3, "orphanDependents", K::Bool),
        f(4, "propagationPolicy", K::Str),
        r(5, "dryRun", K::Str),
        f(6, "ignoreStoreReadErrorWithClusterBreakingPotential", K::Bool),
    ]),
    ("k8s.io.apimachinery.pkg.apis.meta.v1.Duration", &[
        f(1, "duration", K::Int),
    ]),
    ("k8s.io.apimachinery.pkg.apis.meta.v1.FieldsV1", &[
        f(1, "Raw", K::Bytes),
    ]),
    ("k8s.io.apimachinery.pkg.apis.meta.v1.LabelSelector", &[
        f(1, "matchLabels", K::MapStr),
        r(2, "matchExpressions", K::Msg("k8s.io.apimachinery.pkg.apis.meta.v1.LabelSelectorRequirement")),
    ]),
    ("k8s.io.apimachinery.pkg.apis.meta.v1.LabelSelectorRequirement", &[
        f(1, "key", K::Str),
        f(2, "operator", K::Str),
        r(3, "values", K::Str),
    ]),
    ("k8s.io.apimachinery.pkg.apis.meta.v1.ListMeta", &[
        f(1, "selfLink", K::Str),
        f(2, "resourceVersion", K::Str),
        f(3, "continue", K::Str),
        f(4, "remainingItemCount", K::Int),
    ]),
    ("k8s.io.apimachinery.pkg.apis.meta.v1.ManagedFieldsEntry", &[
        f(1, "manager", K::Str),
        f(2, "operation", K::Str),
        f(3, "apiVersion", K::Str),
        f(4, "time", K::Msg("k8s.io.apimachinery.pkg.apis.meta.v1.Time")),
        f(6, "fieldsType", K::Str),
        f(7, "fieldsV1", K::Msg("k8s.io.apimachinery.pkg.apis.meta.v1.FieldsV1")),
        f(8, "subresource", K::Str),
    ]),
    ("k8s.io.apimachinery.pkg.apis.meta.v1.MicroTime", &[
        f(1, "seconds", K::Int),
        f(2, "nanos", K::Int),
    ]),
    ("k8s.io.apimachinery.pkg.apis.meta.v1.ObjectMeta", &[
        f(1, "name", K::Str),
        f(2, "generateName", K::Str),
        f(3, "namespace", K::Str),
        f(4, "selfLink", K::Str),
        f(5, "uid", K::Str),
        f(6, "resourceVersion", K::Str),
        f(7, "generation", K::Int),
        f(8, "creationTimestamp", K::Msg("k8s.io.apimachinery.pkg.apis.meta.v1.Time")),
        f(9, "deletionTimestamp", K::Msg("k8s.io.apimachinery.pkg.apis.meta.v1.Time")),
        f(10, "deletionGracePeriodSeconds", K::Int),
        f(11, "labels", K::MapStr),
        f(12, "annotations", K::MapStr),
        r(13, "ownerReferences", K::Msg("k8s.io.apimachinery.pkg.apis.meta.v1.OwnerReference")),
        r(14, "finalizers", K::Str),
        r(17, "managedFields", K::Msg("k8s.io.apimachinery.pkg.apis.meta.v1.ManagedFieldsEntry")),
    ]),
    ("k8s.io.apimachinery.pkg.apis.meta.v1.OwnerReference", &[
        f(1, "kind", K::Str),
        f(3, "name", K::Str),
        f(4, "uid", K::Str),
        f(5, "apiVersion", K::Str),
        f(6, "controller", K::Bool),
        f(7, "blockOwnerDeletion", K::Bool),
    ]),
    ("k8s.io.apimachinery.pkg.apis.meta.v1.Preconditions", &[
        f(1, "uid", K::Str),
        f(2, "resourceVersion", K::Str),
    ]),
    ("k8s.io.apimachinery.pkg.apis.meta.v1.Status", &[
        f(1, "metadata", K::Msg("k8s.io.apimachinery.pkg.apis.meta.v1.ListMeta")),
        f(2, "status", K::Str),
        f(3, "message", K::Str),
        f(4, "reason", K::Str),
        f(5, "details", K::Msg("k8s.io.apimachinery.pkg.apis.meta.v1.StatusDetails")),
        f(6, "code", K::Int),
    ]),
    ("k8s.io.apimachinery.pkg.apis.meta.v1.StatusCause", &[
        f(1, "reason", K::Str),
        f(2, "message", K::Str),
        f(3, "field", K::Str),
    ]),
    ("k8s.io.apimachinery.pkg.apis.meta.v1.StatusDetails", &[
        f(1, "name", K::Str),
        f(2, "group", K::Str),
        f(3, "kind", K::Str),
        r(4, "causes", K::Msg("k8s.io.apimachinery.pkg.apis.meta.v1.StatusCause")),
        f(5, "retryAfterSeconds", K::Int),
        f(6, "uid", K::Str),
    ]),
    ("k8s.io.apimachinery.pkg.apis.meta.v1.Time", &[
        f(1, "seconds", K::Int),
        f(2, "nanos", K::Int),
    ]),
    ("k8s.io.apimachinery.pkg.apis.meta.v1.TypeMeta", &[
        f(1, "kind", K::Str),
        f(2, "apiVersion", K::Str),
    ]),
    // ---- k8s.io.apimachinery.pkg.api.resource ----
    ("k8s.io.apimachinery.pkg.api.resource.Quantity", &[
        f(1, "string", K::Str),
    ]),
    // ---- k8s.io.apimachinery.pkg.util.intstr ----
    ("k8s.io.apimachinery.pkg.util.intstr.IntOrString", &[
        f(1, "type", K::Int),
        f(2, "intVal", K::Int),
        f(3, "strVal", K::Str),
    ]),
    // ---- k8s.io.api.batch.v1 (Job, CronJob; podFailurePolicy and successPolicy not decoded) ----
    ("k8s.io.api.batch.v1.Job", &[
        f(1, "metadata", K::Msg("k8s.io.apimachinery.pkg.apis.meta.v1.ObjectMeta")),
        f(2, "spec", K::Msg("k8s.io.api.batch.v1.JobSpec")),
        f(3, "status", K::Msg("k8s.io.api.batch.v1.JobStatus")),
    ]),
    ("k8s.io.api.batch.v1.JobSpec", &[
        f(1, "parallelism", K::Int),
        f(2, "completions", K::Int),
        f(3, "activeDeadlineSeconds", K::Int),
        f(4, "selector", K::Msg("k8s.io.apimachinery.pkg.apis.meta.v1.LabelSelector")),
        f(5, "manualSelector", K::Bool),
        f(6, "template", K::Msg("k8s.io.api.core.v1.PodTemplateSpec")),
        f(7, "backoffLimit", K::Int),
        f(8, "ttlSecondsAfterFinished", K::Int),
        f(9, "completionMode", K::Str),
        f(10, "suspend", K::Bool),
        f(12, "backoffLimitPerIndex", K::Int),
        f(13, "maxFailedIndexes", K::Int),
        f(14, "podReplacementPolicy", K::Str),
        f(15, "managedBy", K::Str),
    ]),
    ("k8s.io.api.batch.v1.JobStatus", &[
        r(1, "conditions", K::Msg("k8s.io.api.batch.v1.JobCondition")),
        f(2, "startTime", K::Msg("k8s.io.apimachinery.pkg.apis.meta.v1.Time")),
        f(3, "completionTime", K::Msg("k8s.io.apimachinery.pkg.apis.meta.v1.Time")),
        f(4, "active", K::Int),
        f(5, "succeeded", K::Int),
        f(6, "failed", K::Int),
        f(7, "completedIndexes", K::Str),
        f(9, "ready", K::Int),
        f(10, "failedIndexes", K::Str),
        f(11, "terminating", K::Int),
    ]),
    ("k8s.io.api.batch.v1.CronJob", &[
        f(1, "metadata", K::Msg("k8s.io.apimachinery.pkg.apis.meta.v1.ObjectMeta")),
        f(2, "spec", K::Msg("k8s.io.api.batch.v1.CronJobSpec")),
        f(3, "status", K::Msg("k8s.io.api.batch.v1.CronJobStatus")),
    ]),
    ("k8s.io.api.batch.v1.CronJobSpec", &[
        f(1, "schedule", K::Str),
        f(2, "startingDeadlineSeconds", K::Int),
        f(3, "concurrencyPolicy", K::Str),
        f(4, "suspend", K::Bool),
        f(5, "jobTemplate", K::Msg("k8s.io.api.batch.v1.JobTemplateSpec")),
        f(6, "successfulJobsHistoryLimit", K::Int),
        f(7, "failedJobsHistoryLimit", K::Int),
        f(8, "timeZone", K::Str),
    ]),
    ("k8s.io.api.batch.v1.CronJobStatus", &[
        r(1, "active", K::Msg("k8s.io.api.core.v1.ObjectReference")),
        f(4, "lastScheduleTime", K::Msg("k8s.io.apimachinery.pkg.apis.meta.v1.Time")),
        f(5, "lastSuccessfulTime", K::Msg("k8s.io.apimachinery.pkg.apis.meta.v1.Time")),
    ]),
    ("k8s.io.api.batch.v1.JobTemplateSpec", &[
        f(1, "metadata", K::Msg("k8s.io.apimachinery.pkg.apis.meta.v1.ObjectMeta")),
        f(2, "spec", K::Msg("k8s.io.api.batch.v1.JobSpec")),
    ]),
    ("k8s.io.api.batch.v1.JobCondition", &[
        f(1, "type", K::Str),
        f(2, "status", K::Str),
        f(3, "lastProbeTime", K::Msg("k8s.io.apimachinery.pkg.apis.meta.v1.Time")),
        f(4, "lastTransitionTime", K::Msg("k8s.io.apimachinery.pkg.apis.meta.v1.Time")),
        f(5, "reason", K::Str),
        f(6, "message", K::Str),
    ]),
    // ---- k8s.io.api.apps.v1 ----
    ("k8s.io.api.apps.v1.ControllerRevision", &[
        f(1, "metadata", K::Msg("k8s.io.apimachinery.pkg.apis.meta.v1.ObjectMeta")),
        f(2, "data", K::Msg("k8s.io.apimachinery.pkg.runtime.RawExtension")),
        f(3, "revision", K::Int),
    ]),
    ("k8s.io.api.apps.v1.DaemonSet", &[
        f(1, "metadata", K::Msg("k8s.io.apimachinery.pkg.apis.meta.v1.ObjectMeta")),
        f(2, "spec", K::Msg("k8s.io.api.apps.v1.DaemonSetSpec")),
        f(3, "status", K::Msg("k8s.io.api.apps.v1.DaemonSetStatus")),
    ]),
    ("k8s.io.api.apps.v1.DaemonSetCondition", &[
        f(1, "type", K::Str),
        f(2, "status", K::Str),
        f(3, "lastTransitionTime", K::Msg("k8s.io.apimachinery.pkg.apis.meta.v1.Time")),
        f(4, "reason", K::Str),
        f(5, "message", K::Str),
    ]),
    ("k8s.io.api.apps.v1.DaemonSetSpec", &[
        f(1, "selector", K::Msg("k8s.io.apimachinery.pkg.apis.meta.v1.LabelSelector")),
        f(2, "template", K::Msg("k8s.io.api.core.v1.PodTemplateSpec")),
        f(3, "updateStrategy", K::Msg("k8s.io.api.apps.v1.DaemonSetUpdateStrategy")),
        f(4, "minReadySeconds", K::Int),
        f(6, "revisionHistoryLimit", K::Int),
    ]),
    ("k8s.io.api.apps.v1.DaemonSetStatus", &[
        f(1, "currentNumberScheduled", K::Int),
        f(2, "numberMisscheduled", K::Int),
        f(3, "desiredNumberScheduled", K::Int),
        f(4, "numberReady", K::Int),
        f(5, "observedGeneration", K::Int),
        f(6, "updatedNumberScheduled", K::Int),
        f(7, "numberAvailable", K::Int),
        f(8, "numberUnavailable", K::Int),
        f(9, "collisionCount", K::Int),
        r(10, "conditions", K::Msg("k8s.io.api.apps.v1.DaemonSetCondition")),
    ]),
    ("k8s.io.api.apps.v1.DaemonSetUpdateStrategy", &[
        f(1, "type", K::Str),
        f(2, "rollingUpdate", K::Msg("k8s.io.api.apps.v1.RollingUpdateDaemonSet")),
    ]),
    ("k8s.io.api.apps.v1.Deployment", &[
        f(1, "metadata", K::Msg("k8s.io.apimachinery.pkg.apis.meta.v1.ObjectMeta")),
        f(2, "spec", K::Msg("k8s.io.api.apps.v1.DeploymentSpec")),
        f(3, "status", K::Msg("k8s.io.api.apps.v1.DeploymentStatus")),
    ]),
    ("k8s.io.api.apps.v1.DeploymentCondition", &[
        f(1, "type", K::Str),
        f(2, "status", K::Str),
        f(4, "reason", K::Str),
        f(5, "message", K::Str),
        f(6, "lastUpdateTime", K::Msg("k8s.io.apimachinery.pkg.apis.meta.v1.Time")),
        f(7, "lastTransitionTime", K::Msg("k8s.io.apimachinery.pkg.apis.meta.v1.Time")),
    ]),
    ("k8s.io.api.apps.v1.DeploymentSpec", &[
        f(1, "replicas", K::Int),
        f(2, "selector", K::Msg("k8s.io.apimachinery.pkg.apis.meta.v1.LabelSelector")),
        f(3, "template", K::Msg("k8s.io.api.core.v1.PodTemplateSpec")),
        f(4, "strategy", K::Msg("k8s.io.api.apps.v1.DeploymentStrategy")),
        f(5, "minReadySeconds", K::Int),
        f(6, "revisionHistoryLimit", K::Int),
        f(7, "paused", K::Bool),
        f(9, "progressDeadlineSeconds", K::Int),
        f(10, "podReplacementPolicy", K::Str),
    ]),
    ("k8s.io.api.apps.v1.DeploymentStatus", &[
        f(1, "observedGeneration", K::Int),
        f(2, "replicas", K::Int),
        f(3, "updatedReplicas", K::Int),
        f(4, "availableReplicas", K::Int),
        f(5, "unavailableReplicas", K::Int),
        r(6, "conditions", K::Msg("k8s.io.api.apps.v1.DeploymentCondition")),
        f(7, "readyReplicas", K::Int),
        f(8, "collisionCount", K::Int),
        f(9, "terminatingReplicas", K::Int),
    ]),
    ("k8s.io.api.apps.v1.DeploymentStrategy", &[
        f(1, "type", K::Str),
        f(2, "rollingUpdate", K::Msg("k8s.io.api.apps.v1.RollingUpdateDeployment")),
    ]),
    ("k8s.io.api.apps.v1.ReplicaSet", &[
        f(1, "metadata", K::Msg("k8s.io.apimachinery.pkg.apis.meta.v1.ObjectMeta")),
        f(2, "spec", K::Msg("k8s.io.api.apps.v1.ReplicaSetSpec")),
        f(3, "status", K::Msg("k8s.io.api.apps.v1.ReplicaSetStatus")),
    ]),
    ("k8s.io.api.apps.v1.ReplicaSetCondition", &[
        f(1, "type", K::Str),
        f(2, "status", K::Str),
        f(3, "lastTransitionTime", K::Msg("k8s.io.apimachinery.pkg.apis.meta.v1.Time")),
        f(4, "reason", K::Str),
        f(5, "message", K::Str),
    ]),
    ("k8s.io.api.apps.v1.ReplicaSetSpec", &[
        f(1, "replicas", K::Int),
        f(2, "selector", K::Msg("k8s.io.apimachinery.pkg.apis.meta.v1.LabelSelector")),
        f(3, "template", K::Msg("k8s.io.api.core.v1.PodTemplateSpec")),
        f(4, "minReadySeconds", K::Int),
    ]),
    ("k8s.io.api.apps.v1.ReplicaSetStatus", &[
        f(1, "replicas", K::Int),
        f(2, "fullyLabeledReplicas", K::Int),
        f(3, "observedGeneration", K::Int),
        f(4, "readyReplicas", K::Int),
        f(5, "availableReplicas", K::Int),
        r(6, "conditions", K::Msg("k8s.io.api.apps.v1.ReplicaSetCondition")),
        f(7, "terminatingReplicas", K::Int),
    ]),
    ("k8s.io.api.apps.v1.RollingUpdateDaemonSet", &[
        f(1, "maxUnavailable", K::Msg("k8s.io.apimachinery.pkg.util.intstr.IntOrString")),
        f(2, "maxSurge", K::Msg("k8s.io.apimachinery.pkg.util.intstr.IntOrString")),
    ]),
    ("k8s.io.api.apps.v1.RollingUpdateDeployment", &[
        f(1, "maxUnavailable", K::Msg("k8s.io.apimachinery.pkg.util.intstr.IntOrString")),
        f(2, "maxSurge", K::Msg("k8s.io.apimachinery.pkg.util.intstr.IntOrString")),
    ]),
    // ---- k8s.io.api.authorization.v1 (the self reviews) ----
    ("k8s.io.api.authorization.v1.SelfSubjectAccessReview", &[
        f(1, "metadata", K::Msg("k8s.io.apimachinery.pkg.apis.meta.v1.ObjectMeta")),
        f(2, "spec", K::Msg("k8s.io.api.authorization.v1.SelfSubjectAccessReviewSpec")),
    ]),
    ("k8s.io.api.authorization.v1.SelfSubjectAccessReviewSpec", &[
        f(1, "resourceAttributes", K::Msg("k8s.io.api.authorization.v1.ResourceAttributes")),
        f(2, "nonResourceAttributes", K::Msg("k8s.io.api.authorization.v1.NonResourceAttributes")),
    ]),
    ("k8s.io.api.authorization.v1.ResourceAttributes", &[
        f(1, "namespace", K::Str),
        f(2, "verb", K::Str),
        f(3, "group", K::Str),
        f(4, "version", K::Str),
        f(5, "resource", K::Str),
        f(6, "subresource", K::Str),
        f(7, "name", K::Str),
    ]),
    ("k8s.io.api.authorization.v1.NonResourceAttributes", &[
        f(1, "path", K::Str),
        f(2, "verb", K::Str),
    ]),
    ("k8s.io.api.authorization.v1.SelfSubjectRulesReview", &[
        f(1, "metadata", K::Msg("k8s.io.apimachinery.pkg.apis.meta.v1.ObjectMeta")),
        f(2, "spec", K::Msg("k8s.io.api.authorization.v1.SelfSubjectRulesReviewSpec")),
    ]),
    ("k8s.io.api.authorization.v1.SelfSubjectRulesReviewSpec", &[
        f(1, "namespace", K::Str),
    ]),
    // ---- k8s.io.api.authentication.v1 ----
    ("k8s.io.api.authentication.v1.SelfSubjectReview", &[
        f(1, "metadata", K::Msg("k8s.io.apimachinery.pkg.apis.meta.v1.ObjectMeta")),
    ]),
    ("k8s.io.api.authentication.v1.BoundObjectReference", &[
        f(1, "kind", K::Str),
        f(2, "apiVersion", K::Str),
        f(3, "name", K::Str),
        f(4, "uid", K::Str),
    ]),
    ("k8s.io.api.authentication.v1.TokenRequest", &[
        f(1, "metadata", K::Msg("k8s.io.apimachinery.pkg.apis.meta.v1.ObjectMeta")),
        f(2, "spec", K::Msg("k8s.io.api.authentication.v1.TokenRequestSpec")),
        f(3, "status", K::Msg("k8s.io.api.authentication.v1.TokenRequestStatus")),
    ]),
    ("k8s.io.api.authentication.v1.TokenRequestSpec", &[
        r(1, "audiences", K::Str),
        f(3, "boundObjectRef", K::Msg("k8s.io.api.authentication.v1.BoundObjectReference")),
        f(4, "expirationSeconds", K::Int),
    ]),
    ("k8s.io.api.authentication.v1.TokenRequestStatus", &[
        f(1, "token", K::Str),
        f(2, "expirationTimestamp", K::Msg("k8s.io.apimachinery.pkg.apis.meta.v1.Time")),
    ]),
    // ---- k8s.io.api.coordination.v1 ----
    ("k8s.io.api.coordination.v1.Lease", &[
        f(1, "metadata", K::Msg("k8s.io.apimachinery.pkg.apis.meta.v1.ObjectMeta")),
        f(2, "spec", K::Msg("k8s.io.api.coordination.v1.LeaseSpec")),
    ]),
    ("k8s.io.api.coordination.v1.LeaseSpec", &[
        f(1, "holderIdentity", K::Str),
        f(2, "leaseDurationSeconds", K::Int),
        f(3, "acquireTime", K::Msg("k8s.io.apimachinery.pkg.apis.meta.v1.MicroTime")),
        f(4, "renewTime", K::Msg("k8s.io.apimachinery.pkg.apis.meta.v1.MicroTime")),
        f(5, "leaseTransitions", K::Int),
        f(6, "strategy", K::Str),
        f(7, "preferredHolder", K::Str),
    ]),
    // ---- k8s.io.api.policy.v1 ----
    ("k8s.io.api.policy.v1.Eviction", &[
        f(1, "metadata", K::Msg("k8s.io.apimachinery.pkg.apis.meta.v1.ObjectMeta")),
        f(2, "deleteOptions", K::Msg("k8s.io.apimachinery.pkg.apis.meta.v1.DeleteOptions")),
    ]),
];

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn tables_are_consistent() {
        let names: HashSet<&str> = all().map(|(n, _)| *n).collect();
        assert_eq!(names.len(), all().count(), "duplicate message name");
        for (name, fields) in all() {
            let mut nos = HashSet::new();
            let mut jsons = HashSet::new();
            for fl in fields.iter() {
                assert!(
                    nos.insert(fl.no),
                    "{name}: duplicate field number {}",
                    fl.no
                );
                if !fl.json.is_empty() {
                    assert!(
                        jsons.insert(fl.json),
                        "{name}: duplicate JSON name {}",
                        fl.json
                    );
                }
                if let Kind::Msg(m) | Kind::MapMsg(m) = fl.kind {
                    assert!(names.contains(m), "{name}.{}: unknown message {m}", fl.json);
                }
                if fl.is_inline() {
                    assert!(
                        matches!(fl.kind, Kind::Msg(_)) && !fl.repeated,
                        "{name}: inline field {} must be a single message",
                        fl.no
                    );
                }
            }
        }
        assert!(message("k8s.io.api.core.v1.Pod").is_some());
    }
}
