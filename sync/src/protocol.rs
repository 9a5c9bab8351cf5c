//! The sync protocol as two sans-IO state machines, one per side of a connection.
//!
//! Persistent state lives with the driver, not here: the edge's applied version and outbox, the
//! cloud's per-site applied uplink sequence. A connection fault means: drop both sessions and
//! build new ones from that state. Correctness rests on three rules:
//! - downlink changes are chained by `prev_rv`; the edge applies a change only if it follows
//!   the last one it received, ignores older ones (duplicates) and reconnects on a gap;
//! - uplink changes carry contiguous sequence numbers; the cloud applies seq `n` only after
//!   `n-1`, ignores repeats (re-acking them) and reconnects on a gap;
//! - every ack is cumulative and sent only once the change is durable on the receiving side.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use proto::sync::{
    frame::Body, Change, Down, DownAck, ErrorFrame, Frame, Hello, Ping, Refusal, ResumeMode,
    SnapshotBegin, SnapshotEnd, Up, UpAck, Welcome, PROTOCOL,
};

pub use proto::sync::RECENT_REFUSALS;

/// Snapshot chunks stay well under the frame cap.
const SNAPSHOT_CHUNK: usize = 1024 * 1024;

/// Protocol timing and bounds.
#[derive(Clone, Debug)]
pub struct Config {
    /// Send a ping after this long without sending anything.
    pub keepalive: Duration,
    /// Declare the peer gone after this long without hearing from it.
    pub dead_after: Duration,
    /// Reconnect when unacknowledged data has made no progress for this long.
    pub stall_after: Duration,
    /// Most downlink changes in flight (sent, not acked) per site.
    pub down_window: usize,
    /// Most uplink changes in flight per site.
    pub up_window: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            keepalive: Duration::from_secs(5),
            dead_after: Duration::from_secs(15),
            stall_after: Duration::from_secs(20),
            down_window: 512,
            up_window: 512,
        }
    }
}

/// Why a session ended; the driver closes the connection and reconnects (edge) or waits for
/// the site to come back (cloud).
#[derive(Clone, Debug, PartialEq)]
pub struct Closed {
    /// Whether reconnecting may help.
    pub retryable: bool,
    /// What happened.
    pub reason: String,
}

fn closed(retryable: bool, reason: impl Into<String>) -> Closed {
    Closed {
        retryable,
        reason: reason.into(),
    }
}

/// What the edge driver must do.
#[derive(Clone, Debug, PartialEq)]
pub enum EdgeAction {
    /// Apply a downlink change to the local replica, durably; then call
    /// [`EdgeSession::applied`] with its `rv`.
    Apply(Down),
    /// A snapshot at this version starts: remember the cloud-owned objects now present.
    SnapshotBegin(u64),
    /// The snapshot is complete: delete cloud-owned objects it did not contain, then call
    /// [`EdgeSession::applied`] with this version.
    SnapshotEnd(u64),
    /// The cloud has applied the outbox through this sequence: drop those entries.
    UpAcked(u64),
    /// The cloud refused these changes (the ones of this connection's acks, or its recent
    /// ones on Welcome: the driver skips those it has handled already).
    Refused(Vec<Refusal>),
    /// The session is over.
    Close(Closed),
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum EdgeState {
    AwaitWelcome,
    Streaming,
    Snapshot(u64),
    Done,
}

/// The edge side of one connection.
pub struct EdgeSession {
    cfg: Config,
    state: EdgeState,
    /// Last downlink version applied durably (persisted by the driver).
    applied_rv: u64,
    /// Last downlink version received on this connection (chain head).
    last_rx: u64,
    pending_ack: Option<u64>,
    /// Outbox entries not yet acknowledged by the cloud, in sequence order.
    outbox: VecDeque<Up>,
    up_acked: u64,
    up_sent: u64,
    tx: VecDeque<Frame>,
    actions: VecDeque<EdgeAction>,
    last_heard: Instant,
    last_sent: Instant,
    progress_at: Instant,
    started: Instant,
}

impl EdgeSession {
    /// Start a connection: `applied_rv` and `outbox` come from the edge's durable state.
    pub fn new(cfg: Config, site: &str, applied_rv: u64, outbox: Vec<Up>, now: Instant) -> Self {
        let mut s = EdgeSession {
            cfg,
            state: EdgeState::AwaitWelcome,
            applied_rv,
            last_rx: applied_rv,
            pending_ack: None,
            outbox: outbox.into(),
            up_acked: 0,
            up_sent: 0,
            tx: VecDeque::new(),
            actions: VecDeque::new(),
            last_heard: now,
            last_sent: now,
            progress_at: now,
            started: now,
        };
        s.tx.push_back(Frame::new(Body::Hello(Hello {
            protocol: PROTOCOL,
            site: site.to_string(),
            applied_rv,
        })));
        s
    }

