//! The same calls on kernel TCP sockets over loopback and on two stacks on `mem://`, for
//! tests that compare what each end sees (tests/endings.rs).

#![allow(dead_code)]

use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::mpsc;
use std::sync::RwLock;
use std::time::Duration;

use vdestack::internal::socket;
use vdestack::net::{TcpListener, TcpStream};
use vdestack::Stack;

/// Fork tests hold this for writing while a child lives (the child holds a copy of every fd
/// until it closed them); the others hold it for reading, as they need a close seen at once.
pub static FORK: RwLock<()> = RwLock::new(());

pub fn no_fork() -> std::sync::RwLockReadGuard<'static, ()> {
    FORK.read().unwrap_or_else(|e| e.into_inner())
}

pub fn ms(n: u64) {
    std::thread::sleep(Duration::from_millis(n));
}

/// Errno names for transcripts.
pub fn name(e: &io::Error) -> String {
    match e.raw_os_error() {
        Some(libc::ECONNRESET) => "ECONNRESET".into(),
        Some(libc::EPIPE) => "EPIPE".into(),
        Some(libc::ENOTCONN) => "ENOTCONN".into(),
        Some(libc::EAGAIN) => "EAGAIN".into(),
        Some(libc::ENETDOWN) => "ENETDOWN".into(),
        Some(n) => format!("errno {n}"),
        None => format!("{e}"),
    }
}

pub fn shown(r: io::Result<usize>) -> String {
    match r {
        Ok(n) => n.to_string(),
        Err(e) => name(&e),
    }
}

/// Where a test runs: kernel sockets on loopback, or two stacks (client 10.0.0.1, server
/// 10.0.0.2) on a `mem://` segment of its own.
pub enum Net {
    Kernel,
    Stacks(Stack, Stack),
}

/// One end of a connection, on either.
pub enum End {
    K(std::net::TcpStream),
    S(TcpStream),
}

impl Net {
    pub fn stacks(name: &str) -> Net {
        let on = |host: u8| {
            let s = Stack::new(&format!("mem://endings-{name}"), None).expect("create stack");
            s.cmd(&format!(
                "ip link set vde0 up; ip addr add 10.0.0.{host}/24 dev vde0"
            ))
            .expect("configure stack");
            s
        };
        Net::Stacks(on(1), on(2))
    }

    /// A connection: (client end, server end), every blocking call on them bounded (5 s)
    /// so that a regression fails the test instead of hanging it.
    pub fn pair(&self) -> (End, End) {
        let (c, s) = self.pair_unbounded();
        bound_io(c.fd());
        bound_io(s.fd());
        (c, s)
    }

    pub fn pair_unbounded(&self) -> (End, End) {
        match self {
            Net::Kernel => {
                let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
                let c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
                let (s, _) = l.accept().unwrap();
                (End::K(c), End::K(s))
            }
            Net::Stacks(a, b) => {
                let l = TcpListener::bind(b, "10.0.0.2:0").unwrap();
                let at = l.local_addr().unwrap();
                let c = TcpStream::connect(a, at).unwrap();
                let (s, _) = l.accept().unwrap();
                (End::S(c), End::S(s))
            }
        }
    }
}

impl End {
    pub fn fd(&self) -> RawFd {
        match self {
            End::K(s) => s.as_raw_fd(),
            End::S(s) => s.as_raw_fd(),
        }
    }

    pub fn send(&self, b: &[u8]) -> String {
        shown(self.send_raw(b))
    }

    pub fn send_raw(&self, b: &[u8]) -> io::Result<usize> {
        match self {
            End::K(s) => (&*s).write(b),
            End::S(s) => (&*s).write(b),
        }
    }

    pub fn recv(&self) -> String {
        let mut buf = [0u8; 64];
        let r = match self {
            End::K(s) => (&*s).read(&mut buf),
            End::S(s) => (&*s).read(&mut buf),
        };
        match r {
            Ok(n) => format!("{:?}", String::from_utf8_lossy(&buf[..n])),
            Err(e) => name(&e),
        }
    }

    pub fn get(&self, level: i32, opt: i32) -> i32 {
        match self {
            End::K(s) => {
                let mut v = [0u8; 256];
                let mut len = v.len() as libc::socklen_t;
                // SAFETY: v has len writable bytes.
                let r = unsafe {
                    libc::getsockopt(
                        s.as_raw_fd(),
                        level,
                        opt,
                        v.as_mut_ptr() as *mut _,
                        &mut len,
                    )
                };
                assert_eq!(r, 0, "getsockopt: {}", io::Error::last_os_error());
                if opt == libc::TCP_INFO && level == libc::IPPROTO_TCP {
                    v[0] as i32 // tcpi_state
                } else {
                    i32::from_ne_bytes(v[..4].try_into().unwrap())
                }
            }
            End::S(s) => socket::get_opt(s.as_raw_fd(), level, opt).expect("getsockopt"),
        }
    }

    pub fn set(&self, level: i32, opt: i32, v: i32) {
        match self {
            End::K(s) => {
                // SAFETY: v is a valid int.
                let r = unsafe {
                    libc::setsockopt(s.as_raw_fd(), level, opt, &v as *const i32 as *const _, 4)
                };
                assert_eq!(r, 0, "setsockopt: {}", io::Error::last_os_error());
            }
            End::S(s) => socket::set_opt(s.as_raw_fd(), level, opt, v).expect("setsockopt"),
        }
    }

    pub fn so_error(&self) -> String {
        match self.get(libc::SOL_SOCKET, libc::SO_ERROR) {
            0 => "0".into(),
            e => name(&io::Error::from_raw_os_error(e)),
        }
    }

    pub fn state(&self) -> i32 {
        self.get(libc::IPPROTO_TCP, libc::TCP_INFO)
    }

    pub fn shutdown(&self, how: Shutdown) {
        match self {
            End::K(s) => s.shutdown(how).unwrap(),
            End::S(s) => s.shutdown(how).unwrap(),
        }
    }
}

/// Bounds blocking reads and writes on `fd` (kernel sockets and our pairs alike) to 5 s.
pub fn bound_io(fd: RawFd) {
    let tv = libc::timeval {
        tv_sec: 5,
        tv_usec: 0,
    };
    for opt in [libc::SO_RCVTIMEO, libc::SO_SNDTIMEO] {
        // SAFETY: a valid timeval of the size given.
        let r = unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                opt,
                &tv as *const _ as *const libc::c_void,
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            )
        };
        assert_eq!(r, 0, "SO_RCVTIMEO/SO_SNDTIMEO");
    }
}

/// Runs `f` on the kernel and on two stacks and asserts the transcripts match.
pub fn same(name: &str, f: impl Fn(&Net) -> Vec<String>) {
    let _g = no_fork();
    let kernel = f(&Net::Kernel);
    let ours = f(&Net::stacks(name));
    assert_eq!(
        ours, kernel,
        "{name}: stacks (left) and Linux (right) differ"
    );
}

/// Runs `f` in a thread and fails if it does not finish within `secs` (a hang).
pub fn watchdog<T: Send + 'static>(
    secs: u64,
    what: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(Duration::from_secs(secs)) {
        Ok(v) => v,
        Err(mpsc::RecvTimeoutError::Timeout) => panic!("{what}: still blocked after {secs} s"),
        Err(mpsc::RecvTimeoutError::Disconnected) => panic!("{what}: failed (see above)"),
    }
}
