//! [`UdpSocket`]: `tokio::net::UdpSocket` on a stack.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::task::{ready, Context, Poll};

use ::tokio::io::unix::AsyncFd;
use ::tokio::io::{Interest, ReadBuf};
use ::tokio::net::ToSocketAddrs;

use super::{register, resolve};
use crate::{net, Stack};

/// A UDP socket in a stack, as `tokio::net::UdpSocket`. Every method takes `&self`: share
/// it between tasks in an `Arc` to send and receive at once.
///
/// ```
/// use vdestack::tokio::UdpSocket;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> std::io::Result<()> {
/// let a = vdestack::Stack::new("mem://lan", None)?;
/// let b = vdestack::Stack::new("mem://lan", None)?;
/// a.cmd("ip link set vde0 up; ip addr add 10.0.0.1/24 dev vde0").unwrap();
/// b.cmd("ip link set vde0 up; ip addr add 10.0.0.2/24 dev vde0").unwrap();
/// let server = UdpSocket::bind(&a, "10.0.0.1:53").await?;
/// let client = UdpSocket::bind(&b, "0.0.0.0:0").await?;
/// client.send_to(b"query", "10.0.0.1:53").await?;
/// let mut buf = [0; 64];
/// let (n, from) = server.recv_from(&mut buf).await?;
/// assert_eq!(&buf[..n], b"query");
/// assert_eq!(from.ip().to_string(), "10.0.0.2");
/// # Ok(())
/// # }
/// ```
pub struct UdpSocket {
    io: AsyncFd<net::UdpSocket>,
}

