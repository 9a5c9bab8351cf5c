//! `kubectl exec`, `attach` and `cp` with stock kubectl (WebSocket, `v5.channel.k8s.io`) into
//! containers running under runc: at the edge's API, and at the cloud's through the site's
//! sync connection; with the cloud down at the edge; errors as kube-apiserver gives them; a
//! client that vanishes leaves no process behind.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use tests::streams_env::{text, wait_output, Env, Tier};
use tests::wait_for;

const T: Duration = Duration::from_secs(60);

fn exec_ok(e: &Env, tier: Tier, args: &[&str], stdin: Option<&[u8]>) -> String {
    let o = e.kubectl(tier, args, stdin);
    assert!(
        o.status.success(),
        "kubectl {args:?} at {tier:?} failed ({}):\nstdout: {}\nstderr: {}",
        o.status,
        text(&o.stdout),
        text(&o.stderr)
    );
    text(&o.stdout)
}

/// The host's processes whose command line is exactly `argv` (container processes included).
fn processes_with(argv: &[&str]) -> usize {
    let want: Vec<u8> = argv.iter().flat_map(|a| a.bytes().chain([0])).collect();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|d| {
            d.file_name()
                .to_str()
                .is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()))
        })
        .filter(|d| std::fs::read(d.path().join("cmdline")).is_ok_and(|c| c == want))
        .count()
}

