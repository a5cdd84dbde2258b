//! The engine driven by hand, for the fuzz targets (`crate::fuzzing`): in the calling thread,
//! one round of its event loop at a time, its stacks on an in-memory link whose other end is
//! the fuzzer. Requests, frames and events take the engine's own paths.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::rc::Rc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use mio::unix::SourceFd;
use mio::Events;

use super::ctl::Ctls;
use super::sock::SockState;
use super::stack::NetStack;
use super::{Engine, Readiness, Source};
use crate::control;
use crate::control::proto::{Key, Reply, Request};
use crate::link::{Link, Medium};
use crate::sys;

/// The engine's random seed: fixed, so that an input does the same each time it runs
/// (MAC addresses, TCP initial sequence numbers, ephemeral ports).
const SEED: u64 = 0x5eed_f022;

/// The engine's key: fixed too.
const KEY: Key = [0x5e; 16];

/// The control connection of requests made with [`request`]: none, so a deferred reply
/// is dropped.
const NO_CONN: usize = usize::MAX;

/// Frames the stack sent that the link keeps (the oldest go first).
const TX_MAX: usize = 64;

/// Frames in flight on a fuzz link.
#[derive(Debug, Default)]
pub struct Wire {
    /// Frames for the stack to receive.
    pub rx: VecDeque<Vec<u8>>,
    /// Frames the stack sent.
    pub tx: VecDeque<Vec<u8>>,
}

/// The fuzzer's end of a fuzz link.
pub type WireRef = Rc<RefCell<Wire>>;

/// A link whose other end is the fuzzer, as a switch port or a TUN device would be.
struct FuzzLink {
    medium: Medium,
    checksummed: bool,
    wire: WireRef,
}

impl Link for FuzzLink {
    fn medium(&self) -> Medium {
        self.medium
    }

    fn mtu(&self) -> usize {
        match self.medium {
            Medium::Ethernet => 1514,
            Medium::Ip => 1500,
        }
    }

    fn poll_fd(&self) -> Option<RawFd> {
        None
    }

    fn recv(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let frame = self.wire.borrow_mut().rx.pop_front();
        let frame = frame.ok_or(io::ErrorKind::WouldBlock)?;
        // As a datagram socket does, a frame too long for the buffer is cut.
        let n = frame.len().min(buf.len());
        buf[..n].copy_from_slice(&frame[..n]);
        Ok(n)
    }

    fn send(&mut self, frame: &[u8]) -> io::Result<()> {
        let mut w = self.wire.borrow_mut();
        if w.tx.len() >= TX_MAX {
            w.tx.pop_front();
        }
        w.tx.push_back(frame.to_vec());
        Ok(())
    }

    fn checksummed(&self) -> bool {
        self.checksummed
    }
}

/// A socket's pair kept from one lab for the socket of the same id in the next: a lab is
/// made for every input, and making and closing its pairs was a third of its cost. Kept
/// only when neither end was shut down, with both ends drained: to the engine and the
/// application it is as new (same name, same type, nothing queued).
struct Kept {
    mine: OwnedFd,
    theirs: OwnedFd,
    app: super::sock::FileId,
    ty: i32,
}

thread_local! {
    static ENGINE: RefCell<Option<Engine>> = const { RefCell::new(None) };
    /// Application ends handed back by a lab, by socket id, for [`reset`] to keep.
    static BACK: RefCell<HashMap<u64, OwnedFd>> = RefCell::new(HashMap::new());
    /// Pairs [`reset`] kept, by socket id, for [`take_pair`].
    static KEPT: RefCell<HashMap<u64, Kept>> = RefCell::new(HashMap::new());
}

/// Hands back the application end of socket `sock` when a lab is done with it: [`reset`]
/// keeps its pair for the next lab if it is as new.
pub fn give_back(sock: u64, app_end: OwnedFd) {
    BACK.with(|b| b.borrow_mut().insert(sock, app_end));
}

