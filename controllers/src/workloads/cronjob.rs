//! The CronJob controller (batch/v1), as kube-controller-manager's (`cronjob_controllerv2`):
//! at the most recent schedule time not yet served (since `lastScheduleTime`, else the
//! creation, in `timeZone`, else UTC; within `startingDeadlineSeconds` when set) it creates
//! the Job `<cronjob>-<scheduled time in Unix minutes>` from the job template, owned by the
//! CronJob and annotated with the time; `concurrencyPolicy` Forbid skips a time while a Job
//! is active, Replace deletes the active ones first; `suspend` starts nothing; the status
//! lists the active Jobs (ObjectReferences) and the last schedule and success times; finished
//! Jobs beyond the history limits go, oldest first. Its events are kube's.
//!
//! A pass returns when the CronJob next falls due, and the loop wakes just after it
//! ([`crate::changes::on_changes_or_at`]), so a Job starts within a fraction of a second of
//! its time rather than at the loop's safety-net tick.

use std::hash::Hasher as _;

use apiserver::batch::SCHEDULED_TIMESTAMP;
use apiserver::cron::{Schedule, Tz};
use chrono::{DateTime, SecondsFormat, Utc};

use super::*;

/// How far past a schedule time the controller looks again (kube's `nextScheduleDelta`).
const WAKE_AFTER: Duration = Duration::from_millis(100);
/// More missed times than this are too many to report as a few (kube's 100).
const TOO_MANY: usize = 100;

fn time(v: &Value, ptr: &str) -> Option<DateTime<Utc>> {
    v.pointer(ptr)
        .and_then(Value::as_str)
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&Utc))
}

fn stamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// The condition a finished Job finished with (`Complete` or `Failed`).
fn finished(job: &Value) -> Option<&'static str> {
    let conds = job
        .pointer("/status/conditions")
        .and_then(Value::as_array)?;
    ["Complete", "Failed"].into_iter().find(|ty| {
        conds.iter().any(|c| {
            c.get("type").and_then(Value::as_str) == Some(*ty)
                && c.get("status").and_then(Value::as_str) == Some("True")
        })
    })
}

/// The name of the Job for the time `t` (kube's: the time in minutes since the epoch).
pub fn job_name(cronjob: &str, t: DateTime<Utc>) -> String {
    format!("{cronjob}-{}", t.timestamp().div_euclid(60))
}

/// What is due for `cj` at `now`: the most recent schedule time not yet served (kube's
/// `mostRecentScheduleTime`), how many were missed (up to `TOO_MANY + 1`), and the time the
/// count started from.
pub(crate) struct Due {
    pub latest: Option<DateTime<Utc>>,
    pub missed: usize,
    pub earliest: DateTime<Utc>,
}

pub(crate) fn due(
    cj: &Value,
    sched: &Schedule,
    tz: Tz,
    now: DateTime<Utc>,
    with_deadline: bool,
) -> Due {
    let created = time(cj, "/metadata/creationTimestamp").unwrap_or(now);
    let mut earliest = time(cj, "/status/lastScheduleTime").unwrap_or(created);
    if with_deadline {
        if let Some(d) = cj
            .pointer("/spec/startingDeadlineSeconds")
            .and_then(Value::as_i64)
        {
            // Nothing before the deadline is started any more.
            earliest = earliest.max(now - chrono::Duration::seconds(d));
        }
    }
    let (latest, missed) = sched.missed(earliest, now, tz, TOO_MANY);
    Due {
        latest,
        missed,
        earliest,
    }
}

/// How long until `cj` falls due again, just past its next schedule time (kube's
/// `nextScheduleTimeDuration`); `None` if it never does.
pub(crate) fn wake_in(
    cj: &Value,
    sched: &Schedule,
    tz: Tz,
    now: DateTime<Utc>,
) -> Option<Duration> {
    let d = due(cj, sched, tz, now, false);
    let from = d.latest.unwrap_or(d.earliest);
    let next = sched.next_after(from, tz)?;
    Some((next - now).to_std().unwrap_or(Duration::ZERO) + WAKE_AFTER)
}

