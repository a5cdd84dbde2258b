//! TAP and TUN links against the kernel, inside a network namespace the test creates (see
//! tests/support/netns.rs for the safety rule): the kernel pings the stack, a kernel TCP
//! client talks to a stack listener, and a stack client talks to a kernel listener.

#[path = "support/netns.rs"]
mod netns;

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use vdestack::net::{TcpListener, TcpStream};
use vdestack::Stack;

fn require_ping_and_python() {
    for (tool, pkg) in [("ping", "iputils-ping"), ("python3", "python3")] {
        let found = std::process::Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .is_ok_and(|o| o.status.success());
        assert!(found, "this test needs `{tool}`: apt-get install {pkg}");
    }
}

/// Runs the three exchanges over a device `dev` that `stack` is attached to, with the stack
/// at `.2` and the kernel at `.1` of `net` (e.g. "10.215.0").
fn exchanges(stack: &Stack, ns: &netns::NetNs, dev: &str, net: &str) {
    stack
        .cmd(&format!(
            "ip link set vde0 up; ip addr add {net}.2/24 dev vde0"
        ))
        .expect("configure the stack");
    ns.move_link(dev);
    ns.ip(&["link", "set", "dev", dev, "up"]);
    ns.ip(&["addr", "add", &format!("{net}.1/24"), "dev", dev]);

    // The kernel pings the stack.
    let out = ns.exec(&[
        "ping",
        "-c",
        "3",
        "-i",
        "0.2",
        "-W",
        "2",
        &format!("{net}.2"),
    ]);
    assert!(
        out.status.success(),
        "kernel ping of the stack failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // A kernel TCP client talks to a stack listener.
    let listener = TcpListener::bind(stack, "0.0.0.0:7000").expect("listen in the stack");
    let server = std::thread::spawn(move || {
        let (mut c, peer) = listener.accept().expect("accept");
        let mut buf = [0u8; 5];
        c.read_exact(&mut buf).expect("read");
        c.write_all(&buf).expect("echo");
        peer
    });
    let client = format!(
        "import socket\ns=socket.create_connection(('{net}.2',7000),timeout=5)\ns.sendall(b'hello')\n\
         d=b''\nwhile len(d)<5:\n  c=s.recv(5)\n  assert c\n  d+=c\nprint(d.decode())"
    );
    let out = ns.exec(&["python3", "-c", &client]);
    assert!(
        out.status.success(),
        "kernel client failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "hello");
    let peer = server.join().expect("server thread");
    assert_eq!(peer.ip().to_string(), format!("{net}.1"));

    // A stack client talks to a kernel listener.
    let srv = format!(
        "import socket\nl=socket.socket()\nl.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n\
         l.bind(('{net}.1',7001))\nl.listen(1)\nprint('ready',flush=True)\nc,a=l.accept()\n\
         d=c.recv(100)\nc.sendall(b'kernel says '+d)\nc.close()"
    );
    let mut child = ns.spawn(&["python3", "-c", &srv]);
    let mut ready = [0u8; 6];
    child
        .stdout
        .as_mut()
        .expect("stdout")
        .read_exact(&mut ready)
        .expect("kernel server ready");
    let t = Instant::now();
    let mut conn = loop {
        match TcpStream::connect(stack, format!("{net}.1:7001")) {
            Ok(c) => break c,
            Err(e) if t.elapsed() < Duration::from_secs(5) => {
                eprintln!("retrying connect: {e}");
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(e) => panic!("stack client could not connect to the kernel: {e}"),
        }
    };
    conn.write_all(b"hi").expect("write");
    let mut reply = String::new();
    conn.read_to_string(&mut reply).expect("read reply");
    assert_eq!(reply, "kernel says hi");
    assert!(child.wait().expect("wait").success());
}

fn dev_name(kind: &str) -> String {
    format!("vdk{}{}", kind, std::process::id() % 100_000)
}

#[test]
fn tap_link_talks_with_the_kernel_in_a_namespace() {
    netns::require_tools();
    require_ping_and_python();
    let ns = netns::NetNs::new();
    let dev = dev_name("a");
    let stack = Stack::new(&format!("tap://{dev}"), None).expect("open the tap (needs root)");
    exchanges(&stack, &ns, &dev, "10.215.0");
}

#[test]
fn tun_link_talks_with_the_kernel_in_a_namespace() {
    netns::require_tools();
    require_ping_and_python();
    let ns = netns::NetNs::new();
    let dev = dev_name("u");
    let stack = Stack::new(&format!("tun://{dev}"), None).expect("open the tun (needs root)");
    exchanges(&stack, &ns, &dev, "10.216.0");
    // An IP-only link has no MAC: show says so (smoltcp panics if asked for one).
    let show = stack
        .cmd_output("ip addr show vde0")
        .expect("ip addr show on a tun stack");
    assert!(
        show.contains("<POINTOPOINT,MULTICAST,NOARP,UP,LOWER_UP>") && show.contains("link/none"),
        "{show}"
    );
    assert!(show.contains("inet 10.216.0.2/24"), "{show}");
}
