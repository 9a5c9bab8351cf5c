//! Sync wire messages between cloud-core (hub) and edge-core (site), protobuf-encoded with
//! prost. One `Frame` per length-prefixed message on a QUIC stream.
//!
//! Protocol summary (see the `sync` crate for the state machines):
//! - edge → cloud `Hello` {site, applied_rv, up_acked}: where the edge is.
//! - cloud → edge `Welcome` {mode}: `Resume` streams the share's changes after `applied_rv`;
//!   `Snapshot` (the gap is older than the cloud's window) sends `SnapshotBegin`, the whole share
//!   as `Down` puts, `SnapshotEnd`; the edge then deletes cloud-owned objects not in it.
//! - `Down` {rv, prev_rv, ...}: one change of the site's share. `prev_rv` chains events so a gap
//!   is detected, never skipped. The edge acks with `DownAck` once applied durably.
//! - `Up` {seq, ...}: an edge-authoritative change from the persistent outbox; seqs are
//!   contiguous per site, so the cloud applies each exactly once and acks with `UpAck`.
//! - cloud → edge `LogRequest` on a stream the cloud opens: the edge answers `LogResponse`
//!   {code, message}, then (code 200) the raw log bytes until the stream ends (`kubectl logs`
//!   tunnelled over the site's connection; no inbound port at the site).
//! - cloud → edge `StreamRequest` (exec, attach) on a stream the cloud opens: answered with a
//!   `LogResponse` too; on 200 both directions carry the channel frames of `crate::stream`
//!   between the cloud's client and the container until either side ends the stream.
//! - cloud → edge `UsageRequest` on a stream the cloud opens: a `LogResponse`, then (200) the
//!   site's nodes' usage samples as JSON (`kubectl top` at the cloud).

/// Kind of change carried by `Down` and `Up`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum ChangeKind {
    /// Create or replace the whole object.
    Put = 0,
    /// Remove the object.
    Delete = 1,
    /// Replace only the object's status.
    Status = 2,
    /// A site bound a pod the cloud placed on it: `spec.nodeName` and the status.
    Bind = 3,
    /// The site's capacity summary (object: JSON `SiteSummary`; key: its EdgeSite).
    Summary = 4,
}

/// How the cloud will bring the edge up to date.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum ResumeMode {
    /// Changes after the edge's `applied_rv` follow.
    Resume = 0,
    /// A full snapshot of the share follows.
    Snapshot = 1,
}

/// The identity of an object (same layout as the store key).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Message)]
pub struct ObjectKey {
    /// Plural resource, group-qualified for non-core groups.
    #[prost(string, tag = "1")]
    pub resource: String,
    /// Tenant (`""`: system space).
    #[prost(string, tag = "2")]
    pub tenant: String,
    /// Namespace (`""`: cluster-scoped).
    #[prost(string, tag = "3")]
    pub namespace: String,
    /// Name.
    #[prost(string, tag = "4")]
    pub name: String,
}

/// Edge → cloud, first frame of a connection.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Hello {
    /// Protocol version.
    #[prost(uint32, tag = "1")]
    pub protocol: u32,
    /// Site name (must match the client certificate).
    #[prost(string, tag = "2")]
    pub site: String,
    /// Last downlink version the edge has applied durably.
    #[prost(uint64, tag = "3")]
    pub applied_rv: u64,
}

/// Cloud → edge answer to `Hello`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Welcome {
    /// Resume or snapshot.
    #[prost(enumeration = "ResumeMode", tag = "1")]
    pub mode: i32,
    /// Highest uplink sequence the cloud has applied for this site.
    #[prost(uint64, tag = "2")]
    pub up_acked: u64,
    /// The site's most recent refused uplink changes (bounded), so a refusal whose ack was
    /// lost still reaches the site.
    #[prost(message, repeated, tag = "3")]
    pub refused: Vec<Refusal>,
}

/// One change to one object.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Change {
    /// Kind.
    #[prost(enumeration = "ChangeKind", tag = "1")]
    pub kind: i32,
    /// Object.
    #[prost(message, optional, tag = "2")]
    pub key: Option<ObjectKey>,
    /// Object JSON (empty for deletes).
    #[prost(bytes = "vec", tag = "3")]
    pub object: Vec<u8>,
}

