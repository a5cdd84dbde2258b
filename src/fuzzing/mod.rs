//! Entry points for the fuzz targets in `fuzz/` (cargo-fuzz), and for the test that replays
//! the inputs that once crashed one (tests/fuzz_regressions.rs). Hidden, behind the
//! `fuzzing` feature. Each feeds what an outsider controls into the crate's own code: frames
//! into a stack, control requests into the engine, `vde_stackcmd` strings, DNS replies and a
//! switch's answer.

mod seeds;
pub mod wire;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsRawFd, OwnedFd};

use crate::engine::fuzz::{self as engine};
pub use crate::engine::fuzz::{Wire, WireRef};
pub use crate::link::Medium;
pub use seeds::seeds;
pub use smoltcp::wire::DhcpMessageType;

use crate::control::proto::{Reply, Request};
use crate::sys;

/// The targets, by name (as in `fuzz/fuzz_targets/` and `fuzz/regressions/`).
pub const TARGETS: &[&str] = &[
    "frames_eth",
    "frames_ip",
    "control",
    "stackcmd",
    "dns",
    "switch",
];

/// Runs `data` through target `name`'s entry point; false if there is no such target.
pub fn run(name: &str, data: &[u8]) -> bool {
    match name {
        "frames_eth" => frames(Medium::Ethernet, data),
        "frames_ip" => frames(Medium::Ip, data),
        "control" => control(data),
        "stackcmd" => stackcmd(data),
        "dns" => dns(data),
        "switch" => switch(data),
        _ => return false,
    }
    true
}

/// The configuration of a lab's stack.
const SETUP: &str = "ip link set vde0 up; ip addr add 10.0.0.1/24 dev vde0; \
    ip addr add fc00::1/64 dev vde0; ip route add default via 10.0.0.254";
/// The peer's initial sequence number on the connected socket.
const PEER_ISN: u32 = 0x1000_0000;
/// Where the connected socket is connected.
pub const PEER_PORT: u16 = 4000;
/// Socket buffers (small: a lab is made for every input).
const BUF: i32 = 4096;
/// What a lab keeps of what its applications read.
const READ_KEPT: usize = 1 << 16;
/// At most this many application ends (accepted connections add to them).
const APPS_MAX: usize = 16;

/// A stack on a fuzz link, with sockets for frames to reach: a TCP listener on port 80
/// (IPv6, taking IPv4 too), UDP sockets on 0.0.0.0:53 and [::]:5353, and a TCP socket
/// connected to the peer at 10.0.0.2:4000. The stack is 10.0.0.1/24 and fc00::1/64.
pub struct Lab {
    /// The stack's id.
    pub stack: u32,
    /// Whether the link is Ethernet (else IP).
    pub ethernet: bool,
    /// The fuzzer's end of the link.
    pub wire: WireRef,
    /// The stack's MAC address (zero on IP).
    pub mac: [u8; 6],
    /// Application ends: the listener, the two UDP sockets, the connected socket, then the
    /// connections accepted; None once closed.
    pub apps: Vec<Option<OwnedFd>>,
    /// The ids of the lab's own sockets (the first ends of `apps`).
    socks: Vec<u64>,
    /// What the applications read (the first [`READ_KEPT`] bytes).
    pub read: Vec<u8>,
    /// The connected socket's local port.
    pub port: u16,
    /// The next sequence numbers on the connected socket: the stack's and the peer's.
    pub seq: (u32, u32),
    /// The transaction id of the DHCP client's discover, once started.
    pub dhcp_xid: Option<u32>,
}

