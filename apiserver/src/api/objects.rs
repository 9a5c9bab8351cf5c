//! Object helpers: the defaults kube-apiserver applies, the objects every namespace starts
//! with, owner references, conditions, and how store failures read as Kubernetes errors.

use super::*;

pub(super) fn now() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true)
}

pub(super) fn meta_str<'a>(v: &'a Value, f: &str) -> &'a str {
    v.get("metadata")
        .and_then(|m| m.get(f))
        .and_then(Value::as_str)
        .unwrap_or("")
}

pub(super) fn meta_mut(v: &mut Value) -> &mut Map<String, Value> {
    if !v.get("metadata").is_some_and(Value::is_object) {
        v["metadata"] = json!({});
    }
    match v.get_mut("metadata") {
        Some(Value::Object(m)) => m,
        _ => unreachable!("metadata was just made an object"),
    }
}

impl Api {
    /// Whether the resourceVersion a client gave names revision `rv` of `key` (a plain
    /// revision, or a position across partitions as a watch across tenants delivers objects).
    pub(super) fn names_revision(&self, key: &Key, given: &str, rv: u64) -> bool {
        store::Position::revision_in(given, self.store.part_of(key)) == Some(rv)
    }

    /// Before a write that lost its compare reads again: another writer (maybe another
    /// replica) got there first, so wait until the cache holds its change.
    pub(super) async fn after_conflict(&self, t: &Target, name: &str) -> ApiResult<()> {
        self.store
            .sync_for(Some(&t.tenant))
            .await
            .map_err(|e| store_err(t.res, name, e))
    }
}

pub(super) fn store_err(res: &Resource, name: &str, e: StoreError) -> ApiError {
    match e {
        StoreError::AlreadyExists(_) => ApiError::already_exists(res.group, res.plural, name),
        StoreError::NotFound(_) => ApiError::not_found(res.group, res.plural, name),
        StoreError::Conflict(_) => ApiError::stale(res.group, res.plural, name),
        StoreError::Gone { requested, oldest } => {
            ApiError::gone(format!("too old resource version: {requested} ({oldest})"))
        }
        StoreError::Backend(e) => {
            tracing::error!(error = %e, "storage failure");
            ApiError::internal("storage")
        }
        StoreError::Closed => ApiError::unavailable("the server is shutting down"),
        StoreError::Invalid(why) => {
            tracing::error!(error = %why, "store misconfigured");
            ApiError::internal("storage")
        }
        StoreError::Unavailable(why) => {
            tracing::warn!(error = %why, "storage unavailable");
            ApiError::unavailable("the storage is unavailable; retry shortly")
        }
        StoreError::TooLarge { size, limit } => ApiError::object_too_large(size, limit),
    }
}

/// Whether `o` lists `uid` among its owners.
pub fn owned_by(o: &Value, uid: &str) -> bool {
    o.pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .is_some_and(|refs| {
            refs.iter()
                .any(|r| r.get("uid").and_then(Value::as_str) == Some(uid))
        })
}

/// Set (or replace) a condition on `status.conditions`.
pub fn set_condition(obj: &mut Value, ty: &str, status: &str, reason: &str, message: &str) {
    if !obj.get("status").is_some_and(Value::is_object) {
        obj["status"] = json!({});
    }
    let now = now();
    let conds = obj["status"]
        .as_object_mut()
        .map(|s| s.entry("conditions").or_insert(json!([])));
    if let Some(Value::Array(list)) = conds {
        let mut c =
            json!({"type": ty, "status": status, "lastTransitionTime": now, "lastProbeTime": null});
        if !reason.is_empty() {
            c["reason"] = json!(reason);
        }
        if !message.is_empty() {
            c["message"] = json!(message);
        }
        match list
            .iter_mut()
            .find(|x| x.get("type").and_then(Value::as_str) == Some(ty))
        {
            Some(old) => {
                if old.get("status") == c.get("status") {
                    c["lastTransitionTime"] =
                        old.get("lastTransitionTime").cloned().unwrap_or(json!(now));
                }
                *old = c;
            }
            None => list.push(c),
        }
    }
}

