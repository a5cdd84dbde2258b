//! The syscall edge. Socket calls go through `syscall(2)` directly, never through libc's
//! `socket`, `connect`, `sendmsg`..., because the C library of this crate interposes those
//! symbols: the engine's own plumbing must not recurse into them.

mod diag;
pub use diag::unix_peer_gone;

use std::io;
use std::mem::{size_of, zeroed};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

fn cvt(r: libc::c_long) -> io::Result<libc::c_long> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// Returns `Err(errno)` as an `io::Error`.
pub fn errno_err(errno: i32) -> io::Error {
    io::Error::from_raw_os_error(errno)
}

/// A pair of connected AF_UNIX sockets of `ty` (SOCK_STREAM, SOCK_DGRAM, ...), close-on-exec.
pub fn socketpair(ty: i32) -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: fds is a valid array of two ints for the kernel to fill.
    cvt(unsafe {
        libc::syscall(
            libc::SYS_socketpair,
            libc::AF_UNIX,
            ty | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    })?;
    // SAFETY: the kernel just returned two fresh descriptors that nobody else owns.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// A pipe (read end, write end), both non-blocking and close-on-exec.
pub fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: fds is a valid array of two ints for the kernel to fill.
    cvt(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) }.into())?;
    // SAFETY: the kernel just returned two fresh descriptors that nobody else owns.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// A new AF_UNIX socket of `ty`, close-on-exec.
pub fn unix_socket(ty: i32) -> io::Result<OwnedFd> {
    // SAFETY: plain syscall with integer arguments.
    let fd =
        cvt(unsafe { libc::syscall(libc::SYS_socket, libc::AF_UNIX, ty | libc::SOCK_CLOEXEC, 0) })?;
    // SAFETY: fresh descriptor owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

fn abstract_addr(name: &[u8]) -> io::Result<(libc::sockaddr_un, libc::socklen_t)> {
    // SAFETY: sockaddr_un is plain old data; all-zero is a valid value.
    let mut sun: libc::sockaddr_un = unsafe { zeroed() };
    sun.sun_family = libc::AF_UNIX as libc::sa_family_t;
    if name.len() + 1 > sun.sun_path.len() {
        return Err(errno_err(libc::ENAMETOOLONG));
    }
    for (i, b) in name.iter().enumerate() {
        sun.sun_path[i + 1] = *b as libc::c_char;
    }
    let len = size_of::<libc::sa_family_t>() + 1 + name.len();
    Ok((sun, len as libc::socklen_t))
}

/// The address of a filesystem AF_UNIX socket.
pub fn path_addr(path: &std::path::Path) -> io::Result<(libc::sockaddr_un, libc::socklen_t)> {
    use std::os::unix::ffi::OsStrExt;
    let name = path.as_os_str().as_bytes();
    // SAFETY: sockaddr_un is plain old data; all-zero is a valid value.
    let mut sun: libc::sockaddr_un = unsafe { zeroed() };
    sun.sun_family = libc::AF_UNIX as libc::sa_family_t;
    if name.len() + 1 > sun.sun_path.len() || name.contains(&0) {
        return Err(errno_err(libc::ENAMETOOLONG));
    }
    for (i, b) in name.iter().enumerate() {
        sun.sun_path[i] = *b as libc::c_char;
    }
    Ok((sun, size_of::<libc::sockaddr_un>() as libc::socklen_t))
}

/// bind(2) of an AF_UNIX socket (not interposed).
pub fn bind_unix(fd: RawFd, sun: &libc::sockaddr_un, len: libc::socklen_t) -> io::Result<()> {
    // SAFETY: sun is a valid sockaddr_un of at least len bytes.
    cvt(unsafe { libc::syscall(libc::SYS_bind, fd, sun as *const _, len) })?;
    Ok(())
}

/// connect(2) of an AF_UNIX socket (not interposed), retrying on EINTR.
pub fn connect_unix(fd: RawFd, sun: &libc::sockaddr_un, len: libc::socklen_t) -> io::Result<()> {
    loop {
        // SAFETY: sun is a valid sockaddr_un of at least len bytes.
        match cvt(unsafe { libc::syscall(libc::SYS_connect, fd, sun as *const _, len) }) {
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
            r => return r.map(drop),
        }
    }
}

/// Receives what waits on a socket without blocking (not interposed), retrying on EINTR.
pub fn recv(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        // SAFETY: buf is valid for writes of buf.len() bytes; no address asked for.
        let r = unsafe {
            libc::syscall(
                libc::SYS_recvfrom,
                fd,
                buf.as_mut_ptr(),
                buf.len(),
                libc::MSG_DONTWAIT,
                std::ptr::null_mut::<libc::sockaddr>(),
                std::ptr::null_mut::<libc::socklen_t>(),
            )
        };
        match cvt(r) {
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
            other => return other.map(|n| n as usize),
        }
    }
}

