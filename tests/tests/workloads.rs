//! End-to-end tests of the workload controllers (Deployment, ReplicaSet, DaemonSet) at the
//! cloud, driven by stock kubectl. No agent runs: the tests make pods ready by patching their
//! status, as a kubelet would.

use std::time::Duration;

use serde_json::Value;
use tests::{kubectl, wait_for, CloudCore};

const T: Duration = Duration::from_secs(60);

fn json(cc: &CloudCore, args: &[&str]) -> Value {
    let mut a = args.to_vec();
    a.extend(["-o", "json"]);
    serde_json::from_str(&cc.kubectl_ok(&a)).expect("kubectl json")
}

fn items(v: &Value) -> Vec<Value> {
    v.get("items")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

fn s<'a>(v: &'a Value, ptr: &str) -> &'a str {
    v.pointer(ptr).and_then(Value::as_str).unwrap_or("")
}

fn i(v: &Value, ptr: &str) -> i64 {
    v.pointer(ptr).and_then(Value::as_i64).unwrap_or(0)
}

fn active(p: &Value) -> bool {
    p.pointer("/metadata/deletionTimestamp").is_none()
}

fn ready(p: &Value) -> bool {
    p.pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|cs| {
            cs.iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        })
}

/// Active (not terminating) pods matching `selector`.
fn pods(cc: &CloudCore, selector: &str) -> Vec<Value> {
    items(&json(cc, &["get", "pods", "-l", selector]))
        .into_iter()
        .filter(active)
        .collect()
}

fn make_ready(cc: &CloudCore, name: &str) {
    // The pod may have just been deleted by a controller: a failure here is not an error.
    let _ = cc.kubectl(&[
        "patch",
        "pod",
        name,
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status":{"phase":"Running","conditions":[{"type":"Ready","status":"True"}]}}"#,
    ]);
}

/// Act as the kubelets would: mark every active, not-ready pod matching `selector` ready and
/// finish the deletion of terminating ones.
fn ready_all(cc: &CloudCore, selector: &str) {
    for p in items(&json(cc, &["get", "pods", "-l", selector])) {
        let name = s(&p, "/metadata/name");
        if !active(&p) {
            let _ = cc.kubectl(&["delete", "pod", name, "--grace-period=0", "--force"]);
        } else if !ready(&p) {
            make_ready(cc, name);
        }
    }
}

fn header(table: &str) -> Vec<String> {
    table
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .map(String::from)
        .collect()
}

fn row(table: &str, name: &str) -> Vec<String> {
    table
        .lines()
        .find(|l| l.split_whitespace().next() == Some(name))
        .unwrap_or("")
        .split_whitespace()
        .map(String::from)
        .collect()
}

/// Wait for `kubectl rollout status` to finish, making pods ready as they appear.
fn rollout(cc: &CloudCore, what: &str, selector: &str) {
    wait_for(&format!("rollout of {what}"), T, || {
        ready_all(cc, selector);
        cc.kubectl(&["rollout", "status", what, "--timeout=1s"])
            .status
            .success()
    });
}

