//! The pod sandbox: its directory, network namespace and interfaces, /etc files, and its
//! teardown (files, cgroups).

use super::*;

/// Remove the pod's (empty) cgroup directories; runc removes the containers' own, the shim a
/// VM's (any left empty go too).
pub fn remove_cgroups(uid: &str) {
    let Ok(rd) = std::fs::read_dir("/sys/fs/cgroup") else {
        return;
    };
    for sub in rd.filter_map(|e| e.ok()) {
        let pod = sub.path().join("atoll").join(uid);
        if let Ok(children) = std::fs::read_dir(&pod) {
            for c in children.filter_map(|e| e.ok()) {
                if c.file_type().is_ok_and(|t| t.is_dir()) {
                    let _ = std::fs::remove_dir(c.path());
                }
            }
        }
        let _ = std::fs::remove_dir(pod);
    }
}

pub(super) async fn teardown_files<R: Runtime>(node: &Node<R>, uid: &str, st: &PodState) {
    remove_cgroups(uid);
    let _ = std::fs::remove_file(Path::new(super::vm::QMP_DIR).join(format!("{uid}.qmp")));
    if let Some(net) = &node.network {
        if let Err(e) = net.teardown(uid, &st.tenant).await {
            tracing::warn!(pod = %uid, error = %e, "network teardown failed");
        }
    }
    let dir = pods_dir(&node.root).join(uid);
    crate::runtime::unmount_all(&dir).await;
    let _ = std::fs::remove_dir_all(&dir);
    if !st.name.is_empty() {
        let _ = std::fs::remove_dir_all(log_dir(
            &node.root,
            &st.tenant,
            &st.namespace,
            &st.name,
            uid,
        ));
    }
}

impl<R: Runtime> Worker<R> {
    pub(super) async fn sandbox(&mut self, p: &PodObj) -> Result<(), String> {
        let spec = p.spec();
        let host_network = spec.host_network.unwrap_or(false);
        if self.pod_ip.is_none() {
            if host_network {
                self.pod_ip = Some(self.node.node_ip.clone());
            } else if let Some(net) = &self.node.network {
                let n = net
                    .setup(&self.uid, &p.tenant)
                    .await
                    .map_err(|e| format!("setting up the pod network: {e}"))?;
                self.pod_ip = Some(n.ip.to_string());
            } else {
                return Err("this node has no pod network (CNI) configured".into());
            }
        }
        if !self.volumes_ready {
            self.write_etc(p, host_network)?;
            self.volumes(p).await?;
            self.volumes_ready = true;
        }
        Ok(())
    }

    pub(super) fn hostname(p: &PodObj) -> String {
        p.spec().hostname.unwrap_or_else(|| p.name().to_string())
    }

    pub(super) fn write_etc(&self, p: &PodObj, host_network: bool) -> Result<(), String> {
        let dir = self.pod_dir().join("etc");
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let host = Self::hostname(p);
        let hosts = if host_network {
            std::fs::read_to_string("/etc/hosts").unwrap_or_default()
        } else {
            format!(
                "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n{}\t{host}\n",
                self.pod_ip.as_deref().unwrap_or("")
            )
        };
        let resolv = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
        for (f, body) in [
            ("hosts", hosts),
            ("resolv.conf", resolv),
            ("hostname", format!("{host}\n")),
        ] {
            std::fs::write(dir.join(f), body).map_err(|e| format!("{f}: {e}"))?;
        }
        Ok(())
    }
}
