//! qemu: the accelerator probe, the command line of a VM pod, and QMP (qemu's JSON control
//! protocol on a unix socket) for its lifecycle.
//!
//! The command line is built only from what the agent resolved itself (paths in the pod's
//! directory, numbers from validated resources, the pod's address): no text from the image or
//! the pod spec becomes an option.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use super::image::{DiskFormat, VmImage};

/// How long the KVM probe may take before KVM counts as unusable (on some hosts `/dev/kvm`
/// exists but a guest never runs).
pub const PROBE_DEADLINE: Duration = Duration::from_secs(3);
/// The smallest guest (MiB) that gets DIMM slots for memory hot-plug (a 128 MiB guest of the
/// Debian cloud kernel runs out of memory at boot with them).
pub const MIN_HOTPLUG_MIB: u64 = 256;
/// The unit memory is hot-plugged in (MiB): the API's `MEMORY_BLOCK`.
pub const DIMM_BLOCK_MIB: u64 = (proto::vm::MEMORY_BLOCK as u64) >> 20;
/// Longest QMP line the agent reads.
const MAX_QMP_LINE: usize = 64 * 1024;

/// The accelerator VMs run with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Accel {
    /// Hardware virtualisation.
    Kvm,
    /// qemu's binary translator.
    Tcg,
}

impl Accel {
    /// qemu's name.
    pub fn name(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        }
    }
}

/// The qemu this node runs VMs with.
#[derive(Clone, Debug)]
pub struct Qemu {
    /// `qemu-system-x86_64`.
    pub binary: PathBuf,
    /// The accelerator the probe chose.
    pub accel: Accel,
    /// qboot (a fast firmware for direct kernel boot), when installed.
    pub qboot: Option<PathBuf>,
}

/// A boot sector that writes `K` to COM1 and leaves through the isa-debug-exit port with code
/// 0x31 (qemu exits with (0x31 << 1) | 1 = 99): a guest that ran.
fn probe_sector() -> Vec<u8> {
    let code = [
        0xBA, 0xF8, 0x03, // mov dx, 0x3f8
        0xB0, b'K', // mov al, 'K'
        0xEE, // out dx, al
        0xBA, 0xF4, 0x00, // mov dx, 0xf4
        0xB0, 0x31, // mov al, 0x31
        0xEE, // out dx, al
        0xF4, // hlt
        0xEB, 0xFD, // jmp $-3
    ];
    let mut s = code.to_vec();
    s.resize(510, 0);
    s.extend_from_slice(&[0x55, 0xAA]);
    s
}

/// Whether `accel` runs a guest on this host within `deadline`.
pub async fn probe(binary: &Path, accel: Accel, deadline: Duration) -> Result<(), String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let img = dir.path().join("probe.img");
    std::fs::write(&img, probe_sector()).map_err(|e| e.to_string())?;
    let mut c = tokio::process::Command::new(binary);
    // The CPU model the VMs get: on some hosts KVM runs a guest but cannot give it the host's
    // CPU (qemu aborts setting an MSR), so the probe asks for the same.
    c.args(["-machine", "pc", "-accel", accel.name()])
        .args(["-cpu", cpu_model(accel)])
        .args([
            "-nodefaults",
            "-no-user-config",
            "-display",
            "none",
            "-serial",
            "none",
        ])
        .args([
            "-device",
            "isa-debug-exit,iobase=0xf4,iosize=0x04",
            "-drive",
        ])
        .arg(format!("file={},format=raw,if=ide", img.display()))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    match tokio::time::timeout(deadline, c.output()).await {
        Err(_) => Err(format!("no guest ran within {deadline:?}")),
        Ok(Err(e)) => Err(format!("{}: {e}", binary.display())),
        Ok(Ok(o)) if o.status.code() == Some(99) => Ok(()),
        Ok(Ok(o)) => Err(format!(
            "{}: {}",
            o.status,
            String::from_utf8_lossy(&o.stderr).trim()
        )),
    }
}

