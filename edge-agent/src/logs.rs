//! The agent's log server: container logs on disk, served over HTTPS to the API servers
//! (`kubectl logs` at the site's edge-core, or tunnelled from the cloud through it).
//!
//! - Files (CRI format, written by the pod runtime): one record per line,
//!   `RFC3339Nano-timestamp SP stream SP tag SP content`, tag `P` (partial: joined with the next
//!   record) or `F` (full line), in
//!   `ROOT/logs/<tenant>_<namespace>_<pod>_<uid>/<container>/<attempt>.log` (`-` is the system
//!   tenant); `<attempt>.exit` appears when that attempt has ended.
//! - Route: `GET /containerLogs/{tenant}/{namespace}/{pod}/{container}?uid=&follow=&previous=&
//!   tailLines=&timestamps=&limitBytes=&sinceSeconds=&sinceTime=` → `200 text/plain`, streamed.
//! - TLS with a self-signed serving certificate (`ROOT/pki/agent.{crt,key}`, created once); a
//!   client certificate chaining to the region CA is required, issued for client authentication
//!   to the node's site (O `atoll:sites`, CN the site) or to the cloud's kubelet client
//!   (O `atoll:control-plane`, CN `atoll:kubelet-client`).

use std::collections::HashSet;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, FixedOffset, Utc};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper_util::rt::TokioIo;
use proto::logs::{LogOptions, SYSTEM_TENANT_SEGMENT};
use proto::query::Query;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// The sites whose certificates may read logs here (shared with whoever keeps it current).
pub type Allowed = Arc<RwLock<HashSet<String>>>;

/// How often a followed log is checked for new lines.
const POLL: Duration = Duration::from_millis(200);
/// Longest record kept while looking for its end; longer ones are dropped (the runtime splits
/// long lines into partial records far below this).
const MAX_RECORD: usize = 1024 * 1024;
const READ_CHUNK: usize = 64 * 1024;

