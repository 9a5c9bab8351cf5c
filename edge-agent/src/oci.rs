//! From a pod's container to an OCI runtime spec (`config.json`): command and args with
//! `$(VAR)` expansion, environment, working directory, user, capabilities, mounts, namespaces
//! and resource limits mapped to cgroups. Pure functions, unit-tested.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{Container, PodSpec};
use serde_json::{json, Value};

use crate::image::ImageConfig;

/// The capabilities a container gets by default (the container runtimes' usual set).
pub const DEFAULT_CAPS: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// Every capability (privileged containers).
const ALL_CAPS: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
];

/// CPU period for quotas (the kernel's default, as kubelet uses).
pub const CPU_PERIOD: u64 = 100_000;

/// A Kubernetes quantity as a number of base units (`"500m"` → 0.5, `"64Mi"` → 67108864).
pub use proto::quantity;

/// Expand `$(VAR)` references from `env` (Kubernetes semantics: unknown references stay as
/// they are, `$$` escapes a `$`).
pub fn expand(s: &str, env: &BTreeMap<String, String>) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        if let Some(t) = tail.strip_prefix("$$") {
            out.push('$');
            rest = t;
        } else if let Some(body) = tail.strip_prefix("$(") {
            match body.find(')') {
                Some(j) => {
                    let name = &body[..j];
                    match env.get(name) {
                        Some(v) => out.push_str(v),
                        None => out.push_str(&tail[..j + 3]),
                    }
                    rest = &body[j + 1..];
                }
                None => {
                    out.push_str(tail);
                    rest = "";
                }
            }
        } else {
            out.push('$');
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    out
}

/// The process's argv: `command` replaces the image's entrypoint (and drops its cmd), `args`
/// replaces the image's cmd.
pub fn argv(c: &Container, img: &ImageConfig, env: &BTreeMap<String, String>) -> Vec<String> {
    let (entry, args) = match (&c.command, &c.args) {
        (Some(cmd), args) => (cmd.clone(), args.clone().unwrap_or_default()),
        (None, Some(args)) => (img.entrypoint.clone(), args.clone()),
        (None, None) => (img.entrypoint.clone(), img.cmd.clone()),
    };
    entry
        .iter()
        .chain(args.iter())
        .map(|a| expand(a, env))
        .collect()
}

/// Resolve a user spec (`uid`, `uid:gid`, `name`, `name:group`) against the rootfs's
/// /etc/passwd and /etc/group.
pub fn resolve_user(user: &str, rootfs: &Path) -> Result<(u32, u32), String> {
    if user.is_empty() {
        return Ok((0, 0));
    }
    let (u, g) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let passwd = std::fs::read_to_string(rootfs.join("etc/passwd")).unwrap_or_default();
    let (uid, primary) = match u.parse::<u32>() {
        Ok(n) => (
            n,
            passwd
                .lines()
                .map(|l| l.split(':').collect::<Vec<_>>())
                .find(|f| f.len() > 3 && f[2] == u)
                .and_then(|f| f[3].parse().ok())
                .unwrap_or(0),
        ),
        Err(_) => passwd
            .lines()
            .map(|l| l.split(':').collect::<Vec<_>>())
            .find(|f| f.len() > 3 && f[0] == u)
            .and_then(|f| Some((f[2].parse().ok()?, f[3].parse().ok()?)))
            .ok_or_else(|| {
                format!("unable to find user {u}: no matching entries in passwd file")
            })?,
    };
    let gid = match g {
        None => primary,
        Some(g) => match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => std::fs::read_to_string(rootfs.join("etc/group"))
                .unwrap_or_default()
                .lines()
                .map(|l| l.split(':').collect::<Vec<_>>())
                .find(|f| f.len() > 2 && f[0] == g)
                .and_then(|f| f[2].parse().ok())
                .ok_or_else(|| {
                    format!("unable to find group {g}: no matching entries in group file")
                })?,
        },
    };
    Ok((uid, gid))
}

