//! Streams into a pod's containers (`pods/exec`, `pods/attach`): the options as kube-apiserver
//! reads them, in the three forms they travel in (an API query, a sync frame, an agent query),
//! and the channel framing the tiers share.
//!
//! Between the tiers (API server → site → agent) a stream is a byte pipe carrying frames: a
//! 4-byte big-endian length, then the payload, whose first byte is the channel and the rest the
//! data. The channels are Kubernetes' remote-command channels (`v4.channel.k8s.io` and
//! `v5.channel.k8s.io`), so an API server turns a WebSocket message into a frame and back
//! without looking inside: 0 stdin, 1 stdout, 2 stderr, 3 the error channel (a `Status`, once,
//! at the end), 4 terminal resize (`{"Width":W,"Height":H}`), 255 close (its one data byte the
//! channel closed: the client's end of stdin).

use crate::query::{percent_encode, Query};

/// Standard input (client → container).
pub const STDIN: u8 = 0;
/// Standard output (container → client).
pub const STDOUT: u8 = 1;
/// Standard error (container → client).
pub const STDERR: u8 = 2;
/// The outcome: one `Status` (JSON), then the stream ends.
pub const ERROR: u8 = 3;
/// Terminal size changes (client → container), JSON `{"Width":W,"Height":H}`.
pub const RESIZE: u8 = 4;
/// Close a channel (v5): the data is the one channel byte closed.
pub const CLOSE: u8 = 255;

/// Most data bytes in one frame; a frame's payload is one more (the channel).
pub const MAX_DATA: usize = 32 * 1024;
/// Most payload bytes of one frame.
pub const MAX_FRAME: usize = MAX_DATA + 1;
/// The `Upgrade` token of an agent's stream endpoints.
pub const UPGRADE: &str = "atoll-stream/1";
/// Most container streams open through one site at once.
pub const MAX_PER_SITE: usize = 256;

/// Which subresource a stream serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Run a new process in the container (`pods/exec`).
    Exec,
    /// Join the container's main process (`pods/attach`).
    Attach,
    /// A TCP connection to a port in the pod's network namespace (`pods/portforward`): the
    /// pipe carries the connection's bytes as they are, not channel frames.
    PortForward,
}

impl Kind {
    /// The subresource name (and the agent's path segment).
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Exec => "exec",
            Kind::Attach => "attach",
            Kind::PortForward => "portforward",
        }
    }

    /// From a subresource name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "exec" => Some(Kind::Exec),
            "attach" => Some(Kind::Attach),
            "portforward" => Some(Kind::PortForward),
            _ => None,
        }
    }
}

/// The options of an exec or attach request (`PodExecOptions`, `PodAttachOptions`).
#[derive(Clone, Debug, PartialEq)]
pub struct StreamOptions {
    /// Exec or attach.
    pub kind: Kind,
    /// Container; empty means the pod's only container (resolved by the API server).
    pub container: String,
    /// The command (exec only).
    pub command: Vec<String>,
    /// Pass the client's stdin.
    pub stdin: bool,
    /// Return stdout.
    pub stdout: bool,
    /// Return stderr (never with a terminal: its output is one stream).
    pub stderr: bool,
    /// Allocate a terminal (exec), or the container has one (attach).
    pub tty: bool,
    /// The pod's port (port-forward only; 0 otherwise).
    pub port: u16,
}

/// A bool parameter with kube's defaults for `PodExecOptions`/`PodAttachOptions`: stdout and
/// stderr default to true, the others to false.
fn flag_or(q: &Query, k: &str, default: bool) -> bool {
    match q.get(k) {
        None => default,
        Some(_) => q.flag(k),
    }
}

