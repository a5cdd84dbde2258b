//! The fuzz targets' inputs replayed on stable: every input that once crashed a target
//! (fuzz/regressions/<target>/) and every seed (fuzz/corpus/<target>/), through the same
//! entry points (`vdestack::fuzzing`). As under libFuzzer, a panic anywhere, even one the
//! engine recovers from, aborts, naming the input. Also checks that the frames harness
//! reaches sockets, not just the parsers.

use std::cell::RefCell;
use std::io::Read;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use vdestack::fuzzing::{self, wire, Lab, Medium};

thread_local! {
    static INPUT: RefCell<Option<PathBuf>> = const { RefCell::new(None) };
}

fn abort_on_panic() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            default(info);
            let input = INPUT.with(|i| i.borrow().clone());
            eprintln!("panic on fuzz input {input:?}");
            std::process::abort();
        }));
    });
}

/// Replays every file under `dir`/<target>/; how many.
fn replay(dir: &str) -> usize {
    abort_on_panic();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz").join(dir);
    let mut n = 0;
    for target in fuzzing::TARGETS {
        let Ok(files) = std::fs::read_dir(root.join(target)) else {
            continue;
        };
        for f in files {
            let path = f.expect("a directory entry").path();
            let data = std::fs::read(&path).expect("an input");
            INPUT.with(|i| *i.borrow_mut() = Some(path.clone()));
            assert!(fuzzing::run(target, &data), "no target {target}");
            n += 1;
        }
    }
    INPUT.with(|i| *i.borrow_mut() = None);
    n
}

#[test]
fn inputs_that_crashed_a_target_no_longer_do() {
    let n = replay("regressions");
    println!("{n} regression inputs");
}

#[test]
fn seeds_run_clean() {
    let n = replay("corpus");
    assert!(n >= 6 * 2, "the seed corpus is missing ({n} files)");
}

/// Reads what waits on an application end, without waiting long.
fn read_some(fd: &std::os::fd::OwnedFd) -> Vec<u8> {
    let mut f = std::fs::File::from(fd.try_clone().expect("dup"));
    let _ = vdestack::internal::sys::poll_one(fd.as_raw_fd(), libc::POLLIN, 1000);
    let mut buf = [0u8; 256];
    let n = f.read(&mut buf).expect("a read");
    buf[..n].to_vec()
}

#[test]
fn frames_reach_sockets() {
    abort_on_panic();
    for medium in [Medium::Ethernet, Medium::Ip] {
        let lab = Lab::new(medium, true);
        let (s, p) = (wire::STACK_V4.into(), wire::PEER_V4.into());
        // Data on the connected socket reaches its application.
        let seg = wire::tcp(
            p,
            s,
            (fuzzing::PEER_PORT, lab.port),
            lab.seq.1,
            lab.seq.0,
            wire::PSH | wire::ACK,
            &[],
            b"hello",
        );
        lab.inject(&lab.packet(p, s, wire::P_TCP, &seg));
        let conn = lab.apps[3].as_ref().expect("the connected socket");
        assert_eq!(read_some(conn), b"hello", "{medium:?}");
        // A datagram to port 53 reaches the UDP socket (with its address header).
        let d = wire::udp(p, s, (999, 53), b"query");
        lab.inject(&lab.packet(p, s, wire::P_UDP, &d));
        let got = read_some(lab.apps[1].as_ref().expect("the UDP socket"));
        assert!(got.ends_with(b"query"), "{medium:?}: {got:?}");
        // A SYN to the listener is answered with a SYN|ACK.
        lab.wire.borrow_mut().tx.clear();
        let syn = wire::tcp(p, s, (5000, 80), 7, 0, wire::SYN, &[], &[]);
        lab.inject(&lab.packet(p, s, wire::P_TCP, &syn));
        let sent = lab.wire.borrow().tx.clone();
        let at = if medium == Medium::Ethernet { 14 } else { 0 } + 20 + 13;
        assert!(
            sent.iter()
                .any(|f| f.get(at) == Some(&(wire::SYN | wire::ACK))),
            "{medium:?}: no SYN|ACK in {sent:?}"
        );
    }
}

/// Each input gets a lab as new (pairs are kept from one lab to the next): a seed does the
/// same, frame for frame and reply for reply, whatever ran before it.
#[test]
fn an_input_does_the_same_whatever_ran_before() {
    abort_on_panic();
    for (target, medium) in [("frames_eth", Medium::Ethernet), ("frames_ip", Medium::Ip)] {
        let seeds = fuzzing::seeds(target);
        let first: Vec<_> = seeds
            .iter()
            .map(|(_, d)| fuzzing::frames_sent(medium, d))
            .collect();
        assert!(
            first.iter().any(|f| !f.0.is_empty()),
            "{target}: nothing sent"
        );
        assert!(
            first.iter().any(|f| !f.1.is_empty()),
            "{target}: nothing read"
        );
        for (i, (name, d)) in seeds.iter().enumerate().rev() {
            let again = fuzzing::frames_sent(medium, d);
            assert_eq!(
                again, first[i],
                "{target} {name}: not the same the second time"
            );
        }
    }
    let seeds = fuzzing::seeds("control");
    let first: Vec<_> = seeds
        .iter()
        .map(|(_, d)| fuzzing::control_replies(d))
        .collect();
    for (i, (name, d)) in seeds.iter().enumerate().rev() {
        let again = fuzzing::control_replies(d);
        assert_eq!(
            again, first[i],
            "control {name}: not the same the second time"
        );
    }
}

/// The Ethernet lab's DHCP client takes a server's offer and ack: the address comes back
/// and the peer becomes the default router (it was 10.0.0.254).
#[test]
fn dhcp_reaches_the_client() {
    use fuzzing::DhcpMessageType::{Ack, Offer};
    abort_on_panic();
    let mut lab = Lab::new(Medium::Ethernet, true);
    assert!(lab.cmd("ip route show").contains("default via 10.0.0.254"));
    lab.start_dhcp();
    assert!(!lab.cmd("ip addr show").contains("10.0.0.1/24"));
    lab.inject(&lab.dhcp_server(Offer, lab.dhcp_xid.expect("a discover")));
    let sent: Vec<Vec<u8>> = lab.wire.borrow().tx.iter().cloned().collect();
    let xid = wire::dhcp_xid(&sent).expect("a request after the offer");
    lab.inject(&lab.dhcp_server(Ack, xid));
    let routes = lab.cmd("ip route show");
    assert!(routes.contains("default via 10.0.0.2 "), "{routes}");
    assert!(lab.cmd("ip addr show").contains("10.0.0.1/24"));
}

#[test]
fn control_messages_reach_the_engine() {
    abort_on_panic();
    let seeds = |name: &str| {
        let all = fuzzing::seeds("control");
        all.into_iter().find(|(n, _)| n == name).expect("a seed").1
    };
    use vdestack::internal::control::proto::Reply;
    // With the key: a socket (its fd comes back), bound, listening, named.
    let r = fuzzing::control_replies(&seeds("socket_bind_listen"));
    let addr = "10.0.0.1:8080".parse().unwrap();
    assert_eq!(r, [Reply::Ok, Reply::Ok, Reply::Ok, Reply::Addr(addr)]);
    // Without it: EACCES; with no hello at all, the engine hangs up.
    let r = fuzzing::control_replies(&seeds("no_key"));
    assert!(
        r.iter().all(|r| *r == Reply::Err(libc::EACCES)) && !r.is_empty(),
        "{r:?}"
    );
    assert_eq!(fuzzing::control_replies(&seeds("no_hello")), []);
}
