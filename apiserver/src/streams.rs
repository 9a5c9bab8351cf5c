//! Container streams (`pods/exec`, `pods/attach`): the WebSocket side kubectl speaks
//! (`v5.channel.k8s.io`, and `v4.channel.k8s.io` for older clients), the pluggable
//! [`StreamSource`] a server reaches containers through (the node's agent, or a site's tunnel),
//! and the bridge between the two.
//!
//! Each WebSocket binary message is one channel's bytes behind a channel byte (0 stdin, 1
//! stdout, 2 stderr, 3 the error channel's `Status`, 4 resize; v5 adds 255, close a channel).
//! Towards the node the same payloads travel as length-prefixed frames (`proto::stream`), so
//! the bridge passes them on as they are, checking only their channel and size. Each direction
//! runs on its own: a process that does not read its stdin never holds back its output.

use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use futures_util::{SinkExt, StreamExt};
use http::HeaderMap;
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;
use tokio_util::codec::{FramedRead, FramedWrite, LengthDelimitedCodec};

use crate::error::{ApiError, ApiResult};
use crate::logs::BoxFuture;
use crate::path::percent_encode;
use store::{Key, Store};

pub use proto::stream::{Kind, StreamOptions};

/// The remote-command subprotocols served, in the server's order of preference.
pub const PROTOCOLS: [&str; 2] = ["v5.channel.k8s.io", "v4.channel.k8s.io"];
/// A client that takes no output for this long is dropped.
pub(crate) const STALL: Duration = Duration::from_secs(60);
/// Largest WebSocket message accepted from a client.
const MAX_MESSAGE: usize = 1024 * 1024;

/// A byte pipe to a container stream (the agent's upgraded connection, a QUIC stream).
pub trait Pipe: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Pipe for T {}
/// A boxed [`Pipe`].
pub type BoxPipe = Box<dyn Pipe>;

/// The frame codec of a pipe (`proto::stream`: 4-byte length, channel, data).
pub fn codec() -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .big_endian()
        .length_field_length(4)
        .max_frame_length(proto::stream::MAX_FRAME)
        .new_codec()
}

/// A resolved stream request: which container of which pod instance on which node.
#[derive(Clone, Debug, PartialEq)]
pub struct StreamTarget {
    /// Tenant (`""`: system space).
    pub tenant: String,
    /// Namespace.
    pub namespace: String,
    /// Pod name.
    pub pod: String,
    /// Pod uid.
    pub uid: String,
    /// The node the pod is bound to.
    pub node: String,
    /// Options, the container resolved.
    pub opts: StreamOptions,
}

impl StreamTarget {
    /// `/{exec|attach}/{tenant}/{namespace}/{pod}/{container}?...` on the agent.
    pub fn agent_path(&self) -> String {
        let tenant = if self.tenant.is_empty() {
            proto::logs::SYSTEM_TENANT_SEGMENT
        } else {
            &self.tenant
        };
        if self.opts.kind == Kind::PortForward {
            return format!(
                "/portforward/{tenant}/{}/{}/{}?uid={}",
                percent_encode(&self.namespace),
                percent_encode(&self.pod),
                self.opts.port,
                percent_encode(&self.uid)
            );
        }
        format!(
            "/{}/{tenant}/{}/{}/{}?{}",
            self.opts.kind.as_str(),
            percent_encode(&self.namespace),
            percent_encode(&self.pod),
            percent_encode(&self.opts.container),
            self.opts.agent_query(&self.uid)
        )
    }
}

/// Resolve a request against the pod in `store` (kube-apiserver's checks: the pod exists, the
/// container is one of it, the pod has a node).
pub fn resolve(
    store: &Store,
    tenant: &str,
    namespace: &str,
    pod: &str,
    mut opts: StreamOptions,
) -> ApiResult<StreamTarget> {
    let obj = store
        .get(&Key::new("pods", tenant, namespace, pod))
        .ok_or_else(|| ApiError::not_found("", "pods", pod))?;
    if opts.kind != Kind::PortForward {
        opts.container = crate::logs::container_of(&obj, pod, &opts.container)?;
    }
    let node = obj
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .unwrap_or("");
    if node.is_empty() {
        return Err(ApiError::bad_request(format!(
            "pod {pod} does not have a host assigned"
        )));
    }
    running(&obj, namespace, pod, &opts)?;
    Ok(StreamTarget {
        tenant: tenant.into(),
        namespace: namespace.into(),
        pod: pod.into(),
        uid: obj
            .pointer("/metadata/uid")
            .and_then(Value::as_str)
            .unwrap_or("")
            .into(),
        node: node.into(),
        opts,
    })
}

