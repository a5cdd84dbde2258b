//! VDE switches for tests: a vdeplug4 switch (`vde_plug null:// switch://DIR`) or a
//! classic `vde_switch -s DIR`, each in a directory of its own, killed and removed on drop
//! (also when the test panics).
//!
//! A missing tool fails the test with the Debian package to install; tests never skip.
//! Traffic through these switches only goes between the test's own stacks: the switches
//! have no tap and no uplink (`null://`).
//!
//! Use it from an integration test with `#[path = "support/switch.rs"] mod switch;`.

#![allow(dead_code)]

use std::io;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Which switch program to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `vde_plug null:// switch://DIR` (Debian package vdeplug).
    VdePlug,
    /// `vde_switch -s DIR` (Debian package vde2).
    VdeSwitch,
}

impl Kind {
    fn program(self) -> &'static str {
        match self {
            Kind::VdePlug => "vde_plug",
            Kind::VdeSwitch => "vde_switch",
        }
    }

    fn package(self) -> &'static str {
        match self {
            Kind::VdePlug => "vdeplug",
            Kind::VdeSwitch => "vde2",
        }
    }
}

/// A running switch at a private directory. Dropping it kills the process and removes the
/// directory.
pub struct Switch {
    kind: Kind,
    child: Child,
    dir: PathBuf,
}

/// A handle that kills the switch process from another thread while the [`Switch`] (which
/// reaps it, so its pid cannot be reused meanwhile) is still alive.
#[derive(Debug, Clone, Copy)]
pub struct Killer(libc::pid_t);

impl Killer {
    /// Sends SIGKILL to the switch.
    /// Sends `sig` to the switch (SIGSTOP, SIGCONT, ...).
    pub fn signal(&self, sig: libc::c_int) {
        // SAFETY: kill(2) with a pid of our own unreaped child and a valid signal.
        unsafe {
            libc::kill(self.0, sig);
        }
    }

    /// How many fds the switch holds: two per open port, and a few of its own.
    pub fn fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.0)).map_or(0, |d| d.count())
    }

    pub fn kill(&self) {
        // SAFETY: kill(2) with a pid of our own unreaped child and a valid signal.
        unsafe {
            libc::kill(self.0, libc::SIGKILL);
        }
    }
}

impl Switch {
    /// Starts a switch of `kind` in a new directory `/tmp/vdestack-test-<pid>-<n>` and waits
    /// until its control socket exists. Panics, naming the Debian package, when the program is
    /// missing.
    pub fn start(kind: Kind) -> Switch {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = PathBuf::from(format!(
            "/tmp/vdestack-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        let child = spawn(kind, &dir);
        let mut sw = Switch { kind, child, dir };
        sw.wait_ready();
        sw
    }

    /// Kills the switch (SIGKILL, as a crash) and waits until it is gone.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts the switch again at the same directory, after [`Switch::kill`], and waits until
    /// it listens. A vdeplug4 switch will not start in the directory its killed predecessor
    /// left (EEXIST), so that goes first, as an init script would do; `vde_switch` takes
    /// care of its stale control socket itself.
    pub fn restart(&mut self) {
        if self.kind == Kind::VdePlug {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
        self.child = spawn(self.kind, &self.dir);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !listening(&self.dir.join("ctl")) {
            if let Some(status) = self.child.try_wait().expect("wait for the switch") {
                panic!(
                    "{} restarted at {} exited: {status}",
                    self.kind.program(),
                    self.dir.display()
                );
            }
            assert!(
                Instant::now() < deadline,
                "the restarted switch does not listen"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// Starts a switch of `kind` at `dir`.
fn spawn(kind: Kind, dir: &Path) -> Child {
    {
        let mut cmd = Command::new(kind.program());
        match kind {
            Kind::VdePlug => {
                cmd.arg("null://")
                    .arg(format!("switch://{}", dir.display()))
                    .stdin(Stdio::null());
            }
            // vde_switch in the foreground exits on EOF on stdin: keep a pipe open to it.
            Kind::VdeSwitch => {
                cmd.arg("-s").arg(dir).stdin(Stdio::piped());
            }
        }
        cmd.stdout(Stdio::null());
        // SAFETY: prctl is async-signal-safe; it only asks the kernel to kill the switch if
        // the thread that started it goes away without dropping the guard.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) < 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) if e.kind() == io::ErrorKind::NotFound => panic!(
                "`{}` not found: this test needs it, install the Debian package {} \
                 (apt-get install {})",
                kind.program(),
                kind.package(),
                kind.package()
            ),
            Err(e) => panic!("cannot run {}: {e}", kind.program()),
        };
        child
    }
}

impl Switch {
    /// `vde_plug null:// switch://DIR`.
    pub fn vdeplug() -> Switch {
        Switch::start(Kind::VdePlug)
    }

    /// `vde_switch -s DIR`.
    pub fn vde_switch() -> Switch {
        Switch::start(Kind::VdeSwitch)
    }

    fn wait_ready(&mut self) {
        let ctl = self.dir.join("ctl");
        let deadline = Instant::now() + Duration::from_secs(10);
        // The socket file appears at bind, before listen: ready once the kernel lists it as
        // listening (a probing connect would leave a connection the switch counts).
        while !listening(&ctl) {
            if let Some(status) = self.child.try_wait().expect("wait for the switch") {
                panic!(
                    "{} at {} exited before it was ready: {status}",
                    self.kind.program(),
                    self.dir.display()
                );
            }
            assert!(
                Instant::now() < deadline,
                "{} at {}: control socket not accepting after 10 s",
                self.kind.program(),
                self.dir.display()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The locator stacks use to plug into this switch: `vde://DIR`.
    pub fn vnl(&self) -> String {
        format!("vde://{}", self.dir.display())
    }

    /// The switch's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A handle to kill the switch from elsewhere.
    pub fn killer(&self) -> Killer {
        Killer(self.child.id() as libc::pid_t)
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Switch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Whether an AF_UNIX socket bound at `path` listens (/proc/net/unix flag __SO_ACCEPTCON).
fn listening(path: &std::path::Path) -> bool {
    // Abstract names (the engine's carry binary ids) are not UTF-8.
    let Ok(table) = std::fs::read("/proc/net/unix") else {
        return false;
    };
    let table = String::from_utf8_lossy(&table);
    let path = path.to_string_lossy();
    table.lines().skip(1).any(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        f.len() >= 8
            && f[7] == path
            && u32::from_str_radix(f[3], 16).is_ok_and(|v| v & 0x10000 != 0)
    })
}
