//! Nothing waits for ever: keep-alive, the retransmission timeout (TCP_USER_TIMEOUT) and the
//! connection attempt (TCP_SYNCNT, TCP_USER_TIMEOUT) end a connection to a silent peer with
//! ETIMEDOUT, side by side with Linux; and deleting a stack wakes a blocked connect.
//!
//! Linux runs in a network namespace this test creates (tests/support/netns.rs), on its
//! loopback, where an nftables rule makes the peer silent (every TCP segment dropped). Our
//! side is two stacks on a `mem://` segment of their own; the server's link is set down
//! (it drops what arrives, as a down NIC). Each test writes a transcript of what each call
//! gave (and how long the wait lasted, in coarse steps) and asserts both are the same.

#[path = "support/netns.rs"]
mod netns;

use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use vdestack::internal::socket;
use vdestack::net::{TcpListener, TcpStream};
use vdestack::Stack;

fn name(e: &io::Error) -> String {
    match e.raw_os_error() {
        Some(libc::ETIMEDOUT) => "ETIMEDOUT".into(),
        Some(libc::EPIPE) => "EPIPE".into(),
        Some(libc::ECONNRESET) => "ECONNRESET".into(),
        Some(libc::EINVAL) => "EINVAL".into(),
        Some(libc::ENETDOWN) => "ENETDOWN".into(),
        Some(n) => format!("errno {n}"),
        None => format!("{e}"),
    }
}

fn shown<T: std::fmt::Debug>(r: io::Result<T>) -> String {
    match r {
        Ok(v) => format!("{v:?}"),
        Err(e) => name(&e),
    }
}

/// Whether a wait lasted `secs` (what the settings ask for) up to 1.5 s more, for a
/// transcript: a loaded machine is late, never early, and Linux itself starts some of
/// its timeouts one retransmission late. The time is printed for docs/reliability.md.
fn took(since: Instant, secs: f64) -> String {
    let t = since.elapsed().as_secs_f64();
    eprintln!("waited {t:.3} s (setting: {secs} s)");
    if (secs..secs + 1.5).contains(&t) {
        format!("{secs} s to {} s", secs + 1.5)
    } else {
        format!("{t:.3} s")
    }
}

/// Runs `f` in a thread and fails if it does not finish within `secs`.
fn watchdog<T: Send + 'static>(secs: u64, what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(Duration::from_secs(secs))
        .unwrap_or_else(|_| panic!("{what}: still blocked after {secs} s"))
}

/// One end of a connection: a kernel socket or one of a stack.
enum End {
    K(std::net::TcpStream),
    S(TcpStream),
}

impl End {
    fn set(&self, level: i32, opt: i32, v: i32) -> String {
        let r = match self {
            End::K(s) => {
                // SAFETY: v is a valid int of the size given.
                let r = unsafe {
                    libc::setsockopt(s.as_raw_fd(), level, opt, &v as *const i32 as *const _, 4)
                };
                if r == 0 {
                    Ok(())
                } else {
                    Err(io::Error::last_os_error())
                }
            }
            End::S(s) => socket::set_opt(s.as_raw_fd(), level, opt, v),
        };
        shown(r)
    }

    fn get(&self, level: i32, opt: i32) -> String {
        let r = match self {
            End::K(s) => vdestack::internal::sys::getsockopt_int(s.as_raw_fd(), level, opt),
            End::S(s) => socket::get_opt(s.as_raw_fd(), level, opt),
        };
        shown(r)
    }

    /// The state tcp_info gives (1 ESTABLISHED, 7 CLOSE).
    fn state(&self) -> String {
        match self {
            End::K(s) => {
                let mut v = [0u8; 256];
                let mut len = v.len() as libc::socklen_t;
                // SAFETY: v has len writable bytes.
                let r = unsafe {
                    libc::getsockopt(
                        s.as_raw_fd(),
                        libc::IPPROTO_TCP,
                        libc::TCP_INFO,
                        v.as_mut_ptr() as *mut _,
                        &mut len,
                    )
                };
                assert_eq!(r, 0);
                v[0].to_string()
            }
            End::S(_) => self.get(libc::IPPROTO_TCP, libc::TCP_INFO),
        }
    }

