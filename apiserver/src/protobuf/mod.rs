//! Kubernetes protobuf request bodies (`application/vnd.kubernetes.protobuf`), which kubectl's
//! typed clients send for `kubectl create configmap|secret|namespace|token|...`. Decoded into
//! the JSON the rest of the API works with, driven by the field tables in [`schema`].
//!
//! Untrusted input: every length is bounds-checked, nesting depth is capped, and unknown field
//! numbers are skipped (as protobuf requires) rather than trusted.

pub mod schema;

use std::collections::HashMap;
use std::sync::OnceLock;

use base64::Engine;
use serde_json::{json, Map, Value};

use schema::{Field, Kind};

/// The 4-byte prefix of every Kubernetes protobuf body.
pub const MAGIC: &[u8] = b"k8s\0";
const MAX_DEPTH: usize = 64;

fn index() -> &'static HashMap<&'static str, &'static [Field]> {
    static IDX: OnceLock<HashMap<&'static str, &'static [Field]>> = OnceLock::new();
    IDX.get_or_init(|| schema::all().map(|(n, f)| (*n, *f)).collect())
}

struct Reader<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn varint(&mut self) -> Result<u64, String> {
        let mut v: u64 = 0;
        for shift in (0..64).step_by(7) {
            let byte = *self.b.get(self.pos).ok_or("truncated varint")?;
            self.pos += 1;
            v |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err("varint too long".into())
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|e| *e <= self.b.len())
            .ok_or("truncated field")?;
        let s = &self.b[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn done(&self) -> bool {
        self.pos >= self.b.len()
    }
}

/// A raw wire value.
enum Wire<'a> {
    Varint(u64),
    Fixed64(u64),
    Len(&'a [u8]),
    Fixed32,
}

fn fields(b: &[u8]) -> Result<Vec<(u32, Wire<'_>)>, String> {
    let mut r = Reader { b, pos: 0 };
    let mut out = Vec::new();
    while !r.done() {
        let tag = r.varint()?;
        let no = u32::try_from(tag >> 3).map_err(|_| "field number out of range")?;
        if no == 0 {
            return Err("field number 0".into());
        }
        let w = match tag & 7 {
            0 => Wire::Varint(r.varint()?),
            1 => Wire::Fixed64(u64::from_le_bytes(
                r.take(8)?.try_into().map_err(|_| "fixed64")?,
            )),
            2 => {
                let n = usize::try_from(r.varint()?).map_err(|_| "length out of range")?;
                Wire::Len(r.take(n)?)
            }
            5 => {
                r.take(4)?;
                Wire::Fixed32
            }
            t => return Err(format!("unsupported wire type {t}")),
        };
        out.push((no, w));
    }
    Ok(out)
}

fn as_str(w: &Wire<'_>) -> Result<String, String> {
    match w {
        Wire::Len(b) => String::from_utf8(b.to_vec()).map_err(|_| "string is not UTF-8".into()),
        _ => Err("expected a string".into()),
    }
}

fn as_bytes<'a>(w: &Wire<'a>) -> Result<&'a [u8], String> {
    match w {
        Wire::Len(b) => Ok(b),
        _ => Err("expected bytes".into()),
    }
}

fn rfc3339(secs: i64, nanos: i64, micro: bool) -> Value {
    match chrono::DateTime::from_timestamp(secs, u32::try_from(nanos).unwrap_or(0)) {
        // Go's zero time marshals as null.
        Some(_) if secs == -62_135_596_800 => Value::Null,
        Some(t) if micro => json!(t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)),
        Some(t) => json!(t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
        None => Value::Null,
    }
}

fn go_duration(nanos: i64) -> String {
    let neg = nanos < 0;
    let n = nanos.unsigned_abs();
    let (h, m, s, frac) = (
        n / 3_600_000_000_000,
        (n / 60_000_000_000) % 60,
        (n / 1_000_000_000) % 60,
        n % 1_000_000_000,
    );
    let mut out = String::new();
    if neg {
        out.push('-');
    }
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if h > 0 || m > 0 {
        out.push_str(&format!("{m}m"));
    }
    if frac > 0 {
        let f = format!("{frac:09}");
        out.push_str(&format!("{s}.{}s", f.trim_end_matches('0')));
    } else {
        out.push_str(&format!("{s}s"));
    }
    out
}

