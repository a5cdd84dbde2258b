use super::*;

fn impair(body: &str, seed: u64) -> Impair {
    Impair::new(parse(body).unwrap(), seed, "unit-tests")
}

/// Counts `hit` over `n` trials and checks it lies within 5 standard deviations of n·p
/// (for a fixed seed the count is fixed; the bound says the PRNG is not biased).
#[track_caller]
fn within_bounds(hits: usize, n: usize, p: f64) {
    let mean = n as f64 * p;
    let sd = (n as f64 * p * (1.0 - p)).sqrt();
    assert!(
        (hits as f64 - mean).abs() <= 5.0 * sd,
        "{hits} of {n}: expected {mean:.0} ± {:.0}",
        5.0 * sd
    );
}

#[test]
fn locators_split_into_name_and_parameters() {
    assert_eq!(split("lab").unwrap(), ("lab", None));
    let (name, p) = split("lab[loss=2%/dup=1%,reorder=5/corrupt=0.1%]").unwrap();
    let p = p.unwrap();
    assert_eq!(name, "lab");
    assert_eq!((p.loss, p.dup, p.reorder), (0.02, 0.01, 0.05));
    assert_eq!(p.corrupt, Some(0.001));
    let (_, p) = split("lab[delay=5ms,jitter=250us,rate=100mbit,limit=50,seed=7]").unwrap();
    let p = p.unwrap();
    assert_eq!(p.delay, Duration::from_millis(5));
    assert_eq!(p.jitter, Duration::from_micros(250));
    assert_eq!((p.rate, p.limit, p.seed), (Some(100_000_000), 50, Some(7)));
    assert_eq!(parse("rate=1MBps").unwrap().rate, Some(8_000_000));
    assert_eq!(parse("mtu=1500").unwrap().mtu, Some(1500));
    assert_eq!(
        parse("delay=1.5s").unwrap().delay,
        Duration::from_millis(1500)
    );
    // Empty brackets: a clean link; no corrupt: no checksums asked for.
    let (_, p) = split("lab[]").unwrap();
    assert_eq!(p.unwrap().corrupt, None);
}

#[test]
fn bad_parameters_are_refused_with_a_message() {
    for (spec, says) in [
        ("lab[loss=2%", "parameters go last"),
        ("lab[loss=2%]x", "parameters go last"),
        ("lab]", "without '['"),
        ("lab[loss]", "give a value"),
        ("lab[loss=150%]", "loss=150%: not a percentage"),
        ("lab[loss=-1]", "not a percentage"),
        ("lab[dup=x]", "dup=x"),
        ("lab[delay=5]", "give a unit"),
        ("lab[delay=2h]", "give a unit"),
        ("lab[jitter=-3ms]", "not a time"),
        ("lab[rate=100]", "give a unit"),
        ("lab[rate=0mbit]", "not a rate"),
        ("lab[limit=0]", "not a count"),
        ("lab[mtu=20]", "not an MTU"),
        ("lab[mtu=70000]", "not an MTU"),
        ("lab[seed=-1]", "not an unsigned"),
        ("lab[los=2%]", "unknown parameter \"los\""),
        ("lab[loss=1%/loss=2%]", "given twice"),
    ] {
        let e = split(spec).expect_err(spec);
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{spec}");
        assert!(e.to_string().contains(says), "{spec}: {e}");
    }
}

#[test]
fn loss_drops_frames_at_the_rate_asked() {
    let now = Instant::now();
    for (p, seed) in [(0.02, 1), (0.3, 2), (0.0, 3), (1.0, 4)] {
        let mut imp = impair(&format!("loss={}%", p * 100.0), seed);
        let n = 100_000;
        let lost = (0..n)
            .filter(|_| imp.fate(100, now) == [None, None])
            .count();
        within_bounds(lost, n, p);
        if p == 0.0 || p == 1.0 {
            assert_eq!(lost, (n as f64 * p) as usize);
        }
    }
}

#[test]
fn the_same_seed_makes_the_same_choices() {
    let now = Instant::now();
    let run = |seed| {
        let mut imp = impair("loss=10%/dup=10%/corrupt=10%/reorder=10%/jitter=1ms", seed);
        (0..1000).map(|_| imp.fate(1500, now)).collect::<Vec<_>>()
    };
    assert_eq!(run(42), run(42));
    assert_ne!(run(42), run(43));
}