pub(super) fn random_suffix() -> String {
    use rand::Rng;
    const ALPHA: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut r = rand::thread_rng();
    (0..5)
        .map(|_| ALPHA[r.gen_range(0..ALPHA.len())] as char)
        .collect()
}

/// Defaults kube-apiserver applies on create (and, for the kinds whose strategy says so, on
/// update): the kind's own, from its strategy (`crate::kinds`).
pub fn defaults(res: &Resource, obj: &mut Value) {
    if let Some(d) = crate::kinds::of(res).defaults {
        d(obj);
    }
    normalize(res, obj);
}

/// What every write of the kind makes consistent (its strategy's `normalize`).
pub fn normalize(res: &Resource, obj: &mut Value) {
    if let Some(n) = crate::kinds::of(res).normalize {
        n(obj);
    }
}

/// A VM pod's `spec.containers` is its VM's mirror ([`proto::vm::mirror`]), refreshed on every
/// write; a containers list that is not an earlier mirror is left for validation to refuse.
pub(crate) fn vm_mirror(obj: &mut Value) {
    let Some(spec) = obj.get_mut("spec").filter(|s| s.is_object()) else {
        return;
    };
    let Some(vm) = spec.get("virtualMachine").filter(|v| v.is_object()) else {
        return;
    };
    let Some(name) = vm.get("name").and_then(Value::as_str) else {
        return;
    };
    let mirror = proto::vm::mirror(vm);
    if proto::vm::is_mirror(spec.get("containers").unwrap_or(&Value::Null), name) {
        spec["containers"] = json!([mirror]);
    }
}

/// A workload's defaults (apps/v1), its pod template's included.
fn workload_defaults(plural: &str, obj: &mut Value) {
    crate::apps::defaults(plural, obj);
    template_defaults(obj, "/spec/template");
}

/// The pod defaults on the pod template at `ptr`.
fn template_defaults(obj: &mut Value, ptr: &str) {
    if let (Some(tpl), Some(pods)) = (
        obj.pointer_mut(ptr).filter(|t| t.is_object()),
        crate::resources::find("", "v1", "pods"),
    ) {
        let mut pod = json!({"spec": tpl.get("spec").cloned().unwrap_or(json!({}))});
        defaults(pods, &mut pod);
        tpl["spec"] = pod["spec"].take();
        if tpl.get("metadata").is_none() {
            tpl["metadata"] = json!({});
        }
    }
}

/// Deployment defaults.
pub(crate) fn deployment_defaults(obj: &mut Value) {
    workload_defaults("deployments", obj)
}

/// ReplicaSet defaults.
pub(crate) fn replicaset_defaults(obj: &mut Value) {
    workload_defaults("replicasets", obj)
}

/// DaemonSet defaults.
pub(crate) fn daemonset_defaults(obj: &mut Value) {
    workload_defaults("daemonsets", obj)
}

/// Job defaults (batch/v1), its pod template's included.
pub(crate) fn job_defaults(obj: &mut Value) {
    workload_defaults("jobs", obj);
    crate::batch::job_defaults(obj);
}

/// CronJob defaults (batch/v1), its job template's pod template's included.
pub(crate) fn cronjob_defaults(obj: &mut Value) {
    crate::batch::cronjob_defaults(obj);
    template_defaults(obj, "/spec/jobTemplate/spec/template");
}

