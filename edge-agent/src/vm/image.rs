//! The VM image contract: an OCI image (pulled, digest-checked and unpacked like a container's)
//! whose files hold `/boot/vmlinuz` and `/boot/initrd.img` (direct kernel boot), or one disk
//! under `/disk/` in qcow2 or raw (KubeVirt's containerDisk convention), or both (direct boot
//! with the disk attached). Everything here reads the image as untrusted data: paths must be
//! regular files inside the image (no symlinks out of it), a qcow2 must be self-contained (no
//! backing file, which qemu would otherwise open on the host) and well-formed; nothing of the
//! image becomes a qemu option but the paths the agent itself resolved.

use std::io::Read;
use std::path::{Path, PathBuf};

/// A disk's format, from its header (never from its name).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DiskFormat {
    /// qcow2 (version 2 or 3, no backing file).
    Qcow2,
    /// Raw bytes.
    Raw,
}

impl DiskFormat {
    /// qemu's name of the format.
    pub fn name(self) -> &'static str {
        match self {
            DiskFormat::Qcow2 => "qcow2",
            DiskFormat::Raw => "raw",
        }
    }
}

/// What a VM image offers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VmImage {
    /// Kernel and initrd for direct boot.
    pub direct: Option<(PathBuf, PathBuf)>,
    /// The disk and its format.
    pub disk: Option<(PathBuf, DiskFormat)>,
}

/// The qcow2 magic (`QFI\xfb`).
const QCOW2_MAGIC: [u8; 4] = *b"QFI\xfb";
/// Largest disk file the agent accepts from an image.
pub const MAX_DISK: u64 = 64 << 30;

/// A regular file at `rel` inside `root`, not reached through a symlink.
fn regular(root: &Path, rel: &str) -> Result<Option<PathBuf>, String> {
    let mut p = root.to_path_buf();
    for part in rel.split('/') {
        p.push(part);
        match std::fs::symlink_metadata(&p) {
            Err(_) => return Ok(None),
            Ok(m) if m.file_type().is_symlink() => {
                return Err(format!("/{rel} in the image is a symbolic link"))
            }
            Ok(_) => {}
        }
    }
    match std::fs::symlink_metadata(&p) {
        Ok(m) if m.is_file() => Ok(Some(p)),
        Ok(_) => Err(format!("/{rel} in the image is not a regular file")),
        Err(_) => Ok(None),
    }
}

/// Read the qcow2 header: its version, and refuse a backing file (or a header too short to be
/// one). `size` is the file's length.
fn check_qcow2(head: &[u8], size: u64) -> Result<(), String> {
    let be32 = |o: usize| u32::from_be_bytes([head[o], head[o + 1], head[o + 2], head[o + 3]]);
    let be64 = |o: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&head[o..o + 8]);
        u64::from_be_bytes(b)
    };
    if head.len() < 72 {
        return Err("the qcow2 disk's header is truncated".into());
    }
    let version = be32(4);
    if !(2..=3).contains(&version) {
        return Err(format!(
            "the qcow2 disk has version {version} (2 or 3 expected)"
        ));
    }
    if be64(8) != 0 || be32(16) != 0 {
        return Err(
            "the qcow2 disk names a backing file; a VM image's disk must be self-contained".into(),
        );
    }
    let cluster_bits = be32(20);
    if !(9..=21).contains(&cluster_bits) {
        return Err(format!(
            "the qcow2 disk's cluster size (2^{cluster_bits}) is invalid"
        ));
    }
    let l1_offset = be64(40);
    if l1_offset >= size || be64(48) >= size {
        return Err("the qcow2 disk's tables lie beyond its end (corrupt or truncated)".into());
    }
    Ok(())
}

/// The disk at `path`: its format from its header, checked.
pub fn disk_format(path: &Path) -> Result<DiskFormat, String> {
    let mut f = std::fs::File::open(path).map_err(|e| format!("opening the disk: {e}"))?;
    let size = f.metadata().map_err(|e| e.to_string())?.len();
    if size == 0 {
        return Err("the image's disk is empty".into());
    }
    if size > MAX_DISK {
        return Err(format!(
            "the image's disk is {size} bytes, over the {MAX_DISK} accepted"
        ));
    }
    let mut head = Vec::with_capacity(104);
    f.by_ref()
        .take(104)
        .read_to_end(&mut head)
        .map_err(|e| format!("reading the disk: {e}"))?;
    if head.starts_with(&QCOW2_MAGIC) {
        check_qcow2(&head, size)?;
        return Ok(DiskFormat::Qcow2);
    }
    // Other image formats qemu would probe (vmdk, vdi, vhd...) are not raw disks.
    for (magic, name) in [
        (&b"KDMV"[..], "vmdk"),
        (&b"conectix"[..], "vhd"),
        (&b"vhdxfile"[..], "vhdx"),
        (&b"QEVM"[..], "qed"),
    ] {
        if head.starts_with(magic) {
            return Err(format!(
                "the image's disk is {name}; only qcow2 and raw are accepted"
            ));
        }
    }
    if size % 512 != 0 {
        return Err(format!(
            "the raw disk's size ({size} bytes) is not a whole number of 512-byte sectors"
        ));
    }
    Ok(DiskFormat::Raw)
}