/// Log server failures (all at start-up; request errors are HTTP answers).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read or written.
    #[error("{0}")]
    Io(PathBuf, #[source] std::io::Error),
    /// The serving certificate could not be generated.
    #[error("generating the serving certificate")]
    Cert(#[source] rcgen::Error),
    /// The TLS configuration was refused (bad CA or certificate).
    #[error("tls: {0}")]
    Tls(String),
}

/// The serving certificate and key (PEM) under `ROOT/pki`, created self-signed on first use.
pub fn load_or_create_cert(root: &Path) -> Result<(Vec<u8>, Vec<u8>), Error> {
    let dir = root.join("pki");
    let (crt, key) = (dir.join("agent.crt"), dir.join("agent.key"));
    if let (Ok(c), Ok(k)) = (std::fs::read(&crt), std::fs::read(&key)) {
        return Ok((c, k));
    }
    std::fs::create_dir_all(&dir).map_err(|e| Error::Io(dir.clone(), e))?;
    let mut names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
    if let Ok(h) = std::fs::read_to_string("/proc/sys/kernel/hostname") {
        let h = h.trim();
        if !h.is_empty() && !names.iter().any(|n| n == h) {
            names.push(h.to_string());
        }
    }
    let mut p = rcgen::CertificateParams::new(names).map_err(Error::Cert)?;
    p.distinguished_name
        .push(rcgen::DnType::CommonName, "atoll-agent");
    // rcgen's default validity (1975 to 4096): the certificate is pinned by nobody and never
    // needs renewing; clients authenticate themselves, not this certificate.
    let k = rcgen::KeyPair::generate().map_err(Error::Cert)?;
    let cert = p.self_signed(&k).map_err(Error::Cert)?;
    boot::write_private(&key, k.serialize_pem().as_bytes())
        .map_err(|e| Error::Io(key.clone(), e))?;
    std::fs::write(&crt, cert.pem()).map_err(|e| Error::Io(crt.clone(), e))?;
    tracing::info!(path = %crt.display(), "created the log server's certificate");
    Ok((cert.pem().into_bytes(), k.serialize_pem().into_bytes()))
}

/// The TLS configuration: our certificate, client certificates required and verified against
/// `ca_pem`.
pub fn tls_config(root: &Path, ca_pem: &[u8]) -> Result<Arc<rustls::ServerConfig>, Error> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let (cert_pem, key_pem) = load_or_create_cert(root)?;
    let tls = |e: &dyn std::fmt::Display| Error::Tls(e.to_string());
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem) {
        roots.add(c.map_err(|e| tls(&e))?).map_err(|e| tls(&e))?;
    }
    if roots.is_empty() {
        return Err(Error::Tls(
            "no CA certificate to verify clients with".into(),
        ));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .map_err(|e| tls(&e))?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| tls(&e))?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| tls(&e))?;
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| tls(&e))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .map_err(|e| tls(&e))?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// Serve logs from `root` on `listener` until `cancel`. Fails only at start (TLS setup).
pub async fn serve(
    listener: tokio::net::TcpListener,
    root: PathBuf,
    ca_pem: Vec<u8>,
    allowed: Allowed,
    cancel: CancellationToken,
) -> Result<(), Error> {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls_config(&root, &ca_pem)?);
    let root = Arc::new(root);
    if let Ok(a) = listener.local_addr() {
        tracing::info!(addr = %a, "log server listening");
    }
    loop {
        let (tcp, peer) = tokio::select! {
            _ = cancel.cancelled() => return Ok(()),
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let (acceptor, root, allowed, cancel) = (
            acceptor.clone(),
            root.clone(),
            allowed.clone(),
            cancel.clone(),
        );
        tokio::spawn(async move {
            let tls =
                match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, error = %e, "tls handshake failed");
                        return;
                    }
                    Err(_) => return,
                };
            let id = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .and_then(|c| client_identity(c));
            let who = match id {
                Some((org, cn)) if allowed.read().is_ok_and(|a| may_read(&org, &cn, &a)) => Ok(cn),
                Some((org, cn)) => Err(format!("{org}/{cn}")),
                None => Err(String::new()),
            };
            let svc = hyper::service::service_fn(move |req| {
                let (root, who) = (root.clone(), who.clone());
                async move {
                    let reply = match &who {
                        Ok(cn) if crate::streams::is_stream(req.uri().path()) => {
                            tracing::debug!(client = %cn, path = %req.uri().path(), "stream request");
                            return Ok(crate::streams::handle(&root, req).await);
                        }
                        Ok(_) if req.uri().path() == "/stats" => match crate::usage::latest() {
                            Some(u) => Reply::Text(
                                http::StatusCode::OK,
                                Bytes::from(serde_json::to_vec(&u).unwrap_or_default()),
                            ),
                            None => text(503, "no usage sample yet"),
                        },
                        Ok(_) if req.uri().path() == "/metrics" => {
                            let body = Bytes::from(crate::metrics::get().encode());
                            return Ok(http::Response::builder()
                                .header(
                                    http::header::CONTENT_TYPE,
                                    "text/plain; version=0.0.4; charset=utf-8",
                                )
                                .body(
                                    http_body_util::Full::new(body)
                                        .map_err(|n| match n {})
                                        .boxed_unsync(),
                                )
                                .unwrap_or_default());
                        }
                        Ok(cn) => {
                            tracing::debug!(client = %cn, path = %req.uri().path(), "log request");
                            handle(&root, req.method(), req.uri()).await
                        }
                        Err(cn) => {
                            tracing::warn!(%peer, client = %cn, "log request refused: client not allowed");
                            text(403, format!("client {cn:?} may not read logs on this node"))
                        }
                    };
                    Ok::<_, std::convert::Infallible>(reply.into_response())
                }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tls), svc)
                .with_upgrades();
            tokio::select! {
                r = conn => if let Err(e) = r { tracing::debug!(%peer, error = %e, "connection ended") },
                _ = cancel.cancelled() => {}
            }
        });
    }
}

