//! `kubectl port-forward` with stock kubectl into a pod running under runc: at the edge's API
//! and at the cloud's (through the site's sync connection), over kubectl's WebSocket tunnel
//! and over plain SPDY, with parallel connections carrying tens of MB each, half-closes, a
//! closed port, a client that vanishes mid-transfer (nothing left open in the pod), and at the
//! edge with the cloud down.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tests::streams_env::{http_get, text, wait_output, Env, Tier};
use tests::wait_for;

const T: Duration = Duration::from_secs(60);
/// Size of the file the pod serves.
const BIG: usize = 20_000_000;

/// Send `msg` to the echo port, half-close, and read everything back.
fn echo(port: u16, msg: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(T))?;
    s.write_all(msg)?;
    s.shutdown(Shutdown::Write)?;
    let mut back = Vec::new();
    s.read_to_end(&mut back)?;
    Ok(back)
}

fn sha(b: &[u8]) -> String {
    Sha256::digest(b)
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect()
}

/// Connections established to the pod's ports 8080 and 9000, as the pod sees them.
fn established(e: &Env) -> usize {
    let o = e.kubectl(Tier::Edge, &["exec", "pf", "--", "netstat", "-tn"], None);
    text(&o.stdout)
        .lines()
        .filter(|l| l.contains("ESTABLISHED"))
        .filter(|l| {
            l.split_whitespace()
                .nth(3)
                .is_some_and(|a| a.ends_with(":8080") || a.ends_with(":9000"))
        })
        .count()
}

