//! The user's shell: putting `~/.local/bin` on PATH once, and the api-key helper script.

use std::path::{Path, PathBuf};

/// Marks every line corral adds to a shell rc file.
pub const MARKER: &str = "# added by corral install";

/// The rc file for the user's login shell, and the line that puts `~/.local/bin` on PATH.
pub fn rc_file_and_line(home: &Path, shell: Option<&str>) -> (PathBuf, String) {
    let name = shell
        .and_then(|s| Path::new(s).file_name())
        .and_then(|n| n.to_str())
        .unwrap_or("sh");
    let sh_line = format!("export PATH=\"$HOME/.local/bin:$PATH\" {MARKER}");
    match name {
        "bash" => (home.join(".bashrc"), sh_line),
        "zsh" => {
            let dir = std::env::var_os("ZDOTDIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| home.to_path_buf());
            (dir.join(".zshrc"), sh_line)
        }
        "fish" => {
            let config = std::env::var_os("XDG_CONFIG_HOME")
                .map(PathBuf::from)
                .filter(|p| p.is_absolute())
                .unwrap_or_else(|| home.join(".config"));
            (
                config.join("fish").join("config.fish"),
                format!("fish_add_path -g $HOME/.local/bin {MARKER}"),
            )
        }
        _ => (home.join(".profile"), sh_line),
    }
}

/// Whether `dir` is already on `path_var`.
pub fn on_path(dir: &Path, path_var: Option<&str>) -> bool {
    path_var
        .unwrap_or("")
        .split(':')
        .any(|p| !p.is_empty() && Path::new(p) == dir)
}

/// Appends `line` to `rc` unless it is already there. Returns whether the file changed.
pub fn ensure_line(rc: &Path, line: &str) -> anyhow::Result<bool> {
    use anyhow::Context;
    let existing = match std::fs::read_to_string(rc) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", rc.display())),
    };
    if existing.lines().any(|l| l.trim() == line) {
        return Ok(false);
    }
    if let Some(parent) = rc.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    let mut text = existing;
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    text.push_str(line);
    text.push('\n');
    // Appending in place keeps the file's owner, mode and any symlink (dotfile managers).
    std::fs::write(rc, text).with_context(|| format!("cannot write {}", rc.display()))?;
    Ok(true)
}

/// Removes `line` from `rc` if present. Returns whether the file changed.
pub fn remove_line(rc: &Path, line: &str) -> anyhow::Result<bool> {
    use anyhow::Context;
    let Ok(existing) = std::fs::read_to_string(rc) else {
        return Ok(false);
    };
    if !existing.lines().any(|l| l.trim() == line) {
        return Ok(false);
    }
    let kept: Vec<&str> = existing.lines().filter(|l| l.trim() != line).collect();
    let mut text = kept.join("\n");
    if !text.is_empty() {
        text.push('\n');
    }
    std::fs::write(rc, text).with_context(|| format!("cannot write {}", rc.display()))?;
    Ok(true)
}

/// The api-key helper Claude Code runs (`apiKeyHelper`): prints the gateway key on stdout and
/// nothing else there. The key comes from `$CORRAL_GATEWAY_KEY`, or from `key_file`, which
/// must not be readable by group or others.
pub fn key_helper_script(key_file: &Path) -> String {
    // A path cannot hold a NUL byte, so quoting cannot fail.
    let key_file = key_file.to_string_lossy();
    let quoted = shlex::try_quote(&key_file).unwrap_or_default();
    format!(
        r#"#!/bin/sh
# corral api-key helper for Claude Code (settings.json "apiKeyHelper"), written by
# `corral install`. Prints the LLM gateway key on stdout; diagnostics go to stderr.
# The key comes from $CORRAL_GATEWAY_KEY, or from the file below (chmod 600).
if [ -n "${{CORRAL_GATEWAY_KEY:-}}" ]; then
    printf '%s\n' "$CORRAL_GATEWAY_KEY"
    exit 0
fi
default_key_file={quoted}
key_file="${{CORRAL_GATEWAY_KEY_FILE:-$default_key_file}}"
if [ ! -r "$key_file" ]; then
    echo "corral-api-key-helper: no gateway key: put it in $key_file (chmod 600) or set CORRAL_GATEWAY_KEY" >&2
    exit 1
fi
case "$(ls -lnL "$key_file" | cut -c5-10)" in
    *[!-]*)
        echo "corral-api-key-helper: $key_file is readable by other users; run: chmod 600 $key_file" >&2
        exit 1 ;;
esac
key=""
IFS= read -r key < "$key_file" || [ -n "$key" ]
key="$(printf '%s' "$key" | tr -d '\r')"
if [ -z "$key" ]; then
    echo "corral-api-key-helper: $key_file is empty" >&2
    exit 1
fi
printf '%s\n' "$key"
"#
    )
}

