//! Label and field selectors, as `kubectl -l` / `--field-selector` send them.

use serde_json::{Map, Value};

/// One label requirement.
#[derive(Clone, Debug, PartialEq)]
pub enum LabelReq {
    /// `k=v`, `k==v`, `k in (a,b)`.
    In(String, Vec<String>),
    /// `k!=v`, `k notin (a,b)` (also matches objects without the label).
    NotIn(String, Vec<String>),
    /// `k`.
    Exists(String),
    /// `!k`.
    NotExists(String),
}

/// A parsed label selector: all requirements must hold.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LabelSelector(pub Vec<LabelReq>);

/// Split on commas outside parentheses.
fn split_top(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut depth, mut start) = (0i32, 0usize);
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

fn valid_label_key(k: &str) -> bool {
    crate::names::label_key_errors(k).is_empty()
}

impl LabelSelector {
    /// Parse `kubectl -l` syntax.
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut reqs = Vec::new();
        if s.trim().is_empty() {
            return Ok(LabelSelector(reqs));
        }
        for part in split_top(s) {
            let p = part.trim();
            if p.is_empty() {
                return Err(format!("invalid label selector {s:?}: empty requirement"));
            }
            let req = if let Some(k) = p.strip_prefix('!') {
                LabelReq::NotExists(k.trim().to_string())
            } else if let Some((k, v)) = p.split_once("!=") {
                LabelReq::NotIn(k.trim().into(), vec![v.trim().into()])
            } else if let Some((k, v)) = p.split_once("==") {
                LabelReq::In(k.trim().into(), vec![v.trim().into()])
            } else if let Some((k, v)) = p.split_once('=') {
                LabelReq::In(k.trim().into(), vec![v.trim().into()])
            } else if let Some((k, rest)) = p.split_once(" notin ") {
                LabelReq::NotIn(k.trim().into(), set(rest, s)?)
            } else if let Some((k, rest)) = p.split_once(" in ") {
                LabelReq::In(k.trim().into(), set(rest, s)?)
            } else {
                LabelReq::Exists(p.to_string())
            };
            let key = match &req {
                LabelReq::In(k, _)
                | LabelReq::NotIn(k, _)
                | LabelReq::Exists(k)
                | LabelReq::NotExists(k) => k,
            };
            if !valid_label_key(key) {
                return Err(format!(
                    "invalid label selector {s:?}: invalid label key {key:?}"
                ));
            }
            reqs.push(req);
        }
        Ok(LabelSelector(reqs))
    }

    /// Whether an object (its JSON) matches.
    pub fn matches(&self, obj: &Value) -> bool {
        let labels = obj.pointer("/metadata/labels");
        let get = |k: &str| labels.and_then(|l| l.get(k)).and_then(Value::as_str);
        self.0.iter().all(|r| match r {
            LabelReq::In(k, vs) => get(k).is_some_and(|v| vs.iter().any(|x| x == v)),
            LabelReq::NotIn(k, vs) => get(k).is_none_or(|v| !vs.iter().any(|x| x == v)),
            LabelReq::Exists(k) => get(k).is_some(),
            LabelReq::NotExists(k) => get(k).is_none(),
        })
    }

    /// Whether this selector matches everything.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

fn set(rest: &str, whole: &str) -> Result<Vec<String>, String> {
    let rest = rest.trim();
    let inner = rest
        .strip_prefix('(')
        .and_then(|r| r.strip_suffix(')'))
        .ok_or_else(|| format!("invalid label selector {whole:?}: expected a parenthesised set"))?;
    Ok(inner
        .split(',')
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
        .collect())
}

/// One field requirement.
#[derive(Clone, Debug, PartialEq)]
pub struct FieldReq {
    /// Field path, e.g. `spec.nodeName`.
    pub field: String,
    /// Required value.
    pub value: String,
    /// `!=` rather than `=`.
    pub negate: bool,
}

/// A parsed field selector.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FieldSelector(pub Vec<FieldReq>);

/// Fields every resource supports.
const COMMON_FIELDS: &[&str] = &["metadata.name", "metadata.namespace"];

