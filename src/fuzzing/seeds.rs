//! Seed inputs for the fuzz targets: valid frames addressed to a lab's stack and its
//! sockets, valid requests, commands, DNS replies and switch answers, for the fuzzer to start
//! from (fuzz/gen_seeds.rs writes them to fuzz/corpus/).

use std::net::{IpAddr, SocketAddr};

use super::wire::{self, *};
use super::{Lab, Medium, PEER_PORT};
use crate::control::proto::Request;

/// A frame record of a frames input.
fn frame(f: &[u8]) -> Vec<u8> {
    let mut r = vec![0];
    r.extend_from_slice(&(f.len() as u16).to_le_bytes());
    r.extend_from_slice(f);
    r
}

/// An application record of a frames input.
fn app(op: u8, which: u8, bytes: &[u8]) -> Vec<u8> {
    let mut r = vec![0x80 | op, which];
    r.extend_from_slice(&(bytes.len() as u16).to_le_bytes());
    r.extend_from_slice(bytes);
    r
}

/// A DHCP server's answers to the Ethernet lab's client (flags bit 1): an offer, then the
/// ack to the request it brings (whose transaction id a lab run with the offer gives), then
/// data on the connection, which works again once the address is back.
fn dhcp() -> Vec<(String, Vec<u8>)> {
    use super::DhcpMessageType::{Ack, Offer};
    let mut lab = Lab::new(Medium::Ethernet, true);
    lab.start_dhcp();
    let xid = lab.dhcp_xid.expect("the lab's client sent a discover");
    let offer = lab.dhcp_server(Offer, xid);
    lab.inject(&offer);
    let sent: Vec<Vec<u8>> = lab.wire.borrow().tx.iter().cloned().collect();
    let xid = wire::dhcp_xid(&sent).expect("the client's request");
    let ack = lab.dhcp_server(Ack, xid);
    let (s4, p4): (IpAddr, IpAddr) = (STACK_V4.into(), PEER_V4.into());
    let (seq, pseq) = lab.seq;
    let data = tcp(
        p4,
        s4,
        (PEER_PORT, lab.port),
        pseq,
        seq,
        PSH | ACK,
        &[],
        b"hello",
    );
    let data = lab.packet(p4, s4, P_TCP, &data);
    lab.end();
    let input = |recs: &[Vec<u8>]| [vec![3], recs.concat()].concat();
    vec![
        ("eth_dhcp_offer".into(), input(&[frame(&offer)])),
        (
            "eth_dhcp_lease".into(),
            input(&[frame(&offer), frame(&ack), frame(&data), app(1, 3, &[])]),
        ),
    ]
}

