//! `mem://NAME`: an in-process Ethernet segment. Stacks of one process that open the same
//! NAME hear each other; a frame is handed from one stack's queue to another's with no
//! syscall. The segment learns source MACs like a switch, so unicast frames reach one member,
//! and it knows its members' IPv4 addresses, so an ARP request reaches only the member that
//! owns the address asked for (a broadcast to 10,000 stacks would wake every one of them).
//! Its MTU is 65535, as a loopback's: every member is one of our stacks.
//!
//! Segments live in the engine thread (thread-local), as do all links.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::RawFd;
use std::rc::Rc;

use super::{Link, Medium, Wake};

/// Bytes a member may have waiting before the segment drops more (a full NIC ring).
const QUEUE_BYTES: usize = 4 << 20;
/// Frame size: a 65535-byte MTU plus the Ethernet header.
const FRAME: usize = 65535 + 14;

#[derive(Default)]
struct Frames {
    frames: VecDeque<Vec<u8>>,
    bytes: usize,
}

type Queue = Rc<RefCell<Frames>>;

struct Member {
    queue: Queue,
    wake: Wake,
}

#[derive(Default)]
struct Segment {
    members: HashMap<u64, Member>,
    macs: HashMap<[u8; 6], u64>,
    /// Who owns each IPv4 address (several members when misconfigured alike).
    owners: HashMap<Ipv4Addr, Vec<u64>>,
    /// The MACs learned from each member, for the same reason.
    macs_of: HashMap<u64, Vec<[u8; 6]>>,
    /// Each member's registered addresses, so forgetting them does not visit every entry.
    addrs_of: HashMap<u64, Vec<Ipv4Addr>>,
    next: u64,
}

impl Segment {
    fn forget_addrs(&mut self, id: u64) {
        for a in self.addrs_of.remove(&id).unwrap_or_default() {
            if let Some(ids) = self.owners.get_mut(&a) {
                ids.retain(|m| *m != id);
                if ids.is_empty() {
                    self.owners.remove(&a);
                }
            }
        }
    }
}

/// The address an ARP request asks for, if `frame` is one.
fn arp_request_target(frame: &[u8]) -> Option<Ipv4Addr> {
    let is_arp = frame.len() >= 42 && frame[12..14] == [0x08, 0x06];
    if is_arp && frame[20..22] == [0, 1] {
        let t: [u8; 4] = frame[38..42].try_into().ok()?;
        Some(Ipv4Addr::from(t))
    } else {
        None
    }
}

thread_local! {
    static SEGMENTS: RefCell<HashMap<String, Rc<RefCell<Segment>>>> = RefCell::new(HashMap::new());
}

/// A stack's port on an in-process segment.
pub struct MemLink {
    name: String,
    segment: Rc<RefCell<Segment>>,
    id: u64,
    queue: Queue,
}

impl MemLink {
    /// Joins the segment called `name`, creating it if it is new.
    pub fn open(name: &str, wake: Wake) -> io::Result<MemLink> {
        if name.is_empty() || name.contains('/') && name.trim_matches('/').is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "mem:// needs a segment name, e.g. mem://lan0",
            ));
        }
        let segment =
            SEGMENTS.with(|s| s.borrow_mut().entry(name.to_string()).or_default().clone());
        let queue: Queue = Rc::default();
        let id = {
            let mut seg = segment.borrow_mut();
            seg.next += 1;
            let id = seg.next;
            seg.members.insert(
                id,
                Member {
                    queue: queue.clone(),
                    wake,
                },
            );
            id
        };
        Ok(MemLink {
            name: name.to_string(),
            segment,
            id,
            queue,
        })
    }
}

impl Link for MemLink {
    fn medium(&self) -> Medium {
        Medium::Ethernet
    }

    fn mtu(&self) -> usize {
        FRAME
    }

    fn poll_fd(&self) -> Option<RawFd> {
        None
    }

    fn recv(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let frame = {
            let mut q = self.queue.borrow_mut();
            let f = q.frames.pop_front().ok_or(io::ErrorKind::WouldBlock)?;
            q.bytes -= f.len();
            f
        };
        let n = frame.len().min(buf.len());
        buf[..n].copy_from_slice(&frame[..n]);
        Ok(n)
    }

