//! Two stacks talking over each kind of link, with real parts: a vdeplug4 switch
//! (`vde_plug null:// switch://DIR`), a classic `vde_switch`, and an in-process `mem://`
//! segment. The same exchanges run on each: TCP echo, a 64 MiB transfer checked byte for
//! byte, UDP both ways with the senders' addresses checked, and TCP echo over IPv6.
//!
//! Plus failure cases: a locator naming no switch fails at once with a clear error, and a
//! switch killed under a live connection leaves the engine serving other stacks.
//!
//! Network safety: every switch here has no uplink (`null://`, no tap), so traffic only
//! goes between the test's own stacks; no kernel interface or address is touched.
//! A missing `vde_plug` / `vde_switch` fails the test naming its Debian package.

#[path = "support/switch.rs"]
mod switch;

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::Once;
use std::time::{Duration, Instant};

use switch::Switch;
use vdestack::net::{TcpListener, TcpStream, UdpSocket};
use vdestack::Stack;

/// How long one exchange may take before the test fails instead of hanging.
const LIMIT: Duration = Duration::from_secs(45);

/// The size of the bulk transfer.
const BULK: usize = 64 << 20;

// ---------------------------------------------------------------------------------------
// Harness

/// Panics seen in the engine thread. The engine recovers from them, so a test would not
/// notice one otherwise; each test checks that none happened.
static ENGINE_PANICS: AtomicUsize = AtomicUsize::new(0);

fn watch_engine_panics() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let prev = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if std::thread::current().name() == Some("vdestack-engine") {
                ENGINE_PANICS.fetch_add(1, Ordering::SeqCst);
            }
            prev(info)
        }));
    });
}

/// Runs `f` in its own thread and fails the test if it does not end within `limit`. Guards
/// (switches) stay with the caller, so they are dropped even when `f` hangs.
fn within<T: Send + 'static>(
    what: &str,
    limit: Duration,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    watch_engine_panics();
    let (tx, rx) = mpsc::channel();
    let worker = std::thread::Builder::new()
        .name(what.to_string())
        .spawn(move || {
            let _ = tx.send(f());
        })
        .expect("spawn the test thread");
    match rx.recv_timeout(limit) {
        Ok(t) => {
            let _ = worker.join();
            assert_eq!(
                ENGINE_PANICS.load(Ordering::SeqCst),
                0,
                "the vdestack engine panicked (and recovered); see the output above"
            );
            t
        }
        Err(mpsc::RecvTimeoutError::Disconnected) => match worker.join() {
            Err(p) => std::panic::resume_unwind(p),
            Ok(()) => unreachable!("the test thread ended without a result"),
        },
        Err(mpsc::RecvTimeoutError::Timeout) => {
            panic!("{what}: no result within {} s (hang)", limit.as_secs())
        }
    }
}

/// Two stacks on `vnl`, up, with 10.0.0.1/24 + fc00::1/64 and 10.0.0.2/24 + fc00::2/64.
fn pair(vnl: &str) -> (Stack, Stack) {
    let a = Stack::new(vnl, None).unwrap_or_else(|e| panic!("stack a on {vnl}: {e}"));
    let b = Stack::new(vnl, None).unwrap_or_else(|e| panic!("stack b on {vnl}: {e}"));
    for (s, n) in [(&a, 1), (&b, 2)] {
        s.cmd(&format!(
            "ip link set vde0 up; ip addr add 10.0.0.{n}/24 dev vde0; \
             ip -6 addr add fc00::{n}/64 dev vde0 nodad"
        ))
        .unwrap_or_else(|e| panic!("configure stack {n} on {vnl}: {e}"));
    }
    (a, b)
}

/// A unique mem:// segment name.
fn mem_vnl(test: &str) -> String {
    format!("mem://links-{test}-{}", std::process::id())
}

/// Waits up to `limit` for `fd` to be readable.
fn readable(fd: &impl AsRawFd, limit: Duration) -> bool {
    let mut p = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd for the duration of the call.
    let n = unsafe { libc::poll(&mut p, 1, limit.as_millis() as libc::c_int) };
    n > 0
}

/// xorshift64* bytes: the same seed gives the same stream on both sides.
struct Prng {
    state: u64,
    word: [u8; 8],
    used: usize,
}

impl Prng {
    fn new(seed: u64) -> Prng {
        Prng {
            state: seed | 1,
            word: [0; 8],
            used: 8,
        }
    }

