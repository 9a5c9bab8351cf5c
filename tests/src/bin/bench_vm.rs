//! VM pod benchmark: on one edge node running VMs (qemu; KVM if the agent's probe passes, else
//! TCG), N direct-boot VM pods created at the cloud, first one after another, then all at once
//! (a burst; the image pulled once before): create → Running seen at the cloud, and create →
//! the guest's `ready` line on its console through `kubectl logs`. Then the host memory each
//! VM costs beyond its guest: qemu's resident memory outside the guest-RAM mapping (binary,
//! heap, translation cache, device state), and its shim's. Prints p50/p99 and a one-line
//! summary.
//!
//!   cargo build --release -p cloud-core -p edge-core -p edge-agent -p tests
//!   ./target/release/bench_vm [--vms 10] [--memory-mib 128]

use std::time::{Duration, Instant};

use tests::{kubectl, wait_for, Agent, CloudCore, EdgeCore};

fn field(cc: &CloudCore, pod: &str, path: &str) -> String {
    cc.jsonpath("pod", pod, path)
}

/// Resident and proportional KiB of `pid` outside its guest-RAM mapping (the largest mapping
/// of at least the guest's size), and the guest RAM's resident KiB.
fn qemu_split_kib(pid: u32, guest_kib: u64) -> (u64, u64, u64) {
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap_or_default();
    // (size, rss, pss) per mapping.
    let mut maps: Vec<(u64, u64, u64)> = Vec::new();
    for l in smaps.lines() {
        let mut w = l.split_whitespace();
        let key = w.next();
        let v: u64 = w.next().and_then(|v| v.parse().ok()).unwrap_or(0);
        match (key, maps.last_mut()) {
            (Some("Size:"), _) => maps.push((v, 0, 0)),
            (Some("Rss:"), Some(m)) => m.1 = v,
            (Some("Pss:"), Some(m)) => m.2 = v,
            _ => {}
        }
    }
    let guest = maps
        .iter()
        .enumerate()
        .filter(|(_, m)| m.0 >= guest_kib)
        .max_by_key(|(_, m)| m.0)
        .map(|(i, _)| i);
    let (mut rss, mut pss, mut ram) = (0, 0, 0);
    for (i, m) in maps.iter().enumerate() {
        if Some(i) == guest {
            ram += m.1;
        } else {
            rss += m.1;
            pss += m.2;
        }
    }
    (rss, pss, ram)
}

