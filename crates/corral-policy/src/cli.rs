//! `corral policy check | explain | suggest`.

use std::io::Read;

use anyhow::Context;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::decision::Decision;
use crate::diag::PolicyError;
use crate::identity::Identity;
use crate::matcher::HttpRequestInfo;
use crate::model::{CompileOptions, Policy};
use crate::report::Report;

/// `corral policy suggest --from LOG`
#[derive(Debug, clap::Args)]
pub struct SuggestArgs {
    /// A decision log written by `corral proxy --log` or `corral run`.
    #[arg(long, value_name = "LOG")]
    pub from: PathBuf,
    /// The policy in force: endpoints are merged into groups that already list the binary.
    #[arg(long, value_name = "FILE")]
    pub policy: Option<PathBuf>,
    /// Write the change into the --policy file (appending lines; comments and order kept).
    #[arg(long, requires = "policy")]
    pub apply: bool,
}

/// Exit code of `corral policy explain` when the policy denies the request.
pub const EXIT_DENY: u8 = 3;

/// `corral policy check FILE…`
#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// Policy files to validate.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// Treat warnings as errors (exit 1 if any file has warnings).
    #[arg(long)]
    pub deny_warnings: bool,
}

/// `corral policy explain FILE --binary B --dest HOST:PORT`
///
/// Exit status: 0 allowed, 3 denied, 1 the policy is invalid or the question is malformed.
#[derive(Debug, clap::Args)]
pub struct ExplainArgs {
    /// The policy file.
    pub file: PathBuf,
    /// The executable asking (as the proxy sees it: `/proc/PID/exe`). Resolved through
    /// symlinks when it exists on this host.
    #[arg(long, value_name = "PATH")]
    pub binary: PathBuf,
    /// Destination `HOST:PORT` (`[::1]:443` for IPv6 literals).
    #[arg(long, value_name = "HOST:PORT")]
    pub dest: String,
    /// HTTP method, for endpoints with request rules.
    #[arg(long, requires = "path")]
    pub method: Option<String>,
    /// HTTP path with query, for endpoints with request rules.
    #[arg(long, requires = "method")]
    pub path: Option<String>,
    /// An ancestor executable (parent first); repeat for each generation.
    #[arg(long = "ancestor", value_name = "PATH")]
    pub ancestors: Vec<PathBuf>,
    /// The executable's SHA-256 (hex). Default: computed from `--binary` when a binary
    /// in the policy is pinned and the file is readable.
    #[arg(long, value_name = "HEX")]
    pub sha256: Option<String>,
    /// Home directory for `~/` in binary paths (default: $HOME).
    #[arg(long, value_name = "DIR")]
    pub home: Option<PathBuf>,
    /// Print the report as JSON (the same object the proxy logs and returns in a 403).
    #[arg(long)]
    pub json: bool,
}

fn print_error(e: &PolicyError) {
    match e {
        PolicyError::Io { .. } => eprintln!("error: {e}"),
        PolicyError::Invalid { errors, warnings } => {
            let mut all: Vec<_> = errors.iter().chain(warnings).collect();
            all.sort_by_key(|d| (d.line, d.column));
            for d in all {
                eprintln!("{d}");
            }
        }
    }
}

/// Validate each file; print every diagnostic; exit 0 when all are valid.
/// Binary entries without a `sha256` pin whose file lies where the user (and so a sandbox
/// allowed to write there) can write: such a path trusts whatever is put under its name.
/// Claude Code's version files are vouched for by `corral install`'s record instead.
fn writable_binaries(policy: &Policy) -> Vec<String> {
    use std::os::unix::fs::MetadataExt;
    let home = std::env::var_os("HOME").map(std::path::PathBuf::from);
    let uid = std::fs::metadata("/proc/self")
        .map(|m| m.uid())
        .unwrap_or(0);
    let user_may = |m: &std::fs::Metadata| (uid != 0 && m.uid() == uid) || m.mode() & 0o002 != 0;
    let mut notes = Vec::new();
    for np in &policy.network_policies {
        for b in np.binaries.iter().filter(|b| b.sha256.is_none()) {
            let Some(path) = crate::matcher::expand_home(&b.path, home.as_deref()) else {
                continue;
            };
            if crate::glob::Glob::is_pattern(&path) {
                continue;
            }
            let real = std::fs::canonicalize(&path).unwrap_or_else(|_| path.clone().into());
            let recorded = home
                .as_deref()
                .is_some_and(|h| real.starts_with(h.join(".local/share/claude/versions")));
            let in_home = home.as_deref().is_some_and(|h| real.starts_with(h));
            let writable = in_home
                || real
                    .ancestors()
                    .skip(1)
                    .any(|d| std::fs::metadata(d).is_ok_and(|m| user_may(&m)));
            if writable && !recorded {
                notes.push(format!(
                    "binary `{}` (group `{}`) lies in a directory you can write: a sandbox allowed to write there could put another program under that name; corral run then refuses it unless a `sha256:` pin vouches for it (sha256sum {})",
                    b.path,
                    np.key,
                    real.display()
                ));
            }
        }
    }
    notes
}

