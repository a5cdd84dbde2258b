//! Frames for the fuzz harness, built by hand (DHCP messages by smoltcp's emitter): its
//! peer's answers while a lab is set up, and the seed inputs. Checksums are always right.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use smoltcp::wire::{DhcpMessageType, DhcpPacket, DhcpRepr, EthernetAddress};

/// The stack's addresses in a lab.
pub const STACK_V4: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
/// The stack's IPv6 address in a lab.
pub const STACK_V6: Ipv6Addr = Ipv6Addr::new(0xfc00, 0, 0, 0, 0, 0, 0, 1);
/// The peer's addresses (the connected socket's other end).
pub const PEER_V4: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
/// The peer's IPv6 address.
pub const PEER_V6: Ipv6Addr = Ipv6Addr::new(0xfc00, 0, 0, 0, 0, 0, 0, 2);
/// The peer's MAC address.
pub const PEER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];

/// TCP flags.
pub const FIN: u8 = 0x01;
/// SYN.
pub const SYN: u8 = 0x02;
/// RST.
pub const RST: u8 = 0x04;
/// PSH.
pub const PSH: u8 = 0x08;
/// ACK.
pub const ACK: u8 = 0x10;

/// Ethertypes and IP protocols.
pub const ETH_IPV4: u16 = 0x0800;
/// ARP.
pub const ETH_ARP: u16 = 0x0806;
/// IPv6.
pub const ETH_IPV6: u16 = 0x86dd;
/// ICMP.
pub const P_ICMP: u8 = 1;
/// TCP.
pub const P_TCP: u8 = 6;
/// UDP.
pub const P_UDP: u8 = 17;
/// ICMPv6.
pub const P_ICMPV6: u8 = 58;

fn sum(data: &[u8], mut acc: u32) -> u32 {
    for c in data.chunks(2) {
        acc += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
    }
    acc
}

fn fold(mut acc: u32) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    !(acc as u16)
}

fn octets(ip: IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

/// The checksum of a TCP, UDP or ICMPv6 packet `l4` (its checksum field zero) between
/// `src` and `dst`.
fn l4_checksum(src: IpAddr, dst: IpAddr, proto: u8, l4: &[u8]) -> u16 {
    let mut acc = sum(&octets(src), 0);
    acc = sum(&octets(dst), acc);
    acc += u32::from(proto) + l4.len() as u32;
    fold(sum(l4, acc))
}

/// An IPv4 packet (no options, DF clear); `frag` is the flags and fragment offset field.
pub fn ipv4_frag(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, frag: u16, payload: &[u8]) -> Vec<u8> {
    let mut p = vec![0u8; 20];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&((20 + payload.len()) as u16).to_be_bytes());
    p[4..6].copy_from_slice(&0x1234u16.to_be_bytes());
    p[6..8].copy_from_slice(&frag.to_be_bytes());
    p[8] = 64;
    p[9] = proto;
    p[12..16].copy_from_slice(&src.octets());
    p[16..20].copy_from_slice(&dst.octets());
    let c = fold(sum(&p, 0));
    p[10..12].copy_from_slice(&c.to_be_bytes());
    p.extend_from_slice(payload);
    p
}

/// An IP packet of `proto` from `src` to `dst` (both of one family).
pub fn ip(src: IpAddr, dst: IpAddr, proto: u8, payload: &[u8]) -> Vec<u8> {
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => ipv4_frag(s, d, proto, 0, payload),
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            let mut p = vec![0u8; 40];
            p[0] = 0x60;
            p[4..6].copy_from_slice(&(payload.len() as u16).to_be_bytes());
            p[6] = proto;
            p[7] = 255;
            p[8..24].copy_from_slice(&s.octets());
            p[24..40].copy_from_slice(&d.octets());
            p.extend_from_slice(payload);
            p
        }
        _ => panic!("mixed families"),
    }
}

/// A TCP segment with its checksum.
#[allow(clippy::too_many_arguments)]
pub fn tcp(
    src: IpAddr,
    dst: IpAddr,
    ports: (u16, u16),
    seq: u32,
    ack: u32,
    flags: u8,
    options: &[u8],
    payload: &[u8],
) -> Vec<u8> {
    let hlen = 20 + options.len().div_ceil(4) * 4;
    let mut t = vec![0u8; hlen];
    t[0..2].copy_from_slice(&ports.0.to_be_bytes());
    t[2..4].copy_from_slice(&ports.1.to_be_bytes());
    t[4..8].copy_from_slice(&seq.to_be_bytes());
    t[8..12].copy_from_slice(&ack.to_be_bytes());
    t[12] = ((hlen / 4) as u8) << 4;
    t[13] = flags;
    t[14..16].copy_from_slice(&8192u16.to_be_bytes());
    t[20..20 + options.len()].copy_from_slice(options);
    t.extend_from_slice(payload);
    let c = l4_checksum(src, dst, P_TCP, &t);
    t[16..18].copy_from_slice(&c.to_be_bytes());
    t
}

/// A UDP datagram with its checksum.
pub fn udp(src: IpAddr, dst: IpAddr, ports: (u16, u16), payload: &[u8]) -> Vec<u8> {
    let mut u = vec![0u8; 8];
    u[0..2].copy_from_slice(&ports.0.to_be_bytes());
    u[2..4].copy_from_slice(&ports.1.to_be_bytes());
    u[4..6].copy_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    u.extend_from_slice(payload);
    let c = l4_checksum(src, dst, P_UDP, &u);
    u[6..8].copy_from_slice(&c.to_be_bytes());
    u
}

