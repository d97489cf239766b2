//! A standalone `corral proxy` as the tests drive it: its policy file, decision log and
//! admin endpoint, every connection attributed to one executable (`--identity-exe`).

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use crate::process::{corral_bin, free_port, Background};

pub struct Proxy {
    pub process: Background,
    pub listen: SocketAddr,
    pub admin: SocketAddr,
    pub policy: PathBuf,
    pub log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Proxy {
    /// Starts the proxy on loopback with `policy_yaml`, attributing every connection to
    /// `identity`, with `--resolve` entries and `extra` flags.
    pub fn start(policy_yaml: &str, identity: &str, resolve: &[String], extra: &[&str]) -> Proxy {
        let dir = tempfile::tempdir().expect("proxy dir");
        let policy = dir.path().join("policy.yaml");
        // The log lives apart from the policy, whose directory the watcher waits on.
        std::fs::create_dir(dir.path().join("logs")).expect("log dir");
        let log = dir.path().join("logs/decisions.jsonl");
        std::fs::write(&policy, policy_yaml).expect("write policy");
        let loopback = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let listen = SocketAddr::new(loopback, free_port(loopback));
        let admin = SocketAddr::new(loopback, free_port(loopback));
        let mut cmd = Command::new(corral_bin());
        cmd.arg("proxy")
            .arg("--policy")
            .arg(&policy)
            .arg("--listen")
            .arg(listen.to_string())
            .arg("--admin")
            .arg(admin.to_string())
            .arg("--log")
            .arg(&log)
            .arg("--identity-exe")
            .arg(identity);
        for r in resolve {
            cmd.arg("--resolve").arg(r);
        }
        cmd.args(extra);
        let mut process = Background::spawn("corral proxy", cmd);
        process.wait_for_port(listen, Duration::from_secs(20));
        process.wait_for_port(admin, Duration::from_secs(20));
        Proxy {
            process,
            listen,
            admin,
            policy,
            log,
            _dir: dir,
        }
    }

    /// Writes a new policy and waits until the proxy has loaded it.
    pub fn reload(&mut self, policy_yaml: &str) {
        std::fs::write(&self.policy, policy_yaml).expect("write policy");
        self.process
            .wait_for_stderr("reloaded", Duration::from_secs(60));
    }

    /// The value of the metric line `name` on `/metrics`.
    pub fn metric(&self, name: &str) -> u64 {
        let mut s = TcpStream::connect(self.admin).expect("connect to the admin address");
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: admin\r\n\r\n")
            .expect("ask for metrics");
        let mut text = String::new();
        s.read_to_string(&mut text).expect("read metrics");
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {name} on /metrics:\n{text}"))
    }
}
