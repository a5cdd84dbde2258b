//! An echo server and client on two stacks, with `vdestack::tokio`: tokio::net's types with
//! the stack as first argument.
//!
//!     cargo run --release --features tokio --example tokio_echo

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use vdestack::tokio::{TcpListener, TcpStream};
use vdestack::Stack;

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let a = Stack::new("mem://tokio-demo", None)?;
    let b = Stack::new("mem://tokio-demo", None)?;
    a.cmd("ip link set vde0 up; ip addr add 10.1.0.1/24 dev vde0")?;
    b.cmd("ip link set vde0 up; ip addr add 10.1.0.2/24 dev vde0")?;

    let listener = TcpListener::bind(&a, "10.1.0.1:7").await?;
    let server = tokio::spawn(async move {
        let (mut conn, peer) = listener.accept().await?;
        let (mut rd, mut wr) = conn.split();
        tokio::io::copy(&mut rd, &mut wr).await?;
        std::io::Result::Ok(peer)
    });

    let mut client = TcpStream::connect(&b, "10.1.0.1:7").await?;
    client.write_all(b"hello from an async runtime").await?;
    client.shutdown().await?;
    let mut got = String::new();
    client.read_to_string(&mut got).await?;
    let peer = server.await??;
    println!("echoed {got:?} for {peer}");
    anyhow::ensure!(got == "hello from an async runtime", "echo mismatch");
    Ok(())
}
