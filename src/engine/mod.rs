//! The engine: one thread, one mio event loop, serving every stack of the process.
//!
//! It owns the stacks, their links and the engine ends of all socketpairs, and answers the
//! control requests that arrive on its abstract AF_UNIX socket. Work is driven by events
//! (frames, bytes from applications, requests) and by each stack's next smoltcp deadline;
//! an idle engine sleeps in epoll with no timeout.

mod capture;
mod conf;
mod ctl;
pub mod device;
pub mod ending;
mod neighbor;
mod opener;
mod ops;
pub mod sock;
mod spin;
pub mod stack;

use std::cell::RefCell;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::rc::Rc;
use std::sync::OnceLock;
use std::time::Duration;

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use smoltcp::time::Instant;

use crate::bridge::Done;
use crate::control::key::{self, Key};
use crate::control::proto::{Reply, Request};
use crate::control::{self, Ctl};
use crate::sys;
use ctl::{CtlConn, Ctls};
use stack::NetStack;

/// What a mio token stands for.
enum Source {
    CtlListener(OwnedFd),
    /// A control connection: a client thread's, kept for its later requests.
    CtlConn(CtlConn),
    Link(u32),
    Sock(u32, u64),
}

/// What an epoll event says about an fd.
#[derive(Clone, Copy)]
struct Readiness {
    rd: bool,
    wr: bool,
    /// The other end is gone.
    hup: bool,
}

/// Shared pieces the request handlers and bridges need besides the stack itself.
pub struct Ctx<'a> {
    pub registry: &'a mio::Registry,
    sources: &'a mut slab::Slab<Source>,
    pub name: &'a str,
    pub now: Instant,
}

impl Ctx<'_> {
    /// Registers the engine end of a new socket's pair and returns its token.
    pub fn register_sock(&mut self, stack: u32, sock: u64, fd: RawFd) -> io::Result<usize> {
        let token = self.sources.insert(Source::Sock(stack, sock));
        self.registry
            .register(
                &mut SourceFd(&fd),
                Token(token),
                Interest::READABLE | Interest::WRITABLE,
            )
            .inspect_err(|_| {
                self.sources.remove(token);
            })?;
        Ok(token)
    }

    /// Forgets a socket's token.
    pub fn deregister(&mut self, token: usize, fd: RawFd) {
        let _ = self.registry.deregister(&mut SourceFd(&fd));
        if self.sources.contains(token) {
            self.sources.remove(token);
        }
    }

    /// Makes a socketpair for socket `id` of `ty`, binds the engine end to the socket's
    /// name, and returns (engine end, application end, the application end's identity).
    pub fn pair(&mut self, id: u64, ty: i32) -> io::Result<(OwnedFd, OwnedFd, sock::FileId)> {
        let (mine, theirs) = sys::socketpair(ty)?;
        let app = sys::file_id(theirs.as_raw_fd())?;
        sys::bind_abstract(mine.as_raw_fd(), &control::sock_name(self.name, id))?;
        sys::set_nonblocking(mine.as_raw_fd(), true)?;
        // An AF_UNIX sender's SO_SNDBUF bounds what waits in the pair (SO_RCVBUF plays no part).
        let _ = sys::setsockopt_int(mine.as_raw_fd(), libc::SOL_SOCKET, libc::SO_SNDBUF, 1 << 20);
        Ok((mine, theirs, app))
    }
}

struct Engine {
    poll: Poll,
    sources: slab::Slab<Source>,
    stacks: HashMap<u32, NetStack>,
    name: String,
    next_stack: u32,
    timers: BinaryHeap<Reverse<(Instant, u32)>>,
    ready: Rc<RefCell<Vec<usize>>>,
    /// The secret a control connection shows to do more than act on fds it holds.
    key: Key,
    ctls: Ctls,
    seed: u64,
    /// The opener threads, for links (see [`crate::link::Background`]).
    opener: crate::link::Background,
}

static LOCAL: OnceLock<Ctl> = OnceLock::new();

