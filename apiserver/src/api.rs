//! Request handling: routing, discovery, CRUD, patch, delete, watch, tables, subresources.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chrono::{SecondsFormat, Utc};
use http::{HeaderMap, Method, StatusCode};
use serde_json::{json, Map, Value};

use crate::auth::{self, Identity};
use crate::error::{ApiError, ApiResult, Cause};
use crate::openapi::{normalize_quantities, OpenApi};
use crate::path::{self, ResourcePath, Route};
use crate::resources::{self, Resource, Space, RESOURCES};
use crate::table::{self, Include};
use crate::{patch, validate};
use proto::selectors::{FieldSelector, LabelSelector};
use store::{Event, EventType, Key, Op, Precondition, Scope, Store, StoreError};

/// Internal resource holding edge join tokens by hash (never served).
pub const JOIN_TOKENS: &str = "jointokens";

/// Limits and knobs of the API.
#[derive(Clone, Debug)]
pub struct ApiConfig {
    /// Largest accepted request body.
    pub max_body: usize,
    /// Interval between watch bookmarks.
    pub bookmark_interval: Duration,
    /// Address advertised in `/api` discovery.
    pub advertise: String,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            max_body: 3 * 1024 * 1024,
            bookmark_interval: Duration::from_secs(10),
            advertise: "127.0.0.1:6443".into(),
        }
    }
}

/// A decided response (before transport encoding).
pub enum Reply {
    /// A complete JSON (or other) body.
    Full {
        /// HTTP status.
        status: StatusCode,
        /// Content type.
        content_type: &'static str,
        /// Body.
        body: Bytes,
        /// `Warning` headers.
        warnings: Vec<String>,
    },
    /// A watch stream: newline-delimited JSON events.
    Stream {
        /// Content type.
        content_type: &'static str,
        /// Event lines.
        rx: tokio::sync::mpsc::Receiver<Bytes>,
    },
}

impl Reply {
    fn json(status: StatusCode, v: &Value) -> Self {
        Reply::Full {
            status,
            content_type: "application/json",
            body: Bytes::from(serde_json::to_vec(v).unwrap_or_default()),
            warnings: Vec::new(),
        }
    }
    /// The error as a `Status` reply.
    pub fn error(e: &ApiError) -> Self {
        Reply::json(
            StatusCode::from_u16(e.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            &e.status(),
        )
    }
    fn warn(mut self, w: Vec<String>) -> Self {
        if let Reply::Full { warnings, .. } = &mut self {
            *warnings = w;
        }
        self
    }
}

pub use proto::query::Query;

/// The request as the handlers see it.
pub struct Request {
    /// Method.
    pub method: Method,
    /// Path without query.
    pub path: String,
    /// Query.
    pub query: Query,
    /// Headers.
    pub headers: HeaderMap,
    /// Body (already size-limited by the transport).
    pub body: Bytes,
}

/// The API: a store plus the generated schemas.
pub struct Api {
    /// The store.
    pub store: Store,
    /// OpenAPI documents and schemas.
    pub openapi: OpenApi,
    /// Knobs.
    pub config: ApiConfig,
    /// Admission and transaction hooks (edge-core's authority rules and outbox).
    pub hooks: Option<Arc<dyn Hooks>>,
    /// Where `pods/log` streams come from (set once by the core that runs this API).
    logs: std::sync::OnceLock<Arc<dyn crate::logs::LogSource>>,
}

/// A write seen by [`Hooks::admit`].
pub enum Write<'a> {
    /// A new object (the hook may annotate it).
    Create(&'a mut Value),
    /// A change of `current`; `status` when through the status subresource.
    Update {
        /// The stored object.
        current: &'a Value,
        /// Status subresource.
        status: bool,
    },
    /// A deletion (or a deletion request) of `current`.
    Delete {
        /// The stored object.
        current: &'a Value,
    },
}

/// A write about to be committed, as [`Hooks::also`] sees it.
pub struct Committing<'a> {
    /// The object's key.
    pub key: &'a Key,
    /// The stored object (`None` for a create).
    pub old: Option<&'a Value>,
    /// The new object (`None` for a deletion).
    pub new: Option<&'a Value>,
    /// Only the status changed, through its subresource.
    pub status: bool,
}

/// Extension points for a server that is not the source of truth for everything it serves.
pub trait Hooks: Send + Sync {
    /// Refuse or adjust a write before it is validated and committed.
    fn admit(&self, res: &Resource, write: Write<'_>) -> ApiResult<()>;
    /// Extra ops to commit in the same transaction as a write.
    fn also(&self, res: &Resource, write: &Committing<'_>) -> Vec<Op>;
    /// Refuse a write into `tenant`'s space before anything else is checked (an edge site
    /// refuses tenants it does not serve). `verb` is the request's verb.
    fn tenant(&self, _tenant: &str, _verb: &str) -> ApiResult<()> {
        Ok(())
    }
}

fn now() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn meta_str<'a>(v: &'a Value, f: &str) -> &'a str {
    v.get("metadata")
        .and_then(|m| m.get(f))
        .and_then(Value::as_str)
        .unwrap_or("")
}

fn meta_mut(v: &mut Value) -> &mut Map<String, Value> {
    if !v.get("metadata").is_some_and(Value::is_object) {
        v["metadata"] = json!({});
    }
    match v.get_mut("metadata") {
        Some(Value::Object(m)) => m,
        _ => unreachable!("metadata was just made an object"),
    }
}

fn store_err(res: &Resource, name: &str, e: StoreError) -> ApiError {
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
    }
}

/// The site-origin annotation is the region's to set (it decides who may write an object and
/// where it syncs): a write keeps the stored object's value, whatever the body says, and a new
/// object gets it only from the edge's hooks or the hub.
fn keep_origin(current: Option<&Value>, new: &mut Value) {
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

fn spec_part(v: &Value) -> Value {
    let mut c = v.clone();
    if let Some(o) = c.as_object_mut() {
        o.remove("metadata");
        o.remove("status");
        o.remove("kind");
        o.remove("apiVersion");
    }
    c
}

/// What the client accepts.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Accept {
    Json,
    Table,
}