/// What the unpacked image at `root` offers, or why it is not a VM image.
pub fn inspect(root: &Path) -> Result<VmImage, String> {
    let kernel = regular(root, "boot/vmlinuz")?;
    let initrd = regular(root, "boot/initrd.img")?;
    let direct = match (kernel, initrd) {
        (Some(k), Some(i)) => Some((k, i)),
        (Some(_), None) => return Err("the image has /boot/vmlinuz but no /boot/initrd.img".into()),
        (None, Some(_)) => return Err("the image has /boot/initrd.img but no /boot/vmlinuz".into()),
        (None, None) => None,
    };
    let disk_dir = root.join("disk");
    let mut disks = Vec::new();
    match std::fs::symlink_metadata(&disk_dir) {
        Ok(m) if m.is_dir() => {
            for e in std::fs::read_dir(&disk_dir).map_err(|e| format!("reading /disk: {e}"))? {
                let e = e.map_err(|e| format!("reading /disk: {e}"))?;
                let name = e.file_name().to_string_lossy().into_owned();
                if let Some(p) = regular(root, &format!("disk/{name}"))? {
                    disks.push(p);
                }
            }
        }
        Ok(m) if m.file_type().is_symlink() => {
            return Err("/disk in the image is a symbolic link".into())
        }
        _ => {}
    }
    disks.sort();
    let disk = match disks.as_slice() {
        [] => None,
        [one] => Some((one.clone(), disk_format(one)?)),
        more => {
            return Err(format!(
                "the image has {} files under /disk; a VM image has one disk",
                more.len()
            ))
        }
    };
    if direct.is_none() && disk.is_none() {
        return Err("the image is not a VM image: it has neither /boot/vmlinuz with /boot/initrd.img nor a disk under /disk".into());
    }
    Ok(VmImage { direct, disk })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn qcow2(version: u32, backing: u64, size: u64) -> Vec<u8> {
        let mut h = vec![0u8; 512];
        h[..4].copy_from_slice(&QCOW2_MAGIC);
        h[4..8].copy_from_slice(&version.to_be_bytes());
        h[8..16].copy_from_slice(&backing.to_be_bytes());
        h[20..24].copy_from_slice(&16u32.to_be_bytes());
        h[24..32].copy_from_slice(&size.to_be_bytes());
        h[40..48].copy_from_slice(&0x30000u64.to_be_bytes());
        h[48..56].copy_from_slice(&0x10000u64.to_be_bytes());
        h.resize(0x40000, 0);
        h
    }

    fn image(files: &[(&str, &[u8])]) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        for (p, data) in files {
            let f = d.path().join(p);
            std::fs::create_dir_all(f.parent().unwrap()).unwrap();
            std::fs::write(f, data).unwrap();
        }
        d
    }

    #[test]
    fn direct_boot_disk_or_both() {
        let d = image(&[("boot/vmlinuz", b"k"), ("boot/initrd.img", b"i")]);
        let i = inspect(d.path()).unwrap();
        assert!(i.direct.is_some() && i.disk.is_none());
        let d = image(&[("disk/root.img", &[0u8; 1024])]);
        assert_eq!(inspect(d.path()).unwrap().disk.unwrap().1, DiskFormat::Raw);
        let q = qcow2(3, 0, 1 << 20);
        let d = image(&[
            ("boot/vmlinuz", b"k"),
            ("boot/initrd.img", b"i"),
            ("disk/d.qcow2", &q),
        ]);
        let i = inspect(d.path()).unwrap();
        assert!(i.direct.is_some());
        assert_eq!(i.disk.unwrap().1, DiskFormat::Qcow2);
    }

    #[test]
    fn refusals_say_why() {
        let why = |files: &[(&str, &[u8])]| inspect(image(files).path()).unwrap_err();
        assert!(why(&[("bin/sh", b"x")]).contains("not a VM image"));
        assert!(why(&[("boot/vmlinuz", b"k")]).contains("no /boot/initrd.img"));
        assert!(why(&[("disk/d.qcow2", &qcow2(3, 0x200, 1 << 20))]).contains("backing file"));
        assert!(why(&[("disk/d.qcow2", &qcow2(7, 0, 1 << 20))]).contains("version 7"));
        assert!(why(&[("disk/d.qcow2", &qcow2(3, 0, 1 << 20)[..40])]).contains("truncated"));
        let mut beyond = qcow2(3, 0, 1 << 20);
        beyond.truncate(0x20000);
        assert!(why(&[("disk/d.qcow2", &beyond)]).contains("beyond its end"));
        assert!(why(&[("disk/d.vmdk", b"KDMV....")]).contains("vmdk"));
        assert!(why(&[("disk/odd.img", &[1u8; 1000])]).contains("512-byte"));
        assert!(
            why(&[("disk/a.img", &[0u8; 512]), ("disk/b.img", &[0u8; 512])]).contains("one disk")
        );
        assert!(why(&[("disk/empty.img", b"")]).contains("empty"));
        // A symlink out of the image is never followed.
        let d = image(&[("boot/initrd.img", b"i")]);
        std::os::unix::fs::symlink("/etc/passwd", d.path().join("boot/vmlinuz")).unwrap();
        assert!(inspect(d.path()).unwrap_err().contains("symbolic link"));
    }
}
