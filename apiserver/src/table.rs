//! `Table` output for `kubectl get`: the columns kubectl users know, per resource.

use chrono::{DateTime, Utc};
use serde_json::{json, Value};

/// A column: (name, type, format, priority). Priority 1 columns show with `-o wide`.
type Col = (&'static str, &'static str, &'static str, u8);

fn int(o: &Value, ptr: &str) -> Value {
    json!(o.pointer(ptr).and_then(Value::as_i64).unwrap_or(0))
}

/// CONTAINERS, IMAGES and SELECTOR, the wide columns of the workload kinds.
fn workload_wide(o: &Value) -> [Value; 3] {
    let cs = o
        .pointer("/spec/template/spec/containers")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    let join = |f: &str| {
        cs.iter()
            .map(|c| c.get(f).and_then(Value::as_str).unwrap_or(""))
            .collect::<Vec<_>>()
            .join(",")
    };
    let sel = o
        .pointer("/spec/selector")
        .map(proto::selectors::selector_string)
        .unwrap_or_default();
    [json!(join("name")), json!(join("image")), or_none(&sel)]
}

/// Kubernetes' `duration.HumanDuration`.
pub fn human_duration(secs: i64) -> String {
    if secs < -1 {
        return "<invalid>".into();
    }
    let s = secs.max(0);
    let (m, h) = (s / 60, s / 3600);
    if s < 120 {
        format!("{s}s")
    } else if m < 10 {
        if s % 60 == 0 {
            format!("{m}m")
        } else {
            format!("{m}m{}s", s % 60)
        }
    } else if m < 180 {
        format!("{m}m")
    } else if h < 8 {
        if m % 60 == 0 {
            format!("{h}h")
        } else {
            format!("{h}h{}m", m % 60)
        }
    } else if h < 48 {
        format!("{h}h")
    } else if h < 24 * 8 {
        if h % 24 == 0 {
            format!("{}d", h / 24)
        } else {
            format!("{}d{}h", h / 24, h % 24)
        }
    } else if h < 24 * 365 * 2 {
        format!("{}d", h / 24)
    } else if h < 24 * 365 * 8 {
        let dy = (h / 24) % 365;
        if dy == 0 {
            format!("{}y", h / 24 / 365)
        } else {
            format!("{}y{}d", h / 24 / 365, dy)
        }
    } else {
        format!("{}y", h / 24 / 365)
    }
}

fn age(ts: Option<&Value>, now: DateTime<Utc>) -> String {
    match ts
        .and_then(Value::as_str)
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
    {
        Some(t) => human_duration((now - t.with_timezone(&Utc)).num_seconds()),
        None => "<unknown>".into(),
    }
}

fn s<'a>(o: &'a Value, ptr: &str) -> &'a str {
    o.pointer(ptr).and_then(Value::as_str).unwrap_or("")
}

fn or_none(v: &str) -> Value {
    Value::String(if v.is_empty() {
        "<none>".into()
    } else {
        v.to_string()
    })
}

