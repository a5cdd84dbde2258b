//! `mem://NAME`: an in-process Ethernet segment. Stacks of one process that open the same
//! NAME hear each other; a frame is handed from one stack's queue to another's with no
//! syscall. The segment learns source MACs like a switch, so unicast frames reach one member,
//! and it knows its members' IPv4 addresses, so an ARP request reaches only the member that
//! owns the address asked for (a broadcast to 10,000 stacks would wake every one of them).
//! Its MTU is 65535, as a loopback's: every member is one of our stacks.
//!
//! `mem://NAME[loss=2%/delay=5ms/...]` impairs what this member sends, as netem would on its
//! interface (see [`super::impair`]). Frames that arrive later wait in the receiver's queue
//! with their due time, in order of it; the link tells the engine when the next is due
//! ([`Link::due_in`]). Checksums are off on a segment (all its members are ours), unless its
//! first member asked for `corrupt=`: then every member computes and verifies them.
//!
//! Segments live in the engine thread (thread-local), as do all links.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::RawFd;
use std::rc::Rc;
use std::time::{Duration, Instant};

use super::impair::{self, Impair};
use super::{Link, Medium, Wake};

/// Bytes a member may have waiting before the segment drops more (a full NIC ring).
const QUEUE_BYTES: usize = 4 << 20;
/// Bytes still on the (delayed) wire to a member, on top of [`QUEUE_BYTES`], before the
/// segment drops more: a bound on memory, far above what a delay needs at 10 Gbit/s.
const FLIGHT_BYTES: usize = 64 << 20;
/// Frame size: a 65535-byte MTU plus the Ethernet header.
const FRAME: usize = 65535 + 14;

struct Frame {
    data: Vec<u8>,
    /// When it arrives; None: it has.
    due: Option<Instant>,
}

/// A member's queue, in order of arrival time (frames with no delay first).
#[derive(Default)]
struct Frames {
    frames: VecDeque<Frame>,
    bytes: usize,
}

impl Frames {
    /// Queues a frame that arrives at `due`, ahead of every frame due no earlier when
    /// `ahead`; whether it is now the first. False when the queue is full.
    fn push(&mut self, data: Vec<u8>, due: Option<Instant>, ahead: bool) -> Option<bool> {
        let room = QUEUE_BYTES + if due.is_some() { FLIGHT_BYTES } else { 0 };
        if self.bytes + data.len() > room {
            return None;
        }
        self.bytes += data.len();
        let q = &mut self.frames;
        // Search from the end it most likely goes to (for undelayed frames, at once).
        let i = if ahead {
            q.iter().position(|f| f.due >= due).unwrap_or(q.len())
        } else {
            q.iter().rposition(|f| f.due <= due).map_or(0, |i| i + 1)
        };
        q.insert(i, Frame { data, due });
        Some(i == 0)
    }

    /// The first frame, if it has arrived.
    fn pop(&mut self) -> Option<Vec<u8>> {
        let due = self.frames.front()?.due;
        if due.is_some_and(|d| d > Instant::now()) {
            return None;
        }
        let f = self.frames.pop_front()?;
        self.bytes -= f.data.len();
        Some(f.data)
    }
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
    /// Members compute and verify checksums (the first member asked for `corrupt=`).
    checksums: bool,
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