/// Frames a lab's stack should take in: what each does is named.
fn frames(medium: Medium) -> Vec<(String, Vec<u8>)> {
    let lab = Lab::new(medium, true);
    let (s4, p4): (IpAddr, IpAddr) = (STACK_V4.into(), PEER_V4.into());
    let (s6, p6): (IpAddr, IpAddr) = (STACK_V6.into(), PEER_V6.into());
    let (seq, pseq) = lab.seq;
    let conn = (PEER_PORT, lab.port);
    let pkt = |src, dst, proto, payload: &[u8]| lab.packet(src, dst, proto, payload);
    let syn_opts = [
        2, 4, 5, 0xb4, 1, 3, 3, 7, 4, 2, 8, 10, 0, 0, 0, 1, 0, 0, 0, 0,
    ];
    let mut out: Vec<(&str, Vec<Vec<u8>>)> = vec![
        (
            "tcp_data",
            vec![frame(&pkt(
                p4,
                s4,
                P_TCP,
                &tcp(p4, s4, conn, pseq, seq, PSH | ACK, &[], b"hello"),
            ))],
        ),
        (
            "tcp_data_then_read",
            vec![
                frame(&pkt(
                    p4,
                    s4,
                    P_TCP,
                    &tcp(p4, s4, conn, pseq, seq, PSH | ACK, &[], b"hello"),
                )),
                app(1, 0, &[]),
            ],
        ),
        (
            "tcp_fin",
            vec![frame(&pkt(
                p4,
                s4,
                P_TCP,
                &tcp(p4, s4, conn, pseq, seq, FIN | ACK, &[], &[]),
            ))],
        ),
        (
            "tcp_rst",
            vec![frame(&pkt(
                p4,
                s4,
                P_TCP,
                &tcp(p4, s4, conn, pseq, seq, RST | ACK, &[], &[]),
            ))],
        ),
        (
            "app_write_then_ack",
            vec![
                app(0, 3, b"from the application"),
                frame(&pkt(
                    p4,
                    s4,
                    P_TCP,
                    &tcp(p4, s4, conn, pseq, seq.wrapping_add(20), ACK, &[], &[]),
                )),
            ],
        ),
        (
            "app_close_then_fin",
            vec![
                app(3, 3, &[]),
                frame(&pkt(
                    p4,
                    s4,
                    P_TCP,
                    &tcp(p4, s4, conn, pseq, seq.wrapping_add(1), FIN | ACK, &[], &[]),
                )),
            ],
        ),
        ("app_shutdown", vec![app(2, 3, &[])]),
        (
            "syn_v4",
            vec![
                frame(&pkt(
                    p4,
                    s4,
                    P_TCP,
                    &tcp(p4, s4, (5000, 80), 7, 0, SYN, &syn_opts, &[]),
                )),
                app(1, 0, &[]),
            ],
        ),
        (
            "syn_v6",
            vec![frame(&pkt(
                p6,
                s6,
                P_TCP,
                &tcp(p6, s6, (5000, 80), 7, 0, SYN, &syn_opts, &[]),
            ))],
        ),
        (
            "syn_closed_port",
            vec![frame(&pkt(
                p4,
                s4,
                P_TCP,
                &tcp(p4, s4, (5000, 81), 7, 0, SYN, &[], &[]),
            ))],
        ),
        (
            "udp_v4",
            vec![
                frame(&pkt(p4, s4, P_UDP, &udp(p4, s4, (999, 53), b"a datagram"))),
                app(1, 1, &[]),
            ],
        ),
        (
            "udp_v6",
            vec![frame(&pkt(
                p6,
                s6,
                P_UDP,
                &udp(p6, s6, (999, 5353), b"a datagram"),
            ))],
        ),
        (
            "udp_closed_port",
            vec![frame(&pkt(p4, s4, P_UDP, &udp(p4, s4, (999, 54), b"x")))],
        ),
        ("udp_app_send", {
            let mut d = crate::bridge::udp::header(&SocketAddr::new(p4, 999)).to_vec();
            d.extend_from_slice(b"from the application");
            vec![app(0, 1, &d)]
        }),
        (
            "icmp_echo",
            vec![frame(&pkt(
                p4,
                s4,
                P_ICMP,
                &icmpv4(8, 0, &[0, 1, 0, 1, b'p', b'i', b'n', b'g']),
            ))],
        ),
        (
            "icmp_unreachable",
            vec![{
                let inner = ip(
                    s4,
                    p4,
                    P_TCP,
                    &tcp(s4, p4, (lab.port, PEER_PORT), seq, pseq, ACK, &[], &[]),
                );
                let mut rest = vec![0, 0, 0, 0];
                rest.extend_from_slice(&inner[..28]);
                frame(&pkt(p4, s4, P_ICMP, &icmpv4(3, 3, &rest)))
            }],
        ),
        (
            "icmpv6_echo",
            vec![frame(&pkt(
                p6,
                s6,
                P_ICMPV6,
                &icmpv6(PEER_V6, STACK_V6, 128, 0, &[0, 1, 0, 1, b'p']),
            ))],
        ),
        (
            "ipv4_fragment",
            vec![{
                let u = udp(p4, s4, (999, 53), &[b'f'; 24]);
                let first = ipv4_frag(PEER_V4, STACK_V4, P_UDP, 0x2000, &u[..16]);
                let second = ipv4_frag(PEER_V4, STACK_V4, P_UDP, 2, &u[16..]);
                let mut r = frame(&lab.link_frame(&first));
                r.extend(frame(&lab.link_frame(&second)));
                r
            }],
        ),
    ];
    if lab.ethernet {
        let bcast = [0xff; 6];
        out.push((
            "arp_request",
            vec![frame(&eth(
                bcast,
                PEER_MAC,
                ETH_ARP,
                &arp(1, PEER_MAC, PEER_V4, [0; 6], STACK_V4),
            ))],
        ));
        out.push((
            "arp_reply",
            vec![frame(&eth(
                lab.mac,
                PEER_MAC,
                ETH_ARP,
                &arp(2, PEER_MAC, PEER_V4, lab.mac, STACK_V4),
            ))],
        ));
        // A neighbor solicitation for fc00::1, with the peer's link-layer address.
        let mut ns = vec![0, 0, 0, 0];
        ns.extend_from_slice(&STACK_V6.octets());
        ns.extend_from_slice(&[1, 1]);
        ns.extend_from_slice(&PEER_MAC);
        out.push((
            "ndp_solicit",
            vec![frame(&pkt(
                p6,
                s6,
                P_ICMPV6,
                &icmpv6(PEER_V6, STACK_V6, 135, 0, &ns),
            ))],
        ));
    }
    let name = if lab.ethernet { "eth" } else { "ip" };
    drop(lab);
    super::engine::reset();
    out.into_iter()
        .flat_map(|(n, recs)| {
            let recs = recs.concat();
            let checked: Vec<u8> = [1].into_iter().chain(recs.iter().copied()).collect();
            let unchecked: Vec<u8> = [0].into_iter().chain(recs).collect();
            [
                (format!("{name}_{n}"), checked),
                (format!("{name}_{n}_nocsum"), unchecked),
            ]
        })
        .collect()
}

