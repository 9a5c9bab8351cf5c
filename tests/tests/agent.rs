//! The node agent's node lifecycle: registration with real capacity, Ready at the edge and at
//! the cloud, NotReady within 40 s of the agent dying, Ready again when it returns.

use std::time::{Duration, Instant};

use tests::{wait_for, Agent, CloudCore, EdgeCore};

fn node_status(out: &str, node: &str) -> Option<String> {
    out.lines()
        .skip(1)
        .find(|l| l.split_whitespace().next() == Some(node))
        .and_then(|l| l.split_whitespace().nth(1))
        .map(String::from)
}

#[test]
fn node_registers_goes_not_ready_when_the_agent_dies_and_recovers() {
    let cc = CloudCore::start();
    let e1 = EdgeCore::join(&cc, "s1", &cc.join_token("s1", "10m"));
    let mut agent = Agent::start(&e1.kubeconfig(), "n1");
    let t = Duration::from_secs(30);
    wait_for("n1 Ready at the edge", t, || {
        node_status(&e1.kubectl_ok(&["get", "nodes"]), "n1").as_deref() == Some("Ready")
    });
    let cpus = std::thread::available_parallelism()
        .unwrap()
        .get()
        .to_string();
    assert_eq!(
        e1.kubectl_ok(&["get", "node", "n1", "-o", "jsonpath={.status.capacity.cpu}"]),
        cpus
    );
    assert!(e1
        .kubectl_ok(&[
            "get",
            "node",
            "n1",
            "-o",
            "jsonpath={.status.capacity.memory}"
        ])
        .ends_with("Ki"));
    wait_for("n1 Ready at the cloud, labelled with its site", t, || {
        node_status(
            &cc.kubectl_ok(&["get", "nodes", "-l", "atoll.io/site=s1"]),
            "n1",
        )
        .as_deref()
            == Some("Ready")
    });
    // Leases stay at the site.
    assert!(!cc
        .kubectl(&["get", "lease", "n1", "-n", "kube-node-lease"])
        .status
        .success());

    agent.kill9();
    let died = Instant::now();
    wait_for("n1 NotReady at the edge", Duration::from_secs(45), || {
        node_status(&e1.kubectl_ok(&["get", "nodes"]), "n1").as_deref() == Some("NotReady")
    });
    assert!(
        died.elapsed() <= Duration::from_secs(40),
        "NotReady after {:?}",
        died.elapsed()
    );
    wait_for("n1 NotReady at the cloud", t, || {
        node_status(&cc.kubectl_ok(&["get", "nodes"]), "n1").as_deref() == Some("NotReady")
    });

    agent.restart();
    wait_for("n1 Ready again at the edge", t, || {
        node_status(&e1.kubectl_ok(&["get", "nodes"]), "n1").as_deref() == Some("Ready")
    });
    wait_for("n1 Ready again at the cloud", t, || {
        node_status(&cc.kubectl_ok(&["get", "nodes"]), "n1").as_deref() == Some("Ready")
    });
}
