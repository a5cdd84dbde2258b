//! How connections end, side by side with Linux: each test runs one sequence of calls on
//! kernel TCP sockets over loopback and on two stacks on a `mem://` segment, writes down what
//! each call gave (bytes, errno, state), and asserts both transcripts are the same. The
//! hang tests bound every wait with a watchdog, so a hang fails instead of stalling.
//!
//! The calls compared here show no difference; the deliberate ones (read(2)/write(2), which
//! the library does not see, and a few more) are listed in docs/reliability.md, "Endings".

#[path = "support/twin.rs"]
mod twin;

use std::io::{self, Read};
use std::net::Shutdown;
use std::sync::mpsc;
use std::time::Duration;

use twin::*;
use vdestack::net::{TcpListener, TcpStream, UdpSocket};

// ---------------------------------------------------------------------------------------
// Close with unread data: RST
// ---------------------------------------------------------------------------------------

/// The receiver closes with data unread: its side sends an RST, and the sender's next send
/// fails with ECONNRESET, the ones after with EPIPE.
#[test]
fn close_with_unread_data_resets_and_the_sender_gets_econnreset_then_epipe() {
    same("unread-send", |net| {
        let (c, s) = net.pair();
        let mut t = vec![c.send(b"0123456789")];
        ms(100);
        drop(s); // never read
        ms(100);
        t.extend([c.send(b"y"), c.send(b"y"), c.send(b"y")]);
        t
    });
}

/// After that reset a reader gets what came before it, then ECONNRESET once, then EOF.
#[test]
fn a_reader_gets_the_data_then_econnreset_then_eof() {
    same("unread-recv", |net| {
        let (c, s) = net.pair();
        let mut t = vec![c.send(b"0123456789"), s.send(b"hi")];
        ms(100);
        drop(s);
        ms(100);
        t.extend([c.recv(), c.recv(), c.recv()]);
        t
    });
}

/// SO_ERROR says ECONNRESET once; the next send is EPIPE.
#[test]
fn so_error_after_a_reset_is_econnreset_once() {
    same("unread-soerror", |net| {
        let (c, s) = net.pair();
        let mut t = vec![c.send(b"0123456789")];
        ms(100);
        drop(s);
        ms(100);
        t.extend([
            c.so_error(),
            c.so_error(),
            c.send(b"y"),
            c.state().to_string(),
        ]);
        t
    });
}

/// The well-known hang: a thread blocked in send() of a large buffer to a receiver that
/// reads nothing and closes. It returns at once (with what it sent), then ECONNRESET, then
/// EPIPE.
#[test]
fn a_blocked_sender_returns_when_the_receiver_closes_with_data_unread() {
    same("blocked-send", |net| {
        let (c, s) = net.pair();
        let c = std::sync::Arc::new(c);
        let writer = c.clone();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let r = writer.send_raw(&vec![7u8; 64 << 20]);
            let _ = tx.send(r);
        });
        ms(300);
        drop(s);
        let first = match rx.recv_timeout(Duration::from_secs(10)) {
            Ok(Ok(n)) if n > 0 && n < 64 << 20 => "part of it".to_string(),
            Ok(r) => shown(r),
            Err(_) => panic!("the blocked send did not return within 10 s of the close"),
        };
        vec![first, c.send(b"y"), c.send(b"y")]
    });
}

/// Data for a socket whose application closed is answered with an RST: the writer (whose
/// peer sent FIN first) gets EPIPE, as Linux's reset in CLOSE-WAIT.
#[test]
fn data_for_a_closed_socket_is_reset() {
    same("data-after-close", |net| {
        let (c, s) = net.pair();
        drop(s);
        ms(100);
        let mut t = vec![c.recv(), c.send(b"x")];
        ms(100);
        t.extend([
            c.send(b"x"),
            c.send(b"x"),
            c.recv(),
            c.recv(),
            c.so_error(),
            c.state().to_string(),
        ]);
        t
    });
}

