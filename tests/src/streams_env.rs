//! The environment of the container-stream tests (exec, attach, cp, port-forward): a region
//! with one site, one agent and a registry, driven with stock kubectl at either tier.

use std::io::{Read, Write};
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
