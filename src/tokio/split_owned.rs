//! [`OwnedReadHalf`] and [`OwnedWriteHalf`]: a [`TcpStream`] split into halves that own it
//! together, as `tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf}`.

use std::error::Error;
use std::fmt;
use std::io::{self, IoSlice};
use std::net::{Shutdown, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use ::tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::TcpStream;

/// The read half of a [`TcpStream`], from [`TcpStream::into_split`].
///
/// ```
/// use tokio::io::AsyncReadExt;
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> std::io::Result<()> {
/// # let stack = vdestack::Stack::new("", None)?;
/// # let l = vdestack::tokio::TcpListener::bind(&stack, "127.0.0.1:80").await?;
/// let conn = vdestack::tokio::TcpStream::connect(&stack, "127.0.0.1:80").await?;
/// # let (mut peer, _) = l.accept().await?;
/// # tokio::io::AsyncWriteExt::write_all(&mut peer, b"hi").await?;
/// let (mut rd, wr) = conn.into_split();
/// let mut buf = [0; 2];
/// rd.read_exact(&mut buf).await?;
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct OwnedReadHalf {
    inner: Arc<TcpStream>,
}

/// The write half of a [`TcpStream`], from [`TcpStream::into_split`]. Dropping it shuts the
/// stream's write side (the peer reads EOF), unless [`OwnedWriteHalf::forget`] was called.
///
/// ```
/// use tokio::io::AsyncWriteExt;
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> std::io::Result<()> {
/// # let stack = vdestack::Stack::new("", None)?;
/// # let l = vdestack::tokio::TcpListener::bind(&stack, "127.0.0.1:80").await?;
/// let conn = vdestack::tokio::TcpStream::connect(&stack, "127.0.0.1:80").await?;
/// let (rd, mut wr) = conn.into_split();
/// wr.write_all(b"hi").await?;
/// drop(wr); // FIN
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct OwnedWriteHalf {
    inner: Arc<TcpStream>,
    shutdown_on_drop: bool,
}

/// The two halves given to [`OwnedReadHalf::reunite`] came from different streams; they are
/// handed back.
#[derive(Debug)]
pub struct ReuniteError(pub OwnedReadHalf, pub OwnedWriteHalf);

impl fmt::Display for ReuniteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("tried to reunite halves that are not from the same socket")
    }
}

impl Error for ReuniteError {}

pub(super) fn split_owned(stream: TcpStream) -> (OwnedReadHalf, OwnedWriteHalf) {
    let inner = Arc::new(stream);
    (
        OwnedReadHalf {
            inner: inner.clone(),
        },
        OwnedWriteHalf {
            inner,
            shutdown_on_drop: true,
        },
    )
}

impl OwnedReadHalf {
    /// Puts the stream together again, if `other` is its own write half.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> std::io::Result<()> {
    /// # let stack = vdestack::Stack::new("", None)?;
    /// # let l = vdestack::tokio::TcpListener::bind(&stack, "127.0.0.1:80").await?;
    /// let conn = vdestack::tokio::TcpStream::connect(&stack, "127.0.0.1:80").await?;
    /// let (rd, wr) = conn.into_split();
    /// let conn = rd.reunite(wr).expect("same stream");
    /// # Ok(())
    /// # }
    /// ```
    pub fn reunite(self, other: OwnedWriteHalf) -> Result<TcpStream, ReuniteError> {
        if !Arc::ptr_eq(&self.inner, &other.inner) {
            return Err(ReuniteError(self, other));
        }
        other.forget();
        // Both halves are consumed and they held the only two references.
        Ok(Arc::try_unwrap(self.inner).expect("TcpStream: the halves held the only references"))
    }

    /// The peer's address.
    ///
    /// See [`TcpStream::peer_addr`].
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.inner.peer_addr()
    }

    /// The local address.
    ///
    /// See [`TcpStream::local_addr`].
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    /// Waits until the stream may be read.
    ///
    /// See [`TcpStream::readable`].
    pub async fn readable(&self) -> io::Result<()> {
        self.inner.readable().await
    }

    /// Reads what is there without waiting.
    ///
    /// See [`TcpStream::try_read`].
    pub fn try_read(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.try_read(buf)
    }
}

impl OwnedWriteHalf {
    /// Puts the stream together again, if `other` is its own read half.
    ///
    /// See [`OwnedReadHalf::reunite`].
    pub fn reunite(self, other: OwnedReadHalf) -> Result<TcpStream, ReuniteError> {
        other.reunite(self)
    }

    /// Drops the half without shutting the write side.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> std::io::Result<()> {
    /// # let stack = vdestack::Stack::new("", None)?;
    /// # let l = vdestack::tokio::TcpListener::bind(&stack, "127.0.0.1:80").await?;
    /// let conn = vdestack::tokio::TcpStream::connect(&stack, "127.0.0.1:80").await?;
    /// let (rd, wr) = conn.into_split();
    /// wr.forget(); // no FIN: the connection stays open while `rd` lives
    /// # Ok(())
    /// # }
    /// ```
    pub fn forget(mut self) {
        self.shutdown_on_drop = false;
    }

    /// The peer's address.
    ///
    /// See [`TcpStream::peer_addr`].
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.inner.peer_addr()
    }

    /// The local address.
    ///
    /// See [`TcpStream::local_addr`].
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    /// Waits until the stream may be written.
    ///
    /// See [`TcpStream::writable`].
    pub async fn writable(&self) -> io::Result<()> {
        self.inner.writable().await
    }

    /// Writes what fits without waiting.
    ///
    /// See [`TcpStream::try_write`].
    pub fn try_write(&self, buf: &[u8]) -> io::Result<usize> {
        self.inner.try_write(buf)
    }
}

impl Drop for OwnedWriteHalf {
    fn drop(&mut self) {
        if self.shutdown_on_drop {
            let _ = self.inner.shutdown_std(Shutdown::Write);
        }
    }
}

impl AsyncRead for OwnedReadHalf {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.inner.poll_read_priv(cx, buf)
    }
}

impl AsyncWrite for OwnedWriteHalf {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.inner.poll_write_priv(cx, &[buf])
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.inner.poll_write_vectored_priv(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    /// Shuts the write side (SHUT_WR); dropping the half then does nothing more.
    fn poll_shutdown(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        let r = self.inner.shutdown_std(Shutdown::Write);
        if r.is_ok() {
            self.shutdown_on_drop = false;
        }
        Poll::Ready(r)
    }
}
