//! Control requests on a stack's sockets, and the per-round pump of all its bridges.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use smoltcp::iface::{SocketHandle, SocketSet};
use smoltcp::socket::tcp::{self, State};
use smoltcp::time::{Duration, Instant};
use smoltcp::wire::{IpAddress, IpEndpoint, IpListenEndpoint};

use super::sock::{Listener, Opts, Sock, SockState};
use super::stack::{Binding, NetStack};
use super::Ctx;
use crate::bridge::tcp::{discard, new_socket, Conn, Outcome};
use crate::bridge::{udp, Done, LINK, LO};
use crate::control::proto::{self, Reply, Request};
use crate::sys;
use crate::sys::unmap;

type Answer = Option<(Reply, Option<OwnedFd>)>;

fn err(e: i32) -> Answer {
    Some((Reply::Err(e), None))
}

fn ok(r: Reply) -> Answer {
    Some((r, None))
}

/// The socket a request is about, if any.
pub fn sock_of(req: &Request) -> Option<u64> {
    match req {
        Request::Bind { sock, .. }
        | Request::Listen { sock, .. }
        | Request::Connect { sock, .. }
        | Request::Padded { sock, .. }
        | Request::Name { sock, .. }
        | Request::Shutdown { sock, .. }
        | Request::SetOpt { sock, .. }
        | Request::GetOpt { sock, .. } => Some(*sock),
        _ => None,
    }
}

/// Handles one request on stack `st`. None: the reply is deferred (it goes to `conn` later).
pub fn handle(st: &mut NetStack, ctx: &mut Ctx, conn: usize, req: Request) -> Answer {
    match req {
        Request::Socket {
            domain,
            ty,
            protocol,
            ..
        } => new_sock(st, ctx, domain, ty, protocol),
        Request::Cmd { cmds, .. } => super::conf::run(st, conn, &cmds, ctx.now),
        Request::Nameservers { .. } => ok(Reply::Addrs(st.nameservers.clone())),
        Request::Pending { .. } => ok(Reply::Int(pending(st) as i64)),
        req => {
            let id = sock_of(&req)?;
            if !st.socks.contains_key(&id) {
                return err(libc::EBADF);
            }
            match req {
                Request::Bind { sock, addr } => {
                    bind(st, sock, addr).map_or_else(err, |_| ok(Reply::Ok))
                }
                Request::Listen { sock, backlog } => listen(st, sock, backlog),
                Request::Connect {
                    sock,
                    addr,
                    wait,
                    pad,
                } => connect(st, ctx, conn, sock, addr, wait, pad as usize),
                Request::Padded { sock, bytes } => {
                    let s = st.socks.get_mut(&sock).expect("checked");
                    if let SockState::Connecting(c) | SockState::Connected(c) = &mut s.state {
                        c.pad = bytes as usize;
                    }
                    ok(Reply::Ok)
                }
                Request::Name { sock, peer } => name(st, sock, peer),
                Request::Shutdown { sock, .. } => {
                    let s = &st.socks[&sock];
                    match &s.state {
                        SockState::Connected(_) | SockState::Done => ok(Reply::Ok),
                        SockState::Udp(u) if u.peer.is_some() => ok(Reply::Ok),
                        _ => err(libc::ENOTCONN),
                    }
                }
                Request::SetOpt {
                    sock,
                    level,
                    name,
                    value,
                } => setopt(st, sock, level, name, value),
                Request::GetOpt { sock, level, name } => getopt(st, sock, level, name),
                _ => err(libc::EINVAL),
            }
        }
    }
}

