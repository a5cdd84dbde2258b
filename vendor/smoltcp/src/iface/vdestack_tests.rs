//! vdestack: tests of vdestack's patches to the socket set and the interface (the TCP demux
//! index and listeners, egress from a touched list and a timer heap, `take_touched` with owner
//! tags, `SocketSet::add` reusing freed slots, SYNs to a listened port dropped when no socket
//! is free). Every socket lives on one interface on a loopback device, at 127.0.0.1.

use std::vec;
use std::vec::Vec;

use super::{Config, Interface, SocketHandle, SocketSet};
use crate::phy::{Loopback, Medium};
use crate::socket::{tcp, udp};
use crate::time::{Duration, Instant};
use crate::wire::{HardwareAddress, IpAddress, IpCidr, IpEndpoint, Ipv4Address};

const HOME: Ipv4Address = Ipv4Address::new(127, 0, 0, 1);

fn setup() -> (Interface, Loopback, SocketSet<'static>) {
    let mut dev = Loopback::new(Medium::Ip);
    let mut iface = Interface::new(Config::new(HardwareAddress::Ip), &mut dev, Instant::ZERO);
    iface.update_ip_addrs(|a| a.push(IpCidr::new(IpAddress::Ipv4(HOME), 8)).unwrap());
    (iface, dev, SocketSet::new(vec![]))
}

fn tcp_socket() -> tcp::Socket<'static> {
    tcp::Socket::new(
        tcp::SocketBuffer::new(vec![0; 1024]),
        tcp::SocketBuffer::new(vec![0; 1024]),
    )
}

fn udp_socket() -> udp::Socket<'static> {
    udp::Socket::new(
        udp::PacketBuffer::new(vec![udp::PacketMetadata::EMPTY; 4], vec![0; 1024]),
        udp::PacketBuffer::new(vec![udp::PacketMetadata::EMPTY; 4], vec![0; 1024]),
    )
}

/// Polls until the loopback is quiet (a frame sent in one poll is received in the next).
fn settle(iface: &mut Interface, dev: &mut Loopback, sockets: &mut SocketSet<'static>, t: i64) {
    for _ in 0..16 {
        iface.poll(Instant::from_millis(t), dev, sockets);
    }
}

fn connect(
    iface: &mut Interface,
    sockets: &mut SocketSet<'static>,
    port: u16,
    local_port: u16,
) -> SocketHandle {
    let c = sockets.add(tcp_socket());
    let cx = iface.context();
    sockets
        .get_mut::<tcp::Socket>(c)
        .connect(cx, (HOME, port), local_port)
        .unwrap();
    c
}

fn state(sockets: &mut SocketSet<'static>, h: SocketHandle) -> tcp::State {
    sockets.get::<tcp::Socket>(h).state()
}

#[test]
fn syn_goes_to_the_noted_listener_first() {
    let (mut iface, mut dev, mut sockets) = setup();
    let l1 = sockets.add(tcp_socket());
    let l2 = sockets.add(tcp_socket());
    sockets.get_mut::<tcp::Socket>(l1).listen(80).unwrap();
    sockets.get_mut::<tcp::Socket>(l2).listen(80).unwrap();
    sockets.note_listener(l2);
    let c = connect(&mut iface, &mut sockets, 80, 5000);
    settle(&mut iface, &mut dev, &mut sockets, 0);
    assert_eq!(state(&mut sockets, c), tcp::State::Established);
    // A scan of every socket would have found l1 first.
    assert_eq!(state(&mut sockets, l2), tcp::State::Established);
    assert_eq!(state(&mut sockets, l1), tcp::State::Listen);
}

#[test]
fn established_segments_are_found_through_the_index() {
    let (mut iface, mut dev, mut sockets) = setup();
    for _ in 0..100 {
        sockets.add(udp_socket());
    }
    let l = sockets.add(tcp_socket());
    sockets.get_mut::<tcp::Socket>(l).listen(80).unwrap();
    sockets.get_mut::<tcp::Socket>(l).set_ack_delay(None);
    sockets.note_listener(l);
    let c = connect(&mut iface, &mut sockets, 80, 5000);
    sockets.get_mut::<tcp::Socket>(c).set_ack_delay(None);
    sockets.index_tcp(c);
    let key = (
        IpEndpoint::new(HOME.into(), 5000),
        IpEndpoint::new(HOME.into(), 80),
    );
    assert_eq!(sockets.tcp_index.get(&key), Some(&c), "indexed at connect");
    settle(&mut iface, &mut dev, &mut sockets, 0);
    assert_eq!(state(&mut sockets, c), tcp::State::Established);
    let back = (key.1, key.0);
    assert_eq!(sockets.tcp_index.get(&back), Some(&l), "indexed at SYN");

    // Data and ACKs both ways: every segment is found without visiting every socket.
    sockets.demux_scans = 0;
    let mut buf = [0; 8];
    sockets
        .get_mut::<tcp::Socket>(c)
        .send_slice(b"ping")
        .unwrap();
    settle(&mut iface, &mut dev, &mut sockets, 10);
    let n = sockets
        .get_mut::<tcp::Socket>(l)
        .recv_slice(&mut buf)
        .unwrap();
    assert_eq!(&buf[..n], b"ping");
    sockets
        .get_mut::<tcp::Socket>(l)
        .send_slice(b"pong")
        .unwrap();
    settle(&mut iface, &mut dev, &mut sockets, 20);
    let n = sockets
        .get_mut::<tcp::Socket>(c)
        .recv_slice(&mut buf)
        .unwrap();
    assert_eq!(&buf[..n], b"pong");
    assert_eq!(sockets.demux_scans, 0, "a segment visited every socket");

    // An index entry is a hint checked with `accepts`: a wrong one costs a scan, not a
    // misdelivery, and the scan repairs it.
    sockets.tcp_index.insert(key, l);
    sockets
        .get_mut::<tcp::Socket>(l)
        .send_slice(b"more")
        .unwrap();
    settle(&mut iface, &mut dev, &mut sockets, 30);
    let n = sockets
        .get_mut::<tcp::Socket>(c)
        .recv_slice(&mut buf)
        .unwrap();
    assert_eq!(&buf[..n], b"more");
    assert_eq!(sockets.tcp_index.get(&key), Some(&c), "repaired");
}

