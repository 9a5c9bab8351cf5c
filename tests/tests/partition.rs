//! Partitions without killing anything: a UDP relay between the edge and the cloud drops every
//! packet on command.

use std::time::{Duration, Instant};

use tests::{names, wait_for, CloudCore, EdgeCore, Relay};

fn write(dir: &std::path::Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.to_string_lossy().into_owned()
}

fn setup() -> (CloudCore, Relay, EdgeCore) {
    let cc = CloudCore::start();
    let relay = Relay::start(cc.sync_addr);
    let e = EdgeCore::join_via(&relay, "s1", &cc.join_token("s1", "10m"));
    e.kubectl_ok(&[
        "apply",
        "-f",
        &write(
            e.dir.path(),
            "n.yaml",
            "apiVersion: v1\nkind: Node\nmetadata: {name: n1}\n",
        ),
    ]);
    wait_for("n1 at the cloud", Duration::from_secs(30), || {
        cc.kubectl(&["get", "node", "n1"]).status.success()
    });
    (cc, relay, e)
}

fn pod(name: &str) -> String {
    format!("apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  nodeName: n1\n  containers: [{{name: c, image: busybox}}]\n")
}

#[test]
fn partition_longer_than_keepalive_converges() {
    let (cc, relay, e) = setup();
    relay.cut();
    let cut_at = Instant::now();
    // Both sides keep working through the partition.
    for i in 0..5 {
        cc.kubectl_ok(&[
            "apply",
            "-f",
            &write(cc.dir.path(), &format!("p{i}.yaml"), &pod(&format!("p{i}"))),
        ]);
        e.kubectl_ok(&["create", "configmap", &format!("edge-{i}")]);
    }
    // Longer than the keepalive and idle windows: the site is declared disconnected.
    wait_for(
        "the cloud to see the site disconnected",
        Duration::from_secs(30),
        || tests::site_connected(&cc, "s1") == "False",
    );
    assert!(cut_at.elapsed() < Duration::from_secs(25));
    relay.heal();
    wait_for(
        "convergence after the partition",
        Duration::from_secs(60),
        || {
            let edge_pods = names(&e.kubectl_ok(&["get", "pods"]));
            let cloud_cms = names(&cc.kubectl_ok(&["get", "cm"]));
            (0..5).all(|i| {
                edge_pods.contains(&format!("p{i}")) && cloud_cms.contains(&format!("edge-{i}"))
            })
        },
    );
    wait_for("Connected again", Duration::from_secs(30), || {
        tests::site_connected(&cc, "s1") == "True"
    });
}

#[test]
fn flapping_link_converges_with_nothing_lost() {
    let (cc, relay, e) = setup();
    let start = Instant::now();
    let mut i = 0;
    // Cut and heal every second for a minute while both sides write.
    while start.elapsed() < Duration::from_secs(60) {
        if start.elapsed().as_secs().is_multiple_of(2) {
            relay.cut();
        } else {
            relay.heal();
        }
        cc.kubectl_ok(&[
            "apply",
            "-f",
            &write(cc.dir.path(), &format!("f{i}.yaml"), &pod(&format!("f{i}"))),
        ]);
        e.kubectl_ok(&["create", "configmap", &format!("flap-{i}")]);
        i += 1;
        // Pacing the writers (load generation), not synchronisation.
        std::thread::sleep(Duration::from_millis(500));
    }
    relay.heal();
    let n = i;
    wait_for(
        "convergence after flapping",
        Duration::from_secs(90),
        || {
            let edge_pods = names(&e.kubectl_ok(&["get", "pods"]));
            let cloud_cms = names(&cc.kubectl_ok(&["get", "cm"]));
            (0..n).all(|i| {
                edge_pods.contains(&format!("f{i}")) && cloud_cms.contains(&format!("flap-{i}"))
            })
        },
    );
    // Exactly once: no duplicates anywhere.
    let cms = names(&cc.kubectl_ok(&["get", "cm"]));
    assert_eq!(cms.iter().filter(|c| c.starts_with("flap-")).count(), n);
}
