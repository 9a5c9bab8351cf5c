//! The apps/v1 kinds' strategy pieces the API applies: defaults as kube-apiserver sets them,
//! and the autoscaling/v1 `Scale` view of Deployments and ReplicaSets.

use proto::selectors::selector_string;
use serde_json::{json, Map, Value};

fn set_default(obj: &mut Value, ptr: &str, key: &str, v: Value) {
    if let Some(Value::Object(m)) = obj.pointer_mut(ptr) {
        if m.get(key).is_none_or(Value::is_null) {
            m.insert(key.into(), v);
        }
    }
}

fn ensure_object(obj: &mut Value, parent: &str, key: &str) {
    if let Some(Value::Object(m)) = obj.pointer_mut(parent) {
        if !m.get(key).is_some_and(Value::is_object) {
            m.insert(key.into(), json!({}));
        }
    }
}

/// The defaults kube-apiserver gives apps/v1 objects (the pod template's are the pod ones,
/// applied by the API).
pub fn defaults(plural: &str, obj: &mut Value) {
    if !obj.is_object() {
        return;
    }
    // Typed clients send the template's zero `creationTimestamp` (and protobuf a zero
    // `generation`); kube-apiserver keeps neither.
    if let Some(m) = obj
        .pointer_mut("/spec/template/metadata")
        .and_then(Value::as_object_mut)
    {
        m.remove("creationTimestamp");
        m.remove("generation");
    }
    ensure_object(obj, "", "spec");
    match plural {
        "deployments" => {
            set_default(obj, "/spec", "replicas", json!(1));
            set_default(obj, "/spec", "revisionHistoryLimit", json!(10));
            set_default(obj, "/spec", "progressDeadlineSeconds", json!(600));
            ensure_object(obj, "/spec", "strategy");
            set_default(obj, "/spec/strategy", "type", json!("RollingUpdate"));
            if obj.pointer("/spec/strategy/type").and_then(Value::as_str) == Some("RollingUpdate") {
                ensure_object(obj, "/spec/strategy", "rollingUpdate");
                set_default(
                    obj,
                    "/spec/strategy/rollingUpdate",
                    "maxSurge",
                    json!("25%"),
                );
                set_default(
                    obj,
                    "/spec/strategy/rollingUpdate",
                    "maxUnavailable",
                    json!("25%"),
                );
            }
        }
        "replicasets" => set_default(obj, "/spec", "replicas", json!(1)),
        "daemonsets" => {
            set_default(obj, "/spec", "revisionHistoryLimit", json!(10));
            ensure_object(obj, "/spec", "updateStrategy");
            set_default(obj, "/spec/updateStrategy", "type", json!("RollingUpdate"));
            if obj
                .pointer("/spec/updateStrategy/type")
                .and_then(Value::as_str)
                == Some("RollingUpdate")
            {
                ensure_object(obj, "/spec/updateStrategy", "rollingUpdate");
                set_default(
                    obj,
                    "/spec/updateStrategy/rollingUpdate",
                    "maxUnavailable",
                    json!(1),
                );
                set_default(
                    obj,
                    "/spec/updateStrategy/rollingUpdate",
                    "maxSurge",
                    json!(0),
                );
            }
        }
        _ => {}
    }
}

/// The autoscaling/v1 `Scale` of a Deployment or ReplicaSet.
pub fn scale_of(obj: &Value) -> Value {
    let m = |f: &str| obj.pointer(&format!("/metadata/{f}")).cloned();
    let mut meta = Map::new();
    for f in [
        "name",
        "namespace",
        "uid",
        "resourceVersion",
        "creationTimestamp",
    ] {
        if let Some(v) = m(f) {
            meta.insert(f.into(), v);
        }
    }
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": meta,
        "spec": {"replicas": obj.pointer("/spec/replicas").and_then(Value::as_i64).unwrap_or(0)},
        "status": {
            "replicas": obj.pointer("/status/replicas").and_then(Value::as_i64).unwrap_or(0),
            "selector": obj.pointer("/spec/selector").map(selector_string).unwrap_or_default(),
        },
    })
}
