//! Impaired `mem://` links, end to end: TCP moves every byte intact under loss, duplication,
//! reordering and corruption (16 streams with their checksums compared); datagrams show the
//! loss and duplication; delay and rate are honoured without busy polling; bad parameters
//! are refused.
//!
//! The integrity run reads two variables, for `scripts/reliability.d/integrity`:
//! `VDESTACK_INTEGRITY_BYTES` (all streams together; 64 MiB by default) and
//! `VDESTACK_INTEGRITY_LINK` (the parameters in brackets; "" for a clean link).

use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::thread;
use std::time::{Duration, Instant};

use vdestack::net::{TcpListener, TcpStream, UdpSocket};
use vdestack::Stack;

#[path = "support/cprog.rs"]
mod cprog;

/// The impairments of the trust issue (both directions), on Ethernet-sized frames.
const BAD: &str = "loss=2%/dup=1%/reorder=5%/corrupt=0.1%/mtu=1500";
/// A stream that moves no byte for this long has stalled.
const STALL: Duration = Duration::from_secs(60);

/// The CPU-time test measures the whole process: it runs alone, the others side by side.
static SERIAL: RwLock<()> = RwLock::new(());

fn side_by_side() -> RwLockReadGuard<'static, ()> {
    SERIAL.read().unwrap_or_else(|p| p.into_inner())
}

fn alone() -> RwLockWriteGuard<'static, ()> {
    SERIAL.write().unwrap_or_else(|p| p.into_inner())
}

fn stack(seg: &str, host: u8) -> Stack {
    let s = Stack::new(&format!("mem://{seg}"), None).expect("create stack");
    s.cmd(&format!(
        "ip link set vde0 up; ip addr add 10.0.0.{host}/24 dev vde0"
    ))
    .expect("configure stack");
    s
}

/// The segment of test `name`.
fn segment(name: &str) -> String {
    format!("impair-{name}-{}", std::process::id())
}

/// Two stacks on one segment, each member impaired by `params` (none when empty).
fn two(name: &str, params: &str) -> (Stack, Stack) {
    let seg = segment(name);
    let seg = |seed: u32| match params {
        "" => seg.clone(),
        p if p.contains("seed=") => format!("{seg}[{p}]"),
        p => format!("{seg}[{p}/seed={seed}]"),
    };
    (stack(&seg(1), 1), stack(&seg(2), 2))
}

/// The bytes of stream `id`: xorshift64 from a seed of its own, the same however they
/// are cut into reads.
struct Data {
    x: u64,
    word: [u8; 8],
    used: usize,
}

impl Data {
    fn new(id: u64) -> Data {
        let x = 0x9e37_79b9_7f4a_7c15 ^ (id + 1).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        Data {
            x,
            word: [0; 8],
            used: 8,
        }
    }
    fn fill(&mut self, buf: &mut [u8]) {
        for b in buf {
            if self.used == 8 {
                self.x ^= self.x << 13;
                self.x ^= self.x >> 7;
                self.x ^= self.x << 17;
                self.word = self.x.to_le_bytes();
                self.used = 0;
            }
            *b = self.word[self.used];
            self.used += 1;
        }
    }
}

/// FNV-1a, 64 bits: any byte lost, added, moved or changed shows.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct Hash(u64);

