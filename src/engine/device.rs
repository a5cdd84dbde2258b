//! smoltcp devices: one over a stack's link, one for its loopback.

use std::collections::VecDeque;
use std::io;

use smoltcp::phy::{self, ChecksumCapabilities, Device, DeviceCapabilities, Medium as PhyMedium};
use smoltcp::time::Instant;

use super::capture::{Capture, Dir};
use crate::link::{Link, Medium};

/// The MTU of the loopback interface (as Linux's `lo`).
pub const LO_MTU: usize = 65536;

/// A smoltcp device over a link, borrowing the stack's frame buffer and its slot for a frame
/// the link could not take yet.
pub struct LinkDevice<'a> {
    pub link: &'a mut dyn Link,
    pub buf: &'a mut Vec<u8>,
    pub held: &'a mut VecDeque<Vec<u8>>,
    pub mtu: usize,
    /// The link's fd may have frames: false after EAGAIN until epoll says otherwise.
    pub rd: &'a mut bool,
    /// The stack's packet capture, when one is under way.
    pub cap: Option<&'a mut Capture>,
}

impl<'a> LinkDevice<'a> {
    /// Wraps a link; `mtu` is the configured MTU (IP packet size).
    pub fn new(
        link: &'a mut dyn Link,
        buf: &'a mut Vec<u8>,
        held: &'a mut VecDeque<Vec<u8>>,
        mtu: usize,
        rd: &'a mut bool,
        cap: Option<&'a mut Capture>,
    ) -> Self {
        LinkDevice {
            link,
            buf,
            held,
            mtu,
            rd,
            cap,
        }
    }
}

thread_local! {
    static BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

thread_local! {
    static POOL: std::cell::RefCell<Vec<Vec<u8>>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Frame buffers the engine keeps for reuse: allocating and freeing a 64 KiB buffer per
/// packet made glibc grow and trim its heap, and every page fault costs more than a copy.
const POOL_MAX: usize = 64;

/// A buffer of `len` bytes from the engine's pool (its contents are old frames).
pub fn take_buf(len: usize) -> Vec<u8> {
    let mut v = POOL.with(|p| p.borrow_mut().pop()).unwrap_or_default();
    if v.len() < len {
        v.resize(len, 0);
    } else {
        v.truncate(len);
    }
    v
}

/// Gives a frame buffer back to the pool.
pub fn give_buf(v: Vec<u8>) {
    if v.capacity() >= 2048 {
        POOL.with(|p| {
            let mut p = p.borrow_mut();
            if p.len() < POOL_MAX {
                p.push(v);
            }
        });
    }
}

/// Runs `f` with the engine thread's frame buffer. The engine services one stack at a time,
/// so one buffer serves them all (thousands of stacks must not hold 64 KiB each).
pub fn with_buf<R>(f: impl FnOnce(&mut Vec<u8>) -> R) -> R {
    BUF.with(|b| f(&mut b.borrow_mut()))
}

/// Frames a stack holds for a full link before it drops more (replies to received frames
/// may still come while transmission waits).
const HELD_MAX: usize = 256;

/// The capture's comment on a frame dropped because the link was full.
const FULL_DROP: &str = "dropped: the link is full (256 frames wait for it)";

/// Sends the frames held for a full (or still opening) link, in order, until it is full
/// again; whether all went.
pub fn flush(link: &mut dyn Link, held: &mut VecDeque<Vec<u8>>) -> bool {
    while let Some(frame) = held.front() {
        match link.send(frame) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
            _ => {
                if let Some(f) = held.pop_front() {
                    give_buf(f);
                }
            }
        }
    }
    true
}

/// A received frame: read into the stack's buffer, or handed over whole by an in-process link.
pub enum Rx<'a> {
    Borrowed(&'a [u8]),
    Owned(Vec<u8>),
}
/// Permission to send one frame on a link (and to write it to the capture, if any).
pub struct LinkTx<'a>(
    &'a mut dyn Link,
    &'a mut VecDeque<Vec<u8>>,
    Option<&'a mut Capture>,
);

impl phy::RxToken for Rx<'_> {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        match self {
            Rx::Borrowed(b) => f(b),
            Rx::Owned(v) => {
                let r = f(&v);
                give_buf(v);
                r
            }
        }
    }
}

