//! [`TcpListener`]: `tokio::net::TcpListener` on a stack.

use std::fmt;
use std::future::poll_fn;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::task::{ready, Context, Poll};

use ::tokio::io::unix::AsyncFd;
use ::tokio::net::ToSocketAddrs;

use super::{domain_of, register, resolve, TcpStream};
use crate::{net, socket, Stack};

/// A TCP listener in a stack, as `tokio::net::TcpListener`.
///
/// ```
/// use vdestack::tokio::{TcpListener, TcpStream};
/// use vdestack::Stack;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> std::io::Result<()> {
/// let stack = Stack::new("", None)?; // loopback only
/// let listener = TcpListener::bind(&stack, "127.0.0.1:8080").await?;
/// let client = TcpStream::connect(&stack, "127.0.0.1:8080").await?;
/// let (conn, peer) = listener.accept().await?;
/// assert_eq!(peer, client.local_addr()?);
/// assert_eq!(conn.peer_addr()?, peer);
/// # Ok(())
/// # }
/// ```
pub struct TcpListener {
    io: AsyncFd<net::TcpListener>,
}

impl TcpListener {
    /// Binds to `addr` in `stack` and listens, with SO_REUSEADDR and a backlog of 1024 as
    /// tokio's; tries each address `addr` resolves to until one works.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> std::io::Result<()> {
    /// let stack = vdestack::Stack::new("", None)?;
    /// let listener = vdestack::tokio::TcpListener::bind(&stack, "127.0.0.1:0").await?;
    /// assert_ne!(listener.local_addr()?.port(), 0);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn bind<A: ToSocketAddrs>(stack: &Stack, addr: A) -> io::Result<TcpListener> {
        let mut last = None;
        for a in resolve(addr).await? {
            match listen(stack, a) {
                Ok(l) => return TcpListener::from_std(l),
                Err(e) => last = Some(e),
            }
        }
        Err(last.expect("resolve gives at least one address"))
    }

    /// Waits for a connection and takes it; the stream is registered with the runtime.
    ///
    /// Cancel-safe: a connection is taken whole (one `recvmsg` of its fd from the
    /// listener's) or not at all, so dropping the future loses none.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> std::io::Result<()> {
    /// # let stack = vdestack::Stack::new("", None)?;
    /// let listener = vdestack::tokio::TcpListener::bind(&stack, "127.0.0.1:80").await?;
    /// let _c = vdestack::tokio::TcpStream::connect(&stack, "127.0.0.1:80").await?;
    /// let (conn, peer) = listener.accept().await?;
    /// assert_eq!(peer.ip().to_string(), "127.0.0.1");
    /// # Ok(())
    /// # }
    /// ```
    pub async fn accept(&self) -> io::Result<(TcpStream, SocketAddr)> {
        poll_fn(|cx| self.poll_accept(cx)).await
    }

    /// Polls for a connection: `Ready` with it, or `Pending` with `cx` woken when one may
    /// wait. Only the last `cx` passed is woken.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> std::io::Result<()> {
    /// # let stack = vdestack::Stack::new("", None)?;
    /// let listener = vdestack::tokio::TcpListener::bind(&stack, "127.0.0.1:80").await?;
    /// let _c = vdestack::tokio::TcpStream::connect(&stack, "127.0.0.1:80").await?;
    /// let (conn, _) = std::future::poll_fn(|cx| listener.poll_accept(cx)).await?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn poll_accept(&self, cx: &mut Context<'_>) -> Poll<io::Result<(TcpStream, SocketAddr)>> {
        loop {
            let mut guard = ready!(self.io.poll_read_ready(cx))?;
            let taken = guard.try_io(|l| {
                socket::accept(l.as_raw_fd(), libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK)
            });
            match taken {
                Ok(Ok((fd, peer))) => {
                    return Poll::Ready(
                        TcpStream::from_std(net::TcpStream::from(fd)).map(|s| (s, peer)),
                    )
                }
                Ok(Err(e)) => return Poll::Ready(Err(e)),
                Err(_would_block) => continue,
            }
        }
    }

    /// Makes a blocking [`net::TcpListener`] an async one: sets it nonblocking and registers
    /// it with the current runtime (panics outside one, as tokio's).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> std::io::Result<()> {
    /// # let stack = vdestack::Stack::new("", None)?;
    /// let std_listener = vdestack::net::TcpListener::bind(&stack, "127.0.0.1:80")?;
    /// let listener = vdestack::tokio::TcpListener::from_std(std_listener)?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn from_std(listener: net::TcpListener) -> io::Result<TcpListener> {
        Ok(TcpListener {
            io: register(listener)?,
        })
    }

    /// Gives back the blocking [`net::TcpListener`], deregistered and still nonblocking
    /// (as tokio's `into_std`).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> std::io::Result<()> {
    /// # let stack = vdestack::Stack::new("", None)?;
    /// let listener = vdestack::tokio::TcpListener::bind(&stack, "127.0.0.1:80").await?;
    /// let std_listener = listener.into_std()?;
    /// std_listener.set_nonblocking(false)?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn into_std(self) -> io::Result<net::TcpListener> {
        Ok(self.io.into_inner())
    }

    /// The local address.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> std::io::Result<()> {
    /// # let stack = vdestack::Stack::new("", None)?;
    /// let listener = vdestack::tokio::TcpListener::bind(&stack, "127.0.0.1:80").await?;
    /// assert_eq!(listener.local_addr()?, "127.0.0.1:80".parse().unwrap());
    /// # Ok(())
    /// # }
    /// ```
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.io.get_ref().local_addr()
    }
}

/// A listening socket bound to `addr`, as tokio's `bind` makes it.
fn listen(stack: &Stack, addr: SocketAddr) -> io::Result<net::TcpListener> {
    let ty = libc::SOCK_STREAM | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK;
    let l = net::TcpListener::from(stack.socket(domain_of(&addr), ty, 0)?);
    socket::set_opt(l.as_raw_fd(), libc::SOL_SOCKET, libc::SO_REUSEADDR, 1)?;
    socket::bind(l.as_raw_fd(), addr)?;
    socket::listen(l.as_raw_fd(), 1024)?;
    Ok(l)
}

impl TryFrom<net::TcpListener> for TcpListener {
    type Error = io::Error;

    /// As [`TcpListener::from_std`].
    fn try_from(l: net::TcpListener) -> io::Result<TcpListener> {
        TcpListener::from_std(l)
    }
}

impl fmt::Debug for TcpListener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TcpListener")
            .field("fd", &self.as_raw_fd())
            .finish()
    }
}

impl AsRawFd for TcpListener {
    fn as_raw_fd(&self) -> RawFd {
        self.io.as_raw_fd()
    }
}

impl AsFd for TcpListener {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.io.get_ref().as_fd()
    }
}
