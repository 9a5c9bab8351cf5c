//! The endpoint controllers at the cloud (kube-controller-manager's `endpoint-controller` and
//! `endpointslice-controller`): for every Service with a selector, the pods of its namespace
//! and tenant that match it and have an address become its Endpoints (ready ones as
//! `addresses`, the others as `notReadyAddresses`) and one EndpointSlice (`<service>-<hash>`,
//! labelled `kubernetes.io/service-name`, each endpoint with its ready/serving/terminating
//! conditions, node and pod). A Service's ports resolve against each pod: a numeric targetPort
//! as it is, a named one by the pod's container port of that name (a pod without it is left
//! out for that port). Both objects are owned by the Service (so they go with it) and written
//! only when they change.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Map, Value};
use tokio_util::sync::CancellationToken;

use apiserver::api::{component, Api, Writer};
use proto::selectors::selector_matches;
use store::Key;

/// Store name of EndpointSlices.
pub const ENDPOINTSLICES: &str = "endpointslices.discovery.k8s.io";
/// The label naming an EndpointSlice's Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// The label naming the controller managing an EndpointSlice.
pub const MANAGED_BY_LABEL: &str = "endpointslice.kubernetes.io/managed-by";

/// The controllers' writers.
pub struct Writers {
    endpoints: Writer,
    slices: Writer,
}

impl Writers {
    /// The endpoint controllers writing through `api`.
    pub fn new(api: &Arc<Api>) -> Self {
        Writers {
            endpoints: Writer::new(api.clone(), component("endpoint-controller")),
            slices: Writer::new(api.clone(), component("endpointslice-controller")),
        }
    }
}

fn meta<'a>(v: &'a Value, f: &str) -> &'a str {
    v.pointer(&format!("/metadata/{f}"))
        .and_then(Value::as_str)
        .unwrap_or("")
}

