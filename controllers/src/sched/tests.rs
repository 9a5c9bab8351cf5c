//! The scheduling library's unit tests.

use super::*;
use serde_json::{json, Value};

fn spec(v: Value) -> PodSpec {
    let mut v = v;
    if v.get("containers").is_none() {
        v["containers"] = json!([{"name": "c"}]);
    }
    serde_json::from_value(v).expect("pod spec")
}

fn req(cpu: &str, mem: &str) -> Value {
    json!({"name": "c", "resources": {"requests": {"cpu": cpu, "memory": mem}}})
}

fn cand(name: &str, cpu: u64, mem: u64) -> Candidate {
    let r = Resources {
        milli_cpu: cpu,
        memory: mem,
        pods: 10,
    };
    Candidate {
        name: name.into(),
        free: r,
        allocatable: r,
        ready: true,
        ..Candidate::default()
    }
}

fn labelled(name: &str, labels: &[(&str, &str)]) -> Candidate {
    let mut c = cand(name, 4000, 8 << 30);
    c.labels = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    c
}

fn taint(key: &str, value: &str, effect: &str) -> Taint {
    Taint {
        key: key.into(),
        value: (!value.is_empty()).then(|| value.into()),
        effect: effect.into(),
        ..Taint::default()
    }
}

fn node(name: &str, labels: Value, cpu: &str, mem: &str, ready: bool) -> Node {
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": labels},
        "status": {
            "capacity": {"cpu": cpu, "memory": mem, "pods": "110"},
            "allocatable": {"cpu": cpu, "memory": mem},
            "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}],
        },
    }))
    .expect("node")
}

fn pod(node: &str, cpu: &str, phase: &str) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": "p"},
        "spec": {"nodeName": node, "containers": [req(cpu, "0")]},
        "status": {"phase": phase},
    }))
    .expect("pod")
}

fn affinity(terms: Value) -> PodSpec {
    spec(json!({"affinity": {"nodeAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": terms}}}}))
}

fn expr(key: &str, op: &str, values: &[&str]) -> Value {
    json!([{"matchExpressions": [{"key": key, "operator": op, "values": values}]}])
}

#[test]
fn quantities() {
    assert_eq!(quantity("500m"), Some(0.5));
    assert_eq!(quantity("64Mi"), Some(64.0 * 1024.0 * 1024.0));
    assert_eq!(quantity("1G"), Some(1e9));
    assert_eq!(quantity("1e3"), Some(1000.0));
    assert_eq!(quantity("1.5Gi"), Some(1.5 * 1024.0 * 1024.0 * 1024.0));
    assert_eq!(quantity(" 2 "), Some(2.0));
    for bad in [
        "", "m", "1x", "1e", "1ee3", "-1", "1e999", "Mi", "1..2", "ä", "1eä",
    ] {
        assert_eq!(quantity(bad), None, "{bad}");
    }
    let list = BTreeMap::from([
        ("cpu".to_string(), Quantity("100m".into())),
        ("memory".to_string(), Quantity("1Ki".into())),
        ("pods".to_string(), Quantity("bad".into())),
    ]);
    assert_eq!(
        Resources::from_list(&list),
        Resources {
            milli_cpu: 100,
            memory: 1024,
            pods: 0
        }
    );
    assert_eq!(ceil_units(100.4), 101);
    assert_eq!(ceil_units(f64::NAN), 0);
}

