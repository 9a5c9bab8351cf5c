//! The region's PKI: a CA created on first start and a serving certificate signed by it.
//! Keys are written 0600 and never logged.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};

use serde_json::json;
use store::{Key, Precondition, Store, StoreError};

use crate::Error;

/// PEM material for serving.
pub struct Pki {
    /// CA certificate (PEM).
    pub ca_pem: Vec<u8>,
    /// Serving certificate chain (PEM).
    pub cert_pem: Vec<u8>,
    /// Serving key (PEM).
    pub key_pem: Vec<u8>,
    /// CA key (PEM); used only to sign site certificates.
    ca_key_pem: Vec<u8>,
}

/// A certificate and its key, PEM.
pub struct Issued {
    /// Certificate.
    pub cert_pem: String,
    /// Private key.
    pub key_pem: String,
    /// SHA-256 of the certificate's DER (how the hub recognises it).
    pub fingerprint: [u8; 32],
    /// When it was issued (unix seconds).
    pub not_before: i64,
    /// Validity end (unix seconds).
    pub not_after: i64,
}

impl Pki {
    /// Issue a certificate signed by the region CA: a client certificate for a site's sync
    /// connection (`client`), or a serving certificate with `names` as SANs.
    pub fn issue(
        &self,
        common_name: &str,
        names: &[String],
        client: bool,
        lifetime: std::time::Duration,
    ) -> Result<Issued, Error> {
        let org = if client {
            proto::SITE_CERT_ORG
        } else {
            "atoll"
        };
        self.issue_as(common_name, org, names, client, lifetime)
    }

    fn issue_as(
        &self,
        common_name: &str,
        org: &str,
        names: &[String],
        client: bool,
        lifetime: std::time::Duration,
    ) -> Result<Issued, Error> {
        let ca_key =
            KeyPair::from_pem(&String::from_utf8_lossy(&self.ca_key_pem)).map_err(Error::Pki)?;
        let issuer = ca_params()?.self_signed(&ca_key).map_err(Error::Pki)?;
        let mut p = CertificateParams::new(names.to_vec()).map_err(Error::Pki)?;
        p.distinguished_name.push(DnType::CommonName, common_name);
        p.distinguished_name.push(DnType::OrganizationName, org);
        p.extended_key_usages = vec![if client {
            ExtendedKeyUsagePurpose::ClientAuth
        } else {
            ExtendedKeyUsagePurpose::ServerAuth
        }];
        p.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        let now = time::OffsetDateTime::now_utc();
        p.not_before = now - time::Duration::hours(1);
        p.not_after = now
            + time::Duration::seconds(i64::try_from(lifetime.as_secs()).unwrap_or(i64::MAX / 2));
        let key = KeyPair::generate().map_err(Error::Pki)?;
        // The renewal clock starts at issuance (not at the skew-tolerant, back-dated not_before).
        let (not_before, not_after) = (now.unix_timestamp(), p.not_after.unix_timestamp());
        let cert = p.signed_by(&key, &issuer, &ca_key).map_err(Error::Pki)?;
        let fingerprint = sync::quic::fingerprint(cert.der());
        Ok(Issued {
            not_before,
            not_after,
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            fingerprint,
        })
    }

    /// The client certificate (PEM cert, key) cloud-core presents to the log servers of cloud
    /// nodes' agents (CN [`proto::logs::KUBELET_CLIENT_CN`]), kept in
    /// `dir/kubelet-client.{crt,key}`; issued for a year, again once it is four months old.
    pub fn kubelet_client(&self, dir: &Path) -> Result<(Vec<u8>, Vec<u8>), Error> {
        let (crt, key) = (
            dir.join("kubelet-client.crt"),
            dir.join("kubelet-client.key"),
        );
        let fresh = std::fs::metadata(&crt)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age < std::time::Duration::from_secs(120 * 86400));
        if fresh {
            if let (Ok(c), Ok(k)) = (std::fs::read(&crt), std::fs::read(&key)) {
                return Ok((c, k));
            }
        }
        let i = self.issue_as(
            proto::logs::KUBELET_CLIENT_CN,
            proto::CONTROL_PLANE_ORG,
            &[],
            true,
            std::time::Duration::from_secs(365 * 86400),
        )?;
        write_private(&key, i.key_pem.as_bytes())?;
        std::fs::write(&crt, &i.cert_pem).map_err(|e| Error::Io(crt.clone(), e))?;
        Ok((i.cert_pem.into_bytes(), i.key_pem.into_bytes()))
    }

    /// SHA-256 of the CA certificate's DER: the pin carried in join tokens.
    pub fn ca_fingerprint(&self) -> Result<[u8; 32], Error> {
        use rustls_pki_types::pem::PemObject;
        let der = rustls_pki_types::CertificateDer::from_pem_slice(&self.ca_pem)
            .map_err(|e| Error::Tls(apiserver::server::ServerError::Pem(e.to_string())))?;
        Ok(sync::quic::fingerprint(&der))
    }
}

fn write_private(path: &Path, data: &[u8]) -> Result<(), Error> {
    boot::write_private(path, data).map_err(|e| Error::Io(path.to_path_buf(), e))
}

