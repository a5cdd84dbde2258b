//! Sealing a process tree into a stack: seccomp user notification, so that programs that
//! make their socket syscalls themselves (static binaries, Go, raw `syscall()`) get stack
//! sockets too, and nothing reaches the host's network.
//!
//! `vdestack run` forks the program; before exec the child sets no_new_privs and installs
//! [`filter`]'s program with a listener, hands the listener to the run process (which
//! takes it with pidfd_getfd while the child waits), closes its own copy and execs. The
//! filter is inherited by every descendant (fork, clone, exec), and their trapped calls
//! all come to the one supervisor thread of the run process ([`supervisor`]):
//! - socket(AF_INET/AF_INET6) makes a stack socket and injects it (SECCOMP_IOCTL_NOTIF_ADDFD);
//! - a call on an fd takes a copy of the fd (pidfd_getfd): not a stack fd, the kernel runs
//!   the call; a stack fd, [`calls`] runs on it what the C library runs
//!   ([`crate::socket`]), with the target's memory copied in and out ([`remote`]);
//! - calls that may wait run on worker threads ([`worker`]).
//!
//! The preloaded library stays: libc programs make their calls on stack fds in-process, and
//! the library's own plumbing carries [`SEAL_MARK`](crate::sys::SEAL_MARK), which the
//! filter lets through, so they seldom trap.
//!
//! Needs Linux 5.9 (SECCOMP_IOCTL_NOTIF_ADDFD; 5.14 answers in one step) and the right to
//! read the target's fds and memory (ptrace access: a parent has it over its child unless
//! Yama's ptrace_scope is 2 or 3 without CAP_SYS_PTRACE). Built for x86_64 and aarch64.

mod calls;
pub mod filter;
mod mmsg;
mod notify;
mod remote;
mod supervisor;
mod worker;

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::mpsc;
use std::sync::Arc;

use crate::Stack;

/// Whether this machine can seal a program; the error says why not, for a person.
pub fn supported() -> Result<(), String> {
    if !cfg!(any(target_arch = "x86_64", target_arch = "aarch64")) {
        return Err("sealing is built for x86_64 and aarch64 only".into());
    }
    // SAFETY: utsname is plain old data; uname fills it.
    let mut u: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: u is valid for the kernel to write.
    if unsafe { libc::uname(&mut u) } == 0 {
        let release: String = u
            .release
            .iter()
            .take_while(|&&c| c != 0)
            .map(|&c| c as u8 as char)
            .collect();
        let mut parts = release.split(|c: char| !c.is_ascii_digit());
        let major: u32 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
        let minor: u32 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
        if (major, minor) < (5, 9) {
            return Err(format!(
                "Linux {release} lacks seccomp user notification with fd injection \
                 (SECCOMP_IOCTL_NOTIF_ADDFD, Linux 5.9)"
            ));
        }
    }
    let scope = std::fs::read_to_string("/proc/sys/kernel/yama/ptrace_scope")
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok())
        .unwrap_or(0);
    // SAFETY: geteuid has no arguments and cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    if scope >= 3 || (scope == 2 && !root) {
        return Err(format!(
            "kernel.yama.ptrace_scope is {scope}: the supervisor may not read the program's \
             fds and memory"
        ));
    }
    Ok(())
}

/// What `vdestack run` needs to seal the program it starts: the filter, and the pipes the
/// child and the run process meet on.
pub struct Seal {
    prog: Vec<libc::sock_filter>,
    /// Child → run process: the child's pid and its listener's fd number, or -1 and errno.
    report: (OwnedFd, OwnedFd),
    /// Run process → child: the listener was taken; the child may close it and exec.
    ack: (OwnedFd, OwnedFd),
    required: bool,
}

/// How sealing went.
pub enum Outcome {
    /// The program is sealed and supervised.
    Sealed,
    /// The filter could not be installed; the program runs without it (only when sealing
    /// was not required).
    Unsealed(String),
    /// The filter is installed but the supervisor could not take its listener: the
    /// program's socket calls fail (ENOSYS).
    Broken(String),
}

/// The run process's side of sealing, after the child was started.
pub struct Supervision {
    /// The child's ends of the pipes, held until the child exists, then dropped, so that a
    /// child that dies early is seen (EOF).
    child_ends: Option<(OwnedFd, OwnedFd)>,
    outcome: mpsc::Receiver<Outcome>,
}

fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: fds has room for the two fds pipe2 writes.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: two fresh fds, ours alone.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

