//! E2E: the node agent's image store against a real `docker-registry` (plain HTTP and HTTPS
//! trusted through certs.d), and archive import. Each test has its own registry, temp dirs and
//! store; the registry is killed on drop, also when a test fails.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use edge_agent::image::{Image, ImageError, ImageStore, PullPolicy};
use tests::registry::{busybox_image, busybox_index_image, docker_archive, oci_archive, Registry};

/// The image is a usable busybox.
fn assert_busybox(img: &Image) {
    let bb = img.rootfs.join("bin/busybox");
    let mode = std::fs::metadata(&bb)
        .expect("bin/busybox")
        .permissions()
        .mode();
    assert!(mode & 0o111 != 0, "bin/busybox not executable: {mode:o}");
    for applet in ["sh", "ls", "sleep", "wget", "ping"] {
        let link = std::fs::read_link(img.rootfs.join("bin").join(applet)).expect(applet);
        assert_eq!(link, Path::new("busybox"));
    }
    assert!(img.rootfs.join("etc/passwd").is_file());
    let tmp = std::fs::metadata(img.rootfs.join("tmp")).expect("tmp");
    assert_eq!(tmp.permissions().mode() & 0o7777, 0o1777);
    assert_eq!(img.config.cmd, ["sh"]);
    assert_eq!(img.config.env, ["PATH=/bin"]);
    assert!(
        img.id.starts_with("sha256:") && img.id.len() == 71,
        "{}",
        img.id
    );
}

