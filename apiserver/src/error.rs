//! Kubernetes `Status` errors: every failure the API returns goes through [`ApiError`].

use serde_json::{json, Value};

pub use proto::Cause;

impl From<proto::logs::LogOptionsError> for ApiError {
    fn from(e: proto::logs::LogOptionsError) -> Self {
        match e {
            proto::logs::LogOptionsError::Malformed(m) => ApiError::bad_request(m),
            proto::logs::LogOptionsError::Invalid { pod, causes } => {
                ApiError::invalid("", "PodLogOptions", &pod, causes)
            }
        }
    }
}

/// An API error, rendered as a Kubernetes `Status`.
#[derive(Clone, Debug)]
pub struct ApiError {
    /// HTTP status code.
    pub code: u16,
    /// `StatusReason`, e.g. `NotFound`.
    pub reason: &'static str,
    /// Message kubectl prints.
    pub message: String,
    /// `details` object, if any.
    pub details: Option<Value>,
}

/// Result with an [`ApiError`].
pub type ApiResult<T> = std::result::Result<T, ApiError>;

impl ApiError {
    fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            code,
            reason,
            message: message.into(),
            details: None,
        }
    }
    fn with_details(mut self, details: Value) -> Self {
        self.details = Some(details);
        self
    }
    /// 404 for a named object.
    pub fn not_found(group: &str, resource: &str, name: &str) -> Self {
        Self::new(
            404,
            "NotFound",
            format!("{} {name:?} not found", qualified(group, resource)),
        )
        .with_details(json!({"name": name, "group": group, "kind": resource}))
    }
    /// 404 for a path that names nothing.
    pub fn no_route(path: &str) -> Self {
        Self::new(
            404,
            "NotFound",
            format!("the server could not find the requested resource ({path})"),
        )
    }
    /// 409 for a create of an existing name.
    pub fn already_exists(group: &str, resource: &str, name: &str) -> Self {
        Self::new(
            409,
            "AlreadyExists",
            format!("{} {name:?} already exists", qualified(group, resource)),
        )
        .with_details(json!({"name": name, "group": group, "kind": resource}))
    }
    /// 409 for a stale resourceVersion or failed precondition.
    pub fn conflict(group: &str, resource: &str, name: &str, why: &str) -> Self {
        Self::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} {name:?}: {why}",
                qualified(group, resource)
            ),
        )
        .with_details(json!({"name": name, "group": group, "kind": resource}))
    }
    /// 409 the standard stale-version message.
    pub fn stale(group: &str, resource: &str, name: &str) -> Self {
        Self::conflict(
            group,
            resource,
            name,
            "the object has been modified; please apply your changes to the latest version and try again",
        )
    }
    /// 422 with the invalid fields.
    pub fn invalid(group: &str, kind: &str, name: &str, causes: Vec<Cause>) -> Self {
        let message = format!("{kind} {name:?} is invalid: {}", Cause::summary(&causes));
        let causes: Vec<Value> = causes
            .iter()
            .map(|c| json!({"reason": c.reason, "message": c.message, "field": c.field}))
            .collect();
        Self::new(422, "Invalid", message)
            .with_details(json!({"name": name, "group": group, "kind": kind, "causes": causes}))
    }
    /// 400.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }
    /// 401.
    pub fn unauthorized() -> Self {
        Self::new(401, "Unauthorized", "Unauthorized")
    }
    /// 403 in the style of the Kubernetes authorizer.
    pub fn forbidden(
        user: &str,
        verb: &str,
        group: &str,
        resource: &str,
        name: &str,
        scope: &str,
    ) -> Self {
        let named = if name.is_empty() {
            String::new()
        } else {
            format!(" {name:?}")
        };
        Self::new(
            403,
            "Forbidden",
            format!(
                "{}{named} is forbidden: User {user:?} cannot {verb} resource {resource:?} in API group {group:?}{scope}",
                qualified(group, resource)
            ),
        )
        .with_details(json!({"name": name, "group": group, "kind": resource}))
    }
    /// 403 with a free-form message.
    pub fn forbidden_msg(message: impl Into<String>) -> Self {
        Self::new(403, "Forbidden", message)
    }
    /// 405.
    pub fn method_not_allowed(verb: &str, what: &str) -> Self {
        Self::new(
            405,
            "MethodNotAllowed",
            format!("the server does not allow the {verb} verb on {what}"),
        )
    }
    /// 406.
    pub fn not_acceptable(message: impl Into<String>) -> Self {
        Self::new(406, "NotAcceptable", message)
    }
    /// 410 for a resourceVersion older than the watch window.
    pub fn gone(message: impl Into<String>) -> Self {
        Self::new(410, "Expired", message)
    }
    /// 413.
    pub fn too_large(limit: usize) -> Self {
        Self::new(
            413,
            "RequestEntityTooLarge",
            format!("the request body is larger than the limit of {limit} bytes"),
        )
    }
    /// 415.
    pub fn unsupported_media_type(ct: &str) -> Self {
        Self::new(
            415,
            "UnsupportedMediaType",
            format!("the body of the request was in an unknown format: {ct}"),
        )
    }
    /// 500, without leaking internals: the cause is logged, not returned.
    pub fn internal(context: &str) -> Self {
        Self::new(
            500,
            "InternalError",
            format!("an error on the server prevented the request from succeeding ({context})"),
        )
    }
    /// 503.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(503, "ServiceUnavailable", message)
            .with_details(json!({"retryAfterSeconds": crate::server::RETRY_AFTER_SECS}))
    }
    /// 413 for an object over the storage's limit.
    pub fn object_too_large(size: usize, limit: usize) -> Self {
        let message = if size > 0 {
            format!("the object is {size} bytes, larger than the limit of {limit} bytes")
        } else {
            format!("the request is larger than the storage's limit of {limit} bytes")
        };
        Self::new(413, "RequestEntityTooLarge", message)
    }

    /// An error with `code` and the standard reason for it (used for answers relayed from
    /// elsewhere, e.g. a node agent or a site).
    pub fn from_code(code: u16, message: impl Into<String>) -> Self {
        let reason = match code {
            400 => "BadRequest",
            401 => "Unauthorized",
            403 => "Forbidden",
            404 => "NotFound",
            405 => "MethodNotAllowed",
            409 => "Conflict",
            410 => "Expired",
            422 => "Invalid",
            429 => "TooManyRequests",
            503 => "ServiceUnavailable",
            504 => "Timeout",
            c if c >= 500 => "InternalError",
            _ => "BadRequest",
        };
        let code = if (400..600).contains(&code) {
            code
        } else {
            500
        };
        Self::new(code, reason, message)
    }

    /// The `Status` object.
    pub fn status(&self) -> Value {
        let mut s = json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": self.message, "reason": self.reason, "code": self.code,
        });
        if let Some(d) = &self.details {
            s["details"] = d.clone();
        }
        s
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.message, self.code)
    }
}

impl std::error::Error for ApiError {}

fn qualified(group: &str, resource: &str) -> String {
    if group.is_empty() {
        resource.to_string()
    } else {
        format!("{resource}.{group}")
    }
}
