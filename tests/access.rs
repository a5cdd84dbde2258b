//! Only those given a stack may use it (docs/architecture.md, "Who may use a stack").
//!
//! Attacks: another uid (nobody, through setpriv) runs examples/intruder.rs against a root
//! engine (this test process) and against an engine of its own uid it was not given; every
//! request must be refused and the victim's stack be unchanged. Legitimate paths: a forked
//! child, `vdestack run` programs that change uid, a preloaded creator's descendants, a
//! process of another uid given fds by SCM_RIGHTS. Hostile clients: a flood of requests and
//! garbage on the control socket while another client works.

#[path = "support/programs.rs"]
mod programs;

use std::io::{Read, Write};
use std::net::Shutdown;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use programs::{python3, tool, Proc, WorkDir};
use vdestack::internal::control::proto::{Reply, Request};
use vdestack::internal::sys;
use vdestack::net::{TcpListener, TcpStream, UdpSocket};
use vdestack::Stack;

const SECS: fn(u64) -> Duration = Duration::from_secs;

/// examples/intruder.rs, which `cargo test` builds beside the test binaries.
fn intruder() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let p = exe
        .parent()
        .and_then(|d| d.parent())
        .unwrap()
        .join("examples/intruder");
    assert!(
        p.exists(),
        "{} is missing: build the examples (cargo test --release builds them)",
        p.display()
    );
    p
}

/// `setpriv` to nobody (uid and gid 65534, no groups).
fn as_nobody() -> Command {
    let mut c = Command::new(tool("setpriv", "util-linux"));
    c.args(["--reuid=65534", "--regid=65534", "--clear-groups"]);
    c
}

/// How many sockets of stack `stack` of engine `engine` /proc/net/unix shows (each has one
/// name, `vds:<engine>:<id>`, id = stack << 32 | n, little-endian; a NUL shows as `@`).
fn socket_count(engine: &str, stack: u32) -> usize {
    let text = std::fs::read("/proc/net/unix").unwrap();
    let pat = format!("@vds:{engine}:").into_bytes();
    let mut n = 0;
    let mut i = 0;
    while let Some(p) = text[i..]
        .windows(pat.len())
        .position(|w| w == pat.as_slice())
    {
        let at = i + p + pat.len();
        if let Some(raw) = text.get(at..at + 8) {
            let b: Vec<u8> = raw.iter().map(|&c| if c == b'@' { 0 } else { c }).collect();
            if u64::from_le_bytes(b.try_into().unwrap()) >> 32 == u64::from(stack) {
                n += 1;
            }
        }
        i = at;
    }
    n
}

fn engine_of(stack: &Stack) -> String {
    String::from_utf8(stack.ctl().name()["vds:".len()..].to_vec()).unwrap()
}

/// Runs the intruder as nobody against the engines of `pids`; returns its report.
fn attack(dir: &WorkDir, name: &str, pids: &[u32]) -> String {
    let mut cmd = as_nobody();
    cmd.arg(intruder()).arg("attack");
    cmd.args(pids.iter().map(|p| p.to_string()));
    programs::clean_env(&mut cmd);
    let mut p = Proc::spawn(name, cmd, dir.path());
    let status = p.wait(SECS(120));
    let out = p.stdout();
    programs::report(&format!("{name}:\n{out}"));
    assert!(
        status.success() && out.contains("BREACHES 0") && !out.contains("BREACH "),
        "the intruder got in\n{}",
        p.dump()
    );
    for kind in [
        "Socket", "Bind", "Cmd", "DelStack", "AddStack", "GetOpt", "Connect",
    ] {
        assert!(
            out.contains(&format!("no key: {kind}:")),
            "{kind} was not tried\n{out}"
        );
    }
    out
}