fn accept(headers: &HeaderMap) -> ApiResult<Accept> {
    let a = headers
        .get(http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("*/*");
    let mut json_ok = false;
    for part in a.split(',') {
        let p = part.trim();
        if p.contains("as=Table")
            && p.contains("g=meta.k8s.io")
            && (p.contains("v=v1;") || p.ends_with("v=v1") || p.contains("v=v1beta1"))
        {
            return Ok(Accept::Table);
        }
        let mt = p.split(';').next().unwrap_or("").trim();
        if (mt == "application/json" && !p.contains("as="))
            || mt == "*/*"
            || mt == "application/*"
            || mt.is_empty()
        {
            json_ok = true;
        }
    }
    if json_ok {
        Ok(Accept::Json)
    } else {
        Err(ApiError::not_acceptable(format!("only the following media types are accepted: application/json, application/json;as=Table;v=v1;g=meta.k8s.io (asked for {a:?})")))
    }
}

fn parse_body(headers: &HeaderMap, body: &Bytes) -> ApiResult<Value> {
    let ct = headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json");
    let mt = ct.split(';').next().unwrap_or("").trim();
    let v: Value = match mt {
        "application/vnd.kubernetes.protobuf" => crate::protobuf::decode(body)
            .map_err(|e| ApiError::bad_request(format!("error decoding protobuf body: {e}")))?,
        "application/yaml" | "application/apply-patch+yaml" => serde_yaml::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("error decoding YAML body: {e}")))?,
        "application/json"
        | "application/merge-patch+json"
        | "application/json-patch+json"
        | "application/strategic-merge-patch+json"
        | "" => serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("error decoding JSON body: {e}")))?,
        other => return Err(ApiError::unsupported_media_type(other)),
    };
    Ok(v)
}

/// Field-validation directive.
#[derive(Clone, Copy, PartialEq, Debug)]
enum FieldValidation {
    Ignore,
    Warn,
    Strict,
}

fn field_validation(q: &Query) -> ApiResult<FieldValidation> {
    match q.get("fieldValidation") {
        None | Some("") | Some("Warn") => Ok(FieldValidation::Warn),
        Some("Strict") => Ok(FieldValidation::Strict),
        Some("Ignore") => Ok(FieldValidation::Ignore),
        Some(o) => Err(ApiError::bad_request(format!(
            "fieldValidation must be one of Ignore, Warn, Strict; got {o:?}"
        ))),
    }
}

fn dry_run(q: &Query) -> ApiResult<bool> {
    match q.get("dryRun") {
        None | Some("") => Ok(false),
        Some("All") => Ok(true),
        Some(o) => Err(ApiError::bad_request(format!(
            "dryRun must be All; got {o:?}"
        ))),
    }
}

/// Continue token: the list version and the last key returned.
fn encode_continue(rv: u64, k: &Key) -> String {
    use base64::Engine;
    let v = json!({"rv": rv, "k": [k.tenant, k.namespace, k.name]});
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
}

fn decode_continue(resource: &str, s: &str) -> ApiResult<(u64, Key)> {
    use base64::Engine;
    let bad = || ApiError::bad_request("continue key is not valid");
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s)
        .map_err(|_| bad())?;
    let v: Value = serde_json::from_slice(&raw).map_err(|_| bad())?;
    let rv = v.get("rv").and_then(Value::as_u64).ok_or_else(bad)?;
    let k = v
        .get("k")
        .and_then(Value::as_array)
        .filter(|a| a.len() == 3)
        .ok_or_else(bad)?;
    let part = |i: usize| k[i].as_str().map(String::from).ok_or_else(bad);
    Ok((
        rv,
        Key {
            resource: resource.into(),
            tenant: part(0)?,
            namespace: part(1)?,
            name: part(2)?,
        },
    ))
}

pub use crate::resources::ALL_TENANTS;

struct Target {
    /// `tenants/all`: the scope spans every tenant.
    all_tenants: bool,
    res: &'static Resource,
    tenant: String,
    namespace: Option<String>,
    name: Option<String>,
    sub: Option<String>,
}

impl Target {
    fn key(&self, name: &str) -> Key {
        Key::new(
            &self.res.store_name(),
            &self.tenant,
            self.namespace.as_deref().unwrap_or(""),
            name,
        )
    }
    fn scope(&self) -> Scope {
        Scope {
            resource: self.res.store_name(),
            tenant: (!self.all_tenants).then(|| self.tenant.clone()),
            namespace: self.namespace.clone(),
        }
    }
    fn name(&self) -> &str {
        self.name.as_deref().unwrap_or("")
    }
}

impl Api {
    /// Build the API over a store.
    pub fn new(store: Store, config: ApiConfig) -> Arc<Self> {
        Self::with_hooks(store, config, None)
    }

    /// Build the API with hooks.
    pub fn with_hooks(store: Store, config: ApiConfig, hooks: Option<Arc<dyn Hooks>>) -> Arc<Self> {
        Arc::new(Api {
            store,
            openapi: OpenApi::build(),
            config,
            hooks,
            logs: std::sync::OnceLock::new(),
        })
    }

    /// Serve `pods/log` from `source`; false if a source was already set.
    pub fn set_log_source(&self, source: Arc<dyn crate::logs::LogSource>) -> bool {
        self.logs.set(source).is_ok()
    }

    /// The one path for writes of API objects: adds the hooks' ops to the transaction.
    async fn write(
        &self,
        res: &Resource,
        key: Key,
        old: &Value,
        new: Option<Value>,
        pre: Precondition,
        status: bool,
    ) -> Result<Arc<Event>, StoreError> {
        let extra = match &self.hooks {
            Some(h) => h.also(
                res,
                &Committing {
                    key: &key,
                    old: Some(old),
                    new: new.as_ref(),
                    status,
                },
            ),
            None => Vec::new(),
        };
        let mut ops = vec![match new {
            Some(value) => Op::Put { key, value, pre },
            None => Op::Delete { key, pre },
        }];
        ops.extend(extra);
        let mut evs = self.store.commit(ops).await?;
        if evs.is_empty() {
            return Err(StoreError::Closed);
        }
        Ok(evs.swap_remove(0))
    }

    fn admit(&self, res: &Resource, w: Write<'_>) -> ApiResult<()> {
        match &self.hooks {
            Some(h) => h.admit(res, w),
            None => Ok(()),
        }
    }

    /// Identify the caller from the `Authorization` header.
    pub fn authenticate(&self, headers: &HeaderMap) -> Option<Identity> {
        let h = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
        let token = h
            .strip_prefix("Bearer ")
            .or_else(|| h.strip_prefix("bearer "))?
            .trim();
        if token.is_empty() {
            return None;
        }
        auth::authenticate(&self.store, token)
    }

    /// Handle one request.
    pub async fn handle(&self, req: Request) -> Reply {
        match self.route(req).await {
            Ok(r) => r,
            Err(e) => Reply::error(&e),
        }
    }

