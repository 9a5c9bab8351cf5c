//! Shared harness for Atoll's end-to-end tests: spawn the real binaries on free ports in temp
//! dirs, drive them with stock kubectl and the `kube` crate, and clean up even on failure.

pub mod etcd;
pub mod fuzz;
pub mod rawsite;
pub mod registry;
pub mod sim;
pub mod streams_env;
pub mod vmimage;

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Directory holding the workspace's built binaries (`target/<profile>`), found from the
/// running executable's path, or `ATOLL_BIN_DIR`.
pub fn bin_dir() -> PathBuf {
    if let Ok(d) = std::env::var("ATOLL_BIN_DIR") {
        return PathBuf::from(d);
    }
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe.parent().expect("exe dir");
    // Test binaries live in target/<profile>/deps, binaries in target/<profile>.
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir.parent().expect("profile dir").to_path_buf()
    } else {
        dir.to_path_buf()
    }
}

/// Path of a workspace binary; panics with a hint if it was not built.
pub fn bin(name: &str) -> PathBuf {
    // `ATOLL_EDGE_AGENT_BIN=target/agent/edge-agent` and the like: measure another build.
    let var = format!("ATOLL_{}_BIN", name.to_uppercase().replace('-', "_"));
    let p = std::env::var_os(var).map_or_else(|| bin_dir().join(name), PathBuf::from);
    assert!(
        p.exists(),
        "{} not found: build it first (cargo build --workspace --bins)",
        p.display()
    );
    p
}

/// A throwaway CA for tests' TLS servers and clients (a registry, etcd).
pub struct TestCa {
    cert: rcgen::Certificate,
    key: rcgen::KeyPair,
}

impl TestCa {
    /// A new CA named `cn`.
    pub fn new(cn: &str) -> Self {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
        let key = KeyPair::generate().expect("ca key");
        let mut p = CertificateParams::new(Vec::<String>::new()).expect("ca params");
        p.distinguished_name.push(DnType::CommonName, cn);
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let cert = p.self_signed(&key).expect("ca cert");
        TestCa { cert, key }
    }

    /// The CA certificate, PEM.
    pub fn pem(&self) -> String {
        self.cert.pem()
    }

    /// A certificate for `cn` with `names` as SANs (serving and client use), and its key.
    pub fn issue(&self, cn: &str, names: &[&str]) -> (String, String) {
        use rcgen::{CertificateParams, DnType, KeyPair};
        let key = KeyPair::generate().expect("key");
        let mut p = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
            .expect("params");
        p.distinguished_name.push(DnType::CommonName, cn);
        let cert = p.signed_by(&key, &self.cert, &self.key).expect("cert");
        (cert.pem(), key.serialize_pem())
    }
}

/// A free loopback UDP address (bound and released; the caller binds it right after).
pub fn free_udp_addr() -> SocketAddr {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("free udp port")
}

/// A free loopback port (bound and released; the caller binds it right after).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// Wait for `cond` to hold, polling, until `timeout`; panics with `what` otherwise.
pub fn wait_for(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if cond() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("timed out after {timeout:?} waiting for {what}");
}

/// A spawned binary whose stderr goes to a log file; killed on drop, and its log printed when
/// the test is failing.
pub struct Proc {
    child: Option<Child>,
    what: String,
    log: PathBuf,
}

impl Proc {
    /// A process slot named `what`, logging to `log` (appended across restarts).
    pub fn new(what: &str, log: PathBuf) -> Self {
        Proc {
            child: None,
            what: what.to_string(),
            log,
        }
    }

