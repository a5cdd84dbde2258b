// vdestack: SACK loss recovery (RFC 6675 with RACK-TLP, RFC 8985), new code: the glue
// between the socket and the scoreboard (`sack.rs`) and RACK-TLP (`rack.rs`). `tcp.rs`
// calls these hooks; a peer that did not offer SACK keeps NewReno (they do nothing).

use super::rack::Rack;
use super::sack::Scoreboard;
use super::sack_blocks::SackHistory;
use super::{Socket, Timer};
use crate::time::{Duration, Instant};
use crate::wire::{TcpRepr, TcpSeqNumber};

/// RFC 5681 DupThresh, for a peer that offered SACK but sends no blocks.
const DUP_THRESH: u8 = 3;

/// Counts of a connection's loss repairs, for the user to see how losses were repaired.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct LossStats {
    /// Retransmission timeouts.
    pub timeouts: u32,
    /// Segments resent (by any means).
    pub retransmits: u32,
    /// SACK recovery episodes entered on a loss detected by SACK or RACK (not by a timeout).
    pub recoveries: u32,
    /// Tail loss probes sent.
    pub probes: u32,
    /// D-SACKs received: resends the peer already had (needless; reordering widens RACK's
    /// window for them).
    pub dsacks: u32,
}

/// The sender's loss recovery state, and the receiver's SACK history.
#[derive(Debug, Default)]
pub(super) struct Recovery {
    pub board: Scoreboard,
    pub rack: Rack,
    /// RFC 6675 RecoveryPoint: the episode ends when the cumulative ACK reaches it.
    recover: Option<TcpSeqNumber>,
    /// Retransmission timeouts since the cumulative ACK last moved.
    rto_streak: u8,
    /// The probe timeout passed: the next segment is a tail loss probe.
    probe_pending: bool,
    pub stats: LossStats,
    pub rx: SackHistory,
    /// The segment being answered lay outside the receive window (a D-SACK if below).
    pub duplicate: bool,
}

impl Recovery {
    /// Forget the connection (the socket was reset); the counts stay for the user.
    pub fn reset(&mut self) {
        let stats = self.stats;
        *self = Recovery::default();
        self.stats = stats;
    }
}

