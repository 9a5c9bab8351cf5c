//! Cloud ↔ edge replication.
//!
//! [`protocol`] is sans-IO: two per-connection state machines ([`protocol::EdgeSession`],
//! [`protocol::HubSession`]) fed frames and virtual time, emitting frames to send and actions
//! for their driver. No sockets, no clock, no runtime: partitions, duplicates, reordering and
//! reconnect storms are deterministic unit tests (see `tests` in that module).

pub mod protocol;
pub mod quic;

#[cfg(test)]
mod sim;
