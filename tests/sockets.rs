//! Socket behaviours, through the public API: each test is named after the behaviour it
//! checks, and compares it with what a Linux socket does. Every test uses its own `mem://`
//! segment (or a loopback-only stack), so tests running in parallel never hear each other.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::RwLock;
use std::time::{Duration, Instant};

use vdestack::internal::socket;
use vdestack::net::{TcpListener, TcpStream, UdpSocket};
use vdestack::Stack;

/// Fork tests hold this for writing while a child lives: a child holds copies of every fd
/// of the process, so a test that needs a close() to be seen at once holds it for reading.
static FORK: RwLock<()> = RwLock::new(());

fn errno(e: &io::Error) -> i32 {
    e.raw_os_error().unwrap_or(-1)
}

/// Asserts that `r` failed with `want`.
#[track_caller]
fn assert_errno<T: std::fmt::Debug>(r: io::Result<T>, want: i32, what: &str) {
    match r {
        Ok(v) => panic!("{what}: succeeded ({v:?}), expected errno {want}"),
        Err(e) => assert_eq!(errno(&e), want, "{what}: got {e}, expected errno {want}"),
    }
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// A stack on `mem://sockets-NAME` with 10.0.0.N/24 on vde0.
fn stack_on(name: &str, host: u8) -> Stack {
    let s = Stack::new(&format!("mem://sockets-{name}"), None).expect("create stack");
    s.cmd(&format!(
        "ip link set vde0 up; ip addr add 10.0.0.{host}/24 dev vde0"
    ))
    .expect("configure stack");
    s
}

/// Two stacks on one segment: 10.0.0.1 and 10.0.0.2.
fn two_stacks(name: &str) -> (Stack, Stack) {
    (stack_on(name, 1), stack_on(name, 2))
}

/// Bounds every blocking read/write on the fd (a kernel option on our end of the pair), so
/// that a bug fails the test instead of hanging it.
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
        assert_eq!(r, 0, "SO_RCVTIMEO/SO_SNDTIMEO on a stack fd");
    }
}

fn connect(stack: &Stack, to: &str) -> TcpStream {
    let c = TcpStream::connect(stack, to).unwrap_or_else(|e| panic!("connect {to}: {e}"));
    bound_io(c.as_raw_fd());
    c
}

fn listen(stack: &Stack, at: &str) -> TcpListener {
    let l = TcpListener::bind(stack, at).unwrap_or_else(|e| panic!("listen {at}: {e}"));
    bound_io(l.as_raw_fd());
    l
}

fn accept(l: &TcpListener) -> (TcpStream, SocketAddr) {
    let (c, peer) = l.accept().expect("accept");
    bound_io(c.as_raw_fd());
    (c, peer)
}

fn read_to_end(mut s: &TcpStream) -> Vec<u8> {
    let mut v = Vec::new();
    s.read_to_end(&mut v).expect("read to EOF");
    v
}

/// poll(2) on one fd; the returned events.
fn poll(fd: RawFd, events: i16, ms: i32) -> i16 {
    let mut p = libc::pollfd {
        fd,
        events,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    let r = unsafe { libc::poll(&mut p, 1, ms) };
    assert!(r >= 0, "poll: {}", io::Error::last_os_error());
    p.revents
}

fn tcp_socket(stack: &Stack, domain: i32, nonblocking: bool) -> OwnedFd {
    let ty = libc::SOCK_STREAM | if nonblocking { libc::SOCK_NONBLOCK } else { 0 };
    stack.socket(domain, ty, 0).expect("socket")
}

fn get_opt(fd: &impl AsRawFd, level: i32, name: i32) -> i32 {
    socket::get_opt(fd.as_raw_fd(), level, name)
        .unwrap_or_else(|e| panic!("getsockopt({level}, {name}): {e}"))
}

/// One byte of the test stream at offset `i`: a loss, duplication or reordering of any
/// length shows as a mismatch.
fn pattern(i: u64) -> u8 {
    ((i as u32).wrapping_mul(2_654_435_761) >> 24) as u8 ^ (i >> 32) as u8
}

// ---------------------------------------------------------------------------------------
// Connection refused, connect in progress, timeouts
// ---------------------------------------------------------------------------------------

#[test]
fn connect_to_a_closed_port_on_loopback_is_refused() {
    let s = Stack::new("", None).unwrap();
    assert_errno(
        TcpStream::connect(&s, "127.0.0.1:9"),
        libc::ECONNREFUSED,
        "connect 127.0.0.1:9",
    );
    assert_errno(
        TcpStream::connect(&s, "[::1]:9"),
        libc::ECONNREFUSED,
        "connect [::1]:9",
    );
}

#[test]
fn connect_to_a_closed_port_of_another_stack_is_refused() {
    let (a, b) = two_stacks("refused-across");
    assert_errno(
        TcpStream::connect(&a, "10.0.0.2:9"),
        libc::ECONNREFUSED,
        "connect 10.0.0.2:9",
    );
    // A refused socket can try again, and the stack still connects elsewhere.
    let l = listen(&b, "0.0.0.0:10");
    let c = connect(&a, "10.0.0.2:10");
    let (s, peer) = accept(&l);
    assert_eq!(peer, c.local_addr().unwrap());
    drop(s);
}

#[test]
fn nonblocking_connect_is_in_progress_then_so_error_is_zero() {
    let (a, b) = two_stacks("nb-connect");
    let l = listen(&b, "0.0.0.0:80");
    let fd = tcp_socket(&a, libc::AF_INET, true);
    assert_errno(
        socket::connect(fd.as_raw_fd(), addr("10.0.0.2:80")),
        libc::EINPROGRESS,
        "nonblocking connect",
    );
    // Again while it may still be under way: EALREADY, or EISCONN once it is up.
    match socket::connect(fd.as_raw_fd(), addr("10.0.0.2:80")) {
        Ok(()) => panic!("second connect succeeded; Linux says EALREADY or EISCONN"),
        Err(e) => assert!(
            [libc::EALREADY, libc::EISCONN].contains(&errno(&e)),
            "second connect: {e}"
        ),
    }
    let ev = poll(fd.as_raw_fd(), libc::POLLOUT, 5000);
    assert!(ev & libc::POLLOUT != 0, "POLLOUT after connect: {ev:#x}");
    // POLLOUT means the outcome is known, so SO_ERROR 0 means established.
    assert_eq!(get_opt(&fd, libc::SOL_SOCKET, libc::SO_ERROR), 0);
    assert_errno(
        socket::connect(fd.as_raw_fd(), addr("10.0.0.2:80")),
        libc::EISCONN,
        "connect once connected",
    );
    let c = TcpStream::from(fd);
    assert_eq!(c.peer_addr().unwrap(), addr("10.0.0.2:80"));
    c.set_nonblocking(false).unwrap();
    bound_io(c.as_raw_fd());
    (&c).write_all(b"up").unwrap();
    let (mut s, peer) = accept(&l);
    assert_eq!(peer, c.local_addr().unwrap());
    let mut buf = [0u8; 2];
    s.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"up");
}

