//! vdestack fds in an async runtime, with no change to the crate: the sockets are plain
//! nonblocking fds, so tokio's `AsyncFd` drives them.

use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;

use tokio::io::unix::AsyncFd;
use vdestack::net::{TcpListener, TcpStream};
use vdestack::Stack;

/// Registers a vdestack socket with tokio's reactor.
fn register<T: AsRawFd>(sock: T) -> io::Result<AsyncFd<T>> {
    // SAFETY: `sock` owns its fd and moves into the AsyncFd, so the fd stays open and the same
    // for the AsyncFd's whole life.
    unsafe { AsyncFd::register(sock) }.map_err(|e| e.into_parts().1)
}

async fn read_some(fd: &AsyncFd<TcpStream>, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        let mut guard = fd.readable().await?;
        match guard.try_io(|inner| inner.get_ref().read(buf)) {
            Ok(r) => return r,
            Err(_would_block) => continue,
        }
    }
}

async fn write_all(fd: &AsyncFd<TcpStream>, mut buf: &[u8]) -> io::Result<()> {
    while !buf.is_empty() {
        let mut guard = fd.writable().await?;
        match guard.try_io(|inner| inner.get_ref().write(buf)) {
            Ok(n) => buf = &buf[n?..],
            Err(_would_block) => continue,
        }
    }
    Ok(())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let a = Stack::new("mem://tokio-demo", None)?;
    let b = Stack::new("mem://tokio-demo", None)?;
    a.cmd("ip link set vde0 up; ip addr add 10.1.0.1/24 dev vde0")?;
    b.cmd("ip link set vde0 up; ip addr add 10.1.0.2/24 dev vde0")?;

    let listener = TcpListener::bind(&a, "10.1.0.1:7")?;
    listener.set_nonblocking(true)?;
    let listener = register(listener)?;
    let server = tokio::spawn(async move {
        let (conn, peer) = loop {
            let mut guard = listener.readable().await?;
            match guard.try_io(|l| l.get_ref().accept()) {
                Ok(r) => break r?,
                Err(_would_block) => continue,
            }
        };
        conn.set_nonblocking(true)?;
        let conn = register(conn)?;
        let mut buf = [0u8; 1024];
        loop {
            let n = read_some(&conn, &mut buf).await?;
            if n == 0 {
                return io::Result::Ok(peer);
            }
            write_all(&conn, &buf[..n]).await?;
        }
    });

    let client = TcpStream::connect(&b, "10.1.0.1:7")?;
    client.set_nonblocking(true)?;
    let client = register(client)?;
    let mut got = Vec::new();
    for word in ["hello", " from", " an", " async", " runtime"] {
        write_all(&client, word.as_bytes()).await?;
        let want = got.len() + word.len();
        while got.len() < want {
            let mut buf = [0u8; 64];
            let n = read_some(&client, &mut buf).await?;
            anyhow::ensure!(n > 0, "connection closed early");
            got.extend_from_slice(&buf[..n]);
        }
    }
    client.get_ref().shutdown(std::net::Shutdown::Write)?;
    let peer = server.await??;
    println!("echoed {:?} for {peer}", String::from_utf8_lossy(&got));
    anyhow::ensure!(got == b"hello from an async runtime", "echo mismatch");
    Ok(())
}
