//! PATCH bodies: JSON merge patch (RFC 7386) and JSON patch (RFC 6902), both from the
//! `json-patch` crate, and Kubernetes strategic merge patch, which no maintained crate
//! implements (merge keys of the core types, `$patch`, `$retainKeys`, `$setElementOrder`,
//! `$deleteFromPrimitiveList`).

use serde_json::{Map, Value};

/// RFC 7386 (the `json-patch` crate): objects merge recursively, `null` deletes, anything else
/// replaces.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    json_patch::merge(target, patch);
}

/// RFC 6902 (the `json-patch` crate). All operations apply or none.
pub fn json_patch(doc: &mut Value, patch: &Value) -> Result<(), String> {
    if !patch.is_array() {
        return Err("a JSON patch must be an array of operations".into());
    }
    let ops: json_patch::Patch =
        serde_json::from_value(patch.clone()).map_err(|e| format!("invalid JSON patch: {e}"))?;
    json_patch::patch(doc, &ops).map_err(|e| e.to_string())
}

/// The merge key of a list field of the core types, by field name.
fn merge_key(field: &str) -> Option<&'static str> {
    Some(match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "volumes"
        | "imagePullSecrets"
        | "env"
        | "resourceClaims"
        | "schedulingGates" => "name",
        "ports" => "containerPort",
        "volumeMounts" => "mountPath",
        "volumeDevices" => "devicePath",
        "conditions" | "addresses" => "type",
        "ownerReferences" => "uid",
        "hostAliases" | "podIPs" => "ip",
        "topologySpreadConstraints" => "topologyKey",
        _ => return None,
    })
}

/// Lists of scalars that merge as sets.
fn is_primitive_merge(field: &str) -> bool {
    field == "finalizers"
}

/// Apply a strategic merge patch.
pub fn strategic_merge(target: &mut Value, patch: &Value) -> Result<(), String> {
    let p = patch
        .as_object()
        .ok_or("a strategic merge patch must be a JSON object")?;
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    if let Value::Object(t) = target {
        merge_map(t, p)?;
    }
    Ok(())
}

fn merge_map(t: &mut Map<String, Value>, p: &Map<String, Value>) -> Result<(), String> {
    match p.get("$patch").and_then(Value::as_str) {
        Some("replace") => {
            *t = p
                .iter()
                .filter(|(k, _)| !k.starts_with('$'))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            return Ok(());
        }
        Some("delete") => {
            t.clear();
            return Ok(());
        }
        Some("merge") | None => {}
        Some(other) => return Err(format!("unknown patch directive {other:?}")),
    }
    let mut orders: Vec<(&str, &Vec<Value>)> = Vec::new();
    for (k, v) in p {
        if let Some(field) = k.strip_prefix("$setElementOrder/") {
            orders.push((
                field,
                v.as_array().ok_or("$setElementOrder must be a list")?,
            ));
        } else if let Some(field) = k.strip_prefix("$deleteFromPrimitiveList/") {
            let del = v
                .as_array()
                .ok_or("$deleteFromPrimitiveList must be a list")?;
            if let Some(Value::Array(items)) = t.get_mut(field) {
                items.retain(|i| !del.contains(i));
            }
        } else if k.starts_with('$') {
            continue;
        } else if v.is_null() {
            t.remove(k);
        } else {
            match (t.get_mut(k), v) {
                (Some(Value::Object(tm)), Value::Object(pm)) => {
                    if pm.get("$patch").and_then(Value::as_str) == Some("delete") {
                        t.remove(k);
                    } else {
                        merge_map(tm, pm)?;
                    }
                }
                (Some(Value::Array(ta)), Value::Array(pa)) if merge_key(k).is_some() => {
                    merge_list(ta, pa, merge_key(k).unwrap_or("name"))?;
                }
                (Some(Value::Array(ta)), Value::Array(pa)) if is_primitive_merge(k) => {
                    for x in pa {
                        if !ta.contains(x) {
                            ta.push(x.clone());
                        }
                    }
                }
                (_, Value::Object(pm)) => {
                    let mut fresh = Map::new();
                    merge_map(&mut fresh, pm)?;
                    t.insert(k.clone(), Value::Object(fresh));
                }
                (_, Value::Array(pa)) if merge_key(k).is_some() => {
                    let mut fresh = Vec::new();
                    merge_list(&mut fresh, pa, merge_key(k).unwrap_or("name"))?;
                    t.insert(k.clone(), Value::Array(fresh));
                }
                _ => {
                    t.insert(k.clone(), v.clone());
                }
            }
        }
    }
    if let Some(retain) = p.get("$retainKeys").and_then(Value::as_array) {
        let keep: Vec<&str> = retain.iter().filter_map(Value::as_str).collect();
        t.retain(|k, _| keep.contains(&k.as_str()));
    }
    for (field, order) in orders {
        if let Some(Value::Array(items)) = t.get_mut(field) {
            reorder(items, order, merge_key(field));
        }
    }
    Ok(())
}

