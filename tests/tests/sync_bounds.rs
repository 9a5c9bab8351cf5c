//! Bad input on the sync port: malformed or oversized frames close only that connection;
//! a site's credentials cannot be used to read or write another site's share.

use std::time::Duration;

use proto::sync::{frame::Body, ChangeKind, Frame, Hello, ObjectKey, Up, PROTOCOL};
use rustls::pki_types::pem::PemObject;
use sync::quic::{self, ClientAuth};
use tests::{names, wait_for, CloudCore, EdgeCore};

fn write(dir: &std::path::Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.to_string_lossy().into_owned()
}

async fn connect(cc: &CloudCore, auth: ClientAuth<'_>) -> quinn::Connection {
    let ep = quic::client(auth).unwrap();
    ep.connect(cc.sync_addr, "127.0.0.1")
        .unwrap()
        .await
        .unwrap()
}

/// Wait for the peer to end the stream or connection.
async fn closed(recv: &mut quinn::RecvStream) -> Option<Frame> {
    let mut last = None;
    loop {
        match tokio::time::timeout(Duration::from_secs(15), quic::read_frame(recv))
            .await
            .expect("the cloud must close the stream")
        {
            Ok(Some(f)) => last = Some(f),
            _ => return last,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_frames_and_cross_site_writes_are_contained() {
    let cc = CloudCore::start();
    let mut e1 = EdgeCore::join(&cc, "s1", &cc.join_token("s1", "10m"));
    let e2 = EdgeCore::join(&cc, "s2", &cc.join_token("s2", "10m"));
    e1.kubectl_ok(&[
        "apply",
        "-f",
        &write(
            e1.dir.path(),
            "n.yaml",
            "apiVersion: v1\nkind: Node\nmetadata: {name: n1}\n",
        ),
    ]);
    e2.kubectl_ok(&[
        "apply",
        "-f",
        &write(
            e2.dir.path(),
            "n.yaml",
            "apiVersion: v1\nkind: Node\nmetadata: {name: n2}\n",
        ),
    ]);
    wait_for("both nodes at the cloud", Duration::from_secs(30), || {
        names(&cc.kubectl_ok(&["get", "nodes"])).len() == 2
    });
    let pod2 = "apiVersion: v1\nkind: Pod\nmetadata: {name: at-s2}\nspec:\n  nodeName: n2\n  containers: [{name: c, image: busybox}]\n";
    cc.kubectl_ok(&["apply", "-f", &write(cc.dir.path(), "p2.yaml", pod2)]);

    let ca = std::fs::read(cc.dir.path().join("pki/ca.crt")).unwrap();
    let pin = quic::fingerprint(&rustls::pki_types::CertificateDer::from_pem_slice(&ca).unwrap());

    // 1. Garbage, then an oversized length prefix, from unauthenticated clients.
    for bytes in [
        vec![0x00, 0x00, 0x00, 0x05, 0xff, 0xff, 0xff, 0xff, 0xff],
        (u32::MAX).to_be_bytes().to_vec(),
    ] {
        let conn = connect(&cc, ClientAuth::Pinned(pin)).await;
        let (mut send, mut recv) = conn.open_bi().await.unwrap();
        send.write_all(&bytes).await.unwrap();
        let _ = closed(&mut recv).await;
    }
    // 2. No certificate: a Hello is refused.
    let conn = connect(&cc, ClientAuth::Pinned(pin)).await;
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    quic::write_frame(
        &mut send,
        &Frame::new(Body::Hello(Hello {
            protocol: PROTOCOL,
            site: "s2".into(),
            applied_rv: 0,
        })),
    )
    .await
    .unwrap();
    match closed(&mut recv).await.and_then(|f| f.body) {
        Some(Body::Error(e)) => assert!(!e.retryable && e.message.contains("join first"), "{e:?}"),
        other => panic!("expected an error, got {other:?}"),
    }

    // 3. s1's certificate cannot claim to be s2, nor write s2's pod status.
    e1.kill9();
    let creds: serde_json::Value =
        serde_json::from_slice(&std::fs::read(e1.dir.path().join("pki/site.json")).unwrap())
            .unwrap();
    let cert = creds["client_cert"].as_str().unwrap().as_bytes().to_vec();
    let key = creds["client_key"].as_str().unwrap().as_bytes().to_vec();
    let mutual = || ClientAuth::Mutual {
        ca_pem: &ca,
        cert_pem: &cert,
        key_pem: &key,
    };
    let conn = connect(&cc, mutual()).await;
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    quic::write_frame(
        &mut send,
        &Frame::new(Body::Hello(Hello {
            protocol: PROTOCOL,
            site: "s2".into(),
            applied_rv: 0,
        })),
    )
    .await
    .unwrap();
    match closed(&mut recv).await.and_then(|f| f.body) {
        Some(Body::Error(e)) => assert!(e.message.contains("does not match"), "{e:?}"),
        other => panic!("expected an error, got {other:?}"),
    }
    let conn = connect(&cc, mutual()).await;
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    quic::write_frame(
        &mut send,
        &Frame::new(Body::Hello(Hello {
            protocol: PROTOCOL,
            site: "s1".into(),
            applied_rv: 0,
        })),
    )
    .await
    .unwrap();
    let welcome = loop {
        match quic::read_frame(&mut recv)
            .await
            .unwrap()
            .and_then(|f| f.body)
        {
            Some(Body::Welcome(w)) => break w,
            Some(_) => continue,
            None => panic!("no welcome"),
        }
    };
    // Everything the cloud streams to s1 must be s1's: never s2's pod.
    let seq = welcome.up_acked + 1;
    let forged = serde_json::json!({"status": {"phase": "Failed", "reason": "Forged"}});
    let up = Up {
        seq,
        kind: ChangeKind::Status as i32,
        key: Some(ObjectKey {
            resource: "pods".into(),
            tenant: String::new(),
            namespace: "default".into(),
            name: "at-s2".into(),
        }),
        object: serde_json::to_vec(&forged).unwrap(),
        base: Vec::new(),
    };
    quic::write_frame(&mut send, &Frame::new(Body::Up(up)))
        .await
        .unwrap();
    let acked = tokio::time::timeout(Duration::from_secs(15), async {
        loop {
            match quic::read_frame(&mut recv)
                .await
                .unwrap()
                .and_then(|f| f.body)
            {
                Some(Body::UpAck(a)) if a.seq >= seq => return,
                Some(Body::Down(d)) => {
                    for c in d.changes {
                        assert_ne!(c.key.unwrap().name, "at-s2", "s2's pod was sent to s1");
                    }
                }
                Some(_) => {}
                None => panic!("closed before the ack"),
            }
        }
    })
    .await;
    assert!(
        acked.is_ok(),
        "the refused uplink must still be acknowledged so the stream moves on"
    );
    assert_ne!(
        cc.kubectl_ok(&["get", "pod", "at-s2", "-o", "jsonpath={.status.reason}"]),
        "Forged"
    );
    conn.close(0u32.into(), b"done");

    // 4. The other site was never disturbed: still connected, still receiving.
    assert_eq!(tests::site_connected(&cc, "s2"), "True");
    wait_for("s2's pod at s2", Duration::from_secs(30), || {
        names(&e2.kubectl_ok(&["get", "pods"])).contains(&"at-s2".to_string())
    });
    e1.restart();
}
