//! The std traits on the `net` types, `Stack` and the errors: Debug, the fd traits, and
//! TryFrom from std's sockets (which succeeds only for a stack's sockets of the same kind).

use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, IntoRawFd, OwnedFd};

use vdestack::net::{TcpListener, TcpStream, UdpSocket};
use vdestack::{CmdError, Stack};

fn pair() -> (Stack, TcpListener, TcpStream, TcpStream) {
    let s = Stack::new("", None).unwrap();
    let l = TcpListener::bind(&s, "127.0.0.1:0").unwrap();
    let c = TcpStream::connect(&s, l.local_addr().unwrap()).unwrap();
    let (a, _) = l.accept().unwrap();
    (s, l, c, a)
}

#[test]
fn debug_shows_addresses_and_fd_as_std_does() {
    let (s, l, c, _a) = pair();
    let la = l.local_addr().unwrap();
    let (ca, cp) = (c.local_addr().unwrap(), c.peer_addr().unwrap());
    assert_eq!(
        format!("{l:?}"),
        format!("TcpListener {{ addr: {la}, fd: {} }}", l.as_raw_fd())
    );
    assert_eq!(
        format!("{c:?}"),
        format!(
            "TcpStream {{ addr: {ca}, peer: {cp}, fd: {} }}",
            c.as_raw_fd()
        )
    );
    let u = UdpSocket::bind(&s, "127.0.0.1:0").unwrap();
    let ua = u.local_addr().unwrap();
    assert_eq!(
        format!("{u:?}"),
        format!("UdpSocket {{ addr: {ua}, fd: {} }}", u.as_raw_fd())
    );
    // A stack's Debug never shows its engine's key.
    let d = format!("{s:?}");
    assert!(d.contains("Stack") && d.contains("<held>"), "{d}");
}

#[test]
fn fd_traits_round_trip() {
    let (_s, _l, c, mut a) = pair();
    assert_eq!(c.as_fd().as_raw_fd(), c.as_raw_fd());
    let raw = c.into_raw_fd();
    // SAFETY: `raw` came from into_raw_fd just above and is owned by nothing else.
    let c = unsafe { TcpStream::from_raw_fd(raw) };
    let owned = OwnedFd::from(c);
    let mut c = TcpStream::from(owned);
    c.write_all(b"round").unwrap();
    let mut buf = [0; 5];
    a.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"round");
}

#[test]
fn try_from_std_takes_only_stack_sockets_of_its_kind() {
    let (s, l, c, mut a) = pair();
    // A stack's stream seen as a std one (as a preloaded program's std sockets are) converts.
    let std_c = std::net::TcpStream::from(OwnedFd::from(c));
    let mut c = TcpStream::try_from(std_c).expect("a stack's TCP stream");
    c.write_all(b"x").unwrap();
    a.read_exact(&mut [0]).unwrap();
    // A listener is not a stream, and the other way round: the socket comes back.
    let std_l = std::net::TcpListener::from(OwnedFd::from(l));
    let std_l = TcpListener::try_from(std_l).expect("a stack's listener");
    let std_l = std::net::TcpListener::from(OwnedFd::from(std_l));
    let as_stream = std::net::TcpStream::from(OwnedFd::from(std_l));
    let back = TcpStream::try_from(as_stream).expect_err("a listener is no stream");
    let l = TcpListener::try_from(std::net::TcpListener::from(OwnedFd::from(back))).unwrap();
    assert!(l.local_addr().is_ok());
    let std_s = std::net::TcpStream::from(OwnedFd::from(c));
    assert!(TcpListener::try_from(std::net::TcpListener::from(OwnedFd::from(std_s))).is_err());
    // UDP.
    let u = UdpSocket::bind(&s, "127.0.0.1:0").unwrap();
    let std_u = std::net::UdpSocket::from(OwnedFd::from(u));
    let u = UdpSocket::try_from(std_u).expect("a stack's UDP socket");
    let std_u = std::net::UdpSocket::from(OwnedFd::from(u));
    assert!(TcpStream::try_from(std::net::TcpStream::from(OwnedFd::from(std_u))).is_err());

    // A kernel socket (the host's loopback) is not a stack's: it comes back whole and works.
    let kl = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let kc = std::net::TcpStream::connect(kl.local_addr().unwrap()).unwrap();
    let mut kc = TcpStream::try_from(kc).expect_err("a kernel socket");
    let (mut ka, _) = kl.accept().unwrap();
    kc.write_all(b"k").unwrap();
    ka.read_exact(&mut [0]).unwrap();
    let kl = TcpListener::try_from(kl).expect_err("a kernel listener");
    assert!(kl.local_addr().is_ok());
    let ku = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    assert!(UdpSocket::try_from(ku).is_err());
}

#[test]
fn a_command_error_is_an_io_error() {
    fn configure(s: &Stack) -> io::Result<()> {
        s.cmd("ip link set eth9 up")?;
        Ok(())
    }
    let s = Stack::new("mem://traits-cmd", None).unwrap();
    let e = configure(&s).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::Other);
    assert_eq!(e.to_string(), "Cannot find device \"eth9\" (status 1)");
    let inner = e.into_inner().unwrap().downcast::<CmdError>().unwrap();
    assert_eq!(inner.status, 1);
}