/// What the pod's status says against a stream: a finished pod (kubectl's text), a container
/// not running, a VM (the agent's texts). Checked here as well as at the node so that the
/// answer to kubectl's SPDY retry of a refused WebSocket is the same error, not a protocol one.
fn running(pod_obj: &Value, namespace: &str, pod: &str, opts: &StreamOptions) -> ApiResult<()> {
    let phase = pod_obj
        .pointer("/status/phase")
        .and_then(Value::as_str)
        .unwrap_or("");
    if matches!(phase, "Succeeded" | "Failed") {
        return Err(ApiError::bad_request(format!(
            "cannot {} a container in a completed pod; current phase is {phase}",
            match opts.kind {
                Kind::Exec => "exec into",
                Kind::Attach => "attach to",
                Kind::PortForward => "forward a port of",
            }
        )));
    }
    if opts.kind == Kind::PortForward {
        if pod_obj
            .pointer("/spec/virtualMachine")
            .is_some_and(|v| !v.is_null())
        {
            return Err(ApiError::bad_request(format!(
                "pod \"{namespace}/{pod}\" runs a virtual machine: port-forward reaches containers' network namespaces (connect to the pod's address instead)"
            )));
        }
        if phase != "Running" {
            return Err(ApiError::bad_request(format!(
                "unable to forward port because pod is not running. Current status={phase}"
            )));
        }
        return Ok(());
    }
    let c = &opts.container;
    let runs_vm = pod_obj
        .pointer("/spec/virtualMachine")
        .is_some_and(|v| !v.is_null());
    if runs_vm {
        return Err(ApiError::bad_request(format!(
            "container {c:?} of pod \"{namespace}/{pod}\" runs a virtual machine: {} needs a container (use the VM's console log or its network)",
            opts.kind.as_str()
        )));
    }
    let state = ["containerStatuses", "initContainerStatuses"]
        .iter()
        .filter_map(|k| pod_obj.pointer(&format!("/status/{k}"))?.as_array())
        .flatten()
        .find(|s| s.get("name").and_then(Value::as_str) == Some(c))
        .and_then(|s| s.get("state"));
    if state.is_none_or(|s| s.get("running").is_none_or(Value::is_null)) {
        return Err(ApiError::bad_request(format!(
            "container {c:?} in pod \"{namespace}/{pod}\" is not running"
        )));
    }
    Ok(())
}

/// The errors recent stream requests got from their node's side, for a moment: kubectl retries
/// a WebSocket that was refused (for any reason) with SPDY, and shows the second answer, so the
/// retry is answered with the first error rather than with "not SPDY".
#[derive(Default)]
pub struct RecentErrors(
    std::sync::Mutex<std::collections::HashMap<String, (ApiError, std::time::Instant)>>,
);

/// How long an error is kept for the retry.
const RECENT: Duration = Duration::from_secs(10);
/// Most errors kept.
const RECENT_MAX: usize = 1024;

impl RecentErrors {
    /// The key of a request: its pod, container and command.
    pub fn key(t: &StreamTarget) -> String {
        format!(
            "{}/{}/{}/{}/{}\0{}",
            t.opts.kind.as_str(),
            t.tenant,
            t.namespace,
            t.pod,
            t.opts.container,
            t.opts.command.join("\0")
        )
    }

    /// Keep `e` for `key`'s retry.
    pub fn remember(&self, key: String, e: &ApiError) {
        let mut m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let now = std::time::Instant::now();
        m.retain(|_, (_, at)| now.duration_since(*at) < RECENT);
        if m.len() < RECENT_MAX {
            m.insert(key, (e.clone(), now));
        }
    }

