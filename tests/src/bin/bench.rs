//! Benchmark: cloud-core's API over HTTPS, on its embedded store and on etcd, vs raw puts and
//! gets to Debian's etcd (fsync on) with the same value size and concurrency. Prints
//! throughput and latency percentiles per phase, then the ratios. `--no-etcd`: sled only.
//!
//!   cargo run --release -p tests --bin bench -- [--clients 32] [--ops 5000] [--value 1024]
//!                                               [--watchers 100] [--no-etcd]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use futures_util::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::{Api, ListParams, PostParams, WatchEvent, WatchParams};
use serde_json::json;

struct Opts {
    clients: usize,
    ops: usize,
    value: usize,
    watchers: usize,
    etcd: bool,
}

fn parse() -> anyhow::Result<Opts> {
    let mut o = Opts {
        clients: 32,
        ops: 5000,
        value: 1024,
        watchers: 100,
        etcd: true,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut num = |name: &str| -> anyhow::Result<usize> {
            args.next()
                .with_context(|| format!("{name} needs a value"))?
                .parse()
                .with_context(|| format!("{name} must be a number"))
        };
        match a.as_str() {
            "--clients" => o.clients = num("--clients")?.max(1),
            "--ops" => o.ops = num("--ops")?.max(1),
            "--value" => o.value = num("--value")?,
            "--watchers" => o.watchers = num("--watchers")?,
            "--no-etcd" => o.etcd = false,
            "--help" | "-h" => {
                println!(
                    "bench [--clients N] [--ops N] [--value BYTES] [--watchers N] [--no-etcd]"
                );
                std::process::exit(0);
            }
            other => anyhow::bail!("unknown argument {other:?}"),
        }
    }
    Ok(o)
}

#[derive(Clone, Copy)]
struct Stats {
    ops_per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
}

fn stats(mut lat: Vec<Duration>, wall: Duration) -> Stats {
    lat.sort();
    let pct = |p: f64| {
        lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1)))
            .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    };
    Stats {
        ops_per_s: lat.len() as f64 / wall.as_secs_f64(),
        p50_ms: pct(0.50),
        p99_ms: pct(0.99),
    }
}

fn print(name: &str, s: Stats) {
    println!(
        "{name:<34} {:>10.0} ops/s   p50 {:>7.2} ms   p99 {:>7.2} ms",
        s.ops_per_s, s.p50_ms, s.p99_ms
    );
}

/// CPU time (user + system) a process has used so far, from `/proc/PID/stat` (0 for the
/// benchmark itself: `self`).
fn cpu_time(pid: u32) -> Duration {
    let path = if pid == 0 {
        "/proc/self/stat".to_string()
    } else {
        format!("/proc/{pid}/stat")
    };
    let Ok(stat) = std::fs::read_to_string(path) else {
        return Duration::ZERO;
    };
    // Fields after the command (which may hold spaces) start at the state (field 3);
    // utime and stime are fields 14 and 15, in clock ticks (100 per second on Linux).
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<u64> = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|x| x.parse().ok())
        .collect();
    Duration::from_millis(f.iter().sum::<u64>() * 10)
}

/// CPU used per operation by each named process over a phase.
struct Cpu(Vec<(&'static str, u32, Duration)>);

impl Cpu {
    fn start(procs: &[(&'static str, u32)]) -> Self {
        Cpu(procs.iter().map(|&(n, p)| (n, p, cpu_time(p))).collect())
    }

    /// Print the CPU per operation of each process since `start`, and their total.
    fn print(&self, ops: usize) {
        let mut line = String::from("    CPU per op:");
        let mut total = Duration::ZERO;
        for (name, pid, before) in &self.0 {
            let used = cpu_time(*pid).saturating_sub(*before);
            total += used;
            line.push_str(&format!(
                " {name} {:.0} µs,",
                used.as_secs_f64() * 1e6 / ops as f64
            ));
        }
        line.push_str(&format!(
            " total {:.0} µs",
            total.as_secs_f64() * 1e6 / ops as f64
        ));
        println!("{line}");
    }
}

/// Run `total` operations over `clients` concurrent tasks; `op(i)` performs operation i.
async fn drive<F, Fut>(clients: usize, total: usize, op: F) -> anyhow::Result<Stats>
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send,
{
    let op = Arc::new(op);
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (op, next) = (op.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    return Ok::<_, anyhow::Error>(lat);
                }
                let t = Instant::now();
                op(i).await?;
                lat.push(t.elapsed());
            }
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await??);
    }
    Ok(stats(all, start.elapsed()))
}

/// A pod for the create phase. It names a scheduler that does not run, so nothing else writes
/// it: the figure is the API's write path alone (one storage write per create, as a raw put),
/// not the scheduler's writes besides (`sim` measures those).
fn pod(name: &str, value: usize) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"app": "bench"}, "annotations": {"pad": "x".repeat(value)}},
        "spec": {"schedulerName": "bench-none", "containers": [{"name": "c", "image": "busybox:1.36"}]}
    }))
    .expect("pod")
}

