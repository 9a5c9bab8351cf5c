//! The scale, binding and resize subresources.

use super::*;

impl Api {
    pub(super) async fn bind(&self, t: &Target, req: &Request) -> ApiResult<Reply> {
        let body = parse_body(&req.headers, &req.body)?;
        let node = body
            .pointer("/target/name")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty())
            .ok_or_else(|| {
                ApiError::invalid(
                    "",
                    "Binding",
                    t.name(),
                    vec![Cause::required("target.name")],
                )
            })?;
        let key = t.key(t.name());
        let current = self
            .store
            .get(&key)
            .ok_or_else(|| ApiError::not_found("", "pods", t.name()))?;
        self.bind_pod(t.res, &key, &current, node, Vec::new())
            .await?;
        Ok(Reply::json(
            StatusCode::CREATED,
            &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
        ))
    }
}

/// A pod that is bound already cannot be bound (or placed) again: 409, as kube-apiserver says it.
pub(super) fn unbound(name: &str, pod: &Value) -> ApiResult<()> {
    match pod
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
    {
        Some(n) => Err(ApiError::conflict(
            "",
            "pods",
            name,
            &format!("pod {name} is already assigned to node {n:?}"),
        )),
        None => Ok(()),
    }
}

impl Api {
    /// Bind the pod `current` (as read) to `node`: refused when it is bound already, admitted
    /// by the hooks as a binding, a compare-and-swap on the version read; `also` commits with it.
    pub(super) async fn bind_pod(
        &self,
        res: &Resource,
        key: &Key,
        current: &Value,
        node: &str,
        also: Vec<Op>,
    ) -> ApiResult<Arc<Value>> {
        let name = key.name.as_str();
        unbound(name, current)?;
        self.admit(res, Write::Bind { current, node })?;
        let rv = store::object_rv(current).unwrap_or(0);
        let mut new = current.clone();
        new["spec"]["nodeName"] = json!(node);
        set_condition(&mut new, "PodScheduled", "True", "", "");
        let ev = self
            .write_as(
                res,
                key.clone(),
                current,
                Some(new),
                Precondition::Version(rv),
                false,
                true,
                also,
            )
            .await
            .map_err(|e| store_err(res, name, e))?;
        Ok(ev.object.clone())
    }
}

impl Api {
    /// The `scale` subresource (autoscaling/v1 `Scale`) of Deployments and ReplicaSets: GET, PUT
    /// and PATCH read and write `spec.replicas`.
    pub(super) async fn scale(&self, t: &Target, req: &Request, verb: &str) -> ApiResult<Reply> {
        let key = t.key(t.name());
        let body = if verb == "get" {
            Value::Null
        } else {
            parse_body(&req.headers, &req.body)?
        };
        let patch_kind = req
            .headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_string();
        for _attempt in 0..16 {
            let current = self
                .store
                .get(&key)
                .ok_or_else(|| ApiError::not_found(t.res.group, t.res.plural, t.name()))?;
            let cur_rv = store::object_rv(&current).unwrap_or(0);
            let scale = crate::apps::scale_of(&current);
            let wanted = match verb {
                "get" => return Ok(Reply::json(StatusCode::OK, &scale)),
                "update" => {
                    let brv = body
                        .pointer("/metadata/resourceVersion")
                        .and_then(Value::as_str)
                        .unwrap_or("");
                    if !brv.is_empty() && !self.names_revision(&key, brv, cur_rv) {
                        return Err(ApiError::stale(t.res.group, t.res.plural, t.name()));
                    }
                    body.clone()
                }
                _ => {
                    let mut patched = scale.clone();
                    match patch_kind.as_str() {
                        "application/merge-patch+json" => {
                            if !body.is_object() {
                                return Err(ApiError::bad_request(
                                    "a merge patch must be a JSON object",
                                ));
                            }
                            patch::merge_patch(&mut patched, &body)
                        }
                        "application/json-patch+json" => patch::json_patch(&mut patched, &body)
                            .map_err(|e| ApiError::unprocessable_patch(&e))?,
                        "application/strategic-merge-patch+json" => {
                            patch::strategic_merge(&mut patched, &body)
                                .map_err(|e| ApiError::unprocessable_patch(&e))?
                        }
                        other => return Err(ApiError::unsupported_media_type(other)),
                    }
                    let prv = meta_str(&patched, "resourceVersion");
                    if !prv.is_empty() && !self.names_revision(&key, prv, cur_rv) {
                        return Err(ApiError::stale(t.res.group, t.res.plural, t.name()));
                    }
                    patched
                }
            };
            let replicas = match wanted.pointer("/spec/replicas") {
                None | Some(Value::Null) => 0,
                Some(v) => v.as_i64().ok_or_else(|| {
                    ApiError::bad_request(
                        "Scale in version \"v1\" cannot be handled as a Scale: spec.replicas must be an integer",
                    )
                })?,
            };
            if !(0..=i64::from(i32::MAX)).contains(&replicas) {
                return Err(ApiError::invalid(
                    "autoscaling",
                    "Scale",
                    t.name(),
                    vec![crate::error::Cause::invalid(
                        "spec.replicas",
                        &replicas.to_string(),
                        "must be greater than or equal to 0",
                    )],
                ));
            }
            let mut new = (*current).clone();
            if new.pointer("/spec/replicas").and_then(Value::as_i64) != Some(replicas) {
                new["spec"]["replicas"] = json!(replicas);
                let g = current
                    .pointer("/metadata/generation")
                    .and_then(Value::as_i64)
                    .unwrap_or(1);
                meta_mut(&mut new).insert("generation".into(), json!(g + 1));
            }
            self.admit(
                t.res,
                Write::Update {
                    current: &current,
                    status: false,
                },
            )?;
            match self
                .commit_update(
                    t,
                    key.clone(),
                    &current,
                    new,
                    Precondition::Version(cur_rv),
                    dry_run(&req.query)?,
                    false,
                )
                .await
            {
                Err(e) if e.code == 409 && e.reason == "Conflict" && verb == "patch" => continue,
                Err(e) => return Err(e),
                Ok(out) => return Ok(Reply::json(StatusCode::OK, &crate::apps::scale_of(&out))),
            }
        }
        Err(ApiError::stale(t.res.group, t.res.plural, t.name()))
    }
}

