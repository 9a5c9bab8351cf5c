//! Probes, as kubelet runs them: startup, liveness and readiness, each exec, httpGet, tcpSocket
//! or grpc, with `initialDelaySeconds`, `periodSeconds`, `timeoutSeconds`, `successThreshold`
//! and `failureThreshold`. A startup probe gates the other two (and the container's `started`);
//! readiness drives `ready` (and so the pod's Ready condition and the READY column); a liveness
//! or startup probe that fails its threshold kills the container (its grace period, then
//! SIGKILL), which then restarts by the pod's policy with back-off. Each failure is an
//! `Unhealthy` event, each kill a `Killing` one.
//!
//! Probes run in tasks of their own and report back to the worker, so a slow probe holds up
//! neither the worker nor the other probes.

use std::time::Duration;

use k8s_openapi::api::core::v1::Probe;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::*;

/// Which probe.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) enum Kind {
    Startup,
    Liveness,
    Readiness,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Startup => "Startup",
            Kind::Liveness => "Liveness",
            Kind::Readiness => "Readiness",
        }
    }
}

/// A probe's state for one attempt of a container.
#[derive(Clone, Debug, Default)]
pub(super) struct ProbeState {
    /// The attempt it is for (the container's start time).
    attempt: Option<DateTime<Utc>>,
    next: Option<Instant>,
    successes: i32,
    failures: i32,
    /// The current verdict: `None` until the thresholds decide.
    pub ok: Option<bool>,
    in_flight: bool,
}

/// What a probe run found.
pub(super) struct Outcome {
    container: String,
    kind: Kind,
    attempt: DateTime<Utc>,
    ok: bool,
    message: String,
}

/// The channel probe runs report on.
pub(super) type Outcomes = (mpsc::Sender<Outcome>, mpsc::Receiver<Outcome>);

pub(super) fn channel() -> Outcomes {
    mpsc::channel(64)
}

fn probe_of(c: &Container, kind: Kind) -> Option<&Probe> {
    match kind {
        Kind::Startup => c.startup_probe.as_ref(),
        Kind::Liveness => c.liveness_probe.as_ref(),
        Kind::Readiness => c.readiness_probe.as_ref(),
    }
}

fn secs(v: Option<i32>, default: i32, min: i32) -> i32 {
    v.unwrap_or(default).max(min)
}

/// How a probe reaches its target.
enum Action {
    Exec(Vec<String>),
    Http {
        https: bool,
        host: String,
        port: u16,
        path: String,
        headers: Vec<(String, String)>,
    },
    Tcp {
        host: String,
        port: u16,
    },
    Grpc {
        host: String,
        port: u16,
        service: String,
    },
}

fn port_of(c: &Container, p: &IntOrString) -> Result<u16, String> {
    match p {
        IntOrString::Int(n) => u16::try_from(*n)
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| format!("invalid port {n}")),
        IntOrString::String(name) => {
            if let Ok(n) = name.parse::<u16>() {
                return Ok(n);
            }
            c.ports
                .iter()
                .flatten()
                .find(|cp| cp.name.as_deref() == Some(name))
                .and_then(|cp| u16::try_from(cp.container_port).ok())
                .ok_or_else(|| format!("port {name:?} is not a named port of the container"))
        }
    }
}

fn action(probe: &Probe, c: &Container, pod_ip: &str) -> Result<Action, String> {
    if let Some(e) = &probe.exec {
        return Ok(Action::Exec(e.command.clone().unwrap_or_default()));
    }
    if let Some(h) = &probe.http_get {
        return Ok(Action::Http {
            https: h.scheme.as_deref() == Some("HTTPS"),
            host: h.host.clone().unwrap_or_else(|| pod_ip.to_string()),
            port: port_of(c, &h.port)?,
            path: h
                .path
                .clone()
                .filter(|p| p.starts_with('/'))
                .unwrap_or_else(|| "/".into()),
            headers: h
                .http_headers
                .iter()
                .flatten()
                .map(|h| (h.name.clone(), h.value.clone()))
                .collect(),
        });
    }
    if let Some(t) = &probe.tcp_socket {
        return Ok(Action::Tcp {
            host: t.host.clone().unwrap_or_else(|| pod_ip.to_string()),
            port: port_of(c, &t.port)?,
        });
    }
    if let Some(g) = &probe.grpc {
        return Ok(Action::Grpc {
            host: pod_ip.to_string(),
            port: u16::try_from(g.port).map_err(|_| format!("invalid port {}", g.port))?,
            service: g.service.clone().unwrap_or_default(),
        });
    }
    Err("the probe has no handler".into())
}

