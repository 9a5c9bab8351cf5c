//! Image references: parsing and Docker-style normalisation
//! (`busybox` -> `docker.io/library/busybox:latest`).

use super::ImageError;

/// The Docker Hub's name in references.
const DOCKER_HUB: &str = "docker.io";
/// Where the Docker Hub's registry API answers.
const DOCKER_HUB_API: &str = "registry-1.docker.io";

/// A parsed image reference: `[REGISTRY/]REPOSITORY[:TAG][@DIGEST]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reference {
    /// Registry as named in references (`docker.io`, `127.0.0.1:5000`).
    pub registry: String,
    /// Repository path (`library/busybox`).
    pub repository: String,
    /// Tag as written; `None` when absent.
    pub tag: Option<String>,
    /// `sha256:<hex>` when pinned by digest.
    pub digest: Option<String>,
}

impl Reference {
    /// Parse and normalise a reference; errors are [`ImageError::InvalidName`].
    pub fn parse(s: &str) -> Result<Self, ImageError> {
        let invalid =
            |why: &str| ImageError::InvalidName(format!("invalid image name {s:?}: {why}"));
        if s.is_empty() {
            return Err(invalid("empty"));
        }
        if s.len() > 1024 {
            return Err(invalid("too long"));
        }
        let (rest, digest) = match s.split_once('@') {
            Some((r, d)) => {
                if !valid_digest(d) {
                    return Err(invalid("digest must be sha256:<64 hex digits>"));
                }
                (r, Some(d.to_string()))
            }
            None => (s, None),
        };
        let (name, tag) = match rest.rfind(':') {
            Some(i) if !rest[i..].contains('/') => (&rest[..i], Some(&rest[i + 1..])),
            _ => (rest, None),
        };
        if let Some(t) = tag {
            if !valid_tag(t) {
                return Err(invalid("bad tag"));
            }
        }
        let (registry, repository) = match name.split_once('/') {
            Some((first, remainder))
                if first.contains(['.', ':'])
                    || first == "localhost"
                    || first.chars().any(|c| c.is_ascii_uppercase()) =>
            {
                (first, remainder.to_string())
            }
            _ => (DOCKER_HUB, name.to_string()),
        };
        let registry = if registry == "index.docker.io" {
            DOCKER_HUB
        } else {
            registry
        };
        if !valid_registry(registry) {
            return Err(invalid("bad registry host"));
        }
        let repository = if registry == DOCKER_HUB && !repository.contains('/') {
            format!("library/{repository}")
        } else {
            repository
        };
        if repository.len() > 255 || !repository.split('/').all(valid_component) {
            return Err(invalid("repository must be lower-case path components"));
        }
        Ok(Reference {
            registry: registry.to_string(),
            repository,
            tag: tag.map(String::from),
            digest,
        })
    }

    /// `registry/repository`.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// The normalised reference: `registry/repository[:tag][@digest]`, with `:latest` when
    /// neither a tag nor a digest was given.
    pub fn normalized(&self) -> String {
        let mut s = self.name();
        match (&self.tag, &self.digest) {
            (Some(t), _) => {
                s.push(':');
                s.push_str(t);
            }
            (None, None) => s.push_str(":latest"),
            (None, Some(_)) => {}
        }
        if let Some(d) = &self.digest {
            s.push('@');
            s.push_str(d);
        }
        s
    }

    /// What to ask the registry for: the digest when pinned, else the tag (default `latest`).
    pub fn manifest_ref(&self) -> &str {
        self.digest
            .as_deref()
            .or(self.tag.as_deref())
            .unwrap_or("latest")
    }

    /// `host[:port]` of the registry's API.
    pub fn api_authority(&self) -> &str {
        if self.registry == DOCKER_HUB {
            DOCKER_HUB_API
        } else {
            &self.registry
        }
    }
}

