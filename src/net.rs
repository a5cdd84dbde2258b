//! std::net-shaped sockets on a [`Stack`]: [`TcpListener`], [`TcpStream`], [`UdpSocket`].
//!
//! Each wraps the stack fd; data moves by plain read/write on it, so the fds also work with
//! poll/epoll and async runtimes (register them as any nonblocking fd).
//!
//! ```
//! use vdestack::{net::UdpSocket, Stack};
//! let a = Stack::new("mem://doc-net", None)?;
//! let b = Stack::new("mem://doc-net", None)?;
//! a.cmd("ip link set vde0 up; ip addr add 10.0.0.1/24 dev vde0")?;
//! b.cmd("ip link set vde0 up; ip addr add 10.0.0.2/24 dev vde0")?;
//! let server = UdpSocket::bind(&a, "10.0.0.1:53")?;
//! let client = UdpSocket::bind(&b, "0.0.0.0:0")?;
//! client.send_to(b"query", "10.0.0.1:53")?;
//! let mut buf = [0; 16];
//! let (n, from) = server.recv_from(&mut buf)?;
//! assert_eq!((&buf[..n], from.ip().to_string().as_str()), (&b"query"[..], "10.0.0.2"));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! The types have std's traits: the fd traits (`AsFd`, `AsRawFd`, `IntoRawFd`,
//! `FromRawFd`, `From<OwnedFd>`, `OwnedFd: From<_>`), a `Debug` with the addresses, and
//! `TryFrom` the matching `std::net` type, which takes a stack's socket (a program run with
//! libvdestack.so preloaded makes its std sockets in its stack) and gives any other back.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, ToSocketAddrs};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};

use crate::socket;
use crate::sys;
use crate::Stack;

fn domain_of(a: &SocketAddr) -> i32 {
    if a.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    }
}

fn each_addr<A: ToSocketAddrs, T>(
    addr: A,
    mut f: impl FnMut(SocketAddr) -> io::Result<T>,
) -> io::Result<T> {
    let mut last = io::Error::new(io::ErrorKind::InvalidInput, "no addresses to try");
    for a in addr.to_socket_addrs()? {
        match f(a) {
            Ok(t) => return Ok(t),
            Err(e) => last = e,
        }
    }
    Err(last)
}

fn how(h: Shutdown) -> i32 {
    match h {
        Shutdown::Read => libc::SHUT_RD,
        Shutdown::Write => libc::SHUT_WR,
        Shutdown::Both => libc::SHUT_RDWR,
    }
}

/// Whether `fd` is a stack socket whose pair is of type `pair_ty` (SOCK_STREAM for TCP,
/// SOCK_SEQPACKET for UDP) and, for TCP, a listener or not as `listener` says.
fn is_kind(fd: RawFd, pair_ty: i32, listener: Option<bool>) -> bool {
    socket::is_stack_fd(fd)
        && sys::getsockopt_int(fd, libc::SOL_SOCKET, libc::SO_TYPE).ok() == Some(pair_ty)
        && listener.is_none_or(|l| socket::is_listener(fd) == l)
}