impl Hash {
    fn new() -> Hash {
        Hash(0xcbf2_9ce4_8422_2325)
    }
    fn add(&mut self, buf: &[u8]) {
        for b in buf {
            self.0 = (self.0 ^ *b as u64).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
}

/// What one end of a stream saw.
#[derive(Default)]
struct Seen {
    bytes: AtomicU64,
    hash: AtomicU64,
    /// The first offset whose byte was not the one sent (u64::MAX: none).
    first_bad: AtomicU64,
    connected: AtomicBool,
    done: AtomicBool,
    error: std::sync::Mutex<Option<String>>,
}

impl Seen {
    fn failed(&self) -> bool {
        self.error.lock().unwrap().is_some()
    }
}

/// Connects to `dst` and sends stream `id`: its id, then `len` bytes.
fn send_stream(from: &Stack, dst: &str, id: u64, len: u64, seen: &Seen) -> io::Result<()> {
    let mut s = TcpStream::connect(from, dst)?;
    seen.connected.store(true, Relaxed);
    s.write_all(&id.to_le_bytes())?;
    let (mut data, mut hash) = (Data::new(id), Hash::new());
    let mut buf = vec![0u8; 64 << 10];
    let mut left = len;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        data.fill(&mut buf[..n]);
        hash.add(&buf[..n]);
        s.write_all(&buf[..n])?;
        left -= n as u64;
        seen.bytes.fetch_add(n as u64, Relaxed);
    }
    s.shutdown(Shutdown::Write)?;
    seen.hash.store(hash.0, Relaxed);
    // Wait for the receiver's end, so the connection is not reset with data in flight.
    let mut end = [0u8; 1];
    match s.read(&mut end)? {
        0 => Ok(()),
        _ => Err(io::Error::other("the receiver sent data")),
    }
}

/// Accepts `n` streams on `l` and receives each in a thread, into `rx[id]`.
fn accept_streams(l: TcpListener, n: u64, rx: Vec<Arc<Seen>>) -> io::Result<()> {
    for _ in 0..n {
        let (mut s, _) = l.accept()?;
        let mut id = [0u8; 8];
        s.read_exact(&mut id)?;
        let id = u64::from_le_bytes(id);
        let seen = rx
            .get(id as usize)
            .ok_or_else(|| io::Error::other(format!("stream id {id}?")))?
            .clone();
        seen.connected.store(true, Relaxed);
        watched(seen, move |seen| recv_stream(s, id, seen));
    }
    Ok(())
}

fn recv_stream(mut s: TcpStream, id: u64, seen: &Seen) -> io::Result<()> {
    let (mut data, mut hash) = (Data::new(id), Hash::new());
    let mut buf = vec![0u8; 64 << 10];
    let mut want = vec![0u8; 64 << 10];
    let mut at = 0u64;
    seen.first_bad.store(u64::MAX, Relaxed);
    loop {
        let n = s.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hash.add(&buf[..n]);
        data.fill(&mut want[..n]);
        if seen.first_bad.load(Relaxed) == u64::MAX {
            if let Some(i) = (0..n).find(|i| buf[*i] != want[*i]) {
                seen.first_bad.store(at + i as u64, Relaxed);
            }
        }
        at += n as u64;
        seen.bytes.store(at, Relaxed);
    }
    seen.hash.store(hash.0, Relaxed);
    s.shutdown(Shutdown::Write)?;
    Ok(())
}

/// Runs `f` in a thread that records how it ended in `seen`.
fn watched(seen: Arc<Seen>, f: impl FnOnce(&Seen) -> io::Result<()> + Send + 'static) {
    thread::spawn(move || {
        if let Err(e) = f(&seen) {
            *seen.error.lock().unwrap() = Some(e.to_string());
        }
        seen.done.store(true, Relaxed);
    });
}

/// Moves `total` bytes over `2 * per_way` TCP streams between two stacks on a segment
/// impaired by `params`, checks every stream end to end, and returns the seconds it took.
fn integrity(name: &str, params: &str, total: u64, per_way: u64) -> f64 {
    let (a, b) = two(name, params);
    let (a, b) = (Arc::new(a), Arc::new(b));
    let seg = segment(name);
    let la = TcpListener::bind(&a, "0.0.0.0:5001").unwrap();
    let lb = TcpListener::bind(&b, "0.0.0.0:5001").unwrap();
    let len = total / (2 * per_way);
    let start = Instant::now();
    let n = 2 * per_way;
    let tx: Vec<Arc<Seen>> = (0..n).map(|_| Arc::default()).collect();
    let rx: Vec<Arc<Seen>> = (0..n).map(|_| Arc::default()).collect();
    // Streams 0..per_way go from a to b, the others back; every phase runs in threads, so
    // the watchdog sees connections that do not open as well as data that does not move.
    let accepting = [(lb, "b"), (la, "a")].map(|(l, at)| {
        let (rx, done) = (rx.clone(), Arc::new(Seen::default()));
        let d = done.clone();
        watched(d, move |_| accept_streams(l, per_way, rx));
        (format!("accepting on {at}"), done)
    });
    let mut labels = Vec::new();
    for id in 0..n {
        let (from, dir, dst) = if id < per_way {
            (a.clone(), "a→b", "10.0.0.2:5001")
        } else {
            (b.clone(), "b→a", "10.0.0.1:5001")
        };
        labels.push(format!("stream {id} ({dir})"));
        watched(tx[id as usize].clone(), move |seen| {
            send_stream(&from, dst, id, len, seen)
        });
    }
    // The watchdog: every stream opens and moves, or the test names those that stopped.
    let mut last: Vec<(u64, Instant)> = vec![(0, Instant::now()); n as usize];
    loop {
        thread::sleep(Duration::from_millis(200));
        let failed = accepting.iter().find(|(_, s)| s.failed());
        assert!(
            failed.is_none(),
            "{}: {:?}",
            failed.unwrap().0,
            failed.unwrap().1.error
        );
        let over = |i: usize| tx[i].done.load(Relaxed) && rx[i].done.load(Relaxed);
        if (0..n as usize).all(|i| over(i) || tx[i].failed() || rx[i].failed()) {
            break;
        }
        let mut stalled = Vec::new();
        for i in 0..n as usize {
            let (sent, got) = (tx[i].bytes.load(Relaxed), rx[i].bytes.load(Relaxed));
            let moved = sent + got + tx[i].connected.load(Relaxed) as u64;
            if moved != last[i].0 || over(i) {
                last[i] = (moved, Instant::now());
            } else if last[i].1.elapsed() > STALL {
                let state = match (tx[i].connected.load(Relaxed), rx[i].connected.load(Relaxed)) {
                    (false, _) => "not connected",
                    (true, false) => "connected, not accepted",
                    _ => "open",
                };
                let label = &labels[i];
                stalled.push(format!(
                    "{label}: {state}, {got} of {len} received, {sent} written"
                ));
            }
        }
        assert!(
            stalled.is_empty(),
            "streams stalled for {STALL:?}:\n{}",
            stalled.join("\n")
        );
    }
    let secs = start.elapsed().as_secs_f64();
    let mut bad = Vec::new();
    for ((label, t), r) in labels.iter().zip(&tx).zip(&rx) {
        let errs = [&t.error, &r.error].map(|e| e.lock().unwrap().clone());
        let (got, first_bad) = (r.bytes.load(Relaxed), r.first_bad.load(Relaxed));
        let (sent_hash, got_hash) = (t.hash.load(Relaxed), r.hash.load(Relaxed));
        if errs.iter().any(Option::is_some)
            || got != len
            || first_bad != u64::MAX
            || sent_hash != got_hash
        {
            bad.push(format!(
                "{label}: received {got} of {len} bytes, hash {got_hash:016x} (sent \
                 {sent_hash:016x}), first wrong byte at {first_bad}, errors {errs:?}"
            ));
        }
    }
    assert!(bad.is_empty(), "streams not intact:\n{}", bad.join("\n"));
    if let Some(c) = vdestack::internal::link::impair::counts(&seg) {
        println!("integrity [{params}]: the link {c:?}");
    }
    let mib = total as f64 / (1 << 20) as f64;
    println!(
        "integrity [{params}]: {n} streams, {mib:.0} MiB intact in {secs:.1} s: \
         throughput {:.1} MiB/s",
        mib / secs
    );
    secs
}

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

#[test]
fn tcp_streams_arrive_intact_under_loss_dup_reorder_and_corruption() {
    let _serial = side_by_side();
    let total: u64 = env_or("VDESTACK_INTEGRITY_BYTES", &(64u64 << 20).to_string())
        .parse()
        .expect("VDESTACK_INTEGRITY_BYTES: a number of bytes");
    let params = env_or("VDESTACK_INTEGRITY_LINK", BAD);
    integrity("integrity", &params, total, 8);
    if params == BAD {
        // The streams met the impairments asked for, at their rates.
        let c = vdestack::internal::link::impair::counts(&segment("integrity")).unwrap();
        let n = c.sent as f64;
        for (what, got, p) in [
            ("lost", c.lost, 0.02 * 0.99),
            ("duplicated", c.duplicated, 0.01 * 0.98),
            ("reordered", c.reordered, 0.05),
            ("corrupted", c.corrupted, 0.001),
        ] {
            let (mean, sd) = (n * p, (n * p * (1.0 - p)).sqrt());
            assert!(
                (got as f64 - mean).abs() < 5.0 * sd + 1.0 && got > 0,
                "{what}: {got} of {n} frames, expected {mean:.0} ± {:.0}",
                5.0 * sd
            );
        }
    }
}

/// Sets SO_RCVTIMEO on a stack fd.
fn recv_timeout(fd: i32, t: Duration) {
    let tv = libc::timeval {
        tv_sec: t.as_secs() as _,
        tv_usec: t.subsec_micros() as _,
    };
    // SAFETY: a valid timeval of the size given.
    let r = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            &tv as *const _ as *const libc::c_void,
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    assert_eq!(r, 0);
}

/// One round trip that succeeds (it retries), so both stacks know each other's MAC.
fn warm_up(a: &UdpSocket, b: &UdpSocket) {
    let mut buf = [0u8; 16];
    for _ in 0..50 {
        a.send_to(b"ping", "10.0.0.2:7000").unwrap();
        if b.recv_from(&mut buf).is_ok() {
            b.send_to(b"pong", "10.0.0.1:7000").unwrap();
            if a.recv_from(&mut buf).is_ok() {
                while b.recv_from(&mut buf).is_ok() {} // duplicates of the pings
                while a.recv_from(&mut buf).is_ok() {}
                return;
            }
        }
    }
    panic!("no round trip in 50 tries");
}

#[test]
fn datagrams_show_the_loss_and_duplication() {
    let _serial = side_by_side();
    let (sa, sb) = two("udp", "loss=20%/dup=10%");
    let a = UdpSocket::bind(&sa, "0.0.0.0:7000").unwrap();
    let b = UdpSocket::bind(&sb, "0.0.0.0:7000").unwrap();
    recv_timeout(a.as_raw_fd(), Duration::from_millis(300));
    recv_timeout(b.as_raw_fd(), Duration::from_millis(300));
    warm_up(&a, &b);
    let n = 4000usize;
    let mut copies = vec![0u32; n];
    let mut buf = [0u8; 16];
    // In rounds small enough for every buffer, so only the link loses datagrams; a late
    // one counts in a later round, and the last round waits longer.
    recv_timeout(b.as_raw_fd(), Duration::from_millis(30));
    let seqs: Vec<u32> = (0..n as u32).collect();
    let rounds = seqs.chunks(50).count();
    for (k, round) in seqs.chunks(50).enumerate() {
        for i in round {
            a.send_to(&i.to_le_bytes(), "10.0.0.2:7000").unwrap();
        }
        if k == rounds - 1 {
            recv_timeout(b.as_raw_fd(), Duration::from_millis(500));
        }
        while let Ok((4, _)) = b.recv_from(&mut buf) {
            let i = u32::from_le_bytes(buf[..4].try_into().unwrap()) as usize;
            copies[i] += 1;
        }
    }
    let lost = copies.iter().filter(|c| **c == 0).count();
    let twice = copies.iter().filter(|c| **c == 2).count();
    assert!(copies.iter().all(|c| *c <= 2), "at most two copies");
    // Loss and dup are drawn independently: no copy with p = 0.2·0.9, two with 0.8·0.1.
    for (what, got, p) in [("lost", lost, 0.18), ("duplicated", twice, 0.08)] {
        let (mean, sd) = (n as f64 * p, (n as f64 * p * (1.0 - p)).sqrt());
        assert!(
            (got as f64 - mean).abs() < 5.0 * sd,
            "{what}: {got} of {n}, expected {mean:.0} ± {:.0}",
            5.0 * sd
        );
    }
}

/// CPU time (user + system) this process has used.
fn cpu_time() -> Duration {
    // SAFETY: rusage is plain data; getrusage fills it.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: a valid rusage to fill.
    assert_eq!(unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) }, 0);
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

