//! What a process that was not given a stack tries, for tests/access.rs (run as another uid
//! with setpriv). It prints one line per kind of attempt with what it got back, and
//! `BREACHES n` last; it exits 0 only when every attempt was refused.
//!
//! ```text
//! intruder attack PID...    every engine of these processes found in /proc/net/unix: all
//!                           request kinds (no hello, no key, a wrong key, fds that are not
//!                           the socket), on guessed socket ids and on those the names give
//!                           away; connect/sendto on the sockets' names; silent
//!                           connections by the hundred; the processes' environment
//! intruder holder TO        fd 3 is an AF_UNIX socket that brings two stack fds (TCP, then
//!                           UDP): what their holder may do (names, options, data,
//!                           shutdown; a datagram to TO), and what it may not
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use vdestack::internal::control::proto::{Reply, Request};
use vdestack::internal::control::{self, Ctl};
use vdestack::internal::{socket, sys};

/// The outcomes an intruder may get: refused or cut off.
fn refused(o: &str) -> bool {
    matches!(
        o,
        "EACCES" | "EPERM" | "EOF" | "EPIPE" | "ECONNRESET" | "ECONNREFUSED" | "read, no key in it"
    )
}

fn errno_name(e: &io::Error) -> String {
    match e.raw_os_error() {
        Some(libc::EACCES) => "EACCES".into(),
        Some(libc::EPERM) => "EPERM".into(),
        Some(libc::EPIPE) => "EPIPE".into(),
        Some(libc::ECONNRESET) => "ECONNRESET".into(),
        Some(libc::ECONNREFUSED) => "ECONNREFUSED".into(),
        Some(libc::EAGAIN) => "TIMEOUT".into(),
        Some(n) => format!("errno {n}"),
        None => e.to_string(),
    }
}

/// Tallies outcomes by kind of attempt.
#[derive(Default)]
struct Tally(BTreeMap<String, BTreeMap<String, usize>>);

impl Tally {
    fn add(&mut self, what: &str, outcome: String) {
        *self
            .0
            .entry(what.to_string())
            .or_default()
            .entry(outcome)
            .or_default() += 1;
    }
    fn report(&self) -> usize {
        let mut breaches = 0;
        for (what, outs) in &self.0 {
            let line: Vec<String> = outs.iter().map(|(o, n)| format!("{o} x{n}")).collect();
            let bad = outs.keys().filter(|o| !refused(o)).count();
            breaches += bad;
            println!(
                "{} {what}: {}",
                if bad > 0 { "BREACH" } else { "refused" },
                line.join(", ")
            );
        }
        breaches
    }
}

/// The engines and socket ids /proc/net/unix shows: abstract names print as `@` and the
/// name's bytes raw (a NUL as `@`, a newline as itself), so ids are read by position.
fn scan() -> BTreeMap<String, BTreeSet<u64>> {
    let text = std::fs::read("/proc/net/unix").expect("read /proc/net/unix");
    let mut found: BTreeMap<String, BTreeSet<u64>> = BTreeMap::new();
    let pat = b"@vds:";
    let mut i = 0;
    while let Some(p) = text[i..].windows(pat.len()).position(|w| w == pat) {
        let start = i + p + pat.len();
        let rest = &text[start..];
        let end = rest
            .iter()
            .position(|&c| c == b':' || c == b'\n')
            .unwrap_or(rest.len());
        let engine = String::from_utf8_lossy(&rest[..end]).into_owned();
        let ids = found.entry(engine).or_default();
        if rest.get(end) == Some(&b':') && rest.len() >= end + 9 {
            // `@` is a NUL or an `@`: take every reading (few bytes are either).
            let raw = &rest[end + 1..end + 9];
            let ats: Vec<usize> = (0..8).filter(|&k| raw[k] == b'@').collect();
            for mask in 0..(1u32 << ats.len().min(6)) {
                let mut b: [u8; 8] = raw.try_into().unwrap();
                for (j, &k) in ats.iter().enumerate() {
                    b[k] = if j < 6 && mask & (1 << j) != 0 {
                        b'@'
                    } else {
                        0
                    };
                }
                ids.insert(u64::from_le_bytes(b));
            }
        }
        i = start;
    }
    found
}

/// One control connection of the intruder's: sends a hello (or not) and requests.
struct Conn {
    fd: OwnedFd,
}