/// `sha256:` and 64 lower-case hex digits (the only digest this store accepts).
pub fn valid_digest(d: &str) -> bool {
    d.strip_prefix("sha256:").is_some_and(|h| {
        h.len() == 64
            && h.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

fn valid_tag(t: &str) -> bool {
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    !t.is_empty()
        && t.len() <= 128
        && t.bytes().next().is_some_and(word)
        && t.bytes().all(|b| word(b) || b == b'.' || b == b'-')
}

/// `host[:port]`: DNS labels or an IPv4 address, or a bracketed IPv6 address.
fn valid_registry(r: &str) -> bool {
    if r.is_empty() || r.len() > 255 {
        return false;
    }
    let (host, port) = if let Some(rest) = r.strip_prefix('[') {
        let Some((v6, tail)) = rest.split_once(']') else {
            return false;
        };
        if v6.is_empty() || !v6.bytes().all(|b| b.is_ascii_hexdigit() || b == b':') {
            return false;
        }
        if tail.is_empty() {
            return true;
        }
        match tail.strip_prefix(':') {
            Some(p) => (None, Some(p)),
            None => return false,
        }
    } else {
        match r.split_once(':') {
            Some((h, p)) => (Some(h), Some(p)),
            None => (Some(r), None),
        }
    };
    let port_ok =
        port.is_none_or(|p| !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()));
    let host_ok = host.is_none_or(|h| {
        h.split('.').all(|l| {
            !l.is_empty()
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
    });
    port_ok && host_ok
}

/// One path component: `[a-z0-9]+` runs joined by `.`, `_`, `__` or dashes.
fn valid_component(c: &str) -> bool {
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let b = c.as_bytes();
    if !(b.first().is_some_and(|&x| alnum(x)) && b.last().is_some_and(|&x| alnum(x))) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if b.get(i).is_some_and(|&x| alnum(x)) {
            i += 1;
            continue;
        }
        let start = i;
        while b.get(i).is_some_and(|&x| !alnum(x)) {
            i += 1;
        }
        let sep = &c[start..i];
        if !(sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-')) {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn norm(s: &str) -> String {
        Reference::parse(s)
            .map(|r| r.normalized())
            .unwrap_or_else(|e| format!("ERR {e}"))
    }

    #[test]
    fn normalisation() {
        assert_eq!(norm("busybox"), "docker.io/library/busybox:latest");
        assert_eq!(norm("busybox:1.36"), "docker.io/library/busybox:1.36");
        assert_eq!(norm("library/busybox"), "docker.io/library/busybox:latest");
        assert_eq!(norm("user/app:v1"), "docker.io/user/app:v1");
        assert_eq!(
            norm("index.docker.io/user/app"),
            "docker.io/user/app:latest"
        );
        assert_eq!(
            norm("127.0.0.1:5000/busybox:v1"),
            "127.0.0.1:5000/busybox:v1"
        );
        assert_eq!(norm("localhost/a/b"), "localhost/a/b:latest");
        assert_eq!(norm("[::1]:5000/a"), "[::1]:5000/a:latest");
        assert_eq!(
            norm("quay.io/a/b-c_d.e__f:T-1.x"),
            "quay.io/a/b-c_d.e__f:T-1.x"
        );
        assert_eq!(
            norm(&format!("busybox@{D}")),
            format!("docker.io/library/busybox@{D}")
        );
        assert_eq!(
            norm(&format!("host:5000/x:v1@{D}")),
            format!("host:5000/x:v1@{D}")
        );
        let r = Reference::parse("127.0.0.1:5000/ns/app").unwrap();
        assert_eq!(r.registry, "127.0.0.1:5000");
        assert_eq!(r.repository, "ns/app");
        assert_eq!(r.tag, None);
        assert_eq!(r.manifest_ref(), "latest");
        assert_eq!(r.api_authority(), "127.0.0.1:5000");
        let hub = Reference::parse("busybox").unwrap();
        assert_eq!(hub.api_authority(), "registry-1.docker.io");
        let pinned = Reference::parse(&format!("busybox:v1@{D}")).unwrap();
        assert_eq!(pinned.manifest_ref(), D);
    }

    #[test]
    fn invalid_names() {
        for bad in [
            "",
            "Busybox",
            "busybox:",
            "busybox:-x",
            "busybox@sha256:abc",
            "busybox@md5:0123",
            "a//b",
            "a/-b",
            "a/b_",
            "host:5000/",
            "a b",
            "a/b:c:d",
            "../x",
            "a..b/x",
            "host:port/x",
            "host:/x",
            "-host.io/x",
            &format!("busybox@{}", D.to_uppercase()),
        ] {
            assert!(
                matches!(Reference::parse(bad), Err(ImageError::InvalidName(_))),
                "{bad:?} accepted"
            );
        }
    }
}
