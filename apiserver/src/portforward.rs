//! `pods/portforward`: kubectl's port-forward, served as kube-apiserver and kubelet serve it.
//!
//! The client speaks SPDY/3.1 (`crate::spdy`) with the `portforward.k8s.io` stream protocol,
//! either over the upgraded connection itself (`Upgrade: SPDY/3.1`, the protocol named in
//! `X-Stream-Protocol-Version`) or tunnelled in the binary messages of a WebSocket whose
//! subprotocol is `SPDY/3.1+portforward.k8s.io` (kubectl 1.31 and later, falling back to the
//! first). Each local connection the client accepts becomes two streams sharing a `requestid`
//! header: `streamtype: error` (the server writes a failure's text and ends it) and
//! `streamtype: data` (the connection's bytes both ways), with the pod's `port`. Once both are
//! open the server opens a pipe to that port through its [`StreamSource`] (the node's agent,
//! or a site's tunnel) and passes the bytes, each direction's end as a FIN or a shutdown.
//!
//! Bounds: [`MAX_CONNECTIONS`] forwarded connections per session (more are refused with
//! RST_STREAM), a stream whose partner does not come within [`PAIR_TIMEOUT`] is reset, data
//! from the client is taken only as fast as the pod reads it (the session stops reading), and
//! the pod's bytes go out in frames of at most [`CHUNK`].

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::HeaderMap;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;
use tokio_util::codec::{FramedRead, FramedWrite};

use crate::error::{ApiError, ApiResult};
use crate::logs::BoxFuture;
use crate::spdy::{self, Frame};
use crate::streams::BoxPipe;

/// The stream protocol of port-forward.
pub const PROTOCOL: &str = "portforward.k8s.io";
/// The WebSocket subprotocol carrying SPDY (kubectl 1.31+).
pub const WS_PROTOCOL: &str = "SPDY/3.1+portforward.k8s.io";
/// Most forwarded connections open at once in one session.
pub const MAX_CONNECTIONS: usize = 128;
/// How long a stream waits for its partner (kubelet's stream creation timeout).
pub const PAIR_TIMEOUT: Duration = Duration::from_secs(30);
/// Most bytes of one data frame towards the client.
pub const CHUNK: usize = 32 * 1024;
/// Client data frames queued towards one pod connection before the session stops reading.
const QUEUE: usize = 8;
/// Frames queued towards the client before writers wait.
const OUT_QUEUE: usize = 64;

/// The older WebSocket protocols of port-forward (the Python client's): no SPDY; the ports
/// named in the query, channel `2i` carrying port `i`'s bytes and `2i+1` its error.
pub const CHANNEL_PROTOCOLS: [&str; 2] = ["v4.channel.k8s.io", "channel.k8s.io"];

