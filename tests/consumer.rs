//! vdestack as a dependency of an outside project: a crate in a temporary directory, with its
//! own Cargo.toml that names vdestack by path and has no `[patch]`, builds and runs two
//! stacks on `mem://` with one TCP and one UDP exchange.
//!
//! It shares this worktree's target directory, profile and Cargo.lock, so only the small
//! program is compiled (the dependencies are those `cargo build --release` made), offline.

use std::path::{Path, PathBuf};
use std::process::Command;

const MAIN: &str = r#"
use std::io::{Read, Write};
use vdestack::net::{TcpListener, TcpStream, UdpSocket};
use vdestack::Stack;

fn main() {
    let a = Stack::new("mem://consumer", None).expect("stack a");
    let b = Stack::new("mem://consumer", None).expect("stack b");
    a.cmd("ip link set vde0 up; ip addr add 10.9.0.1/24 dev vde0").expect("conf a");
    b.cmd("ip link set vde0 up; ip addr add 10.9.0.2/24 dev vde0").expect("conf b");

    // TCP: 64 KiB of a pattern one way, its bytes reversed back.
    let l = TcpListener::bind(&a, "0.0.0.0:7000").expect("listen");
    let server = std::thread::spawn(move || {
        let (mut s, peer) = l.accept().expect("accept");
        let mut got = Vec::new();
        s.read_to_end(&mut got).expect("server read");
        got.reverse();
        s.write_all(&got).expect("server write");
        peer
    });
    let sent: Vec<u8> = (0..65536u32).map(|i| (i * 7 % 251) as u8).collect();
    let mut c = TcpStream::connect(&b, "10.9.0.1:7000").expect("connect");
    let me = c.local_addr().expect("local_addr");
    c.write_all(&sent).expect("client write");
    c.shutdown(std::net::Shutdown::Write).expect("shutdown");
    let mut back = Vec::new();
    c.read_to_end(&mut back).expect("client read");
    let mut want = sent.clone();
    want.reverse();
    assert_eq!(back, want, "TCP bytes");
    assert_eq!(server.join().unwrap(), me, "TCP peer");

    // UDP: a datagram each way.
    let ua = UdpSocket::bind(&a, "10.9.0.1:5353").expect("udp a");
    let ub = UdpSocket::bind(&b, "10.9.0.2:0").expect("udp b");
    ub.send_to(b"question", "10.9.0.1:5353").expect("send_to a");
    let mut buf = [0u8; 64];
    let (n, from) = ua.recv_from(&mut buf).expect("recv_from b");
    assert_eq!(&buf[..n], b"question", "UDP bytes to a");
    assert_eq!(from, ub.local_addr().unwrap(), "UDP source");
    ua.send_to(b"answer", from).expect("send_to b");
    let (n, from) = ub.recv_from(&mut buf).expect("recv_from a");
    assert_eq!(&buf[..n], b"answer", "UDP bytes to b");
    assert_eq!(from.to_string(), "10.9.0.1:5353", "UDP reply source");
    println!("consumer ok: tcp {} bytes, udp 2 datagrams", back.len());
}
"#;

fn consumer_manifest(vdestack: &Path) -> String {
    // The release profile is the workspace's, so that the built dependencies are reused.
    format!(
        r#"[package]
name = "vdestack-consumer"
version = "0.0.0"
edition = "2021"
publish = false

[dependencies]
vdestack = {{ path = "{}" }}

[profile.release]
debug = 1

[workspace]
"#,
        vdestack.display()
    )
}

#[test]
fn outside_project_builds_and_runs() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let dir = std::env::temp_dir().join(format!("vdestack-consumer-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("src")).unwrap();
    let manifest = consumer_manifest(&root);
    assert!(!manifest.contains("[patch"), "a consumer needs no [patch]");
    std::fs::write(dir.join("Cargo.toml"), manifest).unwrap();
    std::fs::write(dir.join("src/main.rs"), MAIN).unwrap();
    // The same versions as this workspace (offline, and the built artifacts match).
    std::fs::copy(root.join("Cargo.lock"), dir.join("Cargo.lock")).unwrap();

    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(["run", "--offline", "--quiet"]);
    if !cfg!(debug_assertions) {
        cmd.arg("--release");
    }
    let t = std::time::Instant::now();
    let out = cmd
        .current_dir(&dir)
        .env("CARGO_TARGET_DIR", &target)
        .env_remove("RUSTFLAGS")
        .output()
        .expect("run cargo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("consumer: cargo run took {:?}\n{stderr}", t.elapsed());
    assert!(out.status.success(), "consumer failed: {stdout}\n{stderr}");
    assert!(
        stdout.contains("consumer ok: tcp 65536 bytes, udp 2 datagrams"),
        "{stdout}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