/// Closing with nothing unread is a FIN: the peer reads EOF, SO_ERROR stays 0.
#[test]
fn close_with_nothing_unread_is_a_fin() {
    same("plain-close", |net| {
        let (c, s) = net.pair();
        let mut t = vec![s.send(b"bye")];
        drop(s);
        ms(100);
        t.extend([c.recv(), c.recv(), c.so_error()]);
        t
    });
}

// ---------------------------------------------------------------------------------------
// FIN-WAIT-2 timeout (TCP_LINGER2)
// ---------------------------------------------------------------------------------------

/// TCP_LINGER2 reads as on Linux: the FIN timeout by default (60 s; the kernel's comes from
/// net.ipv4.tcp_fin_timeout), -1 for a negative value, at most 120.
#[test]
fn tcp_linger2_reads_and_sets_as_on_linux() {
    let _g = no_fork();
    let sysctl: i32 = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_fin_timeout")
        .expect("read net.ipv4.tcp_fin_timeout")
        .trim()
        .parse()
        .unwrap();
    let seq = |net: &Net| {
        let (c, _s) = net.pair();
        let mut t = vec![c.get(libc::IPPROTO_TCP, libc::TCP_LINGER2)];
        for v in [0, -5, 500, 7] {
            c.set(libc::IPPROTO_TCP, libc::TCP_LINGER2, v);
            t.push(c.get(libc::IPPROTO_TCP, libc::TCP_LINGER2));
        }
        t
    };
    let kernel = seq(&Net::Kernel);
    let ours = seq(&Net::stacks("linger2-opt"));
    assert_eq!(ours[0], 60, "our default FIN timeout");
    assert_eq!(kernel[0], sysctl, "the kernel's default is its sysctl");
    let norm = |v: &[i32]| {
        v.iter()
            .map(|&x| if x == sysctl { 60 } else { x })
            .collect::<Vec<_>>()
    };
    assert_eq!(norm(&ours), norm(&kernel), "TCP_LINGER2 set and read back");
    assert_eq!(ours, vec![60, 60, -1, 120, 7]);
}

/// An orphan in FIN-WAIT-2 waits TCP_LINGER2 for the peer's FIN: a FIN before that closes
/// cleanly; after it, the orphan is gone and the peer's FIN gets an RST (ECONNRESET).
#[test]
fn an_orphan_in_fin_wait_2_times_out_after_tcp_linger2() {
    same("fin-wait-2", |net| {
        let mut t = Vec::new();
        for wait in [300, 1600] {
            let (c, s) = net.pair();
            c.set(libc::IPPROTO_TCP, libc::TCP_LINGER2, 1);
            drop(c);
            ms(wait);
            s.shutdown(Shutdown::Write);
            ms(100);
            t.extend([
                format!("after {wait} ms"),
                s.state().to_string(),
                s.so_error(),
                s.recv(),
                s.send(b"x"),
            ]);
        }
        t
    });
}

/// Data for an orphan in FIN-WAIT-2, before or after its timeout, is reset; the writer
/// (past the orphan's FIN) gets EPIPE.
#[test]
fn data_for_an_orphan_in_fin_wait_2_is_reset() {
    same("fin-wait-2-data", |net| {
        let mut t = Vec::new();
        for wait in [300, 1600] {
            let (c, s) = net.pair();
            c.set(libc::IPPROTO_TCP, libc::TCP_LINGER2, 1);
            drop(c);
            ms(wait);
            t.extend([s.state().to_string(), s.send(b"x")]);
            ms(100);
            t.extend([s.state().to_string(), s.so_error(), s.recv(), s.send(b"x")]);
        }
        t
    });
}

/// A negative TCP_LINGER2: an orphan reaching FIN-WAIT-2 is reset at once.
#[test]
fn a_negative_tcp_linger2_resets_in_fin_wait_2() {
    same("linger2-negative", |net| {
        let (c, s) = net.pair();
        c.set(libc::IPPROTO_TCP, libc::TCP_LINGER2, -1);
        drop(c);
        ms(200);
        vec![s.state().to_string(), s.so_error(), s.recv()]
    });
}

