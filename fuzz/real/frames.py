"""Turns a loopback capture of real/traffic.py and ping into frames_eth and frames_ip seeds
addressed to a lab (see real/frames.sh). Usage: frames.py CAPTURE.pcap "LAB" where LAB is
what `gen_seeds --lab` prints."""
import struct, sys

PEER4, STACK4 = bytes([10, 0, 0, 2]), bytes([10, 0, 0, 1])
PEER6 = bytes.fromhex("fc000000000000000000000000000002")
STACK6 = bytes.fromhex("fc000000000000000000000000000001")
PEER_MAC = bytes([2, 0, 0, 0, 0, 2])
SERVER = 4000  # traffic.py's server port; the lab's peer port too


def csum(data):
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return (~s) & 0xFFFF


def packets(path):
    with open(path, "rb") as f:
        data = f.read()
    off = 24
    while off + 16 <= len(data):
        incl = struct.unpack("<I", data[off + 8:off + 12])[0]
        frame = data[off + 16:off + 16 + incl]
        off += 16 + incl
        yield struct.unpack("!H", frame[12:14])[0], frame[14:]


def ipv4(hdr, payload, src, dst):
    h = bytearray(hdr)
    h[12:16], h[16:20] = src, dst
    struct.pack_into("!H", h, 2, len(h) + len(payload))
    h[10:12] = b"\0\0"
    h[10:12] = struct.pack("!H", csum(bytes(h)))
    return bytes(h) + payload


def ipv6(hdr, payload, src, dst):
    h = bytearray(hdr)
    h[8:24], h[24:40] = src, dst
    struct.pack_into("!H", h, 4, len(payload))
    return bytes(h) + payload


def l4(proto, src, dst, seg, at):
    """seg with its checksum (at offset `at`) redone for the pseudo-header."""
    seg = bytearray(seg)
    seg[at:at + 2] = b"\0\0"
    if len(src) == 4:
        pseudo = src + dst + struct.pack("!BBH", 0, proto, len(seg))
    else:
        pseudo = src + dst + struct.pack("!IxxxB", len(seg), proto)
    seg[at:at + 2] = struct.pack("!H", csum(pseudo + bytes(seg)))
    return bytes(seg)


def quoted4(inner):
    """A quoted IPv4 packet, as the stack would have sent it to the peer."""
    h = bytearray(inner[:(inner[0] & 15) * 4])
    h[12:16], h[16:20] = STACK4, PEER4
    h[10:12] = b"\0\0"
    h[10:12] = struct.pack("!H", csum(bytes(h)))
    return bytes(h) + inner[len(h):]


def main():
    cap, lab = sys.argv[1], sys.argv[2]
    labs = {}
    for line in lab.splitlines():
        medium, mac, port, seq, pseq = line.split()
        labs[medium] = (bytes.fromhex(mac.replace(":", "")), int(port), int(seq), int(pseq))
    _, port, seq, pseq = labs["Ethernet"]
    assert labs["Ip"][1:] == labs["Ethernet"][1:], "the labs' connections differ"
    out = {"tcp_conn": [], "syn": [], "udp": [], "icmp": []}
    isn = {}  # captured ISNs: "server", "client" (IPv4 connection)
    request = b""  # what the IPv4 connection's client sent
    for ty, pkt in packets(cap):
        if ty == 0x0800:
            ihl = (pkt[0] & 15) * 4
            hdr, proto, body = pkt[:ihl], pkt[9], pkt[ihl:]
            if proto == 6:
                sport, dport, s, a = struct.unpack("!HHII", body[:12])
                flags = body[13]
                data = body[(body[12] >> 4) * 4:]
                if dport == SERVER and data:
                    request += data  # the lab's application sends it first
                if dport == SERVER and flags & 0x12 == 0x02:
                    isn["client"] = s
                    seg = body[:2] + struct.pack("!H", 80) + body[4:]
                    out["syn"].append(ipv4(hdr, l4(6, PEER4, STACK4, seg, 16), PEER4, STACK4))
                elif sport == SERVER and flags & 0x12 == 0x12:
                    isn["server"] = s
                elif sport == SERVER and "server" in isn:
                    s = (s - isn["server"] - 1 + pseq) & 0xFFFFFFFF
                    a = (a - isn["client"] - 1 + seq) & 0xFFFFFFFF
                    seg = struct.pack("!HHII", SERVER, port, s, a) + body[12:]
                    seg = l4(6, PEER4, STACK4, seg, 16)
                    out["tcp_conn"].append(ipv4(hdr, seg, PEER4, STACK4))
            elif proto == 17 and struct.unpack("!H", body[2:4])[0] == 53:
                out["udp"].append(ipv4(hdr, l4(17, PEER4, STACK4, body, 6), PEER4, STACK4))
            elif proto == 1:
                icmp = body[:8] + (quoted4(body[8:]) if body[0] == 3 else body[8:])
                icmp = bytearray(icmp)
                icmp[2:4] = b"\0\0"
                icmp[2:4] = struct.pack("!H", csum(bytes(icmp)))
                out["icmp"].append(ipv4(hdr, bytes(icmp), PEER4, STACK4))
        elif ty == 0x86DD:
            hdr, nh, body = pkt[:40], pkt[6], pkt[40:]
            if nh == 6:
                sport, dport = struct.unpack("!HH", body[:4])
                if dport == SERVER and body[13] & 0x12 == 0x02:
                    seg = body[:2] + struct.pack("!H", 80) + body[4:]
                    out["syn"].append(ipv6(hdr, l4(6, PEER6, STACK6, seg, 16), PEER6, STACK6))
            elif nh == 17 and struct.unpack("!H", body[2:4])[0] == 5353:
                out["udp"].append(ipv6(hdr, l4(17, PEER6, STACK6, body, 6), PEER6, STACK6))
            elif nh == 58 and body[0] in (1, 128):
                icmp = bytearray(body)
                if body[0] == 1:  # port unreachable: the quoted packet is the stack's
                    icmp[8 + 8:8 + 24], icmp[8 + 24:8 + 40] = STACK6, PEER6
                out["icmp"].append(ipv6(hdr, l4(58, PEER6, STACK6, bytes(icmp), 2), PEER6, STACK6))
    for name, pkts in out.items():
        assert pkts, f"nothing captured for {name}"
    out["all"] = sum(out.values(), [])
    read_all = bytes([0x81, 3, 0, 0])  # then the applications read what came
    # The lab's connected socket (application end 3) writes the client's request first, so
    # that the server's acks acknowledge bytes the stack sent.
    write = bytes([0x80, 3]) + struct.pack("<H", len(request)) + request
    for medium, target, prefix in (("Ethernet", "frames_eth", "eth"), ("Ip", "frames_ip", "ip")):
        mac = labs[medium][0]
        for name, pkts in out.items():
            data = bytearray([1])  # flags: the stack checks checksums
            if name in ("tcp_conn", "all"):
                data += write
            for p in pkts:
                if medium == "Ethernet":
                    p = mac + PEER_MAC + (b"\x08\x00" if p[0] >> 4 == 4 else b"\x86\xdd") + p
                data += b"\0" + struct.pack("<H", len(p)) + p
            data += read_all
            with open(f"corpus/{target}/real_{prefix}_{name}", "wb") as f:
                f.write(data)
    print({k: len(v) for k, v in out.items()})


main()
