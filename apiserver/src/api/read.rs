//! Reads: get, list (selectors, pagination, tables), pod logs, and discovery documents.

use super::*;

impl Api {
    pub(super) fn get(&self, t: &Target, req: &Request) -> ApiResult<Reply> {
        let obj = self
            .store
            .get(&t.key(t.name()))
            .ok_or_else(|| ApiError::not_found(t.res.group, t.res.plural, t.name()))?;
        match accept(&req.headers)? {
            Accept::Table => {
                let include = Include::parse(req.query.get("includeObject"))
                    .map_err(ApiError::bad_request)?;
                let tbl = table::table(
                    crate::kinds::of(t.res).table,
                    &[&*obj],
                    meta_str(&obj, "resourceVersion"),
                    None,
                    include,
                );
                Ok(Reply::json(StatusCode::OK, &tbl))
            }
            Accept::Json => Ok(Reply::json(StatusCode::OK, &obj)),
        }
    }

    /// `GET pods/{name}/log`: validated here, streamed from the log source as `text/plain`.
    pub(super) async fn pod_log(&self, t: &Target, req: &Request) -> ApiResult<Reply> {
        let opts = crate::logs::LogOptions::from_query(&req.query, t.name())?;
        let ns = t.namespace.as_deref().unwrap_or("");
        let Some(target) = crate::logs::resolve(&self.store, &t.tenant, ns, t.name(), opts)? else {
            // Not scheduled yet: kube-apiserver answers an empty log.
            return Ok(Reply::Full {
                status: StatusCode::OK,
                content_type: "text/plain",
                body: Bytes::new(),
                warnings: vec![],
            });
        };
        let source = self
            .logs
            .get()
            .ok_or_else(|| ApiError::unavailable("this server does not serve pod logs"))?;
        let rx = source.open(target).await?;
        Ok(Reply::Stream {
            content_type: "text/plain",
            rx,
        })
    }

    /// `pods/exec` and `pods/attach`: checked, resolved to the pod's node, the node's side
    /// opened, and only then the client's WebSocket accepted (so errors are plain `Status`
    /// answers kubectl shows).
    pub(super) async fn pod_stream(
        &self,
        t: &Target,
        req: &mut Request,
        kind: crate::streams::Kind,
    ) -> ApiResult<Reply> {
        let opts = crate::streams::StreamOptions::from_query(kind, &req.query)
            .map_err(ApiError::bad_request)?;
        let ns = t.namespace.as_deref().unwrap_or("");
        let target = crate::streams::resolve(&self.store, &t.tenant, ns, t.name(), opts)?;
        // After the request's own checks: kubectl retries a refused WebSocket with SPDY, and
        // the error it shows is the second answer's (the node side's error, when that was it).
        let key = crate::streams::RecentErrors::key(&target);
        let upgrade = match crate::streams::negotiate(&req.headers) {
            Ok(u) => u,
            Err(e) => return Err(self.stream_errors.recall(&key).unwrap_or(e)),
        };
        let source = self
            .streams
            .get()
            .ok_or_else(|| ApiError::unavailable("this server does not serve container streams"))?;
        let on_upgrade = req
            .upgrade
            .take()
            .ok_or_else(|| ApiError::bad_request("Upgrade request required (HTTP/1.1)"))?;
        let pipe = match source.open(target).await {
            Ok(p) => p,
            Err(e) => {
                self.stream_errors.remember(key, &e);
                return Err(e);
            }
        };
        let protocol = upgrade.protocol;
        tokio::spawn(async move {
            match on_upgrade.await {
                Ok(io) => {
                    crate::streams::serve(hyper_util::rt::TokioIo::new(io), pipe, protocol).await
                }
                Err(e) => tracing::debug!(error = %e, "client upgrade failed"),
            }
        });
        Ok(Reply::Switching {
            headers: crate::streams::switching_headers(&upgrade),
        })
    }