/// Run one probe: success, or failure with kubelet's kind of message.
async fn run<R: Runtime>(
    node: &Node<R>,
    id: &str,
    a: Action,
    timeout: Duration,
) -> Result<(), String> {
    let timed_out = || {
        format!(
            "timeout: the probe did not answer in {}s",
            timeout.as_secs()
        )
    };
    match a {
        Action::Exec(cmd) => match node.runtime.exec_probe(id, &cmd, timeout).await {
            Ok((0, _)) => Ok(()),
            Ok((code, out)) => Err(if out.trim().is_empty() {
                format!("command {cmd:?} exited with {code}")
            } else {
                out.trim().chars().take(1024).collect()
            }),
            Err(e) => Err(e.to_string()),
        },
        Action::Tcp { host, port } => {
            let addr = format!("{host}:{port}");
            match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(&addr)).await {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(e)) => Err(format!("dial tcp {addr}: {e}")),
                Err(_) => Err(timed_out()),
            }
        }
        Action::Http {
            https,
            host,
            port,
            path,
            headers,
        } => match tokio::time::timeout(timeout, http_get(https, &host, port, &path, &headers))
            .await
        {
            Ok(r) => r,
            Err(_) => Err(timed_out()),
        },
        Action::Grpc {
            host,
            port,
            service,
        } => match tokio::time::timeout(timeout, grpc_check(&host, port, &service)).await {
            Ok(r) => r,
            Err(_) => Err(timed_out()),
        },
    }
}

/// kubelet's HTTP probe: a GET, any 2xx or 3xx is a success (redirects are not followed);
/// HTTPS without verifying the certificate.
async fn http_get(
    https: bool,
    host: &str,
    port: u16,
    path: &str,
    headers: &[(String, String)],
) -> Result<(), String> {
    use http_body_util::BodyExt;
    let addr = format!("{host}:{port}");
    let tcp = tokio::net::TcpStream::connect(&addr)
        .await
        .map_err(|e| format!("Get \"http://{addr}{path}\": {e}"))?;
    let mut req = http::Request::get(path).header(http::header::HOST, &addr);
    let mut has_agent = false;
    for (k, v) in headers {
        has_agent |= k.eq_ignore_ascii_case("user-agent");
        req = req.header(k.as_str(), v.as_str());
    }
    if !has_agent {
        req = req.header(http::header::USER_AGENT, "kube-probe/1.32");
    }
    let req = req
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .map_err(|e| format!("invalid probe request: {e}"))?;
    let status = if https {
        let cfg = proto::tls::insecure_client().map_err(|e| format!("TLS: {e}"))?;
        let tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(cfg));
        let name = rustls::pki_types::ServerName::try_from(host.to_string())
            .map_err(|e| format!("invalid host {host:?}: {e}"))?;
        let io = tls
            .connect(name, tcp)
            .await
            .map_err(|e| format!("Get \"https://{addr}{path}\": {e}"))?;
        send(hyper_util::rt::TokioIo::new(io), req).await?
    } else {
        send(hyper_util::rt::TokioIo::new(tcp), req).await?
    };
    async fn send<I>(
        io: I,
        req: http::Request<http_body_util::Empty<bytes::Bytes>>,
    ) -> Result<http::StatusCode, String>
    where
        I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    {
        let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
            .await
            .map_err(|e| e.to_string())?;
        let conn = tokio::spawn(conn);
        let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
        let status = resp.status();
        // Read (a bounded part of) the body, as kubelet does, then drop the connection.
        let mut body = resp.into_body();
        let mut read = 0usize;
        while read < 10 * 1024 {
            match body.frame().await {
                Some(Ok(f)) => read += f.data_ref().map_or(0, |d| d.len()),
                _ => break,
            }
        }
        conn.abort();
        Ok(status)
    }
    if (200..400).contains(&status.as_u16()) {
        Ok(())
    } else {
        Err(format!(
            "HTTP probe failed with statuscode: {}",
            status.as_u16()
        ))
    }
}

