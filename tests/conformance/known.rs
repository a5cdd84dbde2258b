//! The differences from Linux that the conformance harness knows by name: each with the
//! reason, and whether it is the engine's to fix (then the library cannot: the answer
//! depends on state only the engine has). docs/reliability.md lists them too.
//!
//! A difference is recognised by the first line of a sequence where the two traces part:
//! the kernel's call and result, the stack's, and the kernel's lines before it.

/// A difference we know.
pub struct Known {
    /// Its name, as the harness prints it.
    pub name: &'static str,
    /// Why we differ.
    pub reason: &'static str,
    /// Whether it lies in the engine (src/engine, src/bridge), which this harness's author
    /// may not change; false: on purpose, by design of the library.
    pub engine: bool,
    /// Whether a parting of the traces is this difference.
    pub matches: fn(kernel: &str, stack: &str, before: &[String]) -> bool,
}

fn op(line: &str) -> &str {
    line.split('(').next().unwrap_or("")
}

fn result(line: &str) -> &str {
    line.split_once(" = ").map_or("", |(_, r)| r)
}

fn ran_before(before: &[String], what: &str) -> bool {
    before.iter().any(|l| l.contains(what))
}

/// The slot a line's call is made on ("s3" of "recv(s3,...)").
fn slot(line: &str) -> &str {
    line.split_once('(')
        .and_then(|(_, r)| r.split([',', ')']).next())
        .unwrap_or("")
}

