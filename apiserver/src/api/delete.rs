//! Deletes: graceful deletion, finalizers and propagation policy, collections, and the
//! pods/eviction subresource.

use super::*;

impl Api {
    pub(super) async fn delete(&self, t: &Target, req: &Request) -> ApiResult<Reply> {
        let opts = delete_options(req)?;
        let key = t.key(t.name());
        let out = self
            .delete_one(t, key, &opts, dry_run(&req.query)? || opts.dry_run)
            .await?;
        Ok(Reply::json(StatusCode::OK, &out))
    }

    pub(super) async fn delete_one(
        &self,
        t: &Target,
        key: Key,
        opts: &DeleteOpts,
        dry: bool,
    ) -> ApiResult<Value> {
        let name = key.name.clone();
        for _ in 0..16 {
            let current = self
                .store
                .get(&key)
                .ok_or_else(|| ApiError::not_found(t.res.group, t.res.plural, &name))?;
            self.admit(t.res, Write::Delete { current: &current })?;
            let rv = store::object_rv(&current).unwrap_or(0);
            if let Some(u) = &opts.uid {
                if u != meta_str(&current, "uid") {
                    return Err(ApiError::conflict(
                        t.res.group,
                        t.res.plural,
                        &name,
                        &format!(
                            "Precondition failed: UID in precondition: {u}, UID in object meta: {}",
                            meta_str(&current, "uid")
                        ),
                    ));
                }
            }
            if let Some(prv) = &opts.resource_version {
                if !self.names_revision(&key, prv, rv) {
                    return Err(ApiError::conflict(t.res.group, t.res.plural, &name, &format!("Precondition failed: ResourceVersion in precondition: {prv}, ResourceVersion in object meta: {rv}")));
                }
            }
            let mut finalizers: Vec<Value> = current
                .pointer("/metadata/finalizers")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            match opts.propagation.as_deref() {
                Some("Orphan") if !finalizers.contains(&json!("orphan")) => {
                    finalizers.push(json!("orphan"))
                }
                Some("Foreground")
                    if !finalizers.contains(&json!("foregroundDeletion"))
                        && self.has_dependents(&current) =>
                {
                    finalizers.push(json!("foregroundDeletion"))
                }
                _ => {}
            }
            let strategy = crate::kinds::of(t.res);
            let graceful_pod = strategy.deletion == Deletion::GracefulOnNode
                && current
                    .pointer("/spec/nodeName")
                    .and_then(Value::as_str)
                    .is_some_and(|n| !n.is_empty())
                && opts.grace != Some(0)
                && current
                    .pointer("/status/phase")
                    .and_then(Value::as_str)
                    .is_none_or(|p| p != "Succeeded" && p != "Failed");
            let lifecycle = strategy.deletion == Deletion::Lifecycle;
            if !finalizers.is_empty() || graceful_pod || lifecycle {
                let mut new = (*current).clone();
                let already = new.pointer("/metadata/deletionTimestamp").is_some();
                let grace = if graceful_pod {
                    opts.grace
                        .or_else(|| {
                            new.pointer("/spec/terminationGracePeriodSeconds")
                                .and_then(Value::as_i64)
                        })
                        .unwrap_or(30)
                } else {
                    0
                };
                let m = meta_mut(&mut new);
                let old_grace = m.get("deletionGracePeriodSeconds").and_then(Value::as_i64);
                if !already || old_grace.is_some_and(|g| grace < g) {
                    let ts = Utc::now() + chrono::Duration::seconds(grace);
                    m.insert(
                        "deletionTimestamp".into(),
                        json!(ts.to_rfc3339_opts(SecondsFormat::Secs, true)),
                    );
                    m.insert("deletionGracePeriodSeconds".into(), json!(grace));
                }
                if !finalizers.is_empty() {
                    m.insert("finalizers".into(), Value::Array(finalizers));
                }
                if lifecycle {
                    new["status"]["phase"] = json!("Terminating");
                }
                if dry || new == *current {
                    return Ok(new);
                }
                match self
                    .write(
                        t.res,
                        key.clone(),
                        &current,
                        Some(new),
                        Precondition::Version(rv),
                        false,
                    )
                    .await
                {
                    Ok(ev) => return Ok((*ev.object).clone()),
                    Err(StoreError::Conflict(_)) => {
                        self.after_conflict(t, &name).await?;
                        continue;
                    }
                    Err(e) => return Err(store_err(t.res, &name, e)),
                }
            }
            if dry {
                return Ok((*current).clone());
            }
            match self
                .write(
                    t.res,
                    key.clone(),
                    &current,
                    None,
                    Precondition::Version(rv),
                    false,
                )
                .await
            {
                Ok(ev) => return Ok((*ev.object).clone()),
                Err(StoreError::Conflict(_)) => {
                    self.after_conflict(t, &name).await?;
                    continue;
                }
                Err(e) => return Err(store_err(t.res, &name, e)),
            }
        }
        Err(ApiError::stale(t.res.group, t.res.plural, &name))
    }

    pub(super) fn has_dependents(&self, owner: &Value) -> bool {
        let uid = meta_str(owner, "uid");
        let tenant = meta_str(owner, "tenant");
        RESOURCES.iter().any(|r| {
            let scope = Scope {
                resource: r.store_name(),
                tenant: Some(tenant.to_string()),
                namespace: None,
            };
            self.store
                .list(&scope, None)
                .1
                .iter()
                .any(|(_, o)| owned_by(o, uid))
        })
    }

