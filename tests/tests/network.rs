//! Pod networking with the real CNI plugins (needs root, iproute2, nftables, busybox): pods of a
//! tenant reach each other, other tenants' pods and gateways are unreachable (and it is the
//! agent's nft table that makes them so), the host reaches every pod; setup is idempotent, also
//! across an agent restart; teardown and reset leave nothing behind.
//!
//! Each test leases its own pod CIDR (`tests::lease_pod_cidr`, shared with the agent tests) and
//! state dir, so tests and agents run side by side.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::net::Ipv4Addr;
use std::path::Path;
use std::process::Command;

use edge_agent::network::{NetConfig, Network, PodNet};

/// Resets the network when dropped, so a failed assertion still cleans up.
struct Guard {
    net: Network,
    dir: tempfile::TempDir,
    /// Held until after the reset in `drop`.
    _cidr: std::fs::File,
}

impl Guard {
    /// A network on a leased /16, or on the /24 at `slice` of it.
    fn new(slice: Option<u8>) -> Self {
        let (cidr, lock) = tests::lease_pod_cidr();
        let cidr = match slice {
            Some(s) => cidr.replace(".0.0/16", &format!(".{s}.0/24")),
            None => cidr,
        };
        let dir = tempfile::tempdir().expect("temp dir");
        let net = Network::new(NetConfig::new(cidr, dir.path().join("net"))).expect("network");
        Guard {
            net,
            dir,
            _cidr: lock,
        }
    }

    fn config(&self) -> NetConfig {
        NetConfig::new(self.net.pod_cidr().to_string(), self.dir.path().join("net"))
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        // Drop may run inside the test's runtime: reset on a thread with a runtime of its own.
        let net = self.net.clone();
        let res = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())
                .and_then(|rt| rt.block_on(net.reset()).map_err(|e| e.to_string()))
        })
        .join();
        match res {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("network reset in cleanup failed: {e}"),
            Err(_) => eprintln!("network reset in cleanup panicked"),
        }
    }
}

/// A pod uid unique to this run, ending in `tag` (so the netns name, its first 12 characters
/// without dashes, is unique too).
fn uid(tag: &str) -> String {
    let mut h = RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default(),
    );
    h.write_u32(std::process::id());
    format!("{:08x}-{tag}-0000-0000-000000000000", h.finish() as u32)
}

fn netns(p: &PodNet) -> String {
    p.netns
        .file_name()
        .and_then(|n| n.to_str())
        .expect("netns name")
        .to_string()
}

fn succeeds(cmd: &mut Command) -> bool {
    cmd.output()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e}"))
        .status
        .success()
}

/// One ICMP echo from inside the pod, answered within 2 s.
fn pod_pings(from: &PodNet, to: Ipv4Addr) -> bool {
    ping_within(from, to, "2")
}

/// No answer within 1 s.
fn pod_blocked(from: &PodNet, to: Ipv4Addr) -> bool {
    !ping_within(from, to, "1")
}

fn ping_within(from: &PodNet, to: Ipv4Addr, secs: &str) -> bool {
    let ns = netns(from);
    let to = to.to_string();
    succeeds(Command::new("ip").args([
        "netns",
        "exec",
        &ns,
        "/bin/busybox",
        "ping",
        "-c",
        "1",
        "-W",
        secs,
        &to,
    ]))
}

fn host_pings(to: Ipv4Addr) -> bool {
    let to = to.to_string();
    succeeds(Command::new("/bin/busybox").args(["ping", "-c", "1", "-W", "2", &to]))
}

fn netns_listed(name: &str) -> bool {
    let out = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip netns list");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .any(|l| l.split_whitespace().next() == Some(name))
}

fn link_exists(name: &str) -> bool {
    succeeds(Command::new("ip").args(["link", "show", name]))
}

