//! Object validation: names (RFC 1123), labels, required fields, typed decoding, and the
//! immutability rules kube-apiserver enforces.

use serde_json::Value;

use crate::error::{ApiError, Cause};
use crate::resources::Resource;

pub use proto::names::*;

/// Validate `metadata` common to every kind: name, generateName already resolved, labels,
/// annotations.
pub fn metadata(res: &Resource, obj: &Value, causes: &mut Vec<Cause>) {
    let name = obj
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    if name.is_empty() {
        causes.push(Cause::required("metadata.name"));
    } else {
        let label_only = crate::kinds::of(res).label_name;
        if label_only && !is_dns1123_label(name) {
            causes.push(Cause::invalid("metadata.name", name, DNS1123_LABEL_MSG));
        } else if !label_only && !is_dns1123_subdomain(name) {
            causes.push(Cause::invalid("metadata.name", name, DNS1123_SUBDOMAIN_MSG));
        } else if res.plural == "tenants" && name == crate::resources::ALL_TENANTS {
            causes.push(Cause::invalid(
                "metadata.name",
                name,
                "is reserved: tenants/all addresses every tenant",
            ));
        }
    }
    if let Some(labels) = obj.pointer("/metadata/labels").and_then(Value::as_object) {
        for (k, v) in labels {
            for e in label_key_errors(k) {
                causes.push(Cause::invalid("metadata.labels", k, &e));
            }
            match v.as_str() {
                Some(s) if is_label_value(s) => {}
                Some(s) => causes.push(Cause::invalid(
                    format!("metadata.labels[{k}]"),
                    s,
                    LABEL_VALUE_MSG,
                )),
                None => causes.push(Cause::invalid(
                    format!("metadata.labels[{k}]"),
                    &v.to_string(),
                    "must be a string",
                )),
            }
        }
    }
    if let Some(ann) = obj
        .pointer("/metadata/annotations")
        .and_then(Value::as_object)
    {
        let mut total = 0;
        for (k, v) in ann {
            total += k.len() + v.as_str().map_or(0, str::len);
            for e in label_key_errors(k) {
                causes.push(Cause::invalid("metadata.annotations", k, &e));
            }
        }
        if total > 256 * 1024 {
            causes.push(Cause {
                reason: "FieldValueTooLong",
                message: "Too long: must have at most 262144 bytes".into(),
                field: "metadata.annotations".into(),
            });
        }
    }
}

/// Decode into the typed struct so type errors surface as 400 before anything is stored.
pub fn decode_typed(res: &Resource, obj: &Value) -> Result<(), ApiError> {
    match crate::kinds::of(res).decode {
        Some(decode) => decode(obj).map_err(|e| {
            ApiError::bad_request(format!(
                "{} in version {:?} cannot be handled as a {}: {e}",
                res.kind, res.version, res.kind
            ))
        }),
        None => Ok(()),
    }
}

/// Decode a status alone as its typed form (a status write leaves the rest of a stored, valid
/// object as it is, so this is all a status needs).
pub fn decode_status(res: &Resource, status: &Value) -> Result<(), ApiError> {
    match crate::kinds::of(res).decode_status {
        Some(decode) => decode(status).map_err(|e| {
            ApiError::bad_request(format!(
                "{} status in version {:?} cannot be handled: {e}",
                res.kind, res.version
            ))
        }),
        None => decode_typed(res, &serde_json::json!({ "status": status })),
    }
}

/// A new status as a status write stores it: quantities normalised, decoded as its typed form.
pub fn checked_status(res: &Resource, mut status: Value) -> Result<Value, ApiError> {
    crate::openapi::normalize_quantities(&mut status);
    decode_status(res, &status)?;
    Ok(status)
}

fn data_keys(obj: &Value, field: &str, causes: &mut Vec<Cause>) {
    if let Some(m) = obj.get(field).and_then(Value::as_object) {
        for k in m.keys() {
            let ok = !k.is_empty()
                && k.len() <= 253
                && k.bytes()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'));
            if !ok {
                causes.push(Cause::invalid(
                    field,
                    k,
                    "a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')",
                ));
            }
        }
    }
}

