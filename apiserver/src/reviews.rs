//! Who am I and what may I do: `SelfSubjectReview` (`kubectl auth whoami`),
//! `SelfSubjectAccessReview` (`kubectl auth can-i VERB RESOURCE`) and
//! `SelfSubjectRulesReview` (`kubectl auth can-i --list`), answered from the caller's identity
//! by the same rule every request is authorized with ([`crate::auth::authorize`]). Nothing is
//! stored: a create returns the object with its `status` filled in, as kube-apiserver does.

use serde_json::{json, Value};

use crate::auth::Identity;
use crate::error::{ApiError, ApiResult, Cause};
use crate::resources::{Space, RESOURCES};

/// `POST` paths served here, and the kind each takes.
pub const PATHS: [(&str, &str, &str); 3] = [
    (
        "/apis/authentication.k8s.io/v1/selfsubjectreviews",
        "authentication.k8s.io/v1",
        "SelfSubjectReview",
    ),
    (
        "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
        "authorization.k8s.io/v1",
        "SelfSubjectAccessReview",
    ),
    (
        "/apis/authorization.k8s.io/v1/selfsubjectrulesreviews",
        "authorization.k8s.io/v1",
        "SelfSubjectRulesReview",
    ),
];

/// Non-resource paths every authenticated caller may get (kube's `system:discovery` and
/// `system:public-info-viewer`).
const PUBLIC_PATHS: [&str; 11] = [
    "/api",
    "/api/*",
    "/apis",
    "/apis/*",
    "/healthz",
    "/livez",
    "/readyz",
    "/openapi",
    "/openapi/*",
    "/version",
    "/version/",
];

fn matches_path(pattern: &str, path: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => path.starts_with(prefix),
        None => pattern == path,
    }
}

/// Answer a review `body` posted at `path` by `id`; `None` when `path` is not one of them.
pub fn serve(id: &Identity, path: &str, body: &Value) -> Option<ApiResult<Value>> {
    let (_, api_version, kind) = PATHS.iter().find(|(p, _, _)| *p == path)?;
    Some(review(id, api_version, kind, body))
}

fn review(id: &Identity, api_version: &str, kind: &str, body: &Value) -> ApiResult<Value> {
    let group = api_version.split('/').next().unwrap_or("");
    if let Some(k) = body.get("kind").and_then(Value::as_str) {
        if k != kind {
            return Err(ApiError::bad_request(format!(
                "the body is a {k}, not a {kind}"
            )));
        }
    }
    let mut out = json!({
        "kind": kind,
        "apiVersion": api_version,
        "metadata": body.get("metadata").cloned().unwrap_or_else(|| json!({})),
    });
    match kind {
        "SelfSubjectReview" => {
            let mut user = json!({"username": id.user, "groups": id.groups});
            if !id.tenant.is_empty() {
                user["extra"] = json!({"tenant": [id.tenant]});
            }
            out["status"] = json!({"userInfo": user});
        }
        "SelfSubjectAccessReview" => {
            let spec = body.get("spec").cloned().unwrap_or_else(|| json!({}));
            let (allowed, reason) = access(id, &spec)
                .map_err(|cause| ApiError::invalid(group, kind, "", vec![cause]))?;
            out["spec"] = spec;
            out["status"] = json!({"allowed": allowed, "reason": reason});
        }
        _ => {
            let spec = body.get("spec").cloned().unwrap_or_else(|| json!({}));
            out["status"] = rules(id);
            out["spec"] = spec;
        }
    }
    Ok(out)
}