/// A root engine (this process) refuses nobody everything, and its stack is unchanged.
#[test]
fn root_engine_refuses_another_user() {
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "this test runs as root (CI does): it attacks a root engine as nobody"
    );
    let dir = WorkDir::new();
    let s = Stack::new("mem://access-root", None).unwrap();
    s.cmd("ip link set vde0 up; ip addr add 10.55.0.1/24 dev vde0")
        .unwrap();
    let fresh = s.socket(libc::AF_INET, libc::SOCK_STREAM, 0).unwrap();
    let ufresh = s.socket(libc::AF_INET, libc::SOCK_DGRAM, 0).unwrap();
    let listener = TcpListener::bind(&s, "10.55.0.1:8080").unwrap();
    let before = (
        s.cmd_output("ip addr").unwrap(),
        socket_count(&engine_of(&s), s.id()),
    );
    assert_eq!(before.1, 3);

    let out = attack(&dir, "intruder-root", &[std::process::id()]);
    assert!(
        out.contains("read the victim's environment: EACCES"),
        "{out}"
    );

    let after = (
        s.cmd_output("ip addr").unwrap(),
        socket_count(&engine_of(&s), s.id()),
    );
    assert_eq!(before, after, "the stack changed");
    // The victim's sockets are as it left them, and the ports tried are free.
    assert_eq!(
        vdestack::internal::socket::local_addr(fresh.as_raw_fd()).unwrap(),
        "0.0.0.0:0".parse().unwrap()
    );
    vdestack::internal::socket::bind(fresh.as_raw_fd(), "10.55.0.1:80".parse().unwrap()).unwrap();
    vdestack::internal::socket::bind(ufresh.as_raw_fd(), "10.55.0.1:80".parse().unwrap()).unwrap();
    let t22 = TcpListener::bind(&s, "0.0.0.0:22").unwrap();
    let u22 = UdpSocket::bind(&s, "[::]:22").unwrap();
    let mut c = TcpStream::connect(&s, "10.55.0.1:8080").unwrap();
    let (mut a, _) = listener.accept().unwrap();
    c.write_all(b"still mine").unwrap();
    let mut got = [0u8; 10];
    a.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"still mine");
    drop((t22, u22));
}

/// An engine of nobody's own (a `vdestack run` as nobody) refuses another process of nobody
/// that it was not given: the program's sockets stay its own.
#[test]
fn same_user_engine_refuses_a_process_not_given_it() {
    let dir = WorkDir::new();
    let script = r#"
import socket, sys
t = socket.socket(); u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
print("ready", flush=True)
sys.stdin.readline()
out = []
for what, s, a in [("tcp 80", t, ("0.0.0.0", 80)), ("udp 53", u, ("0.0.0.0", 53))]:
    s.bind(a); out.append(what + " " + str(s.getsockname()))
n = socket.socket(); n.bind(("0.0.0.0", 22)); out.append("new 22 ok")
try:
    socket.socket().bind(("10.66.0.1", 0)); out.append("10.66.0.1 PRESENT")
except OSError as e:
    out.append("10.66.0.1 absent " + str(e.errno))
print("; ".join(out), flush=True)
"#;
    let mut cmd = as_nobody();
    cmd.arg(programs::vdestack())
        .args(["run", "--"])
        .arg(python3())
        .args(["-c", script])
        .current_dir("/")
        .env("HOME", "/")
        .stdin(Stdio::piped());
    programs::clean_env(&mut cmd);
    let mut victim = Proc::spawn("victim-nobody", cmd, dir.path());
    victim.wait_for("ready", SECS(15));
    let pid = victim.pid();
    let engine = find_engine(pid);
    let before = socket_count(&engine, 1);
    assert_eq!(before, 2, "the victim's two sockets");

    attack(&dir, "intruder-same-user", &[pid]);

    assert_eq!(socket_count(&engine, 1), before, "a socket was made");
    victim.write_stdin(b"go\n");
    victim.wait_ok(SECS(15));
    let out = victim.stdout();
    assert!(
        out.contains("tcp 80 ('0.0.0.0', 80)")
            && out.contains("udp 53 ('0.0.0.0', 53)")
            && out.contains("new 22 ok")
            && out.contains(&format!("10.66.0.1 absent {}", libc::EADDRNOTAVAIL)),
        "{}",
        victim.dump()
    );
}

/// The engine a process runs, from /proc/net/unix (`@vds:<pid>.<hex>` is its control name).
fn find_engine(pid: u32) -> String {
    let text = String::from_utf8_lossy(&std::fs::read("/proc/net/unix").unwrap()).into_owned();
    let pat = format!("@vds:{pid}.");
    let at = text
        .find(&pat)
        .expect("the victim's engine in /proc/net/unix");
    text[at + 5..at + 5 + pat.len() - 5 + 16].to_string()
}

