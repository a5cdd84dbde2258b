//! Socket calls on a stack fd, the client side: what bind/listen/accept/connect/... do when
//! the fd is one end of a stack's socketpair. The Rust types in [`crate::net`] and the C
//! library both call these; each finds the engine from the fd itself.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use crate::bridge::udp;
use crate::control::proto::{accepted_peer, Reply, Request, ACCEPT_RECORD};
use crate::control::Ctl;
use crate::sys;

/// The engine and socket id behind `fd`, or ENOTSOCK if it is not a stack fd.
pub fn lookup(fd: RawFd) -> io::Result<(Ctl, u64)> {
    Ctl::of_fd(fd).ok_or_else(|| sys::errno_err(libc::ENOTSOCK))
}

/// Whether `fd` is one of a stack's sockets.
pub fn is_stack_fd(fd: RawFd) -> bool {
    Ctl::of_fd(fd).is_some()
}

fn call(fd: RawFd, f: impl FnOnce(u64) -> Request) -> io::Result<Reply> {
    let (ctl, id) = lookup(fd)?;
    ctl.call_on(&f(id), fd)
}

fn addr_reply(r: Reply) -> io::Result<SocketAddr> {
    match r {
        Reply::Addr(a) => Ok(a),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "unexpected reply",
        )),
    }
}

/// bind(2).
pub fn bind(fd: RawFd, addr: SocketAddr) -> io::Result<()> {
    call(fd, |sock| Request::Bind { sock, addr }).map(drop)
}

/// listen(2).
pub fn listen(fd: RawFd, backlog: i32) -> io::Result<()> {
    call(fd, |sock| Request::Listen { sock, backlog })?;
    // Marks the fd itself (a kernel option of the pair, so it follows dup, fork, exec and
    // SCM_RIGHTS) so that accept() knows a listener without asking the engine. A listener's
    // SO_RCVLOWAT means nothing otherwise: its reads are whole records.
    sys::setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_RCVLOWAT, LISTENER_MARK)
}

/// The SO_RCVLOWAT of a listener's fd (see [`listen`]); getsockopt shows 1 there, as Linux.
pub const LISTENER_MARK: i32 = 0x5644_534c;

/// Whether `fd` is a listening stack socket (one listen() marked).
pub fn is_listener(fd: RawFd) -> bool {
    sys::getsockopt_int(fd, libc::SOL_SOCKET, libc::SO_RCVLOWAT).ok() == Some(LISTENER_MARK)
}

/// accept4(2): waits (or not, as the fd's O_NONBLOCK says) for a connection, and returns
/// its fd and the peer's address. `flags` takes SOCK_NONBLOCK and SOCK_CLOEXEC.
///
/// The engine puts each connection into the listener's pair as a record with its fd
/// attached: taking one is a single recvmsg, the wait is the fd's own, and processes that
/// share a listener each take whole connections, as from a kernel accept queue.
pub fn accept(fd: RawFd, flags: i32) -> io::Result<(OwnedFd, SocketAddr)> {
    accept_with(fd, flags, 0)
}

/// [`accept`] that never waits: EAGAIN when no connection is ready, whatever the fd's
/// O_NONBLOCK says (the seal's supervisor waits for the target itself).
pub fn try_accept(fd: RawFd, flags: i32) -> io::Result<(OwnedFd, SocketAddr)> {
    accept_with(fd, flags, libc::MSG_DONTWAIT)
}

fn accept_with(fd: RawFd, flags: i32, recv_flags: i32) -> io::Result<(OwnedFd, SocketAddr)> {
    // On a socket that is not listening, Linux says EINVAL at once; reading would block, or
    // take a connected socket's data for a record.
    if !is_listener(fd) {
        return Err(sys::errno_err(if udp_pair(fd)? {
            libc::EOPNOTSUPP
        } else {
            libc::EINVAL
        }));
    }
    // At the fd limit, the kernel would drop the connection's fd from the record (and the
    // connection with it): fail first, with the connection still queued, as Linux does.
    // (Another thread can take the last fd in between: then recv_msg says EMFILE, and that
    // connection is lost.)
    sys::fd_free()?;
    let mut rec = [0u8; ACCEPT_RECORD];
    let (n, conn) = sys::recv_msg_flags(fd, &mut rec, recv_flags)?;
    let Some(conn) = conn else {
        return Err(sys::errno_err(match n {
            // EOF: the stack is gone.
            0 => libc::EINVAL,
            // A record with no fd: the engine had none for the connection.
            ACCEPT_RECORD => libc::EMFILE,
            // Anything else is not a listener of ours.
            _ => libc::EINVAL,
        }));
    };
    let peer = accepted_peer(&rec[..n])?;
    apply_flags(&conn, flags)?;
    Ok((conn, peer))
}

