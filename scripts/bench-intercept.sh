#!/usr/bin/env bash
# Intercepted HTTPS through corral against mitmproxy, in the same run, on loopback:
# one HTTPS upstream (Python, HTTP/1.1 keep-alive), one client (Python http.client through
# a CONNECT tunnel, keep-alive), each proxy terminating TLS with the same CA.
#
#   scripts/bench-intercept.sh            # needs target/release/corral and mitmdump on PATH
#   MITMDUMP=/path/to/mitmdump ROUNDS=500 scripts/bench-intercept.sh
#
# Reports per proxy: the first request on a new tunnel (handshakes, leaf minted or cached),
# then requests on the kept-alive tunnel (p50, p99, requests per second).
set -euo pipefail
cd "$(dirname "$0")/.."
CORRAL=${CORRAL:-target/release/corral}
MITMDUMP=${MITMDUMP:-mitmdump}
ROUNDS=${ROUNDS:-500}
PY=${PYTHON:-python3}
work=$(mktemp -d)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT

# Upstream CA and leaf for bench.test; the proxies' CA.
cd "$work"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
    -subj "/CN=bench upstream CA" -addext basicConstraints=critical,CA:TRUE \
    -keyout up-ca.key -out up-ca.pem 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=bench.test" \
    -keyout leaf.key -out leaf.csr 2>/dev/null
printf 'subjectAltName=DNS:bench.test\nextendedKeyUsage=serverAuth\n' > ext.cnf
openssl x509 -req -in leaf.csr -CA up-ca.pem -CAkey up-ca.key -CAcreateserial -days 2 \
    -extfile ext.cnf -out leaf.pem 2>/dev/null
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
    -subj "/CN=bench proxy CA" -addext basicConstraints=critical,CA:TRUE \
    -addext keyUsage=critical,keyCertSign,cRLSign,digitalSignature \
    -keyout proxy-ca.key -out proxy-ca.pem 2>/dev/null
mkdir mitm && cat proxy-ca.key proxy-ca.pem > mitm/mitmproxy-ca.pem
cd - >/dev/null

free_port() { "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
UP=$(free_port); CP=$(free_port); MP=$(free_port)

"$PY" - "$UP" "$work" <<'PYEOF' &
import http.server, ssl, sys
port, work = int(sys.argv[1]), sys.argv[2]
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    def do_GET(self):
        self.send_response(200); self.send_header("Content-Length", "2"); self.end_headers()
        self.wfile.write(b"ok")
    def log_message(self, *a): pass
srv = http.server.ThreadingHTTPServer(("127.0.0.1", port), H)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(f"{work}/leaf.pem", f"{work}/leaf.key")
srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
srv.serve_forever()
PYEOF
pids+=($!)

cat > "$work/policy.yaml" <<YAML
version: 1
network_policies:
  bench:
    endpoints:
      - host: bench.test
        port: $UP
        protocol: rest
        allowed_ips: [127.0.0.1/32]
        rules:
          - allow: { method: GET, path: "/**" }
    binaries:
      - { path: /usr/bin/true }
YAML
"$CORRAL" proxy --policy "$work/policy.yaml" --listen "127.0.0.1:$CP" \
    --identity-exe /usr/bin/true --resolve "bench.test:$UP:127.0.0.1" \
    --ca-cert "$work/proxy-ca.pem" --ca-key "$work/proxy-ca.key" \
    --upstream-ca "$work/up-ca.pem" --log /dev/null 2>"$work/corral.err" &
pids+=($!)
"$MITMDUMP" -q --listen-host 127.0.0.1 -p "$MP" --set confdir="$work/mitm" \
    --set ssl_verify_upstream_trusted_ca="$work/up-ca.pem" \
    --set connection_strategy=lazy --set flow_detail=0 >"$work/mitm.out" 2>&1 &
pids+=($!)
sleep 3

"$PY" - "$work" "$UP" "$CP" "$MP" "$ROUNDS" <<'PYEOF'
import http.client, socket, ssl, statistics, sys, time
work, up, cp, mp, rounds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
ctx = ssl.create_default_context(cafile=f"{work}/proxy-ca.pem")
direct_ctx = ssl.create_default_context(cafile=f"{work}/up-ca.pem")

class Direct(http.client.HTTPSConnection):
    def connect(self):
        s = socket.create_connection(("127.0.0.1", up))
        self.sock = direct_ctx.wrap_socket(s, server_hostname="bench.test")

class Tunnel(http.client.HTTPSConnection):
    """CONNECT `target`, then TLS naming bench.test (SNI and certificate)."""
    def __init__(self, proxy, target):
        super().__init__("bench.test", up, context=ctx)
        self.proxy, self.target = proxy, target
    def connect(self):
        s = socket.create_connection(("127.0.0.1", self.proxy))
        s.sendall(f"CONNECT {self.target}:{up} HTTP/1.1\r\nHost: {self.target}:{up}\r\n\r\n".encode())
        head = b""
        while b"\r\n\r\n" not in head:
            head += s.recv(1)
        assert b" 200 " in head.split(b"\r\n")[0], head
        self.sock = ctx.wrap_socket(s, server_hostname="bench.test")

def conn(proxy):
    if proxy is None:
        return Direct("bench.test", up, context=direct_ctx)
    # corral decides on the name (and checks SNI against it); mitmproxy has no name
    # override, so it is sent the address and learns the name from SNI.
    return Tunnel(proxy, "bench.test" if proxy == cp else "127.0.0.1")

def get(c):
    c.request("GET", "/x", headers={"Host": f"bench.test:{up}"})
    r = c.getresponse(); r.read()
    assert r.status == 200, r.status

rows = []
for name, proxy in [("direct", None), ("corral", cp), ("mitmproxy", mp)]:
    firsts = []
    for i in range(20):
        c = conn(proxy); t = time.perf_counter(); get(c); firsts.append(time.perf_counter() - t); c.close()
    c = conn(proxy); get(c)
    lat = []
    t0 = time.perf_counter()
    for i in range(rounds):
        t = time.perf_counter(); get(c); lat.append(time.perf_counter() - t)
    total = time.perf_counter() - t0
    c.close()
    lat.sort()
    rows.append((name, firsts[0], statistics.median(firsts[1:]), statistics.median(lat), lat[int(len(lat) * 0.99) - 1], rounds / total))
print(f"{'path':<10} {'1st tunnel':>11} {'new tunnel p50':>15} {'keep-alive p50':>15} {'p99':>9} {'req/s':>8}")
for n, f, fp, p50, p99, rps in rows:
    print(f"{n:<10} {f*1e3:>9.2f}ms {fp*1e3:>13.2f}ms {p50*1e3:>13.2f}ms {p99*1e3:>7.2f}ms {rps:>8.0f}")
PYEOF
