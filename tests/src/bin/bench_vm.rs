//! VM pod benchmark: on one edge node running VMs (qemu; KVM if the agent's probe passes, else
//! TCG), N direct-boot VM pods created at the cloud one after another (the image pulled once
//! before): create → Running seen at the cloud, and create → the guest's `ready` line on its
//! console through `kubectl logs`; then each qemu's resident and proportional memory beyond
//! its guest's. Prints percentiles and a one-line summary.
//!
//!   cargo build --release -p cloud-core -p edge-core -p edge-agent -p tests
//!   ./target/release/bench_vm [--vms 5] [--memory-mib 128]

use std::time::{Duration, Instant};

use tests::{kubectl, wait_for, Agent, CloudCore, EdgeCore};

fn field(cc: &CloudCore, pod: &str, path: &str) -> String {
    cc.jsonpath("pod", pod, path)
}

fn main() -> anyhow::Result<()> {
    let n = tests::bench_arg("--vms", 5)? as usize;
    let mem = tests::bench_arg("--memory-mib", 128)?;
    anyhow::ensure!(
        tests::vmimage::available(),
        "qemu, cpio and linux-image-cloud-amd64 are needed"
    );
    let reg = tests::registry::Registry::start();
    let scratch = tempfile::tempdir()?;
    reg.push(
        &tests::vmimage::vm_image(scratch.path(), "vm-v1", "v1"),
        "vm:v1",
    );
    let cc = CloudCore::start();
    let s1 = EdgeCore::join(&cc, "s1", &cc.join_token("s1", "10m"));
    let agent = Agent::start_vms(&s1.kubeconfig(), "n1", &[reg.addr()]);
    let t = Duration::from_secs(120);
    wait_for("n1 runs VMs", t, || {
        cc.jsonpath("node", "n1", "{.metadata.labels.vm\\.atoll\\.io/runtime}") == "qemu"
    });
    let accel = if agent.log().contains("accel=\"kvm\"") {
        "kvm"
    } else {
        "tcg"
    };
    let (kc, dir) = (cc.kubeconfig(), cc.dir.path().to_path_buf());
    let pod = |name: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  nodeName: n1\n  terminationGracePeriodSeconds: 5\n  virtualMachine:\n    name: vm\n    image: {}/vm:v1\n    resources: {{limits: {{cpu: '1', memory: {mem}Mi}}}}\n",
            reg.addr()
        )
    };
    // The first pull, not measured.
    let out = kubectl(&kc, &dir, &["apply", "-f", "-"], Some(&pod("warm")));
    anyhow::ensure!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_for("warm Running", t, || {
        field(&cc, "warm", "{.status.phase}") == "Running"
    });
    cc.kubectl_ok(&["delete", "pod", "warm", "--wait=true"]);
    let (mut running, mut ready, mut over_rss, mut over_pss) = (vec![], vec![], vec![], vec![]);
    for i in 0..n {
        let name = format!("vm{i}");
        let start = Instant::now();
        let out = kubectl(&kc, &dir, &["apply", "-f", "-"], Some(&pod(&name)));
        anyhow::ensure!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        wait_for("Running", t, || {
            field(&cc, &name, "{.status.phase}") == "Running"
        });
        running.push(start.elapsed());
        wait_for("the guest's ready line", t, || {
            String::from_utf8_lossy(&cc.kubectl(&["logs", &name]).stdout)
                .contains("atoll-vm: ready")
        });
        ready.push(start.elapsed());
        let uid = field(&cc, &name, "{.metadata.uid}");
        let pid: u32 =
            std::fs::read_to_string(format!("/sys/fs/cgroup/memory/atoll/{uid}/vm/cgroup.procs"))?
                .split_whitespace()
                .next()
                .and_then(|p| p.parse().ok())
                .ok_or_else(|| anyhow::anyhow!("no qemu in {name}'s cgroup"))?;
        let guest_kib = mem * 1024;
        over_rss.push(tests::rss_kib(pid).saturating_sub(guest_kib) / 1024);
        over_pss
            .push(tests::proc_kib(pid, "smaps_rollup", "Pss:").saturating_sub(guest_kib) / 1024);
        cc.kubectl_ok(&["delete", "pod", &name, "--wait=true"]);
    }
    let p = |v: &[Duration], q: f64| tests::percentile_ms(v.to_vec(), q) / 1000.0;
    println!("VM pods ({accel}, {mem} MiB guests, {n} one after another, image cached):");
    println!(
        "  create -> Running at the cloud      p50 {:.2} s   max {:.2} s",
        p(&running, 0.5),
        p(&running, 1.0)
    );
    println!(
        "  create -> guest ready (console)     p50 {:.2} s   max {:.2} s",
        p(&ready, 0.5),
        p(&ready, 1.0)
    );
    over_rss.sort();
    over_pss.sort();
    println!(
        "  qemu memory beyond the guest's      RSS median {} MiB   PSS median {} MiB",
        over_rss[over_rss.len() / 2],
        over_pss[over_pss.len() / 2]
    );
    println!(
        "summary bench_vm accel={accel} running_p50_s={:.2} ready_p50_s={:.2} overhead_rss_mib={} overhead_pss_mib={}",
        p(&running, 0.5),
        p(&ready, 0.5),
        over_rss[over_rss.len() / 2],
        over_pss[over_pss.len() / 2]
    );
    Ok(())
}
