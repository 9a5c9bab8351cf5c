//! VM pods (Arktos' `spec.virtualMachine`) end to end with stock kubectl: the API at both tiers
//! (strict fields, OpenAPI and `kubectl explain`, validation, defaults, the table), and their
//! scheduling (VM resources plus overhead, only on nodes that run VMs); and the runtime: boot,
//! console logs, network and DHCP, hot-plug resize, power, agent restarts and an offline
//! reboot-like restart, deletion.

use std::path::Path;
use std::time::Duration;

use tests::{err, kubectl, wait_for, Agent, CloudCore, EdgeCore};

const T: Duration = Duration::from_secs(60);
/// The node label a VM-running agent sets, as a jsonpath.
const VM_LABEL_PATH: &str = "{.metadata.labels.vm\\.atoll\\.io/runtime}";

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
    let get = |path: &str| cc.jsonpath("pod", "web-vm", path);
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
        cc.jsonpath("edgesite", "s1", "{.status.summary.ready}") == "1"
    });
    let out = apply(&kc, &dir, &vm_pod("waits", ""));
    assert!(out.status.success());
    let mut msg = String::new();
    wait_for("waits unschedulable", T, || {
        msg = cc.jsonpath(
            "pod",
            "waits",
            "{.status.conditions[?(@.type==\"PodScheduled\")].message}",
        );
        !msg.is_empty()
    });
    assert!(msg.contains("node affinity/selector"), "{msg}");

    // The edge's API serves the same schema and rules, and templates may carry a VM.
    let (ekc, edir) = (s1.kubeconfig(), s1.dir.path().to_path_buf());
    let explain = s1.kubectl_ok(&["explain", "pod.spec.virtualMachine.powerSpec"]);
    assert!(explain.contains("powerSpec"), "{explain}");
    let typo = apply(&ekc, &edir, &vm_pod("typo", "    powerSpecc: Running\n"));
    assert!(String::from_utf8_lossy(&typo.stderr)
        .contains("unknown field \"spec.virtualMachine.powerSpecc\""));
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
        tests::jsonpath(
            &s1.kubeconfig(),
            s1.dir.path(),
            "pod",
            "pinned",
            "{.status.phase}/{.status.reason}",
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
    // A DaemonSet of VMs is accepted and runs only on nodes that run VMs (n1 does not).
    let ds = deploy
        .replace("kind: Deployment", "kind: DaemonSet")
        .replace("name: vms", "name: vm-daemons")
        .replace("app: vms", "app: vmd")
        .replace("  replicas: 1\n", "");
    let out = apply(&kc, &dir, &ds);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_for("the VM DaemonSet observed, scheduling nowhere", T, || {
        cc.jsonpath(
            "daemonset",
            "vm-daemons",
            "{.status.observedGeneration}/{.status.desiredNumberScheduled}",
        ) == "1/0"
    });
}

/// The pod's qemu: the pids in its VM's cgroup (memory controller).
fn vm_pids(uid: &str) -> Vec<String> {
    std::fs::read_to_string(format!("/sys/fs/cgroup/memory/atoll/{uid}/vm/cgroup.procs"))
        .unwrap_or_default()
        .split_whitespace()
        .map(String::from)
        .collect()
}