/// A child forked after the stack was made uses it: it holds the key in the memory it
/// shares with its parent.
#[test]
fn forked_child_uses_the_stack() {
    let s = Stack::new("mem://access-fork", None).unwrap();
    s.cmd("ip link set vde0 up; ip addr add 10.57.0.1/24 dev vde0")
        .unwrap();
    // SAFETY: the child only makes calls that are safe after fork (no locks taken by other
    // threads: the stack's handle carries its key) and leaves with _exit.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        let r = (|| -> std::io::Result<()> {
            let l = TcpListener::bind(&s, "10.57.0.1:80")?;
            let mut c = TcpStream::connect(&s, "10.57.0.1:80")?;
            let (mut a, _) = l.accept()?;
            c.write_all(b"x")?;
            let mut b = [0u8; 1];
            a.read_exact(&mut b)?;
            Ok(())
        })();
        unsafe { libc::_exit(if r.is_ok() { 0 } else { 1 }) };
    }
    let mut status = 0;
    // SAFETY: waiting for our own child.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0);
}

/// A python3 TCP exchange on 127.0.0.1:80 that prints its uid and "ok".
const EXCHANGE: &str = r#"
import os, socket
if os.getuid() == 0:
    os.setgroups([]); os.setgid(65534); os.setuid(65534)
l = socket.socket(); l.bind(("127.0.0.1", 80)); l.listen()
c = socket.create_connection(("127.0.0.1", 80)); a, _ = l.accept()
c.sendall(b"hi"); assert a.recv(2) == b"hi"
print("uid", os.getuid(), "ok", flush=True)
"#;

/// Descendants of `vdestack run` keep the stack when they become nobody: through setpriv
/// (exec), and as a daemon dropping its privileges (setuid in the process itself).
#[test]
fn vdestack_run_descendants_that_change_uid() {
    let dir = WorkDir::new();
    let mut cmd = programs::run_cmd(None, &[]);
    cmd.arg(tool("setpriv", "util-linux"))
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(python3())
        .args(["-c", EXCHANGE])
        .current_dir("/");
    let mut p = Proc::spawn("run-setpriv", cmd, dir.path());
    p.wait_ok(SECS(15));
    assert!(p.stdout().contains("uid 65534 ok"), "{}", p.dump());

    let mut cmd = programs::run_cmd(None, &[]);
    cmd.arg(python3()).args(["-c", EXCHANGE]).current_dir("/");
    let mut p = Proc::spawn("run-setuid", cmd, dir.path());
    p.wait_ok(SECS(15));
    assert!(p.stdout().contains("uid 65534 ok"), "{}", p.dump());
}

/// A preloaded creator (`sh` with VDESTACK_NET) exports the key: its exec'd descendant, of
/// another uid, uses the stack.
#[test]
fn preloaded_creators_descendant() {
    let dir = WorkDir::new();
    let lib = programs::vdestack().with_file_name("libvdestack.so");
    let mut cmd = Command::new(tool("sh", "dash"));
    programs::clean_env(&mut cmd);
    let setpriv = tool("setpriv", "util-linux");
    cmd.env("LD_PRELOAD", &lib)
        .env("VDESTACK_NET", "")
        .env("VDESTACK_CMD", "ip link set lo up")
        .arg("-c")
        .arg(format!(
            "{} --reuid=65534 --regid=65534 --clear-groups {} -c '{}'; echo creator done",
            setpriv.display(),
            python3().display(),
            EXCHANGE.replace('\'', "\"")
        ))
        .current_dir("/");
    let mut p = Proc::spawn("preload-setpriv", cmd, dir.path());
    p.wait_ok(SECS(15));
    let out = p.stdout();
    assert!(
        out.contains("uid 65534 ok") && out.contains("creator done"),
        "{}",
        p.dump()
    );
}

