//! The Deployment controller: one ReplicaSet per template (hashed), rolling or recreate
//! rollouts within maxSurge/maxUnavailable, revisions for `kubectl rollout`, conditions.

use super::*;

pub(super) fn revision(v: &Value) -> i64 {
    v.pointer("/metadata/annotations")
        .and_then(|a| a.get(REVISION))
        .and_then(Value::as_str)
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

/// Pods of a ReplicaSet: (active, available).
pub(super) fn rs_pods(
    pods: &[(Key, Arc<Value>)],
    rs: &Value,
    now: chrono::DateTime<chrono::Utc>,
) -> (i64, i64) {
    let uid = meta(rs, "uid");
    let min_ready = int(rs, "/spec/minReadySeconds", 0);
    let mut active = 0;
    let mut available = 0;
    for (_, p) in pods {
        if controller_uid(p) == Some(uid) && pod_active(p) {
            active += 1;
            if pod_available(p, min_ready, now) {
                available += 1;
            }
        }
    }
    (active, available)
}

pub(super) fn new_replicaset(
    key: &Key,
    d: &Value,
    tpl: &Value,
    hash: &str,
    replicas: i64,
    rev: i64,
) -> (Key, Value) {
    let name = format!("{}-{hash}", key.name);
    let mut tpl = tpl.clone();
    if !tpl.get("metadata").is_some_and(Value::is_object) {
        tpl["metadata"] = json!({});
    }
    if !tpl["metadata"].get("labels").is_some_and(Value::is_object) {
        tpl["metadata"]["labels"] = json!({});
    }
    tpl["metadata"]["labels"][HASH_LABEL] = json!(hash);
    let mut selector = d.pointer("/spec/selector").cloned().unwrap_or(json!({}));
    if !selector.get("matchLabels").is_some_and(Value::is_object) {
        selector["matchLabels"] = json!({});
    }
    selector["matchLabels"][HASH_LABEL] = json!(hash);
    let mut annotations = json!({
        REVISION: rev.to_string(),
        "deployment.kubernetes.io/desired-replicas": int(d, "/spec/replicas", 1).to_string(),
    });
    if let Some(c) = d
        .pointer("/metadata/annotations")
        .and_then(|a| a.get("kubernetes.io/change-cause"))
    {
        annotations["kubernetes.io/change-cause"] = c.clone();
    }
    let mut rs = json!({
        "apiVersion": "apps/v1", "kind": "ReplicaSet",
        "metadata": {
            "name": name, "namespace": key.namespace,
            "uid": uuid::Uuid::new_v4().to_string(), "creationTimestamp": now_str(), "generation": 1,
            "labels": tpl["metadata"]["labels"].clone(),
            "annotations": annotations,
            "ownerReferences": [owner_ref("Deployment", d)],
        },
        "spec": {
            "replicas": replicas,
            "minReadySeconds": int(d, "/spec/minReadySeconds", 0),
            "selector": selector,
            "template": tpl,
        },
        "status": {"replicas": 0},
    });
    if !key.tenant.is_empty() {
        rs["metadata"]["tenant"] = json!(key.tenant);
    }
    (
        Key::new(REPLICASETS, &key.tenant, &key.namespace, &name),
        rs,
    )
}

pub(super) fn set_annotation(obj: &mut Value, k: &str, v: &str) {
    if !obj["metadata"]
        .get("annotations")
        .is_some_and(Value::is_object)
    {
        obj["metadata"]["annotations"] = json!({});
    }
    obj["metadata"]["annotations"][k] = json!(v);
}

/// A deployment condition, keeping its timestamps when nothing about it changed.
pub(super) fn condition(
    old: &[Value],
    ty: &str,
    status: &str,
    reason: &str,
    message: &str,
) -> Value {
    let now = now_str();
    let prev = old
        .iter()
        .find(|c| c.get("type").and_then(Value::as_str) == Some(ty));
    let same_status = prev.is_some_and(|p| p.get("status").and_then(Value::as_str) == Some(status));
    let same = same_status
        && prev.is_some_and(|p| {
            p.get("reason").and_then(Value::as_str) == Some(reason)
                && p.get("message").and_then(Value::as_str) == Some(message)
        });
    let keep = |f: &str| {
        prev.and_then(|p| p.get(f))
            .cloned()
            .unwrap_or_else(|| json!(now))
    };
    json!({
        "type": ty, "status": status,
        "lastUpdateTime": if same { keep("lastUpdateTime") } else { json!(now) },
        "lastTransitionTime": if same_status { keep("lastTransitionTime") } else { json!(now) },
        "reason": reason, "message": message,
    })
}

pub(super) async fn sync_deployment(w: &Writer, key: &Key, d: &Value) -> bool {
    if terminating(d) || selector_empty(d.pointer("/spec/selector")) {
        return false;
    }
    let now = chrono::Utc::now();
    let rss = list_ns(w.store(), REPLICASETS, &key.tenant, &key.namespace);
    let mut owned = claim(w, d, "Deployment", rss).await;
    owned.sort_by_key(|(_, rs)| (revision(rs), meta(rs, "creationTimestamp").to_string()));
    let tpl = d.pointer("/spec/template").cloned().unwrap_or(json!({}));
    let want_tpl = normalized_template(&tpl);
    let replicas = int(d, "/spec/replicas", 1).max(0);
    let paused = d.pointer("/spec/paused").and_then(Value::as_bool) == Some(true);
    let recreate = d.pointer("/spec/strategy/type").and_then(Value::as_str) == Some("Recreate");
    let surge = if recreate {
        0
    } else {
        scaled(
            d.pointer("/spec/strategy/rollingUpdate/maxSurge"),
            replicas,
            true,
            0,
        )
    };
    let mut unavailable = if recreate {
        replicas
    } else {
        scaled(
            d.pointer("/spec/strategy/rollingUpdate/maxUnavailable"),
            replicas,
            false,
            0,
        )
    };
    if surge == 0 && unavailable == 0 {
        unavailable = 1;
    }
    let new_idx = owned.iter().position(|(_, rs)| {
        normalized_template(rs.pointer("/spec/template").unwrap_or(&Value::Null)) == want_tpl
    });
    let max_old_rev = owned
        .iter()
        .enumerate()
        .filter(|(i, _)| Some(*i) != new_idx)
        .map(|(_, (_, rs))| revision(rs))
        .max()
        .unwrap_or(0);
    let pods = list_ns(w.store(), "pods", &key.tenant, &key.namespace);

    let Some(new_idx) = new_idx else {
        if paused {
            return false;
        }
        // A new ReplicaSet for the current template.
        let old_total: i64 = owned
            .iter()
            .map(|(_, rs)| int(rs, "/spec/replicas", 0))
            .sum();
        let initial = if recreate {
            0
        } else if old_total == 0 {
            replicas
        } else {
            (replicas + surge - old_total).clamp(0, replicas)
        };
        let collisions = d.pointer("/status/collisionCount").and_then(Value::as_i64);
        let hash = template_hash(&tpl, collisions);
        let (rk, rs) = new_replicaset(key, d, &tpl, &hash, initial, max_old_rev + 1);
        if let Some(existing) = w.store().get(&rk) {
            // Someone else's ReplicaSet, or ours with another template: a hash collision.
            if controller_uid(&existing) != Some(meta(d, "uid"))
                || normalized_template(existing.pointer("/spec/template").unwrap_or(&Value::Null))
                    != want_tpl
            {
                let mut new = d.clone();
                new["status"]["collisionCount"] = json!(collisions.unwrap_or(0) + 1);
                return update(w, key, d, new).await;
            }
            return false;
        }
        tracing::info!(deployment = %key.name, namespace = %key.namespace, replicaset = %rk.name, "new replicaset");
        let created = create(w, rk.clone(), rs.clone()).await;
        if created && initial > 0 {
            let msg = format!("Scaled up replica set {} from 0 to {initial}", rk.name);
            owner_event(w, &rk, &rs, "ScalingReplicaSet", &msg).await;
        }
        return created;
    };

    let (new_key, new_rs) = owned[new_idx].clone();
    let mut changed = false;
    // The new ReplicaSet carries the newest revision (again, after a rollback).
    let rev = revision(&new_rs);
    if rev <= max_old_rev || rev == 0 {
        let mut n = new_rs.clone();
        set_annotation(&mut n, REVISION, &(max_old_rev + 1).to_string());
        return update(w, &new_key, &new_rs, n).await;
    }
    if meta_annotation(d, REVISION) != Some(rev.to_string()) {
        let mut n = d.clone();
        set_annotation(&mut n, REVISION, &rev.to_string());
        return update(w, key, d, n).await;
    }
    let min_ready = int(d, "/spec/minReadySeconds", 0);
    if int(&new_rs, "/spec/minReadySeconds", 0) != min_ready {
        let mut n = new_rs.clone();
        n["spec"]["minReadySeconds"] = json!(min_ready);
        n["metadata"]["generation"] = json!(int(&new_rs, "/metadata/generation", 1) + 1);
        return update(w, &new_key, &new_rs, n).await;
    }
    let olds: Vec<&(Key, Value)> = owned
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != new_idx)
        .map(|(_, x)| x)
        .collect();

    if !paused {
        changed |= if recreate {
            rollout_recreate(w, &pods, &new_key, &new_rs, &olds, replicas).await
        } else {
            rollout_rolling(
                w,
                &pods,
                &new_key,
                &new_rs,
                &olds,
                replicas,
                surge,
                unavailable,
                now,
            )
            .await
        };
    }

    // History: old ReplicaSets at zero beyond revisionHistoryLimit go, oldest first.
    let limit = usize::try_from(int(d, "/spec/revisionHistoryLimit", 10).max(0)).unwrap_or(10);
    let idle: Vec<&&(Key, Value)> = olds
        .iter()
        .filter(|(_, rs)| int(rs, "/spec/replicas", 0) == 0 && rs_pods(&pods, rs, now).0 == 0)
        .collect();
    if idle.len() > limit {
        for (k, rs) in idle.iter().take(idle.len() - limit) {
            changed |= remove(w, k, rs, None).await;
        }
    }

    // Status, from what is stored now.
    let rss: Vec<Value> = list_ns(w.store(), REPLICASETS, &key.tenant, &key.namespace)
        .into_iter()
        .filter(|(_, rs)| controller_uid(rs) == Some(meta(d, "uid")))
        .map(|(_, rs)| (*rs).clone())
        .collect();
    let pods = list_ns(w.store(), "pods", &key.tenant, &key.namespace);
    let new_uid = meta(&new_rs, "uid");
    let mut total = 0;
    let mut updated = 0;
    let mut ready = 0;
    let mut available = 0;
    let mut spec_total = 0;
    for rs in &rss {
        spec_total += int(rs, "/spec/replicas", 0);
        let uid = meta(rs, "uid");
        let min_ready = int(rs, "/spec/minReadySeconds", 0);
        for (_, p) in pods
            .iter()
            .filter(|(_, p)| controller_uid(p) == Some(uid) && pod_active(p))
        {
            total += 1;
            if uid == new_uid {
                updated += 1;
            }
            if pod_ready(p) {
                ready += 1;
            }
            if pod_available(p, min_ready, now) {
                available += 1;
            }
        }
    }
    let generation = int(d, "/metadata/generation", 1);
    let mut status = d
        .get("status")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let old_conds: Vec<Value> = status
        .get("conditions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let min_available = replicas - if recreate { 0 } else { unavailable };
    let avail_cond = if available >= min_available {
        condition(
            &old_conds,
            "Available",
            "True",
            "MinimumReplicasAvailable",
            "Deployment has minimum availability.",
        )
    } else {
        condition(
            &old_conds,
            "Available",
            "False",
            "MinimumReplicasUnavailable",
            "Deployment does not have minimum availability.",
        )
    };
    let complete = updated == replicas && total == replicas && available == replicas;
    let prog_cond = if paused {
        condition(
            &old_conds,
            "Progressing",
            "Unknown",
            "DeploymentPaused",
            "Deployment is paused",
        )
    } else if complete {
        condition(
            &old_conds,
            "Progressing",
            "True",
            "NewReplicaSetAvailable",
            &format!("ReplicaSet {:?} has successfully progressed.", new_key.name),
        )
    } else {
        // Progress (more updated, ready or available pods, fewer old ones, a new generation)
        // renews `lastUpdateTime`; none for `progressDeadlineSeconds` fails the rollout.
        let was = |f: &str| status.get(f).and_then(Value::as_i64).unwrap_or(0);
        let progressed = updated > was("updatedReplicas")
            || ready > was("readyReplicas")
            || available > was("availableReplicas")
            || total < was("replicas")
            || generation != was("observedGeneration");
        let prev = old_conds
            .iter()
            .find(|c| c.get("type").and_then(Value::as_str) == Some("Progressing"));
        let prev_reason = prev
            .and_then(|c| c.get("reason"))
            .and_then(Value::as_str)
            .unwrap_or("");
        let stalled_for = prev
            .and_then(|c| c.get("lastUpdateTime"))
            .and_then(Value::as_str)
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            .map_or(0, |t| now.signed_duration_since(t).num_seconds());
        let deadline = int(d, "/spec/progressDeadlineSeconds", 600);
        let exceeded = !progressed
            && prev_reason != "NewReplicaSetAvailable"
            && (prev_reason == "ProgressDeadlineExceeded" || stalled_for > deadline);
        if exceeded {
            condition(
                &old_conds,
                "Progressing",
                "False",
                "ProgressDeadlineExceeded",
                &format!("ReplicaSet {:?} has timed out progressing.", new_key.name),
            )
        } else {
            let mut c = condition(
                &old_conds,
                "Progressing",
                "True",
                "ReplicaSetUpdated",
                &format!("ReplicaSet {:?} is progressing.", new_key.name),
            );
            if progressed {
                c["lastUpdateTime"] = json!(now_str());
            }
            c
        }
    };
    status.insert("observedGeneration".into(), json!(generation));
    status.insert("replicas".into(), json!(total));
    status.insert("updatedReplicas".into(), json!(updated));
    status.insert("readyReplicas".into(), json!(ready));
    status.insert("availableReplicas".into(), json!(available));
    status.insert(
        "unavailableReplicas".into(),
        json!((spec_total - available).max(0)),
    );
    status.insert("conditions".into(), json!([avail_cond, prog_cond]));
    omit_zeros(
        &mut status,
        &[
            "readyReplicas",
            "availableReplicas",
            "updatedReplicas",
            "replicas",
            "unavailableReplicas",
        ],
    );
    changed |= write_status(w, key, d, status).await;
    changed
}

pub(super) fn meta_annotation(v: &Value, k: &str) -> Option<String> {
    v.pointer("/metadata/annotations")
        .and_then(|a| a.get(k))
        .and_then(Value::as_str)
        .map(String::from)
}

pub(super) async fn rollout_recreate(
    w: &Writer,
    pods: &[(Key, Arc<Value>)],
    new_key: &Key,
    new_rs: &Value,
    olds: &[&(Key, Value)],
    replicas: i64,
) -> bool {
    let mut changed = false;
    for (k, rs) in olds {
        changed |= set_replicas(w, k, rs, 0).await;
    }
    let old_running = olds.iter().any(|(_, rs)| {
        let uid = meta(rs, "uid");
        pods.iter().any(|(_, p)| {
            controller_uid(p) == Some(uid)
                && !matches!(
                    p.pointer("/status/phase").and_then(Value::as_str),
                    Some("Succeeded" | "Failed")
                )
        })
    });
    if changed || old_running {
        return changed;
    }
    set_replicas(w, new_key, new_rs, replicas).await
}

#[allow(clippy::too_many_arguments)]
pub(super) async fn rollout_rolling(
    w: &Writer,
    pods: &[(Key, Arc<Value>)],
    new_key: &Key,
    new_rs: &Value,
    olds: &[&(Key, Value)],
    replicas: i64,
    surge: i64,
    max_unavailable: i64,
    now: chrono::DateTime<chrono::Utc>,
) -> bool {
    let new_spec = int(new_rs, "/spec/replicas", 0);
    let old_spec: i64 = olds
        .iter()
        .map(|(_, rs)| int(rs, "/spec/replicas", 0))
        .sum();
    // Scale the new ReplicaSet up (within maxSurge) or down to the wanted count.
    if new_spec > replicas {
        return set_replicas(w, new_key, new_rs, replicas).await;
    }
    if new_spec < replicas {
        let max_total = replicas + surge;
        let total = new_spec + old_spec;
        if total < max_total {
            let up = (max_total - total).min(replicas - new_spec);
            return set_replicas(w, new_key, new_rs, new_spec + up).await;
        }
    }
    if old_spec == 0 {
        return false;
    }
    // Scale old ReplicaSets down, keeping `replicas - maxUnavailable` available.
    let min_available = replicas - max_unavailable;
    let (_, new_available) = rs_pods(pods, new_rs, now);
    let new_unavailable = (new_spec - new_available).max(0);
    let all = new_spec + old_spec;
    let mut budget = all - min_available - new_unavailable;
    if budget <= 0 {
        return false;
    }
    let mut changed = false;
    // First the old replicas that are not available anyway.
    let mut olds_now: Vec<(Key, Value, i64)> = Vec::new();
    for (k, rs) in olds {
        let spec = int(rs, "/spec/replicas", 0);
        let (_, avail) = rs_pods(pods, rs, now);
        let unhealthy = (spec - avail).max(0).min(budget);
        if unhealthy > 0 && spec > 0 {
            changed |= set_replicas(w, k, rs, spec - unhealthy).await;
            budget -= unhealthy;
            olds_now.push((k.clone(), (*rs).clone(), avail));
            continue;
        }
        olds_now.push((k.clone(), (*rs).clone(), avail));
    }
    if changed {
        return true;
    }
    // Then available ones, oldest first, while availability allows.
    let total_available: i64 = new_available + olds_now.iter().map(|(_, _, a)| a).sum::<i64>();
    let mut down = (total_available - min_available).max(0);
    for (k, rs, _) in olds_now {
        if down == 0 {
            break;
        }
        let spec = int(&rs, "/spec/replicas", 0);
        let by = spec.min(down);
        if by > 0 {
            changed |= set_replicas(w, &k, &rs, spec - by).await;
            down -= by;
        }
    }
    changed
}
