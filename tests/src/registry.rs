//! A local image registry for end-to-end tests: Debian's `docker-registry` on a free loopback
//! port (plain HTTP, or HTTPS with a CA made here), plus a busybox image built in Rust as an OCI
//! layout, pushed and archived with `skopeo`.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::{free_port, Proc};

const REGISTRY_BIN: &str = "/usr/bin/docker-registry";
const BUSYBOX: &str = "/bin/busybox";

/// A running `docker-registry`, killed on drop (its storage removed with it).
pub struct Registry {
    proc: Proc,
    addr: String,
    /// CA certificate (PEM) when serving HTTPS.
    ca_pem: Option<String>,
    dir: tempfile::TempDir,
}

impl Registry {
    /// A plain-HTTP registry.
    pub fn start() -> Self {
        Self::start_with(false)
    }

    /// An HTTPS registry whose certificate (for 127.0.0.1 and localhost) is signed by a CA
    /// made for it; see [`Registry::ca_pem`] and [`Registry::install_ca`].
    pub fn start_tls() -> Self {
        Self::start_with(true)
    }

    fn start_with(tls: bool) -> Self {
        let dir = tempfile::tempdir().expect("registry tempdir");
        let addr = format!("127.0.0.1:{}", free_port());
        let mut ca_pem = None;
        let mut tls_yaml = String::new();
        if tls {
            let (ca, cert, key) = make_certs();
            std::fs::write(dir.path().join("cert.pem"), cert).expect("cert");
            std::fs::write(dir.path().join("key.pem"), key).expect("key");
            std::fs::create_dir(dir.path().join("certs")).expect("certs dir");
            std::fs::write(dir.path().join("certs/ca.crt"), &ca).expect("ca");
            tls_yaml = format!(
                "  tls:\n    certificate: {d}/cert.pem\n    key: {d}/key.pem\n",
                d = dir.path().display()
            );
            ca_pem = Some(ca);
        }
        let config = format!(
            "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {d}/data\n  delete:\n    enabled: true\n  maintenance:\n    uploadpurging:\n      enabled: false\nhttp:\n  addr: {addr}\n  secret: atoll-tests\n{tls_yaml}",
            d = dir.path().display()
        );
        let config_path = dir.path().join("config.yml");
        std::fs::write(&config_path, config).expect("registry config");
        let mut proc = Proc::new("docker-registry", dir.path().join("registry.log"));
        let mut cmd = Command::new(REGISTRY_BIN);
        cmd.arg("serve").arg(&config_path);
        proc.spawn(cmd);
        let reg = Registry {
            proc,
            addr,
            ca_pem,
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !reg.v2_ok() {
            assert!(
                Instant::now() < deadline,
                "docker-registry did not answer /v2/ within 20 s; log:\n{}",
                reg.proc.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        reg
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> String {
        self.addr.clone()
    }

    /// The CA (PEM) that signed the registry's certificate, when serving HTTPS.
    pub fn ca_pem(&self) -> Option<&str> {
        self.ca_pem.as_deref()
    }

    /// Trust the registry's CA in an agent root: `ROOT/certs.d/ADDR/ca.crt`.
    pub fn install_ca(&self, agent_root: &Path) {
        let ca = self.ca_pem.as_deref().expect("not a TLS registry");
        let d = agent_root.join("certs.d").join(&self.addr);
        std::fs::create_dir_all(&d).expect("certs.d");
        std::fs::write(d.join("ca.crt"), ca).expect("ca.crt");
    }

    /// Kill the registry (its storage stays until drop).
    pub fn stop(&mut self) {
        self.proc.kill9();
    }

    /// The registry's log so far.
    pub fn log(&self) -> String {
        self.proc.log()
    }

    /// Push the single image of an OCI `layout` as `ADDR/<tag_ref>` (e.g. `busybox:v1`).
    pub fn push(&self, layout: &Path, tag_ref: &str) {
        self.push_as(layout, tag_ref, None);
    }

    /// [`Registry::push`] with a manifest format (`oci`, `v2s2` for Docker schema 2); an index
    /// in the layout is pushed whole.
    pub fn push_as(&self, layout: &Path, tag_ref: &str, format: Option<&str>) {
        let dest = format!("docker://{}/{tag_ref}", self.addr);
        let src = format!("oci:{}", layout.display());
        let mut args = vec!["copy", "--all", "--retry-times", "2"];
        let cert_dir = self.dir.path().join("certs");
        let cert_dir = cert_dir.to_str().expect("utf-8 path");
        if self.ca_pem.is_some() {
            args.extend(["--dest-cert-dir", cert_dir]);
        } else {
            args.push("--dest-tls-verify=false");
        }
        if let Some(f) = format {
            args.extend(["--format", f]);
        }
        args.extend([src.as_str(), dest.as_str()]);
        skopeo(&args);
    }

    /// GET /v2/ answers 200.
    fn v2_ok(&self) -> bool {
        let Ok(sock) = self.addr.parse() else {
            return false;
        };
        let Ok(tcp) = TcpStream::connect_timeout(&sock, Duration::from_millis(200)) else {
            return false;
        };
        let _ = tcp.set_read_timeout(Some(Duration::from_secs(2)));
        let req = format!(
            "GET /v2/ HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            self.addr
        );
        let status = match &self.ca_pem {
            None => status_line(tcp, &req),
            Some(ca) => {
                let Some(conn) = tls_client(ca) else {
                    return false;
                };
                status_line(rustls::StreamOwned::new(conn, tcp), &req)
            }
        };
        status.is_some_and(|s| s.split_whitespace().nth(1) == Some("200"))
    }
}

fn status_line<S: std::io::Read + Write>(mut s: S, req: &str) -> Option<String> {
    s.write_all(req.as_bytes()).ok()?;
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).ok()?;
    Some(line)
}

fn tls_client(ca_pem: &str) -> Option<rustls::ClientConnection> {
    use rustls::pki_types::{pem::PemObject, CertificateDer, ServerName};
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c.ok()?).ok()?;
    }
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .ok()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let name = ServerName::try_from("127.0.0.1").ok()?;
    rustls::ClientConnection::new(Arc::new(cfg), name).ok()
}

/// (CA PEM, serving cert PEM, serving key PEM) for 127.0.0.1 and localhost.
fn make_certs() -> (String, String, String) {
    let ca = crate::TestCa::new("atoll-test-registry-ca");
    let (cert, key) = ca.issue("atoll-test-registry", &["127.0.0.1", "localhost"]);
    (ca.pem(), cert, key)
}

/// Run skopeo (no signature policy: these are test images); panics with its stderr.
pub fn skopeo(args: &[&str]) {
    let out = Command::new("skopeo")
        .arg("--insecure-policy")
        .args(args)
        .output()
        .expect("run skopeo");
    assert!(
        out.status.success(),
        "skopeo {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The busybox root filesystem as a gzipped tar layer, built once per test process.
struct Layer {
    gz: Vec<u8>,
    diff_id: String,
}

fn sha256(data: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(data);
    let mut s = String::from("sha256:");
    for b in h.finalize() {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// A tar entry's header: root-owned, a fixed mtime (reproducible layers).
fn tar_header(kind: tar::EntryType, mode: u32, size: usize) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(1_700_000_000);
    h.set_size(size as u64);
    h
}

/// A layer from its tar: gzip'd, with its diff id.
fn layer_of(tar: Vec<u8>) -> Layer {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar).expect("gzip");
    Layer {
        gz: gz.finish().expect("gzip"),
        diff_id: sha256(&tar),
    }
}

fn busybox_layer() -> &'static Layer {
    static LAYER: OnceLock<Layer> = OnceLock::new();
    LAYER.get_or_init(|| {
        let bin = std::fs::read(BUSYBOX).expect("busybox-static is installed");
        let list = Command::new(BUSYBOX)
            .arg("--list")
            .output()
            .expect("busybox --list");
        let applets = String::from_utf8_lossy(&list.stdout).into_owned();
        let mut b = tar::Builder::new(Vec::new());
        let header = tar_header;
        for (dir, mode) in [
            ("bin", 0o755),
            ("dev", 0o755),
            ("etc", 0o755),
            ("proc", 0o755),
            ("root", 0o700),
            ("sys", 0o755),
            ("tmp", 0o1777),
        ] {
            let mut h = header(tar::EntryType::Directory, mode, 0);
            b.append_data(&mut h, dir, std::io::empty()).expect("dir");
        }
        let mut h = header(tar::EntryType::Regular, 0o755, bin.len());
        b.append_data(&mut h, "bin/busybox", &bin[..])
            .expect("busybox");
        for a in applets.split_whitespace().filter(|a| *a != "busybox") {
            let mut h = header(tar::EntryType::Symlink, 0o777, 0);
            b.append_link(&mut h, format!("bin/{a}"), "busybox")
                .expect("applet link");
        }
        for (path, text) in [
            (
                "etc/passwd",
                "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
            ),
            ("etc/group", "root:x:0:\nnobody:x:65534:\n"),
        ] {
            let mut h = header(tar::EntryType::Regular, 0o644, text.len());
            b.append_data(&mut h, path, text.as_bytes()).expect("etc");
        }
        layer_of(b.into_inner().expect("layer tar"))
    })
}

fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// Build an OCI image layout `dir/busybox-<tag>` holding one image tagged `tag`: /bin/busybox
/// (from busybox-static) with every applet linked beside it (sh, ls, cat, sleep, echo, ping,
/// wget, env, pwd, id, ...), /tmp, /etc/passwd and /etc/group; `Cmd ["sh"]`, `Env PATH=/bin`.
/// Returns the layout's path.
pub fn busybox_image(dir: &Path, tag: &str) -> PathBuf {
    write_layout(dir, tag, false)
}

/// [`busybox_image`], but the layout's image is a multi-platform index (one linux entry for this
/// host's architecture) around the same manifest.
pub fn busybox_index_image(dir: &Path, tag: &str) -> PathBuf {
    write_layout(dir, tag, true)
}

fn write_layout(dir: &Path, tag: &str, as_index: bool) -> PathBuf {
    let name = format!("busybox-{tag}{}", if as_index { "-index" } else { "" });
    write_layout_of(dir, &name, tag, busybox_layer(), as_index)
}

/// A one-layer image of `files` (path in the image, mode, contents; directories are made as
/// needed): an OCI layout `dir/<name>` tagged `tag`. (VM images: `/boot/...`, `/disk/...`.)
pub fn files_image(dir: &Path, name: &str, tag: &str, files: &[(&str, u32, &[u8])]) -> PathBuf {
    let mut b = tar::Builder::new(Vec::new());
    let mut dirs = std::collections::BTreeSet::new();
    for (path, _, _) in files {
        let mut p = Path::new(path).parent();
        while let Some(d) = p.filter(|d| !d.as_os_str().is_empty()) {
            dirs.insert(d.to_path_buf());
            p = d.parent();
        }
    }
    let header = tar_header;
    for d in &dirs {
        let mut h = header(tar::EntryType::Directory, 0o755, 0);
        b.append_data(&mut h, d, std::io::empty()).expect("dir");
    }
    for (path, mode, data) in files {
        let mut h = header(tar::EntryType::Regular, *mode, data.len());
        b.append_data(&mut h, path, *data).expect("file");
    }
    let layer = layer_of(b.into_inner().expect("layer tar"));
    write_layout_of(dir, name, tag, &layer, false)
}

fn write_layout_of(dir: &Path, name: &str, tag: &str, layer: &Layer, as_index: bool) -> PathBuf {
    let layout = dir.join(name);
    let blobs = layout.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).expect("layout dir");
    let put = |data: &[u8]| -> String {
        let d = sha256(data);
        std::fs::write(blobs.join(d.trim_start_matches("sha256:")), data).expect("blob");
        d
    };
    let config = serde_json::to_vec(&serde_json::json!({
        "created": "2024-01-01T00:00:00Z",
        "architecture": host_arch(),
        "os": "linux",
        "config": {"Cmd": ["sh"], "Env": ["PATH=/bin"]},
        "rootfs": {"type": "layers", "diff_ids": [layer.diff_id]},
        "history": [{"created": "2024-01-01T00:00:00Z", "created_by": "atoll tests: busybox"}],
    }))
    .expect("config");
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": put(&config),
            "size": config.len(),
        },
        "layers": [{
            "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
            "digest": put(&layer.gz),
            "size": layer.gz.len(),
        }],
    }))
    .expect("manifest");
    let mut top = serde_json::json!({
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": put(&manifest),
        "size": manifest.len(),
    });
    if as_index {
        let mut entry = top.clone();
        entry["platform"] = serde_json::json!({"architecture": host_arch(), "os": "linux"});
        let index = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [entry],
        }))
        .expect("index");
        top = serde_json::json!({
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "digest": put(&index),
            "size": index.len(),
        });
    }
    top["annotations"] = serde_json::json!({"org.opencontainers.image.ref.name": tag});
    let index = serde_json::json!({"schemaVersion": 2, "manifests": [top]});
    std::fs::write(
        layout.join("index.json"),
        serde_json::to_vec(&index).expect("index.json"),
    )
    .expect("index.json");
    std::fs::write(
        layout.join("oci-layout"),
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .expect("oci-layout");
    layout
}

/// Write the layout's image to an OCI archive `file` named `reference` (a full reference such
/// as `example.com/app:v1`, or a tag).
pub fn oci_archive(layout: &Path, file: &Path, reference: &str) {
    let src = format!("oci:{}", layout.display());
    let dest = format!("oci-archive:{}:{reference}", file.display());
    skopeo(&["copy", &src, &dest]);
}

/// Write the layout's image to a docker archive (`docker save` format) `file` tagged
/// `reference` (`example.com/app:v1`).
pub fn docker_archive(layout: &Path, file: &Path, reference: &str) {
    let src = format!("oci:{}", layout.display());
    let dest = format!("docker-archive:{}:{reference}", file.display());
    skopeo(&["copy", &src, &dest]);
}
