//! Network namespaces for tests that touch the kernel's network (tap://, tun://).
//!
//! # The safety rule
//!
//! A test never changes the network of the machine it runs on. Every kernel-side address,
//! route and link state a test needs lives in a network namespace that the test itself
//! creates with [`NetNs::new`] and that is removed when the [`NetNs`] is dropped (also when
//! the test panics). So:
//!
//! - open the TAP/TUN device in the root namespace and leave it there down, with no address,
//!   only as long as it takes to [`NetNs::move_link`] it into the test's namespace;
//! - configure it only inside the namespace: [`NetNs::ip`] / [`NetNs::exec`] (which run in
//!   the namespace), never a bare `ip addr add` or `ip route add`;
//! - send traffic only to loopback or to addresses inside a namespace the test created.
//!
//! Tests that need this do not skip: they fail when a tool is missing
//! ([`require_tools`] names the Debian package) or when the test is not root.
//!
//! Use it from an integration test with
//! `#[path = "support/netns.rs"] mod netns;` (or a `support/mod.rs` that declares it).
//!
//! ```ignore
//! let ns = netns::NetNs::new();
//! let link = TapLink::open(&dev, Medium::Ethernet)?; // root namespace: down, no address
//! ns.move_link(&dev);
//! ns.ip(&["link", "set", "dev", &dev, "up"]);
//! ns.ip(&["addr", "add", "10.213.0.1/24", "dev", &dev]);
//! let out = ns.exec(&["ping", "-c1", "10.213.0.2"]);
//! ```

#![allow(dead_code)]

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

/// The prefix of the namespaces this module creates: `vdst-<pid>-<n>`.
const PREFIX: &str = "vdst-";

/// Where `ip netns` keeps its named namespaces.
const NETNS_DIR: &str = "/run/netns";

/// The path of the `ip` command (iproute2). Panics, naming the Debian package, when it is
/// missing.
pub fn ip_binary() -> &'static str {
    static IP: OnceLock<String> = OnceLock::new();
    IP.get_or_init(|| {
        let path = std::env::var_os("PATH").unwrap_or_default();
        std::env::split_paths(&path)
            .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(Into::into))
            .map(|dir| dir.join("ip"))
            .find(|p| p.is_file())
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_else(|| {
                panic!(
                    "this test needs the `ip` command to create a network namespace: install \
                     the Debian package iproute2 (apt-get install iproute2)"
                )
            })
    })
}

/// Checks that the tools these tests need are installed, and panics with a message naming
/// the Debian package to install when one is not. Call it first in a test, so that a
/// missing tool fails the test plainly rather than half-way.
pub fn require_tools() {
    let out = Command::new(ip_binary())
        .arg("-V")
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "running `{} -V`: {e}; install the Debian package iproute2 (apt-get install \
                 iproute2)",
                ip_binary()
            )
        });
    assert!(
        out.status.success(),
        "`{} -V` failed; install the Debian package iproute2 (apt-get install iproute2): {}",
        ip_binary(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs `ip ARGS` in the root namespace, returning its output whatever its status.
///
/// Only for commands that do not change the root namespace's addresses or routes (`netns`,
/// `link set DEV netns NS`, `show`).
fn ip_root(args: &[&str]) -> Output {
    Command::new(ip_binary())
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running ip {}: {e}", args.join(" ")))
}

/// Panics with the command's stderr when it failed.
fn check(what: &str, out: &Output) {
    assert!(
        out.status.success(),
        "{what}: {}{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
}

/// Whether a process of that pid exists.
fn alive(pid: u32) -> bool {
    Path::new("/proc").join(pid.to_string()).exists()
}

/// Removes the namespaces that earlier test processes, since killed, left behind: those named
/// `vdst-<pid>-<n>` whose pid is gone. Runs once per process.
fn remove_stale() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        let Ok(dir) = std::fs::read_dir(NETNS_DIR) else {
            return;
        };
        for entry in dir.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(pid) = name
                .strip_prefix(PREFIX)
                .and_then(|rest| rest.split_once('-'))
                .and_then(|(pid, _)| pid.parse::<u32>().ok())
            else {
                continue;
            };
            if pid != std::process::id() && !alive(pid) {
                let _ = ip_root(&["netns", "del", &name]);
            }
        }
    });
}

