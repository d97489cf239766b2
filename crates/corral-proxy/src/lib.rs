//! corral's egress proxy.
//!
//! An HTTP/1.1 forward proxy that lets an *executable* reach a *host:port* only when the
//! policy says so. The model, in the order a connection meets it:
//!
//! 1. **Attribution** ([`Attribution`]): the accepted connection is mapped to the
//!    [`Identity`](corral_policy::Identity) of the process behind it — exactly, by
//!    `corral run`'s connect-time table, or by [`ProcResolver`] for the standalone
//!    `corral proxy`. Unattributed connections are refused.
//! 2. **Request head** ([`head`]): `CONNECT host:port` or an absolute-form `http://` request,
//!    parsed with `httparse`; anything malformed gets 400/408/431.
//! 3. **Decision**: one snapshot of the policy in force ([`PolicyHandle`]) decides, *before*
//!    any DNS lookup. A refusal is `403` + `X-Corral-Error` + the policy crate's `Report` as
//!    JSON. Plain HTTP keep-alive connections get a fresh decision per request.
//! 4. **Dialling** ([`dial`]): an allowed name is resolved once (override table, else DNS),
//!    every address is classified ([`addr`]) and refused unless public or covered by the
//!    endpoint's `allowed_ips`, and exactly the checked addresses are dialled — or the
//!    connection is chained through a corporate upstream proxy.
//! 5. **Relay** ([`relay`]) and **log** ([`DecisionLog`]): bytes flow both ways with an idle
//!    timeout; when the connection or request ends one JSON line records the decision.

pub mod addr;
mod attribution;
pub mod cli;
mod config;
mod conn;
mod credentials;
mod decide;
pub mod dial;
mod fold;
pub mod head;
mod hint;
pub mod intercept;
mod io;
mod log;
mod metrics;
mod names;
mod notices;
mod policy_handle;
mod record;
pub mod relay;
mod revoke;
mod server;
// The syscall layer: the only module allowed `unsafe` (each block with a SAFETY note).
#[allow(unsafe_code)]
mod sys;

pub use attribution::{sha256_file, Attribution, FixedIdentity, ProcResolver, Unattributed};
pub use config::{Limits, Overridden, Overrides, ProxyConfig, UpstreamProxy};
pub use intercept::{CertAuthority, Intercept, InterceptArgs};
pub use log::{
    now_rfc3339, refusal, DecisionLog, LogRecord, LogStats, Repeated, DEFAULT_MAX_BYTES,
};
pub use metrics::Metrics;
pub use names::NameOverrides;
pub use policy_handle::PolicyHandle;
pub use server::{serve, serve_admin};
pub use sys::{sock_diag_socket, tcp_client_inode};
