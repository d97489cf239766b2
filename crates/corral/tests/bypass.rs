//! Attacks from a shell inside `corral run`: borrowing another binary's attribution,
//! racing the broker between its check and the kernel's action, sockets the broker cannot
//! reason about, terminal input injection, the host's network interfaces, and exec races.
//!
//! Every scenario runs as the current user and — when the tests run as root — as the
//! ordinary test user, in both isolation modes. Host-side targets are real listeners on
//! loopback; each test asserts that nothing reached them and that the refusal was logged.
//! Races run two threads for a bounded number of tries (and seconds), and assert that both
//! sides of the swap were seen by the broker, so the window was really exercised.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::os::unix::net::UnixListener;
use std::time::Duration;

use corral_testsupport::sandbox::{denials, policy, runners, stdout, upstreams, Sandbox, MODES};
use serde_json::Value;

const PY: &str = "/usr/bin/python3";

/// Listeners on the host that no sandboxed process may reach: TCP, UDP, and a unix socket
/// (owned by whoever runs the tests: root in CI) that anyone could connect to.
struct HostTargets {
    tcp: TcpListener,
    udp: UdpSocket,
    unix: UnixListener,
    unix_path: String,
    _dir: tempfile::TempDir,
}

impl HostTargets {
    fn new() -> HostTargets {
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
    fn reached(&self) -> Vec<&'static str> {
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

fn count(log: &[Value], error: &str) -> usize {
    denials(log).iter().filter(|r| r["error"] == error).count()
}

/// The counters a race script prints: `label name=value …`.
fn counters(text: &str, label: &str) -> std::collections::HashMap<String, u64> {
    text.lines()
        .find(|l| l.starts_with(&format!("{label} ")))
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.parse().unwrap_or(0)))
        .collect()
}

/// Python helpers: `race(label, fds, addr, call)` keeps descriptor 100 switching between
/// the sockets `fds` in one thread while the main thread makes `call` on it (with the
/// ctypes buffer `addr`) for up to 20000 tries or 5 seconds (fewer once two outcomes were
/// seen 50 times each), then prints the outcomes by errno name and how many swaps happened.
const RACE: &str = r#"
import ctypes, errno, os, random, socket, struct, threading, time
libc = ctypes.CDLL(None, use_errno=True)
N = 100
def sun(path):
    return struct.pack('H', socket.AF_UNIX) + path
def sin(host, port):
    return struct.pack('H', socket.AF_INET) + struct.pack('>H', port) + socket.inet_aton(host) + bytes(8)
def race(label, fds, addr, call, flip=None):
    os.dup2(fds[0], N)
    state = {'stop': False, 'swaps': 0}
    def swapper():
        while not state['stop']:
            # Random, not alternating: a regular rhythm can line up with the calls.
            i = random.getrandbits(8)
            if flip is None:
                os.dup2(fds[i % len(fds)], N)
            else:
                flip(i)
            state['swaps'] += 1
    t = threading.Thread(target=swapper)
    t.start()
    out = {}
    deadline = time.time() + 5
    for _ in range(20000):
        if time.time() > deadline or (len(out) >= 2 and min(out.values()) >= 50):
            break
        # Jitter, so the calls cannot fall into step with the swaps.
        for _ in range(random.getrandbits(6)):
            pass
        r = call(N, addr)
        name = 'OK' if r >= 0 else errno.errorcode.get(ctypes.get_errno(), '?')
        out[name] = out.get(name, 0) + 1
    state['stop'] = True
    t.join()
    print(label, ' '.join('%s=%d' % kv for kv in sorted(out.items())), 'swaps=%d' % state['swaps'], flush=True)
def connect(fd, addr):
    return libc.connect(fd, addr, len(addr.raw))
"#;

