//! What the supervisor does with each trapped call. A call on an fd that is not a stack fd
//! goes on in the kernel untouched. On a stack fd it runs [`crate::socket`], the functions
//! the C library runs on it, on a copy of the target's fd: the fd is the socket, only the
//! memory is the target's. Calls that can wait are answered from a worker thread.

use std::io;
use std::mem::offset_of;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::Arc;

use super::notify::{signal_thread, Listener, Notif};
use super::remote::{self, MAX_DATA};
use crate::socket as vs;
use crate::sys;

/// How a trapped call is answered.
pub enum Answer {
    /// The kernel runs it as the target made it.
    Continue,
    /// It returns this value.
    Value(i64),
    /// It returns a new fd of the target's, a copy of this one (close-on-exec or not).
    Fd(OwnedFd, bool),
    /// A worker runs this, which may wait, and answers with what it returns.
    Later(Job),
}

/// A call's work that may wait (for a connection, data, room).
pub type Job = Box<dyn FnOnce() -> io::Result<Answer> + Send>;

/// The target of one notification: its thread's memory, touched only while the
/// notification is still pending (so only while that thread waits in the call).
#[derive(Clone)]
pub struct Target {
    pub lis: Arc<Listener>,
    pub n: Notif,
}

/// The error of a call whose target went away (interrupted by a signal, or dead): there is
/// nobody to answer.
pub fn gone() -> io::Error {
    io::Error::from_raw_os_error(libc::ESRCH)
}

impl Target {
    pub(super) fn arg(&self, i: usize) -> u64 {
        self.n.args[i]
    }
    pub(super) fn int(&self, i: usize) -> i32 {
        self.n.args[i] as i32
    }
    /// Fails with [`gone`] when the notification is no longer pending.
    pub(super) fn check(&self) -> io::Result<()> {
        if self.lis.valid(self.n.id) {
            Ok(())
        } else {
            Err(gone())
        }
    }
    // Reads are checked after (the thread id could name another thread by then), writes
    // before (the thread must still be waiting in this call for its memory to be ours).
    fn read(&self, addr: u64, buf: &mut [u8]) -> io::Result<()> {
        remote::read(self.n.tid, addr, buf)?;
        self.check()
    }
    pub(super) fn read_value<T: Copy>(&self, addr: u64) -> io::Result<T> {
        let v = remote::read_value(self.n.tid, addr)?;
        self.check().map(|_| v)
    }
    pub(super) fn read_addr(&self, addr: u64, len: u64) -> io::Result<SocketAddr> {
        let a = remote::read_addr(self.n.tid, addr, len);
        self.check()?;
        a
    }
    fn write(&self, addr: u64, data: &[u8]) -> io::Result<()> {
        self.check()?;
        remote::write(self.n.tid, addr, data)
    }
    pub(super) fn write_value<T: Copy>(&self, addr: u64, v: &T) -> io::Result<()> {
        self.check()?;
        remote::write_value(self.n.tid, addr, v)
    }
    fn write_addr(&self, a: SocketAddr, addr: u64, lenp: u64) -> io::Result<()> {
        self.check()?;
        remote::write_addr(self.n.tid, a, addr, lenp)
    }

    /// Waits until `fd` has one of `events`; [`gone`] if the target stops waiting first
    /// (a signal interrupted it, it died), checked every 100 ms and once more when the fd
    /// is ready: a connection or datagram is taken only for a target still waiting for it.
    pub(super) fn wait(&self, fd: RawFd, events: i16) -> io::Result<()> {
        loop {
            let ready = sys::poll_one(fd, events, 100)? != 0;
            self.check()?;
            if ready {
                return Ok(());
            }
        }
    }
}

/// Whether a data call on `fd` with `flags` should wait when it cannot go on at once.
pub(super) fn waits(fd: RawFd, flags: i32) -> bool {
    flags & libc::MSG_DONTWAIT == 0 && !sys::is_nonblocking(fd)
}

fn errno(e: i32) -> io::Error {
    sys::errno_err(e)
}

pub(super) fn again(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EAGAIN))
}

