//! What the hub accepts from a site. A site is less trusted than the region: each uplink change
//! is judged as strictly as a request from a stranger, under the site's identity, against the
//! cloud's store. The rules:
//!
//! - **Kinds**: a site writes only API objects; internal records (tokens, certificates, sequence
//!   numbers) and unknown resources are refused outright.
//! - **Objects the site created** (`Put`): only the kinds of [`proto::SITE_CREATABLE`] (pods,
//!   configmaps, secrets, service accounts, events, nodes), only in the system space or a tenant
//!   the site serves (one its share holds), never over an object the cloud or another site owns.
//!   A new object passes the same defaults and validation as an API create
//!   ([`Api::admit_site_create`]); a new version of one of its objects those of an update
//!   ([`Api::admit_site_update`]). A pod may be bound only to one of the site's nodes and placed
//!   only on the site itself. Never tenants, edge sites, namespaces or workloads.
//! - **Nodes** are shared: the site owns their status (and what its agent registers); the cloud
//!   owns the spec (taints, unschedulable) and the labels and annotations set at the cloud. A
//!   site's edit of a node it registered carries the version it was made on, and only the
//!   fields the site changed are applied, each only if the cloud did not change it meanwhile:
//!   when both changed the same field, the cloud's value wins (and comes down to the site).
//! - **Status** (`Status`) of pods bound to the site's nodes or placed on it, and of its nodes.
//! - **Deletions** (`Delete`) of the site's own objects, and of objects in its share whose
//!   deletion the cloud asked for (a deletion timestamp is set).
//! - **Bindings** (`Bind`) of pods the cloud placed on the site, to the site's nodes.
//! - **Summaries** (`Summary`) of the site's own EdgeSite, well-formed and naming only the site.

use apiserver::api::Api;
use apiserver::resources::{self, Resource, Space};
use proto::sync::{ChangeKind, Up};
use serde_json::{json, Map, Value};
use store::{Key, Op, Precondition};

use crate::hub::{node_site, placed_site, EDGESITES};
use proto::{origin, ORIGIN, SITE_LABEL};

/// The decision on one uplink change.
#[derive(Debug)]
pub enum Verdict {
    /// Commit these ops (with the site's sequence). On a conflict, judge again.
    Apply(Vec<Op>),
    /// Nothing to write (e.g. the status of an object already gone).
    Nothing,
    /// Refused, and why.
    Refuse(String),
}

/// The site as the judge sees it.
pub struct Site<'a> {
    /// Its name.
    pub name: &'a str,
    /// Whether it serves a tenant (its share holds the tenant).
    pub serves: &'a (dyn Fn(&str) -> bool + Sync),
}

fn parse(up: &Up) -> Result<Value, Verdict> {
    let v: Value = serde_json::from_slice(&up.object)
        .map_err(|e| Verdict::Refuse(format!("the object is not valid JSON: {e}")))?;
    if v.is_object() {
        Ok(v)
    } else {
        Err(Verdict::Refuse("the object is not a JSON object".into()))
    }
}

fn refuse(why: impl Into<String>) -> Verdict {
    Verdict::Refuse(why.into())
}

fn node_name(v: &Value) -> &str {
    v.pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// Judge one uplink change from `site`.
pub fn judge(api: &Api, site: &Site<'_>, up: &Up) -> Verdict {
    let Some(k) = &up.key else {
        return refuse("the change names no object");
    };
    let key = Key::new(&k.resource, &k.tenant, &k.namespace, &k.name);
    let Some(res) = resources::by_store_name(&key.resource) else {
        return refuse(format!("{:?} is not an API resource", key.resource));
    };
    if res.namespaced == key.namespace.is_empty() {
        return refuse(format!(
            "{} are {}namespaced",
            res.plural,
            if res.namespaced { "" } else { "not " }
        ));
    }
    if res.space == Space::System && !key.tenant.is_empty() {
        return refuse(format!("{} live only in the system space", res.plural));
    }
    if key.name.is_empty() || key.name.len() > 253 || key.namespace.len() > 63 {
        return refuse("the object's name or namespace is not valid");
    }
    let Ok(kind) = ChangeKind::try_from(up.kind) else {
        return refuse(format!("unknown change kind {}", up.kind));
    };
    let current = api.store.get(&key);
    let j = Judging {
        api,
        site,
        res,
        key,
        current: current.as_deref(),
        up,
    };
    match kind {
        ChangeKind::Put => j.put(),
        ChangeKind::Status => j.status(),
        ChangeKind::Delete => Ok(j.delete()),
        ChangeKind::Bind => j.bind(),
        ChangeKind::Summary => j.summary(),
    }
    .unwrap_or_else(|v| v)
}

/// One uplink change being judged: the site, the object's resource and key, the cloud's copy.
struct Judging<'a> {
    api: &'a Api,
    site: &'a Site<'a>,
    res: &'static Resource,
    key: Key,
    current: Option<&'a Value>,
    up: &'a Up,
}

