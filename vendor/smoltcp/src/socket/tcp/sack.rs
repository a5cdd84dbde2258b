// vdestack: the sender's SACK scoreboard (RFC 6675), new code.
//
// Every data segment sent and not yet cumulatively acknowledged has an entry, in sequence
// order, with the time it was last sent and what the peer said of it: SACKed, lost (by RACK,
// `rack.rs`, or by a retransmission timeout) and retransmitted since. From them come the
// estimate of the data in the network ("pipe") and the next hole to resend.

use crate::time::Instant;
use crate::wire::TcpSeqNumber;

/// The peer selectively acknowledged the segment.
const SACKED: u8 = 1;
/// The segment is deemed lost.
const LOST: u8 = 2;
/// The segment was resent since it was deemed lost.
const RETRANSMITTED: u8 = 4;
/// The segment was ever resent (its acknowledgement may be for an earlier copy).
const EVER_RETRANSMITTED: u8 = 8;

/// A segment sent and not yet cumulatively acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub(super) struct Sent {
    pub start: TcpSeqNumber,
    pub end: TcpSeqNumber,
    /// When it was last (re)sent.
    pub at: Instant,
    flags: u8,
}

impl Sent {
    pub fn len(&self) -> usize {
        self.end - self.start
    }
    pub fn is_sacked(&self) -> bool {
        self.flags & SACKED != 0
    }
    /// Lost and not resent since.
    pub fn needs_resend(&self) -> bool {
        self.flags & (SACKED | LOST | RETRANSMITTED) == LOST
    }
    pub fn ever_retransmitted(&self) -> bool {
        self.flags & EVER_RETRANSMITTED != 0
    }
    /// RFC 6675 pipe: an octet counts unless it is SACKed or lost; a lost octet that was
    /// resent counts once for its copy.
    fn in_pipe(&self) -> bool {
        !self.is_sacked() && (self.flags & LOST == 0 || self.flags & RETRANSMITTED != 0)
    }
    /// Deem the segment lost: it is to be resent (again).
    pub fn mark_lost(&mut self) {
        self.flags = (self.flags | LOST) & !RETRANSMITTED;
    }
}

// The fork needs a heap already (the socket set's index); the log holds a window's segments.
type Log = alloc::collections::VecDeque<Sent>;

/// What an acknowledgement told the scoreboard.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct AckInfo {
    /// Octets newly SACKed.
    pub newly_sacked: usize,
    /// The first block was a D-SACK (RFC 2883): a duplicate arrived, a resend was needless.
    pub dsack: bool,
}

/// The sender's record of segments in flight and of the peer's SACK blocks.
#[derive(Debug, Default)]
pub(super) struct Scoreboard {
    log: Log,
    /// Entries SACKed or lost: while both are zero, pipe is the flight size.
    sacked: usize,
    lost: usize,
    /// The highest end of a SACK block (RACK's "fack").
    pub fack: Option<TcpSeqNumber>,
}

impl Scoreboard {
    pub fn is_empty(&self) -> bool {
        self.log.is_empty()
    }

    /// Whether some segment is SACKed or deemed lost (a loss episode is visible).
    pub fn has_marks(&self) -> bool {
        self.sacked + self.lost != 0
    }

    /// Number of SACKed segments.
    pub fn sacked_segments(&self) -> usize {
        self.sacked
    }

    pub fn clear(&mut self) {
        self.log.clear();
        self.sacked = 0;
        self.lost = 0;
        self.fack = None;
    }

