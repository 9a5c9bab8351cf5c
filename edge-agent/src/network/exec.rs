//! Child processes (ip, nft, CNI plugins) with deadlines, and the netns and link helpers
//! built on them.

use super::*;

/// Run `program args` within [`CHILD_TIMEOUT`]; stdin from `input`; with `env`, only that
/// environment (and `PATH`). Non-zero exits are the caller's to judge.
pub(super) async fn run(
    program: &Path,
    args: &[&str],
    env: Option<&[(&str, &str)]>,
    input: Option<&[u8]>,
) -> Result<Output> {
    run_within(CHILD_TIMEOUT, program, args, env, input).await
}

/// [`run`] with another deadline; the child is killed when it passes.
pub(super) async fn run_within(
    deadline: Duration,
    program: &Path,
    args: &[&str],
    env: Option<&[(&str, &str)]>,
    input: Option<&[u8]>,
) -> Result<Output> {
    let name = program.display().to_string();
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args)
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if let Some(env) = env {
        cmd.env_clear()
            .env("PATH", PATH_ENV)
            .envs(env.iter().copied());
    }
    let work = async {
        let mut child = cmd.spawn().map_err(|source| NetError::Spawn {
            program: name.clone(),
            source,
        })?;
        if let (Some(input), Some(mut stdin)) = (input, child.stdin.take()) {
            // A child that exits without reading shows up in its status, not here.
            let _ = stdin.write_all(input).await;
        }
        child
            .wait_with_output()
            .await
            .map_err(|source| NetError::Spawn {
                program: name.clone(),
                source,
            })
    };
    tokio::time::timeout(deadline, work)
        .await
        .map_err(|_| NetError::Timeout {
            program: name.clone(),
            deadline,
        })?
}

pub(super) fn failure(program: &str, args: &[&str], out: &Output) -> NetError {
    let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
    NetError::Command {
        command: std::iter::once(program)
            .chain(args.iter().copied())
            .collect::<Vec<_>>()
            .join(" "),
        msg: if stderr.is_empty() {
            out.status.to_string()
        } else {
            stderr
        },
    }
}

/// `ip ARGS`, which must succeed.
pub(super) async fn ip(args: &[&str]) -> Result<()> {
    let out = run(Path::new("ip"), args, None, None).await?;
    if out.status.success() {
        Ok(())
    } else {
        Err(failure("ip", args, &out))
    }
}

/// `nft -f -` with `script` on stdin.
pub(super) async fn nft(script: &str) -> Result<()> {
    let out = run(
        Path::new("nft"),
        &["-f", "-"],
        None,
        Some(script.as_bytes()),
    )
    .await?;
    if out.status.success() {
        Ok(())
    } else {
        Err(failure("nft", &["-f", "-"], &out))
    }
}

pub(super) fn netns_path(name: &str) -> PathBuf {
    Path::new(NETNS_DIR).join(name)
}

pub(super) async fn netns_exists(name: &str) -> bool {
    tokio::fs::try_exists(netns_path(name))
        .await
        .unwrap_or(false)
}

pub(super) async fn netns_delete(name: &str) -> Result<()> {
    if !netns_exists(name).await {
        return Ok(());
    }
    match ip(&["netns", "del", name]).await {
        Err(_) if !netns_exists(name).await => Ok(()),
        r => r,
    }
}

pub(super) async fn link_delete(name: &str) -> Result<()> {
    let exists = |n: &str| Path::new("/sys/class/net").join(n).exists();
    if !exists(name) {
        return Ok(());
    }
    match ip(&["link", "del", name]).await {
        Err(_) if !exists(name) => Ok(()),
        r => r,
    }
}

/// Whether the pod's netns exists and its `eth0` holds `addr`, or lent it to a VM's guest
/// (`eth0` is then a port of the netns' [`VM_BRIDGE`]).
pub(super) async fn has_addr(netns: &str, addr: Ipv4Addr) -> bool {
    if !netns_exists(netns).await {
        return false;
    }
    let args = ["-n", netns, "-j", "-4", "addr", "show", "dev", IFNAME];
    match run(Path::new("ip"), &args, None, None).await {
        Ok(out) if out.status.success() => {
            addr_listed(&out.stdout, addr) || lent_to_vm(netns).await
        }
        _ => false,
    }
}

/// Whether the pod's `eth0` is a port of its VM bridge.
pub(super) async fn lent_to_vm(netns: &str) -> bool {
    let args = ["-n", netns, "-j", "link", "show", "dev", IFNAME];
    match run(Path::new("ip"), &args, None, None).await {
        Ok(out) if out.status.success() => serde_json::from_slice::<serde_json::Value>(&out.stdout)
            .ok()
            .and_then(|v| v.get(0)?.get("master")?.as_str().map(|m| m == VM_BRIDGE))
            .unwrap_or(false),
        _ => false,
    }
}

/// Whether the netns has a link named `dev`.
pub(super) async fn has_link(netns: &str, dev: &str) -> bool {
    run(
        Path::new("ip"),
        &["-n", netns, "link", "show", "dev", dev],
        None,
        None,
    )
    .await
    .is_ok_and(|o| o.status.success())
}