fn containers(
    list: Option<&Value>,
    field: &str,
    required: bool,
    volumes: &[&str],
    causes: &mut Vec<Cause>,
) {
    let items = list
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    if items.is_empty() && required {
        causes.push(Cause::required(field));
    }
    let mut seen = std::collections::HashSet::new();
    for (i, c) in items.iter().enumerate() {
        let name = c.get("name").and_then(Value::as_str).unwrap_or("");
        if name.is_empty() {
            causes.push(Cause::required(format!("{field}[{i}].name")));
        } else if !is_dns1123_label(name) {
            causes.push(Cause::invalid(
                format!("{field}[{i}].name"),
                name,
                DNS1123_LABEL_MSG,
            ));
        } else if !seen.insert(name) {
            causes.push(Cause {
                reason: "FieldValueDuplicate",
                message: format!("Duplicate value: {name:?}"),
                field: format!("{field}[{i}].name"),
            });
        }
        if c.get("image")
            .and_then(Value::as_str)
            .unwrap_or("")
            .is_empty()
        {
            causes.push(Cause::required(format!("{field}[{i}].image")));
        }
        volume_mounts(c, &format!("{field}[{i}]"), volumes, true, causes);
        container_resources(c, &format!("{field}[{i}]"), causes);
    }
}

/// A container's `resources` (no request above its limit, nothing negative) and
/// `resizePolicy` (cpu and memory, NotRequired or RestartContainer), as kube-apiserver checks them.
fn container_resources(c: &Value, field: &str, causes: &mut Vec<Cause>) {
    let q = |part: &str, res: &str| -> Option<(String, f64)> {
        let v = c.pointer(&format!("/resources/{part}/{res}"))?;
        let s = v
            .as_str()
            .map(String::from)
            .unwrap_or_else(|| v.to_string());
        let n = proto::quantity(&s)?;
        Some((s, n))
    };
    for part in ["limits", "requests"] {
        for res in c
            .pointer(&format!("/resources/{part}"))
            .and_then(Value::as_object)
            .into_iter()
            .flat_map(|m| m.keys())
        {
            if let Some((s, _)) = q(part, res).filter(|(_, n)| *n < 0.0) {
                causes.push(Cause::invalid(
                    format!("{field}.resources.{part}[{res}]"),
                    &s,
                    "must be greater than or equal to 0",
                ));
            }
        }
    }
    for res in c
        .pointer("/resources/requests")
        .and_then(Value::as_object)
        .into_iter()
        .flat_map(|m| m.keys())
    {
        if let (Some((rs, r)), Some((ls, l))) = (q("requests", res), q("limits", res)) {
            if r > l {
                causes.push(Cause::invalid(
                    format!("{field}.resources.requests"),
                    &rs,
                    &format!("must be less than or equal to {res} limit of {ls}"),
                ));
            }
        }
    }
    let policies = c
        .get("resizePolicy")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    let mut seen = std::collections::HashSet::new();
    for (j, p) in policies.iter().enumerate() {
        let f = format!("{field}.resizePolicy[{j}]");
        let name = p.get("resourceName").and_then(Value::as_str).unwrap_or("");
        if !["cpu", "memory"].contains(&name) {
            causes.push(Cause::not_supported(
                format!("{f}.resourceName"),
                name,
                &["cpu", "memory"],
            ));
        } else if !seen.insert(name) {
            causes.push(Cause {
                reason: "FieldValueDuplicate",
                message: format!("Duplicate value: {name:?}"),
                field: format!("{f}.resourceName"),
            });
        }
        let rp = p.get("restartPolicy").and_then(Value::as_str).unwrap_or("");
        if !["NotRequired", "RestartContainer"].contains(&rp) {
            causes.push(Cause::not_supported(
                format!("{f}.restartPolicy"),
                rp,
                &["NotRequired", "RestartContainer"],
            ));
        }
    }
}

/// The `volumeMounts` of `owner` (a container or a VM, at `field`): each names one of the
/// pod's `volumes`, and has a `mountPath` when `need_path`.
fn volume_mounts(
    owner: &Value,
    field: &str,
    volumes: &[&str],
    need_path: bool,
    causes: &mut Vec<Cause>,
) {
    let mounts = owner
        .get("volumeMounts")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    for (j, m) in mounts.iter().enumerate() {
        let vn = m.get("name").and_then(Value::as_str).unwrap_or("");
        if !volumes.contains(&vn) {
            causes.push(Cause {
                reason: "FieldValueNotFound",
                message: format!("Not found: {vn:?}"),
                field: format!("{field}.volumeMounts[{j}].name"),
            });
        }
        if need_path
            && m.get("mountPath")
                .and_then(Value::as_str)
                .unwrap_or("")
                .is_empty()
        {
            causes.push(Cause::required(format!(
                "{field}.volumeMounts[{j}].mountPath"
            )));
        }
    }
}