    /// The error `key` got a moment ago, once.
    pub fn recall(&self, key: &str) -> Option<ApiError> {
        let mut m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        m.remove(key)
            .filter(|(_, at)| at.elapsed() < RECENT)
            .map(|(e, _)| e)
    }
}

/// Where a server opens container streams.
pub trait StreamSource: Send + Sync {
    /// Open the stream `target` asks for; errors are the `Status` kubectl shows.
    fn open(&self, target: StreamTarget) -> BoxFuture<'_, ApiResult<BoxPipe>>;

    /// Open it without going through another replica (a relayed request is never relayed
    /// again).
    fn open_here(&self, target: StreamTarget) -> BoxFuture<'_, ApiResult<BoxPipe>> {
        self.open(target)
    }
}

/// A WebSocket upgrade a client asked for: the `Sec-WebSocket-Accept` value and the chosen
/// subprotocol.
#[derive(Debug, PartialEq)]
pub struct Upgrade {
    /// `Sec-WebSocket-Accept`.
    pub accept: String,
    /// The subprotocol.
    pub protocol: &'static str,
}

fn has_token(headers: &HeaderMap, name: http::header::HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|v| {
        v.to_str()
            .unwrap_or("")
            .split(',')
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    })
}

/// The comma-separated tokens of every `name` header, trimmed, empty ones left out.
pub fn header_tokens(headers: &HeaderMap, name: &str) -> Vec<String> {
    headers
        .get_all(name)
        .iter()
        .flat_map(|v| {
            v.to_str()
                .unwrap_or("")
                .split(',')
                .map(|t| t.trim().to_string())
                .collect::<Vec<_>>()
        })
        .filter(|t| !t.is_empty())
        .collect()
}

/// The `Sec-WebSocket-Accept` of a WebSocket upgrade request (version 13, a key), or the 400.
pub fn websocket_accept(headers: &HeaderMap) -> ApiResult<String> {
    if headers
        .get("sec-websocket-version")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        != Some("13")
    {
        return Err(ApiError::bad_request(
            "unsupported WebSocket version (Sec-WebSocket-Version must be 13)",
        ));
    }
    let key = headers
        .get("sec-websocket-key")
        .map(|v| v.as_bytes())
        .filter(|k| !k.is_empty())
        .ok_or_else(|| ApiError::bad_request("missing Sec-WebSocket-Key"))?;
    Ok(tokio_tungstenite::tungstenite::handshake::derive_accept_key(key))
}

/// Check a WebSocket upgrade request and pick its subprotocol (the client's first one served).
/// A request that is no WebSocket upgrade (plain, or SPDY) is a 400 as kube-apiserver's
/// "Upgrade request required"; no common subprotocol is a 400 naming the ones served.
pub fn negotiate(headers: &HeaderMap) -> ApiResult<Upgrade> {
    use http::header::{CONNECTION, UPGRADE};
    if !has_token(headers, UPGRADE, "websocket") || !has_token(headers, CONNECTION, "upgrade") {
        let spdy = has_token(headers, UPGRADE, "SPDY/3.1");
        return Err(ApiError::bad_request(if spdy {
            "Upgrade request required: this server streams over WebSocket (v5.channel.k8s.io, v4.channel.k8s.io), not SPDY"
        } else {
            "Upgrade request required"
        }));
    }
    let accept = websocket_accept(headers)?;
    let offered = header_tokens(headers, "sec-websocket-protocol");
    let protocol = offered
        .iter()
        .find_map(|o| PROTOCOLS.iter().find(|p| **p == o.as_str()))
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "unsupported subprotocols {offered:?}: this server speaks {}",
                PROTOCOLS.join(", ")
            ))
        })?;
    Ok(Upgrade { accept, protocol })
}

/// The response headers of an accepted upgrade.
pub fn switching_headers(u: &Upgrade) -> HeaderMap {
    let mut h = HeaderMap::new();
    let mut put = |k: &'static str, v: &str| {
        if let Ok(v) = http::HeaderValue::from_str(v) {
            h.insert(k, v);
        }
    };
    put("connection", "Upgrade");
    put("upgrade", "websocket");
    put("sec-websocket-accept", &u.accept);
    put("sec-websocket-protocol", u.protocol);
    h
}

