//! The client side of the control path, used by the Rust API and the C library alike.

use std::cell::RefCell;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use super::key::{self, Key};
use super::proto::{Reply, Request};
use crate::sys;

/// A handle on one engine's control socket: its abstract name, and the engine's key when
/// this handle carries it, so it stays valid across fork() and can be passed to another
/// program (see [`super::key`]).
#[derive(Clone, PartialEq, Eq)]
pub struct Ctl {
    name: Vec<u8>,
    key: Option<Key>,
}

impl std::fmt::Debug for Ctl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key: a Debug print must not hand out the stack.
        f.debug_struct("Ctl")
            .field("name", &String::from_utf8_lossy(&self.name))
            .field("key", &self.key.map(|_| "<held>"))
            .finish()
    }
}

/// The largest control message either side sends.
pub const MAX_MSG: usize = 64 * 1024;

/// A thread's open connection to one engine, with the process it was opened in.
struct Conn {
    engine: Vec<u8>,
    pid: i32,
    fd: OwnedFd,
    /// Its hello showed a key: requests need no proof.
    keyed: bool,
}

thread_local! {
    /// Each thread keeps its connections: one request at a time per connection, so replies
    /// cannot mix between threads; a forked child sees another pid and opens its own.
    static CONNS: RefCell<Vec<Conn>> = const { RefCell::new(Vec::new()) };
    /// The buffer replies are read into.
    static BUF: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Engines a thread keeps a connection to.
const KEEP: usize = 4;

/// How long a caller polls for its reply before it sleeps: most replies come within tens of
/// microseconds (the engine spins after work, see engine/spin.rs), and a reply caught awake
/// saves the wake-up. A thread spins only while its last reply came that soon. It costs CPU
/// that a saturated machine would rather give the engine: `VDESTACK_REPLY_SPIN_US` sets it
/// (default 30; 0 turns it off, as does `VDESTACK_SPIN_US=0`).
fn reply_spin() -> std::time::Duration {
    static SPIN: std::sync::OnceLock<std::time::Duration> = std::sync::OnceLock::new();
    *SPIN.get_or_init(|| {
        let us = |k: &str| {
            std::env::var(k)
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok())
        };
        let us = match us("VDESTACK_SPIN_US") {
            Some(0) => 0,
            _ => us("VDESTACK_REPLY_SPIN_US").unwrap_or(30),
        };
        std::time::Duration::from_micros(us)
    })
}

/// Receives a reply: polls for a moment if that paid last time, then blocks.
fn wait_reply(fd: RawFd, buf: &mut [u8]) -> io::Result<(usize, Option<OwnedFd>)> {
    thread_local! {
        static WORTH: std::cell::Cell<bool> = const { std::cell::Cell::new(true) };
    }
    let start = std::time::Instant::now();
    let window = reply_spin();
    let r = loop {
        if !WORTH.get() || start.elapsed() >= window {
            break sys::recv_msg(fd, buf);
        }
        match sys::recv_msg_flags(fd, buf, libc::MSG_DONTWAIT) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::hint::spin_loop(),
            r => break r,
        }
    };
    WORTH.set(start.elapsed() <= window);
    r
}

impl Ctl {
    /// A handle on the engine whose control socket has this abstract name. Connections
    /// show the key this process holds for it ([`key::lookup`]), if any.
    pub fn from_name(name: Vec<u8>) -> Ctl {
        Ctl { name, key: None }
    }

    /// A handle that shows `key`; the process remembers it for this engine's fds too.
    pub fn with_key(name: Vec<u8>, key: Key) -> Ctl {
        key::remember(&name, key);
        Ctl {
            name,
            key: Some(key),
        }
    }

    /// The key connections to this engine show: the handle's own, or the one the process
    /// holds for the engine.
    pub fn key(&self) -> Option<Key> {
        self.key.or_else(|| key::lookup(&self.name))
    }

    /// The control socket's abstract name.
    pub fn name(&self) -> &[u8] {
        &self.name
    }

    /// The engine and socket id behind a stack fd, or None if `fd` is not one.
    pub fn of_fd(fd: RawFd) -> Option<(Ctl, u64)> {
        let peer = sys::peer_abstract_name(fd)?;
        let (name, id) = super::parse_sock_name(&peer)?;
        Some((Ctl { name, key: None }, id))
    }

    /// Sends one request and waits for its reply (and the fd passed with it, if any).
    ///
    /// The calling thread's connection to the engine is reused; it is taken out of the cache
    /// for the call, so a call made meanwhile (a signal handler) opens its own.
    pub fn call_fd(&self, req: &Request) -> io::Result<(Reply, Option<OwnedFd>)> {
        self.exchange(req, None)
    }

    /// [`Ctl::call_fd`] for a request on the socket `fd` is an end of: on a connection
    /// without the engine's key, `fd` goes with the request (SCM_RIGHTS) to prove that
    /// this process holds it.
    pub fn call_fd_on(&self, req: &Request, fd: RawFd) -> io::Result<(Reply, Option<OwnedFd>)> {
        self.exchange(req, Some(fd))
    }

