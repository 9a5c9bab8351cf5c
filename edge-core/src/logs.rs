//! Pod logs at the site: the API's log source (straight to the node's agent, presenting the
//! site's client certificate) and the server for log requests the cloud tunnels over the sync
//! connection (so `kubectl logs` at the cloud needs no inbound port at the site).

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

/// Answer the log requests the cloud opens as streams on `conn`, until the connection ends.
pub async fn serve_tunnels(conn: quinn::Connection, store: Store, logs: Arc<AgentLogs>) {
    let slots = Arc::new(Semaphore::new(MAX_TUNNELS));
    while let Ok((send, recv)) = conn.accept_bi().await {
        let (store, logs) = (store.clone(), logs.clone());
        let permit = slots.clone().try_acquire_owned();
        tokio::spawn(async move {
            match permit {
                Ok(_permit) => tunnel(send, recv, &store, &logs).await,
                Err(_) => {
                    let mut send = send;
                    let e = ApiError::unavailable("too many log streams through this site");
                    let _ = respond(&mut send, e.code, &e.message).await;
                    let _ = send.finish();
                }
            }
        });
    }
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

async fn tunnel(
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    store: &Store,
    logs: &AgentLogs,
) {
    let req = match tokio::time::timeout(REQUEST_TIMEOUT, sync::quic::read_frame(&mut recv)).await {
        Ok(Ok(Some(Frame {
            body: Some(Body::LogRequest(r)),
        }))) => r,
        _ => {
            let _ = respond(&mut send, 400, "expected a log request").await;
            let _ = send.finish();
            return;
        }
    };
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
