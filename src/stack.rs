//! [`Stack`]: a private TCP/IP stack, the crate's entry point.

use std::io;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, OwnedFd};

use crate::config::CmdError;
use crate::control::proto::{Reply, Request};
use crate::control::Ctl;
use crate::socket;

/// A private TCP/IP stack attached to a network.
///
/// The stack runs in this process's engine thread; the handle is only a name for it, so it
/// stays valid in a child after `fork()`. Dropping the handle ends the stack and all its
/// sockets (their fds read EOF).
#[derive(Debug)]
pub struct Stack {
    ctl: Ctl,
    id: u32,
    owned: bool,
}

impl Stack {
    /// Creates a stack on the network `vnl` names, with its interface called `ifname`
    /// (`vde0` when None):
    /// - any vdeplug4 locator (`vde:///tmp/sw`, `switch:///tmp/sw`, `slirp://`, ...),
    /// - `tap://NAME`, `tun://NAME`,
    /// - `mem://NAME`, an in-process segment shared by the stacks that name it, impaired as
    ///   netem does by `mem://NAME[loss=2%/dup=1%/reorder=5%/corrupt=0.1%/delay=5ms/
    ///   jitter=1ms/rate=100mbit]` (IMPAIRED LINKS in `docs/man/vde_addstack.3`),
    /// - `""`: loopback only.
    ///
    /// A locator that is wrong on its face (bad `mem://` parameters) fails with
    /// `InvalidInput` (EINVAL) and a message saying why; a link that cannot be opened fails
    /// with its errno and a message that names the fix (the switch directory looked in, the
    /// package that provides libvdeplug).
    ///
    /// ```
    /// use vdestack::Stack;
    /// let lo = Stack::new("", None)?; // loopback only
    /// let a = Stack::new("mem://doc-new[loss=1%/delay=2ms]", Some("eth0"))?;
    /// assert!(a.cmd_output("ip link show eth0")?.contains("eth0"));
    /// let e = Stack::new("mem://doc-new[loss=200%]", None).unwrap_err();
    /// assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn new(vnl: &str, ifname: Option<&str>) -> io::Result<Stack> {
        crate::link::check(vnl)?;
        let ctl = crate::engine::local()?;
        let req = Request::AddStack {
            vnl: vnl.to_string(),
            ifname: ifname.unwrap_or("vde0").to_string(),
        };
        let named = |e: io::Error| {
            let fix = e
                .raw_os_error()
                .and_then(|n| crate::link::hint::fix(vnl, n));
            let msg = match fix {
                Some(fix) => format!("{vnl:?}: {e}: {fix}"),
                None => format!("{vnl:?}: {e}"),
            };
            io::Error::new(e.kind(), msg)
        };
        match ctl.call(&req).map_err(named)? {
            Reply::Stack(id) => Ok(Stack {
                ctl,
                id,
                owned: true,
            }),
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "unexpected reply",
            )),
        }
    }

    /// Not API (the C library's and the CLI's): a handle on a stack that another part of
    /// the program (or another process, through the environment) created. It does not end
    /// the stack when dropped.
    #[doc(hidden)]
    pub fn attach(ctl: Ctl, id: u32) -> Stack {
        Stack {
            ctl,
            id,
            owned: false,
        }
    }

    /// Not API: the engine that runs the stack.
    #[doc(hidden)]
    pub fn ctl(&self) -> &Ctl {
        &self.ctl
    }

    /// The stack's id within its engine.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// Runs configuration commands, as `vde_stackcmd` does: the `ip` command strings
    /// people pass to libvdestack (`/bin/ip addr add 10.0.0.1/24 dev vde0; ...`), separated
    /// by `;` or newlines. Output of `show` commands goes to stdout. The error carries the
    /// shell status and the message of the first command that failed.
    ///
    /// ```
    /// let s = vdestack::Stack::new("mem://doc-cmd", None)?;
    /// s.cmd("/bin/ip link set vde0 up; /bin/ip addr add 10.0.0.1/24 dev vde0")?;
    /// s.cmd("ip route add default via 10.0.0.254; nameserver 10.0.0.254")?;
    /// let e = s.cmd("ip addr add 10.0.0.2/24 dev eth9").unwrap_err();
    /// assert_eq!((e.status, e.message.as_str()), (1, "Cannot find device \"eth9\""));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn cmd(&self, cmds: &str) -> Result<(), CmdError> {
        let out = self.cmd_output(cmds)?;
        if !out.is_empty() {
            print!("{out}");
        }
        Ok(())
    }

    /// Like [`Stack::cmd`], but returns what `show` commands print.
    ///
    /// ```
    /// let s = vdestack::Stack::new("mem://doc-show", None)?;
    /// s.cmd("ip link set vde0 up; ip addr add 10.0.0.1/24 dev vde0")?;
    /// let routes = s.cmd_output("ip route")?;
    /// assert!(routes.contains("10.0.0.0/24 dev vde0"));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn cmd_output(&self, cmds: &str) -> Result<String, CmdError> {
        match self.ctl.call(&Request::Cmd {
            stack: self.id,
            cmds: cmds.to_string(),
        }) {
            Ok(Reply::Cmd {
                status: 0, output, ..
            }) => Ok(output),
            Ok(Reply::Cmd {
                status, message, ..
            }) => Err(CmdError { status, message }),
            Ok(_) => Err(CmdError {
                status: 1,
                message: "unexpected reply from the engine".into(),
            }),
            Err(e) => Err(CmdError {
                status: 1,
                message: format!("vdestack: {e}"),
            }),
        }
    }

    /// Creates a socket in the stack: AF_INET or AF_INET6, SOCK_STREAM or SOCK_DGRAM (with
    /// SOCK_NONBLOCK / SOCK_CLOEXEC honoured). The fd is one end of a socketpair: read,
    /// write, poll and epoll work on it unchanged.
    pub fn socket(&self, domain: i32, ty: i32, protocol: i32) -> io::Result<OwnedFd> {
        let (_, fd) = self.ctl.call_for_fd(&Request::Socket {
            stack: self.id,
            domain,
            ty,
            protocol,
        })?;
        socket::apply_flags(&fd, ty & (libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC))?;
        debug_assert!(fd.as_raw_fd() >= 0);
        Ok(fd)
    }

    /// The stack's nameservers (from `nameserver`, or DHCP).
    pub fn nameservers(&self) -> io::Result<Vec<IpAddr>> {
        match self.ctl.call(&Request::Nameservers { stack: self.id })? {
            Reply::Addrs(v) => Ok(v),
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "unexpected reply",
            )),
        }
    }
}