    fn fill(&mut self, buf: &mut [u8]) {
        for b in buf {
            if self.used == 8 {
                let mut x = self.state;
                x ^= x >> 12;
                x ^= x << 25;
                x ^= x >> 27;
                self.state = x;
                self.word = x.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes();
                self.used = 0;
            }
            *b = self.word[self.used];
            self.used += 1;
        }
    }
}

// ---------------------------------------------------------------------------------------
// The exchanges, the same for every link. `a` is 10.0.0.1 / fc00::1, `b` 10.0.0.2 / fc00::2.

/// TCP echo from b to a listener in a, over `server` (an address of a).
fn tcp_echo_to(a: &Stack, b: &Stack, server: SocketAddr, client_ip: &str) {
    let l = TcpListener::bind(a, server).expect("listen");
    let srv = std::thread::spawn(move || -> io::Result<SocketAddr> {
        let (mut c, peer) = l.accept()?;
        let mut buf = [0u8; 4096];
        loop {
            let n = c.read(&mut buf)?;
            if n == 0 {
                break;
            }
            c.write_all(&buf[..n])?;
        }
        c.shutdown(Shutdown::Write)?;
        Ok(peer)
    });
    let mut c = TcpStream::connect(b, server).expect("connect");
    assert_eq!(c.peer_addr().unwrap(), server, "peer_addr of the client");
    let local = c.local_addr().unwrap();
    assert_eq!(local.ip().to_string(), client_ip, "client's local address");
    for i in 0..20 {
        let msg = format!("echo {i} over {server}: {}", "x".repeat(i * 50));
        c.write_all(msg.as_bytes()).unwrap();
        let mut back = vec![0u8; msg.len()];
        c.read_exact(&mut back).unwrap();
        assert_eq!(back, msg.as_bytes(), "echo {i}");
    }
    c.shutdown(Shutdown::Write).unwrap();
    let mut rest = Vec::new();
    c.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty(), "nothing after the echoes, got {rest:?}");
    let peer = srv.join().expect("server thread").expect("server");
    assert_eq!(peer, local, "the server sees the client's address");
}

fn tcp_echo(a: &Stack, b: &Stack) {
    tcp_echo_to(a, b, "10.0.0.1:7000".parse().unwrap(), "10.0.0.2");
}

fn ipv6_tcp_echo(a: &Stack, b: &Stack) {
    tcp_echo_to(a, b, "[fc00::1]:7006".parse().unwrap(), "fc00::2");
}

/// b sends 64 MiB of pseudo-random bytes to a, which checks every byte and then reports the
/// count back; then both sides see EOF.
fn bulk_64mib(a: &Stack, b: &Stack) {
    const SEED: u64 = 0x5eed_1234_abcd_0001;
    let l = TcpListener::bind(a, "10.0.0.1:7064").expect("listen");
    let srv = std::thread::spawn(move || {
        let (mut c, _) = l.accept().expect("accept");
        let mut want = Prng::new(SEED);
        let mut buf = vec![0u8; 1 << 16];
        let mut exp = vec![0u8; 1 << 16];
        let mut got = 0usize;
        loop {
            let n = c.read(&mut buf).expect("read");
            if n == 0 {
                break;
            }
            want.fill(&mut exp[..n]);
            if buf[..n] != exp[..n] {
                let i = (0..n).find(|&i| buf[i] != exp[i]).unwrap();
                panic!(
                    "byte {} differs: got {:#04x}, sent {:#04x}",
                    got + i,
                    buf[i],
                    exp[i]
                );
            }
            got += n;
            assert!(got <= BULK, "more than {BULK} bytes arrived");
        }
        c.write_all(&(got as u64).to_be_bytes()).expect("report");
        got
    });
    let mut c = TcpStream::connect(b, "10.0.0.1:7064").expect("connect");
    let mut gen = Prng::new(SEED);
    let mut block = vec![0u8; 1 << 16];
    let t = Instant::now();
    let mut sent = 0;
    // Odd-sized writes, so segment and read boundaries do not line up with the blocks.
    while sent < BULK {
        let n = (BULK - sent).min(65_521);
        gen.fill(&mut block[..n]);
        c.write_all(&block[..n]).expect("write");
        sent += n;
    }
    c.shutdown(Shutdown::Write).unwrap();
    let mut report = [0u8; 8];
    c.read_exact(&mut report).expect("the receiver's count");
    let secs = t.elapsed().as_secs_f64();
    assert_eq!(u64::from_be_bytes(report), BULK as u64);
    let mut rest = [0u8; 1];
    assert_eq!(c.read(&mut rest).unwrap(), 0, "EOF after the count");
    assert_eq!(srv.join().expect("receiver"), BULK);
    eprintln!(
        "64 MiB in {secs:.2} s ({:.0} MB/s)",
        BULK as f64 / 1e6 / secs
    );
}

