//! The seal of `vdestack run` (src/seal): programs that make their socket syscalls
//! themselves (static busybox, Go, raw syscalls from Python's ctypes) stay inside the
//! stack, and reach nothing else.
//!
//! Every scenario runs in a network namespace of its own with only `lo` (`unshare -n`, or
//! `unshare -rn` when not root), so that an escape reaches nothing beyond it; inside, a
//! listener on the namespace's 127.0.0.1 stands for the host and says whether anything came.
//! The unsealed runs (`--no-seal`) show that the same programs do reach it without the seal,
//! so the checks can fail.
//!
//! Missing programs fail naming the Debian package (scripts/test installs them).
//! Needs the workspace built: `cargo build --release --workspace && cargo test --release
//! --test seal`.

#[path = "support/programs.rs"]
mod programs;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use programs::{clean_env, python3, tool, vdestack, Proc, WorkDir};

/// A listener on the namespace's 127.0.0.1:$1 (the "host"): it reports every connection and
/// what came on it, until killed.
const HOST_PY: &str = r#"
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1])))
s.listen(8)
open(sys.argv[2], "w").close()
while True:
    c, a = s.accept()
    c.settimeout(2)
    try:
        data = c.recv(100)
    except OSError:
        data = b""
    print("host got a connection:", data.decode().strip(), flush=True)
    c.close()
"#;

/// The shell functions every scenario starts with: `host PORT` starts the host's listener
/// and waits until it listens; `switch` starts a VDE switch at $D/sw.
const PRELUDE: &str = r#"
set -u
host() { "$PY" -u -c "$HOST_PY" "$1" "$D/host$1.ready" >> "$D/host.log" 2>&1 &
         while [ ! -e "$D/host$1.ready" ]; do sleep 0.05; done; }
