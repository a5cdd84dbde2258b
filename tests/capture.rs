//! Packet capture (`Stack::capture`, the `capture` command, `vdestack run --pcap`), read
//! back with tcpdump (Debian package tcpdump) and with a pcapng walk of our own for what
//! tcpdump does not print (directions, the comments on dropped frames).

#[path = "support/programs.rs"]
mod programs;

use std::io::{Read, Write};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use vdestack::net::{TcpListener, TcpStream, UdpSocket};
use vdestack::Stack;

/// `tcpdump -nn -r FILE ARGS`, its output; fails naming the package when tcpdump is missing.
fn tcpdump(file: &Path, args: &[&str]) -> String {
    let bin = programs::tool("tcpdump", "tcpdump");
    let out = Command::new(bin)
        .arg("-nn")
        .arg("-r")
        .arg(file)
        .args(args)
        .output()
        .expect("run tcpdump");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "tcpdump -r {} failed: {}\n{text}",
        file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

/// One captured frame as the pcapng file holds it.
#[derive(Debug)]
struct Frame {
    inbound: bool,
    comment: Option<String>,
    data: Vec<u8>,
}

/// Walks a pcapng file: its enhanced packet blocks, with their direction and comment.
fn frames(file: &Path) -> Vec<Frame> {
    let b = std::fs::read(file).expect("read the capture");
    let u32_at = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().unwrap());
    let u16_at = |i: usize| u16::from_le_bytes(b[i..i + 2].try_into().unwrap());
    assert_eq!(u32_at(0), 0x0A0D_0D0A, "not a pcapng file");
    let mut out = Vec::new();
    let mut at = 0;
    while at < b.len() {
        let (ty, len) = (u32_at(at), u32_at(at + 4) as usize);
        assert_eq!(u32_at(at + len - 4) as usize, len, "block lengths disagree");
        if ty == 6 {
            let caplen = u32_at(at + 20) as usize;
            let data = b[at + 28..at + 28 + caplen].to_vec();
            let mut o = at + 28 + caplen.next_multiple_of(4);
            let (mut inbound, mut comment) = (None, None);
            while o < at + len - 4 {
                let (code, olen) = (u16_at(o), u16_at(o + 2) as usize);
                let v = &b[o + 4..o + 4 + olen];
                match code {
                    0 => break,
                    1 => comment = Some(String::from_utf8(v.to_vec()).unwrap()),
                    2 => inbound = Some(u32::from_le_bytes(v.try_into().unwrap()) & 3 == 1),
                    _ => {}
                }
                o += 4 + olen.next_multiple_of(4);
            }
            out.push(Frame {
                inbound: inbound.expect("every frame says its direction"),
                comment,
                data,
            });
        }
        at += len;
    }
    out
}

fn up(s: &Stack, ip: &str) {
    s.cmd(&format!(
        "ip link set vde0 up; ip addr add {ip}/24 dev vde0"
    ))
    .unwrap();
}

/// The handshake, the data and both FINs of a known connection, as tcpdump reads them from
/// the server's capture; and the direction of every frame.
#[test]
fn a_connection_reads_back_with_tcpdump() {
    let dir = programs::WorkDir::new();
    let file = dir.path().join("server.pcapng");
    let a = Stack::new("mem://capture-tcp", None).unwrap();
    let b = Stack::new("mem://capture-tcp", None).unwrap();
    up(&a, "10.0.0.1");
    up(&b, "10.0.0.2");
    a.capture(&file).unwrap();
    let l = TcpListener::bind(&a, "0.0.0.0:80").unwrap();
    let mut c = TcpStream::connect(&b, "10.0.0.1:80").unwrap();
    let port = c.local_addr().unwrap().port();
    let (mut s, _) = l.accept().unwrap();
    c.write_all(b"hello, capture").unwrap();
    let mut buf = [0; 14];
    s.read_exact(&mut buf).unwrap();
    drop(c);
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).unwrap(); // the client's FIN
    drop(s);
    // The server's FIN and its ACK: the connection is gone from both stacks.
    assert!(a.linger(Duration::from_secs(5)) && b.linger(Duration::from_secs(5)));
    std::thread::sleep(Duration::from_millis(50));
    a.stop_capture().unwrap();

    let text = tcpdump(&file, &["tcp"]);
    let cli = format!("10.0.0.2.{port} > 10.0.0.1.80:");
    let srv = format!("10.0.0.1.80 > 10.0.0.2.{port}:");
    let has = |from: &str, what: &str| text.lines().any(|l| l.contains(from) && l.contains(what));
    assert!(has(&cli, "Flags [S], seq"), "no SYN:\n{text}");
    assert!(has(&srv, "Flags [S.], seq"), "no SYN|ACK:\n{text}");
    assert!(has(&cli, "length 14"), "no 14 bytes of data:\n{text}");
    assert!(has(&cli, "Flags [F"), "no FIN from the client:\n{text}");
    assert!(has(&srv, "Flags [F"), "no FIN from the server:\n{text}");
    let data = tcpdump(&file, &["-A", "tcp"]);
    assert!(data.contains("hello, capture"), "{data}");

    // Directions: what 10.0.0.1 sent is outbound, the rest inbound; nothing was dropped.
    let fr = frames(&file);
    assert!(fr.len() >= 8, "{fr:?}");
    for f in &fr {
        if f.data.len() >= 34 && f.data[12..14] == [8, 0] {
            let from_a = f.data[26..30] == [10, 0, 0, 1];
            assert_eq!(f.inbound, !from_a, "{f:?}");
        }
        assert_eq!(f.comment, None, "{f:?}");
    }
}

