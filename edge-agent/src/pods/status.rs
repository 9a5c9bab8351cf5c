//! Reporting: container statuses, the pod's status written back to the API (only when it
//! changed), and events.

use super::*;

impl<R: Runtime> Worker<R> {
    pub(super) fn container_status(
        &self,
        c: &Container,
        init: bool,
        policy: &str,
        app_blocked: bool,
    ) -> Value {
        let id = self.cid(&c.name);
        let cs = self
            .state
            .containers
            .get(&c.name)
            .cloned()
            .unwrap_or_default();
        let tr = self.transient.get(&c.name).cloned().unwrap_or_default();
        let ts = |t: &DateTime<Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let rs = self.node.runtime.state(&id);
        // A startup probe holds `started` (and the other probes) until it succeeds; a
        // readiness probe holds `ready` until it succeeds.
        let started_by_probe = c.startup_probe.is_none()
            || self.probe_ok(&c.name, probes::Kind::Startup) == Some(true);
        let ready_by_probe = c.readiness_probe.is_none()
            || self.probe_ok(&c.name, probes::Kind::Readiness) == Some(true);
        let (state, ready, started) = match &rs {
            State::Running { started_at } => (
                json!({"running": {"startedAt": ts(started_at)}}),
                !init && started_by_probe && ready_by_probe,
                init || started_by_probe,
            ),
            State::Exited { exit_code, .. } => {
                let term = Term::from_state(&rs, &id)
                    .map(|t| t.json())
                    .unwrap_or(Value::Null);
                let will_restart = if init {
                    *exit_code != 0 && policy != "Never"
                } else {
                    restarts(policy, *exit_code)
                };
                match (&tr.waiting, will_restart) {
                    (Some((r, m)), true) => (
                        json!({"waiting": {"reason": r, "message": m}}),
                        false,
                        false,
                    ),
                    _ => (json!({"terminated": term}), false, false),
                }
            }
            State::Missing => {
                let (r, m) = tr.waiting.clone().unwrap_or_else(|| {
                    if app_blocked {
                        ("PodInitializing".into(), String::new())
                    } else {
                        ("ContainerCreating".into(), String::new())
                    }
                });
                let mut w = json!({"reason": r});
                if !m.is_empty() {
                    w["message"] = json!(m);
                }
                (json!({"waiting": w}), false, false)
            }
        };
        // A waiting container whose current attempt ended shows that attempt as lastState.
        let last = match (&rs, state.get("waiting")) {
            (State::Exited { .. }, Some(_)) => Term::from_state(&rs, &id).map(|t| t.json()),
            _ => cs.last.as_ref().map(Term::json),
        };
        let mut v = json!({
            "name": c.name,
            "image": c.image.clone().unwrap_or_default(),
            "imageID": cs.image_id,
            "ready": ready,
            "restartCount": cs.restart_count,
            "started": started,
            "state": state,
            "lastState": last.map_or(json!({}), |t| json!({"terminated": t})),
        });
        if !matches!(rs, State::Missing) {
            v["containerID"] = json!(format!("runc://{id}"));
        }
        // What the container runs with (a resize changes it in place), and what the node
        // allocated to it.
        if let Some(r) = cs.resources.as_ref().filter(|_| !init) {
            let r = if r.is_null() { json!({}) } else { r.clone() };
            if let Some(req) = r.get("requests") {
                v["allocatedResources"] = req.clone();
            }
            v["resources"] = r;
        }
        v
    }