/// A resize (`pods/resize`) of `current` as `body` asks for it: the stored pod with only the
/// resources of its containers (matched by name) and of its VM taken from the body; every other
/// change is dropped, as kube-apiserver's resize strategy drops it. For a VM pod, resources
/// given on its mirror container are the VM's, and a VM's requests follow its limits unless the
/// body sets them apart.
pub(super) fn resized(current: &Value, body: &Value) -> Value {
    let mut new = current.clone();
    let wanted = |name: &str| -> Option<Value> {
        body.pointer("/spec/containers")
            .and_then(Value::as_array)?
            .iter()
            .find(|c| c.get("name").and_then(Value::as_str) == Some(name))
            .map(|c| c.get("resources").cloned().unwrap_or(Value::Null))
    };
    if let Some(cs) = new
        .pointer_mut("/spec/containers")
        .and_then(Value::as_array_mut)
    {
        for c in cs.iter_mut() {
            let name = c
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            if let (Some(r), Some(o)) = (wanted(&name), c.as_object_mut()) {
                match r {
                    Value::Null => o.remove("resources"),
                    r => o.insert("resources".into(), r),
                };
            }
        }
    }
    if let Some(vm) = new
        .pointer_mut("/spec/virtualMachine")
        .and_then(Value::as_object_mut)
    {
        let cur = vm.get("resources").cloned().unwrap_or(Value::Null);
        let name = vm.get("name").and_then(Value::as_str).unwrap_or("");
        let from_vm = body
            .pointer("/spec/virtualMachine")
            .map(|v| v.get("resources").cloned().unwrap_or(Value::Null))
            .filter(|r| *r != cur);
        let from_mirror = wanted(name).filter(|r| *r != cur);
        if let Some(mut r) = from_vm.or(from_mirror) {
            let limits = r.get("limits").cloned();
            if let Some(l) = limits.filter(|l| Some(l) != cur.get("limits")) {
                if r.get("requests")
                    .is_none_or(|q| Some(q) == cur.get("requests"))
                {
                    r["requests"] = l;
                }
            }
            vm.insert("resources".into(), r);
        }
    }
    new
}

