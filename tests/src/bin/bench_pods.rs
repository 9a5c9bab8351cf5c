//! Node agent benchmark (issue 4): pod startup latency from create-at-cloud to Running-seen-at-
//! cloud (image present) for N pods on one edge node; idle RSS of edge-core and edge-agent with
//! 0 and with M pods (and of the per-container shims); stripped binary sizes.
//!
//!   cargo build --release -p cloud-core -p edge-core -p edge-agent -p tests
//!   ./target/release/bench_pods [--pods 100] [--keep 50] [--settle-secs 10]

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::Context;
use futures_util::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, PostParams, WatchEvent, WatchParams};
use serde_json::json;
use tests::registry::{busybox_image, Registry};
use tests::{bin, Agent, CloudCore, EdgeCore};

/// Proportional set size (shared pages divided among their users), KiB.
fn pss_kib(pid: u32) -> u64 {
    tests::proc_kib(pid, "smaps_rollup", "Pss:")
}

/// Total RSS, total PSS and count of the agent's shims (processes `edge-agent shim`).
fn shims_kib() -> (u64, u64, usize) {
    let mut pss = 0;
    let mut total = 0;
    let mut n = 0;
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let mut parts = cmd.split(|b| *b == 0);
        let exe = parts.next().unwrap_or_default();
        if exe.ends_with(b"edge-agent") && parts.next() == Some(b"shim") {
            total += tests::rss_kib(pid);
            pss += pss_kib(pid);
            n += 1;
        }
    }
    (total, pss, n)
}

fn pod(name: &str, image: &str) -> anyhow::Result<Pod> {
    Ok(serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"app": "bench"}},
        "spec": {"nodeName": "n1", "terminationGracePeriodSeconds": 0, "containers": [{"name": "c", "image": image, "command": ["sleep", "3600"]}]},
    }))?)
}

fn running(p: &Pod) -> bool {
    p.status.as_ref().is_some_and(|s| {
        s.phase.as_deref() == Some("Running")
            && s.container_statuses
                .as_ref()
                .is_some_and(|c| c.iter().all(|c| c.ready))
    })
}

