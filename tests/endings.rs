//! How connections end, side by side with Linux: each test runs one sequence of calls on
//! kernel TCP sockets over loopback and on two stacks on a `mem://` segment, writes down what
//! each call gave (bytes, errno, state), and asserts both transcripts are the same. The
//! hang tests bound every wait with a watchdog, so a hang fails instead of stalling.
//!
//! Deliberate differences are asserted as such, named (docs/reliability.md, "Endings").

use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::mpsc;
use std::sync::RwLock;
use std::time::Duration;

use vdestack::net::{TcpListener, TcpStream, UdpSocket};
use vdestack::{socket, Stack};

/// Fork tests hold this for writing while a child lives (the child holds a copy of every fd
/// until it closed them); the others hold it for reading, as they need a close seen at once.
static FORK: RwLock<()> = RwLock::new(());

fn no_fork() -> std::sync::RwLockReadGuard<'static, ()> {
    FORK.read().unwrap_or_else(|e| e.into_inner())
}

fn ms(n: u64) {
    std::thread::sleep(Duration::from_millis(n));
}

/// Errno names for transcripts.
fn name(e: &io::Error) -> String {
    match e.raw_os_error() {
        Some(libc::ECONNRESET) => "ECONNRESET".into(),
        Some(libc::EPIPE) => "EPIPE".into(),
        Some(libc::ENOTCONN) => "ENOTCONN".into(),
        Some(libc::EAGAIN) => "EAGAIN".into(),
        Some(libc::ENETDOWN) => "ENETDOWN".into(),
        Some(n) => format!("errno {n}"),
        None => format!("{e}"),
    }
}

fn shown(r: io::Result<usize>) -> String {
    match r {
        Ok(n) => n.to_string(),
        Err(e) => name(&e),
    }
}

/// Where a test runs: kernel sockets on loopback, or two stacks (client 10.0.0.1, server
/// 10.0.0.2) on a `mem://` segment of its own.
enum Net {
    Kernel,
    Stacks(Stack, Stack),
}

/// One end of a connection, on either.
enum End {
    K(std::net::TcpStream),
    S(TcpStream),
}

impl Net {
    fn stacks(name: &str) -> Net {
        let on = |host: u8| {
            let s = Stack::new(&format!("mem://endings-{name}"), None).expect("create stack");
            s.cmd(&format!(
                "ip link set vde0 up; ip addr add 10.0.0.{host}/24 dev vde0"
            ))
            .expect("configure stack");
            s
        };
        Net::Stacks(on(1), on(2))
    }

    /// A connection: (client end, server end), every blocking call on them bounded (5 s)
    /// so that a regression fails the test instead of hanging it.
    fn pair(&self) -> (End, End) {
        let (c, s) = self.pair_unbounded();
        bound_io(c.fd());
        bound_io(s.fd());
        (c, s)
    }

    fn pair_unbounded(&self) -> (End, End) {
        match self {
            Net::Kernel => {
                let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
                let c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
                let (s, _) = l.accept().unwrap();
                (End::K(c), End::K(s))
            }
            Net::Stacks(a, b) => {
                let l = TcpListener::bind(b, "10.0.0.2:0").unwrap();
                let at = l.local_addr().unwrap();
                let c = TcpStream::connect(a, at).unwrap();
                let (s, _) = l.accept().unwrap();
                (End::S(c), End::S(s))
            }
        }
    }
}

impl End {
    fn fd(&self) -> RawFd {
        match self {
            End::K(s) => s.as_raw_fd(),
            End::S(s) => s.as_raw_fd(),
        }
    }

    fn send(&self, b: &[u8]) -> String {
        shown(self.send_raw(b))
    }

    fn send_raw(&self, b: &[u8]) -> io::Result<usize> {
        match self {
            End::K(s) => (&*s).write(b),
            End::S(s) => (&*s).write(b),
        }
    }

    fn recv(&self) -> String {
        let mut buf = [0u8; 64];
        let r = match self {
            End::K(s) => (&*s).read(&mut buf),
            End::S(s) => (&*s).read(&mut buf),
        };
        match r {
            Ok(n) => format!("{:?}", String::from_utf8_lossy(&buf[..n])),
            Err(e) => name(&e),
        }
    }

    fn get(&self, level: i32, opt: i32) -> i32 {
        match self {
            End::K(s) => {
                let mut v = [0u8; 256];
                let mut len = v.len() as libc::socklen_t;
                // SAFETY: v has len writable bytes.
                let r = unsafe {
                    libc::getsockopt(
                        s.as_raw_fd(),
                        level,
                        opt,
                        v.as_mut_ptr() as *mut _,
                        &mut len,
                    )
                };
                assert_eq!(r, 0, "getsockopt: {}", io::Error::last_os_error());
                if opt == libc::TCP_INFO && level == libc::IPPROTO_TCP {
                    v[0] as i32 // tcpi_state
                } else {
                    i32::from_ne_bytes(v[..4].try_into().unwrap())
                }
            }
            End::S(s) => socket::get_opt(s.as_raw_fd(), level, opt).expect("getsockopt"),
        }
    }

    fn set(&self, level: i32, opt: i32, v: i32) {
        match self {
            End::K(s) => {
                // SAFETY: v is a valid int.
                let r = unsafe {
                    libc::setsockopt(s.as_raw_fd(), level, opt, &v as *const i32 as *const _, 4)
                };
                assert_eq!(r, 0, "setsockopt: {}", io::Error::last_os_error());
            }
            End::S(s) => socket::set_opt(s.as_raw_fd(), level, opt, v).expect("setsockopt"),
        }
    }

