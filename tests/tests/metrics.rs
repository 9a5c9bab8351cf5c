//! Prometheus metrics (`GET /metrics`) at both tiers with stock kubectl: the API's requests by
//! verb, resource and code with latency histograms, open watches and store commits, in the
//! text exposition format; refused to a tenant's user, as kube-apiserver refuses the path to
//! anyone without the `/metrics` permission.

use std::time::Duration;

use tests::{kubectl, wait_for, CloudCore, EdgeCore};

const T: Duration = Duration::from_secs(60);

/// The value of the sample line starting with `prefix` (labels included).
fn sample(text: &str, prefix: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

#[test]
fn metrics_count_requests_commits_and_watches_at_both_tiers() {
    let mut cc = CloudCore::start();
    let edge = EdgeCore::join(&cc, "s1", &cc.join_token("s1", "10m"));
    for i in 0..3 {
        cc.kubectl_ok(&["create", "configmap", &format!("m{i}")]);
    }
    cc.kubectl_ok(&["get", "configmaps"]);
    let missing = cc.kubectl(&["get", "configmap", "nope"]);
    assert!(!missing.status.success());
    // A watch held open while the metrics are read.
    let mut watch = std::process::Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(cc.kubeconfig())
        .args(["get", "configmaps", "--watch", "-o", "name"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut text = String::new();
    wait_for("the open watch counted", T, || {
        text = cc.kubectl_ok(&["get", "--raw", "/metrics"]);
        sample(&text, "apiserver_longrunning_watches").is_some_and(|n| n >= 1.0)
    });
    let _ = watch.kill();
    let _ = watch.wait();
    assert!(text.contains("# TYPE apiserver_request counter"), "{text}");
    let creates = sample(
        &text,
        r#"apiserver_request_total{verb="CREATE",group="",version="v1",resource="configmaps",subresource="",code="201"}"#,
    );
    assert!(creates.is_some_and(|n| n >= 3.0), "{creates:?}\n{text}");
    assert!(sample(
        &text,
        r#"apiserver_request_total{verb="GET",group="",version="v1",resource="configmaps",subresource="",code="404"}"#
    )
    .is_some_and(|n| n >= 1.0));
    assert!(sample(
        &text,
        r#"apiserver_request_duration_seconds_count{verb="LIST",group="",resource="configmaps",subresource=""}"#
    )
    .is_some_and(|n| n >= 1.0), "{text}");
    assert!(
        text.contains("apiserver_request_duration_seconds_bucket{"),
        "{text}"
    );
    assert!(sample(&text, "atoll_store_commit_duration_seconds_count").is_some_and(|n| n >= 3.0));
    assert!(sample(&text, "atoll_store_objects").is_some_and(|n| n >= 3.0));

    // The hub's view of the site: connected, its acknowledged revision close behind.
    wait_for("s1's sync state in the metrics", T, || {
        text = cc.kubectl_ok(&["get", "--raw", "/metrics"]);
        sample(&text, r#"atoll_sync_site_connected{site="s1"}"#) == Some(1.0)
            && sample(&text, r#"atoll_sync_site_acked_revision{site="s1"}"#)
                .is_some_and(|n| n > 0.0)
            && sample(
                &text,
                r#"atoll_sync_site_bytes{site="s1",direction="down"}"#,
            )
            .is_some_and(|n| n > 0.0)
    });
    assert!(
        text.contains(r#"atoll_sync_site_lag_revisions{site="s1"}"#),
        "{text}"
    );

    // The cloud scheduler's attempts: a pod that fits nowhere (no nodes) is unschedulable.
    let out = kubectl(
        &cc.kubeconfig(),
        cc.dir.path(),
        &["create", "-f", "-"],
        Some("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  containers: [{name: c, image: busybox}]\n"),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_for("the scheduler's attempt counted", T, || {
        text = cc.kubectl_ok(&["get", "--raw", "/metrics"]);
        sample(
            &text,
            r#"scheduler_schedule_attempts_total{result="unschedulable",profile="cloud"}"#,
        )
        .is_some_and(|n| n >= 1.0)
    });
    assert!(text.contains("scheduler_scheduling_pass_duration_seconds_count"));

    // The edge's API serves its own, with its outbox's depth: writes made while the region is
    // down wait there, and drain when it is back.
    let at_edge = edge.kubectl_ok(&["get", "--raw", "/metrics"]);
    assert!(at_edge.contains("apiserver_request_total{"), "{at_edge}");
    let depth = || {
        sample(
            &edge.kubectl_ok(&["get", "--raw", "/metrics"]),
            "atoll_edge_outbox_depth",
        )
    };
    cc.kill9();
    edge.kubectl_ok(&["create", "configmap", "offline-1"]);
    edge.kubectl_ok(&["create", "configmap", "offline-2"]);
    assert!(depth().is_some_and(|n| n >= 2.0), "{:?}", depth());
    cc.restart();
    wait_for("the outbox drained", T, || depth() == Some(0.0));
    assert!(cc
        .kubectl(&["get", "configmap", "offline-2"])
        .status
        .success());

    // A tenant's user may not read them.
    let out = kubectl(
        &cc.kubeconfig(),
        cc.dir.path(),
        &["create", "-f", "-"],
        Some("apiVersion: v1\nkind: Tenant\nmetadata: {name: acme}\n"),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let acme = cc.tenant_kubeconfig("acme");
    let out = kubectl(&acme, cc.dir.path(), &["get", "--raw", "/metrics"], None);
    assert!(!out.status.success());
    let msg = String::from_utf8_lossy(&out.stderr);
    assert!(msg.contains("cannot get path \"/metrics\""), "{msg}");
}