#[test]
fn port_forward_at_both_tiers_both_protocols_and_offline() {
    let mut e = Env::start();
    // httpd on the pod's loopback only (reachable inside its network namespace, not by its
    // address), and an echo server on 9000.
    e.pod(
        "pf",
        &[(
            "web",
            &format!(
                "mkdir -p /www && echo hello-from-the-pod > /www/index.html && head -c {BIG} /dev/urandom > /www/big && (nc -ll -p 9000 -e cat &) && exec httpd -f -p 127.0.0.1:8080 -h /www"
            ),
        )],
        "",
    );
    let want = wait_for_file_sha(&e);
    wait_for("the echo server listening in the pod", T, || {
        let o = e.kubectl(Tier::Edge, &["exec", "pf", "--", "netstat", "-tln"], None);
        text(&o.stdout).contains(":9000 ")
    });
    wait_for("httpd serving in the pod", T, || {
        let o = e.kubectl(
            Tier::Edge,
            &[
                "exec",
                "pf",
                "--",
                "wget",
                "-q",
                "-O",
                "-",
                "http://127.0.0.1:8080/",
            ],
            None,
        );
        o.status.success()
    });
    for (tier, spdy) in [
        (Tier::Edge, false),
        (Tier::Cloud, false),
        (Tier::Edge, true),
        (Tier::Cloud, true),
    ] {
        let what = format!("{tier:?}, {}", if spdy { "SPDY" } else { "WebSocket" });
        let f = e.port_forward(tier, "pf", &[8080, 9000], spdy);
        let (web, echo_port) = (f.ports[0], f.ports[1]);
        let (status, body) = http_get(web, "/");
        assert!(status.contains(" 200"), "{what}: {status}");
        assert_eq!(text(&body), "hello-from-the-pod\n", "{what}");
        // The echo: the client's half-close reaches the pod, whose end comes back.
        let back = echo(echo_port, b"ping\n");
        assert_eq!(
            back.as_deref().ok(),
            Some(&b"ping\n"[..]),
            "{what}: {back:?}; kubectl: {}",
            f.stderr.lock().unwrap()
        );
        // Parallel connections, each carrying the whole file.
        let started = Instant::now();
        let n = 4;
        let got: Vec<(String, Vec<u8>)> = (0..n)
            .map(|_| std::thread::spawn(move || http_get(web, "/big")))
            .collect::<Vec<_>>()
            .into_iter()
            .map(|h| h.join().expect("download"))
            .collect();
        let took = started.elapsed();
        for (status, body) in &got {
            assert!(status.contains(" 200"), "{what}: {status}");
            assert_eq!(body.len(), BIG, "{what}");
            assert_eq!(sha(body), want, "{what}");
        }
        eprintln!(
            "port-forward {what}: {n} parallel connections x {BIG} bytes in {took:?} ({:.1} MiB/s)",
            (n * BIG) as f64 / took.as_secs_f64() / (1024.0 * 1024.0)
        );
        let stderr = f.stderr.lock().unwrap().clone();
        assert!(
            !stderr.contains("error"),
            "{what}: kubectl reported: {stderr}"
        );
    }

    // A closed port: kubelet's error on the error stream, which kubectl shows (and then ends).
    let f = e.port_forward(Tier::Cloud, "pf", &[8081], false);
    let mut s = TcpStream::connect(("127.0.0.1", f.ports[0])).unwrap();
    s.set_read_timeout(Some(T)).unwrap();
    let mut nothing = Vec::new();
    let _ = s.read_to_end(&mut nothing);
    assert!(nothing.is_empty());
    wait_for("kubectl to show the closed port's error", T, || {
        let err = f.stderr.lock().unwrap().clone();
        err.contains("error forwarding port 8081") && err.to_lowercase().contains("refused")
    });
    drop(f);

    // A missing pod: kube-apiserver's answer.
    let o = e.kubectl(Tier::Cloud, &["port-forward", "pod/nope", ":80"], None);
    assert!(!o.status.success());
    assert!(
        text(&o.stderr).contains("pods \"nope\" not found"),
        "{}",
        text(&o.stderr)
    );

    // Raw clients: an unknown stream protocol is refused (403), a malformed frame after the
    // upgrade ends the session with a GOAWAY (nothing panics; the server goes on).
    let o = e.python("raw_pf.py", RAW_PY, &[]);
    assert!(o.status.success(), "python: {}", text(&o.stderr));
    assert_eq!(
        text(&o.stdout),
        "v9: 403\nspdy: 101 goaway\n",
        "{}",
        text(&o.stderr)
    );

    // The Python client: its WebSocket channel protocol (`v4.channel.k8s.io`, ports in the query).
    let o = e.python("pf.py", PY, &[]);
    assert!(o.status.success(), "python: {}", text(&o.stderr));
    assert_eq!(
        text(&o.stdout),
        "200 hello-from-the-pod\necho ping\nclosed: True\n",
        "{}",
        text(&o.stderr)
    );

    // A client that vanishes with a connection open leaves nothing open in the pod.
    let before = established(&e);
    let mut f = e.port_forward(Tier::Cloud, "pf", &[9000], false);
    let mut s = TcpStream::connect(("127.0.0.1", f.ports[0])).unwrap();
    s.set_read_timeout(Some(T)).unwrap();
    s.write_all(b"x").unwrap();
    let mut one = [0u8; 1];
    s.read_exact(&mut one).unwrap();
    assert_eq!(&one, b"x");
    assert_eq!(
        established(&e),
        before + 1,
        "the open connection, seen in the pod"
    );
    f.child.kill().unwrap();
    wait_for("the pod's connection closed with its client", T, || {
        established(&e) == before
    });
    drop(s);

    // The cloud down: port-forward at the edge still works.
    e.cc.kill9();
    let f = e.port_forward(Tier::Edge, "pf", &[8080], false);
    let (status, body) = http_get(f.ports[0], "/");
    assert!(status.contains(" 200"), "offline: {status}");
    assert_eq!(text(&body), "hello-from-the-pod\n");
}