#[test]
fn attribution_cannot_be_claimed_from_another_address_or_from_outside() {
    let up = upstreams();
    let ca = up.ca.ca_path().display().to_string();
    let url = up.url("allowed.test");
    let target = format!("allowed.test:{}", up.https.port());
    for runner in runners() {
        for mode in MODES {
            let sb = Sandbox::new(
                &runner,
                mode,
                &policy(up.https.port(), &["/usr/bin/curl"]),
                &up.resolve(),
            );
            let base = 41000 + (std::process::id() % 2000) as u16 * 8;
            // curl, allowed, connects from 127.0.0.1:P over and over; python, not allowed,
            // connects from 127.0.0.5:P (same ports) and asks for the same host.
            let claim = format!(
                "import socket, time\n\
                 used, ok, claimed = set(), 0, 0\n\
                 deadline = time.time() + 5\n\
                 while time.time() < deadline and ok < 300:\n\
                 \x20   for port in range({base}, {base} + 40):\n\
                 \x20       s = socket.socket()\n\
                 \x20       s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
                 \x20       try:\n\
                 \x20           s.bind(('127.0.0.5', port)); s.connect(('127.0.0.1', 3128))\n\
                 \x20           s.sendall(b'CONNECT {target} HTTP/1.1\\r\\nHost: {target}\\r\\n\\r\\n')\n\
                 \x20           line = s.recv(100).split(b'\\r\\n')[0]\n\
                 \x20           ok += 1; used.add(port)\n\
                 \x20           if b' 200' in line: claimed += 1\n\
                 \x20       except OSError:\n\
                 \x20           pass\n\
                 \x20       s.close()\n\
                 print('claim tried=%d claimed=%d' % (ok, claimed))\n\
                 print('ports', ' '.join(map(str, sorted(used))))\n"
            );
            let script = format!(
                "( i=0; while [ $i -lt 60 ]; do curl -s -o /dev/null --cacert {ca} --interface 127.0.0.1 --local-port {base}-{} {url}; i=$((i+1)); done ) &\n\
                 {PY} -c \"$CLAIM\"\nwait\n",
                base + 39
            );
            let mut cmd = sb.command(&["/bin/sh", "-c", &script]);
            cmd.env("CLAIM", &claim);
            let out = cmd.output().unwrap();
            let text = stdout(&out);
            let c = counters(&text, "claim");
            assert_eq!(c.get("claimed"), Some(&0), "{}", sb.context(&out));
            assert!(c["tried"] > 0, "{}", sb.context(&out));
            let log = sb.log();
            assert!(
                !log.iter().any(|r| r["decision"] == "allow"
                    && r["binary"]
                        .as_str()
                        .unwrap_or("")
                        .starts_with("/usr/bin/python3")),
                "{}",
                sb.context(&out)
            );
            assert!(
                denials(&log)
                    .iter()
                    .any(|r| r["error"] == "binary_not_allowed"
                        && r["binary"]
                            .as_str()
                            .unwrap_or("")
                            .starts_with("/usr/bin/python3")),
                "python's refusals are logged under python: {}",
                sb.context(&out)
            );
            // The window: curl's ports (in the log's peer field) were also python's.
            let curl_ports: std::collections::HashSet<String> = log
                .iter()
                .filter(|r| r["decision"] == "allow")
                .filter_map(|r| {
                    r["peer"]
                        .as_str()?
                        .rsplit_once(':')
                        .map(|(_, p)| p.to_string())
                })
                .collect();
            let python_ports = text.lines().find(|l| l.starts_with("ports")).unwrap_or("");
            assert!(
                python_ports
                    .split_whitespace()
                    .skip(1)
                    .any(|p| curl_ports.contains(p)),
                "python never used one of curl's ports: {}",
                sb.context(&out)
            );
        }
    }
}

