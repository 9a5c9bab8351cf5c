//! `edge-agent`: parse config, start tracing, run the agent, stop on a signal.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(name = "edge-agent", version, about = "Atoll node agent")]
struct Cli {
    /// Kubeconfig of the API server this node belongs to (edge-core, or cloud-core).
    #[arg(long, env = "ATOLL_KUBECONFIG")]
    kubeconfig: PathBuf,
    /// This node's name.
    #[arg(long, env = "ATOLL_NODE_NAME")]
    node_name: String,
    /// The agent's state directory.
    #[arg(long, env = "ATOLL_ROOT_DIR")]
    root_dir: PathBuf,
    /// Registries to reach over plain HTTP (HOST:PORT).
    #[arg(
        long = "insecure-registry",
        env = "ATOLL_INSECURE_REGISTRIES",
        value_delimiter = ','
    )]
    insecure_registries: Vec<String>,
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    std::fs::create_dir_all(&cli.root_dir)
        .map_err(|e| anyhow::anyhow!("{}: {e}", cli.root_dir.display()))?;
    let kc = kube::config::Kubeconfig::read_from(&cli.kubeconfig)?;
    let cfg = kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
        .await?;
    let client = kube::Client::try_from(cfg)?;
    let cancel = CancellationToken::new();
    tokio::spawn(apiserver::bootstrap::shutdown_signal(cancel.clone()));
    edge_agent::node::run(client, cli.node_name, cancel).await?;
    Ok(())
}

fn main() -> ExitCode {
    let cli = match apiserver::bootstrap::parse_args::<Cli>() {
        Ok(c) => c,
        Err(code) => return code,
    };
    // Bad configuration exits 64 before anything starts.
    if !apiserver::validate::is_dns1123_subdomain(&cli.node_name) {
        eprintln!(
            "error: invalid node name {:?}: must be an RFC 1123 subdomain",
            cli.node_name
        );
        return ExitCode::from(64);
    }
    if !cli.kubeconfig.is_file() {
        eprintln!(
            "error: kubeconfig {} does not exist",
            cli.kubeconfig.display()
        );
        return ExitCode::from(64);
    }
    apiserver::bootstrap::init_tracing();
    let rt = match apiserver::bootstrap::runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    match rt.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}
