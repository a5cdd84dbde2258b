//! The per-round pump of a stack's bridges, and the stack's deadlines.

use std::net::IpAddr;
use std::os::fd::AsRawFd;

use smoltcp::socket::tcp::{self, State};
use smoltcp::time::Instant;
use smoltcp::wire::IpAddress;

use super::*;
use crate::bridge::tcp::{discard, Conn, Outcome};
use crate::bridge::{udp, Done, LINK, LO};
use crate::control::proto::Reply;
use crate::engine::ending::Ended;
use crate::engine::sock::{Sock, SockState};
use crate::engine::stack::NetStack;
use crate::engine::Ctx;

/// One pass over every socket of the stack: bytes both ways, handshakes, listeners, ends.
/// Returns whether anything moved.
///
/// Only sockets that can have something to do are visited: those in `st.dirty`, those smoltcp
/// touched (a segment or a timer), and connection attempts (their deadline). A stack holding
/// 10,000 idle connections pumps none of them when one of them gets a segment.
pub fn pump_all(st: &mut NetStack, ctx: &mut Ctx, done: &mut Vec<Done>) -> bool {
    let mut moved = false;
    let mut gone = Vec::new();
    let mut unbound_senders = Vec::new();
    let mut strays = Vec::new();
    let mut deliveries = Vec::new();
    let mut ended = Vec::new();
    let now = ctx.now;
    st.endings.sweep(&mut st.sets, now);
    let routes = RouteView::of(st);
    for id in pump_list(st, now) {
        let Some(s) = st.socks.get_mut(&id) else {
            continue;
        };
        let moved_before = std::mem::replace(&mut moved, false);
        let fd = s.fd.as_raw_fd();
        match &mut s.state {
            SockState::Connecting(c) => {
                match c.pump(
                    fd,
                    &mut s.pair,
                    &mut st.sets,
                    now,
                    true,
                    &mut s.app_closed,
                    &mut moved,
                ) {
                    Outcome::Established => {
                        let SockState::Connecting(c) =
                            std::mem::replace(&mut s.state, SockState::Fresh)
                        else {
                            unreachable!()
                        };
                        s.state = SockState::Connected(c);
                        settle(s, 0, done);
                        // State first, then POLLOUT: a caller woken by it reads SO_ERROR 0.
                        if let SockState::Connected(c) = &mut s.state {
                            c.drop_pad(fd);
                        }
                        moved = true;
                    }
                    Outcome::Failed(e) => {
                        let SockState::Connecting(c) =
                            std::mem::replace(&mut s.state, SockState::Fresh)
                        else {
                            unreachable!()
                        };
                        st.sets[c.set].remove(c.handle);
                        s.peer = None;
                        settle(s, e, done);
                        if s.nonblocking_connect {
                            fail_pair(s);
                        }
                        moved = true;
                    }
                    _ if s.app_closed => {
                        st.sets[c.set].get_mut::<tcp::Socket>(c.handle).abort();
                        st.sets[c.set].remove(c.handle);
                        gone.push(s.id);
                    }
                    _ => {}
                }
            }
            SockState::Connected(c) => {
                let outcome = if s.app_closed && !c.orphan && s.opts.linger_abort {
                    Outcome::Abort // SO_LINGER {on, 0}: an abortive close, as Linux's
                } else {
                    c.pump(
                        fd,
                        &mut s.pair,
                        &mut st.sets,
                        now,
                        false,
                        &mut s.app_closed,
                        &mut moved,
                    )
                };
                match outcome {
                    Outcome::Failed(e) => {
                        let t = st.sets[c.set].get::<tcp::Socket>(c.handle);
                        let local = t
                            .local_endpoint()
                            .map(|ep| NetStack::as_seen(s.domain, std::net::SocketAddr::from(ep)));
                        st.sets[c.set].remove(c.handle);
                        let mss = st.mtu as i32 - 40;
                        ended.push((s.id, reset_pair(s, e, local, mss)));
                        gone.push(s.id);
                        moved = true;
                    }
                    Outcome::Finished => {
                        st.sets[c.set].remove(c.handle);
                        s.state = SockState::Done;
                        moved = true;
                    }
                    Outcome::Abort => {
                        st.endings.abort(&mut st.sets, c.set, c.handle, now);
                        gone.push(s.id);
                        moved = true;
                    }
                    Outcome::Expired => {
                        st.sets[c.set].remove(c.handle);
                        gone.push(s.id);
                        moved = true;
                    }
                    Outcome::Linger(at) => st.endings.fin_timer(at, s.id),
                    Outcome::Open | Outcome::Established => {}
                }
            }
            SockState::Listening(l) => {
                let before = strays.len();
                moved |= pump_listener(
                    l,
                    (s.id, s.domain),
                    &s.fd,
                    &s.opts,
                    &mut st.sets,
                    &mut strays,
                );
                if !(s.app_closed || l.ready.is_empty() && l.undelivered.is_empty()) {
                    deliveries.push(s.id);
                }
                if s.app_closed {
                    strays.truncate(before);
                    // Closing the application ends of those never taken ends them too.
                    l.undelivered.clear();
                    // Those never accepted get an RST, as Linux's inet_csk_listen_stop.
                    for (set, h) in l.listening.drain(..).chain(l.ready.drain(..)) {
                        st.endings.abort(&mut st.sets, set, h, now);
                    }
                    for set in [LINK, LO] {
                        if l.sets[set] {
                            st.sets[set].listening_port(l.endpoint.port, false);
                        }
                    }
                    gone.push(s.id);
                }
            }
            SockState::Udp(_) => {
                moved |= crate::engine::device::with_buf(|buf| {
                    if buf.len() < 65536 + udp::HEADER {
                        buf.resize(65536 + udp::HEADER, 0);
                    }
                    udp::pump(s, &mut st.sets, &|ip| routes.route(ip), buf)
                });
                if s.app_closed {
                    if let SockState::Udp(u) = &s.state {
                        for set in [LINK, LO] {
                            if let Some(h) = u.handles[set] {
                                st.endings.flush_udp(&mut st.sets, set, h, now);
                            }
                        }
                    }
                    gone.push(s.id);
                } else if s.local.is_none()
                    && matches!(&s.state, SockState::Udp(u) if u.held.is_some())
                {
                    unbound_senders.push(s.id);
                }
            }
            SockState::Fresh | SockState::Done => {
                if s.pair_shut && !s.app_closed {
                    // What the application writes after a failed connect goes nowhere.
                    moved |= discard(fd, 1 << 20) > 0;
                }
                if s.app_closed {
                    gone.push(s.id);
                }
            }
        }
        // A socket that moved bytes may have more to move: look again next round.
        if moved {
            st.dirty.push(id);
        }
        if !matches!(s.state, SockState::Connecting(_)) {
            st.connecting.remove(&id);
        }
        moved |= moved_before;
    }
    for ip in routes.to_link.take() {
        st.prime_neighbor(ip, now);
    }
    // A UDP socket that sends before bind() is bound to an ephemeral port, as the kernel does.
    for id in unbound_senders {
        if bind_port(st, id, None, 0).is_ok() {
            st.dirty.push(id);
            moved = true;
        }
    }
    for (id, set, h) in strays {
        hand_over(st, id, set, h);
        moved = true;
    }
    for id in deliveries {
        moved |= deliver(st, ctx, id);
    }
    for id in gone {
        // A reset socket's pair end closes here (see reset_pair).
        if let Some(s) = st.socks.remove(&id) {
            ctx.deregister(s.token, s.fd.as_raw_fd());
            for c in s.waiters {
                done.push((c, Reply::Err(libc::EBADF)));
            }
            st.release(id, s.local.map(|a| (s.stream, a.port())));
        }
        moved = true;
    }
    for (id, e) in ended {
        st.endings.end(id, e);
    }
    moved
}

