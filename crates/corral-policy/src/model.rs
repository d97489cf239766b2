//! The validated policy model.

use std::path::PathBuf;

use crate::diag::Diagnostic;
use crate::host::HostPattern;

/// A validated policy (`version: 1`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    /// The file name it was loaded from (used in messages).
    pub file: String,
    /// Schema version; always 1.
    pub version: u32,
    /// `network_policies`, in file order.
    pub network_policies: Vec<NetworkPolicy>,
    /// `filesystem_policy` (defaults when absent: `include_workdir: true`, empty lists).
    pub filesystem: FilesystemPolicy,
    /// `landlock.compatibility` (default `best_effort`).
    pub landlock_compatibility: LandlockCompatibility,
    /// `process` (default: both unset).
    pub process: ProcessPolicy,
    /// `unix_sockets` (corral's addition): host unix sockets the sandbox may connect to,
    /// as written (absolute or `~/…`, globs allowed). Empty: none.
    pub unix_sockets: Vec<String>,
}

/// A policy that loaded, and the warnings found while loading it.
#[derive(Clone, Debug)]
pub struct Loaded {
    /// The validated policy.
    pub policy: Policy,
    /// Warnings (unsupported fields, risky grants). Never errors.
    pub warnings: Vec<Diagnostic>,
}

/// Options for [`Policy::compile`].
#[derive(Default, Clone, Debug)]
pub struct CompileOptions {
    /// Expands `~/` and `$HOME/` at the start of binary paths. When `None`, such
    /// binary entries match nothing.
    pub home: Option<PathBuf>,
}

/// `filesystem_policy`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FilesystemPolicy {
    /// Whether the working directory is writable in the sandbox (default true).
    pub include_workdir: bool,
    /// Paths readable (not writable).
    pub read_only: Vec<PathBuf>,
    /// Paths readable and writable.
    pub read_write: Vec<PathBuf>,
}

impl Default for FilesystemPolicy {
    fn default() -> Self {
        FilesystemPolicy {
            include_workdir: true,
            read_only: Vec::new(),
            read_write: Vec::new(),
        }
    }
}

/// `landlock.compatibility`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum LandlockCompatibility {
    /// Use what the kernel supports; run anyway if Landlock is missing (`best_effort`).
    #[default]
    BestEffort,
    /// Refuse to run without full Landlock support (`hard_requirement`).
    HardRequirement,
}

/// `process`.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct ProcessPolicy {
    /// `run_as_user`, as written.
    pub run_as_user: Option<String>,
    /// `run_as_group`, as written.
    pub run_as_group: Option<String>,
}

/// One entry of `network_policies`: a set of binaries allowed to reach a set of endpoints.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetworkPolicy {
    /// The map key (e.g. `github`); this is the name decisions report.
    pub key: String,
    /// The optional display `name`.
    pub name: Option<String>,
    /// Endpoints in file order.
    pub endpoints: Vec<Endpoint>,
    /// Binaries in file order.
    pub binaries: Vec<BinaryRule>,
    /// `credentials` (corral): secrets the proxy puts in requests of this group's binaries
    /// to this group's endpoints, in place of a placeholder the sandbox holds.
    pub credentials: Vec<Credential>,
    /// Line of the key in the file.
    pub line: usize,
}

/// One entry of a group's `credentials`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credential {
    /// What the sandbox sees (in its environment or files) instead of the secret.
    pub placeholder: String,
    /// Where corral reads the secret (outside the sandbox's view).
    pub secret_file: PathBuf,
    /// Request headers (lower-case) in which the placeholder is replaced.
    pub headers: Vec<String>,
    /// Line in the file.
    pub line: usize,
}

/// One endpoint (`host` + ports, with optional L7 rules).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// The host pattern.
    pub host: HostPattern,
    /// Allowed ports (`port` or `ports`), non-empty, sorted, deduplicated.
    pub ports: Vec<u16>,
    /// `protocol` as written (`rest`, `tcp`, …).
    pub protocol: Option<String>,
    /// `tls`: `terminate` (the proxy reads the requests), `passthrough`/`skip` (a blind
    /// tunnel). Absent: terminate when the endpoint restricts requests, else a blind tunnel.
    pub tls: Option<TlsMode>,
    /// `enforcement: audit` logs requests the rules would refuse and lets them through.
    pub audit: bool,
    /// `allow_encoded_slash` (corral): request paths may contain `%2F`.
    pub allow_encoded_slash: bool,
    /// `access` preset.
    pub access: Option<Access>,
    /// `rules`: request allow rules.
    pub rules: Vec<L7Rule>,
    /// `deny_rules`: request deny rules (win over allows).
    pub deny_rules: Vec<L7Rule>,
    /// `allowed_ips`: private/special addresses this host may resolve to.
    pub allowed_ips: Vec<ipnet::IpNet>,
    /// Line of the endpoint in the file.
    pub line: usize,
}

impl Endpoint {
    /// True when requests to this endpoint are checked at L7 (rules or an access preset).
    pub fn has_l7(&self) -> bool {
        !self.rules.is_empty() || !self.deny_rules.is_empty() || self.access.is_some()
    }

    /// True when a TLS connection to this endpoint is terminated by the proxy so that each
    /// request inside it is decided (`tls: terminate`, or rules without `tls: passthrough`).
    pub fn inspects(&self) -> bool {
        match self.tls {
            Some(TlsMode::Terminate) => true,
            Some(TlsMode::Passthrough) => false,
            None => self.restricts_requests(),
        }
    }

    /// True if the endpoint allows only some requests (`rules`, `deny_rules`, or an
    /// `access` preset narrower than `full`): the proxy must see each request, so an
    /// opaque (TLS) tunnel to it cannot be allowed.
    pub fn restricts_requests(&self) -> bool {
        !self.rules.is_empty()
            || !self.deny_rules.is_empty()
            || matches!(self.access, Some(Access::ReadOnly | Access::ReadWrite))
    }
}

/// `tls` on an endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TlsMode {
    /// `terminate`: the proxy presents its own certificate and decides every request.
    Terminate,
    /// `passthrough` or `skip`: the bytes are relayed unread.
    Passthrough,
}

/// `access` presets for L7 endpoints.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// GET, HEAD, OPTIONS.
    ReadOnly,
    /// GET, HEAD, OPTIONS, POST, PUT, PATCH (not DELETE, nor unusual methods).
    ReadWrite,
    /// Every method.
    Full,
}

/// One L7 rule: a method, a path glob and query constraints.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct L7Rule {
    /// Upper-case method or `*`.
    pub method: String,
    /// Path glob (`*` within a segment, `**` across `/`); query included.
    pub path: String,
    /// `query`: each named parameter must be present with a value matching one of its
    /// globs.
    pub query: Vec<(String, Vec<String>)>,
}

/// Whether a binary's descendants inherit its grants.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Children {
    /// Only the binary itself (default).
    #[default]
    Deny,
    /// Any process whose ancestor matches this entry also gets the grant (`children: inherit`).
    Inherit,
}

/// One entry of `binaries`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BinaryRule {
    /// The path or glob, as written (before `~` expansion).
    pub path: String,
    /// Optional `sha256` pin (lowercase hex).
    pub sha256: Option<String>,
    /// `children: inherit` lets descendants use this grant.
    pub children: Children,
    /// Line in the file.
    pub line: usize,
}
