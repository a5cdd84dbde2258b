// vdestack: RACK-TLP (RFC 8985), new code.
//
// RACK deems a segment lost when a segment sent after it was delivered and a reordering
// window has passed since; TLP sends a probe two round trips after the last send, so that a
// lost tail of a flight is seen through SACK rather than waiting for a retransmission timeout.

use super::sack::{Scoreboard, Sent};
use crate::time::{Duration, Instant};
use crate::wire::TcpSeqNumber;

/// RFC 8985 7.2 WCDelAckT: the probe waits this much more when one segment is in flight
/// (its ACK may be delayed).
const WC_DEL_ACK: Duration = Duration::from_millis(200);
/// The slack added to a probe timeout otherwise (Linux's TCP_TIMEOUT_MIN).
const PTO_SLACK: Duration = Duration::from_millis(2);
/// RFC 6675 DupThresh: with this many segments SACKed above a hole and no reordering seen,
/// the reordering window is zero.
const DUP_THRESH: usize = 3;
/// The most a D-SACK can grow the reordering window (RFC 8985 6.2 step 4).
const REO_WND_MULT_MAX: u32 = 8;

/// RACK and TLP state of a connection.
#[derive(Debug, Default)]
pub(super) struct Rack {
    /// Send time and end of the most recently sent segment known delivered
    /// (RACK.xmit_ts, RACK.end_seq).
    newest: Option<(Instant, TcpSeqNumber)>,
    /// The round trip of that segment (RACK.rtt).
    rtt: Duration,
    min_rtt: Option<Duration>,
    reordering_seen: bool,
    /// RACK.reo_wnd_mult: D-SACKs (needless resends) widen the window.
    reo_wnd_mult: u32,
    /// When the reordering window of a segment ends (the RACK reordering timer).
    pub reorder_at: Option<Instant>,
    /// When the tail loss probe is due (the PTO timer).
    pub probe_at: Option<Instant>,
    /// TLP.end_seq: a probe was sent and no ACK reached this since.
    pub probe_end: Option<TcpSeqNumber>,
}

impl Rack {
    /// A segment was delivered (cumulatively acknowledged or SACKed) at `now`; `fack` is
    /// the highest SACKed sequence number before this ACK.
    pub fn on_delivered(&mut self, now: Instant, sent: &Sent, fack: Option<TcpSeqNumber>) {
        if now < sent.at {
            return;
        }
        let rtt = now - sent.at;
        // The ACK may be for an earlier copy of a resent segment: a round trip shorter
        // than any seen says so (RFC 8985 6.2 step 2).
        if sent.ever_retransmitted() && self.min_rtt.is_some_and(|min| rtt < min) {
            return;
        }
        if self.min_rtt.is_none_or(|min| rtt < min) {
            self.min_rtt = Some(rtt);
        }
        if self
            .newest
            .is_none_or(|(at, end)| sent.at > at || (sent.at == at && sent.end > end))
        {
            self.newest = Some((sent.at, sent.end));
            self.rtt = rtt;
        }
        // Step 3: delivered below data SACKed before, never resent: the path reorders.
        if !sent.ever_retransmitted() && fack.is_some_and(|fack| sent.end < fack) {
            self.reordering_seen = true;
        }
    }

    /// A D-SACK: a resend was needless, so allow more reordering.
    pub fn on_dsack(&mut self) {
        self.reordering_seen = true;
        self.reo_wnd_mult = (self.reo_wnd_mult + 1).min(REO_WND_MULT_MAX);
    }

    /// RFC 8985 6.2 step 4: the reordering window.
    pub fn reo_wnd(&self, in_recovery: bool, sacked_segments: usize, srtt: Duration) -> Duration {
        if !self.reordering_seen && (in_recovery || sacked_segments >= DUP_THRESH) {
            return Duration::ZERO;
        }
        // A frame that overtook others also gives a round trip far below the path's; an
        // eighth of the smoothed RTT bounds the step from below, so that D-SACKs can widen
        // the window up to the SRTT (RFC 8985's cap) on such a path.
        let min_rtt = self.min_rtt.unwrap_or(Duration::ZERO);
        let step = (min_rtt / 4).max(srtt / 8);
        (step * self.reo_wnd_mult.max(1)).min(srtt)
    }

    /// RFC 8985 6.2 step 5: deem lost the segments sent before the newest delivered one
    /// whose reordering window has passed; arm the reordering timer for the others.
    /// Returns how many were newly deemed lost.
    pub fn detect_loss(
        &mut self,
        now: Instant,
        board: &mut Scoreboard,
        reo_wnd: Duration,
    ) -> usize {
        self.reorder_at = None;
        let Some((newest_at, newest_end)) = self.newest else {
            return 0;
        };
        let rtt = self.rtt;
        let mut wait: Option<Instant> = None;
        let lost = board.mark_lost_where(|sent| {
            let before = sent.at < newest_at || (sent.at == newest_at && sent.end < newest_end);
            if !before {
                return false;
            }
            let deadline = sent.at + rtt + reo_wnd;
            if deadline <= now {
                true
            } else {
                wait = Some(wait.map_or(deadline, |w| w.max(deadline)));
                false
            }
        });
        self.reorder_at = wait;
        lost
    }

