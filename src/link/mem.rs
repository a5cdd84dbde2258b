//! `mem://NAME`: an in-process Ethernet segment. Stacks of one process that open the same
//! NAME hear each other; a frame is handed from one stack's queue to another's with no
//! syscall. The segment learns source MACs like a switch, so unicast frames reach one member.
//!
//! Segments live in the engine thread (thread-local), as do all links.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::io;
use std::os::fd::RawFd;
use std::rc::Rc;

use super::{Link, Medium, Wake};

/// Frames a member may have waiting before the segment drops more (a full NIC ring).
const QUEUE_FRAMES: usize = 4096;
/// Frame size: a 1500-byte MTU plus the Ethernet header.
const FRAME: usize = 1514;

type Queue = Rc<RefCell<VecDeque<Vec<u8>>>>;

struct Member {
    queue: Queue,
    wake: Wake,
}

#[derive(Default)]
struct Segment {
    members: HashMap<u64, Member>,
    macs: HashMap<[u8; 6], u64>,
    next: u64,
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
        let frame = self
            .queue
            .borrow_mut()
            .pop_front()
            .ok_or(io::ErrorKind::WouldBlock)?;
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
        if src[0] & 1 == 0 {
            seg.macs.insert(src, self.id);
        }
        let unicast_to = if dst[0] & 1 == 0 {
            seg.macs.get(&dst).copied()
        } else {
            None
        };
        let deliver = |m: &Member| {
            let mut q = m.queue.borrow_mut();
            if q.len() < QUEUE_FRAMES {
                let was_empty = q.is_empty();
                q.push_back(frame.to_vec());
                if was_empty {
                    m.wake.wake();
                }
            }
        };
        match unicast_to {
            Some(id) if id != self.id => {
                if let Some(m) = seg.members.get(&id) {
                    deliver(m);
                }
            }
            Some(_) => {}
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
}

impl Drop for MemLink {
    fn drop(&mut self) {
        let empty = {
            let mut seg = self.segment.borrow_mut();
            seg.members.remove(&self.id);
            let id = self.id;
            seg.macs.retain(|_, m| *m != id);
            seg.members.is_empty()
        };
        if empty {
            SEGMENTS.with(|s| s.borrow_mut().remove(&self.name));
        }
    }
}
