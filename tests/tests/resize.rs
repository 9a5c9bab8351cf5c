//! In-place resize of container pods end to end: `kubectl patch --subresource resize` at the
//! cloud changes a running container's cgroup limits without a restart (or restarts it where
//! its resizePolicy says so), the actual resources reach both tiers in
//! `containerStatuses[].resources`, a resize beyond the node stays pending as Infeasible, and
//! wrong resizes are refused with the field that was wrong.

use std::time::Duration;

use tests::registry::Registry;
use tests::{wait_for, Agent, CloudCore, EdgeCore};

const T: Duration = Duration::from_secs(60);

fn resources(cpu: &str, mem: &str) -> String {
    format!(
        r#"{{"requests":{{"cpu":"{cpu}","memory":"{mem}"}},"limits":{{"cpu":"{cpu}","memory":"{mem}"}}}}"#
    )
}

fn resize_patch(container: &str, res: &str) -> String {
    format!(r#"{{"spec":{{"containers":[{{"name":"{container}","resources":{res}}}]}}}}"#)
}

#[test]
fn containers_resize_in_place_through_the_resize_subresource() {
    let reg = Registry::start();
    let scratch = tempfile::tempdir().expect("tempdir");
    reg.push(
        &tests::registry::busybox_image(scratch.path(), "v1"),
        "busybox:v1",
    );
    let cc = CloudCore::start();
    let edge = EdgeCore::join(&cc, "s1", &cc.join_token("s1", "10m"));
    let agent = Agent::start_with(&edge.kubeconfig(), "n1", &[reg.addr()]);
    wait_for("n1 Ready at the cloud", T, || {
        cc.kubectl_ok(&["get", "nodes"])
            .lines()
            .any(|l| l.starts_with("n1 ") && l.contains(" Ready "))
    });
    let img = format!("{}/busybox:v1", reg.addr());
    let manifest = format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: web}}
spec:
  nodeName: n1
  containers:
  - name: main
    image: {img}
    command: [sh, -c]
    args:
    - |
      last=""
      while true; do
        now="mem=$(cat /sys/fs/cgroup/memory/memory.limit_in_bytes) quota=$(cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us)"
        [ "$now" != "$last" ] && echo "$now" && last="$now"
        sleep 0.2
      done
    resources: {{requests: {{cpu: 500m, memory: 64Mi}}, limits: {{cpu: 500m, memory: 64Mi}}}}
  - name: side
    image: {img}
    command: [sleep, "3600"]
    resizePolicy: [{{resourceName: memory, restartPolicy: RestartContainer}}]
    resources: {{requests: {{cpu: 100m, memory: 32Mi}}, limits: {{cpu: 100m, memory: 32Mi}}}}
