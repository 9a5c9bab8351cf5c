//! The agent's container streams: `kubectl exec` and `kubectl attach`, served on the log
//! server's port to the same clients (the site, the cloud's kubelet client).
//!
//! - Route: `GET|POST /{exec|attach}/{tenant}/{namespace}/{pod}/{container}?uid=&command=&
//!   stdin=&stdout=&stderr=&tty=` with `Connection: Upgrade` and `Upgrade: atoll-stream/1`.
//!   Errors found before the upgrade (no such container, not running, bad options) are plain
//!   text with kubelet's status; otherwise `101`, and then `proto::stream` frames both ways on
//!   the same TLS connection, the last one the error channel's `Status` (the exit code).
//! - exec: `runc exec` in the container (its environment, user and working directory), with
//!   pipes, or with a terminal (runc's stdio is the slave of a terminal the agent makes; runc
//!   makes the container's and sizes it from ours when the client's resize messages arrive). The process's pid is recorded, so a client that goes
//!   away has it killed, not only runc.
//! - attach: the container's output as it is written (its CRI log from the end, by stream) until
//!   it exits; stdin into the container's stdin pipe (`ROOT/containers/ID/stdin`, a FIFO the
//!   runtime creates for containers with `stdin: true`).

use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use futures_util::{SinkExt, StreamExt};
use http_body_util::combinators::UnsyncBoxBody;
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use proto::query::Query;
use proto::stream::{self, Kind, StreamOptions};
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_util::codec::{Framed, LengthDelimitedCodec};

use crate::logs::{segment_ok, text, Reply};

/// How long runc has to hand over a terminal.
/// How long output may still drain after the process exited (a background child may hold the
/// pipes open forever).
const DRAIN: Duration = Duration::from_secs(2);
/// How often an attached client's log is read for new output.
const POLL: Duration = Duration::from_millis(100);
/// How long a terminal session waits for the client's size before starting the process.
const FIRST_SIZE: Duration = Duration::from_secs(1);
/// How long a finished session reads what the client still sends before closing.
const LINGER: Duration = Duration::from_secs(5);
/// Most exec/attach sessions a node runs at once; more get 503 (each holds a runc process, a
/// few tasks and at most `OUT_FRAMES` frames of output).
pub const MAX_SESSIONS: usize = 512;
pub(crate) static SESSIONS: tokio::sync::Semaphore =
    tokio::sync::Semaphore::const_new(MAX_SESSIONS);
/// Output frames buffered towards the client (backpressure beyond it).
const OUT_FRAMES: usize = 16;

pub(crate) type Response = http::Response<UnsyncBoxBody<Bytes, std::io::Error>>;
type Wire = Framed<TokioIo<Upgraded>, LengthDelimitedCodec>;
type Sink = futures_util::stream::SplitSink<Wire, Bytes>;
type Source = futures_util::stream::SplitStream<Wire>;

/// Whether `path` is one of the stream endpoints.
pub fn is_stream(path: &str) -> bool {
    path.starts_with("/exec/") || path.starts_with("/attach/") || path.starts_with("/portforward/")
}

/// The frame codec both ends of a stream use.
pub fn codec() -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .big_endian()
        .length_field_length(4)
        .max_frame_length(stream::MAX_FRAME)
        .new_codec()
}

fn payload(channel: u8, data: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(data.len() + 1);
    b.put_u8(channel);
    b.put_slice(data);
    b.freeze()
}

fn status_frame(status: &serde_json::Value) -> Bytes {
    payload(
        stream::ERROR,
        &serde_json::to_vec(status).unwrap_or_default(),
    )
}

/// What a request names, checked against the node's files.
struct Target {
    opts: StreamOptions,
    /// `ROOT/containers/ID`.
    cdir: PathBuf,
    id: String,
    /// The container's current log (attach).
    log: PathBuf,
    exit: PathBuf,
}