fn ready(p: &Value) -> bool {
    p.pointer("/status/conditions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .any(|c| c["type"] == "Ready" && c["status"] == "True")
}

/// The port of `pod` a Service port targets.
fn target_port(pod: &Value, sp: &Value) -> Option<i64> {
    match sp.get("targetPort") {
        Some(Value::Number(n)) => n.as_i64(),
        Some(Value::String(name)) => pod
            .pointer("/spec/containers")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .flat_map(|c| {
                c.get("ports")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default()
            })
            .find(|p| p.get("name").and_then(Value::as_str) == Some(name))
            .and_then(|p| p.get("containerPort").and_then(Value::as_i64)),
        _ => sp.get("port").and_then(Value::as_i64),
    }
}

fn owner(svc: &Value) -> Value {
    json!([{"apiVersion": "v1", "kind": "Service", "name": meta(svc, "name"),
        "uid": meta(svc, "uid"), "controller": true, "blockOwnerDeletion": true}])
}

/// The pods a Service selects (its tenant and namespace, an address, not finished).
fn selected(pods: &[(Key, Arc<Value>)], svc: &Value) -> Vec<Arc<Value>> {
    let Some(sel) = svc.pointer("/spec/selector").and_then(Value::as_object) else {
        return Vec::new();
    };
    let sel = json!({"matchLabels": sel});
    pods.iter()
        .filter(|(_, p)| {
            let labels = p
                .pointer("/metadata/labels")
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default();
            selector_matches(&sel, &labels)
                && !p
                    .pointer("/status/podIP")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .is_empty()
                && !matches!(
                    p.pointer("/status/phase").and_then(Value::as_str),
                    Some("Succeeded" | "Failed")
                )
        })
        .map(|(_, p)| p.clone())
        .collect()
}

/// The Endpoints object a Service's pods make (kube's shape: one subset per port set).
pub fn endpoints_for(svc: &Value, pods: &[Arc<Value>]) -> Value {
    let ports: Vec<Value> = svc
        .pointer("/spec/ports")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut subsets: Vec<(Vec<Value>, Vec<Value>, Vec<Value>)> = Vec::new();
    for p in pods {
        let eps: Vec<Value> = ports
            .iter()
            .filter_map(|sp| {
                let mut e = json!({"port": target_port(p, sp)?, "protocol": sp.get("protocol").cloned().unwrap_or(json!("TCP"))});
                if let Some(n) = sp.get("name").filter(|n| n.as_str().is_some_and(|s| !s.is_empty())) {
                    e["name"] = n.clone();
                }
                Some(e)
            })
            .collect();
        if eps.is_empty() && !ports.is_empty() {
            continue;
        }
        let addr = json!({"ip": p.pointer("/status/podIP"), "nodeName": p.pointer("/spec/nodeName"),
            "targetRef": {"kind": "Pod", "namespace": meta(p, "namespace"), "name": meta(p, "name"), "uid": meta(p, "uid")}});
        let slot = match subsets.iter_mut().find(|(ps, _, _)| *ps == eps) {
            Some(s) => s,
            None => {
                subsets.push((eps, Vec::new(), Vec::new()));
                subsets.last_mut().expect("just pushed")
            }
        };
        if ready(p) && p.pointer("/metadata/deletionTimestamp").is_none() {
            slot.1.push(addr);
        } else {
            slot.2.push(addr);
        }
    }
    let by_ip = |v: &mut Vec<Value>| {
        v.sort_by(|a, b| a["ip"].as_str().cmp(&b["ip"].as_str()));
    };
    let subsets: Vec<Value> = subsets
        .into_iter()
        .map(|(ports, mut ready, mut not)| {
            by_ip(&mut ready);
            by_ip(&mut not);
            let mut s = Map::new();
            if !ready.is_empty() {
                s.insert("addresses".into(), json!(ready));
            }
            if !not.is_empty() {
                s.insert("notReadyAddresses".into(), json!(not));
            }
            if !ports.is_empty() {
                s.insert("ports".into(), json!(ports));
            }
            Value::Object(s)
        })
        .collect();
    let mut ep = json!({"apiVersion": "v1", "kind": "Endpoints",
        "metadata": {"name": meta(svc, "name"), "namespace": meta(svc, "namespace"),
            "labels": svc.pointer("/metadata/labels").cloned().unwrap_or(json!({})),
            "ownerReferences": owner(svc)}});
    if !subsets.is_empty() {
        ep["subsets"] = json!(subsets);
    }
    ep
}

/// The EndpointSlice a Service's pods make (one per Service: IPv4, the Service's ports with
/// the first pod's resolution of named ones).
pub fn slice_for(svc: &Value, pods: &[Arc<Value>]) -> Value {
    let sports: Vec<Value> = svc
        .pointer("/spec/ports")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut endpoints: Vec<Value> = pods
        .iter()
        .filter(|p| sports.is_empty() || sports.iter().any(|sp| target_port(p, sp).is_some()))
        .map(|p| {
            let terminating = p.pointer("/metadata/deletionTimestamp").is_some();
            let r = ready(p);
            json!({"addresses": [p.pointer("/status/podIP")],
                "conditions": {"ready": r && !terminating, "serving": r, "terminating": terminating},
                "nodeName": p.pointer("/spec/nodeName"),
                "targetRef": {"kind": "Pod", "namespace": meta(p, "namespace"), "name": meta(p, "name"), "uid": meta(p, "uid")}})
        })
        .collect();
    endpoints.sort_by(|a, b| a["addresses"][0].as_str().cmp(&b["addresses"][0].as_str()));
    let ports: Vec<Value> = sports
        .iter()
        .map(|sp| {
            let port = pods.iter().find_map(|p| target_port(p, sp));
            json!({"name": sp.get("name").cloned().unwrap_or(json!("")), "port": port,
                "protocol": sp.get("protocol").cloned().unwrap_or(json!("TCP"))})
        })
        .collect();
    let mut labels = svc
        .pointer("/metadata/labels")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    labels.insert(SERVICE_NAME_LABEL.into(), json!(meta(svc, "name")));
    labels.insert(
        MANAGED_BY_LABEL.into(),
        json!("endpointslice-controller.k8s.io"),
    );
    json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": slice_name(svc), "namespace": meta(svc, "namespace"),
            "labels": labels, "ownerReferences": owner(svc)},
        "addressType": "IPv4", "endpoints": endpoints, "ports": ports})
}

/// `<service>-<5 characters of its uid's hash>` (kube generates the suffix; this one is
/// stable, so a restart finds the same slice).
pub fn slice_name(svc: &Value) -> String {
    use sha2::Digest;
    let h = sha2::Sha256::digest(meta(svc, "uid").as_bytes());
    let suffix: String = h
        .iter()
        .take(5)
        .map(|b| char::from(b"bcdfghjklmnpqrstvwxz2456789"[usize::from(*b) % 27]))
        .collect();
    let mut base = meta(svc, "name").to_string();
    base.truncate(57);
    format!("{base}-{suffix}")
}

/// Whether the parts a controller owns differ (metadata bookkeeping aside).
fn differs(current: &Value, want: &Value) -> bool {
    let fields = ["subsets", "endpoints", "ports", "addressType"];
    fields.iter().any(|f| current.get(*f) != want.get(*f))
        || current.pointer("/metadata/labels") != want.pointer("/metadata/labels")
}

