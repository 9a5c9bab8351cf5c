//! Container pods end to end: a pod created with kubectl at the cloud, bound to an edge node,
//! runs under runc from an image pulled from a real registry, with its config, volumes, limits,
//! init containers and shared network namespace; its real status reaches both tiers; restart
//! policies and back-off; pull errors; graceful deletion; agent restarts and a reboot-like
//! restart with the cloud unreachable.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use tests::registry::Registry;
use tests::{wait_for, Agent, CloudCore, EdgeCore, Relay};

const T: Duration = Duration::from_secs(60);

/// A region with one site, one agent and a registry holding `busybox:v1`.
struct Env {
    reg: Registry,
    cc: CloudCore,
    edge: EdgeCore,
    agent: Agent,
    _relay: Option<Relay>,
}

impl Env {
    fn start(via_relay: bool) -> Self {
        let reg = Registry::start();
        let scratch = tempfile::tempdir().expect("tempdir");
        reg.push(
            &tests::registry::busybox_image(scratch.path(), "v1"),
            "busybox:v1",
        );
        let cc = CloudCore::start();
        let token = cc.join_token("s1", "10m");
        let (edge, relay) = if via_relay {
            let relay = Relay::start(cc.sync_addr);
            (EdgeCore::join_via(&relay, "s1", &token), Some(relay))
        } else {
            (EdgeCore::join(&cc, "s1", &token), None)
        };
        let agent = Agent::start_with(&edge.kubeconfig(), "n1", &[reg.addr()]);
        wait_for("n1 Ready at the cloud", T, || {
            cc.kubectl_ok(&["get", "nodes"])
                .lines()
                .any(|l| l.starts_with("n1 ") && l.contains(" Ready "))
        });
        Env {
            reg,
            cc,
            edge,
            agent,
            _relay: relay,
        }
    }

    fn image(&self) -> String {
        format!("{}/busybox:v1", self.reg.addr())
    }

    fn apply(&self, yaml: &str) {
        let f = self.cc.dir.path().join(format!("m{}.yaml", rand_suffix()));
        std::fs::write(&f, yaml).unwrap();
        self.cc.kubectl_ok(&["create", "-f", f.to_str().unwrap()]);
    }
}

fn rand_suffix() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

fn jp(out: impl Fn(&[&str]) -> std::process::Output, pod: &str, path: &str) -> String {
    let o = out(&["get", "pod", pod, "-o", &format!("jsonpath={path}")]);
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn cloud_jp(e: &Env, pod: &str, path: &str) -> String {
    jp(|a| e.cc.kubectl(a), pod, path)
}

fn edge_jp(e: &Env, pod: &str, path: &str) -> String {
    jp(|a| e.edge.kubectl(a), pod, path)
}

/// The CRI log of a container's attempt, as its content lines.
fn log_lines(agent_root: &Path, pod: &str, container: &str, attempt: u32) -> Vec<String> {
    let logs = agent_root.join("logs");
    let dir: Option<PathBuf> = std::fs::read_dir(&logs).ok().and_then(|rd| {
        rd.filter_map(|e| e.ok()).map(|e| e.path()).find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.split('_').nth(2) == Some(pod))
        })
    });
    let Some(dir) = dir else { return Vec::new() };
    std::fs::read_to_string(dir.join(container).join(format!("{attempt}.log")))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.splitn(4, ' ').nth(3).map(String::from))
        .collect()
}