#[test]
fn pod_requests_follow_kube() {
    let s = spec(json!({
        "containers": [req("100m", "64Mi"),
            {"name": "l", "resources": {"limits": {"cpu": "1", "memory": "1Gi"}, "requests": {"memory": "128Mi"}}}],
    }));
    assert_eq!(
        pod_requests(&s),
        Resources {
            milli_cpu: 1100,
            memory: 192 << 20,
            pods: 1
        }
    );
    // An init container bigger than the sum wins per dimension.
    let s = spec(json!({
        "initContainers": [req("2", "1Mi"), req("500m", "10Mi")],
        "containers": [req("1", "64Mi"), req("100m", "0")],
    }));
    assert_eq!(
        pod_requests(&s),
        Resources {
            milli_cpu: 2000,
            memory: 64 << 20,
            pods: 1
        }
    );
    // Sidecars add up, and to later init containers; overhead is added.
    let mut sidecar = req("1", "0");
    sidecar["restartPolicy"] = json!("Always");
    let s = spec(json!({
        "initContainers": [sidecar, req("1500m", "0")],
        "containers": [req("200m", "0")],
        "overhead": {"cpu": "10m"},
    }));
    assert_eq!(pod_requests(&s).milli_cpu, 2510);
    assert_eq!(
        pod_requests(&spec(json!({}))),
        Resources {
            pods: 1,
            ..Resources::default()
        }
    );
}

#[test]
fn node_candidates() {
    let mut n = node("n1", json!({"a": "b"}), "4", "8Gi", true);
    let st = n.status.as_mut().expect("status");
    st.allocatable = Some(BTreeMap::from([("cpu".into(), Quantity("3500m".into()))]));
    n.spec = Some(serde_json::from_value(json!({"unschedulable": true})).expect("spec"));
    let used = Resources {
        milli_cpu: 500,
        memory: 1 << 30,
        pods: 2,
    };
    let c = Candidate::from_node(&n, used);
    assert_eq!(c.name, "n1");
    assert_eq!(
        c.allocatable,
        Resources {
            milli_cpu: 3500,
            memory: 8 << 30,
            pods: 110
        }
    );
    assert_eq!(
        c.free,
        Resources {
            milli_cpu: 3000,
            memory: 7 << 30,
            pods: 108
        }
    );
    assert!(c.ready && c.unschedulable);
    assert!(!Candidate::from_node(&node("n", json!({}), "1", "1", false), used).ready);
    assert!(!Candidate::from_node(&Node::default(), used).ready);
}

#[test]
fn resource_reasons() {
    let s = spec(json!({"containers": [req("2", "2Gi")]}));
    assert!(filter(&s, &cand("n", 2000, 2 << 30)).is_empty());
    assert_eq!(
        filter(&s, &cand("n", 1999, 2 << 30)),
        vec![Reason::InsufficientCpu]
    );
    assert_eq!(
        filter(&s, &cand("n", 0, 0)),
        vec![Reason::InsufficientCpu, Reason::InsufficientMemory]
    );
    let mut full = cand("n", 4000, 4 << 30);
    full.free.pods = 0;
    assert_eq!(filter(&spec(json!({})), &full), vec![Reason::TooManyPods]);
}