/// The downlink changes of one cloud version (one write can move several objects into or out
/// of a site's share), applied atomically by the edge. Snapshots are sent as chunks.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Down {
    /// Version of these changes in the cloud store.
    #[prost(uint64, tag = "1")]
    pub rv: u64,
    /// Version of the previous batch sent to this site (0 inside a snapshot).
    #[prost(uint64, tag = "2")]
    pub prev_rv: u64,
    /// The changes.
    #[prost(message, repeated, tag = "3")]
    pub changes: Vec<Change>,
}

/// Edge → cloud: downlink applied through `rv`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct DownAck {
    /// Version.
    #[prost(uint64, tag = "1")]
    pub rv: u64,
}

/// One uplink change from the edge's outbox.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Up {
    /// Outbox sequence, contiguous per site from 1.
    #[prost(uint64, tag = "1")]
    pub seq: u64,
    /// Kind.
    #[prost(enumeration = "ChangeKind", tag = "2")]
    pub kind: i32,
    /// Object.
    #[prost(message, optional, tag = "3")]
    pub key: Option<ObjectKey>,
    /// Object JSON (empty for deletes).
    #[prost(bytes = "vec", tag = "4")]
    pub object: Vec<u8>,
    /// For an edit of a node: the version it was made on (JSON), so the cloud applies only
    /// the fields the site changed.
    #[prost(bytes = "vec", tag = "5")]
    pub base: Vec<u8>,
}

/// Cloud → edge: uplink applied through `seq`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct UpAck {
    /// Sequence.
    #[prost(uint64, tag = "1")]
    pub seq: u64,
    /// Changes of the acknowledged run the cloud refused.
    #[prost(message, repeated, tag = "2")]
    pub refused: Vec<Refusal>,
}

/// An uplink change the cloud refused (acknowledged all the same, so the stream moves on).
#[derive(Clone, PartialEq, prost::Message)]
pub struct Refusal {
    /// The refused change's sequence.
    #[prost(uint64, tag = "1")]
    pub seq: u64,
    /// The object it was about.
    #[prost(message, optional, tag = "2")]
    pub key: Option<ObjectKey>,
    /// Why.
    #[prost(string, tag = "3")]
    pub reason: String,
    /// The cloud's copy of the object when it is one the site created and small enough
    /// ([`MAX_REFUSAL_OBJECT`]; JSON). The site sets its own copy to it, so it keeps no
    /// silently diverging version.
    #[prost(bytes = "vec", tag = "4")]
    pub object: Vec<u8>,
    /// The cloud holds no object of the site's under this key: the site removes its copy.
    #[prost(bool, tag = "5")]
    pub absent: bool,
}

/// Largest object a [`Refusal`] carries (so a frame of [`RECENT_REFUSALS`] refusals stays
/// far below [`MAX_FRAME`]); a larger one is left out and the site keeps its copy, with the
/// warning.
pub const MAX_REFUSAL_OBJECT: usize = 32 * 1024;
/// Longest refusal reason carried.
pub const MAX_REFUSAL_REASON: usize = 1024;
/// Refusals a frame carries at most (the most recent ones).
pub const RECENT_REFUSALS: usize = 64;

/// Start of a full snapshot at version `rv`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SnapshotBegin {
    /// Version the snapshot is consistent with.
    #[prost(uint64, tag = "1")]
    pub rv: u64,
}

/// End of a snapshot; the edge now holds exactly the share at `rv`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SnapshotEnd {
    /// Version.
    #[prost(uint64, tag = "1")]
    pub rv: u64,
}

/// Keepalive.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Ping {
    /// Echoed in the answer.
    #[prost(uint64, tag = "1")]
    pub nonce: u64,
}

/// A protocol error; the sender closes the connection after it.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ErrorFrame {
    /// Whether reconnecting may succeed.
    #[prost(bool, tag = "1")]
    pub retryable: bool,
    /// What went wrong.
    #[prost(string, tag = "2")]
    pub message: String,
}

/// Edge → cloud on a connection without a client certificate: join the region.
#[derive(Clone, PartialEq, prost::Message)]
pub struct JoinRequest {
    /// The site to join as (must match the token).
    #[prost(string, tag = "1")]
    pub site: String,
    /// The secret part of the join token (the CA pin part stays with the edge).
    #[prost(string, tag = "2")]
    pub secret: String,
    /// Extra names for the edge's serving certificate.
    #[prost(string, repeated, tag = "3")]
    pub serving_names: Vec<String>,
}

