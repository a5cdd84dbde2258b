//! The C library under concurrency: threads of one process sharing a stack, processes
//! sharing one through fork() whose control calls must never get each other's answers, and
//! the classic fork-per-connection server. Each is a C program (tests/c/threads.c,
//! tests/c/procs.c) built against shim/include and run on the release build's library.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[path = "support/cprog.rs"]
mod cprog;
use cprog::{library, need, root};

fn scratch(name: &str) -> PathBuf {
    cprog::scratch("concurrency", name)
}

/// Builds tests/c/`source` in `dir`, linked with -lvdestack against a `lib` directory that
/// holds our library under its soname (and the bare name the linker looks for). Returns the
/// program and the directory for LD_LIBRARY_PATH.
fn build(dir: &Path, source: &str) -> (PathBuf, PathBuf) {
    need("gcc", "gcc");
    let so = library();
    let lib = dir.join("lib");
    std::fs::create_dir_all(&lib).unwrap();
    for name in ["libvdestack.so.0", "libvdestack.so"] {
        std::os::unix::fs::symlink(&so, lib.join(name)).unwrap();
    }
    let prog = dir.join(source.trim_end_matches(".c"));
    let o = Command::new("gcc")
        .args(["-O2", "-Wall", "-pthread", "-I"])
        .arg(root().join("shim/include"))
        .arg(root().join("tests/c").join(source))
        .arg("-o")
        .arg(&prog)
        .arg("-L")
        .arg(&lib)
        .arg("-lvdestack")
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "gcc {source} failed ({}):\n{}{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    (prog, lib)
}

/// Runs a program built by [`build`] with `args`, killing it after `limit`; asserts it
/// printed "ok" and exited 0, showing its stdout and stderr otherwise. Output goes to files,
/// so that children it forked cannot hold a pipe open.
fn run(dir: &Path, prog: &Path, lib: &Path, args: &[&str], limit: Duration) {
    let (out, err) = (dir.join("stdout"), dir.join("stderr"));
    let t = Instant::now();
    let mut child = Command::new(prog)
        .args(args)
        .env("LD_LIBRARY_PATH", lib)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&err).unwrap())
        .spawn()
        .unwrap();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break Some(s);
        }
        if t.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let what = format!("{} {}", prog.display(), args.join(" "))
        .trim_end()
        .to_string();
    let stdout = std::fs::read_to_string(&out).unwrap_or_default();
    let stderr = std::fs::read_to_string(&err).unwrap_or_default();
    let status =
        status.unwrap_or_else(|| panic!("{what} did not finish in {limit:?}:\n{stdout}{stderr}"));
    assert!(
        status.success() && stdout == "ok\n",
        "{what} failed ({status}):\nstdout: {stdout}\nstderr: {stderr}"
    );
    eprintln!("{what}: ok in {:.2?}; {}", t.elapsed(), stderr.trim());
}

/// 16 client threads × 100 connections (vde_msocket, connect, a message of their own, its
/// echo, close) to acceptor threads that give each connection an echo thread, while other
/// threads run vde_stackcmd("ip addr").
#[test]
fn threads_share_a_stack_connections_and_stackcmd_at_once() {
    let dir = scratch("threads");
    let (prog, lib) = build(&dir, "threads.c");
    run(&dir, &prog, &lib, &[], Duration::from_secs(20));
    let _ = std::fs::remove_dir_all(&dir);
}

/// 8 forked children × 200 rounds of control calls (bind to a port of their own +
/// getsockname, SO_RCVBUF of their own, connect + getsockname/getpeername checked against
/// the port the server saw): two processes calling at once never get each other's answers.
#[test]
fn processes_calling_at_once_never_get_each_others_answers() {
    let dir = scratch("answers");
    let (prog, lib) = build(&dir, "procs.c");
    run(&dir, &prog, &lib, &["answers"], Duration::from_secs(20));
    let _ = std::fs::remove_dir_all(&dir);
}

/// A classic fork server: accept, fork a child that serves the connection and _exits, close
/// the parent's copy; a forked client makes 20 connections at once and checks each answer.
#[test]
fn a_fork_per_connection_server_serves_20_connections() {
    let dir = scratch("forkserver");
    let (prog, lib) = build(&dir, "procs.c");
    run(&dir, &prog, &lib, &["forkserver"], Duration::from_secs(20));
    let _ = std::fs::remove_dir_all(&dir);
}
