//! v1 Services, Endpoints and `discovery.k8s.io/v1` EndpointSlices: kube-apiserver's defaults
//! and validation, the Table cells, and the allocation of cluster IPs (per tenant, from the
//! service range) and node ports (region-wide, 30000-32767).
//!
//! Allocation is made unique by a record per address and per port, created in the same
//! transaction as the Service (`Precondition::Absent`): two creates racing for one address
//! cannot both commit. A record names the Service (key and uid) it was made for; a record whose
//! Service is gone is free again (it is taken over with a precondition on its version), so a
//! deletion needs no clean-up of its own.

use std::net::Ipv4Addr;

use serde_json::{json, Value};
use store::{Key, Op, Precondition, Store};

use crate::error::{ApiError, ApiResult, Cause};

/// Records of allocated cluster IPs (tenant-scoped: tenants may use the same addresses).
pub const SERVICE_IPS: &str = "serviceips";
/// Records of allocated node ports (system space: a node port is open on every node).
pub const NODE_PORTS: &str = "nodeports";
/// The range of node ports.
pub const NODE_PORT_RANGE: std::ops::RangeInclusive<u16> = 30000..=32767;
/// The default service range.
pub const DEFAULT_SERVICE_CIDR: &str = "10.96.0.0/16";

/// An IPv4 range (`a.b.c.d/n`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Cidr {
    base: u32,
    bits: u8,
}

impl Cidr {
    /// Parse `a.b.c.d/n` (n from 8 to 30).
    pub fn parse(s: &str) -> Result<Self, String> {
        let (ip, bits) = s
            .split_once('/')
            .ok_or_else(|| format!("{s:?} is not a CIDR (a.b.c.d/n)"))?;
        let ip: Ipv4Addr = ip
            .parse()
            .map_err(|_| format!("{ip:?} is not an IPv4 address"))?;
        let bits: u8 = bits
            .parse()
            .ok()
            .filter(|b| (8..=30).contains(b))
            .ok_or_else(|| format!("the prefix length of {s:?} must be 8-30"))?;
        let mask = u32::MAX << (32 - bits);
        Ok(Cidr {
            base: u32::from(ip) & mask,
            bits,
        })
    }

    fn size(&self) -> u32 {
        1u32 << (32 - self.bits)
    }

    /// Whether `ip` is an assignable address of the range (not its network or broadcast).
    pub fn assignable(&self, ip: Ipv4Addr) -> bool {
        let n = u32::from(ip);
        n > self.base && n < self.base + self.size() - 1
    }

    fn nth(&self, i: u32) -> Ipv4Addr {
        Ipv4Addr::from(self.base + 1 + i % (self.size() - 2))
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", Ipv4Addr::from(self.base), self.bits)
    }
}

fn spec_str<'a>(o: &'a Value, k: &str) -> &'a str {
    o.pointer(&format!("/spec/{k}"))
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// kube-apiserver's Service defaults: type ClusterIP, sessionAffinity None, TCP ports whose
/// targetPort is their port, single-stack IPv4, traffic policies Cluster.
pub fn service_defaults(obj: &mut Value) {
    if !obj.get("spec").is_some_and(Value::is_object) {
        obj["spec"] = json!({});
    }
    let spec = &mut obj["spec"];
    let kind = spec
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("ClusterIP")
        .to_string();
    spec["type"] = json!(kind);
    if kind == "ExternalName" {
        return;
    }
    if spec.get("sessionAffinity").is_none() {
        spec["sessionAffinity"] = json!("None");
    }
    if let Some(ports) = spec.get_mut("ports").and_then(Value::as_array_mut) {
        for p in ports {
            if p.get("protocol").is_none() {
                p["protocol"] = json!("TCP");
            }
            if p.get("targetPort").is_none() {
                if let Some(port) = p.get("port").cloned() {
                    p["targetPort"] = port;
                }
            }
        }
    }
    if spec.get("internalTrafficPolicy").is_none() {
        spec["internalTrafficPolicy"] = json!("Cluster");
    }
    if matches!(kind.as_str(), "NodePort" | "LoadBalancer")
        && spec.get("externalTrafficPolicy").is_none()
    {
        spec["externalTrafficPolicy"] = json!("Cluster");
    }
    if spec.get("ipFamilies").is_none() {
        spec["ipFamilies"] = json!(["IPv4"]);
    }
    if spec.get("ipFamilyPolicy").is_none() {
        spec["ipFamilyPolicy"] = json!("SingleStack");
    }
    if let Some(ip) = spec
        .get("clusterIP")
        .and_then(Value::as_str)
        .map(String::from)
    {
        if spec.get("clusterIPs").is_none() && !ip.is_empty() {
            spec["clusterIPs"] = json!([ip]);
        }
    }
    if obj.get("status").is_none() {
        obj["status"] = json!({"loadBalancer": {}});
    }
}