switch() { vde_plug null:// "switch://$D/sw" & while [ ! -e "$D/sw/ctl" ]; do sleep 0.05; done; }
"#;

/// A busybox that is statically linked (Debian's busybox-static): the dynamic one would be
/// caught by LD_PRELOAD and prove nothing.
fn static_busybox() -> PathBuf {
    let bb = tool("busybox", "busybox-static");
    assert!(
        !dynamic(&bb),
        "{} is dynamically linked: these tests need a static busybox, install the Debian \
         package busybox-static (apt-get install busybox-static)",
        bb.display()
    );
    bb
}

/// Whether an ELF64 executable has an interpreter (PT_INTERP), i.e. is dynamically linked.
fn dynamic(p: &Path) -> bool {
    let f = std::fs::read(p).unwrap_or_default();
    let u16_at = |o: usize| u16::from_le_bytes([f[o], f[o + 1]]) as usize;
    if f.len() < 64 || &f[..4] != b"\x7fELF" {
        return true;
    }
    let phoff = u64::from_le_bytes(f[0x20..0x28].try_into().unwrap()) as usize;
    let (size, count) = (u16_at(0x36), u16_at(0x38));
    (0..count).any(|i| {
        let o = phoff + i * size;
        f.get(o..o + 4) == Some(&3u32.to_le_bytes()[..]) // PT_INTERP
    })
}

/// Runs `script` (sh) in a fresh network namespace with only lo, with the prelude and the
/// environment every scenario uses (V: vdestack, BB: busybox, PY: python3, RAW: rawsock.py,
/// D: the work directory) plus `env`; waits for it (at most `limit`) and returns its
/// stdout and the host's log.
fn isolated(
    dir: &WorkDir,
    name: &str,
    script: &str,
    env: &[(&str, OsString)],
    limit: Duration,
) -> (String, String) {
    let file = dir.join(&format!("{name}.sh"));
    std::fs::write(&file, format!("{PRELUDE}\n{script}")).unwrap();
    let root = unsafe { libc::geteuid() } == 0;
    let mut c = Command::new(tool("unshare", "util-linux"));
    c.arg(if root { "-n" } else { "-rn" })
        .arg("sh")
        .arg("-c")
        .arg("ip link set lo up && exec sh \"$0\"")
        .arg(&file);
    clean_env(&mut c);
    tool("ip", "iproute2");
    tool("vde_plug", "vdeplug");
    c.env("V", vdestack())
        .env("BB", static_busybox())
        .env("PY", python3())
        .env("RAW", support("rawsock.py"))
        .env("D", dir.path())
        .env("HOST_PY", HOST_PY);
    for (k, v) in env {
        c.env(k, v);
    }
    let mut p = Proc::spawn(name, c, dir.path());
    p.wait_ok(limit);
    let host = std::fs::read_to_string(dir.join("host.log")).unwrap_or_default();
    (p.stdout(), host)
}

fn support(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/support")
        .join(file)
}

fn has(out: &str, line: &str) -> bool {
    out.lines().any(|l| l.trim() == line)
}

#[test]
fn static_busybox_nc_stays_inside() {
    let dir = WorkDir::new();
    let (out, host) = isolated(
        &dir,
        "nc",
        r#"
host 7777
# Inside the stack: a listener and a client, busybox sh forking and exec'ing both.
"$V" run -- "$BB" sh -c '"$BB" nc -l -p 7000 > "$D/got" & sleep 0.5
  echo stack-hello | "$BB" nc 127.0.0.1 7000; echo "nc inside: $?"; wait'
echo "listener inside got: $(cat "$D/got")"
# The host's listener is not inside.
echo sealed | "$V" run -- "$BB" nc 127.0.0.1 7777; echo "nc to the host: $?"
# Without the seal the same program reaches it.
echo unsealed | "$V" run --no-seal -- "$BB" nc -w 1 127.0.0.1 7777; echo "unsealed nc: $?"
sleep 0.5
"#,
        &[],
        Duration::from_secs(60),
    );
    assert!(has(&out, "nc inside: 0"), "{out}");
    assert!(has(&out, "listener inside got: stack-hello"), "{out}");
    assert!(has(&out, "nc to the host: 1"), "{out}");
    assert!(
        !has(&host, "host got a connection: sealed"),
        "a sealed program reached the host's listener:\n{host}"
    );
    assert!(
        has(&host, "host got a connection: unsealed"),
        "the unsealed run should reach the host's listener (else this test proves nothing):\n{host}\n{out}"
    );
}

#[test]
fn static_busybox_between_stacks() {
    let dir = WorkDir::new();
    std::fs::create_dir_all(dir.join("www")).unwrap();
    std::fs::write(dir.join("www/hello.txt"), "hello from busybox httpd\n").unwrap();
    let (out, _) = isolated(
        &dir,
        "between",
        r#"
switch
"$V" run --net "vde://$D/sw" --conf eth,ip=10.0.0.1/24 -- "$BB" sh -c '
  "$BB" nc -l -p 9000 > "$D/got" &
  "$BB" httpd -f -p 8080 -h "$D/www" & wait' &
sleep 1
"$V" run --net "vde://$D/sw" --conf eth,ip=10.0.0.2/24 -- "$BB" sh -c '
  for i in 1 2 3 4 5 6 7 8 9 10; do "$BB" wget -q -O - http://10.0.0.1:8080/hello.txt && break; sleep 0.3; done
  echo over-the-switch | "$BB" nc 10.0.0.1 9000; echo "nc client: $?"'
sleep 0.3
echo "nc server got: $(cat "$D/got")"
"#,
        &[],
        Duration::from_secs(60),
    );
    assert!(has(&out, "hello from busybox httpd"), "{out}");
    assert!(has(&out, "nc client: 0"), "{out}");
    assert!(has(&out, "nc server got: over-the-switch"), "{out}");
}

#[test]
fn raw_syscalls_stay_inside() {
    let dir = WorkDir::new();
    let (out, host) = isolated(
        &dir,
        "raw",
        r#"
host 7777
"$V" run -- "$PY" "$RAW" connect 7777
"$V" run -- sh -c '"$BB" nc -l -p 7000 > "$D/got" & sleep 0.5; "$PY" "$RAW" connect 7000; wait'
echo "listener inside got: $(cat "$D/got")"
"$V" run -- "$PY" "$RAW" families
"$V" run --no-seal -- "$PY" "$RAW" connect 7777
sleep 0.5
"#,
        &[],
        Duration::from_secs(60),
    );
    // Sealed: refused inside the stack, nothing at the host.
    assert!(has(&out, "raw connect: Connection refused"), "{out}");
    assert!(has(&out, "listener inside got: raw-hello"), "{out}");
    for l in [
        "packet: Address family not supported by protocol",
        "netlink: Address family not supported by protocol",
        "vsock: Address family not supported by protocol",
        // The stack's own answer, as to a libc program (socket(AF_INET, SOCK_RAW)).
        "raw inet: Socket type not supported",
        "io_uring: Function not implemented",
    ] {
        assert!(has(&out, l), "missing {l:?}:\n{out}");
    }
    // Unsealed, the raw syscall reaches the host: the check above can fail.
    assert!(
        out.contains("raw connect: connected"),
        "the unsealed run should connect:\n{out}"
    );
    assert_eq!(
        host.matches("host got a connection").count(),
        1,
        "only the unsealed run may reach the host:\n{host}\n{out}"
    );
}

#[test]
fn forked_workers_and_threads_that_block() {
    let dir = WorkDir::new();
    let (out, _) = isolated(
        &dir,
        "procs",
        r#"
"$V" run -- sh -c '
  "$PY" "$RAW" forkserver 7200 3 &
  for i in 1 2 3; do "$PY" "$RAW" client 7200 "hello-$i" & done
  wait'
"$V" run -- "$PY" "$RAW" threads
"#,
        &[],
        Duration::from_secs(60),
    );
    for i in 1..=3 {
        assert!(
            out.lines().any(|l| l.starts_with("client: answer child ")
                && l.ends_with(&format!("got hello-{i}"))),
            "client {i}:\n{out}"
        );
    }
    assert_eq!(out.matches("forkserver: child exit 0").count(), 3, "{out}");
    assert!(
        has(
            &out,
            "threads: second accepted while first waits: to second first still waiting: True"
        ),
        "{out}"
    );
    assert!(has(&out, "threads: first got: to first"), "{out}");
}

/// Builds tests/go into the test's target directory (static: CGO_ENABLED=0).
fn go_program() -> PathBuf {
    let go = tool("go", "golang-go");
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let bin = tmp.join("sealgo");
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/go");
    let out = Command::new(go)
        .arg("build")
        .arg("-o")
        .arg(&bin)
        .arg(".")
        .current_dir(&src)
        .env("CGO_ENABLED", "0")
        .env("GOCACHE", tmp.join("go-cache"))
        .env("GOPATH", tmp.join("go-path"))
        .env("GOFLAGS", "-mod=mod")
        .env("GOPROXY", "off")
        .output()
        .expect("run go build");
    assert!(
        out.status.success(),
        "go build failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!dynamic(&bin), "the Go program should be static");
    bin
}

#[test]
fn go_program_between_stacks() {
    let g = go_program();
    let dir = WorkDir::new();
    let (out, host) = isolated(
        &dir,
        "go",
        r#"
host 7777
switch
"$V" run --net "vde://$D/sw" --conf eth,ip=10.0.0.1/24 -- "$G" serve :8080 &
"$V" run --net "vde://$D/sw" --conf eth,ip=10.0.0.2/24 -- "$G" get http://10.0.0.1:8080/
wait $!; echo "serve: $?"
"$V" run -- "$G" udp
"$V" run -- "$G" dial 127.0.0.1:7777
"$V" run --no-seal -- "$G" dial 127.0.0.1:7777
sleep 0.5
"#,
        &[("G", g.into_os_string())],
        Duration::from_secs(90),
    );
    assert!(has(&out, "listening on [::]:8080"), "{out}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("got \"hello 10.0.0.2:") && l.ends_with(" from go\"")),
        "{out}"
    );
    assert!(has(&out, "serve: 0"), "{out}");
    assert!(has(&out, "udp: \"echo ping\""), "{out}");
    assert!(
        has(
            &out,
            "dial: dial tcp 127.0.0.1:7777: connect: connection refused"
        ),
        "{out}"
    );
    assert!(
        out.contains("dial: connected to 127.0.0.1:7777"),
        "the unsealed run should connect:\n{out}"
    );
    assert_eq!(
        host.matches("host got a connection: go-hello").count(),
        1,
        "only the unsealed run may reach the host:\n{host}\n{out}"
    );
}

