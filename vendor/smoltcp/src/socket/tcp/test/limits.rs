//! vdestack: tests of Linux's limits (`limits.rs`); each fails without its hunk.

use super::*;

/// Everything `s` sends until `until` ms, polled every `step` ms: (time, segment).
fn sent_until(
    s: &mut TestSocket,
    from: i64,
    until: i64,
    step: i64,
) -> Vec<(i64, TcpControl, usize)> {
    let mut out = Vec::new();
    let mut t = from;
    while t <= until {
        s.cx.set_now(Instant::from_millis(t));
        let _ = s.socket.dispatch(&mut s.cx, |_, _, (_, tcp)| {
            out.push((t, tcp.control.quash_psh(), tcp.payload.len()));
            Ok::<(), ()>(())
        });
        t += step;
    }
    out
}

/// Data the peer never acknowledges: retransmitted with backoff until the retry timeout,
/// counted from the first retransmission (Linux's retrans_stamp); then the connection is dropped with no
/// RST, as Linux's tcp_write_timeout does, and `gave_up` says why.
#[test]
fn unacknowledged_data_times_out_without_rst() {
    let mut s = socket_established();
    s.set_retry_timeout(Some(Duration::from_millis(6_000)));
    s.send_slice(b"abc").unwrap();
    recv!(s, time 1000, Ok(TcpRepr {
        seq_number: LOCAL_SEQ + 1,
        ack_number: Some(REMOTE_SEQ + 1),
        payload: &b"abc"[..],
        ..RECV_TEMPL
    }));
    // The deadline is a time to poll at, even before the retransmission timer gets there.
    let sent = sent_until(&mut s, 1001, 7999, 1);
    // RTO 1 s, doubling: at 2 s (the first: the timeout ends 6 s later) and 4 s.
    assert_eq!(
        sent.iter().map(|r| r.0).collect::<Vec<_>>(),
        [2000, 4000],
        "{sent:?}"
    );
    assert!(
        sent.iter()
            .all(|&(_, c, n)| c == TcpControl::None && n == 3),
        "{sent:?}"
    );
    assert_eq!(s.state, State::Established);
    assert!(!s.gave_up());
    assert!(s.socket.poll_at(&mut s.cx) <= PollAt::Time(Instant::from_millis(8000)));
    recv_nothing!(s, time 8000);
    assert_eq!(s.state, State::Closed);
    assert!(s.gave_up());
}

/// An idle connection (nothing to acknowledge) never times out, whatever the retry timeout.
#[test]
fn idle_connection_does_not_time_out() {
    let mut s = socket_established();
    s.set_retry_timeout(Some(Duration::from_millis(1_000)));
    send!(s, time 0, TcpRepr {
        seq_number: REMOTE_SEQ + 1,
        ack_number: Some(LOCAL_SEQ + 1),
        payload: &b"xyz"[..],
        ..SEND_TEMPL
    });
    recv!(s, time 100, Ok(TcpRepr {
        seq_number: LOCAL_SEQ + 1,
        ack_number: Some(REMOTE_SEQ + 1 + 3),
        window_len: 61,
        ..RECV_TEMPL
    }));
    assert_eq!(s.socket.poll_at(&mut s.cx), PollAt::Ingress);
    recv_nothing!(s, time 100_000);
    assert_eq!(s.state, State::Established);
    assert!(!s.gave_up());
}

/// A peer that answers zero-window probes keeps the connection alive past the retry
/// timeout; one that stops answering ends it.
#[test]
fn zero_window_probes_time_out_only_when_unanswered() {
    let mut s = socket_established();
    s.set_retry_timeout(Some(Duration::from_millis(2_000)));
    send!(s, time 0, TcpRepr {
        seq_number: REMOTE_SEQ + 1,
        ack_number: Some(LOCAL_SEQ + 1),
        window_len: 0,
        ..SEND_TEMPL
    });
    s.send_slice(b"abc").unwrap();
    // Answered probes: the window stays shut for 10 s, the connection lives.
    let mut t = 0;
    while t < 10_000 {
        t += 100;
        let mut probe = false;
        s.cx.set_now(Instant::from_millis(t));
        let _ = s.socket.dispatch(&mut s.cx, |_, _, (_, tcp)| {
            probe |= tcp.payload.len() == 1;
            Ok::<(), ()>(())
        });
        if probe {
            send!(s, time t, TcpRepr {
                seq_number: REMOTE_SEQ + 1,
                ack_number: Some(LOCAL_SEQ + 1),
                window_len: 0,
                ..SEND_TEMPL
            });
        }
    }
    assert_eq!(s.state, State::Established);
    // Then the peer goes silent: the next probe goes unanswered for 2 s, and that ends it.
    let mut closed = None;
    let mut probes = Vec::new();
    while closed.is_none() && t < 200_000 {
        t += 10;
        for (at, _, n) in sent_until(&mut s, t, t, 10) {
            probes.push((at, n));
        }
        if s.state == State::Closed {
            closed = Some(t);
        }
    }
    assert_eq!(probes.len(), 1, "one probe, then the end: {probes:?}");
    assert_eq!(closed, Some(probes[0].0 + 2_000));
    assert!(s.gave_up());
}

/// Keep-alive as Linux's: probes `interval` apart once idle; after `probes` unanswered ones
/// an RST and `gave_up`. A segment from the peer starts the count again.
#[test]
fn keep_alive_probes_unanswered_reset_the_connection() {
    let mut s = socket_established();
    s.set_keep_alive(Some(Duration::from_millis(1_000)));
    s.set_keep_alive_probes(Some(Duration::from_millis(100)), Some(3));
    let probe = Ok(TcpRepr {
        seq_number: LOCAL_SEQ,
        ack_number: Some(REMOTE_SEQ + 1),
        payload: &[0],
        ..RECV_TEMPL
    });
    // smoltcp sends one probe as keep-alive is turned on; the peer answers it.
    recv!(s, time 0, probe);
    send!(s, time 10, TcpRepr {
        seq_number: REMOTE_SEQ + 1,
        ack_number: Some(LOCAL_SEQ + 1),
        ..SEND_TEMPL
    });
    // Idle for 1 s, then 3 probes 100 ms apart, none answered.
    recv_nothing!(s, time 1009);
    recv!(s, time 1010, probe);
    recv_nothing!(s, time 1109);
    recv!(s, time 1110, probe);
    // One answer starts the count again.
    send!(s, time 1150, TcpRepr {
        seq_number: REMOTE_SEQ + 1,
        ack_number: Some(LOCAL_SEQ + 1),
        ..SEND_TEMPL
    });
    recv_nothing!(s, time 2149);
    for t in [2150, 2250, 2350] {
        recv!(s, time t, probe);
        assert!(!s.gave_up());
    }
    recv!(s, time 2450, Ok(TcpRepr {
        control: TcpControl::Rst,
        seq_number: LOCAL_SEQ + 1,
        ack_number: Some(REMOTE_SEQ + 1),
        ..RECV_TEMPL
    }));
    assert_eq!(s.state, State::Closed);
    assert!(s.gave_up());
}
