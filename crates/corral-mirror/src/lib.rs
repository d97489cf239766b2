//! corral's release mirror.
//!
//! A mirror is a directory in Claude Code's release layout (see [`release`]): channel files
//! `stable` and `latest` holding a version, `{version}/manifest.json` listing each platform's
//! binary with its SHA-256 and size, and the binaries at `{version}/{platform}/claude`.
//! corral's own releases live beside them under `corral/`, each with a `corral.sha256` file,
//! so a new machine can bootstrap from the mirror alone with the generated `install.sh`.
//!
//! - [`store`] changes the directory: every write is a temporary file plus a rename, under a
//!   lock, so readers never see half a release.
//! - [`server`] serves it (TLS, a JSON access log; [`files`] does HEAD, single ranges and
//!   ETags) and, in
//!   redirect mode, answers binary downloads with `302` to a signed, expiring link ([`sign`])
//!   on a second listener acting as the storage endpoint — the pre-signed-S3 pattern.
//! - [`sync`] copies releases from another mirror, verifying every checksum, with the
//!   client in [`fetch`] that `corral install` uses too.
//!
//! The installer depends only on [`release`] and [`fetch`].

#![forbid(unsafe_code)]

pub mod body;
pub mod cli;
pub mod fetch;
pub mod files;
pub mod release;
pub mod script;
pub mod server;
pub mod sign;
pub mod store;
pub mod sync;
