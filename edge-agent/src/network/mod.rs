//! Pod networking through the standard CNI plugins, one bridge and subnet per tenant.
//!
//! Each pod gets its own network namespace (`ip netns add atl-…`), wired by the `bridge` plugin
//! with `host-local` IPAM. Each tenant gets its own /24 slice of the pod CIDR and its own bridge,
//! so pods of one tenant talk over L2. The bridge plugin (`isGateway`) turns on `ip_forward`, so
//! the host would route between tenant subnets: a per-agent nftables table drops forwarding
//! between two different tenant bridges, and drops packets from a tenant bridge to the host's
//! pod-CIDR addresses outside the tenant's own subnet (the other tenants' gateways). The host
//! itself reaches every pod (kubelet-style probes), and pods reach their own gateway.
//!
//! Everything an agent creates is named from its pod CIDR (bridges, nft table) or lives under its
//! state dir, so several agents on one host stay apart as long as their pod CIDRs differ, and
//! [`Network::reset`] removes exactly one agent's objects. State dir layout:
//!
//! - `tenants.json`: tenant → slice index, bridge, subnet, gateway (written atomically);
//! - `pods/<uid>.json`: one record per pod, written *before* its netns is created, so nothing
//!   this agent creates is ever unrecorded;
//! - `ipam/`: host-local's data dir.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::io::Write as _;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt as _;

mod exec;
mod files;
mod plan;

use exec::*;
pub use files::recorded_netns;
use files::*;
pub use plan::*;

/// Where the CNI plugins are looked for by default.
pub const DEFAULT_CNI_BIN_DIRS: [&str; 2] = ["/usr/lib/cni", "/opt/cni/bin"];
/// Deadline for every child process (plugin, `ip`, `nft`); it is killed when it passes.
pub const CHILD_TIMEOUT: Duration = Duration::from_secs(30);
/// CNI spec version of the network configuration we hand the plugins.
pub const CNI_VERSION: &str = "1.0.0";
/// Where `ip netns` keeps its namespaces.
pub const NETNS_DIR: &str = "/var/run/netns";
/// The pod-side interface.
pub const IFNAME: &str = "eth0";
/// A VM pod's bridge in its netns: `eth0` and the guest's tap are its ports, and the guest
/// holds the pod's address.
pub const VM_BRIDGE: &str = "vmbr0";
/// A VM pod's tap device in its netns (qemu opens it by this name).
pub const VM_TAP: &str = "vmtap0";
/// Plugins this module executes (bridge calls host-local itself, through `CNI_PATH`).
const REQUIRED_PLUGINS: [&str; 2] = ["bridge", "host-local"];
/// The name the system tenant (`""`) goes by.
const SYSTEM_TENANT: &str = "system";
const PATH_ENV: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Network configuration of one agent.
#[derive(Clone, Debug)]
pub struct NetConfig {
    /// Directories searched for the CNI plugins, in order; also the plugins' `CNI_PATH`.
    pub cni_bin_dirs: Vec<PathBuf>,
    /// IPv4 pod CIDR of this node (prefix at most /24); each tenant gets one /24 of it.
    pub pod_cidr: String,
    /// This module's state directory (`ROOT/net`).
    pub state_dir: PathBuf,
}

impl NetConfig {
    /// A configuration with the default plugin directories.
    pub fn new(pod_cidr: impl Into<String>, state_dir: impl Into<PathBuf>) -> Self {
        NetConfig {
            cni_bin_dirs: DEFAULT_CNI_BIN_DIRS.iter().map(PathBuf::from).collect(),
            pod_cidr: pod_cidr.into(),
            state_dir: state_dir.into(),
        }
    }
}

/// A pod's network, as the runtime needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodNet {
    /// The network namespace, for the OCI spec's `linux.namespaces[network].path`.
    pub netns: PathBuf,
    /// The pod's address on its tenant's bridge.
    pub ip: Ipv4Addr,
    /// Its gateway (the host's address on that bridge).
    pub gateway: Ipv4Addr,
}