/// A bind or tmpfs mount into the container.
#[derive(Clone, Debug, PartialEq)]
pub struct Mount {
    /// Path in the container.
    pub destination: String,
    /// Host path (bind) or `None` for a tmpfs.
    pub source: Option<PathBuf>,
    /// Read-only.
    pub read_only: bool,
}

/// Everything about the pod the spec needs besides the container.
pub struct PodParts<'a> {
    /// The pod spec.
    pub spec: &'a PodSpec,
    /// The pod's network namespace (`None`: the host's).
    pub netns: Option<&'a Path>,
    /// Host name.
    pub hostname: &'a str,
    /// cgroup path for this container.
    pub cgroups_path: String,
}

fn caps(c: &Container, privileged: bool) -> Vec<String> {
    if privileged {
        return ALL_CAPS.iter().map(|s| s.to_string()).collect();
    }
    let norm = |s: &String| {
        let u = s.to_ascii_uppercase();
        if u.starts_with("CAP_") {
            u
        } else {
            format!("CAP_{u}")
        }
    };
    let sc = c
        .security_context
        .as_ref()
        .and_then(|s| s.capabilities.as_ref());
    let add: Vec<String> = sc
        .and_then(|c| c.add.as_ref())
        .map(|v| v.iter().map(norm).collect())
        .unwrap_or_default();
    let drop: Vec<String> = sc
        .and_then(|c| c.drop.as_ref())
        .map(|v| v.iter().map(norm).collect())
        .unwrap_or_default();
    let base: Vec<&str> = if add.iter().any(|a| a == "CAP_ALL") {
        ALL_CAPS.to_vec()
    } else {
        DEFAULT_CAPS.to_vec()
    };
    let mut out: Vec<String> = base.iter().map(|s| s.to_string()).collect();
    for a in add {
        if a != "CAP_ALL" && !out.contains(&a) {
            out.push(a);
        }
    }
    if drop.iter().any(|d| d == "CAP_ALL") {
        out.clear();
    }
    out.retain(|c| !drop.contains(c));
    out
}

/// Linux resources for a container: memory limit, CPU quota (limit) and shares (request).
pub fn resources(c: &Container) -> Value {
    let get = |which: &str, k: &str| -> Option<f64> {
        let r = c.resources.as_ref()?;
        let m = if which == "limits" {
            r.limits.as_ref()?
        } else {
            r.requests.as_ref()?
        };
        quantity(&m.get(k)?.0)
    };
    let mut res = json!({"devices": [{"allow": false, "access": "rwm"}]});
    if let Some(mem) = get("limits", "memory") {
        res["memory"] = json!({"limit": mem.ceil() as i64});
    }
    let mut cpu = serde_json::Map::new();
    let req = get("requests", "cpu").or_else(|| get("limits", "cpu"));
    if let Some(r) = req {
        // kubelet: shares = milliCPU * 1024 / 1000, at least 2.
        cpu.insert("shares".into(), json!(((r * 1024.0).ceil() as u64).max(2)));
    }
    if let Some(l) = get("limits", "cpu") {
        // kubelet: quota = milliCPU * period / 1000, at least 1 ms.
        let quota = ((l * CPU_PERIOD as f64).ceil() as i64).max(1000);
        cpu.insert("quota".into(), json!(quota));
        cpu.insert("period".into(), json!(CPU_PERIOD));
    }
    if !cpu.is_empty() {
        res["cpu"] = Value::Object(cpu);
    }
    res
}