impl Lab {
    /// Sets up a lab on a fresh engine state; `checksummed`: whether the stack checks the
    /// checksums of the frames it receives.
    pub fn new(medium: Medium, checksummed: bool) -> Lab {
        engine::reset();
        let (stack, wire) = engine::add_stack(Some(medium), checksummed);
        // No step here: the stack runs at the first one below, with its sockets.
        let req = Request::Cmd {
            stack,
            cmds: SETUP.into(),
        };
        let r = engine::request(req).expect("no dhcp wait here").0;
        assert!(matches!(r, Reply::Cmd { status: 0, .. }), "{r:?}");
        let mut lab = Lab {
            stack,
            ethernet: medium == Medium::Ethernet,
            wire,
            mac: engine::mac(stack).unwrap_or_default(),
            apps: Vec::new(),
            socks: Vec::new(),
            read: Vec::new(),
            port: 0,
            seq: (0, PEER_ISN.wrapping_add(1)),
            dhcp_xid: None,
        };
        let any6 = SocketAddr::new(Ipv6Addr::UNSPECIFIED.into(), 0);
        let any4 = SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), 0);
        let l = lab.socket(libc::AF_INET6, libc::SOCK_STREAM);
        lab.ok(Request::Bind {
            sock: l,
            addr: SocketAddr::new(any6.ip(), 80),
        });
        lab.ok(Request::Listen {
            sock: l,
            backlog: 8,
        });
        let u = lab.socket(libc::AF_INET, libc::SOCK_DGRAM);
        lab.ok(Request::Bind {
            sock: u,
            addr: SocketAddr::new(any4.ip(), 53),
        });
        let u = lab.socket(libc::AF_INET6, libc::SOCK_DGRAM);
        lab.ok(Request::Bind {
            sock: u,
            addr: SocketAddr::new(any6.ip(), 5353),
        });
        let c = lab.socket(libc::AF_INET, libc::SOCK_STREAM);
        let to = SocketAddr::new(wire::PEER_V4.into(), PEER_PORT);
        let r = engine::request(Request::Connect {
            sock: c,
            addr: to,
            wait: false,
            pad: 0,
        });
        assert!(
            matches!(r, Some((Reply::Err(libc::EINPROGRESS), _))),
            "{r:?}"
        );
        // The stack runs at each step: the SYN (after ARP on Ethernet) goes out, the peer's
        // answers come in, until the connection is up.
        engine::step();
        for _ in 0..4 {
            if engine::connected(stack, c) {
                break;
            }
            lab.answer();
        }
        assert!(
            engine::connected(stack, c),
            "the lab's connection is not up"
        );
        lab.wire.borrow_mut().tx.clear();
        lab
    }

    /// Starts a DHCP client on an Ethernet lab, as `dhcp` does: it drops the stack's IPv4
    /// address and default route until a server (the fuzzer) leases it one. Its discover
    /// goes out; `dhcp_xid` is its transaction id.
    pub fn start_dhcp(&mut self) {
        let out = self.cmd("dhcp vde0");
        debug_assert!(out.is_empty(), "{out}");
        let sent: Vec<Vec<u8>> = self.wire.borrow_mut().tx.drain(..).collect();
        self.dhcp_xid = wire::dhcp_xid(&sent);
    }

    /// A new socket, with small buffers; its id.
    fn socket(&mut self, domain: i32, ty: i32) -> u64 {
        let req = Request::Socket {
            stack: self.stack,
            domain,
            ty,
            protocol: 0,
        };
        let Some((Reply::Ok, Some(fd))) = engine::request(req) else {
            panic!("no socket");
        };
        let name = sys::peer_abstract_name(fd.as_raw_fd()).expect("a stack fd");
        let (_, id) = crate::control::parse_sock_name(&name).expect("a socket name");
        self.apps.push(Some(fd));
        self.socks.push(id);
        for name in [libc::SO_RCVBUF, libc::SO_SNDBUF] {
            let level = libc::SOL_SOCKET;
            let value = BUF;
            self.ok(Request::SetOpt {
                sock: id,
                level,
                name,
                value,
            });
        }
        id
    }

    fn ok(&self, req: Request) {
        let r = engine::request(req.clone());
        assert!(matches!(r, Some((Reply::Ok, _))), "{req:?}: {r:?}");
    }

    /// Plays the peer while the lab is set up: answers what the stack sent.
    fn answer(&mut self) {
        let sent: Vec<Vec<u8>> = self.wire.borrow_mut().tx.drain(..).collect();
        for f in sent {
            if let Some(a) = wire::peer_answer(self.ethernet, &f, PEER_ISN) {
                if a.get(if self.ethernet { 47 } else { 33 }) == Some(&(wire::SYN | wire::ACK)) {
                    let t = &a[a.len() - 24..];
                    self.port = u16::from_be_bytes([t[2], t[3]]);
                    self.seq.0 = u32::from_be_bytes([t[8], t[9], t[10], t[11]]);
                }
                self.inject(&a);
            }
        }
    }

    /// Ends the lab: the application ends of its own sockets go back to the engine, which
    /// keeps their pairs for the next lab if they are as new; the rest are closed.
    pub fn end(self) {
        for (&sock, app) in self.socks.iter().zip(self.apps) {
            if let Some(fd) = app {
                engine::give_back(sock, fd);
            }
        }
        engine::reset();
    }

    /// Hands a frame to the stack, and lets the engine run.
    pub fn inject(&self, frame: &[u8]) {
        self.wire.borrow_mut().rx.push_back(frame.to_vec());
        engine::wake(self.stack);
        engine::step();
    }

    /// A DHCP server's message of `kind` for transaction `xid`, broadcast by the peer,
    /// leasing the stack the address it has (10.0.0.1/24) with the peer as its router.
    pub fn dhcp_server(&self, kind: DhcpMessageType, xid: u32) -> Vec<u8> {
        let bcast = Ipv4Addr::BROADCAST;
        let d = wire::dhcp(kind, xid, self.mac, wire::STACK_V4);
        let u = wire::udp(wire::PEER_V4.into(), bcast.into(), (67, 68), &d);
        let p = wire::ip(wire::PEER_V4.into(), bcast.into(), wire::P_UDP, &u);
        wire::eth([0xff; 6], wire::PEER_MAC, wire::ETH_IPV4, &p)
    }

    /// Runs command string `cmds` on the lab's stack; its output (or its error).
    pub fn cmd(&self, cmds: &str) -> String {
        let req = Request::Cmd {
            stack: self.stack,
            cmds: cmds.into(),
        };
        let r = engine::request(req);
        engine::step();
        match r {
            Some((
                Reply::Cmd {
                    output, message, ..
                },
                _,
            )) => output + &message,
            r => format!("{r:?}"),
        }
    }

    /// An IP packet from the peer to the stack, framed for the link.
    pub fn packet(&self, src: IpAddr, dst: IpAddr, proto: u8, payload: &[u8]) -> Vec<u8> {
        let p = wire::ip(src, dst, proto, payload);
        if self.ethernet {
            let ty = if src.is_ipv4() {
                wire::ETH_IPV4
            } else {
                wire::ETH_IPV6
            };
            wire::eth(self.mac, wire::PEER_MAC, ty, &p)
        } else {
            p
        }
    }

    /// What an application does with its end `which`: `op` 0 writes `bytes`, 1 reads what
    /// waits on every end (taking accepted connections), 2 shuts down writing, 3 closes.
    fn app(&mut self, op: u8, which: usize, bytes: &[u8]) {
        let which = which % self.apps.len().max(1);
        let fd = self.apps.get(which);
        let fd = fd.and_then(|f| f.as_ref()).map(|f| f.as_raw_fd());
        match (op & 3, fd) {
            (0, Some(fd)) => {
                let _ = sys::send(fd, bytes);
            }
            (1, _) => {
                let mut got = Vec::new();
                let mut buf = vec![0u8; 65536];
                for fd in self.apps.iter().flatten() {
                    for _ in 0..16 {
                        match sys::recv_msg_flags(fd.as_raw_fd(), &mut buf, libc::MSG_DONTWAIT) {
                            Ok((n, f)) if n > 0 || f.is_some() => {
                                if self.read.len() < READ_KEPT {
                                    self.read.extend_from_slice(&buf[..n]);
                                }
                                got.extend(f);
                            }
                            _ => break,
                        }
                    }
                }
                for f in got {
                    if self.apps.len() < APPS_MAX {
                        self.apps.push(Some(f));
                    }
                }
            }
            (2, Some(fd)) => {
                let _ = sys::shutdown(fd, libc::SHUT_WR);
            }
            (3, Some(_)) => self.apps[which] = None,
            _ => {}
        }
        engine::step();
    }
}

