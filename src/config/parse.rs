//! The parser: one command (no `;`) into a [`Command`], with ip's messages and statuses.

use std::net::IpAddr;

use super::{CmdError, Command, Family, LinkChange, Route};

type Result<T> = std::result::Result<T, CmdError>;

/// Parses one command: `ip ...` (any path to it, `/bin/ip`, `/sbin/ip`), `dhcp [DEV]`,
/// `nameserver ADDR...`, `capture [dev DEV] FILE|off`, or `ss -s`.
pub fn parse(cmd: &str) -> Result<Command> {
    let words: Vec<&str> = cmd.split_whitespace().collect();
    let Some((prog, args)) = words.split_first() else {
        return Ok(Command::Nop);
    };
    let name = prog.rsplit('/').next().unwrap_or(prog);
    match name {
        "ip" => ip(args),
        "dhcp" | "dhclient" | "udhcpc" => dhcp(args),
        "nameserver" | "dns" => nameservers(args),
        "capture" => super::capture::parse(cmd),
        "ss" if args == ["-s"] || args == ["--summary"] => Ok(Command::SocketSummary),
        "ss" => Err(CmdError::new(1, "vdestack: ss: only `ss -s` is supported")),
        _ => Err(CmdError::new(
            127,
            format!("vdestack: {prog}: command not found"),
        )),
    }
}

/// ip's way of matching a keyword: any prefix of it.
fn matches(word: &str, keyword: &str) -> bool {
    !word.is_empty() && keyword.starts_with(word)
}

fn usage(msg: impl Into<String>) -> CmdError {
    CmdError::new(255, msg)
}

fn garbage(word: &str) -> CmdError {
    usage(format!(
        "Error: either \"dev\" is duplicate, or \"{word}\" is a garbage."
    ))
}

fn ip(args: &[&str]) -> Result<Command> {
    let mut family = Family::Any;
    let mut args = args;
    while let Some((opt, rest)) = args.split_first() {
        if !opt.starts_with('-') {
            break;
        }
        args = rest;
        match opt.trim_start_matches('-') {
            "4" => family = Family::V4,
            "6" => family = Family::V6,
            "f" | "family" => {
                let (f, rest) = args
                    .split_first()
                    .ok_or_else(|| usage("Error: argument is missing after -f"))?;
                family = match *f {
                    "inet" | "ipv4" => Family::V4,
                    "inet6" | "ipv6" => Family::V6,
                    _ => {
                        return Err(usage(format!(
                            "Error: argument \"{f}\" is wrong: invalid address family"
                        )))
                    }
                };
                args = rest;
            }
            // Output-style options change nothing here.
            "s" | "stats" | "d" | "details" | "o" | "oneline" | "br" | "brief" | "c" | "color" => {}
            _ => {
                return Err(usage(format!(
                    "Option \"{opt}\" is unknown, try \"ip -help\"."
                )))
            }
        }
    }
    let Some((object, rest)) = args.split_first() else {
        return Err(usage("Usage: ip [ OPTIONS ] OBJECT { COMMAND | help }"));
    };
    if matches(object, "address") {
        addr(rest, family)
    } else if matches(object, "link") {
        link(rest)
    } else if matches(object, "route") {
        route(rest, family)
    } else {
        Err(usage(format!(
            "Object \"{object}\" is unknown, try \"ip help\"."
        )))
    }
}

fn is_show(word: &str) -> bool {
    matches(word, "show") || matches(word, "list") || word == "lst"
}

fn unknown_command(word: &str, object: &str) -> CmdError {
    usage(format!(
        "Command \"{word}\" is unknown, try \"ip {object} help\"."
    ))
}

fn link(args: &[&str]) -> Result<Command> {
    let Some((cmd, rest)) = args.split_first() else {
        return Ok(Command::LinkShow { dev: None });
    };
    if matches(cmd, "set") {
        link_set(rest)
    } else if is_show(cmd) {
        Ok(Command::LinkShow {
            dev: device_arg(rest)?,
        })
    } else if matches(cmd, "add") || matches(cmd, "delete") {
        Err(CmdError::rtnetlink("Operation not supported"))
    } else {
        Err(unknown_command(cmd, "link"))
    }
}