    pub(super) async fn delete_collection(&self, t: &Target, req: &Request) -> ApiResult<Reply> {
        let opts = delete_options(req)?;
        let (ls, fs) = self.selectors(t, &req.query)?;
        let (rv, items) = self.store.list(&t.scope(), None);
        let dry = dry_run(&req.query)? || opts.dry_run;
        let mut out = Vec::new();
        for (k, v) in items {
            if ls.matches(&v) && fs.matches(&v) {
                match self.delete_one(t, k, &opts, dry).await {
                    Ok(o) => out.push(o),
                    Err(e) if e.code == 404 => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(Reply::json(
            StatusCode::OK,
            &json!({"kind": t.res.list_kind(), "apiVersion": t.res.api_version(), "metadata": {"resourceVersion": rv.to_string()}, "items": out}),
        ))
    }

    /// `POST pods/{name}/eviction` (policy/v1 `Eviction`, what `kubectl drain` sends): a
    /// deletion with the eviction's delete options. No PodDisruptionBudgets are served, so
    /// nothing ever holds an eviction back.
    pub(super) async fn evict(&self, t: &Target, req: &Request) -> ApiResult<Reply> {
        let body = parse_body(&req.headers, &req.body)?;
        if !body.is_object() {
            return Err(ApiError::bad_request("the body must be an Eviction object"));
        }
        let name = meta_str(&body, "name");
        if !name.is_empty() && name != t.name() {
            return Err(ApiError::bad_request(format!(
                "name in URL does not match name in Eviction object: {name} vs {}",
                t.name()
            )));
        }
        let ns = meta_str(&body, "namespace");
        if !ns.is_empty() && Some(ns) != t.namespace.as_deref() {
            return Err(ApiError::bad_request(
                "the namespace of the Eviction does not match the namespace of the pod",
            ));
        }
        let opts = delete_options_of(body.get("deleteOptions").unwrap_or(&json!({})), &req.query)?;
        let dry = dry_run(&req.query)? || opts.dry_run;
        self.delete_one(t, t.key(t.name()), &opts, dry).await?;
        Ok(Reply::json(
            StatusCode::CREATED,
            &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
        ))
    }
}

#[derive(Default)]
pub(super) struct DeleteOpts {
    pub(super) grace: Option<i64>,
    pub(super) propagation: Option<String>,
    pub(super) uid: Option<String>,
    pub(super) resource_version: Option<String>,
    pub(super) dry_run: bool,
}

pub(super) fn delete_options(req: &Request) -> ApiResult<DeleteOpts> {
    let body: Value = if req.body.iter().all(u8::is_ascii_whitespace) {
        json!({})
    } else {
        parse_body(&req.headers, &req.body)?
    };
    delete_options_of(&body, &req.query)
}

/// Delete options from a `DeleteOptions` body (or `{}`) and the query.
pub(super) fn delete_options_of(body: &Value, q: &Query) -> ApiResult<DeleteOpts> {
    let grace =
        match body.get("gracePeriodSeconds").and_then(Value::as_i64) {
            Some(g) => Some(g),
            None => match q.get("gracePeriodSeconds") {
                Some(g) if !g.is_empty() => Some(g.parse().map_err(|_| {
                    ApiError::bad_request(format!("invalid gracePeriodSeconds {g:?}"))
                })?),
                _ => None,
            },
        };
    let propagation = body
        .get("propagationPolicy")
        .and_then(Value::as_str)
        .map(String::from)
        .or_else(|| q.get("propagationPolicy").map(String::from))
        .filter(|p| !p.is_empty());
    if body.get("orphanDependents").and_then(Value::as_bool) == Some(true) && propagation.is_some()
    {
        return Err(ApiError::invalid(
            "",
            "DeleteOptions",
            "",
            vec![Cause::invalid(
                "propagationPolicy",
                propagation.as_deref().unwrap_or(""),
                "orphanDependents and deletionPropagation cannot be both set",
            )],
        ));
    }
    let propagation = propagation.or_else(|| {
        (body.get("orphanDependents").and_then(Value::as_bool) == Some(true))
            .then(|| "Orphan".to_string())
    });
    if let Some(p) = &propagation {
        if !["Orphan", "Background", "Foreground"].contains(&p.as_str()) {
            return Err(ApiError::invalid(
                "",
                "DeleteOptions",
                "",
                vec![Cause::not_supported(
                    "propagationPolicy",
                    p,
                    &["Foreground", "Background", "Orphan"],
                )],
            ));
        }
    }
    if let Some(g) = grace {
        if g < 0 {
            return Err(ApiError::invalid(
                "",
                "DeleteOptions",
                "",
                vec![Cause::invalid(
                    "gracePeriodSeconds",
                    &g.to_string(),
                    "must be greater than or equal to 0",
                )],
            ));
        }
    }
    let dry = body
        .get("dryRun")
        .and_then(Value::as_array)
        .is_some_and(|a| a.iter().any(|v| v == "All"));
    Ok(DeleteOpts {
        grace,
        propagation,
        uid: body
            .pointer("/preconditions/uid")
            .and_then(Value::as_str)
            .map(String::from),
        resource_version: body
            .pointer("/preconditions/resourceVersion")
            .and_then(Value::as_str)
            .map(String::from),
        dry_run: dry,
    })
}