#[test]
fn deployment_create_scale_roll_undo_and_cascade() {
    let cc = CloudCore::start();
    // Discovery: short names, the scale subresource, categories.
    let res = cc.kubectl_ok(&["api-resources", "--api-group=apps"]);
    for (name, short) in [
        ("deployments", "deploy"),
        ("replicasets", "rs"),
        ("daemonsets", "ds"),
    ] {
        let line = row(&res, name);
        assert!(line.contains(&short.to_string()), "{res}");
    }
    // kubectl create deployment sends protobuf.
    cc.kubectl_ok(&[
        "create",
        "deployment",
        "web",
        "--image=busybox:1.36",
        "--replicas=3",
    ]);
    let d = json(&cc, &["get", "deploy", "web"]);
    assert_eq!(s(&d, "/spec/strategy/type"), "RollingUpdate");
    assert_eq!(s(&d, "/spec/strategy/rollingUpdate/maxSurge"), "25%");
    assert_eq!(i(&d, "/spec/revisionHistoryLimit"), 10);
    assert_eq!(i(&d, "/spec/progressDeadlineSeconds"), 600);
    assert_eq!(s(&d, "/spec/template/spec/restartPolicy"), "Always");
    wait_for("3 pods", T, || pods(&cc, "app=web").len() == 3);
    for p in pods(&cc, "app=web") {
        let name = s(&p, "/metadata/name");
        assert!(name.starts_with("web-"), "{name}");
        let owner = &p["metadata"]["ownerReferences"][0];
        assert_eq!(
            (owner["kind"].as_str(), owner["controller"].as_bool()),
            (Some("ReplicaSet"), Some(true))
        );
        assert_eq!(owner["blockOwnerDeletion"], true);
        assert!(!s(&p, "/metadata/labels/pod-template-hash").is_empty());
    }
    rollout(&cc, "deploy/web", "app=web");
    let t = cc.kubectl_ok(&["get", "deploy", "web"]);
    assert_eq!(
        header(&t),
        ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"]
    );
    assert_eq!(row(&t, "web")[1..4], ["3/3", "3", "3"]);
    let t = cc.kubectl_ok(&["get", "rs"]);
    assert_eq!(header(&t), ["NAME", "DESIRED", "CURRENT", "READY", "AGE"]);
    let rs = items(&json(&cc, &["get", "rs", "-l", "app=web"]));
    assert_eq!(rs.len(), 1);
    let rs1 = s(&rs[0], "/metadata/name").to_string();
    assert_eq!(
        rs1,
        format!("web-{}", s(&rs[0], "/metadata/labels/pod-template-hash"))
    );
    assert_eq!(row(&t, &rs1)[1..4], ["3", "3", "3"]);
    assert_eq!(
        s(
            &rs[0],
            "/metadata/annotations/deployment.kubernetes.io~1revision"
        ),
        "1"
    );
    let t = cc.kubectl_ok(&["get", "deploy,rs,pods"]);
    assert!(
        t.contains("deployment.apps/web") && t.contains(&format!("replicaset.apps/{rs1}")),
        "{t}"
    );
    let t = cc.kubectl_ok(&["describe", "deploy", "web"]);
    assert!(
        t.contains("ScalingReplicaSet") && t.contains(&format!("NewReplicaSet:   {rs1}")),
        "{t}"
    );
    let t = cc.kubectl_ok(&["get", "all"]);
    assert!(t.contains("deployment.apps/web"), "{t}");

    // kubectl scale goes through the scale subresource.
    cc.kubectl_ok(&["scale", "deploy", "web", "--replicas=5"]);
    wait_for("5 pods", T, || pods(&cc, "app=web").len() == 5);
    rollout(&cc, "deploy/web", "app=web");
    cc.kubectl_ok(&["scale", "deploy", "web", "--replicas=4"]);
    wait_for("4 pods", T, || pods(&cc, "app=web").len() == 4);
    let scale: Value = serde_json::from_str(&cc.kubectl_ok(&[
        "get",
        "--raw",
        "/apis/apps/v1/namespaces/default/deployments/web/scale",
    ]))
    .expect("scale json");
    assert_eq!(
        (scale["kind"].as_str(), i(&scale, "/spec/replicas")),
        (Some("Scale"), 4)
    );
    cc.kubectl_ok(&["scale", "rs", &rs1, "--replicas=4"]);

    // Rolling update with maxSurge 1 / maxUnavailable 1 on 4 replicas: at most 5 pods, at least
    // 3 ready, at every observation.
    cc.kubectl_ok(&[
        "patch",
        "deploy",
        "web",
        "-p",
        r#"{"spec":{"strategy":{"rollingUpdate":{"maxSurge":1,"maxUnavailable":1}}}}"#,
    ]);
    rollout(&cc, "deploy/web", "app=web");
    cc.kubectl_ok(&["set", "image", "deploy/web", "busybox=busybox:1.37"]);
    let mut max_seen = 0;
    let mut min_ready = usize::MAX;
    let mut saw_both = false;
    wait_for("rolling update", Duration::from_secs(90), || {
        let ps = pods(&cc, "app=web");
        let nready = ps.iter().filter(|p| ready(p)).count();
        max_seen = max_seen.max(ps.len());
        min_ready = min_ready.min(nready);
        assert!(
            ps.len() <= 5,
            "more than replicas+maxSurge pods: {}",
            ps.len()
        );
        assert!(
            nready >= 3,
            "fewer than replicas-maxUnavailable ready: {nready}"
        );
        let images: std::collections::HashSet<&str> = ps
            .iter()
            .map(|p| s(p, "/spec/containers/0/image"))
            .collect();
        saw_both |= images.len() == 2;
        // Like a kubelet, one pod at a time becomes ready.
        if let Some(p) = ps.iter().find(|p| !ready(p)) {
            make_ready(&cc, s(p, "/metadata/name"));
        }
        let d = json(&cc, &["get", "deploy", "web"]);
        ps.len() == 4
            && ps
                .iter()
                .all(|p| s(p, "/spec/containers/0/image") == "busybox:1.37")
            && i(&d, "/status/updatedReplicas") == 4
            && i(&d, "/status/availableReplicas") == 4
            && i(&d, "/status/observedGeneration") == i(&d, "/metadata/generation")
    });
    assert!(
        saw_both,
        "old and new pods should coexist during a rolling update"
    );
    assert!(max_seen <= 5 && min_ready >= 3);
    rollout(&cc, "deploy/web", "app=web");
    let d = json(&cc, &["get", "deploy", "web"]);
    let progressing = d["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Progressing")
        .cloned()
        .unwrap();
    assert_eq!(progressing["reason"], "NewReplicaSetAvailable");
    assert_eq!(
        s(
            &d,
            "/metadata/annotations/deployment.kubernetes.io~1revision"
        ),
        "2"
    );
    let hist = cc.kubectl_ok(&["rollout", "history", "deploy/web"]);
    assert!(
        hist.lines().any(|l| l.starts_with('1')) && hist.lines().any(|l| l.starts_with('2')),
        "{hist}"
    );

    // Undo (client-side: kubectl reads the ReplicaSets and patches the template back).
    cc.kubectl_ok(&["rollout", "undo", "deploy/web"]);
    rollout(&cc, "deploy/web", "app=web");
    wait_for("old image back", T, || {
        ready_all(&cc, "app=web");
        let ps = pods(&cc, "app=web");
        ps.len() == 4
            && ps
                .iter()
                .all(|p| s(p, "/spec/containers/0/image") == "busybox:1.36")
    });
    let d = json(&cc, &["get", "deploy", "web"]);
    assert_eq!(
        s(&d, "/spec/template/spec/containers/0/image"),
        "busybox:1.36"
    );
    assert_eq!(
        s(
            &d,
            "/metadata/annotations/deployment.kubernetes.io~1revision"
        ),
        "3"
    );
    // The rollback reused the first ReplicaSet rather than making a third.
    let rs = items(&json(&cc, &["get", "rs", "-l", "app=web"]));
    assert_eq!(rs.len(), 2, "{rs:?}");
    let first = rs
        .iter()
        .find(|r| s(r, "/metadata/name") == rs1)
        .expect("first rs kept");
    assert_eq!(i(first, "/spec/replicas"), 4);

    // Recreate: every old pod goes before a new one is made.
    cc.kubectl_ok(&[
        "patch",
        "deploy",
        "web",
        "--type=merge",
        "-p",
        r#"{"spec":{"strategy":{"type":"Recreate","rollingUpdate":null}}}"#,
    ]);
    cc.kubectl_ok(&["set", "image", "deploy/web", "busybox=busybox:1.35"]);
    wait_for("recreate", T, || {
        let ps = pods(&cc, "app=web");
        let images: std::collections::HashSet<&str> = ps
            .iter()
            .map(|p| s(p, "/spec/containers/0/image"))
            .collect();
        assert!(images.len() <= 1, "recreate mixed images: {images:?}");
        ready_all(&cc, "app=web");
        ps.len() == 4 && images.contains("busybox:1.35")
    });
    rollout(&cc, "deploy/web", "app=web");

    // Deleting the deployment cascades (background) to its ReplicaSets and pods.
    cc.kubectl_ok(&["delete", "deploy", "web"]);
    wait_for("cascade", T, || {
        items(&json(&cc, &["get", "rs", "-l", "app=web"])).is_empty()
            && items(&json(&cc, &["get", "pods", "-l", "app=web"])).is_empty()
    });
}

