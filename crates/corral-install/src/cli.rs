//! `corral install` and `corral uninstall`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::bail;

use crate::install::{self, Plan};
use crate::layout::Layout;

/// The agents corral knows how to install.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Agent {
    /// Claude Code.
    Claude,
}

/// `corral install claude --mirror URL --gateway URL …`
#[derive(Debug, clap::Args)]
pub struct InstallArgs {
    /// What to install.
    pub agent: Agent,
    /// Base URL of the release mirror (`corral mirror serve`).
    #[arg(long, required_unless_present = "rollback")]
    pub mirror: Option<String>,
    /// URL of the LLM gateway Claude Code should talk to.
    #[arg(long, required_unless_present = "rollback")]
    pub gateway: Option<String>,
    /// AWS region (Bedrock mode).
    #[arg(long, default_value = "us-east-1")]
    pub region: String,
    /// Model to pin (also pins the opus/sonnet/haiku defaults, so the client does not probe).
    #[arg(long)]
    pub model: Option<String>,
    /// `stable`, `latest`, or an exact version.
    #[arg(long, default_value = "stable")]
    pub channel: String,
    /// Extra CA certificate(s) to trust (PEM) for the mirror (SSL_CERT_FILE is honoured
    /// too). With --real-key, also for Claude Code's calls to the gateway (written to
    /// settings.json as NODE_EXTRA_CA_CERTS); by default corral run's proxy checks the
    /// gateway's certificate instead: give it this file with `corral run --upstream-ca`.
    #[arg(long)]
    pub ca_file: Option<PathBuf>,
    /// Give Claude Code the real gateway key (its api-key helper reads
    /// ~/.config/corral/gateway-key). By default it holds only the placeholder
    /// `corral-placeholder-gateway-key`, which corral run's proxy replaces with the key in
    /// requests to the gateway (a policy `credentials` entry with `tls: terminate`), so
    /// nothing in the sandbox can read the key; Claude Code then works only inside
    /// corral run. With this flag it works outside too, and the sandbox can read the key.
    #[arg(long)]
    pub real_key: bool,
    /// The gateway speaks the Anthropic API: set ANTHROPIC_BASE_URL instead of Bedrock mode.
    #[arg(long)]
    pub first_party: bool,
    /// Install this platform's build instead of the detected one.
    #[arg(long)]
    pub platform: Option<String>,
    /// Do not add ~/.local/bin to PATH in a shell rc file.
    #[arg(long)]
    pub no_modify_path: bool,
    /// Switch back to the previously installed version.
    #[arg(long, conflicts_with_all = ["mirror", "gateway", "model", "channel", "first_party", "platform", "real_key"])]
    pub rollback: bool,
}

/// `corral uninstall claude`
#[derive(Debug, clap::Args)]
pub struct UninstallArgs {
    /// What to remove.
    pub agent: Agent,
}

pub fn install(args: InstallArgs) -> anyhow::Result<ExitCode> {
    refuse_sudo()?;
    let layout = Layout::from_env()?;
    let changes = if args.rollback {
        install::rollback(&layout)?
    } else {
        let plan = Plan {
            mirror: args.mirror.expect("clap requires --mirror"),
            gateway: args.gateway.expect("clap requires --gateway"),
            region: args.region,
            model: args.model,
            channel: args.channel,
            ca_file: args.ca_file.map(|f| std::path::absolute(&f).unwrap_or(f)),
            first_party: args.first_party,
            real_key: args.real_key,
            platform: args.platform,
            modify_path: !args.no_modify_path,
        };
        if !(plan.gateway.starts_with("https://") || plan.gateway.starts_with("http://")) {
            bail!(
                "--gateway must be an http:// or https:// URL, not {:?}",
                plan.gateway
            );
        }
        install::install(&layout, &plan)?
    };
    report(
        &changes,
        "Claude Code is installed and configured; nothing changed",
    );
    let key_set = std::env::var_os("CORRAL_GATEWAY_KEY").is_some_and(|k| !k.is_empty());
    if !args.rollback && !key_set && !layout.key_file.exists() {
        eprintln!(
            "next: put your gateway key in {} (chmod 600), or set CORRAL_GATEWAY_KEY",
            layout.key_file.display()
        );
    }
    if !args.rollback && !args.real_key {
        eprintln!("{}", placeholder_note(&layout.key_file));
    }
    Ok(ExitCode::SUCCESS)
}

pub fn uninstall(args: UninstallArgs) -> anyhow::Result<ExitCode> {
    let Agent::Claude = args.agent;
    refuse_sudo()?;
    let layout = Layout::from_env()?;
    let changes = install::uninstall(&layout)?;
    report(
        &changes,
        "corral has not installed Claude Code for this user; nothing to remove",
    );
    Ok(ExitCode::SUCCESS)
}

/// What placeholder mode needs from the policy `corral run` uses.
fn placeholder_note(key_file: &std::path::Path) -> String {
    let home = std::env::var_os("HOME").map(PathBuf::from);
    let shown = match home.as_deref().and_then(|h| key_file.strip_prefix(h).ok()) {
        Some(rel) => format!("~/{}", rel.display()),
        None => key_file.display().to_string(),
    };
    format!(
        "note: Claude Code holds the placeholder {}, not your gateway key: run it with corral run, whose policy puts the key from {shown} in its requests to the gateway (a `credentials` entry on a `tls: terminate` endpoint: docs/gateway.md, \"The key the sandbox never holds\"). --real-key gives Claude Code the key itself.",
        crate::shell::PLACEHOLDER,
    )
}

fn report(changes: &[String], none: &str) {
    if changes.is_empty() {
        println!("{none}");
    }
    for change in changes {
        println!("{change}");
    }
}

/// The whole point is a per-user install: under sudo it would land in root's home.
fn refuse_sudo() -> anyhow::Result<()> {
    if crate::fsx::effective_uid() == Some(0) && std::env::var_os("SUDO_USER").is_some() {
        bail!("corral install needs no sudo and must not run under it (it would install into root's home); run it as yourself");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[derive(clap::Parser)]
    #[command(name = "corral", version, propagate_version = true)]
    enum Cli {
        Install(super::InstallArgs),
        Uninstall(super::UninstallArgs),
    }

    #[test]
    fn arguments_are_consistent() {
        Cli::command().debug_assert();
    }
}
