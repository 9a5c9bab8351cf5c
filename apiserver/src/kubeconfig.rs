//! Kubeconfig files: read with the `kube` crate's parser (the files kubectl reads), written with
//! one cluster, one user (a bearer token) and one context. Talking to a server is the `kube`
//! crate's job too (`kube::Client`); nothing here opens a connection.

use base64::Engine;
use secrecy::ExposeSecret;

/// A kubeconfig that could not be used.
#[derive(Debug, thiserror::Error)]
#[error("kubeconfig {path}: {why}")]
pub struct KubeconfigError {
    path: String,
    why: String,
}

/// What Atoll reads from, and writes into, a kubeconfig.
#[derive(Clone, Debug)]
pub struct Kubeconfig {
    /// `https://host:port`.
    pub server: String,
    /// CA bundle (PEM).
    pub ca_pem: Vec<u8>,
    /// Bearer token.
    pub token: String,
}

impl Kubeconfig {
    /// The current context of the kubeconfig at `path`: its server, CA and token.
    pub fn load(path: &std::path::Path) -> Result<Self, KubeconfigError> {
        let err = |why: String| KubeconfigError {
            path: path.display().to_string(),
            why,
        };
        let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
        let kc = kube::config::Kubeconfig::from_yaml(&text).map_err(|e| err(e.to_string()))?;
        let current = kc.current_context.clone().unwrap_or_default();
        let ctx = kc
            .contexts
            .iter()
            .find(|c| c.name == current)
            .and_then(|c| c.context.as_ref())
            .ok_or_else(|| err(format!("no context {current:?}")))?;
        let cluster = kc
            .clusters
            .iter()
            .find(|c| c.name == ctx.cluster)
            .and_then(|c| c.cluster.as_ref())
            .ok_or_else(|| err(format!("no cluster {:?}", ctx.cluster)))?;
        let user = kc
            .auth_infos
            .iter()
            .find(|a| Some(&a.name) == ctx.user.as_ref())
            .and_then(|a| a.auth_info.as_ref())
            .ok_or_else(|| err("no user for the current context".into()))?;
        let server = cluster
            .server
            .clone()
            .ok_or_else(|| err("no server".into()))?;
        let ca = cluster
            .certificate_authority_data
            .as_deref()
            .ok_or_else(|| err("no certificate-authority-data".into()))?;
        let ca_pem = base64::engine::general_purpose::STANDARD
            .decode(ca)
            .map_err(|_| err("certificate-authority-data is not base64".into()))?;
        let token = user
            .token
            .as_ref()
            .map(|t| t.expose_secret().to_string())
            .ok_or_else(|| err("no user token".into()))?;
        Ok(Kubeconfig {
            server,
            ca_pem,
            token,
        })
    }

    /// Render a kubeconfig with one cluster, user and context.
    pub fn render(&self, cluster: &str, user: &str) -> String {
        let ca = base64::engine::general_purpose::STANDARD.encode(&self.ca_pem);
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: {cluster}\n  cluster:\n    server: {server}\n    certificate-authority-data: {ca}\nusers:\n- name: {user}\n  user:\n    token: {token}\ncontexts:\n- name: {user}@{cluster}\n  context:\n    cluster: {cluster}\n    user: {user}\ncurrent-context: {user}@{cluster}\n",
            server = self.server,
            token = self.token,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_is_rendered_loads_back_and_bad_files_say_why() {
        let dir = tempfile::tempdir().expect("dir");
        let kc = Kubeconfig {
            server: "https://127.0.0.1:6443".into(),
            ca_pem: b"-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n".to_vec(),
            token: "t0ken".into(),
        };
        let p = dir.path().join("kc");
        std::fs::write(&p, kc.render("atoll", "admin")).expect("write");
        let back = Kubeconfig::load(&p).expect("load");
        assert_eq!(
            (back.server, back.ca_pem, back.token),
            (kc.server, kc.ca_pem, kc.token)
        );
        std::fs::write(&p, "apiVersion: v1\nkind: Config\ncurrent-context: x\n").expect("write");
        let e = Kubeconfig::load(&p).expect_err("no context");
        assert!(e.to_string().contains("no context \"x\""), "{e}");
        assert!(Kubeconfig::load(&dir.path().join("absent")).is_err());
    }
}