/// Cloud → edge: the site's credentials, signed by the region CA.
#[derive(Clone, PartialEq, prost::Message)]
pub struct JoinResponse {
    /// Region CA certificate (PEM).
    #[prost(string, tag = "1")]
    pub ca_pem: String,
    /// Client certificate for sync (PEM).
    #[prost(string, tag = "2")]
    pub client_cert_pem: String,
    /// Its key (PEM).
    #[prost(string, tag = "3")]
    pub client_key_pem: String,
    /// Serving certificate for the edge API (PEM).
    #[prost(string, tag = "4")]
    pub serving_cert_pem: String,
    /// Its key (PEM).
    #[prost(string, tag = "5")]
    pub serving_key_pem: String,
    /// Validity start of the certificates (unix seconds).
    #[prost(int64, tag = "6")]
    pub not_before: i64,
    /// Validity end of the certificates (unix seconds); the edge renews well before.
    #[prost(int64, tag = "7")]
    pub not_after: i64,
}

/// Edge → cloud, on a second stream of an authenticated connection: new certificates for the
/// same site (answered with a `JoinResponse`).
#[derive(Clone, PartialEq, prost::Message)]
pub struct RenewRequest {
    /// Extra names for the serving certificate.
    #[prost(string, repeated, tag = "1")]
    pub serving_names: Vec<String>,
}

/// Cloud → edge, first frame of a stream the cloud opens on a site's live connection: stream
/// the logs of a container of a pod held by the site (`kubectl logs` at the cloud). The edge
/// answers with one `LogResponse` frame; on success raw log bytes follow until the stream
/// ends. Either side ends it early by resetting or stopping the stream.
#[derive(Clone, PartialEq, prost::Message)]
pub struct LogRequest {
    /// Tenant of the pod (`""`: system space).
    #[prost(string, tag = "1")]
    pub tenant: String,
    /// Namespace of the pod.
    #[prost(string, tag = "2")]
    pub namespace: String,
    /// Pod name.
    #[prost(string, tag = "3")]
    pub pod: String,
    /// Container (empty: the pod's only container).
    #[prost(string, tag = "4")]
    pub container: String,
    /// Keep streaming new lines until the container exits.
    #[prost(bool, tag = "5")]
    pub follow: bool,
    /// The previous (terminated) attempt of the container.
    #[prost(bool, tag = "6")]
    pub previous: bool,
    /// Only the last N lines.
    #[prost(int64, optional, tag = "7")]
    pub tail_lines: Option<i64>,
    /// Prefix each line with its RFC 3339 timestamp.
    #[prost(bool, tag = "8")]
    pub timestamps: bool,
    /// Stop after this many bytes.
    #[prost(int64, optional, tag = "9")]
    pub limit_bytes: Option<i64>,
    /// Only lines newer than this many seconds.
    #[prost(int64, optional, tag = "10")]
    pub since_seconds: Option<i64>,
    /// Only lines at or after this RFC 3339 time (empty: unset).
    #[prost(string, tag = "11")]
    pub since_time: String,
}

/// Cloud → edge, first frame of a stream the cloud opens on a site's live connection: exec in
/// or attach to a container of a pod held by the site (see `crate::stream`). Answered with a
/// `LogResponse`; on 200 the stream carries channel frames both ways.
#[derive(Clone, PartialEq, prost::Message)]
pub struct StreamRequest {
    /// `exec`, `attach` or `portforward` (then the stream carries a TCP connection's bytes).
    #[prost(string, tag = "1")]
    pub kind: String,
    /// Tenant of the pod (`""`: system space).
    #[prost(string, tag = "2")]
    pub tenant: String,
    /// Namespace of the pod.
    #[prost(string, tag = "3")]
    pub namespace: String,
    /// Pod name.
    #[prost(string, tag = "4")]
    pub pod: String,
    /// Container (resolved by the cloud, checked again by the site).
    #[prost(string, tag = "5")]
    pub container: String,
    /// The command (exec).
    #[prost(string, repeated, tag = "6")]
    pub command: Vec<String>,
    /// Pass stdin.
    #[prost(bool, tag = "7")]
    pub stdin: bool,
    /// Return stdout.
    #[prost(bool, tag = "8")]
    pub stdout: bool,
    /// Return stderr.
    #[prost(bool, tag = "9")]
    pub stderr: bool,
    /// A terminal.
    #[prost(bool, tag = "10")]
    pub tty: bool,
    /// The pod's port (`portforward`).
    #[prost(uint32, tag = "11")]
    pub port: u32,
}