/// Datagrams a → b and b → a, each side checking the sender's address; b is bound to the
/// wildcard so its source address is chosen by the stack.
fn udp_both_ways(a: &Stack, b: &Stack) {
    let ua = UdpSocket::bind(a, "10.0.0.1:7101").expect("bind a");
    let ub = UdpSocket::bind(b, "0.0.0.0:7102").expect("bind b");
    let a_addr: SocketAddr = "10.0.0.1:7101".parse().unwrap();
    let b_addr: SocketAddr = "10.0.0.2:7102".parse().unwrap();
    let mut buf = [0u8; 2048];
    for i in 0..10u8 {
        let ping = vec![i; 100 + i as usize * 100];
        ua.send_to(&ping, b_addr).expect("send a → b");
        assert!(
            readable(&ub, Duration::from_secs(5)),
            "datagram {i} a → b lost"
        );
        let (n, from) = ub.recv_from(&mut buf).expect("recv at b");
        assert_eq!(&buf[..n], &ping[..], "datagram {i} a → b");
        assert_eq!(from, a_addr, "sender of datagram {i} a → b");

        let pong = vec![!i; 1400 - i as usize];
        ub.send_to(&pong, from).expect("send b → a");
        assert!(
            readable(&ua, Duration::from_secs(5)),
            "datagram {i} b → a lost"
        );
        let (n, from) = ua.recv_from(&mut buf).expect("recv at a");
        assert_eq!(&buf[..n], &pong[..], "datagram {i} b → a");
        assert_eq!(from, b_addr, "sender of datagram {i} b → a");
    }
}

// ---------------------------------------------------------------------------------------
// One test per link and exchange.

type Exchange = fn(&Stack, &Stack);

fn on_vdeplug(name: &str, f: Exchange) {
    let sw = Switch::vdeplug();
    let vnl = sw.vnl();
    within(name, LIMIT, move || {
        let (a, b) = pair(&vnl);
        f(&a, &b);
    });
}

fn on_vde_switch(name: &str, f: Exchange) {
    let sw = Switch::vde_switch();
    let vnl = sw.vnl();
    within(name, LIMIT, move || {
        let (a, b) = pair(&vnl);
        f(&a, &b);
    });
}

fn on_mem(name: &str, f: Exchange) {
    let vnl = mem_vnl(name);
    within(name, LIMIT, move || {
        let (a, b) = pair(&vnl);
        f(&a, &b);
    });
}

macro_rules! link_tests {
    ($($name:ident: $on:ident, $f:ident;)*) => {
        $(
            #[test]
            fn $name() {
                $on(stringify!($name), $f);
            }
        )*
    };
}

link_tests! {
    vdeplug_switch_tcp_echo: on_vdeplug, tcp_echo;
    vdeplug_switch_64mib: on_vdeplug, bulk_64mib;
    vdeplug_switch_udp_both_ways: on_vdeplug, udp_both_ways;
    vdeplug_switch_ipv6_tcp_echo: on_vdeplug, ipv6_tcp_echo;
    vde_switch_tcp_echo: on_vde_switch, tcp_echo;
    vde_switch_64mib: on_vde_switch, bulk_64mib;
    vde_switch_udp_both_ways: on_vde_switch, udp_both_ways;
    vde_switch_ipv6_tcp_echo: on_vde_switch, ipv6_tcp_echo;
    mem_tcp_echo: on_mem, tcp_echo;
    mem_64mib: on_mem, bulk_64mib;
    mem_udp_both_ways: on_mem, udp_both_ways;
    mem_ipv6_tcp_echo: on_mem, ipv6_tcp_echo;
}

// ---------------------------------------------------------------------------------------
// Failures.

#[test]
fn vde_nonexistent_dir_fails_clearly() {
    let vnl = "vde:///nonexistent/dir";
    let t = Instant::now();
    let err = within("nonexistent", Duration::from_secs(10), move || {
        Stack::new(vnl, None).expect_err("no switch there")
    });
    let msg = err.to_string();
    eprintln!(
        "Stack::new({vnl:?}): {msg} ({:?}) in {:?}",
        err.kind(),
        t.elapsed()
    );
    assert!(msg.contains(vnl), "the error names the locator: {msg}");
    assert_eq!(err.kind(), io::ErrorKind::NotFound, "{msg}");
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "took {:?}",
        t.elapsed()
    );
}