/// Applies SOCK_NONBLOCK / SOCK_CLOEXEC to an fd the engine passed (it arrives close-on-exec
/// and blocking).
pub fn apply_flags(fd: &OwnedFd, flags: i32) -> io::Result<()> {
    if flags & libc::SOCK_NONBLOCK != 0 {
        sys::set_nonblocking(fd.as_raw_fd(), true)?;
    }
    if flags & libc::SOCK_CLOEXEC == 0 {
        // SAFETY: fcntl on an fd we own, integer arguments.
        if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFD, 0) } < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// connect(2): blocks until the connection is up or failed, unless the fd is nonblocking,
/// in which case it answers EINPROGRESS; then, as on a kernel socket, the fd polls writable
/// once the outcome is known, and SO_ERROR tells it.
///
/// How: after EINPROGRESS this writes padding into the pair, more than a quarter of its
/// SO_SNDBUF, which makes it unwritable (an AF_UNIX stream socket is writable while 4 × its
/// unread bytes ≤ SO_SNDBUF); the engine drops the padding, and only it, when the outcome
/// is known. Bytes the program writes meanwhile follow the padding and go out once connected.
pub fn connect(fd: RawFd, addr: SocketAddr) -> io::Result<()> {
    let wait = !sys::is_nonblocking(fd);
    let stream = sys::getsockopt_int(fd, libc::SOL_SOCKET, libc::SO_TYPE)? == libc::SOCK_STREAM;
    let pad = if stream && !wait {
        sys::getsockopt_int(fd, libc::SOL_SOCKET, libc::SO_SNDBUF)?.max(0) as usize / 4 + 1
    } else {
        0
    };
    let r = call(fd, |sock| Request::Connect {
        sock,
        addr,
        wait,
        pad: pad as u32,
    });
    match r {
        Err(e) if pad > 0 && e.raw_os_error() == Some(libc::EINPROGRESS) => {
            // Written after the reply, so that it cannot be taken for data if the socket was
            // connected already. Less than half of SO_SNDBUF is one write: all of it or none.
            let written = sys::send(fd, &vec![0u8; pad]).unwrap_or(0);
            if written != pad {
                call(fd, |sock| Request::Padded {
                    sock,
                    bytes: written as u32,
                })?;
            }
            Err(e)
        }
        Err(e) => Err(e),
        Ok(_) => {
            if !stream {
                requeue_from_peer(fd, addr);
            }
            Ok(())
        }
    }
}

/// connect(2) with an AF_UNSPEC address: a UDP socket dissolves its association (and gives
/// back a port bind did not name), as on Linux.
pub fn disconnect(fd: RawFd) -> io::Result<()> {
    call(fd, |sock| Request::Disconnect { sock }).map(drop)
}

