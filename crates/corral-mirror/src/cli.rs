//! `corral mirror …`

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;

use crate::fetch::Fetcher;
use crate::release::{self, SELF_DIR};
use crate::script::ScriptSettings;
use crate::server::{self, RedirectConfig, ServeConfig};
use crate::sign::{now_unix, SigningKey};
use crate::store::{write_atomic, Store};
use crate::sync::{self, SyncRequest};

#[derive(Debug, clap::Subcommand)]
pub enum MirrorCommand {
    /// Serve a mirror directory (Claude Code's release layout, install.sh, corral itself).
    Serve(ServeArgs),
    /// Add a binary to a release: computes its SHA-256 and size and updates the manifest.
    Add(AddArgs),
    /// Publish a corral binary (by default this one) so install.sh can bootstrap from the mirror.
    AddSelf(AddSelfArgs),
    /// Point a channel (stable or latest) at a version.
    SetChannel(SetChannelArgs),
    /// Copy releases from an upstream mirror, verifying every checksum.
    Sync(SyncArgs),
    /// Re-check every binary on disk against its manifest.
    Verify(VerifyArgs),
    /// Print a signed storage link for a path (as redirect mode would issue).
    Presign(PresignArgs),
}

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// The mirror directory.
    pub dir: PathBuf,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// TLS certificate chain (PEM). With --tls-key, serves HTTPS on both listeners.
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// TLS private key (PEM).
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// The mirror's URL as clients see it, baked into install.sh (default: from the Host header).
    #[arg(long)]
    pub public_url: Option<String>,
    /// Redirect mode: also listen here as the storage endpoint, and answer binary downloads
    /// with 302 to signed links on it.
    #[arg(long, requires = "signing_key")]
    pub storage_listen: Option<SocketAddr>,
    /// The storage endpoint's URL as clients see it (default: scheme://STORAGE_LISTEN).
    #[arg(long, requires = "storage_listen")]
    pub storage_url: Option<String>,
    /// File holding the HMAC key for storage links (at least 16 bytes).
    #[arg(long)]
    pub signing_key: Option<PathBuf>,
    /// How long a storage link stays valid, in seconds.
    #[arg(long, default_value_t = 300)]
    pub link_ttl: u64,
    /// Append access-log lines (JSON) to this file instead of stdout.
    #[arg(long)]
    pub access_log: Option<PathBuf>,
    /// install.sh: the LLM gateway URL of this deployment.
    #[arg(long)]
    pub gateway: Option<String>,
    /// install.sh: AWS region for Bedrock mode.
    #[arg(long)]
    pub region: Option<String>,
    /// install.sh: model to pin.
    #[arg(long)]
    pub model: Option<String>,
    /// install.sh: channel or version to install.
    #[arg(long)]
    pub channel: Option<String>,
    /// install.sh: the gateway speaks the Anthropic API (not Bedrock).
    #[arg(long)]
    pub first_party: bool,
}

#[derive(Debug, clap::Args)]
#[command(disable_version_flag = true)]
pub struct AddArgs {
    /// The mirror directory.
    pub dir: PathBuf,
    /// Release version (e.g. 2.1.3).
    #[arg(long)]
    pub version: String,
    /// Platform key (linux-x64, linux-arm64, linux-x64-musl, …).
    #[arg(long)]
    pub platform: String,
    /// Name of the binary in the release (Claude Code's layout uses `claude`).
    #[arg(long, default_value = "claude")]
    pub binary: String,
    /// Commit recorded in the manifest.
    #[arg(long)]
    pub commit: Option<String>,
    /// The file to publish.
    pub file: PathBuf,
}

#[derive(Debug, clap::Args)]
#[command(disable_version_flag = true)]
pub struct AddSelfArgs {
    /// The mirror directory.
    pub dir: PathBuf,
    /// The corral binary to publish (default: the running one).
    pub file: Option<PathBuf>,
    /// Version (default: this corral's version).
    #[arg(long)]
    pub version: Option<String>,
    /// Platform (default: the one this corral was built for).
    #[arg(long)]
    pub platform: Option<String>,
}

