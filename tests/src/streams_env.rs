//! The environment of the container-stream tests (exec, attach, cp, port-forward): a region
//! with one site, one agent and a registry, driven with stock kubectl at either tier.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::registry::Registry;
use crate::{wait_for, Agent, CloudCore, EdgeCore};

const T: Duration = Duration::from_secs(60);

/// A region with one site, one agent, and a registry holding `busybox:v1`.
pub struct Env {
    /// The registry holding `busybox:v1`.
    pub reg: Registry,
    /// The region.
    pub cc: CloudCore,
    /// The site `s1`.
    pub edge: EdgeCore,
    _agent: Agent,
}

/// Which API a client talks to.
#[derive(Clone, Copy, Debug)]
pub enum Tier {
    /// cloud-core.
    Cloud,
    /// edge-core.
    Edge,
}

impl Env {
    /// Start the region, the site and the agent; n1 Ready at the cloud.
    pub fn start() -> Self {
        let reg = Registry::start();
        let scratch = tempfile::tempdir().expect("tempdir");
        reg.push(
            &crate::registry::busybox_image(scratch.path(), "v1"),
            "busybox:v1",
        );
        let cc = CloudCore::start();
        let token = cc.join_token("s1", "10m");
        let edge = EdgeCore::join(&cc, "s1", &token);
        let agent = Agent::start_with(&edge.kubeconfig(), "n1", &[reg.addr()]);
        wait_for("n1 Ready at the cloud", T, || {
            cc.kubectl_ok(&["get", "nodes"])
                .lines()
                .any(|l| l.starts_with("n1 ") && l.contains(" Ready "))
        });
        Env {
            reg,
            cc,
            edge,
            _agent: agent,
        }
    }

    /// The kubeconfig of `tier`.
    pub fn kubeconfig(&self, tier: Tier) -> std::path::PathBuf {
        match tier {
            Tier::Cloud => self.cc.kubeconfig(),
            Tier::Edge => self.edge.kubeconfig(),
        }
    }

    /// A scratch directory (the region's).
    pub fn scratch(&self) -> &Path {
        self.cc.dir.path()
    }

    /// kubectl at `tier` with `stdin` fed (and closed) when given.
    pub fn kubectl(&self, tier: Tier, args: &[&str], stdin: Option<&[u8]>) -> Output {
        let mut child = self.spawn(tier, args, stdin.is_some());
        if let Some(input) = stdin {
            let mut w = child.stdin.take().expect("stdin");
            let input = input.to_vec();
            std::thread::spawn(move || {
                let _ = w.write_all(&input);
            });
        }
        wait_output(child, Duration::from_secs(120), args)
    }

    /// kubectl at `tier`, spawned with piped output (and stdin when asked).
    pub fn spawn(&self, tier: Tier, args: &[&str], stdin: bool) -> Child {
        Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(self.kubeconfig(tier))
            .arg("--cache-dir")
            .arg(self.scratch().join("kube-cache"))
            .args(args)
            .env("HOME", self.scratch())
            .stdin(if stdin { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn kubectl")
    }

    /// A pod on n1 running `script` in each of `containers` (busybox sh), Running at the edge.
    pub fn pod(&self, name: &str, containers: &[(&str, &str)], extra: &str) {
        self.pod_with(name, containers, extra, "Always")
    }

    /// [`Env::pod`] with a restart policy.
    pub fn pod_with(&self, name: &str, containers: &[(&str, &str)], extra: &str, restart: &str) {
        let img = format!("{}/busybox:v1", self.reg.addr());
        let cs: Vec<String> = containers
            .iter()
            .map(|(c, script)| {
                format!(
                    "  - name: {c}\n    image: {img}\n    command: [sh, -c, {script:?}]\n{extra}"
                )
            })
            .collect();
        let yaml = format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  nodeName: n1\n  restartPolicy: {restart}\n  terminationGracePeriodSeconds: 1\n  containers:\n{}",
            cs.join("")
        );
        let f = self.scratch().join(format!("{name}.yaml"));
        std::fs::write(&f, yaml).unwrap();
        self.cc.kubectl_ok(&["create", "-f", f.to_str().unwrap()]);
        wait_for(&format!("{name} Running"), Duration::from_secs(90), || {
            let o = self
                .edge
                .kubectl(&["get", "pod", name, "-o", "jsonpath={.status.phase}"]);
            String::from_utf8_lossy(&o.stdout) == "Running"
        });
    }
}

/// Wait for `child` to end (killed and a panic after `timeout`), with its output.
pub fn wait_output(mut child: Child, timeout: Duration, args: &[&str]) -> Output {
    let deadline = Instant::now() + timeout;
    let mut out = child.stdout.take().expect("stdout");
    let mut err = child.stderr.take().expect("stderr");
    let o = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out.read_to_end(&mut v);
        v
    });
    let e = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err.read_to_end(&mut v);
        v
    });
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait") {
            break st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("kubectl {args:?} did not end within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: o.join().unwrap_or_default(),
        stderr: e.join().unwrap_or_default(),
    }
}

/// Bytes as (lossy) text.
pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

impl Env {
    /// Run the Python script `body` (written to `name` in the scratch directory) with the
    /// cloud's kubeconfig and `args` as its arguments.
    pub fn python(&self, name: &str, body: &str, args: &[&str]) -> Output {
        let script = self.scratch().join(name);
        std::fs::write(&script, body).expect("write the script");
        Command::new("python3")
            .arg(&script)
            .arg(self.cc.kubeconfig())
            .args(args)
            .output()
            .expect("run python3")
    }

    /// [`port_forward`] at `tier`.
    pub fn port_forward(&self, tier: Tier, pod: &str, remote: &[u16], spdy: bool) -> Forward {
        port_forward(&self.kubeconfig(tier), self.scratch(), pod, remote, spdy)
    }
}

/// A running `kubectl port-forward` and the local ports it listens on, in the order asked.
pub struct Forward {
    /// The kubectl process.
    pub child: Child,
    /// Local ports, in the order of the remote ones asked for.
    pub ports: Vec<u16>,
    /// What kubectl wrote to stderr so far.
    pub stderr: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Drop for Forward {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Start `kubectl port-forward pod/P :R...` with `kubeconfig`, over SPDY when `spdy` (kubectl's
/// WebSocket tunnel turned off), and wait until it forwards every port.
pub fn port_forward(
    kubeconfig: &Path,
    home: &Path,
    pod: &str,
    remote: &[u16],
    spdy: bool,
) -> Forward {
    let mut args = vec!["port-forward".to_string(), format!("pod/{pod}")];
    args.extend(remote.iter().map(|r| format!(":{r}")));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut cmd = std::process::Command::new("kubectl");
    cmd.arg("--kubeconfig")
        .arg(kubeconfig)
        .arg("--cache-dir")
        .arg(home.join("kube-cache"))
        .args(&args)
        .env("HOME", home)
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
                "kubectl port-forward via {} did not start: {}",
                kubeconfig.display(),
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
pub fn http_get(port: u16, path: &str) -> (String, Vec<u8>) {
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