/// Whether `v` (stored at the cloud) is in `site`'s share as a pod bound to one of its nodes or
/// placed on it, or as one of its nodes.
fn in_share(api: &Api, site: &str, res: &Resource, v: &Value) -> bool {
    match res.plural {
        "nodes" => node_site(v).as_deref() == Some(site),
        "pods" => {
            let node = node_name(v);
            if node.is_empty() {
                placed_site(v).as_deref() == Some(site)
            } else {
                is_site_node(api, site, node)
            }
        }
        _ => false,
    }
}

fn is_site_node(api: &Api, site: &str, node: &str) -> bool {
    api.store
        .get(&Key::new("nodes", "", "", node))
        .is_some_and(|n| node_site(&n).as_deref() == Some(site))
}

/// A pod of the site may be bound only to the site's nodes and placed only on the site.
fn check_pod_place(api: &Api, site: &str, old: Option<&Value>, new: &Value) -> Result<(), Verdict> {
    let node = node_name(new);
    if !node.is_empty()
        && old.is_none_or(|o| node_name(o) != node)
        && !is_site_node(api, site, node)
    {
        return Err(refuse(format!(
            "pods may be bound only to the site's own nodes, not {node:?}"
        )));
    }
    if let Some(p) = placed_site(new).filter(|p| p != site) {
        return Err(refuse(format!(
            "a pod the site created cannot be placed on site {p:?}"
        )));
    }
    Ok(())
}