impl Seal {
    /// Prepares sealing. `required`: a child that cannot install the filter fails to start
    /// rather than run unsealed.
    pub fn new(required: bool) -> io::Result<Seal> {
        Ok(Seal {
            prog: filter::program(),
            report: pipe()?,
            ack: pipe()?,
            required,
        })
    }

    /// What the child runs between fork and exec (`CommandExt::pre_exec`): raw syscalls
    /// only, no allocation, no lock.
    pub fn child_hook(&self) -> impl FnMut() -> io::Result<()> + Send + Sync + 'static {
        let prog = self.prog.clone();
        let report = self.report.1.as_raw_fd();
        let ack = self.ack.0.as_raw_fd();
        let parent_ends = [self.report.0.as_raw_fd(), self.ack.1.as_raw_fd()];
        let required = self.required;
        move || {
            // The run process's ends: closed here so that its end is seen (EOF) if it goes.
            for fd in parent_ends {
                // SAFETY: closing this child's copies of fds it does not otherwise use.
                unsafe { libc::close(fd) };
            }
            match notify::install(&prog) {
                Ok(listener) => {
                    // SAFETY: getpid has no arguments and cannot fail.
                    let pid = unsafe { libc::getpid() };
                    write_pair(report, pid, listener);
                    // The run process has taken the listener (or is gone: EOF) when this
                    // returns; the program must not hold it.
                    let mut b = [0u8; 1];
                    // SAFETY: read into a one-byte buffer; close of our own fd.
                    unsafe {
                        libc::read(ack, b.as_mut_ptr() as *mut _, 1);
                        libc::close(listener);
                    }
                    Ok(())
                }
                Err(errno) => {
                    write_pair(report, -1, errno);
                    if required {
                        Err(io::Error::from_raw_os_error(errno))
                    } else {
                        Ok(())
                    }
                }
            }
        }
    }

    /// Starts the thread that takes the child's listener and then supervises it, with
    /// sockets from `stack`. Call before spawning the child; then [`Supervision::started`].
    pub fn supervise(self, stack: Stack) -> io::Result<Supervision> {
        let (report_r, report_w) = self.report;
        let (ack_r, ack_w) = self.ack;
        let (tx, rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("vdestack-seal".into())
            .spawn(move || {
                let (lis, outcome) = take_listener(&report_r);
                // The child goes on.
                // SAFETY: a one-byte write from a buffer we own.
                unsafe { libc::write(ack_w.as_raw_fd(), [1u8].as_ptr() as *const _, 1) };
                drop(ack_w);
                let _ = tx.send(outcome);
                if let Some(lis) = lis {
                    supervisor::serve(Arc::new(notify::Listener::new(lis)), stack);
                }
            })?;
        Ok(Supervision {
            child_ends: Some((report_w, ack_r)),
            outcome: rx,
        })
    }
}

impl Supervision {
    /// The child was spawned (it has exec'd) or failed to: says how sealing went.
    pub fn started(&mut self) -> Outcome {
        self.child_ends = None;
        self.outcome
            .recv()
            .unwrap_or_else(|_| Outcome::Broken("the supervisor thread ended".into()))
    }
}

/// Writes two ints to a pipe, as one write (atomic for a pipe).
fn write_pair(fd: RawFd, a: i32, b: i32) {
    let mut buf = [0u8; 8];
    buf[..4].copy_from_slice(&a.to_ne_bytes());
    buf[4..].copy_from_slice(&b.to_ne_bytes());
    // SAFETY: write of an 8-byte buffer we own.
    unsafe { libc::write(fd, buf.as_ptr() as *const _, buf.len()) };
}

/// Reads the child's report and takes its listener.
fn take_listener(report: &OwnedFd) -> (Option<OwnedFd>, Outcome) {
    let mut buf = [0u8; 8];
    // SAFETY: read into an 8-byte buffer we own.
    let n = unsafe { libc::read(report.as_raw_fd(), buf.as_mut_ptr() as *mut _, buf.len()) };
    if n != 8 {
        return (
            None,
            Outcome::Broken("the program ended before it was sealed".into()),
        );
    }
    let pid = i32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]);
    let val = i32::from_ne_bytes([buf[4], buf[5], buf[6], buf[7]]);
    if pid < 0 {
        let e = io::Error::from_raw_os_error(val);
        return (
            None,
            Outcome::Unsealed(format!("installing the seccomp filter: {e}")),
        );
    }
    let taken = notify::pidfd(pid as u32).and_then(|(p, _)| notify::take_fd(&p, val));
    match taken {
        Ok(l) => (Some(l), Outcome::Sealed),
        Err(e) => (
            None,
            Outcome::Broken(format!("taking the program's seccomp listener: {e}")),
        ),
    }
}
