//! The engine sees an application close a UDP socket: its port is free again at once, as on
//! Linux, and a program that opens and closes UDP sockets (every DNS lookup) leaves the
//! engine's sockets and fds where they were. Datagram edge cases that depend on how the pair
//! carries them (empty datagrams, shutdown, SO_TYPE) are compared with a kernel socket.

use std::io;
use std::net::UdpSocket as KernelUdp;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use vdestack::internal::socket;
use vdestack::net::UdpSocket;
use vdestack::Stack;

fn errno(r: io::Result<usize>) -> Result<usize, i32> {
    r.map_err(|e| e.raw_os_error().unwrap_or(-1))
}

/// A stack on `mem://udpclose-NAME` with 10.0.0.1/24 on vde0.
fn stack(name: &str) -> Stack {
    let s = Stack::new(&format!("mem://udpclose-{name}"), None).expect("create stack");
    s.cmd("ip link set vde0 up; ip addr add 10.0.0.1/24 dev vde0")
        .expect("configure stack");
    s
}

/// How many sockets the engine holds for `stack`: it binds its end of each socket's pair to
/// `@vds:<engine>:<id>`, an id of 8 bytes (little-endian) whose high half is the stack's
/// id, and /proc/net/unix lists those names (a zero byte shows as '@').
fn engine_socks(stack: &Stack) -> usize {
    let mut prefix = b"@".to_vec();
    prefix.extend_from_slice(stack.ctl().name());
    prefix.push(b':');
    let want: Vec<u8> = stack
        .id()
        .to_le_bytes()
        .iter()
        .map(|&b| if b == 0 { b'@' } else { b })
        .collect();
    let table = std::fs::read("/proc/net/unix").expect("read /proc/net/unix");
    let mut n = 0;
    let mut at = 0;
    while let Some(off) = table[at..]
        .windows(prefix.len())
        .position(|w| w == prefix.as_slice())
    {
        let id = at + off + prefix.len();
        if table.get(id + 4..id + 8) == Some(&want[..]) {
            n += 1;
        }
        at = id;
    }
    n
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .count()
}

#[test]
fn a_closed_udp_port_can_be_bound_again_at_once_as_on_linux() {
    // Linux: the port is free as soon as close() returns.
    let k = KernelUdp::bind("127.0.0.1:0").unwrap();
    let kaddr = k.local_addr().unwrap();
    drop(k);
    KernelUdp::bind(kaddr).expect("kernel: bind again after close");

    let s = stack("rebind");
    for round in 0..50 {
        let u = UdpSocket::bind(&s, "10.0.0.1:5353")
            .unwrap_or_else(|e| panic!("round {round}: bind 10.0.0.1:5353: {e}"));
        u.send_to(b"x", "10.0.0.1:9").unwrap();
        drop(u);
    }
    // The wildcard too, and one that was connected.
    let u = UdpSocket::bind(&s, "0.0.0.0:5353").unwrap();
    u.connect("10.0.0.1:9").unwrap();
    drop(u);
    UdpSocket::bind(&s, "0.0.0.0:5353").expect("bind again after a connected socket closed");
}

#[test]
fn ten_thousand_open_send_close_cycles_leave_the_engine_at_baseline() {
    let s = stack("cycles");
    let server = UdpSocket::bind(&s, "10.0.0.1:53").unwrap();
    let base_socks = engine_socks(&s);
    let base_fds = open_fds();
    assert_eq!(base_socks, 1, "the server alone");
    let mut buf = [0u8; 64];
    for i in 0..10_000u32 {
        let c = UdpSocket::bind(&s, "0.0.0.0:0").unwrap_or_else(|e| {
            panic!(
                "cycle {i}: bind: {e} (engine holds {} sockets)",
                engine_socks(&s)
            )
        });
        c.send_to(&i.to_be_bytes(), "10.0.0.1:53").unwrap();
        drop(c);
        if i % 1000 == 999 {
            // Drain what the server heard, so its queue never decides anything.
            vdestack::internal::sys::set_nonblocking(server.as_raw_fd(), true).unwrap();
            while server.recv_from(&mut buf).is_ok() {}
        }
    }
    let end = Instant::now() + Duration::from_secs(10);
    let (mut socks, mut fds) = (engine_socks(&s), open_fds());
    while (socks != base_socks || fds > base_fds) && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(20));
        (socks, fds) = (engine_socks(&s), open_fds());
    }
    assert_eq!(socks, base_socks, "engine sockets after 10,000 cycles");
    assert!(
        fds <= base_fds,
        "fds after 10,000 cycles: {fds}, before: {base_fds}"
    );
}

#[test]
fn an_empty_datagram_on_a_connected_socket_is_delivered_as_on_linux() {
    // Linux: send of 0 bytes is a datagram; recv returns 0 for it; the socket lives on.
    let ka = KernelUdp::bind("127.0.0.1:0").unwrap();
    let kb = KernelUdp::bind("127.0.0.1:0").unwrap();
    ka.connect(kb.local_addr().unwrap()).unwrap();
    kb.connect(ka.local_addr().unwrap()).unwrap();
    kb.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = [0u8; 16];
    assert_eq!(ka.send(b"").unwrap(), 0);
    assert_eq!(kb.recv(&mut buf).unwrap(), 0);
    assert_eq!(ka.send(b"after").unwrap(), 5);
    assert_eq!(kb.recv(&mut buf).unwrap(), 5);

    let s = stack("empty");
    let a = UdpSocket::bind(&s, "10.0.0.1:7001").unwrap();
    let b = UdpSocket::bind(&s, "10.0.0.1:7002").unwrap();
    a.connect("10.0.0.1:7002").unwrap();
    b.connect("10.0.0.1:7001").unwrap();
    let before = engine_socks(&s);
    assert_eq!(a.send(b"").unwrap(), 0);
    assert_eq!(b.recv(&mut buf).unwrap(), 0, "the empty datagram");
    assert_eq!(a.send(b"after").unwrap(), 5, "the sender lives on");
    assert_eq!(b.recv(&mut buf).unwrap(), 5);
    assert_eq!(&buf[..5], b"after");
    // And back: the receiver of the empty datagram lives on too.
    assert_eq!(b.send(b"").unwrap(), 0);
    assert_eq!(a.recv(&mut buf).unwrap(), 0);
    assert_eq!(engine_socks(&s), before, "no socket taken for closed");
}

