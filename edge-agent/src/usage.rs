//! Resource usage for `kubectl top` (`GET /stats` on the agent's endpoint): every
//! [`WINDOW`] the agent reads its node's CPU time and memory (`/proc`) and each container's
//! cgroup (CPU time, memory usage less inactive file pages: the working set), and keeps the
//! CPU rates over the window, as kubelet's summary does for metrics-server.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use proto::usage::{ContainerUsage, NodeUsage, PodUsage, Usage};
use tokio_util::sync::CancellationToken;

/// How often usage is sampled (and the window of the CPU rates).
pub const WINDOW: Duration = Duration::from_secs(10);

/// Cumulative CPU time per (pod uid, container), ns.
type CpuTimes = HashMap<(String, String), u64>;

static LATEST: Mutex<Option<NodeUsage>> = Mutex::new(None);

/// The latest sample, if one was taken.
pub fn latest() -> Option<NodeUsage> {
    LATEST.lock().unwrap_or_else(|p| p.into_inner()).clone()
}

fn read_u64(p: &Path) -> Option<u64> {
    std::fs::read_to_string(p).ok()?.trim().parse().ok()
}

fn stat_field(p: &Path, key: &str) -> Option<u64> {
    std::fs::read_to_string(p)
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(' ')?.trim().parse().ok())
}

/// A container's cumulative CPU time (ns) and working set (bytes), cgroup v1 or v2.
fn container_raw(uid: &str, name: &str) -> Option<(u64, u64)> {
    let cg = Path::new("/sys/fs/cgroup");
    let rel = format!("atoll/{uid}/{name}");
    let v1cpu = cg.join("cpuacct").join(&rel);
    if v1cpu.is_dir() {
        let cpu = read_u64(&v1cpu.join("cpuacct.usage"))?;
        let mem = cg.join("memory").join(&rel);
        let used = read_u64(&mem.join("memory.usage_in_bytes")).unwrap_or(0);
        let inactive = stat_field(&mem.join("memory.stat"), "total_inactive_file").unwrap_or(0);
        return Some((cpu, used.saturating_sub(inactive)));
    }
    let v2 = cg.join(&rel);
    let cpu = stat_field(&v2.join("cpu.stat"), "usage_usec")? * 1000;
    let used = read_u64(&v2.join("memory.current")).unwrap_or(0);
    let inactive = stat_field(&v2.join("memory.stat"), "inactive_file").unwrap_or(0);
    Some((cpu, used.saturating_sub(inactive)))
}

/// The node's cumulative busy CPU time (ns) and memory in use (bytes).
fn node_raw() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let cpu = stat.lines().next()?.strip_prefix("cpu ")?;
    // user nice system idle iowait irq softirq steal: busy is all but idle and iowait.
    let f: Vec<u64> = cpu
        .split_whitespace()
        .filter_map(|v| v.parse().ok())
        .collect();
    let busy: u64 = f
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 3 && *i != 4 && *i < 8)
        .map(|(_, v)| *v)
        .sum();
    // USER_HZ is 100 on Linux.
    let busy_ns = busy * 10_000_000;
    let total = meminfo("MemTotal:")?;
    let avail = meminfo("MemAvailable:").unwrap_or(0);
    Some((busy_ns, total.saturating_sub(avail) * 1024))
}

fn meminfo(key: &str) -> Option<u64> {
    std::fs::read_to_string("/proc/meminfo")
        .ok()?
        .lines()
        .find_map(|l| {
            l.strip_prefix(key)?
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse()
                .ok()
        })
}

fn rate(now: u64, before: u64, secs: f64) -> u64 {
    if secs <= 0.0 {
        return 0;
    }
    (now.saturating_sub(before) as f64 / secs) as u64
}

/// Sample until `cancel`: the first sample a second after start, then every [`WINDOW`].
pub async fn sample(root: PathBuf, node: String, cancel: CancellationToken) {
    let mut prev: Option<(Instant, u64, CpuTimes)> = None;
    let mut wait = Duration::from_secs(1);
    loop {
        let (t, node_cpu, mem, raw, pods) = {
            let t = Instant::now();
            let Some((node_cpu, mem)) = node_raw() else {
                tracing::warn!("cannot read /proc/stat or /proc/meminfo; no usage figures");
                return;
            };
            let mut raw = HashMap::new();
            let mut pods = Vec::new();
            for (uid, st) in crate::pods::known_pods(&root) {
                let mut containers = Vec::new();
                for name in st.containers.keys() {
                    if let Some((cpu, ws)) = container_raw(&uid, name) {
                        raw.insert((uid.clone(), name.clone()), cpu);
                        containers.push((name.clone(), ws));
                    }
                }
                if !containers.is_empty() {
                    pods.push((uid, st, containers));
                }
            }
            (t, node_cpu, mem, raw, pods)
        };
        if let Some((pt, pcpu, praw)) = &prev {
            let secs = t.duration_since(*pt).as_secs_f64();
            let usage = NodeUsage {
                node: node.clone(),
                timestamp: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                window_seconds: secs.round() as u64,
                usage: Usage {
                    cpu_nanocores: rate(node_cpu, *pcpu, secs),
                    memory_bytes: mem,
                },
                pods: pods
                    .into_iter()
                    .map(|(uid, st, cs)| PodUsage {
                        tenant: st.tenant,
                        namespace: st.namespace,
                        name: st.name,
                        containers: cs
                            .into_iter()
                            .map(|(name, ws)| {
                                let key = (uid.clone(), name.clone());
                                let now = raw.get(&key).copied().unwrap_or(0);
                                // A container new in this window: its time so far.
                                let before = praw.get(&key).copied().unwrap_or(0);
                                ContainerUsage {
                                    usage: Usage {
                                        cpu_nanocores: rate(now, before, secs),
                                        memory_bytes: ws,
                                    },
                                    name,
                                }
                            })
                            .collect(),
                    })
                    .collect(),
            };
            *LATEST.lock().unwrap_or_else(|p| p.into_inner()) = Some(usage);
        }
        prev = Some((t, node_cpu, raw));
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
        wait = WINDOW;
    }
}
