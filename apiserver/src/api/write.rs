//! Creates, updates and patches: defaults, validation, admission and the compare-and-swap
//! commit, for API clients and (under a site identity) for what the hub accepts from sites.

use super::*;

/// Which part of an object a write goes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Part {
    /// The object itself (metadata and spec; the status is kept).
    Main,
    /// The status subresource: only the status is taken.
    Status,
    /// A pod's `resize` subresource: only container (and VM) resources are taken.
    Resize,
}

impl Part {
    /// The part a subresource name writes (`finalize` writes the object).
    pub(super) fn of(sub: Option<&str>) -> Part {
        if sub == Some("status") {
            Part::Status
        } else {
            Part::Main
        }
    }
}

/// The site-origin annotation is the region's to set (it decides who may write an object and
/// where it syncs): a write keeps the stored object's value, whatever the body says, and a new
/// object gets it only from the edge's hooks or the hub.
pub(super) fn keep_origin(current: Option<&Value>, new: &mut Value) {
    let kept = current
        .and_then(|c| c.pointer("/metadata/annotations"))
        .and_then(|a| a.get(proto::ORIGIN))
        .cloned();
    let anns = new
        .pointer_mut("/metadata/annotations")
        .and_then(Value::as_object_mut);
    match (anns, kept) {
        (Some(a), Some(k)) => {
            a.insert(proto::ORIGIN.into(), k);
        }
        (Some(a), None) => {
            a.remove(proto::ORIGIN);
        }
        (None, Some(k)) => {
            new["metadata"]["annotations"] = json!({ proto::ORIGIN: k });
        }
        (None, None) => {}
    }
}

pub(super) fn spec_part(v: &Value) -> Value {
    let mut c = v.clone();
    if let Some(o) = c.as_object_mut() {
        o.remove("metadata");
        o.remove("status");
        o.remove("kind");
        o.remove("apiVersion");
    }
    c
}

/// The partition a Tenant names (`spec.storageClusterId`, or the create-time alias
/// `spec.storageCluster`, folded into it here).
fn named_partition(obj: &mut Value) -> Option<String> {
    let spec = obj.get_mut("spec").and_then(Value::as_object_mut)?;
    if let Some(alias) = spec.remove("storageCluster") {
        if !spec.contains_key("storageClusterId") {
            spec.insert("storageClusterId".into(), alias);
        }
    }
    spec.get("storageClusterId")
        .and_then(Value::as_str)
        .map(String::from)
}

/// A Tenant's partition never changes: an update that leaves it out keeps it, one that
/// names another is refused.
fn keep_partition(current: &Value, new: &mut Value) -> ApiResult<()> {
    let was = current
        .pointer("/spec/storageClusterId")
        .and_then(Value::as_str)
        .map(String::from);
    match (named_partition(new), was) {
        (None, None) => Ok(()),
        (None, Some(w)) => {
            if !new.get("spec").is_some_and(Value::is_object) {
                new["spec"] = json!({});
            }
            new["spec"]["storageClusterId"] = json!(w);
            Ok(())
        }
        (Some(n), w) if Some(&n) == w.as_ref() => Ok(()),
        (Some(n), w) => Err(ApiError::invalid(
            "",
            "Tenant",
            meta_str(new, "name"),
            vec![Cause::invalid(
                "spec.storageClusterId",
                &n,
                &format!(
                    "field is immutable (the tenant's space lives in partition {:?})",
                    w.as_deref().unwrap_or(store::SYSTEM_PARTITION)
                ),
            )],
        )),
    }
}

/// Which tenant partition a new tenant that names none goes to: FNV-1a of its name, modulo
/// the number of tenant partitions (so a name always lands in the same one while the
/// partitions stay the same; the choice is recorded in the Tenant and never recomputed).
pub fn default_partition(name: &str, tenant_partitions: usize) -> usize {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    usize::try_from(h % tenant_partitions.max(1) as u64).unwrap_or(0)
}

