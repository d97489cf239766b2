//! corral's no-sudo installer.
//!
//! `corral install claude --mirror URL --gateway URL` resolves a channel on the mirror, reads
//! the version's manifest, downloads the binary for this platform while checking its size and
//! SHA-256, and only then places it at `${XDG_DATA_HOME:-~/.local/share}/claude/versions/<v>`
//! and switches the `~/.local/bin/claude` symlink to it (atomically). It merges the gateway
//! settings into `~/.claude/settings.json` (keeping every user key, in order), writes the
//! api-key helper, and puts `~/.local/bin` on PATH once. It never runs `claude install` or
//! anything else that would contact the vendor.
//!
//! A small record ([`layout::Record`]) remembers what was placed and what each managed setting
//! held before, so `--rollback` and `corral uninstall claude` touch only corral's own work.
//!
//! From the mirror crate it uses only the release types and the HTTP client.

#![forbid(unsafe_code)]

pub mod cli;
pub mod fsx;
pub mod install;
pub mod layout;
pub mod settings;
pub mod shell;