#[test]
fn second_connect_while_the_handshake_is_pending_is_ealready() {
    // Nobody has 10.0.0.99: the handshake stays pending.
    let a = stack_on("ealready", 1);
    let fd = tcp_socket(&a, libc::AF_INET, true);
    assert_errno(
        socket::connect(fd.as_raw_fd(), addr("10.0.0.99:80")),
        libc::EINPROGRESS,
        "nonblocking connect",
    );
    assert_errno(
        socket::connect(fd.as_raw_fd(), addr("10.0.0.99:80")),
        libc::EALREADY,
        "second connect",
    );
    assert_errno(
        socket::peer_addr(fd.as_raw_fd()),
        libc::ENOTCONN,
        "getpeername while connecting",
    );
}

#[test]
fn nonblocking_connect_to_a_closed_port_reports_econnrefused_in_so_error() {
    let (a, _b) = two_stacks("nb-refused");
    let fd = tcp_socket(&a, libc::AF_INET, true);
    assert_errno(
        socket::connect(fd.as_raw_fd(), addr("10.0.0.2:9")),
        libc::EINPROGRESS,
        "nonblocking connect",
    );
    let ev = poll(fd.as_raw_fd(), libc::POLLOUT, 5000);
    assert!(
        ev & libc::POLLOUT != 0,
        "POLLOUT after a refused connect: {ev:#x}"
    );
    assert_eq!(
        get_opt(&fd, libc::SOL_SOCKET, libc::SO_ERROR),
        libc::ECONNREFUSED
    );
    // SO_ERROR is taken by reading it.
    assert_eq!(get_opt(&fd, libc::SOL_SOCKET, libc::SO_ERROR), 0);
    // As on Linux, a failed socket reads EOF.
    assert_eq!(sys_read(fd.as_raw_fd(), &mut [0u8; 8]), 0);

    // The same on loopback; there, as Linux does, a second connect() reports the failure.
    let lo = Stack::new("", None).unwrap();
    let fd = tcp_socket(&lo, libc::AF_INET, true);
    assert_errno(
        socket::connect(fd.as_raw_fd(), addr("127.0.0.1:9")),
        libc::EINPROGRESS,
        "nonblocking connect on loopback",
    );
    let ev = poll(fd.as_raw_fd(), libc::POLLOUT, 5000);
    assert!(
        ev & libc::POLLOUT != 0,
        "POLLOUT after a refused connect: {ev:#x}"
    );
    assert_errno(
        socket::connect(fd.as_raw_fd(), addr("127.0.0.1:9")),
        libc::ECONNREFUSED,
        "connect again after the refusal",
    );
    assert_eq!(get_opt(&fd, libc::SOL_SOCKET, libc::SO_ERROR), 0);
}

/// Sets TCP_SYNCNT 1 and starts a nonblocking connect to `to`.
fn start_connect(stack: &Stack, to: &str) -> OwnedFd {
    let fd = tcp_socket(stack, libc::AF_INET, true);
    socket::set_opt(fd.as_raw_fd(), libc::IPPROTO_TCP, libc::TCP_SYNCNT, 1).unwrap();
    assert_errno(
        socket::connect(fd.as_raw_fd(), addr(to)),
        libc::EINPROGRESS,
        "nonblocking connect",
    );
    fd
}

#[test]
fn a_nonblocking_connect_polls_writable_only_once_it_timed_out() {
    // Nobody has 10.0.0.77: no ARP answer, and with TCP_SYNCNT 1 the attempt ends in 3 s.
    let a = stack_on("nb-etimedout", 1);
    let t = Instant::now();
    let fd = start_connect(&a, "10.0.0.77:80");
    assert_eq!(
        poll(fd.as_raw_fd(), libc::POLLOUT, 200),
        0,
        "POLLOUT while the handshake is pending"
    );
    // SO_ERROR does not wait: 0 while in progress.
    let q = Instant::now();
    assert_eq!(get_opt(&fd, libc::SOL_SOCKET, libc::SO_ERROR), 0);
    assert!(q.elapsed() < Duration::from_millis(500), "SO_ERROR blocked");
    assert_errno(
        socket::connect(fd.as_raw_fd(), addr("10.0.0.77:80")),
        libc::EALREADY,
        "connect again while pending",
    );
    let ev = poll(fd.as_raw_fd(), libc::POLLOUT, 10_000);
    let took = t.elapsed();
    assert!(
        ev & libc::POLLOUT != 0,
        "no POLLOUT after the timeout: {ev:#x}"
    );
    assert!(
        took >= Duration::from_millis(2500),
        "POLLOUT after {took:?}, before the 3 s SYN timeout"
    );
    assert_eq!(
        get_opt(&fd, libc::SOL_SOCKET, libc::SO_ERROR),
        libc::ETIMEDOUT
    );
    assert_eq!(get_opt(&fd, libc::SOL_SOCKET, libc::SO_ERROR), 0);
    // Like a kernel socket whose connect failed: readable, at EOF.
    assert!(poll(fd.as_raw_fd(), libc::POLLIN, 0) & libc::POLLIN != 0);
    assert_eq!(sys_read(fd.as_raw_fd(), &mut [0u8; 8]), 0);
}

/// Writes as much of the test pattern, from offset `*at`, as the nonblocking fd takes.
fn write_pattern_nonblocking(fd: RawFd, at: &mut u64, upto: u64) {
    while *at < upto {
        let chunk: Vec<u8> = (*at..upto.min(*at + 8192)).map(pattern).collect();
        let n = sys_write(fd, &chunk);
        if n < 0 {
            let e = io::Error::last_os_error();
            assert_eq!(errno(&e), libc::EAGAIN, "write: {e}");
            return;
        }
        *at += n as u64;
    }
}