    fn fail(&mut self, c: Closed) {
        if self.state != EdgeState::Done {
            self.state = EdgeState::Done;
            if c.retryable {
                self.tx.push_back(Frame::new(Body::Error(ErrorFrame {
                    retryable: true,
                    message: c.reason.clone(),
                })));
            }
            self.actions.push_back(EdgeAction::Close(c));
        }
    }

    /// Whether the session has ended.
    pub fn is_closed(&self) -> bool {
        self.state == EdgeState::Done
    }

    /// A frame arrived.
    pub fn handle(&mut self, frame: Frame, now: Instant) {
        if self.state == EdgeState::Done {
            return;
        }
        self.last_heard = now;
        let Some(body) = frame.body else {
            return self.fail(closed(true, "empty frame"));
        };
        match (self.state, body) {
            (_, Body::Ping(p)) => self.tx.push_back(Frame::new(Body::Pong(p))),
            (_, Body::Pong(_)) => {}
            (_, Body::Error(e)) => {
                self.state = EdgeState::Done;
                self.actions.push_back(EdgeAction::Close(closed(
                    e.retryable,
                    format!("cloud: {}", e.message),
                )));
            }
            (EdgeState::AwaitWelcome, Body::Welcome(w)) => {
                if !w.refused.is_empty() {
                    self.actions.push_back(EdgeAction::Refused(w.refused));
                }
                self.ack_up(w.up_acked);
                self.up_sent = self.up_acked;
                if let Some(first) = self.outbox.front() {
                    if first.seq != self.up_acked + 1 {
                        return self.fail(closed(
                            false,
                            format!(
                                "outbox starts at {} but the cloud has applied {}",
                                first.seq, self.up_acked
                            ),
                        ));
                    }
                }
                self.state = EdgeState::Streaming;
                self.progress_at = now;
                if w.mode == ResumeMode::Snapshot as i32 {
                    self.last_rx = 0;
                }
            }
            (EdgeState::Streaming, Body::SnapshotBegin(b)) => {
                self.state = EdgeState::Snapshot(b.rv);
                self.actions.push_back(EdgeAction::SnapshotBegin(b.rv));
            }
            (EdgeState::Snapshot(rv), Body::Down(d)) if d.rv == rv => {
                self.actions.push_back(EdgeAction::Apply(d))
            }
            (EdgeState::Snapshot(rv), Body::SnapshotEnd(e)) if e.rv == rv => {
                self.state = EdgeState::Streaming;
                self.last_rx = rv;
                self.actions.push_back(EdgeAction::SnapshotEnd(rv));
            }
            (EdgeState::Streaming, Body::Down(d)) => {
                if d.rv <= self.last_rx {
                    return; // duplicate
                }
                if d.prev_rv != self.last_rx {
                    return self.fail(closed(
                        true,
                        format!(
                            "downlink gap: expected a change after {}, got one after {}",
                            self.last_rx, d.prev_rv
                        ),
                    ));
                }
                self.last_rx = d.rv;
                self.actions.push_back(EdgeAction::Apply(d));
            }
            (EdgeState::Streaming | EdgeState::Snapshot(_), Body::UpAck(a)) => {
                if a.seq > self.up_sent {
                    return self.fail(closed(
                        true,
                        format!("ack for uplink {} that was never sent", a.seq),
                    ));
                }
                if !a.refused.is_empty() {
                    self.actions.push_back(EdgeAction::Refused(a.refused));
                }
                self.ack_up(a.seq);
                self.progress_at = now;
            }
            (_, other) => self.fail(closed(true, format!("unexpected frame {}", name(&other)))),
        }
    }

