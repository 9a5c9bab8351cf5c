//! Writers inside the control plane (controllers, schedulers): their writes take the path an
//! API request takes — type meta, defaults, validation, the namespace and tenant lifecycle,
//! admission hooks and the hooks' companion writes — under the writer's own identity, so a
//! controller cannot store what a client could not.

use super::*;

/// Whether `a` and `b` differ at most in their `status`.
fn same_but_status(a: &Value, b: &Value) -> bool {
    match (a.as_object(), b.as_object()) {
        (Some(a), Some(b)) => {
            let differs = |x: &Map<String, Value>, y: &Map<String, Value>| {
                x.iter().any(|(k, v)| k != "status" && y.get(k) != Some(v))
            };
            !differs(a, b) && !differs(b, a)
        }
        _ => false,
    }
}

/// A control-plane writer: reads from the API's store, writes through the API's rules.
#[derive(Clone)]
pub struct Writer {
    api: Arc<Api>,
    who: Identity,
}

/// The identity of a built-in component (`system:serviceaccount:kube-system:<name>`, the
/// form kube-controller-manager's controllers use), in the system space.
pub fn component(name: &str) -> Identity {
    Identity {
        tenant: String::new(),
        user: format!("system:serviceaccount:kube-system:{name}"),
        groups: vec![
            "system:serviceaccounts".into(),
            "system:serviceaccounts:kube-system".into(),
            "system:authenticated".into(),
        ],
    }
}

impl Writer {
    /// A writer acting as `who` through `api`.
    pub fn new(api: Arc<Api>, who: Identity) -> Self {
        Writer { api, who }
    }

    /// The store the API serves (reads only; writes go through the writer).
    pub fn store(&self) -> &Store {
        &self.api.store
    }