/// A process of another uid given a TCP and a UDP stack fd by SCM_RIGHTS: it may use them
/// (names, options, data, shutdown) but not make sockets in the stack nor configure it.
#[test]
fn fd_holder_of_another_uid() {
    let dir = WorkDir::new();
    let s = Stack::new("mem://access-holder", None).unwrap();
    s.cmd("ip link set vde0 up; ip addr add 10.56.0.1/24 dev vde0")
        .unwrap();
    let l = TcpListener::bind(&s, "10.56.0.1:9000").unwrap();
    let client = TcpStream::connect(&s, "10.56.0.1:9000").unwrap();
    let (mut srv, _) = l.accept().unwrap();
    let udp = UdpSocket::bind(&s, "10.56.0.1:5000").unwrap();
    let sink = UdpSocket::bind(&s, "10.56.0.1:5001").unwrap();
    let before = (
        s.cmd_output("ip addr").unwrap(),
        socket_count(&engine_of(&s), s.id()),
    );

    let mut cmd = as_nobody();
    cmd.arg(intruder()).args(["holder", "10.56.0.1:5001"]);
    programs::clean_env(&mut cmd);
    let (mut p, mine) = spawn_with_fd3("holder", cmd, &dir);
    sys::send_msg(mine.as_raw_fd(), b"tcp", &[client.as_raw_fd()]).unwrap();
    sys::send_msg(mine.as_raw_fd(), b"udp", &[udp.as_raw_fd()]).unwrap();
    let status = p.wait(SECS(30));
    programs::report(&format!("holder:\n{}", p.stdout()));
    assert!(
        status.success() && p.stdout().contains("BREACHES 0"),
        "{}",
        p.dump()
    );
    let mut got = Vec::new();
    srv.read_to_end(&mut got).unwrap();
    assert_eq!(got, b"hello from the holder");
    let mut buf = [0u8; 64];
    assert_eq!(
        sys::poll_one(sink.as_raw_fd(), libc::POLLIN, 5000).unwrap(),
        libc::POLLIN,
        "no datagram from the holder"
    );
    let (n, from) = sink.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"datagram from the holder");
    assert_eq!(from, "10.56.0.1:5000".parse().unwrap());
    let after = (
        s.cmd_output("ip addr").unwrap(),
        socket_count(&engine_of(&s), s.id()),
    );
    assert_eq!(before, after, "the stack changed");
    drop(client);
    srv.shutdown(Shutdown::Both).ok();
}

