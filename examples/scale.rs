//! Scale figures for `scripts/bench`, printed as `key=value` lines on stdout (progress and
//! errors on stderr). Every sub-bench runs under a watchdog: when it runs out of time it
//! prints what it reached and exits with status 124; any error exits non-zero.
//!
//! ```text
//! scale stacks N [BUDGET_S] [TIMEOUT_S]  N stacks on one mem:// segment, a listener each;
//!                                        stack 0 connects to every other one
//! scale bulk MIB SECS [TIMEOUT_S]        bulk TCP between two stacks on mem://, next to a
//!                                        socketpair and kernel loopback TCP (127.0.0.1)
//! scale conns N [BUDGET_S] [TIMEOUT_S] [WINDOW]
//!                                        N concurrent connections into one stack, from a
//!                                        stack in another process over a vdeplug4 switch,
//!                                        WINDOW connects in flight (default 64)
//! scale kconns N [BUDGET_S] [TIMEOUT_S] [WINDOW]
//!                                        the same with the kernel's TCP on 127.0.0.1
//! scale tconns N [BUDGET_S] [TIMEOUT_S] [WINDOW] [BACKLOG]
//!                                        N concurrent connections into one stack on a TAP
//!                                        link, from the kernel's TCP in a network
//!                                        namespace made for the run (needs root); the
//!                                        stack listens with BACKLOG (default 4096, as
//!                                        conns and kconns)
//! scale idle N SECS [TIMEOUT_S]          CPU time and engine wake-ups of N idle stacks
//! ```
//!
//! BUDGET_S bounds the connect phase: when it runs out, the bench stops connecting, reports
//! how far it got, then fails.
//!
//! Every stack socket is a socketpair, and RLIMIT_NOFILE may be as low as 20,000 with no
//! way to raise it. So the benches with 10,000 sockets keep no process above one fd per
//! socket: the engine (the process that created the stacks) holds the engine ends, and
//! forked children hold the application ends. A child reaches its parent's engine over the
//! control socket; it never creates stacks, and it never drops a `Stack` (that would end
//! the stack): it leaves with `_exit`.
//!
//! `tconns` touches the kernel's network only inside a network namespace of its own
//! (`vdsb-<pid>`, removed at the end on every path, the watchdog's too): the TAP device is
//! opened in the root namespace down and without an address, moved into the namespace at
//! once, and configured only there; the kernel's clients run there and talk only to the
//! stack's address on that link. Nothing is added to the root namespace.

use std::io::{self, Read, Write};
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
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
    *lock(&PHASE) = p;
    REACHED.store(0, Ordering::Relaxed);
    // One write, so that lines of processes running at once do not mix.
    let line = format!("scale: {}: {p}\n", *lock(&ROLE));
    let _ = io::stderr().write_all(line.as_bytes());
}

/// Whether this process printed an `error=` line.
static ERROR_SAID: AtomicBool = AtomicBool::new(false);

fn kv(k: &str, v: impl std::fmt::Display) {
    if k == "error" {
        ERROR_SAID.store(true, Ordering::Relaxed);
    }
    println!("{k}={v}");
}

/// When every process of the run must be done. A forked child's watchdog fires a second
/// before its parent's, so that the innermost process says where it was.
static DEADLINE: Mutex<Option<Instant>> = Mutex::new(None);
/// Which process of the run this is, for messages.
static ROLE: Mutex<&str> = Mutex::new("main");
/// The switch's directory, removed if the watchdog ends the run.
static SWITCH_DIR: Mutex<Option<String>> = Mutex::new(None);
/// The network namespace of the tconns bench, removed if the watchdog ends the run.
static NETNS: Mutex<Option<String>> = Mutex::new(None);

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Ends the process after `secs`, saying where it was: a hang must not go unnoticed.
fn watchdog(secs: u64) {
    *lock(&DEADLINE) = Some(Instant::now() + Duration::from_secs(secs));
    start_watchdog();
}

fn start_watchdog() {
    let Some(deadline) = *lock(&DEADLINE) else {
        return;
    };
    std::thread::spawn(move || {
        std::thread::sleep(deadline.saturating_duration_since(Instant::now()));
        let (p, role) = (*lock(&PHASE), *lock(&ROLE));
        let reached = REACHED.load(Ordering::Relaxed);
        kv("error", format!("{role}: timeout in phase {p}"));
        kv("timeout_phase", p);
        kv("timeout_reached", reached);
        eprintln!("scale: {role}: TIMEOUT in phase {p}, reached {reached}");
        die(124);
    });
}

