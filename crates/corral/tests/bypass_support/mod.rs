#![allow(dead_code)]
//! What the bypass scenarios share: host-side targets, and reading what they logged and
//! printed.

use std::net::{TcpListener, UdpSocket};
use std::os::unix::net::UnixListener;

use corral_testsupport::sandbox::denials;
use serde_json::Value;

pub const PY: &str = "/usr/bin/python3";

/// Listeners on the host that no sandboxed process may reach: TCP, UDP, and a unix socket
/// (owned by whoever runs the tests: root in CI) that anyone could connect to.
pub struct HostTargets {
    pub tcp: TcpListener,
    pub udp: UdpSocket,
    pub unix: UnixListener,
    pub unix_path: String,
    _dir: tempfile::TempDir,
}

impl HostTargets {
    pub fn new() -> HostTargets {
        let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
        tcp.set_nonblocking(true).unwrap();
        let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
        udp.set_nonblocking(true).unwrap();
        let dir = corral_testsupport::fs::world_readable_tempdir();
        let path = dir.path().join("host.sock");
        let unix = UnixListener::bind(&path).unwrap();
        unix.set_nonblocking(true).unwrap();
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o777))
            .unwrap();
        HostTargets {
            tcp,
            udp,
            unix,
            unix_path: path.display().to_string(),
            _dir: dir,
        }
    }

    /// Whether anything from the sandbox arrived (a connection or a datagram).
    pub fn reached(&self) -> Vec<&'static str> {
        let mut got = Vec::new();
        while self.tcp.accept().is_ok() {
            got.push("tcp");
        }
        while self.unix.accept().is_ok() {
            got.push("unix");
        }
        let mut buf = [0u8; 64];
        while self.udp.recv_from(&mut buf).is_ok() {
            got.push("udp");
        }
        got
    }
}

/// How many refusals with `error` the log records.
pub fn count(log: &[Value], error: &str) -> usize {
    // A summary line stands for the refusals folded into it (`repeated.count`).
    denials(log)
        .iter()
        .filter(|r| r["error"] == error)
        .map(|r| r["repeated"]["count"].as_u64().map_or(1, |n| n as usize))
        .sum()
}

/// The counters a race script prints: `label name=value …`.
pub fn counters(text: &str, label: &str) -> std::collections::HashMap<String, u64> {
    text.lines()
        .find(|l| l.starts_with(&format!("{label} ")))
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.parse().unwrap_or(0)))
        .collect()
}
