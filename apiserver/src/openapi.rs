//! OpenAPI v3 documents generated from the types (k8s-openapi's schemars support), in the shape
//! kubectl expects: an index at `/openapi/v3`, one document per group-version with
//! `x-kubernetes-group-version-kind` on kinds and PATCH operations that take `fieldValidation`
//! (which makes kubectl rely on server-side validation). The same schemas drive strict
//! unknown-field checks.

use std::collections::BTreeMap;

use schemars::gen::SchemaSettings;
use serde_json::{json, Map, Value};

use crate::resources::{Resource, RESOURCES};

/// All schemas, plus the generated documents.
pub struct OpenApi {
    schemas: Map<String, Value>,
    /// `group/version` path key (`api/v1`, `apis/g/v`) → document JSON bytes.
    docs: BTreeMap<String, bytes::Bytes>,
    index: bytes::Bytes,
    /// `/openapi/v2` as JSON and as gnostic protobuf.
    v2_json: bytes::Bytes,
    v2_protobuf: bytes::Bytes,
}

const PREFIX: &str = "#/components/schemas/";
/// The schema of the `scale` subresource's body.
pub const SCALE_SCHEMA: &str = "io.k8s.api.autoscaling.v1.Scale";

fn gvk(r: &Resource) -> Value {
    json!({"group": r.group, "version": r.version, "kind": r.kind})
}

fn op(r: &Resource, action: &str, id: &str, params: &[&str], schema: &str) -> Value {
    let mut params: Vec<Value> = params.iter().map(|p| json!({"name": p, "in": "query", "schema": {"type": "string", "uniqueItems": true}})).collect();
    params.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
    json!({
        "operationId": id,
        "parameters": params,
        "responses": {"200": {"description": "OK", "content": {"application/json": {"schema": {"$ref": format!("{PREFIX}{schema}")}}}}},
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": gvk(r),
    })
}

fn paths_for(r: &Resource) -> Vec<(String, Value)> {
    let base = if r.group.is_empty() {
        "/api/v1".to_string()
    } else {
        format!("/apis/{}/{}", r.group, r.version)
    };
    let coll = if r.namespaced {
        format!("{base}/namespaces/{{namespace}}/{}", r.plural)
    } else {
        format!("{base}/{}", r.plural)
    };
    let item = format!("{coll}/{{name}}");
    let write = ["dryRun", "fieldManager", "fieldValidation", "pretty"];
    let mut out = vec![
        (
            coll,
            json!({
                "get": op(r, "list", &format!("list{}", r.kind), &["labelSelector", "fieldSelector", "limit", "continue", "resourceVersion", "watch"], r.schema),
                "post": op(r, "post", &format!("create{}", r.kind), &write, r.schema),
            }),
        ),
        (
            item.clone(),
            json!({
                "get": op(r, "get", &format!("read{}", r.kind), &["pretty"], r.schema),
                "put": op(r, "put", &format!("replace{}", r.kind), &write, r.schema),
                "patch": op(r, "patch", &format!("patch{}", r.kind), &["dryRun", "fieldManager", "fieldValidation", "force", "pretty"], r.schema),
                "delete": op(r, "delete", &format!("delete{}", r.kind), &["dryRun", "gracePeriodSeconds", "propagationPolicy"], r.schema),
            }),
        ),
    ];
    if r.subresources.contains(&"status") {
        out.push((
            format!("{item}/status"),
            json!({
                "get": op(r, "get", &format!("read{}Status", r.kind), &["pretty"], r.schema),
                "put": op(r, "put", &format!("replace{}Status", r.kind), &write, r.schema),
                "patch": op(r, "patch", &format!("patch{}Status", r.kind), &["dryRun", "fieldManager", "fieldValidation", "force"], r.schema),
            }),
        ));
    }
    if r.subresources.contains(&"scale") {
        let mut ops = json!({
            "get": op(r, "get", &format!("read{}Scale", r.kind), &["pretty"], SCALE_SCHEMA),
            "put": op(r, "put", &format!("replace{}Scale", r.kind), &write, SCALE_SCHEMA),
            "patch": op(r, "patch", &format!("patch{}Scale", r.kind), &["dryRun", "fieldManager", "fieldValidation", "force"], SCALE_SCHEMA),
        });
        for v in ["get", "put", "patch"] {
            ops[v]["x-kubernetes-group-version-kind"] =
                json!({"group": "autoscaling", "version": "v1", "kind": "Scale"});
        }
        out.push((format!("{item}/scale"), ops));
    }
    out
}

