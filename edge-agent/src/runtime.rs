//! Node side effects behind one trait: start a container from an OCI spec, read its state,
//! signal it, remove it, list what exists (for re-adoption after an agent restart).
//!
//! [`Runc`] is the real implementation: each container is run in the foreground by
//! `runc run`, under a small per-container shim (`edge-agent shim`, see [`crate::shim`]) that
//! outlives the agent. The shim owns the container's stdio (CRI-format log file) and records the
//! start and the exit code in the container's directory, so a restarted agent finds running
//! containers running and exited ones with their exit codes. [`Fake`] is for unit tests.

use std::collections::BTreeMap;
use std::future::Future;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// How long a container may take from `start` to its process existing.
pub const START_DEADLINE: Duration = Duration::from_secs(30);

/// What to run.
#[derive(Clone, Debug)]
pub struct ContainerConfig {
    /// Runtime id (unique on the node).
    pub id: String,
    /// Read-only image root filesystem (lower layer of the container's rootfs).
    pub image_rootfs: PathBuf,
    /// The OCI runtime spec (`config.json`) without `root`; the runtime sets the root.
    pub spec: Value,
    /// Where the container's output goes (CRI log format).
    pub log: PathBuf,
    /// Keep a stdin pipe open for it (`stdin: true`): `kubectl attach -i` writes into it.
    pub stdin: bool,
}

/// A container's state as the runtime knows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum State {
    /// Its process runs.
    Running {
        /// Start time.
        started_at: DateTime<Utc>,
    },
    /// It ran and exited (or could not start).
    Exited {
        /// Exit code (128+N for signal N).
        exit_code: i32,
        /// Start time, if it started.
        started_at: Option<DateTime<Utc>>,
        /// Exit time.
        finished_at: DateTime<Utc>,
        /// Why it could not start, if it did not.
        start_error: Option<String>,
    },
    /// Nothing by that id.
    Missing,
}

/// Runtime failures.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// A file or process operation failed.
    #[error("{0}")]
    Io(String),
    /// The container did not come up.
    #[error("{0}")]
    Start(String),
}

/// Node side effects for containers.
pub trait Runtime: Send + Sync + 'static {
    /// Create and start the container; returns once it runs (or has already exited).
    fn start(&self, c: ContainerConfig)
        -> impl Future<Output = Result<State, RuntimeError>> + Send;
    /// Current state.
    fn state(&self, id: &str) -> State;
    /// Send a signal (`"TERM"`, `"KILL"`) to the container's init process.
    fn signal(&self, id: &str, signal: &str) -> impl Future<Output = ()> + Send;
    /// Remove the container and everything the runtime keeps for it (it must have exited or
    /// will be killed).
    fn remove(&self, id: &str) -> impl Future<Output = Result<(), RuntimeError>> + Send;
    /// Ids of every container the runtime holds (running or exited).
    fn list(&self) -> Vec<String>;
    /// Change a running container's Linux resources (an OCI `LinuxResources` object: memory
    /// limit, CPU shares and quota) in place, without restarting it.
    fn update(
        &self,
        id: &str,
        resources: &Value,
    ) -> impl Future<Output = Result<(), RuntimeError>> + Send {
        let _ = (id, resources);
        async {
            Err(RuntimeError::Start(
                "this runtime cannot change a container's resources".into(),
            ))
        }
    }
    /// Run `command` in a running container (an exec probe), killed after `timeout`: its exit
    /// code and (the start of) its output.
    fn exec_probe(
        &self,
        id: &str,
        command: &[String],
        timeout: std::time::Duration,
    ) -> impl Future<Output = Result<(i32, String), RuntimeError>> + Send {
        let _ = (id, command, timeout);
        async {
            Err(RuntimeError::Start(
                "this runtime cannot run commands in containers".into(),
            ))
        }
    }
    /// Start a process as it is, under the shim (a VM's qemu): its output is the log, its
    /// exit the container's; `signal("TERM")` asks it to stop through its QMP socket.
    fn start_exec(
        &self,
        id: &str,
        exec: Exec,
        log: PathBuf,
    ) -> impl Future<Output = Result<State, RuntimeError>> + Send {
        let _ = (id, exec, log);
        async {
            Err(RuntimeError::Start(
                "this runtime runs no processes as they are".into(),
            ))
        }
    }
}

