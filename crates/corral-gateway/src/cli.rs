//! `corral gateway …`

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::clock;
use crate::config::Config;
use crate::keys::{self, KeyRecord, KeysFile, Limits};

#[derive(Debug, clap::Subcommand)]
pub enum GatewayCommand {
    /// Serve the gateway (Bedrock runtime and Anthropic Messages APIs).
    Serve(ServeArgs),
    /// Manage the keys file: add, revoke, list.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Print your gateway key, for Claude Code's `apiKeyHelper` setting.
    ///
    /// Reads the environment variable first (if set), else the key file, which must not be
    /// readable by group or others.
    KeyHelper(KeyHelperArgs),
}

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// The gateway's configuration file (TOML; see docs/gateway.md).
    #[arg(long, short, env = "CORRAL_GATEWAY_CONFIG")]
    pub config: PathBuf,
    /// Validate the configuration (and the keys file, TLS files, upstream credentials) and exit.
    #[arg(long)]
    pub check: bool,
}

#[derive(Debug, clap::Subcommand)]
pub enum KeysCommand {
    /// Create a key; prints it once (only its hash is stored).
    Add(KeysAddArgs),
    /// Revoke a key: refused from the next request on.
    Revoke(KeysRevokeArgs),
    /// List keys (never secrets).
    List(KeysListArgs),
}

#[derive(Debug, clap::Args)]
pub struct KeysFileArg {
    /// The keys file named by the gateway configuration's `keys_file`.
    #[arg(long, env = "CORRAL_GATEWAY_KEYS_FILE")]
    pub keys_file: PathBuf,
}

#[derive(Debug, clap::Args)]
pub struct KeysAddArgs {
    #[command(flatten)]
    pub file: KeysFileArg,
    /// Who the key belongs to (shown in the audit log).
    #[arg(long)]
    pub owner: String,
    /// Key id (a-z, 0-9, '-'); random if omitted.
    #[arg(long)]
    pub id: Option<String>,
    /// Team, for per-team limits.
    #[arg(long)]
    pub team: Option<String>,
    /// Models the key may use (comma-separated client-visible ids; `*` or `prefix*`).
    #[arg(long, value_delimiter = ',', default_value = "*")]
    pub models: Vec<String>,
    /// Requests per minute.
    #[arg(long)]
    pub rpm: Option<u64>,
    /// Tokens per minute (input + output).
    #[arg(long)]
    pub tpm: Option<u64>,
    /// Expiry, RFC 3339 (2027-01-31 or 2027-01-31T12:00:00Z).
    #[arg(long)]
    pub expires: Option<String>,
    /// Also write the key to this file (mode 0600), e.g. for `key-helper --file`.
    #[arg(long)]
    pub key_out: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct KeysRevokeArgs {
    #[command(flatten)]
    pub file: KeysFileArg,
    /// The key id to revoke.
    pub id: String,
}

#[derive(Debug, clap::Args)]
pub struct KeysListArgs {
    #[command(flatten)]
    pub file: KeysFileArg,
    /// JSON lines instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
pub struct KeyHelperArgs {
    /// File holding the key (default: ~/.config/corral/gateway-key).
    #[arg(long)]
    pub file: Option<PathBuf>,
    /// Environment variable holding the key.
    #[arg(long, default_value = "CORRAL_GATEWAY_KEY")]
    pub env: String,
}

pub fn run(cmd: GatewayCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        GatewayCommand::Serve(args) => serve(args),
        GatewayCommand::Keys(KeysCommand::Add(args)) => keys_add(args),
        GatewayCommand::Keys(KeysCommand::Revoke(args)) => keys_revoke(args),
        GatewayCommand::Keys(KeysCommand::List(args)) => keys_list(args),
        GatewayCommand::KeyHelper(args) => key_helper(args),
    }
}

fn serve(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let config = Config::load(&args.config)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("corral-gateway")
        .build()?;
    runtime.block_on(async move {
        let server = crate::server::Server::bind(config).await?;
        if args.check {
            println!("gateway config {} is valid", args.config.display());
            return Ok(ExitCode::SUCCESS);
        }
        let gw = server.gateway();
        tracing::info!(
            models = gw.models.all().len(),
            keys_file = %gw.config.keys_file.display(),
            audit_log = %gw.config.audit.path.display(),
            "corral gateway serving"
        );
        // Tests and scripts wait for this line.
        eprintln!("corral gateway listening on {}", server.url());
        server.run(crate::server::shutdown_signal()).await?;
        Ok(ExitCode::SUCCESS)
    })
}

fn keys_add(args: KeysAddArgs) -> anyhow::Result<ExitCode> {
    let path = &args.file.keys_file;
    let mut file = KeysFile::load(path)?;
    let id = match args.id {
        Some(id) => id,
        None => keys::random_id()?,
    };
    if !keys::valid_id(&id) {
        anyhow::bail!("key id {id:?} must be 1-64 characters of a-z, 0-9 and '-'");
    }
    if file.keys.iter().any(|k| k.id == id) {
        anyhow::bail!(
            "key id {id:?} already exists in {}; pick another --id",
            path.display()
        );
    }
    if let Some(exp) = &args.expires {
        if clock::parse_rfc3339(exp).is_none() {
            anyhow::bail!(
                "--expires {exp:?}: use RFC 3339 like 2027-01-31 or 2027-01-31T12:00:00Z"
            );
        }
    }
    let (key, hash) = keys::generate(&id)?;
    file.keys.push(KeyRecord {
        id: id.clone(),
        hash,
        owner: args.owner,
        team: args.team,
        models: args.models,
        limits: Limits {
            requests_per_minute: args.rpm,
            tokens_per_minute: args.tpm,
        },
        expires: args.expires,
        created: Some(clock::rfc3339(clock::now_secs())),
        revoked: None,
    });
    if let Some(out) = &args.key_out {
        write_secret(out, &key)?;
    }
    file.save(path)?;
    eprintln!(
        "added key {id} to {} (shown once; only its hash is stored)",
        path.display()
    );
    println!("{key}");
    Ok(ExitCode::SUCCESS)
}

fn write_secret(path: &Path, key: &str) -> anyhow::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    writeln!(f, "{key}")?;
    Ok(())
}