/// Validation of a Service (kube's texts, the field named).
pub fn validate_service(obj: &Value, causes: &mut Vec<Cause>) {
    let kind = spec_str(obj, "type");
    const TYPES: [&str; 4] = ["ClusterIP", "NodePort", "LoadBalancer", "ExternalName"];
    if !TYPES.contains(&kind) {
        causes.push(Cause::not_supported("spec.type", kind, &TYPES));
        return;
    }
    if kind == "ExternalName" {
        if spec_str(obj, "externalName").is_empty() {
            causes.push(Cause::required("spec.externalName"));
        }
        return;
    }
    let ip = spec_str(obj, "clusterIP");
    let headless = ip == "None";
    if !ip.is_empty() && !headless && ip.parse::<Ipv4Addr>().is_err() {
        causes.push(Cause::invalid(
            "spec.clusterIPs[0]",
            ip,
            "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)",
        ));
    }
    if headless && kind != "ClusterIP" {
        causes.push(Cause::invalid(
            "spec.clusterIPs[0]",
            ip,
            &format!("may not be set to 'None' for {kind} services"),
        ));
    }
    let ports = obj
        .pointer("/spec/ports")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if ports.is_empty() && !headless {
        causes.push(Cause::required("spec.ports"));
    }
    let mut names = std::collections::BTreeSet::new();
    for (i, p) in ports.iter().enumerate() {
        let field = |f: &str| format!("spec.ports[{i}].{f}");
        let name = p.get("name").and_then(Value::as_str).unwrap_or("");
        if ports.len() > 1 && name.is_empty() {
            causes.push(Cause::required(field("name")));
        }
        if !name.is_empty() && !names.insert(name.to_string()) {
            causes.push(Cause::invalid(field("name"), name, "Duplicate value"));
        }
        match p.get("port").and_then(Value::as_i64) {
            Some(n) if (1..=65535).contains(&n) => {}
            Some(n) => causes.push(Cause::invalid(
                field("port"),
                &n.to_string(),
                "must be between 1 and 65535, inclusive",
            )),
            None => causes.push(Cause::required(field("port"))),
        }
        let proto = p.get("protocol").and_then(Value::as_str).unwrap_or("TCP");
        if !["TCP", "UDP", "SCTP"].contains(&proto) {
            causes.push(Cause::not_supported(
                field("protocol"),
                proto,
                &["SCTP", "TCP", "UDP"],
            ));
        }
        match p.get("targetPort") {
            Some(Value::Number(n)) if !(1..=65535).contains(&n.as_i64().unwrap_or(0)) => causes
                .push(Cause::invalid(
                    field("targetPort"),
                    &n.to_string(),
                    "must be between 1 and 65535, inclusive",
                )),
            Some(Value::String(s)) if s.is_empty() || s.len() > 15 => causes.push(Cause::invalid(
                field("targetPort"),
                s,
                "must be a port name of at most 15 characters",
            )),
            _ => {}
        }
        if let Some(np) = p
            .get("nodePort")
            .and_then(Value::as_i64)
            .filter(|n| *n != 0)
        {
            if kind == "ClusterIP" {
                causes.push(Cause::forbidden(
                    field("nodePort"),
                    "may not be used when `type` is 'ClusterIP'",
                ));
            } else if !(i64::from(*NODE_PORT_RANGE.start())..=i64::from(*NODE_PORT_RANGE.end()))
                .contains(&np)
            {
                causes.push(Cause::invalid(
                    field("nodePort"),
                    &np.to_string(),
                    &format!(
                        "provided port is not in the valid range. The range of valid ports is {}-{}",
                        NODE_PORT_RANGE.start(),
                        NODE_PORT_RANGE.end()
                    ),
                ));
            }
        }
    }
    let v = spec_str(obj, "sessionAffinity");
    if !["None", "ClientIP"].contains(&v) {
        causes.push(Cause::not_supported(
            "spec.sessionAffinity",
            v,
            &["ClientIP", "None"],
        ));
    }
}

