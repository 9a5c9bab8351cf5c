//! `edge-agent shim`: one small process per container, between the agent and `runc run` (or,
//! for a VM pod, the VM's qemu: `--exec`).
//!
//! It runs `runc run` in the foreground (runc stays the container's parent and returns its exit
//! status), writes the container's stdout and stderr to the log file in the CRI format
//! (`TIMESTAMP STREAM P|F CONTENT`), records `started.json` once runc wrote the init pid and
//! `exit.json` (and `N.exit` next to the log) when it ends. It lives in its own process group
//! and does not depend on the agent, so containers keep running, logging and being reaped
//! while the agent restarts.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;

use crate::runtime::{Exited, Started};

/// Longest line kept whole; longer ones are split into partial (`P`) records.
pub const MAX_LINE: usize = 16 * 1024;

/// The shim's arguments.
#[derive(clap::Args, Debug)]
pub struct ShimArgs {
    /// Container id.
    #[arg(long)]
    pub id: String,
    /// The container's directory (bundle: config.json, rootfs).
    #[arg(long)]
    pub dir: PathBuf,
    /// runc's state directory.
    #[arg(long)]
    pub runc_root: PathBuf,
    /// The CRI log file.
    #[arg(long)]
    pub log: PathBuf,
    /// Run the process `exec.json` in `--dir` describes (a VM's qemu) instead of `runc run`.
    #[arg(long)]
    pub exec: bool,
}

/// What the shim runs in `--exec` mode (`exec.json`).
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Exec {
    /// The program and its arguments.
    pub argv: Vec<String>,
    /// A network namespace (by `ip netns` name) to run it in.
    pub netns: Option<String>,
    /// Cgroup directories to put it in (one per controller), created by the agent.
    pub cgroups: Vec<PathBuf>,
    /// Its QMP socket, for a graceful stop (ACPI power-down).
    pub qmp: Option<PathBuf>,
    /// A DHCP lease to serve in its network namespace while it runs (a VM's address).
    #[serde(default)]
    pub dhcp: Option<crate::vm::dhcp::Lease>,
}

/// The command for an [`Exec`]: in its network namespace through `ip netns exec` (which execs
/// the program, so the pid is the program's).
fn exec_command(x: &Exec) -> Option<Command> {
    let (prog, args) = x.argv.split_first()?;
    let mut c = match &x.netns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns]).arg(prog);
            c
        }
        None => Command::new(prog),
    };
    c.args(args);
    Some(c)
}

/// CRI log records for `buf`; complete lines are consumed, a tail longer than [`MAX_LINE`]
/// (or everything, when `eof`) is emitted as it is.
pub fn records(stream: &str, buf: &mut Vec<u8>, eof: bool, out: &mut Vec<u8>) {
    loop {
        let ts = Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
        if let Some(i) = buf.iter().position(|&b| b == b'\n') {
            if i > MAX_LINE {
                emit(out, &ts, stream, "P", &buf[..MAX_LINE]);
                buf.drain(..MAX_LINE);
                continue;
            }
            emit(out, &ts, stream, "F", &buf[..i]);
            buf.drain(..=i);
        } else if buf.len() > MAX_LINE {
            emit(out, &ts, stream, "P", &buf[..MAX_LINE]);
            buf.drain(..MAX_LINE);
        } else {
            if eof && !buf.is_empty() {
                emit(out, &ts, stream, "F", buf);
                buf.clear();
            }
            return;
        }
    }
}

fn emit(out: &mut Vec<u8>, ts: &str, stream: &str, tag: &str, content: &[u8]) {
    out.extend_from_slice(ts.as_bytes());
    out.push(b' ');
    out.extend_from_slice(stream.as_bytes());
    out.push(b' ');
    out.extend_from_slice(tag.as_bytes());
    out.push(b' ');
    out.extend_from_slice(content);
    out.push(b'\n');
}