fn netns_exists(name: &str) -> bool {
    let out = Command::new("ip").args(["netns", "list"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .any(|l| l.split_whitespace().next() == Some(name))
}

fn runc_ids(agent: &Agent) -> Vec<String> {
    let out = Command::new("runc")
        .arg("--root")
        .arg(agent.root().join("runc"))
        .args(["list", "-q"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(String::from)
        .collect()
}

#[test]
fn pod_runs_with_its_config_volumes_limits_and_shared_network() {
    let e = Env::start(false);
    let img = e.image();
    e.apply(&format!(
        r#"
apiVersion: v1
kind: ConfigMap
metadata: {{name: cfg}}
data: {{greeting: hello-from-configmap}}
---
apiVersion: v1
kind: Secret
metadata: {{name: sec}}
stringData: {{password: hunter2}}
---
apiVersion: v1
kind: Pod
metadata: {{name: web}}
spec:
  nodeName: n1
  volumes:
  - {{name: cfg, configMap: {{name: cfg}}}}
  - {{name: sec, secret: {{secretName: sec}}}}
  - {{name: work, emptyDir: {{}}}}
  initContainers:
  - name: init1
    image: {img}
    command: [sh, -c, "echo first > /work/order"]
    volumeMounts: [{{name: work, mountPath: /work}}]
  - name: init2
    image: {img}
    command: [sh, -c, "echo second >> /work/order"]
    volumeMounts: [{{name: work, mountPath: /work}}]
  containers:
  - name: main
    image: {img}
    workingDir: /tmp
    command: [sh, -c]
    args:
    - |
      echo "env=$GREETING pod=$POD_NAME arg=$(GREETING)"
      echo "cfg=$(cat /cfg/greeting)"
      echo "sec=$(cat /sec/password)"
      echo "order=$(cat /work/order | tr '\n' ,)"
      echo "pwd=$(pwd)"
      echo "mem=$(cat /sys/fs/cgroup/memory/memory.limit_in_bytes)"
      echo "quota=$(cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us)"
      for i in $(seq 1 100); do wget -q -O- http://127.0.0.1:8080/ && break; sleep 0.1; done
      echo done
      exec sleep 3600
    env:
    - name: GREETING
      valueFrom: {{configMapKeyRef: {{name: cfg, key: greeting}}}}
    - name: POD_NAME
      valueFrom: {{fieldRef: {{fieldPath: metadata.name}}}}
    resources:
      limits: {{memory: 64Mi, cpu: 500m}}
    volumeMounts:
    - {{name: cfg, mountPath: /cfg}}
    - {{name: sec, mountPath: /sec}}
    - {{name: work, mountPath: /work}}
  - name: side
    image: {img}
    command: [sh, -c, "mkdir -p /www && echo side-ok > /www/index.html && exec httpd -f -p 8080 -h /www"]
  - name: tick
    image: {img}
    command: [sh, -c, "i=0; while true; do echo tick $i; i=$((i+1)); sleep 0.2; done"]
"#
    ));
    wait_for("web Running at the cloud", T, || {
        cloud_jp(&e, "web", "{.status.phase}") == "Running"
            && cloud_jp(&e, "web", "{.status.containerStatuses[*].ready}") == "true true true"
    });
    let ip = cloud_jp(&e, "web", "{.status.podIP}");
    assert!(
        ip.starts_with(&e.agent.pod_cidr[..e.agent.pod_cidr.len() - 7]),
        "pod IP {ip} not in {}",
        e.agent.pod_cidr
    );
    assert_eq!(cloud_jp(&e, "web", "{.status.hostIP}"), "127.0.0.1");
    assert_eq!(
        cloud_jp(
            &e,
            "web",
            "{.status.conditions[?(@.type==\"Initialized\")].status}"
        ),
        "True"
    );
    assert_eq!(
        cloud_jp(
            &e,
            "web",
            "{.status.initContainerStatuses[*].state.terminated.reason}"
        ),
        "Completed Completed"
    );
    assert!(
        cloud_jp(&e, "web", "{.status.containerStatuses[0].containerID}").starts_with("runc://")
    );
    assert!(!cloud_jp(
        &e,
        "web",
        "{.status.containerStatuses[0].state.running.startedAt}"
    )
    .is_empty());
    assert!(cloud_jp(&e, "web", "{.status.containerStatuses[0].imageID}").contains("sha256:"));
    // The edge shows the same.
    assert_eq!(edge_jp(&e, "web", "{.status.podIP}"), ip);

    // kubectl logs at the cloud: tunnelled over the site's sync connection to the agent.
    let mut lines = Vec::new();
    wait_for("main's output through kubectl logs at the cloud", T, || {
        lines = String::from_utf8_lossy(&e.cc.kubectl(&["logs", "web", "-c", "main"]).stdout)
            .lines()
            .map(String::from)
            .collect();
        lines.iter().any(|l| l == "done")
    });
    for want in [
        "env=hello-from-configmap pod=web arg=hello-from-configmap",
        "cfg=hello-from-configmap",
        "sec=hunter2",
        "order=first,second,",
        "pwd=/tmp",
        "mem=67108864",
        "quota=50000",
        "side-ok",
    ] {
        assert!(
            lines.iter().any(|l| l == want),
            "{want:?} not in {lines:?}\nagent log:\n{}",
            e.agent.log()
        );
    }
    // The same through the edge's API, and --tail.
    assert_eq!(
        e.edge
            .kubectl_ok(&["logs", "web", "-c", "main", "--tail=1"])
            .trim(),
        "done"
    );
    assert_eq!(
        e.cc.kubectl_ok(&["logs", "web", "-c", "main", "--tail=2"])
            .lines()
            .count(),
        2
    );
    // Several containers and none named: kube's message.
    // (kubectl itself defaults to the first container, so ask the API directly.)
    let out =
        e.cc.kubectl(&["get", "--raw", "/api/v1/namespaces/default/pods/web/log"]);
    assert!(!out.status.success());
    let msg = String::from_utf8_lossy(&out.stderr);
    assert!(msg.contains("a container name must be specified"), "{msg}");
    // -f streams lines as they are written.
    let mut f = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(e.cc.kubeconfig())
        .args(["logs", "-f", "web", "-c", "tick", "--tail=1"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stdout = f.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        use std::io::BufRead;
        let mut seen = Vec::new();
        for l in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            seen.push(l);
            if seen.len() == 5 {
                break;
            }
        }
        seen
    });
    let deadline = Instant::now() + T;
    while !reader.is_finished() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = f.kill();
    let _ = f.wait();
    let seen = reader.join().unwrap();
    assert_eq!(seen.len(), 5, "kubectl logs -f gave {seen:?}");
    let n: Vec<u64> = seen
        .iter()
        .filter_map(|l| l.strip_prefix("tick ")?.parse().ok())
        .collect();
    assert!(n.windows(2).all(|w| w[1] == w[0] + 1), "{seen:?}");
}

#[test]
fn restart_policies_back_off_and_terminal_phases() {
    let e = Env::start(false);
    let img = e.image();
    let pod = |name: &str, policy: &str, script: &str| {
        format!("apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  nodeName: n1\n  restartPolicy: {policy}\n  containers:\n  - name: c\n    image: {img}\n    command: [sh, -c, \"{script}\"]\n---\n")
    };
    e.apply(&format!(
        "{}{}{}{}",
        pod("crash", "Always", "echo try; exit 3"),
        pod("ok-never", "Never", "exit 0"),
        pod("fail-never", "Never", "exit 1"),
        pod(
            "onfailure",
            "OnFailure",
            "if [ -e /tmp/x ]; then exit 0; fi; exit 0"
        ),
    ));
    wait_for("ok-never Succeeded", T, || {
        cloud_jp(&e, "ok-never", "{.status.phase}") == "Succeeded"
    });
    wait_for("fail-never Failed with exit code 1", T, || {
        cloud_jp(&e, "fail-never", "{.status.phase}") == "Failed"
            && cloud_jp(
                &e,
                "fail-never",
                "{.status.containerStatuses[0].state.terminated.exitCode}",
            ) == "1"
    });
    assert_eq!(
        cloud_jp(
            &e,
            "fail-never",
            "{.status.containerStatuses[0].state.terminated.reason}"
        ),
        "Error"
    );
    assert_eq!(
        cloud_jp(
            &e,
            "fail-never",
            "{.status.containerStatuses[0].restartCount}"
        ),
        "0"
    );
    wait_for("onfailure Succeeded", T, || {
        cloud_jp(&e, "onfailure", "{.status.phase}") == "Succeeded"
    });
    // Always: restarts with growing back-off, shown as CrashLoopBackOff.
    let mut saw_backoff = false;
    wait_for("crash restarted twice, in CrashLoopBackOff", T, || {
        let reason = cloud_jp(
            &e,
            "crash",
            "{.status.containerStatuses[0].state.waiting.reason}",
        );
        saw_backoff |= reason == "CrashLoopBackOff";
        let n: u32 = cloud_jp(&e, "crash", "{.status.containerStatuses[0].restartCount}")
            .parse()
            .unwrap_or(0);
        saw_backoff && n >= 2
    });
    assert_eq!(
        cloud_jp(
            &e,
            "crash",
            "{.status.containerStatuses[0].lastState.terminated.exitCode}"
        ),
        "3"
    );
    assert_eq!(cloud_jp(&e, "crash", "{.status.phase}"), "Running");
    // Each attempt has its own log; --previous reads the one before the current.
    assert_eq!(log_lines(&e.agent.root(), "crash", "c", 1), ["try"]);
    assert_eq!(
        e.cc.kubectl_ok(&["logs", "crash", "--previous"]).trim(),
        "try"
    );
}

#[test]
fn pull_errors_show_in_the_status() {
    let e = Env::start(false);
    let missing = format!("{}/busybox:nope", e.reg.addr());
    e.apply(&format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: bad}}\nspec:\n  nodeName: n1\n  containers:\n  - name: c\n    image: {missing}\n---\napiVersion: v1\nkind: Pod\nmetadata: {{name: never}}\nspec:\n  nodeName: n1\n  containers:\n  - name: c\n    image: example.invalid/none:v1\n    imagePullPolicy: Never\n"
    ));
    let mut seen = Vec::new();
    wait_for("ErrImagePull then ImagePullBackOff", T, || {
        let r = cloud_jp(
            &e,
            "bad",
            "{.status.containerStatuses[0].state.waiting.reason}",
        );
        if !r.is_empty() && !seen.contains(&r) {
            seen.push(r);
        }
        seen.iter().any(|r| r == "ErrImagePull") && seen.iter().any(|r| r == "ImagePullBackOff")
    });
    wait_for("the pull error's reason", T, || {
        let m = cloud_jp(
            &e,
            "bad",
            "{.status.containerStatuses[0].state.waiting.message}",
        );
        m.contains("nope") || m.contains("manifest unknown") || m.contains("not found")
    });
    wait_for("ErrImageNeverPull", T, || {
        cloud_jp(
            &e,
            "never",
            "{.status.containerStatuses[0].state.waiting.reason}",
        ) == "ErrImageNeverPull"
    });
    assert_eq!(cloud_jp(&e, "bad", "{.status.phase}"), "Pending");
}

