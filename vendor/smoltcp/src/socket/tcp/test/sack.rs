// vdestack: segments in, segments out: SACK blocks, SACK loss recovery and RACK-TLP
// (`recovery.rs`, `sack.rs`, `rack.rs`, `sack_blocks.rs`).

use super::*;

/// A SACK block of our sent data, octets `left..right` after the SYN.
fn block(left: usize, right: usize) -> Option<(u32, u32)> {
    Some((
        (LOCAL_SEQ + 1 + left).0 as u32,
        (LOCAL_SEQ + 1 + right).0 as u32,
    ))
}

/// A SACK block of the peer's data, octets `left..right` after its SYN.
fn rblock(left: usize, right: usize) -> Option<(u32, u32)> {
    Some((
        (REMOTE_SEQ + 1 + left).0 as u32,
        (REMOTE_SEQ + 1 + right).0 as u32,
    ))
}

/// An established socket whose peer offered SACK (or not), 3-octet segments, a 10 ms
/// round trip measured, and the peer's 256-octet window known.
fn socket_with_sack(sack: bool) -> TestSocket {
    let mut s = socket_established();
    s.remote_has_sack = sack;
    s.remote_mss = 3;
    s.rtte.sample(10);
    send!(s, time 0, TcpRepr {
        seq_number: REMOTE_SEQ + 1,
        ack_number: Some(LOCAL_SEQ + 1),
        ..SEND_TEMPL
    });
    s
}

/// Sends `data` in 3-octet segments, one per millisecond from `t0`.
fn send_segments(mut s: &mut TestSocket, data: &'static [u8], t0: i64) {
    s.send_slice(data).unwrap();
    for (i, chunk) in data.chunks(3).enumerate() {
        recv!(s, time t0 + i as i64, Ok(TcpRepr {
            seq_number: LOCAL_SEQ + 1 + 3 * i,
            ack_number: Some(REMOTE_SEQ + 1),
            payload: chunk,
            ..RECV_TEMPL
        }));
    }
}

/// The peer's ACK of `ack` octets with SACK blocks.
fn ack(ack: usize, sack_ranges: [Option<(u32, u32)>; 3]) -> TcpRepr<'static> {
    TcpRepr {
        seq_number: REMOTE_SEQ + 1,
        ack_number: Some(LOCAL_SEQ + 1 + ack),
        sack_ranges,
        ..SEND_TEMPL
    }
}

