//! Bulk TCP between two stacks over an impaired `mem://` segment (both members impaired,
//! Ethernet-sized frames), every byte checked: the fast loop for loss recovery (SACK,
//! RACK-TLP; issue 15). Prints MB/s per cell.
//!
//! cargo run --release --example recovery [-- MIB [CELL...]]
//!
//! A cell is the impairment in brackets, e.g. `loss=2%` or `delay=10ms/loss=0.5%`; the
//! default is the grid loss {0.5%, 2%} × delay {0, 10 ms}. With VDESTACK_RECOVERY_NETS="A B"
//! the stacks are on locators A and B instead (the cell is only a label).

use std::io::{Read, Write};
use std::time::Instant;

use anyhow::{bail, Result};
use vdestack::net::{TcpListener, TcpStream};
use vdestack::Stack;

/// xorshift64 bytes, the same however they are cut.
struct Data(u64);

impl Data {
    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            let w = self.0.to_le_bytes();
            chunk.copy_from_slice(&w[..chunk.len()]);
        }
    }
}

fn measure(cell: &str, mib: usize, net: u8) -> Result<(f64, String)> {
    let seg = format!("recovery{net}-{}", std::process::id());
    // VDESTACK_RECOVERY_NETS="A B": the two stacks' locators instead of a mem:// segment
    // (e.g. two vde_switches joined by wirefilter; the cell is then only a label).
    let nets = std::env::var("VDESTACK_RECOVERY_NETS").ok();
    let link = |seed: u32| {
        if let Some(nets) = &nets {
            let mut it = nets.split_whitespace();
            let (a, b) = (it.next().unwrap_or(""), it.next().unwrap_or(""));
            return if seed == 1 {
                a.to_string()
            } else {
                b.to_string()
            };
        }
        let p = if cell.is_empty() {
            "mtu=1500".to_string()
        } else {
            format!("{cell}/mtu=1500")
        };
        format!("mem://{seg}[{p}/seed={seed}]")
    };
    let a = Stack::new(&link(1), None)?;
    a.cmd(&format!(
        "ip link set vde0 up; ip addr add 10.78.{net}.1/24 dev vde0"
    ))?;
    let b = Stack::new(&link(2), None)?;
    b.cmd(&format!(
        "ip link set vde0 up; ip addr add 10.78.{net}.2/24 dev vde0"
    ))?;
    let l = TcpListener::bind(&a, "0.0.0.0:5001")?;
    let total = mib << 20;
    // Reads are cut unevenly on purpose (as an application's would be) and checked in
    // whole 8-byte words: the reader keeps a carry of the partial word.
    let server = std::thread::spawn(move || -> Result<()> {
        let (mut c, _) = l.accept()?;
        let mut want = Data(0x9e37_79b9_7f4a_7c15);
        let mut buf = vec![0u8; 1 << 16];
        let mut exp = vec![0u8; 1 << 16];
        let mut got = 0;
        while got < total {
            let n = c.read(&mut buf[..(total - got).min(1 << 16)])?;
            if n == 0 {
                bail!("EOF after {got} bytes");
            }
            // Checked per 64 KiB block boundaries: read into place until the block is full.
            let mut filled = n;
            while filled < buf.len().min(total - got) {
                let k = c.read(&mut buf[filled..(total - got).min(1 << 16)])?;
                if k == 0 {
                    bail!("EOF after {} bytes", got + filled);
                }
                filled += k;
            }
            want.fill(&mut exp[..filled]);
            if buf[..filled] != exp[..filled] {
                bail!("data differ in block at {got}");
            }
            got += filled;
        }
        c.write_all(b"k")?;
        Ok(())
    });
    let mut c = TcpStream::connect(&b, format!("10.78.{net}.1:5001"))?;
    let mut data = Data(0x9e37_79b9_7f4a_7c15);
    let mut block = vec![0u8; 1 << 16];
    let t = Instant::now();
    let mut sent = 0;
    while sent < total {
        let n = (total - sent).min(block.len());
        data.fill(&mut block[..n]);
        c.write_all(&block[..n])?;
        sent += n;
    }
    let mut k = [0u8; 1];
    c.read_exact(&mut k)?;
    let secs = t.elapsed().as_secs_f64();
    // The sender's repairs, while its connection is open.
    let ss = b.cmd_output("ss -s")?;
    let repair = ss
        .lines()
        .find_map(|l| l.strip_prefix("TCP loss repair: "))
        .unwrap_or("?")
        .to_string();
    server
        .join()
        .map_err(|_| anyhow::anyhow!("server panicked"))??;
    Ok((total as f64 / 1e6 / secs, repair))
}

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let mib: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(16);
    let mut cells: Vec<String> = args.collect();
    if cells.is_empty() {
        for d in ["", "delay=10ms"] {
            for l in ["loss=0.5%", "loss=2%"] {
                let c: Vec<&str> = [d, l].into_iter().filter(|s| !s.is_empty()).collect();
                cells.push(c.join("/"));
            }
        }
    }
    println!(
        "{:<28} {:>10}  sender's repairs",
        "impairment (each way)", "MB/s"
    );
    for (i, cell) in cells.iter().enumerate() {
        let (mbps, repair) = measure(cell, mib, i as u8)?;
        let name = if cell.is_empty() { "none" } else { cell };
        println!("{name:<28} {mbps:>10.1}  {repair}");
    }
    Ok(())
}
