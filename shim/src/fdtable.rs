//! What each fd number is, remembered so that the socket calls on an fd need no syscall to
//! tell a stack socket from a kernel one: one atomic byte per fd, no lock.
//!
//! Entries are written where the library learns the truth: the fds its `socket`,
//! `socketpair`, `accept`, `accept4` and `vde_msocket` return (stack or kernel), `close`
//! (forgotten), `dup`/`dup2`/`dup3`/`fcntl(F_DUPFD*)` (copied), and fds that arrive by
//! SCM_RIGHTS in `recvmsg` (forgotten). An fd the table does not know is asked about once
//! (`getpeername`, which names the engine for a stack fd) and the answer kept.
//!
//! Staleness: an fd closed where the library cannot see it (`fclose`, which libc does
//! without going through `close`'s symbol, a raw `syscall(SYS_close)`, `close_range`) keeps
//! its entry; so the answer can be wrong if that number is then reused by an fd that came
//! through none of the calls above either (a raw `socket` syscall, an fd libc made for
//! itself). A TCP stack fd and a kernel socket take the same path in send/recv when no
//! address is given, so the common calls are right even then; a wrong answer matters for
//! UDP and for addressed calls. We accept that residual risk rather than pay a syscall per
//! call to re-validate (which is what the table exists to avoid); `fclose` is interposed too,
//! which closes the one gap ordinary programs hit.
//!
//! fork copies the table with the fds; exec starts it empty.

use std::sync::atomic::{AtomicU8, Ordering};

use libc::c_int;

/// What an fd is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// Not known: ask.
    Unknown = 0,
    /// Anything that is not a stack socket: libc handles every call on it.
    Kernel = 1,
    /// A stack TCP socket (a stream pair).
    StackStream = 2,
    /// A stack UDP socket (a datagram pair).
    StackDgram = 3,
}

impl Kind {
    fn from_u8(v: u8) -> Kind {
        match v {
            1 => Kind::Kernel,
            2 => Kind::StackStream,
            3 => Kind::StackDgram,
            _ => Kind::Unknown,
        }
    }

    /// Whether it is a stack socket.
    pub fn is_stack(self) -> bool {
        matches!(self, Kind::StackStream | Kind::StackDgram)
    }
}

/// Entries for fds below this; higher fds are asked about at every call. A static array of
/// zeros costs address space only: a page becomes memory when an fd in it is first written.
const SIZE: usize = 1 << 20;

static TABLE: [AtomicU8; SIZE] = [const { AtomicU8::new(0) }; SIZE];

fn slot(fd: c_int) -> Option<&'static AtomicU8> {
    usize::try_from(fd).ok().and_then(|i| TABLE.get(i))
}

/// The remembered kind of `fd` (Unknown if none).
pub fn get(fd: c_int) -> Kind {
    slot(fd).map_or(Kind::Unknown, |s| Kind::from_u8(s.load(Ordering::Relaxed)))
}

/// Remembers what `fd` is.
pub fn set(fd: c_int, k: Kind) {
    if let Some(s) = slot(fd) {
        s.store(k as u8, Ordering::Relaxed);
    }
}

/// Forgets `fd` (it was closed, or its number now holds something unseen).
pub fn forget(fd: c_int) {
    set(fd, Kind::Unknown);
}

/// `to` is now a copy of `from` (dup and friends).
pub fn copy(from: c_int, to: c_int) {
    set(to, get(from));
}

/// The kind of a socket of type `ty` in a stack: what the application asked for
/// (SOCK_STREAM or SOCK_DGRAM, flags allowed), or its pair's type (SOCK_SEQPACKET for UDP).
pub fn stack_kind(ty: c_int) -> Kind {
    if matches!(ty & 0xf, libc::SOCK_DGRAM | libc::SOCK_SEQPACKET) {
        Kind::StackDgram
    } else {
        Kind::StackStream
    }
}

/// What `fd` is: the table's answer, or else the fd's own (asked once, then kept).
pub fn kind(fd: c_int) -> Kind {
    match get(fd) {
        Kind::Unknown => {
            let (k, keep) = classify(fd);
            if keep {
                set(fd, k);
            }
            k
        }
        k => k,
    }
}

/// Asks the fd itself. The answer is kept only for an open fd: a closed number says nothing
/// about what it will hold.
fn classify(fd: c_int) -> (Kind, bool) {
    if fd < 0 {
        return (Kind::Kernel, false);
    }
    if vdestack::internal::socket::is_stack_fd(fd) {
        let ty = vdestack::internal::sys::getsockopt_int(fd, libc::SOL_SOCKET, libc::SO_TYPE);
        return match ty {
            Ok(t) => (stack_kind(t), true),
            Err(_) => (Kind::Kernel, false),
        };
    }
    // SAFETY: fcntl with integer arguments only reads the fd's flags.
    let open = unsafe { libc::syscall(libc::SYS_fcntl, fd, libc::F_GETFD) } >= 0;
    (Kind::Kernel, open)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_get_copy_forget() {
        assert_eq!(get(-1), Kind::Unknown);
        assert_eq!(get(SIZE as c_int), Kind::Unknown);
        set(SIZE as c_int, Kind::Kernel); // beyond the table: ignored
        assert_eq!(get(SIZE as c_int), Kind::Unknown);
        set(900_001, Kind::StackDgram);
        copy(900_001, 900_002);
        assert_eq!(get(900_002), Kind::StackDgram);
        forget(900_001);
        assert_eq!(get(900_001), Kind::Unknown);
        assert_eq!(get(900_002), Kind::StackDgram);
    }

    #[test]
    fn a_closed_fd_is_not_remembered_and_an_open_one_is() {
        // Far above anything the test harness opens.
        assert_eq!(kind(900_100), Kind::Kernel);
        assert_eq!(get(900_100), Kind::Unknown);
        let mut p = [0; 2];
        // SAFETY: p has room for two fds.
        assert_eq!(unsafe { libc::pipe(p.as_mut_ptr()) }, 0);
        assert_eq!(kind(p[0]), Kind::Kernel);
        assert_eq!(get(p[0]), Kind::Kernel);
        // SAFETY: closing the pipe we made.
        unsafe {
            libc::close(p[0]);
            libc::close(p[1]);
        }
    }
}