/// The sha256 of the pod's file, once it is written whole.
fn wait_for_file_sha(e: &Env) -> String {
    let mut sum = String::new();
    wait_for("the pod's file written", T, || {
        let o = wait_output(
            e.spawn(
                Tier::Edge,
                &[
                    "exec",
                    "pf",
                    "--",
                    "sh",
                    "-c",
                    &format!("[ $(wc -c < /www/big) = {BIG} ] && sha256sum /www/big"),
                ],
                false,
            ),
            T,
            &["exec"],
        );
        sum = text(&o.stdout)
            .split_whitespace()
            .next()
            .unwrap_or("")
            .to_string();
        o.status.success() && sum.len() == 64
    });
    sum
}

/// A raw TLS client of `pods/portforward` (the Python client's configuration loader gives the
/// server, CA and token): an unknown protocol, then a malformed frame after a good upgrade.
const RAW_PY: &str = r#"
import socket, ssl, sys, urllib.parse
from kubernetes import client, config
config.load_kube_config(sys.argv[1])
c = client.Configuration.get_default_copy()
u = urllib.parse.urlparse(c.host)
ctx = ssl.create_default_context(cafile=c.ssl_ca_cert)
ctx.check_hostname = False
auth = c.get_api_key_with_prefix("authorization") or c.get_api_key_with_prefix("BearerToken")

def upgrade(version):
    s = ctx.wrap_socket(socket.create_connection((u.hostname, u.port)), server_hostname=u.hostname)
    s.sendall((
        "POST /api/v1/namespaces/default/pods/pf/portforward HTTP/1.1\r\n"
        f"Host: {u.netloc}\r\nAuthorization: {auth}\r\nConnection: Upgrade\r\n"
        f"Upgrade: SPDY/3.1\r\nX-Stream-Protocol-Version: {version}\r\nContent-Length: 0\r\n\r\n"
    ).encode())
    head = b""
    while b"\r\n\r\n" not in head:
        b = s.recv(1)
        if not b:
            break
        head += b
    return s, int(head.split(b" ")[1])

s, code = upgrade("v9.portforward.k8s.io")
print(f"v9: {code}")
s.close()
s, code = upgrade("portforward.k8s.io")
# A PING control frame of SPDY version 2.
s.sendall(bytes([0x80, 0x02, 0x00, 0x06, 0, 0, 0, 4, 0, 0, 0, 1]))
s.settimeout(10)
got = b""
while True:
    try:
        b = s.recv(4096)
    except (ssl.SSLError, OSError):
        break
    if not b:
        break
    got += b
print(f"spdy: {code} {'goaway' if got[:4] == bytes([0x80, 3, 0, 7]) else repr(got)}")
"#;

/// The Python client's port-forward: an HTTP GET on 8080 (the pod's end closes the session),
/// then the echo on 9000 and a port nobody listens on, side by side.
const PY: &str = r#"
import sys
from kubernetes import client, config
from kubernetes.stream import portforward
config.load_kube_config(sys.argv[1])
api = client.CoreV1Api()
pf = portforward(api.connect_get_namespaced_pod_portforward, "pf", "default", ports="8080")
s = pf.socket(8080)
s.sendall(b"GET / HTTP/1.0\r\n\r\n")
got = b""
while True:
    b = s.recv(65536)
    if not b:
        break
    got += b
head, _, body = got.partition(b"\r\n\r\n")
print(head.split(b" ")[1].decode(), body.decode().strip())
pf = portforward(api.connect_get_namespaced_pod_portforward, "pf", "default", ports="9000,8081")
s = pf.socket(9000)
s.sendall(b"ping\n")
back = b""
while len(back) < 5:
    back += s.recv(16)
print("echo", back.decode().strip())
closed = pf.socket(8081)
closed.settimeout(30)
closed.recv(1)
print("closed:", "refused" in (pf.error(8081) or "").lower())
pf.close()
"#;