    fn ack_up(&mut self, seq: u64) {
        if seq > self.up_acked {
            self.up_acked = seq;
            while self.outbox.front().is_some_and(|u| u.seq <= seq) {
                self.outbox.pop_front();
            }
            self.actions.push_back(EdgeAction::UpAcked(seq));
        }
    }

    /// A new outbox entry (already persisted by the driver); its seq must follow the last one.
    pub fn push_up(&mut self, up: Up) {
        let last = self
            .outbox
            .back()
            .map_or(self.up_acked.max(self.up_sent), |u| u.seq);
        if up.seq > last {
            self.outbox.push_back(up);
        }
    }

    /// A downlink change (or snapshot end) is durable at the edge.
    pub fn applied(&mut self, rv: u64) {
        if rv > self.applied_rv {
            self.applied_rv = rv;
            self.pending_ack = Some(rv);
        }
    }

    /// The last downlink version applied.
    pub fn applied_rv(&self) -> u64 {
        self.applied_rv
    }

    /// Next action for the driver.
    pub fn poll_action(&mut self) -> Option<EdgeAction> {
        self.actions.pop_front()
    }

    /// Next frame to send.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<Frame> {
        let f = self
            .tx
            .pop_front()
            .or_else(|| {
                self.pending_ack
                    .take()
                    .map(|rv| Frame::new(Body::DownAck(DownAck { rv })))
            })
            .or_else(|| {
                if self.state == EdgeState::Done || self.state == EdgeState::AwaitWelcome {
                    return None;
                }
                if (self.up_sent - self.up_acked) as usize >= self.cfg.up_window {
                    return None;
                }
                let next = self.outbox.iter().find(|u| u.seq > self.up_sent)?.clone();
                self.up_sent = next.seq;
                Some(Frame::new(Body::Up(next)))
            })?;
        self.last_sent = now;
        Some(f)
    }

    /// Advance virtual time: keepalives, dead-peer and stall detection.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.state == EdgeState::Done {
            return;
        }
        if now.duration_since(self.last_heard) >= self.cfg.dead_after {
            return self.fail(closed(true, "cloud silent"));
        }
        // Keepalives prove the peer is alive, not that the handshake got through.
        if self.state == EdgeState::AwaitWelcome
            && now.duration_since(self.started) >= self.cfg.dead_after
        {
            return self.fail(closed(true, "no welcome from the cloud"));
        }
        if self.up_sent > self.up_acked
            && now.duration_since(self.progress_at) >= self.cfg.stall_after
        {
            return self.fail(closed(true, "uplink stalled"));
        }
        if now.duration_since(self.last_sent) >= self.cfg.keepalive && self.tx.is_empty() {
            self.tx.push_back(Frame::new(Body::Ping(Ping { nonce: 0 })));
        }
    }

    /// When `handle_timeout` next needs to run.
    pub fn next_timeout(&self) -> Instant {
        (self.last_sent + self.cfg.keepalive).min(self.last_heard + self.cfg.dead_after)
    }
}

