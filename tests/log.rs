//! Logs through `tracing`: a Rust program gets the events in its own subscriber (stack
//! created, a link lost and back, a request failed, a frame an impairment dropped); the CLI
//! and a preloaded program write them to stderr as `VDESTACK_LOG` says.

#[path = "support/programs.rs"]
mod programs;
#[path = "support/switch.rs"]
mod switch;

use std::io::Write;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use vdestack::net::{TcpStream, UdpSocket};
use vdestack::Stack;

/// What the subscriber wrote, shared with the test.
#[derive(Clone, Default)]
struct Sink(Arc<Mutex<Vec<u8>>>);

impl Write for Sink {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Sink {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }

    /// Waits up to 5 s for a line that has every one of `parts`.
    fn wait_for(&self, parts: &[&str]) -> String {
        let end = Instant::now() + Duration::from_secs(5);
        loop {
            let t = self.text();
            if let Some(l) = t.lines().find(|l| parts.iter().all(|p| l.contains(p))) {
                return l.to_string();
            }
            assert!(Instant::now() < end, "no event with {parts:?} in:\n{t}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// The program's own subscriber (global: the engine runs in a thread of its own).
fn subscriber() -> Sink {
    static SINK: std::sync::OnceLock<Sink> = std::sync::OnceLock::new();
    SINK.get_or_init(|| {
        let sink = Sink::default();
        let w = sink.clone();
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::DEBUG)
            .with_ansi(false)
            .with_writer(move || w.clone())
            .init();
        sink
    })
    .clone()
}

#[test]
fn a_program_gets_the_events_in_its_own_subscriber() {
    let sink = subscriber();
    let a = Stack::new("mem://log-events[loss=100%]", None).unwrap();
    let id = a.id();
    sink.wait_for(&[
        "INFO",
        "stack created",
        &format!("stack={id}"),
        "log-events",
    ]);
    a.cmd("ip link set vde0 up; ip addr add 10.0.0.1/24 dev vde0")
        .unwrap();
    // Every frame is lost: the ARP request for the peer too.
    let u = UdpSocket::bind(&a, "0.0.0.0:0").unwrap();
    u.send_to(b"x", "10.0.0.2:9").unwrap();
    sink.wait_for(&[
        "DEBUG",
        "vdestack::link::impair",
        "dropped by the link's impairments",
    ]);
    // A request that fails: a connection to a port nobody listens on.
    let b = Stack::new("", None).unwrap();
    let e = TcpStream::connect(&b, "127.0.0.1:1").unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::ECONNREFUSED));
    sink.wait_for(&["DEBUG", "request failed", "Connection refused"]);
    let e = b.cmd("ip addr add 10.0.0.1/24 dev eth7").unwrap_err();
    assert_eq!(e.status, 1);
    sink.wait_for(&["configuration failed", "Cannot find device"]);
    drop(b);
    sink.wait_for(&["stack deleted"]);
}

/// A switch that goes away: the link says NO-CARRIER (a warning), and it is back once a
/// switch answers at the same path.
#[test]
fn a_link_lost_and_back_is_logged() {
    let sink = subscriber();
    let mut sw = switch::Switch::vdeplug();
    let s = Stack::new(&sw.vnl(), None).unwrap();
    let id = format!("stack={}", s.id());
    sink.wait_for(&[&id, "link opened", "carrier=true"]);
    sw.kill();
    sink.wait_for(&["WARN", &id, "NO-CARRIER"]);
    sw.restart();
    sink.wait_for(&["INFO", &id, "port open", "carrier=true"]);
}

/// The CLI, and a program with libvdestack.so preloaded that creates its own stack: quiet
/// by default (warnings only), everything with `VDESTACK_LOG=debug`.
#[test]
fn vdestack_log_turns_on_the_cli_and_the_library() {
    let bin = programs::vdestack();
    let run = |log: Option<&str>| {
        let mut c = Command::new(&bin);
        c.args(["run", "--net", "mem://log-cli", "--", "true"]);
        programs::clean_env(&mut c);
        c.env_remove("VDESTACK_LOG");
        if let Some(l) = log {
            c.env("VDESTACK_LOG", l);
        }
        let out = c.output().unwrap();
        assert!(out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    assert_eq!(run(None), "");
    let err = run(Some("debug"));
    assert!(
        err.contains("INFO vdestack::engine: stack created"),
        "{err}"
    );
    assert_eq!(run(Some("off")), "");

    let lib = bin.parent().unwrap().join("libvdestack.so");
    let preload = |log: Option<&str>| {
        let mut c = Command::new(programs::tool("true", "coreutils"));
        programs::clean_env(&mut c);
        c.env("LD_PRELOAD", &lib)
            .env("VDESTACK_NET", "mem://log-preload");
        c.env_remove("VDESTACK_LOG");
        if let Some(l) = log {
            c.env("VDESTACK_LOG", l);
        }
        let out = c.output().unwrap();
        assert!(out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    assert_eq!(preload(None), "");
    let err = preload(Some("vdestack=debug"));
    assert!(
        err.contains("stack created") && err.contains("mem://log-preload"),
        "{err}"
    );
    // A filter that makes no sense says so, and warnings still come.
    let err = preload(Some("vdestack=loud"));
    assert!(err.contains("VDESTACK_LOG=vdestack=loud"), "{err}");
}