/// In seccomp-only mode the proxy listens on the host's loopback: a host process that finds
/// its port gets nothing, and is logged.
#[test]
fn a_host_process_connecting_to_the_proxy_is_refused_and_logged() {
    let up = upstreams();
    let target = format!("allowed.test:{}", up.https.port());
    for runner in runners() {
        let sb = Sandbox::new(
            &runner,
            "seccomp-only",
            &policy(up.https.port(), &["/usr/bin/curl", PY]),
            &up.resolve(),
        );
        let before = listening_ports();
        let child = sb.command(&["/bin/sleep", "4"]).spawn().unwrap();
        let mut candidates = Vec::new();
        for _ in 0..200 {
            std::thread::sleep(Duration::from_millis(10));
            candidates = listening_ports()
                .into_iter()
                .filter(|p| !before.contains(p))
                .collect();
            if !candidates.is_empty() {
                break;
            }
        }
        let mut answered = 0;
        for port in &candidates {
            let Ok(mut s) = TcpStream::connect(("127.0.0.1", *port)) else {
                continue;
            };
            s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
            let _ = s.write_all(
                format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n").as_bytes(),
            );
            let mut reply = String::new();
            let _ = s.read_to_string(&mut reply);
            assert!(!reply.contains(" 200"), "served a host process: {reply}");
            if reply.starts_with("HTTP/1.1 403") {
                answered += 1;
            }
        }
        child.wait_with_output().unwrap();
        assert!(
            answered >= 1,
            "no proxy listener found among {candidates:?}"
        );
        let log = sb.log();
        assert!(
            count(&log, "unattributed") >= 1,
            "{}",
            std::fs::read_to_string(&sb.log).unwrap_or_default()
        );
    }
}

/// TCP ports listening on 127.0.0.1 (from /proc/net/tcp).
fn listening_ports() -> Vec<u16> {
    std::fs::read_to_string("/proc/net/tcp")
        .unwrap_or_default()
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let (ip, port) = f.get(1)?.split_once(':')?;
            (ip == "0100007F" && f.get(3) == Some(&"0A"))
                .then(|| u16::from_str_radix(port, 16).ok())?
        })
        .collect()
}

