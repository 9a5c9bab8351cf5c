//! OCI images: registry pull, archive import, safe layer unpacking, a cache by digest.
//!
//! Everything lives under `ROOT/images/`:
//!
//! ```text
//! blobs/sha256/<hex>   manifests, configs and layers, each verified against its digest
//! rootfs/<hex>/        unpacked images, by config digest (manifest digest if the config has
//!                      no diff_ids); built in tmp/ and renamed, so never seen half-built
//! tmp/                 downloads and unpacks in progress (emptied on open)
//! index.json           normalised reference -> {id, manifest, config, rootfs}, written atomically
//! ```
//!
//! HTTPS trust is the system roots plus `ROOT/certs.d/HOST:PORT/*.crt`. One store per root.

mod archive;
mod manifest;
mod reference;
mod registry;
mod unpack;

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub use reference::Reference;

use manifest::{ConfigFile, Descriptor, Kind, Manifest, MAX_CONFIG, MAX_LAYER, MAX_MANIFEST};
use reference::valid_digest;
use unpack::hex_digest;

/// Results of this module.
pub type Result<T, E = ImageError> = std::result::Result<T, E>;

/// When to contact the registry (a container's `imagePullPolicy`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PullPolicy {
    /// Always resolve the reference at the registry.
    Always,
    /// Use the local image if there is one.
    IfNotPresent,
    /// Never pull; the image must be local.
    Never,
}

impl PullPolicy {
    /// The policy as given, or Kubernetes' default for `image`: `Always` when the tag is
    /// `latest` or absent (and there is no digest), else `IfNotPresent`.
    pub fn parse(policy: Option<&str>, image: &str) -> PullPolicy {
        match policy.map(str::trim) {
            Some("Always") => PullPolicy::Always,
            Some("IfNotPresent") => PullPolicy::IfNotPresent,
            Some("Never") => PullPolicy::Never,
            _ => match Reference::parse(image) {
                Ok(r) if r.digest.is_none() && r.tag.as_deref().is_none_or(|t| t == "latest") => {
                    PullPolicy::Always
                }
                _ => PullPolicy::IfNotPresent,
            },
        }
    }
}

/// The container defaults an image carries.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ImageConfig {
    /// `Entrypoint`.
    pub entrypoint: Vec<String>,
    /// `Cmd`.
    pub cmd: Vec<String>,
    /// `Env`, as `NAME=value`.
    pub env: Vec<String>,
    /// `WorkingDir` (may be empty).
    pub working_dir: String,
    /// `User` (may be empty).
    pub user: String,
}

/// A local, unpacked image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Image {
    /// The normalised reference (`docker.io/library/busybox:latest`).
    pub reference: String,
    /// `sha256:<hex>`: the digest of what the reference resolved to (the index for a
    /// multi-platform image), as in `imageID: REPO@sha256:...`.
    pub id: String,
    /// The unpacked root filesystem. Shared by every container of the image: read-only by
    /// convention (overlay-mount or copy it).
    pub rootfs: PathBuf,
    /// The image's container defaults.
    pub config: ImageConfig,
}

/// Image failures. Each maps to a Kubernetes waiting reason.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// Not present locally and the policy is `Never` (`ErrImageNeverPull`).
    #[error("{0}")]
    NeverPull(String),
    /// Fetching, verifying or unpacking failed (`ErrImagePull`); the message is the reason.
    #[error("{0}")]
    Pull(String),
    /// The reference does not parse (`InvalidImageName`).
    #[error("{0}")]
    InvalidName(String),
    /// The local store failed.
    #[error("image store: {0}")]
    Io(String),
}

/// One image in the persisted index.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Entry {
    /// What the reference resolved to (`Image::id`).
    id: String,
    /// The image manifest (differs from `id` for a multi-platform index).
    manifest: String,
    /// The config blob.
    config: String,
    /// Directory name under `rootfs/`.
    rootfs: String,
}

#[derive(Default, Serialize, Deserialize)]
struct IndexFile {
    #[serde(default)]
    images: BTreeMap<String, Entry>,
}

struct Dirs {
    images: PathBuf,
    blobs: PathBuf,
    rootfs: PathBuf,
    tmp: PathBuf,
}

impl Dirs {
    /// The blob file of a (validated) digest.
    fn blob(&self, digest: &str) -> Result<PathBuf> {
        match digest.strip_prefix("sha256:") {
            Some(hex) if valid_digest(digest) => Ok(self.blobs.join(hex)),
            _ => Err(ImageError::Pull(format!("unsupported digest {digest:?}"))),
        }
    }
}

