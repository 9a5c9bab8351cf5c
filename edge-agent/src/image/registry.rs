//! A registry client for the Distribution API v2: HTTPS (system roots plus `certs.d`) or plain
//! HTTP for insecure registries, redirects, anonymous bearer tokens, digest-verified blobs
//! streamed to disk.

use proto::query::percent_encode;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use super::manifest::MANIFEST_ACCEPT;
use super::reference::Reference;
use super::unpack::hex_digest;
use super::ImageError;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// Until response headers arrive.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(60);
/// Between two chunks of a body.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
const MAX_REDIRECTS: usize = 5;
const USER_AGENT: &str = concat!("atoll-edge-agent/", env!("CARGO_PKG_VERSION"));

/// An absolute URL, split the way requests need it.
#[derive(Clone, Debug)]
struct Url {
    https: bool,
    /// `host[:port]` as written (the `Host` header and the `certs.d` directory name).
    authority: String,
    host: String,
    port: u16,
    path_and_query: String,
}

impl Url {
    fn parse(s: &str) -> Result<Url, String> {
        let uri: http::Uri = s.parse().map_err(|e| format!("bad url {s:?}: {e}"))?;
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err(format!("bad url {s:?}: not http(s)")),
        };
        let auth = uri
            .authority()
            .ok_or_else(|| format!("bad url {s:?}: no host"))?;
        Ok(Url {
            https,
            authority: auth.as_str().to_string(),
            host: auth.host().trim_matches(['[', ']']).to_string(),
            port: auth.port_u16().unwrap_or(if https { 443 } else { 80 }),
            path_and_query: uri
                .path_and_query()
                .map_or("/".to_string(), |p| p.as_str().to_string()),
        })
    }

    /// Resolve a `Location` header against this URL.
    fn join(&self, location: &str) -> Result<Url, String> {
        if location.starts_with("https://") || location.starts_with("http://") {
            Url::parse(location)
        } else if location.starts_with('/') {
            Ok(Url {
                path_and_query: location.to_string(),
                ..self.clone()
            })
        } else {
            Err(format!("unsupported redirect location {location:?}"))
        }
    }
}

/// The shared HTTP(S) side of the store.
pub(crate) struct Client {
    system_roots: Vec<CertificateDer<'static>>,
    certs_dir: PathBuf,
    insecure: Vec<String>,
    tls: Mutex<HashMap<String, Arc<rustls::ClientConfig>>>,
}

impl Client {
    /// A client trusting the system roots plus `certs_dir/HOST:PORT/*.crt`, speaking plain HTTP
    /// to the `insecure` registries.
    pub(crate) fn new(certs_dir: PathBuf, insecure: Vec<String>) -> Self {
        let found = rustls_native_certs::load_native_certs();
        if !found.errors.is_empty() {
            tracing::debug!(errors = ?found.errors, "some system certificates did not load");
        }
        Client {
            system_roots: found.certs,
            certs_dir,
            insecure,
            tls: Mutex::new(HashMap::new()),
        }
    }

    fn is_insecure(&self, authority: &str) -> bool {
        self.insecure.iter().any(|i| i == authority)
    }

    fn tls_config(&self, authority: &str) -> Result<Arc<rustls::ClientConfig>, String> {
        if let Some(c) = self.tls.lock().ok().and_then(|m| m.get(authority).cloned()) {
            return Ok(c);
        }
        let mut roots = rustls::RootCertStore::empty();
        roots.add_parsable_certificates(self.system_roots.iter().cloned());
        // docker/containerd convention: every *.crt under certs.d/HOST:PORT/ is a CA.
        let dir = self.certs_dir.join(authority);
        if let Ok(rd) = std::fs::read_dir(&dir) {
            for f in rd.flatten() {
                let p = f.path();
                if p.extension().is_some_and(|e| e == "crt") {
                    add_pem(&mut roots, &p)?;
                }
            }
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let cfg = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("tls: {e}"))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let cfg = Arc::new(cfg);
        if let Ok(mut m) = self.tls.lock() {
            m.insert(authority.to_string(), cfg.clone());
        }
        Ok(cfg)
    }