/// After a UDP connect: the datagrams already waiting carry the address header of an
/// unconnected socket, which read(2) would hand to the program. Those from the new peer go
/// back through the engine to return bare, in order with the bare ones of a socket that was
/// connected already (which stay, as on Linux); those from others are dropped, as a
/// connected socket only hears its peer. (The engine wrote them all before it answered the
/// connect.)
///
/// A socket shut either way is left as it is: they could not make the round trip (a pair
/// shut for writing takes nothing, one shut for reading is given nothing), and receives
/// strip the headers anyway (only read(2) would show them).
fn requeue_from_peer(fd: RawFd, peer: SocketAddr) {
    if sys::poll_one(fd, libc::POLLIN, 0).map_or(true, |ev| ev & libc::POLLIN == 0)
        || sys::unix_shutdown(fd).is_some_and(|how| how != 0)
    {
        return; // nothing waits (the usual case: no sock_diag query then), or shut
    }
    // sock_diag may be out of reach (a sealed program cannot open AF_NETLINK): then go on;
    // a pair shut for reading ends the loop below at its 0-byte read.
    // Take them all first: what the engine hands back must not be read again here.
    let mut waiting = Vec::new();
    let mut buf = vec![0u8; MAX_DGRAM];
    // 0 bytes is the end of the pair (every datagram has a header or a payload): the
    // socket was shut for reading, which a seqpacket pair answers at once, every time.
    while let Ok(n @ 1..) = sys::recv_vec(fd, &mut [&mut buf[..]], libc::MSG_DONTWAIT) {
        let d = &buf[..n];
        match udp::parse_header(d) {
            Some(f) if sys::unmap(f.ip()) == sys::unmap(peer.ip()) && f.port() == peer.port() => {
                waiting.push(d.to_vec())
            }
            Some(_) => {}
            None => waiting.push([&udp::header(&peer)[..], d].concat()),
        }
    }
    for mut d in waiting {
        d[5] = udp::REQUEUE;
        let _ = sys::send(fd, &d);
    }
}

/// Options that the pair itself keeps for a stack fd, so that the kernel answers them on
/// it: timeouts and watermarks govern the application's blocking reads and writes, which
/// happen on the pair; SO_BROADCAST is a flag any socket keeps (the engine sends to broadcast
/// addresses without it). (A listener's SO_RCVLOWAT is the exception: see [`LISTENER_MARK`].)
/// The C library and the seal both ask here.
pub fn pair_option(level: i32, name: i32) -> bool {
    level == libc::SOL_SOCKET
        && matches!(
            name,
            libc::SO_RCVTIMEO
                | libc::SO_SNDTIMEO
                | libc::SO_RCVLOWAT
                | libc::SO_SNDLOWAT
                | libc::SO_LINGER
                | libc::SO_BROADCAST
        )
}

/// A socket address from the bytes a program passed for it, with the kernel's errors:
/// EINVAL when it is too short, EAFNOSUPPORT for a family other than IPv4 and IPv6. A
/// 24-byte IPv6 address (RFC 2133's, which Linux accepts) reads as scope 0.
pub fn parse_addr(bytes: &[u8]) -> io::Result<SocketAddr> {
    let einval = || sys::errno_err(libc::EINVAL);
    if bytes.len() < size_of::<libc::sa_family_t>() {
        return Err(einval());
    }
    let family = libc::sa_family_t::from_ne_bytes([bytes[0], bytes[1]]) as i32;
    let min = match family {
        libc::AF_INET => size_of::<libc::sockaddr_in>(),
        libc::AF_INET6 => 24,
        _ => return Err(sys::errno_err(libc::EAFNOSUPPORT)),
    };
    if bytes.len() < min {
        return Err(einval());
    }
    // SAFETY: sockaddr_storage is plain old data.
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let n = bytes.len().min(size_of::<libc::sockaddr_storage>());
    // SAFETY: ss has room for n bytes; bytes has n.
    unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), &mut ss as *mut _ as *mut u8, n) };
    // SAFETY: ss is a whole sockaddr_storage.
    unsafe {
        sys::sockaddr_to_std(
            &ss as *const _ as *const libc::sockaddr,
            size_of::<libc::sockaddr_storage>(),
        )
    }
    .ok_or_else(einval)
}

/// getsockname(2).
pub fn local_addr(fd: RawFd) -> io::Result<SocketAddr> {
    addr_reply(call(fd, |sock| Request::Name { sock, peer: false })?)
}

/// getpeername(2).
pub fn peer_addr(fd: RawFd) -> io::Result<SocketAddr> {
    addr_reply(call(fd, |sock| Request::Name { sock, peer: true })?)
}