fn pod_cells(o: &Value, now: DateTime<Utc>) -> Vec<Value> {
    // A VM pod counts as a pod of one container, its VM (ready, restarts from its status).
    let vm = o.pointer("/spec/virtualMachine").is_some();
    let total = if vm {
        1
    } else {
        o.pointer("/spec/containers")
            .and_then(Value::as_array)
            .map_or(0, Vec::len)
    };
    let empty = Vec::new();
    // Waiting and terminated reasons come from the containers (a VM pod's: its mirror's).
    let containers = o
        .pointer("/status/containerStatuses")
        .and_then(Value::as_array)
        .unwrap_or(&empty);
    let vm_status: Vec<Value> = o
        .pointer("/status/virtualMachineStatus")
        .filter(|_| vm)
        .cloned()
        .into_iter()
        .collect();
    let statuses = if vm { &vm_status } else { containers };
    let ready = statuses
        .iter()
        .filter(|c| c.get("ready").and_then(Value::as_bool) == Some(true))
        .count();
    let restarts: i64 = statuses
        .iter()
        .filter_map(|c| c.get("restartCount").and_then(Value::as_i64))
        .sum();
    let mut status = s(o, "/status/reason").to_string();
    if status.is_empty() {
        status = s(o, "/status/phase").to_string();
    }
    if status.is_empty() {
        status = "Pending".into();
    }
    for c in containers {
        if let Some(r) = c.pointer("/state/waiting/reason").and_then(Value::as_str) {
            status = r.to_string();
        } else if let Some(r) = c
            .pointer("/state/terminated/reason")
            .and_then(Value::as_str)
        {
            status = r.to_string();
        }
    }
    if o.pointer("/metadata/deletionTimestamp").is_some() {
        status = "Terminating".into();
    }
    let restarts = if restarts > 0 {
        let last = containers
            .iter()
            .filter_map(|c| c.pointer("/lastState/terminated/finishedAt"))
            .filter_map(Value::as_str)
            .max();
        match last {
            Some(t) => format!(
                "{restarts} ({} ago)",
                age(Some(&Value::String(t.into())), now)
            ),
            None => restarts.to_string(),
        }
    } else {
        "0".into()
    };
    let gates = o
        .pointer("/spec/readinessGates")
        .and_then(Value::as_array)
        .map_or(0, Vec::len);
    vec![
        json!(s(o, "/metadata/name")),
        json!(format!("{ready}/{total}")),
        json!(status),
        json!(restarts),
        json!(age(o.pointer("/metadata/creationTimestamp"), now)),
        or_none(s(o, "/status/podIP")),
        or_none(s(o, "/spec/nodeName")),
        or_none(s(o, "/status/nominatedNodeName")),
        if gates == 0 {
            json!("<none>")
        } else {
            json!(format!("0/{gates}"))
        },
    ]
}

