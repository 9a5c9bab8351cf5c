use super::map::{OLD_RV_KEY, OLD_TREE};
use super::*;
use crate::Precondition;
use serde_json::json;
use std::collections::BTreeMap;

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

/// Random transactions against the storage and a model that keeps every revision's state;
/// reads at random revisions, pages, history and compaction must agree with the model.
#[tokio::test(flavor = "multi_thread")]
async fn reads_at_revisions_match_a_model_through_compaction() {
    for seed in 1..=20u64 {
        let s = LocalStorage::memory().unwrap();
        let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
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
        // model[rev] = state after rev.
        let mut model: Vec<BTreeMap<Key, u64>> = vec![BTreeMap::new()];
        let mut compacted = 0;
        for step in 0..300u64 {
            let state = model.last().cloned().unwrap_or_default();
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
            let expect_ok = ops.iter().all(|op| match op {
                Op::Put {
                    key,
                    pre: Precondition::Absent,
                    ..
                } => !state.contains_key(key),
                _ => true,
            });
            let res = s.txn(ops.clone()).await;
            assert_eq!(
                res.is_ok(),
                expect_ok,
                "seed {seed} step {step}: {:?} {ops:?}",
                res.as_ref().err()
            );
            if let Ok(evs) = res {
                let mut st = state;
                for (op, ev) in ops.iter().zip(&evs) {
                    assert_eq!(ev.rv as usize, model.len(), "dense revisions");
                    match op {
                        Op::Put { key, .. } => {
                            assert_eq!(ev.kind == EventType::Added, !st.contains_key(key));
                            st.insert(key.clone(), step);
                        }
                        Op::Delete { key, .. } => {
                            st.remove(key);
                        }
                    }
                    model.push(st.clone());
                }
            }
            if step % 50 == 49 {
                compacted = model.len() as u64 - 1 - rng.next(20);
                s.compact(compacted).await.unwrap();
            }
        }
        let current = s.current_revision().await.unwrap();
        assert_eq!(current as usize, model.len() - 1);
        for _ in 0..200 {
            let rev = compacted + rng.next(current - compacted + 1);
            let want: Vec<(Key, u64)> = model[rev as usize]
                .iter()
                .filter(|(k, _)| k.resource == "pods")
                .map(|(k, n)| (k.clone(), *n))
                .collect();
            // Paged by 2 at one revision.
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
            assert_eq!(got, want, "seed {seed} list at {rev}");
            let k = &keys[rng.next(keys.len() as u64) as usize];
            let (_, v) = s.get(k, rev).await.unwrap();
            assert_eq!(
                v.map(|v| v["n"].as_u64().unwrap()),
                model[rev as usize].get(k).copied(),
                "seed {seed} get {k:?} at {rev}"
            );
        }
        // History from the compaction point replays to the current state.
        let mut replayed = model[compacted as usize].clone();
        for e in s.history(compacted, current).await.unwrap() {
            assert_eq!(
                e.kind == EventType::Modified,
                replayed.contains_key(&e.key) && e.kind != EventType::Deleted
            );
            match e.kind {
                EventType::Deleted => replayed.remove(&e.key),
                _ => replayed.insert(e.key.clone(), e.object["n"].as_u64().unwrap()),
            };
        }
        assert_eq!(&replayed, model.last().unwrap());
        if compacted > 0 {
            assert!(matches!(
                s.get(&keys[0], compacted - 1).await,
                Err(StoreError::Gone { .. })
            ));
            assert!(matches!(
                s.history(compacted - 1, current).await,
                Err(StoreError::Gone { .. })
            ));
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_watch_replays_from_a_revision_then_follows() {
    let s = LocalStorage::memory().unwrap();
    let a = Key::new("pods", "", "ns", "a");
    s.txn(vec![put(&a, 1, Precondition::Absent)]).await.unwrap();
    s.txn(vec![put(&a, 2, Precondition::Version(1))])
        .await
        .unwrap();
    assert!(matches!(
        s.txn(vec![put(&a, 3, Precondition::Version(1))]).await,
        Err(StoreError::Conflict(_))
    ));
    let mut feed = s.watch(1).await.unwrap();
    let first = feed.recv().await.unwrap().events;
    assert_eq!((first[0].rv, first[0].kind), (2, EventType::Modified));
    s.txn(vec![Op::Delete {
        key: a.clone(),
        pre: Precondition::Version(2),
    }])
    .await
    .unwrap();
    let next = feed.recv().await.unwrap().events;
    assert_eq!((next[0].rv, next[0].kind), (3, EventType::Deleted));
    assert_eq!(next[0].object["n"], 2, "a deletion carries the last state");
    // Deleting what is not there changes nothing.
    assert!(s
        .txn(vec![Op::Delete {
            key: a.clone(),
            pre: Precondition::Any
        }])
        .await
        .unwrap()
        .is_empty());
    assert_eq!(s.current_revision().await.unwrap(), 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_earlier_sled_layout_is_migrated() {
    let dir = tempfile::tempdir().unwrap();
    {
        let db = sled::open(dir.path()).unwrap();
        let old = db.open_tree(OLD_TREE).unwrap();
        let k = Key::new("pods", "t", "ns", "a");
        old.insert(
            k.encode(),
            serde_json::to_vec(&json!({"metadata": {"name": "a", "resourceVersion": "7"}}))
                .unwrap(),
        )
        .unwrap();
        old.insert(OLD_RV_KEY, &9u64.to_be_bytes()).unwrap();
        db.flush().unwrap();
    }
    let s = LocalStorage::sled(dir.path()).unwrap();
    assert_eq!(s.current_revision().await.unwrap(), 9);
    let (_, v) = s.get(&Key::new("pods", "t", "ns", "a"), 0).await.unwrap();
    assert_eq!(v.unwrap()["metadata"]["resourceVersion"], "7");
    // Its events were never kept: history before the migration is gone.
    assert!(matches!(
        s.history(8, 9).await,
        Err(StoreError::Gone { .. })
    ));
    let evs = s
        .txn(vec![put(
            &Key::new("pods", "t", "ns", "b"),
            1,
            Precondition::Absent,
        )])
        .await
        .unwrap();
    assert_eq!(evs[0].rv, 10);
}
