//! Pod logs (`GET .../pods/{name}/log`): the request options and their validation as
//! kube-apiserver does it, the pluggable [`LogSource`] a server streams logs from, and the HTTPS
//! client for a node agent's log endpoint ([`AgentLogs`]).
//!
//! The agent endpoint is `GET /containerLogs/{tenant}/{namespace}/{pod}/{container}?...`
//! (`-` names the system tenant), served over TLS with client certificates required. Like
//! kube-apiserver by default, the client does not verify the agent's (self-signed) serving
//! certificate: the agent is found by the address its Node advertises, and a party able to
//! impersonate that address could serve fake logs (it learns nothing it could not already see:
//! the request carries no credential beyond the TLS client certificate, which it cannot replay).

use crate::path::percent_encode;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::sync::mpsc;

use crate::error::{ApiError, ApiResult};
use store::{Key, Store};

pub use proto::logs::{
    LogOptions, AGENT_PORT, KUBELET_CLIENT_CN, STREAM_CHUNKS, SYSTEM_TENANT_SEGMENT,
};
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(15);
/// Most bytes of an agent's error body that are read and passed on.
const MAX_ERROR_BODY: usize = 4096;

/// The containers of a pod in kube's visiting order (init containers, containers, ephemeral
/// containers), and the regular ones alone.
fn container_names(pod: &Value) -> (Vec<String>, Vec<String>) {
    let list = |f: &str| -> Vec<String> {
        pod.pointer(&format!("/spec/{f}"))
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|c| c.get("name").and_then(Value::as_str).map(String::from))
            .collect()
    };
    let main = list("containers");
    let mut all = list("initContainers");
    all.extend(main.iter().cloned());
    all.extend(list("ephemeralContainers"));
    (all, main)
}

/// The container a log request addresses (kube's `validateContainer`).
pub fn container_of(pod: &Value, name: &str, requested: &str) -> ApiResult<String> {
    let (all, main) = container_names(pod);
    if requested.is_empty() {
        return match main.as_slice() {
            [only] => Ok(only.clone()),
            [] => Err(ApiError::bad_request(format!(
                "a container name must be specified for pod {name}"
            ))),
            _ => Err(ApiError::bad_request(format!(
                "a container name must be specified for pod {name}, choose one of: [{}]",
                all.join(" ")
            ))),
        };
    }
    if all.iter().any(|c| c == requested) {
        Ok(requested.to_string())
    } else {
        Err(ApiError::bad_request(format!(
            "container {requested} is not valid for pod {name}"
        )))
    }
}

/// A resolved log request: which container of which pod instance on which node.
#[derive(Clone, Debug, PartialEq)]
pub struct LogTarget {
    /// Tenant (`""`: system space).
    pub tenant: String,
    /// Namespace.
    pub namespace: String,
    /// Pod name.
    pub pod: String,
    /// Pod uid (the instance; a recreated pod has a new one).
    pub uid: String,
    /// The node the pod is bound to.
    pub node: String,
    /// Container (resolved).
    pub container: String,
    /// Options (`container` resolved too).
    pub opts: LogOptions,
}

impl LogTarget {
    /// `/containerLogs/{tenant}/{namespace}/{pod}/{container}?...` on the agent.
    pub fn agent_path(&self) -> String {
        let tenant = if self.tenant.is_empty() {
            SYSTEM_TENANT_SEGMENT
        } else {
            &self.tenant
        };
        let q = self.opts.agent_query(&self.uid);
        let mut p = format!(
            "/containerLogs/{tenant}/{}/{}/{}",
            percent_encode(&self.namespace),
            percent_encode(&self.pod),
            percent_encode(&self.container)
        );
        if !q.is_empty() {
            p.push('?');
            p.push_str(&q);
        }
        p
    }
}

/// Resolve a request against the pod in `store`. `Ok(None)`: the pod is not bound to a node
/// yet, and (like kube-apiserver) the answer is an empty log.
pub fn resolve(
    store: &Store,
    tenant: &str,
    namespace: &str,
    pod: &str,
    mut opts: LogOptions,
) -> ApiResult<Option<LogTarget>> {
    let obj = store
        .get(&Key::new("pods", tenant, namespace, pod))
        .ok_or_else(|| ApiError::not_found("", "pods", pod))?;
    let container = container_of(&obj, pod, &opts.container)?;
    opts.container = container.clone();
    let node = obj
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .unwrap_or("");
    if node.is_empty() {
        return Ok(None);
    }
    Ok(Some(LogTarget {
        tenant: tenant.into(),
        namespace: namespace.into(),
        pod: pod.into(),
        uid: obj
            .pointer("/metadata/uid")
            .and_then(Value::as_str)
            .unwrap_or("")
            .into(),
        node: node.into(),
        container,
        opts,
    }))
}

