//! `corral run` as the tests drive it: a sandbox configuration (policy, decision log,
//! overrides, isolation mode, user) and the loopback upstream most scenarios talk to.
//!
//! Every scenario runs as the current user and — when the tests run as root — again as an
//! ordinary user, and in both isolation modes ([`MODES`]).

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::Value;

use crate::process::corral_bin;
use crate::tls::TestCa;
use crate::upstream::{Reply, Upstream};
use crate::user::{Runner, TempHome};

/// The two isolation modes: namespaces, and seccomp-only (forced with `--mode`).
pub const MODES: [&str; 2] = ["namespaces", "seccomp-only"];

/// Each runner: the current user, plus the ordinary test user when we are root.
pub fn runners() -> Vec<Runner> {
    let mut v = vec![Runner::Current];
    if let Runner::Ordinary(u) = Runner::ordinary() {
        v.push(Runner::Ordinary(u));
    }
    v
}

/// Who runs a scenario, for failure messages.
pub fn who(r: &Runner) -> String {
    match r {
        Runner::Current => "current user".into(),
        Runner::Ordinary(u) => format!("user {}", u.name),
    }
}

/// One sandbox configuration: a policy, a decision log, overrides, a mode, a user.
pub struct Sandbox<'a> {
    pub runner: &'a Runner,
    pub home: TempHome,
    /// The working directory: a project directory in HOME (the sandbox may write it).
    pub work: PathBuf,
    pub policy: PathBuf,
    pub log: PathBuf,
    pub resolve: Vec<String>,
    pub mode: &'a str,
}

impl<'a> Sandbox<'a> {
    pub fn new(runner: &'a Runner, mode: &'a str, policy_yaml: &str, resolve: &[String]) -> Self {
        let home = runner.temp_home();
        // Where corral keeps them by default: directories of their own, which the sandbox
        // sees read-only (corral refuses a policy or log in HOME itself).
        let policy = home.join(".config/corral/policy.yaml");
        let log = home.join(".local/state/corral/decisions.jsonl");
        let work = home.join("work");
        let s = Sandbox {
            runner,
            work,
            home,
            policy,
            log,
            resolve: resolve.to_vec(),
            mode,
        };
        for dir in [
            ".config",
            ".config/corral",
            ".local",
            ".local/state",
            ".local/state/corral",
            "work",
        ] {
            let dir = s.home.join(dir);
            std::fs::create_dir_all(&dir).unwrap();
            s.give_to_runner(&dir);
        }
        std::fs::write(&s.policy, policy_yaml).unwrap();
        s.give_to_runner(&s.policy);
        s
    }

    /// Replaces the policy (for one that names files in the sandbox's home).
    pub fn write_policy(&self, policy_yaml: &str) {
        std::fs::write(&self.policy, policy_yaml).unwrap();
        self.give_to_runner(&self.policy);
    }

    /// Writes `contents` to `rel` in HOME, owned by the runner, with `mode`.
    pub fn write_home_file(&self, rel: &str, contents: &[u8], mode: u32) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let path = self.home.join(rel);
        std::fs::write(&path, contents).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        self.give_to_runner(&path);
        path
    }

    pub fn give_to_runner(&self, path: &Path) {
        if let Runner::Ordinary(u) = self.runner {
            crate::user::chown(path, u.uid, u.gid);
        }
    }

    pub fn command(&self, argv: &[&str]) -> Command {
        let mut c = self.runner.command(corral_bin());
        c.current_dir(&self.work);
        c.env("HOME", self.home.path());
        c.arg("run")
            .arg("--policy")
            .arg(&self.policy)
            .arg("--log")
            .arg(&self.log)
            .arg("--mode")
            .arg(self.mode);
        for r in &self.resolve {
            c.arg("--resolve").arg(r);
        }
        c.arg("--").args(argv);
        c.stdin(Stdio::null());
        c
    }

    pub fn run(&self, argv: &[&str]) -> Output {
        self.command(argv).output().expect("run corral")
    }

    pub fn sh(&self, script: &str) -> Output {
        self.run(&["/bin/sh", "-c", script])
    }

    pub fn log(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("decision log line is JSON"))
            .collect()
    }

    pub fn context(&self, out: &Output) -> String {
        format!(
            "[{} / {}] status {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}\n--- log ---\n{}",
            who(self.runner),
            self.mode,
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(&self.log).unwrap_or_default()
        )
    }
}

/// A policy that lets `binaries` reach `allowed.test:port` (on loopback).
pub fn policy(port: u16, binaries: &[&str]) -> String {
    let bins: String = binaries
        .iter()
        .map(|b| format!("      - path: {b}\n"))
        .collect();
    format!(
        "version: 1\nnetwork_policies:\n  test:\n    endpoints:\n      - host: allowed.test\n        port: {port}\n        allowed_ips: [127.0.0.0/8]\n    binaries:\n{bins}"
    )
}

pub struct Upstreams {
    pub ca: TestCa,
    pub https: Upstream,
}

/// An HTTPS upstream answering for `allowed.test` and `denied.test`.
pub fn upstreams() -> Upstreams {
    let ca = TestCa::new();
    let leaf = ca.leaf(&["allowed.test", "denied.test"]);
    let https = Upstream::https(&leaf, |req| {
        Reply::ok(format!(
            "hello from upstream: {} {}\n",
            req.method, req.target
        ))
    });
    Upstreams { ca, https }
}

impl Upstreams {
    pub fn resolve(&self) -> Vec<String> {
        let p = self.https.port();
        vec![
            format!("allowed.test:{p}:127.0.0.1"),
            format!("denied.test:{p}:127.0.0.1"),
        ]
    }
    pub fn url(&self, host: &str) -> String {
        format!("https://{host}:{}/x", self.https.port())
    }
}

/// Standard output, lossily decoded.
pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The refusals of a decision log.
pub fn denials(log: &[Value]) -> Vec<&Value> {
    log.iter().filter(|r| r["decision"] == "deny").collect()
}
