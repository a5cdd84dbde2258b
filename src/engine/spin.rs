//! Adaptive busy-polling. After a burst of work the engine polls without sleeping for a
//! moment, when the last wait was that short: the answer to what it just sent (a frame back
//! from the switch, the application's next write) then comes in without a wake-up each way,
//! which is most of a round trip's cost. Traffic that comes further apart than the window
//! costs no spinning at all, and an idle engine sleeps.

use std::time::{Duration, Instant};

/// The spin window: `VDESTACK_SPIN_US` microseconds (0 turns spinning off), 200 by default.
pub fn window_from_env() -> Duration {
    let us = std::env::var("VDESTACK_SPIN_US")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    Duration::from_micros(us)
}

/// When to poll without sleeping.
pub struct Spin {
    window: Duration,
    /// Poll without sleeping until then.
    until: Instant,
    /// When the engine last ran out of work.
    idle_since: Option<Instant>,
    /// The last wait was within the window: spinning is likely to pay.
    worth: bool,
}

impl Spin {
    /// Spins for `window` after work, while waits stay that short.
    pub fn new(window: Duration) -> Spin {
        Spin {
            window,
            until: Instant::now(),
            idle_since: None,
            worth: true,
        }
    }

    /// Whether the next poll should return at once instead of sleeping.
    pub fn spinning(&self, now: Instant) -> bool {
        now < self.until
    }

    /// Events came at `now`.
    pub fn events(&mut self, now: Instant) {
        if let Some(t) = self.idle_since.take() {
            self.worth = now.duration_since(t) <= self.window;
        }
    }

    /// The engine ran out of work at `now`.
    pub fn idle(&mut self, now: Instant) {
        self.idle_since = Some(now);
        self.until = if self.worth { now + self.window } else { now };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spins_while_events_come_soon_and_stops_after_a_long_wait() {
        let w = Duration::from_micros(200);
        let mut s = Spin::new(w);
        let t0 = Instant::now();
        s.events(t0);
        s.idle(t0);
        assert!(s.spinning(t0 + Duration::from_micros(100)));
        assert!(!s.spinning(t0 + Duration::from_micros(300)));
        // The next event came 10 ms later: no spinning after it.
        let t1 = t0 + Duration::from_millis(10);
        s.events(t1);
        s.idle(t1);
        assert!(!s.spinning(t1));
        // Then one came within the window: spinning again.
        let t2 = t1 + Duration::from_micros(50);
        s.events(t2);
        s.idle(t2);
        assert!(s.spinning(t2 + Duration::from_micros(10)));
        // Off when the window is zero.
        let mut off = Spin::new(Duration::ZERO);
        off.events(t0);
        off.idle(t0);
        assert!(!off.spinning(t0));
    }
}
