//! Bridges: moving bytes between the engine's end of a socketpair and a smoltcp socket.
//!
//! Backpressure both ways: a bridge takes from the pair only what the smoltcp socket can
//! hold, and leaves data in smoltcp when the pair is full, so windows close instead of
//! memory growing.

pub mod tcp;
pub mod udp;

/// The socket sets of a stack: one per interface. Sockets talking to the stack itself
/// (loopback and its own addresses) live in `LO`, the rest in `LINK`.
pub const LINK: usize = 0;
/// Index of the loopback socket set.
pub const LO: usize = 1;

/// Completion of a deferred control request: the waiting connection and its answer.
pub type Done = (usize, crate::control::proto::Reply);