/// shutdown(2). The write side is shut on the pair itself, so the engine sees EOF after
/// every byte written before it, and sends FIN then.
///
/// As Linux: on a UDP socket that is not connected the answer is ENOTCONN, yet the socket
/// is shut all the same (later sends fail with EPIPE, receives read EOF), which shutting
/// the pair does too (a datagram pair's shutdown does not reach the engine's end; a stream
/// pair's would end the socket); on a listener, SHUT_WR does nothing and SHUT_RD stops
/// accept().
pub fn shutdown(fd: RawFd, how: i32) -> io::Result<()> {
    if !matches!(how, libc::SHUT_RD | libc::SHUT_WR | libc::SHUT_RDWR) {
        return Err(sys::errno_err(libc::EINVAL));
    }
    match call(fd, |sock| Request::Shutdown { sock, how }) {
        Ok(_) => sys::shutdown(fd, how),
        Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) && is_listener(fd) => {
            if how != libc::SHUT_WR {
                sys::shutdown(fd, libc::SHUT_RD)?;
            }
            Ok(())
        }
        Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) && udp_pair(fd)? => {
            sys::shutdown(fd, how)?;
            Err(e)
        }
        Err(e) => Err(e),
    }
}

/// setsockopt(2) with an integer value.
pub fn set_opt(fd: RawFd, level: i32, name: i32, value: i32) -> io::Result<()> {
    if (level, name) == (libc::SOL_SOCKET, libc::SO_ACCEPTCONN) {
        return Err(sys::errno_err(libc::ENOPROTOOPT)); // read-only, as on Linux
    }
    call(fd, |sock| Request::SetOpt {
        sock,
        level,
        name,
        value,
    })
    .map(drop)
}

/// getsockopt(2) of an integer option.
pub fn get_opt(fd: RawFd, level: i32, name: i32) -> io::Result<i32> {
    if (level, name) == (libc::SOL_SOCKET, libc::SO_ERROR) {
        if no_error_pending(fd) {
            return Ok(0);
        }
        // A reset the kernel holds for the pair (see engine::ops::pump::reset_pair).
        let kernel = sys::getsockopt_int(fd, libc::SOL_SOCKET, libc::SO_ERROR)?;
        if kernel != 0 {
            reset_reported(fd);
            return Ok(kernel);
        }
    }
    match call(fd, |sock| Request::GetOpt { sock, level, name }) {
        Ok(Reply::Int(v)) => Ok(v as i32),
        Ok(_) => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "unexpected reply",
        )),
        Err(e) if e.raw_os_error() == Some(libc::ENOPROTOOPT) && foreign_level(fd, level) => {
            Err(sys::errno_err(libc::EOPNOTSUPP))
        }
        Err(e) => Err(e),
    }
}

/// Whether stack fd `fd` is a UDP socket: its pair is seqpacket (TCP's is a stream).
fn udp_pair(fd: RawFd) -> io::Result<bool> {
    let ty = sys::getsockopt_int(fd, libc::SOL_SOCKET, libc::SO_TYPE)?;
    Ok(matches!(ty, libc::SOCK_SEQPACKET | libc::SOCK_DGRAM))
}

/// Whether `level` belongs to another protocol than the socket's (TCP options of a UDP
/// socket, IPv6 ones of an IPv4 socket): Linux's getsockopt says EOPNOTSUPP for those, and
/// ENOPROTOOPT for an unknown option of the socket's own protocols.
/// (An IPv6 socket says ENOPROTOOPT for both.)
fn foreign_level(fd: RawFd, level: i32) -> bool {
    let ty = match udp_pair(fd) {
        Ok(true) => libc::SOCK_DGRAM,
        Ok(false) => libc::SOCK_STREAM,
        Err(_) => 0,
    };
    let foreign = match level {
        libc::IPPROTO_TCP => ty != libc::SOCK_STREAM,
        libc::IPPROTO_UDP => ty != libc::SOCK_DGRAM,
        libc::IPPROTO_IPV6 => true,
        _ => false,
    };
    let domain = || {
        call(fd, |sock| Request::GetOpt {
            sock,
            level: libc::SOL_SOCKET,
            name: libc::SO_DOMAIN,
        })
    };
    foreign && matches!(domain(), Ok(Reply::Int(d)) if d == libc::AF_INET as i64)
}