#[test]
fn replicaset_adopts_and_validation() {
    let cc = CloudCore::start();
    let rs = r#"apiVersion: apps/v1
kind: ReplicaSet
metadata: {name: front}
spec:
  replicas: 2
  selector: {matchLabels: {app: front}}
  template:
    metadata: {labels: {app: front}}
    spec: {containers: [{name: c, image: busybox:1.36}]}
"#;
    // An orphan pod the selector matches is adopted.
    cc.kubectl_ok(&["run", "stray", "--image=busybox:1.36", "--labels=app=front"]);
    let out = kubectl(
        &cc.kubeconfig(),
        cc.dir.path(),
        &["apply", "-f", "-"],
        Some(rs),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_for("2 pods", T, || {
        let ps = pods(&cc, "app=front");
        ps.len() == 2
            && ps
                .iter()
                .all(|p| p["metadata"]["ownerReferences"][0]["name"] == "front")
    });
    assert!(pods(&cc, "app=front")
        .iter()
        .any(|p| s(p, "/metadata/name") == "stray"));
    ready_all(&cc, "app=front");
    wait_for("rs status", T, || {
        let r = json(&cc, &["get", "rs", "front"]);
        i(&r, "/status/readyReplicas") == 2 && i(&r, "/status/availableReplicas") == 2
    });
    // A pod relabelled out of the selector is released and replaced.
    cc.kubectl_ok(&["label", "pod", "stray", "app=gone", "--overwrite"]);
    wait_for("release + replace", T, || {
        let stray = json(&cc, &["get", "pod", "stray"]);
        stray["metadata"]["ownerReferences"]
            .as_array()
            .is_none_or(|a| a.is_empty())
            && pods(&cc, "app=front").len() == 2
    });
    // Validation: selector must match the template; selectors are immutable.
    let bad = rs.replace("labels: {app: front}", "labels: {app: other}");
    let out = kubectl(
        &cc.kubeconfig(),
        cc.dir.path(),
        &["create", "-f", "-"],
        Some(&bad.replace("name: front", "name: bad")),
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("selector` does not match template `labels`")
    );
    let out = cc.kubectl(&["scale", "rs", "front", "--replicas=-1"]);
    assert!(!out.status.success());
    cc.kubectl_ok(&["scale", "rs", "front", "--replicas=0"]);
    wait_for("scaled to zero", T, || pods(&cc, "app=front").is_empty());
}

fn node(name: &str, site: &str, taint: bool) -> String {
    let spec = if taint {
        "spec:\n  taints: [{key: dedicated, value: gpu, effect: NoSchedule}]"
    } else {
        "spec: {}"
    };
    format!(
        "apiVersion: v1\nkind: Node\nmetadata:\n  name: {name}\n  labels: {{atoll.io/site: {site}}}\n{spec}\n---\n"
    )
}

/// Nodes with an active pod of the daemon set `app=agent`.
fn daemon_nodes(cc: &CloudCore) -> Vec<String> {
    let mut n: Vec<String> = pods(cc, "app=agent")
        .iter()
        .map(|p| s(p, "/spec/nodeName").to_string())
        .collect();
    n.sort();
    n
}

#[test]
fn daemonset_follows_nodes() {
    let cc = CloudCore::start();
    let nodes = [
        node("n1", "s1", false),
        node("n2", "s1", true),
        node("n3", "s2", false),
    ]
    .concat();
    let out = kubectl(
        &cc.kubeconfig(),
        cc.dir.path(),
        &["create", "-f", "-"],
        Some(&nodes),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ds = r#"apiVersion: apps/v1
kind: DaemonSet
metadata: {name: agent}
spec:
  selector: {matchLabels: {app: agent}}
  template:
    metadata: {labels: {app: agent}}
    spec:
      nodeSelector: {atoll.io/site: s1}
      containers: [{name: c, image: busybox:1.36}]
"#;
    let out = kubectl(
        &cc.kubeconfig(),
        cc.dir.path(),
        &["create", "-f", "-"],
        Some(ds),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // One pod per matching node; the tainted node is skipped.
    wait_for("pod on n1", T, || daemon_nodes(&cc) == ["n1"]);
    rollout(&cc, "ds/agent", "app=agent");
    let t = cc.kubectl_ok(&["get", "ds"]);
    assert_eq!(
        header(&t),
        [
            "NAME",
            "DESIRED",
            "CURRENT",
            "READY",
            "UP-TO-DATE",
            "AVAILABLE",
            "NODE",
            "SELECTOR",
            "AGE"
        ]
    );
    assert_eq!(
        row(&t, "agent")[1..7],
        ["1", "1", "1", "1", "1", "atoll.io/site=s1"]
    );
    // A node joining the site gets a pod; a node leaving it loses its pod.
    cc.kubectl_ok(&["label", "node", "n3", "atoll.io/site=s1", "--overwrite"]);
    wait_for("pod on n3", T, || daemon_nodes(&cc) == ["n1", "n3"]);
    cc.kubectl_ok(&["label", "node", "n1", "atoll.io/site=s2", "--overwrite"]);
    wait_for("pod leaves n1", T, || daemon_nodes(&cc) == ["n3"]);
    // Tolerating the taint brings the tainted node in.
    cc.kubectl_ok(&[
        "patch",
        "ds",
        "agent",
        "--type=merge",
        "-p",
        r#"{"spec":{"template":{"spec":{"tolerations":[{"key":"dedicated","operator":"Exists"}]}}}}"#,
    ]);
    wait_for("pod on n2", T, || {
        ready_all(&cc, "app=agent");
        daemon_nodes(&cc) == ["n2", "n3"]
    });
    // The template change rolled out: every pod carries the new template.
    rollout(&cc, "ds/agent", "app=agent");
    let d = json(&cc, &["get", "ds", "agent"]);
    assert_eq!(i(&d, "/status/desiredNumberScheduled"), 2);
    assert_eq!(i(&d, "/status/updatedNumberScheduled"), 2);
    for p in pods(&cc, "app=agent") {
        assert_eq!(s(&p, "/spec/tolerations/0/key"), "dedicated");
    }
    // History is kept as ControllerRevisions; undo brings the first template back, which
    // does not tolerate n2's taint.
    let hist = cc.kubectl_ok(&["rollout", "history", "ds/agent"]);
    assert!(
        hist.lines().any(|l| l.starts_with('1')) && hist.lines().any(|l| l.starts_with('2')),
        "{hist}"
    );
    let t = cc.kubectl_ok(&["get", "controllerrevisions"]);
    assert_eq!(header(&t), ["NAME", "CONTROLLER", "REVISION", "AGE"]);
    assert!(t.contains("daemonset.apps/agent"), "{t}");
    cc.kubectl_ok(&["rollout", "undo", "ds/agent"]);
    wait_for("undo", T, || {
        ready_all(&cc, "app=agent");
        daemon_nodes(&cc) == ["n3"]
    });
    rollout(&cc, "ds/agent", "app=agent");
    let d = json(&cc, &["get", "ds", "agent"]);
    assert!(
        d.pointer("/spec/template/spec/tolerations").is_none(),
        "{d}"
    );
    let revs: Vec<i64> = items(&json(&cc, &["get", "controllerrevisions"]))
        .iter()
        .map(|c| i(c, "/revision"))
        .collect();
    assert!(revs.contains(&3), "{revs:?}");
    // A vanished node takes its pod with it.
    cc.kubectl_ok(&["delete", "node", "n3"]);
    wait_for("pod leaves n3", T, || daemon_nodes(&cc).is_empty());
    cc.kubectl_ok(&["delete", "ds", "agent"]);
}

#[test]
fn tenant_deployments_stay_in_their_space_and_resume_after_restart() {
    let mut cc = CloudCore::start();
    let out = kubectl(
        &cc.kubeconfig(),
        cc.dir.path(),
        &["create", "-f", "-"],
        Some("apiVersion: v1\nkind: Tenant\nmetadata: {name: acme}\n"),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let acme = cc.tenant_kubeconfig("acme");
    let scratch = cc.dir.path().join("acme");
    let as_acme = |args: &[&str]| tests::ok(kubectl(&acme, &scratch, args, None), args);
    as_acme(&[
        "create",
        "deployment",
        "web",
        "--image=busybox:1.36",
        "--replicas=2",
    ]);
    let acme_pods = |as_acme: &dyn Fn(&[&str]) -> String| -> Vec<Value> {
        let v: Value =
            serde_json::from_str(&as_acme(&["get", "pods", "-l", "app=web", "-o", "json"]))
                .expect("json");
        items(&v).into_iter().filter(active).collect()
    };
    wait_for("2 pods in acme", T, || acme_pods(&as_acme).len() == 2);
    for p in acme_pods(&as_acme) {
        assert_eq!(s(&p, "/metadata/tenant"), "acme");
    }
    // The system space has no such deployment or pods.
    assert!(pods(&cc, "app=web").is_empty());
    assert!(cc.kubectl(&["get", "deploy", "web"]).status.code() != Some(0));
    // After a crash the controllers pick up where they were: no duplicate ReplicaSet, and
    // scaling still works.
    cc.restart();
    as_acme(&["scale", "deploy", "web", "--replicas=3"]);
    wait_for("3 pods in acme", T, || acme_pods(&as_acme).len() == 3);
    let rs: Value = serde_json::from_str(&as_acme(&["get", "rs", "-o", "json"])).expect("json");
    assert_eq!(items(&rs).len(), 1);
    for p in acme_pods(&as_acme) {
        let _ = kubectl(
            &acme,
            &scratch,
            &[
                "patch",
                "pod",
                s(&p, "/metadata/name"),
                "--subresource=status",
                "--type=merge",
                "-p",
                r#"{"status":{"phase":"Running","conditions":[{"type":"Ready","status":"True"}]}}"#,
            ],
            None,
        );
    }
    as_acme(&["rollout", "status", "deploy/web", "--timeout=30s"]);
    let t = as_acme(&["get", "deploy", "web"]);
    assert_eq!(row(&t, "web")[1..4], ["3/3", "3", "3"]);
}