/// How a port-forward request upgrades.
#[derive(Debug, PartialEq)]
pub enum Upgrade {
    /// SPDY/3.1 on the connection itself.
    Spdy,
    /// SPDY/3.1 in WebSocket binary messages; the `Sec-WebSocket-Accept` value.
    WebSocket(String),
    /// The channel protocol: the `Sec-WebSocket-Accept` value, the subprotocol, the ports.
    Channels(String, &'static str, Vec<u16>),
}

/// The `ports` of a request's query (repeated, or comma-separated), checked as kubelet checks
/// them.
pub fn query_ports(values: &[&str]) -> ApiResult<Vec<u16>> {
    let mut ports = Vec::new();
    for p in values.iter().flat_map(|v| v.split(',')) {
        let p = p.trim();
        let n: u16 = p.parse().ok().filter(|n| *n != 0).ok_or_else(|| {
            ApiError::bad_request(format!("unable to parse {p:?} as a port: must be 1-65535"))
        })?;
        if ports.contains(&n) {
            return Err(ApiError::bad_request(format!("port {n} is given twice")));
        }
        ports.push(n);
    }
    if ports.len() > MAX_CONNECTIONS {
        return Err(ApiError::bad_request(format!(
            "at most {MAX_CONNECTIONS} ports"
        )));
    }
    Ok(ports)
}

/// Check a port-forward upgrade request: a WebSocket offering [`WS_PROTOCOL`], or SPDY/3.1
/// offering [`PROTOCOL`]. Anything else is kube-apiserver's 400 (no upgrade) or 403 (no common
/// protocol, kubelet's text).
pub fn negotiate(headers: &HeaderMap, ports: &[&str]) -> ApiResult<Upgrade> {
    let has = |name: &str, token: &str| {
        crate::streams::header_tokens(headers, name)
            .iter()
            .any(|t| t.eq_ignore_ascii_case(token))
    };
    if !has("connection", "upgrade") {
        return Err(ApiError::bad_request("Upgrade request required"));
    }
    if has("upgrade", "websocket") {
        let offered = crate::streams::header_tokens(headers, "sec-websocket-protocol");
        let channels = offered
            .iter()
            .find_map(|o| CHANNEL_PROTOCOLS.iter().find(|p| **p == o.as_str()));
        if !offered.iter().any(|p| p == WS_PROTOCOL) && channels.is_none() {
            return Err(ApiError::from_code(
                403,
                format!(
                    "unable to upgrade: unable to negotiate protocol: client supports {offered:?}, server supports [{WS_PROTOCOL:?}, {:?}, {:?}]",
                    CHANNEL_PROTOCOLS[0],
                    CHANNEL_PROTOCOLS[1]
                ),
            ));
        }
        let accept = crate::streams::websocket_accept(headers)?;
        if offered.iter().any(|p| p == WS_PROTOCOL) {
            return Ok(Upgrade::WebSocket(accept));
        }
        let ports = query_ports(ports)?;
        if ports.is_empty() {
            return Err(ApiError::bad_request(
                "query parameter \"ports\" is required for a WebSocket port-forward",
            ));
        }
        return Ok(Upgrade::Channels(
            accept,
            channels.copied().unwrap_or(CHANNEL_PROTOCOLS[0]),
            ports,
        ));
    }
    if has("upgrade", "SPDY/3.1") {
        let offered = crate::streams::header_tokens(headers, "x-stream-protocol-version");
        if !offered.iter().any(|p| p == PROTOCOL) {
            return Err(ApiError::from_code(
                403,
                format!(
                    "unable to upgrade: unable to negotiate protocol: client supports {offered:?}, server accepts [{PROTOCOL:?}]"
                ),
            ));
        }
        return Ok(Upgrade::Spdy);
    }
    Err(ApiError::bad_request(
        "Upgrade request required: port-forward speaks SPDY/3.1, plain or in a WebSocket (SPDY/3.1+portforward.k8s.io)",
    ))
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
    match u {
        Upgrade::Spdy => {
            put("upgrade", "SPDY/3.1");
            put("x-stream-protocol-version", PROTOCOL);
        }
        Upgrade::WebSocket(accept) => {
            put("upgrade", "websocket");
            put("sec-websocket-accept", accept);
            put("sec-websocket-protocol", WS_PROTOCOL);
        }
        Upgrade::Channels(accept, protocol, _) => {
            put("upgrade", "websocket");
            put("sec-websocket-accept", accept);
            put("sec-websocket-protocol", protocol);
        }
    }
    h
}

/// Opens a pipe to a port of the pod a session is for.
pub type Opener = Arc<dyn Fn(u16) -> BoxFuture<'static, ApiResult<BoxPipe>> + Send + Sync>;

/// Serve an upgraded client connection as [`Upgrade`] says, until the client goes.
pub async fn serve<S>(io: S, upgrade: &Upgrade, open: Opener)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    match upgrade {
        Upgrade::Spdy => session(io, open).await,
        Upgrade::WebSocket(_) => {
            let mut cfg = WebSocketConfig::default();
            cfg.max_message_size = Some(spdy::MAX_FRAME + 64 * 1024);
            cfg.max_frame_size = Some(spdy::MAX_FRAME + 64 * 1024);
            let ws = WebSocketStream::from_raw_socket(io, Role::Server, Some(cfg)).await;
            let (inner, outer) = tokio::io::duplex(256 * 1024);
            tokio::join!(tunnel(ws, outer), session(inner, open));
        }
        Upgrade::Channels(_, _, ports) => {
            let mut cfg = WebSocketConfig::default();
            cfg.max_message_size = Some(spdy::MAX_FRAME);
            cfg.max_frame_size = Some(spdy::MAX_FRAME);
            let ws = WebSocketStream::from_raw_socket(io, Role::Server, Some(cfg)).await;
            channels(ws, ports, open).await;
        }
    }
}

