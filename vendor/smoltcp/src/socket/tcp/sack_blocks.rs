// vdestack: the receiver's choice of SACK blocks (RFC 2018 section 4, RFC 2883), new code.
//
// An ACK carries at most three blocks (the option shares 40 bytes with timestamps). The
// first covers the segment that triggered the ACK; the next repeat the blocks reported
// most recently, so that each block is reported in several ACKs and survives ACK loss;
// the rest of the assembler's ranges fill the space left, lowest first. A segment that
// repeated data already acknowledged is reported first as a D-SACK block.

use crate::storage::Assembler;
use crate::wire::TcpSeqNumber;

type Block = (TcpSeqNumber, TcpSeqNumber);

/// The blocks reported in the last ACK, most recent first.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct SackHistory {
    reported: [Option<Block>; 3],
}

impl SackHistory {
    pub fn clear(&mut self) {
        self.reported = [None; 3];
    }

    /// The SACK blocks of an ACK of `ack`, with the out-of-order data in `assembler`
    /// (offsets from `ack`), `last_seq` the start of the segment that triggered it and
    /// `dsack` the octets of it that were duplicates.
    pub fn blocks(
        &mut self,
        assembler: &Assembler,
        ack: TcpSeqNumber,
        last_seq: Option<TcpSeqNumber>,
        dsack: Option<Block>,
    ) -> [Option<(u32, u32)>; 3] {
        let holding = |seq: TcpSeqNumber| {
            assembler
                .iter_data()
                .map(|(left, right)| (ack + left, ack + right))
                .find(|&(left, right)| left <= seq && seq < right)
        };
        let mut out: [Option<Block>; 3] = [None; 3];
        let first_real = dsack.is_some() as usize;
        let mut n = 0;
        let mut push = |block: Block, out: &mut [Option<Block>; 3]| {
            if n < out.len() && !out[..n].contains(&Some(block)) {
                out[n] = Some(block);
                n += 1;
            }
        };
        if let Some(dsack) = dsack {
            push(dsack, &mut out);
        }
        if let Some(block) = last_seq.and_then(holding) {
            push(block, &mut out);
        }
        for block in self.reported.iter().flatten() {
            if let Some(block) = holding(block.0) {
                push(block, &mut out);
            }
        }
        for (left, right) in assembler.iter_data() {
            push((ack + left, ack + right), &mut out);
        }
        self.reported = [None; 3];
        self.reported[..out.len() - first_real].copy_from_slice(&out[first_real..]);
        out.map(|b| b.map(|(l, r)| (l.0 as u32, r.0 as u32)))
    }
}

#[cfg(test)]
mod test {
    use super::*;

    fn assembler(ranges: &[(usize, usize)]) -> Assembler {
        let mut a = Assembler::new();
        for &(at, len) in ranges {
            a.add(at, len).unwrap();
        }
        a
    }

    #[test]
    fn latest_first_then_recent_then_lowest() {
        let ack = TcpSeqNumber(1000);
        let mut h = SackHistory::default();
        let a = assembler(&[(100, 10), (200, 10), (300, 10), (400, 10)]);
        // Triggered by the segment at 1300: its block first, then the lowest.
        assert_eq!(
            h.blocks(&a, ack, Some(TcpSeqNumber(1300)), None),
            [Some((1300, 1310)), Some((1100, 1110)), Some((1200, 1210))]
        );
        // Then by 1400: the blocks reported last follow, in their order.
        assert_eq!(
            h.blocks(&a, ack, Some(TcpSeqNumber(1400)), None),
            [Some((1400, 1410)), Some((1300, 1310)), Some((1100, 1110))]
        );
        // A block that grew is reported as it now is.
        let a = assembler(&[(100, 10), (200, 10), (300, 20), (400, 10)]);
        assert_eq!(
            h.blocks(&a, ack, Some(TcpSeqNumber(1200)), None),
            [Some((1200, 1210)), Some((1400, 1410)), Some((1300, 1320))]
        );
    }

    #[test]
    fn dsack_comes_first() {
        let ack = TcpSeqNumber(1000);
        let mut h = SackHistory::default();
        let a = assembler(&[(100, 10)]);
        let dup = (TcpSeqNumber(900), TcpSeqNumber(950));
        assert_eq!(
            h.blocks(&a, ack, Some(TcpSeqNumber(900)), Some(dup)),
            [Some((900, 950)), Some((1100, 1110)), None]
        );
        // The D-SACK block is not repeated.
        assert_eq!(
            h.blocks(&a, ack, None, None),
            [Some((1100, 1110)), None, None]
        );
    }
}
