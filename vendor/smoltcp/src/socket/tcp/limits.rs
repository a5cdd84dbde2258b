//! vdestack: when a connection gives up, as Linux's does. Upstream smoltcp retransmits and
//! probes for ever unless `set_timeout` is used, and that timeout also ends idle connections
//! whose peer is merely quiet. Linux ends a connection only when it waits for an answer:
//! unacknowledged data or FIN (`tcp_retries2`, or `TCP_USER_TIMEOUT`), or keep-alive probes
//! (`TCP_KEEPCNT` of them unanswered), and reports ETIMEDOUT.

use crate::time::{Duration, Instant};

/// A socket's limits, and what they have counted.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Limits {
    /// How long the peer may stay silent while we wait for its ACK (of data, a FIN, a
    /// SYN|ACK or a zero-window probe) before the connection is dropped. None: for ever.
    pub retry: Option<Duration>,
    /// Time between keep-alive probes once the first went (None: the idle time).
    pub keep_alive_interval: Option<Duration>,
    /// Keep-alive probes that may go unanswered before the connection is reset (None: any
    /// number).
    pub keep_alive_probes: Option<u8>,
    /// Keep-alive probes sent since the peer was last heard.
    pub probes_out: u8,
    /// When the first retransmission (or zero-window probe) went since the peer was last
    /// heard: Linux's `retrans_stamp` (or `icsk_probes_tstamp`), where the retry timeout
    /// starts.
    pub asked_at: Option<Instant>,
    /// The connection ended because a limit was reached.
    pub timed_out: bool,
}

impl Limits {
    /// A retransmission or a zero-window probe went.
    pub fn asked(&mut self, now: Instant) {
        self.asked_at.get_or_insert(now);
    }

    /// A segment came from the peer.
    pub fn heard(&mut self) {
        self.probes_out = 0;
        self.asked_at = None;
    }

    /// Whether keep-alive has sent all the probes it may, unanswered.
    pub fn probes_exhausted(&self) -> bool {
        self.keep_alive_probes.is_some_and(|n| self.probes_out >= n)
    }
}
