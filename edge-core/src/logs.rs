//! Pod logs and container streams at the site: the API's log and stream source (straight to
//! the node's agent, presenting the site's client certificate) and the server for log and
//! exec/attach requests the cloud tunnels over the sync connection (so `kubectl logs` and
//! `kubectl exec` at the cloud need no inbound port at the site).

use std::sync::{Arc, RwLock};
use std::time::Duration;

use apiserver::error::{ApiError, ApiResult};
use apiserver::logs::{AgentLogs, LogOptions, LogStream};
use proto::sync::{frame::Body, Frame, LogRequest, LogResponse};
use store::Store;
use tokio::sync::Semaphore;

use crate::Creds;

/// Most log streams the cloud may have open through this site at once.
pub const MAX_TUNNELS: usize = 32;
/// How long the cloud has to send its request on a new stream.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The log source of the site's API: the agents of its nodes, reached with the site's current
/// client certificate (a renewed certificate is used from the next request on).
pub fn source(store: Store, creds: Arc<RwLock<Creds>>) -> Arc<AgentLogs> {
    Arc::new(AgentLogs::new(
        store,
        Arc::new(move || {
            let c = creds
                .read()
                .map(|c| c.clone())
                .unwrap_or_else(|p| p.into_inner().clone());
            (c.client_cert.into_bytes(), c.client_key.into_bytes())
        }),
    ))
}

/// Answer the log and container-stream requests the cloud opens as streams on `conn`, until
/// the connection ends. Each kind has its own bounded pool; a stream over the bound is refused
/// with 503 (the cloud's client sees it), not queued.
pub async fn serve_tunnels(conn: quinn::Connection, store: Store, logs: Arc<AgentLogs>) {
    let log_slots = Arc::new(Semaphore::new(MAX_TUNNELS));
    let stream_slots = Arc::new(Semaphore::new(proto::stream::MAX_PER_SITE));
    while let Ok((send, recv)) = conn.accept_bi().await {
        let (store, logs) = (store.clone(), logs.clone());
        let (log_slots, stream_slots) = (log_slots.clone(), stream_slots.clone());
        tokio::spawn(async move {
            let (mut send, mut recv) = (send, recv);
            let first =
                tokio::time::timeout(REQUEST_TIMEOUT, sync::quic::read_frame(&mut recv)).await;
            match first {
                Ok(Ok(Some(Frame {
                    body: Some(Body::LogRequest(r)),
                }))) => match log_slots.try_acquire_owned() {
                    Ok(_permit) => tunnel(send, r, &store, &logs).await,
                    Err(_) => refuse(send, "too many log streams through this site").await,
                },
                Ok(Ok(Some(Frame {
                    body: Some(Body::UsageRequest(r)),
                }))) => match log_slots.try_acquire_owned() {
                    Ok(_permit) => usage_tunnel(send, r.max_bytes as usize, &logs).await,
                    Err(_) => refuse(send, "too many log streams through this site").await,
                },
                Ok(Ok(Some(Frame {
                    body: Some(Body::StreamRequest(r)),
                }))) => match stream_slots.try_acquire_owned() {
                    Ok(permit) => stream_tunnel(send, recv, r, &store, &logs, permit).await,
                    Err(_) => refuse(send, "too many container streams through this site").await,
                },
                _ => {
                    let _ = respond(&mut send, 400, "expected a log or stream request").await;
                    let _ = send.finish();
                }
            }
        });
    }
}

/// The cloud asked for the site's usage samples: those of every node the site reaches.
async fn usage_tunnel(mut send: quinn::SendStream, max: usize, logs: &AgentLogs) {
    use apiserver::usage::UsageSource;
    let samples = logs.nodes().await;
    let body = serde_json::to_vec(&samples).unwrap_or_default();
    if body.len() > max {
        let msg = format!(
            "the site's usage figures ({} bytes) exceed {max}",
            body.len()
        );
        let _ = respond(&mut send, 413, &msg).await;
        let _ = send.finish();
        return;
    }
    if respond(&mut send, 200, "").await.is_err() {
        return;
    }
    let _ = send.write_all(&body).await;
    let _ = send.finish();
}

