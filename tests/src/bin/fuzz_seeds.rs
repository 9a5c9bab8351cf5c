//! Seed inputs for the fuzz targets, made with the real encoders so they stay valid as the
//! formats evolve: `fuzz_seeds DIR` writes `DIR/<target>/seed-N` for every target
//! (`deploy/fuzz.sh` runs it before fuzzing).

use std::io::Write;
use std::path::Path;

use prost::Message;
use proto::sync::{frame::Body, Change, ChangeKind, Down, Frame, Hello, ObjectKey, Refusal, Up};
use serde_json::json;
use sha2::Digest;

fn put(dir: &Path, target: &str, seeds: Vec<Vec<u8>>) -> anyhow::Result<()> {
    let d = dir.join(target);
    std::fs::create_dir_all(&d)?;
    for (i, s) in seeds.into_iter().enumerate() {
        std::fs::write(d.join(format!("seed-{i}")), s)?;
    }
    Ok(())
}

fn key(resource: &str, tenant: &str, ns: &str, name: &str) -> ObjectKey {
    ObjectKey {
        resource: resource.into(),
        tenant: tenant.into(),
        namespace: ns.into(),
        name: name.into(),
    }
}

fn tar_of(entries: &[(&str, tar::EntryType, &[u8], &str)]) -> anyhow::Result<Vec<u8>> {
    let mut b = tar::Builder::new(Vec::new());
    for (path, kind, data, link) in entries {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(*kind);
        h.set_mode(0o755);
        h.set_size(data.len() as u64);
        h.set_mtime(1_700_000_000);
        if link.is_empty() {
            b.append_data(&mut h, path, *data)?;
        } else {
            b.append_link(&mut h, path, link)?;
        }
    }
    Ok(b.into_inner()?)
}

fn gzip(data: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(data)?;
    Ok(gz.finish()?)
}

fn digest(data: &[u8]) -> String {
    let d = sha2::Sha256::digest(data);
    format!(
        "sha256:{}",
        d.iter().map(|b| format!("{b:02x}")).collect::<String>()
    )
}