fn resolve(root: &Path, path: &str, q: &Query) -> Result<Target, (u16, String)> {
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let [kind, tenant, ns, pod, container] = segs.as_slice() else {
        return Err((404, format!("no such path {path:?}")));
    };
    let kind = Kind::parse(kind).ok_or_else(|| (404, format!("no such path {path:?}")))?;
    if ![tenant, ns, pod, container]
        .iter()
        .all(|s| segment_ok(s) || **s == proto::logs::SYSTEM_TENANT_SEGMENT)
    {
        return Err((
            400,
            "invalid tenant, namespace, pod or container name".into(),
        ));
    }
    let uid = q
        .get("uid")
        .filter(|u| !u.is_empty() && u.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-'))
        .ok_or_else(|| (400, "a pod uid is required".to_string()))?;
    let mut opts = StreamOptions::from_query(kind, q).map_err(|m| (400, m))?;
    opts.container = container.to_string();
    let id = crate::pods::container_id(uid, container);
    let cdir = root.join("containers").join(&id);
    let not_found = || (404, format!("container not found ({container:?})"));
    if !cdir.is_dir() {
        return Err(not_found());
    }
    if cdir.join("exec.json").exists() {
        return Err((
            400,
            format!(
                "container {container:?} of pod \"{ns}/{pod}\" runs a virtual machine: {} needs a container (use the VM's console log or its network)",
                kind.as_str()
            ),
        ));
    }
    if !cdir.join("started.json").exists() || cdir.join("exit.json").exists() {
        return Err((
            400,
            format!("container {container:?} in pod \"{ns}/{pod}\" is not running"),
        ));
    }
    let t = if *tenant == proto::logs::SYSTEM_TENANT_SEGMENT {
        ""
    } else {
        tenant
    };
    let ldir = crate::pods::log_dir(root, t, ns, pod, uid).join(container);
    let attempt = std::fs::read_dir(&ldir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            e.file_name()
                .to_str()?
                .strip_suffix(".log")?
                .parse::<u64>()
                .ok()
        })
        .max();
    let (log, exit) = match attempt {
        Some(a) => (
            ldir.join(format!("{a}.log")),
            ldir.join(format!("{a}.exit")),
        ),
        None if kind == Kind::Attach => return Err(not_found()),
        None => (PathBuf::new(), PathBuf::new()),
    };
    Ok(Target {
        opts,
        cdir,
        id,
        log,
        exit,
    })
}