#[test]
fn deletion_stops_gracefully_then_removes_the_pod_everywhere() {
    let e = Env::start(false);
    let img = e.image();
    e.apply(&format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: polite}}
spec:
  nodeName: n1
  terminationGracePeriodSeconds: 30
  containers:
  - name: c
    image: {img}
    command: [sh, -c, "trap 'echo got TERM; exit 0' TERM; echo up; while true; do sleep 0.1; done"]
---
apiVersion: v1
kind: Pod
metadata: {{name: stubborn}}
spec:
  nodeName: n1
  terminationGracePeriodSeconds: 2
  containers:
  - name: c
    image: {img}
    command: [sh, -c, "trap '' TERM; echo up; while true; do sleep 0.1; done"]
"#
    ));
    for p in ["polite", "stubborn"] {
        wait_for(&format!("{p} Running"), T, || {
            cloud_jp(&e, p, "{.status.phase}") == "Running"
                && log_lines(&e.agent.root(), p, "c", 0).contains(&"up".to_string())
        });
    }
    let uid = cloud_jp(&e, "polite", "{.metadata.uid}");
    let netns = format!("atl-{}", &uid.replace('-', "")[..12]);
    assert!(netns_exists(&netns));
    // Read the log before it goes with the pod.
    let root = e.agent.root();
    let watch_log = std::thread::spawn(move || {
        let deadline = Instant::now() + T;
        while Instant::now() < deadline {
            let l = log_lines(&root, "polite", "c", 0);
            if l.iter().any(|l| l == "got TERM") {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    });
    let t0 = Instant::now();
    e.cc.kubectl_ok(&["delete", "pod", "polite", "--wait=false"]);
    wait_for("polite gone at the cloud", T, || {
        !e.cc.kubectl(&["get", "pod", "polite"]).status.success()
    });
    assert!(watch_log.join().unwrap(), "the container never saw SIGTERM");
    assert!(!e.edge.kubectl(&["get", "pod", "polite"]).status.success());
    assert!(
        t0.elapsed() < Duration::from_secs(20),
        "a container that exits on SIGTERM must not wait out the grace period"
    );
    assert!(!netns_exists(&netns));

    let t0 = Instant::now();
    e.cc.kubectl_ok(&["delete", "pod", "stubborn", "--wait=false"]);
    wait_for("stubborn gone at the cloud", T, || {
        !e.cc.kubectl(&["get", "pod", "stubborn"]).status.success()
    });
    assert!(
        t0.elapsed() >= Duration::from_secs(2),
        "SIGKILL before the grace period ended"
    );
    wait_for("no containers left", T, || runc_ids(&e.agent).is_empty());
}

#[test]
fn agent_restart_readopts_and_offline_restarts_reach_the_cloud() {
    let mut e = Env::start(true);
    let img = e.image();
    e.apply(&format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: long}}\nspec:\n  nodeName: n1\n  containers:\n  - name: c\n    image: {img}\n    command: [sleep, '3600']\n"
    ));
    wait_for("long Running", T, || {
        cloud_jp(&e, "long", "{.status.phase}") == "Running"
    });
    let started = cloud_jp(
        &e,
        "long",
        "{.status.containerStatuses[0].state.running.startedAt}",
    );
    let uid = cloud_jp(&e, "long", "{.metadata.uid}");
    let id = format!("{}-c", &uid.replace('-', "")[..12]);

    // The agent dies and comes back: the container is adopted, not restarted.
    e.agent.restart();
    wait_for("the restarted agent to adopt the container", T, || {
        e.agent.log().contains("adopted running container")
    });
    wait_for("long still Running with the same start", T, || {
        edge_jp(
            &e,
            "long",
            "{.status.containerStatuses[0].state.running.startedAt}",
        ) == started
    });
    assert_eq!(
        cloud_jp(&e, "long", "{.status.containerStatuses[0].restartCount}"),
        "0"
    );
    assert_eq!(runc_ids(&e.agent), std::slice::from_ref(&id));

    // edge-core restarts: the agent's watch breaks and resumes; nothing restarts.
    e.edge.restart();
    wait_for("edge-core serving again", T, || {
        e.edge.kubectl(&["get", "pod", "long"]).status.success()
    });
    assert_eq!(
        edge_jp(
            &e,
            "long",
            "{.status.containerStatuses[0].state.running.startedAt}"
        ),
        started
    );
    assert_eq!(
        edge_jp(&e, "long", "{.status.containerStatuses[0].restartCount}"),
        "0"
    );

    // Cloud unreachable; the container crashes; the agent restarts it; the count reaches the
    // cloud after the link returns.
    e._relay.as_ref().unwrap().cut();
    let started_json: serde_json::Value = serde_json::from_slice(
        &std::fs::read(
            e.agent
                .root()
                .join("containers")
                .join(&id)
                .join("started.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let pid = started_json["pid"].as_u64().unwrap();
    assert!(Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap()
        .success());
    wait_for("restarted at the edge while offline", T, || {
        edge_jp(&e, "long", "{.status.containerStatuses[0].restartCount}") == "1"
            && !edge_jp(
                &e,
                "long",
                "{.status.containerStatuses[0].state.running.startedAt}",
            )
            .is_empty()
    });
    assert_eq!(
        cloud_jp(&e, "long", "{.status.containerStatuses[0].restartCount}"),
        "0"
    );
    e._relay.as_ref().unwrap().heal();
    wait_for("the restart count at the cloud", T, || {
        cloud_jp(&e, "long", "{.status.containerStatuses[0].restartCount}") == "1"
    });

    // Reboot-like: agent and every container, mount and network gone; cloud unreachable.
    e._relay.as_ref().unwrap().cut();
    e.agent.kill9();
    let out = Command::new(tests::bin("edge-agent"))
        .args(["reset", "--root-dir"])
        .arg(e.agent.root())
        .args(["--pod-cidr", &e.agent.pod_cidr])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(runc_ids(&e.agent).is_empty());
    e.agent.restart();
    wait_for(
        "long running again after the reboot, with no cloud",
        T,
        || {
            runc_ids(&e.agent) == [id.clone()]
                && edge_jp(&e, "long", "{.status.containerStatuses[0].ready}") == "true"
        },
    );
    // The cloud sees the site disconnected, and evicts nothing: the pod is still there, bound
    // to its node, as last reported.
    wait_for("s1 disconnected at the cloud", T, || {
        tests::site_connected(&e.cc, "s1") == "False"
    });
    assert_eq!(cloud_jp(&e, "long", "{.spec.nodeName}"), "n1");
    assert_eq!(cloud_jp(&e, "long", "{.status.phase}"), "Running");
    assert!(cloud_jp(&e, "long", "{.metadata.deletionTimestamp}").is_empty());
}

#[test]
fn tenants_get_separate_networks() {
    let e = Env::start(false);
    let img = e.image();
    e.apply("apiVersion: v1\nkind: Tenant\nmetadata: {name: acme}\n---\napiVersion: v1\nkind: Tenant\nmetadata: {name: beta}\n");
    let scratch = e.cc.dir.path().to_path_buf();
    let (acme, beta) = (
        e.cc.tenant_kubeconfig("acme"),
        e.cc.tenant_kubeconfig("beta"),
    );
    let as_t = |kc: &Path, args: &[&str]| tests::kubectl(kc, &scratch.join("kc"), args, None);
    let create = |kc: &Path, name: &str, policy: &str, script: &str| {
        let f = scratch.join(format!("{name}.yaml"));
        std::fs::write(
            &f,
            format!("apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  nodeName: n1\n  restartPolicy: {policy}\n  containers:\n  - name: c\n    image: {img}\n    command: [sh, -c, \"{script}\"]\n"),
        )
        .unwrap();
        tests::ok(as_t(kc, &["create", "-f", f.to_str().unwrap()]), &[]);
    };
    let serve = |who: &str| {
        format!("mkdir -p /www && echo {who}-ok > /www/index.html && exec httpd -f -p 8080 -h /www")
    };
    create(&acme, "a1", "Always", &serve("a1"));
    create(&beta, "b1", "Always", &serve("b1"));
    let ip = |kc: &Path, pod: &str| {
        let mut ip = String::new();
        wait_for(&format!("{pod} Running with an IP"), T, || {
            let phase = jp(|a| as_t(kc, a), pod, "{.status.phase}");
            ip = jp(|a| as_t(kc, a), pod, "{.status.podIP}");
            phase == "Running" && !ip.is_empty()
        });
        ip
    };
    let (a1, b1) = (ip(&acme, "a1"), ip(&beta, "b1"));
    assert_ne!(
        a1.rsplit_once('.').unwrap().0,
        b1.rsplit_once('.').unwrap().0,
        "tenants share a subnet"
    );
    let probe = |target: &str, tag: &str| {
        format!("for i in $(seq 1 50); do timeout 1 wget -q -O- http://{target}:8080/ && echo reached-{tag} && exit 0; sleep 0.1; done; echo blocked-{tag}")
    };
    create(&acme, "a2", "Never", &probe(&a1, "a1"));
    create(
        &acme,
        "a3",
        "Never",
        &format!("timeout 3 wget -q -O- http://{b1}:8080/ && echo reached-b1 || echo blocked-b1"),
    );
    for p in ["a2", "a3"] {
        wait_for(&format!("{p} Succeeded"), T, || {
            jp(|a| as_t(&acme, a), p, "{.status.phase}") == "Succeeded"
        });
    }
    let root = e.agent.root();
    let a2 = log_lines(&root, "a2", "c", 0);
    assert!(
        a2.contains(&"a1-ok".to_string()) && a2.contains(&"reached-a1".to_string()),
        "same tenant: {a2:?}"
    );
    let a3 = log_lines(&root, "a3", "c", 0);
    assert!(
        a3.contains(&"blocked-b1".to_string()) && !a3.contains(&"reached-b1".to_string()),
        "other tenant: {a3:?}"
    );
    assert!(!a3.iter().any(|l| l == "b1-ok"));
}

#[test]
fn workloads_run_on_a_real_edge_agent() {
    let e = Env::start(false);
    let img = e.image();
    // A Deployment placed by the cloud scheduler and bound by the site's, and a DaemonSet
    // scoped to the site: their pods run under runc on the edge node.
    e.apply(&format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata: {{name: web}}
spec:
  replicas: 2
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec:
      containers:
      - name: c
        image: {img}
        command: [sh, -c, "echo up; while true; do sleep 1; done"]
---
apiVersion: apps/v1
kind: DaemonSet
metadata: {{name: probe}}
spec:
  selector: {{matchLabels: {{app: probe}}}}
  template:
    metadata: {{labels: {{app: probe}}}}
    spec:
      nodeSelector: {{atoll.io/site: s1}}
      containers:
      - name: c
        image: {img}
        command: [sh, -c, "echo up; while true; do sleep 1; done"]
"#
    ));
    e.cc.kubectl_ok(&["rollout", "status", "deploy/web", "--timeout=60s"]);
    e.cc.kubectl_ok(&["rollout", "status", "ds/probe", "--timeout=60s"]);
    let running = |sel: &str| {
        let o = e.cc.kubectl_ok(&[
            "get",
            "pods",
            "-l",
            sel,
            "-o",
            "jsonpath={range .items[*]}{.spec.nodeName} {.status.phase}{\"\\n\"}{end}",
        ]);
        o.lines().filter(|l| *l == "n1 Running").count()
    };
    assert_eq!(running("app=web"), 2);
    assert_eq!(running("app=probe"), 1);
    // The deployment's pods went through the site: placed by the cloud, bound by the site.
    let placed = e.cc.kubectl_ok(&[
        "get",
        "pods",
        "-l",
        "app=web",
        "-o",
        "jsonpath={.items[*].metadata.annotations.atoll\\.io/site}",
    ]);
    assert_eq!(placed, "s1 s1");
    assert_eq!(runc_ids(&e.agent).len(), 3);
    let ds = e.cc.kubectl_ok(&["get", "ds", "probe", "--no-headers"]);
    let cols: Vec<&str> = ds.split_whitespace().collect();
    assert_eq!(cols[1..6], ["1", "1", "1", "1", "1"], "{ds}");

    // Deleting them stops every container on the node.
    e.cc.kubectl_ok(&["delete", "deploy/web", "ds/probe"]);
    wait_for("no containers left", T, || runc_ids(&e.agent).is_empty());
    wait_for("no pods left at the cloud", T, || {
        e.cc.kubectl_ok(&["get", "pods", "-o", "name"])
            .trim()
            .is_empty()
    });
}

/// `kubectl drain` at the cloud evicts a real edge node's pods through `pods/eviction`; the
/// cordon reaches the site, the agent stops the containers, and the Deployment's pods come
/// back on the other node of the site, Running.
#[test]
fn drain_at_the_cloud_moves_pods_to_another_edge_node() {
    let e = Env::start(false);
    let n2 = Agent::start_with(&e.edge.kubeconfig(), "n2", &[e.reg.addr()]);
    wait_for("n2 Ready at the cloud", T, || {
        e.cc.kubectl_ok(&["get", "nodes"])
            .lines()
            .any(|l| l.starts_with("n2 ") && l.contains(" Ready "))
    });
    let img = e.image();
    e.apply(&format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata: {{name: web}}
spec:
  replicas: 2
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec:
      terminationGracePeriodSeconds: 2
      containers:
      - name: c
        image: {img}
        command: [sh, -c, "while true; do sleep 1; done"]
"#
    ));
    e.cc.kubectl_ok(&["rollout", "status", "deploy/web", "--timeout=90s"]);
    let placement = || {
        e.cc.kubectl_ok(&[
            "get",
            "pods",
            "-l",
            "app=web",
            "-o",
            "jsonpath={range .items[*]}{.spec.nodeName} {.status.phase} {.metadata.deletionTimestamp}{\"\\n\"}{end}",
        ])
    };
    let first = placement();
    let drained = if first.contains("n1 ") { "n1" } else { "n2" };
    let other = if drained == "n1" { "n2" } else { "n1" };
    let (drained_agent, other_agent) = if drained == "n1" {
        (&e.agent, &n2)
    } else {
        (&n2, &e.agent)
    };
    assert!(!runc_ids(drained_agent).is_empty(), "{first}");
    let out = e.cc.kubectl_ok(&[
        "drain",
        drained,
        "--ignore-daemonsets",
        "--delete-emptydir-data",
        "--timeout=120s",
    ]);
    assert!(
        out.contains("evicting pod") && out.contains("drained"),
        "{out}"
    );
    // Cordoned at both tiers; nothing runs on it any more.
    let unschedulable = |kc: &dyn Fn(&[&str]) -> String| {
        kc(&[
            "get",
            "node",
            drained,
            "-o",
            "jsonpath={.spec.unschedulable}",
        ])
    };
    assert_eq!(unschedulable(&|a: &[&str]| e.cc.kubectl_ok(a)), "true");
    wait_for("the cordon at the edge", T, || {
        unschedulable(&|a: &[&str]| e.edge.kubectl_ok(a)) == "true"
    });
    wait_for("no containers left on the drained node", T, || {
        runc_ids(drained_agent).is_empty()
    });
    // The ReplicaSet made new pods; the site bound them to the other node.
    wait_for(
        "both replicas Running on the other node",
        Duration::from_secs(90),
        || {
            let p = placement();
            p.lines()
                .filter(|l| l.trim() == format!("{other} Running"))
                .count()
                == 2
                && p.lines().count() == 2
        },
    );
    assert_eq!(runc_ids(other_agent).len(), 2);
    e.cc.kubectl_ok(&["uncordon", drained]);
    wait_for("the uncordon at the edge", T, || {
        unschedulable(&|a: &[&str]| e.edge.kubectl_ok(a)).is_empty()
    });
    e.cc.kubectl_ok(&["delete", "deploy/web"]);
    wait_for("no containers left", T, || {
        runc_ids(&e.agent).is_empty() && runc_ids(&n2).is_empty()
    });
}