/// Pod defaults (restart and DNS policy, scheduler, service account, grace period, image pull
/// policy, termination message; phase Pending with its QoS class).
pub(crate) fn pod_defaults(obj: &mut Value) {
    // A spec of the wrong type gets no defaults: validation refuses it right after.
    if !obj.get("spec").is_none_or(Value::is_object) {
        return;
    }
    let spec = &mut obj["spec"];
    for (k, v) in [
        ("restartPolicy", json!("Always")),
        ("dnsPolicy", json!("ClusterFirst")),
        ("schedulerName", json!("default-scheduler")),
        ("serviceAccountName", json!("default")),
        ("terminationGracePeriodSeconds", json!(30)),
        ("securityContext", json!({})),
    ] {
        if spec.get(k).is_none() {
            spec[k] = v;
        }
    }
    let vm_name = spec
        .pointer("/virtualMachine/name")
        .and_then(Value::as_str)
        .map(String::from);
    for list in ["containers", "initContainers"] {
        // A VM's mirror takes no container defaults (it stays the mirror).
        let mirrored = vm_name.as_deref().is_some_and(|n| {
            list == "containers" && proto::vm::is_mirror(spec.get(list).unwrap_or(&Value::Null), n)
        });
        if mirrored {
            continue;
        }
        if let Some(cs) = spec.get_mut(list).and_then(Value::as_array_mut) {
            for c in cs.iter_mut().filter(|c| c.is_object()) {
                if c.get("imagePullPolicy").is_none() {
                    let img = c.get("image").and_then(Value::as_str).unwrap_or("");
                    let tag = img.rsplit('/').next().unwrap_or("");
                    let latest =
                        !img.contains('@') && (!tag.contains(':') || tag.ends_with(":latest"));
                    c["imagePullPolicy"] = json!(if latest { "Always" } else { "IfNotPresent" });
                }
                if c.get("terminationMessagePath").is_none() {
                    c["terminationMessagePath"] = json!("/dev/termination-log");
                    c["terminationMessagePolicy"] = json!("File");
                }
                if c.get("resources").is_none() {
                    c["resources"] = json!({});
                }
            }
        }
    }
    if let Some(vm) = spec.get_mut("virtualMachine").filter(|v| v.is_object()) {
        vm_defaults(vm);
        // What the VM costs the node beside its guest, counted as Pod overhead.
        if spec.get("overhead").is_none() {
            spec["overhead"] =
                json!({"cpu": proto::vm::OVERHEAD_CPU, "memory": proto::vm::OVERHEAD_MEMORY});
        }
    }
    let phase_unset = obj.pointer("/status/phase").is_none();
    if phase_unset {
        obj["status"] = json!({"phase": "Pending", "qosClass": qos_class(obj)});
    }
}

/// A VM's defaults (Arktos'): pull IfNotPresent, power Running, shutdown `stop`; resources
/// limits of one vCPU and 128Mi where none are named, and requests equal to the limits (a VM's
/// memory is all the guest's from boot, so it is Guaranteed).
fn vm_defaults(vm: &mut Value) {
    for (k, v) in [
        ("imagePullPolicy", "IfNotPresent"),
        ("powerSpec", "Running"),
        ("shutdownBehavior", "stop"),
    ] {
        if vm.get(k).is_none() {
            vm[k] = json!(v);
        }
    }
    if !vm.get("resources").is_some_and(Value::is_object) {
        vm["resources"] = json!({});
    }
    let r = &mut vm["resources"];
    for part in ["limits", "requests"] {
        if !r.get(part).is_some_and(Value::is_object) {
            r[part] = json!({});
        }
    }
    for (res, default) in [
        ("cpu", proto::vm::DEFAULT_CPU),
        ("memory", proto::vm::DEFAULT_MEMORY),
    ] {
        // The limit: as given, else the request, else the default; the request: the limit.
        let limit = r["limits"]
            .get(res)
            .or_else(|| r["requests"].get(res))
            .cloned()
            .unwrap_or_else(|| json!(default));
        if r["requests"].get(res).is_none() {
            r["requests"][res] = limit.clone();
        }
        r["limits"][res] = limit;
    }
}

/// Namespace defaults (the `kubernetes` finalizer, phase Active, the name label).
pub(crate) fn namespace_defaults(obj: &mut Value) {
    if obj.pointer("/spec/finalizers").is_none() {
        obj["spec"] = json!({"finalizers": ["kubernetes"]});
    }
    obj["status"] = json!({"phase": "Active"});
    let name = meta_str(obj, "name").to_string();
    let m = meta_mut(obj);
    let labels = m.entry("labels").or_insert(json!({}));
    if let Some(l) = labels.as_object_mut() {
        l.insert("kubernetes.io/metadata.name".into(), json!(name));
    }
}

/// Tenant defaults (phase Active).
pub(crate) fn tenant_defaults(obj: &mut Value) {
    obj["status"] = json!({"phase": "Active"});
}

