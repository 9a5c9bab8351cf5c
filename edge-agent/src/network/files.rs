//! The network's state files (tenant slices, one record per pod), written atomically and
//! read back after a restart.

use super::*;

#[derive(Debug, Default, Serialize, Deserialize)]
pub(super) struct TenantsFile {
    pub(super) pod_cidr: String,
    pub(super) table: String,
    pub(super) tenants: BTreeMap<String, TenantNet>,
}

/// What this agent knows of one pod. Written before the pod's netns exists; `ip` is set once
/// CNI ADD succeeded.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(super) struct PodRecord {
    pub(super) uid: String,
    pub(super) tenant: String,
    pub(super) netns: String,
    #[serde(default)]
    pub(super) ip: Option<Ipv4Addr>,
    #[serde(default)]
    pub(super) gateway: Option<Ipv4Addr>,
    #[serde(default)]
    pub(super) result: Option<Value>,
    /// The file did not parse: only `uid` and `netns` are known.
    #[serde(skip)]
    pub(super) corrupt: bool,
}

impl PodRecord {
    pub(super) fn pod_net(&self) -> Option<PodNet> {
        Some(PodNet {
            netns: Path::new(NETNS_DIR).join(&self.netns),
            ip: self.ip?,
            gateway: self.gateway?,
        })
    }
}

pub(super) fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> NetError + '_ {
    move |source| NetError::Io {
        path: path.to_path_buf(),
        source,
    }
}

pub(super) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    let tmp = dir.join(format!(
        ".{name}.{}.{}.tmp",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    let res = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(dir)?.sync_all()
    })();
    if res.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    res.map_err(io_err(path))
}

pub(super) fn remove_file(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io_err(path)(e)),
        _ => Ok(()),
    }
}

pub(super) fn remove_dir_all(path: &Path) -> Result<()> {
    match std::fs::remove_dir_all(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io_err(path)(e)),
        _ => Ok(()),
    }
}

pub(super) fn to_json<T: Serialize>(v: &T) -> Vec<u8> {
    // Serialising these plain structs cannot fail; an empty file would read back as corrupt.
    serde_json::to_vec_pretty(v).unwrap_or_default()
}

/// Run blocking file work off the async threads.
pub(super) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(f).await.unwrap_or_else(|e| {
        Err(NetError::Io {
            path: PathBuf::new(),
            source: std::io::Error::other(e.to_string()),
        })
    })
}

/// Everything on disk under a state dir.
pub(super) struct Loaded {
    pub(super) tenants: Option<TenantsFile>,
    pub(super) pods: HashMap<String, PodRecord>,
}

pub(super) fn load(state_dir: &Path) -> Result<Loaded> {
    let (tenants, pods) = load_parts(state_dir);
    Ok(Loaded {
        tenants: tenants?,
        pods: pods?,
    })
}

/// tenants.json and the pod records, each as far as it can be read.
pub(super) fn load_parts(
    state_dir: &Path,
) -> (
    Result<Option<TenantsFile>>,
    Result<HashMap<String, PodRecord>>,
) {
    (load_tenants(state_dir), load_pods(state_dir))
}

pub(super) fn load_tenants(state_dir: &Path) -> Result<Option<TenantsFile>> {
    let path = state_dir.join("tenants.json");
    match std::fs::read(&path) {
        Ok(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(|source| NetError::Corrupt { path, source }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err(&path)(e)),
    }
}

/// The pod records; an unreadable one still names its pod (file name) and so its netns.
pub(super) fn load_pods(state_dir: &Path) -> Result<HashMap<String, PodRecord>> {
    let pdir = state_dir.join("pods");
    let mut pods = HashMap::new();
    let entries = match std::fs::read_dir(&pdir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(pods),
        Err(e) => return Err(io_err(&pdir)(e)),
    };
    for entry in entries {
        let path = entry.map_err(io_err(&pdir))?.path();
        let Some(uid) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".json"))
            .filter(|u| valid_uid(u))
            .map(String::from)
        else {
            continue;
        };
        let rec = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice::<PodRecord>(&b).ok())
            .filter(|r| r.uid == uid)
            .unwrap_or_else(|| {
                tracing::warn!(path = %path.display(), "unreadable pod network record");
                PodRecord {
                    netns: netns_name(&uid),
                    uid: uid.clone(),
                    tenant: String::new(),
                    ip: None,
                    gateway: None,
                    result: None,
                    corrupt: true,
                }
            });
        pods.insert(uid, rec);
    }
    Ok(pods)
}

/// The network namespace recorded for pod `uid` under `state_dir`, read from its record alone
/// (no `Network` handle needed); `None` when the pod has no record here (a hostNetwork pod, or
/// none at all).
pub fn recorded_netns(state_dir: &Path, uid: &str) -> Option<PathBuf> {
    if !valid_uid(uid) {
        return None;
    }
    let b = std::fs::read(state_dir.join("pods").join(format!("{uid}.json"))).ok()?;
    let rec: PodRecord = serde_json::from_slice(&b).ok()?;
    (rec.uid == uid).then(|| netns_path(&rec.netns))
}
