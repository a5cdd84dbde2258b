//! A socket as the engine sees it: the engine's end of the pair, what the application asked
//! for (family, type, options, bound address) and the bridge state.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd};

use smoltcp::iface::SocketHandle;
use smoltcp::wire::IpListenEndpoint;

use crate::bridge::tcp::Conn;
use crate::bridge::udp::Udp;

/// Default buffer size of a TCP socket, each way.
pub const TCP_BUF: usize = 256 * 1024;
/// Default payload buffer size of a UDP socket, each way.
pub const UDP_BUF: usize = 64 * 1024;

/// Socket options the engine gives meaning to; others are remembered as set.
#[derive(Debug, Clone)]
pub struct Opts {
    pub reuseaddr: bool,
    pub keepalive: bool,
    pub nodelay: bool,
    pub rcvbuf: usize,
    pub sndbuf: usize,
    pub v6only: bool,
    pub syncnt: u32,
    /// TCP_LINGER2 as set (see `engine::ending`).
    pub linger2: i32,
    /// SO_LINGER is {on, 0}: close aborts the connection (the C library passes it on; the
    /// option itself is the pair's).
    pub linger_abort: bool,
    /// Options we do not interpret, answered back as set.
    pub other: HashMap<(i32, i32), i32>,
}

impl Default for Opts {
    fn default() -> Self {
        Opts {
            reuseaddr: false,
            keepalive: false,
            nodelay: false,
            rcvbuf: TCP_BUF,
            sndbuf: TCP_BUF,
            v6only: false,
            syncnt: 6,
            linger2: 0,
            linger_abort: false,
            other: HashMap::new(),
        }
    }
}

/// A listener: smoltcp sockets waiting in Listen, and connections ready to accept.
#[derive(Debug)]
pub struct Listener {
    pub backlog: usize,
    pub endpoint: IpListenEndpoint,
    /// Which sets listen (the link set only for a non-local address, never for 127/8).
    pub sets: [bool; 2],
    /// Sockets kept listening in each set.
    pub per_set: usize,
    /// A wildcard address restricted to one family (AF_INET, or IPV6_V6ONLY): its sockets
    /// hold their SYN|ACK until the peer's family is checked.
    pub screen: bool,
    pub listening: Vec<(usize, SocketHandle)>,
    /// Handshakes done, not yet handed to the application.
    pub ready: VecDeque<(usize, SocketHandle)>,
    /// Accepted connections (application end, record) that found the pair full.
    pub undelivered: VecDeque<(OwnedFd, [u8; crate::control::proto::ACCEPT_RECORD])>,
    /// What one record costs in the pair's send queue (SIOCOUTQ counts it so), measured on
    /// the first; 0 until then.
    pub per_record: usize,
}

/// Where a socket is in its life.
#[derive(Debug)]
pub enum SockState {
    /// TCP, neither connected nor listening.
    Fresh,
    /// TCP, handshake under way.
    Connecting(Conn),
    /// TCP, connected.
    Connected(Conn),
    /// TCP, listening.
    Listening(Listener),
    /// TCP, the connection is over; the pair may still hold data for the application.
    Done,
    /// UDP.
    Udp(Udp),
}

/// Whether the engine's end of a pair may be read or written without EAGAIN.
///
/// A bridge clears a flag when a syscall says EAGAIN and an epoll event sets it again, so a
/// socket with nothing to move costs no syscall when the engine services its stack.
#[derive(Debug, Clone, Copy)]
pub struct PairReady {
    /// The application may have written something (or closed).
    pub rd: bool,
    /// The pair may have room for the application.
    pub wr: bool,
}

impl Default for PairReady {
    fn default() -> Self {
        PairReady { rd: true, wr: true }
    }
}

/// What identifies an open file whatever fd names it: (st_dev, st_ino).
pub type FileId = (u64, u64);

/// One socket of a stack.
#[derive(Debug)]
pub struct Sock {
    pub id: u64,
    /// The engine's end of the pair.
    pub fd: OwnedFd,
    /// The mio token of `fd`.
    pub token: usize,
    /// The application's end of the pair: a client without the engine's key proves with it
    /// that it holds the socket.
    pub app: FileId,
    pub domain: i32,
    pub stream: bool,
    pub protocol: i32,
    pub opts: Opts,
    /// The bound local address (port 0 never stays: bind picks one).
    pub local: Option<SocketAddr>,
    /// The connected peer.
    pub peer: Option<SocketAddr>,
    /// Pending error for SO_ERROR.
    pub so_error: i32,
    /// The application closed its last fd.
    pub app_closed: bool,
    /// The last connect() was nonblocking: its outcome goes to SO_ERROR and POLLOUT.
    pub nonblocking_connect: bool,
    /// A nonblocking connect failed and our end of the pair is shut for writing; what the
    /// application writes is dropped.
    pub pair_shut: bool,
    /// Blocking connects (control connections) waiting for the connection's outcome.
    pub waiters: Vec<usize>,
    /// shutdown(SHUT_RD) was called: discard what arrives.
    pub shut_rd: bool,
    /// The application asked to shut its end for writing (see [`Sock::hup_is_close`]).
    pub app_shut_wr: bool,
    /// Readiness of the engine's end of the pair, as the last syscall or epoll event left it.
    pub pair: PairReady,
    /// Where the socket is in its life.
    pub state: SockState,
}

impl Sock {
    /// A fresh socket.
    pub fn new(
        id: u64,
        (fd, app): (OwnedFd, FileId),
        token: usize,
        domain: i32,
        stream: bool,
        protocol: i32,
    ) -> Sock {
        let mut opts = Opts::default();
        if !stream {
            opts.rcvbuf = UDP_BUF;
            opts.sndbuf = UDP_BUF;
        }
        Sock {
            id,
            fd,
            token,
            app,
            domain,
            stream,
            protocol,
            opts,
            local: None,
            peer: None,
            so_error: 0,
            app_closed: false,
            nonblocking_connect: false,
            pair_shut: false,
            waiters: Vec::new(),
            shut_rd: false,
            app_shut_wr: false,
            pair: PairReady::default(),
            state: if stream {
                SockState::Fresh
            } else {
                SockState::Udp(Udp::default())
            },
        }
    }
}

impl Sock {
    /// Whether a hang-up on our end of the pair means the application closed its last fd.
    /// It does, unless the application shut its end for writing (through the library, which
    /// tells us first): both ends shut look like a hang-up too, and then the kernel is asked.
    pub fn hup_is_close(&self) -> bool {
        !self.app_shut_wr || crate::sys::unix_peer_gone(self.fd.as_raw_fd()).unwrap_or(true)
    }
}
