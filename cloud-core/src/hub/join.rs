//! Joining and certificates: join tokens exchanged for a site certificate, renewals, the
//! site a connection's certificate names (only for the EdgeSite uid it was issued to), and the
//! retirement of a site's earlier certificates once a successor is in use.

use super::*;

/// The record that makes a client certificate a site's: by fingerprint, for the EdgeSite (name
/// and uid) it was issued to.
pub(super) fn cert_record(fp: &[u8; 32], site: &str, site_uid: &str) -> Value {
    json!({"metadata": {"name": hex(fp)}, "site": site, "siteUid": site_uid, "issued": now_str()})
}

pub(super) fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

impl Hub {
    /// The site a connection's client certificate was issued to, with the certificate's
    /// fingerprint. A certificate is honoured only while its record exists (deleting the
    /// EdgeSite, or the site using a successor, removes it) and only for the EdgeSite it was
    /// issued to: a site deleted and created again under the same name has a new uid, and
    /// the old certificates stay refused though they have not expired.
    pub(super) fn site_of_cert(&self, conn: &quinn::Connection) -> Option<(String, String)> {
        let certs = conn
            .peer_identity()?
            .downcast::<Vec<rustls::pki_types::CertificateDer<'static>>>()
            .ok()?;
        let fp = hex(&quic::fingerprint(certs.first()?));
        let rec = self.store.get(&Key::new(SITE_CERTS, "", "", &fp))?;
        let site = rec.get("site").and_then(Value::as_str)?.to_string();
        let es = self.store.get(&Key::new(EDGESITES, "", "", &site))?;
        let uid = es.pointer("/metadata/uid").and_then(Value::as_str);
        if rec.get("siteUid").and_then(Value::as_str) != uid {
            return None;
        }
        Some((site, fp))
    }

    /// A site authenticated with the certificate `fp`: its predecessors (issued earlier to the
    /// same site) stop working from now on, and sessions still using them end.
    pub(super) async fn retire_predecessors(&self, site: &str, fp: &str) {
        let certs = self.store.list_of(SITE_CERTS, Some(""));
        let rv_of = |v: &Value| store::object_rv(v).unwrap_or(0);
        let Some(mine) = certs
            .iter()
            .find(|(k, _)| k.name == fp)
            .map(|(_, v)| rv_of(v))
        else {
            return;
        };
        let mut retired = Vec::new();
        for (k, v) in certs.iter() {
            if k.name != fp
                && v.get("site").and_then(Value::as_str) == Some(site)
                && rv_of(v) < mine
                && self
                    .store
                    .delete(k.clone(), Precondition::Exists)
                    .await
                    .is_ok()
            {
                retired.push(k.name.clone());
            }
        }
        if !retired.is_empty() {
            tracing::info!(%site, count = retired.len(), "retired the site's earlier certificates");
            self.end_sessions("its certificate was replaced by a newer one", |i| {
                retired.contains(&i.fingerprint)
            });
        }
    }

    pub(super) async fn join(&self, j: &JoinRequest) -> Result<JoinResponse, String> {
        let key = Key::new(JOIN_TOKENS, "", "", &apiserver::auth::hash_token(&j.secret));
        let rec = self.store.get(&key).ok_or("invalid join token")?;
        let site = rec.get("site").and_then(Value::as_str).unwrap_or("");
        if site != j.site {
            return Err(format!("join token is for site {site:?}, not {:?}", j.site));
        }
        if rec.get("used").and_then(Value::as_bool) == Some(true) {
            return Err("join token already used".into());
        }
        let expired = rec
            .get("expires")
            .and_then(Value::as_str)
            .and_then(|e| chrono::DateTime::parse_from_rfc3339(e).ok())
            .is_none_or(|e| e < chrono::Utc::now());
        if expired {
            return Err("join token expired".into());
        }
        let site_uid = self.site_uid(site)?;
        let (resp, fp) = self.issue_site(site, &j.serving_names)?;
        let mut used = (*rec).clone();
        used["used"] = json!(true);
        let rv = store::object_rv(&rec).unwrap_or(0);
        let cert_rec = cert_record(&fp, site, &site_uid);
        self.store
            .commit(vec![
                Op::Put {
                    key,
                    value: used,
                    pre: Precondition::Version(rv),
                },
                Op::Put {
                    key: Key::new(SITE_CERTS, "", "", &hex(&fp)),
                    value: cert_rec,
                    pre: Precondition::Absent,
                },
            ])
            .await
            .map_err(|_| "join token already used".to_string())?;
        tracing::info!(%site, "site joined");
        Ok(resp)
    }

