//! Writers inside the control plane (controllers, schedulers): their writes take the path an
//! API request takes — type meta, defaults, validation, the namespace and tenant lifecycle,
//! admission hooks and the hooks' companion writes — under the writer's own identity, so a
//! controller cannot store what a client could not.

use super::*;

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

    /// Who writes.
    pub fn identity(&self) -> &Identity {
        &self.who
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

    /// Create `obj` under `key` as a `POST` would: its uid and creation time are kept when
    /// valid (a controller names what it creates before it exists), the origin annotation is
    /// the region's, and the namespace must exist and not be terminating.
    pub async fn create(&self, key: &Key, mut obj: Value) -> ApiResult<Arc<Value>> {
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
        self.api
            .commit_create(&Self::target(res, key), key.clone(), obj)
            .await
    }

    /// Replace `current` (as read) with `new`, a compare-and-swap on `current`'s version, as a
    /// `PUT` would: generation follows spec changes, defaults and validation (immutable fields
    /// included) and admission apply. `status` writes go as the status subresource's.
    pub async fn update(
        &self,
        key: &Key,
        current: &Value,
        new: Value,
        status: bool,
    ) -> ApiResult<Arc<Value>> {
        let res = self.resource(key)?;
        self.authorize("update", res, key)?;
        self.api.admit(res, Write::Update { current, status })?;
        let new = self.api.finish_update(res, current, new, status)?;
        let pre = store::object_rv(current).map_or(Precondition::Exists, Precondition::Version);
        let ev = self
            .api
            .write(res, key.clone(), current, Some(new), pre, status)
            .await
            .map_err(|e| store_err(res, &key.name, e))?;
        Ok(ev.object.clone())
    }

    /// Bind the pod `current` (as read) to `node`, as `pods/binding` does.
    pub async fn bind(&self, key: &Key, current: &Value, node: &str) -> ApiResult<Arc<Value>> {
        let res = self.resource(key)?;
        self.authorize("create", res, key)?;
        self.api.bind_pod(res, key, current, node).await
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
