//! `corral run` and `corral doctor`.

use std::ffi::OsString;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{anyhow, bail, Context};
use corral_policy::{CompileOptions, Policy, PolicyWatcher};
use corral_proxy::{LogRecord, PolicyHandle};

use crate::attribution::AttributionTable;
use crate::broker::{Broker, ProxyAddresses, Refusal};
use crate::identity::IdentityResolver;
use crate::launch::{self, Launch, Mode, ModeRequest, Started, PROXY_PORT};
use crate::own_files;
use crate::session::{load_policy, prepare_session, trust_rules, Setting, StartPolicy};
use crate::sys;
use crate::sys::net::DiagSocket;
use crate::unix_guard::{UnixGuard, UnixScope};

pub use crate::args::RunArgs;
pub use crate::doctor::DoctorArgs;

/// The proxy address programs in the sandbox use.
pub const PROXY_URL: &str = "http://127.0.0.1:3128";

/// Watches `path`; each new valid policy is swapped into the handle once it exists.
fn watch_policy(
    path: &std::path::Path,
    source: String,
    policy: &Policy,
    opts: CompileOptions,
    slot: Arc<std::sync::OnceLock<PolicyHandle>>,
) -> anyhow::Result<(Arc<corral_policy::Matcher>, PolicyWatcher)> {
    let shown = path.to_path_buf();
    PolicyWatcher::spawn_loaded(
        path.to_path_buf(),
        source,
        policy,
        opts,
        move |m, warnings| {
            if let Some(h) = slot.get() {
                let generation = h.replace(m);
                tracing::info!(
                    "policy reloaded (generation {generation}, {} warnings)",
                    warnings.len()
                );
            }
        },
        move |e| {
            tracing::warn!(
                "policy {} not reloaded, the last good one stays: {e}",
                shown.display()
            )
        },
    )
    .map_err(|e| anyhow!("{e}"))
}

