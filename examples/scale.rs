//! Scale figures for `scripts/bench`, printed as `key=value` lines on stdout (progress and
//! errors on stderr). Every sub-bench runs under a watchdog: when it runs out of time it
//! prints what it reached and exits with status 124; any error exits non-zero.
//!
//! ```text
//! scale stacks N [BUDGET_S] [TIMEOUT_S]  N stacks on one mem:// segment, a listener each;
//!                                        stack 0 connects to every other one
//! scale bulk MIB SECS [TIMEOUT_S]        bulk TCP between two stacks on mem://, next to a
//!                                        socketpair and kernel loopback TCP (127.0.0.1)
//! scale conns N [BUDGET_S] [TIMEOUT_S]   N concurrent connections into one stack on mem://
//! scale kconns N [BUDGET_S] [TIMEOUT_S]  the same with the kernel's TCP on 127.0.0.1
//! scale idle N SECS [TIMEOUT_S]          CPU time and engine wake-ups of N idle stacks
//! ```
//!
//! BUDGET_S bounds the connect phase: when it runs out, the bench stops connecting, reports
//! how far it got (and checks what it has), then fails.

use std::io::{self, Read, Write};
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use vdestack::net::{TcpListener, TcpStream};
use vdestack::Stack;

/// Size of every write and read in the bulk benches.
const CHUNK: usize = 64 * 1024;

/// What the watchdog reports if time runs out: the phase, and how far it got.
static PHASE: Mutex<&str> = Mutex::new("start");
static REACHED: AtomicUsize = AtomicUsize::new(0);
/// A reason to fail the run once its figures are out (the fd limit cut N down).
static DEFERRED: Mutex<Option<String>> = Mutex::new(None);

fn phase(p: &'static str) {
    *PHASE.lock().unwrap() = p;
    REACHED.store(0, Ordering::Relaxed);
    eprintln!("scale: {p}");
}

fn kv(k: &str, v: impl std::fmt::Display) {
    println!("{k}={v}");
}

/// Ends the process after `secs`, saying where it was: a hang must not go unnoticed.
fn watchdog(secs: u64) {
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(secs));
        let p = *PHASE.lock().unwrap_or_else(|e| e.into_inner());
        kv("error", format!("timeout after {secs} s"));
        kv("timeout_phase", p);
        kv("timeout_reached", REACHED.load(Ordering::Relaxed));
        eprintln!(
            "scale: TIMEOUT after {secs} s in phase {p}, reached {}",
            REACHED.load(Ordering::Relaxed)
        );
        std::process::exit(124);
    });
}

fn rss_kib() -> u64 {
    status_field("/proc/self/status", "VmRSS:").unwrap_or(0)
}

fn status_field(path: &str, key: &str) -> Option<u64> {
    let s = std::fs::read_to_string(path).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// fds a bench keeps besides its sockets: stdio, the engine's control socket and epoll, the
/// sockets of a connect/accept in flight, control requests.
const FD_HEADROOM: u64 = 64;

/// Raises RLIMIT_NOFILE so that `n` items of `per` fds each fit (the hard limit too, up to
/// nr_open, when allowed: it takes CAP_SYS_RESOURCE), and returns how many items fit. When
/// that is fewer than `n`, says so and marks the run failed: the bench then runs with what
/// fits, so it still reports figures.
fn fit_fds(n: usize, per: u64) -> usize {
    let want = n as u64 * per + FD_HEADROOM;
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: r is a valid rlimit to fill.
    unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) };
    let hard0 = r.rlim_max;
    if r.rlim_max < want {
        let nr_open: u64 = std::fs::read_to_string("/proc/sys/fs/nr_open")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(r.rlim_max);
        let raised = libc::rlimit {
            rlim_cur: want.min(nr_open),
            rlim_max: want.min(nr_open),
        };
        // SAFETY: a valid rlimit; failure (EPERM) leaves the limits as they were.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            r = raised;
        }
    }
    if r.rlim_cur < want.min(r.rlim_max) {
        r.rlim_cur = want.min(r.rlim_max);
        // SAFETY: a valid rlimit, soft <= hard.
        unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &r) };
    }
    // SAFETY: as above.
    unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) };
    kv("nofile", r.rlim_cur);
    let fit = (r.rlim_cur.saturating_sub(FD_HEADROOM) / per).min(n as u64) as usize;
    if fit < n {
        let msg = format!(
            "{n} need {want} fds ({per} each); RLIMIT_NOFILE is {} (hard limit was {hard0}, raising \
             it needs CAP_SYS_RESOURCE): ran with {fit}",
            r.rlim_cur
        );
        kv("requested", n);
        kv("fd_limited", fit);
        eprintln!("scale: FD LIMIT: {msg}");
        *DEFERRED.lock().unwrap() = Some(msg);
    }
    fit
}