/// What a log request is answered with: a short text, or the log streamed as it is read.
pub(crate) enum Reply {
    Text(http::StatusCode, Bytes),
    Stream(mpsc::Receiver<Bytes>),
}

impl Reply {
    pub(crate) fn into_response(self) -> http::Response<UnsyncBoxBody<Bytes, std::io::Error>> {
        let (status, content_type, body) = match self {
            Reply::Text(status, body) => (
                status,
                "text/plain; charset=utf-8",
                Full::new(body)
                    .map_err(|never| match never {})
                    .boxed_unsync(),
            ),
            Reply::Stream(rx) => {
                let chunks = futures_util::stream::unfold(rx, |mut rx| async move {
                    rx.recv()
                        .await
                        .map(|b| (Ok::<_, std::io::Error>(Frame::data(b)), rx))
                });
                (
                    http::StatusCode::OK,
                    "text/plain",
                    StreamBody::new(chunks).boxed_unsync(),
                )
            }
        };
        let mut resp = http::Response::new(body);
        *resp.status_mut() = status;
        resp.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static(content_type),
        );
        resp
    }
}

pub(crate) fn text(code: u16, msg: impl Into<String>) -> Reply {
    let mut body = msg.into();
    body.push('\n');
    Reply::Text(
        http::StatusCode::from_u16(code).unwrap_or(http::StatusCode::BAD_REQUEST),
        Bytes::from(body),
    )
}

/// A path segment that names a tenant, namespace, pod or container (and nothing else: no
/// separators, no `..`).
pub(crate) fn segment_ok(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && !s.starts_with('.')
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
}

/// What a request resolved to on disk.
#[derive(Debug, PartialEq)]
struct Resolved {
    log: PathBuf,
    exit: PathBuf,
}

/// The pod directory for tenant/namespace/pod: the one with `uid` if given, else the most
/// recently modified (a recreated pod leaves its old directory behind for a while).
fn pod_dir(root: &Path, tenant: &str, ns: &str, pod: &str, uid: Option<&str>) -> Option<PathBuf> {
    let mut best: Option<(std::time::SystemTime, PathBuf)> = None;
    for e in std::fs::read_dir(root.join("logs")).ok()?.flatten() {
        let name = e.file_name();
        let Some(name) = name.to_str() else { continue };
        let mut parts = name.splitn(4, '_');
        let (Some(t), Some(n), Some(p), Some(u)) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        if (t, n, p) != (tenant, ns, pod) {
            continue;
        }
        match uid {
            Some(want) if want == u => return Some(e.path()),
            Some(_) => {}
            None => {
                let m = e
                    .metadata()
                    .and_then(|m| m.modified())
                    .unwrap_or(std::time::UNIX_EPOCH);
                if best.as_ref().is_none_or(|(bm, _)| m > *bm) {
                    best = Some((m, e.path()));
                }
            }
        }
    }
    best.map(|(_, p)| p)
}

/// Attempt numbers with a log file in a container directory, ascending.
fn attempts(dir: &Path) -> Vec<u64> {
    let mut v: Vec<u64> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.strip_suffix(".log")?.parse().ok())
        .collect();
    v.sort_unstable();
    v
}

/// Find the log file a request names; errors are (status, kubelet-style message).
fn resolve(
    root: &Path,
    tenant: &str,
    ns: &str,
    pod: &str,
    container: &str,
    uid: Option<&str>,
    previous: bool,
) -> Result<Resolved, (u16, String)> {
    let dir = pod_dir(root, tenant, ns, pod, uid).ok_or_else(|| {
        (
            404,
            format!("pod \"{ns}/{pod}\" does not exist on this node"),
        )
    })?;
    let cdir = dir.join(container);
    if !cdir.is_dir() {
        return Err((
            404,
            format!("container {container:?} not found in pod \"{ns}/{pod}\""),
        ));
    }
    let a = attempts(&cdir);
    let pick = if previous {
        a.len()
            .checked_sub(2)
            .and_then(|i| a.get(i))
            .ok_or_else(|| {
                (
                    400,
                    format!("previous terminated container {container:?} in pod {pod:?} not found"),
                )
            })?
    } else {
        a.last().ok_or_else(|| {
            (
                400,
                format!(
                    "container {container:?} in pod {pod:?} is waiting to start: ContainerCreating"
                ),
            )
        })?
    };
    Ok(Resolved {
        log: cdir.join(format!("{pick}.log")),
        exit: cdir.join(format!("{pick}.exit")),
    })
}

