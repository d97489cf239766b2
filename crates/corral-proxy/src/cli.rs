//! `corral proxy`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use corral_policy::{CompileOptions, PolicyWatcher};

use crate::{
    Attribution, DecisionLog, FixedIdentity, Limits, NameOverrides, PolicyHandle, ProcResolver,
    ProxyConfig, UpstreamProxy,
};

/// `corral proxy`
#[derive(Debug, clap::Args)]
pub struct ProxyArgs {
    /// The policy file (watched: valid changes apply to new connections within a second).
    #[arg(long, value_name = "FILE")]
    pub policy: PathBuf,
    /// Address to listen on for proxy clients.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:3128")]
    pub listen: SocketAddr,
    /// Address for `GET /metrics` (Prometheus) and `/healthz`; off unless given.
    #[arg(long, value_name = "ADDR")]
    pub admin: Option<SocketAddr>,
    /// Append one JSON line per decision to FILE (see docs/logs.md).
    #[arg(long, value_name = "FILE")]
    pub log: Option<PathBuf>,
    /// Also write decision lines to stderr (default when --log is not given).
    #[arg(long)]
    pub log_stderr: bool,
    /// Rotate the --log file to FILE.1 before it grows past BYTES (0: never; leave it to
    /// logrotate). See docs/logs.md.
    #[arg(long, value_name = "BYTES", env = "CORRAL_LOG_MAX_BYTES", default_value_t = crate::DEFAULT_MAX_BYTES)]
    pub log_max_bytes: u64,
    #[command(flatten)]
    pub names: NameOverrides,
    #[command(flatten)]
    pub intercept: crate::InterceptArgs,
    /// Chain allowed connections through this corporate proxy (`http://[user:pass@]host:port`).
    #[arg(long, value_name = "URL")]
    pub upstream_proxy: Option<String>,
    /// Attribute every connection to this executable instead of looking the client up in
    /// /proc (for tests, and for a proxy dedicated to one program).
    #[arg(long, value_name = "PATH")]
    pub identity_exe: Option<PathBuf>,
    /// Seconds a client may take to send a request head (then 408).
    #[arg(long, value_name = "SECS", default_value_t = 10)]
    pub header_timeout: u64,
    /// Largest request head accepted, in bytes (then 431).
    #[arg(long, value_name = "BYTES", default_value_t = 32 * 1024)]
    pub max_header_bytes: usize,
    /// Seconds a tunnel or response may stay silent both ways before it is closed.
    #[arg(long, value_name = "SECS", default_value_t = 600)]
    pub idle_timeout: u64,
    /// Client connections served at once; more wait in the listen backlog.
    #[arg(long, value_name = "N", default_value_t = 10_000)]
    pub max_connections: usize,
}

fn home() -> Option<PathBuf> {
    std::env::var_os("HOME").map(PathBuf::from)
}

