#!/usr/bin/env python3
"""What one hop costs: the router and HAProxy against the data node itself, from a client that is not .NET.

  python3 hop.py read|write NODE ROUTER HAPROXY [requests=3000] [rounds=4] [rows=10000]

NODE, ROUTER and HAPROXY are "native_port:http_port" pairs; HAProxy's native port is a TCP-mode
(layer 4) relay to the node's MessagePack port — a hop that only copies bytes, the floor for any
proxy — and its HTTP port an HTTP-mode proxy (give 0 for a port that is not there). For reads NODE
is the replica, for writes the master; HAProxy forwards to the same node. One connection, one
request in flight: a point read or a single-row INSERT OR REPLACE, sequentially, over HTTP/1.1
(direct, HAProxy, router) and over the MessagePack protocol (direct, HAProxy TCP, router), the
targets alternated ROUNDS times. Prints one line per figure in router.sh's format:
"test=… clients=1 target=<target>-<proto>-pinned p50=<µs> mean=<µs>". Requests and frames are built by
hand (frames: 4-byte big-endian length + MessagePack [id, op, {args}]); no package needed.
"""
import random
import socket
import statistics
import struct
import sys
import time


def pack_str(text):
    data = text.encode()
    if len(data) < 32:
        return bytes([0xA0 | len(data)]) + data
    if len(data) < 256:
        return bytes([0xD9, len(data)]) + data
    return bytes([0xDA]) + struct.pack(">H", len(data)) + data


def pack_int(n):
    return bytes([0xCE]) + struct.pack(">I", n)


def native_request(test, request_id, key, routed):
    pairs = [("key", pack_str(key))] if routed else []
    if test == "read":
        pairs += [("sql", pack_str("SELECT v FROM kv WHERE k = ?")), ("params", bytes([0x91]) + pack_str(key))]
        op = "query"
    else:
        statement = bytes([0x93]) + pack_str("INSERT OR REPLACE INTO kv(k, v) VALUES(?, ?)") + pack_str(key) + pack_int(request_id)
        pairs += [("statements", bytes([0x91]) + statement)]
        op = "execute"
    body = bytes([0x93]) + pack_int(request_id) + pack_str(op) + bytes([0x80 | len(pairs)]) + b"".join(pack_str(k) + v for k, v in pairs)
    return struct.pack(">I", len(body)) + body


def http_request(test, request_id, key, routed):
    prefix = f'{{"key":"{key}",' if routed else "{"
    if test == "read":
        path = "/db/query" if routed else "/query"
        body = prefix + f'"sql":"SELECT v FROM kv WHERE k = ?","params":["{key}"]}}'
    else:
        path = "/db/execute" if routed else "/execute"
        body = prefix + f'"statements":[["INSERT OR REPLACE INTO kv(k, v) VALUES(?, ?)","{key}",{request_id}]]}}'
    data = body.encode()
    head = f"POST {path} HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n"
    return head.encode() + data


def receive_exactly(sock, n, data=b""):
    while len(data) < n:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("the server closed the connection")
        data += chunk
    return data


def receive_native(sock):
    head = receive_exactly(sock, 4)
    length = struct.unpack(">I", head[:4])[0]
    return receive_exactly(sock, 4 + length, head)[4:]


def receive_http(sock):
    data = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("the server closed the connection")
        data += chunk
        end = data.find(b"\r\n\r\n")
        if end < 0:
            continue
        lengths = [line for line in data[:end].split(b"\r\n") if line.lower().startswith(b"content-length:")]
        if lengths and len(data) >= end + 4 + int(lengths[0].split(b":")[1]):
            return data
        if not lengths and data.endswith(b"\r\n0\r\n\r\n"):
            return data


def measure(test, proto, port, routed, requests, rows):
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    build, receive = (native_request, receive_native) if proto == "native" else (http_request, receive_http)
    latencies = []
    for i in range(1, requests + 1):
        payload = build(test, i, f"k{random.randint(1, rows)}", routed)
        started = time.perf_counter()
        sock.sendall(payload)
        answer = receive(sock)
        latencies.append((time.perf_counter() - started) * 1e6)
        if i == 1 and (b"error" in answer or (proto == "http" and not answer.startswith(b"HTTP/1.1 200"))):
            raise SystemExit(f"{test} over {proto} on port {port} failed: {answer[:300]!r}")
    sock.close()
    latencies.sort()
    return latencies[len(latencies) // 2], statistics.mean(latencies)


def main():
    test = sys.argv[1]
    node, router, haproxy = ([int(p) for p in arg.split(":")] for arg in sys.argv[2:5])
    requests = int(sys.argv[5]) if len(sys.argv) > 5 else 3000
    rounds = int(sys.argv[6]) if len(sys.argv) > 6 else 4
    rows = int(sys.argv[7]) if len(sys.argv) > 7 else 10000
    targets = [
        ("direct", "http", node[1], False),
        ("haproxy", "http", haproxy[1], False),
        ("router", "http", router[1], True),
        ("direct", "native", node[0], False),
        ("haproxy", "native", haproxy[0], False),
        ("router", "native", router[0], True),
    ]
    targets = [t for t in targets if t[2] != 0]
    for _, proto, port, routed in targets:  # warm every path first
        measure(test, proto, port, routed, 300, rows)
    for _ in range(rounds):
        for target, proto, port, routed in targets:
            p50, mean = measure(test, proto, port, routed, requests, rows)
            print(f"test={test} clients=1 target={target}-{proto}-pinned p50={p50:.0f} mean={mean:.0f}", flush=True)


if __name__ == "__main__":
    main()