/// The rules of a resize (`old` to `new`, which differ in resources only): only cpu and
/// memory change, no limit or request is removed, the pod's QoS class stays, and a VM only
/// grows (hot-plug adds vCPUs and memory; nothing takes them away from a running guest).
pub(super) fn resize_rules(old: &Value, new: &Value, causes: &mut Vec<Cause>) {
    let res_of = |pod: &Value, ptr: &str| pod.pointer(ptr).cloned().unwrap_or(Value::Null);
    let mut check = |field: &str, o: &Value, n: &Value| {
        for which in ["limits", "requests"] {
            let (om, nm) = (
                o.get(which).and_then(Value::as_object),
                n.get(which).and_then(Value::as_object),
            );
            let keys: std::collections::BTreeSet<&String> =
                om.iter().chain(nm.iter()).flat_map(|m| m.keys()).collect();
            for k in keys {
                let (ov, nv) = (om.and_then(|m| m.get(k)), nm.and_then(|m| m.get(k)));
                if ov == nv {
                    continue;
                }
                let f = format!("{field}.{which}[{k}]");
                if k != "cpu" && k != "memory" {
                    causes.push(Cause::forbidden(
                        &f,
                        "only cpu and memory resources are mutable",
                    ));
                } else if nv.is_none() {
                    causes.push(Cause::forbidden(
                        &f,
                        &format!("resource {which} cannot be removed"),
                    ));
                }
            }
        }
    };
    let n = new
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .map_or(0, Vec::len);
    let vm = new.pointer("/spec/virtualMachine").is_some();
    if !vm {
        for i in 0..n {
            let ptr = format!("/spec/containers/{i}/resources");
            check(
                &format!("spec.containers[{i}].resources"),
                &res_of(old, &ptr),
                &res_of(new, &ptr),
            );
        }
    } else {
        let ptr = "/spec/virtualMachine/resources";
        let (o, n) = (res_of(old, ptr), res_of(new, ptr));
        check("spec.virtualMachine.resources", &o, &n);
        for k in ["cpu", "memory"] {
            let q = |r: &Value| {
                r.pointer(&format!("/limits/{k}"))
                    .and_then(Value::as_str)
                    .and_then(proto::quantity)
            };
            if let (Some(a), Some(b)) = (q(&o), q(&n)) {
                let f = format!("spec.virtualMachine.resources.limits[{k}]");
                if b < a {
                    causes.push(Cause::forbidden(
                        &f,
                        "a running VM's vCPUs and memory can only grow in place (hot-plug); recreate the pod to shrink it",
                    ));
                } else if k == "memory" && (b - a) % proto::vm::MEMORY_BLOCK != 0.0 {
                    causes.push(Cause::forbidden(
                        &f,
                        "a VM's memory grows in whole blocks of 128Mi (the guest's memory block size)",
                    ));
                }
            }
        }
    }
    let (qo, qn) = (
        super::objects::qos_class(old),
        super::objects::qos_class(new),
    );
    if qo != qn {
        causes.push(Cause::invalid(
            "spec",
            qn,
            "Pod QOS Class may not change as a result of resizing",
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_resize_takes_resources_only() {
        let pod = json!({"metadata": {"name": "p"}, "spec": {"containers": [
            {"name": "a", "image": "i", "resources": {"limits": {"cpu": "1"}}}]}});
        let body = json!({"metadata": {"labels": {"x": "y"}}, "spec": {"containers": [
            {"name": "a", "image": "other", "resources": {"limits": {"cpu": "2"}}},
            {"name": "b", "image": "i"}]}});
        let new = resized(&pod, &body);
        assert_eq!(
            new["spec"]["containers"][0]["resources"]["limits"]["cpu"],
            "2"
        );
        assert_eq!(new["spec"]["containers"][0]["image"], "i");
        assert_eq!(new["spec"]["containers"].as_array().unwrap().len(), 1);
        assert!(new["metadata"].get("labels").is_none());
    }

    #[test]
    fn a_vm_resizes_through_its_mirror_and_only_grows() {
        let r = |cpu: &str, mem: &str| json!({"limits": {"cpu": cpu, "memory": mem}, "requests": {"cpu": cpu, "memory": mem}});
        let pod = json!({"spec": {"virtualMachine": {"name": "vm", "image": "i", "resources": r("1", "256Mi")},
            "containers": [{"name": "vm", "image": "i", "resources": r("1", "256Mi")}]}});
        // Limits on the mirror are the VM's; its requests follow.
        let body = json!({"spec": {"containers": [{"name": "vm", "resources": {"limits": {"cpu": "2", "memory": "384Mi"}, "requests": {"cpu": "1", "memory": "256Mi"}}}]}});
        let new = resized(&pod, &body);
        assert_eq!(new["spec"]["virtualMachine"]["resources"], r("2", "384Mi"));
        let mut causes = Vec::new();
        resize_rules(&pod, &new, &mut causes);
        assert!(causes.is_empty(), "{causes:?}");
        let mut shrink = pod.clone();
        shrink["spec"]["virtualMachine"]["resources"] = r("1", "128Mi");
        resize_rules(&pod, &shrink, &mut causes);
        assert_eq!(causes.len(), 1);
        assert_eq!(
            causes[0].field,
            "spec.virtualMachine.resources.limits[memory]"
        );
    }
}