    /// Hands a frame from member `from` to those it is for.
    fn carry(&mut self, from: u64, frame: &[u8], due: Option<Instant>, ahead: bool) {
        let dst: [u8; 6] = frame[0..6].try_into().unwrap_or_default();
        let src: [u8; 6] = frame[6..12].try_into().unwrap_or_default();
        if src[0] & 1 == 0 && self.macs.insert(src, from) != Some(from) {
            self.macs_of.entry(from).or_default().push(src);
        }
        let unicast_to = if dst[0] & 1 == 0 {
            self.macs.get(&dst).copied()
        } else {
            None
        };
        let deliver = |m: &Member| {
            let mut copy = crate::engine::device::take_buf(frame.len());
            copy.copy_from_slice(frame);
            match m.queue.borrow_mut().push(copy, due, ahead) {
                Some(true) => m.wake.wake(),
                Some(false) => {}
                None => {} // full: dropped, as by a NIC whose ring is full
            }
        };
        let owners = match (unicast_to, arp_request_target(frame)) {
            (None, Some(ip)) => self.owners.get(&ip),
            _ => None,
        };
        match unicast_to {
            Some(id) if id != from => {
                if let Some(m) = self.members.get(&id) {
                    deliver(m);
                }
            }
            Some(_) => {}
            None if owners.is_some() => {
                for id in owners.into_iter().flatten() {
                    if let Some(m) = self.members.get(id).filter(|_| *id != from) {
                        deliver(m);
                    }
                }
            }
            None => {
                for (id, m) in &self.members {
                    if *id != from {
                        deliver(m);
                    }
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

/// A seed nobody chose, for links without `seed=`.
fn random_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish()
}

/// A stack's port on an in-process segment.
pub struct MemLink {
    name: String,
    segment: Rc<RefCell<Segment>>,
    id: u64,
    queue: Queue,
    /// What happens to the frames this member sends, when its locator asked.
    impair: Option<Impair>,
    checksums: bool,
}

impl MemLink {
    /// Joins the segment `spec` names (`NAME` or `NAME[parameters]`), creating it if it is
    /// new. Bad parameters, or `corrupt=` on a segment whose members do not verify
    /// checksums, fail with `InvalidInput` (EINVAL) and a message that says why.
    pub fn open(spec: &str, wake: Wake) -> io::Result<MemLink> {
        let (name, params) = impair::split(spec)
            .map_err(|e| io::Error::new(e.kind(), format!("mem://{spec}: {e}")))?;
        if name.is_empty() || name.contains('/') && name.trim_matches('/').is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "mem:// needs a segment name, e.g. mem://lan0",
            ));
        }
        let segment =
            SEGMENTS.with(|s| s.borrow_mut().entry(name.to_string()).or_default().clone());
        let corrupts = params.as_ref().is_some_and(|p| p.corrupt.is_some());
        let queue: Queue = Rc::default();
        let (id, checksums) = {
            let mut seg = segment.borrow_mut();
            if seg.members.is_empty() {
                seg.checksums = corrupts;
            } else if corrupts && !seg.checksums {
                drop(seg);
                Self::forget_if_empty(name);
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "mem://{spec}: corrupt= needs checksums on every member of {name:?}, \
                         and its first member did not ask for them: give the first member \
                         corrupt= too (corrupt=0 turns checksums on and corrupts nothing)"
                    ),
                ));
            }
            seg.next += 1;
            let id = seg.next;
            seg.members.insert(
                id,
                Member {
                    queue: queue.clone(),
                    wake,
                },
            );
            (id, seg.checksums)
        };
        // Members differ in their choices even with one seed, yet repeat them run to run.
        let impair = params.map(|p| {
            let seed = p.seed.unwrap_or_else(random_seed) ^ id.wrapping_mul(0x9e37_79b9);
            Impair::new(p, seed, name)
        });
        Ok(MemLink {
            name: name.to_string(),
            segment,
            id,
            queue,
            impair,
            checksums,
        })
    }

    fn forget_if_empty(name: &str) {
        SEGMENTS.with(|s| {
            let mut s = s.borrow_mut();
            if s.get(name).is_some_and(|g| g.borrow().members.is_empty()) {
                s.remove(name);
            }
        });
    }
}

impl Link for MemLink {
    fn medium(&self) -> Medium {
        Medium::Ethernet
    }

    fn mtu(&self) -> usize {
        self.impair
            .as_ref()
            .and_then(|i| i.params().mtu)
            .map_or(FRAME, |m| m + 14)
    }

    fn poll_fd(&self) -> Option<RawFd> {
        None
    }

    fn recv(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let frame = self
            .queue
            .borrow_mut()
            .pop()
            .ok_or(io::ErrorKind::WouldBlock)?;
        let n = frame.len().min(buf.len());
        buf[..n].copy_from_slice(&frame[..n]);
        crate::engine::device::give_buf(frame);
        Ok(n)
    }

    fn send(&mut self, frame: &[u8]) -> io::Result<()> {
        if frame.len() < 14 || frame.len() > self.mtu() {
            return Ok(());
        }
        let mut seg = self.segment.borrow_mut();
        let Some(imp) = self.impair.as_mut() else {
            seg.carry(self.id, frame, None, false);
            return Ok(());
        };
        for copy in imp.fate(frame.len(), Instant::now()).into_iter().flatten() {
            if copy.flip.is_some() {
                let mut bad = crate::engine::device::take_buf(frame.len());
                bad.copy_from_slice(frame);
                copy.corrupt(&mut bad);
                seg.carry(self.id, &bad, copy.due, copy.ahead);
                crate::engine::device::give_buf(bad);
            } else {
                seg.carry(self.id, frame, copy.due, copy.ahead);
            }
        }
        Ok(())
    }

    fn recv_owned(&mut self) -> Option<io::Result<Vec<u8>>> {
        Some(
            self.queue
                .borrow_mut()
                .pop()
                .ok_or_else(|| io::ErrorKind::WouldBlock.into()),
        )
    }

