#!/usr/bin/env python3
"""The router's hop over the MessagePack protocol, measured with a client that is not .NET.

  python3 hop.py read|write NODE_PORT ROUTER_PORT [requests=3000] [rounds=4] [rows=10000]

One connection, one request in flight: a point read (NODE_PORT: the replica's --listen) or a
single-row INSERT OR REPLACE (NODE_PORT: the master's --listen) straight to the node, then the same
through the router (its --listen, with the key), alternated ROUNDS times. Prints one line per figure
in router.sh's format: "test=… clients=1 target=direct-native|router-native p50=<µs>". The frames
(4-byte big-endian length + MessagePack [id, op, {args}]) are built by hand: no package needed.
"""
import random
import socket
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


def pack_map(pairs):
    return bytes([0x80 | len(pairs)]) + b"".join(pack_str(k) + v for k, v in pairs)


def frame(request_id, op, pairs):
    body = bytes([0x93]) + pack_int(request_id) + pack_str(op) + pack_map(pairs)
    return struct.pack(">I", len(body)) + body


def request(test, request_id, key, routed):
    pairs = [("key", pack_str(key))] if routed else []
    if test == "read":
        pairs += [("sql", pack_str("SELECT v FROM kv WHERE k = ?")), ("params", bytes([0x91]) + pack_str(key))]
        return frame(request_id, "query", pairs)
    statement = bytes([0x93]) + pack_str("INSERT OR REPLACE INTO kv(k, v) VALUES(?, ?)") + pack_str(key) + pack_int(request_id)
    pairs += [("statements", bytes([0x91]) + statement)]
    return frame(request_id, "execute", pairs)


def receive(sock, n):
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError("the server closed the connection")
        data += chunk
    return data


def p50(test, port, routed, requests, rows):
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    latencies = []
    for i in range(1, requests + 1):
        key = f"k{random.randint(1, rows)}"
        payload = request(test, i, key, routed)
        started = time.perf_counter()
        sock.sendall(payload)
        length = struct.unpack(">I", receive(sock, 4))[0]
        answer = receive(sock, length)
        latencies.append(time.perf_counter() - started)
        if i == 1 and b"error" in answer:
            raise SystemExit(f"{test} on port {port} failed: {answer!r}")
    sock.close()
    latencies.sort()
    return latencies[len(latencies) // 2] * 1e6


def main():
    test, node, router = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    requests = int(sys.argv[4]) if len(sys.argv) > 4 else 3000
    rounds = int(sys.argv[5]) if len(sys.argv) > 5 else 4
    rows = int(sys.argv[6]) if len(sys.argv) > 6 else 10000
    p50(test, node, False, 300, rows)  # warm both paths
    p50(test, router, True, 300, rows)
    for _ in range(rounds):
        for target, port, routed in (("direct-native", node, False), ("router-native", router, True)):
            print(f"test={test} clients=1 target={target}-pinned p50={p50(test, port, routed, requests, rows):.0f}", flush=True)


if __name__ == "__main__":
    main()