/// shutdown(SHUT_WR) is no orphan: FIN-WAIT-2 lasts past TCP_LINGER2, and data still comes.
#[test]
fn a_half_closed_socket_waits_in_fin_wait_2_past_tcp_linger2() {
    same("half-close", |net| {
        let (c, s) = net.pair();
        c.set(libc::IPPROTO_TCP, libc::TCP_LINGER2, 1);
        c.shutdown(Shutdown::Write);
        ms(1600);
        let mut t = vec![c.state().to_string(), s.send(b"x")];
        ms(100);
        t.push(c.recv());
        t
    });
}

// ---------------------------------------------------------------------------------------
// A killed process
// ---------------------------------------------------------------------------------------

/// The process holding one end is killed (SIGKILL): its peer sees the connection end as
/// after close(): EOF if nothing was unread, a reset if something was.
#[test]
fn the_peer_of_a_killed_process_sees_the_connection_end() {
    let _g = FORK.write().unwrap_or_else(|e| e.into_inner());
    let seq = |net: &Net| {
        let mut t = Vec::new();
        for unread in [false, true] {
            let (c, s) = net.pair();
            if unread {
                s.send(b"never read");
                ms(100);
            }
            let pid = hold_in_child(c);
            ms(100);
            // SAFETY: kills and reaps our own child.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, std::ptr::null_mut(), 0);
            }
            ms(200);
            t.extend([s.recv(), s.so_error()]);
        }
        t
    };
    let kernel = seq(&Net::Kernel);
    let ours = seq(&Net::stacks("killed"));
    assert_eq!(ours, kernel, "stacks (left) and Linux (right) differ");
}

/// Forks a child that keeps `end` (and nothing else) open until killed; the parent's copy
/// is closed.
fn hold_in_child(end: End) -> libc::pid_t {
    let keep = end.fd();
    // SAFETY: the child runs only close_range, pause and _exit.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork: {}", io::Error::last_os_error());
    if pid == 0 {
        // SAFETY: closes every fd but `keep` in the child, then waits to be killed.
        unsafe {
            if keep > 3 {
                libc::syscall(libc::SYS_close_range, 3, keep - 1, 0);
            }
            libc::syscall(libc::SYS_close_range, keep + 1, u32::MAX, 0);
            loop {
                libc::pause();
            }
        }
    }
    drop(end);
    pid
}

// ---------------------------------------------------------------------------------------
// A deleted stack
// ---------------------------------------------------------------------------------------

/// Deleting a stack while the application holds its fds: blocked calls return, later ones
/// too. TCP reads EOF and accept fails; UDP, whose socketpair passes on no EOF, fails with
/// ENETDOWN (the engine's last, empty datagram), again and again, never blocking.
#[test]
fn a_deleted_stacks_fds_never_block() {
    let _g = no_fork();
    let Net::Stacks(a, b) = Net::stacks("deleted") else {
        unreachable!()
    };
    let l = TcpListener::bind(&a, "10.0.0.1:80").unwrap();
    let peer_l = TcpListener::bind(&b, "10.0.0.2:80").unwrap();
    let c = TcpStream::connect(&a, "10.0.0.2:80").unwrap();
    let (_s, _) = peer_l.accept().unwrap();
    let u = UdpSocket::bind(&a, "0.0.0.0:53").unwrap();
    let uc = UdpSocket::bind(&a, "0.0.0.0:54").unwrap();
    uc.connect("10.0.0.2:53").unwrap();
    let (c, l, u, uc) = (
        std::sync::Arc::new(c),
        std::sync::Arc::new(l),
        std::sync::Arc::new(u),
        std::sync::Arc::new(uc),
    );
    let (tx, rx) = mpsc::channel::<(&str, String)>();
    let call = |what: &'static str, f: Box<dyn FnOnce() -> String + Send>| {
        let tx = tx.clone();
        std::thread::spawn(move || {
            let _ = tx.send((what, f()));
        });
    };
    let c2 = c.clone();
    call(
        "tcp read",
        Box::new(move || shown((&*c2).read(&mut [0u8; 8]))),
    );
    let l2 = l.clone();
    call("accept", Box::new(move || shown(l2.accept().map(|_| 0))));
    let u2 = u.clone();
    call(
        "udp recv_from",
        Box::new(move || shown(u2.recv_from(&mut [0u8; 8]).map(|r| r.0))),
    );
    let uc2 = uc.clone();
    call(
        "connected udp recv",
        Box::new(move || shown(uc2.recv(&mut [0u8; 8]))),
    );
    ms(200);
    drop(a);
    let mut got: Vec<_> = (0..4)
        .map(|_| {
            rx.recv_timeout(Duration::from_secs(10))
                .expect("a call on a deleted stack's fd still blocked after 10 s")
        })
        .collect();
    got.sort();
    assert_eq!(
        got,
        vec![
            ("accept", "errno 22".to_string()),
            ("connected udp recv", "ENETDOWN".to_string()),
            ("tcp read", "0".to_string()),
            ("udp recv_from", "ENETDOWN".to_string()),
        ]
    );
    // And again, at once.
    let again = watchdog(10, "a second call on a deleted stack's fd", move || {
        [
            shown((&*c).read(&mut [0u8; 8])),
            shown(u.recv_from(&mut [0u8; 8]).map(|r| r.0)),
            shown(uc.recv(&mut [0u8; 8])),
            shown(l.accept().map(|_| 0)),
        ]
    });
    assert_eq!(again, ["0", "ENETDOWN", "ENETDOWN", "errno 22"]);
}

