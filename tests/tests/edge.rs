//! End-to-end tests of edge sites: join, downlink, uplink, authority, isolation, offline
//! operation, and site status — one cloud-core and real edge-cores, driven by stock kubectl.

use std::time::Duration;

use tests::rawsite::{site_creds, RawSite};
use tests::{err, kubectl, names, wait_for, CloudCore, EdgeCore};

fn write(dir: &std::path::Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.to_string_lossy().into_owned()
}

fn node_yaml(name: &str) -> String {
    format!("apiVersion: v1\nkind: Node\nmetadata:\n  name: {name}\n")
}

fn pod_yaml(name: &str, node: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  nodeName: {node}\n  containers:\n  - name: c\n    image: busybox:1.36\n    envFrom: [{{configMapRef: {{name: app-config}}}}]\n    volumeMounts: [{{name: s, mountPath: /s}}]\n  volumes:\n  - name: s\n    secret: {{secretName: app-secret}}\n"
    )
}

fn has(out: &str, name: &str) -> bool {
    names(out).iter().any(|n| n == name)
}

const T: Duration = Duration::from_secs(30);

#[test]
fn join_is_refused_clearly_for_bad_tokens() {
    let cc = CloudCore::start();
    // Not joined and no token: configuration error.
    let (code, e) = EdgeCore::join_fails(cc.sync_addr, "s1", None);
    assert_eq!(code, 64, "{e}");
    assert!(e.contains("--join-token"), "{e}");
    // A token works once.
    let token = cc.join_token("s1", "10m");
    let edge = EdgeCore::join(&cc, "s1", &token);
    let (code, e) = EdgeCore::join_fails(cc.sync_addr, "s1", Some(&token));
    assert_ne!(code, 0);
    assert!(e.contains("already used"), "{e}");
    // Wrong site.
    let t2 = cc.join_token("s2", "10m");
    let (_, e) = EdgeCore::join_fails(cc.sync_addr, "s3", Some(&t2));
    assert!(e.contains("is for site \"s2\""), "{e}");
    // Expired.
    let t3 = cc.join_token("s3", "1s");
    // The clock is what is under test here: let the token's lifetime pass.
    let expiry = std::time::Instant::now() + Duration::from_millis(2100);
    wait_for("the token's lifetime to pass", T, || {
        std::time::Instant::now() >= expiry
    });
    let (_, e) = EdgeCore::join_fails(cc.sync_addr, "s3", Some(&t3));
    assert!(e.contains("expired"), "{e}");
    // A token pinning another CA: the edge refuses the cloud.
    let other = CloudCore::start();
    let foreign = other.join_token("s4", "10m");
    let secret = cc.join_token("s4", "10m");
    let mixed = format!(
        "{}.{}",
        secret.rsplit_once('.').unwrap().0,
        foreign.rsplit_once('.').unwrap().1
    );
    let (_, e) = EdgeCore::join_fails(cc.sync_addr, "s4", Some(&mixed));
    assert!(e.contains("CA"), "{e}");
    // The joined site is still serving (restarts without a token are asserted in the rotation
    // test).
    edge.kubectl_ok(&["get", "ns"]);
}

