//! VM pods (Arktos' `spec.virtualMachine`) end to end with stock kubectl: the API at both tiers
//! (strict fields, OpenAPI and `kubectl explain`, validation, defaults, the table), and their
//! scheduling (VM resources plus overhead, only on nodes that run VMs).

use std::time::Duration;

use tests::{err, kubectl, wait_for, Agent, CloudCore, EdgeCore};

const T: Duration = Duration::from_secs(60);

fn vm_pod(name: &str, extra_vm: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  virtualMachine:\n    name: vm\n    image: registry.invalid/vm:v1\n{extra_vm}"
    )
}

fn apply(kubeconfig: &std::path::Path, dir: &std::path::Path, yaml: &str) -> std::process::Output {
    kubectl(kubeconfig, dir, &["apply", "-f", "-"], Some(yaml))
}

#[test]
fn vm_pods_are_pods_at_both_tiers() {
    let cc = CloudCore::start();
    let (kc, dir) = (cc.kubeconfig(), cc.dir.path().to_path_buf());

    // The schema knows the VM: kubectl explain, and strict validation inside it.
    let explain = cc.kubectl_ok(&["explain", "pod.spec.virtualMachine"]);
    for field in [
        "powerSpec",
        "cloudInitUserDataScript",
        "userData",
        "publicKey",
    ] {
        assert!(explain.contains(field), "explain lacks {field}:\n{explain}");
    }
    let typo = apply(&kc, &dir, &vm_pod("typo", "    powerSpecc: Running\n"));
    assert!(!typo.status.success());
    let e = String::from_utf8_lossy(&typo.stderr);
    assert!(
        e.contains("unknown field \"spec.virtualMachine.powerSpecc\""),
        "{e}"
    );

    // A pod has containers or a VM, never both; a VM's own rules name their fields.
    let both = format!(
        "{}  containers: [{{name: c, image: busybox}}]\n",
        vm_pod("both", "")
    );
    let e = err(apply(&kc, &dir, &both), &["apply", "both"]);
    assert!(
        e.contains(
            "spec.containers: Forbidden: containers and virtualMachine workloads in same pod"
        ),
        "{e}"
    );
    let bad = vm_pod(
        "bad",
        "    powerSpec: Paused\n    resources: {limits: {cpu: 500m}}\n",
    );
    let e = err(apply(&kc, &dir, &bad), &["apply", "bad"]);
    assert!(
        e.contains("spec.virtualMachine.powerSpec: Unsupported value: \"Paused\""),
        "{e}"
    );
    assert!(
        e.contains("spec.virtualMachine.resources.limits.cpu: Invalid value: \"500m\""),
        "{e}"
    );
    assert!(!cc.kubectl(&["get", "pod", "both"]).status.success());

    // Accepted with Arktos' defaults, the VM's resources and the per-VM overhead; listed as a
    // pod of one (its VM).
    let out = apply(
        &kc,
        &dir,
        &vm_pod(
            "web-vm",
            "    resources: {limits: {cpu: '2', memory: 256Mi}}\n",
        ),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let get = |path: &str| {
        String::from_utf8_lossy(
            &cc.kubectl(&["get", "pod", "web-vm", "-o", &format!("jsonpath={path}")])
                .stdout,
        )
        .into_owned()
    };
    assert_eq!(get("{.spec.virtualMachine.powerSpec}"), "Running");
    assert_eq!(
        get("{.spec.virtualMachine.imagePullPolicy}"),
        "IfNotPresent"
    );
    assert_eq!(
        get("{.spec.virtualMachine.resources.requests.memory}"),
        "256Mi"
    );
    assert_eq!(get("{.spec.overhead.memory}"), proto::vm::OVERHEAD_MEMORY);
    assert_eq!(get("{.status.qosClass}"), "Guaranteed");
    // Its one container is the VM's mirror, for clients that need a container.
    assert_eq!(get("{.spec.containers[*].name}"), "vm");
    assert_eq!(get("{.spec.containers[0].resources.limits.cpu}"), "2");
    let row = cc.kubectl_ok(&["get", "pod", "web-vm"]);
    assert!(
        row.lines()
            .any(|l| l.starts_with("web-vm ") && l.contains(" 0/1 ") && l.contains("Pending")),
        "{row}"
    );
    // Only its image and wanted power state may change.
    cc.kubectl_ok(&[
        "patch",
        "pod",
        "web-vm",
        "--type=merge",
        "-p",
        r#"{"spec":{"virtualMachine":{"powerSpec":"Shutdown","image":"registry.invalid/vm:v2"}}}"#,
    ]);
    assert_eq!(get("{.spec.containers[0].image}"), "registry.invalid/vm:v2");
    // The object as read goes back unchanged (kubectl replace of what get printed).
    let live = cc.kubectl_ok(&["get", "pod", "web-vm", "-o", "json"]);
    let out = kubectl(&kc, &dir, &["replace", "-f", "-"], Some(&live));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let e = err(
        cc.kubectl(&[
            "patch",
            "pod",
            "web-vm",
            "--type=merge",
            "-p",
            r#"{"spec":{"virtualMachine":{"name":"other"}}}"#,
        ]),
        &["patch"],
    );
    assert!(e.contains("spec.virtualMachine.powerSpec"), "{e}");

    // A node that runs no VMs is not a place for one: Pending with the usual reason.
    let s1 = EdgeCore::join(&cc, "s1", &cc.join_token("s1", "10m"));
    let _agent = Agent::start(&s1.kubeconfig(), "n1");
    wait_for("s1's summary names n1 ready", T, || {
        String::from_utf8_lossy(
            &cc.kubectl(&[
                "get",
                "edgesite",
                "s1",
                "-o",
                "jsonpath={.status.summary.ready}",
            ])
            .stdout,
        ) == "1"
    });
    let out = apply(&kc, &dir, &vm_pod("waits", ""));
    assert!(out.status.success());
    let mut msg = String::new();
    wait_for("waits unschedulable", T, || {
        msg = String::from_utf8_lossy(
            &cc.kubectl(&[
                "get",
                "pod",
                "waits",
                "-o",
                "jsonpath={.status.conditions[?(@.type==\"PodScheduled\")].message}",
            ])
            .stdout,
        )
        .into_owned();
        !msg.is_empty()
    });
    assert!(msg.contains("node affinity/selector"), "{msg}");

    // The edge's API serves the same schema and rules, and templates may carry a VM.
    let (ekc, edir) = (s1.kubeconfig(), s1.dir.path().to_path_buf());
    let e = err(apply(&ekc, &edir, &both), &["apply", "both at the edge"]);
    assert!(
        e.contains("containers and virtualMachine workloads in same pod"),
        "{e}"
    );
    let out = apply(&ekc, &edir, &vm_pod("local-vm", ""));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The site's VM pod goes up as any pod (the cloud judges it as a create).
    wait_for("local-vm at the cloud", T, || {
        cc.kubectl(&["get", "pod", "local-vm"]).status.success()
    });
    // Bound by hand to a node that runs no VMs: its agent refuses it as kubelet does.
    let pinned = vm_pod("pinned", "").replace("spec:\n", "spec:\n  nodeName: n1\n");
    let out = apply(&ekc, &edir, &pinned);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_for("pinned refused by n1's agent", T, || {
        String::from_utf8_lossy(
            &s1.kubectl(&[
                "get",
                "pod",
                "pinned",
                "-o",
                "jsonpath={.status.phase}/{.status.reason}",
            ])
            .stdout,
        ) == "Failed/VMUnsupported"
    });
    let deploy = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: vms}\nspec:\n  replicas: 1\n  selector: {matchLabels: {app: vms}}\n  template:\n    metadata: {labels: {app: vms}}\n    spec:\n      virtualMachine: {name: vm, image: registry.invalid/vm:v1}\n";
    let out = apply(&kc, &dir, deploy);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_for("the Deployment's VM pod", T, || {
        cc.kubectl_ok(&["get", "pods", "-l", "app=vms", "-o", "name"])
            .lines()
            .count()
            == 1
    });
}