fn ca_params() -> Result<CertificateParams, Error> {
    let mut p = CertificateParams::new(Vec::<String>::new()).map_err(Error::Pki)?;
    p.distinguished_name
        .push(DnType::CommonName, "atoll-region-ca");
    p.distinguished_name.push(DnType::OrganizationName, "atoll");
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let now = time::OffsetDateTime::now_utc();
    p.not_before = now - time::Duration::hours(1);
    p.not_after = now + time::Duration::days(3650);
    Ok(p)
}

/// The store record of the region CA (an internal resource: the API serves no such kind and
/// no site's share includes it), so every replica on one etcd signs with the same CA.
pub const CA_RESOURCE: &str = "regionpki";

fn ca_key() -> Key {
    Key::new(CA_RESOURCE, "", "", "ca")
}

/// A new CA: certificate and key, PEM.
fn new_ca() -> Result<(String, String), Error> {
    let key = KeyPair::generate().map_err(Error::Pki)?;
    let cert = ca_params()?.self_signed(&key).map_err(Error::Pki)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// Make the region CA under `dir` the one in the store: the first replica (or a region that
/// predates this) puts its CA there, later ones (any `--data-dir`) take it from there. A CA
/// written to `dir` from the store drops the certificates the old one had signed.
pub async fn share_ca(dir: &Path, store: &Store) -> Result<(), Error> {
    std::fs::create_dir_all(dir).map_err(|e| Error::Io(dir.to_path_buf(), e))?;
    let p = |n: &str| -> PathBuf { dir.join(n) };
    for _ in 0..2 {
        if let Some(rec) = store.get(&ca_key()) {
            let (Some(cert), Some(key)) = (rec["cert"].as_str(), rec["key"].as_str()) else {
                return Err(Error::BadCaRecord);
            };
            if std::fs::read(p("ca.crt")).ok().as_deref() != Some(cert.as_bytes()) {
                write_private(&p("ca.key"), key.as_bytes())?;
                std::fs::write(p("ca.crt"), cert).map_err(|e| Error::Io(p("ca.crt"), e))?;
                for f in [
                    "apiserver.crt",
                    "apiserver.key",
                    "kubelet-client.crt",
                    "kubelet-client.key",
                ] {
                    let _ = std::fs::remove_file(p(f));
                }
                tracing::info!(dir = %dir.display(), "took the region CA from the store");
            }
            return Ok(());
        }
        let (cert, key) = match (std::fs::read(p("ca.crt")), std::fs::read(p("ca.key"))) {
            (Ok(c), Ok(k)) => (
                String::from_utf8_lossy(&c).into_owned(),
                String::from_utf8_lossy(&k).into_owned(),
            ),
            _ => new_ca()?,
        };
        let rec = json!({"metadata": {"name": "ca"}, "cert": cert, "key": key});
        match store.put(ca_key(), rec, Precondition::Absent).await {
            // Written to `dir` on the next pass, from the record.
            Ok(_) => tracing::info!("region CA kept in the store"),
            // Another replica was first: take its CA on the next pass.
            Err(StoreError::AlreadyExists(_)) => store.sync().await?,
            Err(e) => return Err(e.into()),
        }
    }
    Err(StoreError::Conflict(ca_key()).into())
}

/// Load the PKI under `dir`, creating what is missing. `sans` are the serving cert's names.
pub fn ensure(dir: &Path, sans: &[String]) -> Result<Pki, Error> {
    std::fs::create_dir_all(dir).map_err(|e| Error::Io(dir.to_path_buf(), e))?;
    let p = |n: &str| -> PathBuf { dir.join(n) };
    let read = |n: &str| std::fs::read(p(n)).map_err(|e| Error::Io(p(n), e));
    if !p("ca.crt").exists() || !p("ca.key").exists() {
        let (cert, key) = new_ca()?;
        write_private(&p("ca.key"), key.as_bytes())?;
        std::fs::write(p("ca.crt"), cert).map_err(|e| Error::Io(p("ca.crt"), e))?;
        let _ = std::fs::remove_file(p("apiserver.crt"));
        tracing::info!(dir = %dir.display(), "created region CA");
    }
    if !p("apiserver.crt").exists() || !p("apiserver.key").exists() {
        let ca_key =
            KeyPair::from_pem(&String::from_utf8_lossy(&read("ca.key")?)).map_err(Error::Pki)?;
        // Re-derive the issuer from the same parameters and key: same subject and key
        // identifier, so the signature chains to the stored CA certificate.
        let issuer = ca_params()?.self_signed(&ca_key).map_err(Error::Pki)?;
        let mut sp = CertificateParams::new(sans.to_vec()).map_err(Error::Pki)?;
        sp.distinguished_name
            .push(DnType::CommonName, "atoll-apiserver");
        sp.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        sp.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        let now = time::OffsetDateTime::now_utc();
        sp.not_before = now - time::Duration::hours(1);
        sp.not_after = now + time::Duration::days(365);
        let key = KeyPair::generate().map_err(Error::Pki)?;
        let cert = sp.signed_by(&key, &issuer, &ca_key).map_err(Error::Pki)?;
        write_private(&p("apiserver.key"), key.serialize_pem().as_bytes())?;
        std::fs::write(p("apiserver.crt"), cert.pem())
            .map_err(|e| Error::Io(p("apiserver.crt"), e))?;
    }
    Ok(Pki {
        ca_pem: read("ca.crt")?,
        cert_pem: read("apiserver.crt")?,
        key_pem: read("apiserver.key")?,
        ca_key_pem: read("ca.key")?,
    })
}
