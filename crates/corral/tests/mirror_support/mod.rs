//! A release mirror started by a test: a directory in Claude Code's layout, filled with
//! `corral mirror add`, served by a real `corral mirror serve` (TLS with a test CA by default).
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use corral_testsupport::process::{corral_bin, free_port, output, Background};
use corral_testsupport::tls::TestCa;

/// The platform the installer will detect on this host.
pub fn host_platform() -> String {
    corral_mirror::release::host_platform().expect("supported host")
}

/// A small real executable standing in for Claude Code: prints its version.
pub fn payload(dir: &Path, version: &str) -> PathBuf {
    let path = dir.join(format!("claude-{version}"));
    std::fs::write(
        &path,
        format!("#!/bin/sh\necho \"claude stand-in {version}\"\n"),
    )
    .unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// Runs `corral ARGS…` to completion, asserting success; returns stdout.
pub fn corral_ok(args: &[&str]) -> String {
    let out = output(Command::new(corral_bin()).args(args));
    assert!(
        out.status.success(),
        "corral {args:?} failed\n--- stdout ---\n{}\n--- stderr ---\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Options for [`Mirror::start`].
#[derive(Default)]
pub struct MirrorOptions {
    pub plain_http: bool,
    pub redirect: bool,
    pub link_ttl: Option<u64>,
}

/// A served mirror.
pub struct Mirror {
    pub dir: tempfile::TempDir,
    pub ca: TestCa,
    pub url: String,
    pub addr: SocketAddr,
    pub storage_url: Option<String>,
    pub key_path: PathBuf,
    pub access_log: PathBuf,
    pub gateway: String,
    server: Option<Background>,
    options: MirrorOptions,
}

impl Mirror {
    /// A mirror directory with claude `versions` (stable → the last one) and corral itself.
    pub fn with_versions(versions: &[&str], options: MirrorOptions) -> Mirror {
        let dir = corral_testsupport::fs::world_readable_tempdir();
        let root = dir.path().join("mirror");
        let payloads = dir.path().join("payloads");
        std::fs::create_dir_all(&payloads).unwrap();
        let platform = host_platform();
        for version in versions {
            let file = payload(&payloads, version);
            corral_ok(&[
                "mirror",
                "add",
                root.to_str().unwrap(),
                "--version",
                version,
                "--platform",
                &platform,
                file.to_str().unwrap(),
            ]);
        }
        if let Some(last) = versions.last() {
            corral_ok(&[
                "mirror",
                "set-channel",
                root.to_str().unwrap(),
                "stable",
                last,
            ]);
            corral_ok(&[
                "mirror",
                "set-channel",
                root.to_str().unwrap(),
                "latest",
                last,
            ]);
        }
        corral_ok(&[
            "mirror",
            "add-self",
            root.to_str().unwrap(),
            corral_bin().to_str().unwrap(),
        ]);
        let key_path = dir.path().join("signing.key");
        std::fs::write(&key_path, b"0123456789abcdef0123456789abcdef").unwrap();
        let access_log = dir.path().join("access.log");
        Mirror {
            dir,
            ca: TestCa::new(),
            url: String::new(),
            addr: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0),
            storage_url: None,
            key_path,
            access_log,
            gateway: "https://gateway.test:8443/bedrock".into(),
            server: None,
            options,
        }
        .started()
    }

    fn started(mut self) -> Mirror {
        let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let port = free_port(ip);
        self.addr = SocketAddr::new(ip, port);
        let scheme = if self.options.plain_http {
            "http"
        } else {
            "https"
        };
        self.url = format!("{scheme}://127.0.0.1:{port}");
        let mut cmd = Command::new(corral_bin());
        cmd.args(["mirror", "serve"])
            .arg(self.root())
            .args(["--listen", &self.addr.to_string()])
            .arg("--access-log")
            .arg(&self.access_log)
            .args(["--gateway", &self.gateway, "--region", "eu-central-1"])
            .args(["--model", "test-model-1"]);
        if !self.options.plain_http {
            let leaf = self.ca.leaf(&["127.0.0.1", "localhost"]);
            cmd.arg("--tls-cert").arg(&leaf.cert_path);
            cmd.arg("--tls-key").arg(&leaf.key_path);
        }
        let mut storage_addr = None;
        if self.options.redirect {
            let sport = free_port(ip);
            let addr = SocketAddr::new(ip, sport);
            let storage_url = format!("{scheme}://localhost:{sport}");
            cmd.args(["--storage-listen", &addr.to_string()])
                .args(["--storage-url", &storage_url])
                .arg("--signing-key")
                .arg(&self.key_path);
            if let Some(ttl) = self.options.link_ttl {
                cmd.args(["--link-ttl", &ttl.to_string()]);
            }
            self.storage_url = Some(storage_url);
            storage_addr = Some(addr);
        }
        let mut server = Background::spawn("corral mirror serve", cmd);
        server.wait_for_port(self.addr, Duration::from_secs(20));
        if let Some(addr) = storage_addr {
            server.wait_for_port(addr, Duration::from_secs(20));
        }
        self.server = Some(server);
        self
    }

    pub fn root(&self) -> PathBuf {
        self.dir.path().join("mirror")
    }

    pub fn ca_path(&self) -> &Path {
        self.ca.ca_path()
    }

    /// Publishes another version and points stable at it.
    pub fn publish(&self, version: &str) {
        let file = payload(&self.dir.path().join("payloads"), version);
        let root = self.root();
        corral_ok(&[
            "mirror",
            "add",
            root.to_str().unwrap(),
            "--version",
            version,
            "--platform",
            &host_platform(),
            file.to_str().unwrap(),
        ]);
        corral_ok(&[
            "mirror",
            "set-channel",
            root.to_str().unwrap(),
            "stable",
            version,
        ]);
    }

    /// Publishes `file` as `version` and points stable at it.
    pub fn publish_file(&self, version: &str, file: &Path) {
        let root = self.root();
        corral_ok(&[
            "mirror",
            "add",
            root.to_str().unwrap(),
            "--version",
            version,
            "--platform",
            &host_platform(),
            file.to_str().unwrap(),
        ]);
        corral_ok(&[
            "mirror",
            "set-channel",
            root.to_str().unwrap(),
            "stable",
            version,
        ]);
    }

    pub fn binary_path(&self, version: &str) -> PathBuf {
        self.root()
            .join(version)
            .join(host_platform())
            .join("claude")
    }

    /// Access-log lines written so far, parsed.
    pub fn access_log(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.access_log)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("access-log lines are JSON"))
            .collect()
    }

    pub fn server_stderr(&self) -> String {
        self.server.as_ref().map(|s| s.stderr()).unwrap_or_default()
    }
}

/// Every file and symlink under `dir`: path → (kind, mode, content or link target).
pub fn snapshot(dir: &Path) -> BTreeMap<PathBuf, (String, u32, Vec<u8>)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            let rel = path.strip_prefix(dir).unwrap().to_path_buf();
            let mode = meta.mode() & 0o7777;
            if meta.file_type().is_symlink() {
                let target = std::fs::read_link(&path).unwrap();
                out.insert(
                    rel,
                    (
                        "link".into(),
                        0,
                        target.into_os_string().into_encoded_bytes(),
                    ),
                );
            } else if meta.is_dir() {
                out.insert(rel, ("dir".into(), mode, Vec::new()));
                stack.push(path);
            } else {
                out.insert(rel, ("file".into(), mode, std::fs::read(&path).unwrap()));
            }
        }
    }
    out
}