/// A network namespace that this test created, removed when dropped.
///
/// Its name is `vdst-<pid>-<n>`, unique among the tests of all processes running at once.
/// Its own `lo` is up. Dropping it kills what still runs inside it (processes this test
/// started there), then deletes it (`ip netns del`); the kernel then destroys the TAP/TUN
/// devices that were moved into it.
#[derive(Debug)]
pub struct NetNs {
    name: String,
}

impl NetNs {
    /// Creates a new namespace (`ip netns add vdst-<pid>-<n>`) and brings its `lo` up.
    ///
    /// Panics when `ip` is missing (naming iproute2) or the namespace cannot be created (the
    /// test must run as root).
    pub fn new() -> NetNs {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        require_tools();
        remove_stale();
        let name = format!(
            "{PREFIX}{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        // A leftover from a killed process whose pid was the same as ours.
        if Path::new(NETNS_DIR).join(&name).exists() {
            let _ = ip_root(&["netns", "del", &name]);
        }
        let out = ip_root(&["netns", "add", &name]);
        check(
            &format!(
                "ip netns add {name} (creating a network namespace needs root: CAP_SYS_ADMIN)"
            ),
            &out,
        );
        let ns = NetNs { name };
        ns.ip(&["link", "set", "dev", "lo", "up"]);
        ns
    }

    /// The namespace's name, as `ip netns` knows it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A command that runs `args` (program first) inside the namespace
    /// (`ip netns exec NAME args...`), for callers that want to set up its stdio.
    pub fn command(&self, args: &[&str]) -> Command {
        assert!(!args.is_empty(), "NetNs::command: no program given");
        let mut cmd = Command::new(ip_binary());
        cmd.args(["netns", "exec", &self.name]).args(args);
        cmd
    }

    /// Runs `args` (program first) inside the namespace and waits for it; the output is
    /// returned whatever the exit status.
    pub fn exec(&self, args: &[&str]) -> Output {
        self.command(args)
            .output()
            .unwrap_or_else(|e| panic!("ip netns exec {} {}: {e}", self.name, args.join(" ")))
    }

    /// Starts `args` (program first) inside the namespace, stdin from /dev/null, stdout and
    /// stderr piped. The namespace kills it, if it still runs, when dropped.
    pub fn spawn(&self, args: &[&str]) -> Child {
        self.command(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("ip netns exec {} {}: {e}", self.name, args.join(" ")))
    }

    /// Runs `ip ARGS` inside the namespace (`ip -n NAME ARGS`) and panics when it fails;
    /// returns its stdout.
    pub fn ip(&self, args: &[&str]) -> String {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend_from_slice(args);
        let out = ip_root(&all);
        check(&format!("ip {}", all.join(" ")), &out);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Moves the interface `ifname` from the root namespace into this one
    /// (`ip link set dev IF netns NAME`) and checks that it arrived. Its addresses, if it had
    /// any, are lost on the way; configure it afterwards with [`NetNs::ip`].
    pub fn move_link(&self, ifname: &str) {
        let out = ip_root(&["link", "set", "dev", ifname, "netns", &self.name]);
        check(
            &format!("ip link set dev {ifname} netns {}", self.name),
            &out,
        );
        assert!(
            !ip_root(&["link", "show", "dev", ifname]).status.success(),
            "{ifname} is still in the root namespace"
        );
        self.ip(&["link", "show", "dev", ifname]);
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        // Processes started in the namespace keep it alive after `ip netns del`: end them
        // (they are this test's; never this process itself).
        if let Ok(out) = Command::new(ip_binary())
            .args(["netns", "pids", &self.name])
            .output()
        {
            let me = std::process::id();
            for pid in String::from_utf8_lossy(&out.stdout)
                .split_whitespace()
                .filter_map(|p| p.parse::<u32>().ok())
                .filter(|&p| p != me && p > 1)
            {
                // SAFETY: kill(2) takes integers only; pid is a process inside this test's
                // namespace, listed by the kernel just now.
                unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
            }
        }
        let out = Command::new(ip_binary())
            .args(["netns", "del", &self.name])
            .output();
        match out {
            Ok(o) if o.status.success() => {}
            Ok(o) => eprintln!(
                "ip netns del {}: {}",
                self.name,
                String::from_utf8_lossy(&o.stderr)
            ),
            Err(e) => eprintln!("ip netns del {}: {e}", self.name),
        }
    }
}
