//! Request paths: `/api/v1/...` and `/apis/{group}/{version}/...`, with the Arktos
//! `tenants/{t}/` prefix for full paths and the legacy `watch/` prefix.

use crate::resources::{self, Resource};

/// A parsed resource request path.
#[derive(Debug, PartialEq)]
pub struct ResourcePath {
    /// The resource.
    pub resource: &'static Resource,
    /// Tenant named by a full path; `None` for short paths (resolved from the caller).
    pub tenant: Option<String>,
    /// Namespace, for namespaced resources.
    pub namespace: Option<String>,
    /// Object name, if the path names one.
    pub name: Option<String>,
    /// Subresource (`status`, `token`, ...).
    pub subresource: Option<String>,
    /// Legacy `/watch/` path.
    pub watch: bool,
}

/// What a path addresses.
#[derive(Debug, PartialEq)]
pub enum Route {
    /// `/api`.
    CoreVersions,
    /// `/apis`.
    Groups,
    /// `/apis/{group}`.
    Group(String),
    /// `/api/v1` or `/apis/{group}/{version}`.
    ResourceList(String, String),
    /// An object or collection.
    Resource(ResourcePath),
}

/// Parse a path (without query). `None` means 404.
pub fn parse(path: &str) -> Option<Route> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, version, rest): (&str, &str, &[&str]) = match segs.as_slice() {
        ["api"] => return Some(Route::CoreVersions),
        ["apis"] => return Some(Route::Groups),
        ["apis", g] => {
            return resources::groups()
                .iter()
                .any(|(gg, _)| gg == g)
                .then(|| Route::Group(g.to_string()))
        }
        ["api", v] => {
            return (*v == "v1").then(|| Route::ResourceList(String::new(), v.to_string()))
        }
        ["apis", g, v] => {
            return resources::groups()
                .iter()
                .any(|(gg, vv)| gg == g && vv == v)
                .then(|| Route::ResourceList(g.to_string(), v.to_string()))
        }
        ["api", v, rest @ ..] => ("", *v, rest),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => return None,
    };
    let mut rest = rest;
    let mut watch = false;
    if rest.first() == Some(&"watch") {
        watch = true;
        rest = &rest[1..];
    }
    if rest.iter().any(|s| s.is_empty()) {
        return None;
    }
    // Full path: tenants/{t}/<more>. `tenants/{t}` alone (or with a subresource of tenants)
    // addresses the Tenant object itself.
    let mut tenant = None;
    if group.is_empty() && rest.first() == Some(&"tenants") && rest.len() >= 3 {
        let tenants = resources::find("", "v1", "tenants")?;
        if !(rest.len() == 3 && tenants.subresources.contains(&rest[2])) {
            tenant = Some(rest[1].to_string());
            rest = &rest[2..];
        }
    }
    if group.is_empty() && tenant.is_none() && rest.first() == Some(&"tenants") && rest.len() >= 3 {
        // `/api/v1/tenants/{t}/{subresource}` of the tenant object
        let r = resources::find("", "v1", "tenants")?;
        return Some(Route::Resource(ResourcePath {
            resource: r,
            tenant: None,
            namespace: None,
            name: Some(rest[1].to_string()),
            subresource: Some(rest[2].to_string()),
            watch,
        }));
    }
    let ns_res = resources::find("", "v1", "namespaces")?;
    let (namespace, rest): (Option<String>, Vec<&str>) = match rest {
        // `namespaces/{ns}/status` is the namespace's subresource, not a resource in it.
        ["namespaces", ns, r, more @ ..]
            if !(group.is_empty() && more.is_empty() && ns_res.subresources.contains(r)) =>
        {
            let mut v = vec![*r];
            v.extend_from_slice(more);
            (Some(ns.to_string()), v)
        }
        _ => (None, rest.to_vec()),
    };
    let (plural, name, sub) = match rest.as_slice() {
        [p] => (*p, None, None),
        [p, n] => (*p, Some(n.to_string()), None),
        [p, n, s] => (*p, Some(n.to_string()), Some(s.to_string())),
        _ => return None,
    };
    let resource = resources::find(group, version, plural)?;
    if resource.namespaced != namespace.is_some()
        && !(resource.namespaced && namespace.is_none() && name.is_none())
    {
        return None;
    }
    if let Some(s) = &sub {
        if !resource.subresources.contains(&s.as_str()) {
            return None;
        }
    }
    Some(Route::Resource(ResourcePath {
        resource,
        tenant,
        namespace,
        name,
        subresource: sub,
        watch,
    }))
}

pub use proto::query::percent_encode;

#[cfg(test)]
mod tests {
    use super::*;

    fn rp(path: &str) -> ResourcePath {
        match parse(path) {
            Some(Route::Resource(r)) => r,
            other => panic!("{path}: {other:?}"),
        }
    }

    #[test]
    fn short_and_full_paths() {
        let r = rp("/api/v1/namespaces/default/pods/web");
        assert_eq!(
            (
                r.resource.plural,
                r.tenant,
                r.namespace.as_deref(),
                r.name.as_deref()
            ),
            ("pods", None, Some("default"), Some("web"))
        );
        let r = rp("/api/v1/tenants/acme/namespaces/default/pods");
        assert_eq!(
            (r.tenant.as_deref(), r.namespace.as_deref(), r.name),
            (Some("acme"), Some("default"), None)
        );
        let r = rp("/api/v1/tenants/acme/namespaces/prod");
        assert_eq!(
            (r.resource.plural, r.tenant.as_deref(), r.name.as_deref()),
            ("namespaces", Some("acme"), Some("prod"))
        );
        let r = rp("/api/v1/tenants/acme");
        assert_eq!(
            (r.resource.plural, r.tenant, r.name.as_deref()),
            ("tenants", None, Some("acme"))
        );
        let r = rp("/api/v1/tenants/acme/token");
        assert_eq!(
            (
                r.resource.plural,
                r.name.as_deref(),
                r.subresource.as_deref()
            ),
            ("tenants", Some("acme"), Some("token"))
        );
        let r = rp("/api/v1/pods");
        assert_eq!((r.resource.plural, r.namespace), ("pods", None));
    }

    #[test]
    fn subresources_and_watch() {
        let r = rp("/api/v1/namespaces/default/pods/web/status");
        assert_eq!(r.subresource.as_deref(), Some("status"));
        let r = rp("/api/v1/namespaces/prod/status");
        assert_eq!(
            (
                r.resource.plural,
                r.name.as_deref(),
                r.subresource.as_deref()
            ),
            ("namespaces", Some("prod"), Some("status"))
        );
        let r = rp("/api/v1/watch/namespaces/default/pods");
        assert!(r.watch);
        let r = rp("/apis/edge.atoll.io/v1/edgesites/s1");
        assert_eq!(r.resource.kind, "EdgeSite");
        let r = rp("/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/n1");
        assert_eq!(r.resource.kind, "Lease");
    }

    #[test]
    fn rejects_unknown_and_malformed() {
        assert_eq!(parse("/api/v2"), None);
        assert_eq!(parse("/api/v1/widgets"), None);
        assert_eq!(parse("/api/v1/namespaces/default/pods/web/bogus"), None);
        assert_eq!(parse("/api/v1/namespaces/default/nodes"), None);
        assert_eq!(parse("/api/v1/nodes//status"), None);
        assert_eq!(parse("/apis/nope.io"), None);
        assert_eq!(parse("/api/v1/namespaces/default/pods/a/b/c"), None);
    }
}
