//! Control requests on a stack's sockets (one module per call family), and the per-round
//! pump of all its bridges (`pump`).

mod bind;
mod connect;
mod listen;
mod opts;
mod pump;

use bind::*;
use connect::*;
pub use listen::refill_listener;
use listen::*;
use opts::*;
use pump::*;
pub use pump::{dhcp_check, next_deadline, pump_all, NOT_A_SOCK};

use std::os::fd::{AsRawFd, OwnedFd};

use super::sock::{Sock, SockState};
use super::stack::NetStack;
use super::Ctx;
use crate::control::proto::{Reply, Request};

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
                // A reset socket still answers its application (until it closes its fd).
                return Some((
                    st.endings
                        .answer(id, &req)
                        .unwrap_or(Reply::Err(libc::EBADF)),
                    None,
                ));
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
                Request::Shutdown { sock, how } => {
                    let s = st.socks.get_mut(&sock).expect("checked");
                    // Before the application's shutdown(2): a hang-up may follow that is no
                    // close.
                    s.app_shut_wr |= how == libc::SHUT_WR || how == libc::SHUT_RDWR;
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

/// A new socket id and its pair (see [`Ctx::pair`]). Anyone may bind an abstract name, and
/// the next ids are easy to guess: when another process holds the next one's name, the id
/// is drawn at random instead (getrandom: not to be guessed in turn).
fn new_pair(
    st: &mut NetStack,
    ctx: &mut Ctx,
    ty: i32,
) -> std::io::Result<(u64, (OwnedFd, OwnedFd, super::sock::FileId))> {
    let mut id = st.new_sock_id();
    for _ in 0..8 {
        match ctx.pair(id, ty) {
            Err(e) if e.raw_os_error() == Some(libc::EADDRINUSE) => {
                let r = crate::control::key::generate()?;
                let low = u32::from_le_bytes([r[0], r[1], r[2], r[3]]).max(1);
                id = (st.id as u64) << 32 | low as u64;
                if st.socks.contains_key(&id) {
                    continue;
                }
            }
            r => return r.map(|p| (id, p)),
        }
    }
    Err(std::io::Error::from_raw_os_error(libc::EADDRINUSE))
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
    // UDP: a seqpacket pair keeps message boundaries as a datagram pair would (same queue
    // rules, same truncation), and unlike one it tells each end when the other closes.
    let pair_ty = if stream {
        libc::SOCK_STREAM
    } else {
        libc::SOCK_SEQPACKET
    };
    let (id, (mine, theirs, app)) = match new_pair(st, ctx, pair_ty) {
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
        .insert(id, Sock::new(id, (mine, app), token, domain, stream, proto));
    Some((Reply::Ok, Some(theirs)))
}
