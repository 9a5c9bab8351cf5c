//! End-to-end tests of cloud-core's Kubernetes API, driven by stock kubectl and the kube crate.

use std::time::Duration;

use futures_util::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::{Api, ListParams, PostParams, WatchEvent, WatchParams};
use serde_json::json;
use tests::{err, kubectl, names, wait_for, CloudCore};

const POD: &str = r#"apiVersion: v1
kind: Pod
metadata:
  name: web
  labels: {app: web}
spec:
  containers:
  - name: c
    image: busybox:1.36
    command: ["sleep", "3600"]
    env: [{name: A, value: "1"}]
    resources: {limits: {cpu: "500m", memory: 64Mi}}
"#;

fn write(dir: &std::path::Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.to_string_lossy().into_owned()
}

#[test]
fn serves_https_with_kubeconfig_and_keeps_identity_across_restarts() {
    let mut cc = CloudCore::start();
    let kc_before = std::fs::read_to_string(cc.kubeconfig()).unwrap();
    let ca_before = std::fs::read(cc.dir.path().join("pki/ca.crt")).unwrap();
    assert_eq!(cc.kubectl_ok(&["get", "--raw", "/healthz"]), "ok");
    assert_eq!(cc.kubectl_ok(&["get", "--raw", "/readyz"]), "ok");
    assert!(cc
        .kubectl_ok(&["version"])
        .contains("Server Version: v1.32"));
    // Only TLS is served: a plain-HTTP request gets no HTTP answer.
    let plain = std::process::Command::new("kubectl")
        .args([
            "get",
            "--raw",
            "/healthz",
            "--server",
            &format!("http://{}", cc.addr),
            "--request-timeout",
            "5s",
        ])
        .output()
        .unwrap();
    assert!(!plain.status.success());
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(cc.dir.path().join("pki/ca.key"))
            .unwrap()
            .permissions(),
    );
    assert_eq!(mode & 0o077, 0, "CA key must not be group/world readable");
    // The admin token is stored only as a hash: the token string is nowhere in the store.
    let token = kc_before
        .lines()
        .find_map(|l| l.trim().strip_prefix("token: "))
        .unwrap()
        .to_string();
    cc.restart();
    assert_eq!(
        std::fs::read_to_string(cc.kubeconfig()).unwrap(),
        kc_before,
        "restart must reuse the kubeconfig"
    );
    assert_eq!(
        std::fs::read(cc.dir.path().join("pki/ca.crt")).unwrap(),
        ca_before,
        "restart must reuse the CA"
    );
    cc.kill9();
    // Wherever the store keeps its files: under the data dir, or etcd's.
    let store_dir = match &cc.etcd {
        Some(e) => e.dir.path().to_path_buf(),
        None => cc.dir.path().join("store"),
    };
    for entry in walk(&store_dir) {
        let bytes = std::fs::read(&entry).unwrap();
        assert!(
            !bytes.windows(token.len()).any(|w| w == token.as_bytes()),
            "token found in {}",
            entry.display()
        );
    }
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn discovery_openapi_and_explain() {
    let cc = CloudCore::start();
    let res = cc.kubectl_ok(&["api-resources"]);
    for r in [
        "namespaces",
        "pods",
        "nodes",
        "configmaps",
        "secrets",
        "serviceaccounts",
        "events",
        "tenants",
        "edgesites",
        "leases",
    ] {
        assert!(
            res.lines().any(|l| l.starts_with(r)),
            "api-resources lacks {r}:\n{res}"
        );
    }
    let explain = cc.kubectl_ok(&["explain", "pod.spec.containers"]);
    assert!(
        explain.contains("image") && explain.contains("FIELDS"),
        "{explain}"
    );
    let explain = cc.kubectl_ok(&["explain", "tenants.spec"]);
    assert!(explain.contains("storageClusterId"), "{explain}");
    let ns = cc.kubectl_ok(&["get", "ns"]);
    assert_eq!(
        names(&ns),
        vec!["default", "kube-node-lease", "kube-public", "kube-system"]
    );
    assert!(
        names(&cc.kubectl_ok(&["get", "sa", "-n", "kube-system"])).contains(&"default".to_string())
    );
}