/// Decode one message into JSON.
fn message(name: &str, b: &[u8], depth: usize) -> Result<Value, String> {
    if depth > MAX_DEPTH {
        return Err("message nesting too deep".into());
    }
    let raw = fields(b)?;
    let get_varint = |no: u32| {
        raw.iter().rev().find_map(|(n, w)| {
            if *n == no {
                if let Wire::Varint(v) = w {
                    Some(*v as i64)
                } else {
                    None
                }
            } else {
                None
            }
        })
    };
    // Types whose JSON form is not an object.
    match name {
        "k8s.io.apimachinery.pkg.apis.meta.v1.Time" => {
            return Ok(rfc3339(
                get_varint(1).unwrap_or(0),
                get_varint(2).unwrap_or(0),
                false,
            ))
        }
        "k8s.io.apimachinery.pkg.apis.meta.v1.MicroTime" => {
            return Ok(rfc3339(
                get_varint(1).unwrap_or(0),
                get_varint(2).unwrap_or(0),
                true,
            ))
        }
        "k8s.io.apimachinery.pkg.apis.meta.v1.Duration" => {
            return Ok(json!(go_duration(get_varint(1).unwrap_or(0))))
        }
        "k8s.io.apimachinery.pkg.api.resource.Quantity" => {
            let s = raw
                .iter()
                .rev()
                .find(|(n, _)| *n == 1)
                .map(|(_, w)| as_str(w))
                .transpose()?
                .unwrap_or_default();
            return Ok(json!(s));
        }
        "k8s.io.apimachinery.pkg.util.intstr.IntOrString" => {
            let ty = get_varint(1).unwrap_or(0);
            if ty == 1 {
                let s = raw
                    .iter()
                    .rev()
                    .find(|(n, _)| *n == 3)
                    .map(|(_, w)| as_str(w))
                    .transpose()?
                    .unwrap_or_default();
                return Ok(json!(s));
            }
            return Ok(json!(get_varint(2).unwrap_or(0) as i32));
        }
        "k8s.io.apimachinery.pkg.apis.meta.v1.FieldsV1"
        | "k8s.io.apimachinery.pkg.runtime.RawExtension" => {
            let bytes = raw
                .iter()
                .rev()
                .find(|(n, _)| *n == 1)
                .map(|(_, w)| as_bytes(w))
                .transpose()?
                .unwrap_or_default();
            if bytes.is_empty() {
                return Ok(Value::Null);
            }
            return serde_json::from_slice(bytes).map_err(|e| format!("embedded JSON: {e}"));
        }
        _ => {}
    }
    let table = index()
        .get(name)
        .ok_or_else(|| format!("no protobuf schema for {name}"))?;
    let mut out = Map::new();
    for (no, w) in &raw {
        let Some(f) = table.iter().find(|f| f.no == *no) else {
            continue;
        };
        let v = match f.kind {
            Kind::Str => {
                let s = as_str(w)?;
                if s.is_empty() && !f.repeated {
                    continue;
                }
                json!(s)
            }
            Kind::Int => match w {
                Wire::Varint(v) => json!(*v as i64),
                Wire::Len(packed) if f.repeated => {
                    let mut r = Reader { b: packed, pos: 0 };
                    let mut items = Vec::new();
                    while !r.done() {
                        items.push(json!(r.varint()? as i64));
                    }
                    let arr = out.entry(f.json).or_insert(json!([]));
                    if let Value::Array(a) = arr {
                        a.extend(items);
                    }
                    continue;
                }
                _ => return Err(format!("{}: expected an integer", f.json)),
            },
            Kind::Bool => match w {
                Wire::Varint(v) => json!(*v != 0),
                _ => return Err(format!("{}: expected a bool", f.json)),
            },
            Kind::F64 => match w {
                Wire::Fixed64(v) => json!(f64::from_bits(*v)),
                _ => return Err(format!("{}: expected a double", f.json)),
            },
            Kind::Bytes => json!(base64::engine::general_purpose::STANDARD.encode(as_bytes(w)?)),
            Kind::Msg(m) if f.is_inline() => {
                // Embedded Go struct (`json:",inline"`): its keys belong to the parent.
                if let Value::Object(inner) = message(m, as_bytes(w)?, depth + 1)? {
                    out.extend(inner);
                }
                continue;
            }
            Kind::Msg(m) => message(m, as_bytes(w)?, depth + 1)?,
            Kind::MapStr | Kind::MapBytes | Kind::MapMsg(_) => {
                let entry = fields(as_bytes(w)?)?;
                let mut key = String::new();
                let mut val = Value::Null;
                for (n, ew) in &entry {
                    match (n, f.kind) {
                        (1, _) => key = as_str(ew)?,
                        (2, Kind::MapStr) => val = json!(as_str(ew)?),
                        (2, Kind::MapBytes) => {
                            val = json!(
                                base64::engine::general_purpose::STANDARD.encode(as_bytes(ew)?)
                            )
                        }
                        (2, Kind::MapMsg(m)) => val = message(m, as_bytes(ew)?, depth + 1)?,
                        _ => {}
                    }
                }
                if val.is_null() {
                    val = match f.kind {
                        Kind::MapStr | Kind::MapBytes => json!(""),
                        _ => json!({}),
                    };
                }
                let m = out.entry(f.json).or_insert(json!({}));
                if let Value::Object(m) = m {
                    m.insert(key, val);
                }
                continue;
            }
        };
        if f.repeated {
            let arr = out.entry(f.json).or_insert(json!([]));
            if let Value::Array(a) = arr {
                a.push(v);
            }
        } else if !v.is_null() {
            out.insert(f.json.to_string(), v);
        }
    }
    Ok(Value::Object(out))
}