impl StreamOptions {
    /// From the query of a `pods/exec` or `pods/attach` request, checked as kube-apiserver and
    /// kubelet check it (the message is a 400's).
    pub fn from_query(kind: Kind, q: &Query) -> Result<Self, String> {
        let o = StreamOptions {
            kind,
            container: q.get("container").unwrap_or("").to_string(),
            command: q.all("command").into_iter().map(String::from).collect(),
            stdin: flag_or(q, "stdin", false),
            stdout: flag_or(q, "stdout", true),
            stderr: flag_or(q, "stderr", true),
            tty: flag_or(q, "tty", false),
            port: 0,
        };
        o.validate()?;
        Ok(o)
    }

    /// A port-forward connection to `port` of a pod.
    pub fn port_forward(port: u16) -> Self {
        StreamOptions {
            kind: Kind::PortForward,
            container: String::new(),
            command: Vec::new(),
            stdin: false,
            stdout: false,
            stderr: false,
            tty: false,
            port,
        }
    }

    /// The checks every receiver makes (a request from the network is checked again).
    pub fn validate(&self) -> Result<(), String> {
        if self.kind == Kind::PortForward {
            if self.port == 0 {
                return Err("a port-forward needs a port between 1 and 65535".into());
            }
            if !self.command.is_empty() {
                return Err("a port-forward takes no command".into());
            }
            return Ok(());
        }
        if self.kind == Kind::Exec && self.command.is_empty() {
            return Err("you must specify at least 1 command".into());
        }
        if !(self.stdin || self.stdout || self.stderr) {
            return Err("you must specify at least 1 of stdin, stdout, stderr".into());
        }
        if self.command.len() > 1024
            || self.command.iter().map(String::len).sum::<usize>() > 64 * 1024
        {
            return Err("the command is too long".into());
        }
        if self.command.iter().any(|a| a.contains('\0')) {
            return Err("the command must not contain NUL bytes".into());
        }
        Ok(())
    }

    /// The wire request for a site.
    pub fn to_proto(&self, tenant: &str, namespace: &str, pod: &str) -> crate::sync::StreamRequest {
        crate::sync::StreamRequest {
            kind: self.kind.as_str().into(),
            tenant: tenant.into(),
            namespace: namespace.into(),
            pod: pod.into(),
            container: self.container.clone(),
            command: self.command.clone(),
            stdin: self.stdin,
            stdout: self.stdout,
            stderr: self.stderr,
            tty: self.tty,
            port: u32::from(self.port),
        }
    }

    /// From a wire request, checked again (it comes from the network).
    pub fn from_proto(r: &crate::sync::StreamRequest) -> Result<Self, String> {
        let kind =
            Kind::parse(&r.kind).ok_or_else(|| format!("unknown stream kind {:?}", r.kind))?;
        let o = StreamOptions {
            kind,
            container: r.container.clone(),
            command: r.command.clone(),
            stdin: r.stdin,
            stdout: r.stdout,
            stderr: r.stderr,
            tty: r.tty,
            port: if kind == Kind::PortForward {
                u16::try_from(r.port).map_err(|_| format!("invalid port {}", r.port))?
            } else {
                0
            },
        };
        o.validate()?;
        Ok(o)
    }

    /// The query of the API request (without `?`): what a replica relays.
    pub fn api_query(&self) -> String {
        let mut q: Vec<String> = Vec::new();
        let mut add = |k: &str, v: &str| q.push(format!("{k}={}", percent_encode(v)));
        if !self.container.is_empty() {
            add("container", &self.container);
        }
        for c in &self.command {
            add("command", c);
        }
        for (k, v) in [
            ("stdin", self.stdin),
            ("stdout", self.stdout),
            ("stderr", self.stderr),
            ("tty", self.tty),
        ] {
            add(k, if v { "true" } else { "false" });
        }
        q.join("&")
    }

    /// The agent's query (without `?`), `uid` pinning the pod instance.
    pub fn agent_query(&self, uid: &str) -> String {
        let mut q = format!("uid={}", percent_encode(uid));
        q.push('&');
        q.push_str(&self.api_query());
        q
    }
}

/// A frame's bytes: the length, the channel, the data (`data` at most [`MAX_DATA`] bytes).
pub fn frame(channel: u8, data: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(5 + data.len());
    let len = u32::try_from(data.len() + 1).unwrap_or(u32::MAX);
    v.extend_from_slice(&len.to_be_bytes());
    v.push(channel);
    v.extend_from_slice(data);
    v
}

