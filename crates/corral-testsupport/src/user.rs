//! An ordinary (non-root) user for tests that must show corral works without privileges.
//!
//! The user `corral-test` is created once per machine (serialised across concurrently running
//! test binaries with a lock file). Creating it needs root; where the tests do not run as root,
//! [`ordinary_user`] answers `None` and the test runs as the current (already ordinary) user.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

const NAME: &str = "corral-test";

/// An ordinary user account.
#[derive(Clone, Debug)]
pub struct TestUser {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
}

/// Whether this test process runs as root.
pub fn is_root() -> bool {
    current_uid() == 0
}

/// The ordinary test user, created on first use. `None` when not running as root.
pub fn ordinary_user() -> Option<&'static TestUser> {
    static USER: OnceLock<Option<TestUser>> = OnceLock::new();
    USER.get_or_init(|| {
        if !is_root() {
            return None;
        }
        Some(ensure_user())
    })
    .as_ref()
}

impl TestUser {
    /// A command that runs as this user (supplementary groups dropped), with `HOME`, `USER`
    /// and `LOGNAME` set and a plain `PATH`.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new(program);
        cmd.uid(self.uid).gid(self.gid);
        cmd.env("USER", &self.name).env("LOGNAME", &self.name);
        cmd.env("PATH", "/usr/local/bin:/usr/bin:/bin");
        cmd
    }

    /// A fresh directory owned by this user (mode 0700), removed when dropped: use it as
    /// the user's `HOME` in a test.
    pub fn temp_home(&self) -> TempHome {
        let dir = temp_home_dir();
        chown(dir.path(), self.uid, self.gid);
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700))
            .expect("chmod home");
        TempHome { dir }
    }
}

/// A temporary home directory.
pub struct TempHome {
    dir: tempfile::TempDir,
}

impl TempHome {
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn join(&self, rel: impl AsRef<Path>) -> PathBuf {
        self.dir.path().join(rel)
    }
}

/// Who runs a test's clients: the ordinary test user when the tests run as root, else the
/// current user. Tests that must prove "works without root" use this.
pub enum Runner {
    Ordinary(&'static TestUser),
    Current,
}

impl Runner {
    pub fn ordinary() -> Runner {
        match ordinary_user() {
            Some(user) => Runner::Ordinary(user),
            None => Runner::Current,
        }
    }

    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        match self {
            Runner::Ordinary(user) => user.command(program),
            Runner::Current => Command::new(program),
        }
    }

    /// A temporary directory this runner owns (mode 0700).
    pub fn temp_home(&self) -> TempHome {
        match self {
            Runner::Ordinary(user) => user.temp_home(),
            Runner::Current => TempHome {
                dir: temp_home_dir(),
            },
        }
    }
}

/// A fresh home directory under `/var/tmp`: not under `/tmp`, which `corral run` lets the
/// sandbox write (a home inside it would be split around its protected files).
fn temp_home_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("corral-home-")
        .tempdir_in("/var/tmp")
        .expect("temp home under /var/tmp")
}

/// Changes the owner of `path` (recursively) to `uid:gid`.
pub fn chown(path: &Path, uid: u32, gid: u32) {
    let status = Command::new("chown")
        .arg("-R")
        .arg(format!("{uid}:{gid}"))
        .arg(path)
        .status()
        .expect("run chown");
    assert!(status.success(), "chown {} failed", path.display());
}

fn ensure_user() -> TestUser {
    if let Some(user) = lookup(NAME) {
        return user;
    }
    // Several test binaries may race to create the user; flock(1) serialises them.
    let status = Command::new("flock")
        .arg("/tmp/corral-test-user.lock")
        .arg("sh")
        .arg("-c")
        .arg(format!(
            "getent passwd {NAME} >/dev/null || useradd --no-create-home --home-dir /nonexistent --shell /bin/sh --user-group {NAME}"
        ))
        .status()
        .expect("run useradd");
    assert!(status.success(), "could not create the test user {NAME}");
    lookup(NAME).expect("test user exists after useradd")
}

fn lookup(name: &str) -> Option<TestUser> {
    let out = Command::new("getent")
        .arg("passwd")
        .arg(name)
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let line = String::from_utf8_lossy(&out.stdout);
    let fields: Vec<&str> = line.trim().split(':').collect();
    Some(TestUser {
        name: name.to_string(),
        uid: fields.get(2)?.parse().ok()?,
        gid: fields.get(3)?.parse().ok()?,
    })
}

fn current_uid() -> u32 {
    // /proc/self/status "Uid: real effective saved fs" — no libc call needed.
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(str::to_owned))
        })
        .and_then(|uid| uid.parse().ok())
        .unwrap_or(u32::MAX)
}
