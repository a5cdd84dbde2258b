//! The socket calls, exported under libc's names. A call on a stack fd goes to the engine;
//! any other fd goes to libc at once, errno included. Calls from the engine thread itself
//! (libvdeplug's own sockets) always go to libc. Which fds are stack fds is remembered in
//! [`fdtable`](crate::fdtable), so telling them apart costs no syscall; the calls that
//! create, copy and close fds are interposed to keep it right.
//!
//! TCP data needs nothing: the pair is a stream socket, so send/recv and their flags work
//! on it as they are; only addresses are ours to answer. UDP datagrams on an unconnected
//! socket carry the peer address in a small header (see `vdestack::internal::bridge::udp`).

use std::ffi::c_void;
use std::io;
use std::net::SocketAddr;
use std::os::fd::IntoRawFd;
use std::ptr;
use std::sync::atomic::{AtomicPtr, Ordering};

use libc::{c_int, msghdr, size_t, sockaddr, socklen_t, ssize_t};
use vdestack::internal::socket as vs;
use vdestack::Stack;

use crate::fdtable::{self, Kind};
use crate::real::real;
use crate::{guard, int_call, set_errno};

/// The default stack (`vde_default_stack`), leaked so that readers never race a free: a
/// handle is a name and an id, and it is set a handful of times in a process's life.
static DEFAULT: AtomicPtr<Stack> = AtomicPtr::new(ptr::null_mut());

/// Sets or clears the stack `socket()` uses.
pub fn set_default(s: Option<Stack>) {
    let p = s.map_or(ptr::null_mut(), |s| Box::into_raw(Box::new(s)));
    DEFAULT.store(p, Ordering::Release);
}

/// Clears the default stack if it is stack `id` (which is being deleted).
pub fn forget_default(id: u32) {
    if default_stack().is_some_and(|s| s.id() == id) {
        set_default(None);
    }
}

/// The default stack, if any.
pub fn default_stack() -> Option<&'static Stack> {
    let p = DEFAULT.load(Ordering::Acquire);
    // SAFETY: non-null values are leaked boxes, never freed.
    (!p.is_null()).then(|| unsafe { &*p })
}

/// What `fd` is for this call: Kernel (libc handles it) or a stack socket. A kernel fd
/// the table knows costs one load; the engine thread's calls always go to libc.
fn kind(fd: c_int) -> Kind {
    match fdtable::get(fd) {
        Kind::Kernel => Kind::Kernel,
        _ if vdestack::internal::on_engine_thread() => Kind::Kernel,
        _ => fdtable::kind(fd),
    }
}

/// Whether `fd` is a stack socket that this call should handle.
fn ours(fd: c_int) -> bool {
    kind(fd).is_stack()
}

/// Remembers what a call returned: `fd` (if the call succeeded) is of kind `k`.
fn learn(fd: c_int, k: Kind) -> c_int {
    if fd >= 0 {
        fdtable::set(fd, k);
    }
    fd
}

fn einval() -> io::Error {
    io::Error::from_raw_os_error(libc::EINVAL)
}

/// Reads a socket address from C, with the kernel's errors for bad ones.
///
/// # Safety
/// `addr` is NULL or points at `len` readable bytes.
unsafe fn read_addr(addr: *const sockaddr, len: socklen_t) -> io::Result<SocketAddr> {
    if addr.is_null() {
        return Err(io::Error::from_raw_os_error(libc::EFAULT));
    }
    let len = len as usize;
    if len < size_of::<libc::sa_family_t>() {
        return Err(einval());
    }
    // Copy what there is into room for the largest address, so short IPv6 addresses (the
    // 24-byte RFC 2133 form Linux accepts) read as zero scope.
    // SAFETY: sockaddr_storage is plain old data.
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let n = len.min(size_of::<libc::sockaddr_storage>());
    // SAFETY: addr has len >= n readable bytes; ss has room for n.
    unsafe { ptr::copy_nonoverlapping(addr as *const u8, &mut ss as *mut _ as *mut u8, n) };
    let min = match ss.ss_family as c_int {
        libc::AF_INET => size_of::<libc::sockaddr_in>(),
        libc::AF_INET6 => 24,
        _ => return Err(io::Error::from_raw_os_error(libc::EAFNOSUPPORT)),
    };
    if len < min {
        return Err(einval());
    }
    // SAFETY: ss is a full sockaddr_storage.
    unsafe {
        vdestack::internal::sys::sockaddr_to_std(
            &ss as *const _ as *const sockaddr,
            size_of::<libc::sockaddr_storage>(),
        )
    }
    .ok_or_else(einval)
}