async fn wait_count(api: &Api<Pod>, n: usize, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let l = api.list(&Default::default()).await?;
        if l.items.len() == n {
            return Ok(());
        }
        anyhow::ensure!(Instant::now() < deadline, "timed out waiting for {n} pods");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    if std::env::args().any(|a| a == "--help" || a == "-h") {
        println!("bench_pods [--pods N] [--keep M] [--settle-secs S]");
        return Ok(());
    }
    let (n, keep, settle) = (
        tests::bench_arg("--pods", 100)? as usize,
        tests::bench_arg("--keep", 50)? as usize,
        tests::bench_arg("--settle-secs", 10)?,
    );
    let reg = Registry::start();
    let scratch = tempfile::tempdir()?;
    reg.push(&busybox_image(scratch.path(), "v1"), "busybox:v1");
    let image = format!("{}/busybox:v1", reg.addr());
    let cc = CloudCore::start();
    let edge = EdgeCore::join(&cc, "s1", &cc.join_token("s1", "10m"));
    let agent = Agent::start_with(&edge.kubeconfig(), "n1", &[reg.addr()]);
    let client = tests::client_for(&cc.kubeconfig()).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    tests::wait_for("n1 Ready at the cloud", Duration::from_secs(60), || {
        cc.kubectl_ok(&["get", "nodes"]).contains(" Ready ")
    });
    // Warm up: the image is pulled and unpacked once.
    pods.create(&PostParams::default(), &pod("warm", &image)?)
        .await?;
    let t = Instant::now();
    loop {
        if running(&pods.get("warm").await?) {
            break;
        }
        anyhow::ensure!(
            t.elapsed() < Duration::from_secs(60),
            "warm-up pod never ran"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    pods.delete("warm", &DeleteParams::default()).await?;
    wait_count(&pods, 0, Duration::from_secs(60)).await?;
    tokio::time::sleep(Duration::from_secs(settle)).await; // let the processes go idle
    let idle0 = (tests::rss_kib(edge.pid()), tests::rss_kib(agent.pid()));

    // Watch at the cloud.
    let wp = WatchParams::default().labels("app=bench");
    let rv = pods
        .list(&Default::default())
        .await?
        .metadata
        .resource_version
        .unwrap_or_default();
    let mut stream = pods.watch(&wp, &rv).await?.boxed();

    // One at a time: each pod is created once the previous one runs (latency without queueing).
    let mut seq = Vec::new();
    for i in 0..n {
        let name = format!("s{i:04}");
        let t = Instant::now();
        pods.create(&PostParams::default(), &pod(&name, &image)?)
            .await?;
        loop {
            let ev = tokio::time::timeout(Duration::from_secs(60), stream.try_next())
                .await
                .context("no progress for 60 s")??
                .context("watch ended")?;
            if let WatchEvent::Added(p) | WatchEvent::Modified(p) = ev {
                if p.metadata.name.as_deref() == Some(name.as_str()) && running(&p) {
                    seq.push(t.elapsed());
                    break;
                }
            }
        }
    }
    println!(
        "startup, one at a time ({n} pods, create at cloud -> Running seen at cloud, image present): p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
        tests::percentile_ms(seq.clone(), 0.50),
        tests::percentile_ms(seq.clone(), 0.99),
        tests::percentile_ms(seq, 1.0)
    );
    for i in 0..n {
        pods.delete(&format!("s{i:04}"), &DeleteParams::default())
            .await?;
    }
    wait_count(&pods, 0, Duration::from_secs(300)).await?;

    // A burst: N pods created at the cloud, 8 at a time.
    let created: std::sync::Arc<std::sync::Mutex<HashMap<String, Instant>>> = Default::default();
    let t0 = Instant::now();
    let creator = {
        let pods = pods.clone();
        let created = created.clone();
        let image = image.clone();
        tokio::spawn(async move {
            futures_util::stream::iter(0..n)
                .map(|i| {
                    let pods = pods.clone();
                    let created = created.clone();
                    let image = image.clone();
                    async move {
                        let name = format!("p{i:04}");
                        created.lock().unwrap().insert(name.clone(), Instant::now());
                        pods.create(&PostParams::default(), &pod(&name, &image)?)
                            .await?;
                        anyhow::Ok(())
                    }
                })
                .buffer_unordered(8)
                .try_collect::<Vec<_>>()
                .await
        })
    };
    let mut lat: HashMap<String, Duration> = HashMap::new();
    while lat.len() < n {
        let ev = tokio::time::timeout(Duration::from_secs(120), stream.try_next())
            .await
            .context("no progress for 120 s")??
            .context("watch ended")?;
        if let WatchEvent::Added(p) | WatchEvent::Modified(p) = ev {
            let name = p.metadata.name.clone().unwrap_or_default();
            if running(&p) && !lat.contains_key(&name) {
                if let Some(c) = created.lock().unwrap().get(&name) {
                    lat.insert(name, c.elapsed());
                }
            }
        }
    }
    creator.await??;
    let total = t0.elapsed();
    let v: Vec<Duration> = lat.values().cloned().collect();
    println!(
        "startup, burst ({n} pods created 8 at a time): p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms; all {n} Running after {:.2} s ({:.1} pods/s)",
        tests::percentile_ms(v.clone(), 0.50),
        tests::percentile_ms(v.clone(), 0.99),
        tests::percentile_ms(v, 1.0),
        total.as_secs_f64(),
        n as f64 / total.as_secs_f64()
    );
    // Down to `keep` pods, then idle.
    for i in keep..n {
        pods.delete(&format!("p{i:04}"), &DeleteParams::default())
            .await?;
    }
    wait_count(&pods, keep, Duration::from_secs(300)).await?;
    tokio::time::sleep(Duration::from_secs(settle)).await;
    let idle_k = (tests::rss_kib(edge.pid()), tests::rss_kib(agent.pid()));
    let (shims, shims_pss, shim_n) = shims_kib();
    println!(
        "idle RSS, 0 pods: edge-core {} KiB + edge-agent {} KiB = {:.1} MiB",
        idle0.0,
        idle0.1,
        (idle0.0 + idle0.1) as f64 / 1024.0
    );
    println!(
        "idle RSS, {keep} pods: edge-core {} KiB + edge-agent {} KiB = {:.1} MiB; plus {shim_n} shims: RSS {:.0} KiB each, PSS {:.0} KiB each ({:.1} MiB in all)",
        idle_k.0,
        idle_k.1,
        (idle_k.0 + idle_k.1) as f64 / 1024.0,
        shims as f64 / shim_n.max(1) as f64,
        shims_pss as f64 / shim_n.max(1) as f64,
        shims_pss as f64 / 1024.0
    );
    for b in ["cloud-core", "edge-core", "edge-agent"] {
        let size = std::fs::metadata(bin(b)).map(|m| m.len()).unwrap_or(0);
        println!(
            "binary {b}: {:.1} MiB ({})",
            size as f64 / 1048576.0,
            bin(b).display()
        );
    }
    Ok(())
}
