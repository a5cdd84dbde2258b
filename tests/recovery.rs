//! Loss recovery against Linux's TCP (issue 15): a stack talks over a TAP to a kernel echo
//! server in a namespace the test creates, whose TCP drops 2% of segments each way at random
//! (nftables on the
//! device in that namespace: this kernel has no netem). 8 MiB go each way at once and come
//! back intact; the kernel shows that SACK was negotiated, and the stack's `ss -s` that the
//! losses were repaired by SACK recovery, not by retransmission timeouts.

#[path = "support/netns.rs"]
mod netns;

use std::io::{Read, Write};
use std::net::Shutdown;
use std::process::Command;
use std::time::{Duration, Instant};

use vdestack::net::TcpStream;
use vdestack::Stack;

/// Bytes each way.
const TOTAL: usize = 8 << 20;
/// A transfer that takes longer has stalled (it takes a few seconds).
const LIMIT: Duration = Duration::from_secs(120);

/// The kernel side: echoes one connection, then prints whether SACK was negotiated and its
/// retransmission count (struct tcp_info: options at byte 5, total_retrans at byte 100).
const ECHO: &str = "
import socket, struct
l = socket.socket()
l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
l.bind(('10.217.1.2', 7200))
l.listen(1)
print('ready', flush=True)
c, _ = l.accept()
while True:
    d = c.recv(1 << 16)
    if not d:
        break
    c.sendall(d)
info = c.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
print('sack', info[5] & 2 != 0, 'retrans', struct.unpack_from('I', info, 100)[0], flush=True)
c.close()
";