/// The channel protocol: one connection per port, opened at once. Each channel first carries
/// its port (2 bytes, little-endian); then `2i` carries port `i`'s bytes both ways and `2i+1`
/// a failure's text. The session ends when every pod connection has ended (the client is
/// closed normally) or the client goes (every pipe is dropped).
async fn channels<S>(ws: WebSocketStream<S>, ports: &[u16], open: Opener)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut to_client, mut from_client) = ws.split();
    let (out, mut out_rx) = mpsc::channel::<Bytes>(OUT_QUEUE);
    let framed = |ch: usize, data: &[u8]| {
        let mut b = Vec::with_capacity(data.len() + 1);
        b.push(u8::try_from(ch).unwrap_or(u8::MAX));
        b.extend_from_slice(data);
        Bytes::from(b)
    };
    let mut to_pods = Vec::new();
    let mut tasks = tokio::task::JoinSet::new();
    for (i, &port) in ports.iter().enumerate() {
        let (tx, rx) = mpsc::channel::<Bytes>(QUEUE);
        to_pods.push(tx);
        let (out, open) = (out.clone(), open.clone());
        let (data_ch, err_ch) = (2 * i, 2 * i + 1);
        tasks.spawn(async move {
            for ch in [data_ch, err_ch] {
                let _ = out.send(framed(ch, &port.to_le_bytes())).await;
            }
            let pipe = match open(port).await {
                Ok(p) => p,
                Err(e) => {
                    let _ = out.send(framed(err_ch, e.message.as_bytes())).await;
                    return;
                }
            };
            let to_client = |data: Bytes| {
                let out = out.clone();
                async move { out.send(framed(data_ch, &data)).await.is_ok() }
            };
            splice(pipe, rx, to_client).await;
        });
    }
    drop(out);
    let writer = async {
        while let Some(b) = out_rx.recv().await {
            let send = to_client.send(Message::Binary(b));
            if !matches!(
                tokio::time::timeout(crate::streams::STALL, send).await,
                Ok(Ok(()))
            ) {
                return;
            }
        }
        // Every pod connection ended: close normally.
        let _ = tokio::time::timeout(Duration::from_secs(5), to_client.close()).await;
    };
    let reader = async {
        while let Some(Ok(m)) = from_client.next().await {
            let b = match m {
                Message::Binary(b) => b,
                Message::Close(_) => return,
                _ => continue,
            };
            let Some((&ch, data)) = b.split_first() else {
                continue;
            };
            let ch = usize::from(ch);
            // Only data channels are written by a client; a pod that does not read holds
            // the client back.
            if ch % 2 == 0 && !data.is_empty() {
                if let Some(tx) = to_pods.get(ch / 2) {
                    let _ = tx.send(b.slice(1..)).await;
                }
            }
        }
    };
    let all_done = async { while tasks.join_next().await.is_some() {} };
    tokio::select! {
        _ = async { tokio::join!(writer, all_done) } => {}
        _ = reader => {}
    }
}