    fn resource(&self, key: &Key) -> ApiResult<&'static Resource> {
        resources::by_store_name(&key.resource)
            .ok_or_else(|| ApiError::not_found("", &key.resource, &key.name))
    }

    fn authorize(&self, verb: &str, res: &Resource, key: &Key) -> ApiResult<()> {
        let ns = res.namespaced.then_some(key.namespace.as_str());
        auth::authorize(&self.who, verb, res, &key.tenant, ns, &key.name)?;
        if !key.tenant.is_empty() {
            if let Some(h) = &self.api.hooks {
                h.tenant(&key.tenant, verb)?;
            }
        }
        Ok(())
    }

    fn target(res: &'static Resource, key: &Key) -> Target {
        Target {
            all_tenants: false,
            res,
            tenant: key.tenant.clone(),
            namespace: res.namespaced.then(|| key.namespace.clone()),
            name: Some(key.name.clone()),
            sub: None,
        }
    }

    /// Everything a `POST` of `obj` under `key` checks, without committing: its uid and
    /// creation time are kept when valid (a controller names what it creates before it exists),
    /// the origin annotation is the region's, and the namespace must exist and not be
    /// terminating. The writes to commit.
    fn admit_create(&self, key: &Key, mut obj: Value) -> ApiResult<(&'static Resource, Vec<Op>)> {
        let res = self.resource(key)?;
        self.authorize("create", res, key)?;
        if let Some(a) = obj
            .pointer_mut("/metadata/annotations")
            .and_then(Value::as_object_mut)
        {
            a.remove(proto::ORIGIN);
        }
        if obj.is_object() {
            meta_mut(&mut obj).insert("name".into(), json!(key.name));
        }
        let ns = res.namespaced.then_some(key.namespace.as_str());
        let (mut obj, _) =
            self.api
                .new_object(res, &key.tenant, ns, obj, FieldValidation::Ignore, true)?;
        self.api.admit(res, Write::Create(&mut obj))?;
        if !key.tenant.is_empty() {
            self.api.check_tenant(&key.tenant, "create")?;
        }
        if res.namespaced {
            self.api
                .check_namespace(res, &key.tenant, &key.namespace, &key.name)?;
        }
        let ops = self
            .api
            .create_ops(&Self::target(res, key), key.clone(), obj)?;
        Ok((res, ops))
    }

    /// Create `obj` under `key` as a `POST` would (see [`Writer::admit_create`]).
    pub async fn create(&self, key: &Key, obj: Value) -> ApiResult<Arc<Value>> {
        let (res, ops) = self.admit_create(key, obj)?;
        let evs = self
            .api
            .commit(ops)
            .await
            .map_err(|e| store_err(res, &key.name, e))?;
        evs.first()
            .map(|e| e.object.clone())
            .ok_or_else(|| ApiError::internal("create"))
    }

    /// The writes of `event` (an Event about a write, admitted as a create), to commit with
    /// that write; none if it is refused (the write goes on without it).
    fn event_ops(&self, event: Option<(Key, Value)>) -> Vec<Op> {
        let Some((key, ev)) = event else {
            return Vec::new();
        };
        match self.admit_create(&key, ev) {
            Ok((_, ops)) => ops,
            Err(e) => {
                tracing::debug!(event = %key.name, error = %e.message, "event refused; the write goes on without it");
                Vec::new()
            }
        }
    }

    /// Replace `current` (as read) with `new`, a compare-and-swap on `current`'s version, as a
    /// `PUT` would: generation follows spec changes, defaults and validation (immutable fields
    /// included) and admission apply. A `status` write goes as the status subresource's: only
    /// `new`'s status is taken, and only it is checked.
    pub async fn update(
        &self,
        key: &Key,
        current: &Value,
        new: Value,
        status: bool,
    ) -> ApiResult<Arc<Value>> {
        self.update_with(key, current, new, status, None).await
    }

    /// [`Writer::update`], with an Event about it committed in the same transaction.
    pub async fn update_with(
        &self,
        key: &Key,
        current: &Value,
        new: Value,
        status: bool,
        event: Option<(Key, Value)>,
    ) -> ApiResult<Arc<Value>> {
        let res = self.resource(key)?;
        self.authorize("update", res, key)?;
        self.api.admit(res, Write::Update { current, status })?;
        let new = if status {
            // As through the status subresource: only the status changes (the rest is the
            // stored, valid object), so only the status is checked.
            let status =
                validate::checked_status(res, new.get("status").cloned().unwrap_or(Value::Null))?;
            // `new` is usually `current` with another status: then it is used as it is (no
            // second copy of the object); otherwise only its status is taken.
            let mut n = if same_but_status(current, &new) {
                new
            } else {
                current.clone()
            };
            n["status"] = status;
            n
        } else {
            let new = self.api.finish_update(res, current, new, Part::Main)?;
            if write::finalized(res, current, &new) {
                // As a `PUT` removing the last finalizer of a terminating object: it goes.
                return self.commit_removal(res, key, current).await;
            }
            new
        };
        self.replace(res, key, current, Some(new), status, event)
            .await
    }

    /// Remove `current`, a terminating object with no finalizers left, whose deletion waits on
    /// what it holds rather than on finalizers (a namespace or tenant, once its controller has
    /// seen it empty). Anything else: 409.
    pub async fn remove(&self, key: &Key, current: &Value) -> ApiResult<Arc<Value>> {
        let res = self.resource(key)?;
        self.authorize("delete", res, key)?;
        let pending = current
            .pointer("/metadata/finalizers")
            .and_then(Value::as_array)
            .is_some_and(|f| !f.is_empty());
        if current.pointer("/metadata/deletionTimestamp").is_none() || pending {
            return Err(ApiError::conflict(
                res.group,
                res.plural,
                &key.name,
                "only a terminating object with no finalizers left can be removed",
            ));
        }
        self.commit_removal(res, key, current).await
    }

    /// The last step of a deletion, admitted as one: `current` goes (see [`Writer::replace`]).
    async fn commit_removal(
        &self,
        res: &Resource,
        key: &Key,
        current: &Value,
    ) -> ApiResult<Arc<Value>> {
        self.api.admit(res, Write::Delete { current })?;
        self.replace(res, key, current, None, false, None).await
    }

    /// Commit `new` over `current` (a compare-and-swap on its version; `None` removes it) with
    /// the hooks' writes and `event`'s, in one transaction.
    async fn replace(
        &self,
        res: &Resource,
        key: &Key,
        current: &Value,
        new: Option<Value>,
        status: bool,
        event: Option<(Key, Value)>,
    ) -> ApiResult<Arc<Value>> {
        let pre = store::object_rv(current).map_or(Precondition::Exists, Precondition::Version);
        let also = self.event_ops(event);
        let ev = self
            .api
            .write_as(res, key.clone(), current, new, pre, status, false, also)
            .await
            .map_err(|e| store_err(res, &key.name, e))?;
        Ok(ev.object.clone())
    }

    /// Bind the pod `current` (as read) to `node`, as `pods/binding` does, with an Event about
    /// it in the same transaction.
    pub async fn bind_with(
        &self,
        key: &Key,
        current: &Value,
        node: &str,
        event: Option<(Key, Value)>,
    ) -> ApiResult<Arc<Value>> {
        let res = self.resource(key)?;
        self.authorize("create", res, key)?;
        let also = self.event_ops(event);
        self.api.bind_pod(res, key, current, node, also).await
    }

    /// Place the pod `current` (as read, unbound) on edge site `site`, the cloud scheduler's
    /// binding to a site: like a binding it changes only what it is about (the placement
    /// annotation, and the cloud's own PodScheduled condition is dropped: the site sets it),
    /// admitted as an update, with an Event about it in the same transaction.
    pub async fn place_with(
        &self,
        key: &Key,
        current: &Value,
        site: &str,
        event: Option<(Key, Value)>,
    ) -> ApiResult<Arc<Value>> {
        let res = self.resource(key)?;
        self.authorize("update", res, key)?;
        if res.plural != "pods" || !current.is_object() {
            return Err(ApiError::bad_request("only pods are placed on sites"));
        }
        unbound(&key.name, current)?;
        if !validate::is_dns1123_label(site) {
            return Err(ApiError::bad_request(format!("invalid site name {site:?}")));
        }
        self.api.admit(
            res,
            Write::Update {
                current,
                status: false,
            },
        )?;
        let mut new = current.clone();
        let m = meta_mut(&mut new);
        if !m.get("annotations").is_some_and(Value::is_object) {
            m.insert("annotations".into(), json!({}));
        }
        new["metadata"]["annotations"][proto::SITE_ANNOTATION] = json!(site);
        if let Some(c) = new
            .pointer_mut("/status/conditions")
            .and_then(Value::as_array_mut)
        {
            c.retain(|c| c["type"] != "PodScheduled");
        }
        self.replace(res, key, current, Some(new), false, event)
            .await
    }

    /// Delete the object `current` is (its uid is the precondition) as a `DELETE` would:
    /// finalizers and propagation honoured, a pod on a node given `grace` seconds (`None`:
    /// its own period) for its agent to stop it.
    pub async fn delete(
        &self,
        key: &Key,
        current: &Value,
        grace: Option<i64>,
        propagation: Option<&str>,
    ) -> ApiResult<Value> {
        let res = self.resource(key)?;
        self.authorize("delete", res, key)?;
        let t = Self::target(res, key);
        let opts = DeleteOpts {
            grace,
            propagation: propagation.map(String::from),
            uid: Some(meta_str(current, "uid").to_string()).filter(|u| !u.is_empty()),
            ..Default::default()
        };
        self.api.delete_one(&t, key.clone(), &opts, false).await
    }
}
