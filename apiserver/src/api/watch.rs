//! Watches: replay from a resourceVersion, bookmarks, initial events, tables, and the
//! scope and selector filter on every event.

use super::*;
use store::Cursor;

impl Api {
    pub(super) async fn watch(&self, t: &Target, req: &Request) -> ApiResult<Reply> {
        let (ls, mut fs) = self.selectors(t, &req.query)?;
        if let Some(n) = &t.name {
            fs.0.push(proto::selectors::FieldReq {
                field: "metadata.name".into(),
                value: n.clone(),
                negate: false,
            });
        }
        let acc = accept(&req.headers)?;
        let bookmarks = req.query.flag("allowWatchBookmarks");
        let timeout = match req.query.get("timeoutSeconds") {
            Some(s) if !s.is_empty() => Duration::from_secs(
                s.parse()
                    .map_err(|_| ApiError::bad_request(format!("invalid timeoutSeconds {s:?}")))?,
            ),
            _ => Duration::from_secs(1800),
        };
        let send_initial = req.query.flag("sendInitialEvents");
        let rv = req.query.get("resourceVersion").unwrap_or("");
        let scope = t.scope();
        let (initial, replay, cursor, live) = if rv.is_empty() || rv == "0" || send_initial {
            let (cursor, items, live) = self.store.list_and_watch(&scope);
            (
                items.into_iter().map(|(_, v)| v).collect(),
                Vec::new(),
                cursor,
                live,
            )
        } else {
            let from = store::Position::parse(rv)
                .ok_or_else(|| ApiError::bad_request(format!("invalid resourceVersion {rv:?}")))?;
            match self.store.watch(&scope, &from).await {
                Ok(w) => (Vec::new(), w.replay, w.cursor, w.live),
                Err(StoreError::Gone { requested, oldest }) => {
                    // Kubernetes answers 200 with an ERROR event carrying the 410 Status.
                    let (tx, rx) = tokio::sync::mpsc::channel(1);
                    let e =
                        ApiError::gone(format!("too old resource version: {requested} ({oldest})"));
                    let line = json!({"type": "ERROR", "object": e.status()});
                    let _ = tx.try_send(Bytes::from(format!("{line}\n")));
                    return Ok(Reply::Stream {
                        content_type: content_type(acc),
                        rx,
                    });
                }
                Err(e) => return Err(store_err(t.res, "", e)),
            }
        };
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        let ctx = WatchCtx {
            table: crate::kinds::of(t.res).table,
            kind: t.res.kind,
            api_version: t.res.api_version(),
            scope,
            ls,
            fs,
            acc,
            bookmarks,
            timeout,
            interval: self.config.bookmark_interval,
            initial_end: send_initial,
        };
        // Replayed events go through the same selector translation as live ones.
        let open = self.metrics.watch_opened();
        tokio::spawn(async move {
            ctx.run(tx, initial, replay, cursor, live).await;
            drop(open);
        });
        Ok(Reply::Stream {
            content_type: content_type(acc),
            rx,
        })
    }
}

struct WatchCtx {
    table: &'static table::Table,
    kind: &'static str,
    api_version: String,
    scope: Scope,
    ls: LabelSelector,
    fs: FieldSelector,
    acc: Accept,
    bookmarks: bool,
    timeout: Duration,
    interval: Duration,
    initial_end: bool,
}

impl WatchCtx {
    fn matches(&self, v: &Value) -> bool {
        self.ls.matches(v) && self.fs.matches(v)
    }

    /// One event line. Through a watch across partitions an object carries the watch's
    /// position as its resourceVersion (a client resumes from its last object's).
    fn line(&self, ty: &str, obj: &Value, cursor: &Cursor) -> Bytes {
        let stamped;
        let obj = if cursor.spans_partitions() {
            let mut o = obj.clone();
            if let Some(m) = o.get_mut("metadata").and_then(Value::as_object_mut) {
                m.insert(
                    "resourceVersion".into(),
                    cursor.position().to_string().into(),
                );
            }
            stamped = o;
            &stamped
        } else {
            obj
        };
        let object = match self.acc {
            Accept::Table if ty != "BOOKMARK" && ty != "ERROR" => table::table(
                self.table,
                &[obj],
                meta_str(obj, "resourceVersion"),
                None,
                Include::Metadata,
            ),
            _ => obj.clone(),
        };
        let mut s = serde_json::to_vec(&json!({"type": ty, "object": object})).unwrap_or_default();
        s.push(b'\n');
        Bytes::from(s)
    }

    fn bookmark(&self, cursor: &Cursor, initial_end: bool) -> Bytes {
        let mut meta = json!({"resourceVersion": cursor.position().to_string()});
        if initial_end {
            meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        let mut s = serde_json::to_vec(&json!({"type": "BOOKMARK", "object": {"kind": self.kind, "apiVersion": self.api_version, "metadata": meta}})).unwrap_or_default();
        s.push(b'\n');
        Bytes::from(s)
    }

    /// Translate a store event into what this watcher sees: objects entering the selection
    /// arrive as ADDED, leaving it as DELETED.
    fn translate(&self, e: &Event) -> Option<(&'static str, Arc<Value>)> {
        if !self.scope.contains(&e.key) {
            return None;
        }
        let now = e.kind != EventType::Deleted && self.matches(&e.object);
        let before = e.prev.as_ref().is_some_and(|p| self.matches(p));
        match (e.kind, before, now) {
            (EventType::Deleted, true, _) => Some(("DELETED", e.object.clone())),
            (EventType::Deleted, false, _) => None,
            (_, false, true) => Some(("ADDED", e.object.clone())),
            (_, true, true) => Some(("MODIFIED", e.object.clone())),
            (_, true, false) => Some(("DELETED", e.object.clone())),
            (_, false, false) => None,
        }
    }

    async fn run(
        self,
        tx: tokio::sync::mpsc::Sender<Bytes>,
        initial: Vec<Arc<Value>>,
        replay: Vec<Arc<Event>>,
        mut cursor: Cursor,
        mut live: tokio::sync::broadcast::Receiver<Arc<Event>>,
    ) {
        let deadline = tokio::time::Instant::now() + self.timeout;
        for o in initial.iter().filter(|o| self.matches(o)) {
            if tx.send(self.line("ADDED", o, &cursor)).await.is_err() {
                return;
            }
        }
        if self.initial_end && tx.send(self.bookmark(&cursor, true)).await.is_err() {
            return;
        }
        for e in &replay {
            if !cursor.advance(e) {
                continue;
            }
            if let Some((ty, o)) = self.translate(e) {
                if tx.send(self.line(ty, &o, &cursor)).await.is_err() {
                    return;
                }
            }
        }
        let mut tick = tokio::time::interval(self.interval);
        tick.tick().await;
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => return,
                _ = tx.closed() => return,
                _ = tick.tick(), if self.bookmarks => {
                    if tx.send(self.bookmark(&cursor, false)).await.is_err() { return; }
                }
                ev = live.recv() => match ev {
                    Ok(e) => {
                        if !cursor.advance(&e) { continue; }
                        if let Some((ty, o)) = self.translate(&e) {
                            if tx.send(self.line(ty, &o, &cursor)).await.is_err() { return; }
                        }
                    }
                    // A watcher that falls too far behind is closed; the client re-watches
                    // from its last version (or relists on 410).
                    Err(_) => return,
                }
            }
        }
    }
}