/// `[dev] NAME` as show commands take it.
fn device_arg(args: &[&str]) -> Result<Option<String>> {
    match args {
        [] => Ok(None),
        ["dev"] => Err(usage("Command line is not complete. Try option \"help\"")),
        ["dev", d] | [d] => Ok(Some(d.to_string())),
        [_, extra, ..] => Err(garbage(extra)),
    }
}

fn link_set(args: &[&str]) -> Result<Command> {
    let mut dev = None;
    let mut change = LinkChange::default();
    let mut it = args.iter().copied();
    while let Some(w) = it.next() {
        match w {
            "up" => change.up = Some(true),
            "down" => change.up = Some(false),
            "mtu" => {
                let v = value(&mut it, w)?;
                let mtu = v
                    .parse::<u32>()
                    .ok()
                    .filter(|m| *m >= 68)
                    .map(|m| m as usize);
                change.mtu = Some(mtu.ok_or_else(|| {
                    usage(format!(
                        "Error: argument \"{v}\" is wrong: Invalid \"mtu\" value"
                    ))
                })?);
            }
            "address" | "addr" => change.address = Some(mac(value(&mut it, w)?)?),
            "name" | "alias" | "netns" | "master" | "vrf" | "type" => {
                value(&mut it, w)?;
                return Err(CmdError::rtnetlink("Operation not supported"));
            }
            // Settings a user-space interface has no use for, taken as the kernel takes them.
            "arp" | "multicast" | "allmulticast" | "promisc" | "trailers" | "dynamic"
            | "txqueuelen" | "txqlen" | "qlen" | "group" => {
                value(&mut it, w)?;
            }
            "dev" => dev = Some(value(&mut it, w)?.to_string()),
            _ if dev.is_none() => dev = Some(w.to_string()),
            _ => return Err(garbage(w)),
        }
    }
    let dev = dev.ok_or_else(|| usage("Not enough information: \"dev\" argument is required."))?;
    Ok(Command::LinkSet { dev, change })
}

fn value<'a>(it: &mut impl Iterator<Item = &'a str>, keyword: &str) -> Result<&'a str> {
    it.next().ok_or_else(|| {
        usage(format!(
            "Command line is not complete. Try option \"help\" (after \"{keyword}\")"
        ))
    })
}

fn mac(s: &str) -> Result<[u8; 6]> {
    let bad = || CmdError::new(1, format!("\"{s}\" is invalid lladdr."));
    let parts: Vec<&str> = s.split(':').collect();
    if parts.len() != 6 {
        return Err(bad());
    }
    let mut out = [0u8; 6];
    for (o, p) in out.iter_mut().zip(parts) {
        if p.is_empty() || p.len() > 2 {
            return Err(bad());
        }
        *o = u8::from_str_radix(p, 16).map_err(|_| bad())?;
    }
    Ok(out)
}

/// An address with an optional `/len`, checked against the family.
fn prefix(s: &str, family: Family) -> Result<(IpAddr, Option<u8>)> {
    let kind = match family {
        Family::Any => "any valid",
        Family::V4 => "inet",
        Family::V6 => "inet6",
    };
    let bad = || {
        CmdError::new(
            1,
            format!("Error: {kind} prefix is expected rather than \"{s}\"."),
        )
    };
    let (a, len) = match s.split_once('/') {
        Some((a, l)) => (a, Some(l.parse::<u8>().map_err(|_| bad())?)),
        None => (s, None),
    };
    let ip: IpAddr = a.parse().map_err(|_| bad())?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    if len.is_some_and(|l| l > max) || !family.has(&ip) {
        return Err(bad());
    }
    Ok((ip, len))
}

fn full_len(ip: &IpAddr) -> u8 {
    if ip.is_ipv4() {
        32
    } else {
        128
    }
}