    /// Arm the probe timeout (RFC 8985 7.2): two smoothed round trips after `now`, plus the
    /// allowance for a delayed ACK when one segment is in flight, and no later than the
    /// retransmission timeout `rto_at`. Only one probe is out at a time.
    pub fn arm_probe(
        &mut self,
        now: Instant,
        srtt: Duration,
        one_segment: bool,
        rto_at: Option<Instant>,
    ) {
        if self.probe_end.is_some() {
            self.probe_at = None;
            return;
        }
        let slack = if one_segment { WC_DEL_ACK } else { PTO_SLACK };
        let at = now + srtt * 2 + slack;
        self.probe_at = Some(rto_at.map_or(at, |rto_at| at.min(rto_at)));
    }

    /// The earliest of the reordering and probe timers.
    pub fn poll_at(&self) -> Option<Instant> {
        match (self.reorder_at, self.probe_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// A retransmission timeout: timers and probe are over.
    pub fn on_rto(&mut self) {
        self.reorder_at = None;
        self.probe_at = None;
        self.probe_end = None;
    }
}

#[cfg(test)]
mod test {
    use super::*;

    fn at(ms: i64) -> Instant {
        Instant::from_millis(ms)
    }

    /// Four segments sent 1 ms apart; the fourth is SACKed 10 ms after it was sent.
    fn sacked_fourth() -> (Rack, Scoreboard) {
        let mut board = Scoreboard::default();
        for i in 0..4 {
            board.on_send(
                at(i),
                TcpSeqNumber(i as i32 * 100),
                TcpSeqNumber(i as i32 * 100 + 100),
            );
        }
        let mut rack = Rack::default();
        board.on_ack(
            TcpSeqNumber(0),
            &[Some((300, 400)), None, None],
            TcpSeqNumber(400),
            |s| rack.on_delivered(at(13), s, None),
        );
        (rack, board)
    }

    #[test]
    fn loss_waits_for_the_reordering_window() {
        let (mut rack, mut board) = sacked_fourth();
        assert_eq!(rack.rtt, Duration::from_millis(10));
        // One segment SACKed, no reordering seen: the window is min_rtt / 4 = 2.5 ms.
        let reo = rack.reo_wnd(false, board.sacked_segments(), Duration::from_millis(10));
        assert_eq!(reo, Duration::from_micros(2500));
        // The first segment's window ended at 0 + 10 + 2.5 ms; the third's ends at 14.5.
        assert_eq!(rack.detect_loss(at(13), &mut board, reo), 1);
        assert_eq!(rack.reorder_at, Some(Instant::from_micros(14_500)));
        assert_eq!(
            rack.detect_loss(Instant::from_micros(14_499), &mut board, reo),
            1
        );
        assert_eq!(
            rack.detect_loss(Instant::from_micros(14_500), &mut board, reo),
            1
        );
        assert_eq!(rack.reorder_at, None);
        assert_eq!(board.next_lost(), Some((TcpSeqNumber(0), 100)));
    }

    #[test]
    fn reordering_seen_keeps_the_window() {
        let (mut rack, mut board) = sacked_fourth();
        // The second arrives late, below the SACKed fourth, never resent: reordering.
        board.on_ack(
            TcpSeqNumber(0),
            &[Some((100, 200)), Some((300, 400)), None],
            TcpSeqNumber(400),
            |s| rack.on_delivered(at(14), s, Some(TcpSeqNumber(400))),
        );
        assert!(rack.reordering_seen);
        assert_eq!(
            rack.reo_wnd(true, 3, Duration::from_millis(10)),
            Duration::from_micros(2500)
        );
        rack.on_dsack();
        assert_eq!(
            rack.reo_wnd(true, 3, Duration::from_millis(10)),
            Duration::from_micros(2500)
        );
        rack.on_dsack();
        assert_eq!(
            rack.reo_wnd(true, 3, Duration::from_millis(10)),
            Duration::from_millis(5)
        );
    }

    #[test]
    fn probe_timeout_is_two_round_trips_capped_by_rto() {
        let mut rack = Rack::default();
        rack.arm_probe(at(0), Duration::from_millis(10), false, None);
        assert_eq!(rack.probe_at, Some(at(22)));
        rack.arm_probe(at(0), Duration::from_millis(10), true, Some(at(100)));
        assert_eq!(rack.probe_at, Some(at(100)));
        rack.probe_end = Some(TcpSeqNumber(1));
        rack.arm_probe(at(0), Duration::from_millis(10), false, None);
        assert_eq!(rack.probe_at, None);
    }
}
