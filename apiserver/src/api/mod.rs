//! Request handling: routing, discovery, CRUD, patch, delete, watch, tables, subresources.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chrono::{SecondsFormat, Utc};
use http::{HeaderMap, Method, StatusCode};
use serde_json::{json, Map, Value};

use crate::auth::{self, Identity};
use crate::error::{ApiError, ApiResult, Cause};
use crate::kinds::Deletion;
use crate::openapi::{normalize_quantities, OpenApi};
use crate::path::{self, ResourcePath, Route};
use crate::resources::{self, Resource, Space, RESOURCES};
use crate::table::{self, Include};
use crate::{patch, validate};
use proto::selectors::{FieldSelector, LabelSelector};
use store::{Event, EventType, Key, Op, Precondition, Scope, Store, StoreError};

mod body;
mod delete;
mod internal;
mod objects;
mod read;
mod subresources;
mod token;
mod watch;
mod write;

use body::*;
use delete::*;
pub use internal::{component, Writer};
pub use objects::*;
use read::*;
use subresources::unbound;
use write::Part;

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
    /// The range cluster IPs are allocated from (per tenant).
    pub service_cidr: crate::services::Cidr,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            max_body: 3 * 1024 * 1024,
            bookmark_interval: Duration::from_secs(10),
            advertise: "127.0.0.1:6443".into(),
            service_cidr: crate::services::Cidr::parse(crate::services::DEFAULT_SERVICE_CIDR)
                .unwrap_or_else(|_| unreachable!("the default service range parses")),
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
    /// A protocol switch (`101`): the stream is served by a task already waiting for the
    /// connection (`pods/exec`, `pods/attach`).
    Switching {
        /// The response headers (`Upgrade`, `Sec-WebSocket-Accept`, ...).
        headers: http::HeaderMap,
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
    /// The connection, once the response switches protocols (HTTP/1.1 upgrades only).
    pub upgrade: Option<hyper::upgrade::OnUpgrade>,
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
    /// Where `pods/exec` and `pods/attach` streams go (set once, as `logs`).
    streams: std::sync::OnceLock<Arc<dyn crate::streams::StreamSource>>,
    /// Node usage for `metrics.k8s.io` (`kubectl top`).
    usage: std::sync::OnceLock<Arc<dyn crate::usage::UsageSource>>,
    /// Recent node-side stream errors, for kubectl's SPDY retry.
    stream_errors: crate::streams::RecentErrors,
    /// The process's metrics (`/metrics`).
    pub metrics: Arc<crate::metrics::Metrics>,
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
    /// A binding of the pod `current` to `node` (`pods/binding`, or a scheduler's).
    Bind {
        /// The stored pod.
        current: &'a Value,
        /// The node it is bound to.
        node: &'a str,
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
    /// A binding: `new` is the pod `old` with its node (and PodScheduled condition) set.
    pub bind: bool,
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

/// What the client accepts.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Accept {
    Json,
    Table,
}

/// Field-validation directive.
#[derive(Clone, Copy, PartialEq, Debug)]
enum FieldValidation {
    Ignore,
    Warn,
    Strict,
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
            streams: std::sync::OnceLock::new(),
            stream_errors: Default::default(),
            usage: std::sync::OnceLock::new(),
            metrics: Arc::new(crate::metrics::Metrics::new()),
        })
    }

    /// Serve `metrics.k8s.io` from `source`; false if one was already set.
    pub fn set_usage_source(&self, source: Arc<dyn crate::usage::UsageSource>) -> bool {
        self.usage.set(source).is_ok()
    }

    /// Serve `pods/exec` and `pods/attach` through `source`; false if one was already set.
    pub fn set_stream_source(&self, source: Arc<dyn crate::streams::StreamSource>) -> bool {
        self.streams.set(source).is_ok()
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
        self.write_as(res, key, old, new, pre, status, false, Vec::new())
            .await
    }

    #[allow(clippy::too_many_arguments)]
    async fn write_as(
        &self,
        res: &Resource,
        key: Key,
        old: &Value,
        new: Option<Value>,
        pre: Precondition,
        status: bool,
        bind: bool,
        also: Vec<Op>,
    ) -> Result<Arc<Event>, StoreError> {
        let extra = match &self.hooks {
            Some(h) => h.also(
                res,
                &Committing {
                    key: &key,
                    old: Some(old),
                    new: new.as_ref(),
                    status,
                    bind,
                },
            ),
            None => Vec::new(),
        };
        let mut ops = vec![match new {
            Some(value) => Op::Put { key, value, pre },
            None => Op::Delete { key, pre },
        }];
        ops.extend(extra);
        ops.extend(also);
        let mut evs = self.commit(ops).await?;
        if evs.is_empty() {
            return Err(StoreError::Closed);
        }
        Ok(evs.swap_remove(0))
    }

    /// Commit one store transaction of API objects (timed for the metrics).
    pub(crate) async fn commit(&self, ops: Vec<Op>) -> Result<Vec<Arc<Event>>, StoreError> {
        let (n, started) = (ops.len(), std::time::Instant::now());
        let evs = self.store.commit(ops).await?;
        self.metrics.commit(n, started.elapsed());
        Ok(evs)
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
        let started = std::time::Instant::now();
        let mut labels = request_labels(&req);
        let reply = match self.route(req).await {
            Ok(r) => r,
            Err(e) => Reply::error(&e),
        };
        labels.code = match &reply {
            Reply::Full { status, .. } => status.as_u16().to_string(),
            Reply::Stream { .. } => "200".into(),
            Reply::Switching { .. } => "101".into(),
        };
        self.metrics.request(labels, started.elapsed());
        reply
    }

    async fn route(&self, mut req: Request) -> ApiResult<Reply> {
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
        // As kube-apiserver: a non-resource path other than discovery and health is for
        // administrators.
        let admin_only = |verb: &str| -> ApiResult<()> {
            if id.is_system_admin() {
                return Ok(());
            }
            Err(ApiError::forbidden_msg(format!(
                "forbidden: User {:?} cannot {verb} path \"{path}\"",
                id.user
            )))
        };
        if path == "/metrics" {
            admin_only("get")?;
            self.metrics.objects(self.store.object_count());
            return Ok(Reply::Full {
                status: StatusCode::OK,
                content_type: "text/plain; version=0.0.4; charset=utf-8",
                body: Bytes::from(self.metrics.encode()),
                warnings: vec![],
            });
        }
        if req.method == Method::POST {
            if let Some((p, _, _)) = crate::reviews::PATHS.iter().find(|(p, _, _)| *p == path) {
                let body = body::parse_body(&req.headers, &req.body)?;
                if let Some(r) = crate::reviews::serve(&id, p, &body) {
                    return r.map(|v| Reply::json(StatusCode::CREATED, &v));
                }
            }
        }
        if path == crate::usage::USAGE_RELAY_PATH {
            admin_only("get")?;
            let site = req.query.get("site").unwrap_or("");
            let source = self
                .usage
                .get()
                .ok_or_else(|| ApiError::not_found("", "sites", site))?;
            let samples = source
                .site(site)
                .await
                .ok_or_else(|| ApiError::not_found("", "sites", site))??;
            return Ok(Reply::json(
                StatusCode::OK,
                &serde_json::to_value(samples).unwrap_or_default(),
            ));
        }
        if path == crate::logs::RELAY_PATH {
            admin_only("create")?;
            return self.relay_stream(&mut req).await;
        }
        if req.method == Method::GET {
            let source = self.usage.get().map(|s| s.as_ref());
            if let Some(r) = crate::usage::serve(&self.store, source, &id, &path, &req.query).await
            {
                return r.map(|v| Reply::json(StatusCode::OK, &v));
            }
        }
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
                let mut groups: Vec<Value> = resources::groups()
                    .iter()
                    .map(|(g, v)| group_json(g, v))
                    .collect();
                if self.usage.get().is_some() {
                    groups.push(crate::usage::group());
                }
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

    async fn resource(&self, mut req: Request, id: Identity, rp: ResourcePath) -> ApiResult<Reply> {
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
        let verb = verb_of(&req, &rp)
            .ok_or_else(|| ApiError::method_not_allowed(req.method.as_str(), &req.path))?;
        auth::authorize(&id, verb, res, &t.tenant, t.namespace.as_deref(), t.name())?;
        if !t.tenant.is_empty() {
            if let Some(h) = &self.hooks {
                h.tenant(&t.tenant, verb)?;
            }
            if let Err(e) = self.check_tenant(&t.tenant, verb) {
                if e.code != 404 {
                    return Err(e);
                }
                // Perhaps created through another replica a moment ago: the tenant decides
                // which partition its space is in, so it must be known before its space is.
                self.store
                    .sync_for(Some(""))
                    .await
                    .map_err(|e| objects::store_err(res, t.name(), e))?;
                self.check_tenant(&t.tenant, verb)?;
            }
        }
        // A storage other replicas write too: a consistent read (no resourceVersion) is served
        // from the cache only once it holds what the storage had committed. (Writes compare
        // the revision they read, so a stale cache costs them a 409, never a lost update.)
        let consistent_read = matches!(verb, "get" | "list" | "watch")
            && req.query.get("resourceVersion").is_none_or(str::is_empty);
        if consistent_read {
            let tenant = (!t.all_tenants).then_some(t.tenant.as_str());
            self.store
                .sync_for(tenant)
                .await
                .map_err(|e| objects::store_err(res, t.name(), e))?;
        }
        match (verb, t.sub.as_deref()) {
            ("get", None) => self.get(&t, &req),
            ("get", Some("status")) => self.get(&t, &req),
            ("get", Some("log")) => self.pod_log(&t, &req).await,
            ("get" | "create", Some(sub @ ("exec" | "attach"))) if res.plural == "pods" => {
                let kind = crate::streams::Kind::parse(sub).unwrap_or(crate::streams::Kind::Exec);
                self.pod_stream(&t, &mut req, kind).await
            }
            ("get" | "create", Some("portforward")) if res.plural == "pods" => {
                self.pod_portforward(&t, &mut req).await
            }
            ("list", _) => self.list(&t, &req),
            ("watch", _) => self.watch(&t, &req).await,
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
                self.update(&t, &req, body, Part::of(sub)).await
            }
            ("patch", sub @ (None | Some("status"))) => self.patch(&t, &req, Part::of(sub)).await,
            ("get", Some("resize")) if res.plural == "pods" => self.get(&t, &req),
            ("update", Some("resize")) if res.plural == "pods" => {
                let body = parse_body(&req.headers, &req.body)?;
                self.update(&t, &req, body, Part::Resize).await
            }
            ("patch", Some("resize")) if res.plural == "pods" => {
                self.patch(&t, &req, Part::Resize).await
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
}

/// The API verb of a request for resource path `rp` (`None`: a method the API does not serve).
fn verb_of(req: &Request, rp: &ResourcePath) -> Option<&'static str> {
    let watch = rp.watch || req.query.flag("watch");
    Some(match (&req.method, rp.name.is_some()) {
        (&Method::GET, _) if watch => "watch",
        (&Method::GET, true) => "get",
        (&Method::GET, false) => "list",
        (&Method::POST, _) => "create",
        (&Method::PUT, _) => "update",
        (&Method::PATCH, _) => "patch",
        (&Method::DELETE, true) => "delete",
        (&Method::DELETE, false) => "deletecollection",
        _ => return None,
    })
}

/// A request's metric labels (kube-apiserver's verbs; the code is filled in when answered).
fn request_labels(req: &Request) -> crate::metrics::RequestLabels {
    let mut l = crate::metrics::RequestLabels {
        verb: req.method.as_str().to_string(),
        group: String::new(),
        version: String::new(),
        resource: String::new(),
        subresource: String::new(),
        code: String::new(),
    };
    if let Some(Route::Resource(rp)) = path::parse(&req.path) {
        l.verb =
            verb_of(req, &rp).map_or_else(|| req.method.as_str().to_string(), str::to_uppercase);
        l.group = rp.resource.group.to_string();
        l.version = rp.resource.version.to_string();
        l.resource = rp.resource.plural.to_string();
        l.subresource = rp.subresource.unwrap_or_default();
    }
    l
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
        let (rv, k2) = decode_continue("pods", &encode_continue(&9.into(), &k)).unwrap();
        assert_eq!((rv, k2), (9.into(), k));
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
