//! Storage on a real etcd (Debian's etcd-server): the storage contract checked against a model,
//! the watch cache over it, and cloud-core serving from it — resourceVersions are etcd
//! revisions, an object over etcd's limit gets 413, and etcd down gets 503 with Retry-After and
//! acknowledges nothing.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use store::{
    EtcdConfig, EtcdStorage, EventType, Key, Op, Precondition, Scope, Storage, StoreError,
};
use tests::etcd::Etcd;
use tests::CloudCore;

fn config(e: &Etcd, prefix: &str) -> EtcdConfig {
    EtcdConfig {
        endpoints: vec![e.url()],
        prefix: prefix.into(),
        ..EtcdConfig::default()
    }
}

fn obj(name: &str, n: u64) -> Value {
    json!({"metadata": {"name": name}, "n": n})
}

fn put(key: &Key, n: u64, pre: Precondition) -> Op {
    Op::Put {
        key: key.clone(),
        value: obj(&key.name, n),
        pre,
    }
}

/// A tiny deterministic generator (xorshift64*).
struct Rng(u64);
impl Rng {
    fn next(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n
    }
}

/// The model's state at `rev`: the last recorded state at or before it.
fn at(model: &BTreeMap<u64, BTreeMap<Key, u64>>, rev: u64) -> BTreeMap<Key, u64> {
    model
        .range(..=rev)
        .next_back()
        .map(|(_, s)| s.clone())
        .unwrap_or_default()
}

