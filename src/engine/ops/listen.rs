//! listen(2), the listener's pool of smoltcp sockets, and handing connections to accept().

use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use smoltcp::iface::{SocketHandle, SocketSet};
use smoltcp::socket::tcp::{self, State};
use smoltcp::wire::{IpAddress, IpListenEndpoint};

use super::*;
use crate::bridge::tcp::{new_socket, Conn};
use crate::bridge::{LINK, LO};
use crate::control::proto::{self, Reply};
use crate::engine::sock::{Listener, Opts, Sock, SockState};
use crate::engine::stack::NetStack;
use crate::engine::Ctx;
use crate::sys;

/// Whether a listener on `ep` can get SYNs of a family it must refuse: a wildcard address
/// of an AF_INET socket, or of an IPV6_V6ONLY one (smoltcp's wildcard takes both families).
pub(super) fn screens(domain: i32, v6only: bool, ep: IpListenEndpoint) -> bool {
    ep.addr.is_none() && (domain == libc::AF_INET || v6only)
}

/// Whether a listener of `domain` takes a connection from an IPv4 (or else IPv6) peer.
pub(super) fn takes(domain: i32, v6only: bool, remote_v4: bool) -> bool {
    if remote_v4 {
        domain == libc::AF_INET || !v6only
    } else {
        domain == libc::AF_INET6
    }
}

/// A listening socket of a listener's pool. It holds no buffers and its SYN|ACK waits until
/// pump_listener gives it both (and, for a screening listener, saw the peer's family): idle
/// listeners cost memory only for the socket itself.
pub(super) fn listen_socket(opts: &Opts, ep: IpListenEndpoint) -> tcp::Socket<'static> {
    let mut t = new_socket(0, 0, opts.nodelay, opts.keepalive);
    t.pause_synack(true);
    let _ = t.listen(ep);
    t
}

/// Adds a socket of listener `owner`'s pool to a set.
pub(super) fn add_listening(
    set: &mut SocketSet<'static>,
    t: tcp::Socket<'static>,
    owner: u64,
) -> SocketHandle {
    let h = set.add(t);
    set.set_owner(h, owner);
    set.note_listener(h);
    h
}

/// Gives a connection that reached a listener its buffers and lets its SYN|ACK go.
pub(super) fn answer_syn(sock: &mut tcp::Socket<'static>, opts: &Opts) {
    if sock.recv_capacity() == 0 {
        sock.set_buffers(
            tcp::SocketBuffer::new(vec![0; opts.rcvbuf]),
            tcp::SocketBuffer::new(vec![0; opts.sndbuf]),
        );
    }
    sock.set_nagle_enabled(!opts.nodelay);
    sock.pause_synack(false);
}

pub(super) fn listen(st: &mut NetStack, id: u64, backlog: i32) -> Answer {
    let s = &st.socks[&id];
    if !s.stream {
        return err(libc::EOPNOTSUPP);
    }
    match s.state {
        SockState::Fresh if s.pair_shut => return err(libc::EINVAL),
        SockState::Fresh => {}
        SockState::Listening(_) => {
            // As Linux: listen() again sets a new backlog.
            if let Some(SockState::Listening(l)) = st.socks.get_mut(&id).map(|s| &mut s.state) {
                l.backlog = backlog.max(1) as usize;
            }
            return ok(Reply::Ok);
        }
        _ => return err(libc::EINVAL),
    }
    if s.local.is_none() {
        if let Err(e) = bind_port(st, id, None, 0) {
            return err(e);
        }
    }
    let s = st.socks.get_mut(&id).expect("checked");
    let local = s.local.expect("bound");
    let ep = listen_ep(local);
    let sets = sets_for(local);
    // Enough sockets in Listen to take a burst of SYNs; refilled as they connect.
    // Sockets kept free per set; pump_listener puts a fresh one in place of each SYN taken,
    // even between two frames of one batch, so two absorb any burst.
    let per_set = (backlog.max(1) as usize).min(2);
    let screen = screens(s.domain, s.opts.v6only, ep);
    let mut l = Listener {
        backlog: backlog.max(1) as usize,
        endpoint: ep,
        sets,
        per_set,
        screen,
        listening: Vec::new(),
        ready: Default::default(),
        undelivered: Default::default(),
        per_record: 0,
    };
    for set in [LINK, LO] {
        if sets[set] {
            st.sets[set].listening_port(ep.port, true);
            for _ in 0..per_set {
                let h = add_listening(&mut st.sets[set], listen_socket(&s.opts, ep), id);
                l.listening.push((set, h));
            }
        }
    }
    s.state = SockState::Listening(l);
    ok(Reply::Ok)
}

