//! Unit tests: policy defaults, unpack safety (from in-memory tars), digest checks, the
//! persisted index. Registry pulls are covered end to end in `tests/tests/image.rs`.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use super::unpack::apply_layer;
use super::*;

/// A tar entry for [`tar_of`].
enum E<'a> {
    Dir(&'a str, u32),
    File(&'a str, &'a [u8], u32),
    Symlink(&'a str, &'a str),
    Hardlink(&'a str, &'a str),
    Char(&'a str),
    Fifo(&'a str),
}

/// Write a name into a header without the `tar` crate's path checks (to build hostile tars).
fn raw_name(h: &mut tar::Header, name: &str) {
    let gnu = h.as_gnu_mut().expect("gnu header");
    gnu.name = [0; 100];
    gnu.name[..name.len()].copy_from_slice(name.as_bytes());
}

fn raw_link(h: &mut tar::Header, target: &str) {
    let gnu = h.as_gnu_mut().expect("gnu header");
    gnu.linkname = [0; 100];
    gnu.linkname[..target.len()].copy_from_slice(target.as_bytes());
}

fn tar_of(entries: &[E<'_>]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        let mut h = tar::Header::new_gnu();
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_700_000_000);
        let data: &[u8] = match e {
            E::Dir(p, mode) => {
                raw_name(&mut h, p);
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(*mode);
                &[]
            }
            E::File(p, data, mode) => {
                raw_name(&mut h, p);
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(*mode);
                data
            }
            E::Symlink(p, t) => {
                raw_name(&mut h, p);
                raw_link(&mut h, t);
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_mode(0o777);
                &[]
            }
            E::Hardlink(p, t) => {
                raw_name(&mut h, p);
                raw_link(&mut h, t);
                h.set_entry_type(tar::EntryType::Link);
                h.set_mode(0o644);
                &[]
            }
            E::Char(p) => {
                raw_name(&mut h, p);
                h.set_entry_type(tar::EntryType::Char);
                h.set_mode(0o666);
                &[]
            }
            E::Fifo(p) => {
                raw_name(&mut h, p);
                h.set_entry_type(tar::EntryType::Fifo);
                h.set_mode(0o644);
                &[]
            }
        };
        h.set_size(data.len() as u64);
        h.set_cksum();
        b.append(&h, data).expect("append");
    }
    b.into_inner().expect("tar")
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).expect("gzip");
    e.finish().expect("gzip")
}

fn sha(data: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(data);
    hex_digest(h)
}

/// A scratch dir with a `root/` to unpack into and an `outside/` that must stay untouched.
struct Scratch {
    _dir: tempfile::TempDir,
    root: std::path::PathBuf,
    outside: std::path::PathBuf,
}

fn scratch() -> Scratch {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("root");
    let outside = dir.path().join("outside");
    fs::create_dir(&root).expect("root");
    fs::create_dir(&outside).expect("outside");
    fs::write(outside.join("secret"), b"host").expect("secret");
    Scratch {
        root,
        outside,
        _dir: dir,
    }
}