/// Random multi-key transactions against etcd and a model of every revision's state: reads at
/// revisions (paged), history and compaction agree with the model; a transaction's changes
/// share one revision; two storages with different prefixes never see each other's keys.
#[tokio::test(flavor = "multi_thread")]
async fn etcd_storage_matches_a_model_through_compaction() {
    let e = Etcd::start();
    let s = EtcdStorage::connect(&config(&e, "/atoll")).await.unwrap();
    let other = EtcdStorage::connect(&config(&e, "/other")).await.unwrap();
    other
        .txn(vec![put(
            &Key::new("pods", "", "ns", "k0"),
            99,
            Precondition::Absent,
        )])
        .await
        .unwrap();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let keys: Vec<Key> = (0..12)
        .map(|i| {
            Key::new(
                ["pods", "secrets"][i % 2],
                ["", "t"][i / 6],
                "ns",
                &format!("k{i}"),
            )
        })
        .collect();
    let start = s.current_revision().await.unwrap();
    let mut model: BTreeMap<u64, BTreeMap<Key, u64>> = BTreeMap::new();
    model.insert(start, BTreeMap::new());
    let mut compacted = start;
    for step in 0..200u64 {
        let state = model.values().next_back().cloned().unwrap_or_default();
        let n = 1 + rng.next(3) as usize;
        let mut ops = Vec::new();
        let mut used = Vec::new();
        for _ in 0..n {
            let k = &keys[rng.next(keys.len() as u64) as usize];
            if used.contains(k) {
                continue;
            }
            used.push(k.clone());
            let live = state.contains_key(k);
            ops.push(match (rng.next(4), live) {
                (0, true) => Op::Delete {
                    key: k.clone(),
                    pre: Precondition::Exists,
                },
                (1, _) => put(k, step, Precondition::Absent),
                _ => put(k, step, Precondition::Any),
            });
        }
        let expect = ops.iter().find_map(|op| match op {
            Op::Put {
                key,
                pre: Precondition::Absent,
                ..
            } if state.contains_key(key) => Some(key.clone()),
            _ => None,
        });
        let res = s.txn(ops.clone()).await;
        match (&res, expect) {
            (Err(StoreError::AlreadyExists(k)), Some(want)) => assert_eq!(*k, want),
            (Ok(_), None) => {}
            (r, want) => panic!("step {step}: {r:?}, expected a failure on {want:?}"),
        }
        if let Ok(evs) = res {
            let mut st = state;
            let rev = evs[0].rv;
            assert!(
                evs.iter().all(|e| e.rv == rev),
                "one revision per transaction"
            );
            assert!(rev > *model.keys().next_back().unwrap());
            for (op, ev) in ops.iter().zip(&evs) {
                assert_eq!(ev.object["metadata"]["resourceVersion"], rev.to_string());
                match op {
                    Op::Put { key, .. } => {
                        assert_eq!(ev.kind == EventType::Added, !st.contains_key(key));
                        st.insert(key.clone(), step);
                    }
                    Op::Delete { key, .. } => {
                        assert_eq!(ev.kind, EventType::Deleted);
                        assert!(ev.object["n"].is_u64(), "a deletion carries the last state");
                        st.remove(key);
                    }
                }
            }
            model.insert(rev, st);
        }
        if step % 50 == 49 {
            let revs: Vec<u64> = model.keys().copied().collect();
            compacted = revs[revs.len() - 1 - rng.next(10) as usize];
            s.compact(compacted).await.unwrap();
        }
    }
    let current = s.current_revision().await.unwrap();
    for _ in 0..100 {
        let rev = compacted + rng.next(current - compacted + 1);
        let want: Vec<(Key, u64)> = at(&model, rev)
            .into_iter()
            .filter(|(k, _)| k.resource == "pods")
            .collect();
        let mut got = Vec::new();
        let mut after = None;
        loop {
            let scope = Scope::of("pods", None);
            let page = s.list(Some(&scope), after.as_ref(), 2, rev).await.unwrap();
            assert_eq!(page.revision, rev);
            after = page.items.last().map(|(k, _)| k.clone());
            got.extend(
                page.items
                    .into_iter()
                    .map(|(k, v)| (k, v["n"].as_u64().unwrap())),
            );
            if !page.more {
                break;
            }
        }
        assert_eq!(got, want, "list at {rev}");
        let k = &keys[rng.next(keys.len() as u64) as usize];
        let (_, v) = s.get(k, rev).await.unwrap();
        assert_eq!(
            v.map(|v| v["n"].as_u64().unwrap()),
            at(&model, rev).get(k).copied()
        );
    }
    // A namespace across tenants is no key prefix: filtered, still paged right.
    let scope = Scope {
        resource: "secrets".into(),
        tenant: None,
        namespace: Some("ns".into()),
    };
    let all = s.list(Some(&scope), None, 1000, 0).await.unwrap();
    let want: Vec<Key> = at(&model, current)
        .into_keys()
        .filter(|k| k.resource == "secrets")
        .collect();
    assert_eq!(
        all.items.into_iter().map(|(k, _)| k).collect::<Vec<_>>(),
        want
    );
    // History from the compaction point replays to the current state.
    let mut replayed = at(&model, compacted);
    for e in s.history(compacted, current).await.unwrap() {
        match e.kind {
            EventType::Deleted => replayed.remove(&e.key),
            _ => replayed.insert(e.key.clone(), e.object["n"].as_u64().unwrap()),
        };
    }
    assert_eq!(replayed, at(&model, current));
    assert!(matches!(
        s.get(&keys[0], compacted - 1).await,
        Err(StoreError::Gone { .. })
    ));
    assert!(matches!(
        s.watch(compacted - 1).await,
        Err(StoreError::Gone { .. })
    ));
    // The other prefix's object is not ours.
    assert!(s
        .list(None, None, 1000, 0)
        .await
        .unwrap()
        .items
        .iter()
        .all(|(_, v)| v["n"] != 99));
}