/// A switch killed outright leaves its control socket behind: opening it fails at once,
/// with the locator and "connection refused", rather than later in the background.
#[test]
fn vde_dead_switch_fails_clearly() {
    let mut sw = Switch::vdeplug();
    let vnl = sw.vnl();
    sw.killer().kill();
    let deadline = Instant::now() + Duration::from_secs(5);
    while sw.is_running() {
        assert!(Instant::now() < deadline, "the switch outlived SIGKILL");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(
        sw.dir().join("ctl").exists(),
        "SIGKILL leaves the socket file"
    );
    let err = within("dead", Duration::from_secs(10), move || {
        Stack::new(&vnl, None).expect_err("a dead switch")
    });
    let msg = err.to_string();
    assert!(
        msg.contains(&sw.vnl()),
        "the error names the locator: {msg}"
    );
    assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused, "{msg}");
}

/// The switch answers a new port a round trip later. A stopped switch never answers, and
/// opening a stack on it used to wait in vde_open on the engine thread, stalling every
/// stack of the process. Now the stack is made at once, the others run on, and its frames
/// wait until the switch answers.
#[test]
fn a_stopped_switch_stalls_no_other_stack() {
    let sw = Switch::vdeplug();
    let vnl = sw.vnl();
    let switch = sw.killer();
    within("stopped", LIMIT, move || {
        switch.signal(libc::SIGSTOP);
        let t = Instant::now();
        let (a, b) = pair(&vnl);
        assert!(
            t.elapsed() < Duration::from_secs(2),
            "two stacks on a stopped switch took {:?}",
            t.elapsed()
        );
        let link = a.cmd_output("ip link show vde0").expect("ip link");
        assert!(link.contains("NO-CARRIER"), "no port yet: {link}");
        // Meanwhile the engine serves everyone else.
        let m = mem_vnl("stopped-switch");
        let (m1, m2) = pair(&m);
        tcp_echo(&m1, &m2);
        switch.signal(libc::SIGCONT);
        // The ports open now; what the stacks send goes through.
        tcp_echo(&a, &b);
        udp_both_ways(&a, &b);
        let link = a.cmd_output("ip link show vde0").expect("ip link");
        assert!(link.contains(",UP,LOWER_UP> "), "the port is open: {link}");
    });
}