    async fn route(&self, req: Request) -> ApiResult<Reply> {
        let path = req.path.clone();
        match path.as_str() {
            "/healthz" | "/livez" | "/readyz" => {
                return Ok(Reply::Full {
                    status: StatusCode::OK,
                    content_type: "text/plain",
                    body: Bytes::from_static(b"ok"),
                    warnings: vec![],
                })
            }
            "/version" => {
                return Ok(Reply::json(
                    StatusCode::OK,
                    &json!({"major": "1", "minor": "32", "gitVersion": crate::VERSION, "gitCommit": "", "gitTreeState": "clean",
                        "buildDate": "", "goVersion": "", "compiler": "rustc", "platform": "linux/amd64"}),
                ))
            }
            _ => {}
        }
        let id = self
            .authenticate(&req.headers)
            .ok_or_else(ApiError::unauthorized)?;
        let span = tracing::debug_span!("request", method = %req.method, path = %path, user = %id.user, tenant = %id.tenant);
        let _g = span.enter();
        if path == "/openapi/v3" || path == "/openapi/v3/" {
            return Ok(Reply::Full {
                status: StatusCode::OK,
                content_type: "application/json",
                body: self.openapi.index(),
                warnings: vec![],
            });
        }
        if path == "/openapi/v2" || path == "/openapi/v2/" {
            let accept = req
                .headers
                .get(http::header::ACCEPT)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            let pb = accept.contains("protobuf");
            return Ok(Reply::Full {
                status: StatusCode::OK,
                content_type: if pb {
                    crate::openapi_v2::PROTOBUF
                } else {
                    "application/json"
                },
                body: self.openapi.v2(pb),
                warnings: vec![],
            });
        }
        if let Some(gv) = path.strip_prefix("/openapi/v3/") {
            return match self.openapi.doc(gv) {
                Some(body) => Ok(Reply::Full {
                    status: StatusCode::OK,
                    content_type: "application/json",
                    body,
                    warnings: vec![],
                }),
                None => Err(ApiError::no_route(&path)),
            };
        }
        match path::parse(&path).ok_or_else(|| ApiError::no_route(&path))? {
            Route::CoreVersions => Ok(Reply::json(
                StatusCode::OK,
                &json!({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": self.config.advertise}]}),
            )),
            Route::Groups => {
                let groups: Vec<Value> = resources::groups()
                    .iter()
                    .map(|(g, v)| group_json(g, v))
                    .collect();
                Ok(Reply::json(
                    StatusCode::OK,
                    &json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}),
                ))
            }
            Route::Group(g) => {
                let v = resources::groups()
                    .into_iter()
                    .find(|(gg, _)| *gg == g)
                    .map(|(_, v)| v)
                    .unwrap_or("v1");
                let mut j = group_json(&g, v);
                j["kind"] = json!("APIGroup");
                j["apiVersion"] = json!("v1");
                Ok(Reply::json(StatusCode::OK, &j))
            }
            Route::ResourceList(g, v) => Ok(Reply::json(StatusCode::OK, &resource_list(&g, &v))),
            Route::Resource(rp) => self.resource(req, id, rp).await,
        }
    }

    async fn resource(&self, req: Request, id: Identity, rp: ResourcePath) -> ApiResult<Reply> {
        let res = rp.resource;
        let mut tenant = rp.tenant.clone().unwrap_or_else(|| id.tenant.clone());
        if res.space == Space::System {
            if rp.tenant.is_some() {
                return Err(ApiError::no_route(&req.path));
            }
            tenant = String::new();
        }
        // `tenants/all/...` (Arktos): list or watch across every tenant; system admins only
        // (node agents see every tenant's pods bound to their node this way).
        let all_tenants = rp.tenant.as_deref() == Some(ALL_TENANTS);
        if all_tenants {
            if !id.is_system_admin() {
                return Err(ApiError::forbidden_msg(format!(
                    "{} is forbidden: only system administrators may read across all tenants",
                    res.plural
                )));
            }
            let reads = req.method == Method::GET && rp.name.is_none() && rp.subresource.is_none();
            if !reads {
                return Err(ApiError::method_not_allowed(
                    req.method.as_str(),
                    &format!("tenants/{ALL_TENANTS}/{}", res.plural),
                ));
            }
            tenant = String::new();
        }
        let t = Target {
            all_tenants,
            res,
            tenant,
            namespace: rp.namespace.clone(),
            name: rp.name.clone(),
            sub: rp.subresource.clone(),
        };
        let watch = rp.watch || req.query.flag("watch");
        let verb = match (&req.method, t.name.is_some()) {
            (&Method::GET, _) if watch => "watch",
            (&Method::GET, true) => "get",
            (&Method::GET, false) => "list",
            (&Method::POST, _) => "create",
            (&Method::PUT, _) => "update",
            (&Method::PATCH, _) => "patch",
            (&Method::DELETE, true) => "delete",
            (&Method::DELETE, false) => "deletecollection",
            (m, _) => return Err(ApiError::method_not_allowed(m.as_str(), &req.path)),
        };
        auth::authorize(&id, verb, res, &t.tenant, t.namespace.as_deref(), t.name())?;
        if !t.tenant.is_empty() {
            if let Some(h) = &self.hooks {
                h.tenant(&t.tenant, verb)?;
            }
            self.check_tenant(&t.tenant, verb)?;
        }
        match (verb, t.sub.as_deref()) {
            ("get", None) => self.get(&t, &req),
            ("get", Some("status")) => self.get(&t, &req),
            ("get", Some("log")) => self.pod_log(&t, &req).await,
            ("list", _) => self.list(&t, &req),
            ("watch", _) => self.watch(&t, &req),
            ("create", None) => {
                if t.name.is_some() {
                    return Err(ApiError::method_not_allowed("POST", &req.path));
                }
                self.create(&t, &req).await
            }
            ("create", Some("token")) => self.token_request(&t, &req, &id).await,
            ("create", Some("eviction")) if res.plural == "pods" => self.evict(&t, &req).await,
            ("create", Some("binding")) => self.bind(&t, &req).await,
            ("update", sub @ (None | Some("status") | Some("finalize"))) => {
                let body = parse_body(&req.headers, &req.body)?;
                self.update(&t, &req, body, sub == Some("status")).await
            }
            ("patch", sub @ (None | Some("status"))) => {
                self.patch(&t, &req, sub == Some("status")).await
            }
            ("get" | "update" | "patch", Some("scale")) => self.scale(&t, &req, verb).await,
            ("delete", None) => self.delete(&t, &req).await,
            ("deletecollection", None) => self.delete_collection(&t, &req).await,
            (v, Some(s)) => Err(ApiError::method_not_allowed(
                v,
                &format!("{}/{s}", res.plural),
            )),
            (v, None) => Err(ApiError::method_not_allowed(v, res.plural)),
        }
    }

