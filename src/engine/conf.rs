//! Applies configuration commands (see [`crate::config`]) to a stack.

use std::fmt::Write as _;
use std::net::IpAddr;
use std::os::fd::OwnedFd;

use smoltcp::iface::Route as SmolRoute;
use smoltcp::socket::dhcpv4;
use smoltcp::time::{Duration, Instant};
use smoltcp::wire::{EthernetAddress, HardwareAddress, IpAddress, IpCidr};

use super::sock::SockState;
use super::stack::{DhcpWait, NetStack};
use crate::bridge::{LINK, LO};
use crate::config::{self, CmdError, Command, Family, LinkChange, Route};
use crate::control::proto::Reply;
use crate::link::Medium;

/// How long `dhcp` waits for a lease before it fails, unless told.
const DHCP_TIMEOUT: u32 = 10;

/// Runs the command string `cmds` for control connection `conn`. None: a `dhcp` command is
/// waiting for its lease, and the reply (after the commands that follow it) comes later.
pub fn run(
    st: &mut NetStack,
    conn: usize,
    cmds: &str,
    now: Instant,
) -> Option<(Reply, Option<OwnedFd>)> {
    run_with(st, conn, cmds, String::new(), now).map(|r| (r, None))
}

/// Goes on with the commands after a `dhcp` whose lease came.
pub fn resume(st: &mut NetStack, w: DhcpWait, now: Instant) -> Option<Reply> {
    run_with(st, w.conn, &w.rest, w.output, now)
}

fn run_with(
    st: &mut NetStack,
    conn: usize,
    cmds: &str,
    mut output: String,
    now: Instant,
) -> Option<Reply> {
    let list: Vec<&str> = config::split(cmds).collect();
    for (i, c) in list.iter().enumerate() {
        let r = config::parse(c).and_then(|cmd| apply(st, cmd, &mut output));
        match r {
            Ok(None) => {}
            Ok(Some(secs)) => {
                let rest = list[i + 1..].join("\n");
                st.dhcp_waiters.push(DhcpWait {
                    conn,
                    deadline: now + Duration::from_secs(secs as u64),
                    rest,
                    output,
                });
                return None;
            }
            Err(e) => {
                return Some(Reply::Cmd {
                    status: e.status,
                    message: e.message,
                    output,
                })
            }
        }
    }
    Some(Reply::Cmd {
        status: 0,
        message: String::new(),
        output,
    })
}

/// Applies one command; Ok(Some(seconds)) when it waits that long at most for a DHCP lease.
fn apply(st: &mut NetStack, cmd: Command, out: &mut String) -> Result<Option<u32>, CmdError> {
    match cmd {
        Command::Nop => {}
        Command::LinkSet { dev, change } => link_set(st, &dev, change)?,
        Command::LinkShow { dev } => show(st, dev.as_deref(), None, out)?,
        Command::AddrShow { dev, family } => show(st, dev.as_deref(), Some(family), out)?,
        Command::AddrAdd { dev, addr, prefix } => addr_add(st, &dev, addr, prefix)?,
        Command::AddrDel { dev, addr, prefix } => addr_del(st, &dev, addr, prefix)?,
        Command::AddrFlush { dev, family } => {
            if dev != "lo" {
                check_dev(st, &dev)?;
                let iface = st.iface.as_mut().expect("checked");
                iface.update_ip_addrs(|a| a.retain(|c| !family.has(&IpAddr::from(c.address()))));
                st.sync_lo_addrs();
            }
        }
        Command::RouteAdd { route, replace } => route_add(st, route, replace)?,
        Command::RouteDel(route) => route_del(st, &route)?,
        Command::RouteShow { family } => route_show(st, family, out),
        Command::Dhcp { dev, timeout } => {
            let waiting = dhcp(st, dev.as_deref())?;
            return Ok(waiting.then_some(timeout.unwrap_or(DHCP_TIMEOUT)));
        }
        Command::Nameservers(v) => st.nameservers = v,
        Command::SocketSummary => summary(st, out),
        Command::Capture { dev, file } => capture(st, dev.as_deref(), file.as_deref())?,
    }
    Ok(None)
}