    /// The uid of an existing EdgeSite.
    pub(super) fn site_uid(&self, site: &str) -> Result<String, String> {
        self.store
            .get(&Key::new(EDGESITES, "", "", site))
            .and_then(|v| {
                v.pointer("/metadata/uid")
                    .and_then(Value::as_str)
                    .map(String::from)
            })
            .ok_or_else(|| format!("edge site {site:?} does not exist"))
    }

    /// A site's client and serving certificates, signed by the region CA.
    pub(super) fn issue_site(
        &self,
        site: &str,
        serving_names: &[String],
    ) -> Result<(JoinResponse, [u8; 32]), String> {
        let ttl = self.site_cert_ttl;
        let client = self
            .pki
            .issue(site, &[format!("{site}.sites.atoll.internal")], true, ttl)
            .map_err(|e| format!("issuing certificate: {e}"))?;
        let mut names = vec![
            "localhost".to_string(),
            "127.0.0.1".to_string(),
            "::1".to_string(),
        ];
        names.extend(
            serving_names
                .iter()
                .filter(|n| !n.is_empty() && n.len() < 254)
                .take(16)
                .cloned(),
        );
        let serving = self
            .pki
            .issue(&format!("edge-{site}"), &names, false, ttl)
            .map_err(|e| format!("issuing certificate: {e}"))?;
        let resp = JoinResponse {
            ca_pem: String::from_utf8_lossy(&self.pki.ca_pem).into_owned(),
            client_cert_pem: client.cert_pem,
            client_key_pem: client.key_pem,
            serving_cert_pem: serving.cert_pem,
            serving_key_pem: serving.key_pem,
            not_before: client.not_before,
            not_after: client.not_after,
        };
        Ok((resp, client.fingerprint))
    }

    /// Renew an authenticated site's certificates; the old ones stay valid until they expire,
    /// so nothing is dropped.
    pub(super) async fn renew(&self, site: &str, names: &[String]) -> Result<JoinResponse, String> {
        let site_uid = self.site_uid(site)?;
        let (resp, fp) = self.issue_site(site, names)?;
        let rec = cert_record(&fp, site, &site_uid);
        self.store
            .put(
                Key::new(SITE_CERTS, "", "", &hex(&fp)),
                rec,
                Precondition::Absent,
            )
            .await
            .map_err(|e| e.to_string())?;
        tracing::info!(%site, "site certificates renewed");
        Ok(resp)
    }

    /// Serve renewal requests on further streams of an authenticated connection.
    pub(super) fn serve_renewals(
        self: &Arc<Self>,
        conn: quinn::Connection,
        site: String,
    ) -> tokio::task::JoinHandle<()> {
        let hub = self.clone();
        tokio::spawn(async move {
            while let Ok((mut send, mut recv)) = conn.accept_bi().await {
                let (hub, site) = (hub.clone(), site.clone());
                tokio::spawn(async move {
                    let reply = match quic::read_frame(&mut recv).await {
                        Ok(Some(Frame {
                            body: Some(Body::RenewRequest(r)),
                        })) => match hub.renew(&site, &r.serving_names).await {
                            Ok(resp) => Frame::new(Body::JoinResponse(resp)),
                            Err(e) => Frame::new(Body::Error(ErrorFrame {
                                retryable: true,
                                message: e,
                            })),
                        },
                        _ => Frame::new(Body::Error(ErrorFrame {
                            retryable: false,
                            message: "expected a renewal request".into(),
                        })),
                    };
                    let _ = quic::write_frame(&mut send, &reply).await;
                    finish(&mut send).await;
                });
            }
        })
    }
}