fn apply(root: &Path, entries: &[E<'_>]) -> std::result::Result<(), String> {
    apply_layer(&tar_of(entries)[..], root, None)
}

/// Every path under `dir`, relative, sorted.
fn tree(dir: &Path) -> Vec<String> {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
        for e in fs::read_dir(dir).expect("read_dir").flatten() {
            let p = e.path();
            out.push(p.strip_prefix(base).expect("prefix").display().to_string());
            if e.file_type().expect("type").is_dir() {
                walk(base, &p, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

#[test]
fn pull_policy_defaults() {
    use PullPolicy::*;
    assert_eq!(PullPolicy::parse(None, "busybox"), Always);
    assert_eq!(PullPolicy::parse(None, "busybox:latest"), Always);
    assert_eq!(PullPolicy::parse(None, "host:5000/busybox"), Always);
    assert_eq!(PullPolicy::parse(None, "busybox:1.36"), IfNotPresent);
    let pinned = format!("busybox@sha256:{}", "a".repeat(64));
    assert_eq!(PullPolicy::parse(None, &pinned), IfNotPresent);
    assert_eq!(PullPolicy::parse(Some(""), "busybox"), Always);
    assert_eq!(PullPolicy::parse(Some("Never"), "busybox"), Never);
    assert_eq!(PullPolicy::parse(Some("Always"), "busybox:1"), Always);
    assert_eq!(
        PullPolicy::parse(Some("IfNotPresent"), "busybox"),
        IfNotPresent
    );
}

#[test]
fn unpack_keeps_files_modes_and_symlinks() {
    let s = scratch();
    apply_layer(
        &gzip(&tar_of(&[
            E::Dir("bin/", 0o755),
            E::File("bin/busybox", b"\x7fELF", 0o4755),
            E::Symlink("bin/sh", "busybox"),
            E::Hardlink("bin/bb2", "bin/busybox"),
            E::Dir("tmp/", 0o1777),
            E::Dir("ro/", 0o555),
            E::File("ro/f", b"x", 0o444),
        ]))[..],
        &s.root,
        None,
    )
    .expect("apply");
    let bb = fs::metadata(s.root.join("bin/busybox")).expect("busybox");
    assert_eq!(bb.permissions().mode() & 0o7777, 0o4755);
    assert_eq!(bb.nlink(), 2);
    assert_eq!(
        fs::read_link(s.root.join("bin/sh")).expect("sh"),
        Path::new("busybox")
    );
    let tmp = fs::metadata(s.root.join("tmp")).expect("tmp");
    assert_eq!(tmp.permissions().mode() & 0o7777, 0o1777);
    let ro = fs::metadata(s.root.join("ro")).expect("ro");
    assert_eq!(ro.permissions().mode() & 0o7777, 0o555);
}

#[test]
fn unpack_rejects_path_escapes() {
    for bad in ["../evil", "a/../../evil", "/etc/evil"] {
        let s = scratch();
        let err = apply(&s.root, &[E::File(bad, b"x", 0o644)]).expect_err(bad);
        assert!(err.contains("unsafe path"), "{bad}: {err}");
        assert!(tree(s.root.parent().expect("parent"))
            .iter()
            .all(|p| !p.ends_with("evil")));
    }
}

#[test]
fn unpack_never_writes_through_symlinks() {
    let s = scratch();
    let outside = s.outside.to_str().expect("utf8").to_string();
    apply(
        &s.root,
        &[
            // Absolute and relative escapes, then writes through them.
            E::Symlink("evil", &outside),
            E::File("evil/passwd", b"pwned", 0o644),
            E::Symlink("up", "../../../../../../../.."),
            E::File("up/etc-file", b"pwned", 0o644),
            // A symlink to a host file, then a file entry of the same name: replaced, not
            // written through.
            E::Symlink("target", &format!("{outside}/secret")),
            E::File("target", b"pwned", 0o644),
        ],
    )
    .expect("apply");
    assert_eq!(tree(&s.outside), ["secret"]);
    assert_eq!(fs::read(s.outside.join("secret")).expect("secret"), b"host");
    // The writes landed inside the root, where the links point when the root is `/`.
    let inside = s.root.join(outside.trim_start_matches('/'));
    assert_eq!(fs::read(inside.join("passwd")).expect("inside"), b"pwned");
    assert_eq!(
        fs::read(s.root.join("etc-file")).expect("clamped"),
        b"pwned"
    );
    let t = fs::symlink_metadata(s.root.join("target")).expect("target");
    assert!(t.is_file());
}

#[test]
fn unpack_confines_hardlinks() {
    let s = scratch();
    let outside = s.outside.to_str().expect("utf8").to_string();
    let err = apply(&s.root, &[E::Hardlink("h", "../outside/secret")]).expect_err("..");
    assert!(err.contains("unsafe hardlink"), "{err}");
    let err = apply(&s.root, &[E::Hardlink("h", &format!("{outside}/secret"))]).expect_err("abs");
    assert!(err.contains("unsafe hardlink"), "{err}");
    // Through a symlink: resolved inside the root, where there is no such file.
    let err = apply(
        &s.root,
        &[E::Symlink("l", &outside), E::Hardlink("h", "l/secret")],
    )
    .expect_err("via symlink");
    assert!(err.contains("not in the image"), "{err}");
    assert_eq!(
        fs::metadata(s.outside.join("secret"))
            .expect("secret")
            .nlink(),
        1
    );
    assert!(!s.root.join("h").exists());
}

#[test]
fn unpack_skips_device_nodes() {
    let s = scratch();
    apply(
        &s.root,
        &[
            E::Dir("dev/", 0o755),
            E::Char("dev/null"),
            E::Fifo("dev/fifo"),
            E::File("dev/ok", b"", 0o644),
        ],
    )
    .expect("apply");
    assert_eq!(tree(&s.root), ["dev", "dev/ok"]);
}

#[test]
fn unpack_whiteouts() {
    let s = scratch();
    apply(
        &s.root,
        &[
            E::File("a/x", b"1", 0o644),
            E::File("a/y", b"1", 0o644),
            E::File("b", b"1", 0o644),
            E::File("c/deep/z", b"1", 0o644),
        ],
    )
    .expect("lower");
    apply(
        &s.root,
        &[
            E::File("a/.wh.x", b"", 0o644),
            E::File(".wh.b", b"", 0o644),
            E::File(".wh.c", b"", 0o644),
            E::File(".wh.never-existed", b"", 0o644),
            // Not names: must not remove the directory, the root or the root's parent.
            E::File("a/.wh..", b"", 0o644),
            E::File(".wh..", b"", 0o644),
            E::File(".wh...", b"", 0o644),
            E::File("a/.wh...", b"", 0o644),
            E::File(".wh..wh.plnk", b"", 0o644),
            E::File("new", b"2", 0o644),
            // Whiteout of something this layer itself adds: the add wins.
            E::File(".wh.new", b"", 0o644),
        ],
    )
    .expect("upper");
    assert_eq!(tree(&s.root), ["a", "a/y", "new"]);
    assert_eq!(tree(&s.outside), ["secret"]);
}

#[test]
fn unpack_opaque_whiteouts() {
    for marker_first in [true, false] {
        let s = scratch();
        apply(
            &s.root,
            &[
                E::File("d/old", b"1", 0o644),
                E::File("d/sub/old2", b"1", 0o644),
                E::File("keep/k", b"1", 0o644),
            ],
        )
        .expect("lower");
        let mut upper = vec![
            E::File("d/new", b"2", 0o644),
            E::File("d/sub/new2", b"2", 0o644),
        ];
        let marker = E::File("d/.wh..wh..opq", b"", 0o644);
        if marker_first {
            upper.insert(0, marker);
        } else {
            upper.push(marker);
        }
        apply(&s.root, &upper).expect("upper");
        assert_eq!(
            tree(&s.root),
            ["d", "d/new", "d/sub", "d/sub/new2", "keep", "keep/k"],
            "marker first: {marker_first}"
        );
    }
}

#[test]
fn unpack_checks_diff_id_and_rejects_zstd() {
    let s = scratch();
    let layer = tar_of(&[E::File("f", b"x", 0o644)]);
    apply_layer(&gzip(&layer)[..], &s.root, Some(&sha(&layer))).expect("right diff id");
    let err = apply_layer(&layer[..], &s.root, Some(&sha(b"other"))).expect_err("wrong");
    assert!(err.contains("digest mismatch"), "{err}");
    let err = apply_layer(&[0x28, 0xb5, 0x2f, 0xfd, 0, 0][..], &s.root, None).expect_err("zstd");
    assert!(err.contains("zstd"), "{err}");
}

#[test]
fn blob_digest_mismatch_rejected() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = ImageStore::open(dir.path(), vec![]).expect("open");
    let err = store
        .put_blob(&sha(b"expected"), b"tampered")
        .expect_err("mismatch");
    assert!(
        matches!(&err, ImageError::Pull(m) if m.contains("digest mismatch")),
        "{err}"
    );
    store.put_blob(&sha(b"ok"), b"ok").expect("good blob");
    assert!(store.inner.dirs.blob(&sha(b"ok")).expect("path").exists());
    assert!(store.inner.dirs.blob("sha256:../../etc").is_err());
}

/// A one-layer OCI archive in memory; `tamper` corrupts the layer blob.
fn oci_archive(tamper: bool) -> Vec<u8> {
    let plain = tar_of(&[
        E::File("bin/tool", b"#!/bin/sh\n", 0o755),
        E::Symlink("bin/alias", "tool"),
    ]);
    let layer = gzip(&plain);
    let diff_id = sha(&plain);
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "config": {"Cmd": ["tool"], "Env": ["PATH=/bin"], "WorkingDir": "/bin"},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
    }))
    .expect("config");
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": manifest::OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha(&config), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": sha(&layer), "size": layer.len()}],
    }))
    .expect("manifest");
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{"mediaType": manifest::OCI_MANIFEST, "digest": sha(&manifest), "size": manifest.len(),
            "annotations": {"org.opencontainers.image.ref.name": "example.com/tool:v1"}}],
    }))
    .expect("index");
    let mut stored_layer = layer.clone();
    if tamper {
        stored_layer.push(0);
    }
    let mut b = tar::Builder::new(Vec::new());
    let mut add = |name: &str, data: &[u8]| {
        let mut h = tar::Header::new_gnu();
        h.set_mode(0o644);
        h.set_size(data.len() as u64);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, name, data).expect("append");
    };
    add("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#);
    add("index.json", &index);
    for blob in [&config, &manifest] {
        add(&format!("blobs/sha256/{}", hex_of(&sha(blob))), blob);
    }
    add(
        &format!("blobs/sha256/{}", hex_of(&sha(&layer))),
        &stored_layer,
    );
    b.into_inner().expect("tar")
}

