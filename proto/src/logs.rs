//! Pod log requests (`PodLogOptions`): the options, read and checked as kube-apiserver does, in
//! the three forms they travel in (an API query, a sync frame, an agent query), and the names
//! the tiers agree on for the agent's log endpoint.

use crate::query::{percent_encode, Query};
use crate::Cause;

/// Common name of the client certificate cloud-core presents to the agents of cloud nodes.
pub const KUBELET_CLIENT_CN: &str = "atoll:kubelet-client";
/// The agent's log port when its Node does not advertise one (kubelet's default).
pub const AGENT_PORT: u16 = 10250;
/// How the system tenant is spelled in agent paths and log directory names.
pub const SYSTEM_TENANT_SEGMENT: &str = "-";
/// Chunks buffered between a log producer and the HTTP response (backpressure beyond it).
pub const STREAM_CHUNKS: usize = 16;

/// Why log options were refused.
#[derive(Clone, Debug, PartialEq)]
pub enum LogOptionsError {
    /// A parameter that does not parse (HTTP 400).
    Malformed(String),
    /// Values out of range (HTTP 422, `PodLogOptions "p" is invalid`).
    Invalid {
        /// The pod the request named.
        pod: String,
        /// What was wrong.
        causes: Vec<Cause>,
    },
}

impl LogOptionsError {
    /// The HTTP status kube-apiserver answers with.
    pub fn code(&self) -> u16 {
        match self {
            LogOptionsError::Malformed(_) => 400,
            LogOptionsError::Invalid { .. } => 422,
        }
    }
}

impl std::fmt::Display for LogOptionsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LogOptionsError::Malformed(m) => f.write_str(m),
            LogOptionsError::Invalid { pod, causes } => {
                write!(
                    f,
                    "PodLogOptions {pod:?} is invalid: {}",
                    Cause::summary(causes)
                )
            }
        }
    }
}

impl std::error::Error for LogOptionsError {}

/// The options of a log request (`PodLogOptions`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LogOptions {
    /// Container; empty means the pod's only container.
    pub container: String,
    /// Keep streaming until the container exits or the client goes away.
    pub follow: bool,
    /// The previous (terminated) attempt of the container.
    pub previous: bool,
    /// Prefix lines with their RFC 3339 timestamps.
    pub timestamps: bool,
    /// Only the last N lines.
    pub tail_lines: Option<i64>,
    /// Stop after this many bytes.
    pub limit_bytes: Option<i64>,
    /// Only lines newer than this many seconds.
    pub since_seconds: Option<i64>,
    /// Only lines at or after this RFC 3339 time.
    pub since_time: Option<String>,
}

fn parse_int(q: &Query, k: &str) -> Result<Option<i64>, LogOptionsError> {
    match q.get(k) {
        None | Some("") => Ok(None),
        Some(v) => v.parse().map(Some).map_err(|_| {
            LogOptionsError::Malformed(format!("invalid value {v:?} for {k}: must be an integer"))
        }),
    }
}

fn invalid_number(field: &str, v: i64, why: &str) -> Cause {
    Cause {
        reason: "FieldValueInvalid",
        message: format!("Invalid value: {v}: {why}"),
        field: field.into(),
    }
}

impl LogOptions {
    /// From the query of a `pods/log` request, validated like kube-apiserver: malformed
    /// parameters are 400, out-of-range ones 422 (`PodLogOptions "p" is invalid`).
    pub fn from_query(q: &Query, pod: &str) -> Result<Self, LogOptionsError> {
        let since_time = match q.get("sinceTime").filter(|s| !s.is_empty()) {
            Some(s) => {
                chrono::DateTime::parse_from_rfc3339(s).map_err(|_| {
                    LogOptionsError::Malformed(format!(
                        "invalid value {s:?} for sinceTime: must be an RFC 3339 time"
                    ))
                })?;
                Some(s.to_string())
            }
            None => None,
        };
        let o = LogOptions {
            container: q.get("container").unwrap_or("").to_string(),
            follow: q.flag("follow"),
            previous: q.flag("previous"),
            timestamps: q.flag("timestamps"),
            tail_lines: parse_int(q, "tailLines")?,
            limit_bytes: parse_int(q, "limitBytes")?,
            since_seconds: parse_int(q, "sinceSeconds")?,
            since_time,
        };
        o.validate(pod)?;
        Ok(o)
    }

    /// Range checks (kube's `ValidatePodLogOptions`).
    pub fn validate(&self, pod: &str) -> Result<(), LogOptionsError> {
        let mut causes = Vec::new();
        if let Some(t) = self.tail_lines.filter(|t| *t < 0) {
            causes.push(invalid_number(
                "tailLines",
                t,
                "must be greater than or equal to 0",
            ));
        }
        if let Some(l) = self.limit_bytes.filter(|l| *l < 1) {
            causes.push(invalid_number("limitBytes", l, "must be greater than 0"));
        }
        match (self.since_seconds, &self.since_time) {
            (Some(_), Some(_)) => causes.push(Cause {
                reason: "FieldValueForbidden",
                message: "Forbidden: at most one of `sinceTime` or `sinceSeconds` may be specified"
                    .into(),
                field: String::new(),
            }),
            (Some(s), None) if s < 1 => {
                causes.push(invalid_number("sinceSeconds", s, "must be greater than 0"))
            }
            _ => {}
        }
        if causes.is_empty() {
            Ok(())
        } else {
            Err(LogOptionsError::Invalid {
                pod: pod.to_string(),
                causes,
            })
        }
    }