fn node_cells(o: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let conds = o
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut status = match conds
        .iter()
        .find(|c| c.get("type").and_then(Value::as_str) == Some("Ready"))
    {
        Some(c) if c.get("status").and_then(Value::as_str) == Some("True") => "Ready".to_string(),
        // False and Unknown both read NotReady, as kube-apiserver prints them.
        Some(_) => "NotReady".to_string(),
        _ => "Unknown".to_string(),
    };
    if o.pointer("/spec/unschedulable").and_then(Value::as_bool) == Some(true) {
        status.push_str(",SchedulingDisabled");
    }
    let mut roles: Vec<String> = o
        .pointer("/metadata/labels")
        .and_then(Value::as_object)
        .map(|l| {
            l.keys()
                .filter_map(|k| k.strip_prefix("node-role.kubernetes.io/"))
                .map(String::from)
                .collect()
        })
        .unwrap_or_default();
    roles.sort();
    let addr = |t: &str| {
        o.pointer("/status/addresses")
            .and_then(Value::as_array)
            .and_then(|a| {
                a.iter()
                    .find(|x| x.get("type").and_then(Value::as_str) == Some(t))
            })
            .and_then(|x| x.get("address"))
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    vec![
        json!(s(o, "/metadata/name")),
        json!(status),
        or_none(&roles.join(",")),
        json!(age(o.pointer("/metadata/creationTimestamp"), now)),
        json!(s(o, "/status/nodeInfo/kubeletVersion")),
        or_none(&addr("InternalIP")),
        or_none(&addr("ExternalIP")),
        json!(s(o, "/status/nodeInfo/osImage")),
        json!(s(o, "/status/nodeInfo/kernelVersion")),
        json!(s(o, "/status/nodeInfo/containerRuntimeVersion")),
    ]
}

fn count(o: &Value, ptr: &str) -> Value {
    json!(o.pointer(ptr).map_or(0, |v| v
        .as_object()
        .map_or_else(|| v.as_array().map_or(0, Vec::len), |m| m.len())))
}

/// A kind's `kubectl get` table: its columns, and the cells of one object's row.
pub struct Table {
    /// The columns, in order.
    pub columns: &'static [Col],
    /// One object's cells (as many as `columns`).
    pub cells: fn(&Value, DateTime<Utc>) -> Vec<Value>,
}

/// The table of pods.
pub static PODS: Table = Table {
    columns: &[
        ("Name", "string", "name", 0),
        ("Ready", "string", "", 0),
        ("Status", "string", "", 0),
        ("Restarts", "string", "", 0),
        ("Age", "string", "", 0),
        ("IP", "string", "", 1),
        ("Node", "string", "", 1),
        ("Nominated Node", "string", "", 1),
        ("Readiness Gates", "string", "", 1),
    ],
    cells: pod_cells,
};

/// The table of nodes.
pub static NODES: Table = Table {
    columns: &[
        ("Name", "string", "name", 0),
        ("Status", "string", "", 0),
        ("Roles", "string", "", 0),
        ("Age", "string", "", 0),
        ("Version", "string", "", 0),
        ("Internal-IP", "string", "", 1),
        ("External-IP", "string", "", 1),
        ("OS-Image", "string", "", 1),
        ("Kernel-Version", "string", "", 1),
        ("Container-Runtime", "string", "", 1),
    ],
    cells: node_cells,
};

/// The table of namespaces and tenants.
pub static LIFECYCLE: Table = Table {
    columns: &[
        ("Name", "string", "name", 0),
        ("Status", "string", "", 0),
        ("Age", "string", "", 0),
    ],
    cells: lifecycle_cells,
};

/// The table of configmaps.
pub static CONFIGMAPS: Table = Table {
    columns: &[
        ("Name", "string", "name", 0),
        ("Data", "integer", "", 0),
        ("Age", "string", "", 0),
    ],
    cells: configmaps_cells,
};

/// The table of secrets.
pub static SECRETS: Table = Table {
    columns: &[
        ("Name", "string", "name", 0),
        ("Type", "string", "", 0),
        ("Data", "integer", "", 0),
        ("Age", "string", "", 0),
    ],
    cells: secrets_cells,
};

/// The table of serviceaccounts.
pub static SERVICEACCOUNTS: Table = Table {
    columns: &[
        ("Name", "string", "name", 0),
        ("Secrets", "integer", "", 0),
        ("Age", "string", "", 0),
    ],
    cells: serviceaccounts_cells,
};

/// The table of events.
pub static EVENTS: Table = Table {
    columns: &[
        ("Last Seen", "string", "", 0),
        ("Type", "string", "", 0),
        ("Reason", "string", "", 0),
        ("Object", "string", "", 0),
        ("Message", "string", "", 0),
    ],
    cells: events_cells,
};

/// The table of leases.
pub static LEASES: Table = Table {
    columns: &[
        ("Name", "string", "name", 0),
        ("Holder", "string", "", 0),
        ("Age", "string", "", 0),
    ],
    cells: leases_cells,
};

/// The table of controllerrevisions.
pub static CONTROLLERREVISIONS: Table = Table {
    columns: &[
        ("Name", "string", "name", 0),
        ("Controller", "string", "", 0),
        ("Revision", "integer", "", 0),
        ("Age", "string", "", 0),
    ],
    cells: controllerrevisions_cells,
};

/// The table of deployments.
pub static DEPLOYMENTS: Table = Table {
    columns: &[
        ("Name", "string", "name", 0),
        ("Ready", "string", "", 0),
        ("Up-to-date", "integer", "", 0),
        ("Available", "integer", "", 0),
        ("Age", "string", "", 0),
        ("Containers", "string", "", 1),
        ("Images", "string", "", 1),
        ("Selector", "string", "", 1),
    ],
    cells: deployments_cells,
};

/// The table of services (kubectl's columns).
pub static SERVICES: Table = Table {
    columns: &[
        ("Name", "string", "name", 0),
        ("Type", "string", "", 0),
        ("Cluster-IP", "string", "", 0),
        ("External-IP", "string", "", 0),
        ("Port(s)", "string", "", 0),
        ("Age", "string", "", 0),
        ("Selector", "string", "", 1),
    ],
    cells: services_cells,
};

fn services_cells(o: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let kind = s(o, "/spec/type");
    let external = if kind == "ExternalName" {
        s(o, "/spec/externalName").to_string()
    } else {
        let ips: Vec<&str> = o
            .pointer("/status/loadBalancer/ingress")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|i| i.get("ip").and_then(Value::as_str))
            .collect();
        if ips.is_empty() {
            if kind == "LoadBalancer" {
                "<pending>".into()
            } else {
                "<none>".into()
            }
        } else {
            ips.join(",")
        }
    };
    let selector: Vec<String> = o
        .pointer("/spec/selector")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
        .collect();
    vec![
        json!(s(o, "/metadata/name")),
        json!(kind),
        or_none(s(o, "/spec/clusterIP")),
        json!(external),
        json!(crate::services::ports_cell(o)),
        json!(age(o.pointer("/metadata/creationTimestamp"), now)),
        json!(if selector.is_empty() {
            "<none>".to_string()
        } else {
            selector.join(",")
        }),
    ]
}

