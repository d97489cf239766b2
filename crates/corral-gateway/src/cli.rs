//! `corral gateway …`

use std::process::ExitCode;

#[derive(Debug, clap::Subcommand)]
pub enum GatewayCommand {
    /// Serve the gateway.
    Serve,
}

pub fn run(_cmd: GatewayCommand) -> anyhow::Result<ExitCode> {
    anyhow::bail!("corral gateway is not implemented yet")
}
