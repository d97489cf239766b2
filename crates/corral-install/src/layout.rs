//! Where things go (all under the user's home, never a system path), and the install record
//! that lets `corral uninstall` remove exactly what was installed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

/// The paths of one user's Claude Code installation.
#[derive(Clone, Debug)]
pub struct Layout {
    pub home: PathBuf,
    /// `${XDG_DATA_HOME:-~/.local/share}/claude/versions`: one file per version.
    pub versions: PathBuf,
    /// `~/.local/bin`.
    pub bin: PathBuf,
    /// `~/.local/bin/claude`, a symlink into `versions`.
    pub link: PathBuf,
    /// `~/.local/bin/corral-api-key-helper`.
    pub helper: PathBuf,
    /// `~/.claude`.
    pub claude_dir: PathBuf,
    /// `~/.claude/settings.json`.
    pub settings: PathBuf,
    /// `${XDG_CONFIG_HOME:-~/.config}/corral/gateway-key`.
    pub key_file: PathBuf,
    /// `${XDG_DATA_HOME:-~/.local/share}/corral/claude-install.json`.
    pub record: PathBuf,
}

impl Layout {
    /// From `HOME`, `XDG_DATA_HOME` and `XDG_CONFIG_HOME` (relative XDG values are ignored, as
    /// the XDG spec says).
    pub fn from_env() -> anyhow::Result<Layout> {
        let home = std::env::var_os("HOME")
            .map(PathBuf::from)
            .filter(|h| h.is_absolute())
            .context("HOME is not set to an absolute path")?;
        let xdg = |var: &str, default: &str| {
            std::env::var_os(var)
                .map(PathBuf::from)
                .filter(|p| p.is_absolute())
                .unwrap_or_else(|| home.join(default))
        };
        let data = xdg("XDG_DATA_HOME", ".local/share");
        let config = xdg("XDG_CONFIG_HOME", ".config");
        let bin = home.join(".local/bin");
        Ok(Layout {
            versions: data.join("claude/versions"),
            link: bin.join("claude"),
            helper: bin.join("corral-api-key-helper"),
            claude_dir: home.join(".claude"),
            settings: home.join(".claude/settings.json"),
            key_file: config.join("corral/gateway-key"),
            record: data.join("corral/claude-install.json"),
            bin,
            home,
        })
    }

    pub fn version_path(&self, version: &str) -> PathBuf {
        self.versions.join(version)
    }

    /// The version `~/.local/bin/claude` points at, if it is one of ours. Errors when the path
    /// holds something corral must not replace (a regular file, or a link elsewhere).
    pub fn linked_version(&self) -> anyhow::Result<Option<String>> {
        let target = match std::fs::read_link(&self.link) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) if e.kind() == std::io::ErrorKind::InvalidInput => bail!(
                "{} exists and is not a symlink; corral will not replace it. Move it away (it may be another Claude Code install), then run the installer again",
                self.link.display()
            ),
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", self.link.display())),
        };
        let target = if target.is_absolute() {
            target
        } else {
            self.bin.join(target)
        };
        match (target.parent(), target.file_name()) {
            (Some(dir), Some(name)) if dir == self.versions => {
                Ok(Some(name.to_string_lossy().into_owned()))
            }
            _ => bail!(
                "{} points at {}, not into {}; corral will not replace it. Remove the link (it may be another Claude Code install), then run the installer again",
                self.link.display(),
                target.display(),
                self.versions.display()
            ),
        }
    }
}

/// What corral installed for this user, so that uninstall removes exactly that.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// The version `~/.local/bin/claude` points at.
    pub current: Option<String>,
    /// The version `--rollback` switches to.
    pub previous: Option<String>,
    /// SHA-256 of each version file corral placed.
    pub versions: BTreeMap<String, String>,
    /// Settings keys corral manages, with the value each had before corral first set it
    /// (`null` when it did not exist).
    pub settings_before: BTreeMap<String, serde_json::Value>,
    /// Whether `env` was created by corral.
    pub created_env: bool,
    /// Whether the settings file was created by corral.
    pub created_settings: bool,
    /// The values corral last wrote.
    pub settings_written: BTreeMap<String, serde_json::Value>,
    /// The rc file and line added for PATH.
    pub rc: Option<(PathBuf, String)>,
    /// Whether corral wrote the key helper, and the key file.
    pub helper: bool,
    pub key_file: bool,
}

impl Record {
    pub fn load(path: &Path) -> anyhow::Result<Option<Record>> {
        match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map(Some).with_context(|| {
                format!(
                    "install record {} is damaged; remove it to start over",
                    path.display()
                )
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
        }
    }

    pub fn save(&self, path: &Path) -> anyhow::Result<()> {
        let mut bytes = serde_json::to_vec_pretty(self).expect("record serialises");
        bytes.push(b'\n');
        crate::fsx::write_if_changed(path, &bytes, 0o600).map(|_| ())
    }
}
