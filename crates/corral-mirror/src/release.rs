//! The release layout shared by the mirror and the installer.
//!
//! This module is deliberately small and free of server code: `corral install` depends on it
//! for the manifest type, the platform names and the checksum helpers, and nothing else.
//!
//! ```text
//! BASE/latest                         plain-text version
//! BASE/stable                         plain-text version
//! BASE/{version}/manifest.json        {version, commit, buildDate, platforms: {P: {binary, checksum, size}}}
//! BASE/{version}/{platform}/claude    the binary
//! BASE/corral/latest                  corral's own releases, same layout, binary `corral`,
//! BASE/corral/{version}/{platform}/corral.sha256   plus a `sha256sum`-style checksum file
//! ```

use std::io::Read;
use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Every platform key Claude Code's release layout knows.
pub const PLATFORMS: &[&str] = &[
    "linux-x64",
    "linux-arm64",
    "linux-x64-musl",
    "linux-arm64-musl",
    "darwin-x64",
    "darwin-arm64",
    "win32-x64",
    "win32-arm64",
];

/// The channels a mirror publishes as plain-text version pointers.
pub const CHANNELS: &[&str] = &["stable", "latest"];

/// The directory (under the mirror root) holding corral's own releases.
pub const SELF_DIR: &str = "corral";

/// `{version}/manifest.json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub version: String,
    #[serde(default)]
    pub commit: String,
    #[serde(rename = "buildDate", default)]
    pub build_date: String,
    pub platforms: serde_json::Map<String, serde_json::Value>,
}

/// One platform's entry in a manifest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlatformEntry {
    pub binary: String,
    /// SHA-256, lowercase hex.
    pub checksum: String,
    pub size: u64,
}

impl Manifest {
    /// An empty manifest for `version`.
    pub fn new(version: &str) -> Manifest {
        Manifest {
            version: version.to_string(),
            commit: String::new(),
            build_date: String::new(),
            platforms: serde_json::Map::new(),
        }
    }

    /// Parses and validates a manifest (platform names, checksums, binary names).
    pub fn parse(bytes: &[u8]) -> Result<Manifest, String> {
        let manifest: Manifest =
            serde_json::from_slice(bytes).map_err(|e| format!("not a valid manifest: {e}"))?;
        validate_version(&manifest.version)?;
        for (platform, _) in manifest.platforms.iter() {
            validate_platform(platform)?;
            manifest.platform(platform)?;
        }
        Ok(manifest)
    }

    /// The entry for `platform`, validated.
    pub fn platform(&self, platform: &str) -> Result<PlatformEntry, String> {
        let value = self.platforms.get(platform).ok_or_else(|| {
            let known: Vec<&str> = self.platforms.keys().map(String::as_str).collect();
            format!(
                "release {} has no build for platform {platform} (it has: {})",
                self.version,
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            )
        })?;
        let entry: PlatformEntry = serde_json::from_value(value.clone())
            .map_err(|e| format!("manifest entry for {platform} is invalid: {e}"))?;
        validate_binary_name(&entry.binary)?;
        if entry.checksum.len() != 64
            || !entry
                .checksum
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(format!(
                "manifest entry for {platform} has checksum {:?}, which is not 64 lowercase hex digits",
                entry.checksum
            ));
        }
        Ok(entry)
    }

    /// Pretty JSON with a trailing newline, the form written to disk.
    pub fn to_pretty(&self) -> Vec<u8> {
        let mut out = serde_json::to_vec_pretty(self).expect("manifest serialises");
        out.push(b'\n');
        out
    }
}

/// A version is a path component: letters, digits, `.`, `-`, `+`, `_`; not `.`/`..`.
pub fn validate_version(version: &str) -> Result<(), String> {
    let ok = !version.is_empty()
        && version.len() <= 64
        && version
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric())
        && version
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'+' | b'_'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{version:?} is not a valid version (letters, digits, '.', '-', '+', '_'; starting with a letter or digit)"
        ))
    }
}

/// A platform must be one of [`PLATFORMS`].
pub fn validate_platform(platform: &str) -> Result<(), String> {
    if PLATFORMS.contains(&platform) {
        Ok(())
    } else {
        Err(format!(
            "{platform:?} is not a known platform (one of: {})",
            PLATFORMS.join(", ")
        ))
    }
}