fn nft_table_exists(table: &str) -> bool {
    succeeds(Command::new("nft").args(["list", "table", "inet", table]))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_are_isolated_and_cleanup_is_complete() {
    let g = Guard::new(None);
    let net = g.net.clone();
    let (a1, a2, b1) = (uid("a1"), uid("a2"), uid("b1"));

    // Concurrent setups, two tenants at once.
    let (pa1, pa2, pb1) = tokio::join!(
        net.setup(&a1, "alpha"),
        net.setup(&a2, "alpha"),
        net.setup(&b1, "beta")
    );
    let (pa1, pa2, pb1) = (pa1.unwrap(), pa2.unwrap(), pb1.unwrap());
    let alpha = net.tenant("alpha").expect("alpha's network");
    let beta = net.tenant("beta").expect("beta's network");
    assert_ne!(alpha.subnet, beta.subnet);
    assert_ne!(alpha.bridge, beta.bridge);
    for (p, t) in [(&pa1, &alpha), (&pa2, &alpha), (&pb1, &beta)] {
        assert!(t.subnet.contains(p.ip), "{p:?} not in {}", t.subnet);
        assert_eq!(p.gateway, t.gateway);
        assert!(p.netns.starts_with("/var/run/netns"), "{p:?}");
        assert!(netns_listed(&netns(p)), "{p:?}");
    }
    assert_eq!(net.get(&a1), Some(pa1.clone()));
    assert!(link_exists(&alpha.bridge) && link_exists(&beta.bridge));
    assert!(nft_table_exists(net.table()));

    // Same tenant: reachable both ways, over the bridge; own gateway reachable.
    assert!(pod_pings(&pa1, pa2.ip), "a1 -> a2");
    assert!(pod_pings(&pa2, pa1.ip), "a2 -> a1");
    assert!(pod_pings(&pa1, alpha.gateway), "a1 -> its gateway");
    assert!(pod_pings(&pb1, beta.gateway), "b1 -> its gateway");
    // The host reaches every pod (probes, the runtime's own checks).
    for p in [&pa1, &pa2, &pb1] {
        assert!(host_pings(p.ip), "host -> {}", p.ip);
    }
    // Other tenant: neither its pods nor its gateway, in either direction.
    assert!(pod_blocked(&pa1, pb1.ip), "a1 reached b1");
    assert!(pod_blocked(&pb1, pa1.ip), "b1 reached a1");
    assert!(pod_blocked(&pa1, beta.gateway), "a1 reached beta's gateway");
    assert!(
        pod_blocked(&pb1, alpha.gateway),
        "b1 reached alpha's gateway"
    );

    // Control: without the agent's table the host routes between the tenants, so the table is
    // what isolates them.
    assert!(succeeds(Command::new("nft").args([
        "delete",
        "table",
        "inet",
        net.table()
    ])));
    assert!(pod_pings(&pa1, pb1.ip), "a1 -> b1 with the table gone");
    assert!(
        pod_pings(&pa1, beta.gateway),
        "a1 -> beta's gateway with the table gone"
    );

    // Agent restart: a new instance knows the pods from their records, returns the same
    // network without re-ADDing, and puts the table back before handing it out.
    let net2 = Network::new(g.config()).expect("network after restart");
    assert_eq!(net2.get(&a1), Some(pa1.clone()));
    assert_eq!(net2.setup(&a1, "alpha").await.unwrap(), pa1);
    assert!(nft_table_exists(net2.table()));
    assert!(pod_blocked(&pa1, pb1.ip), "a1 reached b1 after the restart");
    // Idempotent on the same instance too.
    assert_eq!(net.setup(&a2, "alpha").await.unwrap(), pa2);
    // A pod belongs to one tenant.
    assert!(net.setup(&a2, "beta").await.is_err());

    // Teardown removes the netns; twice is fine; the address is free again.
    net.teardown(&a2, "alpha").await.unwrap();
    assert!(!netns_listed(&netns(&pa2)), "a2's netns left behind");
    assert_eq!(net.get(&a2), None);
    net.teardown(&a2, "alpha").await.unwrap();
    net.teardown(&uid("zz"), "alpha").await.unwrap();
    assert!(pod_blocked(&pa1, pa2.ip), "a2 still answers");

    // Reset removes every netns, bridge, the table and the state.
    net.reset().await.unwrap();
    for p in [&pa1, &pb1] {
        assert!(!netns_listed(&netns(p)), "{p:?} left behind");
    }
    assert!(!link_exists(&alpha.bridge), "bridge {} left", alpha.bridge);
    assert!(!link_exists(&beta.bridge), "bridge {} left", beta.bridge);
    assert!(!nft_table_exists(net.table()), "table left");
    let state = g.dir.path().join("net");
    for f in ["ipam", "pods", "tenants.json"] {
        assert!(
            !Path::new(&state).join(f).exists(),
            "{f} left in the state dir"
        );
    }
    assert_eq!(net.get(&a1), None);
    net.reset().await.unwrap();
}

#[tokio::test]
async fn system_tenant_exhaustion_and_reset_without_plugins_or_state() {
    // A /24 holds one tenant's slice: the system tenant (named "" or "system") takes it.
    let g = Guard::new(Some(7));
    let net = g.net.clone();
    let s1 = uid("s1");
    let p = net.setup(&s1, "").await.unwrap();
    assert_eq!(net.tenant(""), net.tenant("system"));
    assert_eq!(p.gateway, net.pod_cidr().host(1));
    assert!(host_pings(p.ip));
    let err = net
        .setup(&uid("t1"), "alpha")
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("no free /24"), "{err}");
    let p2 = net.setup(&uid("s2"), "system").await.unwrap();
    net.teardown(&s1, "system").await.unwrap();
    assert!(!netns_listed(&netns(&p)));

    // `edge-agent reset` with no plugins installed and tenants.json mangled still removes the
    // pod's netns, the bridge (named from the pod record's tenant) and the table; it reports
    // the unreadable file.
    let bridge = net.tenant("").expect("system network").bridge;
    std::fs::write(g.dir.path().join("net/tenants.json"), "{").expect("mangle");
    let mut cfg = g.config();
    cfg.cni_bin_dirs = vec![g.dir.path().join("no-plugins")];
    assert!(Network::new(cfg.clone()).is_err());
    let cleanup = Network::for_cleanup(cfg).expect("network for cleanup");
    let err = cleanup.reset().await.unwrap_err().to_string();
    assert!(err.contains("tenants.json"), "{err}");
    assert!(!netns_listed(&netns(&p2)), "netns left");
    assert!(!link_exists(&bridge), "bridge left");
    assert!(!nft_table_exists(cleanup.table()), "table left");
    assert!(!g.dir.path().join("net/tenants.json").exists());
}