/// Writes a socket address out as the kernel does: truncated to `*len`, with `*len` set to
/// the full length. Both NULL is allowed (accept with no address wanted).
///
/// # Safety
/// `addr` is NULL or points at `*len` writable bytes; `len` is NULL or valid.
unsafe fn write_addr(a: SocketAddr, addr: *mut sockaddr, len: *mut socklen_t) -> io::Result<()> {
    if addr.is_null() && len.is_null() {
        return Ok(());
    }
    if addr.is_null() || len.is_null() {
        return Err(io::Error::from_raw_os_error(libc::EFAULT));
    }
    // SAFETY: len is valid.
    if (unsafe { *len } as c_int) < 0 {
        return Err(einval());
    }
    let (ss, n) = vdestack::internal::sys::std_to_sockaddr(&a);
    // SAFETY: len is valid, addr has *len writable bytes.
    unsafe {
        let room = (*len as usize).min(n as usize);
        ptr::copy_nonoverlapping(&ss as *const _ as *const u8, addr as *mut u8, room);
        *len = n;
    }
    Ok(())
}

fn size_call(f: impl FnOnce() -> io::Result<usize>) -> ssize_t {
    guard(-1, || match f() {
        Ok(n) => n as ssize_t,
        Err(e) => {
            set_errno(crate::errno_of(&e));
            -1
        }
    })
}

/// socket(2): AF_INET/AF_INET6 sockets go to the default stack when there is one.
///
/// # Safety
/// As socket(2).
#[no_mangle]
pub unsafe extern "C" fn socket(domain: c_int, ty: c_int, protocol: c_int) -> c_int {
    if domain == libc::AF_INET || domain == libc::AF_INET6 {
        if let Some(s) = default_stack().filter(|_| !vdestack::internal::on_engine_thread()) {
            let fd = int_call(|| Ok(s.socket(domain, ty, protocol)?.into_raw_fd()));
            return learn(fd, fdtable::stack_kind(ty));
        }
    }
    // SAFETY: libc's socket with the caller's arguments.
    learn(
        unsafe { (real().socket)(domain, ty, protocol) },
        Kind::Kernel,
    )
}

/// socketpair(2): always the kernel's.
///
/// # Safety
/// As socketpair(2).
#[no_mangle]
pub unsafe extern "C" fn socketpair(
    domain: c_int,
    ty: c_int,
    protocol: c_int,
    sv: *mut c_int,
) -> c_int {
    // SAFETY: libc's socketpair with the caller's arguments.
    let r = unsafe { (real().socketpair)(domain, ty, protocol, sv) };
    if r == 0 {
        // SAFETY: on success the kernel wrote two fds at sv.
        unsafe {
            learn(*sv, Kind::Kernel);
            learn(*sv.add(1), Kind::Kernel);
        }
    }
    r
}

/// close(2). The fd's number forgets what it held (after the close, so that a number
/// reused at once by another thread is at worst asked about again).
///
/// # Safety
/// As close(2).
#[no_mangle]
pub unsafe extern "C" fn close(fd: c_int) -> c_int {
    // SAFETY: libc's close.
    let r = unsafe { (real().close)(fd) };
    fdtable::forget(fd);
    r
}

/// fclose(3): libc closes the stream's fd without calling `close`, so forget it here.
///
/// # Safety
/// As fclose(3).
#[no_mangle]
pub unsafe extern "C" fn fclose(f: *mut libc::FILE) -> c_int {
    // SAFETY: the caller's stream, valid until fclose returns.
    let fd = if f.is_null() {
        -1
    } else {
        unsafe { libc::fileno(f) }
    };
    // SAFETY: libc's fclose with the caller's stream.
    let r = unsafe { (real().fclose)(f) };
    if fd >= 0 {
        fdtable::forget(fd);
    }
    r
}

/// dup(2): the copy is what the original is.
///
/// # Safety
/// As dup(2).
#[no_mangle]
pub unsafe extern "C" fn dup(fd: c_int) -> c_int {
    // SAFETY: libc's dup.
    let new = unsafe { (real().dup)(fd) };
    learn(new, fdtable::get(fd))
}