#[test]
fn a_nonblocking_connect_to_a_late_peer_polls_writable_when_up_and_keeps_early_bytes() {
    // 10.0.0.2 does not exist yet: the handshake waits for its ARP answer.
    let a = stack_on("nb-late", 1);
    let fd = start_connect(&a, "10.0.0.2:80");
    socket::set_opt(fd.as_raw_fd(), libc::IPPROTO_TCP, libc::TCP_SYNCNT, 6).unwrap();
    // SAFETY: plain epoll calls on valid fds; ev outlives them.
    let ep = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    assert!(ep >= 0);
    let mut ev = libc::epoll_event {
        events: (libc::EPOLLOUT | libc::EPOLLET) as u32,
        u64: 7,
    };
    // SAFETY: as above.
    assert_eq!(
        unsafe { libc::epoll_ctl(ep, libc::EPOLL_CTL_ADD, fd.as_raw_fd(), &mut ev) },
        0
    );
    let epoll_wait = |ms: i32| -> Vec<u32> {
        let mut evs = [libc::epoll_event { events: 0, u64: 0 }; 4];
        // SAFETY: evs has room for 4 events.
        let n = unsafe { libc::epoll_wait(ep, evs.as_mut_ptr(), 4, ms) };
        assert!(n >= 0, "epoll_wait: {}", io::Error::last_os_error());
        evs[..n as usize].iter().map(|e| e.events).collect()
    };
    assert_eq!(poll(fd.as_raw_fd(), libc::POLLOUT, 200), 0, "POLLOUT early");
    assert_eq!(epoll_wait(0), Vec::<u32>::new(), "EPOLLOUT early");
    // The pair takes some bytes before the connection is up: they must go out first, intact.
    let mut sent = 0u64;
    write_pattern_nonblocking(fd.as_raw_fd(), &mut sent, 100_000);
    assert!(sent > 0, "the pair took nothing before POLLOUT");
    assert_eq!(
        poll(fd.as_raw_fd(), libc::POLLOUT, 0),
        0,
        "POLLOUT after early bytes"
    );

    let b = stack_on("nb-late", 2);
    let l = listen(&b, "0.0.0.0:80");
    let evs = epoll_wait(10_000);
    assert_eq!(
        evs.len(),
        1,
        "an edge-triggered event once connected: {evs:x?}"
    );
    assert!(
        evs[0] & libc::EPOLLOUT as u32 != 0,
        "EPOLLOUT: {:#x}",
        evs[0]
    );
    assert!(poll(fd.as_raw_fd(), libc::POLLOUT, 0) & libc::POLLOUT != 0);
    assert_eq!(get_opt(&fd, libc::SOL_SOCKET, libc::SO_ERROR), 0);
    // SAFETY: closing the epoll fd we made.
    unsafe { libc::close(ep) };

    let total = 600_000u64;
    let c = TcpStream::from(fd);
    c.set_nonblocking(false).unwrap();
    bound_io(c.as_raw_fd());
    let (s, _) = accept(&l);
    let writer = std::thread::spawn(move || {
        let rest: Vec<u8> = (sent..total).map(pattern).collect();
        (&c).write_all(&rest).unwrap();
        c.shutdown(Shutdown::Write).unwrap();
        c
    });
    let got = read_to_end(&s);
    let _c = writer.join().unwrap();
    assert_eq!(got.len() as u64, total, "bytes received");
    if let Some(i) = (0..total).find(|&i| got[i as usize] != pattern(i)) {
        panic!("byte {i} differs (early bytes: {sent})");
    }
}

#[test]
fn connect_to_an_absent_host_times_out_after_tcp_syncnt_retries() {
    let a = stack_on("etimedout", 1);
    let fd = tcp_socket(&a, libc::AF_INET, false);
    socket::set_opt(fd.as_raw_fd(), libc::IPPROTO_TCP, libc::TCP_SYNCNT, 1).unwrap();
    assert_eq!(get_opt(&fd, libc::IPPROTO_TCP, libc::TCP_SYNCNT), 1);
    let t = Instant::now();
    // TCP_SYNCNT 1: Linux gives up after 1 + 2 seconds.
    assert_errno(
        socket::connect(fd.as_raw_fd(), addr("10.0.0.77:80")),
        libc::ETIMEDOUT,
        "connect to an absent host",
    );
    let took = t.elapsed();
    assert!(
        took >= Duration::from_millis(2500) && took < Duration::from_millis(4500),
        "timed out after {took:?}, expected about 3 s"
    );
}

// ---------------------------------------------------------------------------------------
// Data path: half-close, backpressure, the kernel's own calls on the fd
// ---------------------------------------------------------------------------------------

#[test]
fn half_close_gives_eof_to_the_server_which_can_still_reply() {
    let (a, b) = two_stacks("half-close");
    let l = listen(&b, "0.0.0.0:80");
    let c = connect(&a, "10.0.0.2:80");
    let (s, _) = accept(&l);
    (&c).write_all(b"request").unwrap();
    c.shutdown(Shutdown::Write).unwrap();
    assert_eq!(
        read_to_end(&s),
        b"request",
        "server reads the request, then EOF"
    );
    (&s).write_all(b"reply").unwrap();
    (&s).write_all(b" and more").unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    assert_eq!(
        read_to_end(&c),
        b"reply and more",
        "client reads the reply, then EOF"
    );
    // EOF stays EOF on both sides.
    let mut buf = [0u8; 8];
    assert_eq!((&c).read(&mut buf).unwrap(), 0);
    assert_eq!((&s).read(&mut buf).unwrap(), 0);
}

#[test]
fn a_writer_to_a_paused_reader_gets_eagain_and_nothing_is_lost() {
    let (a, b) = two_stacks("backpressure");
    let l = listen(&b, "0.0.0.0:80");
    let c = connect(&a, "10.0.0.2:80");
    let (s, _) = accept(&l);
    c.set_nonblocking(true).unwrap();
    let mut chunk = vec![0u8; 64 * 1024];
    let mut written: u64 = 0;
    let mut eagains = 0;
    // Write until the connection takes nothing more for a while: the reader never reads.
    loop {
        for (k, b) in chunk.iter_mut().enumerate() {
            *b = pattern(written + k as u64);
        }
        match (&c).write(&chunk) {
            Ok(n) => {
                assert!(n > 0);
                written += n as u64;
                assert!(
                    written < 64 << 20,
                    "{written} bytes taken by a connection whose reader does not read"
                );
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                eagains += 1;
                if poll(c.as_raw_fd(), libc::POLLOUT, 300) == 0 {
                    break; // stuck: the window is closed and every buffer full
                }
            }
            Err(e) => panic!("write: {e}"),
        }
    }
    assert!(eagains > 0, "the writer never got EAGAIN");
    assert!(written > 0);
    c.set_nonblocking(false).unwrap();
    c.shutdown(Shutdown::Write).unwrap();
    // The reader now takes everything, in order.
    let mut got: u64 = 0;
    let mut buf = vec![0u8; 128 * 1024];
    loop {
        let n = (&s).read(&mut buf).expect("read");
        if n == 0 {
            break;
        }
        for (k, b) in buf[..n].iter().enumerate() {
            let at = got + k as u64;
            assert_eq!(*b, pattern(at), "byte {at} of {written} is wrong");
        }
        got += n as u64;
    }
    assert_eq!(got, written, "bytes read vs written");
}

