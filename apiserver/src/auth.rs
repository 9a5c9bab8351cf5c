//! Identity and authorization. Bearer tokens are stored only as SHA-256 hashes (resource
//! `tokens` in the system space, never served); each maps to (tenant, user, groups).

use chrono::{DateTime, Utc};
use rand::RngCore;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::error::{ApiError, ApiResult};
use crate::resources::{Resource, Space};
use store::{Key, Store};

/// Internal resource holding token hashes.
pub const TOKENS: &str = "tokens";
/// Group of the region's super-users.
pub const MASTERS: &str = "system:masters";

/// Who is calling.
#[derive(Clone, Debug, PartialEq)]
pub struct Identity {
    /// The caller's tenant (`""`: system space).
    pub tenant: String,
    /// User name.
    pub user: String,
    /// Groups.
    pub groups: Vec<String>,
}

impl Identity {
    /// The region's system administrator.
    pub fn system_admin() -> Self {
        Identity {
            tenant: String::new(),
            user: "system:admin".into(),
            groups: vec![MASTERS.into(), "system:authenticated".into()],
        }
    }
    /// Whether this is a system-space super-user.
    pub fn is_system_admin(&self) -> bool {
        self.tenant.is_empty() && self.groups.iter().any(|g| g == MASTERS)
    }
}

/// Hex SHA-256 of a token: the only form a token is stored in.
pub fn hash_token(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A fresh random token (256 bits, URL-safe). The fixed prefix keeps it from starting with `-`,
/// which command lines would take for a flag (`--token -abc...`).
pub fn new_token() -> String {
    use base64::Engine;
    let mut b = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut b);
    format!(
        "at{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
    )
}

/// The stored record for a token; `bound` ties it to an object (service account) by key and
/// uid so deleting the object revokes the token.
pub fn token_record(
    id: &Identity,
    expires: Option<DateTime<Utc>>,
    bound: Option<(&Key, &str)>,
) -> Value {
    let mut v = json!({
        "metadata": {"name": ""},
        "tenant": id.tenant, "user": id.user, "groups": id.groups,
    });
    if let Some(e) = expires {
        v["expires"] = json!(e.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
    }
    if let Some((k, uid)) = bound {
        v["bound"] = json!({"resource": k.resource, "tenant": k.tenant, "namespace": k.namespace, "name": k.name, "uid": uid});
    }
    v
}

/// The key under which a token's hash is stored.
pub fn token_key(token: &str) -> Key {
    Key::new(TOKENS, "", "", &hash_token(token))
}

/// Resolve a bearer token to an identity.
pub fn authenticate(store: &Store, token: &str) -> Option<Identity> {
    let rec = store.get(&token_key(token))?;
    if let Some(exp) = rec.get("expires").and_then(Value::as_str) {
        let exp = DateTime::parse_from_rfc3339(exp).ok()?;
        if exp < Utc::now() {
            return None;
        }
    }
    if let Some(b) = rec.get("bound") {
        let s = |f: &str| b.get(f).and_then(Value::as_str).unwrap_or("");
        let obj = store.get(&Key::new(
            s("resource"),
            s("tenant"),
            s("namespace"),
            s("name"),
        ))?;
        if obj.pointer("/metadata/uid").and_then(Value::as_str) != Some(s("uid")) {
            return None;
        }
    }
    Some(Identity {
        tenant: rec.get("tenant")?.as_str()?.to_string(),
        user: rec.get("user")?.as_str()?.to_string(),
        groups: rec
            .get("groups")?
            .as_array()?
            .iter()
            .filter_map(|g| g.as_str().map(String::from))
            .collect(),
    })
}

/// Decide whether `id` may perform `verb` on `res` in the space of `tenant`.
///
/// The model (no RBAC yet): a system-space identity is a region administrator; a tenant
/// identity administers its own tenant's space and nothing else, and never system-only
/// resources.
pub fn authorize(
    id: &Identity,
    verb: &str,
    res: &Resource,
    tenant: &str,
    namespace: Option<&str>,
    name: &str,
) -> ApiResult<()> {
    if id.tenant.is_empty() {
        return Ok(());
    }
    let scope = match namespace {
        Some(ns) if !ns.is_empty() => format!(" in the namespace {ns:?}"),
        _ => " at the cluster scope".to_string(),
    };
    if res.space == Space::System || tenant != id.tenant {
        let scope = if tenant != id.tenant && res.space != Space::System {
            format!("{scope} of tenant {tenant:?}")
        } else {
            scope
        };
        return Err(ApiError::forbidden(
            &id.user, verb, res.group, res.plural, name, &scope,
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::find;

    #[test]
    fn hashes_are_stable_and_not_the_token() {
        let t = new_token();
        assert!(t.starts_with("at") && !t.contains('.'));
        assert_eq!(hash_token(&t), hash_token(&t));
        assert_ne!(hash_token(&t), t);
        assert_eq!(hash_token(&t).len(), 64);
    }

    #[test]
    fn tenant_users_stay_in_their_space() {
        let acme = Identity {
            tenant: "acme".into(),
            user: "admin".into(),
            groups: vec![],
        };
        let pods = find("", "v1", "pods").unwrap();
        let nodes = find("", "v1", "nodes").unwrap();
        assert!(authorize(&acme, "list", pods, "acme", Some("default"), "").is_ok());
        assert_eq!(
            authorize(&acme, "list", pods, "zeta", Some("default"), "")
                .unwrap_err()
                .code,
            403
        );
        assert_eq!(
            authorize(&acme, "list", nodes, "", None, "")
                .unwrap_err()
                .code,
            403
        );
        assert!(authorize(
            &Identity::system_admin(),
            "get",
            pods,
            "acme",
            Some("default"),
            "x"
        )
        .is_ok());
    }
}