pub fn serve(args: ProxyArgs) -> anyhow::Result<ExitCode> {
    let overrides = args.names.table()?;
    let upstream_proxy = args
        .upstream_proxy
        .as_deref()
        .map(UpstreamProxy::parse)
        .transpose()
        .map_err(anyhow::Error::msg)?;
    if let Some(log) = &args.log {
        let dir = |p: &std::path::Path| {
            std::fs::canonicalize(
                p.parent()
                    .filter(|d| !d.as_os_str().is_empty())
                    .unwrap_or(std::path::Path::new(".")),
            )
            .ok()
        };
        if dir(log).is_some() && dir(log) == dir(&args.policy) {
            tracing::warn!(
                "the decision log {} is in the policy's directory: the policy watcher waits for that directory to be quiet, so under steady traffic reloads would be delayed; put the log elsewhere",
                log.display()
            );
        }
    }
    let log = match &args.log {
        Some(path) => DecisionLog::to_file(path)
            .with_context(|| format!("cannot open the decision log {}", path.display()))?
            .with_max_bytes(args.log_max_bytes)
            .with_stderr(args.log_stderr),
        None => DecisionLog::stderr(),
    };
    let metrics = Arc::new(crate::Metrics::of_log(&log));
    let intercept = args.intercept.load()?;
    let config = Arc::new(ProxyConfig {
        intercept,
        overrides,
        upstream_proxy,
        limits: Limits {
            header_read_timeout: Duration::from_secs(args.header_timeout.max(1)),
            max_header_bytes: args.max_header_bytes.max(1024),
            idle_timeout: Duration::from_secs(args.idle_timeout.max(1)),
            max_connections: args.max_connections.max(1),
            ..Limits::default()
        },
        log,
        metrics,
    });
    let attribution: Arc<dyn Attribution> = match &args.identity_exe {
        Some(exe) => {
            // Hashed once, so sha256 pins in the policy apply to the fixed identity too.
            let mut fixed = FixedIdentity::exe(exe.clone());
            fixed.0.sha256 = crate::sha256_file(exe).ok();
            Arc::new(fixed)
        }
        None => Arc::new(ProcResolver::new()),
    };

    if let Some(limit) = crate::sys::raise_open_files_limit() {
        tracing::debug!("up to {limit} open descriptors");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        // The handle is filled by the watcher's first load; reloads swap it.
        let slot: Arc<std::sync::OnceLock<PolicyHandle>> = Arc::new(std::sync::OnceLock::new());
        let on_change = {
            let slot = slot.clone();
            let metrics = config.metrics.clone();
            let path = args.policy.clone();
            move |matcher, warnings: &[corral_policy::Diagnostic]| {
                for w in warnings {
                    tracing::warn!("{w}");
                }
                if let Some(handle) = slot.get() {
                    // Open connections the new policy refuses are closed (`revoke.rs`).
                    let generation = handle.replace(matcher);
                    metrics.reloads_total.fetch_add(1, Relaxed);
                    metrics.policy_generation.store(generation, Relaxed);
                    tracing::info!(
                        "policy {} reloaded (generation {generation}); open connections it refuses are closed",
                        path.display()
                    );
                }
            }
        };
        let on_error = {
            let metrics = config.metrics.clone();
            let path = args.policy.clone();
            move |err: &corral_policy::PolicyError| {
                metrics.reload_errors_total.fetch_add(1, Relaxed);
                tracing::error!(
                    "policy {} is invalid; keeping the last good policy in force:\n{err}",
                    path.display()
                );
            }
        };
        let (matcher, _watcher): (_, PolicyWatcher) = PolicyWatcher::spawn(
            args.policy.clone(),
            CompileOptions { home: home() },
            on_change,
            on_error,
        )
        .map_err(|e| anyhow::anyhow!("{e}"))
        .with_context(|| format!("cannot load the policy {}", args.policy.display()))?;
        let policy = PolicyHandle::new(matcher);
        let _ = slot.set(policy.clone());

        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("cannot listen on {}", args.listen))?;
        let local = listener.local_addr()?;
        if let Some(admin) = args.admin {
            let admin_listener = tokio::net::TcpListener::bind(admin)
                .await
                .with_context(|| format!("cannot listen on the admin address {admin}"))?;
            tracing::info!("metrics on http://{}/metrics", admin_listener.local_addr()?);
            tokio::spawn(crate::serve_admin(
                admin_listener,
                config.metrics.clone(),
                policy.clone(),
                std::future::pending::<()>(),
            ));
        }
        tracing::info!(
            "corral proxy listening on {local} (policy {}, attribution: {})",
            args.policy.display(),
            if args.identity_exe.is_some() {
                "fixed identity"
            } else {
                "/proc"
            }
        );
        // The accept loop runs on a worker, so each connection's task starts on that same
        // thread instead of waking another one (docs/benchmarks.md).
        let stopping = config.clone();
        tokio::spawn(crate::serve(
            listener,
            config,
            policy,
            attribution,
            shutdown_signal(),
        ))
        .await
        .context("the proxy's accept loop panicked")??;
        // Folded refusals still in their window get their summary lines.
        stopping.log.flush();
        tracing::info!("corral proxy stopped");
        Ok::<_, anyhow::Error>(())
    })?;
    Ok(ExitCode::SUCCESS)
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
