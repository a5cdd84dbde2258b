//! Configuration through `Stack::cmd`: libvdestack's man-page strings, what `show` prints,
//! DHCP, nameservers, and every error path with its status.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use vdestack::net::{TcpListener, TcpStream};
use vdestack::{CmdError, Stack};

fn stack(net: &str) -> Stack {
    Stack::new(&format!("mem://config-{net}"), None).expect("create a stack")
}

fn status(s: &Stack, cmds: &str) -> CmdError {
    s.cmd(cmds).expect_err(cmds)
}

fn out(s: &Stack, cmds: &str) -> String {
    s.cmd_output(cmds).unwrap_or_else(|e| panic!("{cmds}: {e}"))
}

#[test]
fn man_page_strings_configure_the_stack() {
    let s = stack("man");
    s.cmd("/bin/ip link set vde0 up; /bin/ip addr add 10.0.0.1/24 dev vde0; /bin/ip route add default via 10.0.0.254")
        .expect("libvdestack's example");
    s.cmd("ip -6 addr add fc00::1/64 dev vde0 nodad")
        .expect("the IPv6 example");
    let addrs = out(&s, "ip addr show dev vde0");
    assert!(
        addrs.contains("vde0: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 65535 state UP"),
        "{addrs}"
    );
    assert!(
        addrs.contains("inet 10.0.0.1/24 scope global vde0"),
        "{addrs}"
    );
    assert!(addrs.contains("inet6 fc00::1/64 scope global"), "{addrs}");
    let routes = out(&s, "ip route");
    assert_eq!(routes, "10.0.0.0/24 dev vde0 proto kernel scope link src 10.0.0.1\ndefault via 10.0.0.254 dev vde0\n");
    let v6 = out(&s, "ip -6 route show");
    assert_eq!(v6, "fc00::/64 dev vde0 proto kernel metric 256\n");
    // Family filters.
    assert!(!out(&s, "ip -4 addr").contains("fc00::1"));
    assert!(!out(&s, "ip -6 a").contains("10.0.0.1"));
}

#[test]
fn commands_split_on_newlines_and_stop_at_the_first_failure() {
    let s = stack("stop");
    let e = status(
        &s,
        "ip link set vde0 up\nip addr add 10.0.0.1/24 dev eth9\nip addr add 10.0.0.2/24 dev vde0",
    );
    assert_eq!(e.status, 1);
    assert_eq!(e.message, "Cannot find device \"eth9\"");
    let a = out(&s, "ip addr");
    assert!(
        a.contains("state UP"),
        "the command before the failure ran: {a}"
    );
    assert!(
        !a.contains("10.0.0.2"),
        "the command after the failure did not run: {a}"
    );
}

