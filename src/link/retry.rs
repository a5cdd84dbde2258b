//! When a link whose network went away (a switch killed, or not answering) tries again: a
//! timer fd the engine watches like any link fd, with a wait that doubles from 50 ms to 2 s
//! and starts over once the link is back.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

/// The first wait.
pub const FIRST: Duration = Duration::from_millis(50);
/// The longest wait.
pub const LAST: Duration = Duration::from_secs(2);

/// The backoff of one link.
#[derive(Debug)]
pub struct Retry {
    wait: Duration,
    /// When the timer last armed expires.
    due: Instant,
}

impl Default for Retry {
    fn default() -> Retry {
        Retry {
            wait: FIRST,
            due: Instant::now(),
        }
    }
}

impl Retry {
    /// A timer fd that turns readable after the current wait; the next wait is twice as
    /// long (at most [`LAST`]).
    pub fn timer(&mut self) -> io::Result<OwnedFd> {
        // SAFETY: timerfd_create takes integer arguments; the fd is ours on success.
        let fd = unsafe {
            libc::timerfd_create(
                libc::CLOCK_MONOTONIC,
                libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a fresh fd that nothing else owns.
        let timer = unsafe { OwnedFd::from_raw_fd(fd) };
        self.rearm(&timer)?;
        Ok(timer)
    }

    /// Arms `timer` again, for an attempt that failed at once (nothing listening yet).
    pub fn rearm(&mut self, timer: &OwnedFd) -> io::Result<()> {
        let wait = self.wait;
        self.wait = (self.wait * 2).min(LAST);
        self.due = Instant::now() + wait;
        let spec = libc::itimerspec {
            it_interval: libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: libc::timespec {
                tv_sec: wait.as_secs() as libc::time_t,
                tv_nsec: wait.subsec_nanos() as libc::c_long,
            },
        };
        // SAFETY: timerfd_settime on our timer fd with a spec that lives across the call.
        let r = unsafe { libc::timerfd_settime(timer.as_raw_fd(), 0, &spec, std::ptr::null_mut()) };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Whether the timer last armed has expired, by the clock: a link checks this before
    /// it reads the timer, since it is asked after every round of work.
    pub fn due(&self) -> bool {
        Instant::now() >= self.due
    }

    /// The link is back: the next outage starts from the first wait.
    pub fn reset(&mut self) {
        self.wait = FIRST;
    }
}

/// Whether `timer` has expired (and takes the expiry, so that it polls unreadable again).
pub fn expired(timer: &OwnedFd) -> bool {
    let mut n = [0u8; 8];
    // SAFETY: reads at most 8 bytes into a buffer of 8.
    let r = unsafe { libc::read(timer.as_raw_fd(), n.as_mut_ptr().cast(), n.len()) };
    r == 8
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wait_doubles_up_to_two_seconds_and_starts_over() {
        let mut r = Retry::default();
        let t = r.timer().unwrap();
        assert!(!expired(&t));
        let mut waits = vec![];
        for _ in 0..7 {
            waits.push(r.wait);
            r.rearm(&t).unwrap();
        }
        let ms: Vec<u128> = waits.iter().map(|d| d.as_millis()).collect();
        assert_eq!(ms, [100, 200, 400, 800, 1600, 2000, 2000]);
        r.reset();
        assert_eq!(r.wait, FIRST);
        // A short wait expires.
        r.rearm(&t).unwrap();
        std::thread::sleep(FIRST + Duration::from_millis(20));
        assert!(expired(&t));
        assert!(!expired(&t), "taken");
    }
}
