#!/usr/bin/python3
"""`connect()` to the proxy address inside `corral run` against the same client unbrokered
(docs/benchmarks.md, "Sandbox", the broker's connect). Goal: p50 ≤ 3× unbrokered.

    python3 crates/corral-sandbox/benches/broker_connect.py /path/to/corral [N] [ROUNDS]

Two patterns: one process making N connects (the broker knows it after the first), and
the first connect of each of N/10 fresh processes (forked children of a C client: the
broker resolves each in full, ancestors included).

The client is what user code does: a fresh socket and a blocking `connect()` per
connection, each timed alone. Connections are closed in batches of 100, so the proxy
sees them open when it accepts them (one closed at once would be refused as
unattributed and logged, work that competes with the next connect for the CPUs). Unbrokered, the same client runs under
`unshare -Urn` (a new user and network namespace with loopback up) against a listener in a
separate process of that namespace, as the proxy is a separate process in `corral run`.
Rounds alternate between the rows so that a noisy neighbour hits them alike; the
percentiles are over every connect of every round.
"""
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile

CORRAL = sys.argv[1]
N = int(sys.argv[2]) if len(sys.argv) > 2 else 1000
ROUNDS = int(sys.argv[3]) if len(sys.argv) > 3 else 3
WARMUP = 50
GOAL = 3.0

# Prints one connect time (ns) per line. With "listen", it first starts a listener in a
# child process (accepting and closing) and connects to that instead.
CLIENT = r"""
import os, socket, sys, time
n, warm = int(sys.argv[1]), int(sys.argv[2])
addr = (sys.argv[3], int(sys.argv[4]))
if sys.argv[5] == "listen":
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(4096)
    addr = srv.getsockname()
    acceptor = os.fork()
    if acceptor == 0:
        os.close(1)
        while True:
            c, _ = srv.accept()
            c.close()
    srv.close()
clock = time.perf_counter_ns
out, held = [], []
for i in range(n + warm):
    s = socket.socket()
    t = clock()
    s.connect(addr)
    d = clock() - t
    held.append(s)
    if len(held) == 100:
        for s in held:
            s.close()
        held = []
    if i >= warm:
        out.append(d)
sys.stdout.write("\n".join(map(str, out)) + "\n")
if sys.argv[5] == "listen":
    os.kill(acceptor, 9)
"""

# The first connect of each of n fresh processes, in C: a forked Python child's first
# connect would mostly time copy-on-write faults (every object it touches has its
# reference count written). Prints one connect time (ns) per line.
FRESH = r"""
#include <arpa/inet.h>
#include <signal.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
static long long now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1000000000LL + t.tv_nsec;
}
int main(int argc, char **argv) {
    int n = atoi(argv[1]), warm = atoi(argv[2]);
    pid_t acceptor = 0;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[4]))};
    inet_pton(AF_INET, argv[3], &a.sin_addr);
    if (argv[4][0] == '0') { /* unbrokered: a listener in a child of its own */
        int l = socket(AF_INET, SOCK_STREAM, 0);
        socklen_t len = sizeof a;
        if (bind(l, (struct sockaddr *)&a, sizeof a) || listen(l, 4096) ||
            getsockname(l, (struct sockaddr *)&a, &len)) return 1;
        if ((acceptor = fork()) == 0) { close(1); for (;;) close(accept(l, 0, 0)); }
        close(l);
    }
    for (int i = 0; i < n + warm; i++) {
        int p[2];
        long long d = 0;
        if (pipe(p)) return 1;
        pid_t c = fork();
        if (c == 0) {
            int s = socket(AF_INET, SOCK_STREAM, 0);
            long long t = now();
            t = now();
            if (connect(s, (struct sockaddr *)&a, sizeof a)) _exit(1);
            d = now() - t;
            write(p[1], &d, sizeof d);
            _exit(0);
        }
        close(p[1]);
        if (read(p[0], &d, sizeof d) != sizeof d) return 1;
        close(p[0]);
        waitpid(c, 0, 0);
        if (i >= warm) printf("%lld\n", d);
    }
    if (acceptor > 0) kill(acceptor, SIGKILL);
    return 0;
}
"""