    /// The wire request for a site (see `crate::sync::LogRequest`).
    pub fn to_proto(&self, tenant: &str, namespace: &str, pod: &str) -> crate::sync::LogRequest {
        crate::sync::LogRequest {
            tenant: tenant.into(),
            namespace: namespace.into(),
            pod: pod.into(),
            container: self.container.clone(),
            follow: self.follow,
            previous: self.previous,
            tail_lines: self.tail_lines,
            timestamps: self.timestamps,
            limit_bytes: self.limit_bytes,
            since_seconds: self.since_seconds,
            since_time: self.since_time.clone().unwrap_or_default(),
        }
    }

    /// From a wire request; checked again by the receiver (it comes from the network).
    pub fn from_proto(r: &crate::sync::LogRequest) -> Result<Self, LogOptionsError> {
        let since_time = Some(r.since_time.clone()).filter(|s| !s.is_empty());
        if let Some(s) = &since_time {
            chrono::DateTime::parse_from_rfc3339(s)
                .map_err(|_| LogOptionsError::Malformed(format!("invalid sinceTime {s:?}")))?;
        }
        let o = LogOptions {
            container: r.container.clone(),
            follow: r.follow,
            previous: r.previous,
            timestamps: r.timestamps,
            tail_lines: r.tail_lines,
            limit_bytes: r.limit_bytes,
            since_seconds: r.since_seconds,
            since_time,
        };
        o.validate(&r.pod)?;
        Ok(o)
    }

    /// The agent's query string (without `?`), `uid` pinning the pod instance.
    pub fn agent_query(&self, uid: &str) -> String {
        let mut q: Vec<String> = Vec::new();
        let mut add = |k: &str, v: &str| q.push(format!("{k}={}", percent_encode(v)));
        if !uid.is_empty() {
            add("uid", uid);
        }
        if self.follow {
            add("follow", "true");
        }
        if self.previous {
            add("previous", "true");
        }
        if self.timestamps {
            add("timestamps", "true");
        }
        if let Some(t) = self.tail_lines {
            add("tailLines", &t.to_string());
        }
        if let Some(l) = self.limit_bytes {
            add("limitBytes", &l.to_string());
        }
        if let Some(s) = self.since_seconds {
            add("sinceSeconds", &s.to_string());
        }
        if let Some(t) = &self.since_time {
            add("sinceTime", t);
        }
        q.join("&")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(s: &str) -> Query {
        Query::parse(Some(s))
    }

    #[test]
    fn options_parse_and_validate_like_kube() {
        let o = LogOptions::from_query(
            &q("container=c&follow=true&tailLines=3&timestamps=1&limitBytes=10"),
            "p",
        )
        .unwrap();
        assert_eq!(o.container, "c");
        assert!(o.follow && o.timestamps && !o.previous);
        assert_eq!((o.tail_lines, o.limit_bytes), (Some(3), Some(10)));
        let e = LogOptions::from_query(&q("tailLines=x"), "p").unwrap_err();
        assert_eq!(e.code(), 400);
        let e = LogOptions::from_query(&q("tailLines=-1"), "p").unwrap_err();
        assert_eq!(e.code(), 422);
        assert_eq!(
            e.to_string(),
            "PodLogOptions \"p\" is invalid: tailLines: Invalid value: -1: must be greater than or equal to 0"
        );
        assert_eq!(
            LogOptions::from_query(&q("limitBytes=0"), "p")
                .unwrap_err()
                .code(),
            422
        );
        let both = LogOptions::from_query(&q("sinceSeconds=5&sinceTime=2026-01-01T00:00:00Z"), "p")
            .unwrap_err();
        assert!(both.to_string().contains("at most one of"), "{both}");
        assert_eq!(
            LogOptions::from_query(&q("sinceTime=yesterday"), "p")
                .unwrap_err()
                .code(),
            400
        );
        // Booleans as kube-apiserver reads them: only `0` and `false` (any case) are false.
        for (v, want) in [
            ("maybe", true),
            ("T", true),
            ("", true),
            ("0", false),
            ("False", false),
        ] {
            let o = LogOptions::from_query(&q(&format!("follow={v}")), "p").unwrap();
            assert_eq!(o.follow, want, "follow={v}");
        }
    }

    #[test]
    fn options_survive_the_wire_and_the_agent_query() {
        let o = LogOptions {
            container: "c".into(),
            follow: true,
            tail_lines: Some(0),
            since_time: Some("2026-01-01T00:00:00+01:00".into()),
            ..Default::default()
        };
        let w = o.to_proto("t", "ns", "p");
        assert_eq!(LogOptions::from_proto(&w).unwrap(), o);
        let query = o.agent_query("u-1");
        assert_eq!(
            query,
            "uid=u-1&follow=true&tailLines=0&sinceTime=2026-01-01T00%3A00%3A00%2B01%3A00"
        );
        // What the agent parses back is what was sent.
        let back = Query::parse(Some(&query));
        assert_eq!(back.get("sinceTime"), o.since_time.as_deref());
        let mut bad = w.clone();
        bad.tail_lines = Some(-5);
        assert_eq!(LogOptions::from_proto(&bad).unwrap_err().code(), 422);
    }
}
