//! vdestack: private user-space TCP/IP stacks for a process or each of its threads.
//!
//! A [`Stack`] is a smoltcp interface on a link (a VDE network, a TAP/TUN device, an
//! in-process `mem://` segment, or nothing but loopback), run by an engine thread that
//! serves every stack of the process. Sockets are real fds: one end of a socketpair that
//! the engine bridges into the stack. Everything that is not data goes to the engine over a
//! fork-safe control socket. See `docs/architecture.md`.
//!
//! ```no_run
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
//! # Ok::<(), std::io::Error>(())
//! ```

pub mod bridge;
pub mod config;
pub mod control;
mod engine;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
pub mod link;
pub mod net;
pub mod resolve;
pub mod socket;
mod stack;
#[doc(hidden)]
pub mod sys;
#[cfg(feature = "tokio")]
pub mod tokio;

pub use config::CmdError;
#[doc(hidden)]
pub use engine::on_engine_thread;
pub use stack::Stack;