/// Ends this process at once (no destructors: a forked child must not drop its parent's
/// stacks), with stdout flushed.
fn die(code: i32) -> ! {
    let _ = io::stdout().flush();
    if *lock(&ROLE) == "main" {
        if let Some(d) = lock(&SWITCH_DIR).take() {
            let _ = std::fs::remove_dir_all(d);
        }
        if let Some(ns) = lock(&NETNS).take() {
            remove_netns(&ns);
        }
    }
    // SAFETY: ends the process; nothing runs after it.
    unsafe { libc::_exit(code) }
}

/// A process forked by the bench.
struct Proc {
    pid: libc::pid_t,
    role: &'static str,
}

/// Forks a process that runs `f` as `role` and ends with it: status 0, or 1 after saying
/// why. It dies with the thread that forked it (PR_SET_PDEATHSIG), so a failing or timed
/// out run leaves nothing behind.
fn fork(role: &'static str, f: impl FnOnce() -> Result<()>) -> Result<Proc> {
    io::stdout().flush()?;
    // SAFETY: getpid cannot fail.
    let parent = unsafe { libc::getpid() };
    // SAFETY: the child only runs `f` and leaves with _exit; it never returns here.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        bail!("fork {role}: {}", io::Error::last_os_error());
    }
    if pid > 0 {
        return Ok(Proc { pid, role });
    }
    // SAFETY: prctl with integer arguments; getppid cannot fail.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
        if libc::getppid() != parent {
            libc::_exit(1);
        }
    }
    *lock(&ROLE) = role;
    if let Some(d) = lock(&DEADLINE).as_mut() {
        *d -= Duration::from_secs(1);
    }
    start_watchdog();
    let code = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(Ok(())) => match lock(&DEFERRED).take() {
            None => 0,
            Some(m) => {
                kv("error", format!("{role}: {m}"));
                eprintln!("scale: {role}: FAILED: {m}");
                1
            }
        },
        Ok(Err(e)) => {
            kv("error", format!("{role}: {e:#}"));
            eprintln!("scale: {role}: FAILED (phase {}): {e:#}", *lock(&PHASE));
            1
        }
        Err(_) => {
            kv("error", format!("{role}: panicked"));
            1
        }
    };
    die(code)
}

/// Waits for all of `procs`; when one fails, kills the others. Fails with the first
/// failure.
fn wait_all(mut procs: Vec<Proc>) -> Result<()> {
    let mut failure = None;
    while !procs.is_empty() {
        let mut status = 0;
        // SAFETY: waits for a child of ours.
        let pid = unsafe { libc::waitpid(-1, &mut status, 0) };
        if pid < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            bail!("waitpid: {e}");
        }
        let Some(i) = procs.iter().position(|p| p.pid == pid) else {
            continue; // the switch
        };
        let p = procs.swap_remove(i);
        let how = if libc::WIFEXITED(status) {
            match libc::WEXITSTATUS(status) {
                0 => continue,
                c => format!("exit status {c}"),
            }
        } else {
            format!("signal {}", libc::WTERMSIG(status))
        };
        failure.get_or_insert(format!("{} (pid {pid}) failed: {how}", p.role));
        for p in &procs {
            // SAFETY: kills a child of ours that has not been reaped.
            unsafe { libc::kill(p.pid, libc::SIGKILL) };
        }
    }
    match failure {
        Some(f) => bail!("{f}"),
        None => Ok(()),
    }
}

/// Open fds of process `pid`.
fn fds_of(pid: libc::pid_t) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

fn getpid() -> libc::pid_t {
    // SAFETY: getpid cannot fail.
    unsafe { libc::getpid() }
}

fn rss_kib() -> u64 {
    status_field("/proc/self/status", "VmRSS:").unwrap_or(0)
}

