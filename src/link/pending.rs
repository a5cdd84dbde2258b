//! An opening that runs on an opener thread (it may block: a busy switch, a slow plugin)
//! while the engine goes on: the link holds a [`Pending`], polls its fd, and takes the
//! outcome when the fd turns readable.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::{Arc, Mutex};

use super::Background;
use crate::sys;

/// The outcome, to come, of a job handed to the opener threads.
#[derive(Debug)]
pub struct Pending<T> {
    slot: Arc<Mutex<Slot<T>>>,
    /// Turns readable when the job is done.
    wake: OwnedFd,
}

#[derive(Debug)]
enum Slot<T> {
    Waiting,
    Done(io::Result<T>),
    /// The link was dropped first: what the job opens is dropped (closed) with the slot.
    Abandoned,
}

impl<T: Send + 'static> Pending<T> {
    /// Hands `job` to `background`.
    pub fn start(
        background: &Background,
        job: impl FnOnce() -> io::Result<T> + Send + 'static,
    ) -> io::Result<Pending<T>> {
        let (wake, wake_w) = sys::pipe()?;
        let slot = Arc::new(Mutex::new(Slot::Waiting));
        let job_slot = slot.clone();
        background(Box::new(move || {
            let r = job();
            let mut slot = job_slot.lock().unwrap_or_else(|p| p.into_inner());
            if !matches!(*slot, Slot::Abandoned) {
                *slot = Slot::Done(r);
            }
            drop(slot);
            // SAFETY: one byte from a constant into the pipe we own; a full pipe already
            // holds a wake-up, and a closed one has nobody to wake.
            unsafe { libc::write(wake_w.as_raw_fd(), [1u8].as_ptr().cast(), 1) };
        }));
        Ok(Pending { slot, wake })
    }
}

impl<T> Pending<T> {
    /// The fd to poll: readable once the job is done.
    pub fn fd(&self) -> RawFd {
        self.wake.as_raw_fd()
    }

    /// The job's outcome, if it has one (taken: a second call gives None).
    pub fn take(&self) -> Option<io::Result<T>> {
        let mut slot = self.slot.lock().unwrap_or_else(|p| p.into_inner());
        match std::mem::replace(&mut *slot, Slot::Waiting) {
            Slot::Done(r) => Some(r),
            other => {
                *slot = other;
                None
            }
        }
    }
}

impl<T> Drop for Pending<T> {
    fn drop(&mut self) {
        // A job still running drops what it opens; one done drops it with the slot.
        *self.slot.lock().unwrap_or_else(|p| p.into_inner()) = Slot::Abandoned;
    }
}
