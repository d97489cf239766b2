//! Where `scripts/install-test-deps.sh` put the test clients: `$CORRAL_TESTDEPS`, or
//! `/opt/corral-testdeps` (readable by the ordinary users the tests create).
//!
//! A missing client is a failed test, never a skipped one: `make test` installs them all,
//! so one that is absent means the install step is broken, which is what CI must catch.

use std::path::PathBuf;

/// The prefix the test clients were installed into.
pub fn prefix() -> PathBuf {
    std::env::var_os("CORRAL_TESTDEPS")
        .filter(|v| !v.is_empty())
        .map_or_else(|| PathBuf::from("/opt/corral-testdeps"), PathBuf::from)
}

fn installed(relative: &str) -> PathBuf {
    let path = prefix().join(relative);
    assert!(
        path.exists(),
        "{} is missing: run `make deps` (scripts/install-test-deps.sh) to install the test clients",
        path.display()
    );
    path
}

/// The venv's Python (with `anthropic`, `boto3`, `requests`).
pub fn python() -> PathBuf {
    installed("venv/bin/python")
}

/// The `claude` launcher of the pinned Claude Code npm package.
pub fn claude() -> PathBuf {
    installed("node/node_modules/.bin/claude")
}

/// The platform package of Claude Code (holds the native `claude` binary and its
/// `package.json`).
pub fn claude_platform_package() -> PathBuf {
    installed("node/node_modules/@anthropic-ai/claude-code-linux-x64")
}