async fn refuse(mut send: quinn::SendStream, why: &str) {
    let e = ApiError::unavailable(why);
    let _ = respond(&mut send, e.code, &e.message).await;
    let _ = send.finish();
}

/// A container stream the cloud asked for: checked against the local store like a log request,
/// opened at the node's agent, answered, and then spliced both ways until either side ends.
/// The cloud finishing or stopping its stream (its client went away) drops the agent's side,
/// which ends the process there.
async fn stream_tunnel(
    mut send: quinn::SendStream,
    recv: quinn::RecvStream,
    req: proto::sync::StreamRequest,
    store: &Store,
    logs: &AgentLogs,
    permit: tokio::sync::OwnedSemaphorePermit,
) {
    tracing::debug!(tenant = %req.tenant, namespace = %req.namespace, pod = %req.pod, container = %req.container, kind = %req.kind, "container stream from the cloud");
    let opened = async {
        let opts =
            apiserver::streams::StreamOptions::from_proto(&req).map_err(ApiError::bad_request)?;
        let target =
            apiserver::streams::resolve(store, &req.tenant, &req.namespace, &req.pod, opts)?;
        logs.open_stream(&target).await
    };
    let mut pipe = match opened.await {
        Ok(p) => p,
        Err(e) => {
            let _ = respond(&mut send, e.code, &e.message).await;
            let _ = send.finish();
            return;
        }
    };
    if respond(&mut send, 200, "").await.is_err() {
        return;
    }
    let stopped = send.stopped();
    let mut cloud = tokio::io::join(recv, send);
    tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut cloud, &mut pipe) => {}
        _ = stopped => {}
    }
    drop(permit);
}

async fn respond(send: &mut quinn::SendStream, code: u16, message: &str) -> Result<(), ()> {
    let f = Frame::new(Body::LogResponse(LogResponse {
        code: u32::from(code),
        message: message.to_string(),
    }));
    sync::quic::write_frame(send, &f).await.map_err(|_| ())
}

/// Open the stream a request asks for, after checking it against the local store: the pod must
/// be held here under that tenant and namespace (whatever the cloud thinks).
async fn open(req: &LogRequest, store: &Store, logs: &AgentLogs) -> ApiResult<Option<LogStream>> {
    let opts = LogOptions::from_proto(req)?;
    match apiserver::logs::resolve(store, &req.tenant, &req.namespace, &req.pod, opts)? {
        Some(target) => logs.fetch(&target).await.map(Some),
        None => Ok(None),
    }
}

async fn tunnel(mut send: quinn::SendStream, req: LogRequest, store: &Store, logs: &AgentLogs) {
    tracing::debug!(tenant = %req.tenant, namespace = %req.namespace, pod = %req.pod, container = %req.container, "log request from the cloud");
    let mut rx = match open(&req, store, logs).await {
        Ok(Some(rx)) => rx,
        Ok(None) => {
            let _ = respond(&mut send, 200, "").await;
            let _ = send.finish();
            return;
        }
        Err(e) => {
            let _ = respond(&mut send, e.code, &e.message).await;
            let _ = send.finish();
            return;
        }
    };
    if respond(&mut send, 200, "").await.is_err() {
        return;
    }
    // The cloud stops the stream when its client goes away: stop reading from the agent then
    // (dropping `rx` closes the agent connection).
    let stopped = send.stopped();
    tokio::pin!(stopped);
    loop {
        tokio::select! {
            chunk = rx.recv() => match chunk {
                Some(b) => {
                    if send.write_chunk(b).await.is_err() {
                        return;
                    }
                }
                None => {
                    let _ = send.finish();
                    return;
                }
            },
            _ = &mut stopped => return,
        }
    }
}