impl Qemu {
    /// Find qemu (`binary`, else `qemu-system-x86_64` on PATH) and choose the accelerator:
    /// KVM when `/dev/kvm` exists and a probe guest runs within [`PROBE_DEADLINE`], else TCG
    /// (probed too). `None` when this node cannot run VMs, with the reason.
    pub async fn detect(binary: Option<PathBuf>) -> Result<Qemu, String> {
        let binary = match binary {
            Some(b) => b,
            None => {
                find_in_path("qemu-system-x86_64").ok_or("qemu-system-x86_64 is not installed")?
            }
        };
        let qboot = Some(PathBuf::from("/usr/share/qemu/qboot.rom")).filter(|p| p.is_file());
        if Path::new("/dev/kvm").exists() {
            match probe(&binary, Accel::Kvm, PROBE_DEADLINE).await {
                Ok(()) => {
                    return Ok(Qemu {
                        binary,
                        accel: Accel::Kvm,
                        qboot,
                    })
                }
                Err(e) => tracing::info!(error = %e, "KVM unusable; VMs run under TCG"),
            }
        }
        probe(&binary, Accel::Tcg, Duration::from_secs(20))
            .await
            .map_err(|e| format!("qemu cannot run a guest: {e}"))?;
        Ok(Qemu {
            binary,
            accel: Accel::Tcg,
            qboot,
        })
    }
}

fn find_in_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join(name))
            .find(|f| f.is_file())
    })
}

/// The pod's address as the guest configures it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GuestNet {
    /// The tap device in the pod's network namespace.
    pub tap: String,
    /// The guest NIC's MAC address.
    pub mac: String,
    /// The pod's IP, prefix length and gateway.
    pub ip: Ipv4Addr,
    /// Prefix length.
    pub prefix: u8,
    /// Gateway.
    pub gateway: Ipv4Addr,
}

/// What a VM pod runs with.
#[derive(Clone, Debug)]
pub struct VmPlan {
    /// The pod's name (the guest's name).
    pub name: String,
    /// vCPUs at boot, and at most (for hot-plug).
    pub vcpus: u32,
    /// Most vCPUs hot-plug may reach.
    pub max_vcpus: u32,
    /// Memory at boot (MiB), and the most hot-plugged DIMMs may reach.
    pub memory_mib: u64,
    /// Most memory (MiB).
    pub max_memory_mib: u64,
    /// The image's files.
    pub image: VmImage,
    /// The copy-on-write overlay over the image's disk (qcow2), if it has one.
    pub overlay: Option<PathBuf>,
    /// The guest's network, if it has one.
    pub net: Option<GuestNet>,
    /// The QMP socket.
    pub qmp: PathBuf,
}

/// A netmask from a prefix length.
fn mask(prefix: u8) -> Ipv4Addr {
    let bits = if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix.min(32)))
    };
    Ipv4Addr::from(bits)
}

/// The CPU model a guest gets under `accel`.
fn cpu_model(accel: Accel) -> &'static str {
    if accel == Accel::Kvm {
        "host"
    } else {
        "max"
    }
}

