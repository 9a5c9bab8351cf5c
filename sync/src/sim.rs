//! Deterministic simulation of a cloud and an edge speaking the sync protocol over a faulty
//! link, on virtual time. Every run is reproducible from its seed.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use proto::sync::{Change, ChangeKind, Frame, ObjectKey, Refusal, Up};

use crate::protocol::{Config, EdgeAction, EdgeSession, HubAction, HubSession, RECENT_REFUSALS};

/// xorshift64*: tiny, deterministic, good enough for fault injection.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn chance(&mut self, p: f64) -> bool {
        (self.next() % 10_000) as f64 / 10_000.0 < p
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn key(name: &str) -> ObjectKey {
    ObjectKey {
        resource: "configmaps".into(),
        tenant: "t".into(),
        namespace: "ns".into(),
        name: name.into(),
    }
}

/// The cloud: its store (the site's share), a bounded change log, and uplink bookkeeping.
struct Cloud {
    objects: BTreeMap<String, Vec<u8>>,
    log: VecDeque<(u64, ChangeKind, String, Vec<u8>)>,
    rv: u64,
    window: usize,
    up_applied: u64,
    uploaded: BTreeMap<String, Vec<u8>>,
    /// Every uplink change it refused (each fifth), in order.
    refused: Vec<Refusal>,
}

impl Cloud {
    fn write(&mut self, name: String, value: Option<Vec<u8>>) {
        self.rv += 1;
        match value {
            Some(v) => {
                self.objects.insert(name.clone(), v.clone());
                self.log.push_back((self.rv, ChangeKind::Put, name, v));
            }
            None => {
                self.objects.remove(&name);
                self.log
                    .push_back((self.rv, ChangeKind::Delete, name, Vec::new()));
            }
        }
        while self.log.len() > self.window {
            self.log.pop_front();
        }
    }
    /// Whether every change after `rv` is still in the log.
    fn can_resume(&self, rv: u64) -> bool {
        rv <= self.rv && self.log.front().is_none_or(|(first, ..)| *first <= rv + 1)
    }
}

/// The edge: its replica of the share, durable applied version, and persistent outbox.
#[derive(Default)]
struct Edge {
    store: BTreeMap<String, Vec<u8>>,
    applied_rv: u64,
    outbox: Vec<Up>,
    next_seq: u64,
    snapshot_seen: Option<BTreeSet<String>>,
    /// The refusals it learnt of.
    refused: BTreeSet<u64>,
}

#[derive(Clone, Copy)]
pub(crate) struct Faults {
    drop: f64,
    dup: f64,
    reorder: f64,
}

const CLEAN: Faults = Faults {
    drop: 0.0,
    dup: 0.0,
    reorder: 0.0,
};

struct Sim {
    rng: Rng,
    cfg: Config,
    now: Instant,
    cloud: Cloud,
    edge: Edge,
    sessions: Option<(EdgeSession, HubSession)>,
    to_edge: VecDeque<Frame>,
    to_cloud: VecDeque<Frame>,
    down_frames: usize,
    connects: usize,
}