#[test]
fn dup_sends_a_frame_twice() {
    let now = Instant::now();
    let mut imp = impair("dup=1%", 5);
    let n = 100_000;
    let mut twice = 0;
    for _ in 0..n {
        match imp.fate(100, now) {
            [Some(a), Some(b)] => {
                twice += 1;
                assert_eq!((a.due, b.due), (None, None), "no delay asked");
            }
            [Some(_), None] => {}
            other => panic!("dup alone never loses a frame: {other:?}"),
        }
    }
    within_bounds(twice, n, 0.01);
}

#[test]
fn corrupt_flips_exactly_one_bit() {
    let now = Instant::now();
    let mut imp = impair("corrupt=5%", 6);
    let n = 20_000;
    let mut corrupted = 0;
    let mut bytes_hit = std::collections::HashSet::new();
    for k in 0..n {
        let sent: Vec<u8> = (0..64).map(|i| (i * 7 + k) as u8).collect();
        let [Some(c), None] = imp.fate(sent.len(), now) else {
            panic!("corrupt alone neither drops nor duplicates");
        };
        let mut got = sent.clone();
        c.corrupt(&mut got);
        let bits: u32 = sent
            .iter()
            .zip(&got)
            .map(|(a, b)| (a ^ b).count_ones())
            .sum();
        match c.flip {
            Some((i, _)) => {
                assert_eq!(bits, 1, "one bit flipped");
                bytes_hit.insert(i);
                corrupted += 1;
            }
            None => assert_eq!(bits, 0),
        }
    }
    within_bounds(corrupted, n, 0.05);
    assert_eq!(bytes_hit.len(), 64, "any byte of the frame may be hit");
}

#[test]
fn delay_and_jitter_set_when_frames_arrive() {
    let now = Instant::now();
    let mut imp = impair("delay=5ms", 7);
    let [Some(c), None] = imp.fate(100, now) else {
        panic!()
    };
    assert_eq!(c.due, Some(now + Duration::from_millis(5)));
    let mut imp = impair("delay=5ms/jitter=1ms", 8);
    let (mut lo, mut hi, mut early_later) = (Duration::MAX, Duration::ZERO, 0);
    let mut last = now;
    for _ in 0..10_000 {
        let [Some(c), None] = imp.fate(100, now) else {
            panic!()
        };
        let due = c.due.unwrap();
        let d = due - now;
        lo = lo.min(d);
        hi = hi.max(d);
        early_later += (due < last) as usize;
        last = due;
    }
    assert!(lo >= Duration::from_millis(4) && hi <= Duration::from_millis(6));
    assert!(lo < Duration::from_micros(4100) && hi > Duration::from_micros(5900));
    // Jitter larger than the gap between frames reorders them, as in netem.
    assert!(early_later > 1000, "{early_later}");
}

#[test]
fn reorder_skips_the_delay() {
    let now = Instant::now();
    let mut imp = impair("delay=10ms/reorder=25%", 9);
    let n = 20_000;
    let mut ahead = 0;
    for _ in 0..n {
        let [Some(c), None] = imp.fate(100, now) else {
            panic!()
        };
        if c.ahead {
            ahead += 1;
            assert_eq!(c.due, None, "a reordered frame is not delayed");
        } else {
            assert_eq!(c.due, Some(now + Duration::from_millis(10)));
        }
    }
    within_bounds(ahead, n, 0.25);
}

#[test]
fn rate_serialises_frames_and_drops_when_its_queue_is_full() {
    let now = Instant::now();
    // 1250 bytes at 10 Mbit/s take 1 ms on the wire.
    let mut imp = impair("rate=10mbit/limit=5", 10);
    let dues: Vec<_> = (0..8).map(|_| imp.fate(1250, now)[0]).collect();
    for (k, c) in dues.iter().take(5).enumerate() {
        assert_eq!(
            c.unwrap().due,
            Some(now + Duration::from_millis(k as u64 + 1))
        );
    }
    assert!(dues[5..].iter().all(|c| c.is_none()), "a full queue drops");
    // Once the first two have left, two more fit, after the last one queued.
    let later = now + Duration::from_millis(2);
    let c = imp.fate(1250, later)[0].unwrap();
    assert_eq!(c.due, Some(now + Duration::from_millis(6)));
    assert!(imp.fate(1250, later)[0].is_some());
    assert!(imp.fate(1250, later)[0].is_none());
    // An idle link sends at once (plus the frame's own time), with the delay after it.
    let mut imp = impair("rate=1gbit/delay=1ms", 11);
    let c = imp.fate(125, now)[0].unwrap();
    assert_eq!(
        c.due,
        Some(now + Duration::from_micros(1) + Duration::from_millis(1))
    );
}