pub fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let request = mode_request(&args)?;
    if !args.explain_fs {
        if let Some(code) = command_not_found(&args.command) {
            return Ok(code);
        }
    }
    let mut policy = load_policy(args.policy.as_deref())?;
    let session_ca = crate::ca_env::SessionCa::mint(&args.upstream_ca)?;
    session_ca.make_readable(&mut policy.loaded.policy.filesystem);
    let mut setting = prepare_session(&args, &policy)?;
    session_ca.install(&mut setting);
    if args.explain_fs {
        print!("{}", setting.fs_namespaces.view.explain());
        println!("  landlock: {}", setting.fs_namespaces.landlock.summary);
        println!("in seccomp-only mode (no mount namespace):");
        print!("{}", setting.fs_seccomp.view.explain());
        println!("  landlock: {}", setting.fs_seccomp.landlock.summary);
        return Ok(ExitCode::SUCCESS);
    }

    // Before any thread exists: signals the supervisor handles are blocked in every thread
    // (the main thread waits for them), and orphans of the sandbox are re-parented to us.
    let supervised = sys::SigSet::of(sys::SUPERVISED_SIGNALS);
    supervised.block().context("blocking signals")?;
    sys::set_child_subreaper().context("becoming a child subreaper")?;

    // Without a mount namespace the code files the guard keeps (git's, Claude Code's) stay
    // writable: what the sandbox changes there is undone when it ends (crate::code_guard).
    // Their copy is taken only when the sandbox starts in that mode.
    let guarded_before = std::cell::OnceCell::new();
    let launch_for = |mode: Mode| Launch {
        command: args.command.clone(),
        env: session_ca.apply(sandbox_env(mode, &setting.fs(mode).view.env)),
        landlock: setting
            .fs(mode)
            .landlock
            .ruleset
            .as_ref()
            .and_then(|f| f.try_clone().ok()),
        read_only: setting.read_only.clone(),
        mounts: setting.ns_mounts.clone(),
    };
    let launch_in = |mode: Mode| {
        if mode == Mode::SeccompOnly {
            guarded_before
                .get_or_init(|| crate::code_guard::Snapshot::take(&setting.fs_seccomp.view.code));
        }
        launch_for(mode)
    };
    let seccomp_only = launch::seccomp_only_is_safe(
        setting.fs(Mode::SeccompOnly).landlock.ruleset.is_some(),
        sys::yama_ptrace_scope(),
    );
    let (started, downgrade) = start_sandbox(request, seccomp_only, &launch_in)?;
    if let Some(guarded) = guarded_before.get() {
        for dir in guarded.too_large() {
            eprintln!(
                "corral: warning: {} is too large to keep a copy of: without a mount namespace, what the sandbox changes there is not undone",
                dir.display()
            );
        }
    }
    // From here on the sandbox cannot look into the supervisor (in seccomp-only mode it
    // could otherwise open /proc/PID/mem of its parent).
    sys::set_not_dumpable().context("making the supervisor non-dumpable")?;
    let listener = proxy_listener(&started)?;
    announce(&args, &setting, &started, downgrade.as_deref());
    let reload = reload_is_safe(&args, &policy, &setting, started.mode);

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("corral-proxy")
        .enable_all()
        .build()
        .context("starting the proxy runtime")?;
    let (policy_handle, watcher) = policy_in_force(policy, setting.home.clone(), reload)?;
    let table = start_broker(&started, &setting, listener.local_addr()?, &policy_handle)?;
    let metrics = start_proxy(&runtime, &setting, listener, policy_handle, table)?;

    let code = match started.wait_for_exec() {
        Ok(()) => supervise(&started, &supervised),
        Err(e) => {
            eprintln!(
                "corral: cannot run {}: {e}",
                args.command[0].to_string_lossy()
            );
            let _ = sys::wait_for(started.pid);
            127
        }
    };
    if started.mode == Mode::SeccompOnly {
        kill_leftovers();
        for line in guarded_before
            .get()
            .map(|g| g.restore())
            .unwrap_or_default()
        {
            eprintln!("corral: warning: {line}");
        }
    }
    drain(&metrics);
    // Folded refusals still in their window get their summary lines now.
    setting.proxy.log.flush();
    drop(watcher);
    runtime.shutdown_background();
    Ok(ExitCode::from(code.clamp(0, 255) as u8))
}

fn mode_request(args: &RunArgs) -> anyhow::Result<ModeRequest> {
    Ok(match (args.mode.as_str(), args.require_netns) {
        ("seccomp-only", true) => bail!("--require-netns contradicts --mode seccomp-only"),
        ("auto", false) => ModeRequest::Auto,
        ("auto" | "namespaces", true) | ("namespaces", false) => ModeRequest::RequireNamespaces,
        ("seccomp-only", false) => ModeRequest::SeccompOnly,
        (other, _) => bail!("unknown sandbox mode `{other}`: use auto, namespaces or seccomp-only"),
    })
}

/// A shell's answer to a command that is not there: a message and exit code 127.
fn command_not_found(command: &[OsString]) -> Option<ExitCode> {
    let path_var = std::env::var_os("PATH");
    if launch::find_executable(&command[0], path_var.as_deref()).is_some() {
        return None;
    }
    eprintln!(
        "corral: {}: command not found (PATH={})",
        command[0].to_string_lossy(),
        path_var.as_deref().unwrap_or_default().to_string_lossy()
    );
    Some(ExitCode::from(127))
}

fn proxy_listener(started: &Started) -> anyhow::Result<std::net::TcpListener> {
    let listener = match started.inner_listener.as_ref() {
        Some(fd) => std::net::TcpListener::from(fd.try_clone().context("proxy listener")?),
        None => std::net::TcpListener::bind(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0))
            .context("listening on host loopback for the proxy")?,
    };
    listener.set_nonblocking(true)?;
    Ok(listener)
}