impl Api {
    /// Give a new Tenant its partition: the one it names (which must exist), or with tenant
    /// partitions configured the placement policy's ([`default_partition`]).
    fn place_tenant(&self, obj: &mut Value) -> ApiResult<()> {
        let parts = self.store.partitions();
        match named_partition(obj) {
            Some(n) if parts.contains(&n) => Ok(()),
            Some(n) => Err(ApiError::invalid(
                "",
                "Tenant",
                meta_str(obj, "name"),
                vec![Cause::invalid(
                    "spec.storageClusterId",
                    &n,
                    &format!("Unsupported value: supported values: {}", parts.join(", ")),
                )],
            )),
            None if parts.len() > 1 => {
                let i = 1 + default_partition(meta_str(obj, "name"), parts.len() - 1);
                if !obj.get("spec").is_some_and(Value::is_object) {
                    obj["spec"] = json!({});
                }
                obj["spec"]["storageClusterId"] = json!(parts[i]);
                Ok(())
            }
            None => Ok(()),
        }
    }

    /// Prepare a new object from a create body: identity fields, defaults, validation.
    pub(super) fn prepare_create(
        &self,
        t: &Target,
        req: &Request,
        obj: Value,
    ) -> ApiResult<(Value, Vec<String>)> {
        let fv = field_validation(&req.query)?;
        self.new_object(t.res, &t.tenant, t.namespace.as_deref(), obj, fv, false)
    }