/// The watch cache over etcd: a multi-key transaction (one revision) reaches the cache whole,
/// a watch from before it replays it, and a write by another client of the same etcd (another
/// replica) is in the cache once a consistent read's sync returns.
#[tokio::test(flavor = "multi_thread")]
async fn the_watch_cache_follows_etcd() {
    let e = Etcd::start();
    let storage = Arc::new(EtcdStorage::connect(&config(&e, "/atoll")).await.unwrap());
    let store = store::Store::open(storage, 1000).await.unwrap();
    let before = store.current_rv();
    let (a, b) = (
        Key::new("pods", "", "ns", "a"),
        Key::new("pods", "", "ns", "b"),
    );
    let evs = store
        .commit(vec![
            put(&a, 1, Precondition::Absent),
            put(&b, 1, Precondition::Absent),
        ])
        .await
        .unwrap();
    assert_eq!(evs.len(), 2);
    assert!(
        store.get(&a).is_some() && store.get(&b).is_some(),
        "both changes applied"
    );
    let w = store
        .watch(&store::Scope::default(), &before.into())
        .await
        .unwrap();
    assert_eq!(
        w.replay
            .iter()
            .map(|e| e.key.name.clone())
            .collect::<Vec<_>>(),
        ["a", "b"]
    );
    // Another writer on the same etcd.
    let other = EtcdStorage::connect(&config(&e, "/atoll")).await.unwrap();
    let rv = store.current_rv();
    other
        .txn(vec![Op::Put {
            key: a.clone(),
            value: obj("a", 2),
            pre: Precondition::Version(rv),
        }])
        .await
        .unwrap();
    // A consistent read sees it at once.
    store.sync().await.unwrap();
    assert_eq!(
        store.get(&a).unwrap()["n"],
        2,
        "sync waits for the other write"
    );
    // A stale compare is a conflict, through the cache as directly.
    assert!(matches!(
        store
            .commit(vec![put(&a, 3, Precondition::Version(rv))])
            .await,
        Err(StoreError::Conflict(_))
    ));
}

/// With etcd gone, requests fail as unavailable (never acknowledged), and work again once it
/// is back.
#[tokio::test(flavor = "multi_thread")]
async fn etcd_down_is_unavailable_and_recovers() {
    let mut e = Etcd::start();
    let s = EtcdStorage::connect(&config(&e, "/atoll")).await.unwrap();
    let a = Key::new("configmaps", "", "ns", "a");
    s.txn(vec![put(&a, 1, Precondition::Absent)]).await.unwrap();
    e.kill9();
    let b = Key::new("configmaps", "", "ns", "b");
    let t = std::time::Instant::now();
    let r = s.txn(vec![put(&b, 1, Precondition::Absent)]).await;
    assert!(matches!(r, Err(StoreError::Unavailable(_))), "{r:?}");
    assert!(
        t.elapsed() < Duration::from_secs(15),
        "failed in {:?}",
        t.elapsed()
    );
    e.restart();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        match s.get(&b, 0).await {
            Ok((_, v)) => {
                assert!(v.is_none(), "an unacknowledged write must not appear");
                break;
            }
            Err(StoreError::Unavailable(_)) if std::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(other) => panic!("{other}"),
        }
    }
    assert!(
        s.get(&a, 0).await.unwrap().1.is_some(),
        "the acknowledged write survived"
    );
}

/// cloud-core on etcd, driven by kubectl: a create's resourceVersion is etcd's revision, an
/// object over 1.5 MiB (a pod with a long argument: pods have no size rule of their own) is
/// refused with 413 (and not stored), and with etcd down a write gets
/// 503 with Retry-After.
#[tokio::test(flavor = "multi_thread")]
async fn cloud_core_serves_from_etcd() {
    let etcd = Etcd::start();
    let cc = CloudCore::start_with(&["--etcd-servers", &etcd.url(), "--etcd-prefix", "/r1"]);
    cc.kubectl_ok(&["create", "configmap", "small", "--from-literal=a=b"]);
    let rv = cc.kubectl_ok(&[
        "get",
        "configmap",
        "small",
        "-o",
        "jsonpath={.metadata.resourceVersion}",
    ]);
    let out = std::process::Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args([
            "--endpoints",
            &etcd.url(),
            "get",
            "--prefix",
            "/r1/configmaps",
            "-w",
            "json",
        ])
        .output()
        .expect("etcdctl");
    let listing: Value = serde_json::from_slice(&out.stdout).expect("etcdctl json");
    let mods: Vec<String> = listing["kvs"]
        .as_array()
        .expect("kvs")
        .iter()
        .map(|kv| kv["mod_revision"].to_string())
        .collect();
    assert!(
        mods.contains(&rv),
        "resourceVersion {rv} is not an etcd revision of {mods:?}"
    );

    let big = cc.dir.path().join("big.yaml");
    std::fs::write(
        &big,
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: big}}\nspec: {{containers: [{{name: c, image: busybox, args: [{}]}}]}}\n",
            "a".repeat(1600 * 1024)
        ),
    )
    .unwrap();
    let err = tests::err(
        cc.kubectl(&["create", "-f", big.to_str().unwrap()]),
        &["create big"],
    );
    assert!(err.contains("larger than"), "{err}");
    assert!(!cc.kubectl(&["get", "pod", "big"]).status.success());

    let client = cc.client().await;
    let mut etcd = etcd;
    etcd.kill9();
    let req = http::Request::post("/api/v1/namespaces/default/configmaps")
        .header("content-type", "application/json")
        .body(
            serde_json::to_vec(&json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "during"}}))
            .unwrap(),
        )
        .unwrap();
    let resp = client.send(req.map(Into::into)).await.expect("response");
    assert_eq!(resp.status(), 503);
    assert_eq!(
        resp.headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("1")
    );
    etcd.restart();
    tests::wait_for("cloud-core to serve again", Duration::from_secs(30), || {
        cc.kubectl(&["get", "configmap", "small"]).status.success()
    });
    assert!(
        !cc.kubectl(&["get", "configmap", "during"]).status.success(),
        "a write answered 503 must not appear"
    );
    cc.kubectl_ok(&["create", "configmap", "after"]);
}

