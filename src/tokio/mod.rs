//! tokio-shaped sockets on a [`Stack`](crate::Stack) (feature `tokio`): [`TcpListener`], [`TcpStream`],
//! [`UdpSocket`], with the names and signatures of `tokio::net`'s, plus the stack as first
//! argument where a socket is made. Code moves from `tokio::net` by changing the import:
//!
//! ```
//! use tokio::io::{AsyncReadExt, AsyncWriteExt};
//! use vdestack::tokio::{TcpListener, TcpStream};
//! use vdestack::Stack;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> std::io::Result<()> {
//! let a = Stack::new("mem://doc", None)?;
//! let b = Stack::new("mem://doc", None)?;
//! a.cmd("ip link set vde0 up; ip addr add 10.0.0.1/24 dev vde0").unwrap();
//! b.cmd("ip link set vde0 up; ip addr add 10.0.0.2/24 dev vde0").unwrap();
//!
//! let listener = TcpListener::bind(&a, "10.0.0.1:7").await?;
//! tokio::spawn(async move {
//!     let (mut conn, _) = listener.accept().await?;
//!     let (mut rd, mut wr) = conn.split();
//!     tokio::io::copy(&mut rd, &mut wr).await
//! });
//! let mut conn = TcpStream::connect(&b, "10.0.0.1:7").await?;
//! conn.write_all(b"ping").await?;
//! let mut buf = [0; 4];
//! conn.read_exact(&mut buf).await?;
//! assert_eq!(&buf, b"ping");
//! # Ok(())
//! # }
//! ```
//!
//! Each socket is a stack fd (see [`crate::net`]) registered with the runtime's reactor,
//! nonblocking: data moves by read/write on the fd when the reactor says it is ready. No
//! call blocks a runtime thread: `connect` is the nonblocking kind (EINPROGRESS, then the
//! fd turns writable when the outcome is known, then SO_ERROR tells it), `accept` takes a
//! connection when the listener's fd is readable, and the other requests to the engine
//! (socket, bind, listen, names, options) are local round trips it answers at once.
//!
//! Host names in addresses are resolved as tokio does (`tokio::net::lookup_host`, the
//! host's resolver, off the runtime's threads); literal addresses need no lookup.
//!
//! Like tokio's, these types must be made inside a runtime with IO enabled.

mod listener;
mod split;
mod split_owned;
mod stream;
mod udp;

pub use listener::TcpListener;
pub use stream::TcpStream;
pub use udp::UdpSocket;

/// The halves of a split [`TcpStream`], as in `tokio::net::tcp`.
pub mod tcp {
    pub use super::split::{ReadHalf, WriteHalf};
    pub use super::split_owned::{OwnedReadHalf, OwnedWriteHalf, ReuniteError};
}

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;

use ::tokio::io::unix::AsyncFd;
use ::tokio::net::{lookup_host, ToSocketAddrs};

use crate::sys;

/// AF_INET or AF_INET6, for a socket that talks to `a`.
fn domain_of(a: &SocketAddr) -> i32 {
    if a.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    }
}

/// Resolves `addr` as tokio does, without blocking.
async fn resolve<A: ToSocketAddrs>(addr: A) -> io::Result<Vec<SocketAddr>> {
    let v: Vec<SocketAddr> = lookup_host(addr).await?.collect();
    if v.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "could not resolve to any address",
        ));
    }
    Ok(v)
}

/// Makes a stack socket nonblocking and registers it with the runtime's reactor.
fn register<T: AsRawFd>(sock: T) -> io::Result<AsyncFd<T>> {
    sys::set_nonblocking(sock.as_raw_fd(), true)?;
    // SAFETY: every T here is one of crate::net's sockets, which owns its fd and gives the
    // same one for its whole life; it moves into the AsyncFd, so the fd stays open until the
    // AsyncFd is dropped or gives it back (into_inner).
    unsafe { AsyncFd::register(sock) }.map_err(|e| e.into_parts().1)
}