/// The finished Jobs beyond the history limits, oldest first within each (kube sorts by start
/// time, Jobs without one last, then by name).
pub(crate) fn surplus(
    jobs: &[(Key, Value)],
    successful: Option<i64>,
    failed: Option<i64>,
) -> Vec<&(Key, Value)> {
    let mut out = Vec::new();
    for (cond, limit) in [("Complete", successful), ("Failed", failed)] {
        let Some(limit) = limit else { continue };
        let mut done: Vec<&(Key, Value)> = jobs
            .iter()
            .filter(|(_, j)| finished(j) == Some(cond))
            .collect();
        done.sort_by(|(ka, a), (kb, b)| {
            let (sa, sb) = (time(a, "/status/startTime"), time(b, "/status/startTime"));
            match (sa, sb) {
                (Some(x), Some(y)) if x != y => x.cmp(&y),
                (Some(_), None) => std::cmp::Ordering::Less,
                (None, Some(_)) => std::cmp::Ordering::Greater,
                _ => ka.name.cmp(&kb.name),
            }
        });
        let extra = done
            .len()
            .saturating_sub(usize::try_from(limit.max(0)).unwrap_or(0));
        out.extend(done.into_iter().take(extra));
    }
    out
}

/// A Job of `cj` for the schedule time `t`: the job template's labels, annotations and spec,
/// the time annotated (in the CronJob's zone), owned by the CronJob.
pub(crate) fn job_for(key: &Key, cj: &Value, t: DateTime<Utc>, tz: Tz) -> (Key, Value) {
    let name = job_name(&key.name, t);
    let tpl = cj
        .pointer("/spec/jobTemplate")
        .cloned()
        .unwrap_or(json!({}));
    let mut annotations = tpl
        .pointer("/metadata/annotations")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    annotations.insert(
        SCHEDULED_TIMESTAMP.into(),
        json!(t
            .with_timezone(&tz)
            .to_rfc3339_opts(SecondsFormat::Secs, true)),
    );
    let mut job = json!({
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {
            "name": name, "namespace": key.namespace,
            "annotations": annotations,
            "ownerReferences": [owner_ref("CronJob", cj)],
        },
        "spec": tpl.get("spec").cloned().unwrap_or(json!({})),
    });
    if let Some(l) = tpl
        .pointer("/metadata/labels")
        .filter(|l| l.as_object().is_some_and(|m| !m.is_empty()))
    {
        job["metadata"]["labels"] = l.clone();
    }
    if !key.tenant.is_empty() {
        job["metadata"]["tenant"] = json!(key.tenant);
    }
    (Key::new(JOBS, &key.tenant, &key.namespace, &name), job)
}

fn job_ref(job: &Value) -> Value {
    let mut r = json!({"apiVersion": "batch/v1", "kind": "Job",
        "name": meta(job, "name"), "namespace": meta(job, "namespace"), "uid": meta(job, "uid")});
    let rv = meta(job, "resourceVersion");
    if !rv.is_empty() {
        r["resourceVersion"] = json!(rv);
    }
    r
}

/// FNV-1a, for event names that make an event once per subject.
fn fnv(parts: &[&str]) -> u64 {
    struct Fnv(u64);
    impl std::hash::Hasher for Fnv {
        fn finish(&self) -> u64 {
            self.0
        }
        fn write(&mut self, bytes: &[u8]) {
            for b in bytes {
                self.0 ^= u64::from(*b);
                self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
            }
        }
    }
    let mut h = Fnv(0xcbf2_9ce4_8422_2325);
    for p in parts {
        h.write(p.as_bytes());
        h.write(&[0]);
    }
    h.finish()
}

/// Record an event on the CronJob. `once`: a subject (a Job, a schedule time) the event is
/// made only once for (kube's recorder folds repeats into one; a pass here may repeat often).
async fn event(
    w: &Writer,
    key: &Key,
    cj: &Value,
    ty: &str,
    reason: &str,
    msg: &str,
    once: Option<&str>,
) {
    let name = match once {
        Some(s) => format!("{}.{:016x}", key.name, fnv(&[meta(cj, "uid"), reason, s])),
        None => format!("{}.{:x}", key.name, rand::random::<u64>()),
    };
    let involved = json!({"apiVersion": "batch/v1", "kind": "CronJob", "namespace": key.namespace,
        "name": key.name, "uid": meta(cj, "uid")});
    record_event(
        w,
        key,
        name,
        involved,
        "cronjob-controller",
        ty,
        reason,
        msg,
    )
    .await;
}