thread_local! {
    static ON_ENGINE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Whether the calling thread is an engine thread. The C library passes socket calls made
/// there (by libvdeplug, say) straight to libc.
pub fn on_engine_thread() -> bool {
    ON_ENGINE.with(|c| c.get())
}

/// The control handle of this process's engine, started on first use.
pub fn local() -> io::Result<Ctl> {
    let mut failure = None;
    let ctl = LOCAL.get_or_init(|| match start() {
        Ok(c) => c,
        Err(e) => {
            failure = Some(e);
            Ctl::from_name(Vec::new())
        }
    });
    match failure {
        Some(e) => Err(e),
        None if ctl.name().is_empty() => Err(io::Error::other("vdestack engine failed to start")),
        None => Ok(ctl.clone()),
    }
}

/// Binds the control socket here, so that requests can be sent at once, and runs the engine
/// in its own thread.
fn start() -> io::Result<Ctl> {
    let seed = random_seed();
    let key = key::generate()?;
    let name = format!("{}.{:016x}", std::process::id(), seed);
    let listener = sys::unix_socket(libc::SOCK_SEQPACKET | libc::SOCK_NONBLOCK)?;
    sys::bind_abstract(listener.as_raw_fd(), &control::ctl_name(&name))?;
    sys::listen(listener.as_raw_fd(), 1024)?;
    let ctl = Ctl::with_key(control::ctl_name(&name), key);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("vdestack-engine".into())
        .spawn(move || match Engine::new(listener, name, seed, key) {
            Ok(engine) => {
                ON_ENGINE.with(|c| c.set(true));
                let _ = tx.send(Ok(()));
                engine.run()
            }
            Err(e) => {
                let _ = tx.send(Err(e));
            }
        })?;
    rx.recv()
        .map_err(|_| io::Error::other("vdestack engine thread died"))??;
    Ok(ctl)
}

fn random_seed() -> u64 {
    let mut b = [0u8; 8];
    // SAFETY: b is a valid 8-byte buffer.
    let n = unsafe { libc::getrandom(b.as_mut_ptr() as *mut _, 8, 0) };
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    if n == 8 {
        u64::from_le_bytes(b)
    } else {
        t ^ (std::process::id() as u64) << 32
    }
}

impl Engine {
    fn new(listener: OwnedFd, name: String, seed: u64, key: Key) -> io::Result<Engine> {
        let poll = Poll::new()?;
        let mut sources = slab::Slab::new();
        let t = sources.insert(Source::CtlListener(listener));
        if let Source::CtlListener(l) = &sources[t] {
            poll.registry().register(
                &mut SourceFd(&l.as_raw_fd()),
                Token(t),
                Interest::READABLE,
            )?;
        }
        Ok(Engine {
            poll,
            sources,
            stacks: HashMap::new(),
            name,
            next_stack: 1,
            timers: BinaryHeap::new(),
            ready: Rc::default(),
            key,
            ctls: Ctls::default(),
            seed,
            opener: {
                let pool = opener::Opener::default();
                Rc::new(move |job| pool.submit(job))
            },
        })
    }

    fn run(mut self) {
        let mut events = Events::with_capacity(1024);
        let mut work: Vec<u32> = Vec::new();
        let mut spin = spin::Spin::new(spin::window_from_env());
        loop {
            let now = Instant::now();
            let mut timeout = self.timers.peek().map(|Reverse((at, _))| {
                if *at <= now {
                    Duration::ZERO
                } else {
                    Duration::from_micros((*at - now).total_micros())
                }
            });
            let spinning = spin.spinning(std::time::Instant::now());
            if spinning || self.ctls.busy() {
                timeout = Some(Duration::ZERO);
            }
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() != io::ErrorKind::Interrupted {
                    tracing::error!("engine stops: poll failed: {e}");
                    return;
                }
            }
            if !events.is_empty() {
                spin.events(std::time::Instant::now());
            } else if spinning && !self.ctls.busy() {
                std::hint::spin_loop();
                continue;
            }
            for ev in events.iter() {
                let t = ev.token().0;
                let ready = Readiness {
                    rd: ev.is_readable() || ev.is_read_closed() || ev.is_error(),
                    wr: ev.is_writable() || ev.is_error(),
                    hup: ev.is_write_closed(),
                };
                // A panic here must not kill the engine and every socket with it.
                let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    self.event(t, ready, &mut work)
                }));
                if r.is_err() {
                    tracing::error!("internal error handling an event (panic recovered)");
                }
            }
            self.serve_ctls(&mut work);
            let now = Instant::now();
            while let Some(Reverse((at, id))) = self.timers.peek().copied() {
                if at > now {
                    break;
                }
                self.timers.pop();
                if self
                    .stacks
                    .get(&id)
                    .is_some_and(|s| s.next_poll == Some(at))
                {
                    work.push(id);
                }
            }
            self.drain_work(&mut work);
            if !events.is_empty() {
                spin.idle(std::time::Instant::now());
            }
        }
    }

    fn drain_work(&mut self, work: &mut Vec<u32>) {
        for _ in 0..1000 {
            work.extend(self.ready.borrow_mut().drain(..).map(|s| s as u32));
            if work.is_empty() {
                return;
            }
            let mut batch = std::mem::take(work);
            batch.sort_unstable();
            batch.dedup();
            for id in batch {
                let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.service(id)));
                if r.is_err() {
                    tracing::error!(stack = id, "internal error in a stack (panic recovered)");
                }
            }
        }
    }

    fn event(&mut self, token: usize, ready: Readiness, work: &mut Vec<u32>) {
        match self.sources.get(token) {
            Some(Source::CtlListener(_) | Source::CtlConn(_)) => self.ctl_ready(token),
            Some(Source::Link(stack)) => {
                let stack = *stack;
                if let Some(st) = self.stacks.get_mut(&stack) {
                    st.link_rd |= ready.rd;
                    st.link_opened(self.poll.registry(), ready.hup);
                }
                work.push(stack);
            }
            Some(Source::Sock(stack, sock)) => {
                let (stack, sock) = (*stack, *sock);
                if let Some(s) = self
                    .stacks
                    .get_mut(&stack)
                    .and_then(|st| st.socks.get_mut(&sock))
                {
                    s.app_closed |= ready.hup && s.hup_is_close();
                    s.pair.rd |= ready.rd;
                    s.pair.wr |= ready.wr;
                }
                if let Some(st) = self.stacks.get_mut(&stack) {
                    st.dirty.push(sock);
                }
                work.push(stack);
            }
            None => {}
        }
    }

    fn complete(&mut self, done: Vec<Done>) {
        for (token, reply) in done {
            self.reply(token, reply, None);
        }
    }

    fn ctx(&mut self) -> (Ctx<'_>, &mut HashMap<u32, NetStack>) {
        (
            Ctx {
                registry: self.poll.registry(),
                sources: &mut self.sources,
                name: &self.name,
                now: Instant::now(),
            },
            &mut self.stacks,
        )
    }

    /// Handles one request; None when the reply is deferred.
    fn request(
        &mut self,
        conn: usize,
        req: Request,
        work: &mut Vec<u32>,
    ) -> Option<(Reply, Option<OwnedFd>)> {
        match req {
            Request::AddStack { vnl, ifname } => Some((self.add_stack(&vnl, &ifname, work), None)),
            Request::DelStack { stack } => Some((self.del_stack(stack), None)),
            req => {
                let stack_id = match &req {
                    Request::Cmd { stack, .. }
                    | Request::Socket { stack, .. }
                    | Request::Nameservers { stack }
                    | Request::Pending { stack } => Some(*stack),
                    _ => None,
                };
                let sock_id = ops::sock_of(&req);
                let sid = match (stack_id, sock_id) {
                    (Some(s), _) => s,
                    (None, Some(id)) => stack::stack_of_sock(id),
                    (None, None) => return Some((Reply::Err(libc::EINVAL), None)),
                };
                let (mut ctx, stacks) = self.ctx();
                let Some(st) = stacks.get_mut(&sid) else {
                    return Some((Reply::Err(libc::ENETDOWN), None));
                };
                let r = ops::handle(st, &mut ctx, conn, req);
                st.dirty.extend(sock_id);
                work.push(sid);
                r
            }
        }
    }

    fn add_stack(&mut self, vnl: &str, ifname: &str, work: &mut Vec<u32>) -> Reply {
        let id = self.next_stack;
        let wake = crate::link::Wake {
            stack: id as usize,
            ready: self.ready.clone(),
        };
        let ifname = if ifname.is_empty() { "vde0" } else { ifname };
        let seed = self.seed.wrapping_add(id as u64);
        let st = match NetStack::new(id, vnl, ifname, wake, seed, self.opener.clone()) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(vnl, "cannot open the link: {e}");
                return Reply::Err(crate::link::errno_of(&e));
            }
        };
        let mut st = st;
        if st.link.is_some() {
            st.link_token = Some(self.sources.insert(Source::Link(id)));
            // Writability matters only while frames wait for a full link (see
            // NetStack::link_interest): asking always would wake us after every frame sent.
            st.watch_link(self.poll.registry());
        }
        self.next_stack += 1;
        tracing::info!(stack = id, vnl, ifname, "stack created");
        self.stacks.insert(id, st);
        work.push(id);
        Reply::Stack(id)
    }

    fn del_stack(&mut self, id: u32) -> Reply {
        let Some(mut st) = self.stacks.remove(&id) else {
            return Reply::Err(libc::EINVAL);
        };
        tracing::info!(stack = id, "stack deleted");
        let stale = st
            .link_token
            .into_iter()
            .chain(st.socks.values().map(|s| s.token));
        for t in stale {
            if matches!(self.sources.get(t), Some(Source::Link(x) | Source::Sock(x, _)) if *x == id)
            {
                self.sources.remove(t);
            }
        }
        if let Some(l) = st.link.as_deref() {
            for fd in [l.poll_fd(), l.hup_fd()].into_iter().flatten() {
                let _ = self.poll.registry().deregister(&mut SourceFd(&fd));
            }
        }
        for (_, s) in st.socks.drain() {
            let _ = self
                .poll
                .registry()
                .deregister(&mut SourceFd(&s.fd.as_raw_fd()));
            // Shut our end so the application reads EOF and its writes fail, like a dead
            // network interface under a kernel socket (a UDP pair is seqpacket: the
            // application reads the end after the datagrams already there).
            let _ = sys::shutdown(s.fd.as_raw_fd(), libc::SHUT_RDWR);
        }
        let done: Vec<Done> = st
            .dhcp_waiters
            .drain(..)
            .map(|w| (w.conn, Reply::Err(libc::ENETDOWN)))
            .collect();
        self.complete(done);
        Reply::Ok
    }

    /// Runs a stack until it is quiet: sockets, interfaces, sockets again; then schedules its
    /// next deadline.
    fn service(&mut self, id: u32) {
        let mut done = Vec::new();
        let (mut ctx, stacks) = self.ctx();
        let Some(st) = stacks.get_mut(&id) else {
            return;
        };
        let mut again = false;
        let mut rounds = 0;
        loop {
            ctx.now = Instant::now();
            let moved = ops::pump_all(st, &mut ctx, &mut done);
            let changed = st.poll_ifaces(ctx.now);
            let dhcp = st.poll_dhcp().is_some();
            ops::dhcp_check(st, ctx.now, &mut done);
            rounds += 1;
            if !(moved || changed || dhcp) {
                break;
            }
            if rounds >= 64 {
                again = true;
                break;
            }
        }
        // A link may have lost its network meanwhile (a frame was refused).
        st.link_opened(ctx.registry, false);
        st.link_interest(ctx.registry);
        let now = ctx.now;
        let mut at = st.ifaces_poll_at(now);
        if let Some(d) = ops::next_deadline(st) {
            at = Some(at.map_or(d, |a| a.min(d)));
        }
        if again {
            at = Some(now);
        }
        st.next_poll = at;
        if let Some(at) = at {
            self.timers.push(Reverse((at, id)));
        }
        self.complete(done);
    }
}