#[test]
fn msg_peek_msg_waitall_and_fionread_work_on_a_connected_fd() {
    let (a, b) = two_stacks("peek");
    let l = listen(&b, "0.0.0.0:80");
    let c = connect(&a, "10.0.0.2:80");
    let (s, _) = accept(&l);
    let fd = c.as_raw_fd();
    (&s).write_all(b"hello world").unwrap();
    // FIONREAD: wait until all 11 bytes are in.
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut avail: libc::c_int = 0;
    loop {
        // SAFETY: FIONREAD writes one int.
        assert_eq!(unsafe { libc::ioctl(fd, libc::FIONREAD, &mut avail) }, 0);
        if avail == 11 || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(avail, 11, "FIONREAD");
    let mut buf = [0u8; 32];
    // SAFETY: buf is valid for its length.
    let n = unsafe { libc::recv(fd, buf.as_mut_ptr() as *mut _, 5, libc::MSG_PEEK) };
    assert_eq!(n, 5);
    assert_eq!(&buf[..5], b"hello");
    // SAFETY: FIONREAD writes one int.
    assert_eq!(unsafe { libc::ioctl(fd, libc::FIONREAD, &mut avail) }, 0);
    assert_eq!(avail, 11, "MSG_PEEK left the data in place");
    let n = (&c).read(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"hello world");

    // MSG_WAITALL waits for the whole buffer across separate segments.
    let writer = std::thread::spawn(move || {
        (&s).write_all(b"abc").unwrap();
        std::thread::sleep(Duration::from_millis(150));
        (&s).write_all(b"defgh").unwrap();
        s
    });
    // SAFETY: buf is valid for its length.
    let n = unsafe { libc::recv(fd, buf.as_mut_ptr() as *mut _, 8, libc::MSG_WAITALL) };
    assert_eq!(n, 8, "MSG_WAITALL: {}", io::Error::last_os_error());
    assert_eq!(&buf[..8], b"abcdefgh");
    drop(writer.join().unwrap());
}

// ---------------------------------------------------------------------------------------
// Ports and addresses
// ---------------------------------------------------------------------------------------

#[test]
fn a_second_bind_to_a_port_in_use_is_eaddrinuse_until_the_first_closes() {
    let s = stack_on("addrinuse", 1);
    let first = listen(&s, "0.0.0.0:8080");
    assert_errno(
        TcpListener::bind(&s, "0.0.0.0:8080"),
        libc::EADDRINUSE,
        "second listener on 0.0.0.0:8080",
    );
    assert_errno(
        TcpListener::bind(&s, "10.0.0.1:8080"),
        libc::EADDRINUSE,
        "listener on 10.0.0.1:8080 beside 0.0.0.0:8080",
    );
    assert_errno(
        TcpListener::bind(&s, "[::]:8080"),
        libc::EADDRINUSE,
        "dual-stack listener on [::]:8080 beside 0.0.0.0:8080",
    );
    // UDP has its own port space.
    UdpSocket::bind(&s, "0.0.0.0:8080").expect("UDP on the port a TCP listener holds");
    {
        let _no_fork = FORK.read().unwrap_or_else(|e| e.into_inner());
        drop(first);
        let again = listen(&s, "0.0.0.0:8080");
        let c = connect(&s, "10.0.0.1:8080");
        let (_, peer) = accept(&again);
        assert_eq!(peer, c.local_addr().unwrap());
    }
}

#[test]
fn loopback_and_own_address_reach_the_stacks_own_listener() {
    let s = stack_on("own-address", 1);
    let l4 = listen(&s, "0.0.0.0:80");
    let l6 = listen(&s, "[::]:81");
    for (l, to) in [
        (&l4, "127.0.0.1:80"),
        (&l4, "10.0.0.1:80"),
        (&l6, "[::1]:81"),
    ] {
        let c = connect(&s, to);
        assert_eq!(c.peer_addr().unwrap(), addr(to));
        let (srv, peer) = accept(l);
        assert_eq!(
            peer,
            c.local_addr().unwrap(),
            "peer seen by the listener ({to})"
        );
        assert_eq!(
            srv.local_addr().unwrap(),
            addr(to),
            "server's local address ({to})"
        );
        (&c).write_all(to.as_bytes()).unwrap();
        c.shutdown(Shutdown::Write).unwrap();
        assert_eq!(read_to_end(&srv), to.as_bytes());
    }
}

#[test]
fn the_same_port_in_two_stacks_is_two_different_listeners() {
    let (a, b) = two_stacks("same-port");
    let la = listen(&a, "0.0.0.0:80");
    let lb = listen(&b, "0.0.0.0:80");
    la.set_nonblocking(true).unwrap();
    lb.set_nonblocking(true).unwrap();
    for (from, to, mine, other) in [(&a, "10.0.0.2:80", &lb, &la), (&b, "10.0.0.1:80", &la, &lb)] {
        let c = connect(from, to);
        (&c).write_all(b"x").unwrap();
        assert!(poll(mine.as_raw_fd(), libc::POLLIN, 3000) & libc::POLLIN != 0);
        let (srv, peer) = mine.accept().expect("accept on the stack that was called");
        assert_eq!(peer, c.local_addr().unwrap());
        assert_eq!(srv.local_addr().unwrap(), addr(to));
        assert_errno(other.accept(), libc::EAGAIN, "accept on the other stack");
    }
}

#[test]
fn binding_another_stacks_address_is_eaddrnotavail() {
    let (a, _b) = two_stacks("addrnotavail");
    assert_errno(
        TcpListener::bind(&a, "10.0.0.2:80"),
        libc::EADDRNOTAVAIL,
        "TCP bind to the other stack's address",
    );
    assert_errno(
        UdpSocket::bind(&a, "10.0.0.2:53"),
        libc::EADDRNOTAVAIL,
        "UDP bind to the other stack's address",
    );
    listen(&a, "10.0.0.1:80");
}

#[test]
fn a_loopback_only_stack_cannot_reach_another_stacks_loopback_listener() {
    let x = Stack::new("", None).unwrap();
    let y = Stack::new("", None).unwrap();
    let ly = listen(&y, "127.0.0.1:80");
    assert_errno(
        TcpStream::connect(&x, "127.0.0.1:80"),
        libc::ECONNREFUSED,
        "connect to 127.0.0.1:80 from another stack",
    );
    // y itself reaches it.
    let c = connect(&y, "127.0.0.1:80");
    assert_eq!(accept(&ly).1, c.local_addr().unwrap());
}

#[test]
fn binding_port_zero_picks_an_ephemeral_port() {
    let s = stack_on("ephemeral", 1);
    let l = listen(&s, "10.0.0.1:0");
    let la = l.local_addr().unwrap();
    assert_eq!(la.ip(), addr("10.0.0.1:0").ip());
    assert_ne!(la.port(), 0, "listener on port 0");
    let u = UdpSocket::bind(&s, "0.0.0.0:0").unwrap();
    assert_ne!(u.local_addr().unwrap().port(), 0, "UDP on port 0");
    // A connecting socket gets one too, and that is what the peer sees.
    let c = connect(&s, &la.to_string());
    let cl = c.local_addr().unwrap();
    assert_ne!(cl.port(), 0);
    assert_ne!(cl.port(), la.port());
    assert_eq!(accept(&l).1, cl);
    // A listener that never bound listens on an ephemeral port.
    let fd = tcp_socket(&s, libc::AF_INET, false);
    socket::listen(fd.as_raw_fd(), 4).unwrap();
    assert_ne!(socket::local_addr(fd.as_raw_fd()).unwrap().port(), 0);
}

#[test]
fn accept_returns_the_peer_address_and_both_ends_agree_on_names() {
    let (a, b) = two_stacks("names");
    let l = listen(&b, "0.0.0.0:4242");
    let c = connect(&a, "10.0.0.2:4242");
    let (s, peer) = accept(&l);
    let cl = c.local_addr().unwrap();
    assert_eq!(cl.ip(), addr("10.0.0.1:0").ip());
    assert_eq!(peer, cl, "accept's address is the client's getsockname");
    assert_eq!(s.peer_addr().unwrap(), cl, "server getpeername");
    assert_eq!(
        s.local_addr().unwrap(),
        addr("10.0.0.2:4242"),
        "server getsockname"
    );
    assert_eq!(
        c.peer_addr().unwrap(),
        addr("10.0.0.2:4242"),
        "client getpeername"
    );
    assert_eq!(
        l.local_addr().unwrap(),
        addr("0.0.0.0:4242"),
        "listener getsockname"
    );
    assert_errno(
        socket::peer_addr(l.as_raw_fd()),
        libc::ENOTCONN,
        "getpeername on a listener",
    );
    let fresh = tcp_socket(&a, libc::AF_INET6, false);
    assert_eq!(
        socket::local_addr(fresh.as_raw_fd()).unwrap(),
        addr("[::]:0"),
        "getsockname of a fresh AF_INET6 socket"
    );
}

// ---------------------------------------------------------------------------------------
// IPv6 and dual stack
// ---------------------------------------------------------------------------------------

#[test]
fn a_v6_listener_on_any_accepts_an_ipv4_client_seen_as_v4_mapped() {
    let (a, b) = two_stacks("dual-stack");
    let l = listen(&b, "[::]:80");
    let c = connect(&a, "10.0.0.2:80");
    let (s, peer) = accept(&l);
    let cl = c.local_addr().unwrap();
    let mapped = |a: SocketAddr| match a {
        SocketAddr::V4(v4) => SocketAddr::new(v4.ip().to_ipv6_mapped().into(), v4.port()),
        v6 => v6,
    };
    assert_eq!(peer, mapped(cl), "peer as ::ffff:a.b.c.d");
    assert!(peer.is_ipv6());
    assert_eq!(s.local_addr().unwrap(), addr("[::ffff:10.0.0.2]:80"));
    (&c).write_all(b"v4").unwrap();
    let mut buf = [0u8; 2];
    (&s).read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"v4");
}