/// Cloud → edge: the latest usage samples of the site's nodes (`kubectl top` at the cloud).
/// Answered with a `LogResponse`; on 200 the stream carries a JSON array of
/// `crate::usage::NodeUsage`, at most `crate::usage::MAX_STATS` bytes, and ends.
#[derive(Clone, PartialEq, prost::Message)]
pub struct UsageRequest {
    /// Most bytes the cloud takes in the answer (a site with more answers 413). Never 0, so
    /// the frame is never empty.
    #[prost(uint32, tag = "1")]
    pub max_bytes: u32,
}

/// Edge → cloud, first frame of the answer to a `LogRequest` or a `StreamRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct LogResponse {
    /// HTTP status: 200 means raw log bytes follow; anything else is an error and the stream
    /// ends.
    #[prost(uint32, tag = "1")]
    pub code: u32,
    /// The error message (for kubectl), when `code` is not 200.
    #[prost(string, tag = "2")]
    pub message: String,
}

/// One message.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Frame {
    /// The message.
    #[prost(
        oneof = "frame::Body",
        tags = "1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18"
    )]
    pub body: Option<frame::Body>,
}

/// The `Frame` oneof.
pub mod frame {
    /// Frame bodies.
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Body {
        /// Edge hello.
        #[prost(message, tag = "1")]
        Hello(super::Hello),
        /// Cloud welcome.
        #[prost(message, tag = "2")]
        Welcome(super::Welcome),
        /// Downlink change.
        #[prost(message, tag = "3")]
        Down(super::Down),
        /// Downlink ack.
        #[prost(message, tag = "4")]
        DownAck(super::DownAck),
        /// Uplink change.
        #[prost(message, tag = "5")]
        Up(super::Up),
        /// Uplink ack.
        #[prost(message, tag = "6")]
        UpAck(super::UpAck),
        /// Snapshot start.
        #[prost(message, tag = "7")]
        SnapshotBegin(super::SnapshotBegin),
        /// Snapshot end.
        #[prost(message, tag = "8")]
        SnapshotEnd(super::SnapshotEnd),
        /// Keepalive.
        #[prost(message, tag = "9")]
        Ping(super::Ping),
        /// Keepalive answer.
        #[prost(message, tag = "10")]
        Pong(super::Ping),
        /// Fatal error.
        #[prost(message, tag = "11")]
        Error(super::ErrorFrame),
        /// Join request.
        #[prost(message, tag = "12")]
        JoinRequest(super::JoinRequest),
        /// Join response (also the answer to a renewal).
        #[prost(message, tag = "13")]
        JoinResponse(super::JoinResponse),
        /// Certificate renewal.
        #[prost(message, tag = "14")]
        RenewRequest(super::RenewRequest),
        /// Log stream request (cloud → edge, on a stream of its own).
        #[prost(message, tag = "15")]
        LogRequest(super::LogRequest),
        /// Log or container stream answer header.
        #[prost(message, tag = "16")]
        LogResponse(super::LogResponse),
        /// Exec or attach stream request (cloud → edge, on a stream of its own).
        #[prost(message, tag = "17")]
        StreamRequest(super::StreamRequest),
        /// Usage request (cloud → edge, on a stream of its own).
        #[prost(message, tag = "18")]
        UsageRequest(super::UsageRequest),
    }
}

/// Current protocol version.
pub const PROTOCOL: u32 = 1;
/// Largest encoded frame accepted (objects are capped at 3 MiB by the API; JSON plus framing).
pub const MAX_FRAME: usize = 4 * 1024 * 1024;