/// An ICMPv4 message (`rest`: what follows the checksum).
pub fn icmpv4(ty: u8, code: u8, rest: &[u8]) -> Vec<u8> {
    let mut m = vec![ty, code, 0, 0];
    m.extend_from_slice(rest);
    let c = fold(sum(&m, 0));
    m[2..4].copy_from_slice(&c.to_be_bytes());
    m
}

/// An ICMPv6 message from `src` to `dst` (`rest`: what follows the checksum).
pub fn icmpv6(src: Ipv6Addr, dst: Ipv6Addr, ty: u8, code: u8, rest: &[u8]) -> Vec<u8> {
    let mut m = vec![ty, code, 0, 0];
    m.extend_from_slice(rest);
    let c = l4_checksum(src.into(), dst.into(), P_ICMPV6, &m);
    m[2..4].copy_from_slice(&c.to_be_bytes());
    m
}

/// An Ethernet frame.
pub fn eth(dst: [u8; 6], src: [u8; 6], ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(14 + payload.len());
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// An ARP packet for IPv4 over Ethernet (op 1: request, 2: reply).
pub fn arp(op: u16, sha: [u8; 6], spa: Ipv4Addr, tha: [u8; 6], tpa: Ipv4Addr) -> Vec<u8> {
    let mut a = vec![0, 1, 0x08, 0x00, 6, 4];
    a.extend_from_slice(&op.to_be_bytes());
    a.extend_from_slice(&sha);
    a.extend_from_slice(&spa.octets());
    a.extend_from_slice(&tha);
    a.extend_from_slice(&tpa.octets());
    a
}

/// A DHCP server's message of `kind` (offer, ack...) in answer to transaction `xid` of the
/// client at `client`, leasing it `lease`/24 for an hour with the peer as router and server
/// (the UDP payload, port 67 to 68).
pub fn dhcp(kind: DhcpMessageType, xid: u32, client: [u8; 6], lease: Ipv4Addr) -> Vec<u8> {
    let repr = DhcpRepr {
        message_type: kind,
        transaction_id: xid,
        secs: 0,
        client_hardware_address: EthernetAddress(client),
        client_ip: Ipv4Addr::UNSPECIFIED,
        your_ip: lease,
        server_ip: PEER_V4,
        router: Some(PEER_V4),
        subnet_mask: Some(Ipv4Addr::new(255, 255, 255, 0)),
        relay_agent_ip: Ipv4Addr::UNSPECIFIED,
        broadcast: false,
        requested_ip: None,
        client_identifier: None,
        server_identifier: Some(PEER_V4),
        parameter_request_list: None,
        dns_servers: None,
        max_size: None,
        lease_duration: Some(3600),
        renew_duration: None,
        rebind_duration: None,
        additional_options: &[],
    };
    let mut buf = vec![0; repr.buffer_len()];
    repr.emit(&mut DhcpPacket::new_unchecked(&mut buf[..]))
        .expect("a buffer of its length");
    buf
}

/// The transaction id of the last DHCP message (client port 68 to 67) among `frames` an
/// Ethernet stack sent.
pub fn dhcp_xid(frames: &[Vec<u8>]) -> Option<u32> {
    frames.iter().rev().find_map(|f| {
        let ip = f.get(14..).filter(|_| f.get(12..14) == Some(&[0x08, 0]))?;
        let udp = ip.get(usize::from(ip.first()? & 0xf) * 4..)?;
        if ip.get(9) != Some(&P_UDP) || udp.get(0..4) != Some(&[0, 68, 0, 67]) {
            return None;
        }
        Some(u32::from_be_bytes(udp.get(12..16)?.try_into().ok()?))
    })
}

/// What the peer answers to a frame the stack sent during a lab's setup: ARP requests for
/// its address, and a SYN to it (with a SYN|ACK whose sequence number is `isn`).
pub fn peer_answer(ethernet: bool, frame: &[u8], isn: u32) -> Option<Vec<u8>> {
    let (pkt, ethertype) = if ethernet {
        let ty = u16::from_be_bytes(frame.get(12..14)?.try_into().ok()?);
        (frame.get(14..)?, ty)
    } else {
        (frame, ETH_IPV4)
    };
    let wrap = |ty: u16, p: Vec<u8>| {
        if ethernet {
            let to: [u8; 6] = frame[6..12].try_into().expect("14 bytes");
            eth(to, PEER_MAC, ty, &p)
        } else {
            p
        }
    };
    match ethertype {
        ETH_ARP if pkt.get(6..8)? == [0, 1] && pkt.get(24..28)? == PEER_V4.octets() => {
            let sha: [u8; 6] = pkt[8..14].try_into().ok()?;
            let spa = Ipv4Addr::from(<[u8; 4]>::try_from(&pkt[14..18]).ok()?);
            Some(wrap(ETH_ARP, arp(2, PEER_MAC, PEER_V4, sha, spa)))
        }
        ETH_IPV4 if pkt.first()? >> 4 == 4 && *pkt.get(9)? == P_TCP => {
            let t = pkt.get(usize::from(pkt[0] & 0xf) * 4..)?;
            if *t.get(13)? != SYN {
                return None;
            }
            let sport = u16::from_be_bytes(t[0..2].try_into().ok()?);
            let dport = u16::from_be_bytes(t[2..4].try_into().ok()?);
            let seq = u32::from_be_bytes(t[4..8].try_into().ok()?);
            let (s, d) = (PEER_V4.into(), STACK_V4.into());
            let mss = [2, 4, 0x05, 0xb4];
            let seg = tcp(
                s,
                d,
                (dport, sport),
                isn,
                seq.wrapping_add(1),
                SYN | ACK,
                &mss,
                &[],
            );
            Some(wrap(ETH_IPV4, ip(s, d, P_TCP, &seg)))
        }
        _ => None,
    }
}