#[test]
fn a_v6only_listener_refuses_an_ipv4_connect() {
    let (a, b) = two_stacks("v6only");
    let fd = tcp_socket(&b, libc::AF_INET6, false);
    socket::set_opt(fd.as_raw_fd(), libc::IPPROTO_IPV6, libc::IPV6_V6ONLY, 1).unwrap();
    assert_eq!(get_opt(&fd, libc::IPPROTO_IPV6, libc::IPV6_V6ONLY), 1);
    socket::bind(fd.as_raw_fd(), addr("[::]:80")).unwrap();
    socket::listen(fd.as_raw_fd(), 8).unwrap();
    assert_errno(
        TcpStream::connect(&a, "10.0.0.2:80"),
        libc::ECONNREFUSED,
        "IPv4 connect to a V6ONLY listener",
    );
    // An IPv4 listener may share the port: IPv4 goes to it, IPv6 to the V6ONLY one.
    let l4 = listen(&b, "0.0.0.0:80");
    for _ in 0..40 {
        let c = connect(&a, "10.0.0.2:80");
        assert_eq!(accept(&l4).1, c.local_addr().unwrap());
        let c = connect(&b, "127.0.0.1:80");
        assert_eq!(accept(&l4).1, c.local_addr().unwrap());
    }
    let l6 = TcpListener::from(fd);
    bound_io(l6.as_raw_fd());
    let c = connect(&b, "[::1]:80");
    assert_eq!(accept(&l6).1, c.local_addr().unwrap());
}

#[test]
fn an_ipv4_listener_refuses_an_ipv6_connect() {
    // As `localhost` clients expect: ::1 refused, so they fall back to 127.0.0.1.
    let s = Stack::new("", None).unwrap();
    let l = listen(&s, "0.0.0.0:80");
    assert_errno(
        TcpStream::connect(&s, "[::1]:80"),
        libc::ECONNREFUSED,
        "IPv6 connect to an AF_INET listener",
    );
    let c = connect(&s, "127.0.0.1:80");
    assert_eq!(accept(&l).1, c.local_addr().unwrap());
}

// ---------------------------------------------------------------------------------------
// UDP
// ---------------------------------------------------------------------------------------

fn recv_with_timeout(u: &UdpSocket, buf: &mut [u8]) -> (usize, SocketAddr) {
    assert!(
        poll(u.as_raw_fd(), libc::POLLIN, 3000) & libc::POLLIN != 0,
        "no datagram came"
    );
    u.recv_from(buf).expect("recv_from")
}

#[test]
fn udp_keeps_datagram_boundaries_and_tells_each_sender() {
    let (a, b) = two_stacks("udp-senders");
    let srv = UdpSocket::bind(&b, "0.0.0.0:5000").unwrap();
    let s1 = UdpSocket::bind(&a, "0.0.0.0:0").unwrap();
    let s2 = UdpSocket::bind(&a, "10.0.0.1:6000").unwrap();
    let big = vec![0xabu8; 1400];
    let sends: [(&UdpSocket, &[u8]); 5] = [
        (&s1, b"one"),
        (&s1, &big),
        (&s2, b"two"),
        (&s1, b"x"),
        (&s2, &[]),
    ];
    for (s, d) in sends {
        assert_eq!(s.send_to(d, "10.0.0.2:5000").unwrap(), d.len());
    }
    let a1 = SocketAddr::new(addr("10.0.0.1:0").ip(), s1.local_addr().unwrap().port());
    let a2 = addr("10.0.0.1:6000");
    let mut from1 = Vec::new();
    let mut from2 = Vec::new();
    let mut buf = [0u8; 2048];
    for _ in 0..sends.len() {
        let (n, from) = recv_with_timeout(&srv, &mut buf);
        if from == a1 {
            from1.push(buf[..n].to_vec());
        } else if from == a2 {
            from2.push(buf[..n].to_vec());
        } else {
            panic!("datagram from {from}, expected {a1} or {a2}");
        }
    }
    assert_eq!(from1, vec![b"one".to_vec(), big.clone(), b"x".to_vec()]);
    assert_eq!(from2, vec![b"two".to_vec(), Vec::new()]);
    // Replies go back to each sender.
    srv.send_to(b"to-1", a1).unwrap();
    srv.send_to(b"to-2", a2).unwrap();
    let (n, from) = recv_with_timeout(&s1, &mut buf);
    assert_eq!((&buf[..n], from), (&b"to-1"[..], addr("10.0.0.2:5000")));
    let (n, from) = recv_with_timeout(&s2, &mut buf);
    assert_eq!((&buf[..n], from), (&b"to-2"[..], addr("10.0.0.2:5000")));
}