/// What may not change: the cluster IP, once set.
pub fn validate_service_update(old: &Value, new: &Value, causes: &mut Vec<Cause>) {
    let (was, now) = (spec_str(old, "clusterIP"), spec_str(new, "clusterIP"));
    // An update that leaves it out keeps it (see `keep_allocations`).
    if !was.is_empty() && !now.is_empty() && was != now && spec_str(new, "type") != "ExternalName" {
        causes.push(Cause::invalid(
            "spec.clusterIPs[0]",
            now,
            "may not change once set",
        ));
    }
}

/// On an update: what the old Service was given and the new one leaves out (its cluster IP,
/// its ports' node ports) is kept, as kube-apiserver keeps it.
pub fn keep_allocations(old: &Value, new: &mut Value) {
    for k in ["clusterIP", "clusterIPs"] {
        if new.pointer(&format!("/spec/{k}")).is_none() {
            if let Some(v) = old.pointer(&format!("/spec/{k}")).cloned() {
                new["spec"][k] = v;
            }
        }
    }
    let old_ports = old
        .pointer("/spec/ports")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if let Some(ports) = new.pointer_mut("/spec/ports").and_then(Value::as_array_mut) {
        for p in ports {
            if p.get("nodePort").is_some() {
                continue;
            }
            let same = old_ports
                .iter()
                .find(|o| o.get("port") == p.get("port") && o.get("protocol") == p.get("protocol"));
            if let Some(np) = same.and_then(|o| o.get("nodePort")).cloned() {
                p["nodePort"] = np;
            }
        }
    }
}

/// Whether a record is held by a live Service of the store (the one it names, same uid).
fn held(store: &Store, rec: &Value) -> bool {
    let (Some(ns), Some(name), Some(uid)) = (
        rec.get("namespace").and_then(Value::as_str),
        rec.get("service").and_then(Value::as_str),
        rec.get("uid").and_then(Value::as_str),
    ) else {
        return false;
    };
    let tenant = rec.get("tenant").and_then(Value::as_str).unwrap_or("");
    store
        .get(&Key::new("services", tenant, ns, name))
        .is_some_and(|s| s.pointer("/metadata/uid").and_then(Value::as_str) == Some(uid))
}

/// The write claiming `key` for the service, if it is free: absent, or held by a Service
/// that is gone.
fn claim(store: &Store, key: Key, rec: Value) -> Option<Op> {
    let mut rec = rec;
    rec["metadata"] = json!({"name": key.name});
    match store.get(&key) {
        None => Some(Op::Put {
            key,
            value: rec,
            pre: Precondition::Absent,
        }),
        Some(v) if held(store, &v) => None,
        Some(v) => Some(Op::replace(key, &v, rec)),
    }
}

