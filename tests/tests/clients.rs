//! Client compatibility: what kubectl's client-side validation asks for (`/openapi/v2` in
//! protobuf, for a `v1` List), kube-apiserver's reading of query booleans, and a watch through
//! the Kubernetes Python client (which sends `watch=True`).

use std::process::{Command, Stdio};
use std::time::Duration;

use tests::{err, CloudCore};

fn write(dir: &std::path::Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.to_string_lossy().into_owned()
}

#[test]
fn a_list_applies_with_validation_and_openapi_v2_is_served() {
    let cc = CloudCore::start();
    cc.kubectl_ok(&["create", "configmap", "one", "--from-literal=k=v"]);
    cc.kubectl_ok(&[
        "create",
        "deployment",
        "web",
        "--image=busybox",
        "--",
        "sleep",
        "1000",
    ]);
    cc.kubectl_ok(&["create", "secret", "generic", "s", "--from-literal=a=b"]);
    // What `kubectl get -o json` writes for several kinds is a v1 List: apply it back with
    // validation on (kubectl then validates each item against /openapi/v2).
    let list = cc.kubectl_ok(&["get", "deploy,cm,secrets", "-o", "json"]);
    assert!(list.contains("\"kind\": \"List\""), "{list}");
    let path = write(cc.dir.path(), "list.json", &list);
    let out = cc.kubectl_ok(&["apply", "-f", &path]);
    assert!(out.contains("deployment.apps/web"), "{out}");
    assert!(out.contains("configmap/one"), "{out}");
    // A new List creates its items.
    let fresh = r#"{"apiVersion": "v1", "kind": "List", "items": [
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "from-list"}, "data": {"a": "1"}}]}"#;
    cc.kubectl_ok(&["apply", "-f", &write(cc.dir.path(), "new.json", fresh)]);
    assert_eq!(
        cc.kubectl_ok(&["get", "cm", "from-list", "-o", "jsonpath={.data.a}"]),
        "1"
    );
    // Validation is real: an unknown field in an item is named and nothing is applied.
    let bad = r#"{"apiVersion": "v1", "kind": "List", "items": [
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "bad-one"}, "dataa": {"a": "1"}},
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "bad-two"},
         "spec": {"selector": {"matchLabels": {"a": "b"}}, "template": {"metadata": {"labels": {"a": "b"}},
           "spec": {"containers": [{"name": "c", "image": "busybox", "imagee": "x"}]}}}}]}"#;
    let args = ["apply", "-f", &write(cc.dir.path(), "bad.json", bad)];
    let e = err(cc.kubectl(&args), &args);
    assert!(e.contains("unknown field \"dataa\""), "{e}");
    assert!(e.contains("unknown field \"imagee\""), "{e}");
    assert!(!cc.kubectl(&["get", "cm", "bad-one"]).status.success());

    // The JSON form, as kube-apiserver serves it.
    let v2: serde_json::Value =
        serde_json::from_str(&cc.kubectl_ok(&["get", "--raw", "/openapi/v2"])).unwrap();
    assert_eq!(v2["swagger"], "2.0");
    let pod = &v2["definitions"]["io.k8s.api.core.v1.Pod"];
    assert_eq!(pod["x-kubernetes-group-version-kind"][0]["kind"], "Pod");
    assert_eq!(
        pod["properties"]["spec"]["$ref"],
        "#/definitions/io.k8s.api.core.v1.PodSpec"
    );
}

#[test]
fn query_booleans_read_as_kube_apiserver_reads_them() {
    let cc = CloudCore::start();
    cc.kubectl_ok(&["create", "configmap", "c1"]);
    let raw = |q: &str| {
        cc.kubectl_ok(&[
            "get",
            "--raw",
            &format!("/api/v1/namespaces/default/configmaps?timeoutSeconds=1&{q}"),
        ])
    };
    for v in ["1", "t", "T", "TRUE", "true", "True"] {
        let out = raw(&format!("watch={v}"));
        assert!(
            out.contains("\"type\":\"ADDED\"") && !out.contains("ConfigMapList"),
            "watch={v} must stream: {out}"
        );
    }
    for v in ["0", "false", "False", "FALSE"] {
        let out = raw(&format!("watch={v}"));
        assert!(
            out.contains("\"kind\":\"ConfigMapList\""),
            "watch={v} must list: {out}"
        );
    }
    // sendInitialEvents=True ends the initial events with a bookmark.
    let out = raw("watch=True&sendInitialEvents=True&allowWatchBookmarks=True&resourceVersionMatch=NotOlderThan");
    assert!(out.contains("k8s.io/initial-events-end"), "{out}");
}

const WATCH_PY: &str = r#"
import sys
from kubernetes import client, config, watch
config.load_kube_config(sys.argv[1])
v1 = client.CoreV1Api()
print("ready", flush=True)
w = watch.Watch()
for ev in w.stream(v1.list_namespaced_config_map, "default", timeout_seconds=60,
                   allow_watch_bookmarks=True):
    if ev["type"] == "ADDED" and ev["object"].metadata.name == sys.argv[2]:
        print("seen", ev["object"].data["k"], flush=True)
        break
"#;

#[test]
fn the_python_client_watches() {
    let cc = CloudCore::start();
    let script = write(cc.dir.path(), "watch.py", WATCH_PY);
    let mut child = Command::new("python3")
        .arg(&script)
        .arg(cc.kubeconfig())
        .arg("made-later")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3");
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut stdout, &mut line).unwrap();
    if line.trim() != "ready" {
        let out = child.wait_with_output().unwrap();
        panic!(
            "the python client did not start (pip install kubernetes): {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // Created once the client is up: whether it lands before or after the watch request, only
    // a streaming watch reports it (as a live event or an initial ADDED); a plain list answer
    // reports nothing.
    cc.kubectl_ok(&["create", "configmap", "made-later", "--from-literal=k=v"]);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut rest = String::new();
        let _ = std::io::BufRead::read_line(&mut stdout, &mut rest);
        let _ = tx.send(rest);
    });
    let got = rx.recv_timeout(Duration::from_secs(60));
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    let got = got.unwrap_or_else(|_| {
        panic!(
            "the python watch reported nothing: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert_eq!(got.trim(), "seen v");
}