async fn handle(root: &Path, method: &http::Method, uri: &http::Uri) -> Reply {
    if method != http::Method::GET {
        return text(405, format!("method {method} not allowed"));
    }
    let path = uri.path();
    if path == "/healthz" {
        return text(200, "ok");
    }
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let ["containerLogs", tenant, ns, pod, container] = segs.as_slice() else {
        return text(404, format!("no such path {path:?}"));
    };
    if ![tenant, ns, pod, container]
        .iter()
        .all(|s| segment_ok(s) || **s == SYSTEM_TENANT_SEGMENT)
    {
        return text(400, "invalid tenant, namespace, pod or container name");
    }
    let q = Query::parse(uri.query());
    let opts = match LogOptions::from_query(&q, pod) {
        Ok(o) => o,
        Err(e) => return text(400, e.to_string()),
    };
    let uid = q.get("uid").filter(|u| !u.is_empty());
    let (root, tenant, ns, pod, container) = (
        root.to_path_buf(),
        tenant.to_string(),
        ns.to_string(),
        pod.to_string(),
        container.to_string(),
    );
    let uid = uid.map(String::from);
    let previous = opts.previous;
    let found = tokio::task::spawn_blocking(move || {
        resolve(
            &root,
            &tenant,
            &ns,
            &pod,
            &container,
            uid.as_deref(),
            previous,
        )
    })
    .await;
    let r = match found {
        Ok(Ok(r)) => r,
        Ok(Err((code, msg))) => return text(code, msg),
        Err(_) => return text(500, "internal error"),
    };
    let since = match (&opts.since_time, opts.since_seconds) {
        (Some(t), _) => DateTime::parse_from_rfc3339(t)
            .ok()
            .map(|t| t.with_timezone(&Utc)),
        (None, Some(s)) => Some(Utc::now() - chrono::Duration::seconds(s)),
        _ => None,
    };
    let start = match opts.tail_lines {
        Some(n) => {
            let log = r.log.clone();
            let off = tokio::task::spawn_blocking(move || {
                let mut f = std::fs::File::open(&log)?;
                let len = f.metadata()?.len();
                tail_offset(&mut f, len, u64::try_from(n).unwrap_or(0))
            })
            .await;
            match off {
                Ok(Ok(o)) => o,
                _ => return text(500, "reading the log failed"),
            }
        }
        None => 0,
    };
    let file = match tokio::fs::File::open(&r.log).await {
        Ok(f) => f,
        Err(_) => return text(500, "reading the log failed"),
    };
    let fmt = Formatter::new(
        opts.timestamps,
        since,
        opts.limit_bytes.and_then(|l| u64::try_from(l).ok()),
    );
    let (tx, rx) = mpsc::channel(proto::logs::STREAM_CHUNKS);
    tokio::spawn(pump(file, start, r, opts.follow, fmt, tx));
    Reply::Stream(rx)
}