#[test]
fn apply_is_idempotent_and_validation_names_the_field() {
    let cc = CloudCore::start();
    let f = write(cc.dir.path(), "pod.yaml", POD);
    assert!(cc
        .kubectl_ok(&["apply", "-f", &f])
        .contains("pod/web created"));
    assert!(cc
        .kubectl_ok(&["apply", "-f", &f])
        .contains("pod/web unchanged"));
    let changed = write(
        cc.dir.path(),
        "pod2.yaml",
        &POD.replace("busybox:1.36", "busybox:1.37"),
    );
    assert!(cc
        .kubectl_ok(&["apply", "-f", &changed])
        .contains("pod/web configured"));
    let img = cc.kubectl_ok(&[
        "get",
        "pod",
        "web",
        "-o",
        "jsonpath={.spec.containers[0].image} {.metadata.generation}",
    ]);
    assert_eq!(img, "busybox:1.37 2");
    // Unknown field: rejected by server-side strict validation, naming the field.
    let typo = write(
        cc.dir.path(),
        "typo.yaml",
        &POD.replace("name: web", "name: typo")
            .replace("    image:", "    imagee:"),
    );
    let e = err(cc.kubectl(&["apply", "-f", &typo]), &["apply"]);
    assert!(
        e.contains(r#"unknown field "spec.containers[0].imagee""#),
        "{e}"
    );
    // Invalid name and missing image: 422 with the fields.
    let bad = write(
        cc.dir.path(),
        "bad.yaml",
        &POD.replace("name: web", "name: Bad_Name")
            .replace("    image: busybox:1.36\n", ""),
    );
    let e = err(cc.kubectl(&["apply", "-f", &bad]), &["apply"]);
    assert!(
        e.contains("is invalid")
            && e.contains("metadata.name")
            && e.contains("spec.containers[0].image: Required value"),
        "{e}"
    );
    // Pod spec is mostly immutable.
    let e = err(
        cc.kubectl(&[
            "patch",
            "pod",
            "web",
            "-p",
            r#"{"spec":{"restartPolicy":"Never"}}"#,
        ]),
        &["patch"],
    );
    assert!(e.contains("pod updates may not change fields"), "{e}");
    // Nothing was half-written by the failures.
    assert_eq!(names(&cc.kubectl_ok(&["get", "pods"])), vec!["web"]);
}

#[test]
fn kubectl_verbs_tables_describe_and_patch_types() {
    let cc = CloudCore::start();
    let f = write(cc.dir.path(), "pod.yaml", POD);
    cc.kubectl_ok(&["create", "-f", &f]);
    let wide = cc.kubectl_ok(&["get", "pods", "-o", "wide"]);
    let header: Vec<&str> = wide.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        &header[..7],
        &["NAME", "READY", "STATUS", "RESTARTS", "AGE", "IP", "NODE"]
    );
    assert!(
        wide.lines().nth(1).unwrap().starts_with("web")
            && wide.contains("0/1")
            && wide.contains("Pending")
    );
    cc.kubectl_ok(&["label", "pod", "web", "tier=fe"]);
    cc.kubectl_ok(&["annotate", "pod", "web", "note=hello"]);
    let labels = cc.kubectl_ok(&[
        "get",
        "pod",
        "web",
        "-o",
        "jsonpath={.metadata.labels.tier} {.metadata.annotations.note}",
    ]);
    assert_eq!(labels, "fe hello");
    cc.kubectl_ok(&[
        "patch",
        "pod",
        "web",
        "--type",
        "merge",
        "-p",
        r#"{"metadata":{"labels":{"tier":null}}}"#,
    ]);
    cc.kubectl_ok(&[
        "patch",
        "pod",
        "web",
        "--type",
        "json",
        "-p",
        r#"[{"op":"add","path":"/metadata/labels/x","value":"y"}]"#,
    ]);
    assert_eq!(
        cc.kubectl_ok(&["get", "pod", "web", "-o", "jsonpath={.metadata.labels}"]),
        r#"{"app":"web","x":"y"}"#
    );
    // Events show in describe.
    let uid = cc.kubectl_ok(&["get", "pod", "web", "-o", "jsonpath={.metadata.uid}"]);
    let ev = json!({"apiVersion": "v1", "kind": "Event", "metadata": {"name": "web.1"},
        "involvedObject": {"kind": "Pod", "name": "web", "namespace": "default", "uid": uid},
        "reason": "Scheduled", "message": "assigned default/web to n1", "type": "Normal",
        "firstTimestamp": "2026-01-01T00:00:00Z", "lastTimestamp": "2026-01-01T00:00:00Z", "count": 1,
        "source": {"component": "atoll-scheduler"}});
    let evf = write(cc.dir.path(), "ev.json", &ev.to_string());
    cc.kubectl_ok(&["create", "-f", &evf]);
    let d = cc.kubectl_ok(&["describe", "pod", "web"]);
    assert!(
        d.contains("Name:")
            && d.contains("busybox:1.36")
            && d.contains("assigned default/web to n1"),
        "{d}"
    );
    // Selectors.
    assert_eq!(
        names(&cc.kubectl_ok(&["get", "pods", "-l", "app=web"])),
        vec!["web"]
    );
    let none = cc.kubectl_ok(&["get", "pods", "-l", "app notin (web)"]);
    assert!(names(&none).is_empty());
    let e = err(
        cc.kubectl(&["get", "pods", "--field-selector", "spec.bogus=x"]),
        &["get"],
    );
    assert!(e.contains("field label not supported: spec.bogus"), "{e}");
    assert_eq!(
        names(&cc.kubectl_ok(&[
            "get",
            "pods",
            "--field-selector",
            "status.phase=Pending,metadata.name=web"
        ])),
        vec!["web"]
    );
    // Protobuf bodies from typed kubectl commands.
    cc.kubectl_ok(&["create", "configmap", "cm1", "--from-literal=k=v"]);
    cc.kubectl_ok(&["create", "secret", "generic", "s1", "--from-literal=p=q"]);
    cc.kubectl_ok(&["create", "namespace", "team-a"]);
    cc.kubectl_ok(&["create", "serviceaccount", "robot", "-n", "team-a"]);
    assert_eq!(
        cc.kubectl_ok(&["get", "cm", "cm1", "-o", "jsonpath={.data.k}"]),
        "v"
    );
    assert_eq!(
        cc.kubectl_ok(&["get", "secret", "s1", "-o", "jsonpath={.data.p}"]),
        "cQ=="
    );
    assert_eq!(
        names(&cc.kubectl_ok(&["get", "sa", "-n", "team-a"])),
        vec!["default", "robot"]
    );
    // Delete: an unbound pod goes at once.
    cc.kubectl_ok(&["delete", "pod", "web"]);
    assert!(names(&cc.kubectl_ok(&["get", "pods"])).is_empty());
}

