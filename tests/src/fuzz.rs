//! Fuzz target bodies: every decoder of untrusted bytes, fed what a fuzzer makes up. Shared by
//! the cargo-fuzz targets in `fuzz/` (nightly, libFuzzer; `deploy/fuzz.sh`) and the ordinary
//! suite, which replays every saved crash in `fuzz/regressions/<target>/` on stable
//! (`tests/tests/fuzz_regressions.rs`). A target passes when it returns; a panic is a finding.

use std::sync::{Arc, OnceLock};
use std::time::Instant;

use apiserver::api::{Api, ApiConfig, Query, Request};
use apiserver::auth::{self, Identity};
use bytes::Bytes;
use proto::sync::{ChangeKind, Frame, ObjectKey, Up};
use serde_json::{json, Value};
use store::{Key, Op, Precondition, Store};

/// A target body.
pub type Target = fn(&[u8]);

/// Every target, by name (the names of the cargo-fuzz targets and of the regression dirs).
pub const TARGETS: &[(&str, Target)] = &[
    ("api_body", api_body),
    ("patch", patch),
    ("selectors", selectors),
    ("sync_frame", sync_frame),
    ("uplink", uplink),
    ("oci_manifest", oci_manifest),
    ("layer_unpack", layer_unpack),
    ("image_archive", image_archive),
    ("cri_log", cri_log),
];

/// Run target `name` on `data`; false if there is no such target.
pub fn run(name: &str, data: &[u8]) -> bool {
    match TARGETS.iter().find(|(n, _)| *n == name) {
        Some((_, f)) => {
            f(data);
            true
        }
        None => false,
    }
}

const TOKEN: &str = "fuzz-admin-token";

/// One runtime and one API over an in-memory store for the whole fuzzing process, seeded with
/// what the requests and uplinks refer to.
struct World {
    rt: tokio::runtime::Runtime,
    api: Arc<Api>,
}

fn seed() -> Vec<(Key, Value)> {
    let node = |name: &str, site: &str| {
        json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "uid": format!("uid-{name}"),
            "labels": {proto::SITE_LABEL: site}, "annotations": {proto::ORIGIN: site}},
            "status": {"conditions": [{"type": "Ready", "status": "True"}]}})
    };
    let pod = |name: &str, node: &str| {
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}")},
            "spec": {"nodeName": node, "containers": [{"name": "c", "image": "busybox"}]}, "status": {"phase": "Pending"}})
    };
    vec![
        (
            Key::new("namespaces", "", "", "default"),
            apiserver::api::namespace_object("", "default"),
        ),
        (
            Key::new("tenants", "", "", "acme"),
            json!({"apiVersion": "v1", "kind": "Tenant", "metadata": {"name": "acme", "uid": "uid-acme"}, "status": {"phase": "Active"}}),
        ),
        (
            Key::new("namespaces", "acme", "", "default"),
            apiserver::api::namespace_object("acme", "default"),
        ),
        (
            Key::new("edgesites.edge.atoll.io", "", "", "s1"),
            json!({"apiVersion": "edge.atoll.io/v1", "kind": "EdgeSite", "metadata": {"name": "s1", "uid": "uid-s1"}}),
        ),
        (Key::new("nodes", "", "", "n1"), node("n1", "s1")),
        (Key::new("nodes", "", "", "n2"), node("n2", "s2")),
        (Key::new("pods", "", "default", "p0"), pod("p0", "n1")),
        (Key::new("pods", "", "default", "p2"), pod("p2", "n2")),
        (
            Key::new("configmaps", "", "default", "cm"),
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cm", "namespace": "default", "uid": "uid-cm", "annotations": {proto::ORIGIN: "s1"}}, "data": {"a": "b"}}),
        ),
    ]
}

fn world() -> &'static World {
    static W: OnceLock<World> = OnceLock::new();
    W.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let store = rt.block_on(Store::memory(1000)).expect("store");
        let api = Api::new(store.clone(), ApiConfig::default());
        let mut rec = auth::token_record(&Identity::system_admin(), None, None);
        rec["metadata"]["name"] = json!(auth::hash_token(TOKEN));
        let mut ops = vec![Op::Put {
            key: auth::token_key(TOKEN),
            value: rec,
            pre: Precondition::Absent,
        }];
        for (k, v) in seed() {
            ops.push(Op::Put {
                key: k,
                value: v,
                pre: Precondition::Absent,
            });
        }
        rt.block_on(store.commit(ops)).expect("seed");
        World { rt, api }
    })
}

/// Put back seed objects an earlier input deleted.
fn reseed(w: &World) {
    let ops: Vec<Op> = seed()
        .into_iter()
        .filter(|(k, _)| w.api.store.get(k).is_none())
        .map(|(key, value)| Op::Put {
            key,
            value,
            pre: Precondition::Absent,
        })
        .collect();
    if !ops.is_empty() {
        let _ = w.rt.block_on(w.api.store.commit(ops));
    }
}