/// Starts `cmd` with one end of an AF_UNIX datagram socketpair on its fd 3; returns it and
/// the other end.
fn spawn_with_fd3(name: &str, mut cmd: Command, dir: &WorkDir) -> (Proc, OwnedFd) {
    let (mine, theirs) = sys::socketpair(libc::SOCK_DGRAM).unwrap();
    let theirs_fd: RawFd = theirs.as_raw_fd();
    // SAFETY: dup2 is async-signal-safe; it puts the socket on fd 3 (without CLOEXEC).
    unsafe {
        cmd.pre_exec(move || {
            if libc::dup2(theirs_fd, 3) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let p = Proc::spawn(name, cmd, dir.path());
    drop(theirs);
    (p, mine)
}

/// The same through the C library: python3 of another uid, preloaded but given no stack,
/// receives a TCP stack fd (recvmsg, SCM_RIGHTS) and uses it with its own socket calls.
#[test]
fn preloaded_fd_holder_of_another_uid() {
    let dir = WorkDir::new();
    let s = Stack::new("mem://access-pyholder", None).unwrap();
    s.cmd("ip link set vde0 up; ip addr add 10.59.0.1/24 dev vde0")
        .unwrap();
    let l = TcpListener::bind(&s, "10.59.0.1:9000").unwrap();
    let client = TcpStream::connect(&s, "10.59.0.1:9000").unwrap();
    let (mut srv, _) = l.accept().unwrap();
    let script = r#"
import socket, os
u = socket.socket(fileno=3)
msg, fds, flags, addr = socket.recv_fds(u, 16, 1)
t = socket.socket(fileno=fds[0])
print("family", int(t.family), "sockname", t.getsockname(), "peername", t.getpeername())
t.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
print("nodelay", t.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
t.sendall(b"hello from python")
t.shutdown(socket.SHUT_WR)
print("uid", os.getuid(), "done", flush=True)
"#;
    let mut cmd = as_nobody();
    cmd.arg(python3()).args(["-c", script]).current_dir("/");
    programs::clean_env(&mut cmd);
    cmd.env(
        "LD_PRELOAD",
        programs::vdestack().with_file_name("libvdestack.so"),
    );
    let (mut p, mine) = spawn_with_fd3("python-holder", cmd, &dir);
    sys::send_msg(mine.as_raw_fd(), b"tcp", &[client.as_raw_fd()]).unwrap();
    p.wait_ok(SECS(15));
    let out = p.stdout();
    let peer = client.local_addr().unwrap();
    assert!(
        out.contains(&format!(
            "family {} sockname ('{}', {}) peername ('10.59.0.1', 9000)",
            libc::AF_INET,
            peer.ip(),
            peer.port()
        )) && out.contains("nodelay 1")
            && out.contains("uid 65534 done"),
        "{}",
        p.dump()
    );
    let mut got = Vec::new();
    srv.read_to_end(&mut got).unwrap();
    assert_eq!(got, b"hello from python");
}

/// A raw control connection to `stack`'s engine, saying hello with `key`.
fn raw_conn(stack: &Stack, key: Option<[u8; 16]>) -> OwnedFd {
    let fd = sys::unix_socket(libc::SOCK_SEQPACKET).unwrap();
    sys::connect_abstract(fd.as_raw_fd(), stack.ctl().name()).unwrap();
    sys::send_msg(fd.as_raw_fd(), &Request::Hello { key }.encode(), &[]).unwrap();
    fd
}

/// Control calls of a well-behaved client, timed: all must complete within `limit`; returns
/// the slowest call.
fn well_behaved(s: &Stack, calls: usize, limit: Duration) -> Duration {
    let start = Instant::now();
    let mut slowest = Duration::ZERO;
    for i in 0..calls {
        let t = Instant::now();
        let fd = s.socket(libc::AF_INET, libc::SOCK_STREAM, 0).unwrap();
        vdestack::internal::socket::set_opt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_REUSEADDR,
            1,
        )
        .unwrap();
        vdestack::internal::socket::local_addr(fd.as_raw_fd()).unwrap();
        slowest = slowest.max(t.elapsed());
        assert!(
            start.elapsed() < limit,
            "only {i} of {calls} calls done in {limit:?}"
        );
    }
    slowest
}

/// Two connections, each fed by two threads that pipeline cheap requests as fast as the
/// engine takes them (and a third that reads the replies, so that the engine keeps it): a
/// connection whose queue never empties. Another client's calls all complete meanwhile.
#[test]
fn a_flood_does_not_starve_others() {
    let s = Arc::new(Stack::new("mem://access-flood", None).unwrap());
    let target = s.socket(libc::AF_INET, libc::SOCK_STREAM, 0).unwrap();
    let (_, id) = vdestack::internal::control::Ctl::of_fd(target.as_raw_fd()).unwrap();
    let key = s.ctl().key().expect("this process holds its engine's key");
    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let req = Request::GetOpt {
        sock: id,
        level: libc::SOL_SOCKET,
        name: libc::SO_TYPE,
    }
    .encode();
    let mut threads = Vec::new();
    for _ in 0..2 {
        // The connection, replaced when the engine drops it (it drops a client whose
        // replies pile up unread: a reader descheduled for a moment).
        let conn = Arc::new(std::sync::RwLock::new(Arc::new(raw_conn(&s, Some(key)))));
        for _ in 0..2 {
            let (conn, stop, req) = (conn.clone(), stop.clone(), req.clone());
            threads.push(std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let fd = conn.read().unwrap().clone();
                    if sys::send_vec(fd.as_raw_fd(), &[req.as_slice()], libc::MSG_DONTWAIT).is_err()
                    {
                        std::thread::yield_now();
                    }
                }
            }));
        }
        let (s, stop, answered) = (s.clone(), stop.clone(), answered.clone());
        threads.push(std::thread::spawn(move || {
            let mut buf = vec![0u8; 256];
            while !stop.load(Ordering::Relaxed) {
                let fd = conn.read().unwrap().clone();
                match sys::poll_one(fd.as_raw_fd(), libc::POLLIN, 100) {
                    Ok(0) | Err(_) => continue,
                    Ok(_) => {}
                }
                match sys::recv_msg_flags(fd.as_raw_fd(), &mut buf, libc::MSG_DONTWAIT) {
                    Ok((0, _)) => *conn.write().unwrap() = Arc::new(raw_conn(&s, Some(key))),
                    Ok(_) => {
                        answered.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(_) => {}
                }
            }
        }));
    }
    std::thread::sleep(Duration::from_millis(200));
    let slowest = well_behaved(&s, 200, SECS(10));
    let flood = answered.load(Ordering::Relaxed);
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
    programs::report(&format!(
        "flood: {flood} requests of 2 flooding connections answered meanwhile; \
         200 x (socket, setsockopt, getsockname) done, slowest {slowest:?}"
    ));
    assert!(flood > 1000, "the flood did not flood");
}

/// Garbage on control connections (random bytes, truncated and oversized messages, no
/// hello, fds of every kind, one whose close lingers) disturbs no other client, and each
/// gets an error or is closed.
#[test]
fn garbage_does_not_disturb_others() {
    let s = Arc::new(Stack::new("mem://access-garbage", None).unwrap());
    let key = s.ctl().key().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    // Fds whose last close waits: a kernel TCP socket with SO_LINGER, unsent data and a
    // peer that does not read (on the host's loopback), and an AF_UNIX socket that holds
    // another such socket in its queue. Passed to the engine, then closed here.
    let host = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let (direct, _peer1) = lingering_socket(&host);
    let (inner, _peer2) = lingering_socket(&host);
    let (nest_a, nest_b) = sys::socketpair(libc::SOCK_DGRAM).unwrap();
    sys::send_msg(nest_a.as_raw_fd(), b"x", &[inner.as_raw_fd()]).unwrap();
    drop((inner, nest_a));
    let mut passed = vec![direct, nest_b];
    let replies = Arc::new(std::sync::Mutex::new(std::collections::BTreeMap::new()));
    let garbage = {
        let (s, stop, replies) = (s.clone(), stop.clone(), replies.clone());
        std::thread::spawn(move || {
            let mut rng = 0x9e37_79b9_7f4a_7c15u64;
            let mut next = move || {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                rng
            };
            let valid = Request::Cmd {
                stack: 1,
                cmds: "ip addr".into(),
            }
            .encode();
            let null = std::fs::File::open("/dev/null").unwrap();
            let mut round = 0u64;
            while !stop.load(Ordering::Relaxed) {
                round += 1;
                let hello = match round % 3 {
                    0 => None,
                    1 => Some(Some(key)),
                    _ => Some(None),
                };
                let fd = sys::unix_socket(libc::SOCK_SEQPACKET).unwrap();
                sys::connect_abstract(fd.as_raw_fd(), s.ctl().name()).unwrap();
                if let Some(k) = hello {
                    sys::send_msg(fd.as_raw_fd(), &Request::Hello { key: k }.encode(), &[])
                        .unwrap();
                }
                let mut greeted = hello.is_some();
                for _ in 0..8 {
                    let len = (next() % 200) as usize;
                    let mut msg: Vec<u8> = (0..len).map(|_| next() as u8).collect();
                    match next() % 6 {
                        0 => msg = valid[..(next() as usize % valid.len())].to_vec(),
                        1 => msg = vec![0x41; 70_000],
                        2 => {
                            msg = valid.clone();
                            msg.push(0);
                        }
                        3 => msg = Request::Hello { key: Some(key) }.encode(),
                        _ => {}
                    }
                    let waits = (next() % 4 == 1).then(|| passed.pop()).flatten();
                    let mut fds: Vec<RawFd> = waits.iter().map(|f| f.as_raw_fd()).collect();
                    if next() % 4 == 0 {
                        fds.push(null.as_raw_fd());
                    }
                    if sys::send_msg(fd.as_raw_fd(), &msg, &fds).is_err() {
                        break;
                    }
                    // The engine's copy is now the last one: its close waits.
                    drop(waits);
                    if !greeted
                        && Request::decode(&msg).is_ok_and(|r| matches!(r, Request::Hello { .. }))
                    {
                        greeted = true; // a first hello: it gets no reply
                        continue;
                    }
                    greeted = true;
                    let mut buf = [0u8; 256];
                    let out = match sys::poll_one(fd.as_raw_fd(), libc::POLLIN, 5000) {
                        Ok(0) => "no answer in 5 s".to_string(),
                        _ => match sys::recv_msg(fd.as_raw_fd(), &mut buf) {
                            Ok((0, _)) | Err(_) => "closed".to_string(),
                            Ok((n, _)) => match Reply::decode(&buf[..n]) {
                                Ok(Reply::Err(e)) => format!("errno {e}"),
                                Ok(_) => "a reply".to_string(),
                                Err(_) => "garbled".to_string(),
                            },
                        },
                    };
                    *replies.lock().unwrap().entry(out.clone()).or_insert(0) += 1;
                    if out == "closed" {
                        break;
                    }
                }
            }
        })
    };
    std::thread::sleep(Duration::from_millis(200));
    let slowest = well_behaved(&s, 200, SECS(10));
    stop.store(true, Ordering::Relaxed);
    garbage.join().unwrap();
    let replies = replies.lock().unwrap().clone();
    programs::report(&format!(
        "garbage: answers {replies:?}; 200 x (socket, setsockopt, getsockname) done, slowest {slowest:?}"
    ));
    assert!(
        !replies.contains_key("no answer in 5 s"),
        "a garbage message got no answer: {replies:?}"
    );
    assert!(
        replies.contains_key("closed") && replies.len() > 2,
        "{replies:?}"
    );
}

/// A kernel TCP socket (and its peer) on the host's loopback whose close waits up to 30 s:
/// SO_LINGER, and unsent data the peer does not read.
fn lingering_socket(host: &std::net::TcpListener) -> (OwnedFd, std::net::TcpStream) {
    let s = std::net::TcpStream::connect(host.local_addr().unwrap()).unwrap();
    let (peer, _) = host.accept().unwrap();
    s.set_nonblocking(true).unwrap();
    let chunk = vec![0u8; 1 << 16];
    while (&s).write(&chunk).is_ok() {}
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 30,
    };
    // SAFETY: linger lives across the call; its size is passed.
    let r = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            &linger as *const _ as *const libc::c_void,
            std::mem::size_of_val(&linger) as u32,
        )
    };
    assert_eq!(r, 0);
    (s.into(), peer)
}

