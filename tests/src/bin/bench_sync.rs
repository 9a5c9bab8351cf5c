//! Sync benchmark (issue 3): cloud-create → visible-at-edge latency, reconnect resync time and
//! bytes for a site holding N objects of which M changed while offline, and idle bytes per
//! site per minute. The edge talks to the cloud through a counting UDP relay.
//!
//!   cargo run --release -p tests --bin bench_sync -- [--objects 10000] [--changed 100]
//!                                                    [--latency 200] [--idle-secs 60]

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use serde_json::json;
use tests::{CloudCore, EdgeCore, Relay};

fn pod(name: &str) -> Pod {
    serde_json::from_value(
        json!({"metadata": {"name": name, "labels": {"app": "bench"}},
        "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "busybox:1.36"}]}}),
    )
    .expect("pod")
}

async fn wait<F: Fn() -> bool>(what: &str, timeout: Duration, f: F) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    while !f() {
        anyhow::ensure!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    if std::env::args().any(|a| a == "--help" || a == "-h") {
        println!("bench_sync [--objects N] [--changed M] [--latency K] [--idle-secs S]");
        return Ok(());
    }
    let (objects, changed, samples, idle) = (
        tests::bench_arg("--objects", 10_000)?,
        tests::bench_arg("--changed", 100)?,
        tests::bench_arg("--latency", 200)?,
        tests::bench_arg("--idle-secs", 60)?,
    );
    let cc = CloudCore::start();
    let relay = Relay::start(cc.sync_addr);
    let mut edge = EdgeCore::join_via(&relay, "s1", &cc.join_token("s1", "10m"));
    let node = edge.dir.path().join("n.yaml");
    std::fs::write(&node, "apiVersion: v1\nkind: Node\nmetadata: {name: n1}\n")?;
    edge.kubectl_ok(&["apply", "-f", node.to_str().unwrap_or_default()]);
    let cloud: Api<Pod> = Api::namespaced(cc.client().await, "default");
    let at_edge: Api<Pod> = Api::namespaced(tests::client_for(&edge.kubeconfig()).await, "default");
    wait("n1 at the cloud", Duration::from_secs(30), || {
        cc.kubectl(&["get", "node", "n1"]).status.success()
    })
    .await?;

    // 1. Propagation latency: one create at a time, seen through a watch at the edge.
    let rv = at_edge
        .list(&ListParams::default())
        .await?
        .metadata
        .resource_version
        .unwrap_or_default();
    let mut w = at_edge.watch(&WatchParams::default(), &rv).await?.boxed();
    let mut lat = Vec::new();
    let mut create_lat = Vec::new();
    for i in 0..samples {
        let t = Instant::now();
        cloud
            .create(&PostParams::default(), &pod(&format!("lat-{i}")))
            .await?;
        create_lat.push(t.elapsed());
        loop {
            match tokio::time::timeout(Duration::from_secs(30), w.try_next()).await?? {
                Some(WatchEvent::Added(p))
                    if p.metadata.name.as_deref() == Some(&format!("lat-{i}")) =>
                {
                    break
                }
                Some(_) => {}
                None => anyhow::bail!("edge watch ended"),
            }
        }
        lat.push(t.elapsed());
    }
    println!(
        "cloud create -> visible at edge ({samples} pods, sequential): p50 {:.2} ms  p99 {:.2} ms  (of which the durable cloud create: p50 {:.2} ms)",
        tests::percentile_ms(lat.clone(), 0.5),
        tests::percentile_ms(lat, 0.99),
        tests::percentile_ms(create_lat, 0.5)
    );

    // 2. A site holding N objects; M change while it is offline.
    let total = objects.saturating_sub(samples);
    let next = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..32 {
        let (c, next) = (cloud.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= total {
                    return Ok::<_, kube::Error>(());
                }
                c.create(&PostParams::default(), &pod(&format!("obj-{i}")))
                    .await?;
            }
        }));
    }
    for t in tasks {
        t.await??;
    }
    let count_at_edge = |api: Api<Pod>| async move {
        api.list(&ListParams::default())
            .await
            .map(|l| l.items.len() as u64)
            .unwrap_or(0)
    };
    let deadline = Instant::now() + Duration::from_secs(300);
    while count_at_edge(at_edge.clone()).await < objects {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the edge never held all {objects} pods"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!("edge holds {objects} pods of the site's share");
    edge.kill9();
    for i in 0..changed {
        cloud
            .patch(
                &format!("obj-{i}"),
                &PatchParams::default(),
                &Patch::Merge(&json!({"metadata": {"labels": {"changed": "yes"}}})),
            )
            .await?;
    }
    let before = relay.bytes();
    let t = Instant::now();
    edge.restart();
    let at_edge: Api<Pod> = Api::namespaced(tests::client_for(&edge.kubeconfig()).await, "default");
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let n = at_edge
            .list(&ListParams::default().labels("changed=yes"))
            .await
            .map(|l| l.items.len() as u64)
            .unwrap_or(0);
        if n >= changed {
            break;
        }
        anyhow::ensure!(Instant::now() < deadline, "resync did not finish");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let resync = t.elapsed();
    let bytes = relay.bytes() - before;
    println!("reconnect resync ({objects} objects, {changed} changed while offline): {:.0} ms from edge restart, {} bytes on the wire ({:.0} bytes/changed object)", resync.as_secs_f64() * 1000.0, bytes, bytes as f64 / changed as f64);

    // 3. Idle traffic.
    let settle = Instant::now() + Duration::from_secs(3);
    wait("traffic to settle", Duration::from_secs(10), || {
        Instant::now() >= settle
    })
    .await?;
    let before = relay.bytes();
    let t = Instant::now() + Duration::from_secs(idle);
    wait("the idle period", Duration::from_secs(idle + 5), || {
        Instant::now() >= t
    })
    .await?;
    let b = relay.bytes() - before;
    println!(
        "idle: {b} bytes in {idle} s ({:.0} bytes per site per minute)",
        b as f64 * 60.0 / idle as f64
    );
    Ok(())
}