/// API bodies: the first byte picks a request (create, update, patch, eviction, delete, of
/// several kinds, all dry-run so the store does not grow) and a content type (JSON, YAML,
/// Kubernetes protobuf, the three patch types); the rest is the body, through the whole API.
pub fn api_body(data: &[u8]) {
    let Some((&sel, body)) = data.split_first() else {
        return;
    };
    let w = world();
    const REQS: &[(&str, &str)] = &[
        ("POST", "/api/v1/namespaces/default/pods"),
        ("POST", "/api/v1/namespaces/default/configmaps"),
        ("POST", "/api/v1/namespaces/default/secrets"),
        ("POST", "/api/v1/tenants"),
        ("POST", "/api/v1/nodes"),
        ("POST", "/apis/apps/v1/namespaces/default/deployments"),
        ("PUT", "/api/v1/namespaces/default/pods/p0"),
        ("PATCH", "/api/v1/namespaces/default/pods/p0"),
        ("PATCH", "/api/v1/nodes/n1"),
        ("POST", "/api/v1/namespaces/default/pods/p0/eviction"),
        ("DELETE", "/api/v1/namespaces/default/pods/p0"),
        (
            "POST",
            "/api/v1/namespaces/default/serviceaccounts/default/token",
        ),
        ("POST", "/api/v1/namespaces/default/pods/p0/binding"),
        ("PUT", "/api/v1/namespaces/default/pods/p0/status"),
        ("POST", "/api/v1/tenants/acme/namespaces/default/configmaps"),
        ("PATCH", "/apis/edge.atoll.io/v1/edgesites/s1"),
    ];
    const TYPES: &[&str] = &[
        "application/json",
        "application/yaml",
        "application/vnd.kubernetes.protobuf",
        "application/merge-patch+json",
        "application/json-patch+json",
        "application/strategic-merge-patch+json",
    ];
    let (method, path) = REQS[usize::from(sel) % REQS.len()];
    let ct = TYPES[usize::from(sel / 16) % TYPES.len()];
    let mut headers = http::HeaderMap::new();
    headers.insert(
        http::header::CONTENT_TYPE,
        ct.parse().expect("content type"),
    );
    headers.insert(
        http::header::AUTHORIZATION,
        format!("Bearer {TOKEN}").parse().expect("header"),
    );
    let req = Request {
        method: method.parse().expect("method"),
        path: path.to_string(),
        query: Query::parse(Some("dryRun=All&fieldValidation=Strict")),
        headers,
        body: Bytes::copy_from_slice(body),
        upgrade: None,
    };
    let _ = w.rt.block_on(w.api.handle(req));
}

fn pod() -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "labels": {"a": "b"}},
        "spec": {"containers": [{"name": "c", "image": "i", "env": [{"name": "A", "value": "1"}],
            "ports": [{"containerPort": 80, "protocol": "TCP"}]}],
            "tolerations": [{"key": "k", "operator": "Exists"}]}})
}

/// Patches: JSON merge, JSON patch and strategic merge of the body onto a pod.
pub fn patch(data: &[u8]) {
    let Ok(p) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    let mut t = pod();
    apiserver::patch::merge_patch(&mut t, &p);
    let _ = apiserver::patch::json_patch(&mut pod(), &p);
    let _ = apiserver::patch::strategic_merge(&mut pod(), &p);
}

/// Label and field selectors and query strings (with the log options read from them).
pub fn selectors(data: &[u8]) {
    let s = String::from_utf8_lossy(data);
    let obj = pod();
    if let Ok(ls) = proto::selectors::LabelSelector::parse(&s) {
        let _ = ls.matches(&obj);
    }
    for r in apiserver::resources::RESOURCES {
        let fields = apiserver::kinds::of(r).fields;
        if let Ok(fs) = proto::selectors::FieldSelector::parse(&s, fields) {
            let _ = fs.matches(&obj);
        }
    }
    let q = Query::parse(Some(&s));
    let _ = q.flag("watch");
    let _ = apiserver::logs::LogOptions::from_query(&q, "p");
}

/// Every sync frame: decoded, re-encoded, and handled by both sides' session in each state
/// they can be in when a frame arrives.
pub fn sync_frame(data: &[u8]) {
    use sync::protocol::{Config, EdgeSession, HubSession};
    let Ok(f) = Frame::decode_body(data) else {
        return;
    };
    let _ = f.encode_framed();
    let now = Instant::now();
    let mut hub = HubSession::new(Config::default(), "s1", 3, now);
    hub.handle(f.clone(), now);
    let hello = Frame::new(proto::sync::frame::Body::Hello(proto::sync::Hello {
        protocol: proto::sync::PROTOCOL,
        site: "s1".into(),
        applied_rv: 5,
    }));
    let mut streaming = HubSession::new(Config::default(), "s1", 3, now);
    streaming.handle(hello, now);
    streaming.resume(5, now);
    streaming.handle(f.clone(), now);
    let mut edge = EdgeSession::new(Config::default(), "s1", 5, Vec::new(), now);
    edge.handle(f.clone(), now);
    let welcome = Frame::new(proto::sync::frame::Body::Welcome(proto::sync::Welcome {
        mode: 0,
        up_acked: 0,
        refused: Vec::new(),
    }));
    let mut edge2 = EdgeSession::new(Config::default(), "s1", 5, Vec::new(), now);
    edge2.handle(welcome, now);
    edge2.handle(f, now);
    for s in [&mut hub, &mut streaming] {
        while s.poll_action().is_some() {}
        while s.poll_transmit(now).is_some() {}
    }
    for s in [&mut edge, &mut edge2] {
        while s.poll_action().is_some() {}
        while s.poll_transmit(now).is_some() {}
    }
}