#[test]
fn a_signal_interrupts_a_trapped_accept_as_on_the_kernel() {
    let dir = WorkDir::new();
    let (out, _) = isolated(
        &dir,
        "signal",
        r#"
echo "kernel:"; "$PY" "$RAW" signal
echo "sealed:"; "$V" run -- "$PY" "$RAW" signal
"#,
        &[],
        Duration::from_secs(60),
    );
    let (kernel, sealed) = out.split_once("sealed:").expect("both ran");
    let expect =
        "signal: accept: Interrupted system call\nsignal: next accept got: after the signal";
    assert!(kernel.contains(expect), "{out}");
    assert!(sealed.contains(expect), "{out}");
}

/// Where the seal cannot be installed (here: inside a sealed run, whose filter already has a
/// listener), `run` says so and goes on with LD_PRELOAD alone; `--seal` makes it an error.
#[test]
fn no_seal_available_is_said() {
    let dir = WorkDir::new();
    let (out, _) = isolated(
        &dir,
        "fallback",
        r#"
"$V" run -- "$V" run -- "$BB" echo inner ran 2> "$D/err1"; echo "status $?"
"$V" run -- "$V" run --seal -- "$BB" echo inner ran 2> "$D/err2"; echo "status $?"
echo "err1: $(grep -c 'vdestack: not sealed (installing the seccomp filter: Device or resource busy' "$D/err1")"
echo "err2: $(grep -c 'cannot seal the program: installing the seccomp filter' "$D/err2")"
"#,
        &[("RUST_BACKTRACE", "0".into())],
        Duration::from_secs(60),
    );
    assert!(has(&out, "inner ran"), "{out}");
    assert_eq!(out.matches("inner ran").count(), 1, "{out}");
    assert!(has(&out, "status 0"), "{out}");
    assert!(has(&out, "status 1"), "{out}");
    assert!(has(&out, "err1: 1"), "{out}");
    assert!(has(&out, "err2: 1"), "{out}");
}

