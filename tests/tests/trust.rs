//! The site trust boundary: a site is less trusted than the region. The edge API refuses at
//! once what the cloud would refuse; the hub accepts from a site only what is the site's, even
//! from a hostile site speaking raw frames with its real certificate; a refused change is
//! acknowledged, shown at both tiers, and leaves no diverging copy at the edge.

use std::time::Duration;

use proto::sync::{Change, ChangeKind, ObjectKey};
use serde_json::json;
use tests::rawsite::{key, site_creds, RawSite};
use tests::{err, names, wait_for, CloudCore, EdgeCore};

const T: Duration = Duration::from_secs(30);

fn write(dir: &std::path::Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.to_string_lossy().into_owned()
}

fn node_ready(edge: &EdgeCore, name: &str) {
    edge.kubectl_ok(&[
        "apply",
        "-f",
        &write(
            edge.dir.path(),
            &format!("{name}.yaml"),
            &format!("apiVersion: v1\nkind: Node\nmetadata: {{name: {name}}}\n"),
        ),
    ]);
}

fn exists(cc: &CloudCore, args: &[&str]) -> bool {
    let mut a = vec!["get"];
    a.extend_from_slice(args);
    cc.kubectl(&a).status.success()
}

/// UplinkRefused events on EdgeSite `site` at the cloud (their messages).
fn refusal_events(cc: &CloudCore, site: &str) -> String {
    cc.kubectl_ok(&[
        "get",
        "events",
        "-n",
        "default",
        "--field-selector",
        &format!("involvedObject.kind=EdgeSite,involvedObject.name={site},reason=UplinkRefused"),
        "-o",
        "jsonpath={range .items[*]}{.message}{\"\\n\"}{end}",
    ])
}

#[test]
fn the_edge_refuses_at_once_what_the_cloud_would_refuse() {
    let cc = CloudCore::start();
    let e1 = EdgeCore::join(&cc, "s1", &cc.join_token("s1", "10m"));
    let e2 = EdgeCore::join(&cc, "s2", &cc.join_token("s2", "10m"));
    node_ready(&e2, "n2");
    cc.kubectl_ok(&[
        "create",
        "-f",
        &write(
            cc.dir.path(),
            "zeta.yaml",
            "apiVersion: v1\nkind: Tenant\nmetadata: {name: zeta}\n",
        ),
    ]);
    wait_for("n2 at the cloud", T, || exists(&cc, &["node", "n2"]));
    let refused = |args: &[&str], want: &str| {
        let e = err(e1.kubectl(args), args);
        // kubectl create deployment prints the message alone; the others say Forbidden (403).
        assert!(
            e.contains(want) && (e.contains("Forbidden") || args[1] == "deployment"),
            "{args:?}: {e}"
        );
    };
    let dir = e1.dir.path();
    let f = |name: &str, text: &str| write(dir, name, text);
    refused(
        &[
            "create",
            "--raw",
            "/api/v1/tenants",
            "-f",
            &f(
                "t.json",
                r#"{"apiVersion": "v1", "kind": "Tenant", "metadata": {"name": "evil"}}"#,
            ),
        ],
        "tenants cannot be created at edge site s1",
    );
    refused(
        &[
            "create",
            "-f",
            &f(
                "es.yaml",
                "apiVersion: edge.atoll.io/v1\nkind: EdgeSite\nmetadata: {name: evil}\n",
            ),
        ],
        "edgesites cannot be created at edge site s1",
    );
    refused(
        &["create", "namespace", "fresh"],
        "namespaces cannot be created",
    );
    refused(
        &["create", "deployment", "d", "--image=busybox"],
        "deployments cannot be created",
    );
    refused(
        &[
            "create",
            "--raw",
            "/api/v1/tenants/zeta/namespaces/default/configmaps",
            "-f",
            &f(
                "cm.json",
                r#"{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}}"#,
            ),
        ],
        "edge site s1 does not serve tenant \"zeta\"",
    );
    refused(
        &[
            "create",
            "-f",
            &f(
                "p.yaml",
                "apiVersion: v1\nkind: Pod\nmetadata: {name: on-s2}\nspec: {nodeName: n2, containers: [{name: c, image: busybox}]}\n",
            ),
        ],
        "not one of the site's nodes",
    );
    refused(
        &[
            "create",
            "-f",
            &f(
                "p2.yaml",
                "apiVersion: v1\nkind: Pod\nmetadata: {name: placed, annotations: {atoll.io/site: s2}}\nspec: {containers: [{name: c, image: busybox}]}\n",
            ),
        ],
        "cannot be placed on site \"s2\"",
    );
    // What a site may create still goes up.
    e1.kubectl_ok(&["create", "configmap", "fine", "--from-literal=a=1"]);
    wait_for("the site's configmap at the cloud", T, || {
        exists(&cc, &["cm", "fine"])
    });
    assert!(!exists(&cc, &["tenant", "evil"]));
    assert!(!exists(&cc, &["edgesite", "evil"]));
    assert!(!exists(&cc, &["namespace", "fresh"]));
    assert!(!exists(&cc, &["deployment", "d"]));
    assert!(!exists(&cc, &["pod", "on-s2"]));
    // The cloud refuses to change what the site owns (it may ask for its deletion).
    let args = ["label", "cm", "fine", "x=y"];
    let e = err(cc.kubectl(&args), &args);
    assert!(e.contains("was created at edge site s1"), "{e}");
}

