//! VM pods (Arktos' unified container/VM pods): a pod whose `spec.virtualMachine` replaces
//! `spec.containers`, and the VM's state in `status.virtualMachineStatus`. The field names are
//! Arktos'; the pod is scheduled, listed and deleted like any other.
//!
//! Both structs are read from the JSON a pod is kept as (`vm_of`): the
//! Kubernetes `PodSpec` type knows nothing of them.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ContainerResizePolicy, ResourceRequirements, VolumeMount};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use serde::{Deserialize, Serialize};

/// `spec.powerSpec` values: the power state the user wants (Arktos' `VmPowerSpec`).
pub const POWER_SPECS: &[&str] = &["Running", "Shutdown"];
/// `spec.shutdownBehavior` values.
pub const SHUTDOWN_BEHAVIORS: &[&str] = &["stop", "terminate"];
/// Largest `userData` (decoded bytes), as Arktos.
pub const MAX_USER_DATA: usize = 65535;
/// Largest `cloudInitUserDataScript` and `publicKey` (bytes).
pub const MAX_SCRIPT: usize = 65535;
/// What a VM gets when its resources name no CPU (limits and requests).
pub const DEFAULT_CPU: &str = "1";
/// What a VM gets when its resources name no memory.
pub const DEFAULT_MEMORY: &str = "128Mi";
/// What running a VM costs the node beside the guest's own memory and CPU (the qemu process,
/// its device emulation and the serial console): counted as the pod's `spec.overhead`, as
/// Kubernetes counts a RuntimeClass' overhead.
pub const OVERHEAD_CPU: &str = "100m";
/// Memory overhead of one VM beside its guest memory (see [`OVERHEAD_CPU`]): measured under
/// TCG at about 57 MiB resident beyond a 128 MiB guest (13 MiB of qemu's binary, its 16 MiB
/// translation cache, heap and device state); the qemu process's cgroup gets guest + this.
pub const OVERHEAD_MEMORY: &str = "80Mi";
/// The unit (bytes) a running VM's memory grows in: x86-64 Linux onlines hot-plugged memory
/// in 128 MiB blocks.
pub const MEMORY_BLOCK: f64 = 128.0 * 1024.0 * 1024.0;

/// Label a node's agent sets when it runs VM pods (its value: the hypervisor, `qemu`). The
/// schedulers place a VM pod only on such nodes, as if its RuntimeClass selected them.
pub const NODE_LABEL: &str = "vm.atoll.io/runtime";

/// The virtual machine a VM pod runs (in place of containers).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
#[cfg_attr(
    feature = "schema",
    schemars(rename = "io.k8s.api.core.v1.VirtualMachine")
)]
pub struct VirtualMachine {
    /// Name of the virtual machine (a DNS label, unique in the pod). Cannot be updated.
    pub name: String,
    /// OCI image holding the VM: `/boot/vmlinuz` and `/boot/initrd.img` (direct kernel boot),
    /// or one disk under `/disk/` (qcow2 or raw), or both.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Image pull policy: Always, Never or IfNotPresent (the default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_policy: Option<String>,
    /// The VM's vCPUs and memory: limits size the guest (requests default to them; absent, one
    /// vCPU and 128Mi).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Node resources allocated to the VM (set by the node agent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources_allocated: Option<BTreeMap<String, Quantity>>,
    /// How a resize applies, per resource (as a container's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resize_policy: Option<Vec<ContainerResizePolicy>>,
    /// Pod volumes to attach to the VM.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_mounts: Option<Vec<VolumeMount>>,
    /// Name of a key pair to log on to the VM with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_pair_name: Option<String>,
    /// A public key to log on to the VM with (given to the guest's cloud-init).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_key: Option<String>,
    /// Configuration or scripts for the guest at launch (base64 in JSON; at most 65535
    /// bytes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schemars(with = "Option<String>"))]
    pub user_data: Option<k8s_openapi::ByteString>,
    /// IDs of certificates that verify the image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trusted_image_certificate: Option<Vec<String>>,
    /// What a guest power-off means: `stop` (the default: restartPolicy applies) or
    /// `terminate` (the pod finishes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shutdown_behavior: Option<String>,
    /// The volume to boot from (default: the image's disk).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_volume: Option<String>,
    /// The power state wanted: `Running` (the default) or `Shutdown`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub power_spec: Option<String>,
    /// A cloud-init user-data script for the guest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cloud_init_user_data_script: Option<String>,
}

/// The observed state of a pod's VM (Arktos' `VirtualMachineStatus`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
#[cfg_attr(
    feature = "schema",
    schemars(rename = "io.k8s.api.core.v1.VirtualMachineStatus")
)]
pub struct VirtualMachineStatus {
    /// Name of the VM (as in the spec).
    pub name: String,
    /// The runtime's ID of the VM.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub virtual_machine_id: Option<String>,
    /// The image's digest (`image@sha256:...`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_id: Option<String>,
    /// The image the VM runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// The VM's state: `active`, `stopped`, `error` (Arktos' VmState).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// The state the VM was in when it last ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_termination_state: Option<String>,
    /// What the hypervisor reports: `nostate`, `running`, `paused`, `shutdown`, `crashed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub power_state: Option<String>,
    /// Whether the VM is running (its guest booted and its console answers).
    #[serde(default)]
    pub ready: bool,
    /// How many times the VM was started again.
    #[serde(default)]
    pub restart_count: i32,
    /// The vCPUs and memory the VM runs with now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
}

/// The fields of a VM pod's one container, the VM's mirror.
const MIRROR_FIELDS: &[&str] = &["name", "image", "imagePullPolicy", "resources"];

/// The container a VM pod shows in `spec.containers`: a read-only mirror of its VM (name,
/// image, pull policy, resources), kept by the API on every write, so that Kubernetes clients
/// which need a container (`kubectl logs`, `describe`, `top`) handle a VM pod as a pod of one.
pub fn mirror(vm: &serde_json::Value) -> serde_json::Value {
    let mut m = serde_json::Map::new();
    for f in MIRROR_FIELDS {
        if let Some(v) = vm.get(*f).filter(|v| !v.is_null()) {
            m.insert((*f).into(), v.clone());
        }
    }
    serde_json::Value::Object(m)
}

/// Whether `containers` is (an earlier form of) the mirror of a VM named `name`: one container
/// of that name with no field but the mirror's.
pub fn is_mirror(containers: &serde_json::Value, name: &str) -> bool {
    match containers.as_array().map(Vec::as_slice) {
        None => containers.is_null(),
        Some([]) => true,
        Some([c]) => {
            c.get("name").and_then(serde_json::Value::as_str) == Some(name)
                && c.as_object()
                    .is_some_and(|o| o.keys().all(|k| MIRROR_FIELDS.contains(&k.as_str())))
        }
        Some(_) => false,
    }
}

/// A pod's VM, if it is a VM pod (`None` also when the field does not decode).
pub fn vm_of(pod: &serde_json::Value) -> Option<VirtualMachine> {
    VirtualMachine::deserialize(pod.pointer("/spec/virtualMachine")?).ok()
}

/// Whether a pod is a VM pod.
pub fn is_vm(pod: &serde_json::Value) -> bool {
    pod.pointer("/spec/virtualMachine").is_some()
}