macro_rules! fd_traits {
    ($t:ident, $std:ty, $pair_ty:expr, $listener:expr) => {
        /// Takes a std socket that is one of a stack's (a program run with libvdestack.so
        /// preloaded makes its std sockets in its stack); gives it back when it is not, or
        /// not of this kind.
        impl TryFrom<$std> for $t {
            type Error = $std;
            fn try_from(s: $std) -> Result<$t, $std> {
                if is_kind(s.as_raw_fd(), $pair_ty, $listener) {
                    Ok($t {
                        fd: OwnedFd::from(s),
                    })
                } else {
                    Err(s)
                }
            }
        }
        impl AsFd for $t {
            fn as_fd(&self) -> BorrowedFd<'_> {
                self.fd.as_fd()
            }
        }
        impl AsRawFd for $t {
            fn as_raw_fd(&self) -> RawFd {
                self.fd.as_raw_fd()
            }
        }
        impl IntoRawFd for $t {
            fn into_raw_fd(self) -> RawFd {
                self.fd.into_raw_fd()
            }
        }
        impl From<OwnedFd> for $t {
            fn from(fd: OwnedFd) -> $t {
                $t { fd }
            }
        }
        impl From<$t> for OwnedFd {
            fn from(s: $t) -> OwnedFd {
                s.fd
            }
        }
        impl FromRawFd for $t {
            unsafe fn from_raw_fd(fd: RawFd) -> $t {
                // SAFETY: the caller hands over ownership of an open fd.
                $t {
                    fd: unsafe { OwnedFd::from_raw_fd(fd) },
                }
            }
        }
        impl $t {
            /// The local address.
            pub fn local_addr(&self) -> io::Result<SocketAddr> {
                socket::local_addr(self.fd.as_raw_fd())
            }
            /// Moves the socket into or out of nonblocking mode.
            pub fn set_nonblocking(&self, on: bool) -> io::Result<()> {
                sys::set_nonblocking(self.fd.as_raw_fd(), on)
            }
            /// Takes the pending error (SO_ERROR).
            pub fn take_error(&self) -> io::Result<Option<io::Error>> {
                let e = socket::get_opt(self.fd.as_raw_fd(), libc::SOL_SOCKET, libc::SO_ERROR)?;
                Ok((e != 0).then(|| io::Error::from_raw_os_error(e)))
            }
        }
    };
}

/// A TCP listener in a stack.
pub struct TcpListener {
    fd: OwnedFd,
}

fd_traits!(
    TcpListener,
    std::net::TcpListener,
    libc::SOCK_STREAM,
    Some(true)
);

impl std::fmt::Debug for TcpListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut d = f.debug_struct("TcpListener");
        if let Ok(a) = self.local_addr() {
            d.field("addr", &a);
        }
        d.field("fd", &self.fd.as_raw_fd()).finish()
    }
}

impl TcpListener {
    /// Binds to `addr` in `stack` and listens (backlog 128).
    pub fn bind<A: ToSocketAddrs>(stack: &Stack, addr: A) -> io::Result<TcpListener> {
        each_addr(addr, |a| {
            let fd = stack.socket(domain_of(&a), libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0)?;
            socket::set_opt(fd.as_raw_fd(), libc::SOL_SOCKET, libc::SO_REUSEADDR, 1)?;
            socket::bind(fd.as_raw_fd(), a)?;
            socket::listen(fd.as_raw_fd(), 128)?;
            Ok(TcpListener { fd })
        })
    }

    /// Waits for a connection.
    pub fn accept(&self) -> io::Result<(TcpStream, SocketAddr)> {
        let (fd, peer) = socket::accept(self.fd.as_raw_fd(), libc::SOCK_CLOEXEC)?;
        Ok((TcpStream { fd }, peer))
    }

    /// An endless iterator over incoming connections.
    pub fn incoming(&self) -> Incoming<'_> {
        Incoming { listener: self }
    }
}

/// Iterator returned by [`TcpListener::incoming`].
#[derive(Debug)]
pub struct Incoming<'a> {
    listener: &'a TcpListener,
}

impl Iterator for Incoming<'_> {
    type Item = io::Result<TcpStream>;
    fn next(&mut self) -> Option<Self::Item> {
        Some(self.listener.accept().map(|(s, _)| s))
    }
}

/// A TCP connection in a stack.
pub struct TcpStream {
    fd: OwnedFd,
}

fd_traits!(
    TcpStream,
    std::net::TcpStream,
    libc::SOCK_STREAM,
    Some(false)
);

impl std::fmt::Debug for TcpStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut d = f.debug_struct("TcpStream");
        if let Ok(a) = self.local_addr() {
            d.field("addr", &a);
        }
        if let Ok(a) = self.peer_addr() {
            d.field("peer", &a);
        }
        d.field("fd", &self.fd.as_raw_fd()).finish()
    }
}

impl TcpStream {
    /// Connects to `addr` from `stack`.
    pub fn connect<A: ToSocketAddrs>(stack: &Stack, addr: A) -> io::Result<TcpStream> {
        each_addr(addr, |a| {
            let fd = stack.socket(domain_of(&a), libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0)?;
            socket::connect(fd.as_raw_fd(), a)?;
            Ok(TcpStream { fd })
        })
    }

