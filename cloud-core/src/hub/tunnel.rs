//! Tunnels: `kubectl logs` and `kubectl exec`/`attach` at the cloud for a pod on an edge node,
//! carried on a stream of the site's connection with limits on count, stalls and sizes.

use super::*;
use apiserver::error::{ApiError, ApiResult};

/// The bounded tunnel pools of one site.
pub(super) struct Pools {
    logs: Arc<tokio::sync::Semaphore>,
    streams: Arc<tokio::sync::Semaphore>,
}

impl Default for Pools {
    fn default() -> Self {
        Pools {
            logs: Arc::new(tokio::sync::Semaphore::new(MAX_LOG_TUNNELS)),
            streams: Arc::new(tokio::sync::Semaphore::new(MAX_STREAM_TUNNELS)),
        }
    }
}

#[derive(Clone, Copy)]
enum Pool {
    Logs,
    Streams,
}

impl Hub {
    /// Stream container logs from `site` over its live connection: a new stream carries the
    /// request; the site answers a `LogResponse` and then the bytes. What the site sends is
    /// bounded: one capped frame, then bytes passed on only as fast as the reader takes them
    /// (QUIC flow control holds the site back), and a reader that stalls drops the stream.
    pub async fn open_logs(
        &self,
        site: &str,
        req: proto::sync::LogRequest,
    ) -> ApiResult<apiserver::logs::LogStream> {
        let (permit, (_, mut recv)) = self
            .open_tunnel(site, Pool::Logs, Body::LogRequest(req), true)
            .await?;
        let (tx, rx) = mpsc::channel(proto::logs::STREAM_CHUNKS);
        let site = site.to_string();
        tokio::spawn(async move {
            let _permit = permit;
            loop {
                tokio::select! {
                    c = recv.read_chunk(64 * 1024, true) => match c {
                        Ok(Some(chunk)) => match tx.send_timeout(chunk.bytes, TUNNEL_STALL).await {
                            Ok(()) => {}
                            Err(mpsc::error::SendTimeoutError::Timeout(_)) => {
                                tracing::info!(%site, "log reader stalled; dropping the stream");
                                let _ = recv.stop(0u32.into());
                                return;
                            }
                            Err(mpsc::error::SendTimeoutError::Closed(_)) => {
                                let _ = recv.stop(0u32.into());
                                return;
                            }
                        },
                        // Finished, reset by the site, or the connection went away.
                        _ => return,
                    },
                    _ = tx.closed() => {
                        // The client went away: tell the site to stop.
                        let _ = recv.stop(0u32.into());
                        return;
                    }
                }
            }
        });
        Ok(rx)
    }

    /// The latest usage samples of `site`'s nodes, through its live connection: at most
    /// `proto::usage::MAX_STATS` bytes, within [`TUNNEL_ANSWER`]. Samples of nodes that are not
    /// the site's are dropped here (the site is not trusted to speak for other nodes).
    pub async fn open_usage(&self, site: &str) -> ApiResult<Vec<proto::usage::NodeUsage>> {
        let (_permit, (_, mut recv)) = self
            .open_tunnel(
                site,
                Pool::Logs,
                Body::UsageRequest(proto::sync::UsageRequest {
                    max_bytes: u32::try_from(proto::usage::MAX_STATS).unwrap_or(u32::MAX),
                }),
                true,
            )
            .await?;
        let body = tokio::time::timeout(TUNNEL_ANSWER, recv.read_to_end(proto::usage::MAX_STATS))
            .await
            .map_err(|_| ApiError::from_code(504, format!("site {site} did not answer in time")))?
            .map_err(|e| ApiError::from_code(502, format!("site {site}'s usage: {e}")))?;
        let samples: Vec<proto::usage::NodeUsage> = serde_json::from_slice(&body)
            .map_err(|e| ApiError::from_code(502, format!("site {site}'s usage: {e}")))?;
        let store = self.api.store.clone();
        Ok(samples
            .into_iter()
            .filter(|u| {
                store
                    .get(&store::Key::new("nodes", "", "", &u.node))
                    .and_then(|n| {
                        n.pointer("/metadata/labels")?
                            .get(SITE_LABEL)?
                            .as_str()
                            .map(|s| s == site)
                    })
                    .unwrap_or(false)
            })
            .collect())
    }

