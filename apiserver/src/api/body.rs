//! Request and response bodies: content negotiation, decoding (JSON, YAML, protobuf), the
//! query options every write reads (fieldValidation, dryRun), and list continue tokens.

use super::*;

pub(super) fn accept(headers: &HeaderMap) -> ApiResult<Accept> {
    let a = headers
        .get(http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("*/*");
    let mut json_ok = false;
    for part in a.split(',') {
        let p = part.trim();
        if p.contains("as=Table")
            && p.contains("g=meta.k8s.io")
            && (p.contains("v=v1;") || p.ends_with("v=v1") || p.contains("v=v1beta1"))
        {
            return Ok(Accept::Table);
        }
        let mt = p.split(';').next().unwrap_or("").trim();
        if (mt == "application/json" && !p.contains("as="))
            || mt == "*/*"
            || mt == "application/*"
            || mt.is_empty()
        {
            json_ok = true;
        }
    }
    if json_ok {
        Ok(Accept::Json)
    } else {
        Err(ApiError::not_acceptable(format!("only the following media types are accepted: application/json, application/json;as=Table;v=v1;g=meta.k8s.io (asked for {a:?})")))
    }
}

pub(super) fn parse_body(headers: &HeaderMap, body: &Bytes) -> ApiResult<Value> {
    let ct = headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json");
    let mt = ct.split(';').next().unwrap_or("").trim();
    let v: Value = match mt {
        "application/vnd.kubernetes.protobuf" => crate::protobuf::decode(body)
            .map_err(|e| ApiError::bad_request(format!("error decoding protobuf body: {e}")))?,
        "application/yaml" | "application/apply-patch+yaml" => serde_yaml_ng::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("error decoding YAML body: {e}")))?,
        "application/json"
        | "application/merge-patch+json"
        | "application/json-patch+json"
        | "application/strategic-merge-patch+json"
        | "" => serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("error decoding JSON body: {e}")))?,
        other => return Err(ApiError::unsupported_media_type(other)),
    };
    Ok(v)
}

pub(super) fn field_validation(q: &Query) -> ApiResult<FieldValidation> {
    match q.get("fieldValidation") {
        None | Some("") | Some("Warn") => Ok(FieldValidation::Warn),
        Some("Strict") => Ok(FieldValidation::Strict),
        Some("Ignore") => Ok(FieldValidation::Ignore),
        Some(o) => Err(ApiError::bad_request(format!(
            "fieldValidation must be one of Ignore, Warn, Strict; got {o:?}"
        ))),
    }
}

pub(super) fn dry_run(q: &Query) -> ApiResult<bool> {
    match q.get("dryRun") {
        None | Some("") => Ok(false),
        Some("All") => Ok(true),
        Some(o) => Err(ApiError::bad_request(format!(
            "dryRun must be All; got {o:?}"
        ))),
    }
}

/// Continue token: the list's position and the last key returned.
pub(super) fn encode_continue(rv: &store::Position, k: &Key) -> String {
    use base64::Engine;
    let v = json!({"rv": rv.to_string(), "k": [k.tenant, k.namespace, k.name]});
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
}

pub(super) fn decode_continue(resource: &str, s: &str) -> ApiResult<(store::Position, Key)> {
    use base64::Engine;
    let bad = || ApiError::bad_request("continue key is not valid");
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s)
        .map_err(|_| bad())?;
    let v: Value = serde_json::from_slice(&raw).map_err(|_| bad())?;
    let rv = match v.get("rv") {
        Some(Value::String(p)) => store::Position::parse(p),
        Some(n) => n.as_u64().map(store::Position::from),
        None => None,
    }
    .ok_or_else(bad)?;
    let k = v
        .get("k")
        .and_then(Value::as_array)
        .filter(|a| a.len() == 3)
        .ok_or_else(bad)?;
    let part = |i: usize| k[i].as_str().map(String::from).ok_or_else(bad);
    Ok((
        rv,
        Key {
            resource: resource.into(),
            tenant: part(0)?,
            namespace: part(1)?,
            name: part(2)?,
        },
    ))
}

pub(super) fn content_type(a: Accept) -> &'static str {
    match a {
        Accept::Table => "application/json;as=Table;v=v1;g=meta.k8s.io",
        Accept::Json => "application/json",
    }
}