#[test]
fn error_paths_have_ips_statuses() {
    let s = stack("errors");
    s.cmd("ip link set vde0 up; ip addr add 10.0.0.1/24 dev vde0; ip route add 10.9.0.0/16 via 10.0.0.9")
        .unwrap();
    let cases: &[(&str, i32, &str)] = &[
        (
            "ifconfig vde0 up",
            127,
            "vdestack: ifconfig: command not found",
        ),
        ("ip", 255, "Usage: ip [ OPTIONS ] OBJECT { COMMAND | help }"),
        (
            "ip frob",
            255,
            "Object \"frob\" is unknown, try \"ip help\".",
        ),
        (
            "ip addr frob",
            255,
            "Command \"frob\" is unknown, try \"ip address help\".",
        ),
        (
            "ip addr add 10.0.0.300/24 dev vde0",
            1,
            "Error: any valid prefix is expected rather than \"10.0.0.300/24\".",
        ),
        (
            "ip addr add 10.0.0.5/24 dev eth9",
            1,
            "Cannot find device \"eth9\"",
        ),
        ("ip link set eth9 up", 1, "Cannot find device \"eth9\""),
        (
            "ip addr add 10.0.0.1/24 dev vde0",
            2,
            "RTNETLINK answers: File exists",
        ),
        // smoltcp panicked on these (found by fuzzing), and kept the address.
        (
            "ip -6 addr add ff00:: dev vde0",
            2,
            "Error: ipv6: Cannot assign multicast address without \"IFA_F_MCAUTOJOIN\" flag.",
        ),
        (
            "ip addr add :: dev vde0",
            2,
            "Error: ipv6: Invalid address.",
        ),
        (
            "ip addr add 224.0.0.1/4 dev vde0",
            2,
            "RTNETLINK answers: Cannot assign requested address",
        ),
        (
            "ip addr add 255.255.255.255 dev vde0",
            2,
            "RTNETLINK answers: Cannot assign requested address",
        ),
        (
            "ip addr del 10.0.0.77/24 dev vde0",
            2,
            "RTNETLINK answers: Cannot assign requested address",
        ),
        (
            "ip route add default via 192.168.1.1",
            2,
            "Error: Nexthop has invalid gateway.",
        ),
        (
            "ip route add 10.9.0.0/16 via 10.0.0.8",
            2,
            "RTNETLINK answers: File exists",
        ),
        (
            "ip route del 10.8.0.0/16",
            2,
            "RTNETLINK answers: No such process",
        ),
        (
            "ip link set vde0 mtu 70000",
            2,
            "Error: mtu greater than device maximum (65535).",
        ),
        (
            "ip link set vde0 address 01:00:5e:00:00:01",
            2,
            "RTNETLINK answers: Cannot assign requested address",
        ),
        (
            "ip link set vde0 mtu lots",
            255,
            "Error: argument \"lots\" is wrong: Invalid \"mtu\" value",
        ),
        (
            "nameserver 10.0.0.x",
            1,
            "nameserver: invalid address in \"10.0.0.x\"",
        ),
    ];
    for (cmd, code, msg) in cases {
        let e = status(&s, cmd);
        assert_eq!((e.status, e.message.as_str()), (*code, *msg), "{cmd}");
    }
    // None of that changed what was configured.
    assert!(out(&s, "ip addr").contains("inet 10.0.0.1/24"));
    assert!(out(&s, "ip route").contains("10.9.0.0/16 via 10.0.0.9 dev vde0"));
    assert!(!out(&s, "ip addr").contains("ff00::"));
    // And addresses can still be added (a panic left the bad one behind, and every later
    // change panicked).
    s.cmd("ip -6 addr add fc00::5/64 dev vde0").unwrap();
}

#[test]
fn addr_del_flush_and_route_del() {
    let s = stack("del");
    s.cmd("ip addr add 10.0.0.1/24 dev vde0; ip addr add 10.0.0.2/24 dev vde0; ip -6 addr add fc00::2/64 dev vde0")
        .unwrap();
    s.cmd("ip addr del 10.0.0.1/24 dev vde0").unwrap();
    let a = out(&s, "ip addr");
    assert!(!a.contains("10.0.0.1/") && a.contains("10.0.0.2/24"), "{a}");
    s.cmd("ip -4 addr flush dev vde0").unwrap();
    let a = out(&s, "ip addr");
    assert!(
        !a.contains("inet 10.") && a.contains("fc00::2/64"),
        "-4 flush keeps IPv6: {a}"
    );
    s.cmd("ip addr flush dev vde0").unwrap();
    assert!(!out(&s, "ip addr").contains("fc00::2"));
    s.cmd("ip addr add 10.0.0.1/24 dev vde0; ip route add default via 10.0.0.254; ip route del default").unwrap();
    assert!(!out(&s, "ip route").contains("default"));
    s.cmd("ip route add default via 10.0.0.253; ip route replace default via 10.0.0.254")
        .unwrap();
    assert!(out(&s, "ip route").contains("default via 10.0.0.254 dev vde0"));
}

#[test]
fn link_settings_show_and_take_effect() {
    let s = stack("link");
    s.cmd("ip link set lo up; ip link set dev vde0 address 02:00:00:00:00:42 mtu 1280 up")
        .unwrap();
    let l = out(&s, "ip link show vde0");
    assert_eq!(
        l,
        "2: vde0: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1280 state UP\n    link/ether 02:00:00:00:00:42 brd ff:ff:ff:ff:ff:ff\n"
    );
    s.cmd("ip link set vde0 down").unwrap();
    assert!(out(&s, "ip link").contains("<BROADCAST,MULTICAST> mtu 1280 state DOWN"));
}

