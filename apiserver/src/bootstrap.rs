//! Start-up pieces shared by cloud-core and edge-core: the system namespaces, the local admin
//! credential, private files, and the binaries' tracing and signal handling.

use std::path::Path;

use serde_json::json;

use crate::api::{default_sa, namespace_object};
use crate::auth::{self, Identity};
use crate::client::Kubeconfig;
use crate::store::{Key, Op, Precondition, Store, StoreError};

/// The namespaces every space starts with.
pub const SYSTEM_NAMESPACES: &[&str] =
    &["default", "kube-system", "kube-public", "kube-node-lease"];

/// Create the system space's namespaces (each with its default ServiceAccount) if missing.
pub async fn system_namespaces(store: &Store) -> Result<(), StoreError> {
    for ns in SYSTEM_NAMESPACES {
        if store.get(&Key::new("namespaces", "", "", ns)).is_none() {
            let key = Key::new("namespaces", "", "", ns);
            store
                .commit(vec![
                    Op::Put {
                        key,
                        value: namespace_object("", ns),
                        pre: Precondition::Absent,
                    },
                    default_sa("", ns),
                ])
                .await?;
        }
    }
    Ok(())
}

/// The admin token: reused when the kubeconfig at `path` still holds a valid one, otherwise
/// minted (stored only as a hash, with `annotations` on its record). Returns the token and
/// whether it is new.
pub async fn admin_token(
    store: &Store,
    path: &Path,
    annotations: Option<serde_json::Value>,
) -> Result<(String, bool), StoreError> {
    if let Ok(k) = Kubeconfig::load(path) {
        if auth::authenticate(store, &k.token).is_some_and(|id| id.is_system_admin()) {
            return Ok((k.token, false));
        }
    }
    let token = auth::new_token();
    let mut rec = auth::token_record(&Identity::system_admin(), None, None);
    rec["metadata"]["name"] = json!(auth::hash_token(&token));
    if let Some(a) = annotations {
        rec["metadata"]["annotations"] = a;
    }
    store
        .put(auth::token_key(&token), rec, Precondition::Absent)
        .await?;
    Ok((token, true))
}

/// Write a file readable only by its owner, atomically (temp file, fsync, rename).
pub fn write_private(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(data)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// Wait for SIGTERM or SIGINT, cancel `cancel`, and exit at once on a second signal.
pub async fn shutdown_signal(cancel: tokio_util::sync::CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return;
    };
    tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
    tracing::info!("shutting down; a second signal forces exit");
    cancel.cancel();
    tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
    std::process::exit(130);
}

/// Install the binaries' log subscriber: filter from `ATOLL_LOG` (default `info`), plain text or
/// JSON (`ATOLL_LOG_FORMAT=json`), on stderr. Call once, from `main`.
pub fn init_tracing() {
    use tracing_subscriber::{fmt, EnvFilter};
    let filter = EnvFilter::try_from_env("ATOLL_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    if std::env::var("ATOLL_LOG_FORMAT").as_deref() == Ok("json") {
        fmt()
            .json()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .init();
    } else {
        fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .init();
    }
}

/// Parse a binary's command line: `--help`/`--version` print and exit 0; bad arguments print
/// the error and exit 64 (bad configuration), before anything starts.
pub fn parse_args<C: clap::Parser>() -> Result<C, std::process::ExitCode> {
    C::try_parse().map_err(|e| {
        let code = if e.use_stderr() { 64 } else { 0 };
        let _ = e.print();
        std::process::ExitCode::from(code)
    })
}

/// A binary's one multi-threaded runtime (exit 1 if it cannot start).
pub fn runtime() -> Result<tokio::runtime::Runtime, std::process::ExitCode> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            eprintln!("error: starting the runtime: {e}");
            std::process::ExitCode::from(1)
        })
}