#[test]
fn so_type_says_sock_dgram_as_on_linux() {
    let k = KernelUdp::bind("127.0.0.1:0").unwrap();
    let kt =
        vdestack::internal::sys::getsockopt_int(k.as_raw_fd(), libc::SOL_SOCKET, libc::SO_TYPE);
    assert_eq!(kt.unwrap(), libc::SOCK_DGRAM);
    let s = stack("sotype");
    let u = UdpSocket::bind(&s, "10.0.0.1:0").unwrap();
    let t = socket::get_opt(u.as_raw_fd(), libc::SOL_SOCKET, libc::SO_TYPE).unwrap();
    assert_eq!(t, libc::SOCK_DGRAM);
}

#[test]
fn shutdown_wr_of_a_connected_udp_socket_fails_sends_but_keeps_receiving_as_on_linux() {
    let mut buf = [0u8; 16];
    let ka = KernelUdp::bind("127.0.0.1:0").unwrap();
    let kb = KernelUdp::bind("127.0.0.1:0").unwrap();
    ka.connect(kb.local_addr().unwrap()).unwrap();
    kb.connect(ka.local_addr().unwrap()).unwrap();
    ka.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    // SAFETY: shutdown of an fd we own.
    let kr = unsafe { libc::shutdown(ka.as_raw_fd(), libc::SHUT_WR) };
    assert_eq!(kr, 0);
    let ksend = errno(ka.send(b"x"));
    kb.send(b"back").unwrap();
    let krecv = ka.recv(&mut buf);
    assert_eq!(ksend, Err(libc::EPIPE));
    assert_eq!(krecv.unwrap(), 4);

    let s = stack("shutwr");
    let a = UdpSocket::bind(&s, "10.0.0.1:7101").unwrap();
    let b = UdpSocket::bind(&s, "10.0.0.1:7102").unwrap();
    a.connect("10.0.0.1:7102").unwrap();
    b.connect("10.0.0.1:7101").unwrap();
    socket::shutdown(a.as_raw_fd(), libc::SHUT_WR).unwrap();
    let send = errno(socket::send_to(
        a.as_raw_fd(),
        b"x",
        None,
        libc::MSG_NOSIGNAL,
    ));
    assert_eq!(send, ksend, "send after SHUT_WR");
    b.send(b"back").unwrap();
    assert_eq!(a.recv(&mut buf).unwrap(), 4, "still receives after SHUT_WR");
    assert_eq!(&buf[..4], b"back");
    // Shut, not closed: its port is still held.
    let again = UdpSocket::bind(&s, "10.0.0.1:7101").map(drop);
    assert_eq!(
        again.map_err(|e| e.raw_os_error()),
        Err(Some(libc::EADDRINUSE)),
        "bind to the port of a socket shut for writing"
    );
}

#[test]
fn a_datagram_sent_just_before_close_still_goes_out_as_on_linux() {
    // Linux: sendto(2) hands the datagram over; close() right after does not take it back.
    let kserver = KernelUdp::bind("127.0.0.1:0").unwrap();
    kserver
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let k = KernelUdp::bind("127.0.0.1:0").unwrap();
    k.send_to(b"last words", kserver.local_addr().unwrap())
        .unwrap();
    drop(k);
    let mut buf = [0u8; 64];
    assert_eq!(kserver.recv_from(&mut buf).unwrap().0, 10);

    // Through the link, to a neighbor not resolved yet: the datagram waits for ARP.
    let a = stack("last");
    let b = Stack::new("mem://udpclose-last", None).unwrap();
    b.cmd("ip link set vde0 up; ip addr add 10.0.0.2/24 dev vde0")
        .unwrap();
    let server = UdpSocket::bind(&a, "10.0.0.1:5353").unwrap();
    for i in 0..20u8 {
        let c = UdpSocket::bind(&b, "0.0.0.0:0").unwrap();
        c.send_to(&[i; 10], "10.0.0.1:5353").unwrap();
        drop(c);
    }
    vdestack::internal::sys::set_nonblocking(server.as_raw_fd(), false).unwrap();
    let tv = libc::timeval {
        tv_sec: 5,
        tv_usec: 0,
    };
    // SAFETY: a valid timeval of the size given, on an fd we own.
    let r = unsafe {
        libc::setsockopt(
            server.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            &tv as *const _ as *const libc::c_void,
            std::mem::size_of::<libc::timeval>() as u32,
        )
    };
    assert_eq!(r, 0);
    // Each from its own socket: their order is not for UDP to keep, their number is.
    let mut got = Vec::new();
    for i in 0..20 {
        let (n, _) = server
            .recv_from(&mut buf)
            .unwrap_or_else(|e| panic!("datagram {i} of a closed socket: {e} (got {got:?})"));
        assert_eq!(n, 10);
        got.push(buf[0]);
    }
    got.sort_unstable();
    assert_eq!(got, (0..20).collect::<Vec<u8>>());
    // And the closed sockets are gone from the engine once their datagrams went.
    let end = Instant::now() + Duration::from_secs(5);
    while engine_socks(&b) != 0 && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(engine_socks(&b), 0);
}