#[test]
fn two_sites_downlink_uplink_authority_and_isolation() {
    let cc = CloudCore::start();
    let e1 = EdgeCore::join(&cc, "s1", &cc.join_token("s1", "10m"));
    let e2 = EdgeCore::join(&cc, "s2", &cc.join_token("s2", "10m"));
    // Nodes registered at each edge appear at the cloud with the site label.
    e1.kubectl_ok(&[
        "apply",
        "-f",
        &write(e1.dir.path(), "n.yaml", &node_yaml("n1")),
    ]);
    e2.kubectl_ok(&[
        "apply",
        "-f",
        &write(e2.dir.path(), "n.yaml", &node_yaml("n2")),
    ]);
    wait_for("nodes at the cloud", T, || {
        let out = cc.kubectl_ok(&["get", "nodes", "-l", "atoll.io/site=s1"]);
        has(&out, "n1")
            && has(
                &cc.kubectl_ok(&["get", "nodes", "-l", "atoll.io/site=s2"]),
                "n2",
            )
    });
    wait_for("edge sites connected with their nodes", T, || {
        let out = cc.kubectl_ok(&["get", "edgesites"]);
        out.lines()
            .filter(|l| l.contains(" True ") && l.split_whitespace().nth(2) == Some("1"))
            .count()
            == 2
    });
    assert_eq!(
        cc.kubectl_ok(&["get", "edgesites"])
            .lines()
            .next()
            .unwrap()
            .split_whitespace()
            .collect::<Vec<_>>(),
        ["NAME", "CONNECTED", "NODES", "LAST-SEEN", "AGE"]
    );
    // A pod placed on n1 goes to s1 with what it references, and to no other site.
    cc.kubectl_ok(&["create", "configmap", "app-config", "--from-literal=k=v"]);
    cc.kubectl_ok(&[
        "create",
        "secret",
        "generic",
        "app-secret",
        "--from-literal=p=q",
    ]);
    cc.kubectl_ok(&["create", "configmap", "unrelated"]);
    cc.kubectl_ok(&[
        "apply",
        "-f",
        &write(cc.dir.path(), "p.yaml", &pod_yaml("web", "n1")),
    ]);
    wait_for("the pod at s1", T, || {
        has(&e1.kubectl_ok(&["get", "pods"]), "web")
    });
    assert!(has(&e1.kubectl_ok(&["get", "cm"]), "app-config"));
    assert!(has(&e1.kubectl_ok(&["get", "secrets"]), "app-secret"));
    assert!(!has(&e1.kubectl_ok(&["get", "cm"]), "unrelated"));
    assert!(
        !has(&e2.kubectl_ok(&["get", "pods"]), "web"),
        "s2 must not see s1's pod"
    );
    assert!(!has(&e2.kubectl_ok(&["get", "cm"]), "app-config"));
    // Status written at the edge reaches the cloud.
    e1.kubectl_ok(&[
        "patch",
        "pod",
        "web",
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status":{"phase":"Running","podIP":"10.9.0.2"}}"#,
    ]);
    wait_for("pod status at the cloud", T, || {
        cc.kubectl_ok(&["get", "pod", "web", "-o", "jsonpath={.status.podIP}"]) == "10.9.0.2"
    });
    // The cloud owns the spec: a spec write at the edge is refused, clearly.
    let e = err(e1.kubectl(&["label", "pod", "web", "x=y"]), &["label"]);
    assert!(e.contains("owned by the cloud"), "{e}");
    // Objects created at the edge reach the cloud marked with their origin.
    e1.kubectl_ok(&["create", "configmap", "edge-made", "--from-literal=a=1"]);
    wait_for("edge-made configmap at the cloud", T, || {
        cc.kubectl(&["get", "cm", "edge-made"]).status.success()
    });
    assert_eq!(
        cc.kubectl_ok(&[
            "get",
            "cm",
            "edge-made",
            "-o",
            "jsonpath={.metadata.annotations.edge\\.atoll\\.io/origin}"
        ]),
        "s1"
    );
    // Deleting at the cloud deletes at the edge.
    cc.kubectl_ok(&["delete", "pod", "web", "--grace-period=0", "--force"]);
    wait_for("the pod gone at s1", T, || {
        !has(&e1.kubectl_ok(&["get", "pods"]), "web")
    });
    // Tenants: the tenant kubeconfig works at the edge by changing only the server URL.
    cc.kubectl_ok(&[
        "apply",
        "-f",
        &write(
            cc.dir.path(),
            "t.yaml",
            "apiVersion: v1\nkind: Tenant\nmetadata: {name: acme}\n",
        ),
    ]);
    let out = std::process::Command::new(tests::bin("cloud-core"))
        .args(["kubeconfig", "--kubeconfig"])
        .arg(cc.kubeconfig())
        .args(["--tenant", "acme"])
        .output()
        .unwrap();
    let tenant_kc = String::from_utf8_lossy(&out.stdout).replace(
        &format!("https://{}", cc.addr),
        &format!("https://{}", e1.addr),
    );
    let tkc = cc.dir.path().join("acme-at-s1.kubeconfig");
    std::fs::write(&tkc, tenant_kc).unwrap();
    let acme_cloud = cc.dir.path().join("acme.kubeconfig");
    std::fs::write(&acme_cloud, &out.stdout).unwrap();
    let scratch = cc.dir.path().join("acme");
    let as_acme = |args: &[&str]| tests::ok(kubectl(&acme_cloud, &scratch, args, None), args);
    as_acme(&["create", "configmap", "app-config"]);
    as_acme(&["create", "secret", "generic", "app-secret"]);
    as_acme(&[
        "create",
        "-f",
        &write(cc.dir.path(), "tp.yaml", &pod_yaml("acme-web", "n1")),
    ]);
    // A system-space pod at the same site, which the tenant must not see.
    cc.kubectl_ok(&[
        "create",
        "-f",
        &write(cc.dir.path(), "sp.yaml", &pod_yaml("sys-web", "n1")),
    ]);
    wait_for("both pods at s1", T, || {
        let o = kubectl(&tkc, &scratch, &["get", "pods"], None);
        o.status.success()
            && has(&String::from_utf8_lossy(&o.stdout), "acme-web")
            && has(&e1.kubectl_ok(&["get", "pods"]), "sys-web")
    });
    let pods = tests::ok(kubectl(&tkc, &scratch, &["get", "pods"], None), &[]);
    assert_eq!(
        names(&pods),
        vec!["acme-web"],
        "the tenant sees only its own pods at the site"
    );
    let e = String::from_utf8_lossy(&kubectl(&tkc, &scratch, &["get", "nodes"], None).stderr)
        .into_owned();
    assert!(e.contains("orbidden"), "{e}");
}