/// Give a new Service (or one whose update asks for more) its cluster IP and node ports,
/// checking the ones it asks for: the records to commit with it. `old` is the Service being
/// updated (its allocations are its own already).
pub fn allocate(
    store: &Store,
    cidr: Cidr,
    tenant: &str,
    obj: &mut Value,
    old: Option<&Value>,
) -> ApiResult<Vec<Op>> {
    let kind = spec_str(obj, "type").to_string();
    let name = obj
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let ns = obj
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let uid = obj
        .pointer("/metadata/uid")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let rec = json!({"tenant": tenant, "namespace": ns, "service": name, "uid": uid});
    let invalid = |cause: Cause| ApiError::invalid("", "Service", &name, vec![cause]);
    let mut ops = Vec::new();
    if kind == "ExternalName" {
        return Ok(ops);
    }
    let requested = spec_str(obj, "clusterIP").to_string();
    let already =
        old.is_some_and(|o| spec_str(o, "clusterIP") == requested && !requested.is_empty());
    if requested != "None" && !already {
        let ip = if requested.is_empty() {
            // A free address, probing from a point that differs per Service.
            let start = uid
                .bytes()
                .fold(0u32, |h, b| h.wrapping_mul(31).wrapping_add(u32::from(b)));
            let found = (0..cidr.size() - 2).find_map(|i| {
                let ip = cidr.nth(start.wrapping_add(i));
                let key = Key::new(SERVICE_IPS, tenant, "", &ip.to_string());
                claim(store, key, rec.clone()).map(|op| (ip, op))
            });
            let (ip, op) = found.ok_or_else(|| {
                ApiError::from_code(
                    500,
                    format!("failed to allocate a serviceIP: range is full ({cidr})"),
                )
            })?;
            ops.push(op);
            ip.to_string()
        } else {
            let ip: Ipv4Addr = requested.parse().map_err(|_| {
                invalid(Cause::invalid(
                    "spec.clusterIPs[0]",
                    &requested,
                    "must be a valid IP address",
                ))
            })?;
            if !cidr.assignable(ip) {
                return Err(invalid(Cause::invalid(
                    "spec.clusterIPs[0]",
                    &requested,
                    &format!("failed to allocate IP {requested}: the provided IP ({requested}) is not in the valid range. The range of valid IPs is {cidr}"),
                )));
            }
            let key = Key::new(SERVICE_IPS, tenant, "", &requested);
            let op = claim(store, key, rec.clone()).ok_or_else(|| {
                invalid(Cause::invalid(
                    "spec.clusterIPs[0]",
                    &requested,
                    &format!("failed to allocate IP {requested}: provided IP is already allocated"),
                ))
            })?;
            ops.push(op);
            requested
        };
        obj["spec"]["clusterIP"] = json!(ip);
        obj["spec"]["clusterIPs"] = json!([ip]);
    } else if requested == "None" {
        obj["spec"]["clusterIPs"] = json!(["None"]);
    }
    if matches!(kind.as_str(), "NodePort" | "LoadBalancer") {
        let held_before: Vec<i64> = old
            .and_then(|o| o.pointer("/spec/ports"))
            .and_then(Value::as_array)
            .map(|ps| {
                ps.iter()
                    .filter_map(|p| p.get("nodePort").and_then(Value::as_i64))
                    .collect()
            })
            .unwrap_or_default();
        let mut taken_here = Vec::new();
        let n = obj
            .pointer("/spec/ports")
            .and_then(Value::as_array)
            .map_or(0, Vec::len);
        for i in 0..n {
            let want = obj["spec"]["ports"][i]
                .get("nodePort")
                .and_then(Value::as_i64)
                .unwrap_or(0);
            if want != 0 && held_before.contains(&want) {
                taken_here.push(want);
                continue;
            }
            let port = if want == 0 {
                let start = uid
                    .bytes()
                    .fold(7u32, |h, b| h.wrapping_mul(33).wrapping_add(u32::from(b)));
                let span = u32::from(NODE_PORT_RANGE.end() - NODE_PORT_RANGE.start()) + 1;
                let found = (0..span).find_map(|k| {
                    let p = i64::from(*NODE_PORT_RANGE.start())
                        + i64::from(start.wrapping_add(k) % span);
                    if taken_here.contains(&p) {
                        return None;
                    }
                    let key = Key::new(NODE_PORTS, "", "", &p.to_string());
                    claim(store, key, rec.clone()).map(|op| (p, op))
                });
                let (p, op) = found.ok_or_else(|| {
                    ApiError::from_code(500, "failed to allocate a nodePort: range is full")
                })?;
                ops.push(op);
                p
            } else {
                let key = Key::new(NODE_PORTS, "", "", &want.to_string());
                let op = claim(store, key, rec.clone())
                    .filter(|_| !taken_here.contains(&want))
                    .ok_or_else(|| {
                        invalid(Cause::invalid(
                            format!("spec.ports[{i}].nodePort"),
                            &want.to_string(),
                            "provided port is already allocated",
                        ))
                    })?;
                ops.push(op);
                want
            };
            taken_here.push(port);
            obj["spec"]["ports"][i]["nodePort"] = json!(port);
        }
    }
    Ok(ops)
}

