//! The standalone `corral proxy`'s attribution (no `--identity-exe`): each connection is
//! named after the process holding its socket, found through the kernel, searched where it
//! most likely is (the last owner from the same client, then the socket's uid) — which must
//! never name the wrong process — and refused when the process runs an executable with no
//! identity (deleted from disk, an anonymous memory file).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use corral_testsupport::process::{corral_bin, free_port, output, Background};
use corral_testsupport::upstream::Upstream;
use corral_testsupport::user::{chown, ordinary_user, Runner};
use serde_json::Value;

const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// A `corral proxy` resolving its clients through the kernel, with its decision log.
struct Proxy {
    _process: Background,
    addr: SocketAddr,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Proxy {
    /// `allowed`: the executables allowed to reach `echo.test` (the upstream `up`).
    /// `command` builds the proxy's command line (to run it as another user).
    fn start(up: &Upstream, allowed: &[&Path], command: impl Fn(&Path) -> Command) -> Proxy {
        let dir = tempfile::tempdir().unwrap();
        let mut policy = String::from(
            "version: 1\nnetwork_policies:\n  echo:\n    endpoints:\n      - { host: echo.test, port: PORT, allowed_ips: [127.0.0.0/8] }\n    binaries:\n",
        )
        .replace("PORT", &up.port().to_string());
        for exe in allowed {
            policy.push_str(&format!("      - {{ path: {} }}\n", exe.display()));
        }
        let policy_dir = dir.path().join("policy");
        let logs = dir.path().join("logs");
        std::fs::create_dir_all(&policy_dir).unwrap();
        std::fs::create_dir_all(&logs).unwrap();
        std::fs::write(policy_dir.join("policy.yaml"), policy).unwrap();
        if let Some(user) = ordinary_user() {
            chown(dir.path(), user.uid, user.gid);
        }
        let addr = SocketAddr::new(LOCALHOST, free_port(LOCALHOST));
        let log = logs.join("decisions.log");
        let mut cmd = command(&corral_bin());
        cmd.arg("proxy")
            .arg("--policy")
            .arg(policy_dir.join("policy.yaml"))
            .arg("--listen")
            .arg(addr.to_string())
            .arg("--log")
            .arg(&log)
            .arg("--resolve")
            .arg(format!("echo.test:{}:{}", up.port(), up.addr().ip()));
        let mut process = Background::spawn("corral proxy", cmd);
        process.wait_for_port(addr, Duration::from_secs(20));
        Proxy {
            _process: process,
            addr,
            log,
            _dir: dir,
        }
    }

    /// The decisions on requests, in order. A connection that closed before asking for
    /// anything (the start-up probe of `wait_for_port`) is logged too, as an unattributed
    /// refusal with no host; it is no decision on a request.
    fn records(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .filter(|r| r["host"] != "")
            .collect()
    }

    /// The record of the `n`th decision, waiting briefly for it to be written.
    fn record(&self, n: usize) -> Value {
        for _ in 0..250 {
            if let Some(r) = self.records().into_iter().nth(n) {
                return r;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("no decision record #{n}: {:?}", self.records());
    }
}

/// A Python program that asks the proxy for a tunnel to echo.test and prints the status.
fn ask_script(proxy: SocketAddr, up: &Upstream) -> String {
    ask_port_script(proxy, up.port())
}

/// [`ask_script`] for another port: identical refusals are folded into one record
/// (docs/logs.md), so each refusal a test reads asks for a port of its own.
fn ask_port_script(proxy: SocketAddr, port: u16) -> String {
    format!(
        "import socket\ns = socket.create_connection(('{}', {}))\ns.sendall(b'CONNECT echo.test:{} HTTP/1.1\\r\\nHost: echo.test\\r\\n\\r\\n')\nprint(s.recv(4096).split()[1].decode())\n",
        proxy.ip(),
        proxy.port(),
        port
    )
}

fn python() -> PathBuf {
    std::fs::canonicalize(corral_testsupport::deps::python()).unwrap()
}

fn curl() -> PathBuf {
    std::fs::canonicalize("/usr/bin/curl").unwrap()
}

/// Python (allowed) and curl (not) take turns from the same client address, as root and as
/// the ordinary user: each connection is named after its own process, never after the one
/// that owned the previous connection.
#[test]
fn alternating_clients_are_each_named_after_their_own_process() {
    let up = Upstream::echo(None);
    let proxy = Proxy::start(&up, &[&python()], |p| Command::new(p));
    let mut n = 0;
    for runner in [Runner::Current, Runner::ordinary()] {
        for _ in 0..2 {
            let out = output(
                runner
                    .command(python())
                    .args(["-c", &ask_script(proxy.addr, &up)]),
            );
            assert_eq!(
                String::from_utf8_lossy(&out.stdout).trim(),
                "200",
                "{out:?}"
            );
            let rec = proxy.record(n);
            n += 1;
            assert_eq!(rec["binary"], python().to_str().unwrap(), "{rec}");
            assert_eq!(rec["decision"], "allow", "{rec}");

            let out = output(runner.command(curl()).args([
                "-sS",
                "-o",
                "/dev/null",
                "-w",
                "%{http_connect}",
                "-p",
                "-x",
                &format!("http://{}", proxy.addr),
                // A port of its own each time: identical refusals are folded into one
                // record (docs/logs.md), and each connection needs its own.
                &format!("http://echo.test:{}/", 9000 + n),
            ]));
            assert_eq!(
                String::from_utf8_lossy(&out.stdout).trim(),
                "403",
                "{out:?}"
            );
            let rec = proxy.record(n);
            n += 1;
            assert_eq!(rec["binary"], curl().to_str().unwrap(), "{rec}");
            assert_eq!(rec["decision"], "deny", "{rec}");
        }
    }
}

/// A proxy run by the ordinary user cannot read root's processes: root's connection has no
/// owner the proxy can see, and is refused as unattributed rather than guessed.
#[test]
fn a_client_the_proxy_may_not_inspect_is_refused() {
    let Some(user) = ordinary_user() else {
        // Not root: there is no other user whose processes the proxy could not read.
        return;
    };
    let up = Upstream::echo(None);
    let proxy = Proxy::start(&up, &[&python()], |p| user.command(p));
    let out = output(Command::new(python()).args(["-c", &ask_script(proxy.addr, &up)]));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "403",
        "{out:?}"
    );
    let rec = proxy.record(0);
    assert_eq!(rec["error"], "unattributed", "{rec}");
    assert_eq!(rec["binary"], "", "{rec}");
}

/// Executables with no identity are refused, whatever the policy lists: one deleted from
/// disk while it runs, and one run from an anonymous memory file.
#[test]
fn deleted_and_memfd_executables_are_refused() {
    let up = Upstream::echo(None);
    for runner in [Runner::Current, Runner::ordinary()] {
        let home = runner.temp_home();
        let copy = home.join("py");
        std::fs::copy(python(), &copy).unwrap();
        if let Runner::Ordinary(user) = &runner {
            chown(&copy, user.uid, user.gid);
        }
        let proxy = Proxy::start(&up, &[&copy, &python()], |p| Command::new(p));
        // The copy deletes itself, then connects.
        let script = format!(
            "import os, sys\nos.unlink(sys.executable)\n{}",
            ask_script(proxy.addr, &up)
        );
        let out = output(
            runner
                .command(&copy)
                .env("PYTHONHOME", "/usr")
                .args(["-c", &script]),
        );
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            "403",
            "{out:?}"
        );
        let rec = proxy.record(0);
        assert_eq!(rec["error"], "unattributed", "{rec}");
        assert!(
            rec["reason"]
                .as_str()
                .unwrap()
                .contains("deleted from disk"),
            "{rec}"
        );

        // The allowed Python, copied into a memfd and run from there.
        let script = format!(
            "import os, sys\nfd = os.memfd_create('py', 0)\nos.write(fd, open('{}', 'rb').read())\nos.execv(f'/proc/self/fd/{{fd}}', ['python3', '-c', {:?}])\n",
            python().display(),
            ask_port_script(proxy.addr, 9101)
        );
        let out = output(
            runner
                .command(python())
                .env("PYTHONHOME", "/usr")
                .args(["-c", &script]),
        );
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            "403",
            "{out:?}"
        );
        let rec = proxy.record(1);
        assert_eq!(rec["error"], "unattributed", "{rec}");
        assert!(
            rec["reason"]
                .as_str()
                .unwrap()
                .contains("anonymous memory file"),
            "{rec}"
        );
    }
}