/// dup2(2).
///
/// # Safety
/// As dup2(2).
#[no_mangle]
pub unsafe extern "C" fn dup2(fd: c_int, to: c_int) -> c_int {
    // SAFETY: libc's dup2.
    let new = unsafe { (real().dup2)(fd, to) };
    learn(new, fdtable::get(fd))
}

/// dup3(2).
///
/// # Safety
/// As dup3(2).
#[no_mangle]
pub unsafe extern "C" fn dup3(fd: c_int, to: c_int, flags: c_int) -> c_int {
    // SAFETY: libc's dup3.
    let new = unsafe { (real().dup3)(fd, to, flags) };
    learn(new, fdtable::get(fd))
}

/// fcntl(2), declared with its optional third argument as a machine word: callers pass an
/// int or a pointer there (or nothing, for commands that read none), in a register either
/// way on the ABIs Linux runs on. F_DUPFD and F_DUPFD_CLOEXEC copy the fd's entry.
///
/// # Safety
/// As fcntl(2).
#[no_mangle]
pub unsafe extern "C" fn fcntl(fd: c_int, cmd: c_int, arg: usize) -> c_int {
    // SAFETY: libc's fcntl with the caller's arguments.
    let r = unsafe { (real().fcntl)(fd, cmd, arg) };
    dup_result(fd, cmd, r)
}

/// fcntl64: what fcntl is called under by programs built with _FILE_OFFSET_BITS=64.
///
/// # Safety
/// As fcntl(2).
#[no_mangle]
pub unsafe extern "C" fn fcntl64(fd: c_int, cmd: c_int, arg: usize) -> c_int {
    // SAFETY: libc's fcntl64 with the caller's arguments.
    let r = unsafe { crate::real::fcntl64()(fd, cmd, arg) };
    dup_result(fd, cmd, r)
}

fn dup_result(fd: c_int, cmd: c_int, r: c_int) -> c_int {
    if matches!(cmd, libc::F_DUPFD | libc::F_DUPFD_CLOEXEC) {
        learn(r, fdtable::get(fd));
    }
    r
}

/// Forgets the fds that a received message passed (SCM_RIGHTS): their numbers may have held
/// something else that was closed unseen.
///
/// # Safety
/// `m` is a message recvmsg just filled.
unsafe fn forget_passed(m: &msghdr) {
    if m.msg_control.is_null() || m.msg_controllen == 0 {
        return;
    }
    // SAFETY: the control buffer as recvmsg left it; CMSG_* walk it within msg_controllen.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(m);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(c) as *const c_int;
                let n = ((*c).cmsg_len as usize).saturating_sub(libc::CMSG_LEN(0) as usize)
                    / size_of::<c_int>();
                for i in 0..n {
                    fdtable::forget(ptr::read_unaligned(data.add(i)));
                }
            }
            c = libc::CMSG_NXTHDR(m, c);
        }
    }
}

/// bind(2).
///
/// # Safety
/// As bind(2).
#[no_mangle]
pub unsafe extern "C" fn bind(fd: c_int, addr: *const sockaddr, len: socklen_t) -> c_int {
    if !ours(fd) {
        // SAFETY: libc's bind with the caller's arguments.
        return unsafe { (real().bind)(fd, addr, len) };
    }
    // SAFETY: the caller's address and length.
    int_call(|| vs::bind(fd, unsafe { read_addr(addr, len) }?).map(|_| 0))
}

/// connect(2): blocking unless the fd is nonblocking (then EINPROGRESS; poll for POLLOUT and
/// read SO_ERROR).
///
/// # Safety
/// As connect(2).
#[no_mangle]
pub unsafe extern "C" fn connect(fd: c_int, addr: *const sockaddr, len: socklen_t) -> c_int {
    if !ours(fd) {
        // SAFETY: libc's connect with the caller's arguments.
        return unsafe { (real().connect)(fd, addr, len) };
    }
    // AF_UNSPEC (the family's 2 bytes are enough, as Linux reads them) dissolves.
    // SAFETY: the caller's address, at least as long as its family when len says so.
    if !addr.is_null()
        && len as usize >= size_of::<libc::sa_family_t>()
        && unsafe { (*addr).sa_family } as c_int == libc::AF_UNSPEC
    {
        return int_call(|| vs::disconnect(fd).map(|_| 0));
    }
    // SAFETY: the caller's address and length.
    int_call(|| vs::connect(fd, unsafe { read_addr(addr, len) }?).map(|_| 0))
}