    pub(super) async fn report(&mut self, p: &PodObj, policy: &str) {
        let spec = p.spec();
        let inits: Vec<Value> = spec
            .init_containers
            .iter()
            .flatten()
            .map(|c| self.container_status(c, true, policy, false))
            .collect();
        let init_done = spec
            .init_containers
            .iter()
            .flatten()
            .all(|c| self.state.containers.get(&c.name).is_some_and(|s| s.done));
        let init_failed = policy == "Never"
            && inits.iter().any(|s| {
                s.pointer("/state/terminated/exitCode")
                    .and_then(Value::as_i64)
                    .is_some_and(|c| c != 0)
            });
        let apps: Vec<Value> = spec
            .containers
            .iter()
            .map(|c| self.container_status(c, false, policy, !init_done))
            .collect();
        let mut phase = phase(policy, !init_done, init_failed, &apps);
        if let Some(t) = &self.state.terminal {
            phase = if t == "Succeeded" {
                "Succeeded"
            } else {
                "Failed"
            };
        } else if matches!(phase, "Succeeded" | "Failed") {
            self.state.terminal = Some(phase.to_string());
            save_state(&self.node.root, &self.uid, &self.state);
        }
        let all_running = apps.iter().all(|s| s["ready"] == true);
        let existing = |ty: &str| -> Option<Value> {
            p.raw
                .pointer("/status/conditions")
                .and_then(Value::as_array)
                .and_then(|a| a.iter().find(|c| c["type"] == ty).cloned())
        };
        let now = Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let cond = |ty: &str, ok: bool, reason: Option<&str>| {
            let status = if ok { "True" } else { "False" };
            let since = existing(ty)
                .filter(|c| c["status"] == status)
                .and_then(|c| c.get("lastTransitionTime").cloned())
                .unwrap_or_else(|| json!(now));
            let mut c = json!({"type": ty, "status": status, "lastProbeTime": null, "lastTransitionTime": since});
            if let Some(r) = reason.filter(|_| !ok) {
                c["reason"] = json!(r);
            }
            c
        };
        let terminal = matches!(phase, "Succeeded" | "Failed");
        let ready = all_running && !terminal;
        let conditions = vec![
            cond("PodReadyToStartContainers", self.pod_ip.is_some(), None),
            cond("Initialized", init_done, Some("ContainersNotInitialized")),
            cond(
                "Ready",
                ready,
                Some(if terminal {
                    "PodCompleted"
                } else {
                    "ContainersNotReady"
                }),
            ),
            cond(
                "ContainersReady",
                ready,
                Some(if terminal {
                    "PodCompleted"
                } else {
                    "ContainersNotReady"
                }),
            ),
            existing("PodScheduled").unwrap_or_else(|| cond("PodScheduled", true, None)),
        ];
        let mut conditions = conditions;
        // A resize not done yet (kubelet's PodResizePending / PodResizeInProgress).
        let resize = spec
            .containers
            .iter()
            .filter_map(|c| self.transient.get(&c.name).and_then(|t| t.resize.clone()))
            .next();
        if let Some((ty, reason, message)) = resize {
            let mut c = cond(ty, true, None);
            c["reason"] = json!(reason);
            c["message"] = json!(message);
            conditions.push(c);
        }
        let mut status = json!({
            "phase": phase,
            "conditions": conditions,
            "hostIP": self.node.node_ip,
            "hostIPs": [{"ip": self.node.node_ip}],
            "containerStatuses": apps,
        });
        if !inits.is_empty() {
            status["initContainerStatuses"] = json!(inits);
        }
        if let (Some(vm), Some(c)) = (proto::vm::vm_of(&p.raw), status["containerStatuses"].get(0))
        {
            status["virtualMachineStatus"] = super::vm::vm_status(&vm, c);
        }
        if let Some(ip) = &self.pod_ip {
            status["podIP"] = json!(ip);
            status["podIPs"] = json!([{"ip": ip}]);
        }
        if let Some(st) = &self.state.start_time {
            status["startTime"] = json!(st.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
        }
        // Post only what changed (the API's copy included: another writer may have reset it).
        let api_copy = p.raw.get("status").cloned().unwrap_or(Value::Null);
        if self.posted.as_ref() == Some(&status) && same_status(&api_copy, &status) {
            return;
        }
        if same_status(&api_copy, &status) {
            self.posted = Some(status);
            return;
        }
        match self.patch_status(p, &status).await {
            Ok(_) => self.posted = Some(status),
            Err(e) => {
                tracing::debug!(pod = %p.name(), error = %e, "posting pod status failed");
                self.posted = None;
            }
        }
    }

    /// Merge-patch the pod's status with `status`.
    async fn patch_status(&self, p: &PodObj, status: &Value) -> Result<(), String> {
        let body = serde_json::to_vec(&json!({"status": status})).unwrap_or_default();
        let req = http::Request::patch(format!(
            "{}/status",
            core_path(&p.tenant, p.namespace(), "pods", p.name())
        ))
        .header("content-type", "application/merge-patch+json")
        .body(body)
        .map_err(|e| e.to_string())?;
        self.node
            .client
            .request::<Value>(req)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    /// Refuse a pod this node cannot run: phase Failed with `reason` and `message` (as kubelet
    /// reports a pod it does not admit), and a Warning event; posted once.
    pub(super) async fn refuse(&mut self, p: &PodObj, reason: &str, message: String) {
        if self.posted.is_some()
            || p.raw.pointer("/status/reason").and_then(Value::as_str) == Some(reason)
        {
            return;
        }
        let status = json!({"phase": "Failed", "reason": reason, "message": message,
            "hostIP": self.node.node_ip, "hostIPs": [{"ip": self.node.node_ip}]});
        match self.patch_status(p, &status).await {
            Ok(_) => {
                self.posted = Some(status);
                self.event(p, None, "Warning", reason, message);
            }
            Err(e) => tracing::debug!(pod = %p.name(), error = %e, "posting pod status failed"),
        }
    }

    /// Stop every container (SIGTERM, up to `grace`, SIGKILL), tear the pod down, and remove
    /// the pod object (when there still is one).
    /// Record an event about the pod (like kubelet's; fire and forget).
    pub(super) fn event(
        &self,
        p: &PodObj,
        container: Option<&str>,
        ty: &str,
        reason: &str,
        message: String,
    ) {
        let now = Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let mut involved = json!({"apiVersion": "v1", "kind": "Pod", "namespace": p.namespace(), "name": p.name(), "uid": self.uid});
        if let Some(c) = container {
            involved["fieldPath"] = json!(format!("spec.containers{{{c}}}"));
        }
        let ev = json!({
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"generateName": format!("{}.", p.name()), "namespace": p.namespace()},
            "involvedObject": involved, "type": ty, "reason": reason, "message": message,
            "source": {"component": "kubelet", "host": self.node.name},
            "reportingComponent": "kubelet", "reportingInstance": self.node.name,
            "firstTimestamp": now, "lastTimestamp": now, "count": 1,
        });
        let path = format!(
            "{}/events",
            core_path(&p.tenant, p.namespace(), "x", "").trim_end_matches("/x/")
        );
        let client = self.node.client.clone();
        tokio::spawn(async move {
            let Ok(req) = http::Request::post(path)
                .header("content-type", "application/json")
                .body(serde_json::to_vec(&ev).unwrap_or_default())
            else {
                return;
            };
            if let Err(e) = client.request::<Value>(req).await {
                tracing::debug!(error = %e, "recording an event failed");
            }
        });
    }
}

/// Whether the API's copy of a status already says what we would post.
pub(super) fn same_status(api: &Value, ours: &Value) -> bool {
    let Some(o) = ours.as_object() else {
        return false;
    };
    o.iter().all(|(k, v)| api.get(k) == Some(v))
}