/// qemu's arguments for `plan` (the binary excluded).
pub fn argv(q: &Qemu, plan: &VmPlan) -> Vec<String> {
    let mut a: Vec<String> = Vec::new();
    let mut push = |xs: &[&str]| a.extend(xs.iter().map(|s| s.to_string()));
    push(&["-name", &format!("guest={},debug-threads=off", plan.name)]);
    push(&["-machine", "q35"]);
    match q.accel {
        Accel::Kvm => push(&["-accel", "kvm"]),
        // A bounded translation cache (qemu's default is 1 GiB on a large host), one
        // translation thread for all vCPUs: multi-threaded TCG splits the cache into per-vCPU
        // regions at start and aborts when a hot-plugged vCPU finds none left.
        Accel::Tcg => push(&["-accel", "tcg,tb-size=16,thread=single"]),
    }
    push(&["-cpu", cpu_model(q.accel)]);
    push(&[
        "-smp",
        &format!("{},maxcpus={}", plan.vcpus, plan.max_vcpus.max(plan.vcpus)),
    ]);
    // Memory hot-plug (DIMM slots) costs the guest early memory: a small guest boots without.
    let memory = if plan.memory_mib >= MIN_HOTPLUG_MIB && plan.max_memory_mib > plan.memory_mib {
        format!(
            "{}M,slots=8,maxmem={}M",
            plan.memory_mib, plan.max_memory_mib
        )
    } else {
        format!("{}M", plan.memory_mib)
    };
    push(&["-m", &memory]);
    push(&["-nodefaults", "-no-user-config", "-display", "none"]);
    // The serial console is the VM's log (the shim's stdout); no monitor on stdio.
    push(&["-serial", "stdio", "-monitor", "none"]);
    push(&[
        "-qmp",
        &format!("unix:{},server=on,wait=off", plan.qmp.display()),
    ]);
    if let Some((kernel, initrd)) = &plan.image.direct {
        if let Some(fw) = &q.qboot {
            push(&["-bios", &fw.to_string_lossy()]);
        }
        push(&["-kernel", &kernel.to_string_lossy()]);
        push(&["-initrd", &initrd.to_string_lossy()]);
        let mut cmdline = String::from("console=ttyS0 panic=-1 quiet");
        if let Some(n) = &plan.net {
            cmdline.push_str(&format!(
                " ip={}::{}:{}::eth0:off",
                n.ip,
                n.gateway,
                mask(n.prefix)
            ));
        }
        if plan.overlay.is_some() {
            cmdline.push_str(" root=/dev/vda");
        }
        push(&["-append", &cmdline]);
    }
    if let Some(o) = &plan.overlay {
        push(&[
            "-drive",
            &format!("if=none,id=disk0,format=qcow2,file={}", o.display()),
            "-device",
            "virtio-blk-pci,drive=disk0",
        ]);
    }
    match &plan.net {
        Some(n) => push(&[
            "-netdev",
            &format!("tap,id=net0,ifname={},script=no,downscript=no", n.tap),
            "-device",
            &format!("virtio-net-pci,netdev=net0,mac={}", n.mac),
        ]),
        None => push(&["-nic", "none"]),
    }
    a
}

/// The overlay's creation: a qcow2 over the image's disk, which stays untouched.
pub async fn create_overlay(base: &Path, format: DiskFormat, overlay: &Path) -> Result<(), String> {
    let mut c = tokio::process::Command::new("qemu-img");
    c.args(["create", "-q", "-f", "qcow2", "-F", format.name(), "-b"])
        .arg(base)
        .arg(overlay);
    crate::runtime::run_cmd(&mut c, Duration::from_secs(30))
        .await
        .map(|_| ())
        .map_err(|e| format!("creating the disk overlay: {e}"))
}

/// A qcow2 disk's consistency, by `qemu-img check` (a corrupt image is refused before qemu
/// runs it).
pub async fn check_disk(disk: &Path) -> Result<(), String> {
    let mut c = tokio::process::Command::new("qemu-img");
    c.args(["check", "-q", "-f", "qcow2"]).arg(disk);
    crate::runtime::run_cmd(&mut c, Duration::from_secs(60))
        .await
        .map(|_| ())
        .map_err(|e| format!("the image's disk is corrupt: {e}"))
}

/// The next QMP answer (asynchronous events interleave with answers and are skipped).
async fn qmp_read(r: &mut BufReader<tokio::net::unix::OwnedReadHalf>) -> Result<Value, String> {
    use tokio::io::AsyncReadExt as _;
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = (&mut *r)
            .take(MAX_QMP_LINE as u64)
            .read_until(b'\n', &mut line)
            .await
            .map_err(|e| format!("QMP read: {e}"))?;
        if n == 0 {
            return Err("QMP closed".to_string());
        }
        let v: Value = serde_json::from_slice(&line).map_err(|e| format!("QMP answer: {e}"))?;
        if v.get("event").is_none() {
            return Ok(v);
        }
    }
}