#[test]
fn graceful_pod_deletion_finalizers_and_namespace_termination() {
    let cc = CloudCore::start();
    cc.kubectl_ok(&["create", "namespace", "doomed"]);
    let f = write(
        cc.dir.path(),
        "pod.yaml",
        &POD.replace(
            "  labels: {app: web}",
            "  labels: {app: web}\n  finalizers: [example.com/hold]",
        )
        .replace("spec:\n", "spec:\n  nodeName: n1\n"),
    );
    cc.kubectl_ok(&["create", "-f", &f, "-n", "doomed"]);
    cc.kubectl_ok(&["create", "configmap", "c", "-n", "doomed"]);
    cc.kubectl_ok(&["delete", "pod", "web", "-n", "doomed", "--wait=false"]);
    let ts = cc.kubectl_ok(&[
        "get",
        "pod",
        "web",
        "-n",
        "doomed",
        "-o",
        "jsonpath={.metadata.deletionTimestamp} {.metadata.deletionGracePeriodSeconds}",
    ]);
    assert!(ts.ends_with(" 30"), "bound pod deletion is graceful: {ts}");
    assert!(cc
        .kubectl_ok(&["get", "pods", "-n", "doomed"])
        .contains("Terminating"));
    // The kubelet's final delete (grace 0) still waits for the finalizer.
    cc.kubectl_ok(&[
        "delete",
        "pod",
        "web",
        "-n",
        "doomed",
        "--grace-period=0",
        "--force",
        "--wait=false",
    ]);
    assert!(names(&cc.kubectl_ok(&["get", "pods", "-n", "doomed"])).contains(&"web".to_string()));
    cc.kubectl_ok(&[
        "patch",
        "pod",
        "web",
        "-n",
        "doomed",
        "--type",
        "json",
        "-p",
        r#"[{"op":"remove","path":"/metadata/finalizers"}]"#,
    ]);
    assert!(names(&cc.kubectl_ok(&["get", "pods", "-n", "doomed"])).is_empty());
    // Namespace deletion: Terminating until its contents are gone, then gone.
    cc.kubectl_ok(&["delete", "namespace", "doomed", "--timeout=30s"]);
    let e = err(cc.kubectl(&["get", "namespace", "doomed"]), &["get"]);
    assert!(e.contains(r#"namespaces "doomed" not found"#), "{e}");
    let e = err(
        cc.kubectl(&["get", "configmap", "c", "-n", "doomed"]),
        &["get"],
    );
    assert!(e.contains("not found"), "{e}");
    cc.kubectl_ok(&["create", "namespace", "doomed"]);
    assert!(err(
        cc.kubectl(&["get", "configmap", "c", "-n", "doomed"]),
        &["get"]
    )
    .contains("not found"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_client_crud_conflict_pagination_and_watch() {
    let cc = CloudCore::start_with(&["--watch-window", "20"]);
    let client = cc.client().await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let mut cm: ConfigMap = serde_json::from_value(
        json!({"metadata": {"name": "a", "labels": {"k": "v"}}, "data": {"x": "1"}}),
    )
    .unwrap();
    let created = cms.create(&PostParams::default(), &cm).await.unwrap();
    let rv0: u64 = created
        .metadata
        .resource_version
        .clone()
        .unwrap()
        .parse()
        .unwrap();
    assert!(created.metadata.uid.is_some() && created.metadata.creation_timestamp.is_some());
    let e = cms.create(&PostParams::default(), &cm).await.unwrap_err();
    assert!(
        matches!(e, kube::Error::Api(ref s) if s.code == 409 && s.reason == "AlreadyExists"),
        "{e:?}"
    );
    // Stale update: 409 Conflict.
    cm.metadata.resource_version = Some("1".into());
    cm.data = Some([("x".to_string(), "2".to_string())].into());
    let e = cms
        .replace("a", &PostParams::default(), &cm)
        .await
        .unwrap_err();
    assert!(
        matches!(e, kube::Error::Api(ref s) if s.code == 409 && s.reason == "Conflict"),
        "{e:?}"
    );
    cm.metadata.resource_version = created.metadata.resource_version.clone();
    let updated = cms.replace("a", &PostParams::default(), &cm).await.unwrap();
    assert!(
        updated
            .metadata
            .resource_version
            .unwrap()
            .parse::<u64>()
            .unwrap()
            > rv0
    );
    let e = cms.get("missing").await.unwrap_err();
    assert!(
        matches!(e, kube::Error::Api(ref s) if s.code == 404),
        "{e:?}"
    );

    // Watch from the version we saw: exactly the later events, in order.
    let mut w = cms
        .watch(&WatchParams::default(), &rv0.to_string())
        .await
        .unwrap()
        .boxed();
    for i in 0..5 {
        let c: ConfigMap =
            serde_json::from_value(json!({"metadata": {"name": format!("p{i}")}})).unwrap();
        cms.create(&PostParams::default(), &c).await.unwrap();
    }
    cms.delete("p0", &Default::default()).await.unwrap();
    let mut seen = Vec::new();
    while seen.len() < 7 {
        match tokio::time::timeout(Duration::from_secs(10), w.try_next())
            .await
            .expect("watch event in time")
            .unwrap()
            .unwrap()
        {
            WatchEvent::Added(o) => seen.push(format!("+{}", o.metadata.name.unwrap())),
            WatchEvent::Modified(o) => seen.push(format!("~{}", o.metadata.name.unwrap())),
            WatchEvent::Deleted(o) => seen.push(format!("-{}", o.metadata.name.unwrap())),
            WatchEvent::Bookmark(_) => {}
            WatchEvent::Error(e) => panic!("watch error {e:?}"),
        }
    }
    assert_eq!(seen, vec!["~a", "+p0", "+p1", "+p2", "+p3", "+p4", "-p0"]);

    // Pagination: pages of 2 cover everything exactly once.
    let mut all = Vec::new();
    let mut lp = ListParams::default().limit(2);
    loop {
        let page = cms.list(&lp).await.unwrap();
        assert!(page.items.len() <= 2);
        all.extend(page.items.into_iter().map(|c| c.metadata.name.unwrap()));
        match page.metadata.continue_ {
            Some(c) if !c.is_empty() => lp = lp.continue_token(&c),
            _ => break,
        }
    }
    assert_eq!(all, vec!["a", "p1", "p2", "p3", "p4"]);
    assert_eq!(
        cms.list(&ListParams::default().labels("k=v"))
            .await
            .unwrap()
            .items
            .len(),
        1
    );

    // Outside the window and the storage's history: 410 Gone, as a watch ERROR event.
    for i in 0..25 {
        let c: ConfigMap =
            serde_json::from_value(json!({"metadata": {"name": format!("q{i}")}})).unwrap();
        cms.create(&PostParams::default(), &c).await.unwrap();
    }
    // The store compacts its history behind the window as it grows: wait for that.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let mut w = cms
            .watch(&WatchParams::default(), &rv0.to_string())
            .await
            .unwrap()
            .boxed();
        match tokio::time::timeout(Duration::from_secs(10), w.try_next())
            .await
            .unwrap()
            .unwrap()
            .unwrap()
        {
            WatchEvent::Error(e) => {
                assert_eq!(e.code, 410);
                break;
            }
            other if std::time::Instant::now() < deadline => drop(other),
            other => panic!("expected 410, got {other:?}"),
        }
    }
    // Bookmarks are sent when asked for.
    let rv = cms
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let mut w = cms
        .watch(&WatchParams::default(), &rv)
        .await
        .unwrap()
        .boxed();
    let ev = tokio::time::timeout(Duration::from_secs(30), w.try_next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(matches!(ev, WatchEvent::Bookmark(_)), "{ev:?}");
}

#[test]
fn tenants_are_isolated_virtual_clusters() {
    let cc = CloudCore::start();
    let tenants = write(cc.dir.path(), "t.yaml", "apiVersion: v1\nkind: Tenant\nmetadata: {name: acme}\n---\napiVersion: v1\nkind: Tenant\nmetadata: {name: zeta}\n");
    cc.kubectl_ok(&["apply", "-f", &tenants]);
    let t = cc.kubectl_ok(&["get", "tenants"]);
    assert_eq!(names(&t), vec!["acme", "zeta"]);
    assert!(t.lines().next().unwrap().contains("STATUS"));
    let kc = |tenant: &str| cc.tenant_kubeconfig(tenant);
    let (acme, zeta) = (kc("acme"), kc("zeta"));
    let missing = std::process::Command::new(tests::bin("cloud-core"))
        .args(["kubeconfig", "--kubeconfig"])
        .arg(cc.kubeconfig())
        .args(["--tenant", "nope"])
        .output()
        .unwrap();
    assert!(
        !missing.status.success()
            && String::from_utf8_lossy(&missing.stderr).contains(r#"tenants "nope" not found"#)
    );
    let scratch = cc.dir.path();
    let as_acme = |args: &[&str]| kubectl(&acme, &scratch.join("acme"), args, None);
    let as_zeta = |args: &[&str]| kubectl(&zeta, &scratch.join("zeta"), args, None);
    assert_eq!(
        names(&tests::ok(as_acme(&["get", "ns"]), &[])),
        vec!["default", "kube-node-lease", "kube-public", "kube-system"]
    );
    // The same names in three spaces.
    let f = write(scratch, "pod.yaml", POD);
    cc.kubectl_ok(&["create", "-f", &f]);
    tests::ok(as_acme(&["create", "-f", &f]), &[]);
    tests::ok(as_zeta(&["create", "-f", &f]), &[]);
    tests::ok(as_acme(&["label", "pod", "web", "owner=acme"]), &[]);
    assert_eq!(
        tests::ok(
            as_acme(&[
                "get",
                "pod",
                "web",
                "-o",
                "jsonpath={.metadata.tenant} {.metadata.labels.owner}"
            ]),
            &[]
        ),
        "acme acme"
    );
    assert_eq!(
        tests::ok(
            as_zeta(&[
                "get",
                "pod",
                "web",
                "-o",
                "jsonpath={.metadata.tenant} {.metadata.labels.owner}"
            ]),
            &[]
        ),
        "zeta "
    );
    // Forbidden: system resources and other spaces.
    for args in [
        vec!["get", "nodes"],
        vec!["get", "tenants"],
        vec![
            "get",
            "--raw",
            "/api/v1/tenants/zeta/namespaces/default/pods",
        ],
        vec!["get", "edgesites"],
    ] {
        let e = err(as_acme(&args), &args);
        assert!(
            e.contains("Forbidden") || e.contains("forbidden"),
            "{args:?}: {e}"
        );
    }
    // The system admin reads a tenant's objects by full path.
    let raw = cc.kubectl_ok(&[
        "get",
        "--raw",
        "/api/v1/tenants/acme/namespaces/default/pods/web",
    ]);
    let pod: Pod = serde_json::from_str(&raw).unwrap();
    assert_eq!(pod.metadata.labels.unwrap()["owner"], "acme");
    // Tenant admins mint more tokens (TokenRequest) that work within the tenant only.
    let token = tests::ok(
        as_acme(&["create", "token", "default", "-n", "default"]),
        &[],
    )
    .trim()
    .to_string();
    let server = format!("https://{}", cc.addr);
    let with_token = |args: &[&str]| {
        let mut a = vec![
            "--server",
            server.as_str(),
            "--token",
            token.as_str(),
            "--insecure-skip-tls-verify",
        ];
        a.extend_from_slice(args);
        std::process::Command::new("kubectl")
            .args(&a)
            .env("HOME", scratch)
            .output()
            .unwrap()
    };
    assert_eq!(
        names(&tests::ok(with_token(&["get", "pods"]), &[])),
        vec!["web"]
    );
    assert!(!with_token(&["get", "nodes"]).status.success());
    // Deleting the tenant removes its space and revokes its credentials.
    cc.kubectl_ok(&["delete", "tenant", "acme", "--timeout=30s"]);
    wait_for("acme's space to go", Duration::from_secs(20), || {
        cc.kubectl(&[
            "get",
            "--raw",
            "/api/v1/tenants/acme/namespaces/default/pods/web",
        ])
        .status
        .code()
            != Some(0)
    });
    let e = err(as_acme(&["get", "pods"]), &["get"]);
    assert!(
        e.contains("Unauthorized") || e.contains("provide credentials"),
        "{e}"
    );
    assert_eq!(
        names(&tests::ok(as_zeta(&["get", "pods"]), &[])),
        vec!["web"]
    );
    assert_eq!(names(&cc.kubectl_ok(&["get", "pods"])), vec!["web"]);
}

#[test]
fn bad_input_gets_clear_status_errors() {
    let cc = CloudCore::start_with(&["--max-body", "3145728"]);
    let scratch = cc.dir.path();
    // Malformed JSON: 400.
    let bad = write(scratch, "bad.json", "{\"apiVersion\": \"v1\", \"kind\": ");
    let e = err(
        cc.kubectl(&[
            "create",
            "--raw",
            "/api/v1/namespaces/default/configmaps",
            "-f",
            &bad,
        ]),
        &["create --raw"],
    );
    assert!(
        e.contains("BadRequest") || e.contains("error decoding JSON"),
        "{e}"
    );
    // Too large: 413, and nothing stored.
    let big = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "big"}, "data": {"x": "a".repeat(4 * 1024 * 1024)}});
    let bigf = write(scratch, "big.json", &big.to_string());
    let e = err(
        cc.kubectl(&[
            "create",
            "--raw",
            "/api/v1/namespaces/default/configmaps",
            "-f",
            &bigf,
        ]),
        &["create --raw big"],
    );
    assert!(
        e.contains("RequestEntityTooLarge")
            || e.contains("larger than the limit")
            || e.contains("413"),
        "{e}"
    );
    assert!(err(cc.kubectl(&["get", "cm", "big"]), &["get"]).contains("not found"));
    // Unauthenticated: 401.
    let out = std::process::Command::new("kubectl")
        .args([
            "get",
            "pods",
            "--server",
            &format!("https://{}", cc.addr),
            "--token",
            "wrong",
            "--insecure-skip-tls-verify",
        ])
        .env("HOME", scratch)
        .output()
        .unwrap();
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && (e.contains("Unauthorized") || e.contains("provide credentials")),
        "{e}"
    );
    // Kind/namespace mismatches: 400.
    let wrong_ns = write(
        scratch,
        "ns.json",
        r#"{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x", "namespace": "other"}}"#,
    );
    let e = err(
        cc.kubectl(&[
            "create",
            "--raw",
            "/api/v1/namespaces/default/configmaps",
            "-f",
            &wrong_ns,
        ]),
        &["create"],
    );
    assert!(e.contains("does not match the namespace"), "{e}");
    // Creating in a namespace that does not exist: 404.
    let e = err(
        cc.kubectl(&["create", "configmap", "x", "-n", "nowhere"]),
        &["create"],
    );
    assert!(e.contains(r#"namespaces "nowhere" not found"#), "{e}");
    // Bad delete options: 422 naming the field.
    let e = err(
        cc.kubectl(&[
            "delete",
            "--raw",
            "/api/v1/namespaces/default/serviceaccounts/default?propagationPolicy=Sometimes",
        ]),
        &["delete"],
    );
    assert!(e.contains("propagationPolicy"), "{e}");
    assert!(names(&cc.kubectl_ok(&["get", "sa"])).contains(&"default".to_string()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_sigkill() {
    let mut cc = CloudCore::start();
    let client = cc.client().await;
    let marker: ConfigMap =
        serde_json::from_value(json!({"metadata": {"name": "marker"}})).unwrap();
    let rv0 = Api::<ConfigMap>::namespaced(client.clone(), "default")
        .create(&PostParams::default(), &marker)
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let acked = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let mut tasks = Vec::new();
    for w in 0..8 {
        let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
        let acked = acked.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0.. {
                let name = format!("w{w}-{i}");
                let c: ConfigMap = serde_json::from_value(
                    json!({"metadata": {"name": name}, "data": {"v": "x".repeat(512)}}),
                )
                .unwrap();
                match cms.create(&PostParams::default(), &c).await {
                    Ok(_) => acked.lock().unwrap().push(name),
                    Err(_) => return,
                }
            }
        }));
    }
    // Kill in the middle of the stream, once a good number of writes were acknowledged.
    let a2 = acked.clone();
    tokio::task::spawn_blocking(move || {
        wait_for("writes to be acknowledged", Duration::from_secs(60), || {
            a2.lock().unwrap().len() >= 1000
        })
    })
    .await
    .unwrap();
    cc.kill9();
    for t in tasks {
        let _ = t.await;
    }
    let acked = acked.lock().unwrap().clone();
    cc.restart();
    let cms: Api<ConfigMap> = Api::namespaced(cc.client().await, "default");
    let have: std::collections::HashSet<String> = cms
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|c| c.metadata.name)
        .collect();
    let lost: Vec<&String> = acked.iter().filter(|n| !have.contains(*n)).collect();
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged writes lost after SIGKILL: {:?}",
        lost.len(),
        acked.len(),
        &lost[..lost.len().min(10)]
    );
    // History survives too: a watch from before the kill replays every acknowledged create.
    let mut w = cms
        .watch(&WatchParams::default(), &rv0)
        .await
        .unwrap()
        .boxed();
    let mut unseen: std::collections::HashSet<&String> = acked.iter().collect();
    while !unseen.is_empty() {
        match tokio::time::timeout(Duration::from_secs(30), w.try_next())
            .await
            .expect("replay stalled")
            .unwrap()
            .expect("watch ended")
        {
            WatchEvent::Added(c) => {
                unseen.remove(&c.metadata.name.unwrap());
            }
            other => panic!("expected the replayed creates, got {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_status_subresources_and_deletecollection() {
    use k8s_openapi::api::core::v1::Node;
    use kube::api::{DeleteParams, Patch, PatchParams};
    let cc = CloudCore::start();
    let node = write(
        cc.dir.path(),
        "node.yaml",
        "apiVersion: v1\nkind: Node\nmetadata:\n  name: n1\n  labels: {node-role.kubernetes.io/edge: \"\", atoll.io/site: s1}\n",
    );
    cc.kubectl_ok(&["apply", "-f", &node]);
    let client = cc.client().await;
    let nodes: Api<Node> = Api::all(client.clone());
    // Status goes through the status subresource; spec/metadata in that body are ignored.
    let status = json!({"metadata": {"labels": {"sneaky": "x"}}, "status": {"conditions": [{"type": "Ready", "status": "True"}],
        "nodeInfo": {"kubeletVersion": "v1.32.0-atoll", "machineID": "", "systemUUID": "", "bootID": "", "kernelVersion": "6.1",
            "osImage": "Debian", "containerRuntimeVersion": "runc", "kubeProxyVersion": "", "operatingSystem": "linux", "architecture": "amd64"}}});
    nodes
        .patch_status("n1", &PatchParams::default(), &Patch::Merge(&status))
        .await
        .unwrap();
    let n = nodes.get("n1").await.unwrap();
    assert!(!n.metadata.labels.unwrap().contains_key("sneaky"));
    let table = cc.kubectl_ok(&["get", "nodes"]);
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["NAME", "STATUS", "ROLES", "AGE", "VERSION"]);
    let row: Vec<&str> = table.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(
        (row[0], row[1], row[2], row[4]),
        ("n1", "Ready", "edge", "v1.32.0-atoll")
    );
    // A main-resource update cannot change status.
    nodes
        .patch(
            "n1",
            &PatchParams::default(),
            &Patch::Merge(&json!({"status": {"conditions": []}})),
        )
        .await
        .unwrap();
    assert_eq!(
        nodes
            .get("n1")
            .await
            .unwrap()
            .status
            .unwrap()
            .conditions
            .unwrap()
            .len(),
        1
    );
    // Pod status subresource.
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let p: Pod = serde_json::from_value(
        json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "i"}]}}),
    )
    .unwrap();
    pods.create(&PostParams::default(), &p).await.unwrap();
    pods.patch_status(
        "p",
        &PatchParams::default(),
        &Patch::Merge(&json!({"status": {"phase": "Running", "podIP": "10.1.0.5"}})),
    )
    .await
    .unwrap();
    let out = cc.kubectl_ok(&["get", "pods", "-o", "wide"]);
    assert!(out.contains("Running") && out.contains("10.1.0.5"), "{out}");
    // deletecollection with a label selector removes exactly the matching objects.
    let cms: Api<ConfigMap> = Api::namespaced(client, "default");
    for (n, l) in [("a", "x"), ("b", "x"), ("c", "y")] {
        let c: ConfigMap =
            serde_json::from_value(json!({"metadata": {"name": n, "labels": {"g": l}}})).unwrap();
        cms.create(&PostParams::default(), &c).await.unwrap();
    }
    cms.delete_collection(
        &DeleteParams::default(),
        &ListParams::default().labels("g=x"),
    )
    .await
    .unwrap();
    let left: Vec<String> = cms
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|c| c.metadata.name)
        .collect();
    assert_eq!(left, vec!["c"]);
}