/// Binds an AF_UNIX socket to an abstract name (no leading NUL in `name`).
pub fn bind_abstract(fd: RawFd, name: &[u8]) -> io::Result<()> {
    let (sun, len) = abstract_addr(name)?;
    // SAFETY: sun is a valid sockaddr_un of length len.
    cvt(unsafe { libc::syscall(libc::SYS_bind, fd, &sun as *const _, len) })?;
    Ok(())
}

/// Connects an AF_UNIX socket to an abstract name.
pub fn connect_abstract(fd: RawFd, name: &[u8]) -> io::Result<()> {
    let (sun, len) = abstract_addr(name)?;
    loop {
        // SAFETY: sun is a valid sockaddr_un of length len.
        let r = unsafe { libc::syscall(libc::SYS_connect, fd, &sun as *const _, len) };
        match cvt(r) {
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
            other => return other.map(drop),
        }
    }
}

/// The abstract name of the peer of an AF_UNIX socket, or None if it has none (or `fd` is
/// not an AF_UNIX socket).
pub fn peer_abstract_name(fd: RawFd) -> Option<Vec<u8>> {
    // SAFETY: sockaddr_un is plain old data.
    let mut sun: libc::sockaddr_un = unsafe { zeroed() };
    let mut len = size_of::<libc::sockaddr_un>() as libc::socklen_t;
    // SAFETY: sun and len are valid for the kernel to write.
    let r = unsafe { libc::syscall(libc::SYS_getpeername, fd, &mut sun as *mut _, &mut len) };
    if r < 0 || sun.sun_family != libc::AF_UNIX as libc::sa_family_t {
        return None;
    }
    let n = (len as usize).checked_sub(size_of::<libc::sa_family_t>())?;
    if n < 2 || sun.sun_path[0] != 0 {
        return None;
    }
    Some(sun.sun_path[1..n].iter().map(|c| *c as u8).collect())
}

/// listen(2).
pub fn listen(fd: RawFd, backlog: i32) -> io::Result<()> {
    // SAFETY: integer arguments only.
    cvt(unsafe { libc::syscall(libc::SYS_listen, fd, backlog) }).map(drop)
}

/// accept4(2) without the peer address, close-on-exec and nonblocking.
pub fn accept(fd: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: NULL address pointers are allowed.
    let r = cvt(unsafe {
        libc::syscall(
            libc::SYS_accept4,
            fd,
            std::ptr::null_mut::<libc::sockaddr>(),
            std::ptr::null_mut::<libc::socklen_t>(),
            libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
        )
    })?;
    // SAFETY: fresh descriptor.
    Ok(unsafe { OwnedFd::from_raw_fd(r as RawFd) })
}

/// shutdown(2).
pub fn shutdown(fd: RawFd, how: i32) -> io::Result<()> {
    // SAFETY: integer arguments only.
    cvt(unsafe { libc::syscall(libc::SYS_shutdown, fd, how) }).map(drop)
}

