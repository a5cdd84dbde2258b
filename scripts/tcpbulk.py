#!/usr/bin/env python3
"""Bulk TCP sender and receiver for scripts/bench-tcp, and its kernel-memory probe.

Run unchanged under `vdestack run` (our stack) and under vdens or in a network namespace
(Linux's TCP), so that both are measured by the same program.

  tcpbulk.py recv IP PORT BYTES DEADLINE_S RESULT   accept one connection on IP:PORT, read
        until EOF, BYTES or DEADLINE_S seconds after the accept, whichever comes first;
        write key=value lines to RESULT (atomically): bytes, seconds (accept to EOF, or to
        the deadline), MBps (10^6 bytes/s), sha256 of what arrived, timed_out (0/1).
  tcpbulk.py send IP PORT FILE [CONNECT_S]          connect to IP:PORT (retrying for
        CONNECT_S seconds, default 30), send FILE, shut down the write side, then wait
        for the receiver to close (so that the stack is not torn down with data unsent).
  tcpbulk.py kconns N PORT RESULT                   N idle established kernel TCP
        connections over lo between two processes; RESULT gets the kernel's slab memory
        (/proc/meminfo Slab) before and with them open, and `ss -tmn` totals.
"""

import hashlib
import os
import socket
import subprocess
import sys
import time

CHUNK = 1 << 20


def put(path, kv):
    """Writes key=value lines to path atomically (the caller polls for it)."""
    text = "".join(f"{k}={v}\n" for k, v in kv.items())
    with open(path + ".tmp", "w") as f:
        f.write(text)
    os.rename(path + ".tmp", path)
    sys.stdout.write(text)


def recv(ip, port, want, deadline_s, result):
    ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind((ip, int(port)))
    ls.listen(1)
    # The sender may take a while to come up (a namespace, a stack, ARP).
    ls.settimeout(60)
    c, _ = ls.accept()
    t0 = time.monotonic()
    end = t0 + float(deadline_s)
    want = int(want)
    h = hashlib.sha256()
    n = 0
    timed_out = 0
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    while n < want:
        left = end - time.monotonic()
        if left <= 0:
            timed_out = 1
            break
        c.settimeout(left)
        try:
            k = c.recv_into(view, min(CHUNK, want - n))
        except socket.timeout:
            timed_out = 1
            break
        if k == 0:
            break
        h.update(view[:k])
        n += k
    secs = (end - t0) if timed_out else (time.monotonic() - t0)
    c.close()
    put(result, {
        "bytes": n,
        "seconds": f"{secs:.3f}",
        "MBps": f"{n / secs / 1e6:.2f}" if secs > 0 else "0",
        "sha256": h.hexdigest(),
        "timed_out": timed_out,
    })


def send(ip, port, path, connect_s="30"):
    data = open(path, "rb").read()
    end = time.monotonic() + float(connect_s)
    while True:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.settimeout(10)
        try:
            s.connect((ip, int(port)))
            break
        except OSError:
            s.close()
            if time.monotonic() > end:
                raise
            time.sleep(0.2)
    s.settimeout(None)
    view = memoryview(data)
    try:
        for i in range(0, len(data), CHUNK):
            s.sendall(view[i:i + CHUNK])
        s.shutdown(socket.SHUT_WR)
        # Wait for the receiver's close: until then our segments may still be in flight.
        while s.recv(4096):
            pass
    except (BrokenPipeError, ConnectionResetError):
        # The receiver stopped at its deadline; it reports what arrived.
        pass
    s.close()


def slab_kib():
    for line in open("/proc/meminfo"):
        if line.startswith("Slab:"):
            return int(line.split()[1])
    raise RuntimeError("no Slab in /proc/meminfo")


def kconns(n, port, result):
    n, port = int(n), int(port)
    ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("127.0.0.1", port))
    ls.listen(4096)
    before = slab_kib()
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        # The accepting side: keeps every connection until its parent is done.
        os.close(r)
        conns = [ls.accept()[0] for _ in range(n)]
        os.write(w, b"a")
        while True:
            time.sleep(3600)
    os.close(w)
    ls.close()
    conns = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port))
        conns.append(s)
    assert os.read(r, 1) == b"a"
    time.sleep(1)
    with_conns = slab_kib()
    ss = subprocess.run(["ss", "-tnmH", "state", "established"], capture_output=True,
                        text=True).stdout
    established = sum(1 for line in ss.splitlines() if line and not line.startswith("\t")
                      and not line.startswith(" "))
    os.kill(pid, 9)
    os.waitpid(pid, 0)
    for s in conns:
        s.close()
    delta = with_conns - before
    put(result, {
        "conns": n,
        "established_sockets": established,
        "slab_kib_before": before,
        "slab_kib_with_conns": with_conns,
        "slab_kib_delta": delta,
        "slab_kib_per_conn_end": f"{delta / (2 * n):.2f}",
    })


if __name__ == "__main__":
    cmds = {"recv": recv, "send": send, "kconns": kconns}
    if len(sys.argv) < 2 or sys.argv[1] not in cmds:
        sys.exit(__doc__)
    cmds[sys.argv[1]](*sys.argv[2:])