/// Arktos' VM pods in the Pod schemas: `spec.virtualMachine` beside `spec.containers` (which
/// is then no longer required: a pod has one or the other) and `status.virtualMachineStatus`.
fn vm_pods(schemas: &mut Map<String, Value>, vm: Value, status: Value) {
    let with_doc = |mut r: Value, doc: &str| {
        // A `$ref` may not carry siblings in OpenAPI 3.0: wrap it.
        let inner = r.take();
        json!({"allOf": [inner], "description": doc})
    };
    if let Some(Value::Object(spec)) = schemas.get_mut("io.k8s.api.core.v1.PodSpec") {
        if let Some(Value::Array(req)) = spec.get_mut("required") {
            req.retain(|f| f != "containers");
            if req.is_empty() {
                spec.remove("required");
            }
        }
        if let Some(Value::Object(props)) = spec.get_mut("properties") {
            props.insert(
                "virtualMachine".into(),
                with_doc(
                    vm,
                    "The virtual machine this pod runs instead of containers (a pod has containers or a virtualMachine, never both).",
                ),
            );
        }
    }
    if let Some(Value::Object(st)) = schemas.get_mut("io.k8s.api.core.v1.PodStatus") {
        if let Some(Value::Object(props)) = st.get_mut("properties") {
            props.insert(
                "virtualMachineStatus".into(),
                with_doc(status, "The state of the pod's virtual machine (VM pods)."),
            );
        }
    }
}

impl OpenApi {
    /// Generate every schema and document.
    pub fn build() -> Self {
        use k8s_openapi::api::{
            apps::v1 as apps, autoscaling::v1 as autoscaling, batch::v1 as batch,
            coordination::v1 as coord, core::v1 as core,
        };
        let mut gen = SchemaSettings::openapi3().into_generator();
        gen.subschema_for::<apps::Deployment>();
        gen.subschema_for::<apps::ReplicaSet>();
        gen.subschema_for::<apps::DaemonSet>();
        gen.subschema_for::<apps::ControllerRevision>();
        gen.subschema_for::<autoscaling::Scale>();
        gen.subschema_for::<batch::Job>();
        gen.subschema_for::<batch::CronJob>();
        gen.subschema_for::<core::Namespace>();
        gen.subschema_for::<core::Service>();
        gen.subschema_for::<core::Endpoints>();
        gen.subschema_for::<k8s_openapi::api::discovery::v1::EndpointSlice>();
        gen.subschema_for::<core::Pod>();
        gen.subschema_for::<core::Node>();
        gen.subschema_for::<core::ConfigMap>();
        gen.subschema_for::<core::Secret>();
        gen.subschema_for::<core::ServiceAccount>();
        gen.subschema_for::<core::Event>();
        gen.subschema_for::<coord::Lease>();
        gen.subschema_for::<proto::Tenant>();
        gen.subschema_for::<proto::EdgeSite>();
        let vm_ref = gen.subschema_for::<proto::vm::VirtualMachine>();
        let vm_status_ref = gen.subschema_for::<proto::vm::VirtualMachineStatus>();
        let mut schemas = Map::new();
        for (name, schema) in gen.take_definitions() {
            schemas.insert(name, serde_json::to_value(schema).unwrap_or(Value::Null));
        }
        vm_pods(
            &mut schemas,
            serde_json::to_value(vm_ref).unwrap_or(Value::Null),
            serde_json::to_value(vm_status_ref).unwrap_or(Value::Null),
        );
        for r in RESOURCES {
            if let Some(Value::Object(s)) = schemas.get_mut(r.schema) {
                s.insert("x-kubernetes-group-version-kind".into(), json!([gvk(r)]));
            }
        }
        if let Some(Value::Object(s)) = schemas.get_mut(SCALE_SCHEMA) {
            s.insert(
                "x-kubernetes-group-version-kind".into(),
                json!([{"group": "autoscaling", "version": "v1", "kind": "Scale"}]),
            );
        }
        let mut by_gv: BTreeMap<String, Map<String, Value>> = BTreeMap::new();
        for r in RESOURCES {
            let key = if r.group.is_empty() {
                "api/v1".to_string()
            } else {
                format!("apis/{}/{}", r.group, r.version)
            };
            let paths = by_gv.entry(key).or_default();
            for (p, v) in paths_for(r) {
                paths.insert(p, v);
            }
        }
        let all_paths: Map<String, Value> = by_gv
            .values()
            .flat_map(|p| p.iter().map(|(k, v)| (k.clone(), v.clone())))
            .collect();
        let v2 = crate::openapi_v2::document(&schemas, &all_paths);
        let v2_protobuf = bytes::Bytes::from(crate::openapi_v2::protobuf(&v2));
        let v2_json = bytes::Bytes::from(serde_json::to_vec(&v2).unwrap_or_default());
        let mut docs = BTreeMap::new();
        let mut index = Map::new();
        for (gv, paths) in by_gv {
            let doc = json!({
                "openapi": "3.0.0",
                "info": {"title": "Atoll", "version": crate::VERSION},
                "paths": paths,
                "components": {"schemas": schemas},
            });
            let bytes = bytes::Bytes::from(serde_json::to_vec(&doc).unwrap_or_default());
            let hash = {
                use sha2::Digest;
                let d = sha2::Sha256::digest(&bytes);
                d.iter()
                    .take(16)
                    .map(|b| format!("{b:02X}"))
                    .collect::<String>()
            };
            index.insert(
                gv.clone(),
                json!({"serverRelativeURL": format!("/openapi/v3/{gv}?hash={hash}")}),
            );
            docs.insert(gv, bytes);
        }
        let index =
            bytes::Bytes::from(serde_json::to_vec(&json!({"paths": index})).unwrap_or_default());
        OpenApi {
            schemas,
            docs,
            index,
            v2_json,
            v2_protobuf,
        }
    }

