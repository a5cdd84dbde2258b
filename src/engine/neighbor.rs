//! Asking for a neighbour's MAC ourselves.
//!
//! smoltcp rate-limits address resolution per interface: after one ARP request it sends no
//! other for a second, and a packet for any other unknown neighbour waits that second. A
//! stack that connects to several new peers in a row (one client, many servers) would pay a
//! second for each. So when a socket is about to talk to an IPv4 neighbour on an Ethernet
//! link, the engine sends the ARP request itself, at most once a minute per neighbour;
//! smoltcp fills its cache from the reply (it learns from every ARP packet aimed at it).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};

use smoltcp::time::{Duration, Instant};
use smoltcp::wire::{
    ArpOperation, ArpPacket, ArpRepr, EthernetAddress, EthernetFrame, EthernetProtocol,
    EthernetRepr, IpCidr,
};

use super::stack::NetStack;
use crate::config::Route;

/// How long a neighbour asked for is not asked for again (smoltcp keeps entries a minute).
const AGAIN_AFTER: Duration = Duration::from_secs(60);

/// The neighbours a stack asked for, and when.
#[derive(Debug, Default)]
pub struct Asked(HashMap<Ipv4Addr, Instant>);

impl NetStack {
    /// Sends an ARP request for the next hop towards `dst` unless it was asked for lately.
    pub fn prime_neighbor(&mut self, dst: IpAddr, now: Instant) {
        let IpAddr::V4(dst) = crate::sys::unmap(dst) else {
            return;
        };
        if !self.link_up || dst.is_broadcast() || dst.is_multicast() || dst.is_loopback() {
            return;
        }
        let (Some(mac), Some(iface)) = (self.mac(), self.iface.as_ref()) else {
            return;
        };
        let own: Vec<(Ipv4Addr, u8)> = iface
            .ip_addrs()
            .iter()
            .filter_map(|c| match c {
                IpCidr::Ipv4(c) => Some((c.address(), c.prefix_len())),
                _ => None,
            })
            .collect();
        let Some((hop, src)) = next_hop(&own, &self.routes, dst) else {
            return;
        };
        if self
            .asked
            .0
            .get(&hop)
            .is_some_and(|t| now < *t + AGAIN_AFTER)
            || own.iter().any(|(a, _)| *a == hop)
        {
            return;
        }
        self.asked.0.insert(hop, now);
        let frame = arp_request(mac, src, hop);
        // A full link holds it like any frame.
        if let Some(link) = self.link.as_deref_mut() {
            if link.send(&frame).is_err() {
                self.held.push_back(frame);
            }
        }
    }
}

/// The next hop towards `dst` (itself when on-link, else the IPv4 gateway of the most
/// specific route) and the source address to ask from.
fn next_hop(
    own: &[(Ipv4Addr, u8)],
    routes: &[Route],
    dst: Ipv4Addr,
) -> Option<(Ipv4Addr, Ipv4Addr)> {
    let within = |net: Ipv4Addr, len: u8, ip: Ipv4Addr| {
        let mask = u32::MAX.checked_shl(32 - len as u32).unwrap_or(0);
        u32::from(net) & mask == u32::from(ip) & mask
    };
    if let Some((a, _)) = own.iter().find(|(a, len)| within(*a, *len, dst)) {
        return Some((dst, *a));
    }
    let gw = routes
        .iter()
        .filter(|r| !r.v6)
        .filter_map(|r| {
            let IpAddr::V4(via) = r.via? else { return None };
            match r.dest {
                None => Some((0, via)),
                Some((IpAddr::V4(net), len)) if within(net, len, dst) => Some((len, via)),
                _ => None,
            }
        })
        .max_by_key(|(len, _)| *len)?
        .1;
    let (src, _) = own.iter().find(|(a, len)| within(*a, *len, gw))?;
    Some((gw, *src))
}

/// A broadcast "who has `target`? tell `src`" frame.
fn arp_request(mac: EthernetAddress, src: Ipv4Addr, target: Ipv4Addr) -> Vec<u8> {
    let arp = ArpRepr::EthernetIpv4 {
        operation: ArpOperation::Request,
        source_hardware_addr: mac,
        source_protocol_addr: src,
        target_hardware_addr: EthernetAddress([0; 6]),
        target_protocol_addr: target,
    };
    let eth = EthernetRepr {
        src_addr: mac,
        dst_addr: EthernetAddress::BROADCAST,
        ethertype: EthernetProtocol::Arp,
    };
    let mut buf = vec![0u8; eth.buffer_len() + arp.buffer_len()];
    let mut frame = EthernetFrame::new_unchecked(&mut buf[..]);
    eth.emit(&mut frame);
    arp.emit(&mut ArpPacket::new_unchecked(frame.payload_mut()));
    buf
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_hops() {
        let own = [(Ipv4Addr::new(10, 0, 0, 1), 24)];
        let via = |g: [u8; 4]| Route {
            dest: None,
            via: Some(IpAddr::from(g)),
            dev: None,
            v6: false,
        };
        assert_eq!(
            next_hop(&own, &[], Ipv4Addr::new(10, 0, 0, 9)),
            Some(([10, 0, 0, 9].into(), own[0].0))
        );
        assert_eq!(next_hop(&own, &[], Ipv4Addr::new(10, 9, 0, 9)), None);
        let routes = [via([10, 0, 0, 254])];
        assert_eq!(
            next_hop(&own, &routes, Ipv4Addr::new(8, 8, 8, 8)),
            Some(([10, 0, 0, 254].into(), own[0].0))
        );
    }

    #[test]
    fn request_frame() {
        let f = arp_request(
            EthernetAddress([2, 0, 0, 0, 0, 1]),
            [10, 0, 0, 1].into(),
            [10, 0, 0, 2].into(),
        );
        let frame = EthernetFrame::new_checked(&f[..]).unwrap();
        assert_eq!(frame.ethertype(), EthernetProtocol::Arp);
        let arp = ArpRepr::parse(&ArpPacket::new_checked(frame.payload()).unwrap()).unwrap();
        assert!(
            matches!(arp, ArpRepr::EthernetIpv4 { operation: ArpOperation::Request, target_protocol_addr, .. } if target_protocol_addr == Ipv4Addr::new(10, 0, 0, 2))
        );
    }
}
