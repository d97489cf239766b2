"""Time to first byte the way a Python client sees it: a fresh TCP connection, a CONNECT
tunnel (one write for the head, as real clients send it) and one byte echoed through it.

    python3 ttfb_client.py ROUNDS NAME,direct,HOST,PORT NAME,connect,PROXYHOST,PROXYPORT,HOST,PORT ...

Targets are taken in turn, one round each, so load changes hit them alike. Prints a JSON
object: each target's samples in microseconds.
"""
import json
import socket
import sys
import time


def once(kind, addr, target):
    t = time.perf_counter()
    s = socket.create_connection(addr)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if kind == "connect":
        s.sendall(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = s.recv(4096)
            if not chunk:
                raise SystemExit(f"the proxy at {addr} closed the tunnel: {head!r}")
            head += chunk
        if head.split()[1] != b"200":
            raise SystemExit(f"the proxy at {addr} refused: {head!r}")
    s.sendall(b"x")
    if s.recv(1) != b"x":
        raise SystemExit(f"no echo through {addr}")
    elapsed = (time.perf_counter() - t) * 1e6
    s.close()
    return elapsed


def main():
    rounds = int(sys.argv[1])
    targets = []
    for spec in sys.argv[2:]:
        name, kind, host, port, *rest = spec.split(",")
        target = f"{rest[0]}:{rest[1]}" if rest else None
        targets.append((name, kind, (host, int(port)), target))
    samples = {name: [] for name, *_ in targets}
    for _ in range(rounds):
        for name, kind, addr, target in targets:
            samples[name].append(once(kind, addr, target))
    print(json.dumps(samples))


main()
