//! Name resolution through a stack: `/etc/hosts`, then DNS over the stack's own UDP to the
//! stack's nameservers (from `nameserver` or DHCP; the stack's own 127.0.0.1 when it has
//! none, as glibc falls back to the host's). Nothing goes through the host's resolver.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use simple_dns::rdata::RData;
use simple_dns::{Name, Packet, PacketFlag, Question, CLASS, QCLASS, QTYPE, RCODE, TYPE};

use crate::net::UdpSocket;
use crate::Stack;

/// Which addresses a lookup wants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Want {
    /// IPv4 and IPv6.
    Any,
    /// IPv4 only.
    V4,
    /// IPv6 only.
    V6,
}

impl Want {
    fn takes(self, ip: &IpAddr) -> bool {
        match self {
            Want::Any => true,
            Want::V4 => ip.is_ipv4(),
            Want::V6 => ip.is_ipv6(),
        }
    }
}

/// How long one query waits for its answer, and how many times it is sent per server.
const WAIT: Duration = Duration::from_millis(1500);
const TRIES: usize = 2;

/// The addresses of `name`: a numeric address as it is, then `/etc/hosts`, then DNS.
/// NotFound when the name does not exist (or has no address of the family wanted),
/// TimedOut when no nameserver answered.
pub fn lookup(stack: &Stack, name: &str, want: Want) -> io::Result<Vec<IpAddr>> {
    if let Ok(ip) = name.parse::<IpAddr>() {
        return Ok(vec![ip]).map(|v| v.into_iter().filter(|ip| want.takes(ip)).collect());
    }
    let from_hosts: Vec<IpAddr> = hosts_lookup(name)
        .into_iter()
        .filter(|ip| want.takes(ip))
        .collect();
    if !from_hosts.is_empty() {
        return Ok(from_hosts);
    }
    if name.eq_ignore_ascii_case("localhost") {
        return Ok([
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(std::net::Ipv6Addr::LOCALHOST),
        ]
        .into_iter()
        .filter(|ip| want.takes(ip))
        .collect());
    }
    let servers = servers_of(stack)?;
    let mut found = Vec::new();
    let mut missing = false;
    for ty in [TYPE::A, TYPE::AAAA] {
        if (ty == TYPE::A && want == Want::V6) || (ty == TYPE::AAAA && want == Want::V4) {
            continue;
        }
        match query(stack, &servers, name, ty) {
            Ok(v) => found.extend(v),
            Err(e) if e.kind() == io::ErrorKind::NotFound => missing = true,
            Err(e) => return Err(e),
        }
    }
    if found.is_empty() {
        let why = if missing {
            "no such name"
        } else {
            "no address"
        };
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("{name}: {why}"),
        ));
    }
    Ok(found)
}

/// The names `/etc/hosts` gives `ip`, first the canonical one.
pub fn hosts_names(ip: IpAddr) -> Vec<String> {
    hosts_entries()
        .into_iter()
        .find(|(a, _)| *a == ip)
        .map(|(_, n)| n)
        .unwrap_or_default()
}

fn hosts_lookup(name: &str) -> Vec<IpAddr> {
    hosts_entries()
        .into_iter()
        .filter(|(_, names)| names.iter().any(|n| n.eq_ignore_ascii_case(name)))
        .map(|(ip, _)| ip)
        .collect()
}

fn hosts_entries() -> Vec<(IpAddr, Vec<String>)> {
    let text = std::fs::read_to_string("/etc/hosts").unwrap_or_default();
    parse_hosts(&text)
}

fn parse_hosts(text: &str) -> Vec<(IpAddr, Vec<String>)> {
    text.lines()
        .filter_map(|line| {
            let line = line.split('#').next()?;
            let mut words = line.split_whitespace();
            let ip = words.next()?.parse().ok()?;
            let names: Vec<String> = words.map(str::to_string).collect();
            (!names.is_empty()).then_some((ip, names))
        })
        .collect()
}

/// Asks the servers in turn for `ty` records of `name`.
fn query(stack: &Stack, servers: &[IpAddr], name: &str, ty: TYPE) -> io::Result<Vec<IpAddr>> {
    let reply = exchange(stack, servers, name, ty.into(), CLASS::IN.into())?;
    answers(&reply, name, ty)
}