fn addr(args: &[&str], family: Family) -> Result<Command> {
    let Some((cmd, rest)) = args.split_first() else {
        return Ok(Command::AddrShow { dev: None, family });
    };
    let (add, del) = (
        matches(cmd, "add") || *cmd == "replace",
        matches(cmd, "delete"),
    );
    if is_show(cmd) {
        return Ok(Command::AddrShow {
            dev: device_arg(rest)?,
            family,
        });
    }
    if matches(cmd, "flush") {
        let dev = device_arg(rest)?.ok_or_else(|| usage("Flush requires arguments."))?;
        return Ok(Command::AddrFlush { dev, family });
    }
    if !add && !del {
        return Err(unknown_command(cmd, "address"));
    }
    let mut local = None;
    let mut dev = None;
    let mut it = rest.iter().copied();
    while let Some(w) = it.next() {
        match w {
            "dev" => dev = Some(value(&mut it, w)?.to_string()),
            "local" => local = Some(prefix(value(&mut it, w)?, family)?),
            "peer" | "remote" => {
                value(&mut it, w)?;
                return Err(CmdError::rtnetlink("Operation not supported"));
            }
            "broadcast" | "brd" | "anycast" | "label" | "scope" | "valid_lft" | "preferred_lft"
            | "metric" | "proto" => {
                value(&mut it, w)?;
            }
            "nodad" | "noprefixroute" | "home" | "mngtmpaddr" | "optimistic" | "autojoin" => {}
            _ if local.is_none() => local = Some(prefix(w, family)?),
            _ => return Err(garbage(w)),
        }
    }
    let dev = dev
        .ok_or_else(|| CmdError::new(1, "Not enough information: \"dev\" argument is required."))?;
    let (ip, len) = local.ok_or_else(|| {
        CmdError::new(1, "Not enough information: \"local\" argument is required.")
    })?;
    if add {
        Ok(Command::AddrAdd {
            dev,
            addr: ip,
            prefix: len.unwrap_or_else(|| full_len(&ip)),
        })
    } else {
        Ok(Command::AddrDel {
            dev,
            addr: ip,
            prefix: len,
        })
    }
}

fn route(args: &[&str], family: Family) -> Result<Command> {
    let Some((cmd, rest)) = args.split_first() else {
        return Ok(Command::RouteShow { family });
    };
    if is_show(cmd) {
        return Ok(Command::RouteShow { family });
    }
    let replace = *cmd == "replace" || matches(cmd, "change");
    let add = matches(cmd, "add") || matches(cmd, "append") || replace;
    let del = matches(cmd, "delete");
    if !add && !del {
        return Err(unknown_command(cmd, "route"));
    }
    let mut dest: Option<Option<(IpAddr, u8)>> = None;
    let mut via = None;
    let mut dev = None;
    let mut it = rest.iter().copied();
    while let Some(mut w) = it.next() {
        match w {
            "via" => {
                let mut g = value(&mut it, w)?;
                if g == "inet" || g == "inet6" {
                    g = value(&mut it, w)?;
                }
                via = Some(prefix(g, family)?.0);
            }
            "dev" | "oif" => dev = Some(value(&mut it, w)?.to_string()),
            "metric" | "preference" | "pref" | "proto" | "protocol" | "scope" | "src" | "table"
            | "mtu" | "advmss" | "realm" | "realms" | "initcwnd" | "initrwnd" | "hoplimit" => {
                value(&mut it, w)?;
            }
            "onlink" | "unicast" => {}
            _ if dest.is_none() => {
                if w == "to" {
                    w = value(&mut it, w)?;
                }
                dest = Some(if w == "default" || w == "all" {
                    None
                } else {
                    let (ip, len) = prefix(w, family)?;
                    let len = len.unwrap_or_else(|| full_len(&ip));
                    if len == 0 {
                        None
                    } else {
                        Some((ip, len))
                    }
                });
            }
            _ => return Err(garbage(w)),
        }
    }
    let dest = dest.ok_or_else(|| usage("Error: \"to\" argument is required."))?;
    let v6 = match (dest, via) {
        (Some((ip, _)), _) | (None, Some(ip)) => ip.is_ipv6(),
        (None, None) => family == Family::V6,
    };
    if let (Some((d, _)), Some(g)) = (dest, via) {
        if d.is_ipv6() != g.is_ipv6() {
            return Err(CmdError::new(
                2,
                "Error: Gateway and destination address families do not match.",
            ));
        }
    }
    if add && via.is_none() && dev.is_none() {
        return Err(CmdError::new(2, "Error: Device for nexthop is not up."));
    }
    let route = Route { dest, via, dev, v6 };
    Ok(if add {
        Command::RouteAdd { route, replace }
    } else {
        Command::RouteDel(route)
    })
}