/// Whether a TCP socket surely has no error for SO_ERROR, known without asking the engine:
/// it records one only as it shuts its end of the pair for writing (a failed connect, a
/// reset), so while the application's end shows no POLLRDHUP there is none. SO_ERROR right
/// after a nonblocking connect's POLLOUT, which every event loop asks, costs no round trip.
fn no_error_pending(fd: RawFd) -> bool {
    sys::getsockopt_int(fd, libc::SOL_SOCKET, libc::SO_TYPE).ok() == Some(libc::SOCK_STREAM)
        && sys::poll_one(fd, libc::POLLRDHUP, 0).is_ok_and(|r| r == 0)
}

/// The most iovecs a message may have (UIO_MAXIOV): more is EMSGSIZE, as on Linux.
pub const MAX_IOV: usize = 1024;

/// The most a single read or write moves (Linux's MAX_RW_COUNT).
const MAX_RW_COUNT: usize = 0x7fff_f000;

/// The largest datagram a pair carries: a UDP payload and its address header.
const MAX_DGRAM: usize = 65536 + udp::HEADER;

/// The error a reset left for the next call on a TCP stack fd, taken (once, as Linux's
/// sock_error). The kernel holds one if the engine closed its end while it held bytes the
/// application wrote; the engine holds it always (the kernel's may have gone to a blocked
/// writer that returned what it had sent, where Linux keeps it for the next call).
fn reset_error(fd: RawFd) -> Option<i32> {
    let kernel = sys::getsockopt_int(fd, libc::SOL_SOCKET, libc::SO_ERROR).ok()?;
    let engine = take_engine_error(fd);
    Some(if kernel != 0 { kernel } else { engine }).filter(|&e| e != 0)
}

/// Takes the engine's SO_ERROR of a stack fd (0 if none or unknown).
fn take_engine_error(fd: RawFd) -> i32 {
    match call(fd, |sock| Request::GetOpt {
        sock,
        level: libc::SOL_SOCKET,
        name: libc::SO_ERROR,
    }) {
        Ok(Reply::Int(e)) => e as i32,
        _ => 0,
    }
}

/// A call on a TCP stack fd got ECONNRESET from the kernel (see `reset_error`): the
/// engine's copy of that error goes, as Linux reports it once.
pub fn reset_reported(fd: RawFd) {
    take_engine_error(fd);
}

/// The error for a send on a TCP stack fd that the pair refused with EPIPE, as Linux gives
/// it: after a reset, ECONNRESET once (the pair, shut, says EPIPE at once), then EPIPE, with
/// SIGPIPE for EPIPE unless `flags` has MSG_NOSIGNAL. The send itself must have been made
/// with MSG_NOSIGNAL.
pub fn broken_pipe(fd: RawFd, flags: i32) -> io::Error {
    let e = reset_error(fd).unwrap_or(libc::EPIPE);
    if e == libc::EPIPE && flags & libc::MSG_NOSIGNAL == 0 {
        // SAFETY: raise(3) with a valid signal number; the kernel would have sent it so.
        unsafe { libc::raise(libc::SIGPIPE) };
    }
    sys::errno_err(e)
}

/// What a read that returned 0 on a TCP stack fd means, as Linux gives it: EOF, or after a
/// reset ECONNRESET once (the engine closed its end of the pair: POLLHUP), then EOF. A
/// reset after the peer's FIN (EPIPE) reads as EOF: Linux's recv sees the FIN first.
pub fn stream_eof(fd: RawFd) -> io::Result<usize> {
    if sys::hung_up(fd) {
        if let Some(e) = reset_error(fd).filter(|&e| e != libc::EPIPE) {
            return Err(sys::errno_err(e));
        }
    }
    Ok(0)
}

/// Sends one datagram; `to` None sends to the connected peer. Blocks as the fd says, or not
/// when `flags` has MSG_DONTWAIT.
pub fn send_to(fd: RawFd, buf: &[u8], to: Option<SocketAddr>, flags: i32) -> io::Result<usize> {
    let iov = libc::iovec {
        iov_base: buf.as_ptr() as *mut _,
        iov_len: buf.len(),
    };
    // SAFETY: the iovec describes `buf`, which the kernel only reads.
    unsafe { send_dgram(fd, &[iov], to, flags) }
}

