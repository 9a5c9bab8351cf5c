//! A site that speaks raw sync frames with real credentials: for testing what the hub accepts
//! from a site that does not run edge-core (or runs a hostile one).

use std::path::Path;
use std::time::Duration;

use proto::sync::{frame::Body, Change, ChangeKind, Frame, Hello, ObjectKey, Up, UpAck, PROTOCOL};
use sync::quic::{self, ClientAuth};

use crate::CloudCore;

/// A site's client certificate and key (PEM), from its edge-core data dir.
pub fn site_creds(edge_dir: &Path) -> (Vec<u8>, Vec<u8>) {
    let creds: serde_json::Value =
        serde_json::from_slice(&std::fs::read(edge_dir.join("pki/site.json")).expect("site.json"))
            .expect("site.json is JSON");
    let s = |f: &str| creds[f].as_str().expect("a PEM field").as_bytes().to_vec();
    (s("client_cert"), s("client_key"))
}

/// An open sync session of a raw site.
pub struct RawSite {
    conn: quinn::Connection,
    send: quinn::SendStream,
    recv: quinn::RecvStream,
    /// The cloud's highest applied uplink sequence, from its `Welcome`.
    pub up_acked: u64,
    next_seq: u64,
    /// Downlink changes seen so far.
    pub down: Vec<Change>,
}

impl RawSite {
    /// Connect to `cc` with `cert`/`key` and say Hello as `site`: the session, or the cloud's
    /// refusal (its error message).
    pub async fn hello(
        cc: &CloudCore,
        cert: &[u8],
        key: &[u8],
        site: &str,
    ) -> Result<RawSite, String> {
        let ca = std::fs::read(cc.dir.path().join("pki/ca.crt")).expect("ca.crt");
        let ep = quic::client(ClientAuth::Mutual {
            ca_pem: &ca,
            cert_pem: cert,
            key_pem: key,
        })
        .map_err(|e| e.to_string())?;
        let conn = ep
            .connect(cc.sync_addr, "127.0.0.1")
            .map_err(|e| e.to_string())?
            .await
            .map_err(|e| e.to_string())?;
        let (mut send, mut recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
        let hello = Frame::new(Body::Hello(Hello {
            protocol: PROTOCOL,
            site: site.into(),
            applied_rv: 0,
        }));
        quic::write_frame(&mut send, &hello)
            .await
            .map_err(|e| e.to_string())?;
        let mut down = Vec::new();
        let welcome = tokio::time::timeout(Duration::from_secs(15), async {
            loop {
                match quic::read_frame(&mut recv).await {
                    Ok(Some(Frame {
                        body: Some(Body::Welcome(w)),
                    })) => return Ok(w),
                    Ok(Some(Frame {
                        body: Some(Body::Error(e)),
                    })) => return Err(e.message),
                    Ok(Some(Frame {
                        body: Some(Body::Down(d)),
                    })) => down.extend(d.changes),
                    Ok(Some(_)) => {}
                    Ok(None) => return Err("the cloud closed the stream".to_string()),
                    Err(e) => return Err(e.to_string()),
                }
            }
        })
        .await
        .map_err(|_| "no answer to Hello".to_string())??;
        Ok(RawSite {
            conn,
            send,
            recv,
            up_acked: welcome.up_acked,
            next_seq: welcome.up_acked + 1,
            down,
        })
    }

    /// Send one uplink change; returns its sequence number.
    pub async fn up(
        &mut self,
        kind: ChangeKind,
        key: ObjectKey,
        object: &serde_json::Value,
    ) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        let object = if object.is_null() {
            Vec::new()
        } else {
            serde_json::to_vec(object).expect("json")
        };
        let f = Frame::new(Body::Up(Up {
            seq,
            kind: kind as i32,
            key: Some(key),
            object,
            base: Vec::new(),
        }));
        quic::write_frame(&mut self.send, &f)
            .await
            .expect("write an uplink frame");
        seq
    }

    /// Read until the cloud acknowledges `seq`, collecting downlink changes meanwhile.
    pub async fn acked(&mut self, seq: u64) -> UpAck {
        tokio::time::timeout(Duration::from_secs(20), async {
            loop {
                match quic::read_frame(&mut self.recv).await {
                    Ok(Some(Frame {
                        body: Some(Body::UpAck(a)),
                    })) if a.seq >= seq => return a,
                    Ok(Some(Frame {
                        body: Some(Body::Down(d)),
                    })) => self.down.extend(d.changes),
                    Ok(Some(Frame {
                        body: Some(Body::Error(e)),
                    })) => panic!("the cloud ended the session: {}", e.message),
                    Ok(Some(_)) => {}
                    Ok(None) => panic!("the cloud closed the stream before acking {seq}"),
                    Err(e) => panic!("reading from the cloud: {e}"),
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("no ack of uplink {seq}"))
    }

    /// Read until a downlink change satisfies `pred` (acking downlinks as a site does), with
    /// the changes seen so far in [`RawSite::down`].
    pub async fn down_until(&mut self, mut pred: impl FnMut(&Change) -> bool) {
        if self.down.iter().any(&mut pred) {
            return;
        }
        tokio::time::timeout(Duration::from_secs(20), async {
            loop {
                match quic::read_frame(&mut self.recv).await {
                    Ok(Some(Frame {
                        body: Some(Body::Down(d)),
                    })) => {
                        let hit = d.changes.iter().any(&mut pred);
                        let ack = Frame::new(Body::DownAck(proto::sync::DownAck { rv: d.rv }));
                        self.down.extend(d.changes);
                        let _ = quic::write_frame(&mut self.send, &ack).await;
                        if hit {
                            return;
                        }
                    }
                    Ok(Some(Frame {
                        body: Some(Body::Error(e)),
                    })) => panic!("the cloud ended the session: {}", e.message),
                    Ok(Some(_)) => {}
                    Ok(None) => panic!("the cloud closed the stream"),
                    Err(e) => panic!("reading from the cloud: {e}"),
                }
            }
        })
        .await
        .expect("the awaited downlink change never came");
    }

    /// Close the connection.
    pub fn close(self) {
        self.conn.close(0u32.into(), b"done");
    }
}

/// The key of an object, as the sync frames carry it.
pub fn key(resource: &str, tenant: &str, namespace: &str, name: &str) -> ObjectKey {
    ObjectKey {
        resource: resource.into(),
        tenant: tenant.into(),
        namespace: namespace.into(),
        name: name.into(),
    }
}