/// The pair kept for socket `id` of pair type `ty`, for `Ctx::pair`. One of another type
/// is closed (freeing the name for a new pair).
pub(super) fn take_pair(id: u64, ty: i32) -> Option<(OwnedFd, OwnedFd, super::sock::FileId)> {
    let k = KEPT.with(|k| k.borrow_mut().remove(&id))?;
    (k.ty == ty).then_some((k.mine, k.theirs, k.app))
}

/// Reads what waits on `fd` until none is left; false if it reads an end (or an empty
/// message, which on a seqpacket pair looks the same) or fails.
fn drained(fd: RawFd) -> bool {
    let mut buf = [0u8; 16384];
    for _ in 0..256 {
        match sys::recv_msg_flags(fd, &mut buf, libc::MSG_DONTWAIT) {
            Ok((0, _)) => return false,
            Ok(_) => {}
            Err(e) => return e.kind() == io::ErrorKind::WouldBlock,
        }
    }
    false
}

/// Keeps the pair of socket `sock` if its application end `theirs` was handed back and
/// the pair is as new (see [`Kept`]), taking the socket out of its stack before the stack
/// is deleted.
fn keep_pair(e: &mut Engine, sock: u64, theirs: OwnedFd) {
    let id = super::stack::stack_of_sock(sock);
    let Some(st) = e.stacks.get_mut(&id) else {
        return;
    };
    let Some(s) = st.socks.get(&sock) else {
        return;
    };
    if !(drained(s.fd.as_raw_fd()) && drained(theirs.as_raw_fd())) {
        return;
    }
    let s = st.socks.remove(&sock).expect("seen above");
    let _ = e
        .poll
        .registry()
        .deregister(&mut SourceFd(&s.fd.as_raw_fd()));
    if matches!(e.sources.get(s.token), Some(Source::Sock(x, y)) if *x == id && *y == sock) {
        e.sources.remove(s.token);
    }
    let ty = if s.stream {
        libc::SOCK_STREAM
    } else {
        libc::SOCK_SEQPACKET
    };
    let k = Kept {
        mine: s.fd,
        theirs,
        app: s.app,
        ty,
    };
    KEPT.with(|kept| kept.borrow_mut().insert(sock, k));
}

/// Runs `f` on this thread's engine, made on first use.
fn with<R>(f: impl FnOnce(&mut Engine) -> R) -> R {
    ENGINE.with(|e| {
        let mut e = e.borrow_mut();
        if e.is_none() {
            *e = Some(new_engine().expect("cannot make the fuzz engine"));
        }
        f(e.as_mut().expect("made above"))
    })
}

fn new_engine() -> io::Result<Engine> {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let name = format!("fuzz{}.{n}", std::process::id());
    let listener = sys::unix_socket(libc::SOCK_SEQPACKET | libc::SOCK_NONBLOCK)?;
    sys::bind_abstract(listener.as_raw_fd(), &control::ctl_name(&name))?;
    sys::listen(listener.as_raw_fd(), 64)?;
    Engine::new(listener, name, SEED, KEY)
}

/// Ends every stack and control connection, so that the next input starts from nothing
/// (and gets the same stack ids).
pub fn reset() {
    with(|e| {
        let back = BACK.with(|b| std::mem::take(&mut *b.borrow_mut()));
        for (sock, theirs) in back {
            keep_pair(e, sock, theirs);
        }
        let ids: Vec<u32> = e.stacks.keys().copied().collect();
        for id in ids {
            e.del_stack(id);
        }
        let conns = |e: &Engine| -> Vec<usize> {
            let ctl = |s: &Source| matches!(s, Source::CtlConn(_));
            e.sources
                .iter()
                .filter(|(_, s)| ctl(s))
                .map(|(t, _)| t)
                .collect()
        };
        for t in conns(e) {
            e.hang_up(t);
        }
        // Those still owed a reply stay, as in the engine: here they go, with what the
        // engine knew of them.
        let owed = conns(e);
        for &t in &owed {
            e.sources.remove(t);
        }
        if !owed.is_empty() {
            e.ctls = Ctls::default();
        }
        e.timers.clear();
        e.ready.borrow_mut().clear();
        e.next_stack = 1;
    })
}

