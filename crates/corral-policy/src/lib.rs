//! corral's policy model.
//!
//! Data flows one way: policy file → validated model → compiled matcher → decision.
//!
//! * [`Policy::load`] / [`Policy::parse`] read YAML (a superset of OpenShell's
//!   `version: 1` schema) into a validated [`Policy`], with every error and warning
//!   located at `file:line:column` ([`Diagnostic`]).
//! * [`Policy::compile`] builds a [`Matcher`]: hash indexes over hosts, then ports,
//!   then binaries, so a lookup does not scan the whole policy.
//! * [`Matcher::decide`] answers "may this [`Identity`] reach host:port (and make this
//!   HTTP request)?" with a [`Decision`]: the policy that allowed it, or a typed
//!   [`DenyReason`].
//! * [`Report`] renders a decision as text or JSON; the proxy's 403 body, its log line
//!   and `corral policy explain` all print it.
//! * [`PolicyWatcher`] reloads a policy file when it changes (in-place writes, editor
//!   renames, Kubernetes ConfigMap symlink swaps) and publishes only valid policies.

#![forbid(unsafe_code)]

pub mod cli;
pub mod decision;
pub mod diag;
pub mod glob;
pub mod host;
pub mod identity;
pub mod matcher;
pub mod model;
pub mod path;
pub mod report;
pub mod suggest;
mod validate;
pub mod watch;
mod yaml;

pub use decision::{Allow, Decision, Deny, DenyReason, Substitution};
pub use diag::{Diagnostic, PolicyError, Severity};
pub use identity::Identity;
pub use matcher::{HttpRequestInfo, Matcher};
pub use model::{CompileOptions, Loaded, Policy};
pub use path::{canonical_path, PathError};
pub use report::Report;
pub use watch::PolicyWatcher;
