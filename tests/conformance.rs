//! Differential conformance: the same seeded random sequences of socket calls on the
//! kernel's loopback and in a stack, compared call by call.
//!
//! The driver, tests/c/conform.c, makes libc calls (socket, bind, listen, connect, accept4,
//! send/sendto/sendmsg, recv/recvfrom/recvmsg with MSG_PEEK/MSG_TRUNC/MSG_WAITALL/
//! MSG_DONTWAIT and odd iovec shapes, shutdown, close, dup, getsockopt, setsockopt,
//! getsockname/getpeername) and prints one canonical line per call: return value, errno
//! name, msg_flags, the address (ports named by the socket that owns them) and a hash of the
//! receive buffer. It runs once as it is (the kernel) and once under `vdestack run` (the path
//! real programs take: libc calls on stack fds, through the preloaded library). Per sequence,
//! the first line that differs is the difference; a difference Linux and we have on purpose,
//! or one being fixed elsewhere, is named in [`known::KNOWN`] (docs/reliability.md says why);
//! any other fails the test with the seed and the command that replays it.
//!
//! Environment: CONFORM_SEED (default a fixed one), CONFORM_SEQUENCES (default 300),
//! CONFORM_FIRST (default 0), CONFORM_SHOW=1 prints both traces of every differing sequence,
//! CONFORM_ALL=1 makes the calls whose difference is by design too (see tests/c/conform.c).
//! The long run is scripts/reliability.d/conformance.

#[path = "support/programs.rs"]
mod programs;

#[path = "conformance/known.rs"]
mod known;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use programs::{report, run_cmd, tool, Proc, WorkDir};

/// One sequence's trace: its lines, and whether it ran to its end.
#[derive(Debug, Default, Clone)]
struct Seq {
    lines: Vec<String>,
    complete: bool,
}