/// Pod networking failures.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// The configuration is unusable (bad pod CIDR, state of another CIDR).
    #[error("network config: {0}")]
    Config(String),
    /// A required CNI plugin is in none of the plugin directories.
    #[error("cni plugin {plugin:?} not found in {}", dirs.join(", "))]
    MissingPlugin {
        /// The plugin's name.
        plugin: String,
        /// The directories searched.
        dirs: Vec<String>,
    },
    /// A pod uid unusable as a CNI container id or netns name.
    #[error("invalid pod uid {0:?}")]
    InvalidUid(String),
    /// Every /24 of the pod CIDR is taken by a tenant.
    #[error("no free /24 left in pod cidr {cidr} for tenant {tenant:?} ({used} tenants)")]
    Exhausted {
        /// The pod CIDR.
        cidr: String,
        /// The tenant that wanted one.
        tenant: String,
        /// Slices in use.
        used: usize,
    },
    /// Something else holds what this pod needs.
    #[error("{0}")]
    Conflict(String),
    /// A CNI plugin reported an error.
    #[error("cni {command} failed (code {code}): {msg}{}", if details.is_empty() { String::new() } else { format!(": {details}") })]
    Plugin {
        /// `ADD` or `DEL`.
        command: &'static str,
        /// The CNI error code.
        code: u64,
        /// The plugin's message.
        msg: String,
        /// The plugin's details.
        details: String,
    },
    /// A plugin succeeded but its result is unusable.
    #[error("cni result: {0}")]
    BadResult(String),
    /// A child process could not be started.
    #[error("spawn {program}")]
    Spawn {
        /// The program.
        program: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A child process outlived [`CHILD_TIMEOUT`] and was killed.
    #[error("{program} timed out after {}s", deadline.as_secs())]
    Timeout {
        /// The program.
        program: String,
        /// The deadline it had.
        deadline: Duration,
    },
    /// A command (`ip`, `nft`, or a plugin without a CNI error) exited non-zero.
    #[error("{command}: {msg}")]
    Command {
        /// The command line.
        command: String,
        /// Its stderr, or its exit status.
        msg: String,
    },
    /// Reading or writing the state dir failed.
    #[error("state {}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A state file could not be parsed.
    #[error("state {} is corrupt", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
}

/// Results of this module.
pub type Result<T, E = NetError> = std::result::Result<T, E>;

// ---------------------------------------------------------------------------------------------
// The network.

#[derive(Default)]
struct State {
    tenants: BTreeMap<String, TenantNet>,
    pods: HashMap<String, PodRecord>,
    /// The nft table holds every tenant in `tenants`.
    nft_applied: bool,
    /// tenants.json belongs to another pod CIDR: (its CIDR, its table, its bridges).
    foreign: Option<(String, String, Vec<String>)>,
}

struct Inner {
    cidr: Cidr,
    table: String,
    bridge_plugin: PathBuf,
    cni_path: String,
    state_dir: PathBuf,
    /// Read by setup/teardown, written by reset.
    ops: tokio::sync::RwLock<()>,
    /// Tenant allocation, tenants.json and the nft table.
    tenants_lock: tokio::sync::Mutex<()>,
    /// One lock per tenant: its plugins run one at a time.
    tenant_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    state: Mutex<State>,
}

/// Pod networking of one agent. Cheap to clone; safe to share between tasks.
#[derive(Clone)]
pub struct Network {
    inner: Arc<Inner>,
}

impl fmt::Debug for Network {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Network")
            .field("pod_cidr", &self.inner.cidr)
            .field("state_dir", &self.inner.state_dir)
            .finish_non_exhaustive()
    }
}

#[derive(Clone, Copy)]
enum Cni {
    Add,
    Del,
}

impl Cni {
    fn as_str(self) -> &'static str {
        match self {
            Cni::Add => "ADD",
            Cni::Del => "DEL",
        }
    }
}

impl Network {
    /// Check the configuration (pod CIDR, plugins) and load the state dir.
    pub fn new(cfg: NetConfig) -> Result<Self> {
        Self::build(cfg, true)
    }

    /// A network good for [`Network::reset`] only (`edge-agent reset`): the pod CIDR must
    /// parse, but missing plugins (CNI DEL is best effort there) and unreadable state files
    /// (what can be derived is removed anyway) are tolerated.
    pub fn for_cleanup(cfg: NetConfig) -> Result<Self> {
        Self::build(cfg, false)
    }

    fn build(cfg: NetConfig, strict: bool) -> Result<Self> {
        let cidr = parse_pod_cidr(&cfg.pod_cidr).map_err(NetError::Config)?;
        let dirs: Vec<String> = cfg
            .cni_bin_dirs
            .iter()
            .map(|d| d.display().to_string())
            .collect();
        let find = |plugin: &str| {
            cfg.cni_bin_dirs
                .iter()
                .map(|d| d.join(plugin))
                .find(|p| p.is_file())
                .ok_or_else(|| NetError::MissingPlugin {
                    plugin: plugin.into(),
                    dirs: dirs.clone(),
                })
        };
        let mut found = Vec::new();
        for p in REQUIRED_PLUGINS {
            match find(p) {
                Ok(path) => found.push(path),
                Err(e) if strict => return Err(e),
                Err(_) => found.push(PathBuf::from(p)),
            }
        }
        let bridge_plugin = found.swap_remove(0);
        let cni_path = cfg
            .cni_bin_dirs
            .iter()
            .filter(|d| d.is_dir())
            .map(|d| d.display().to_string())
            .collect::<Vec<_>>()
            .join(":");
        let table = table_name(&cidr);
        let loaded = if strict {
            load(&cfg.state_dir)?
        } else {
            let (tenants, pods) = load_parts(&cfg.state_dir);
            let lenient = |what: &str, e: NetError| {
                tracing::warn!(error = %e, "{what} unreadable; resetting what can be derived");
            };
            Loaded {
                tenants: tenants.unwrap_or_else(|e| {
                    lenient("tenants", e);
                    None
                }),
                pods: pods.unwrap_or_else(|e| {
                    lenient("pod records", e);
                    HashMap::new()
                }),
            }
        };
        let mut state = State {
            pods: loaded.pods,
            ..State::default()
        };
        if let Some(tf) = loaded.tenants {
            if tf.pod_cidr == cidr.to_string() {
                state.tenants = tf.tenants;
            } else {
                let bridges = tf.tenants.values().map(|t| t.bridge.clone()).collect();
                state.foreign = Some((tf.pod_cidr, tf.table, bridges));
            }
        }
        Ok(Network {
            inner: Arc::new(Inner {
                cidr,
                table,
                bridge_plugin,
                cni_path,
                state_dir: cfg.state_dir,
                ops: tokio::sync::RwLock::new(()),
                tenants_lock: tokio::sync::Mutex::new(()),
                tenant_locks: Mutex::new(HashMap::new()),
                state: Mutex::new(state),
            }),
        })
    }