/// Counts a session as open until dropped.
pub(crate) struct Open(pub(crate) &'static prometheus_client::metrics::gauge::Gauge);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Answer a stream request: errors at once, or `101` and the session in a task of its own.
pub async fn handle(root: &Path, mut req: http::Request<hyper::body::Incoming>) -> Response {
    if !matches!(*req.method(), http::Method::GET | http::Method::POST) {
        return text(405, format!("method {} not allowed", req.method())).into_response();
    }
    let upgrade_ok = req
        .headers()
        .get(http::header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case(stream::UPGRADE));
    if !upgrade_ok {
        return text(
            400,
            format!("stream requests must upgrade to {}", stream::UPGRADE),
        )
        .into_response();
    }
    if req.uri().path().starts_with("/portforward/") {
        return crate::portforward::handle(root, req).await;
    }
    let q = Query::parse(req.uri().query());
    let path = req.uri().path().to_string();
    let root2 = root.to_path_buf();
    let found = tokio::task::spawn_blocking(move || resolve(&root2, &path, &q)).await;
    let target = match found {
        Ok(Ok(t)) => t,
        Ok(Err((code, msg))) => return text(code, msg).into_response(),
        Err(_) => return text(500, "internal error").into_response(),
    };
    let Ok(slot) = SESSIONS.try_acquire() else {
        return text(
            503,
            format!("too many exec and attach sessions on this node (at most {MAX_SESSIONS})"),
        )
        .into_response();
    };
    let on_upgrade = hyper::upgrade::on(&mut req);
    let root = root.to_path_buf();
    tokio::spawn(async move {
        let _slot = slot;
        let sessions = &crate::metrics::get().stream_sessions;
        sessions.inc();
        let _open = Open(sessions);
        let io = match on_upgrade.await {
            Ok(io) => io,
            Err(e) => {
                tracing::debug!(error = %e, "stream upgrade failed");
                return;
            }
        };
        let (sink, mut source) = Framed::new(TokioIo::new(io), codec()).split();
        tracing::debug!(id = %target.id, kind = target.opts.kind.as_str(), "container stream");
        match target.opts.kind {
            Kind::Exec => exec(sink, &mut source, &root, target).await,
            Kind::Attach => attach(sink, &mut source, target).await,
            // Routed to `crate::portforward` before this; never resolved here.
            Kind::PortForward => {}
        }
        // The client may still be sending (input the process never read): read it to its end
        // before closing, or the close resets the connection and the client loses the last
        // frames (the exit status) with it.
        let _ = tokio::time::timeout(LINGER, async {
            while let Some(Ok(_)) = source.next().await {}
        })
        .await;
    });
    switching()
}

/// The `101` that switches a connection to a stream (`proto::stream::UPGRADE`).
pub(crate) fn switching() -> Response {
    let mut resp = Reply::Text(http::StatusCode::SWITCHING_PROTOCOLS, Bytes::new()).into_response();
    let h = resp.headers_mut();
    h.remove(http::header::CONTENT_TYPE);
    h.insert(
        http::header::CONNECTION,
        http::HeaderValue::from_static("Upgrade"),
    );
    h.insert(
        http::header::UPGRADE,
        http::HeaderValue::from_static(stream::UPGRADE),
    );
    resp
}

/// Where the exec'd process's input goes.
enum Input {
    Pipe(tokio::process::ChildStdin),
    /// The terminal's master (a dup of the one read from): blocking I/O on tokio's pool, since
    /// a terminal cannot be registered with the reactor without `unsafe`.
    Tty(tokio::fs::File),
}

impl Input {
    async fn write(&mut self, data: &[u8]) -> std::io::Result<()> {
        match self {
            Input::Pipe(p) => p.write_all(data).await,
            Input::Tty(f) => {
                f.write_all(data).await?;
                f.flush().await
            }
        }
    }
}

/// Size a terminal (through its master).
fn set_size(master: &OwnedFd, cols: u16, rows: u16) {
    let size = rustix::termios::Winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    let _ = rustix::termios::tcsetwinsize(master, size);
}

/// A new terminal: its master, and its slave opened for a child's stdio.
fn open_pty() -> std::io::Result<(OwnedFd, std::fs::File)> {
    use rustix::pty::{grantpt, openpt, ptsname, unlockpt, OpenptFlags};
    let master = openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC)?;
    grantpt(&master)?;
    unlockpt(&master)?;
    let name = ptsname(&master, Vec::new())?;
    let slave = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(rustix::fs::OFlags::NOCTTY.bits() as i32)
        .open(std::ffi::OsStr::from_bytes(name.as_bytes()))?;
    Ok((master, slave))
}

async fn read_chunks<R: tokio::io::AsyncRead + Unpin>(
    mut r: R,
    channel: u8,
    tx: mpsc::Sender<Bytes>,
) {
    let mut buf = vec![0u8; stream::MAX_DATA];
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if tx.send(payload(channel, &buf[..n])).await.is_err() {
                    return;
                }
            }
        }
    }
}

fn kill_recorded(pid_file: &Path) {
    let pid = std::fs::read_to_string(pid_file)
        .ok()
        .and_then(|s| s.trim().parse::<i32>().ok())
        .and_then(rustix::process::Pid::from_raw);
    if let Some(pid) = pid {
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
    }
}

/// Send `status` after what is queued, then close the connection.
async fn finish(out: mpsc::Sender<Bytes>, writer: tokio::task::JoinHandle<()>, status: Bytes) {
    let _ = tokio::time::timeout(Duration::from_secs(10), out.send(status)).await;
    drop(out);
    let _ = tokio::time::timeout(Duration::from_secs(30), writer).await;
}

/// The writer half: frames from `rx` to the client, then a clean close.
fn spawn_writer(mut sink: Sink, mut rx: mpsc::Receiver<Bytes>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while let Some(b) = rx.recv().await {
            if sink.send(b).await.is_err() {
                return;
            }
        }
        let _ = sink.close().await;
    })
}