/// The gRPC health-checking protocol (`grpc.health.v1.Health/Check`) over HTTP/2 without TLS:
/// SERVING is a success.
async fn grpc_check(host: &str, port: u16, service: &str) -> Result<(), String> {
    use http_body_util::BodyExt;
    let addr = format!("{host}:{port}");
    let tcp = tokio::net::TcpStream::connect(&addr)
        .await
        .map_err(|e| format!("failed to connect service {addr:?} within the timeout: {e}"))?;
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tcp),
    )
    .await
    .map_err(|e| e.to_string())?;
    let conn = tokio::spawn(conn);
    // HealthCheckRequest { string service = 1; } in a gRPC message (uncompressed).
    let mut msg = Vec::with_capacity(service.len() + 2);
    if !service.is_empty() {
        msg.push(0x0a);
        let mut n = service.len();
        while n >= 0x80 {
            msg.push((n as u8) | 0x80);
            n >>= 7;
        }
        msg.push(n as u8);
        msg.extend_from_slice(service.as_bytes());
    }
    let mut body = vec![0u8];
    body.extend_from_slice(&u32::try_from(msg.len()).unwrap_or(0).to_be_bytes());
    body.extend_from_slice(&msg);
    let req = http::Request::post(format!("http://{addr}/grpc.health.v1.Health/Check"))
        .header(http::header::CONTENT_TYPE, "application/grpc")
        .header("te", "trailers")
        .header(http::header::USER_AGENT, "kube-probe/1.32")
        .body(http_body_util::Full::new(bytes::Bytes::from(body)))
        .map_err(|e| e.to_string())?;
    let resp = sender.send_request(req).await.map_err(|e| e.to_string());
    let result = async {
        let resp = resp?;
        let header_status = resp
            .headers()
            .get("grpc-status")
            .and_then(|v| v.to_str().ok())
            .map(String::from);
        let collected = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?;
        let status = collected
            .trailers()
            .and_then(|t| t.get("grpc-status"))
            .and_then(|v| v.to_str().ok())
            .map(String::from)
            .or(header_status)
            .unwrap_or_default();
        if status != "0" {
            return Err(format!("rpc error: grpc-status {status}"));
        }
        let data = collected.to_bytes();
        // HealthCheckResponse { ServingStatus status = 1; } with SERVING = 1.
        let serving = data.len() >= 5 && data[5..].windows(2).any(|w| w == [0x08, 0x01]);
        if serving {
            Ok(())
        } else {
            Err("service unhealthy (responded with \"NOT_SERVING\")".into())
        }
    }
    .await;
    conn.abort();
    result
}

impl<R: Runtime> Worker<R> {
    /// Take in what probe runs found, and start the runs that are due.
    pub(super) async fn probes(&mut self, p: &PodObj) {
        while let Ok(o) = self.outcomes.1.try_recv() {
            self.judge(p, o);
        }
        let spec = p.spec();
        let vm = proto::vm::is_vm(&p.raw);
        for c in &spec.containers {
            let id = self.cid(&c.name);
            let started_at = match self.node.runtime.state(&id) {
                State::Running { started_at } => started_at,
                _ => {
                    self.probe_state.remove(&c.name);
                    continue;
                }
            };
            let has_startup = c.startup_probe.is_some();
            let startup_done = !has_startup || self.probe_ok(&c.name, Kind::Startup) == Some(true);
            for kind in [Kind::Startup, Kind::Liveness, Kind::Readiness] {
                let Some(probe) = probe_of(c, kind) else {
                    continue;
                };
                if (kind == Kind::Startup) == startup_done {
                    continue;
                }
                let st = self
                    .probe_state
                    .entry(c.name.clone())
                    .or_default()
                    .entry(kind)
                    .or_default();
                if st.attempt != Some(started_at) {
                    let delay = secs(probe.initial_delay_seconds, 0, 0);
                    let since = (Utc::now() - started_at).to_std().unwrap_or_default();
                    *st = ProbeState {
                        attempt: Some(started_at),
                        next: Some(
                            Instant::now()
                                + Duration::from_secs(delay as u64).saturating_sub(since),
                        ),
                        ..Default::default()
                    };
                }
                if st.in_flight || st.next.is_some_and(|n| Instant::now() < n) {
                    continue;
                }
                if st.ok == Some(true) && kind == Kind::Startup {
                    continue;
                }
                let period = secs(probe.period_seconds, 10, 1);
                st.next = Some(Instant::now() + Duration::from_secs(period as u64));
                st.in_flight = true;
                let timeout = Duration::from_secs(secs(probe.timeout_seconds, 1, 1) as u64);
                let pod_ip = self.pod_ip.clone().unwrap_or_default();
                let a = match action(probe, c, &pod_ip) {
                    Ok(Action::Exec(_)) if vm => Err("exec probes need a container".to_string()),
                    other => other,
                };
                let (node, tx, id, name) = (
                    self.node.clone(),
                    self.outcomes.0.clone(),
                    id.clone(),
                    c.name.clone(),
                );
                tokio::spawn(async move {
                    let r = match a {
                        Ok(a) => run(&node, &id, a, timeout).await,
                        Err(e) => Err(e),
                    };
                    let _ = tx
                        .send(Outcome {
                            container: name,
                            kind,
                            attempt: started_at,
                            ok: r.is_ok(),
                            message: r.err().unwrap_or_default(),
                        })
                        .await;
                });
            }
        }
    }

    /// The verdict of a container's probe for its current attempt.
    pub(super) fn probe_ok(&self, container: &str, kind: Kind) -> Option<bool> {
        self.probe_state
            .get(container)
            .and_then(|m| m.get(&kind))
            .and_then(|s| s.ok)
    }

