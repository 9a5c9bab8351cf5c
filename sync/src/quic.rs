//! QUIC transport for sync: endpoints with mutual TLS (rustls, ring), a CA-pinning verifier for
//! the first join, and length-prefixed frame I/O with size caps.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use proto::sync::{Frame, FrameError, MAX_FRAME};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

/// ALPN of the sync protocol.
pub const ALPN: &[u8] = b"atoll-sync/1";

/// Transport failures.
#[derive(Debug, thiserror::Error)]
pub enum QuicError {
    /// Certificates or keys could not be used.
    #[error("tls: {0}")]
    Tls(String),
    /// The endpoint could not be created.
    #[error("endpoint")]
    Endpoint(#[source] std::io::Error),
    /// Connecting failed.
    #[error("connect")]
    Connect(#[from] quinn::ConnectError),
    /// The connection failed.
    #[error("connection")]
    Connection(#[from] quinn::ConnectionError),
    /// Reading a stream failed.
    #[error("read")]
    Read(#[from] quinn::ReadExactError),
    /// Writing a stream failed.
    #[error("write")]
    Write(#[from] quinn::WriteError),
    /// A frame was malformed or too large.
    #[error("frame")]
    Frame(#[from] FrameError),
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn certs(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, QuicError> {
    CertificateDer::pem_slice_iter(pem)
        .collect::<Result<_, _>>()
        .map_err(|e| QuicError::Tls(e.to_string()))
}

fn key(pem: &[u8]) -> Result<PrivateKeyDer<'static>, QuicError> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| QuicError::Tls(e.to_string()))
}

fn transport() -> Arc<quinn::TransportConfig> {
    transport_with(8 * 1024 * 1024)
}

fn transport_with(stream_window: u32) -> Arc<quinn::TransportConfig> {
    let mut t = quinn::TransportConfig::default();
    t.keep_alive_interval(Some(Duration::from_secs(3)));
    t.max_idle_timeout(Some(
        Duration::from_secs(10)
            .try_into()
            .unwrap_or(quinn::IdleTimeout::from(quinn::VarInt::from_u32(10_000))),
    ));
    // Bounded in-flight data per connection.
    t.stream_receive_window(quinn::VarInt::from_u32(stream_window));
    t.receive_window(quinn::VarInt::from_u32(CONNECTION_WINDOW));
    // The sync stream, log tunnels and container-stream tunnels (each bounded by the hub).
    t.max_concurrent_bidi_streams(quinn::VarInt::from_u32(128));
    Arc::new(t)
}

/// Receive window of a whole connection.
pub const CONNECTION_WINDOW: u32 = 24 * 1024 * 1024;

/// Per-stream receive window at the cloud. Sites send little (uplink changes, log bytes), and
/// a small per-stream window bounds what streams nobody reads (a stalled log tunnel) can hold
/// of the connection's window: at most (`hub::MAX_LOG_TUNNELS` + `hub::MAX_STREAM_TUNNELS`)
/// × this = 16 MiB, under the connection's 24 MiB, so the sync stream always has room.
pub const SERVER_STREAM_WINDOW: u32 = 512 * 1024;

/// The cloud's sync endpoint: serves `cert_chain_pem` (leaf then CA), asks for client
/// certificates signed by `ca_pem` but also admits clients without one (they may only join).
pub fn server(
    addr: SocketAddr,
    cert_chain_pem: &[u8],
    key_pem: &[u8],
    ca_pem: &[u8],
) -> Result<quinn::Endpoint, QuicError> {
    let mut roots = rustls::RootCertStore::empty();
    for c in certs(ca_pem)? {
        roots.add(c).map_err(|e| QuicError::Tls(e.to_string()))?;
    }
    let verifier =
        rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
            .allow_unauthenticated()
            .build()
            .map_err(|e| QuicError::Tls(e.to_string()))?;
    let mut tls = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| QuicError::Tls(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs(cert_chain_pem)?, key(key_pem)?)
        .map_err(|e| QuicError::Tls(e.to_string()))?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls)
        .map_err(|e| QuicError::Tls(e.to_string()))?;
    let mut cfg = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    cfg.transport_config(transport_with(SERVER_STREAM_WINDOW));
    quinn::Endpoint::server(cfg, addr).map_err(QuicError::Endpoint)
}

/// How an edge authenticates the cloud and itself.
pub enum ClientAuth<'a> {
    /// First join: trust the CA whose SHA-256 (of its DER) is `pin`; no client certificate.
    Pinned([u8; 32]),
    /// Joined: trust `ca_pem`, present the site's certificate.
    Mutual {
        /// Region CA (PEM).
        ca_pem: &'a [u8],
        /// Client certificate (PEM).
        cert_pem: &'a [u8],
        /// Client key (PEM).
        key_pem: &'a [u8],
    },
}

/// An edge's client endpoint.
pub fn client(auth: ClientAuth<'_>) -> Result<quinn::Endpoint, QuicError> {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| QuicError::Tls(e.to_string()))?;
    let mut tls = match auth {
        ClientAuth::Pinned(pin) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(PinnedCa { pin }))
            .with_no_client_auth(),
        ClientAuth::Mutual {
            ca_pem,
            cert_pem,
            key_pem,
        } => {
            let mut roots = rustls::RootCertStore::empty();
            for c in certs(ca_pem)? {
                roots.add(c).map_err(|e| QuicError::Tls(e.to_string()))?;
            }
            builder
                .with_root_certificates(roots)
                .with_client_auth_cert(certs(cert_pem)?, key(key_pem)?)
                .map_err(|e| QuicError::Tls(e.to_string()))?
        }
    };
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls)
        .map_err(|e| QuicError::Tls(e.to_string()))?;
    let mut cfg = quinn::ClientConfig::new(Arc::new(crypto));
    cfg.transport_config(transport());
    let bind: SocketAddr = "0.0.0.0:0"
        .parse()
        .map_err(|_| QuicError::Tls("bind address".into()))?;
    let mut ep = quinn::Endpoint::client(bind).map_err(QuicError::Endpoint)?;
    ep.set_default_client_config(cfg);
    Ok(ep)
}

/// SHA-256 of a DER certificate.
pub fn fingerprint(der: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(der).into()
}

/// Accepts a server chain only if it contains a CA certificate with the pinned hash and the
/// leaf verifies against that CA (kubeadm-style discovery-token CA pinning).
#[derive(Debug)]
struct PinnedCa {
    pin: [u8; 32],
}

impl ServerCertVerifier for PinnedCa {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let ca = intermediates
            .iter()
            .find(|c| fingerprint(c) == self.pin)
            .ok_or_else(|| {
                rustls::Error::General(
                    "the server's CA does not match the join token's CA hash".into(),
                )
            })?;
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca.clone().into_owned())?;
        let inner = rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            provider(),
        )
        .build()
        .map_err(|e| rustls::Error::General(e.to_string()))?;
        inner.verify_server_cert(end_entity, &[], server_name, ocsp, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &provider().signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &provider().signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Write one frame.
pub async fn write_frame(send: &mut quinn::SendStream, f: &Frame) -> Result<(), QuicError> {
    let bytes = f.encode_framed()?;
    send.write_all(&bytes).await?;
    Ok(())
}

/// Read one frame; `None` at a clean end of stream. Oversized or malformed frames are errors.
pub async fn read_frame(recv: &mut quinn::RecvStream) -> Result<Option<Frame>, QuicError> {
    let mut len = [0u8; 4];
    match recv.read_exact(&mut len).await {
        Ok(()) => {}
        Err(quinn::ReadExactError::FinishedEarly(0)) => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let n = u32::from_be_bytes(len) as usize;
    if n > MAX_FRAME {
        return Err(FrameError::TooLarge(n).into());
    }
    let mut buf = vec![0u8; n];
    recv.read_exact(&mut buf).await?;
    Ok(Some(Frame::decode_body(&buf)?))
}