"#
    );
    let f = cc.dir.path().join("web.yaml");
    std::fs::write(&f, manifest).unwrap();
    cc.kubectl_ok(&["create", "-f", f.to_str().unwrap()]);
    let field = |path: &str| cc.jsonpath("pod", "web", path);
    let of =
        |c: &str, rest: &str| format!("{{.status.containerStatuses[?(@.name==\"{c}\")]{rest}}}");
    wait_for("web Running with both containers ready", T, || {
        field("{.status.phase}") == "Running"
            && field("{.status.containerStatuses[*].ready}") == "true true"
    });
    assert_eq!(field(&of("main", ".resources.limits.memory")), "64Mi");
    let logs = || cc.kubectl_ok(&["logs", "web", "-c", "main"]);
    wait_for("main reports its cgroup limits", T, || {
        logs().contains("mem=67108864 quota=50000")
    });
    let started = field(&of("main", ".state.running.startedAt"));
    let resize = |patch: &str| {
        cc.kubectl_ok(&[
            "patch",
            "pod",
            "web",
            "--subresource",
            "resize",
            "-p",
            patch,
        ]);
    };

    // A resize with the default policy changes the limits of the running container.
    resize(&resize_patch("main", &resources("700m", "96Mi")));
    wait_for("main resized in place", T, || {
        logs().contains("mem=100663296 quota=70000")
            && field(&of("main", ".resources.limits.memory")) == "96Mi"
    });
    assert_eq!(field(&of("main", ".restartCount")), "0");
    assert_eq!(field(&of("main", ".state.running.startedAt")), started);
    assert_eq!(field(&of("main", ".allocatedResources.cpu")), "700m");
    assert_eq!(field("{.spec.containers[0].resources.limits.cpu}"), "700m");
    assert_eq!(
        field("{.metadata.generation}"),
        "2",
        "a resize is a spec change"
    );
    wait_for("the edge shows the new resources", T, || {
        tests::jsonpath(
            &edge.kubeconfig(),
            edge.dir.path(),
            "pod",
            "web",
            &of("main", ".resources.limits.memory"),
        ) == "96Mi"
    });

    // A container whose policy says memory needs a restart is restarted with the new limit.
    resize(&resize_patch("side", &resources("100m", "48Mi")));
    wait_for("side restarted with its new memory", T, || {
        field(&of("side", ".restartCount")) == "1"
            && field(&of("side", ".resources.limits.memory")) == "48Mi"
            && field(&of("side", ".ready")) == "true"
    });
    assert_eq!(field(&of("main", ".restartCount")), "0");

    // More than the node has: accepted by the API, pending at the node as Infeasible.
    resize(&resize_patch("main", &resources("1000", "96Mi")));
    let pending = "{.status.conditions[?(@.type==\"PodResizePending\")].reason}";
    wait_for("the resize pending as Infeasible", T, || {
        field(pending) == "Infeasible"
    });
    assert!(
        field("{.status.conditions[?(@.type==\"PodResizePending\")].message}").contains("cpu"),
        "{}",
        agent.log()
    );
    assert_eq!(field(&of("main", ".resources.limits.cpu")), "700m");
    resize(&resize_patch("main", &resources("700m", "96Mi")));
    wait_for("the pending resize withdrawn", T, || {
        field(pending).is_empty()
    });

    // Wrong resizes: refused with the field that was wrong; nothing changes.
    let refused = |patch: &str, ty: &str, want: &str| {
        let out = cc.kubectl(&[
            "patch",
            "pod",
            "web",
            "--subresource",
            "resize",
            "--type",
            ty,
            "-p",
            patch,
        ]);
        let msg = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(
            !out.status.success() && msg.contains(want),
            "{patch}: {msg}"
        );
    };
    refused(
        r#"[{"op":"remove","path":"/spec/containers/0/resources/limits/cpu"}]"#,
        "json",
        "spec.containers[0].resources.limits[cpu]: Forbidden: resource limits cannot be removed",
    );
    refused(
        &resize_patch("main", r#"{"limits":{"memory":"128Mi"}}"#),
        "strategic",
        "Pod QOS Class may not change as a result of resizing",
    );
    refused(
        &resize_patch(
            "main",
            r#"{"limits":{"ephemeral-storage":"1Gi"},"requests":{"ephemeral-storage":"1Gi"}}"#,
        ),
        "strategic",
        "only cpu and memory resources are mutable",
    );
    refused(
        &resize_patch("main", r#"{"limits":{"cpu":"500m"}}"#),
        "strategic",
        "must be less than or equal to cpu limit",
    );
    // Resources change only through the subresource.
    let out = cc.kubectl(&[
        "patch",
        "pod",
        "web",
        "-p",
        &resize_patch("main", &resources("800m", "96Mi")),
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("pod updates may not change fields"));
    // Anything but resources in a resize is dropped.
    cc.kubectl_ok(&[
        "patch",
        "pod",
        "web",
        "--subresource",
        "resize",
        "-p",
        r#"{"metadata":{"labels":{"x":"y"}},"spec":{"containers":[{"name":"main","image":"other"}]}}"#,
    ]);
    assert_eq!(field("{.spec.containers[0].image}"), img);
    assert_eq!(field("{.metadata.labels.x}"), "");
    assert_eq!(field(&of("main", ".resources.limits.cpu")), "700m");
    assert_eq!(field(&of("main", ".restartCount")), "0");
}
