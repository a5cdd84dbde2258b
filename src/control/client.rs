//! The client side of the control path, used by the Rust API and the C library alike.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use super::proto::{Reply, Request};
use crate::sys;

/// A handle on one engine's control socket: just its abstract name, so it stays valid
/// across fork() and can be passed to another program.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ctl {
    name: Vec<u8>,
}

/// The largest control message either side sends.
pub const MAX_MSG: usize = 64 * 1024;

impl Ctl {
    /// A handle on the engine whose control socket has this abstract name.
    pub fn from_name(name: Vec<u8>) -> Ctl {
        Ctl { name }
    }

    /// The control socket's abstract name.
    pub fn name(&self) -> &[u8] {
        &self.name
    }

    /// The engine and socket id behind a stack fd, or None if `fd` is not one.
    pub fn of_fd(fd: RawFd) -> Option<(Ctl, u64)> {
        let peer = sys::peer_abstract_name(fd)?;
        let (name, id) = super::parse_sock_name(&peer)?;
        Some((Ctl { name }, id))
    }

    /// Sends one request and waits for its reply (and the fd passed with it, if any).
    /// Each call has its own connection, so concurrent callers never see each other's replies.
    pub fn call_fd(&self, req: &Request) -> io::Result<(Reply, Option<OwnedFd>)> {
        let sock = sys::unix_socket(libc::SOCK_SEQPACKET)?;
        sys::connect_abstract(sock.as_raw_fd(), &self.name).map_err(|e| {
            if e.raw_os_error() == Some(libc::ECONNREFUSED) {
                // The engine is gone (its process ended): the stack no longer exists.
                sys::errno_err(libc::ENETDOWN)
            } else {
                e
            }
        })?;
        sys::send_msg(sock.as_raw_fd(), &req.encode(), &[])?;
        let mut buf = vec![0u8; MAX_MSG];
        let (n, fd) = sys::recv_msg(sock.as_raw_fd(), &mut buf)?;
        if n == 0 {
            return Err(sys::errno_err(libc::ENETDOWN));
        }
        Ok((Reply::decode(&buf[..n])?, fd))
    }

    /// Sends one request and returns its reply; `Reply::Err(e)` becomes an `io::Error`.
    pub fn call(&self, req: &Request) -> io::Result<Reply> {
        match self.call_fd(req)?.0 {
            Reply::Err(e) => Err(sys::errno_err(e)),
            r => Ok(r),
        }
    }

    /// Sends a request whose successful reply carries an fd.
    pub fn call_for_fd(&self, req: &Request) -> io::Result<(Reply, OwnedFd)> {
        match self.call_fd(req)? {
            (Reply::Err(e), _) => Err(sys::errno_err(e)),
            (r, Some(fd)) => Ok((r, fd)),
            (_, None) => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "engine sent no fd",
            )),
        }
    }
}