/// Splits off a record: a 16-bit little-endian length, then that many bytes (or what is
/// left).
fn record(data: &[u8]) -> (&[u8], &[u8]) {
    let (len, rest) = match data {
        [a, b, rest @ ..] => (usize::from(u16::from_le_bytes([*a, *b])), rest),
        _ => (data.len(), &[][..]),
    };
    rest.split_at(len.min(rest.len()))
}

/// Frames from outside into a lab on `medium`. The input: a flags byte (bit 0: the stack
/// checks checksums; bit 1: on Ethernet, a DHCP client is started), then records: a byte below 0x80 and a [`record`] is a frame the stack
/// receives; 0x80 | op, an index and a [`record`] is what an application does with one of
/// its ends ([`Lab`] has the list; op: 0 write the record, 1 read all, 2 shut down writing,
/// 3 close). The engine runs after each.
pub fn frames(medium: Medium, data: &[u8]) {
    frames_sent(medium, data);
}

/// [`frames`], returning the last frames the stack sent (at most 64) and what the
/// applications read, for the test that checks an input does the same whatever ran before.
pub fn frames_sent(medium: Medium, data: &[u8]) -> (Vec<Vec<u8>>, Vec<u8>) {
    let Some((&flags, mut rest)) = data.split_first() else {
        return Default::default();
    };
    let mut lab = Lab::new(medium, flags & 1 != 0);
    if flags & 2 != 0 && lab.ethernet {
        lab.start_dhcp();
    }
    while let Some((&op, r)) = rest.split_first() {
        if op & 0x80 == 0 {
            let (frame, r) = record(r);
            lab.inject(frame);
            rest = r;
        } else {
            let (&which, r) = r.split_first().unwrap_or((&0, &[]));
            let (bytes, r) = record(r);
            lab.app(op, usize::from(which), bytes);
            rest = r;
        }
    }
    let sent = lab.wire.borrow_mut().tx.drain(..).collect();
    let read = std::mem::take(&mut lab.read);
    lab.end();
    (sent, read)
}