impl Conn {
    fn open(name: &[u8], hello: Option<Option<[u8; 16]>>) -> io::Result<Conn> {
        let fd = sys::unix_socket(libc::SOCK_SEQPACKET)?;
        sys::connect_abstract(fd.as_raw_fd(), name)?;
        let tv = libc::timeval {
            tv_sec: 5,
            tv_usec: 0,
        };
        // SAFETY: tv lives across the call; its size is passed.
        unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                &tv as *const _ as *const libc::c_void,
                std::mem::size_of_val(&tv) as u32,
            )
        };
        if let Some(key) = hello {
            sys::send_msg(fd.as_raw_fd(), &Request::Hello { key }.encode(), &[])?;
        }
        Ok(Conn { fd })
    }

    /// Sends `req` with `fds` attached; the outcome: "Ok ..." (a reply that is not an
    /// error), an errno name, or EOF.
    fn ask(&self, req: &Request, fds: &[RawFd]) -> String {
        if let Err(e) = sys::send_msg(self.fd.as_raw_fd(), &req.encode(), fds) {
            return errno_name(&e);
        }
        let mut buf = vec![0u8; 65536];
        match sys::recv_msg(self.fd.as_raw_fd(), &mut buf) {
            Ok((0, _)) => "EOF".into(),
            Ok((n, _)) => match Reply::decode(&buf[..n]) {
                Ok(Reply::Err(e)) => errno_name(&io::Error::from_raw_os_error(e)),
                Ok(r) => format!("GRANTED {r:?}"),
                Err(_) => "garbled reply".into(),
            },
            Err(e) => errno_name(&e),
        }
    }
}

fn kind(r: &Request) -> String {
    let d = format!("{r:?}");
    d.split([' ', '{']).next().unwrap_or("?").to_string()
}

/// Every request kind, on stacks 1..=4 and on `ids`.
fn requests(ids: &BTreeSet<u64>) -> Vec<Request> {
    let mut v = vec![
        Request::AddStack {
            vnl: String::new(),
            ifname: "vde0".into(),
        },
        Request::AddStack {
            vnl: "mem://intruder".into(),
            ifname: "vde9".into(),
        },
    ];
    for stack in 1..=4 {
        v.extend([
            Request::Cmd {
                stack,
                cmds: "ip addr add 10.66.0.1/24 dev vde0; ip link set vde0 down".into(),
            },
            Request::Socket {
                stack,
                domain: libc::AF_INET,
                ty: libc::SOCK_STREAM,
                protocol: 0,
            },
            Request::Socket {
                stack,
                domain: libc::AF_INET6,
                ty: libc::SOCK_DGRAM,
                protocol: 0,
            },
            Request::Nameservers { stack },
            Request::Pending { stack },
        ]);
    }
    let any4: SocketAddr = "0.0.0.0:80".parse().unwrap();
    let any6: SocketAddr = "[::]:22".parse().unwrap();
    let lo: SocketAddr = "127.0.0.1:80".parse().unwrap();
    for &sock in ids {
        v.extend([
            Request::Bind { sock, addr: any4 },
            Request::Bind { sock, addr: any6 },
            Request::Listen { sock, backlog: 5 },
            Request::Connect {
                sock,
                addr: lo,
                wait: false,
                pad: 0,
            },
            Request::Padded { sock, bytes: 0 },
            Request::Name { sock, peer: false },
            Request::Name { sock, peer: true },
            Request::Shutdown {
                sock,
                how: libc::SHUT_RDWR,
            },
            Request::SetOpt {
                sock,
                level: libc::SOL_SOCKET,
                name: libc::SO_REUSEADDR,
                value: 1,
            },
            Request::GetOpt {
                sock,
                level: libc::SOL_SOCKET,
                name: libc::SO_TYPE,
            },
        ]);
    }
    // Last, so that nothing above runs on a stack this could have ended.
    v.extend((1..=4).map(|stack| Request::DelStack { stack }));
    v
}