    /// Start `cmd` with stdout discarded and stderr to the log.
    pub fn spawn(&mut self, mut cmd: Command) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log");
        let child = cmd
            .env(
                "ATOLL_LOG",
                std::env::var("ATOLL_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdout(Stdio::null())
            .stderr(log)
            .spawn();
        self.child = Some(child.unwrap_or_else(|e| panic!("spawn {}: {e}", self.what)));
    }

    /// The log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Process id (0 when not running).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// SIGKILL (no chance to flush anything).
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Wait until the server has written its kubeconfig (it does so once it listens) and
    /// accepts connections; learn its port when it picked one. Panics with its log if it exits.
    fn wait_serving(&mut self, kubeconfig: &Path, addr: &mut SocketAddr) {
        wait_for(
            &format!("{} to serve", self.what),
            Duration::from_secs(30),
            || {
                if let Some(Ok(Some(st))) = self.child.as_mut().map(Child::try_wait) {
                    panic!("{} exited early ({st}); log:\n{}", self.what, self.log());
                }
                match server_addr(kubeconfig) {
                    Some(a) if addr.port() == 0 => *addr = a,
                    Some(_) => {}
                    None => return false,
                }
                TcpStream::connect_timeout(addr, Duration::from_millis(200)).is_ok()
            },
        );
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- {} log ({}) ---\n{}",
                self.what,
                self.log.display(),
                self.log()
            );
        }
        self.kill9();
    }
}

/// A running `cloud-core serve`, killed on drop.
pub struct CloudCore {
    proc: Proc,
    /// Its data directory (kept across restarts).
    pub dir: tempfile::TempDir,
    /// API address.
    pub addr: SocketAddr,
    /// Extra flags passed on every start.
    pub extra: Vec<String>,
    /// Sync (QUIC) address; fixed across restarts so edges can reconnect.
    pub sync_addr: SocketAddr,
    /// The etcd the region keeps its objects in, when the tests run on etcd
    /// (`ATOLL_TEST_STORAGE=etcd`); stopped after the server.
    pub etcd: Option<etcd::Etcd>,
}

impl CloudCore {
    /// Start on a fresh data dir.
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// Start on a fresh data dir with extra flags; on a fresh etcd of its own as well when
    /// `ATOLL_TEST_STORAGE=etcd` (the API tests run once on each backend).
    pub fn start_with(extra: &[&str]) -> Self {
        let etcd =
            (std::env::var("ATOLL_TEST_STORAGE").as_deref() == Ok("etcd")).then(etcd::Etcd::start);
        let mut extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        if let Some(e) = &etcd {
            extra.extend(["--etcd-servers".to_string(), e.url()]);
        }
        let dir = tempfile::tempdir().expect("tempdir");
        // Port 0: the server picks a free port and writes it into its kubeconfig, so parallel
        // tests never race for ports. Restarts reuse the port it picked.
        let addr: SocketAddr = "127.0.0.1:0".parse().expect("addr");
        let mut cc = CloudCore {
            proc: Proc::new("cloud-core", dir.path().join("cloud-core.log")),
            dir,
            addr,
            extra,
            sync_addr: free_udp_addr(),
            etcd,
        };
        cc.spawn();
        cc
    }

    fn spawn(&mut self) {
        let mut cmd = Command::new(bin("cloud-core"));
        cmd.arg("serve")
            .arg("--data-dir")
            .arg(self.dir.path())
            .args([
                "--listen",
                &self.addr.to_string(),
                "--sync-listen",
                &self.sync_addr.to_string(),
            ])
            .args(&self.extra);
        self.proc.spawn(cmd);
        let kc = self.kubeconfig();
        self.proc.wait_serving(&kc, &mut self.addr);
    }

    /// The server's process id (0 when not running).
    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }

    /// Path of the admin kubeconfig.
    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.path().join("admin.kubeconfig")
    }

    /// The server log so far.
    pub fn log(&self) -> String {
        self.proc.log()
    }

    /// SIGKILL the process (no chance to flush anything).
    pub fn kill9(&mut self) {
        self.proc.kill9();
    }

    /// Start again on the same data dir and port.
    pub fn restart(&mut self) {
        self.kill9();
        self.spawn();
    }

    /// Run stock kubectl with the admin kubeconfig.
    pub fn kubectl(&self, args: &[&str]) -> Output {
        kubectl(&self.kubeconfig(), self.dir.path(), args, None)
    }

    /// Run kubectl and return stdout; panics with stderr on failure.
    pub fn kubectl_ok(&self, args: &[&str]) -> String {
        ok(self.kubectl(args), args)
    }

    /// `kubectl get KIND NAME -o jsonpath=PATH`: the text, empty when it is not there (or the
    /// object is not).
    pub fn jsonpath(&self, kind: &str, name: &str, path: &str) -> String {
        jsonpath(&self.kubeconfig(), self.dir.path(), kind, name, path)
    }

    /// A `kube` client with the admin kubeconfig.
    pub async fn client(&self) -> kube::Client {
        client_for(&self.kubeconfig()).await
    }
}