    fn send(&self, b: &[u8]) -> String {
        shown(match self {
            End::K(s) => (&*s).write(b),
            End::S(s) => (&*s).write(b),
        })
    }

    fn recv(&self) -> String {
        let mut buf = [0u8; 64];
        shown(match self {
            End::K(s) => (&*s).read(&mut buf),
            End::S(s) => (&*s).read(&mut buf),
        })
    }
}

/// Where a test runs: Linux in a namespace of its own, or two stacks on `mem://`.
enum Net {
    Kernel(netns::NetNs),
    Stacks(Stack, Stack),
}

impl Net {
    fn kernel() -> Net {
        Net::Kernel(netns::NetNs::new())
    }

    fn stacks(name: &str) -> Net {
        let on = |host: u8| {
            let s = Stack::new(&format!("mem://timeouts-{name}"), None).expect("create stack");
            s.cmd(&format!(
                "ip link set vde0 up; ip addr add 10.0.0.{host}/24 dev vde0"
            ))
            .expect("configure stack");
            s
        };
        Net::Stacks(on(1), on(2))
    }

    /// Runs `f` where kernel sockets are made in the test's namespace.
    fn inside<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let Net::Kernel(ns) = self else {
            return f();
        };
        let path = format!("/run/netns/{}", ns.name());
        std::thread::scope(|sc| {
            sc.spawn(|| {
                let file = std::fs::File::open(&path).expect("open the namespace");
                // SAFETY: setns on this thread only, with an fd of a network namespace.
                let r = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
                assert_eq!(r, 0, "setns: {}", io::Error::last_os_error());
                f()
            })
            .join()
            .expect("thread in the namespace")
        })
    }

    /// A listener's address and a connected pair (client, server).
    fn pair(&self) -> (End, End) {
        match self {
            Net::Kernel(_) => self.inside(|| {
                let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
                let c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
                let (s, _) = l.accept().unwrap();
                (End::K(c), End::K(s))
            }),
            Net::Stacks(a, b) => {
                let l = TcpListener::bind(b, "10.0.0.2:0").unwrap();
                let c = TcpStream::connect(a, l.local_addr().unwrap()).unwrap();
                let (s, _) = l.accept().unwrap();
                (End::S(c), End::S(s))
            }
        }
    }

    /// A socket not yet connected, on the client's side.
    fn socket(&self) -> End {
        match self {
            Net::Kernel(_) => self.inside(|| {
                // A std TcpStream cannot be made unconnected: use a raw socket.
                // SAFETY: socket(2); the fd is owned by the TcpStream from here.
                let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0) };
                assert!(fd >= 0);
                // SAFETY: fd is a fresh socket nobody else owns.
                End::K(unsafe { std::os::fd::FromRawFd::from_raw_fd(fd) })
            }),
            Net::Stacks(a, _) => {
                let fd = a.socket(libc::AF_INET, libc::SOCK_STREAM, 0).unwrap();
                End::S(TcpStream::from(fd))
            }
        }
    }

    /// The peer's address for `connect_silent` (nothing listens, nothing answers).
    fn silent_addr(&self) -> std::net::SocketAddr {
        match self {
            Net::Kernel(_) => "127.0.0.1:9".parse().unwrap(),
            Net::Stacks(..) => "10.0.0.2:9".parse().unwrap(),
        }
    }

    /// From now on the server's side answers nothing: every TCP segment in the namespace
    /// is dropped; the server stack's link is down.
    fn silence(&self) {
        match self {
            Net::Kernel(ns) => {
                let out = ns
                    .command(&[
                        "nft",
                        "add table inet vdst; add chain inet vdst in { type filter hook input \
                         priority 0; policy accept; }; add rule inet vdst in meta l4proto tcp \
                         drop",
                    ])
                    .output()
                    .unwrap_or_else(|e| panic!("nft: {e}: install the Debian package nftables"));
                assert!(
                    out.status.success(),
                    "nft: {} (install the Debian package nftables)",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            Net::Stacks(_, b) => b.cmd("ip link set vde0 down").expect("link down"),
        }
    }
}

/// Runs `f` on Linux and on stacks and asserts the transcripts match.
fn same(name: &str, f: impl Fn(&Net) -> Vec<String>) {
    let kernel = f(&Net::kernel());
    let ours = f(&Net::stacks(name));
    assert_eq!(
        ours, kernel,
        "{name}: stacks (left) and Linux (right) differ"
    );
}

/// connect(2) on `e` to `to`, as the kernel or the library does it.
fn connect(e: &End, to: std::net::SocketAddr) -> io::Result<()> {
    match e {
        End::K(s) => {
            let std::net::SocketAddr::V4(v4) = to else {
                panic!("IPv4 only here")
            };
            let sa = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: v4.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from(*v4.ip()).to_be(),
                },
                sin_zero: [0; 8],
            };
            let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
            // SAFETY: a valid sockaddr_in of len bytes.
            let r = unsafe { libc::connect(s.as_raw_fd(), &sa as *const _ as *const _, len) };
            if r == 0 {
                Ok(())
            } else {
                Err(io::Error::last_os_error())
            }
        }
        End::S(s) => socket::connect(s.as_raw_fd(), to),
    }
}

