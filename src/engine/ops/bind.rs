//! bind(2) and the ports a socket reserves.

use std::net::{IpAddr, SocketAddr};

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
    bind_port(st, id, ip, addr.port())
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