#[test]
fn affinity_reasons() {
    let c = labelled("n1", &[("zone", "a"), ("gen", "5")]);
    let fits = |s: &PodSpec| filter(s, &c).is_empty();
    assert!(fits(&spec(json!({"nodeSelector": {"zone": "a"}}))));
    assert_eq!(
        filter(&spec(json!({"nodeSelector": {"zone": "b"}})), &c),
        vec![Reason::Affinity]
    );
    assert!(!fits(&spec(
        json!({"nodeSelector": {"zone": "a", "x": "y"}})
    )));
    assert!(fits(&affinity(expr("zone", "In", &["b", "a"]))));
    assert!(!fits(&affinity(expr("zone", "In", &["b"]))));
    assert!(!fits(&affinity(expr("nope", "In", &["a"]))));
    assert!(fits(&affinity(expr("zone", "NotIn", &["b"]))));
    assert!(fits(&affinity(expr("nope", "NotIn", &["b"]))));
    assert!(!fits(&affinity(expr("zone", "NotIn", &["a"]))));
    assert!(fits(&affinity(expr("zone", "Exists", &[]))));
    assert!(!fits(&affinity(expr("nope", "Exists", &[]))));
    assert!(fits(&affinity(expr("nope", "DoesNotExist", &[]))));
    assert!(!fits(&affinity(expr("zone", "DoesNotExist", &[]))));
    assert!(fits(&affinity(expr("gen", "Gt", &["4"]))));
    assert!(!fits(&affinity(expr("gen", "Gt", &["5"]))));
    assert!(fits(&affinity(expr("gen", "Lt", &["6"]))));
    assert!(!fits(&affinity(expr("gen", "Lt", &["5"]))));
    assert!(!fits(&affinity(expr("zone", "Gt", &["1"]))));
    assert!(!fits(&affinity(expr("gen", "Gt", &["1", "2"]))));
    assert!(!fits(&affinity(expr("zone", "Bogus", &["a"]))));
    // AND within a term, OR across terms; an empty term or term list matches nothing.
    let and = json!([{"matchExpressions": [
        {"key": "zone", "operator": "In", "values": ["a"]},
        {"key": "gen", "operator": "In", "values": ["4"]}]}]);
    assert!(!fits(&affinity(and)));
    let or = json!([{"matchExpressions": [{"key": "zone", "operator": "In", "values": ["b"]}]},
                    {"matchExpressions": [{"key": "gen", "operator": "In", "values": ["5"]}]}]);
    assert!(fits(&affinity(or)));
    assert!(!fits(&affinity(json!([{}]))));
    assert!(!fits(&affinity(json!([]))));
    // matchFields on metadata.name.
    let field = |op: &str, v: &str| {
        affinity(
            json!([{"matchFields": [{"key": "metadata.name", "operator": op, "values": [v]}]}]),
        )
    };
    assert!(fits(&field("In", "n1")));
    assert!(!fits(&field("In", "n2")));
    assert!(fits(&field("NotIn", "n2")));
    assert!(!fits(&field("NotIn", "n1")));
    assert!(!fits(&field("Exists", "n1")));
    assert!(!fits(&affinity(
        json!([{"matchFields": [{"key": "metadata.uid", "operator": "In", "values": ["n1"]}]}])
    )));
    // nodeSelector and affinity must both hold.
    let mut both = affinity(expr("zone", "In", &["a"]));
    both.node_selector = Some(BTreeMap::from([("gen".into(), "4".into())]));
    assert!(!fits(&both));
}

#[test]
fn taints_and_tolerations() {
    let mut c = cand("n", 4000, 8 << 30);
    c.taints = vec![
        taint("soft", "", "PreferNoSchedule"),
        taint("gpu", "yes", "NoSchedule"),
    ];
    let tol = |t: Value| spec(json!({"tolerations": [t]}));
    assert_eq!(
        filter(&spec(json!({})), &c),
        vec![Reason::Taint("gpu=yes:NoSchedule".into())]
    );
    for ok in [
        json!({"key": "gpu", "operator": "Equal", "value": "yes", "effect": "NoSchedule"}),
        json!({"key": "gpu", "value": "yes"}),
        json!({"key": "gpu", "operator": "Exists"}),
        json!({"operator": "Exists"}),
        json!({"operator": "Exists", "effect": "NoSchedule"}),
    ] {
        assert!(filter(&tol(ok.clone()), &c).is_empty(), "{ok}");
    }
    for bad in [
        json!({"key": "gpu", "operator": "Equal", "value": "no"}),
        json!({"key": "gpu", "operator": "Exists", "effect": "NoExecute"}),
        json!({"key": "other", "operator": "Exists"}),
        json!({"key": "gpu", "operator": "Weird", "value": "yes"}),
        json!({"operator": "Exists", "effect": "PreferNoSchedule"}),
    ] {
        assert!(!filter(&tol(bad.clone()), &c).is_empty(), "{bad}");
    }
    c.taints = vec![taint("evict", "", "NoExecute")];
    assert_eq!(
        filter(&spec(json!({})), &c),
        vec![Reason::Taint("evict=:NoExecute".into())]
    );
}

