//! Attacks from a shell inside `corral run` on the broker and the attribution table:
//! borrowing another binary's attribution (from another address, or from outside the
//! sandbox), racing the broker between its check and the kernel's action, exec races, and
//! listeners the network could reach. (Sockets, netlink, the terminal and sysfs:
//! `bypass_filter.rs`.)
//!
//! Every scenario runs as the current user and — when the tests run as root — as the
//! ordinary test user, in both isolation modes. Host-side targets are real listeners on
//! loopback; each test asserts that nothing reached them and that the refusal was logged.
//! Races run two threads for a bounded number of tries (and seconds), and assert that both
//! sides of the swap were seen by the broker, so the window was really exercised.

mod bypass_support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use bypass_support::{count, counters, HostTargets, PY};
use corral_testsupport::sandbox::{denials, policy, runners, stdout, upstreams, Sandbox, MODES};

/// Python helpers: `race(label, fds, addr, call)` keeps descriptor 100 switching between
/// the sockets `fds` in one thread while the main thread makes `call` on it (with the
/// ctypes buffer `addr`) for up to 10 seconds (fewer once two outcomes were
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
    # Bounded by time, not by a count that a loaded machine (the swapper starved of the
    # interpreter lock) could use up before both sides were seen.
    deadline = time.time() + 10
    for _ in range(1000000):
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
            // connects from 127.0.0.5:P (same ports) and asks for the same host, for as
            // long as curl runs (a fixed count could end before a slow curl starts).
            let claim = format!(
                "import os, socket, time\n\
                 used, ok, claimed = set(), 0, 0\n\
                 deadline = time.time() + 30\n\
                 while time.time() < deadline and not os.path.exists(os.environ['CURL_DONE']):\n\
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
                "CURL_DONE=$(mktemp -u /tmp/corral-curl-done.XXXXXX); export CURL_DONE\n\
                 ( i=0; while [ $i -lt 60 ]; do curl -s -o /dev/null --cacert {ca} --interface 127.0.0.1 --local-port {base}-{} {url}; i=$((i+1)); done; touch \"$CURL_DONE\" ) &\n\
                 {PY} -c \"$CLAIM\"\nwait\nrm -f \"$CURL_DONE\"\n",
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
        let child = sb.command(&["/bin/sleep", "4"]).spawn().unwrap();
        let mut candidates = Vec::new();
        for _ in 0..200 {
            std::thread::sleep(Duration::from_millis(10));
            candidates = listening_ports_below(child.id());
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

/// TCP ports on 127.0.0.1 that processes below `root` (corral, started by the test)
/// listen on: their socket inodes, looked up in /proc/net/tcp.
fn listening_ports_below(root: u32) -> Vec<u16> {
    let parent = |pid: u32| -> Option<u32> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        stat.rsplit_once(") ")?
            .1
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    };
    let pids: Vec<u32> = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter(|&pid| {
            let mut cur = pid;
            for _ in 0..16 {
                if cur == root {
                    return true;
                }
                match parent(cur) {
                    Some(p) if p > 1 => cur = p,
                    _ => return false,
                }
            }
            false
        })
        .collect();
    let inodes: Vec<String> = pids
        .iter()
        .filter_map(|pid| std::fs::read_dir(format!("/proc/{pid}/fd")).ok())
        .flat_map(|fds| fds.flatten())
        .filter_map(|fd| std::fs::read_link(fd.path()).ok())
        .filter_map(|l| {
            let l = l.to_string_lossy().into_owned();
            Some(l.strip_prefix("socket:[")?.strip_suffix(']')?.to_string())
        })
        .collect();
    std::fs::read_to_string("/proc/net/tcp")
        .unwrap_or_default()
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let (ip, port) = f.get(1)?.split_once(':')?;
            let listening = ip == "0100007F" && f.get(3) == Some(&"0A");
            (listening && inodes.iter().any(|i| Some(&i.as_str()) == f.get(9)))
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