/// Address of stack `i` on the /8 (10.1.0.1 upwards).
fn addr(i: usize) -> Ipv4Addr {
    Ipv4Addr::from(0x0a01_0000 + i as u32 + 1)
}

fn mem(what: &str) -> String {
    format!("mem://{what}-{}", std::process::id())
}

fn us_per(d: Duration, n: usize) -> String {
    format!("{:.1}", d.as_secs_f64() * 1e6 / n.max(1) as f64)
}

/// 2a: N stacks, a listener each, stack 0 connects to all others (one byte, then close).
fn stacks(n: usize, budget: Duration) -> Result<()> {
    if n < 2 {
        bail!("stacks needs N >= 2");
    }
    // A listener is a socketpair: both ends live in this process.
    let n = fit_fds(n, 2);
    let vnl = mem("stacks");
    kv("stacks", n);
    let rss0 = rss_kib();

    phase("create+cfg");
    let mut st = Vec::with_capacity(n);
    let t = Instant::now();
    for i in 0..n {
        let s = Stack::new(&vnl, None).with_context(|| format!("stack {i}: create"))?;
        s.cmd(&format!(
            "ip link set vde0 up; ip addr add {}/8 dev vde0",
            addr(i)
        ))
        .map_err(|e| anyhow!("stack {i}: cmd: {e}"))?;
        st.push(s);
        REACHED.store(i + 1, Ordering::Relaxed);
    }
    let create = t.elapsed();
    let rss_cfg = rss_kib();
    kv("create_cfg_us_per_stack", us_per(create, n));
    kv(
        "rss_kib_per_stack_cfg",
        format!("{:.1}", (rss_cfg - rss0) as f64 / n as f64),
    );

    phase("listen");
    let mut ls = Vec::with_capacity(n);
    let t = Instant::now();
    for (i, s) in st.iter().enumerate() {
        ls.push(TcpListener::bind(s, "0.0.0.0:7").with_context(|| format!("stack {i}: listen"))?);
        REACHED.store(i + 1, Ordering::Relaxed);
    }
    kv("listen_us_per_stack", us_per(t.elapsed(), n));
    let rss_set = rss_kib();
    kv("rss_kib_delta", rss_set - rss0);
    kv(
        "rss_kib_per_stack",
        format!("{:.1}", (rss_set - rss0) as f64 / n as f64),
    );

    phase("connect");
    let mut connected = 0;
    let mut connect_only = Duration::ZERO;
    let mut failure = None;
    let t = Instant::now();
    let mut last_report = Instant::now();
    for (i, l) in ls.iter().enumerate().skip(1) {
        if t.elapsed() > budget {
            failure = Some(format!(
                "connect budget of {} s spent after {connected} of {} stacks",
                budget.as_secs(),
                n - 1
            ));
            break;
        }
        let r = (|| -> Result<()> {
            let tc = Instant::now();
            let mut c = TcpStream::connect(&st[0], (addr(i), 7)).context("connect")?;
            connect_only += tc.elapsed();
            c.write_all(b"x").context("write")?;
            let (mut a, _) = l.accept().context("accept")?;
            let mut b = [0u8; 1];
            a.read_exact(&mut b).context("read")?;
            Ok(())
        })();
        if let Err(e) = r {
            failure = Some(format!("stack {i} ({}): {e:#}", addr(i)));
            break;
        }
        connected += 1;
        REACHED.store(connected, Ordering::Relaxed);
        if last_report.elapsed() > Duration::from_secs(5) {
            last_report = Instant::now();
            eprintln!(
                "scale: {connected} connected, {} µs each so far",
                us_per(t.elapsed(), connected)
            );
        }
    }
    let dt = t.elapsed();
    kv("connected", connected);
    kv("connect_us_per_stack", us_per(dt, connected));
    kv("connect_only_us_per_stack", us_per(connect_only, connected));
    kv("rss_kib_delta_after_connects", rss_kib() - rss0);

    // Torn down even after a failed connect phase: its cost is a figure too.
    phase("teardown");
    let t = Instant::now();
    drop(ls);
    drop(st);
    kv("teardown_us_per_stack", us_per(t.elapsed(), n));
    if let Some(f) = failure {
        kv("error", &f);
        bail!("{f}");
    }
    Ok(())
}

