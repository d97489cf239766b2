//! The session CA of `corral run`: minted at start, its key kept in the supervisor's
//! memory only; its certificate appended to the trust bundle the sandbox's tools are
//! pointed at, in a directory the sandbox can read but not write.
//!
//! It is minted for every session, not only when the policy asks for TLS termination:
//! a reloaded policy may add `tls: terminate`, and the tools' environment cannot change
//! after they start.

use std::ffi::OsString;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use corral_proxy::{CertAuthority, Intercept};
use sha2::Digest;

/// Variables naming a CA bundle, tool by tool. `NODE_EXTRA_CA_CERTS` is added to Node's
/// own roots, so it gets the CA alone.
const BUNDLE_VARS: &[&str] = &[
    "SSL_CERT_FILE",
    "CURL_CA_BUNDLE",
    "GIT_SSL_CAINFO",
    "REQUESTS_CA_BUNDLE",
    "PIP_CERT",
    "AWS_CA_BUNDLE",
    "DENO_CERT",
];
const NODE_VAR: &str = "NODE_EXTRA_CA_CERTS";
/// Where distributions keep the system bundle, first found wins.
const SYSTEM_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
];

pub struct SessionCa {
    intercept: Arc<Intercept>,
    dir: PathBuf,
    bundle: PathBuf,
    ca_file: PathBuf,
}

impl SessionCa {
    /// Mints the CA and writes the bundle. `upstream_ca`: extra roots the proxy trusts
    /// for the real servers (`--upstream-ca`).
    pub fn mint(upstream_ca: &[PathBuf]) -> anyhow::Result<SessionCa> {
        let ca = CertAuthority::mint("corral session CA").context("minting the session CA")?;
        let intercept = Arc::new(Intercept::new(Arc::new(ca), upstream_ca)?);
        remove_stale(&std::env::temp_dir());
        let pem = intercept.ca.cert_pem().to_string();
        let tag = hex::encode(&sha2::Sha256::digest(pem.as_bytes())[..6]);
        let dir = std::env::temp_dir().join(format!("corral-ca-{}-{tag}", std::process::id()));
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .with_context(|| format!("creating {}", dir.display()))?;
        let bundle = dir.join("bundle.pem");
        let ca_file = dir.join("ca.pem");
        let mut text = base_bundle();
        if !text.is_empty() && !text.ends_with('\n') {
            text.push('\n');
        }
        text.push_str(&pem);
        for (path, body) in [(&bundle, text.as_str()), (&ca_file, pem.as_str())] {
            std::fs::write(path, body).with_context(|| format!("writing {}", path.display()))?;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o444))?;
        }
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o555))?;
        Ok(SessionCa {
            intercept,
            dir,
            bundle,
            ca_file,
        })
    }

    /// What the proxy terminates TLS with.
    pub fn intercept(&self) -> Arc<Intercept> {
        self.intercept.clone()
    }

    /// The directory holding the bundle: the sandbox reads it and never writes it.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Adds the bundle's directory to the policy's `read_only` list when it has one
    /// (then nothing unlisted is readable).
    pub fn make_readable(&self, fs: &mut corral_policy::model::FilesystemPolicy) {
        if !fs.read_only.is_empty() {
            fs.read_only.push(self.dir.clone());
        }
    }

    /// Gives the session's proxy the CA, and binds the bundle's directory read-only in
    /// namespace mode.
    pub(crate) fn install(&self, setting: &mut crate::session::Setting) {
        setting.read_only.push(self.dir.clone());
        match Arc::get_mut(&mut setting.proxy) {
            Some(proxy) => proxy.intercept = Some(self.intercept()),
            // Unreachable (the configuration is not shared yet); without a CA, endpoints
            // that need termination are refused, never tunnelled blind.
            None => eprintln!("corral: warning: TLS termination is off for this session"),
        }
    }

    /// `env` with every bundle variable pointing at the session bundle.
    pub fn apply(&self, env: Vec<(OsString, OsString)>) -> Vec<(OsString, OsString)> {
        let mut env: Vec<_> = env
            .into_iter()
            .filter(|(k, _)| !BUNDLE_VARS.iter().any(|v| k == v) && k != NODE_VAR)
            .collect();
        for v in BUNDLE_VARS {
            env.push((v.into(), self.bundle.clone().into()));
        }
        env.push((NODE_VAR.into(), self.ca_file.clone().into()));
        env
    }
}

impl Drop for SessionCa {
    fn drop(&mut self) {
        let _ = std::fs::set_permissions(&self.dir, std::fs::Permissions::from_mode(0o700));
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Removes bundles of sessions whose supervisor is gone without its cleanup (it
/// re-raised the command's fatal signal, or was killed): ours only, by owner and pid.
fn remove_stale(tmp: &Path) {
    use std::os::unix::fs::MetadataExt;
    let Ok(entries) = std::fs::read_dir(tmp) else {
        return;
    };
    // The owner of /proc/self is this process's effective user.
    let Ok(me) = std::fs::metadata("/proc/self").map(|m| m.uid()) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix("corral-ca-")) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().filter(|p| !p.is_empty()) else {
            continue;
        };
        let path = e.path();
        let ours = std::fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir() && m.uid() == me);
        if ours && !Path::new("/proc").join(pid).exists() {
            let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o700));
            let _ = std::fs::remove_dir_all(&path);
        }
    }
}

/// The roots the tools trusted before: every distinct bundle the environment names, or
/// the system bundle when it names none.
fn base_bundle() -> String {
    let mut files: Vec<PathBuf> = Vec::new();
    for v in BUNDLE_VARS.iter().chain([&NODE_VAR]) {
        if let Some(p) = std::env::var_os(v).filter(|p| !p.is_empty()) {
            let p = PathBuf::from(p);
            if !files.contains(&p) {
                files.push(p);
            }
        }
    }
    if files.is_empty() {
        if let Some(p) = SYSTEM_BUNDLES.iter().map(Path::new).find(|p| p.is_file()) {
            files.push(p.to_path_buf());
        }
    }
    let mut out = String::new();
    for f in files {
        if let Ok(text) = std::fs::read_to_string(&f) {
            out.push_str(&text);
            if !out.ends_with('\n') {
                out.push('\n');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bundle_holds_the_ca_read_only_and_every_variable_points_at_it() {
        let ca = SessionCa::mint(&[]).unwrap();
        let text = std::fs::read_to_string(&ca.bundle).unwrap();
        assert!(text.ends_with(ca.intercept().ca.cert_pem()));
        assert!(std::fs::write(ca.dir().join("x"), b"x").is_err() || is_root());
        let env = ca.apply(vec![
            ("SSL_CERT_FILE".into(), "/elsewhere".into()),
            ("PATH".into(), "/usr/bin".into()),
        ]);
        for v in BUNDLE_VARS {
            let set: Vec<_> = env.iter().filter(|(k, _)| k == v).collect();
            assert_eq!(set.len(), 1, "{v}");
            assert_eq!(set[0].1, ca.bundle.as_os_str());
        }
        assert!(env
            .iter()
            .any(|(k, v)| k == NODE_VAR && v == ca.ca_file.as_os_str()));
        assert!(env.iter().any(|(k, _)| k == "PATH"));
        let dir = ca.dir().to_path_buf();
        drop(ca);
        assert!(!dir.exists());
    }

    fn is_root() -> bool {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
    }
}
