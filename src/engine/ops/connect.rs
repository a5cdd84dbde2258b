//! connect(2) and how a connection attempt settles.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::AsRawFd;

use smoltcp::wire::{IpAddress, IpEndpoint, IpListenEndpoint};

use super::*;
use crate::bridge::tcp::{discard, new_socket, Conn};
use crate::bridge::{Done, LINK, LO};
use crate::control::proto::Reply;
use crate::engine::sock::{Sock, SockState};
use crate::engine::stack::NetStack;
use crate::engine::timeouts;
use crate::engine::Ctx;
use crate::sys::unmap;

/// connect(2). A nonblocking one answers EINPROGRESS, and its client then writes `pad`
/// bytes into the pair so that the application's end is not writable (4 × unread bytes >
/// SO_SNDBUF, the AF_UNIX rule) until the outcome is known and we drop them: POLLOUT means
/// what it means on a kernel socket.
#[allow(clippy::too_many_arguments)]
pub(super) fn connect(
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
        let src = source_for(st, dst);
        let s = st.socks.get_mut(&id).expect("checked");
        if let SockState::Udp(u) = &mut s.state {
            u.peer = Some(peer);
        }
        // Linux fixes a wildcard-bound socket's local address to the route's source at its
        // first connect (getsockname shows it from then on).
        if let (Some(l), Some(src)) = (s.local, src) {
            if unmap(l.ip()).is_unspecified() && src.is_ipv4() == dst.is_ipv4() {
                s.local = Some(NetStack::as_seen(s.domain, SocketAddr::new(src, l.port())));
            }
        }
        s.peer = Some(NetStack::as_seen(s.domain, peer));
        return ok(Reply::Ok);
    }
    match s.state {
        // The pair of a failed nonblocking connect is shut (see fail_pair): like the kernel's
        // second connect, report the failure (once); unlike it, never connect again (the
        // pair cannot be opened again).
        SockState::Fresh if s.disconnecting => return err(libc::EINVAL),
        SockState::Connected(_) | SockState::Done if s.completion_unreported => {
            st.socks
                .get_mut(&id)
                .expect("checked")
                .completion_unreported = false;
            return ok(Reply::Ok);
        }
        SockState::Fresh if s.failed_unreported => {
            let s = st.socks.get_mut(&id).expect("checked");
            s.failed_unreported = false;
            unlock_source(s);
            let e = std::mem::take(&mut s.so_error);
            return err(if e != 0 { e } else { libc::ECONNABORTED });
        }
        SockState::Fresh if s.pair_shut => return err(libc::ECONNABORTED),
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
    let mut t = new_socket(s.opts.rcvbuf, s.opts.sndbuf, s.opts.nodelay);
    timeouts::apply(&mut t, &s.opts);
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
    let mut c = Conn::new(
        set,
        handle,
        Some(ctx.now + timeouts::connect_timeout(&s.opts)),
        s.opts.linger2,
    );
    c.pad = if wait { 0 } else { pad };
    s.state = SockState::Connecting(c);
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

/// connect(2) with AF_UNSPEC. A UDP socket forgets its peer, and as Linux's
/// __udp_disconnect gives back its port unless bind named it, and its address unless bind
/// named that. A TCP socket not connected is left as it is (Linux's tcp_disconnect does
/// nothing to one); a connection or a listener is not dissolved (EOPNOTSUPP).
pub(super) fn disconnect(st: &mut NetStack, id: u64, now: smoltcp::time::Instant) -> Answer {
    if !st.socks[&id].stream {
        // Datagrams sent before leave from the old port, to the old peer.
        pump_udp_now(st, id, now);
    }
    let s = st.socks.get_mut(&id).expect("checked");
    let u = match &mut s.state {
        SockState::Udp(u) => u,
        SockState::Fresh if !s.pair_shut => return ok(Reply::Ok),
        _ => return err(libc::EOPNOTSUPP),
    };
    u.peer = None;
    s.peer = None;
    if s.port_locked {
        if !s.addr_locked {
            if let Some(l) = &mut s.local {
                l.set_ip(NetStack::unspecified(s.domain == libc::AF_INET6));
            }
        }
        return ok(Reply::Ok);
    }
    let handles = std::mem::take(&mut u.handles);
    let local = s.local.take();
    let port = local.map(|l| (false, l.port()));
    // An address bind named stays (getsockname shows it with port 0; the next port is
    // taken at it).
    s.released = local
        .filter(|_| s.addr_locked)
        .map(|l| SocketAddr::new(l.ip(), 0));
    for (set, h) in handles.into_iter().enumerate() {
        if let Some(h) = h {
            // Its queued datagrams still go out, as a closed socket's.
            st.endings.flush_udp(&mut st.sets, set, h, now);
        }
    }
    st.release(id, port);
    ok(Reply::Ok)
}

/// A failed connect reported: the source address it chose goes, unless bind named it
/// (Linux's tcp_disconnect); getsockname shows the wildcard with the old port.
pub(super) fn unlock_source(s: &mut Sock) {
    if s.addr_locked {
        return;
    }
    let any = NetStack::unspecified(s.domain == libc::AF_INET6);
    for a in [&mut s.released, &mut s.local].into_iter().flatten() {
        *a = SocketAddr::new(any, a.port());
    }
}

/// The source address a datagram to `dst` leaves with: 127.0.0.1 or ::1 to a loopback
/// address, the address itself to another of the stack's own, else the link's choice.
pub(super) fn source_for(st: &NetStack, dst: IpAddr) -> Option<IpAddr> {
    match dst {
        IpAddr::V4(a) if a.is_loopback() => Some(Ipv4Addr::LOCALHOST.into()),
        IpAddr::V6(a) if a.is_loopback() => Some(Ipv6Addr::LOCALHOST.into()),
        a if st.is_local(a) => Some(a),
        a if st.route(a).is_some() => st
            .iface
            .as_ref()?
            .get_source_address(&IpAddress::from(a))
            .map(IpAddr::from),
        _ => None,
    }
}

/// Settles a connection attempt: a blocking connect waiting for it gets the result, else
/// SO_ERROR keeps it.
pub(super) fn settle(s: &mut Sock, result: i32, done: &mut Vec<Done>) {
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
pub(super) fn fail_pair(s: &mut Sock) {
    // Shut first: a caller woken by POLLOUT must already see POLLRDHUP, which tells its
    // SO_ERROR to ask us (see socket::get_opt).
    let _ = crate::sys::shutdown(s.fd.as_raw_fd(), libc::SHUT_WR);
    discard(s.fd.as_raw_fd(), usize::MAX);
    s.pair_shut = true;
    s.failed_unreported = true;
}