#[test]
fn swapping_the_descriptor_or_rewriting_the_address_mid_call_changes_nothing() {
    let host = HostTargets::new();
    let tcp = host.tcp.local_addr().unwrap().port();
    let udp = host.udp.local_addr().unwrap().port();
    let path = &host.unix_path;
    for runner in runners() {
        for mode in MODES {
            let sb = Sandbox::new(&runner, mode, &policy(1, &[PY]), &[]);
            let script = format!(
                "{RACE}\
                 nl = lambda: socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0).detach()\n\
                 # 1. netlink at check time, a unix socket at connect time, to a host socket.\n\
                 race('netlink-unix', [nl(), socket.socket(socket.AF_UNIX).detach()],\n\
                 \x20    ctypes.create_string_buffer(sun({path:?}.encode())), connect)\n\
                 # 2. netlink, then a TCP socket, to a host TCP port.\n\
                 race('netlink-tcp', [nl(), socket.socket().detach()],\n\
                 \x20    ctypes.create_string_buffer(sin('127.0.0.1', {tcp})), connect)\n\
                 # 3. an abstract name at check time, a host path at connect time.\n\
                 u = socket.socket(socket.AF_UNIX).detach()\n\
                 host = sun({path:?}.encode()).ljust(60, b'\\0')\n\
                 abstract = sun(b'\\0corral-bypass').ljust(60, b'x')\n\
                 buf = ctypes.create_string_buffer(abstract, 60)\n\
                 race('abstract-path', [u], buf, connect,\n\
                 \x20    flip=lambda i: ctypes.memmove(buf, host if i % 2 else abstract, 60))\n\
                 # 4. sendto on TCP at check time, UDP at send time, to a host UDP port.\n\
                 dst = ctypes.create_string_buffer(sin('127.0.0.1', {udp}))\n\
                 race('tcp-udp', [socket.socket().detach(), socket.socket(socket.AF_INET, socket.SOCK_DGRAM).detach()],\n\
                 \x20    dst, lambda fd, a: libc.sendto(fd, b'leak', 4, 0, a, 16))\n\
                 # 5. sendmsg on unix at check time, UDP at send time.\n\
                 def sendmsg(fd, a):\n\
                 \x20   iov = (ctypes.c_char * 4).from_buffer_copy(b'leak')\n\
                 \x20   vec = struct.pack('PN', ctypes.addressof(iov), 4)\n\
                 \x20   vb = ctypes.create_string_buffer(vec)\n\
                 \x20   hdr = ctypes.create_string_buffer(struct.pack('PI4xPNPNi4x', ctypes.addressof(a), 16, ctypes.addressof(vb), 1, 0, 0, 0))\n\
                 \x20   return libc.sendmsg(fd, hdr, 0)\n\
                 race('unix-udp', [socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM).detach(), socket.socket(socket.AF_INET, socket.SOCK_DGRAM).detach()],\n\
                 \x20    dst, sendmsg)\n\
                 # 6. UDP connect, then write.\n\
                 d = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
                 try:\n    d.connect(('127.0.0.1', {udp})); print('udp-connect OK')\n\
                 except OSError as e:\n    print('udp-connect', errno.errorcode[e.errno])\n\
                 try:\n    d.send(b'leak'); print('udp-write OK')\n\
                 except OSError as e:\n    print('udp-write', errno.errorcode[e.errno])\n"
            );
            let out = sb.run(&[PY, "-c", &script]);
            let text = stdout(&out);
            let ctx = || sb.context(&out);
            for label in [
                "netlink-unix",
                "netlink-tcp",
                "abstract-path",
                "tcp-udp",
                "unix-udp",
            ] {
                let c = counters(&text, label);
                assert!(
                    c.get("swaps").copied().unwrap_or(0) > 0,
                    "{label}: {}",
                    ctx()
                );
                assert_eq!(c.get("OK").copied().unwrap_or(0), 0, "{label}: {}", ctx());
            }
            // Both sides of each swap reached the broker: the window was exercised.
            let nu = counters(&text, "netlink-unix");
            assert!(
                nu.get("EINVAL") > Some(&0) && nu.get("EACCES") > Some(&0),
                "{}",
                ctx()
            );
            let nt = counters(&text, "netlink-tcp");
            assert!(
                nt.get("EINVAL") > Some(&0) && nt.get("ECONNREFUSED") > Some(&0),
                "{}",
                ctx()
            );
            let tu = counters(&text, "tcp-udp");
            assert!(
                tu.get("EPIPE") > Some(&0) && tu.get("EACCES") > Some(&0),
                "{}",
                ctx()
            );
            let uu = counters(&text, "unix-udp");
            assert!(uu.get("EACCES") > Some(&0), "{}", ctx());
            assert!(text.contains("udp-connect EACCES"), "{}", ctx());
            assert!(!text.contains("udp-write OK"), "{}", ctx());
            let log = sb.log();
            let unix_refusals: Vec<&str> = denials(&log)
                .iter()
                .filter(|r| r["error"] == "unix_socket")
                .filter_map(|r| r["host"].as_str())
                .collect();
            assert!(
                unix_refusals.iter().any(|h| h.contains("host.sock")),
                "{}",
                ctx()
            );
            let ap = counters(&text, "abstract-path");
            if mode == "namespaces" {
                // The sandbox's own abstract namespace: nobody listens there.
                assert!(
                    ap.get("ECONNREFUSED") > Some(&0) && ap.get("EACCES") > Some(&0),
                    "{}",
                    ctx()
                );
            } else {
                assert!(
                    unix_refusals.iter().any(|h| h.starts_with("unix:@")),
                    "{}",
                    ctx()
                );
            }
            assert!(count(&log, "direct_connect") > 0, "{}", ctx());
            assert!(count(&log, "datagram") > 0, "{}", ctx());
            assert_eq!(host.reached(), Vec::<&str>::new(), "{}", ctx());
        }
    }
}