#[test]
fn offline_edge_keeps_serving_and_both_sides_converge() {
    let mut cc = CloudCore::start();
    let mut e1 = EdgeCore::join(&cc, "s1", &cc.join_token("s1", "10m"));
    e1.kubectl_ok(&[
        "apply",
        "-f",
        &write(e1.dir.path(), "n.yaml", &node_yaml("n1")),
    ]);
    cc.kubectl_ok(&["create", "configmap", "app-config"]);
    cc.kubectl_ok(&["create", "secret", "generic", "app-secret"]);
    cc.kubectl_ok(&[
        "apply",
        "-f",
        &write(cc.dir.path(), "a.yaml", &pod_yaml("a", "n1")),
    ]);
    wait_for("pod a at the edge", T, || {
        has(&e1.kubectl_ok(&["get", "pods"]), "a")
    });

    // Cloud down: the edge serves reads and takes edge-owned writes; they survive an edge
    // restart while still offline.
    cc.kill9();
    assert!(has(&e1.kubectl_ok(&["get", "pods"]), "a"));
    e1.kubectl_ok(&["create", "configmap", "while-cloud-down"]);
    e1.kubectl_ok(&[
        "patch",
        "pod",
        "a",
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status":{"phase":"Running"}}"#,
    ]);
    e1.restart();
    assert!(has(&e1.kubectl_ok(&["get", "cm"]), "while-cloud-down"));
    cc.restart();
    wait_for(
        "the offline writes at the cloud",
        Duration::from_secs(60),
        || {
            cc.kubectl(&["get", "cm", "while-cloud-down"])
                .status
                .success()
                && cc.kubectl_ok(&["get", "pod", "a", "-o", "jsonpath={.status.phase}"])
                    == "Running"
        },
    );

    // Edge down: the cloud keeps accepting changes for the site; they arrive after restart,
    // deletions included.
    e1.kill9();
    cc.kubectl_ok(&[
        "apply",
        "-f",
        &write(cc.dir.path(), "b.yaml", &pod_yaml("b", "n1")),
    ]);
    cc.kubectl_ok(&["delete", "pod", "a", "--grace-period=0", "--force"]);
    e1.restart();
    wait_for("edge converged", Duration::from_secs(60), || {
        let pods = e1.kubectl_ok(&["get", "pods"]);
        has(&pods, "b") && !has(&pods, "a")
    });
    // Nothing duplicated at the cloud.
    assert_eq!(
        names(&cc.kubectl_ok(&[
            "get",
            "cm",
            "--field-selector",
            "metadata.name=while-cloud-down"
        ])),
        vec!["while-cloud-down"]
    );
}

