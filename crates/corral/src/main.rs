//! The `corral` binary: parses arguments and hands each job to the crate that does it.

#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Run AI coding agents where every byte of egress is governed.
#[derive(Debug, Parser)]
#[command(name = "corral", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a command in a sandbox whose every connection goes through the egress proxy.
    Run(corral_sandbox::cli::RunArgs),
    /// Tell whether this host can run corral, and in which isolation mode.
    Doctor(corral_sandbox::cli::DoctorArgs),
    /// Run the egress proxy as a standalone service.
    Proxy(corral_proxy::cli::ProxyArgs),
    /// Check, explain and suggest policies.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// The LLM gateway: serve, manage keys.
    #[command(subcommand)]
    Gateway(corral_gateway::cli::GatewayCommand),
    /// The release mirror: serve, add releases, verify.
    #[command(subcommand)]
    Mirror(corral_mirror::cli::MirrorCommand),
    /// Install an agent from the mirror, without sudo.
    Install(corral_install::cli::InstallArgs),
    /// Remove what `corral install` installed, and nothing else.
    Uninstall(corral_install::cli::UninstallArgs),
}

#[derive(Debug, Subcommand)]
enum PolicyCommand {
    /// Validate policy files: exit 0 (warnings printed) or 1 (errors).
    Check(corral_policy::cli::CheckArgs),
    /// Show the decision the proxy would make for a binary and a destination.
    Explain(corral_policy::cli::ExplainArgs),
    /// Turn refusals in a proxy log into the policy lines that would allow them.
    Suggest(corral_policy::cli::SuggestArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    let result = match cli.command {
        Command::Run(args) => corral_sandbox::cli::run(args),
        Command::Doctor(args) => corral_sandbox::cli::doctor(args),
        Command::Proxy(args) => corral_proxy::cli::serve(args),
        Command::Policy(PolicyCommand::Check(args)) => corral_policy::cli::check(args),
        Command::Policy(PolicyCommand::Explain(args)) => corral_policy::cli::explain(args),
        Command::Policy(PolicyCommand::Suggest(args)) => corral_policy::cli::suggest(args),
        Command::Gateway(cmd) => corral_gateway::cli::run(cmd),
        Command::Mirror(cmd) => corral_mirror::cli::run(cmd),
        Command::Install(args) => corral_install::cli::install(args),
        Command::Uninstall(args) => corral_install::cli::uninstall(args),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("corral: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// Diagnostics go to stderr, filtered by `CORRAL_LOG` (default `info`).
/// Decision and audit logs are separate, structured streams owned by their crates.
fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("CORRAL_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .init();
}