fn pull_error(r: Result<Image, ImageError>) -> String {
    match r {
        Err(ImageError::Pull(m)) => m,
        other => panic!("expected a pull error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_over_http_from_an_insecure_registry() {
    let reg = Registry::start();
    let work = tempfile::tempdir().expect("tempdir");
    reg.push(&busybox_image(work.path(), "v1"), "busybox:v1");
    let reference = format!("{}/busybox:v1", reg.addr());

    let store = ImageStore::open(&work.path().join("agent"), vec![reg.addr()]).expect("open");
    let img = store
        .ensure(&reference, PullPolicy::IfNotPresent)
        .await
        .expect("pull");
    assert_eq!(img.reference, reference);
    assert_busybox(&img);
    let refs: Vec<String> = store.list().into_iter().map(|(r, _)| r).collect();
    assert!(refs.contains(&reference), "{refs:?}");
    assert_eq!(store.get(&reference), Some(img.clone()));

    // By digest, from the cache and then from the registry.
    let pinned = format!("{}/busybox@{}", reg.addr(), img.id);
    let local = store
        .ensure(&pinned, PullPolicy::Never)
        .await
        .expect("pinned, local");
    assert_eq!(local.rootfs, img.rootfs);
    let pulled = store.pull(&pinned).await.expect("pinned pull");
    assert_eq!(pulled.id, img.id);

    // Concurrent pulls of one image share the cache without corrupting it.
    let tasks: Vec<_> = (0..4)
        .map(|_| {
            let (s, r) = (store.clone(), reference.clone());
            tokio::spawn(async move { s.pull(&r).await })
        })
        .collect();
    for t in tasks {
        let i = t.await.expect("task").expect("concurrent pull");
        assert_eq!(i.rootfs, img.rootfs);
    }
    assert_busybox(&img);

    // The same registry, not listed as insecure: https to a plain-http server fails clearly.
    let strict = ImageStore::open(&work.path().join("strict"), vec![]).expect("open");
    let msg = pull_error(strict.ensure(&reference, PullPolicy::Always).await);
    assert!(msg.contains("https") && msg.contains("tls"), "{msg}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_docker_schema2_and_multi_platform_index() {
    let reg = Registry::start();
    let work = tempfile::tempdir().expect("tempdir");
    reg.push_as(
        &busybox_image(work.path(), "v1"),
        "busybox:docker",
        Some("v2s2"),
    );
    reg.push(&busybox_index_image(work.path(), "v1"), "busybox:multi");
    let store = ImageStore::open(&work.path().join("agent"), vec![reg.addr()]).expect("open");
    let docker = store
        .pull(&format!("{}/busybox:docker", reg.addr()))
        .await
        .expect("docker schema 2");
    assert_busybox(&docker);
    let multi = store
        .pull(&format!("{}/busybox:multi", reg.addr()))
        .await
        .expect("index");
    assert_busybox(&multi);
    // The id is the index's digest; the unpacked image is the same as the plain one's.
    assert_ne!(multi.id, docker.id);
    assert_eq!(multi.rootfs, docker.rootfs);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_over_https_trusted_through_certs_d() {
    let reg = Registry::start_tls();
    let work = tempfile::tempdir().expect("tempdir");
    reg.push(&busybox_image(work.path(), "v1"), "tools/busybox:v1");
    let reference = format!("{}/tools/busybox:v1", reg.addr());

    // Without the CA: the certificate is refused.
    let untrusting = ImageStore::open(&work.path().join("untrusting"), vec![]).expect("open");
    let msg = pull_error(untrusting.ensure(&reference, PullPolicy::Always).await);
    assert!(msg.contains("certificate"), "{msg}");

    let root = work.path().join("agent");
    reg.install_ca(&root);
    let store = ImageStore::open(&root, vec![]).expect("open");
    let img = store
        .ensure(&reference, PullPolicy::Always)
        .await
        .expect("https pull");
    assert_busybox(&img);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_images_need_no_registry() {
    let mut reg = Registry::start();
    let work = tempfile::tempdir().expect("tempdir");
    reg.push(&busybox_image(work.path(), "v1"), "busybox:v1");
    let reference = format!("{}/busybox:v1", reg.addr());
    let root = work.path().join("agent");
    let store = ImageStore::open(&root, vec![reg.addr()]).expect("open");
    let first = store
        .ensure(&reference, PullPolicy::IfNotPresent)
        .await
        .expect("pull");

    // Unknown tag: the registry's reason and the reference.
    let nope = format!("{}/busybox:nope", reg.addr());
    let msg = pull_error(store.ensure(&nope, PullPolicy::IfNotPresent).await);
    assert!(
        msg.contains("manifest unknown") && msg.contains(&nope),
        "{msg}"
    );

    reg.stop();
    drop(store);
    // A restarted agent: the index on disk still has the image.
    let store = ImageStore::open(&root, vec![reg.addr()]).expect("reopen");
    let started = Instant::now();
    let again = store
        .ensure(&reference, PullPolicy::IfNotPresent)
        .await
        .expect("cached");
    assert_eq!(again, first);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    let never = store
        .ensure(&reference, PullPolicy::Never)
        .await
        .expect("never, present");
    assert_eq!(never, first);

    // Always needs the registry.
    let msg = pull_error(store.ensure(&reference, PullPolicy::Always).await);
    assert!(
        msg.contains("connecting to") && msg.contains(&reg.addr()),
        "{msg}"
    );

    // Never with a missing image.
    let missing = format!("{}/busybox:v2", reg.addr());
    match store.ensure(&missing, PullPolicy::Never).await {
        Err(ImageError::NeverPull(m)) => assert!(m.contains(&missing), "{m}"),
        other => panic!("expected NeverPull, got {other:?}"),
    }
    match store.ensure("Not A/Name", PullPolicy::IfNotPresent).await {
        Err(ImageError::InvalidName(_)) => {}
        other => panic!("expected InvalidName, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_oci_and_docker_archives() {
    let work = tempfile::tempdir().expect("tempdir");
    let layout = busybox_image(work.path(), "v1");
    let oci = work.path().join("app-oci.tar");
    let docker = work.path().join("app-docker.tar");
    oci_archive(&layout, &oci, "example.com/app:v1");
    docker_archive(&layout, &docker, "example.com/app:v2");

    let store = ImageStore::open(&work.path().join("agent"), vec![]).expect("open");
    let refs = store.import(&oci).expect("import oci");
    assert_eq!(refs, ["example.com/app:v1"]);
    let refs = store.import(&docker).expect("import docker");
    assert_eq!(refs, ["example.com/app:v2"]);
    for r in ["example.com/app:v1", "example.com/app:v2"] {
        let img = store.get(r).unwrap_or_else(|| panic!("{r} not found"));
        assert_busybox(&img);
        let never = store.ensure(r, PullPolicy::Never).await.expect("local");
        assert_eq!(never, img);
    }
    assert!(store.get("example.com/app:v3").is_none());
    let err = store
        .import(&work.path().join("missing.tar"))
        .expect_err("missing archive");
    assert!(matches!(err, ImageError::Io(_)), "{err:?}");
}

/// A scripted registry for what `docker-registry` does not do: anonymous bearer tokens, blob
/// redirects, and lying about content. Serves the blobs of an OCI `layout` over plain HTTP:
/// every `/v2/` request needs `Bearer tok` (from `/token`); blobs redirect to `/cdn/`;
/// repository `evil` serves a corrupted layer, `liar` a wrong `Docker-Content-Digest`.
async fn scripted_registry(layout: &Path) -> (String, Arc<Mutex<Vec<String>>>) {
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).expect("index"))
            .expect("index json");
    let top = index["manifests"][0]["digest"]
        .as_str()
        .expect("digest")
        .to_string();
    let layout = layout.to_path_buf();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (addr2, seen2) = (addr.clone(), seen.clone());
    // Ends with the test's runtime.
    tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            let (layout, top, addr, seen) =
                (layout.clone(), top.clone(), addr2.clone(), seen2.clone());
            tokio::spawn(async move {
                let _ = serve_one(sock, &layout, &top, &addr, &seen).await;
            });
        }
    });
    (addr, seen)
}

async fn serve_one(
    sock: tokio::net::TcpStream,
    layout: &Path,
    top: &str,
    addr: &str,
    seen: &Mutex<Vec<String>>,
) -> std::io::Result<()> {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let mut sock = BufReader::new(sock);
    let mut line = String::new();
    sock.read_line(&mut line).await?;
    let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
    let mut authorized = false;
    loop {
        let mut h = String::new();
        if sock.read_line(&mut h).await? == 0 || h == "\r\n" {
            break;
        }
        authorized |= h.to_ascii_lowercase().trim() == "authorization: bearer tok";
    }
    seen.lock().expect("seen").push(path.clone());
    let blob = |digest: &str| {
        std::fs::read(
            layout
                .join("blobs/sha256")
                .join(digest.trim_start_matches("sha256:")),
        )
    };
    let (status, headers, body): (&str, Vec<String>, Vec<u8>) = if path.starts_with("/token?") {
        ("200 OK", vec![], br#"{"token":"tok"}"#.to_vec())
    } else if let Some(d) = path.strip_prefix("/cdn/") {
        match blob(d) {
            Ok(b) => ("200 OK", vec![], b),
            Err(_) => ("404 Not Found", vec![], vec![]),
        }
    } else if !authorized {
        let challenge = format!(
            "WWW-Authenticate: Bearer realm=\"http://{addr}/token\",service=\"scripted\",scope=\"repository:busybox:pull\""
        );
        (
            "401 Unauthorized",
            vec![challenge],
            br#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#.to_vec(),
        )
    } else {
        let parts: Vec<&str> = path.trim_start_matches("/v2/").split('/').collect();
        match parts.as_slice() {
            [repo, "manifests", _] => {
                let m = blob(top)?;
                let digest = if *repo == "liar" {
                    format!("sha256:{}", "0".repeat(64))
                } else {
                    top.to_string()
                };
                let h = vec![
                    "Content-Type: application/vnd.oci.image.manifest.v1+json".to_string(),
                    format!("Docker-Content-Digest: {digest}"),
                ];
                ("200 OK", h, m)
            }
            ["evil", "blobs", d] => {
                let mut b = blob(d)?;
                if let Some(last) = b.last_mut() {
                    *last ^= 0xff;
                }
                ("200 OK", vec![], b)
            }
            [_, "blobs", d] => (
                "307 Temporary Redirect",
                vec![format!("Location: /cdn/{d}")],
                vec![],
            ),
            _ => ("404 Not Found", vec![], vec![]),
        }
    };
    let mut head = format!(
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for h in headers {
        head.push_str(&h);
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    let sock = sock.get_mut();
    sock.write_all(head.as_bytes()).await?;
    sock.write_all(&body).await?;
    sock.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_tokens_redirects_and_digest_checks() {
    let work = tempfile::tempdir().expect("tempdir");
    let layout = busybox_image(work.path(), "v1");
    let (addr, seen) = scripted_registry(&layout).await;
    let open = |name: &str| ImageStore::open(&work.path().join(name), vec![addr.clone()]);

    let store = open("agent").expect("open");
    let img = store
        .pull(&format!("{addr}/busybox:v1"))
        .await
        .expect("pull with token and redirects");
    assert_busybox(&img);
    let seen = seen.lock().expect("seen").clone();
    assert!(
        seen.iter()
            .any(|p| p == "/token?service=scripted&scope=repository%3Abusybox%3Apull"),
        "{seen:?}"
    );
    assert!(seen.iter().any(|p| p.starts_with("/cdn/")), "{seen:?}");

    let msg = pull_error(
        open("evil")
            .expect("open")
            .pull(&format!("{addr}/evil:v1"))
            .await,
    );
    assert!(msg.contains("digest mismatch"), "{msg}");
    let msg = pull_error(
        open("liar")
            .expect("open")
            .pull(&format!("{addr}/liar:v1"))
            .await,
    );
    assert!(msg.contains("digest mismatch"), "{msg}");
    // A pinned digest the registry does not serve.
    let other = format!("{addr}/busybox@sha256:{}", "1".repeat(64));
    let msg = pull_error(open("pinned").expect("open").pull(&other).await);
    assert!(msg.contains("digest mismatch"), "{msg}");
}