    /// A new object as the API would store it: type meta, unknown-field check, identity
    /// fields (name from `generateName`, namespace and tenant of the target), defaults and
    /// validation. With `keep_identity` (an object a site created and reports up) a valid
    /// `uid`, `creationTimestamp` and `generation` the site assigned are kept, so both tiers
    /// name the object alike.
    pub(super) fn new_object(
        &self,
        res: &Resource,
        tenant: &str,
        namespace: Option<&str>,
        mut obj: Value,
        fv: FieldValidation,
        keep_identity: bool,
    ) -> ApiResult<(Value, Vec<String>)> {
        if !obj.is_object() {
            return Err(ApiError::bad_request(format!(
                "the body must be a {} object",
                res.kind
            )));
        }
        check_type_meta(res, &mut obj)?;
        let warnings = self.unknown_fields(res, &obj, fv)?;
        let tenant_object = res.group.is_empty() && res.plural == "tenants";
        normalize_quantities(&mut obj);
        let m = meta_mut(&mut obj);
        if m.get("name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .is_empty()
        {
            if let Some(g) = m
                .get("generateName")
                .and_then(Value::as_str)
                .filter(|g| !g.is_empty())
            {
                let name = format!("{g}{}", random_suffix());
                m.insert("name".into(), json!(name));
            }
        }
        if res.namespaced {
            let ns = namespace.unwrap_or_default();
            match m.get("namespace").and_then(Value::as_str) {
                Some(n) if !n.is_empty() && n != ns => {
                    return Err(ApiError::bad_request("the namespace of the provided object does not match the namespace sent on the request"))
                }
                _ => {}
            }
            m.insert("namespace".into(), json!(ns));
        } else {
            m.remove("namespace");
        }
        match m.get("tenant").and_then(Value::as_str) {
            Some(tn) if !tn.is_empty() && tn != tenant => {
                return Err(ApiError::bad_request(
                    "the tenant of the provided object does not match the tenant of the request",
                ))
            }
            _ => {}
        }
        if tenant.is_empty() {
            m.remove("tenant");
        } else {
            m.insert("tenant".into(), json!(tenant));
        }
        let kept = |m: &Map<String, Value>, f: &str, ok: &dyn Fn(&Value) -> bool| {
            m.get(f).filter(|v| keep_identity && ok(v)).cloned()
        };
        let uid = kept(m, "uid", &|v| {
            v.as_str().is_some_and(|u| uuid::Uuid::parse_str(u).is_ok())
        })
        .unwrap_or_else(|| json!(uuid::Uuid::new_v4().to_string()));
        let created = kept(m, "creationTimestamp", &|v| {
            v.as_str()
                .is_some_and(|t| chrono::DateTime::parse_from_rfc3339(t).is_ok())
        })
        .unwrap_or_else(|| json!(now()));
        let generation = kept(m, "generation", &|v| v.as_i64().is_some_and(|g| g >= 1))
            .unwrap_or_else(|| json!(1));
        m.insert("uid".into(), uid);
        m.insert("creationTimestamp".into(), created);
        m.insert("generation".into(), generation);
        for f in [
            "resourceVersion",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "selfLink",
        ] {
            m.remove(f);
        }
        if !keep_identity {
            keep_origin(None, &mut obj);
        }
        defaults(res, &mut obj);
        if tenant_object {
            self.place_tenant(&mut obj)?;
        }
        self.validate(res, &obj, None)?;
        Ok((obj, warnings))
    }

    /// Check an object a site created (and reports up) as the API checks a create in the
    /// site's name: everything [`Api::new_object`] checks (unknown fields are tolerated, as
    /// a default create tolerates them), plus that its tenant and namespace exist and accept
    /// new content. `key` names the object; the body may not contradict it.
    pub fn admit_site_create(&self, key: &Key, obj: Value) -> ApiResult<Value> {
        let res = resources::by_store_name(&key.resource)
            .ok_or_else(|| ApiError::not_found("", &key.resource, &key.name))?;
        let name = meta_str(&obj, "name");
        if !name.is_empty() && name != key.name {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({name}) does not match its key ({})",
                key.name
            )));
        }
        let mut obj = obj;
        meta_mut(&mut obj).insert("name".into(), json!(key.name));
        let ns = res.namespaced.then_some(key.namespace.as_str());
        let (obj, _) = self.new_object(res, &key.tenant, ns, obj, FieldValidation::Ignore, true)?;
        if !key.tenant.is_empty() {
            self.check_tenant(&key.tenant, "create")?;
        }
        if res.namespaced {
            self.check_namespace(res, &key.tenant, &key.namespace, &key.name)?;
        }
        Ok(obj)
    }

    /// Check a site's new version of an object it owns as the API checks an update: the
    /// identity fields stay the stored object's (a deletion once requested stays requested),
    /// generation follows spec changes, defaults and validation (immutable fields included)
    /// apply.
    pub fn admit_site_update(
        &self,
        res: &Resource,
        current: &Value,
        new: Value,
    ) -> ApiResult<Value> {
        if !new.is_object() {
            return Err(ApiError::bad_request(format!(
                "the body must be a {} object",
                res.kind
            )));
        }
        let mut new = new;
        check_type_meta(res, &mut new)?;
        let cm = current.get("metadata").cloned().unwrap_or(json!({}));
        let dt = new.pointer("/metadata/deletionTimestamp").cloned();
        let grace = new.pointer("/metadata/deletionGracePeriodSeconds").cloned();
        {
            let m = meta_mut(&mut new);
            for f in [
                "name",
                "uid",
                "creationTimestamp",
                "tenant",
                "namespace",
                "generation",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
            ] {
                match cm.get(f) {
                    Some(v) => m.insert(f.into(), v.clone()),
                    None => m.remove(f),
                };
            }
            m.remove("resourceVersion");
            // The site may start a graceful deletion of its own object (never undo one).
            // (The origin annotation is kept below.)
            if cm.get("deletionTimestamp").is_none() {
                if let Some(ts) = dt.filter(|t| {
                    t.as_str()
                        .is_some_and(|t| chrono::DateTime::parse_from_rfc3339(t).is_ok())
                }) {
                    m.insert("deletionTimestamp".into(), ts);
                    if let Some(g) = grace.filter(|g| g.as_i64().is_some_and(|g| g >= 0)) {
                        m.insert("deletionGracePeriodSeconds".into(), g);
                    }
                }
            }
        }
        self.finish_update(res, current, new, Part::Main)
    }

    /// The end of every update: the origin annotation kept, generation bumped on a spec
    /// change, quantities normalised, defaults (workloads and secrets, not through status)
    /// and validation against the stored object.
    pub(super) fn finish_update(
        &self,
        res: &Resource,
        current: &Value,
        mut new: Value,
        part: Part,
    ) -> ApiResult<Value> {
        let status = part == Part::Status;
        keep_origin(Some(current), &mut new);
        if res.group.is_empty() && res.plural == "tenants" {
            keep_partition(current, &mut new)?;
        }
        if res.group.is_empty() && res.plural == "services" && !status {
            crate::services::keep_allocations(current, &mut new);
        }
        if spec_part(&new) != spec_part(current) {
            let g = current
                .pointer("/metadata/generation")
                .and_then(Value::as_i64)
                .unwrap_or(1);
            meta_mut(&mut new).insert("generation".into(), json!(g + 1));
        }
        normalize_quantities(&mut new);
        if crate::kinds::of(res).defaults_on_update && !status {
            defaults(res, &mut new);
        } else if !status {
            super::objects::normalize(res, &mut new);
        }
        if part == Part::Resize {
            // The object's own rules, and the resize's in place of the update's.
            self.validate(res, &new, None)?;
            let mut causes = Vec::new();
            super::subresources::resize_rules(current, &new, &mut causes);
            if !causes.is_empty() {
                return Err(ApiError::invalid(
                    res.group,
                    res.kind,
                    meta_str(&new, "name"),
                    causes,
                ));
            }
        } else {
            self.validate(res, &new, Some(current))?;
        }
        Ok(new)
    }

    /// The namespace of a new namespaced object exists and is not being terminated.
    pub(super) fn check_namespace(
        &self,
        res: &Resource,
        tenant: &str,
        ns: &str,
        name: &str,
    ) -> ApiResult<()> {
        let nso = self
            .store
            .get(&Key::new("namespaces", tenant, "", ns))
            .ok_or_else(|| ApiError::not_found("", "namespaces", ns))?;
        if nso.pointer("/metadata/deletionTimestamp").is_some() {
            return Err(ApiError::forbidden_msg(format!(
                "{} {name:?} is forbidden: unable to create new content in namespace {ns} because it is being terminated",
                res.plural
            )));
        }
        Ok(())
    }

    pub(super) fn check_fields(
        &self,
        res: &Resource,
        obj: &Value,
        q: &Query,
    ) -> ApiResult<Vec<String>> {
        self.unknown_fields(res, obj, field_validation(q)?)
    }

    pub(super) fn unknown_fields(
        &self,
        res: &Resource,
        obj: &Value,
        fv: FieldValidation,
    ) -> ApiResult<Vec<String>> {
        if fv == FieldValidation::Ignore {
            return Ok(Vec::new());
        }
        let unknown = self.openapi.unknown_fields(res.schema, obj);
        if unknown.is_empty() {
            return Ok(Vec::new());
        }
        let msgs: Vec<String> = unknown
            .iter()
            .map(|f| format!("unknown field {f:?}"))
            .collect();
        if fv == FieldValidation::Strict {
            let what = if msgs.len() == 1 {
                msgs[0].clone()
            } else {
                format!("[{}]", msgs.join(", "))
            };
            return Err(ApiError::bad_request(format!(
                "{} in version {:?} cannot be handled as a {}: strict decoding error: {what}",
                res.kind, res.version, res.kind
            )));
        }
        Ok(msgs)
    }

    pub(super) fn validate(
        &self,
        res: &Resource,
        obj: &Value,
        old: Option<&Value>,
    ) -> ApiResult<()> {
        validate::decode_typed(res, obj)?;
        let mut causes = Vec::new();
        validate::metadata(res, obj, &mut causes);
        validate::object(res, obj, &mut causes);
        if let (Some(old), Some(check)) = (old, crate::kinds::of(res).validate_update) {
            check(old, obj, &mut causes);
        }
        if causes.is_empty() {
            Ok(())
        } else {
            Err(ApiError::invalid(
                res.group,
                res.kind,
                meta_str(obj, "name"),
                causes,
            ))
        }
    }

    pub(super) async fn create(&self, t: &Target, req: &Request) -> ApiResult<Reply> {
        let body = parse_body(&req.headers, &req.body)?;
        let (mut obj, warnings) = self.prepare_create(t, req, body)?;
        self.admit(t.res, Write::Create(&mut obj))?;
        let name = meta_str(&obj, "name").to_string();
        if t.res.namespaced {
            let ns = t.namespace.as_deref().unwrap_or("");
            self.check_namespace(t.res, &t.tenant, ns, &name)?;
        }
        let key = t.key(&name);
        if dry_run(&req.query)? {
            if self.store.get(&key).is_some() {
                return Err(ApiError::already_exists(t.res.group, t.res.plural, &name));
            }
            return Ok(Reply::json(StatusCode::CREATED, &obj).warn(warnings));
        }
        let created = self.commit_create(t, key, obj).await?;
        Ok(Reply::json(StatusCode::CREATED, &created).warn(warnings))
    }

    /// The writes of an admitted new object: itself, its kind's companions and the hooks'.
    pub(super) fn create_ops(&self, t: &Target, key: Key, mut obj: Value) -> ApiResult<Vec<Op>> {
        let allocated = if t.res.group.is_empty() && t.res.plural == "services" {
            crate::services::allocate(
                &self.store,
                self.config.service_cidr,
                &key.tenant,
                &mut obj,
                None,
            )?
        } else {
            Vec::new()
        };
        let extra = match &self.hooks {
            Some(h) => h.also(
                t.res,
                &Committing {
                    key: &key,
                    old: None,
                    new: Some(&obj),
                    status: false,
                    bind: false,
                },
            ),
            None => Vec::new(),
        };
        let name = key.name.clone();
        let mut ops = vec![Op::Put {
            key,
            value: obj,
            pre: Precondition::Absent,
        }];
        ops.extend(companions(t, &name));
        ops.extend(extra);
        ops.extend(allocated);
        Ok(ops)
    }

    /// Commit an admitted new object ([`Api::create_ops`]) in one transaction; the object as
    /// stored.
    pub(super) async fn commit_create(
        &self,
        t: &Target,
        key: Key,
        obj: Value,
    ) -> ApiResult<Arc<Value>> {
        let name = key.name.clone();
        let evs = self
            .commit(self.create_ops(t, key, obj)?)
            .await
            .map_err(|e| store_err(t.res, &name, e))?;
        evs.first()
            .map(|e| e.object.clone())
            .ok_or_else(|| ApiError::internal("create"))
    }

    /// Apply an update body to `current`: keeps system fields, status vs spec split, generation.
    pub(super) fn merge_update(
        &self,
        t: &Target,
        current: &Value,
        mut body: Value,
        part: Part,
        q: &Query,
    ) -> ApiResult<(Value, Vec<String>)> {
        let res = t.res;
        let status = part == Part::Status;
        self.admit(res, Write::Update { current, status })?;
        if !body.is_object() {
            return Err(ApiError::bad_request(format!(
                "the body must be a {} object",
                res.kind
            )));
        }
        check_type_meta(res, &mut body)?;
        let name = t.name();
        let bname = meta_str(&body, "name");
        if !bname.is_empty() && bname != name {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({bname}) does not match the name on the URL ({name})"
            )));
        }
        let warnings = self.check_fields(res, &body, q)?;
        let buid = meta_str(&body, "uid");
        if !buid.is_empty() && buid != meta_str(current, "uid") {
            return Err(ApiError::conflict(
                res.group,
                res.plural,
                name,
                &format!(
                    "Precondition failed: UID in precondition: {buid}, UID in object meta: {}",
                    meta_str(current, "uid")
                ),
            ));
        }
        let mut new = if part == Part::Resize {
            super::subresources::resized(current, &body)
        } else if status {
            let mut n = current.clone();
            match body.get("status") {
                Some(s) => n["status"] = s.clone(),
                None => {
                    if let Some(o) = n.as_object_mut() {
                        o.remove("status");
                    }
                }
            }
            n
        } else {
            let mut n = body;
            if res.has_status {
                match current.get("status") {
                    Some(s) => n["status"] = s.clone(),
                    None => {
                        if let Some(o) = n.as_object_mut() {
                            o.remove("status");
                        }
                    }
                }
            }
            n
        };
        {
            let cm = current.get("metadata").cloned().unwrap_or(json!({}));
            let m = meta_mut(&mut new);
            for f in [
                "uid",
                "creationTimestamp",
                "tenant",
                "namespace",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "generation",
            ] {
                match cm.get(f) {
                    Some(v) => m.insert(f.into(), v.clone()),
                    None => m.remove(f),
                };
            }
            m.insert("name".into(), json!(name));
        }
        let new = self.finish_update(res, current, new, part)?;
        Ok((new, warnings))
    }

    /// Commit `new` over `current` (at version `pre`), finishing a deletion whose finalizers
    /// are gone (see [`finalized`]).
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn commit_update(
        &self,
        t: &Target,
        key: Key,
        current: &Value,
        new: Value,
        pre: Precondition,
        dry: bool,
        status: bool,
    ) -> ApiResult<Value> {
        let same = {
            let (mut a, mut b) = (current.clone(), new.clone());
            for v in [&mut a, &mut b] {
                meta_mut(v).remove("resourceVersion");
            }
            a == b
        };
        if same || dry {
            return Ok(if dry { new } else { current.clone() });
        }
        let ev = if finalized(t.res, current, &new) {
            self.write(t.res, key, current, None, pre, false).await
        } else {
            let mut new = new;
            let also = if t.res.group.is_empty() && t.res.plural == "services" && !status {
                crate::services::allocate(
                    &self.store,
                    self.config.service_cidr,
                    &key.tenant,
                    &mut new,
                    Some(current),
                )?
            } else {
                Vec::new()
            };
            self.write_as(t.res, key, current, Some(new), pre, status, false, also)
                .await
        }
        .map_err(|e| store_err(t.res, t.name(), e))?;
        Ok((*ev.object).clone())
    }

    pub(super) async fn update(
        &self,
        t: &Target,
        req: &Request,
        body: Value,
        part: Part,
    ) -> ApiResult<Reply> {
        let status = part == Part::Status;
        let key = t.key(t.name());
        let current = self
            .store
            .get(&key)
            .ok_or_else(|| ApiError::not_found(t.res.group, t.res.plural, t.name()))?;
        let brv = meta_str(&body, "resourceVersion").to_string();
        let pre = if brv.is_empty() {
            Precondition::Exists
        } else {
            let v = store::Position::revision_in(&brv, self.store.part_of(&key))
                .ok_or_else(|| ApiError::bad_request(format!("invalid resourceVersion {brv:?}")))?;
            if Some(v) != store::object_rv(&current) {
                return Err(ApiError::stale(t.res.group, t.res.plural, t.name()));
            }
            Precondition::Version(v)
        };
        let (new, warnings) = self.merge_update(t, &current, body, part, &req.query)?;
        let out = self
            .commit_update(t, key, &current, new, pre, dry_run(&req.query)?, status)
            .await?;
        Ok(Reply::json(StatusCode::OK, &out).warn(warnings))
    }

    pub(super) async fn patch(&self, t: &Target, req: &Request, part: Part) -> ApiResult<Reply> {
        let status = part == Part::Status;
        let ct = req
            .headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let kind = ct.split(';').next().unwrap_or("").trim().to_string();
        let strategic_ok = crate::kinds::of(t.res).strategic_merge;
        match kind.as_str() {
            "application/merge-patch+json" | "application/json-patch+json" => {}
            "application/strategic-merge-patch+json" if strategic_ok => {}
            "application/apply-patch+yaml" => {
                return Err(ApiError::unsupported_media_type("application/apply-patch+yaml (server-side apply is not supported yet; use client-side kubectl apply)"))
            }
            other => return Err(ApiError::unsupported_media_type(other)),
        }
        let p = parse_body(&req.headers, &req.body)?;
        let key = t.key(t.name());
        for _attempt in 0..16 {
            let current = self
                .store
                .get(&key)
                .ok_or_else(|| ApiError::not_found(t.res.group, t.res.plural, t.name()))?;
            let cur_rv = store::object_rv(&current).unwrap_or(0);
            let mut patched = (*current).clone();
            match kind.as_str() {
                "application/merge-patch+json" => {
                    if !p.is_object() {
                        return Err(ApiError::bad_request("a merge patch must be a JSON object"));
                    }
                    patch::merge_patch(&mut patched, &p)
                }
                "application/json-patch+json" => patch::json_patch(&mut patched, &p)
                    .map_err(|e| ApiError::unprocessable_patch(&e))?,
                _ => patch::strategic_merge(&mut patched, &p)
                    .map_err(|e| ApiError::unprocessable_patch(&e))?,
            }
            let prv = meta_str(&patched, "resourceVersion").to_string();
            let explicit = !prv.is_empty() && !self.names_revision(&key, &prv, cur_rv);
            if explicit {
                return Err(ApiError::stale(t.res.group, t.res.plural, t.name()));
            }
            meta_mut(&mut patched).insert("resourceVersion".into(), json!(cur_rv.to_string()));
            let (new, warnings) = self.merge_update(t, &current, patched, part, &req.query)?;
            match self
                .commit_update(
                    t,
                    key.clone(),
                    &current,
                    new,
                    Precondition::Version(cur_rv),
                    dry_run(&req.query)?,
                    status,
                )
                .await
            {
                Err(e) if e.code == 409 && e.reason == "Conflict" => {
                    self.after_conflict(t, t.name()).await?;
                    continue;
                }
                Err(e) => return Err(e),
                Ok(out) => return Ok(Reply::json(StatusCode::OK, &out).warn(warnings)),
            }
        }
        Err(ApiError::stale(t.res.group, t.res.plural, t.name()))
    }
}