    /// One request, no redirects.
    async fn send_once(
        &self,
        url: &Url,
        accept: Option<&str>,
        bearer: Option<&str>,
    ) -> Result<Response<Incoming>, String> {
        let mut req = Request::get(url.path_and_query.as_str())
            .header(header::HOST, url.authority.as_str())
            .header(header::USER_AGENT, USER_AGENT);
        if let Some(a) = accept {
            req = req.header(header::ACCEPT, a);
        }
        if let Some(t) = bearer {
            req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let req = req
            .body(Empty::<Bytes>::new())
            .map_err(|e| format!("request: {e}"))?;
        let tcp = tokio::time::timeout(
            CONNECT_TIMEOUT,
            tokio::net::TcpStream::connect((url.host.as_str(), url.port)),
        )
        .await
        .map_err(|_| format!("connecting to {}: timed out", url.authority))?
        .map_err(|e| format!("connecting to {}: {e}", url.authority))?;
        if url.https {
            let cfg = self.tls_config(&url.authority)?;
            let name = ServerName::try_from(url.host.clone())
                .map_err(|e| format!("https to {}: {e}", url.authority))?;
            let tls = tokio::time::timeout(
                CONNECT_TIMEOUT,
                tokio_rustls::TlsConnector::from(cfg).connect(name, tcp),
            )
            .await
            .map_err(|_| format!("https to {}: tls handshake timed out", url.authority))?
            .map_err(|e| format!("https to {}: tls handshake: {e}", url.authority))?;
            exchange(TokioIo::new(tls), req, &url.authority).await
        } else {
            exchange(TokioIo::new(tcp), req, &url.authority).await
        }
    }

    /// GET, following redirects; the bearer token goes to the first host only.
    async fn get(
        &self,
        mut url: Url,
        accept: Option<&str>,
        bearer: Option<&str>,
    ) -> Result<Response<Incoming>, String> {
        let origin = url.authority.clone();
        for _ in 0..=MAX_REDIRECTS {
            let auth = bearer.filter(|_| url.authority == origin);
            let resp = self.send_once(&url, accept, auth).await?;
            if matches!(resp.status().as_u16(), 301 | 302 | 303 | 307 | 308) {
                let loc = resp
                    .headers()
                    .get(header::LOCATION)
                    .and_then(|v| v.to_str().ok())
                    .ok_or_else(|| format!("redirect from {} without a location", url.authority))?;
                url = url.join(loc)?;
                continue;
            }
            return Ok(resp);
        }
        Err(format!("more than {MAX_REDIRECTS} redirects"))
    }

    /// Fetch an anonymous bearer token for a challenge.
    async fn token(&self, ch: &Challenge, repo: &str) -> Result<String, String> {
        let scope = ch
            .scope
            .clone()
            .unwrap_or_else(|| format!("repository:{repo}:pull"));
        let mut u = ch.realm.clone();
        u.push(if u.contains('?') { '&' } else { '?' });
        if let Some(s) = &ch.service {
            u.push_str(&format!("service={}&", percent_encode(s)));
        }
        u.push_str(&format!("scope={}", percent_encode(&scope)));
        let resp = self
            .get(Url::parse(&u)?, Some("application/json"), None)
            .await?;
        let status = resp.status();
        let body = read_capped(resp.into_body(), 1 << 20).await?;
        if !status.is_success() {
            return Err(format!("token server: {}", registry_error(status, &body)));
        }
        let v: serde_json::Value =
            serde_json::from_slice(&body).map_err(|e| format!("token server: {e}"))?;
        v.get("token")
            .or_else(|| v.get("access_token"))
            .and_then(|t| t.as_str())
            .map(String::from)
            .ok_or_else(|| "token server: no token in answer".to_string())
    }
}

fn add_pem(roots: &mut rustls::RootCertStore, path: &Path) -> Result<(), String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    for c in CertificateDer::pem_slice_iter(&bytes) {
        let c = c.map_err(|e| format!("{}: {e}", path.display()))?;
        roots
            .add(c)
            .map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(())
}

async fn exchange<T>(
    io: T,
    req: Request<Empty<Bytes>>,
    authority: &str,
) -> Result<Response<Incoming>, String>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let fut = async {
        let (mut send, conn) = hyper::client::conn::http1::handshake(io).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        send.send_request(req).await
    };
    tokio::time::timeout(RESPONSE_TIMEOUT, fut)
        .await
        .map_err(|_| format!("{authority}: no response"))?
        .map_err(|e| format!("{authority}: {e}"))
}

/// Read a whole body, refusing more than `cap` bytes.
async fn read_capped(mut body: Incoming, cap: u64) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    loop {
        let frame = tokio::time::timeout(IDLE_TIMEOUT, body.frame())
            .await
            .map_err(|_| "response stalled".to_string())?;
        let Some(frame) = frame else { break };
        let frame = frame.map_err(|e| format!("reading response: {e}"))?;
        if let Some(d) = frame.data_ref() {
            if (out.len() + d.len()) as u64 > cap {
                return Err(format!("response larger than {cap} bytes"));
            }
            out.extend_from_slice(d);
        }
    }
    Ok(out)
}