fn pump(
    stream: &'static str,
    mut r: impl Read + Send + 'static,
    log: Arc<Mutex<std::fs::File>>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 8192];
        loop {
            let (n, eof) = match r.read(&mut chunk) {
                Ok(0) | Err(_) => (0, true),
                Ok(n) => (n, false),
            };
            buf.extend_from_slice(&chunk[..n]);
            let mut out = Vec::new();
            records(stream, &mut buf, eof, &mut out);
            if !out.is_empty() {
                let mut f = log.lock().unwrap_or_else(|e| e.into_inner());
                let _ = f.write_all(&out);
            }
            if eof {
                return;
            }
        }
    })
}

/// Write `v` as JSON to `path` atomically and durably.
pub fn write_json_atomic(path: &Path, v: &impl serde::Serialize) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(&serde_json::to_vec(v).map_err(std::io::Error::other)?)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// The last error runc logged (its `--log` file, JSON lines).
fn runc_error(log: &Path) -> Option<String> {
    let text = std::fs::read_to_string(log).ok()?;
    text.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["level"] == "error" || v["level"] == "fatal")
        .filter_map(|v| v["msg"].as_str().map(String::from))
        .next_back()
}

/// Run the shim; the exit code is the container's.
pub fn run(a: ShimArgs) -> ExitCode {
    let log = match std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&a.log)
    {
        Ok(f) => Arc::new(Mutex::new(f)),
        Err(e) => {
            eprintln!("shim: {}: {e}", a.log.display());
            return ExitCode::from(1);
        }
    };
    let pid_file = a.dir.join("pid");
    let runc_log = a.dir.join("runc.log");
    let exec: Option<Exec> = if a.exec {
        match std::fs::read(a.dir.join("exec.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
        {
            Some(x) => Some(x),
            None => {
                let x = Exited {
                    exit_code: 128,
                    started_at: None,
                    finished_at: Utc::now(),
                    start_error: Some("no readable exec.json".into()),
                };
                let _ = write_json_atomic(&a.dir.join("exit.json"), &x);
                return ExitCode::from(1);
            }
        }
    } else {
        None
    };
    let mut cmd = match &exec {
        Some(x) => match exec_command(x) {
            Some(c) => c,
            None => return ExitCode::from(1),
        },
        None => {
            let mut c = Command::new("runc");
            c.arg("--root")
                .arg(&a.runc_root)
                .arg("--log")
                .arg(&runc_log)
                .args(["--log-format", "json", "run", "--bundle"])
                .arg(&a.dir)
                .arg("--pid-file")
                .arg(&pid_file)
                .arg("--no-new-keyring")
                .arg(&a.id);
            c
        }
    };
    // A container with `stdin: true` reads the pipe the runtime made for it.
    let stdin = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(a.dir.join("stdin"))
        .map(Stdio::from)
        .unwrap_or_else(|_| Stdio::null());
    let mut child = match cmd
        .stdin(stdin)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => {
            let x = Exited {
                exit_code: 128,
                started_at: None,
                finished_at: Utc::now(),
                start_error: Some(format!("{}: {e}", if a.exec { "exec" } else { "runc" })),
            };
            let _ = write_json_atomic(&a.dir.join("exit.json"), &x);
            return ExitCode::from(1);
        }
    };
    if let Some(x) = &exec {
        // The process is what runs: it joins its cgroups at once, and its pid is the record.
        for cg in &x.cgroups {
            if let Err(e) = std::fs::write(cg.join("cgroup.procs"), child.id().to_string()) {
                eprintln!("shim: joining {}: {e}", cg.display());
            }
        }
        let _ = std::fs::write(&pid_file, child.id().to_string());
    }
    // The VM's DHCP server, on a thread in its network namespace, for as long as it runs.
    let dhcp_stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let dhcp = exec.as_ref().and_then(|x| {
        let lease = x.dhcp.clone()?;
        let ns = Path::new("/run/netns").join(x.netns.as_ref()?);
        let stop = dhcp_stop.clone();
        std::thread::Builder::new()
            .name("dhcp".into())
            .spawn(move || {
                if let Err(e) = crate::vm::dhcp::serve(&lease, &ns, stop) {
                    eprintln!("shim: DHCP server: {e}");
                }
            })
            .ok()
    });
    let mut pumps = Vec::new();
    if let Some(o) = child.stdout.take() {
        pumps.push(pump("stdout", o, log.clone()));
    }
    if let Some(e) = child.stderr.take() {
        pumps.push(pump("stderr", e, log.clone()));
    }
    // Wait for runc to write the init pid (the container started) or to exit (it did not).
    let mut started_at = None;
    let status = loop {
        if started_at.is_none() {
            if let Some(pid) = std::fs::read_to_string(&pid_file)
                .ok()
                .and_then(|s| s.trim().parse::<u32>().ok())
            {
                let now = Utc::now();
                started_at = Some(now);
                let _ = write_json_atomic(
                    &a.dir.join("started.json"),
                    &Started {
                        pid,
                        started_at: now,
                    },
                );
            }
        }
        match child.try_wait() {
            Ok(Some(s)) => break Some(s),
            Ok(None) => {}
            Err(_) => break None,
        }
        // Poll fast until the container started, then slowly: runc's exit is all that is left.
        std::thread::sleep(if started_at.is_none() {
            Duration::from_millis(2)
        } else {
            Duration::from_millis(50)
        });
    };
    dhcp_stop.store(true, std::sync::atomic::Ordering::Relaxed);
    if let Some(t) = dhcp {
        let _ = t.join();
    }
    let exit_code = match status {
        Some(s) => {
            use std::os::unix::process::ExitStatusExt;
            s.code().unwrap_or_else(|| 128 + s.signal().unwrap_or(9))
        }
        None => 255,
    };
    // Drain what the container wrote; a child process that kept the pipe open must not keep
    // the exit from being recorded.
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    for p in pumps {
        while !p.is_finished() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    if let Ok(f) = log.lock() {
        let _ = f.sync_data();
    }
    let start_error = if started_at.is_none() {
        Some(runc_error(&runc_log).unwrap_or_else(|| format!("runc exited with {exit_code}")))
    } else {
        None
    };
    if let Some(x) = &exec {
        // Its cgroups go with it (the pod's own directory is the agent's to remove).
        for cg in &x.cgroups {
            let _ = std::fs::remove_dir(cg);
        }
    }
    let x = Exited {
        exit_code: if start_error.is_some() && exit_code == 0 {
            128
        } else {
            exit_code
        },
        started_at,
        finished_at: Utc::now(),
        start_error,
    };
    let _ = write_json_atomic(&a.log.with_extension("exit"), &x);
    let _ = write_json_atomic(&a.dir.join("exit.json"), &x);
    ExitCode::from(u8::try_from(x.exit_code & 0xff).unwrap_or(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(out: &[u8]) -> Vec<(String, String, String)> {
        String::from_utf8_lossy(out)
            .lines()
            .map(|l| {
                let mut p = l.splitn(4, ' ');
                let _ts = p.next().unwrap_or("");
                (
                    p.next().unwrap_or("").to_string(),
                    p.next().unwrap_or("").to_string(),
                    p.next().unwrap_or("").to_string(),
                )
            })
            .collect()
    }

    #[test]
    fn complete_lines_become_full_records_and_tails_wait() {
        let mut buf = b"one\ntwo\nthr".to_vec();
        let mut out = Vec::new();
        records("stdout", &mut buf, false, &mut out);
        assert_eq!(
            lines(&out),
            vec![
                ("stdout".into(), "F".into(), "one".into()),
                ("stdout".into(), "F".into(), "two".into())
            ]
        );
        assert_eq!(buf, b"thr");
        out.clear();
        records("stdout", &mut buf, true, &mut out);
        assert_eq!(
            lines(&out),
            vec![("stdout".into(), "F".into(), "thr".into())]
        );
    }

    #[test]
    fn long_lines_are_split_into_partials() {
        let mut buf = vec![b'x'; MAX_LINE * 2 + 10];
        buf.push(b'\n');
        let mut out = Vec::new();
        records("stderr", &mut buf, false, &mut out);
        let l = lines(&out);
        assert_eq!(l.len(), 3);
        assert_eq!(l[0].1, "P");
        assert_eq!(l[1].1, "P");
        assert_eq!(l[2].1, "F");
        assert_eq!(l[2].2.len(), 10);
        assert!(buf.is_empty());
    }
}
