//! Container lifecycle: start (image, OCI bundle, runtime), restart with back-off, loss,
//! and graceful termination.

use super::*;

impl<R: Runtime> Worker<R> {
    /// Start container `c` (attempt = its restart count).
    pub(super) async fn start(
        &mut self,
        p: &PodObj,
        c: &Container,
    ) -> Result<State, (String, String)> {
        if let Some(vm) = proto::vm::vm_of(&p.raw) {
            return self.start_vm(p, c, &vm).await;
        }
        let policy = PullPolicy::parse(
            c.image_pull_policy.as_deref(),
            c.image.as_deref().unwrap_or(""),
        );
        let image_ref = c.image.clone().unwrap_or_default();
        let img = self.pull(&image_ref, policy).await?;
        let env = self.env(p, c, &img.config.env).await?;
        let env_map: BTreeMap<String, String> = env
            .iter()
            .filter_map(|kv| {
                kv.split_once('=')
                    .map(|(k, v)| (k.to_string(), v.to_string()))
            })
            .collect();
        let cfg_err = |m: String| ("CreateContainerConfigError".to_string(), m);
        let user = oci::resolve_user(&img.config.user, &img.rootfs).map_err(cfg_err)?;
        let mounts = self.mounts(p, c).map_err(cfg_err)?;
        let spec = p.spec();
        let netns = if spec.host_network.unwrap_or(false) {
            None
        } else {
            self.node
                .network
                .as_ref()
                .and_then(|n| n.get(&self.uid))
                .map(|n| n.netns)
        };
        let hostname = if spec.host_network.unwrap_or(false) {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .unwrap_or_default()
                .trim()
                .to_string()
        } else {
            Self::hostname(p)
        };
        let id = self.cid(&c.name);
        let parts = oci::PodParts {
            spec: &spec,
            netns: netns.as_deref(),
            hostname: &hostname,
            cgroups_path: format!("/atoll/{}/{}", self.uid, c.name),
        };
        let cwd = c
            .working_dir
            .clone()
            .unwrap_or_else(|| img.config.working_dir.clone());
        let oci_spec = oci::spec(
            c,
            &parts,
            oci::argv(c, &img.config, &env_map),
            env,
            &cwd,
            user,
            &mounts,
        );
        let log = self.begin_attempt(p, c, &img.id);
        self.node
            .runtime
            .start(ContainerConfig {
                id,
                image_rootfs: img.rootfs.clone(),
                spec: oci_spec,
                log,
                stdin: c.stdin.unwrap_or(false),
            })
            .await
            .map_err(|e| ("RunContainerError".to_string(), e.to_string()))
    }

    /// The image `reference` under `policy`, or kubelet's waiting reason and message.
    pub(super) async fn pull(
        &self,
        reference: &str,
        policy: PullPolicy,
    ) -> Result<crate::image::Image, (String, String)> {
        match self.node.images.ensure(reference, policy).await {
            Ok(i) => Ok(i),
            Err(ImageError::NeverPull(m)) => Err(("ErrImageNeverPull".into(), m)),
            Err(ImageError::InvalidName(m)) => Err(("InvalidImageName".into(), m)),
            Err(e) => Err(("ErrImagePull".into(), e.to_string())),
        }
    }

    /// Record a new attempt of container `c` running image `image_id` (durably, before it
    /// starts) and return its log file (`<attempt>.log`, attempt = its restart count).
    pub(super) fn begin_attempt(&mut self, p: &PodObj, c: &Container, image_id: &str) -> PathBuf {
        let cs = self.state.containers.entry(c.name.clone()).or_default();
        cs.image_id = image_id.to_string();
        cs.resources = Some(super::resize::resources_json(c));
        let attempt = cs.restart_count;
        let log = log_dir(
            &self.node.root,
            &p.tenant,
            p.namespace(),
            p.name(),
            &self.uid,
        )
        .join(&c.name)
        .join(format!("{attempt}.log"));
        save_state(&self.node.root, &self.uid, &self.state);
        log
    }

    /// Drive init containers (in order), then app containers.
    pub(super) async fn containers(&mut self, p: &PodObj, policy: &str) {
        let spec = p.spec();
        for c in spec.init_containers.iter().flatten() {
            if self.state.containers.get(&c.name).is_some_and(|s| s.done) {
                continue;
            }
            let id = self.cid(&c.name);
            match self.node.runtime.state(&id) {
                State::Running { .. } => return,
                State::Exited { exit_code: 0, .. } => {
                    self.state
                        .containers
                        .entry(c.name.clone())
                        .or_default()
                        .done = true;
                    save_state(&self.node.root, &self.uid, &self.state);
                    continue;
                }
                s @ State::Exited { .. } => {
                    if policy == "Never" {
                        return;
                    }
                    self.restart(p, c, &s).await;
                    return;
                }
                State::Missing => {
                    self.lost(&c.name);
                    self.try_start(p, c).await;
                    return;
                }
            }
        }
        // A VM whose powerSpec is Shutdown is powered off and kept off.
        let off =
            proto::vm::vm_of(&p.raw).is_some_and(|v| v.power_spec.as_deref() == Some("Shutdown"));
        for c in &spec.containers {
            let id = self.cid(&c.name);
            match self.node.runtime.state(&id) {
                State::Running { .. } if off => self.power_off(p, c).await,
                State::Running { .. } => {
                    self.transient
                        .entry(c.name.clone())
                        .or_default()
                        .powering_off = None;
                    self.resize(p, c).await
                }
                State::Missing | State::Exited { .. } if off => {
                    let t = self.transient.entry(c.name.clone()).or_default();
                    t.powering_off = None;
                    t.waiting = Some((
                        "VMPoweredOff".into(),
                        "the VM's powerSpec is Shutdown".into(),
                    ));
                }
                State::Missing => {
                    self.lost(&c.name);
                    self.try_start(p, c).await
                }
                s @ State::Exited { exit_code, .. } => {
                    if restarts(policy, exit_code) {
                        self.restart(p, c, &s).await;
                    }
                }
            }
        }
    }

