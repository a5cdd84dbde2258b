//! bind(2) and the ports a socket reserves.

use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;

use smoltcp::wire::{IpAddress, IpListenEndpoint};

use crate::bridge::{udp, LINK, LO};
use crate::engine::sock::{Sock, SockState};
use crate::engine::stack::{Binding, NetStack};
use crate::sys::unmap;

pub(super) fn family_ok(s: &Sock, a: &SocketAddr) -> bool {
    (s.domain == libc::AF_INET) == a.is_ipv4()
}

pub(super) fn bind(st: &mut NetStack, id: u64, addr: SocketAddr) -> Result<(), i32> {
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
    // What a failed connect left is for its autobinds, not for an address bind names.
    let released = st.socks.get_mut(&id).expect("checked").released.take();
    if let Err(e) = bind_port(st, id, ip, addr.port()) {
        st.socks.get_mut(&id).expect("checked").released = released;
        return Err(e);
    }
    let s = st.socks.get_mut(&id).expect("checked");
    s.port_locked = addr.port() != 0;
    s.addr_locked = ip.is_some();
    // A specific IPv6 address (not a v4-mapped one) makes the socket IPv6-only, as Linux's
    // inet6_bind does.
    if ip.is_some_and(|a| a.is_ipv6()) {
        s.opts.v6only = true;
    }
    Ok(())
}

/// Reserves a port (0: an ephemeral one) for `id` and records its local address.
pub(super) fn bind_port(
    st: &mut NetStack,
    id: u64,
    ip: Option<IpAddr>,
    port: u16,
) -> Result<(), i32> {
    let s = &st.socks[&id];
    let tcp = s.stream;
    // A port a failed connect released: the next one is taken at the address it had.
    let ip = match (ip, s.released) {
        (None, Some(r)) if !unmap(r.ip()).is_unspecified() => Some(unmap(r.ip())),
        _ => ip,
    };
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
    s.released = None;
    s.local = Some(NetStack::as_seen(s.domain, SocketAddr::new(ip, port)));
    if !s.stream {
        udp_open(st, id);
    }
    Ok(())
}

/// A UDP socket that the application sent a datagram on before binding it is bound to an
/// ephemeral port inside the sendto on Linux. The engine binds it when the datagram comes
/// out of the pair; a request that arrives first (getsockname, bind, ...) sees the datagram
/// waiting and binds it now, so that it answers as after the sendto.
pub(super) fn autobind_sent(st: &mut NetStack, id: u64) {
    let Some(s) = st.socks.get(&id) else { return };
    if s.stream || s.local.is_some() || !matches!(s.state, SockState::Udp(_)) {
        return;
    }
    let mut one = [0u8; 1];
    // Every datagram has a payload or a header: a length above 0 is one waiting.
    let waiting = crate::sys::recv_vec(
        s.fd.as_raw_fd(),
        &mut [&mut one[..]],
        libc::MSG_PEEK | libc::MSG_TRUNC | libc::MSG_DONTWAIT,
    )
    .is_ok_and(|n| n > 0);
    if waiting && bind_port(st, id, None, 0).is_ok() {
        st.dirty.push(id);
    }
}

/// After a failed connect a TCP socket is a fresh one again on Linux: its port goes back
/// (unless bind named it), so that it may bind, listen or connect anew.
///
/// `source` is the address the attempt left from: getsockname shows it until a connect
/// reports the failure (at once for a blocking one).
pub(super) fn release_failed(st: &mut NetStack, id: u64, source: Option<IpAddr>) {
    let Some(s) = st.socks.get_mut(&id) else {
        return;
    };
    if !s.stream {
        return;
    }
    let Some(l) = s.local else { return };
    let shown = NetStack::as_seen(
        s.domain,
        SocketAddr::new(source.unwrap_or(l.ip()), l.port()),
    );
    if s.port_locked {
        if s.failed_unreported {
            s.local = Some(shown);
        }
        return;
    }
    s.local = None;
    s.released = Some(shown);
    if !s.failed_unreported {
        super::connect::unlock_source(s);
    }
    st.release(id, Some((true, l.port())));
}

pub(super) fn listen_ep(local: SocketAddr) -> IpListenEndpoint {
    let ip = unmap(local.ip());
    IpListenEndpoint {
        addr: (!ip.is_unspecified()).then(|| IpAddress::from(ip)),
        port: local.port(),
    }
}

/// Which sets a local address is reachable in: loopback addresses only on LO.
pub(super) fn sets_for(local: SocketAddr) -> [bool; 2] {
    let ip = unmap(local.ip());
    [!ip.is_loopback(), true]
}

pub(super) fn udp_open(st: &mut NetStack, id: u64) {
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
