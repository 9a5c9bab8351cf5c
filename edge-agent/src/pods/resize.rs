//! In-place resize (`pods/resize`): a running container whose spec resources changed gets its
//! cgroup limits changed without a restart (`runc update`), unless its `resizePolicy` says the
//! changed resource needs a restart; a VM gets vCPUs and memory hot-plugged through QMP. What
//! runs is recorded per container (`CState.resources`) and reported as
//! `containerStatuses[].resources`; a resize not done shows as the pod's `PodResizePending`
//! (Infeasible: more than the node has) or `PodResizeInProgress` (Error) condition.

use super::*;
use k8s_openapi::api::core::v1::ResourceRequirements;

/// A container's resources as the API holds them (`null` when it has none).
pub(super) fn resources_json(c: &Container) -> Value {
    c.resources
        .as_ref()
        .and_then(|r| serde_json::to_value(r).ok())
        .filter(|v| v.as_object().is_some_and(|o| !o.is_empty()))
        .unwrap_or(Value::Null)
}

/// A quantity of `which` (`limits` / `requests`) in `r`, in whole units.
fn amount(r: &Value, which: &str, res: &str) -> Option<f64> {
    r.pointer(&format!("/{which}/{res}"))
        .and_then(Value::as_str)
        .and_then(proto::quantity)
}

/// The resources (`cpu`, `memory`) whose value differs between `a` and `b`.
fn changed(a: &Value, b: &Value) -> Vec<&'static str> {
    ["cpu", "memory"]
        .into_iter()
        .filter(|r| {
            ["limits", "requests"]
                .iter()
                .any(|w| amount(a, w, r) != amount(b, w, r))
        })
        .collect()
}

/// Why `want` cannot be had on this node at all (more than its capacity), if it cannot.
fn infeasible(want: &Value) -> Option<String> {
    let host = crate::node::Host::read().ok()?;
    let mut over = Vec::new();
    let ask = |r: &str| amount(want, "requests", r).or_else(|| amount(want, "limits", r));
    if ask("cpu").is_some_and(|c| c > host.cpus as f64) {
        over.push(format!(
            "cpu, requested: {}, capacity: {}",
            ask("cpu").unwrap_or(0.0),
            host.cpus
        ));
    }
    if ask("memory").is_some_and(|m| m > (host.memory_kib * 1024) as f64) {
        over.push(format!(
            "memory, requested: {}, capacity: {}",
            ask("memory").unwrap_or(0.0),
            host.memory_kib * 1024
        ));
    }
    (!over.is_empty()).then(|| format!("Node didn't have enough capacity: {}", over.join("; ")))
}

impl<R: Runtime> Worker<R> {
    /// Bring running container `c` to the resources its spec now names.
    pub(super) async fn resize(&mut self, p: &PodObj, c: &Container) {
        let want = resources_json(c);
        let cs = self.state.containers.entry(c.name.clone()).or_default();
        let have = match &cs.resources {
            Some(h) => h.clone(),
            None => {
                // Started before resources were recorded: it runs what its spec said.
                cs.resources = Some(want);
                save_state(&self.node.root, &self.uid, &self.state);
                return;
            }
        };
        if have == want {
            self.transient.entry(c.name.clone()).or_default().resize = None;
            return;
        }
        let diff = changed(&have, &want);
        if diff.is_empty() {
            // Only the form changed (a quantity spelled another way).
            self.record_resources(c, want);
            return;
        }
        if let Some(why) = infeasible(&want) {
            self.transient.entry(c.name.clone()).or_default().resize =
                Some(("PodResizePending", "Infeasible", why));
            return;
        }
        let vm = proto::vm::vm_of(&p.raw);
        let policies = match &vm {
            Some(vm) => vm.resize_policy.clone(),
            None => c.resize_policy.clone(),
        }
        .unwrap_or_default();
        let restart = diff.iter().any(|r| {
            policies
                .iter()
                .any(|pol| pol.resource_name == *r && pol.restart_policy == "RestartContainer")
        });
        if restart {
            return self.restart_for_resize(p, c).await;
        }
        let done = match &vm {
            Some(_) => self.resize_vm(c, &have, &want).await,
            None => {
                let mut r = oci::resources(c);
                if let Some(o) = r.as_object_mut() {
                    o.remove("devices");
                }
                // Limits removed are not allowed by the API; a request gone means the default.
                self.node
                    .runtime
                    .update(&self.cid(&c.name), &r)
                    .await
                    .map_err(|e| e.to_string())
            }
        };
        match done {
            Ok(()) => {
                tracing::info!(pod = %p.name(), container = %c.name, resources = %want, "resized in place");
                self.record_resources(c, want);
            }
            Err(m) => {
                tracing::info!(pod = %p.name(), container = %c.name, error = %m, "resize failed");
                self.transient.entry(c.name.clone()).or_default().resize =
                    Some(("PodResizeInProgress", "Error", m));
            }
        }
    }

