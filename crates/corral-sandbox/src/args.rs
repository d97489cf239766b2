//! What `corral run` is asked: its command-line arguments and the policy it enforces
//! without one.

use std::ffi::OsString;
use std::path::PathBuf;

/// `corral run --policy P [--] CMD ARGS…`
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// The policy file (reloaded when it changes). Without one, the embedded default
    /// policy applies: it allows no connection, and every refusal says what to add.
    #[arg(long, short = 'p', value_name = "FILE", env = "CORRAL_POLICY")]
    pub policy: Option<PathBuf>,

    /// Refuse to run unless the sandbox gets its own network namespace.
    #[arg(long)]
    pub require_netns: bool,

    /// Isolation mode: `auto` (namespaces when the host allows them), `namespaces`, or
    /// `seccomp-only`.
    #[arg(
        long,
        value_name = "MODE",
        env = "CORRAL_SANDBOX_MODE",
        default_value = "auto"
    )]
    pub mode: String,

    /// Append decision records (JSON lines) to FILE
    /// [default: $XDG_STATE_HOME/corral/decisions.jsonl].
    #[arg(long, value_name = "FILE")]
    pub log: Option<PathBuf>,

    /// Rotate the decision log to FILE.1 before it grows past BYTES (0: never).
    /// See docs/logs.md.
    #[arg(long, value_name = "BYTES", env = "CORRAL_LOG_MAX_BYTES", default_value_t = corral_proxy::DEFAULT_MAX_BYTES)]
    pub log_max_bytes: u64,

    #[command(flatten)]
    pub names: corral_proxy::NameOverrides,

    /// Also trust this CA bundle (PEM) for upstream servers whose TLS corral terminates
    /// (`tls: terminate`, request rules on a TLS port), besides the system roots. Repeatable.
    #[arg(long = "upstream-ca", value_name = "FILE", env = "CORRAL_UPSTREAM_CA")]
    pub upstream_ca: Vec<PathBuf>,

    /// Do not print a notice on stderr for each refused connection (for full-screen
    /// programs); the decision log still records every one.
    #[arg(long, short = 'q')]
    pub quiet: bool,

    /// Print the filesystem view (what the sandbox may read and write, and why) and exit
    /// without running anything.
    #[arg(long)]
    pub explain_fs: bool,

    /// The command to run in the sandbox, with its arguments.
    #[arg(trailing_var_arg = true, required_unless_present = "explain_fs")]
    pub command: Vec<OsString>,
}

/// The policy `corral run` enforces without `--policy`: no connection is allowed.
pub(crate) const DEFAULT_POLICY: &str = include_str!("default-policy.yaml");