fn payload(channel: u8, data: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(data.len() + 1);
    b.put_u8(channel);
    b.put_slice(data);
    b.freeze()
}

/// Serve an upgraded client connection as a WebSocket bridged to `pipe`, until either ends.
pub async fn serve<S>(io: S, pipe: BoxPipe, protocol: &'static str)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut cfg = WebSocketConfig::default();
    cfg.max_message_size = Some(MAX_MESSAGE);
    cfg.max_frame_size = Some(MAX_MESSAGE);
    let ws = WebSocketStream::from_raw_socket(io, Role::Server, Some(cfg)).await;
    bridge(ws, pipe, protocol == PROTOCOLS[0]).await;
}

/// A pipe that holds something (a slot of a bounded pool) for as long as it lives.
struct Held {
    pipe: BoxPipe,
    _held: Box<dyn Send>,
}

/// `pipe`, keeping `held` until the pipe is dropped.
pub fn holding(pipe: BoxPipe, held: impl Send + 'static) -> BoxPipe {
    Box::new(Held {
        pipe,
        _held: Box::new(held),
    })
}

impl AsyncRead for Held {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut *self.pipe).poll_read(cx, buf)
    }
}

impl AsyncWrite for Held {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut *self.pipe).poll_write(cx, buf)
    }
    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut *self.pipe).poll_flush(cx)
    }
    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut *self.pipe).poll_shutdown(cx)
    }
}

