//! Control connections: accepting them, who may do what on them, and serving them fairly.
//!
//! - Access: a connection's first message is a hello. With the engine's key it may do
//!   everything; without it, only requests on a socket whose application end comes attached
//!   (SCM_RIGHTS), which the engine checks by (st_dev, st_ino) against the end it made.
//!   Anything else is EACCES.
//! - Fairness: each connection is served at most [`TURN`] requests per turn of the loop and
//!   then goes to the back of the queue, so a client that floods requests delays the others
//!   by a bounded amount; the listener likewise accepts at most [`ACCEPTS`] per turn.
//! - Outsiders: a connection whose first message is not a hello is closed; at most
//!   [`UNPROVEN`] connections that hold no key and proved no fd are kept (beyond that the
//!   oldest is closed), so anyone who can see the name cannot exhaust the engine's fds.
//! - Fds from clients are closed by a thread of their own ([`Reaper`]): closing a file can
//!   wait (a TCP socket with SO_LINGER, a FUSE file, an AF_UNIX socket holding such fds in
//!   its queue), and it must not be the engine that waits.

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

use mio::unix::SourceFd;
use mio::{Interest, Token};

use super::{stack, Engine, Source};
use crate::control::key;
use crate::control::proto::{Reply, Request};
use crate::control::{self};
use crate::sys;

/// Requests served on one connection before the others get their turn.
pub const TURN: usize = 4;
/// Connections accepted per turn.
pub const ACCEPTS: usize = 32;
/// Connections kept that hold no key and proved no fd.
pub const UNPROVEN: usize = 64;