/// `PORT(S)` of a Service: `80/TCP`, `80:30080/TCP`, joined by commas; `<none>`.
pub fn ports_cell(o: &Value) -> String {
    let ports: Vec<String> = o
        .pointer("/spec/ports")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|p| {
            let port = p.get("port").and_then(Value::as_i64).unwrap_or(0);
            let proto = p.get("protocol").and_then(Value::as_str).unwrap_or("TCP");
            match p.get("nodePort").and_then(Value::as_i64) {
                Some(np) if np != 0 => format!("{port}:{np}/{proto}"),
                _ => format!("{port}/{proto}"),
            }
        })
        .collect();
    if ports.is_empty() {
        "<none>".into()
    } else {
        ports.join(",")
    }
}

/// `ENDPOINTS` of an Endpoints object: up to three `ip:port`, then `+ N more...`.
pub fn endpoints_cell(o: &Value) -> String {
    let mut all = Vec::new();
    for s in o
        .get("subsets")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let ports: Vec<i64> = s
            .get("ports")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|p| p.get("port").and_then(Value::as_i64))
            .collect();
        for a in s
            .get("addresses")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let ip = a.get("ip").and_then(Value::as_str).unwrap_or("");
            if ports.is_empty() {
                all.push(ip.to_string());
            }
            for p in &ports {
                all.push(format!("{ip}:{p}"));
            }
        }
    }
    if all.is_empty() {
        return "<none>".into();
    }
    let more = all.len().saturating_sub(3);
    let mut shown = all[..all.len().min(3)].join(",");
    if more > 0 {
        shown.push_str(&format!(" + {more} more..."));
    }
    shown
}