/// The bytes of a WebSocket's binary messages, both ways, through `pipe` (kubectl's tunnelling
/// connection: each write is one message; reads take messages' payloads in order).
async fn tunnel<S>(ws: WebSocketStream<S>, pipe: tokio::io::DuplexStream)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut to_client, mut from_client) = ws.split();
    let (mut r, mut w) = tokio::io::split(pipe);
    let up = async {
        while let Some(Ok(m)) = from_client.next().await {
            let go_on = match m {
                Message::Binary(b) => w.write_all(&b).await.is_ok(),
                Message::Close(_) => false,
                _ => true,
            };
            if !go_on {
                break;
            }
        }
        let _ = w.shutdown().await;
    };
    let down = async {
        let mut buf = vec![0u8; CHUNK + 64];
        loop {
            match r.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let m = Message::Binary(Bytes::copy_from_slice(&buf[..n]));
                    if tokio::time::timeout(crate::streams::STALL, to_client.send(m))
                        .await
                        .map_or(true, |r| r.is_err())
                    {
                        return;
                    }
                }
            }
        }
        let _ = tokio::time::timeout(Duration::from_secs(5), to_client.close()).await;
    };
    // The session ends the pipe when the client's side ends, or on its own (a protocol
    // error): either way both halves end here.
    tokio::select! {
        _ = up => {}
        _ = down => {}
    }
}

/// Pass bytes between a pod connection and its client: what the client sends, until its end
/// (then the pod's input is shut: a half-close), and what the pod sends, in chunks of at most
/// [`CHUNK`], to `to_client` (false: the client is gone). Returns once the pod's side has
/// ended or the client is gone.
async fn splice<F, Fut>(pipe: BoxPipe, mut from_client: mpsc::Receiver<Bytes>, mut to_client: F)
where
    F: FnMut(Bytes) -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let (mut pr, mut pw) = tokio::io::split(pipe);
    let up = async {
        while let Some(b) = from_client.recv().await {
            if pw.write_all(&b).await.is_err() {
                break;
            }
        }
        let _ = pw.shutdown().await;
        // The other direction decides when the connection is over.
        std::future::pending::<()>().await
    };
    let down = async {
        let mut buf = vec![0u8; CHUNK];
        while let Ok(n @ 1..) = pr.read(&mut buf).await {
            if !to_client(Bytes::copy_from_slice(&buf[..n])).await {
                return;
            }
        }
    };
    tokio::select! {
        _ = down => {}
        _ = up => {}
    }
}

/// A stream waiting for its partner.
struct Half {
    id: u32,
    port: u16,
    at: Instant,
}

#[derive(Default)]
struct Pair {
    error: Option<Half>,
    data: Option<Half>,
}

/// A forwarded connection's entry: its data stream's queue towards the pod, and its task.
struct Conn {
    request: String,
    error_id: u32,
    to_pod: Option<mpsc::Sender<Bytes>>,
    /// Ends the connection (the client reset a stream of it).
    cancel: tokio_util::sync::CancellationToken,
}