    fn judge(&mut self, p: &PodObj, o: Outcome) {
        let spec = p.spec();
        let Some(c) = spec.containers.iter().find(|c| c.name == o.container) else {
            return;
        };
        let Some(probe) = probe_of(c, o.kind) else {
            return;
        };
        let Some(st) = self
            .probe_state
            .get_mut(&o.container)
            .and_then(|m| m.get_mut(&o.kind))
        else {
            return;
        };
        if st.attempt != Some(o.attempt) {
            return;
        }
        st.in_flight = false;
        let success_threshold = match o.kind {
            Kind::Readiness => secs(probe.success_threshold, 1, 1),
            _ => 1,
        };
        let failure_threshold = secs(probe.failure_threshold, 3, 1);
        if o.ok {
            st.failures = 0;
            st.successes += 1;
            if st.successes >= success_threshold {
                st.ok = Some(true);
            }
            return;
        }
        st.successes = 0;
        st.failures += 1;
        let give_up = st.failures >= failure_threshold;
        if give_up {
            st.ok = Some(false);
        }
        self.event(
            p,
            Some(&o.container),
            "Warning",
            "Unhealthy",
            format!("{} probe failed: {}", o.kind.name(), o.message),
        );
        if give_up && o.kind != Kind::Readiness {
            let grace = probe
                .termination_grace_period_seconds
                .or(spec.termination_grace_period_seconds)
                .unwrap_or(30)
                .clamp(0, 3600) as u64;
            self.event(
                p,
                Some(&o.container),
                "Normal",
                "Killing",
                format!(
                    "Container {} failed {} probe, will be restarted",
                    o.container,
                    o.kind.name().to_lowercase()
                ),
            );
            // Stop this attempt's probes; the next attempt starts its own.
            self.probe_state.remove(&o.container);
            let (node, id) = (self.node.clone(), self.cid(&o.container));
            tokio::spawn(async move {
                node.runtime.signal(&id, "TERM").await;
                let until = Instant::now() + Duration::from_secs(grace);
                while Instant::now() < until {
                    if !matches!(node.runtime.state(&id), State::Running { .. }) {
                        return;
                    }
                    tokio::time::sleep(TICK).await;
                }
                node.runtime.signal(&id, "KILL").await;
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_resolve_by_number_and_name() {
        let c: Container = serde_json::from_value(json!({
            "name": "c", "ports": [{"name": "http", "containerPort": 8080}]
        }))
        .unwrap();
        assert_eq!(port_of(&c, &IntOrString::Int(80)), Ok(80));
        assert_eq!(port_of(&c, &IntOrString::String("http".into())), Ok(8080));
        assert!(port_of(&c, &IntOrString::String("grpc".into())).is_err());
        assert!(port_of(&c, &IntOrString::Int(0)).is_err());
    }

    /// The gRPC client against a real HTTP/2 server answering the health protocol.
    #[tokio::test]
    async fn grpc_health_checks_read_the_serving_status() {
        use hyper::service::service_fn;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                tokio::spawn(async move {
                    let svc = service_fn(|req: http::Request<hyper::body::Incoming>| async move {
                        use http_body_util::BodyExt;
                        let body = req.into_body().collect().await.unwrap().to_bytes();
                        // "sick" is NOT_SERVING (2); anything else SERVING (1).
                        let status = if body.ends_with(b"sick") { 2 } else { 1 };
                        let msg = [0u8, 0, 0, 0, 2, 0x08, status];
                        let mut trailers = http::HeaderMap::new();
                        trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
                        let frames = futures_util::stream::iter([
                            Ok::<_, std::convert::Infallible>(hyper::body::Frame::data(
                                bytes::Bytes::copy_from_slice(&msg),
                            )),
                            Ok(hyper::body::Frame::trailers(trailers)),
                        ]);
                        Ok::<_, std::convert::Infallible>(
                            http::Response::builder()
                                .header("content-type", "application/grpc")
                                .body(http_body_util::StreamBody::new(frames))
                                .unwrap(),
                        )
                    });
                    let _ = hyper::server::conn::http2::Builder::new(
                        hyper_util::rt::TokioExecutor::new(),
                    )
                    .serve_connection(hyper_util::rt::TokioIo::new(tcp), svc)
                    .await;
                });
            }
        });
        assert_eq!(grpc_check("127.0.0.1", port, "").await, Ok(()));
        assert_eq!(grpc_check("127.0.0.1", port, "web").await, Ok(()));
        let e = grpc_check("127.0.0.1", port, "sick").await.unwrap_err();
        assert!(e.contains("NOT_SERVING"), "{e}");
        let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let closed_port = closed.local_addr().unwrap().port();
        drop(closed);
        assert!(grpc_check("127.0.0.1", closed_port, "").await.is_err());
    }
}