/// What Claude Code holds instead of the gateway key by default: inside `corral run`, the
/// proxy replaces it with the key in requests to the gateway (a policy `credentials` entry
/// binds it to the gateway endpoint and the claude binary).
pub const PLACEHOLDER: &str = "corral-placeholder-gateway-key";

/// The api-key helper of placeholder mode (the default): prints [`PLACEHOLDER`] inside a
/// corral sandbox (`CORRAL_SANDBOX` is set there), and outside says why Claude Code has no
/// key rather than letting the gateway answer 401. It never reads `key_file`.
pub fn placeholder_helper_script(key_file: &Path) -> String {
    let key_file = key_file.to_string_lossy();
    let quoted = shlex::try_quote(&key_file).unwrap_or_default();
    format!(
        r#"#!/bin/sh
# corral api-key helper for Claude Code (settings.json "apiKeyHelper"), written by
# `corral install` (placeholder mode, the default). It prints a placeholder, never the
# gateway key: the key stays in the file below, which corral reads and the sandbox
# cannot; in `corral run`, the proxy puts it in place of the placeholder in Claude Code's
# requests to the gateway (the policy's `credentials`, docs/gateway.md).
# `corral install claude --real-key` writes a helper that prints the key itself.
key_file={quoted}
if [ -z "${{CORRAL_SANDBOX:-}}" ]; then
    echo "corral-api-key-helper: Claude Code holds only a placeholder for the gateway key: run it inside corral run, whose policy puts the key from $key_file in its requests (corral run --policy ~/.config/corral/policy.yaml -- claude), or reinstall with corral install claude --real-key" >&2
    exit 1
fi
printf '%s\n' {PLACEHOLDER}
"#
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rc_file_follows_the_shell() {
        let home = Path::new("/home/u");
        assert_eq!(
            rc_file_and_line(home, Some("/bin/bash")).0,
            home.join(".bashrc")
        );
        assert_eq!(
            rc_file_and_line(home, Some("/bin/dash")).0,
            home.join(".profile")
        );
        assert_eq!(rc_file_and_line(home, None).0, home.join(".profile"));
        let (fish, line) = rc_file_and_line(home, Some("/usr/bin/fish"));
        assert!(fish.ends_with("fish/config.fish"));
        assert!(line.starts_with("fish_add_path"));
    }

    #[test]
    fn lines_are_added_once_and_removed_cleanly() {
        let dir = tempfile::tempdir().unwrap();
        let rc = dir.path().join(".bashrc");
        std::fs::write(&rc, "alias ll='ls -l'").unwrap();
        let (_, line) = rc_file_and_line(dir.path(), Some("bash"));
        assert!(ensure_line(&rc, &line).unwrap());
        assert!(!ensure_line(&rc, &line).unwrap());
        assert_eq!(
            std::fs::read_to_string(&rc)
                .unwrap()
                .matches(MARKER)
                .count(),
            1
        );
        assert!(remove_line(&rc, &line).unwrap());
        assert_eq!(std::fs::read_to_string(&rc).unwrap(), "alias ll='ls -l'\n");
    }

    #[test]
    fn path_detection() {
        let dir = Path::new("/home/u/.local/bin");
        assert!(on_path(dir, Some("/usr/bin:/home/u/.local/bin")));
        assert!(!on_path(dir, Some("/usr/bin:/home/u/.local/bin2")));
        assert!(!on_path(dir, None));
    }
}