/// Whether `id` may do what `spec` asks, and why (a cause naming the field when the spec is
/// unusable).
fn access(id: &Identity, spec: &Value) -> Result<(bool, String), Cause> {
    let ra = spec.get("resourceAttributes").filter(|v| v.is_object());
    let na = spec.get("nonResourceAttributes").filter(|v| v.is_object());
    let s = |v: Option<&Value>, k: &str| {
        v.and_then(|v| v.get(k))
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    match (ra, na) {
        (Some(_), Some(_)) => Err(Cause::forbidden(
            "spec.nonResourceAttributes",
            "cannot be specified in combination with resourceAttributes",
        )),
        (None, None) => Err(Cause::required("spec.resourceAttributes")),
        (None, Some(_)) => {
            let path = s(na, "path");
            if id.is_system_admin() {
                return Ok((true, "the region's administrators may do anything".into()));
            }
            let verb = s(na, "verb");
            let public = verb == "get" && PUBLIC_PATHS.iter().any(|p| matches_path(p, &path));
            Ok((
                public,
                if public {
                    "a discovery or health path every authenticated user may read".into()
                } else {
                    format!("only the region's administrators may {verb} {path}")
                },
            ))
        }
        (Some(_), None) => {
            let (group, plural) = (s(ra, "group"), s(ra, "resource"));
            let verb = s(ra, "verb");
            if id.tenant.is_empty() {
                return Ok((true, "the region's administrators may do anything".into()));
            }
            let known = RESOURCES
                .iter()
                .find(|r| r.group == group && (r.plural == plural || plural == "*"));
            Ok(match known {
                _ if plural == "*" || group == "*" => (
                    false,
                    format!(
                        "tenant {:?}'s users may not act on every resource (system resources are the region's)",
                        id.tenant
                    ),
                ),
                Some(r) if r.space == Space::System => (
                    false,
                    format!("{} are the region's: only its administrators may {verb} them", r.plural),
                ),
                Some(r) => (
                    true,
                    format!("tenant {:?}'s users administer its {}", id.tenant, r.plural),
                ),
                None => (false, format!("no resource {plural:?} in group {group:?}")),
            })
        }
    }
}

/// What `id` may do, as a rules review states it.
fn rules(id: &Identity) -> Value {
    if id.tenant.is_empty() {
        return json!({
            "resourceRules": [{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}],
            "nonResourceRules": [{"verbs": ["*"], "nonResourceURLs": ["*"]}],
            "incomplete": false,
        });
    }
    let mut by_group: std::collections::BTreeMap<&str, Vec<String>> = Default::default();
    for r in RESOURCES.iter().filter(|r| r.space != Space::System) {
        let list = by_group.entry(r.group).or_default();
        if !list.iter().any(|p| p == r.plural) {
            list.push(r.plural.to_string());
            list.extend(r.subresources.iter().map(|s| format!("{}/{s}", r.plural)));
        }
    }
    let resource_rules: Vec<Value> = by_group
        .into_iter()
        .map(|(g, rs)| json!({"verbs": ["*"], "apiGroups": [g], "resources": rs}))
        .collect();
    json!({
        "resourceRules": resource_rules,
        "nonResourceRules": [{"verbs": ["get"], "nonResourceURLs": PUBLIC_PATHS}],
        "incomplete": false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenant_user() -> Identity {
        Identity {
            tenant: "acme".into(),
            user: "admin".into(),
            groups: vec!["system:authenticated".into()],
        }
    }

    fn can(id: &Identity, attrs: Value) -> bool {
        let body = json!({"kind": "SelfSubjectAccessReview", "spec": attrs});
        serve(id, PATHS[1].0, &body).unwrap().unwrap()["status"]["allowed"] == json!(true)
    }

    #[test]
    fn access_reviews_follow_the_authorization_rule() {
        let acme = tenant_user();
        let admin = Identity::system_admin();
        let pods = json!({"resourceAttributes": {"verb": "create", "resource": "pods", "namespace": "default"}});
        let nodes = json!({"resourceAttributes": {"verb": "list", "resource": "nodes"}});
        let metrics = json!({"nonResourceAttributes": {"verb": "get", "path": "/metrics"}});
        let version = json!({"nonResourceAttributes": {"verb": "get", "path": "/version"}});
        assert!(can(&acme, pods.clone()) && can(&admin, pods));
        assert!(!can(&acme, nodes.clone()) && can(&admin, nodes));
        assert!(!can(&acme, metrics.clone()) && can(&admin, metrics));
        assert!(can(&acme, version));
        // Neither or both attributes: 422 naming the field.
        for bad in [
            json!({}),
            json!({"resourceAttributes": {}, "nonResourceAttributes": {}}),
        ] {
            let e = serve(&acme, PATHS[1].0, &json!({"spec": bad}))
                .unwrap()
                .unwrap_err();
            assert_eq!(e.code, 422);
        }
        assert!(serve(&acme, "/apis/authorization.k8s.io/v1/other", &json!({})).is_none());
    }

    #[test]
    fn whoami_and_rules_describe_the_caller() {
        let acme = tenant_user();
        let me = serve(&acme, PATHS[0].0, &json!({})).unwrap().unwrap();
        assert_eq!(me["status"]["userInfo"]["username"], "admin");
        assert_eq!(me["status"]["userInfo"]["extra"]["tenant"], json!(["acme"]));
        let r = serve(
            &acme,
            PATHS[2].0,
            &json!({"spec": {"namespace": "default"}}),
        )
        .unwrap()
        .unwrap();
        let rules = r["status"]["resourceRules"].as_array().unwrap();
        let core = rules
            .iter()
            .find(|r| r["apiGroups"] == json!([""]))
            .unwrap();
        let res: Vec<&str> = core["resources"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(Value::as_str)
            .collect();
        assert!(res.contains(&"pods") && res.contains(&"pods/exec"));
        assert!(
            !res.contains(&"nodes"),
            "system resources are not a tenant's"
        );
    }
}
