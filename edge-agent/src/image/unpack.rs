//! Applying layer tars to a root filesystem, safely.
//!
//! Paths are resolved inside the root the way containerd does: `..` and absolute entry paths are
//! refused, and a symlink met on the way to an entry (one a layer created, pointing anywhere) is
//! followed *within* the root, so `evil -> /etc` then `evil/passwd` writes `ROOT/etc/passwd`
//! and nothing outside. The entry's own last component is never followed: whatever is there is
//! replaced. Hardlink targets resolve the same way and must exist inside the root. Device nodes
//! and fifos are skipped. Whiteouts (`.wh.NAME`, `.wh..wh..opq`) follow the OCI layer spec.

use std::collections::{HashSet, VecDeque};
use std::ffi::{OsStr, OsString};
use std::fs;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use sha2::{Digest, Sha256};

const WHITEOUT: &[u8] = b".wh.";
const OPAQUE: &[u8] = b".wh..wh..opq";
const MAX_SYMLINK_HOPS: usize = 40;

/// A reader that hashes what passes through it.
pub(crate) struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    count: u64,
}

impl<R: Read> HashingReader<R> {
    pub(crate) fn new(inner: R) -> Self {
        HashingReader {
            inner,
            hasher: Sha256::new(),
            count: 0,
        }
    }

    /// `sha256:<hex>` of everything read so far, and its length.
    pub(crate) fn finish(self) -> (String, u64) {
        (hex_digest(self.hasher), self.count)
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(b) = buf.get(..n) {
            self.hasher.update(b);
        }
        self.count += n as u64;
        Ok(n)
    }
}

/// `sha256:<lower hex>` of a finished hasher.
pub(crate) fn hex_digest(h: Sha256) -> String {
    let mut s = String::with_capacity(71);
    s.push_str("sha256:");
    for b in h.finalize() {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// Layer compression, from the stream's magic bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Compression {
    /// A plain tar.
    None,
    /// gzip.
    Gzip,
    /// zstd (not supported).
    Zstd,
}

/// Sniff a layer's compression.
pub(crate) fn sniff(head: &[u8]) -> Compression {
    if head.starts_with(&[0x1f, 0x8b]) {
        Compression::Gzip
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Compression::Zstd
    } else {
        Compression::None
    }
}

/// Apply one layer (plain or gzip tar) to `root`. When `diff_id` is given, the uncompressed
/// stream must hash to it.
pub(crate) fn apply_layer<R: Read>(
    reader: R,
    root: &Path,
    diff_id: Option<&str>,
) -> Result<(), String> {
    let mut buf = BufReader::with_capacity(128 * 1024, reader);
    let head = buf.fill_buf().map_err(|e| format!("reading layer: {e}"))?;
    let plain: Box<dyn Read> = match sniff(head) {
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(buf)),
        Compression::Zstd => return Err("zstd-compressed layers are not supported".into()),
        Compression::None => Box::new(buf),
    };
    let mut hashed = HashingReader::new(plain);
    {
        let mut archive = tar::Archive::new(&mut hashed);
        let mut layer = Layer {
            root,
            touched: HashSet::new(),
            dirs: Vec::new(),
        };
        let entries = archive
            .entries()
            .map_err(|e| format!("reading layer: {e}"))?;
        for entry in entries {
            let mut entry = entry.map_err(|e| format!("reading layer: {e}"))?;
            layer.apply(&mut entry)?;
        }
        layer.finish();
    }
    // The rest (end-of-archive blocks, padding) counts for the digest too.
    io::copy(&mut hashed, &mut io::sink()).map_err(|e| format!("reading layer: {e}"))?;
    if let Some(want) = diff_id {
        let (got, _) = hashed.finish();
        if got != want {
            return Err(format!(
                "digest mismatch: uncompressed layer is {got}, config says {want}"
            ));
        }
    }
    Ok(())
}

/// The path components of an archive path; `None` if it is absolute or has `..`.
pub(crate) fn clean(p: &Path) -> Option<Vec<OsString>> {
    let mut out = Vec::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::Normal(n) => out.push(n.to_os_string()),
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    Some(out)
}

struct Layer<'a> {
    root: &'a Path,
    /// Root-relative real paths this layer wrote, with all their ancestors.
    touched: HashSet<PathBuf>,
    /// Directory modes, applied last (a read-only directory may still receive entries).
    dirs: Vec<(PathBuf, u32)>,
}

fn io_err(what: &Path, e: io::Error) -> String {
    format!("{}: {e}", what.display())
}

