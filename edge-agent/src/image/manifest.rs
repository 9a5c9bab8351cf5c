//! OCI / Docker manifest, index and config documents: the few fields the store needs.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::reference::valid_digest;

pub(crate) const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub(crate) const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub(crate) const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub(crate) const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub(crate) const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
pub(crate) const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
pub(crate) const DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar";

/// The `Accept` header for manifest requests.
pub(crate) const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json";

/// Largest manifest or index accepted.
pub(crate) const MAX_MANIFEST: u64 = 4 << 20;
/// Largest image config accepted.
pub(crate) const MAX_CONFIG: u64 = 8 << 20;
/// Largest layer accepted (anything bigger is taken as a lie).
pub(crate) const MAX_LAYER: u64 = 64 << 30;

/// A content descriptor.
#[derive(Clone, Debug, Deserialize)]
pub(crate) struct Descriptor {
    #[serde(rename = "mediaType", default)]
    pub media_type: String,
    pub digest: String,
    pub size: i64,
    #[serde(default)]
    pub platform: Option<Platform>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
}

impl Descriptor {
    /// Check the digest's form and the size against `cap`; returns the size.
    pub(crate) fn checked(&self, cap: u64) -> Result<u64, String> {
        if !valid_digest(&self.digest) {
            return Err(format!("unsupported digest {:?}", self.digest));
        }
        match u64::try_from(self.size) {
            Ok(s) if s <= cap => Ok(s),
            _ => Err(format!(
                "blob {} has an absurd size {}",
                self.digest, self.size
            )),
        }
    }
}

/// An index entry's platform.
#[derive(Clone, Debug, Deserialize)]
pub(crate) struct Platform {
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
    #[serde(default)]
    pub variant: Option<String>,
}

/// A manifest or an index (one struct for both; `kind` tells which).
#[derive(Debug, Deserialize)]
pub(crate) struct Manifest {
    #[serde(rename = "schemaVersion", default)]
    pub schema_version: i64,
    #[serde(rename = "mediaType", default)]
    pub media_type: String,
    #[serde(default)]
    pub config: Option<Descriptor>,
    #[serde(default)]
    pub layers: Vec<Descriptor>,
    #[serde(default)]
    pub manifests: Vec<Descriptor>,
}

/// What a manifest document is.
pub(crate) enum Kind {
    /// An image manifest (config + layers).
    Image,
    /// An index / manifest list.
    Index,
}

impl Manifest {
    /// Parse a manifest; `content_type` (from HTTP) wins over the document's `mediaType`.
    pub(crate) fn parse(bytes: &[u8], content_type: Option<&str>) -> Result<(Self, Kind), String> {
        let m: Manifest =
            serde_json::from_slice(bytes).map_err(|e| format!("malformed manifest: {e}"))?;
        if m.schema_version == 1 {
            return Err("docker schema 1 manifests are not supported".into());
        }
        let mt = content_type
            .filter(|c| c.starts_with("application/vnd."))
            .unwrap_or(&m.media_type);
        let kind = match mt {
            OCI_INDEX | DOCKER_LIST => Kind::Index,
            OCI_MANIFEST | DOCKER_MANIFEST => Kind::Image,
            "" if m.config.is_some() => Kind::Image,
            "" if !m.manifests.is_empty() => Kind::Index,
            other => return Err(format!("unsupported manifest type {other:?}")),
        };
        if matches!(kind, Kind::Image) && m.config.is_none() {
            return Err("manifest has no config".into());
        }
        Ok((m, kind))
    }

    /// Pick this host's platform (linux/<arch>) from an index.
    pub(crate) fn pick_platform(&self) -> Result<&Descriptor, String> {
        let arch = host_arch();
        self.manifests
            .iter()
            .find(|d| {
                d.platform.as_ref().is_some_and(|p| {
                    p.os == "linux"
                        && p.architecture == arch
                        && (arch != "arm64" || p.variant.as_deref().is_none_or(|v| v == "v8"))
                })
            })
            .or_else(|| {
                // An index without platforms and a single image (some tools write these).
                match self.manifests.as_slice() {
                    [only] if only.platform.is_none() => Some(only),
                    _ => None,
                }
            })
            .ok_or_else(|| format!("no linux/{arch} image in the index"))
    }
}

/// This host's architecture in OCI terms.
pub(crate) fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

/// The parts of an image config the store reads.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct ConfigFile {
    #[serde(default)]
    pub config: Option<ContainerConfig>,
    #[serde(default)]
    pub rootfs: Option<RootFs>,
}

/// The container defaults in an image config.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct ContainerConfig {
    #[serde(default)]
    pub entrypoint: Option<Vec<String>>,
    #[serde(default)]
    pub cmd: Option<Vec<String>>,
    #[serde(default)]
    pub env: Option<Vec<String>>,
    #[serde(default)]
    pub working_dir: Option<String>,
    #[serde(default)]
    pub user: Option<String>,
}

/// `rootfs` of an image config.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct RootFs {
    #[serde(default)]
    pub diff_ids: Vec<String>,
}

impl ConfigFile {
    pub(crate) fn parse(bytes: &[u8]) -> Result<Self, String> {
        serde_json::from_slice(bytes).map_err(|e| format!("malformed image config: {e}"))
    }
}
