//! The control protocol: one request and one reply per SOCK_SEQPACKET connection to the
//! engine. Plain little-endian fields, written and read by hand: both ends are this crate.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6};

/// An engine's secret (see [`crate::control::key`]): whoever shows it may use all its stacks.
pub type Key = [u8; 16];

/// A request to the engine. `stack` fields name a stack by its id within the engine, `sock`
/// fields a socket by its id (`stack << 32 | n`, see [`super::sock_name`]).
#[derive(Debug, Clone, PartialEq)]
pub enum Request {
    /// The first message of every connection, and only there; it gets no reply. With the
    /// engine's key the connection may do everything; without it (or with a wrong one) only
    /// requests on a socket whose fd comes attached to the request.
    Hello {
        /// The engine's key, if the client holds it.
        key: Option<Key>,
    },
    /// Creates a stack on the link a VNL names.
    AddStack {
        /// The locator.
        vnl: String,
        /// The interface's name.
        ifname: String,
    },
    /// Ends a stack and all its sockets.
    DelStack {
        /// The stack.
        stack: u32,
    },
    /// Runs configuration commands (`ip ...`).
    Cmd {
        /// The stack.
        stack: u32,
        /// The commands, separated by `;` or newlines.
        cmds: String,
    },
    /// Creates a socket; the reply carries its fd.
    Socket {
        /// The stack.
        stack: u32,
        /// AF_INET or AF_INET6.
        domain: i32,
        /// SOCK_STREAM or SOCK_DGRAM, with flags.
        ty: i32,
        /// 0, or the protocol matching `ty`.
        protocol: i32,
    },
    /// bind(2).
    Bind {
        /// The socket.
        sock: u64,
        /// The address to bind.
        addr: SocketAddr,
    },
    /// listen(2).
    Listen {
        /// The socket.
        sock: u64,
        /// The backlog asked for.
        backlog: i32,
    },
    /// connect(2).
    Connect {
        /// The socket.
        sock: u64,
        /// The peer.
        addr: SocketAddr,
        /// Reply when the connection is up or failed (a blocking connect).
        wait: bool,
        /// Nonblocking TCP only: after an EINPROGRESS reply the client writes this many bytes
        /// of padding into its end of the pair, which the engine drops once the outcome is
        /// known.
        pad: u32,
    },
    /// The client could write only `bytes` of the padding its connect announced.
    Padded {
        /// The socket.
        sock: u64,
        /// The bytes of padding written.
        bytes: u32,
    },
    /// getsockname(2) / getpeername(2).
    Name {
        /// The socket.
        sock: u64,
        /// The peer's name (getpeername) rather than the local one.
        peer: bool,
    },
    /// shutdown(2).
    Shutdown {
        /// The socket.
        sock: u64,
        /// SHUT_RD, SHUT_WR or SHUT_RDWR.
        how: i32,
    },
    /// setsockopt(2) with an integer value.
    SetOpt {
        /// The socket.
        sock: u64,
        /// The option's level (SOL_SOCKET, IPPROTO_TCP, ...).
        level: i32,
        /// The option.
        name: i32,
        /// Its value.
        value: i32,
    },
    /// getsockopt(2) of an integer option.
    GetOpt {
        /// The socket.
        sock: u64,
        /// The option's level.
        level: i32,
        /// The option.
        name: i32,
    },
    /// The stack's nameservers.
    Nameservers {
        /// The stack.
        stack: u32,
    },
    /// How many TCP connections of the stack still owe the network something: bytes not
    /// yet acknowledged, or a FIN (also for those whose application just closed).
    Pending {
        /// The stack.
        stack: u32,
    },
}

/// The engine's answer.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// Done, nothing to return (a socket or accepted connection comes as a passed fd).
    Ok,
    /// Failed with this errno.
    Err(i32),
    /// A new stack's id.
    Stack(u32),
    /// An integer (option value).
    Int(i64),
    /// A socket address (names, an accepted peer).
    Addr(SocketAddr),
    /// The result of configuration commands.
    Cmd {
        /// The shell status: 0, or that of the first command that failed.
        status: i32,
        /// The failed command's message.
        message: String,
        /// What `show` commands printed.
        output: String,
    },
    /// A list of addresses.
    Addrs(Vec<IpAddr>),
}

struct W(Vec<u8>);

impl W {
    fn u8(&mut self, v: u8) -> &mut Self {
        self.0.push(v);
        self
    }
    fn u32(&mut self, v: u32) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn i32(&mut self, v: i32) -> &mut Self {
        self.u32(v as u32)
    }
    fn u64(&mut self, v: u64) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn str(&mut self, s: &str) -> &mut Self {
        self.u32(s.len() as u32);
        self.0.extend_from_slice(s.as_bytes());
        self
    }
    fn ip(&mut self, ip: &IpAddr) -> &mut Self {
        match ip {
            IpAddr::V4(a) => self.u8(4).bytes(&a.octets()),
            IpAddr::V6(a) => self.u8(6).bytes(&a.octets()),
        }
    }
    fn addr(&mut self, a: &SocketAddr) -> &mut Self {
        self.ip(&a.ip()).u32(a.port() as u32);
        if let SocketAddr::V6(v6) = a {
            self.u32(v6.scope_id());
        }
        self
    }
    fn bytes(&mut self, b: &[u8]) -> &mut Self {
        self.0.extend_from_slice(b);
        self
    }
}