#[tokio::test]
async fn a_failing_plugin_is_reported_and_leaves_nothing_behind() {
    // A `bridge` that fails every ADD the way CNI plugins do: error JSON on stdout, exit 1.
    let bin = tempfile::tempdir().expect("temp dir");
    let script = "#!/bin/sh\ncat >/dev/null\n[ \"$CNI_COMMAND\" = DEL ] && exit 0\n\
        echo '{\"cniVersion\":\"1.0.0\",\"code\":11,\"msg\":\"no luck\",\"details\":\"fake plugin\"}'\n\
        exit 1\n";
    for plugin in ["bridge", "host-local"] {
        let p = bin.path().join(plugin);
        std::fs::write(&p, script).expect("write plugin");
        let mut perm = std::fs::metadata(&p).expect("plugin").permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut perm, 0o755);
        std::fs::set_permissions(&p, perm).expect("chmod plugin");
    }
    let mut g = Guard::new(None);
    let mut cfg = g.config();
    cfg.cni_bin_dirs = vec![bin.path().to_path_buf()];
    g.net = Network::new(cfg).expect("network");
    let net = g.net.clone();
    let p1 = uid("f1");
    let err = net.setup(&p1, "alpha").await.unwrap_err().to_string();
    assert_eq!(err, "cni ADD failed (code 11): no luck: fake plugin");
    assert!(!netns_listed(&edge_agent::network::netns_name(&p1)));
    assert_eq!(net.get(&p1), None);
    assert!(!g
        .dir
        .path()
        .join("net/pods")
        .join(format!("{p1}.json"))
        .exists());
    // The tenant's firewall went up before any ADD.
    assert!(nft_table_exists(net.table()));
}