/// The `server:` address of a kubeconfig.
pub fn server_addr(kubeconfig: &Path) -> Option<SocketAddr> {
    let text = std::fs::read_to_string(kubeconfig).ok()?;
    text.lines()
        .find_map(|l| l.trim().strip_prefix("server: https://"))
        .and_then(|a| a.parse().ok())
}

/// Run kubectl with a kubeconfig and a private cache dir under `scratch`.
pub fn kubectl(kubeconfig: &Path, scratch: &Path, args: &[&str], stdin: Option<&str>) -> Output {
    use std::io::Write;
    let mut cmd = Command::new("kubectl");
    cmd.arg("--kubeconfig")
        .arg(kubeconfig)
        .arg("--cache-dir")
        .arg(scratch.join("kube-cache"))
        .args(args);
    cmd.env("HOME", scratch)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if stdin.is_some() {
        cmd.stdin(Stdio::piped());
    } else {
        cmd.stdin(Stdio::null());
    }
    let mut child = cmd.spawn().expect("spawn kubectl (is it installed?)");
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input.as_bytes())
            .expect("write stdin");
    }
    child.wait_with_output().expect("kubectl output")
}

/// Stdout of a successful command; panics with its stderr otherwise.
pub fn ok(out: Output, args: &[&str]) -> String {
    assert!(
        out.status.success(),
        "kubectl {args:?} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Stderr of a command that must fail; panics if it succeeded.
pub fn err(out: Output, args: &[&str]) -> String {
    assert!(
        !out.status.success(),
        "kubectl {args:?} unexpectedly succeeded:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A `kube` client from a kubeconfig file.
pub async fn client_for(path: &Path) -> kube::Client {
    let kc = kube::config::Kubeconfig::read_from(path).expect("read kubeconfig");
    let cfg = kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
        .await
        .expect("kube config");
    kube::Client::try_from(cfg).expect("kube client")
}

/// Names in the first column of `kubectl get` output (header skipped).
pub fn names(table: &str) -> Vec<String> {
    table
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next().map(String::from))
        .collect()
}

impl CloudCore {
    /// A kubeconfig for an admin of `tenant` (`cloud-core kubeconfig --tenant`), written into
    /// the data dir.
    pub fn tenant_kubeconfig(&self, tenant: &str) -> PathBuf {
        let out = Command::new(bin("cloud-core"))
            .args(["kubeconfig", "--kubeconfig"])
            .arg(self.kubeconfig())
            .args(["--tenant", tenant])
            .output()
            .expect("cloud-core kubeconfig");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let p = self.dir.path().join(format!("{tenant}.kubeconfig"));
        std::fs::write(&p, &out.stdout).expect("write kubeconfig");
        p
    }

    /// A fresh join token for `site` (creates the EdgeSite), valid for `ttl` (e.g. "10m").
    pub fn join_token(&self, site: &str, ttl: &str) -> String {
        let out = Command::new(bin("cloud-core"))
            .args(["join-token", "--kubeconfig"])
            .arg(self.kubeconfig())
            .args(["--site", site, "--ttl", ttl])
            .output()
            .expect("run cloud-core join-token");
        assert!(
            out.status.success(),
            "join-token failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

/// A running `edge-core serve`, killed on drop.
pub struct EdgeCore {
    proc: Proc,
    /// Data directory (kept across restarts).
    pub dir: tempfile::TempDir,
    /// Site name.
    pub site: String,
    /// The cloud's sync addresses (one per replica).
    pub cloud: Vec<SocketAddr>,
    /// API address (known after the first start).
    pub addr: SocketAddr,
}

impl EdgeCore {
    /// Join `site` to the region with `token` and serve.
    pub fn join(cloud: &CloudCore, site: &str, token: &str) -> Self {
        Self::join_at(cloud.sync_addr, site, token)
    }

    /// Join through a relay (the edge talks to `relay` instead of the cloud directly).
    pub fn join_via(relay: &Relay, site: &str, token: &str) -> Self {
        Self::join_at(relay.addr, site, token)
    }

    /// Join through any of several replicas (`--cloud A,B`).
    pub fn join_any(clouds: &[&CloudCore], site: &str, token: &str) -> Self {
        Self::join_list(clouds.iter().map(|c| c.sync_addr).collect(), site, token)
    }

    fn join_at(cloud: SocketAddr, site: &str, token: &str) -> Self {
        Self::join_list(vec![cloud], site, token)
    }

    fn join_list(cloud: Vec<SocketAddr>, site: &str, token: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut e = EdgeCore {
            proc: Proc::new(
                &format!("edge-core {site}"),
                dir.path().join("edge-core.log"),
            ),
            dir,
            site: site.to_string(),
            cloud,
            addr: "127.0.0.1:0".parse().expect("addr"),
        };
        e.spawn(Some(token));
        e
    }

    /// Run `edge-core serve` once, expecting it to fail; returns its exit code and stderr.
    pub fn join_fails(cloud: SocketAddr, site: &str, token: Option<&str>) -> (i32, String) {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut cmd = Command::new(bin("edge-core"));
        cmd.arg("serve").arg("--data-dir").arg(dir.path()).args([
            "--cloud",
            &cloud.to_string(),
            "--site",
            site,
            "--listen",
            "127.0.0.1:0",
        ]);
        if let Some(t) = token {
            cmd.args(["--join-token", t]);
        }
        let mut child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn edge-core");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(_)) = child.try_wait() {
                break;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("edge-core did not fail within 30s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let out = child.wait_with_output().expect("output");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    fn spawn(&mut self, token: Option<&str>) {
        let mut cmd = Command::new(bin("edge-core"));
        cmd.arg("serve")
            .arg("--data-dir")
            .arg(self.dir.path())
            .args([
                "--cloud",
                &self
                    .cloud
                    .iter()
                    .map(SocketAddr::to_string)
                    .collect::<Vec<_>>()
                    .join(","),
                "--site",
                &self.site,
                "--listen",
                &self.addr.to_string(),
            ]);
        if let Some(t) = token {
            cmd.args(["--join-token", t]);
        }
        self.proc.spawn(cmd);
        let kc = self.kubeconfig();
        self.proc.wait_serving(&kc, &mut self.addr);
    }

    /// Process id (0 when not running).
    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }

    /// The edge's admin kubeconfig.
    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.path().join("admin.kubeconfig")
    }

    /// The log so far.
    pub fn log(&self) -> String {
        self.proc.log()
    }

    /// SIGKILL.
    pub fn kill9(&mut self) {
        self.proc.kill9();
    }

    /// Start again (no token: it has joined).
    pub fn restart(&mut self) {
        self.kill9();
        self.spawn(None);
    }

    /// kubectl against the edge.
    pub fn kubectl(&self, args: &[&str]) -> Output {
        kubectl(&self.kubeconfig(), self.dir.path(), args, None)
    }

    /// kubectl against the edge; stdout, panicking on failure.
    pub fn kubectl_ok(&self, args: &[&str]) -> String {
        ok(self.kubectl(args), args)
    }
}

/// A UDP relay between an edge and the cloud's sync port that the test can cut and heal:
/// a partition without killing either side.
pub struct Relay {
    /// Address edges connect to.
    pub addr: SocketAddr,
    cut: std::sync::Arc<std::sync::atomic::AtomicBool>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    bytes: std::sync::Arc<std::sync::atomic::AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Relay {
    /// Relay to `upstream`. Each direction has its own thread, so neither waits on the other.
    pub fn start(upstream: SocketAddr) -> Self {
        use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
        use std::sync::Arc;
        let sock = Arc::new(std::net::UdpSocket::bind("127.0.0.1:0").expect("relay bind"));
        let addr = sock.local_addr().expect("relay addr");
        sock.set_read_timeout(Some(Duration::from_millis(50)))
            .expect("timeout");
        let cut = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let bytes = Arc::new(AtomicU64::new(0));
        let (c, s, b) = (cut.clone(), stop.clone(), bytes.clone());
        let thread = std::thread::spawn(move || {
            // One upstream socket (and return thread) per client, so the cloud sees distinct peers.
            let mut peers: std::collections::HashMap<SocketAddr, Arc<std::net::UdpSocket>> =
                std::collections::HashMap::new();
            let mut back = Vec::new();
            let mut buf = vec![0u8; 65536];
            while !s.load(Ordering::Relaxed) {
                let Ok((n, from)) = sock.recv_from(&mut buf) else {
                    continue;
                };
                let up = peers.entry(from).or_insert_with(|| {
                    let u =
                        Arc::new(std::net::UdpSocket::bind("127.0.0.1:0").expect("upstream bind"));
                    u.set_read_timeout(Some(Duration::from_millis(50)))
                        .expect("timeout");
                    let (u2, client, sock, c, s, b) = (
                        u.clone(),
                        from,
                        sock.clone(),
                        c.clone(),
                        s.clone(),
                        b.clone(),
                    );
                    back.push(std::thread::spawn(move || {
                        let mut buf = vec![0u8; 65536];
                        while !s.load(Ordering::Relaxed) {
                            if let Ok((n, _)) = u2.recv_from(&mut buf) {
                                if !c.load(Ordering::Relaxed) {
                                    b.fetch_add(n as u64, Ordering::Relaxed);
                                    let _ = sock.send_to(&buf[..n], client);
                                }
                            }
                        }
                    }));
                    u
                });
                if !c.load(Ordering::Relaxed) {
                    b.fetch_add(n as u64, Ordering::Relaxed);
                    let _ = up.send_to(&buf[..n], upstream);
                }
            }
            for t in back {
                let _ = t.join();
            }
        });
        Relay {
            addr,
            cut,
            stop,
            bytes,
            thread: Some(thread),
        }
    }

    /// Drop every packet in both directions until [`Relay::heal`].
    pub fn cut(&self) {
        self.cut.store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// UDP payload bytes forwarded so far, both directions.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Forward again.
    pub fn heal(&self) {
        self.cut.store(false, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A pod CIDR no other live test process holds (a lock file per /16, released by the kernel
/// when the holder exits, so a crashed test does not leak it).
pub fn lease_pod_cidr() -> (String, std::fs::File) {
    for octet in 100..=250u16 {
        let path = std::env::temp_dir().join(format!("atoll-test-cidr-{octet}.lock"));
        let Ok(f) = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
        else {
            continue;
        };
        if f.try_lock().is_ok() {
            return (format!("10.{octet}.0.0/16"), f);
        }
    }
    panic!("no free test pod CIDR");
}

/// A running `edge-agent`, killed on drop; everything it made on the host (containers, mounts,
/// network namespaces, bridges, firewall tables) is removed with `edge-agent reset`.
pub struct Agent {
    proc: Proc,
    /// Root dir.
    pub dir: tempfile::TempDir,
    /// Node name.
    pub node: String,
    kubeconfig: PathBuf,
    /// The agent's pod CIDR.
    pub pod_cidr: String,
    _cidr_lock: std::fs::File,
    registries: Vec<String>,
    vms: bool,
}

impl Agent {
    /// Start an agent for `node` against the server of `kubeconfig`.
    pub fn start(kubeconfig: &Path, node: &str) -> Self {
        Self::start_with(kubeconfig, node, &[])
    }

    /// Start an agent that may pull over plain HTTP from `registries`.
    pub fn start_with(kubeconfig: &Path, node: &str, registries: &[String]) -> Self {
        Self::start_opts(kubeconfig, node, registries, false)
    }

    /// Start an agent that runs VM pods (the others run none: no qemu probe at their start).
    pub fn start_vms(kubeconfig: &Path, node: &str, registries: &[String]) -> Self {
        Self::start_opts(kubeconfig, node, registries, true)
    }

    fn start_opts(kubeconfig: &Path, node: &str, registries: &[String], vms: bool) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let (pod_cidr, lock) = lease_pod_cidr();
        let mut a = Agent {
            proc: Proc::new(&format!("edge-agent {node}"), dir.path().join("agent.log")),
            dir,
            node: node.to_string(),
            kubeconfig: kubeconfig.to_path_buf(),
            pod_cidr,
            _cidr_lock: lock,
            registries: registries.to_vec(),
            vms,
        };
        a.spawn();
        a
    }

    /// The agent's root directory.
    pub fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    fn spawn(&mut self) {
        let mut cmd = Command::new(bin("edge-agent"));
        cmd.arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(["--node-name", &self.node, "--root-dir"])
            .arg(self.root())
            .args(["--listen", "127.0.0.1:0", "--node-ip", "127.0.0.1"])
            .args(["--pod-cidr", &self.pod_cidr, "--restart-backoff", "1s"]);
        for r in &self.registries {
            cmd.args(["--insecure-registry", r]);
        }
        if !self.vms {
            cmd.arg("--no-vms");
        }
        self.proc.spawn(cmd);
    }

    /// SIGKILL.
    pub fn kill9(&mut self) {
        self.proc.kill9();
    }

    /// Start again.
    pub fn restart(&mut self) {
        self.kill9();
        self.spawn();
    }

    /// The log so far.
    pub fn log(&self) -> String {
        self.proc.log()
    }

    /// Process id (0 when not running).
    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.proc.kill9();
        let out = Command::new(bin("edge-agent"))
            .args(["reset", "--root-dir"])
            .arg(self.root())
            .args(["--pod-cidr", &self.pod_cidr])
            .output();
        if let Ok(o) = out {
            if !o.status.success() {
                eprintln!(
                    "edge-agent reset failed: {}",
                    String::from_utf8_lossy(&o.stderr)
                );
            }
        }
    }
}

/// A numeric `--name VALUE` from the command line of a benchmark binary, or `default`.
pub fn bench_arg(name: &str, default: u64) -> anyhow::Result<u64> {
    use anyhow::Context;
    let args: Vec<String> = std::env::args().collect();
    match args.iter().position(|a| a == name) {
        Some(i) => args
            .get(i + 1)
            .context("missing value")?
            .parse()
            .with_context(|| format!("{name} must be a number")),
        None => Ok(default),
    }
}

/// The `p` quantile (0..=1) of `v`, in milliseconds.
pub fn percentile_ms(mut v: Vec<Duration>, p: f64) -> f64 {
    v.sort();
    v.get(((v.len() as f64 * p) as usize).min(v.len().saturating_sub(1)))
        .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}

/// `kubectl get KIND NAME -o jsonpath=PATH` with `kubeconfig`: stdout, empty on failure.
pub fn jsonpath(kubeconfig: &Path, scratch: &Path, kind: &str, name: &str, path: &str) -> String {
    let out = kubectl(
        kubeconfig,
        scratch,
        &["get", kind, name, "-o", &format!("jsonpath={path}")],
        None,
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The `Connected` condition of EdgeSite `site` at the cloud (`True`, `False`, or empty).
pub fn site_connected(cc: &CloudCore, site: &str) -> String {
    cc.kubectl_ok(&[
        "get",
        "edgesite",
        site,
        "-o",
        "jsonpath={.status.conditions[?(@.type==\"Connected\")].status}",
    ])
}

/// A `Field: N kB` line of `/proc/PID/FILE`, KiB (0 when the process is gone).
pub fn proc_kib(pid: u32, file: &str, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/{file}"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(field))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

/// Resident set size of a process, KiB (0 when it is gone).
pub fn rss_kib(pid: u32) -> u64 {
    proc_kib(pid, "status", "VmRSS:")
}
