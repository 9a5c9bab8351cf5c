//! The scale and binding subresources.

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
