//! Small atomic file-system steps: every change is a temporary sibling plus a rename.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::Context;

fn temp_sibling(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.corral-tmp-{}", std::process::id()))
}

/// Writes `bytes` to `path` with `mode`, atomically. Returns false (and writes nothing) when
/// the file already holds exactly these bytes with this mode.
pub fn write_if_changed(path: &Path, bytes: &[u8], mode: u32) -> anyhow::Result<bool> {
    if let (Ok(existing), Ok(meta)) = (std::fs::read(path), std::fs::metadata(path)) {
        if existing == bytes && meta.permissions().mode() & 0o7777 == mode {
            return Ok(false);
        }
    }
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    let tmp = temp_sibling(path);
    let result = (|| -> anyhow::Result<()> {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .with_context(|| format!("cannot create {}", tmp.display()))?;
        // Restrictive from the start: a key or settings file is never briefly world-readable.
        file.set_permissions(std::fs::Permissions::from_mode(mode))
            .with_context(|| format!("cannot chmod {}", tmp.display()))?;
        file.write_all(bytes)
            .and_then(|_| file.sync_all())
            .with_context(|| format!("cannot write {}", tmp.display()))?;
        std::fs::rename(&tmp, path)
            .with_context(|| format!("cannot move {} into place", path.display()))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map(|_| true)
}

/// Points the symlink `link` at `target` atomically (a new link under a temporary name,
/// renamed over the old one): at every instant `link` is the old link or the new one.
pub fn switch_symlink(link: &Path, target: &Path) -> anyhow::Result<bool> {
    if std::fs::read_link(link).ok().as_deref() == Some(target) {
        return Ok(false);
    }
    if let Some(parent) = link.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    let tmp = temp_sibling(link);
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(target, &tmp)
        .with_context(|| format!("cannot create symlink {}", tmp.display()))?;
    if let Err(e) = std::fs::rename(&tmp, link) {
        let _ = std::fs::remove_file(&tmp);
        return Err(e).with_context(|| format!("cannot switch {}", link.display()));
    }
    Ok(true)
}

/// Creates `dir` (and parents) and sets its mode.
pub fn private_dir(dir: &Path, mode: u32) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("cannot chmod {}", dir.display()))
}

/// Removes `dir` if it exists and is empty.
pub fn remove_dir_if_empty(dir: &Path) {
    let _ = std::fs::remove_dir(dir);
}

/// The effective uid, read without `unsafe`: `/proc/self` is owned by it.
pub fn effective_uid() -> Option<u32> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").ok().map(|m| m.uid())
}