/// `capture [dev DEV] FILE|off`: the link's frames into FILE (created or truncated).
fn capture(st: &mut NetStack, dev: Option<&str>, file: Option<&str>) -> Result<(), CmdError> {
    let dev = dev.unwrap_or(&st.ifname).to_string();
    if dev == "lo" {
        return Err(CmdError::new(
            1,
            "capture: lo is not captured (only the link)",
        ));
    }
    check_dev(st, &dev)?;
    let f = match file {
        Some(path) => Some(
            std::fs::File::create(path)
                .map_err(|e| CmdError::new(1, format!("capture: {path}: {e}")))?,
        ),
        None => None,
    };
    st.set_capture(f)
        .map_err(|e| CmdError::new(1, format!("capture: {}: {e}", file.unwrap_or(""))))
}

/// The link device named `dev`, or ip's "Cannot find device".
fn check_dev(st: &NetStack, dev: &str) -> Result<(), CmdError> {
    if st.iface.is_some() && dev == st.ifname {
        Ok(())
    } else {
        Err(CmdError::no_device(dev))
    }
}

fn link_set(st: &mut NetStack, dev: &str, change: LinkChange) -> Result<(), CmdError> {
    if dev == "lo" {
        // The loopback is always up; taking it down is not something a stack of ours does.
        return match change.up {
            Some(false) => Err(CmdError::rtnetlink("Operation not permitted")),
            _ => Ok(()),
        };
    }
    check_dev(st, dev)?;
    let link = st.link.as_deref().expect("checked");
    let (medium, link_mtu) = (link.medium(), link.mtu());
    if let Some(mtu) = change.mtu {
        let header = if medium == Medium::Ethernet { 14 } else { 0 };
        if mtu + header > link_mtu {
            return Err(CmdError::new(
                2,
                format!(
                    "Error: mtu greater than device maximum ({}).",
                    link_mtu - header
                ),
            ));
        }
    }
    if let Some(mac) = change.address {
        if medium != Medium::Ethernet {
            return Err(CmdError::rtnetlink("Operation not supported"));
        }
        let mac = EthernetAddress(mac);
        if !mac.is_unicast() {
            return Err(CmdError::rtnetlink("Cannot assign requested address"));
        }
        st.iface
            .as_mut()
            .expect("checked")
            .set_hardware_addr(HardwareAddress::Ethernet(mac));
    }
    if let Some(mtu) = change.mtu {
        st.mtu = mtu;
    }
    if let Some(up) = change.up {
        st.link_up = up;
    }
    Ok(())
}

fn addr_add(st: &mut NetStack, dev: &str, addr: IpAddr, prefix: u8) -> Result<(), CmdError> {
    if dev == "lo" {
        return if addr.is_loopback() {
            Ok(())
        } else {
            Err(CmdError::rtnetlink("Operation not supported"))
        };
    }
    check_dev(st, dev)?;
    if let Some(e) = unassignable(addr) {
        return Err(e);
    }
    let iface = st.iface.as_mut().expect("checked");
    if iface
        .ip_addrs()
        .iter()
        .any(|c| IpAddr::from(c.address()) == addr)
    {
        return Err(CmdError::rtnetlink("File exists"));
    }
    let mut full = false;
    iface.update_ip_addrs(|a| full = a.push(IpCidr::new(IpAddress::from(addr), prefix)).is_err());
    if full {
        return Err(CmdError::rtnetlink("No space left on device"));
    }
    st.sync_lo_addrs();
    Ok(())
}