/// One QMP command on the socket at `sock` (greeting, capabilities, then `cmd`): its `return`.
pub async fn qmp(sock: &Path, cmd: &str, args: Value, deadline: Duration) -> Result<Value, String> {
    let exchange = async {
        let s = tokio::net::UnixStream::connect(sock)
            .await
            .map_err(|e| format!("QMP {}: {e}", sock.display()))?;
        let (r, mut w) = s.into_split();
        let mut r = BufReader::new(r);
        qmp_read(&mut r).await?; // the greeting
        for (c, a) in [("qmp_capabilities", json!({})), (cmd, args)] {
            let msg = json!({"execute": c, "arguments": a});
            w.write_all(format!("{msg}\n").as_bytes())
                .await
                .map_err(|e| format!("QMP write: {e}"))?;
            let v = qmp_read(&mut r).await?;
            if let Some(e) = v.get("error") {
                return Err(format!(
                    "QMP {c}: {}",
                    e.get("desc").and_then(Value::as_str).unwrap_or("error")
                ));
            }
            if c == cmd {
                return Ok(v.get("return").cloned().unwrap_or(Value::Null));
            }
        }
        Err("QMP: no answer".to_string())
    };
    tokio::time::timeout(deadline, exchange)
        .await
        .map_err(|_| format!("QMP {cmd}: no answer within {deadline:?}"))?
}

/// How long one hot-plug command may take.
const PLUG_DEADLINE: Duration = Duration::from_secs(10);

/// Plug vCPUs into the VM behind `sock` until it has `total` (idempotent: counts the plugged
/// ones first), on the free slots `query-hotpluggable-cpus` lists.
pub async fn plug_vcpus(sock: &Path, total: u32) -> Result<(), String> {
    let slots = qmp(sock, "query-hotpluggable-cpus", json!({}), PLUG_DEADLINE).await?;
    let slots = slots.as_array().cloned().unwrap_or_default();
    let plugged = slots.iter().filter(|s| s.get("qom-path").is_some()).count() as u32;
    if plugged >= total {
        return Ok(());
    }
    let free: Vec<&Value> = slots
        .iter()
        .filter(|s| s.get("qom-path").is_none())
        .collect();
    let need = (total - plugged) as usize;
    if free.len() < need {
        return Err(format!(
            "the VM can have at most {} vCPUs (it was started with room for that many: as many as the node has)",
            plugged as usize + free.len()
        ));
    }
    // qemu lists free slots highest first; plug in ascending order.
    let mut free = free;
    free.reverse();
    for slot in free.into_iter().take(need) {
        let mut args = slot.get("props").cloned().unwrap_or(json!({}));
        let id = format!(
            "vcpu-s{}-c{}-t{}",
            args.get("socket-id").and_then(Value::as_u64).unwrap_or(0),
            args.get("core-id").and_then(Value::as_u64).unwrap_or(0),
            args.get("thread-id").and_then(Value::as_u64).unwrap_or(0)
        );
        args["driver"] = slot.get("type").cloned().unwrap_or(Value::Null);
        args["id"] = json!(id);
        qmp(sock, "device_add", args, PLUG_DEADLINE)
            .await
            .map_err(|e| format!("hot-plugging a vCPU: {e}"))?;
    }
    Ok(())
}

