//! Harness: a VM image the tests build from Debian's `linux-image-cloud-amd64` kernel and a
//! busybox initramfs. The guest loads the virtio and ACPI modules, says `atoll-vm: booted` on
//! its serial console, configures `eth0` from the kernel's `ip=` argument (or DHCP), serves
//! `/` over HTTP on port 80 (`hello from the VM`), and powers off on an ACPI power-button
//! press (saying `atoll-vm: powering off`).

use std::path::{Path, PathBuf};
use std::process::Command;

/// The virtio, ACPI button and evdev modules, in the order they must be loaded.
const MODULES: &[&str] = &[
    "virtio_ring",
    "virtio",
    "virtio_pci_modern_dev",
    "virtio_pci_legacy_dev",
    "virtio_pci",
    "failover",
    "net_failover",
    "virtio_net",
    "button",
    "evdev",
];

const INIT: &str = r#"#!/bin/sh
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mkdir -p /var/log /var/run /tmp /www
for m in MODULES; do insmod /lib/modules/$m.ko 2>/dev/null; done
echo "atoll-vm: booted"
acpid -d -c /etc/acpi >/dev/null 2>&1 &
ip link set lo up
ip link set eth0 up 2>/dev/null
addr=""
for a in $(cat /proc/cmdline); do case "$a" in ip=*) addr="${a#ip=}";; esac; done
if [ -n "$addr" ]; then
  IFS=: read ip _ gw mask _ <<X
$addr
X
  bits=0
  IFS=. read o1 o2 o3 o4 <<X
$mask
X
  for o in $o1 $o2 $o3 $o4; do
    case $o in 255) bits=$((bits+8));; 254) bits=$((bits+7));; 252) bits=$((bits+6));;
      248) bits=$((bits+5));; 240) bits=$((bits+4));; 224) bits=$((bits+3));;
      192) bits=$((bits+2));; 128) bits=$((bits+1));; esac
  done
  ip addr add "$ip/$bits" dev eth0 && ip route add default via "$gw"
  # Ask the node's DHCP server too (what a disk image without ip= relies on).
  udhcpc -i eth0 -q -n -t 10 -T 1 -s /etc/udhcpc.sh >/dev/null 2>&1 &
else
  udhcpc -i eth0 -q -n -t 10 -T 1 -s /etc/udhcpc.sh >/dev/null 2>&1
fi
ip -4 -o addr show dev eth0 2>/dev/null | sed 's/^/atoll-vm: /'
echo "hello from the VM" > /www/index.html
httpd -p 80 -h /www
echo "atoll-vm: ready"
# Online hot-plugged vCPUs and memory blocks; say what the guest has whenever it changes.
last=""
while true; do
  for f in /sys/devices/system/cpu/cpu*/online; do [ "$(cat $f)" = 0 ] && echo 1 > $f; done 2>/dev/null
  for f in /sys/devices/system/memory/memory*/state; do [ "$(cat $f)" = offline ] && echo online > $f; done 2>/dev/null
  now="cpus=$(grep -c ^processor /proc/cpuinfo) memtotal_kib=$(awk '/MemTotal/ {print $2}' /proc/meminfo)"
  [ "$now" != "$last" ] && echo "atoll-vm: $now" && last="$now"
  sleep 1
done
"#;

const UDHCPC: &str = r#"#!/bin/sh
case "$1" in bound|renew)
  echo "atoll-vm: dhcp lease $ip/${mask:-24} router ${router%% *} host ${hostname:-}" > /dev/console
  ip addr add "$ip/${mask:-24}" dev "$interface" 2>/dev/null
  [ -n "$router" ] && ip route add default via "${router%% *}" 2>/dev/null
esac
"#;

const POWER: &str = "#!/bin/sh\necho \"atoll-vm: powering off\"\npoweroff -f\n";

/// The cloud kernel's version (its `/boot/vmlinuz-*-cloud-amd64`), newest first.
fn kernel_version() -> String {
    let mut v: Vec<String> = std::fs::read_dir("/boot")
        .expect("/boot")
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter_map(|n| n.strip_prefix("vmlinuz-").map(String::from))
        .filter(|n| n.ends_with("-cloud-amd64"))
        .collect();
    v.sort();
    v.pop()
        .expect("linux-image-cloud-amd64 is installed (deploy/test.sh installs it)")
}

/// Whether this machine can build and run the VM image (kernel, qemu, cpio installed).
pub fn available() -> bool {
    Path::new("/usr/bin/qemu-system-x86_64").exists()
        && Path::new("/usr/bin/cpio").exists()
        && std::fs::read_dir("/boot").is_ok_and(|mut d| {
            d.any(|e| e.is_ok_and(|e| e.file_name().to_string_lossy().ends_with("-cloud-amd64")))
        })
}

/// The kernel and the initramfs (gzip'd newc cpio) of the test VM.
pub fn boot_files(scratch: &Path) -> (Vec<u8>, Vec<u8>) {
    let k = kernel_version();
    let kernel = std::fs::read(format!("/boot/vmlinuz-{k}")).expect("kernel");
    let root = scratch.join("initramfs");
    let _ = std::fs::remove_dir_all(&root);
    for d in ["bin", "proc", "sys", "dev", "etc/acpi/PWRF", "lib/modules"] {
        std::fs::create_dir_all(root.join(d)).expect("initramfs dir");
    }
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).expect("busybox-static");
    for a in [
        "sh", "mount", "mkdir", "insmod", "echo", "ip", "cat", "sed", "sleep", "acpid", "udhcpc",
        "httpd", "poweroff", "grep", "awk",
    ] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(a)).expect("applet");
    }
    let modules = Path::new("/lib/modules").join(&k);
    for m in MODULES {
        let out = Command::new("find")
            .arg(&modules)
            .args(["-name", &format!("{m}.ko")])
            .output()
            .expect("find");
        let path = String::from_utf8_lossy(&out.stdout)
            .lines()
            .next()
            .map(PathBuf::from)
            .unwrap_or_else(|| panic!("module {m}.ko of {k}"));
        std::fs::copy(&path, root.join("lib/modules").join(format!("{m}.ko"))).expect("module");
    }
    let write = |p: &str, text: &str| {
        use std::os::unix::fs::PermissionsExt;
        let f = root.join(p);
        std::fs::write(&f, text).expect("initramfs file");
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    };
    write("init", &INIT.replace("MODULES", &MODULES.join(" ")));
    write("etc/udhcpc.sh", UDHCPC);
    write("etc/acpi/PWRF/00000080", POWER);
    let out = scratch.join("initrd.img");
    let st = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "cd '{}' && find . | cpio -o -H newc 2>/dev/null | gzip -1 > '{}'",
            root.display(),
            out.display()
        ))
        .status()
        .expect("cpio");
    assert!(st.success(), "building the initramfs");
    (kernel, std::fs::read(&out).expect("initrd"))
}

/// An OCI layout `dir/<name>` of the test VM (direct boot), tagged `tag`.
pub fn vm_image(dir: &Path, name: &str, tag: &str) -> PathBuf {
    let (kernel, initrd) = boot_files(dir);
    crate::registry::files_image(
        dir,
        name,
        tag,
        &[
            ("boot/vmlinuz", 0o644, &kernel),
            ("boot/initrd.img", 0o644, &initrd),
        ],
    )
}