pub(super) fn check_type_meta(res: &Resource, obj: &mut Value) -> ApiResult<()> {
    let want_av = res.api_version();
    match obj.get("apiVersion").and_then(Value::as_str) {
        Some(av) if !av.is_empty() && av != want_av => {
            return Err(ApiError::bad_request(format!("the API version in the data ({av}) does not match the expected API version ({want_av})")))
        }
        _ => {}
    }
    match obj.get("kind").and_then(Value::as_str) {
        Some(k) if !k.is_empty() && k != res.kind => {
            return Err(ApiError::bad_request(format!(
                "the kind in the data ({k}) does not match the expected kind ({})",
                res.kind
            )))
        }
        _ => {}
    }
    obj["apiVersion"] = json!(want_av);
    obj["kind"] = json!(res.kind);
    Ok(())
}

/// Whether an update of `current` to `new` finishes a deletion: `new` is terminating with no
/// finalizers left — unless it is a pod its node's agent is still stopping, or a namespace or
/// tenant (whose deletion waits on its contents: their controller removes it).
pub(super) fn finalized(res: &Resource, current: &Value, new: &Value) -> bool {
    let deletion = crate::kinds::of(res).deletion;
    new.pointer("/metadata/deletionTimestamp").is_some()
        && new
            .pointer("/metadata/finalizers")
            .and_then(Value::as_array)
            .is_none_or(Vec::is_empty)
        && !(deletion == Deletion::GracefulOnNode
            && new
                .pointer("/spec/nodeName")
                .is_some_and(|n| n.as_str() != Some(""))
            && current
                .pointer("/metadata/deletionGracePeriodSeconds")
                .and_then(Value::as_i64)
                .unwrap_or(0)
                > 0)
        && deletion != Deletion::Lifecycle
}