/// A registry's `{"errors":[{"message":..}]}`, or the status' reason.
fn registry_error(status: StatusCode, body: &[u8]) -> String {
    let msgs: Vec<String> = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| {
            v.get("errors")?.as_array().map(|a| {
                a.iter()
                    .filter_map(|e| e.get("message")?.as_str().map(String::from))
                    .collect()
            })
        })
        .unwrap_or_default();
    if msgs.is_empty() {
        let reason = status.canonical_reason().unwrap_or("error").to_lowercase();
        format!("{reason} (http {})", status.as_u16())
    } else {
        msgs.join("; ")
    }
}

/// A `WWW-Authenticate: Bearer ...` challenge.
#[derive(Debug, PartialEq)]
struct Challenge {
    realm: String,
    service: Option<String>,
    scope: Option<String>,
}

fn parse_challenge(v: &HeaderValue) -> Option<Challenge> {
    let s = v.to_str().ok()?;
    let (scheme, rest) = s.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let mut params = HashMap::new();
    let mut chars = rest.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        if key.is_empty() {
            break;
        }
        let mut val = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '"' => break,
                    '\\' => val.extend(chars.next()),
                    c => val.push(c),
                }
            }
        } else {
            while let Some(c) = chars.peek().copied() {
                if c == ',' {
                    break;
                }
                val.push(c);
                chars.next();
            }
        }
        params.insert(key.trim().to_ascii_lowercase(), val);
    }
    Some(Challenge {
        realm: params.remove("realm")?,
        service: params.remove("service"),
        scope: params.remove("scope"),
    })
}

/// One pull from one repository: keeps the token between requests.
pub(crate) struct Session<'a> {
    client: &'a Client,
    https: bool,
    authority: String,
    repo: String,
    /// The reference, for messages.
    shown: String,
    token: Option<String>,
}

impl<'a> Session<'a> {
    pub(crate) fn new(client: &'a Client, r: &Reference) -> Self {
        let authority = r.api_authority().to_string();
        Session {
            client,
            https: !client.is_insecure(&authority) && !client.is_insecure(&r.registry),
            authority,
            repo: r.repository.clone(),
            shown: r.normalized(),
            token: None,
        }
    }

    fn pull_err(&self, why: impl std::fmt::Display) -> ImageError {
        ImageError::Pull(format!("{why}: {}", self.shown))
    }

    async fn get(
        &mut self,
        path: &str,
        accept: Option<&str>,
    ) -> Result<Response<Incoming>, ImageError> {
        let scheme = if self.https { "https" } else { "http" };
        let url = Url::parse(&format!("{scheme}://{}{path}", self.authority))
            .map_err(|e| self.pull_err(e))?;
        let resp = self
            .client
            .get(url.clone(), accept, self.token.as_deref())
            .await
            .map_err(|e| self.pull_err(e))?;
        if resp.status() != StatusCode::UNAUTHORIZED || self.token.is_some() {
            return Ok(resp);
        }
        let Some(ch) = resp
            .headers()
            .get(header::WWW_AUTHENTICATE)
            .and_then(parse_challenge)
        else {
            return Ok(resp);
        };
        let token = self
            .client
            .token(&ch, &self.repo)
            .await
            .map_err(|e| self.pull_err(e))?;
        self.token = Some(token);
        self.client
            .get(url, accept, self.token.as_deref())
            .await
            .map_err(|e| self.pull_err(e))
    }

