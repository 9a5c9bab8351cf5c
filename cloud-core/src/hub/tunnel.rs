//! Log tunnels: `kubectl logs` at the cloud for a pod on an edge node, streamed through the
//! site's connection with limits on count, stalls and sizes.

use super::*;

impl Hub {
    /// Stream container logs from `site` over its live connection: a new stream carries the
    /// request; the site answers a `LogResponse` and then the bytes. What the site sends is
    /// bounded: one capped frame, then bytes passed on only as fast as the reader takes them
    /// (QUIC flow control holds the site back), and a reader that stalls drops the stream.
    pub async fn open_logs(
        &self,
        site: &str,
        req: proto::sync::LogRequest,
    ) -> apiserver::error::ApiResult<apiserver::logs::LogStream> {
        use apiserver::error::ApiError;
        let not_connected = || ApiError::unavailable(format!("site {site} is not connected"));
        let (conn, slots) = {
            let mut l = self.live.lock().map_err(|_| not_connected())?;
            let slots = l
                .tunnels
                .entry(site.to_string())
                .or_insert_with(|| Arc::new(tokio::sync::Semaphore::new(MAX_LOG_TUNNELS)))
                .clone();
            (l.newest(site).map(|i| i.conn.clone()), slots)
        };
        let conn = conn.ok_or_else(not_connected)?;
        let permit = slots.try_acquire_owned().map_err(|_| {
            ApiError::from_code(
                429,
                format!("too many log streams to site {site}; try again later"),
            )
        })?;
        let (mut send, mut recv) = tokio::time::timeout(Duration::from_secs(5), conn.open_bi())
            .await
            .map_err(|_| not_connected())?
            .map_err(|_| not_connected())?;
        quic::write_frame(&mut send, &Frame::new(Body::LogRequest(req)))
            .await
            .map_err(|_| not_connected())?;
        let _ = send.finish();
        let bad = |why: &str| {
            tracing::warn!(%site, reason = %why, "bad answer to a log request");
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
                    format!("site {site} did not answer the log request in time"),
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
            let code = u16::try_from(head.code).unwrap_or(502);
            return Err(ApiError::from_code(code, msg));
        }
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
}