/// listen(2).
///
/// # Safety
/// As listen(2).
#[no_mangle]
pub unsafe extern "C" fn listen(fd: c_int, backlog: c_int) -> c_int {
    if !ours(fd) {
        // SAFETY: libc's listen.
        return unsafe { (real().listen)(fd, backlog) };
    }
    int_call(|| vs::listen(fd, backlog).map(|_| 0))
}

/// accept(2).
///
/// # Safety
/// As accept(2).
#[no_mangle]
pub unsafe extern "C" fn accept(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t) -> c_int {
    if !ours(fd) {
        // SAFETY: libc's accept with the caller's arguments.
        return learn(unsafe { (real().accept)(fd, addr, len) }, Kind::Kernel);
    }
    // SAFETY: as the caller promises.
    unsafe { accept_stack(fd, addr, len, 0) }
}

/// accept4(2).
///
/// # Safety
/// As accept4(2).
#[no_mangle]
pub unsafe extern "C" fn accept4(
    fd: c_int,
    addr: *mut sockaddr,
    len: *mut socklen_t,
    flags: c_int,
) -> c_int {
    if !ours(fd) {
        // SAFETY: libc's accept4 with the caller's arguments.
        return learn(
            unsafe { (real().accept4)(fd, addr, len, flags) },
            Kind::Kernel,
        );
    }
    // SAFETY: as the caller promises.
    unsafe { accept_stack(fd, addr, len, flags) }
}

/// # Safety
/// `addr`/`len` as accept(2) takes them.
unsafe fn accept_stack(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t, flags: c_int) -> c_int {
    if flags & !(libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC) != 0 {
        set_errno(libc::EINVAL);
        return -1;
    }
    let conn = int_call(|| {
        let (conn, peer) = vs::accept(fd, flags)?;
        // SAFETY: the caller's buffer.
        unsafe { write_addr(peer, addr, len)? };
        Ok(conn.into_raw_fd())
    });
    learn(conn, Kind::StackStream)
}

/// getsockname(2).
///
/// # Safety
/// As getsockname(2).
#[no_mangle]
pub unsafe extern "C" fn getsockname(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t) -> c_int {
    if !ours(fd) {
        // SAFETY: libc's getsockname with the caller's arguments.
        return unsafe { (real().getsockname)(fd, addr, len) };
    }
    // SAFETY: the caller's buffer.
    int_call(|| unsafe { write_addr(vs::local_addr(fd)?, addr, len) }.map(|_| 0))
}

/// getpeername(2).
///
/// # Safety
/// As getpeername(2).
#[no_mangle]
pub unsafe extern "C" fn getpeername(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t) -> c_int {
    if !ours(fd) {
        // SAFETY: libc's getpeername with the caller's arguments.
        return unsafe { (real().getpeername)(fd, addr, len) };
    }
    // SAFETY: the caller's buffer.
    int_call(|| unsafe { write_addr(vs::peer_addr(fd)?, addr, len) }.map(|_| 0))
}

/// SO_RCVLOWAT of a stack listener: its pair's value is our mark, so it is answered as
/// Linux would (1) and setting it changes nothing, as on Linux.
fn listener_lowat(fd: c_int, level: c_int, name: c_int) -> bool {
    (level, name) == (libc::SOL_SOCKET, libc::SO_RCVLOWAT) && ours(fd) && vs::is_listener(fd)
}