    /// Power a running VM off (its powerSpec became Shutdown): an ACPI power-down, and after
    /// the pod's grace period a kill. The worker does not wait for it.
    async fn power_off(&mut self, p: &PodObj, c: &Container) {
        let id = self.cid(&c.name);
        let grace = Duration::from_secs(
            p.spec()
                .termination_grace_period_seconds
                .unwrap_or(30)
                .clamp(0, 3600) as u64,
        );
        let t = self.transient.entry(c.name.clone()).or_default();
        match t.powering_off {
            None => {
                t.powering_off = Some(tokio::time::Instant::now());
                self.event(
                    p,
                    Some(&c.name),
                    "Normal",
                    "Killing",
                    format!("Powering off VM {} (powerSpec Shutdown)", c.name),
                );
                self.node.runtime.signal(&id, "TERM").await;
            }
            Some(at) if at.elapsed() >= grace => {
                tracing::info!(pod = %p.name(), "the VM did not power off within its grace period: SIGKILL");
                self.node.runtime.signal(&id, "KILL").await;
            }
            Some(_) => {}
        }
    }

    /// A container that was started is gone without a recorded exit (the node rebooted, or
    /// someone removed it): count it as a restart with an unknown end, like kubelet.
    pub(super) fn lost(&mut self, name: &str) {
        let id = self.cid(name);
        let cs = self.state.containers.entry(name.to_string()).or_default();
        if !cs.started {
            return;
        }
        cs.started = false;
        cs.restart_count += 1;
        cs.last = Some(Term {
            exit_code: 255,
            reason: "Unknown".into(),
            message: None,
            started_at: None,
            finished_at: Utc::now(),
            container_id: id,
        });
        save_state(&self.node.root, &self.uid, &self.state);
    }

    pub(super) async fn try_start(&mut self, p: &PodObj, c: &Container) {
        let t = self.transient.entry(c.name.clone()).or_default();
        if t.not_before
            .is_some_and(|nb| tokio::time::Instant::now() < nb)
        {
            // Backing off: say so in the status, once the pull error has been shown for a
            // while (our own status update wakes this worker at once).
            let shown = t
                .failed_at
                .is_some_and(|f| f.elapsed() >= (t.delay / 2).min(Duration::from_secs(5)));
            if let Some((r, _)) = &t.waiting {
                if r == "ErrImagePull" && shown {
                    t.waiting = Some((
                        "ImagePullBackOff".into(),
                        format!(
                            "Back-off pulling image {:?}",
                            c.image.as_deref().unwrap_or("")
                        ),
                    ));
                }
            }
            return;
        }
        match self.start(p, c).await {
            Ok(_) => {
                self.event(
                    p,
                    Some(&c.name),
                    "Normal",
                    "Started",
                    format!("Started container {}", c.name),
                );
                let t = self.transient.entry(c.name.clone()).or_default();
                t.waiting = None;
                t.not_before = None;
                self.state
                    .containers
                    .entry(c.name.clone())
                    .or_default()
                    .started = true;
                save_state(&self.node.root, &self.uid, &self.state);
            }
            Err((reason, msg)) => {
                tracing::info!(pod = %p.name(), container = %c.name, %reason, %msg, "container not started");
                self.event(
                    p,
                    Some(&c.name),
                    "Warning",
                    "Failed",
                    format!("Error: {reason}: {msg}"),
                );
                let base = self.node.backoff;
                let t = self.transient.entry(c.name.clone()).or_default();
                t.delay = if t.delay.is_zero() {
                    base
                } else {
                    (t.delay * 2).min(MAX_BACKOFF)
                };
                t.not_before = Some(tokio::time::Instant::now() + t.delay);
                t.failed_at = Some(tokio::time::Instant::now());
                t.waiting = Some((reason, msg));
            }
        }
    }