/// A reset socket still answers its application until it closes it, as a kernel socket in
/// CLOSE does: getpeername ENOTCONN, getsockname its address, shutdown ENOTCONN.
#[test]
fn a_reset_socket_still_answers_its_application() {
    let _g = no_fork();
    let seq = |net: &Net| {
        let (c, s) = net.pair();
        c.send(b"0123456789");
        ms(100);
        drop(s);
        ms(100);
        let (peer, local, shut) = match &c {
            End::K(k) => (
                k.peer_addr().map(|_| 0),
                k.local_addr().map(|a| a.port() as usize),
                k.shutdown(Shutdown::Both).map(|_| 0),
            ),
            End::S(k) => (
                k.peer_addr().map(|_| 0),
                k.local_addr().map(|a| a.port() as usize),
                k.shutdown(Shutdown::Both).map(|_| 0),
            ),
        };
        [
            shown(peer),
            shown(local.map(|p| (p != 0) as usize)),
            shown(shut),
        ]
    };
    let kernel = seq(&Net::Kernel);
    let ours = seq(&Net::stacks("reset-answers"));
    assert_eq!(ours, kernel, "stacks (left) and Linux (right) differ");
}

// ---------------------------------------------------------------------------------------
// A real program, through the C library
// ---------------------------------------------------------------------------------------

#[path = "support/programs.rs"]
mod programs;

/// The endings above as a Python program sees them (send, sendall, recv, SO_ERROR,
/// TCP_LINGER2), on 127.0.0.1: run on the kernel and under `vdestack run`, line by line
/// the same. This is the path of the hang first seen: a runtime's socket tests under
/// `vdestack run`, a thread blocked in send() to a receiver that closed with data unread.
const ENDINGS_PY: &str = include_str!("support/endings.py");

/// Runs ENDINGS_PY with `cmd` (a prefix: `env` or `vdestack run --`); its output.
fn run_endings_py(mut cmd: std::process::Command) -> String {
    let out = cmd
        .arg(programs::python3())
        .arg("-c")
        .arg(ENDINGS_PY)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run python3");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "python3 failed: {}\n{text}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

#[test]
fn a_python_program_sees_the_same_endings_under_vdestack_run() {
    let kernel = watchdog(60, "python3 on the kernel", || {
        let mut c = std::process::Command::new("env");
        programs::clean_env(&mut c);
        run_endings_py(c)
    });
    let ours = watchdog(60, "python3 under vdestack run", || {
        run_endings_py(programs::run_cmd(None, &[]))
    });
    assert_eq!(
        ours, kernel,
        "under vdestack run (left) and on Linux (right)"
    );
    assert_eq!(ours.lines().count(), 11, "every case ran:\n{ours}");
}