/// What the cloud driver must do.
#[derive(Clone, Debug, PartialEq)]
pub enum HubAction {
    /// The site said hello: decide between [`HubSession::resume`] (changes after `applied_rv`
    /// are still in the window) and [`HubSession::snapshot`].
    Hello {
        /// Last version the site has applied.
        applied_rv: u64,
    },
    /// Apply (or refuse) an uplink change idempotently, then call
    /// [`HubSession::up_applied`].
    ApplyUp(Up),
    /// The site has applied the downlink through this version (record it in its status).
    DownAcked(u64),
    /// The session is over.
    Close(Closed),
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum HubState {
    AwaitHello,
    AwaitDecision,
    Streaming,
    Done,
}

/// The cloud side of one site's connection.
pub struct HubSession {
    cfg: Config,
    site: String,
    state: HubState,
    up_applied: u64,
    up_received: u64,
    /// The site's recent refusals (from the durable record, then this session's), repeated in
    /// the Welcome and in the re-ack of a duplicate (whose first ack may have been lost).
    recent_refused: VecDeque<Refusal>,
    sent_rv: u64,
    acked_rv: u64,
    /// Versions sent and not yet acknowledged (snapshot entries are acked as one, at its end).
    in_flight: VecDeque<u64>,
    /// Queued frames, each with the version it puts in flight (if it is acked on its own).
    pending: VecDeque<(Frame, Option<u64>)>,
    tx: VecDeque<Frame>,
    actions: VecDeque<HubAction>,
    last_heard: Instant,
    last_sent: Instant,
    progress_at: Instant,
    started: Instant,
}

impl HubSession {
    /// Start serving an authenticated site; `up_applied` is the cloud's durable record of the
    /// site's last applied uplink sequence.
    pub fn new(cfg: Config, site: &str, up_applied: u64, now: Instant) -> Self {
        HubSession {
            cfg,
            site: site.to_string(),
            state: HubState::AwaitHello,
            up_applied,
            up_received: up_applied,
            recent_refused: VecDeque::new(),
            sent_rv: 0,
            acked_rv: 0,
            in_flight: VecDeque::new(),
            pending: VecDeque::new(),
            tx: VecDeque::new(),
            actions: VecDeque::new(),
            last_heard: now,
            last_sent: now,
            progress_at: now,
            started: now,
        }
    }

    fn fail(&mut self, c: Closed) {
        if self.state != HubState::Done {
            self.state = HubState::Done;
            self.tx.push_back(Frame::new(Body::Error(ErrorFrame {
                retryable: c.retryable,
                message: c.reason.clone(),
            })));
            self.actions.push_back(HubAction::Close(c));
        }
    }

    /// Whether the session has ended.
    pub fn is_closed(&self) -> bool {
        self.state == HubState::Done
    }

    /// A frame arrived.
    pub fn handle(&mut self, frame: Frame, now: Instant) {
        if self.state == HubState::Done {
            return;
        }
        self.last_heard = now;
        let Some(body) = frame.body else {
            return self.fail(closed(true, "empty frame"));
        };
        match (self.state, body) {
            (_, Body::Ping(p)) => self.tx.push_back(Frame::new(Body::Pong(p))),
            (_, Body::Pong(_)) => {}
            (_, Body::Error(e)) => {
                self.state = HubState::Done;
                self.actions.push_back(HubAction::Close(closed(
                    e.retryable,
                    format!("site: {}", e.message),
                )));
            }
            (HubState::AwaitHello, Body::Hello(h)) => {
                if h.protocol != PROTOCOL {
                    return self.fail(closed(
                        false,
                        format!("protocol {} not supported (want {PROTOCOL})", h.protocol),
                    ));
                }
                if h.site != self.site {
                    return self.fail(closed(
                        false,
                        format!(
                            "site {:?} does not match the credentials of site {:?}",
                            h.site, self.site
                        ),
                    ));
                }
                self.state = HubState::AwaitDecision;
                self.actions.push_back(HubAction::Hello {
                    applied_rv: h.applied_rv,
                });
            }
            (HubState::AwaitDecision | HubState::Streaming, Body::Up(u)) => {
                if u.seq <= self.up_received {
                    // Already applied or being applied: re-ack what is durable.
                    if self.up_applied > 0 {
                        self.tx.push_back(Frame::new(Body::UpAck(UpAck {
                            seq: self.up_applied,
                            refused: self.recent_refused.iter().cloned().collect(),
                        })));
                    }
                    return;
                }
                if u.seq != self.up_received + 1 {
                    return self.fail(closed(
                        true,
                        format!(
                            "uplink gap: expected {}, got {}",
                            self.up_received + 1,
                            u.seq
                        ),
                    ));
                }
                self.up_received = u.seq;
                self.actions.push_back(HubAction::ApplyUp(u));
            }
            (HubState::Streaming, Body::DownAck(a)) => {
                if a.rv > self.sent_rv {
                    return self.fail(closed(
                        true,
                        format!("ack for downlink {} that was never sent", a.rv),
                    ));
                }
                if a.rv > self.acked_rv {
                    self.acked_rv = a.rv;
                    while self.in_flight.front().is_some_and(|r| *r <= a.rv) {
                        self.in_flight.pop_front();
                    }
                    self.progress_at = now;
                    self.actions.push_back(HubAction::DownAcked(a.rv));
                }
            }
            (_, other) => self.fail(closed(true, format!("unexpected frame {}", name(&other)))),
        }
    }

