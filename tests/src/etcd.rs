//! A real etcd for the tests: Debian's `etcd` server on loopback ports in a temp dir, killed on
//! drop. Single-member by default.

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use crate::{free_port, wait_for, Proc};

/// The etcd server binary (`ATOLL_ETCD_BIN` overrides).
pub fn etcd_bin() -> PathBuf {
    std::env::var_os("ATOLL_ETCD_BIN").map_or_else(|| PathBuf::from("/usr/bin/etcd"), PathBuf::from)
}

/// Whether the etcd server is installed (`deploy/test.sh` installs it).
pub fn available() -> bool {
    etcd_bin().exists()
}

/// A running single-member etcd.
pub struct Etcd {
    proc: Proc,
    /// Its data directory.
    pub dir: tempfile::TempDir,
    /// Client port on 127.0.0.1.
    pub client_port: u16,
    peer_port: u16,
    tls: bool,
    name: String,
    /// `--initial-cluster`: every member's name and peer URL.
    cluster: String,
}

/// A running etcd cluster of several members on loopback, each killed on drop.
pub struct EtcdCluster {
    /// The members, in order.
    pub members: Vec<Etcd>,
}

impl EtcdCluster {
    /// Start `n` fresh members and wait until each accepts clients.
    pub fn start(n: usize) -> Self {
        let ports: Vec<(u16, u16)> = (0..n).map(|_| (free_port(), free_port())).collect();
        let cluster = ports
            .iter()
            .enumerate()
            .map(|(i, (_, p))| format!("m{i}=http://127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",");
        let mut members: Vec<Etcd> = ports
            .iter()
            .enumerate()
            .map(|(i, &(client_port, peer_port))| {
                let dir = tempfile::tempdir().expect("tempdir");
                Etcd {
                    proc: Proc::new(&format!("etcd m{i}"), dir.path().join("etcd.log")),
                    dir,
                    client_port,
                    peer_port,
                    tls: false,
                    name: format!("m{i}"),
                    cluster: cluster.clone(),
                }
            })
            .collect();
        // All at once: a member waits for its peers to form a quorum.
        for m in &mut members {
            m.spawn_proc();
        }
        for m in &members {
            m.wait_serving();
        }
        EtcdCluster { members }
    }

    /// Every member's client URL, comma-separated (for `--etcd-servers`).
    pub fn urls(&self) -> String {
        self.members
            .iter()
            .map(Etcd::url)
            .collect::<Vec<_>>()
            .join(",")
    }
}

impl Etcd {
    /// Start a fresh member and wait until it accepts clients.
    pub fn start() -> Self {
        Self::start_with(false)
    }

    /// Start a fresh member serving clients over TLS and requiring client certificates
    /// signed by its CA (`tls/ca.crt`; a client's pair is `tls/client.{crt,key}`).
    pub fn start_tls() -> Self {
        Self::start_with(true)
    }

    fn start_with(tls: bool) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        if tls {
            let t = dir.path().join("tls");
            std::fs::create_dir_all(&t).expect("tls dir");
            let ca = crate::TestCa::new("atoll-test-etcd-ca");
            let (cert, key) = ca.issue("etcd", &["127.0.0.1", "localhost"]);
            let (ccert, ckey) = ca.issue("atoll", &[]);
            for (name, pem) in [
                ("ca.crt", ca.pem()),
                ("server.crt", cert),
                ("server.key", key),
                ("client.crt", ccert),
                ("client.key", ckey),
            ] {
                std::fs::write(t.join(name), pem).expect("tls file");
            }
        }
        let peer_port = free_port();
        let mut e = Etcd {
            proc: Proc::new("etcd", dir.path().join("etcd.log")),
            dir,
            client_port: free_port(),
            peer_port,
            tls,
            name: "m0".into(),
            cluster: format!("m0=http://127.0.0.1:{peer_port}"),
        };
        e.spawn();
        e
    }

    /// Its client URL.
    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.client_port)
    }

    /// A file of its TLS material (`ca.crt`, `client.crt`, `client.key`).
    pub fn tls_file(&self, name: &str) -> String {
        self.dir
            .path()
            .join("tls")
            .join(name)
            .to_string_lossy()
            .into_owned()
    }

    fn spawn(&mut self) {
        self.spawn_proc();
        self.wait_serving();
    }

    fn spawn_proc(&mut self) {
        let client = self.url();
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let mut cmd = Command::new(etcd_bin());
        if self.tls {
            cmd.args(["--cert-file", &self.tls_file("server.crt")])
                .args(["--key-file", &self.tls_file("server.key")])
                .args(["--trusted-ca-file", &self.tls_file("ca.crt")])
                .arg("--client-cert-auth");
        }
        // A restarted member rejoins the cluster its data dir knows.
        let state = if self.dir.path().join("data").exists() {
            "existing"
        } else {
            "new"
        };
        cmd.arg("--name")
            .arg(&self.name)
            .arg("--data-dir")
            .arg(self.dir.path().join("data"))
            .args(["--listen-client-urls", &client])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &self.cluster])
            .args(["--initial-cluster-state", state])
            // Tests are short: no periodic snapshots or metrics listeners to speak of.
            .args(["--snapshot-count", "100000"])
            .args(["--log-level", "warn"]);
        self.proc.spawn(cmd);
    }

    fn wait_serving(&self) {
        let port = self.client_port;
        wait_for("etcd to accept clients", Duration::from_secs(30), || {
            TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(200))
                .is_ok()
        });
    }

    /// The member's process id (0 when not running).
    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }

    /// SIGKILL the member.
    pub fn kill9(&mut self) {
        self.proc.kill9();
    }

    /// Start it again on the same data and ports.
    pub fn restart(&mut self) {
        self.kill9();
        self.spawn();
    }

    /// The member's log so far.
    pub fn log(&self) -> String {
        self.proc.log()
    }
}
