//! The supervisor: one thread that receives every notification of a sealed tree, answers
//! at once what needs no wait, and hands the rest to workers. Every notification gets an
//! answer (a target waits for it), a panic included.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use super::calls::{self, Answer, Target};
use super::notify::{self, Listener};
use super::worker::Pool;
use crate::Stack;

/// Serves `lis` until it fails (the process ends first, normally): sockets come from
/// `stack`.
pub fn serve(lis: Arc<Listener>, stack: Stack) {
    let pool = Pool::default();
    while let Ok(n) = lis.recv() {
        let t = Target {
            lis: lis.clone(),
            n,
        };
        let r = catch_unwind(AssertUnwindSafe(|| decide(&t, &stack)))
            .unwrap_or_else(|_| Err(io::Error::from_raw_os_error(libc::EIO)));
        match r {
            Ok(Answer::Later(job)) => {
                let lis = lis.clone();
                pool.submit(Box::new(move || {
                    let r = catch_unwind(AssertUnwindSafe(job))
                        .unwrap_or_else(|_| Err(io::Error::from_raw_os_error(libc::EIO)));
                    finish(&lis, n.id, r)
                }));
            }
            r => finish(&lis, n.id, r),
        }
    }
}

/// The answer to one notification.
fn decide(t: &Target, stack: &Stack) -> io::Result<Answer> {
    if t.n.nr == libc::SYS_socket {
        // The filter sends AF_INET and AF_INET6 only.
        let ty = t.n.args[1] as i32;
        let fd = stack.socket(t.n.args[0] as i32, ty, t.n.args[2] as i32)?;
        return Ok(Answer::Fd(fd, ty & libc::SOCK_CLOEXEC != 0));
    }
    // Every other call the filter sends names an fd first. One we cannot take (closed:
    // EBADF) is the kernel's to answer.
    let Ok(fd) = take(t, t.n.args[0] as i32) else {
        return Ok(Answer::Continue);
    };
    if !crate::socket::is_stack_fd(fd.as_raw_fd()) {
        return Ok(Answer::Continue);
    }
    calls::on_stack_fd(t.clone(), fd)
}

/// Sends the answer.
fn finish(lis: &Listener, id: u64, r: io::Result<Answer>) {
    match r {
        Ok(Answer::Continue) => lis.proceed(id),
        Ok(Answer::Value(v)) => lis.answer(id, v),
        Ok(Answer::Fd(fd, cloexec)) => {
            if let Err(e) = lis.answer_fd(id, fd.as_raw_fd(), cloexec) {
                // ENOENT: the target stopped waiting; its fd is dropped here. Else (its
                // fd limit: EMFILE) the call fails with the reason.
                if e.raw_os_error() != Some(libc::ENOENT) {
                    lis.fail(id, e.raw_os_error().unwrap_or(libc::EIO));
                }
            }
        }
        // A job never returns another job; answer rather than leave the target waiting.
        Ok(Answer::Later(_)) => lis.fail(id, libc::EIO),
        Err(e) => {
            let errno = e.raw_os_error().unwrap_or(libc::EIO);
            // ESRCH: the target is gone (`calls::gone`); if it is not, it gets the error.
            if errno != libc::ESRCH || lis.valid(id) {
                lis.fail(id, errno);
            }
        }
    }
}

/// A copy of the target's fd `fd`, through a pidfd of the calling thread opened for this
/// call. (Keeping pidfds would save two syscalls a call, but a pidfd kept for a thread that
/// ended holds an fd of this process until it is noticed: the process-tree soak saw one
/// per process started.)
fn take(t: &Target, fd: i32) -> io::Result<OwnedFd> {
    let (p, _) = notify::pidfd(t.n.tid)?;
    // The tid was the caller's when the pidfd was opened.
    if !t.lis.valid(t.n.id) {
        return Err(calls::gone());
    }
    notify::take_fd(&p, fd)
}