pub use crate::shim::Exec;

/// What the shim records in `started.json`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Started {
    /// Container init pid (host namespace).
    pub pid: u32,
    /// Start time.
    pub started_at: DateTime<Utc>,
}

/// What the shim records in `exit.json` (and next to the log as `N.exit`).
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Exited {
    /// Exit code.
    pub exit_code: i32,
    /// Start time, if it started.
    pub started_at: Option<DateTime<Utc>>,
    /// Exit time.
    pub finished_at: DateTime<Utc>,
    /// Why it did not start, if it did not.
    #[serde(default)]
    pub start_error: Option<String>,
}

/// runc, driven through per-container shims.
#[derive(Clone)]
pub struct Runc {
    /// `ROOT/containers`: one directory per container.
    dir: PathBuf,
    /// runc's own state directory (`runc --root`).
    runc_root: PathBuf,
    /// This executable (the shim is `SELF shim ...`).
    exe: PathBuf,
}

fn io(what: &str, p: &Path, e: std::io::Error) -> RuntimeError {
    RuntimeError::Io(format!("{what} {}: {e}", p.display()))
}

fn pid_alive(pid: u32) -> bool {
    // A zombie is not alive: its state letter is Z.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, r)| !r.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}

/// Run a command with a deadline; its stderr in the error.
pub async fn run_cmd(
    cmd: &mut tokio::process::Command,
    deadline: Duration,
) -> Result<String, String> {
    cmd.stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    let out = match tokio::time::timeout(deadline, cmd.output()).await {
        Err(_) => return Err(format!("{cmd:?}: timed out after {deadline:?}")),
        Ok(Err(e)) => return Err(format!("{cmd:?}: {e}")),
        Ok(Ok(o)) => o,
    };
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Whether `p` is a mount point (listed in /proc/self/mountinfo).
pub fn is_mounted(p: &Path) -> bool {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let want = p.to_string_lossy();
    info.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .any(|m| m == want)
}

/// Mount points at or under `dir`, deepest first.
pub fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    let mut v: Vec<PathBuf> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(PathBuf::from)
        .filter(|m| m.starts_with(dir))
        .collect();
    v.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    v.dedup();
    v
}

/// Unmount (lazily) every mount at or under `dir`.
pub async fn unmount_all(dir: &Path) {
    for m in mounts_under(dir) {
        let mut c = tokio::process::Command::new("umount");
        c.arg("-l").arg(&m);
        if let Err(e) = run_cmd(&mut c, Duration::from_secs(10)).await {
            tracing::warn!(mount = %m.display(), error = %e, "unmount failed");
        }
    }
}

impl Runc {
    /// A runtime keeping its state under `root` (`root/containers`, `root/runc`).
    pub fn new(root: &Path, exe: PathBuf) -> Result<Self, RuntimeError> {
        let dir = root.join("containers");
        let runc_root = root.join("runc");
        for d in [&dir, &runc_root] {
            std::fs::create_dir_all(d).map_err(|e| io("create", d, e))?;
        }
        Ok(Runc {
            dir,
            runc_root,
            exe,
        })
    }

    fn cdir(&self, id: &str) -> PathBuf {
        self.dir.join(id)
    }

    fn runc(&self) -> tokio::process::Command {
        let mut c = tokio::process::Command::new("runc");
        c.arg("--root").arg(&self.runc_root);
        c
    }

    fn read<T: for<'de> Deserialize<'de>>(&self, id: &str, file: &str) -> Option<T> {
        serde_json::from_slice(&std::fs::read(self.cdir(id).join(file)).ok()?).ok()
    }

    async fn mount_rootfs(&self, dir: &Path, lower: &Path) -> Result<PathBuf, RuntimeError> {
        let rootfs = dir.join("rootfs");
        let upper = dir.join("upper");
        let work = dir.join("work");
        for d in [&rootfs, &upper, &work] {
            std::fs::create_dir_all(d).map_err(|e| io("create", d, e))?;
        }
        if !is_mounted(&rootfs) {
            let mut c = tokio::process::Command::new("mount");
            c.args(["-t", "overlay", "overlay", "-o"])
                .arg(format!(
                    "lowerdir={},upperdir={},workdir={}",
                    lower.display(),
                    upper.display(),
                    work.display()
                ))
                .arg(&rootfs);
            run_cmd(&mut c, Duration::from_secs(10))
                .await
                .map_err(|e| {
                    RuntimeError::Start(format!("mounting the container's rootfs: {e}"))
                })?;
        }
        Ok(rootfs)
    }

    /// Start `edge-agent shim` for container `id` (in `dir`, logging to `log`; `exec`: the
    /// process in `exec.json` rather than runc) and wait until it runs or has ended.
    async fn spawn_shim(
        &self,
        id: &str,
        dir: &Path,
        log: &Path,
        exec: bool,
    ) -> Result<State, RuntimeError> {
        if let Some(p) = log.parent() {
            std::fs::create_dir_all(p).map_err(|e| io("create", p, e))?;
        }
        let shim_log = dir.join("shim.log");
        let shim_out = std::fs::File::create(&shim_log).map_err(|e| io("create", &shim_log, e))?;
        let shim_err = shim_out.try_clone().map_err(|e| io("open", &shim_log, e))?;
        // The shim runs in its own process group so that a signal to the agent's group (^C,
        // a service manager stopping the agent) does not reach the containers.
        let mut cmd = std::process::Command::new(&self.exe);
        cmd.arg("shim")
            .arg("--id")
            .arg(id)
            .arg("--dir")
            .arg(dir)
            .arg("--runc-root")
            .arg(&self.runc_root)
            .arg("--log")
            .arg(log);
        if exec {
            cmd.arg("--exec");
        }
        let child = cmd
            // One malloc arena: the shim's threads move a few KiB at a time.
            .env("MALLOC_ARENA_MAX", "1")
            .stdin(std::process::Stdio::null())
            .stdout(shim_out)
            .stderr(shim_err)
            .process_group(0)
            .spawn()
            .map_err(|e| io("spawn shim", &self.exe, e))?;
        std::fs::write(dir.join("shim.pid"), child.id().to_string())
            .map_err(|e| io("write", &dir.join("shim.pid"), e))?;
        // Reap the shim if it exits while we live (it records what matters in files).
        std::thread::spawn(move || {
            let mut child = child;
            let _ = child.wait();
        });
        let deadline = tokio::time::Instant::now() + START_DEADLINE;
        loop {
            match self.state(id) {
                State::Missing => {}
                s => return Ok(s),
            }
            if tokio::time::Instant::now() >= deadline {
                self.signal(id, "KILL").await;
                return Err(RuntimeError::Start(format!(
                    "container {id} did not start within {START_DEADLINE:?}"
                )));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// What container `id` runs as it is, if it is such a process.
    fn exec_of(&self, id: &str) -> Option<Exec> {
        self.read::<Exec>(id, "exec.json")
    }

    /// Signal the process of container `id` (by the pid its shim recorded).
    async fn kill_pid(&self, id: &str, signal: &str) {
        let Some(s) = self.read::<Started>(id, "started.json") else {
            return;
        };
        if !pid_alive(s.pid) {
            return;
        }
        let mut c = tokio::process::Command::new("kill");
        c.args(["-s", signal]).arg(s.pid.to_string());
        if let Err(e) = run_cmd(&mut c, Duration::from_secs(10)).await {
            tracing::debug!(container = %id, %signal, error = %e, "kill");
        }
    }
}

impl Runtime for Runc {
    async fn start(&self, c: ContainerConfig) -> Result<State, RuntimeError> {
        let dir = self.cdir(&c.id);
        if dir.exists() {
            self.remove(&c.id).await?;
        }
        std::fs::create_dir_all(&dir).map_err(|e| io("create", &dir, e))?;
        let rootfs = self.mount_rootfs(&dir, &c.image_rootfs).await?;
        let mut spec = c.spec;
        spec["root"] = serde_json::json!({"path": rootfs, "readonly": false});
        let cfg = dir.join("config.json");
        std::fs::write(&cfg, serde_json::to_vec_pretty(&spec).unwrap_or_default())
            .map_err(|e| io("write", &cfg, e))?;
        if c.stdin {
            // The shim holds it open for reading and writing (so the container never sees end
            // of file between attaches); attach opens it for writing.
            let fifo = dir.join("stdin");
            rustix::fs::mknodat(
                rustix::fs::CWD,
                &fifo,
                rustix::fs::FileType::Fifo,
                rustix::fs::Mode::RUSR | rustix::fs::Mode::WUSR,
                0,
            )
            .map_err(|e| io("create", &fifo, e.into()))?;
        }
        self.spawn_shim(&c.id, &dir, &c.log, false).await
    }

    fn state(&self, id: &str) -> State {
        if let Some(x) = self.read::<Exited>(id, "exit.json") {
            return State::Exited {
                exit_code: x.exit_code,
                started_at: x.started_at,
                finished_at: x.finished_at,
                start_error: x.start_error,
            };
        }
        let Some(s) = self.read::<Started>(id, "started.json") else {
            return State::Missing;
        };
        if pid_alive(s.pid) {
            return State::Running {
                started_at: s.started_at,
            };
        }
        // The process is gone but no exit was recorded: the shim died with it (node reboot,
        // someone killed it). The exit code is lost.
        let shim_alive = std::fs::read_to_string(self.cdir(id).join("shim.pid"))
            .ok()
            .and_then(|p| p.trim().parse::<u32>().ok())
            .is_some_and(pid_alive);
        if shim_alive {
            // The shim is about to record the exit.
            return State::Running {
                started_at: s.started_at,
            };
        }
        State::Exited {
            exit_code: 137,
            started_at: Some(s.started_at),
            finished_at: Utc::now(),
            start_error: None,
        }
    }

    async fn signal(&self, id: &str, signal: &str) {
        if let Some(x) = self.exec_of(id) {
            // A VM asked to stop gets an ACPI power-down, as a host's power button.
            if let (Some(sock), "TERM") = (&x.qmp, signal) {
                match crate::vm::qemu::qmp(
                    sock,
                    "system_powerdown",
                    serde_json::json!({}),
                    Duration::from_secs(5),
                )
                .await
                {
                    Ok(_) => return,
                    Err(e) => tracing::debug!(container = %id, error = %e, "power-down"),
                }
            }
            return self.kill_pid(id, signal).await;
        }
        let mut c = self.runc();
        c.args(["kill", id, signal]);
        if let Err(e) = run_cmd(&mut c, Duration::from_secs(10)).await {
            tracing::debug!(container = %id, %signal, error = %e, "runc kill");
        }
    }

    async fn remove(&self, id: &str) -> Result<(), RuntimeError> {
        if self.exec_of(id).is_some() {
            self.kill_pid(id, "KILL").await;
        } else {
            let mut c = self.runc();
            c.args(["delete", "--force", id]);
            if let Err(e) = run_cmd(&mut c, Duration::from_secs(30)).await {
                if !e.contains("does not exist") && !e.contains("not found") {
                    tracing::debug!(container = %id, error = %e, "runc delete");
                }
            }
        }
        let dir = self.cdir(id);
        // The shim records the exit into this directory: let it finish first.
        if let Some(shim) = std::fs::read_to_string(dir.join("shim.pid"))
            .ok()
            .and_then(|p| p.trim().parse::<u32>().ok())
        {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            while pid_alive(shim) && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        unmount_all(&dir).await;
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io("remove", &dir, e)),
        }
    }

    async fn update(&self, id: &str, resources: &Value) -> Result<(), RuntimeError> {
        let f = self.cdir(id).join("resources.json");
        crate::shim::write_json_atomic(&f, resources).map_err(|e| io("write", &f, e))?;
        let mut c = self.runc();
        c.args(["update", "--resources"]).arg(&f).arg(id);
        run_cmd(&mut c, Duration::from_secs(30))
            .await
            .map(|_| ())
            .map_err(RuntimeError::Start)
    }

    async fn exec_probe(
        &self,
        id: &str,
        command: &[String],
        timeout: Duration,
    ) -> Result<(i32, String), RuntimeError> {
        let mut c = self.runc();
        c.arg("exec")
            .arg(id)
            .args(command)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true);
        let child = c
            .spawn()
            .map_err(|e| RuntimeError::Start(format!("runc exec: {e}")))?;
        match tokio::time::timeout(timeout, child.wait_with_output()).await {
            Ok(Ok(o)) => {
                let mut out = o.stdout;
                out.extend_from_slice(&o.stderr);
                out.truncate(4096);
                Ok((
                    o.status.code().unwrap_or(-1),
                    String::from_utf8_lossy(&out).into_owned(),
                ))
            }
            Ok(Err(e)) => Err(RuntimeError::Start(format!("runc exec: {e}"))),
            Err(_) => Err(RuntimeError::Start(format!(
                "command timed out after {}s",
                timeout.as_secs()
            ))),
        }
    }

    async fn start_exec(&self, id: &str, exec: Exec, log: PathBuf) -> Result<State, RuntimeError> {
        let dir = self.cdir(id);
        if dir.exists() {
            self.remove(id).await?;
        }
        std::fs::create_dir_all(&dir).map_err(|e| io("create", &dir, e))?;
        let f = dir.join("exec.json");
        crate::shim::write_json_atomic(&f, &exec).map_err(|e| io("write", &f, e))?;
        self.spawn_shim(id, &dir, &log, true).await
    }

    fn list(&self) -> Vec<String> {
        std::fs::read_dir(&self.dir)
            .map(|rd| {
                rd.filter_map(|e| e.ok())
                    .filter_map(|e| e.file_name().into_string().ok())
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// An in-memory runtime for unit tests: containers "run" until told to exit.
#[derive(Clone, Default)]
pub struct Fake {
    inner: Arc<Mutex<FakeState>>,
}

#[derive(Default)]
struct FakeState {
    containers: BTreeMap<String, (ContainerConfig, State)>,
    starts: Vec<String>,
    signals: Vec<(String, String)>,
}

impl Fake {
    /// Make a running container exit with `code`.
    pub fn exit(&self, id: &str, code: i32) {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, s)) = g.containers.get_mut(id) {
            let started_at = match s {
                State::Running { started_at } => Some(*started_at),
                _ => None,
            };
            *s = State::Exited {
                exit_code: code,
                started_at,
                finished_at: Utc::now(),
                start_error: None,
            };
        }
    }
    /// Ids started so far, in order (restarts repeat an id).
    pub fn starts(&self) -> Vec<String> {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .starts
            .clone()
    }
    /// Signals sent so far.
    pub fn signals(&self) -> Vec<(String, String)> {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .signals
            .clone()
    }
    /// The spec a container was started with.
    pub fn spec(&self, id: &str) -> Option<Value> {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .containers
            .get(id)
            .map(|(c, _)| c.spec.clone())
    }
}

impl Runtime for Fake {
    async fn start(&self, c: ContainerConfig) -> Result<State, RuntimeError> {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let s = State::Running {
            started_at: Utc::now(),
        };
        g.starts.push(c.id.clone());
        g.containers.insert(c.id.clone(), (c, s.clone()));
        Ok(s)
    }
    fn state(&self, id: &str) -> State {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .containers
            .get(id)
            .map_or(State::Missing, |(_, s)| s.clone())
    }
    async fn signal(&self, id: &str, signal: &str) {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .signals
            .push((id.to_string(), signal.to_string()));
        // The fake's processes die on any signal.
        self.exit(id, 128 + if signal == "KILL" { 9 } else { 15 });
    }
    async fn remove(&self, id: &str) -> Result<(), RuntimeError> {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .containers
            .remove(id);
        Ok(())
    }
    async fn update(&self, id: &str, resources: &Value) -> Result<(), RuntimeError> {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        match g.containers.get_mut(id) {
            Some((c, State::Running { .. })) => {
                c.spec["linux"]["resources"] = resources.clone();
                Ok(())
            }
            _ => Err(RuntimeError::Start(format!(
                "container {id} is not running"
            ))),
        }
    }
    fn list(&self) -> Vec<String> {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .containers
            .keys()
            .cloned()
            .collect()
    }
}