    fn so_error(&self) -> String {
        match self.get(libc::SOL_SOCKET, libc::SO_ERROR) {
            0 => "0".into(),
            e => name(&io::Error::from_raw_os_error(e)),
        }
    }

    fn state(&self) -> i32 {
        self.get(libc::IPPROTO_TCP, libc::TCP_INFO)
    }

    fn shutdown(&self, how: Shutdown) {
        match self {
            End::K(s) => s.shutdown(how).unwrap(),
            End::S(s) => s.shutdown(how).unwrap(),
        }
    }
}

/// Bounds blocking reads and writes on `fd` (kernel sockets and our pairs alike) to 5 s.
fn bound_io(fd: RawFd) {
    let tv = libc::timeval {
        tv_sec: 5,
        tv_usec: 0,
    };
    for opt in [libc::SO_RCVTIMEO, libc::SO_SNDTIMEO] {
        // SAFETY: a valid timeval of the size given.
        let r = unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                opt,
                &tv as *const _ as *const libc::c_void,
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            )
        };
        assert_eq!(r, 0, "SO_RCVTIMEO/SO_SNDTIMEO");
    }
}

/// Runs `f` on the kernel and on two stacks and asserts the transcripts match.
fn same(name: &str, f: impl Fn(&Net) -> Vec<String>) {
    let _g = no_fork();
    let kernel = f(&Net::Kernel);
    let ours = f(&Net::stacks(name));
    assert_eq!(
        ours, kernel,
        "{name}: stacks (left) and Linux (right) differ"
    );
}

/// Runs `f` in a thread and fails if it does not finish within `secs` (a hang).
fn watchdog<T: Send + 'static>(secs: u64, what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(Duration::from_secs(secs)) {
        Ok(v) => v,
        Err(mpsc::RecvTimeoutError::Timeout) => panic!("{what}: still blocked after {secs} s"),
        Err(mpsc::RecvTimeoutError::Disconnected) => panic!("{what}: failed (see above)"),
    }
}

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
const ENDINGS_PY: &str = r#"
import socket, errno, signal, struct, threading, time
signal.alarm(30)  # a hang ends the program (and fails the test), not the suite
def tryc(f):
    try: return f()
    except OSError as e: return errno.errorcode[e.errno]
def soerr(s): return s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
def state(s): return s.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)[0]
def pair():
    l = socket.socket(); l.bind(("127.0.0.1", 0)); l.listen()
    c = socket.create_connection(l.getsockname()); s, _ = l.accept(); l.close()
    return c, s
c, s = pair(); c.send(b"x" * 10); time.sleep(0.1); s.close(); time.sleep(0.1)
print("unread, send:", tryc(lambda: c.send(b"y")), tryc(lambda: c.send(b"y")), tryc(lambda: c.send(b"y")))
c, s = pair(); c.send(b"x" * 10); s.send(b"hi"); time.sleep(0.1); s.close(); time.sleep(0.1)
print("unread, recv:", tryc(lambda: c.recv(10)), tryc(lambda: c.recv(10)), tryc(lambda: c.recv(10)))
c, s = pair(); c.send(b"x" * 10); time.sleep(0.1); s.close(); time.sleep(0.1)
print("unread, SO_ERROR:", soerr(c), soerr(c), tryc(lambda: c.send(b"y")), state(c))
c, s = pair(); r = []
t = threading.Thread(target=lambda: r.append(tryc(lambda: c.sendall(b"z" * (64 << 20)))))
t.start(); time.sleep(0.3); s.close(); t.join(10)
print("blocked sendall:", r, tryc(lambda: c.send(b"y")))
c, s = pair(); r = []
t = threading.Thread(target=lambda: r.append(tryc(lambda: c.send(b"z" * (64 << 20)))))
t.start(); time.sleep(0.3); s.close(); t.join(10)
print("blocked send:", [type(x).__name__ for x in r], tryc(lambda: c.send(b"y")), tryc(lambda: c.send(b"y")))
c, s = pair(); s.close(); time.sleep(0.1)
a = [tryc(lambda: c.recv(1)), tryc(lambda: c.send(b"y"))]; time.sleep(0.1)
print("data after close:", a, tryc(lambda: c.send(b"y")), tryc(lambda: c.recv(1)), soerr(c), state(c))
c, s = pair()
print("TCP_LINGER2 default:", c.getsockopt(socket.IPPROTO_TCP, socket.TCP_LINGER2) == 60)
for wait in (0.3, 1.6):
    c, s = pair(); c.setsockopt(socket.IPPROTO_TCP, socket.TCP_LINGER2, 1); c.close(); time.sleep(wait)
    s.shutdown(socket.SHUT_WR); time.sleep(0.1)
    print("FIN-WAIT-2 after", wait, "s:", state(s), soerr(s), tryc(lambda: s.recv(1)), tryc(lambda: s.send(b"x")))
c, s = pair(); s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
print("SO_LINGER:", struct.unpack("ii", s.getsockopt(socket.SOL_SOCKET, socket.SO_LINGER, 8)))
s.close(); time.sleep(0.1)
print("abortive close:", tryc(lambda: c.recv(1)), tryc(lambda: c.recv(1)), soerr(c))
"#;

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