/// Frame encoding failures.
#[derive(Debug, PartialEq)]
pub enum FrameError {
    /// Larger than [`MAX_FRAME`].
    TooLarge(usize),
    /// Not a valid frame.
    Malformed(String),
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FrameError::TooLarge(n) => {
                write!(f, "frame of {n} bytes exceeds the {MAX_FRAME}-byte limit")
            }
            FrameError::Malformed(m) => write!(f, "malformed frame: {m}"),
        }
    }
}

impl std::error::Error for FrameError {}

impl Frame {
    /// A frame with a body.
    pub fn new(body: frame::Body) -> Self {
        Frame { body: Some(body) }
    }

    /// Length-prefixed (u32 big-endian) encoding.
    pub fn encode_framed(&self) -> Result<Vec<u8>, FrameError> {
        use prost::Message;
        let len = self.encoded_len();
        if len > MAX_FRAME {
            return Err(FrameError::TooLarge(len));
        }
        let mut out = Vec::with_capacity(4 + len);
        out.extend_from_slice(&(len as u32).to_be_bytes());
        self.encode(&mut out)
            .map_err(|e| FrameError::Malformed(e.to_string()))?;
        Ok(out)
    }

    /// Decode one frame body (without the length prefix).
    pub fn decode_body(bytes: &[u8]) -> Result<Self, FrameError> {
        use prost::Message;
        if bytes.len() > MAX_FRAME {
            return Err(FrameError::TooLarge(bytes.len()));
        }
        let f = Frame::decode(bytes).map_err(|e| FrameError::Malformed(e.to_string()))?;
        if f.body.is_none() {
            return Err(FrameError::Malformed("empty frame".into()));
        }
        Ok(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_bad_bytes_are_errors() {
        let f = Frame::new(frame::Body::Down(Down {
            rv: 7,
            prev_rv: 3,
            changes: vec![Change {
                kind: ChangeKind::Put as i32,
                key: Some(ObjectKey {
                    resource: "pods".into(),
                    tenant: "t".into(),
                    namespace: "ns".into(),
                    name: "p".into(),
                }),
                object: b"{}".to_vec(),
            }],
        }));
        let bytes = f.encode_framed().unwrap();
        let len = u32::from_be_bytes(bytes[..4].try_into().unwrap()) as usize;
        assert_eq!(len, bytes.len() - 4);
        assert_eq!(Frame::decode_body(&bytes[4..]).unwrap(), f);
        assert!(Frame::decode_body(&[0xff, 0xff, 0xff]).is_err());
        assert!(Frame::decode_body(&[]).is_err());
        for cut in 0..bytes.len() - 4 {
            let _ = Frame::decode_body(&bytes[4..4 + cut]);
        }
        let big = Frame::new(frame::Body::Up(Up {
            seq: 1,
            kind: 0,
            key: None,
            object: vec![0; MAX_FRAME],
            base: Vec::new(),
        }));
        assert!(matches!(big.encode_framed(), Err(FrameError::TooLarge(_))));
    }

    #[test]
    fn log_frames_round_trip_with_unset_options() {
        let f = Frame::new(frame::Body::LogRequest(LogRequest {
            tenant: "acme".into(),
            namespace: "default".into(),
            pod: "p".into(),
            container: "c".into(),
            follow: true,
            tail_lines: Some(0),
            since_seconds: None,
            ..Default::default()
        }));
        let bytes = f.encode_framed().unwrap();
        let back = Frame::decode_body(&bytes[4..]).unwrap();
        assert_eq!(back, f);
        match back.body {
            Some(frame::Body::LogRequest(r)) => {
                assert_eq!(r.tail_lines, Some(0));
                assert_eq!(r.limit_bytes, None);
            }
            other => panic!("{other:?}"),
        }
        let r = Frame::new(frame::Body::LogResponse(LogResponse {
            code: 400,
            message: "bad".into(),
        }));
        assert_eq!(
            Frame::decode_body(&r.encode_framed().unwrap()[4..]).unwrap(),
            r
        );
    }
}

#[cfg(test)]
mod usage_frame_tests {
    use super::*;

    #[test]
    fn a_usage_request_round_trips() {
        let f = Frame::new(frame::Body::UsageRequest(UsageRequest { max_bytes: 1 }));
        let b = f.encode_framed().unwrap();
        let back = Frame::decode_body(&b[4..]).unwrap();
        assert_eq!(back, f);
    }
}
