//! Running real processes in tests: the `corral` binary, servers, clients.

use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Path of the `corral` binary built for this test run.
///
/// `CORRAL_BIN` wins; otherwise the binary next to the test executable's `deps/` directory,
/// which is where cargo puts it for the `corral` package's integration tests.
pub fn corral_bin() -> PathBuf {
    if let Some(path) = std::env::var_os("CORRAL_BIN") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe.parent().expect("deps dir");
    let candidates = [dir.join("corral"), dir.join("../corral")];
    candidates.into_iter().find(|p| p.is_file()).expect(
        "corral binary not built: run the tests with cargo test -p corral, or set CORRAL_BIN",
    )
}

/// The release `corral` binary the benchmarks measure: `$CORRAL_BIN`, else the workspace's
/// `target/release/corral` (`make bench` builds it first).
pub fn release_corral_bin() -> PathBuf {
    let bin = std::env::var_os("CORRAL_BIN").map_or_else(
        || std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/release/corral"),
        PathBuf::from,
    );
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build --release -p corral` first (make bench does)",
        bin.display()
    );
    bin
}

/// A background process whose stdout and stderr go to files; killed when dropped.
pub struct Background {
    child: Child,
    name: String,
    stdout: PathBuf,
    stderr: PathBuf,
    _dir: tempfile::TempDir,
}

impl Background {
    /// Starts `cmd` (stdin closed).
    pub fn spawn(name: &str, mut cmd: Command) -> Background {
        let dir = crate::fs::world_readable_tempdir();
        let stdout = dir.path().join("stdout");
        let stderr = dir.path().join("stderr");
        cmd.stdin(Stdio::null())
            .stdout(std::fs::File::create(&stdout).expect("stdout file"))
            .stderr(std::fs::File::create(&stderr).expect("stderr file"));
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {name} ({cmd:?}): {e}"));
        Background {
            child,
            name: name.to_string(),
            stdout,
            stderr,
            _dir: dir,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything the process wrote to stdout so far.
    pub fn stdout(&self) -> String {
        read_lossy(&self.stdout)
    }

    /// Everything the process wrote to stderr so far.
    pub fn stderr(&self) -> String {
        read_lossy(&self.stderr)
    }

    /// Waits until `addr` accepts TCP connections; panics with the process's output if it
    /// exits first or `timeout` passes.
    pub fn wait_for_port(&mut self, addr: SocketAddr, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return;
            }
            self.assert_running();
            assert!(
                Instant::now() < deadline,
                "{} did not listen on {addr} within {timeout:?}\n--- stderr ---\n{}",
                self.name,
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until stderr contains `needle`; returns the stderr text.
    pub fn wait_for_stderr(&mut self, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let text = self.stderr();
            if text.contains(needle) {
                return text;
            }
            self.assert_running();
            assert!(
                Instant::now() < deadline,
                "{} never wrote {needle:?} to stderr within {timeout:?}\n--- stderr ---\n{text}",
                self.name
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn assert_running(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!(
                "{} exited early with {status}\n--- stdout ---\n{}\n--- stderr ---\n{}",
                self.name,
                self.stdout(),
                self.stderr()
            );
        }
    }

    /// Sends `signal` to the process.
    pub fn signal(&self, signal: i32) {
        // A failure only means the process is already gone.
        let _ = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status();
    }

    /// Waits for the process to exit and returns its status.
    pub fn wait(&mut self) -> std::process::ExitStatus {
        self.child.wait().expect("wait")
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `cmd` to completion and returns its output, panicking if it cannot be started.
pub fn output(cmd: &mut Command) -> std::process::Output {
    cmd.stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("run {cmd:?}: {e}"))
}

/// A TCP port on `ip` that was free a moment ago.
pub fn free_port(ip: std::net::IpAddr) -> u16 {
    std::net::TcpListener::bind(SocketAddr::new(ip, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("find a free port")
}

fn read_lossy(path: &Path) -> String {
    let mut buf = Vec::new();
    if let Ok(mut file) = std::fs::File::open(path) {
        let _ = file.read_to_end(&mut buf);
    }
    String::from_utf8_lossy(&buf).into_owned()
}
