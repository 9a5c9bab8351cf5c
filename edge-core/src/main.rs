//! `edge-core`: parse config, start tracing, run the site, drain on a signal.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

#[derive(Parser)]
#[command(name = "edge-core", version, about = "Atoll edge site control plane")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Serve the site's Kubernetes API, synced with the cloud.
    Serve {
        /// Data directory: local store, credentials, admin.kubeconfig.
        #[arg(long, env = "ATOLL_DATA_DIR")]
        data_dir: PathBuf,
        /// The cloud's sync address (HOST:PORT of `cloud-core serve --sync-listen`); a region
        /// of several replicas: each one's, comma-separated (the site moves to the next when
        /// one goes away).
        #[arg(long, env = "ATOLL_CLOUD", value_delimiter = ',', required = true)]
        cloud: Vec<String>,
        /// This site's name.
        #[arg(long, env = "ATOLL_SITE")]
        site: String,
        /// Single-use join token (first start only).
        #[arg(long, env = "ATOLL_JOIN_TOKEN", hide_env_values = true)]
        join_token: Option<String>,
        /// API listen address.
        #[arg(long, env = "ATOLL_LISTEN", default_value = "127.0.0.1:6444")]
        listen: SocketAddr,
        /// Recent events a watch can resume from.
        #[arg(long, env = "ATOLL_WATCH_WINDOW", default_value_t = 2_000, value_parser = clap::value_parser!(u64).range(1..))]
        watch_window: u64,
    },
}

fn main() -> ExitCode {
    let cli = match boot::parse_args::<Cli>() {
        Ok(c) => c,
        Err(code) => return code,
    };
    boot::init_tracing();
    let rt = match boot::runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    let Cmd::Serve {
        data_dir,
        cloud,
        site,
        join_token,
        listen,
        watch_window,
    } = cli.cmd;
    let result = rt.block_on(async move {
        let cancel = CancellationToken::new();
        tokio::spawn(boot::shutdown_signal(cancel.clone()));
        let tracker = TaskTracker::new();
        let cfg = edge_core::EdgeConfig {
            data_dir,
            cloud,
            site,
            join_token,
            listen,
            watch_window: watch_window as usize,
            in_memory: false,
            judge_nodes: true,
        };
        edge_core::start(cfg, cancel.clone(), &tracker).await?;
        cancel.cancelled().await;
        tracker.close();
        let _ = tokio::time::timeout(Duration::from_secs(10), tracker.wait()).await;
        Ok::<_, edge_core::Error>(())
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e @ edge_core::Error::Config(_)) => {
            eprintln!("error: {e}");
            ExitCode::from(64)
        }
        Err(e) => {
            let mut msg = e.to_string();
            let mut src = std::error::Error::source(&e);
            while let Some(s) = src {
                msg.push_str(&format!(": {s}"));
                src = s.source();
            }
            eprintln!("error: {msg}");
            ExitCode::from(1)
        }
    }
}
