//! The control path: everything that is not data (socket creation, bind, connect, accept,
//! options, names, configuration) is a request to the engine over an AF_UNIX SOCK_SEQPACKET
//! socket with an abstract name. It is fork-safe: a child, or a program exec'd with the
//! address in its environment, reaches the same engine with no memory shared.
//!
//! A stack fd names its engine and its socket by itself: the engine binds its end of each
//! socketpair to `vds:<engine>:<socket id>`, so `getpeername` on the application's end says
//! where to send requests, whatever dup/fork/exec/SCM_RIGHTS did to the fd.

pub mod client;
pub mod proto;

pub use client::Ctl;

/// Prefix of every abstract name the engine binds.
pub const PREFIX: &[u8] = b"vds:";

/// The abstract name of an engine's control socket.
pub fn ctl_name(engine: &str) -> Vec<u8> {
    let mut v = PREFIX.to_vec();
    v.extend_from_slice(engine.as_bytes());
    v
}

/// The abstract name the engine binds its end of socket `sock`'s pair to.
pub fn sock_name(engine: &str, sock: u64) -> Vec<u8> {
    let mut v = ctl_name(engine);
    v.extend_from_slice(format!(":{sock}").as_bytes());
    v
}

/// Splits a socket name into the engine's control name and the socket id.
pub fn parse_sock_name(name: &[u8]) -> Option<(Vec<u8>, u64)> {
    let rest = name.strip_prefix(PREFIX)?;
    let colon = rest.iter().rposition(|b| *b == b':')?;
    let id = std::str::from_utf8(&rest[colon + 1..]).ok()?.parse().ok()?;
    Some((name[..PREFIX.len() + colon].to_vec(), id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        let n = sock_name("123.abc", 42);
        assert_eq!(parse_sock_name(&n), Some((ctl_name("123.abc"), 42)));
        assert_eq!(parse_sock_name(b"other:1"), None);
        assert_eq!(parse_sock_name(b"vds:x:notanumber"), None);
    }
}
