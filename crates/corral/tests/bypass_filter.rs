//! Attacks from a shell inside `corral run` on what the seccomp filter and the broker
//! refuse outright: sockets the broker cannot reason about, netlink beyond the kernel,
//! terminal input injection; and what the sandbox sees of the host's network (its own
//! sysfs). Both isolation modes, the current and the ordinary user.

mod bypass_support;

use bypass_support::{count, HostTargets, PY};
use corral_testsupport::sandbox::{policy, runners, stdout, Sandbox, MODES};

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