/// Every change a hostile site sends with its real certificate that is not its own is
/// refused, acknowledged (the stream moves on) and shown on its EdgeSite; what is its own is
/// accepted, validated as an API create would be.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_site_with_its_real_certificate_gets_only_what_is_its_own() {
    let cc = CloudCore::start();
    let mut e1 = EdgeCore::join(&cc, "s1", &cc.join_token("s1", "10m"));
    let e2 = EdgeCore::join(&cc, "s2", &cc.join_token("s2", "10m"));
    node_ready(&e1, "n1");
    node_ready(&e2, "n2");
    wait_for("both nodes at the cloud", T, || {
        names(&cc.kubectl_ok(&["get", "nodes"])).len() == 2
    });
    let dir = cc.dir.path();
    cc.kubectl_ok(&[
        "create",
        "-f",
        &write(
            dir,
            "zeta.yaml",
            "apiVersion: v1\nkind: Tenant\nmetadata: {name: zeta}\n",
        ),
    ]);
    cc.kubectl_ok(&[
        "create",
        "secret",
        "generic",
        "cloud-secret",
        "--from-literal=k=v",
    ]);
    let pod = |name: &str, node: &str| {
        format!("apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec: {{nodeName: {node}, containers: [{{name: c, image: busybox}}]}}\n")
    };
    cc.kubectl_ok(&["create", "-f", &write(dir, "p1.yaml", &pod("p1", "n1"))]);
    cc.kubectl_ok(&["create", "-f", &write(dir, "p2.yaml", &pod("at-s2", "n2"))]);
    e1.kill9();
    let (cert, key_pem) = site_creds(e1.dir.path());
    let mut s = RawSite::hello(&cc, &cert, &key_pem, "s1")
        .await
        .expect("s1's own certificate is accepted");

    let obj = |v: serde_json::Value| v;
    let token_hash = {
        use sha2::Digest;
        sha2::Sha256::digest(b"evil-token")
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    };
    let hostile: Vec<(ChangeKind, ObjectKey, serde_json::Value, &str)> = vec![
        (
            ChangeKind::Put,
            key("tenants", "", "", "evil"),
            obj(json!({"apiVersion": "v1", "kind": "Tenant", "metadata": {"name": "evil"}})),
            "may not create or replace tenants",
        ),
        (
            ChangeKind::Put,
            key("edgesites.edge.atoll.io", "", "", "evil"),
            obj(
                json!({"apiVersion": "edge.atoll.io/v1", "kind": "EdgeSite", "metadata": {"name": "evil"}}),
            ),
            "may not create or replace edgesites",
        ),
        (
            ChangeKind::Put,
            key("namespaces", "", "", "fresh"),
            obj(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "fresh"}})),
            "may not create or replace namespaces",
        ),
        // Internal records: a region admin token, another site's sequence, a certificate.
        (
            ChangeKind::Put,
            key("tokens", "", "", &token_hash),
            obj(
                json!({"metadata": {"name": token_hash}, "tenant": "", "user": "evil", "groups": ["system:masters"]}),
            ),
            "is not an API resource",
        ),
        (
            ChangeKind::Put,
            key("siteseqs", "", "", "s2"),
            obj(json!({"metadata": {"name": "s2"}, "seq": 1000000})),
            "is not an API resource",
        ),
        (
            ChangeKind::Put,
            key("sitecerts", "", "", "00"),
            obj(json!({"metadata": {"name": "00"}, "site": "s2"})),
            "is not an API resource",
        ),
        (
            ChangeKind::Put,
            key("configmaps", "zeta", "default", "x"),
            obj(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}})),
            "does not serve tenant \"zeta\"",
        ),
        (
            ChangeKind::Put,
            key("nodes", "", "", "n2"),
            obj(json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n2"}})),
            "belongs to site \"s2\"",
        ),
        (
            ChangeKind::Put,
            key("pods", "", "default", "onto-n2"),
            obj(
                json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "onto-n2"},
                "spec": {"nodeName": "n2", "containers": [{"name": "c", "image": "busybox"}]}}),
            ),
            "only to the site's own nodes",
        ),
        // What the API would refuse is refused too, with the API's reason.
        (
            ChangeKind::Put,
            key("pods", "", "default", "invalid"),
            obj(
                json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "invalid"}, "spec": {"containers": []}}),
            ),
            "spec.containers",
        ),
        (
            ChangeKind::Put,
            key("configmaps", "", "default", "p1"),
            obj(json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p1"}})),
            "ConfigMap",
        ),
        (
            ChangeKind::Status,
            key("pods", "", "default", "at-s2"),
            obj(json!({"status": {"phase": "Failed", "reason": "Forged"}})),
            "is not the site's",
        ),
        (
            ChangeKind::Delete,
            key("pods", "", "default", "p1"),
            serde_json::Value::Null,
            "did not ask for the deletion",
        ),
        (
            ChangeKind::Summary,
            key("edgesites.edge.atoll.io", "", "", "s2"),
            obj(json!({"classes": [], "nodes": 0})),
            "only its own summary",
        ),
    ];
    let mut seqs = Vec::new();
    for (kind, k, o, _) in &hostile {
        seqs.push(s.up(*kind, k.clone(), o).await);
    }
    // Its own: a configmap, and a pod on its node that names a secret of the cloud's.
    let mine = s
        .up(
            ChangeKind::Put,
            key("configmaps", "", "default", "mine"),
            &json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "mine"}, "data": {"a": "1"}}),
        )
        .await;
    let own_pod = s
        .up(
            ChangeKind::Put,
            key("pods", "", "default", "mine-pod"),
            &json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "mine-pod"},
                "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "busybox",
                    "env": [{"name": "S", "valueFrom": {"secretKeyRef": {"name": "cloud-secret", "key": "k"}}}]}]}}),
        )
        .await;
    // The run may be acknowledged in several acks: gather their refusals.
    let mut refused = Vec::new();
    let mut acked = 0;
    while acked < own_pod {
        let a = s.acked(acked + 1).await;
        acked = a.seq;
        refused.extend(a.refused);
    }
    for ((_, k, _, why), seq) in hostile.iter().zip(&seqs) {
        let r = refused
            .iter()
            .find(|r| r.seq == *seq)
            .unwrap_or_else(|| panic!("{k:?} (seq {seq}) was not refused: {refused:?}"));
        assert!(
            r.reason.contains(why),
            "{k:?}: {:?} lacks {why:?}",
            r.reason
        );
        assert!(r.absent || !r.object.is_empty(), "{k:?}");
    }
    assert!(
        !refused.iter().any(|r| r.seq == mine || r.seq == own_pod),
        "{refused:?}"
    );

    // Nothing of it reached the cloud.
    for args in [
        &["tenant", "evil"][..],
        &["edgesite", "evil"],
        &["namespace", "fresh"],
        &["pod", "onto-n2"],
        &["pod", "invalid"],
        &[
            "--raw",
            "/api/v1/tenants/zeta/namespaces/default/configmaps/x",
        ],
    ] {
        assert!(!exists(&cc, args), "{args:?} reached the cloud");
    }
    let args = ["--token", "evil-token", "get", "ns"];
    let e = err(cc.kubectl(&args), &args);
    assert!(e.contains("Unauthorized"), "{e}");
    assert_eq!(
        cc.kubectl_ok(&[
            "get",
            "node",
            "n2",
            "-o",
            "jsonpath={.metadata.labels.atoll\\.io/site}"
        ]),
        "s2"
    );
    assert_ne!(
        cc.kubectl_ok(&["get", "pod", "at-s2", "-o", "jsonpath={.status.reason}"]),
        "Forged"
    );
    assert!(exists(&cc, &["pod", "p1"]));
    // What is its own arrived, as the site's, and validated (defaults applied).
    assert_eq!(
        cc.kubectl_ok(&[
            "get",
            "cm",
            "mine",
            "-o",
            "jsonpath={.metadata.annotations.edge\\.atoll\\.io/origin}"
        ]),
        "s1"
    );
    assert_eq!(
        cc.kubectl_ok(&[
            "get",
            "pod",
            "mine-pod",
            "-o",
            "jsonpath={.spec.restartPolicy} {.status.phase}"
        ]),
        "Always Pending"
    );
    // Its pod naming the cloud's secret does not pull the secret into its share: a later
    // change in the share arrives, the secret never does.
    cc.kubectl_ok(&["label", "pod", "p1", "later=yes"]);
    s.down_until(|c: &Change| {
        c.key.as_ref().is_some_and(|k| k.name == "p1")
            && String::from_utf8_lossy(&c.object).contains("later")
    })
    .await;
    assert!(
        !s.down
            .iter()
            .any(|c| c.key.as_ref().is_some_and(|k| k.name == "cloud-secret")),
        "the cloud's secret was sent to the site"
    );
    // Each refusal is shown on the EdgeSite.
    let events = refusal_events(&cc, "s1");
    for why in [
        "may not create or replace tenants",
        "is not an API resource",
        "does not serve tenant",
    ] {
        assert!(events.contains(why), "no event for {why:?}: {events}");
    }
    s.close();
    // The other site was never disturbed.
    assert_eq!(tests::site_connected(&cc, "s2"), "True");
}