#[test]
fn a_connected_udp_socket_ignores_datagrams_from_other_peers() {
    let (a, b) = two_stacks("udp-connected");
    let srv = UdpSocket::bind(&b, "0.0.0.0:5000").unwrap();
    let friend = UdpSocket::bind(&a, "0.0.0.0:7001").unwrap();
    let stranger = UdpSocket::bind(&a, "0.0.0.0:7002").unwrap();
    srv.connect("10.0.0.1:7001").unwrap();
    assert_eq!(srv.peer_addr().unwrap(), addr("10.0.0.1:7001"));
    stranger.send_to(b"stranger", "10.0.0.2:5000").unwrap();
    std::thread::sleep(Duration::from_millis(50));
    friend.send_to(b"friend", "10.0.0.2:5000").unwrap();
    let mut buf = [0u8; 64];
    assert!(poll(srv.as_raw_fd(), libc::POLLIN, 3000) & libc::POLLIN != 0);
    let n = srv.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"friend");
    std::thread::sleep(Duration::from_millis(100));
    srv.set_nonblocking(true).unwrap();
    assert_errno(
        srv.recv(&mut buf),
        libc::EAGAIN,
        "recv of the stranger's datagram",
    );
    // send() goes to the connected peer.
    srv.send(b"back").unwrap();
    let (n, from) = recv_with_timeout(&friend, &mut buf);
    assert_eq!((&buf[..n], from), (&b"back"[..], addr("10.0.0.2:5000")));
}

// ---------------------------------------------------------------------------------------
// Options
// ---------------------------------------------------------------------------------------

#[test]
fn so_type_so_domain_so_protocol_and_so_error_answer() {
    let s = Stack::new("", None).unwrap();
    for (domain, ty, proto) in [
        (libc::AF_INET, libc::SOCK_STREAM, libc::IPPROTO_TCP),
        (libc::AF_INET6, libc::SOCK_STREAM, libc::IPPROTO_TCP),
        (libc::AF_INET, libc::SOCK_DGRAM, libc::IPPROTO_UDP),
        (libc::AF_INET6, libc::SOCK_DGRAM, libc::IPPROTO_UDP),
    ] {
        let fd = s.socket(domain, ty | libc::SOCK_CLOEXEC, 0).unwrap();
        assert_eq!(get_opt(&fd, libc::SOL_SOCKET, libc::SO_TYPE), ty);
        assert_eq!(get_opt(&fd, libc::SOL_SOCKET, libc::SO_DOMAIN), domain);
        assert_eq!(get_opt(&fd, libc::SOL_SOCKET, libc::SO_PROTOCOL), proto);
        assert_eq!(get_opt(&fd, libc::SOL_SOCKET, libc::SO_ERROR), 0);
        assert_errno(
            socket::set_opt(fd.as_raw_fd(), libc::SOL_SOCKET, libc::SO_TYPE, 1),
            libc::ENOPROTOOPT,
            "setting SO_TYPE",
        );
    }
    let l = listen(&s, "127.0.0.1:0");
    assert_eq!(get_opt(&l, libc::SOL_SOCKET, libc::SO_ACCEPTCONN), 1);
    let u = UdpSocket::bind(&s, "127.0.0.1:0").unwrap();
    assert_errno(
        socket::get_opt(u.as_raw_fd(), libc::IPPROTO_TCP, libc::TCP_NODELAY),
        libc::ENOPROTOOPT,
        "TCP_NODELAY on UDP",
    );
    assert_errno(
        s.socket(libc::AF_UNIX, libc::SOCK_STREAM, 0),
        libc::EAFNOSUPPORT,
        "AF_UNIX in a stack",
    );
}

#[test]
fn tcp_nodelay_can_be_set_and_read_back() {
    let s = Stack::new("", None).unwrap();
    let l = listen(&s, "127.0.0.1:80");
    let fd = tcp_socket(&s, libc::AF_INET, false);
    assert_eq!(get_opt(&fd, libc::IPPROTO_TCP, libc::TCP_NODELAY), 0);
    socket::set_opt(fd.as_raw_fd(), libc::IPPROTO_TCP, libc::TCP_NODELAY, 1).unwrap();
    assert_eq!(get_opt(&fd, libc::IPPROTO_TCP, libc::TCP_NODELAY), 1);
    socket::connect(fd.as_raw_fd(), addr("127.0.0.1:80")).unwrap();
    let c = TcpStream::from(fd);
    assert!(c.nodelay().unwrap(), "kept across connect");
    c.set_nodelay(false).unwrap();
    assert!(!c.nodelay().unwrap());
    c.set_nodelay(true).unwrap();
    assert!(c.nodelay().unwrap());
    let (srv, _) = accept(&l);
    assert!(!srv.nodelay().unwrap());
    srv.set_nodelay(true).unwrap();
    assert!(srv.nodelay().unwrap());
}

#[test]
fn so_rcvbuf_and_so_sndbuf_can_be_set_and_small_buffers_still_carry_data() {
    let s = Stack::new("", None).unwrap();
    let fd = tcp_socket(&s, libc::AF_INET, false);
    let (r0, s0) = (
        get_opt(&fd, libc::SOL_SOCKET, libc::SO_RCVBUF),
        get_opt(&fd, libc::SOL_SOCKET, libc::SO_SNDBUF),
    );
    assert!(r0 > 0 && s0 > 0);
    for opt in [libc::SO_RCVBUF, libc::SO_SNDBUF] {
        socket::set_opt(fd.as_raw_fd(), libc::SOL_SOCKET, opt, 8192).unwrap();
        let v = get_opt(&fd, libc::SOL_SOCKET, opt);
        assert!(
            (8192..=2 * 8192).contains(&v),
            "option {opt} set to 8192 reads {v}"
        );
    }
    let l = listen(&s, "127.0.0.1:80");
    socket::connect(fd.as_raw_fd(), addr("127.0.0.1:80")).unwrap();
    let c = TcpStream::from(fd);
    bound_io(c.as_raw_fd());
    let (srv, _) = accept(&l);
    let data: Vec<u8> = (0..300_000u64).map(pattern).collect();
    let d2 = data.clone();
    let w = std::thread::spawn(move || {
        (&c).write_all(&d2).unwrap();
        c.shutdown(Shutdown::Write).unwrap();
    });
    assert!(
        read_to_end(&srv) == data,
        "data through 8 KiB buffers differs"
    );
    w.join().unwrap();
}