/// Data crosses a link with a small MTU, and stops crossing when the link goes down.
#[test]
fn mtu_and_link_down_change_traffic() {
    let a = stack("mtu");
    let b = stack("mtu");
    a.cmd("ip link set vde0 mtu 576 up; ip addr add 10.0.0.1/24 dev vde0")
        .unwrap();
    b.cmd("ip link set vde0 mtu 576 up; ip addr add 10.0.0.2/24 dev vde0")
        .unwrap();
    let l = TcpListener::bind(&a, "0.0.0.0:80").unwrap();
    let data: Vec<u8> = (0..1 << 20)
        .map(|i: u32| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let mut c = TcpStream::connect(&b, "10.0.0.1:80").unwrap();
    let sent = data.clone();
    let w = std::thread::spawn(move || c.write_all(&sent).map(|_| c));
    let (mut s, _) = l.accept().unwrap();
    let mut got = vec![0; data.len()];
    s.read_exact(&mut got).unwrap();
    assert!(got == data, "1 MiB crossed a 576-byte MTU intact");
    let _c = w.join().unwrap().unwrap();

    b.cmd("ip link set vde0 down").unwrap();
    let t = Instant::now();
    let r = TcpStream::connect(&b, "10.0.0.1:80");
    let e = r.expect_err("no connection over a down link");
    assert_eq!(e.raw_os_error(), Some(libc::ENETUNREACH), "{e}");
    assert!(t.elapsed() < Duration::from_secs(5));
}

#[test]
fn a_loopback_only_stack_has_only_lo() {
    let s = Stack::new("", None).unwrap();
    s.cmd("ip link set lo up").unwrap();
    assert_eq!(
        status(&s, "ip link set vde0 up").message,
        "Cannot find device \"vde0\""
    );
    let a = out(&s, "ip addr");
    assert!(
        a.starts_with("1: lo: <LOOPBACK,UP,LOWER_UP>") && a.contains("inet 127.0.0.1/8"),
        "{a}"
    );
    assert!(!a.contains("vde0"), "{a}");
}

#[test]
fn the_interface_name_is_the_one_given() {
    let s = Stack::new("mem://config-ifname", Some("eth1")).unwrap();
    s.cmd("ip link set eth1 up; ip addr add 10.1.0.1/16 dev eth1")
        .unwrap();
    assert!(out(&s, "ip addr show eth1").contains("inet 10.1.0.1/16 scope global eth1"));
    assert_eq!(status(&s, "ip link set vde0 up").status, 1);
}

#[test]
fn nameservers_are_set() {
    let s = stack("dns");
    s.cmd("nameserver 10.0.0.254 fc00::53").unwrap();
    assert_eq!(
        s.nameservers().unwrap(),
        [
            "10.0.0.254".parse::<std::net::IpAddr>().unwrap(),
            "fc00::53".parse().unwrap()
        ]
    );
}

/// DHCP from the slirp DHCP server of libvdeplug-slirp (no packet leaves this process: the
/// lease is all that is asked for). Commands after `dhcp` run once the lease came.
#[test]
fn dhcp_takes_address_gateway_and_dns_from_slirp() {
    let s = Stack::new("slirp://", None).unwrap_or_else(|e| {
        panic!("slirp:// needs the vdeplug slirp plugin: apt-get install libvdeplug-slirp ({e})")
    });
    let o = out(&s, "dhcp; ip -4 addr show dev vde0; ip route");
    assert!(o.contains("inet 10.0.2.15/24 scope global vde0"), "{o}");
    assert!(o.contains("default via 10.0.2.2 dev vde0"), "{o}");
    assert_eq!(
        s.nameservers().unwrap(),
        ["10.0.2.3".parse::<std::net::IpAddr>().unwrap()]
    );
}

#[test]
fn dhcp_without_a_server_fails_after_its_timeout() {
    let s = stack("nodhcp");
    let t = Instant::now();
    let e = status(&s, "dhcp -t 1 vde0; ip addr add 10.0.0.1/24 dev vde0");
    assert_eq!(
        (e.status, e.message.as_str()),
        (1, "dhcp: no lease received")
    );
    assert!(
        t.elapsed() >= Duration::from_millis(900) && t.elapsed() < Duration::from_secs(5),
        "{:?}",
        t.elapsed()
    );
    assert!(
        !out(&s, "ip addr").contains("10.0.0.1"),
        "commands after a failed dhcp did not run"
    );
}