#[test]
fn a_refused_edge_write_leaves_no_diverging_copy() {
    let cc = CloudCore::start();
    let e1 = EdgeCore::join(&cc, "s1", &cc.join_token("s1", "10m"));
    // The cloud has a configmap by that name; the site, which does not hold it, makes its own.
    cc.kubectl_ok(&["create", "configmap", "taken", "--from-literal=owner=cloud"]);
    e1.kubectl_ok(&["create", "configmap", "taken", "--from-literal=owner=edge"]);
    wait_for("the edge's copy to go", T, || {
        !e1.kubectl(&["get", "cm", "taken"]).status.success()
    });
    let ev = e1.kubectl_ok(&[
        "get",
        "events",
        "--field-selector",
        "reason=RefusedByCloud,involvedObject.name=taken",
        "-o",
        "jsonpath={.items[*].message}",
    ]);
    assert!(ev.contains("is owned by the cloud"), "{ev}");
    assert!(refusal_events(&cc, "s1").contains("configmaps default/taken"));
    assert_eq!(
        cc.kubectl_ok(&["get", "cm", "taken", "-o", "jsonpath={.data.owner}"]),
        "cloud"
    );
    // The site keeps working: its next write goes up.
    e1.kubectl_ok(&["create", "configmap", "after", "--from-literal=a=1"]);
    wait_for("the next write at the cloud", T, || {
        exists(&cc, &["cm", "after"])
    });
}