impl FieldSelector {
    /// Parse `--field-selector` syntax, rejecting fields other than `metadata.name`,
    /// `metadata.namespace` and the kind's own `fields` (its strategy names them).
    pub fn parse(s: &str, fields: &[&str]) -> Result<Self, String> {
        let mut reqs = Vec::new();
        if s.trim().is_empty() {
            return Ok(FieldSelector(reqs));
        }
        for part in s.split(',') {
            let p = part.trim();
            let (field, value, negate) = if let Some((f, v)) = p.split_once("!=") {
                (f, v, true)
            } else if let Some((f, v)) = p.split_once("==") {
                (f, v, false)
            } else if let Some((f, v)) = p.split_once('=') {
                (f, v, false)
            } else {
                return Err(format!(
                    "invalid field selector {s:?}: {p:?} is not field=value"
                ));
            };
            let field = field.trim();
            if !COMMON_FIELDS.contains(&field) && !fields.contains(&field) {
                return Err(format!("field label not supported: {field}"));
            }
            reqs.push(FieldReq {
                field: field.to_string(),
                value: value.trim().to_string(),
                negate,
            });
        }
        Ok(FieldSelector(reqs))
    }

    /// Whether an object matches.
    pub fn matches(&self, obj: &Value) -> bool {
        self.0.iter().all(|r| {
            let actual = field_value(obj, &r.field);
            (actual == r.value) != r.negate
        })
    }

    /// The value this selector pins `metadata.name` to, if any (lets lists skip a scan).
    pub fn name(&self) -> Option<&str> {
        self.0
            .iter()
            .find(|r| r.field == "metadata.name" && !r.negate)
            .map(|r| r.value.as_str())
    }
}

/// The string value of a selectable field (missing fields read as "", booleans as
/// "true"/"false", `source` of events as `source.component`).
fn field_value(obj: &Value, field: &str) -> String {
    let path = if field == "source" {
        "source.component"
    } else {
        field
    };
    let mut cur = obj;
    for seg in path.split('.') {
        match cur.get(seg) {
            Some(v) => cur = v,
            None => {
                return if field == "spec.unschedulable" {
                    "false".into()
                } else {
                    String::new()
                }
            }
        }
    }
    match cur {
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        _ => String::new(),
    }
}

// ---------------------------------------------------------------------------------------------
// `metav1.LabelSelector` objects (as workloads and services carry them).

