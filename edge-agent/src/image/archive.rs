//! Importing image archives: OCI (`skopeo copy ... oci-archive:`, `ctr export`) and docker
//! (`docker save`, `skopeo copy ... docker-archive:`), plain or gzipped.
//!
//! The archive is read once, each file staged in the store's tmp/ with its digest computed on
//! the way; referenced blobs are then checked and renamed into the blob store, and each image
//! unpacked as a pulled one would be.

use std::collections::HashMap;
use std::fs;
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::manifest::{
    Kind, Manifest, DOCKER_CONFIG, DOCKER_LAYER, DOCKER_LAYER_GZIP, DOCKER_MANIFEST, MAX_MANIFEST,
    OCI_INDEX,
};
use super::unpack::{clean, sniff, Compression, HashingReader};
use super::{io_err, Entry, ImageError, ImageStore, Reference, Result};

/// Files read into memory rather than staged.
const SMALL: &[&str] = &["index.json", "manifest.json", "oci-layout", "repositories"];

struct Staged {
    path: PathBuf,
    digest: String,
}

struct Contents {
    small: HashMap<String, Vec<u8>>,
    files: HashMap<String, Staged>,
}

fn bad(archive: &Path, why: impl std::fmt::Display) -> ImageError {
    ImageError::Pull(format!("{}: {why}", archive.display()))
}

pub(super) fn import(store: &ImageStore, archive: &Path) -> Result<Vec<String>> {
    let tmp = &store.inner.dirs.tmp;
    let staging = tempfile::Builder::new()
        .prefix("import-")
        .tempdir_in(tmp)
        .map_err(io_err(tmp))?;
    let contents = read_archive(archive, staging.path())?;
    if let Some(m) = contents.small.get("manifest.json") {
        import_docker(store, &contents, m, archive)
    } else if let Some(i) = contents.small.get("index.json") {
        import_oci(store, &contents, i, archive)
    } else {
        Err(bad(archive, "neither an OCI nor a docker archive"))
    }
}

fn read_archive(archive: &Path, staging: &Path) -> Result<Contents> {
    let f = fs::File::open(archive).map_err(io_err(archive))?;
    let mut buf = BufReader::new(f);
    let head = buf.fill_buf().map_err(io_err(archive))?;
    let reader: Box<dyn Read> = match sniff(head) {
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(buf)),
        Compression::Zstd => {
            return Err(bad(archive, "zstd-compressed archives are not supported"))
        }
        Compression::None => Box::new(buf),
    };
    let mut tar = tar::Archive::new(reader);
    let mut contents = Contents {
        small: HashMap::new(),
        files: HashMap::new(),
    };
    let entries = tar.entries().map_err(|e| bad(archive, e))?;
    for (n, entry) in entries.enumerate() {
        let mut entry = entry.map_err(|e| bad(archive, e))?;
        if !matches!(
            entry.header().entry_type(),
            tar::EntryType::Regular | tar::EntryType::Continuous
        ) {
            continue;
        }
        let raw = entry.path().map_err(|e| bad(archive, e))?.into_owned();
        let Some(name) = archive_name(&raw) else {
            tracing::warn!(archive = %archive.display(), path = ?raw, "skipping unsafe path in image archive");
            continue;
        };
        if SMALL.contains(&name.as_str()) {
            let mut b = Vec::new();
            (&mut entry)
                .take(MAX_MANIFEST + 1)
                .read_to_end(&mut b)
                .map_err(|e| bad(archive, e))?;
            if b.len() as u64 > MAX_MANIFEST {
                return Err(bad(archive, format!("{name} is too large")));
            }
            contents.small.insert(name, b);
            continue;
        }
        let path = staging.join(format!("f{n}"));
        let mut out = fs::File::create(&path).map_err(io_err(&path))?;
        let mut hashed = HashingReader::new(&mut entry);
        io::copy(&mut hashed, &mut out).map_err(|e| bad(archive, format!("{name}: {e}")))?;
        out.sync_all().map_err(io_err(&path))?;
        let (digest, _) = hashed.finish();
        contents.files.insert(name, Staged { path, digest });
    }
    Ok(contents)
}