/// The table of endpoints.
pub static ENDPOINTS: Table = Table {
    columns: &[
        ("Name", "string", "name", 0),
        ("Endpoints", "string", "", 0),
        ("Age", "string", "", 0),
    ],
    cells: |o, now| {
        vec![
            json!(s(o, "/metadata/name")),
            json!(crate::services::endpoints_cell(o)),
            json!(age(o.pointer("/metadata/creationTimestamp"), now)),
        ]
    },
};

/// The table of endpoint slices.
pub static ENDPOINTSLICES: Table = Table {
    columns: &[
        ("Name", "string", "name", 0),
        ("AddressType", "string", "", 0),
        ("Ports", "string", "", 0),
        ("Endpoints", "string", "", 0),
        ("Age", "string", "", 0),
    ],
    cells: |o, now| {
        let (ports, endpoints) = crate::services::slice_cells(o);
        vec![
            json!(s(o, "/metadata/name")),
            json!(s(o, "/addressType")),
            json!(ports),
            json!(endpoints),
            json!(age(o.pointer("/metadata/creationTimestamp"), now)),
        ]
    },
};

/// The table of jobs (kubectl 1.32's columns).
pub static JOBS: Table = Table {
    columns: &[
        ("Name", "string", "name", 0),
        ("Status", "string", "", 0),
        ("Completions", "string", "", 0),
        ("Duration", "string", "", 0),
        ("Age", "string", "", 0),
        ("Containers", "string", "", 1),
        ("Images", "string", "", 1),
        ("Selector", "string", "", 1),
    ],
    cells: jobs_cells,
};

fn jobs_cells(o: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let (status, completions, duration) = crate::batch::job_cells(o);
    let mut c = vec![
        json!(s(o, "/metadata/name")),
        status,
        completions,
        duration,
        json!(age(o.pointer("/metadata/creationTimestamp"), now)),
    ];
    c.extend(workload_wide(o));
    c
}

/// The table of cronjobs (kubectl 1.32's columns; the wide ones are the job template's).
pub static CRONJOBS: Table = Table {
    columns: &[
        ("Name", "string", "name", 0),
        ("Schedule", "string", "", 0),
        ("Timezone", "string", "", 0),
        ("Suspend", "boolean", "", 0),
        ("Active", "integer", "", 0),
        ("Last Schedule", "string", "", 0),
        ("Age", "string", "", 0),
        ("Containers", "string", "", 1),
        ("Images", "string", "", 1),
        ("Selector", "string", "", 1),
    ],
    cells: cronjobs_cells,
};

fn cronjobs_cells(o: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let mut c = vec![json!(s(o, "/metadata/name"))];
    c.extend(crate::batch::cronjob_cells(o, now));
    c.push(json!(age(o.pointer("/metadata/creationTimestamp"), now)));
    let job = o
        .pointer("/spec/jobTemplate")
        .cloned()
        .unwrap_or(Value::Null);
    c.extend(workload_wide(&job));
    c
}

/// The table of replicasets.
pub static REPLICASETS: Table = Table {
    columns: &[
        ("Name", "string", "name", 0),
        ("Desired", "integer", "", 0),
        ("Current", "integer", "", 0),
        ("Ready", "integer", "", 0),
        ("Age", "string", "", 0),
        ("Containers", "string", "", 1),
        ("Images", "string", "", 1),
        ("Selector", "string", "", 1),
    ],
    cells: replicasets_cells,
};

