//! `corral run` end to end: real sandboxes, real clients (curl, python, git, sh), real
//! upstream servers on loopback, named through the proxy's override (`--resolve`).
//!
//! Every scenario runs as the current user and — when the tests run as root — again as an
//! ordinary user, and in both isolation modes (namespaces, and seccomp-only forced with
//! `--mode seccomp-only`).

use std::process::{Command, Stdio};

use corral_testsupport::process::corral_bin;
use corral_testsupport::sandbox::{
    denials, policy, runners, stdout, upstreams, who, Sandbox, MODES,
};
use corral_testsupport::tls::TestCa;
use corral_testsupport::upstream::{Reply, Upstream};
use corral_testsupport::user::Runner;
use serde_json::Value;

#[test]
fn curl_is_allowed_to_a_listed_host_and_refused_elsewhere_with_a_403_naming_it() {
    let up = upstreams();
    for runner in runners() {
        for mode in MODES {
            let sb = Sandbox::new(
                &runner,
                mode,
                &policy(up.https.port(), &["/usr/bin/curl"]),
                &up.resolve(),
            );
            let ca = up.ca.ca_path().display().to_string();
            let out = sb.run(&[
                "/usr/bin/curl",
                "-sS",
                "--cacert",
                &ca,
                &up.url("allowed.test"),
            ]);
            assert!(out.status.success(), "{}", sb.context(&out));
            assert_eq!(
                stdout(&out),
                "hello from upstream: GET /x\n",
                "{}",
                sb.context(&out)
            );
            let err = String::from_utf8_lossy(&out.stderr).into_owned();
            assert!(
                err.contains(&format!("sandbox mode {mode}")),
                "{}",
                sb.context(&out)
            );

            // Refused over CONNECT: curl reports the 403 from the proxy.
            let out = sb.run(&[
                "/usr/bin/curl",
                "-sS",
                "-v",
                "--cacert",
                &ca,
                &up.url("denied.test"),
            ]);
            assert!(!out.status.success(), "{}", sb.context(&out));
            let err = String::from_utf8_lossy(&out.stderr).into_owned();
            assert!(err.contains("403"), "{}", sb.context(&out));
            assert!(
                err.to_ascii_lowercase().contains("x-corral-error"),
                "{}",
                sb.context(&out)
            );

            // Refused as plain HTTP: the JSON body names binary, host and port.
            let port = up.https.port();
            let out = sb.run(&[
                "/usr/bin/curl",
                "-sS",
                &format!("http://denied.test:{port}/"),
            ]);
            let body = stdout(&out);
            let json: Value = serde_json::from_str(&body)
                .unwrap_or_else(|e| panic!("403 body is JSON ({e}): {}", sb.context(&out)));
            assert_eq!(json["binary"], "/usr/bin/curl", "{}", sb.context(&out));
            assert_eq!(json["host"], "denied.test", "{}", sb.context(&out));
            assert_eq!(json["port"], port, "{}", sb.context(&out));

            let log = sb.log();
            let d = denials(&log);
            assert!(
                d.iter().any(|r| r["binary"] == "/usr/bin/curl"
                    && r["host"] == "denied.test"
                    && r["port"] == port),
                "{}",
                sb.context(&out)
            );
            assert!(
                log.iter().any(|r| r["decision"] == "allow"
                    && r["binary"] == "/usr/bin/curl"
                    && r["host"] == "allowed.test"),
                "{}",
                sb.context(&out)
            );
        }
    }
}

#[test]
fn a_copy_of_curl_is_refused_and_a_symlink_is_attributed_to_the_real_path() {
    let up = upstreams();
    for runner in runners() {
        for mode in MODES {
            let sb = Sandbox::new(
                &runner,
                mode,
                &policy(up.https.port(), &["/usr/bin/curl"]),
                &up.resolve(),
            );
            let ca = up.ca.ca_path().display().to_string();
            let url = up.url("allowed.test");
            // The copy lives in a directory of the sandbox's user.
            let script = format!(
                "set -e; mkdir -p x; cp /usr/bin/curl x/curl; ln -sf /usr/bin/curl x/link\n\
                 x/link -sS --cacert {ca} {url}\n\
                 if x/curl -sS --cacert {ca} {url}; then echo COPY-ALLOWED; else echo copy-refused; fi"
            );
            let out = sb.sh(&script);
            let text = stdout(&out);
            assert!(
                text.starts_with("hello from upstream: GET /x\n"),
                "{}",
                sb.context(&out)
            );
            assert!(text.contains("copy-refused"), "{}", sb.context(&out));
            let log = sb.log();
            let copy = sb
                .work
                .join("x/curl")
                .canonicalize()
                .unwrap()
                .display()
                .to_string();
            assert!(
                denials(&log)
                    .iter()
                    .any(|r| r["binary"] == copy.as_str() && r["error"] == "untrusted_binary"),
                "{}",
                sb.context(&out)
            );
            assert!(
                log.iter()
                    .any(|r| r["decision"] == "allow" && r["binary"] == "/usr/bin/curl"),
                "the symlink runs /usr/bin/curl: {}",
                sb.context(&out)
            );
        }
    }
}