/// Secret defaults (type Opaque; `stringData` folded into `data`).
pub(crate) fn secret_defaults(obj: &mut Value) {
    if obj.get("type").is_none() {
        obj["type"] = json!("Opaque");
    }
    if let Some(Value::Object(sd)) = obj.as_object_mut().and_then(|o| o.remove("stringData")) {
        use base64::Engine;
        if !obj.get("data").is_some_and(Value::is_object) {
            obj["data"] = json!({});
        }
        for (k, v) in sd {
            let s = v.as_str().unwrap_or("").as_bytes().to_vec();
            obj["data"][k] = json!(base64::engine::general_purpose::STANDARD.encode(s));
        }
    }
}

pub(super) fn qos_class(pod: &Value) -> &'static str {
    // A VM pod's QoS is its VM's (as a pod of that one container).
    let cs = match pod.pointer("/spec/virtualMachine") {
        Some(vm) => vec![vm.clone()],
        None => pod
            .pointer("/spec/containers")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default(),
    };
    let mut any = false;
    let mut guaranteed = !cs.is_empty();
    for c in &cs {
        let lim = c.pointer("/resources/limits").and_then(Value::as_object);
        let req = c.pointer("/resources/requests").and_then(Value::as_object);
        if lim.is_some_and(|l| !l.is_empty()) || req.is_some_and(|r| !r.is_empty()) {
            any = true;
        }
        let full = |m: Option<&Map<String, Value>>| {
            m.is_some_and(|m| m.contains_key("cpu") && m.contains_key("memory"))
        };
        if !full(lim)
            || req.is_some_and(|r| r.iter().any(|(k, v)| lim.and_then(|l| l.get(k)) != Some(v)))
        {
            guaranteed = false;
        }
    }
    if guaranteed {
        "Guaranteed"
    } else if any {
        "Burstable"
    } else {
        "BestEffort"
    }
}

/// Objects created together with another: a namespace brings its default ServiceAccount; a
/// tenant brings its space's default namespaces (each with its ServiceAccount).
/// The objects created together with a new object (its kind's strategy says which).
pub(super) fn companions(t: &Target, name: &str) -> Vec<Op> {
    crate::kinds::of(t.res)
        .companions
        .map(|c| c(&t.tenant, name))
        .unwrap_or_default()
}

/// A new namespace's companion: its `default` ServiceAccount.
pub(crate) fn namespace_companions(tenant: &str, name: &str) -> Vec<Op> {
    vec![default_sa(tenant, name)]
}

/// A new tenant's companions: its system namespaces, each with its `default` ServiceAccount.
pub(crate) fn tenant_companions(_tenant: &str, name: &str) -> Vec<Op> {
    let mut ops = Vec::new();
    for ns in crate::bootstrap::SYSTEM_NAMESPACES {
        ops.push(Op::Put {
            key: Key::new("namespaces", name, "", ns),
            value: namespace_object(name, ns),
            pre: Precondition::Absent,
        });
        ops.push(default_sa(name, ns));
    }
    ops
}

/// A fresh namespace object in `tenant`'s space.
pub fn namespace_object(tenant: &str, name: &str) -> Value {
    let mut v = json!({"apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": name, "uid": uuid::Uuid::new_v4().to_string(), "creationTimestamp": now(), "generation": 1,
            "labels": {"kubernetes.io/metadata.name": name}},
        "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}});
    if !tenant.is_empty() {
        v["metadata"]["tenant"] = json!(tenant);
    }
    v
}

/// The default ServiceAccount of a namespace, as a create op.
pub fn default_sa(tenant: &str, ns: &str) -> Op {
    let mut v = json!({"apiVersion": "v1", "kind": "ServiceAccount",
        "metadata": {"name": "default", "namespace": ns, "uid": uuid::Uuid::new_v4().to_string(), "creationTimestamp": now(), "generation": 1}});
    if !tenant.is_empty() {
        v["metadata"]["tenant"] = json!(tenant);
    }
    Op::Put {
        key: Key::new("serviceaccounts", tenant, ns, "default"),
        value: v,
        pre: Precondition::Absent,
    }
}