/// Moves up to `total` bytes (or for `secs`) from `w` to `r` in CHUNK writes; returns the
/// bytes the reader got and MB/s (10^6 bytes/s) until its EOF.
fn bulk<W: Write, R: Read + Send + 'static>(
    mut w: W,
    mut r: R,
    total: u64,
    secs: f64,
) -> Result<(u64, f64)> {
    let reader = std::thread::spawn(move || -> io::Result<(u64, Instant)> {
        let mut buf = vec![0u8; CHUNK];
        let mut got = 0u64;
        loop {
            match r.read(&mut buf)? {
                0 => return Ok((got, Instant::now())),
                n => got += n as u64,
            }
        }
    });
    let block = vec![0x5au8; CHUNK];
    let t0 = Instant::now();
    let mut sent = 0u64;
    while sent < total && t0.elapsed().as_secs_f64() < secs {
        let n = (total - sent).min(CHUNK as u64) as usize;
        w.write_all(&block[..n])?;
        sent += n as u64;
        REACHED.store((sent >> 20) as usize, Ordering::Relaxed);
    }
    drop(w); // EOF for the reader
    let (got, t1) = reader.join().map_err(|_| anyhow!("reader panicked"))??;
    if got != sent {
        bail!("sent {sent} bytes, reader got {got}");
    }
    Ok((got, got as f64 / 1e6 / (t1 - t0).as_secs_f64()))
}

/// 2b: bulk TCP between two stacks on mem://, and the ceilings measured the same way.
fn bulk_all(mib: u64, secs: f64) -> Result<()> {
    let total = mib << 20;
    kv("bulk_limit_mib", mib);
    kv("bulk_limit_s", secs);

    phase("bulk socketpair");
    let (a, b) = UnixStream::pair()?;
    let (bytes, mbps) = bulk(a, b, total, secs)?;
    kv("bulk_socketpair_bytes", bytes);
    kv("bulk_socketpair_MBps", format!("{mbps:.0}"));

    phase("bulk kernel loopback");
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    let c = std::net::TcpStream::connect(l.local_addr()?)?;
    let (s, _) = l.accept()?;
    let (bytes, mbps) = bulk(c, s, total, secs)?;
    kv("bulk_kernel_bytes", bytes);
    kv("bulk_kernel_MBps", format!("{mbps:.0}"));

    phase("bulk mem://");
    let vnl = mem("bulk");
    let a = Stack::new(&vnl, None)?;
    let b = Stack::new(&vnl, None)?;
    a.cmd("ip link set vde0 up; ip addr add 10.2.0.1/24 dev vde0")?;
    b.cmd("ip link set vde0 up; ip addr add 10.2.0.2/24 dev vde0")?;
    let l = TcpListener::bind(&a, "0.0.0.0:5001")?;
    let c = TcpStream::connect(&b, "10.2.0.1:5001")?;
    let (s, _) = l.accept()?;
    let (bytes, mbps) = bulk(c, s, total, secs)?;
    kv("bulk_mem_bytes", bytes);
    kv("bulk_mem_MBps", format!("{mbps:.0}"));
    Ok(())
}