/// VmRSS of process `pid`, in KiB.
fn rss_of(pid: libc::pid_t) -> u64 {
    status_field(&format!("/proc/{pid}/status"), "VmRSS:").unwrap_or(0)
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
        *lock(&DEFERRED) = Some(msg);
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

/// 2a: N stacks, a listener each, stack 0 connects to all others (one byte each way, then
/// close).
///
/// This process is the engine: it creates the stacks, and keeps only the engine ends of
/// the sockets. A forked acceptor opens the listeners (so their application ends live
/// there), accepts one connection on each in turn and echoes its byte. The connections
/// from stack 0 are made here, one at a time, each closed after use.
fn stacks(n: usize, budget: Duration) -> Result<()> {
    if n < 2 {
        bail!("stacks needs N >= 2");
    }
    // Each process holds one fd per listener: its engine end or its application end.
    let n = fit_fds(n, 1);
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
    // One byte from the acceptor: its listeners are up.
    let (mut ready, ready_w) = UnixStream::pair()?;
    let acceptor = fork("acceptor", || {
        let mut ls = Vec::with_capacity(n);
        let t = Instant::now();
        for (i, s) in st.iter().enumerate() {
            ls.push(
                TcpListener::bind(s, "0.0.0.0:7").with_context(|| format!("stack {i}: listen"))?,
            );
            REACHED.store(i + 1, Ordering::Relaxed);
        }
        kv("listen_us_per_stack", us_per(t.elapsed(), n));
        (&ready_w).write_all(b"l")?;
        phase("accept+echo");
        let mut accepted = 0;
        for (i, l) in ls.iter().enumerate().skip(1) {
            let (mut a, _) = l.accept().with_context(|| format!("stack {i}: accept"))?;
            let mut b = [0u8; 1];
            a.read_exact(&mut b)
                .with_context(|| format!("stack {i}: read"))?;
            a.write_all(&b)
                .with_context(|| format!("stack {i}: write"))?;
            accepted += 1;
            REACHED.store(accepted, Ordering::Relaxed);
            if i == 1 {
                kv("fds_acceptor", fds_of(getpid()));
            }
        }
        kv("accepted", accepted);
        Ok(())
    })?;
    drop(ready_w);
    let mut b = [0u8; 1];
    if ready.read(&mut b)? == 0 {
        // The acceptor ended before its listeners were up: wait_all says why.
        wait_all(vec![acceptor])?;
        bail!("the acceptor ended before it listened");
    }
    let rss_set = rss_kib();
    kv("rss_kib_delta", rss_set - rss0);
    kv(
        "rss_kib_per_stack",
        format!("{:.1}", (rss_set - rss0) as f64 / n as f64),
    );
    kv("fds_engine", fds_of(getpid()));

    phase("connect");
    let mut connected = 0;
    let mut connect_only = Duration::ZERO;
    let mut failure = None;
    let t = Instant::now();
    let mut last_report = Instant::now();
    for i in 1..n {
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
            c.write_all(&[i as u8]).context("write")?;
            let mut b = [0u8; 1];
            c.read_exact(&mut b).context("read the echo")?;
            if b[0] != i as u8 {
                bail!("echo {} instead of {}", b[0], i as u8);
            }
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
    if failure.is_some() {
        // SAFETY: kills our own child, which wait_all reaps.
        unsafe { libc::kill(acceptor.pid, libc::SIGKILL) };
    }
    let waited = wait_all(vec![acceptor]);
    if connected != n - 1 && failure.is_none() {
        failure = Some(format!("{connected} of {} stacks connected", n - 1));
    }

    // Torn down even after a failed connect phase: its cost is a figure too. The listeners'
    // application ends went with the acceptor.
    phase("teardown");
    let t = Instant::now();
    drop(st);
    kv("teardown_us_per_stack", us_per(t.elapsed(), n));
    if let Some(f) = failure {
        kv("error", &f);
        bail!("{f}");
    }
    waited
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

/// Connections the load generator of the conns benches keeps in flight by default (like
/// wrk -c): nonblocking connects, a new one as soon as one completes.
const WINDOW: usize = 64;

/// The accepting side of 2c: accepts `n` connections on `lfd` (`accept` takes one), keeps
/// them all, then reads one byte from each and echoes it. `engine` is the process that
/// holds the stack (its RSS is the figure); the accept rate is from the first accept to
/// the n-th.
fn serve(
    n: usize,
    lfd: RawFd,
    engine: libc::pid_t,
    mut accept: impl FnMut() -> io::Result<OwnedFd>,
) -> Result<()> {
    let rss0 = rss_of(engine);
    phase("accept");
    let mut conns = Vec::with_capacity(n);
    let mut first = None;
    // Time spent inside accept calls: what one accept costs the acceptor.
    let mut in_accept = Duration::ZERO;
    while conns.len() < n {
        // Wait in poll, so that the watchdog's phase and count stay current.
        let mut p = libc::pollfd {
            fd: lfd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        if unsafe { libc::poll(&mut p, 1, 100) } <= 0 {
            continue;
        }
        let ta = Instant::now();
        let c = accept().with_context(|| format!("accept {}", conns.len()))?;
        in_accept += ta.elapsed();
        first.get_or_insert(ta);
        conns.push(c);
        REACHED.store(conns.len(), Ordering::Relaxed);
    }
    let span = first.map_or(Duration::ZERO, |f| f.elapsed());
    kv("accepted", conns.len());
    kv("accept_s", format!("{:.2}", span.as_secs_f64()));
    kv(
        "accepts_per_s",
        format!("{:.0}", (n - 1) as f64 / span.as_secs_f64().max(1e-9)),
    );
    kv("accept_call_us", us_per(in_accept, n));

    phase("echo");
    for (i, c) in conns.iter().enumerate() {
        let b = read1(c.as_raw_fd()).with_context(|| format!("connection {i}: read"))?;
        let b = b.ok_or_else(|| anyhow!("connection {i}: EOF before its byte"))?;
        write1(c.as_raw_fd(), b).with_context(|| format!("connection {i}: write"))?;
        REACHED.store(i + 1, Ordering::Relaxed);
    }
    // All n are open at once here, and each just answered.
    kv("peak_concurrent", conns.len());
    let rss = rss_of(engine);
    kv("rss_kib_delta", rss.saturating_sub(rss0));
    kv(
        "rss_kib_per_conn",
        format!("{:.1}", rss.saturating_sub(rss0) as f64 / n as f64),
    );
    if engine != getpid() {
        kv("fds_server_engine", fds_of(engine));
    }
    kv("fds_acceptor", fds_of(getpid()));

    phase("close");
    let t = Instant::now();
    // Server side first: TIME_WAIT then stays on the listener's port, where it does not slow
    // down the kernel's choice of ephemeral ports for the next run.
    drop(conns);
    kv(
        "close_ms",
        format!("{:.0}", t.elapsed().as_secs_f64() * 1e3),
    );
    Ok(())
}

/// The connecting side of 2c: opens `n` connections, `window` in flight at a time; `open(i)`
/// starts the i-th without waiting (the fd polls writable once it is decided) and
/// `so_error` reads the outcome. Then sends one byte on each and checks its echo, and waits
/// for the server to close them all. `engine` is the process holding the client stacks.
fn load(
    n: usize,
    budget: Duration,
    window: usize,
    engine: libc::pid_t,
    mut open: impl FnMut(usize) -> io::Result<OwnedFd>,
    so_error: impl Fn(RawFd) -> io::Result<i32>,
) -> Result<()> {
    kv("connect_window", window);
    phase("connect");
    // Each connect in flight, with when it started.
    let mut inflight: Vec<(usize, OwnedFd, Instant)> = Vec::with_capacity(window);
    let mut done: Vec<OwnedFd> = Vec::with_capacity(n);
    // How long each connect took, from socket() to its completion (µs).
    let mut latency: Vec<u64> = Vec::with_capacity(n);
    let mut next = 0;
    // Connects refused (RST to the SYN), and those to make again.
    let mut refused = 0;
    let mut retry = Vec::new();
    let mut pfds = Vec::with_capacity(window);
    let t0 = Instant::now();
    let mut last_report = t0;
    while done.len() < n {
        if t0.elapsed() > budget {
            kv("connected", done.len());
            bail!(
                "connect budget of {} s spent after {} of {n} connections",
                budget.as_secs(),
                done.len()
            );
        }
        while inflight.len() < window && (next < n || !retry.is_empty()) {
            let i = retry.pop().unwrap_or_else(|| {
                next += 1;
                next - 1
            });
            let started = Instant::now();
            let fd = open(i).with_context(|| format!("connect {i}"))?;
            inflight.push((i, fd, started));
        }
        pfds.clear();
        pfds.extend(inflight.iter().map(|(_, fd, _)| libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLOUT,
            revents: 0,
        }));
        // SAFETY: pfds is a valid array of its length.
        if unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, 100) } < 0 {
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                bail!("poll: {e}");
            }
            continue;
        }
        for j in (0..pfds.len()).rev() {
            if pfds[j].revents == 0 {
                continue;
            }
            let (i, fd, started) = inflight.swap_remove(j);
            match so_error(fd.as_raw_fd()) {
                Ok(0) => {
                    latency.push(started.elapsed().as_micros() as u64);
                    done.push(fd);
                }
                Ok(libc::ECONNREFUSED) if refused < n => {
                    // Counted, and the run fails for it at the end; retried so that the
                    // other figures still mean something.
                    refused += 1;
                    retry.push(i);
                }
                Ok(e) => bail!("connect {i}: {}", io::Error::from_raw_os_error(e)),
                Err(e) => bail!("connect {i}: SO_ERROR: {e}"),
            }
        }
        REACHED.store(done.len(), Ordering::Relaxed);
        if last_report.elapsed() > Duration::from_secs(5) {
            last_report = Instant::now();
            eprintln!(
                "scale: {} connected in {:.1} s",
                done.len(),
                t0.elapsed().as_secs_f64()
            );
        }
    }
    let connect_s = t0.elapsed().as_secs_f64();
    kv("connected", done.len());
    kv("connect_s", format!("{connect_s:.2}"));
    kv("connects_per_s", format!("{:.0}", n as f64 / connect_s));
    // The latency of a connect, queueing behind the others in flight included.
    latency.sort_unstable();
    let pct = |p: usize| latency[(latency.len() * p / 100).min(latency.len() - 1)];
    if !latency.is_empty() {
        kv("connect_us_p50", pct(50));
        kv("connect_us_p90", pct(90));
        kv("connect_us_p99", pct(99));
        kv("connect_us_max", latency[latency.len() - 1]);
    }
    kv("refused", refused);
    if refused > 0 {
        *lock(&DEFERRED) = Some(format!(
            "{refused} connects refused (RST) by the listener (each retried)"
        ));
    }

    phase("echo");
    for (i, c) in done.iter().enumerate() {
        vdestack::internal::sys::set_nonblocking(c.as_raw_fd(), false)?;
        write1(c.as_raw_fd(), i as u8).with_context(|| format!("connection {i}: write"))?;
    }
    let mut echoed = 0;
    for (i, c) in done.iter().enumerate() {
        match read1(c.as_raw_fd()).with_context(|| format!("connection {i}: read"))? {
            Some(b) if b == i as u8 => echoed += 1,
            Some(b) => bail!("connection {i}: echo {b} instead of {}", i as u8),
            None => bail!("connection {i}: EOF instead of the echo"),
        }
        REACHED.store(echoed, Ordering::Relaxed);
    }
    kv("echoed", echoed);
    if engine != getpid() {
        kv("fds_client_engine", fds_of(engine));
    }
    kv("fds_connector", fds_of(getpid()));

    phase("wait for the server to close");
    for (i, c) in done.iter().enumerate() {
        if let Some(b) = read1(c.as_raw_fd()).with_context(|| format!("connection {i}: read"))? {
            bail!("connection {i}: byte {b} instead of EOF");
        }
        REACHED.store(i + 1, Ordering::Relaxed);
    }
    Ok(())
}