fn dhcp(args: &[&str]) -> Result<Command> {
    let bad = || usage("usage: dhcp [-t SECONDS] [DEV]");
    let (mut dev, mut timeout) = (None, None);
    let mut it = args.iter().copied();
    while let Some(w) = it.next() {
        match w {
            "-t" | "--timeout" => {
                timeout = Some(it.next().and_then(|t| t.parse().ok()).ok_or_else(bad)?)
            }
            _ if w.starts_with('-') || dev.is_some() => return Err(bad()),
            _ => dev = Some(w.to_string()),
        }
    }
    Ok(Command::Dhcp { dev, timeout })
}

fn nameservers(args: &[&str]) -> Result<Command> {
    if args.is_empty() {
        return Err(usage("usage: nameserver ADDRESS..."));
    }
    let ips: std::result::Result<Vec<IpAddr>, _> =
        args.iter().map(|a| a.parse::<IpAddr>()).collect();
    ips.map(Command::Nameservers).map_err(|_| {
        CmdError::new(
            1,
            format!("nameserver: invalid address in \"{}\"", args.join(" ")),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::split;

    fn ok(s: &str) -> Command {
        parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn status(s: &str) -> i32 {
        parse(s).expect_err(s).status
    }

    #[test]
    fn libvdestack_man_page_strings() {
        let cmds = "/bin/ip link set vde0 up; /bin/ip addr add 10.0.0.1/24 dev vde0; /bin/ip route add default via 10.0.0.254";
        let parsed: Vec<Command> = split(cmds).map(ok).collect();
        assert_eq!(
            parsed[0],
            Command::LinkSet {
                dev: "vde0".into(),
                change: LinkChange {
                    up: Some(true),
                    ..Default::default()
                }
            }
        );
        assert_eq!(
            parsed[1],
            Command::AddrAdd {
                dev: "vde0".into(),
                addr: "10.0.0.1".parse().unwrap(),
                prefix: 24
            }
        );
        let via = Some("10.0.0.254".parse().unwrap());
        assert_eq!(
            parsed[2],
            Command::RouteAdd {
                route: Route {
                    dest: None,
                    via,
                    dev: None,
                    v6: false
                },
                replace: false
            }
        );
    }

    #[test]
    fn ipv6_with_flags() {
        assert_eq!(
            ok("ip -6 addr add fc00::1/64 dev vde0 nodad"),
            Command::AddrAdd {
                dev: "vde0".into(),
                addr: "fc00::1".parse().unwrap(),
                prefix: 64
            }
        );
        assert_eq!(status("ip -4 addr add fc00::1/64 dev vde0"), 1);
        assert_eq!(status("ip -6 addr add 10.0.0.1/24 dev vde0"), 1);
    }

    #[test]
    fn abbreviations_and_defaults() {
        assert_eq!(
            ok("ip a"),
            Command::AddrShow {
                dev: None,
                family: Family::Any
            }
        );
        assert_eq!(
            ok("ip -4 a s dev vde0"),
            Command::AddrShow {
                dev: Some("vde0".into()),
                family: Family::V4
            }
        );
        assert_eq!(
            ok("ip r"),
            Command::RouteShow {
                family: Family::Any
            }
        );
        assert_eq!(ok("ip l"), Command::LinkShow { dev: None });
        assert_eq!(
            ok("ip addr add 10.1.1.1 dev vde0"),
            Command::AddrAdd {
                dev: "vde0".into(),
                addr: "10.1.1.1".parse().unwrap(),
                prefix: 32
            }
        );
        assert_eq!(
            ok("ip link set dev vde0 mtu 9000 down").clone(),
            Command::LinkSet {
                dev: "vde0".into(),
                change: LinkChange {
                    up: Some(false),
                    mtu: Some(9000),
                    address: None
                }
            }
        );
    }

    #[test]
    fn link_address() {
        let Command::LinkSet { change, .. } = ok("ip link set vde0 address 02:00:00:aa:bb:cc")
        else {
            panic!()
        };
        assert_eq!(change.address, Some([2, 0, 0, 0xaa, 0xbb, 0xcc]));
        assert_eq!(status("ip link set vde0 address 02:00:00:aa:bb"), 1);
    }

    #[test]
    fn routes() {
        let r = ok("ip route add 192.168.0.0/16 via 10.0.0.2 dev vde0 metric 10");
        let want = Route {
            dest: Some(("192.168.0.0".parse().unwrap(), 16)),
            via: Some("10.0.0.2".parse().unwrap()),
            dev: Some("vde0".into()),
            v6: false,
        };
        assert_eq!(
            r,
            Command::RouteAdd {
                route: want,
                replace: false
            }
        );
        let Command::RouteAdd { route, .. } = ok("ip -6 route add default via fc00::fe") else {
            panic!()
        };
        assert!(route.v6 && route.dest.is_none());
        assert!(matches!(
            ok("ip route del default"),
            Command::RouteDel(Route { dest: None, .. })
        ));
        assert_eq!(status("ip route add 10.0.0.0/8 via fc00::1"), 2);
        assert_eq!(status("ip route add 10.0.0.0/8"), 2);
    }

    #[test]
    fn error_statuses() {
        assert_eq!(status("ifconfig vde0 up"), 127);
        assert_eq!(status("ip"), 255);
        assert_eq!(status("ip foo"), 255);
        assert_eq!(status("ip addr frob"), 255);
        assert_eq!(status("ip -x addr"), 255);
        assert_eq!(status("ip addr add 10.0.0.300/24 dev vde0"), 1);
        assert_eq!(status("ip addr add 10.0.0.1/33 dev vde0"), 1);
        assert_eq!(status("ip addr add 10.0.0.1/24"), 1);
        assert_eq!(status("ip link set vde0 mtu lots"), 255);
        assert_eq!(status("ip link set vde0 up extra"), 255);
        assert_eq!(status("ip link set vde0 name eth0"), 2);
        assert_eq!(status("nameserver not-an-ip"), 1);
        let e = parse("ip addr add 10.0.0.300/24 dev vde0").unwrap_err();
        assert_eq!(
            e.message,
            "Error: any valid prefix is expected rather than \"10.0.0.300/24\"."
        );
    }

    #[test]
    fn split_like_a_shell() {
        let v: Vec<&str> = split(" ip a ;\n\n ip r;# comment\n;").collect();
        assert_eq!(v, ["ip a", "ip r"]);
    }

    #[test]
    fn dhcp_and_nameservers() {
        assert_eq!(
            ok("dhcp"),
            Command::Dhcp {
                dev: None,
                timeout: None
            }
        );
        assert_eq!(
            ok("dhcp -t 3 vde0"),
            Command::Dhcp {
                dev: Some("vde0".into()),
                timeout: Some(3)
            }
        );
        assert_eq!(status("dhcp -x"), 255);
        assert_eq!(status("dhcp -t soon"), 255);
        assert_eq!(
            ok("nameserver 10.0.0.254 fc00::53"),
            Command::Nameservers(vec![
                "10.0.0.254".parse().unwrap(),
                "fc00::53".parse().unwrap()
            ])
        );
    }
}