/// Hands listener `id`'s ready connections to the application, as many as its backlog
/// lets wait: each goes into the listener's pair as a record with the connection's fd
/// attached, and accept() takes it with one recvmsg, no request to the engine. A record that
/// finds the pair full waits for the application to make room (an EPOLLOUT edge wakes us).
pub(super) fn deliver(st: &mut NetStack, ctx: &mut Ctx, id: u64) -> bool {
    let mut moved = false;
    loop {
        let Some(s) = st.socks.get_mut(&id) else {
            return moved;
        };
        let fd = s.fd.as_raw_fd();
        let SockState::Listening(l) = &mut s.state else {
            return moved;
        };
        if s.app_closed {
            return moved;
        }
        if let Some((conn, rec)) = l.undelivered.front() {
            if sys::send_msg(fd, rec, &[conn.as_raw_fd()]).is_err() {
                return moved;
            }
            l.undelivered.pop_front();
            moved = true;
            continue;
        }
        if queued(fd, l) >= l.backlog {
            return moved;
        }
        let Some((set, handle)) = l.ready.pop_front() else {
            return moved;
        };
        let (conn, peer) = match adopt(st, ctx, id, set, handle) {
            Ok(c) => c,
            Err(None) => continue,
            // No fd for it (the engine's process is at its limit): accept() says EMFILE
            // (a record with no fd), and the connection, reset, is lost, where Linux would
            // keep it queued.
            Err(Some(peer)) => {
                let _ = sys::send_msg(fd, &proto::accept_record(&peer), &[]);
                moved = true;
                continue;
            }
        };
        let rec = proto::accept_record(&peer);
        let Some(SockState::Listening(l)) = st.socks.get_mut(&id).map(|s| &mut s.state) else {
            return moved;
        };
        match sys::send_msg(fd, &rec, &[conn.as_raw_fd()]) {
            Ok(_) if l.per_record == 0 => l.per_record = sys::unsent(fd).unwrap_or(0),
            Ok(_) => {}
            // Full (or, for an unprivileged user, too many fds in flight): kept in order.
            Err(_) => l.undelivered.push_back((conn, rec)),
        }
        moved = true;
    }
}

/// How many accepted connections wait in a listener's pair for the application.
pub(super) fn queued(fd: RawFd, l: &Listener) -> usize {
    let inside = match l.per_record {
        0 => 0,
        per => sys::unsent(fd).unwrap_or(0).div_ceil(per),
    };
    inside + l.undelivered.len()
}

/// Makes listener `id`'s connection (set, handle) a socket of its own: its pair, its
/// registration. Returns the application's end of the pair and the peer; Err(None) if the
/// connection is gone already, Err(Some(peer)) if no pair can be made (then it is reset).
pub(super) fn adopt(
    st: &mut NetStack,
    ctx: &mut Ctx,
    id: u64,
    set: usize,
    handle: SocketHandle,
) -> Result<(OwnedFd, SocketAddr), Option<SocketAddr>> {
    let s = st.socks.get(&id).ok_or(None)?;
    let domain = s.domain;
    let opts = s.opts.clone();
    let sock = st.sets[set].get::<tcp::Socket>(handle);
    let state = sock.state();
    let (Some(remote), Some(local)) = (sock.remote_endpoint(), sock.local_endpoint()) else {
        st.sets[set].remove(handle);
        return Err(None);
    };
    let peer = NetStack::as_seen(domain, SocketAddr::from(remote));
    let local = NetStack::as_seen(domain, SocketAddr::from(local));
    let registered = new_pair(st, ctx, libc::SOCK_STREAM).and_then(|(nid, (mine, theirs, app))| {
        let token = ctx.register_sock(st.id, nid, mine.as_raw_fd())?;
        Ok((nid, mine, theirs, app, token))
    });
    let Ok((nid, mine, theirs, app, token)) = registered else {
        st.endings.abort(&mut st.sets, set, handle, ctx.now);
        return Err(Some(peer));
    };
    let mut ns = Sock::new(nid, (mine, app), token, domain, true, libc::IPPROTO_TCP);
    let mut c = Conn::new(set, handle, None, opts.linger2);
    c.last = state;
    ns.opts = opts;
    ns.local = Some(local);
    ns.peer = Some(peer);
    ns.state = SockState::Connected(c);
    st.sets[set].set_owner(handle, nid);
    st.socks.insert(nid, ns);
    st.dirty.push(nid); // data may have come with the handshake
    Ok((theirs, peer))
}

pub(super) fn remote_v4(sock: &tcp::Socket) -> bool {
    sock.remote_endpoint()
        .is_some_and(|e| matches!(e.addr, IpAddress::Ipv4(_)))
}

