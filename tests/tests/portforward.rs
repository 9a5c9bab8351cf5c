//! `kubectl port-forward` with stock kubectl into a pod running under runc: at the edge's API
//! and at the cloud's (through the site's sync connection), over kubectl's WebSocket tunnel
//! and over plain SPDY, with parallel connections carrying tens of MB each, half-closes, a
//! closed port, a client that vanishes mid-transfer (nothing left open in the pod), and at the
//! edge with the cloud down.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::process::Child;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tests::streams_env::{text, wait_output, Env, Tier};
use tests::wait_for;

const T: Duration = Duration::from_secs(60);
/// Size of the file the pod serves.
const BIG: usize = 20_000_000;

/// A running `kubectl port-forward` and the local ports it listens on, in the order asked.
struct Forward {
    child: Child,
    ports: Vec<u16>,
    stderr: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Drop for Forward {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Start `kubectl port-forward pod/P :R...` at `tier`, over SPDY when `spdy` (kubectl's
/// WebSocket tunnel turned off), and wait until it forwards every port.
fn forward(e: &Env, tier: Tier, pod: &str, remote: &[u16], spdy: bool) -> Forward {
    let mut args = vec!["port-forward".to_string(), format!("pod/{pod}")];
    args.extend(remote.iter().map(|r| format!(":{r}")));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut cmd = std::process::Command::new("kubectl");
    cmd.arg("--kubeconfig")
        .arg(e.kubeconfig(tier))
        .arg("--cache-dir")
        .arg(e.scratch().join("kube-cache"))
        .args(&args)
        .env("HOME", e.scratch())
        .env(
            "KUBECTL_PORT_FORWARD_WEBSOCKETS",
            if spdy { "false" } else { "true" },
        )
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().expect("spawn kubectl");
    let stderr = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let mut err = child.stderr.take().expect("stderr");
    let sink = stderr.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = err.read(&mut buf) {
            if n == 0 {
                break;
            }
            sink.lock()
                .unwrap()
                .push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    });
    // "Forwarding from 127.0.0.1:LOCAL -> REMOTE", once per port (and once more for [::1]).
    let (tx, rx) = std::sync::mpsc::channel();
    let out = child.stdout.take().expect("stdout");
    std::thread::spawn(move || {
        // Read to the end, whoever listens: kubectl writes a line per connection, and a
        // closed pipe would end it (SIGPIPE).
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut ports = vec![0u16; remote.len()];
    let deadline = Instant::now() + T;
    while ports.contains(&0) {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = rx.recv_timeout(left).unwrap_or_else(|_| {
            panic!(
                "kubectl port-forward at {tier:?} did not start: {}",
                stderr.lock().unwrap()
            )
        });
        let Some(rest) = line.strip_prefix("Forwarding from 127.0.0.1:") else {
            continue;
        };
        let (local, r) = rest.split_once(" -> ").expect("forwarding line");
        let i = remote
            .iter()
            .position(|p| p.to_string() == r.trim())
            .expect("a port asked for");
        ports[i] = local.parse().expect("local port");
    }
    Forward {
        child,
        ports,
        stderr,
    }
}

/// GET `path` over a fresh connection to `port`: the status line and the body.
fn get(port: u16, path: &str) -> (String, Vec<u8>) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect to the forwarded port");
    s.set_read_timeout(Some(T)).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: pod\r\n\r\n").unwrap();
    let mut all = Vec::new();
    s.read_to_end(&mut all).expect("read the answer");
    let split = all
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no HTTP answer: {:?}", text(&all)));
    let head = text(&all[..split]);
    let status = head.lines().next().unwrap_or("").to_string();
    (status, all[split + 4..].to_vec())
}

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
        let f = forward(&e, tier, "pf", &[8080, 9000], spdy);
        let (web, echo_port) = (f.ports[0], f.ports[1]);
        let (status, body) = get(web, "/");
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
            .map(|_| std::thread::spawn(move || get(web, "/big")))
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
    let f = forward(&e, Tier::Cloud, "pf", &[8081], false);
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

    // A client that vanishes with a connection open leaves nothing open in the pod.
    let before = established(&e);
    let mut f = forward(&e, Tier::Cloud, "pf", &[9000], false);
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
    let f = forward(&e, Tier::Edge, "pf", &[8080], false);
    let (status, body) = get(f.ports[0], "/");
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
