//! TCP bridge: a stream socketpair on one side, a smoltcp TCP socket on the other.
//! FIN from the peer becomes EOF on the pair (shutdown SHUT_WR of our end), EOF from the
//! application (its shutdown(SHUT_WR) or last close) becomes our FIN. A last close with
//! data unread, or data for a closed socket, becomes an RST; a reset from the peer ends the
//! pair (see `engine::ops::pump`), as Linux ends the calls on a reset socket.

use std::io;
use std::os::fd::RawFd;

use smoltcp::iface::{SocketHandle, SocketSet};
use smoltcp::socket::tcp::{self, State};
use smoltcp::time::Instant;

use crate::engine::sock::PairReady;
use crate::sys;

/// Bytes moved per socket per round before giving others a turn.
const ROUND_BYTES: usize = 1 << 20;

/// A connection (or connection attempt) bridged to a pair.
#[derive(Debug)]
pub struct Conn {
    /// Which socket set the smoltcp socket lives in.
    pub set: usize,
    /// The smoltcp socket.
    pub handle: SocketHandle,
    /// The application sent EOF; our FIN is queued.
    pub app_eof: bool,
    /// We delivered the peer's FIN (or a reset) as EOF on the pair.
    pub eof_sent: bool,
    /// When a connection attempt gives up.
    pub deadline: Option<Instant>,
    /// Padding bytes at the head of the pair (written by a nonblocking connect to hold back
    /// POLLOUT) still to be dropped before the application's own bytes.
    pub pad: usize,
    /// TCP_LINGER2 as set (0: the default, see `engine::ending`).
    pub linger2: i32,
    /// The application closed its last fd and we have seen it: an orphan, in Linux's words.
    pub orphan: bool,
    /// The application shut its end for reading: what arrives is dropped.
    pub rd_shut: bool,
    /// When an orphan waiting in FIN-WAIT-2 is dropped.
    pub fin_deadline: Option<Instant>,
    /// The smoltcp state the last pump saw: a socket ends in Closed after an RST and after
    /// the ACK of its last FIN alike, and Linux's error after an RST depends on the state.
    pub last: State,
}

/// What happened to a connection in one pump.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Still going.
    Open,
    /// The connection attempt succeeded.
    Established,
    /// The connection attempt or the connection failed with this errno.
    Failed(i32),
    /// Both directions are done; the smoltcp socket can go.
    Finished,
    /// The application closed with data unread, or data came after it closed: the
    /// connection is reset (Linux's tcp_close, RFC 1122 4.2.2.13).
    Abort,
    /// An orphan waits in FIN-WAIT-2 for the peer's FIN until then.
    Linger(Instant),
    /// An orphan waited in FIN-WAIT-2 long enough: it goes, silently, as on Linux (the
    /// peer's next segment finds no socket and gets an RST).
    Expired,
}

/// Creates a smoltcp TCP socket with the given buffer sizes and options.
pub fn new_socket(rx: usize, tx: usize, nodelay: bool, keepalive: bool) -> tcp::Socket<'static> {
    let mut s = tcp::Socket::new(
        tcp::SocketBuffer::new(vec![0; rx]),
        tcp::SocketBuffer::new(vec![0; tx]),
    );
    s.set_nagle_enabled(!nodelay);
    s.set_congestion_control(tcp::CongestionControl::Cubic);
    s.set_ack_delay(Some(smoltcp::time::Duration::from_millis(10)));
    if keepalive {
        s.set_keep_alive(Some(smoltcp::time::Duration::from_secs(75)));
    }
    s
}

impl Conn {
    /// A connection (attempt) of smoltcp socket `handle` in `set`.
    pub fn new(set: usize, handle: SocketHandle, deadline: Option<Instant>, linger2: i32) -> Conn {
        Conn {
            set,
            handle,
            app_eof: false,
            eof_sent: false,
            deadline,
            pad: 0,
            linger2,
            orphan: false,
            rd_shut: false,
            fin_deadline: None,
            last: State::SynSent,
        }
    }