/// The table of daemonsets.
pub static DAEMONSETS: Table = Table {
    columns: &[
        ("Name", "string", "name", 0),
        ("Desired", "integer", "", 0),
        ("Current", "integer", "", 0),
        ("Ready", "integer", "", 0),
        ("Up-to-date", "integer", "", 0),
        ("Available", "integer", "", 0),
        ("Node Selector", "string", "", 0),
        ("Age", "string", "", 0),
        ("Containers", "string", "", 1),
        ("Images", "string", "", 1),
        ("Selector", "string", "", 1),
    ],
    cells: daemonsets_cells,
};

/// The table of edgesites.
pub static EDGESITES: Table = Table {
    columns: &[
        ("Name", "string", "name", 0),
        ("Connected", "string", "", 0),
        ("Nodes", "integer", "", 0),
        ("Last-Seen", "string", "", 0),
        ("Age", "string", "", 0),
    ],
    cells: edgesites_cells,
};

/// The table of any other kind: name and age.
pub static DEFAULT: Table = Table {
    columns: &[("Name", "string", "name", 0), ("Age", "string", "", 0)],
    cells: default_cells,
};

fn lifecycle_cells(o: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let name = json!(s(o, "/metadata/name"));
    let created = json!(age(o.pointer("/metadata/creationTimestamp"), now));
    let phase = if o.pointer("/metadata/deletionTimestamp").is_some() {
        "Terminating"
    } else {
        s(o, "/status/phase")
    };
    vec![
        name,
        json!(if phase.is_empty() { "Active" } else { phase }),
        created,
    ]
}

fn configmaps_cells(o: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let name = json!(s(o, "/metadata/name"));
    let created = json!(age(o.pointer("/metadata/creationTimestamp"), now));
    let n = count(o, "/data").as_u64().unwrap_or(0) + count(o, "/binaryData").as_u64().unwrap_or(0);
    vec![name, json!(n), created]
}

fn secrets_cells(o: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let name = json!(s(o, "/metadata/name"));
    let created = json!(age(o.pointer("/metadata/creationTimestamp"), now));
    vec![
        name,
        json!(if s(o, "/type").is_empty() {
            "Opaque"
        } else {
            s(o, "/type")
        }),
        count(o, "/data"),
        created,
    ]
}

fn serviceaccounts_cells(o: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let name = json!(s(o, "/metadata/name"));
    let created = json!(age(o.pointer("/metadata/creationTimestamp"), now));
    vec![name, count(o, "/secrets"), created]
}

fn events_cells(o: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let last = o
        .get("lastTimestamp")
        .filter(|v| !v.is_null())
        .or_else(|| o.get("eventTime"))
        .or_else(|| o.pointer("/metadata/creationTimestamp"));
    let obj = format!(
        "{}/{}",
        s(o, "/involvedObject/kind").to_lowercase(),
        s(o, "/involvedObject/name")
    );
    vec![
        json!(age(last, now)),
        json!(s(o, "/type")),
        json!(s(o, "/reason")),
        json!(obj),
        json!(s(o, "/message")),
    ]
}

fn leases_cells(o: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let name = json!(s(o, "/metadata/name"));
    let created = json!(age(o.pointer("/metadata/creationTimestamp"), now));
    vec![name, or_none(s(o, "/spec/holderIdentity")), created]
}

fn controllerrevisions_cells(o: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let name = json!(s(o, "/metadata/name"));
    let created = json!(age(o.pointer("/metadata/creationTimestamp"), now));
    let owner = o
        .pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .and_then(|refs| {
            refs.iter()
                .find(|r| r.get("controller").and_then(Value::as_bool) == Some(true))
        })
        .map(|r| {
            let group = s(r, "/apiVersion").split_once('/').map_or("", |(g, _)| g);
            let kind = s(r, "/kind").to_lowercase();
            let kind = if group.is_empty() {
                kind
            } else {
                format!("{kind}.{group}")
            };
            format!("{kind}/{}", s(r, "/name"))
        })
        .unwrap_or_default();
    vec![name, or_none(&owner), int(o, "/revision"), created]
}

