#!/usr/bin/env bash
# Seeds for the `control` target from real requests: runs real/app.py (python3's socket
# calls: TCP and UDP on both families, options, names, shutdown, a non-blocking connect)
# under `vdestack run`, records with strace what the preloaded library sends on its control
# connection, and writes corpus/control/real_* (a hello with the key, then the requests,
# whole and by part). Needs strace and python3 (Debian: strace, python3) and a release build
# of the CLI (cargo build --release). Run from fuzz/.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v strace >/dev/null || { echo "strace is missing (apt-get install strace)"; exit 1; }
trace=$(mktemp)
trap 'rm -f "$trace"' EXIT
strace -f -yy -e trace=sendmsg -xx -s 65536 -o "$trace" ../target/release/vdestack run \
  --net "mem://fuzzreal$$" \
  --cmd "ip link set vde0 up; ip addr add 10.0.0.1/24 dev vde0; ip addr add fc00::1/64 dev vde0" \
  -- python3 real/app.py
python3 - "$trace" <<'PY'
import re, sys
# The clients' control connections (`vdestack run`'s and the application's) are the
# unnamed ends; the engine's ends are named @vds:...
reqs = []
for line in open(sys.argv[1]):
    m = re.match(r'\d+ sendmsg\((\d+)<UNIX:\[\d+->\d+\]>, \{.*?iov_base="([^"]*)"', line)
    msg = bytes.fromhex(m.group(2).replace('\\x', '')) if m else b""
    # The harness says hello itself (with its engine's key): not this run's.
    if msg and msg[0] != 16:
        reqs.append(msg)
if not reqs:
    sys.exit("no requests recorded")
def write(name, msgs):
    data = bytearray([1])  # flags: a hello with the engine's key first
    for m in msgs:
        data += len(m).to_bytes(2, 'little') + m
    open(f"corpus/control/real_{name}", "wb").write(data)
write("all", reqs)
# And in parts of 16 requests (the first is `vdestack run`'s own: a stack, its commands).
parts = [reqs[i:i + 16] for i in range(0, len(reqs), 16)]
for i, p in enumerate(parts):
    write(f"part{i}", p)
print(f"{len(reqs)} requests, {len(parts)} parts")
PY