/// One SPDY session: the streams the client opens, paired into forwarded connections.
async fn session<S>(io: S, open: Opener)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (r, w) = tokio::io::split(io);
    let mut frames = FramedRead::new(r, spdy::Reader::default());
    let (out, mut out_rx) = mpsc::channel::<Frame>(OUT_QUEUE);
    let writer = tokio::spawn(async move {
        let mut sink = FramedWrite::new(w, spdy::Writer::default());
        while let Some(f) = out_rx.recv().await {
            let send = sink.send(f);
            match tokio::time::timeout(crate::streams::STALL, send).await {
                Ok(Ok(())) => {}
                _ => return,
            }
        }
        let _ = sink.close().await;
    });
    let mut pending: HashMap<String, Pair> = HashMap::new();
    // By data stream id.
    let mut conns: HashMap<u32, Conn> = HashMap::new();
    let mut tasks = tokio::task::JoinSet::new();
    let mut last_id = 0u32;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<u32>();
    loop {
        let f = tokio::select! {
            f = frames.next() => f,
            _ = tick.tick() => {
                let now = Instant::now();
                pending.retain(|_, p| {
                    let old = [&p.error, &p.data]
                        .into_iter()
                        .flatten()
                        .any(|h| now.duration_since(h.at) > PAIR_TIMEOUT);
                    if old {
                        for h in [&p.error, &p.data].into_iter().flatten() {
                            let _ = out.try_send(Frame::RstStream { id: h.id, status: spdy::CANCEL });
                        }
                    }
                    !old
                });
                continue;
            }
            Some(id) = done_rx.recv() => {
                conns.remove(&id);
                continue;
            }
            Some(_) = tasks.join_next(), if !tasks.is_empty() => continue,
        };
        let f = match f {
            Some(Ok(f)) => f,
            Some(Err(spdy::SpdyError::Io(e))) => {
                tracing::debug!(error = %e, "port-forward session: the client's connection ended");
                break;
            }
            Some(Err(e)) => {
                tracing::info!(error = %e, "port-forward session: bad input from the client");
                let _ = out.try_send(Frame::GoAway {
                    last_good: last_id,
                    status: spdy::PROTOCOL_ERROR,
                });
                break;
            }
            None => break,
        };
        match f {
            Frame::SynStream { id, headers, .. } => {
                if id % 2 == 0 || id <= last_id {
                    let _ = out
                        .send(Frame::GoAway {
                            last_good: last_id,
                            status: spdy::PROTOCOL_ERROR,
                        })
                        .await;
                    break;
                }
                last_id = id;
                let get = |k: &str| {
                    headers
                        .iter()
                        .find(|(n, _)| n == k)
                        .map(|(_, v)| v.as_str())
                };
                let port = get("port")
                    .and_then(|p| p.parse::<u16>().ok())
                    .filter(|p| *p != 0);
                let kind = get("streamtype");
                let request = get("requestid").unwrap_or("").to_string();
                let (Some(port), Some(kind @ ("error" | "data"))) = (port, kind) else {
                    // kubelet refuses such a stream; the session goes on.
                    let _ = out
                        .send(Frame::RstStream {
                            id,
                            status: spdy::PROTOCOL_ERROR,
                        })
                        .await;
                    continue;
                };
                if conns.len() + pending.len() >= MAX_CONNECTIONS && !pending.contains_key(&request)
                {
                    let _ = out
                        .send(Frame::RstStream {
                            id,
                            status: spdy::REFUSED_STREAM,
                        })
                        .await;
                    continue;
                }
                let _ = out
                    .send(Frame::SynReply {
                        id,
                        fin: false,
                        headers: Vec::new(),
                    })
                    .await;
                let pair = pending.entry(request.clone()).or_default();
                let half = Half {
                    id,
                    port,
                    at: Instant::now(),
                };
                let slot = if kind == "error" {
                    &mut pair.error
                } else {
                    &mut pair.data
                };
                if slot.is_some() {
                    let _ = out
                        .send(Frame::RstStream {
                            id,
                            status: spdy::PROTOCOL_ERROR,
                        })
                        .await;
                    continue;
                }
                *slot = Some(half);
                if let (Some(_), Some(_)) = (&pair.error, &pair.data) {
                    let Some(Pair {
                        error: Some(e),
                        data: Some(d),
                    }) = pending.remove(&request)
                    else {
                        continue;
                    };
                    let (to_pod, from_client) = mpsc::channel(QUEUE);
                    let done = done_tx.clone();
                    let cancel = tokio_util::sync::CancellationToken::new();
                    let link = Link {
                        data_id: d.id,
                        error_id: e.id,
                        out: out.clone(),
                        done,
                        cancel: cancel.clone(),
                    };
                    tasks.spawn(forward(open.clone(), d.port, from_client, link));
                    conns.insert(
                        d.id,
                        Conn {
                            request,
                            error_id: e.id,
                            to_pod: Some(to_pod),
                            cancel,
                        },
                    );
                }
            }
            Frame::Data { id, fin, data } => {
                let Some(c) = conns.get_mut(&id) else {
                    // The error stream (the client writes nothing there), or a stream gone.
                    continue;
                };
                if !data.is_empty() {
                    if let Some(tx) = &c.to_pod {
                        // Waits while the pod is not reading: the client is held back.
                        if tx.send(data).await.is_err() {
                            c.to_pod = None;
                        }
                    }
                }
                if fin {
                    c.to_pod = None;
                }
            }
            Frame::RstStream { id, .. } => {
                let gone = conns
                    .iter()
                    .find(|(d, c)| **d == id || c.error_id == id)
                    .map(|(d, _)| *d);
                if let Some(c) = gone.and_then(|d| conns.get_mut(&d)) {
                    tracing::debug!(request = %c.request, "port-forward stream reset by the client");
                    c.to_pod = None;
                    c.cancel.cancel();
                }
                pending.retain(|_, p| {
                    ![&p.error, &p.data]
                        .into_iter()
                        .flatten()
                        .any(|h| h.id == id)
                });
            }
            Frame::Ping(n) => {
                let _ = out.send(Frame::Ping(n)).await;
            }
            Frame::GoAway { .. } => break,
            Frame::SynReply { .. } | Frame::Ignored => {}
        }
    }
    // The client went: every forwarded connection ends with it (their pipes are dropped).
    tasks.abort_all();
    drop(conns);
    drop(out);
    let _ = tokio::time::timeout(Duration::from_secs(5), writer).await;
}

