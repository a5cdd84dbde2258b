//! Running real programs under `vdestack run` from integration tests.
//!
//! - [`Proc`]: a child in a process group of its own, with stdout and stderr in files; dropping
//!   it kills the whole group (the `vdestack run` process and everything the program started),
//!   also when the test panics.
//! - [`WorkDir`]: a private directory under /tmp, removed on drop.
//! - [`tool`]: finds a program or fails naming the Debian package; tests never skip.
//! - [`run_cmd`]: a `vdestack run` command line with a clean environment.
//!
//! Use it from an integration test with `#[path = "support/programs.rs"] mod programs;`.

#![allow(dead_code)]

use std::fs::File;
use std::io::{self, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// The `vdestack` binary cargo built for this test, after checking that libvdestack.so (which
/// `vdestack run` preloads) is beside it.
pub fn vdestack() -> PathBuf {
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_vdestack"));
    assert!(bin.exists(), "{} does not exist", bin.display());
    let lib = bin
        .parent()
        .expect("the vdestack binary has a directory")
        .join("libvdestack.so");
    assert!(
        lib.exists(),
        "{} not found: `vdestack run` preloads it; build the workspace: \
         cargo test --workspace --release (or cargo build --release --workspace)",
        lib.display()
    );
    bin
}

/// A `vdestack run [--net NET] [--conf CONF]... --` command; append the program and its
/// arguments. The environment is cleared of anything that would change which library or
/// stack is used.
pub fn run_cmd(net: Option<&str>, conf: &[&str]) -> Command {
    let mut c = Command::new(vdestack());
    c.arg("run");
    if let Some(n) = net {
        c.arg("--net").arg(n);
    }
    for k in conf {
        c.arg("--conf").arg(k);
    }
    c.arg("--");
    clean_env(&mut c);
    c
}

/// Removes the variables libvdestack and `vdestack run` read from the environment.
pub fn clean_env(c: &mut Command) {
    for v in [
        "VDESTACK_LIB",
        "VDESTACK_CTL",
        "VDESTACK_STACK",
        "VDESTACK_KEY",
        "VDESTACK_NET",
        "VDESTACK_IFNAME",
        "VDESTACK_CMD",
        "LD_PRELOAD",
    ] {
        c.env_remove(v);
    }
}

/// Finds `name` on PATH (and in /usr/bin, /bin, /usr/sbin, /sbin); panics naming the Debian
/// package `package` when it is missing.
pub fn tool(name: &str, package: &str) -> PathBuf {
    let path = std::env::var("PATH").unwrap_or_default();
    let dirs =
        path.split(':')
            .filter(|d| !d.is_empty())
            .chain(["/usr/bin", "/bin", "/usr/sbin", "/sbin"]);
    for d in dirs {
        let p = Path::new(d).join(name);
        if is_executable(&p) {
            return p;
        }
    }
    panic!(
        "`{name}` not found: this test needs it, install the Debian package {package} \
         (apt-get install {package}, or run scripts/test)"
    )
}

/// The system's python3 (/usr/bin/python3, Debian package python3) when there is one: a
/// wrapper such as pyenv's shim under /root may not run for other users; else python3 on
/// PATH.
pub fn python3() -> PathBuf {
    let sys = Path::new("/usr/bin/python3");
    if is_executable(sys) {
        return sys.to_path_buf();
    }
    tool("python3", "python3")
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Writes a line straight to the test process's stderr, past the test harness's output
/// capture, so that figures (throughput) show in the test log.
pub fn report(line: &str) {
    let mut e = io::stderr().lock();
    let _ = writeln!(e, "{line}");
}

/// A private directory `/tmp/vdestack-prog-<pid>-<n>`, removed on drop.
pub struct WorkDir(PathBuf);

impl WorkDir {
    pub fn new() -> WorkDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let d = PathBuf::from(format!(
            "/tmp/vdestack-prog-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("create the work directory");
        WorkDir(d)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn join(&self, p: &str) -> PathBuf {
        self.0.join(p)
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A running program in a process group of its own, its stdout and stderr going to files.
/// Dropping it kills the group and reaps the leader.
pub struct Proc {
    name: String,
    child: Child,
    out: PathBuf,
    err: PathBuf,
    /// The leader has been reaped (then its group has been killed already).
    reaped: Option<ExitStatus>,
}

impl Proc {
    /// Starts `cmd` (stdin from /dev/null unless the caller set it) with its output in
    /// `<dir>/<name>.out` and `<dir>/<name>.err`.
    pub fn spawn(name: &str, mut cmd: Command, dir: &Path) -> Proc {
        let out = dir.join(format!("{name}.out"));
        let err = dir.join(format!("{name}.err"));
        cmd.stdout(Stdio::from(File::create(&out).expect("create stdout file")))
            .stderr(Stdio::from(File::create(&err).expect("create stderr file")))
            .process_group(0);
        // SAFETY: prctl is async-signal-safe; it only asks the kernel to kill the child if the
        // thread that started it goes away without dropping the guard.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) < 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("{name}: cannot start {cmd:?}: {e}"));
        Proc {
            name: name.to_string(),
            child,
            out,
            err,
            reaped: None,
        }
    }

    /// Writes to the program's stdin (the command must have had `Stdio::piped()` stdin).
    pub fn write_stdin(&mut self, data: &[u8]) {
        let name = &self.name;
        let stdin = self
            .child
            .stdin
            .as_mut()
            .unwrap_or_else(|| panic!("{name}: no stdin pipe"));
        stdin
            .write_all(data)
            .and_then(|_| stdin.flush())
            .unwrap_or_else(|e| panic!("{name}: writing to stdin: {e}"));
    }

    /// Closes the program's stdin (EOF).
    pub fn close_stdin(&mut self) {
        drop(self.child.stdin.take());
    }

    /// The process id of the program (the leader of its group).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What the program wrote to stdout so far.
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.out).unwrap_or_default()).into_owned()
    }

    /// What the program wrote to stderr so far.
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.err).unwrap_or_default()).into_owned()
    }

    /// Both outputs, for failure messages.
    pub fn dump(&self) -> String {
        format!(
            "--- {} stdout ---\n{}--- {} stderr ---\n{}",
            self.name,
            self.stdout(),
            self.name,
            self.stderr()
        )
    }

    /// Whether the leader has exited, without reaping it (so its pid, the group's id, stays
    /// reserved).
    fn exited(&self) -> bool {
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: waitid on our own child with a valid siginfo_t; WNOWAIT leaves it a zombie.
        let r = unsafe {
            libc::waitid(
                libc::P_PID,
                self.child.id(),
                &mut info,
                libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
            )
        };
        // SAFETY: si_pid is valid to read after waitid filled the structure (0 if none).
        r == 0 && unsafe { info.si_pid() } != 0
    }

    /// Kills the whole process group, then reaps the leader.
    fn kill_and_reap(&mut self) -> ExitStatus {
        if let Some(s) = self.reaped {
            return s;
        }
        // SAFETY: kill(2) on the group of our unreaped child (its pid is still reserved).
        unsafe {
            libc::kill(-(self.child.id() as libc::pid_t), libc::SIGKILL);
        }
        let s = self.child.wait().expect("reap the child");
        self.reaped = Some(s);
        s
    }

    /// Waits until the program exits (at most `timeout`); kills whatever it left running in
    /// its group. Panics with its output on timeout.
    pub fn wait(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        while self.reaped.is_none() && !self.exited() {
            if Instant::now() >= deadline {
                self.kill_and_reap();
                panic!(
                    "{}: still running after {timeout:?}, killed\n{}",
                    self.name,
                    self.dump()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        self.kill_and_reap()
    }

    /// Waits until the program exits with status 0 (at most `timeout`); panics with its output
    /// otherwise.
    pub fn wait_ok(&mut self, timeout: Duration) {
        let s = self.wait(timeout);
        assert!(s.success(), "{}: {s}\n{}", self.name, self.dump());
    }

    /// Waits until `needle` shows in the program's stdout or stderr (at most `timeout`).
    /// Panics if it exits first or the time runs out.
    pub fn wait_for(&mut self, needle: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            if self.stdout().contains(needle) || self.stderr().contains(needle) {
                return;
            }
            if self.reaped.is_some() || self.exited() {
                let s = self.kill_and_reap();
                panic!(
                    "{}: exited ({s}) before printing {needle:?}\n{}",
                    self.name,
                    self.dump()
                );
            }
            if Instant::now() >= deadline {
                self.kill_and_reap();
                panic!(
                    "{}: no {needle:?} after {timeout:?}\n{}",
                    self.name,
                    self.dump()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill_and_reap();
    }
}

/// `n` pseudo-random bytes (xorshift64*, fixed seed): incompressible and reproducible.
pub fn random_bytes(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut v = Vec::with_capacity(n + 8);
    while v.len() < n {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        v.extend_from_slice(&x.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
    }
    v.truncate(n);
    v
}