/// cloud-core reaches an etcd that serves TLS and demands client certificates, with
/// `--etcd-cafile/--etcd-certfile/--etcd-keyfile`; without the client pair etcd refuses it.
#[tokio::test(flavor = "multi_thread")]
async fn cloud_core_reaches_etcd_over_mutual_tls() {
    let etcd = Etcd::start_tls();
    let cc = CloudCore::start_with(&[
        "--etcd-servers",
        &etcd.url(),
        "--etcd-cafile",
        &etcd.tls_file("ca.crt"),
        "--etcd-certfile",
        &etcd.tls_file("client.crt"),
        "--etcd-keyfile",
        &etcd.tls_file("client.key"),
    ]);
    cc.kubectl_ok(&["create", "configmap", "over-tls"]);
    // The same etcd without a client certificate: no storage.
    let s = EtcdStorage::connect(&EtcdConfig {
        endpoints: vec![etcd.url()],
        ca_file: Some(etcd.tls_file("ca.crt").into()),
        prefix: "/atoll".into(),
        ..EtcdConfig::default()
    })
    .await
    .unwrap();
    assert!(matches!(
        s.current_revision().await,
        Err(StoreError::Unavailable(_))
    ));
}

/// Concurrent commits through the watch cache on etcd (answered in any order): every one
/// returns with the cache holding it, and the cache's window is in revision order, each
/// revision once.
#[tokio::test(flavor = "multi_thread")]
async fn concurrent_commits_reach_the_cache_in_order() {
    let e = Etcd::start();
    let storage = Arc::new(EtcdStorage::connect(&config(&e, "/atoll")).await.unwrap());
    let store = store::Store::open(storage, 10_000).await.unwrap();
    let from = store.current_rv();
    let tasks: Vec<_> = (0..64)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                for j in 0..10 {
                    let k = Key::new("configmaps", "", "ns", &format!("c{i}-{j}"));
                    store
                        .commit(vec![put(&k, j, Precondition::Absent)])
                        .await
                        .unwrap();
                    assert!(store.get(&k).is_some(), "read after its own write");
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let w = store
        .watch(&store::Scope::default(), &from.into())
        .await
        .unwrap();
    assert_eq!(w.replay.len(), 640);
    assert!(
        w.replay.windows(2).all(|p| p[0].rv < p[1].rv),
        "revision order, once each"
    );
}

/// A cache over etcd does not compact it on its own (several replicas share it): the one that
/// compacts calls `compact_behind`, which keeps the window's worth of history.
#[tokio::test(flavor = "multi_thread")]
async fn etcd_is_compacted_only_behind_the_window_on_request() {
    let e = Etcd::start();
    let storage = Arc::new(EtcdStorage::connect(&config(&e, "/atoll")).await.unwrap());
    let store = store::Store::open(storage.clone(), 5).await.unwrap();
    let start = store.current_rv();
    for i in 0..30 {
        let k = Key::new("configmaps", "", "ns", &format!("c{i}"));
        store
            .commit(vec![put(&k, i, Precondition::Absent)])
            .await
            .unwrap();
    }
    // Far past the window, yet nothing compacted: history from the start is still there.
    let all = storage.history(start, store.current_rv()).await.unwrap();
    assert_eq!(all.len(), 30);
    let at = store.compact_behind().await.unwrap().unwrap();
    assert_eq!(at, store.current_rv() - 5);
    assert!(matches!(
        storage.history(start, store.current_rv()).await,
        Err(StoreError::Gone { .. })
    ));
    // What is kept: the changes after the compaction point (the history read's barrier took
    // a revision too).
    let kept: Vec<u64> = storage
        .history(at, store.current_rv())
        .await
        .unwrap()
        .iter()
        .map(|e| e.rv)
        .collect();
    let want: Vec<u64> = all.iter().map(|e| e.rv).filter(|r| *r > at).collect();
    assert_eq!(kept, want);
    assert!(!kept.is_empty());
}

/// A leader's writes are fenced by its term: once another replica holds the leadership (the
/// first term resigned or its lease expired), a write under the old term's fence commits
/// nothing and says why; under the new term's, and unfenced (an API client's), writes commit.
#[tokio::test(flavor = "multi_thread")]
async fn a_deposed_leader_commits_nothing() {
    let e = Etcd::start();
    let a = EtcdStorage::connect(&config(&e, "/atoll")).await.unwrap();
    let b = EtcdStorage::connect(&config(&e, "/atoll")).await.unwrap();
    let k = Key::new("configmaps", "", "ns", "fenced");
    let first = a.campaign("controllers", "a").await.unwrap();
    let old = first.fence();
    store::fenced(
        Some(old.clone()),
        a.txn(vec![put(&k, 1, Precondition::Absent)]),
    )
    .await
    .expect("the leader writes");
    // a's term ends (resigned); b leads.
    drop(first);
    let second = tokio::time::timeout(Duration::from_secs(30), b.campaign("controllers", "b"))
        .await
        .expect("b becomes leader")
        .unwrap();
    let err = store::fenced(Some(old), a.txn(vec![put(&k, 2, Precondition::Any)]))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::Unavailable(m) if m.contains("term as leader is over")),
        "{err:?}"
    );
    let (_, got) = a.get(&k, 0).await.unwrap();
    assert_eq!(
        got.map(|v| v["n"].clone()),
        Some(json!(1)),
        "nothing committed"
    );
    store::fenced(
        Some(second.fence()),
        b.txn(vec![put(&k, 3, Precondition::Any)]),
    )
    .await
    .expect("the new leader writes");
    a.txn(vec![put(&k, 4, Precondition::Any)])
        .await
        .expect("an unfenced write");
}

