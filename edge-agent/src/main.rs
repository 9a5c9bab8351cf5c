//! `edge-agent`: parse config, start tracing, run the agent, stop on a signal. Subcommands:
//! `image import|pull|list`, `reset` (remove everything the agent made on this host), and the
//! internal `shim`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(
    name = "edge-agent",
    version,
    about = "Atoll node agent",
    subcommand_negates_reqs = true,
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    cmd: Option<Cmd>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(clap::Args)]
struct RunArgs {
    /// Kubeconfig of the API server this node belongs to (edge-core, or cloud-core).
    #[arg(long, env = "ATOLL_KUBECONFIG", required = true)]
    kubeconfig: Option<PathBuf>,
    /// This node's name.
    #[arg(long, env = "ATOLL_NODE_NAME", required = true)]
    node_name: Option<String>,
    /// The agent's state directory.
    #[arg(long, env = "ATOLL_ROOT_DIR", required = true)]
    root_dir: Option<PathBuf>,
    /// Registries to reach over plain HTTP (HOST:PORT).
    #[arg(
        long = "insecure-registry",
        env = "ATOLL_INSECURE_REGISTRIES",
        value_delimiter = ','
    )]
    insecure_registries: Vec<String>,
    /// Address of the agent's own HTTPS endpoint (container logs).
    #[arg(long, env = "ATOLL_LISTEN", default_value = "0.0.0.0:10250")]
    listen: SocketAddr,
    /// The node's IP (status.hostIP); found from the routing table when absent.
    #[arg(long, env = "ATOLL_NODE_IP")]
    node_ip: Option<std::net::IpAddr>,
    /// Pod addresses on this node; each tenant gets its own /24 of it.
    #[arg(long, env = "ATOLL_POD_CIDR", default_value = "10.88.0.0/16")]
    pod_cidr: String,
    /// Where the CNI plugins are.
    #[arg(
        long = "cni-bin-dir",
        env = "ATOLL_CNI_BIN_DIRS",
        value_delimiter = ',',
        default_value = "/usr/lib/cni,/opt/cni/bin"
    )]
    cni_bin_dirs: Vec<PathBuf>,
    /// First container restart back-off (doubles up to 5 minutes), e.g. 10s, 500ms.
    #[arg(long, env = "ATOLL_RESTART_BACKOFF", default_value = "10s", value_parser = boot::parse_duration)]
    restart_backoff: Duration,
    /// VM pods: the qemu to run them with (default: `qemu-system-x86_64` on PATH; KVM when a
    /// probe guest runs under it within 3 s, else TCG).
    #[arg(long, env = "ATOLL_QEMU")]
    qemu: Option<PathBuf>,
    /// Run no VM pods on this node, even where qemu is installed.
    #[arg(long, env = "ATOLL_NO_VMS")]
    no_vms: bool,
}

#[derive(Subcommand)]
enum Cmd {
    /// Manage the node's images.
    Image {
        #[command(subcommand)]
        cmd: ImageCmd,
    },
    /// Remove every container, mount, network namespace, bridge and firewall table this agent
    /// made on the host (the agent must be stopped).
    Reset {
        /// The agent's state directory.
        #[arg(long, env = "ATOLL_ROOT_DIR")]
        root_dir: PathBuf,
        /// The pod CIDR the agent ran with.
        #[arg(long, env = "ATOLL_POD_CIDR", default_value = "10.88.0.0/16")]
        pod_cidr: String,
    },
    /// Internal: the per-container supervisor.
    #[command(hide = true)]
    Shim(edge_agent::shim::ShimArgs),
}