#[test]
fn a_vm_pod_boots_logs_survives_the_agent_and_powers_down() {
    assert!(
        tests::vmimage::available(),
        "qemu, cpio and linux-image-cloud-amd64 are needed (deploy/test.sh installs them)"
    );
    let reg = tests::registry::Registry::start();
    let scratch = tempfile::tempdir().expect("tempdir");
    reg.push(
        &tests::vmimage::vm_image(scratch.path(), "vm-v1", "v1"),
        "vm:v1",
    );
    reg.push(
        &tests::registry::busybox_image(scratch.path(), "v1"),
        "busybox:v1",
    );
    let mut cc = CloudCore::start();
    let s1 = EdgeCore::join(&cc, "s1", &cc.join_token("s1", "10m"));
    let mut agent = Agent::start_vms(&s1.kubeconfig(), "n1", &[reg.addr()]);
    wait_for("n1 labelled as running VMs, in s1's summary", T, || {
        cc.jsonpath("node", "n1", VM_LABEL_PATH) == "qemu"
            && cc.jsonpath("edgesite", "s1", "{.status.summary.ready}") == "1"
    });
    let (kc, dir) = (cc.kubeconfig(), cc.dir.path().to_path_buf());

    // Created at the cloud, placed on the site, run by n1's agent under qemu.
    let vm = |name: &str, image: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  terminationGracePeriodSeconds: 60\n  virtualMachine:\n    name: vm\n    image: {}/{image}\n    resources: {{limits: {{cpu: '1', memory: 256Mi}}}}\n",
            reg.addr()
        )
    };
    let start = std::time::Instant::now();
    let out = apply(&kc, &dir, &vm("guest", "vm:v1"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let field = |pod: &str, path: &str| tests::jsonpath(&kc, &dir, "pod", pod, path);
    wait_for(
        "the VM Running at the cloud",
        Duration::from_secs(120),
        || {
            field(
                "guest",
                "{.status.phase}/{.status.virtualMachineStatus.state}",
            ) == "Running/active"
        },
    );
    let running_after = start.elapsed();
    let row = cc.kubectl_ok(&["get", "pod", "guest"]);
    assert!(row.contains(" 1/1 ") && row.contains("Running"), "{row}");
    assert_eq!(
        field("guest", "{.status.virtualMachineStatus.powerState}"),
        "running"
    );
    // The serial console is the log, at both tiers.
    let mut console = String::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while !console.contains("atoll-vm: ready") {
        assert!(
            std::time::Instant::now() < deadline,
            "no `atoll-vm: ready` on the guest's console within 120 s:\n{console}\n{}",
            agent.log()
        );
        std::thread::sleep(Duration::from_millis(200));
        let out = cc.kubectl(&["logs", "guest"]);
        console = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let edge_logs = s1.kubectl_ok(&["logs", "guest", "-c", "vm"]);
    assert!(edge_logs.contains("atoll-vm: booted"), "{edge_logs}");
    let tail = cc.kubectl_ok(&["logs", "guest", "--tail", "1"]);
    assert_eq!(tail.lines().count(), 1, "{tail}");
    eprintln!(
        "VM pod create -> Running at the cloud: {running_after:?}; -> guest ready on its console: {:?}",
        start.elapsed()
    );

    // The guest holds the pod's IP on its tenant's network: a container pod of the tenant
    // reaches its HTTP server.
    let vm_ip = field("guest", "{.status.podIP}");
    assert!(
        console.contains(&format!("inet {vm_ip}/24")),
        "guest address:\n{console}"
    );
    // The node's DHCP server hands the guest the same address (and the gateway, its name).
    let gw = {
        let o = vm_ip.rsplit_once('.').unwrap().0;
        format!("{o}.1")
    };
    let lease = format!("atoll-vm: dhcp lease {vm_ip}/24 router {gw} host guest");
    wait_for("the guest's DHCP lease on its console", T, || {
        cc.kubectl_ok(&["logs", "guest"]).contains(&lease)
    });
    let client = format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: client}}\nspec:\n  nodeName: n1\n  restartPolicy: Never\n  containers:\n  - name: c\n    image: {}/busybox:v1\n    command: [sh, -c, 'for i in $(seq 1 100); do timeout 2 wget -q -O- http://{vm_ip}/ && exit 0; sleep 0.2; done; echo unreachable; exit 1']\n",
        reg.addr()
    );
    let out = apply(&kc, &dir, &client);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_for("the client pod finished", Duration::from_secs(90), || {
        matches!(
            field("client", "{.status.phase}").as_str(),
            "Succeeded" | "Failed"
        )
    });
    let said = cc.kubectl_ok(&["logs", "client"]);
    assert!(
        said.contains("hello from the VM"),
        "the container pod got: {said}"
    );
    assert_eq!(field("client", "{.status.phase}"), "Succeeded");
    // Another tenant's pod on the same node does not reach it.
    let out = apply(
        &kc,
        &dir,
        "apiVersion: v1\nkind: Tenant\nmetadata: {name: acme}\n",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let acme = cc.tenant_kubeconfig("acme");
    let stranger = client
        .replace("name: client", "name: stranger")
        .replace("seq 1 100", "seq 1 5");
    let out = apply(&acme, &dir, &stranger);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let acme_field = |path: &str| tests::jsonpath(&acme, &dir, "pod", "stranger", path);
    wait_for(
        "the other tenant's pod finished",
        Duration::from_secs(90),
        || {
            matches!(
                acme_field("{.status.phase}").as_str(),
                "Succeeded" | "Failed"
            )
        },
    );
    let said = String::from_utf8_lossy(&kubectl(&acme, &dir, &["logs", "stranger"], None).stdout)
        .into_owned();
    assert!(
        said.contains("unreachable") && !said.contains("hello from the VM"),
        "another tenant got: {said}"
    );

    // qemu runs in the pod's cgroup, limited to the guest's memory plus the overhead.
    let uid = field("guest", "{.metadata.uid}");
    let pids = vm_pids(&uid);
    assert_eq!(pids.len(), 1, "one qemu in the VM's cgroup: {pids:?}");
    let limit: u64 = std::fs::read_to_string(format!(
        "/sys/fs/cgroup/memory/atoll/{uid}/vm/memory.limit_in_bytes"
    ))
    .unwrap()
    .trim()
    .parse()
    .unwrap();
    assert_eq!(limit, (256 + 80) << 20);

    // In-place resize: a vCPU and a DIMM hot-plugged through QMP; the guest onlines them.
    let guest_has = |logs: &str| -> Option<(u32, u64)> {
        let l = logs.lines().rev().find(|l| l.contains("atoll-vm: cpus="))?;
        let mut it = l.split_whitespace().filter_map(|w| w.split_once('='));
        let cpus = it.next()?.1.parse().ok()?;
        let mem = it.next()?.1.parse().ok()?;
        Some((cpus, mem))
    };
    let mut before = None;
    wait_for("the guest reports its size", T, || {
        before = guest_has(&cc.kubectl_ok(&["logs", "guest"]));
        before.is_some()
    });
    let (cpus0, mem0) = before.unwrap();
    assert_eq!(cpus0, 1);
    let resize = |res: &str| {
        cc.kubectl(&[
            "patch",
            "pod",
            "guest",
            "--subresource",
            "resize",
            "-p",
            &format!(r#"{{"spec":{{"virtualMachine":{{"resources":{{"limits":{res}}}}}}}}}"#),
        ])
    };
    let out = resize(r#"{"cpu":"2","memory":"384Mi"}"#);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut now = None;
    wait_for(
        "the guest onlined a second vCPU and 128Mi more",
        Duration::from_secs(120),
        || {
            now = guest_has(&cc.kubectl_ok(&["logs", "guest"]));
            now.is_some_and(|(c, m)| c == 2 && m >= mem0 + 120 * 1024)
        },
    );
    wait_for("the actual resources in the status", T, || {
        field(
            "guest",
            "{.status.containerStatuses[0].resources.limits.memory}",
        ) == "384Mi"
            && field(
                "guest",
                "{.status.virtualMachineStatus.resources.limits.cpu}",
            ) == "2"
    });
    assert_eq!(
        field("guest", "{.status.virtualMachineStatus.restartCount}"),
        "0",
        "the guest restarted during the hot-plug; its console:\n{}",
        String::from_utf8_lossy(&cc.kubectl(&["logs", "guest", "--previous"]).stdout)
    );
    assert_eq!(
        field("guest", "{.spec.virtualMachine.resources.requests.memory}"),
        "384Mi"
    );
    let limit = |uid: &str| -> u64 {
        std::fs::read_to_string(format!(
            "/sys/fs/cgroup/memory/atoll/{uid}/vm/memory.limit_in_bytes"
        ))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
    };
    assert_eq!(limit(&uid), (384 + 80) << 20);
    // What a guest cannot take is refused, with the field.
    for (res, want) in [
        (r#"{"cpu":"2","memory":"256Mi"}"#, "can only grow in place"),
        (r#"{"cpu":"2","memory":"400Mi"}"#, "whole blocks of 128Mi"),
        (r#"{"cpu":"1500m","memory":"384Mi"}"#, "whole number"),
    ] {
        let out = resize(res);
        let msg = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && msg.contains(want), "{res}: {msg}");
        assert!(
            msg.contains("spec.virtualMachine.resources.limits"),
            "{msg}"
        );
    }

    // The agent restarts: qemu is re-adopted, the guest not rebooted.
    agent.restart();
    wait_for("the restarted agent adopted the VM", T, || {
        agent.log().contains("adopted running container")
    });
    assert_eq!(vm_pids(&uid), pids, "the same qemu");
    let logs = cc.kubectl_ok(&["logs", "guest"]);
    assert_eq!(logs.matches("atoll-vm: booted").count(), 1, "{logs}");
    // ...with its hot-plugged size (nothing plugged again, nothing lost).
    assert_eq!(guest_has(&logs), now, "{logs}");
    assert_eq!(limit(&uid), (384 + 80) << 20);
    assert_eq!(
        field("guest", "{.status.virtualMachineStatus.restartCount}"),
        "0"
    );

    // powerSpec Shutdown powers the guest off (ACPI) and keeps it off; Running starts it again,
    // and the console of the attempt before is `kubectl logs --previous`.
    cc.kubectl_ok(&[
        "patch",
        "pod",
        "guest",
        "-p",
        r#"{"spec":{"virtualMachine":{"powerSpec":"Shutdown"}}}"#,
    ]);
    wait_for("the VM powered off", T, || {
        field("guest", "{.status.virtualMachineStatus.powerState}") == "shutdown"
            && vm_pids(&uid).is_empty()
    });
    assert_eq!(
        field("guest", "{.status.virtualMachineStatus.state}"),
        "stopped"
    );
    let row = cc.kubectl_ok(&["get", "pod", "guest"]);
    assert!(row.contains(" 0/1 "), "{row}");
    cc.kubectl_ok(&[
        "patch",
        "pod",
        "guest",
        "-p",
        r#"{"spec":{"virtualMachine":{"powerSpec":"Running"}}}"#,
    ]);
    wait_for("the VM running again", Duration::from_secs(120), || {
        field("guest", "{.status.virtualMachineStatus.state}") == "active"
            && cc
                .kubectl_ok(&["logs", "guest"])
                .contains("atoll-vm: ready")
    });
    assert_eq!(
        field("guest", "{.status.virtualMachineStatus.restartCount}"),
        "1"
    );
    let previous = cc.kubectl_ok(&["logs", "guest", "--previous"]);
    assert!(
        previous.contains("reboot: Power down") && previous.contains("cpus=2"),
        "{previous}"
    );
    let current = cc.kubectl_ok(&["logs", "guest"]);
    assert_eq!(current.matches("atoll-vm: booted").count(), 1, "{current}");
    // -f follows the console as the guest writes it.
    let mut follow = std::process::Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(&kc)
        .args(["logs", "-f", "guest"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stdout = follow.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        use std::io::BufRead;
        std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .find(|l| l.contains("atoll-vm: dhcp lease"))
    });
    wait_for("kubectl logs -f shows the console", T, || {
        reader.is_finished()
    });
    let _ = follow.kill();
    let _ = follow.wait();
    assert!(reader.join().unwrap().is_some());

    // Reboot-like with the cloud down: the agent and the VM gone (`edge-agent reset`); the
    // restarted agent brings the VM back from the site's API alone; the cloud learns on return.
    cc.kill9();
    agent.kill9();
    let out = std::process::Command::new(tests::bin("edge-agent"))
        .args(["reset", "--root-dir"])
        .arg(agent.root())
        .args(["--pod-cidr", &agent.pod_cidr])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(vm_pids(&uid).is_empty(), "reset stops qemu");
    agent.restart();
    let at_edge =
        |path: &str| tests::jsonpath(&s1.kubeconfig(), s1.dir.path(), "pod", "guest", path);
    wait_for(
        "the VM back after the reboot, with no cloud",
        Duration::from_secs(120),
        || {
            at_edge(
                "{.status.virtualMachineStatus.state}/{.status.virtualMachineStatus.restartCount}",
            ) == "active/2"
                && s1
                    .kubectl_ok(&["logs", "guest"])
                    .contains("atoll-vm: ready")
        },
    );
    assert_eq!(vm_pids(&uid).len(), 1);
    cc.restart();
    wait_for("the cloud sees the VM's restart", T, || {
        field("guest", "{.status.virtualMachineStatus.restartCount}") == "2"
    });

    // Deletion asks the guest to power down (well within the grace period), then removes it.
    let t = std::time::Instant::now();
    cc.kubectl_ok(&["delete", "pod", "guest", "--wait=true", "--timeout=90s"]);
    let took = t.elapsed();
    assert!(
        took < Duration::from_secs(45),
        "deletion took {took:?}: no power-down?"
    );
    wait_for("qemu gone", T, || vm_pids(&uid).is_empty());
    assert!(
        !Path::new(&format!("/sys/fs/cgroup/memory/atoll/{uid}")).exists(),
        "the pod's cgroup is removed"
    );
    // (Its vCPU freed:) an image that is no VM image is refused with the reason, and a Failed event.
    let out = apply(&kc, &dir, &vm("not-a-vm", "busybox:v1"));
    assert!(out.status.success());
    wait_for("not-a-vm refused", Duration::from_secs(90), || {
        field(
            "not-a-vm",
            "{.status.containerStatuses[0].state.waiting.reason}",
        ) == "VMImageRefused"
    });
    assert!(field(
        "not-a-vm",
        "{.status.containerStatuses[0].state.waiting.message}"
    )
    .contains("not a VM image"),);
    assert_eq!(
        field("not-a-vm", "{.status.virtualMachineStatus.state}"),
        "error"
    );
    let events = cc.kubectl_ok(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.name=not-a-vm",
    ]);
    assert!(
        events.contains("Failed") && events.contains("VMImageRefused"),
        "{events}"
    );

    cc.kubectl_ok(&["delete", "pod", "not-a-vm", "--wait=true", "--timeout=60s"]);
}
