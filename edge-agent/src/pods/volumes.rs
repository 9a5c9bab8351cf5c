//! Volumes: emptyDir, hostPath, configMap, secret, projected and downward API, written
//! under the pod directory and mounted into containers.

use super::*;

impl<R: Runtime> Worker<R> {
    pub(super) async fn get_obj(
        &self,
        p: &PodObj,
        plural: &str,
        name: &str,
    ) -> Result<Option<Value>, String> {
        let req = http::Request::get(core_path(&p.tenant, p.namespace(), plural, name))
            .body(Vec::new())
            .map_err(|e| e.to_string())?;
        match self.node.client.request::<Value>(req).await {
            Ok(v) => Ok(Some(v)),
            Err(kube::Error::Api(e)) if e.code == 404 => Ok(None),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Key → bytes of a configmap or secret.
    pub(super) async fn data(
        &self,
        p: &PodObj,
        plural: &str,
        name: &str,
    ) -> Result<Option<BTreeMap<String, Vec<u8>>>, String> {
        use base64::Engine;
        let Some(v) = self.get_obj(p, plural, name).await? else {
            return Ok(None);
        };
        let mut out = BTreeMap::new();
        let b64 = |s: &str| {
            base64::engine::general_purpose::STANDARD
                .decode(s)
                .unwrap_or_default()
        };
        if let Some(m) = v.get("data").and_then(Value::as_object) {
            for (k, val) in m {
                let s = val.as_str().unwrap_or("");
                out.insert(
                    k.clone(),
                    if plural == "secrets" {
                        b64(s)
                    } else {
                        s.as_bytes().to_vec()
                    },
                );
            }
        }
        if let Some(m) = v.get("binaryData").and_then(Value::as_object) {
            for (k, val) in m {
                out.insert(k.clone(), b64(val.as_str().unwrap_or("")));
            }
        }
        if let Some(m) = v.get("stringData").and_then(Value::as_object) {
            for (k, val) in m {
                out.insert(k.clone(), val.as_str().unwrap_or("").as_bytes().to_vec());
            }
        }
        Ok(Some(out))
    }

    pub(super) async fn volumes(&self, p: &PodObj) -> Result<(), String> {
        use std::os::unix::fs::PermissionsExt;
        let spec = p.spec();
        let vdir = self.pod_dir().join("volumes");
        for v in spec.volumes.iter().flatten() {
            let dir = vdir.join(&v.name);
            std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            let projected = |plural: &str,
                             name: &str,
                             items: &Option<Vec<k8s_openapi::api::core::v1::KeyToPath>>,
                             mode: Option<i32>,
                             optional: Option<bool>| {
                (
                    plural.to_string(),
                    name.to_string(),
                    items.clone(),
                    mode,
                    optional.unwrap_or(false),
                )
            };
            let sources = if let Some(cm) = &v.config_map {
                vec![projected(
                    "configmaps",
                    &cm.name,
                    &cm.items,
                    cm.default_mode,
                    cm.optional,
                )]
            } else if let Some(s) = &v.secret {
                vec![projected(
                    "secrets",
                    s.secret_name.as_deref().unwrap_or(""),
                    &s.items,
                    s.default_mode,
                    s.optional,
                )]
            } else if let Some(pr) = &v.projected {
                let mut out = Vec::new();
                for src in pr.sources.iter().flatten() {
                    if let Some(cm) = &src.config_map {
                        out.push(projected(
                            "configmaps",
                            &cm.name,
                            &cm.items,
                            pr.default_mode,
                            cm.optional,
                        ));
                    } else if let Some(s) = &src.secret {
                        out.push(projected(
                            "secrets",
                            &s.name,
                            &s.items,
                            pr.default_mode,
                            s.optional,
                        ));
                    } else {
                        return Err(format!(
                            "volume {:?}: only configMap and secret projections are supported",
                            v.name
                        ));
                    }
                }
                out
            } else if let Some(e) = &v.empty_dir {
                if e.medium.as_deref() == Some("Memory") && !crate::runtime::is_mounted(&dir) {
                    let mut c = tokio::process::Command::new("mount");
                    c.args(["-t", "tmpfs", "-o", "mode=1777", "tmpfs"])
                        .arg(&dir);
                    crate::runtime::run_cmd(&mut c, Duration::from_secs(10))
                        .await
                        .map_err(|e| format!("volume {:?}: {e}", v.name))?;
                } else {
                    let _ = std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777));
                }
                continue;
            } else if v.host_path.is_some() {
                continue;
            } else {
                return Err(format!("volume {:?}: unsupported volume type", v.name));
            };
            for (plural, name, items, mode, optional) in sources {
                let kind = if plural == "secrets" {
                    "secret"
                } else {
                    "configmap"
                };
                let Some(data) = self.data(p, &plural, &name).await? else {
                    if optional {
                        continue;
                    }
                    return Err(format!("{kind} {name:?} not found"));
                };
                let mode = mode.unwrap_or(0o644) as u32 & 0o777;
                let files: Vec<(String, Vec<u8>, u32)> = match &items {
                    Some(items) => {
                        let mut f = Vec::new();
                        for it in items {
                            let Some(b) = data.get(&it.key) else {
                                if optional {
                                    continue;
                                }
                                return Err(format!("{kind} {name:?}: key {:?} not found", it.key));
                            };
                            f.push((
                                it.path.clone(),
                                b.clone(),
                                it.mode.map_or(mode, |m| m as u32 & 0o777),
                            ));
                        }
                        f
                    }
                    None => data.into_iter().map(|(k, b)| (k, b, mode)).collect(),
                };
                for (rel, body, m) in files {
                    let rel_path = Path::new(&rel);
                    if rel_path.is_absolute()
                        || rel_path
                            .components()
                            .any(|c| matches!(c, std::path::Component::ParentDir))
                    {
                        return Err(format!(
                            "volume {:?}: path {rel:?} must be relative and may not contain '..'",
                            v.name
                        ));
                    }
                    let f = dir.join(rel_path);
                    if let Some(parent) = f.parent() {
                        std::fs::create_dir_all(parent).map_err(|e| e.to_string())?;
                    }
                    std::fs::write(&f, body).map_err(|e| format!("{}: {e}", f.display()))?;
                    let _ = std::fs::set_permissions(&f, std::fs::Permissions::from_mode(m));
                }
            }
        }
        Ok(())
    }

