//! Scheduling benchmark with the hollow-site simulator (issue 5): a real cloud-core process, and
//! in this process S real edge-cores (in-memory) with N hollow nodes each. P pods are created at
//! the cloud with no node; the cloud scheduler places them on sites from the sites' summaries,
//! the sites' schedulers bind them, hollow runners report them Running, and everything travels
//! over the real sync protocol.
//!
//!   cargo build --release -p cloud-core -p tests
//!   ./target/release/sim [--sites 100] [--nodes 100] [--pods 10000] [--cpus 32] [--clients 32]

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::Context;
use futures_util::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, PostParams, WatchEvent, WatchParams};
use serde_json::json;
use tests::sim::NodeSize;
use tests::CloudCore;

/// utime + stime of a process, in seconds.
fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, r)| r.split_whitespace().collect())
        .unwrap_or_default();
    let ticks: f64 = fields
        .get(11..13)
        .map(|f| f.iter().filter_map(|v| v.parse::<f64>().ok()).sum())
        .unwrap_or(0.0);
    ticks / 100.0
}

fn rss_mib(pid: u32) -> f64 {
    tests::rss_kib(pid) as f64 / 1024.0
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    if std::env::args().any(|a| a == "--help" || a == "-h") {
        println!(
            "sim [--sites S] [--nodes N] [--pods P] [--cpus C] [--clients K] [--etcd-replicas R]"
        );
        return Ok(());
    }
    let sites = tests::bench_arg("--sites", 100)? as usize;
    let nodes = tests::bench_arg("--nodes", 100)? as usize;
    let n = tests::bench_arg("--pods", 10_000)? as usize;
    let cpus = tests::bench_arg("--cpus", 32)? as u32;
    let clients = tests::bench_arg("--clients", 32)? as usize;
    // `--etcd-replicas R`: the region on a fresh etcd with R cloud-core replicas.
    let replicas = tests::bench_arg("--etcd-replicas", 0)? as usize;
    let etcd = (replicas > 0).then(tests::etcd::Etcd::start);
    let mut flags = vec!["--site-cert-ttl".to_string(), "24h".to_string()];
    if let Some(e) = &etcd {
        flags.extend(["--etcd-servers".to_string(), e.url()]);
    }
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let region: Vec<CloudCore> = (0..replicas.max(1))
        .map(|_| CloudCore::start_with(&flags))
        .collect();
    let cc = &region[0];
    if let Some(e) = &etcd {
        println!("region: {} replicas on etcd {}", region.len(), e.url());
    }
    let t = Instant::now();
    let sim = tests::sim::start_on(
        &region.iter().collect::<Vec<_>>(),
        sites,
        nodes,
        NodeSize {
            cpus,
            memory_gib: 128,
            pods: 110,
        },
    )
    .await?;
    println!(
        "{} sites x {nodes} hollow nodes started in {:.1} s",
        sim.sites.len(),
        t.elapsed().as_secs_f64()
    );
    let client = tests::client_for(&cc.kubeconfig()).await;
    // Every site's summary at the cloud.
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let req = http::Request::get("/apis/edge.atoll.io/v1/edgesites").body(Vec::new())?;
        let l: serde_json::Value = client.request(req).await?;
        let ready = l["items"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter(|s| {
                        s.pointer("/status/summary/ready").and_then(|v| v.as_u64())
                            == Some(nodes as u64)
                    })
                    .count()
            })
            .unwrap_or(0);
        if ready == sites {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "only {ready}/{sites} sites summarised"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    println!(
        "all summaries at the cloud after {:.1} s",
        t.elapsed().as_secs_f64()
    );
    // CPU and RSS of every replica, summed.
    let pids: Vec<u32> = region.iter().map(CloudCore::pid).collect();
    let usage = || -> (f64, f64) {
        pids.iter()
            .map(|&p| (cpu_secs(p), rss_mib(p)))
            .fold((0.0, 0.0), |(c, r), (c1, r1)| (c + c1, r + r1))
    };
    let (cpu0, rss0) = usage();
    let etcd_cpu0 = etcd.as_ref().map(|e| cpu_secs(e.pid()));

    // The client side (creating pods, watching them) runs on a thread and runtime of its own,
    // so that the hundred sites' tasks in this process do not delay what it observes.
    let kubeconfig = cc.kubeconfig();
    let observer = std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(observe(kubeconfig, n, clients))
    });
    let o = observer
        .join()
        .map_err(|_| anyhow::anyhow!("observer panicked"))??;
    let (created_in, total, last_bound) = (o.created_in, o.total, o.last_bound);
    let (bound, placed, running, per_site) = (o.bound, o.placed, o.running, o.per_site);
    println!(
        "{n} pods created in {:.2} s ({:.0} creates/s, {clients} at a time)",
        created_in.as_secs_f64(),
        n as f64 / created_in.as_secs_f64()
    );
    let (cpu1, rss1) = usage();
    let b: Vec<Duration> = bound.values().copied().collect();
    let pl: Vec<Duration> = placed.values().copied().collect();
    let r: Vec<Duration> = running.values().copied().collect();
    println!(
        "{n} pods on {} sites x {nodes} nodes: all bound after {:.2} s ({:.0} pods/s scheduled and bound end to end), all Running at the cloud after {:.2} s ({:.0} pods/s)",
        sites,
        last_bound.as_secs_f64(),
        n as f64 / last_bound.as_secs_f64().max(1e-9),
        total.as_secs_f64(),
        n as f64 / total.as_secs_f64()
    );
    println!(
        "create -> placed on a site by the cloud scheduler: p50 {:.0} ms, p99 {:.0} ms",
        tests::percentile_ms(pl.clone(), 0.5),
        tests::percentile_ms(pl, 0.99),
    );
    println!(
        "create -> bound (seen at the cloud): p50 {:.0} ms, p99 {:.0} ms; create -> Running: p50 {:.0} ms, p99 {:.0} ms",
        tests::percentile_ms(b.clone(), 0.5),
        tests::percentile_ms(b, 0.99),
        tests::percentile_ms(r.clone(), 0.5),
        tests::percentile_ms(r, 0.99)
    );
    let (min, max) = (
        per_site.values().min().copied().unwrap_or(0),
        per_site.values().max().copied().unwrap_or(0),
    );
    println!(
        "spread: {} sites used, {min}..{max} pods per site",
        per_site.len()
    );
    println!(
        "cloud-core (all replicas): RSS {rss0:.0} MiB before, {rss1:.0} MiB after; CPU {:.1} s during the run ({:.0}% of one core)",
        cpu1 - cpu0,
        (cpu1 - cpu0) / total.as_secs_f64() * 100.0
    );
    if let (Some(e), Some(c0)) = (&etcd, etcd_cpu0) {
        println!(
            "etcd: CPU {:.1} s during the run, RSS {:.0} MiB",
            cpu_secs(e.pid()) - c0,
            rss_mib(e.pid())
        );
    }
    println!(
        "this process (sites + client): RSS {:.0} MiB",
        rss_mib(std::process::id())
    );
    drop(sim);
    Ok(())
}