/// Why an interface cannot have `addr`, if it cannot. smoltcp takes unicast addresses only
/// (it panics on others, and keeps them: every later change panicked too). Linux refuses the
/// IPv6 ones too, with these messages; it takes IPv4 multicast and broadcast, we cannot.
fn unassignable(addr: IpAddr) -> Option<CmdError> {
    match addr {
        IpAddr::V6(a) if a.is_multicast() => Some(CmdError::new(
            2,
            "Error: ipv6: Cannot assign multicast address without \"IFA_F_MCAUTOJOIN\" flag.",
        )),
        IpAddr::V6(a) if a.is_unspecified() => {
            Some(CmdError::new(2, "Error: ipv6: Invalid address."))
        }
        IpAddr::V4(a) if a.is_multicast() || a.is_broadcast() => {
            Some(CmdError::rtnetlink("Cannot assign requested address"))
        }
        _ => None,
    }
}

fn addr_del(
    st: &mut NetStack,
    dev: &str,
    addr: IpAddr,
    prefix: Option<u8>,
) -> Result<(), CmdError> {
    check_dev(st, dev)?;
    let iface = st.iface.as_mut().expect("checked");
    let hit = |c: &IpCidr| {
        IpAddr::from(c.address()) == addr && prefix.is_none_or(|p| p == c.prefix_len())
    };
    if !iface.ip_addrs().iter().any(hit) {
        return Err(CmdError::rtnetlink("Cannot assign requested address"));
    }
    iface.update_ip_addrs(|a| a.retain(|c| !hit(c)));
    st.sync_lo_addrs();
    Ok(())
}

/// Whether `gw` is on a network the interface has an address in.
fn on_link(st: &NetStack, gw: IpAddr) -> bool {
    st.link_addrs()
        .iter()
        .any(|c| c.contains_addr(&IpAddress::from(gw)))
}

fn route_add(st: &mut NetStack, route: Route, replace: bool) -> Result<(), CmdError> {
    let dev = route.dev.clone().unwrap_or_else(|| st.ifname.clone());
    check_dev(st, &dev)?;
    let medium = st.link.as_deref().expect("checked").medium();
    if let Some(gw) = route.via {
        if medium == Medium::Ethernet && !on_link(st, gw) {
            return Err(CmdError::new(2, "Error: Nexthop has invalid gateway."));
        }
    }
    let existing = st
        .routes
        .iter()
        .position(|r| r.dest == route.dest && r.v6 == route.v6);
    if existing.is_some() && !replace {
        return Err(CmdError::rtnetlink("File exists"));
    }
    // smoltcp routes by gateway. On an IP-only link there is no neighbour to find, so a
    // device route goes "through" the destination itself; on Ethernet a device route
    // without a gateway is recorded but only on-link prefixes are reachable.
    let gw = route.via.or_else(|| {
        (medium == Medium::Ip).then(|| route.dest.map_or(unspecified(route.v6), |d| d.0))
    });
    if let Some(gw) = gw {
        let cidr = match route.dest {
            Some((ip, len)) => IpCidr::new(IpAddress::from(ip), len),
            None => IpCidr::new(IpAddress::from(unspecified(route.v6)), 0),
        };
        let mut full = false;
        let iface = st.iface.as_mut().expect("checked");
        iface.routes_mut().update(|t| {
            t.retain(|r| r.cidr != cidr);
            let r = SmolRoute {
                cidr,
                via_router: IpAddress::from(gw),
                preferred_until: None,
                expires_at: None,
            };
            full = t.push(r).is_err();
        });
        if full {
            return Err(CmdError::rtnetlink("No space left on device"));
        }
    }
    if let Some(i) = existing {
        st.routes.remove(i);
    }
    st.routes.push(Route {
        dev: Some(dev),
        ..route
    });
    Ok(())
}

fn unspecified(v6: bool) -> IpAddr {
    NetStack::unspecified(v6)
}

fn route_del(st: &mut NetStack, route: &Route) -> Result<(), CmdError> {
    let hit = |r: &Route| {
        r.dest == route.dest
            && r.v6 == route.v6
            && (route.via.is_none() || r.via == route.via)
            && (route.dev.is_none() || r.dev == route.dev)
    };
    let Some(i) = st.routes.iter().position(hit) else {
        return Err(CmdError::rtnetlink("No such process"));
    };
    let r = st.routes.remove(i);
    let cidr = match r.dest {
        Some((ip, len)) => IpCidr::new(IpAddress::from(ip), len),
        None => IpCidr::new(IpAddress::from(unspecified(r.v6)), 0),
    };
    if let Some(iface) = st.iface.as_mut() {
        iface.routes_mut().update(|t| t.retain(|x| x.cidr != cidr));
    }
    Ok(())
}