    fn check_tenant(&self, tenant: &str, verb: &str) -> ApiResult<()> {
        let t = self
            .store
            .get(&Key::new("tenants", "", "", tenant))
            .ok_or_else(|| ApiError::not_found("", "tenants", tenant))?;
        if verb == "create" && t.pointer("/metadata/deletionTimestamp").is_some() {
            return Err(ApiError::forbidden_msg(format!(
                "unable to create new content in tenant {tenant} because it is being terminated"
            )));
        }
        Ok(())
    }

    fn get(&self, t: &Target, req: &Request) -> ApiResult<Reply> {
        let obj = self
            .store
            .get(&t.key(t.name()))
            .ok_or_else(|| ApiError::not_found(t.res.group, t.res.plural, t.name()))?;
        match accept(&req.headers)? {
            Accept::Table => {
                let include = Include::parse(req.query.get("includeObject"))
                    .map_err(ApiError::bad_request)?;
                let tbl = table::table(
                    t.res.plural,
                    &[&*obj],
                    meta_str(&obj, "resourceVersion"),
                    None,
                    include,
                );
                Ok(Reply::json(StatusCode::OK, &tbl))
            }
            Accept::Json => Ok(Reply::json(StatusCode::OK, &obj)),
        }
    }

    /// `GET pods/{name}/log`: validated here, streamed from the log source as `text/plain`.
    async fn pod_log(&self, t: &Target, req: &Request) -> ApiResult<Reply> {
        let opts = crate::logs::LogOptions::from_query(&req.query, t.name())?;
        let ns = t.namespace.as_deref().unwrap_or("");
        let Some(target) = crate::logs::resolve(&self.store, &t.tenant, ns, t.name(), opts)? else {
            // Not scheduled yet: kube-apiserver answers an empty log.
            return Ok(Reply::Full {
                status: StatusCode::OK,
                content_type: "text/plain",
                body: Bytes::new(),
                warnings: vec![],
            });
        };
        let source = self
            .logs
            .get()
            .ok_or_else(|| ApiError::unavailable("this server does not serve pod logs"))?;
        let rx = source.open(target).await?;
        Ok(Reply::Stream {
            content_type: "text/plain",
            rx,
        })
    }

    fn selectors(&self, t: &Target, q: &Query) -> ApiResult<(LabelSelector, FieldSelector)> {
        let ls = LabelSelector::parse(q.get("labelSelector").unwrap_or(""))
            .map_err(ApiError::bad_request)?;
        let fs = FieldSelector::parse(q.get("fieldSelector").unwrap_or(""), t.res.plural)
            .map_err(ApiError::bad_request)?;
        Ok((ls, fs))
    }

    fn list(&self, t: &Target, req: &Request) -> ApiResult<Reply> {
        let (ls, fs) = self.selectors(t, &req.query)?;
        let limit: usize = match req.query.get("limit") {
            None | Some("") | Some("0") => usize::MAX,
            Some(l) => l.parse().map_err(|_| {
                ApiError::bad_request(format!("limit must be a non-negative integer; got {l:?}"))
            })?,
        };
        let after = match req.query.get("continue").filter(|c| !c.is_empty()) {
            Some(c) => Some(decode_continue(&t.res.store_name(), c)?),
            None => None,
        };
        let (rv, items) = self.store.list(&t.scope(), after.as_ref().map(|(_, k)| k));
        let list_rv = after.as_ref().map_or(rv, |(rv, _)| *rv);
        let mut out: Vec<Arc<Value>> = Vec::new();
        let mut remaining = 0usize;
        for (_, v) in items.iter() {
            if !(ls.matches(v) && fs.matches(v)) {
                continue;
            }
            if out.len() == limit {
                remaining += 1;
            } else {
                out.push(v.clone());
            }
        }
        let cont = match out.last() {
            Some(last) if remaining > 0 => Some(encode_continue(list_rv, &t.key_for(last))),
            _ => None,
        };
        match accept(&req.headers)? {
            Accept::Table => {
                let include = Include::parse(req.query.get("includeObject"))
                    .map_err(ApiError::bad_request)?;
                let refs: Vec<&Value> = out.iter().map(|v| &**v).collect();
                Ok(Reply::json(
                    StatusCode::OK,
                    &table::table(
                        t.res.plural,
                        &refs,
                        &list_rv.to_string(),
                        cont.as_deref(),
                        include,
                    ),
                ))
            }
            Accept::Json => {
                let mut meta = json!({"resourceVersion": list_rv.to_string()});
                if let Some(c) = &cont {
                    meta["continue"] = json!(c);
                    if ls.is_empty() && fs.0.is_empty() {
                        meta["remainingItemCount"] = json!(remaining);
                    }
                }
                let items: Vec<&Value> = out.iter().map(|v| &**v).collect();
                Ok(Reply::json(
                    StatusCode::OK,
                    &json!({"kind": t.res.list_kind(), "apiVersion": t.res.api_version(), "metadata": meta, "items": items}),
                ))
            }
        }
    }

