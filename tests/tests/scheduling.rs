//! Hierarchical scheduling end to end: pods created at the cloud without a node are placed on a
//! site by the cloud scheduler (from the sites' summaries) and bound to a node by that site's
//! scheduler; constraints at both levels; cloud nodes by the same rules; offline sites; pods
//! naming another scheduler are left alone.

use std::time::Duration;

use tests::{wait_for, Agent, CloudCore, EdgeCore, Relay};

const T: Duration = Duration::from_secs(60);

fn jp(out: std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn pod_field(cc: &CloudCore, pod: &str, path: &str) -> String {
    jp(cc.kubectl(&["get", "pod", pod, "-o", &format!("jsonpath={path}")]))
}

fn apply(cc: &CloudCore, name: &str, yaml: &str) {
    let f = cc.dir.path().join(format!("{name}.yaml"));
    std::fs::write(&f, yaml).unwrap();
    cc.kubectl_ok(&["apply", "-f", f.to_str().unwrap()]);
}

/// A pod with no node; `extra` is more of its spec (indented by 2).
fn pod(name: &str, extra: &str) -> String {
    format!("apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n{extra}  containers:\n  - name: c\n    image: example.invalid/none:v1\n    imagePullPolicy: Never\n")
}

fn summary_nodes(cc: &CloudCore, site: &str) -> String {
    jp(cc.kubectl(&[
        "get",
        "edgesite",
        site,
        "-o",
        "jsonpath={.status.summary.ready}",
    ]))
}

#[test]
fn cloud_places_sites_bind_with_constraints_at_both_levels() {
    let cc = CloudCore::start();
    let s1 = EdgeCore::join(&cc, "s1", &cc.join_token("s1", "10m"));
    let s2 = EdgeCore::join(&cc, "s2", &cc.join_token("s2", "10m"));
    let _a1 = Agent::start(&s1.kubeconfig(), "n1");
    let _a2 = Agent::start(&s2.kubeconfig(), "n2");
    for s in ["s1", "s2"] {
        wait_for(&format!("{s}'s summary at the cloud"), T, || {
            summary_nodes(&cc, s) == "1"
        });
    }

    // Site affinity through nodeSelector on atoll.io/site.
    apply(
        &cc,
        "p1",
        &pod("p1", "  nodeSelector: {atoll.io/site: s2}\n"),
    );
    wait_for("p1 bound to n2", T, || {
        pod_field(&cc, "p1", "{.spec.nodeName}") == "n2"
    });
    assert_eq!(
        pod_field(
            &cc,
            "p1",
            "{.status.conditions[?(@.type==\"PodScheduled\")].status}"
        ),
        "True"
    );
    let wide = cc.kubectl_ok(&["get", "pods", "-o", "wide"]);
    assert!(
        wide.lines()
            .any(|l| l.starts_with("p1 ") && l.contains(" n2 ")),
        "{wide}"
    );
    let events = cc.kubectl_ok(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.name=p1",
    ]);
    assert!(
        events.contains("Scheduled") && events.contains("site s2"),
        "{events}"
    );

    // A label set at a site reaches the cloud through the summary; required node affinity on it.
    s1.kubectl_ok(&["label", "node", "n1", "zone=a"]);
    apply(
        &cc,
        "p2",
        &pod(
            "p2",
            "  affinity:\n    nodeAffinity:\n      requiredDuringSchedulingIgnoredDuringExecution:\n        nodeSelectorTerms:\n        - matchExpressions: [{key: zone, operator: In, values: [a]}]\n",
        ),
    );
    wait_for("p2 bound to n1", T, || {
        pod_field(&cc, "p2", "{.spec.nodeName}") == "n1"
    });

    // Too big for any node: Pending, with the reasons.
    apply(
        &cc,
        "p3",
        "apiVersion: v1\nkind: Pod\nmetadata: {name: p3}\nspec:\n  containers:\n  - name: c\n    image: example.invalid/none:v1\n    resources: {requests: {cpu: '512'}}\n",
    );
    let mut msg = String::new();
    wait_for("p3 unschedulable", T, || {
        msg = pod_field(
            &cc,
            "p3",
            "{.status.conditions[?(@.type==\"PodScheduled\")].message}",
        );
        msg.contains("Insufficient cpu")
    });
    assert!(msg.starts_with("0/"), "{msg}");
    assert_eq!(pod_field(&cc, "p3", "{.status.phase}"), "Pending");
    let events = cc.kubectl_ok(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.name=p3",
    ]);
    assert!(events.contains("FailedScheduling"), "{events}");

    // A tainted site takes only pods that tolerate it.
    cc.kubectl_ok(&[
        "patch",
        "edgesite",
        "s2",
        "--type=merge",
        "-p",
        r#"{"spec":{"taints":[{"key":"dedicated","value":"gpu","effect":"NoSchedule"}]}}"#,
    ]);
    for i in 0..3 {
        apply(&cc, &format!("q{i}"), &pod(&format!("q{i}"), ""));
    }
    for i in 0..3 {
        wait_for(&format!("q{i} on n1 (s2 is tainted)"), T, || {
            pod_field(&cc, &format!("q{i}"), "{.spec.nodeName}") == "n1"
        });
    }
    apply(
        &cc,
        "tol",
        &pod(
            "tol",
            "  nodeSelector: {atoll.io/site: s2}\n  tolerations: [{key: dedicated, operator: Equal, value: gpu, effect: NoSchedule}]\n",
        ),
    );
    wait_for("tol on n2", T, || {
        pod_field(&cc, "tol", "{.spec.nodeName}") == "n2"
    });

    // Allowed tenants: s1 admits only acme; a system pod that must go to s1 cannot.
    cc.kubectl_ok(&[
        "patch",
        "edgesite",
        "s1",
        "--type=merge",
        "-p",
        r#"{"spec":{"allowedTenants":["acme"]}}"#,
    ]);
    apply(
        &cc,
        "p4",
        &pod("p4", "  nodeSelector: {atoll.io/site: s1}\n"),
    );
    wait_for("p4 unschedulable (tenant not allowed at s1)", T, || {
        pod_field(
            &cc,
            "p4",
            "{.status.conditions[?(@.type==\"PodScheduled\")].message}",
        )
        .contains("tenant")
    });
    assert_eq!(pod_field(&cc, "p4", "{.spec.nodeName}"), "");
}