/// Stream the file from `start` through `fmt`; with `follow`, keep going until the attempt's
/// exit file appears (then drain once more), the log disappears, or the reader goes away.
async fn pump(
    mut file: tokio::fs::File,
    start: u64,
    r: Resolved,
    follow: bool,
    mut fmt: Formatter,
    tx: mpsc::Sender<Bytes>,
) {
    if file.seek(SeekFrom::Start(start)).await.is_err() {
        return;
    }
    let mut buf = vec![0u8; READ_CHUNK];
    let mut pending: Vec<u8> = Vec::new();
    let mut discarding = false;
    let mut exited = false;
    loop {
        let n = match file.read(&mut buf).await {
            Ok(n) => n,
            Err(_) => return,
        };
        if n > 0 {
            pending.extend_from_slice(&buf[..n]);
            let mut out = Vec::new();
            let mut used = 0;
            while let Some(i) = pending[used..].iter().position(|b| *b == b'\n') {
                if discarding {
                    discarding = false;
                } else {
                    fmt.record(&pending[used..used + i], &mut out);
                }
                used += i + 1;
                if fmt.done() {
                    break;
                }
            }
            pending.drain(..used);
            if pending.len() > MAX_RECORD {
                pending.clear();
                discarding = true;
            }
            if !out.is_empty() && tx.send(Bytes::from(out)).await.is_err() {
                return;
            }
            if fmt.done() {
                return;
            }
            continue;
        }
        if !follow || exited {
            return;
        }
        if tokio::fs::try_exists(&r.exit).await.unwrap_or(false) {
            // The attempt ended: read what it wrote last, then end.
            exited = true;
            continue;
        }
        if !tokio::fs::try_exists(&r.log).await.unwrap_or(false) {
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep(POLL) => {}
            _ = tx.closed() => return,
        }
    }
}

/// One parsed CRI record.
#[derive(Debug, PartialEq)]
pub struct Record<'a> {
    /// Timestamp as written (RFC 3339, nanoseconds).
    pub time: &'a [u8],
    /// `stdout` or `stderr`.
    pub stream: &'a [u8],
    /// Whether the record ends a line (tag `F`; `P` continues into the next record).
    pub full: bool,
    /// The content.
    pub content: &'a [u8],
}

/// Parse one record (without its newline); `None` if it is not CRI.
pub fn parse_record(line: &[u8]) -> Option<Record<'_>> {
    let mut it = line.splitn(4, |b| *b == b' ');
    let time = it.next().filter(|t| !t.is_empty())?;
    let stream = it.next().filter(|s| *s == b"stdout" || *s == b"stderr")?;
    let tag = it.next()?;
    let content = it.next().unwrap_or(b"");
    // Tags may be colon-separated (CRI); the first says partial or full.
    let full = match tag.split(|b| *b == b':').next() {
        Some(b"F") => true,
        Some(b"P") => false,
        _ => return None,
    };
    Some(Record {
        time,
        stream,
        full,
        content,
    })
}

fn parse_time(t: &[u8]) -> Option<DateTime<FixedOffset>> {
    DateTime::parse_from_rfc3339(std::str::from_utf8(t).ok()?).ok()
}

/// Turns records into what the client reads: partial records joined, optional timestamps,
/// `since` filter (decided per line, at its first record), byte limit.
#[derive(Debug)]
pub struct Formatter {
    timestamps: bool,
    since: Option<DateTime<Utc>>,
    remaining: Option<u64>,
    line_start: bool,
    skip_line: bool,
}

impl Formatter {
    /// A formatter for one response.
    pub fn new(timestamps: bool, since: Option<DateTime<Utc>>, limit: Option<u64>) -> Self {
        Formatter {
            timestamps,
            since,
            remaining: limit,
            line_start: true,
            skip_line: false,
        }
    }

    /// The byte limit is reached: nothing more will be written.
    pub fn done(&self) -> bool {
        self.remaining == Some(0)
    }

    /// Append the output for one record to `out`. Records that are not CRI are skipped.
    pub fn record(&mut self, line: &[u8], out: &mut Vec<u8>) {
        if self.done() {
            return;
        }
        let Some(r) = parse_record(line) else { return };
        if self.line_start {
            self.skip_line = match (self.since, parse_time(r.time)) {
                (Some(since), Some(t)) => t < since,
                _ => false,
            };
        }
        if !self.skip_line {
            let start = out.len();
            if self.timestamps && self.line_start {
                out.extend_from_slice(r.time);
                out.push(b' ');
            }
            out.extend_from_slice(r.content);
            if r.full {
                out.push(b'\n');
            }
            if let Some(rem) = &mut self.remaining {
                let n = (out.len() - start) as u64;
                if n >= *rem {
                    out.truncate(start + *rem as usize);
                    *rem = 0;
                } else {
                    *rem -= n;
                }
            }
        }
        self.line_start = r.full;
    }
}