/// Kind-specific rules on the whole object: the kind's own, from its strategy (`crate::kinds`).
pub fn object(res: &Resource, obj: &Value, causes: &mut Vec<Cause>) {
    if let Some(v) = crate::kinds::of(res).validate {
        v(obj, causes);
    }
}

/// A pod: a spec, volume and container names, ports, probes, the node name.
pub(crate) fn pod(obj: &Value, causes: &mut Vec<Cause>) {
    let Some(spec) = obj.get("spec").filter(|s| s.is_object()) else {
        causes.push(Cause::required("spec"));
        return;
    };
    let vols: Vec<&str> = spec
        .get("volumes")
        .and_then(Value::as_array)
        .map(|v| {
            v.iter()
                .filter_map(|v| v.get("name").and_then(Value::as_str))
                .collect()
        })
        .unwrap_or_default();
    let mut seen = std::collections::HashSet::new();
    for (i, v) in vols.iter().enumerate() {
        if !is_dns1123_label(v) {
            causes.push(Cause::invalid(
                format!("spec.volumes[{i}].name"),
                v,
                DNS1123_LABEL_MSG,
            ));
        } else if !seen.insert(*v) {
            causes.push(Cause {
                reason: "FieldValueDuplicate",
                message: format!("Duplicate value: {v:?}"),
                field: format!("spec.volumes[{i}].name"),
            });
        }
    }
    let is_vm = spec.get("virtualMachine").is_some();
    if is_vm {
        virtual_machine(spec, "spec", &vols, causes);
    }
    containers(
        spec.get("containers"),
        "spec.containers",
        !is_vm,
        &vols,
        causes,
    );
    containers(
        spec.get("initContainers"),
        "spec.initContainers",
        false,
        &vols,
        causes,
    );
    if let Some(rp) = spec.get("restartPolicy").and_then(Value::as_str) {
        if !["Always", "OnFailure", "Never"].contains(&rp) {
            causes.push(Cause::not_supported(
                "spec.restartPolicy",
                rp,
                &["Always", "OnFailure", "Never"],
            ));
        }
    }
    if let Some(n) = spec.get("nodeName").and_then(Value::as_str) {
        if !n.is_empty() && !is_dns1123_subdomain(n) {
            causes.push(Cause::invalid("spec.nodeName", n, DNS1123_SUBDOMAIN_MSG));
        }
    }
}

