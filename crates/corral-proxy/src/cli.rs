//! `corral proxy` and `corral policy suggest`.

use std::process::ExitCode;

/// `corral proxy`
#[derive(Debug, clap::Args)]
pub struct ProxyArgs {}

/// `corral policy suggest --from LOG`
#[derive(Debug, clap::Args)]
pub struct SuggestArgs {}

pub fn serve(_args: ProxyArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("corral proxy is not implemented yet")
}

pub fn suggest(_args: SuggestArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("corral policy suggest is not implemented yet")
}
