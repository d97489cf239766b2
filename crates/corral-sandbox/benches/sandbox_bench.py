#!/usr/bin/python3
"""corral run benchmarks (docs/benchmarks.md, "Sandbox"). Ratios against baselines measured
in the same run; medians of N runs.

    python3 crates/corral-sandbox/benches/sandbox_bench.py /path/to/corral [N] [SECTIONS]

SECTIONS: a comma-separated subset of startup,connect,attribution,unix (default: all).

1. start-up: `corral run -- /bin/true` (both modes) vs `bwrap --unshare-all` and `unshare -Urn`;
2. connection set-up to the proxy through the connect broker with 1 vs 1,000 idle processes
   in the sandbox, next to an unbrokered loopback connect outside the sandbox;
3. time to the proxy's answer (connect + CONNECT request + 403), where attribution happens:
   the broker's table (corral run) vs the kernel look-up of the standalone corral proxy,
   each with 1 vs 1,000 idle processes (and, for corral proxy, a new client process per
   connection).
"""
import os
import statistics
import subprocess
import sys
import tempfile
import time

CORRAL = sys.argv[1]
N = int(sys.argv[2]) if len(sys.argv) > 2 else 40
SECTIONS = set((sys.argv[3] if len(sys.argv) > 3 else "startup,connect,attribution,unix").split(","))

tmp = tempfile.mkdtemp(prefix="corral-bench-")
policy = os.path.join(tmp, "policy.yaml")
with open(policy, "w") as f:
    f.write("version: 1\nnetwork_policies: {}\n")
log = os.path.join(tmp, "log.jsonl")


def corral(mode, *argv):
    return [CORRAL, "run", "--policy", policy, "--log", log, "--mode", mode, "--", *argv]


def median_ms(argv, n=N):
    times = []
    for _ in range(n):
        t = time.perf_counter()
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)


def interleaved_ms(commands, n=N):
    """Median wall time of each command, the commands taken in turn so load hits all alike."""
    times = {name: [] for name, _ in commands}
    for _ in range(n):
        for name, argv in commands:
            t = time.perf_counter()
            subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            times[name].append((time.perf_counter() - t) * 1000)
    return {name: statistics.median(v) for name, v in times.items()}


if "startup" in SECTIONS:
    print(f"## start-up (median of {N} runs each, interleaved)")
    startup = interleaved_ms([
        ("unshare -Urn true", ["unshare", "-Urn", "/bin/true"]),
        ("bwrap --unshare-all --bind / / true", ["bwrap", "--unshare-all", "--bind", "/", "/", "/bin/true"]),
        ("corral run -- true (namespaces)", corral("namespaces", "/bin/true")),
        ("corral run -- true (seccomp-only)", corral("seccomp-only", "/bin/true")),
    ])
    base = startup["unshare -Urn true"]
    bwrap = startup["bwrap --unshare-all --bind / / true"]
    print("| command | median | vs unshare -Urn | vs bwrap (goal <= 2x) |")
    print("|---|---|---|---|")
    for name, ms in startup.items():
        print(f"| {name} | {ms:.1f} ms | {ms / base:.2f}x | {ms / bwrap:.2f}x |")

CONNECTS = 500
client = f"""
import socket, statistics, subprocess, sys, time
idle = [subprocess.Popen(['/bin/sleep', '600']) for _ in range(int(sys.argv[1]))]
addr = (sys.argv[2], int(sys.argv[3]))
ask = len(sys.argv) > 4
ts = []
for _ in range({CONNECTS}):
    s = socket.socket()
    t = time.perf_counter()
    s.connect(addr)
    if ask:
        s.sendall(b'CONNECT denied.test:443 HTTP/1.1\\r\\nHost: denied.test:443\\r\\n\\r\\n')
        s.recv(4096)
    ts.append(time.perf_counter() - t)
    s.close()
for p in idle:
    p.kill()
print(statistics.median(ts) * 1e6)
"""


def connect_us(argv_prefix, idle, host, port, ask=False):
    out = subprocess.run([*argv_prefix, "/usr/bin/python3", "-c", client, str(idle), host, str(port)] + (["ask"] if ask else []),
                         check=True, capture_output=True, text=True).stdout
    return float(out.strip().splitlines()[-1])


import socket
srv = socket.socket()
srv.bind(("127.0.0.1", 0))
srv.listen(4096)
import threading
def drain():
    while True:
        c, _ = srv.accept()
        c.close()