impl Judging<'_> {
    fn put(&self) -> Result<Verdict, Verdict> {
        let (api, site, res, key, current, up) = (
            self.api,
            self.site,
            self.res,
            &self.key,
            self.current,
            self.up,
        );
        if !proto::SITE_CREATABLE.contains(&res.plural) {
            return Err(refuse(format!(
                "a site may not create or replace {}",
                res.plural
            )));
        }
        if !key.tenant.is_empty() && !(site.serves)(&key.tenant) {
            return Err(refuse(format!(
                "the site does not serve tenant {:?}",
                key.tenant
            )));
        }
        let mut v = parse(up)?;
        let bad = |e: apiserver::error::ApiError| refuse(e.message);
        match current {
            Some(c) if origin(c) == Some(site.name) => {
                let new = match res.plural {
                    "nodes" => {
                        let base = serde_json::from_slice::<Value>(&up.base).ok();
                        let mut n = merge_node(c, &v, base.as_ref());
                        n["metadata"]["labels"][SITE_LABEL] = json!(site.name);
                        api.admit_site_update(res, c, n).map_err(bad)?
                    }
                    "pods" => {
                        check_pod_place(api, site.name, Some(c), &v)?;
                        // Binding its own pod (once) is the site's: judge the rest of the update
                        // against the stored pod as if it were bound already.
                        let mut old = c.clone();
                        if node_name(c).is_empty() && !node_name(&v).is_empty() {
                            old["spec"]["nodeName"] = v["spec"]["nodeName"].clone();
                        }
                        api.admit_site_update(res, &old, v).map_err(bad)?
                    }
                    _ => api.admit_site_update(res, c, v).map_err(bad)?,
                };
                Ok(Verdict::Apply(vec![Op::replace(key.clone(), c, new)]))
            }
            Some(c) => Err(refuse(match origin(c) {
                Some(o) => format!("{} {:?} belongs to site {o:?}", res.plural, key.name),
                None => format!("{} {:?} is owned by the cloud", res.plural, key.name),
            })),
            None => {
                if res.plural == "pods" {
                    check_pod_place(api, site.name, None, &v)?;
                }
                if let Some(m) = v.get_mut("metadata").and_then(Value::as_object_mut) {
                    m.remove("resourceVersion");
                }
                let mut n = api.admit_site_create(key, v).map_err(bad)?;
                n["metadata"]["annotations"][ORIGIN] = json!(site.name);
                if res.plural == "nodes" {
                    n["metadata"]["labels"][SITE_LABEL] = json!(site.name);
                }
                Ok(Verdict::Apply(vec![Op::Put {
                    key: key.clone(),
                    value: n,
                    pre: Precondition::Absent,
                }]))
            }
        }
    }

    fn status(&self) -> Result<Verdict, Verdict> {
        let (api, site, res, key, current, up) = (
            self.api,
            self.site,
            self.res,
            &self.key,
            self.current,
            self.up,
        );
        if !matches!(res.plural, "pods" | "nodes") {
            return Err(refuse(format!(
                "a site reports no status of {}",
                res.plural
            )));
        }
        let Some(c) = current else {
            return Ok(Verdict::Nothing);
        };
        if origin(c) != Some(site.name) && !in_share(api, site.name, res, c) {
            return Err(refuse(format!(
                "{} {:?} is not the site's",
                res.plural, key.name
            )));
        }
        let v = parse(up)?;
        let status = v.get("status").cloned().unwrap_or(Value::Null);
        let mut n = c.clone();
        if !status.is_null() {
            // The rest of the stored object stays as it is (and valid): the status is checked
            // on its own, which is much cheaper than the whole object.
            n["status"] =
                apiserver::validate::checked_status(res, status).map_err(|e| refuse(e.message))?;
        } else if let Some(o) = n.as_object_mut() {
            o.remove("status");
        }
        Ok(Verdict::Apply(vec![Op::replace(key.clone(), c, n)]))
    }

    fn delete(&self) -> Verdict {
        let (api, site, res, key, current) =
            (self.api, self.site, self.res, &self.key, self.current);
        let Some(c) = current else {
            return Verdict::Nothing;
        };
        let asked = c.pointer("/metadata/deletionTimestamp").is_some();
        if origin(c) == Some(site.name) || (asked && in_share(api, site.name, res, c)) {
            let rv = store::object_rv(c).unwrap_or(0);
            Verdict::Apply(vec![Op::Delete {
                key: key.clone(),
                pre: Precondition::Version(rv),
            }])
        } else {
            refuse(format!(
                "the cloud did not ask for the deletion of {} {:?}",
                res.plural, key.name
            ))
        }
    }

    fn bind(&self) -> Result<Verdict, Verdict> {
        let (api, site, res, key, current, up) = (
            self.api,
            self.site,
            self.res,
            &self.key,
            self.current,
            self.up,
        );
        if res.plural != "pods" {
            return Err(refuse("only pods are bound"));
        }
        let v = parse(up)?;
        let node = node_name(&v);
        let Some(c) = current else {
            return Ok(Verdict::Nothing);
        };
        if placed_site(c).as_deref() != Some(site.name) || !node_name(c).is_empty() {
            return Err(refuse(format!(
                "pod {:?} is not an unbound pod the cloud placed on the site",
                key.name
            )));
        }
        if !is_site_node(api, site.name, node) {
            return Err(refuse(format!("node {node:?} is not one of the site's")));
        }
        let mut n = c.clone();
        n["spec"]["nodeName"] = json!(node);
        if let Some(st) = v.get("status") {
            n["status"] = st.clone();
        }
        let mut old = c.clone();
        old["spec"]["nodeName"] = json!(node);
        let n = api
            .admit_site_update(res, &old, n)
            .map_err(|e| refuse(e.message))?;
        Ok(Verdict::Apply(vec![Op::replace(key.clone(), c, n)]))
    }

    fn summary(&self) -> Result<Verdict, Verdict> {
        let (site, key, current, up) = (self.site, &self.key, self.current, self.up);
        if key.resource != EDGESITES || key.name != site.name {
            return Err(refuse("a site reports only its own summary"));
        }
        let Some(c) = current else {
            return Ok(Verdict::Nothing);
        };
        let s: controllers::sched::SiteSummary = serde_json::from_slice(&up.object)
            .map_err(|e| refuse(format!("the summary is not well-formed: {e}")))?;
        let prefix = format!("{}/", site.name);
        if let Some(bad) = s.classes.iter().find(|c| !c.name.starts_with(&prefix)) {
            return Err(refuse(format!(
                "summary class {:?} does not name the site",
                bad.name
            )));
        }
        let mut n = c.clone();
        n["status"]["summary"] = serde_json::to_value(&s).unwrap_or(Value::Null);
        Ok(Verdict::Apply(vec![Op::replace(key.clone(), c, n)]))
    }
}

/// The parts of a node the cloud owns: its spec and its labels and annotations.
fn meta_map<'a>(v: &'a Value, field: &str) -> Option<&'a Map<String, Value>> {
    v.pointer(&format!("/metadata/{field}"))
        .and_then(Value::as_object)
}