impl Socket<'_> {
    /// The counts of this connection's loss repairs.
    pub fn loss_stats(&self) -> LossStats {
        self.loss.stats
    }

    /// Whether SACK recovery runs: the peer offered SACK.
    pub(super) fn sack_recovery_active(&self) -> bool {
        self.remote_has_sack
    }

    fn srtt(&self) -> Option<Duration> {
        self.rtte
            .have_measurement
            .then(|| Duration::from_millis(self.rtte.srtt.max(1) as u64))
    }

    /// Hook: the congestion window left, with SACK's pipe (RFC 6675) in place of the
    /// flight size; a tail loss probe may go past it.
    pub(super) fn loss_cwnd_remaining(&self, cwnd: usize) -> usize {
        let in_flight = if self.sack_recovery_active() {
            self.loss.board.pipe().unwrap_or_else(|| self.flight_size())
        } else {
            self.flight_size()
        };
        let remaining = cwnd.saturating_sub(in_flight);
        if self.loss.probe_pending {
            remaining.max(self.remote_mss)
        } else {
            remaining
        }
    }

    /// Hook: the SACK blocks of an ACK of `ack` sent in reply to `repr` (if any).
    pub(super) fn loss_sack_blocks(
        &mut self,
        ack: TcpSeqNumber,
        repr: Option<&TcpRepr>,
    ) -> [Option<(u32, u32)>; 3] {
        if !self.remote_has_sack {
            return [None; 3];
        }
        let duplicate = core::mem::take(&mut self.loss.duplicate);
        let dsack = repr.and_then(|repr| {
            let end = repr.seq_number + repr.payload.len();
            (duplicate && !repr.payload.is_empty() && end <= ack).then_some((repr.seq_number, end))
        });
        let last_seq = match repr {
            Some(_) => self.local_rx_last_seq,
            None => None,
        };
        self.loss.rx.blocks(&self.assembler, ack, last_seq, dsack)
    }

    /// Hook: an ACK was taken in; the cumulative ACK is `ack` (now `local_seq_no`),
    /// `advanced` whether it moved.
    pub(super) fn loss_on_ack(
        &mut self,
        now: Instant,
        ack: TcpSeqNumber,
        repr: &TcpRepr,
        advanced: bool,
    ) {
        if !self.remote_has_sack {
            return;
        }
        let fack = self.loss.board.fack;
        let rack = &mut self.loss.rack;
        let info = self
            .loss
            .board
            .on_ack(ack, &repr.sack_ranges, self.remote_last_seq, |sent| {
                rack.on_delivered(now, sent, fack)
            });
        if info.dsack {
            rack.on_dsack();
            self.loss.stats.dsacks += 1;
        }
        if advanced {
            self.loss.rto_streak = 0;
        }
        if self.loss.rack.probe_end.is_some_and(|end| ack >= end) {
            self.loss.rack.probe_end = None;
        }
        if self.loss.recover.is_some_and(|recover| ack >= recover) {
            self.loss.recover = None;
        }
        // A peer that offered SACK but sends no blocks: DupThresh duplicate ACKs.
        if self.local_rx_dup_acks >= DUP_THRESH
            && !self.loss.board.has_marks()
            && self.loss.recover.is_none()
        {
            self.loss.board.mark_lost_where(|sent| sent.start <= ack);
            self.loss_enter_recovery(now);
        }
        self.loss_detect(now);
        self.loss_arm_probe(now);
    }

    /// RACK's loss detection; the first loss starts a recovery episode.
    fn loss_detect(&mut self, now: Instant) {
        if !self.sack_recovery_active() || !self.loss.board.has_marks() {
            self.loss.rack.reorder_at = None;
            return;
        }
        let srtt = self.srtt().unwrap_or(Duration::ZERO);
        let reo_wnd = self.loss.rack.reo_wnd(
            self.loss.recover.is_some(),
            self.loss.board.sacked_segments(),
            srtt,
        );
        let lost = self
            .loss
            .rack
            .detect_loss(now, &mut self.loss.board, reo_wnd);
        if lost > 0 && self.loss.recover.is_none() {
            self.loss_enter_recovery(now);
        }
    }

    fn loss_enter_recovery(&mut self, now: Instant) {
        net_debug!("sack: loss recovery until {}", self.remote_last_seq);
        self.loss.recover = Some(self.remote_last_seq);
        self.loss.stats.recoveries += 1;
        self.loss.rack.probe_at = None;
        let in_flight = self.flight_size();
        self.congestion_controller
            .inner_mut()
            .on_loss(now, in_flight);
    }

    /// (Re)arm the probe timeout while data is out and no recovery runs.
    fn loss_arm_probe(&mut self, now: Instant) {
        let srtt = self.srtt();
        let flight = self.flight_size();
        match srtt {
            Some(srtt)
                if self.sack_recovery_active() && self.loss.recover.is_none() && flight > 0 =>
            {
                let rto_at = match self.timer {
                    Timer::Retransmit { expires_at } => Some(expires_at),
                    _ => None,
                };
                self.loss
                    .rack
                    .arm_probe(now, srtt, flight <= self.remote_mss, rto_at);
            }
            _ => self.loss.rack.probe_at = None,
        }
    }

    /// Hook (dispatch, after the retransmission timer): the RACK reordering timer and the
    /// probe timeout.
    pub(super) fn loss_on_timers(&mut self, now: Instant) {
        if !self.sack_recovery_active() {
            return;
        }
        if self.loss.rack.reorder_at.is_some_and(|at| at <= now) {
            self.loss.rack.reorder_at = None;
            self.loss_detect(now);
        }
        if self.loss.rack.probe_at.is_some_and(|at| at <= now) {
            self.loss.rack.probe_at = None;
            if self.flight_size() > 0 && self.loss.recover.is_none() {
                net_debug!("sack: tail loss probe");
                self.loss.probe_pending = true;
            }
        }
    }

    /// Hook: a retransmission timeout. Returns whether the scoreboard takes it (every
    /// segment not SACKed is resent, SACKed ones are not); if not, the caller resends
    /// everything from the cumulative ACK.
    pub(super) fn loss_on_rto(&mut self) -> bool {
        self.loss.stats.timeouts += 1;
        self.loss.rack.on_rto();
        self.loss.probe_pending = false;
        if !self.sack_recovery_active() || self.loss.board.is_empty() {
            self.loss.board.clear();
            self.loss.recover = None;
            return false;
        }
        self.loss.rto_streak = self.loss.rto_streak.saturating_add(1);
        self.loss.board.on_rto(self.loss.rto_streak >= 2);
        self.loss.recover = Some(self.remote_last_seq);
        true
    }

    /// Hook: the segment to resend now, if any: the first lost one (RFC 6675 NextSeg
    /// rule 1) if the congestion window has room for it, or, for a tail loss probe with
    /// no new data to send, the highest segment not SACKed.
    pub(super) fn loss_retransmit(&self) -> Option<(TcpSeqNumber, usize)> {
        // A zero window is the zero-window probe's (as NewReno's partial ACK, patch 2).
        if !self.sack_recovery_active() || self.remote_win_len == 0 {
            return None;
        }
        if let Some((seq, len)) = self.loss.board.next_lost()
            && self.loss_cwnd_remaining(self.congestion_controller.inner().window()) >= len
        {
            return Some((seq, len));
        }
        if self.loss.probe_pending {
            let unsent = self.tx_buffer.len() > self.flight_size();
            let window_open = self.local_seq_no + self.remote_win_len > self.remote_last_seq;
            if !(unsent && window_open) {
                return self.loss.board.last_unsacked();
            }
        }
        None
    }

    /// Whether the next dispatch sends a loss probe.
    pub(super) fn loss_probe_pending(&self) -> bool {
        self.loss.probe_pending
    }

    /// Hook (dispatch, after a segment with `len` data octets at `seq` went out;
    /// `last_seq` was the highest sequence number sent before it).
    pub(super) fn loss_on_sent(
        &mut self,
        now: Instant,
        seq: TcpSeqNumber,
        len: usize,
        last_seq: TcpSeqNumber,
    ) {
        let resent = len > 0 && seq < last_seq;
        if resent {
            self.loss.stats.retransmits += 1;
            // Karn: an ACK may be for either copy.
            self.rtte.on_retransmit();
        }
        if !self.remote_has_sack {
            self.loss.probe_pending = false;
            return;
        }
        if len > 0 {
            self.loss.board.on_send(now, seq, seq + len);
        }
        if self.loss.probe_pending {
            self.loss.probe_pending = false;
            if len > 0 {
                self.loss.stats.probes += 1;
                self.loss.rack.probe_end = Some(self.remote_last_seq);
                // RFC 8985 7.3: the retransmission timer restarts after a probe.
                let rto = self.rtte.retransmission_timeout();
                self.timer.set_for_retransmit(now, rto);
            }
        } else if len > 0 && !resent {
            self.loss_arm_probe(now);
        }
    }
}