fn segment(at: usize, payload: &'static [u8]) -> TcpRepr<'static> {
    TcpRepr {
        seq_number: LOCAL_SEQ + 1 + at,
        ack_number: Some(REMOTE_SEQ + 1),
        payload,
        ..RECV_TEMPL
    }
}

#[test]
fn sack_repairs_three_holes_in_one_round_trip() {
    let mut s = socket_with_sack(true);
    send_segments(&mut s, b"aaabbbcccdddeeefffggghhh", 1000);
    // "bbb", "ddd" and "fff" were lost; the peer's ACKs say so, most recent block first.
    send!(s, time 1020, ack(3, [block(6, 9), None, None]));
    send!(s, time 1020, ack(3, [block(12, 15), block(6, 9), None]));
    send!(s, time 1020, ack(3, [block(18, 24), block(12, 15), block(6, 9)]));
    // All three holes go at once (NewReno would send one per round trip).
    recv!(s, time 1020, [
        segment(3, b"bbb"),
        segment(9, b"ddd"),
        segment(15, b"fff")
    ]);
    send!(s, time 1030, ack(24, [None, None, None]));
    recv_nothing!(s, time 1300);
    let stats = s.loss_stats();
    assert_eq!(
        (stats.recoveries, stats.retransmits, stats.timeouts),
        (1, 3, 0)
    );
}

#[test]
fn sack_tail_loss_is_repaired_by_a_probe_not_a_timeout() {
    let mut s = socket_with_sack(true);
    send_segments(&mut s, b"aaabbbccc", 1000);
    // Only "aaa" arrived: no further ACK will come.
    send!(s, time 1010, ack(3, [None, None, None]));
    // The probe goes two round trips (+2 ms) after the ACK, long before the 200 ms RTO:
    // there is no new data, so it is the last segment.
    recv_nothing!(s, time 1031);
    recv!(s, time 1032, [segment(6, b"ccc")]);
    // Its SACK shows "bbb" lost (sent before it, a reordering window ago): resent at once.
    send!(s, time 1042, ack(3, [block(6, 9), None, None]));
    recv!(s, time 1042, [segment(3, b"bbb")]);
    send!(s, time 1052, ack(9, [None, None, None]));
    recv_nothing!(s, time 1400);
    let stats = s.loss_stats();
    assert_eq!((stats.probes, stats.timeouts, stats.retransmits), (1, 0, 2));
}

#[test]
fn sack_reordering_within_the_rack_window_is_not_a_loss() {
    let mut s = socket_with_sack(true);
    send_segments(&mut s, b"aaabbbcccddd", 1000);
    send!(s, time 1010, ack(3, [None, None, None]));
    // "bbb" is late, not lost: "ccc" and "ddd" are SACKed first. Its reordering window
    // (a quarter of the 10 ms minimum round trip) has not passed at 1013 ms.
    send!(s, time 1012, ack(3, [block(6, 9), None, None]));
    recv_nothing!(s, time 1012);
    send!(s, time 1013, ack(3, [block(6, 12), None, None]));
    recv_nothing!(s, time 1013);
    send!(s, time 1013, ack(12, [None, None, None]));
    recv_nothing!(s, time 1400);
    assert_eq!(s.loss_stats(), LossStats::default());
}

#[test]
fn sack_reordering_past_the_rack_window_is_a_loss() {
    // The same, but "bbb" does not come: at the window's end it is resent.
    let mut s = socket_with_sack(true);
    send_segments(&mut s, b"aaabbbcccddd", 1000);
    send!(s, time 1010, ack(3, [None, None, None]));
    send!(s, time 1012, ack(3, [block(6, 9), None, None]));
    send!(s, time 1013, ack(3, [block(6, 12), None, None]));
    recv_nothing!(s, time 1013);
    recv!(s, time 1014, [segment(3, b"bbb")]);
}

#[test]
fn sack_timeout_resends_only_what_was_not_sacked() {
    let mut s = socket_with_sack(true);
    send_segments(&mut s, b"aaabbbcccddd", 1000);
    // "ccc" is SACKed: "aaa" and then "bbb" are deemed lost as their reordering windows
    // (2 ms here) pass, and resent.
    send!(s, time 1010, ack(0, [block(6, 9), None, None]));
    recv!(s, time 1010, [segment(0, b"aaa")]);
    recv!(s, time 1011, [segment(3, b"bbb")]);
    // Every resend and ACK is lost: the timeout (200 ms after the first send) resends
    // what was not SACKed, never "ccc".
    recv_nothing!(s, time 1199);
    recv!(s, time 1200, [
        segment(0, b"aaa"),
        segment(3, b"bbb"),
        segment(9, b"ddd")
    ]);
    assert_eq!(s.loss_stats().timeouts, 1);
    send!(s, time 1210, ack(12, [None, None, None]));
    recv_nothing!(s, time 1600);
}

#[test]
fn peer_without_sack_keeps_newreno() {
    let mut s = socket_with_sack(false);
    send_segments(&mut s, b"aaabbbcccdddeee", 1000);
    // SACK blocks from a peer that did not offer SACK are ignored, and no probe goes.
    send!(s, time 1010, ack(3, [block(6, 9), None, None]));
    recv_nothing!(s, time 1040);
    send!(s, time 1041, ack(3, [block(6, 12), None, None]));
    send!(s, time 1042, ack(3, [block(6, 15), None, None]));
    recv_nothing!(s, time 1042);
    // The third duplicate ACK: fast retransmit of the first hole only.
    send!(s, time 1043, ack(3, [block(6, 15), None, None]));
    recv!(s, time 1043, [segment(3, b"bbb")]);
    assert_eq!(s.recovery_point, Some(LOCAL_SEQ + 1 + 15));
    assert_eq!(s.loss_stats().recoveries, 0);
    // Nor does this socket send SACK blocks itself.
    send!(s, time 1050, TcpRepr {
        seq_number: REMOTE_SEQ + 1 + 3,
        ack_number: Some(LOCAL_SEQ + 1 + 15),
        payload: &b"xyz"[..],
        ..SEND_TEMPL
    }, Some(TcpRepr {
        seq_number: LOCAL_SEQ + 1 + 15,
        ack_number: Some(REMOTE_SEQ + 1),
        window_len: 64,
        ..RECV_TEMPL
    }));
}

#[test]
fn sack_blocks_latest_first_then_recent_then_dsack() {
    let mut s = socket_with_sack(true);
    let reply = |ack: usize, window_len: u16, sack_ranges| {
        Some(TcpRepr {
            seq_number: LOCAL_SEQ + 1,
            ack_number: Some(REMOTE_SEQ + 1 + ack),
            window_len,
            sack_ranges,
            ..RECV_TEMPL
        })
    };
    let data = |at: usize| TcpRepr {
        seq_number: REMOTE_SEQ + 1 + at,
        ack_number: Some(LOCAL_SEQ + 1),
        payload: &b"xyz"[..],
        ..SEND_TEMPL
    };
    send!(s, time 10, data(3), reply(0, 64, [rblock(3, 6), None, None]));
    send!(s, time 11, data(9), reply(0, 64, [rblock(9, 12), rblock(3, 6), None]));
    send!(s, time 12, data(15), reply(0, 64, [rblock(15, 18), rblock(9, 12), rblock(3, 6)]));
    // A block that grew is reported whole.
    send!(s, time 13, data(6), reply(0, 64, [rblock(3, 12), rblock(15, 18), None]));
    // The hole at 0 filled: the ACK moves, the other block stays.
    send!(s, time 14, data(0), reply(12, 52, [rblock(15, 18), None, None]));
    // A duplicate: reported first as a D-SACK.
    send!(s, time 15, data(0), reply(12, 52, [rblock(0, 3), rblock(15, 18), None]));
}
