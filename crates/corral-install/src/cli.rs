//! `corral install` and `corral uninstall`.

use std::process::ExitCode;

/// `corral install claude --mirror URL --gateway URL …`
#[derive(Debug, clap::Args)]
pub struct InstallArgs {}

/// `corral uninstall claude`
#[derive(Debug, clap::Args)]
pub struct UninstallArgs {}

pub fn install(_args: InstallArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("corral install is not implemented yet")
}

pub fn uninstall(_args: UninstallArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("corral uninstall is not implemented yet")
}