// ---------------------------------------------------------------------------------------
// fork
// ---------------------------------------------------------------------------------------

/// Forks; the child closes every fd but `keep` (its copies must not keep other tests'
/// sockets open) and exits with what `child` returns. Returns the child's wait status
/// after `parent` ran, killing the child if it has not ended within 5 s.
fn fork_and_run(keep: &[RawFd], child: impl FnOnce() -> i32, parent: impl FnOnce()) -> i32 {
    let _guard = FORK.write().unwrap_or_else(|e| e.into_inner());
    // SAFETY: the child runs only fd calls and _exit; it never returns into the harness.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork: {}", io::Error::last_os_error());
    if pid == 0 {
        close_all_but(keep);
        let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(child)).unwrap_or(99);
        // SAFETY: ends the child without running the harness's exit path.
        unsafe { libc::_exit(code) };
    }
    parent();
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut status = 0;
    loop {
        // SAFETY: waits for our own child.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if r == pid {
            return status;
        }
        assert_eq!(r, 0, "waitpid: {}", io::Error::last_os_error());
        if Instant::now() > deadline {
            // SAFETY: kills and reaps our own child.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, &mut status, 0);
            }
            panic!("the child did not finish in 5 s");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Closes every fd from 3 up except `keep`.
fn close_all_but(keep: &[RawFd]) {
    let mut keep: Vec<u32> = keep.iter().map(|&k| k as u32).collect();
    keep.sort_unstable();
    let mut lo = 3u32;
    for hi in keep.into_iter().chain([u32::MAX]) {
        if hi > lo {
            let last = if hi == u32::MAX { hi } else { hi - 1 };
            // SAFETY: closes fds that nothing in the child uses again.
            unsafe { libc::syscall(libc::SYS_close_range, lo, last, 0) };
        }
        lo = lo.max(hi.saturating_add(1));
    }
}

#[track_caller]
fn assert_exit_0(status: i32) {
    assert!(
        libc::WIFEXITED(status),
        "child ended by signal, status {status:#x}"
    );
    assert_eq!(
        libc::WEXITSTATUS(status),
        0,
        "child failed at step {}",
        libc::WEXITSTATUS(status)
    );
}

#[test]
fn a_forked_child_uses_an_inherited_connected_fd() {
    let (a, b) = two_stacks("fork-conn");
    let l = listen(&b, "0.0.0.0:80");
    let c = connect(&a, "10.0.0.2:80");
    let (s, _) = accept(&l);
    let fd = c.as_raw_fd();
    let status = fork_and_run(
        &[fd],
        || {
            // Steps numbered so that the parent can say which one failed.
            if sys_write(fd, b"ping") != 4 {
                return 1;
            }
            let mut buf = [0u8; 4];
            let mut got = 0;
            while got < 4 {
                let n = sys_read(fd, &mut buf[got..]);
                if n <= 0 {
                    return 2;
                }
                got += n as usize;
            }
            if &buf != b"pong" {
                return 3;
            }
            match socket::peer_addr(fd) {
                Ok(p) if p == SocketAddr::from(([10, 0, 0, 2], 80)) => {}
                _ => return 4,
            }
            match socket::get_opt(fd, libc::SOL_SOCKET, libc::SO_TYPE) {
                Ok(libc::SOCK_STREAM) => 0,
                _ => 5,
            }
        },
        || {
            let mut buf = [0u8; 4];
            (&s).read_exact(&mut buf)
                .expect("parent reads the child's ping");
            assert_eq!(&buf, b"ping");
            (&s).write_all(b"pong").unwrap();
        },
    );
    assert_exit_0(status);
    // The connection still works in the parent.
    (&c).write_all(b"after").unwrap();
    let mut buf = [0u8; 5];
    (&s).read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"after");
}

#[test]
fn a_forked_child_accepts_on_a_listener_created_before_fork() {
    let (a, b) = two_stacks("fork-accept");
    let l = listen(&b, "0.0.0.0:80");
    let lfd = l.as_raw_fd();
    let status = fork_and_run(
        &[lfd],
        || {
            let (conn, peer) = match socket::accept(lfd, 0) {
                Ok(x) => x,
                Err(_) => return 1,
            };
            let fd = conn.as_raw_fd();
            if peer.ip() != std::net::IpAddr::from([10, 0, 0, 1]) {
                return 2;
            }
            let mut buf = [0u8; 2];
            let mut got = 0;
            while got < 2 {
                let n = sys_read(fd, &mut buf[got..]);
                if n <= 0 {
                    return 3;
                }
                got += n as usize;
            }
            if &buf != b"hi" {
                return 4;
            }
            if sys_write(fd, b"ho") != 2 {
                return 5;
            }
            0
        },
        || {
            let c = connect(&a, "10.0.0.2:80");
            (&c).write_all(b"hi").unwrap();
            let mut buf = [0u8; 2];
            (&c).read_exact(&mut buf).expect("reply from the child");
            assert_eq!(&buf, b"ho");
            // The child closed its connection when it exited: EOF.
            assert_eq!(read_to_end(&c), b"");
        },
    );
    assert_exit_0(status);
}

fn sys_write(fd: RawFd, b: &[u8]) -> isize {
    // SAFETY: b is valid for its length.
    unsafe { libc::write(fd, b.as_ptr() as *const _, b.len()) }
}

fn sys_read(fd: RawFd, b: &mut [u8]) -> isize {
    // SAFETY: b is valid for its length.
    unsafe { libc::read(fd, b.as_mut_ptr() as *mut _, b.len()) }
}

// ---------------------------------------------------------------------------------------
// Stack teardown
// ---------------------------------------------------------------------------------------

#[test]
fn dropping_a_stack_makes_its_connected_fds_read_eof() {
    let (a, b) = two_stacks("drop-stack");
    let l = listen(&b, "0.0.0.0:80");
    let c = connect(&a, "10.0.0.2:80");
    let (_s, _) = accept(&l);
    let u = UdpSocket::bind(&a, "0.0.0.0:53").unwrap();
    drop(a);
    let mut buf = [0u8; 8];
    assert_eq!((&c).read(&mut buf).expect("read after the stack ended"), 0);
    assert!(
        (&c).write(b"x").is_err(),
        "writing on a socket of a dropped stack"
    );
    assert!(c.peer_addr().is_err(), "getpeername after the stack ended");
    // A datagram pair has no EOF; its sends fail instead.
    assert!(
        u.send_to(b"x", "10.0.0.2:53").is_err(),
        "sending on a UDP socket of a dropped stack"
    );
}

