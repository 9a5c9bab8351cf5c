//! What a site sends up, applied: each change judged under the site's identity (see the
//! `uplink` module), applied in waves, its position recorded with the refusals, and refusals
//! shown as Warning events on the EdgeSite.

use super::*;

impl Hub {
    /// Apply a run of uplink changes in order, as if one by one, but without one synced commit
    /// each: changes run concurrently (so the store commits them in groups) in waves that never
    /// hold the same object twice, and a node change goes in a wave of its own (pods' bindings
    /// and statuses are checked against nodes). The site's sequence number (with the run's
    /// refusals) is recorded once, after every change of the run is durable; a crash before
    /// that makes the site send the run again, and every kind of change is safe to judge and
    /// apply twice. Returns the run's refusals.
    pub(super) async fn apply_ups(&self, site: &str, ups: Vec<Up>) -> Result<Vec<Refusal>, String> {
        let last = ups.last().map_or(0, |u| u.seq);
        let mut refused = Vec::new();
        if ups.len() == 1 {
            if let Some(r) = self.apply_up(site, &ups[0], true).await? {
                refused.push(r);
            }
            return Ok(refused);
        }
        let mut wave: Vec<&Up> = Vec::new();
        let mut keys: std::collections::HashSet<(&str, &str, &str, &str)> = Default::default();
        for u in &ups {
            let (k, alone) = match u.key.as_ref() {
                Some(k) => (
                    (
                        k.resource.as_str(),
                        k.tenant.as_str(),
                        k.namespace.as_str(),
                        k.name.as_str(),
                    ),
                    k.resource == "nodes",
                ),
                None => (("", "", "", ""), true),
            };
            let clash = keys.contains(&k) || (alone && !wave.is_empty());
            if clash {
                refused.extend(self.apply_wave(site, &std::mem::take(&mut wave)).await?);
                keys.clear();
            }
            wave.push(u);
            keys.insert(k);
            if alone {
                refused.extend(self.apply_wave(site, &std::mem::take(&mut wave)).await?);
                keys.clear();
            }
        }
        refused.extend(self.apply_wave(site, &wave).await?);
        self.store
            .commit(vec![self.seq_op(site, last, &refused)])
            .await
            .map_err(|e| e.to_string())?;
        Ok(refused)
    }

    /// Apply independent uplink changes concurrently, recording no sequence number.
    pub(super) async fn apply_wave(
        &self,
        site: &str,
        wave: &[&Up],
    ) -> Result<Vec<Refusal>, String> {
        let results =
            futures_util::future::join_all(wave.iter().map(|u| self.apply_up(site, u, false)))
                .await;
        let mut out = Vec::new();
        for r in results {
            out.extend(r?);
        }
        Ok(out)
    }

    /// The site's uplink position: its applied sequence and its most recent refusals (bounded:
    /// the Welcome repeats them, so a refusal whose ack was lost still reaches the site).
    pub(super) fn seq_op(&self, site: &str, seq: u64, refused: &[Refusal]) -> Op {
        let key = Key::new(SITE_SEQ, "", "", site);
        let mut recent: Vec<Value> = self
            .store
            .get(&key)
            .and_then(|v| v.get("refused").and_then(Value::as_array).cloned())
            .unwrap_or_default();
        for r in refused {
            let k = r.key.clone().unwrap_or_default();
            recent.push(json!({"seq": r.seq, "reason": r.reason,
                "key": {"resource": k.resource, "tenant": k.tenant, "namespace": k.namespace, "name": k.name}}));
        }
        let excess = recent.len().saturating_sub(RECENT_REFUSALS);
        recent.drain(..excess);
        Op::Put {
            key,
            value: json!({"metadata": {"name": site}, "seq": seq, "refused": recent}),
            pre: Precondition::Any,
        }
    }

    /// The site's recorded recent refusals, as the Welcome carries them.
    pub(super) fn recent_refusals(&self, site: &str) -> Vec<Refusal> {
        let rec = self.store.get(&Key::new(SITE_SEQ, "", "", site));
        let list = rec
            .as_deref()
            .and_then(|v| v.get("refused"))
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        list.iter()
            .map(|r| {
                let k = &r["key"];
                let s = |v: &Value| v.as_str().unwrap_or("").to_string();
                let key = ObjectKey {
                    resource: s(&k["resource"]),
                    tenant: s(&k["tenant"]),
                    namespace: s(&k["namespace"]),
                    name: s(&k["name"]),
                };
                self.refusal(site, r["seq"].as_u64().unwrap_or(0), key, s(&r["reason"]))
            })
            .collect()
    }

    /// A refusal as the site receives it: with the cloud's copy of the object when it is one
    /// the site created (so the site replaces its own copy with it), or word that the cloud
    /// holds none of the site's under that key.
    pub(super) fn refusal(
        &self,
        site: &str,
        seq: u64,
        key: ObjectKey,
        mut reason: String,
    ) -> Refusal {
        let current = self
            .store
            .get(&Key::new(
                &key.resource,
                &key.tenant,
                &key.namespace,
                &key.name,
            ))
            .filter(|c| origin(c) == Some(site));
        let object = current
            .as_deref()
            .and_then(|c| serde_json::to_vec(c).ok())
            .filter(|o| o.len() <= proto::sync::MAX_REFUSAL_OBJECT)
            .unwrap_or_default();
        if reason.len() > proto::sync::MAX_REFUSAL_REASON {
            let mut cut = proto::sync::MAX_REFUSAL_REASON;
            while !reason.is_char_boundary(cut) {
                cut -= 1;
            }
            reason.truncate(cut);
        }
        Refusal {
            seq,
            key: Some(key),
            reason,
            object,
            absent: current.is_none(),
        }
    }