/// Reads one byte; None at EOF.
fn read1(fd: RawFd) -> io::Result<Option<u8>> {
    let mut b = 0u8;
    loop {
        // SAFETY: reads into one byte we own.
        match unsafe { libc::read(fd, (&mut b as *mut u8).cast(), 1) } {
            1 => return Ok(Some(b)),
            0 => return Ok(None),
            _ => {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
        }
    }
}

fn write1(fd: RawFd, b: u8) -> io::Result<()> {
    loop {
        // SAFETY: writes one byte we own.
        match unsafe { libc::write(fd, (&b as *const u8).cast(), 1) } {
            1 => return Ok(()),
            _ => {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
        }
    }
}

/// A vdeplug4 switch (`vde_plug null:// switch://DIR/sw`), ended with the bench.
struct Switch {
    child: std::process::Child,
    dir: String,
}

impl Switch {
    fn start() -> Result<Switch> {
        use std::os::unix::process::CommandExt;
        let dir = format!("/tmp/vdestack-scale-{}", std::process::id());
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir).with_context(|| format!("mkdir {dir}"))?;
        *lock(&SWITCH_DIR) = Some(dir.clone());
        let sw = format!("{dir}/sw");
        let mut cmd = std::process::Command::new("vde_plug");
        cmd.args(["null://", &format!("switch://{sw}")])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        // SAFETY: prctl is async-signal-safe; the switch dies with us.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            })
        };
        let child = cmd.spawn().context("vde_plug (apt-get install vdeplug)")?;
        let mut s = Switch { child, dir };
        let t = Instant::now();
        while !std::path::Path::new(&sw).exists() {
            if let Some(st) = s.child.try_wait()? {
                bail!("vde_plug switch://{sw} ended: {st}");
            }
            if t.elapsed() > Duration::from_secs(5) {
                bail!("vde_plug switch://{sw} did not start in 5 s");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(s)
    }

    fn vnl(&self) -> String {
        format!("vde://{}/sw", self.dir)
    }
}

impl Drop for Switch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
        lock(&SWITCH_DIR).take();
    }
}

