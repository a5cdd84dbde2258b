//! The C library as C programs use it: the man page's example built with pkg-config against
//! an installed copy, and a program built against Debian's libvdestack run on ours by
//! LD_LIBRARY_PATH alone.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

#[path = "support/cprog.rs"]
mod cprog;
use cprog::{library, need, root};

fn scratch(name: &str) -> PathBuf {
    cprog::scratch("capi", name)
}

/// The release build's directory, with the library in it.
fn release() -> PathBuf {
    library().parent().expect("target/release").to_path_buf()
}

fn check(what: &str, o: Output) -> String {
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        o.status.success(),
        "{what} failed ({}):\n{out}{}",
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
    out
}

/// Installs the release build under `prefix` with scripts/install.
fn install(prefix: &Path) {
    release();
    let o = Command::new(root().join("scripts/install"))
        .arg(prefix)
        .env("VDESTACK_NO_BUILD", "1")
        .output()
        .unwrap();
    check("scripts/install", o);
}

/// A process killed when dropped.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn man_page_example_builds_with_pkg_config_and_works() {
    need("gcc", "gcc");
    need("pkg-config", "pkg-config");
    need("vde_plug", "vdeplug");
    let dir = scratch("manpage");
    let prefix = dir.join("prefix");
    install(&prefix);
    for f in [
        "lib/libvdestack.so.0",
        "lib/libvdestack.so",
        "include/vdestack.h",
        "lib/pkgconfig/vdestack.pc",
        "share/man/man3/vde_stackcmd.3",
        "share/man/man1/vdestack.1",
        "bin/vdestack",
    ] {
        assert!(prefix.join(f).exists(), "install left out {f}");
    }
    // The example opens "vde://", the default switch: /var/run/vde.ctl, else /tmp/vde.ctl.
    assert!(
        !Path::new("/var/run/vde.ctl").exists(),
        "a system switch runs at /var/run/vde.ctl; this test starts its own at /tmp/vde.ctl"
    );
    let sw = Path::new("/tmp/vde.ctl");
    let _ = std::fs::remove_dir_all(sw);
    let _switch = Guard(
        Command::new("vde_plug")
            .args(["null://", "switch:///tmp/vde.ctl"])
            .stdin(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let t = Instant::now();
    while !sw.join("ctl").exists() {
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "the switch did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let prog = dir.join("manpage");
    let script = format!(
        "gcc {} -o {} $(pkg-config --cflags --libs vdestack)",
        root().join("tests/c/manpage.c").display(),
        prog.display()
    );
    let pc = prefix.join("lib/pkgconfig");
    check(
        "gcc with pkg-config",
        Command::new("sh")
            .args(["-c", &script])
            .env("PKG_CONFIG_PATH", &pc)
            .output()
            .unwrap(),
    );
    let out = check(
        "the man page's example",
        Command::new(&prog)
            .env("LD_LIBRARY_PATH", prefix.join("lib"))
            .output()
            .unwrap(),
    );
    assert_eq!(out, "ping from 10.0.0.1\n");
    let _ = std::fs::remove_dir_all(sw);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_program_built_for_debians_libvdestack_runs_on_ours() {
    need("gcc", "gcc");
    assert!(
        Path::new("/usr/include/vdestack.h").exists(),
        "this test builds against Debian's libvdestack: apt-get install libvdestack-dev"
    );
    let dir = scratch("debian");
    let prog = dir.join("loopback");
    // Built against Debian's header and library, as any existing program is.
    let src = root().join("tests/c/loopback.c");
    check(
        "gcc -lvdestack",
        Command::new("gcc")
            .arg(&src)
            .arg("-o")
            .arg(&prog)
            .arg("-lvdestack")
            .output()
            .unwrap(),
    );
    let needed = check(
        "readelf",
        Command::new("readelf")
            .arg("-d")
            .arg(&prog)
            .output()
            .unwrap(),
    );
    assert!(
        needed.contains("[libvdestack.so.0]"),
        "the program needs libvdestack.so.0:\n{needed}"
    );
    // Ours, under the soname, in a directory of its own.
    let lib = dir.join("lib");
    std::fs::create_dir_all(&lib).unwrap();
    std::os::unix::fs::symlink(
        release().join("libvdestack.so"),
        lib.join("libvdestack.so.0"),
    )
    .unwrap();
    let mut child = Command::new(&prog)
        .env("LD_LIBRARY_PATH", &lib)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let t = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if t.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            panic!("the program did not finish in 30 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = check(
        "the program on our library",
        child.wait_with_output().unwrap(),
    );
    assert_eq!(out, "ok\n");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A nonblocking connect as an event loop does it (tests/c/nbconnect.c): no POLLOUT before
/// the outcome is known (a silent host, a late peer), then POLLOUT or an edge-triggered
/// EPOLLOUT, and SO_ERROR answering at once: 0, ETIMEDOUT, ECONNREFUSED; early bytes kept.
#[test]
fn a_nonblocking_connect_polls_writable_when_its_outcome_is_known() {
    let dir = scratch("nbconnect");
    let (prog, lib) = cprog::build(&dir, "nbconnect.c");
    cprog::run(&dir, &prog, &lib, &[], Duration::from_secs(30));
    let _ = std::fs::remove_dir_all(&dir);
}

/// send/recv and friends on kernel sockets (and on stack ones) make no syscall besides their
/// own: the library remembers which fds are stack fds. Counted with strace between two
/// getppid() calls that tests/c/fdcache.c makes around the calls.
#[test]
fn send_and_recv_make_no_extra_syscalls() {
    let strace = cprog::tool_path("strace", "strace");
    let dir = scratch("fdcount");
    let (prog, lib) = cprog::build(&dir, "fdcache.c");
    let trace = dir.join("trace");
    let o = Command::new(strace)
        .args([
            "-f",
            "-qq",
            "-ff",
            "-e",
            "trace=getsockopt,getpeername,getppid",
            "-o",
        ])
        .arg(&trace)
        .arg(&prog)
        .arg("count")
        .env("LD_LIBRARY_PATH", &lib)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
    let out = check("fdcache count under strace", o);
    assert_eq!(out, "ok\n", "stderr: {stderr}");
    let pid: u32 = stderr
        .lines()
        .find_map(|l| l.strip_prefix("pid "))
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or_else(|| panic!("no pid in the program's stderr: {stderr}"));
    let main = std::fs::read_to_string(format!("{}.{pid}", trace.display())).unwrap();
    let lines: Vec<&str> = main.lines().collect();
    let marks: Vec<usize> = (0..lines.len())
        .filter(|&i| lines[i].starts_with("getppid("))
        .collect();
    assert_eq!(marks.len(), 2, "two getppid() marks in the trace:\n{main}");
    let extra: Vec<&str> = lines[marks[0] + 1..marks[1]].to_vec();
    assert!(
        extra.is_empty(),
        "{} getsockopt/getpeername calls among 600 sends and receives, e.g.:\n{}",
        extra.len(),
        extra[..extra.len().min(5)].join("\n")
    );
    // The setup before the mark did ask about fds: the trace sees the library's calls.
    assert!(
        lines[..marks[0]]
            .iter()
            .any(|l| l.starts_with("getpeername(")),
        "no getpeername at all in the setup: is strace tracing the library?\n{main}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// An fd number that held a stack socket and then a kernel one, and back, through close,
/// fclose, dup2/dup3 over a stack fd and fcntl(F_DUPFD): each call does what the fd now is.
#[test]
fn a_reused_fd_number_is_what_it_now_holds() {
    let dir = scratch("fdreuse");
    let (prog, lib) = cprog::build(&dir, "fdcache.c");
    cprog::run(&dir, &prog, &lib, &["reuse"], Duration::from_secs(30));
    let _ = std::fs::remove_dir_all(&dir);
}