/// Two replicas on one etcd, the site connected to one: exec, port-forward and top through the
/// other reach the pod too (relayed through the replica that holds the site's connection).
#[test]
fn exec_and_port_forward_through_either_replica() {
    use tests::{Agent, CloudCore, EdgeCore};
    let etcd = tests::etcd::Etcd::start();
    let reg = tests::registry::Registry::start();
    let scratch = tempfile::tempdir().unwrap();
    reg.push(
        &tests::registry::busybox_image(scratch.path(), "v1"),
        "busybox:v1",
    );
    let a = CloudCore::start_with(&["--etcd-servers", &etcd.url()]);
    let b = CloudCore::start_with(&["--etcd-servers", &etcd.url()]);
    let edge = EdgeCore::join(&a, "s1", &a.join_token("s1", "10m"));
    let _agent = Agent::start_with(&edge.kubeconfig(), "n1", &[reg.addr()]);
    wait_for("n1 Ready at the other replica", T, || {
        b.kubectl_ok(&["get", "nodes"])
            .lines()
            .any(|l| l.starts_with("n1 ") && l.contains(" Ready "))
    });
    let holder = || b.kubectl_ok(&["get", "edgesite", "s1", "-o", "jsonpath={.status.replica}"]);
    wait_for("the site's replica recorded", T, || {
        holder() == a.addr.to_string()
    });
    let yaml = format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: web}}\nspec:\n  nodeName: n1\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: c\n    image: {}/busybox:v1\n    command: [sh, -c, 'mkdir -p /www && echo relayed > /www/index.html && exec httpd -f -p 127.0.0.1:8080 -h /www']\n",
        reg.addr()
    );
    let f = scratch.path().join("web.yaml");
    std::fs::write(&f, yaml).unwrap();
    b.kubectl_ok(&["create", "-f", f.to_str().unwrap()]);
    wait_for("web Running", Duration::from_secs(90), || {
        b.kubectl_ok(&["get", "pod", "web", "-o", "jsonpath={.status.phase}"]) == "Running"
    });
    for cc in [&a, &b] {
        let o = tests::kubectl(
            &cc.kubeconfig(),
            scratch.path(),
            &["exec", "-i", "web", "--", "sh", "-c", "cat; exit 3"],
            Some("through a replica\n"),
        );
        assert_eq!(
            o.status.code(),
            Some(3),
            "exec through {}: {}",
            cc.addr,
            text(&o.stderr)
        );
        assert_eq!(
            text(&o.stdout),
            "through a replica\n",
            "exec through {}",
            cc.addr
        );
        let pf = tests::streams_env::port_forward(
            &cc.kubeconfig(),
            scratch.path(),
            "web",
            &[8080],
            false,
        );
        let (status, body) = http_get(pf.ports[0], "/");
        assert!(
            status.contains(" 200"),
            "port-forward through {}: {status}",
            cc.addr
        );
        assert_eq!(text(&body), "relayed\n", "port-forward through {}", cc.addr);
    }
    // kubectl top through either replica: the other relays the site's usage.
    for cc in [&a, &b] {
        wait_for(
            &format!("n1 in kubectl top node through {}", cc.addr),
            T,
            || {
                let o = cc.kubectl(&["top", "node", "--no-headers"]);
                o.status.success() && text(&o.stdout).starts_with("n1 ")
            },
        );
        wait_for(
            &format!("web in kubectl top pod through {}", cc.addr),
            T,
            || {
                let o = cc.kubectl(&["top", "pod", "--no-headers"]);
                o.status.success() && text(&o.stdout).starts_with("web ")
            },
        );
    }
    // A relay is for the region's administrators only.
    tests::kubectl(
        &b.kubeconfig(),
        scratch.path(),
        &["create", "-f", "-"],
        Some("apiVersion: v1\nkind: Tenant\nmetadata: {name: t1}\n"),
    );
    let tenant_kc = b.tenant_kubeconfig("t1");
    let raw = tests::kubectl(
        &tenant_kc,
        scratch.path(),
        &["create", "--raw", "/atoll/v1/streams", "-f", "-"],
        Some("{}"),
    );
    assert!(!raw.status.success());
    assert!(
        text(&raw.stderr).contains("forbidden"),
        "{}",
        text(&raw.stderr)
    );
}