fn new_sock(st: &mut NetStack, ctx: &mut Ctx, domain: i32, ty: i32, protocol: i32) -> Answer {
    if domain != libc::AF_INET && domain != libc::AF_INET6 {
        return err(libc::EAFNOSUPPORT);
    }
    let base = ty & 0xf;
    let stream = match (base, protocol) {
        (libc::SOCK_STREAM, 0 | libc::IPPROTO_TCP) => true,
        (libc::SOCK_DGRAM, 0 | libc::IPPROTO_UDP) => false,
        (libc::SOCK_STREAM | libc::SOCK_DGRAM, _) => return err(libc::EPROTONOSUPPORT),
        _ => return err(libc::ESOCKTNOSUPPORT),
    };
    let id = st.new_sock_id();
    let pair_ty = if stream {
        libc::SOCK_STREAM
    } else {
        libc::SOCK_DGRAM
    };
    let (mine, theirs) = match ctx.pair(id, pair_ty) {
        Ok(p) => p,
        Err(e) => return err(e.raw_os_error().unwrap_or(libc::ENOMEM)),
    };
    let token = match ctx.register_sock(st.id, id, mine.as_raw_fd()) {
        Ok(t) => t,
        Err(e) => return err(e.raw_os_error().unwrap_or(libc::ENOMEM)),
    };
    let proto = if stream {
        libc::IPPROTO_TCP
    } else {
        libc::IPPROTO_UDP
    };
    st.socks
        .insert(id, Sock::new(id, mine, token, domain, stream, proto));
    Some((Reply::Ok, Some(theirs)))
}

fn family_ok(s: &Sock, a: &SocketAddr) -> bool {
    (s.domain == libc::AF_INET) == a.is_ipv4()
}

fn bind(st: &mut NetStack, id: u64, addr: SocketAddr) -> Result<(), i32> {
    let s = &st.socks[&id];
    if !family_ok(s, &addr) {
        return Err(libc::EAFNOSUPPORT);
    }
    if s.local.is_some() {
        return Err(libc::EINVAL);
    }
    let ip = unmap(addr.ip());
    let ip = if ip.is_unspecified() { None } else { Some(ip) };
    if let Some(ip) = ip {
        if !st.is_local(ip) {
            return Err(libc::EADDRNOTAVAIL);
        }
    }
    bind_port(st, id, ip, addr.port())
}

/// Reserves a port (0: an ephemeral one) for `id` and records its local address.
fn bind_port(st: &mut NetStack, id: u64, ip: Option<IpAddr>, port: u16) -> Result<(), i32> {
    let s = &st.socks[&id];
    let tcp = s.stream;
    let b = Binding {
        ip,
        sock: id,
        v6only: s.opts.v6only,
        v6: s.domain == libc::AF_INET6,
        reuse: s.opts.reuseaddr,
    };
    let port = if port == 0 {
        st.ephemeral_port(tcp).ok_or(libc::EADDRINUSE)?
    } else {
        port
    };
    st.reserve(tcp, port, b)?;
    let s = st.socks.get_mut(&id).expect("checked");
    let ip = ip.unwrap_or(NetStack::unspecified(s.domain == libc::AF_INET6));
    s.local = Some(NetStack::as_seen(s.domain, SocketAddr::new(ip, port)));
    if !s.stream {
        udp_open(st, id);
    }
    Ok(())
}

fn listen_ep(local: SocketAddr) -> IpListenEndpoint {
    let ip = unmap(local.ip());
    IpListenEndpoint {
        addr: (!ip.is_unspecified()).then(|| IpAddress::from(ip)),
        port: local.port(),
    }
}

/// Which sets a local address is reachable in: loopback addresses only on LO.
fn sets_for(local: SocketAddr) -> [bool; 2] {
    let ip = unmap(local.ip());
    [!ip.is_loopback(), true]
}

fn udp_open(st: &mut NetStack, id: u64) {
    let s = st.socks.get_mut(&id).expect("checked");
    let Some(local) = s.local else { return };
    let ep = listen_ep(local);
    let wanted = sets_for(local);
    let bytes = s.opts.rcvbuf.max(s.opts.sndbuf).clamp(4096, 4 << 20);
    if let SockState::Udp(u) = &mut s.state {
        for set in [LINK, LO] {
            if wanted[set] && u.handles[set].is_none() {
                let mut sock = udp::new_socket(bytes);
                if sock.bind(ep).is_ok() {
                    let h = st.sets[set].add(sock);
                    st.sets[set].set_owner(h, id);
                    u.handles[set] = Some(h);
                }
            }
        }
    }
}