/// Pass frames between a client's WebSocket and a node's pipe. The client's messages reach the
/// node only on the channels a client writes (stdin, resize, and with v5 close), cut to the
/// frame size; the node's frames reach the client as they are. The stream ends when the node
/// ends it (after its error-channel `Status`: the client gets a normal close) or the client
/// goes, stalls, or breaks the protocol (the node's side is dropped, which ends the process).
pub async fn bridge<S>(ws: WebSocketStream<S>, pipe: BoxPipe, v5: bool)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (r, w) = tokio::io::split(pipe);
    let mut from_node = FramedRead::new(r, codec());
    let mut to_node = FramedWrite::new(w, codec());
    let (mut to_client, mut from_client) = ws.split();
    let up = async {
        while let Some(m) = from_client.next().await {
            let b = match m {
                Ok(Message::Binary(b)) => b,
                // Some clients (the Python one) send text frames on the channel protocols.
                Ok(Message::Text(t)) => Bytes::from(t),
                Ok(Message::Close(_)) | Err(_) => return,
                Ok(_) => continue,
            };
            let Some((&ch, data)) = b.split_first() else {
                continue;
            };
            let ok = match ch {
                proto::stream::STDIN | proto::stream::RESIZE => true,
                proto::stream::CLOSE => v5 && data.len() == 1,
                _ => false,
            };
            if !ok {
                continue;
            }
            for part in data.chunks(proto::stream::MAX_DATA).chain(
                // A close (or an empty write) is one frame of its own.
                data.is_empty().then_some(&[][..]),
            ) {
                if to_node.send(payload(ch, part)).await.is_err() {
                    return;
                }
            }
        }
    };
    let down = async move {
        loop {
            match from_node.next().await {
                Some(Ok(f)) if !f.is_empty() => {
                    let send = to_client.send(Message::Binary(f.freeze()));
                    match tokio::time::timeout(STALL, send).await {
                        Ok(Ok(())) => {}
                        _ => return,
                    }
                }
                Some(Ok(_)) => {}
                None => {
                    let close = CloseFrame {
                        code: CloseCode::Normal,
                        reason: "".into(),
                    };
                    let _ = tokio::time::timeout(
                        Duration::from_secs(5),
                        to_client.send(Message::Close(Some(close))),
                    )
                    .await;
                    return;
                }
                Some(Err(e)) => {
                    tracing::info!(error = %e, "container stream broken");
                    let st =
                        proto::stream::failure(&format!("the stream from the node broke: {e}"));
                    let msg = payload(
                        proto::stream::ERROR,
                        &serde_json::to_vec(&st).unwrap_or_default(),
                    );
                    let _ = tokio::time::timeout(
                        Duration::from_secs(5),
                        to_client.send(Message::Binary(msg)),
                    )
                    .await;
                    return;
                }
            }
        }
    };
    // Whichever side ends first ends the stream; the other half is dropped with it.
    let node_ended = tokio::select! {
        _ = up => false,
        _ = down => true,
    };
    if node_ended {
        // The closing handshake: read what the client still sends (input nobody reads) until
        // it closes too, so closing the connection does not reset it before the client has
        // read the last frames.
        // (A generous bound: a client on a loaded machine may take seconds to answer.)
        let _ = tokio::time::timeout(Duration::from_secs(15), async {
            while let Some(Ok(m)) = from_client.next().await {
                if m.is_close() {
                    break;
                }
            }
        })
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.append(*k, v.parse().unwrap());
        }
        m
    }

    #[test]
    fn negotiation_picks_the_clients_first_served_protocol() {
        let base = [
            ("connection", "Upgrade"),
            ("upgrade", "websocket"),
            ("sec-websocket-version", "13"),
            ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ];
        let mut with = base.to_vec();
        with.push((
            "sec-websocket-protocol",
            "v5.channel.k8s.io, v4.channel.k8s.io",
        ));
        let u = negotiate(&h(&with)).unwrap();
        // RFC 6455's example key and answer.
        assert_eq!(u.accept, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
        assert_eq!(u.protocol, "v5.channel.k8s.io");
        let mut v4 = base.to_vec();
        v4.push(("sec-websocket-protocol", "v4.channel.k8s.io"));
        assert_eq!(negotiate(&h(&v4)).unwrap().protocol, "v4.channel.k8s.io");
        let mut old = base.to_vec();
        old.push(("sec-websocket-protocol", "base64.channel.k8s.io"));
        let e = negotiate(&h(&old)).unwrap_err();
        assert_eq!(e.code, 400);
        assert!(e.message.contains("v5.channel.k8s.io"), "{}", e.message);
        let e = negotiate(&h(&[])).unwrap_err();
        assert_eq!(e.message, "Upgrade request required");
        let e = negotiate(&h(&[("connection", "Upgrade"), ("upgrade", "SPDY/3.1")])).unwrap_err();
        assert!(e.message.contains("not SPDY"), "{}", e.message);
        let e = negotiate(&h(&base[..3])).unwrap_err();
        assert!(e.message.contains("Sec-WebSocket-Key"), "{}", e.message);
    }

    #[tokio::test]
    async fn the_bridge_passes_channels_and_ends_with_the_node() {
        use tokio::io::AsyncWriteExt;
        let (client_io, server_io) = tokio::io::duplex(1 << 16);
        let (node_io, mut agent) = tokio::io::duplex(1 << 16);
        let server = tokio::spawn(serve(server_io, Box::new(node_io), PROTOCOLS[0]));
        let mut client = WebSocketStream::from_raw_socket(client_io, Role::Client, None).await;
        // stdin, an unknown channel (dropped), a close of stdin.
        for m in [&[0u8, b'h', b'i'][..], &[9, 1], &[255, 0]] {
            client
                .send(Message::Binary(Bytes::copy_from_slice(m)))
                .await
                .unwrap();
        }
        let mut from_bridge = FramedRead::new(&mut agent, codec());
        assert_eq!(&from_bridge.next().await.unwrap().unwrap()[..], b"\x00hi");
        assert_eq!(&from_bridge.next().await.unwrap().unwrap()[..], b"\xff\x00");
        // The node answers on stdout and the error channel, then ends the stream.
        agent
            .write_all(&proto::stream::frame(proto::stream::STDOUT, b"out"))
            .await
            .unwrap();
        agent
            .write_all(&proto::stream::frame(proto::stream::ERROR, b"{}"))
            .await
            .unwrap();
        drop(agent);
        let mut got = Vec::new();
        while let Some(Ok(m)) = client.next().await {
            got.push(m);
        }
        assert_eq!(
            got[..2],
            [
                Message::Binary(Bytes::from_static(b"\x01out")),
                Message::Binary(Bytes::from_static(b"\x03{}"))
            ]
        );
        assert!(matches!(got.get(2), Some(Message::Close(Some(c))) if c.code == CloseCode::Normal));
        server.await.unwrap();
    }
}
