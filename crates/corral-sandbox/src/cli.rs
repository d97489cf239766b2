//! `corral run` and `corral doctor`.

use std::ffi::OsString;
use std::process::ExitCode;

/// `corral run --policy P -- CMD ARGS…`
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// The command to run in the sandbox, with its arguments.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
    pub command: Vec<OsString>,
}

/// `corral doctor`
#[derive(Debug, clap::Args)]
pub struct DoctorArgs {}

pub fn run(_args: RunArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("corral run is not implemented yet")
}

pub fn doctor(_args: DoctorArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("corral doctor is not implemented yet")
}