    /// Resume: the driver will push the share's changes after the site's `applied_rv`.
    pub fn resume(&mut self, applied_rv: u64, now: Instant) {
        if self.state != HubState::AwaitDecision {
            return;
        }
        self.state = HubState::Streaming;
        self.sent_rv = applied_rv;
        self.acked_rv = applied_rv;
        self.progress_at = now;
        self.tx.push_back(Frame::new(Body::Welcome(Welcome {
            mode: ResumeMode::Resume as i32,
            up_acked: self.up_applied,
            refused: self.recent_refused.iter().cloned().collect(),
        })));
    }

    /// Snapshot: the whole share at version `rv` (the site's version is outside the window).
    pub fn snapshot(&mut self, rv: u64, objects: Vec<Change>, now: Instant) {
        if self.state != HubState::AwaitDecision {
            return;
        }
        self.state = HubState::Streaming;
        self.progress_at = now;
        self.tx.push_back(Frame::new(Body::Welcome(Welcome {
            mode: ResumeMode::Snapshot as i32,
            up_acked: self.up_applied,
            refused: self.recent_refused.iter().cloned().collect(),
        })));
        self.pending
            .push_back((Frame::new(Body::SnapshotBegin(SnapshotBegin { rv })), None));
        let mut chunk = Vec::new();
        let mut bytes = 0;
        for c in objects {
            bytes += c.object.len();
            chunk.push(c);
            if bytes >= SNAPSHOT_CHUNK || chunk.len() >= 256 {
                let d = Down {
                    rv,
                    prev_rv: 0,
                    changes: std::mem::take(&mut chunk),
                };
                self.pending.push_back((Frame::new(Body::Down(d)), None));
                bytes = 0;
            }
        }
        if !chunk.is_empty() {
            let d = Down {
                rv,
                prev_rv: 0,
                changes: chunk,
            };
            self.pending.push_back((Frame::new(Body::Down(d)), None));
        }
        // The snapshot's entries are acknowledged together, by the ack of its end.
        self.pending
            .push_back((Frame::new(Body::SnapshotEnd(SnapshotEnd { rv })), Some(rv)));
        self.sent_rv = rv;
        self.acked_rv = 0;
    }

    /// Whether the driver may push more downlink changes (bounded memory per site).
    pub fn wants_down(&self) -> bool {
        self.state == HubState::Streaming && self.pending.len() < self.cfg.down_window
    }

    /// Queue the share's changes at version `rv` (versions must increase).
    pub fn push_down(&mut self, rv: u64, changes: Vec<Change>) {
        if self.state != HubState::Streaming || rv <= self.sent_rv {
            return;
        }
        let d = Down {
            rv,
            prev_rv: self.sent_rv,
            changes,
        };
        self.pending
            .push_back((Frame::new(Body::Down(d)), Some(rv)));
        self.sent_rv = rv;
    }