/// getsockopt(2).
///
/// # Safety
/// As getsockopt(2).
#[no_mangle]
pub unsafe extern "C" fn getsockopt(
    fd: c_int,
    level: c_int,
    name: c_int,
    val: *mut c_void,
    len: *mut socklen_t,
) -> c_int {
    if !ours(fd) || vs::pair_option(level, name) && !listener_lowat(fd, level, name) {
        // SAFETY: libc's getsockopt with the caller's arguments.
        return unsafe { (real().getsockopt)(fd, level, name, val, len) };
    }
    int_call(|| {
        if val.is_null() || len.is_null() {
            return Err(io::Error::from_raw_os_error(libc::EFAULT));
        }
        // SAFETY: len is the caller's, checked non-null.
        if (unsafe { *len } as c_int) < 0 {
            return Err(einval()); // a negative length, as the kernel reads it
        }
        if (level, name) == (libc::IPPROTO_TCP, libc::TCP_INFO) {
            // SAFETY: the caller's buffer and length, checked non-null.
            return unsafe { tcp_info(fd, val, len) };
        }
        let v = if listener_lowat(fd, level, name) {
            1
        } else {
            vs::get_opt(fd, level, name)?
        };
        // SAFETY: len and val are the caller's, checked non-null; we write at most *len bytes.
        unsafe {
            let room = (*len as usize).min(size_of::<c_int>());
            ptr::copy_nonoverlapping(&v as *const c_int as *const u8, val as *mut u8, room);
            *len = room as socklen_t;
        }
        Ok(0)
    })
}

/// struct tcp_info for a stack socket: its state and MSS; what smoltcp does not expose
/// (RTT, congestion window, retransmissions) reads zero.
///
/// # Safety
/// `val` has `*len` writable bytes.
unsafe fn tcp_info(fd: c_int, val: *mut c_void, len: *mut socklen_t) -> io::Result<c_int> {
    // SAFETY: tcp_info is plain old data.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    info.tcpi_state = vs::get_opt(fd, libc::IPPROTO_TCP, libc::TCP_INFO)? as u8;
    let mss = vs::get_opt(fd, libc::IPPROTO_TCP, libc::TCP_MAXSEG)? as u32;
    info.tcpi_snd_mss = mss;
    info.tcpi_rcv_mss = mss;
    info.tcpi_advmss = mss;
    // SAFETY: as the caller promises; we write at most *len bytes.
    unsafe {
        let room = (*len as usize).min(size_of::<libc::tcp_info>());
        ptr::copy_nonoverlapping(&info as *const _ as *const u8, val as *mut u8, room);
        *len = room as socklen_t;
    }
    Ok(0)
}

/// setsockopt(2). Integer options go to the engine; others that a user-space stack has no
/// use for are accepted and ignored, as most programs set them only in passing.
///
/// # Safety
/// As setsockopt(2).
#[no_mangle]
pub unsafe extern "C" fn setsockopt(
    fd: c_int,
    level: c_int,
    name: c_int,
    val: *const c_void,
    len: socklen_t,
) -> c_int {
    if listener_lowat(fd, level, name) {
        return 0; // it has no effect on a listener; ours marks it (socket::LISTENER_MARK)
    }
    if !ours(fd) || vs::pair_option(level, name) {
        // SAFETY: libc's setsockopt with the caller's arguments.
        let r = unsafe { (real().setsockopt)(fd, level, name, val, len) };
        if r == 0 && (level, name) == (libc::SOL_SOCKET, libc::SO_LINGER) && ours(fd) {
            // SAFETY: the kernel accepted val as a struct linger.
            let l = unsafe { ptr::read_unaligned(val as *const libc::linger) };
            // The engine must know of an abortive close ({on, 0}): it sends the RST.
            let abort = (l.l_onoff != 0 && l.l_linger == 0) as c_int;
            return int_call(|| vs::set_opt(fd, level, name, abort).map(|_| 0));
        }
        return r;
    }
    int_call(|| {
        if val.is_null() {
            return Err(io::Error::from_raw_os_error(libc::EFAULT));
        }
        // SAFETY: val has len readable bytes; we read at most 4.
        let v = unsafe {
            match len as usize {
                4.. => ptr::read_unaligned(val as *const c_int),
                1..=3 => *(val as *const u8) as c_int,
                _ => return Err(einval()),
            }
        };
        if len as usize > size_of::<c_int>() {
            return Ok(0); // a struct-valued option (multicast membership, ...): not ours to keep
        }
        vs::set_opt(fd, level, name, v).map(|_| 0)
    })
}

/// shutdown(2).
///
/// # Safety
/// As shutdown(2).
#[no_mangle]
pub unsafe extern "C" fn shutdown(fd: c_int, how: c_int) -> c_int {
    if !ours(fd) {
        // SAFETY: libc's shutdown.
        return unsafe { (real().shutdown)(fd, how) };
    }
    int_call(|| vs::shutdown(fd, how).map(|_| 0))
}