    /// Prepare a new object from a create body: identity fields, defaults, validation.
    fn prepare_create(
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
    fn new_object(
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
        self.finish_update(res, current, new, false)
    }

    /// The end of every update: the origin annotation kept, generation bumped on a spec
    /// change, quantities normalised, defaults (workloads and secrets, not through status)
    /// and validation against the stored object.
    fn finish_update(
        &self,
        res: &Resource,
        current: &Value,
        mut new: Value,
        status: bool,
    ) -> ApiResult<Value> {
        keep_origin(Some(current), &mut new);
        if spec_part(&new) != spec_part(current) {
            let g = current
                .pointer("/metadata/generation")
                .and_then(Value::as_i64)
                .unwrap_or(1);
            meta_mut(&mut new).insert("generation".into(), json!(g + 1));
        }
        normalize_quantities(&mut new);
        if matches!(
            res.plural,
            "secrets" | "deployments" | "replicasets" | "daemonsets"
        ) && !status
        {
            defaults(res, &mut new);
        }
        self.validate(res, &new, Some(current))?;
        Ok(new)
    }

    /// The namespace of a new namespaced object exists and is not being terminated.
    fn check_namespace(&self, res: &Resource, tenant: &str, ns: &str, name: &str) -> ApiResult<()> {
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

    fn check_fields(&self, res: &Resource, obj: &Value, q: &Query) -> ApiResult<Vec<String>> {
        self.unknown_fields(res, obj, field_validation(q)?)
    }

    fn unknown_fields(
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

    fn validate(&self, res: &Resource, obj: &Value, old: Option<&Value>) -> ApiResult<()> {
        validate::decode_typed(res, obj)?;
        let mut causes = Vec::new();
        validate::metadata(res, obj, &mut causes);
        validate::object(res, obj, &mut causes);
        if let (Some(old), "pods") = (old, res.plural) {
            validate::pod_spec_update(old, obj, &mut causes);
        }
        if let (Some(old), "deployments" | "replicasets" | "daemonsets") = (old, res.plural) {
            validate::workload_update(old, obj, &mut causes);
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

    async fn create(&self, t: &Target, req: &Request) -> ApiResult<Reply> {
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
        let extra = match &self.hooks {
            Some(h) => h.also(
                t.res,
                &Committing {
                    key: &key,
                    old: None,
                    new: Some(&obj),
                    status: false,
                },
            ),
            None => Vec::new(),
        };
        let mut ops = vec![Op::Put {
            key,
            value: obj,
            pre: Precondition::Absent,
        }];
        ops.extend(companions(t, &name));
        ops.extend(extra);
        let evs = self
            .store
            .commit(ops)
            .await
            .map_err(|e| store_err(t.res, &name, e))?;
        let created = evs
            .first()
            .map(|e| e.object.clone())
            .ok_or_else(|| ApiError::internal("create"))?;
        Ok(Reply::json(StatusCode::CREATED, &created).warn(warnings))
    }

    /// Apply an update body to `current`: keeps system fields, status vs spec split, generation.
    fn merge_update(
        &self,
        t: &Target,
        current: &Value,
        mut body: Value,
        status: bool,
        q: &Query,
    ) -> ApiResult<(Value, Vec<String>)> {
        let res = t.res;
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
        let mut new = if status {
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
        let new = self.finish_update(res, current, new, status)?;
        Ok((new, warnings))
    }

    /// Commit `new` over `current` (at version `pre`), finishing a deletion whose finalizers
    /// are gone.
    #[allow(clippy::too_many_arguments)]
    async fn commit_update(
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
        let finalized = new.pointer("/metadata/deletionTimestamp").is_some()
            && new
                .pointer("/metadata/finalizers")
                .and_then(Value::as_array)
                .is_none_or(Vec::is_empty)
            && !(t.res.plural == "pods"
                && new
                    .pointer("/spec/nodeName")
                    .is_some_and(|n| n.as_str() != Some(""))
                && current
                    .pointer("/metadata/deletionGracePeriodSeconds")
                    .and_then(Value::as_i64)
                    .unwrap_or(0)
                    > 0)
            && !matches!(t.res.plural, "namespaces" | "tenants");
        let ev = if finalized {
            self.write(t.res, key, current, None, pre, false).await
        } else {
            self.write(t.res, key, current, Some(new), pre, status)
                .await
        }
        .map_err(|e| store_err(t.res, t.name(), e))?;
        Ok((*ev.object).clone())
    }

    async fn update(
        &self,
        t: &Target,
        req: &Request,
        body: Value,
        status: bool,
    ) -> ApiResult<Reply> {
        let key = t.key(t.name());
        let current = self
            .store
            .get(&key)
            .ok_or_else(|| ApiError::not_found(t.res.group, t.res.plural, t.name()))?;
        let brv = meta_str(&body, "resourceVersion").to_string();
        let pre = if brv.is_empty() {
            Precondition::Exists
        } else {
            let v = brv
                .parse()
                .map_err(|_| ApiError::bad_request(format!("invalid resourceVersion {brv:?}")))?;
            if Some(v) != store::object_rv(&current) {
                return Err(ApiError::stale(t.res.group, t.res.plural, t.name()));
            }
            Precondition::Version(v)
        };
        let (new, warnings) = self.merge_update(t, &current, body, status, &req.query)?;
        let out = self
            .commit_update(t, key, &current, new, pre, dry_run(&req.query)?, status)
            .await?;
        Ok(Reply::json(StatusCode::OK, &out).warn(warnings))
    }

    async fn patch(&self, t: &Target, req: &Request, status: bool) -> ApiResult<Reply> {
        let ct = req
            .headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let kind = ct.split(';').next().unwrap_or("").trim().to_string();
        let strategic_ok = !matches!(t.res.plural, "tenants" | "edgesites");
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
            let explicit = !prv.is_empty() && prv != cur_rv.to_string();
            if explicit {
                return Err(ApiError::stale(t.res.group, t.res.plural, t.name()));
            }
            meta_mut(&mut patched).insert("resourceVersion".into(), json!(cur_rv.to_string()));
            let (new, warnings) = self.merge_update(t, &current, patched, status, &req.query)?;
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
                Err(e) if e.code == 409 && e.reason == "Conflict" => continue,
                Err(e) => return Err(e),
                Ok(out) => return Ok(Reply::json(StatusCode::OK, &out).warn(warnings)),
            }
        }
        Err(ApiError::stale(t.res.group, t.res.plural, t.name()))
    }

    async fn delete(&self, t: &Target, req: &Request) -> ApiResult<Reply> {
        let opts = delete_options(req)?;
        let key = t.key(t.name());
        let out = self
            .delete_one(t, key, &opts, dry_run(&req.query)? || opts.dry_run)
            .await?;
        Ok(Reply::json(StatusCode::OK, &out))
    }

    async fn delete_one(
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
                if *prv != rv.to_string() {
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
            let graceful_pod = t.res.plural == "pods"
                && current
                    .pointer("/spec/nodeName")
                    .and_then(Value::as_str)
                    .is_some_and(|n| !n.is_empty())
                && opts.grace != Some(0)
                && current
                    .pointer("/status/phase")
                    .and_then(Value::as_str)
                    .is_none_or(|p| p != "Succeeded" && p != "Failed");
            let lifecycle = matches!(t.res.plural, "namespaces" | "tenants");
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
                    Err(StoreError::Conflict(_)) => continue,
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
                Err(StoreError::Conflict(_)) => continue,
                Err(e) => return Err(store_err(t.res, &name, e)),
            }
        }
        Err(ApiError::stale(t.res.group, t.res.plural, &name))
    }

    fn has_dependents(&self, owner: &Value) -> bool {
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

    async fn delete_collection(&self, t: &Target, req: &Request) -> ApiResult<Reply> {
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

    fn watch(&self, t: &Target, req: &Request) -> ApiResult<Reply> {
        let (ls, mut fs) = self.selectors(t, &req.query)?;
        if let Some(n) = &t.name {
            fs.0.push(proto::selectors::FieldReq {
                field: "metadata.name".into(),
                value: n.clone(),
                negate: false,
            });
        }
        let acc = accept(&req.headers)?;
        let bookmarks = req.query.flag("allowWatchBookmarks");
        let timeout = match req.query.get("timeoutSeconds") {
            Some(s) if !s.is_empty() => Duration::from_secs(
                s.parse()
                    .map_err(|_| ApiError::bad_request(format!("invalid timeoutSeconds {s:?}")))?,
            ),
            _ => Duration::from_secs(1800),
        };
        let send_initial = req.query.flag("sendInitialEvents");
        let rv = req.query.get("resourceVersion").unwrap_or("");
        let scope = t.scope();
        let (initial, replay, from, live) = if rv.is_empty() || rv == "0" || send_initial {
            let (rv, items, live) = self.store.list_and_watch(&scope);
            (
                items.into_iter().map(|(_, v)| v).collect(),
                Vec::new(),
                rv,
                live,
            )
        } else {
            let from: u64 = rv
                .parse()
                .map_err(|_| ApiError::bad_request(format!("invalid resourceVersion {rv:?}")))?;
            match self.store.watch(from) {
                Ok(w) => (Vec::new(), w.replay, from, w.live),
                Err(StoreError::Gone { requested, oldest }) => {
                    // Kubernetes answers 200 with an ERROR event carrying the 410 Status.
                    let (tx, rx) = tokio::sync::mpsc::channel(1);
                    let e =
                        ApiError::gone(format!("too old resource version: {requested} ({oldest})"));
                    let line = json!({"type": "ERROR", "object": e.status()});
                    let _ = tx.try_send(Bytes::from(format!("{line}\n")));
                    return Ok(Reply::Stream {
                        content_type: content_type(acc),
                        rx,
                    });
                }
                Err(e) => return Err(store_err(t.res, "", e)),
            }
        };
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        let ctx = WatchCtx {
            plural: t.res.plural,
            kind: t.res.kind,
            api_version: t.res.api_version(),
            scope,
            ls,
            fs,
            acc,
            bookmarks,
            timeout,
            interval: self.config.bookmark_interval,
            initial_end: send_initial,
        };
        // Replayed events go through the same selector translation as live ones.
        tokio::spawn(ctx.run(tx, initial, replay, from, live));
        Ok(Reply::Stream {
            content_type: content_type(acc),
            rx,
        })
    }

    async fn token_request(
        &self,
        t: &Target,
        req: &Request,
        caller: &Identity,
    ) -> ApiResult<Reply> {
        let body = parse_body(&req.headers, &req.body)?;
        let secs = body
            .pointer("/spec/expirationSeconds")
            .and_then(Value::as_i64);
        let min = if t.res.plural == "edgesites" { 1 } else { 600 };
        if let Some(s) = secs.filter(|s| *s < min) {
            return Err(ApiError::invalid(
                "authentication.k8s.io",
                "TokenRequest",
                t.name(),
                vec![Cause::invalid(
                    "spec.expirationSeconds",
                    &s.to_string(),
                    &format!("may not specify a duration less than {min} seconds"),
                )],
            ));
        }
        if t.res.plural == "edgesites" {
            return self.join_token(t, caller, secs).await;
        }
        let (id, expires, bound_key, bound_uid) = match t.res.plural {
            "serviceaccounts" => {
                let key = t.key(t.name());
                let sa = self
                    .store
                    .get(&key)
                    .ok_or_else(|| ApiError::not_found("", "serviceaccounts", t.name()))?;
                let ns = t.namespace.clone().unwrap_or_default();
                let id = Identity {
                    tenant: t.tenant.clone(),
                    user: format!("system:serviceaccount:{ns}:{}", t.name()),
                    groups: vec![
                        "system:serviceaccounts".into(),
                        format!("system:serviceaccounts:{ns}"),
                        "system:authenticated".into(),
                    ],
                };
                let exp = Utc::now() + chrono::Duration::seconds(secs.unwrap_or(3600));
                (id, Some(exp), Some(key), meta_str(&sa, "uid").to_string())
            }
            "tenants" => {
                if !caller.is_system_admin() {
                    return Err(ApiError::forbidden(
                        &caller.user,
                        "create",
                        "",
                        "tenants/token",
                        t.name(),
                        " at the cluster scope",
                    ));
                }
                let key = Key::new("tenants", "", "", t.name());
                let tn = self
                    .store
                    .get(&key)
                    .ok_or_else(|| ApiError::not_found("", "tenants", t.name()))?;
                let user = body
                    .pointer("/metadata/name")
                    .and_then(Value::as_str)
                    .filter(|u| !u.is_empty())
                    .unwrap_or("admin");
                let id = Identity {
                    tenant: t.name().to_string(),
                    user: user.to_string(),
                    groups: vec!["system:tenant-admins".into(), "system:authenticated".into()],
                };
                let exp = secs.map(|s| Utc::now() + chrono::Duration::seconds(s));
                (id, exp, Some(key), meta_str(&tn, "uid").to_string())
            }
            _ => {
                return Err(ApiError::method_not_allowed(
                    "create",
                    &format!("{}/token", t.res.plural),
                ))
            }
        };
        let token = auth::new_token();
        let rec = auth::token_record(
            &id,
            expires,
            bound_key.as_ref().map(|k| (k, bound_uid.as_str())),
        );
        let mut rec = rec;
        rec["metadata"]["name"] = json!(auth::hash_token(&token));
        self.store
            .put(auth::token_key(&token), rec, Precondition::Absent)
            .await
            .map_err(|e| store_err(t.res, t.name(), e))?;
        tracing::info!(tenant = %id.tenant, user = %id.user, "issued token");
        let exp = expires.unwrap_or_else(|| Utc::now() + chrono::Duration::days(365 * 100));
        let mut out = json!({
            "kind": "TokenRequest", "apiVersion": "authentication.k8s.io/v1",
            "metadata": {"name": t.name(), "namespace": t.namespace, "creationTimestamp": null},
            "spec": body.get("spec").cloned().unwrap_or(json!({})),
            "status": {"token": token, "expirationTimestamp": exp.to_rfc3339_opts(SecondsFormat::Secs, true)},
        });
        if t.namespace.is_none() {
            if let Some(m) = out["metadata"].as_object_mut() {
                m.remove("namespace");
            }
        }
        Ok(Reply::json(StatusCode::CREATED, &out))
    }

    /// Mint a single-use, expiring join token for an edge site (stored hashed).
    async fn join_token(
        &self,
        t: &Target,
        caller: &Identity,
        secs: Option<i64>,
    ) -> ApiResult<Reply> {
        if !caller.is_system_admin() {
            return Err(ApiError::forbidden(
                &caller.user,
                "create",
                "edge.atoll.io",
                "edgesites/token",
                t.name(),
                " at the cluster scope",
            ));
        }
        let key = t.key(t.name());
        self.store
            .get(&key)
            .ok_or_else(|| ApiError::not_found("edge.atoll.io", "edgesites", t.name()))?;
        let secret = auth::new_token();
        let expires = Utc::now() + chrono::Duration::seconds(secs.unwrap_or(3600));
        let rec = json!({"metadata": {"name": auth::hash_token(&secret)}, "site": t.name(), "used": false,
            "expires": expires.to_rfc3339_opts(SecondsFormat::Secs, true)});
        self.store
            .put(
                Key::new(JOIN_TOKENS, "", "", &auth::hash_token(&secret)),
                rec,
                Precondition::Absent,
            )
            .await
            .map_err(|e| store_err(t.res, t.name(), e))?;
        tracing::info!(site = %t.name(), "issued join token");
        Ok(Reply::json(
            StatusCode::CREATED,
            &json!({"kind": "TokenRequest", "apiVersion": "authentication.k8s.io/v1", "metadata": {"name": t.name()},
                "spec": {}, "status": {"token": secret, "expirationTimestamp": expires.to_rfc3339_opts(SecondsFormat::Secs, true)}}),
        ))
    }

    /// `POST pods/{name}/eviction` (policy/v1 `Eviction`, what `kubectl drain` sends): a
    /// deletion with the eviction's delete options. No PodDisruptionBudgets are served, so
    /// nothing ever holds an eviction back.
    async fn evict(&self, t: &Target, req: &Request) -> ApiResult<Reply> {
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

    async fn bind(&self, t: &Target, req: &Request) -> ApiResult<Reply> {
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
        if current
            .pointer("/spec/nodeName")
            .and_then(Value::as_str)
            .is_some_and(|n| !n.is_empty())
        {
            return Err(ApiError::conflict(
                "",
                "pods",
                t.name(),
                &format!(
                    "pod {} is already assigned to node {:?}",
                    t.name(),
                    current
                        .pointer("/spec/nodeName")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                ),
            ));
        }
        let rv = store::object_rv(&current).unwrap_or(0);
        let mut new = (*current).clone();
        new["spec"]["nodeName"] = json!(node);
        set_condition(&mut new, "PodScheduled", "True", "", "");
        self.store
            .put(key, new, Precondition::Version(rv))
            .await
            .map_err(|e| store_err(t.res, t.name(), e))?;
        Ok(Reply::json(
            StatusCode::CREATED,
            &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
        ))
    }
}

impl Target {
    fn key_for(&self, o: &Value) -> Key {
        Key::new(
            &self.res.store_name(),
            &self.tenant,
            meta_str(o, "namespace"),
            meta_str(o, "name"),
        )
    }
}

impl Api {
    /// The `scale` subresource (autoscaling/v1 `Scale`) of Deployments and ReplicaSets: GET, PUT
    /// and PATCH read and write `spec.replicas`.
    async fn scale(&self, t: &Target, req: &Request, verb: &str) -> ApiResult<Reply> {
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
                    if !brv.is_empty() && brv != cur_rv.to_string() {
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
                    if !prv.is_empty() && prv != cur_rv.to_string() {
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

struct DeleteOpts {
    grace: Option<i64>,
    propagation: Option<String>,
    uid: Option<String>,
    resource_version: Option<String>,
    dry_run: bool,
}

fn delete_options(req: &Request) -> ApiResult<DeleteOpts> {
    let body: Value = if req.body.iter().all(u8::is_ascii_whitespace) {
        json!({})
    } else {
        parse_body(&req.headers, &req.body)?
    };
    delete_options_of(&body, &req.query)
}

/// Delete options from a `DeleteOptions` body (or `{}`) and the query.
fn delete_options_of(body: &Value, q: &Query) -> ApiResult<DeleteOpts> {
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

fn check_type_meta(res: &Resource, obj: &mut Value) -> ApiResult<()> {
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

fn random_suffix() -> String {
    use rand::Rng;
    const ALPHA: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut r = rand::thread_rng();
    (0..5)
        .map(|_| ALPHA[r.gen_range(0..ALPHA.len())] as char)
        .collect()
}

/// Defaults kube-apiserver applies on create (and, for workloads, on update).
pub fn defaults(res: &Resource, obj: &mut Value) {
    match res.plural {
        "deployments" | "replicasets" | "daemonsets" => {
            crate::apps::defaults(res.plural, obj);
            if let (Some(tpl), Some(pods)) = (
                obj.pointer_mut("/spec/template").filter(|t| t.is_object()),
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
        "pods" => {
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
            for list in ["containers", "initContainers"] {
                if let Some(cs) = spec.get_mut(list).and_then(Value::as_array_mut) {
                    for c in cs.iter_mut().filter(|c| c.is_object()) {
                        if c.get("imagePullPolicy").is_none() {
                            let img = c.get("image").and_then(Value::as_str).unwrap_or("");
                            let tag = img.rsplit('/').next().unwrap_or("");
                            let latest = !img.contains('@')
                                && (!tag.contains(':') || tag.ends_with(":latest"));
                            c["imagePullPolicy"] =
                                json!(if latest { "Always" } else { "IfNotPresent" });
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
            let phase_unset = obj.pointer("/status/phase").is_none();
            if phase_unset {
                obj["status"] = json!({"phase": "Pending", "qosClass": qos_class(obj)});
            }
        }
        "namespaces" => {
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
        "tenants" => obj["status"] = json!({"phase": "Active"}),
        "secrets" => {
            if obj.get("type").is_none() {
                obj["type"] = json!("Opaque");
            }
            if let Some(Value::Object(sd)) =
                obj.as_object_mut().and_then(|o| o.remove("stringData"))
            {
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
        _ => {}
    }
}

fn qos_class(pod: &Value) -> &'static str {
    let cs = pod
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
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
fn companions(t: &Target, name: &str) -> Vec<Op> {
    match t.res.plural {
        "namespaces" => vec![default_sa(&t.tenant, name)],
        "tenants" => {
            let mut ops = Vec::new();
            for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
                ops.push(Op::Put {
                    key: Key::new("namespaces", name, "", ns),
                    value: namespace_object(name, ns),
                    pre: Precondition::Absent,
                });
                ops.push(default_sa(name, ns));
            }
            ops
        }
        _ => Vec::new(),
    }
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

fn content_type(a: Accept) -> &'static str {
    match a {
        Accept::Table => "application/json;as=Table;v=v1;g=meta.k8s.io",
        Accept::Json => "application/json",
    }
}

fn group_json(g: &str, v: &str) -> Value {
    let gv = json!({"groupVersion": format!("{g}/{v}"), "version": v});
    json!({"name": g, "versions": [gv.clone()], "preferredVersion": gv})
}

fn resource_list(group: &str, version: &str) -> Value {
    let mut out = Vec::new();
    for r in RESOURCES
        .iter()
        .filter(|r| r.group == group && r.version == version)
    {
        let mut e = json!({
            "name": r.plural, "singularName": r.singular, "namespaced": r.namespaced, "kind": r.kind,
            "verbs": ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"],
        });
        if !r.short_names.is_empty() {
            e["shortNames"] = json!(r.short_names);
        }
        if !r.categories.is_empty() {
            e["categories"] = json!(r.categories);
        }
        out.push(e);
        for s in r.subresources {
            let (kind, verbs) = match *s {
                "token" => ("TokenRequest", json!(["create"])),
                "binding" => ("Binding", json!(["create"])),
                "log" => ("Pod", json!(["get"])),
                "finalize" => ("Namespace", json!(["update"])),
                "scale" => ("Scale", json!(["get", "patch", "update"])),
                "eviction" => ("Eviction", json!(["create"])),
                _ => (r.kind, json!(["get", "patch", "update"])),
            };
            let mut sub = json!({"name": format!("{}/{s}", r.plural), "singularName": "", "namespaced": r.namespaced, "kind": kind, "verbs": verbs});
            if *s == "token" {
                sub["group"] = json!("authentication.k8s.io");
                sub["version"] = json!("v1");
            }
            if *s == "scale" {
                sub["group"] = json!("autoscaling");
                sub["version"] = json!("v1");
            }
            if *s == "eviction" {
                sub["group"] = json!("policy");
                sub["version"] = json!("v1");
            }
            out.push(sub);
        }
    }
    let gv = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": out})
}

struct WatchCtx {
    plural: &'static str,
    kind: &'static str,
    api_version: String,
    scope: Scope,
    ls: LabelSelector,
    fs: FieldSelector,
    acc: Accept,
    bookmarks: bool,
    timeout: Duration,
    interval: Duration,
    initial_end: bool,
}

impl WatchCtx {
    fn matches(&self, v: &Value) -> bool {
        self.ls.matches(v) && self.fs.matches(v)
    }

    fn line(&self, ty: &str, obj: &Value) -> Bytes {
        let object = match self.acc {
            Accept::Table if ty != "BOOKMARK" && ty != "ERROR" => table::table(
                self.plural,
                &[obj],
                meta_str(obj, "resourceVersion"),
                None,
                Include::Metadata,
            ),
            _ => obj.clone(),
        };
        let mut s = serde_json::to_vec(&json!({"type": ty, "object": object})).unwrap_or_default();
        s.push(b'\n');
        Bytes::from(s)
    }

    fn bookmark(&self, rv: u64, initial_end: bool) -> Bytes {
        let mut meta = json!({"resourceVersion": rv.to_string()});
        if initial_end {
            meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        let mut s = serde_json::to_vec(&json!({"type": "BOOKMARK", "object": {"kind": self.kind, "apiVersion": self.api_version, "metadata": meta}})).unwrap_or_default();
        s.push(b'\n');
        Bytes::from(s)
    }

    /// Translate a store event into what this watcher sees: objects entering the selection
    /// arrive as ADDED, leaving it as DELETED.
    fn translate(&self, e: &Event) -> Option<(&'static str, Arc<Value>)> {
        if !self.scope.contains(&e.key) {
            return None;
        }
        let now = e.kind != EventType::Deleted && self.matches(&e.object);
        let before = e.prev.as_ref().is_some_and(|p| self.matches(p));
        match (e.kind, before, now) {
            (EventType::Deleted, true, _) => Some(("DELETED", e.object.clone())),
            (EventType::Deleted, false, _) => None,
            (_, false, true) => Some(("ADDED", e.object.clone())),
            (_, true, true) => Some(("MODIFIED", e.object.clone())),
            (_, true, false) => Some(("DELETED", e.object.clone())),
            (_, false, false) => None,
        }
    }

    async fn run(
        self,
        tx: tokio::sync::mpsc::Sender<Bytes>,
        initial: Vec<Arc<Value>>,
        replay: Vec<Arc<Event>>,
        from: u64,
        mut live: tokio::sync::broadcast::Receiver<Arc<Event>>,
    ) {
        let deadline = tokio::time::Instant::now() + self.timeout;
        let mut last = from;
        for o in initial.iter().filter(|o| self.matches(o)) {
            if tx.send(self.line("ADDED", o)).await.is_err() {
                return;
            }
        }
        if self.initial_end && tx.send(self.bookmark(last, true)).await.is_err() {
            return;
        }
        for e in &replay {
            last = e.rv;
            if let Some((ty, o)) = self.translate(e) {
                if tx.send(self.line(ty, &o)).await.is_err() {
                    return;
                }
            }
        }
        let mut tick = tokio::time::interval(self.interval);
        tick.tick().await;
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => return,
                _ = tx.closed() => return,
                _ = tick.tick(), if self.bookmarks => {
                    if tx.send(self.bookmark(last, false)).await.is_err() { return; }
                }
                ev = live.recv() => match ev {
                    Ok(e) => {
                        if e.rv <= last { continue; }
                        last = e.rv;
                        if let Some((ty, o)) = self.translate(&e) {
                            if tx.send(self.line(ty, &o)).await.is_err() { return; }
                        }
                    }
                    // A watcher that falls too far behind is closed; the client re-watches
                    // from its last version (or relists on 410).
                    Err(_) => return,
                }
            }
        }
    }
}

impl ApiError {
    /// 422 for a patch that cannot be applied.
    pub fn unprocessable_patch(why: &str) -> Self {
        ApiError {
            code: 422,
            reason: "Invalid",
            message: format!("the patch could not be applied: {why}"),
            details: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continue_tokens_round_trip_and_reject_garbage() {
        let k = Key::new("pods", "t", "ns", "n");
        let (rv, k2) = decode_continue("pods", &encode_continue(9, &k)).unwrap();
        assert_eq!((rv, k2), (9, k));
        assert_eq!(decode_continue("pods", "!!").unwrap_err().code, 400);
    }

    #[test]
    fn accept_negotiation() {
        let mut h = HeaderMap::new();
        h.insert(http::header::ACCEPT, "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json".parse().unwrap());
        assert_eq!(accept(&h).unwrap(), Accept::Table);
        h.insert(
            http::header::ACCEPT,
            "application/vnd.kubernetes.protobuf".parse().unwrap(),
        );
        assert_eq!(accept(&h).unwrap_err().code, 406);
        h.insert(
            http::header::ACCEPT,
            "application/vnd.kubernetes.protobuf, */*".parse().unwrap(),
        );
        assert_eq!(accept(&h).unwrap(), Accept::Json);
    }
}