/// A pod spec's `virtualMachine` (Arktos' VM pods; `base` is the spec's path): a VM instead of
/// containers, never both; a named image; known policies; whole vCPUs and enough memory;
/// bounded guest data; volume mounts of the pod's volumes.
fn virtual_machine(spec: &Value, base: &str, volumes: &[&str], causes: &mut Vec<Cause>) {
    use proto::vm;
    use serde::Deserialize as _;
    let field = format!("{base}.virtualMachine");
    let Some(v) = spec.get("virtualMachine").filter(|v| v.is_object()) else {
        causes.push(Cause::invalid(&field, "", "must be an object"));
        return;
    };
    // The API keeps `containers` the VM's mirror; anything else is a second workload.
    let mirrored = spec.get("containers") == Some(&serde_json::json!([vm::mirror(v)]));
    for list in ["containers", "initContainers"] {
        if list == "containers" && mirrored {
            continue;
        }
        if spec.get(list).is_some_and(|c| !c.is_null()) {
            causes.push(Cause {
                reason: "FieldValueForbidden",
                message: "Forbidden: containers and virtualMachine workloads in same pod".into(),
                field: format!("{base}.{list}"),
            });
        }
    }
    // The typed form: wrong types, bad base64 in userData.
    if let Err(e) = vm::VirtualMachine::deserialize(v) {
        causes.push(Cause::invalid(&field, "", &e.to_string()));
        return;
    }
    let text = |k: &str| v.get(k).and_then(Value::as_str);
    match text("name").unwrap_or("") {
        "" => causes.push(Cause::required(format!("{field}.name"))),
        n if !is_dns1123_label(n) => causes.push(Cause::invalid(
            format!("{field}.name"),
            n,
            DNS1123_LABEL_MSG,
        )),
        _ => {}
    }
    if text("image").unwrap_or("").is_empty() {
        causes.push(Cause::required(format!("{field}.image")));
    }
    for (k, allowed) in [
        ("imagePullPolicy", &["Always", "IfNotPresent", "Never"][..]),
        ("powerSpec", vm::POWER_SPECS),
        ("shutdownBehavior", vm::SHUTDOWN_BEHAVIORS),
    ] {
        if let Some(x) = text(k).filter(|x| !allowed.contains(x)) {
            causes.push(Cause::not_supported(format!("{field}.{k}"), x, allowed));
        }
    }
    let user_data = text("userData").map_or(0, |b| b.len() / 4 * 3);
    for (k, len, max) in [
        ("userData", user_data, vm::MAX_USER_DATA),
        (
            "cloudInitUserDataScript",
            text("cloudInitUserDataScript").map_or(0, str::len),
            vm::MAX_SCRIPT,
        ),
        (
            "publicKey",
            text("publicKey").map_or(0, str::len),
            vm::MAX_SCRIPT,
        ),
    ] {
        if len > max {
            causes.push(Cause {
                reason: "FieldValueTooLong",
                message: format!("Too long: may not be more than {max} bytes"),
                field: format!("{field}.{k}"),
            });
        }
    }
    for part in ["limits", "requests"] {
        let Some(list) = v
            .pointer(&format!("/resources/{part}"))
            .and_then(Value::as_object)
        else {
            continue;
        };
        for (res, q) in list {
            let f = format!("{field}.resources.{part}.{res}");
            let qs = q
                .as_str()
                .map(String::from)
                .unwrap_or_else(|| q.to_string());
            let Some(n) = proto::quantity(&qs) else {
                causes.push(Cause::invalid(f, &qs, "must be a quantity"));
                continue;
            };
            match res.as_str() {
                "cpu" if n < 1.0 || n.fract() != 0.0 => causes.push(Cause::invalid(
                    f,
                    &qs,
                    "a VM runs on whole vCPUs: must be a whole number, at least 1",
                )),
                "memory" if n < 32.0 * 1024.0 * 1024.0 => {
                    causes.push(Cause::invalid(f, &qs, "a VM needs at least 32Mi of memory"))
                }
                _ => {}
            }
        }
    }
    volume_mounts(v, &field, volumes, false, causes);
}

/// A config map: data keys, at most 1 MiB of data.
pub(crate) fn configmap(obj: &Value, causes: &mut Vec<Cause>) {
    data_keys(obj, "data", causes);
    data_keys(obj, "binaryData", causes);
    let size = obj.get("data").map_or(0, |d| d.to_string().len())
        + obj.get("binaryData").map_or(0, |d| d.to_string().len());
    if size > 1024 * 1024 {
        causes.push(Cause {
            reason: "FieldValueTooLong",
            message: "Too long: must have at most 1048576 bytes".into(),
            field: "data".into(),
        });
    }
}

/// A secret: data keys.
pub(crate) fn secret(obj: &Value, causes: &mut Vec<Cause>) {
    data_keys(obj, "data", causes);
    data_keys(obj, "stringData", causes);
}

/// An event names the object it is about.
pub(crate) fn event(obj: &Value, causes: &mut Vec<Cause>) {
    if obj.get("involvedObject").is_none() {
        causes.push(Cause::required("involvedObject"))
    }
}

/// A Deployment.
pub(crate) fn deployment(obj: &Value, causes: &mut Vec<Cause>) {
    workload("deployments", obj, causes)
}

/// A ReplicaSet.
pub(crate) fn replicaset(obj: &Value, causes: &mut Vec<Cause>) {
    workload("replicasets", obj, causes)
}

/// A DaemonSet.
pub(crate) fn daemonset(obj: &Value, causes: &mut Vec<Cause>) {
    workload("daemonsets", obj, causes)
}

fn nonnegative(obj: &Value, ptr: &str, field: &str, causes: &mut Vec<Cause>) {
    if let Some(n) = obj.pointer(ptr).and_then(Value::as_i64) {
        if n < 0 {
            causes.push(Cause::invalid(
                field,
                &n.to_string(),
                "must be greater than or equal to 0",
            ));
        }
    }
}

