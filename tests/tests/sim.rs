//! The hollow-site simulator against a real cloud-core: many sites and nodes from one process,
//! pods placed by the cloud scheduler and bound by the sites' schedulers, reported Running.

use std::time::Duration;

use futures_util::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, PostParams};
use serde_json::json;
use tests::sim::NodeSize;
use tests::CloudCore;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hollow_sites_run_pods_placed_by_both_schedulers() {
    let cc = CloudCore::start();
    let size = NodeSize {
        cpus: 4,
        memory_gib: 8,
        pods: 110,
    };
    let sim = tests::sim::start(&cc, 4, 5, size).await.unwrap();
    assert_eq!(sim.sites.len(), 4);
    let client = tests::client_for(&cc.kubeconfig()).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    // 60 pods of 1 CPU: more than one site can hold (5 nodes x 4 CPUs = 20), so they spread.
    futures_util::stream::iter(0..60)
        .map(|i| {
            let pods = pods.clone();
            async move {
                let p: Pod = serde_json::from_value(json!({
                    "metadata": {"name": format!("p{i:02}")},
                    "spec": {"containers": [{"name": "c", "image": "hollow", "resources": {"requests": {"cpu": "1"}}}]},
                }))
                .unwrap();
                pods.create(&PostParams::default(), &p).await.map(|_| ())
            }
        })
        .buffer_unordered(8)
        .try_collect::<Vec<_>>()
        .await
        .unwrap();
    // One pinned to a site by its label.
    let pinned: Pod = serde_json::from_value(json!({
        "metadata": {"name": "pinned"},
        "spec": {"nodeSelector": {"atoll.io/site": "site0002"}, "containers": [{"name": "c", "image": "hollow"}]},
    }))
    .unwrap();
    pods.create(&PostParams::default(), &pinned).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    loop {
        let l = pods.list(&Default::default()).await.unwrap();
        let running = l
            .items
            .iter()
            .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
            .count();
        if running == 61 {
            let mut per_site = std::collections::HashMap::new();
            // No node holds more CPU than it has.
            let mut per_node = std::collections::HashMap::new();
            for p in &l.items {
                let node = p
                    .spec
                    .as_ref()
                    .and_then(|s| s.node_name.clone())
                    .unwrap_or_default();
                *per_site
                    .entry(node.split('-').next().unwrap_or("").to_string())
                    .or_insert(0) += 1;
                if p.metadata.name.as_deref() == Some("pinned") {
                    assert!(node.starts_with("site0002-"), "pinned on {node}");
                } else {
                    *per_node.entry(node).or_insert(0) += 1;
                }
            }
            assert!(per_site.len() >= 3, "pods did not spread: {per_site:?}");
            assert!(per_node.values().all(|&c| c <= 4), "{per_node:?}");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {running}/61 pods Running"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