/// The hub's uplink apply against a store: an `Up` (protobuf, or built from the bytes over a
/// set of keys that matter), judged for site `s1` (which serves tenant `acme`), and what it
/// accepts committed.
pub fn uplink(data: &[u8]) {
    use prost::Message;
    let up = match Up::decode(data) {
        Ok(u) if u.key.is_some() => u,
        _ => {
            let Some((&a, rest)) = data.split_first() else {
                return;
            };
            let Some((&b, rest)) = rest.split_first() else {
                return;
            };
            const KEYS: &[(&str, &str, &str, &str)] = &[
                ("pods", "", "default", "p0"),
                ("pods", "", "default", "p2"),
                ("pods", "", "default", "new"),
                ("pods", "acme", "default", "new"),
                ("configmaps", "", "default", "cm"),
                ("configmaps", "", "default", "new"),
                ("nodes", "", "", "n1"),
                ("nodes", "", "", "n2"),
                ("nodes", "", "", "n3"),
                ("edgesites.edge.atoll.io", "", "", "s1"),
                ("tenants", "", "", "evil"),
                ("tokens", "", "", "x"),
                ("events", "", "default", "e"),
                ("secrets", "zeta", "default", "s"),
            ];
            let (r, t, n, name) = KEYS[usize::from(b) % KEYS.len()];
            Up {
                seq: 1,
                kind: i32::from(a % 6),
                key: Some(ObjectKey {
                    resource: r.into(),
                    tenant: t.into(),
                    namespace: n.into(),
                    name: name.into(),
                }),
                object: rest.to_vec(),
                base: rest.get(rest.len() / 2..).unwrap_or_default().to_vec(),
            }
        }
    };
    let _ = ChangeKind::try_from(up.kind);
    let w = world();
    reseed(w);
    let serves = |t: &str| t == "acme";
    let site = cloud_core::uplink::Site {
        name: "s1",
        serves: &serves,
    };
    if let cloud_core::uplink::Verdict::Apply(ops) = cloud_core::uplink::judge(&w.api, &site, &up) {
        let _ = w.rt.block_on(w.api.store.commit(ops));
    }
}

/// OCI manifests and indexes, image configs, references.
pub fn oci_manifest(data: &[u8]) {
    edge_agent::image::fuzzing::manifest(data);
}

/// Layer unpacking into a temporary root: whatever the archive says, nothing appears beside
/// the root.
pub fn layer_unpack(data: &[u8]) {
    let t = tempfile::tempdir().expect("tempdir");
    let root = t.path().join("root");
    let outside = t.path().join("outside");
    std::fs::create_dir_all(&root).expect("root");
    std::fs::create_dir_all(&outside).expect("outside");
    let _ = edge_agent::image::fuzzing::layer(data, &root);
    let mut around: Vec<String> = std::fs::read_dir(t.path())
        .expect("read temp dir")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    around.sort();
    assert_eq!(
        around,
        ["outside", "root"],
        "the layer wrote beside its root"
    );
    assert!(
        std::fs::read_dir(&outside)
            .expect("outside")
            .next()
            .is_none(),
        "the layer wrote outside its root"
    );
}

/// Image archives (OCI layout, docker-archive) imported into a fresh store.
pub fn image_archive(data: &[u8]) {
    let t = tempfile::tempdir().expect("tempdir");
    let path = t.path().join("image.tar");
    std::fs::write(&path, data).expect("write archive");
    let _ = edge_agent::image::fuzzing::archive(&t.path().join("store"), &path);
}

/// CRI log lines: records parsed, formatted (timestamps, since, limit), and tailed.
pub fn cri_log(data: &[u8]) {
    use edge_agent::logs::{parse_record, tail_offset, Formatter};
    let since = chrono::DateTime::from_timestamp(1_700_000_000, 0);
    let mut out = Vec::new();
    for (ts, limit) in [(false, None), (true, Some(7)), (true, None)] {
        let mut f = Formatter::new(ts, since, limit);
        for line in data.split(|b| *b == b'\n') {
            let _ = parse_record(line);
            f.record(line, &mut out);
        }
    }
    for n in [0, 1, 3, 1000] {
        let mut c = std::io::Cursor::new(data);
        let _ = tail_offset(&mut c, data.len() as u64, n);
    }
}
