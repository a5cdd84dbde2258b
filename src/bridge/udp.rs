//! UDP bridge. The pair is a seqpacket socketpair: message boundaries hold, and a close of
//! the application's end hangs ours up (a datagram pair would not tell). An unconnected
//! socket needs each datagram's peer address beside it: a small header that the library adds
//! on send and strips on receive. A connected socket carries bare payloads.

use std::io;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::os::fd::AsRawFd;

use smoltcp::iface::SocketSet;
use smoltcp::socket::udp;
use smoltcp::wire::{IpAddress, IpEndpoint};

use crate::engine::sock::{Sock, SockState};
use crate::sys;

/// Length of the address header.
pub const HEADER: usize = 24;
/// The header's first bytes. A datagram that starts with them always carries a header: on a
/// connected socket, a payload that happens to start with them gets one too, so the reader
/// never mistakes payload for header. So does an empty payload, both ways: a read of 0
/// bytes without a header is the end of the pair (its other end closed or shut).
pub const MAGIC: [u8; 4] = *b"\xd7VDS";

/// Header flag (byte 5): the datagram is one the application had received before it
/// connected; the engine hands it back to the application, now without a header.
pub const REQUEUE: u8 = 1;

/// Builds the header that carries a datagram's peer address.
pub fn header(addr: &SocketAddr) -> [u8; HEADER] {
    let mut h = [0u8; HEADER];
    h[..4].copy_from_slice(&MAGIC);
    h[6..8].copy_from_slice(&addr.port().to_be_bytes());
    match addr.ip() {
        IpAddr::V4(a) => {
            h[4] = 4;
            h[8..12].copy_from_slice(&a.octets());
        }
        IpAddr::V6(a) => {
            h[4] = 6;
            h[8..24].copy_from_slice(&a.octets());
        }
    }
    h
}

/// Whether a datagram starts with a header.
pub fn has_header(d: &[u8]) -> bool {
    d.len() >= HEADER && d[..4] == MAGIC
}