#[derive(Debug, clap::Args)]
#[command(disable_version_flag = true)]
pub struct SetChannelArgs {
    /// The mirror directory.
    pub dir: PathBuf,
    /// `stable` or `latest`.
    pub channel: String,
    /// A version already in the mirror.
    pub version: String,
}

#[derive(Debug, clap::Args)]
#[command(disable_version_flag = true)]
pub struct SyncArgs {
    /// The local mirror directory.
    pub dir: PathBuf,
    /// Base URL of the upstream mirror.
    #[arg(long)]
    pub from: String,
    /// Versions to copy (repeatable; default: what the upstream's stable and latest point at).
    #[arg(long = "version")]
    pub versions: Vec<String>,
    /// Platforms to copy (repeatable; default: all).
    #[arg(long = "platform")]
    pub platforms: Vec<String>,
    /// Extra CA certificate(s) to trust (PEM).
    #[arg(long)]
    pub ca_file: Option<PathBuf>,
    /// Do not copy corral's own releases (`/corral/…`).
    #[arg(long)]
    pub no_self: bool,
}

#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    /// The mirror directory.
    pub dir: PathBuf,
}

#[derive(Debug, clap::Args)]
pub struct PresignArgs {
    /// File holding the HMAC key.
    #[arg(long)]
    pub signing_key: PathBuf,
    /// Base URL of the storage endpoint.
    #[arg(long)]
    pub storage_url: String,
    /// Seconds the link stays valid.
    #[arg(long, default_value_t = 300, conflicts_with = "expires_at")]
    pub ttl: u64,
    /// Absolute expiry (Unix seconds), instead of --ttl.
    #[arg(long)]
    pub expires_at: Option<u64>,
    /// Path on the mirror, e.g. /2.1.3/linux-x64/claude.
    pub path: String,
}