/// Delete a Job of the CronJob (its pods with it, in the background) and say so; whether it
/// went (or was gone).
async fn delete_job(w: &Writer, key: &Key, cj: &Value, jk: &Key, job: &Value) -> bool {
    match w.delete(jk, job, None, Some("Background")).await {
        Ok(_) => {
            let msg = format!("Deleted job {}", jk.name);
            event(w, key, cj, "Normal", "SuccessfulDelete", &msg, None).await;
            true
        }
        Err(e) if e.code == 404 => true,
        Err(e) => {
            let msg = format!("Deleted job: {}", e.message);
            event(w, key, cj, "Warning", "FailedDelete", &msg, Some(&jk.name)).await;
            false
        }
    }
}

fn remove_active(active: &mut Vec<Value>, uid: &str) {
    active.retain(|r| r.get("uid").and_then(Value::as_str) != Some(uid));
}

/// One CronJob at `now`: returns whether anything was written, and when it next falls due.
pub(super) async fn sync_cronjob(
    w: &Writer,
    key: &Key,
    cj: &Value,
    now: DateTime<Utc>,
) -> (bool, Option<Duration>) {
    let uid = meta(cj, "uid").to_string();
    let jobs: Vec<(Key, Value)> = list_ns(w.store(), JOBS, &key.tenant, &key.namespace)
        .into_iter()
        .filter(|(_, j)| controller_uid(j) == Some(uid.as_str()))
        .map(|(k, j)| (k, (*j).clone()))
        .collect();
    let mut status = cj
        .get("status")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let mut active: Vec<Value> = status
        .get("active")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut changed = false;

    // What the Jobs say: the finished leave the active list, the successful set the last
    // success time.
    let mut last_success = time(cj, "/status/lastSuccessfulTime");
    for (jk, j) in &jobs {
        let juid = meta(j, "uid");
        let found = in_active_list(&active, juid);
        match finished(j) {
            None if !found => {
                let msg = format!(
                    "Saw a job that the controller did not create or forgot: {}",
                    jk.name
                );
                event(w, key, cj, "Warning", "UnexpectedJob", &msg, Some(juid)).await;
            }
            Some(cond) if found => {
                remove_active(&mut active, juid);
                let msg = format!("Saw completed job: {}, condition: {cond}", jk.name);
                event(w, key, cj, "Normal", "SawCompletedJob", &msg, Some(juid)).await;
            }
            _ => {}
        }
        if finished(j) == Some("Complete") {
            if let Some(t) = time(j, "/status/completionTime") {
                if last_success.is_none_or(|l| t > l) {
                    last_success = Some(t);
                }
            }
        }
    }
    if let Some(t) = last_success {
        status.insert("lastSuccessfulTime".into(), json!(stamp(t)));
    }
    // Active Jobs that are gone leave the list (else the CronJob would stay active forever).
    let kept: Vec<Value> = active
        .iter()
        .filter(|r| {
            let ruid = r.get("uid").and_then(Value::as_str).unwrap_or("");
            jobs.iter().any(|(_, j)| meta(j, "uid") == ruid)
                || r.get("name")
                    .and_then(Value::as_str)
                    .and_then(|n| {
                        w.store()
                            .get(&Key::new(JOBS, &key.tenant, &key.namespace, n))
                    })
                    .is_some_and(|j| meta(&j, "uid") == ruid)
        })
        .cloned()
        .collect();
    for r in active.iter().filter(|r| !kept.contains(r)) {
        let name = r.get("name").and_then(Value::as_str).unwrap_or("");
        let msg = format!("Active job went missing: {name}");
        let ruid = r.get("uid").and_then(Value::as_str).unwrap_or(name);
        event(w, key, cj, "Normal", "MissingJob", &msg, Some(ruid)).await;
    }
    active = kept;

    // Finished Jobs beyond the history limits.
    if !terminating(cj) {
        let limit = |f: &str| cj.pointer(&format!("/spec/{f}")).and_then(Value::as_i64);
        for (jk, j) in surplus(
            &jobs,
            limit("successfulJobsHistoryLimit"),
            limit("failedJobsHistoryLimit"),
        ) {
            if delete_job(w, key, cj, jk, j).await {
                remove_active(&mut active, meta(j, "uid"));
                changed = true;
            }
        }
    }

    let due_in = schedule(w, key, cj, &mut active, &mut status, now, &mut changed).await;

    if active.is_empty() {
        status.remove("active");
    } else {
        status.insert("active".into(), json!(active));
    }
    changed |= write_status(w, key, cj, status).await;
    (changed, due_in)
}