#[test]
fn unschedulable_and_not_ready() {
    let mut c = cand("n", 4000, 8 << 30);
    c.unschedulable = true;
    assert_eq!(filter(&spec(json!({})), &c), vec![Reason::Unschedulable]);
    let s = spec(json!({"tolerations": [
        {"key": TAINT_UNSCHEDULABLE, "operator": "Exists", "effect": "NoSchedule"}]}));
    assert!(filter(&s, &c).is_empty());
    let mut c = cand("n", 4000, 8 << 30);
    c.ready = false;
    assert_eq!(filter(&spec(json!({})), &c), vec![Reason::NotReady]);
    // kube's default NoExecute toleration (300s) does not let a pod onto a not-ready node.
    let s = spec(json!({"tolerations": [
        {"key": TAINT_NOT_READY, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}]}));
    assert_eq!(filter(&s, &c), vec![Reason::NotReady]);
    let s = spec(json!({"tolerations": [{"key": TAINT_NOT_READY, "operator": "Exists"}]}));
    assert!(filter(&s, &c).is_empty());
    // First failing check wins, like kube's filter plugins.
    c.unschedulable = true;
    c.free = Resources::default();
    assert_eq!(filter(&spec(json!({})), &c), vec![Reason::Unschedulable]);
}

#[test]
fn scores() {
    let s = spec(json!({"containers": [req("1", "1Gi")]}));
    let empty = cand("a", 4000, 4 << 30);
    let mut busy = cand("b", 4000, 4 << 30);
    busy.free = Resources {
        milli_cpu: 2000,
        memory: 2 << 30,
        pods: 5,
    };
    assert_eq!(score(&s, &empty), 75);
    assert_eq!(score(&s, &busy), 25);
    assert_eq!(pick(&s, &[busy.clone(), empty.clone()], "nodes"), Ok(1));
    // Preferred affinity outweighs free space.
    let mut pref = s.clone();
    pref.affinity = Some(
        serde_json::from_value(json!({"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
            {"weight": 2, "preference": {"matchExpressions": [{"key": "disk", "operator": "In", "values": ["ssd"]}]}},
            {"weight": 1, "preference": {}}]}}))
        .expect("affinity"),
    );
    busy.labels.insert("disk".into(), "ssd".into());
    assert_eq!(score(&pref, &busy), 225);
    assert_eq!(pick(&pref, &[empty.clone(), busy.clone()], "nodes"), Ok(1));
    // Untolerated PreferNoSchedule taints cost 10 each.
    let mut soft = empty.clone();
    soft.taints = vec![
        taint("x", "", "PreferNoSchedule"),
        taint("y", "", "PreferNoSchedule"),
    ];
    assert_eq!(score(&s, &soft), 55);
    let tolerant = spec(
        json!({"containers": [req("1", "1Gi")], "tolerations": [{"key": "x", "operator": "Exists"}]}),
    );
    assert_eq!(score(&tolerant, &soft), 65);
    // Ties go to the lowest name; zero allocatable does not divide by zero.
    assert_eq!(
        pick(
            &s,
            &[cand("z", 4000, 4 << 30), cand("m", 4000, 4 << 30)],
            "nodes"
        ),
        Ok(1)
    );
    let mut zero = cand("z", 0, 0);
    zero.allocatable = Resources::default();
    assert_eq!(score(&spec(json!({})), &zero), 0);
}

