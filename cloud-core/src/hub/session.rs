//! A site's sync session: its share streamed down from where the site stands, its uplink
//! applied and acknowledged, and the end of sessions whose site or certificate is gone.

use super::*;

impl Hub {
    /// End every live session of `site` (its EdgeSite was deleted).
    pub(super) fn end_sessions(&self, why: &str, pred: impl Fn(&SessionInfo) -> bool) {
        if let Ok(l) = self.live.lock() {
            for info in l.sessions.values().filter(|i| pred(i)) {
                tracing::warn!(site = %info.site, reason = %why, "ending the site's sync session");
                info.cancel.cancel();
            }
        }
    }

    /// Follow EdgeSite deletions: the site's sessions end at once (its certificate records go
    /// in the same transaction as the EdgeSite, see [`crate::hooks`]).
    pub(super) async fn follow_deletions(self: Arc<Self>, cancel: CancellationToken) {
        loop {
            let (_, _, mut live) = self
                .store
                .list_and_watch(&store::Scope::of(EDGESITES, Some("")));
            // Anything deleted while this watch was not running.
            let sites: std::collections::HashSet<String> = self
                .store
                .list_of(EDGESITES, Some(""))
                .iter()
                .map(|(k, _)| k.name.clone())
                .collect();
            self.end_sessions("its edge site was deleted", |i| !sites.contains(&i.site));
            loop {
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    ev = live.recv() => match ev {
                        Ok(e) if e.kind == EventType::Deleted && e.key.resource == EDGESITES => {
                            let site = e.key.name.clone();
                            tracing::info!(%site, "edge site deleted: its certificates are revoked");
                            self.end_sessions("its edge site was deleted", |i| i.site == site);
                        }
                        Ok(_) => {}
                        Err(_) => break,
                    },
                }
            }
        }
    }

    pub(super) fn up_applied(&self, site: &str) -> u64 {
        self.store
            .get(&Key::new(SITE_SEQ, "", "", site))
            .and_then(|v| v.get("seq").and_then(Value::as_u64))
            .unwrap_or(0)
    }

    pub(super) async fn session(
        self: Arc<Self>,
        conn: quinn::Connection,
        mut send: quinn::SendStream,
        mut recv: quinn::RecvStream,
        site: String,
        fingerprint: String,
        hello: proto::sync::Hello,
    ) -> Result<(), String> {
        let now = || tokio::time::Instant::now().into_std();
        let ended = CancellationToken::new();
        let mut s = HubSession::new(self.cfg.clone(), &site, self.up_applied(&site), now());
        s.handle(Frame::new(Body::Hello(hello)), now());
        // Frames are read on their own task: reads are not cancel-safe inside select!.
        let (ftx, mut frx) = mpsc::channel::<Frame>(256);
        let reader = tokio::spawn(async move {
            while let Ok(Some(f)) = quic::read_frame(&mut recv).await {
                if ftx.send(f).await.is_err() {
                    break;
                }
            }
        });
        let mut log: Option<Arc<SiteLog>> = None;
        self.live
            .lock()
            .map(|mut l| {
                l.sessions.insert(
                    conn.stable_id(),
                    SessionInfo {
                        site: site.clone(),
                        fingerprint: fingerprint.clone(),
                        cancel: ended.clone(),
                        conn: conn.clone(),
                        acked_rv: 0,
                        started: std::time::Instant::now(),
                    },
                );
            })
            .ok();
        self.update_status().await;
        self.metrics.connected(&site, true);
        tracing::info!(%site, remote = %conn.remote_address(), "site connected");
        self.retire_predecessors(&site, &fingerprint).await;
        let result = 'session: loop {
            while let Some(f) = s.poll_transmit(now()) {
                if let Err(e) = quic::write_frame(&mut send, &f).await {
                    break 'session format!("write failed: {e}");
                }
            }
            let mut closed = None;
            let mut actions: VecDeque<HubAction> = std::iter::from_fn(|| s.poll_action()).collect();
            let acted = !actions.is_empty();
            while let Some(a) = actions.pop_front() {
                match a {
                    HubAction::Hello { applied_rv } => {
                        s.set_recent_refused(self.recent_refusals(&site));
                        match self.shares.subscribe(&site, applied_rv).await {
                            Some((Start::Resume, rx)) => {
                                s.resume(applied_rv, now());
                                log = Some(rx);
                            }
                            Some((Start::Snapshot(rv, changes), rx)) => {
                                tracing::info!(%site, applied_rv, rv, objects = changes.len(), "sending snapshot");
                                s.snapshot(rv, changes, now());
                                log = Some(rx);
                            }
                            None => closed = Some("hub shutting down".to_string()),
                        }
                    }
                    HubAction::ApplyUp(first) => {
                        // Consecutive uplink changes are applied together (see apply_ups).
                        let mut batch = vec![first];
                        while matches!(actions.front(), Some(HubAction::ApplyUp(_))) {
                            if let Some(HubAction::ApplyUp(u)) = actions.pop_front() {
                                batch.push(u);
                            }
                        }
                        let last = batch.last().map_or(0, |u| u.seq);
                        let n = batch.len();
                        match self.apply_ups(&site, batch).await {
                            Ok(refused) => {
                                self.metrics.uplink(
                                    &site,
                                    n.saturating_sub(refused.len()),
                                    refused.len(),
                                );
                                let refused = refused
                                    .into_iter()
                                    .map(|r| {
                                        let key = r.key.unwrap_or_default();
                                        self.refusal(&site, r.seq, key, r.reason)
                                    })
                                    .collect();
                                s.up_applied(last, refused);
                            }
                            Err(e) => {
                                closed = Some(format!("applying uplink up to {last}: {e}"));
                                break;
                            }
                        }
                    }
                    HubAction::DownAcked(rv) => {
                        self.metrics
                            .acked(&site, rv, self.store.current_rv(), &conn);
                        self.live
                            .lock()
                            .map(|mut l| {
                                if let Some(i) = l.sessions.get_mut(&conn.stable_id()) {
                                    i.acked_rv = rv;
                                }
                            })
                            .ok();
                    }
                    HubAction::Close(c) => closed = Some(c.reason),
                }
            }
            if let Some(reason) = closed {
                while let Some(f) = s.poll_transmit(now()) {
                    let _ = quic::write_frame(&mut send, &f).await;
                }
                break reason;
            }
            if acted {
                // Actions may have queued frames: send them before blocking.
                continue;
            }
            // Pull the next batches from the site's log; register for a wakeup first so an
            // append between the check and the wait is not missed.
            // Before the session has a log (no Hello yet) it waits on a log nobody appends to.
            let site_log = log.clone().unwrap_or_default();
            let notified = site_log.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let mut pulled = false;
            if let (Some(l), true) = (&log, s.wants_down()) {
                match l.after(s.sent_rv(), 64) {
                    Ok(batches) => {
                        for (rv, changes) in batches {
                            pulled = true;
                            s.push_down(rv, (*changes).clone());
                        }
                    }
                    Err(LogGap::Evicted) => {
                        break "the site fell out of its downlink log; it will resync by snapshot"
                            .to_string()
                    }
                    Err(LogGap::Closed) => {
                        break "share tracker rebuilt; the site will resync".to_string()
                    }
                }
            }
            if pulled {
                continue;
            }
            let wants = s.wants_down() && log.is_some();
            let deadline = tokio::time::Instant::from_std(s.next_timeout());
            tokio::select! {
                f = frx.recv() => match f {
                    Some(f) => s.handle(f, now()),
                    None => break "connection closed".to_string(),
                },
                _ = &mut notified, if wants => {}
                _ = tokio::time::sleep_until(deadline) => s.handle_timeout(now()),
                _ = ended.cancelled() => {
                    let msg = format!("site {site}: certificate revoked (its edge site was deleted, or a newer certificate is in use)");
                    let f = Frame::new(Body::Error(ErrorFrame { retryable: false, message: msg.clone() }));
                    let _ = quic::write_frame(&mut send, &f).await;
                    break msg;
                }
            }
        };
        finish(&mut send).await;
        reader.abort();
        conn.close(0u32.into(), b"bye");
        self.live
            .lock()
            .map(|mut l| {
                l.sessions.remove(&conn.stable_id());
            })
            .ok();
        self.update_status().await;
        self.metrics.connected(&site, false);
        tracing::info!(%site, reason = %result, "site disconnected");
        Ok(())
    }
}
