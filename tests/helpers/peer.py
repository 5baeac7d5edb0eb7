#!/usr/bin/env python3
"""A network peer that is not loom, for tests/net_peers_test.lua.

Every server mode binds HOST (default 127.0.0.1) on port 0 and prints the
port on the first line of stdout as soon as it listens, so the test reads
that line instead of sleeping. Every mode gives up after 20 s (SIGALRM), so a
broken test never leaves a process behind.

  peer.py echo [N] [HOST]    serve N connections (default 1), each in a thread:
                             echo everything until EOF, then close
  peer.py client PORT DATA [HOST] [bytewise]
                             connect, send DATA (one byte per send() with
                             TCP_NODELAY when "bytewise"), shut down the
                             write side, read until EOF, print what came back
  peer.py reset [HOST]       accept one connection, send "partial", wait for
                             a line, then close with SO_LINGER 0 (an RST)
  peer.py count [HOST]       accept one connection, read until EOF in small,
                             slow reads; print the byte count and a checksum
"""
import hashlib
import signal
import socket
import struct
import sys
import threading
import time


def listener(host):
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    srv = socket.socket(family, socket.SOCK_STREAM)
    srv.bind((host, 0))
    srv.listen(64)
    print(srv.getsockname()[1], flush=True)
    return srv


def echo_one(conn):
    with conn:
        while True:
            data = conn.recv(65536)
            if not data:
                break
            conn.sendall(data)


def echo(n="1", host="127.0.0.1"):
    srv = listener(host)
    threads = []
    for _ in range(int(n)):
        conn, _ = srv.accept()
        th = threading.Thread(target=echo_one, args=(conn,))
        th.start()
        threads.append(th)
    for th in threads:
        th.join()


def client(port, data, host="127.0.0.1", how=""):
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.connect((host, int(port)))
        raw = data.encode()
        if how == "bytewise":
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            for i in range(len(raw)):
                s.sendall(raw[i:i + 1])
        else:
            s.sendall(raw)
        s.shutdown(socket.SHUT_WR)
        got = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            got += chunk
    sys.stdout.write(got.decode(errors="replace"))


def reset(host="127.0.0.1"):
    srv = listener(host)
    conn, _ = srv.accept()
    conn.sendall(b"partial")
    buf = b""
    while not buf.endswith(b"\n"):
        chunk = conn.recv(1)
        if not chunk:
            break
        buf += chunk
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    conn.close()


def count(host="127.0.0.1"):
    srv = listener(host)
    conn, _ = srv.accept()
    total, h = 0, hashlib.sha256()
    with conn:
        while True:
            data = conn.recv(4096)
            if not data:
                break
            total += len(data)
            h.update(data)
            if total % (1 << 20) < 4096:
                time.sleep(0.001)  # a slow reader: the writer must wait
    print(total, h.hexdigest(), flush=True)


def main():
    signal.alarm(20)
    mode, args = sys.argv[1], sys.argv[2:]
    {"echo": echo, "client": client, "reset": reset, "count": count}[mode](*args)


if __name__ == "__main__":
    main()
