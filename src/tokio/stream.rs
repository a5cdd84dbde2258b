//! [`TcpStream`]: `tokio::net::TcpStream` on a stack, with AsyncRead and AsyncWrite.

use std::fmt;
use std::io::{self, IoSlice};
use std::net::{Shutdown, SocketAddr};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use ::tokio::io::unix::AsyncFd;
use ::tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use ::tokio::net::ToSocketAddrs;

use super::split::{split, ReadHalf, WriteHalf};
use super::split_owned::{split_owned, OwnedReadHalf, OwnedWriteHalf};
use super::{domain_of, register, resolve};
use crate::{net, socket, sys, Stack};

/// A TCP connection in a stack, as `tokio::net::TcpStream`.
///
/// ```
/// use tokio::io::{AsyncReadExt, AsyncWriteExt};
/// use vdestack::tokio::{TcpListener, TcpStream};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> std::io::Result<()> {
/// let a = vdestack::Stack::new("mem://lan", None)?;
/// let b = vdestack::Stack::new("mem://lan", None)?;
/// a.cmd("ip link set vde0 up; ip addr add 10.0.0.1/24 dev vde0").unwrap();
/// b.cmd("ip link set vde0 up; ip addr add 10.0.0.2/24 dev vde0").unwrap();
/// let listener = TcpListener::bind(&a, "10.0.0.1:80").await?;
/// let mut client = TcpStream::connect(&b, "10.0.0.1:80").await?;
/// let (mut server, _) = listener.accept().await?;
/// client.write_all(b"hello").await?;
/// client.shutdown().await?; // FIN
/// let mut got = Vec::new();
/// server.read_to_end(&mut got).await?;
/// assert_eq!(got, b"hello");
/// # Ok(())
/// # }
/// ```
pub struct TcpStream {
    io: AsyncFd<net::TcpStream>,
}