fn main() -> anyhow::Result<()> {
    let dir = std::env::args()
        .nth(1)
        .ok_or_else(|| anyhow::anyhow!("usage: fuzz_seeds DIR"))?;
    let dir = Path::new(&dir);
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "labels": {"a": "b"}},
        "spec": {"containers": [{"name": "c", "image": "busybox", "resources": {"limits": {"cpu": 1}}}]}});
    let pod_json = serde_json::to_vec(&pod)?;
    let pod_yaml = serde_yaml_ng::to_string(&pod)?.into_bytes();
    let with = |sel: u8, body: &[u8]| [&[sel][..], body].concat();
    put(
        dir,
        "api_body",
        vec![
            with(0, &pod_json),
            with(16, &pod_yaml),
            with(1, br#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"c"},"data":{"k":"v"}}"#),
            with(7 + 48, br#"{"metadata":{"labels":{"x":"y"}}}"#),
            with(7 + 64, br#"[{"op":"add","path":"/metadata/labels/x","value":"y"}]"#),
            with(9, br#"{"apiVersion":"policy/v1","kind":"Eviction","metadata":{"name":"p0"},"deleteOptions":{"gracePeriodSeconds":0}}"#),
            with(10, br#"{"kind":"DeleteOptions","apiVersion":"v1","propagationPolicy":"Foreground","preconditions":{"uid":"x"}}"#),
        ],
    )?;
    put(
        dir,
        "patch",
        vec![
            br#"{"metadata":{"labels":{"a":null,"c":"d"}}}"#.to_vec(),
            br#"[{"op":"replace","path":"/spec/containers/0/image","value":"x"},{"op":"remove","path":"/metadata/labels"}]"#.to_vec(),
            br#"{"spec":{"containers":[{"name":"c","$patch":"delete"}],"$setElementOrder/containers":[{"name":"c"}]}}"#.to_vec(),
            br#"{"spec":{"tolerations":[{"key":"k","$patch":"replace"}]}}"#.to_vec(),
        ],
    )?;
    put(
        dir,
        "selectors",
        vec![
            b"a=b,c in (d,e),!f,g notin (h),i!=j".to_vec(),
            b"spec.nodeName=n1,metadata.name!=x,status.phase=Running".to_vec(),
            b"watch=1&labelSelector=a%3Db&follow=true&tailLines=3&sinceSeconds=5&limitBytes=9"
                .to_vec(),
        ],
    )?;
    let framed = |f: Frame| -> anyhow::Result<Vec<u8>> {
        let b = f.encode_framed()?;
        Ok(b[4..].to_vec())
    };
    let up = Up {
        seq: 4,
        kind: ChangeKind::Put as i32,
        key: Some(key("pods", "", "default", "p")),
        object: pod_json.clone(),
        base: Vec::new(),
    };
    put(
        dir,
        "sync_frame",
        vec![
            framed(Frame::new(Body::Hello(Hello {
                protocol: proto::sync::PROTOCOL,
                site: "s1".into(),
                applied_rv: 5,
            })))?,
            framed(Frame::new(Body::Up(up.clone())))?,
            framed(Frame::new(Body::Down(Down {
                rv: 6,
                prev_rv: 5,
                changes: vec![Change {
                    kind: ChangeKind::Delete as i32,
                    key: Some(key("configmaps", "t", "ns", "c")),
                    object: br#"{"metadata":{"uid":"u"}}"#.to_vec(),
                }],
            })))?,
            framed(Frame::new(Body::UpAck(proto::sync::UpAck {
                seq: 4,
                refused: vec![Refusal {
                    seq: 4,
                    key: Some(key("pods", "", "default", "p")),
                    reason: "no".into(),
                    object: Vec::new(),
                    absent: true,
                }],
            })))?,
        ],
    )?;
    let node = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1", "labels": {"zone": "a"}},
        "spec": {"unschedulable": true}, "status": {"phase": "Running"}});
    let mut uplinks = vec![up.encode_to_vec()];
    for (kind, k, o) in [
        (
            ChangeKind::Put,
            key("nodes", "", "", "n1"),
            serde_json::to_vec(&node)?,
        ),
        (
            ChangeKind::Status,
            key("pods", "", "default", "p0"),
            br#"{"status":{"phase":"Running"}}"#.to_vec(),
        ),
        (
            ChangeKind::Bind,
            key("pods", "", "default", "p0"),
            br#"{"spec":{"nodeName":"n1"}}"#.to_vec(),
        ),
        (
            ChangeKind::Delete,
            key("pods", "", "default", "p0"),
            Vec::new(),
        ),
        (
            ChangeKind::Summary,
            key("edgesites.edge.atoll.io", "", "", "s1"),
            br#"{"classes":[],"nodes":1,"ready":1}"#.to_vec(),
        ),
        (
            ChangeKind::Put,
            key("tenants", "", "", "evil"),
            br#"{"metadata":{"name":"evil"}}"#.to_vec(),
        ),
    ] {
        uplinks.push(
            Up {
                seq: 1,
                kind: kind as i32,
                key: Some(k),
                object: o,
                base: serde_json::to_vec(&node)?,
            }
            .encode_to_vec(),
        );
    }
    uplinks.push(with(0, &pod_json));
    put(dir, "uplink", uplinks)?;
    let layer = tar_of(&[
        ("bin/", tar::EntryType::Directory, b"", ""),
        ("bin/tool", tar::EntryType::Regular, b"#!/bin/sh\n", ""),
        ("bin/ln", tar::EntryType::Symlink, b"", "tool"),
        ("bin/hard", tar::EntryType::Link, b"", "bin/tool"),
        ("etc/.wh.gone", tar::EntryType::Regular, b"", ""),
        ("etc/.wh..wh..opq", tar::EntryType::Regular, b"", ""),
        ("up", tar::EntryType::Symlink, b"", "../../.."),
        ("abs", tar::EntryType::Symlink, b"", "/etc"),
    ])?;
    let small = tar_of(&[("hello", tar::EntryType::Regular, b"hi\n", "")])?;
    put(dir, "layer_unpack", vec![layer.clone(), gzip(&layer)?])?;
    // A tiny OCI archive and docker archive of one small layer.
    let layer_gz = gzip(&small)?;
    let config = serde_json::to_vec(&json!({"architecture": "amd64", "os": "linux",
        "config": {"Cmd": ["sh"]}, "rootfs": {"type": "layers", "diff_ids": [digest(&small)]}}))?;
    let manifest = serde_json::to_vec(
        &json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": digest(&config), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": digest(&layer_gz), "size": layer_gz.len()}]}),
    )?;
    let index = serde_json::to_vec(
        &json!({"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": digest(&manifest), "size": manifest.len(), "annotations": {"org.opencontainers.image.ref.name": "v1"}}]}),
    )?;
    let blob = |d: &[u8]| format!("blobs/sha256/{}", digest(d).trim_start_matches("sha256:"));
    let (lb, cb, mb) = (blob(&layer_gz), blob(&config), blob(&manifest));
    let oci = tar_of(&[
        (
            "oci-layout",
            tar::EntryType::Regular,
            br#"{"imageLayoutVersion":"1.0.0"}"#,
            "",
        ),
        ("index.json", tar::EntryType::Regular, &index, ""),
        (&lb, tar::EntryType::Regular, &layer_gz, ""),
        (&cb, tar::EntryType::Regular, &config, ""),
        (&mb, tar::EntryType::Regular, &manifest, ""),
    ])?;
    let docker_manifest = serde_json::to_vec(
        &json!([{"Config": "config.json", "RepoTags": ["example.com/app:v1"], "Layers": ["layer.tar"]}]),
    )?;
    let docker = tar_of(&[
        (
            "manifest.json",
            tar::EntryType::Regular,
            &docker_manifest,
            "",
        ),
        ("config.json", tar::EntryType::Regular, &config, ""),
        ("layer.tar", tar::EntryType::Regular, &small, ""),
    ])?;
    put(dir, "image_archive", vec![oci, docker])?;
    put(
        dir,
        "oci_manifest",
        vec![
            manifest,
            index,
            config,
            b"example.com:5000/ns/app:v1@sha256:0123".to_vec(),
        ],
    )?;
    put(
        dir,
        "cri_log",
        vec![
            b"2026-11-28T17:00:00.000000001Z stdout F hello\n2026-11-28T17:00:01Z stderr P part\n2026-11-28T17:00:02Z stderr F end\n".to_vec(),
        ],
    )?;
    Ok(())
}