/// send(2).
///
/// # Safety
/// As send(2).
#[no_mangle]
pub unsafe extern "C" fn send(fd: c_int, buf: *const c_void, n: size_t, flags: c_int) -> ssize_t {
    // SAFETY: the caller's arguments.
    unsafe { sendto(fd, buf, n, flags, ptr::null(), 0) }
}

/// sendto(2).
///
/// # Safety
/// As sendto(2).
#[no_mangle]
pub unsafe extern "C" fn sendto(
    fd: c_int,
    buf: *const c_void,
    n: size_t,
    flags: c_int,
    addr: *const sockaddr,
    len: socklen_t,
) -> ssize_t {
    match kind(fd) {
        Kind::StackDgram => {}
        Kind::StackStream => {
            // SAFETY: libc's send on the stream pair, without the address TCP would ignore.
            return stream_send(fd, flags, |f| unsafe { (real().send)(fd, buf, n, f) });
        }
        _ => {
            // SAFETY: libc's sendto with the caller's arguments.
            return unsafe { (real().sendto)(fd, buf, n, flags, addr, len) };
        }
    }
    size_call(|| {
        let to = if addr.is_null() {
            None
        } else if len as usize > size_of::<libc::sockaddr_storage>() {
            return Err(einval());
        } else {
            // SAFETY: the caller's address of len bytes.
            Some(unsafe { read_addr(addr, len) }?)
        };
        let iov = libc::iovec {
            iov_base: buf as *mut c_void,
            iov_len: n,
        };
        // SAFETY: the caller's buffer, which the kernel reads (EFAULT if it cannot).
        unsafe { vs::send_dgram(fd, &[iov], to, flags) }
    })
}

/// A send on a TCP stack fd: the pair's EPIPE after a reset becomes what Linux says (see
/// `vdestack::internal::socket::broken_pipe`), so the pair is never let raise SIGPIPE itself.
fn stream_send(fd: c_int, flags: c_int, send: impl FnOnce(c_int) -> ssize_t) -> ssize_t {
    let r = send(flags | libc::MSG_NOSIGNAL);
    if r < 0 {
        stream_error(fd, flags);
    }
    r
}

/// After a failed call on a TCP stack fd: EPIPE after a reset becomes what Linux says, and
/// an ECONNRESET the kernel reported is forgotten by the engine (see
/// `vdestack::internal::socket::reset_error`).
fn stream_error(fd: c_int, flags: c_int) {
    // SAFETY: __errno_location returns this thread's errno slot.
    let e = unsafe { *libc::__errno_location() };
    guard((), || match e {
        libc::EPIPE => set_errno(crate::errno_of(&vs::broken_pipe(fd, flags))),
        libc::ECONNRESET => {
            vs::reset_reported(fd);
            set_errno(e);
        }
        _ => {}
    });
}

/// A read on a TCP stack fd: a 0 is EOF, or after a reset what Linux says (see
/// `vdestack::internal::socket::stream_eof`).
fn stream_eof(fd: c_int, r: ssize_t, n: size_t) -> ssize_t {
    if r < 0 {
        stream_error(fd, libc::MSG_NOSIGNAL);
    }
    if r != 0 || n == 0 {
        return r;
    }
    size_call(|| vs::stream_eof(fd))
}

/// A message's iovecs, with the kernel's errors for a bad array.
///
/// # Safety
/// `m.msg_iov` is NULL or points at `m.msg_iovlen` iovecs.
unsafe fn iovecs<'a>(m: &msghdr) -> io::Result<&'a [libc::iovec]> {
    if m.msg_iovlen == 0 {
        return Ok(&[]);
    }
    if m.msg_iovlen > vs::MAX_IOV {
        return Err(io::Error::from_raw_os_error(libc::EMSGSIZE));
    }
    if m.msg_iov.is_null() {
        return Err(io::Error::from_raw_os_error(libc::EFAULT));
    }
    // SAFETY: as the caller promises.
    let iov = unsafe { std::slice::from_raw_parts(m.msg_iov, m.msg_iovlen) };
    if iov.iter().any(|v| (v.iov_len as isize) < 0) {
        return Err(einval()); // a negative length, as the kernel reads it
    }
    Ok(iov)
}

