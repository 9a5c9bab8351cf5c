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
    MESSAGES.iter().find(|(n, _)| *n == name).map(|(_, f)| *f)
}

const fn f(no: u32, json: &'static str, kind: Kind) -> Field {
    Field {
        no,
        json,
        kind,
        repeated: false,
    }
}

const fn r(no: u32, json: &'static str, kind: Kind) -> Field {
    Field {
        no,
        json,
        kind,
        repeated: true,
    }
}

use self::Kind as K;

/// Messages by full name (e.g. "k8s.io.api.core.v1.ConfigMap").
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
    // ---- k8s.io.api.core.v1 ----
    ("k8s.io.api.core.v1.AWSElasticBlockStoreVolumeSource", &[
        f(1, "volumeID", K::Str),
        f(2, "fsType", K::Str),
        f(3, "partition", K::Int),
        f(4, "readOnly", K::Bool),
    ]),
    ("k8s.io.api.core.v1.Affinity", &[
        f(1, "nodeAffinity", K::Msg("k8s.io.api.core.v1.NodeAffinity")),
        f(2, "podAffinity", K::Msg("k8s.io.api.core.v1.PodAffinity")),
        f(3, "podAntiAffinity", K::Msg("k8s.io.api.core.v1.PodAntiAffinity")),
    ]),
    ("k8s.io.api.core.v1.AppArmorProfile", &[
        f(1, "type", K::Str),
        f(2, "localhostProfile", K::Str),
    ]),
    ("k8s.io.api.core.v1.AttachedVolume", &[
        f(1, "name", K::Str),
        f(2, "devicePath", K::Str),
    ]),
    ("k8s.io.api.core.v1.AzureDiskVolumeSource", &[
        f(1, "diskName", K::Str),
        f(2, "diskURI", K::Str),
        f(3, "cachingMode", K::Str),
        f(4, "fsType", K::Str),
        f(5, "readOnly", K::Bool),
        f(6, "kind", K::Str),
    ]),
    ("k8s.io.api.core.v1.AzureFileVolumeSource", &[
        f(1, "secretName", K::Str),
        f(2, "shareName", K::Str),
        f(3, "readOnly", K::Bool),
    ]),
    ("k8s.io.api.core.v1.CSIVolumeSource", &[
        f(1, "driver", K::Str),
        f(2, "readOnly", K::Bool),
        f(3, "fsType", K::Str),
        f(4, "volumeAttributes", K::MapStr),
        f(5, "nodePublishSecretRef", K::Msg("k8s.io.api.core.v1.LocalObjectReference")),
    ]),
    ("k8s.io.api.core.v1.Capabilities", &[
        r(1, "add", K::Str),
        r(2, "drop", K::Str),
    ]),
    ("k8s.io.api.core.v1.CephFSVolumeSource", &[
        r(1, "monitors", K::Str),
        f(2, "path", K::Str),
        f(3, "user", K::Str),
        f(4, "secretFile", K::Str),
        f(5, "secretRef", K::Msg("k8s.io.api.core.v1.LocalObjectReference")),
        f(6, "readOnly", K::Bool),
    ]),
    ("k8s.io.api.core.v1.CinderVolumeSource", &[
        f(1, "volumeID", K::Str),
        f(2, "fsType", K::Str),
        f(3, "readOnly", K::Bool),
        f(4, "secretRef", K::Msg("k8s.io.api.core.v1.LocalObjectReference")),
    ]),
    ("k8s.io.api.core.v1.ClusterTrustBundleProjection", &[
        f(1, "name", K::Str),
        f(2, "signerName", K::Str),
        f(3, "labelSelector", K::Msg("k8s.io.apimachinery.pkg.apis.meta.v1.LabelSelector")),
        f(4, "path", K::Str),
        f(5, "optional", K::Bool),
    ]),
    ("k8s.io.api.core.v1.ConfigMap", &[
        f(1, "metadata", K::Msg("k8s.io.apimachinery.pkg.apis.meta.v1.ObjectMeta")),
        f(2, "data", K::MapStr),
        f(3, "binaryData", K::MapBytes),
        f(4, "immutable", K::Bool),
    ]),
    ("k8s.io.api.core.v1.ConfigMapEnvSource", &[
        f(1, "", K::Msg("k8s.io.api.core.v1.LocalObjectReference")), // localObjectReference: json inline
        f(2, "optional", K::Bool),
    ]),
    ("k8s.io.api.core.v1.ConfigMapKeySelector", &[
        f(1, "", K::Msg("k8s.io.api.core.v1.LocalObjectReference")), // localObjectReference: json inline
        f(2, "key", K::Str),
        f(3, "optional", K::Bool),
    ]),
    ("k8s.io.api.core.v1.ConfigMapNodeConfigSource", &[
        f(1, "namespace", K::Str),
        f(2, "name", K::Str),
        f(3, "uid", K::Str),
        f(4, "resourceVersion", K::Str),
        f(5, "kubeletConfigKey", K::Str),
    ]),
    ("k8s.io.api.core.v1.ConfigMapProjection", &[
        f(1, "", K::Msg("k8s.io.api.core.v1.LocalObjectReference")), // localObjectReference: json inline
        r(2, "items", K::Msg("k8s.io.api.core.v1.KeyToPath")),
        f(4, "optional", K::Bool),
    ]),
    ("k8s.io.api.core.v1.ConfigMapVolumeSource", &[
        f(1, "", K::Msg("k8s.io.api.core.v1.LocalObjectReference")), // localObjectReference: json inline
        r(2, "items", K::Msg("k8s.io.api.core.v1.KeyToPath")),
        f(3, "defaultMode", K::Int),
        f(4, "optional", K::Bool),
    ]),
    ("k8s.io.api.core.v1.Container", &[
        f(1, "name", K::Str),
        f(2, "image", K::Str),
        r(3, "command", K::Str),
        r(4, "args", K::Str),
        f(5, "workingDir", K::Str),
        r(6, "ports", K::Msg("k8s.io.api.core.v1.ContainerPort")),
        r(7, "env", K::Msg("k8s.io.api.core.v1.EnvVar")),
        f(8, "resources", K::Msg("k8s.io.api.core.v1.ResourceRequirements")),
        r(9, "volumeMounts", K::Msg("k8s.io.api.core.v1.VolumeMount")),
        f(10, "livenessProbe", K::Msg("k8s.io.api.core.v1.Probe")),
        f(11, "readinessProbe", K::Msg("k8s.io.api.core.v1.Probe")),
        f(12, "lifecycle", K::Msg("k8s.io.api.core.v1.Lifecycle")),
        f(13, "terminationMessagePath", K::Str),
        f(14, "imagePullPolicy", K::Str),
        f(15, "securityContext", K::Msg("k8s.io.api.core.v1.SecurityContext")),
        f(16, "stdin", K::Bool),
        f(17, "stdinOnce", K::Bool),
        f(18, "tty", K::Bool),
        r(19, "envFrom", K::Msg("k8s.io.api.core.v1.EnvFromSource")),
        f(20, "terminationMessagePolicy", K::Str),
        r(21, "volumeDevices", K::Msg("k8s.io.api.core.v1.VolumeDevice")),
        f(22, "startupProbe", K::Msg("k8s.io.api.core.v1.Probe")),
        r(23, "resizePolicy", K::Msg("k8s.io.api.core.v1.ContainerResizePolicy")),
        f(24, "restartPolicy", K::Str),
        r(25, "restartPolicyRules", K::Msg("k8s.io.api.core.v1.ContainerRestartRule")),
    ]),
    ("k8s.io.api.core.v1.ContainerExtendedResourceRequest", &[
        f(1, "containerName", K::Str),
        f(2, "resourceName", K::Str),
        f(3, "requestName", K::Str),
    ]),
    ("k8s.io.api.core.v1.ContainerImage", &[
        r(1, "names", K::Str),
        f(2, "sizeBytes", K::Int),
    ]),
    ("k8s.io.api.core.v1.ContainerPort", &[
        f(1, "name", K::Str),
        f(2, "hostPort", K::Int),
        f(3, "containerPort", K::Int),
        f(4, "protocol", K::Str),
        f(5, "hostIP", K::Str),
    ]),
    ("k8s.io.api.core.v1.ContainerResizePolicy", &[
        f(1, "resourceName", K::Str),
        f(2, "restartPolicy", K::Str),
    ]),
    ("k8s.io.api.core.v1.ContainerRestartRule", &[
        f(1, "action", K::Str),
        f(2, "exitCodes", K::Msg("k8s.io.api.core.v1.ContainerRestartRuleOnExitCodes")),
    ]),
    ("k8s.io.api.core.v1.ContainerRestartRuleOnExitCodes", &[
        f(1, "operator", K::Str),
        r(2, "values", K::Int),
    ]),
    ("k8s.io.api.core.v1.ContainerState", &[
        f(1, "waiting", K::Msg("k8s.io.api.core.v1.ContainerStateWaiting")),
        f(2, "running", K::Msg("k8s.io.api.core.v1.ContainerStateRunning")),
        f(3, "terminated", K::Msg("k8s.io.api.core.v1.ContainerStateTerminated")),
    ]),
    ("k8s.io.api.core.v1.ContainerStateRunning", &[
        f(1, "startedAt", K::Msg("k8s.io.apimachinery.pkg.apis.meta.v1.Time")),
    ]),
    ("k8s.io.api.core.v1.ContainerStateTerminated", &[
        f(1, "exitCode", K::Int),
        f(2, "signal", K::Int),
        f(3, "reason", K::Str),
        f(4, "message", K::Str),
        f(5, "startedAt", K::Msg("k8s.io.apimachinery.pkg.apis.meta.v1.Time")),
        f(6, "finishedAt", K::Msg("k8s.io.apimachinery.pkg.apis.meta.v1.Time")),
        f(7, "containerID", K::Str),
    ]),
    ("k8s.io.api.core.v1.ContainerStateWaiting", &[
        f(1, "reason", K::Str),
        f(2, "message", K::Str),
    ]),
    ("k8s.io.api.core.v1.ContainerStatus", &[
        f(1, "name", K::Str),
        f(2, "state", K::Msg("k8s.io.api.core.v1.ContainerState")),
        f(3, "lastState", K::Msg("k8s.io.api.core.v1.ContainerState")),
        f(4, "ready", K::Bool),
        f(5, "restartCount", K::Int),
        f(6, "image", K::Str),
        f(7, "imageID", K::Str),
        f(8, "containerID", K::Str),
        f(9, "started", K::Bool),
        f(10, "allocatedResources", K::MapMsg("k8s.io.apimachinery.pkg.api.resource.Quantity")),
        f(11, "resources", K::Msg("k8s.io.api.core.v1.ResourceRequirements")),
        r(12, "volumeMounts", K::Msg("k8s.io.api.core.v1.VolumeMountStatus")),
        f(13, "user", K::Msg("k8s.io.api.core.v1.ContainerUser")),
        r(14, "allocatedResourcesStatus", K::Msg("k8s.io.api.core.v1.ResourceStatus")),
        f(15, "stopSignal", K::Str),
    ]),
    ("k8s.io.api.core.v1.ContainerUser", &[
        f(1, "linux", K::Msg("k8s.io.api.core.v1.LinuxContainerUser")),
    ]),
    ("k8s.io.api.core.v1.DaemonEndpoint", &[
        f(1, "Port", K::Int),
    ]),
    ("k8s.io.api.core.v1.DownwardAPIProjection", &[
        r(1, "items", K::Msg("k8s.io.api.core.v1.DownwardAPIVolumeFile")),
    ]),
    ("k8s.io.api.core.v1.DownwardAPIVolumeFile", &[
        f(1, "path", K::Str),
        f(2, "fieldRef", K::Msg("k8s.io.api.core.v1.ObjectFieldSelector")),
        f(3, "resourceFieldRef", K::Msg("k8s.io.api.core.v1.ResourceFieldSelector")),
        f(4, "mode", K::Int),
    ]),
    ("k8s.io.api.core.v1.DownwardAPIVolumeSource", &[
        r(1, "items", K::Msg("k8s.io.api.core.v1.DownwardAPIVolumeFile")),
        f(2, "defaultMode", K::Int),
    ]),
    ("k8s.io.api.core.v1.EmptyDirVolumeSource", &[
        f(1, "medium", K::Str),
        f(2, "sizeLimit", K::Msg("k8s.io.apimachinery.pkg.api.resource.Quantity")),
    ]),
    ("k8s.io.api.core.v1.EnvFromSource", &[
        f(1, "prefix", K::Str),
        f(2, "configMapRef", K::Msg("k8s.io.api.core.v1.ConfigMapEnvSource")),
        f(3, "secretRef", K::Msg("k8s.io.api.core.v1.SecretEnvSource")),
    ]),
    ("k8s.io.api.core.v1.EnvVar", &[
        f(1, "name", K::Str),
        f(2, "value", K::Str),
        f(3, "valueFrom", K::Msg("k8s.io.api.core.v1.EnvVarSource")),
    ]),
    ("k8s.io.api.core.v1.EnvVarSource", &[
        f(1, "fieldRef", K::Msg("k8s.io.api.core.v1.ObjectFieldSelector")),
        f(2, "resourceFieldRef", K::Msg("k8s.io.api.core.v1.ResourceFieldSelector")),
        f(3, "configMapKeyRef", K::Msg("k8s.io.api.core.v1.ConfigMapKeySelector")),
        f(4, "secretKeyRef", K::Msg("k8s.io.api.core.v1.SecretKeySelector")),
        f(5, "fileKeyRef", K::Msg("k8s.io.api.core.v1.FileKeySelector")),
    ]),
    ("k8s.io.api.core.v1.EphemeralContainer", &[
        f(1, "", K::Msg("k8s.io.api.core.v1.EphemeralContainerCommon")), // ephemeralContainerCommon: json inline
        f(2, "targetContainerName", K::Str),
    ]),
    ("k8s.io.api.core.v1.EphemeralContainerCommon", &[
        f(1, "name", K::Str),
        f(2, "image", K::Str),
        r(3, "command", K::Str),
        r(4, "args", K::Str),
        f(5, "workingDir", K::Str),
        r(6, "ports", K::Msg("k8s.io.api.core.v1.ContainerPort")),
        r(7, "env", K::Msg("k8s.io.api.core.v1.EnvVar")),
        f(8, "resources", K::Msg("k8s.io.api.core.v1.ResourceRequirements")),
        r(9, "volumeMounts", K::Msg("k8s.io.api.core.v1.VolumeMount")),
        f(10, "livenessProbe", K::Msg("k8s.io.api.core.v1.Probe")),
        f(11, "readinessProbe", K::Msg("k8s.io.api.core.v1.Probe")),
        f(12, "lifecycle", K::Msg("k8s.io.api.core.v1.Lifecycle")),
        f(13, "terminationMessagePath", K::Str),
        f(14, "imagePullPolicy", K::Str),
        f(15, "securityContext", K::Msg("k8s.io.api.core.v1.SecurityContext")),
        f(16, "stdin", K::Bool),
        f(17, "stdinOnce", K::Bool),
        f(18, "tty", K::Bool),
        r(19, "envFrom", K::Msg("k8s.io.api.core.v1.EnvFromSource")),
        f(20, "terminationMessagePolicy", K::Str),
        r(21, "volumeDevices", K::Msg("k8s.io.api.core.v1.VolumeDevice")),
        f(22, "startupProbe", K::Msg("k8s.io.api.core.v1.Probe")),
        r(23, "resizePolicy", K::Msg("k8s.io.api.core.v1.ContainerResizePolicy")),
        f(24, "restartPolicy", K::Str),
        r(25, "restartPolicyRules", K::Msg("k8s.io.api.core.v1.ContainerRestartRule")),
    ]),
    ("k8s.io.api.core.v1.EphemeralVolumeSource", &[
        f(1, "volumeClaimTemplate", K::Msg("k8s.io.api.core.v1.PersistentVolumeClaimTemplate")),
    ]),
    ("k8s.io.api.core.v1.Event", &[
        f(1, "metadata", K::Msg("k8s.io.apimachinery.pkg.apis.meta.v1.ObjectMeta")),
        f(2, "involvedObject", K::Msg("k8s.io.api.core.v1.ObjectReference")),
        f(3, "reason", K::Str),
        f(4, "message", K::Str),
        f(5, "source", K::Msg("k8s.io.api.core.v1.EventSource")),
        f(6, "firstTimestamp", K::Msg("k8s.io.apimachinery.pkg.apis.meta.v1.Time")),
        f(7, "lastTimestamp", K::Msg("k8s.io.apimachinery.pkg.apis.meta.v1.Time")),
        f(8, "count", K::Int),
        f(9, "type", K::Str),
        f(10, "eventTime", K::Msg("k8s.io.apimachinery.pkg.apis.meta.v1.MicroTime")),
        f(11, "series", K::Msg("k8s.io.api.core.v1.EventSeries")),
        f(12, "action", K::Str),
        f(13, "related", K::Msg("k8s.io.api.core.v1.ObjectReference")),
        f(14, "reportingComponent", K::Str),
        f(15, "reportingInstance", K::Str),
    ]),
    ("k8s.io.api.core.v1.EventSeries", &[
        f(1, "count", K::Int),
        f(2, "lastObservedTime", K::Msg("k8s.io.apimachinery.pkg.apis.meta.v1.MicroTime")),
    ]),
    ("k8s.io.api.core.v1.EventSource", &[
        f(1, "component", K::Str),
        f(2, "host", K::Str),
    ]),
    ("k8s.io.api.core.v1.ExecAction", &[
        r(1, "command", K::Str),
    ]),
    ("k8s.io.api.core.v1.FCVolumeSource", &[
        r(1, "targetWWNs", K::Str),
        f(2, "lun", K::Int),
        f(3, "fsType", K::Str),
        f(4, "readOnly", K::Bool),
        r(5, "wwids", K::Str),
    ]),
    ("k8s.io.api.core.v1.FileKeySelector", &[
        f(1, "volumeName", K::Str),
        f(2, "path", K::Str),
        f(3, "key", K::Str),
        f(4, "optional", K::Bool),
    ]),
    ("k8s.io.api.core.v1.FlexVolumeSource", &[
        f(1, "driver", K::Str),
        f(2, "fsType", K::Str),
        f(3, "secretRef", K::Msg("k8s.io.api.core.v1.LocalObjectReference")),
        f(4, "readOnly", K::Bool),
        f(5, "options", K::MapStr),
    ]),
    ("k8s.io.api.core.v1.FlockerVolumeSource", &[
        f(1, "datasetName", K::Str),
        f(2, "datasetUUID", K::Str),
    ]),
    ("k8s.io.api.core.v1.GCEPersistentDiskVolumeSource", &[
        f(1, "pdName", K::Str),
        f(2, "fsType", K::Str),
        f(3, "partition", K::Int),
        f(4, "readOnly", K::Bool),
    ]),
    ("k8s.io.api.core.v1.GRPCAction", &[
        f(1, "port", K::Int),
        f(2, "service", K::Str),
    ]),
    ("k8s.io.api.core.v1.GitRepoVolumeSource", &[
        f(1, "repository", K::Str),
        f(2, "revision", K::Str),
        f(3, "directory", K::Str),
    ]),
    ("k8s.io.api.core.v1.GlusterfsVolumeSource", &[
        f(1, "endpoints", K::Str),
        f(2, "path", K::Str),
        f(3, "readOnly", K::Bool),
    ]),
    ("k8s.io.api.core.v1.HTTPGetAction", &[
        f(1, "path", K::Str),
        f(2, "port", K::Msg("k8s.io.apimachinery.pkg.util.intstr.IntOrString")),
        f(3, "host", K::Str),
        f(4, "scheme", K::Str),
        r(5, "httpHeaders", K::Msg("k8s.io.api.core.v1.HTTPHeader")),
    ]),
    ("k8s.io.api.core.v1.HTTPHeader", &[
        f(1, "name", K::Str),
        f(2, "value", K::Str),
    ]),
    ("k8s.io.api.core.v1.HostAlias", &[
        f(1, "ip", K::Str),
        r(2, "hostnames", K::Str),
    ]),
    ("k8s.io.api.core.v1.HostIP", &[
        f(1, "ip", K::Str),
    ]),
    ("k8s.io.api.core.v1.HostPathVolumeSource", &[
        f(1, "path", K::Str),
        f(2, "type", K::Str),
    ]),
    ("k8s.io.api.core.v1.ISCSIVolumeSource", &[
        f(1, "targetPortal", K::Str),
        f(2, "iqn", K::Str),
        f(3, "lun", K::Int),
        f(4, "iscsiInterface", K::Str),
        f(5, "fsType", K::Str),
        f(6, "readOnly", K::Bool),
        r(7, "portals", K::Str),
        f(8, "chapAuthDiscovery", K::Bool),
        f(10, "secretRef", K::Msg("k8s.io.api.core.v1.LocalObjectReference")),
        f(11, "chapAuthSession", K::Bool),
        f(12, "initiatorName", K::Str),
    ]),
    ("k8s.io.api.core.v1.ImageVolumeSource", &[
        f(1, "reference", K::Str),
        f(2, "pullPolicy", K::Str),
    ]),
    ("k8s.io.api.core.v1.ImageVolumeStatus", &[
        f(1, "imageRef", K::Str),
    ]),
    ("k8s.io.api.core.v1.KeyToPath", &[
        f(1, "key", K::Str),
        f(2, "path", K::Str),
        f(3, "mode", K::Int),
    ]),
    ("k8s.io.api.core.v1.Lifecycle", &[
        f(1, "postStart", K::Msg("k8s.io.api.core.v1.LifecycleHandler")),
        f(2, "preStop", K::Msg("k8s.io.api.core.v1.LifecycleHandler")),
        f(3, "stopSignal", K::Str),
    ]),
    ("k8s.io.api.core.v1.LifecycleHandler", &[
        f(1, "exec", K::Msg("k8s.io.api.core.v1.ExecAction")),
        f(2, "httpGet", K::Msg("k8s.io.api.core.v1.HTTPGetAction")),
        f(3, "tcpSocket", K::Msg("k8s.io.api.core.v1.TCPSocketAction")),
        f(4, "sleep", K::Msg("k8s.io.api.core.v1.SleepAction")),
    ]),
    ("k8s.io.api.core.v1.LinuxContainerUser", &[
        f(1, "uid", K::Int),
        f(2, "gid", K::Int),
        r(3, "supplementalGroups", K::Int),
    ]),
    ("k8s.io.api.core.v1.LocalObjectReference", &[
        f(1, "name", K::Str),
    ]),
    ("k8s.io.api.core.v1.ModifyVolumeStatus", &[
        f(1, "targetVolumeAttributesClassName", K::Str),
        f(2, "status", K::Str),
    ]),
    ("k8s.io.api.core.v1.NFSVolumeSource", &[
        f(1, "server", K::Str),
        f(2, "path", K::Str),
        f(3, "readOnly", K::Bool),
    ]),
    ("k8s.io.api.core.v1.Namespace", &[
        f(1, "metadata", K::Msg("k8s.io.apimachinery.pkg.apis.meta.v1.ObjectMeta")),
        f(2, "spec", K::Msg("k8s.io.api.core.v1.NamespaceSpec")),
        f(3, "status", K::Msg("k8s.io.api.core.v1.NamespaceStatus")),
    ]),
    ("k8s.io.api.core.v1.NamespaceCondition", &[
        f(1, "type", K::Str),
        f(2, "status", K::Str),
        f(4, "lastTransitionTime", K::Msg("k8s.io.apimachinery.pkg.apis.meta.v1.Time")),
        f(5, "reason", K::Str),
        f(6, "message", K::Str),
    ]),
    ("k8s.io.api.core.v1.NamespaceSpec", &[
        r(1, "finalizers", K::Str),
    ]),
    ("k8s.io.api.core.v1.NamespaceStatus", &[
        f(1, "phase", K::Str),
        r(2, "conditions", K::Msg("k8s.io.api.core.v1.NamespaceCondition")),
    ]),
    ("k8s.io.api.core.v1.Node", &[
        f(1, "metadata", K::Msg("k8s.io.apimachinery.pkg.apis.meta.v1.ObjectMeta")),
        f(2, "spec", K::Msg("k8s.io.api.core.v1.NodeSpec")),
        f(3, "status", K::Msg("k8s.io.api.core.v1.NodeStatus")),
    ]),
    ("k8s.io.api.core.v1.NodeAddress", &[
        f(1, "type", K::Str),
        f(2, "address", K::Str),
    ]),
    ("k8s.io.api.core.v1.NodeAffinity", &[
        f(1, "requiredDuringSchedulingIgnoredDuringExecution", K::Msg("k8s.io.api.core.v1.NodeSelector")),
        r(2, "preferredDuringSchedulingIgnoredDuringExecution", K::Msg("k8s.io.api.core.v1.PreferredSchedulingTerm")),
    ]),
    ("k8s.io.api.core.v1.NodeCondition", &[
        f(1, "type", K::Str),
        f(2, "status", K::Str),
        f(3, "lastHeartbeatTime", K::Msg("k8s.io.apimachinery.pkg.apis.meta.v1.Time")),
        f(4, "lastTransitionTime", K::Msg("k8s.io.apimachinery.pkg.apis.meta.v1.Time")),
        f(5, "reason", K::Str),
        f(6, "message", K::Str),
    ]),
    ("k8s.io.api.core.v1.NodeConfigSource", &[
        f(2, "configMap", K::Msg("k8s.io.api.core.v1.ConfigMapNodeConfigSource")),
    ]),
    ("k8s.io.api.core.v1.NodeConfigStatus", &[
        f(1, "assigned", K::Msg("k8s.io.api.core.v1.NodeConfigSource")),
        f(2, "active", K::Msg("k8s.io.api.core.v1.NodeConfigSource")),
        f(3, "lastKnownGood", K::Msg("k8s.io.api.core.v1.NodeConfigSource")),
        f(4, "error", K::Str),
    ]),
    ("k8s.io.api.core.v1.NodeDaemonEndpoints", &[
        f(1, "kubeletEndpoint", K::Msg("k8s.io.api.core.v1.DaemonEndpoint")),
    ]),
    ("k8s.io.api.core.v1.NodeFeatures", &[
        f(1, "supplementalGroupsPolicy", K::Bool),
        f(2, "containerUlimits", K::Bool),
    ]),
    ("k8s.io.api.core.v1.NodeRuntimeHandler", &[
        f(1, "name", K::Str),
        f(2, "features", K::Msg("k8s.io.api.core.v1.NodeRuntimeHandlerFeatures")),
    ]),
    ("k8s.io.api.core.v1.NodeRuntimeHandlerFeatures", &[
        f(1, "recursiveReadOnlyMounts", K::Bool),
        f(2, "userNamespaces", K::Bool),
    ]),
    ("k8s.io.api.core.v1.NodeSelector", &[
        r(1, "nodeSelectorTerms", K::Msg("k8s.io.api.core.v1.NodeSelectorTerm")),
    ]),
    ("k8s.io.api.core.v1.NodeSelectorRequirement", &[
        f(1, "key", K::Str),
        f(2, "operator", K::Str),
        r(3, "values", K::Str),
    ]),
    ("k8s.io.api.core.v1.NodeSelectorTerm", &[
        r(1, "matchExpressions", K::Msg("k8s.io.api.core.v1.NodeSelectorRequirement")),
        r(2, "matchFields", K::Msg("k8s.io.api.core.v1.NodeSelectorRequirement")),
    ]),
    ("k8s.io.api.core.v1.NodeSpec", &[
        f(1, "podCIDR", K::Str),
        f(2, "externalID", K::Str),
        f(3, "providerID", K::Str),
        f(4, "unschedulable", K::Bool),
        r(5, "taints", K::Msg("k8s.io.api.core.v1.Taint")),
        f(6, "configSource", K::Msg("k8s.io.api.core.v1.NodeConfigSource")),
        r(7, "podCIDRs", K::Str),
    ]),
    ("k8s.io.api.core.v1.NodeStatus", &[
        f(1, "capacity", K::MapMsg("k8s.io.apimachinery.pkg.api.resource.Quantity")),
        f(2, "allocatable", K::MapMsg("k8s.io.apimachinery.pkg.api.resource.Quantity")),
        f(3, "phase", K::Str),
        r(4, "conditions", K::Msg("k8s.io.api.core.v1.NodeCondition")),
        r(5, "addresses", K::Msg("k8s.io.api.core.v1.NodeAddress")),
        f(6, "daemonEndpoints", K::Msg("k8s.io.api.core.v1.NodeDaemonEndpoints")),
        f(7, "nodeInfo", K::Msg("k8s.io.api.core.v1.NodeSystemInfo")),
        r(8, "images", K::Msg("k8s.io.api.core.v1.ContainerImage")),
        r(9, "volumesInUse", K::Str),
        r(10, "volumesAttached", K::Msg("k8s.io.api.core.v1.AttachedVolume")),
        f(11, "config", K::Msg("k8s.io.api.core.v1.NodeConfigStatus")),
        r(12, "runtimeHandlers", K::Msg("k8s.io.api.core.v1.NodeRuntimeHandler")),
        f(13, "features", K::Msg("k8s.io.api.core.v1.NodeFeatures")),
        r(14, "declaredFeatures", K::Str),
    ]),
    ("k8s.io.api.core.v1.NodeSwapStatus", &[
        f(1, "capacity", K::Int),
    ]),
    ("k8s.io.api.core.v1.NodeSystemInfo", &[
        f(1, "machineID", K::Str),
        f(2, "systemUUID", K::Str),
        f(3, "bootID", K::Str),
        f(4, "kernelVersion", K::Str),
        f(5, "osImage", K::Str),
        f(6, "containerRuntimeVersion", K::Str),
        f(7, "kubeletVersion", K::Str),
        f(8, "kubeProxyVersion", K::Str),
        f(9, "operatingSystem", K::Str),
        f(10, "architecture", K::Str),
        f(11, "swap", K::Msg("k8s.io.api.core.v1.NodeSwapStatus")),
    ]),
    ("k8s.io.api.core.v1.ObjectFieldSelector", &[
        f(1, "apiVersion", K::Str),
        f(2, "fieldPath", K::Str),
    ]),
    ("k8s.io.api.core.v1.ObjectReference", &[
        f(1, "kind", K::Str),
        f(2, "namespace", K::Str),
        f(3, "name", K::Str),
        f(4, "uid", K::Str),
        f(5, "apiVersion", K::Str),
        f(6, "resourceVersion", K::Str),
        f(7, "fieldPath", K::Str),
    ]),
    ("k8s.io.api.core.v1.PersistentVolumeClaim", &[
        f(1, "metadata", K::Msg("k8s.io.apimachinery.pkg.apis.meta.v1.ObjectMeta")),
        f(2, "spec", K::Msg("k8s.io.api.core.v1.PersistentVolumeClaimSpec")),
        f(3, "status", K::Msg("k8s.io.api.core.v1.PersistentVolumeClaimStatus")),
    ]),
    ("k8s.io.api.core.v1.PersistentVolumeClaimCondition", &[
        f(1, "type", K::Str),
        f(2, "status", K::Str),
        f(3, "lastProbeTime", K::Msg("k8s.io.apimachinery.pkg.apis.meta.v1.Time")),
        f(4, "lastTransitionTime", K::Msg("k8s.io.apimachinery.pkg.apis.meta.v1.Time")),
        f(5, "reason", K::Str),
        f(6, "message", K::Str),
    ]),
    ("k8s.io.api.core.v1.PersistentVolumeClaimSpec", &[
        r(1, "accessModes", K::Str),
        f(2, "resources", K::Msg("k8s.io.api.core.v1.VolumeResourceRequirements")),
        f(3, "volumeName", K::Str),
        f(4, "selector", K::Msg("k8s.io.apimachinery.pkg.apis.meta.v1.LabelSelector")),
        f(5, "storageClassName", K::Str),
        f(6, "volumeMode", K::Str),
        f(7, "dataSource", K::Msg("k8s.io.api.core.v1.TypedLocalObjectReference")),
        f(8, "dataSourceRef", K::Msg("k8s.io.api.core.v1.TypedObjectReference")),
        f(9, "volumeAttributesClassName", K::Str),
    ]),
    ("k8s.io.api.core.v1.PersistentVolumeClaimStatus", &[
        f(1, "phase", K::Str),
        r(2, "accessModes", K::Str),
        f(3, "capacity", K::MapMsg("k8s.io.apimachinery.pkg.api.resource.Quantity")),
        r(4, "conditions", K::Msg("k8s.io.api.core.v1.PersistentVolumeClaimCondition")),
        f(5, "allocatedResources", K::MapMsg("k8s.io.apimachinery.pkg.api.resource.Quantity")),
        f(7, "allocatedResourceStatuses", K::MapStr),
        f(8, "currentVolumeAttributesClassName", K::Str),
        f(9, "modifyVolumeStatus", K::Msg("k8s.io.api.core.v1.ModifyVolumeStatus")),
    ]),
    ("k8s.io.api.core.v1.PersistentVolumeClaimTemplate", &[
        f(1, "metadata", K::Msg("k8s.io.apimachinery.pkg.apis.meta.v1.ObjectMeta")),
        f(2, "spec", K::Msg("k8s.io.api.core.v1.PersistentVolumeClaimSpec")),
    ]),
    ("k8s.io.api.core.v1.PersistentVolumeClaimVolumeSource", &[
        f(1, "claimName", K::Str),
        f(2, "readOnly", K::Bool),
    ]),
    ("k8s.io.api.core.v1.PhotonPersistentDiskVolumeSource", &[
        f(1, "pdID", K::Str),
        f(2, "fsType", K::Str),
    ]),
    ("k8s.io.api.core.v1.Pod", &[
        f(1, "metadata", K::Msg("k8s.io.apimachinery.pkg.apis.meta.v1.ObjectMeta")),
        f(2, "spec", K::Msg("k8s.io.api.core.v1.PodSpec")),
        f(3, "status", K::Msg("k8s.io.api.core.v1.PodStatus")),
    ]),
    ("k8s.io.api.core.v1.PodAffinity", &[
        r(1, "requiredDuringSchedulingIgnoredDuringExecution", K::Msg("k8s.io.api.core.v1.PodAffinityTerm")),
        r(2, "preferredDuringSchedulingIgnoredDuringExecution", K::Msg("k8s.io.api.core.v1.WeightedPodAffinityTerm")),
    ]),
    ("k8s.io.api.core.v1.PodAffinityTerm", &[
        f(1, "labelSelector", K::Msg("k8s.io.apimachinery.pkg.apis.meta.v1.LabelSelector")),
        r(2, "namespaces", K::Str),
        f(3, "topologyKey", K::Str),
        f(4, "namespaceSelector", K::Msg("k8s.io.apimachinery.pkg.apis.meta.v1.LabelSelector")),
        r(5, "matchLabelKeys", K::Str),
        r(6, "mismatchLabelKeys", K::Str),
    ]),
    ("k8s.io.api.core.v1.PodAntiAffinity", &[
        r(1, "requiredDuringSchedulingIgnoredDuringExecution", K::Msg("k8s.io.api.core.v1.PodAffinityTerm")),
        r(2, "preferredDuringSchedulingIgnoredDuringExecution", K::Msg("k8s.io.api.core.v1.WeightedPodAffinityTerm")),
    ]),
    ("k8s.io.api.core.v1.PodCertificateProjection", &[
        f(1, "signerName", K::Str),
        f(2, "keyType", K::Str),
        f(3, "maxExpirationSeconds", K::Int),
        f(4, "credentialBundlePath", K::Str),
        f(5, "keyPath", K::Str),
        f(6, "certificateChainPath", K::Str),
        f(7, "userAnnotations", K::MapStr),
    ]),
    ("k8s.io.api.core.v1.PodCondition", &[
        f(1, "type", K::Str),
        f(2, "status", K::Str),
        f(3, "lastProbeTime", K::Msg("k8s.io.apimachinery.pkg.apis.meta.v1.Time")),
        f(4, "lastTransitionTime", K::Msg("k8s.io.apimachinery.pkg.apis.meta.v1.Time")),
        f(5, "reason", K::Str),
        f(6, "message", K::Str),
        f(7, "observedGeneration", K::Int),
    ]),
    ("k8s.io.api.core.v1.PodDNSConfig", &[
        r(1, "nameservers", K::Str),
        r(2, "searches", K::Str),
        r(3, "options", K::Msg("k8s.io.api.core.v1.PodDNSConfigOption")),
    ]),
    ("k8s.io.api.core.v1.PodDNSConfigOption", &[
        f(1, "name", K::Str),
        f(2, "value", K::Str),
    ]),
    ("k8s.io.api.core.v1.PodExtendedResourceClaimStatus", &[
        r(1, "requestMappings", K::Msg("k8s.io.api.core.v1.ContainerExtendedResourceRequest")),
        f(2, "resourceClaimName", K::Str),
    ]),
    ("k8s.io.api.core.v1.PodIP", &[
        f(1, "ip", K::Str),
    ]),
    ("k8s.io.api.core.v1.PodOS", &[
        f(1, "name", K::Str),
    ]),
    ("k8s.io.api.core.v1.PodReadinessGate", &[
        f(1, "conditionType", K::Str),
    ]),
    ("k8s.io.api.core.v1.PodResourceClaim", &[
        f(1, "name", K::Str),
        f(3, "resourceClaimName", K::Str),
        f(4, "resourceClaimTemplateName", K::Str),
    ]),
    ("k8s.io.api.core.v1.PodResourceClaimStatus", &[
        f(1, "name", K::Str),
        f(2, "resourceClaimName", K::Str),
    ]),
    ("k8s.io.api.core.v1.PodSchedulingGate", &[
        f(1, "name", K::Str),
    ]),
    ("k8s.io.api.core.v1.PodSecurityContext", &[
        f(1, "seLinuxOptions", K::Msg("k8s.io.api.core.v1.SELinuxOptions")),
        f(2, "runAsUser", K::Int),
        f(3, "runAsNonRoot", K::Bool),
        r(4, "supplementalGroups", K::Int),
        f(5, "fsGroup", K::Int),
        f(6, "runAsGroup", K::Int),
        r(7, "sysctls", K::Msg("k8s.io.api.core.v1.Sysctl")),
        f(8, "windowsOptions", K::Msg("k8s.io.api.core.v1.WindowsSecurityContextOptions")),
        f(9, "fsGroupChangePolicy", K::Str),
        f(10, "seccompProfile", K::Msg("k8s.io.api.core.v1.SeccompProfile")),
        f(11, "appArmorProfile", K::Msg("k8s.io.api.core.v1.AppArmorProfile")),
        f(12, "supplementalGroupsPolicy", K::Str),
        f(13, "seLinuxChangePolicy", K::Str),
    ]),
    ("k8s.io.api.core.v1.PodSpec", &[
        r(1, "volumes", K::Msg("k8s.io.api.core.v1.Volume")),
        r(2, "containers", K::Msg("k8s.io.api.core.v1.Container")),
        f(3, "restartPolicy", K::Str),
        f(4, "terminationGracePeriodSeconds", K::Int),
        f(5, "activeDeadlineSeconds", K::Int),
        f(6, "dnsPolicy", K::Str),
        f(7, "nodeSelector", K::MapStr),
        f(8, "serviceAccountName", K::Str),
        f(9, "serviceAccount", K::Str),
        f(10, "nodeName", K::Str),
        f(11, "hostNetwork", K::Bool),
        f(12, "hostPID", K::Bool),
        f(13, "hostIPC", K::Bool),
        f(14, "securityContext", K::Msg("k8s.io.api.core.v1.PodSecurityContext")),
        r(15, "imagePullSecrets", K::Msg("k8s.io.api.core.v1.LocalObjectReference")),
        f(16, "hostname", K::Str),
        f(17, "subdomain", K::Str),
        f(18, "affinity", K::Msg("k8s.io.api.core.v1.Affinity")),
        f(19, "schedulerName", K::Str),
        r(20, "initContainers", K::Msg("k8s.io.api.core.v1.Container")),
        f(21, "automountServiceAccountToken", K::Bool),
        r(22, "tolerations", K::Msg("k8s.io.api.core.v1.Toleration")),
        r(23, "hostAliases", K::Msg("k8s.io.api.core.v1.HostAlias")),
        f(24, "priorityClassName", K::Str),
        f(25, "priority", K::Int),
        f(26, "dnsConfig", K::Msg("k8s.io.api.core.v1.PodDNSConfig")),
        f(27, "shareProcessNamespace", K::Bool),
        r(28, "readinessGates", K::Msg("k8s.io.api.core.v1.PodReadinessGate")),
        f(29, "runtimeClassName", K::Str),
        f(30, "enableServiceLinks", K::Bool),
        f(31, "preemptionPolicy", K::Str),
        f(32, "overhead", K::MapMsg("k8s.io.apimachinery.pkg.api.resource.Quantity")),
        r(33, "topologySpreadConstraints", K::Msg("k8s.io.api.core.v1.TopologySpreadConstraint")),
        r(34, "ephemeralContainers", K::Msg("k8s.io.api.core.v1.EphemeralContainer")),
        f(35, "setHostnameAsFQDN", K::Bool),
        f(36, "os", K::Msg("k8s.io.api.core.v1.PodOS")),
        f(37, "hostUsers", K::Bool),
        r(38, "schedulingGates", K::Msg("k8s.io.api.core.v1.PodSchedulingGate")),
        r(39, "resourceClaims", K::Msg("k8s.io.api.core.v1.PodResourceClaim")),
        f(40, "resources", K::Msg("k8s.io.api.core.v1.ResourceRequirements")),
        f(41, "hostnameOverride", K::Str),
        f(42, "workloadRef", K::Msg("k8s.io.api.core.v1.WorkloadReference")),
    ]),
    ("k8s.io.api.core.v1.PodStatus", &[
        f(1, "phase", K::Str),
        r(2, "conditions", K::Msg("k8s.io.api.core.v1.PodCondition")),
        f(3, "message", K::Str),
        f(4, "reason", K::Str),
        f(5, "hostIP", K::Str),
        f(6, "podIP", K::Str),
        f(7, "startTime", K::Msg("k8s.io.apimachinery.pkg.apis.meta.v1.Time")),
        r(8, "containerStatuses", K::Msg("k8s.io.api.core.v1.ContainerStatus")),
        f(9, "qosClass", K::Str),
        r(10, "initContainerStatuses", K::Msg("k8s.io.api.core.v1.ContainerStatus")),
        f(11, "nominatedNodeName", K::Str),
        r(12, "podIPs", K::Msg("k8s.io.api.core.v1.PodIP")),
        r(13, "ephemeralContainerStatuses", K::Msg("k8s.io.api.core.v1.ContainerStatus")),
        f(14, "resize", K::Str),
        r(15, "resourceClaimStatuses", K::Msg("k8s.io.api.core.v1.PodResourceClaimStatus")),
        r(16, "hostIPs", K::Msg("k8s.io.api.core.v1.HostIP")),
        f(17, "observedGeneration", K::Int),
        f(18, "extendedResourceClaimStatus", K::Msg("k8s.io.api.core.v1.PodExtendedResourceClaimStatus")),
        f(19, "allocatedResources", K::MapMsg("k8s.io.apimachinery.pkg.api.resource.Quantity")),
        f(20, "resources", K::Msg("k8s.io.api.core.v1.ResourceRequirements")),
    ]),
    ("k8s.io.api.core.v1.PodTemplate", &[
        f(1, "metadata", K::Msg("k8s.io.apimachinery.pkg.apis.meta.v1.ObjectMeta")),
        f(2, "template", K::Msg("k8s.io.api.core.v1.PodTemplateSpec")),
    ]),
    ("k8s.io.api.core.v1.PodTemplateSpec", &[
        f(1, "metadata", K::Msg("k8s.io.apimachinery.pkg.apis.meta.v1.ObjectMeta")),
        f(2, "spec", K::Msg("k8s.io.api.core.v1.PodSpec")),
    ]),
    ("k8s.io.api.core.v1.PortworxVolumeSource", &[
        f(1, "volumeID", K::Str),
        f(2, "fsType", K::Str),
        f(3, "readOnly", K::Bool),
    ]),
    ("k8s.io.api.core.v1.PreferredSchedulingTerm", &[
        f(1, "weight", K::Int),
        f(2, "preference", K::Msg("k8s.io.api.core.v1.NodeSelectorTerm")),
    ]),
    ("k8s.io.api.core.v1.Probe", &[
        f(1, "", K::Msg("k8s.io.api.core.v1.ProbeHandler")), // handler: json inline
        f(2, "initialDelaySeconds", K::Int),
        f(3, "timeoutSeconds", K::Int),
        f(4, "periodSeconds", K::Int),
        f(5, "successThreshold", K::Int),
        f(6, "failureThreshold", K::Int),
        f(7, "terminationGracePeriodSeconds", K::Int),
    ]),
    ("k8s.io.api.core.v1.ProbeHandler", &[
        f(1, "exec", K::Msg("k8s.io.api.core.v1.ExecAction")),
        f(2, "httpGet", K::Msg("k8s.io.api.core.v1.HTTPGetAction")),
        f(3, "tcpSocket", K::Msg("k8s.io.api.core.v1.TCPSocketAction")),
        f(4, "grpc", K::Msg("k8s.io.api.core.v1.GRPCAction")),
    ]),
    ("k8s.io.api.core.v1.ProjectedVolumeSource", &[
        r(1, "sources", K::Msg("k8s.io.api.core.v1.VolumeProjection")),
        f(2, "defaultMode", K::Int),
    ]),
    ("k8s.io.api.core.v1.QuobyteVolumeSource", &[
        f(1, "registry", K::Str),
        f(2, "volume", K::Str),
        f(3, "readOnly", K::Bool),
        f(4, "user", K::Str),
        f(5, "group", K::Str),
        f(6, "tenant", K::Str),
    ]),
    ("k8s.io.api.core.v1.RBDVolumeSource", &[
        r(1, "monitors", K::Str),
        f(2, "image", K::Str),
        f(3, "fsType", K::Str),
        f(4, "pool", K::Str),
        f(5, "user", K::Str),
        f(6, "keyring", K::Str),
        f(7, "secretRef", K::Msg("k8s.io.api.core.v1.LocalObjectReference")),
        f(8, "readOnly", K::Bool),
    ]),
    ("k8s.io.api.core.v1.ReplicationController", &[
        f(1, "metadata", K::Msg("k8s.io.apimachinery.pkg.apis.meta.v1.ObjectMeta")),
        f(2, "spec", K::Msg("k8s.io.api.core.v1.ReplicationControllerSpec")),
        f(3, "status", K::Msg("k8s.io.api.core.v1.ReplicationControllerStatus")),
    ]),
    ("k8s.io.api.core.v1.ReplicationControllerCondition", &[
        f(1, "type", K::Str),
        f(2, "status", K::Str),
        f(3, "lastTransitionTime", K::Msg("k8s.io.apimachinery.pkg.apis.meta.v1.Time")),
        f(4, "reason", K::Str),
        f(5, "message", K::Str),
    ]),
    ("k8s.io.api.core.v1.ReplicationControllerSpec", &[
        f(1, "replicas", K::Int),
        f(2, "selector", K::MapStr),
        f(3, "template", K::Msg("k8s.io.api.core.v1.PodTemplateSpec")),
        f(4, "minReadySeconds", K::Int),
    ]),
    ("k8s.io.api.core.v1.ReplicationControllerStatus", &[
        f(1, "replicas", K::Int),
        f(2, "fullyLabeledReplicas", K::Int),
        f(3, "observedGeneration", K::Int),
        f(4, "readyReplicas", K::Int),
        f(5, "availableReplicas", K::Int),
        r(6, "conditions", K::Msg("k8s.io.api.core.v1.ReplicationControllerCondition")),
    ]),
    ("k8s.io.api.core.v1.ResourceClaim", &[
        f(1, "name", K::Str),
        f(2, "request", K::Str),
    ]),
    ("k8s.io.api.core.v1.ResourceFieldSelector", &[
        f(1, "containerName", K::Str),
        f(2, "resource", K::Str),
        f(3, "divisor", K::Msg("k8s.io.apimachinery.pkg.api.resource.Quantity")),
    ]),
    ("k8s.io.api.core.v1.ResourceHealth", &[
        f(1, "resourceID", K::Str),
        f(2, "health", K::Str),
        f(6, "message", K::Str),
    ]),
    ("k8s.io.api.core.v1.ResourceRequirements", &[
        f(1, "limits", K::MapMsg("k8s.io.apimachinery.pkg.api.resource.Quantity")),
        f(2, "requests", K::MapMsg("k8s.io.apimachinery.pkg.api.resource.Quantity")),
        r(3, "claims", K::Msg("k8s.io.api.core.v1.ResourceClaim")),
    ]),
    ("k8s.io.api.core.v1.ResourceStatus", &[
        f(1, "name", K::Str),
        r(2, "resources", K::Msg("k8s.io.api.core.v1.ResourceHealth")),
    ]),
    ("k8s.io.api.core.v1.SELinuxOptions", &[
        f(1, "user", K::Str),
        f(2, "role", K::Str),
        f(3, "type", K::Str),
        f(4, "level", K::Str),
    ]),
    ("k8s.io.api.core.v1.ScaleIOVolumeSource", &[
        f(1, "gateway", K::Str),
        f(2, "system", K::Str),
        f(3, "secretRef", K::Msg("k8s.io.api.core.v1.LocalObjectReference")),
        f(4, "sslEnabled", K::Bool),
        f(5, "protectionDomain", K::Str),
        f(6, "storagePool", K::Str),
        f(7, "storageMode", K::Str),
        f(8, "volumeName", K::Str),
        f(9, "fsType", K::Str),
        f(10, "readOnly", K::Bool),
    ]),
    ("k8s.io.api.core.v1.SeccompProfile", &[
        f(1, "type", K::Str),
        f(2, "localhostProfile", K::Str),
    ]),
    ("k8s.io.api.core.v1.Secret", &[
        f(1, "metadata", K::Msg("k8s.io.apimachinery.pkg.apis.meta.v1.ObjectMeta")),
        f(2, "data", K::MapBytes),
        f(3, "type", K::Str),
        f(4, "stringData", K::MapStr),
        f(5, "immutable", K::Bool),
    ]),
    ("k8s.io.api.core.v1.SecretEnvSource", &[
        f(1, "", K::Msg("k8s.io.api.core.v1.LocalObjectReference")), // localObjectReference: json inline
        f(2, "optional", K::Bool),
    ]),
    ("k8s.io.api.core.v1.SecretKeySelector", &[
        f(1, "", K::Msg("k8s.io.api.core.v1.LocalObjectReference")), // localObjectReference: json inline
        f(2, "key", K::Str),
        f(3, "optional", K::Bool),
    ]),
    ("k8s.io.api.core.v1.SecretProjection", &[
        f(1, "", K::Msg("k8s.io.api.core.v1.LocalObjectReference")), // localObjectReference: json inline
        r(2, "items", K::Msg("k8s.io.api.core.v1.KeyToPath")),
        f(4, "optional", K::Bool),
    ]),
    ("k8s.io.api.core.v1.SecretReference", &[
        f(1, "name", K::Str),
        f(2, "namespace", K::Str),
    ]),
    ("k8s.io.api.core.v1.SecretVolumeSource", &[
        f(1, "secretName", K::Str),
        r(2, "items", K::Msg("k8s.io.api.core.v1.KeyToPath")),
        f(3, "defaultMode", K::Int),
        f(4, "optional", K::Bool),
    ]),
    ("k8s.io.api.core.v1.SecurityContext", &[
        f(1, "capabilities", K::Msg("k8s.io.api.core.v1.Capabilities")),
        f(2, "privileged", K::Bool),
        f(3, "seLinuxOptions", K::Msg("k8s.io.api.core.v1.SELinuxOptions")),
        f(4, "runAsUser", K::Int),
        f(5, "runAsNonRoot", K::Bool),
        f(6, "readOnlyRootFilesystem", K::Bool),
        f(7, "allowPrivilegeEscalation", K::Bool),
        f(8, "runAsGroup", K::Int),
        f(9, "procMount", K::Str),
        f(10, "windowsOptions", K::Msg("k8s.io.api.core.v1.WindowsSecurityContextOptions")),
        f(11, "seccompProfile", K::Msg("k8s.io.api.core.v1.SeccompProfile")),
        f(12, "appArmorProfile", K::Msg("k8s.io.api.core.v1.AppArmorProfile")),
        r(13, "ulimits", K::Msg("k8s.io.api.core.v1.Ulimit")),
    ]),
    ("k8s.io.api.core.v1.ServiceAccount", &[
        f(1, "metadata", K::Msg("k8s.io.apimachinery.pkg.apis.meta.v1.ObjectMeta")),
        r(2, "secrets", K::Msg("k8s.io.api.core.v1.ObjectReference")),
        r(3, "imagePullSecrets", K::Msg("k8s.io.api.core.v1.LocalObjectReference")),
        f(4, "automountServiceAccountToken", K::Bool),
    ]),
    ("k8s.io.api.core.v1.ServiceAccountTokenProjection", &[
        f(1, "audience", K::Str),
        f(2, "expirationSeconds", K::Int),
        f(3, "path", K::Str),
    ]),
    ("k8s.io.api.core.v1.SleepAction", &[
        f(1, "seconds", K::Int),
    ]),
    ("k8s.io.api.core.v1.StorageOSVolumeSource", &[
        f(1, "volumeName", K::Str),
        f(2, "volumeNamespace", K::Str),
        f(3, "fsType", K::Str),
        f(4, "readOnly", K::Bool),
        f(5, "secretRef", K::Msg("k8s.io.api.core.v1.LocalObjectReference")),
    ]),
    ("k8s.io.api.core.v1.Sysctl", &[
        f(1, "name", K::Str),
        f(2, "value", K::Str),
    ]),
    ("k8s.io.api.core.v1.TCPSocketAction", &[
        f(1, "port", K::Msg("k8s.io.apimachinery.pkg.util.intstr.IntOrString")),
        f(2, "host", K::Str),
    ]),
    ("k8s.io.api.core.v1.Taint", &[
        f(1, "key", K::Str),
        f(2, "value", K::Str),
        f(3, "effect", K::Str),
        f(4, "timeAdded", K::Msg("k8s.io.apimachinery.pkg.apis.meta.v1.Time")),
    ]),
    ("k8s.io.api.core.v1.Toleration", &[
        f(1, "key", K::Str),
        f(2, "operator", K::Str),
        f(3, "value", K::Str),
        f(4, "effect", K::Str),
        f(5, "tolerationSeconds", K::Int),
    ]),
    ("k8s.io.api.core.v1.TopologySpreadConstraint", &[
        f(1, "maxSkew", K::Int),
        f(2, "topologyKey", K::Str),
        f(3, "whenUnsatisfiable", K::Str),
        f(4, "labelSelector", K::Msg("k8s.io.apimachinery.pkg.apis.meta.v1.LabelSelector")),
        f(5, "minDomains", K::Int),
        f(6, "nodeAffinityPolicy", K::Str),
        f(7, "nodeTaintsPolicy", K::Str),
        r(8, "matchLabelKeys", K::Str),
    ]),
    ("k8s.io.api.core.v1.TypedLocalObjectReference", &[
        f(1, "apiGroup", K::Str),
        f(2, "kind", K::Str),
        f(3, "name", K::Str),
    ]),
    ("k8s.io.api.core.v1.TypedObjectReference", &[
        f(1, "apiGroup", K::Str),
        f(2, "kind", K::Str),
        f(3, "name", K::Str),
        f(4, "namespace", K::Str),
    ]),
    ("k8s.io.api.core.v1.Ulimit", &[
        f(1, "name", K::Str),
        f(2, "hard", K::Int),
        f(3, "soft", K::Int),
    ]),
    ("k8s.io.api.core.v1.Volume", &[
        f(1, "name", K::Str),
        f(2, "", K::Msg("k8s.io.api.core.v1.VolumeSource")), // volumeSource: json inline
    ]),
    ("k8s.io.api.core.v1.VolumeDevice", &[
        f(1, "name", K::Str),
        f(2, "devicePath", K::Str),
    ]),
    ("k8s.io.api.core.v1.VolumeMount", &[
        f(1, "name", K::Str),
        f(2, "readOnly", K::Bool),
        f(3, "mountPath", K::Str),
        f(4, "subPath", K::Str),
        f(5, "mountPropagation", K::Str),
        f(6, "subPathExpr", K::Str),
        f(7, "recursiveReadOnly", K::Str),
    ]),
    ("k8s.io.api.core.v1.VolumeMountStatus", &[
        f(1, "name", K::Str),
        f(2, "mountPath", K::Str),
        f(3, "readOnly", K::Bool),
        f(4, "recursiveReadOnly", K::Str),
        f(5, "", K::Msg("k8s.io.api.core.v1.VolumeStatus")), // volumeStatus: json inline (inline-ness unverified; new in v1.35)
    ]),
    ("k8s.io.api.core.v1.VolumeProjection", &[
        f(1, "secret", K::Msg("k8s.io.api.core.v1.SecretProjection")),
        f(2, "downwardAPI", K::Msg("k8s.io.api.core.v1.DownwardAPIProjection")),
        f(3, "configMap", K::Msg("k8s.io.api.core.v1.ConfigMapProjection")),
        f(4, "serviceAccountToken", K::Msg("k8s.io.api.core.v1.ServiceAccountTokenProjection")),
        f(5, "clusterTrustBundle", K::Msg("k8s.io.api.core.v1.ClusterTrustBundleProjection")),
        f(6, "podCertificate", K::Msg("k8s.io.api.core.v1.PodCertificateProjection")),
    ]),
    ("k8s.io.api.core.v1.VolumeResourceRequirements", &[
        f(1, "limits", K::MapMsg("k8s.io.apimachinery.pkg.api.resource.Quantity")),
        f(2, "requests", K::MapMsg("k8s.io.apimachinery.pkg.api.resource.Quantity")),
    ]),
    ("k8s.io.api.core.v1.VolumeSource", &[
        f(1, "hostPath", K::Msg("k8s.io.api.core.v1.HostPathVolumeSource")),
        f(2, "emptyDir", K::Msg("k8s.io.api.core.v1.EmptyDirVolumeSource")),
        f(3, "gcePersistentDisk", K::Msg("k8s.io.api.core.v1.GCEPersistentDiskVolumeSource")),
        f(4, "awsElasticBlockStore", K::Msg("k8s.io.api.core.v1.AWSElasticBlockStoreVolumeSource")),
        f(5, "gitRepo", K::Msg("k8s.io.api.core.v1.GitRepoVolumeSource")),
        f(6, "secret", K::Msg("k8s.io.api.core.v1.SecretVolumeSource")),
        f(7, "nfs", K::Msg("k8s.io.api.core.v1.NFSVolumeSource")),
        f(8, "iscsi", K::Msg("k8s.io.api.core.v1.ISCSIVolumeSource")),
        f(9, "glusterfs", K::Msg("k8s.io.api.core.v1.GlusterfsVolumeSource")),
        f(10, "persistentVolumeClaim", K::Msg("k8s.io.api.core.v1.PersistentVolumeClaimVolumeSource")),
        f(11, "rbd", K::Msg("k8s.io.api.core.v1.RBDVolumeSource")),
        f(12, "flexVolume", K::Msg("k8s.io.api.core.v1.FlexVolumeSource")),
        f(13, "cinder", K::Msg("k8s.io.api.core.v1.CinderVolumeSource")),
        f(14, "cephfs", K::Msg("k8s.io.api.core.v1.CephFSVolumeSource")),
        f(15, "flocker", K::Msg("k8s.io.api.core.v1.FlockerVolumeSource")),
        f(16, "downwardAPI", K::Msg("k8s.io.api.core.v1.DownwardAPIVolumeSource")),
        f(17, "fc", K::Msg("k8s.io.api.core.v1.FCVolumeSource")),
        f(18, "azureFile", K::Msg("k8s.io.api.core.v1.AzureFileVolumeSource")),
        f(19, "configMap", K::Msg("k8s.io.api.core.v1.ConfigMapVolumeSource")),
        f(20, "vsphereVolume", K::Msg("k8s.io.api.core.v1.VsphereVirtualDiskVolumeSource")),
        f(21, "quobyte", K::Msg("k8s.io.api.core.v1.QuobyteVolumeSource")),
        f(22, "azureDisk", K::Msg("k8s.io.api.core.v1.AzureDiskVolumeSource")),
        f(23, "photonPersistentDisk", K::Msg("k8s.io.api.core.v1.PhotonPersistentDiskVolumeSource")),
        f(24, "portworxVolume", K::Msg("k8s.io.api.core.v1.PortworxVolumeSource")),
        f(25, "scaleIO", K::Msg("k8s.io.api.core.v1.ScaleIOVolumeSource")),
        f(26, "projected", K::Msg("k8s.io.api.core.v1.ProjectedVolumeSource")),
        f(27, "storageos", K::Msg("k8s.io.api.core.v1.StorageOSVolumeSource")),
        f(28, "csi", K::Msg("k8s.io.api.core.v1.CSIVolumeSource")),
        f(29, "ephemeral", K::Msg("k8s.io.api.core.v1.EphemeralVolumeSource")),
        f(30, "image", K::Msg("k8s.io.api.core.v1.ImageVolumeSource")),
    ]),
    ("k8s.io.api.core.v1.VolumeStatus", &[
        f(1, "image", K::Msg("k8s.io.api.core.v1.ImageVolumeStatus")),
    ]),
    ("k8s.io.api.core.v1.VsphereVirtualDiskVolumeSource", &[
        f(1, "volumePath", K::Str),
        f(2, "fsType", K::Str),
        f(3, "storagePolicyName", K::Str),
        f(4, "storagePolicyID", K::Str),
    ]),
    ("k8s.io.api.core.v1.WeightedPodAffinityTerm", &[
        f(1, "weight", K::Int),
        f(2, "podAffinityTerm", K::Msg("k8s.io.api.core.v1.PodAffinityTerm")),
    ]),
    ("k8s.io.api.core.v1.WindowsSecurityContextOptions", &[
        f(1, "gmsaCredentialSpecName", K::Str),
        f(2, "gmsaCredentialSpec", K::Str),
        f(3, "runAsUserName", K::Str),
        f(4, "hostProcess", K::Bool),
    ]),
    ("k8s.io.api.core.v1.WorkloadReference", &[
        f(1, "name", K::Str),
        f(2, "podGroup", K::Str),
        f(3, "podGroupReplicaKey", K::Str),
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
    // ---- k8s.io.api.authentication.v1 ----
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
        let names: HashSet<&str> = MESSAGES.iter().map(|(n, _)| *n).collect();
        assert_eq!(names.len(), MESSAGES.len(), "duplicate message name");
        for (name, fields) in MESSAGES {
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