/// 2c: up to `n` connections open at once into the listener `lfd`; `connect(i)` opens the
/// i-th client, `accept` runs in its own thread. All echo one byte before they close.
fn conns<C, S, FC, FA>(
    n: usize,
    budget: Duration,
    lfd: RawFd,
    mut connect: FC,
    mut accept: FA,
) -> Result<()>
where
    C: Read + Write,
    S: Read + Write + Send + 'static,
    FC: FnMut(usize) -> io::Result<C>,
    FA: FnMut() -> io::Result<S> + Send + 'static,
{
    let rss0 = rss_kib();
    phase("connect+accept");
    // How many the acceptor waits for: lowered when the connect phase stops early.
    let target = Arc::new(AtomicUsize::new(n));
    let acceptor = {
        let target = target.clone();
        std::thread::spawn(move || -> (Vec<S>, Option<Instant>, Option<String>) {
            let mut v = Vec::with_capacity(n);
            let mut last = None;
            while v.len() < target.load(Ordering::SeqCst) {
                // Wait in poll, not accept, so a lowered target is seen.
                let mut p = libc::pollfd {
                    fd: lfd,
                    events: libc::POLLIN,
                    revents: 0,
                };
                // SAFETY: one valid pollfd.
                if unsafe { libc::poll(&mut p, 1, 100) } <= 0 {
                    continue;
                }
                match accept() {
                    Ok(s) => v.push(s),
                    Err(e) => return (v, last, Some(format!("accept: {e}"))),
                }
                last = Some(Instant::now());
            }
            (v, last, None)
        })
    };
    let mut clients = Vec::with_capacity(n);
    let t0 = Instant::now();
    let mut failure = None;
    for i in 0..n {
        if t0.elapsed() > budget {
            failure = Some(format!(
                "connect budget of {} s spent after {i} of {n} connections",
                budget.as_secs()
            ));
            break;
        }
        match connect(i) {
            Ok(c) => clients.push(c),
            Err(e) => {
                failure = Some(format!("connect {i}: {e}"));
                break;
            }
        }
        REACHED.store(i + 1, Ordering::Relaxed);
        if (i + 1) % 1000 == 0 {
            eprintln!(
                "scale: {} connected in {:.1} s",
                i + 1,
                t0.elapsed().as_secs_f64()
            );
        }
    }
    let connect_s = t0.elapsed().as_secs_f64();
    target.store(clients.len(), Ordering::SeqCst);
    phase("accept the rest");
    let (mut servers, last, err) = acceptor
        .join()
        .map_err(|_| anyhow!("accept thread panicked"))?;
    let k = clients.len();
    kv("connected", k);
    kv("accepted", servers.len());
    let accept_s = (last.unwrap_or(t0) - t0).as_secs_f64();
    kv("connect_s", format!("{connect_s:.2}"));
    kv("accept_s", format!("{accept_s:.2}"));
    kv(
        "accepts_per_s",
        format!("{:.0}", servers.len() as f64 / accept_s),
    );
    if let Some(e) = err {
        kv("error", &e);
        bail!("{e}");
    }

    phase("echo");
    for (i, c) in clients.iter_mut().enumerate() {
        c.write_all(&[i as u8])
            .with_context(|| format!("client {i} write"))?;
    }
    let mut b = [0u8; 1];
    for (i, s) in servers.iter_mut().enumerate() {
        s.read_exact(&mut b)
            .with_context(|| format!("server {i} read"))?;
        s.write_all(&b)
            .with_context(|| format!("server {i} write"))?;
    }
    let mut alive = 0;
    for (i, c) in clients.iter_mut().enumerate() {
        c.read_exact(&mut b)
            .with_context(|| format!("client {i} read"))?;
        if b[0] == i as u8 {
            alive += 1;
        }
        REACHED.store(alive, Ordering::Relaxed);
    }
    let rss = rss_kib();
    kv("peak_concurrent", alive);
    kv("rss_kib_delta", rss - rss0);
    kv(
        "rss_kib_per_conn",
        format!("{:.1}", (rss - rss0) as f64 / k.max(1) as f64),
    );

    phase("close");
    let t = Instant::now();
    // Server side first: TIME_WAIT then stays on the listener's port, where it does not slow
    // down the kernel's choice of ephemeral ports for the next run.
    drop(servers);
    drop(clients);
    kv(
        "close_ms",
        format!("{:.0}", t.elapsed().as_secs_f64() * 1e3),
    );
    if let Some(f) = failure {
        kv("error", &f);
        bail!("{f}");
    }
    if alive != k {
        bail!("only {alive} of {k} connections echoed");
    }
    Ok(())
}

/// Client stacks for the conns bench: each holds at most this many connections.
const CONNS_PER_CLIENT: usize = 5000;

fn conns_ours(n: usize, budget: Duration) -> Result<()> {
    // Per connection: both ends of the client's pair and of the server's pair.
    let n = fit_fds(n, 4);
    let vnl = mem("conns");
    let server = Stack::new(&vnl, None)?;
    server.cmd("ip link set vde0 up; ip addr add 10.3.0.1/16 dev vde0")?;
    let k = n.div_ceil(CONNS_PER_CLIENT).max(1);
    let mut clients = Vec::new();
    for i in 0..k {
        let c = Stack::new(&vnl, None)?;
        c.cmd(&format!(
            "ip link set vde0 up; ip addr add 10.3.1.{}/16 dev vde0",
            i + 1
        ))?;
        clients.push(c);
    }
    kv("conns", n);
    kv("client_stacks", k);
    let l = TcpListener::bind(&server, "0.0.0.0:7")?;
    conns(
        n,
        budget,
        l.as_raw_fd(),
        |i| TcpStream::connect(&clients[i % k], "10.3.0.1:7"),
        move || l.accept().map(|(s, _)| s),
    )
}