/// sendmsg(2).
///
/// # Safety
/// As sendmsg(2).
#[no_mangle]
pub unsafe extern "C" fn sendmsg(fd: c_int, msg: *const msghdr, flags: c_int) -> ssize_t {
    let k = kind(fd);
    if msg.is_null() || !k.is_stack() {
        // SAFETY: libc's sendmsg with the caller's arguments.
        return unsafe { (real().sendmsg)(fd, msg, flags) };
    }
    // SAFETY: msg is non-null and, as the caller promises, valid.
    let m = unsafe { &*msg };
    if k == Kind::StackStream {
        let mut bare = *m;
        bare.msg_name = ptr::null_mut();
        bare.msg_namelen = 0;
        // SAFETY: the caller's message without its address, which TCP ignores.
        return stream_send(fd, flags, |f| unsafe { (real().sendmsg)(fd, &bare, f) });
    }
    size_call(|| {
        // As the kernel: a name of length 0 is no name, a longer one than any is cut.
        let to = if m.msg_name.is_null() || m.msg_namelen == 0 {
            None
        } else if (m.msg_namelen as c_int) < 0 {
            return Err(einval());
        } else {
            // SAFETY: the caller's address.
            Some(unsafe { read_addr(m.msg_name as *const sockaddr, m.msg_namelen) }?)
        };
        // SAFETY: the caller's message.
        let iov = unsafe { iovecs(m) }?;
        // SAFETY: the caller's iovecs, which the kernel reads.
        unsafe { vs::send_dgram(fd, iov, to, flags) }
    })
}

/// recv(2).
///
/// # Safety
/// As recv(2).
#[no_mangle]
pub unsafe extern "C" fn recv(fd: c_int, buf: *mut c_void, n: size_t, flags: c_int) -> ssize_t {
    match kind(fd) {
        Kind::StackDgram => {
            // SAFETY: the caller's arguments.
            unsafe { recv_dgram(fd, buf, n, flags, ptr::null_mut(), ptr::null_mut()) }
        }
        Kind::StackStream if flags & libc::MSG_TRUNC != 0 => {
            stream_eof(fd, size_call(|| vs::recv_discard(fd, n, flags)), n)
        }
        Kind::StackStream => {
            // SAFETY: libc's recv with the caller's arguments.
            stream_eof(fd, unsafe { (real().recv)(fd, buf, n, flags) }, n)
        }
        // SAFETY: libc's recv with the caller's arguments.
        _ => unsafe { (real().recv)(fd, buf, n, flags) },
    }
}

/// recvfrom(2).
///
/// # Safety
/// As recvfrom(2).
#[no_mangle]
pub unsafe extern "C" fn recvfrom(
    fd: c_int,
    buf: *mut c_void,
    n: size_t,
    flags: c_int,
    addr: *mut sockaddr,
    len: *mut socklen_t,
) -> ssize_t {
    let k = kind(fd);
    let trunc = flags & libc::MSG_TRUNC != 0;
    if !k.is_stack() || (k == Kind::StackStream && addr.is_null() && !trunc) {
        // SAFETY: libc's recvfrom with the caller's arguments.
        return unsafe { (real().recvfrom)(fd, buf, n, flags, addr, len) };
    }
    if k == Kind::StackStream {
        let r = if trunc {
            size_call(|| vs::recv_discard(fd, n, flags))
        } else {
            // SAFETY: libc's recv on the pair.
            unsafe { (real().recv)(fd, buf, n, flags) }
        };
        let r = stream_eof(fd, r, n);
        if r >= 0 && !addr.is_null() && !len.is_null() {
            // TCP gives no address: the length says so.
            // SAFETY: len is the caller's.
            unsafe { *len = 0 };
        }
        return r;
    }
    // SAFETY: the caller's arguments.
    unsafe { recv_dgram(fd, buf, n, flags, addr, len) }
}