    fn send(&mut self, frame: &[u8]) -> io::Result<()> {
        if frame.len() < 14 {
            return Ok(());
        }
        let mut seg = self.segment.borrow_mut();
        let dst: [u8; 6] = frame[0..6].try_into().unwrap_or_default();
        let src: [u8; 6] = frame[6..12].try_into().unwrap_or_default();
        if src[0] & 1 == 0 && seg.macs.insert(src, self.id) != Some(self.id) {
            seg.macs_of.entry(self.id).or_default().push(src);
        }
        let unicast_to = if dst[0] & 1 == 0 {
            seg.macs.get(&dst).copied()
        } else {
            None
        };
        let deliver = |m: &Member| {
            let mut q = m.queue.borrow_mut();
            if q.bytes + frame.len() <= QUEUE_BYTES {
                let was_empty = q.frames.is_empty();
                let mut copy = crate::engine::device::take_buf(frame.len());
                copy.copy_from_slice(frame);
                q.frames.push_back(copy);
                q.bytes += frame.len();
                if was_empty {
                    m.wake.wake();
                }
            }
        };
        let owners = match (unicast_to, arp_request_target(frame)) {
            (None, Some(ip)) => seg.owners.get(&ip),
            _ => None,
        };
        match unicast_to {
            Some(id) if id != self.id => {
                if let Some(m) = seg.members.get(&id) {
                    deliver(m);
                }
            }
            Some(_) => {}
            None if owners.is_some() => {
                for id in owners.into_iter().flatten() {
                    if let Some(m) = seg.members.get(id).filter(|_| *id != self.id) {
                        deliver(m);
                    }
                }
            }
            None => {
                for (id, m) in &seg.members {
                    if *id != self.id {
                        deliver(m);
                    }
                }
            }
        }
        Ok(())
    }

    fn recv_owned(&mut self) -> Option<io::Result<Vec<u8>>> {
        let mut q = self.queue.borrow_mut();
        Some(match q.frames.pop_front() {
            Some(f) => {
                q.bytes -= f.len();
                Ok(f)
            }
            None => Err(io::ErrorKind::WouldBlock.into()),
        })
    }

    fn checksummed(&self) -> bool {
        false // every member is a stack of this process
    }

    fn set_addrs(&mut self, addrs: &[IpAddr]) {
        let mut seg = self.segment.borrow_mut();
        seg.forget_addrs(self.id);
        for a in addrs {
            if let IpAddr::V4(v4) = a {
                seg.owners.entry(*v4).or_default().push(self.id);
                seg.addrs_of.entry(self.id).or_default().push(*v4);
            }
        }
    }
}

impl Drop for MemLink {
    fn drop(&mut self) {
        let empty = {
            let mut seg = self.segment.borrow_mut();
            seg.members.remove(&self.id);
            let id = self.id;
            for mac in seg.macs_of.remove(&id).unwrap_or_default() {
                if seg.macs.get(&mac) == Some(&id) {
                    seg.macs.remove(&mac);
                }
            }
            seg.forget_addrs(id);
            seg.members.is_empty()
        };
        if empty {
            SEGMENTS.with(|s| s.borrow_mut().remove(&self.name));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(seg: &str, n: usize, ready: &Rc<RefCell<Vec<usize>>>) -> MemLink {
        let wake = Wake {
            stack: n,
            ready: ready.clone(),
        };
        MemLink::open(seg, wake).unwrap()
    }

    fn arp_request(target: [u8; 4]) -> Vec<u8> {
        let mut f = vec![0u8; 42];
        f[0..6].copy_from_slice(&[0xff; 6]);
        f[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 1]);
        f[12..14].copy_from_slice(&[0x08, 0x06]);
        f[20..22].copy_from_slice(&[0, 1]);
        f[38..42].copy_from_slice(&target);
        f
    }

    #[test]
    fn arp_requests_reach_only_the_owner_unless_unknown() {
        let ready = Rc::default();
        let mut a = member("arp-test", 1, &ready);
        let mut b = member("arp-test", 2, &ready);
        let mut c = member("arp-test", 3, &ready);
        b.set_addrs(&["10.0.0.2".parse().unwrap()]);
        c.set_addrs(&["10.0.0.3".parse().unwrap()]);
        let mut buf = [0u8; 64];
        a.send(&arp_request([10, 0, 0, 3])).unwrap();
        assert!(b.recv(&mut buf).is_err(), "b does not own 10.0.0.3");
        assert_eq!(c.recv(&mut buf).unwrap(), 42);
        // An address nobody registered is asked of everyone.
        a.send(&arp_request([10, 0, 0, 9])).unwrap();
        assert_eq!(b.recv(&mut buf).unwrap(), 42);
        assert_eq!(c.recv(&mut buf).unwrap(), 42);
        // A member that drops an address stops getting its requests; a new owner gets them.
        c.set_addrs(&[]);
        b.set_addrs(&["10.0.0.2".parse().unwrap(), "10.0.0.3".parse().unwrap()]);
        a.send(&arp_request([10, 0, 0, 3])).unwrap();
        assert_eq!(b.recv(&mut buf).unwrap(), 42);
        assert!(c.recv(&mut buf).is_err());
    }
}