/// A connection reset: the engine's end of the pair is about to close (its socket goes), so
/// that the application's calls fail at once as on a reset kernel socket: a writer blocked
/// on a full pair returns, later writes fail with EPIPE, reads give what came before the
/// reset, then an error or EOF. Closing it while it holds bytes the application wrote
/// makes the kernel report ECONNRESET to the application's next call, as Linux does after
/// an RST. The engine keeps the error too, for SO_ERROR and for the library to report it
/// where the kernel cannot (see `socket::reset_error`); the library clears the engine's
/// copy when the kernel reported it.
fn reset_pair(s: &mut Sock, e: i32, local: Option<std::net::SocketAddr>, mss: i32) -> Ended {
    let fd = s.fd.as_raw_fd();
    if e != libc::ECONNRESET {
        // EPIPE (a reset after the peer's FIN): the kernel must not say ECONNRESET.
        discard(fd, usize::MAX);
    }
    Ended {
        domain: s.domain,
        local: local.or(s.local),
        so_error: e,
        opts: s.opts.clone(),
        mss,
        app: s.app,
    }
}

/// What the UDP bridge needs to route, copied out so the sockets can be borrowed mutably.
struct RouteView {
    own: Vec<IpAddress>,
    link: bool,
    /// Destinations routed to the link this round (their neighbours get primed).
    to_link: std::cell::RefCell<Vec<IpAddr>>,
}