impl Sim {
    fn new(seed: u64, window: usize) -> Self {
        Sim {
            rng: Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1),
            cfg: Config::default(),
            now: Instant::now(),
            cloud: Cloud {
                objects: BTreeMap::new(),
                log: VecDeque::new(),
                rv: 0,
                window,
                up_applied: 0,
                uploaded: BTreeMap::new(),
                refused: Vec::new(),
            },
            edge: Edge {
                next_seq: 1,
                ..Default::default()
            },
            sessions: None,
            to_edge: VecDeque::new(),
            to_cloud: VecDeque::new(),
            down_frames: 0,
            connects: 0,
        }
    }

    fn connect(&mut self) {
        let edge = EdgeSession::new(
            self.cfg.clone(),
            "s1",
            self.edge.applied_rv,
            self.edge.outbox.clone(),
            self.now,
        );
        let hub = HubSession::new(self.cfg.clone(), "s1", self.cloud.up_applied, self.now);
        self.sessions = Some((edge, hub));
        self.to_edge.clear();
        self.to_cloud.clear();
        self.connects += 1;
    }

    fn disconnect(&mut self) {
        self.sessions = None;
        self.to_edge.clear();
        self.to_cloud.clear();
    }

    fn cloud_write(&mut self) {
        let name = format!("k{}", self.rng.below(20));
        let value = if self.rng.chance(0.25) {
            None
        } else {
            Some(format!("v{}", self.rng.next()).into_bytes())
        };
        self.cloud.write(name, value);
    }

    fn edge_write(&mut self) {
        let seq = self.edge.next_seq;
        self.edge.next_seq += 1;
        let up = Up {
            seq,
            kind: ChangeKind::Put as i32,
            key: Some(key(&format!("e{seq}"))),
            object: format!("u{seq}").into_bytes(),
            ..Default::default()
        };
        self.edge.outbox.push(up.clone());
        if let Some((e, _)) = &mut self.sessions {
            e.push_up(up);
        }
    }

    fn transmit(&mut self, faults: Faults) {
        let Some((edge, hub)) = &mut self.sessions else {
            return;
        };
        let mut moved = Vec::new();
        while let Some(f) = edge.poll_transmit(self.now) {
            moved.push((true, f));
        }
        while let Some(f) = hub.poll_transmit(self.now) {
            if matches!(f.body, Some(proto::sync::frame::Body::Down(_))) {
                self.down_frames += 1;
            }
            moved.push((false, f));
        }
        for (up, f) in moved {
            let q = if up {
                &mut self.to_cloud
            } else {
                &mut self.to_edge
            };
            if self.rng.chance(faults.drop) {
                continue;
            }
            if self.rng.chance(faults.dup) {
                q.push_back(f.clone());
            }
            q.push_back(f);
            if self.rng.chance(faults.reorder) && q.len() >= 2 {
                let n = q.len();
                q.swap(n - 1, n - 2);
            }
        }
    }

    fn deliver(&mut self) {
        let Some((edge, hub)) = &mut self.sessions else {
            return;
        };
        // Frames cross the wire; encode/decode each to exercise the codec too.
        while let Some(f) = self.to_edge.pop_front() {
            let bytes = f.encode_framed().expect("encode");
            edge.handle(Frame::decode_body(&bytes[4..]).expect("decode"), self.now);
        }
        while let Some(f) = self.to_cloud.pop_front() {
            let bytes = f.encode_framed().expect("encode");
            hub.handle(Frame::decode_body(&bytes[4..]).expect("decode"), self.now);
        }
    }

    fn act(&mut self) {
        let mut close = false;
        if let Some((edge, hub)) = &mut self.sessions {
            while let Some(a) = edge.poll_action() {
                match a {
                    EdgeAction::Apply(d) => {
                        for c in &d.changes {
                            let name = c.key.as_ref().map(|k| k.name.clone()).unwrap_or_default();
                            if c.kind == ChangeKind::Delete as i32 {
                                self.edge.store.remove(&name);
                            } else {
                                self.edge.store.insert(name.clone(), c.object.clone());
                            }
                            if let Some(seen) = &mut self.edge.snapshot_seen {
                                seen.insert(name);
                            }
                        }
                        match &mut self.edge.snapshot_seen {
                            Some(_) => {}
                            None => {
                                assert!(
                                    d.rv > self.edge.applied_rv,
                                    "applied {} after {}",
                                    d.rv,
                                    self.edge.applied_rv
                                );
                                self.edge.applied_rv = d.rv;
                                edge.applied(d.rv);
                            }
                        }
                    }
                    EdgeAction::SnapshotBegin(_) => self.edge.snapshot_seen = Some(BTreeSet::new()),
                    EdgeAction::SnapshotEnd(rv) => {
                        let seen = self.edge.snapshot_seen.take().unwrap_or_default();
                        self.edge.store.retain(|k, _| seen.contains(k));
                        self.edge.applied_rv = rv;
                        edge.applied(rv);
                    }
                    EdgeAction::UpAcked(seq) => self.edge.outbox.retain(|u| u.seq > seq),
                    EdgeAction::Refused(rs) => self.edge.refused.extend(rs.iter().map(|r| r.seq)),
                    EdgeAction::Close(_) => close = true,
                }
            }
            while let Some(a) = hub.poll_action() {
                match a {
                    HubAction::Hello { applied_rv } => {
                        // The durable record keeps the most recent refusals.
                        let n = self.cloud.refused.len();
                        let recent = &self.cloud.refused[n.saturating_sub(RECENT_REFUSALS)..];
                        hub.set_recent_refused(recent.to_vec());
                        if applied_rv > 0 && self.cloud.can_resume(applied_rv) {
                            hub.resume(applied_rv, self.now);
                        } else {
                            let objs = self
                                .cloud
                                .objects
                                .iter()
                                .map(|(k, v)| Change {
                                    kind: ChangeKind::Put as i32,
                                    key: Some(key(k)),
                                    object: v.clone(),
                                })
                                .collect();
                            hub.snapshot(self.cloud.rv, objs, self.now);
                        }
                    }
                    HubAction::ApplyUp(u) => {
                        assert_eq!(
                            u.seq,
                            self.cloud.up_applied + 1,
                            "uplink must apply exactly once, in order"
                        );
                        let k = u.key.as_ref().map(|k| k.name.clone()).unwrap_or_default();
                        self.cloud.up_applied = u.seq;
                        if u.seq % 5 == 0 {
                            let r = Refusal {
                                seq: u.seq,
                                key: u.key.clone(),
                                reason: "every fifth".into(),
                                object: Vec::new(),
                                absent: true,
                            };
                            self.cloud.refused.push(r.clone());
                            hub.up_applied(u.seq, vec![r]);
                            continue;
                        }
                        assert!(
                            self.cloud.uploaded.insert(k, u.object.clone()).is_none(),
                            "uplink applied twice"
                        );
                        hub.up_applied(u.seq, Vec::new());
                    }
                    HubAction::DownAcked(_) => {}
                    HubAction::Close(_) => close = true,
                }
            }
            // Feed the share's changes, bounded by the session's window.
            while hub.wants_down() && hub.sent_rv() < self.cloud.rv && !hub.is_closed() {
                let after = hub.sent_rv();
                if !self.cloud.can_resume(after) {
                    close = true; // the window moved past this site: reconnect → snapshot
                    break;
                }
                let Some((rv, kind, name, v)) =
                    self.cloud.log.iter().find(|(rv, ..)| *rv > after).cloned()
                else {
                    break;
                };
                hub.push_down(
                    rv,
                    vec![Change {
                        kind: kind as i32,
                        key: Some(key(&name)),
                        object: v,
                    }],
                );
            }
            edge.handle_timeout(self.now);
            hub.handle_timeout(self.now);
            close |= edge.is_closed() || hub.is_closed();
        }
        if close {
            // Let the closing side's last frames go (they would reach a dead connection).
            self.disconnect();
        }
    }

    fn step(&mut self, faults: Faults, writes: bool) {
        self.now += Duration::from_millis(100);
        if writes {
            if self.rng.chance(0.3) {
                self.cloud_write();
            }
            if self.rng.chance(0.2) {
                self.edge_write();
            }
        }
        if self.sessions.is_none() {
            self.connect();
        }
        self.transmit(faults);
        self.deliver();
        self.act();
        self.transmit(faults);
        self.deliver();
        self.act();
    }

    fn converged(&self) -> bool {
        self.sessions.is_some()
            && self.edge.store == self.cloud.objects
            && self.edge.applied_rv == self.cloud.rv
            && self.edge.outbox.is_empty()
            && self.cloud.up_applied == self.edge.next_seq - 1
    }

    /// Whether the edge learnt of every refusal. Over a reliable stream (QUIC) acks are not
    /// lost, so refusals arrive with their ack; when frames are lost, the next connection's
    /// Welcome repeats the recent ones.
    fn refusals_delivered(&self) -> bool {
        !self.cloud.refused.is_empty()
            && self
                .cloud
                .refused
                .iter()
                .all(|r| self.edge.refused.contains(&r.seq))
    }

    /// Heal the link and run until converged; panics with the state if it does not.
    fn settle(&mut self) {
        for _ in 0..5_000 {
            if self.converged() {
                return;
            }
            self.step(CLEAN, false);
        }
        panic!(
            "did not converge: edge rv {} cloud rv {}, outbox {}, up_applied {} of {}, store eq {}",
            self.edge.applied_rv,
            self.cloud.rv,
            self.edge.outbox.len(),
            self.cloud.up_applied,
            self.edge.next_seq - 1,
            self.edge.store == self.cloud.objects
        );
    }
}