/// A DHCP exchange, through `vdestack run --pcap` on slirp:// (whose DHCP server is in the
/// plugin: nothing leaves the process).
#[test]
fn run_pcap_captures_a_dhcp_exchange() {
    let dir = programs::WorkDir::new();
    let file = dir.path().join("dhcp.pcapng");
    let mut cmd = Command::new(programs::vdestack());
    cmd.args(["run", "--net", "slirp://", "--conf", "eth,dhcp", "--pcap"])
        .arg(&file)
        .args(["--", "true"]);
    programs::clean_env(&mut cmd);
    let st = cmd.status().expect("run vdestack");
    assert!(st.success(), "vdestack run --pcap: {st}");
    let text = tcpdump(&file, &["-v", "udp port 67 or udp port 68"]);
    for what in ["Discover", "Offer", "Request", "ACK"] {
        assert!(
            text.contains(&format!("DHCP-Message (53), length 1: {what}")),
            "no DHCP {what}:\n{text}"
        );
    }
    assert!(text.contains("Your-IP 10.0.2.15"), "{text}");
}

/// Frames an impaired link dropped are in the capture, each with a comment saying so, as
/// many as the impairment counted; tcpdump still reads the file.
#[test]
fn frames_an_impairment_dropped_are_marked() {
    let dir = programs::WorkDir::new();
    let file = dir.path().join("loss.pcapng");
    let a = Stack::new("mem://capture-loss[loss=30%/seed=7]", None).unwrap();
    let b = Stack::new("mem://capture-loss", None).unwrap();
    up(&a, "10.0.0.1");
    up(&b, "10.0.0.2");
    a.capture(&file).unwrap();
    let rx = UdpSocket::bind(&b, "0.0.0.0:9").unwrap();
    let tx = UdpSocket::bind(&a, "0.0.0.0:0").unwrap();
    // The ARP exchange first (its request may be lost too: ask until it goes).
    rx.set_nonblocking(true).unwrap();
    let mut buf = [0; 64];
    'arp: for _ in 0..50 {
        tx.send_to(b"first", "10.0.0.2:9").unwrap();
        for _ in 0..20 {
            std::thread::sleep(Duration::from_millis(10));
            if rx.recv_from(&mut buf).is_ok() {
                break 'arp;
            }
        }
    }
    for i in 0..200u32 {
        tx.send_to(&i.to_be_bytes(), "10.0.0.2:9").unwrap();
    }
    std::thread::sleep(Duration::from_millis(100));
    a.stop_capture().unwrap();
    let lost = vdestack::internal::link::impair::counts("capture-loss")
        .unwrap()
        .lost;
    let fr = frames(&file);
    let dropped: Vec<&Frame> = fr
        .iter()
        .filter(|f| {
            f.comment
                .as_deref()
                .is_some_and(|c| c.starts_with("dropped by the link's impairments"))
        })
        .collect();
    assert!(lost > 20, "30% of 200 frames: {lost}");
    assert_eq!(dropped.len() as u64, lost, "every lost frame is marked");
    assert!(dropped.iter().all(|f| !f.inbound));
    let text = tcpdump(&file, &["udp port 9"]);
    assert!(text.lines().count() as u64 >= 200, "{text}");
}

/// The command form, its errors, and a capture replaced by another.
#[test]
fn the_capture_command() {
    let dir = programs::WorkDir::new();
    let a = Stack::new("mem://capture-cmd", None).unwrap();
    up(&a, "10.0.0.1");
    let e = a.cmd("capture dev eth9 /tmp/x").unwrap_err();
    assert_eq!(
        (e.status, e.message.as_str()),
        (1, "Cannot find device \"eth9\"")
    );
    let e = a.cmd("capture /nonexistent-dir/x.pcapng").unwrap_err();
    assert!(
        e.message
            .starts_with("capture: /nonexistent-dir/x.pcapng: "),
        "{e}"
    );
    assert_eq!(a.cmd("capture").unwrap_err().status, 255);
    let lo = Stack::new("", None).unwrap();
    assert_eq!(lo.cmd("capture /tmp/x").unwrap_err().status, 1);

    let first = dir.path().join("first file.pcapng");
    let second = dir.path().join("second.pcapng");
    a.cmd(&format!("capture dev vde0 {}", first.display()))
        .unwrap();
    a.cmd(&format!("capture {}", second.display())).unwrap();
    let b = Stack::new("mem://capture-cmd", None).unwrap();
    up(&b, "10.0.0.2");
    let u = UdpSocket::bind(&b, "0.0.0.0:0").unwrap();
    u.send_to(b"x", "10.0.0.1:7").unwrap();
    std::thread::sleep(Duration::from_millis(100));
    a.cmd("capture off").unwrap();
    assert!(frames(&first).is_empty());
    let text = tcpdump(&second, &[]);
    assert!(
        text.contains("10.0.0.2.") && text.contains("> 10.0.0.1.7: UDP"),
        "{text}"
    );
    drop(a);
}