/// Sends the buffers `iov` describes as one datagram (sendmsg(2) on a stack UDP socket).
///
/// # Safety
/// As sendmsg(2): each iovec is the caller's; the kernel reads them and answers EFAULT where
/// it cannot. Only a payload's first 4 bytes are read here (to tell it from a header).
pub unsafe fn send_dgram(
    fd: RawFd,
    iov: &[libc::iovec],
    to: Option<SocketAddr>,
    flags: i32,
) -> io::Result<usize> {
    if iov.len() > MAX_IOV {
        return Err(sys::errno_err(libc::EMSGSIZE));
    }
    // SAFETY: as the caller promises.
    let r = unsafe { send_framed(fd, iov, to, flags) };
    if let (Err(e), Some(a)) = (&r, to) {
        if matches!(e.raw_os_error(), Some(libc::EMSGSIZE | libc::EPIPE)) {
            // Linux binds an unbound socket before it finds either (no datagram tells the
            // engine here): bind it as the kernel would, or find it bound (EINVAL).
            let any = SocketAddr::new(
                match a {
                    SocketAddr::V4(_) => std::net::Ipv4Addr::UNSPECIFIED.into(),
                    SocketAddr::V6(_) => std::net::Ipv6Addr::UNSPECIFIED.into(),
                },
                0,
            );
            let _ = bind(fd, any);
        }
    }
    r
}

/// [`send_dgram`] after the iovec count's check: the datagram, with a header if it needs one.
///
/// # Safety
/// As [`send_dgram`].
unsafe fn send_framed(
    fd: RawFd,
    iov: &[libc::iovec],
    to: Option<SocketAddr>,
    flags: i32,
) -> io::Result<usize> {
    // What UDP can carry, checked before the payload is read, as Linux does.
    let total = iov.iter().fold(0usize, |t, v| t.saturating_add(v.iov_len));
    let v4 = to.is_some_and(|a| sys::unmap(a.ip()).is_ipv4());
    if total > 65527 || v4 && total > 65507 {
        return Err(sys::errno_err(libc::EMSGSIZE));
    }
    let hdr = match to {
        Some(a) => Some(udp::header(&a)),
        // A payload that looks like a header gets one meaning "the connected peer"; so does
        // an empty one (a bare empty message reads as the end of the pair).
        // SAFETY: as the caller promises.
        None if total == 0 || unsafe { gather(iov, 0, udp::MAGIC.len()) } == udp::MAGIC => Some(
            udp::header(&SocketAddr::new(std::net::Ipv4Addr::UNSPECIFIED.into(), 0)),
        ),
        None => None,
    };
    let Some(h) = hdr else {
        // SAFETY: the caller's iovecs, as sendmsg(2) takes them.
        return unsafe { sys::send_iov(fd, iov, flags) };
    };
    let mut all = Vec::with_capacity(iov.len() + 1);
    all.push(libc::iovec {
        iov_base: h.as_ptr() as *mut _,
        iov_len: h.len(),
    });
    let joined;
    if iov.len() < MAX_IOV {
        all.extend_from_slice(iov);
    } else {
        // No room for the header's iovec: join the payload (which fits in a datagram).
        let total = iov.iter().fold(0usize, |t, v| t.saturating_add(v.iov_len));
        if total > MAX_DGRAM {
            return Err(sys::errno_err(libc::EMSGSIZE));
        }
        // SAFETY: as the caller promises.
        joined = unsafe { gather(iov, 0, total) };
        all.push(libc::iovec {
            iov_base: joined.as_ptr() as *mut _,
            iov_len: joined.len(),
        });
    }
    // SAFETY: the header, and the caller's iovecs or our copy of them.
    let n = unsafe { sys::send_iov(fd, &all, flags) }?;
    Ok(n.saturating_sub(udp::HEADER))
}

/// Receives one datagram into `buf`: returns its length, or with MSG_TRUNC in `flags` its
/// full length (as recv(2) does), and where it came from if the datagram says (unconnected
/// sockets).
pub fn recv_from(fd: RawFd, buf: &mut [u8], flags: i32) -> io::Result<(usize, Option<SocketAddr>)> {
    let iov = libc::iovec {
        iov_base: buf.as_mut_ptr() as *mut _,
        iov_len: buf.len(),
    };
    // SAFETY: the iovec describes `buf`, writable.
    let d = unsafe { recv_dgram(fd, &[iov], flags) }?;
    Ok((d.returned(flags), d.from))
}