#[derive(Subcommand)]
enum ImageCmd {
    /// Load OCI archives or docker-archive tarballs (for sites with no registry).
    Import {
        /// The agent's state directory.
        #[arg(long, env = "ATOLL_ROOT_DIR")]
        root_dir: PathBuf,
        /// Archives.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Pull an image from its registry.
    Pull {
        /// The agent's state directory.
        #[arg(long, env = "ATOLL_ROOT_DIR")]
        root_dir: PathBuf,
        /// Registries to reach over plain HTTP (HOST:PORT).
        #[arg(long = "insecure-registry", value_delimiter = ',')]
        insecure_registries: Vec<String>,
        /// Image reference.
        image: String,
    },
    /// List the node's images.
    List {
        /// The agent's state directory.
        #[arg(long, env = "ATOLL_ROOT_DIR")]
        root_dir: PathBuf,
    },
}

/// The address the host would use to reach the outside (no packet is sent).
fn default_ip() -> std::net::IpAddr {
    std::net::UdpSocket::bind("0.0.0.0:0")
        .and_then(|s| s.connect("192.0.2.1:9").map(|_| s))
        .and_then(|s| s.local_addr())
        .map(|a| a.ip())
        .unwrap_or(std::net::IpAddr::from([127, 0, 0, 1]))
}

struct Run {
    kubeconfig: PathBuf,
    node_name: String,
    root_dir: PathBuf,
    args: RunArgs,
}

async fn run(r: Run) -> anyhow::Result<()> {
    let root = r.root_dir.clone();
    std::fs::create_dir_all(&root).map_err(|e| anyhow::anyhow!("{}: {e}", root.display()))?;
    // Container specs (with their environment), secrets and logs live here: root only.
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| anyhow::anyhow!("{}: {e}", root.display()))?;
    }
    let kc = kube::config::Kubeconfig::read_from(&r.kubeconfig)?;
    let cfg = kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
        .await?;
    let client = kube::Client::try_from(cfg)?;
    let cancel = CancellationToken::new();
    tokio::spawn(boot::shutdown_signal(cancel.clone()));
    let images = edge_agent::image::ImageStore::open(&root, r.args.insecure_registries.clone())?;
    let network = edge_agent::network::Network::new(edge_agent::network::NetConfig {
        cni_bin_dirs: r.args.cni_bin_dirs.clone(),
        pod_cidr: r.args.pod_cidr.clone(),
        state_dir: root.join("net"),
    })?;
    let exe = std::env::current_exe()?;
    let runtime = edge_agent::metrics::Timed(edge_agent::runtime::Runc::new(&root, exe)?);
    let node_ip = r.args.node_ip.unwrap_or_else(default_ip).to_string();
    let listener = tokio::net::TcpListener::bind(r.args.listen)
        .await
        .map_err(|e| anyhow::anyhow!("listen on {}: {e}", r.args.listen))?;
    let port = listener.local_addr()?.port();
    let vm = if r.args.no_vms {
        None
    } else {
        match edge_agent::vm::qemu::Qemu::detect(r.args.qemu.clone()).await {
            Ok(q) => {
                tracing::info!(qemu = %q.binary.display(), accel = q.accel.name(), "VM pods run under qemu");
                Some(q)
            }
            Err(e) => {
                tracing::info!(reason = %e, "this node runs no VM pods");
                None
            }
        }
    };
    let node = Arc::new(edge_agent::pods::Node {
        client: client.clone(),
        name: r.node_name.clone(),
        root: root.clone(),
        runtime,
        images,
        network: Some(network),
        node_ip: node_ip.clone(),
        backoff: r.args.restart_backoff,
        vm,
    });
    let labels = match &node.vm {
        Some(_) => vec![(proto::vm::NODE_LABEL.to_string(), "qemu".to_string())],
        None => Vec::new(),
    };
    let endpoint = edge_agent::node::Endpoint {
        ip: node_ip,
        port,
        labels,
    };
    edge_agent::serve(node, listener, &r.kubeconfig, endpoint, cancel).await?;
    Ok(())
}

fn sub(cmd: Cmd) -> ExitCode {
    if let Cmd::Shim(a) = cmd {
        return edge_agent::shim::run(a);
    }
    boot::init_tracing();
    let rt = match boot::runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    let res: anyhow::Result<()> = rt.block_on(async move {
        match cmd {
            Cmd::Shim(_) => Ok(()),
            Cmd::Reset { root_dir, pod_cidr } => edge_agent::reset(&root_dir, &pod_cidr).await,
            Cmd::Image { cmd } => match cmd {
                ImageCmd::Import { root_dir, files } => {
                    let store = edge_agent::image::ImageStore::open(&root_dir, Vec::new())?;
                    for f in files {
                        for r in store.import(&f)? {
                            println!("imported {r}");
                        }
                    }
                    Ok(())
                }
                ImageCmd::Pull {
                    root_dir,
                    insecure_registries,
                    image,
                } => {
                    let store =
                        edge_agent::image::ImageStore::open(&root_dir, insecure_registries)?;
                    let img = store.pull(&image).await?;
                    println!("{} {}", img.reference, img.id);
                    Ok(())
                }
                ImageCmd::List { root_dir } => {
                    let store = edge_agent::image::ImageStore::open(&root_dir, Vec::new())?;
                    for (r, id) in store.list() {
                        println!("{r}\t{id}");
                    }
                    Ok(())
                }
            },
        }
    });
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn main() -> ExitCode {
    let cli = match boot::parse_args::<Cli>() {
        Ok(c) => c,
        Err(code) => return code,
    };
    if let Some(cmd) = cli.cmd {
        return sub(cmd);
    }
    let (Some(kubeconfig), Some(node_name), Some(root_dir)) = (
        cli.run.kubeconfig.clone(),
        cli.run.node_name.clone(),
        cli.run.root_dir.clone(),
    ) else {
        eprintln!("error: --kubeconfig, --node-name and --root-dir are required");
        return ExitCode::from(64);
    };
    // Bad configuration exits 64 before anything starts.
    if !proto::names::is_dns1123_subdomain(&node_name) {
        eprintln!("error: invalid node name {node_name:?}: must be an RFC 1123 subdomain");
        return ExitCode::from(64);
    }
    if !kubeconfig.is_file() {
        eprintln!("error: kubeconfig {} does not exist", kubeconfig.display());
        return ExitCode::from(64);
    }
    if let Err(e) = edge_agent::network::parse_pod_cidr(&cli.run.pod_cidr) {
        eprintln!("error: --pod-cidr: {e}");
        return ExitCode::from(64);
    }
    boot::init_tracing();
    let rt = match boot::runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    let r = Run {
        kubeconfig,
        node_name,
        root_dir,
        args: cli.run,
    };
    match rt.block_on(run(r)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}