/// Plug DIMMs into the VM behind `sock` until its memory is `total_mib` (idempotent: reads
/// base and plugged memory first).
pub async fn plug_memory(sock: &Path, total_mib: u64) -> Result<(), String> {
    let sum = qmp(sock, "query-memory-size-summary", json!({}), PLUG_DEADLINE).await?;
    let mib = |k: &str| sum.get(k).and_then(Value::as_u64).unwrap_or(0) >> 20;
    let (base, plugged) = (mib("base-memory"), mib("plugged-memory"));
    if base + plugged >= total_mib {
        return Ok(());
    }
    if base < MIN_HOTPLUG_MIB {
        return Err(format!(
            "the VM was started without memory hot-plug (a guest under {MIN_HOTPLUG_MIB}Mi boots without DIMM slots); recreate the pod to give it more memory"
        ));
    }
    let add = total_mib - base - plugged;
    // Named after where they start in the hot-plugged range: unique per VM.
    let (mem, dimm) = (format!("mem-{plugged}"), format!("dimm-{plugged}"));
    qmp(
        sock,
        "object-add",
        json!({"qom-type": "memory-backend-ram", "id": mem, "size": add << 20}),
        PLUG_DEADLINE,
    )
    .await?;
    if let Err(e) = qmp(
        sock,
        "device_add",
        json!({"driver": "pc-dimm", "id": dimm, "memdev": mem}),
        PLUG_DEADLINE,
    )
    .await
    {
        let _ = qmp(sock, "object-del", json!({"id": mem}), PLUG_DEADLINE).await;
        return Err(format!("hot-plugging {add}Mi of memory: {e}"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(direct: bool, disk: bool, net: bool) -> VmPlan {
        VmPlan {
            name: "web".into(),
            vcpus: 2,
            max_vcpus: 4,
            memory_mib: 256,
            max_memory_mib: 1024,
            image: VmImage {
                direct: direct.then(|| ("/p/vmlinuz".into(), "/p/initrd.img".into())),
                disk: disk.then(|| ("/p/disk.qcow2".into(), DiskFormat::Qcow2)),
            },
            overlay: disk.then(|| "/p/overlay.qcow2".into()),
            net: net.then(|| GuestNet {
                tap: "tap0".into(),
                mac: "02:00:0a:58:00:05".into(),
                ip: Ipv4Addr::new(10, 88, 0, 5),
                prefix: 24,
                gateway: Ipv4Addr::new(10, 88, 0, 1),
            }),
            qmp: "/p/qmp.sock".into(),
        }
    }

    #[test]
    fn command_lines() {
        let q = Qemu {
            binary: "qemu".into(),
            accel: Accel::Tcg,
            qboot: None,
        };
        let a = argv(&q, &plan(true, false, true)).join(" ");
        assert!(
            a.contains(
                "-accel tcg,tb-size=16,thread=single -cpu max -smp 2,maxcpus=4 -m 256M,slots=8,maxmem=1024M"
            ),
            "{a}"
        );
        let mut small = plan(true, false, false);
        small.memory_mib = 128;
        assert!(argv(&q, &small).join(" ").contains("-m 128M -nodefaults"));
        assert!(
            a.contains("-kernel /p/vmlinuz -initrd /p/initrd.img"),
            "{a}"
        );
        assert!(
            a.contains("ip=10.88.0.5::10.88.0.1:255.255.255.0::eth0:off"),
            "{a}"
        );
        assert!(a.contains("ifname=tap0,script=no,downscript=no"), "{a}");
        assert!(a.contains("-serial stdio -monitor none"), "{a}");
        assert!(!a.contains("-drive"), "{a}");
        let a = argv(&q, &plan(false, true, false)).join(" ");
        assert!(
            a.contains("file=/p/overlay.qcow2") && a.contains("-nic none"),
            "{a}"
        );
        assert!(!a.contains("-kernel"), "{a}");
    }

    #[test]
    fn masks() {
        assert_eq!(mask(24), Ipv4Addr::new(255, 255, 255, 0));
        assert_eq!(mask(16), Ipv4Addr::new(255, 255, 0, 0));
        assert_eq!(mask(0), Ipv4Addr::new(0, 0, 0, 0));
        assert_eq!(mask(32), Ipv4Addr::new(255, 255, 255, 255));
    }
}