/// The start-up line: mode, proxy, confinement, file view, log.
fn announce(args: &RunArgs, setting: &Setting, started: &Started, downgrade: Option<&str>) {
    let mode_detail = match (started.mode, downgrade) {
        (Mode::Namespaces, _) => "own network namespace with loopback only".to_string(),
        (Mode::SeccompOnly, Some(why)) => format!("downgraded: {why}; run `corral doctor`"),
        (Mode::SeccompOnly, None) => "forced".to_string(),
    };
    eprintln!(
        "corral: sandbox mode {} ({mode_detail}); proxy {PROXY_URL}; {}; {}; decisions logged to {}",
        started.mode,
        setting.fs(started.mode).landlock.summary,
        setting.fs(started.mode).view.summary(),
        setting.log_path.display()
    );
    for w in &started.warnings {
        eprintln!("corral: warning: {w}");
    }
    let _ = args;
}

/// Whether the policy may be reloaded while the sandbox runs: not when the sandbox could
/// rewrite it (no mount namespace and no Landlock view keeping it read-only), or an edit
/// from inside would apply within a second.
fn reload_is_safe(args: &RunArgs, policy: &StartPolicy, setting: &Setting, mode: Mode) -> bool {
    let reload = match (&policy.file, mode) {
        (Some((path, _)), Mode::SeccompOnly) => {
            setting.fs(mode).landlock.ruleset.is_some()
                || !own_files::writable_without_namespaces(path)
        }
        _ => true,
    };
    if !reload {
        eprintln!(
            "corral: warning: in seccomp-only mode without Landlock the sandbox can write the policy {} and the decision log {}: the policy is not reloaded while it runs, and check both before you trust them again (see `corral doctor`)",
            args.policy.as_deref().unwrap_or(Path::new("")).display(),
            setting.log_path.display()
        );
    }
    reload
}

/// The policy handle the proxy and the unix guard read, and its watcher when reloading.
fn policy_in_force(
    policy: StartPolicy,
    home: Option<PathBuf>,
    reload: bool,
) -> anyhow::Result<(PolicyHandle, Option<PolicyWatcher>)> {
    let opts = CompileOptions { home };
    let handle_slot: Arc<std::sync::OnceLock<PolicyHandle>> = Arc::new(std::sync::OnceLock::new());
    let (matcher, watcher) = match policy.file {
        Some((path, source)) if reload => {
            let (matcher, watcher) = watch_policy(
                &path,
                source,
                &policy.loaded.policy,
                opts,
                handle_slot.clone(),
            )?;
            (matcher, Some(watcher))
        }
        _ => (Arc::new(policy.loaded.policy.compile(&opts)), None),
    };
    let handle = PolicyHandle::new(matcher);
    let _ = handle_slot.set(handle.clone());
    Ok((handle, watcher))
}

/// Starts the connect broker; returns the attribution table it fills, which the proxy reads.
fn start_broker(
    started: &Started,
    setting: &Setting,
    actual: SocketAddr,
    policy: &PolicyHandle,
) -> anyhow::Result<Arc<AttributionTable>> {
    // The guard asks the policy in force whether a host socket is listed.
    let listed = {
        let policy = policy.clone();
        move |path: &str| policy.current().0.allows_unix_socket(path)
    };
    // The kernel is asked, in the network namespace where clients live, which socket each
    // accepted connection comes from (see `attribution`).
    let inner_diag = match &started.inner_diag {
        Some(fd) => Some(Arc::new(DiagSocket::new(
            fd.try_clone().context("sock_diag socket")?,
        ))),
        None => None,
    };
    let client_diag = match started.mode {
        Mode::Namespaces => inner_diag.clone(),
        Mode::SeccompOnly => match corral_proxy::sock_diag_socket() {
            Ok(fd) => Some(Arc::new(DiagSocket::new(fd))),
            Err(e) => {
                eprintln!("corral: warning: no sock_diag socket ({e}): every connection to the proxy will be refused");
                None
            }
        },
    };
    let table = Arc::new(AttributionTable::new(actual, client_diag));
    // Ancestor walks stop at the supervisor and at the sandbox's init.
    let roots = vec![sys::getpid(), started.pid];
    let identities = Arc::new(IdentityResolver::new(roots).with_trust(trust_rules(
        setting,
        started.mode,
        policy.clone(),
    )));
    let sink = setting.proxy.clone();
    let broker = Broker::new(
        started.notifier.try_clone()?,
        table.clone(),
        identities,
        ProxyAddresses {
            advertised: SocketAddr::from((Ipv4Addr::LOCALHOST, PROXY_PORT)),
            actual,
        },
        Arc::new(move |r: &Refusal| sink.log.record(&refusal_record(r))),
        UnixGuard::new(
            match (started.mode, inner_diag) {
                (Mode::Namespaces, Some(diag)) => UnixScope::SandboxNamespace(diag),
                (Mode::Namespaces, None) => UnixScope::Unknown,
                (Mode::SeccompOnly, _) => UnixScope::descendants_of(sys::getpid()),
            },
            Box::new(listed),
        ),
        started.mode == Mode::SeccompOnly,
    );
    broker.spawn(4).context("starting the connect broker")?;
    Ok(table)
}

