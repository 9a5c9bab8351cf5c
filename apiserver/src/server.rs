//! HTTPS transport: rustls (TLS 1.2/1.3, ALPN h2 + http/1.1), hyper, body limits, streaming.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{combinators::UnsyncBoxBody, BodyExt, Full, Limited, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::api::{Api, Query, Reply, Request};
use crate::error::ApiError;

/// Response body type.
pub type Body = UnsyncBoxBody<Bytes, std::io::Error>;

/// Transport failures.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The certificate or key could not be used.
    #[error("tls configuration")]
    Tls(#[from] rustls::Error),
    /// PEM could not be parsed.
    #[error("pem: {0}")]
    Pem(String),
}

/// A rustls server config from PEM cert chain and key.
pub fn tls_config(
    cert_pem: &[u8],
    key_pem: &[u8],
) -> Result<Arc<rustls::ServerConfig>, ServerError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| ServerError::Pem(e.to_string()))?;
    let key =
        PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| ServerError::Pem(e.to_string()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// A serving certificate that can be replaced while the listener runs (certificate rotation).
#[derive(Debug)]
pub struct SwapCert(std::sync::RwLock<Arc<rustls::sign::CertifiedKey>>);

fn certified(
    cert_pem: &[u8],
    key_pem: &[u8],
) -> Result<Arc<rustls::sign::CertifiedKey>, ServerError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| ServerError::Pem(e.to_string()))?;
    let key =
        PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| ServerError::Pem(e.to_string()))?;
    let signer = rustls::crypto::ring::default_provider()
        .key_provider
        .load_private_key(key)?;
    Ok(Arc::new(rustls::sign::CertifiedKey::new(certs, signer)))
}

impl SwapCert {
    /// Start with this certificate.
    pub fn new(cert_pem: &[u8], key_pem: &[u8]) -> Result<Arc<Self>, ServerError> {
        Ok(Arc::new(SwapCert(std::sync::RwLock::new(certified(
            cert_pem, key_pem,
        )?))))
    }

    /// Serve this certificate to new connections from now on.
    pub fn set(&self, cert_pem: &[u8], key_pem: &[u8]) -> Result<(), ServerError> {
        let c = certified(cert_pem, key_pem)?;
        if let Ok(mut g) = self.0.write() {
            *g = c;
        }
        Ok(())
    }
}

impl rustls::server::ResolvesServerCert for SwapCert {
    fn resolve(
        &self,
        _: rustls::server::ClientHello<'_>,
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        self.0.read().ok().map(|c| c.clone())
    }
}

/// A server config whose certificate can be swapped at run time.
pub fn tls_config_swappable(cert: Arc<SwapCert>) -> Result<Arc<rustls::ServerConfig>, ServerError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(cert);
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// The `Retry-After` of a 503.
pub const RETRY_AFTER_SECS: u64 = 1;

fn full(
    status: http::StatusCode,
    ct: &str,
    body: Bytes,
    warnings: &[String],
) -> http::Response<Body> {
    let mut b = http::Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, ct);
    // A 503 (the storage unreachable, the server shutting down) is worth retrying shortly; the
    // Status carries the same advice in details.retryAfterSeconds.
    if status == http::StatusCode::SERVICE_UNAVAILABLE {
        b = b.header(http::header::RETRY_AFTER, RETRY_AFTER_SECS.to_string());
    }
    for w in warnings {
        let v = format!("299 - {}", serde_json::Value::String(w.clone()));
        b = b.header("Warning", v);
    }
    b.body(
        Full::new(body)
            .map_err(|never: Infallible| match never {})
            .boxed_unsync(),
    )
    .unwrap_or_else(|_| {
        http::Response::new(
            Full::new(Bytes::new())
                .map_err(|never: Infallible| match never {})
                .boxed_unsync(),
        )
    })
}

/// Convert a reply into an HTTP response.
pub fn into_response(reply: Reply) -> http::Response<Body> {
    match reply {
        Reply::Full {
            status,
            content_type,
            body,
            warnings,
        } => full(status, content_type, body, &warnings),
        Reply::Switching { headers } => {
            let mut resp = http::Response::new(
                Full::new(Bytes::new())
                    .map_err(|never: Infallible| match never {})
                    .boxed_unsync(),
            );
            *resp.status_mut() = http::StatusCode::SWITCHING_PROTOCOLS;
            *resp.headers_mut() = headers;
            resp
        }
        Reply::Stream { content_type, rx } => {
            let stream = futures_util::stream::unfold(rx, |mut rx| async move {
                rx.recv()
                    .await
                    .map(|b| (Ok::<_, std::io::Error>(Frame::data(b)), rx))
            });
            http::Response::builder()
                .status(200)
                .header(http::header::CONTENT_TYPE, content_type)
                .header("Transfer-Encoding", "chunked")
                .body(StreamBody::new(stream).boxed_unsync())
                .unwrap_or_else(|_| {
                    full(
                        http::StatusCode::INTERNAL_SERVER_ERROR,
                        "text/plain",
                        Bytes::new(),
                        &[],
                    )
                })
        }
    }
}

/// Read a request (body capped at `max`) and run it through the API.
pub async fn handle(api: Arc<Api>, req: http::Request<Incoming>) -> http::Response<Body> {
    let (mut parts, body) = req.into_parts();
    let upgrade = parts.extensions.remove::<hyper::upgrade::OnUpgrade>();
    let max = api.config.max_body;
    let declared = parts
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|l| l > max) {
        return into_response(Reply::error(&ApiError::too_large(max)));
    }
    let body = match Limited::new(body, max).collect().await {
        Ok(c) => c.to_bytes(),
        Err(e) => {
            let err = if e
                .downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                ApiError::too_large(max)
            } else {
                ApiError::bad_request("error reading the request body")
            };
            return into_response(Reply::error(&err));
        }
    };
    let request = Request {
        method: parts.method,
        path: parts.uri.path().to_string(),
        query: Query::parse(parts.uri.query()),
        headers: parts.headers,
        body,
        upgrade,
    };
    let (method, path) = (request.method.clone(), request.path.clone());
    let reply = api.handle(request).await;
    if let Reply::Full { status, .. } = &reply {
        if status.is_server_error() {
            tracing::warn!(%method, %path, status = status.as_u16(), "request failed");
        } else {
            tracing::debug!(%method, %path, status = status.as_u16(), "request");
        }
    }
    into_response(reply)
}

/// Accept TLS connections on `listener` until `cancel` fires.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    api: Arc<Api>,
    cancel: CancellationToken,
    tracker: TaskTracker,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    loop {
        let (tcp, peer) = tokio::select! {
            _ = cancel.cancelled() => return,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let api = api.clone();
        let cancel = cancel.clone();
        tracker.spawn(async move {
            let tls = match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "tls handshake failed");
                    return;
                }
                Err(_) => return,
            };
            let svc = hyper::service::service_fn(move |req| {
                let api = api.clone();
                async move { Ok::<_, Infallible>(handle(api, req).await) }
            });
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(tls), svc);
            tokio::select! {
                r = conn => if let Err(e) = r { tracing::debug!(%peer, error = %e, "connection ended") },
                _ = cancel.cancelled() => {}
            }
        });
    }
}