/// Start what is due, if anything (kube's `syncCronJob` after its bookkeeping); when the
/// CronJob next falls due.
async fn schedule(
    w: &Writer,
    key: &Key,
    cj: &Value,
    active: &mut Vec<Value>,
    status: &mut Map<String, Value>,
    now: DateTime<Utc>,
    changed: &mut bool,
) -> Option<Duration> {
    if terminating(cj) {
        return None;
    }
    let tz = match cj.pointer("/spec/timeZone").and_then(Value::as_str) {
        None => None,
        Some(name) => match apiserver::cron::zone(name) {
            Ok(tz) => Some(tz),
            Err(e) => {
                let msg = format!("invalid timeZone: {name:?}: {e}");
                event(w, key, cj, "Warning", "UnknownTimeZone", &msg, Some(name)).await;
                return None;
            }
        },
    };
    if cj.pointer("/spec/suspend").and_then(Value::as_bool) == Some(true) {
        return None;
    }
    let spec = cj
        .pointer("/spec/schedule")
        .and_then(Value::as_str)
        .unwrap_or("");
    let sched = match Schedule::parse(spec) {
        Ok(s) => s,
        Err(e) => {
            let msg = format!("unparseable schedule: {spec:?} : {e}");
            event(
                w,
                key,
                cj,
                "Warning",
                "UnparseableSchedule",
                &msg,
                Some(spec),
            )
            .await;
            return None;
        }
    };
    // The controller's own zone is UTC; a zone in the schedule counts where no field names one.
    let tz = tz.or(sched.zone).unwrap_or(Tz::UTC);
    // The CronJob as this pass leaves it, for when it falls due next.
    let current = |status: &Map<String, Value>| {
        let mut c = cj.clone();
        c["status"] = Value::Object(status.clone());
        c
    };
    let d = due(cj, &sched, tz, now, true);
    let Some(t) = d.latest else {
        if sched.next_after(d.earliest, tz).is_none() {
            let msg = format!(
                "invalid schedule: {spec} : time difference between two schedules is less than 1 second"
            );
            event(w, key, cj, "Warning", "InvalidSchedule", &msg, Some(spec)).await;
            return None;
        }
        return wake_in(&current(status), &sched, tz, now);
    };
    if d.missed > TOO_MANY {
        event(
            w,
            key,
            cj,
            "Warning",
            "TooManyMissedTimes",
            "too many missed start times. Set or decrease .spec.startingDeadlineSeconds or check clock skew",
            Some(&stamp(t)),
        )
        .await;
    }
    if let Some(sds) = cj
        .pointer("/spec/startingDeadlineSeconds")
        .and_then(Value::as_i64)
    {
        if t + chrono::Duration::seconds(sds) < now {
            let msg = format!("Missed scheduled time to start a job: {}", t.to_rfc2822());
            event(w, key, cj, "Warning", "MissSchedule", &msg, Some(&stamp(t))).await;
            return wake_in(&current(status), &sched, tz, now);
        }
    }
    let name = job_name(&key.name, t);
    let served = active
        .iter()
        .any(|r| r.get("name").and_then(Value::as_str) == Some(name.as_str()))
        || time(cj, "/status/lastScheduleTime") == Some(t);
    if served {
        return wake_in(&current(status), &sched, tz, now);
    }
    let policy = cj
        .pointer("/spec/concurrencyPolicy")
        .and_then(Value::as_str)
        .unwrap_or("Allow");
    if policy == "Forbid" && !active.is_empty() {
        event(
            w,
            key,
            cj,
            "Normal",
            "JobAlreadyActive",
            "Not starting job because prior execution is running and concurrency policy is Forbid",
            Some(&stamp(t)),
        )
        .await;
        return wake_in(&current(status), &sched, tz, now);
    }
    if policy == "Replace" {
        for r in active.clone() {
            let rname = r.get("name").and_then(Value::as_str).unwrap_or("");
            let rk = Key::new(JOBS, &key.tenant, &key.namespace, rname);
            let gone = match w.store().get(&rk) {
                Some(j) => delete_job(w, key, cj, &rk, &j).await,
                None => true,
            };
            if !gone {
                return Some(Duration::from_secs(1));
            }
            remove_active(active, r.get("uid").and_then(Value::as_str).unwrap_or(""));
            *changed = true;
        }
    }
    let (jk, job) = job_for(key, cj, t, tz);
    let created = match w.create(&jk, job).await {
        Ok(j) => {
            let msg = format!("Created job {}", jk.name);
            event(w, key, cj, "Normal", "SuccessfulCreate", &msg, None).await;
            tracing::info!(cronjob = %key.name, namespace = %key.namespace, job = %jk.name, scheduled = %stamp(t), "created job");
            (*j).clone()
        }
        Err(e) if e.code == 409 => {
            // Created earlier (the status write after it was lost): take it into the list if
            // it is this CronJob's, else leave it to whoever made it.
            match w.store().get(&jk) {
                Some(j) if controller_uid(&j) == Some(meta(cj, "uid")) => {
                    if in_active_list(active, meta(&j, "uid")) {
                        return wake_in(&current(status), &sched, tz, now);
                    }
                    (*j).clone()
                }
                _ => return wake_in(&current(status), &sched, tz, now),
            }
        }
        Err(e) => {
            let msg = format!("Error creating job: {}", e.message);
            event(w, key, cj, "Warning", "FailedCreate", &msg, Some(&stamp(t))).await;
            // Tried again on the loop's next tick.
            return Some(Duration::from_secs(5));
        }
    };
    active.push(job_ref(&created));
    status.insert("lastScheduleTime".into(), json!(stamp(t)));
    *changed = true;
    wake_in(&current(status), &sched, tz, now)
}