/// Three-way merge of a site's edit of its node: `site` is the site's new version, `base` the
/// version the edit was made on, `cloud` the cloud's current copy. Status is the site's; every
/// spec field, label and annotation the site changed (against `base`) takes the site's value,
/// unless the cloud changed it too (against `base`), in which case the cloud's stays. Without
/// a base, only the status is taken.
pub fn merge_node(cloud: &Value, site: &Value, base: Option<&Value>) -> Value {
    let mut out = cloud.clone();
    out["status"] = site.get("status").cloned().unwrap_or(Value::Null);
    let Some(base) = base else {
        return out;
    };
    let merge = |cloud: Option<&Map<String, Value>>,
                 site: Option<&Map<String, Value>>,
                 base: Option<&Map<String, Value>>|
     -> Map<String, Value> {
        let empty = Map::new();
        let (c, s, b) = (
            cloud.unwrap_or(&empty),
            site.unwrap_or(&empty),
            base.unwrap_or(&empty),
        );
        let mut out = c.clone();
        for k in s.keys().chain(b.keys()) {
            if k == ORIGIN {
                continue;
            }
            let (sv, bv, cv) = (s.get(k), b.get(k), c.get(k));
            if sv != bv && cv == bv {
                match sv {
                    Some(v) => out.insert(k.clone(), v.clone()),
                    None => out.remove(k),
                };
            }
        }
        out
    };
    let spec = merge(
        cloud.get("spec").and_then(Value::as_object),
        site.get("spec").and_then(Value::as_object),
        base.get("spec").and_then(Value::as_object),
    );
    out["spec"] = Value::Object(spec);
    for f in ["labels", "annotations"] {
        let m = merge(meta_map(cloud, f), meta_map(site, f), meta_map(base, f));
        out["metadata"][f] = Value::Object(m);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::sync::ObjectKey;
    use std::sync::Arc;
    use store::Store;

    async fn api() -> Arc<Api> {
        let store = Store::memory(100).await.unwrap();
        let api = Api::new(store.clone(), apiserver::api::ApiConfig::default());
        let node = |name: &str, site: &str| {
            json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "uid": format!("u-{name}"),
                "labels": {SITE_LABEL: site}, "annotations": {ORIGIN: site}}})
        };
        let pod = |name: &str, node: &str, extra: Value| {
            let mut p = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "default", "uid": format!("u-{name}")},
                "spec": {"nodeName": node, "containers": [{"name": "c", "image": "i"}]}});
            if let (Some(m), Some(e)) = (p["metadata"].as_object_mut(), extra.as_object()) {
                m.extend(e.clone());
            }
            p
        };
        let mut ops = Vec::new();
        for (k, v) in [
            (
                Key::new("namespaces", "", "", "default"),
                apiserver::api::namespace_object("", "default"),
            ),
            (Key::new("nodes", "", "", "n1"), node("n1", "s1")),
            (Key::new("nodes", "", "", "n2"), node("n2", "s2")),
            (
                Key::new("pods", "", "default", "cloud"),
                pod("cloud", "n1", json!({})),
            ),
            (
                Key::new("pods", "", "default", "asked"),
                pod(
                    "asked",
                    "n1",
                    json!({"deletionTimestamp": "2026-01-01T00:00:00Z"}),
                ),
            ),
        ] {
            ops.push(Op::Put {
                key: k,
                value: v,
                pre: Precondition::Absent,
            });
        }
        store.commit(ops).await.unwrap();
        api
    }

    fn up(kind: ChangeKind, k: (&str, &str, &str, &str), object: Value) -> Up {
        Up {
            seq: 1,
            kind: kind as i32,
            key: Some(ObjectKey {
                resource: k.0.into(),
                tenant: k.1.into(),
                namespace: k.2.into(),
                name: k.3.into(),
            }),
            object: if object.is_null() {
                Vec::new()
            } else {
                serde_json::to_vec(&object).unwrap()
            },
            base: Vec::new(),
        }
    }

    fn verdict(api: &Api, u: &Up) -> Result<usize, String> {
        let serves = |t: &str| t == "acme";
        let site = Site {
            name: "s1",
            serves: &serves,
        };
        match judge(api, &site, u) {
            Verdict::Apply(ops) => Ok(ops.len()),
            Verdict::Nothing => Ok(0),
            Verdict::Refuse(r) => Err(r),
        }
    }

    #[tokio::test]
    async fn a_site_writes_only_what_is_its_own() {
        let api = api().await;
        let cm = |name: &str| json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}});
        let refused = |u: Up, why: &str| {
            let r = verdict(&api, &u).expect_err(why);
            assert!(r.contains(why), "{r:?} lacks {why:?}");
        };
        refused(
            up(
                ChangeKind::Put,
                ("tenants", "", "", "t"),
                json!({"metadata": {"name": "t"}}),
            ),
            "may not create or replace tenants",
        );
        refused(
            up(
                ChangeKind::Put,
                ("tokens", "", "", "h"),
                json!({"user": "x"}),
            ),
            "not an API resource",
        );
        refused(
            up(
                ChangeKind::Put,
                ("configmaps", "zeta", "default", "c"),
                cm("c"),
            ),
            "does not serve tenant",
        );
        refused(
            up(ChangeKind::Put, ("configmaps", "", "", "c"), cm("c")),
            "are namespaced",
        );
        refused(
            up(
                ChangeKind::Put,
                ("nodes", "", "", "n2"),
                json!({"metadata": {"name": "n2"}}),
            ),
            "belongs to site \"s2\"",
        );
        refused(
            up(
                ChangeKind::Put,
                ("pods", "", "default", "cloud"),
                json!({"metadata": {"name": "cloud"}}),
            ),
            "owned by the cloud",
        );
        refused(
            up(
                ChangeKind::Put,
                ("pods", "", "default", "x"),
                json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x"}, "spec": {"nodeName": "n2", "containers": [{"name": "c", "image": "i"}]}}),
            ),
            "only to the site's own nodes",
        );
        refused(
            up(
                ChangeKind::Put,
                ("pods", "", "default", "y"),
                json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "y"}, "spec": {}}),
            ),
            "spec.containers",
        );
        refused(
            up(
                ChangeKind::Delete,
                ("pods", "", "default", "cloud"),
                Value::Null,
            ),
            "did not ask",
        );
        refused(
            up(
                ChangeKind::Put,
                ("configmaps", "", "default", "c"),
                json!("just a string"),
            ),
            "not a JSON object",
        );
        refused(
            up(
                ChangeKind::Status,
                ("pods", "", "default", "cloud"),
                json!({"status": {"phase": 5}}),
            ),
            "cannot be handled",
        );
        // Its own, valid: accepted.
        assert_eq!(
            verdict(
                &api,
                &up(ChangeKind::Put, ("configmaps", "", "default", "c"), cm("c"))
            ),
            Ok(1)
        );
        assert_eq!(
            verdict(
                &api,
                &up(
                    ChangeKind::Status,
                    ("pods", "", "default", "cloud"),
                    json!({"status": {"phase": "Running"}})
                )
            ),
            Ok(1)
        );
        assert_eq!(
            verdict(
                &api,
                &up(
                    ChangeKind::Delete,
                    ("pods", "", "default", "asked"),
                    Value::Null
                )
            ),
            Ok(1)
        );
        assert_eq!(
            verdict(
                &api,
                &up(
                    ChangeKind::Delete,
                    ("pods", "", "default", "gone"),
                    Value::Null
                )
            ),
            Ok(0)
        );
        assert_eq!(
            verdict(
                &api,
                &up(
                    ChangeKind::Put,
                    ("nodes", "", "", "n3"),
                    json!({"metadata": {"name": "n3"}})
                )
            ),
            Ok(1)
        );
    }

    fn node(labels: Value, spec: Value, status: &str) -> Value {
        json!({"metadata": {"name": "n1", "labels": labels}, "spec": spec, "status": {"phase": status}})
    }

    #[test]
    fn node_edits_merge_field_by_field_and_the_cloud_wins_a_tie() {
        let base = node(json!({"a": "1", "b": "1"}), json!({}), "old");
        // The cloud tainted the node and set b=cloud; the site cordoned it, set b=site and
        // a=site, and removed nothing.
        let cloud = node(
            json!({"a": "1", "b": "cloud"}),
            json!({"taints": [{"key": "k", "effect": "NoSchedule"}]}),
            "old",
        );
        let site = node(
            json!({"a": "site", "b": "site"}),
            json!({"unschedulable": true}),
            "new",
        );
        let m = merge_node(&cloud, &site, Some(&base));
        assert_eq!(m["metadata"]["labels"], json!({"a": "site", "b": "cloud"}));
        assert_eq!(m["spec"]["unschedulable"], true);
        assert_eq!(m["spec"]["taints"][0]["key"], "k");
        assert_eq!(m["status"]["phase"], "new");
        // A removal at the site of a field the cloud left alone is applied.
        let site = node(json!({"b": "1"}), json!({}), "new");
        let m = merge_node(&base, &site, Some(&base));
        assert_eq!(m["metadata"]["labels"], json!({"b": "1"}));
        // Without a base, nothing but the status.
        let m = merge_node(&cloud, &site, None);
        assert_eq!(m["metadata"]["labels"], cloud["metadata"]["labels"]);
        assert_eq!(m["spec"], cloud["spec"]);
        assert_eq!(m["status"]["phase"], "new");
    }
}