#[test]
fn exec_and_cp_at_both_tiers() {
    let e = Env::start();
    e.pod(
        "web",
        &[
            ("main", "echo started; exec sleep 3600"),
            ("side", "exec sleep 3600"),
        ],
        "",
    );
    for tier in [Tier::Edge, Tier::Cloud] {
        // Output, the exit code as kubectl's, -c.
        let out = exec_ok(
            &e,
            tier,
            &[
                "exec",
                "web",
                "-c",
                "main",
                "--",
                "sh",
                "-c",
                "echo out; echo err >&2",
            ],
            None,
        );
        assert_eq!(out, "out\n", "{tier:?}");
        let o = e.kubectl(
            tier,
            &["exec", "web", "-c", "side", "--", "sh", "-c", "exit 7"],
            None,
        );
        assert_eq!(o.status.code(), Some(7), "{tier:?}: {}", text(&o.stderr));
        // Default container (the first) with a note, like kubelet's.
        let out = exec_ok(
            &e,
            tier,
            &["exec", "web", "--", "cat", "/proc/1/cmdline"],
            None,
        );
        assert!(out.starts_with("sleep"), "{tier:?}: {out:?}");
        // -i: stdin reaches the process and its end ends it.
        let out = exec_ok(
            &e,
            tier,
            &["exec", "-i", "web", "--", "wc", "-c"],
            Some(&[b'x'; 100_000]),
        );
        assert_eq!(out.trim(), "100000", "{tier:?}");
        // A command that is not there: kubelet's 126/127 family, told on stderr.
        let o = e.kubectl(tier, &["exec", "web", "--", "no-such-command"], None);
        assert!(!o.status.success(), "{tier:?}");
        // A container that is not in the pod.
        let o = e.kubectl(tier, &["exec", "web", "-c", "nope", "--", "true"], None);
        assert!(!o.status.success());
        assert!(
            text(&o.stderr).contains("container nope is not valid for pod web"),
            "{tier:?}: {}",
            text(&o.stderr)
        );
        // cp both ways, a large file.
        let big: Vec<u8> = (0..20 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
        let src = e.scratch().join(format!("big-{tier:?}"));
        std::fs::write(&src, &big).unwrap();
        let remote = format!("web:/tmp/big-{tier:?}");
        exec_ok(
            &e,
            tier,
            &["cp", "-c", "main", src.to_str().unwrap(), &remote],
            None,
        );
        let back = e.scratch().join(format!("back-{tier:?}"));
        exec_ok(
            &e,
            tier,
            &["cp", "-c", "main", &remote, back.to_str().unwrap()],
            None,
        );
        assert!(
            std::fs::read(&back).unwrap() == big,
            "{tier:?}: cp round trip differs"
        );
    }
    // The agent's metrics, for the region's client certificates only (the cloud's kubelet
    // client here): pods and containers started, runtime operations timed.
    let port = e.cc.jsonpath(
        "node",
        "n1",
        "{.status.daemonEndpoints.kubeletEndpoint.Port}",
    );
    let url = format!("https://127.0.0.1:{port}/metrics");
    let pki = e.cc.dir.path().join("pki");
    let curl = |with_cert: bool| {
        let mut c = Command::new("curl");
        c.args(["-sk", "-w", "\n%{http_code}"]);
        if with_cert {
            c.arg("--cert")
                .arg(pki.join("kubelet-client.crt"))
                .arg("--key")
                .arg(pki.join("kubelet-client.key"));
        }
        text(&c.arg(&url).output().unwrap().stdout)
    };
    let m = curl(true);
    let sample = |name: &str| {
        m.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
    };
    assert!(m.ends_with("\n200"), "{m}");
    assert_eq!(sample("kubelet_running_pods "), Some(1.0), "{m}");
    assert!(
        sample("kubelet_started_pods_total ").is_some_and(|n| n >= 1.0),
        "{m}"
    );
    assert!(
        sample("kubelet_started_containers_total ").is_some_and(|n| n >= 2.0),
        "{m}"
    );
    assert!(
        sample(
            r#"kubelet_runtime_operations_duration_seconds_count{operation_type="start_container"}"#
        )
        .is_some_and(|n| n >= 2.0),
        "{m}"
    );
    assert!(
        !curl(false).ends_with("\n200"),
        "metrics served without a certificate"
    );
}

/// `kubectl exec -it` under a terminal (`script` gives kubectl one, of a size set first): the
/// process gets a tty of that size. `kubectl attach -i` feeds a container's stdin and shows
/// its output, at both tiers.
#[test]
fn tty_and_attach_at_both_tiers() {
    let e = Env::start();
    e.pod("term", &[("main", "exec sleep 3600")], "");
    for tier in [Tier::Edge, Tier::Cloud] {
        let kc = e.kubeconfig(tier);
        let line = format!(
            "stty rows 31 cols 101; kubectl --kubeconfig {} --cache-dir {} exec -it term -- sh -c 'tty; for i in $(seq 400); do s=$(stty size 2>/dev/null); [ -n \"$s\" ] && [ \"$s\" != \"0 0\" ] && break; sleep 0.05; done; echo size $s'",
            kc.display(),
            e.scratch().join("kube-cache").display()
        );
        let child = Command::new("script")
            .args(["-qec", &line, "/dev/null"])
            .env("HOME", e.scratch())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let o = wait_output(child, Duration::from_secs(60), &["exec", "-it"]);
        let out = text(&o.stdout);
        assert!(o.status.success(), "{tier:?}: {out} {}", text(&o.stderr));
        assert!(out.contains("/dev/pts/"), "{tier:?}: no tty: {out:?}");
        // runc sizes the container's terminal just after the process starts (as containerd
        // does), so the process polls for it (busybox's `stty size` prints nothing, and
        // succeeds, while the size is still 0x0).
        assert!(
            out.contains("size 31 101"),
            "{tier:?}: size not passed: {out:?}"
        );
    }
    // attach: a container reading its stdin (stdin: true), answering each line, ending on "bye".
    e.pod_with(
        "talk",
        &[(
            "main",
            "while read l; do echo got:$l; [ \"$l\" = bye ] && exit 0; done",
        )],
        "    stdin: true\n",
        "Never",
    );
    // The container keeps running after this one: the client leaves (its input stays open).
    let mut child = e.spawn(Tier::Edge, &["attach", "-i", "talk"], true);
    child.stdin.as_mut().unwrap().write_all(b"one\n").unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    std::thread::spawn(move || {
        let mut l = String::new();
        while std::io::BufRead::read_line(&mut stdout, &mut l).is_ok_and(|n| n > 0) {
            if tx.send(std::mem::take(&mut l)).is_err() {
                return;
            }
        }
    });
    let got = rx.recv_timeout(T);
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(got.as_deref().map(str::trim), Ok("got:one"), "edge attach");
    let out = exec_ok(
        &e,
        Tier::Cloud,
        &["attach", "-i", "talk"],
        Some(b"two\nbye\n"),
    );
    assert!(out.contains("got:two"), "cloud attach: {out:?}");
}

/// Errors as kube gives them, a process that ignores its stdin, a client that vanishes (the
/// process goes with it), exec at an edge cut off from the cloud, and the Python client (v5 and
/// v4 channel protocols).
#[test]
fn errors_departures_offline_and_other_clients() {
    let mut e = Env::start();
    e.pod_with(
        "p",
        &[("main", "exec sleep 3600"), ("once", "echo done")],
        "",
        "OnFailure",
    );
    wait_for("container once terminated", T, || {
        let o = e.edge.kubectl(&[
            "get",
            "pod",
            "p",
            "-o",
            "jsonpath={.status.containerStatuses[?(@.name==\"once\")].state.terminated.reason}",
        ]);
        !o.stdout.is_empty()
    });
    for tier in [Tier::Edge, Tier::Cloud] {
        let o = e.kubectl(tier, &["exec", "p", "-c", "once", "--", "true"], None);
        assert!(!o.status.success(), "{tier:?}");
        assert!(
            text(&o.stderr).contains(r#"container "once" in pod "default/p" is not running"#),
            "{tier:?}: {}",
            text(&o.stderr)
        );
        let o = e.kubectl(tier, &["exec", "nopod", "--", "true"], None);
        assert!(
            text(&o.stderr).contains(r#"pods "nopod" not found"#),
            "{tier:?}: {}",
            text(&o.stderr)
        );
        // A process that never reads what it is sent still ends the session.
        exec_ok(
            &e,
            tier,
            &["exec", "-i", "p", "-c", "main", "--", "true"],
            Some(&[0u8; 4 << 20]),
        );
        // The client vanishes: the exec'd process is killed.
        let marker = match tier {
            Tier::Edge => ["sleep", "4321"],
            Tier::Cloud => ["sleep", "4322"],
        };
        let mut child = e.spawn(
            tier,
            &["exec", "p", "-c", "main", "--", marker[0], marker[1]],
            false,
        );
        wait_for(&format!("{marker:?} running"), T, || {
            processes_with(&marker) == 1
        });
        child.kill().unwrap();
        let _ = child.wait();
        wait_for(&format!("{marker:?} killed with its client"), T, || {
            processes_with(&marker) == 0
        });
    }
    // The Python client: its default (v5 offered first) with stdin closed by a close frame, and
    // the v4 protocol older clients speak.
    let o = e.python("exec.py", EXEC_PY, &["p"]);
    assert!(o.status.success(), "python: {}", text(&o.stderr));
    let lines: Vec<String> = text(&o.stdout).lines().map(String::from).collect();
    assert_eq!(
        lines,
        [
            "v5.channel.k8s.io 'from-python\\ndone\\n' 3",
            "v4.channel.k8s.io 'v4\\n' 4"
        ],
        "{}",
        text(&o.stderr)
    );
    // The site gone: the cloud says so (not "not SPDY", the answer to kubectl's retry).
    e.edge.kill9();
    wait_for("s1 disconnected", T, || {
        tests::site_connected(&e.cc, "s1") == "False"
    });
    let o = e.kubectl(
        Tier::Cloud,
        &["exec", "p", "-c", "main", "--", "true"],
        None,
    );
    assert!(
        text(&o.stderr).contains("site s1 is not connected"),
        "{}",
        text(&o.stderr)
    );
    e.edge.restart();
    // The cloud gone: exec at the edge goes on.
    e.cc.kill9();
    let o = e.kubectl(
        Tier::Edge,
        &[
            "exec",
            "p",
            "-c",
            "main",
            "--",
            "sh",
            "-c",
            "echo offline; exit 5",
        ],
        None,
    );
    assert_eq!(text(&o.stdout), "offline\n");
    assert_eq!(o.status.code(), Some(5), "{}", text(&o.stderr));
}

const EXEC_PY: &str = r#"
import sys
from kubernetes import client, config
from kubernetes.stream import stream
from kubernetes.stream.ws_client import WSClient, get_websocket_url
config.load_kube_config(sys.argv[1])
pod = sys.argv[2]
v1 = client.CoreV1Api()
r = stream(v1.connect_get_namespaced_pod_exec, pod, "default", container="main",
           command=["sh", "-c", "cat; echo done; exit 3"],
           stdin=True, stdout=True, stderr=True, tty=False, _preload_content=False)
r.write_stdin("from-python\n")
r.close_channel(0)
r.run_forever(timeout=30)
print(r.subprotocol, repr(r.read_stdout()), r.returncode, flush=True)
cfg = client.Configuration.get_default_copy()
url = get_websocket_url(cfg.host + "/api/v1/namespaces/default/pods/%s/exec" % pod,
                        [("container", "main"), ("command", "sh"), ("command", "-c"),
                         ("command", "echo v4; exit 4"), ("stdout", "true"), ("stderr", "true")])
h = {"sec-websocket-protocol": "v4.channel.k8s.io"}
auth = cfg.get_api_key_with_prefix("BearerToken")
if auth:
    h["authorization"] = auth
w = WSClient(cfg, url, h, capture_all=True)
w.run_forever(timeout=30)
print(w.subprotocol, repr(w.read_stdout()), w.returncode, flush=True)
"#;
