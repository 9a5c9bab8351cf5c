//! Node authority, split as between kube-apiserver and kubelet: the cloud owns an edge node's
//! spec (taints, cordon) and the labels and annotations set at the cloud; the site owns its
//! status. Changes at either tier reach the other, the site's scheduler and summary honour
//! them at once, offline edits converge, and when both tiers changed the same field while
//! apart the cloud's value wins. All with stock kubectl.

use std::time::Duration;

use tests::{wait_for, CloudCore, EdgeCore, Relay};

const T: Duration = Duration::from_secs(30);

/// A node registered at the edge with capacity and Ready, as an agent would register it.
fn hollow(edge: &EdgeCore, name: &str) {
    let node = tests::sim::hollow_node(
        name,
        tests::sim::NodeSize {
            cpus: 4,
            memory_gib: 8,
            pods: 110,
        },
    );
    let mut meta_only = node.clone();
    if let Some(o) = meta_only.as_object_mut() {
        o.remove("status");
    }
    let path = edge.dir.path().join(format!("{name}.json"));
    std::fs::write(&path, meta_only.to_string()).unwrap();
    edge.kubectl_ok(&["create", "-f", path.to_str().unwrap()]);
    let status = serde_json::json!({"status": node["status"]}).to_string();
    edge.kubectl_ok(&[
        "patch",
        "node",
        name,
        "--subresource=status",
        "--type=merge",
        "-p",
        &status,
    ]);
}

/// Renews the hollow nodes' Leases every few seconds, as their agents would (the site judges
/// a node whose Lease is 30 s old NotReady); stops when dropped.
struct Heartbeat {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Heartbeat {
    fn start(edge: &EdgeCore, nodes: &[&str]) -> Self {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (kc, dir) = (edge.kubeconfig(), edge.dir.path().to_path_buf());
        let nodes: Vec<String> = nodes.iter().map(|n| n.to_string()).collect();
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                for n in &nodes {
                    let now =
                        chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
                    let lease = format!(
                        r#"{{"apiVersion":"coordination.k8s.io/v1","kind":"Lease","metadata":{{"name":"{n}","namespace":"kube-node-lease"}},"spec":{{"holderIdentity":"{n}","leaseDurationSeconds":40,"renewTime":"{now}"}}}}"#
                    );
                    let _ = tests::kubectl(&kc, &dir, &["apply", "-f", "-"], Some(&lease));
                }
                for _ in 0..20 {
                    if flag.load(std::sync::atomic::Ordering::Relaxed) {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(250));
                }
            }
        });
        Heartbeat {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn jp(out: String) -> String {
    out.trim().to_string()
}

fn pod_yaml(name: &str, extra: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  containers: [{{name: c, image: busybox, resources: {{requests: {{cpu: 100m}}}}}}]\n{extra}"
    )
}