fn attack(pids: &[String]) -> usize {
    let mut tally = Tally::default();
    let all = scan();
    let mine: Vec<(&String, &BTreeSet<u64>)> = all
        .iter()
        .filter(|(e, _)| pids.iter().any(|p| e.starts_with(&format!("{p}."))))
        .collect();
    println!(
        "found {} engines in /proc/net/unix, {} of the victims': {:?}",
        all.len(),
        mine.len(),
        mine.iter()
            .map(|(e, ids)| (e, ids.len()))
            .collect::<Vec<_>>()
    );
    if mine.is_empty() {
        println!("BREACHES 1 (no victim engine found)");
        return 1;
    }
    // Fds that are not the socket, offered as proof.
    let (pair_a, _pair_b) = sys::socketpair(libc::SOCK_STREAM).unwrap();
    let (dg_a, _dg_b) = sys::socketpair(libc::SOCK_DGRAM).unwrap();
    let null = std::fs::File::open("/dev/null").unwrap();
    let proofs: [RawFd; 3] = [pair_a.as_raw_fd(), dg_a.as_raw_fd(), null.as_raw_fd()];
    for (engine, learned) in mine {
        let name = control::ctl_name(engine);
        let mut ids: BTreeSet<u64> = learned.clone();
        for stack in 1..=4u64 {
            ids.extend((0..=16).map(|n| stack << 32 | n));
        }
        let reqs = requests(&ids);
        // No hello: the first message is a request.
        match Conn::open(&name, None) {
            Ok(c) => tally.add("no hello: AddStack", c.ask(&reqs[0], &[])),
            Err(e) => tally.add("no hello: connect", errno_name(&e)),
        }
        let mut wrong = [0u8; 16];
        // SAFETY: the pointer and length stay within `wrong`.
        unsafe { libc::getrandom(wrong.as_mut_ptr().cast(), 16, 0) };
        for (label, hello) in [
            ("no key", None),
            ("wrong key", Some(wrong)),
            ("zero key", Some([0; 16])),
        ] {
            let mut conn = Conn::open(&name, Some(hello)).expect("connect");
            for r in &reqs {
                let o = conn.ask(r, &[]);
                if o == "EOF" || o == "EPIPE" {
                    conn = Conn::open(&name, Some(hello)).expect("connect");
                }
                tally.add(&format!("{label}: {}", kind(r)), o);
            }
        }
        // With an fd that is not the socket's attached, as if it proved holding it.
        let conn = Conn::open(&name, Some(None)).expect("connect");
        for r in &reqs {
            for p in proofs {
                tally.add(&format!("false proof: {}", kind(r)), conn.ask(r, &[p]));
            }
        }
        // Silent connections: the engine keeps only a few of those.
        let silent: Vec<OwnedFd> = (0..300)
            .filter_map(|_| Conn::open(&name, None).ok().map(|c| c.fd))
            .collect();
        std::thread::sleep(std::time::Duration::from_millis(500));
        let open = silent
            .iter()
            .filter(|f| sys::poll_one(f.as_raw_fd(), libc::POLLRDHUP, 0).is_ok_and(|r| r == 0))
            .count();
        println!(
            "silent connections: {} opened, {open} still open",
            silent.len()
        );
        if open > 64 {
            tally.add("silent connections kept beyond 64", "KEPT".into());
        }
    }
    // The sockets' own names: the engine's ends of the pairs.
    for (engine, learned) in all
        .iter()
        .filter(|(e, _)| pids.iter().any(|p| e.starts_with(&format!("{p}."))))
    {
        for &id in learned {
            let n = control::sock_name(engine, id);
            for ty in [libc::SOCK_STREAM, libc::SOCK_DGRAM, libc::SOCK_SEQPACKET] {
                let s = sys::unix_socket(ty).unwrap();
                let o = match sys::connect_abstract(s.as_raw_fd(), &n) {
                    Ok(()) => "CONNECTED".into(),
                    Err(e) => errno_name(&e),
                };
                tally.add(&format!("connect to a socket's name ({ty})"), o);
            }
            let s = sys::unix_socket(libc::SOCK_DGRAM).unwrap();
            tally.add("sendto a socket's name", sendto_abstract(s.as_raw_fd(), &n));
        }
    }
    for p in pids {
        let o = match std::fs::read(format!("/proc/{p}/environ")) {
            Ok(env) if env.windows(13).any(|w| w == b"VDESTACK_KEY=") => "READ A KEY".into(),
            Ok(_) => "read, no key in it".into(),
            Err(e) => errno_name(&e),
        };
        tally.add("read the victim's environment", o);
    }
    tally.report()
}

fn sendto_abstract(fd: RawFd, name: &[u8]) -> String {
    // SAFETY: sockaddr_un is plain old data.
    let mut sun: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    sun.sun_family = libc::AF_UNIX as u16;
    for (i, b) in name.iter().enumerate() {
        sun.sun_path[i + 1] = *b as libc::c_char;
    }
    let len = (std::mem::size_of::<libc::sa_family_t>() + 1 + name.len()) as u32;
    let data = [0x56u8, 0x44, 0x53, 0x55, 0, 0, 0, 0];
    // SAFETY: the buffers live across the call; their sizes are passed.
    let r = unsafe {
        libc::sendto(
            fd,
            data.as_ptr().cast(),
            data.len(),
            libc::MSG_DONTWAIT,
            &sun as *const _ as *const libc::sockaddr,
            len,
        )
    };
    if r < 0 {
        errno_name(&io::Error::last_os_error())
    } else {
        "SENT".into()
    }
}