/// Sends one message with optional descriptors (SCM_RIGHTS), never raising SIGPIPE.
pub fn send_msg(fd: RawFd, data: &[u8], fds: &[RawFd]) -> io::Result<usize> {
    let mut iov = libc::iovec {
        iov_base: data.as_ptr() as *mut _,
        iov_len: data.len(),
    };
    let mut cbuf = [0u64; 8];
    // SAFETY: msghdr is plain old data.
    let mut msg: libc::msghdr = unsafe { zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if !fds.is_empty() {
        let bytes = std::mem::size_of_val(fds);
        // SAFETY: CMSG_SPACE is a pure computation.
        let space = unsafe { libc::CMSG_SPACE(bytes as u32) } as usize;
        assert!(space <= std::mem::size_of_val(&cbuf));
        msg.msg_control = cbuf.as_mut_ptr() as *mut _;
        msg.msg_controllen = space;
        // SAFETY: msg_control points at a buffer of msg_controllen bytes, large enough for one
        // header carrying `bytes` of data, so the first header and its data are in bounds.
        unsafe {
            let cmsg = libc::CMSG_FIRSTHDR(&msg);
            (*cmsg).cmsg_level = libc::SOL_SOCKET;
            (*cmsg).cmsg_type = libc::SCM_RIGHTS;
            (*cmsg).cmsg_len = libc::CMSG_LEN(bytes as u32) as usize;
            std::ptr::copy_nonoverlapping(fds.as_ptr() as *const u8, libc::CMSG_DATA(cmsg), bytes);
        }
    }
    loop {
        // SAFETY: msg and everything it points to live across the call.
        let r =
            unsafe { libc::syscall(libc::SYS_sendmsg, fd, &msg as *const _, libc::MSG_NOSIGNAL) };
        match cvt(r) {
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
            other => return other.map(|n| n as usize),
        }
    }
}

/// Fails with EMFILE when the process has no fd number free (it is at RLIMIT_NOFILE), by
/// taking one and giving it back.
pub fn fd_free() -> io::Result<()> {
    // Raw syscalls: the C library interposes fcntl and close. SAFETY: F_DUPFD_CLOEXEC of
    // fd 0 (EBADF if it is closed: then a number is free) makes a new fd we close at once.
    match cvt(unsafe { libc::syscall(libc::SYS_fcntl, 0, libc::F_DUPFD_CLOEXEC, 0) }) {
        Ok(fd) => {
            // SAFETY: the fd just made, ours alone.
            unsafe { libc::syscall(libc::SYS_close, fd) };
            Ok(())
        }
        Err(e) if e.raw_os_error() == Some(libc::EBADF) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Receives one message and up to one passed descriptor (made close-on-exec). A descriptor
/// the kernel could not install (the process is at its fd limit: it closes it and sets
/// MSG_CTRUNC) is EMFILE, the message read and lost.
pub fn recv_msg(fd: RawFd, buf: &mut [u8]) -> io::Result<(usize, Option<OwnedFd>)> {
    recv_msg_flags(fd, buf, 0)
}

/// recvmsg(2) with extra `flags` (MSG_DONTWAIT), as [`recv_msg`]. Descriptors past the first
/// are closed.
pub fn recv_msg_flags(
    fd: RawFd,
    buf: &mut [u8],
    flags: i32,
) -> io::Result<(usize, Option<OwnedFd>)> {
    let mut cbuf = [0u64; 8];
    let (n, fds, msg_flags) = recv_with_fds(fd, buf, flags, &mut cbuf)?;
    let passed = fds.into_iter().next();
    if passed.is_none() && msg_flags & libc::MSG_CTRUNC != 0 {
        return Err(errno_err(libc::EMFILE));
    }
    Ok((n, passed))
}

/// The most fds one SCM_RIGHTS message can carry (the kernel's SCM_MAX_FD).
const SCM_MAX_FD: usize = 253;

/// Receives one message from a peer that may not be trusted: every fd it passed (room is
/// made for as many as one message can carry, so that none is dropped, and closed, by the
/// kernel in the caller's thread) and the message's flags (MSG_TRUNC: it was longer than
/// `buf`). Nonblocking.
pub fn recv_msg_untrusted(fd: RawFd, buf: &mut [u8]) -> io::Result<(usize, Vec<OwnedFd>, i32)> {
    let mut cbuf = [0u64; (SCM_MAX_FD * 4 + 64) / 8];
    recv_with_fds(fd, buf, libc::MSG_DONTWAIT, &mut cbuf)
}

/// recvmsg(2) into `buf` with `cbuf` as room for control data: the bytes read, every fd
/// passed (close-on-exec) and the message's flags. Retries EINTR.
fn recv_with_fds(
    fd: RawFd,
    buf: &mut [u8],
    flags: i32,
    cbuf: &mut [u64],
) -> io::Result<(usize, Vec<OwnedFd>, i32)> {
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr() as *mut _,
        iov_len: buf.len(),
    };
    // SAFETY: msghdr is plain old data.
    let mut msg: libc::msghdr = unsafe { zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf.as_mut_ptr() as *mut _;
    msg.msg_controllen = std::mem::size_of_val(cbuf);
    let n = loop {
        // SAFETY: msg points at live buffers of the given sizes.
        let r = unsafe {
            libc::syscall(
                libc::SYS_recvmsg,
                fd,
                &mut msg as *mut _,
                libc::MSG_CMSG_CLOEXEC | flags,
            )
        };
        match cvt(r) {
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
            other => break other? as usize,
        }
    };
    let mut fds = Vec::new();
    // SAFETY: the kernel filled msg_control with msg_controllen bytes of valid headers; we walk
    // them with the CMSG macros, which stay within that length. Each fd is new and ours.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                let count = ((*cmsg).cmsg_len - libc::CMSG_LEN(0) as usize) / size_of::<RawFd>();
                let data = libc::CMSG_DATA(cmsg) as *const RawFd;
                for i in 0..count {
                    fds.push(OwnedFd::from_raw_fd(std::ptr::read_unaligned(data.add(i))));
                }
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    Ok((n, fds, msg.msg_flags))
}

/// Makes closing a socket return at once (SO_LINGER on, 0 s: a TCP socket is reset rather
/// than waiting for its data to go); fails with ENOTSOCK on anything else.
pub fn no_linger(fd: RawFd) -> io::Result<()> {
    let l = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: l lives across the call; its size is passed.
    cvt(unsafe {
        libc::syscall(
            libc::SYS_setsockopt,
            fd,
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            &l as *const libc::linger,
            size_of::<libc::linger>() as libc::socklen_t,
        )
    })
    .map(drop)
}

/// The (st_dev, st_ino) of an open file: what identifies a socket whatever fd names it.
pub fn file_id(fd: RawFd) -> io::Result<(u64, u64)> {
    // SAFETY: stat is plain old data.
    let mut st: libc::stat = unsafe { zeroed() };
    // SAFETY: st is valid for the kernel to write.
    if unsafe { libc::fstat(fd, &mut st) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((st.st_dev, st.st_ino))
}

/// The uid of the process at the other end of an AF_UNIX socket.
pub fn peer_uid(fd: RawFd) -> io::Result<u32> {
    peer_cred(fd).map(|c| c.uid)
}

/// The credentials (pid, uid, gid) of the peer of a connected AF_UNIX socket.
pub fn peer_cred(fd: RawFd) -> io::Result<libc::ucred> {
    // SAFETY: ucred is plain old data.
    let mut cred: libc::ucred = unsafe { zeroed() };
    let mut len = size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: cred and len are valid for the kernel to write.
    cvt(unsafe {
        libc::syscall(
            libc::SYS_getsockopt,
            fd,
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            &mut cred as *mut _,
            &mut len,
        )
    })?;
    Ok(cred)
}

/// Sets an integer socket option on one of our own AF_UNIX sockets.
pub fn setsockopt_int(fd: RawFd, level: i32, name: i32, value: i32) -> io::Result<()> {
    // SAFETY: value lives across the call; its size is passed.
    cvt(unsafe {
        libc::syscall(
            libc::SYS_setsockopt,
            fd,
            level,
            name,
            &value as *const i32,
            size_of::<i32>() as libc::socklen_t,
        )
    })
    .map(drop)
}

/// getsockopt(2) of an integer option.
pub fn getsockopt_int(fd: RawFd, level: i32, name: i32) -> io::Result<i32> {
    let mut value: i32 = 0;
    let mut len = size_of::<i32>() as libc::socklen_t;
    // SAFETY: value and len live across the call; len says how big value is.
    cvt(unsafe {
        libc::syscall(
            libc::SYS_getsockopt,
            fd,
            level,
            name,
            &mut value as *mut i32,
            &mut len,
        )
    })?;
    Ok(value)
}

/// Sets or clears O_NONBLOCK.
pub fn set_nonblocking(fd: RawFd, on: bool) -> io::Result<()> {
    // SAFETY: fcntl with integer arguments.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    let new = if on {
        flags | libc::O_NONBLOCK
    } else {
        flags & !libc::O_NONBLOCK
    };
    // SAFETY: fcntl with integer arguments.
    if new != flags && unsafe { libc::fcntl(fd, libc::F_SETFL, new) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Whether O_NONBLOCK is set.
pub fn is_nonblocking(fd: RawFd) -> bool {
    // SAFETY: fcntl with integer arguments.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    flags >= 0 && flags & libc::O_NONBLOCK != 0
}

/// read(2) (not interposed), retrying on EINTR.
pub fn read(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        // SAFETY: buf is valid for buf.len() bytes.
        let r = unsafe { libc::read(fd, buf.as_mut_ptr() as *mut _, buf.len()) };
        if r >= 0 {
            return Ok(r as usize);
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINTR) {
            return Err(e);
        }
    }
}

/// Sends bytes on one of our sockets without raising SIGPIPE, retrying on EINTR.
pub fn send(fd: RawFd, buf: &[u8]) -> io::Result<usize> {
    loop {
        // SAFETY: buf is valid for buf.len() bytes; no address.
        let r = unsafe {
            libc::syscall(
                libc::SYS_sendto,
                fd,
                buf.as_ptr(),
                buf.len(),
                libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT,
                std::ptr::null::<libc::sockaddr>(),
                0,
            )
        };
        match cvt(r) {
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
            other => return other.map(|n| n as usize),
        }
    }
}

/// How many bytes (skb truesize, for AF_UNIX) sent on `fd` the peer has not read yet.
pub fn unsent(fd: RawFd) -> io::Result<usize> {
    let mut n: libc::c_int = 0;
    // SAFETY: TIOCOUTQ (SIOCOUTQ) writes one int.
    cvt(unsafe { libc::ioctl(fd, libc::TIOCOUTQ, &mut n) }.into())?;
    Ok(n.max(0) as usize)
}

/// Waits until `fd` has one of `events`, or `timeout_ms` passes (-1: forever).
pub fn poll_one(fd: RawFd, events: i16, timeout_ms: i32) -> io::Result<i16> {
    let mut pfd = libc::pollfd {
        fd,
        events,
        revents: 0,
    };
    loop {
        // SAFETY: one valid pollfd.
        let r = unsafe { libc::poll(&mut pfd, 1, timeout_ms) };
        if r >= 0 {
            return Ok(pfd.revents);
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINTR) {
            return Err(e);
        }
    }
}

/// Converts a C socket address into a Rust one; None for other families or short lengths.
///
/// # Safety
/// `addr` must point at `len` readable bytes.
pub unsafe fn sockaddr_to_std(addr: *const libc::sockaddr, len: usize) -> Option<SocketAddr> {
    if addr.is_null() || len < size_of::<libc::sa_family_t>() {
        return None;
    }
    // SAFETY: the caller guarantees len readable bytes; we check the length before each read.
    unsafe {
        match (*addr).sa_family as i32 {
            libc::AF_INET if len >= size_of::<libc::sockaddr_in>() => {
                let a = std::ptr::read_unaligned(addr as *const libc::sockaddr_in);
                Some(SocketAddr::V4(SocketAddrV4::new(
                    Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr)),
                    u16::from_be(a.sin_port),
                )))
            }
            libc::AF_INET6 if len >= size_of::<libc::sockaddr_in6>() => {
                let a = std::ptr::read_unaligned(addr as *const libc::sockaddr_in6);
                Some(SocketAddr::V6(SocketAddrV6::new(
                    Ipv6Addr::from(a.sin6_addr.s6_addr),
                    u16::from_be(a.sin6_port),
                    a.sin6_flowinfo,
                    a.sin6_scope_id,
                )))
            }
            _ => None,
        }
    }
}

/// Converts a Rust socket address into C storage and its length.
pub fn std_to_sockaddr(addr: &SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: sockaddr_storage is plain old data.
    let mut ss: libc::sockaddr_storage = unsafe { zeroed() };
    let len = match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from(*a.ip()).to_be(),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than sockaddr_in and suitably aligned.
            unsafe { std::ptr::write(&mut ss as *mut _ as *mut libc::sockaddr_in, sin) };
            size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: sockaddr_storage is larger than sockaddr_in6 and suitably aligned.
            unsafe { std::ptr::write(&mut ss as *mut _ as *mut libc::sockaddr_in6, sin6) };
            size_of::<libc::sockaddr_in6>()
        }
    };
    (ss, len as libc::socklen_t)
}

