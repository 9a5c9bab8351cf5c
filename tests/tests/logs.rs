//! `kubectl logs` at the edge and at the cloud (tunnelled over the site's sync connection, no
//! inbound port at the site), and for a cloud node straight from its agent.
//!
//! The agent's log server (`edge_agent::logs`) runs in this process on a free port and serves
//! CRI log files this test writes, for nodes whose status advertises it; the agent binary's pod
//! runtime is not needed for what is tested here (the path from the API to the files).

use std::collections::HashSet;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use tests::{err, kubectl, ok, wait_for, CloudCore, EdgeCore};

/// The agent's log server, in process.
struct LogServer {
    /// Runs the server; dropped with it.
    _rt: tokio::runtime::Runtime,
    cancel: tokio_util::sync::CancellationToken,
    root: tempfile::TempDir,
    port: u16,
    allowed: edge_agent::logs::Allowed,
}

impl LogServer {
    fn start(ca_pem: Vec<u8>, allowed: &[&str]) -> Self {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let root = tempfile::tempdir().unwrap();
        let allowed: edge_agent::logs::Allowed = Arc::new(RwLock::new(
            allowed
                .iter()
                .map(|s| s.to_string())
                .collect::<HashSet<_>>(),
        ));
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let port = listener.local_addr().unwrap().port();
        let cancel = tokio_util::sync::CancellationToken::new();
        let (r, a, c) = (root.path().to_path_buf(), allowed.clone(), cancel.clone());
        rt.spawn(async move {
            edge_agent::logs::serve(listener, r, ca_pem, a, c)
                .await
                .unwrap()
        });
        LogServer {
            _rt: rt,
            cancel,
            root,
            port,
            allowed,
        }
    }

    fn dir(&self, pod: &str, uid: &str, container: &str) -> PathBuf {
        self.root
            .path()
            .join(format!("logs/-_default_{pod}_{uid}/{container}"))
    }

    /// Append CRI records (tag, content) stamped `age` seconds ago to an attempt's file.
    fn append(
        &self,
        pod: &str,
        uid: &str,
        container: &str,
        attempt: u32,
        age: i64,
        recs: &[(&str, &str)],
    ) {
        use std::io::Write;
        let dir = self.dir(pod, uid, container);
        std::fs::create_dir_all(&dir).unwrap();
        let ts = (chrono::Utc::now() - chrono::Duration::seconds(age))
            .to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join(format!("{attempt}.log")))
            .unwrap();
        for (tag, content) in recs {
            writeln!(f, "{ts} stdout {tag} {content}").unwrap();
        }
    }

    fn exit(&self, pod: &str, uid: &str, container: &str, attempt: u32) {
        std::fs::write(
            self.dir(pod, uid, container)
                .join(format!("{attempt}.exit")),
            r#"{"exitCode":0,"finishedAt":"2026-01-01T00:00:00Z"}"#,
        )
        .unwrap();
    }
}

impl Drop for LogServer {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

fn apply(kc: &Path, scratch: &Path, yaml: &str) {
    let args = ["apply", "-f", "-"];
    ok(kubectl(kc, scratch, &args, Some(yaml)), &args);
}

fn pod_yaml(name: &str, node: &str, containers: &[&str]) -> String {
    let cs: Vec<String> = containers
        .iter()
        .map(|c| format!("{{name: {c}, image: busybox}}"))
        .collect();
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: default}}\nspec:\n  nodeName: {node}\n  containers: [{}]\n",
        cs.join(", ")
    )
}

fn advertise(kc: &Path, scratch: &Path, node: &str, port: u16) {
    let patch = format!(
        r#"{{"status":{{"addresses":[{{"type":"InternalIP","address":"127.0.0.1"}}],"daemonEndpoints":{{"kubeletEndpoint":{{"Port":{port}}}}}}}}}"#
    );
    let args = [
        "patch",
        "node",
        node,
        "--subresource=status",
        "--type=merge",
        "-p",
        &patch,
    ];
    ok(kubectl(kc, scratch, &args, None), &args);
}