// ---------------------------------------------------------------------------------------

/// The options' defaults (Linux's sysctls), the values set read back, and the values Linux
/// refuses (EINVAL).
#[test]
fn keep_alive_and_user_timeout_options_read_and_set_as_on_linux() {
    same("opts", |net| {
        let (c, _s) = net.pair();
        let tcp = libc::IPPROTO_TCP;
        let opts = [
            libc::TCP_KEEPIDLE,
            libc::TCP_KEEPINTVL,
            libc::TCP_KEEPCNT,
            libc::TCP_USER_TIMEOUT,
        ];
        let mut t: Vec<String> = opts.iter().map(|&o| c.get(tcp, o)).collect();
        t.push(c.get(libc::SOL_SOCKET, libc::SO_KEEPALIVE));
        for (o, v) in [
            (libc::TCP_KEEPIDLE, 30),
            (libc::TCP_KEEPINTVL, 5),
            (libc::TCP_KEEPCNT, 3),
            (libc::TCP_USER_TIMEOUT, 2500),
            (libc::TCP_KEEPIDLE, 0),
            (libc::TCP_KEEPIDLE, 32768),
            (libc::TCP_KEEPINTVL, 0),
            (libc::TCP_KEEPCNT, 128),
            (libc::TCP_KEEPCNT, 0),
            (libc::TCP_USER_TIMEOUT, -1),
        ] {
            t.push(format!("set {o} {v}: {}", c.set(tcp, o, v)));
        }
        t.extend(opts.iter().map(|&o| c.get(tcp, o)));
        t.push(c.set(libc::SOL_SOCKET, libc::SO_KEEPALIVE, 1));
        t.push(c.get(libc::SOL_SOCKET, libc::SO_KEEPALIVE));
        t
    });
}

/// A peer that goes silent while we wait for the ACK of our data: the connection ends after
/// TCP_USER_TIMEOUT with ETIMEDOUT for the blocked reader, then EOF, EPIPE, state CLOSE.
/// (Without TCP_USER_TIMEOUT, Linux's tcp_retries2 gives about 924.6 s: checked in the unit
/// test of `engine::timeouts` and smoltcp's `tcp/test/limits.rs`.)
#[test]
fn a_silent_peer_ends_the_connection_after_tcp_user_timeout() {
    same("user-timeout", |net| {
        let (c, s) = net.pair();
        let mut t = vec![c.set(libc::IPPROTO_TCP, libc::TCP_USER_TIMEOUT, 1500)];
        t.push(s.send(b"hello"));
        t.push(c.recv());
        net.silence();
        let start = Instant::now();
        t.push(c.send(b"x"));
        let c = watchdog(30, "a reader of a silent peer", move || {
            let r = c.recv();
            (c, r)
        });
        let (c, r) = c;
        t.extend([r, took(start, 1.5)]);
        t.extend([c.so_error(), c.recv(), c.send(b"y"), c.state()]);
        drop(s);
        t
    });
}

