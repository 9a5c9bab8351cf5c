//! The region's API hooks: what goes in the same transaction as a write at the cloud.
//!
//! - An object a site created is the site's: the cloud may ask for its deletion (it reaches the
//!   site, which deletes it), but changing it is refused with a 403 naming the site. Nodes are
//!   the exception: their spec, labels and annotations are the cloud's to set (see
//!   [`crate::uplink`]).
//! - Deleting an EdgeSite removes, in the same commit, the records that let the site in: its
//!   certificate records (so its certificates are refused from then on, though they have not
//!   expired), its uplink position (a site joining again under the name starts afresh) and its
//!   unused join tokens. The hub ends the site's live sessions when it sees the deletion.

use apiserver::api::{Committing, Hooks, Write};
use apiserver::error::{ApiError, ApiResult};
use apiserver::resources::Resource;
use serde_json::Value;
use store::{Key, Op, Precondition, Store};

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
    fn admit(&self, res: &Resource, write: Write<'_>) -> ApiResult<()> {
        match write {
            Write::Update { current, .. } | Write::Bind { current, .. }
                if res.plural != "nodes" =>
            {
                match proto::origin(current) {
                Some(site) => Err(ApiError::forbidden_msg(format!(
                    "{} {:?} was created at edge site {site} and is owned by it: change it at the site",
                    res.plural,
                    current
                        .pointer("/metadata/name")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                ))),
                    None => Ok(()),
                }
            }
            _ => Ok(()),
        }
    }

    fn also(&self, _res: &Resource, w: &Committing<'_>) -> Vec<Op> {
        match (w.key.resource.as_str(), w.new) {
            (EDGESITES, None) => self.site_records(&w.key.name),
            _ => Vec::new(),
        }
    }
}