#[test]
fn clean_link_converges_and_resume_sends_only_changes() {
    let mut s = Sim::new(1, 10_000);
    for _ in 0..300 {
        s.step(CLEAN, true);
    }
    s.settle();
    assert_eq!(s.connects, 1);
    assert!(s.refusals_delivered(), "refusals ride their acks");
    // Reconnect after a quiet partition: nothing but new changes crosses.
    let before = s.down_frames;
    s.disconnect();
    for _ in 0..3 {
        s.cloud_write();
    }
    s.settle();
    assert_eq!(
        s.down_frames - before,
        3,
        "resume must send exactly the missed changes"
    );
}

#[test]
fn lossy_duplicating_reordering_link_converges_exactly_once() {
    for seed in 0..40 {
        let mut s = Sim::new(seed, 10_000);
        let faults = Faults {
            drop: 0.03,
            dup: 0.05,
            reorder: 0.05,
        };
        for _ in 0..400 {
            s.step(faults, true);
        }
        s.settle();
        assert!(
            s.connects > 1,
            "seed {seed}: the faults should have forced reconnects"
        );
        // A refusal whose ack was lost reaches the edge with the next Welcome.
        s.disconnect();
        s.settle();
        assert!(s.refusals_delivered(), "seed {seed}: a refusal was lost");
    }
}