#[test]
fn offline_site_schedules_alone_and_gets_nothing_new_from_the_cloud() {
    let cc = CloudCore::start();
    let relay = Relay::start(cc.sync_addr);
    let s1 = EdgeCore::join_via(&relay, "s1", &cc.join_token("s1", "10m"));
    let _a1 = Agent::start(&s1.kubeconfig(), "n1");
    wait_for("s1's summary at the cloud", T, || {
        summary_nodes(&cc, "s1") == "1"
    });
    relay.cut();
    wait_for("s1 disconnected", T, || {
        tests::site_connected(&cc, "s1") == "False"
    });

    // Created at the offline edge with no node: the site binds it alone.
    let f = s1.dir.path().join("e1.yaml");
    std::fs::write(&f, pod("e1", "")).unwrap();
    s1.kubectl_ok(&["create", "-f", f.to_str().unwrap()]);
    wait_for("e1 bound at the edge", T, || {
        jp(s1.kubectl(&["get", "pod", "e1", "-o", "jsonpath={.spec.nodeName}"])) == "n1"
    });
    // Created at the cloud for that site: waits, saying why.
    apply(
        &cc,
        "c1",
        &pod("c1", "  nodeSelector: {atoll.io/site: s1}\n"),
    );
    wait_for("c1 waits for the disconnected site", T, || {
        pod_field(
            &cc,
            "c1",
            "{.status.conditions[?(@.type==\"PodScheduled\")].message}",
        )
        .contains("disconnected")
    });
    assert_eq!(pod_field(&cc, "c1", "{.spec.nodeName}"), "");

    relay.heal();
    wait_for("e1 reaches the cloud, bound", T, || {
        pod_field(&cc, "e1", "{.spec.nodeName}") == "n1"
    });
    wait_for("c1 placed and bound after the link returns", T, || {
        pod_field(&cc, "c1", "{.spec.nodeName}") == "n1"
    });
}

