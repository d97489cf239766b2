//! `corral run`: the rootless sandbox and its connect broker.
//!
//! # The model
//!
//! A *supervisor* (the `corral run` process, outside the sandbox) starts the command in a
//! child that, before `exec`, confines itself and hands the supervisor two descriptors:
//!
//! - a **seccomp user-notification listener**: every `connect` — and every `sendto`,
//!   `sendmsg`, `sendmmsg` that names a destination — stops the caller and asks the
//!   supervisor. The [`broker`] answers: connects to the proxy's documented address
//!   (`127.0.0.1:3128`) are performed by the supervisor itself on a duplicate of the
//!   caller's socket, after recording `client address → identity` in the
//!   [`attribution::AttributionTable`]; everything else on inet sockets is refused and
//!   logged; unix and netlink calls are performed by the supervisor too, on the duplicate,
//!   with what it copied out of the caller's memory;
//! - in **namespace mode**, the proxy's **listening socket**, created inside the sandbox's
//!   own network namespace (where only loopback exists). The embedded proxy serves it and
//!   looks each accepted connection up in the table: exact attribution, O(1), no `/proc`
//!   scan.
//!
//! Where unprivileged user namespaces are unavailable, **seccomp-only mode** keeps the same
//! broker (the proxy then listens on host loopback and the broker redirects the connect),
//! with Landlock refusing direct TCP connects as a second fence. The mode is always printed
//! at start; `--require-netns` refuses to downgrade.
//!
//! Module map: [`sys`] holds every `unsafe` block (namespaces, seccomp, fd passing, the
//! pre-exec child); [`launch`] starts the child; [`broker`] and [`identity`] answer trapped
//! calls; [`landlock_rules`] turns `filesystem_policy` into a ruleset; [`cli`] wires these
//! to the embedded proxy; [`doctor`] probes the host.

mod args;
pub mod attribution;
pub mod broker;
pub mod ca_env;
pub mod cli;
pub mod code_guard;
pub mod doctor;
pub mod fs_view;
pub mod identity;
pub mod landlock_rules;
pub mod launch;
pub mod message;
pub mod own_files;
pub mod private_tmp;
pub mod procfs;
mod session;
// The syscall layer: the only module allowed `unsafe` (each block with a SAFETY note).
#[allow(unsafe_code)]
pub mod sys;
pub mod trust;
pub mod unix_guard;
