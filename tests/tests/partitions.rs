//! Tenant partitions (Arktos): a region on a system etcd and a tenant partition's etcd, both
//! real etcd processes. A tenant's objects live only in its partition's cluster; the tenant
//! itself stays in the system cluster; lists and watches across tenants merge both with a
//! resourceVersion that resumes exactly; the partition's etcd down affects only its tenants.

use std::time::Duration;

use futures_util::{StreamExt, TryStreamExt};
use kube::api::{DynamicObject, WatchEvent};
use serde_json::{json, Value};
use store::{EtcdConfig, EtcdStorage, Key, Storage};
use tests::etcd::Etcd;
use tests::{kubectl, CloudCore};

fn write(dir: &std::path::Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.to_string_lossy().into_owned()
}

/// Whether `key` is stored in the etcd at `e` (under the region's prefix).
async fn stored_in(e: &Etcd, key: &Key) -> bool {
    let s = EtcdStorage::connect(&EtcdConfig {
        endpoints: vec![e.url()],
        prefix: "/atoll".into(),
        ..EtcdConfig::default()
    })
    .await
    .expect("connect");
    s.get(key, 0).await.expect("get").1.is_some()
}

async fn get_json(client: &kube::Client, path: &str) -> Value {
    let req = http::Request::get(path).body(Vec::new()).unwrap();
    let text = client.request_text(req).await.expect(path);
    serde_json::from_str(&text).expect("json")
}

/// A watch of every tenant's configmaps from `rv`, its first `n` events.
async fn watch_all(client: &kube::Client, rv: &str, n: usize) -> Vec<WatchEvent<DynamicObject>> {
    let path =
        format!("/api/v1/tenants/all/configmaps?watch=1&resourceVersion={rv}&timeoutSeconds=10");
    let req = http::Request::get(path).body(Vec::new()).unwrap();
    let stream = client
        .request_events::<DynamicObject>(req)
        .await
        .expect("watch");
    tokio::time::timeout(Duration::from_secs(20), stream.take(n).try_collect())
        .await
        .expect("watch events in time")
        .expect("watch stream")
}