/// Client stacks for the conns bench: each holds at most this many connections.
const CONNS_PER_CLIENT: usize = 5000;

/// 2c with our stacks: two engines in two processes on one vdeplug4 switch. The server
/// engine's process forks the acceptor; the client engine's process forks the load
/// generator. Each of the four holds one fd per connection.
fn conns_ours(n: usize, budget: Duration, window: usize) -> Result<()> {
    let n = fit_fds(n, 1);
    let sw = Switch::start()?;
    let vnl = sw.vnl();
    let k = n.div_ceil(CONNS_PER_CLIENT).max(1);
    kv("conns", n);
    kv(
        "link",
        "vdeplug4 switch (vde_plug null:// switch://), two engine processes",
    );
    kv("client_stacks", k);
    kv("backlog", 4096);
    kv(
        "load",
        format!("{window} nonblocking connects in flight, from one process"),
    );

    // One byte from the server engine: it listens, and the acceptor is forked.
    let (mut ready, ready_w) = UnixStream::pair()?;
    // EOF for the server engine once the client side has ended (every process that holds
    // `quit_w` is gone): until then its connections may still have segments to send.
    let (quit, quit_w) = UnixStream::pair()?;
    let server = fork("server engine", || {
        // SAFETY: closes this process's copy; the OwnedFd is never dropped here (_exit).
        unsafe { libc::close(quit_w.as_raw_fd()) };
        let s = Stack::new(&vnl, None)?;
        s.cmd("ip link set vde0 up; ip addr add 10.3.0.1/16 dev vde0")?;
        let l = TcpListener::bind(&s, "0.0.0.0:7")?;
        // The kernel bench's backlog (kconns): a full accept queue drops SYNs, and each
        // costs the client a 1 s retransmission.
        vdestack::internal::socket::listen(l.as_raw_fd(), 4096)?;
        let engine = getpid();
        let acceptor = fork("acceptor", || {
            serve(n, l.as_raw_fd(), engine, || {
                l.accept().map(|(c, _)| c.into())
            })
        })?;
        // The acceptor holds the listener now.
        drop(l);
        (&ready_w).write_all(b"s")?;
        wait_all(vec![acceptor])?;
        phase("serve until the client side ends");
        (&quit).read_to_end(&mut Vec::new())?;
        Ok(())
    })?;
    drop(ready_w);
    let mut b = [0u8; 1];
    if ready.read(&mut b)? == 0 {
        wait_all(vec![server])?;
        bail!("the server ended before it listened");
    }
    let client = fork("client engine", || {
        let mut st = Vec::new();
        for i in 0..k {
            let c = Stack::new(&vnl, None)?;
            c.cmd(&format!(
                "ip link set vde0 up; ip addr add 10.3.1.{}/16 dev vde0",
                i + 1
            ))?;
            st.push(c);
        }
        let engine = getpid();
        let to = std::net::SocketAddr::from(([10, 3, 0, 1], 7));
        let connector = fork("connector", || {
            load(
                n,
                budget,
                window,
                engine,
                |i| {
                    let fd = st[i % k].socket(
                        libc::AF_INET,
                        libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                        0,
                    )?;
                    match vdestack::internal::socket::connect(fd.as_raw_fd(), to) {
                        Err(e) if e.raw_os_error() != Some(libc::EINPROGRESS) => Err(e),
                        _ => Ok(fd),
                    }
                },
                |fd| vdestack::internal::socket::get_opt(fd, libc::SOL_SOCKET, libc::SO_ERROR),
            )
        })?;
        wait_all(vec![connector])
    })?;
    drop(quit_w);
    let r = wait_all(vec![server, client]);
    drop(sw);
    r
}

