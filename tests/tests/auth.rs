//! `kubectl auth whoami` and `kubectl auth can-i` (SelfSubjectReview, SelfSubjectAccessReview,
//! SelfSubjectRulesReview) with stock kubectl, for the region's administrator and a tenant's
//! user, at the cloud and at the edge: the answers follow the rule requests are authorized by.

use tests::{kubectl, CloudCore, EdgeCore};

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn whoami_and_can_i_answer_for_the_caller() {
    let cc = CloudCore::start();
    let edge = EdgeCore::join(&cc, "s1", &cc.join_token("s1", "10m"));
    let scratch = cc.dir.path();
    let o = kubectl(
        &cc.kubeconfig(),
        scratch,
        &["create", "-f", "-"],
        Some("apiVersion: v1\nkind: Tenant\nmetadata: {name: acme}\n"),
    );
    assert!(o.status.success(), "{}", text(&o.stderr));
    let acme = cc.tenant_kubeconfig("acme");

    // whoami: the user, its groups, and a tenant's name as an extra attribute.
    for kc in [cc.kubeconfig(), edge.kubeconfig()] {
        let o = kubectl(&kc, scratch, &["auth", "whoami"], None);
        assert!(o.status.success(), "{}", text(&o.stderr));
        assert!(
            text(&o.stdout).contains("system:masters"),
            "{}",
            text(&o.stdout)
        );
    }
    let o = kubectl(
        &acme,
        scratch,
        &[
            "auth",
            "whoami",
            "-o",
            "jsonpath={.status.userInfo.extra.tenant[0]}",
        ],
        None,
    );
    assert_eq!(text(&o.stdout), "acme", "{}", text(&o.stderr));

    // can-i: yes (exit 0) or no (exit 1), as the requests themselves would be answered.
    let can = |kc: &std::path::Path, args: &[&str]| {
        let mut a = vec!["auth", "can-i"];
        a.extend_from_slice(args);
        let o = kubectl(kc, scratch, &a, None);
        // "no" may be followed by the reason ("no - ...").
        let answer = text(&o.stdout);
        let word = answer.split_whitespace().next().unwrap_or("").to_string();
        (o.status.code(), word)
    };
    assert_eq!(can(&acme, &["create", "pods"]), (Some(0), "yes".into()));
    assert_eq!(
        can(&acme, &["create", "deployments.apps", "-n", "default"]),
        (Some(0), "yes".into())
    );
    assert_eq!(can(&acme, &["list", "nodes"]), (Some(1), "no".into()));
    assert_eq!(can(&acme, &["get", "/metrics"]), (Some(1), "no".into()));
    assert_eq!(can(&acme, &["get", "/version"]), (Some(0), "yes".into()));
    assert_eq!(
        can(&cc.kubeconfig(), &["list", "nodes"]),
        (Some(0), "yes".into())
    );
    assert_eq!(
        can(&edge.kubeconfig(), &["delete", "pods"]),
        (Some(0), "yes".into())
    );
    // The answer matches what the request gets.
    let o = kubectl(&acme, scratch, &["get", "nodes"], None);
    assert!(
        !o.status.success() && text(&o.stderr).contains("Forbidden"),
        "{}",
        text(&o.stderr)
    );

    // can-i --list: the tenant's resources, not the region's.
    let o = kubectl(&acme, scratch, &["auth", "can-i", "--list"], None);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let list = text(&o.stdout);
    let has = |res: &str| {
        list.lines()
            .any(|l| l.split_whitespace().next() == Some(res))
    };
    assert!(has("pods") && has("deployments.apps"), "{list}");
    assert!(!has("nodes") && !has("tenants"), "{list}");
}