/// One forwarded connection: the pipe to the pod's port, then bytes both ways; a failure to
/// open is the error stream's text.
/// A forwarded connection's place in its session.
struct Link {
    data_id: u32,
    error_id: u32,
    /// Frames towards the client.
    out: mpsc::Sender<Frame>,
    /// Told the data stream id when the connection is over.
    done: mpsc::UnboundedSender<u32>,
    cancel: tokio_util::sync::CancellationToken,
}

async fn forward(open: Opener, port: u16, from_client: mpsc::Receiver<Bytes>, link: Link) {
    let Link {
        data_id,
        error_id,
        out,
        done,
        cancel,
    } = link;
    let end = |id: u32| Frame::Data {
        id,
        fin: true,
        data: Bytes::new(),
    };
    let pipe = match open(port).await {
        Ok(p) => p,
        Err(e) => {
            tracing::debug!(port, error = %e.message, "port-forward connection refused");
            let _ = out
                .send(Frame::Data {
                    id: error_id,
                    fin: true,
                    data: Bytes::from(e.message.into_bytes()),
                })
                .await;
            let _ = out.send(end(data_id)).await;
            let _ = done.send(data_id);
            return;
        }
    };
    // As kubelet: the pod's end of the connection ends it (the client's end only half-closes
    // it), and so does the client resetting the data stream; the error stream's FIN follows
    // either way, which is what the client waits for.
    let to_client = |data: Bytes| {
        let out = out.clone();
        async move {
            let f = Frame::Data {
                id: data_id,
                fin: false,
                data,
            };
            out.send(f).await.is_ok()
        }
    };
    tokio::select! {
        _ = splice(pipe, from_client, to_client) => {
            let _ = out.send(end(data_id)).await;
        }
        _ = cancel.cancelled() => {}
    }
    let _ = out.send(end(error_id)).await;
    let _ = done.send(data_id);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spdy::{Reader, Writer};

    fn h(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.append(*k, v.parse().unwrap());
        }
        m
    }

    #[test]
    fn negotiation_takes_spdy_plain_or_in_a_websocket() {
        let spdy = h(&[
            ("connection", "Upgrade"),
            ("upgrade", "SPDY/3.1"),
            ("x-stream-protocol-version", "portforward.k8s.io"),
        ]);
        assert_eq!(negotiate(&spdy, &[]).unwrap(), Upgrade::Spdy);
        let ws = h(&[
            ("connection", "Upgrade"),
            ("upgrade", "websocket"),
            ("sec-websocket-version", "13"),
            ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
            ("sec-websocket-protocol", "SPDY/3.1+portforward.k8s.io"),
        ]);
        assert_eq!(
            negotiate(&ws, &[]).unwrap(),
            Upgrade::WebSocket("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=".into())
        );
        let other = h(&[
            ("connection", "Upgrade"),
            ("upgrade", "SPDY/3.1"),
            ("x-stream-protocol-version", "v4.channel.k8s.io"),
        ]);
        assert_eq!(negotiate(&other, &[]).unwrap_err().code, 403);
        // The channel protocol (the Python client's), with the ports in the query.
        let v4 = h(&[
            ("connection", "Upgrade"),
            ("upgrade", "websocket"),
            ("sec-websocket-version", "13"),
            ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
            ("sec-websocket-protocol", "v4.channel.k8s.io"),
        ]);
        assert_eq!(
            negotiate(&v4, &["8080,9000"]).unwrap(),
            Upgrade::Channels(
                "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=".into(),
                "v4.channel.k8s.io",
                vec![8080, 9000]
            )
        );
        assert_eq!(negotiate(&v4, &[]).unwrap_err().code, 400);
        for bad in [&["0"][..], &["80,80"], &["http"], &["70000"]] {
            assert_eq!(negotiate(&v4, bad).unwrap_err().code, 400, "{bad:?}");
        }
        assert_eq!(negotiate(&h(&[]), &[]).unwrap_err().code, 400);
    }

    /// A client session over a duplex, against `session` with an opener reaching `target`.
    async fn client(
        open: Opener,
    ) -> (
        FramedRead<tokio::io::ReadHalf<tokio::io::DuplexStream>, Reader>,
        FramedWrite<tokio::io::WriteHalf<tokio::io::DuplexStream>, Writer>,
        tokio::task::JoinHandle<()>,
    ) {
        let (a, b) = tokio::io::duplex(1 << 20);
        let server = tokio::spawn(session(b, open));
        let (r, w) = tokio::io::split(a);
        (
            FramedRead::new(r, Reader::default()),
            FramedWrite::new(w, Writer::default()),
            server,
        )
    }

    fn syn(id: u32, kind: &str, port: u16, request: &str) -> Frame {
        Frame::SynStream {
            id,
            fin: false,
            headers: vec![
                ("streamtype".into(), kind.into()),
                ("port".into(), port.to_string()),
                ("requestid".into(), request.into()),
            ],
        }
    }

    #[tokio::test]
    async fn connections_are_paired_forwarded_and_ended_with_fins() {
        // The "pod": an echo server that upper-cases what it gets, until its input ends.
        let open: Opener = Arc::new(|port| {
            Box::pin(async move {
                if port != 80 {
                    return Err(ApiError::from_code(502, format!("port {port} is closed")));
                }
                let (ours, theirs) = tokio::io::duplex(1 << 16);
                tokio::spawn(async move {
                    let (mut r, mut w) = tokio::io::split(theirs);
                    let mut all = Vec::new();
                    r.read_to_end(&mut all).await.unwrap();
                    w.write_all(&all.to_ascii_uppercase()).await.unwrap();
                    w.shutdown().await.unwrap();
                });
                Ok(Box::new(ours) as BoxPipe)
            })
        });
        let (mut rx, mut tx, server) = client(open).await;
        tx.send(syn(1, "error", 80, "0")).await.unwrap();
        tx.send(syn(3, "data", 80, "0")).await.unwrap();
        tx.send(syn(5, "error", 81, "1")).await.unwrap();
        tx.send(syn(7, "data", 81, "1")).await.unwrap();
        for d in [&b"hello "[..], b"world"] {
            tx.send(Frame::Data {
                id: 3,
                fin: false,
                data: Bytes::copy_from_slice(d),
            })
            .await
            .unwrap();
        }
        tx.send(Frame::Data {
            id: 3,
            fin: true,
            data: Bytes::new(),
        })
        .await
        .unwrap();
        tx.send(Frame::Ping(2)).await.unwrap();
        let mut data = Vec::new();
        let (mut fins, mut errors, mut replies, mut pong) = (Vec::new(), Vec::new(), 0, false);
        while fins.len() < 4 || !pong {
            match rx.next().await.unwrap().unwrap() {
                Frame::SynReply { .. } => replies += 1,
                Frame::Data {
                    id: 3,
                    data: d,
                    fin,
                } => {
                    data.extend_from_slice(&d);
                    if fin {
                        fins.push(3)
                    }
                }
                Frame::Data { id, data: d, fin } => {
                    if !d.is_empty() {
                        errors.push((id, String::from_utf8(d.to_vec()).unwrap()))
                    }
                    if fin {
                        fins.push(id)
                    }
                }
                Frame::Ping(2) => pong = true,
                f => panic!("unexpected {f:?}"),
            }
        }
        assert_eq!(replies, 4);
        assert_eq!(data, b"HELLO WORLD");
        assert_eq!(errors, vec![(5, "port 81 is closed".to_string())]);
        fins.sort();
        assert_eq!(fins, vec![1, 3, 5, 7]);
        // A stream id going backwards is a protocol error: GOAWAY, and the session ends.
        tx.send(syn(3, "data", 80, "2")).await.unwrap();
        assert!(matches!(
            rx.next().await.unwrap().unwrap(),
            Frame::GoAway {
                status: spdy::PROTOCOL_ERROR,
                ..
            }
        ));
        server.await.unwrap();
    }

    #[tokio::test]
    async fn a_reset_data_stream_still_ends_the_error_stream() {
        // kubectl resets the data stream once the pod's side ended, then waits for the error
        // stream's end; a pod that never ends its side is cut by the reset too.
        let open: Opener = Arc::new(|_| {
            Box::pin(async move {
                let (ours, theirs) = tokio::io::duplex(1 << 16);
                tokio::spawn(async move {
                    let _keep = theirs;
                    std::future::pending::<()>().await
                });
                Ok(Box::new(ours) as BoxPipe)
            })
        });
        let (mut rx, mut tx, _server) = client(open).await;
        tx.send(syn(1, "error", 80, "0")).await.unwrap();
        tx.send(syn(3, "data", 80, "0")).await.unwrap();
        for id in [1, 3] {
            assert!(
                matches!(rx.next().await.unwrap().unwrap(), Frame::SynReply { id: i, .. } if i == id)
            );
        }
        tx.send(Frame::RstStream {
            id: 3,
            status: spdy::CANCEL,
        })
        .await
        .unwrap();
        let f = tokio::time::timeout(Duration::from_secs(10), rx.next())
            .await
            .unwrap();
        assert_eq!(
            f.unwrap().unwrap(),
            Frame::Data {
                id: 1,
                fin: true,
                data: Bytes::new()
            }
        );
    }

    #[tokio::test]
    async fn a_client_that_goes_away_drops_every_pipe() {
        let (dropped_tx, mut dropped) = mpsc::unbounded_channel();
        let open: Opener = Arc::new(move |_| {
            let dropped_tx = dropped_tx.clone();
            Box::pin(async move {
                let (ours, mut theirs) = tokio::io::duplex(1 << 16);
                tokio::spawn(async move {
                    let mut b = [0u8; 16];
                    // Ends when the session drops its end.
                    while theirs.read(&mut b).await.is_ok_and(|n| n > 0) {}
                    let _ = dropped_tx.send(());
                });
                Ok(Box::new(ours) as BoxPipe)
            })
        });
        let (mut rx, mut tx, server) = client(open).await;
        tx.send(syn(1, "error", 80, "0")).await.unwrap();
        tx.send(syn(3, "data", 80, "0")).await.unwrap();
        tx.send(Frame::Data {
            id: 3,
            fin: false,
            data: Bytes::from_static(b"x"),
        })
        .await
        .unwrap();
        assert!(matches!(
            rx.next().await.unwrap().unwrap(),
            Frame::SynReply { id: 1, .. }
        ));
        drop(tx);
        drop(rx);
        tokio::time::timeout(Duration::from_secs(10), dropped.recv())
            .await
            .unwrap()
            .unwrap();
        tokio::time::timeout(Duration::from_secs(10), server)
            .await
            .unwrap()
            .unwrap();
    }
}
