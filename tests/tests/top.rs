//! `kubectl top` at both tiers: `metrics.k8s.io/v1beta1` NodeMetrics and PodMetrics from the
//! agents' cgroup figures (no metrics-server), at the edge, through the cloud, and at the edge
//! with the cloud down; another tenant sees none of them.

use std::time::Duration;

use tests::registry::Registry;
use tests::{wait_for, Agent, CloudCore, EdgeCore};

const T: Duration = Duration::from_secs(90);

fn out(o: std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Millicores in a `kubectl top` CPU column (`123m`, `1`).
fn millicores(s: &str) -> Option<u64> {
    match s.strip_suffix('m') {
        Some(m) => m.parse().ok(),
        None => s.parse::<u64>().ok().map(|c| c * 1000),
    }
}

#[test]
fn kubectl_top_nodes_and_pods_at_both_tiers() {
    let reg = Registry::start();
    let scratch = tempfile::tempdir().unwrap();
    reg.push(
        &tests::registry::busybox_image(scratch.path(), "v1"),
        "busybox:v1",
    );
    let mut cc = CloudCore::start();
    let edge = EdgeCore::join(&cc, "s1", &cc.join_token("s1", "10m"));
    let _agent = Agent::start_with(&edge.kubeconfig(), "n1", &[reg.addr()]);
    wait_for("n1 Ready", T, || {
        cc.kubectl_ok(&["get", "nodes"]).contains(" Ready ")
    });
    let img = format!("{}/busybox:v1", reg.addr());
    let yaml = format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: busy}}\nspec:\n  nodeName: n1\n  terminationGracePeriodSeconds: 0\n  containers:\n  - {{name: spin, image: {img}, command: [sh, -c, 'while :; do :; done']}}\n  - {{name: idle, image: {img}, command: [sleep, '3600']}}\n"
    );
    let f = scratch.path().join("pod.yaml");
    std::fs::write(&f, yaml).unwrap();
    cc.kubectl_ok(&["create", "-f", f.to_str().unwrap()]);
    // Lines of `kubectl top pod --containers` for busy: container -> CPU millicores.
    let containers = |o: String| -> Vec<(String, u64)> {
        o.lines()
            .filter(|l| l.starts_with("busy "))
            .filter_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                Some((f.get(1)?.to_string(), millicores(f.get(2)?)?))
            })
            .collect()
    };
    for (tier, kc) in [("edge", edge.kubeconfig()), ("cloud", cc.kubeconfig())] {
        let top = |args: &[&str]| out(tests::kubectl(&kc, scratch.path(), args, None));
        let mut seen = Vec::new();
        wait_for(
            &format!("busy's containers in kubectl top at the {tier}"),
            T,
            || {
                seen = containers(top(&["top", "pod", "--containers"]));
                seen.iter().any(|(c, m)| c == "spin" && *m >= 100)
                    && seen.iter().any(|(c, _)| c == "idle")
            },
        );
        let idle = seen
            .iter()
            .find(|(c, _)| c == "idle")
            .map(|(_, m)| *m)
            .unwrap();
        assert!(
            idle < 50,
            "{tier}: the sleeping container uses {idle}m: {seen:?}"
        );
        let nodes = top(&["top", "node"]);
        let n1 = nodes
            .lines()
            .find(|l| l.starts_with("n1 "))
            .unwrap_or_else(|| panic!("{tier}: {nodes}"));
        let cpu = millicores(n1.split_whitespace().nth(1).unwrap()).unwrap();
        assert!(
            cpu >= 100,
            "{tier}: node CPU {cpu}m with a spinning container: {nodes}"
        );
        let one = top(&["top", "pod", "busy"]);
        assert!(one.lines().any(|l| l.starts_with("busy ")), "{tier}: {one}");
        let missing = tests::kubectl(&kc, scratch.path(), &["top", "pod", "nope"], None);
        assert!(!missing.status.success(), "{tier}");
    }
    // Another tenant sees no pods of this one.
    let acme = tests::kubectl(
        &cc.kubeconfig(),
        scratch.path(),
        &["create", "-f", "-"],
        Some("apiVersion: v1\nkind: Tenant\nmetadata: {name: acme}\n"),
    );
    assert!(acme.status.success());
    let acme_kc = cc.tenant_kubeconfig("acme");
    let theirs = out(tests::kubectl(
        &acme_kc,
        scratch.path(),
        &["top", "pod", "-A"],
        None,
    ));
    assert!(!theirs.contains("busy"), "{theirs}");
    // The cloud down: the edge still answers.
    cc.kill9();
    let at_edge = out(tests::kubectl(
        &edge.kubeconfig(),
        scratch.path(),
        &["top", "pod"],
        None,
    ));
    assert!(at_edge.lines().any(|l| l.starts_with("busy ")), "{at_edge}");
}