async fn exec(sink: Sink, source: &mut Source, root: &Path, t: Target) {
    let (out, out_rx) = mpsc::channel::<Bytes>(OUT_FRAMES);
    let writer = spawn_writer(sink, out_rx);
    let fail = |m: String| status_frame(&stream::failure(&m));
    let work = root.join("exec");
    let scratch = match std::fs::create_dir_all(&work)
        .and_then(|_| tempfile::Builder::new().prefix("x").tempdir_in(&work))
    {
        Ok(d) => d,
        Err(e) => return finish(out, writer, fail(format!("exec: {e}"))).await,
    };
    let pid_file = scratch.path().join("pid");
    let mut cmd = tokio::process::Command::new("runc");
    cmd.arg("--root")
        .arg(root.join("runc"))
        .arg("exec")
        .arg("--pid-file")
        .arg(&pid_file);
    // A terminal: runc's stdio is the slave of a terminal made here (runc makes the
    // container's, copies between the two and sizes the container's from ours on SIGWINCH);
    // its own messages stay on a pipe.
    let pty = if t.opts.tty {
        match open_pty() {
            Ok(p) => {
                cmd.arg("--tty").args(["--env", "TERM=xterm"]);
                Some(p)
            }
            Err(e) => return finish(out, writer, fail(format!("exec: terminal: {e}"))).await,
        }
    } else {
        None
    };
    // A client with a terminal sends its size first: the process starts with it (waiting a
    // moment for it; what comes before it is kept for the process).
    let mut early = Vec::new();
    if let Some((master, _)) = &pty {
        let until = tokio::time::Instant::now() + FIRST_SIZE;
        while early.len() < 16 {
            match tokio::time::timeout_at(until, source.next()).await {
                Ok(Some(Ok(f))) if f.first() == Some(&stream::RESIZE) => {
                    if let Some((w, h)) = stream::parse_resize(&f[1..]) {
                        set_size(master, w, h);
                    }
                    break;
                }
                Ok(Some(Ok(f))) => early.push(Ok(f)),
                _ => break,
            }
        }
    }
    let mut source = futures_util::stream::iter(early).chain(source);
    cmd.arg(&t.id).args(&t.opts.command);
    let piped = |on: bool| {
        if on {
            std::process::Stdio::piped()
        } else {
            std::process::Stdio::null()
        }
    };
    let mut tty: Option<OwnedFd> = None;
    let mut master_files = None;
    match pty {
        Some((master, slave)) => {
            let dup = |f: &std::fs::File| f.try_clone().map(std::process::Stdio::from);
            let (i, o) = match (dup(&slave), dup(&slave)) {
                (Ok(i), Ok(o)) => (i, o),
                _ => return finish(out, writer, fail("exec: terminal".into())).await,
            };
            cmd.stdin(i).stdout(o).stderr(std::process::Stdio::piped());
            drop(slave);
            let files = (|| {
                let r = master.try_clone().ok()?;
                let w = master.try_clone().ok()?;
                Some((std::fs::File::from(r), std::fs::File::from(w)))
            })();
            let Some(files) = files else {
                return finish(out, writer, fail("exec: terminal".into())).await;
            };
            master_files = Some(files);
            tty = Some(master);
        }
        None => {
            cmd.stdin(piped(t.opts.stdin))
                .stdout(piped(t.opts.stdout))
                .stderr(piped(t.opts.stderr));
        }
    }
    cmd.kill_on_drop(true);
    let spawned = cmd.spawn();
    // The slave's copies given to runc are closed here, so the master reads end (EIO) once
    // runc and the process are gone.
    drop(cmd);
    let mut child = match spawned {
        Ok(c) => c,
        Err(e) => return finish(out, writer, fail(format!("exec: runc: {e}"))).await,
    };
    let runc_pid = child.id();
    // runc sizes the container's terminal from ours at start and on SIGWINCH; a size that came
    // while runc was starting (before it listens for the signal) is passed on by telling it
    // again a moment later. (runc is our child: its pid stays its own until it is reaped.)
    let winch = match (
        tty.is_some(),
        runc_pid.and_then(|p| rustix::process::Pid::from_raw(p as i32)),
    ) {
        (true, Some(pid)) => Some(tokio::spawn(async move {
            for ms in [200, 800, 2000] {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::WINCH);
            }
        })),
        _ => None,
    };
    let mut readers = Vec::new();
    let mut input: Option<Input> = None;
    if let Some(e) = child.stderr.take() {
        readers.push(tokio::spawn(read_chunks(e, stream::STDERR, out.clone())));
    }
    if let Some((r, w)) = master_files {
        // EIO on reading ends it: the terminal's last process is gone.
        readers.push(tokio::spawn(read_chunks(
            tokio::fs::File::from_std(r),
            stream::STDOUT,
            out.clone(),
        )));
        if t.opts.stdin {
            input = Some(Input::Tty(tokio::fs::File::from_std(w)));
        }
    } else {
        if let Some(o) = child.stdout.take() {
            readers.push(tokio::spawn(read_chunks(o, stream::STDOUT, out.clone())));
        }
        input = child.stdin.take().map(Input::Pipe);
    }
    // Stdin is written by a task of its own, so a process that does not read it holds back
    // only the client's stdin, never its resize, close, or the process's end.
    let (stdin_tx, mut stdin_rx) = mpsc::channel::<Bytes>(4);
    let stdin_task = input.map(|mut input| {
        tokio::spawn(async move {
            while let Some(b) = stdin_rx.recv().await {
                if input.write(&b).await.is_err() {
                    return;
                }
            }
            // The client closed stdin: the process sees end of file (a pipe's; a terminal
            // keeps its input open, as kubelet's does).
        })
    });
    let mut stdin_tx = stdin_task.as_ref().map(|_| stdin_tx);
    let mut pending: Option<Bytes> = None;
    let status = loop {
        tokio::select! {
            s = child.wait() => break s,
            permit = async { stdin_tx.clone()?.reserve_owned().await.ok() }, if pending.is_some() => {
                match (permit, pending.take()) {
                    (Some(p), Some(b)) => { p.send(b); }
                    // The process no longer takes input: drop it.
                    _ => stdin_tx = None,
                }
            }
            f = source.next(), if pending.is_none() => match f {
                Some(Ok(f)) if !f.is_empty() => {
                    let data = f.clone().freeze().slice(1..);
                    match f[0] {
                        stream::STDIN if stdin_tx.is_some() && !data.is_empty() => pending = Some(data),
                        stream::RESIZE => {
                            if let (Some(fd), Some((w, h))) = (&tty, stream::parse_resize(&data)) {
                                set_size(fd, w, h);
                                // runc sizes the container's terminal from ours on SIGWINCH.
                                if let Some(pid) = runc_pid.and_then(|p| rustix::process::Pid::from_raw(p as i32)) {
                                    let _ = rustix::process::kill_process(pid, rustix::process::Signal::WINCH);
                                }
                            }
                        }
                        stream::CLOSE if data.first() == Some(&stream::STDIN) && tty.is_none() => stdin_tx = None,
                        _ => {}
                    }
                }
                Some(Ok(_)) => {}
                // The client went away (or sent what is not a frame): end the process.
                _ => {
                    tracing::debug!(id = %t.id, "exec client gone; killing the process");
                    if let Some(w) = &winch { w.abort(); }
                    kill_recorded(&pid_file);
                    let _ = child.start_kill();
                    let _ = tokio::time::timeout(Duration::from_secs(5), child.wait()).await;
                    if let Some(s) = stdin_task { s.abort(); }
                    for r in readers { r.abort(); }
                    writer.abort();
                    return;
                }
            },
        }
    };
    drop(stdin_tx);
    if let Some(w) = winch {
        w.abort();
    }
    if let Some(s) = stdin_task {
        s.abort();
    }
    let drained = async {
        for r in readers.iter_mut() {
            let _ = r.await;
        }
    };
    if tokio::time::timeout(DRAIN, drained).await.is_err() {
        for r in &readers {
            r.abort();
        }
    }
    let code = match status {
        Ok(s) => s.code().unwrap_or_else(|| 128 + s.signal().unwrap_or(0)),
        Err(_) => 255,
    };
    finish(
        out,
        writer,
        status_frame(&stream::exit_status(code, &t.opts.command)),
    )
    .await;
}

