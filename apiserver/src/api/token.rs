//! Credentials minted through the API: ServiceAccount TokenRequests and edge join tokens.

use super::*;

impl Api {
    pub(super) async fn token_request(
        &self,
        t: &Target,
        req: &Request,
        caller: &Identity,
    ) -> ApiResult<Reply> {
        let body = parse_body(&req.headers, &req.body)?;
        let secs = body
            .pointer("/spec/expirationSeconds")
            .and_then(Value::as_i64);
        let min = if t.res.plural == "edgesites" { 1 } else { 600 };
        if let Some(s) = secs.filter(|s| *s < min) {
            return Err(ApiError::invalid(
                "authentication.k8s.io",
                "TokenRequest",
                t.name(),
                vec![Cause::invalid(
                    "spec.expirationSeconds",
                    &s.to_string(),
                    &format!("may not specify a duration less than {min} seconds"),
                )],
            ));
        }
        if t.res.plural == "edgesites" {
            return self.join_token(t, caller, secs).await;
        }
        let (id, expires, bound_key, bound_uid) = match t.res.plural {
            "serviceaccounts" => {
                let key = t.key(t.name());
                let sa = self
                    .store
                    .get(&key)
                    .ok_or_else(|| ApiError::not_found("", "serviceaccounts", t.name()))?;
                let ns = t.namespace.clone().unwrap_or_default();
                let id = Identity {
                    tenant: t.tenant.clone(),
                    user: format!("system:serviceaccount:{ns}:{}", t.name()),
                    groups: vec![
                        "system:serviceaccounts".into(),
                        format!("system:serviceaccounts:{ns}"),
                        "system:authenticated".into(),
                    ],
                };
                let exp = Utc::now() + chrono::Duration::seconds(secs.unwrap_or(3600));
                (id, Some(exp), Some(key), meta_str(&sa, "uid").to_string())
            }
            "tenants" => {
                if !caller.is_system_admin() {
                    return Err(ApiError::forbidden(
                        &caller.user,
                        "create",
                        "",
                        "tenants/token",
                        t.name(),
                        " at the cluster scope",
                    ));
                }
                let key = Key::new("tenants", "", "", t.name());
                let tn = self
                    .store
                    .get(&key)
                    .ok_or_else(|| ApiError::not_found("", "tenants", t.name()))?;
                let user = body
                    .pointer("/metadata/name")
                    .and_then(Value::as_str)
                    .filter(|u| !u.is_empty())
                    .unwrap_or("admin");
                let id = Identity {
                    tenant: t.name().to_string(),
                    user: user.to_string(),
                    groups: vec!["system:tenant-admins".into(), "system:authenticated".into()],
                };
                let exp = secs.map(|s| Utc::now() + chrono::Duration::seconds(s));
                (id, exp, Some(key), meta_str(&tn, "uid").to_string())
            }
            _ => {
                return Err(ApiError::method_not_allowed(
                    "create",
                    &format!("{}/token", t.res.plural),
                ))
            }
        };
        let token = auth::new_token();
        let rec = auth::token_record(
            &id,
            expires,
            bound_key.as_ref().map(|k| (k, bound_uid.as_str())),
        );
        let mut rec = rec;
        rec["metadata"]["name"] = json!(auth::hash_token(&token));
        self.store
            .put(auth::token_key(&token), rec, Precondition::Absent)
            .await
            .map_err(|e| store_err(t.res, t.name(), e))?;
        tracing::info!(tenant = %id.tenant, user = %id.user, "issued token");
        let exp = expires.unwrap_or_else(|| Utc::now() + chrono::Duration::days(365 * 100));
        let mut out = json!({
            "kind": "TokenRequest", "apiVersion": "authentication.k8s.io/v1",
            "metadata": {"name": t.name(), "namespace": t.namespace, "creationTimestamp": null},
            "spec": body.get("spec").cloned().unwrap_or(json!({})),
            "status": {"token": token, "expirationTimestamp": exp.to_rfc3339_opts(SecondsFormat::Secs, true)},
        });
        if t.namespace.is_none() {
            if let Some(m) = out["metadata"].as_object_mut() {
                m.remove("namespace");
            }
        }
        Ok(Reply::json(StatusCode::CREATED, &out))
    }

    /// Mint a single-use, expiring join token for an edge site (stored hashed).
    pub(super) async fn join_token(
        &self,
        t: &Target,
        caller: &Identity,
        secs: Option<i64>,
    ) -> ApiResult<Reply> {
        if !caller.is_system_admin() {
            return Err(ApiError::forbidden(
                &caller.user,
                "create",
                "edge.atoll.io",
                "edgesites/token",
                t.name(),
                " at the cluster scope",
            ));
        }
        let key = t.key(t.name());
        self.store
            .get(&key)
            .ok_or_else(|| ApiError::not_found("edge.atoll.io", "edgesites", t.name()))?;
        let secret = auth::new_token();
        let expires = Utc::now() + chrono::Duration::seconds(secs.unwrap_or(3600));
        let rec = json!({"metadata": {"name": auth::hash_token(&secret)}, "site": t.name(), "used": false,
            "expires": expires.to_rfc3339_opts(SecondsFormat::Secs, true)});
        self.store
            .put(
                Key::new(JOIN_TOKENS, "", "", &auth::hash_token(&secret)),
                rec,
                Precondition::Absent,
            )
            .await
            .map_err(|e| store_err(t.res, t.name(), e))?;
        tracing::info!(site = %t.name(), "issued join token");
        Ok(Reply::json(
            StatusCode::CREATED,
            &json!({"kind": "TokenRequest", "apiVersion": "authentication.k8s.io/v1", "metadata": {"name": t.name()},
                "spec": {}, "status": {"token": secret, "expirationTimestamp": expires.to_rfc3339_opts(SecondsFormat::Secs, true)}}),
        ))
    }
}
