//! The installation steps, in the order that keeps a failure harmless: check everything that
//! could refuse (settings file, existing link), download and verify into a temporary file,
//! and only then place the version, switch the link, and write settings.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context};
use corral_mirror::fetch::Fetcher;
use corral_mirror::release::{self, Manifest};
use serde_json::Value;

use crate::fsx;
use crate::layout::{Layout, Record};
use crate::settings::{self, Desired, GatewaySettings};
use crate::shell;

/// What to install.
pub struct Plan {
    pub mirror: String,
    pub gateway: String,
    pub region: String,
    pub model: Option<String>,
    /// `stable`, `latest`, or a version.
    pub channel: String,
    pub ca_file: Option<PathBuf>,
    pub first_party: bool,
    /// Claude Code gets the key itself, not the placeholder.
    pub real_key: bool,
    pub platform: Option<String>,
    pub modify_path: bool,
}

/// A line per change made, for the summary; empty when nothing changed.
pub type Changes = Vec<String>;

pub fn install(layout: &Layout, plan: &Plan) -> anyhow::Result<Changes> {
    let mut changes = Vec::new();
    let mirror = plan.mirror.trim_end_matches('/');
    if !(mirror.starts_with("https://") || mirror.starts_with("http://")) {
        bail!("--mirror must be an http:// or https:// URL, not {mirror:?}");
    }
    if mirror.starts_with("http://") {
        tracing::warn!(
            "the mirror {mirror} is plain HTTP: the manifest's checksums catch corruption, not tampering in transit; prefer https://"
        );
    }
    let platform = match &plan.platform {
        Some(p) => {
            release::validate_platform(p).map_err(anyhow::Error::msg)?;
            p.clone()
        }
        None => release::host_platform().map_err(anyhow::Error::msg)?,
    };

    // Everything that could refuse, before anything is fetched or placed.
    let mut record = Record::load(&layout.record)?.unwrap_or_default();
    let existing_settings = settings::load(&layout.settings)?;
    let linked = layout.linked_version()?;

    let fetcher = Fetcher::new(plan.ca_file.as_deref())?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;

    let version = if release::CHANNELS.contains(&plan.channel.as_str()) {
        let url = format!("{mirror}/{}", plan.channel);
        let text = runtime.block_on(fetcher.text(&url))?;
        release::parse_channel(&text).map_err(|e| anyhow!("{url}: {e}"))?
    } else {
        release::validate_version(&plan.channel)
            .map_err(|e| anyhow!("--channel: {e}; or use stable / latest"))?;
        plan.channel.clone()
    };
    let manifest_url = format!("{mirror}/{version}/manifest.json");
    let manifest = Manifest::parse(&runtime.block_on(fetcher.bytes(&manifest_url, 1024 * 1024))?)
        .map_err(|e| anyhow!("{manifest_url}: {e}; nothing was installed"))?;
    if manifest.version != version {
        bail!(
            "{manifest_url} describes version {:?}, not {version}; nothing was installed",
            manifest.version
        );
    }
    let entry = manifest
        .platform(&platform)
        .map_err(|e| anyhow!("{manifest_url}: {e}; nothing was installed"))?;
    let binary_url = format!("{mirror}/{version}/{platform}/{}", entry.binary);
    let target = layout.version_path(&version);

    let present = release::digest_file(&target)
        .map(|(sum, size)| sum == entry.checksum && size == entry.size)
        .unwrap_or(false);
    if !present {
        let created_dirs = !layout.versions.exists();
        std::fs::create_dir_all(&layout.versions)
            .with_context(|| format!("cannot create {}", layout.versions.display()))?;
        let partial = layout
            .versions
            .join(format!(".{version}.partial-{}", std::process::id()));
        let label = format!("claude {version}");
        let downloaded =
            runtime.block_on(fetcher.download_verified(&binary_url, &partial, &entry, &label));
        if let Err(e) = downloaded {
            let _ = std::fs::remove_file(&partial);
            if created_dirs {
                fsx::remove_dir_if_empty(&layout.versions);
                if let Some(parent) = layout.versions.parent() {
                    fsx::remove_dir_if_empty(parent);
                }
            }
            return Err(e.context(format!(
                "claude {version} ({platform}) was not installed; {} is unchanged",
                layout.link.display()
            )));
        }
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&partial, std::fs::Permissions::from_mode(0o755))
            .with_context(|| format!("cannot chmod {}", partial.display()))?;
        std::fs::rename(&partial, &target).with_context(|| {
            let _ = std::fs::remove_file(&partial);
            format!("cannot move the download to {}", target.display())
        })?;
        changes.push(format!(
            "placed claude {version} ({platform}, sha256 {}) at {}",
            entry.checksum,
            target.display()
        ));
    }
    record
        .versions
        .insert(version.clone(), entry.checksum.clone());

    if fsx::switch_symlink(&layout.link, &target)? {
        changes.push(format!("{} -> {}", layout.link.display(), target.display()));
    }
    if let Some(old) = linked.filter(|old| *old != version) {
        record.previous = Some(old);
    }
    record.current = Some(version.clone());
    prune(layout, &mut record, &mut changes);

    // The api-key helper, and the key itself when given in the environment.
    let helper = if plan.real_key {
        shell::key_helper_script(&layout.key_file)
    } else {
        shell::placeholder_helper_script(&layout.key_file)
    };
    if fsx::write_if_changed(&layout.helper, helper.as_bytes(), 0o755)? {
        changes.push(format!(
            "wrote the api-key helper {}",
            layout.helper.display()
        ));
    }
    record.helper = true;
    if let Some(key) = std::env::var("CORRAL_GATEWAY_KEY")
        .ok()
        .filter(|k| !k.is_empty())
    {
        if let Some(dir) = layout.key_file.parent() {
            fsx::private_dir(dir, 0o700)?;
        }
        let existed = layout.key_file.exists();
        if fsx::write_if_changed(&layout.key_file, format!("{key}\n").as_bytes(), 0o600)? {
            changes.push(format!(
                "stored the gateway key from CORRAL_GATEWAY_KEY in {} (mode 0600)",
                layout.key_file.display()
            ));
            // Only a file corral created is corral's to remove on uninstall.
            record.key_file |= !existed;
        }
    }

    let desired = Desired::for_gateway(&GatewaySettings {
        gateway: &plan.gateway,
        region: &plan.region,
        model: plan.model.as_deref(),
        first_party: plan.first_party,
        helper: &layout.helper,
        // With the placeholder, the proxy terminates TLS to the gateway: Claude Code must
        // trust corral's session CA, which corral run gives it in NODE_EXTRA_CA_CERTS (the
        // settings' value would replace it).
        ca_file: plan.ca_file.as_deref().filter(|_| plan.real_key),
    });
    if write_settings(layout, existing_settings, &desired, &mut record)? {
        changes.push(format!(
            "merged the gateway settings into {}",
            layout.settings.display()
        ));
    }

    if plan.modify_path {
        let path_var = std::env::var("PATH").ok();
        let (rc, line) =
            shell::rc_file_and_line(&layout.home, std::env::var("SHELL").ok().as_deref());
        let recorded = record
            .rc
            .as_ref()
            .is_some_and(|(f, l)| *f == rc && *l == line);
        if recorded || !shell::on_path(&layout.bin, path_var.as_deref()) {
            if shell::ensure_line(&rc, &line)? {
                changes.push(format!(
                    "added {} to PATH in {} (open a new shell to use it)",
                    layout.bin.display(),
                    rc.display()
                ));
            }
            record.rc = Some((rc, line));
        }
    }

    if let Some(dir) = layout.record.parent() {
        fsx::private_dir(dir, 0o700)?;
    }
    record.save(&layout.record)?;
    Ok(changes)
}