/// A datagram that arrived before connect() is read bare afterwards, even by plain read(2),
/// as `nc -u -l` does (peek, connect to the sender, read); one from another peer is gone.
#[test]
fn datagrams_queued_before_a_udp_connect_read_bare_after_it() {
    let (a, b) = two_stacks("udp-requeue");
    let server = UdpSocket::bind(&a, "0.0.0.0:5300").unwrap();
    let peer = UdpSocket::bind(&b, "0.0.0.0:5301").unwrap();
    let other = UdpSocket::bind(&b, "0.0.0.0:5302").unwrap();
    let mut buf = [0u8; 64];
    // Both waiting when connect() comes: one from another peer, then one from the peer.
    other.send_to(b"dropped", "10.0.0.1:5300").unwrap();
    assert_eq!(poll(server.as_raw_fd(), libc::POLLIN, 2000), libc::POLLIN);
    peer.send_to(b"first", "10.0.0.1:5300").unwrap();
    // A pair cannot be asked how many datagrams it holds; the engine passes one on within
    // microseconds, so this is ample.
    std::thread::sleep(Duration::from_millis(200));
    let (n, from) = socket::recv_from(server.as_raw_fd(), &mut buf, libc::MSG_PEEK).unwrap();
    assert_eq!(
        (n, from),
        (7, Some(addr("10.0.0.2:5302"))),
        "the other peer's datagram is first"
    );
    server.connect("10.0.0.2:5301").unwrap();
    // SAFETY: reading into a valid buffer from the socket's fd.
    let n = unsafe { libc::read(server.as_raw_fd(), buf.as_mut_ptr() as *mut _, buf.len()) };
    assert_eq!(
        &buf[..n.max(0) as usize],
        b"first",
        "read(2) after connect()"
    );
    peer.send_to(b"second", "10.0.0.1:5300").unwrap();
    assert_eq!(server.recv(&mut buf).unwrap(), 6);
    assert_eq!(&buf[..6], b"second");
}

/// A burst of connections larger than any pool of listening sockets: every one is accepted,
/// none refused (a listener with room drops nothing; Linux would not reset them either).
#[test]
fn a_burst_of_connects_is_all_accepted() {
    const N: usize = 200;
    let (a, b) = two_stacks("burst");
    let l = listen(&a, "10.0.0.1:8200");
    let acceptor =
        std::thread::spawn(move || (0..N).map(|_| accept(&l).0).collect::<Vec<TcpStream>>());
    let b = std::sync::Arc::new(b);
    let clients: Vec<_> = (0..N)
        .map(|_| {
            let b = b.clone();
            std::thread::spawn(move || TcpStream::connect(&b, "10.0.0.1:8200"))
        })
        .collect();
    let mut held = Vec::new();
    for c in clients {
        held.push(c.join().unwrap().expect("connect in a burst"));
    }
    let accepted = acceptor.join().unwrap();
    assert_eq!(accepted.len(), N);
    for (i, mut c) in held.into_iter().enumerate() {
        c.write_all(&[i as u8]).unwrap();
    }
    let mut seen = accepted
        .into_iter()
        .map(|mut s| {
            bound_io(s.as_raw_fd());
            let mut x = [0u8];
            s.read_exact(&mut x).unwrap();
            x[0]
        })
        .collect::<Vec<u8>>();
    seen.sort_unstable();
    let mut want: Vec<u8> = (0..N).map(|i| i as u8).collect();
    want.sort_unstable();
    assert_eq!(seen, want, "every connection carries its own byte");
}

/// Accepted connections wait in the listener's own fd, as many as the backlog (set again by
/// a second listen(), as on Linux): an application that accepts late still gets every one,
/// also past what the fd's buffer holds at once (those wait in the engine, in order).
#[test]
fn a_late_acceptor_gets_every_connection_of_a_deep_backlog() {
    const N: usize = 2000;
    let (a, b) = two_stacks("late-acceptor");
    let l = listen(&a, "10.0.0.1:8300");
    vdestack::internal::socket::listen(l.as_raw_fd(), 4096).expect("listen again, deeper");
    let mut clients = Vec::with_capacity(N);
    for i in 0..N {
        let mut c = connect(&b, "10.0.0.1:8300");
        c.write_all(&(i as u32).to_le_bytes()).unwrap();
        clients.push(c);
    }
    let mut seen = Vec::with_capacity(N);
    for _ in 0..N {
        let (mut s, peer) = accept(&l);
        assert_eq!(peer.ip().to_string(), "10.0.0.2");
        let mut x = [0u8; 4];
        s.read_exact(&mut x).unwrap();
        seen.push(u32::from_le_bytes(x));
    }
    seen.sort_unstable();
    assert_eq!(
        seen,
        (0..N as u32).collect::<Vec<_>>(),
        "each connection once"
    );
    // And nothing more waits.
    l.set_nonblocking(true).unwrap();
    assert_eq!(
        l.accept().map(|_| ()).unwrap_err().kind(),
        io::ErrorKind::WouldBlock
    );
}

/// Connections no one accepted end with their listener: their clients read EOF.
#[test]
fn closing_a_listener_ends_the_connections_it_held() {
    let (a, b) = two_stacks("close-listener");
    let l = listen(&a, "10.0.0.1:8301");
    let clients: Vec<_> = (0..4).map(|_| connect(&b, "10.0.0.1:8301")).collect();
    // Give the engine a moment to hand them to the listener's fd.
    std::thread::sleep(Duration::from_millis(100));
    drop(l);
    for (i, c) in clients.iter().enumerate() {
        let mut buf = [0u8; 1];
        match (&*c).read(&mut buf) {
            Ok(0) => {}
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {}
            other => panic!("client {i}: {other:?}, want EOF or a reset"),
        }
    }
}

/// accept on a socket that is not listening fails at once with EINVAL, as on Linux, and
/// leaves a connected socket's bytes where they are.
#[test]
fn accept_on_a_socket_that_does_not_listen_is_einval() {
    let (a, b) = two_stacks("accept-einval");
    let fresh = tcp_socket(&a, libc::AF_INET, false);
    assert_errno(
        socket::accept(fresh.as_raw_fd(), 0).map(drop),
        libc::EINVAL,
        "accept on a fresh socket",
    );
    let l = listen(&a, "10.0.0.1:8302");
    let mut c = connect(&b, "10.0.0.1:8302");
    let (s, _) = accept(&l);
    c.write_all(b"keep").unwrap();
    assert_errno(
        socket::accept(s.as_raw_fd(), 0).map(drop),
        libc::EINVAL,
        "accept on a connected socket",
    );
    let mut got = [0u8; 4];
    (&s).read_exact(&mut got).unwrap();
    assert_eq!(&got, b"keep");
}