thread_local! {
    /// The engine's buffer for control messages (one thread, one request at a time).
    static CTL_BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// A control connection. A client sends one request at a time and waits for its reply.
pub struct CtlConn {
    pub fd: OwnedFd,
    /// A request's reply was deferred (a blocking connect, accept, dhcp) and is still owed.
    pub owed: bool,
    /// The client hung up while a reply was owed: the slot stays taken until that reply
    /// comes and is dropped, so it can never reach a later connection given the same token.
    pub gone: bool,
    /// Its hello came.
    hello: bool,
    /// Its hello showed the engine's key.
    keyed: bool,
    /// It is in the queue of connections to serve.
    queued: bool,
    /// It was served once: it had its chance to say hello.
    seen: bool,
}

/// The control connections' state in the engine.
#[derive(Default)]
pub struct Ctls {
    /// Connections (and the listener) that may have input, in the order they get served.
    queue: VecDeque<usize>,
    /// The listener is in `queue`.
    listener_queued: bool,
    /// Connections with no key that proved nothing yet, oldest first.
    unproven: VecDeque<usize>,
    reaper: Reaper,
}

impl Ctls {
    /// Whether some connection waits to be served: the engine must not sleep.
    pub fn busy(&self) -> bool {
        !self.queue.is_empty()
    }
}

/// What one read from a connection gave.
enum Msg {
    /// Nothing more for now.
    Empty,
    /// EOF or an error: the client is gone.
    Gone,
    /// A message: the request (or the errno it gets), and the fds that came with it.
    Req(Result<Request, i32>, Vec<OwnedFd>),
}

fn read_msg(fd: i32) -> Msg {
    CTL_BUF.with(|b| {
        let mut buf = b.borrow_mut();
        buf.resize(control::client::MAX_MSG, 0);
        match sys::recv_msg_untrusted(fd, &mut buf) {
            Ok((0, fds, _)) if fds.is_empty() => Msg::Gone,
            Ok((_, fds, flags)) if flags & (libc::MSG_TRUNC | libc::MSG_CTRUNC) != 0 => {
                Msg::Req(Err(libc::EMSGSIZE), fds)
            }
            Ok((n, fds, _)) => Msg::Req(Request::decode(&buf[..n]).map_err(|_| libc::EINVAL), fds),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Msg::Empty,
            Err(_) => Msg::Gone,
        }
    })
}

impl Engine {
    /// An epoll event on the listener or a connection: queue it to be served.
    pub(super) fn ctl_ready(&mut self, token: usize) {
        match self.sources.get_mut(token) {
            Some(Source::CtlListener(_)) if !self.ctls.listener_queued => {
                self.ctls.listener_queued = true;
                self.ctls.queue.push_back(token);
            }
            Some(Source::CtlConn(c)) if !c.queued => {
                c.queued = true;
                self.ctls.queue.push_back(token);
            }
            _ => {}
        }
    }

    /// Serves each queued connection once: up to TURN requests (ACCEPTS connections for the
    /// listener); those that may have more go to the back of the queue for the next turn.
    pub(super) fn serve_ctls(&mut self, work: &mut Vec<u32>) {
        for _ in 0..self.ctls.queue.len() {
            let Some(token) = self.ctls.queue.pop_front() else {
                return;
            };
            let more = match self.sources.get(token) {
                Some(Source::CtlListener(_)) => self.accept_some(token),
                Some(Source::CtlConn(_)) => self.serve_conn(token, work),
                _ => false,
            };
            match self.sources.get_mut(token) {
                Some(Source::CtlListener(_)) => {
                    self.ctls.listener_queued = more;
                    if more {
                        self.ctls.queue.push_back(token);
                    }
                }
                Some(Source::CtlConn(c)) => {
                    c.queued = more;
                    if more {
                        self.ctls.queue.push_back(token);
                    }
                }
                _ => {}
            }
        }
        self.limit_unproven();
    }

    /// Accepts up to ACCEPTS connections; true if more may wait.
    fn accept_some(&mut self, token: usize) -> bool {
        let Some(Source::CtlListener(l)) = self.sources.get(token) else {
            return false;
        };
        let lfd = l.as_raw_fd();
        for _ in 0..ACCEPTS {
            let Ok(conn) = sys::accept(lfd) else {
                return false; // EAGAIN, or out of fds: the next connection retries
            };
            let fd = conn.as_raw_fd();
            let t = self.sources.insert(Source::CtlConn(CtlConn {
                fd: conn,
                owed: false,
                gone: false,
                hello: false,
                keyed: false,
                queued: true,
                seen: false,
            }));
            if self
                .poll
                .registry()
                .register(&mut SourceFd(&fd), Token(t), Interest::READABLE)
                .is_err()
            {
                self.sources.remove(t);
                continue;
            }
            // Its hello may be there already, before any edge we would be told of.
            self.ctls.queue.push_back(t);
            self.ctls.unproven.push_back(t);
        }
        true
    }

    /// Closes the oldest connections without key or proof beyond UNPROVEN, among those
    /// served once already (a client's hello may be just behind its connect).
    fn limit_unproven(&mut self) {
        let mut excess = self.ctls.unproven.len().saturating_sub(UNPROVEN);
        let mut i = 0;
        while excess > 0 && i < self.ctls.unproven.len() {
            let t = self.ctls.unproven[i];
            if matches!(self.sources.get(t), Some(Source::CtlConn(c)) if c.seen) {
                self.close_conn(t); // removes it from `unproven`
                excess -= 1;
            } else {
                i += 1;
            }
        }
    }

    /// Serves up to TURN requests of connection `token`; true if more may wait.
    fn serve_conn(&mut self, token: usize, work: &mut Vec<u32>) -> bool {
        for _ in 0..TURN {
            let Some(Source::CtlConn(c)) = self.sources.get_mut(token) else {
                return false;
            };
            c.seen = true;
            if c.owed || c.gone {
                return false; // served again once the reply is sent
            }
            let (hello, keyed) = (c.hello, c.keyed);
            let (req, fds) = match read_msg(c.fd.as_raw_fd()) {
                Msg::Empty => return false,
                Msg::Gone => {
                    self.hang_up(token);
                    return false;
                }
                Msg::Req(req, fds) => (req, fds),
            };
            if !hello {
                // The first message must be a hello: anything else is not a client of ours.
                for f in fds {
                    self.ctls.reaper.reap(f);
                }
                let Ok(Request::Hello { key }) = req else {
                    self.close_conn(token);
                    return false;
                };
                let keyed = key.is_some_and(|k| key::same(&k, &self.key));
                if let Some(Source::CtlConn(c)) = self.sources.get_mut(token) {
                    c.hello = true;
                    c.keyed = keyed;
                }
                if keyed {
                    self.ctls.unproven.retain(|t| *t != token);
                }
                continue;
            }
            let req = match req {
                Ok(Request::Hello { .. }) => {
                    self.close_conn(token); // a second hello: not a client of ours
                    fds.into_iter().for_each(|f| self.ctls.reaper.reap(f));
                    return false;
                }
                Ok(req) => req,
                Err(e) => {
                    fds.into_iter().for_each(|f| self.ctls.reaper.reap(f));
                    self.reply(token, Reply::Err(e), None);
                    continue;
                }
            };
            let allowed = keyed || self.proves(&req, fds.first());
            let mut fds = fds.into_iter();
            if allowed && !keyed {
                drop(fds.next()); // the proof: our own pair's end, closed at no risk
            }
            fds.for_each(|f| self.ctls.reaper.reap(f));
            if !allowed {
                tracing::warn!(
                    conn = token,
                    "request refused (EACCES): the connection shows neither the engine's key nor the socket's fd"
                );
                self.reply(token, Reply::Err(libc::EACCES), None);
                continue;
            }
            if !keyed {
                self.ctls.unproven.retain(|t| *t != token);
            }
            if !self.sources.contains(token) {
                return false;
            }
            // A request that panics still gets an answer, or its caller would wait.
            let reply = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                self.request(token, req, work)
            }))
            .unwrap_or_else(|_| {
                tracing::error!("internal error answering a request (panic recovered; EIO)");
                Some((Reply::Err(libc::EIO), None))
            });
            match reply {
                Some((reply, fd)) => self.reply(token, reply, fd),
                None => {
                    if let Some(Source::CtlConn(c)) = self.sources.get_mut(token) {
                        c.owed = true;
                    }
                    return false;
                }
            }
        }
        true
    }

    /// Whether `fd` is the application's end of the socket `req` is about.
    fn proves(&self, req: &Request, fd: Option<&OwnedFd>) -> bool {
        let (Some(id), Some(fd)) = (super::ops::sock_of(req), fd) else {
            return false;
        };
        let Some(st) = self.stacks.get(&stack::stack_of_sock(id)) else {
            return false;
        };
        // A reset socket too (engine/ending.rs): it answers its application until it closes.
        let Some(app) = st.socks.get(&id).map(|s| s.app).or(st.endings.app(id)) else {
            return false;
        };
        // A socket first: fstat of a file can wait on its filesystem (FUSE); getsockopt on
        // something that is not a socket fails at once.
        let unix = sys::getsockopt_int(fd.as_raw_fd(), libc::SOL_SOCKET, libc::SO_DOMAIN);
        unix.ok() == Some(libc::AF_UNIX) && sys::file_id(fd.as_raw_fd()).ok() == Some(app)
    }

    /// Closes a connection the engine gives up on (garbage, a surplus outsider). Its queue
    /// may hold fds: the reaper closes it.
    fn close_conn(&mut self, token: usize) {
        let Some(Source::CtlConn(c)) = self.sources.get(token) else {
            return;
        };
        if c.owed {
            return; // a connection owed a reply is never an outsider's
        }
        let _ = self
            .poll
            .registry()
            .deregister(&mut SourceFd(&c.fd.as_raw_fd()));
        self.drop_conn(token);
    }

    /// Removes connection `token`. Even after EOF its queue may hold messages (a zero-length
    /// one reads as EOF too), with fds: the reaper closes it.
    fn drop_conn(&mut self, token: usize) {
        self.ctls.queue.retain(|t| *t != token);
        self.ctls.unproven.retain(|t| *t != token);
        if let Some(Source::CtlConn(c)) = self.sources.try_remove(token) {
            // The client sees the end now, even while the reaper waits on another close.
            let _ = sys::shutdown(c.fd.as_raw_fd(), libc::SHUT_RDWR);
            self.ctls.reaper.reap(c.fd);
        }
    }

    /// Forgets a control connection whose client hung up.
    pub(super) fn hang_up(&mut self, token: usize) {
        let Some(Source::CtlConn(c)) = self.sources.get_mut(token) else {
            return;
        };
        let _ = self
            .poll
            .registry()
            .deregister(&mut SourceFd(&c.fd.as_raw_fd()));
        if c.owed {
            c.gone = true; // see CtlConn::gone
        } else {
            self.drop_conn(token);
        }
    }

    /// Sends a reply on control connection `token` (dropped if its client hung up).
    pub(super) fn reply(&mut self, token: usize, reply: Reply, fd: Option<OwnedFd>) {
        let Some(Source::CtlConn(c)) = self.sources.get_mut(token) else {
            return;
        };
        match &reply {
            Reply::Err(e) => tracing::debug!(
                conn = token,
                errno = e,
                "request failed: {}",
                io::Error::from_raw_os_error(*e)
            ),
            Reply::Cmd {
                status, message, ..
            } if *status != 0 => {
                tracing::debug!(conn = token, status, "configuration failed: {message}")
            }
            _ => {}
        }
        let was_owed = std::mem::replace(&mut c.owed, false);
        if c.gone {
            self.drop_conn(token);
            return;
        }
        let fds: Vec<i32> = fd.iter().map(|f| f.as_raw_fd()).collect();
        // Nonblocking: a client that does not read its replies is dropped, never waited for.
        if sys::send_msg(c.fd.as_raw_fd(), &reply.encode(), &fds).is_err() {
            self.hang_up(token);
        } else if was_owed {
            // Reading stopped while the reply was owed: look again.
            self.ctl_ready(token);
        }
    }
}

/// Closes fds on a thread of its own (see the module's doc).
#[derive(Default)]
pub struct Reaper {
    tx: Option<std::sync::mpsc::Sender<OwnedFd>>,
}

impl Reaper {
    fn reap(&mut self, fd: OwnedFd) {
        // A socket a client handed over closes without lingering (fails harmlessly on other
        // files). What its queue holds, or a FUSE file, may still make the close wait.
        let _ = sys::no_linger(fd.as_raw_fd());
        if self.tx.is_none() {
            let (tx, rx) = std::sync::mpsc::channel::<OwnedFd>();
            let spawned = std::thread::Builder::new()
                .name("vdestack-reaper".into())
                .spawn(move || rx.into_iter().for_each(drop));
            if spawned.is_ok() {
                self.tx = Some(tx);
            }
        }
        match &self.tx {
            Some(tx) => {
                if let Err(e) = tx.send(fd) {
                    drop(e.0);
                }
            }
            None => drop(fd), // no thread to be had: close it here rather than leak it
        }
    }
}