/// An int-or-percent field (`maxSurge`, `maxUnavailable`): a non-negative integer or `N%`.
/// `spec.<field>.type` of a workload (default RollingUpdate), checked against `allowed`.
fn strategy_type<'a>(
    spec: &'a Value,
    field: &str,
    allowed: &[&str],
    causes: &mut Vec<Cause>,
) -> &'a str {
    let ty = spec
        .pointer(&format!("/{field}/type"))
        .and_then(Value::as_str)
        .unwrap_or("RollingUpdate");
    if !allowed.contains(&ty) {
        causes.push(Cause::not_supported(
            format!("spec.{field}.type"),
            ty,
            allowed,
        ));
    }
    ty
}

fn int_or_percent(obj: &Value, ptr: &str, field: &str, causes: &mut Vec<Cause>) {
    match obj.pointer(ptr) {
        None | Some(Value::Null) => {}
        Some(Value::Number(n)) => {
            if n.as_i64().is_none_or(|n| n < 0) {
                causes.push(Cause::invalid(
                    field,
                    &n.to_string(),
                    "must be greater than or equal to 0",
                ));
            }
        }
        Some(Value::String(s)) => {
            let ok = s
                .strip_suffix('%')
                .and_then(|p| p.parse::<u32>().ok())
                .is_some_and(|p| p <= 100);
            if !ok {
                causes.push(Cause::invalid(
                    field,
                    s,
                    "a valid percent string must be a numeric string followed by an ending '%' (e.g. '1%',  or '93%', regex used for validation is '[0-9]+%'), at most 100%",
                ));
            }
        }
        Some(v) => causes.push(Cause::invalid(
            field,
            &v.to_string(),
            "must be an integer or a percent",
        )),
    }
}

/// Deployments, ReplicaSets and DaemonSets: a selector that selects the template's labels,
/// a valid pod template, sane counts and strategies.
fn workload(plural: &str, obj: &Value, causes: &mut Vec<Cause>) {
    let Some(spec) = obj.get("spec").filter(|s| s.is_object()) else {
        causes.push(Cause::required("spec"));
        return;
    };
    let sel = spec.get("selector");
    let match_labels = sel
        .and_then(|s| s.get("matchLabels"))
        .and_then(Value::as_object);
    let exprs = sel
        .and_then(|s| s.get("matchExpressions"))
        .and_then(Value::as_array);
    if match_labels.is_none_or(|m| m.is_empty()) && exprs.is_none_or(|e| e.is_empty()) {
        causes.push(Cause::required("spec.selector"));
    }
    let labels = spec
        .pointer("/template/metadata/labels")
        .and_then(Value::as_object);
    if let Some(sel) = sel {
        let empty = serde_json::Map::new();
        if !proto::selectors::selector_matches(sel, labels.unwrap_or(&empty)) {
            causes.push(Cause::invalid(
                "spec.template.metadata.labels",
                &Value::Object(labels.cloned().unwrap_or_default()).to_string(),
                "`selector` does not match template `labels`",
            ));
        }
    }
    if let Some(l) = labels {
        for (k, v) in l {
            for e in label_key_errors(k) {
                causes.push(Cause::invalid("spec.template.metadata.labels", k, &e));
            }
            if !v.as_str().is_some_and(is_label_value) {
                causes.push(Cause::invalid(
                    format!("spec.template.metadata.labels[{k}]"),
                    &v.to_string(),
                    LABEL_VALUE_MSG,
                ));
            }
        }
    }
    match spec.pointer("/template/spec").filter(|s| s.is_object()) {
        None => causes.push(Cause::required("spec.template.spec")),
        Some(pod) => {
            let vols: Vec<&str> = pod
                .get("volumes")
                .and_then(Value::as_array)
                .map(|v| {
                    v.iter()
                        .filter_map(|v| v.get("name").and_then(Value::as_str))
                        .collect()
                })
                .unwrap_or_default();
            let vm = pod.get("virtualMachine").is_some();
            if vm {
                virtual_machine(pod, "spec.template.spec", &vols, causes);
            }
            containers(
                pod.get("containers"),
                "spec.template.spec.containers",
                !vm,
                &vols,
                causes,
            );
            containers(
                pod.get("initContainers"),
                "spec.template.spec.initContainers",
                false,
                &vols,
                causes,
            );
            if let Some(rp) = pod.get("restartPolicy").and_then(Value::as_str) {
                if rp != "Always" {
                    causes.push(Cause::not_supported(
                        "spec.template.spec.restartPolicy",
                        rp,
                        &["Always"],
                    ));
                }
            }
        }
    }
    nonnegative(obj, "/spec/replicas", "spec.replicas", causes);
    nonnegative(obj, "/spec/minReadySeconds", "spec.minReadySeconds", causes);
    nonnegative(
        obj,
        "/spec/revisionHistoryLimit",
        "spec.revisionHistoryLimit",
        causes,
    );
    match plural {
        "deployments" => {
            let ty = strategy_type(spec, "strategy", &["Recreate", "RollingUpdate"], causes);
            if ty == "Recreate" && spec.pointer("/strategy/rollingUpdate").is_some() {
                causes.push(Cause {
                    reason: "FieldValueForbidden",
                    message: "Forbidden: may not be specified when strategy `type` is 'Recreate'"
                        .into(),
                    field: "spec.strategy.rollingUpdate".into(),
                });
            }
            int_or_percent(
                obj,
                "/spec/strategy/rollingUpdate/maxSurge",
                "spec.strategy.rollingUpdate.maxSurge",
                causes,
            );
            int_or_percent(
                obj,
                "/spec/strategy/rollingUpdate/maxUnavailable",
                "spec.strategy.rollingUpdate.maxUnavailable",
                causes,
            );
            let zero = |p: &str| {
                obj.pointer(p)
                    .is_some_and(|v| v.as_i64() == Some(0) || v.as_str() == Some("0%"))
            };
            if ty == "RollingUpdate"
                && zero("/spec/strategy/rollingUpdate/maxSurge")
                && zero("/spec/strategy/rollingUpdate/maxUnavailable")
            {
                causes.push(Cause::invalid(
                    "spec.strategy.rollingUpdate.maxUnavailable",
                    "0",
                    "may not be 0 when `maxSurge` is 0",
                ));
            }
            nonnegative(
                obj,
                "/spec/progressDeadlineSeconds",
                "spec.progressDeadlineSeconds",
                causes,
            );
        }
        "daemonsets" => {
            strategy_type(
                spec,
                "updateStrategy",
                &["OnDelete", "RollingUpdate"],
                causes,
            );
            int_or_percent(
                obj,
                "/spec/updateStrategy/rollingUpdate/maxUnavailable",
                "spec.updateStrategy.rollingUpdate.maxUnavailable",
                causes,
            );
        }
        _ => {}
    }
}