/// A program the policy does not list hands a socket to one it does (`sleep`, started with
/// the descriptor), then connects it while both hold it: the newest holder, `sleep`, is
/// found first, but its parent holds the socket too and runs something else, so the
/// connection is refused rather than given `sleep`'s grant.
#[test]
fn a_socket_shared_with_an_allowed_child_is_refused() {
    let up = Upstream::echo(None);
    let sleep = std::fs::canonicalize("/usr/bin/sleep").unwrap();
    let proxy = Proxy::start(&up, &[&sleep], |p| Command::new(p));
    let script = |port: u16| {
        format!(
        "import os, socket, subprocess, time\ns = socket.socket()\nchild = subprocess.Popen(['{sleep}', '30'], pass_fds=[s.fileno()])\nwhile os.readlink(f'/proc/{{child.pid}}/exe') != '{sleep}':\n    time.sleep(0.01)\ns.connect(('{ip}', {port}))\ns.sendall(b'CONNECT echo.test:{up} HTTP/1.1\\r\\nHost: echo.test\\r\\n\\r\\n')\nprint(s.recv(4096).split()[1].decode())\nchild.kill()\n",
        ip = proxy.addr.ip(),
        port = proxy.addr.port(),
        sleep = sleep.display(),
        up = port
    )
    };
    for (n, runner) in [Runner::Current, Runner::ordinary()]
        .into_iter()
        .enumerate()
    {
        let port = up.port() + u16::try_from(n).unwrap();
        let out = output(runner.command(python()).args(["-c", &script(port)]));
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            "403",
            "{out:?}"
        );
        let rec = proxy.record(n);
        assert_eq!(rec["error"], "unattributed", "{rec}");
        assert!(
            rec["reason"]
                .as_str()
                .unwrap()
                .contains("different executables"),
            "{rec}"
        );
    }
}