fn strs(v: Option<&Value>) -> Vec<&str> {
    v.and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

/// Whether one `matchExpressions` (or node selector) requirement holds, `get` reading the
/// value it names.
pub fn expression_matches(e: &Value, get: impl Fn(&str) -> Option<String>) -> bool {
    let key = e.get("key").and_then(Value::as_str).unwrap_or("");
    let values = strs(e.get("values"));
    let have = get(key);
    match e.get("operator").and_then(Value::as_str).unwrap_or("") {
        "In" => have.is_some_and(|h| values.contains(&h.as_str())),
        "NotIn" => have.is_none_or(|h| !values.contains(&h.as_str())),
        "Exists" => have.is_some(),
        "DoesNotExist" => have.is_none(),
        op @ ("Gt" | "Lt") => {
            let (Some(h), Some(v)) = (
                have.and_then(|h| h.parse::<i64>().ok()),
                values.first().and_then(|v| v.parse::<i64>().ok()),
            ) else {
                return false;
            };
            if op == "Gt" {
                h > v
            } else {
                h < v
            }
        }
        _ => false,
    }
}

/// Whether a `metav1.LabelSelector` selects `labels`.
pub fn selector_matches(sel: &Value, labels: &Map<String, Value>) -> bool {
    let get = |k: &str| labels.get(k).and_then(Value::as_str).map(String::from);
    sel.get("matchLabels")
        .and_then(Value::as_object)
        .is_none_or(|m| m.iter().all(|(k, v)| labels.get(k) == Some(v)))
        && sel
            .get("matchExpressions")
            .and_then(Value::as_array)
            .is_none_or(|es| es.iter().all(|e| expression_matches(e, get)))
}

/// Whether a `metav1.LabelSelector` is absent or selects everything (no requirement).
pub fn selector_empty(sel: Option<&Value>) -> bool {
    let Some(sel) = sel else { return true };
    sel.get("matchLabels")
        .and_then(Value::as_object)
        .is_none_or(Map::is_empty)
        && sel
            .get("matchExpressions")
            .and_then(Value::as_array)
            .is_none_or(Vec::is_empty)
}

/// A `metav1.LabelSelector` as the string kubectl prints (`app=web,tier in (a,b)`).
pub fn selector_string(sel: &Value) -> String {
    let mut parts: Vec<String> = sel
        .get("matchLabels")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                .collect()
        })
        .unwrap_or_default();
    for e in sel
        .get("matchExpressions")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
    {
        let key = e.get("key").and_then(Value::as_str).unwrap_or("");
        let mut values = strs(e.get("values"));
        values.sort();
        let vals = values.join(",");
        parts.push(
            match e.get("operator").and_then(Value::as_str).unwrap_or("") {
                "In" => format!("{key} in ({vals})"),
                "NotIn" => format!("{key} notin ({vals})"),
                "Exists" => key.to_string(),
                "DoesNotExist" => format!("!{key}"),
                op => format!("{key} {op} ({vals})"),
            },
        );
    }
    parts.sort();
    parts.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors_and_strings() {
        let sel = json!({"matchLabels": {"app": "web"}, "matchExpressions": [{"key": "tier", "operator": "In", "values": ["b", "a"]}]});
        let l = |v: Value| v.as_object().cloned().unwrap_or_default();
        assert!(selector_matches(
            &sel,
            &l(json!({"app": "web", "tier": "a"}))
        ));
        assert!(!selector_matches(&sel, &l(json!({"app": "web"}))));
        assert_eq!(selector_string(&sel), "app=web,tier in (a,b)");
    }

    use serde_json::json;

    #[test]
    fn label_selector_forms() {
        let o = json!({"metadata": {"labels": {"app": "web", "tier": "fe"}}});
        for (sel, want) in [
            ("app=web", true),
            ("app==web", true),
            ("app!=web", false),
            ("app in (db, web)", true),
            ("app notin (web)", false),
            ("app,tier=fe", true),
            ("!app", false),
            ("!missing", true),
            ("missing!=x", true),
            ("app=web,tier in (be)", false),
            ("", true),
        ] {
            assert_eq!(
                LabelSelector::parse(sel).unwrap().matches(&o),
                want,
                "{sel}"
            );
        }
        assert!(LabelSelector::parse("app in web").is_err());
        assert!(LabelSelector::parse("bad key!x=1").is_err());
        assert!(LabelSelector::parse("a=1,,b=2").is_err());
    }

    const POD_FIELDS: &[&str] = &["spec.nodeName", "status.phase"];
    const EVENT_FIELDS: &[&str] = &["involvedObject.kind", "involvedObject.name", "source"];

    #[test]
    fn field_selector_forms() {
        let p = json!({"metadata": {"name": "a", "namespace": "default"}, "spec": {"nodeName": "n1"}, "status": {"phase": "Running"}});
        assert!(
            FieldSelector::parse("spec.nodeName=n1,status.phase!=Failed", POD_FIELDS)
                .unwrap()
                .matches(&p)
        );
        assert!(!FieldSelector::parse("metadata.name=b", POD_FIELDS)
            .unwrap()
            .matches(&p));
        assert!(FieldSelector::parse("spec.nodeName=", POD_FIELDS)
            .unwrap()
            .matches(&json!({"spec": {}})));
        assert_eq!(
            FieldSelector::parse("spec.bogus=1", POD_FIELDS).unwrap_err(),
            "field label not supported: spec.bogus"
        );
        assert!(FieldSelector::parse("spec.nodeName=n1", &[]).is_err());
        let e = json!({"involvedObject": {"kind": "Pod", "name": "a", "uid": "u"}, "source": {"component": "kubelet"}});
        assert!(FieldSelector::parse(
            "involvedObject.kind=Pod,involvedObject.name=a,source=kubelet",
            EVENT_FIELDS
        )
        .unwrap()
        .matches(&e));
    }
}