/// An archive path as `a/b/c`, or `None` if it is unsafe.
fn archive_name(p: &Path) -> Option<String> {
    let comps = clean(p)?;
    let parts: Vec<&str> = comps.iter().map(|c| c.to_str()).collect::<Option<_>>()?;
    (!parts.is_empty()).then(|| parts.join("/"))
}

/// Move a staged file into the blob store as `digest`, checking it hashes to that.
fn adopt(store: &ImageStore, staged: &Staged, digest: &str) -> Result<()> {
    let dest = store.inner.dirs.blob(digest)?;
    if dest.exists() {
        return Ok(());
    }
    if staged.digest != digest {
        return Err(ImageError::Pull(format!(
            "digest mismatch: blob {digest} hashes to {}",
            staged.digest
        )));
    }
    fs::rename(&staged.path, &dest).map_err(io_err(&dest))
}

/// Adopt the OCI blob `digest` from the archive's `blobs/` (unless the store has it).
fn oci_blob(store: &ImageStore, contents: &Contents, digest: &str, archive: &Path) -> Result<()> {
    let dest = store.inner.dirs.blob(digest)?;
    if dest.exists() {
        return Ok(());
    }
    let name = format!("blobs/{}", digest.replacen(':', "/", 1));
    let staged = contents
        .files
        .get(&name)
        .ok_or_else(|| bad(archive, format!("blob {digest} missing")))?;
    adopt(store, staged, digest)
}

fn import_oci(
    store: &ImageStore,
    contents: &Contents,
    index: &[u8],
    archive: &Path,
) -> Result<Vec<String>> {
    let (idx, _) = Manifest::parse(index, Some(OCI_INDEX)).map_err(|e| bad(archive, e))?;
    let mut out = Vec::new();
    for d in &idx.manifests {
        let Some(name) = oci_name(&d.annotations, archive) else {
            tracing::warn!(archive = %archive.display(), digest = %d.digest, "image without a name in archive; skipped");
            continue;
        };
        let r = Reference::parse(&name)?;
        d.checked(MAX_MANIFEST).map_err(|e| bad(archive, e))?;
        let entry = oci_image(store, contents, &d.digest, &d.media_type, archive, 0)?;
        let norm = r.normalized();
        store.record(
            &[norm.clone(), format!("{}@{}", r.name(), entry.id)],
            &entry,
        )?;
        out.push(norm);
    }
    Ok(out)
}

/// Import the image (or, one level down, this platform's image of the index) `digest`.
fn oci_image(
    store: &ImageStore,
    contents: &Contents,
    digest: &str,
    media_type: &str,
    archive: &Path,
    depth: u8,
) -> Result<Entry> {
    oci_blob(store, contents, digest, archive)?;
    let bytes = store.read_blob(digest, MAX_MANIFEST)?;
    let ct = Some(media_type).filter(|m| !m.is_empty());
    let (m, kind) = Manifest::parse(&bytes, ct).map_err(|e| bad(archive, e))?;
    match kind {
        Kind::Index if depth == 0 => {
            let d = m.pick_platform().map_err(|e| bad(archive, e))?;
            d.checked(MAX_MANIFEST).map_err(|e| bad(archive, e))?;
            let mut e = oci_image(store, contents, &d.digest, &d.media_type, archive, 1)?;
            e.id = digest.to_string();
            Ok(e)
        }
        Kind::Index => Err(bad(archive, "nested index")),
        Kind::Image => {
            let config = m
                .config
                .as_ref()
                .ok_or_else(|| bad(archive, "manifest has no config"))?;
            for d in std::iter::once(config).chain(&m.layers) {
                oci_blob(store, contents, &d.digest, archive)?;
            }
            store.build(digest, digest, &m)
        }
    }
}