#[test]
fn site_connected_condition_follows_the_site() {
    let cc = CloudCore::start();
    let mut e1 = EdgeCore::join(&cc, "s1", &cc.join_token("s1", "10m"));
    let connected = |want: &str| tests::site_connected(&cc, "s1") == want;
    wait_for("Connected=True", T, || connected("True"));
    e1.kill9();
    let gone = std::time::Instant::now();
    wait_for("Connected=False", Duration::from_secs(25), || {
        connected("False")
    });
    assert!(
        gone.elapsed() <= Duration::from_secs(20),
        "went False after {:?}",
        gone.elapsed()
    );
    e1.restart();
    wait_for("Connected=True again", T, || connected("True"));
}

#[test]
fn certificates_rotate_before_expiry_without_dropping_the_site() {
    let cc = CloudCore::start_with(&["--site-cert-ttl", "30s"]);
    let mut e1 = EdgeCore::join(&cc, "s1", &cc.join_token("s1", "10m"));
    let site_json = e1.dir.path().join("pki/site.json");
    let creds = || -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(&site_json).unwrap()).unwrap()
    };
    let first = creds();
    let connected = || tests::site_connected(&cc, "s1") == "True";
    wait_for("Connected", T, connected);
    // Renewal at two thirds of 30 s, over the live connection.
    wait_for("renewed certificates", Duration::from_secs(40), || {
        creds()["client_cert"] != first["client_cert"]
    });
    let renewed = creds();
    assert_ne!(renewed["serving_cert"], first["serving_cert"]);
    assert!(renewed["not_after"].as_i64() > first["not_after"].as_i64());
    assert_eq!(
        e1.log().matches("connected to the cloud").count(),
        1,
        "renewal must not drop the connection"
    );
    assert!(connected());
    // The edge API keeps serving (now with the new certificate), and a restart uses the new
    // client certificate.
    e1.kubectl_ok(&["get", "ns"]);
    e1.restart();
    wait_for("connected again after the restart", T, || {
        e1.log().matches("connected to the cloud").count() == 2
    });
    wait_for("Connected after restart", T, connected);
    assert_eq!(creds()["client_cert"], renewed["client_cert"]);
    // Its successor is in use now: the first certificate stops working, though it has not
    // expired.
    let old = (
        first["client_cert"].as_str().unwrap().as_bytes().to_vec(),
        first["client_key"].as_str().unwrap().as_bytes().to_vec(),
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    wait_for("the replaced certificate to be refused", T, || {
        rt.block_on(RawSite::hello(&cc, &old.0, &old.1, "s1"))
            .err()
            .is_some_and(|e| e.contains("no valid certificate"))
    });
    assert!(connected());
}

#[test]
fn deleting_an_edge_site_revokes_its_certificates_and_ends_its_session() {
    let cc = CloudCore::start();
    let mut e1 = EdgeCore::join(&cc, "s1", &cc.join_token("s1", "10m"));
    wait_for("Connected", T, || {
        tests::site_connected(&cc, "s1") == "True"
    });
    let (cert, key) = site_creds(e1.dir.path());
    let rt = tokio::runtime::Runtime::new().unwrap();
    cc.kubectl_ok(&["delete", "edgesite", "s1"]);
    // The live session ends at once, with the reason.
    wait_for("the session to end", T, || {
        e1.log().contains("certificate revoked")
    });
    let refused = rt
        .block_on(RawSite::hello(&cc, &cert, &key, "s1"))
        .err()
        .expect("a deleted site's certificate must be refused");
    assert!(refused.contains("no valid certificate"), "{refused}");
    // A new EdgeSite of the same name is another site: the old certificate stays refused, and
    // the old edge-core does not get back in.
    let _ = cc.join_token("s1", "10m");
    assert!(rt.block_on(RawSite::hello(&cc, &cert, &key, "s1")).is_err());
    e1.restart();
    wait_for("the old edge-core to be refused", T, || {
        e1.log().contains("no valid certificate")
    });
    assert_ne!(tests::site_connected(&cc, "s1"), "True");
}