    /// The version of the last change queued for the site.
    pub fn sent_rv(&self) -> u64 {
        self.sent_rv
    }

    /// The uplink through `seq` is durable in the cloud store (applied, or refused with the
    /// refusals recorded); `refused` are this run's refusals, sent with the ack.
    pub fn up_applied(&mut self, seq: u64, mut refused: Vec<Refusal>) {
        if seq > self.up_applied && seq <= self.up_received {
            self.up_applied = seq;
            // A frame carries the most recent ones (each is bounded, so the frame is too).
            let excess = refused.len().saturating_sub(RECENT_REFUSALS);
            refused.drain(..excess);
            self.remember(&refused);
            self.tx
                .push_back(Frame::new(Body::UpAck(UpAck { seq, refused })));
        }
    }

    /// The site's recent refusals (from the cloud's durable record), repeated in the Welcome
    /// so a refusal whose ack was lost still reaches it. Call before resume or snapshot.
    pub fn set_recent_refused(&mut self, refused: Vec<Refusal>) {
        self.recent_refused.clear();
        self.remember(&refused);
    }

    fn remember(&mut self, refused: &[Refusal]) {
        self.recent_refused.extend(refused.iter().cloned());
        while self.recent_refused.len() > RECENT_REFUSALS {
            self.recent_refused.pop_front();
        }
    }

    /// Next action for the driver.
    pub fn poll_action(&mut self) -> Option<HubAction> {
        self.actions.pop_front()
    }

    /// Next frame to send.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<Frame> {
        let f = self.tx.pop_front().or_else(|| {
            if self.in_flight.len() >= self.cfg.down_window {
                return None;
            }
            let (f, counted) = self.pending.pop_front()?;
            if let Some(rv) = counted {
                self.in_flight.push_back(rv);
            }
            Some(f)
        })?;
        self.last_sent = now;
        Some(f)
    }

    /// Advance virtual time.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.state == HubState::Done {
            return;
        }
        if now.duration_since(self.last_heard) >= self.cfg.dead_after {
            return self.fail(closed(true, "site silent"));
        }
        if self.state == HubState::AwaitHello
            && now.duration_since(self.started) >= self.cfg.dead_after
        {
            return self.fail(closed(true, "no hello from the site"));
        }
        if !self.in_flight.is_empty()
            && now.duration_since(self.progress_at) >= self.cfg.stall_after
        {
            return self.fail(closed(true, "downlink stalled"));
        }
        if now.duration_since(self.last_sent) >= self.cfg.keepalive && self.tx.is_empty() {
            self.tx.push_back(Frame::new(Body::Ping(Ping { nonce: 0 })));
        }
    }

    /// When `handle_timeout` next needs to run.
    pub fn next_timeout(&self) -> Instant {
        (self.last_sent + self.cfg.keepalive).min(self.last_heard + self.cfg.dead_after)
    }
}

fn name(b: &Body) -> &'static str {
    match b {
        Body::Hello(_) => "Hello",
        Body::Welcome(_) => "Welcome",
        Body::Down(_) => "Down",
        Body::DownAck(_) => "DownAck",
        Body::Up(_) => "Up",
        Body::UpAck(_) => "UpAck",
        Body::SnapshotBegin(_) => "SnapshotBegin",
        Body::SnapshotEnd(_) => "SnapshotEnd",
        Body::Ping(_) => "Ping",
        Body::Pong(_) => "Pong",
        Body::Error(_) => "Error",
        Body::JoinRequest(_) => "JoinRequest",
        Body::JoinResponse(_) => "JoinResponse",
        Body::RenewRequest(_) => "RenewRequest",
        Body::LogRequest(_) => "LogRequest",
        Body::LogResponse(_) => "LogResponse",
        Body::StreamRequest(_) => "StreamRequest",
        Body::UsageRequest(_) => "UsageRequest",
    }
}