fn merge_list(t: &mut Vec<Value>, p: &[Value], key: &str) -> Result<(), String> {
    if p.iter()
        .any(|e| e.get("$patch").and_then(Value::as_str) == Some("replace"))
    {
        *t = p
            .iter()
            .filter(|e| e.get("$patch").is_none())
            .cloned()
            .collect();
        return Ok(());
    }
    for e in p {
        let Some(pm) = e.as_object() else {
            t.push(e.clone());
            continue;
        };
        let kv = pm
            .get(key)
            .ok_or_else(|| format!("a list element is missing its merge key {key:?}"))?;
        let pos = t.iter().position(|x| x.get(key) == Some(kv));
        if pm.get("$patch").and_then(Value::as_str) == Some("delete") {
            if let Some(i) = pos {
                t.remove(i);
            }
            continue;
        }
        match pos {
            Some(i) => {
                if let Value::Object(tm) = &mut t[i] {
                    merge_map(tm, pm)?;
                }
            }
            None => {
                let mut fresh = Map::new();
                merge_map(&mut fresh, pm)?;
                t.push(Value::Object(fresh));
            }
        }
    }
    Ok(())
}

/// Order `items` as `order` lists them; items it does not name keep their relative order after.
fn reorder(items: &mut [Value], order: &[Value], key: Option<&str>) {
    let id = |v: &Value| -> Value {
        match key {
            Some(k) => v.get(k).cloned().unwrap_or(Value::Null),
            None => v.clone(),
        }
    };
    let rank = |v: &Value| {
        let i = id(v);
        order
            .iter()
            .position(|o| id(o) == i || *o == i)
            .unwrap_or(usize::MAX)
    };
    items.sort_by_key(rank);
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_patch_rfc7386() {
        let mut t = json!({"a": "b", "c": {"d": "e", "f": "g"}});
        merge_patch(&mut t, &json!({"a": "z", "c": {"f": null}}));
        assert_eq!(t, json!({"a": "z", "c": {"d": "e"}}));
        let mut t = json!({"a": [1, 2]});
        merge_patch(&mut t, &json!({"a": [3]}));
        assert_eq!(t, json!({"a": [3]}));
    }

    #[test]
    fn json_patch_ops() {
        let mut d = json!({"metadata": {"labels": {"a": "1"}}, "list": [1, 2]});
        json_patch(
            &mut d,
            &json!([
                {"op": "add", "path": "/metadata/labels/b~1c", "value": "2"},
                {"op": "remove", "path": "/metadata/labels/a"},
                {"op": "add", "path": "/list/-", "value": 3},
                {"op": "replace", "path": "/list/0", "value": 0},
                {"op": "test", "path": "/list/2", "value": 3},
                {"op": "copy", "from": "/list", "path": "/copy"}
            ]),
        )
        .unwrap();
        assert_eq!(
            d,
            json!({"metadata": {"labels": {"b/c": "2"}}, "list": [0, 2, 3], "copy": [0, 2, 3]})
        );
        assert!(json_patch(
            &mut d,
            &json!([{"op": "test", "path": "/list/0", "value": 9}])
        )
        .is_err());
        assert!(json_patch(&mut d, &json!([{"op": "remove", "path": "/nope"}])).is_err());
        assert!(json_patch(&mut d, &json!({"op": "add"})).is_err());
    }

    #[test]
    fn strategic_merges_containers_by_name() {
        let mut pod = json!({"spec": {"containers": [
            {"name": "a", "image": "x", "env": [{"name": "E1", "value": "1"}]},
            {"name": "b", "image": "y"}
        ]}});
        strategic_merge(
            &mut pod,
            &json!({"spec": {"containers": [
                {"name": "a", "env": [{"name": "E2", "value": "2"}]},
                {"name": "b", "$patch": "delete"},
                {"name": "c", "image": "z"}
            ]}}),
        )
        .unwrap();
        assert_eq!(
            pod,
            json!({"spec": {"containers": [
                {"name": "a", "image": "x", "env": [{"name": "E1", "value": "1"}, {"name": "E2", "value": "2"}]},
                {"name": "c", "image": "z"}
            ]}})
        );
    }

    #[test]
    fn strategic_directives() {
        let mut o = json!({"metadata": {"finalizers": ["a"], "labels": {"x": "1", "y": "2"}}, "spec": {"containers": [{"name": "a"}, {"name": "b"}]}});
        strategic_merge(
            &mut o,
            &json!({
                "metadata": {"finalizers": ["b"], "labels": {"x": null}, "$deleteFromPrimitiveList/finalizers": ["a"]},
                "spec": {"$setElementOrder/containers": [{"name": "b"}, {"name": "a"}]}
            }),
        )
        .unwrap();
        assert_eq!(
            o,
            json!({"metadata": {"finalizers": ["b"], "labels": {"y": "2"}}, "spec": {"containers": [{"name": "b"}, {"name": "a"}]}})
        );
        let mut o = json!({"spec": {"a": 1, "b": 2}});
        strategic_merge(&mut o, &json!({"spec": {"$patch": "replace", "c": 3}})).unwrap();
        assert_eq!(o, json!({"spec": {"c": 3}}));
        assert!(strategic_merge(
            &mut o,
            &json!({"spec": {"containers": [{"image": "no-name"}]}})
        )
        .is_err());
    }
}