/// Anyone may bind an abstract name: a process that holds the names of a stack's next
/// sockets (easy to guess from /proc/net/unix) does not stop the stack making sockets.
#[test]
fn squatted_names_do_not_stop_sockets() {
    let s = Stack::new("mem://access-squat", None).unwrap();
    s.cmd("ip link set vde0 up; ip addr add 10.58.0.1/24 dev vde0")
        .unwrap();
    let first = s.socket(libc::AF_INET, libc::SOCK_STREAM, 0).unwrap();
    let (_, id) = vdestack::internal::control::Ctl::of_fd(first.as_raw_fd()).unwrap();
    let engine = engine_of(&s);
    let mut squats = Vec::new();
    for next in id + 1..=id + 64 {
        for ty in [libc::SOCK_STREAM, libc::SOCK_DGRAM] {
            let fd = sys::unix_socket(ty).unwrap();
            sys::bind_abstract(
                fd.as_raw_fd(),
                &vdestack::internal::control::sock_name(&engine, next),
            )
            .unwrap();
            squats.push(fd);
        }
    }
    let l = TcpListener::bind(&s, "10.58.0.1:80").unwrap();
    let mut c = TcpStream::connect(&s, "10.58.0.1:80").unwrap();
    let (mut a, _) = l.accept().unwrap();
    c.write_all(b"ok").unwrap();
    let mut b = [0u8; 2];
    a.read_exact(&mut b).unwrap();
    for _ in 0..10 {
        s.socket(libc::AF_INET, libc::SOCK_STREAM, 0).unwrap();
        UdpSocket::bind(&s, "10.58.0.1:0").unwrap();
    }
}
