//! The kernel's side of seccomp user notification: installing the filter (in the child,
//! before exec), receiving notifications, answering them, injecting fds, and reaching the
//! target's fds (pidfd_getfd). Raw syscalls and ioctls only, each with its SAFETY note.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};

/// One trapped syscall.
#[derive(Clone, Copy, Debug)]
pub struct Notif {
    /// The notification's id, for answering it and checking it is still pending.
    pub id: u64,
    /// The calling thread's id (in this process's pid namespace).
    pub tid: u32,
    /// The syscall number.
    pub nr: i64,
    /// Its arguments.
    pub args: [u64; 6],
}

/// Installs `prog` as this thread's seccomp filter, with no_new_privs, and returns the
/// listener fd (close-on-exec). Only raw syscalls, no allocation: it runs in a child
/// between fork and exec.
pub fn install(prog: &[libc::sock_filter]) -> Result<RawFd, i32> {
    // SAFETY: prctl with integer arguments.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err(errno());
    }
    let fprog = libc::sock_fprog {
        len: prog.len() as libc::c_ushort,
        filter: prog.as_ptr() as *mut _,
    };
    // SAFETY: fprog points at prog, which lives across the call; the kernel copies it.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            // SPEC_ALLOW: the seal keeps a program off the network, it does not guard
            // against Spectre; without it the kernel forces the speculation mitigations
            // on every sealed process (SSBD, an IBPB on its context switches), which more
            // than doubled the time of a round trip to the engine.
            libc::SECCOMP_FILTER_FLAG_NEW_LISTENER | libc::SECCOMP_FILTER_FLAG_SPEC_ALLOW,
            &fprog as *const libc::sock_fprog,
        )
    };
    if fd < 0 {
        return Err(errno());
    }
    Ok(fd as RawFd)
}

fn errno() -> i32 {
    io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

/// Whether SECCOMP_ADDFD_FLAG_SEND is known to be missing (Linux < 5.14).
static NO_ADDFD_SEND: AtomicBool = AtomicBool::new(false);

/// A filter's listener: where its notifications arrive and are answered.
pub struct Listener {
    fd: OwnedFd,
    /// The kernel's size of struct seccomp_notif (it may grow; RECV wants room for all).
    notif_size: usize,
}

impl Listener {
    /// Takes a listener fd.
    pub fn new(fd: OwnedFd) -> Listener {
        // SAFETY: seccomp_notif_sizes is plain old data.
        let mut sizes: libc::seccomp_notif_sizes = unsafe { std::mem::zeroed() };
        // SAFETY: GET_NOTIF_SIZES writes one struct seccomp_notif_sizes.
        let r = unsafe {
            libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_GET_NOTIF_SIZES,
                0,
                &mut sizes as *mut libc::seccomp_notif_sizes,
            )
        };
        let ours = size_of::<libc::seccomp_notif>();
        let notif_size = if r == 0 {
            ours.max(sizes.seccomp_notif as usize)
        } else {
            ours
        };
        let l = Listener { fd, notif_size };
        // Linux 6.6: the kernel wakes the answerer and the target on the same CPU, a
        // round trip costing less. Older kernels say EINVAL; nothing else changes.
        let sync: u64 = 1; // SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP
                           // SAFETY: SET_FLAGS reads one u64.
        unsafe { libc::ioctl(l.fd.as_raw_fd(), libc::SECCOMP_IOCTL_NOTIF_SET_FLAGS, sync) };
        l
    }

    /// Waits for the next notification.
    pub fn recv(&self) -> io::Result<Notif> {
        let words = self.notif_size.div_ceil(8);
        loop {
            // The kernel wants the buffer zeroed.
            let mut buf = vec![0u64; words];
            // SAFETY: buf has room for the kernel's struct seccomp_notif, aligned for it.
            let r = unsafe {
                libc::ioctl(
                    self.fd.as_raw_fd(),
                    libc::SECCOMP_IOCTL_NOTIF_RECV,
                    buf.as_mut_ptr(),
                )
            };
            if r < 0 {
                let e = io::Error::last_os_error();
                match e.raw_os_error() {
                    // A signal here, or a target gone between its call and our read.
                    Some(libc::EINTR) | Some(libc::ENOENT) => continue,
                    _ => return Err(e),
                }
            }
            // SAFETY: the kernel filled a struct seccomp_notif at the buffer's start.
            let n = unsafe { std::ptr::read(buf.as_ptr() as *const libc::seccomp_notif) };
            return Ok(Notif {
                id: n.id,
                tid: n.pid,
                nr: n.data.nr as i64,
                args: n.data.args,
            });
        }
    }

    /// Whether notification `id` still waits for its answer (its thread was not
    /// interrupted, has not died): so its memory is still that thread's to touch.
    pub fn valid(&self, id: u64) -> bool {
        // SAFETY: ID_VALID reads one u64.
        unsafe {
            libc::ioctl(
                self.fd.as_raw_fd(),
                libc::SECCOMP_IOCTL_NOTIF_ID_VALID,
                &id as *const u64,
            ) == 0
        }
    }

    fn send(&self, id: u64, val: i64, error: i32, flags: u32) {
        let resp = libc::seccomp_notif_resp {
            id,
            val,
            error,
            flags,
        };
        // SAFETY: SEND reads one struct seccomp_notif_resp. It fails (ENOENT) when the
        // target is no longer waiting, which leaves nothing to do.
        unsafe {
            libc::ioctl(
                self.fd.as_raw_fd(),
                libc::SECCOMP_IOCTL_NOTIF_SEND,
                &resp as *const libc::seccomp_notif_resp,
            )
        };
    }

    /// Lets the syscall run in the kernel as the target made it.
    pub fn proceed(&self, id: u64) {
        self.send(id, 0, 0, libc::SECCOMP_USER_NOTIF_FLAG_CONTINUE as u32);
    }

    /// Answers with a return value.
    pub fn answer(&self, id: u64, val: i64) {
        self.send(id, val, 0, 0);
    }

    /// Answers with an error.
    pub fn fail(&self, id: u64, errno: i32) {
        self.send(id, 0, -errno, 0);
    }

    /// Puts a copy of `fd` into the target's fd table and answers with its number, at once
    /// (SECCOMP_ADDFD_FLAG_SEND, Linux 5.14; before that, in two steps).
    pub fn answer_fd(&self, id: u64, fd: RawFd, cloexec: bool) -> io::Result<i32> {
        let add = |flags: u32| {
            let a = libc::seccomp_notif_addfd {
                id,
                flags,
                srcfd: fd as u32,
                newfd: 0,
                newfd_flags: if cloexec { libc::O_CLOEXEC as u32 } else { 0 },
            };
            // SAFETY: ADDFD reads one struct seccomp_notif_addfd.
            let r = unsafe {
                libc::ioctl(
                    self.fd.as_raw_fd(),
                    libc::SECCOMP_IOCTL_NOTIF_ADDFD,
                    &a as *const libc::seccomp_notif_addfd,
                )
            };
            if r < 0 {
                Err(io::Error::last_os_error())
            } else {
                Ok(r)
            }
        };
        if !NO_ADDFD_SEND.load(Ordering::Relaxed) {
            match add(libc::SECCOMP_ADDFD_FLAG_SEND as u32) {
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                    NO_ADDFD_SEND.store(true, Ordering::Relaxed)
                }
                r => return r,
            }
        }
        let n = add(0)?;
        self.answer(id, n as i64);
        Ok(n)
    }
}