    /// Restart an exited container, after its back-off.
    pub(super) async fn restart(&mut self, p: &PodObj, c: &Container, s: &State) {
        let now = tokio::time::Instant::now();
        let base = self.node.backoff;
        let t = self.transient.entry(c.name.clone()).or_default();
        if let State::Exited {
            started_at: Some(st),
            finished_at,
            ..
        } = s
        {
            if (*finished_at - *st).to_std().unwrap_or_default() >= BACKOFF_RESET {
                t.delay = Duration::ZERO;
            }
        }
        if t.not_before.is_none() {
            // First sight of this exit: wait the current back-off (none before the first
            // restart), and double it for the next one.
            if !t.delay.is_zero() {
                let msg = format!(
                    "Back-off restarting failed container {} in pod {}_{}({})",
                    c.name,
                    p.name(),
                    p.namespace(),
                    self.uid
                );
                self.event(p, Some(&c.name), "Warning", "BackOff", msg);
            }
            let t = self.transient.entry(c.name.clone()).or_default();
            t.not_before = Some(now + t.delay);
            t.wait = t.delay;
            t.delay = if t.delay.is_zero() {
                base
            } else {
                (t.delay * 2).min(MAX_BACKOFF)
            };
        }
        let t = self.transient.entry(c.name.clone()).or_default();
        if t.not_before.is_some_and(|nb| now < nb) {
            let ns = p.namespace().to_string();
            t.waiting = Some((
                "CrashLoopBackOff".into(),
                format!(
                    "back-off {} restarting failed container={} pod={}_{ns}({})",
                    human(t.wait),
                    c.name,
                    p.name(),
                    self.uid
                ),
            ));
            return;
        }
        t.not_before = None;
        t.waiting = None;
        let id = self.cid(&c.name);
        let cs = self.state.containers.entry(c.name.clone()).or_default();
        cs.last = Term::from_state(s, &id);
        cs.restart_count += 1;
        cs.started = false;
        save_state(&self.node.root, &self.uid, &self.state);
        let delay = self
            .transient
            .get(&c.name)
            .map(|t| t.delay)
            .unwrap_or_default();
        if let Err(e) = self.node.runtime.remove(&id).await {
            tracing::warn!(container = %id, error = %e, "removing the exited container failed");
        }
        self.try_start(p, c).await;
        // try_start may have set its own back-off; keep the crash back-off otherwise.
        let t = self.transient.entry(c.name.clone()).or_default();
        if t.delay < delay {
            t.delay = delay;
        }
    }

    pub(super) async fn terminate(&mut self, p: Option<&PodObj>, grace: Duration) {
        let ids: Vec<String> = match p {
            Some(p) => {
                let s = p.spec();
                s.containers
                    .iter()
                    .chain(s.init_containers.iter().flatten())
                    .map(|c| self.cid(&c.name))
                    .collect()
            }
            None => {
                let prefix = container_id(&self.uid, "");
                self.node
                    .runtime
                    .list()
                    .into_iter()
                    .filter(|i| i.starts_with(&prefix))
                    .collect()
            }
        };
        let running = |rt: &R| {
            ids.iter()
                .filter(|i| matches!(rt.state(i), State::Running { .. }))
                .cloned()
                .collect::<Vec<_>>()
        };
        if let Some(p) = p {
            for c in p.spec().containers.iter() {
                if matches!(
                    self.node.runtime.state(&self.cid(&c.name)),
                    State::Running { .. }
                ) {
                    self.event(
                        p,
                        Some(&c.name),
                        "Normal",
                        "Killing",
                        format!("Stopping container {}", c.name),
                    );
                }
            }
        }
        for id in running(&self.node.runtime) {
            self.node.runtime.signal(&id, "TERM").await;
        }
        let deadline = tokio::time::Instant::now() + grace;
        while !running(&self.node.runtime).is_empty() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let left = running(&self.node.runtime);
        for id in &left {
            tracing::info!(container = %id, "grace period over: SIGKILL");
            self.node.runtime.signal(id, "KILL").await;
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !running(&self.node.runtime).is_empty() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        for id in &ids {
            if let Err(e) = self.node.runtime.remove(id).await {
                tracing::warn!(container = %id, error = %e, "removing container failed");
            }
        }
        teardown_files(&self.node, &self.uid, &self.state).await;
        if let Some(p) = p {
            let body = serde_json::to_vec(&json!({"kind": "DeleteOptions", "apiVersion": "v1", "gracePeriodSeconds": 0, "preconditions": {"uid": self.uid}})).unwrap_or_default();
            let path = core_path(&p.tenant, p.namespace(), "pods", p.name());
            // The API server may be briefly unreachable: keep trying until it answers.
            loop {
                let Ok(req) = http::Request::delete(path.as_str())
                    .header("content-type", "application/json")
                    .body(body.clone())
                else {
                    return;
                };
                match self.node.client.request::<Value>(req).await {
                    Ok(_) => break,
                    Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => break,
                    Err(e) => {
                        tracing::warn!(pod = %p.name(), error = %e, "deleting the pod object failed; retrying");
                        tokio::select! { _ = self.cancel.cancelled() => return, _ = tokio::time::sleep(Duration::from_secs(1)) => {} }
                    }
                }
            }
            tracing::info!(pod = %p.name(), namespace = %p.namespace(), "pod stopped and removed");
        }
    }
}