#[test]
fn reconnect_at_every_step() {
    for k in 0..120 {
        let mut s = Sim::new(7, 10_000);
        for i in 0..120 {
            if i == k {
                s.disconnect();
            }
            s.step(CLEAN, true);
        }
        s.settle();
    }
}

#[test]
fn long_partition_past_the_window_heals_with_a_snapshot_and_deletions() {
    let mut s = Sim::new(3, 16);
    for _ in 0..100 {
        s.step(CLEAN, true);
    }
    s.settle();
    s.disconnect();
    // Offline: both sides keep changing; the cloud's window moves far past the edge.
    let before = s.edge.store.len();
    for _ in 0..200 {
        s.cloud_write();
        if s.rng.chance(0.3) {
            s.edge_write();
        }
    }
    assert!(!s.cloud.can_resume(s.edge.applied_rv));
    s.settle();
    assert!(before > 0 && s.edge.store == s.cloud.objects);
}

#[test]
fn flapping_link_converges() {
    let mut s = Sim::new(11, 64);
    for i in 0..600 {
        if i % 10 == 0 {
            s.disconnect();
        }
        s.step(
            Faults {
                drop: 0.01,
                dup: 0.01,
                reorder: 0.01,
            },
            true,
        );
    }
    s.settle();
}

#[test]
fn wrong_site_and_protocol_are_refused() {
    let now = Instant::now();
    let mut hub = HubSession::new(Config::default(), "s1", 0, now);
    let mut edge = EdgeSession::new(Config::default(), "s2", 0, Vec::new(), now);
    while let Some(f) = edge.poll_transmit(now) {
        hub.handle(f, now);
    }
    match hub.poll_action() {
        Some(HubAction::Close(c)) => assert!(!c.retryable && c.reason.contains("does not match")),
        other => panic!("{other:?}"),
    }
    let err = hub.poll_transmit(now).expect("error frame");
    edge.handle(err, now);
    assert!(matches!(edge.poll_action(), Some(EdgeAction::Close(c)) if !c.retryable));
}

#[test]
fn silent_peer_is_detected_and_keepalives_flow() {
    let t0 = Instant::now();
    let cfg = Config::default();
    let mut edge = EdgeSession::new(cfg.clone(), "s1", 0, Vec::new(), t0);
    while edge.poll_transmit(t0).is_some() {}
    let t = t0 + cfg.keepalive;
    edge.handle_timeout(t);
    assert!(matches!(
        edge.poll_transmit(t).and_then(|f| f.body),
        Some(proto::sync::frame::Body::Ping(_))
    ));
    edge.handle_timeout(t0 + cfg.dead_after);
    assert!(matches!(edge.poll_action(), Some(EdgeAction::Close(c)) if c.retryable));
}