    /// The agent's pod CIDR.
    pub fn pod_cidr(&self) -> Cidr {
        self.inner.cidr
    }

    /// The agent's nftables table (family inet).
    pub fn table(&self) -> &str {
        &self.inner.table
    }

    /// A tenant's network, if it has one on this agent.
    pub fn tenant(&self, tenant: &str) -> Option<TenantNet> {
        self.state().tenants.get(tenant_key(tenant)).cloned()
    }

    /// The network of a pod set up by this agent.
    pub fn get(&self, pod_uid: &str) -> Option<PodNet> {
        self.state().pods.get(pod_uid).and_then(PodRecord::pod_net)
    }

    /// Lend a pod's address to its VM (idempotent): in the pod's netns, a bridge with `eth0`
    /// and a tap for qemu as its ports, and the address taken off `eth0` (the guest holds it:
    /// by DHCP or the kernel command line). The pod's network must be set up.
    pub async fn lend_to_vm(&self, pod_uid: &str) -> Result<PodNet> {
        let net = self
            .get(pod_uid)
            .ok_or_else(|| NetError::Config(format!("pod {pod_uid} has no network")))?;
        let ns = net
            .netns
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if lent_to_vm(&ns).await && has_link(&ns, VM_TAP).await {
            return Ok(net);
        }
        let cidr = format!("{}/24", net.ip);
        if !has_link(&ns, VM_BRIDGE).await {
            ip(&["-n", &ns, "link", "add", VM_BRIDGE, "type", "bridge"]).await?;
        }
        if !has_link(&ns, VM_TAP).await {
            ip(&["-n", &ns, "tuntap", "add", "dev", VM_TAP, "mode", "tap"]).await?;
        }
        // Taken off eth0 (absent already after a crash half-way: not an error).
        let _ = ip(&["-n", &ns, "addr", "del", &cidr, "dev", IFNAME]).await;
        for dev in [IFNAME, VM_TAP] {
            ip(&["-n", &ns, "link", "set", dev, "master", VM_BRIDGE]).await?;
        }
        for dev in [VM_BRIDGE, VM_TAP, IFNAME] {
            ip(&["-n", &ns, "link", "set", dev, "up"]).await?;
        }
        Ok(net)
    }

    /// Give a pod its netns, wired to its tenant's bridge. Idempotent: a pod whose netns still
    /// holds its recorded address (say, after an agent restart) gets the same network back.
    #[tracing::instrument(skip(self, pod_uid), fields(pod = pod_uid))]
    pub async fn setup(&self, pod_uid: &str, tenant: &str) -> Result<PodNet> {
        if !valid_uid(pod_uid) {
            return Err(NetError::InvalidUid(pod_uid.into()));
        }
        let tenant = tenant_key(tenant).to_string();
        let _ops = self.inner.ops.read().await;
        let lock = self.tenant_lock(&tenant);
        let mut tenant_guard = Some(lock.lock().await);
        let tnet = self.ensure_tenant(&tenant).await?;
        let name = netns_name(pod_uid);
        let record = self.state().pods.get(pod_uid).cloned();
        match &record {
            Some(rec) if !rec.corrupt && rec.tenant != tenant => {
                return Err(NetError::Conflict(format!(
                    "pod {pod_uid} is set up for tenant {:?}",
                    rec.tenant
                )));
            }
            Some(rec) => {
                if let Some(net) = rec.pod_net() {
                    if has_addr(&rec.netns, net.ip).await {
                        tracing::debug!(ip = %net.ip, "pod network already set up");
                        return Ok(net);
                    }
                }
                // Half set up (a crash, or the address is gone): release what is left and
                // ADD again, in the same netns if it is still there.
                tracing::info!("redoing a stale pod network");
                let ns = netns_path(&rec.netns);
                let ns = netns_exists(&rec.netns).await.then_some(ns.as_path());
                self.cni(Cni::Del, pod_uid, ns, &tnet, rec.result.as_ref())
                    .await?;
            }
            None if netns_exists(&name).await => {
                return Err(NetError::Conflict(format!(
                    "netns {name} exists but was not created for pod {pod_uid} by this agent"
                )));
            }
            None => {}
        }
        let netns = record.map_or(name, |r| r.netns);
        let pending = PodRecord {
            uid: pod_uid.into(),
            tenant: tenant.clone(),
            netns: netns.clone(),
            ip: None,
            gateway: None,
            result: None,
            corrupt: false,
        };
        self.save_record(pending).await?;
        // The plugins (bridge, host-local with its own file lock) take concurrent ADDs once the
        // tenant's bridge exists; only its creation is serialised.
        if std::path::Path::new("/sys/class/net")
            .join(&tnet.bridge)
            .exists()
        {
            tenant_guard.take();
        }
        match self.add(pod_uid, &netns, &tnet).await {
            Ok((net, result)) => {
                let rec = PodRecord {
                    uid: pod_uid.into(),
                    tenant,
                    netns,
                    ip: Some(net.ip),
                    gateway: Some(net.gateway),
                    result: Some(result),
                    corrupt: false,
                };
                self.save_record(rec).await?;
                tracing::info!(ip = %net.ip, "pod network set up");
                Ok(net)
            }
            Err(e) => {
                // Leave nothing behind; the error that matters is the ADD's.
                let ns = netns_path(&netns);
                let ns = netns_exists(&netns).await.then_some(ns.as_path());
                // A failed DEL keeps the record, so teardown or reset can release it later.
                let del = self.cni(Cni::Del, pod_uid, ns, &tnet, None).await;
                let gone = netns_delete(&netns).await;
                match (del, gone) {
                    (Ok(_), Ok(())) => {
                        let _ = self.drop_record(pod_uid).await;
                    }
                    (Err(d), _) | (_, Err(d)) => {
                        tracing::warn!(error = %d, "cleanup after a failed ADD")
                    }
                }
                Err(e)
            }
        }
    }