/// A call on the stack fd `fd` (a copy of the target's).
pub fn on_stack_fd(t: Target, fd: OwnedFd) -> io::Result<Answer> {
    let nr = t.n.nr;
    let f = fd.as_raw_fd();
    match nr {
        libc::SYS_bind => {
            let a = t.read_addr(t.arg(1), t.arg(2))?;
            vs::bind(f, a).map(|_| Answer::Value(0))
        }
        libc::SYS_listen => vs::listen(f, t.int(1)).map(|_| Answer::Value(0)),
        libc::SYS_connect => {
            let a = t.read_addr(t.arg(1), t.arg(2))?;
            if sys::is_nonblocking(f) {
                return vs::connect(f, a).map(|_| Answer::Value(0));
            }
            Ok(Answer::Later(Box::new(move || {
                vs::connect(fd.as_raw_fd(), a).map(|_| Answer::Value(0))
            })))
        }
        libc::SYS_accept | libc::SYS_accept4 => {
            let flags = if nr == libc::SYS_accept4 { t.int(3) } else { 0 };
            accept(t, fd, flags)
        }
        libc::SYS_getsockname | libc::SYS_getpeername => {
            let a = if nr == libc::SYS_getsockname {
                vs::local_addr(f)?
            } else {
                vs::peer_addr(f)?
            };
            t.write_addr(a, t.arg(1), t.arg(2))
                .map(|_| Answer::Value(0))
        }
        libc::SYS_getsockopt => getsockopt(&t, f),
        libc::SYS_setsockopt => setsockopt(&t, f),
        libc::SYS_shutdown => vs::shutdown(f, t.int(1)).map(|_| Answer::Value(0)),
        libc::SYS_sendto => {
            let len = t.arg(2) as usize;
            let flags = t.int(3);
            if stream(f) {
                // TCP takes no address on a connected socket.
                let data = read_data(&t, t.arg(1), len)?;
                return stream_send(t, fd, data, flags);
            }
            if len > MAX_DATA {
                return Err(errno(libc::EMSGSIZE));
            }
            let to = t.read_addr(t.arg(4), t.arg(5))?;
            let data = read_data(&t, t.arg(1), len)?;
            dgram_send(t, fd, data, Some(to), flags)
        }
        libc::SYS_recvfrom => {
            let flags = t.int(3);
            let out = Out::Buf {
                addr: t.arg(1),
                len: t.arg(2) as usize,
                name: t.arg(4),
                lenp: t.arg(5),
            };
            recv(t, fd, out, flags)
        }
        libc::SYS_sendmsg => sendmsg(t, fd),
        libc::SYS_recvmsg => recvmsg(t, fd),
        // sendmmsg/recvmmsg: on TCP, the kernel's own on the pair (no address to answer).
        _ if stream(f) => Ok(Answer::Continue),
        libc::SYS_sendmmsg => super::mmsg::sendmmsg(t, fd),
        libc::SYS_recvmmsg => super::mmsg::recvmmsg(t, fd),
        _ => Ok(Answer::Continue),
    }
}

/// Whether a stack fd is a TCP one (a stream pair; UDP's is seqpacket).
pub(super) fn stream(fd: RawFd) -> bool {
    sys::getsockopt_int(fd, libc::SOL_SOCKET, libc::SO_TYPE).ok() == Some(libc::SOCK_STREAM)
}

fn read_data(t: &Target, addr: u64, len: usize) -> io::Result<Vec<u8>> {
    let mut data = vec![0u8; len.min(MAX_DATA)];
    t.read(addr, &mut data)?;
    Ok(data)
}

fn accept(t: Target, fd: OwnedFd, flags: i32) -> io::Result<Answer> {
    if flags & !(libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC) != 0 || !vs::is_listener(fd.as_raw_fd())
    {
        return Err(errno(libc::EINVAL));
    }
    let take = move |t: &Target, fd: RawFd| -> io::Result<Answer> {
        let (conn, peer) = vs::try_accept(fd, flags)?;
        t.write_addr(peer, t.arg(1), t.arg(2))?;
        Ok(Answer::Fd(conn, flags & libc::SOCK_CLOEXEC != 0))
    };
    match take(&t, fd.as_raw_fd()) {
        Err(e) if again(&e) && waits(fd.as_raw_fd(), 0) => {
            Ok(Answer::Later(Box::new(move || loop {
                t.wait(fd.as_raw_fd(), libc::POLLIN)?;
                match take(&t, fd.as_raw_fd()) {
                    // Another process took it first.
                    Err(e) if again(&e) => continue,
                    r => return r,
                }
            })))
        }
        r => r,
    }
}

