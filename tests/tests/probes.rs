//! Probes under a real agent (runc, CNI): readiness (httpGet, tcpSocket) drives `ready`, the
//! Ready condition and the READY column at both tiers, and keeps doing so with the cloud down;
//! a startup probe holds `started` and the other probes; a liveness failure restarts the
//! container with kubelet's `Unhealthy` and `Killing` events.

use std::time::Duration;

use tests::registry::Registry;
use tests::{wait_for, Agent, CloudCore, EdgeCore};

const T: Duration = Duration::from_secs(90);

fn jp(out: std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn probes_drive_readiness_startup_and_restarts() {
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
        r#"apiVersion: v1
kind: Pod
metadata: {{name: probed}}
spec:
  nodeName: n1
  terminationGracePeriodSeconds: 1
  containers:
  - name: web
    image: {img}
    command: [sh, -c, "mkdir -p /www && echo ok > /www/index.html && exec httpd -f -p 8080 -h /www"]
    ports: [{{name: http, containerPort: 8080}}]
    readinessProbe:
      httpGet: {{path: /index.html, port: http}}
      periodSeconds: 1
      failureThreshold: 1
  - name: live
    image: {img}
    command: [sh, -c, "touch /tmp/healthy && exec sleep 3600"]
    livenessProbe:
      exec: {{command: [cat, /tmp/healthy]}}
      periodSeconds: 1
      failureThreshold: 2
  - name: slow
    image: {img}
    command: [sleep, "3600"]
    startupProbe:
      exec: {{command: [test, -f, /tmp/started]}}
      periodSeconds: 1
      failureThreshold: 600
    readinessProbe:
      tcpSocket: {{port: 8080}}
      periodSeconds: 1
"#
    );
    let f = scratch.path().join("pod.yaml");
    std::fs::write(&f, yaml).unwrap();
    cc.kubectl_ok(&["create", "-f", f.to_str().unwrap()]);
    let ready = |at: &dyn Fn(&[&str]) -> std::process::Output, c: &str| {
        jp(at(&[
            "get",
            "pod",
            "probed",
            "-o",
            &format!("jsonpath={{.status.containerStatuses[?(@.name==\"{c}\")].ready}}/{{.status.containerStatuses[?(@.name==\"{c}\")].started}}"),
        ]))
    };
    let cloud = |a: &[&str]| cc.kubectl(a);
    let at_edge = |a: &[&str]| edge.kubectl(a);
    let column = |at: &dyn Fn(&[&str]) -> std::process::Output| {
        jp(at(&["get", "pod", "probed", "--no-headers"]))
            .split_whitespace()
            .nth(1)
            .unwrap_or("")
            .to_string()
    };
    let condition = |at: &dyn Fn(&[&str]) -> std::process::Output| {
        jp(at(&[
            "get",
            "pod",
            "probed",
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
        ]))
    };
    // web and live are ready; slow has not started, so its readiness probe does not run.
    wait_for("web and live ready, slow not started", T, || {
        ready(&cloud, "web") == "true/true"
            && ready(&cloud, "live") == "true/true"
            && ready(&cloud, "slow") == "false/false"
    });
    assert_eq!(column(&cloud), "2/3");
    assert_eq!(condition(&cloud), "False");
    // The startup probe passes: slow starts, its readiness probe runs and passes.
    cc.kubectl_ok(&[
        "exec",
        "probed",
        "-c",
        "slow",
        "--",
        "touch",
        "/tmp/started",
    ]);
    wait_for("slow started and ready", T, || {
        ready(&cloud, "slow") == "true/true"
    });
    wait_for("READY 3/3 and Ready at the cloud", T, || {
        column(&cloud) == "3/3" && condition(&cloud) == "True"
    });

    // With the cloud down, readiness still follows the probe at the edge.
    cc.kill9();
    edge.kubectl_ok(&["exec", "probed", "-c", "web", "--", "rm", "/www/index.html"]);
    wait_for("web unready at the edge", T, || {
        ready(&at_edge, "web") == "false/true" && column(&at_edge) == "2/3"
    });
    assert_eq!(condition(&at_edge), "False");
    edge.kubectl_ok(&[
        "exec",
        "probed",
        "-c",
        "web",
        "--",
        "sh",
        "-c",
        "echo ok > /www/index.html",
    ]);
    wait_for("web ready again at the edge", T, || {
        ready(&at_edge, "web") == "true/true" && condition(&at_edge) == "True"
    });
    cc.restart();
    wait_for("s1 connected again", T, || {
        tests::site_connected(&cc, "s1") == "True"
    });
    wait_for("the cloud sees it ready", T, || {
        let cloud = |a: &[&str]| cc.kubectl(a);
        column(&cloud) == "3/3"
    });

    // (The EdgeSite's status may still say connected from before the restart: wait for the
    // site's connection itself, which exec through the cloud needs.)
    wait_for("exec through the cloud again", T, || {
        cc.kubectl(&["exec", "probed", "-c", "live", "--", "true"])
            .status
            .success()
    });

    // A liveness failure restarts the container, with kubelet's events.
    cc.kubectl_ok(&["exec", "probed", "-c", "live", "--", "rm", "/tmp/healthy"]);
    let restarts = || {
        jp(cc.kubectl(&[
            "get",
            "pod",
            "probed",
            "-o",
            "jsonpath={.status.containerStatuses[?(@.name==\"live\")].restartCount}",
        ]))
    };
    wait_for("live restarted", T, || restarts() == "1");
    wait_for("the restarted container live again", T, || {
        let cloud = |a: &[&str]| cc.kubectl(a);
        ready(&cloud, "live") == "true/true"
    });
    let events = cc.kubectl_ok(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.name=probed",
        "-o",
        "custom-columns=R:.reason,M:.message",
        "--no-headers",
    ]);
    assert!(
        events.contains("Liveness probe failed: cat: can't open '/tmp/healthy'"),
        "{events}"
    );
    assert!(
        events.contains("Container live failed liveness probe, will be restarted"),
        "{events}"
    );
    assert_eq!(restarts(), "1", "restarted once only");
}