#[test]
fn sockets_the_broker_cannot_reason_about_are_refused_and_logged() {
    let host = HostTargets::new();
    let tcp = host.tcp.local_addr().unwrap().port();
    for runner in runners() {
        for mode in MODES {
            let sb = Sandbox::new(&runner, mode, &policy(1, &[PY]), &[]);
            let script = format!(
                "import socket, errno\n\
                 tries = [('mptcp', 2, 1, 262), ('mptcp6', 10, 1, 262), ('sctp', 2, 1, 132),\n\
                 \x20   ('sctp-seq', 2, 5, 132), ('udplite', 2, 2, 136), ('icmp', 2, 2, 1),\n\
                 \x20   ('raw', 2, 3, 6), ('packet', 17, 3, 0), ('vsock', 40, 1, 0),\n\
                 \x20   ('xdp', 44, 3, 0), ('tipc', 30, 5, 0), ('alg', 38, 5, 0),\n\
                 \x20   ('can', 29, 3, 1), ('bluetooth', 31, 1, 0), ('key', 15, 3, 2),\n\
                 \x20   ('rds', 21, 5, 0), ('mptcp-nonblock', 2, 1 | 2048, 262)]\n\
                 for name, f, t, p in tries:\n\
                 \x20   try:\n\
                 \x20       s = socket.socket(f, t, p); print(name, 'CREATED')\n\
                 \x20       s.connect(('127.0.0.1', {tcp})); print(name, 'CONNECTED')\n\
                 \x20   except OSError as e:\n\
                 \x20       print(name, errno.errorcode.get(e.errno, e.errno))\n\
                 try:\n    socket.socketpair(30, 5, 0); print('tipc-pair CREATED')\n\
                 except OSError as e:\n    print('tipc-pair', errno.errorcode[e.errno])\n\
                 s = socket.socket(); s.connect(('127.0.0.1', 3128)); print('tcp OK')\n"
            );
            let out = sb.run(&[PY, "-c", &script]);
            let text = stdout(&out);
            assert!(!text.contains("CREATED"), "{}", sb.context(&out));
            assert!(
                text.contains("mptcp EPROTONOSUPPORT"),
                "{}",
                sb.context(&out)
            );
            assert!(text.contains("vsock EAFNOSUPPORT"), "{}", sb.context(&out));
            assert!(
                text.contains("tipc-pair EAFNOSUPPORT"),
                "{}",
                sb.context(&out)
            );
            assert!(
                text.contains("tcp OK"),
                "plain TCP still works: {}",
                sb.context(&out)
            );
            assert!(
                count(&sb.log(), "unsupported_socket") >= 18,
                "{}",
                sb.context(&out)
            );
            assert_eq!(host.reached(), Vec::<&str>::new());
        }
    }
}

#[test]
fn terminal_input_cannot_be_injected() {
    for runner in runners() {
        for mode in MODES {
            let sb = Sandbox::new(&runner, mode, &policy(1, &[PY]), &[]);
            // A session whose controlling terminal is a fresh pty: TIOCSTI there would
            // succeed with legacy_tiocsti=1. The request's high bits must not matter.
            let script = "import ctypes, errno, os, select\n\
                 libc = ctypes.CDLL(None, use_errno=True)\n\
                 master, slave = os.openpty()\n\
                 name = os.ttyname(slave)\n\
                 r, w = os.pipe()\n\
                 if os.fork() == 0:\n\
                 \x20   os.setsid()\n\
                 \x20   tty = os.open(name, os.O_RDWR)\n\
                 \x20   out = []\n\
                 \x20   for label, req in [('sti', 0x5412), ('sti-high', 0x100005412), ('linux', 0x541c)]:\n\
                 \x20       c = ctypes.c_char(b'x')\n\
                 \x20       rc = libc.ioctl(tty, ctypes.c_ulong(req), ctypes.byref(c))\n\
                 \x20       out.append('%s %s' % (label, 'OK' if rc == 0 else errno.errorcode[ctypes.get_errno()]))\n\
                 \x20   ready = select.select([tty], [], [], 0.2)[0]\n\
                 \x20   out.append('pending %d' % len(ready))\n\
                 \x20   os.write(w, '\\n'.join(out).encode()); os._exit(0)\n\
                 os.close(w); os.wait()\n\
                 print(os.read(r, 1000).decode())\n";
            let out = sb.run(&[PY, "-c", script]);
            let text = stdout(&out);
            for expected in ["sti EPERM", "sti-high EPERM", "linux EPERM", "pending 0"] {
                assert!(text.contains(expected), "{expected}: {}", sb.context(&out));
            }
            assert!(
                count(&sb.log(), "terminal_injection") >= 3,
                "{}",
                sb.context(&out)
            );
        }
    }
}