fn conns_kernel(n: usize, budget: Duration) -> Result<()> {
    let n = fit_fds(n, 2);
    kv("conns", n);
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    // std listens with a backlog of 128; a full backlog drops SYNs, which costs a 1 s
    // retransmission. Linux takes a second listen() as a new backlog (capped by somaxconn).
    // SAFETY: listen on a socket we own.
    unsafe { libc::listen(l.as_raw_fd(), 4096) };
    let a = l.local_addr()?;
    conns(
        n,
        budget,
        l.as_raw_fd(),
        |_| std::net::TcpStream::connect(a),
        move || l.accept().map(|(s, _)| s),
    )
}

fn cpu_ms() -> f64 {
    // SAFETY: getrusage fills the struct we pass.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| t.tv_sec as f64 * 1e3 + t.tv_usec as f64 / 1e3;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// The engine thread's /proc status file.
fn engine_task() -> Result<String> {
    for e in std::fs::read_dir("/proc/self/task")? {
        let p = e?.path();
        if std::fs::read_to_string(p.join("comm"))?.trim() == "vdestack-engine" {
            return Ok(p.join("status").display().to_string());
        }
    }
    bail!("no vdestack-engine thread in /proc/self/task")
}

/// 2d: N stacks with listeners and a few established connections, left alone for `secs`.
fn idle(n: usize, secs: u64) -> Result<()> {
    let n = fit_fds(n, 2);
    let vnl = mem("idle");
    phase("setup");
    let mut st = Vec::new();
    let mut ls = Vec::new();
    for i in 0..n.max(2) {
        let s = Stack::new(&vnl, None)?;
        s.cmd(&format!(
            "ip link set vde0 up; ip addr add {}/8 dev vde0",
            addr(i)
        ))?;
        ls.push(TcpListener::bind(&s, "0.0.0.0:7")?);
        st.push(s);
    }
    let mut conns = Vec::new();
    for (i, l) in ls.iter().enumerate().skip(1).take(4) {
        let mut c = TcpStream::connect(&st[0], (addr(i), 7))?;
        let (mut a, _) = l.accept()?;
        let mut b = [0u8; 1];
        c.write_all(b"x")?;
        a.read_exact(&mut b)?;
        a.write_all(b"y")?;
        c.read_exact(&mut b)?;
        conns.push((c, a));
    }
    kv("idle_stacks", st.len());
    kv("idle_conns", conns.len());
    // Let delayed ACKs and the like go out before the quiet window starts.
    std::thread::sleep(Duration::from_millis(500));
    phase("idle");
    let task = engine_task()?;
    let vol = || status_field(&task, "voluntary_ctxt_switches:").unwrap_or(0);
    let nonvol = || status_field(&task, "nonvoluntary_ctxt_switches:").unwrap_or(0);
    let (c0, v0, n0) = (cpu_ms(), vol(), nonvol());
    std::thread::sleep(Duration::from_secs(secs));
    let (c1, v1, n1) = (cpu_ms(), vol(), nonvol());
    kv("idle_s", secs);
    kv("cpu_ms_idle", format!("{:.1}", c1 - c0));
    kv("wakeups", v1 - v0);
    kv("engine_nonvoluntary_switches", n1 - n0);
    drop(conns);
    Ok(())
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let num = |i: usize, d: u64| -> u64 {
        args.get(i).map_or(d, |s| {
            s.parse().unwrap_or_else(|_| {
                eprintln!("scale: bad number {s:?}");
                std::process::exit(2)
            })
        })
    };
    let secs = Duration::from_secs;
    let r = match args.first().map(String::as_str) {
        Some("stacks") => {
            watchdog(num(3, 300));
            stacks(num(1, 10_000) as usize, secs(num(2, 120)))
        }
        Some("bulk") => {
            watchdog(num(3, 120));
            bulk_all(num(1, 1024), num(2, 10) as f64)
        }
        Some("conns") => {
            watchdog(num(3, 300));
            conns_ours(num(1, 10_000) as usize, secs(num(2, 120)))
        }
        Some("kconns") => {
            watchdog(num(3, 300));
            conns_kernel(num(1, 10_000) as usize, secs(num(2, 120)))
        }
        Some("idle") => {
            watchdog(num(3, 120));
            idle(num(1, 100) as usize, num(2, 5))
        }
        _ => Err(anyhow!(
            "usage: scale stacks|bulk|conns|kconns|idle [ARGS] (see the source)"
        )),
    };
    if let Err(e) = r {
        eprintln!(
            "scale: FAILED (last phase: {}): {e:#}",
            *PHASE.lock().unwrap_or_else(|e| e.into_inner())
        );
        std::process::exit(1);
    }
    if let Some(m) = DEFERRED.lock().unwrap().take() {
        kv("error", &m);
        eprintln!("scale: FAILED: {m}");
        std::process::exit(1);
    }
}