/// Control requests from a client into the engine, on a lab (stack 1, its sockets
/// `1 << 32 | 1..=4`). The input: a flags byte (bit 0: the client first says hello with the
/// engine's key; else bit 1: hello without it; else no hello), then [`record`]s, each a
/// message the client sends on its control connection, which is accepted by the engine's
/// listener, and whose reply it reads, keeping the fds that come with it. A request to add a
/// stack on a link that leaves the process is skipped ([`engine::harmless`]).
pub fn control(data: &[u8]) {
    control_replies(data);
}

/// [`control`], returning the replies the client read.
pub fn control_replies(data: &[u8]) -> Vec<Reply> {
    let mut replies = Vec::new();
    let Some((&flags, mut rest)) = data.split_first() else {
        return replies;
    };
    let lab = Lab::new(Medium::Ethernet, false);
    let client = engine::connect().expect("a control connection");
    let hello = match flags & 3 {
        0 => None,
        2 => Some(Request::Hello { key: None }),
        _ => Some(Request::Hello {
            key: Some(engine::key()),
        }),
    };
    if let Some(h) = hello {
        let _ = sys::send(client.as_raw_fd(), &h.encode());
    }
    let mut fds = Vec::new();
    let mut buf = vec![0u8; crate::control::client::MAX_MSG];
    while !rest.is_empty() {
        let (msg, r) = record(rest);
        rest = r;
        if Request::decode(msg).is_ok_and(|req| !engine::harmless(&req)) {
            continue;
        }
        if sys::send(client.as_raw_fd(), msg).is_err() {
            break; // the engine hung up on us
        }
        engine::step();
        let fd = client.as_raw_fd();
        while let Ok((n, passed)) = sys::recv_msg_flags(fd, &mut buf, libc::MSG_DONTWAIT) {
            if n == 0 {
                break; // the engine hung up
            }
            replies.extend(Reply::decode(&buf[..n]));
            fds.extend(passed);
        }
        fds.truncate(64);
    }
    drop(fds);
    drop(client);
    lab.end();
    replies
}

/// A `vde_stackcmd` string run on a new stack. The input: a byte choosing the stack's link
/// (0 Ethernet, 1 IP, 2 none), then the string (as UTF-8, bad sequences replaced). Each
/// command is parsed, then the string runs on the stack, then the stack shows its state.
pub fn stackcmd(data: &[u8]) {
    let Some((&kind, text)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(text);
    for c in crate::config::split(&text) {
        let _ = crate::config::parse(c);
    }
    engine::reset();
    let medium = match kind % 3 {
        0 => Some(Medium::Ethernet),
        1 => Some(Medium::Ip),
        _ => None,
    };
    let (stack, _wire) = engine::add_stack(medium, true);
    let cmds = text.into_owned();
    let _ = engine::request(Request::Cmd { stack, cmds });
    engine::step();
    let _ = engine::request(Request::Cmd {
        stack,
        cmds: "ip addr show; ip route show; ip link show".into(),
    });
    engine::step();
    engine::reset();
}

/// A nameserver's reply, read as a lookup reads it (A, then AAAA records).
pub fn dns(data: &[u8]) {
    for ty in [simple_dns::TYPE::A, simple_dns::TYPE::AAAA] {
        let _ = crate::resolve::answers(data, "example.com", ty);
    }
}

/// A switch's answer to a request for a port, read as opening a `vde://` link reads it (on
/// a stream socket the switch then closes): the input is what the switch sends.
pub fn switch(data: &[u8]) {
    let (ctl, switch) = sys::socketpair(libc::SOCK_STREAM).expect("a socketpair");
    if !data.is_empty() {
        let _ = sys::send(switch.as_raw_fd(), data);
    }
    drop(switch);
    let port = sys::unix_socket(libc::SOCK_DGRAM | libc::SOCK_NONBLOCK).expect("a socket");
    let _ = crate::link::switch::connect_port(&ctl, &port);
}