/// Reads the header at the start of a datagram. Port 0 at the unspecified address means
/// "the connected peer".
pub fn parse_header(d: &[u8]) -> Option<SocketAddr> {
    if !has_header(d) {
        return None;
    }
    let port = u16::from_be_bytes([d[6], d[7]]);
    let ip = match d[4] {
        4 => IpAddr::from(<[u8; 4]>::try_from(&d[8..12]).ok()?),
        6 => IpAddr::from(<[u8; 16]>::try_from(&d[8..24]).ok()?),
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

/// Per-socket state of a UDP bridge.
#[derive(Debug, Default)]
pub struct Udp {
    /// The smoltcp sockets, one per set (created at bind).
    pub handles: [Option<smoltcp::iface::SocketHandle>; 2],
    /// The connected peer, if any.
    pub peer: Option<SocketAddr>,
    /// A datagram read from the app that smoltcp had no room for yet.
    pub held: Option<(usize, IpEndpoint, Vec<u8>)>,
}

/// Creates a smoltcp UDP socket with room for `bytes` of payload each way.
pub fn new_socket(bytes: usize) -> udp::Socket<'static> {
    let meta = (bytes / 512).clamp(16, 1024);
    let rx = udp::PacketBuffer::new(vec![udp::PacketMetadata::EMPTY; meta], vec![0; bytes]);
    let tx = udp::PacketBuffer::new(vec![udp::PacketMetadata::EMPTY; meta], vec![0; bytes]);
    udp::Socket::new(rx, tx)
}

/// Moves datagrams both ways. `route` picks the set for a destination. Returns whether
/// anything moved.
pub fn pump(
    s: &mut Sock,
    sets: &mut [SocketSet<'static>; 2],
    route: &dyn Fn(IpAddr) -> Option<usize>,
    buf: &mut [u8],
) -> bool {
    let fd = s.fd.as_raw_fd();
    let v6 = s.domain == libc::AF_INET6;
    let SockState::Udp(u) = &mut s.state else {
        return false;
    };
    let mut moved = false;
    let mut error = 0;
    // net → app
    for (set, h) in u.handles.iter().enumerate() {
        let Some(h) = *h else { continue };
        let sock = sets[set].get_mut::<udp::Socket>(h);
        while let (true, Ok((data, meta))) = (s.pair.wr, sock.peek()) {
            let from = SocketAddr::new(IpAddr::from(meta.endpoint.addr), meta.endpoint.port);
            let from = if v6 { map_v6(from) } else { from };
            let r = match u.peer {
                Some(p)
                    if sys::unmap(p.ip()) != sys::unmap(from.ip()) || p.port() != from.port() =>
                {
                    Ok(0) // connected sockets only hear their peer
                }
                // An empty datagram gets a header too: a bare one reads as the end.
                Some(_) if !data.is_empty() && !data.starts_with(&MAGIC) => sys::send(fd, data),
                _ => {
                    let mut d = Vec::with_capacity(HEADER + data.len());
                    d.extend_from_slice(&header(&from));
                    d.extend_from_slice(data);
                    sys::send(fd, &d)
                }
            };
            match r {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    s.pair.wr = false;
                    break;
                }
                _ => {
                    let _ = sock.recv();
                    moved = true;
                }
            }
        }
    }
    // app → net
    loop {
        if let Some((set, ep, data)) = u.held.take() {
            let Some(h) = u.handles[set] else {
                // Not bound yet: the engine binds it and comes back.
                u.held = Some((set, ep, data));
                break;
            };
            let sock = sets[set].get_mut::<udp::Socket>(h);
            match sock.send_slice(&data, ep) {
                Err(udp::SendError::BufferFull) => {
                    u.held = Some((set, ep, data));
                    break;
                }
                _ => moved = true, // sent, or unaddressable (dropped, as the kernel would)
            }
        }
        if !s.pair.rd {
            break;
        }
        let n = match sys::read(fd, buf) {
            // The end: the application shut its end for writing or closed it (then the
            // hang-up marks it closed). Empty datagrams come with a header.
            Ok(0) => {
                s.pair.rd = false;
                break;
            }
            Ok(n) => n,
            Err(e) => {
                s.pair.rd = e.kind() != io::ErrorKind::WouldBlock;
                break;
            }
        };
        let d = &buf[..n];
        if has_header(d) && d[5] == REQUEUE {
            // Back to the application as a connected socket hears it (lost if the pair is
            // full, as UDP may).
            let payload = &d[HEADER..];
            let _ = if payload.is_empty() || payload.starts_with(&MAGIC) {
                sys::send(fd, d)
            } else {
                sys::send(fd, payload)
            };
            moved = true;
            continue;
        }
        let (dst, payload) = match (parse_header(d), u.peer) {
            (Some(a), Some(p)) if a.port() == 0 && a.ip().is_unspecified() => (p, &d[HEADER..]),
            (Some(a), _) => (a, &d[HEADER..]),
            (None, Some(p)) => (p, d),
            (None, None) => {
                error = libc::EDESTADDRREQ;
                moved = true;
                continue;
            }
        };
        let ip = sys::unmap(dst.ip());
        let Some(set) = route(ip) else {
            error = libc::ENETUNREACH;
            moved = true;
            continue;
        };
        let ep = IpEndpoint::new(IpAddress::from(ip), dst.port());
        u.held = Some((set, ep, payload.to_vec()));
    }
    if error != 0 {
        s.so_error = error;
    }
    moved
}

/// Shows an address the way an AF_INET6 socket sees it (IPv4 peers as ::ffff:a.b.c.d).
pub fn map_v6(a: SocketAddr) -> SocketAddr {
    match a.ip() {
        IpAddr::V4(v4) => SocketAddr::new(IpAddr::V6(v4.to_ipv6_mapped()), a.port()),
        IpAddr::V6(_) => a,
    }
}

/// The unspecified address of a family.
pub fn unspecified(v6: bool) -> IpAddr {
    if v6 {
        IpAddr::V6(Ipv6Addr::UNSPECIFIED)
    } else {
        IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED)
    }
}
