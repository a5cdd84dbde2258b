//! Faults are survived (issue 10, part 4), with real switches and processes:
//! - a switch killed and started again at the same path: the links reconnect by themselves
//!   (NO-CARRIER meanwhile), and a TCP connection idle across the outage still works;
//! - a process holding 1,000 stack sockets is SIGKILLed: the engine frees them all, and the
//!   peers see the connections end;
//! - the engine at its fd limit: socket() and accept() fail with EMFILE, all else goes on;
//! - one stopped switch delays no other stack's link from opening.
//!
//! Network safety: the switches have no uplink; traffic goes between the test's own stacks.
//! A missing `vde_switch` / `vde_plug` fails the test naming its Debian package.

#[path = "support/programs.rs"]
mod programs;
#[path = "support/switch.rs"]
mod switch;

use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::process::Stdio;
use std::time::{Duration, Instant};

use switch::Switch;
use vdestack::net::{TcpListener, TcpStream};
use vdestack::Stack;

/// Two stacks on `vnl`, up, with 10.0.0.1/24 and 10.0.0.2/24.
fn pair(vnl: &str) -> (Stack, Stack) {
    let a = Stack::new(vnl, None).unwrap_or_else(|e| panic!("stack a on {vnl}: {e}"));
    let b = Stack::new(vnl, None).unwrap_or_else(|e| panic!("stack b on {vnl}: {e}"));
    for (s, n) in [(&a, 1), (&b, 2)] {
        s.cmd(&format!(
            "ip link set vde0 up; ip addr add 10.0.0.{n}/24 dev vde0"
        ))
        .unwrap_or_else(|e| panic!("configure stack {n} on {vnl}: {e}"));
    }
    (a, b)
}