#[test]
fn messages() {
    let counts = BTreeMap::from([(Reason::InsufficientCpu, 1), (Reason::Affinity, 2)]);
    assert_eq!(
        unschedulable_message(3, &counts, "nodes"),
        "0/3 nodes are available: 1 Insufficient cpu, 2 node(s) didn't match Pod's node affinity/selector."
    );
    assert_eq!(
        unschedulable_message(2, &BTreeMap::from([(Reason::Affinity, 2)]), "sites"),
        "0/2 sites are available: 2 site(s) didn't match Pod's node affinity/selector."
    );
    // kube sorts the "<count> <text>" strings, so counts come first.
    let counts = BTreeMap::from([
        (Reason::InsufficientCpu, 4),
        (
            Reason::Taint("node-role.kubernetes.io/control-plane=:NoSchedule".into()),
            1,
        ),
    ]);
    assert_eq!(
        unschedulable_message(5, &counts, "nodes"),
        "0/5 nodes are available: 1 node(s) had untolerated taint {node-role.kubernetes.io/control-plane: }, 4 Insufficient cpu."
    );
    let counts = BTreeMap::from([
        (Reason::InsufficientMemory, 1),
        (Reason::TooManyPods, 1),
        (Reason::Unschedulable, 1),
        (Reason::NotReady, 1),
        (Reason::Taint("gpu=yes:NoSchedule".into()), 1),
    ]);
    assert_eq!(
        unschedulable_message(5, &counts, "nodes"),
        "0/5 nodes are available: 1 Insufficient memory, 1 Too many pods, \
         1 node(s) had untolerated taint {gpu: yes}, \
         1 node(s) had untolerated taint {node.kubernetes.io/not-ready: }, \
         1 node(s) were unschedulable."
    );
    // The same text from two reasons is one entry.
    let counts = BTreeMap::from([
        (Reason::NotReady, 1),
        (Reason::Taint(format!("{TAINT_NOT_READY}=:NoSchedule")), 2),
    ]);
    assert_eq!(
        unschedulable_message(3, &counts, "nodes"),
        "0/3 nodes are available: 3 node(s) had untolerated taint {node.kubernetes.io/not-ready: }."
    );
    assert_eq!(
        unschedulable_message(0, &BTreeMap::new(), "nodes"),
        "no nodes available to schedule pods"
    );
    // pick produces it, counting each failing candidate.
    let s = spec(json!({"containers": [req("2", "0")], "nodeSelector": {"zone": "a"}}));
    let cands = [labelled("a", &[]), labelled("b", &[]), {
        let mut c = labelled("c", &[("zone", "a")]);
        c.free.milli_cpu = 1000;
        c
    }];
    assert_eq!(
        pick(&s, &cands, "nodes"),
        Err("0/3 nodes are available: 1 Insufficient cpu, 2 node(s) didn't match Pod's node affinity/selector.".into())
    );
}

#[test]
fn summarize_groups_identical_nodes() {
    let nodes = [
        node("n3", json!({"pool": "a"}), "4", "8Gi", true),
        node("n1", json!({"pool": "a"}), "4", "8Gi", true),
        node("n2", json!({"pool": "b"}), "2", "4Gi", true),
        node("n4", json!({"pool": "a"}), "4", "8Gi", false),
    ];
    let pods = [
        pod("n1", "3", "Running"),
        pod("n3", "1", "Running"),
        pod("n3", "2", "Succeeded"),
        pod("n2", "500m", "Pending"),
        pod("", "1", "Pending"),
    ];
    let s = summarize("s1", &nodes, &pods);
    assert_eq!((s.nodes, s.ready), (4, 3));
    assert_eq!(s.allocatable.milli_cpu, 14000);
    assert_eq!(s.requested.milli_cpu, 4500);
    assert_eq!(s.requested.pods, 3);
    let names: Vec<&str> = s.classes.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["s1/n1", "s1/n2"]);
    // The pool-a class keeps n3's free space (3 cpu), the largest of n1 and n3.
    assert_eq!(s.classes[0].free.milli_cpu, 3000);
    assert_eq!(s.classes[0].free.pods, 109);
    assert_eq!(s.classes[0].allocatable.milli_cpu, 4000);
    assert_eq!(s.classes[1].free.milli_cpu, 1500);
    // Stable: input order does not matter, and round-trips through JSON.
    let mut rev = nodes.to_vec();
    rev.reverse();
    assert_eq!(summarize("s1", &rev, &pods), s);
    let wire = serde_json::to_string(&s).expect("json");
    assert_eq!(serde_json::from_str::<SiteSummary>(&wire).expect("json"), s);
    // Taints and cordoning split classes.
    let mut cordoned = node("n5", json!({"pool": "a"}), "4", "8Gi", true);
    cordoned.spec = Some(serde_json::from_value(json!({"unschedulable": true})).expect("spec"));
    let mut more = nodes.to_vec();
    more.push(cordoned);
    assert_eq!(summarize("s1", &more, &pods).classes.len(), 3);
    assert_eq!(summarize("s1", &[], &[]), SiteSummary::default());
}

