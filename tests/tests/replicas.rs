//! Two cloud-core replicas on one real etcd are one region: the same CA and credentials, a
//! write through one is read and watched through the other, and the controllers run on one of
//! them at a time, moving to the survivor when the leader is killed.

use std::time::{Duration, Instant};

use futures_util::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, PostParams, WatchEvent, WatchParams};
use tests::etcd::Etcd;
use tests::CloudCore;

fn replica(etcd: &Etcd) -> CloudCore {
    CloudCore::start_with(&["--etcd-servers", &etcd.url()])
}

/// `kubeconfig` pointed at another server.
fn retarget(kubeconfig: &std::path::Path, to: std::net::SocketAddr, out: &std::path::Path) {
    let text = std::fs::read_to_string(kubeconfig).unwrap();
    let from = tests::server_addr(kubeconfig).unwrap();
    std::fs::write(out, text.replace(&from.to_string(), &to.to_string())).unwrap();
}

fn leads(cc: &CloudCore) -> bool {
    cc.log().lines().filter(|l| l.contains(" leader ")).count()
        > cc.log()
            .lines()
            .filter(|l| l.contains("leadership lost"))
            .count()
}

#[tokio::test(flavor = "multi_thread")]
async fn two_replicas_on_one_etcd_are_one_region() {
    let etcd = Etcd::start();
    let a = replica(&etcd);
    let b = replica(&etcd);
    assert_eq!(
        std::fs::read(a.dir.path().join("pki/ca.crt")).unwrap(),
        std::fs::read(b.dir.path().join("pki/ca.crt")).unwrap(),
        "a replica on a fresh data dir serves with the region's CA"
    );
    // A's kubeconfig is accepted by B.
    let a_at_b = b.dir.path().join("a-at-b.kubeconfig");
    retarget(&a.kubeconfig(), b.addr, &a_at_b);
    let ns = tests::ok(
        tests::kubectl(
            &a_at_b,
            b.dir.path(),
            &["get", "ns", "default", "-o", "name"],
            None,
        ),
        &["get ns via b"],
    );
    assert_eq!(ns.trim(), "namespace/default");

    // A watch on B sees a write through A; a read through B right after it sees it too.
    let at_b: Api<ConfigMap> = Api::namespaced(b.client().await, "default");
    let mut w = at_b
        .watch(&WatchParams::default(), "0")
        .await
        .unwrap()
        .boxed();
    for i in 0..20 {
        a.kubectl_ok(&["create", "configmap", &format!("c{i}")]);
        b.kubectl_ok(&["get", "configmap", &format!("c{i}")]);
    }
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while seen.len() < 20 {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, w.try_next()).await {
            Ok(Ok(Some(WatchEvent::Added(c)))) => seen.push(c.metadata.name.unwrap_or_default()),
            Ok(Ok(Some(_))) => {}
            other => panic!("watch on b ended after {seen:?}: {other:?}"),
        }
    }
    let want: Vec<String> = (0..20).map(|i| format!("c{i}")).collect();
    assert_eq!(seen, want, "every event once, in order");
    // A create through B of a name A holds conflicts: one store.
    let dup = at_b
        .create(
            &PostParams::default(),
            &serde_json::from_value(serde_json::json!({"metadata": {"name": "c0"}})).unwrap(),
        )
        .await;
    assert!(
        matches!(dup, Err(kube::Error::Api(ref e)) if e.code == 409),
        "{dup:?}"
    );

    // Interleaved patches through both replicas of one object all land.
    for i in 0..10 {
        let v = format!("v{i}");
        a.kubectl_ok(&[
            "annotate",
            "configmap",
            "c0",
            &format!("a={v}"),
            "--overwrite",
        ]);
        b.kubectl_ok(&["label", "configmap", "c0", &format!("b={v}"), "--overwrite"]);
    }
    assert_eq!(
        b.kubectl_ok(&[
            "get",
            "configmap",
            "c0",
            "-o",
            "jsonpath={.metadata.annotations.a}/{.metadata.labels.b}"
        ]),
        "v9/v9"
    );

    // One leader; killed, the other takes the controllers over.
    tests::wait_for("a leader", Duration::from_secs(20), || {
        leads(&a) || leads(&b)
    });
    assert!(!(leads(&a) && leads(&b)), "two leaders");
    let (mut leader, survivor) = if leads(&a) { (a, b) } else { (b, a) };
    leader.kill9();
    let t = Instant::now();
    tests::wait_for("the survivor to lead", Duration::from_secs(20), || {
        leads(&survivor)
    });
    let took = t.elapsed();
    assert!(took < Duration::from_secs(15), "takeover took {took:?}");
    let deploy = survivor.dir.path().join("d.yaml");
    std::fs::write(
        &deploy,
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec:\n  replicas: 3\n  selector: {matchLabels: {app: web}}\n  template:\n    metadata: {labels: {app: web}}\n    spec: {containers: [{name: c, image: busybox}]}\n",
    )
    .unwrap();
    survivor.kubectl_ok(&["apply", "-f", deploy.to_str().unwrap()]);
    tests::wait_for("the deployment's pods", Duration::from_secs(30), || {
        tests::names(&survivor.kubectl_ok(&["get", "pods", "-l", "app=web"])).len() == 3
    });
    let rs = tests::names(&survivor.kubectl_ok(&["get", "replicasets", "-l", "app=web"]));
    assert_eq!(rs.len(), 1, "one ReplicaSet: {rs:?}");
}