pub fn run(cmd: MirrorCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        MirrorCommand::Serve(args) => serve(args),
        MirrorCommand::Add(args) => {
            let store = Store::new(&args.dir);
            let added = store.add(&args.version, &args.platform, &args.binary, &args.file)?;
            if let Some(commit) = args.commit {
                let _lock = store.lock()?;
                if let Some(mut m) = store.manifest(&args.version)? {
                    m.commit = commit;
                    store.write_manifest(&m)?;
                }
            }
            println!(
                "added {} ({} bytes, sha256 {})",
                added.path.display(),
                added.entry.size,
                added.entry.checksum
            );
            Ok(ExitCode::SUCCESS)
        }
        MirrorCommand::AddSelf(args) => add_self(args),
        MirrorCommand::SetChannel(args) => {
            Store::new(&args.dir).set_channel(&args.channel, &args.version)?;
            println!("{} now points at {}", args.channel, args.version);
            Ok(ExitCode::SUCCESS)
        }
        MirrorCommand::Sync(args) => sync_cmd(args),
        MirrorCommand::Verify(args) => {
            let mut all = Vec::new();
            let mut checked = 0;
            for store in [Store::new(&args.dir), Store::new(args.dir.join(SELF_DIR))] {
                let (problems, n) = store.verify()?;
                all.extend(problems);
                checked += n;
            }
            for problem in &all {
                println!("FAIL {problem}");
            }
            if all.is_empty() {
                println!("ok: {checked} binaries match their manifests");
                Ok(ExitCode::SUCCESS)
            } else {
                eprintln!(
                    "corral mirror verify: {} problem(s) in {} ({checked} binaries checked)",
                    all.len(),
                    args.dir.display()
                );
                Ok(ExitCode::FAILURE)
            }
        }
        MirrorCommand::Presign(args) => {
            let key = SigningKey::from_file(&args.signing_key)?;
            if !args.path.starts_with('/') {
                anyhow::bail!("the path must start with '/': {}", args.path);
            }
            let expires = args.expires_at.unwrap_or_else(|| now_unix() + args.ttl);
            println!(
                "{}{}?{}",
                args.storage_url.trim_end_matches('/'),
                args.path,
                key.query(&args.path, expires)
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn serve(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(server::tls_config(cert, key)?),
        _ => None,
    };
    let scheme = if tls.is_some() { "https" } else { "http" };
    let redirect = match args.storage_listen {
        Some(storage_listen) => {
            let key_path = args
                .signing_key
                .as_ref()
                .expect("clap requires --signing-key");
            Some(RedirectConfig {
                storage_listen,
                storage_url: args
                    .storage_url
                    .clone()
                    .unwrap_or_else(|| format!("{scheme}://{storage_listen}")),
                key: SigningKey::from_file(key_path)?,
                ttl: Duration::from_secs(args.link_ttl),
            })
        }
        None => None,
    };
    if let Some(channel) = &args.channel {
        if !release::CHANNELS.contains(&channel.as_str()) {
            release::validate_version(channel)
                .map_err(|e| anyhow::anyhow!("--channel: {e}; or use stable / latest"))?;
        }
    }
    let config = ServeConfig {
        root: args.dir,
        listen: args.listen,
        tls,
        public_url: args.public_url,
        redirect,
        script: ScriptSettings {
            gateway: args.gateway,
            region: args.region,
            model: args.model,
            channel: args.channel,
            first_party: args.first_party,
        },
        access_log: args.access_log,
    };
    runtime()?.block_on(server::serve(config))?;
    Ok(ExitCode::SUCCESS)
}

fn add_self(args: AddSelfArgs) -> anyhow::Result<ExitCode> {
    let file = match args.file {
        Some(f) => f,
        None => std::env::current_exe().context("cannot find the running corral binary")?,
    };
    let version = args
        .version
        .unwrap_or_else(|| env!("CARGO_PKG_VERSION").to_string());
    let platform = match args.platform {
        Some(p) => p,
        None => release::build_platform().map_err(anyhow::Error::msg)?,
    };
    let store = Store::new(args.dir.join(SELF_DIR));
    let added = store.add(&version, &platform, "corral", &file)?;
    let sum_path = added.path.with_file_name("corral.sha256");
    write_atomic(
        &sum_path,
        format!("{}  corral\n", added.entry.checksum).as_bytes(),
        0o644,
    )?;
    store.set_channel("latest", &version)?;
    println!(
        "added corral {version} for {platform} at {} (sha256 {}); corral/latest -> {version}",
        added.path.display(),
        added.entry.checksum
    );
    Ok(ExitCode::SUCCESS)
}

fn sync_cmd(args: SyncArgs) -> anyhow::Result<ExitCode> {
    for p in &args.platforms {
        release::validate_platform(p).map_err(anyhow::Error::msg)?;
    }
    let fetcher = Fetcher::new(args.ca_file.as_deref())?;
    let from = args.from.trim_end_matches('/').to_string();
    let rt = runtime()?;
    let report = rt.block_on(sync::sync(
        &Store::new(&args.dir),
        &fetcher,
        &SyncRequest {
            from: from.clone(),
            versions: args.versions,
            platforms: args.platforms.clone(),
            checksum_files: false,
        },
    ))?;
    println!(
        "synced {} from {from}: {} downloaded and verified, {} already present{}",
        report.versions.join(", "),
        report.downloaded,
        report.already_present,
        report
            .channels
            .iter()
            .map(|(c, v)| format!("; {c} -> {v}"))
            .collect::<String>()
    );
    if !args.no_self {
        let self_url = format!("{from}/{SELF_DIR}");
        let probe = rt.block_on(fetcher.text(&format!("{self_url}/latest")));
        match probe {
            Ok(_) => {
                let report = rt.block_on(sync::sync(
                    &Store::new(args.dir.join(SELF_DIR)),
                    &fetcher,
                    &SyncRequest {
                        from: self_url.clone(),
                        versions: Vec::new(),
                        platforms: args.platforms,
                        checksum_files: true,
                    },
                ))?;
                println!(
                    "synced corral {} from {self_url}: {} downloaded and verified, {} already present",
                    report.versions.join(", "),
                    report.downloaded,
                    report.already_present
                );
            }
            Err(e) if crate::fetch::is_not_found(&e) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    /// The binary propagates `--version` to subcommands; our `--version` options must not clash.
    #[derive(clap::Parser)]
    #[command(name = "corral", version, propagate_version = true)]
    struct Cli {
        #[command(subcommand)]
        command: super::MirrorCommand,
    }

    #[test]
    fn arguments_are_consistent() {
        Cli::command().debug_assert();
    }
}