fn holder(to: SocketAddr) -> usize {
    let mut buf = [0u8; 16];
    let (_, tcp) = sys::recv_msg(3, &mut buf).expect("receive the TCP fd");
    let (_, udp) = sys::recv_msg(3, &mut buf).expect("receive the UDP fd");
    let (tcp, udp) = (tcp.expect("a TCP fd"), udp.expect("a UDP fd"));
    let (t, u) = (tcp.as_raw_fd(), udp.as_raw_fd());
    let mut bad = 0;
    let mut check = |what: &str, r: io::Result<String>, want_ok: bool| {
        let ok = r.is_ok() == want_ok;
        let o = match &r {
            Ok(v) => format!("ok {v}"),
            Err(e) => errno_name(e),
        };
        println!(
            "{} {what}: {o}",
            if ok { "as expected" } else { "UNEXPECTED" }
        );
        bad += usize::from(!ok);
        if !want_ok
            && r.as_ref()
                .is_err_and(|e| e.raw_os_error() != Some(libc::EACCES))
        {
            println!("UNEXPECTED {what}: not EACCES");
            bad += 1;
        }
    };
    let s = |r: io::Result<SocketAddr>| r.map(|a| a.to_string());
    check("getsockname tcp", s(socket::local_addr(t)), true);
    check("getpeername tcp", s(socket::peer_addr(t)), true);
    check(
        "setsockopt TCP_NODELAY",
        socket::set_opt(t, libc::IPPROTO_TCP, libc::TCP_NODELAY, 1).map(|_| String::new()),
        true,
    );
    check(
        "getsockopt TCP_NODELAY",
        socket::get_opt(t, libc::IPPROTO_TCP, libc::TCP_NODELAY).map(|v| v.to_string()),
        true,
    );
    check(
        "send tcp",
        sys::send(t, b"hello from the holder").map(|n| n.to_string()),
        true,
    );
    check(
        "shutdown tcp SHUT_WR",
        socket::shutdown(t, libc::SHUT_WR).map(|_| String::new()),
        true,
    );
    check("getsockname udp", s(socket::local_addr(u)), true);
    check(
        "sendto udp",
        socket::send_to(u, b"datagram from the holder", Some(to), 0).map(|n| n.to_string()),
        true,
    );
    // What it was not given.
    let (ctl, id) = Ctl::of_fd(t).expect("a stack fd");
    let stack = (id >> 32) as u32;
    let unit = |r: io::Result<Reply>| r.map(|r| format!("{r:?}"));
    check(
        "socket in the stack",
        unit(ctl.call(&Request::Socket {
            stack,
            domain: libc::AF_INET,
            ty: libc::SOCK_STREAM,
            protocol: 0,
        })),
        false,
    );
    check(
        "configure the stack",
        unit(ctl.call(&Request::Cmd {
            stack,
            cmds: "ip addr add 10.66.0.1/24 dev vde0".into(),
        })),
        false,
    );
    check(
        "add a stack",
        unit(ctl.call(&Request::AddStack {
            vnl: String::new(),
            ifname: "vde0".into(),
        })),
        false,
    );
    check(
        "delete the stack",
        unit(ctl.call(&Request::DelStack { stack })),
        false,
    );
    check(
        "nameservers",
        unit(ctl.call(&Request::Nameservers { stack })),
        false,
    );
    // Another socket of the stack, with this one's fd as proof.
    for other in [id + 1, id.wrapping_sub(1), id + 2] {
        check(
            &format!("bind socket {other:#x} proving {id:#x}"),
            unit(ctl.call_on(
                &Request::Bind {
                    sock: other,
                    addr: "0.0.0.0:81".parse().unwrap(),
                },
                t,
            )),
            false,
        );
    }
    println!("BREACHES {bad}");
    bad
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let bad = match args.first().map(String::as_str) {
        Some("attack") if args.len() > 1 => {
            let n = attack(&args[1..]);
            println!("BREACHES {n}");
            n
        }
        Some("holder") if args.len() == 2 => holder(args[1].parse().expect("TO: an address")),
        _ => {
            eprintln!("usage: intruder attack PID... | intruder holder TO");
            std::process::exit(2);
        }
    };
    std::process::exit(if bad == 0 { 0 } else { 1 });
}