async fn attach(sink: Sink, source: &mut Source, t: Target) {
    let (out, out_rx) = mpsc::channel::<Bytes>(OUT_FRAMES);
    let writer = spawn_writer(sink, out_rx);
    let mut stdin = if t.opts.stdin {
        tokio::net::unix::pipe::OpenOptions::new()
            .open_sender(t.cdir.join("stdin"))
            .ok()
    } else {
        None
    };
    let mut file = match tokio::fs::File::open(&t.log).await {
        Ok(f) => f,
        Err(e) => {
            let m = stream::failure(&format!("attach: the container's output: {e}"));
            return finish(out, writer, status_frame(&m)).await;
        }
    };
    if file.seek(std::io::SeekFrom::End(0)).await.is_err() {
        return;
    }
    let (want_out, want_err) = (t.opts.stdout, t.opts.stderr || t.opts.tty);
    let mut pending: Vec<u8> = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut exited = false;
    loop {
        // New output, by stream.
        let n = file.read(&mut buf).await.unwrap_or(0);
        if n > 0 {
            pending.extend_from_slice(&buf[..n]);
            let mut used = 0;
            while let Some(i) = pending[used..].iter().position(|b| *b == b'\n') {
                if let Some(r) = crate::logs::parse_record(&pending[used..used + i]) {
                    let (ch, want) = if r.stream == b"stdout" {
                        (stream::STDOUT, want_out)
                    } else if t.opts.tty {
                        (stream::STDOUT, want_err)
                    } else {
                        (stream::STDERR, want_err)
                    };
                    if want {
                        let mut data = r.content.to_vec();
                        if r.full {
                            data.push(b'\n');
                        }
                        for c in data.chunks(stream::MAX_DATA) {
                            if out.send(payload(ch, c)).await.is_err() {
                                return;
                            }
                        }
                    }
                }
                used += i + 1;
            }
            pending.drain(..used);
            if pending.len() > 1024 * 1024 {
                pending.clear();
            }
            continue;
        }
        if exited {
            break;
        }
        if tokio::fs::try_exists(&t.exit).await.unwrap_or(false) {
            exited = true;
            continue;
        }
        tokio::select! {
            _ = tokio::time::sleep(POLL) => {}
            f = source.next() => match f {
                Some(Ok(f)) if !f.is_empty() => match f[0] {
                    stream::STDIN => {
                        if let Some(p) = stdin.as_mut() {
                            if p.write_all(&f[1..]).await.is_err() {
                                stdin = None;
                            }
                        }
                    }
                    stream::CLOSE if f.get(1) == Some(&stream::STDIN) => stdin = None,
                    _ => {}
                },
                Some(Ok(_)) => {}
                _ => {
                    writer.abort();
                    return;
                }
            },
        }
    }
    finish(out, writer, status_frame(&stream::exit_status(0, &[]))).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_resolve_against_the_nodes_files() {
        let root = tempfile::tempdir().unwrap();
        let q = |s: &str| Query::parse(Some(s));
        let uid = "0123abcd-0000-1111-2222-333344445555";
        let id = crate::pods::container_id(uid, "c");
        let cdir = root.path().join("containers").join(&id);
        let path = "/exec/-/default/p/c";
        let good = format!("uid={uid}&command=true");
        // No such container.
        let e = resolve(root.path(), path, &q(&good)).err().unwrap();
        assert_eq!(e, (404, "container not found (\"c\")".to_string()));
        // Exists but never started, then exited: not running.
        std::fs::create_dir_all(&cdir).unwrap();
        assert_eq!(resolve(root.path(), path, &q(&good)).err().unwrap().0, 400);
        std::fs::write(cdir.join("started.json"), "{}").unwrap();
        let ok = resolve(root.path(), path, &q(&good)).ok().unwrap();
        assert_eq!(
            (ok.id.as_str(), ok.opts.command.as_slice()),
            (id.as_str(), &["true".to_string()][..])
        );
        std::fs::write(cdir.join("exit.json"), "{}").unwrap();
        let e = resolve(root.path(), path, &q(&good)).err().unwrap();
        assert!(e.1.contains("is not running"), "{e:?}");
        // Bad input.
        assert_eq!(
            resolve(root.path(), path, &q("command=true"))
                .err()
                .unwrap()
                .0,
            400
        );
        assert_eq!(
            resolve(root.path(), path, &q(&format!("uid={uid}")))
                .err()
                .unwrap()
                .1,
            "you must specify at least 1 command"
        );
        assert_eq!(
            resolve(root.path(), "/exec/-/default/../c", &q(&good))
                .err()
                .unwrap()
                .0,
            400
        );
        assert_eq!(
            resolve(root.path(), "/shell/-/default/p/c", &q(&good))
                .err()
                .unwrap()
                .0,
            404
        );
        assert_eq!(
            resolve(root.path(), "/exec/-/default/p", &q(&good))
                .err()
                .unwrap()
                .0,
            404
        );
    }
}
