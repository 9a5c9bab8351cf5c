//! The agent's side of `kubectl port-forward`: one TCP connection to a port of a pod, made
//! inside the pod's network namespace (so a server listening on the pod's loopback is reached,
//! as kubelet reaches it), served on the log server's port to the same clients.
//!
//! Route: `GET|POST /portforward/{tenant}/{namespace}/{pod}/{port}?uid=` with `Connection:
//! Upgrade` and `Upgrade: atoll-stream/1`. The connection is made first: a closed port is
//! answered at once (502, kubelet's text), never with a `101`. Then `101`, and the upgraded
//! connection carries the TCP connection's bytes both ways, each direction's end passed on as
//! a half-close, until both have ended or either side breaks.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use proto::query::Query;

use crate::logs::{segment_ok, text};
use crate::streams::{Open, Response, SESSIONS};

/// How long a connection to the pod's port may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// What a request names, checked against the node's files.
struct Target {
    uid: String,
    port: u16,
    what: String,
    /// The pod's network namespace; `None` for a hostNetwork pod (the node's own).
    netns: Option<PathBuf>,
}

fn resolve(root: &Path, path: &str, q: &Query) -> Result<Target, (u16, String)> {
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let ["portforward", tenant, ns, pod, port] = segs.as_slice() else {
        return Err((404, format!("no such path {path:?}")));
    };
    if ![tenant, ns, pod]
        .iter()
        .all(|s| segment_ok(s) || **s == proto::logs::SYSTEM_TENANT_SEGMENT)
    {
        return Err((400, "invalid tenant, namespace or pod name".into()));
    }
    let port: u16 = port
        .parse()
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| (400, format!("invalid port {port:?}: must be 1-65535")))?;
    let uid = q
        .get("uid")
        .filter(|u| !u.is_empty() && u.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-'))
        .ok_or_else(|| (400, "a pod uid is required".to_string()))?;
    if !root.join("pods").join(uid).is_dir() {
        return Err((404, format!("pod \"{ns}/{pod}\" (uid {uid}) not found")));
    }
    Ok(Target {
        uid: uid.to_string(),
        port,
        what: format!("{ns}/{pod}"),
        netns: crate::network::recorded_netns(&root.join("net"), uid),
    })
}

/// Connect to `port` on the loopback of the network namespace at `netns` (IPv4, then IPv6),
/// on a thread of its own that enters the namespace and ends with the connection made (a
/// socket stays in the namespace it was made in; a pooled thread must never change its own).
async fn connect(netns: Option<PathBuf>, port: u16) -> Result<tokio::net::TcpStream, String> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let spawned = std::thread::Builder::new()
        .name("portforward".into())
        .spawn(move || {
            let r = (|| -> Result<std::net::TcpStream, String> {
                if let Some(ns) = &netns {
                    let f = std::fs::File::open(ns).map_err(|e| {
                        format!("the pod's network namespace {}: {e}", ns.display())
                    })?;
                    rustix::thread::move_into_link_name_space(
                        std::os::fd::AsFd::as_fd(&f),
                        Some(rustix::thread::LinkNameSpaceType::Network),
                    )
                    .map_err(|e| format!("entering the pod's network namespace: {e}"))?;
                }
                let v4 = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
                let v6 = SocketAddr::from((Ipv6Addr::LOCALHOST, port));
                let s =
                    std::net::TcpStream::connect_timeout(&v4, CONNECT_TIMEOUT).or_else(|e4| {
                        std::net::TcpStream::connect_timeout(&v6, CONNECT_TIMEOUT)
                            .map_err(|e6| format!("IPv4: {e4}; IPv6: {e6}"))
                    })?;
                s.set_nonblocking(true).map_err(|e| e.to_string())?;
                Ok(s)
            })();
            let _ = tx.send(r);
        });
    if let Err(e) = spawned {
        return Err(format!("starting the connecting thread: {e}"));
    }
    let s = rx
        .await
        .map_err(|_| "the connecting thread ended".to_string())??;
    tokio::net::TcpStream::from_std(s).map_err(|e| e.to_string())
}

/// Answer a port-forward request: an error at once, or the connection made, `101`, and the
/// bytes passed both ways in a task of its own.
pub async fn handle(root: &Path, mut req: http::Request<hyper::body::Incoming>) -> Response {
    let q = Query::parse(req.uri().query());
    let target = match resolve(root, req.uri().path(), &q) {
        Ok(t) => t,
        Err((code, msg)) => return text(code, msg).into_response(),
    };
    let Ok(slot) = SESSIONS.try_acquire() else {
        return text(
            503,
            format!(
                "too many exec, attach and port-forward sessions on this node (at most {})",
                crate::streams::MAX_SESSIONS
            ),
        )
        .into_response();
    };
    let mut tcp = match connect(target.netns.clone(), target.port).await {
        Ok(s) => s,
        Err(e) => {
            return text(
                502,
                format!(
                    "error forwarding port {} to pod {}, uid {}: failed to connect to localhost:{} inside the pod's network namespace: {e}",
                    target.port, target.what, target.uid, target.port
                ),
            )
            .into_response();
        }
    };
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let _slot = slot;
        let sessions = &crate::metrics::get().stream_sessions;
        sessions.inc();
        let _open = Open(sessions);
        let io = match on_upgrade.await {
            Ok(io) => io,
            Err(e) => {
                tracing::debug!(error = %e, "port-forward upgrade failed");
                return;
            }
        };
        tracing::debug!(pod = %target.uid, port = target.port, "port-forward connection");
        let mut io = TokioIo::new(io);
        // Each direction's end is passed on as a shutdown of the other side's writing half;
        // it returns once both have ended, or at the first error (both sockets then close).
        let _ = tokio::io::copy_bidirectional(&mut io, &mut tcp).await;
    });
    crate::streams::switching()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_checked_before_anything_is_touched() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("pods/abc-1")).unwrap();
        let q = |s: &str| Query::parse(Some(s));
        let ok = resolve(
            root.path(),
            "/portforward/-/default/web/8080",
            &q("uid=abc-1"),
        )
        .unwrap();
        assert_eq!((ok.port, ok.what.as_str()), (8080, "default/web"));
        // No record: a hostNetwork pod, the node's own namespace.
        assert_eq!(ok.netns, None);
        for (path, query, code) in [
            ("/portforward/-/default/web/0", "uid=abc-1", 400),
            ("/portforward/-/default/web/70000", "uid=abc-1", 400),
            ("/portforward/-/default/web/http", "uid=abc-1", 400),
            ("/portforward/-/default/web/80", "", 400),
            ("/portforward/-/default/web/80", "uid=../x", 400),
            ("/portforward/-/Default/web/80", "uid=abc-1", 400),
            ("/portforward/-/default/web/80", "uid=abc-2", 404),
            ("/portforward/-/default/web", "uid=abc-1", 404),
        ] {
            let e = resolve(root.path(), path, &q(query)).err().map(|e| e.0);
            assert_eq!(e, Some(code), "{path}?{query}");
        }
    }

    #[tokio::test]
    async fn a_closed_port_is_refused_and_an_open_one_reached() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        assert!(connect(None, port).await.is_ok());
        drop(l);
        let e = connect(None, port).await.unwrap_err();
        assert!(e.contains("refused"), "{e}");
    }
}