/// Whether a listener on `ep` can get SYNs of a family it must refuse: a wildcard address
/// of an AF_INET socket, or of an IPV6_V6ONLY one (smoltcp's wildcard takes both families).
fn screens(domain: i32, v6only: bool, ep: IpListenEndpoint) -> bool {
    ep.addr.is_none() && (domain == libc::AF_INET || v6only)
}

/// Whether a listener of `domain` takes a connection from an IPv4 (or else IPv6) peer.
fn takes(domain: i32, v6only: bool, remote_v4: bool) -> bool {
    if remote_v4 {
        domain == libc::AF_INET || !v6only
    } else {
        domain == libc::AF_INET6
    }
}

/// A listening socket of a listener's pool. It holds no buffers and its SYN|ACK waits until
/// pump_listener gives it both (and, for a screening listener, saw the peer's family): idle
/// listeners cost memory only for the socket itself.
fn listen_socket(opts: &Opts, ep: IpListenEndpoint) -> tcp::Socket<'static> {
    let mut t = new_socket(0, 0, opts.nodelay, opts.keepalive);
    t.pause_synack(true);
    let _ = t.listen(ep);
    t
}

/// Adds a socket of listener `owner`'s pool to a set.
fn add_listening(
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
fn answer_syn(sock: &mut tcp::Socket<'static>, opts: &Opts) {
    if sock.recv_capacity() == 0 {
        sock.set_buffers(
            tcp::SocketBuffer::new(vec![0; opts.rcvbuf]),
            tcp::SocketBuffer::new(vec![0; opts.sndbuf]),
        );
    }
    sock.set_nagle_enabled(!opts.nodelay);
    sock.pause_synack(false);
}

fn listen(st: &mut NetStack, id: u64, backlog: i32) -> Answer {
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
fn deliver(st: &mut NetStack, ctx: &mut Ctx, id: u64) -> bool {
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
        let Some((conn, peer)) = adopt(st, ctx, id, set, handle) else {
            continue;
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
fn queued(fd: RawFd, l: &Listener) -> usize {
    let inside = match l.per_record {
        0 => 0,
        per => sys::unsent(fd).unwrap_or(0).div_ceil(per),
    };
    inside + l.undelivered.len()
}

/// Makes listener `id`'s connection (set, handle) a socket of its own: its pair, its
/// registration. Returns the application's end of the pair and the peer; None if the
/// connection is gone already or no pair can be made (then it is dropped).
fn adopt(
    st: &mut NetStack,
    ctx: &mut Ctx,
    id: u64,
    set: usize,
    handle: SocketHandle,
) -> Option<(OwnedFd, SocketAddr)> {
    let s = st.socks.get(&id)?;
    let domain = s.domain;
    let opts = s.opts.clone();
    let sock = st.sets[set].get::<tcp::Socket>(handle);
    let (Some(remote), Some(local)) = (sock.remote_endpoint(), sock.local_endpoint()) else {
        st.sets[set].remove(handle);
        return None;
    };
    let peer = NetStack::as_seen(domain, SocketAddr::from(remote));
    let local = NetStack::as_seen(domain, SocketAddr::from(local));
    let nid = st.new_sock_id();
    let registered = ctx.pair(nid, libc::SOCK_STREAM).and_then(|(mine, theirs)| {
        let token = ctx.register_sock(st.id, nid, mine.as_raw_fd())?;
        Ok((mine, theirs, token))
    });
    let Ok((mine, theirs, token)) = registered else {
        st.sets[set].get_mut::<tcp::Socket>(handle).abort();
        return None;
    };
    let mut ns = Sock::new(nid, mine, token, domain, true, libc::IPPROTO_TCP);
    ns.opts = opts;
    ns.local = Some(local);
    ns.peer = Some(peer);
    ns.state = SockState::Connected(Conn {
        set,
        handle,
        app_eof: false,
        eof_sent: false,
        deadline: None,
        pad: 0,
    });
    st.sets[set].set_owner(handle, nid);
    st.socks.insert(nid, ns);
    st.dirty.push(nid); // data may have come with the handshake
    Some((theirs, peer))
}

/// How long a connection attempt lasts: Linux's SYN retry schedule for TCP_SYNCNT.
fn syn_timeout(syncnt: u32) -> Duration {
    Duration::from_secs((1u64 << (syncnt.min(10) + 1)) - 1)
}

/// connect(2). A nonblocking one answers EINPROGRESS, and its client then writes `pad`
/// bytes into the pair so that the application's end is not writable (4 × unread bytes >
/// SO_SNDBUF, the AF_UNIX rule) until the outcome is known and we drop them: POLLOUT means
/// what it means on a kernel socket.
#[allow(clippy::too_many_arguments)]
fn connect(
    st: &mut NetStack,
    ctx: &mut Ctx,
    conn: usize,
    id: u64,
    addr: SocketAddr,
    wait: bool,
    pad: usize,
) -> Answer {
    let s = &st.socks[&id];
    if !family_ok(s, &addr) {
        return err(libc::EAFNOSUPPORT);
    }
    let mut dst = unmap(addr.ip());
    if dst.is_unspecified() {
        dst = if dst.is_ipv4() {
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        } else {
            IpAddr::V6(Ipv6Addr::LOCALHOST)
        };
    }
    if !s.stream {
        let peer = SocketAddr::new(dst, addr.port());
        if s.local.is_none() {
            if let Err(e) = bind_port(st, id, None, 0) {
                return err(e);
            }
        }
        let s = st.socks.get_mut(&id).expect("checked");
        if let SockState::Udp(u) = &mut s.state {
            u.peer = Some(peer);
        }
        s.peer = Some(NetStack::as_seen(s.domain, peer));
        return ok(Reply::Ok);
    }
    match s.state {
        // The pair of a failed nonblocking connect is shut (see fail_pair): like the kernel's
        // second connect, report the failure (once); unlike it, never connect again.
        SockState::Fresh if s.pair_shut => {
            let e = std::mem::take(&mut st.socks.get_mut(&id).expect("checked").so_error);
            return err(if e != 0 { e } else { libc::ECONNABORTED });
        }
        SockState::Fresh => {}
        SockState::Connecting(_) => return err(libc::EALREADY),
        _ => return err(libc::EISCONN),
    }
    if addr.port() == 0 {
        return err(libc::ECONNREFUSED);
    }
    let Some(set) = st.route(dst) else {
        return err(libc::ENETUNREACH);
    };
    if set == LINK {
        st.prime_neighbor(dst, ctx.now);
    }
    let s = &st.socks[&id];
    if s.local.is_none() {
        if let Err(e) = bind_port(st, id, None, 0) {
            return err(e);
        }
    }
    let s = st.socks.get_mut(&id).expect("checked");
    let local = s.local.expect("bound");
    let lip = unmap(local.ip());
    let local_ep = IpListenEndpoint {
        addr: (!lip.is_unspecified()).then(|| IpAddress::from(lip)),
        port: local.port(),
    };
    let mut t = new_socket(
        s.opts.rcvbuf,
        s.opts.sndbuf,
        s.opts.nodelay,
        s.opts.keepalive,
    );
    let cx = if set == LO {
        st.lo_iface.context()
    } else {
        match st.iface.as_mut() {
            Some(i) => i.context(),
            None => return err(libc::ENETUNREACH),
        }
    };
    if t.connect(
        cx,
        IpEndpoint::new(IpAddress::from(dst), addr.port()),
        local_ep,
    )
    .is_err()
    {
        return err(libc::EADDRNOTAVAIL);
    }
    let handle = st.sets[set].add(t);
    st.sets[set].set_owner(handle, id);
    st.sets[set].index_tcp(handle);
    st.connecting.insert(id);
    s.peer = Some(NetStack::as_seen(
        s.domain,
        SocketAddr::new(dst, addr.port()),
    ));
    s.state = SockState::Connecting(Conn {
        set,
        handle,
        app_eof: false,
        eof_sent: false,
        deadline: Some(ctx.now + syn_timeout(s.opts.syncnt)),
        pad: if wait { 0 } else { pad },
    });
    s.so_error = 0;
    if wait {
        s.nonblocking_connect = false;
        s.waiters.push(conn);
        None
    } else {
        s.nonblocking_connect = true;
        err(libc::EINPROGRESS)
    }
}

fn name(st: &mut NetStack, id: u64, peer: bool) -> Answer {
    let s = &st.socks[&id];
    if peer {
        return match (&s.state, s.peer) {
            (SockState::Connected(_) | SockState::Done, Some(p)) => ok(Reply::Addr(p)),
            (SockState::Udp(_), Some(p)) => ok(Reply::Addr(p)),
            _ => err(libc::ENOTCONN),
        };
    }
    let conn = match &s.state {
        SockState::Connected(c) | SockState::Connecting(c) => Some(c),
        _ => None,
    };
    if let Some(c) = conn {
        if let Some(ep) = st.sets[c.set].get::<tcp::Socket>(c.handle).local_endpoint() {
            return ok(Reply::Addr(NetStack::as_seen(
                s.domain,
                SocketAddr::from(ep),
            )));
        }
    }
    let any = SocketAddr::new(NetStack::unspecified(s.domain == libc::AF_INET6), 0);
    ok(Reply::Addr(s.local.unwrap_or(any)))
}

fn with_tcp(st: &mut NetStack, id: u64, f: impl Fn(&mut tcp::Socket)) {
    let s = &st.socks[&id];
    if let SockState::Connected(c) | SockState::Connecting(c) = &s.state {
        f(st.sets[c.set].get_mut::<tcp::Socket>(c.handle));
    }
}

fn setopt(st: &mut NetStack, id: u64, level: i32, name: i32, value: i32) -> Answer {
    let s = st.socks.get_mut(&id).expect("checked");
    let on = value != 0;
    match (level, name) {
        (libc::SOL_SOCKET, libc::SO_REUSEADDR) => s.opts.reuseaddr = on,
        (libc::SOL_SOCKET, libc::SO_KEEPALIVE) => {
            s.opts.keepalive = on;
            let ka = on.then(|| Duration::from_secs(75));
            with_tcp(st, id, |t| t.set_keep_alive(ka));
        }
        (libc::SOL_SOCKET, libc::SO_RCVBUF) => {
            s.opts.rcvbuf = (value.max(2048) as usize).min(16 << 20)
        }
        (libc::SOL_SOCKET, libc::SO_SNDBUF) => {
            s.opts.sndbuf = (value.max(2048) as usize).min(16 << 20)
        }
        (
            libc::SOL_SOCKET,
            libc::SO_TYPE | libc::SO_DOMAIN | libc::SO_PROTOCOL | libc::SO_ERROR,
        ) => return err(libc::ENOPROTOOPT),
        (libc::IPPROTO_TCP, _) if !s.stream => return err(libc::ENOPROTOOPT),
        (libc::IPPROTO_TCP, libc::TCP_NODELAY) => {
            s.opts.nodelay = on;
            with_tcp(st, id, |t| t.set_nagle_enabled(!on));
        }
        (libc::IPPROTO_TCP, libc::TCP_SYNCNT) => {
            if !(1..=127).contains(&value) {
                return err(libc::EINVAL);
            }
            s.opts.syncnt = value as u32;
        }
        (libc::IPPROTO_IPV6, libc::IPV6_V6ONLY) => {
            if s.domain != libc::AF_INET6 {
                return err(libc::ENOPROTOOPT);
            }
            if s.local.is_some() {
                return err(libc::EINVAL);
            }
            s.opts.v6only = on;
        }
        (libc::IPPROTO_IPV6, _) if s.domain != libc::AF_INET6 => return err(libc::ENOPROTOOPT),
        (l, n) => {
            s.opts.other.insert((l, n), value);
        }
    }
    ok(Reply::Ok)
}

fn getopt(st: &mut NetStack, id: u64, level: i32, name: i32) -> Answer {
    let s = st.socks.get_mut(&id).expect("checked");
    let v: i64 = match (level, name) {
        // Never waits: 0 while a connection attempt is under way, as the kernel says.
        (libc::SOL_SOCKET, libc::SO_ERROR) => std::mem::take(&mut s.so_error) as i64,
        (libc::SOL_SOCKET, libc::SO_TYPE) => {
            (if s.stream {
                libc::SOCK_STREAM
            } else {
                libc::SOCK_DGRAM
            }) as i64
        }
        (libc::SOL_SOCKET, libc::SO_DOMAIN) => s.domain as i64,
        (libc::SOL_SOCKET, libc::SO_PROTOCOL) => s.protocol as i64,
        (libc::SOL_SOCKET, libc::SO_ACCEPTCONN) => {
            matches!(s.state, SockState::Listening(_)) as i64
        }
        (libc::SOL_SOCKET, libc::SO_REUSEADDR) => s.opts.reuseaddr as i64,
        (libc::SOL_SOCKET, libc::SO_KEEPALIVE) => s.opts.keepalive as i64,
        (libc::SOL_SOCKET, libc::SO_RCVBUF) => s.opts.rcvbuf as i64,
        (libc::SOL_SOCKET, libc::SO_SNDBUF) => s.opts.sndbuf as i64,
        (libc::IPPROTO_TCP, _) if !s.stream => return err(libc::ENOPROTOOPT),
        (libc::IPPROTO_TCP, libc::TCP_NODELAY) => s.opts.nodelay as i64,
        (libc::IPPROTO_TCP, libc::TCP_SYNCNT) => s.opts.syncnt as i64,
        (libc::IPPROTO_TCP, libc::TCP_MAXSEG) => (st.mtu - 40) as i64,
        // The state part of struct tcp_info (the C library builds the struct around it).
        (libc::IPPROTO_TCP, libc::TCP_INFO) => linux_tcp_state(&st.sets, &s.state),
        (libc::IPPROTO_IPV6, libc::IPV6_V6ONLY) if s.domain == libc::AF_INET6 => {
            s.opts.v6only as i64
        }
        (libc::IPPROTO_IPV6, _) if s.domain != libc::AF_INET6 => return err(libc::ENOPROTOOPT),
        (libc::IPPROTO_IP, libc::IP_TTL) => *s.opts.other.get(&(level, name)).unwrap_or(&64) as i64,
        (l, n) => match s.opts.other.get(&(l, n)) {
            Some(v) => *v as i64,
            None => return err(libc::ENOPROTOOPT),
        },
    };
    ok(Reply::Int(v))
}

/// The Linux TCP state number (TCP_ESTABLISHED = 1, ...) of a socket, as tcp_info says it.
fn linux_tcp_state(sets: &[SocketSet<'static>; 2], s: &SockState) -> i64 {
    match s {
        SockState::Connecting(_) => 2,
        SockState::Listening(_) => 10,
        SockState::Connected(c) => match sets[c.set].get::<tcp::Socket>(c.handle).state() {
            State::Established => 1,
            State::SynSent => 2,
            State::SynReceived => 3,
            State::FinWait1 => 4,
            State::FinWait2 => 5,
            State::TimeWait => 6,
            State::Closed => 7,
            State::CloseWait => 8,
            State::LastAck => 9,
            State::Listen => 10,
            State::Closing => 11,
        },
        _ => 7,
    }
}

/// Settles a connection attempt: a blocking connect waiting for it gets the result, else
/// SO_ERROR keeps it.
fn settle(s: &mut Sock, result: i32, done: &mut Vec<Done>) {
    let waited = !s.waiters.is_empty();
    for conn in s.waiters.drain(..) {
        let reply = if result == 0 {
            Reply::Ok
        } else {
            Reply::Err(result)
        };
        done.push((conn, reply));
    }
    if !waited {
        s.so_error = result;
    }
}

/// After a failed nonblocking connect, whose outcome is now in SO_ERROR: drops the padding
/// (the application's end turns writable: POLLOUT) and shuts our side of the pair for
/// writing, so the application also sees POLLIN|POLLRDHUP and reads EOF, as on a kernel
/// socket whose connect failed. (POLLHUP would need our end shut both ways, and then the
/// engine could no longer see the application close its end.)
fn fail_pair(s: &mut Sock) {
    // Shut first: a caller woken by POLLOUT must already see POLLRDHUP, which tells its
    // SO_ERROR to ask us (see socket::get_opt).
    let _ = crate::sys::shutdown(s.fd.as_raw_fd(), libc::SHUT_WR);
    discard(s.fd.as_raw_fd(), usize::MAX);
    s.pair_shut = true;
}

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
    let now = ctx.now;
    let routes = RouteView::of(st);
    for id in pump_list(st) {
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
                match c.pump(
                    fd,
                    &mut s.pair,
                    &mut st.sets,
                    now,
                    false,
                    &mut s.app_closed,
                    &mut moved,
                ) {
                    Outcome::Failed(e) => {
                        st.sets[c.set].remove(c.handle);
                        s.so_error = e;
                        s.state = SockState::Done;
                        // A reset that found the pair full left bytes behind (dropped, as
                        // Linux drops them): the application still gets its EOF.
                        let _ = sys::shutdown(fd, libc::SHUT_WR);
                        moved = true;
                    }
                    Outcome::Finished => {
                        st.sets[c.set].remove(c.handle);
                        s.state = SockState::Done;
                        moved = true;
                    }
                    _ => {}
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
                    for (set, h) in l.listening.drain(..).chain(l.ready.drain(..)) {
                        st.sets[set].get_mut::<tcp::Socket>(h).abort();
                        st.sets[set].remove(h);
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
                moved |= super::device::with_buf(|buf| {
                    if buf.len() < 65536 + udp::HEADER {
                        buf.resize(65536 + udp::HEADER, 0);
                    }
                    udp::pump(s, &mut st.sets, &|ip| routes.route(ip), buf)
                });
                if s.app_closed {
                    if let SockState::Udp(u) = &s.state {
                        for set in [LINK, LO] {
                            if let Some(h) = u.handles[set] {
                                st.sets[set].remove(h);
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
        if let Some(s) = st.socks.remove(&id) {
            ctx.deregister(s.token, s.fd.as_raw_fd());
            for c in s.waiters {
                done.push((c, Reply::Err(libc::EBADF)));
            }
            st.release(id, s.local.map(|a| (s.stream, a.port())));
        }
        moved = true;
    }
    moved
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

fn remote_v4(sock: &tcp::Socket) -> bool {
    sock.remote_endpoint()
        .is_some_and(|e| matches!(e.addr, IpAddress::Ipv4(_)))
}

/// Moves a listener's connections along: handshakes done go to the ready queue (with a
/// fresh socket listening in their place), SYNs of the right family get their SYN|ACK, and
/// SYNs of a family the listener refuses are pushed on `strays` as (listener, set, handle).
fn pump_listener(
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
const MAX_HALF_OPEN: usize = 256;

/// A SYN reached listener `id`, whose family it is not: gives the connection to another
/// listener of the stack that takes it (an AF_INET and an IPV6_V6ONLY one on one port), or
/// refuses it with a reset as Linux does.
fn hand_over(st: &mut NetStack, id: u64, set: usize, h: SocketHandle) {
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

/// TCP connections that still owe the network bytes or a FIN. A connection counts while
/// smoltcp holds unacknowledged data or its FIN is not yet acknowledged, and while its
/// application end is open or was closed with bytes or a FIN still to go; a connection whose
/// application still holds it open and has nothing in flight does not.
fn pending(st: &NetStack) -> usize {
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
fn pump_list(st: &mut NetStack) -> Vec<u64> {
    let mut ids = std::mem::take(&mut st.dirty);
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

/// The earliest connection-attempt deadline of the stack.
pub fn next_deadline(st: &NetStack) -> Option<Instant> {
    let mut at: Option<Instant> = st.dhcp_waiters.iter().map(|w| w.deadline).min();
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
            if let Some(reply) = super::conf::resume(st, w, now) {
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
