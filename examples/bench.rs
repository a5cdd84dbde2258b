//! Bulk TCP throughput and 1-byte ping-pong RTT between two stacks, on mem:// and on a
//! vdeplug4 switch (started here with `vde_plug null:// switch://...`).
//!
//! cargo run --release --example bench [-- MIB ROUNDS]

use std::io::{Read, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use vdestack::net::{TcpListener, TcpStream};
use vdestack::Stack;

struct Figures {
    create_us: f64,
    bulk_mbps: f64,
    rtt_us: f64,
}

fn measure(vnl: &str, mib: usize, rounds: usize, net: u8) -> Result<Figures> {
    let t0 = Instant::now();
    let a = Stack::new(vnl, None)?;
    a.cmd(&format!(
        "ip link set vde0 up; ip addr add 10.77.{net}.1/24 dev vde0"
    ))?;
    let create_us = t0.elapsed().as_secs_f64() * 1e6;
    let b = Stack::new(vnl, None)?;
    b.cmd(&format!(
        "ip link set vde0 up; ip addr add 10.77.{net}.2/24 dev vde0"
    ))?;
    let l = TcpListener::bind(&a, "0.0.0.0:5001")?;
    let total = mib << 20;
    let server = std::thread::spawn(move || -> Result<()> {
        let (mut c, _) = l.accept()?;
        c.set_nodelay(true)?;
        let mut buf = vec![0u8; 1 << 16];
        let mut got = 0;
        while got < total {
            let n = c.read(&mut buf[..(total - got).min(1 << 16)])?;
            if n == 0 {
                bail!("EOF after {got} bytes");
            }
            got += n;
        }
        let mut b = [0u8; 1];
        for _ in 0..rounds {
            c.read_exact(&mut b)?;
            c.write_all(&b)?;
        }
        Ok(())
    });
    let mut c = TcpStream::connect(&b, format!("10.77.{net}.1:5001"))?;
    let block = vec![7u8; 1 << 16];
    let t1 = Instant::now();
    let mut sent = 0;
    while sent < total {
        let n = (total - sent).min(block.len());
        c.write_all(&block[..n])?;
        sent += n;
    }
    c.set_nodelay(true)?;
    // The bulk phase ends when the first ping comes back: all data has been read by then.
    let mut b1 = [1u8; 1];
    c.write_all(&b1)?;
    c.read_exact(&mut b1)?;
    let bulk_mbps = total as f64 / 1e6 / t1.elapsed().as_secs_f64();
    let t2 = Instant::now();
    for _ in 1..rounds {
        c.write_all(&b1)?;
        c.read_exact(&mut b1)?;
    }
    let rtt_us = t2.elapsed().as_secs_f64() * 1e6 / (rounds - 1).max(1) as f64;
    server
        .join()
        .map_err(|_| anyhow::anyhow!("server panicked"))??;
    Ok(Figures {
        create_us,
        bulk_mbps,
        rtt_us,
    })
}

struct Switch(Child, String);

impl Drop for Switch {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
        let _ = std::fs::remove_dir_all(&self.1);
    }
}

fn switch() -> Result<Switch> {
    let dir = format!("/tmp/vdestack-bench-{}", std::process::id());
    std::fs::create_dir_all(&dir)?;
    let child = Command::new("vde_plug")
        .args(["null://", &format!("switch://{dir}/sw")])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .context("vde_plug not found: apt-get install vdeplug")?;
    let sw = Switch(child, dir.clone());
    let t = Instant::now();
    while !std::path::Path::new(&format!("{dir}/sw")).exists() {
        if t.elapsed() > Duration::from_secs(5) {
            bail!("vde_plug switch did not start");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(sw)
}

fn main() -> Result<()> {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let mib = args.first().copied().unwrap_or(256);
    let rounds = args.get(1).copied().unwrap_or(2000);
    println!(
        "{:<28} {:>12} {:>12} {:>14}",
        "link", "bulk MB/s", "RTT µs", "create+cfg µs"
    );
    let m = measure("mem://bench", mib, rounds, 1)?;
    println!(
        "{:<28} {:>12.0} {:>12.1} {:>14.0}",
        "mem://", m.bulk_mbps, m.rtt_us, m.create_us
    );
    let sw = switch()?;
    let vnl = format!("vde://{}/sw", sw.1);
    let v = measure(&vnl, mib.min(64), rounds, 2)?;
    println!(
        "{:<28} {:>12.0} {:>12.1} {:>14.0}",
        "vdeplug4 switch (vde://)", v.bulk_mbps, v.rtt_us, v.create_us
    );
    Ok(())
}