    /// Moves bytes both ways and reports the connection's fate. `connecting` says whether the
    /// handshake is still awaited. `app_closed` says the application closed its last fd.
    #[allow(clippy::too_many_arguments)]
    pub fn pump(
        &mut self,
        fd: RawFd,
        pair: &mut PairReady,
        sets: &mut [SocketSet<'static>; 2],
        now: Instant,
        connecting: bool,
        app_closed: &mut bool,
        moved: &mut bool,
    ) -> Outcome {
        let sock = sets[self.set].get_mut::<tcp::Socket>(self.handle);
        if connecting {
            return match sock.state() {
                State::SynSent | State::SynReceived => match self.deadline {
                    Some(d) if now >= d => {
                        sock.abort();
                        Outcome::Failed(libc::ETIMEDOUT)
                    }
                    _ => Outcome::Open,
                },
                State::Closed | State::Listen => Outcome::Failed(libc::ECONNREFUSED),
                s => {
                    self.last = s;
                    Outcome::Established
                }
            };
        }
        if *app_closed && !self.orphan {
            self.orphan = true;
            // Linux's tcp_close: data the application never read means a reset. The kernel
            // told us if the pair held some: the last close of the other end sets ECONNRESET
            // on ours.
            let in_pair = sys::getsockopt_int(fd, libc::SOL_SOCKET, libc::SO_ERROR).ok()
                == Some(libc::ECONNRESET);
            if in_pair || sock.recv_queue() > 0 {
                return Outcome::Abort;
            }
        }
        // net → app
        let mut n_out = 0;
        while sock.can_recv() && n_out < ROUND_BYTES {
            if self.orphan {
                return Outcome::Abort; // data for a closed socket
            }
            if self.rd_shut {
                let _ = sock.recv(|b| (b.len(), ()));
                continue;
            }
            if !pair.wr {
                break;
            }
            let r = sock.recv(|b| match sys::send(fd, b) {
                Ok(n) => (n, Ok(n)),
                Err(e) => (0, Err(e)),
            });
            match r {
                Ok(Ok(n)) => {
                    n_out += n;
                    *moved = true;
                }
                Ok(Err(e)) if e.kind() == io::ErrorKind::WouldBlock => {
                    pair.wr = false;
                    break;
                }
                Ok(Err(_)) if sys::hung_up(fd) && sys::unix_peer_gone(fd).unwrap_or(true) => {
                    // EPIPE: the application closed (its hang-up event is on its way) with
                    // this data unread.
                    *app_closed = true;
                    self.orphan = true;
                    return Outcome::Abort;
                }
                Ok(Err(_)) => self.rd_shut = true, // EPIPE: shutdown(SHUT_RD)
                Err(_) => break,
            }
        }
        if sock.state() == State::Closed {
            let reset = sock.rst_received()
                || !matches!(self.last, State::LastAck | State::TimeWait | State::Closed);
            if reset && !self.orphan {
                // What arrived before the reset went into the pair above as far as it had
                // room; the rest is lost (Linux keeps it all readable).
                return Outcome::Failed(if self.last == State::CloseWait {
                    libc::EPIPE // Linux's tcp_reset: after the peer's FIN, EPIPE
                } else {
                    libc::ECONNRESET
                });
            }
        }
        if !self.eof_sent && !sock.may_recv() && sock.recv_queue() == 0 {
            // The peer's FIN: EOF for the application.
            let _ = sys::shutdown(fd, libc::SHUT_WR);
            self.eof_sent = true;
            *moved = true;
        }
        // app → net
        let mut n_in = 0;
        // Padding still on its way (the client writes it after our reply) holds back the
        // application's bytes behind it.
        let unpadded = self.pad == 0 || self.drop_pad(fd);
        while unpadded && !self.app_eof && n_in < ROUND_BYTES && pair.rd {
            if !sock.may_send() || sock.send_queue() >= sock.send_capacity() {
                break;
            }
            let r = sock.send(|b| match sys::read(fd, b) {
                Ok(n) => (n, Ok(n)),
                Err(e) => (0, Err(e)),
            });
            match r {
                Ok(Ok(0)) => {
                    self.app_eof = true;
                    sock.close();
                    // The socket goes as soon as it reaches TIME-WAIT (Outcome::Finished):
                    // the ACK of the peer's FIN must go with no delay, or never (the peer
                    // would resend its FIN and get a reset).
                    sock.set_ack_delay(None);
                    *moved = true;
                }
                Ok(Ok(n)) => {
                    n_in += n;
                    *moved = true;
                }
                Ok(Err(e)) if e.kind() == io::ErrorKind::WouldBlock => {
                    pair.rd = false;
                    break;
                }
                _ => break,
            }
        }
        // An application that closed its end may have left bytes in the pair: they are read
        // (above, as room allows) before the EOF that queues our FIN, as the kernel sends
        // what a closed socket had written.
        let state = sock.state();
        self.last = state;
        if self.orphan && state == State::FinWait2 {
            match (
                crate::engine::ending::fin_wait(self.linger2),
                self.fin_deadline,
            ) {
                (None, _) => return Outcome::Abort, // a negative TCP_LINGER2
                (Some(_), Some(at)) if now >= at => return Outcome::Expired,
                (Some(_), Some(_)) => {}
                (Some(d), None) => {
                    let at = now + d;
                    self.fin_deadline = Some(at);
                    return Outcome::Linger(at);
                }
            }
        }
        match state {
            State::Closed | State::TimeWait if self.eof_sent => Outcome::Finished,
            State::Closed if self.orphan => Outcome::Finished,
            _ => Outcome::Open,
        }
    }
}

impl Conn {
    /// Drops the padding a nonblocking connect put at the head of the pair; true when it is
    /// all gone. Draining it makes the application's end writable: that is its POLLOUT.
    pub fn drop_pad(&mut self, fd: RawFd) -> bool {
        self.pad -= discard(fd, self.pad);
        self.pad == 0
    }
}

/// Reads and drops up to `n` bytes from the engine's end of a pair; returns how many. Reads
/// never ask for more than is left, so nothing after those bytes is touched.
pub fn discard(fd: RawFd, n: usize) -> usize {
    let mut buf = [0u8; 16 * 1024];
    let mut done = 0;
    while done < n {
        let want = (n - done).min(buf.len());
        match sys::read(fd, &mut buf[..want]) {
            Ok(0) | Err(_) => break,
            Ok(k) => done += k,
        }
    }
    done
}
