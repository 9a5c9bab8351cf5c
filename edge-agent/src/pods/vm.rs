//! VM pods: the pod's one container (the VM's mirror) runs as the VM's qemu under the shim,
//! in the pod's network namespace and cgroup; its serial console is the container's log, its
//! exit the container's (restart policy, back-off and status as for any container), a
//! graceful stop an ACPI power-down. The worker's other steps (sandbox, volumes, termination,
//! re-adoption) are the container pod's.

use super::*;
use crate::vm::{image as vm_image, qemu};
use proto::vm::VirtualMachine;

/// The directory of QMP sockets (a unix socket path must stay short: the pod's own directory
/// may lie too deep).
pub const QMP_DIR: &str = "/run/atoll/vm";

/// The cgroup controllers a VM's qemu is limited by (cgroup v1).
const CONTROLLERS: &[&str] = &["cpu", "memory", "pids"];

/// A quantity in whole units (`"2"` → 2, `"256Mi"` → 268435456).
fn amount(q: Option<&k8s_openapi::apimachinery::pkg::api::resource::Quantity>) -> Option<f64> {
    q.and_then(|q| proto::quantity(&q.0))
}

/// The VM's size: vCPUs and MiB of memory (its limits, as the API defaulted them).
pub fn size(vm: &VirtualMachine) -> (u32, u64) {
    size_of(vm.resources.as_ref())
}

/// vCPUs and MiB of memory of a VM with `resources`.
pub fn size_of(resources: Option<&k8s_openapi::api::core::v1::ResourceRequirements>) -> (u32, u64) {
    let limits = resources.and_then(|r| r.limits.as_ref());
    let cpu = amount(limits.and_then(|l| l.get("cpu")))
        .unwrap_or(1.0)
        .clamp(1.0, 255.0) as u32;
    let mem = amount(limits.and_then(|l| l.get("memory")))
        .map_or(128, |b| (b / (1024.0 * 1024.0)).ceil() as u64)
        .max(32);
    (cpu, mem)
}

/// The guest NIC's MAC: locally administered, from the pod's IP (stable across restarts).
pub fn mac_for(ip: std::net::Ipv4Addr) -> String {
    let o = ip.octets();
    format!("02:a7:{:02x}:{:02x}:{:02x}:{:02x}", o[0], o[1], o[2], o[3])
}

impl<R: Runtime> Worker<R> {
    /// The cgroup directories of the VM (created, with its limits: the guest's memory and vCPUs
    /// plus the per-VM overhead).
    pub(super) fn vm_cgroups(&self, name: &str, vcpus: u32, mem_mib: u64) -> Vec<PathBuf> {
        let overhead_mem = proto::quantity(proto::vm::OVERHEAD_MEMORY).unwrap_or(0.0) as u64;
        let overhead_cpu =
            (proto::quantity(proto::vm::OVERHEAD_CPU).unwrap_or(0.0) * 1000.0) as u64;
        let mut out = Vec::new();
        for ctrl in CONTROLLERS {
            let dir = Path::new("/sys/fs/cgroup")
                .join(ctrl)
                .join("atoll")
                .join(&self.uid)
                .join(name);
            if std::fs::create_dir_all(&dir).is_err() {
                continue;
            }
            let _ = match *ctrl {
                "memory" => std::fs::write(
                    dir.join("memory.limit_in_bytes"),
                    ((mem_mib << 20) + overhead_mem).to_string(),
                ),
                "cpu" => std::fs::write(dir.join("cpu.cfs_period_us"), "100000").and_then(|_| {
                    std::fs::write(
                        dir.join("cpu.cfs_quota_us"),
                        ((u64::from(vcpus) * 1000 + overhead_cpu) * 100).to_string(),
                    )
                }),
                _ => Ok(()),
            };
            out.push(dir);
        }
        out
    }

