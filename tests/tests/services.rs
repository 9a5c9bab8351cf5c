//! Services with stock kubectl at the cloud: `kubectl expose` and `kubectl create service`
//! (ClusterIP from the service range, NodePort from 30000-32767, headless), Endpoints and
//! EndpointSlices kept from the ready pods of a Deployment running under runc at a site, kube's
//! 422s for a taken, out-of-range or changed cluster IP, per-tenant address spaces, and the
//! endpoints gone with their Service.

use std::time::Duration;

use tests::streams_env::{text, Env, Tier};
use tests::wait_for;

const T: Duration = Duration::from_secs(90);

fn ok(e: &Env, args: &[&str], stdin: Option<&[u8]>) -> String {
    let o = e.kubectl(Tier::Cloud, args, stdin);
    assert!(o.status.success(), "kubectl {args:?}: {}", text(&o.stderr));
    text(&o.stdout)
}

fn fails(e: &Env, args: &[&str], stdin: Option<&[u8]>) -> String {
    let o = e.kubectl(Tier::Cloud, args, stdin);
    assert!(
        !o.status.success(),
        "kubectl {args:?} succeeded: {}",
        text(&o.stdout)
    );
    text(&o.stderr)
}

#[test]
fn services_endpoints_and_allocation() {
    let e = Env::start();
    let deploy = format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: web}}\nspec:\n  replicas: 2\n  selector: {{matchLabels: {{app: web}}}}\n  template:\n    metadata: {{labels: {{app: web}}}}\n    spec:\n      terminationGracePeriodSeconds: 1\n      containers:\n      - name: c\n        image: {}/busybox:v1\n        command: [sh, -c, 'mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 8080 -h /www']\n        ports: [{{name: http, containerPort: 8080}}]\n        readinessProbe: {{tcpSocket: {{port: 8080}}, periodSeconds: 1}}\n",
        e.reg.addr()
    );
    ok(&e, &["apply", "-f", "-"], Some(deploy.as_bytes()));
    ok(
        &e,
        &[
            "expose",
            "deployment",
            "web",
            "--port",
            "80",
            "--target-port",
            "http",
        ],
        None,
    );
    let ip = ok(
        &e,
        &["get", "svc", "web", "-o", "jsonpath={.spec.clusterIP}"],
        None,
    );
    assert!(ip.starts_with("10.96."), "{ip}");
    let table = ok(&e, &["get", "svc", "web"], None);
    assert!(
        table.starts_with("NAME   TYPE        CLUSTER-IP"),
        "{table}"
    );
    assert!(
        table.contains(&format!("ClusterIP   {ip}")) && table.contains("80/TCP"),
        "{table}"
    );

    // Both pods, once ready, behind the Service's target port (the named container port).
    wait_for("two ready endpoints", T, || {
        let o = e.kubectl(
            Tier::Cloud,
            &[
                "get",
                "endpoints",
                "web",
                "-o",
                "jsonpath={.subsets[*].addresses[*].ip}",
            ],
            None,
        );
        text(&o.stdout).split_whitespace().count() == 2
    });
    let eps = ok(&e, &["get", "endpoints", "web"], None);
    assert!(eps.contains(":8080"), "{eps}");
    let slices = ok(
        &e,
        &[
            "get",
            "endpointslices",
            "-l",
            "kubernetes.io/service-name=web",
        ],
        None,
    );
    assert!(
        slices.contains("IPv4") && slices.contains("8080"),
        "{slices}"
    );
    let pod_ips = ok(
        &e,
        &[
            "get",
            "pods",
            "-l",
            "app=web",
            "-o",
            "jsonpath={.items[*].status.podIP}",
        ],
        None,
    );
    let mut want: Vec<&str> = pod_ips.split_whitespace().collect();
    want.sort();
    let got = ok(
        &e,
        &[
            "get",
            "endpointslices",
            "-l",
            "kubernetes.io/service-name=web",
            "-o",
            "jsonpath={.items[0].endpoints[*].addresses[0]}",
        ],
        None,
    );
    assert_eq!(got.split_whitespace().collect::<Vec<_>>(), want);

    // NodePort and headless services.
    ok(
        &e,
        &["create", "service", "nodeport", "np", "--tcp=80:8080"],
        None,
    );
    let np = ok(
        &e,
        &[
            "get",
            "svc",
            "np",
            "-o",
            "jsonpath={.spec.ports[0].nodePort}",
        ],
        None,
    );
    let n: u16 = np.parse().unwrap();
    assert!((30000..=32767).contains(&n), "{np}");
    assert!(ok(&e, &["get", "svc", "np"], None).contains(&format!("80:{n}/TCP")));
    ok(
        &e,
        &["create", "service", "clusterip", "hl", "--clusterip=None"],
        None,
    );
    assert_eq!(
        ok(
            &e,
            &["get", "svc", "hl", "-o", "jsonpath={.spec.clusterIP}"],
            None
        ),
        "None"
    );

    // kube's 422s: a taken address, one outside the range, a change, a taken node port.
    let svc = |name: &str, extra: &str| {
        format!("apiVersion: v1\nkind: Service\nmetadata: {{name: {name}}}\nspec:\n  ports: [{{port: 80}}]\n{extra}")
    };
    let err = fails(
        &e,
        &["create", "-f", "-"],
        Some(svc("taken", &format!("  clusterIP: {ip}\n")).as_bytes()),
    );
    assert!(
        err.contains("spec.clusterIPs[0]") && err.contains("provided IP is already allocated"),
        "{err}"
    );
    let err = fails(
        &e,
        &["create", "-f", "-"],
        Some(svc("far", "  clusterIP: 10.1.2.3\n").as_bytes()),
    );
    assert!(err.contains("not in the valid range"), "{err}");
    let err = fails(
        &e,
        &[
            "patch",
            "svc",
            "web",
            "-p",
            r#"{"spec":{"clusterIP":"10.96.200.200","clusterIPs":["10.96.200.200"]}}"#,
        ],
        None,
    );
    assert!(err.contains("may not change once set"), "{err}");
    let err = fails(
        &e,
        &["create", "-f", "-"],
        Some(
            svc(
                "np2",
                &format!("  type: NodePort\n  ports: [{{port: 80, nodePort: {n}}}]\n"),
            )
            .as_bytes(),
        ),
    );
    assert!(err.contains("provided port is already allocated"), "{err}");
    let err = fails(
        &e,
        &["create", "-f", "-"],
        Some(b"apiVersion: v1\nkind: Service\nmetadata: {name: noports}\nspec: {}\n"),
    );
    assert!(err.contains("spec.ports: Required value"), "{err}");
    // An update that leaves the address out keeps it.
    ok(&e, &["label", "svc", "web", "tier=front"], None);
    assert_eq!(
        ok(
            &e,
            &["get", "svc", "web", "-o", "jsonpath={.spec.clusterIP}"],
            None
        ),
        ip
    );

    // Another tenant has its own address space: the same address is free there.
    ok(
        &e,
        &["create", "-f", "-"],
        Some(b"apiVersion: v1\nkind: Tenant\nmetadata: {name: acme}\n"),
    );
    let acme = e.cc.tenant_kubeconfig("acme");
    let o = tests::kubectl(
        &acme,
        e.scratch(),
        &["create", "-f", "-"],
        Some(&svc("same", &format!("  clusterIP: {ip}\n"))),
    );
    assert!(o.status.success(), "{}", text(&o.stderr));

    // The Service gone: its Endpoints and slice go with it, and its address is free again.
    ok(&e, &["delete", "svc", "web"], None);
    wait_for("the endpoints gone", T, || {
        let slices = ok(
            &e,
            &[
                "get",
                "endpointslices",
                "-l",
                "kubernetes.io/service-name=web",
                "-o",
                "name",
            ],
            None,
        );
        !e.kubectl(Tier::Cloud, &["get", "endpoints", "web"], None)
            .status
            .success()
            && slices.trim().is_empty()
    });
    ok(
        &e,
        &["create", "-f", "-"],
        Some(svc("again", &format!("  clusterIP: {ip}\n")).as_bytes()),
    );
}