    /// Judge and apply one uplink change; `record_seq` commits the site's sequence number
    /// with it. A change that lost a race with a cloud write is judged again on the newer
    /// state. A refusal is logged, shown as a Warning event on the EdgeSite, and returned.
    pub(super) async fn apply_up(
        &self,
        site: &str,
        up: &Up,
        record_seq: bool,
    ) -> Result<Option<Refusal>, String> {
        let serves = |t: &str| self.shares.serves(site, t);
        let who = uplink::Site {
            name: site,
            serves: &serves,
        };
        for _attempt in 0..5 {
            let mut ops = match uplink::judge(&self.api, &who, up) {
                uplink::Verdict::Apply(ops) => ops,
                uplink::Verdict::Nothing => Vec::new(),
                uplink::Verdict::Refuse(reason) => {
                    return self.refuse(site, up, reason, record_seq).await
                }
            };
            if record_seq {
                ops.push(self.seq_op(site, up.seq, &[]));
            }
            if ops.is_empty() {
                return Ok(None);
            }
            match self.store.commit(ops).await {
                Ok(_) => return Ok(None),
                Err(
                    StoreError::Conflict(_)
                    | StoreError::AlreadyExists(_)
                    | StoreError::NotFound(_),
                ) => continue,
                Err(e) => return Err(e.to_string()),
            }
        }
        let reason = "it lost every race with concurrent writes at the cloud".to_string();
        self.refuse(site, up, reason, record_seq).await
    }

    pub(super) async fn refuse(
        &self,
        site: &str,
        up: &Up,
        reason: String,
        record_seq: bool,
    ) -> Result<Option<Refusal>, String> {
        let key = up.key.clone().unwrap_or_default();
        let kind = ChangeKind::try_from(up.kind)
            .map(|k| format!("{k:?}"))
            .unwrap_or_else(|_| "unknown".into());
        let kind = kind.as_str();
        tracing::warn!(%site, seq = up.seq, kind, resource = %key.resource, tenant = %key.tenant,
            namespace = %key.namespace, name = %key.name, %reason, "uplink change refused");
        let r = Refusal {
            seq: up.seq,
            key: Some(key.clone()),
            reason: reason.clone(),
            ..Default::default()
        };
        if record_seq {
            self.store
                .commit(vec![self.seq_op(site, up.seq, std::slice::from_ref(&r))])
                .await
                .map_err(|e| e.to_string())?;
        }
        self.warn_site(site, kind, &key, &reason).await;
        Ok(Some(r))
    }

    /// A Warning event on the EdgeSite (system space, namespace `default`, as for other
    /// cluster-scoped objects), one per refused object and reason with a count; at most
    /// [`REFUSAL_EVENTS_PER_MINUTE`] new ones per site a minute, the rest only logged.
    pub(super) async fn warn_site(&self, site: &str, kind: &str, key: &ObjectKey, reason: &str) {
        use sha2::Digest;
        let what = if key.namespace.is_empty() {
            format!("{} {}", key.resource, key.name)
        } else {
            format!("{} {}/{}", key.resource, key.namespace, key.name)
        };
        let what = if key.tenant.is_empty() {
            what
        } else {
            format!("{what} of tenant {}", key.tenant)
        };
        let msg = format!("refused {kind} of {what}: {reason}");
        let digest = sha2::Sha256::digest(msg.as_bytes());
        let name = format!(
            "{site}.{}",
            digest
                .iter()
                .take(8)
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        );
        let ekey = Key::new("events", "", "default", &name);
        let now = now_str();
        let op = match self.store.get(&ekey) {
            Some(e) => {
                let mut n = (*e).clone();
                n["count"] = json!(e.get("count").and_then(Value::as_i64).unwrap_or(1) + 1);
                n["lastTimestamp"] = json!(now);
                Op::replace(ekey, &e, n)
            }
            None => {
                let allowed = self.live.lock().is_ok_and(|mut l| {
                    let (start, n) = l
                        .refusal_events
                        .entry(site.to_string())
                        .or_insert((std::time::Instant::now(), 0));
                    if start.elapsed() > Duration::from_secs(60) {
                        *start = std::time::Instant::now();
                        *n = 0;
                    }
                    *n += 1;
                    *n <= REFUSAL_EVENTS_PER_MINUTE
                });
                if !allowed {
                    return;
                }
                let uid = self
                    .store
                    .get(&Key::new(EDGESITES, "", "", site))
                    .and_then(|v| v.pointer("/metadata/uid").cloned())
                    .unwrap_or(Value::Null);
                let ev = json!({
                    "apiVersion": "v1", "kind": "Event",
                    "metadata": {"name": name, "namespace": "default", "uid": uuid::Uuid::new_v4().to_string(), "creationTimestamp": now},
                    "involvedObject": {"apiVersion": "edge.atoll.io/v1", "kind": "EdgeSite", "name": site, "uid": uid},
                    "type": "Warning", "reason": "UplinkRefused", "message": msg,
                    "source": {"component": "atoll-hub"}, "reportingComponent": "atoll-hub",
                    "firstTimestamp": now, "lastTimestamp": now, "count": 1,
                });
                Op::Put {
                    key: ekey,
                    value: ev,
                    pre: Precondition::Absent,
                }
            }
        };
        let _ = self.store.commit(vec![op]).await;
    }
}