    /// Open a container stream (exec or attach) to `site`: the request on a new stream, the
    /// site's answer, and then the stream itself as the pipe of frames between the client's
    /// WebSocket and the node. QUIC flow control bounds what either side buffers, the bridge
    /// drops a client that stalls, and the pool's slot is held until the pipe is dropped.
    pub async fn open_stream(
        &self,
        site: &str,
        req: proto::sync::StreamRequest,
    ) -> ApiResult<apiserver::streams::BoxPipe> {
        let (permit, (send, recv)) = self
            .open_tunnel(site, Pool::Streams, Body::StreamRequest(req), false)
            .await?;
        let pipe: apiserver::streams::BoxPipe = Box::new(tokio::io::join(recv, send));
        Ok(apiserver::streams::holding(pipe, permit))
    }

    /// A slot of `site`'s `pool`, a new stream on its live connection carrying `body`, and the
    /// site's `LogResponse` to it (an error answer becomes the client's error). `finish` ends
    /// the sending side after the request (logs send nothing more).
    async fn open_tunnel(
        &self,
        site: &str,
        pool: Pool,
        body: Body,
        finish: bool,
    ) -> ApiResult<(
        tokio::sync::OwnedSemaphorePermit,
        (quinn::SendStream, quinn::RecvStream),
    )> {
        let not_connected = || ApiError::unavailable(format!("site {site} is not connected"));
        let (conn, slots) = {
            let mut l = self.live.lock().map_err(|_| not_connected())?;
            let pools = l.tunnels.entry(site.to_string()).or_default();
            let slots = match pool {
                Pool::Logs => pools.logs.clone(),
                Pool::Streams => pools.streams.clone(),
            };
            (l.newest(site).map(|i| i.conn.clone()), slots)
        };
        let conn = conn.ok_or_else(not_connected)?;
        let what = match pool {
            Pool::Logs => "log streams",
            Pool::Streams => "container streams",
        };
        let permit = slots.try_acquire_owned().map_err(|_| {
            ApiError::from_code(
                429,
                format!("too many {what} to site {site}; try again later"),
            )
        })?;
        let (mut send, mut recv) = tokio::time::timeout(Duration::from_secs(5), conn.open_bi())
            .await
            .map_err(|_| not_connected())?
            .map_err(|_| not_connected())?;
        quic::write_frame(&mut send, &Frame::new(body))
            .await
            .map_err(|_| not_connected())?;
        if finish {
            let _ = send.finish();
        }
        let bad = |why: &str| {
            tracing::warn!(%site, reason = %why, "bad answer to a tunnel request");
            ApiError::from_code(502, format!("site {site} gave no valid answer: {why}"))
        };
        let head = match tokio::time::timeout(TUNNEL_ANSWER, quic::read_frame(&mut recv)).await {
            Ok(Ok(Some(Frame {
                body: Some(Body::LogResponse(r)),
            }))) => r,
            Ok(Ok(Some(_))) => return Err(bad("unexpected frame")),
            Ok(Ok(None)) => return Err(bad("stream ended")),
            Ok(Err(e)) => return Err(bad(&e.to_string())),
            Err(_) => {
                let _ = recv.stop(0u32.into());
                return Err(ApiError::from_code(
                    504,
                    format!("site {site} did not answer in time"),
                ));
            }
        };
        if head.code != 200 {
            let _ = recv.stop(0u32.into());
            let mut msg = head.message;
            if msg.len() > MAX_SITE_MESSAGE {
                let mut cut = MAX_SITE_MESSAGE;
                while !msg.is_char_boundary(cut) {
                    cut -= 1;
                }
                msg.truncate(cut);
            }
            // Only codes a node may give: anything else from the site is its fault.
            let code = u16::try_from(head.code)
                .ok()
                .filter(|c| (400..600).contains(c))
                .unwrap_or(502);
            return Err(ApiError::from_code(code, msg));
        }
        Ok((permit, (send, recv)))
    }
}
