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
#[allow(dead_code)]
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
        matches: |k, s, _| {
            matches!(
                op(k),
                "send" | "sendto" | "sendmsg" | "recv" | "recvfrom" | "recvmsg"
            ) && (result(k).starts_with("-1 EPIPE") || result(k).starts_with("-1 ENOTCONN"))
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
        name: "udp-disconnect",
        reason: "connect(AF_UNSPEC) dissolves a UDP association on Linux; the engine has no \
                 request for it and the library answers EAFNOSUPPORT. Made only with `all`.",
        engine: true,
        matches: |k, s, _| op(k) == "connect" && k.contains("UNSPEC") && result(s) != result(k),
    },
    Known {
        name: "udp-icmp-errors",
        reason: "a connected UDP socket hears ECONNREFUSED from the ICMP port-unreachable \
                 that its datagrams to a closed port draw on Linux; the engine does not pass \
                 ICMP errors to sockets. Made only with `all`.",
        engine: true,
        matches: |k, _, _| {
            result(k).starts_with("-1 ECONNREFUSED") && !op(k).starts_with("connect")
        },
    },
    Known {
        name: "listener-shutdown",
        reason: "shutdown(SHUT_RD) of a listener disconnects it on Linux (it stops listening \
                 and its port is free again); the engine keeps listening (the library stops \
                 accept() only). Made only with `all`.",
        engine: true,
        matches: |_, _, before| {
            before
                .iter()
                .any(|l| l.contains("shutdown(") && l.contains(",RD") && l.ends_with("= 0"))
                && ran_before(before, "listen(")
        },
    },
    Known {
        name: "udp-autobind-unseen",
        reason: "sendto on an unbound UDP socket binds it to an ephemeral port on Linux, which \
                 getsockname shows and which makes a later bind EINVAL; the engine binds its \
                 smoltcp socket but does not record the port as the socket's.",
        engine: true,
        matches: |k, s, before| {
            (ran_before(before, "sendto(") || ran_before(before, "sendmsg("))
                && ((op(k) == "bind" && result(k) == "-1 EINVAL" && result(s) == "0")
                    || (op(k) == "getsockname" && k.contains(":eph/") && s.contains(":0/")))
        },
    },
    Known {
        name: "bind-after-failed-connect",
        reason: "a TCP socket whose connect failed loses its port on Linux (unless bound to a \
                 nonzero port), so it may bind again; the engine keeps it bound.",
        engine: true,
        matches: |k, s, before| {
            (ran_before(before, "ECONNREFUSED") || ran_before(before, ",DEAD) = -1 EINPROGRESS"))
                && ((op(k) == "bind" && result(k) == "0" && result(s) == "-1 EINVAL")
                    || (op(k) == "setsockopt" && k.contains("V6ONLY") && result(s) == "-1 EINVAL")
                    || (op(k) == "getsockname" && k.contains(":any:") != s.contains(":any:")))
        },
    },
    Known {
        name: "connected-udp-local-address",
        reason: "connect on a UDP socket bound to the wildcard address fixes its local address \
                 to the route's source on Linux (getsockname shows 127.0.0.1); the engine \
                 keeps the wildcard.",
        engine: true,
        matches: |k, s, _| {
            op(k) == "getsockname"
                && k.contains(":lo:")
                && s.contains(":any:")
                && k.replace(":lo:", ":any:") == s
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
        name: "v6only-value",
        reason: "IPV6_V6ONLY reads back as the engine keeps it, which does not follow every \
                 way Linux changes it (a failed connect's unbinding).",
        engine: true,
        matches: |k, s, before| {
            op(k) == "getsockopt"
                && k.contains("V6ONLY")
                && result(s).starts_with('0')
                && ran_before(before, "ECONNREFUSED")
        },
    },
];

/// The name of the known difference where the traces part at `kernel` / `stack`, if any.
pub fn classify(kernel: &str, stack: &str, before: &[String]) -> Option<&'static str> {
    KNOWN
        .iter()
        .find(|d| (d.matches)(kernel, stack, before))
        .map(|d| d.name)
}