#[test]
fn egress_visits_only_touched_sockets() {
    let (mut iface, mut dev, mut sockets) = setup();
    for port in 0..200 {
        let u = sockets.add(udp_socket());
        sockets.get_mut::<udp::Socket>(u).bind(1000 + port).unwrap();
    }
    let l = sockets.add(tcp_socket());
    sockets.get_mut::<tcp::Socket>(l).listen(80).unwrap();
    sockets.note_listener(l);
    let c = connect(&mut iface, &mut sockets, 80, 5000);
    sockets
        .get_mut::<tcp::Socket>(c)
        .set_keep_alive(Some(Duration::from_secs(5)));
    settle(&mut iface, &mut dev, &mut sockets, 0);
    assert_eq!(state(&mut sockets, c), tcp::State::Established);

    // Idle: egress looks at nothing, and the next poll is the keep-alive's.
    sockets.egress_visits = 0;
    settle(&mut iface, &mut dev, &mut sockets, 1);
    assert_eq!(sockets.egress_visits, 0);
    let at = iface.poll_at(Instant::from_millis(1), &sockets);
    assert!(
        at.is_some_and(|t| t > Instant::from_millis(1) && t <= Instant::from_secs(5)),
        "{at:?}"
    );

    // One write: the writer and the peer that the segment reached, not the 200 others.
    sockets.get_mut::<tcp::Socket>(c).send_slice(b"x").unwrap();
    settle(&mut iface, &mut dev, &mut sockets, 2);
    assert!(
        sockets.egress_visits <= 6,
        "{} visits",
        sockets.egress_visits
    );

    // No one touches the client, yet its keep-alive goes when its time comes (timer heap).
    let _ = sockets.take_touched();
    settle(&mut iface, &mut dev, &mut sockets, 5100);
    let touched: Vec<_> = sockets.take_touched().into_iter().map(|(h, _)| h).collect();
    assert!(touched.contains(&c), "keep-alive not sent: {touched:?}");
}

#[test]
fn take_touched_lists_reached_sockets_with_their_owner() {
    let (mut iface, mut dev, mut sockets) = setup();
    let mut handles = Vec::new();
    for (port, owner) in [(1000, 11), (2000, 22), (3000, 33)] {
        let u = sockets.add(udp_socket());
        sockets.get_mut::<udp::Socket>(u).bind(port).unwrap();
        sockets.set_owner(u, owner);
        handles.push(u);
    }
    settle(&mut iface, &mut dev, &mut sockets, 0);
    let _ = sockets.take_touched();
    sockets
        .get_mut::<udp::Socket>(handles[0])
        .send_slice(b"hi", IpEndpoint::new(HOME.into(), 2000))
        .unwrap();
    settle(&mut iface, &mut dev, &mut sockets, 1);
    let mut touched = sockets.take_touched();
    touched.sort();
    // The sender (a datagram went) and the receiver (one arrived), not the idle one.
    assert_eq!(touched, vec![(handles[0], 11), (handles[1], 22)]);
    assert_eq!(sockets.take_last_reached(), Some(22));
    assert_eq!(sockets.take_last_reached(), None);
    assert!(sockets.take_touched().is_empty(), "taken once");
}

#[test]
fn add_reuses_the_slot_freed_last() {
    let (_, _, mut sockets) = setup();
    let h: Vec<_> = (0..4).map(|_| sockets.add(udp_socket())).collect();
    sockets.remove(h[1]);
    sockets.remove(h[3]);
    // From the free list, last freed first (a scan would give the lowest free slot, h[1]).
    assert_eq!(sockets.add(udp_socket()), h[3]);
    assert_eq!(sockets.add(udp_socket()), h[1]);
    let fresh = sockets.add(udp_socket());
    assert!(!h.contains(&fresh));
}

#[test]
fn syn_to_a_listened_port_without_free_socket_is_dropped_not_reset() {
    let (mut iface, mut dev, mut sockets) = setup();
    sockets.listening_port(80, true);
    let c = connect(&mut iface, &mut sockets, 80, 5000);
    settle(&mut iface, &mut dev, &mut sockets, 0);
    // No reset: the client keeps trying, as with a Linux listener whose queue is full.
    assert_eq!(state(&mut sockets, c), tcp::State::SynSent);

    sockets.listening_port(80, false);
    let d = connect(&mut iface, &mut sockets, 80, 5001);
    settle(&mut iface, &mut dev, &mut sockets, 1);
    assert_eq!(
        state(&mut sockets, d),
        tcp::State::Closed,
        "closed port: reset"
    );
}