impl Lab {
    /// An IP packet (already built) framed for the link.
    fn link_frame(&self, p: &[u8]) -> Vec<u8> {
        if !self.ethernet {
            return p.to_vec();
        }
        let ty = if p.first().is_some_and(|b| b >> 4 == 6) {
            ETH_IPV6
        } else {
            ETH_IPV4
        };
        wire::eth(self.mac, PEER_MAC, ty, p)
    }
}

fn control() -> Vec<(String, Vec<u8>)> {
    let sock = |n: u64| 1u64 << 32 | n;
    let v4 = |p| SocketAddr::new(PEER_V4.into(), p);
    let reqs: Vec<(&str, Vec<Request>)> = vec![
        (
            "socket_bind_listen",
            vec![
                Request::Socket {
                    stack: 1,
                    domain: libc::AF_INET,
                    ty: libc::SOCK_STREAM,
                    protocol: 0,
                },
                Request::Bind {
                    sock: sock(5),
                    addr: SocketAddr::new(STACK_V4.into(), 8080),
                },
                Request::Listen {
                    sock: sock(5),
                    backlog: 4,
                },
                Request::Name {
                    sock: sock(5),
                    peer: false,
                },
            ],
        ),
        (
            "socket_connect_wait",
            vec![
                Request::Socket {
                    stack: 1,
                    domain: libc::AF_INET6,
                    ty: libc::SOCK_STREAM,
                    protocol: 0,
                },
                Request::Connect {
                    sock: sock(5),
                    addr: SocketAddr::new(PEER_V6.into(), 22),
                    wait: true,
                    pad: 0,
                },
                Request::GetOpt {
                    sock: sock(5),
                    level: libc::SOL_SOCKET,
                    name: libc::SO_ERROR,
                },
            ],
        ),
        (
            "udp_connect",
            vec![
                Request::Socket {
                    stack: 1,
                    domain: libc::AF_INET,
                    ty: libc::SOCK_DGRAM,
                    protocol: 0,
                },
                Request::Connect {
                    sock: sock(5),
                    addr: v4(53),
                    wait: false,
                    pad: 0,
                },
                Request::Shutdown {
                    sock: sock(5),
                    how: libc::SHUT_RDWR,
                },
            ],
        ),
        (
            "names_opts",
            vec![
                Request::Name {
                    sock: sock(4),
                    peer: true,
                },
                Request::SetOpt {
                    sock: sock(4),
                    level: libc::IPPROTO_TCP,
                    name: libc::TCP_NODELAY,
                    value: 1,
                },
                Request::SetOpt {
                    sock: sock(1),
                    level: libc::SOL_SOCKET,
                    name: libc::SO_KEEPALIVE,
                    value: 1,
                },
                Request::GetOpt {
                    sock: sock(3),
                    level: libc::IPPROTO_IPV6,
                    name: libc::IPV6_V6ONLY,
                },
                Request::Padded {
                    sock: sock(4),
                    bytes: 0,
                },
            ],
        ),
        (
            "stack_requests",
            vec![
                Request::Nameservers { stack: 1 },
                Request::Pending { stack: 1 },
                Request::Cmd {
                    stack: 1,
                    cmds: "nameserver 10.0.0.53; ip addr show".into(),
                },
                Request::AddStack {
                    vnl: "mem://fuzz".into(),
                    ifname: "eth1".into(),
                },
                Request::Cmd {
                    stack: 2,
                    cmds: "ip link set eth1 up; ip addr add 10.0.0.3/24 dev eth1".into(),
                },
                Request::DelStack { stack: 2 },
                Request::AddStack {
                    vnl: String::new(),
                    ifname: String::new(),
                },
                Request::DelStack { stack: 1 },
            ],
        ),
        (
            "connect_nonblocking_pad",
            vec![
                Request::Socket {
                    stack: 1,
                    domain: libc::AF_INET,
                    ty: libc::SOCK_STREAM,
                    protocol: 0,
                },
                Request::Connect {
                    sock: sock(5),
                    addr: v4(80),
                    wait: false,
                    pad: 4096,
                },
                Request::Padded {
                    sock: sock(5),
                    bytes: 100,
                },
            ],
        ),
    ];
    // Flags 1: a hello with the key first; 2: one without (requests get EACCES); 0: none
    // (the engine closes the connection).
    let unkeyed = [
        ("no_key", 2, reqs[0].1.clone()),
        ("no_hello", 0, reqs[0].1.clone()),
    ];
    let keyed = reqs.into_iter().map(|(n, rs)| (n, 1, rs));
    keyed
        .chain(unkeyed)
        .map(|(n, flags, rs)| {
            let mut d = vec![flags];
            for r in rs {
                let m = r.encode();
                d.extend_from_slice(&(m.len() as u16).to_le_bytes());
                d.extend(m);
            }
            (n.to_string(), d)
        })
        .collect()
}

