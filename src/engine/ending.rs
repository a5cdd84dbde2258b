//! What is left of TCP connections once their application closed them or their peer reset
//! them, as Linux keeps it: RSTs still to send, the FIN-WAIT-2 timers of orphans, and what a
//! reset socket still answers its application. And of UDP sockets closed with datagrams
//! still queued: those go out first, as sendto(2) had handed them to the kernel on Linux.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::net::SocketAddr;

use smoltcp::iface::{SocketHandle, SocketSet};
use smoltcp::socket::{tcp, udp};
use smoltcp::time::{Duration, Instant};

use crate::control::proto::{Reply, Request};
use crate::engine::stack::NetStack;

/// Linux's `tcp_fin_timeout`: how long an orphan waits in FIN-WAIT-2 for the peer's FIN, in
/// seconds; TCP_LINGER2 sets it per socket.
pub const FIN_TIMEOUT: i32 = 60;
/// The largest TCP_LINGER2 Linux keeps (`TCP_FIN_TIMEOUT_MAX`), in seconds.
pub const MAX_LINGER2: i32 = 120;
/// How long an aborted socket is kept for its RST to go out (a link that cannot take it
/// does not keep the socket).
const RST_WAIT: Duration = Duration::from_secs(1);
/// How long the datagrams of a closed UDP socket may wait for their neighbor (Linux's
/// neighbor resolution: 3 probes, 1 s apart).
const FLUSH_WAIT: Duration = Duration::from_secs(3);
/// Reset sockets remembered per stack (their applications may still ask SO_ERROR and the
/// like before they close them); the oldest are forgotten first.
const ENDED_KEEP: usize = 4096;

/// How long an orphan of `linger2` (TCP_LINGER2 as set: 0 is the default) waits in
/// FIN-WAIT-2; None: not at all, it is reset (a negative TCP_LINGER2).
pub fn fin_wait(linger2: i32) -> Option<Duration> {
    match linger2 {
        l if l < 0 => None,
        0 => Some(Duration::from_secs(FIN_TIMEOUT as u64)),
        l => Some(Duration::from_secs(l.min(MAX_LINGER2) as u64)),
    }
}

/// TCP_LINGER2 as Linux stores a value set: negative is -1, past the maximum is the maximum.
pub fn linger2_value(v: i32) -> i32 {
    v.clamp(-1, MAX_LINGER2)
}

/// TCP_LINGER2 as Linux reads it back: 0 (the default) reads as the FIN timeout.
pub fn linger2_shown(v: i32) -> i32 {
    if v == 0 {
        FIN_TIMEOUT
    } else {
        v
    }
}

/// A TCP socket whose connection was reset: the engine closed its end of the pair (so that
/// the application's calls fail at once, as after a reset) and keeps what the application
/// may still ask before it closes its own.
#[derive(Debug)]
pub struct Ended {
    pub domain: i32,
    pub local: Option<SocketAddr>,
    /// What SO_ERROR says, once (0 when the kernel holds it, see `socket::get_opt`).
    pub so_error: i32,
    pub opts: crate::engine::sock::Opts,
    /// TCP_MAXSEG, as it was.
    pub mss: i32,
    /// The application's end of the pair (a client proves with it that it holds the socket).
    pub app: crate::engine::sock::FileId,
}

/// A stack's endings.
#[derive(Debug, Default)]
pub struct Endings {
    /// Aborted smoltcp sockets, kept until their RST is out or RST_WAIT passed.
    aborting: Vec<(usize, SocketHandle, Instant)>,
    /// Closed UDP sockets, kept until their datagrams are out or FLUSH_WAIT passed.
    flushing: Vec<(usize, SocketHandle, Instant)>,
    /// FIN-WAIT-2 deadlines of orphans (a socket may have left FIN-WAIT-2 since).
    fin_timers: BinaryHeap<Reverse<(Instant, u64)>>,
    ended: HashMap<u64, Ended>,
    /// Ended sockets, oldest first.
    order: VecDeque<u64>,
}

