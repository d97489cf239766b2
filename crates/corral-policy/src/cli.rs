//! `corral policy check | explain`.

use std::path::PathBuf;
use std::process::ExitCode;

/// `corral policy check FILE…`
#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// Policy files to validate.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
}

/// `corral policy explain FILE --binary B --dest HOST:PORT`
#[derive(Debug, clap::Args)]
pub struct ExplainArgs {
    /// The policy file.
    pub file: PathBuf,
}

pub fn check(_args: CheckArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("corral policy check is not implemented yet")
}

pub fn explain(_args: ExplainArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("corral policy explain is not implemented yet")
}
