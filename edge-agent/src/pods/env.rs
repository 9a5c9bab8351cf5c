//! Container environment: literal values, config map and secret references, the downward
//! API's fields, and `$(VAR)` expansion as kubelet does it.

use super::*;

impl<R: Runtime> Worker<R> {
    pub(super) async fn env(
        &self,
        p: &PodObj,
        c: &Container,
        image_env: &[String],
    ) -> Result<Vec<String>, (String, String)> {
        let cfg_err = |m: String| ("CreateContainerConfigError".to_string(), m);
        let mut env: BTreeMap<String, String> = BTreeMap::new();
        let mut order: Vec<String> = Vec::new();
        let mut set = |env: &mut BTreeMap<String, String>, k: String, v: String| {
            if !order.contains(&k) {
                order.push(k.clone());
            }
            env.insert(k, v);
        };
        for kv in image_env {
            if let Some((k, v)) = kv.split_once('=') {
                set(&mut env, k.to_string(), v.to_string());
            }
        }
        if !env.contains_key("PATH") {
            set(
                &mut env,
                "PATH".into(),
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
            );
        }
        set(&mut env, "HOSTNAME".into(), Self::hostname(p));
        for ef in c.env_from.iter().flatten() {
            let prefix = ef.prefix.clone().unwrap_or_default();
            let (plural, name, optional) = if let Some(r) = &ef.config_map_ref {
                ("configmaps", r.name.clone(), r.optional.unwrap_or(false))
            } else if let Some(r) = &ef.secret_ref {
                ("secrets", r.name.clone(), r.optional.unwrap_or(false))
            } else {
                continue;
            };
            match self.data(p, plural, &name).await.map_err(cfg_err)? {
                Some(d) => {
                    for (k, v) in d {
                        set(
                            &mut env,
                            format!("{prefix}{k}"),
                            String::from_utf8_lossy(&v).into_owned(),
                        );
                    }
                }
                None if optional => {}
                None => {
                    let kind = if plural == "secrets" {
                        "secret"
                    } else {
                        "configmap"
                    };
                    return Err(cfg_err(format!("{kind} {name:?} not found")));
                }
            }
        }
        for e in c.env.iter().flatten() {
            let val = if let Some(v) = &e.value {
                oci::expand(v, &env)
            } else if let Some(vf) = &e.value_from {
                if let Some(f) = &vf.field_ref {
                    field(
                        p,
                        &f.field_path,
                        self.pod_ip.as_deref().unwrap_or(""),
                        &self.node.node_ip,
                    )
                    .ok_or_else(|| {
                        cfg_err(format!(
                            "env {:?}: unsupported fieldPath {:?}",
                            e.name, f.field_path
                        ))
                    })?
                } else if let Some(r) = vf
                    .config_map_key_ref
                    .as_ref()
                    .map(|r| ("configmaps", &r.name, &r.key, r.optional))
                    .or_else(|| {
                        vf.secret_key_ref
                            .as_ref()
                            .map(|r| ("secrets", &r.name, &r.key, r.optional))
                    })
                {
                    let (plural, name, key, optional) = r;
                    let kind = if plural == "secrets" {
                        "secret"
                    } else {
                        "configmap"
                    };
                    match self.data(p, plural, name).await.map_err(cfg_err)? {
                        Some(d) => match d.get(key) {
                            Some(v) => String::from_utf8_lossy(v).into_owned(),
                            None if optional.unwrap_or(false) => continue,
                            None => {
                                return Err(cfg_err(format!(
                                    "couldn't find key {key} in {kind} {}/{name}",
                                    p.namespace()
                                )))
                            }
                        },
                        None if optional.unwrap_or(false) => continue,
                        None => return Err(cfg_err(format!("{kind} {name:?} not found"))),
                    }
                } else {
                    return Err(cfg_err(format!("env {:?}: unsupported valueFrom", e.name)));
                }
            } else {
                String::new()
            };
            set(&mut env, e.name.clone(), val);
        }
        Ok(order
            .iter()
            .map(|k| format!("{k}={}", env.get(k).map(String::as_str).unwrap_or("")))
            .collect())
    }
}

/// A downward-API field of the pod.
pub fn field(p: &PodObj, path: &str, pod_ip: &str, host_ip: &str) -> Option<String> {
    let m = &p.pod.metadata;
    let label = |map: &Option<BTreeMap<String, String>>, key: &str| {
        map.as_ref()
            .and_then(|l| l.get(key).cloned())
            .unwrap_or_default()
    };
    if let Some(k) = path
        .strip_prefix("metadata.labels['")
        .and_then(|s| s.strip_suffix("']"))
    {
        return Some(label(&m.labels, k));
    }
    if let Some(k) = path
        .strip_prefix("metadata.annotations['")
        .and_then(|s| s.strip_suffix("']"))
    {
        return Some(label(&m.annotations, k));
    }
    let spec = p.pod.spec.as_ref();
    Some(match path {
        "metadata.name" => m.name.clone().unwrap_or_default(),
        "metadata.namespace" => m.namespace.clone().unwrap_or_default(),
        "metadata.uid" => m.uid.clone().unwrap_or_default(),
        "metadata.tenant" => p.tenant.clone(),
        "spec.nodeName" => spec.and_then(|s| s.node_name.clone()).unwrap_or_default(),
        "spec.serviceAccountName" => spec
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_default(),
        "status.podIP" | "status.podIPs" => pod_ip.to_string(),
        "status.hostIP" | "status.hostIPs" => host_ip.to_string(),
        _ => return None,
    })
}