/// Log bytes as they come; the producer stops when the receiver is dropped.
pub type LogStream = mpsc::Receiver<Bytes>;
/// A boxed future (the trait is object-safe without an async-trait dependency).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Where a server gets container logs from.
pub trait LogSource: Send + Sync {
    /// Open the log stream of `target`; errors are the `Status` kubectl shows.
    fn open(&self, target: LogTarget) -> BoxFuture<'_, ApiResult<LogStream>>;
}

/// The PEM client certificate and key to present to agents (read per request, so a renewed
/// certificate is used from then on).
pub type ClientCert = Arc<dyn Fn() -> (Vec<u8>, Vec<u8>) + Send + Sync>;

/// Logs straight from the node's agent (edge-core for its nodes, cloud-core for cloud nodes).
pub struct AgentLogs {
    pub(crate) store: Store,
    pub(crate) cert: ClientCert,
}

/// The address of a node's agent log endpoint: its `InternalIP` (else `ExternalIP`) and
/// `status.daemonEndpoints.kubeletEndpoint.Port` (else 10250).
pub fn agent_endpoint(node_name: &str, node: &Value) -> ApiResult<SocketAddr> {
    let addrs = node
        .pointer("/status/addresses")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let ip = ["InternalIP", "ExternalIP"].iter().find_map(|ty| {
        addrs
            .iter()
            .filter(|a| a.get("type").and_then(Value::as_str) == Some(ty))
            .find_map(|a| a.get("address")?.as_str()?.parse::<IpAddr>().ok())
    });
    let ip = ip.ok_or_else(|| {
        ApiError::unavailable(format!(
            "node {node_name} has no InternalIP address: its agent cannot be reached for logs"
        ))
    })?;
    let port = node
        .pointer("/status/daemonEndpoints/kubeletEndpoint/Port")
        .and_then(Value::as_u64)
        .and_then(|p| u16::try_from(p).ok())
        .filter(|p| *p != 0)
        .unwrap_or(AGENT_PORT);
    Ok(SocketAddr::new(ip, port))
}

impl AgentLogs {
    /// Logs from the agents of the nodes in `store`, presenting `cert`.
    pub fn new(store: Store, cert: ClientCert) -> Self {
        AgentLogs { store, cert }
    }

    /// Stream `target` from its node's agent.
    pub async fn fetch(&self, target: &LogTarget) -> ApiResult<LogStream> {
        let node = self
            .store
            .get(&Key::new("nodes", "", "", &target.node))
            .ok_or_else(|| ApiError::not_found("", "nodes", &target.node))?;
        let addr = agent_endpoint(&target.node, &node)?;
        let (cert, key) = (self.cert)();
        fetch(addr, &cert, &key, &target.agent_path(), &target.node).await
    }
}

impl AgentLogs {
    /// Open a container stream (exec, attach) at `target`'s node's agent.
    pub async fn open_stream(
        &self,
        target: &crate::streams::StreamTarget,
    ) -> ApiResult<crate::streams::BoxPipe> {
        let node = self
            .store
            .get(&Key::new("nodes", "", "", &target.node))
            .ok_or_else(|| ApiError::not_found("", "nodes", &target.node))?;
        let addr = agent_endpoint(&target.node, &node)?;
        let (cert, key) = (self.cert)();
        let node_name = target.node.as_str();
        let unreachable = |why: String| {
            tracing::info!(node = %node_name, %addr, error = %why, "node agent unreachable for a stream");
            ApiError::unavailable(format!(
                "the agent of node {node_name} at {addr} cannot be reached: {why}"
            ))
        };
        let tls = client_tls(&cert, &key).map_err(|e| {
            tracing::error!(error = %e, "agent client certificate unusable");
            ApiError::internal("agent client certificate")
        })?;
        let io = upgrade(
            addr,
            tls,
            &target.agent_path(),
            None,
            &unreachable,
            &|code, body| agent_error(code, body),
        )
        .await?;
        Ok(Box::new(io))
    }
}

impl crate::streams::StreamSource for AgentLogs {
    fn open(
        &self,
        target: crate::streams::StreamTarget,
    ) -> BoxFuture<'_, ApiResult<crate::streams::BoxPipe>> {
        Box::pin(async move { self.open_stream(&target).await })
    }
}

impl LogSource for AgentLogs {
    fn open(&self, target: LogTarget) -> BoxFuture<'_, ApiResult<LogStream>> {
        Box::pin(async move { self.fetch(&target).await })
    }
}