/// The proto package of an API group.
fn package(api_version: &str) -> Option<&'static str> {
    Some(match api_version {
        "v1" => "k8s.io.api.core.v1",
        "apps/v1" => "k8s.io.api.apps.v1",
        "batch/v1" => "k8s.io.api.batch.v1",
        "authentication.k8s.io/v1" => "k8s.io.api.authentication.v1",
        "authorization.k8s.io/v1" => "k8s.io.api.authorization.v1",
        "coordination.k8s.io/v1" => "k8s.io.api.coordination.v1",
        "policy/v1" => "k8s.io.api.policy.v1",
        _ => return None,
    })
}

/// Decode a whole `application/vnd.kubernetes.protobuf` body (magic + `runtime.Unknown`).
pub fn decode(body: &[u8]) -> Result<Value, String> {
    let rest = body
        .strip_prefix(MAGIC)
        .ok_or("missing the k8s protobuf prefix")?;
    let env = fields(rest)?;
    let mut api_version = String::new();
    let mut kind = String::new();
    let mut raw: &[u8] = &[];
    for (no, w) in &env {
        match no {
            1 => {
                for (n, tw) in fields(as_bytes(w)?)? {
                    match n {
                        1 => api_version = as_str(&tw)?,
                        2 => kind = as_str(&tw)?,
                        _ => {}
                    }
                }
            }
            2 => raw = as_bytes(w)?,
            3 if !as_str(w)?.is_empty() => return Err("content encodings are not supported".into()),
            _ => {}
        }
    }
    // DeleteOptions is registered in every group version; its message is meta.v1's.
    let pkg = if kind == "DeleteOptions" {
        "k8s.io.apimachinery.pkg.apis.meta.v1"
    } else {
        package(&api_version).ok_or_else(|| {
            format!("protobuf bodies of {api_version:?} are not supported; send JSON")
        })?
    };
    let mut v = message(&format!("{pkg}.{kind}"), raw, 0)?;
    v["apiVersion"] = json!(api_version);
    v["kind"] = json!(kind);
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn varint(mut v: u64, out: &mut Vec<u8>) {
        loop {
            let b = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out.push(b);
                return;
            }
            out.push(b | 0x80);
        }
    }
    fn len_field(no: u32, data: &[u8], out: &mut Vec<u8>) {
        varint(u64::from(no) << 3 | 2, out);
        varint(data.len() as u64, out);
        out.extend_from_slice(data);
    }

    /// A ConfigMap as kubectl encodes it: magic, Unknown{TypeMeta, raw}.
    pub(crate) fn configmap_body() -> Vec<u8> {
        let mut meta = Vec::new();
        len_field(1, b"cm1", &mut meta); // name
        len_field(3, b"default", &mut meta); // namespace
        let mut entry = Vec::new();
        len_field(1, b"k", &mut entry);
        len_field(2, b"v", &mut entry);
        let mut cm = Vec::new();
        len_field(1, &meta, &mut cm);
        len_field(2, &entry, &mut cm);
        let mut tm = Vec::new();
        len_field(1, b"v1", &mut tm);
        len_field(2, b"ConfigMap", &mut tm);
        let mut unk = Vec::new();
        len_field(1, &tm, &mut unk);
        len_field(2, &cm, &mut unk);
        len_field(3, b"", &mut unk);
        len_field(4, b"", &mut unk);
        let mut body = MAGIC.to_vec();
        body.extend(unk);
        body
    }

    #[test]
    fn decodes_a_configmap() {
        let v = decode(&configmap_body()).unwrap();
        assert_eq!(
            v,
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cm1", "namespace": "default"}, "data": {"k": "v"}})
        );
    }

    #[test]
    fn decodes_a_cronjob() {
        let mut meta = Vec::new();
        len_field(1, b"tick", &mut meta);
        let mut container = Vec::new();
        len_field(1, b"c", &mut container); // name
        len_field(2, b"busybox", &mut container); // image
        let mut pod = Vec::new();
        len_field(2, &container, &mut pod); // containers
        len_field(3, b"OnFailure", &mut pod); // restartPolicy
        let mut tpl = Vec::new();
        len_field(2, &pod, &mut tpl); // PodTemplateSpec.spec
        let mut job = Vec::new();
        len_field(6, &tpl, &mut job); // JobSpec.template
        let mut jt = Vec::new();
        len_field(2, &job, &mut jt); // JobTemplateSpec.spec
        let mut spec = Vec::new();
        len_field(1, b"*/5 * * * *", &mut spec); // schedule
        spec.extend([0x10, 30]); // startingDeadlineSeconds
        len_field(3, b"Forbid", &mut spec); // concurrencyPolicy
        spec.extend([0x20, 1]); // suspend
        len_field(5, &jt, &mut spec); // jobTemplate
        spec.extend([0x30, 2]); // successfulJobsHistoryLimit
        len_field(8, b"Europe/Paris", &mut spec); // timeZone
        let mut cj = Vec::new();
        len_field(1, &meta, &mut cj);
        len_field(2, &spec, &mut cj);
        let mut tm = Vec::new();
        len_field(1, b"batch/v1", &mut tm);
        len_field(2, b"CronJob", &mut tm);
        let mut unk = Vec::new();
        len_field(1, &tm, &mut unk);
        len_field(2, &cj, &mut unk);
        let mut body = MAGIC.to_vec();
        body.extend(unk);
        let v = decode(&body).unwrap();
        assert_eq!(
            v,
            json!({"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "tick"},
                "spec": {"schedule": "*/5 * * * *", "startingDeadlineSeconds": 30,
                    "concurrencyPolicy": "Forbid", "suspend": true,
                    "jobTemplate": {"spec": {"template": {"spec": {
                        "containers": [{"name": "c", "image": "busybox"}],
                        "restartPolicy": "OnFailure"}}}},
                    "successfulJobsHistoryLimit": 2, "timeZone": "Europe/Paris"}})
        );
    }

    #[test]
    fn rejects_garbage_without_panicking() {
        let body = configmap_body();
        for cut in 0..body.len() {
            let _ = decode(&body[..cut]);
        }
        let mut evil = MAGIC.to_vec();
        evil.extend([0x12, 0xff, 0xff, 0xff, 0xff, 0x0f]);
        assert!(decode(&evil).is_err());
        assert!(decode(b"nope").is_err());
        let mut deep = Vec::new();
        for _ in 0..200 {
            let mut outer = Vec::new();
            len_field(1, &deep, &mut outer);
            deep = outer;
        }
        let _ = message("k8s.io.api.core.v1.Pod", &deep, 0);
    }

    #[test]
    fn durations_render_like_go() {
        assert_eq!(go_duration(3_600_000_000_000), "1h0m0s");
        assert_eq!(go_duration(1_500_000_000), "1.5s");
        assert_eq!(go_duration(0), "0s");
    }
}