/// `kubectl logs -f ...` with its stdout lines delivered on a channel.
struct Follow {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Follow {
    fn start(kc: &Path, scratch: &Path, args: &[&str]) -> Self {
        let mut child = Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(kc)
            .arg("--cache-dir")
            .arg(scratch.join("kube-cache"))
            .args(args)
            .env("HOME", scratch)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn kubectl");
        let out = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for l in std::io::BufReader::new(out).lines() {
                let Ok(l) = l else { break };
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        Follow { child, lines }
    }

    fn wait_line(&mut self, want: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let mut seen = Vec::new();
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(l) if l == want => return,
                Ok(l) => seen.push(l),
                Err(_) => break,
            }
        }
        let _ = self.child.kill();
        let mut stderr = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            use std::io::Read;
            let _ = e.read_to_string(&mut stderr);
        }
        panic!("no line {want:?} within {timeout:?}; saw {seen:?}; stderr: {stderr}");
    }

    fn wait_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st;
            }
            assert!(Instant::now() < deadline, "kubectl logs -f did not end");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Follow {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn kubectl_logs_at_the_edge_through_the_cloud_and_from_cloud_nodes() {
    let t = Duration::from_secs(30);
    let cc = CloudCore::start();
    let mut e1 = EdgeCore::join(&cc, "s1", &cc.join_token("s1", "10m"));
    let ca = std::fs::read(cc.dir.path().join("pki/ca.crt")).unwrap();
    let agent = LogServer::start(ca, &["s1"]);
    let (ekc, escratch) = (e1.kubeconfig(), e1.dir.path().to_path_buf());
    let (ckc, cscratch) = (cc.kubeconfig(), cc.dir.path().to_path_buf());

    // Node n1 at the site, advertising the log server; pods placed on it from the cloud.
    apply(
        &ekc,
        &escratch,
        "apiVersion: v1\nkind: Node\nmetadata: {name: n1}\n",
    );
    advertise(&ekc, &escratch, "n1", agent.port);
    wait_for("n1 at the cloud with its site label", t, || {
        cc.kubectl_ok(&["get", "nodes", "-l", "atoll.io/site=s1", "-o", "name"])
            .contains("node/n1")
    });
    apply(&ckc, &cscratch, &pod_yaml("p1", "n1", &["c"]));
    apply(&ckc, &cscratch, &pod_yaml("p2", "n1", &["a", "b"]));
    wait_for("the pods at the edge", t, || {
        e1.kubectl(&["get", "pod", "p1", "p2"]).status.success()
    });
    let uid = |p: &str| cc.kubectl_ok(&["get", "pod", p, "-o", "jsonpath={.metadata.uid}"]);
    let (u1, u2) = (uid("p1"), uid("p2"));
    // p1/c: attempt 0 ended; attempt 1 is current, one line written in two partial records.
    agent.append("p1", &u1, "c", 0, 7200, &[("F", "zero-1"), ("F", "zero-2")]);
    agent.exit("p1", &u1, "c", 0);
    agent.append("p1", &u1, "c", 1, 7200, &[("F", "old line")]);
    agent.append(
        "p1",
        &u1,
        "c",
        1,
        0,
        &[("P", "hello "), ("F", "world"), ("F", "last")],
    );
    agent.append("p2", &u2, "a", 0, 0, &[("F", "from a")]);
    agent.append("p2", &u2, "b", 0, 0, &[("F", "from b")]);

    for (tier, kc, scratch) in [("edge", &ekc, &escratch), ("cloud", &ckc, &cscratch)] {
        let run = |args: &[&str]| kubectl(kc, scratch, args, None);
        let logs = |args: &[&str]| ok(run(args), args);
        assert_eq!(
            logs(&["logs", "p1"]),
            "old line\nhello world\nlast\n",
            "{tier}"
        );
        assert_eq!(
            logs(&["logs", "p1", "--tail=2"]),
            "hello world\nlast\n",
            "{tier}"
        );
        assert_eq!(
            logs(&["logs", "p1", "--previous"]),
            "zero-1\nzero-2\n",
            "{tier}"
        );
        assert_eq!(
            logs(&["logs", "p1", "--limit-bytes=8"]),
            "old line",
            "{tier}"
        );
        assert_eq!(
            logs(&["logs", "p1", "--since=1h"]),
            "hello world\nlast\n",
            "{tier}"
        );
        let stamped = logs(&["logs", "p1", "--timestamps", "--tail=1"]);
        let (ts, line) = stamped.trim_end().split_once(' ').unwrap();
        assert!(
            chrono::DateTime::parse_from_rfc3339(ts).is_ok() && line == "last",
            "{tier}: {stamped}"
        );
        assert_eq!(logs(&["logs", "p2", "-c", "b"]), "from b\n", "{tier}");
        // The server's checks, with kube-apiserver's messages.
        let args = ["get", "--raw", "/api/v1/namespaces/default/pods/p2/log"];
        let e = err(run(&args), &args);
        assert!(
            e.contains("a container name must be specified for pod p2, choose one of: [a b]"),
            "{tier}: {e}"
        );
        let args = ["logs", "p1", "-c", "nope"];
        let e = err(run(&args), &args);
        assert!(
            e.contains("container nope is not valid for pod p1"),
            "{tier}: {e}"
        );
        let args = ["logs", "p2", "-c", "a", "--previous"];
        let e = err(run(&args), &args);
        assert!(
            e.contains("previous terminated container \"a\" in pod \"p2\" not found"),
            "{tier}: {e}"
        );
        let args = [
            "get",
            "--raw",
            "/api/v1/namespaces/default/pods/p1/log?tailLines=-1",
        ];
        let e = err(run(&args), &args);
        assert!(
            e.contains("must be greater than or equal to 0"),
            "{tier}: {e}"
        );
    }

    // -f through the cloud: a line written after the request started arrives; the stream ends
    // when the attempt exits.
    let mut f = Follow::start(&ckc, &cscratch, &["logs", "-f", "p1"]);
    f.wait_line("last", t);
    agent.append("p1", &u1, "c", 1, 0, &[("F", "appended later")]);
    f.wait_line("appended later", t);
    agent.exit("p1", &u1, "c", 1);
    assert!(f.wait_exit(t).success());

    // A client that goes away releases its tunnel (more than the per-site cap, in turn), at
    // the edge too.
    agent.append("p1", &u1, "c", 2, 0, &[("F", "attempt two")]);
    for i in 0..20 {
        let (kc, scratch) = if i % 4 == 0 {
            (&ekc, &escratch)
        } else {
            (&ckc, &cscratch)
        };
        let mut f = Follow::start(kc, scratch, &["logs", "-f", "p1"]);
        f.wait_line("attempt two", t);
    }
    assert_eq!(cc.kubectl_ok(&["logs", "p1"]), "attempt two\n");

    // The agent refuses clients outside its allowed set.
    agent.allowed.write().unwrap().remove("s1");
    let args = ["logs", "p1"];
    let e = err(e1.kubectl(&args), &args);
    assert!(e.contains("refused"), "{e}");
    agent.allowed.write().unwrap().insert("s1".into());

    // Only the region's site certificate for s1 and the kubelet client may read: a certificate
    // from the same CA with CN s1 but another organization, or another site's, is refused.
    let addr: std::net::SocketAddr = format!("127.0.0.1:{}", agent.port).parse().unwrap();
    let path = format!("/containerLogs/-/default/p1/c?uid={u1}");
    let rt = tokio::runtime::Runtime::new().unwrap();
    for (org, cn, allowed) in [
        ("atoll:sites", "s1", true),
        ("atoll:control-plane", "atoll:kubelet-client", true),
        ("atoll", "s1", false),
        ("atoll:control-plane", "s1", false),
        ("atoll:sites", "s2", false),
        ("atoll:sites", "atoll:kubelet-client", false),
    ] {
        let (cert, key) = region_cert(cc.dir.path(), org, cn);
        let got = rt.block_on(apiserver::logs::fetch(addr, &cert, &key, &path, "n1"));
        match (got, allowed) {
            (Ok(_), true) => {}
            (Err(e), false) => assert!(e.message.contains("refused"), "{org}/{cn}: {e:?}"),
            (got, _) => panic!(
                "{org}/{cn}: expected allowed={allowed}, got {:?}",
                got.err()
            ),
        }
    }

    // A cloud node (no site label): straight from its agent with the cloud's client cert.
    apply(
        &ckc,
        &cscratch,
        "apiVersion: v1\nkind: Node\nmetadata: {name: c1}\n",
    );
    advertise(&ckc, &cscratch, "c1", agent.port);
    apply(&ckc, &cscratch, &pod_yaml("p3", "c1", &["c"]));
    let u3 = uid("p3");
    agent.append("p3", &u3, "c", 0, 0, &[("F", "cloud node line")]);
    assert_eq!(cc.kubectl_ok(&["logs", "p3"]), "cloud node line\n");

    // Site gone: a clear 503 at the cloud.
    e1.kill9();
    wait_for("s1 disconnected", Duration::from_secs(40), || {
        tests::site_connected(&cc, "s1") == "False"
    });
    let args = ["logs", "p1"];
    let e = err(cc.kubectl(&args), &args);
    assert!(e.contains("site s1 is not connected"), "{e}");
}

/// A client certificate signed by the region CA in `dir/pki`, with subject O=`org`, CN=`cn`.
fn region_cert(dir: &Path, org: &str, cn: &str) -> (Vec<u8>, Vec<u8>) {
    let ca_pem = std::fs::read_to_string(dir.join("pki/ca.crt")).unwrap();
    let ca_key =
        rcgen::KeyPair::from_pem(&std::fs::read_to_string(dir.join("pki/ca.key")).unwrap())
            .unwrap();
    let issuer = rcgen::CertificateParams::from_ca_cert_pem(&ca_pem)
        .unwrap()
        .self_signed(&ca_key)
        .unwrap();
    let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    p.distinguished_name.push(rcgen::DnType::CommonName, cn);
    p.distinguished_name
        .push(rcgen::DnType::OrganizationName, org);
    p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = p.signed_by(&key, &issuer, &ca_key).unwrap();
    (cert.pem().into_bytes(), key.serialize_pem().into_bytes())
}

/// A fake site for `s1` (its real credentials) that answers the hub's log streams with
/// `answer`, keeping the sync session alive meanwhile.
async fn fake_site<F, Fut>(
    cc: &CloudCore,
    creds: &serde_json::Value,
    answer: F,
) -> quinn::Connection
where
    F: Fn(quinn::SendStream, quinn::RecvStream) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    use proto::sync::{frame::Body, DownAck, Frame, Hello, PROTOCOL};
    use sync::quic;
    let ca = std::fs::read(cc.dir.path().join("pki/ca.crt")).unwrap();
    let cert = creds["client_cert"].as_str().unwrap().as_bytes().to_vec();
    let key = creds["client_key"].as_str().unwrap().as_bytes().to_vec();
    let ep = quic::client(quic::ClientAuth::Mutual {
        ca_pem: &ca,
        cert_pem: &cert,
        key_pem: &key,
    })
    .unwrap();
    let conn = ep
        .connect(cc.sync_addr, "127.0.0.1")
        .unwrap()
        .await
        .unwrap();
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    let hello = Frame::new(Body::Hello(Hello {
        protocol: PROTOCOL,
        site: "s1".into(),
        applied_rv: 0,
    }));
    quic::write_frame(&mut send, &hello).await.unwrap();
    tokio::spawn(async move {
        let _ep = ep;
        while let Ok(Some(f)) = quic::read_frame(&mut recv).await {
            let reply = match f.body {
                Some(Body::Ping(p)) => Some(Body::Pong(p)),
                Some(Body::Down(d)) if d.prev_rv != 0 => Some(Body::DownAck(DownAck { rv: d.rv })),
                Some(Body::SnapshotEnd(e)) => Some(Body::DownAck(DownAck { rv: e.rv })),
                _ => None,
            };
            if let Some(b) = reply {
                if quic::write_frame(&mut send, &Frame::new(b)).await.is_err() {
                    return;
                }
            }
        }
    });
    let answer = Arc::new(answer);
    let c = conn.clone();
    tokio::spawn(async move {
        while let Ok((send, recv)) = c.accept_bi().await {
            tokio::spawn(answer(send, recv));
        }
    });
    conn
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_site_cannot_hurt_the_cloud_through_log_streams() {
    use proto::sync::{frame::Body, Frame, LogResponse};
    let t = Duration::from_secs(30);
    let cc = CloudCore::start();
    let mut e1 = EdgeCore::join(&cc, "s1", &cc.join_token("s1", "10m"));
    let (ekc, escratch) = (e1.kubeconfig(), e1.dir.path().to_path_buf());
    let (ckc, cscratch) = (cc.kubeconfig(), cc.dir.path().to_path_buf());
    apply(
        &ekc,
        &escratch,
        "apiVersion: v1\nkind: Node\nmetadata: {name: n1}\n",
    );
    wait_for("n1 at the cloud", t, || {
        cc.kubectl_ok(&["get", "nodes", "-l", "atoll.io/site=s1", "-o", "name"])
            .contains("node/n1")
    });
    apply(&ckc, &cscratch, &pod_yaml("p1", "n1", &["c"]));
    let creds: serde_json::Value =
        serde_json::from_slice(&std::fs::read(e1.dir.path().join("pki/site.json")).unwrap())
            .unwrap();
    e1.kill9();

    // Each log stream the hub opens gets the next misbehaviour.
    let stopped = Arc::new(tokio::sync::Notify::new());
    let n = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (s2, n2) = (stopped.clone(), n.clone());
    let _conn = fake_site(&cc, &creds, move |mut send, _recv| {
        let (stopped, i) = (
            s2.clone(),
            n2.fetch_add(1, std::sync::atomic::Ordering::SeqCst),
        );
        async move {
            let head = |code: u32, message: String| {
                Frame::new(Body::LogResponse(LogResponse { code, message }))
            };
            match i {
                0 => {
                    let _ = send
                        .write_all(&[0, 0, 0, 5, 0xff, 0xff, 0xff, 0xff, 0xff])
                        .await;
                }
                1 => {
                    let _ =
                        sync::quic::write_frame(&mut send, &head(400, "x".repeat(2_000_000))).await;
                }
                2 => {
                    let _ = sync::quic::write_frame(&mut send, &head(99_999, "odd".into())).await;
                }
                _ => {
                    // 200, then a flood that ignores every option, until the cloud stops it.
                    let _ = sync::quic::write_frame(&mut send, &head(200, String::new())).await;
                    let mut line = vec![b'y'; 64 * 1024];
                    line.push(b'\n');
                    let chunk = bytes::Bytes::from(line);
                    while send.write_chunk(chunk.clone()).await.is_ok() {}
                    stopped.notify_one();
                    return;
                }
            }
            let _ = send.finish();
            let _ = send.stopped().await;
        }
    })
    .await;
    wait_for("the fake site connected", t, || {
        tests::site_connected(&cc, "s1") == "True"
    });

    let logs_err = |args: &'static [&'static str]| {
        let (kc, scratch) = (ckc.clone(), cscratch.clone());
        tokio::task::spawn_blocking(move || err(kubectl(&kc, &scratch, args, None), args))
    };
    let e = logs_err(&["logs", "p1"]).await.unwrap();
    assert!(e.contains("site s1 gave no valid answer"), "{e}");
    let e = logs_err(&["logs", "p1"]).await.unwrap();
    assert!(
        e.contains("xxxx") && e.len() < 4096,
        "{} bytes: {}",
        e.len(),
        &e[..200.min(e.len())]
    );
    let e = logs_err(&["logs", "p1"]).await.unwrap();
    assert!(e.contains("odd"), "{e}");

    // The flood reaches the client; when the client goes away the cloud stops the site.
    let (kc, scratch) = (ckc.clone(), cscratch.clone());
    let got = tokio::task::spawn_blocking(move || {
        let f = Follow::start(&kc, &scratch, &["logs", "p1"]);
        let line = f.lines.recv_timeout(Duration::from_secs(30));
        drop(f);
        line.map(|l| l.len()).unwrap_or(0)
    })
    .await
    .unwrap();
    assert!(got > 0, "no bytes of the flood reached the client");
    tokio::time::timeout(t, stopped.notified())
        .await
        .expect("the cloud did not stop the site's stream after its client left");

    // The cloud is fine and still serves.
    assert!(cc.kubectl_ok(&["get", "--raw", "/healthz"]).contains("ok"));
}