threading.Thread(target=drain, daemon=True).start()
if "connect" in SECTIONS:
    plain = connect_us([], 1, "127.0.0.1", srv.getsockname()[1])
    print(f"\n## connect set-up (median of {CONNECTS} connects)")
    print(f"| unbrokered loopback connect (outside the sandbox) | {plain:.0f} µs | 1.00x |")
    for mode in ("namespaces", "seccomp-only"):
        one = connect_us(corral(mode), 1, "127.0.0.1", 3128)
        many = connect_us(corral(mode), 1000, "127.0.0.1", 3128)
        print(f"| brokered, {mode}, 1 idle process | {one:.0f} µs | {one / plain:.2f}x |")
        print(f"| brokered, {mode}, 1,000 idle processes | {many:.0f} µs | {many / plain:.2f}x (1,000 vs 1: {many / one:.2f}) |")

if "attribution" in SECTIONS:
    print(f"\n## time to the proxy's 403 (connect + CONNECT + answer; median of {CONNECTS})")
    table1 = connect_us(corral("namespaces"), 1, "127.0.0.1", 3128, ask=True)
    table1000 = connect_us(corral("namespaces"), 1000, "127.0.0.1", 3128, ask=True)
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    pport = probe.getsockname()[1]
    probe.close()
    proxy = subprocess.Popen([CORRAL, "proxy", "--policy", policy, "--listen", f"127.0.0.1:{pport}"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", pport)).close()
            break
        except OSError:
            time.sleep(0.05)
    proc1 = connect_us([], 1, "127.0.0.1", pport, ask=True)
    proc1000 = connect_us([], 1000, "127.0.0.1", pport, ask=True)
    # A new client process for every connection (a CLI run per request): the resolver has
    # no last owner to try, so it searches the socket's uid's processes.
    one_shot = (
        "import socket, sys, time\n"
        "t = time.perf_counter()\n"
        "s = socket.create_connection(('127.0.0.1', int(sys.argv[1])))\n"
        "s.sendall(b'CONNECT denied.test:443 HTTP/1.1\\r\\nHost: denied.test:443\\r\\n\\r\\n')\n"
        "s.recv(4096)\n"
        "print((time.perf_counter() - t) * 1e6)\n"
    )

    def fresh_us(idle, n=60):
        sleepers = [subprocess.Popen(["/bin/sleep", "600"]) for _ in range(idle)]
        ts = [float(subprocess.run(["/usr/bin/python3", "-c", one_shot, str(pport)], check=True,
                                   capture_output=True, text=True).stdout) for _ in range(n)]
        for p in sleepers:
            p.kill()
            p.wait()
        return statistics.median(ts)

    fresh1 = fresh_us(1)
    fresh1000 = fresh_us(1000)
    proxy.kill()
    print(f"| broker table (corral run), 1 idle process | {table1:.0f} µs | 1.00x |")
    print(f"| broker table (corral run), 1,000 idle processes | {table1000:.0f} µs | {table1000 / table1:.2f}x |")
    print(f"| kernel look-up (corral proxy), same client, 1 idle process | {proc1:.0f} µs | {proc1 / table1:.2f}x |")
    print(f"| kernel look-up (corral proxy), same client, 1,000 idle processes | {proc1000:.0f} µs | {proc1000 / table1:.2f}x (1,000 vs 1: {proc1000 / proc1:.2f}) |")
    print(f"| kernel look-up (corral proxy), a new client process each time, 1 idle process | {fresh1:.0f} µs | {fresh1 / table1:.2f}x |")
    print(f"| kernel look-up (corral proxy), a new client process each time, 1,000 idle processes | {fresh1000:.0f} µs | {fresh1000 / table1:.2f}x (1,000 vs 1: {fresh1000 / fresh1:.2f}) |")


# Unix-domain connects to a socket the sandbox itself listens on: the broker asks the kernel
# who listens (sock_diag in the sandbox's namespace, or the supervisor's descendants in
# seccomp-only mode) and connects the checked file itself.
unix_client = r'''
import socket, os, sys, time, statistics
p = '/tmp/corral-bench-%d.sock' % os.getpid()
s = socket.socket(socket.AF_UNIX); s.bind(p); s.listen(512)
ts = []
for i in range(int(sys.argv[1]) + 20):
    t = time.perf_counter()
    c = socket.socket(socket.AF_UNIX); c.connect(p)
    ts.append(time.perf_counter() - t)
    a, _ = s.accept(); a.close(); c.close()
os.unlink(p)
print(statistics.median(ts[20:]) * 1e6)
'''


def unix_us(argv_prefix):
    out = subprocess.run([*argv_prefix, "/usr/bin/python3", "-c", unix_client, str(CONNECTS)],
                         check=True, capture_output=True, text=True)
    return float(out.stdout.strip().splitlines()[-1])


if "unix" in SECTIONS:
    print(f"\n## unix-domain connect to the sandbox's own listener (median of {CONNECTS})")
    plain_unix = unix_us([])
    print(f"| unchecked (outside any sandbox) | {plain_unix:.0f} µs | 1.00x |")
    for mode in ("namespaces", "seccomp-only"):
        us = unix_us(corral(mode))
        print(f"| checked, {mode} | {us:.0f} µs | {us / plain_unix:.2f}x |")