fn start_proxy(
    runtime: &tokio::runtime::Runtime,
    setting: &Setting,
    listener: std::net::TcpListener,
    policy: PolicyHandle,
    table: Arc<AttributionTable>,
) -> anyhow::Result<Arc<corral_proxy::Metrics>> {
    let config = setting.proxy.clone();
    let metrics = config.metrics.clone();
    let attribution: Arc<dyn corral_proxy::Attribution> = table;
    let serving = runtime.block_on(async { tokio::net::TcpListener::from_std(listener) })?;
    runtime.spawn(async move {
        if let Err(e) = corral_proxy::serve(
            serving,
            config,
            policy,
            attribution,
            std::future::pending::<()>(),
        )
        .await
        {
            tracing::error!("the proxy stopped: {e:#}");
        }
    });
    Ok(metrics)
}

/// The command's sockets are closed now: lets the proxy finish the connections it still
/// holds, so their decision records are written (bounded: a stuck upstream cannot hold
/// the exit).
fn drain(metrics: &corral_proxy::Metrics) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    while metrics
        .connections_active
        .load(std::sync::atomic::Ordering::Relaxed)
        > 0
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// Starts the sandbox in the requested mode, downgrading only in `Auto` (and saying why).
fn start_sandbox(
    request: ModeRequest,
    seccomp_only: Result<(), String>,
    launch_in: &dyn Fn(Mode) -> Launch,
) -> anyhow::Result<(Started, Option<String>)> {
    match request {
        ModeRequest::SeccompOnly => {
            seccomp_only.map_err(|why| anyhow!("{why}"))?;
            Ok((launch::start(&launch_in(Mode::SeccompOnly), Mode::SeccompOnly).map_err(|e| anyhow!("{e}"))?, None))
        }
        ModeRequest::RequireNamespaces => launch::start(&launch_in(Mode::Namespaces), Mode::Namespaces)
            .map(|s| (s, None))
            .map_err(|e| {
                if e.namespace_setup {
                    anyhow!("{e}; --require-netns refuses to run without a network namespace (run `corral doctor` to see what this host allows)")
                } else {
                    anyhow!("{e}")
                }
            }),
        ModeRequest::Auto => match launch::start(&launch_in(Mode::Namespaces), Mode::Namespaces) {
            Ok(s) => Ok((s, None)),
            Err(e) if e.namespace_setup => {
                seccomp_only.map_err(|why| anyhow!("{e}; and {why}"))?;
                let s = launch::start(&launch_in(Mode::SeccompOnly), Mode::SeccompOnly)
                    .map_err(|e2| anyhow!("{e2} (namespace mode failed first: {e})"))?;
                Ok((s, Some(e.message)))
            }
            Err(e) => Err(anyhow!("{e}")),
        },
    }
}