/// xorshift64 bytes.
fn fill(x: &mut u64, buf: &mut [u8]) {
    for chunk in buf.chunks_mut(8) {
        *x ^= *x << 13;
        *x ^= *x >> 7;
        *x ^= *x << 17;
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
}

fn require(tool: &str, pkg: &str) {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(found, "this test needs `{tool}`: apt-get install {pkg}");
}

#[test]
fn sack_recovery_against_linux_at_2_percent_loss_each_way() {
    netns::require_tools();
    require("python3", "python3");
    require("nft", "nftables");
    // The kernel's TCP in namespace K; namespace R routes between it (veth) and the stack
    // (TAP), and drops on the ingress of both its devices, after the sender's device took
    // the segment (a drop on the sender's own hooks is refused to its TCP, which resends
    // it unseen, as no lost segment).
    let router = netns::NetNs::new();
    let ns = netns::NetNs::new();
    let dev = format!("vdkr{}", std::process::id() % 100_000);
    let stack = Stack::new(&format!("tap://{dev}"), None).expect("open the tap (needs root)");
    stack
        .cmd("ip link set vde0 up; ip addr add 10.217.0.2/24 dev vde0; ip route add 10.217.1.0/24 via 10.217.0.1")
        .expect("configure the stack");
    router.move_link(&dev);
    router.ip(&["link", "set", "dev", &dev, "up"]);
    router.ip(&["addr", "add", "10.217.0.1/24", "dev", &dev]);
    router.ip(&[
        "link",
        "add",
        "vr",
        "type",
        "veth",
        "peer",
        "name",
        "vk",
        "netns",
        ns.name(),
    ]);
    router.ip(&["link", "set", "dev", "vr", "up"]);
    router.ip(&["addr", "add", "10.217.1.1/24", "dev", "vr"]);
    // One segment per frame on the kernel's side, so that a drop is a segment's.
    ns.ip(&["link", "set", "dev", "vk", "gso_max_segs", "1", "up"]);
    ns.ip(&["addr", "add", "10.217.1.2/24", "dev", "vk"]);
    ns.ip(&["route", "add", "default", "via", "10.217.1.1"]);
    let out = router.exec(&["sysctl", "-w", "net.ipv4.ip_forward=1"]);
    assert!(out.status.success(), "ip_forward in the router namespace");
    let rules = format!(
        "table netdev loss {{
            chain tap {{ type filter hook ingress device \"{dev}\" priority 0;
                meta l4proto tcp numgen random mod 1000 < 20 counter drop; }}
            chain veth {{ type filter hook ingress device \"vr\" priority 0;
                meta l4proto tcp numgen random mod 1000 < 20 counter drop; }}
        }}"
    );
    let out = router.exec(&["nft", &rules]);
    assert!(
        out.status.success(),
        "nft in the namespace: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let mut echo = ns.spawn(&["python3", "-c", ECHO]);
    let mut stdout = echo.stdout.take().expect("stdout");
    let mut ready = [0u8; 6];
    stdout.read_exact(&mut ready).expect("kernel server ready");

    let t = Instant::now();
    let conn = loop {
        match TcpStream::connect(&stack, "10.217.1.2:7200") {
            Ok(c) => break c,
            // The SYN or its answer may be among the 2% lost.
            Err(e) if t.elapsed() < Duration::from_secs(10) => {
                eprintln!("retrying connect: {e}");
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(e) => panic!("could not connect to the kernel: {e}"),
        }
    };
    let writer = conn.try_clone().expect("clone");
    let send = std::thread::spawn(move || {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut block = vec![0u8; 1 << 16];
        let mut w = &writer;
        for _ in 0..TOTAL / block.len() {
            fill(&mut x, &mut block);
            w.write_all(&block).expect("write");
        }
    });
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let (mut buf, mut want) = (vec![0u8; 1 << 16], vec![0u8; 1 << 16]);
    let mut got = 0;
    let mut r = &conn;
    while got < TOTAL {
        assert!(t.elapsed() < LIMIT, "stalled after {got} bytes back");
        let mut filled = r.read(&mut buf).expect("read");
        assert!(filled > 0, "EOF after {got} bytes back");
        // The generator runs in 8-byte words: complete the last word before checking.
        while filled % 8 != 0 {
            let k = r
                .read(&mut buf[filled..filled + 8 - filled % 8])
                .expect("read");
            assert!(k > 0, "EOF mid-word");
            filled += k;
        }
        fill(&mut x, &mut want[..filled]);
        assert!(buf[..filled] == want[..filled], "bytes differ at {got}");
        got += filled;
    }
    send.join().expect("writer");
    let elapsed = t.elapsed();
    let ss = stack.cmd_output("ss -s").expect("ss -s");
    conn.shutdown(Shutdown::Write).expect("shutdown");
    let mut report = String::new();
    stdout.read_to_string(&mut report).expect("kernel report");
    assert!(echo.wait().expect("wait").success(), "kernel echo failed");
    let counters = router.exec(&["nft", "list", "table", "netdev", "loss"]);
    eprintln!("{}", String::from_utf8_lossy(&counters.stdout));
    eprintln!(
        "8 MiB each way at 2% loss each way in {:.1} s; kernel: {}; stack: {}",
        elapsed.as_secs_f64(),
        report.trim(),
        ss.lines()
            .find(|l| l.contains("loss repair"))
            .unwrap_or("?")
    );
    assert!(
        report.starts_with("sack True"),
        "SACK not negotiated: {report}"
    );
    // The kernel lost segments too, and our SACK blocks led its repairs.
    let kernel_retrans: u32 = report
        .split_whitespace()
        .last()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("kernel report: {report}"));
    assert!(
        kernel_retrans > 10,
        "the kernel's segments were not lost: {report}"
    );

    // The stack's repairs: by SACK recovery (RFC 6675, RACK), timeouts few.
    let line = ss
        .lines()
        .find(|l| l.starts_with("TCP loss repair:"))
        .unwrap_or_else(|| panic!("no loss repair line in ss -s:\n{ss}"));
    let count = |what: &str| -> u32 {
        let at = line
            .find(what)
            .unwrap_or_else(|| panic!("{what} in {line}"))
            + what.len();
        line[at..]
            .trim_start()
            .split(|c: char| !c.is_ascii_digit())
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{what} in {line}"))
    };
    assert!(count("recoveries") > 10, "few SACK recoveries: {line}");
    assert!(count("timeouts") < 5, "losses repaired by timeouts: {line}");
}