    /// `pods/portforward`: the pod checked (it exists, has a node, runs, is no VM), the
    /// upgrade accepted, and the session served in a task: each connection the client forwards
    /// opens its own pipe to the pod's port through the stream source.
    pub(super) async fn pod_portforward(&self, t: &Target, req: &mut Request) -> ApiResult<Reply> {
        let ns = t.namespace.as_deref().unwrap_or("");
        let opts = crate::streams::StreamOptions::port_forward(1);
        let target = crate::streams::resolve(&self.store, &t.tenant, ns, t.name(), opts)?;
        let upgrade = crate::portforward::negotiate(&req.headers, &req.query.all("ports"))?;
        let source =
            self.streams.get().cloned().ok_or_else(|| {
                ApiError::unavailable("this server does not serve container streams")
            })?;
        let on_upgrade = req
            .upgrade
            .take()
            .ok_or_else(|| ApiError::bad_request("Upgrade request required (HTTP/1.1)"))?;
        let open: crate::portforward::Opener = Arc::new(move |port| {
            let mut target = target.clone();
            target.opts.port = port;
            let source = source.clone();
            Box::pin(async move { source.open(target).await })
        });
        let headers = crate::portforward::switching_headers(&upgrade);
        tokio::spawn(async move {
            match on_upgrade.await {
                Ok(io) => {
                    let io = hyper_util::rt::TokioIo::new(io);
                    crate::portforward::serve(io, &upgrade, open).await
                }
                Err(e) => tracing::debug!(error = %e, "client upgrade failed"),
            }
        });
        Ok(Reply::Switching { headers })
    }

    /// Another replica's relayed container stream (`crate::logs::RELAY_PATH`): the request
    /// checked against the store as a site checks one, opened here, and the connection spliced
    /// to it.
    pub(super) async fn relay_stream(&self, req: &mut Request) -> ApiResult<Reply> {
        use base64::Engine;
        use prost::Message;
        let raw = req
            .query
            .get("request")
            .filter(|r| r.len() <= 256 * 1024)
            .ok_or_else(|| ApiError::bad_request("a relayed stream needs its request"))?;
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(raw)
            .map_err(|_| ApiError::bad_request("the relayed request is not base64"))?;
        let r = proto::sync::StreamRequest::decode(&bytes[..])
            .map_err(|_| ApiError::bad_request("the relayed request does not decode"))?;
        let upgrade_ok = req
            .headers
            .get(http::header::UPGRADE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case(proto::stream::UPGRADE));
        if !upgrade_ok {
            return Err(ApiError::bad_request(format!(
                "a relayed stream upgrades to {}",
                proto::stream::UPGRADE
            )));
        }
        let opts = crate::streams::StreamOptions::from_proto(&r).map_err(ApiError::bad_request)?;
        let target = crate::streams::resolve(&self.store, &r.tenant, &r.namespace, &r.pod, opts)?;
        let source =
            self.streams.get().cloned().ok_or_else(|| {
                ApiError::unavailable("this server does not serve container streams")
            })?;
        let on_upgrade = req
            .upgrade
            .take()
            .ok_or_else(|| ApiError::bad_request("Upgrade request required (HTTP/1.1)"))?;
        let mut pipe = source.open_here(target).await?;
        tokio::spawn(async move {
            match on_upgrade.await {
                Ok(io) => {
                    let mut io = hyper_util::rt::TokioIo::new(io);
                    let _ = tokio::io::copy_bidirectional(&mut io, &mut pipe).await;
                }
                Err(e) => tracing::debug!(error = %e, "relay upgrade failed"),
            }
        });
        let mut headers = http::HeaderMap::new();
        headers.insert(
            http::header::CONNECTION,
            http::HeaderValue::from_static("Upgrade"),
        );
        headers.insert(
            http::header::UPGRADE,
            http::HeaderValue::from_static(proto::stream::UPGRADE),
        );
        Ok(Reply::Switching { headers })
    }

    pub(super) fn selectors(
        &self,
        t: &Target,
        q: &Query,
    ) -> ApiResult<(LabelSelector, FieldSelector)> {
        let ls = LabelSelector::parse(q.get("labelSelector").unwrap_or(""))
            .map_err(ApiError::bad_request)?;
        let fs = FieldSelector::parse(
            q.get("fieldSelector").unwrap_or(""),
            crate::kinds::of(t.res).fields,
        )
        .map_err(ApiError::bad_request)?;
        Ok((ls, fs))
    }

