#!/usr/bin/env bash
# Seeds for the `frames_eth` and `frames_ip` targets from real traffic: the kernel's own
# frames (real/traffic.py: TCP on both families, UDP, and ping), captured with tcpdump on
# loopback in a network namespace made for it (unshare -n; nothing outside it is touched),
# then addressed to a lab: 127.0.0.1 and ::1 become the peer and the stack (10.0.0.2 ->
# 10.0.0.1, fc00::2 -> fc00::1); the IPv4 connection's server side (port 4000) becomes the
# peer of the lab's connected socket (ports and sequence numbers shifted onto it), its
# client's SYNs go to the listener (port 80), UDP to the lab's sockets (53, 5353); the rest
# of each frame (options, windows, flags, payloads) is the kernel's, checksums redone.
# Writes corpus/frames_{eth,ip}/real_*. Needs root (unshare), tcpdump, ping, python3
# (Debian: tcpdump, iputils-ping, python3). Run from fuzz/.
set -euo pipefail
cd "$(dirname "$0")/.."
for c in tcpdump ping python3 unshare; do
  command -v $c >/dev/null || { echo "$c is missing"; exit 1; }
done
lab=$(cargo +nightly run -q --release --example gen_seeds -- --lab)
cap=$(mktemp -d)
trap 'rm -rf "$cap"' EXIT
unshare -n bash -c "
  ip link set lo up
  tcpdump -i lo -U -s 0 -w $cap/lo.pcap 2>/dev/null & dump=\$!
  sleep 1
  python3 real/traffic.py
  ping -c 2 -i 0.2 127.0.0.1 >/dev/null; ping -c 2 -i 0.2 ::1 >/dev/null
  sleep 1; kill \$dump; wait \$dump || true"
python3 real/frames.py "$cap/lo.pcap" "$lab"