/// The region's partition order is recorded in the system cluster: a merged resourceVersion is
/// positional, so any flag order gets the recorded order, new partitions are appended, and a
/// recorded partition left out is refused, naming it.
#[tokio::test(flavor = "multi_thread")]
async fn the_partition_order_is_the_regions() {
    let e = Etcd::start();
    let s = EtcdStorage::connect(&config(&e, "/atoll")).await.unwrap();
    let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert_eq!(s.partition_order(&[]).await.unwrap(), names(&[]));
    assert_eq!(
        s.partition_order(&names(&["a", "b"])).await.unwrap(),
        names(&["a", "b"])
    );
    // Another replica (or a restart) with the flags in another order, one more partition.
    let other = EtcdStorage::connect(&config(&e, "/atoll")).await.unwrap();
    assert_eq!(
        other
            .partition_order(&names(&["c", "b", "a"]))
            .await
            .unwrap(),
        names(&["a", "b", "c"])
    );
    let err = s.partition_order(&names(&["a", "c"])).await.unwrap_err();
    assert!(
        matches!(&err, StoreError::Invalid(m) if m.contains("[\"b\"] not given")),
        "{err:?}"
    );
    // Another region (prefix) has its own.
    let elsewhere = EtcdStorage::connect(&config(&e, "/other")).await.unwrap();
    assert_eq!(
        elsewhere.partition_order(&names(&["c"])).await.unwrap(),
        names(&["c"])
    );
}