#[test]
fn node_spec_and_labels_set_at_either_tier_reach_the_other_and_steer_scheduling() {
    let cc = CloudCore::start();
    let relay = Relay::start(cc.sync_addr);
    let e1 = EdgeCore::join_via(&relay, "s1", &cc.join_token("s1", "10m"));
    hollow(&e1, "n1");
    hollow(&e1, "n2");
    let _heartbeat = Heartbeat::start(&e1, &["n1", "n2"]);
    let cloud_get = |node: &str, path: &str| {
        jp(cc.kubectl_ok(&["get", "node", node, "-o", &format!("jsonpath={path}")]))
    };
    let edge_get = |node: &str, path: &str| {
        jp(e1.kubectl_ok(&["get", "node", node, "-o", &format!("jsonpath={path}")]))
    };
    wait_for("both nodes Ready at the cloud", T, || {
        ["n1", "n2"].iter().all(|n| {
            cc.kubectl(&["get", "node", n]).status.success()
                && cloud_get(n, "{.status.conditions[?(@.type==\"Ready\")].status}") == "True"
        })
    });
    let create = |name: &str, extra: &str| {
        let p = cc.dir.path().join(format!("{name}.yaml"));
        std::fs::write(&p, pod_yaml(name, extra)).unwrap();
        cc.kubectl_ok(&["create", "-f", p.to_str().unwrap()]);
    };
    let node_of =
        |pod: &str| jp(cc.kubectl_ok(&["get", "pod", pod, "-o", "jsonpath={.spec.nodeName}"]));

    // A taint set at the cloud reaches the site, its summary, and keeps new pods off the node.
    cc.kubectl_ok(&["taint", "nodes", "n1", "dedicated=infra:NoSchedule"]);
    wait_for("the taint at the edge", T, || {
        edge_get("n1", "{.spec.taints[*].key}") == "dedicated"
    });
    wait_for("the taint in the site's summary", T, || {
        cc.kubectl_ok(&[
            "get",
            "edgesite",
            "s1",
            "-o",
            "jsonpath={.status.summary.classes[*].taints[*].key}",
        ])
        .contains("dedicated")
    });
    // The site's status reports do not undo the cloud's spec.
    e1.kubectl_ok(&[
        "patch",
        "node",
        "n1",
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status":{"nodeInfo":{"osImage":"hollow-2"}}}"#,
    ]);
    wait_for("the new status at the cloud", T, || {
        cloud_get("n1", "{.status.nodeInfo.osImage}") == "hollow-2"
    });
    assert_eq!(cloud_get("n1", "{.spec.taints[*].key}"), "dedicated");
    for p in ["a1", "a2", "a3"] {
        create(p, "");
    }
    wait_for("a1..a3 bound", T, || {
        ["a1", "a2", "a3"].iter().all(|p| !node_of(p).is_empty())
    });
    for p in ["a1", "a2", "a3"] {
        assert_eq!(node_of(p), "n2", "{p} landed on the tainted node");
    }

    // Cordon at the cloud: nothing fits until it is uncordoned.
    cc.kubectl_ok(&["cordon", "n2"]);
    wait_for("the cordon at the edge", T, || {
        edge_get("n2", "{.spec.unschedulable}") == "true"
    });
    create("b1", "");
    wait_for("b1 unschedulable", T, || {
        jp(cc.kubectl_ok(&[
            "get",
            "pod",
            "b1",
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"PodScheduled\")].status}",
        ])) == "False"
    });
    assert_eq!(node_of("b1"), "");
    cc.kubectl_ok(&["uncordon", "n2"]);
    wait_for("b1 bound to n2 once uncordoned", T, || {
        node_of("b1") == "n2"
    });

    // A label set at the cloud steers a node selector at the site.
    cc.kubectl_ok(&["label", "node", "n1", "zone=a"]);
    cc.kubectl_ok(&["taint", "nodes", "n1", "dedicated-"]);
    wait_for("label and untaint at the edge", T, || {
        edge_get("n1", "{.metadata.labels.zone}") == "a"
            && edge_get("n1", "{.spec.taints}").is_empty()
    });
    create("c1", "  nodeSelector: {zone: a}\n");
    wait_for("c1 bound to n1", T, || node_of("c1") == "n1");

    // Edits at the edge reach the cloud.
    e1.kubectl_ok(&["label", "node", "n2", "rack=r1"]);
    e1.kubectl_ok(&["cordon", "n2"]);
    wait_for("the edge's edits at the cloud", T, || {
        cloud_get("n2", "{.metadata.labels.rack}") == "r1"
            && cloud_get("n2", "{.spec.unschedulable}") == "true"
    });

    // Apart: both tiers edit; the site keeps scheduling by its own view.
    relay.cut();
    wait_for("the site disconnected", Duration::from_secs(60), || {
        tests::site_connected(&cc, "s1") == "False"
    });
    e1.kubectl_ok(&["uncordon", "n2"]);
    e1.kubectl_ok(&["label", "node", "n2", "owner=edge"]);
    cc.kubectl_ok(&["label", "node", "n2", "owner=cloud"]);
    cc.kubectl_ok(&["label", "node", "n1", "color=blue"]);
    let p = e1.dir.path().join("local.yaml");
    std::fs::write(&p, pod_yaml("local", "  nodeSelector: {rack: r1}\n")).unwrap();
    e1.kubectl_ok(&["create", "-f", p.to_str().unwrap()]);
    wait_for("the offline site binds by its own uncordon", T, || {
        jp(e1.kubectl_ok(&["get", "pod", "local", "-o", "jsonpath={.spec.nodeName}"])) == "n2"
    });
    relay.heal();
    // Converged: fields only one side changed take that side's value; the one both changed
    // takes the cloud's.
    wait_for("both tiers converged", Duration::from_secs(60), || {
        cloud_get("n2", "{.spec.unschedulable}").is_empty()
            && edge_get("n1", "{.metadata.labels.color}") == "blue"
            && cloud_get("n2", "{.metadata.labels.owner}") == "cloud"
            && edge_get("n2", "{.metadata.labels.owner}") == "cloud"
    });
    assert_eq!(cloud_get("n2", "{.metadata.labels.rack}"), "r1");
    assert_eq!(edge_get("n2", "{.metadata.labels.atoll\\.io/site}"), "s1");
}