/// A pidfd for thread `tid`, and whether it is the thread's own (Linux 6.9's PIDFD_THREAD)
/// rather than its process's. Only meaningful once the caller has checked that its
/// notification is still valid afterwards (the tid could have been reused).
pub fn pidfd(tid: u32) -> io::Result<(OwnedFd, bool)> {
    const PIDFD_THREAD: libc::c_int = libc::O_EXCL;
    let open = |pid: u32, flags: libc::c_int| {
        // SAFETY: pidfd_open with integer arguments; the fd is owned at once.
        let r = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, flags) };
        if r < 0 {
            Err(io::Error::last_os_error())
        } else {
            // SAFETY: a fresh fd.
            Ok(unsafe { OwnedFd::from_raw_fd(r as RawFd) })
        }
    };
    match open(tid, PIDFD_THREAD) {
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => match open(tid, 0) {
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => Ok((open(tgid(tid)?, 0)?, false)),
            r => Ok((r?, false)),
        },
        r => Ok((r?, true)),
    }
}

/// The process a thread belongs to, from /proc (kernels without PIDFD_THREAD).
fn tgid(tid: u32) -> io::Result<u32> {
    let status = std::fs::read_to_string(format!("/proc/{tid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Tgid:"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| io::Error::from_raw_os_error(libc::ESRCH))
}

/// A copy of the target's fd `fd` (close-on-exec), through its pidfd.
pub fn take_fd(pidfd: &OwnedFd, fd: i32) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_getfd with integer arguments; the fd is owned at once.
    let r = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), fd, 0) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh fd.
    Ok(unsafe { OwnedFd::from_raw_fd(r as RawFd) })
}

/// Sends `sig` to thread `tid` (SIGPIPE for a write on a broken connection, as the kernel
/// would have raised it in that thread).
pub fn signal_thread(tid: u32, sig: i32) {
    // SAFETY: tkill with integer arguments. The caller checked the notification is valid,
    // so `tid` is the thread that made the call.
    unsafe { libc::syscall(libc::SYS_tkill, tid, sig) };
}