    /// The peer's address.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        socket::peer_addr(self.fd.as_raw_fd())
    }

    /// Shuts down reading, writing or both.
    pub fn shutdown(&self, h: Shutdown) -> io::Result<()> {
        socket::shutdown(self.fd.as_raw_fd(), how(h))
    }

    /// Sets TCP_NODELAY.
    pub fn set_nodelay(&self, on: bool) -> io::Result<()> {
        socket::set_opt(
            self.fd.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_NODELAY,
            on as i32,
        )
    }

    /// Reads TCP_NODELAY.
    pub fn nodelay(&self) -> io::Result<bool> {
        Ok(socket::get_opt(self.fd.as_raw_fd(), libc::IPPROTO_TCP, libc::TCP_NODELAY)? != 0)
    }

    /// Another handle on the same connection (dup).
    pub fn try_clone(&self) -> io::Result<TcpStream> {
        Ok(TcpStream {
            fd: self.fd.try_clone()?,
        })
    }
}

impl Read for &TcpStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let fd = self.fd.as_raw_fd();
        match sys::read(fd, buf) {
            Ok(0) if !buf.is_empty() => socket::stream_eof(fd),
            Err(e) if e.raw_os_error() == Some(libc::ECONNRESET) => {
                socket::reset_reported(fd);
                Err(e)
            }
            r => r,
        }
    }
}

impl Write for &TcpStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let fd = self.fd.as_raw_fd();
        // No SIGPIPE, as std's TcpStream.
        sys::send_vec(fd, &[buf], libc::MSG_NOSIGNAL).map_err(|e| match e.raw_os_error() {
            Some(libc::EPIPE) => socket::broken_pipe(fd, libc::MSG_NOSIGNAL),
            Some(libc::ECONNRESET) => {
                socket::reset_reported(fd);
                e
            }
            _ => e,
        })
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Read for TcpStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        (&*self).read(buf)
    }
}

impl Write for TcpStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        (&*self).write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A UDP socket in a stack.
pub struct UdpSocket {
    fd: OwnedFd,
}

fd_traits!(UdpSocket, std::net::UdpSocket, libc::SOCK_SEQPACKET, None);

impl std::fmt::Debug for UdpSocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut d = f.debug_struct("UdpSocket");
        if let Ok(a) = self.local_addr() {
            d.field("addr", &a);
        }
        d.field("fd", &self.fd.as_raw_fd()).finish()
    }
}

impl UdpSocket {
    /// Binds to `addr` in `stack`.
    pub fn bind<A: ToSocketAddrs>(stack: &Stack, addr: A) -> io::Result<UdpSocket> {
        each_addr(addr, |a| {
            let fd = stack.socket(domain_of(&a), libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0)?;
            socket::bind(fd.as_raw_fd(), a)?;
            Ok(UdpSocket { fd })
        })
    }

    /// Sends a datagram to `addr`.
    pub fn send_to<A: ToSocketAddrs>(&self, buf: &[u8], addr: A) -> io::Result<usize> {
        let a = addr
            .to_socket_addrs()?
            .next()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no address"))?;
        socket::send_to(self.fd.as_raw_fd(), buf, Some(a), 0)
    }

    /// Receives a datagram and its sender.
    pub fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        let (n, from) = socket::recv_from(self.fd.as_raw_fd(), buf, 0)?;
        match from {
            Some(a) => Ok((n, a)),
            None => Ok((n, self.peer_addr()?)),
        }
    }

    /// Sets the peer: `send`/`recv` then talk to it alone.
    pub fn connect<A: ToSocketAddrs>(&self, addr: A) -> io::Result<()> {
        each_addr(addr, |a| socket::connect(self.fd.as_raw_fd(), a))
    }

    /// Sends to the connected peer.
    pub fn send(&self, buf: &[u8]) -> io::Result<usize> {
        socket::send_to(self.fd.as_raw_fd(), buf, None, 0)
    }

    /// Receives from the connected peer.
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        socket::recv_from(self.fd.as_raw_fd(), buf, 0).map(|(n, _)| n)
    }

    /// The connected peer.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        socket::peer_addr(self.fd.as_raw_fd())
    }
}