fn deployments_cells(o: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let name = json!(s(o, "/metadata/name"));
    let created = json!(age(o.pointer("/metadata/creationTimestamp"), now));
    let mut c = vec![
        name,
        json!(format!(
            "{}/{}",
            o.pointer("/status/readyReplicas")
                .and_then(Value::as_i64)
                .unwrap_or(0),
            o.pointer("/spec/replicas")
                .and_then(Value::as_i64)
                .unwrap_or(0)
        )),
        int(o, "/status/updatedReplicas"),
        int(o, "/status/availableReplicas"),
        created,
    ];
    c.extend(workload_wide(o));
    c
}

fn replicasets_cells(o: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let name = json!(s(o, "/metadata/name"));
    let created = json!(age(o.pointer("/metadata/creationTimestamp"), now));
    let mut c = vec![
        name,
        int(o, "/spec/replicas"),
        int(o, "/status/replicas"),
        int(o, "/status/readyReplicas"),
        created,
    ];
    c.extend(workload_wide(o));
    c
}

fn daemonsets_cells(o: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let name = json!(s(o, "/metadata/name"));
    let created = json!(age(o.pointer("/metadata/creationTimestamp"), now));
    let sel = o
        .pointer("/spec/template/spec/nodeSelector")
        .map(|m| proto::selectors::selector_string(&json!({"matchLabels": m})))
        .unwrap_or_default();
    let mut c = vec![
        name,
        int(o, "/status/desiredNumberScheduled"),
        int(o, "/status/currentNumberScheduled"),
        int(o, "/status/numberReady"),
        int(o, "/status/updatedNumberScheduled"),
        int(o, "/status/numberAvailable"),
        or_none(&sel),
        created,
    ];
    c.extend(workload_wide(o));
    c
}

fn edgesites_cells(o: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let name = json!(s(o, "/metadata/name"));
    let created = json!(age(o.pointer("/metadata/creationTimestamp"), now));
    let connected = o
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .and_then(|c| {
            c.iter()
                .find(|c| c.get("type").and_then(Value::as_str) == Some("Connected"))
        })
        .and_then(|c| c.get("status"))
        .and_then(Value::as_str)
        .unwrap_or("Unknown");
    let seen = o.pointer("/status/lastSeen").map_or_else(
        || "<never>".to_string(),
        |t| format!("{} ago", age(Some(t), now)),
    );
    vec![
        name,
        json!(connected),
        json!(o
            .pointer("/status/nodeCount")
            .and_then(Value::as_i64)
            .unwrap_or(0)),
        json!(seen),
        created,
    ]
}

fn default_cells(o: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let name = json!(s(o, "/metadata/name"));
    let created = json!(age(o.pointer("/metadata/creationTimestamp"), now));
    vec![name, created]
}

/// How much of each object a row carries (`includeObject`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Include {
    /// Nothing.
    None,
    /// `PartialObjectMetadata` (the default).
    Metadata,
    /// The whole object.
    Object,
}

impl Include {
    /// Parse the query value.
    pub fn parse(v: Option<&str>) -> Result<Self, String> {
        match v {
            None | Some("") | Some("Metadata") => Ok(Include::Metadata),
            Some("None") => Ok(Include::None),
            Some("Object") => Ok(Include::Object),
            Some(o) => Err(format!(
                "includeObject must be one of None, Metadata, Object; got {o:?}"
            )),
        }
    }
}

/// One row for an object.
pub fn row(t: &Table, o: &Value, include: Include, now: DateTime<Utc>) -> Value {
    let mut r = json!({"cells": (t.cells)(o, now)});
    match include {
        Include::None => {}
        Include::Metadata => {
            r["object"] = json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": o.get("metadata").cloned().unwrap_or(json!({}))})
        }
        Include::Object => r["object"] = o.clone(),
    }
    r
}