fn keys_revoke(args: KeysRevokeArgs) -> anyhow::Result<ExitCode> {
    let path = &args.file.keys_file;
    let mut file = KeysFile::load(path)?;
    let Some(rec) = file.keys.iter_mut().find(|k| k.id == args.id) else {
        anyhow::bail!(
            "no key {:?} in {} (see `corral gateway keys list --keys-file {}`)",
            args.id,
            path.display(),
            path.display()
        );
    };
    if rec.revoked.is_some() {
        eprintln!("key {} was already revoked", args.id);
        return Ok(ExitCode::SUCCESS);
    }
    rec.revoked = Some(clock::rfc3339(clock::now_secs()));
    file.save(path)?;
    eprintln!(
        "revoked key {}; a running gateway refuses it from its next request",
        args.id
    );
    Ok(ExitCode::SUCCESS)
}

fn keys_list(args: KeysListArgs) -> anyhow::Result<ExitCode> {
    let file = KeysFile::load(&args.file.keys_file)?;
    let now = clock::now_secs();
    let status = |k: &KeyRecord| {
        if k.revoked.is_some() {
            "revoked"
        } else if k
            .expires
            .as_deref()
            .and_then(clock::parse_rfc3339)
            .is_some_and(|e| e <= now)
        {
            "expired"
        } else {
            "active"
        }
    };
    let limit = |v: Option<u64>| v.map(|n| n.to_string()).unwrap_or_else(|| "-".into());
    if args.json {
        for k in &file.keys {
            println!(
                "{}",
                serde_json::json!({
                    "id": k.id, "owner": k.owner, "team": k.team, "models": k.models,
                    "requests_per_minute": k.limits.requests_per_minute,
                    "tokens_per_minute": k.limits.tokens_per_minute,
                    "expires": k.expires, "created": k.created, "revoked": k.revoked,
                    "status": status(k),
                })
            );
        }
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<20} {:<8} {:<20} {:<12} {:>6} {:>10} {:<22} MODELS",
        "ID", "STATUS", "OWNER", "TEAM", "RPM", "TPM", "EXPIRES"
    );
    for k in &file.keys {
        println!(
            "{:<20} {:<8} {:<20} {:<12} {:>6} {:>10} {:<22} {}",
            k.id,
            status(k),
            k.owner,
            k.team.as_deref().unwrap_or("-"),
            limit(k.limits.requests_per_minute),
            limit(k.limits.tokens_per_minute),
            k.expires.as_deref().unwrap_or("-"),
            k.models.join(",")
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn key_helper(args: KeyHelperArgs) -> anyhow::Result<ExitCode> {
    if let Ok(key) = std::env::var(&args.env) {
        let key = key.trim();
        if !key.is_empty() {
            println!("{key}");
            return Ok(ExitCode::SUCCESS);
        }
    }
    let path = match args.file {
        Some(p) => p,
        None => {
            let home = std::env::var_os("HOME").ok_or_else(|| {
                anyhow::anyhow!("HOME is not set: pass --file or set ${}", args.env)
            })?;
            PathBuf::from(home).join(".config/corral/gateway-key")
        }
    };
    let md = std::fs::metadata(&path).map_err(|e| {
        anyhow::anyhow!(
            "no gateway key: ${} is not set and {} cannot be read ({e}); ask your platform team for a key",
            args.env,
            path.display()
        )
    })?;
    if md.permissions().mode() & 0o077 != 0 {
        anyhow::bail!(
            "{} is readable by other users (mode {:o}); run `chmod 600 {}`",
            path.display(),
            md.permissions().mode() & 0o777,
            path.display()
        );
    }
    let text = std::fs::read_to_string(&path)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
    let key = text.trim();
    if key.is_empty() {
        anyhow::bail!("{} is empty", path.display());
    }
    println!("{key}");
    Ok(ExitCode::SUCCESS)
}