    pub fn iter(&self) -> impl Iterator<Item = &Sent> + '_ {
        self.log.iter()
    }

    /// Record data octets `start..end` sent at `now`: new data gets entries, a resend marks
    /// the entries it covers.
    pub fn on_send(&mut self, now: Instant, start: TcpSeqNumber, end: TcpSeqNumber) {
        if end <= start {
            return;
        }
        let last_end = self.log.back().map(|s| s.end);
        let mut fresh_from = start;
        if let Some(last_end) = last_end
            && start < last_end
        {
            for sent in self.log.iter_mut() {
                if sent.end <= start || sent.start >= end {
                    continue;
                }
                if sent.start >= start && sent.end <= end {
                    if sent.flags & LOST != 0 {
                        sent.flags |= RETRANSMITTED;
                    }
                    sent.flags |= EVER_RETRANSMITTED;
                    sent.at = now;
                } else if sent.start >= start {
                    // Only its front was resent (not expected: entries are cut as they
                    // were first sent). Track the rest; the resent front is forgotten.
                    sent.start = end;
                }
            }
            fresh_from = last_end;
        }
        if fresh_from < end {
            self.log.push_back(Sent {
                start: fresh_from,
                end,
                at: now,
                flags: 0,
            });
        }
    }

    /// Take in an acknowledgement: `una` the cumulative ACK, `blocks` its SACK blocks,
    /// `snd_nxt` the highest sequence number sent. `delivered` sees each segment newly
    /// acknowledged or SACKed (RACK learns from them).
    pub fn on_ack(
        &mut self,
        una: TcpSeqNumber,
        blocks: &[Option<(u32, u32)>],
        snd_nxt: TcpSeqNumber,
        mut delivered: impl FnMut(&Sent),
    ) -> AckInfo {
        let mut info = AckInfo::default();

        while let Some(front) = self.log.front_mut() {
            if front.end <= una {
                if !front.is_sacked() {
                    delivered(front);
                } else {
                    self.sacked -= 1;
                }
                if front.flags & LOST != 0 && !front.is_sacked() {
                    self.lost -= 1;
                }
                self.log.pop_front();
            } else {
                if front.start < una {
                    front.start = una;
                }
                break;
            }
        }
        if self.log.is_empty() {
            self.fack = None;
            // An idle connection keeps no log (the soak's connect cycles showed RSS creep
            // when each kept its small buffer).
            if self.log.capacity() > 0 {
                self.log = Log::new();
            }
        }

        for (i, block) in blocks.iter().enumerate() {
            let Some((left, right)) = *block else {
                continue;
            };
            let (left, right) = (TcpSeqNumber(left as i32), TcpSeqNumber(right as i32));
            // RFC 2883: a first block below the cumulative ACK, or inside the second
            // block, reports a duplicate.
            if i == 0 {
                let inside_second = blocks.get(1).copied().flatten().is_some_and(|(l, r)| {
                    TcpSeqNumber(l as i32) <= left && right <= TcpSeqNumber(r as i32)
                });
                if right <= una || inside_second {
                    info.dsack = true;
                    continue;
                }
            }
            if right <= left || right <= una || right > snd_nxt {
                continue;
            }
            if self.fack.is_none_or(|fack| right > fack) {
                self.fack = Some(right);
            }
            for sent in self.log.iter_mut() {
                if sent.start >= right {
                    break;
                }
                if sent.start >= left && sent.end <= right && !sent.is_sacked() {
                    if sent.flags & LOST != 0 {
                        self.lost -= 1;
                    }
                    sent.flags |= SACKED;
                    self.sacked += 1;
                    info.newly_sacked += sent.len();
                    delivered(sent);
                }
            }
        }
        info
    }

    /// Deem lost every segment `lost` picks (RACK's test), and return how many were.
    pub fn mark_lost_where(&mut self, mut lost: impl FnMut(&Sent) -> bool) -> usize {
        let mut count = 0;
        for sent in self.log.iter_mut() {
            if sent.is_sacked() || sent.needs_resend() {
                continue;
            }
            if lost(sent) {
                if sent.flags & LOST == 0 {
                    self.lost += 1;
                }
                sent.mark_lost();
                count += 1;
            }
        }
        count
    }

    /// A retransmission timeout: every segment not SACKed is deemed lost. With
    /// `forget_sacks` (timeouts in a row: the peer may have dropped what it SACKed,
    /// RFC 2018 section 8) SACKed segments are too.
    pub fn on_rto(&mut self, forget_sacks: bool) {
        if forget_sacks {
            for sent in self.log.iter_mut() {
                sent.flags &= !SACKED;
            }
            self.sacked = 0;
            self.fack = None;
        }
        self.lost = 0;
        for sent in self.log.iter_mut() {
            if !sent.is_sacked() {
                sent.mark_lost();
                self.lost += 1;
            }
        }
    }

    /// RFC 6675 pipe: the octets estimated in the network, or `None` when it equals the
    /// flight size (nothing SACKed or lost).
    pub fn pipe(&self) -> Option<usize> {
        if !self.has_marks() {
            return None;
        }
        Some(
            self.log
                .iter()
                .filter(|s| s.in_pipe())
                .map(|s| s.len())
                .sum(),
        )
    }

    /// The first segment deemed lost and not resent since (RFC 6675 NextSeg rule 1).
    pub fn next_lost(&self) -> Option<(TcpSeqNumber, usize)> {
        if self.lost == 0 {
            return None;
        }
        self.log
            .iter()
            .find(|s| s.needs_resend())
            .map(|s| (s.start, s.len()))
    }

    /// The highest segment not SACKed, for a tail loss probe with no new data to send.
    pub fn last_unsacked(&self) -> Option<(TcpSeqNumber, usize)> {
        self.log
            .iter()
            .rev()
            .find(|s| !s.is_sacked())
            .map(|s| (s.start, s.len()))
    }
}