/// `PORTS` and `ENDPOINTS` of an EndpointSlice.
pub fn slice_cells(o: &Value) -> (String, String) {
    let ports: Vec<String> = o
        .get("ports")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|p| p.get("port").and_then(Value::as_i64).map(|n| n.to_string()))
        .collect();
    let addrs: Vec<String> = o
        .get("endpoints")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .flat_map(|e| {
            e.get("addresses")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default()
        })
        .filter_map(|a| a.as_str().map(String::from))
        .collect();
    let show = |v: Vec<String>| {
        if v.is_empty() {
            return "<unset>".to_string();
        }
        let more = v.len().saturating_sub(3);
        let mut s = v[..v.len().min(3)].join(",");
        if more > 0 {
            s.push_str(&format!(" + {more} more..."));
        }
        s
    };
    (show(ports), show(addrs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs_and_defaults() {
        let c = Cidr::parse("10.96.0.0/16").unwrap();
        assert!(c.assignable("10.96.0.1".parse().unwrap()));
        assert!(!c.assignable("10.96.0.0".parse().unwrap()));
        assert!(!c.assignable("10.96.255.255".parse().unwrap()));
        assert!(!c.assignable("10.97.0.1".parse().unwrap()));
        assert!(Cidr::parse("10.96.0.0").is_err() && Cidr::parse("10.96.0.0/31").is_err());
        let mut s = json!({"spec": {"ports": [{"port": 80}], "selector": {"app": "web"}}});
        service_defaults(&mut s);
        assert_eq!(s["spec"]["type"], "ClusterIP");
        assert_eq!(
            s["spec"]["ports"][0],
            json!({"port": 80, "protocol": "TCP", "targetPort": 80})
        );
        let mut causes = Vec::new();
        validate_service(&s, &mut causes);
        assert!(causes.is_empty(), "{causes:?}");
    }

    #[test]
    fn bad_services_name_their_field() {
        let check = |spec: Value| {
            let mut s = json!({"metadata": {"name": "x"}, "spec": spec});
            service_defaults(&mut s);
            let mut causes = Vec::new();
            validate_service(&s, &mut causes);
            causes.iter().map(|c| c.field.clone()).collect::<Vec<_>>()
        };
        assert_eq!(check(json!({})), ["spec.ports"]);
        assert_eq!(
            check(json!({"ports": [{"port": 0}]}))[0],
            "spec.ports[0].port"
        );
        assert_eq!(
            check(json!({"ports": [{"port": 80}, {"port": 81}]})),
            ["spec.ports[0].name", "spec.ports[1].name"]
        );
        assert_eq!(
            check(json!({"type": "Magic", "ports": [{"port": 80}]})),
            ["spec.type"]
        );
        assert_eq!(
            check(json!({"type": "NodePort", "ports": [{"port": 80, "nodePort": 80}]})),
            ["spec.ports[0].nodePort"]
        );
        assert_eq!(
            check(json!({"clusterIP": "banana", "ports": [{"port": 80}]})),
            ["spec.clusterIPs[0]"]
        );
        assert!(
            check(json!({"clusterIP": "None"})).is_empty(),
            "headless needs no ports"
        );
    }

    #[tokio::test]
    async fn addresses_and_ports_are_allocated_once() {
        let store = Store::memory(100).await.unwrap();
        let cidr = Cidr::parse("10.96.0.0/29").unwrap();
        let svc = |name: &str, spec: Value| {
            let mut s = json!({"metadata": {"name": name, "namespace": "default", "uid": format!("u-{name}")}, "spec": spec});
            service_defaults(&mut s);
            s
        };
        let mut a = svc("a", json!({"ports": [{"port": 80}]}));
        let ops = allocate(&store, cidr, "", &mut a, None).unwrap();
        let ip = a["spec"]["clusterIP"].as_str().unwrap().to_string();
        assert!(cidr.assignable(ip.parse().unwrap()), "{ip}");
        let mut commit = ops;
        commit.push(Op::Put {
            key: Key::new("services", "", "default", "a"),
            value: a.clone(),
            pre: Precondition::Absent,
        });
        store.commit(commit).await.unwrap();
        // The same address asked for again: taken.
        let mut b = svc("b", json!({"clusterIP": ip, "ports": [{"port": 80}]}));
        let e = allocate(&store, cidr, "", &mut b, None).unwrap_err();
        assert_eq!(e.code, 422);
        // Another tenant may use it.
        let mut b = svc("b", json!({"clusterIP": ip, "ports": [{"port": 80}]}));
        assert!(allocate(&store, cidr, "acme", &mut b, None).is_ok());
        // Out of range.
        let mut c = svc(
            "c",
            json!({"clusterIP": "10.1.0.1", "ports": [{"port": 80}]}),
        );
        assert_eq!(
            allocate(&store, cidr, "", &mut c, None).unwrap_err().code,
            422
        );
        // Once the Service is gone, its address is free again.
        store
            .commit(vec![Op::Delete {
                key: Key::new("services", "", "default", "a"),
                pre: Precondition::Exists,
            }])
            .await
            .unwrap();
        let mut d = svc("d", json!({"clusterIP": ip, "ports": [{"port": 80}]}));
        assert!(allocate(&store, cidr, "", &mut d, None).is_ok());
        // Node ports: in range, distinct within one Service.
        let mut n = svc(
            "n",
            json!({"type": "NodePort", "ports": [{"name": "a", "port": 80}, {"name": "b", "port": 81}]}),
        );
        allocate(&store, cidr, "", &mut n, None).unwrap();
        let (p0, p1) = (
            n["spec"]["ports"][0]["nodePort"].as_i64().unwrap(),
            n["spec"]["ports"][1]["nodePort"].as_i64().unwrap(),
        );
        assert!(p0 != p1 && (30000..=32767).contains(&p0) && (30000..=32767).contains(&p1));
        assert_eq!(ports_cell(&n), format!("80:{p0}/TCP,81:{p1}/TCP"));
    }
}