fn stackcmd() -> Vec<(String, Vec<u8>)> {
    let cmds: &[(&str, u8, &str)] = &[
        ("setup", 0, "ip link set vde0 up; ip addr add 10.0.0.1/24 dev vde0; ip route add default via 10.0.0.254"),
        ("v6", 0, "ip link set vde0 up\nip -6 addr add fc00::1/64 dev vde0\nip -6 route add default via fc00::fe dev vde0"),
        ("link", 0, "ip link set dev vde0 mtu 1400 address 02:00:00:00:00:09 up; ip link show vde0"),
        ("routes", 0, "ip addr add 10.1.0.1/16 dev vde0; ip route add 192.168.0.0/24 via 10.1.0.254; ip route replace default via 10.1.0.9; ip route del 192.168.0.0/24; ip -4 route show"),
        ("delete", 0, "ip addr add 10.0.0.1/24 dev vde0; ip addr del 10.0.0.1/24 dev vde0; ip addr flush dev vde0; ip -6 addr show dev vde0"),
        ("dhcp", 0, "ip link set vde0 up; dhcp -t 1 vde0; ip addr show"),
        ("nameserver", 2, "nameserver 10.0.0.53 fc00::53; dns 1.1.1.1"),
        ("tun", 1, "ip link set vde0 up; ip addr add 10.0.0.1/32 dev vde0; ip route add default dev vde0"),
        ("lo", 2, "ip addr show; ip link set lo up; # a comment\n ip r"),
        ("bad", 0, "ip addr add 10.0.0.300/24 dev vde0; ip link set nosuch up; foo"),
    ];
    cmds.iter()
        .map(|(n, k, c)| (n.to_string(), [*k].into_iter().chain(c.bytes()).collect()))
        .collect()
}