/// Adds a stack on a fuzz link of `medium` (None: loopback only), as the engine adds one
/// for a locator; its id and the fuzzer's end of the link. `checksummed`: whether the stack
/// checks the checksums of what it receives (as on a switch or TUN link) or not (mem://).
pub fn add_stack(medium: Option<Medium>, checksummed: bool) -> (u32, WireRef) {
    with(|e| {
        let id = e.next_stack;
        e.next_stack += 1;
        let wire = WireRef::default();
        let link = medium.map(|medium| {
            Box::new(FuzzLink {
                medium,
                checksummed,
                wire: wire.clone(),
            }) as Box<dyn Link>
        });
        let seed = e.seed.wrapping_add(id as u64);
        e.stacks
            .insert(id, NetStack::on_link(id, link, "vde0", seed));
        e.ready.borrow_mut().push(id as usize);
        (id, wire)
    })
}

/// Whether the engine may be asked `req` here: a stack may be added only on no link or on
/// mem://, never on a link that reaches outside the process (TAP devices, switches,
/// libvdeplug plugins, some of which run commands).
pub fn harmless(req: &Request) -> bool {
    match req {
        Request::AddStack { vnl, .. } => vnl.is_empty() || vnl.starts_with("mem://"),
        _ => true,
    }
}

/// Handles a request as the engine handles one from a control connection; the stacks it
/// woke run at the next [`step`], as the engine runs them after a batch of events. None: the
/// reply was deferred (and will be dropped).
///
/// Panics if the request is not [`harmless`].
pub fn request(req: Request) -> Option<(Reply, Option<OwnedFd>)> {
    assert!(harmless(&req), "not here: {req:?}");
    with(|e| {
        let mut work = Vec::new();
        let r = e.request(NO_CONN, req, &mut work);
        e.ready
            .borrow_mut()
            .extend(work.iter().map(|id| *id as usize));
        r
    })
}

/// A connection to the engine's control socket, accepted: the client's end. Requests on it
/// are served by [`step`]; the first must be a hello (with [`key`] to be let in).
pub fn connect() -> io::Result<OwnedFd> {
    let name = with(|e| control::ctl_name(&e.name));
    let client = sys::unix_socket(libc::SOCK_SEQPACKET)?;
    sys::connect_abstract(client.as_raw_fd(), &name)?;
    step();
    Ok(client)
}

/// The engine's key.
pub fn key() -> Key {
    KEY
}

/// Tells the engine that stack `id` has frames waiting, as an in-process link does.
pub fn wake(id: u32) {
    with(|e| e.ready.borrow_mut().push(id as usize))
}

/// One round of the engine's event loop, without waiting: what happened on its fds
/// (requests, bytes and hang-ups from applications), then the stacks with work, all of them
/// as if their deadlines had come.
pub fn step() {
    with(|e| {
        let mut events = Events::with_capacity(256);
        let mut work: Vec<u32> = e.stacks.keys().copied().collect();
        if e.poll.poll(&mut events, Some(Duration::ZERO)).is_ok() {
            for ev in events.iter() {
                e.event(ev.token().0, Readiness::of(ev), &mut work);
            }
        }
        e.serve_ctls(&mut work);
        e.drain_work(&mut work);
    })
}

/// The MAC address of stack `id`, if it is on an Ethernet link.
pub fn mac(id: u32) -> Option<[u8; 6]> {
    with(|e| e.stacks.get(&id).and_then(|st| st.mac()).map(|m| m.0))
}

/// Whether socket `sock` of stack `id` is a connected TCP socket.
pub fn connected(id: u32, sock: u64) -> bool {
    with(|e| {
        e.stacks
            .get(&id)
            .and_then(|st| st.socks.get(&sock))
            .is_some_and(|s| matches!(s.state, SockState::Connected(_)))
    })
}
