//! The C library under concurrency: threads of one process sharing a stack, processes
//! sharing one through fork() whose control calls must never get each other's answers, and
//! the classic fork-per-connection server. Each is a C program (tests/c/threads.c,
//! tests/c/procs.c) built against shim/include and run on the release build's library.

use std::path::PathBuf;
use std::time::Duration;

#[path = "support/cprog.rs"]
mod cprog;
use cprog::{build, run};

fn scratch(name: &str) -> PathBuf {
    cprog::scratch("concurrency", name)
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