#[test]
fn the_sandbox_sees_only_its_own_network_interfaces() {
    let host: Vec<String> = std::fs::read_dir("/sys/class/net")
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        host.iter().any(|i| i != "lo"),
        "the host has only lo: {host:?}"
    );
    for runner in runners() {
        let sb = Sandbox::new(&runner, "namespaces", &policy(1, &[PY]), &[]);
        let out = sb.sh("ls /sys/class/net; test -d /sys/fs/cgroup && echo cgroup-dir");
        let text = stdout(&out);
        let ifaces: Vec<&str> = text.lines().filter(|l| *l != "cgroup-dir").collect();
        assert_eq!(ifaces, vec!["lo"], "{}", sb.context(&out));
        assert!(text.contains("cgroup-dir"), "{}", sb.context(&out));
    }
}

#[test]
fn an_exec_race_is_logged_under_the_executable_that_connected() {
    let up = upstreams();
    let url = up.url("allowed.test");
    let ca = up.ca.ca_path().display().to_string();
    for runner in runners() {
        for mode in MODES {
            let sb = Sandbox::new(
                &runner,
                mode,
                &policy(up.https.port(), &["/usr/bin/curl"]),
                &up.resolve(),
            );
            // Up to 100 rounds (5 seconds): the main thread connects to the proxy in a loop
            // while another thread executes
            // curl: the exec takes over the main thread's pid, so the broker, resolving the
            // main thread's connect, sees the executable change under it.
            let race = format!(
                "import os, socket, threading, time\n\
                 def exec_curl():\n\
                 \x20   time.sleep(0.05)\n\
                 \x20   os.execv('/usr/bin/curl', ['curl', '-s', '-o', '/dev/null', '--cacert', {ca:?}, {url:?}])\n\
                 threading.Thread(target=exec_curl).start()\n\
                 while True:\n\
                 \x20   try:\n\
                 \x20       s = socket.socket(); s.connect(('127.0.0.1', 3128)); s.close()\n\
                 \x20   except OSError:\n\
                 \x20       pass\n"
            );
            let mut cmd = sb.command(&["/bin/sh", "-c", "i=0; end=$(($(date +%s) + 5)); while [ $i -lt 100 ] && [ $(date +%s) -lt $end ]; do /usr/bin/python3 -c \"$RACE\"; i=$((i+1)); done; echo done $i"]);
            cmd.env("RACE", &race);
            let out = cmd.output().unwrap();
            assert!(stdout(&out).contains("done"), "{}", sb.context(&out));
            let log = sb.log();
            // No file changed on disk: a `binary_changed` here would be the race misread.
            assert_eq!(count(&log, "binary_changed"), 0, "{}", sb.context(&out));
            for r in denials(&log) {
                if r["error"] == "binary_changed" {
                    let binary = r["binary"].as_str().unwrap_or("");
                    let reason = r["reason"].as_str().unwrap_or("");
                    assert!(reason.starts_with(binary), "{r}");
                }
            }
            // curl's own fetches went through, under curl.
            assert!(
                log.iter()
                    .any(|r| r["decision"] == "allow" && r["binary"] == "/usr/bin/curl"),
                "{}",
                sb.context(&out)
            );
            assert!(
                !log.iter().any(|r| r["decision"] == "allow"
                    && r["binary"].as_str().unwrap_or("").contains("python")),
                "{}",
                sb.context(&out)
            );
        }
    }
}