fn dns() -> Vec<(String, Vec<u8>)> {
    use simple_dns::rdata::{RData, A, AAAA, CNAME};
    use simple_dns::{Name, Packet, PacketFlag, Question, ResourceRecord, CLASS, RCODE, TYPE};
    let name = Name::new_unchecked("example.com");
    let mut answers = Packet::new_reply(7);
    answers.set_flags(PacketFlag::RECURSION_DESIRED | PacketFlag::RECURSION_AVAILABLE);
    answers.questions.push(Question::new(
        name.clone(),
        TYPE::A.into(),
        CLASS::IN.into(),
        false,
    ));
    let alias = Name::new_unchecked("www.example.com");
    answers.answers.push(ResourceRecord::new(
        name.clone(),
        CLASS::IN,
        300,
        RData::CNAME(CNAME(alias.clone())),
    ));
    answers.answers.push(ResourceRecord::new(
        alias.clone(),
        CLASS::IN,
        300,
        RData::A(A {
            address: 0x0a00_0001,
        }),
    ));
    answers.answers.push(ResourceRecord::new(
        alias,
        CLASS::IN,
        300,
        RData::AAAA(AAAA {
            address: 0xfc00 << 112 | 1,
        }),
    ));
    let mut nx = Packet::new_reply(8);
    *nx.rcode_mut() = RCODE::NameError;
    nx.questions.push(Question::new(
        name,
        TYPE::AAAA.into(),
        CLASS::IN.into(),
        false,
    ));
    let bytes = |p: Packet| p.build_bytes_vec_compressed().expect("a packet");
    vec![
        ("answers".to_string(), bytes(answers)),
        ("nxdomain".to_string(), bytes(nx)),
    ]
}

fn switch() -> Vec<(String, Vec<u8>)> {
    let answer = |path: &[u8], family: u16| {
        let mut a = family.to_ne_bytes().to_vec();
        a.extend_from_slice(path);
        a.resize(110, 0);
        a
    };
    vec![
        (
            "port".to_string(),
            answer(b"/tmp/vde.ctl/.01234-00000", libc::AF_UNIX as u16),
        ),
        (
            "no_such_port".to_string(),
            answer(b"/nonexistent/port", libc::AF_UNIX as u16),
        ),
        ("inet".to_string(), answer(b"x", libc::AF_INET as u16)),
        ("short".to_string(), vec![1]),
    ]
}

/// The seeds of target `name`: (file name, input).
pub fn seeds(name: &str) -> Vec<(String, Vec<u8>)> {
    match name {
        "frames_eth" => [frames(Medium::Ethernet), dhcp()].concat(),
        "frames_ip" => frames(Medium::Ip),
        "control" => control(),
        "stackcmd" => stackcmd(),
        "dns" => dns(),
        "switch" => switch(),
        _ => Vec::new(),
    }
}