/// 2c with the kernel's TCP on 127.0.0.1, split the same way: an accepting process and a
/// connecting one. Its RSS per connection is the accepting process's: the kernel's own
/// memory for the sockets is not in it.
fn conns_kernel(n: usize, budget: Duration, window: usize) -> Result<()> {
    let n = fit_fds(n, 1);
    kv("conns", n);
    kv(
        "load",
        format!("{window} nonblocking connects in flight, from one process"),
    );
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    // std listens with a backlog of 128; a full backlog drops SYNs, which costs a 1 s
    // retransmission. Linux takes a second listen() as a new backlog (capped by somaxconn).
    // SAFETY: listen on a socket we own.
    unsafe { libc::listen(l.as_raw_fd(), 4096) };
    let to = match l.local_addr()? {
        std::net::SocketAddr::V4(a) => a,
        a => bail!("listener on {a}"),
    };
    let server = fork("server", || {
        serve(n, l.as_raw_fd(), getpid(), || {
            l.accept().map(|(c, _)| c.into())
        })
    })?;
    drop(l);
    let client = fork("connector", || kernel_load(n, budget, window, to))?;
    wait_all(vec![server, client])
}

/// The connect phase with the kernel's TCP as client: nonblocking connects to `to`.
fn kernel_load(
    n: usize,
    budget: Duration,
    window: usize,
    to: std::net::SocketAddrV4,
) -> Result<()> {
    load(
        n,
        budget,
        window,
        getpid(),
        |_| kernel_connect(to),
        kernel_so_error,
    )
}

