//! Exec benchmark (issue 14): round trip of `kubectl exec P -- true` and of the same through
//! the `kube` client (no kubectl start-up in it) at the edge's API and through the cloud (the
//! site's QUIC connection); bytes/s of stdin through `exec -i` (`wc -c` reading 64 MiB); RSS of
//! edge-core and the agent with M idle sessions open and after they are gone; bytes/s of
//! `kubectl port-forward` (one connection, and 4 at once, each fetching a file of N MiB from a
//! server on the pod's loopback) at the edge and through the cloud.
//!
//!   cargo build --release -p cloud-core -p edge-core -p edge-agent -p tests
//!   ./target/release/bench_exec [--runs 30] [--kube-runs 100] [--idle 200] [--mib 64] [--pf-mib 64]

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, AttachParams, PostParams};
use serde_json::json;
use tests::registry::{busybox_image, Registry};
use tests::{percentile_ms, Agent, CloudCore, EdgeCore};
use tokio::io::AsyncWriteExt;

fn kubectl(kc: &std::path::Path, home: &std::path::Path, args: &[&str]) -> Command {
    let mut c = Command::new("kubectl");
    c.arg("--kubeconfig")
        .arg(kc)
        .arg("--cache-dir")
        .arg(home.join("kube-cache"))
        .args(args)
        .env("HOME", home)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

fn kubectl_exec_runs(
    kc: &std::path::Path,
    home: &std::path::Path,
    runs: usize,
) -> anyhow::Result<Vec<Duration>> {
    let mut lat = Vec::with_capacity(runs);
    for _ in 0..runs {
        let t = Instant::now();
        let o = kubectl(kc, home, &["exec", "bench", "--", "true"])
            .stdin(Stdio::null())
            .output()?;
        anyhow::ensure!(
            o.status.success(),
            "kubectl exec failed: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        lat.push(t.elapsed());
    }
    Ok(lat)
}

async fn kube_exec_runs(pods: &Api<Pod>, runs: usize) -> anyhow::Result<Vec<Duration>> {
    let mut lat = Vec::with_capacity(runs);
    let ap = AttachParams::default().stdout(true).stderr(false);
    for _ in 0..runs {
        let t = Instant::now();
        let mut p = pods.exec("bench", ["true"], &ap).await?;
        let status = p.take_status().context("no status channel")?.await;
        p.join().await?;
        anyhow::ensure!(
            status.as_ref().and_then(|s| s.status.as_deref()) == Some("Success"),
            "exec ended with {status:?}"
        );
        lat.push(t.elapsed());
    }
    Ok(lat)
}

/// MiB/s of `mib` MiB of stdin through `kubectl exec -i bench -- wc -c`.
fn stdin_rate(
    kc: &std::path::Path,
    home: &std::path::Path,
    file: &std::path::Path,
    mib: u64,
) -> anyhow::Result<f64> {
    let t = Instant::now();
    let o = kubectl(kc, home, &["exec", "-i", "bench", "--", "wc", "-c"])
        .stdin(std::fs::File::open(file)?)
        .output()?;
    let secs = t.elapsed().as_secs_f64();
    let got = String::from_utf8_lossy(&o.stdout).trim().to_string();
    anyhow::ensure!(
        got == (mib << 20).to_string(),
        "wc -c said {got:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    Ok(mib as f64 / secs)
}

fn count_cat() -> usize {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter(|d| std::fs::read(d.path().join("cmdline")).is_ok_and(|c| c == b"cat\0-\0"))
        .count()
}

fn line(what: &str, lat: &[Duration]) {
    println!(
        "{what:<44} p50 {:>7.1} ms   p99 {:>7.1} ms   ({} runs)",
        percentile_ms(lat.to_vec(), 0.5),
        percentile_ms(lat.to_vec(), 0.99),
        lat.len()
    );
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    if std::env::args().any(|a| a == "--help" || a == "-h") {
        println!("bench_exec [--runs N] [--kube-runs N] [--idle M] [--mib N] [--pf-mib N]");
        return Ok(());
    }
    let runs = tests::bench_arg("--runs", 30)? as usize;
    let kube_runs = tests::bench_arg("--kube-runs", 100)? as usize;
    let idle = tests::bench_arg("--idle", 200)? as usize;
    let mib = tests::bench_arg("--mib", 64)?;
    let pf_mib = tests::bench_arg("--pf-mib", 64)? as usize;
    let reg = Registry::start();
    let scratch = tempfile::tempdir()?;
    reg.push(&busybox_image(scratch.path(), "v1"), "busybox:v1");
    let image = format!("{}/busybox:v1", reg.addr());
    let cc = CloudCore::start();
    let edge = EdgeCore::join(&cc, "s1", &cc.join_token("s1", "10m"));
    let agent = Agent::start_with(&edge.kubeconfig(), "n1", &[reg.addr()]);
    tests::wait_for("n1 Ready at the cloud", Duration::from_secs(60), || {
        cc.kubectl_ok(&["get", "nodes"]).contains(" Ready ")
    });
    let cloud_pods: Api<Pod> =
        Api::namespaced(tests::client_for(&cc.kubeconfig()).await, "default");
    let edge_pods: Api<Pod> =
        Api::namespaced(tests::client_for(&edge.kubeconfig()).await, "default");
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "bench"},
        "spec": {"nodeName": "n1", "terminationGracePeriodSeconds": 0,
                 "containers": [{"name": "c", "image": image, "command": ["sleep", "36000"]}]},
    }))?;
    cloud_pods.create(&PostParams::default(), &pod).await?;
    let t = Instant::now();
    loop {
        let p = edge_pods.get("bench").await?;
        if p.status.and_then(|s| s.phase).as_deref() == Some("Running") {
            break;
        }
        anyhow::ensure!(t.elapsed() < Duration::from_secs(90), "the pod never ran");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let home = scratch.path();
    // Warm both paths (kubectl's discovery cache, TLS sessions).
    kubectl_exec_runs(&edge.kubeconfig(), home, 2)?;
    kubectl_exec_runs(&cc.kubeconfig(), home, 2)?;

    let edge_kubectl = kubectl_exec_runs(&edge.kubeconfig(), home, runs)?;
    let cloud_kubectl = kubectl_exec_runs(&cc.kubeconfig(), home, runs)?;
    let edge_kube = kube_exec_runs(&edge_pods, kube_runs).await?;
    let cloud_kube = kube_exec_runs(&cloud_pods, kube_runs).await?;
    line("kubectl exec bench -- true, edge", &edge_kubectl);
    line("kubectl exec bench -- true, through cloud", &cloud_kubectl);
    line("kube client exec true, edge", &edge_kube);
    line("kube client exec true, through cloud", &cloud_kube);
    println!(
        "ratio cloud/edge p50: kubectl {:.2}   kube client {:.2}",
        percentile_ms(cloud_kubectl.clone(), 0.5) / percentile_ms(edge_kubectl.clone(), 0.5),
        percentile_ms(cloud_kube.clone(), 0.5) / percentile_ms(edge_kube.clone(), 0.5)
    );

    let file = scratch.path().join("stdin.bin");
    {
        let chunk: Vec<u8> = (0..1 << 20).map(|i: u32| (i % 251) as u8).collect();
        let mut f = std::fs::File::create(&file)?;
        for _ in 0..mib {
            std::io::Write::write_all(&mut f, &chunk)?;
        }
    }
    let edge_rate = stdin_rate(&edge.kubeconfig(), home, &file, mib)?;
    let cloud_rate = stdin_rate(&cc.kubeconfig(), home, &file, mib)?;
    println!(
        "exec -i stdin ({mib} MiB into wc -c): edge {edge_rate:.1} MiB/s   through cloud {cloud_rate:.1} MiB/s   ratio {:.2}",
        cloud_rate / edge_rate
    );

    port_forward_rates(&cc, &edge, &cloud_pods, &image, home, pf_mib).await?;

    // Idle sessions at the edge: each a `cat` waiting on its stdin.
    let before = (tests::rss_kib(edge.pid()), tests::rss_kib(agent.pid()));
    let ap = AttachParams::default()
        .stdin(true)
        .stdout(true)
        .stderr(false);
    let mut sessions = Vec::with_capacity(idle);
    for _ in 0..idle {
        sessions.push(edge_pods.exec("bench", ["cat", "-"], &ap).await?);
    }
    let t = Instant::now();
    while count_cat() < idle {
        anyhow::ensure!(
            t.elapsed() < Duration::from_secs(120),
            "only {} of {idle} sessions' processes started",
            count_cat()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let open = (tests::rss_kib(edge.pid()), tests::rss_kib(agent.pid()));
    for mut s in sessions.drain(..) {
        if let Some(mut w) = s.stdin() {
            let _ = w.shutdown().await;
        }
        s.abort();
    }
    let t = Instant::now();
    while count_cat() > 0 {
        anyhow::ensure!(
            t.elapsed() < Duration::from_secs(60),
            "{} session processes left after their clients went",
            count_cat()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let gone = t.elapsed();
    let after = (tests::rss_kib(edge.pid()), tests::rss_kib(agent.pid()));
    println!(
        "RSS edge-core / agent, KiB: before {} / {}   {idle} idle sessions {} / {}   after {} / {}",
        before.0, before.1, open.0, open.1, after.0, after.1
    );
    println!(
        "per idle session: edge-core {:.1} KiB, agent {:.1} KiB; all processes gone {:.1} s after their clients",
        (open.0 as f64 - before.0 as f64) / idle as f64,
        (open.1 as f64 - before.1 as f64) / idle as f64,
        gone.as_secs_f64()
    );
    Ok(())
}

/// MiB/s through `kubectl port-forward` at the edge and through the cloud: one connection, then
/// four at once, each fetching the pod's whole file.
async fn port_forward_rates(
    cc: &CloudCore,
    edge: &EdgeCore,
    pods: &Api<Pod>,
    image: &str,
    home: &std::path::Path,
    mib: usize,
) -> anyhow::Result<()> {
    let size = mib << 20;
    let script = format!(
        "mkdir -p /www && head -c {size} /dev/zero > /www/f && echo ok > /www/ok && exec httpd -f -p 127.0.0.1:8080 -h /www"
    );
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "pfsrv"},
        "spec": {"nodeName": "n1", "terminationGracePeriodSeconds": 0,
                 "containers": [{"name": "c", "image": image, "command": ["sh", "-c", script]}]},
    }))?;
    pods.create(&PostParams::default(), &pod).await?;
    tests::wait_for("the port-forward server", Duration::from_secs(90), || {
        kubectl(
            &edge.kubeconfig(),
            home,
            &[
                "exec",
                "pfsrv",
                "--",
                "wget",
                "-q",
                "-O",
                "-",
                "http://127.0.0.1:8080/ok",
            ],
        )
        .output()
        .is_ok_and(|o| o.status.success())
    });
    let mut rates = Vec::new();
    for kc in [edge.kubeconfig(), cc.kubeconfig()] {
        let f = tests::streams_env::port_forward(&kc, home, "pfsrv", &[8080], false);
        let port = f.ports[0];
        let fetch = move || {
            let (status, body) = tests::streams_env::http_get(port, "/f");
            assert!(
                status.contains(" 200") && body.len() == size,
                "{status}: {} bytes",
                body.len()
            );
        };
        fetch();
        let t = Instant::now();
        fetch();
        let one = mib as f64 / t.elapsed().as_secs_f64();
        let t = Instant::now();
        let hs: Vec<_> = (0..4).map(|_| std::thread::spawn(fetch)).collect();
        for h in hs {
            h.join()
                .map_err(|_| anyhow::anyhow!("a parallel fetch failed"))?;
        }
        let four = 4.0 * mib as f64 / t.elapsed().as_secs_f64();
        rates.push((one, four));
    }
    let ((e1, e4), (c1, c4)) = (rates[0], rates[1]);
    println!(
        "port-forward ({mib} MiB per connection): edge {e1:.1} MiB/s (4 at once {e4:.1})   through cloud {c1:.1} MiB/s (4 at once {c4:.1})   ratio cloud/edge {:.2} ({:.2})",
        c1 / e1,
        c4 / e4
    );
    Ok(())
}