fn dhcp(st: &mut NetStack, dev: Option<&str>) -> Result<bool, CmdError> {
    let dev = dev.unwrap_or(&st.ifname).to_string();
    check_dev(st, &dev)?;
    if st.link.as_deref().expect("checked").medium() != Medium::Ethernet {
        return Err(CmdError::new(
            1,
            format!("dhcp: {dev} is not an Ethernet link"),
        ));
    }
    // As dhclient does, bring the link up.
    st.link_up = true;
    if st.dhcp.is_none() {
        let h = st.sets[LINK].add(dhcpv4::Socket::new());
        st.sets[LINK].set_owner(h, super::ops::NOT_A_SOCK);
        st.dhcp = Some(h);
    }
    let leased = st.link_addrs().iter().any(|c| matches!(c, IpCidr::Ipv4(_)));
    Ok(!leased)
}

/// `ip link show` (family None) and `ip addr show`.
fn show(
    st: &NetStack,
    dev: Option<&str>,
    family: Option<Family>,
    out: &mut String,
) -> Result<(), CmdError> {
    if let Some(d) = dev {
        if d != "lo" {
            check_dev(st, d)?;
        }
    }
    if dev.is_none_or(|d| d == "lo") {
        let _ = writeln!(out, "1: lo: <LOOPBACK,UP,LOWER_UP> mtu 65536 state UNKNOWN");
        let _ = writeln!(
            out,
            "    link/loopback 00:00:00:00:00:00 brd 00:00:00:00:00:00"
        );
        if let Some(f) = family {
            if f != Family::V6 {
                let _ = writeln!(out, "    inet 127.0.0.1/8 scope host lo");
            }
            if f != Family::V4 {
                let _ = writeln!(out, "    inet6 ::1/128 scope host");
            }
        }
    }
    let Some(iface) = st
        .iface
        .as_ref()
        .filter(|_| dev.is_none_or(|d| d == st.ifname))
    else {
        return Ok(());
    };
    // As Linux: an interface set up whose link has no carrier is <NO-CARRIER,...,UP> DOWN.
    let carrier = st.link.as_deref().is_none_or(|l| l.carrier());
    let (flags, up, state) = match (st.link_up, carrier) {
        (true, true) => ("", ",UP,LOWER_UP", "UP"),
        (true, false) => ("NO-CARRIER,", ",UP", "DOWN"),
        (false, _) => ("", "", "DOWN"),
    };
    match st.mac() {
        Some(mac) => {
            let _ = writeln!(
                out,
                "2: {}: <{flags}BROADCAST,MULTICAST{up}> mtu {} state {state}",
                st.ifname, st.mtu
            );
            let m = mac.0;
            let mac = format!(
                "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
                m[0], m[1], m[2], m[3], m[4], m[5]
            );
            let _ = writeln!(out, "    link/ether {mac} brd ff:ff:ff:ff:ff:ff");
        }
        None => {
            let _ = writeln!(
                out,
                "2: {}: <{flags}POINTOPOINT,MULTICAST,NOARP{up}> mtu {} state {state}",
                st.ifname, st.mtu
            );
            let _ = writeln!(out, "    link/none");
        }
    }
    if let Some(f) = family {
        for c in iface.ip_addrs() {
            let ip = IpAddr::from(c.address());
            if !f.has(&ip) {
                continue;
            }
            match ip {
                IpAddr::V4(_) => writeln!(out, "    inet {c} scope global {}", st.ifname),
                IpAddr::V6(v6) if v6.segments()[0] & 0xffc0 == 0xfe80 => {
                    writeln!(out, "    inet6 {c} scope link")
                }
                IpAddr::V6(_) => writeln!(out, "    inet6 {c} scope global"),
            }
            .ok();
        }
    }
    Ok(())
}