/// The offset where the last `n` lines of a CRI log start (a line ends at an `F` record; the
/// `P` records before it belong to it). A trailing record without its newline is still being
/// written and is not counted. Reads backwards in chunks: the cost is in the lines asked for,
/// not the file's size.
pub fn tail_offset<R: Read + Seek>(r: &mut R, len: u64, n: u64) -> std::io::Result<u64> {
    const CHUNK: u64 = 64 * 1024;
    const HEAD: usize = 128;
    let is_full = |head: &[u8]| {
        let mut it = head.splitn(4, |b| *b == b' ');
        it.nth(2)
            .and_then(|tag| tag.split(|b| *b == b':').next())
            .is_some_and(|t| t == b"F")
    };
    // buf holds file[lo .. lo + buf.len()].
    let mut lo = len;
    let mut buf: Vec<u8> = Vec::new();
    // The newline ending the record scanned back over next (None: not found yet).
    let mut rec_end: Option<u64> = None;
    let mut fulls = 0u64;
    loop {
        let mut upto = match rec_end {
            Some(e) => usize::try_from(e - lo).unwrap_or(usize::MAX).min(buf.len()),
            None => buf.len(),
        };
        while let Some(p) = buf[..upto].iter().rposition(|b| *b == b'\n') {
            let nl = lo + p as u64;
            if let Some(e) = rec_end {
                // The record from nl + 1 to e is complete.
                if is_full(&buf[p + 1..(p + 1 + HEAD).min(buf.len())]) {
                    if fulls == n {
                        return Ok(e + 1);
                    }
                    fulls += 1;
                }
            }
            rec_end = Some(nl);
            upto = p;
        }
        if lo == 0 {
            // The first record of the file, from 0 to rec_end.
            if let Some(e) = rec_end {
                if is_full(&buf[..HEAD.min(buf.len())]) && fulls == n {
                    return Ok(e + 1);
                }
            }
            return Ok(0);
        }
        let new_lo = lo.saturating_sub(CHUNK);
        let mut chunk = vec![0u8; (lo - new_lo) as usize];
        r.seek(SeekFrom::Start(new_lo))?;
        r.read_exact(&mut chunk)?;
        buf.truncate(HEAD);
        chunk.extend_from_slice(&buf);
        buf = chunk;
        lo = new_lo;
    }
}

/// The subject organization and common name of a DER client certificate (already verified
/// against the region CA), if it is one issued for client authentication.
pub fn client_identity(der: &[u8]) -> Option<(String, String)> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let client_auth = cert
        .extended_key_usage()
        .ok()
        .flatten()
        .is_some_and(|e| e.value.client_auth);
    if !client_auth {
        return None;
    }
    let subject = cert.subject();
    // Exactly one value each: a second CN or O is not a name the region issued.
    fn one<'a>(
        mut it: impl Iterator<Item = &'a x509_parser::x509::AttributeTypeAndValue<'a>>,
    ) -> Option<String> {
        let first = it.next()?.as_str().ok()?.to_string();
        it.next().is_none().then_some(first)
    }
    Some((
        one(subject.iter_organization())?,
        one(subject.iter_common_name())?,
    ))
}