struct Results {
    create: Stats,
    get: Stats,
}

/// Pod creates and gets spread over two replicas on the etcd at `url` (operation i goes to
/// replica i mod 2; a get may read what the other replica created).
async fn bench_replicas(o: &Opts, url: &str, etcd_pid: u32) -> anyhow::Result<Results> {
    let (a, b) = (
        tests::CloudCore::start_with(&["--etcd-servers", url]),
        tests::CloudCore::start_with(&["--etcd-servers", url]),
    );
    let apis: Arc<[Api<Pod>; 2]> = Arc::new([
        Api::namespaced(a.client().await, "default"),
        Api::namespaced(b.client().await, "default"),
    ]);
    let value = o.value;
    let p = apis.clone();
    let cpu = Cpu::start(&[
        ("etcd", etcd_pid),
        ("replica a", a.pid()),
        ("replica b", b.pid()),
        ("client", 0),
    ]);
    let create = drive(o.clients, o.ops, move |i| {
        let p = p.clone();
        async move {
            p[i % 2]
                .create(&PostParams::default(), &pod(&format!("p{i}"), value))
                .await?;
            Ok(())
        }
    })
    .await?;
    print("  pod create", create);
    cpu.print(o.ops);
    let ops = o.ops;
    let get = drive(o.clients, o.ops, move |i| {
        let p = apis.clone();
        async move {
            p[i % 2].get(&format!("p{}", (i * 7919) % ops)).await?;
            Ok(())
        }
    })
    .await?;
    print("  pod get", get);
    Ok(Results { create, get })
}

/// The API benchmark against a fresh cloud-core (on `etcd` when given, else sled).
async fn bench_cloud(o: &Opts, etcd: Option<(&str, u32)>) -> anyhow::Result<Results> {
    let cc = match etcd {
        Some((url, _)) => tests::CloudCore::start_with(&["--etcd-servers", url]),
        None => tests::CloudCore::start(),
    };
    let mut procs = vec![("cloud-core", cc.pid()), ("client", 0)];
    if let Some((_, pid)) = etcd {
        procs.insert(0, ("etcd", pid));
    }
    let client = cc.client().await;
    let value = o.value;
    println!(
        "cloud-core ({} clients, {} ops, {} B values)",
        o.clients, o.ops, o.value
    );
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let p = pods.clone();
    let cpu = Cpu::start(&procs);
    let create = drive(o.clients, o.ops, move |i| {
        let p = p.clone();
        async move {
            p.create(&PostParams::default(), &pod(&format!("p{i}"), value))
                .await?;
            Ok(())
        }
    })
    .await?;
    print("  pod create", create);
    cpu.print(o.ops);
    let p = pods.clone();
    let ops = o.ops;
    let get = drive(o.clients, o.ops, move |i| {
        let p = p.clone();
        async move {
            p.get(&format!("p{}", (i * 7919) % ops)).await?;
            Ok(())
        }
    })
    .await?;
    print("  pod get", get);
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "kube-public");
    for i in 0..100 {
        let c: ConfigMap = serde_json::from_value(
            json!({"metadata": {"name": format!("c{i}")}, "data": {"v": "x".repeat(value)}}),
        )?;
        cms.create(&PostParams::default(), &c).await?;
    }
    let c = cms.clone();
    let list = drive(o.clients, (o.ops / 10).max(10), move |_| {
        let c = c.clone();
        async move {
            let l = c.list(&ListParams::default()).await?;
            anyhow::ensure!(l.items.len() == 100, "list returned {}", l.items.len());
            Ok(())
        }
    })
    .await?;
    print("  list (100 configmaps)", list);

    // Watch fan-out: W watchers on one namespace; each create must reach all of them.
    if o.watchers > 0 {
        let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "kube-node-lease");
        let rv = cms
            .list(&ListParams::default())
            .await?
            .metadata
            .resource_version
            .unwrap_or_default();
        let events = 200usize;
        let delivered = Arc::new(AtomicUsize::new(0));
        let sent_at: Arc<std::sync::Mutex<Vec<Option<Instant>>>> =
            Arc::new(std::sync::Mutex::new(vec![None; events]));
        let lat = Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for _ in 0..o.watchers {
            let mut w = cms.watch(&WatchParams::default(), &rv).await?.boxed();
            let (delivered, sent_at, lat) = (delivered.clone(), sent_at.clone(), lat.clone());
            tasks.push(tokio::spawn(async move {
                let mut n = 0;
                while n < events {
                    match tokio::time::timeout(Duration::from_secs(60), w.try_next()).await {
                        Ok(Ok(Some(WatchEvent::Added(c)))) => {
                            let i: usize = c
                                .metadata
                                .name
                                .as_deref()
                                .and_then(|s| s.strip_prefix('w'))
                                .and_then(|s| s.parse().ok())
                                .unwrap_or(0);
                            if let Some(t) = sent_at
                                .lock()
                                .map(|s| s.get(i).copied().flatten())
                                .ok()
                                .flatten()
                            {
                                lat.lock().map(|mut l| l.push(t.elapsed())).ok();
                            }
                            n += 1;
                            delivered.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(Ok(Some(_))) => {}
                        _ => return,
                    }
                }
            }));
        }
        let start = Instant::now();
        for i in 0..events {
            let c: ConfigMap = serde_json::from_value(
                json!({"metadata": {"name": format!("w{i}")}, "data": {"v": "x".repeat(value)}}),
            )?;
            sent_at.lock().map(|mut s| s[i] = Some(Instant::now())).ok();
            cms.create(&PostParams::default(), &c).await?;
        }
        for t in tasks {
            let _ = t.await;
        }
        let wall = start.elapsed();
        let l = lat.lock().map(|l| l.clone()).unwrap_or_default();
        let s = stats(l, wall);
        println!(
            "  watch fan-out ({} watchers)        {:>10.0} events/s delivered ({} of {})   create->seen p50 {:.2} ms   p99 {:.2} ms",
            o.watchers,
            delivered.load(Ordering::Relaxed) as f64 / wall.as_secs_f64(),
            delivered.load(Ordering::Relaxed),
            events * o.watchers,
            s.p50_ms,
            s.p99_ms
        );
    }
    if let Ok(status) = std::fs::read_to_string(format!("/proc/{}/status", cc.pid())) {
        if let Some(l) = status.lines().find(|l| l.starts_with("VmRSS")) {
            println!(
                "  cloud-core {}",
                l.split_whitespace().collect::<Vec<_>>().join(" ")
            );
        }
    }
    Ok(Results { create, get })
}