async fn put(w: &Writer, key: Key, want: Value) -> bool {
    let store = w.store();
    let r = match store.get(&key) {
        None => w.create(&key, want).await.map(|_| ()),
        Some(cur) if differs(&cur, &want) => {
            let mut new = (*cur).clone();
            for f in ["subsets", "endpoints", "ports", "addressType"] {
                match want.get(f) {
                    Some(v) => new[f] = v.clone(),
                    None => {
                        if let Some(o) = new.as_object_mut() {
                            o.remove(f);
                        }
                    }
                }
            }
            new["metadata"]["labels"] = want["metadata"]["labels"].clone();
            w.update(&key, &cur, new, false).await.map(|_| ())
        }
        Some(_) => return false,
    };
    match r {
        Ok(()) => true,
        Err(e) if e.code == 409 || e.code == 404 => true,
        Err(e) => {
            tracing::warn!(error = %e.message, object = %key.name, resource = %key.resource, "endpoint controller write refused");
            false
        }
    }
}

/// One pass over every Service; returns whether it wrote anything.
pub async fn reconcile(ws: &Writers) -> bool {
    let store = ws.endpoints.store();
    let mut changed = false;
    for (k, svc) in store.list_of("services", None) {
        if svc
            .pointer("/spec/selector")
            .and_then(Value::as_object)
            .is_none()
            || svc.pointer("/metadata/deletionTimestamp").is_some()
            || svc.pointer("/spec/type").and_then(Value::as_str) == Some("ExternalName")
        {
            continue;
        }
        let pods: Vec<(Key, Arc<Value>)> = store
            .list_of("pods", Some(&k.tenant))
            .into_iter()
            .filter(|(pk, _)| pk.namespace == k.namespace)
            .collect();
        let mine = selected(&pods, &svc);
        let ep_key = Key::new("endpoints", &k.tenant, &k.namespace, &k.name);
        changed |= put(&ws.endpoints, ep_key, endpoints_for(&svc, &mine)).await;
        let slice_key = Key::new(ENDPOINTSLICES, &k.tenant, &k.namespace, &slice_name(&svc));
        changed |= put(&ws.slices, slice_key, slice_for(&svc, &mine)).await;
    }
    changed
}

fn relevant(resource: &str) -> bool {
    matches!(resource, "services" | "pods" | "endpoints" | ENDPOINTSLICES)
}

/// Run the endpoint controllers until cancelled.
pub async fn run(api: Arc<Api>, cancel: CancellationToken) {
    let ws = Writers::new(&api);
    crate::changes::on_changes(
        &api.store,
        Duration::from_secs(10),
        Duration::ZERO,
        &cancel,
        |e| relevant(&e.key.resource),
        || async {
            reconcile(&ws).await;
        },
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, ip: &str, ready: bool, app: &str) -> (Key, Arc<Value>) {
        (
            Key::new("pods", "", "default", name),
            Arc::new(
                json!({"metadata": {"name": name, "namespace": "default", "uid": format!("u-{name}"), "labels": {"app": app}},
                "spec": {"nodeName": "n1", "containers": [{"name": "c", "ports": [{"name": "http", "containerPort": 8080}]}]},
                "status": {"phase": "Running", "podIP": ip, "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]}}),
            ),
        )
    }

    #[test]
    fn endpoints_follow_readiness_and_named_ports() {
        let svc = json!({"metadata": {"name": "web", "namespace": "default", "uid": "s1"},
            "spec": {"selector": {"app": "web"}, "ports": [{"name": "h", "port": 80, "targetPort": "http", "protocol": "TCP"}]}});
        let pods = vec![
            pod("a", "10.0.0.2", true, "web"),
            pod("b", "10.0.0.3", false, "web"),
            pod("c", "10.0.0.4", true, "db"),
            pod("d", "", true, "web"),
        ];
        let mine = selected(&pods, &svc);
        assert_eq!(mine.len(), 2);
        let ep = endpoints_for(&svc, &mine);
        assert_eq!(ep["subsets"][0]["addresses"][0]["ip"], "10.0.0.2");
        assert_eq!(ep["subsets"][0]["notReadyAddresses"][0]["ip"], "10.0.0.3");
        assert_eq!(
            ep["subsets"][0]["ports"][0],
            json!({"name": "h", "port": 8080, "protocol": "TCP"})
        );
        let sl = slice_for(&svc, &mine);
        assert_eq!(sl["ports"][0]["port"], 8080);
        assert_eq!(sl["endpoints"][0]["conditions"]["ready"], true);
        assert_eq!(sl["endpoints"][1]["conditions"]["ready"], false);
        assert_eq!(sl["metadata"]["labels"][SERVICE_NAME_LABEL], "web");
        assert!(slice_name(&svc).starts_with("web-") && slice_name(&svc).len() == 9);
    }
}
