"""The gateway benchmark's upstream: an Anthropic Messages server in a process of its own.

Every answer is sent in one write (head and body together), as a real API front end's
buffered writer does, so any wait the benchmark sees is the caller's, not this server's.
With `--split` the head and the body go in two writes, without TCP_NODELAY, the way
Python's http.server answers: the body then waits for the caller's ACK of the head.
HTTP/1.1 with keep-alive; `stream: true` in the body gets the same message as SSE events.
Prints its port on stdout, then serves until killed.
"""
import json
import socket
import sys
import threading

TEXT = ["Hello", " from", " the", " bench", " upstream", "!", ""]


def message(model):
    return {
        "id": "msg_bench", "type": "message", "role": "assistant", "model": model,
        "content": [{"type": "text", "text": "".join(TEXT)}],
        "stop_reason": "end_turn", "stop_sequence": None,
        "usage": {"input_tokens": 5, "output_tokens": 9},
    }


def sse(model):
    events = [("message_start", {"type": "message_start", "message": {
        **message(model), "content": [], "stop_reason": None,
        "usage": {"input_tokens": 5, "output_tokens": 1}}}),
        ("content_block_start", {"type": "content_block_start", "index": 0,
                                 "content_block": {"type": "text", "text": ""}})]
    for t in TEXT:
        events.append(("content_block_delta", {"type": "content_block_delta", "index": 0,
                                               "delta": {"type": "text_delta", "text": t}}))
    events += [("content_block_stop", {"type": "content_block_stop", "index": 0}),
               ("message_delta", {"type": "message_delta",
                                  "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                                  "usage": {"output_tokens": 9}}),
               ("message_stop", {"type": "message_stop"})]
    return "".join(f"event: {n}\ndata: {json.dumps(d)}\n\n" for n, d in events).encode()


SPLIT = "--split" in sys.argv


def answer(body):
    req = json.loads(body or b"{}")
    model = req.get("model", "claude-bench")
    if req.get("stream"):
        payload, ctype = sse(model), "text/event-stream"
    else:
        payload, ctype = json.dumps(message(model)).encode(), "application/json"
    head = (f"HTTP/1.1 200 OK\r\ncontent-type: {ctype}\r\ncontent-length: {len(payload)}\r\n"
            "request-id: req_bench\r\n\r\n").encode()
    return [head, payload] if SPLIT else [head + payload]


def serve(conn):
    if not SPLIT:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    buf = b""
    try:
        while True:
            while b"\r\n\r\n" not in buf:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                buf += chunk
            head, buf = buf.split(b"\r\n\r\n", 1)
            length = 0
            close = False
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                name = name.strip().lower()
                if name == b"content-length":
                    length = int(value.strip())
                elif name == b"connection" and value.strip().lower() == b"close":
                    close = True
            while len(buf) < length:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                buf += chunk
            body, buf = buf[:length], buf[length:]
            for piece in answer(body):
                conn.sendall(piece)
            if close:
                return
    finally:
        conn.close()


def main():
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", 0))
    srv.listen(512)
    print(srv.getsockname()[1], flush=True)
    while True:
        conn, _ = srv.accept()
        threading.Thread(target=serve, args=(conn,), daemon=True).start()


if __name__ == "__main__":
    main()