impl TcpStream {
    /// Connects to `addr` from `stack`, trying each address it resolves to until one
    /// answers. The connect is nonblocking: the future waits for the fd to turn writable,
    /// then reads SO_ERROR.
    ///
    /// Dropping the future abandons the attempt: its socket closes and the engine drops it.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> std::io::Result<()> {
    /// let stack = vdestack::Stack::new("", None)?;
    /// // Nothing listens there: the stack answers with a reset, as Linux does.
    /// let e = vdestack::tokio::TcpStream::connect(&stack, "127.0.0.1:9").await.unwrap_err();
    /// assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn connect<A: ToSocketAddrs>(stack: &Stack, addr: A) -> io::Result<TcpStream> {
        let mut last = None;
        for a in resolve(addr).await? {
            match TcpStream::connect_addr(stack, a).await {
                Ok(s) => return Ok(s),
                Err(e) => last = Some(e),
            }
        }
        Err(last.expect("resolve gives at least one address"))
    }

    async fn connect_addr(stack: &Stack, addr: SocketAddr) -> io::Result<TcpStream> {
        let ty = libc::SOCK_STREAM | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK;
        let sock = net::TcpStream::from(stack.socket(domain_of(&addr), ty, 0)?);
        match socket::connect(sock.as_raw_fd(), addr) {
            Err(e) if e.raw_os_error() != Some(libc::EINPROGRESS) => return Err(e),
            _ => {}
        }
        // Registered after the connect: until the outcome is known the fd is kept unwritable
        // (docs/architecture.md), and the reactor's first look at it must see that.
        let io = register(sock)?;
        // The guard is dropped, not cleared: the fd stays writable for the first write.
        drop(io.writable().await?);
        if let Some(e) = io.get_ref().take_error()? {
            return Err(e);
        }
        Ok(TcpStream { io })
    }

    /// Makes a blocking [`net::TcpStream`] an async one: sets it nonblocking and registers
    /// it with the current runtime (panics outside one, as tokio's).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> std::io::Result<()> {
    /// # let stack = vdestack::Stack::new("", None)?;
    /// # let _l = vdestack::net::TcpListener::bind(&stack, "127.0.0.1:80")?;
    /// let std_stream = vdestack::net::TcpStream::connect(&stack, "127.0.0.1:80")?;
    /// let stream = vdestack::tokio::TcpStream::from_std(std_stream)?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn from_std(stream: net::TcpStream) -> io::Result<TcpStream> {
        Ok(TcpStream {
            io: register(stream)?,
        })
    }

    /// Gives back the blocking [`net::TcpStream`], deregistered and still nonblocking
    /// (as tokio's `into_std`).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> std::io::Result<()> {
    /// # let stack = vdestack::Stack::new("", None)?;
    /// # let _l = vdestack::net::TcpListener::bind(&stack, "127.0.0.1:80")?;
    /// let stream = vdestack::tokio::TcpStream::connect(&stack, "127.0.0.1:80").await?;
    /// let std_stream = stream.into_std()?;
    /// std_stream.set_nonblocking(false)?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn into_std(self) -> io::Result<net::TcpStream> {
        Ok(self.io.into_inner())
    }

    /// The local address.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> std::io::Result<()> {
    /// # let stack = vdestack::Stack::new("", None)?;
    /// # let _l = vdestack::tokio::TcpListener::bind(&stack, "127.0.0.1:80").await?;
    /// let s = vdestack::tokio::TcpStream::connect(&stack, "127.0.0.1:80").await?;
    /// assert!(s.local_addr()?.ip().is_loopback());
    /// # Ok(())
    /// # }
    /// ```
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.io.get_ref().local_addr()
    }

    /// The peer's address.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> std::io::Result<()> {
    /// # let stack = vdestack::Stack::new("", None)?;
    /// # let _l = vdestack::tokio::TcpListener::bind(&stack, "127.0.0.1:80").await?;
    /// let s = vdestack::tokio::TcpStream::connect(&stack, "127.0.0.1:80").await?;
    /// assert_eq!(s.peer_addr()?, "127.0.0.1:80".parse().unwrap());
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
    /// # let _l = vdestack::tokio::TcpListener::bind(&stack, "127.0.0.1:80").await?;
    /// let s = vdestack::tokio::TcpStream::connect(&stack, "127.0.0.1:80").await?;
    /// assert!(s.take_error()?.is_none());
    /// # Ok(())
    /// # }
    /// ```
    pub fn take_error(&self) -> io::Result<Option<io::Error>> {
        self.io.get_ref().take_error()
    }

    /// Reads TCP_NODELAY.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> std::io::Result<()> {
    /// # let stack = vdestack::Stack::new("", None)?;
    /// # let _l = vdestack::tokio::TcpListener::bind(&stack, "127.0.0.1:80").await?;
    /// let s = vdestack::tokio::TcpStream::connect(&stack, "127.0.0.1:80").await?;
    /// s.set_nodelay(true)?;
    /// assert!(s.nodelay()?);
    /// # Ok(())
    /// # }
    /// ```
    pub fn nodelay(&self) -> io::Result<bool> {
        self.io.get_ref().nodelay()
    }

    /// Sets TCP_NODELAY: small writes go out at once instead of waiting for an ACK (Nagle).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> std::io::Result<()> {
    /// # let stack = vdestack::Stack::new("", None)?;
    /// # let _l = vdestack::tokio::TcpListener::bind(&stack, "127.0.0.1:80").await?;
    /// let s = vdestack::tokio::TcpStream::connect(&stack, "127.0.0.1:80").await?;
    /// s.set_nodelay(true)?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn set_nodelay(&self, on: bool) -> io::Result<()> {
        self.io.get_ref().set_nodelay(on)
    }

    /// Waits until the stream may be read (data, EOF or an error waits).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> std::io::Result<()> {
    /// # let stack = vdestack::Stack::new("", None)?;
    /// # let l = vdestack::tokio::TcpListener::bind(&stack, "127.0.0.1:80").await?;
    /// let s = vdestack::tokio::TcpStream::connect(&stack, "127.0.0.1:80").await?;
    /// # let (mut peer, _) = l.accept().await?;
    /// # tokio::io::AsyncWriteExt::write_all(&mut peer, b"x").await?;
    /// s.readable().await?;
    /// let mut buf = [0; 16];
    /// let n = s.try_read(&mut buf)?;
    /// # assert_eq!(n, 1);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn readable(&self) -> io::Result<()> {
        self.io.readable().await.map(drop)
    }

    /// Waits until the stream may be written.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> std::io::Result<()> {
    /// # let stack = vdestack::Stack::new("", None)?;
    /// # let _l = vdestack::tokio::TcpListener::bind(&stack, "127.0.0.1:80").await?;
    /// let s = vdestack::tokio::TcpStream::connect(&stack, "127.0.0.1:80").await?;
    /// s.writable().await?;
    /// assert_eq!(s.try_write(b"hello")?, 5);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn writable(&self) -> io::Result<()> {
        self.io.writable().await.map(drop)
    }

    /// Reads what is there without waiting: WouldBlock if nothing is (and the readiness is
    /// cleared, so [`TcpStream::readable`] waits for more); 0 at EOF.
    ///
    /// See [`TcpStream::readable`] for an example.
    pub fn try_read(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.io
            .try_io(Interest::READABLE, |s| sys::read(s.as_raw_fd(), buf))
    }

    /// Writes what fits without waiting: WouldBlock if nothing does.
    ///
    /// See [`TcpStream::writable`] for an example.
    pub fn try_write(&self, buf: &[u8]) -> io::Result<usize> {
        self.io.try_io(Interest::WRITABLE, |s| {
            sys::send_vec(s.as_raw_fd(), &[buf], 0)
        })
    }

    /// Reads data without taking it: the next read returns it again. Waits for data.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> std::io::Result<()> {
    /// # let stack = vdestack::Stack::new("", None)?;
    /// # let l = vdestack::tokio::TcpListener::bind(&stack, "127.0.0.1:80").await?;
    /// let s = vdestack::tokio::TcpStream::connect(&stack, "127.0.0.1:80").await?;
    /// # let (mut peer, _) = l.accept().await?;
    /// tokio::io::AsyncWriteExt::write_all(&mut peer, b"abc").await?;
    /// let mut buf = [0; 3];
    /// assert_eq!(s.peek(&mut buf).await?, 3);
    /// assert_eq!(s.try_read(&mut buf)?, 3);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn peek(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.io
            .async_io(Interest::READABLE, |s| {
                sys::recv_vec(s.as_raw_fd(), &mut [&mut *buf], libc::MSG_PEEK)
            })
            .await
    }

    /// Splits into a read half and a write half that borrow the stream, to read and write
    /// at once in one task.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> std::io::Result<()> {
    /// # let stack = vdestack::Stack::new("", None)?;
    /// # let l = vdestack::tokio::TcpListener::bind(&stack, "127.0.0.1:80").await?;
    /// # drop(vdestack::tokio::TcpStream::connect(&stack, "127.0.0.1:80").await?);
    /// let (mut conn, _) = l.accept().await?;
    /// let (mut rd, mut wr) = conn.split();
    /// tokio::io::copy(&mut rd, &mut wr).await?; // echo until EOF
    /// # Ok(())
    /// # }
    /// ```
    pub fn split(&mut self) -> (ReadHalf<'_>, WriteHalf<'_>) {
        split(self)
    }

    /// Splits into owned halves that can move to different tasks. Dropping the write half
    /// shuts the write side (FIN), as tokio's does; [`OwnedReadHalf::reunite`] puts them
    /// together again.
    ///
    /// ```
    /// use tokio::io::{AsyncReadExt, AsyncWriteExt};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> std::io::Result<()> {
    /// # let stack = vdestack::Stack::new("", None)?;
    /// # let l = vdestack::tokio::TcpListener::bind(&stack, "127.0.0.1:80").await?;
    /// let conn = vdestack::tokio::TcpStream::connect(&stack, "127.0.0.1:80").await?;
    /// # let (mut peer, _) = l.accept().await?;
    /// let (mut rd, mut wr) = conn.into_split();
    /// tokio::spawn(async move { wr.write_all(b"bye").await });
    /// let mut got = Vec::new();
    /// peer.read_to_end(&mut got).await?; // the dropped write half sent a FIN
    /// assert_eq!(got, b"bye");
    /// # Ok(())
    /// # }
    /// ```
    pub fn into_split(self) -> (OwnedReadHalf, OwnedWriteHalf) {
        split_owned(self)
    }

    /// shutdown(2) of the write side, or of both sides, for the halves.
    pub(super) fn shutdown_std(&self, how: Shutdown) -> io::Result<()> {
        self.io.get_ref().shutdown(how)
    }

    pub(super) fn poll_read_priv(
        &self,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            let mut guard = ready!(self.io.poll_read_ready(cx))?;
            let unfilled = buf.initialize_unfilled();
            match guard.try_io(|s| sys::read(s.as_raw_fd(), unfilled)) {
                Ok(Ok(n)) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Ok(Err(e)) => return Poll::Ready(Err(e)),
                Err(_would_block) => continue,
            }
        }
    }

    pub(super) fn poll_write_priv(
        &self,
        cx: &mut Context<'_>,
        bufs: &[&[u8]],
    ) -> Poll<io::Result<usize>> {
        loop {
            let mut guard = ready!(self.io.poll_write_ready(cx))?;
            match guard.try_io(|s| sys::send_vec(s.as_raw_fd(), bufs, 0)) {
                Ok(r) => return Poll::Ready(r),
                Err(_would_block) => continue,
            }
        }
    }

    pub(super) fn poll_write_vectored_priv(
        &self,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        // sendmsg takes at most IOV_MAX (1024) parts.
        let parts: Vec<&[u8]> = bufs.iter().take(1024).map(|b| &**b).collect();
        self.poll_write_priv(cx, &parts)
    }
}

impl AsyncRead for TcpStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.poll_read_priv(cx, buf)
    }
}

impl AsyncWrite for TcpStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_priv(cx, &[buf])
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_vectored_priv(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    /// Shuts the write side (SHUT_WR): the peer reads EOF after the bytes written before.
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(self.shutdown_std(Shutdown::Write))
    }
}

impl TryFrom<net::TcpStream> for TcpStream {
    type Error = io::Error;

    /// As [`TcpStream::from_std`].
    fn try_from(s: net::TcpStream) -> io::Result<TcpStream> {
        TcpStream::from_std(s)
    }
}

impl fmt::Debug for TcpStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TcpStream")
            .field("fd", &self.as_raw_fd())
            .finish()
    }
}

impl AsRawFd for TcpStream {
    fn as_raw_fd(&self) -> RawFd {
        self.io.as_raw_fd()
    }
}

impl AsFd for TcpStream {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.io.get_ref().as_fd()
    }
}