/// `ip route show`: the prefix routes of the addresses, then the configured ones.
fn route_show(st: &NetStack, family: Family, out: &mut String) {
    let v6 = family == Family::V6;
    for c in st.link_addrs() {
        let ip = IpAddr::from(c.address());
        if ip.is_ipv6() != v6 || c.prefix_len() == if v6 { 128 } else { 32 } {
            continue;
        }
        let net = network(ip, c.prefix_len());
        let dev = &st.ifname;
        let _ = if v6 {
            writeln!(out, "{net} dev {dev} proto kernel metric 256")
        } else {
            writeln!(out, "{net} dev {dev} proto kernel scope link src {ip}")
        };
    }
    for r in st.routes.iter().filter(|r| r.v6 == v6) {
        match r.dest {
            None => out.push_str("default"),
            Some((ip, len)) => {
                let _ = write!(out, "{}", network(ip, len));
            }
        }
        if let Some(gw) = r.via {
            let _ = write!(out, " via {gw}");
        }
        if let Some(dev) = &r.dev {
            let _ = write!(out, " dev {dev}");
        }
        out.push('\n');
    }
}

/// The network `ip/len` is in, as `a.b.c.0/len`.
fn network(ip: IpAddr, len: u8) -> IpCidr {
    match ip {
        IpAddr::V4(v4) => IpCidr::Ipv4(smoltcp::wire::Ipv4Cidr::new(v4, len).network()),
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & (u128::MAX.checked_shl(128 - len as u32).unwrap_or(0));
            IpCidr::new(IpAddress::Ipv6(bits.into()), len)
        }
    }
}

/// `ss -s`, as Linux prints its first lines, then a line of the engine's own tables for the
/// stack: smoltcp's socket slots (in use/allocated) per interface, its TCP index, listeners
/// and timers, the ports reserved, and the frames held for a full link.
fn summary(st: &NetStack, out: &mut String) {
    use smoltcp::socket::tcp::State;
    let (mut tcp, mut udp, mut estab, mut orphaned, mut timewait) = (0, 0, 0, 0, 0);
    let mut repair = smoltcp::socket::tcp::LossStats::default();
    for s in st.socks.values() {
        if !s.stream {
            udp += 1;
            continue;
        }
        tcp += 1;
        orphaned += s.app_closed as usize;
        if let SockState::Connected(c) = &s.state {
            let sock = st.sets[c.set].get::<smoltcp::socket::tcp::Socket>(c.handle);
            let l = sock.loss_stats();
            repair.timeouts += l.timeouts;
            repair.retransmits += l.retransmits;
            repair.recoveries += l.recoveries;
            repair.probes += l.probes;
            repair.dsacks += l.dsacks;
            match sock.state() {
                State::Established => estab += 1,
                State::TimeWait => timewait += 1,
                _ => {}
            }
        }
    }
    let [link, lo] = [&st.sets[LINK], &st.sets[LO]].map(|s| s.sizes());
    let _ = writeln!(out, "Total: {}", st.socks.len());
    let _ = writeln!(
        out,
        "TCP:   {tcp} (estab {estab}, closed 0, orphaned {orphaned}, timewait {timewait})"
    );
    let _ = writeln!(out, "UDP:   {udp}");
    // How the open connections repaired losses (SACK recovery, probes, or timeouts).
    let _ = writeln!(
        out,
        "TCP loss repair: timeouts {}, retransmits {}, recoveries {}, probes {}, dsacks {}",
        repair.timeouts, repair.retransmits, repair.recoveries, repair.probes, repair.dsacks
    );
    let _ = writeln!(
        out,
        "vdestack: slots {}/{} lo {}/{}, index {}, listeners {}, timers {}, ports {}, held {}, \
         endings {}",
        link.sockets,
        link.slots,
        lo.sockets,
        lo.slots,
        link.index + lo.index,
        link.listeners + lo.listeners,
        link.timers + lo.timers,
        st.ports.len(),
        st.held.len(),
        st.endings.waiting()
    );
}