/// Builds a C program of tests/c statically (no LD_PRELOAD can catch it).
fn static_c(name: &str) -> PathBuf {
    let gcc = tool("gcc", "gcc");
    let bin = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/c/{name}.c"));
    let out = Command::new(gcc)
        .args(["-O2", "-static", "-o"])
        .arg(&bin)
        .arg(&src)
        .output()
        .expect("run gcc");
    assert!(
        out.status.success(),
        "gcc -static failed (the static C library is in the Debian package libc6-dev):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    bin
}

#[test]
fn sendmmsg_and_recvmmsg_as_on_the_kernel() {
    let prog = static_c("seal_mmsg");
    let dir = WorkDir::new();
    let (out, _) = isolated(
        &dir,
        "mmsg",
        r#"
"$P" > "$D/kernel"
"$V" run -- "$P" > "$D/sealed"
echo "kernel:"; cat "$D/kernel"; echo "sealed:"; cat "$D/sealed"
"#,
        &[("P", prog.into_os_string())],
        Duration::from_secs(60),
    );
    let (kernel, sealed) = out.split_once("sealed:").expect("both ran");
    let kernel = kernel.trim_start_matches("kernel:").trim();
    assert!(kernel.contains("sendmmsg: 3, lengths 3 3 5"), "{out}");
    assert_eq!(
        kernel.matches("from the sender, name length 16").count(),
        3,
        "{out}"
    );
    assert_eq!(sealed.trim(), kernel, "{out}");
}