/// The size of the record that hands an accepted connection to the application. A
/// listener's pair carries one per connection, with the connection's fd attached
/// (SCM_RIGHTS): the peer's address, padded so that every read takes exactly one.
pub const ACCEPT_RECORD: usize = 32;

/// The record for a connection from `peer` (see [`ACCEPT_RECORD`]).
pub fn accept_record(peer: &SocketAddr) -> [u8; ACCEPT_RECORD] {
    let mut w = W(Vec::with_capacity(ACCEPT_RECORD));
    w.addr(peer);
    let mut rec = [0u8; ACCEPT_RECORD];
    rec[..w.0.len()].copy_from_slice(&w.0);
    rec
}

/// The peer an accept record names.
pub fn accepted_peer(rec: &[u8]) -> io::Result<SocketAddr> {
    if rec.len() != ACCEPT_RECORD {
        return Err(bad());
    }
    R(rec).addr()
}

struct R<'a>(&'a [u8]);

fn bad() -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, "malformed control message")
}

impl R<'_> {
    fn take(&mut self, n: usize) -> io::Result<&[u8]> {
        if self.0.len() < n {
            return Err(bad());
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }
    fn u8(&mut self) -> io::Result<u8> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> io::Result<u32> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().map_err(|_| bad())?,
        ))
    }
    fn i32(&mut self) -> io::Result<i32> {
        Ok(self.u32()? as i32)
    }
    fn u64(&mut self) -> io::Result<u64> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().map_err(|_| bad())?,
        ))
    }
    fn str(&mut self) -> io::Result<String> {
        let n = self.u32()? as usize;
        String::from_utf8(self.take(n)?.to_vec()).map_err(|_| bad())
    }
    fn ip(&mut self) -> io::Result<IpAddr> {
        match self.u8()? {
            4 => {
                let b: [u8; 4] = self.take(4)?.try_into().map_err(|_| bad())?;
                Ok(IpAddr::V4(Ipv4Addr::from(b)))
            }
            6 => {
                let b: [u8; 16] = self.take(16)?.try_into().map_err(|_| bad())?;
                Ok(IpAddr::V6(Ipv6Addr::from(b)))
            }
            _ => Err(bad()),
        }
    }
    fn addr(&mut self) -> io::Result<SocketAddr> {
        let ip = self.ip()?;
        let port = self.u32()? as u16;
        Ok(match ip {
            IpAddr::V4(_) => SocketAddr::new(ip, port),
            IpAddr::V6(v6) => SocketAddr::V6(SocketAddrV6::new(v6, port, 0, self.u32()?)),
        })
    }
}

impl Request {
    /// Encodes the request.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = W(Vec::with_capacity(64));
        match self {
            Request::Hello { key: Some(k) } => w.u8(16).u8(1).bytes(k),
            Request::Hello { key: None } => w.u8(16).u8(0),
            Request::AddStack { vnl, ifname } => w.u8(1).str(vnl).str(ifname),
            Request::DelStack { stack } => w.u8(2).u32(*stack),
            Request::Cmd { stack, cmds } => w.u8(3).u32(*stack).str(cmds),
            Request::Socket {
                stack,
                domain,
                ty,
                protocol,
            } => w.u8(4).u32(*stack).i32(*domain).i32(*ty).i32(*protocol),
            Request::Bind { sock, addr } => w.u8(5).u64(*sock).addr(addr),
            Request::Listen { sock, backlog } => w.u8(6).u64(*sock).i32(*backlog),
            Request::Connect {
                sock,
                addr,
                wait,
                pad,
            } => w.u8(8).u64(*sock).addr(addr).u8(*wait as u8).u32(*pad),
            Request::Padded { sock, bytes } => w.u8(14).u64(*sock).u32(*bytes),
            Request::Name { sock, peer } => w.u8(9).u64(*sock).u8(*peer as u8),
            Request::Shutdown { sock, how } => w.u8(10).u64(*sock).i32(*how),
            Request::SetOpt {
                sock,
                level,
                name,
                value,
            } => w.u8(11).u64(*sock).i32(*level).i32(*name).i32(*value),
            Request::GetOpt { sock, level, name } => w.u8(12).u64(*sock).i32(*level).i32(*name),
            Request::Nameservers { stack } => w.u8(13).u32(*stack),
            Request::Pending { stack } => w.u8(15).u32(*stack),
        };
        w.0
    }

    /// Decodes a request; malformed input is an error, never a panic.
    pub fn decode(buf: &[u8]) -> io::Result<Request> {
        let mut r = R(buf);
        let req = match r.u8()? {
            16 => Request::Hello {
                key: match r.u8()? {
                    0 => None,
                    1 => Some(r.take(16)?.try_into().map_err(|_| bad())?),
                    _ => return Err(bad()),
                },
            },
            1 => Request::AddStack {
                vnl: r.str()?,
                ifname: r.str()?,
            },
            2 => Request::DelStack { stack: r.u32()? },
            3 => Request::Cmd {
                stack: r.u32()?,
                cmds: r.str()?,
            },
            4 => Request::Socket {
                stack: r.u32()?,
                domain: r.i32()?,
                ty: r.i32()?,
                protocol: r.i32()?,
            },
            5 => Request::Bind {
                sock: r.u64()?,
                addr: r.addr()?,
            },
            6 => Request::Listen {
                sock: r.u64()?,
                backlog: r.i32()?,
            },
            8 => Request::Connect {
                sock: r.u64()?,
                addr: r.addr()?,
                wait: r.u8()? != 0,
                pad: r.u32()?,
            },
            9 => Request::Name {
                sock: r.u64()?,
                peer: r.u8()? != 0,
            },
            10 => Request::Shutdown {
                sock: r.u64()?,
                how: r.i32()?,
            },
            11 => Request::SetOpt {
                sock: r.u64()?,
                level: r.i32()?,
                name: r.i32()?,
                value: r.i32()?,
            },
            12 => Request::GetOpt {
                sock: r.u64()?,
                level: r.i32()?,
                name: r.i32()?,
            },
            13 => Request::Nameservers { stack: r.u32()? },
            15 => Request::Pending { stack: r.u32()? },
            14 => Request::Padded {
                sock: r.u64()?,
                bytes: r.u32()?,
            },
            _ => return Err(bad()),
        };
        // Both ends are this crate: anything left over is not a request of ours.
        if !r.0.is_empty() {
            return Err(bad());
        }
        Ok(req)
    }
}