fn client_tls(cert_pem: &[u8], key_pem: &[u8]) -> Result<rustls::ClientConfig, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| e.to_string())?;
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| e.to_string())?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(proto::tls::AnyServerCert(provider)))
        .with_client_auth_cert(certs, key)
        .map_err(|e| e.to_string())?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(cfg)
}

/// The `Status` for an agent's non-200 answer (kube-apiserver's generic response checker:
/// 400 and 404 keep the agent's message).
pub fn agent_error(code: u16, body: &str) -> ApiError {
    let msg = body.trim();
    match code {
        400 => ApiError::bad_request(msg),
        404 => ApiError::from_code(404, msg),
        403 | 401 => {
            tracing::warn!(code, message = %msg, "a node agent refused this server's client certificate");
            ApiError::from_code(
                502,
                format!("the node agent refused the request ({code}): {msg}"),
            )
        }
        c => ApiError::from_code(c.max(500), format!("the node agent answered {c}: {msg}")),
    }
}

/// GET `path` from the agent at `addr` over TLS with a client certificate; on 200 the body is
/// streamed into the returned channel by a task that ends when the body ends or the receiver
/// is dropped (which closes the connection, so the agent stops too).
pub async fn fetch(
    addr: SocketAddr,
    cert_pem: &[u8],
    key_pem: &[u8],
    path: &str,
    node: &str,
) -> ApiResult<LogStream> {
    let unreachable = |why: String| {
        tracing::info!(%node, %addr, error = %why, "node agent unreachable for logs");
        ApiError::unavailable(format!(
            "the agent of node {node} at {addr} cannot be reached: {why}"
        ))
    };
    let tls = client_tls(cert_pem, key_pem).map_err(|e| {
        tracing::error!(error = %e, "log client certificate unusable");
        ApiError::internal("log client certificate")
    })?;
    get_stream(addr, tls, path, None, &unreachable, &|code, body| {
        agent_error(code, body)
    })
    .await
}

/// GET pod logs at `path` from another API server of the region at `addr` (a replica that
/// holds the pod's site), trusting only the region CA `ca_pem`, with `token`; on 200 the body
/// is streamed as [`fetch`] streams an agent's.
pub async fn relay(
    addr: SocketAddr,
    ca_pem: &[u8],
    token: &str,
    path: &str,
) -> ApiResult<LogStream> {
    let unreachable = replica_unreachable(addr);
    get_stream(
        addr,
        replica_tls(ca_pem)?,
        path,
        Some(token),
        &unreachable,
        &status_error,
    )
    .await
}

/// The path of a replica's relay endpoint for container streams (system administrators only):
/// `POST RELAY_PATH?request=` the `StreamRequest`, protobuf in unpadded URL-safe base64, with
/// `Upgrade: atoll-stream/1`; the replica opens the stream where it can itself (never through
/// a further replica) and answers `101`, the connection then being the stream's pipe.
pub const RELAY_PATH: &str = "/atoll/v1/streams";

/// Open a container stream (exec, attach, a port-forward connection) through the replica at
/// `addr`, which holds the site's connection: its relay endpoint, with the region CA and an
/// admin token.
pub async fn relay_stream(
    addr: SocketAddr,
    ca_pem: &[u8],
    token: &str,
    req: &proto::sync::StreamRequest,
) -> ApiResult<crate::streams::BoxPipe> {
    use base64::Engine;
    use prost::Message;
    let q = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(req.encode_to_vec());
    let unreachable = replica_unreachable(addr);
    let io = upgrade(
        addr,
        replica_tls(ca_pem)?,
        &format!("{RELAY_PATH}?request={q}"),
        Some(token),
        &unreachable,
        &status_error,
    )
    .await?;
    Ok(Box::new(io))
}

/// The usage samples of `site`'s nodes through the replica at `addr` holding it.
pub async fn relay_usage(
    addr: SocketAddr,
    ca_pem: &[u8],
    token: &str,
    site: &str,
) -> ApiResult<Vec<proto::usage::NodeUsage>> {
    let path = format!(
        "{}?site={}",
        crate::usage::USAGE_RELAY_PATH,
        crate::path::percent_encode(site)
    );
    let rx = relay(addr, ca_pem, token, &path).await?;
    let body = crate::usage::collect(rx).await?;
    serde_json::from_slice(&body)
        .map_err(|e| ApiError::from_code(502, format!("the replica at {addr}'s usage: {e}")))
}