pub fn check(args: CheckArgs) -> anyhow::Result<ExitCode> {
    let mut failed = false;
    for f in &args.files {
        match Policy::load(f) {
            Ok(loaded) => {
                for w in &loaded.warnings {
                    eprintln!("{w}");
                }
                for note in writable_binaries(&loaded.policy) {
                    eprintln!("{}: note: {note}", f.display());
                }
                let n = loaded.warnings.len();
                let fail = args.deny_warnings && n > 0;
                failed |= fail;
                println!(
                    "{}: {} ({} network polic{}, {n} warning{})",
                    f.display(),
                    if fail {
                        "rejected (--deny-warnings)"
                    } else {
                        "ok"
                    },
                    loaded.policy.network_policies.len(),
                    if loaded.policy.network_policies.len() == 1 {
                        "y"
                    } else {
                        "ies"
                    },
                    if n == 1 { "" } else { "s" },
                );
            }
            Err(e) => {
                failed = true;
                print_error(&e);
                let n = e.errors().len();
                match e {
                    PolicyError::Io { .. } => println!("{}: unreadable", f.display()),
                    PolicyError::Invalid { .. } => println!(
                        "{}: invalid ({n} error{})",
                        f.display(),
                        if n == 1 { "" } else { "s" }
                    ),
                }
            }
        }
    }
    Ok(if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// Split `HOST:PORT` / `[V6]:PORT`.
pub fn parse_dest(dest: &str) -> Result<(String, u16), String> {
    let (host, port) = if let Some(rest) = dest.strip_prefix('[') {
        let (h, p) = rest
            .split_once("]:")
            .ok_or_else(|| format!("`{dest}`: write an IPv6 destination as `[::1]:443`"))?;
        (h.to_string(), p)
    } else {
        let (h, p) = dest.rsplit_once(':').ok_or_else(|| {
            format!("`{dest}` has no port: write HOST:PORT, e.g. `github.com:443`")
        })?;
        if h.contains(':') {
            return Err(format!(
                "`{dest}`: write an IPv6 destination as `[{h}]:{p}`"
            ));
        }
        (h.to_string(), p)
    };
    if host.is_empty() {
        return Err(format!(
            "`{dest}` has no host: write HOST:PORT, e.g. `github.com:443`"
        ));
    }
    let port: u16 = port
        .parse()
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| format!("`{port}` is not a port (1-65535)"))?;
    Ok((host, port))
}

fn sha256_file(path: &Path) -> Option<String> {
    use sha2::Digest;
    let mut f = std::fs::File::open(path).ok()?;
    let mut h = sha2::Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = f.read(&mut buf).ok()?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Some(hex::encode(h.finalize()))
}

/// Decide one question against a policy and print the report.
pub fn explain(args: ExplainArgs) -> anyhow::Result<ExitCode> {
    let loaded = match Policy::load(&args.file) {
        Ok(l) => l,
        Err(e) => {
            print_error(&e);
            eprintln!("error: {} is not a valid policy", args.file.display());
            return Ok(ExitCode::from(1));
        }
    };
    let (host, port) = match parse_dest(&args.dest) {
        Ok(x) => x,
        Err(e) => {
            eprintln!("error: --dest {e}");
            return Ok(ExitCode::from(1));
        }
    };
    let home = args
        .home
        .clone()
        .or_else(|| std::env::var_os("HOME").map(PathBuf::from));
    let matcher = loaded.policy.compile(&CompileOptions { home });
    // The proxy sees canonical executables (`/proc/PID/exe`): resolve like it would.
    let exe = std::fs::canonicalize(&args.binary).unwrap_or_else(|_| args.binary.clone());
    if exe != args.binary && !args.json {
        eprintln!(
            "note: {} resolves to {}; deciding for the resolved path, as the proxy would",
            args.binary.display(),
            exe.display()
        );
    }
    let pinned = loaded
        .policy
        .network_policies
        .iter()
        .flat_map(|p| &p.binaries)
        .any(|b| b.sha256.is_some());
    let sha256 = match &args.sha256 {
        Some(h) => Some(h.trim().to_ascii_lowercase()),
        None if pinned => sha256_file(&exe),
        None => None,
    };
    let who = Identity {
        exe,
        ancestors: args
            .ancestors
            .iter()
            .map(|a| std::fs::canonicalize(a).unwrap_or_else(|_| a.clone()))
            .collect(),
        sha256,
        pid: None,
        invoked_as: None,
    };
    let req = match (&args.method, &args.path) {
        (Some(m), Some(p)) => Some(HttpRequestInfo { method: m, path: p }),
        _ => None,
    };
    let decision = matcher.decide(&who, &host, port, req.as_ref());
    let report = Report::new(&who, &host, port, req.as_ref(), &decision);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.to_text());
        if let Decision::Allow(a) = &decision {
            // A group's endpoints are open to all its binaries: say who else this lets in.
            if let Some(g) = loaded
                .policy
                .network_policies
                .iter()
                .find(|g| g.key == a.policy)
            {
                let who: Vec<&str> = g.binaries.iter().map(|b| b.path.as_str()).collect();
                println!(
                    "  group `{}` lets these binaries through to {host}:{port}: {}",
                    g.key,
                    who.join(", ")
                );
            }
        }
        if req.is_none() && decision.is_allow() && matcher.needs_l7(&host, port) {
            println!("  note: this endpoint has request rules; pass --method and --path to check a request");
        }
    }
    Ok(match decision {
        Decision::Allow(_) => ExitCode::SUCCESS,
        Decision::Deny(_) => ExitCode::from(EXIT_DENY),
    })
}