/// A nonblocking kernel TCP connect to `to`, in progress or done.
fn kernel_connect(to: std::net::SocketAddrV4) -> io::Result<OwnedFd> {
    // SAFETY: socket(2) with constant arguments.
    let fd = unsafe {
        libc::socket(
            libc::AF_INET,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a new fd of ours.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let sa = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: to.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(*to.ip()).to_be(),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: connect with a sockaddr_in of the size we pass.
    let r = unsafe {
        libc::connect(
            fd.as_raw_fd(),
            (&sa as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        )
    };
    if r < 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINPROGRESS) {
            return Err(e);
        }
    }
    Ok(fd)
}

/// SO_ERROR of a kernel socket: the outcome of its nonblocking connect.
fn kernel_so_error(fd: RawFd) -> io::Result<i32> {
    let mut e = 0i32;
    let mut len = std::mem::size_of::<i32>() as libc::socklen_t;
    // SAFETY: getsockopt into an int of ours.
    let r = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_ERROR,
            (&mut e as *mut i32).cast(),
            &mut len,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(e)
}

/// The prefix of the tconns bench's namespaces: `vdsb-<pid>`.
const NETNS_PREFIX: &str = "vdsb-";
/// Where `ip netns` keeps its named namespaces.
const NETNS_DIR: &str = "/run/netns";

/// Runs `ip ARGS`; fails with its stderr.
fn ip(args: &[&str]) -> Result<()> {
    let out = std::process::Command::new("ip")
        .args(args)
        .output()
        .with_context(|| format!("ip {} (apt-get install iproute2)", args.join(" ")))?;
    if !out.status.success() {
        bail!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Ends what runs in namespace `name` (never this process) and deletes it. The kernel then
/// destroys the devices inside it.
fn remove_netns(name: &str) {
    if let Ok(out) = std::process::Command::new("ip")
        .args(["netns", "pids", name])
        .output()
    {
        for pid in String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .filter_map(|p| p.parse::<libc::pid_t>().ok())
            .filter(|&p| p != getpid() && p > 1)
        {
            // SAFETY: kill(2) takes integers only; pid runs in the bench's own namespace.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
    if let Err(e) = ip(&["netns", "del", name]) {
        eprintln!("scale: {e:#}");
    }
}

/// A network namespace made for one run, `vdsb-<pid>`, deleted when dropped (and by
/// `die` when the watchdog ends the run). Its `lo` is up.
struct NetNs {
    name: String,
}

impl NetNs {
    fn create() -> Result<NetNs> {
        // SAFETY: geteuid cannot fail.
        if unsafe { libc::geteuid() } != 0 {
            bail!(
                "tconns needs root: it creates a network namespace (ip netns add) and a TAP \
                 device (CAP_SYS_ADMIN, CAP_NET_ADMIN)"
            );
        }
        // Leftovers of runs that were killed (SIGKILL leaves no time to clean up).
        for e in std::fs::read_dir(NETNS_DIR).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(pid) = name
                .strip_prefix(NETNS_PREFIX)
                .and_then(|p| p.parse::<u32>().ok())
            {
                // Gone, or a zombie that no one reaped.
                let alive = std::fs::read_to_string(format!("/proc/{pid}/stat"))
                    .ok()
                    .and_then(|st| st.rsplit_once(')').map(|(_, r)| r.trim_start().to_owned()))
                    .is_some_and(|r| !r.starts_with(['Z', 'X']));
                if !alive {
                    eprintln!("scale: removing {name}, left by a run that is gone");
                    remove_netns(&name);
                }
            }
        }
        let name = format!("{NETNS_PREFIX}{}", std::process::id());
        if std::path::Path::new(NETNS_DIR).join(&name).exists() {
            remove_netns(&name); // a leftover of a run with our pid
        }
        // Known to `die` before it exists, so that no moment leaves it behind.
        *lock(&NETNS) = Some(name.clone());
        if let Err(e) = ip(&["netns", "add", &name]) {
            lock(&NETNS).take();
            return Err(e);
        }
        let ns = NetNs { name };
        ns.ip(&["link", "set", "dev", "lo", "up"])?;
        Ok(ns)
    }

    /// `ip -n NS ARGS`: runs in the namespace.
    fn ip(&self, args: &[&str]) -> Result<()> {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend_from_slice(args);
        ip(&all)
    }

    /// Moves `dev` from the root namespace into this one, and checks that it left.
    fn move_link(&self, dev: &str) -> Result<()> {
        ip(&["link", "set", "dev", dev, "netns", &self.name])?;
        if ip(&["link", "show", "dev", dev]).is_ok() {
            bail!("{dev} is still in the root namespace");
        }
        self.ip(&["link", "show", "dev", dev])
    }

    /// Moves the calling thread into the namespace (its new sockets are the namespace's).
    fn enter(&self) -> Result<()> {
        let path = format!("{NETNS_DIR}/{}", self.name);
        let f = std::fs::File::open(&path).with_context(|| format!("open {path}"))?;
        // SAFETY: setns on an fd we own.
        if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } < 0 {
            bail!("setns {path}: {}", io::Error::last_os_error());
        }
        Ok(())
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        remove_netns(&self.name);
        lock(&NETNS).take();
    }
}

/// 2c over TAP: N concurrent connections into one stack whose link is a TAP device, from
/// the kernel's TCP in a network namespace made for the run. This process is the engine;
/// a forked acceptor holds the accepted sockets, a forked connector in the namespace makes
/// the kernel's connections. Each holds one fd per connection.
fn conns_tap(n: usize, budget: Duration, window: usize, backlog: i32) -> Result<()> {
    let n = fit_fds(n, 1);
    kv("conns", n);
    kv("link", "TAP, kernel TCP clients in a network namespace");
    kv(
        "load",
        format!("{window} nonblocking connects in flight, from one process"),
    );

    phase("netns");
    let ns = NetNs::create()?;
    kv("netns", &ns.name);
    let dev = format!("vdsb{}", std::process::id());
    // Opened in the root namespace, down and without an address, and moved out at once.
    let s = Stack::new(&format!("tap://{dev}"), None).with_context(|| format!("tap://{dev}"))?;
    ns.move_link(&dev)?;
    ns.ip(&["link", "set", "dev", &dev, "up"])?;
    ns.ip(&["addr", "add", "10.4.0.1/16", "dev", &dev])?;
    s.cmd("ip link set vde0 up; ip addr add 10.4.0.2/16 dev vde0")?;
    // TcpListener::bind, by hand, so that the backlog can be chosen. A full accept queue
    // drops SYNs, as Linux's does: the kernel's clients send them again after 1 s.
    kv("backlog", backlog);
    let l = s.socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0)?;
    vdestack::internal::socket::bind(l.as_raw_fd(), "10.4.0.2:7".parse()?)?;
    vdestack::internal::socket::listen(l.as_raw_fd(), backlog)?;

    let engine = getpid();
    let acceptor = fork("acceptor", || {
        serve(n, l.as_raw_fd(), engine, || {
            vdestack::internal::socket::accept(l.as_raw_fd(), libc::SOCK_CLOEXEC).map(|(c, _)| c)
        })
    })?;
    // The acceptor holds the listener now.
    drop(l);
    let to = std::net::SocketAddrV4::new(Ipv4Addr::new(10, 4, 0, 2), 7);
    let connector = fork("connector", || {
        ns.enter()?;
        kernel_load(n, budget, window, to)
    })?;
    // The engine serves until both sides are done.
    let r = wait_all(vec![acceptor, connector]);
    drop(s);
    drop(ns);
    r
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
        Some(b @ ("conns" | "kconns" | "tconns")) => {
            watchdog(num(3, 300));
            let (n, budget) = (num(1, 10_000) as usize, secs(num(2, 120)));
            let window = num(4, WINDOW as u64) as usize;
            match b {
                "conns" => conns_ours(n, budget, window),
                "kconns" => conns_kernel(n, budget, window),
                _ => conns_tap(n, budget, window, num(5, 4096) as i32),
            }
        }
        Some("idle") => {
            watchdog(num(3, 120));
            idle(num(1, 100) as usize, num(2, 5))
        }
        _ => Err(anyhow!(
            "usage: scale stacks|bulk|conns|kconns|tconns|idle [ARGS] (see the source)"
        )),
    };
    if let Err(e) = r {
        if !ERROR_SAID.load(Ordering::Relaxed) {
            kv("error", format!("{e:#}"));
        }
        eprintln!("scale: FAILED (last phase: {}): {e:#}", *lock(&PHASE));
        die(1);
    }
    if let Some(m) = lock(&DEFERRED).take() {
        kv("error", &m);
        eprintln!("scale: FAILED: {m}");
        die(1);
    }
    die(0)
}