    /// Create the netns (if missing), bring `lo` up, CNI ADD.
    async fn add(&self, pod_uid: &str, netns: &str, tnet: &TenantNet) -> Result<(PodNet, Value)> {
        if !netns_exists(netns).await {
            ip(&["netns", "add", netns]).await?;
        }
        ip(&["-n", netns, "link", "set", "lo", "up"]).await?;
        let path = netns_path(netns);
        let out = self.cni(Cni::Add, pod_uid, Some(&path), tnet, None).await?;
        let (ip, gw) = parse_cni_result(&out).map_err(NetError::BadResult)?;
        if !tnet.subnet.contains(ip) {
            return Err(NetError::BadResult(format!(
                "address {ip} is outside the tenant's subnet {}",
                tnet.subnet
            )));
        }
        let result: Value =
            serde_json::from_slice(&out).map_err(|e| NetError::BadResult(e.to_string()))?;
        Ok((
            PodNet {
                netns: path,
                ip,
                gateway: gw.unwrap_or(tnet.gateway),
            },
            result,
        ))
    }

    /// Release a pod's network and delete its netns. Idempotent; a pod this agent has no
    /// record of has nothing to release. When CNI DEL fails the netns is still deleted and the
    /// record kept, so a retry releases the address.
    #[tracing::instrument(skip(self, pod_uid), fields(pod = pod_uid))]
    pub async fn teardown(&self, pod_uid: &str, tenant: &str) -> Result<()> {
        if !valid_uid(pod_uid) {
            return Err(NetError::InvalidUid(pod_uid.into()));
        }
        let _ops = self.inner.ops.read().await;
        let record = self.state().pods.get(pod_uid).cloned();
        let Some(rec) = record else {
            return Ok(());
        };
        let tenant = if rec.corrupt {
            tenant_key(tenant).to_string()
        } else {
            rec.tenant.clone()
        };
        let lock = self.tenant_lock(&tenant);
        let _tenant = lock.lock().await;
        // A setup of the same pod may have finished while we waited.
        let Some(rec) = self.state().pods.get(pod_uid).cloned() else {
            return Ok(());
        };
        let tnet = self.state().tenants.get(&tenant).cloned();
        let del = match &tnet {
            Some(tnet) => {
                let ns = netns_path(&rec.netns);
                let ns = netns_exists(&rec.netns).await.then_some(ns.as_path());
                self.cni(Cni::Del, pod_uid, ns, tnet, rec.result.as_ref())
                    .await
                    .map(drop)
            }
            None => Ok(()),
        };
        netns_delete(&rec.netns).await?;
        del?;
        self.drop_record(pod_uid).await?;
        tracing::info!("pod network torn down");
        Ok(())
    }