    /// Fetch a manifest or index by tag or digest. Returns its bytes, digest and content type.
    /// The digest is checked against `expect` (pulls by digest) or else against the
    /// registry's `Docker-Content-Digest`.
    pub(crate) async fn manifest(
        &mut self,
        reference: &str,
        expect: Option<&str>,
    ) -> Result<(Vec<u8>, String, Option<String>), ImageError> {
        let path = format!("/v2/{}/manifests/{}", self.repo, reference);
        let resp = self.get(&path, Some(MANIFEST_ACCEPT)).await?;
        let status = resp.status();
        let header_digest = resp
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .map(|s| s.trim().to_string());
        let ctype = resp
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|s| s.split(';').next().unwrap_or("").trim().to_string());
        if content_length(&resp).is_some_and(|l| l > super::manifest::MAX_MANIFEST) {
            return Err(self.pull_err("manifest too large"));
        }
        let cap = if status.is_success() {
            super::manifest::MAX_MANIFEST
        } else {
            64 << 10
        };
        let body = read_capped(resp.into_body(), cap)
            .await
            .map_err(|e| self.pull_err(e))?;
        if !status.is_success() {
            return Err(self.pull_err(registry_error(status, &body)));
        }
        let mut h = Sha256::new();
        h.update(&body);
        let digest = hex_digest(h);
        let want = expect
            .map(String::from)
            .or_else(|| header_digest.filter(|d| d.starts_with("sha256:")));
        if let Some(w) = want {
            if w != digest {
                return Err(self.pull_err(format!(
                    "digest mismatch: manifest is {digest}, expected {w}"
                )));
            }
        }
        Ok((body, digest, ctype))
    }

    /// Download a blob into `dest` (via a temp file in `tmp`), checking size and digest.
    pub(crate) async fn blob(
        &mut self,
        digest: &str,
        size: u64,
        tmp: &Path,
        dest: &Path,
    ) -> Result<(), ImageError> {
        let path = format!("/v2/{}/blobs/{}", self.repo, digest);
        let resp = self.get(&path, None).await?;
        let status = resp.status();
        if !status.is_success() {
            let body = read_capped(resp.into_body(), 64 << 10)
                .await
                .unwrap_or_default();
            return Err(self.pull_err(format!("blob {digest}: {}", registry_error(status, &body))));
        }
        if content_length(&resp).is_some_and(|l| l != size) {
            return Err(self.pull_err(format!("blob {digest}: size differs from its descriptor")));
        }
        let io = |e: std::io::Error| ImageError::Io(format!("{}: {e}", tmp.display()));
        let (file, tmp_path) = tempfile::Builder::new()
            .prefix("blob-")
            .tempfile_in(tmp)
            .map_err(io)?
            .into_parts();
        let mut file = tokio::fs::File::from_std(file);
        let mut hasher = Sha256::new();
        let mut count = 0u64;
        let mut body = resp.into_body();
        loop {
            let frame = tokio::time::timeout(IDLE_TIMEOUT, body.frame())
                .await
                .map_err(|_| self.pull_err(format!("blob {digest}: download stalled")))?;
            let Some(frame) = frame else { break };
            let frame = frame.map_err(|e| self.pull_err(format!("blob {digest}: {e}")))?;
            if let Some(d) = frame.data_ref() {
                count += d.len() as u64;
                if count > size {
                    return Err(self.pull_err(format!("blob {digest}: larger than its descriptor")));
                }
                hasher.update(d);
                file.write_all(d).await.map_err(io)?;
            }
        }
        if count != size {
            return Err(self.pull_err(format!(
                "blob {digest}: short read ({count} of {size} bytes)"
            )));
        }
        let got = hex_digest(hasher);
        if got != digest {
            return Err(self.pull_err(format!("digest mismatch: blob {digest} hashes to {got}")));
        }
        file.sync_all().await.map_err(io)?;
        drop(file);
        tmp_path
            .persist(dest)
            .map_err(|e| ImageError::Io(format!("{}: {}", dest.display(), e.error)))?;
        Ok(())
    }
}

fn content_length(resp: &Response<Incoming>) -> Option<u64> {
    resp.headers()
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_challenge() {
        let v = HeaderValue::from_static(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull""#,
        );
        assert_eq!(
            parse_challenge(&v),
            Some(Challenge {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into()),
                scope: Some("repository:library/busybox:pull".into()),
            })
        );
        assert_eq!(
            parse_challenge(&HeaderValue::from_static("Basic realm=\"x\"")),
            None
        );
        assert_eq!(
            percent_encode("repository:a/b:pull"),
            "repository%3Aa%2Fb%3Apull"
        );
    }

    #[test]
    fn redirects_resolve() {
        let u = Url::parse("https://reg.example:5000/v2/x/blobs/sha256:1").unwrap();
        assert_eq!(u.host, "reg.example");
        assert_eq!(u.port, 5000);
        let r = u.join("/other?a=b").unwrap();
        assert_eq!(r.authority, "reg.example:5000");
        assert_eq!(r.path_and_query, "/other?a=b");
        let cdn = u.join("http://cdn.example/p").unwrap();
        assert!(!cdn.https);
        assert_eq!(cdn.port, 80);
        assert!(u.join("relative").is_err());
    }
}