/// A `Table` of `objects` at list version `rv`.
pub fn table(
    t: &Table,
    objects: &[&Value],
    rv: &str,
    cont: Option<&str>,
    include: Include,
) -> Value {
    let now = Utc::now();
    let defs: Vec<Value> = t
        .columns
        .iter()
        .map(|(n, t, f, p)| json!({"name": n, "type": t, "format": f, "description": n, "priority": p}))
        .collect();
    let rows: Vec<Value> = objects.iter().map(|o| row(t, o, include, now)).collect();
    let mut meta = json!({"resourceVersion": rv});
    if let Some(c) = cont {
        meta["continue"] = json!(c);
    }
    json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": meta, "columnDefinitions": defs, "rows": rows})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_durations() {
        for (s, want) in [
            (5, "5s"),
            (119, "119s"),
            (150, "2m30s"),
            (600, "10m"),
            (3 * 3600 + 60, "3h1m"),
            (10 * 3600, "10h"),
            (3 * 86400 + 3600, "3d1h"),
            (30 * 86400, "30d"),
        ] {
            assert_eq!(human_duration(s), want, "{s}");
        }
    }

    #[test]
    fn pod_row_shows_ready_status_restarts() {
        let pod = json!({"metadata": {"name": "web", "creationTimestamp": "2020-01-01T00:00:00Z"},
            "spec": {"containers": [{"name": "a"}, {"name": "b"}], "nodeName": "n1"},
            "status": {"phase": "Running", "podIP": "10.0.0.2", "containerStatuses": [
                {"name": "a", "ready": true, "restartCount": 2},
                {"name": "b", "ready": false, "restartCount": 0, "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]}});
        let c = (PODS.cells)(&pod, Utc::now());
        assert_eq!(c[0], "web");
        assert_eq!(c[1], "1/2");
        assert_eq!(c[2], "CrashLoopBackOff");
        assert_eq!(c[3], "2");
        assert_eq!(c[5], "10.0.0.2");
        assert_eq!(c[6], "n1");
    }

    #[test]
    fn vm_pod_row_counts_its_vm() {
        let mut pod = json!({"metadata": {"name": "vm", "creationTimestamp": "2020-01-01T00:00:00Z"},
            "spec": {"virtualMachine": {"name": "vm", "image": "r/vm:1"}},
            "status": {"phase": "Pending"}});
        let c = (PODS.cells)(&pod, Utc::now());
        assert_eq!(
            (c[1].as_str(), c[2].as_str(), c[3].as_str()),
            (Some("0/1"), Some("Pending"), Some("0"))
        );
        pod["status"] = json!({"phase": "Running", "virtualMachineStatus":
            {"name": "vm", "state": "active", "powerState": "running", "ready": true, "restartCount": 1}});
        let c = (PODS.cells)(&pod, Utc::now());
        assert_eq!(
            (c[1].as_str(), c[2].as_str(), c[3].as_str()),
            (Some("1/1"), Some("Running"), Some("1"))
        );
    }

    #[test]
    fn workload_rows() {
        let d = json!({"metadata": {"name": "web"}, "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}},
            "template": {"spec": {"containers": [{"name": "c", "image": "busybox"}]}}},
            "status": {"readyReplicas": 2, "updatedReplicas": 3, "availableReplicas": 2}});
        let c = (DEPLOYMENTS.cells)(&d, Utc::now());
        assert_eq!(c[1], "2/3");
        assert_eq!((c[2].as_i64(), c[3].as_i64()), (Some(3), Some(2)));
        assert_eq!(
            (c[5].as_str(), c[6].as_str(), c[7].as_str()),
            (Some("c"), Some("busybox"), Some("app=web"))
        );
        let ds = json!({"metadata": {"name": "agent"}, "spec": {"template": {"spec": {"nodeSelector": {"atoll.io/site": "s1"}}}},
            "status": {"desiredNumberScheduled": 2}});
        let c = (DAEMONSETS.cells)(&ds, Utc::now());
        assert_eq!(c.len(), DAEMONSETS.columns.len());
        assert_eq!(
            (c[1].as_i64(), c[6].as_str()),
            (Some(2), Some("atoll.io/site=s1"))
        );
    }

    #[test]
    fn node_row() {
        let node = json!({"metadata": {"name": "n1", "labels": {"node-role.kubernetes.io/edge": ""}},
            "spec": {"unschedulable": true},
            "status": {"conditions": [{"type": "Ready", "status": "True"}], "nodeInfo": {"kubeletVersion": "v1.32.0-atoll"}}});
        let c = (NODES.cells)(&node, Utc::now());
        assert_eq!(
            (c[1].as_str(), c[2].as_str(), c[4].as_str()),
            (
                Some("Ready,SchedulingDisabled"),
                Some("edge"),
                Some("v1.32.0-atoll")
            )
        );
    }
}