#[test]
fn import_and_index_survive_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let archive = dir.path().join("tool.tar");
    fs::write(&archive, oci_archive(false)).expect("archive");
    let root = dir.path().join("agent");
    let store = ImageStore::open(&root, vec![]).expect("open");
    let refs = store.import(&archive).expect("import");
    assert_eq!(refs, ["example.com/tool:v1"]);
    let img = store.get("example.com/tool:v1").expect("get");
    assert_eq!(img.config.cmd, ["tool"]);
    assert_eq!(img.config.working_dir, "/bin");
    assert!(img.rootfs.join("bin/tool").is_file());
    assert_eq!(store.list().len(), 2, "{:?}", store.list());
    drop(store);
    let store = ImageStore::open(&root, vec![]).expect("reopen");
    assert_eq!(store.get("example.com/tool:v1"), Some(img.clone()));
    let by_digest = format!("example.com/tool@{}", img.id);
    assert_eq!(store.get(&by_digest).map(|i| i.id), Some(img.id.clone()));
    // A removed rootfs is rebuilt from the cached blobs without any registry.
    fs::remove_dir_all(&img.rootfs).expect("rm rootfs");
    assert_eq!(store.get("example.com/tool:v1"), None);
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let again = rt
        .block_on(store.ensure("example.com/tool:v1", PullPolicy::Never))
        .expect("rebuilt");
    assert!(again.rootfs.join("bin/tool").is_file());
    let missing = rt.block_on(store.ensure("example.com/tool:v2", PullPolicy::Never));
    assert!(
        matches!(missing, Err(ImageError::NeverPull(_))),
        "{missing:?}"
    );
    let invalid = rt.block_on(store.ensure("Bad Name", PullPolicy::Always));
    assert!(
        matches!(invalid, Err(ImageError::InvalidName(_))),
        "{invalid:?}"
    );
}

#[test]
fn import_rejects_tampered_blob() {
    let dir = tempfile::tempdir().expect("tempdir");
    let archive = dir.path().join("tool.tar");
    fs::write(&archive, oci_archive(true)).expect("archive");
    let store = ImageStore::open(&dir.path().join("agent"), vec![]).expect("open");
    let err = store.import(&archive).expect_err("tampered");
    assert!(
        matches!(&err, ImageError::Pull(m) if m.contains("digest mismatch")),
        "{err}"
    );
    assert!(store.list().is_empty());
}