fn name_and_rv(e: &WatchEvent<DynamicObject>) -> (String, String) {
    match e {
        WatchEvent::Added(o) => (
            o.metadata.name.clone().unwrap_or_default(),
            o.metadata.resource_version.clone().unwrap_or_default(),
        ),
        other => panic!("expected ADDED, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn tenants_live_in_their_partition_and_merge_back() {
    let system = Etcd::start();
    let mut p1 = Etcd::start();
    let cc = CloudCore::start_with(&[
        "--etcd-servers",
        &system.url(),
        "--partition",
        &format!("p1={}", p1.url()),
    ]);
    let dir = cc.dir.path();
    // acme names p1; beta names none (the policy places it: with one tenant partition, p1);
    // gamma stays in the system cluster; nope names a partition that does not exist.
    let t = write(
        dir,
        "t.yaml",
        "apiVersion: v1\nkind: Tenant\nmetadata: {name: acme}\nspec: {storageClusterId: p1}\n---\n\
         apiVersion: v1\nkind: Tenant\nmetadata: {name: beta}\n---\n\
         apiVersion: v1\nkind: Tenant\nmetadata: {name: gamma}\nspec: {storageCluster: system}\n",
    );
    cc.kubectl_ok(&["apply", "-f", &t]);
    let placed = cc.kubectl_ok(&[
        "get",
        "tenants",
        "-o",
        "jsonpath={range .items[*]}{.metadata.name}={.spec.storageClusterId} {end}",
    ]);
    assert_eq!(placed.trim(), "acme=p1 beta=p1 gamma=system");
    let bad = write(
        dir,
        "bad.yaml",
        "apiVersion: v1\nkind: Tenant\nmetadata: {name: nope}\nspec: {storageClusterId: p9}\n",
    );
    let err = tests::err(cc.kubectl(&["create", "-f", &bad]), &["create nope"]);
    assert!(
        err.contains("spec.storageClusterId") && err.contains("p9"),
        "{err}"
    );
    // A tenant never moves.
    let err = tests::err(
        cc.kubectl(&[
            "patch",
            "tenant",
            "acme",
            "--type=merge",
            "-p",
            r#"{"spec":{"storageClusterId":"system"}}"#,
        ]),
        &["patch acme"],
    );
    assert!(err.contains("immutable"), "{err}");

    let acme = cc.tenant_kubeconfig("acme");
    let gamma = cc.tenant_kubeconfig("gamma");
    let as_acme = |args: &[&str]| kubectl(&acme, &dir.join("acme"), args, None);
    let as_gamma = |args: &[&str]| kubectl(&gamma, &dir.join("gamma"), args, None);
    tests::ok(as_acme(&["create", "configmap", "a1"]), &[]);
    tests::ok(as_gamma(&["create", "configmap", "g1"]), &[]);
    // Each object is in its tenant's cluster only; the tenants are in the system cluster.
    let a1 = Key::new("configmaps", "acme", "default", "a1");
    let g1 = Key::new("configmaps", "gamma", "default", "g1");
    assert!(stored_in(&p1, &a1).await && !stored_in(&system, &a1).await);
    assert!(stored_in(&system, &g1).await && !stored_in(&p1, &g1).await);
    let acme_ns = Key::new("namespaces", "acme", "", "default");
    assert!(
        stored_in(&p1, &acme_ns).await,
        "acme's namespaces are in p1"
    );
    let acme_tenant = Key::new("tenants", "", "", "acme");
    assert!(stored_in(&system, &acme_tenant).await && !stored_in(&p1, &acme_tenant).await);

    // Across tenants: both, at a position in both partitions.
    let client = cc.client().await;
    let list = get_json(&client, "/api/v1/tenants/all/configmaps").await;
    let names: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|o| o.pointer("/metadata/name").and_then(Value::as_str))
        .filter(|n| !n.starts_with("kube-root"))
        .collect();
    assert!(names.contains(&"a1") && names.contains(&"g1"), "{names:?}");
    let at = list["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        at.split('.').count(),
        2,
        "a position in both partitions: {at}"
    );
    // A single tenant's list has its partition's plain revision.
    let one = get_json(
        &client,
        "/api/v1/tenants/acme/namespaces/default/configmaps",
    )
    .await;
    assert!(one["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .parse::<u64>()
        .is_ok());

    // Two writes, one in each partition, then a watch from the list: both, exactly once; and a
    // watch resumed from the first event's resourceVersion has the second only.
    tests::ok(as_acme(&["create", "configmap", "a2"]), &[]);
    tests::ok(as_gamma(&["create", "configmap", "g2"]), &[]);
    let evs = watch_all(&client, &at, 2).await;
    let seen: Vec<(String, String)> = evs.iter().map(name_and_rv).collect();
    let mut names: Vec<&str> = seen.iter().map(|(n, _)| n.as_str()).collect();
    names.sort_unstable();
    assert_eq!(names, vec!["a2", "g2"]);
    let (first, resume) = &seen[0];
    let rest = watch_all(&client, resume, 1).await;
    let (next, _) = name_and_rv(&rest[0]);
    assert_ne!(
        &next, first,
        "resuming from {resume} replays only what came after it"
    );
    // A plain revision cannot resume a watch across partitions: 410, the client relists.
    let req = http::Request::get("/api/v1/tenants/all/configmaps?watch=1&resourceVersion=1")
        .body(Vec::new())
        .unwrap();
    let gone: Vec<_> = client
        .request_events::<DynamicObject>(req)
        .await
        .expect("watch")
        .take(1)
        .collect()
        .await;
    assert!(
        matches!(&gone[0], Ok(WatchEvent::Error(e)) if e.code == 410),
        "{gone:?}"
    );

    // An object as a watch across partitions delivered it updates with that resourceVersion.
    let rv_a2 = seen
        .iter()
        .find(|(n, _)| n == "a2")
        .map(|(_, rv)| rv.clone())
        .unwrap();
    let req = http::Request::put("/api/v1/tenants/acme/namespaces/default/configmaps/a2")
        .header("content-type", "application/json")
        .body(
            serde_json::to_vec(&json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "a2", "resourceVersion": rv_a2}, "data": {"k": "v"}}))
            .unwrap(),
        )
        .unwrap();
    client
        .request_text(req)
        .await
        .expect("update with a position");

    // p1's etcd down: acme fails clearly, gamma and the system space go on.
    p1.kill9();
    let out = as_acme(&["create", "configmap", "during"]);
    assert!(!out.status.success());
    let msg = String::from_utf8_lossy(&out.stderr);
    assert!(msg.contains("unavailable"), "{msg}");
    tests::ok(as_gamma(&["create", "configmap", "g3"]), &[]);
    cc.kubectl_ok(&["get", "tenants"]);
    cc.kubectl_ok(&["create", "configmap", "sys"]);
    p1.restart();
    tests::wait_for("acme served again", Duration::from_secs(30), || {
        as_acme(&["get", "configmap", "a1"]).status.success()
    });
    assert!(!as_acme(&["get", "configmap", "during"]).status.success());
    tests::ok(as_acme(&["create", "configmap", "after"]), &[]);
}
