//! When a TCP connection gives up, as Linux's does: keep-alive (SO_KEEPALIVE with
//! TCP_KEEPIDLE, TCP_KEEPINTVL, TCP_KEEPCNT), the retransmission timeout (`tcp_retries2`, or
//! TCP_USER_TIMEOUT) and the connection attempt (`tcp_syn_retries`, TCP_SYNCNT, or
//! TCP_USER_TIMEOUT). Each ends the connection with ETIMEDOUT. The engine's smoltcp sockets
//! get these limits here (vendor/README.md, patch 14, does the counting).

use smoltcp::socket::tcp;
use smoltcp::time::Duration;

use super::sock::Opts;

/// Linux's `tcp_keepalive_time`: idle seconds before the first keep-alive probe.
pub const KEEPIDLE: i32 = 7200;
/// Linux's `tcp_keepalive_intvl`: seconds between keep-alive probes.
pub const KEEPINTVL: i32 = 75;
/// Linux's `tcp_keepalive_probes`: unanswered probes before the connection is reset.
pub const KEEPCNT: i32 = 9;
/// The largest TCP_KEEPIDLE and TCP_KEEPINTVL Linux takes (`MAX_TCP_KEEPIDLE`).
pub const MAX_KEEP_SECS: i32 = 32767;
/// The largest TCP_KEEPCNT Linux takes (`MAX_TCP_KEEPCNT`).
pub const MAX_KEEPCNT: i32 = 127;

/// How long Linux retransmits unacknowledged data to a silent peer with `tcp_retries2` = 15:
/// `tcp_model_timeout` with TCP_RTO_MIN 200 ms doubling up to TCP_RTO_MAX 120 s, that is
/// (2^10 - 1) x 0.2 s + 6 x 120 s = 924.6 s.
pub const RETRIES2: Duration = Duration::from_millis(924_600);

/// How long a connection attempt lasts: Linux's SYN retry schedule for TCP_SYNCNT (1 s
/// doubling: 6 retries give up after 127 s), or TCP_USER_TIMEOUT when set.
pub fn connect_timeout(o: &Opts) -> Duration {
    if o.user_timeout > 0 {
        return Duration::from_millis(o.user_timeout as u64);
    }
    Duration::from_secs((1u64 << (o.syncnt.min(10) + 1)) - 1)
}

/// Gives smoltcp socket `t` the limits `o` asks for.
pub fn apply(t: &mut tcp::Socket, o: &Opts) {
    let retry = match o.user_timeout {
        0 => RETRIES2,
        ms => Duration::from_millis(ms as u64),
    };
    t.set_retry_timeout(Some(retry));
    if o.keepalive {
        let secs = |s: i32| Duration::from_secs(s as u64);
        // Only a change re-arms the timer (smoltcp probes at once when it is turned on).
        if t.keep_alive() != Some(secs(o.keepidle)) {
            t.set_keep_alive(Some(secs(o.keepidle)));
        }
        t.set_keep_alive_probes(Some(secs(o.keepintvl)), Some(o.keepcnt as u8));
    } else {
        t.set_keep_alive(None);
    }
}

/// Checks a value of TCP_KEEPIDLE, TCP_KEEPINTVL, TCP_KEEPCNT or TCP_USER_TIMEOUT as Linux
/// does: Err(EINVAL) when out of range.
pub fn check(name: i32, value: i32) -> Result<(), i32> {
    let ok = match name {
        libc::TCP_KEEPIDLE | libc::TCP_KEEPINTVL => (1..=MAX_KEEP_SECS).contains(&value),
        libc::TCP_KEEPCNT => (1..=MAX_KEEPCNT).contains(&value),
        libc::TCP_USER_TIMEOUT => value >= 0,
        _ => true,
    };
    ok.then_some(()).ok_or(libc::EINVAL)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RETRIES2 is Linux's `tcp_model_timeout` (net/ipv4/tcp_timer.c) for `tcp_retries2` =
    /// 15, TCP_RTO_MIN 200 ms, TCP_RTO_MAX 120 s; a connect gives up after 127 s with
    /// `tcp_syn_retries` = 6, as Linux's.
    #[test]
    fn defaults_are_linux_s() {
        let (boundary, rto_base, rto_max) = (15u64, 200u64, 120_000u64);
        let thresh = (rto_max / rto_base).ilog2() as u64;
        let ms = if boundary <= thresh {
            ((2 << boundary) - 1) * rto_base
        } else {
            ((2 << thresh) - 1) * rto_base + (boundary - thresh) * rto_max
        };
        assert_eq!(RETRIES2, Duration::from_millis(ms));
        let o = Opts::default();
        assert_eq!(connect_timeout(&o), Duration::from_secs(127));
        assert_eq!(
            (o.keepidle, o.keepintvl, o.keepcnt, o.user_timeout),
            (7200, 75, 9, 0)
        );
        let o = Opts {
            user_timeout: 1500,
            ..Opts::default()
        };
        assert_eq!(connect_timeout(&o), Duration::from_millis(1500));
    }
}