impl Endings {
    /// Aborts a connection: its RST goes out with the next egress, then the socket goes.
    pub fn abort(
        &mut self,
        sets: &mut [SocketSet<'static>; 2],
        set: usize,
        h: SocketHandle,
        now: Instant,
    ) {
        sets[set].get_mut::<tcp::Socket>(h).abort();
        self.aborting.push((set, h, now + RST_WAIT));
    }

    /// Removes UDP socket `h` of the application that closed it once its datagrams are out.
    pub fn flush_udp(
        &mut self,
        sets: &mut [SocketSet<'static>; 2],
        set: usize,
        h: SocketHandle,
        now: Instant,
    ) {
        if sets[set].get::<udp::Socket>(h).send_queue() == 0 {
            sets[set].remove(h);
        } else {
            self.flushing.push((set, h, now + FLUSH_WAIT));
        }
    }

    /// Removes the aborted sockets whose RST went out (smoltcp then forgets the peer), and
    /// the closed UDP sockets whose datagrams did.
    pub fn sweep(&mut self, sets: &mut [SocketSet<'static>; 2], now: Instant) {
        self.flushing.retain(|&(set, h, until)| {
            if sets[set].get::<udp::Socket>(h).send_queue() == 0 || now >= until {
                sets[set].remove(h);
                return false;
            }
            true
        });
        self.aborting.retain(|&(set, h, until)| {
            let sent = sets[set].get::<tcp::Socket>(h).remote_endpoint().is_none();
            if sent || now >= until {
                sets[set].remove(h);
                return false;
            }
            true
        });
    }

    /// Wakes the stack at `at` for orphan `id` in FIN-WAIT-2.
    pub fn fin_timer(&mut self, at: Instant, id: u64) {
        self.fin_timers.push(Reverse((at, id)));
    }

    /// The orphans whose FIN-WAIT-2 timer came.
    pub fn due(&mut self, now: Instant) -> Vec<u64> {
        let mut ids = Vec::new();
        while let Some(Reverse((at, id))) = self.fin_timers.peek().copied() {
            if at > now {
                break;
            }
            self.fin_timers.pop();
            ids.push(id);
        }
        ids
    }

    /// How many FIN-WAIT-2 timer entries and aborting sockets wait (`ss -s` shows it).
    pub fn waiting(&self) -> usize {
        self.fin_timers.len() + self.aborting.len()
    }

    /// When the stack must look at its endings again.
    pub fn next_at(&self) -> Option<Instant> {
        let fin = self.fin_timers.peek().map(|Reverse((at, _))| *at);
        let rst = self
            .aborting
            .iter()
            .chain(&self.flushing)
            .map(|a| a.2)
            .min();
        fin.into_iter().chain(rst).min()
    }

    /// Remembers reset socket `id`.
    pub fn end(&mut self, id: u64, e: Ended) {
        if self.ended.insert(id, e).is_none() {
            self.order.push_back(id);
        }
        while self.order.len() > ENDED_KEEP {
            if let Some(old) = self.order.pop_front() {
                self.ended.remove(&old);
            }
        }
    }

    /// The application's end of reset socket `id`, if it is one.
    pub fn app(&self, id: u64) -> Option<crate::engine::sock::FileId> {
        self.ended.get(&id).map(|e| e.app)
    }

    /// Answers a request on a reset socket as Linux answers one on a TCP socket in CLOSE
    /// after a reset; None if `id` is not one.
    pub fn answer(&mut self, id: u64, req: &Request) -> Option<Reply> {
        let e = self.ended.get_mut(&id)?;
        Some(match *req {
            Request::Name { peer: true, .. } => Reply::Err(libc::ENOTCONN),
            Request::Name { peer: false, .. } => Reply::Addr(e.local.unwrap_or_else(|| {
                SocketAddr::new(NetStack::unspecified(e.domain == libc::AF_INET6), 0)
            })),
            Request::Shutdown { .. } => Reply::Err(libc::ENOTCONN),
            Request::Connect { .. } => Reply::Err(libc::EISCONN),
            Request::Bind { .. } | Request::Listen { .. } => Reply::Err(libc::EINVAL),
            Request::SetOpt { level, name, .. }
                if (level, name) == (libc::SOL_SOCKET, libc::SO_ERROR) =>
            {
                Reply::Err(libc::ENOPROTOOPT)
            }
            Request::SetOpt {
                level, name, value, ..
            } => {
                e.opts.other.insert((level, name), value);
                Reply::Ok
            }
            Request::GetOpt { level, name, .. } => match (level, name) {
                (libc::SOL_SOCKET, libc::SO_ERROR) => {
                    Reply::Int(std::mem::take(&mut e.so_error) as i64)
                }
                (libc::SOL_SOCKET, libc::SO_TYPE) => Reply::Int(libc::SOCK_STREAM as i64),
                (libc::SOL_SOCKET, libc::SO_DOMAIN) => Reply::Int(e.domain as i64),
                (libc::SOL_SOCKET, libc::SO_PROTOCOL) => Reply::Int(libc::IPPROTO_TCP as i64),
                (libc::SOL_SOCKET, libc::SO_ACCEPTCONN) => Reply::Int(0),
                (libc::IPPROTO_TCP, libc::TCP_INFO) => Reply::Int(7), // TCP_CLOSE
                (libc::IPPROTO_TCP, libc::TCP_MAXSEG) => Reply::Int(e.mss as i64),
                (libc::IPPROTO_TCP, libc::TCP_LINGER2) => {
                    Reply::Int(linger2_shown(e.opts.linger2) as i64)
                }
                (libc::SOL_SOCKET, libc::SO_KEEPALIVE) => Reply::Int(e.opts.keepalive as i64),
                (libc::SOL_SOCKET, libc::SO_RCVBUF) => Reply::Int(e.opts.rcvbuf as i64),
                (libc::SOL_SOCKET, libc::SO_SNDBUF) => Reply::Int(e.opts.sndbuf as i64),
                (libc::IPPROTO_TCP, libc::TCP_NODELAY) => Reply::Int(e.opts.nodelay as i64),
                (l, n) => match e.opts.other.get(&(l, n)) {
                    Some(v) => Reply::Int(*v as i64),
                    None => Reply::Err(libc::ENOPROTOOPT),
                },
            },
            _ => Reply::Err(libc::EINVAL),
        })
    }
}