/// SO_RCVLOWAT of a listener reads 1 and setting it does nothing, as on Linux (the pair's
/// value is the listener mark).
fn listener_lowat(fd: RawFd, level: i32, name: i32) -> bool {
    (level, name) == (libc::SOL_SOCKET, libc::SO_RCVLOWAT) && vs::is_listener(fd)
}

fn getsockopt(t: &Target, f: RawFd) -> io::Result<Answer> {
    let (level, name, val, lenp) = (t.int(1), t.int(2), t.arg(3), t.arg(4));
    let lowat = listener_lowat(f, level, name);
    if vs::pair_option(level, name) && !lowat {
        return Ok(Answer::Continue);
    }
    if val == 0 || lenp == 0 {
        return Err(errno(libc::EFAULT));
    }
    let room: libc::socklen_t = t.read_value(lenp)?;
    if (room as i32) < 0 {
        return Err(errno(libc::EINVAL));
    }
    let v = if lowat {
        1
    } else {
        vs::get_opt(f, level, name)?
    };
    let n = (room as usize).min(size_of::<i32>());
    t.write(val, &v.to_ne_bytes()[..n])?;
    t.write_value(lenp, &(n as libc::socklen_t))?;
    Ok(Answer::Value(0))
}

fn setsockopt(t: &Target, f: RawFd) -> io::Result<Answer> {
    let (level, name, val, len) = (t.int(1), t.int(2), t.arg(3), t.arg(4) as u32 as usize);
    if listener_lowat(f, level, name) {
        return Ok(Answer::Value(0));
    }
    if (level, name) == (libc::SOL_SOCKET, libc::SO_LINGER) {
        // The pair keeps it, and the engine must know of an abortive close ({on, 0}).
        if len < size_of::<libc::linger>() {
            return Err(errno(libc::EINVAL));
        }
        let l: libc::linger = t.read_value(val)?;
        sys::set_linger(f, &l)?;
        let abort = (l.l_onoff != 0 && l.l_linger == 0) as i32;
        return vs::set_opt(f, level, name, abort).map(|_| Answer::Value(0));
    }
    if vs::pair_option(level, name) {
        return Ok(Answer::Continue);
    }
    if val == 0 {
        return Err(errno(libc::EFAULT));
    }
    let v = match len {
        0 => return Err(errno(libc::EINVAL)),
        1..=3 => {
            let mut b = [0u8; 1];
            t.read(val, &mut b)?;
            b[0] as i32
        }
        4 => t.read_value::<i32>(val)?,
        // A struct-valued option (multicast membership, ...): not the stack's to keep.
        _ => return Ok(Answer::Value(0)),
    };
    vs::set_opt(f, level, name, v).map(|_| Answer::Value(0))
}

/// Where a receive puts what it got.
#[derive(Clone, Copy)]
enum Out {
    /// recvfrom: a buffer, and an address with its length pointer.
    Buf {
        addr: u64,
        len: usize,
        name: u64,
        lenp: u64,
    },
    /// recvmsg: the msghdr at `msg`, as read.
    Msg { msg: u64, hdr: MsgHdr },
}

/// The fields of a msghdr that matter here.
#[derive(Clone, Copy)]
pub(super) struct MsgHdr {
    pub name: u64,
    pub namelen: u32,
    pub iov: u64,
    pub iovlen: u64,
}

pub(super) fn read_msghdr(t: &Target, msg: u64) -> io::Result<MsgHdr> {
    let m: libc::msghdr = t.read_value(msg)?;
    Ok(MsgHdr {
        name: m.msg_name as u64,
        namelen: m.msg_namelen,
        iov: m.msg_iov as u64,
        iovlen: m.msg_iovlen as u64,
    })
}

fn sendmsg(t: Target, fd: OwnedFd) -> io::Result<Answer> {
    let (msg, flags) = (t.arg(1), t.int(2));
    let h = read_msghdr(&t, msg)?;
    let is_stream = stream(fd.as_raw_fd());
    let named = h.name != 0 && h.namelen != 0;
    if is_stream && !named {
        return Ok(Answer::Continue);
    }
    let iovs = remote::read_iovecs(t.n.tid, h.iov, h.iovlen)?;
    let total: usize = iovs.iter().map(|i| i.1).sum();
    if !is_stream && total > MAX_DATA {
        return Err(errno(libc::EMSGSIZE));
    }
    let data = remote::gather(t.n.tid, &iovs, MAX_DATA)?;
    t.check()?;
    if is_stream {
        return stream_send(t, fd, data, flags);
    }
    let to = if named {
        Some(t.read_addr(h.name, h.namelen as u64)?)
    } else {
        None
    };
    dgram_send(t, fd, data, to, flags)
}