/// Whether a client with organization `org` and common name `cn` may read logs: the region's
/// certificate for one of the `sites` this node belongs to, or the cloud's kubelet client.
/// Any other certificate of the region CA (serving certificates, another site's, or one whose
/// CN merely matches) is refused.
pub fn may_read(org: &str, cn: &str, sites: &HashSet<String>) -> bool {
    match org {
        proto::SITE_CERT_ORG => sites.contains(cn),
        proto::CONTROL_PLANE_ORG => cn == proto::logs::KUBELET_CLIENT_CN,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(t: &str, tag: &str, content: &str) -> String {
        format!("2026-11-28T17:00:{t}Z stdout {tag} {content}\n")
    }

    fn run(fmt: &mut Formatter, text: &str) -> String {
        let mut out = Vec::new();
        for l in text.split_terminator('\n') {
            fmt.record(l.as_bytes(), &mut out);
        }
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn parses_cri_records() {
        let r = parse_record(b"2026-11-28T17:00:00.123456789Z stderr F hello world").unwrap();
        assert_eq!(r.time, b"2026-11-28T17:00:00.123456789Z");
        assert_eq!(r.stream, b"stderr");
        assert!(r.full);
        assert_eq!(r.content, b"hello world");
        assert_eq!(
            parse_record(b"2026-11-28T17:00:00Z stdout F")
                .unwrap()
                .content,
            b""
        );
        assert!(
            !parse_record(b"2026-11-28T17:00:00Z stdout P:x part")
                .unwrap()
                .full
        );
        for bad in [
            &b""[..],
            b"garbage",
            b"ts stdin F x",
            b"ts stdout X x",
            b" stdout F x",
        ] {
            assert_eq!(
                parse_record(bad),
                None,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn joins_partials_and_prefixes_timestamps_per_line() {
        let text = rec("01", "P", "hel") + &rec("02", "F", "lo") + &rec("03", "F", "");
        assert_eq!(
            run(&mut Formatter::new(false, None, None), &text),
            "hello\n\n"
        );
        assert_eq!(
            run(&mut Formatter::new(true, None, None), &text),
            "2026-11-28T17:00:01Z hello\n2026-11-28T17:00:03Z \n"
        );
        // Records that are not CRI are skipped.
        assert_eq!(
            run(
                &mut Formatter::new(false, None, None),
                &format!("junk\n{}", rec("04", "F", "x"))
            ),
            "x\n"
        );
    }

    #[test]
    fn since_decides_per_line_and_limit_cuts() {
        let text = rec("01", "P", "old-") + &rec("05", "F", "line") + &rec("06", "F", "new");
        let since = "2026-11-28T17:00:04Z".parse::<DateTime<Utc>>().unwrap();
        assert_eq!(
            run(&mut Formatter::new(false, Some(since), None), &text),
            "new\n"
        );
        let mut f = Formatter::new(false, None, Some(6));
        assert_eq!(run(&mut f, &text), "old-li");
        assert!(f.done());
        let mut f = Formatter::new(false, None, Some(9));
        assert_eq!(run(&mut f, &text), "old-line\n");
        assert!(f.done());
    }

    fn tail(text: &str, n: u64) -> String {
        let mut c = std::io::Cursor::new(text.as_bytes().to_vec());
        let off = tail_offset(&mut c, text.len() as u64, n).unwrap();
        text[off as usize..].to_string()
    }

    #[test]
    fn tail_counts_lines_not_records() {
        let text = rec("01", "F", "a")
            + &rec("02", "P", "b1")
            + &rec("03", "F", "b2")
            + &rec("04", "F", "c");
        assert_eq!(tail(&text, 1), rec("04", "F", "c"));
        assert_eq!(
            tail(&text, 2),
            rec("02", "P", "b1") + &rec("03", "F", "b2") + &rec("04", "F", "c")
        );
        assert_eq!(tail(&text, 3), text);
        assert_eq!(tail(&text, 10), text);
        assert_eq!(tail(&text, 0), "");
        // A record still being written is not a line; tail 0 starts after the last full line.
        let writing = text.clone() + &rec("05", "P", "d1") + "2026-11-28T17:00:06Z std";
        assert_eq!(
            tail(&writing, 1),
            rec("04", "F", "c") + &rec("05", "P", "d1") + "2026-11-28T17:00:06Z std"
        );
        assert_eq!(
            tail(&writing, 0),
            rec("05", "P", "d1") + "2026-11-28T17:00:06Z std"
        );
        assert_eq!(tail("", 3), "");
    }

    #[test]
    fn tail_reads_backwards_across_chunks() {
        let mut text = String::new();
        for i in 0..5000 {
            text += &rec("00", "F", &format!("line {i} {}", "x".repeat(40)));
        }
        let out = tail(&text, 1500);
        assert_eq!(out.lines().count(), 1500);
        assert!(out.starts_with(&rec("00", "F", &format!("line 3500 {}", "x".repeat(40)))));
        assert_eq!(tail(&text, 5000), text);
    }

    fn cert(org: &str, cn: &str, eku: rcgen::ExtendedKeyUsagePurpose) -> Vec<u8> {
        let mut p = rcgen::CertificateParams::new(vec!["x".to_string()]).unwrap();
        p.distinguished_name
            .push(rcgen::DnType::OrganizationName, org);
        p.distinguished_name.push(rcgen::DnType::CommonName, cn);
        p.extended_key_usages = vec![eku];
        let k = rcgen::KeyPair::generate().unwrap();
        p.self_signed(&k).unwrap().der().to_vec()
    }

    #[test]
    fn only_site_and_kubelet_client_certificates_may_read() {
        use rcgen::ExtendedKeyUsagePurpose::{ClientAuth, ServerAuth};
        let sites: HashSet<String> = ["s1".to_string()].into();
        let allowed =
            |der: &[u8]| client_identity(der).is_some_and(|(o, c)| may_read(&o, &c, &sites));
        assert!(allowed(&cert("atoll:sites", "s1", ClientAuth)));
        assert!(allowed(&cert(
            "atoll:control-plane",
            "atoll:kubelet-client",
            ClientAuth
        )));
        // Another site; the right CN under another organization; a serving certificate.
        assert!(!allowed(&cert("atoll:sites", "s2", ClientAuth)));
        assert!(!allowed(&cert("atoll", "s1", ClientAuth)));
        assert!(!allowed(&cert(
            "atoll:sites",
            "atoll:kubelet-client",
            ClientAuth
        )));
        assert!(!allowed(&cert("atoll:sites", "s1", ServerAuth)));
        let c = cert("atoll:sites", "s1", ClientAuth);
        assert_eq!(
            client_identity(&c),
            Some(("atoll:sites".to_string(), "s1".to_string()))
        );
        assert_eq!(client_identity(b""), None);
        for cut in 0..c.len() {
            assert_eq!(client_identity(&c[..cut]), None);
        }
    }

    fn write(p: &Path, s: &str) {
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, s).unwrap();
    }

    #[test]
    fn resolves_attempts_uids_and_previous() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        let d = r.join("logs/-_default_p_u1/c");
        write(&d.join("0.log"), "");
        write(&d.join("0.exit"), "{}");
        write(&d.join("1.log"), "");
        write(&r.join("logs/acme_default_p_u2/c/0.log"), "");
        let got = resolve(r, "-", "default", "p", "c", None, false).unwrap();
        assert_eq!(got.log, d.join("1.log"));
        assert_eq!(
            resolve(r, "-", "default", "p", "c", Some("u1"), true)
                .unwrap()
                .log,
            d.join("0.log")
        );
        let (code, msg) = resolve(r, "acme", "default", "p", "c", None, true).unwrap_err();
        assert_eq!(
            (code, msg.as_str()),
            (
                400,
                "previous terminated container \"c\" in pod \"p\" not found"
            )
        );
        assert_eq!(
            resolve(r, "-", "default", "p", "c", Some("nope"), false)
                .unwrap_err()
                .0,
            404
        );
        assert_eq!(
            resolve(r, "-", "default", "p", "other", None, false)
                .unwrap_err()
                .0,
            404
        );
        assert_eq!(
            resolve(r, "-", "default", "q", "c", None, false)
                .unwrap_err()
                .0,
            404
        );
        std::fs::create_dir_all(r.join("logs/-_default_w_u3/c")).unwrap();
        assert!(resolve(r, "-", "default", "w", "c", None, false)
            .unwrap_err()
            .1
            .contains("waiting to start"));
        assert!(
            !segment_ok("..") && !segment_ok("a/b") && !segment_ok("") && segment_ok("kube-system")
        );
    }
}