struct Inner {
    dirs: Dirs,
    client: registry::Client,
    index: Mutex<BTreeMap<String, Entry>>,
    /// Per-reference pull locks.
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

/// The node's image store. Cheap to clone; safe to share between tasks.
#[derive(Clone)]
pub struct ImageStore {
    inner: Arc<Inner>,
}

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> ImageError + '_ {
    move |e| ImageError::Io(format!("{}: {e}", path.display()))
}

fn hex_of(digest: &str) -> &str {
    digest.strip_prefix("sha256:").unwrap_or(digest)
}

impl ImageStore {
    /// Open (or create) the store under `root/images`, trusting `root/certs.d` and reaching
    /// `insecure_registries` (`HOST:PORT`) over plain HTTP.
    pub fn open(root: &Path, insecure_registries: Vec<String>) -> Result<Self> {
        let images = root.join("images");
        let dirs = Dirs {
            blobs: images.join("blobs").join("sha256"),
            rootfs: images.join("rootfs"),
            tmp: images.join("tmp"),
            images,
        };
        for d in [&dirs.blobs, &dirs.rootfs, &dirs.tmp] {
            fs::create_dir_all(d).map_err(io_err(d))?;
        }
        // Leftovers of an interrupted pull or unpack.
        if let Ok(rd) = fs::read_dir(&dirs.tmp) {
            for e in rd.flatten() {
                let p = e.path();
                let r = if p.is_dir() && !p.is_symlink() {
                    fs::remove_dir_all(&p)
                } else {
                    fs::remove_file(&p)
                };
                if let Err(e) = r {
                    tracing::warn!(path = %p.display(), error = %e, "removing image temp file");
                }
            }
        }
        let index_path = dirs.images.join("index.json");
        let index = match fs::read(&index_path) {
            Ok(b) => match serde_json::from_slice::<IndexFile>(&b) {
                Ok(f) => f.images,
                Err(e) => {
                    tracing::warn!(path = %index_path.display(), error = %e, "image index unreadable; starting empty");
                    BTreeMap::new()
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(io_err(&index_path)(e)),
        };
        Ok(ImageStore {
            inner: Arc::new(Inner {
                client: registry::Client::new(root.join("certs.d"), insecure_registries),
                dirs,
                index: Mutex::new(index),
                locks: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// The image for `reference`, pulled or not according to `policy`.
    pub async fn ensure(&self, reference: &str, policy: PullPolicy) -> Result<Image> {
        let r = Reference::parse(reference)?;
        match policy {
            PullPolicy::Always => self.pull_ref(&r).await,
            PullPolicy::IfNotPresent => match self.local(&r).await {
                Some(i) => Ok(i),
                None => self.pull_ref(&r).await,
            },
            PullPolicy::Never => self.local(&r).await.ok_or_else(|| {
                ImageError::NeverPull(format!(
                    "image {:?} is not present with pull policy of Never",
                    r.normalized()
                ))
            }),
        }
    }

    /// Resolve `reference` at its registry and make the image local (downloading only the
    /// blobs not already here).
    pub async fn pull(&self, reference: &str) -> Result<Image> {
        let r = Reference::parse(reference)?;
        self.pull_ref(&r).await
    }

    /// The local image for `reference`, if it is unpacked. No network.
    pub fn get(&self, reference: &str) -> Option<Image> {
        let r = Reference::parse(reference).ok()?;
        let (name, entry) = self.lookup(&r)?;
        self.rootfs_of(&entry)
            .is_dir()
            .then(|| self.image(&name, &entry).ok())
            .flatten()
    }

    /// Import an OCI archive (`oci-layout`, `index.json`, `blobs/`; names from the
    /// `org.opencontainers.image.ref.name` annotation) or a docker archive (`manifest.json`
    /// with `RepoTags`), layers gzip or plain. Returns the normalised references imported.
    pub fn import(&self, archive: &Path) -> Result<Vec<String>> {
        archive::import(self, archive)
    }

    /// Every reference in the store with its image id.
    pub fn list(&self) -> Vec<(String, String)> {
        self.index()
            .iter()
            .map(|(k, e)| (k.clone(), e.id.clone()))
            .collect()
    }

    fn index(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Entry>> {
        self.inner.index.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The index entry for a reference; a digest reference also matches any reference of the
    /// same repository that resolved to that digest.
    fn lookup(&self, r: &Reference) -> Option<(String, Entry)> {
        let key = r.normalized();
        let idx = self.index();
        if let Some(e) = idx.get(&key) {
            return Some((key, e.clone()));
        }
        let digest = r.digest.as_deref()?;
        let name = r.name();
        idx.iter()
            .find(|(k, e)| e.id == digest && Reference::parse(k).is_ok_and(|kr| kr.name() == name))
            .map(|(_, e)| (key, e.clone()))
    }

    fn rootfs_of(&self, e: &Entry) -> PathBuf {
        self.inner.dirs.rootfs.join(&e.rootfs)
    }

    /// The local image, re-unpacking it from cached blobs if its rootfs is gone.
    async fn local(&self, r: &Reference) -> Option<Image> {
        let (name, entry) = self.lookup(r)?;
        let store = self.clone();
        let res = tokio::task::spawn_blocking(move || -> Result<Image> {
            if !store.rootfs_of(&entry).is_dir() {
                let bytes = store.read_blob(&entry.manifest, MAX_MANIFEST)?;
                let (m, _) = Manifest::parse(&bytes, None).map_err(ImageError::Pull)?;
                store.build(&entry.id, &entry.manifest, &m)?;
            }
            store.image(&name, &entry)
        })
        .await;
        match res {
            Ok(Ok(i)) => Some(i),
            Ok(Err(e)) => {
                tracing::warn!(image = %r.normalized(), error = %e, "local image unusable");
                None
            }
            Err(e) => {
                tracing::warn!(image = %r.normalized(), error = %e, "local image check failed");
                None
            }
        }
    }

    async fn pull_ref(&self, r: &Reference) -> Result<Image> {
        let key = r.normalized();
        let lock = {
            let mut locks = self.inner.locks.lock().unwrap_or_else(|p| p.into_inner());
            locks.entry(key.clone()).or_default().clone()
        };
        let res = {
            let _guard = lock.lock().await;
            self.pull_locked(r).await
        };
        let mut locks = self.inner.locks.lock().unwrap_or_else(|p| p.into_inner());
        // Drop the lock's slot when nobody else holds or waits for it.
        if Arc::strong_count(&lock) == 2 {
            locks.remove(&key);
        }
        res
    }

    async fn pull_locked(&self, r: &Reference) -> Result<Image> {
        let shown = r.normalized();
        let perr = |e: String| ImageError::Pull(format!("{e}: {shown}"));
        let started = std::time::Instant::now();
        let mut s = registry::Session::new(&self.inner.client, r);
        let (bytes, top, ctype) = s.manifest(r.manifest_ref(), r.digest.as_deref()).await?;
        let (m, kind) = Manifest::parse(&bytes, ctype.as_deref()).map_err(perr)?;
        self.put_blob(&top, &bytes)?;
        let (mdigest, m) = match kind {
            Kind::Image => (top.clone(), m),
            Kind::Index => {
                let d = m.pick_platform().map_err(perr)?;
                d.checked(MAX_MANIFEST).map_err(perr)?;
                let (b, dg, ct) = s.manifest(&d.digest, Some(&d.digest)).await?;
                let (m2, k2) = Manifest::parse(&b, ct.as_deref()).map_err(perr)?;
                if !matches!(k2, Kind::Image) {
                    return Err(perr("nested index".into()));
                }
                self.put_blob(&dg, &b)?;
                (dg, m2)
            }
        };
        let config = m
            .config
            .as_ref()
            .ok_or_else(|| perr("manifest has no config".into()))?;
        let mut wanted: Vec<(&Descriptor, u64)> =
            vec![(config, config.checked(MAX_CONFIG).map_err(perr)?)];
        for l in &m.layers {
            if l.media_type.contains("zstd") {
                return Err(perr(format!(
                    "layer {} is zstd-compressed, which is not supported",
                    l.digest
                )));
            }
            wanted.push((l, l.checked(MAX_LAYER).map_err(perr)?));
        }
        let mut fetched = 0;
        for (d, size) in wanted {
            let dest = self.inner.dirs.blob(&d.digest)?;
            if dest.exists() {
                continue;
            }
            s.blob(&d.digest, size, &self.inner.dirs.tmp, &dest).await?;
            fetched += 1;
        }
        let mut names = vec![shown.clone()];
        if r.digest.is_none() {
            names.push(format!("{}@{top}", r.name()));
        }
        let store = self.clone();
        let id = top.clone();
        let entry = tokio::task::spawn_blocking(move || {
            let entry = store.build(&id, &mdigest, &m)?;
            store.record(&names, &entry)?;
            Ok::<_, ImageError>(entry)
        })
        .await
        .map_err(|e| ImageError::Io(format!("unpack task: {e}")))??;
        tracing::info!(image = %shown, id = %top, blobs_fetched = fetched, elapsed = ?started.elapsed(), "image pulled");
        self.image(&shown, &entry)
    }

    /// Unpack (if needed) an image whose blobs are all local; returns its index entry.
    fn build(&self, id: &str, mdigest: &str, m: &Manifest) -> Result<Entry> {
        let config = m
            .config
            .as_ref()
            .ok_or_else(|| ImageError::Pull("manifest has no config".into()))?;
        let cfg = ConfigFile::parse(&self.read_blob(&config.digest, MAX_CONFIG)?)
            .map_err(ImageError::Pull)?;
        let diff_ids = cfg.rootfs.map(|r| r.diff_ids).unwrap_or_default();
        let verify = !diff_ids.is_empty();
        if verify && diff_ids.len() != m.layers.len() {
            return Err(ImageError::Pull(format!(
                "config lists {} layers, manifest {}",
                diff_ids.len(),
                m.layers.len()
            )));
        }
        if let Some(bad) = diff_ids.iter().find(|d| !valid_digest(d)) {
            return Err(ImageError::Pull(format!("unsupported diff id {bad:?}")));
        }
        // Keyed by config only when its diff_ids pin the layers' content.
        let key = hex_of(if verify { &config.digest } else { mdigest }).to_string();
        let dest = self.inner.dirs.rootfs.join(&key);
        if !dest.is_dir() {
            let tmp = &self.inner.dirs.tmp;
            let td = tempfile::Builder::new()
                .prefix("rootfs-")
                .tempdir_in(tmp)
                .map_err(io_err(tmp))?;
            fs::set_permissions(td.path(), fs::Permissions::from_mode(0o755))
                .map_err(io_err(td.path()))?;
            for (i, l) in m.layers.iter().enumerate() {
                let path = self.inner.dirs.blob(&l.digest)?;
                let f = fs::File::open(&path).map_err(io_err(&path))?;
                unpack::apply_layer(f, td.path(), diff_ids.get(i).map(String::as_str))
                    .map_err(|e| ImageError::Pull(format!("layer {}: {e}", l.digest)))?;
            }
            // The unpacked files must be on disk before the rename makes the rootfs visible
            // (a power loss must not leave a complete-looking, half-written rootfs): syncfs.
            let synced = std::process::Command::new("sync")
                .arg("-f")
                .arg(td.path())
                .status()
                .map_err(io_err(td.path()))?;
            if !synced.success() {
                return Err(ImageError::Io(format!(
                    "sync -f {}: {synced}",
                    td.path().display()
                )));
            }
            match fs::rename(td.path(), &dest) {
                Ok(()) => {
                    let _ = td.keep();
                    if let Ok(d) = fs::File::open(&self.inner.dirs.rootfs) {
                        let _ = d.sync_all();
                    }
                }
                // Someone else finished the same rootfs first; ours is dropped.
                Err(_) if dest.is_dir() => {}
                Err(e) => return Err(io_err(&dest)(e)),
            }
        }
        Ok(Entry {
            id: id.to_string(),
            manifest: mdigest.to_string(),
            config: config.digest.clone(),
            rootfs: key,
        })
    }

    fn image(&self, name: &str, e: &Entry) -> Result<Image> {
        let cfg = ConfigFile::parse(&self.read_blob(&e.config, MAX_CONFIG)?)
            .map_err(ImageError::Pull)?
            .config
            .unwrap_or_default();
        Ok(Image {
            reference: name.to_string(),
            id: e.id.clone(),
            rootfs: self.rootfs_of(e),
            config: ImageConfig {
                entrypoint: cfg.entrypoint.unwrap_or_default(),
                cmd: cfg.cmd.unwrap_or_default(),
                env: cfg.env.unwrap_or_default(),
                working_dir: cfg.working_dir.unwrap_or_default(),
                user: cfg.user.unwrap_or_default(),
            },
        })
    }

    fn read_blob(&self, digest: &str, cap: u64) -> Result<Vec<u8>> {
        let path = self.inner.dirs.blob(digest)?;
        let f = fs::File::open(&path).map_err(io_err(&path))?;
        let mut out = Vec::new();
        f.take(cap + 1)
            .read_to_end(&mut out)
            .map_err(io_err(&path))?;
        if out.len() as u64 > cap {
            return Err(ImageError::Pull(format!("blob {digest} is too large")));
        }
        Ok(out)
    }

    /// Store a small blob after checking its digest.
    fn put_blob(&self, digest: &str, bytes: &[u8]) -> Result<()> {
        let path = self.inner.dirs.blob(digest)?;
        let mut h = Sha256::new();
        h.update(bytes);
        let got = hex_digest(h);
        if got != digest {
            return Err(ImageError::Pull(format!(
                "digest mismatch: blob {digest} hashes to {got}"
            )));
        }
        if path.exists() {
            return Ok(());
        }
        self.write_atomic(&self.inner.dirs.tmp, &path, bytes)
    }

    /// Write `bytes` to `dest` through a synced temp file in `tmp_dir`.
    fn write_atomic(&self, tmp_dir: &Path, dest: &Path, bytes: &[u8]) -> Result<()> {
        let mut f = tempfile::Builder::new()
            .prefix(".tmp-")
            .tempfile_in(tmp_dir)
            .map_err(io_err(tmp_dir))?;
        f.write_all(bytes).map_err(io_err(dest))?;
        f.as_file().sync_all().map_err(io_err(dest))?;
        f.persist(dest)
            .map_err(|e| ImageError::Io(format!("{}: {}", dest.display(), e.error)))?;
        Ok(())
    }

    /// Point `names` at `entry` and persist the index.
    fn record(&self, names: &[String], entry: &Entry) -> Result<()> {
        let mut idx = self.index();
        for n in names {
            idx.insert(n.clone(), entry.clone());
        }
        let file = IndexFile {
            images: idx.clone(),
        };
        let bytes =
            serde_json::to_vec_pretty(&file).map_err(|e| ImageError::Io(format!("index: {e}")))?;
        let images = &self.inner.dirs.images;
        self.write_atomic(images, &images.join("index.json"), &bytes)?;
        if let Ok(d) = fs::File::open(images) {
            let _ = d.sync_all();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;

/// Entry points for the fuzz targets in `fuzz/` and the ordinary suite's replay of their
/// regression cases: untrusted bytes in, an error or nothing out, never a panic, and never a
/// write outside the given root.
#[doc(hidden)]
pub mod fuzzing {
    use std::path::Path;

    use super::manifest::{
        ConfigFile, Manifest, DOCKER_LIST, DOCKER_MANIFEST, MAX_CONFIG, MAX_LAYER, MAX_MANIFEST,
        OCI_INDEX, OCI_MANIFEST,
    };

    /// A registry's manifest or index (under every content type), an image config, and the
    /// reference and digest parsers.
    pub fn manifest(data: &[u8]) {
        for ct in [
            None,
            Some(OCI_INDEX),
            Some(OCI_MANIFEST),
            Some(DOCKER_LIST),
            Some(DOCKER_MANIFEST),
        ] {
            if let Ok((m, _)) = Manifest::parse(data, ct) {
                let _ = m.pick_platform();
                for d in m.manifests.iter().chain(&m.layers) {
                    let _ = d.checked(MAX_LAYER);
                    let _ = d.checked(MAX_MANIFEST);
                }
                if let Some(c) = &m.config {
                    let _ = c.checked(MAX_CONFIG);
                }
            }
        }
        let _ = ConfigFile::parse(data);
        if let Ok(s) = std::str::from_utf8(data) {
            let _ = super::Reference::parse(s);
            let _ = super::valid_digest(s);
        }
    }

    /// Unpack a layer (plain or gzip tar) into `root` (which must exist).
    pub fn layer(data: &[u8], root: &Path) -> Result<(), String> {
        super::unpack::apply_layer(data, root, None)
    }

    /// Import an image archive (OCI layout or docker-archive tarball) from `path` into a store
    /// rooted at `root`.
    pub fn archive(root: &Path, path: &Path) -> Result<Vec<String>, String> {
        let store = super::ImageStore::open(root, Vec::new()).map_err(|e| e.to_string())?;
        store.import(path).map_err(|e| e.to_string())
    }
}