/// The OCI runtime spec for container `c` of a pod.
pub fn spec(
    c: &Container,
    pod: &PodParts<'_>,
    args: Vec<String>,
    env: Vec<String>,
    cwd: &str,
    user: (u32, u32),
    mounts: &[Mount],
) -> Value {
    let psc = pod.spec.security_context.as_ref();
    let csc = c.security_context.as_ref();
    let privileged = csc.and_then(|s| s.privileged).unwrap_or(false);
    let uid = csc
        .and_then(|s| s.run_as_user)
        .or_else(|| psc.and_then(|s| s.run_as_user))
        .map_or(user.0, |u| u as u32);
    let gid = csc
        .and_then(|s| s.run_as_group)
        .or_else(|| psc.and_then(|s| s.run_as_group))
        .map_or(user.1, |g| g as u32);
    let extra_gids: Vec<i64> = psc
        .and_then(|s| s.supplemental_groups.clone())
        .unwrap_or_default();
    let no_new_privs = csc
        .and_then(|s| s.allow_privilege_escalation)
        .map(|a| !a)
        .unwrap_or(false);
    let caps = caps(c, privileged);
    let mut m = vec![
        json!({"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}),
        json!({"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]}),
        json!({"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]}),
        json!({"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", if privileged { "rw" } else { "ro" }]}),
        json!({"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup", "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]}),
    ];
    for mt in mounts {
        let mut opts = vec!["rbind", "rprivate"];
        if mt.read_only {
            opts.push("ro");
        }
        m.push(match &mt.source {
            Some(src) => json!({"destination": mt.destination, "type": "bind", "source": src, "options": opts}),
            None => json!({"destination": mt.destination, "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "nodev", "mode=1777"]}),
        });
    }
    let mut namespaces = vec![json!({"type": "mount"}), json!({"type": "uts"})];
    if !pod.spec.host_pid.unwrap_or(false) {
        namespaces.push(json!({"type": "pid"}));
    }
    if !pod.spec.host_ipc.unwrap_or(false) {
        namespaces.push(json!({"type": "ipc"}));
    }
    if let Some(ns) = pod.netns {
        namespaces.push(json!({"type": "network", "path": ns}));
    }
    let masked: Vec<&str> = if privileged {
        vec![]
    } else {
        vec![
            "/proc/acpi",
            "/proc/asound",
            "/proc/kcore",
            "/proc/keys",
            "/proc/latency_stats",
            "/proc/timer_list",
            "/proc/timer_stats",
            "/proc/sched_debug",
            "/sys/firmware",
            "/proc/scsi",
        ]
    };
    let readonly: Vec<&str> = if privileged {
        vec![]
    } else {
        vec![
            "/proc/bus",
            "/proc/fs",
            "/proc/irq",
            "/proc/sys",
            "/proc/sysrq-trigger",
        ]
    };
    json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false,
            "user": {"uid": uid, "gid": gid, "additionalGids": extra_gids},
            "args": args,
            "env": env,
            "cwd": if cwd.is_empty() { "/" } else { cwd },
            "capabilities": {"bounding": caps, "effective": caps, "permitted": caps},
            "noNewPrivileges": no_new_privs,
        },
        "hostname": pod.hostname,
        "mounts": m,
        "linux": {
            "namespaces": namespaces,
            "cgroupsPath": pod.cgroups_path,
            "resources": resources(c),
            "maskedPaths": masked,
            "readonlyPaths": readonly,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container(v: Value) -> Container {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn quantities() {
        assert_eq!(quantity("500m"), Some(0.5));
        assert_eq!(quantity("2"), Some(2.0));
        assert_eq!(quantity("64Mi"), Some(67_108_864.0));
        assert_eq!(quantity("1G"), Some(1e9));
        assert_eq!(quantity("1e3"), Some(1000.0));
        assert_eq!(quantity("12x"), None);
        assert_eq!(quantity(""), None);
        assert_eq!(quantity("-1"), None);
    }

    #[test]
    fn expansion_follows_kubernetes() {
        let env: BTreeMap<String, String> = [("A".to_string(), "1".to_string())].into();
        assert_eq!(expand("x$(A)y", &env), "x1y");
        assert_eq!(expand("$(B)", &env), "$(B)");
        assert_eq!(expand("$$(A)", &env), "$(A)");
        assert_eq!(expand("$(A", &env), "$(A");
        assert_eq!(expand("cost $5", &env), "cost $5");
    }

    #[test]
    fn command_and_args_override_the_image() {
        let img = ImageConfig {
            entrypoint: vec!["/ep".into()],
            cmd: vec!["c1".into()],
            ..Default::default()
        };
        let env = BTreeMap::new();
        let c = container(json!({"name": "a"}));
        assert_eq!(argv(&c, &img, &env), ["/ep", "c1"]);
        let c = container(json!({"name": "a", "args": ["x"]}));
        assert_eq!(argv(&c, &img, &env), ["/ep", "x"]);
        let c = container(json!({"name": "a", "command": ["sh"]}));
        assert_eq!(argv(&c, &img, &env), ["sh"]);
        let c = container(json!({"name": "a", "command": ["sh"], "args": ["-c", "id"]}));
        assert_eq!(argv(&c, &img, &env), ["sh", "-c", "id"]);
    }

    #[test]
    fn limits_map_to_cgroups() {
        let c = container(
            json!({"name": "a", "resources": {"limits": {"cpu": "500m", "memory": "64Mi"}, "requests": {"cpu": "250m"}}}),
        );
        let r = resources(&c);
        assert_eq!(r["memory"]["limit"], 67_108_864);
        assert_eq!(r["cpu"]["quota"], 50_000);
        assert_eq!(r["cpu"]["period"], 100_000);
        assert_eq!(r["cpu"]["shares"], 256);
        let none = resources(&container(json!({"name": "a"})));
        assert!(none.get("memory").is_none() && none.get("cpu").is_none());
    }

    #[test]
    fn capabilities_add_and_drop() {
        let c = container(
            json!({"name": "a", "securityContext": {"capabilities": {"add": ["NET_ADMIN"], "drop": ["KILL"]}}}),
        );
        let caps = caps(&c, false);
        assert!(caps.contains(&"CAP_NET_ADMIN".to_string()));
        assert!(!caps.contains(&"CAP_KILL".to_string()));
        let c =
            container(json!({"name": "a", "securityContext": {"capabilities": {"drop": ["ALL"]}}}));
        assert!(super::caps(&c, false).is_empty());
    }

    #[test]
    fn users_resolve_from_the_rootfs() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("etc")).unwrap();
        std::fs::write(
            d.path().join("etc/passwd"),
            "root:x:0:0::/root:/bin/sh\nweb:x:33:44::/:/bin/sh\n",
        )
        .unwrap();
        std::fs::write(d.path().join("etc/group"), "root:x:0:\nstaff:x:50:\n").unwrap();
        assert_eq!(resolve_user("", d.path()), Ok((0, 0)));
        assert_eq!(resolve_user("web", d.path()), Ok((33, 44)));
        assert_eq!(resolve_user("33", d.path()), Ok((33, 44)));
        assert_eq!(resolve_user("1000:7", d.path()), Ok((1000, 7)));
        assert_eq!(resolve_user("web:staff", d.path()), Ok((33, 50)));
        assert!(resolve_user("nobody", d.path()).is_err());
    }

    #[test]
    fn spec_joins_the_pod_network_namespace() {
        let c = container(json!({"name": "a"}));
        let ps: PodSpec = serde_json::from_value(json!({"containers": [{"name": "a"}]})).unwrap();
        let ns = PathBuf::from("/var/run/netns/x");
        let parts = PodParts {
            spec: &ps,
            netns: Some(&ns),
            hostname: "p",
            cgroups_path: "/atoll/u/a".into(),
        };
        let s = spec(&c, &parts, vec!["sh".into()], vec![], "", (0, 0), &[]);
        let nss = s["linux"]["namespaces"].as_array().unwrap();
        assert!(nss
            .iter()
            .any(|n| n["type"] == "network" && n["path"] == "/var/run/netns/x"));
        assert_eq!(s["process"]["cwd"], "/");
        assert_eq!(s["hostname"], "p");
    }
}
