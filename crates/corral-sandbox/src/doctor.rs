//! `corral doctor`: what this host offers the sandbox, each finding with what to do.
//!
//! The namespace check does not guess from sysctls: it starts a real (empty) sandbox child
//! in namespace mode, exactly as `corral run` would, and reports how that went. The
//! sysctls and AppArmor settings are shown to explain a failure.

use std::process::ExitCode;

use crate::sys;

struct Finding {
    ok: bool,
    what: String,
    fix: Option<String>,
}

fn read_trim(path: &str) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
}

/// `corral doctor`
#[derive(Debug, clap::Args)]
pub struct DoctorArgs {}

pub fn run(_args: DoctorArgs) -> anyhow::Result<ExitCode> {
    let mut findings = Vec::new();
    let release = sys::kernel_release();
    let (major, minor) = parse_version(&release);
    findings.push(Finding {
        ok: (major, minor) >= (5, 19),
        what: format!("kernel {release}"),
        fix: ((major, minor) < (5, 19)).then(|| {
            "corral needs Linux 5.19 or newer (seccomp WAIT_KILLABLE_RECV, pidfd_getfd); 6.9+ for threads' pidfds".to_string()
        }),
    });

    let seccomp = sys::seccomp::user_notification_available();
    findings.push(Finding {
        ok: seccomp.is_ok(),
        what: match &seccomp {
            Ok(()) => "seccomp user notification: available".into(),
            Err(e) => format!("seccomp user notification: unavailable ({e})"),
        },
        fix: seccomp.is_err().then(|| {
            "the kernel must be built with CONFIG_SECCOMP_FILTER (5.0+); without it corral cannot attribute or confine connections".to_string()
        }),
    });

    let getfd = probe_pidfd_getfd();
    findings.push(Finding {
        ok: getfd.is_ok(),
        what: match &getfd {
            Ok(()) => "pidfd_open/pidfd_getfd: working".into(),
            Err(e) => format!("pidfd_getfd: failing ({e})"),
        },
        fix: getfd.is_err().then(|| {
            "pidfd_getfd needs Linux 5.6+ and ptrace access to your own processes (Yama ptrace_scope 3 forbids it: set kernel.yama.ptrace_scope to 2 or less)".to_string()
        }),
    });

    let abi = sys::landlock_abi();
    findings.push(Finding {
        ok: abi >= 4,
        what: if abi == 0 {
            "Landlock: unavailable".into()
        } else {
            format!("Landlock: ABI {abi}")
        },
        fix: (abi < 4).then(|| {
            if abi == 0 {
                "filesystem_policy cannot be enforced: enable Landlock (CONFIG_SECURITY_LANDLOCK, and `landlock` in the lsm= boot parameter)".to_string()
            } else {
                format!("Landlock ABI {abi} cannot refuse direct TCP connects (ABI 4, Linux 6.7); the seccomp broker still does")
            }
        }),
    });

    let userns = probe_namespaces();
    let mut explain = Vec::new();
    if let Some(v) = read_trim("/proc/sys/kernel/apparmor_restrict_unprivileged_userns") {
        explain.push(format!(
            "kernel.apparmor_restrict_unprivileged_userns = {v}"
        ));
    }
    if let Some(v) = read_trim("/proc/sys/kernel/unprivileged_userns_clone") {
        explain.push(format!("kernel.unprivileged_userns_clone = {v}"));
    }
    if let Some(v) = read_trim("/proc/sys/user/max_user_namespaces") {
        explain.push(format!("user.max_user_namespaces = {v}"));
    }
    findings.push(Finding {
        ok: userns.is_ok(),
        what: match &userns {
            Ok(()) => format!("user + network + mount + PID namespaces: working ({})", explain.join(", ")),
            Err(e) => format!("user namespaces: refused ({e}; {})", explain.join(", ")),
        },
        fix: userns.is_err().then(|| {
            "corral run will use seccomp-only mode. To get namespace mode: on Ubuntu 24.04+ allow it for corral with an AppArmor profile granting `userns,` (or sysctl kernel.apparmor_restrict_unprivileged_userns=0); elsewhere sysctl kernel.unprivileged_userns_clone=1 / user.max_user_namespaces>0".to_string()
        }),
    });

    let port = std::net::TcpListener::bind("127.0.0.1:0");
    findings.push(Finding {
        ok: port.is_ok(),
        what: match &port {
            Ok(_) => "loopback listener for the proxy: ok (inside the sandbox it is always 127.0.0.1:3128)".into(),
            Err(e) => format!("loopback listener: failing ({e})"),
        },
        fix: port.is_err().then(|| "the loopback interface must be up with 127.0.0.1".to_string()),
    });

    // `corral run` needs no fixed port (its proxy address exists only inside the sandbox);
    // a standalone `corral proxy` listens on 127.0.0.1:3128 unless told otherwise.
    let standalone = std::net::TcpListener::bind("127.0.0.1:3128");
    findings.push(Finding {
        ok: true,
        what: match &standalone {
            Ok(_) => "127.0.0.1:3128 (default of `corral proxy`): free".into(),
            Err(e) => format!("127.0.0.1:3128 (default of `corral proxy`): {e}"),
        },
        fix: standalone.is_err().then(|| {
            "another program listens there: give `corral proxy --listen ADDR` (corral run is not affected)".to_string()
        }),
    });
    drop(standalone);
    findings.extend(ca_findings());

    for f in &findings {
        let label = match (f.ok, f.fix.is_some()) {
            (true, false) => "ok  ",
            (true, true) => "warn",
            (false, _) => "FAIL",
        };
        println!("{label} {}", f.what);
        if let Some(fix) = &f.fix {
            println!("     → {fix}");
        }
    }
    let essential = findings[1].ok && findings[2].ok;
    let mode = if !essential {
        "none: corral run cannot confine commands on this host".to_string()
    } else if userns.is_ok() {
        "namespaces (own network namespace with loopback only, seccomp broker, Landlock)"
            .to_string()
    } else if let Err(why) = crate::launch::seccomp_only_is_safe(abi > 0, sys::yama_ptrace_scope())
    {
        format!("none: {why}")
    } else {
        "seccomp-only (seccomp broker and Landlock; no network namespace)".to_string()
    };
    println!("mode: {mode}");
    Ok(if essential {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// System CA bundles, in the order TLS libraries look for them.
const SYSTEM_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/ssl/cert.pem",
];

/// Environment variables through which clients in the sandbox trust a (corporate) CA.
const CA_VARIABLES: &[(&str, &str)] = &[
    ("SSL_CERT_FILE", "OpenSSL-based clients, Python"),
    ("NODE_EXTRA_CA_CERTS", "Node and Claude Code"),
    ("CURL_CA_BUNDLE", "curl"),
    ("GIT_SSL_CAINFO", "git"),
    ("REQUESTS_CA_BUNDLE", "Python requests"),
];

/// Where TLS clients in the sandbox find their CAs. Warnings only: `corral run` works
/// without them, the clients inside do not.
fn ca_findings() -> Vec<Finding> {
    let readable = |p: &str| std::fs::File::open(p).is_ok();
    let mut out = Vec::new();
    let system = SYSTEM_BUNDLES.iter().find(|p| readable(p));
    out.push(Finding {
        ok: true,
        what: match system {
            Some(p) => format!("CA bundle: {p}"),
            None => "CA bundle: none of the system paths exists".into(),
        },
        fix: system.is_none().then(|| {
            "TLS clients in the sandbox will trust nothing: install your distribution's ca-certificates, or set SSL_CERT_FILE".to_string()
        }),
    });
    for (var, who) in CA_VARIABLES {
        let Some(value) = std::env::var_os(var) else {
            continue;
        };
        let path = value.to_string_lossy().into_owned();
        let ok = readable(&path);
        out.push(Finding {
            ok: true,
            what: format!(
                "{var}={path} ({who}): {}",
                if ok { "readable" } else { "NOT readable" }
            ),
            fix: (!ok).then(|| format!("point {var} at a readable PEM file, or unset it")),
        });
    }
    out
}

fn parse_version(release: &str) -> (u32, u32) {
    let mut it = release
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<u32>().unwrap_or(0));
    (it.next().unwrap_or(0), it.next().unwrap_or(0))
}

/// Duplicates one of our own descriptors through a pidfd of a child process.
fn probe_pidfd_getfd() -> Result<(), String> {
    let mut child = std::process::Command::new("/bin/sleep")
        .arg("5")
        .stdin(std::process::Stdio::null())
        .spawn()
        .map_err(|e| format!("starting /bin/sleep: {e}"))?;
    let result = (|| {
        let pidfd = sys::pidfd_open(child.id()).map_err(|e| format!("pidfd_open: {e}"))?;
        use std::os::fd::AsFd;
        sys::pidfd_getfd(pidfd.as_fd(), 0)
            .map(drop)
            .map_err(|e| format!("pidfd_getfd: {e}"))
    })();
    let _ = child.kill();
    let _ = child.wait();
    result
}

/// Starts `/bin/true` in namespace mode exactly as `corral run` would.
fn probe_namespaces() -> Result<(), String> {
    let launch = crate::launch::Launch {
        command: vec!["/bin/true".into()],
        env: vec![("PATH".into(), "/usr/bin:/bin".into())],
        landlock: None,
        read_only: Vec::new(),
        mounts: Default::default(),
    };
    match crate::launch::start(&launch, crate::launch::Mode::Namespaces) {
        Ok(started) => {
            // Nobody serves its notifications: /bin/true makes no connects.
            let r = started.wait_for_exec();
            let _ = sys::wait_for(started.pid);
            r
        }
        Err(e) => Err(e.message),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn parses_kernel_versions() {
        assert_eq!(super::parse_version("6.18.44-fc-v657"), (6, 18));
        assert_eq!(super::parse_version("5.4.0-150-generic"), (5, 4));
    }
}
