//! Network namespaces that a test creates, so that a negative test whose code were broken
//! could still only send packets to loopback inside the namespace — never off the machine.

use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

/// A named network namespace with only `lo` (up); deleted when dropped. Needs root.
pub struct NetNs {
    name: String,
}

impl NetNs {
    /// Creates `corral-<pid>-<n>`. Panics with a clear message when not root.
    pub fn new() -> NetNs {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        assert!(
            crate::user::is_root(),
            "network namespace fixtures need root (CI runs as root)"
        );
        let name = format!(
            "corral-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        run(Command::new("ip").args(["netns", "add", &name]));
        run(Command::new("ip").args(["-n", &name, "link", "set", "lo", "up"]));
        NetNs { name }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// A command that runs `program` inside this namespace.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name]).arg(program);
        cmd
    }

    /// Connects this namespace to `other` with a veth pair: `local` (CIDR, e.g.
    /// `10.200.0.1/24`) here, `remote` there. Both ends exist only inside the two
    /// namespaces, so traffic between them never reaches a real network.
    pub fn link(&self, other: &NetNs, local: &str, remote: &str) {
        let a = format!("va{}", short(&self.name));
        let b = format!("vb{}", short(&other.name));
        run(Command::new("ip").args([
            "link",
            "add",
            &a,
            "netns",
            &self.name,
            "type",
            "veth",
            "peer",
            "name",
            &b,
            "netns",
            &other.name,
        ]));
        run(Command::new("ip").args(["-n", &self.name, "addr", "add", local, "dev", &a]));
        run(Command::new("ip").args(["-n", &other.name, "addr", "add", remote, "dev", &b]));
        run(Command::new("ip").args(["-n", &self.name, "link", "set", &a, "up"]));
        run(Command::new("ip").args(["-n", &other.name, "link", "set", &b, "up"]));
    }
}

impl Default for NetNs {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

fn short(name: &str) -> String {
    // Interface names are limited to 15 bytes.
    let digits: String = name.chars().filter(|c| c.is_ascii_digit()).collect();
    digits.chars().rev().take(11).collect::<String>()
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs the calling test again in a fresh network namespace that holds only loopback
/// (`unshare -n`, or `unshare -rn` when not root), with everything it starts inside.
///
/// Returns true when already inside (run the test body); outside, it runs the test there,
/// asserts that it passed, and returns false. Use it for tests whose clients could call
/// home if something were broken: inside, any such packet fails locally.
pub fn rerun_in_private_network(test: &str) -> bool {
    const INSIDE: &str = "CORRAL_TEST_IN_PRIVATE_NETNS";
    if std::env::var_os(INSIDE).is_some() {
        return true;
    }
    let flags = if crate::user::is_root() { "-n" } else { "-rn" };
    let out = crate::process::output(
        Command::new("unshare")
            .arg(flags)
            .args(["sh", "-c", "ip link set lo up && exec \"$0\" \"$@\""])
            .arg(std::env::current_exe().expect("current exe"))
            .args([test, "--exact", "--nocapture", "--test-threads=1"])
            .env(INSIDE, "1"),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "{test} inside a private network namespace failed\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}"
    );
    false
}