/// One datagram taken by [`recv_dgram`].
#[derive(Debug, Clone, Copy)]
pub struct Datagram {
    /// Bytes stored in the buffers.
    pub stored: usize,
    /// The datagram's length (more than `stored` when the buffers were short).
    pub len: usize,
    /// Its sender, when the datagram says (those of unconnected sockets).
    pub from: Option<SocketAddr>,
    /// No datagram: the socket was shut for reading (then there is no sender either).
    pub eof: bool,
}

impl Datagram {
    /// Whether the buffers were too short for it (MSG_TRUNC in msg_flags).
    pub fn truncated(&self) -> bool {
        self.len > self.stored
    }

    /// What recv(2) returns for it: the full length when `flags` has MSG_TRUNC.
    pub fn returned(&self, flags: i32) -> usize {
        if flags & libc::MSG_TRUNC != 0 {
            self.len
        } else {
            self.stored
        }
    }
}

/// Receives one datagram into the buffers `iov` describes (recvmsg(2) on a stack UDP
/// socket). `flags` as recvmsg(2): MSG_PEEK, MSG_DONTWAIT, MSG_TRUNC (which only changes
/// what [`Datagram::returned`] says), ...
///
/// The pair is read with a 24-byte iovec in front for the address header that the
/// datagrams of an unconnected socket carry; a bare datagram (a connected socket's) lands
/// partly there and is moved into place.
///
/// # Safety
/// As recvmsg(2): each iovec is the caller's; the kernel writes them and answers EFAULT where
/// it cannot. Here only bytes below the returned `stored` are written.
pub unsafe fn recv_dgram(fd: RawFd, iov: &[libc::iovec], flags: i32) -> io::Result<Datagram> {
    if iov.len() > MAX_IOV {
        return Err(sys::errno_err(libc::EMSGSIZE));
    }
    if flags & libc::MSG_ERRQUEUE != 0 {
        // No errors are ever queued on a stack socket: as an empty queue.
        return Err(sys::errno_err(libc::EAGAIN));
    }
    let cap = iov.iter().fold(0usize, |t, v| t.saturating_add(v.iov_len));
    let mut hdr = [0u8; udp::HEADER];
    let mut all = Vec::with_capacity(iov.len() + 1);
    all.push(libc::iovec {
        iov_base: hdr.as_mut_ptr() as *mut _,
        iov_len: hdr.len(),
    });
    let mut joined = Vec::new();
    let lone = match iov {
        [one] if (one.iov_len as isize) >= 0 => Some(one), // negative: the kernel's EINVAL
        _ => None,
    };
    if let Some(one) = lone {
        // The kernel takes a lone buffer's length as at most MAX_RW_COUNT before it checks
        // the range (several are checked whole): so must ours, now second of two.
        all.push(libc::iovec {
            iov_base: one.iov_base,
            iov_len: one.iov_len.min(MAX_RW_COUNT - udp::HEADER),
        });
    } else if iov.len() < MAX_IOV {
        all.extend_from_slice(iov);
    } else {
        // No room for the header's iovec: receive into a copy, scattered below.
        joined = vec![0u8; cap.min(MAX_DGRAM)];
        all.push(libc::iovec {
            iov_base: joined.as_mut_ptr() as *mut _,
            iov_len: joined.len(),
        });
    }
    // With MSG_TRUNC the pair says the datagram's full length.
    // SAFETY: our header buffer and the caller's iovecs (or our copy).
    let (full, _) = unsafe { sys::recv_iov(fd, &all, flags | libc::MSG_TRUNC) }?;
    let (len, from, bare) = match full >= udp::HEADER && hdr[..4] == udp::MAGIC {
        true => (full - udp::HEADER, udp::parse_header(&hdr), false),
        false => (full, None, true),
    };
    if full == 0 {
        // No datagram (every one has a header or a payload): the end, see `udp_end`.
        udp_end(fd)?;
        // Linux's UDP, shut for reading, makes only a receive that would wait return 0.
        if flags & libc::MSG_DONTWAIT != 0 || sys::is_nonblocking(fd) {
            return Err(sys::errno_err(libc::EAGAIN));
        }
        return Ok(Datagram {
            stored: 0,
            len: 0,
            from: None,
            eof: true,
        });
    }
    let stored = len.min(cap);
    if !joined.is_empty() && !bare {
        // SAFETY: stored <= cap, within the caller's iovecs.
        unsafe { scatter(iov, 0, &joined[..stored]) };
    } else if bare {
        // The payload's first bytes are in `hdr`, the rest 24 bytes too far on.
        let head = stored.min(udp::HEADER);
        let rest = stored - head;
        let tail = if joined.is_empty() {
            // SAFETY: the kernel wrote these `rest` bytes at the start of the iovecs.
            unsafe { gather(iov, 0, rest) }
        } else {
            joined[..rest].to_vec()
        };
        // SAFETY: stored <= cap: every byte written is within the caller's iovecs.
        unsafe {
            scatter(iov, 0, &hdr[..head]);
            scatter(iov, head, &tail);
        }
    }
    Ok(Datagram {
        stored,
        len,
        from,
        eof: false,
    })
}