#[test]
fn delay_is_honoured_and_waited_for_without_busy_polling() {
    let _serial = alone();
    let (sa, sb) = two("delay", "delay=40ms/jitter=5ms");
    let a = UdpSocket::bind(&sa, "0.0.0.0:7000").unwrap();
    let b = UdpSocket::bind(&sb, "0.0.0.0:7000").unwrap();
    recv_timeout(a.as_raw_fd(), Duration::from_secs(2));
    recv_timeout(b.as_raw_fd(), Duration::from_secs(2));
    warm_up(&a, &b);
    let (wall, cpu) = (Instant::now(), cpu_time());
    let mut buf = [0u8; 16];
    let mut rtts = Vec::new();
    for _ in 0..10 {
        let t = Instant::now();
        a.send_to(b"ping", "10.0.0.2:7000").unwrap();
        b.recv_from(&mut buf).expect("the ping arrives");
        b.send_to(b"pong", "10.0.0.1:7000").unwrap();
        a.recv_from(&mut buf).expect("the pong arrives");
        rtts.push(t.elapsed());
    }
    let (wall, cpu) = (wall.elapsed(), cpu_time() - cpu);
    let min = *rtts.iter().min().unwrap();
    assert!(
        min >= Duration::from_millis(70),
        "round trips {rtts:?}: each way 40±5 ms"
    );
    // Waiting for a delayed frame is sleeping: the engine's timeout is the frame's time.
    assert!(
        cpu < wall / 5,
        "{cpu:?} of CPU in {wall:?} of waiting for delayed frames"
    );
}

