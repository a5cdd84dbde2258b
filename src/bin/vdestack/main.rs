//! The `vdestack` command line: `demo` and `run`.

mod run;

use std::io::{Read, Write};
use std::time::Instant;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use vdestack::net::{TcpListener, TcpStream};
use vdestack::Stack;

#[derive(Parser)]
#[command(
    name = "vdestack",
    version,
    about = "Private user-space TCP/IP stacks",
    after_help = "Examples:
  vdestack run --net vde:///tmp/sw --conf eth,ip=10.0.0.2/24 -- curl http://10.0.0.1:8080/
  vdestack demo --mb 64

`vdestack run --help` and `vdestack demo --help` say more; man vdestack (docs/man/vdestack.1)."
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Two stacks on an in-process mem:// segment: configure, connect, move data, report.
    #[command(after_help = "Examples:
  vdestack demo                                   512 MiB between two stacks on mem://demo
  vdestack demo --mb 64 --net 'mem://demo[loss=2%/delay=5ms/mtu=1500]'
                                                  TCP through loss and delay (IMPAIRED LINKS
                                                  in vde_addstack(3))
  VDESTACK_LOG=debug vdestack demo --mb 1         with the engine's log on stderr")]
    Demo {
        /// Megabytes (MiB) to move from one stack to the other.
        #[arg(long, default_value_t = 512)]
        mb: usize,
        /// The network both stacks join (any locator Stack::new takes).
        #[arg(long, default_value = "mem://demo")]
        net: String,
    },
    /// Runs PROGRAM (and everything it starts) inside one private stack: its AF_INET and
    /// AF_INET6 sockets live there, through libvdestack.so preloaded. The stack lives in this
    /// process and ends when PROGRAM does; `run` exits with PROGRAM's status.
    Run(run::RunArgs),
}

fn main() -> Result<()> {
    vdestack::internal::log::init_from_env();
    match Cli::parse().cmd {
        Cmd::Demo { mb, net } => demo(mb, &net),
        Cmd::Run(args) => std::process::exit(run::run(args)?),
    }
}

fn demo(mb: usize, net: &str) -> Result<()> {
    let t0 = Instant::now();
    let server = Stack::new(net, None).with_context(|| format!("creating a stack on {net}"))?;
    let client = Stack::new(net, None).with_context(|| format!("creating a stack on {net}"))?;
    server.cmd("/bin/ip link set vde0 up; /bin/ip addr add 10.0.0.1/24 dev vde0")?;
    client.cmd("/bin/ip link set vde0 up; /bin/ip addr add 10.0.0.2/24 dev vde0")?;
    println!(
        "two stacks on {net}, created and configured in {:.0} µs",
        t0.elapsed().as_secs_f64() * 1e6
    );
    println!("server stack:");
    server.cmd("ip addr show")?;
    let listener = TcpListener::bind(&server, "0.0.0.0:5000")?;
    let total = mb * 1024 * 1024;
    let receiver = std::thread::spawn(move || -> Result<(usize, u64)> {
        let (mut conn, peer) = listener.accept()?;
        println!("server: connection from {peer}");
        let mut buf = vec![0u8; 1 << 16];
        let (mut got, mut sum) = (0usize, 0u64);
        loop {
            let n = conn.read(&mut buf)?;
            if n == 0 {
                break;
            }
            sum = buf[..n]
                .iter()
                .fold(sum, |s, b| s.wrapping_mul(31).wrapping_add(*b as u64));
            got += n;
        }
        Ok((got, sum))
    });
    let t1 = Instant::now();
    let mut conn = TcpStream::connect(&client, "10.0.0.1:5000")?;
    println!(
        "client: connected from {} to {} in {:.0} µs",
        conn.local_addr()?,
        conn.peer_addr()?,
        t1.elapsed().as_secs_f64() * 1e6
    );
    let mut block = vec![0u8; 1 << 16];
    let mut sum = 0u64;
    let t2 = Instant::now();
    let mut sent = 0;
    while sent < total {
        let n = block.len().min(total - sent);
        for (i, b) in block[..n].iter_mut().enumerate() {
            *b = ((sent + i) % 251) as u8;
        }
        sum = block[..n]
            .iter()
            .fold(sum, |s, b| s.wrapping_mul(31).wrapping_add(*b as u64));
        conn.write_all(&block[..n])?;
        sent += n;
    }
    conn.shutdown(std::net::Shutdown::Write)?;
    let (got, rsum) = receiver
        .join()
        .map_err(|_| anyhow::anyhow!("receiver panicked"))??;
    let secs = t2.elapsed().as_secs_f64();
    anyhow::ensure!(
        got == total && rsum == sum,
        "data mismatch: sent {total} bytes, received {got}"
    );
    println!(
        "moved {} MiB in {:.2} s: {:.0} MB/s, content checked",
        mb,
        secs,
        total as f64 / 1e6 / secs
    );
    Ok(())
}
