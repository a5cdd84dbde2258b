"""A tiny DNS server for the tests: answers A queries from the table given as NAME=ADDR
arguments, NXDOMAIN for other names, an empty answer for other types.
usage: dns_server.py PORT NAME=ADDR..."""
import socket
import struct
import sys

port = int(sys.argv[1])
table = dict(a.split("=", 1) for a in sys.argv[2:])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", port))
print("dns: ready", flush=True)
while True:
    q, peer = s.recvfrom(512)
    ident, _flags, qd = struct.unpack("!HHH", q[:6])
    i, labels = 12, []
    while q[i]:
        labels.append(q[i + 1 : i + 1 + q[i]].decode())
        i += 1 + q[i]
    qtype = struct.unpack("!H", q[i + 1 : i + 3])[0]
    question = q[12 : i + 5]
    name = ".".join(labels).lower()
    print("dns: query", name, qtype, "from", peer[0], flush=True)
    answers = b""
    if name not in table:
        flags, count = 0x8183, 0  # NXDOMAIN
    elif qtype == 1:
        flags, count = 0x8180, 1
        answers = b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 60, 4) + socket.inet_aton(table[name])
    else:
        flags, count = 0x8180, 0
    s.sendto(struct.pack("!HHHHHH", ident, flags, 1, count, 0, 0) + question + answers, peer)