/// Copies up to `len` bytes starting `at` bytes into the buffers `iov` describes.
///
/// # Safety
/// The iovecs' memory is readable up to `at + len` (or their end).
unsafe fn gather(iov: &[libc::iovec], mut at: usize, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len.min(MAX_DGRAM));
    for v in iov {
        if out.len() == len {
            break;
        }
        if at >= v.iov_len {
            at -= v.iov_len;
            continue;
        }
        if v.iov_base.is_null() {
            break; // the kernel answers EFAULT for it
        }
        let k = (v.iov_len - at).min(len - out.len());
        // SAFETY: bytes at..at+k of this iovec, readable as the caller promises.
        out.extend_from_slice(unsafe {
            std::slice::from_raw_parts((v.iov_base as *const u8).add(at), k)
        });
        at = 0;
    }
    out
}

/// Writes `src` starting `at` bytes into the buffers `iov` describes.
///
/// # Safety
/// The iovecs' memory is writable up to `at + src.len()`, which is within their total.
unsafe fn scatter(iov: &[libc::iovec], mut at: usize, mut src: &[u8]) {
    for v in iov {
        if src.is_empty() {
            break;
        }
        if at >= v.iov_len {
            at -= v.iov_len;
            continue;
        }
        let k = (v.iov_len - at).min(src.len());
        // SAFETY: bytes at..at+k of this iovec, writable as the caller promises; `src` is
        // ours, never the same memory.
        unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), (v.iov_base as *mut u8).add(at), k) };
        src = &src[k..];
        at = 0;
    }
}

/// recv(2) with MSG_TRUNC on a stack TCP socket: as Linux's TCP does, up to `len` bytes are
/// taken (or with MSG_PEEK looked at) and counted, and none stored.
pub fn recv_discard(fd: RawFd, len: usize, flags: i32) -> io::Result<usize> {
    let mut scratch = vec![0u8; len.min(1 << 20)];
    let flags = flags & !libc::MSG_TRUNC;
    let mut got = 0;
    loop {
        let want = (len - got).min(scratch.len());
        let n = match sys::recv_vec(fd, &mut [&mut scratch[..want]], flags) {
            Ok(n) => n,
            Err(e) if got == 0 => return Err(e),
            Err(_) => return Ok(got),
        };
        got += n;
        let more = flags & libc::MSG_WAITALL != 0 && flags & libc::MSG_PEEK == 0;
        if !more || got == len || n == 0 {
            return Ok(got);
        }
    }
}

/// A read of 0 bytes without a header on a UDP stack fd: the end of the pair (the engine
/// shut its end, the stack was deleted), or the socket was shut for reading (empty
/// datagrams come with a header). It is shut for reading here, so that every later call
/// (another thread's blocked one too) returns at once; a deleted stack says ENETDOWN.
fn udp_end(fd: RawFd) -> io::Result<()> {
    let _ = sys::shutdown(fd, libc::SHUT_RD);
    let alive = call(fd, |sock| Request::GetOpt {
        sock,
        level: libc::SOL_SOCKET,
        name: libc::SO_TYPE,
    });
    match alive {
        Err(e) if e.raw_os_error() == Some(libc::ENETDOWN) => Err(e),
        _ => Ok(()),
    }
}