    fn last_send_note(&self) -> Option<&'static str> {
        self.impair.as_ref()?.last_note()
    }

    fn due_in(&self) -> Option<Duration> {
        let due = self.queue.borrow().frames.front()?.due?;
        Some(due.saturating_duration_since(Instant::now()))
    }

    fn checksummed(&self) -> bool {
        // Every member is a stack of this process: no checksums, unless frames are corrupted.
        self.checksums
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

    /// A unicast frame from MAC ..:01 to MAC ..:02 carrying `tag`.
    fn frame(tag: u8) -> Vec<u8> {
        let mut f = vec![0u8; 60];
        f[0..6].copy_from_slice(&[2, 0, 0, 0, 0, 2]);
        f[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 1]);
        f[14] = tag;
        f
    }

    /// Two members, the first impaired by `params`; b has sent a frame so a knows its MAC.
    fn pair(seg: &str, params: &str, ready: &Rc<RefCell<Vec<usize>>>) -> (MemLink, MemLink) {
        let mut a = member(&format!("{seg}[{params}]"), 1, ready);
        let mut b = member(seg, 2, ready);
        let mut back = frame(0);
        back[0..6].copy_from_slice(&[2, 0, 0, 0, 0, 1]);
        back[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 2]);
        b.send(&back).unwrap();
        a.recv_owned().unwrap().unwrap();
        ready.borrow_mut().clear();
        (a, b)
    }

    fn tags(link: &mut MemLink) -> Vec<u8> {
        std::iter::from_fn(|| link.recv_owned().and_then(|r| r.ok()))
            .map(|f| f[14])
            .collect()
    }

    #[test]
    fn delayed_frames_wait_for_their_time_and_wake_the_receiver_once() {
        let ready = Rc::default();
        let (mut a, mut b) = pair("delay-test", "delay=30ms", &ready);
        assert_eq!(b.due_in(), None);
        let sent = Instant::now();
        a.send(&frame(1)).unwrap();
        a.send(&frame(2)).unwrap();
        // Woken once, for the first frame: the engine then asks when it is due.
        assert_eq!(*ready.borrow(), vec![2]);
        assert!(tags(&mut b).is_empty(), "nothing before its time");
        let due = b.due_in().expect("a frame waits");
        assert!(due > Duration::from_millis(20) && due <= Duration::from_millis(30));
        std::thread::sleep(due);
        assert_eq!(tags(&mut b), vec![1, 2]);
        assert!(sent.elapsed() >= Duration::from_millis(30));
        assert_eq!(b.due_in(), None);
    }

    #[test]
    fn reordered_frames_go_ahead_of_those_queued() {
        let ready = Rc::default();
        let (mut a, mut b) = pair("reorder-test", "reorder=100%", &ready);
        for t in 1..=3 {
            a.send(&frame(t)).unwrap();
        }
        assert_eq!(tags(&mut b), vec![3, 2, 1]);
        // With a delay, a reordered frame skips it and overtakes the delayed ones.
        let (mut c, mut d) = pair(
            "reorder-delay-test",
            "delay=20ms/reorder=50%/seed=3",
            &ready,
        );
        for t in 0..20 {
            c.send(&frame(t)).unwrap();
        }
        let early = tags(&mut d);
        assert!(!early.is_empty() && early.len() < 20, "{early:?}");
        std::thread::sleep(Duration::from_millis(25));
        let late = tags(&mut d);
        assert_eq!(early.len() + late.len(), 20);
        assert!(
            early.windows(2).all(|w| w[0] > w[1]),
            "each went first: {early:?}"
        );
        assert!(
            late.windows(2).all(|w| w[0] < w[1]),
            "delayed in order: {late:?}"
        );
    }

    #[test]
    fn loss_and_dup_change_what_arrives() {
        let ready = Rc::default();
        let (mut a, mut b) = pair("lossdup-test", "loss=100%", &ready);
        a.send(&frame(1)).unwrap();
        assert!(tags(&mut b).is_empty());
        let (mut c, mut d) = pair("dup-test", "dup=100%", &ready);
        c.send(&frame(1)).unwrap();
        assert_eq!(tags(&mut d), vec![1, 1]);
    }

    #[test]
    fn corrupting_segments_keep_checksums_on() {
        let ready = Rc::default();
        let a = member("csum-test[corrupt=1%]", 1, &ready);
        let b = member("csum-test", 2, &ready);
        assert!(a.checksummed() && b.checksummed(), "every member verifies");
        let c = member("nocsum-test", 1, &ready);
        assert!(!c.checksummed());
        let e = MemLink::open(
            "nocsum-test[corrupt=1%]",
            Wake {
                stack: 2,
                ready: ready.clone(),
            },
        )
        .err()
        .expect("a corrupting member on a segment without checksums");
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        assert!(e.to_string().contains("first member"), "{e}");
        // The segment is as it was: its member, without checksums.
        assert!(!member("nocsum-test", 3, &ready).checksummed());
    }

    #[test]
    fn bad_parameters_fail_to_open() {
        let ready = Rc::default();
        let w = Wake { stack: 1, ready };
        let e = MemLink::open("bad-test[loss=2]x", w.clone()).err().unwrap();
        assert!(e.to_string().starts_with("mem://bad-test[loss=2]x:"), "{e}");
        assert!(MemLink::open("[loss=1%]", w).is_err(), "no name");
        SEGMENTS.with(|s| assert!(!s.borrow().contains_key("bad-test")));
    }
}
