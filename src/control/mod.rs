//! The control path: everything that is not data (socket creation, bind, connect, accept,
//! options, names, configuration) is a request to the engine over an AF_UNIX SOCK_SEQPACKET
//! socket with an abstract name. It is fork-safe: a child, or a program exec'd with the
//! address in its environment, reaches the same engine with no memory shared.
//!
//! A stack fd names its engine and its socket by itself: the engine binds its end of each
//! socketpair to `vds:<engine>:<socket id>`, so `getpeername` on the application's end says
//! where to send requests, whatever dup/fork/exec/SCM_RIGHTS did to the fd. The id is its
//! 8 bytes, not decimal digits: the kernel hashes abstract names by a 16-bit checksum into
//! 256 buckets, and names that differ only in a few digits crowd into a few of them, which
//! made each bind walk a chain of hundreds of sockets at 10,000 connections.

pub mod client;
pub mod key;
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
    v.push(b':');
    v.extend_from_slice(&sock.to_le_bytes());
    v
}

/// Splits a socket name into the engine's control name and the socket id.
pub fn parse_sock_name(name: &[u8]) -> Option<(Vec<u8>, u64)> {
    let (head, id) = name.split_at_checked(name.len().checked_sub(8)?)?;
    let ctl = head.strip_suffix(b":")?;
    let engine = ctl.strip_prefix(PREFIX)?;
    if engine.is_empty() || engine.contains(&b':') {
        return None;
    }
    Some((ctl.to_vec(), u64::from_le_bytes(id.try_into().ok()?)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for id in [0, 42, u64::from(b':'), 0x3a3a_3a3a_3a3a_3a3a, u64::MAX] {
            let n = sock_name("123.abc", id);
            assert_eq!(parse_sock_name(&n), Some((ctl_name("123.abc"), id)));
        }
        assert_eq!(parse_sock_name(b"other:12345678"), None);
        assert_eq!(parse_sock_name(b"vds:x:short"), None);
        assert_eq!(parse_sock_name(b"vds::12345678"), None);
        // An engine's control name is not a socket name.
        assert_eq!(parse_sock_name(&ctl_name("1234.0123456789abcdef")), None);
    }
}