    /// `/openapi/v2`: gnostic protobuf when `protobuf` (what client-go asks for), else JSON.
    pub fn v2(&self, protobuf: bool) -> bytes::Bytes {
        if protobuf {
            self.v2_protobuf.clone()
        } else {
            self.v2_json.clone()
        }
    }

    /// `/openapi/v3`.
    pub fn index(&self) -> bytes::Bytes {
        self.index.clone()
    }

    /// `/openapi/v3/{gv}`.
    pub fn doc(&self, gv: &str) -> Option<bytes::Bytes> {
        self.docs.get(gv).cloned()
    }

    fn resolve<'a>(&'a self, mut s: &'a Value) -> &'a Value {
        for _ in 0..32 {
            match s
                .get("$ref")
                .and_then(Value::as_str)
                .and_then(|r| r.strip_prefix(PREFIX))
            {
                Some(name) => match self.schemas.get(name) {
                    Some(t) => s = t,
                    None => return s,
                },
                None => {
                    // schemars wraps a described $ref as allOf: [{$ref}]
                    match s.get("allOf").and_then(Value::as_array) {
                        Some(a) if a.len() == 1 => s = &a[0],
                        _ => return s,
                    }
                }
            }
        }
        s
    }

    /// Fields of `value` its schema does not declare, as kube-apiserver's strict decoding names
    /// them (`spec.containers[0].imagee`).
    pub fn unknown_fields(&self, schema: &str, value: &Value) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(s) = self.schemas.get(schema) {
            self.walk(s, value, "", &mut out);
        }
        out
    }

    fn walk(&self, schema: &Value, value: &Value, path: &str, out: &mut Vec<String>) {
        let schema = self.resolve(schema);
        if schema.get("x-kubernetes-preserve-unknown-fields").is_some() || out.len() > 64 {
            return;
        }
        match value {
            Value::Object(m) => {
                let props = schema.get("properties").and_then(Value::as_object);
                let additional = schema.get("additionalProperties").filter(|a| a.is_object());
                if props.is_none() && additional.is_none() {
                    return; // free-form object
                }
                for (k, v) in m {
                    let child = if path.is_empty() {
                        k.clone()
                    } else {
                        format!("{path}.{k}")
                    };
                    match (props.and_then(|p| p.get(k)), additional) {
                        (Some(s), _) => self.walk(s, v, &child, out),
                        (None, Some(a)) => self.walk(a, v, &child, out),
                        (None, None) => out.push(child),
                    }
                }
            }
            Value::Array(items) => {
                if let Some(item_schema) = schema.get("items") {
                    for (i, v) in items.iter().enumerate() {
                        self.walk(item_schema, v, &format!("{path}[{i}]"), out);
                    }
                }
            }
            _ => {}
        }
    }
}