    /// Remove everything this agent created: the netns of every recorded pod, the tenant
    /// bridges, the nft table, and the state dir's contents (tenants, records, IPAM leases).
    /// Keeps going past failures and returns the first. Setups and teardowns wait for it.
    #[tracing::instrument(skip(self), fields(pod_cidr = %self.inner.cidr))]
    pub async fn reset(&self) -> Result<()> {
        let _ops = self.inner.ops.write().await;
        let _tenants = self.inner.tenants_lock.lock().await;
        let mut first: Option<NetError> = None;
        let mut keep = |r: Result<()>| {
            if let Err(e) = r {
                tracing::warn!(error = %e, "reset");
                first.get_or_insert(e);
            }
        };
        // What is on disk (another instance may have written it) and what is in memory.
        let dir = self.inner.state_dir.clone();
        let (disk_tenants, disk_pods) = blocking(move || Ok(load_parts(&dir)))
            .await
            .unwrap_or_else(|e| (Err(e), Ok(HashMap::new())));
        let disk_tenants = disk_tenants.unwrap_or_else(|e| {
            keep(Err(e));
            None
        });
        let disk_pods = disk_pods.unwrap_or_else(|e| {
            keep(Err(e));
            HashMap::new()
        });
        let (mut tenants, mut pods, mut tables, mut bridges) = {
            let st = self.state();
            let mut bridges: Vec<String> = Vec::new();
            let mut tables = vec![self.inner.table.clone()];
            if let Some((_, table, b)) = &st.foreign {
                tables.push(table.clone());
                bridges.extend(b.iter().cloned());
            }
            (st.tenants.clone(), st.pods.clone(), tables, bridges)
        };
        pods.extend(disk_pods);
        if let Some(tf) = disk_tenants {
            tables.push(tf.table);
            for (k, t) in tf.tenants {
                tenants.entry(k).or_insert(t);
            }
        }
        for rec in pods.values() {
            if let Some(tnet) = tenants.get(&rec.tenant) {
                if netns_exists(&rec.netns).await {
                    let ns = netns_path(&rec.netns);
                    let del = self
                        .cni(Cni::Del, &rec.uid, Some(&ns), tnet, rec.result.as_ref())
                        .await;
                    if let Err(e) = del {
                        // The netns and bridge go anyway; leases go with the IPAM dir.
                        tracing::warn!(pod = %rec.uid, error = %e, "reset: cni DEL");
                    }
                }
            }
            keep(netns_delete(&rec.netns).await);
        }
        bridges.extend(tenants.values().map(|t| t.bridge.clone()));
        // Tenants named only by a pod record (tenants.json lost) still have derivable bridges.
        bridges.extend(
            pods.values()
                .filter(|r| !r.corrupt)
                .map(|r| bridge_name(&self.inner.cidr, &r.tenant)),
        );
        bridges.sort();
        bridges.dedup();
        for b in &bridges {
            keep(link_delete(b).await);
        }
        tables.sort();
        tables.dedup();
        for t in &tables {
            keep(nft(&nft_delete_script(t)).await);
        }
        let dir = self.inner.state_dir.clone();
        keep(
            blocking(move || {
                remove_dir_all(&dir.join("ipam"))?;
                remove_dir_all(&dir.join("pods"))?;
                remove_file(&dir.join("tenants.json"))?;
                // Only if nothing else lives there.
                let _ = std::fs::remove_dir(&dir);
                Ok(())
            })
            .await,
        );
        {
            let mut st = self.state();
            *st = State::default();
        }
        match first {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.inner
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn tenant_lock(&self, tenant: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self
            .inner
            .tenant_locks
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        locks.entry(tenant.to_string()).or_default().clone()
    }

    /// The tenant's network, allocated (and persisted) on first use; the nft table is brought
    /// up to date before any pod of the tenant gets an address.
    async fn ensure_tenant(&self, tenant: &str) -> Result<TenantNet> {
        let _g = self.inner.tenants_lock.lock().await;
        let cidr = self.inner.cidr;
        let (tnet, new_file) = {
            let st = self.state();
            if let Some((other, _, _)) = &st.foreign {
                return Err(NetError::Config(format!(
                    "state dir {} belongs to pod cidr {other}, not {cidr}; reset it first",
                    self.inner.state_dir.display()
                )));
            }
            match st.tenants.get(tenant) {
                Some(t) => (t.clone(), None),
                None => {
                    let index = free_index(st.tenants.values().map(|t| t.index), cidr.slices())
                        .ok_or_else(|| NetError::Exhausted {
                            cidr: cidr.to_string(),
                            tenant: tenant.into(),
                            used: st.tenants.len(),
                        })?;
                    let t = TenantNet::new(&cidr, tenant, index)
                        .ok_or_else(|| NetError::Config(format!("slice {index} of {cidr}")))?;
                    let mut tenants = st.tenants.clone();
                    tenants.insert(tenant.into(), t.clone());
                    let file = TenantsFile {
                        pod_cidr: cidr.to_string(),
                        table: self.inner.table.clone(),
                        tenants,
                    };
                    (t, Some(file))
                }
            }
        };
        if let Some(file) = new_file {
            let path = self.inner.state_dir.join("tenants.json");
            let bytes = to_json(&file);
            blocking(move || write_atomic(&path, &bytes)).await?;
            let mut st = self.state();
            st.tenants = file.tenants;
            st.nft_applied = false;
            tracing::info!(tenant, subnet = %tnet.subnet, bridge = %tnet.bridge, "tenant network");
        }
        let script = {
            let st = self.state();
            (!st.nft_applied).then(|| {
                let all: Vec<TenantNet> = st.tenants.values().cloned().collect();
                nft_script(&self.inner.table, &cidr, &all)
            })
        };
        if let Some(script) = script {
            nft(&script).await?;
            self.state().nft_applied = true;
        }
        Ok(tnet)
    }

    async fn save_record(&self, rec: PodRecord) -> Result<()> {
        let path = self
            .inner
            .state_dir
            .join("pods")
            .join(format!("{}.json", rec.uid));
        let bytes = to_json(&rec);
        blocking(move || write_atomic(&path, &bytes)).await?;
        self.state().pods.insert(rec.uid.clone(), rec);
        Ok(())
    }

    async fn drop_record(&self, pod_uid: &str) -> Result<()> {
        let path = self
            .inner
            .state_dir
            .join("pods")
            .join(format!("{pod_uid}.json"));
        blocking(move || remove_file(&path)).await?;
        self.state().pods.remove(pod_uid);
        Ok(())
    }

    /// Run the bridge plugin; its stdout on success.
    async fn cni(
        &self,
        command: Cni,
        pod_uid: &str,
        netns: Option<&Path>,
        tnet: &TenantNet,
        prev: Option<&Value>,
    ) -> Result<Vec<u8>> {
        let conf = netconf(tnet, &self.inner.state_dir.join("ipam"), prev);
        let stdin = serde_json::to_vec(&conf).map_err(|e| NetError::BadResult(e.to_string()))?;
        let netns = netns
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        let env = [
            ("CNI_COMMAND", command.as_str()),
            ("CNI_CONTAINERID", pod_uid),
            ("CNI_NETNS", netns.as_str()),
            ("CNI_IFNAME", IFNAME),
            ("CNI_PATH", self.inner.cni_path.as_str()),
        ];
        let out = run(&self.inner.bridge_plugin, &[], Some(&env), Some(&stdin)).await?;
        if out.status.success() {
            return Ok(out.stdout);
        }
        match parse_cni_error(&out.stdout) {
            Some((code, msg, details)) => Err(NetError::Plugin {
                command: command.as_str(),
                code,
                msg,
                details,
            }),
            None => Err(failure(&format!("cni {}", command.as_str()), &[], &out)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidr(s: &str) -> Cidr {
        Cidr::parse(s).unwrap()
    }

    #[test]
    fn pod_cidr_must_be_ipv4_with_room_for_a_slice() {
        assert_eq!(
            parse_pod_cidr("10.88.0.0/16").unwrap(),
            cidr("10.88.0.0/16")
        );
        assert_eq!(parse_pod_cidr("10.88.7.0/24").unwrap().slices(), 1);
        assert!(parse_pod_cidr("10.88.0.0/25").unwrap_err().contains("/24"));
        assert!(parse_pod_cidr("fd00::/64").unwrap_err().contains("IPv4"));
        assert!(parse_pod_cidr("10.88.0.1/16")
            .unwrap_err()
            .contains("host bits"));
        assert!(parse_pod_cidr("10.88.0.0").is_err());
        assert!(parse_pod_cidr("10.88.0.0/33").is_err());
        assert!(parse_pod_cidr("10.300.0.0/16").is_err());
        assert_eq!(parse_pod_cidr("0.0.0.0/0").unwrap().slices(), 1 << 24);
    }

    #[test]
    fn slices_are_the_consecutive_24s() {
        let c = cidr("10.213.0.0/16");
        assert_eq!(c.slices(), 256);
        assert_eq!(c.slice(0), Some(cidr("10.213.0.0/24")));
        assert_eq!(c.slice(5), Some(cidr("10.213.5.0/24")));
        assert_eq!(c.slice(255), Some(cidr("10.213.255.0/24")));
        assert_eq!(c.slice(256), None);
        let t = TenantNet::new(&c, "alpha", 3).unwrap();
        assert_eq!(t.gateway, Ipv4Addr::new(10, 213, 3, 1));
        assert!(t.subnet.contains(Ipv4Addr::new(10, 213, 3, 77)));
        assert!(!t.subnet.contains(Ipv4Addr::new(10, 213, 4, 77)));
        assert_eq!(free_index([0, 1, 3].into_iter(), 4), Some(2));
        assert_eq!(free_index([0, 1].into_iter(), 2), None);
        assert_eq!(free_index(std::iter::empty(), 1), Some(0));
    }

    #[test]
    fn names_fit_the_kernel_and_differ_per_agent_and_tenant() {
        let a = cidr("10.88.0.0/16");
        let b = cidr("10.89.0.0/16");
        let br = bridge_name(&a, "alpha");
        assert!(br.len() <= 15 && br.starts_with("atl"), "{br}");
        assert_eq!(br, bridge_name(&a, "alpha"));
        assert_ne!(br, bridge_name(&a, "beta"));
        assert_ne!(br, bridge_name(&b, "alpha"));
        assert_eq!(bridge_name(&a, ""), bridge_name(&a, "system"));
        assert_eq!(table_name(&a).len(), 12);
        assert_ne!(table_name(&a), table_name(&b));
        assert_eq!(
            netns_name("6f1c2d3e-aaaa-bbbb-cccc-000000000000"),
            "atl-6f1c2d3eaaaa"
        );
        assert_eq!(netns_name("a1"), "atl-a1");
        assert!(valid_uid("6f1c2d3e-aaaa-bbbb-cccc-000000000000"));
        for bad in ["", "-a", "a/b", "..", "a b", &"x".repeat(129)] {
            assert!(!valid_uid(bad), "{bad:?}");
        }
    }

    #[test]
    fn netconf_is_a_bridge_with_host_local_in_our_data_dir() {
        let t = TenantNet::new(&cidr("10.88.0.0/16"), "alpha", 2).unwrap();
        let c = netconf(&t, Path::new("/r/net/ipam"), None);
        assert_eq!(c["cniVersion"], "1.0.0");
        assert_eq!(c["type"], "bridge");
        assert_eq!(c["bridge"], t.bridge.as_str());
        assert_eq!(c["name"], t.bridge.as_str());
        assert_eq!(c["isGateway"], true);
        assert_eq!(c["ipMasq"], false);
        assert_eq!(c["hairpinMode"], true);
        let ipam = &c["ipam"];
        assert_eq!(ipam["type"], "host-local");
        assert_eq!(ipam["dataDir"], "/r/net/ipam");
        let r = &ipam["ranges"][0][0];
        assert_eq!(r["subnet"], "10.88.2.0/24");
        assert_eq!(r["gateway"], "10.88.2.1");
        assert_eq!(r["rangeStart"], "10.88.2.2");
        assert_eq!(r["rangeEnd"], "10.88.2.254");
        assert_eq!(
            ipam["routes"][0],
            json!({"dst": "0.0.0.0/0", "gw": "10.88.2.1"})
        );
        assert!(c.get("prevResult").is_none());
        let prev = json!({"cniVersion": "1.0.0", "ips": []});
        assert_eq!(
            netconf(&t, Path::new("/x"), Some(&prev))["prevResult"],
            prev
        );
    }

    #[test]
    fn cni_results_of_both_versions_parse() {
        let v1 = br#"{"cniVersion":"1.0.0","interfaces":[{"name":"atl1","mac":"aa"},
            {"name":"eth0","mac":"bb","sandbox":"/var/run/netns/x"}],
            "ips":[{"interface":1,"address":"10.88.2.2/24","gateway":"10.88.2.1"}],
            "routes":[{"dst":"0.0.0.0/0","gw":"10.88.2.1"}],"dns":{}}"#;
        assert_eq!(
            parse_cni_result(v1).unwrap(),
            (
                Ipv4Addr::new(10, 88, 2, 2),
                Some(Ipv4Addr::new(10, 88, 2, 1))
            )
        );
        let v04 = br#"{"cniVersion":"0.4.0","ips":[{"version":"6","address":"fd00::2/64"},
            {"version":"4","address":"10.1.0.9/24"}]}"#;
        assert_eq!(
            parse_cni_result(v04).unwrap(),
            (Ipv4Addr::new(10, 1, 0, 9), None)
        );
        assert!(parse_cni_result(b"{}").unwrap_err().contains("ips"));
        assert!(parse_cni_result(br#"{"ips":[]}"#).is_err());
        assert!(parse_cni_result(b"garbage").unwrap_err().contains("JSON"));
    }

    #[test]
    fn cni_errors_parse() {
        let e = br#"{"cniVersion":"1.0.0","code":11,"msg":"failed to allocate","details":"range is full"}"#;
        let (code, msg, details) = parse_cni_error(e).unwrap();
        assert_eq!(
            (code, msg.as_str(), details.as_str()),
            (11, "failed to allocate", "range is full")
        );
        let shown = NetError::Plugin {
            command: "ADD",
            code,
            msg,
            details,
        }
        .to_string();
        assert_eq!(
            shown,
            "cni ADD failed (code 11): failed to allocate: range is full"
        );
        assert_eq!(
            parse_cni_error(br#"{"msg":"x"}"#).unwrap(),
            (0, "x".into(), String::new())
        );
        assert!(parse_cni_error(b"").is_none());
        assert!(parse_cni_error(br#"{"code":1}"#).is_none());
    }

    #[test]
    fn ip_addr_json_is_searched_for_the_address() {
        let out = br#"[{"ifindex":2,"ifname":"eth0","addr_info":[{"family":"inet","local":"10.88.2.2","prefixlen":24}]}]"#;
        assert!(addr_listed(out, Ipv4Addr::new(10, 88, 2, 2)));
        assert!(!addr_listed(out, Ipv4Addr::new(10, 88, 2, 3)));
        assert!(!addr_listed(b"[]", Ipv4Addr::new(10, 88, 2, 2)));
        assert!(!addr_listed(b"nope", Ipv4Addr::new(10, 88, 2, 2)));
    }

    #[test]
    fn nft_script_isolates_tenant_bridges() {
        let c = cidr("10.213.0.0/16");
        let a = TenantNet::new(&c, "alpha", 0).unwrap();
        let b = TenantNet::new(&c, "beta", 1).unwrap();
        let table = table_name(&c);
        let one = nft_script(&table, &c, std::slice::from_ref(&a));
        assert!(one.starts_with(&format!(
            "table inet {table} {{}}\ndelete table inet {table}\ntable inet {table} {{\n"
        )));
        assert!(one.contains("type filter hook forward priority 0; policy accept;"));
        assert!(one.contains("type filter hook input priority 0; policy accept;"));
        assert!(!one.contains("oifname"), "{one}");
        let two = nft_script(&table, &c, &[b.clone(), a.clone()]);
        let (ab, ba) = (a.bridge.as_str(), b.bridge.as_str());
        assert!(
            two.contains(&format!("iifname \"{ab}\" oifname {{ \"{ba}\" }} drop")),
            "{two}"
        );
        assert!(two.contains(&format!("iifname \"{ba}\" oifname {{ \"{ab}\" }} drop")));
        assert!(two.contains(&format!(
            "iifname \"{ab}\" ip daddr 10.213.0.0/16 ip daddr != 10.213.0.0/24 drop"
        )));
        assert!(two.contains(&format!(
            "iifname \"{ba}\" ip daddr 10.213.0.0/16 ip daddr != 10.213.1.0/24 drop"
        )));
        // Deterministic whatever the order tenants come in.
        assert_eq!(two, nft_script(&table, &c, &[a, b]));
        assert_eq!(
            nft_delete_script("atl_x"),
            "table inet atl_x {}\ndelete table inet atl_x\n"
        );
    }

    #[test]
    fn state_files_round_trip() {
        let c = cidr("10.88.0.0/16");
        let mut tenants = BTreeMap::new();
        tenants.insert("alpha".to_string(), TenantNet::new(&c, "alpha", 0).unwrap());
        let f = TenantsFile {
            pod_cidr: c.to_string(),
            table: table_name(&c),
            tenants,
        };
        let back: TenantsFile = serde_json::from_slice(&to_json(&f)).unwrap();
        assert_eq!(back.tenants, f.tenants);
        assert!(String::from_utf8(to_json(&f))
            .unwrap()
            .contains("\"10.88.0.0/24\""));
        let bad = br#"{"pod_cidr":"x","table":"t","tenants":{"a":{"index":0,"bridge":"b","subnet":"10.0.0.1/24","gateway":"10.0.0.1"}}}"#;
        assert!(serde_json::from_slice::<TenantsFile>(bad).is_err());
    }

    #[tokio::test]
    async fn children_past_their_deadline_are_killed() {
        let start = std::time::Instant::now();
        let e = run_within(
            Duration::from_millis(200),
            Path::new("sleep"),
            &["10"],
            None,
            None,
        )
        .await
        .unwrap_err();
        assert!(matches!(e, NetError::Timeout { .. }), "{e}");
        assert!(start.elapsed() < Duration::from_secs(5));
        let out = run(Path::new("cat"), &[], Some(&[("X", "1")]), Some(b"in"))
            .await
            .unwrap();
        assert_eq!(out.stdout, b"in");
        let e = run(Path::new("/nonexistent/x"), &[], None, None)
            .await
            .unwrap_err();
        assert_eq!(e.to_string(), "spawn /nonexistent/x");
    }

    #[test]
    fn network_and_its_futures_can_cross_tasks() {
        fn send_sync<T: Send + Sync>(_: &T) {}
        fn send<T: Send>(_: T) {}
        let net = Network {
            inner: Arc::new(Inner {
                cidr: cidr("10.88.0.0/16"),
                table: table_name(&cidr("10.88.0.0/16")),
                bridge_plugin: PathBuf::from("/nonexistent/bridge"),
                cni_path: String::new(),
                state_dir: PathBuf::from("/nonexistent/state"),
                ops: tokio::sync::RwLock::new(()),
                tenants_lock: tokio::sync::Mutex::new(()),
                tenant_locks: Mutex::new(HashMap::new()),
                state: Mutex::new(State::default()),
            }),
        };
        send_sync(&net);
        // Built, never polled: nothing runs.
        send(net.setup("a", "t"));
        send(net.teardown("a", "t"));
        send(net.reset());
        assert_eq!(net.get("a"), None);
    }

    #[test]
    fn missing_plugins_and_bad_cidrs_are_refused_clearly() {
        let cfg = NetConfig {
            cni_bin_dirs: vec![
                PathBuf::from("/nonexistent/a"),
                PathBuf::from("/nonexistent/b"),
            ],
            pod_cidr: "10.88.0.0/16".into(),
            state_dir: PathBuf::from("/nonexistent/state"),
        };
        let e = Network::new(cfg.clone()).unwrap_err().to_string();
        assert_eq!(
            e,
            "cni plugin \"bridge\" not found in /nonexistent/a, /nonexistent/b"
        );
        let e = Network::new(NetConfig {
            pod_cidr: "10.88.0.0/26".into(),
            ..cfg
        })
        .unwrap_err();
        assert!(matches!(e, NetError::Config(_)), "{e}");
    }
}
