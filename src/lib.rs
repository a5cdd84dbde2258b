//! vdestack: private user-space TCP/IP stacks for a process or each of its threads.
//!
//! A [`Stack`] is a smoltcp interface on a link (a VDE network, a TAP/TUN device, an
//! in-process `mem://` segment, or nothing but loopback), run by an engine thread that
//! serves every stack of the process. Sockets are real fds: one end of a socketpair that
//! the engine bridges into the stack. Everything that is not data goes to the engine over a
//! fork-safe control socket. See `docs/architecture.md`.
//!
//! Two stacks on an in-process segment, a TCP connection between them:
//!
//! ```
//! use std::io::{Read, Write};
//! use vdestack::{net::{TcpListener, TcpStream}, Stack};
//!
//! let a = Stack::new("mem://lan", None)?;
//! let b = Stack::new("mem://lan", None)?;
//! a.cmd("ip link set vde0 up; ip addr add 10.0.0.1/24 dev vde0").unwrap();
//! b.cmd("ip link set vde0 up; ip addr add 10.0.0.2/24 dev vde0").unwrap();
//! let l = TcpListener::bind(&a, "0.0.0.0:80")?;
//! let mut c = TcpStream::connect(&b, "10.0.0.1:80")?;
//! c.write_all(b"hello")?;
//! let (mut s, _) = l.accept()?;
//! let mut buf = [0; 5];
//! s.read_exact(&mut buf)?;
//! assert_eq!(&buf, b"hello");
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! On a VDE switch (start one with `vde_switch -s /tmp/sw`), configured by DHCP:
//!
//! ```no_run
//! let s = vdestack::Stack::new("vde:///tmp/sw", None)?;
//! s.cmd("ip link set vde0 up; dhcp vde0")?;
//! let c = vdestack::net::TcpStream::connect(&s, "10.0.2.2:80")?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! - [`Stack`]: a stack on a link; [`Stack::cmd`] configures it with the `ip` strings of
//!   libvdestack's `vde_stackcmd`; [`Stack::capture`] writes its frames to a pcapng file.
//! - [`net`]: `std::net`'s [`TcpListener`](net::TcpListener), [`TcpStream`](net::TcpStream)
//!   and [`UdpSocket`](net::UdpSocket) with a stack as first argument.
//! - `tokio` (feature `tokio`): `tokio::net`'s types the same way.
//! - Logs: events go through [`tracing`](https://docs.rs/tracing) (a stack created, a link
//!   lost or back, a request refused or failed, a frame an impairment dropped); install a
//!   subscriber to see them. The CLI and the C library print them as `VDESTACK_LOG` says.

#![deny(missing_docs)]

mod bridge;
mod config;
mod control;
mod engine;
mod link;
mod log;
pub mod net;
mod resolve;
mod socket;
mod stack;
mod sys;
#[cfg(feature = "tokio")]
pub mod tokio;

pub use config::CmdError;
pub use stack::Stack;

/// Not API: the parts of the engine that the C library (`shim/`), the `vdestack` CLI and the
/// crate's own tests and examples reach into. Nothing here is stable; it changes with the
/// engine, in any release. Use [`Stack`], [`net`] and (with the `tokio` feature) `tokio`.
#[doc(hidden)]
pub mod internal {
    pub use crate::engine::on_engine_thread;

    /// The socket calls on a stack fd, shared by the Rust API and the C library.
    pub mod socket {
        pub use crate::socket::*;
    }
    /// The raw syscalls (made through `syscall(2)`, never re-entering an interposed libc).
    pub mod sys {
        pub use crate::sys::*;
    }
    /// Name resolution through a stack.
    pub mod resolve {
        pub use crate::resolve::*;
    }
    /// The control path: the client handle, its protocol, the engine's key.
    pub mod control {
        pub use crate::control::*;
    }
    /// The links, their locators and their impairments.
    pub mod link {
        pub use crate::link::*;
    }
    /// The bridges between pairs and smoltcp sockets (the UDP header format).
    pub mod bridge {
        pub use crate::bridge::*;
    }
    /// Logging for the CLI and the C library (see `VDESTACK_LOG`).
    pub mod log {
        pub use crate::log::*;
    }
}