/// The addresses of type `ty` a nameserver's reply gives for `name`.
pub(crate) fn answers(reply: &[u8], name: &str, ty: TYPE) -> io::Result<Vec<IpAddr>> {
    let p = Packet::parse(reply)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "bad DNS reply"))?;
    match p.rcode() {
        RCODE::NoError => Ok(p
            .answers
            .iter()
            .filter_map(|rr| match (&rr.rdata, ty) {
                (RData::A(a), TYPE::A) => Some(IpAddr::V4(Ipv4Addr::from(a.address))),
                (RData::AAAA(a), TYPE::AAAA) => Some(IpAddr::V6(a.address.into())),
                _ => None,
            })
            .collect()),
        RCODE::NameError => Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("{name}: no such name"),
        )),
        rc => Err(io::Error::other(format!(
            "{name}: the nameserver answered {rc:?}"
        ))),
    }
}

/// Sends one query (any class and type, as res_query(3) asks) to the stack's nameservers in
/// turn and returns the first reply, raw.
pub fn raw_query(stack: &Stack, name: &str, class: u16, ty: u16) -> io::Result<Vec<u8>> {
    let bad = || {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("class {class} type {ty}"),
        )
    };
    let qclass = QCLASS::try_from(class).map_err(|_| bad())?;
    let qtype = QTYPE::try_from(ty).map_err(|_| bad())?;
    exchange(stack, &servers_of(stack)?, name, qtype, qclass)
}

/// The stack's nameservers, or its own 127.0.0.1 when it has none.
fn servers_of(stack: &Stack) -> io::Result<Vec<IpAddr>> {
    let mut servers = stack.nameservers()?;
    if servers.is_empty() {
        servers.push(IpAddr::V4(Ipv4Addr::LOCALHOST));
    }
    Ok(servers)
}

/// One query to the servers in turn, each tried `TRIES` times; the first reply, raw.
fn exchange(
    stack: &Stack,
    servers: &[IpAddr],
    name: &str,
    qtype: QTYPE,
    qclass: QCLASS,
) -> io::Result<Vec<u8>> {
    let bad_name = || io::Error::new(io::ErrorKind::NotFound, format!("{name}: not a valid name"));
    let id = query_id();
    let mut q = Packet::new_query(id);
    q.set_flags(PacketFlag::RECURSION_DESIRED);
    q.questions.push(Question::new(
        Name::new(name).map_err(|_| bad_name())?,
        qtype,
        qclass,
        false,
    ));
    let msg = q.build_bytes_vec().map_err(|_| bad_name())?;
    let mut last = io::Error::new(
        io::ErrorKind::TimedOut,
        format!("{name}: no nameserver answered"),
    );
    for server in servers {
        let any = SocketAddr::new(crate::bridge::udp::unspecified(server.is_ipv6()), 0);
        let sock = match UdpSocket::bind(stack, any) {
            Ok(s) => s,
            Err(e) => {
                last = e;
                continue;
            }
        };
        for _ in 0..TRIES {
            if let Err(e) = sock.send_to(&msg, SocketAddr::new(*server, 53)) {
                last = e;
                break;
            }
            if let Some(reply) = reply_to(&sock, id)? {
                return Ok(reply);
            }
        }
    }
    Err(last)
}

/// An unpredictable query id.
fn query_id() -> u16 {
    let mut b = [0u8; 2];
    // SAFETY: b is a valid 2-byte buffer.
    if unsafe { libc::getrandom(b.as_mut_ptr() as *mut _, 2, libc::GRND_NONBLOCK) } == 2 {
        return u16::from_ne_bytes(b);
    }
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    (t.subsec_nanos() ^ std::process::id()) as u16
}

/// Waits for the reply to query `id`: Some(reply), None on timeout.
fn reply_to(sock: &UdpSocket, id: u16) -> io::Result<Option<Vec<u8>>> {
    let deadline = Instant::now() + WAIT;
    let mut buf = vec![0u8; 65536];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero()
            || crate::sys::poll_one(sock.as_raw_fd(), libc::POLLIN, left.as_millis() as i32)? == 0
        {
            return Ok(None);
        }
        let (n, _) = sock.recv_from(&mut buf)?;
        // A late answer to an earlier try has another id.
        if n >= 12 && u16::from_be_bytes([buf[0], buf[1]]) == id {
            return Ok(Some(buf[..n].to_vec()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_file_lines() {
        let h = parse_hosts(
            "127.0.0.1 localhost\n# c\n10.0.0.1  web  www # x\n::1 ip6-localhost\nbad line\n",
        );
        assert_eq!(h.len(), 3);
        assert_eq!(
            h[1],
            (
                "10.0.0.1".parse().unwrap(),
                vec!["web".into(), "www".into()]
            )
        );
    }
}