/// Builds the driver with gcc.
fn build_driver(dir: &Path) -> PathBuf {
    let gcc = tool("gcc", "gcc");
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/c/conform.c");
    let bin = dir.join("conform");
    let o = Command::new(gcc)
        .args(["-O2", "-Wall", "-Werror", "-o"])
        .arg(&bin)
        .arg(&src)
        .output()
        .expect("run gcc");
    assert!(
        o.status.success(),
        "gcc conform.c: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    bin
}

/// Splits the driver's output into sequences by index.
fn parse(out: &str, into: &mut BTreeMap<u64, Seq>) -> Option<u64> {
    let mut cur: Option<u64> = None;
    for line in out.lines() {
        if let Some(rest) = line.strip_prefix("seq ") {
            let i = rest.split(' ').next().and_then(|n| n.parse().ok())?;
            cur = Some(i);
            into.insert(i, Seq::default());
        }
        let Some(i) = cur else { continue };
        let s = into.get_mut(&i).expect("sequence started");
        if line == "end" {
            s.complete = true;
        }
        s.lines.push(line.to_string());
    }
    cur
}

/// Runs sequences `first..first+count` of `seed`, on the kernel or in a stack; a sequence
/// that does not end (watchdog, crash) is kept as it stands and the run goes on after it.
fn traces(
    driver: &Path,
    dir: &Path,
    stack: bool,
    seed: u64,
    first: u64,
    count: u64,
) -> BTreeMap<u64, Seq> {
    let mut all = BTreeMap::new();
    let mut next = first;
    let name = if stack { "stack" } else { "kernel" };
    while next < first + count {
        let n = first + count - next;
        let mut cmd = if stack {
            run_cmd(None, &[])
        } else {
            let mut c = Command::new("env");
            programs::clean_env(&mut c);
            c
        };
        cmd.arg(driver)
            .arg(seed.to_string())
            .arg(n.to_string())
            .arg(next.to_string());
        if std::env::var("CONFORM_ALL").is_ok_and(|v| v == "1") {
            cmd.arg("all");
        }
        let mut p = Proc::spawn(name, cmd, dir);
        let status = p.wait(Duration::from_secs(60 + n * 2));
        let last = parse(&p.stdout(), &mut all);
        let Some(last) = last else {
            panic!(
                "{name}: the driver printed nothing ({status})\n{}",
                p.dump()
            );
        };
        if all[&last].complete && last + 1 == first + count {
            break;
        }
        let s = all.get_mut(&last).expect("parsed");
        if !s.complete {
            s.lines
                .push(format!("INCOMPLETE ({status}) {}", p.stderr().trim()));
        }
        next = last + 1;
    }
    all
}

/// The call part of a trace line (without its number).
fn call(line: &str) -> &str {
    line.split_once(' ').map_or(line, |(_, c)| c)
}

/// What comparing two runs found.
#[derive(Default)]
struct Outcome {
    sequences: u64,
    identical: u64,
    named: BTreeMap<&'static str, (u64, u64)>,
    unknown: Vec<(u64, String)>,
}

fn compare(seed: u64, k: &BTreeMap<u64, Seq>, s: &BTreeMap<u64, Seq>, show: bool, o: &mut Outcome) {
    for (i, ks) in k {
        o.sequences += 1;
        let empty = Seq::default();
        let ss = s.get(i).unwrap_or(&empty);
        let at =
            (0..ks.lines.len().max(ss.lines.len())).find(|&j| ks.lines.get(j) != ss.lines.get(j));
        let Some(at) = at else {
            o.identical += 1;
            continue;
        };
        let kl = ks.lines.get(at).map_or("", |l| l.as_str());
        let sl = ss.lines.get(at).map_or("", |l| l.as_str());
        let prior = &ks.lines[..at.min(ks.lines.len())];
        match known::classify(call(kl), call(sl), prior) {
            Some(name) => {
                let e = o.named.entry(name).or_insert((0, *i));
                e.0 += 1;
            }
            None => o.unknown.push((
                *i,
                format!(
                    "sequence {i} (replay: conform {seed} 1 {i}), line {at}:\n  kernel: {kl}\n  stack:  {sl}\n  before:\n    {}",
                    ks.lines[..at.min(ks.lines.len())]
                        .iter()
                        .rev()
                        .take(12)
                        .rev()
                        .cloned()
                        .collect::<Vec<_>>()
                        .join("\n    ")
                ),
            )),
        }
        if show {
            report(&format!(
                "--- sequence {i}, kernel:\n{}\n--- stack:\n{}",
                ks.lines.join("\n"),
                ss.lines.join("\n")
            ));
        }
    }
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Runs `count` sequences from `first` in chunks, both sides at once, and compares them.
fn run(seed: u64, first: u64, count: u64) -> (Outcome, Duration) {
    let dir = WorkDir::new();
    let driver = build_driver(dir.path());
    let show = std::env::var("CONFORM_SHOW").is_ok_and(|v| v == "1");
    let t = Instant::now();
    let mut o = Outcome::default();
    let chunk = 2000;
    let mut at = first;
    while at < first + count {
        let n = chunk.min(first + count - at);
        let (k, s) = std::thread::scope(|sc| {
            let k = sc.spawn(|| traces(&driver, dir.path(), false, seed, at, n));
            let s = traces(&driver, dir.path(), true, seed, at, n);
            (k.join().expect("kernel run"), s)
        });
        compare(seed, &k, &s, show, &mut o);
        at += n;
    }
    (o, t.elapsed())
}

#[test]
fn random_sequences_match_the_kernel() {
    let seed = env_u64("CONFORM_SEED", 0x5644_5354);
    let count = env_u64("CONFORM_SEQUENCES", 300);
    let first = env_u64("CONFORM_FIRST", 0);
    let (o, took) = run(seed, first, count);
    report(&format!(
        "conformance: seed {seed}, {} sequences in {:.1} s: {} identical to the kernel, {} with a named difference, {} with an unexplained one",
        o.sequences,
        took.as_secs_f64(),
        o.identical,
        o.named.values().map(|v| v.0).sum::<u64>(),
        o.unknown.len()
    ));
    for (name, (n, first)) in &o.named {
        let k = known::by_name(name).expect("named");
        let whose = if k.engine { "engine" } else { "by design" };
        report(&format!(
            "  named difference {name} ({whose}): {n} sequences (first: conform {seed} 1 {first}): {}",
            k.reason.split_whitespace().collect::<Vec<_>>().join(" ")
        ));
    }
    for (_, u) in o.unknown.iter().take(10) {
        report(&format!("  UNEXPLAINED {u}"));
    }
    let met = |b: bool| if b { "met" } else { "NOT met" };
    report(&format!(
        "conformance sequences run | {count} | {} | {}",
        o.sequences,
        met(o.sequences == count)
    ));
    report(&format!(
        "conformance unexplained differences | 0 | {} | {}",
        o.unknown.len(),
        met(o.unknown.is_empty())
    ));
    report(&format!(
        "conformance named differences (docs/reliability.md) | listed | {} kinds in {} sequences | -",
        o.named.len(),
        o.named.values().map(|v| v.0).sum::<u64>()
    ));
    report(&format!(
        "conformance time | - | {:.1} s | -",
        took.as_secs_f64()
    ));
    assert_eq!(o.sequences, count, "every sequence ran on both sides");
    assert!(
        o.unknown.is_empty(),
        "{} sequences differ from the kernel in ways not named in tests/conformance/known.rs (seed {seed}); first:\n{}",
        o.unknown.len(),
        o.unknown[0].1
    );
}
