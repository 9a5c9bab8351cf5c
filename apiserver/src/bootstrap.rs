//! Start-up state shared by cloud-core and edge-core: the system namespaces and the local admin
//! credential. (The binaries' process start-up is the `boot` crate.)

use std::path::Path;

use serde_json::json;

use crate::api::{default_sa, namespace_object};
use crate::auth::{self, Identity};
use crate::kubeconfig::Kubeconfig;
use store::{Key, Op, Precondition, Store, StoreError};

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