fn replica_unreachable(addr: SocketAddr) -> impl Fn(String) -> ApiError + Sync {
    move |why: String| {
        tracing::info!(%addr, error = %why, "replica unreachable for a relay");
        ApiError::unavailable(format!(
            "the replica at {addr} holding the site cannot be reached: {why}"
        ))
    }
}

/// A replica's error answer: its `Status` message, with its code.
fn status_error(code: u16, body: &str) -> ApiError {
    let msg = serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| v.get("message").and_then(Value::as_str).map(String::from))
        .unwrap_or_else(|| body.trim().to_string());
    ApiError::from_code(code, msg)
}

/// TLS to another replica: its serving certificate chains to the region CA.
fn replica_tls(ca_pem: &[u8]) -> ApiResult<rustls::ClientConfig> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls::pki_types::CertificateDer::pem_slice_iter(ca_pem).flatten() {
        let _ = roots.add(c);
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|_| ApiError::internal("tls"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tls)
}

/// TLS to `addr` (named by its IP) and an HTTP/1.1 handshake on it.
async fn connect(
    addr: SocketAddr,
    tls: rustls::ClientConfig,
    unreachable: &(dyn Fn(String) -> ApiError + Sync),
) -> ApiResult<(
    hyper::client::conn::http1::SendRequest<http_body_util::Empty<Bytes>>,
    hyper::client::conn::http1::Connection<
        TokioIo<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>,
        http_body_util::Empty<Bytes>,
    >,
)> {
    let tcp = tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(addr))
        .await
        .map_err(|_| unreachable("connection timed out".into()))?
        .map_err(|e| unreachable(e.to_string()))?;
    let _ = tcp.set_nodelay(true);
    let name = rustls::pki_types::ServerName::IpAddress(addr.ip().into());
    let stream = tokio::time::timeout(
        CONNECT_TIMEOUT,
        tokio_rustls::TlsConnector::from(Arc::new(tls)).connect(name, tcp),
    )
    .await
    .map_err(|_| unreachable("tls handshake timed out".into()))?
    .map_err(|e| unreachable(format!("tls: {e}")))?;
    hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| unreachable(e.to_string()))
}

/// Read at most [`MAX_ERROR_BODY`] bytes of an error answer's body.
async fn error_text(mut body: hyper::body::Incoming) -> String {
    let mut text = Vec::new();
    let read = async {
        while let Some(Ok(f)) = body.frame().await {
            if let Ok(d) = f.into_data() {
                text.extend_from_slice(&d[..d.len().min(MAX_ERROR_BODY - text.len())]);
                if text.len() >= MAX_ERROR_BODY {
                    break;
                }
            }
        }
    };
    let _ = tokio::time::timeout(RESPONSE_TIMEOUT, read).await;
    String::from_utf8_lossy(&text).into_owned()
}

/// Ask the agent at `addr` to upgrade `path` to a container stream (`proto::stream::UPGRADE`);
/// on `101` the connection is the stream, otherwise `error(code, body)`.
async fn upgrade(
    addr: SocketAddr,
    tls: rustls::ClientConfig,
    path: &str,
    token: Option<&str>,
    unreachable: &(dyn Fn(String) -> ApiError + Sync),
    error: &(dyn Fn(u16, &str) -> ApiError + Sync),
) -> ApiResult<TokioIo<hyper::upgrade::Upgraded>> {
    let (mut sender, conn) = connect(addr, tls, unreachable).await?;
    let conn = tokio::spawn(conn.with_upgrades());
    let mut req = http::Request::post(path)
        .header(http::header::HOST, addr.to_string())
        .header(http::header::CONNECTION, "Upgrade")
        .header(http::header::UPGRADE, proto::stream::UPGRADE);
    if let Some(t) = token {
        req = req.header(http::header::AUTHORIZATION, format!("Bearer {t}"));
    }
    let req = req
        .body(http_body_util::Empty::<Bytes>::new())
        .map_err(|_| ApiError::bad_request("invalid stream request"))?;
    let resp = match tokio::time::timeout(RESPONSE_TIMEOUT, sender.send_request(req)).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            conn.abort();
            return Err(unreachable(e.to_string()));
        }
        Err(_) => {
            conn.abort();
            return Err(unreachable("no answer in time".into()));
        }
    };
    let status = resp.status();
    if status != http::StatusCode::SWITCHING_PROTOCOLS {
        let text = error_text(resp.into_body()).await;
        conn.abort();
        return Err(error(status.as_u16(), &text));
    }
    match tokio::time::timeout(RESPONSE_TIMEOUT, hyper::upgrade::on(resp)).await {
        Ok(Ok(io)) => Ok(TokioIo::new(io)),
        Ok(Err(e)) => Err(unreachable(format!("upgrade: {e}"))),
        Err(_) => Err(unreachable("upgrade timed out".into())),
    }
}