/// Moves a listener's connections along: handshakes done go to the ready queue (with a
/// fresh socket listening in their place), SYNs of the right family get their SYN|ACK, and
/// SYNs of a family the listener refuses are pushed on `strays` as (listener, set, handle).
pub(super) fn pump_listener(
    l: &mut Listener,
    (id, domain): (u64, i32),
    fd: &OwnedFd,
    opts: &Opts,
    sets: &mut [SocketSet<'static>; 2],
    strays: &mut Vec<(u64, usize, SocketHandle)>,
) -> bool {
    let mut moved = false;
    let mut free = [0usize; 2];
    let mut half_open = 0;
    let mut i = 0;
    while i < l.listening.len() {
        let (set, h) = l.listening[i];
        let sock = sets[set].get_mut::<tcp::Socket>(h);
        match sock.state() {
            State::Listen => {
                free[set] += 1;
                i += 1;
            }
            State::SynReceived => {
                half_open += 1;
                if !sock.synack_paused() {
                    // answered; waiting for the peer's ACK
                } else if !l.screen || takes(domain, opts.v6only, remote_v4(sock)) {
                    answer_syn(sock, opts);
                    moved = true;
                } else {
                    strays.push((id, set, h));
                }
                i += 1;
            }
            // A reset still to go out keeps its peer until smoltcp sends it.
            State::Closed if sock.remote_endpoint().is_some() => i += 1,
            State::Closed => {
                sock.pause_synack(true);
                let _ = sock.listen(l.endpoint);
                sets[set].note_listener(h);
                free[set] += 1;
                i += 1;
            }
            _ => {
                l.listening.swap_remove(i);
                l.ready.push_back((set, h));
                moved = true;
            }
        }
    }
    // Keep sockets free to take the next SYNs, as long as the accept queue has room (a full
    // one drops SYNs, which the peer sends again, as Linux does).
    let waiting = l.ready.len() + queued(fd.as_raw_fd(), l);
    for set in [LINK, LO] {
        while l.sets[set]
            && free[set] < l.per_set
            && waiting < l.backlog.max(1)
            && half_open < MAX_HALF_OPEN
        {
            let fresh = add_listening(&mut sets[set], listen_socket(opts, l.endpoint), id);
            l.listening.push((set, fresh));
            free[set] += 1;
        }
    }
    moved
}

/// Between two frames: if socket `owner` is a listener, answers its SYNs and keeps sockets
/// free for the next ones (a SYN of a family it refuses waits for the next pump_all).
pub fn refill_listener(
    socks: &mut std::collections::HashMap<u64, Sock>,
    sets: &mut [SocketSet<'static>; 2],
    owner: u64,
) {
    let Some(s) = socks.get_mut(&owner) else {
        return;
    };
    if let SockState::Listening(l) = &mut s.state {
        let mut strays = Vec::new();
        pump_listener(l, (s.id, s.domain), &s.fd, &s.opts, sets, &mut strays);
    }
}

/// Connections a listener lets wait for their handshake's last ACK.
pub(super) const MAX_HALF_OPEN: usize = 256;

/// A SYN reached listener `id`, whose family it is not: gives the connection to another
/// listener of the stack that takes it (an AF_INET and an IPV6_V6ONLY one on one port), or
/// refuses it with a reset as Linux does.
pub(super) fn hand_over(st: &mut NetStack, id: u64, set: usize, h: SocketHandle) {
    let sock = st.sets[set].get_mut::<tcp::Socket>(h);
    let (v4, local) = (remote_v4(sock), sock.local_endpoint());
    let taker = st.socks.values().find_map(|s| match &s.state {
        SockState::Listening(l)
            if s.id != id
                && !s.app_closed
                && l.sets[set]
                && local.is_some_and(|e| {
                    e.port == l.endpoint.port && l.endpoint.addr.is_none_or(|a| a == e.addr)
                })
                && takes(s.domain, s.opts.v6only, v4) =>
        {
            Some((s.id, s.opts.clone()))
        }
        _ => None,
    });
    let Some((to, opts)) = taker else {
        // Refused: smoltcp sends the reset, then pump_listener listens with it again.
        sock.abort();
        return;
    };
    answer_syn(sock, &opts);
    if let Some(s) = st.socks.get_mut(&id) {
        if let SockState::Listening(l) = &mut s.state {
            l.listening.retain(|e| *e != (set, h));
            let t = listen_socket(&s.opts, l.endpoint);
            let fresh = add_listening(&mut st.sets[set], t, id);
            l.listening.push((set, fresh));
        }
    }
    if let Some(SockState::Listening(l)) = st.socks.get_mut(&to).map(|s| &mut s.state) {
        l.listening.push((set, h));
        st.sets[set].set_owner(h, to);
        st.dirty.push(to);
    }
}
