//! One stack: a smoltcp interface on its link, a loopback interface, their sockets, the
//! ports in use, and the configuration (addresses, routes, nameservers, DHCP).

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::AsRawFd;

use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::socket::dhcpv4;
use smoltcp::time::Instant;
use smoltcp::wire::{EthernetAddress, HardwareAddress, IpAddress, IpCidr, Ipv4Cidr, Ipv6Cidr};

use super::device::{LinkDevice, Loopback};
use super::sock::Sock;
use crate::bridge::{LINK, LO};
use crate::link::{self, Link, Medium};

/// A port in use and who holds it.
#[derive(Debug, Clone)]
pub struct Binding {
    /// None: every address.
    pub ip: Option<IpAddr>,
    pub sock: u64,
    pub v6only: bool,
    pub v6: bool,
    pub reuse: bool,
}

/// A command string stopped at `dhcp` until a lease comes.
#[derive(Debug)]
pub struct DhcpWait {
    /// The control connection that gets the reply.
    pub conn: usize,
    /// When it fails.
    pub deadline: Instant,
    /// The commands after `dhcp`.
    pub rest: String,
    /// What earlier commands printed.
    pub output: String,
}

/// Runs one interface: frames in one at a time (a listener whose socket a SYN took gets a
/// fresh one before the next frame, so a burst of SYNs finds room), then frames out.
/// Returns whether any socket may have changed.
fn poll_iface(
    iface: &mut Interface,
    now: Instant,
    dev: &mut impl smoltcp::phy::Device,
    sets: &mut [SocketSet<'static>; 2],
    set: usize,
    socks: &mut HashMap<u64, Sock>,
) -> bool {
    use smoltcp::iface::{PollIngressSingleResult, PollResult};
    let mut changed = false;
    iface.poll_maintenance(now);
    loop {
        match iface.poll_ingress_single(now, dev, &mut sets[set]) {
            PollIngressSingleResult::None => break,
            PollIngressSingleResult::PacketProcessed => {}
            PollIngressSingleResult::SocketStateChanged => changed = true,
        }
        if let Some(owner) = sets[set].take_last_reached() {
            super::ops::refill_listener(socks, sets, owner);
        }
    }
    while iface.poll_egress(now, dev, &mut sets[set]) == PollResult::SocketStateChanged {
        changed = true;
    }
    changed
}

/// One stack.
pub struct NetStack {
    pub id: u32,
    pub ifname: String,
    pub link: Option<Box<dyn Link>>,
    pub link_up: bool,
    pub mtu: usize,
    pub iface: Option<Interface>,
    pub lo_iface: Interface,
    pub lo: Loopback,
    pub sets: [SocketSet<'static>; 2],
    pub socks: HashMap<u64, Sock>,
    /// (is_tcp, port) → bindings.
    pub ports: HashMap<(bool, u16), Vec<Binding>>,
    /// Routes as configured (smoltcp holds the gateway ones).
    pub routes: Vec<crate::config::Route>,
    pub nameservers: Vec<IpAddr>,
    pub dhcp: Option<SocketHandle>,
    /// Control connections waiting for a DHCP lease, with their deadline.
    pub dhcp_waiters: Vec<DhcpWait>,
    /// Frames the link could not take yet.
    pub held: std::collections::VecDeque<Vec<u8>>,
    /// When the stack next needs a poll, if ever.
    pub next_poll: Option<Instant>,
    /// Neighbours the engine asked for itself (see `neighbor.rs`).
    pub asked: super::neighbor::Asked,
    /// Sockets to look at on the next pump: their pair had an event, a request touched them,
    /// or they moved bytes last time. Others are visited only when smoltcp touched them.
    pub dirty: Vec<u64>,
    /// The mio token of the link's fd, if it has one.
    pub link_token: Option<usize>,
    /// The link's fd may have frames (cleared by EAGAIN, set by epoll).
    pub link_rd: bool,
    /// The link's fd is registered for writability too (frames are held).
    pub link_wr: bool,
    /// Sockets with a connection attempt under way (their deadline needs watching).
    pub connecting: std::collections::BTreeSet<u64>,
    /// RSTs to send, orphans in FIN-WAIT-2, reset sockets (see `engine::ending`).
    pub endings: super::ending::Endings,
    /// The packet capture of the link's frames, when one is under way.
    pub capture: Option<super::capture::Capture>,
    rng: u64,
    next_sock: u32,
}

/// The stack a socket id belongs to: ids are `stack << 32 | n`.
pub fn stack_of_sock(sock: u64) -> u32 {
    (sock >> 32) as u32
}

fn mac_for(id: u32, seed: u64) -> [u8; 6] {
    let r = seed.to_le_bytes();
    // Locally administered, unicast.
    [
        0x02,
        r[0],
        r[1],
        (id >> 16) as u8,
        (id >> 8) as u8,
        id as u8,
    ]
}

impl NetStack {
    /// Creates a stack on the link `vnl` names; `wake` is how an in-process link wakes it.
    pub fn new(
        id: u32,
        vnl: &str,
        ifname: &str,
        wake: link::Wake,
        seed: u64,
        background: link::Background,
    ) -> io::Result<NetStack> {
        let now = Instant::now();
        let mut lo = Loopback::default();
        let mut lo_iface = Interface::new(Config::new(HardwareAddress::Ip), &mut lo, now);
        lo_iface.update_ip_addrs(|a| {
            let _ = a.push(IpCidr::new(IpAddress::v4(127, 0, 0, 1), 8));
            let _ = a.push(IpCidr::new(IpAddress::Ipv6(Ipv6Addr::LOCALHOST), 128));
        });
        let mut link = link::open(vnl, wake, background)?;
        let mut frame = Vec::new();
        let mut held = Default::default();
        // As Linux gives a new NIC: 1500 on Ethernet, the link's own size where it is smaller
        // (or larger, on mem:// whose members are all ours).
        let mtu = link.as_deref().map_or(1500, |l| match l.medium() {
            Medium::Ethernet => l.mtu() - 14,
            Medium::Ip => l.mtu(),
        });
        let iface = link.as_deref_mut().map(|l| {
            let hw = match l.medium() {
                Medium::Ethernet => HardwareAddress::Ethernet(EthernetAddress(mac_for(id, seed))),
                Medium::Ip => HardwareAddress::Ip,
            };
            let mut cfg = Config::new(hw);
            cfg.random_seed = seed ^ id as u64;
            Interface::new(
                cfg,
                &mut LinkDevice::new(l, &mut frame, &mut held, mtu, &mut true, None),
                now,
            )
        });
        Ok(NetStack {
            id,
            ifname: ifname.to_string(),
            link,
            link_up: false,
            mtu,
            iface,
            lo_iface,
            lo,
            sets: [SocketSet::new(vec![]), SocketSet::new(vec![])],
            socks: HashMap::new(),
            ports: HashMap::new(),
            routes: Vec::new(),
            nameservers: Vec::new(),
            dhcp: None,
            dhcp_waiters: Vec::new(),
            held,
            next_poll: None,
            asked: Default::default(),
            rng: seed | 1,
            next_sock: 0,
            dirty: Vec::new(),
            connecting: Default::default(),
            endings: Default::default(),
            capture: None,
            link_token: None,
            link_rd: true,
            link_wr: false,
        })
    }

    /// A new socket id, never used before in this stack.
    pub fn new_sock_id(&mut self) -> u64 {
        self.next_sock = self.next_sock.wrapping_add(1);
        (self.id as u64) << 32 | self.next_sock as u64
    }

    /// A pseudo-random number (xorshift) for ephemeral ports.
    pub fn random(&mut self) -> u64 {
        let mut x = self.rng;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng = x;
        x
    }

    /// The interface's MAC address; None on an IP-only link (where smoltcp has none to give
    /// and asking it panics) or without a link.
    pub fn mac(&self) -> Option<EthernetAddress> {
        let ethernet = self
            .link
            .as_deref()
            .is_some_and(|l| l.medium() == Medium::Ethernet);
        match self.iface.as_ref().filter(|_| ethernet)?.hardware_addr() {
            HardwareAddress::Ethernet(mac) => Some(mac),
            _ => None,
        }
    }

    /// The stack's own addresses on its link.
    pub fn link_addrs(&self) -> Vec<IpCidr> {
        self.iface
            .as_ref()
            .map(|i| i.ip_addrs().to_vec())
            .unwrap_or_default()
    }

    /// Whether `ip` is one of this stack's addresses (loopback included).
    pub fn is_local(&self, ip: IpAddr) -> bool {
        let ip = crate::sys::unmap(ip);
        ip.is_loopback()
            || self
                .iface
                .as_ref()
                .is_some_and(|i| i.has_ip_addr(IpAddress::from(ip)))
    }

    /// The socket set that traffic to `dst` goes through, or None when unreachable.
    pub fn route(&self, dst: IpAddr) -> Option<usize> {
        let dst = crate::sys::unmap(dst);
        if self.is_local(dst) {
            Some(LO)
        } else if self.iface.is_some() && self.link_up {
            Some(LINK)
        } else {
            None
        }
    }

    /// Keeps the loopback interface's copy of the link addresses in step.
    pub fn sync_lo_addrs(&mut self) {
        let own = self.link_addrs();
        if let Some(link) = self.link.as_deref_mut() {
            let ips: Vec<std::net::IpAddr> = own.iter().map(|c| c.address().into()).collect();
            link.set_addrs(&ips);
        }
        self.lo_iface.update_ip_addrs(|a| {
            a.clear();
            let _ = a.push(IpCidr::new(IpAddress::v4(127, 0, 0, 1), 8));
            let _ = a.push(IpCidr::new(IpAddress::Ipv6(Ipv6Addr::LOCALHOST), 128));
            for c in own {
                let host = match c.address() {
                    IpAddress::Ipv4(v4) => IpCidr::Ipv4(Ipv4Cidr::new(v4, 32)),
                    IpAddress::Ipv6(v6) => IpCidr::Ipv6(Ipv6Cidr::new(v6, 128)),
                };
                let _ = a.push(host);
            }
        });
    }

    /// Runs the interfaces once: link frames in and out, loopback packets until it is quiet.
    /// Returns whether any socket may have changed.
    pub fn poll_ifaces(&mut self, now: Instant) -> bool {
        let mut changed = false;
        if let (Some(iface), Some(link)) = (self.iface.as_mut(), self.link.as_deref_mut()) {
            let (held, sets, mtu, up) = (&mut self.held, &mut self.sets, self.mtu, self.link_up);
            let (rd, socks) = (&mut self.link_rd, &mut self.socks);
            let mut cap = self.capture.as_mut();
            super::device::with_buf(|buf| {
                if up {
                    // Held frames go first: smoltcp asks to transmit only when it has
                    // something new, and a link that has just opened has nothing else to say.
                    if !held.is_empty() {
                        super::device::flush(link, held);
                    }
                    let mut dev = LinkDevice::new(link, buf, held, mtu, rd, cap);
                    changed |= poll_iface(iface, now, &mut dev, sets, LINK, socks);
                } else {
                    // A down link drops what arrives, as a down NIC does.
                    if buf.len() < link.mtu() + 64 {
                        buf.resize(link.mtu() + 64, 0);
                    }
                    for _ in 0..1024 {
                        match link.recv(buf) {
                            Ok(n) => {
                                if let Some(c) = cap.as_deref_mut() {
                                    let note = Some("dropped: the interface is down");
                                    c.frame(super::capture::Dir::In, &buf[..n], note);
                                }
                            }
                            Err(_) => break,
                        }
                    }
                }
            });
            if self.capture.is_some() {
                self.flush_capture();
            }
        }
        for _ in 0..64 {
            let (lo, sets, socks) = (&mut self.lo, &mut self.sets, &mut self.socks);
            changed |= poll_iface(&mut self.lo_iface, now, lo, sets, LO, socks);
            if !self.lo.pending() {
                break;
            }
            changed = true;
        }
        changed
    }

    /// Starts capturing the link's frames into `file` (see `capture.rs`), in place of any
    /// capture under way; None stops capturing. The interface `dev` must be the link's.
    pub fn set_capture(&mut self, file: Option<std::fs::File>) -> io::Result<()> {
        if let Some(mut old) = self.capture.take() {
            let _ = old.flush();
        }
        let (Some(file), Some(link)) = (file, self.link.as_deref()) else {
            return Ok(());
        };
        let cap = super::capture::Capture::start(file, &self.ifname, link.medium())?;
        self.capture = Some(cap);
        Ok(())
    }

    /// Writes out the captured frames; a capture that cannot be written ends.
    fn flush_capture(&mut self) {
        if let Some(Err(e)) = self.capture.as_mut().map(|c| c.flush()) {
            tracing::warn!(stack = self.id, "packet capture stopped: {e}");
            self.capture = None;
        }
    }

    /// Watches the link's fds (under the stack's link token).
    pub fn watch_link(&mut self, registry: &mio::Registry) {
        let (Some(t), Some(link)) = (self.link_token, self.link.as_deref()) else {
            return;
        };
        for fd in [link.poll_fd(), link.hup_fd()].into_iter().flatten() {
            let fd = &mut mio::unix::SourceFd(&fd);
            if let Err(e) = registry.register(fd, mio::Token(t), mio::Interest::READABLE) {
                tracing::error!(stack = self.id, "cannot watch the link: {e}");
            }
        }
    }

    /// Lets a link that opens in the background, or again, move on; watches the fds it
    /// names from then on. `hup`: an event of the link's said a peer hung up.
    pub fn link_opened(&mut self, registry: &mio::Registry, hup: bool) {
        let Some(link) = self.link.as_deref_mut() else {
            return;
        };
        let Some(changed) = link.poll_open(hup) else {
            return;
        };
        for fd in &changed.was {
            let _ = registry.deregister(&mut mio::unix::SourceFd(fd));
        }
        drop(changed.left);
        self.link_wr = false;
        self.link_rd = true;
        let carrier = link.carrier();
        match changed.news {
            Some(news) if carrier => tracing::info!(stack = self.id, carrier, "link: {news}"),
            Some(news) => tracing::warn!(stack = self.id, carrier, "link: {news} (NO-CARRIER)"),
            None => tracing::debug!(stack = self.id, carrier, "link opened"),
        }
        self.watch_link(registry);
    }

    /// Asks epoll for the link's writability only while frames wait for room.
    pub fn link_interest(&mut self, registry: &mio::Registry) {
        let (Some(t), Some(fd)) = (
            self.link_token,
            self.link.as_ref().and_then(|l| l.poll_fd()),
        ) else {
            return;
        };
        let want = !self.held.is_empty();
        if want != self.link_wr {
            let interest = if want {
                mio::Interest::READABLE | mio::Interest::WRITABLE
            } else {
                mio::Interest::READABLE
            };
            let fd = &mut mio::unix::SourceFd(&fd);
            if registry.reregister(fd, mio::Token(t), interest).is_ok() {
                self.link_wr = want;
            }
        }
    }

    /// When the interfaces next want a poll.
    pub fn ifaces_poll_at(&mut self, now: Instant) -> Option<Instant> {
        let mut at = self.lo_iface.poll_at(now, &self.sets[LO]);
        if self.lo.pending() {
            at = Some(now);
        }
        // Frames on a delayed link wake the stack when they are due, up or down.
        if let Some(d) = self.link.as_deref().and_then(|l| l.due_in()) {
            let due =
                now + smoltcp::time::Duration::from_micros(d.as_nanos().div_ceil(1000) as u64);
            at = Some(at.map_or(due, |a| a.min(due)));
        }
        if let Some(iface) = self.iface.as_mut() {
            if self.link_up {
                let l = iface.poll_at(now, &self.sets[LINK]);
                at = match (at, l) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
            }
        }
        at
    }

    /// Applies DHCP events; returns whether the lease changed.
    pub fn poll_dhcp(&mut self) -> Option<bool> {
        let h = self.dhcp?;
        let ev = self.sets[LINK].get_mut::<dhcpv4::Socket>(h).poll();
        match ev {
            None => None,
            Some(dhcpv4::Event::Configured(cfg)) => {
                let addr = cfg.address;
                let router = cfg.router;
                let dns: Vec<IpAddr> = cfg.dns_servers.iter().map(|a| IpAddr::V4(*a)).collect();
                if let Some(iface) = self.iface.as_mut() {
                    iface.update_ip_addrs(|a| {
                        a.retain(|c| !matches!(c, IpCidr::Ipv4(_)));
                        let _ = a.push(IpCidr::Ipv4(addr));
                    });
                    if let Some(r) = router {
                        let _ = iface.routes_mut().add_default_ipv4_route(r);
                        self.routes
                            .retain(|r| !(r.dest.is_none() && r.via.is_some_and(|v| v.is_ipv4())));
                        self.routes.push(crate::config::Route {
                            dest: None,
                            via: Some(IpAddr::V4(r)),
                            dev: Some(self.ifname.clone()),
                            v6: false,
                        });
                    }
                }
                if !dns.is_empty() {
                    self.nameservers = dns;
                }
                self.sync_lo_addrs();
                Some(true)
            }
            Some(dhcpv4::Event::Deconfigured) => {
                if let Some(iface) = self.iface.as_mut() {
                    iface.update_ip_addrs(|a| a.retain(|c| !matches!(c, IpCidr::Ipv4(_))));
                    iface.routes_mut().remove_default_ipv4_route();
                }
                self.sync_lo_addrs();
                Some(false)
            }
        }
    }

    /// Picks a free ephemeral port for `tcp`.
    pub fn ephemeral_port(&mut self, tcp: bool) -> Option<u16> {
        for _ in 0..64 {
            let p = 32768 + (self.random() % 28232) as u16;
            if !self.ports.contains_key(&(tcp, p)) {
                return Some(p);
            }
        }
        (32768..=60999).find(|p| !self.ports.contains_key(&(tcp, *p)))
    }

    /// Reserves `port` for socket `b.sock`, or fails with EADDRINUSE.
    pub fn reserve(&mut self, tcp: bool, port: u16, b: Binding) -> Result<(), i32> {
        let list = self.ports.entry((tcp, port)).or_default();
        // A socket the application closed a moment ago may not be gone yet (its hang-up
        // event waits behind this request): close() frees a port at once, so it goes now.
        let socks = &mut self.socks;
        let dirty = &mut self.dirty;
        list.retain(|o| match socks.get_mut(&o.sock) {
            Some(s)
                if s.app_closed || crate::sys::hung_up(s.fd.as_raw_fd()) && s.hup_is_close() =>
            {
                s.app_closed = true;
                dirty.push(o.sock);
                false
            }
            _ => true,
        });
        for o in list.iter() {
            let overlap = match (o.ip, b.ip) {
                (None, None) => !(o.v6 != b.v6 && (o.v6only || b.v6only)),
                (None, Some(ip)) | (Some(ip), None) => {
                    let any_v6 = if o.ip.is_none() { o.v6 } else { b.v6 };
                    let only = if o.ip.is_none() { o.v6only } else { b.v6only };
                    ip.is_ipv6() == any_v6 || (any_v6 && !only)
                }
                (Some(a), Some(c)) => crate::sys::unmap(a) == crate::sys::unmap(c),
            };
            if overlap && !(o.reuse && b.reuse && !tcp) {
                return Err(libc::EADDRINUSE);
            }
        }
        list.push(b);
        Ok(())
    }

    /// Releases the port socket `sock` holds, bound at `local` (None: it never bound).
    pub fn release(&mut self, sock: u64, local: Option<(bool, u16)>) {
        let Some(key) = local else { return };
        if let Some(list) = self.ports.get_mut(&key) {
            list.retain(|b| b.sock != sock);
            if list.is_empty() {
                self.ports.remove(&key);
            }
        }
    }

    /// The IPv4 and IPv6 unspecified addresses.
    pub fn unspecified(v6: bool) -> IpAddr {
        if v6 {
            IpAddr::V6(Ipv6Addr::UNSPECIFIED)
        } else {
            IpAddr::V4(Ipv4Addr::UNSPECIFIED)
        }
    }

    /// A socket address as a socket of `domain` reports it.
    pub fn as_seen(domain: i32, a: SocketAddr) -> SocketAddr {
        if domain == libc::AF_INET6 {
            crate::bridge::udp::map_v6(a)
        } else {
            a
        }
    }
}