#[test]
fn a_binary_replaced_at_an_allowed_path_is_refused() {
    let up = upstreams();
    for runner in runners() {
        let mode = "namespaces";
        let home_probe = runner.temp_home();
        let tool = home_probe.join("tool");
        let tool_s = tool.display().to_string();
        // The sandbox may write where the tool lies, so only a pin makes it trusted.
        let sha = String::from_utf8(
            Command::new("sha256sum")
                .arg("/usr/bin/curl")
                .output()
                .unwrap()
                .stdout,
        )
        .unwrap()[..64]
            .to_string();
        let yaml = format!(
            "{}filesystem_policy:\n  read_write: [{}]\n",
            policy(up.https.port(), &[&tool_s]).replace(
                &format!("path: {tool_s}\n"),
                &format!("path: {tool_s}\n        sha256: {sha}\n")
            ),
            home_probe.path().display()
        );
        let sb = Sandbox::new(&runner, mode, &yaml, &up.resolve());
        std::fs::copy("/usr/bin/curl", &tool).unwrap();
        sb.give_to_runner(home_probe.path());
        let ca = up.ca.ca_path().display().to_string();
        let url = up.url("allowed.test");
        // Same behaviour, different bytes: one appended byte leaves the ELF runnable.
        let script = format!(
            "{tool_s} -sS --cacert {ca} {url} && printf x >> {tool_s} && \
             if {tool_s} -sS --cacert {ca} {url}; then echo REPLACED-ALLOWED; else echo replaced-refused; fi"
        );
        let out = sb.sh(&script);
        let text = stdout(&out);
        assert!(
            text.starts_with("hello from upstream"),
            "{}",
            sb.context(&out)
        );
        assert!(text.contains("replaced-refused"), "{}", sb.context(&out));
        assert!(
            sb.log().iter().any(|r| r["decision"] == "deny"
                && r["binary"] == tool_s.as_str()
                && r["error"] == "binary_changed"),
            "{}",
            sb.context(&out)
        );
    }
}

const PY: &str = "/usr/bin/python3";

/// Python: `attempt(what, f)` prints `what OK` or `what ERRNO`; `conn(p)` connects a unix
/// stream socket to `p`.
const UNIX_ATTEMPT: &str = "import socket, errno, os
def attempt(what, f):
    try:
        f(); print(what, 'OK')
    except OSError as e:
        print(what, errno.errorcode[e.errno])
def conn(p):
    c = socket.socket(socket.AF_UNIX); c.connect(p)
";