    /// Start the pod's VM (attempt = its restart count): image, its check, the disk overlay,
    /// the command line, the shim.
    pub(super) async fn start_vm(
        &mut self,
        p: &PodObj,
        c: &Container,
        vm: &VirtualMachine,
    ) -> Result<State, (String, String)> {
        let Some(q) = self.node.vm.clone() else {
            return Err((
                "VMUnsupported".into(),
                "this node runs no virtual machines".into(),
            ));
        };
        if vm.power_spec.as_deref() == Some("Shutdown") {
            return Err((
                "VMPoweredOff".into(),
                "the VM's powerSpec is Shutdown".into(),
            ));
        }
        let image_ref = vm.image.clone().unwrap_or_default();
        let policy = PullPolicy::parse(vm.image_pull_policy.as_deref(), &image_ref);
        let img = self.pull(&image_ref, policy).await?;
        let refused = |m: String| ("VMImageRefused".to_string(), m);
        let files = vm_image::inspect(&img.rootfs).map_err(refused)?;
        let dir = self.pod_dir().join("vm");
        std::fs::create_dir_all(&dir).map_err(|e| refused(format!("{}: {e}", dir.display())))?;
        // The guest's disk: a copy-on-write overlay that lives as long as the pod; the image's
        // disk is only ever read.
        let overlay = match &files.disk {
            None => None,
            Some((disk, format)) => {
                let ov = dir.join("disk.qcow2");
                if !ov.exists() {
                    if *format == vm_image::DiskFormat::Qcow2 {
                        qemu::check_disk(disk).await.map_err(refused)?;
                    }
                    qemu::create_overlay(disk, *format, &ov)
                        .await
                        .map_err(refused)?;
                }
                Some(ov)
            }
        };
        let (vcpus, memory_mib) = size(vm);
        let node_cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as u32;
        let qmp_dir = Path::new(QMP_DIR);
        std::fs::create_dir_all(qmp_dir)
            .map_err(|e| ("RunContainerError".to_string(), format!("{QMP_DIR}: {e}")))?;
        let qmp = qmp_dir.join(format!("{}.qmp", self.uid));
        let _ = std::fs::remove_file(&qmp);
        let net = self.vm_net().await?;
        let plan = qemu::VmPlan {
            name: p.name().to_string(),
            vcpus,
            max_vcpus: vcpus.max(node_cpus),
            memory_mib,
            max_memory_mib: (memory_mib * 2).max(memory_mib + 1024),
            image: files,
            overlay,
            net,
            qmp: qmp.clone(),
        };
        let mut argv = vec![q.binary.to_string_lossy().into_owned()];
        argv.extend(qemu::argv(&q, &plan));
        let netns = self
            .node
            .network
            .as_ref()
            .and_then(|n| n.get(&self.uid))
            .and_then(|n| {
                n.netns
                    .file_name()
                    .map(|f| f.to_string_lossy().into_owned())
            });
        let exec = crate::runtime::Exec {
            argv,
            netns,
            cgroups: self.vm_cgroups(&c.name, vcpus, memory_mib),
            qmp: Some(qmp),
            dhcp: plan.net.as_ref().map(|n| crate::vm::dhcp::Lease {
                device: crate::network::VM_BRIDGE.into(),
                mac: n.mac.clone(),
                ip: n.ip,
                prefix: n.prefix,
                gateway: n.gateway,
                dns: Vec::new(),
                hostname: p.name().chars().take(63).collect(),
            }),
        };
        let log = self.begin_attempt(p, c, &img.id);
        self.node
            .runtime
            .start_exec(&self.cid(&c.name), exec, log)
            .await
            .map_err(|e| ("RunContainerError".to_string(), e.to_string()))
    }

    /// The guest's network: the pod's address lent to it on a tap bridged with the pod's
    /// `eth0` (on its tenant's network), given on the kernel command line.
    async fn vm_net(&self) -> Result<Option<qemu::GuestNet>, (String, String)> {
        let Some(net) = &self.node.network else {
            return Ok(None);
        };
        let n = net.lend_to_vm(&self.uid).await.map_err(|e| {
            (
                "RunContainerError".to_string(),
                format!("the VM's network: {e}"),
            )
        })?;
        Ok(Some(qemu::GuestNet {
            tap: crate::network::VM_TAP.into(),
            mac: mac_for(n.ip),
            ip: n.ip,
            prefix: 24,
            gateway: n.gateway,
        }))
    }
}

/// A VM pod's `status.virtualMachineStatus`, from its container's status (the mirror's).
pub fn vm_status(vm: &VirtualMachine, container: &Value) -> Value {
    let running = container.pointer("/state/running").is_some();
    let terminated = container.pointer("/state/terminated").is_some();
    let waiting = container
        .pointer("/state/waiting/reason")
        .and_then(Value::as_str);
    let (state, power) = if running {
        ("active", "running")
    } else if terminated {
        ("stopped", "shutdown")
    } else {
        match waiting {
            Some("VMPoweredOff") => ("stopped", "shutdown"),
            Some("ContainerCreating") | None => ("building", "nostate"),
            Some(_) => ("error", "nostate"),
        }
    };
    let mut s = json!({
        "name": vm.name,
        "image": vm.image,
        "imageId": container.get("imageID").cloned().unwrap_or(Value::Null),
        "state": state,
        "powerState": power,
        "ready": running,
        "restartCount": container.get("restartCount").cloned().unwrap_or(json!(0)),
        // What the VM runs with (hot-plug changes it in place).
        "resources": container.get("resources").cloned().or_else(|| serde_json::to_value(&vm.resources).ok()),
    });
    if let Some(id) = container.get("containerID").and_then(Value::as_str) {
        s["virtualMachineId"] = json!(id.replace("runc://", "qemu://"));
    }
    if container.pointer("/lastState/terminated").is_some() {
        s["lastTerminationState"] = json!("stopped");
    }
    if let Some(o) = s.as_object_mut() {
        o.retain(|_, v| !v.is_null());
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_states() {
        let vm: VirtualMachine = serde_json::from_value(json!({"name": "vm",
            "resources": {"limits": {"cpu": "2", "memory": "256Mi"}}}))
        .unwrap();
        assert_eq!(size(&vm), (2, 256));
        let run = vm_status(
            &vm,
            &json!({"state": {"running": {}}, "restartCount": 1, "imageID": "x@sha256:1"}),
        );
        assert_eq!(
            (
                run["state"].as_str(),
                run["powerState"].as_str(),
                run["ready"].as_bool()
            ),
            (Some("active"), Some("running"), Some(true))
        );
        assert_eq!(run["restartCount"], 1);
        let off = vm_status(&vm, &json!({"state": {"terminated": {"exitCode": 0}}}));
        assert_eq!(off["state"], "stopped");
        assert_eq!(mac_for("10.88.0.5".parse().unwrap()), "02:a7:0a:58:00:05");
        let bad = vm_status(
            &vm,
            &json!({"state": {"waiting": {"reason": "VMImageRefused"}}}),
        );
        assert_eq!(
            (bad["state"].as_str(), bad["ready"].as_bool()),
            (Some("error"), Some(false))
        );
    }
}