#[test]
fn hostnames_do_not_split_classes_but_still_select() {
    let nodes = [
        node(
            "n1",
            json!({"pool": "a", HOSTNAME_LABEL: "n1"}),
            "4",
            "8Gi",
            true,
        ),
        node(
            "n3",
            json!({"pool": "a", HOSTNAME_LABEL: "n3"}),
            "4",
            "8Gi",
            true,
        ),
        node(
            "n2",
            json!({"pool": "b", HOSTNAME_LABEL: "n2"}),
            "4",
            "8Gi",
            true,
        ),
    ];
    let s = summarize("s1", &nodes, &[]);
    assert_eq!(s.classes.len(), 2);
    assert_eq!(s.classes[0].hosts, ["n1", "n3"]);
    assert!(!s.classes[0].labels.contains_key(HOSTNAME_LABEL));
    let cands = site_candidates("s1", &s, &[]);
    let on = |h: &str| spec(json!({"containers": [], "nodeSelector": {HOSTNAME_LABEL: h}}));
    assert_eq!(pick(&on("n3"), &cands, "sites"), Ok(0));
    assert_eq!(pick(&on("n2"), &cands, "sites"), Ok(1));
    assert!(pick(&on("n9"), &cands, "sites").is_err());
    let not_in = affinity(expr(HOSTNAME_LABEL, "NotIn", &["n1", "n3"]));
    assert_eq!(pick(&not_in, &cands, "sites"), Ok(1));
}

#[test]
fn site_candidates_label_and_taint() {
    let nodes = [
        node("n1", json!({"pool": "a"}), "4", "8Gi", true),
        node("n2", json!({"pool": "b"}), "4", "8Gi", true),
    ];
    let s = summarize("paris", &nodes, &[]);
    let cands = site_candidates("paris", &s, &[taint("edge", "", "NoSchedule")]);
    assert_eq!(cands.len(), 2);
    for c in &cands {
        assert_eq!(c.labels.get(SITE_LABEL).map(String::as_str), Some("paris"));
        assert_eq!(c.taints.last(), Some(&taint("edge", "", "NoSchedule")));
    }
    let want = |site: &str| {
        let mut s = affinity(expr(SITE_LABEL, "In", &[site]));
        s.tolerations = Some(vec![serde_json::from_value(
            json!({"key": "edge", "operator": "Exists"}),
        )
        .expect("toleration")]);
        s
    };
    assert_eq!(pick(&want("paris"), &cands, "sites"), Ok(0));
    assert_eq!(
        pick_group(&want("berlin"), &[cands.clone(), vec![]], "sites"),
        Err(
            "0/2 sites are available: 1 site(s) didn't match Pod's node affinity/selector, \
             1 site(s) had untolerated taint {node.kubernetes.io/not-ready: }."
                .into()
        )
    );
    assert_eq!(
        pick_group(&want("paris"), &[vec![], cands.clone()], "sites"),
        Ok((1, 0))
    );
    let untolerated = affinity(expr(SITE_LABEL, "In", &["paris"]));
    assert_eq!(
        pick(&untolerated, &cands, "sites"),
        Err("0/2 sites are available: 2 site(s) had untolerated taint {edge: }.".into())
    );
}

#[test]
fn resources_read_numbers_or_numeric_strings() {
    let r: Resources =
        serde_json::from_str(r#"{"milli_cpu": "2000", "memory": 1024, "pods": "110"}"#).unwrap();
    assert_eq!(
        r,
        Resources {
            milli_cpu: 2000,
            memory: 1024,
            pods: 110
        }
    );
    assert!(
        serde_json::from_str::<Resources>(r#"{"milli_cpu": "x", "memory": 1, "pods": 1}"#).is_err()
    );
}
