//! The region's API hooks: what goes in the same transaction as a write at the cloud.
//!
//! - Deleting an EdgeSite removes, in the same commit, the records that let the site in: its
//!   certificate records (so its certificates are refused from then on, though they have not
//!   expired), its uplink position (a site joining again under the name starts afresh) and its
//!   unused join tokens. The hub ends the site's live sessions when it sees the deletion.

use apiserver::api::{Hooks, Write};
use apiserver::error::ApiResult;
use apiserver::resources::Resource;
use apiserver::store::{Key, Op, Precondition, Store};
use serde_json::Value;

use crate::hub::{EDGESITES, JOIN_TOKENS, SITE_CERTS, SITE_SEQ};

/// Hooks of cloud-core's API.
pub struct CloudHooks {
    store: Store,
}

impl CloudHooks {
    /// Hooks over the region's store.
    pub fn new(store: Store) -> Self {
        CloudHooks { store }
    }

    /// Deletions of every record that admits `site`.
    fn site_records(&self, site: &str) -> Vec<Op> {
        let mut ops = Vec::new();
        for res in [SITE_CERTS, JOIN_TOKENS] {
            for (k, v) in self.store.list_of(res, Some("")).iter() {
                if v.get("site").and_then(Value::as_str) == Some(site) {
                    ops.push(Op::Delete {
                        key: k.clone(),
                        pre: Precondition::Any,
                    });
                }
            }
        }
        let seq = Key::new(SITE_SEQ, "", "", site);
        if self.store.get(&seq).is_some() {
            ops.push(Op::Delete {
                key: seq,
                pre: Precondition::Any,
            });
        }
        ops
    }
}

impl Hooks for CloudHooks {
    fn admit(&self, _res: &Resource, _write: Write<'_>) -> ApiResult<()> {
        Ok(())
    }

    fn also(&self, _res: &Resource, key: &Key, new: Option<&Value>, _status: bool) -> Vec<Op> {
        match (key.resource.as_str(), new) {
            (EDGESITES, None) => self.site_records(&key.name),
            _ => Vec::new(),
        }
    }
}
