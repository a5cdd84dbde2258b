//! getsockopt/setsockopt and getsockname/getpeername.

use std::net::SocketAddr;

use smoltcp::iface::SocketSet;
use smoltcp::socket::tcp::{self, State};
use smoltcp::time::Duration;

use super::*;
use crate::control::proto::Reply;
use crate::engine::ending;
use crate::engine::sock::SockState;
use crate::engine::stack::NetStack;

pub(super) fn name(st: &mut NetStack, id: u64, peer: bool) -> Answer {
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

pub(super) fn with_tcp(st: &mut NetStack, id: u64, f: impl Fn(&mut tcp::Socket)) {
    let s = &st.socks[&id];
    if let SockState::Connected(c) | SockState::Connecting(c) = &s.state {
        f(st.sets[c.set].get_mut::<tcp::Socket>(c.handle));
    }
}

pub(super) fn setopt(st: &mut NetStack, id: u64, level: i32, name: i32, value: i32) -> Answer {
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
        (libc::SOL_SOCKET, libc::SO_LINGER) => s.opts.linger_abort = on,
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
        (libc::IPPROTO_TCP, libc::TCP_LINGER2) => {
            s.opts.linger2 = ending::linger2_value(value);
            if let SockState::Connected(c) | SockState::Connecting(c) = &mut s.state {
                c.linger2 = s.opts.linger2;
            }
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

pub(super) fn getopt(st: &mut NetStack, id: u64, level: i32, name: i32) -> Answer {
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
        (libc::IPPROTO_TCP, libc::TCP_LINGER2) => ending::linger2_shown(s.opts.linger2) as i64,
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
pub(super) fn linux_tcp_state(sets: &[SocketSet<'static>; 2], s: &SockState) -> i64 {
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