impl Layer<'_> {
    fn apply<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>) -> Result<(), String> {
        let raw = entry
            .path()
            .map_err(|e| format!("bad entry path: {e}"))?
            .into_owned();
        let comps = clean(&raw).ok_or_else(|| format!("unsafe path in layer: {raw:?}"))?;
        let kind = entry.header().entry_type();
        let mode = entry.header().mode().unwrap_or(0o755) & 0o7777;
        let Some((name, parent)) = comps.split_last() else {
            // The root itself ("./").
            if kind.is_dir() {
                self.dirs.push((PathBuf::new(), mode));
            }
            return Ok(());
        };
        let name_bytes = name.as_bytes();
        if name_bytes == OPAQUE {
            if let Some(dir) = self.resolve(parent, false)? {
                self.opaque(&dir)?;
            }
            return Ok(());
        }
        if let Some(victim) = name_bytes.strip_prefix(WHITEOUT) {
            // `.wh..wh.*` is aufs metadata; `.`/`..` would name the directory or its parent.
            if victim.is_empty()
                || victim == b"."
                || victim == b".."
                || victim.starts_with(WHITEOUT)
            {
                return Ok(());
            }
            if let Some(dir) = self.resolve(parent, false)? {
                let rel = dir.join(OsStr::from_bytes(victim));
                if !self.touched.contains(&rel) {
                    remove_any(&self.root.join(&rel))?;
                }
            }
            return Ok(());
        }
        use tar::EntryType as T;
        match kind {
            T::Directory | T::Regular | T::Continuous | T::GNUSparse | T::Symlink | T::Link => {}
            T::Char | T::Block | T::Fifo => {
                tracing::debug!(path = ?raw, "skipping device node or fifo in layer");
                return Ok(());
            }
            other => {
                tracing::debug!(path = ?raw, kind = ?other, "skipping unsupported layer entry");
                return Ok(());
            }
        }
        let parent_rel = self
            .resolve(parent, true)?
            .ok_or_else(|| format!("{raw:?}: parent missing"))?;
        let rel = parent_rel.join(name);
        let full = self.root.join(&rel);
        let uid = entry
            .header()
            .uid()
            .ok()
            .and_then(|u| u32::try_from(u).ok());
        let gid = entry
            .header()
            .gid()
            .ok()
            .and_then(|g| u32::try_from(g).ok());
        match kind {
            T::Directory => {
                match fs::symlink_metadata(&full) {
                    Ok(m) if m.is_dir() => {}
                    Ok(_) => {
                        remove_any(&full)?;
                        fs::create_dir(&full).map_err(|e| io_err(&rel, e))?;
                    }
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {
                        fs::create_dir(&full).map_err(|e| io_err(&rel, e))?;
                    }
                    Err(e) => return Err(io_err(&rel, e)),
                }
                chown(&full, uid, gid);
                self.dirs.push((rel.clone(), mode));
            }
            T::Symlink => {
                let target = entry
                    .link_name()
                    .map_err(|e| format!("{raw:?}: bad symlink target: {e}"))?
                    .filter(|t| !t.as_os_str().is_empty())
                    .ok_or_else(|| format!("{raw:?}: symlink without target"))?
                    .into_owned();
                remove_any(&full)?;
                std::os::unix::fs::symlink(&target, &full).map_err(|e| io_err(&rel, e))?;
                chown(&full, uid, gid);
            }
            T::Link => {
                let target = entry
                    .link_name()
                    .map_err(|e| format!("{raw:?}: bad link target: {e}"))?
                    .ok_or_else(|| format!("{raw:?}: hardlink without target"))?
                    .into_owned();
                let tcomps = clean(&target)
                    .ok_or_else(|| format!("unsafe hardlink target in layer: {target:?}"))?;
                let (tname, tparent) = tcomps
                    .split_last()
                    .ok_or_else(|| format!("{raw:?}: hardlink to the root"))?;
                let missing = || format!("{raw:?}: hardlink target {target:?} not in the image");
                let tdir = self.resolve(tparent, false)?.ok_or_else(missing)?;
                let src = self.root.join(tdir.join(tname));
                match fs::symlink_metadata(&src) {
                    Ok(m) if m.is_dir() => {
                        return Err(format!("{raw:?}: hardlink to a directory"));
                    }
                    Ok(_) => {}
                    Err(_) => return Err(missing()),
                }
                if src != full {
                    remove_any(&full)?;
                    fs::hard_link(&src, &full).map_err(|e| io_err(&rel, e))?;
                }
            }
            _ => {
                remove_any(&full)?;
                let mut f = fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&full)
                    .map_err(|e| io_err(&rel, e))?;
                io::copy(entry, &mut f).map_err(|e| io_err(&rel, e))?;
                if let (Some(u), Some(g)) = (uid, gid) {
                    if let Err(e) = std::os::unix::fs::fchown(&f, Some(u), Some(g)) {
                        tracing::debug!(path = ?rel, error = %e, "chown");
                    }
                }
                // After chown, which clears set-id bits.
                f.set_permissions(fs::Permissions::from_mode(mode))
                    .map_err(|e| io_err(&rel, e))?;
                if let Ok(mtime) = entry.header().mtime() {
                    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(mtime);
                    let _ = f.set_modified(t);
                }
                f.flush().map_err(|e| io_err(&rel, e))?;
            }
        }
        self.touch(rel);
        Ok(())
    }

    fn touch(&mut self, rel: PathBuf) {
        let mut p = Some(rel.as_path());
        while let Some(x) = p {
            if x.as_os_str().is_empty() || !self.touched.insert(x.to_path_buf()) {
                break;
            }
            p = x.parent();
        }
    }

    /// Resolve directory components to a root-relative path of real directories, following
    /// symlinks inside the root. Missing directories are created when `create`, else `None`.
    fn resolve(&self, comps: &[OsString], create: bool) -> Result<Option<PathBuf>, String> {
        let mut stack: Vec<OsString> = Vec::new();
        let mut queue: VecDeque<OsString> = comps.iter().cloned().collect();
        let mut hops = 0;
        while let Some(c) = queue.pop_front() {
            if c.is_empty() || c == "." {
                continue;
            }
            if c == ".." {
                stack.pop();
                continue;
            }
            let rel: PathBuf = stack.iter().chain(std::iter::once(&c)).collect();
            let full = self.root.join(&rel);
            match fs::symlink_metadata(&full) {
                Ok(m) if m.is_dir() => stack.push(c),
                Ok(m) if m.file_type().is_symlink() => {
                    hops += 1;
                    if hops > MAX_SYMLINK_HOPS {
                        return Err(format!("{}: too many levels of symlinks", rel.display()));
                    }
                    let target = fs::read_link(&full).map_err(|e| io_err(&rel, e))?;
                    if target.is_absolute() {
                        stack.clear();
                    }
                    let parts: Vec<OsString> = target
                        .components()
                        .filter_map(|c| match c {
                            Component::Normal(n) => Some(n.to_os_string()),
                            Component::ParentDir => Some(OsString::from("..")),
                            _ => None,
                        })
                        .collect();
                    for p in parts.into_iter().rev() {
                        queue.push_front(p);
                    }
                }
                Ok(_) => return Err(format!("{}: not a directory", rel.display())),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    if !create {
                        return Ok(None);
                    }
                    fs::create_dir(&full).map_err(|e| io_err(&rel, e))?;
                    let _ = fs::set_permissions(&full, fs::Permissions::from_mode(0o755));
                    stack.push(c);
                }
                Err(e) => return Err(io_err(&rel, e)),
            }
        }
        Ok(Some(stack.iter().collect()))
    }

    /// Remove what lower layers put under `dir`, keeping what this layer wrote.
    fn opaque(&self, dir: &Path) -> Result<(), String> {
        let full = self.root.join(dir);
        let rd = match fs::read_dir(&full) {
            Ok(rd) => rd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io_err(dir, e)),
        };
        for child in rd {
            let child = child.map_err(|e| io_err(dir, e))?;
            let rel = dir.join(child.file_name());
            if self.touched.contains(&rel) {
                if fs::symlink_metadata(child.path()).is_ok_and(|m| m.is_dir()) {
                    self.opaque(&rel)?;
                }
            } else {
                remove_any(&child.path())?;
            }
        }
        Ok(())
    }

    /// Apply directory modes, never through a symlink.
    fn finish(self) {
        for (rel, mode) in self.dirs.iter().rev() {
            let full = self.root.join(rel);
            if fs::symlink_metadata(&full).is_ok_and(|m| m.is_dir()) {
                let _ = fs::set_permissions(&full, fs::Permissions::from_mode(*mode));
            }
        }
    }
}

fn chown(path: &Path, uid: Option<u32>, gid: Option<u32>) {
    if let (Some(u), Some(g)) = (uid, gid) {
        if let Err(e) = std::os::unix::fs::lchown(path, Some(u), Some(g)) {
            tracing::debug!(path = %path.display(), error = %e, "lchown");
        }
    }
}

/// Remove a file, symlink or directory tree at `path` (never following a symlink); absent is ok.
fn remove_any(path: &Path) -> Result<(), String> {
    let r = match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    };
    r.map_err(|e| io_err(path, e))
}