/// What the client side saw.
struct Observed {
    created_in: Duration,
    total: Duration,
    last_bound: Duration,
    bound: HashMap<String, Duration>,
    placed: HashMap<String, Duration>,
    running: HashMap<String, Duration>,
    per_site: HashMap<String, usize>,
}

/// Create `n` pods at the cloud, `clients` at a time, and watch them until all run.
async fn observe(
    kubeconfig: std::path::PathBuf,
    n: usize,
    clients: usize,
) -> anyhow::Result<Observed> {
    let client = tests::client_for(&kubeconfig).await;
    let pods: Api<Pod> = Api::namespaced(client, "default");
    let rv = pods
        .list(&Default::default())
        .await?
        .metadata
        .resource_version
        .unwrap_or_default();
    let stream = pods
        .watch(&WatchParams::default().labels("app=sim"), &rv)
        .await?
        .boxed();
    let created: std::sync::Arc<std::sync::Mutex<HashMap<String, Instant>>> = Default::default();
    let t0 = Instant::now();
    let creator = {
        let pods = pods.clone();
        let created = created.clone();
        tokio::spawn(async move {
            futures_util::stream::iter(0..n)
                .map(|i| {
                    let pods = pods.clone();
                    let created = created.clone();
                    async move {
                        let name = format!("p{i:05}");
                        let p: Pod = serde_json::from_value(json!({
                            "metadata": {"name": name, "labels": {"app": "sim"}},
                            "spec": {"containers": [{"name": "c", "image": "hollow", "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}}}]},
                        }))?;
                        created.lock().unwrap_or_else(|e| e.into_inner()).insert(name, Instant::now());
                        pods.create(&PostParams::default(), &p).await?;
                        anyhow::Ok(())
                    }
                })
                .buffer_unordered(clients)
                .try_collect::<Vec<_>>()
                .await?;
            anyhow::Ok(t0.elapsed())
        })
    };
    let mut bound: HashMap<String, Duration> = HashMap::new();
    let mut placed: HashMap<String, Duration> = HashMap::new();
    let mut running: HashMap<String, Duration> = HashMap::new();
    let mut per_site: HashMap<String, usize> = HashMap::new();
    let mut last_bound = Duration::ZERO;
    let mut stream = Some(stream);
    while running.len() < n {
        // A watch the server ends (too slow a reader, a timeout) is resumed from a fresh list.
        let next = match stream.as_mut() {
            Some(st) => tokio::time::timeout(Duration::from_secs(120), st.try_next())
                .await
                .context("no progress for 120 s")?,
            None => Ok(None),
        };
        let batch: Vec<Pod> = match next {
            Ok(Some(WatchEvent::Added(p))) | Ok(Some(WatchEvent::Modified(p))) => vec![p],
            Ok(Some(_)) => continue,
            Ok(None) | Err(_) => {
                let l = pods
                    .list(&kube::api::ListParams::default().labels("app=sim"))
                    .await?;
                let rv = l.metadata.resource_version.clone().unwrap_or_default();
                stream = Some(
                    pods.watch(&WatchParams::default().labels("app=sim"), &rv)
                        .await?
                        .boxed(),
                );
                l.items
            }
        };
        for p in batch {
            let name = p.metadata.name.clone().unwrap_or_default();
            let Some(c) = created
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(&name)
                .copied()
            else {
                continue;
            };
            let node = p
                .spec
                .as_ref()
                .and_then(|s| s.node_name.clone())
                .unwrap_or_default();
            let site = p
                .metadata
                .annotations
                .as_ref()
                .is_some_and(|a| a.contains_key("atoll.io/site"));
            if site && !placed.contains_key(&name) {
                placed.insert(name.clone(), c.elapsed());
            }
            if !node.is_empty() && !bound.contains_key(&name) {
                bound.insert(name.clone(), c.elapsed());
                last_bound = t0.elapsed();
                let site = node.split('-').next().unwrap_or("").to_string();
                *per_site.entry(site).or_default() += 1;
            }
            let phase = p.status.as_ref().and_then(|s| s.phase.clone());
            if phase.as_deref() == Some("Running") && !running.contains_key(&name) {
                running.insert(name, c.elapsed());
            }
        }
    }
    let created_in = creator.await??;
    Ok(Observed {
        created_in,
        total: t0.elapsed(),
        last_bound,
        bound,
        placed,
        running,
        per_site,
    })
}