/// # Safety
/// `buf` has `n` writable bytes (the kernel checks); addr/len as recvfrom(2).
unsafe fn recv_dgram(
    fd: c_int,
    buf: *mut c_void,
    n: size_t,
    flags: c_int,
    addr: *mut sockaddr,
    len: *mut socklen_t,
) -> ssize_t {
    size_call(|| {
        let iov = libc::iovec {
            iov_base: buf,
            iov_len: n,
        };
        // SAFETY: the caller's buffer, which the kernel writes (EFAULT if it cannot).
        let d = unsafe { vs::recv_dgram(fd, &[iov], flags) }?;
        if d.eof && !len.is_null() {
            // SAFETY: the caller's length.
            unsafe { *len = 0 }; // no datagram, no sender: as Linux
        } else if !addr.is_null() {
            let from = match d.from {
                Some(a) => a,
                // A connected socket's datagrams come from its peer.
                None => vs::peer_addr(fd)?,
            };
            // SAFETY: the caller's buffer.
            unsafe { write_addr(from, addr, len)? };
        }
        Ok(d.returned(flags))
    })
}

/// recvmsg(2).
///
/// # Safety
/// As recvmsg(2).
#[no_mangle]
pub unsafe extern "C" fn recvmsg(fd: c_int, msg: *mut msghdr, flags: c_int) -> ssize_t {
    let k = kind(fd);
    if msg.is_null() || !k.is_stack() {
        // SAFETY: libc's recvmsg with the caller's arguments.
        let r = unsafe { (real().recvmsg)(fd, msg, flags) };
        if r >= 0 && !msg.is_null() {
            // SAFETY: recvmsg succeeded, so msg is valid and filled.
            unsafe { forget_passed(&*msg) };
        }
        return r;
    }
    // SAFETY: msg is non-null and, as the caller promises, valid.
    let m = unsafe { &mut *msg };
    if k == Kind::StackStream && flags & libc::MSG_TRUNC == 0 {
        let (name, namelen) = (m.msg_name, m.msg_namelen);
        m.msg_name = ptr::null_mut();
        m.msg_namelen = 0;
        // SAFETY: the caller's message; TCP reports no address.
        let r = unsafe { (real().recvmsg)(fd, m, flags) };
        let r = if r == 0 {
            let room = (0..m.msg_iovlen)
                // SAFETY: msg_iov has msg_iovlen entries.
                .map(|i| unsafe { (*m.msg_iov.add(i)).iov_len })
                .fold(0usize, usize::saturating_add);
            stream_eof(fd, r, room)
        } else {
            r
        };
        m.msg_name = name;
        // TCP has no address: a name buffer gets length 0, a missing one nothing.
        m.msg_namelen = if r >= 0 && !name.is_null() {
            0
        } else {
            namelen
        };
        if r >= 0 {
            // SAFETY: recvmsg filled m.
            unsafe { forget_passed(m) };
        }
        return r;
    }
    size_call(|| {
        if !m.msg_name.is_null() && (m.msg_namelen as c_int) < 0 {
            return Err(einval());
        }
        // SAFETY: the caller's message.
        let iov = unsafe { iovecs(m) }?;
        m.msg_flags = flags & libc::MSG_CMSG_CLOEXEC;
        m.msg_controllen = 0;
        if k == Kind::StackStream {
            // MSG_TRUNC: TCP counts the bytes and stores none.
            let cap = iov.iter().fold(0usize, |t, v| t.saturating_add(v.iov_len));
            let n = match vs::recv_discard(fd, cap, flags) {
                Ok(0) if cap > 0 => vs::stream_eof(fd)?, // EOF, or a reset's error
                Ok(n) => n,
                Err(e) => {
                    if e.raw_os_error() == Some(libc::ECONNRESET) {
                        vs::reset_reported(fd);
                    }
                    return Err(e);
                }
            };
            if !m.msg_name.is_null() {
                m.msg_namelen = 0;
            }
            return Ok(n);
        }
        // SAFETY: the caller's iovecs, which the kernel writes.
        let d = unsafe { vs::recv_dgram(fd, iov, flags) }?;
        if d.truncated() {
            m.msg_flags |= libc::MSG_TRUNC;
        }
        if d.eof {
            if !m.msg_name.is_null() {
                m.msg_namelen = 0;
            }
        } else if !m.msg_name.is_null() {
            let a = match d.from {
                Some(a) => a,
                None => vs::peer_addr(fd)?,
            };
            let mut l = m.msg_namelen;
            // SAFETY: msg_name has msg_namelen writable bytes.
            unsafe { write_addr(a, m.msg_name as *mut sockaddr, &mut l)? };
            m.msg_namelen = l;
        }
        Ok(d.returned(flags))
    })
}
