//! sock_diag (NETLINK_SOCK_DIAG): what the kernel knows of an AF_UNIX socket that its own
//! calls do not tell.

use std::io;
use std::mem::size_of;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

/// SOCK_DIAG_BY_FAMILY (linux/sock_diag.h).
const SOCK_DIAG_BY_FAMILY: u16 = 20;
/// UDIAG_SHOW_PEER, UNIX_DIAG_PEER (linux/unix_diag.h).
const UDIAG_SHOW_PEER: u32 = 0x4;
const UNIX_DIAG_PEER: u16 = 2;

/// struct unix_diag_req.
#[repr(C)]
struct UnixDiagReq {
    family: u8,
    protocol: u8,
    pad: u16,
    states: u32,
    ino: u32,
    show: u32,
    cookie: [u32; 2],
}

#[repr(C)]
struct Request {
    nlh: libc::nlmsghdr,
    req: UnixDiagReq,
}

/// Whether the other end of AF_UNIX stream socket `fd` was closed for good (its last fd
/// went). A hang-up cannot tell: both ends shut for writing look the same. sock_diag can:
/// once the other end is released, the peer inode it reports is 0. None if it cannot say.
pub fn unix_peer_gone(fd: RawFd) -> Option<bool> {
    // SAFETY: stat is plain old data; fstat fills the one we own.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    if unsafe { libc::fstat(fd, &mut st) } < 0 {
        return None;
    }
    // SAFETY: socket(2) with constant arguments; the fd is owned at once. (syscall(2), not
    // libc's socket, which the C library interposes: see sys.)
    let nl = unsafe {
        libc::syscall(
            libc::SYS_socket,
            libc::AF_NETLINK,
            libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
            libc::NETLINK_SOCK_DIAG,
        )
    } as RawFd;
    if nl < 0 {
        return None;
    }
    // SAFETY: nl is a fresh fd we own.
    let nl = unsafe { OwnedFd::from_raw_fd(nl) };
    let msg = Request {
        nlh: libc::nlmsghdr {
            nlmsg_len: size_of::<Request>() as u32,
            nlmsg_type: SOCK_DIAG_BY_FAMILY,
            nlmsg_flags: libc::NLM_F_REQUEST as u16,
            nlmsg_seq: 1,
            nlmsg_pid: 0,
        },
        req: UnixDiagReq {
            family: libc::AF_UNIX as u8,
            protocol: 0,
            pad: 0,
            states: u32::MAX,
            ino: st.st_ino as u32,
            show: UDIAG_SHOW_PEER,
            cookie: [u32::MAX; 2], // INET_DIAG_NOCOOKIE
        },
    };
    use std::os::fd::AsRawFd;
    // SAFETY: msg is valid for its size; the kernel is the default destination.
    let sent = unsafe {
        libc::syscall(
            libc::SYS_sendto,
            nl.as_raw_fd(),
            &msg as *const Request as *const libc::c_void,
            size_of::<Request>(),
            0,
            std::ptr::null::<libc::sockaddr>(),
            0,
        )
    };
    if sent < 0 {
        return None;
    }
    let mut buf = [0u8; 1024];
    // SAFETY: buf is valid for its length; no address wanted.
    let n = unsafe {
        libc::syscall(
            libc::SYS_recvfrom,
            nl.as_raw_fd(),
            buf.as_mut_ptr(),
            buf.len(),
            0,
            std::ptr::null_mut::<libc::sockaddr>(),
            std::ptr::null_mut::<libc::socklen_t>(),
        )
    };
    let reply = buf.get(..usize::try_from(n).ok()?)?;
    parse_peer(reply).ok()
}

/// Reads the reply: Ok(true) when no live peer is reported.
fn parse_peer(m: &[u8]) -> io::Result<bool> {
    let bad = || io::Error::from(io::ErrorKind::InvalidData);
    let u16_at = |i: usize| m.get(i..i + 2).map(|b| u16::from_ne_bytes([b[0], b[1]]));
    let u32_at = |i: usize| {
        m.get(i..i + 4)
            .map(|b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
    };
    let len = u32_at(0).ok_or_else(bad)? as usize;
    if u16_at(4).ok_or_else(bad)? != SOCK_DIAG_BY_FAMILY || len > m.len() {
        return Err(bad()); // NLMSG_ERROR: no such socket, or no sock_diag
    }
    // nlmsghdr (16), then struct unix_diag_msg (16), then attributes.
    let mut at = 16 + 16;
    while at + 4 <= len {
        let alen = u16_at(at).ok_or_else(bad)? as usize;
        let kind = u16_at(at + 2).ok_or_else(bad)?;
        if alen < 4 {
            return Err(bad());
        }
        if kind == UNIX_DIAG_PEER {
            return Ok(u32_at(at + 4).ok_or_else(bad)? == 0);
        }
        at += alen.div_ceil(4) * 4;
    }
    Ok(true) // no peer at all
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    #[test]
    fn a_closed_peer_is_told_from_a_shut_one() {
        let (a, b) = crate::sys::socketpair(libc::SOCK_STREAM).unwrap();
        assert_eq!(unix_peer_gone(a.as_raw_fd()), Some(false));
        crate::sys::shutdown(a.as_raw_fd(), libc::SHUT_WR).unwrap();
        crate::sys::shutdown(b.as_raw_fd(), libc::SHUT_WR).unwrap();
        assert_eq!(unix_peer_gone(a.as_raw_fd()), Some(false), "both shut");
        drop(b);
        assert_eq!(unix_peer_gone(a.as_raw_fd()), Some(true), "closed");
    }
}