impl Reply {
    /// Encodes the reply.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = W(Vec::with_capacity(32));
        match self {
            Reply::Ok => w.u8(1),
            Reply::Err(e) => w.u8(2).i32(*e),
            Reply::Stack(s) => w.u8(3).u32(*s),
            Reply::Int(v) => w.u8(4).u64(*v as u64),
            Reply::Addr(a) => w.u8(5).addr(a),
            Reply::Cmd {
                status,
                message,
                output,
            } => w.u8(6).i32(*status).str(message).str(output),
            Reply::Addrs(v) => {
                w.u8(7).u32(v.len() as u32);
                for ip in v {
                    w.ip(ip);
                }
                &mut w
            }
        };
        w.0
    }

    /// Decodes a reply.
    pub fn decode(buf: &[u8]) -> io::Result<Reply> {
        let mut r = R(buf);
        Ok(match r.u8()? {
            1 => Reply::Ok,
            2 => Reply::Err(r.i32()?),
            3 => Reply::Stack(r.u32()?),
            4 => Reply::Int(r.u64()? as i64),
            5 => Reply::Addr(r.addr()?),
            6 => Reply::Cmd {
                status: r.i32()?,
                message: r.str()?,
                output: r.str()?,
            },
            7 => {
                let n = r.u32()? as usize;
                let mut v = Vec::with_capacity(n.min(64));
                for _ in 0..n {
                    v.push(r.ip()?);
                }
                Reply::Addrs(v)
            }
            _ => return Err(bad()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let a6: SocketAddr = "[fc00::1%3]:80".parse().unwrap();
        let reqs = vec![
            Request::Hello { key: None },
            Request::Hello { key: Some([7; 16]) },
            Request::AddStack {
                vnl: "vde:///tmp/x".into(),
                ifname: "vde0".into(),
            },
            Request::Connect {
                sock: 7,
                addr: a6,
                wait: true,
                pad: 53249,
            },
            Request::Padded { sock: 7, bytes: 0 },
            Request::SetOpt {
                sock: 1,
                level: 6,
                name: 1,
                value: -1,
            },
        ];
        for r in reqs {
            assert_eq!(Request::decode(&r.encode()).unwrap(), r);
        }
        let reps = vec![
            Reply::Err(111),
            Reply::Addr("10.0.0.1:5".parse().unwrap()),
            Reply::Cmd {
                status: 2,
                message: "m".into(),
                output: "o".into(),
            },
            Reply::Addrs(vec!["::1".parse().unwrap(), "1.2.3.4".parse().unwrap()]),
            Reply::Int(-5),
        ];
        for r in reps {
            assert_eq!(Reply::decode(&r.encode()).unwrap(), r);
        }
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(Request::decode(&[]).is_err());
        assert!(Request::decode(&[99, 1, 2]).is_err());
        assert!(Request::decode(&[3, 1, 0, 0, 0, 255, 255, 255, 255]).is_err());
        assert!(Reply::decode(&[5, 9]).is_err());
        assert!(Request::decode(&[16, 1, 1, 2]).is_err());
        assert!(Request::decode(&[16, 2]).is_err());
        let mut long = Request::DelStack { stack: 1 }.encode();
        long.push(0);
        assert!(Request::decode(&long).is_err());
    }
}
