//! Shared by the tests that build and run C programs against the C library.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The workspace root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The release build's library; fails, saying how to build it, when it is missing.
pub fn library() -> PathBuf {
    let lib = root().join("target/release/libvdestack.so");
    assert!(
        lib.exists(),
        "{} is missing: build the workspace first (cargo build --release --workspace)",
        lib.display()
    );
    lib
}

/// Fails, naming the Debian package, when `tool` is not installed.
pub fn need(tool: &str, package: &str) {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(found, "this test needs `{tool}`: apt-get install {package}");
}

/// A fresh scratch directory for test `name` of `suite`.
pub fn scratch(suite: &str, name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("vdestack-{suite}-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Builds tests/c/`source` in `dir`, linked with -lvdestack against a `lib` directory that
/// holds our library under its soname (and the bare name the linker looks for). Returns the
/// program and the directory for LD_LIBRARY_PATH.
pub fn build(dir: &Path, source: &str) -> (PathBuf, PathBuf) {
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
pub fn run(dir: &Path, prog: &Path, lib: &Path, args: &[&str], limit: Duration) {
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

/// The path of `tool`, failing with the Debian package to install when it is missing.
pub fn tool_path(tool: &str, package: &str) -> PathBuf {
    need(tool, package);
    let o = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .unwrap();
    PathBuf::from(String::from_utf8_lossy(&o.stdout).trim())
}
