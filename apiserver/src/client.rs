//! A minimal HTTPS client for Atoll's own command-line tools, and kubeconfig reading/writing.
//! (Tests and benchmarks use the `kube` crate, as users would.)

use std::sync::Arc;

use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::Value;

/// Client failures.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The kubeconfig could not be read or lacks a field.
    #[error("kubeconfig: {0}")]
    Config(String),
    /// Connecting or TLS failed.
    #[error("connecting to {0}")]
    Connect(String, #[source] std::io::Error),
    /// The HTTP exchange failed.
    #[error("http")]
    Http(#[from] hyper::Error),
    /// The server answered with an error status.
    #[error("{message} ({code})")]
    Status {
        /// HTTP code.
        code: u16,
        /// The `Status` message.
        message: String,
    },
}

/// What a client needs from a kubeconfig.
#[derive(Clone, Debug)]
pub struct Kubeconfig {
    /// `https://host:port`.
    pub server: String,
    /// CA bundle (PEM).
    pub ca_pem: Vec<u8>,
    /// Bearer token.
    pub token: String,
}

impl Kubeconfig {
    /// Read the current context of a kubeconfig file.
    pub fn load(path: &std::path::Path) -> Result<Self, ClientError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ClientError::Config(format!("{}: {e}", path.display())))?;
        let doc: Value = serde_yaml::from_str(&text)
            .map_err(|e| ClientError::Config(format!("{}: {e}", path.display())))?;
        let ctx_name = doc
            .get("current-context")
            .and_then(Value::as_str)
            .unwrap_or("");
        let find = |list: &str, name: &str| -> Option<Value> {
            doc.get(list)?
                .as_array()?
                .iter()
                .find(|e| e.get("name").and_then(Value::as_str) == Some(name))
                .cloned()
        };
        let missing = |what: &str| ClientError::Config(format!("{}: no {what}", path.display()));
        let ctx = find("contexts", ctx_name).ok_or_else(|| missing("current context"))?;
        let cluster = find(
            "clusters",
            ctx.pointer("/context/cluster")
                .and_then(Value::as_str)
                .unwrap_or(""),
        )
        .ok_or_else(|| missing("cluster"))?;
        let user = find(
            "users",
            ctx.pointer("/context/user")
                .and_then(Value::as_str)
                .unwrap_or(""),
        )
        .ok_or_else(|| missing("user"))?;
        let server = cluster
            .pointer("/cluster/server")
            .and_then(Value::as_str)
            .ok_or_else(|| missing("server"))?
            .to_string();
        let ca = cluster
            .pointer("/cluster/certificate-authority-data")
            .and_then(Value::as_str)
            .ok_or_else(|| missing("certificate-authority-data"))?;
        let ca_pem = base64::engine::general_purpose::STANDARD
            .decode(ca)
            .map_err(|_| missing("valid certificate-authority-data"))?;
        let token = user
            .pointer("/user/token")
            .and_then(Value::as_str)
            .ok_or_else(|| missing("user token"))?
            .to_string();
        Ok(Kubeconfig {
            server,
            ca_pem,
            token,
        })
    }

    /// Render a kubeconfig with one cluster, user and context.
    pub fn render(&self, cluster: &str, user: &str) -> String {
        let ca = base64::engine::general_purpose::STANDARD.encode(&self.ca_pem);
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: {cluster}\n  cluster:\n    server: {server}\n    certificate-authority-data: {ca}\nusers:\n- name: {user}\n  user:\n    token: {token}\ncontexts:\n- name: {user}@{cluster}\n  context:\n    cluster: {cluster}\n    user: {user}\ncurrent-context: {user}@{cluster}\n",
            server = self.server,
            token = self.token,
        )
    }
}

/// A one-request-per-connection HTTPS client.
pub struct Client {
    cfg: Kubeconfig,
    tls: tokio_rustls::TlsConnector,
}

impl Client {
    /// A client for the kubeconfig's server.
    pub fn new(cfg: Kubeconfig) -> Result<Self, ClientError> {
        use rustls::pki_types::{pem::PemObject, CertificateDer};
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_slice_iter(&cfg.ca_pem) {
            let c = c.map_err(|e| ClientError::Config(format!("CA: {e}")))?;
            roots
                .add(c)
                .map_err(|e| ClientError::Config(format!("CA: {e}")))?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| ClientError::Config(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Client {
            cfg,
            tls: tokio_rustls::TlsConnector::from(Arc::new(tls)),
        })
    }

    /// Send a request; a non-2xx answer becomes [`ClientError::Status`].
    pub async fn request(
        &self,
        method: http::Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, ClientError> {
        let authority = self
            .cfg
            .server
            .trim_start_matches("https://")
            .trim_end_matches('/')
            .to_string();
        let host = authority
            .rsplit_once(':')
            .map_or(authority.as_str(), |(h, _)| h)
            .trim_matches(['[', ']'])
            .to_string();
        let tcp = tokio::net::TcpStream::connect(&authority)
            .await
            .map_err(|e| ClientError::Connect(authority.clone(), e))?;
        let name = rustls::pki_types::ServerName::try_from(host)
            .map_err(|e| ClientError::Config(e.to_string()))?;
        let tls = self
            .tls
            .connect(name, tcp)
            .await
            .map_err(|e| ClientError::Connect(authority.clone(), e))?;
        let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
        tokio::spawn(conn);
        let bytes = body
            .map(|b| Bytes::from(serde_json::to_vec(b).unwrap_or_default()))
            .unwrap_or_default();
        let req = http::Request::builder()
            .method(method)
            .uri(path)
            .header(http::header::HOST, authority.as_str())
            .header(
                http::header::AUTHORIZATION,
                format!("Bearer {}", self.cfg.token),
            )
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(http::header::ACCEPT, "application/json")
            .body(Full::new(bytes))
            .map_err(|e| ClientError::Config(e.to_string()))?;
        let resp = send.send_request(req).await?;
        let code = resp.status().as_u16();
        let body = resp.into_body().collect().await?.to_bytes();
        let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        if !(200..300).contains(&code) {
            let message = v
                .get("message")
                .and_then(Value::as_str)
                .map(String::from)
                .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
            return Err(ClientError::Status { code, message });
        }
        Ok(v)
    }
}