/// Keep-alive with TCP_KEEPIDLE 1 s, TCP_KEEPINTVL 1 s, TCP_KEEPCNT 2: a live peer answers
/// the probes and the connection lives; a silent one does not, and after 2 unanswered probes
/// the connection ends with ETIMEDOUT (about 3 s after it went idle).
#[test]
fn keep_alive_ends_a_connection_to_a_silent_peer() {
    same("keepalive", |net| {
        let (c, s) = net.pair();
        let tcp = libc::IPPROTO_TCP;
        let mut t = vec![
            c.set(tcp, libc::TCP_KEEPIDLE, 1),
            c.set(tcp, libc::TCP_KEEPINTVL, 1),
            c.set(tcp, libc::TCP_KEEPCNT, 2),
            c.set(libc::SOL_SOCKET, libc::SO_KEEPALIVE, 1),
        ];
        std::thread::sleep(Duration::from_millis(4500));
        t.extend([c.state(), s.send(b"alive"), c.recv()]);
        net.silence();
        let start = Instant::now();
        let c = watchdog(30, "a reader of a silent peer with keep-alive", move || {
            let r = c.recv();
            (c, r)
        });
        let (c, r) = c;
        // Probes 1 s and 2 s after the connection went idle, given up at 3 s.
        t.extend([r, took(start, 3.0), c.recv(), c.state()]);
        drop(s);
        t
    });
}

/// A blocking connect to an address that never answers: ETIMEDOUT after Linux's SYN retry
/// schedule (TCP_SYNCNT 1: SYN, one retry 1 s later, given up 2 s after it), or after
/// TCP_USER_TIMEOUT when it is set.
#[test]
fn a_blocking_connect_to_a_silent_address_times_out() {
    same("connect", |net| {
        // A first connection, so that the stacks know each other's MACs: the SYNs below go
        // out and meet silence, as on Linux's loopback.
        let (_c, _s) = net.pair();
        net.silence();
        let mut t = Vec::new();
        for (opt, v, secs) in [
            (libc::TCP_SYNCNT, 1, 3.0),
            (libc::TCP_USER_TIMEOUT, 1500, 1.5),
        ] {
            let e = net.socket();
            t.push(e.set(libc::IPPROTO_TCP, opt, v));
            let to = net.silent_addr();
            let start = Instant::now();
            let r = watchdog(30, "a connect to a silent address", move || {
                let r = connect(&e, to);
                (e, r)
            });
            let (e, r) = r;
            t.extend([shown(r), took(start, secs), e.so_error()]);
        }
        t
    });
}

/// Deleting a stack wakes a thread blocked in connect on it (there is no Linux call to
/// compare with: a network that goes away). Reads and accepts are in tests/endings.rs.
#[test]
fn deleting_a_stack_wakes_a_blocked_connect() {
    let Net::Stacks(a, b) = Net::stacks("delete") else {
        unreachable!()
    };
    // The peer is silent, so the connect waits (for 127 s).
    let l = TcpListener::bind(&b, "10.0.0.2:80").unwrap();
    let c = TcpStream::connect(&a, "10.0.0.2:80").unwrap();
    drop((c, l));
    b.cmd("ip link set vde0 down").unwrap();
    let fd = a.socket(libc::AF_INET, libc::SOCK_STREAM, 0).unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let r = socket::connect(fd.as_raw_fd(), "10.0.0.2:81".parse().unwrap());
        let _ = tx.send(shown(r));
    });
    std::thread::sleep(Duration::from_millis(300));
    assert!(rx.try_recv().is_err(), "the connect did not wait");
    let start = Instant::now();
    drop(a);
    let r = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("a connect on a deleted stack still blocked after 10 s");
    assert_eq!(r, "ENETDOWN");
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
}

impl End {
    fn so_error(&self) -> String {
        match self.get(libc::SOL_SOCKET, libc::SO_ERROR).as_str() {
            "0" => "0".into(),
            e => match e.parse::<i32>() {
                Ok(n) => name(&io::Error::from_raw_os_error(n)),
                Err(_) => e.to_string(),
            },
        }
    }
}