fn recvmsg(t: Target, fd: OwnedFd) -> io::Result<Answer> {
    let (msg, flags) = (t.arg(1), t.int(2));
    let hdr = read_msghdr(&t, msg)?;
    if stream(fd.as_raw_fd()) && hdr.name == 0 {
        return Ok(Answer::Continue);
    }
    recv(t, fd, Out::Msg { msg, hdr }, flags)
}

/// A send on a TCP stack fd: all of `data`, waiting for room as the fd says. The pair's
/// EPIPE after a reset becomes what Linux says, with SIGPIPE for the target's thread.
fn stream_send(t: Target, fd: OwnedFd, data: Vec<u8>, flags: i32) -> io::Result<Answer> {
    let step = move |t: &Target, fd: RawFd, sent: &mut usize| -> io::Result<Option<Answer>> {
        while *sent < data.len() {
            match sys::send_vec(fd, &[&data[*sent..]], flags | libc::MSG_DONTWAIT) {
                Ok(n) => *sent += n,
                Err(e) if again(&e) && *sent > 0 && !waits(fd, flags) => break,
                Err(e) if again(&e) => return Ok(None),
                Err(e) if e.raw_os_error() == Some(libc::EPIPE) => {
                    let e = vs::broken_pipe(fd, flags | libc::MSG_NOSIGNAL);
                    if e.raw_os_error() == Some(libc::EPIPE) && flags & libc::MSG_NOSIGNAL == 0 {
                        t.check()?;
                        signal_thread(t.n.tid, libc::SIGPIPE);
                    }
                    return Err(e);
                }
                Err(e) => {
                    if e.raw_os_error() == Some(libc::ECONNRESET) {
                        vs::reset_reported(fd);
                    }
                    return Err(e);
                }
            }
        }
        Ok(Some(Answer::Value(*sent as i64)))
    };
    let mut sent = 0;
    let f = fd.as_raw_fd();
    match step(&t, f, &mut sent)? {
        Some(a) => Ok(a),
        None if !waits(f, flags) => Err(errno(libc::EAGAIN)),
        None => Ok(Answer::Later(Box::new(move || loop {
            t.wait(fd.as_raw_fd(), libc::POLLOUT)?;
            if let Some(a) = step(&t, fd.as_raw_fd(), &mut sent)? {
                return Ok(a);
            }
        }))),
    }
}

/// A send of one datagram on a UDP stack fd, waiting for room as the fd says.
fn dgram_send(
    t: Target,
    fd: OwnedFd,
    data: Vec<u8>,
    to: Option<SocketAddr>,
    flags: i32,
) -> io::Result<Answer> {
    let f = fd.as_raw_fd();
    match vs::send_to(f, &data, to, flags | libc::MSG_DONTWAIT) {
        Err(e) if again(&e) && waits(f, flags) => Ok(Answer::Later(Box::new(move || loop {
            t.wait(fd.as_raw_fd(), libc::POLLOUT)?;
            match vs::send_to(fd.as_raw_fd(), &data, to, flags | libc::MSG_DONTWAIT) {
                Err(e) if again(&e) => continue,
                r => return r.map(|n| Answer::Value(n as i64)),
            }
        }))),
        r => r.map(|n| Answer::Value(n as i64)),
    }
}

/// A receive on a stack fd with an address wanted (TCP: none is given), waiting for data
/// as the fd says.
fn recv(t: Target, fd: OwnedFd, out: Out, flags: i32) -> io::Result<Answer> {
    let r = Receive::new(&t, fd.as_raw_fd(), out, flags)?;
    let mut buf = vec![0u8; r.cap.min(MAX_DATA)];
    let f = fd.as_raw_fd();
    match r.once(&t, f, &mut buf) {
        Err(e) if again(&e) && waits(f, flags) => Ok(Answer::Later(Box::new(move || loop {
            t.wait(fd.as_raw_fd(), libc::POLLIN)?;
            match r.once(&t, fd.as_raw_fd(), &mut buf) {
                Err(e) if again(&e) => continue,
                r => return r.map(|n| Answer::Value(n as i64)),
            }
        }))),
        r => r.map(|n| Answer::Value(n as i64)),
    }
}