    pub(super) fn mounts(&self, p: &PodObj, c: &Container) -> Result<Vec<oci::Mount>, String> {
        let spec = p.spec();
        let vdir = self.pod_dir().join("volumes");
        let etc = self.pod_dir().join("etc");
        let mut out = vec![
            oci::Mount {
                destination: "/etc/hosts".into(),
                source: Some(etc.join("hosts")),
                read_only: false,
            },
            oci::Mount {
                destination: "/etc/resolv.conf".into(),
                source: Some(etc.join("resolv.conf")),
                read_only: false,
            },
            oci::Mount {
                destination: "/etc/hostname".into(),
                source: Some(etc.join("hostname")),
                read_only: false,
            },
        ];
        for m in c.volume_mounts.iter().flatten() {
            let v = spec
                .volumes
                .iter()
                .flatten()
                .find(|v| v.name == m.name)
                .ok_or_else(|| format!("volumeMount {:?}: no volume by that name", m.name))?;
            let mut src = match &v.host_path {
                Some(hp) => {
                    let path = PathBuf::from(&hp.path);
                    if matches!(hp.type_.as_deref(), Some("DirectoryOrCreate")) {
                        let _ = std::fs::create_dir_all(&path);
                    }
                    path
                }
                None => vdir.join(&v.name),
            };
            if let Some(sp) = m.sub_path.as_deref().filter(|s| !s.is_empty()) {
                let rel = Path::new(sp);
                if rel.is_absolute()
                    || rel
                        .components()
                        .any(|c| matches!(c, std::path::Component::ParentDir))
                {
                    return Err(format!(
                        "subPath {sp:?} must be relative and may not contain '..'"
                    ));
                }
                src = src.join(rel);
                if !src.exists() {
                    std::fs::create_dir_all(&src).map_err(|e| e.to_string())?;
                }
            }
            let ro = m.read_only.unwrap_or(false)
                || v.config_map.is_some()
                || v.secret.is_some()
                || v.projected.is_some();
            out.push(oci::Mount {
                destination: m.mount_path.clone(),
                source: Some(src),
                read_only: ro,
            });
        }
        Ok(out)
    }
}