#[test]
fn a_listener_the_network_could_reach_is_refused_in_seccomp_only_mode() {
    for runner in runners() {
        for mode in MODES {
            let sb = Sandbox::new(&runner, mode, &policy(1, &[PY]), &[]);
            let script = "import socket, errno\n\
                 def attempt(what, family, addr):\n\
                 \x20   s = socket.socket(family)\n\
                 \x20   try:\n\
                 \x20       if addr is not None: s.bind(addr)\n\
                 \x20       s.listen(); print(what, 'OK')\n\
                 \x20   except OSError as e:\n\
                 \x20       print(what, errno.errorcode[e.errno])\n\
                 attempt('public', socket.AF_INET, ('0.0.0.0', 0))\n\
                 attempt('public6', socket.AF_INET6, ('::', 0))\n\
                 attempt('unbound', socket.AF_INET, None)\n\
                 attempt('loopback', socket.AF_INET, ('127.0.0.1', 0))\n\
                 attempt('loopback6', socket.AF_INET6, ('::1', 0))\n\
                 attempt('unix', socket.AF_UNIX, 'own.sock')\n";
            let out = sb.run(&[PY, "-c", script]);
            let text = stdout(&out);
            let refused = if mode == "seccomp-only" {
                "EACCES"
            } else {
                "OK"
            };
            for what in ["public", "public6", "unbound"] {
                assert!(
                    text.contains(&format!("{what} {refused}\n")),
                    "{what}: {}",
                    sb.context(&out)
                );
            }
            for what in ["loopback", "loopback6", "unix"] {
                assert!(
                    text.contains(&format!("{what} OK\n")),
                    "{what}: {}",
                    sb.context(&out)
                );
            }
            let logged = count(&sb.log(), "inbound_listener");
            assert_eq!(
                logged,
                if mode == "seccomp-only" { 3 } else { 0 },
                "{}",
                sb.context(&out)
            );
        }
    }
}

#[test]
fn netlink_reaches_the_kernel_only() {
    for runner in runners() {
        for mode in MODES {
            let sb = Sandbox::new(&runner, mode, &policy(1, &[PY]), &[]);
            // RTM_GETLINK dump: the kernel answers through the supervisor's send; other
            // ports and multicast groups are refused.
            let script = "import socket, struct, errno\n\
                 def attempt(what, f):\n\
                 \x20   try:\n\
                 \x20       r = f(); print(what, 'OK', r)\n\
                 \x20   except OSError as e:\n\
                 \x20       print(what, errno.errorcode[e.errno])\n\
                 req = struct.pack('=LHHLL', 32, 18, 0x301, 1, 0) + struct.pack('=BxHiII', 0, 0, 0, 0, 0)\n\
                 s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0)\n\
                 attempt('kernel', lambda: (s.sendto(req, (0, 0)), len(s.recv(65536)) > 16))\n\
                 attempt('connect-kernel', lambda: s.connect((0, 0)))\n\
                 attempt('port', lambda: s.sendto(req, (4242, 0)))\n\
                 attempt('group', lambda: s.sendto(req, (0, 1)))\n\
                 attempt('connect-group', lambda: s.connect((0, 1)))\n\
                 attempt('getaddrinfo', lambda: len(socket.getaddrinfo('localhost', 80)) > 0)\n";
            let out = sb.run(&[PY, "-c", script]);
            let text = stdout(&out);
            for expected in [
                "kernel OK (32, True)",
                "connect-kernel OK",
                "port EPERM",
                "group EPERM",
                "connect-group EPERM",
                "getaddrinfo OK True",
            ] {
                assert!(text.contains(expected), "{expected}: {}", sb.context(&out));
            }
            assert!(
                count(&sb.log(), "netlink_destination") >= 3,
                "{}",
                sb.context(&out)
            );
        }
    }
}