/// A site given both replicas (`--cloud A,B`) moves to the other when the one it is connected
/// to is killed, and changes flow both ways through the survivor.
#[tokio::test(flavor = "multi_thread")]
async fn a_site_moves_to_the_surviving_replica() {
    let etcd = Etcd::start();
    let mut a = replica(&etcd);
    let b = replica(&etcd);
    let edge = tests::EdgeCore::join_any(&[&a, &b], "s1", &a.join_token("s1", "10m"));
    let node = edge.dir.path().join("n.yaml");
    std::fs::write(&node, "apiVersion: v1\nkind: Node\nmetadata: {name: n1}\n").unwrap();
    edge.kubectl_ok(&["apply", "-f", node.to_str().unwrap()]);
    tests::wait_for("n1 at the cloud", Duration::from_secs(30), || {
        b.kubectl(&["get", "node", "n1"]).status.success()
    });
    edge.kubectl_ok(&["create", "configmap", "before"]);
    tests::wait_for(
        "the site's configmap at the cloud",
        Duration::from_secs(30),
        || b.kubectl(&["get", "configmap", "before"]).status.success(),
    );
    // The site went to the first replica that answered: a.
    let at = |cc: &CloudCore| {
        edge.log()
            .lines()
            .any(|l| l.contains("connected to the cloud") && l.contains(&cc.sync_addr.to_string()))
    };
    assert!(at(&a) && !at(&b), "{}", edge.log());
    a.kill9();
    let t = Instant::now();
    // Cloud to site through b: a pod for the site's node.
    let pod = b.dir.path().join("p.yaml");
    std::fs::write(
        &pod,
        "apiVersion: v1\nkind: Pod\nmetadata: {name: web}\nspec: {nodeName: n1, containers: [{name: c, image: busybox}]}\n",
    )
    .unwrap();
    b.kubectl_ok(&["apply", "-f", pod.to_str().unwrap()]);
    tests::wait_for("the pod at the site", Duration::from_secs(40), || {
        edge.kubectl(&["get", "pod", "web"]).status.success()
    });
    // Site to cloud through b.
    edge.kubectl_ok(&["create", "configmap", "after"]);
    tests::wait_for(
        "the site's new configmap at the cloud",
        Duration::from_secs(30),
        || b.kubectl(&["get", "configmap", "after"]).status.success(),
    );
    eprintln!(
        "site converged through the survivor {:?} after the kill",
        t.elapsed()
    );
    assert!(at(&b), "{}", edge.log());
}

/// kill -9 of a replica in the middle of write streams through it and through the other: every
/// acknowledged write is there, and a watch on the survivor sees every event once, in order.
#[tokio::test(flavor = "multi_thread")]
async fn a_replica_killed_mid_stream_loses_no_acknowledged_write() {
    let etcd = Etcd::start();
    let mut a = replica(&etcd);
    let b = replica(&etcd);
    let at_a: Api<ConfigMap> = Api::namespaced(a.client().await, "default");
    let at_b: Api<ConfigMap> = Api::namespaced(b.client().await, "default");
    let rv = at_b
        .list(&Default::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let mut w = at_b
        .watch(&WatchParams::default(), &rv)
        .await
        .unwrap()
        .boxed();
    let cm = |n: String| -> ConfigMap {
        serde_json::from_value(serde_json::json!({"metadata": {"name": n}})).unwrap()
    };
    let writer = |api: Api<ConfigMap>, prefix: &'static str| {
        tokio::spawn(async move {
            let mut acked = Vec::new();
            for i in 0..150 {
                let name = format!("{prefix}{i:03}");
                match api.create(&PostParams::default(), &cm(name.clone())).await {
                    Ok(_) => acked.push(name),
                    Err(_) => break,
                }
            }
            acked
        })
    };
    let wa = writer(at_a, "a");
    let wb = writer(at_b.clone(), "b");
    tests::wait_for("a's stream under way", Duration::from_secs(30), || {
        tests::names(&b.kubectl_ok(&["get", "configmaps"]))
            .iter()
            .filter(|n| n.starts_with('a'))
            .count()
            >= 30
    });
    a.kill9();
    let (acked_a, acked_b) = (wa.await.unwrap(), wb.await.unwrap());
    assert!(
        acked_a.len() < 150,
        "the kill came too late to test anything"
    );
    assert_eq!(acked_b.len(), 150, "the survivor's stream went on");
    let listed = tests::names(&b.kubectl_ok(&["get", "configmaps"]));
    for n in acked_a.iter().chain(&acked_b) {
        assert!(listed.contains(n), "acknowledged {n} missing");
    }
    // The watch: every created object once, in revision order, each writer's in its order.
    let mut seen: Vec<(u64, String)> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    let want = listed
        .iter()
        .filter(|n| n.starts_with('a') || n.starts_with('b'))
        .count();
    while seen.len() < want {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, w.try_next()).await {
            Ok(Ok(Some(WatchEvent::Added(c)))) => seen.push((
                c.metadata.resource_version.unwrap().parse().unwrap(),
                c.metadata.name.unwrap(),
            )),
            Ok(Ok(Some(_))) => {}
            other => panic!("watch ended after {} of {want}: {other:?}", seen.len()),
        }
    }
    assert!(seen.windows(2).all(|p| p[0].0 < p[1].0), "revision order");
    let names: Vec<&String> = seen.iter().map(|(_, n)| n).collect();
    let unique: std::collections::BTreeSet<&String> = names.iter().copied().collect();
    assert_eq!(unique.len(), names.len(), "an event seen twice");
    for prefix in ["a", "b"] {
        let mine: Vec<&&String> = names.iter().filter(|n| n.starts_with(prefix)).collect();
        assert!(
            mine.windows(2).all(|p| p[0] < p[1]),
            "{prefix}'s writes out of order"
        );
    }
}