/// Waits for the command (or the sandbox's init) to end, forwarding signals sent to us and
/// reaping orphans. Returns the shell-style exit code.
fn supervise(started: &Started, supervised: &sys::SigSet) -> i32 {
    loop {
        let info = match supervised.wait() {
            Ok(i) => i,
            Err(e) => {
                tracing::error!("waiting for signals: {e}");
                return sys::wait_for(started.pid)
                    .map(|s| s.shell_code())
                    .unwrap_or(1);
            }
        };
        if info.signal == libc::SIGCHLD {
            while let Ok(Some((pid, status))) = sys::reap_any() {
                if pid == started.pid {
                    return status.shell_code();
                }
            }
        } else if !info.from_kernel {
            // A terminal's signals reach the whole foreground process group, the command
            // included; anything else (kill, a service manager) is forwarded.
            let _ = sys::kill(started.pid, info.signal);
        }
    }
}

/// In seccomp-only mode the sandbox's init ends the tree below it with the command; if the
/// sandbox killed its init, the orphans re-parented to us (a subreaper): end them here.
fn kill_leftovers() {
    for _ in 0..50 {
        let children = sys::children_of_self();
        if children.is_empty() {
            return;
        }
        for pid in children {
            let _ = sys::kill(pid, libc::SIGKILL);
        }
        while let Ok(Some(_)) = sys::reap_any() {}
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// The environment of the sandboxed command: ours, plus the proxy settings and what the
/// filesystem view sets.
fn sandbox_env(mode: Mode, view_env: &[(OsString, OsString)]) -> Vec<(OsString, OsString)> {
    let set: [(&str, &str); 11] = [
        ("HTTP_PROXY", PROXY_URL),
        ("HTTPS_PROXY", PROXY_URL),
        ("ALL_PROXY", PROXY_URL),
        ("http_proxy", PROXY_URL),
        ("https_proxy", PROXY_URL),
        ("all_proxy", PROXY_URL),
        ("NO_PROXY", "localhost,127.0.0.1,::1"),
        ("no_proxy", "localhost,127.0.0.1,::1"),
        ("NODE_USE_ENV_PROXY", "1"),
        (
            "CORRAL_SANDBOX",
            if mode == Mode::Namespaces {
                "namespaces"
            } else {
                "seccomp-only"
            },
        ),
        ("CORRAL_PROXY", PROXY_URL),
    ];
    let mut env: Vec<(OsString, OsString)> = std::env::vars_os()
        .filter(|(k, _)| !set.iter().any(|(s, _)| k == s) && k != "CORRAL_SANDBOX_MODE")
        .collect();
    env.extend(
        set.iter()
            .map(|(k, v)| (OsString::from(k), OsString::from(v))),
    );
    for (k, v) in view_env {
        env.retain(|(e, _)| e != k);
        env.push((k.clone(), v.clone()));
    }
    env
}

/// A broker refusal as a decision-log record (`kind: direct`).
fn refusal_record(r: &Refusal) -> LogRecord {
    let (host, port) = match (r.destination, &r.unix) {
        (Some(a), _) => (a.ip().to_string(), a.port()),
        (None, Some(unix)) => (unix.clone(), 0),
        (None, None) => (String::new(), 0),
    };
    let report = corral_policy::Report {
        binary: r
            .binary
            .as_ref()
            .map(|b| b.display().to_string())
            .unwrap_or_else(|| "(unknown)".into()),
        invoked_as: r.invoked_as.clone(),
        ancestors: r
            .ancestors
            .iter()
            .map(|a| a.display().to_string())
            .collect(),
        host,
        port,
        ..corral_proxy::refusal(r.code, r.reason.clone())
    };
    LogRecord {
        pid: Some(r.pid),
        ..LogRecord::new("direct", report)
    }
}

pub fn doctor(args: DoctorArgs) -> anyhow::Result<ExitCode> {
    crate::doctor::run(args)
}