impl phy::TxToken for LinkTx<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut frame = take_buf(len);
        let r = f(&mut frame);
        // A full link keeps the frame (no more are offered until it is sent); other errors
        // drop it, as a NIC would, and TCP retransmits.
        let LinkTx(link, held, cap) = self;
        if !held.is_empty() {
            if held.len() < HELD_MAX {
                if let Some(c) = cap {
                    c.frame(Dir::Out, &frame, None);
                }
                held.push_back(frame);
            } else if let Some(c) = cap {
                c.frame(Dir::Out, &frame, Some(FULL_DROP));
            }
        } else {
            let sent = link.send(&frame);
            if let Some(c) = cap {
                let err;
                let note = match &sent {
                    Ok(()) => link.last_send_note(),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => None,
                    Err(e) => {
                        err = format!("dropped: the link failed to send it: {e}");
                        Some(err.as_str())
                    }
                };
                c.frame(Dir::Out, &frame, note);
            }
            match sent {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => held.push_back(frame),
                _ => give_buf(frame),
            }
        }
        r
    }
}

impl Device for LinkDevice<'_> {
    type RxToken<'b>
        = Rx<'b>
    where
        Self: 'b;
    type TxToken<'b>
        = LinkTx<'b>
    where
        Self: 'b;

    fn receive(&mut self, _: Instant) -> Option<(Rx<'_>, LinkTx<'_>)> {
        let link_mtu = self.link.mtu();
        if self.buf.len() < link_mtu + 64 {
            self.buf.resize(link_mtu + 64, 0);
        }
        if let Some(r) = self.link.recv_owned() {
            let frame = r.ok()?;
            if let Some(c) = self.cap.as_deref_mut() {
                c.frame(Dir::In, &frame, None);
            }
            let tx = LinkTx(&mut *self.link, &mut *self.held, self.cap.as_deref_mut());
            return Some((Rx::Owned(frame), tx));
        }
        if !*self.rd && self.link.poll_fd().is_some() {
            return None; // nothing came since the last EAGAIN
        }
        // Skip empty reads (a link may report a frame it could not make sense of), bounded so a
        // dead link cannot spin us.
        for _ in 0..16 {
            match self.link.recv(self.buf) {
                Ok(0) => continue,
                Ok(n) => {
                    if let Some(c) = self.cap.as_deref_mut() {
                        c.frame(Dir::In, &self.buf[..n], None);
                    }
                    return Some((
                        Rx::Borrowed(&self.buf[..n]),
                        LinkTx(&mut *self.link, &mut *self.held, self.cap.as_deref_mut()),
                    ));
                }
                Err(e) => {
                    *self.rd = e.kind() != io::ErrorKind::WouldBlock;
                    return None;
                }
            }
        }
        None
    }

    fn transmit(&mut self, _: Instant) -> Option<LinkTx<'_>> {
        if !flush(self.link, self.held) {
            return None;
        }
        Some(LinkTx(
            &mut *self.link,
            &mut *self.held,
            self.cap.as_deref_mut(),
        ))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        match self.link.medium() {
            Medium::Ethernet => {
                caps.medium = PhyMedium::Ethernet;
                caps.max_transmission_unit = self.mtu + 14;
            }
            Medium::Ip => {
                caps.medium = PhyMedium::Ip;
                caps.max_transmission_unit = self.mtu;
            }
        }
        if !self.link.checksummed() {
            caps.checksum = ChecksumCapabilities::ignored();
        }
        caps
    }
}

/// The loopback: packets sent are queued and received again on the next poll.
#[derive(Default)]
pub struct Loopback {
    queue: VecDeque<Vec<u8>>,
}

impl Loopback {
    /// Whether packets are waiting.
    pub fn pending(&self) -> bool {
        !self.queue.is_empty()
    }
}

/// A packet taken off the loopback queue.
pub struct LoRx(Vec<u8>);
/// Permission to queue one packet on the loopback.
pub struct LoTx<'a>(&'a mut VecDeque<Vec<u8>>);

impl phy::RxToken for LoRx {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        let r = f(&self.0);
        give_buf(self.0);
        r
    }
}

impl phy::TxToken for LoTx<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut p = take_buf(len);
        let r = f(&mut p);
        self.0.push_back(p);
        r
    }
}

impl Device for Loopback {
    type RxToken<'b>
        = LoRx
    where
        Self: 'b;
    type TxToken<'b>
        = LoTx<'b>
    where
        Self: 'b;

    fn receive(&mut self, _: Instant) -> Option<(LoRx, LoTx<'_>)> {
        let p = self.queue.pop_front()?;
        Some((LoRx(p), LoTx(&mut self.queue)))
    }

    fn transmit(&mut self, _: Instant) -> Option<LoTx<'_>> {
        Some(LoTx(&mut self.queue))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = PhyMedium::Ip;
        caps.max_transmission_unit = LO_MTU;
        // Packets never leave the process: no checksums, as Linux's lo.
        caps.checksum = ChecksumCapabilities::ignored();
        caps
    }
}