#[test]
fn a_site_that_cannot_bind_gives_the_pod_back() {
    let cc = CloudCore::start();
    let s1 = EdgeCore::join(&cc, "s1", &cc.join_token("s1", "10m"));
    let _a = Agent::start(&s1.kubeconfig(), "n1");
    let _b = Agent::start(&s1.kubeconfig(), "n1b");
    wait_for("both nodes in s1's summary", T, || {
        summary_nodes(&cc, "s1") == "2"
    });
    // The two nodes differ only in their hostname: one class, listing both hosts.
    let hosts = jp(cc.kubectl(&[
        "get",
        "edgesite",
        "s1",
        "-o",
        "jsonpath={.status.summary.classes[*].hosts}",
    ]));
    assert_eq!(hosts, r#"["n1","n1b"]"#);

    // n1 is nearly full; the class (its best node is n1b) still looks big enough to the cloud.
    let cpu_pod = |name: &str, spec: &str, cpu: &str| {
        format!("apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n{spec}  containers:\n  - name: c\n    image: example.invalid/none:v1\n    imagePullPolicy: Never\n    resources: {{requests: {{cpu: '{cpu}'}}}}\n")
    };
    apply(
        &cc,
        "filler",
        &cpu_pod("filler", "  nodeName: n1\n", "1500m"),
    );
    apply(
        &cc,
        "p",
        &cpu_pod("p", "  nodeSelector: {kubernetes.io/hostname: n1}\n", "1"),
    );
    // The site cannot bind it, says so, and the cloud takes it back instead of leaving it there.
    let mut msg = String::new();
    wait_for("p given back and waiting at the cloud", T, || {
        msg = pod_field(
            &cc,
            "p",
            "{.status.conditions[?(@.type==\"PodScheduled\")].message}",
        );
        msg.contains("could not bind it: s1")
    });
    assert_eq!(pod_field(&cc, "p", "{.spec.nodeName}"), "");
    assert_eq!(
        pod_field(&cc, "p", "{.metadata.annotations.atoll\\.io/site}"),
        ""
    );
    let events = cc.kubectl_ok(&["get", "events", "--field-selector", "involvedObject.name=p"]);
    assert!(
        events.contains("site s1 could not bind the pod") && events.contains("Insufficient cpu"),
        "{events}"
    );
    // Gone from the site's replica with its placement.
    let mut left = String::new();
    wait_for("p gone from s1", T, || {
        left = s1.kubectl_ok(&["get", "pods", "-o", "name"]);
        !left.lines().any(|l| l == "pod/p")
    });
    assert!(left.contains("pod/filler"), "{left}");
}

#[test]
fn cloud_nodes_are_scheduled_by_the_same_rules() {
    let cc = CloudCore::start();
    let s1 = EdgeCore::join(&cc, "s1", &cc.join_token("s1", "10m"));
    let _edge = Agent::start(&s1.kubeconfig(), "n1");
    let _cloud = Agent::start(&cc.kubeconfig(), "c1");
    wait_for("s1's summary", T, || summary_nodes(&cc, "s1") == "1");
    wait_for("c1 Ready at the cloud", T, || {
        cc.kubectl_ok(&["get", "nodes"])
            .lines()
            .any(|l| l.starts_with("c1 ") && l.contains(" Ready "))
    });
    // A pod naming another scheduler is left to it, at both tiers (created first: the passes
    // that place the pods below have seen it).
    apply(
        &cc,
        "custom",
        &pod("custom", "  schedulerName: my-scheduler\n"),
    );
    let f = s1.dir.path().join("custom-edge.yaml");
    std::fs::write(&f, pod("custom-edge", "  schedulerName: my-scheduler\n")).unwrap();
    s1.kubectl_ok(&["apply", "-f", f.to_str().unwrap()]);
    let f = s1.dir.path().join("local.yaml");
    std::fs::write(&f, pod("local", "")).unwrap();
    s1.kubectl_ok(&["apply", "-f", f.to_str().unwrap()]);
    apply(
        &cc,
        "in-cloud",
        &pod("in-cloud", "  nodeSelector: {kubernetes.io/hostname: c1}\n"),
    );
    apply(
        &cc,
        "at-edge",
        &pod("at-edge", "  nodeSelector: {atoll.io/site: s1}\n"),
    );
    wait_for("in-cloud bound to c1", T, || {
        pod_field(&cc, "in-cloud", "{.spec.nodeName}") == "c1"
    });
    wait_for("at-edge bound to n1", T, || {
        pod_field(&cc, "at-edge", "{.spec.nodeName}") == "n1"
    });
    // The site never sees the cloud node's pod.
    assert!(!s1.kubectl(&["get", "pod", "in-cloud"]).status.success());
    let at_edge = |pod: &str, path: &str| {
        jp(s1.kubectl(&["get", "pod", pod, "-o", &format!("jsonpath={path}")]))
    };
    wait_for("the site's own pod bound to n1", T, || {
        at_edge("local", "{.spec.nodeName}") == "n1"
    });
    // Untouched by either scheduler: no node, no placement, no PodScheduled condition.
    for field in ["{.spec.nodeName}", "{.status.conditions}"] {
        assert_eq!(pod_field(&cc, "custom", field), "", "custom {field}");
    }
    let notes = pod_field(&cc, "custom", "{.metadata.annotations}");
    assert!(!notes.contains(proto::SITE_ANNOTATION), "placed: {notes}");
    for field in ["{.spec.nodeName}", "{.status.conditions}"] {
        assert_eq!(at_edge("custom-edge", field), "", "custom-edge {field}");
    }
    assert_eq!(pod_field(&cc, "custom", "{.status.phase}"), "Pending");
}
