//! Files and directories that the ordinary users tests create can read.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// A temporary directory every user may enter and read (mode 0755).
pub fn world_readable_tempdir() -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("corral-test-")
        .tempdir()
        .expect("create temp dir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
        .expect("chmod temp dir");
    dir
}

/// Writes `contents` to `path` with mode 0644.
pub fn write_readable(path: &Path, contents: &[u8]) {
    std::fs::write(path, contents).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
}