    fn record_resources(&mut self, c: &Container, r: Value) {
        self.state
            .containers
            .entry(c.name.clone())
            .or_default()
            .resources = Some(r);
        save_state(&self.node.root, &self.uid, &self.state);
        self.transient.entry(c.name.clone()).or_default().resize = None;
    }

    /// A resize the container's `resizePolicy` says needs a restart: stop it (SIGTERM, its
    /// grace period, SIGKILL) and start it again with the new resources, counted as a restart.
    async fn restart_for_resize(&mut self, p: &PodObj, c: &Container) {
        let id = self.cid(&c.name);
        self.event(
            p,
            Some(&c.name),
            "Normal",
            "Killing",
            format!("Container {} resize requires a restart", c.name),
        );
        let grace = p
            .spec()
            .termination_grace_period_seconds
            .unwrap_or(30)
            .clamp(0, 300) as u64;
        self.node.runtime.signal(&id, "TERM").await;
        for (signal, wait) in [("KILL", grace), ("", 10)] {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(wait);
            while matches!(self.node.runtime.state(&id), State::Running { .. })
                && tokio::time::Instant::now() < deadline
            {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            if signal.is_empty() || !matches!(self.node.runtime.state(&id), State::Running { .. }) {
                break;
            }
            self.node.runtime.signal(&id, signal).await;
        }
        let s = self.node.runtime.state(&id);
        let cs = self.state.containers.entry(c.name.clone()).or_default();
        cs.last = Term::from_state(&s, &id);
        cs.restart_count += 1;
        cs.started = false;
        save_state(&self.node.root, &self.uid, &self.state);
        if let Err(e) = self.node.runtime.remove(&id).await {
            tracing::warn!(container = %id, error = %e, "removing the container to resize failed");
        }
        let t = self.transient.entry(c.name.clone()).or_default();
        t.resize = None;
        t.not_before = None;
        self.try_start(p, c).await;
    }

    /// Hot-plug a running VM from `have` to `want`: vCPUs as CPU devices on free slots, memory
    /// as DIMMs (in the guest's 128 MiB blocks), the cgroup raised first. A VM never shrinks in
    /// place (the API refuses it).
    async fn resize_vm(&mut self, c: &Container, have: &Value, want: &Value) -> Result<(), String> {
        let sized = |v: &Value| {
            let r: Option<ResourceRequirements> = serde_json::from_value(v.clone()).ok();
            super::vm::size_of(r.as_ref())
        };
        let ((cpu0, mem0), (cpu1, mem1)) = (sized(have), sized(want));
        if cpu1 < cpu0 || mem1 < mem0 {
            return Err("a running VM's vCPUs and memory can only grow in place".into());
        }
        let add_mib = mem1 - mem0;
        if add_mib % crate::vm::qemu::DIMM_BLOCK_MIB != 0 {
            return Err(format!(
                "VM memory grows in whole blocks of {}Mi (the guest's memory block size); asked to add {add_mib}Mi",
                crate::vm::qemu::DIMM_BLOCK_MIB
            ));
        }
        let qmp = Path::new(super::vm::QMP_DIR).join(format!("{}.qmp", self.uid));
        // The cgroup first: the new guest memory and vCPUs must fit in it.
        self.vm_cgroups(&c.name, cpu1, mem1);
        // (What did get plugged before a failure stays: qemu has no partial undo, and the
        // plugging is idempotent, so the next try completes it.)
        if cpu1 > cpu0 {
            crate::vm::qemu::plug_vcpus(&qmp, cpu1).await?;
        }
        if add_mib > 0 {
            crate::vm::qemu::plug_memory(&qmp, mem1).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_changed() {
        let a = json!({"limits": {"cpu": "500m", "memory": "64Mi"}});
        let b = json!({"limits": {"cpu": "0.5", "memory": "128Mi"}});
        assert_eq!(changed(&a, &b), vec!["memory"]);
        assert!(changed(&a, &a).is_empty());
        assert!(
            infeasible(&json!({"requests": {"cpu": "100000"}})).is_some_and(|m| m.contains("cpu"))
        );
        assert!(infeasible(&json!({"requests": {"cpu": "10m"}})).is_none());
    }
}