/// The IPv4 address inside an IPv4-mapped IPv6 address, if it is one.
pub fn unmap(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => ip,
        },
        v4 => v4,
    }
}

/// sendmsg(2) of several buffers as one message, never raising SIGPIPE.
pub fn send_vec(fd: RawFd, parts: &[&[u8]], flags: i32) -> io::Result<usize> {
    let iov: Vec<libc::iovec> = parts
        .iter()
        .map(|p| libc::iovec {
            iov_base: p.as_ptr() as *mut _,
            iov_len: p.len(),
        })
        .collect();
    // SAFETY: msghdr is plain old data.
    let mut msg: libc::msghdr = unsafe { zeroed() };
    msg.msg_iov = iov.as_ptr() as *mut _;
    msg.msg_iovlen = iov.len();
    loop {
        // SAFETY: msg points at iovecs over live buffers.
        let r = unsafe {
            libc::syscall(
                libc::SYS_sendmsg,
                fd,
                &msg as *const _,
                flags | libc::MSG_NOSIGNAL,
            )
        };
        match cvt(r) {
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
            other => return other.map(|n| n as usize),
        }
    }
}

/// recvmsg(2) into several buffers.
pub fn recv_vec(fd: RawFd, parts: &mut [&mut [u8]], flags: i32) -> io::Result<usize> {
    let iov: Vec<libc::iovec> = parts
        .iter_mut()
        .map(|p| libc::iovec {
            iov_base: p.as_mut_ptr() as *mut _,
            iov_len: p.len(),
        })
        .collect();
    // SAFETY: msghdr is plain old data.
    let mut msg: libc::msghdr = unsafe { zeroed() };
    msg.msg_iov = iov.as_ptr() as *mut _;
    msg.msg_iovlen = iov.len();
    loop {
        // SAFETY: msg points at iovecs over live, writable buffers.
        let r = unsafe { libc::syscall(libc::SYS_recvmsg, fd, &mut msg as *mut _, flags) };
        match cvt(r) {
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
            other => return other.map(|n| n as usize),
        }
    }
}

/// Whether the other end of a socketpair is gone (POLLHUP), without waiting.
pub fn hung_up(fd: RawFd) -> bool {
    poll_one(fd, 0, 0).is_ok_and(|ev| ev & libc::POLLHUP != 0)
}