#[test]
fn host_unix_sockets_are_refused_and_the_sandboxs_own_work() {
    // A host service on a unix socket anyone may open (a container engine's socket is the
    // dangerous case: it starts processes outside, with the host's network).
    let dir = corral_testsupport::fs::world_readable_tempdir();
    let host_sock = dir.path().join("host.sock");
    let host = std::os::unix::net::UnixListener::bind(&host_sock).unwrap();
    std::fs::set_permissions(
        &host_sock,
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .unwrap();
    host.set_nonblocking(true).unwrap();
    let host_path = host_sock.display().to_string();
    for runner in runners() {
        for mode in MODES {
            let sb = Sandbox::new(&runner, mode, &policy(1, &[PY]), &[]);
            // Tries the host socket straight, through a symlink made inside, and as a
            // datagram destination; then serves and reaches its own socket, by absolute and
            // relative path.
            let script = format!(
                "{UNIX_ATTEMPT}\
                 attempt('host', lambda: conn({host_path:?}))\n\
                 os.symlink({host_path:?}, 'link.sock')\n\
                 attempt('symlink', lambda: conn('link.sock'))\n\
                 d = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)\n\
                 attempt('dgram', lambda: d.sendto(b'x', {host_path:?}))\n\
                 s = socket.socket(socket.AF_UNIX); s.bind('own.sock'); s.listen()\n\
                 attempt('own', lambda: conn(os.path.abspath('own.sock')))\n\
                 attempt('own-relative', lambda: conn('own.sock'))\n"
            );
            let out = sb.run(&[PY, "-c", &script]);
            let text = stdout(&out);
            for expected in [
                "host EACCES",
                "symlink EACCES",
                "dgram EACCES",
                "own OK",
                "own-relative OK",
            ] {
                assert!(text.contains(expected), "{expected}: {}", sb.context(&out));
            }
            assert!(
                host.accept().is_err(),
                "the host service was reached: {}",
                sb.context(&out)
            );
            let refused: Vec<Value> = sb
                .log()
                .into_iter()
                .filter(|r| r["error"] == "unix_socket")
                .collect();
            assert!(
                refused
                    .iter()
                    .any(|r| r["host"] == format!("unix:{host_path}")
                        && r["binary"].as_str().unwrap_or("").starts_with(PY)),
                "{}",
                sb.context(&out)
            );
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(
                err.contains(&format!("-> unix:{host_path} [unix_socket]")),
                "{}",
                sb.context(&out)
            );
            assert!(
                err.contains("under `unix_sockets:`"),
                "the refusal says how to allow it: {}",
                sb.context(&out)
            );

            // Listed under unix_sockets by its real path, the host socket is reachable —
            // straight and through a link to it; nothing else is.
            let real = std::fs::canonicalize(&host_sock).unwrap();
            let listed = Sandbox::new(
                &runner,
                mode,
                &format!(
                    "{}unix_sockets:\n  - {}\n",
                    policy(1, &[PY]),
                    real.display()
                ),
                &[],
            );
            let script = format!(
                "{UNIX_ATTEMPT}\
                 attempt('listed', lambda: conn({host_path:?}))\n\
                 os.symlink({host_path:?}, 'link.sock')\n\
                 attempt('listed-link', lambda: conn('link.sock'))\n"
            );
            let out = listed.run(&[PY, "-c", &script]);
            let text = stdout(&out);
            assert!(text.contains("listed OK"), "{}", listed.context(&out));
            assert!(text.contains("listed-link OK"), "{}", listed.context(&out));
            while host.accept().is_ok() {}
        }
    }
}

#[test]
fn python_connecting_straight_to_a_server_is_refused_and_logged() {
    let v4 = std::net::TcpListener::bind("127.0.0.2:0").unwrap();
    let v6 = std::net::TcpListener::bind("[::1]:0").ok();
    let p4 = v4.local_addr().unwrap().port();
    for runner in runners() {
        for mode in MODES {
            let sb = Sandbox::new(&runner, mode, &policy(1, &[PY]), &[]);
            let mut targets = vec![format!("('127.0.0.2', {p4})")];
            if let Some(l) = &v6 {
                targets.push(format!("('::1', {})", l.local_addr().unwrap().port()));
            }
            for t in &targets {
                let family = if t.contains("::1") {
                    "AF_INET6"
                } else {
                    "AF_INET"
                };
                let script = format!(
                    "import socket, errno\n\
                     s = socket.socket(socket.{family}, socket.SOCK_STREAM)\n\
                     try:\n    s.connect({t}); print('CONNECTED')\n\
                     except OSError as e:\n    print('refused', errno.errorcode[e.errno])\n\
                     u = socket.socket(socket.{family}, socket.SOCK_DGRAM)\n\
                     try:\n    u.sendto(b'x', {t}); print('SENT')\n\
                     except OSError as e:\n    print('dgram-refused', errno.errorcode[e.errno])\n"
                );
                let out = sb.run(&[PY, "-c", &script]);
                let text = stdout(&out);
                assert!(
                    text.contains("refused ECONNREFUSED"),
                    "{t}: {}",
                    sb.context(&out)
                );
                assert!(
                    text.contains("dgram-refused EACCES"),
                    "{t}: {}",
                    sb.context(&out)
                );
            }
            let log = sb.log();
            let direct: Vec<_> = log.iter().filter(|r| r["kind"] == "direct").collect();
            assert!(
                direct.iter().any(|r| r["error"] == "direct_connect"
                    && r["binary"]
                        .as_str()
                        .unwrap_or("")
                        .starts_with("/usr/bin/python3")
                    && r["host"] == "127.0.0.2"
                    && r["port"] == p4),
                "{}",
                std::fs::read_to_string(&sb.log).unwrap_or_default()
            );
            assert!(direct.iter().any(|r| r["error"] == "datagram"), "{log:?}");
            if v6.is_some() {
                assert!(direct.iter().any(|r| r["host"] == "::1"), "{log:?}");
            }
        }
    }
    drop(v4);
}

/// A python client that speaks CONNECT to the proxy itself.
fn python_connect_client(target: &str) -> String {
    format!(
        "def fetch(s):\n    s.connect(('127.0.0.1', 3128))\n    s.sendall(b'CONNECT {target} HTTP/1.1\\r\\nHost: {target}\\r\\n\\r\\n')\n    return s.recv(200).split(b'\\r\\n')[0].decode()\n"
    )
}

#[test]
fn a_child_using_its_parents_socket_and_an_orphan_are_attributed() {
    let up = upstreams();
    let target = format!("allowed.test:{}", up.https.port());
    for runner in runners() {
        for mode in MODES {
            let sb = Sandbox::new(
                &runner,
                mode,
                &policy(up.https.port(), &[PY]),
                &up.resolve(),
            );
            // The parent creates the socket, a forked child connects it.
            let inherit = format!(
                "import os, socket\n{}s = socket.socket()\npid = os.fork()\nif pid == 0:\n    print('child', fetch(s), flush=True)\n    os._exit(0)\nos.waitpid(pid, 0)\n",
                python_connect_client(&target)
            );
            let out = sb.run(&[PY, "-c", &inherit]);
            assert!(
                stdout(&out).contains("child HTTP/1.1 200"),
                "{}",
                sb.context(&out)
            );

            // An orphan: its parent exits first, then it connects.
            let orphan = format!(
                "import os, socket, time\n{}r, w = os.pipe()\nif os.fork() == 0:\n    mid = os.getpid()\n    if os.fork() == 0:\n        os.close(r)\n        while os.getppid() == mid:\n            time.sleep(0.01)\n        os.write(w, fetch(socket.socket()).encode())\n        os._exit(0)\n    os._exit(0)\nos.wait()\nos.close(w)\nprint('orphan', os.read(r, 100).decode())\n",
                python_connect_client(&target)
            );
            let out = sb.run(&[PY, "-c", &orphan]);
            assert!(
                stdout(&out).contains("orphan HTTP/1.1 200"),
                "{}",
                sb.context(&out)
            );
            let allows = sb
                .log()
                .into_iter()
                .filter(|r| {
                    r["decision"] == "allow"
                        && r["binary"]
                            .as_str()
                            .unwrap_or("")
                            .starts_with("/usr/bin/python3")
                })
                .count();
            assert!(allows >= 2, "{}", sb.context(&out));
        }
    }
}

#[test]
fn git_clone_needs_git_remote_https_in_the_policy() {
    use corral_testsupport::git_server::GitServer;
    let ca = TestCa::new();
    let git = GitServer::start(&ca, &["git.test"]);
    let port = git.port();
    let resolve = vec![format!("git.test:{port}:127.0.0.1")];
    let url = format!("https://git.test:{port}/repo.git");
    let git_policy = |bins: &[&str]| {
        let bins: String = bins
            .iter()
            .map(|b| format!("      - path: {b}\n"))
            .collect();
        format!(
            "version: 1\nnetwork_policies:\n  git:\n    endpoints:\n      - host: git.test\n        port: {port}\n        allowed_ips: [127.0.0.0/8]\n    binaries:\n{bins}"
        )
    };
    // Debian's git-remote-https is a symlink: the sandbox names the file it resolves to.
    let remote_https = std::fs::canonicalize("/usr/lib/git-core/git-remote-https")
        .unwrap()
        .display()
        .to_string();
    for runner in runners() {
        let mode = "namespaces";
        let ok = Sandbox::new(
            &runner,
            mode,
            &git_policy(&["/usr/bin/git", "/usr/lib/git-core/git-remote-https"]),
            &resolve,
        );
        let out = ok
            .command(&["/usr/bin/git", "clone", "-q", &url, "clone"])
            .env("GIT_SSL_CAINFO", ca.ca_path())
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", ok.context(&out));
        assert!(
            ok.work.join("clone/README.md").exists(),
            "{}",
            ok.context(&out)
        );

        let only_git = Sandbox::new(&runner, mode, &git_policy(&["/usr/bin/git"]), &resolve);
        let out = only_git
            .command(&["/usr/bin/git", "clone", "-q", &url, "clone"])
            .env("GIT_SSL_CAINFO", ca.ca_path())
            .output()
            .unwrap();
        assert!(!out.status.success(), "{}", only_git.context(&out));
        assert!(
            denials(&only_git.log())
                .iter()
                .any(|r| r["binary"] == remote_https.as_str()
                    && r["ancestors"]
                        .as_array()
                        .is_some_and(|a| a.iter().any(|x| x == "/usr/bin/git"))),
            "{}",
            only_git.context(&out)
        );
    }
}

#[test]
fn exit_codes_and_signals_are_propagated() {
    for runner in runners() {
        for mode in MODES {
            let sb = Sandbox::new(&runner, mode, &policy(1, &["/usr/bin/curl"]), &[]);
            let out = sb.sh("exit 7");
            assert_eq!(out.status.code(), Some(7), "{}", sb.context(&out));
            let out = sb.sh("kill -TERM $$");
            assert_eq!(out.status.code(), Some(128 + 15), "{}", sb.context(&out));
            let out = sb.run(&["/nonexistent/tool"]);
            assert_eq!(out.status.code(), Some(127), "{}", sb.context(&out));
            let out = sb.run(&["no-such-command-corral"]);
            assert_eq!(out.status.code(), Some(127), "{}", sb.context(&out));
            assert!(
                String::from_utf8_lossy(&out.stderr).contains("command not found"),
                "{}",
                sb.context(&out)
            );

            // A signal sent to corral reaches the command, which reports it.
            let mut child = sb
                .command(&[
                    "/bin/sh",
                    "-c",
                    "trap 'echo got-term; exit 3' TERM; echo ready; while :; do sleep 0.05; done",
                ])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
            let mut line = String::new();
            std::io::BufRead::read_line(&mut stdout, &mut line).unwrap();
            assert_eq!(line, "ready\n");
            Command::new("kill")
                .arg("-TERM")
                .arg(child.id().to_string())
                .status()
                .unwrap();
            let status = child.wait().unwrap();
            line.clear();
            std::io::BufRead::read_line(&mut stdout, &mut line).unwrap();
            assert_eq!(line, "got-term\n", "[{} / {mode}]", who(&runner));
            assert_eq!(status.code(), Some(3), "[{} / {mode}]", who(&runner));
        }
    }
}

/// `kill -9` of the supervisor opens no way out: a detached process (`setsid`) that keeps
/// connecting straight to a server on the host is refused before the kill, and dies with
/// the supervisor — with the PID namespace in namespace mode, killed by the sandbox's init
/// in seccomp-only mode. Until then the kernel fails its filtered calls (ENOSYS), so not
/// one connection reaches the host.
#[test]
fn killing_the_supervisor_opens_no_way_out() {
    let server = std::net::TcpListener::bind("127.0.0.2:0").unwrap();
    server.set_nonblocking(true).unwrap();
    let port = server.local_addr().unwrap().port();
    let script = format!(
        "import socket, errno, sys, time\n\
         out = open(sys.argv[1], 'a', buffering=1)\n\
         end = time.time() + 2\n\
         while time.time() < end:\n\
         \x20   s = socket.socket()\n\
         \x20   try:\n\
         \x20       s.connect(('127.0.0.2', {port})); out.write('CONNECTED\\n')\n\
         \x20   except OSError as e:\n\
         \x20       out.write(errno.errorcode.get(e.errno, str(e.errno)) + '\\n')\n\
         \x20   s.close()\n\
         \x20   time.sleep(0.05)\n\
         out.write('done\\n')\n"
    );
    for runner in runners() {
        for mode in MODES {
            let sb = Sandbox::new(&runner, mode, &policy(1, &[PY]), &[]);
            let results = sb.work.join("results");
            let mut cmd = sb.command(&[
                "/bin/sh",
                "-c",
                "setsid \"$0\" -c \"$1\" \"$2\" </dev/null >/dev/null 2>&1 & sleep 60",
                PY,
                &script,
                &results.display().to_string(),
            ]);
            cmd.stdout(Stdio::null()).stderr(Stdio::null());
            let mut corral = corral_testsupport::process::Background::spawn("corral run", cmd);
            let read = || std::fs::read_to_string(&results).unwrap_or_default();
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
            while read().lines().count() < 3 {
                assert!(
                    std::time::Instant::now() < deadline,
                    "[{} / {mode}] the detached client never ran: {:?}",
                    who(&runner),
                    read()
                );
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            let before = read().lines().count();
            corral.signal(9);
            corral.wait();
            // The client would go on for two seconds; it must die with the sandbox.
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
            while !read().contains("done") && std::time::Instant::now() < deadline {
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            let text = read();
            let what = format!("[{} / {mode}] {text:?}", who(&runner));
            assert!(!text.contains("CONNECTED"), "{what}");
            assert!(
                !text.contains("done"),
                "the detached process outlived the supervisor: {what}"
            );
            assert!(
                text.lines().take(before).all(|l| l == "ECONNREFUSED"),
                "{what}"
            );
            match server.accept() {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                other => panic!("the host server was reached: {other:?}; {what}"),
            }
        }
    }
}

#[test]
fn the_sandbox_sees_the_proxy_environment_and_keeps_the_users_uid() {
    for runner in runners() {
        for mode in MODES {
            let sb = Sandbox::new(&runner, mode, &policy(1, &["/usr/bin/curl"]), &[]);
            let out = sb.sh("echo $HTTPS_PROXY $https_proxy $NO_PROXY $NODE_USE_ENV_PROXY; id -u; touch made; stat -c %u made");
            let text = stdout(&out);
            let mut lines = text.lines();
            assert_eq!(
                lines.next(),
                Some("http://127.0.0.1:3128 http://127.0.0.1:3128 localhost,127.0.0.1,::1 1"),
                "{}",
                sb.context(&out)
            );
            let uid = lines.next().unwrap_or_default().to_string();
            let expected = match &runner {
                Runner::Ordinary(u) => u.uid.to_string(),
                Runner::Current => {
                    String::from_utf8(Command::new("id").arg("-u").output().unwrap().stdout)
                        .unwrap()
                        .trim()
                        .to_string()
                }
            };
            assert_eq!(uid, expected, "{}", sb.context(&out));
            assert_eq!(
                lines.next(),
                Some(expected.as_str()),
                "files keep the user's ownership: {}",
                sb.context(&out)
            );
        }
    }
}

#[test]
fn an_interactive_session_runs_on_a_terminal_with_job_control() {
    // `script` gives the sandbox a real pseudo-terminal; ^C (sent as a byte on the
    // terminal) interrupts the foreground command inside, and the session goes on.
    for runner in runners() {
        for mode in MODES {
            let sb = Sandbox::new(&runner, mode, &policy(1, &["/usr/bin/curl"]), &[]);
            let corral = sb.command(&["/bin/sh", "-c", "trap 'echo interrupted; exit 5' INT; if [ -t 0 ] && [ -t 1 ]; then echo on-a-tty; fi; read line; echo read-returned"]);
            let argv: Vec<String> = std::iter::once(corral.get_program())
                .chain(corral.get_args())
                .map(|a| shell_quote(&a.to_string_lossy()))
                .collect();
            let mut c = sb.runner.command("/usr/bin/script");
            c.current_dir(&sb.work).env("HOME", sb.home.path());
            // `exec`: no shell of script's may sit between the terminal and corral (a
            // non-interactive shell waiting for its child dies of the ^C itself, and script
            // would report that).
            c.args(["-qfec", &format!("exec {}", argv.join(" ")), "/dev/null"]);
            c.stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            let mut child = c.spawn().unwrap();
            let mut out = child.stdout.take().unwrap();
            let mut seen = String::new();
            let mut buf = [0u8; 256];
            while !seen.contains("on-a-tty") {
                let n = std::io::Read::read(&mut out, &mut buf).unwrap();
                assert!(
                    n > 0,
                    "[{} / {mode}] script ended early: {seen}",
                    who(&runner)
                );
                seen.push_str(&String::from_utf8_lossy(&buf[..n]));
            }
            std::io::Write::write_all(child.stdin.as_mut().unwrap(), b"\x03").unwrap();
            drop(child.stdin.take());
            let status = child.wait().unwrap();
            let mut rest = String::new();
            std::io::Read::read_to_string(&mut out, &mut rest).unwrap();
            seen.push_str(&rest);
            assert!(
                seen.contains("interrupted"),
                "[{} / {mode}] ^C did not reach the command: {seen}",
                who(&runner)
            );
            assert_eq!(status.code(), Some(5), "[{} / {mode}] {seen}", who(&runner));
        }
    }
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

#[test]
fn require_netns_and_an_unknown_mode_are_refused_clearly() {
    let runner = Runner::Current;
    let sb = Sandbox::new(&runner, "seccomp-only", &policy(1, &["/usr/bin/curl"]), &[]);
    let out = sb
        .runner
        .command(corral_bin())
        .args([
            "run",
            "--require-netns",
            "--mode",
            "seccomp-only",
            "--policy",
        ])
        .arg(&sb.policy)
        .args(["--", "/bin/true"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--require-netns"));
    let out = sb
        .runner
        .command(corral_bin())
        .args(["run", "--mode", "sideways", "--policy"])
        .arg(&sb.policy)
        .args(["--", "/bin/true"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown sandbox mode"));
}

#[test]
fn filesystem_policy_is_enforced_with_landlock() {
    for runner in runners() {
        for mode in MODES {
            let probe = Sandbox::new(&runner, mode, "version: 1\n", &[]);
            let secret_dir = probe.runner.temp_home();
            std::fs::write(secret_dir.join("secret"), "s3cret\n").unwrap();
            probe.give_to_runner(secret_dir.path());
            let yaml = "version: 1\nfilesystem_policy:\n  include_workdir: true\n  read_only: [/usr, /lib, /lib64, /bin, /etc]\n  read_write: [/does/not/exist]\nnetwork_policies: {}\n";
            let sb = Sandbox::new(&runner, mode, yaml, &[]);
            let secret = secret_dir.join("secret").display().to_string();
            let out = sb.sh(&format!(
                "cat {secret} || echo secret-hidden; echo ok > here && cat here; touch /usr/corral-nope 2>/dev/null || echo usr-read-only"
            ));
            let text = stdout(&out);
            assert!(
                text.contains("secret-hidden") && !text.contains("s3cret"),
                "{}",
                sb.context(&out)
            );
            assert!(
                text.contains("ok\n"),
                "the working directory is writable: {}",
                sb.context(&out)
            );
            assert!(text.contains("usr-read-only"), "{}", sb.context(&out));
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(
                err.contains("/does/not/exist skipped"),
                "best_effort warns per path: {}",
                sb.context(&out)
            );

            let hard = Sandbox::new(
                &runner,
                mode,
                &yaml.replace(
                    "network_policies",
                    "landlock:\n  compatibility: hard_requirement\nnetwork_policies",
                ),
                &[],
            );
            let out = hard.run(&["/bin/true"]);
            assert!(!out.status.success(), "{}", hard.context(&out));
            assert!(
                String::from_utf8_lossy(&out.stderr).contains("/does/not/exist"),
                "{}",
                hard.context(&out)
            );
        }
    }
}

#[test]
fn a_policy_change_applies_inside_a_running_sandbox() {
    use corral_testsupport::process::Background;
    use std::time::Duration;
    let up = upstreams();
    let runner = Runner::ordinary();
    let sb = Sandbox::new(
        &runner,
        "namespaces",
        &policy(up.https.port(), &["/usr/bin/true"]),
        &up.resolve(),
    );
    let ca = up.ca.ca_path().display().to_string();
    let url = up.url("allowed.test");
    let script = format!(
        "curl -s -o /dev/null -w 'first %{{http_connect}}\\n' --cacert {ca} {url}; \
         while [ ! -e go ]; do sleep 0.05; done; \
         curl -sS --cacert {ca} {url}"
    );
    let mut bg = Background::spawn("corral run", sb.command(&["/bin/sh", "-c", &script]));
    // The first attempt is refused…
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !denials(&sb.log())
        .iter()
        .any(|r| r["binary"] == "/usr/bin/curl")
    {
        assert!(
            std::time::Instant::now() < deadline,
            "no refusal logged: {}",
            bg.stderr()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // …then the policy is edited in place and reloaded.
    std::fs::write(&sb.policy, policy(up.https.port(), &["/usr/bin/curl"])).unwrap();
    bg.wait_for_stderr("policy reloaded", Duration::from_secs(60));
    let go = sb.work.join("go");
    std::fs::write(&go, "").unwrap();
    sb.give_to_runner(&go);
    let status = bg.wait();
    assert!(status.success(), "{}\n{}", bg.stdout(), bg.stderr());
    assert!(bg.stdout().contains("first 403"), "{}", bg.stdout());
    assert!(
        bg.stdout().contains("hello from upstream: GET /x"),
        "{}",
        bg.stdout()
    );
}

/// Python prelude for scripts that try things inside the sandbox: `attempt(name, f)`
/// prints `name ALLOWED` or `name ERRNO`, and `sys_(nr, *args)` makes a raw syscall,
/// raising `OSError` on failure.
#[cfg(target_arch = "x86_64")]
const ATTEMPT_PY: &str = r#"
import ctypes, errno, os, socket, subprocess
def attempt(name, f):
    try:
        f(); print(name, 'ALLOWED')
    except OSError as e:
        print(name, errno.errorcode.get(e.errno, e.errno))
libc = ctypes.CDLL(None, use_errno=True)
def sys_(nr, *a):
    r = libc.syscall(nr, *a)
    if r < 0:
        raise OSError(ctypes.get_errno(), 'syscall')
    return r
"#;

/// Syscall numbers below are x86_64's.
#[cfg(target_arch = "x86_64")]
#[test]
fn the_filter_refuses_fast_open_raw_families_namespaces_and_io_uring() {
    let script = format!(
        "{ATTEMPT_PY}{}",
        r#"
s = socket.socket()
attempt('fastopen', lambda: s.sendto(b'x', 0x20000000, ('127.0.0.2', 9)))
attempt('packet', lambda: socket.socket(socket.AF_PACKET, socket.SOCK_RAW))
attempt('io_uring_setup', lambda: sys_(425, 8, ctypes.create_string_buffer(120)))
attempt('unshare', lambda: sys_(272, 0x10000000))
attempt('ptrace', lambda: sys_(101, 16, os.getppid(), 0, 0))
print('nested-userns', subprocess.run(['unshare', '-Ur', 'true'], stderr=subprocess.DEVNULL).returncode != 0)
"#
    );
    for runner in runners() {
        for mode in MODES {
            let sb = Sandbox::new(&runner, mode, "version: 1\n", &[]);
            let out = sb.run(&[PY, "-c", &script]);
            let text = stdout(&out);
            for expected in [
                "fastopen EPERM",
                "packet EAFNOSUPPORT",
                "io_uring_setup EPERM",
                "unshare EPERM",
                "ptrace EPERM",
                "nested-userns True",
            ] {
                assert!(text.contains(expected), "{expected}: {}", sb.context(&out));
            }
        }
    }
}

/// The sandbox cannot widen its own policy or rewrite its decision log: it tries to append
/// a grant, to rename another policy over it, to move the policy's directory away and put
/// a new one in its place, and to forge a refusal (which `corral policy suggest --apply`
/// would turn into a grant). Every attempt fails in both modes: the filesystem view keeps
/// the policy, the log and the directories above them read-only (and namespace mode binds
/// the directories read-only too). The host it tried to add stays refused.
#[test]
fn the_sandbox_cannot_change_its_policy_or_its_log() {
    let up = upstreams();
    let port = up.https.port();
    let grant = format!(
        "  widened:\n    endpoints:\n      - host: denied.test\n        port: {port}\n        allowed_ips: [127.0.0.0/8]\n    binaries:\n      - path: /usr/bin/curl\n"
    );
    for runner in runners() {
        for mode in MODES {
            let sb = Sandbox::new(
                &runner,
                mode,
                &policy(port, &["/usr/bin/curl"]),
                &up.resolve(),
            );
            let original = std::fs::read_to_string(&sb.policy).unwrap();
            let forged = r#"{"time":"2026-01-01T00:00:00.000Z","kind":"connect","conn":1,"decision":"deny","error":"no_endpoint","binary":"/usr/bin/curl","ancestors":[],"host":"forged.test","port":443,"policy_generation":1,"status":403,"bytes_up":0,"bytes_down":0,"duration_ms":0}"#;
            let script = format!(
                "P=\"$1\"; L=\"$2\"; D=$(dirname \"$P\")\n\
                 {{ cat \"$P\"; printf '%s' \"$3\"; }} > new.yaml\n\
                 printf '%s' \"$3\" >> \"$P\" 2>/dev/null && echo appended || echo append-refused\n\
                 mv new.yaml \"$P\" 2>/dev/null && echo replaced || echo replace-refused\n\
                 mv \"$D\" \"$D.old\" 2>/dev/null && mkdir \"$D\" && cp \"$D.old/$(basename \"$P\")\" \"$P\" && echo dir-swapped || echo dir-swap-refused\n\
                 echo '{forged}' >> \"$L\" 2>/dev/null && echo forged || echo forge-refused\n\
                 sleep 1.5\n\
                 curl -s -o /dev/null -w 'widened %{{http_connect}}\\n' --cacert \"$4\" {url}\n",
                url = up.url("denied.test"),
            );
            let out = sb.run(&[
                "/bin/sh",
                "-c",
                &script,
                "sh",
                &sb.policy.display().to_string(),
                &sb.log.display().to_string(),
                &grant,
                &up.ca.ca_path().display().to_string(),
            ]);
            let text = stdout(&out);
            let ctx = sb.context(&out);
            assert!(text.contains("widened 403"), "{ctx}");
            let log = std::fs::read_to_string(&sb.log).unwrap_or_default();
            let moved = sb.policy.parent().unwrap().with_extension("old");
            // Both modes: the filesystem view (Landlock) keeps the policy, the log and the
            // directories above them out of reach; namespace mode binds them read-only too.
            for refused in [
                "append-refused",
                "replace-refused",
                "dir-swap-refused",
                "forge-refused",
            ] {
                assert!(text.contains(refused), "{refused}: {ctx}");
            }
            assert_eq!(std::fs::read_to_string(&sb.policy).unwrap(), original);
            assert!(!log.contains("forged.test"), "{ctx}");
            assert!(!moved.exists());
            assert!(
                !String::from_utf8_lossy(&out.stderr).contains("not reloaded"),
                "{ctx}"
            );
        }
    }
}

/// A script in the sandbox cannot take over an allowed client it started (and connect as
/// it): the client's memory cannot be written through `/proc/PID/mem`, nor its connected
/// sockets taken with `pidfd_getfd`, nor its memory patched with `process_vm_writev`.
/// Ordinary writes (files, `/dev/stdout` on a pipe) still work.
#[cfg(target_arch = "x86_64")]
#[test]
fn a_process_cannot_take_over_another_in_the_sandbox() {
    let script = format!(
        "{ATTEMPT_PY}{}",
        r#"
victim = subprocess.Popen(['sleep', '30'], stdin=subprocess.PIPE)
attempt('mem-write', lambda: open('/proc/%d/mem' % victim.pid, 'r+b'))
attempt('mem-read', lambda: open('/proc/%d/mem' % victim.pid, 'rb'))
attempt('parent-mem-read', lambda: open('/proc/%d/mem' % os.getppid(), 'rb'))
attempt('signal-inside', lambda: os.kill(victim.pid, 0))
def grandparent():
    with open('/proc/%d/status' % os.getppid()) as f:
        return int([l for l in f if l.startswith('PPid:')][0].split()[1])
attempt('signal-supervisor', lambda: os.kill(grandparent(), 0))
pidfd = sys_(434, victim.pid, 0)
attempt('pidfd_getfd', lambda: sys_(438, pidfd, 0, 0))
attempt('process_vm_writev', lambda: sys_(311, victim.pid, 0, 0, 0, 0, 0))
victim.kill()
with open('note', 'w') as f:
    f.write('x')
print('home-write ok')
# A pipe of the sandbox's own (the test's pipe belongs to root, whom the ordinary user
# could not reopen it as anywhere).
print(subprocess.run(['sh', '-c', 'echo dev-stdout ok > /dev/stdout'], stdout=subprocess.PIPE).stdout.decode())
"#
    );
    for runner in runners() {
        for mode in MODES {
            let sb = Sandbox::new(&runner, mode, "version: 1\n", &[]);
            let out = sb.run(&[PY, "-c", &script]);
            let text = stdout(&out);
            for expected in [
                "mem-write EACCES",
                "mem-read ALLOWED",
                // The parent is the sandbox's init, a copy of corral the sandbox may not
                // look into.
                "parent-mem-read EACCES",
                "signal-inside ALLOWED",
                "pidfd_getfd EPERM",
                "process_vm_writev EPERM",
                "home-write ok",
                "dev-stdout ok",
            ] {
                assert!(text.contains(expected), "{expected}: {}", sb.context(&out));
            }
            // Landlock ABI 6 keeps signals inside. The parent is the sandbox's init; in
            // seccomp-only mode its parent is the supervisor, outside (in namespace mode
            // the PID namespace hides it).
            if mode == "seccomp-only"
                && String::from_utf8_lossy(&out.stderr)
                    .contains("signals and abstract sockets kept inside")
            {
                assert!(
                    text.contains("signal-supervisor EPERM"),
                    "{}",
                    sb.context(&out)
                );
            }
        }
    }
}

/// How many `sleep 67` processes (the job of [`job_control_works_in_tmux`]) are stopped.
fn stopped_sleeps() -> usize {
    let out = Command::new("ps")
        .args(["-eo", "stat=,args="])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.trim_start().starts_with('T') && l.ends_with("sleep 67"))
        .count()
}

/// Drives an interactive shell in tmux: ^Z stops the sandboxed job, `fg` resumes it, ^C
/// ends it with 130.
#[test]
fn job_control_works_in_tmux() {
    use std::time::{Duration, Instant};
    for runner in runners() {
        for mode in MODES {
            let sb = Sandbox::new(&runner, mode, &policy(1, &["/usr/bin/curl"]), &[]);
            let session = format!("corral-run-{}-{}", std::process::id(), mode);
            let tmux = |args: &[&str]| {
                let mut c = sb.runner.command("tmux");
                c.env("TMUX_TMPDIR", sb.home.path()).args(args);
                let o = c.output().expect("tmux");
                String::from_utf8_lossy(&o.stdout).into_owned()
            };
            let pane = || tmux(&["capture-pane", "-p", "-J", "-S", "-200", "-t", &session]);
            let wait_for = |needle: &str| {
                let deadline = Instant::now() + Duration::from_secs(60);
                loop {
                    let text = pane();
                    if text.contains(needle) {
                        return;
                    }
                    assert!(
                        Instant::now() < deadline,
                        "[{} / {mode}] never saw {needle:?}:\n{text}",
                        who(&runner)
                    );
                    std::thread::sleep(Duration::from_millis(50));
                }
            };
            let corral = sb.command(&[
                "/bin/sh",
                "-c",
                "echo ready-$((40+2)); sleep 67; echo late-$((40+2))",
            ]);
            let line: Vec<String> = std::iter::once(corral.get_program())
                .chain(corral.get_args())
                .map(|a| shell_quote(&a.to_string_lossy()))
                .collect();
            tmux(&[
                "new-session",
                "-d",
                "-s",
                &session,
                "-x",
                "200",
                "-y",
                "50",
                "/bin/sh",
            ]);
            tmux(&[
                "send-keys",
                "-t",
                &session,
                &format!(
                    "cd {} && {}",
                    shell_quote(&sb.work.display().to_string()),
                    line.join(" ")
                ),
                "Enter",
            ]);
            wait_for("ready-42");
            tmux(&["send-keys", "-t", &session, "C-z"]);
            tmux(&["send-keys", "-t", &session, "echo back-$((40+2))", "Enter"]);
            wait_for("back-42");
            assert!(stopped_sleeps() > 0, "^Z did not stop the sandboxed job");
            tmux(&["send-keys", "-t", &session, "fg", "Enter"]);
            // The shell hands the terminal to the job before it sends SIGCONT: once the
            // sleep runs again, a ^C reaches the job and not the shell.
            let deadline = Instant::now() + Duration::from_secs(60);
            while stopped_sleeps() > 0 {
                assert!(Instant::now() < deadline, "`fg` never resumed the job");
                std::thread::sleep(Duration::from_millis(50));
            }
            tmux(&["send-keys", "-t", &session, "C-c"]);
            tmux(&["send-keys", "-t", &session, "echo exit-code=$?", "Enter"]);
            wait_for("exit-code=130");
            let text = pane();
            tmux(&["kill-session", "-t", &session]);
            assert!(!text.contains("late-42"), "{text}");
        }
    }
}

#[test]
fn doctor_reports_the_mode_this_host_gets() {
    for runner in runners() {
        let out = runner.command(corral_bin()).arg("doctor").output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "[{}] {text}", who(&runner));
        for line in [
            "seccomp user notification",
            "pidfd_getfd",
            "Landlock",
            "namespaces",
            "CA bundle: ",
            "(default of `corral proxy`)",
            "mode: ",
        ] {
            assert!(text.contains(line), "[{}] {line}: {text}", who(&runner));
        }
        // A CA variable pointing nowhere is a warning with its fix, not a failure.
        let out = runner
            .command(corral_bin())
            .arg("doctor")
            .env("NODE_EXTRA_CA_CERTS", "/nonexistent/corp-ca.pem")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "[{}] {text}", who(&runner));
        assert!(
            text.contains("warn NODE_EXTRA_CA_CERTS=/nonexistent/corp-ca.pem")
                && text.contains("point NODE_EXTRA_CA_CERTS at a readable PEM file"),
            "[{}] {text}",
            who(&runner)
        );
    }
}

#[test]
fn without_a_policy_the_embedded_default_refuses_everything_and_says_what_to_add() {
    let plain = Upstream::http(|_| Reply::ok("should never be reached"));
    for runner in runners() {
        let home = runner.temp_home();
        // The default decision log.
        let log = home.join(".local/state/corral/decisions.jsonl");
        let mut c = runner.command(corral_bin());
        c.current_dir(home.path())
            .env("HOME", home.path())
            .env_remove("XDG_STATE_HOME")
            .env_remove("CORRAL_POLICY");
        c.arg("run");
        c.arg("--resolve")
            .arg(format!("allowed.test:{}:127.0.0.1", plain.port()));
        c.args([
            "--",
            "curl",
            "-sS",
            &format!("http://allowed.test:{}/x", plain.port()),
        ]);
        let out = c.stdin(Stdio::null()).output().expect("run corral");
        let text = stdout(&out);
        let ctx = format!(
            "[{}] {}\n{}",
            who(&runner),
            text,
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("embedded default policy"),
            "{ctx}"
        );
        let body: Value = serde_json::from_str(&text).expect("403 body is JSON");
        assert_eq!(body["error"], "no_endpoint", "{ctx}");
        assert_eq!(body["binary"], "/usr/bin/curl", "{ctx}");
        assert_eq!(body["host"], "allowed.test", "{ctx}");
        assert!(
            body["suggestion"]
                .as_str()
                .unwrap()
                .contains(&format!("{{ host: allowed.test, port: {} }}", plain.port())),
            "{ctx}"
        );
        let logged = std::fs::read_to_string(&log).unwrap_or_default();
        assert!(
            logged.contains("\"host\":\"allowed.test\""),
            "the refusal is in the default log: {ctx}"
        );
    }
    assert!(plain.requests().is_empty());
}

#[test]
fn an_allowed_binary_started_with_a_code_injection_variable_is_refused() {
    let up = upstreams();
    let mut reached = 0;
    for runner in runners() {
        for mode in MODES {
            let sb = Sandbox::new(
                &runner,
                mode,
                &policy(up.https.port(), &["/usr/bin/curl"]),
                &up.resolve(),
            );
            let ca = up.ca.ca_path().display().to_string();
            let url = up.url("allowed.test");
            // The same curl, once plainly and once with LD_PRELOAD set by a shell in the
            // sandbox (the library need not exist: the variable alone is the tell).
            let out = sb.sh(&format!(
                "/usr/bin/curl -sS --cacert {ca} {url} && \
                 LD_PRELOAD=/tmp/not-there.so /usr/bin/curl -sS --cacert {ca} {url}; echo \"second: $?\""
            ));
            let text = stdout(&out);
            assert!(
                text.starts_with("hello from upstream: GET /x\n"),
                "{}",
                sb.context(&out)
            );
            assert!(!text.contains("second: 0"), "{}", sb.context(&out));
            let log = sb.log();
            assert!(
                log.iter().any(|r| r["error"] == "injection_vector"
                    && r["binary"] == "/usr/bin/curl"
                    && r["reason"]
                        .as_str()
                        .is_some_and(|s| s.contains("LD_PRELOAD=/tmp/not-there.so"))),
                "{}",
                sb.context(&out)
            );
            // Only the plain curl reached the upstream.
            reached += 1;
            assert_eq!(up.https.requests().len(), reached, "{}", sb.context(&out));
        }
    }
}