/// The shim of the VM whose qemu is `qemu_pid` (its parent).
fn parent(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

struct Run {
    running: Vec<Duration>,
    ready: Vec<Duration>,
}

fn main() -> anyhow::Result<()> {
    let n = tests::bench_arg("--vms", 10)? as usize;
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
    let t = Duration::from_secs(300);
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
    let create = |name: &str| -> anyhow::Result<()> {
        let out = kubectl(&kc, &dir, &["apply", "-f", "-"], Some(&pod(name)));
        anyhow::ensure!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(())
    };
    let is_running = |name: &str| field(&cc, name, "{.status.phase}") == "Running";
    let is_ready = |name: &str| {
        String::from_utf8_lossy(&cc.kubectl(&["logs", name]).stdout).contains("atoll-vm: ready")
    };
    // The first pull, not measured.
    create("warm")?;
    wait_for("warm Running", t, || is_running("warm"));
    cc.kubectl_ok(&["delete", "pod", "warm", "--wait=true"]);

    // One after another.
    let mut seq = Run {
        running: vec![],
        ready: vec![],
    };
    for i in 0..n {
        let name = format!("s{i}");
        let start = Instant::now();
        create(&name)?;
        wait_for("Running", t, || is_running(&name));
        seq.running.push(start.elapsed());
        wait_for("the guest's ready line", t, || is_ready(&name));
        seq.ready.push(start.elapsed());
        cc.kubectl_ok(&["delete", "pod", &name, "--wait=true"]);
    }

    // A burst: all created at once, each watched until running and ready.
    let names: Vec<String> = (0..n).map(|i| format!("b{i}")).collect();
    let start = Instant::now();
    for name in &names {
        create(name)?;
    }
    let mut burst = Run {
        running: vec![Duration::ZERO; n],
        ready: vec![Duration::ZERO; n],
    };
    let (mut run_done, mut ready_done) = (vec![false; n], vec![false; n]);
    let deadline = Instant::now() + t;
    while ready_done.iter().any(|d| !d) {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the burst did not finish within {t:?}"
        );
        for (i, name) in names.iter().enumerate() {
            if !run_done[i] && is_running(name) {
                run_done[i] = true;
                burst.running[i] = start.elapsed();
            }
            if run_done[i] && !ready_done[i] && is_ready(name) {
                ready_done[i] = true;
                burst.ready[i] = start.elapsed();
            }
        }
        // Pace the polling (kubectl runs cost the machine the VMs boot on).
        std::thread::sleep(Duration::from_millis(100));
    }

    // Host memory per VM beyond its guest (all N running, booted).
    let guest_kib = mem * 1024;
    let (mut qemu_rss, mut qemu_pss, mut shim_rss, mut shim_pss, mut guest_ram) =
        (vec![], vec![], vec![], vec![], vec![]);
    for name in &names {
        let uid = field(&cc, name, "{.metadata.uid}");
        let pid: u32 =
            std::fs::read_to_string(format!("/sys/fs/cgroup/memory/atoll/{uid}/vm/cgroup.procs"))?
                .split_whitespace()
                .next()
                .and_then(|p| p.parse().ok())
                .ok_or_else(|| anyhow::anyhow!("no qemu in {name}'s cgroup"))?;
        let (rss, pss, ram) = qemu_split_kib(pid, guest_kib);
        qemu_rss.push(rss / 1024);
        qemu_pss.push(pss / 1024);
        guest_ram.push(ram / 1024);
        let shim = parent(pid).unwrap_or(0);
        shim_rss.push(tests::rss_kib(shim) / 1024);
        shim_pss.push(tests::proc_kib(shim, "smaps_rollup", "Pss:") / 1024);
    }
    for name in &names {
        cc.kubectl_ok(&["delete", "pod", name, "--wait=false"]);
    }
    let p = |v: &[Duration], q: f64| tests::percentile_ms(v.to_vec(), q) / 1000.0;
    let med = |v: &mut Vec<u64>| {
        v.sort();
        v[v.len() / 2]
    };
    println!("VM pods ({accel}, {mem} MiB guests, {n} VMs, image cached):");
    for (what, r) in [("one after another", &seq), ("burst of all", &burst)] {
        println!(
            "  {what:18} create -> Running at the cloud  p50 {:.2} s  p99 {:.2} s",
            p(&r.running, 0.5),
            p(&r.running, 0.99)
        );
        println!(
            "  {what:18} create -> guest ready (console) p50 {:.2} s  p99 {:.2} s",
            p(&r.ready, 0.5),
            p(&r.ready, 0.99)
        );
    }
    let (qr, qp, sr, sp, g) = (
        med(&mut qemu_rss),
        med(&mut qemu_pss),
        med(&mut shim_rss),
        med(&mut shim_pss),
        med(&mut guest_ram),
    );
    println!(
        "  host memory per VM beyond its guest RAM (median of {n} running): PSS qemu {qp} + shim {sp} = {} MiB; RSS qemu {qr} + shim {sr} = {} MiB (guest RAM resident: {g} of {mem} MiB)",
        qp + sp,
        qr + sr
    );
    println!(
        "summary bench_vm accel={accel} vms={n} seq_running_p50_s={:.2} seq_ready_p50_s={:.2} burst_running_p50_s={:.2} burst_running_p99_s={:.2} burst_ready_p50_s={:.2} burst_ready_p99_s={:.2} overhead_pss_mib={} overhead_rss_mib={}",
        p(&seq.running, 0.5),
        p(&seq.ready, 0.5),
        p(&burst.running, 0.5),
        p(&burst.running, 0.99),
        p(&burst.ready, 0.5),
        p(&burst.ready, 0.99),
        qp + sp,
        qr + sr
    );
    Ok(())
}