/// GET `path` at `addr` over `tls` (the server named by its IP), with a bearer `token` when
/// given; a non-200 answer becomes `error(code, body)`.
async fn get_stream(
    addr: SocketAddr,
    tls: rustls::ClientConfig,
    path: &str,
    token: Option<&str>,
    unreachable: &(dyn Fn(String) -> ApiError + Sync),
    error: &(dyn Fn(u16, &str) -> ApiError + Sync),
) -> ApiResult<LogStream> {
    let (mut sender, conn) = connect(addr, tls, unreachable).await?;
    let conn = tokio::spawn(conn);
    let mut req = http::Request::get(path).header(http::header::HOST, addr.to_string());
    if let Some(t) = token {
        req = req.header(http::header::AUTHORIZATION, format!("Bearer {t}"));
    }
    let req = req
        .body(http_body_util::Empty::<Bytes>::new())
        .map_err(|_| ApiError::bad_request("invalid log request"))?;
    let resp = match tokio::time::timeout(RESPONSE_TIMEOUT, sender.send_request(req)).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            conn.abort();
            return Err(unreachable(e.to_string()));
        }
        Err(_) => {
            conn.abort();
            return Err(unreachable("no answer in time".into()));
        }
    };
    let status = resp.status();
    if status != http::StatusCode::OK {
        let text = error_text(resp.into_body()).await;
        conn.abort();
        return Err(error(status.as_u16(), &text));
    }
    let mut body = resp.into_body();
    let (tx, rx) = mpsc::channel(STREAM_CHUNKS);
    tokio::spawn(async move {
        loop {
            tokio::select! {
                f = body.frame() => match f {
                    Some(Ok(f)) => {
                        if let Ok(d) = f.into_data() {
                            if !d.is_empty() && tx.send(d).await.is_err() {
                                break;
                            }
                        }
                    }
                    _ => break,
                },
                _ = tx.closed() => break,
            }
        }
        drop(sender);
        conn.abort();
    });
    Ok(rx)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn containers_default_and_are_checked() {
        let one = json!({"spec": {"containers": [{"name": "a"}]}});
        assert_eq!(container_of(&one, "p", "").unwrap(), "a");
        assert_eq!(
            container_of(&one, "p", "b").unwrap_err().message,
            "container b is not valid for pod p"
        );
        let two = json!({"spec": {"initContainers": [{"name": "i"}], "containers": [{"name": "a"}, {"name": "b"}]}});
        assert_eq!(
            container_of(&two, "p", "").unwrap_err().message,
            "a container name must be specified for pod p, choose one of: [i a b]"
        );
        assert_eq!(container_of(&two, "p", "i").unwrap(), "i");
        let none = json!({"spec": {}});
        assert_eq!(container_of(&none, "p", "").unwrap_err().code, 400);
    }

    #[test]
    fn agent_endpoint_and_path() {
        let node = json!({"status": {"addresses": [{"type": "Hostname", "address": "h"}, {"type": "InternalIP", "address": "10.0.0.7"}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 12345}}}});
        assert_eq!(
            agent_endpoint("n", &node).unwrap(),
            "10.0.0.7:12345".parse().unwrap()
        );
        let bare =
            json!({"status": {"addresses": [{"type": "InternalIP", "address": "10.0.0.7"}]}});
        assert_eq!(agent_endpoint("n", &bare).unwrap().port(), AGENT_PORT);
        assert_eq!(agent_endpoint("n", &json!({})).unwrap_err().code, 503);
        let t = LogTarget {
            tenant: String::new(),
            namespace: "default".into(),
            pod: "p".into(),
            uid: "u".into(),
            node: "n".into(),
            container: "c".into(),
            opts: LogOptions::default(),
        };
        assert_eq!(t.agent_path(), "/containerLogs/-/default/p/c?uid=u");
    }

    #[test]
    fn agent_errors_keep_kubes_shape() {
        let e = agent_error(
            400,
            "previous terminated container \"c\" in pod \"p\" not found\n",
        );
        assert_eq!((e.code, e.reason), (400, "BadRequest"));
        assert_eq!(
            e.message,
            "previous terminated container \"c\" in pod \"p\" not found"
        );
        assert_eq!(agent_error(404, "x").reason, "NotFound");
        assert_eq!(agent_error(403, "x").code, 502);
        assert_eq!(agent_error(500, "x").code, 500);
    }
}