tmp = tempfile.mkdtemp(prefix="corral-broker-bench-")
bin_dir = tempfile.mkdtemp(prefix="corral-broker-bench-", dir="/var/tmp")
fresh_bin = os.path.join(bin_dir, "fresh")
subprocess.run(["cc", "-O2", "-x", "c", "-o", fresh_bin, "-"], input=FRESH, text=True, check=True)
# Pinned: a file the user can write carries no identity without a pin. The grant itself
# is never used (the client only connects).
with open(fresh_bin, "rb") as f:
    pin = hashlib.sha256(f.read()).hexdigest()
policy = os.path.join(tmp, "policy.yaml")
with open(policy, "w") as f:
    f.write("version: 1\nnetwork_policies:\n  bench:\n    endpoints:\n      - host: bench.example\n"
            f"        port: 9\n    binaries:\n      - path: {fresh_bin}\n        sha256: {pin}\n")
log = os.path.join(tmp, "log.jsonl")
# Clients the sandbox's default view trusts (docs/sandbox.md): a system python, and the C
# client built outside the directories the sandbox may write (the working directory, /tmp),
# or the broker refuses their connects as untrusted code.
python = "/usr/bin/python3"


def client(host, port, listen, fresh):
    if fresh:
        return [fresh_bin, str(N // 10), "5", host, str(port)]
    return [python, "-c", CLIENT, str(N), str(WARMUP), host, str(port), "listen" if listen else "proxy"]


UNSHARE = ["unshare", "-Urn", "sh", "-c", 'ip link set lo up && exec "$@"', "sh"]
ROWS = {}
for fresh, what in ((False, "one process, N connects"), (True, "first connect of each of N/10 processes")):
    ROWS[f"{what}: unbrokered (unshare -Urn)"] = [*UNSHARE, *client("127.0.0.1", 0, True, fresh)]
    for mode in ("namespaces", "seccomp-only"):
        ROWS[f"{what}: brokered, corral run ({mode})"] = [
            CORRAL, "run", "--policy", policy, "--log", log, "--mode", mode, "--",
            *client("127.0.0.1", 3128, False, fresh)]

def time_waiting():
    """TCP sockets in TIME-WAIT in this network namespace. In seccomp-only mode the broker
    binds each socket to an ephemeral port of host loopback, and the kernel's search for a
    free one slows down as TIME-WAIT sockets hold them (the bench makes thousands)."""
    with open("/proc/net/tcp") as f:
        return sum(1 for line in f if line.split()[3:4] == ["06"])


time_wait = time_waiting()
samples = {name: [] for name in ROWS}
for _ in range(ROUNDS):
    for name, argv in ROWS.items():
        out = subprocess.run(argv, check=True, capture_output=True, text=True).stdout
        samples[name] += [int(x) for x in out.split()]


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * p))] / 1000


print(f"connect() time, {ROUNDS} rounds, N = {N} (after warm-up), load {os.getloadavg()[0]:.1f}, "
      f"host TCP sockets in TIME-WAIT before: {time_wait} after: {time_waiting()}")
print("| | p50 | p90 | p50 vs unbrokered | goal ≤ 3× |")
print("|---|---:|---:|---:|---|")
base50 = None
for name, xs in samples.items():
    p50, p90 = pct(xs, 0.5), pct(xs, 0.9)
    if "unbrokered" in name:
        base50 = p50
    ratio = p50 / base50
    verdict = "–" if "unbrokered" in name else ("met" if ratio <= GOAL else "not met")
    print(f"| {name} | {p50:.0f} µs | {p90:.0f} µs | {ratio:.2f}× | {verdict} |")
shutil.rmtree(tmp, ignore_errors=True)
shutil.rmtree(bin_dir, ignore_errors=True)