#[test]
fn rate_limits_a_transfer() {
    let _serial = side_by_side();
    let (a, b) = two("rate", "rate=20mbit");
    let l = TcpListener::bind(&b, "0.0.0.0:5001").unwrap();
    let len = 2usize << 20;
    let sender = {
        let mut c = TcpStream::connect(&a, "10.0.0.2:5001").unwrap();
        thread::spawn(move || {
            c.write_all(&vec![7u8; len]).unwrap();
            c.shutdown(Shutdown::Write).unwrap();
        })
    };
    let (mut s, _) = l.accept().unwrap();
    let t = Instant::now();
    let mut got = Vec::new();
    s.read_to_end(&mut got).unwrap();
    let secs = t.elapsed().as_secs_f64();
    sender.join().unwrap();
    assert_eq!(got.len(), len);
    assert!(got.iter().all(|b| *b == 7));
    // 2 MiB at 20 Mbit/s is 0.84 s on the wire, headers aside: it cannot go faster.
    let floor = len as f64 * 8.0 / 20e6;
    assert!(
        secs >= floor,
        "{len} bytes in {secs:.2} s: faster than the rate"
    );
}

#[test]
fn bad_parameters_are_refused_with_einval_and_a_message() {
    let _serial = side_by_side();
    for (vnl, says) in [
        ("mem://impair-bad[loss=2]x", "parameters go last"),
        ("mem://impair-bad[loss=200%]", "loss=200%: not a percentage"),
        ("mem://impair-bad[delay=5]", "give a unit"),
        ("mem://impair-bad[colour=red]", "unknown parameter"),
    ] {
        let e = Stack::new(vnl, None).expect_err(vnl);
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{vnl}: {e}");
        assert!(e.to_string().contains(says), "{vnl}: {e}");
    }
    // What only the segment knows is checked by the engine: EINVAL again.
    let seg = format!("impair-csum-{}", std::process::id());
    let _clean = Stack::new(&format!("mem://{seg}"), None).unwrap();
    let e = Stack::new(&format!("mem://{seg}[corrupt=1%]"), None).expect_err("corrupt");
    assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{e}");
}

#[test]
fn vde_addstack_refuses_bad_parameters_with_einval_and_says_why() {
    let _serial = side_by_side();
    let dir = cprog::scratch("impair", "capi");
    let (prog, lib) = cprog::build(&dir, "impair.c");
    cprog::run(&dir, &prog, &lib, &[], Duration::from_secs(30));
    let stderr = std::fs::read_to_string(dir.join("stderr")).unwrap();
    for says in [
        "loss=200%: not a percentage",
        "delay=5: give a unit",
        "first member",
    ] {
        assert!(stderr.contains(says), "stderr lacks {says:?}:\n{stderr}");
    }
}
