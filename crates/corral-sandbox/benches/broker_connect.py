#!/usr/bin/python3
"""`connect()` to the proxy address inside `corral run` against the same client unbrokered
(docs/benchmarks.md, "Sandbox", the broker's connect). Goal: p50 ≤ 3× unbrokered.

    python3 crates/corral-sandbox/benches/broker_connect.py /path/to/corral [N] [ROUNDS]

The client is what user code does: a fresh socket and a blocking `connect()` per
connection, each timed alone. Connections are closed in batches of 100, so the proxy
sees them open when it accepts them (one closed at once would be refused as
unattributed and logged, work that competes with the next connect for the CPUs). Unbrokered, the same client runs under
`unshare -Urn` (a new user and network namespace with loopback up) against a listener in a
separate process of that namespace, as the proxy is a separate process in `corral run`.
Rounds alternate between the rows so that a noisy neighbour hits them alike; the
percentiles are over every connect of every round.
"""
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

tmp = tempfile.mkdtemp(prefix="corral-broker-bench-")
policy = os.path.join(tmp, "policy.yaml")
with open(policy, "w") as f:
    f.write("version: 1\nnetwork_policies: {}\n")
log = os.path.join(tmp, "log.jsonl")
python = shutil.which("python3")


def client(host, port, listen):
    return [python, "-c", CLIENT, str(N), str(WARMUP), host, str(port), "listen" if listen else "proxy"]


ROWS = {
    "unbrokered (unshare -Urn, loopback listener in another process)":
        ["unshare", "-Urn", "sh", "-c", 'ip link set lo up && exec "$@"', "sh",
         *client("127.0.0.1", 0, True)],
}
for mode in ("namespaces", "seccomp-only"):
    ROWS[f"brokered, corral run ({mode}), to the proxy"] = [
        CORRAL, "run", "--policy", policy, "--log", log, "--mode", mode, "--",
        *client("127.0.0.1", 3128, False)]

samples = {name: [] for name in ROWS}
for _ in range(ROUNDS):
    for name, argv in ROWS.items():
        out = subprocess.run(argv, check=True, capture_output=True, text=True).stdout
        samples[name] += [int(x) for x in out.split()]


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * p))] / 1000


base_name = next(iter(ROWS))
base50, base90 = pct(samples[base_name], 0.5), pct(samples[base_name], 0.9)
print(f"connect() time, {ROUNDS} rounds x {N} connects per row (after {WARMUP} warm-up), load {os.getloadavg()[0]:.1f}")
print("| | p50 | p90 | p50 vs unbrokered | goal ≤ 3× |")
print("|---|---:|---:|---:|---|")
for name, xs in samples.items():
    p50, p90 = pct(xs, 0.5), pct(xs, 0.9)
    ratio = p50 / base50
    verdict = "–" if name == base_name else ("met" if ratio <= GOAL else "not met")
    print(f"| {name} | {p50:.0f} µs | {p90:.0f} µs | {ratio:.2f}× | {verdict} |")
shutil.rmtree(tmp, ignore_errors=True)