#[cfg(test)]
mod test {
    use super::*;

    fn seq(n: i32) -> TcpSeqNumber {
        TcpSeqNumber(n)
    }

    fn board(segments: i32) -> Scoreboard {
        let mut b = Scoreboard::default();
        for i in 0..segments {
            b.on_send(
                Instant::from_millis(i as i64),
                seq(i * 100),
                seq(i * 100 + 100),
            );
        }
        b
    }

    #[test]
    fn sack_blocks_mark_segments_and_pipe_excludes_them() {
        let mut b = board(6);
        assert_eq!(b.pipe(), None);
        let mut seen = 0;
        let info = b.on_ack(seq(100), &[Some((300, 500)), None, None], seq(600), |_| {
            seen += 1
        });
        // 0..100 acknowledged, 300..500 SACKed.
        assert_eq!(seen, 3);
        assert_eq!(info.newly_sacked, 200);
        assert_eq!(b.pipe(), Some(300));
        assert_eq!(b.next_lost(), None);
        assert_eq!(b.mark_lost_where(|s| s.start < seq(300)), 2);
        // 100..300 lost: out of the pipe, and resent in order.
        assert_eq!(b.pipe(), Some(100));
        assert_eq!(b.next_lost(), Some((seq(100), 100)));
        b.on_send(Instant::from_millis(10), seq(100), seq(200));
        assert_eq!(b.next_lost(), Some((seq(200), 100)));
        assert_eq!(b.pipe(), Some(200));
    }

    #[test]
    fn dsack_is_recognised() {
        let mut b = board(4);
        let info = b.on_ack(seq(200), &[Some((0, 100)), None, None], seq(400), |_| {});
        assert!(info.dsack);
        let info = b.on_ack(
            seq(200),
            &[Some((300, 400)), Some((250, 400)), None],
            seq(400),
            |_| {},
        );
        assert!(info.dsack);
        // The second block is a SACK still.
        assert_eq!(info.newly_sacked, 100);
    }

    #[test]
    fn rto_marks_all_but_sacked_lost() {
        let mut b = board(4);
        b.on_ack(seq(0), &[Some((200, 300)), None, None], seq(400), |_| {});
        b.on_rto(false);
        assert_eq!(b.pipe(), Some(0));
        assert_eq!(b.next_lost(), Some((seq(0), 100)));
        b.on_rto(true);
        assert_eq!(b.sacked_segments(), 0);
        assert_eq!(b.pipe(), Some(0));
    }
}