/// The known differences.
pub const KNOWN: &[Known] = &[
    Known {
        name: "stream-call-on-unconnected-socket",
        reason: "send on a TCP socket that is not connected is EPIPE on Linux and a recv is \
                 ENOTCONN; the library cannot tell the state without asking the engine on \
                 every call, and its pair takes bytes (sent once connected) and has none to \
                 read (EAGAIN, or a blocking wait). Made only with `conform ... all`.",
        engine: false,
        matches: |k, s, before| {
            // EPIPE after a close or shutdown is a reset's (tcp-reset), not this.
            let ended = ran_before(before, "close(") || ran_before(before, "shutdown(");
            matches!(
                op(k),
                "send" | "sendto" | "sendmsg" | "recv" | "recvfrom" | "recvmsg"
            ) && (result(k).starts_with("-1 ENOTCONN")
                || result(k).starts_with("-1 EPIPE") && !ended)
                && !result(s).starts_with("-1 EPIPE")
                && !result(s).starts_with("-1 ENOTCONN")
        },
    },
    Known {
        name: "udp-send-without-address",
        reason: "send without an address on a UDP socket that is not connected is \
                 EDESTADDRREQ on Linux; the engine learns it only after the datagram left \
                 the library (it sets SO_ERROR). Made only with `conform ... all`.",
        engine: false,
        matches: |k, s, _| {
            matches!(op(k), "send" | "sendto" | "sendmsg")
                && result(k).starts_with("-1 EDESTADDRREQ")
                && !result(s).starts_with("-1 EDESTADDRREQ")
        },
    },
    Known {
        name: "tcp-disconnect",
        reason: "connect(AF_UNSPEC) on a TCP connection or listener aborts it on Linux \
                 (tcp_disconnect); the engine does not dissolve those and says EOPNOTSUPP \
                 (a UDP socket's, and a TCP socket's that is not connected, are as Linux's). \
                 Made only with `all`.",
        engine: true,
        matches: |k, s, _| {
            op(k) == "connect" && k.contains("UNSPEC") && result(s) == "-1 EOPNOTSUPP"
        },
    },
    Known {
        name: "udp-icmp-errors",
        reason: "a connected UDP socket hears ECONNREFUSED from the ICMP port-unreachable \
                 that its datagrams to a closed port draw on Linux; the engine does not pass \
                 ICMP errors to sockets. Made only with `all`.",
        engine: true,
        matches: |k, _, _| {
            (result(k).starts_with("-1 ECONNREFUSED") && !op(k).starts_with("connect"))
                || (k.contains("SO_ERROR") && k.contains("val=6f00"))
        },
    },
    Known {
        name: "listener-shutdown",
        reason: "shutdown(SHUT_RD) of a listener disconnects it on Linux (it stops listening \
                 and its port is free again); the engine keeps listening (the library stops \
                 accept() only). Made only with `all`.",
        engine: true,
        matches: |_, _, before| {
            before.iter().enumerate().any(|(i, l)| {
                let c = l.split_once(' ').map_or(l.as_str(), |(_, c)| c);
                op(c) == "shutdown"
                    && !c.contains(",WR)")
                    && result(c) == "0"
                    && before[..i].iter().any(|p| {
                        // On the listener's slot, or on a copy of it (dup).
                        p.contains(&format!("listen({},", slot(c)))
                            || p.contains("listen(") && ran_before(&before[..i], "dup(")
                    })
            })
        },
    },
    Known {
        name: "tcp-failed-connect-state",
        reason: "a TCP socket whose nonblocking connect failed may listen or connect again on \
                 Linux once a connect() reported the failure; its pair was shut to show the \
                 failure (POLLIN|POLLRDHUP, EOF), a pair cannot be opened again, and the engine \
                 says ECONNABORTED and EINVAL. (A blocking connect's failure, the port given \
                 back, the report itself and SS_DISCONNECTING are as Linux's.)",
        engine: true,
        matches: |k, s, before| {
            (ran_before(before, "ECONNREFUSED")
                || ran_before(before, "ECONNRESET")
                || ran_before(before, ",DEAD) = -1 EINPROGRESS"))
                && ((op(k) == "bind" && result(k) != result(s))
                    || (op(k) == "connect" && result(s) == "-1 ECONNABORTED")
                    || (op(k) == "listen" && result(k) == "0" && result(s) == "-1 EINVAL")
                    || (op(k) == "setsockopt" && k.contains("V6ONLY") && result(s) == "-1 EINVAL")
                    || op(k) == "getsockname")
        },
    },
    Known {
        name: "udp-shut-rd-drops",
        reason: "after shutdown(SHUT_RD) of a UDP socket Linux still queues datagrams (a read \
                 of an empty queue returns 0); the library shuts the pair's reading side, so \
                 the engine's datagrams for it are dropped.",
        engine: false,
        matches: |k, s, before| {
            matches!(op(k), "recv" | "recvfrom" | "recvmsg")
                && before.iter().any(|l| {
                    l.contains("shutdown(") && (l.contains(",RD)") || l.contains(",RDWR)"))
                })
                && !result(k).starts_with("-1")
                && result(s) != result(k)
        },
    },
    Known {
        name: "tcp-shutdown-before-connect",
        reason: "shutdown of a TCP socket that is not connected says ENOTCONN on Linux yet \
                 marks the socket shut: after a later connect its sends fail with EPIPE and \
                 its reads end, and if it listens its connections inherit it (data to them \
                 is answered with RST). The library cannot shut the pair of a socket that \
                 is not connected: the engine would take it for a close.",
        engine: false,
        matches: |k, s, before| {
            before.iter().any(|l| {
                let c = l.split_once(' ').map_or(l.as_str(), |(_, c)| c);
                op(c) == "shutdown" && result(c) == "-1 ENOTCONN"
            }) && (result(k).starts_with("-1 EPIPE")
                || result(k).starts_with("-1 ENOTCONN")
                || result(k).starts_with("-1 ECONNRESET")
                || matches!(op(k), "recv" | "recvfrom" | "recvmsg") && result(k).starts_with("0 "))
                && result(s) != result(k)
        },
    },
    Known {
        name: "tcp-reset",
        reason: "engine: where Linux resets a connection the engine still ends it otherwise. \
                 The endings work (on main) made a close with unread data and data after \
                 close reset as on Linux; what this harness still sees: a listener closed \
                 with connections it had not accepted resets them on Linux (their SO_ERROR \
                 is ECONNRESET, later calls ENOTCONN/EPIPE), the stack's see no error.",
        engine: true,
        matches: |k, s, before| {
            ((result(k).starts_with("-1 ECONNRESET") || result(k).starts_with("-1 EPIPE"))
                && result(s) != result(k))
                // (A shutdown of a socket before it listened is inherited by its
                // connections, which data then resets: a Linux quirk.)
                || (op(k) == "shutdown"
                    && result(k) == "-1 ENOTCONN"
                    && result(s) == "0"
                    && (ran_before(before, "close(") || ran_before(before, "shutdown(")))
                // A reset socket whose nonblocking connect's success no connect() reported
                // is SS_CONNECTING on Linux, and a shutdown makes it SS_DISCONNECTING.
                || (op(k) == "connect"
                    && result(k) == "-1 EINVAL"
                    && result(s) == "-1 EISCONN"
                    && (ran_before(before, "close(") || ran_before(before, "shutdown(")))
                // A listener closed with connections it had not accepted resets them.
                || (op(k) == "waitconn" && k.contains("so_error=ECONNRESET"))
                || (op(k) == "getpeername"
                    && result(k) == "-1 ENOTCONN"
                    && result(s).starts_with('0')
                    && (ran_before(before, "close(") || ran_before(before, "shutdown(")))
                || (op(k) == "bind"
                    && result(k) == "0"
                    && result(s) == "-1 EINVAL"
                    && (ran_before(before, "close(") || ran_before(before, "shutdown("))
                    && ran_before(before, "listen("))
                // The reset closed the socket, whose port is then free to be refused as taken.
                || (op(k) == "bind"
                    && result(k) == "-1 EADDRINUSE"
                    && result(s) == "-1 EINVAL"
                    && ran_before(before, "shutdown("))
        },
    },
    Known {
        name: "finished-connection-forgotten",
        reason: "once a TCP connection has ended both ways the engine forgets the socket, \
                 and a later call on its fd (listen, bind, setsockopt...) says EBADF where \
                 Linux answers for a closed socket (EINVAL, ENOTCONN...).",
        engine: true,
        matches: |k, s, _| result(s) == "-1 EBADF" && result(k) != "-1 EBADF",
    },
    Known {
        name: "udp-order-across-senders",
        reason: "datagrams from different sockets of a stack to one socket can arrive in \
                 another order than they were sent: the engine moves each socket's datagrams \
                 as its pair's events come; Linux's loopback delivers each inside its sendto. \
                 (UDP promises no order.) Named only when the stack's datagram has the \
                 length of one sent before and the kernel's has another.",
        engine: true,
        matches: |k, s, before| {
            let len = |r: &str| r.split(' ').next().and_then(|n| n.parse::<i64>().ok());
            let (Some(kl), Some(sl)) = (len(result(k)), len(result(s))) else {
                return false;
            };
            matches!(op(k), "recv" | "recvfrom" | "recvmsg")
                && kl != sl
                && sl > 0
                && before.iter().any(|l| {
                    let c = l.split_once(' ').map_or(l.as_str(), |(_, c)| c);
                    op(c).starts_with("send") && len(result(c)) == Some(sl)
                })
        },
    },
    Known {
        name: "udp-datagrams-across-connect",
        reason: "datagrams on their way or queued when a UDP socket connects: Linux filters \
                 each against the peer of the moment it arrives (on loopback, inside the \
                 sender's sendto) and keeps those already queued, with their senders; the \
                 engine filters at delivery, against the new peer, and the library drops the \
                 queued ones from others and gives the old peer's the new peer's address \
                 (it must strip their address headers, which read(2) would show).",
        engine: false,
        matches: |k, s, before| {
            matches!(op(k), "recv" | "recvfrom" | "recvmsg")
                && ran_before(before, "connect(")
                && (result(k).starts_with("-1 EAGAIN") || !result(k).starts_with("-1"))
                && (result(s).starts_with("-1 EAGAIN") || !result(s).starts_with("-1"))
        },
    },
];

/// Binding a port that a socket closed a moment before.
const CLOSE_ASYNC: Known = Known {
    name: "close-is-asynchronous",
    reason: "close returns at once and the engine frees the socket's port when it sees the \
             pair's end, a moment later; a bind to that port right after the close can find \
             it still taken (EADDRINUSE), where Linux freed it in close (the socket may be \
             one that the previous sequence closed at its end).",
    engine: false,
    matches: |k, s, _| op(k) == "bind" && result(k) == "0" && result(s) == "-1 EADDRINUSE",
};

/// The name of the known difference where the traces part at `kernel` / `stack`, if any.
pub fn classify(kernel: &str, stack: &str, before: &[String]) -> Option<&'static str> {
    KNOWN
        .iter()
        .chain([&CLOSE_ASYNC])
        .find(|d| (d.matches)(kernel, stack, before))
        .map(|d| d.name)
}

/// The known difference called `name`.
pub fn by_name(name: &str) -> Option<&'static Known> {
    KNOWN.iter().chain([&CLOSE_ASYNC]).find(|d| d.name == name)
}