/// One receive: where its data and address go, read from the target once.
pub(super) struct Receive {
    out: Out,
    iovs: Vec<(u64, usize)>,
    /// Room for data in all.
    pub cap: usize,
    is_stream: bool,
    wants_name: bool,
    flags: i32,
}

impl Receive {
    fn new(t: &Target, fd: RawFd, out: Out, flags: i32) -> io::Result<Receive> {
        let (iovs, cap) = match out {
            Out::Buf { addr, len, .. } => (vec![(addr, len)], len),
            Out::Msg { hdr, .. } => {
                let iovs = remote::read_iovecs(t.n.tid, hdr.iov, hdr.iovlen)?;
                t.check()?;
                let cap = iovs.iter().map(|i| i.1).sum();
                (iovs, cap)
            }
        };
        let wants_name = match out {
            Out::Buf { name, .. } => name != 0,
            Out::Msg { hdr, .. } => hdr.name != 0,
        };
        Ok(Receive {
            out,
            iovs,
            cap,
            is_stream: stream(fd),
            wants_name,
            flags,
        })
    }

    /// For the msghdr at `msg` (recvmmsg's entries).
    pub(super) fn of_msg(t: &Target, fd: RawFd, msg: u64, flags: i32) -> io::Result<Receive> {
        let hdr = read_msghdr(t, msg)?;
        Receive::new(t, fd, Out::Msg { msg, hdr }, flags)
    }

    /// Takes what waits, without waiting (EAGAIN), and puts it into the target's memory;
    /// returns the length, as the call would. `buf` is scratch room of at least `cap`
    /// (up to MAX_DATA).
    pub(super) fn once(&self, t: &Target, fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
        let flags = self.flags | libc::MSG_DONTWAIT;
        let (n, from) = if self.is_stream {
            match sys::recv_vec(fd, &mut [buf], flags) {
                Ok(0) if self.cap > 0 => (vs::stream_eof(fd)?, None),
                Ok(n) => (n, None),
                Err(e) => {
                    if e.raw_os_error() == Some(libc::ECONNRESET) {
                        vs::reset_reported(fd);
                    }
                    return Err(e);
                }
            }
        } else {
            let (n, from) = vs::recv_from(fd, buf, flags)?;
            // A connected socket's datagrams come from its peer.
            let from = match from {
                None if self.wants_name => Some(vs::peer_addr(fd)?),
                from => from,
            };
            (n, from)
        };
        let got = &buf[..n.min(buf.len())];
        t.check()?;
        remote::scatter(t.n.tid, &self.iovs, got)?;
        put_name(t, self.out, from)?;
        Ok(n)
    }
}

/// Writes where a datagram came from (None: TCP, no address, length 0), and for recvmsg
/// its name length, control length and flags, as the C library does.
fn put_name(t: &Target, out: Out, from: Option<SocketAddr>) -> io::Result<()> {
    match out {
        Out::Buf { name, lenp, .. } => match from {
            Some(a) => t.write_addr(a, name, lenp),
            None if lenp != 0 => t.write_value(lenp, &(0 as libc::socklen_t)),
            None => Ok(()),
        },
        Out::Msg { msg, hdr } => {
            let mut namelen = 0u32;
            if let (Some(a), true) = (from, hdr.name != 0) {
                let (ss, n) = sys::std_to_sockaddr(&a);
                // SAFETY: the bytes of a sockaddr_storage, plain old data.
                let bytes =
                    unsafe { std::slice::from_raw_parts(&ss as *const _ as *const u8, n as usize) };
                t.write(hdr.name, &bytes[..(hdr.namelen as usize).min(n as usize)])?;
                namelen = n;
            }
            t.write_value(msg + offset_of!(libc::msghdr, msg_namelen) as u64, &namelen)?;
            t.write_value(
                msg + offset_of!(libc::msghdr, msg_controllen) as u64,
                &(0 as libc::size_t),
            )?;
            t.write_value(msg + offset_of!(libc::msghdr, msg_flags) as u64, &0i32)
        }
    }
}
