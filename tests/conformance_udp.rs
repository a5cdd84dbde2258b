//! Datagram receives as Linux does them: socat's UDP-RECV in a stack (it sizes each
//! datagram with recvmsg(MSG_PEEK|MSG_TRUNC) into one byte, which once panicked the
//! library), and a fixed sequence of short-buffer, MSG_TRUNC and odd-argument receives
//! (tests/c/udptrunc.c) whose trace must be the kernel's, line for line.

#[path = "support/programs.rs"]
mod programs;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use programs::{run_cmd, tool, Proc, WorkDir};

fn build(dir: &Path, source: &str) -> PathBuf {
    let gcc = tool("gcc", "gcc");
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/c")
        .join(source);
    let bin = dir.join(source.trim_end_matches(".c"));
    let o = Command::new(gcc)
        .args(["-O2", "-Wall", "-Werror", "-o"])
        .arg(&bin)
        .arg(&src)
        .output()
        .expect("run gcc");
    assert!(
        o.status.success(),
        "gcc {source}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    bin
}

#[test]
fn truncating_receives_match_the_kernel() {
    let dir = WorkDir::new();
    let prog = build(dir.path(), "udptrunc.c");
    let mut k = Command::new(&prog);
    programs::clean_env(&mut k);
    let mut kernel = Proc::spawn("kernel", k, dir.path());
    kernel.wait_ok(Duration::from_secs(30));
    let mut s = run_cmd(None, &[]);
    s.arg(&prog);
    let mut stack = Proc::spawn("stack", s, dir.path());
    stack.wait_ok(Duration::from_secs(30));
    let (kt, st) = (kernel.stdout(), stack.stdout());
    assert!(kt.lines().count() > 500, "the kernel run is short:\n{kt}");
    for (i, (a, b)) in kt.lines().zip(st.lines()).enumerate() {
        assert_eq!(a, b, "line {i} differs (kernel, then stack)");
    }
    assert_eq!(kt.lines().count(), st.lines().count(), "{}", stack.dump());
}

#[test]
fn socat_udp_recv_in_a_stack() {
    let socat = tool("socat", "socat");
    let dir = WorkDir::new();
    let out = dir.join("received");
    // The receiver, then two datagrams from a sender in the same stack; -T ends the receiver
    // once it has been idle for 2 s.
    let script = format!(
        "{socat} -u -T 2 UDP-RECV:7000 - > {out} & sleep 0.5; \
         printf 'first datagram\\n' | {socat} -u - UDP-SENDTO:127.0.0.1:7000; \
         printf 'second\\n' | {socat} -u - UDP-SENDTO:127.0.0.1:7000; wait",
        socat = socat.display(),
        out = out.display()
    );
    let mut c = run_cmd(None, &[]);
    c.args(["sh", "-c", &script]);
    let mut p = Proc::spawn("socat", c, dir.path());
    p.wait_ok(Duration::from_secs(30));
    let got = std::fs::read_to_string(&out).unwrap_or_default();
    assert_eq!(got, "first datagram\nsecond\n", "{}", p.dump());
}