/// Quantities may be sent as JSON numbers (`cpu: 1`); kube-apiserver stores them as strings.
pub fn normalize_quantities(v: &mut Value) {
    const QUANTITY_MAPS: &[&str] = &[
        "limits",
        "requests",
        "capacity",
        "allocatable",
        "overhead",
        "hard",
        "used",
    ];
    match v {
        Value::Object(m) => {
            for (k, child) in m.iter_mut() {
                if QUANTITY_MAPS.contains(&k.as_str()) {
                    if let Value::Object(q) = child {
                        for qv in q.values_mut() {
                            if let Value::Number(n) = qv {
                                *qv = Value::String(n.to_string());
                            }
                        }
                    }
                } else if k == "sizeLimit" {
                    if let Value::Number(n) = child {
                        *child = Value::String(n.to_string());
                    }
                }
                normalize_quantities(child);
            }
        }
        Value::Array(a) => a.iter_mut().for_each(normalize_quantities),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_carry_gvk_and_field_validation() {
        let o = OpenApi::build();
        let idx: Value = serde_json::from_slice(&o.index()).unwrap();
        assert!(idx["paths"]["api/v1"]["serverRelativeURL"]
            .as_str()
            .unwrap()
            .starts_with("/openapi/v3/api/v1?hash="));
        let doc: Value = serde_json::from_slice(&o.doc("api/v1").unwrap()).unwrap();
        let patch = &doc["paths"]["/api/v1/namespaces/{namespace}/pods/{name}"]["patch"];
        assert_eq!(patch["x-kubernetes-group-version-kind"]["kind"], "Pod");
        assert!(patch["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == "fieldValidation"));
        let pod = &doc["components"]["schemas"]["io.k8s.api.core.v1.Pod"];
        assert_eq!(pod["x-kubernetes-group-version-kind"][0]["kind"], "Pod");
        assert!(o.doc("apis/edge.atoll.io/v1").is_some());
    }

    #[test]
    fn apps_document_serves_workloads_and_scale() {
        let o = OpenApi::build();
        let doc: Value = serde_json::from_slice(&o.doc("apis/apps/v1").unwrap()).unwrap();
        let scale = &doc["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}/scale"];
        assert_eq!(
            scale["patch"]["x-kubernetes-group-version-kind"]["kind"],
            "Scale"
        );
        let d = &doc["components"]["schemas"]["io.k8s.api.apps.v1.Deployment"];
        assert_eq!(d["x-kubernetes-group-version-kind"][0]["group"], "apps");
        let bad = json!({"spec": {"replicas": 1, "strategy": {"tyype": "Recreate"}}});
        assert_eq!(
            o.unknown_fields("io.k8s.api.apps.v1.Deployment", &bad),
            vec!["spec.strategy.tyype"]
        );
    }

    #[test]
    fn strict_checks_name_unknown_fields() {
        let o = OpenApi::build();
        let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "a", "labels": {"x": "y"}},
            "spec": {"containers": [{"name": "c", "image": "i", "imagee": "typo", "resources": {"limits": {"cpu": "1"}}}], "bogus": 1}});
        let mut u = o.unknown_fields("io.k8s.api.core.v1.Pod", &pod);
        u.sort();
        assert_eq!(u, vec!["spec.bogus", "spec.containers[0].imagee"]);
        let t = json!({"metadata": {"name": "t"}, "spec": {"storageClusterId": "1", "nope": true}});
        assert_eq!(
            o.unknown_fields("io.atoll.api.core.v1.Tenant", &t),
            vec!["spec.nope"]
        );
    }

    #[test]
    fn quantities_become_strings() {
        let mut v = json!({"spec": {"containers": [{"resources": {"limits": {"cpu": 1, "memory": "64Mi"}}}]}});
        normalize_quantities(&mut v);
        assert_eq!(
            v["spec"]["containers"][0]["resources"]["limits"]["cpu"],
            "1"
        );
    }
}