/// The name of an image in an OCI index: `io.containerd.image.name`, else
/// `org.opencontainers.image.ref.name` when it is a full reference, else that tag on a
/// repository named after the archive file (`busybox.tar` + `v1` -> `busybox:v1`).
fn oci_name(ann: &std::collections::BTreeMap<String, String>, archive: &Path) -> Option<String> {
    if let Some(n) = ann.get("io.containerd.image.name") {
        return Some(n.clone());
    }
    let n = ann.get("org.opencontainers.image.ref.name")?;
    if n.contains(['/', ':', '@']) {
        return Some(n.clone());
    }
    let file = archive.file_name()?.to_str()?;
    let stem = [".tar.gz", ".tgz", ".tar", ".oci"]
        .iter()
        .find_map(|s| file.strip_suffix(s))
        .unwrap_or(file);
    Some(format!("{}:{n}", stem.to_ascii_lowercase()))
}

#[derive(Deserialize)]
struct DockerEntry {
    #[serde(rename = "Config")]
    config: String,
    #[serde(rename = "RepoTags", default)]
    repo_tags: Option<Vec<String>>,
    #[serde(rename = "Layers", default)]
    layers: Vec<String>,
}

fn import_docker(
    store: &ImageStore,
    contents: &Contents,
    manifest: &[u8],
    archive: &Path,
) -> Result<Vec<String>> {
    let list: Vec<DockerEntry> = serde_json::from_slice(manifest)
        .map_err(|e| bad(archive, format!("manifest.json: {e}")))?;
    let mut out = Vec::new();
    for e in &list {
        let staged = |p: &str| {
            archive_name(Path::new(p))
                .and_then(|n| contents.files.get(&n))
                .ok_or_else(|| bad(archive, format!("{p} missing")))
        };
        let cfg = staged(&e.config)?;
        adopt(store, cfg, &cfg.digest)?;
        let mut layers = Vec::new();
        for l in &e.layers {
            let s = staged(l)?;
            adopt(store, s, &s.digest)?;
            let blob = store.inner.dirs.blob(&s.digest)?;
            let size = fs::metadata(&blob).map_err(io_err(&blob))?.len();
            let gz = {
                let mut head = [0u8; 4];
                let n = fs::File::open(&blob)
                    .and_then(|mut f| f.read(&mut head))
                    .map_err(io_err(&blob))?;
                sniff(head.get(..n).unwrap_or(&[])) == Compression::Gzip
            };
            layers.push(serde_json::json!({
                "mediaType": if gz { DOCKER_LAYER_GZIP } else { DOCKER_LAYER },
                "digest": s.digest,
                "size": size,
            }));
        }
        let cfg_size = store
            .inner
            .dirs
            .blob(&cfg.digest)
            .and_then(|p| fs::metadata(&p).map_err(io_err(&p)))?
            .len();
        let doc = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": DOCKER_MANIFEST,
            "config": {"mediaType": DOCKER_CONFIG, "digest": cfg.digest, "size": cfg_size},
            "layers": layers,
        });
        let bytes = serde_json::to_vec(&doc).map_err(|e| ImageError::Io(e.to_string()))?;
        let digest = {
            use sha2::Digest;
            let mut h = sha2::Sha256::new();
            h.update(&bytes);
            super::unpack::hex_digest(h)
        };
        store.put_blob(&digest, &bytes)?;
        let (m, _) = Manifest::parse(&bytes, None).map_err(|e| bad(archive, e))?;
        let entry = store.build(&digest, &digest, &m)?;
        let tags = e.repo_tags.clone().unwrap_or_default();
        if tags.is_empty() {
            tracing::warn!(archive = %archive.display(), "image without RepoTags in archive; skipped");
        }
        for t in tags {
            let r = Reference::parse(&t)?;
            let norm = r.normalized();
            store.record(&[norm.clone(), format!("{}@{digest}", r.name())], &entry)?;
            out.push(norm);
        }
    }
    Ok(out)
}