/// Two replicas on one etcd: `kubectl logs` through the replica the site is not connected to
/// reaches the pod too (relayed through the replica that holds the site's connection).
#[test]
fn kubectl_logs_through_either_replica() {
    let t = Duration::from_secs(30);
    let etcd = tests::etcd::Etcd::start();
    let a = CloudCore::start_with(&["--etcd-servers", &etcd.url()]);
    let b = CloudCore::start_with(&["--etcd-servers", &etcd.url()]);
    let e1 = EdgeCore::join(&a, "s1", &a.join_token("s1", "10m"));
    let agent = LogServer::start(
        std::fs::read(a.dir.path().join("pki/ca.crt")).unwrap(),
        &["s1"],
    );
    let (ekc, escratch) = (e1.kubeconfig(), e1.dir.path().to_path_buf());
    apply(
        &ekc,
        &escratch,
        "apiVersion: v1\nkind: Node\nmetadata: {name: n1}\n",
    );
    advertise(&ekc, &escratch, "n1", agent.port);
    wait_for("n1 at the cloud", t, || {
        b.kubectl(&["get", "node", "n1"]).status.success()
    });
    apply(&b.kubeconfig(), b.dir.path(), &pod_yaml("p1", "n1", &["c"]));
    wait_for("the pod at the edge", t, || {
        e1.kubectl(&["get", "pod", "p1"]).status.success()
    });
    let uid = b.kubectl_ok(&["get", "pod", "p1", "-o", "jsonpath={.metadata.uid}"]);
    agent.append("p1", &uid, "c", 0, 0, &[("F", "relayed")]);
    let holder = || b.kubectl_ok(&["get", "edgesite", "s1", "-o", "jsonpath={.status.replica}"]);
    wait_for("the site's replica recorded", t, || {
        holder() == a.addr.to_string()
    });
    for cc in [&a, &b] {
        assert_eq!(
            cc.kubectl_ok(&["logs", "p1"]),
            "relayed\n",
            "through {}",
            cc.addr
        );
    }
    // The replica not holding the site has left its status alone meanwhile.
    assert_eq!(holder(), a.addr.to_string());
    assert!(b.kubectl_ok(&["get", "edgesites"]).contains(" True "));
}