/// apps/v1 selectors are immutable after creation.
pub fn workload_update(old: &Value, new: &Value, causes: &mut Vec<Cause>) {
    if old.pointer("/spec/selector") != new.pointer("/spec/selector") {
        causes.push(Cause::invalid(
            "spec.selector",
            &new.pointer("/spec/selector")
                .map(Value::to_string)
                .unwrap_or_default(),
            "field is immutable",
        ));
    }
}

/// Pod updates may change only images, activeDeadlineSeconds and tolerations (additions);
/// `nodeName` only through binding, once.
pub fn pod_spec_update(old: &Value, new: &Value, causes: &mut Vec<Cause>) {
    fn strip(spec: &Value) -> Value {
        let mut s = spec.clone();
        if let Some(o) = s.as_object_mut() {
            o.remove("activeDeadlineSeconds");
            o.remove("tolerations");
            for list in ["containers", "initContainers"] {
                if let Some(cs) = o.get_mut(list).and_then(Value::as_array_mut) {
                    for c in cs {
                        if let Some(c) = c.as_object_mut() {
                            c.remove("image");
                        }
                    }
                }
            }
        }
        s
    }
    let (o, n) = (
        old.get("spec").cloned().unwrap_or(Value::Null),
        new.get("spec").cloned().unwrap_or(Value::Null),
    );
    if o.get("virtualMachine").is_some() || n.get("virtualMachine").is_some() {
        // A VM's image and wanted power state may change (its resources: by a resize).
        let vm_strip = |spec: &Value| {
            let mut s = spec.clone();
            if let Some(o) = s.as_object_mut() {
                o.remove("activeDeadlineSeconds");
                o.remove("tolerations");
                // The VM's mirror follows the VM.
                o.remove("containers");
            }
            if let Some(vm) = s.get_mut("virtualMachine").and_then(Value::as_object_mut) {
                vm.remove("image");
                vm.remove("powerSpec");
            }
            s
        };
        if vm_strip(&o) != vm_strip(&n) {
            causes.push(Cause {
                reason: "FieldValueForbidden",
                message: "Forbidden: pod updates may not change fields other than `spec.virtualMachine.image`,`spec.virtualMachine.powerSpec`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations)".into(),
                field: "spec".into(),
            });
        }
        return;
    }
    if strip(&o) != strip(&n) {
        causes.push(Cause {
            reason: "FieldValueForbidden",
            message: "Forbidden: pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations)".into(),
            field: "spec".into(),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::find;
    use serde_json::json;

    #[test]
    fn names() {
        assert!(is_dns1123_label("web-1"));
        assert!(!is_dns1123_label("Web"));
        assert!(!is_dns1123_label("-a"));
        assert!(!is_dns1123_label(&"a".repeat(64)));
        assert!(is_dns1123_subdomain("a.b-c.d"));
        assert!(!is_dns1123_subdomain("a..b"));
        assert!(!is_dns1123_subdomain("a_b"));
    }

    #[test]
    fn labels() {
        assert!(label_key_errors("app.kubernetes.io/name").is_empty());
        assert!(!label_key_errors("bad/key/x").is_empty());
        assert!(!label_key_errors("-x").is_empty());
        assert!(is_label_value(""));
        assert!(!is_label_value("a b"));
    }

    #[test]
    fn pod_rules() {
        let pods = find("", "v1", "pods").unwrap();
        let mut c = Vec::new();
        object(pods, &json!({"spec": {"containers": []}}), &mut c);
        assert_eq!(c[0].field, "spec.containers");
        let mut c = Vec::new();
        object(
            pods,
            &json!({"spec": {"containers": [{"name": "a"}, {"name": "a", "image": "x", "volumeMounts": [{"name": "v", "mountPath": "/v"}]}], "restartPolicy": "Sometimes"}}),
            &mut c,
        );
        let fields: Vec<_> = c.iter().map(|c| c.field.as_str()).collect();
        assert_eq!(
            fields,
            vec![
                "spec.containers[0].image",
                "spec.containers[1].name",
                "spec.containers[1].volumeMounts[0].name",
                "spec.restartPolicy"
            ]
        );
        let mut c = Vec::new();
        metadata(
            pods,
            &json!({"metadata": {"name": "Bad_Name", "labels": {"ok": "a b"}}}),
            &mut c,
        );
        assert_eq!(c.len(), 2);
    }

    #[test]
    fn pod_update_immutability() {
        let old = json!({"spec": {"containers": [{"name": "a", "image": "x"}], "restartPolicy": "Always"}});
        let mut c = Vec::new();
        pod_spec_update(
            &old,
            &json!({"spec": {"containers": [{"name": "a", "image": "y"}], "restartPolicy": "Always"}}),
            &mut c,
        );
        assert!(c.is_empty());
        pod_spec_update(
            &old,
            &json!({"spec": {"containers": [{"name": "b", "image": "x"}], "restartPolicy": "Always"}}),
            &mut c,
        );
        assert_eq!(c.len(), 1);
    }

    #[test]
    fn vm_pod_rules() {
        let pods = find("", "v1", "pods").unwrap();
        let fields = |pod: Value| {
            let mut c = Vec::new();
            object(pods, &pod, &mut c);
            c.into_iter().map(|c| c.field).collect::<Vec<_>>()
        };
        // A VM alone is a whole pod (no containers needed).
        assert!(fields(
            json!({"spec": {"virtualMachine": {"name": "vm", "image": "r/vm:1",
            "resources": {"limits": {"cpu": "2", "memory": "256Mi"}}}}})
        )
        .is_empty());
        // Both, or a VM with init containers: forbidden.
        assert_eq!(
            fields(
                json!({"spec": {"virtualMachine": {"name": "vm", "image": "r/vm:1"},
                "containers": [{"name": "c", "image": "x"}], "initContainers": []}})
            ),
            vec!["spec.containers", "spec.initContainers"]
        );
        // Name, image, policies, whole vCPUs, enough memory, volumes, sizes.
        assert_eq!(
            fields(
                json!({"spec": {"virtualMachine": {"name": "Bad_Name", "powerSpec": "Paused",
                "imagePullPolicy": "Sometimes", "shutdownBehavior": "halt",
                "resources": {"limits": {"cpu": "500m", "memory": "1Mi"}, "requests": {"cpu": "lots"}},
                "volumeMounts": [{"name": "nope", "mountPath": "/d"}],
                "cloudInitUserDataScript": "x".repeat(70000)}}})
            ),
            vec![
                "spec.virtualMachine.name",
                "spec.virtualMachine.image",
                "spec.virtualMachine.imagePullPolicy",
                "spec.virtualMachine.powerSpec",
                "spec.virtualMachine.shutdownBehavior",
                "spec.virtualMachine.cloudInitUserDataScript",
                "spec.virtualMachine.resources.limits.cpu",
                "spec.virtualMachine.resources.limits.memory",
                "spec.virtualMachine.resources.requests.cpu",
                "spec.virtualMachine.volumeMounts[0].name",
            ]
        );
        // Wrong types and bad base64 are named at the VM.
        assert_eq!(
            fields(
                json!({"spec": {"virtualMachine": {"name": "vm", "image": "x", "userData": "!!"}}})
            ),
            vec!["spec.virtualMachine"]
        );
        // The same in a workload's template.
        let deploy = find("apps", "v1", "deployments").unwrap();
        let mut c = Vec::new();
        object(
            deploy,
            &json!({"spec": {"selector": {"matchLabels": {"app": "a"}}, "template": {"metadata": {"labels": {"app": "a"}},
                "spec": {"virtualMachine": {"name": "vm"}}}}}),
            &mut c,
        );
        let f: Vec<_> = c.iter().map(|c| c.field.as_str()).collect();
        assert_eq!(f, vec!["spec.template.spec.virtualMachine.image"]);
    }

    #[test]
    fn vm_pod_updates_change_image_and_power_only() {
        let old = json!({"spec": {"virtualMachine": {"name": "vm", "image": "x", "powerSpec": "Running",
            "resources": {"limits": {"cpu": "1"}}}}});
        let mut c = Vec::new();
        pod_spec_update(
            &old,
            &json!({"spec": {"virtualMachine": {"name": "vm", "image": "y", "powerSpec": "Shutdown",
                "resources": {"limits": {"cpu": "1"}}}}}),
            &mut c,
        );
        assert!(c.is_empty());
        pod_spec_update(
            &old,
            &json!({"spec": {"virtualMachine": {"name": "vm", "image": "x", "powerSpec": "Running",
                "resources": {"limits": {"cpu": "2"}}}}}),
            &mut c,
        );
        assert_eq!(c.len(), 1);
        assert!(
            c[0].message.contains("spec.virtualMachine.powerSpec"),
            "{}",
            c[0].message
        );
    }

    #[test]
    fn workload_rules() {
        let deploy = find("apps", "v1", "deployments").unwrap();
        let ok = json!({"spec": {"selector": {"matchLabels": {"app": "a"}},
            "template": {"metadata": {"labels": {"app": "a"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}}});
        let mut c = Vec::new();
        object(deploy, &ok, &mut c);
        assert!(c.is_empty(), "{c:?}");
        let mut bad = ok.clone();
        bad["spec"]["template"]["metadata"]["labels"]["app"] = json!("b");
        bad["spec"]["replicas"] = json!(-1);
        bad["spec"]["strategy"] = json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": "0%"}});
        let mut c = Vec::new();
        object(deploy, &bad, &mut c);
        let fields: Vec<_> = c.iter().map(|c| c.field.as_str()).collect();
        assert_eq!(
            fields,
            vec![
                "spec.template.metadata.labels",
                "spec.replicas",
                "spec.strategy.rollingUpdate.maxUnavailable"
            ]
        );
        let mut c = Vec::new();
        let mut moved = ok.clone();
        moved["spec"]["selector"] = json!({"matchLabels": {"app": "z"}});
        workload_update(&ok, &moved, &mut c);
        assert_eq!(c[0].field, "spec.selector");
    }

    #[test]
    fn typed_decode_rejects_wrong_types() {
        let pods = find("", "v1", "pods").unwrap();
        assert!(decode_typed(
            pods,
            &json!({"metadata": {"name": "a"}, "spec": {"containers": "nope"}})
        )
        .is_err());
        assert!(decode_typed(
            pods,
            &json!({"metadata": {"name": "a"}, "spec": {"containers": []}})
        )
        .is_ok());
    }
}
