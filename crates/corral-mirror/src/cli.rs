//! `corral mirror …`

use std::process::ExitCode;

#[derive(Debug, clap::Subcommand)]
pub enum MirrorCommand {
    /// Serve a mirror directory.
    Serve,
}

pub fn run(_cmd: MirrorCommand) -> anyhow::Result<ExitCode> {
    anyhow::bail!("corral mirror is not implemented yet")
}