/// A stack ended while its switch port is still being opened leaves nothing behind: once
/// the switch answers, that port is closed again, and the ports of live stacks stay.
#[test]
fn a_stack_ended_while_its_port_opens_leaves_no_port() {
    let sw = Switch::vdeplug();
    let vnl = sw.vnl();
    let switch = sw.killer();
    let before = switch.fds();
    within("ended-while-opening", LIMIT, move || {
        switch.signal(libc::SIGSTOP);
        let gone = Stack::new(&vnl, None).expect("a stack on a stopped switch");
        let (a, b) = pair(&vnl);
        drop(gone);
        switch.signal(libc::SIGCONT);
        // The switch answers in order: a and b talking means it has answered `gone` too.
        tcp_echo(&a, &b);
        // Two fds per port (its control connection and its data socket): a's and b's.
        let deadline = Instant::now() + Duration::from_secs(5);
        while switch.fds() != before + 4 {
            assert!(
                Instant::now() < deadline,
                "the switch holds {} fds, {before} before it had ports; want 2 ports' worth",
                switch.fds()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    });
}

#[test]
fn vdeplug_switch_killed_mid_connection() {
    let mut sw = Switch::vdeplug();
    let vnl = sw.vnl();
    let killer = sw.killer();
    within("killed", LIMIT, move || {
        let (a, b) = pair(&vnl);
        let l = TcpListener::bind(&a, "10.0.0.1:7200").expect("listen");
        let reader = std::thread::spawn(move || {
            let (mut c, _) = l.accept().expect("accept");
            let mut buf = vec![0u8; 1 << 16];
            let mut got = 0u64;
            // Ends with EOF or an error once the stack is gone.
            while let Ok(n) = c.read(&mut buf) {
                if n == 0 {
                    break;
                }
                got += n as u64;
            }
            got
        });
        let c = TcpStream::connect(&b, "10.0.0.1:7200").expect("connect");
        let c2 = c.try_clone().unwrap();
        let writer = std::thread::spawn(move || {
            let block = vec![0x5au8; 1 << 16];
            let mut sent = 0u64;
            // Ends with an error once the stack is gone.
            while (&c2).write_all(&block).is_ok() {
                sent += block.len() as u64;
            }
            sent
        });
        // Let data flow, then pull the switch out from under the connection.
        std::thread::sleep(Duration::from_millis(300));
        killer.kill();
        std::thread::sleep(Duration::from_millis(500));

        // The stacks on the dead switch still answer requests, and say the link is gone.
        let out = b
            .cmd_output("ip addr show")
            .expect("ip addr on a dead link");
        assert!(out.contains("10.0.0.2"), "{out}");
        // (The link learns it when a frame is refused: the writer and TCP's retransmissions
        // send some.)
        let deadline = Instant::now() + Duration::from_secs(3);
        loop {
            let out = b
                .cmd_output("ip link show vde0")
                .expect("ip link on a dead link");
            if out.contains("<NO-CARRIER,BROADCAST,MULTICAST,UP>") && out.contains("state DOWN") {
                break;
            }
            assert!(Instant::now() < deadline, "still a carrier: {out}");
            std::thread::sleep(Duration::from_millis(20));
        }
        let u = UdpSocket::bind(&b, "10.0.0.2:7201").expect("socket on a dead link");
        let _ = u.send_to(b"into the void", "10.0.0.1:7201");

        // The engine still serves other stacks.
        let vnl = mem_vnl("after-kill");
        let (m1, m2) = pair(&vnl);
        tcp_echo(&m1, &m2);
        udp_both_ways(&m1, &m2);

        // Ending the stacks ends their sockets: both threads return.
        drop(c);
        drop(u);
        drop((a, b));
        let sent = writer.join().expect("writer");
        let got = reader.join().expect("reader");
        assert!(got > 0, "data flowed before the kill");
        assert!(got <= sent + (1 << 16), "got {got}, sent {sent}");
        eprintln!("before the kill: {got} bytes received of {sent} written");
    });
    assert!(!sw.is_running(), "the switch was killed");
}

/// One client reaching many new peers in a row pays no address-resolution pause for each:
/// smoltcp asks for one unknown neighbour per second, so without the engine asking for the
/// rest itself, 8 connects took 7 s and the first datagram to each new peer waited a second.
#[test]
fn a_client_reaches_many_new_peers_without_a_pause_for_each() {
    let vnl = mem_vnl("many-peers");
    let client = Stack::new(&vnl, None).unwrap();
    client
        .cmd("ip link set vde0 up; ip addr add 10.0.0.100/24 dev vde0")
        .unwrap();
    let mut servers = Vec::new();
    for i in 1..=8 {
        let s = Stack::new(&vnl, None).unwrap();
        s.cmd(&format!(
            "ip link set vde0 up; ip addr add 10.0.0.{i}/24 dev vde0"
        ))
        .unwrap();
        let l = TcpListener::bind(&s, "0.0.0.0:80").unwrap();
        let u = UdpSocket::bind(&s, "0.0.0.0:53").unwrap();
        servers.push((s, l, u));
    }
    let t = Instant::now();
    for i in 1..=8 {
        TcpStream::connect(&client, format!("10.0.0.{i}:80")).unwrap();
    }
    let tcp = t.elapsed();
    assert!(
        tcp < Duration::from_secs(4),
        "8 connects to new peers took {tcp:?}"
    );

    // UDP to 8 more new peers: each first datagram arrives promptly.
    let mut more = Vec::new();
    for i in 11..=18 {
        let s = Stack::new(&vnl, None).unwrap();
        s.cmd(&format!(
            "ip link set vde0 up; ip addr add 10.0.0.{i}/24 dev vde0"
        ))
        .unwrap();
        let u = UdpSocket::bind(&s, "0.0.0.0:53").unwrap();
        more.push((s, u));
    }
    let u = UdpSocket::bind(&client, "0.0.0.0:0").unwrap();
    let t = Instant::now();
    for i in 11..=18 {
        u.send_to(b"ping", format!("10.0.0.{i}:53")).unwrap();
    }
    for (_, s) in &more {
        assert!(
            readable(s, Duration::from_secs(4)),
            "a first datagram never arrived"
        );
    }
    let udp = t.elapsed();
    assert!(
        udp < Duration::from_secs(4),
        "first datagrams to 8 new peers took {udp:?}"
    );
}