    fn exchange(
        &self,
        req: &Request,
        proof: Option<RawFd>,
    ) -> io::Result<(Reply, Option<OwnedFd>)> {
        // SAFETY: getpid cannot fail.
        let pid = unsafe { libc::getpid() };
        let msg = req.encode();
        let send = |c: &Conn| {
            let fds: &[RawFd] = match &proof {
                Some(fd) if !c.keyed => std::slice::from_ref(fd),
                _ => &[],
            };
            sys::send_msg(c.fd.as_raw_fd(), &msg, fds)
        };
        let mut retried = false;
        loop {
            let mut conn = None;
            if let Some(c) = self.cached(pid) {
                // The application may have closed our fd and reused its number (closefrom
                // in a daemon): only a socket still connected to this engine is used.
                let ours = sys::peer_abstract_name(c.fd.as_raw_fd()).as_deref() == Some(&self.name);
                if ours && send(&c).is_ok() {
                    conn = Some(c);
                } else if !ours {
                    std::mem::forget(c.fd); // not ours any more: never close it
                }
            }
            let conn = match conn {
                Some(c) => c,
                None => {
                    let c = self.connect(pid)?;
                    send(&c)?;
                    c
                }
            };
            let receive = |buf: &mut Vec<u8>| {
                buf.resize(MAX_MSG, 0);
                let (n, fd) = wait_reply(conn.fd.as_raw_fd(), buf)?;
                if n == 0 {
                    return Ok(None);
                }
                Ok(Some((Reply::decode(&buf[..n])?, fd)))
            };
            // At exit (a destructor of the C library lingering) the thread's locals may be
            // gone already: a buffer of its own then, and no connection kept.
            let r = BUF
                .try_with(|b| receive(&mut b.borrow_mut()))
                .unwrap_or_else(|_| receive(&mut Vec::new()));
            match r {
                // EOF: the engine closed the connection without reading the request (it
                // closes surplus connections that never proved anything). Once more on a
                // fresh one; if the engine is gone, connecting says so.
                Ok(None) if !retried => retried = true,
                Ok(None) => return Err(sys::errno_err(libc::ENETDOWN)),
                Ok(Some(r)) => {
                    let _ = CONNS.try_with(|c| {
                        let mut v = c.borrow_mut();
                        if v.len() < KEEP {
                            v.push(conn);
                        }
                    });
                    return Ok(r);
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Takes this thread's connection to the engine out of the cache, if it has one from
    /// this process.
    fn cached(&self, pid: i32) -> Option<Conn> {
        CONNS
            .try_with(|c| {
                let mut v = c.borrow_mut();
                // A forked child's copies are its parent's connections: forget them (closing our
                // copy leaves the parent's open).
                v.retain(|c| c.pid == pid);
                let i = v.iter().position(|c| c.engine == self.name)?;
                Some(v.swap_remove(i))
            })
            .ok()
            .flatten()
    }

    fn connect(&self, pid: i32) -> io::Result<Conn> {
        let sock = sys::unix_socket(libc::SOCK_SEQPACKET)?;
        sys::connect_abstract(sock.as_raw_fd(), &self.name).map_err(|e| {
            if e.raw_os_error() == Some(libc::ECONNREFUSED) {
                // The engine is gone (its process ended): the stack no longer exists.
                sys::errno_err(libc::ENETDOWN)
            } else {
                e
            }
        })?;
        // The hello gets no reply: it costs one message per connection, not a round trip.
        let key = self.key();
        sys::send_msg(sock.as_raw_fd(), &Request::Hello { key }.encode(), &[])?;
        Ok(Conn {
            engine: self.name.clone(),
            pid,
            fd: sock,
            keyed: key.is_some(),
        })
    }

    /// Sends one request and returns its reply; `Reply::Err(e)` becomes an `io::Error`.
    pub fn call(&self, req: &Request) -> io::Result<Reply> {
        match self.call_fd(req)?.0 {
            Reply::Err(e) => Err(sys::errno_err(e)),
            r => Ok(r),
        }
    }

    /// [`Ctl::call`] for a request on the socket `fd` is an end of (see [`Ctl::call_fd_on`]).
    pub fn call_on(&self, req: &Request, fd: RawFd) -> io::Result<Reply> {
        match self.call_fd_on(req, fd)?.0 {
            Reply::Err(e) => Err(sys::errno_err(e)),
            r => Ok(r),
        }
    }

    /// Sends a request whose successful reply carries an fd.
    pub fn call_for_fd(&self, req: &Request) -> io::Result<(Reply, OwnedFd)> {
        match self.call_fd(req)? {
            (Reply::Err(e), _) => Err(sys::errno_err(e)),
            (r, Some(fd)) => Ok((r, fd)),
            (_, None) => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "engine sent no fd",
            )),
        }
    }
}