impl RouteView {
    fn of(st: &NetStack) -> RouteView {
        RouteView {
            own: st.link_addrs().iter().map(|c| c.address()).collect(),
            link: st.iface.is_some() && st.link_up,
            to_link: Default::default(),
        }
    }

    fn route(&self, ip: IpAddr) -> Option<usize> {
        if ip.is_loopback() || self.own.contains(&IpAddress::from(ip)) {
            Some(LO)
        } else if self.link {
            let mut seen = self.to_link.borrow_mut();
            if !seen.contains(&ip) {
                seen.push(ip);
            }
            Some(LINK)
        } else {
            None
        }
    }
}

/// TCP connections that still owe the network bytes or a FIN. A connection counts while
/// smoltcp holds unacknowledged data or its FIN is not yet acknowledged, and while its
/// application end is open or was closed with bytes or a FIN still to go; a connection whose
/// application still holds it open and has nothing in flight does not.
pub(super) fn pending(st: &NetStack) -> usize {
    st.socks
        .values()
        .filter(|s| match &s.state {
            SockState::Connecting(_) => false,
            SockState::Connected(c) => {
                let t = st.sets[c.set].get::<tcp::Socket>(c.handle);
                let closing = s.app_closed || crate::sys::hung_up(s.fd.as_raw_fd());
                let unacked = t.send_queue() > 0;
                let fin_owed = matches!(
                    t.state(),
                    State::Established
                        | State::CloseWait
                        | State::FinWait1
                        | State::Closing
                        | State::LastAck
                );
                unacked || (closing && fin_owed)
            }
            _ => false,
        })
        .count()
}

/// The sockets the next pump visits (see [`pump_all`]).
pub(super) fn pump_list(st: &mut NetStack, now: Instant) -> Vec<u64> {
    let mut ids = std::mem::take(&mut st.dirty);
    ids.extend(st.endings.due(now));
    let mut sweep = false;
    for set in [LINK, LO] {
        for (_, owner) in st.sets[set].take_touched() {
            match owner {
                0 => sweep = true, // a socket nobody tagged: look at them all
                NOT_A_SOCK => {}
                o => ids.push(o),
            }
        }
    }
    if sweep {
        ids.extend(st.socks.keys());
    }
    ids.extend(st.connecting.iter());
    ids.sort_unstable();
    ids.dedup();
    ids
}

/// The owner tag of smoltcp sockets that belong to the stack itself (DHCP).
pub const NOT_A_SOCK: u64 = u64::MAX;

/// The earliest deadline of the stack's own: connection attempts, DHCP, endings.
pub fn next_deadline(st: &NetStack) -> Option<Instant> {
    let dhcp = st.dhcp_waiters.iter().map(|w| w.deadline).min();
    let mut at: Option<Instant> = dhcp.into_iter().chain(st.endings.next_at()).min();
    for s in st.connecting.iter().filter_map(|id| st.socks.get(id)) {
        if let SockState::Connecting(Conn {
            deadline: Some(d), ..
        }) = &s.state
        {
            at = Some(at.map_or(*d, |a| a.min(*d)));
        }
    }
    at
}

/// Answers the `dhcp` commands waiting for a lease: the commands after them run once it
/// came; past their deadline they fail.
pub fn dhcp_check(st: &mut NetStack, now: Instant, done: &mut Vec<Done>) {
    if st.dhcp_waiters.is_empty() {
        return;
    }
    let leased = st
        .link_addrs()
        .iter()
        .any(|c| matches!(c.address(), IpAddress::Ipv4(_)));
    for w in std::mem::take(&mut st.dhcp_waiters) {
        if leased {
            let conn = w.conn;
            if let Some(reply) = crate::engine::conf::resume(st, w, now) {
                done.push((conn, reply));
            }
        } else if now >= w.deadline {
            let message = "dhcp: no lease received".to_string();
            done.push((
                w.conn,
                Reply::Cmd {
                    status: 1,
                    message,
                    output: w.output,
                },
            ));
        } else {
            st.dhcp_waiters.push(w);
        }
    }
}