/// A binary name is a single plain file name.
pub fn validate_binary_name(name: &str) -> Result<(), String> {
    validate_version(name).map_err(|_| format!("{name:?} is not a valid binary file name"))
}

/// The trimmed text of a channel file, validated as a version.
pub fn parse_channel(text: &str) -> Result<String, String> {
    let version = text.trim();
    validate_version(version)?;
    Ok(version.to_string())
}

/// The release platform of this host: architecture, and musl vs glibc on Linux.
pub fn host_platform() -> Result<String, String> {
    let os = match std::env::consts::OS {
        "linux" => "linux",
        "macos" => "darwin",
        "windows" => "win32",
        other => return Err(format!("no releases exist for operating system {other}")),
    };
    let arch = match std::env::consts::ARCH {
        "x86_64" => "x64",
        "aarch64" => "arm64",
        other => return Err(format!("no releases exist for CPU architecture {other}")),
    };
    let musl = os == "linux" && host_is_musl();
    Ok(format!("{os}-{arch}{}", if musl { "-musl" } else { "" }))
}

/// The platform corral itself was built for.
pub fn build_platform() -> Result<String, String> {
    let host = host_platform()?;
    let base = host.trim_end_matches("-musl");
    Ok(if cfg!(target_env = "musl") {
        format!("{base}-musl")
    } else {
        base.to_string()
    })
}

/// musl hosts have a musl dynamic loader and no glibc one (Alpine and friends).
fn host_is_musl() -> bool {
    let musl_loader = ["/lib/ld-musl-x86_64.so.1", "/lib/ld-musl-aarch64.so.1"]
        .iter()
        .any(|p| Path::new(p).exists());
    let glibc_loader = [
        "/lib64/ld-linux-x86-64.so.2",
        "/lib/ld-linux-aarch64.so.1",
        "/lib/x86_64-linux-gnu/libc.so.6",
        "/lib/aarch64-linux-gnu/libc.so.6",
        "/usr/lib64/libc.so.6",
    ]
    .iter()
    .any(|p| Path::new(p).exists());
    musl_loader && !glibc_loader
}

/// Incremental SHA-256 + byte count.
#[derive(Default, Clone)]
pub struct Digester {
    hasher: Sha256,
    len: u64,
}

impl Digester {
    pub fn update(&mut self, bytes: &[u8]) {
        self.hasher.update(bytes);
        self.len += bytes.len() as u64;
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Lowercase hex SHA-256.
    pub fn finish(self) -> String {
        hex::encode(self.hasher.finalize())
    }
}

/// SHA-256 (hex) and size of a file.
pub fn digest_file(path: &Path) -> std::io::Result<(String, u64)> {
    let mut file = std::fs::File::open(path)?;
    let mut digester = Digester::default();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        digester.update(&buf[..n]);
    }
    let len = digester.len();
    Ok((digester.finish(), len))
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// Untrusted manifest bytes: parse never panics, and what it accepts has valid names.
        #[test]
        fn manifest_parse_is_total(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..300)) {
            if let Ok(m) = Manifest::parse(&bytes) {
                proptest::prop_assert!(validate_version(&m.version).is_ok());
            }
        }
    }

    #[test]
    fn versions_cannot_escape_the_directory() {
        for bad in ["", ".", "..", "../x", "a/b", ".hidden", "1.0\n", "x y"] {
            assert!(validate_version(bad).is_err(), "{bad:?}");
        }
        for good in ["2.1.3", "1.0.0-rc.1+build_5", "latest2"] {
            assert!(validate_version(good).is_ok(), "{good:?}");
        }
    }

    #[test]
    fn manifest_round_trips_and_rejects_bad_checksums() {
        let text = br#"{"version":"1.2.3","commit":"abc","buildDate":"2026-01-01T00:00:00Z",
            "platforms":{"linux-x64":{"binary":"claude","checksum":"00000000000000000000000000000000000000000000000000000000000000ff","size":3}}}"#;
        let m = Manifest::parse(text).unwrap();
        assert_eq!(m.platform("linux-x64").unwrap().size, 3);
        assert!(m.platform("linux-arm64").unwrap_err().contains("linux-x64"));
        let bad = String::from_utf8_lossy(text).replace("00ff", "00FF");
        assert!(Manifest::parse(bad.as_bytes()).is_err());
        let bad = String::from_utf8_lossy(text).replace("linux-x64", "linux-x65");
        assert!(Manifest::parse(bad.as_bytes()).is_err());
    }
}