/// Keeps the current and previous versions; removes older ones corral placed.
fn prune(layout: &Layout, record: &mut Record, changes: &mut Changes) {
    let keep = [record.current.clone(), record.previous.clone()];
    let old: Vec<String> = record
        .versions
        .keys()
        .filter(|v| !keep.contains(&Some((*v).clone())))
        .cloned()
        .collect();
    for version in old {
        let path = layout.version_path(&version);
        match std::fs::remove_file(&path) {
            Ok(()) => changes.push(format!("removed old version {}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!("could not remove old version {}: {e}", path.display());
                continue;
            }
        }
        record.versions.remove(&version);
    }
}

/// Merges `desired` into the settings file. Returns whether the file changed.
fn write_settings(
    layout: &Layout,
    existing: Option<serde_json::Map<String, Value>>,
    desired: &Desired,
    record: &mut Record,
) -> anyhow::Result<bool> {
    let created = existing.is_none();
    let mut map = existing.clone().unwrap_or_default();
    if record.settings_before.is_empty() && record.settings_written.is_empty() {
        record.created_settings = created;
        record.created_env = !map.contains_key("env");
    }
    for (key, value) in &desired.0 {
        if !record.settings_before.contains_key(key) {
            let before = settings::get(&map, key).cloned().unwrap_or(Value::Null);
            record.settings_before.insert(key.clone(), before);
        }
        settings::set(&mut map, key, value.clone());
        record.settings_written.insert(key.clone(), value.clone());
    }
    // Keys corral set on an earlier run that this configuration no longer wants (switching
    // between Bedrock and first-party) go back to what the user had.
    let wanted: Vec<&String> = desired.0.iter().map(|(k, _)| k).collect();
    let stale: Vec<String> = record
        .settings_written
        .keys()
        .filter(|k| !wanted.contains(k))
        .cloned()
        .collect();
    for key in stale {
        restore_key(&mut map, &key, record, false);
    }
    let bytes = settings::render(&map);
    fsx::private_dir(&layout.claude_dir, 0o700)?;
    let previous = std::fs::read(&layout.settings).ok();
    if previous.as_deref() == Some(&bytes[..]) {
        // Same content; still make sure of the mode.
        return fsx::write_if_changed(&layout.settings, &bytes, 0o600);
    }
    if let Some(previous) = previous {
        let backup = backup_path(&layout.settings);
        fsx::write_if_changed(&backup, &previous, 0o600)?;
    }
    fsx::write_if_changed(&layout.settings, &bytes, 0o600)
}

/// Puts one managed key back the way it was before corral set it, unless the user has
/// changed it since (then it is theirs).
fn restore_key(
    map: &mut serde_json::Map<String, Value>,
    key: &str,
    record: &mut Record,
    drop_env: bool,
) {
    let written = record.settings_written.remove(key);
    let before = record.settings_before.remove(key).unwrap_or(Value::Null);
    if settings::get(map, key) != written.as_ref() {
        return;
    }
    match before {
        Value::Null => settings::remove(map, key, drop_env),
        value => settings::set(map, key, value),
    }
}

pub fn backup_path(settings: &Path) -> PathBuf {
    settings.with_file_name("settings.json.corral-backup")
}

/// Switches `~/.local/bin/claude` back to the previous version.
pub fn rollback(layout: &Layout) -> anyhow::Result<Changes> {
    let mut record = Record::load(&layout.record)?
        .context("nothing to roll back: corral has not installed Claude Code for this user")?;
    let previous = record.previous.clone().with_context(|| {
        format!(
            "nothing to roll back to: only {} is installed",
            record.current.as_deref().unwrap_or("one version")
        )
    })?;
    layout.linked_version()?;
    let path = layout.version_path(&previous);
    let expected = record.versions.get(&previous).cloned().unwrap_or_default();
    let (sum, _) = release::digest_file(&path)
        .with_context(|| format!("previous version {} is missing", path.display()))?;
    if sum != expected {
        bail!(
            "{} has sha256 {sum}, but corral installed it with sha256 {expected}; not switching to it. Reinstall with --channel {previous}",
            path.display()
        );
    }
    fsx::switch_symlink(&layout.link, &path)?;
    record.previous = record.current.take();
    record.current = Some(previous.clone());
    record.save(&layout.record)?;
    Ok(vec![format!(
        "{} -> {} (rolled back from {})",
        layout.link.display(),
        path.display(),
        record.previous.as_deref().unwrap_or("?")
    )])
}

/// Removes what corral installed, and nothing else.
pub fn uninstall(layout: &Layout) -> anyhow::Result<Changes> {
    let Some(mut record) = Record::load(&layout.record)? else {
        return Ok(Vec::new());
    };
    let mut changes = Vec::new();
    // Settings first: if the file became invalid since, stop before removing anything.
    if !record.settings_written.is_empty() {
        if let Some(mut map) = settings::load(&layout.settings)? {
            let keys: Vec<String> = record.settings_written.keys().cloned().collect();
            let created_env = record.created_env;
            for key in keys {
                restore_key(&mut map, &key, &mut record, created_env);
            }
            if map.is_empty() && record.created_settings {
                std::fs::remove_file(&layout.settings)
                    .with_context(|| format!("cannot remove {}", layout.settings.display()))?;
                changes.push(format!("removed {}", layout.settings.display()));
            } else {
                let previous = std::fs::read(&layout.settings).unwrap_or_default();
                let bytes = settings::render(&map);
                if previous != bytes {
                    fsx::write_if_changed(&backup_path(&layout.settings), &previous, 0o600)?;
                    fsx::write_if_changed(&layout.settings, &bytes, 0o600)?;
                    changes.push(format!(
                        "removed corral's gateway settings from {}",
                        layout.settings.display()
                    ));
                }
            }
        }
    }
    if matches!(layout.linked_version(), Ok(Some(_))) {
        std::fs::remove_file(&layout.link)
            .with_context(|| format!("cannot remove {}", layout.link.display()))?;
        changes.push(format!("removed {}", layout.link.display()));
    }
    for version in record.versions.keys() {
        let path = layout.version_path(version);
        if std::fs::remove_file(&path).is_ok() {
            changes.push(format!("removed {}", path.display()));
        }
    }
    fsx::remove_dir_if_empty(&layout.versions);
    if let Some(parent) = layout.versions.parent() {
        fsx::remove_dir_if_empty(parent);
    }
    let ours = [
        shell::key_helper_script(&layout.key_file),
        shell::placeholder_helper_script(&layout.key_file),
    ];
    let current = std::fs::read(&layout.helper).ok();
    if record.helper
        && ours
            .iter()
            .any(|h| current.as_deref() == Some(h.as_bytes()))
    {
        std::fs::remove_file(&layout.helper)
            .with_context(|| format!("cannot remove {}", layout.helper.display()))?;
        changes.push(format!("removed {}", layout.helper.display()));
    }
    if record.key_file && std::fs::remove_file(&layout.key_file).is_ok() {
        changes.push(format!(
            "removed the stored gateway key {}",
            layout.key_file.display()
        ));
    }
    if let Some((rc, line)) = &record.rc {
        if shell::remove_line(rc, line)? {
            changes.push(format!("removed the PATH line from {}", rc.display()));
        }
    }
    std::fs::remove_file(&layout.record)
        .with_context(|| format!("cannot remove {}", layout.record.display()))?;
    if let Some(parent) = layout.record.parent() {
        fsx::remove_dir_if_empty(parent);
    }
    Ok(changes)
}
