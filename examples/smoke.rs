use std::io::{Read, Write};
use vdestack::net::{TcpListener, TcpStream, UdpSocket};
use vdestack::Stack;
fn main() -> anyhow::Result<()> {
    let s = Stack::new("", None)?;
    let l = TcpListener::bind(&s, "127.0.0.1:80")?;
    println!("listening on {}", l.local_addr()?);
    let t = std::thread::spawn(move || {
        let (mut c, p) = l.accept().unwrap();
        println!("accepted from {p}");
        let mut b = [0u8; 5];
        c.read_exact(&mut b).unwrap();
        c.write_all(&b).unwrap();
    });
    let mut c = TcpStream::connect(&s, "127.0.0.1:80")?;
    println!("connected {} -> {}", c.local_addr()?, c.peer_addr()?);
    c.write_all(b"hello")?;
    let mut b = [0u8; 5];
    c.read_exact(&mut b)?;
    println!("echo: {:?}", std::str::from_utf8(&b));
    t.join().unwrap();
    let u1 = UdpSocket::bind(&s, "127.0.0.1:53")?;
    let u2 = UdpSocket::bind(&s, "127.0.0.1:0")?;
    u2.send_to(b"ping", "127.0.0.1:53")?;
    let mut b = [0u8; 16];
    let (n, from) = u1.recv_from(&mut b)?;
    println!("udp {:?} from {from}", std::str::from_utf8(&b[..n]));
    Ok(())
}