impl Stack {
    /// Captures the frames of the stack's link, both ways, into the file at `path` (created
    /// or truncated), in pcapng format: `tcpdump -r FILE` and Wireshark read it. Each frame
    /// has its time, length and direction; a frame the link dropped (an impairment's loss, a
    /// full link, a link without carrier) is still written, with a comment that says why
    /// (Wireshark shows it, `tshark -Y frame.comment` finds it). A capture under way is
    /// replaced; it ends with the stack or at [`Stack::stop_capture`]. The loopback is not
    /// captured. The same as the command `capture FILE` (see [`Stack::cmd`]).
    ///
    /// The file is opened by the process whose engine runs the stack (this one, unless the
    /// stack was attached from another process); a relative path is made absolute here.
    ///
    /// ```
    /// let dir = std::env::temp_dir().join(format!("vdestack-doc-{}", std::process::id()));
    /// std::fs::create_dir_all(&dir)?;
    /// let s = vdestack::Stack::new("mem://doc-capture", None)?;
    /// s.capture(dir.join("vde0.pcapng"))?; // then: tcpdump -r vde0.pcapng
    /// s.cmd("ip link set vde0 up; ip addr add 10.0.0.1/24 dev vde0")?;
    /// s.stop_capture()?;
    /// # std::fs::remove_dir_all(&dir)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn capture(&self, path: impl AsRef<std::path::Path>) -> io::Result<()> {
        let path = std::path::absolute(path)?;
        let bad = || {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "{}: a capture file's path is UTF-8 with no ';' or newline",
                    path.display()
                ),
            )
        };
        let p = path.to_str().ok_or_else(bad)?;
        if p.contains([';', '\n']) {
            return Err(bad());
        }
        self.cmd_output(&format!("capture {p}"))
            .map(drop)
            .map_err(io::Error::other)
    }

    /// Ends the capture [`Stack::capture`] started, writing out what it holds.
    pub fn stop_capture(&self) -> io::Result<()> {
        self.cmd_output("capture off")
            .map(drop)
            .map_err(io::Error::other)
    }

    /// Waits (at most `limit`) until no TCP connection of the stack still owes the network
    /// bytes or a FIN, as the kernel keeps sending for a process that exited: `vdestack run`
    /// calls it when the program ends, before the stack goes. Returns whether it got there.
    pub fn linger(&self, limit: std::time::Duration) -> bool {
        let end = std::time::Instant::now() + limit;
        loop {
            match self.ctl.call(&Request::Pending { stack: self.id }) {
                Ok(Reply::Int(0)) | Err(_) => return true,
                _ if std::time::Instant::now() >= end => return false,
                _ => std::thread::sleep(std::time::Duration::from_millis(5)),
            }
        }
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        if self.owned {
            let _ = self.ctl.call(&Request::DelStack { stack: self.id });
        }
    }
}