    pub(super) fn list(&self, t: &Target, req: &Request) -> ApiResult<Reply> {
        let (ls, fs) = self.selectors(t, &req.query)?;
        let limit: usize = match req.query.get("limit") {
            None | Some("") | Some("0") => usize::MAX,
            Some(l) => l.parse().map_err(|_| {
                ApiError::bad_request(format!("limit must be a non-negative integer; got {l:?}"))
            })?,
        };
        let after = match req.query.get("continue").filter(|c| !c.is_empty()) {
            Some(c) => Some(decode_continue(&t.res.store_name(), c)?),
            None => None,
        };
        let (rv, items) = self.store.list(&t.scope(), after.as_ref().map(|(_, k)| k));
        let list_rv = after.map_or(rv, |(rv, _)| rv);
        let mut out: Vec<Arc<Value>> = Vec::new();
        let mut remaining = 0usize;
        for (_, v) in items.iter() {
            if !(ls.matches(v) && fs.matches(v)) {
                continue;
            }
            if out.len() == limit {
                remaining += 1;
            } else {
                out.push(v.clone());
            }
        }
        let cont = match out.last() {
            Some(last) if remaining > 0 => Some(encode_continue(&list_rv, &t.key_for(last))),
            _ => None,
        };
        match accept(&req.headers)? {
            Accept::Table => {
                let include = Include::parse(req.query.get("includeObject"))
                    .map_err(ApiError::bad_request)?;
                let refs: Vec<&Value> = out.iter().map(|v| &**v).collect();
                Ok(Reply::json(
                    StatusCode::OK,
                    &table::table(
                        crate::kinds::of(t.res).table,
                        &refs,
                        &list_rv.to_string(),
                        cont.as_deref(),
                        include,
                    ),
                ))
            }
            Accept::Json => {
                let mut meta = json!({"resourceVersion": list_rv.to_string()});
                if let Some(c) = &cont {
                    meta["continue"] = json!(c);
                    if ls.is_empty() && fs.0.is_empty() {
                        meta["remainingItemCount"] = json!(remaining);
                    }
                }
                let items: Vec<&Value> = out.iter().map(|v| &**v).collect();
                Ok(Reply::json(
                    StatusCode::OK,
                    &json!({"kind": t.res.list_kind(), "apiVersion": t.res.api_version(), "metadata": meta, "items": items}),
                ))
            }
        }
    }
}

pub(super) fn group_json(g: &str, v: &str) -> Value {
    let gv = json!({"groupVersion": format!("{g}/{v}"), "version": v});
    json!({"name": g, "versions": [gv.clone()], "preferredVersion": gv})
}

pub(super) fn resource_list(group: &str, version: &str) -> Value {
    let mut out = Vec::new();
    for r in RESOURCES
        .iter()
        .filter(|r| r.group == group && r.version == version)
    {
        let mut e = json!({
            "name": r.plural, "singularName": r.singular, "namespaced": r.namespaced, "kind": r.kind,
            "verbs": ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"],
        });
        if !r.short_names.is_empty() {
            e["shortNames"] = json!(r.short_names);
        }
        if !r.categories.is_empty() {
            e["categories"] = json!(r.categories);
        }
        out.push(e);
        for s in r.subresources {
            let (kind, verbs) = match *s {
                "token" => ("TokenRequest", json!(["create"])),
                "binding" => ("Binding", json!(["create"])),
                "log" => ("Pod", json!(["get"])),
                "exec" => ("PodExecOptions", json!(["create", "get"])),
                "attach" => ("PodAttachOptions", json!(["create", "get"])),
                "portforward" => ("PodPortForwardOptions", json!(["create", "get"])),
                "finalize" => ("Namespace", json!(["update"])),
                "scale" => ("Scale", json!(["get", "patch", "update"])),
                "eviction" => ("Eviction", json!(["create"])),
                _ => (r.kind, json!(["get", "patch", "update"])),
            };
            let mut sub = json!({"name": format!("{}/{s}", r.plural), "singularName": "", "namespaced": r.namespaced, "kind": kind, "verbs": verbs});
            if *s == "token" {
                sub["group"] = json!("authentication.k8s.io");
                sub["version"] = json!("v1");
            }
            if *s == "scale" {
                sub["group"] = json!("autoscaling");
                sub["version"] = json!("v1");
            }
            if *s == "eviction" {
                sub["group"] = json!("policy");
                sub["version"] = json!("v1");
            }
            out.push(sub);
        }
    }
    let gv = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": out})
}
