//! Configuration commands: the `ip` command strings people pass to libvdestack's
//! `vde_stackcmd`, plus `dhcp` and `nameserver`.
//!
//! This module only parses; the engine applies a [`Command`] to its stack. A command line
//! runs like a shell runs it: commands separated by `;` or newlines, each in turn, stopping
//! at the first that fails, whose status (ip's own: 1 for a bad argument or device, 2 for
//! what the kernel would refuse, 255 for bad usage, 127 for an unknown program) and message
//! are the result.

mod capture;
mod parse;

use std::fmt;
use std::net::IpAddr;

pub use parse::parse;

/// A failed configuration command: the shell status and ip's message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CmdError {
    /// Non-zero exit status, as a shell would report it.
    pub status: i32,
    /// What the command printed on stderr.
    pub message: String,
}

impl CmdError {
    /// An error with `status` and `message`.
    pub fn new(status: i32, message: impl Into<String>) -> CmdError {
        CmdError {
            status,
            message: message.into(),
        }
    }

    /// ip's "Cannot find device" (status 1).
    pub fn no_device(dev: &str) -> CmdError {
        CmdError::new(1, format!("Cannot find device \"{dev}\""))
    }

    /// A refusal the kernel would send back over netlink (status 2).
    pub fn rtnetlink(what: &str) -> CmdError {
        CmdError::new(2, format!("RTNETLINK answers: {what}"))
    }
}

impl fmt::Display for CmdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (status {})", self.message, self.status)
    }
}

impl std::error::Error for CmdError {}

/// As an `io::Error` (kind `Other`), for `?` in functions that return `io::Result`.
impl From<CmdError> for std::io::Error {
    fn from(e: CmdError) -> std::io::Error {
        std::io::Error::other(e)
    }
}

/// Which address families a command is about (`-4`, `-6`, `-f`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// Both.
    Any,
    /// IPv4 only.
    V4,
    /// IPv6 only.
    V6,
}

impl Family {
    /// Whether `ip` belongs to this family.
    pub fn has(self, ip: &IpAddr) -> bool {
        match self {
            Family::Any => true,
            Family::V4 => ip.is_ipv4(),
            Family::V6 => ip.is_ipv6(),
        }
    }
}

/// A route: `default` or a prefix, through a gateway and/or a device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// None: default.
    pub dest: Option<(IpAddr, u8)>,
    /// The gateway.
    pub via: Option<IpAddr>,
    /// The device, when named.
    pub dev: Option<String>,
    /// Whether it is an IPv6 route.
    pub v6: bool,
}

/// Changes `ip link set` makes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LinkChange {
    /// up / down.
    pub up: Option<bool>,
    /// mtu N.
    pub mtu: Option<usize>,
    /// address MAC.
    pub address: Option<[u8; 6]>,
}

/// One configuration command, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Nothing to do (an empty command, or something a user-space stack has no use for).
    Nop,
    /// `ip link set DEV ...`.
    LinkSet { dev: String, change: LinkChange },
    /// `ip link show [DEV]`.
    LinkShow { dev: Option<String> },
    /// `ip addr add ADDR/PREFIX dev DEV`.
    AddrAdd {
        dev: String,
        addr: IpAddr,
        prefix: u8,
    },
    /// `ip addr del ADDR[/PREFIX] dev DEV`.
    AddrDel {
        dev: String,
        addr: IpAddr,
        prefix: Option<u8>,
    },
    /// `ip addr flush dev DEV`.
    AddrFlush { dev: String, family: Family },
    /// `ip addr show [dev DEV]`.
    AddrShow { dev: Option<String>, family: Family },
    /// `ip route add ...`; `replace` when the route may already exist.
    RouteAdd { route: Route, replace: bool },
    /// `ip route del ...`.
    RouteDel(Route),
    /// `ip route show`.
    RouteShow { family: Family },
    /// `dhcp [-t SECONDS] [DEV]`: DHCPv4 for address, gateway and nameservers, waiting at
    /// most `timeout` seconds (10 by default) for a lease.
    Dhcp {
        dev: Option<String>,
        timeout: Option<u32>,
    },
    /// `nameserver ADDR...` (also `dns`): the stack's resolvers.
    Nameservers(Vec<IpAddr>),
    /// `capture [dev DEV] FILE`: writes the link's frames, both ways, into FILE (pcapng,
    /// which tcpdump and Wireshark read), replacing any capture under way; `capture off`
    /// stops it. The engine's process opens FILE.
    Capture {
        dev: Option<String>,
        /// None: stop.
        file: Option<String>,
    },
    /// `ss -s`: a summary of the stack's sockets, and how full the engine's tables for it
    /// are (a last line of vdestack's own, to check that nothing grows).
    SocketSummary,
}

/// Splits a command string into commands, as a shell splits on `;` and newlines.
pub fn split(cmds: &str) -> impl Iterator<Item = &str> {
    cmds.split([';', '\n'])
        .map(str::trim)
        .filter(|c| !c.is_empty() && !c.starts_with('#'))
}