/// The error channel's `Status` for a process that exited with `code` (kubelet's, which kubectl
/// turns into its own exit code), or success.
pub fn exit_status(code: i32, command: &[String]) -> serde_json::Value {
    if code == 0 {
        return serde_json::json!({"metadata": {}, "status": "Success"});
    }
    serde_json::json!({
        "metadata": {},
        "status": "Failure",
        "message": format!(
            "command terminated with non-zero exit code: error executing command [{}], exit code {code}",
            command.join(" ")
        ),
        "reason": "NonZeroExitCode",
        "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
    })
}

/// The error channel's `Status` for a failure inside the stream (not a process exit).
pub fn failure(message: &str) -> serde_json::Value {
    serde_json::json!({
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": "InternalError",
        "code": 500,
    })
}

/// A terminal size from a resize message (`{"Width":W,"Height":H}`); `None` if malformed.
pub fn parse_resize(data: &[u8]) -> Option<(u16, u16)> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Size {
        width: u16,
        height: u16,
    }
    let s: Size = serde_json::from_slice(data).ok()?;
    Some((s.width, s.height))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(s: &str) -> Query {
        Query::parse(Some(s))
    }

    #[test]
    fn options_read_as_kube_reads_them() {
        let o = StreamOptions::from_query(
            Kind::Exec,
            &q("command=sh&command=-c&command=echo+hi&container=c&stdin=true&tty=true&stderr=false"),
        )
        .unwrap();
        assert_eq!(o.command, ["sh", "-c", "echo hi"]);
        assert!(o.stdin && o.stdout && !o.stderr && o.tty);
        assert_eq!(
            StreamOptions::from_query(Kind::Exec, &q("container=c")).unwrap_err(),
            "you must specify at least 1 command"
        );
        // Attach needs no command; stdout and stderr default to true.
        let a = StreamOptions::from_query(Kind::Attach, &q("")).unwrap();
        assert!(a.stdout && a.stderr && !a.stdin);
        assert_eq!(
            StreamOptions::from_query(Kind::Attach, &q("stdout=false&stderr=0")).unwrap_err(),
            "you must specify at least 1 of stdin, stdout, stderr"
        );
        assert!(StreamOptions::from_query(Kind::Exec, &q("command=a%00b")).is_err());
    }

    #[test]
    fn options_survive_the_wire_and_the_agent_query() {
        let o = StreamOptions::from_query(
            Kind::Exec,
            &q("command=tar&command=cf&command=-&command=/a+b&stdin=1"),
        )
        .unwrap();
        let w = o.to_proto("t", "ns", "p");
        assert_eq!(StreamOptions::from_proto(&w).unwrap(), o);
        let back = Query::parse(Some(&o.agent_query("u-1")));
        assert_eq!(back.get("uid"), Some("u-1"));
        assert_eq!(StreamOptions::from_query(Kind::Exec, &back).unwrap(), o);
        let mut bad = w.clone();
        bad.kind = "shell".into();
        assert!(StreamOptions::from_proto(&bad).is_err());
        bad.kind = "exec".into();
        bad.command.clear();
        assert!(StreamOptions::from_proto(&bad).is_err());
    }

    #[test]
    fn exit_status_is_kubelets() {
        let s = exit_status(3, &["sh".into(), "-c".into(), "exit 3".into()]);
        assert_eq!(s["reason"], "NonZeroExitCode");
        assert_eq!(s["details"]["causes"][0]["message"], "3");
        assert_eq!(exit_status(0, &[])["status"], "Success");
        assert_eq!(parse_resize(br#"{"Width":80,"Height":24}"#), Some((80, 24)));
        assert_eq!(parse_resize(b"{}"), None);
        assert_eq!(frame(STDOUT, b"hi"), [0, 0, 0, 3, 1, b'h', b'i']);
    }
}