/// Waits up to `limit` for `ok`, failing with `what` and the last thing `ok` saw.
fn wait_for(limit: Duration, what: &str, mut ok: impl FnMut() -> Result<(), String>) {
    let deadline = Instant::now() + limit;
    loop {
        match ok() {
            Ok(()) => return,
            Err(seen) if Instant::now() >= deadline => {
                panic!("{what}: not within {limit:?}: {seen}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
}

/// Whether `fd` turns readable within `limit`.
fn readable(fd: &impl AsRawFd, limit: Duration) -> bool {
    let mut p = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd for the duration of the call.
    unsafe { libc::poll(&mut p, 1, limit.as_millis() as libc::c_int) > 0 }
}

/// Reads exactly `want.len()` bytes within `limit` and checks them.
fn expect_bytes(s: &mut TcpStream, want: &[u8], limit: Duration) {
    let deadline = Instant::now() + limit;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while got.len() < want.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            readable(s, left),
            "{} of {} bytes within {limit:?}",
            got.len(),
            want.len()
        );
        let n = s.read(&mut buf).expect("read");
        assert!(n > 0, "EOF after {} of {} bytes", got.len(), want.len());
        got.extend_from_slice(&buf[..n]);
    }
    assert_eq!(got, want);
}

fn link_show(s: &Stack) -> String {
    s.cmd_output("ip link show vde0").expect("ip link show")
}

/// A switch killed and started again at the same path. The links lose carrier, ask for a
/// port again with backoff, and get one from the new switch; a TCP connection that stayed
/// idle across the outage moves data both ways after it.
fn survive_restart(mut sw: Switch, vnl: &str, outage: Duration) {
    let (a, b) = pair(vnl);
    let l = TcpListener::bind(&a, "10.0.0.1:7300").expect("listen");
    let mut client = TcpStream::connect(&b, "10.0.0.1:7300").expect("connect");
    let (mut server, _) = l.accept().expect("accept");
    client.write_all(b"before").unwrap();
    expect_bytes(&mut server, b"before", Duration::from_secs(5));

    let killed = Instant::now();
    sw.kill();
    for s in [&a, &b] {
        wait_for(Duration::from_secs(2), "NO-CARRIER after the kill", || {
            let out = link_show(s);
            (out.contains("<NO-CARRIER,BROADCAST,MULTICAST,UP>") && out.contains("state DOWN"))
                .then_some(())
                .ok_or(out)
        });
    }
    std::thread::sleep(outage.saturating_sub(killed.elapsed()));
    sw.restart();
    let restarted = Instant::now();
    for s in [&a, &b] {
        // Backoff: 50 ms doubling to at most 2 s between tries.
        wait_for(Duration::from_secs(5), "carrier after the restart", || {
            let out = link_show(s);
            out.contains(",UP,LOWER_UP> ").then_some(()).ok_or(out)
        });
    }
    eprintln!(
        "{vnl}: down {:?}, carrier back {:?} after the restart",
        restarted - killed,
        restarted.elapsed()
    );
    // The idle connection carries data both ways.
    client.write_all(b"after, b to a").unwrap();
    expect_bytes(&mut server, b"after, b to a", Duration::from_secs(10));
    server.write_all(b"after, a to b").unwrap();
    expect_bytes(&mut client, b"after, a to b", Duration::from_secs(10));
    // And a new connection opens.
    let mut c2 = TcpStream::connect(&b, "10.0.0.1:7300").expect("connect after");
    let (mut s2, _) = l.accept().expect("accept after");
    c2.write_all(b"new").unwrap();
    expect_bytes(&mut s2, b"new", Duration::from_secs(5));
}

#[test]
fn a_vde_switch_restarted_is_reconnected() {
    let sw = Switch::vde_switch();
    let vnl = sw.vnl();
    survive_restart(sw, &vnl, Duration::from_secs(3));
}

#[test]
fn a_vdeplug_switch_restarted_is_reconnected() {
    let sw = Switch::vdeplug();
    let vnl = sw.vnl();
    survive_restart(sw, &vnl, Duration::from_secs(3));
}

/// The same through libvdeplug (a locator with parameters is not spoken to directly).
#[test]
fn a_vde_switch_restarted_is_reconnected_through_libvdeplug() {
    let sw = Switch::vde_switch();
    let vnl = format!("{}[]", sw.vnl());
    survive_restart(sw, &vnl, Duration::from_secs(3));
}

/// A stack on a stopped switch waits for its port on an opener thread; a stack made after
/// it on a live switch gets its own port at once, not after the first one's wait (5 s).
#[test]
fn a_stopped_switch_delays_no_other_stacks_link() {
    let stopped = Switch::vdeplug();
    let live = Switch::vde_switch();
    stopped.killer().signal(libc::SIGSTOP);
    let waiting = Stack::new(&stopped.vnl(), None).expect("a stack on the stopped switch");
    waiting.cmd("ip link set vde0 up").unwrap();
    let t = Instant::now();
    let (a, b) = pair(&live.vnl());
    for s in [&a, &b] {
        wait_for(Duration::from_secs(2), "carrier on the live switch", || {
            let out = link_show(s);
            out.contains(",UP,LOWER_UP> ").then_some(()).ok_or(out)
        });
    }
    let opened = t.elapsed();
    let l = TcpListener::bind(&a, "10.0.0.1:7301").expect("listen");
    let mut c = TcpStream::connect(&b, "10.0.0.1:7301").expect("connect");
    let (mut s, _) = l.accept().expect("accept");
    c.write_all(b"ping").unwrap();
    expect_bytes(&mut s, b"ping", Duration::from_secs(2));
    eprintln!("ports on the live switch open after {opened:?}");
    let out = link_show(&waiting);
    assert!(out.contains("NO-CARRIER"), "no port yet: {out}");
    stopped.killer().signal(libc::SIGCONT);
    wait_for(Duration::from_secs(5), "carrier once resumed", || {
        let out = link_show(&waiting);
        out.contains(",LOWER_UP> ").then_some(()).ok_or(out)
    });
}

/// How many fds process `pid` holds.
fn fds_of(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// The "Total: N" of `ss -s` on a stack: its sockets, orphans included.
fn sockets_of(s: &Stack) -> usize {
    let out = s.cmd_output("ss -s").expect("ss -s");
    out.lines()
        .find_map(|l| l.strip_prefix("Total: "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no total in {out}"))
}

/// The holder: shows where its stack is, waits for a line, then a child of it (so that
/// `vdestack run` outlives the holder's death) opens N connections, says so, and sleeps.
const HOLDER: &str = r#"
import os, socket, sys, time
n = int(sys.argv[1])
print("stack", os.environ["VDESTACK_CTL"], os.environ["VDESTACK_STACK"],
      os.environ["VDESTACK_KEY"], flush=True)
sys.stdin.readline()
if os.fork():
    while True:
        time.sleep(60)
socks = [socket.create_connection(("10.0.0.1", 7400)) for _ in range(n)]
print("holder", os.getpid(), len(socks), flush=True)
while True:
    time.sleep(60)
"#;

/// A process holding 1,000 stack sockets is SIGKILLed: the engine that served it (in
/// `vdestack run`) frees them all, back to its fd and socket counts from before, and each
/// peer, a stack in this process, sees its connection end.
/// (The engine holds its end of a dead process's pair until the connection is closed, where
/// Linux frees the fd at once and keeps an orphan socket.)
#[test]
fn a_killed_process_s_sockets_are_freed_and_their_peers_see_the_end() {
    const N: usize = 1000;
    let sw = Switch::vde_switch();
    let peer = Stack::new(&sw.vnl(), None).unwrap();
    peer.cmd("ip link set vde0 up; ip addr add 10.0.0.1/24 dev vde0")
        .unwrap();
    let l = TcpListener::bind(&peer, "10.0.0.1:7400").expect("listen");
    vdestack::internal::socket::listen(l.as_raw_fd(), N as i32).expect("backlog");
    let dir = programs::WorkDir::new();
    let mut cmd = programs::run_cmd(Some(&sw.vnl()), &["eth,ip=10.0.0.2/24"]);
    cmd.arg(programs::python3())
        .arg("-c")
        .arg(HOLDER)
        .arg(N.to_string())
        .stdin(Stdio::piped());
    let mut run = programs::Proc::spawn("holder", cmd, dir.path());
    run.wait_for("stack ", Duration::from_secs(20));
    let out = run.stdout();
    let f: Vec<&str> = out.split_whitespace().collect();
    let theirs = {
        // The program hands the test the key it was given: the engine serves only those.
        let key = vdestack::internal::control::key::from_hex(f[3]).expect("the stack's key");
        vdestack::internal::control::key::remember(f[1].as_bytes(), key);
        Stack::attach(
            vdestack::internal::control::Ctl::from_name(f[1].as_bytes().to_vec()),
            f[2].parse().expect("stack id"),
        )
    };
    let engine = run.pid();
    // (Asking for the sockets first: this thread's control connection is an fd of the engine.)
    let socks0 = sockets_of(&theirs);
    let fds0 = fds_of(engine);

    run.write_stdin(b"go\n");
    let mut accepted = Vec::new();
    let t = Instant::now();
    while accepted.len() < N {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "{} accepted",
            accepted.len()
        );
        accepted.push(l.accept().expect("accept").0);
    }
    run.wait_for("holder ", Duration::from_secs(30));
    let holder: libc::pid_t = run
        .stdout()
        .lines()
        .find_map(|l| l.strip_prefix("holder "))
        .and_then(|l| l.split_whitespace().next()?.parse().ok())
        .expect("the holder's pid");
    let (fds1, socks1) = (fds_of(engine), sockets_of(&theirs));
    assert!(
        fds1 >= fds0 + N,
        "engine fds {fds0} → {fds1} with {N} sockets"
    );
    assert!(socks1 >= socks0 + N, "stack sockets {socks0} → {socks1}");

    // SAFETY: kill(2) on the holder, a process of the test's own group.
    assert_eq!(unsafe { libc::kill(holder, libc::SIGKILL) }, 0);
    let killed = Instant::now();
    // Every peer sees its connection end: EOF or a reset.
    for (i, c) in accepted.iter_mut().enumerate() {
        let left = Duration::from_secs(20).saturating_sub(killed.elapsed());
        assert!(readable(c, left), "connection {i}: no end within 20 s");
        let mut b = [0u8; 16];
        match c.read(&mut b) {
            Ok(0) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
            r => panic!("connection {i}: {r:?}, want EOF or ECONNRESET"),
        }
    }
    let ended = killed.elapsed();
    // The peers close in turn, as programs do on EOF; the engine frees all of it once the
    // connections are through TIME-WAIT (smoltcp: 10 s). (Peers that never close would keep
    // the holder's ends in FIN-WAIT-2 until its timeout.)
    drop(accepted);
    wait_for(
        Duration::from_secs(30),
        "the engine back to its baseline",
        || {
            let (fds, socks) = (fds_of(engine), sockets_of(&theirs));
            (fds == fds0 && socks == socks0)
                .then_some(())
                .ok_or(format!(
                    "fds {fds} (was {fds0}), sockets {socks} (was {socks0})"
                ))
        },
    );
    eprintln!(
        "{N} sockets: engine fds {fds0} → {fds1} → {}, stack sockets {socks0} → {socks1} → {}; \
         peers saw the end within {ended:?}, all freed within {:?}",
        fds_of(engine),
        sockets_of(&theirs),
        killed.elapsed()
    );
}

/// The program for the fd-limit test: one step per line on stdin, a line on stdout after each.
const AT_LIMIT: &str = r#"
import errno, os, resource, select, socket, sys, time
def name(e):
    return errno.errorcode.get(e.errno, str(e.errno))
def step(*what):
    print(*what, flush=True)
    sys.stdin.readline()
L = socket.socket()
L.bind(("10.0.0.2", 7500))
L.listen(16)
C = socket.create_connection(("10.0.0.1", 7501))
def echo(tag):
    C.sendall(tag)
    got = b""
    while len(got) < len(tag):
        got += C.recv(100)
    assert got == tag, got
echo(b"first")
step("ready")
# The engine is at its limit now.
extra = []
try:
    while len(extra) < 100000:
        extra.append(socket.socket())
    print("socket: no error", flush=True)
except OSError as e:
    print("socket", name(e), len(extra), flush=True)
echo(b"at the limit")
print("echo ok", flush=True)
select.select([L], [], [], 20)
try:
    L.accept()
    print("accept: no error", flush=True)
except OSError as e:
    print("accept", name(e), flush=True)
for s in extra:
    s.close()
t = time.monotonic()
while True:
    try:
        socket.socket().close()
        break
    except OSError as e:
        if time.monotonic() - t > 5:
            raise
        time.sleep(0.01)
print("socket again after %.3f s" % (time.monotonic() - t), flush=True)
step("accept-again")
c, _ = L.accept()
c.sendall(c.recv(100))
c.close()
# This process at its own limit.
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (len(os.listdir("/proc/self/fd")) + 4, hard))
files = []
try:
    while True:
        files.append(open("/dev/null"))
except OSError as e:
    print("files", name(e), flush=True)
step("own-limit")
select.select([L], [], [], 20)
try:
    L.accept()
    print("accept at own limit: no error", flush=True)
except OSError as e:
    print("accept at own limit", name(e), flush=True)
files.pop().close()
c, _ = L.accept()
print("queued connection kept:", c.recv(100).decode(), flush=True)
"#;

/// Sets the soft RLIMIT_NOFILE of process `pid`.
fn set_fd_limit(pid: u32, soft: u64) {
    let mut old = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: prlimit reading into a valid rlimit.
    let r = unsafe {
        libc::prlimit(
            pid as libc::pid_t,
            libc::RLIMIT_NOFILE,
            std::ptr::null(),
            &mut old,
        )
    };
    assert_eq!(r, 0, "prlimit: {}", std::io::Error::last_os_error());
    let new = libc::rlimit {
        rlim_cur: soft,
        rlim_max: old.rlim_max,
    };
    // SAFETY: prlimit with a valid new limit.
    let r = unsafe {
        libc::prlimit(
            pid as libc::pid_t,
            libc::RLIMIT_NOFILE,
            &new,
            std::ptr::null_mut(),
        )
    };
    assert_eq!(r, 0, "prlimit: {}", std::io::Error::last_os_error());
}

/// The engine at its fd limit (RLIMIT_NOFILE of `vdestack run`'s process lowered):
/// socket() and accept() fail with EMFILE in the program, an open connection keeps moving
/// data, and once fds are free again new sockets and connections work. Then the program
/// at its own limit: accept() fails with EMFILE and the connection stays queued.
#[test]
fn at_the_fd_limit_socket_and_accept_fail_with_emfile_and_all_else_goes_on() {
    let sw = Switch::vde_switch();
    let peer = Stack::new(&sw.vnl(), None).unwrap();
    peer.cmd("ip link set vde0 up; ip addr add 10.0.0.1/24 dev vde0")
        .unwrap();
    let echo = TcpListener::bind(&peer, "10.0.0.1:7501").expect("listen");
    std::thread::spawn(move || {
        let (mut c, _) = echo.accept().expect("accept");
        let mut b = [0u8; 100];
        while let Ok(n) = c.read(&mut b) {
            if n == 0 || c.write_all(&b[..n]).is_err() {
                break;
            }
        }
    });
    let dir = programs::WorkDir::new();
    let mut cmd = programs::run_cmd(Some(&sw.vnl()), &["eth,ip=10.0.0.2/24"]);
    cmd.arg(programs::python3())
        .arg("-c")
        .arg(AT_LIMIT)
        .stdin(Stdio::piped());
    let mut run = programs::Proc::spawn("at-limit", cmd, dir.path());
    let limit = Duration::from_secs(30);
    run.wait_for("ready", limit);
    set_fd_limit(run.pid(), fds_of(run.pid()) as u64 + 8);
    run.write_stdin(b"\n");
    run.wait_for("echo ok", limit);
    // A connection the engine has no fd for: reset, and accept() says EMFILE.
    match TcpStream::connect(&peer, "10.0.0.2:7500") {
        Ok(mut c) => {
            assert!(readable(&c, limit), "the refused connection does not end");
            let mut b = [0u8; 8];
            let r = c.read(&mut b);
            assert!(
                matches!(&r, Ok(0))
                    || r.as_ref()
                        .is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionReset),
                "{r:?}"
            );
        }
        Err(e) => eprintln!("connect at the engine's limit: {e}"),
    }
    // Still at the same limit: the fds the program gave back are free again.
    run.wait_for("socket again", limit);
    run.write_stdin(b"\n");
    let mut c = TcpStream::connect(&peer, "10.0.0.2:7500").expect("connect once fds are free");
    c.write_all(b"hello").unwrap();
    expect_bytes(&mut c, b"hello", limit);
    run.wait_for("own-limit", limit);
    run.write_stdin(b"\n");
    let mut c = TcpStream::connect(&peer, "10.0.0.2:7500").expect("connect");
    c.write_all(b"kept").unwrap();
    run.wait_for("queued connection kept", limit);
    let out = run.stdout();
    eprintln!("{out}");
    for want in [
        "socket EMFILE",
        "echo ok",
        "accept EMFILE",
        "files EMFILE",
        "accept at own limit EMFILE",
        "queued connection kept: kept",
    ] {
        assert!(out.contains(want), "no {want:?} in:\n{}", run.dump());
    }
}