async fn bench_etcd(o: &Opts) -> anyhow::Result<Results> {
    let server = tests::etcd::Etcd::start();
    let etcd = etcd_client::Client::connect([server.url()], None).await?;
    println!(
        "etcd {} (fsync on; the etcd-client crate, one channel; {} clients)",
        etcd_version(),
        o.clients
    );
    // Same value size as a pod object of the create phase.
    let v = Arc::new(serde_json::to_vec(&pod("p0", o.value))?);
    let e = etcd.clone();
    let cpu = Cpu::start(&[("etcd", server.pid()), ("client", 0)]);
    let put = drive(o.clients, o.ops, move |i| {
        let (mut e, v) = (e.clone(), v.clone());
        async move {
            e.put(format!("/registry/pods/default/p{i}"), v.as_slice(), None)
                .await?;
            Ok(())
        }
    })
    .await?;
    print("  put", put);
    cpu.print(o.ops);
    let ops = o.ops;
    let get = drive(o.clients, o.ops, move |i| {
        let mut e = etcd.clone();
        async move {
            e.get(
                format!("/registry/pods/default/p{}", (i * 7919) % ops),
                None,
            )
            .await?;
            Ok(())
        }
    })
    .await?;
    print("  get", get);
    Ok(Results { create: put, get })
}

fn etcd_version() -> String {
    std::process::Command::new(tests::etcd::etcd_bin())
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.lines().next().map(String::from))
        .unwrap_or_default()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let o = parse()?;
    println!("cloud-core on its embedded store (sled)");
    let cloud = bench_cloud(&o, None).await?;
    if o.etcd {
        let server = tests::etcd::Etcd::start();
        println!("cloud-core on etcd");
        let on_etcd = bench_cloud(&o, Some((&server.url(), server.pid()))).await?;
        drop(server);
        let server = tests::etcd::Etcd::start();
        println!("two cloud-core replicas on etcd (clients alternate between them)");
        let two = bench_replicas(&o, &server.url(), server.pid()).await?;
        drop(server);
        let etcd = bench_etcd(&o).await?;
        println!(
            "ratio cloud-core(sled)/etcd: create/put {:.2}   get/get {:.2}",
            cloud.create.ops_per_s / etcd.create.ops_per_s,
            cloud.get.ops_per_s / etcd.get.ops_per_s
        );
        println!(
            "ratio cloud-core(etcd)/etcd: create/put {:.2}   get/get {:.2}",
            on_etcd.create.ops_per_s / etcd.create.ops_per_s,
            on_etcd.get.ops_per_s / etcd.get.ops_per_s
        );
        println!(
            "ratio two replicas/one on etcd: create {:.2}   get {:.2}",
            two.create.ops_per_s / on_etcd.create.ops_per_s,
            two.get.ops_per_s / on_etcd.get.ops_per_s
        );
    }
    Ok(())
}
