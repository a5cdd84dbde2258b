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
        return Err(sys::errno_err(libc::EINVAL));
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

/// After a UDP connect: the datagrams already waiting carry the address header of an
/// unconnected socket, which read(2) would hand to the program. Those from the new peer go
/// back through the engine to return bare; the others are dropped, as a connected socket
/// only hears its peer. (The engine wrote them all before it answered the connect.)
fn requeue_from_peer(fd: RawFd, peer: SocketAddr) {
    // Take them all first: what the engine hands back must not be read again here.
    let mut waiting = Vec::new();
    let mut buf = vec![0u8; 65536 + udp::HEADER];
    while let Ok(n) = sys::recv_vec(fd, &mut [&mut buf[..]], libc::MSG_DONTWAIT) {
        let from = udp::parse_header(&buf[..n]);
        if from
            .is_some_and(|f| sys::unmap(f.ip()) == sys::unmap(peer.ip()) && f.port() == peer.port())
        {
            waiting.push(buf[..n].to_vec());
        }
    }
    for mut d in waiting {
        d[5] = udp::REQUEUE;
        let _ = sys::send(fd, &d);
    }
}

/// Options that the pair itself keeps for a stack fd, so that the kernel answers them on
/// it: timeouts and watermarks govern the application's blocking reads and writes, which
/// happen on the pair. (A listener's SO_RCVLOWAT is the exception: see [`LISTENER_MARK`].)
pub fn pair_option(level: i32, name: i32) -> bool {
    level == libc::SOL_SOCKET
        && matches!(
            name,
            libc::SO_RCVTIMEO
                | libc::SO_SNDTIMEO
                | libc::SO_RCVLOWAT
                | libc::SO_SNDLOWAT
                | libc::SO_LINGER
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
pub fn shutdown(fd: RawFd, how: i32) -> io::Result<()> {
    if !matches!(how, libc::SHUT_RD | libc::SHUT_WR | libc::SHUT_RDWR) {
        return Err(sys::errno_err(libc::EINVAL));
    }
    call(fd, |sock| Request::Shutdown { sock, how })?;
    sys::shutdown(fd, how)
}

/// setsockopt(2) with an integer value.
pub fn set_opt(fd: RawFd, level: i32, name: i32, value: i32) -> io::Result<()> {
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
    match call(fd, |sock| Request::GetOpt { sock, level, name })? {
        Reply::Int(v) => Ok(v as i32),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "unexpected reply",
        )),
    }
}

/// Whether a TCP socket surely has no error for SO_ERROR, known without asking the engine:
/// it records one only as it shuts its end of the pair for writing (a failed connect, a
/// reset), so while the application's end shows no POLLRDHUP there is none. SO_ERROR right
/// after a nonblocking connect's POLLOUT, which every event loop asks, costs no round trip.
fn no_error_pending(fd: RawFd) -> bool {
    sys::getsockopt_int(fd, libc::SOL_SOCKET, libc::SO_TYPE).ok() == Some(libc::SOCK_STREAM)
        && sys::poll_one(fd, libc::POLLRDHUP, 0).is_ok_and(|r| r == 0)
}

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
/// reset ECONNRESET once (the engine closed its end of the pair: POLLHUP), then EOF.
pub fn stream_eof(fd: RawFd) -> io::Result<usize> {
    if sys::hung_up(fd) {
        if let Some(e) = reset_error(fd) {
            return Err(sys::errno_err(e));
        }
    }
    Ok(0)
}

/// Sends one datagram; `to` None sends to the connected peer. Blocks as the fd says, or not
/// when `flags` has MSG_DONTWAIT.
pub fn send_to(fd: RawFd, buf: &[u8], to: Option<SocketAddr>, flags: i32) -> io::Result<usize> {
    let hdr = match to {
        Some(a) => Some(udp::header(&a)),
        // A payload that looks like a header gets one meaning "the connected peer"; so does
        // an empty one (a bare empty message reads as the end of the pair).
        None if buf.is_empty() || buf.starts_with(&udp::MAGIC) => Some(udp::header(
            &SocketAddr::new(std::net::Ipv4Addr::UNSPECIFIED.into(), 0),
        )),
        None => None,
    };
    let parts: Vec<&[u8]> = match &hdr {
        Some(h) => vec![h.as_slice(), buf],
        None => vec![buf],
    };
    let n = sys::send_vec(fd, &parts, flags)?;
    Ok(n.saturating_sub(if hdr.is_some() { udp::HEADER } else { 0 }))
}

/// Receives one datagram into `buf`; returns its length (truncated to `buf`, as MSG_TRUNC
/// is not asked) and where it came from, if the datagram says (unconnected sockets).
pub fn recv_from(fd: RawFd, buf: &mut [u8], flags: i32) -> io::Result<(usize, Option<SocketAddr>)> {
    let mut hdr = [0u8; udp::HEADER];
    let n = sys::recv_vec(fd, &mut [&mut hdr[..], buf], flags)?;
    if n == 0 {
        return udp_end(fd);
    }
    if n >= udp::HEADER && hdr[..4] == udp::MAGIC {
        return Ok((n - udp::HEADER, udp::parse_header(&hdr)));
    }
    // No header: bare payload, split across `hdr` and `buf`; put it together in `buf`.
    let head = n.min(udp::HEADER);
    let len = n.min(buf.len());
    if len > head {
        buf.copy_within(0..len - head, head);
    }
    let h = head.min(len);
    buf[..h].copy_from_slice(&hdr[..h]);
    Ok((len, None))
}

/// A read of 0 bytes without a header on a UDP stack fd: the end of the pair (the engine
/// shut its end, the stack was deleted), or the socket was shut for reading (empty
/// datagrams come with a header). It is shut for reading here, so that every later call
/// (another thread's blocked one too) returns at once; a deleted stack says ENETDOWN.
fn udp_end(fd: RawFd) -> io::Result<(usize, Option<SocketAddr>)> {
    let _ = sys::shutdown(fd, libc::SHUT_RD);
    let alive = call(fd, |sock| Request::GetOpt {
        sock,
        level: libc::SOL_SOCKET,
        name: libc::SO_TYPE,
    });
    match alive {
        Err(e) if e.raw_os_error() == Some(libc::ENETDOWN) => Err(e),
        _ => Ok((0, None)),
    }
}
