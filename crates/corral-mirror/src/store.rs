//! The mirror directory on disk: adding releases, moving channels, re-verifying.
//!
//! Every change is a write to a temporary file in the same directory followed by a rename,
//! under an exclusive lock on `DIR/.corral-mirror.lock`, so a reader (the server, `verify`,
//! a concurrent `add`) sees either the old state or the new one, never half of either.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

use crate::release::{
    self, digest_file, validate_binary_name, validate_platform, validate_version, Manifest,
    PlatformEntry,
};

/// A release tree: the mirror root for Claude Code, or `ROOT/corral` for corral itself.
#[derive(Clone, Debug)]
pub struct Store {
    root: PathBuf,
}

/// What `add` placed.
#[derive(Debug)]
pub struct Added {
    pub path: PathBuf,
    pub entry: PlatformEntry,
}

/// Held while the tree is being changed.
pub struct Lock(#[allow(dead_code)] File);

impl Store {
    pub fn new(root: impl Into<PathBuf>) -> Store {
        Store { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Takes the tree's exclusive lock (blocking until other writers are done).
    pub fn lock(&self) -> anyhow::Result<Lock> {
        std::fs::create_dir_all(&self.root)
            .with_context(|| format!("cannot create mirror directory {}", self.root.display()))?;
        let path = self.root.join(".corral-mirror.lock");
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .with_context(|| format!("cannot open lock file {}", path.display()))?;
        rustix::fs::flock(&file, rustix::fs::FlockOperation::LockExclusive)
            .map_err(std::io::Error::from)
            .with_context(|| format!("cannot lock {}", path.display()))?;
        Ok(Lock(file))
    }

    pub fn manifest_path(&self, version: &str) -> PathBuf {
        self.root.join(version).join("manifest.json")
    }

    /// Reads `{version}/manifest.json`, if present.
    pub fn manifest(&self, version: &str) -> anyhow::Result<Option<Manifest>> {
        let path = self.manifest_path(version);
        match std::fs::read(&path) {
            Ok(bytes) => Manifest::parse(&bytes)
                .map(Some)
                .map_err(|e| anyhow::anyhow!("{}: {e}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
        }
    }

    /// Copies `file` into `{version}/{platform}/{binary}` and records it in the manifest.
    pub fn add(
        &self,
        version: &str,
        platform: &str,
        binary: &str,
        file: &Path,
    ) -> anyhow::Result<Added> {
        validate_version(version).map_err(anyhow::Error::msg)?;
        validate_platform(platform).map_err(anyhow::Error::msg)?;
        validate_binary_name(binary).map_err(anyhow::Error::msg)?;
        let _lock = self.lock()?;
        let dir = self.root.join(version).join(platform);
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        let target = dir.join(binary);
        let tmp = temp_name(&target);
        let copied = std::fs::copy(file, &tmp);
        if let Err(e) = copied {
            let _ = std::fs::remove_file(&tmp);
            return Err(e).with_context(|| format!("cannot copy {}", file.display()));
        }
        set_mode(&tmp, 0o755)?;
        let (checksum, size) =
            digest_file(&tmp).with_context(|| format!("cannot read {}", tmp.display()))?;
        sync_file(&tmp)?;
        rename(&tmp, &target)?;
        let entry = PlatformEntry {
            binary: binary.to_string(),
            checksum,
            size,
        };
        self.put_entry(version, platform, &entry)?;
        Ok(Added {
            path: target,
            entry,
        })
    }

    /// Places an already-verified file (from `sync`) and records `entry`; caller holds the lock.
    pub fn place_verified(
        &self,
        version: &str,
        platform: &str,
        tmp: &Path,
        entry: &PlatformEntry,
    ) -> anyhow::Result<()> {
        let dir = self.root.join(version).join(platform);
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        set_mode(tmp, 0o755)?;
        rename(tmp, &dir.join(&entry.binary))
    }

    /// Writes `manifest` for its version (caller holds the lock).
    pub fn write_manifest(&self, manifest: &Manifest) -> anyhow::Result<()> {
        let path = self.manifest_path(&manifest.version);
        write_atomic(&path, &manifest.to_pretty(), 0o644)
    }

    fn put_entry(
        &self,
        version: &str,
        platform: &str,
        entry: &PlatformEntry,
    ) -> anyhow::Result<()> {
        let mut manifest = self
            .manifest(version)?
            .unwrap_or_else(|| Manifest::new(version));
        if manifest.build_date.is_empty() {
            manifest.build_date = rfc3339_now();
        }
        manifest.platforms.insert(
            platform.to_string(),
            serde_json::to_value(entry).expect("entry serialises"),
        );
        self.write_manifest(&manifest)
    }

    /// Points `channel` at `version` (which must have a manifest).
    pub fn set_channel(&self, channel: &str, version: &str) -> anyhow::Result<()> {
        if !release::CHANNELS.contains(&channel) {
            bail!(
                "{channel:?} is not a channel (one of: {})",
                release::CHANNELS.join(", ")
            );
        }
        validate_version(version).map_err(anyhow::Error::msg)?;
        let _lock = self.lock()?;
        if self.manifest(version)?.is_none() {
            bail!(
                "version {version} is not in {} (add it first with `corral mirror add`)",
                self.root.display()
            );
        }
        write_atomic(
            &self.root.join(channel),
            format!("{version}\n").as_bytes(),
            0o644,
        )
    }

    /// The version a channel points at, if the channel file exists.
    pub fn channel(&self, channel: &str) -> anyhow::Result<Option<String>> {
        let path = self.root.join(channel);
        match std::fs::read_to_string(&path) {
            Ok(text) => release::parse_channel(&text)
                .map(Some)
                .map_err(|e| anyhow::anyhow!("{}: {e}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
        }
    }

    /// Every version directory holding a manifest.json, sorted.
    pub fn versions(&self) -> anyhow::Result<Vec<String>> {
        let mut out = Vec::new();
        let entries = match std::fs::read_dir(&self.root) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => {
                return Err(e).with_context(|| format!("cannot list {}", self.root.display()))
            }
        };
        for entry in entries {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if validate_version(&name).is_ok() && entry.path().join("manifest.json").is_file() {
                out.push(name);
            }
        }
        out.sort();
        Ok(out)
    }

    /// Re-checks every binary against its manifest and every channel against the versions.
    /// Returns one line per problem, and the number of binaries checked.
    pub fn verify(&self) -> anyhow::Result<(Vec<String>, usize)> {
        let mut problems = Vec::new();
        let mut checked = 0;
        for version in self.versions()? {
            let manifest = match self.manifest(&version) {
                Ok(Some(m)) => m,
                Ok(None) => continue,
                Err(e) => {
                    problems.push(format!("{e:#}"));
                    continue;
                }
            };
            if manifest.version != version {
                problems.push(format!(
                    "{}: says version {:?} but lives in directory {version}",
                    self.manifest_path(&version).display(),
                    manifest.version
                ));
            }
            for platform in manifest.platforms.keys() {
                let entry = match manifest.platform(platform) {
                    Ok(entry) => entry,
                    Err(e) => {
                        problems.push(format!("{}: {e}", self.manifest_path(&version).display()));
                        continue;
                    }
                };
                let path = self.root.join(&version).join(platform).join(&entry.binary);
                checked += 1;
                match digest_file(&path) {
                    Err(e) => problems.push(format!("{}: {e}", path.display())),
                    Ok((sum, size)) => {
                        if size != entry.size {
                            problems.push(format!(
                                "{}: size {size} but the manifest says {}",
                                path.display(),
                                entry.size
                            ));
                        } else if sum != entry.checksum {
                            problems.push(format!(
                                "{}: sha256 {sum} but the manifest says {}",
                                path.display(),
                                entry.checksum
                            ));
                        }
                    }
                }
            }
        }
        for channel in release::CHANNELS {
            match self.channel(channel) {
                Ok(Some(version)) if self.manifest_path(&version).is_file() => {}
                Ok(Some(version)) => problems.push(format!(
                    "{}: points at {version}, which has no manifest",
                    self.root.join(channel).display()
                )),
                Ok(None) => {}
                Err(e) => problems.push(format!("{e:#}")),
            }
        }
        Ok((problems, checked))
    }
}

/// A temporary sibling of `path` (hidden, so the server never serves it).
pub fn temp_name(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp-{}", std::process::id()))
}

/// Writes `bytes` to `path` via a temporary file and a rename.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> anyhow::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    let tmp = temp_name(path);
    let result = (|| -> anyhow::Result<()> {
        let mut file =
            File::create(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
        file.write_all(bytes)
            .with_context(|| format!("cannot write {}", tmp.display()))?;
        file.sync_all()
            .with_context(|| format!("cannot sync {}", tmp.display()))?;
        set_mode(&tmp, mode)?;
        rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

fn set_mode(path: &Path, mode: u32) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("cannot chmod {}", path.display()))
}

fn sync_file(path: &Path) -> anyhow::Result<()> {
    File::open(path)
        .and_then(|f| f.sync_all())
        .with_context(|| format!("cannot sync {}", path.display()))
}

fn rename(from: &Path, to: &Path) -> anyhow::Result<()> {
    std::fs::rename(from, to).with_context(|| {
        let _ = std::fs::remove_file(from);
        format!("cannot move {} to {}", from.display(), to.display())
    })
}

/// Current UTC time as `YYYY-MM-DDTHH:MM:SSZ`.
pub fn rfc3339_now() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_writes_binary_and_manifest_and_verify_catches_tampering() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("payload");
        std::fs::write(&src, b"#!/bin/sh\necho hi\n").unwrap();
        let store = Store::new(dir.path().join("mirror"));
        let added = store.add("1.0.0", "linux-x64", "claude", &src).unwrap();
        assert_eq!(added.entry.size, 18);
        store.add("1.0.0", "linux-arm64", "claude", &src).unwrap();
        let m = store.manifest("1.0.0").unwrap().unwrap();
        assert_eq!(m.platforms.len(), 2);
        store.set_channel("stable", "1.0.0").unwrap();
        assert!(store.set_channel("stable", "9.9.9").is_err());
        assert!(store.set_channel("nightly", "1.0.0").is_err());
        assert_eq!(store.verify().unwrap(), (vec![], 2));
        std::fs::write(&added.path, b"#!/bin/sh\necho HI\n").unwrap();
        let (problems, _) = store.verify().unwrap();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains("sha256"), "{problems:?}");
    }

    #[test]
    fn concurrent_adds_all_land_in_the_manifest() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("payload");
        std::fs::write(&src, b"x").unwrap();
        let store = Store::new(dir.path().join("mirror"));
        std::thread::scope(|s| {
            for platform in ["linux-x64", "linux-arm64", "linux-x64-musl", "darwin-arm64"] {
                let store = store.clone();
                let src = src.clone();
                s.spawn(move || store.add("2.0.0", platform, "claude", &src).unwrap());
            }
        });
        assert_eq!(store.manifest("2.0.0").unwrap().unwrap().platforms.len(), 4);
    }

    #[test]
    fn timestamp_format() {
        let ts = rfc3339_now();
        assert_eq!(ts.len(), 20);
        assert!(ts.starts_with("20"));
    }
}
