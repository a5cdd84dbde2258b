//! Packet capture: a stack's link frames, both ways, in a pcapng file that tcpdump, tshark
//! and Wireshark read.
//!
//! pcapng (not classic pcap) because a frame can carry a comment and a direction: a frame the
//! link dropped (an impairment's loss, a full link) is still written, with a comment saying
//! so, and every frame says whether it came in or went out. The format is three kinds of
//! block, written here by hand (a crate for it would be a dependency for every user for a
//! hundred lines of writing).
//!
//! The file is written through a buffer that is flushed after each round of the stack's
//! work, so a reader following the file sees frames within a round.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::link::Medium;

/// Which way a frame went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    /// Received from the link.
    In,
    /// Sent (or meant to be sent) by the stack.
    Out,
}

/// A capture under way: the file, and whether it has frames not yet flushed.
pub struct Capture {
    out: BufWriter<File>,
    dirty: bool,
    /// The write that failed: nothing more is written, and the next flush reports it.
    failed: Option<io::Error>,
}

/// Block types and option codes (pcapng, draft-ietf-opsawg-pcapng).
const SHB: u32 = 0x0A0D_0D0A;
const IDB: u32 = 1;
const EPB: u32 = 6;
const OPT_END: u16 = 0;
const OPT_COMMENT: u16 = 1;
const SHB_USERAPPL: u16 = 4;
const IF_NAME: u16 = 2;
const EPB_FLAGS: u16 = 2;
/// LINKTYPE_ETHERNET and LINKTYPE_RAW (bare IPv4/IPv6).
const LINKTYPE_ETHERNET: u16 = 1;
const LINKTYPE_RAW: u16 = 101;

/// One block being built: its body, then framed with its type and length.
struct Block(Vec<u8>);

impl Block {
    fn u16(&mut self, v: u16) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn u32(&mut self, v: u32) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    /// Bytes padded to 32 bits.
    fn padded(&mut self, b: &[u8]) -> &mut Self {
        self.0.extend_from_slice(b);
        self.0.resize(self.0.len().next_multiple_of(4), 0);
        self
    }
    fn opt(&mut self, code: u16, value: &[u8]) -> &mut Self {
        self.u16(code).u16(value.len() as u16).padded(value)
    }
    fn write(&self, ty: u32, out: &mut impl Write) -> io::Result<()> {
        let len = (self.0.len() + 12) as u32;
        out.write_all(&ty.to_le_bytes())?;
        out.write_all(&len.to_le_bytes())?;
        out.write_all(&self.0)?;
        out.write_all(&len.to_le_bytes())
    }
}

impl Capture {
    /// Starts a capture into `file` (truncated by the caller) of interface `ifname`, whose
    /// link carries `medium`: writes the section and interface headers.
    pub fn start(file: File, ifname: &str, medium: Medium) -> io::Result<Capture> {
        let mut out = BufWriter::with_capacity(64 * 1024, file);
        let mut shb = Block(Vec::new());
        shb.u32(0x1A2B_3C4D)
            .u16(1)
            .u16(0)
            .u32(u32::MAX)
            .u32(u32::MAX);
        shb.opt(SHB_USERAPPL, b"vdestack").u32(OPT_END as u32);
        shb.write(SHB, &mut out)?;
        let linktype = match medium {
            Medium::Ethernet => LINKTYPE_ETHERNET,
            Medium::Ip => LINKTYPE_RAW,
        };
        let mut idb = Block(Vec::new());
        // Snap length 0: no limit, every frame whole.
        idb.u16(linktype).u16(0).u32(0);
        idb.opt(IF_NAME, ifname.as_bytes()).u32(OPT_END as u32);
        idb.write(IDB, &mut out)?;
        out.flush()?;
        Ok(Capture {
            out,
            dirty: false,
            failed: None,
        })
    }

    /// Writes one frame, with a comment when the link did something to it (dropped it). A
    /// write that fails ends the capture; [`Capture::flush`] reports it.
    pub fn frame(&mut self, dir: Dir, data: &[u8], note: Option<&str>) {
        if self.failed.is_none() {
            if let Err(e) = self.write_frame(dir, data, note) {
                self.failed = Some(e);
            }
        }
    }

    fn write_frame(&mut self, dir: Dir, data: &[u8], note: Option<&str>) -> io::Result<()> {
        let us = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64);
        let mut b = Block(Vec::with_capacity(data.len() + 64));
        b.u32(0).u32((us >> 32) as u32).u32(us as u32);
        b.u32(data.len() as u32).u32(data.len() as u32).padded(data);
        // epb_flags: bits 0-1 are the direction (1 inbound, 2 outbound).
        let flags: u32 = match dir {
            Dir::In => 1,
            Dir::Out => 2,
        };
        b.opt(EPB_FLAGS, &flags.to_le_bytes());
        if let Some(n) = note {
            b.opt(OPT_COMMENT, &n.as_bytes()[..n.len().min(u16::MAX as usize)]);
        }
        b.u32(OPT_END as u32);
        b.write(EPB, &mut self.out)?;
        self.dirty = true;
        Ok(())
    }

    /// Flushes the frames written since the last flush.
    pub fn flush(&mut self) -> io::Result<()> {
        if let Some(e) = self.failed.take() {
            return Err(e);
        }
        if self.dirty {
            self.dirty = false;
            self.out.flush()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_are_framed_and_padded() {
        let path = std::env::temp_dir().join(format!("vdestack-cap-{}.pcapng", std::process::id()));
        let mut c = Capture::start(File::create(&path).unwrap(), "vde0", Medium::Ethernet).unwrap();
        c.frame(Dir::Out, &[0xaa; 61], Some("dropped"));
        c.flush().unwrap();
        let b = std::fs::read(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        // Walk the blocks: each one's leading and trailing lengths agree and are aligned.
        let mut at = 0;
        let mut types = Vec::new();
        while at < b.len() {
            let ty = u32::from_le_bytes(b[at..at + 4].try_into().unwrap());
            let len = u32::from_le_bytes(b[at + 4..at + 8].try_into().unwrap()) as usize;
            assert_eq!(len % 4, 0);
            let tail = u32::from_le_bytes(b[at + len - 4..at + len].try_into().unwrap());
            assert_eq!(tail as usize, len);
            types.push(ty);
            at += len;
        }
        assert_eq!(types, [SHB, IDB, EPB]);
    }
}