impl UdpSocket {
    /// Binds to `addr` in `stack`, trying each address it resolves to until one works.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> std::io::Result<()> {
    /// let stack = vdestack::Stack::new("", None)?;
    /// let sock = vdestack::tokio::UdpSocket::bind(&stack, "127.0.0.1:0").await?;
    /// assert_ne!(sock.local_addr()?.port(), 0);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn bind<A: ToSocketAddrs>(stack: &Stack, addr: A) -> io::Result<UdpSocket> {
        let mut last = None;
        for a in resolve(addr).await? {
            match net::UdpSocket::bind(stack, a) {
                Ok(s) => return UdpSocket::from_std(s),
                Err(e) => last = Some(e),
            }
        }
        Err(last.expect("resolve gives at least one address"))
    }

    /// Sets the peer: [`UdpSocket::send`] and [`UdpSocket::recv`] then talk to it alone, and
    /// datagrams from others are dropped.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> std::io::Result<()> {
    /// # let stack = vdestack::Stack::new("", None)?;
    /// let a = vdestack::tokio::UdpSocket::bind(&stack, "127.0.0.1:1000").await?;
    /// let b = vdestack::tokio::UdpSocket::bind(&stack, "127.0.0.1:2000").await?;
    /// a.connect("127.0.0.1:2000").await?;
    /// b.connect("127.0.0.1:1000").await?;
    /// a.send(b"ping").await?;
    /// let mut buf = [0; 8];
    /// assert_eq!(b.recv(&mut buf).await?, 4);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn connect<A: ToSocketAddrs>(&self, addr: A) -> io::Result<()> {
        let mut last = None;
        for a in resolve(addr).await? {
            match self.io.get_ref().connect(a) {
                Ok(()) => return Ok(()),
                Err(e) => last = Some(e),
            }
        }
        Err(last.expect("resolve gives at least one address"))
    }

    /// Sends a datagram to the connected peer; returns the bytes sent.
    ///
    /// See [`UdpSocket::connect`] for an example.
    pub async fn send(&self, buf: &[u8]) -> io::Result<usize> {
        self.io.async_io(Interest::WRITABLE, |s| s.send(buf)).await
    }

    /// Receives a datagram from the connected peer; a datagram longer than `buf` is cut.
    ///
    /// See [`UdpSocket::connect`] for an example.
    pub async fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.io.async_io(Interest::READABLE, |s| s.recv(buf)).await
    }

    /// Sends a datagram to `target` (its first address, if it resolves to several).
    ///
    /// See [`UdpSocket`] for an example.
    pub async fn send_to<A: ToSocketAddrs>(&self, buf: &[u8], target: A) -> io::Result<usize> {
        let to = resolve(target).await?[0];
        self.io
            .async_io(Interest::WRITABLE, |s| s.send_to(buf, to))
            .await
    }

    /// Receives a datagram and its sender; a datagram longer than `buf` is cut.
    ///
    /// Cancel-safe: a datagram is taken whole or not at all.
    ///
    /// See [`UdpSocket`] for an example.
    pub async fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        self.io
            .async_io(Interest::READABLE, |s| s.recv_from(buf))
            .await
    }

    /// Polls to send a datagram to `target`.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> std::io::Result<()> {
    /// # let stack = vdestack::Stack::new("", None)?;
    /// let sock = vdestack::tokio::UdpSocket::bind(&stack, "127.0.0.1:0").await?;
    /// let to = sock.local_addr()?;
    /// let n = std::future::poll_fn(|cx| sock.poll_send_to(cx, b"self", to)).await?;
    /// assert_eq!(n, 4);
    /// # Ok(())
    /// # }
    /// ```
    pub fn poll_send_to(
        &self,
        cx: &mut Context<'_>,
        buf: &[u8],
        target: SocketAddr,
    ) -> Poll<io::Result<usize>> {
        loop {
            let mut guard = ready!(self.io.poll_write_ready(cx))?;
            match guard.try_io(|s| s.get_ref().send_to(buf, target)) {
                Ok(r) => return Poll::Ready(r),
                Err(_would_block) => continue,
            }
        }
    }

    /// Polls to receive a datagram into `buf`'s unfilled part; returns its sender.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> std::io::Result<()> {
    /// # let stack = vdestack::Stack::new("", None)?;
    /// let sock = vdestack::tokio::UdpSocket::bind(&stack, "127.0.0.1:0").await?;
    /// sock.send_to(b"self", sock.local_addr()?).await?;
    /// let mut mem = [0; 16];
    /// let mut buf = tokio::io::ReadBuf::new(&mut mem);
    /// let from = std::future::poll_fn(|cx| sock.poll_recv_from(cx, &mut buf)).await?;
    /// assert_eq!(buf.filled(), b"self");
    /// assert_eq!(from, sock.local_addr()?);
    /// # Ok(())
    /// # }
    /// ```
    pub fn poll_recv_from(
        &self,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<SocketAddr>> {
        loop {
            let mut guard = ready!(self.io.poll_read_ready(cx))?;
            let unfilled = buf.initialize_unfilled();
            match guard.try_io(|s| s.get_ref().recv_from(unfilled)) {
                Ok(Ok((n, from))) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(from));
                }
                Ok(Err(e)) => return Poll::Ready(Err(e)),
                Err(_would_block) => continue,
            }
        }
    }

    /// Sends a datagram to `target` if there is room now; WouldBlock if not.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> std::io::Result<()> {
    /// # let stack = vdestack::Stack::new("", None)?;
    /// let sock = vdestack::tokio::UdpSocket::bind(&stack, "127.0.0.1:0").await?;
    /// sock.writable().await?;
    /// sock.try_send_to(b"self", sock.local_addr()?)?;
    /// sock.readable().await?;
    /// let mut buf = [0; 16];
    /// let (n, _) = sock.try_recv_from(&mut buf)?;
    /// assert_eq!(&buf[..n], b"self");
    /// # Ok(())
    /// # }
    /// ```
    pub fn try_send_to(&self, buf: &[u8], target: SocketAddr) -> io::Result<usize> {
        self.io
            .try_io(Interest::WRITABLE, |s| s.send_to(buf, target))
    }

    /// Receives a datagram if one waits; WouldBlock if none.
    ///
    /// See [`UdpSocket::try_send_to`] for an example.
    pub fn try_recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        self.io.try_io(Interest::READABLE, |s| s.recv_from(buf))
    }

    /// Waits until a datagram may be received.
    ///
    /// See [`UdpSocket::try_send_to`] for an example.
    pub async fn readable(&self) -> io::Result<()> {
        self.io.readable().await.map(drop)
    }

    /// Waits until a datagram may be sent.
    ///
    /// See [`UdpSocket::try_send_to`] for an example.
    pub async fn writable(&self) -> io::Result<()> {
        self.io.writable().await.map(drop)
    }

    /// Makes a blocking [`net::UdpSocket`] an async one: sets it nonblocking and registers
    /// it with the current runtime (panics outside one, as tokio's).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> std::io::Result<()> {
    /// # let stack = vdestack::Stack::new("", None)?;
    /// let std_sock = vdestack::net::UdpSocket::bind(&stack, "127.0.0.1:0")?;
    /// let sock = vdestack::tokio::UdpSocket::from_std(std_sock)?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn from_std(sock: net::UdpSocket) -> io::Result<UdpSocket> {
        Ok(UdpSocket {
            io: register(sock)?,
        })
    }

    /// Gives back the blocking [`net::UdpSocket`], deregistered and still nonblocking (as
    /// tokio's `into_std`).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> std::io::Result<()> {
    /// # let stack = vdestack::Stack::new("", None)?;
    /// let sock = vdestack::tokio::UdpSocket::bind(&stack, "127.0.0.1:0").await?;
    /// let std_sock = sock.into_std()?;
    /// std_sock.set_nonblocking(false)?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn into_std(self) -> io::Result<net::UdpSocket> {
        Ok(self.io.into_inner())
    }

    /// The local address.
    ///
    /// See [`UdpSocket::bind`] for an example.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.io.get_ref().local_addr()
    }

    /// The connected peer.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> std::io::Result<()> {
    /// # let stack = vdestack::Stack::new("", None)?;
    /// let sock = vdestack::tokio::UdpSocket::bind(&stack, "127.0.0.1:0").await?;
    /// sock.connect("127.0.0.1:9").await?;
    /// assert_eq!(sock.peer_addr()?, "127.0.0.1:9".parse().unwrap());
    /// # Ok(())
    /// # }
    /// ```
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.io.get_ref().peer_addr()
    }

    /// Takes the pending error (SO_ERROR).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> std::io::Result<()> {
    /// # let stack = vdestack::Stack::new("", None)?;
    /// let sock = vdestack::tokio::UdpSocket::bind(&stack, "127.0.0.1:0").await?;
    /// assert!(sock.take_error()?.is_none());
    /// # Ok(())
    /// # }
    /// ```
    pub fn take_error(&self) -> io::Result<Option<io::Error>> {
        self.io.get_ref().take_error()
    }
}

impl TryFrom<net::UdpSocket> for UdpSocket {
    type Error = io::Error;

    /// As [`UdpSocket::from_std`].
    fn try_from(s: net::UdpSocket) -> io::Result<UdpSocket> {
        UdpSocket::from_std(s)
    }
}

impl fmt::Debug for UdpSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UdpSocket")
            .field("fd", &self.as_raw_fd())
            .finish()
    }
}

impl AsRawFd for UdpSocket {
    fn as_raw_fd(&self) -> RawFd {
        self.io.as_raw_fd()
    }
}

impl AsFd for UdpSocket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.io.get_ref().as_fd()
    }
}