fn in_active_list(active: &[Value], uid: &str) -> bool {
    active
        .iter()
        .any(|r| r.get("uid").and_then(Value::as_str) == Some(uid))
}

#[cfg(test)]
mod tests {
    use super::*;
    use store::Precondition;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .expect("time")
            .with_timezone(&Utc)
    }

    async fn setup() -> (Store, Writers) {
        let s = Store::memory(10_000).await.expect("store");
        apiserver::bootstrap::system_namespaces(&s)
            .await
            .expect("namespaces");
        let ws = Writers::new(&Api::new(s.clone(), apiserver::api::ApiConfig::default()));
        (s, ws)
    }

    /// A CronJob created (through the API's rules) at `created`, with `spec` merged in.
    async fn cronjob(ws: &Writers, name: &str, created: &str, spec: Value) -> Key {
        let mut cj = json!({"apiVersion": "batch/v1", "kind": "CronJob",
            "metadata": {"name": name, "namespace": "default", "creationTimestamp": created},
            "spec": {"schedule": "*/5 * * * *", "jobTemplate": {
                "metadata": {"labels": {"app": name}, "annotations": {"note": "from the template"}},
                "spec": {"template": {"spec": {"restartPolicy": "OnFailure",
                    "containers": [{"name": "c", "image": "busybox"}]}}}}}});
        if let (Some(m), Some(extra)) = (cj["spec"].as_object_mut(), spec.as_object()) {
            for (k, v) in extra {
                m.insert(k.clone(), v.clone());
            }
        }
        let key = Key::new(CRONJOBS, "", "default", name);
        ws.cronjobs.create(&key, cj).await.expect("created");
        key
    }

    async fn sync(ws: &Writers, key: &Key, now: &str) -> (bool, Option<Duration>) {
        let cj = ws.cronjobs.store().get(key).expect("cronjob");
        sync_cronjob(&ws.cronjobs, key, &cj, at(now)).await
    }

    fn get(s: &Store, key: &Key) -> Value {
        (*s.get(key).expect("object")).clone()
    }

    fn jobs(s: &Store) -> Vec<String> {
        let mut v: Vec<String> = list_ns(s, JOBS, "", "default")
            .into_iter()
            .filter(|(_, j)| !terminating(j))
            .map(|(k, _)| k.name)
            .collect();
        v.sort();
        v
    }

    fn events(s: &Store, reason: &str) -> Vec<String> {
        list_ns(s, "events", "", "default")
            .into_iter()
            .filter(|(_, e)| e["reason"] == reason && e["involvedObject"]["kind"] == "CronJob")
            .map(|(_, e)| e["message"].as_str().unwrap_or("").to_string())
            .collect()
    }

    /// Finish the job `name` with `cond` (Complete or Failed), started at `start`.
    async fn finish(s: &Store, name: &str, cond: &str, start: &str, end: &str) {
        let k = Key::new(JOBS, "", "default", name);
        let mut j = get(s, &k);
        j["status"] = json!({"startTime": start, "completionTime": end,
            "conditions": [{"type": cond, "status": "True"}]});
        if cond == "Failed" {
            j["status"]
                .as_object_mut()
                .expect("status")
                .remove("completionTime");
        }
        s.put(k, j, Precondition::Exists).await.expect("finished");
    }

    fn name_at(t: &str) -> String {
        at(t).timestamp().div_euclid(60).to_string()
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn creates_one_job_per_schedule_time_and_wakes_for_the_next() {
        let (s, ws) = setup().await;
        let k = cronjob(&ws, "tick", "2026-03-01T10:02:00Z", json!({})).await;
        // Before 10:05 nothing is due; the loop is to wake just after it.
        let (_, wake) = sync(&ws, &k, "2026-03-01T10:04:59Z").await;
        assert!(jobs(&s).is_empty());
        let wake = wake.expect("a next time");
        assert!(
            wake > Duration::from_millis(1000) && wake <= Duration::from_millis(1100),
            "{wake:?}"
        );
        // At 10:05 (a few seconds late) the job for 10:05 is created.
        let (changed, wake) = sync(&ws, &k, "2026-03-01T10:05:03Z").await;
        assert!(changed);
        let want = format!("tick-{}", name_at("2026-03-01T10:05:00Z"));
        assert_eq!(jobs(&s), std::slice::from_ref(&want));
        let job = get(&s, &Key::new(JOBS, "", "default", &want));
        let cj = get(&s, &k);
        let owner = &job["metadata"]["ownerReferences"][0];
        assert_eq!(
            (
                owner["kind"].as_str(),
                owner["apiVersion"].as_str(),
                owner["controller"].as_bool()
            ),
            (Some("CronJob"), Some("batch/v1"), Some(true))
        );
        assert_eq!(owner["uid"], cj["metadata"]["uid"]);
        assert_eq!(
            job["metadata"]["annotations"][SCHEDULED_TIMESTAMP],
            "2026-03-01T10:05:00Z"
        );
        assert_eq!(job["metadata"]["annotations"]["note"], "from the template");
        assert_eq!(job["metadata"]["labels"]["app"], "tick");
        // The Job got a Job's defaults, its own selector among them.
        assert!(job.pointer("/spec/selector/matchLabels").is_some());
        assert_eq!(job["spec"]["backoffLimit"], 6);
        assert_eq!(cj["status"]["lastScheduleTime"], "2026-03-01T10:05:00Z");
        assert_eq!(cj["status"]["active"][0]["name"], want.as_str());
        assert_eq!(cj["status"]["active"][0]["uid"], job["metadata"]["uid"]);
        assert_eq!(
            events(&s, "SuccessfulCreate"),
            [format!("Created job {want}")]
        );
        let wake = wake.expect("a next time");
        assert!(
            wake > Duration::from_secs(296) && wake < Duration::from_secs(298),
            "{wake:?}"
        );
        // Idempotent: the same time is never served twice.
        let (changed, _) = sync(&ws, &k, "2026-03-01T10:05:04Z").await;
        assert!(!changed);
        assert_eq!(jobs(&s).len(), 1);
        // The job finishes: it leaves the active list, and the success is recorded.
        finish(
            &s,
            &want,
            "Complete",
            "2026-03-01T10:05:04Z",
            "2026-03-01T10:06:00Z",
        )
        .await;
        sync(&ws, &k, "2026-03-01T10:06:01Z").await;
        let cj = get(&s, &k);
        assert!(cj.pointer("/status/active").is_none(), "{cj}");
        assert_eq!(cj["status"]["lastSuccessfulTime"], "2026-03-01T10:06:00Z");
        assert_eq!(
            events(&s, "SawCompletedJob"),
            [format!("Saw completed job: {want}, condition: Complete")]
        );
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn forbid_skips_while_one_runs_and_replace_replaces_it() {
        let (s, ws) = setup().await;
        let k = cronjob(
            &ws,
            "solo",
            "2026-03-01T10:02:00Z",
            json!({"concurrencyPolicy": "Forbid"}),
        )
        .await;
        sync(&ws, &k, "2026-03-01T10:05:01Z").await;
        let first = format!("solo-{}", name_at("2026-03-01T10:05:00Z"));
        assert_eq!(jobs(&s), std::slice::from_ref(&first));
        // 10:10 while the first still runs: nothing new, said once however often it looks.
        sync(&ws, &k, "2026-03-01T10:10:01Z").await;
        sync(&ws, &k, "2026-03-01T10:10:02Z").await;
        assert_eq!(jobs(&s), std::slice::from_ref(&first));
        assert_eq!(
            events(&s, "JobAlreadyActive"),
            ["Not starting job because prior execution is running and concurrency policy is Forbid"]
        );
        // Once it is done the skipped time still starts (no startingDeadlineSeconds), as kube's.
        finish(
            &s,
            &first,
            "Complete",
            "2026-03-01T10:05:01Z",
            "2026-03-01T10:11:00Z",
        )
        .await;
        sync(&ws, &k, "2026-03-01T10:11:05Z").await;
        let second = format!("solo-{}", name_at("2026-03-01T10:10:00Z"));
        assert_eq!(jobs(&s), [first.clone(), second]);

        // With a starting deadline the skipped time is dropped instead.
        let k = cronjob(
            &ws,
            "late",
            "2026-03-01T10:02:00Z",
            json!({"concurrencyPolicy": "Forbid", "startingDeadlineSeconds": 30}),
        )
        .await;
        sync(&ws, &k, "2026-03-01T10:05:01Z").await;
        let late = format!("late-{}", name_at("2026-03-01T10:05:00Z"));
        sync(&ws, &k, "2026-03-01T10:10:01Z").await;
        finish(
            &s,
            &late,
            "Complete",
            "2026-03-01T10:05:01Z",
            "2026-03-01T10:11:00Z",
        )
        .await;
        sync(&ws, &k, "2026-03-01T10:11:05Z").await;
        assert!(!jobs(&s)
            .iter()
            .any(|j| j == &format!("late-{}", name_at("2026-03-01T10:10:00Z"))));

        // Replace: the running one goes, the new one starts.
        let k = cronjob(
            &ws,
            "swap",
            "2026-03-01T10:02:00Z",
            json!({"concurrencyPolicy": "Replace"}),
        )
        .await;
        sync(&ws, &k, "2026-03-01T10:05:01Z").await;
        let old = format!("swap-{}", name_at("2026-03-01T10:05:00Z"));
        let new = format!("swap-{}", name_at("2026-03-01T10:10:00Z"));
        sync(&ws, &k, "2026-03-01T10:10:01Z").await;
        let all = jobs(&s);
        assert!(!all.contains(&old) && all.contains(&new), "{all:?}");
        assert_eq!(
            events(&s, "SuccessfulDelete"),
            [format!("Deleted job {old}")]
        );
        let cj = get(&s, &k);
        let active = cj["status"]["active"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        assert_eq!(active.len(), 1);
        assert_eq!(active[0]["name"], new.as_str());
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn suspended_starts_nothing() {
        let (s, ws) = setup().await;
        let k = cronjob(&ws, "nap", "2026-03-01T10:02:00Z", json!({"suspend": true})).await;
        let (_, wake) = sync(&ws, &k, "2026-03-01T10:05:01Z").await;
        assert!(jobs(&s).is_empty());
        assert_eq!(wake, None);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn finished_jobs_beyond_the_history_limits_go_oldest_first() {
        let (s, ws) = setup().await;
        let k = cronjob(
            &ws,
            "hist",
            "2026-03-01T10:02:00Z",
            json!({"successfulJobsHistoryLimit": 2, "failedJobsHistoryLimit": 1, "suspend": true}),
        )
        .await;
        let cj = get(&s, &k);
        let mut names = Vec::new();
        for (i, cond) in [
            "Complete", "Failed", "Complete", "Complete", "Failed", "Complete",
        ]
        .iter()
        .enumerate()
        {
            let t = format!("2026-03-01T1{i}:00:00Z");
            let (jk, job) = job_for(&k, &cj, at(&t), Tz::UTC);
            ws.cronjobs.create(&jk, job).await.expect("job");
            finish(&s, &jk.name, cond, &t, &format!("2026-03-01T1{i}:01:00Z")).await;
            names.push(jk.name);
        }
        sync(&ws, &k, "2026-03-01T16:00:00Z").await;
        // Successful: 0, 2, 3, 5 keep 3 and 5; failed: 1, 4 keep 4.
        let mut want = vec![names[3].clone(), names[4].clone(), names[5].clone()];
        want.sort();
        assert_eq!(jobs(&s), want);
        assert_eq!(events(&s, "SuccessfulDelete").len(), 3);
        // The newest success is recorded even though the controller did not see it finish.
        assert_eq!(
            get(&s, &k)["status"]["lastSuccessfulTime"],
            "2026-03-01T15:01:00Z"
        );
        // A limit of 0 keeps none; no limit keeps all.
        let job = |name: &str, cond: &str, start: Option<&str>| {
            let mut j = json!({"metadata": {"name": name},
                "status": {"conditions": [{"type": cond, "status": "True"}]}});
            if let Some(st) = start {
                j["status"]["startTime"] = json!(st);
            }
            (Key::new(JOBS, "", "default", name), j)
        };
        let list = vec![
            job("b", "Complete", Some("2026-01-01T00:00:00Z")),
            job("a", "Complete", Some("2026-01-01T00:00:00Z")),
            job("c", "Complete", None),
            job("d", "Complete", Some("2025-01-01T00:00:00Z")),
            job("e", "Failed", None),
        ];
        let order: Vec<&str> = surplus(&list, Some(0), None)
            .iter()
            .map(|(k, _)| k.name.as_str())
            .collect();
        assert_eq!(order, ["d", "a", "b", "c"]);
        assert_eq!(surplus(&list, Some(4), Some(1)).len(), 0);
        assert_eq!(surplus(&list, None, Some(0)).len(), 1);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn missed_times_the_deadline_and_the_zone() {
        let (s, ws) = setup().await;
        // A week of missed minutes: too many, reported, and the latest still starts.
        let k = cronjob(
            &ws,
            "busy",
            "2026-03-01T00:00:00Z",
            json!({"schedule": "* * * * *"}),
        )
        .await;
        sync(&ws, &k, "2026-03-08T00:00:30Z").await;
        assert_eq!(
            jobs(&s),
            [format!("busy-{}", name_at("2026-03-08T00:00:00Z"))]
        );
        assert_eq!(events(&s, "TooManyMissedTimes").len(), 1);
        // Within a starting deadline shorter than the wait nothing is due.
        let k = cronjob(
            &ws,
            "strict",
            "2026-03-01T00:00:00Z",
            json!({"schedule": "0 * * * *", "startingDeadlineSeconds": 20}),
        )
        .await;
        let (_, wake) = sync(&ws, &k, "2026-03-08T00:00:30Z").await;
        assert!(!jobs(&s).iter().any(|j| j.starts_with("strict-")));
        let wake = wake.expect("a next time");
        assert!(
            wake > Duration::from_secs(3569) && wake < Duration::from_secs(3571),
            "{wake:?}"
        );
        sync(&ws, &k, "2026-03-08T01:00:10Z").await;
        assert!(jobs(&s).contains(&format!("strict-{}", name_at("2026-03-08T01:00:00Z"))));
        // 09:00 in Tokyo is midnight UTC; the annotation is in the CronJob's zone.
        let k = cronjob(
            &ws,
            "tokyo",
            "2026-02-28T23:00:00Z",
            json!({"schedule": "0 9 * * *", "timeZone": "Asia/Tokyo"}),
        )
        .await;
        sync(&ws, &k, "2026-03-01T00:00:01Z").await;
        let name = format!("tokyo-{}", name_at("2026-03-01T00:00:00Z"));
        let job = get(&s, &Key::new(JOBS, "", "default", &name));
        assert_eq!(
            job["metadata"]["annotations"][SCHEDULED_TIMESTAMP],
            "2026-03-01T09:00:00+09:00"
        );
    }
}