pub fn suggest(args: SuggestArgs) -> anyhow::Result<ExitCode> {
    let text = std::fs::read_to_string(&args.from)
        .with_context(|| format!("cannot read the decision log {}", args.from.display()))?;
    let harvest = crate::suggest::harvest(&text);
    for (code, n) in &harvest.other {
        eprintln!(
            "note: {n} refusal(s) with reason `{code}` cannot be fixed by adding endpoints (see docs/logs.md)"
        );
    }
    if !harvest.rules.is_empty() {
        print!("{}", crate::suggest::render_rules(&harvest.rules));
    }
    if harvest.refused.is_empty() {
        if harvest.rules.is_empty() {
            println!(
                "# no refusals in {} that a policy change would fix",
                args.from.display()
            );
        }
        return Ok(ExitCode::SUCCESS);
    }
    let (policy_text, policy) = match &args.policy {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read the policy {}", path.display()))?;
            let loaded = Policy::parse(&text, &path.display().to_string())
                .map_err(|e| anyhow::anyhow!("the policy does not validate:\n{e}"))?;
            (Some(text), Some(loaded.policy))
        }
        None => (None, None),
    };
    let home = std::env::var_os("HOME").map(PathBuf::from);
    // Refusals the current policy would already allow (it was edited since) are dropped.
    let pending: Vec<crate::suggest::Refused> = match &policy {
        Some(p) => {
            let matcher = p.compile(&CompileOptions { home: home.clone() });
            harvest
                .refused
                .iter()
                .filter(|r| {
                    !matcher
                        .decide(&Identity::new(&r.binary), &r.host, r.port, None)
                        .is_allow()
                })
                .cloned()
                .collect()
        }
        None => harvest.refused.clone(),
    };
    if pending.is_empty() {
        println!("# every refusal in the log is already allowed by the policy");
        return Ok(ExitCode::SUCCESS);
    }
    let change = crate::suggest::plan(&pending, policy.as_ref(), home.as_deref());
    let rendered = crate::suggest::render(&change);
    if !args.apply {
        print!("{rendered}");
        return Ok(ExitCode::SUCCESS);
    }
    let (Some(path), Some(text)) = (&args.policy, policy_text) else {
        anyhow::bail!("--apply needs --policy");
    };
    let edited = match crate::suggest::apply_to_text(&text, &change) {
        Ok(t) => t,
        Err(e) => {
            print!("{rendered}");
            anyhow::bail!("not applied: {e:#}");
        }
    };
    if let Err(e) = crate::suggest::verify(&edited, &path.display().to_string(), &pending, home) {
        print!("{rendered}");
        anyhow::bail!("not applied, the file is unchanged: {e:#}");
    }
    crate::suggest::write_atomically(path, &edited)?;
    print!("{rendered}");
    eprintln!(
        "applied to {}: {} refusal(s) now allowed",
        path.display(),
        pending.len()
    );
    Ok(ExitCode::SUCCESS)
}
