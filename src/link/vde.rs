//! vdeplug4 links: any VNL that libvdeplug understands (`vde://`, `switch://`, `hub://`,
//! `ptp://`, `udp://`, `vxvde://`, `vxlan://`, `slirp://`, `cmd://`, ...), through
//! [`vde_sys`], which loads libvdeplug at run time.

use std::ffi::{c_void, CString};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use super::pending::Pending;
use super::retry::{self, Retry};
use super::{Background, Changed, Link, Medium};
use crate::sys;

/// The description this stack gives the switch for its port.
const DESCR: &str = "vdestack";

/// The length of an Ethernet header: a shorter read is not a frame.
const ETHERNET_HEADER: usize = 14;

/// A link to a vdeplug4 network, opened with `vde_open`.
///
/// Carries Ethernet frames of up to 1514 bytes (header included). The data descriptor is
/// non-blocking: [`Link::recv`] returns `WouldBlock` when no frame is waiting, and
/// [`Link::send`] drops a frame when the network is full. A network that goes away (its
/// control connection ends, or it refuses a frame) is opened again with backoff, by
/// `vde_open` on an opener thread. The connection is closed (`vde_close`) when the link is
/// dropped.
pub struct VdeLink {
    lib: &'static vde_sys::VdePlug,
    vnl: String,
    background: Background,
    state: State,
    retry: Retry,
    /// The other end refused a frame (ECONNREFUSED): its switch is gone.
    gone: bool,
    /// The user has been told the network is gone (once per outage).
    told: bool,
}

impl std::fmt::Debug for VdeLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VdeLink")
            .field("vnl", &self.vnl)
            .field("state", &self.state)
            .finish()
    }
}

#[derive(Debug)]
enum State {
    Open(Conn),
    /// `vde_open` runs on an opener thread.
    Opening(Pending<Conn>),
    /// Gone: `vde_open` again when `timer` expires.
    Waiting {
        timer: OwnedFd,
    },
    /// Gone, and no timer could be made to try again.
    Failed,
}

/// An open libvdeplug connection, closed on drop.
#[derive(Debug)]
struct Conn {
    lib: &'static vde_sys::VdePlug,
    conn: *mut vde_sys::VDECONN,
    fd: RawFd,
    /// The control fd, if the plugin has one apart from `fd`.
    ctl: Option<RawFd>,
}

// SAFETY: a connection is used by one thread at a time: the opener thread that opens it,
// then the engine thread, handed over through a mutex.
unsafe impl Send for Conn {}

impl Conn {
    /// `vde_open(vnl)`, non-blocking.
    fn open(lib: &'static vde_sys::VdePlug, vnl: &str) -> io::Result<Conn> {
        let mut url = CString::new(vnl)
            .map_err(|_| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("{vnl:?}: VNL contains NUL"),
                )
            })?
            .into_bytes_with_nul();
        let mut descr = CString::new(DESCR).expect("no NUL").into_bytes_with_nul();
        // SAFETY: both strings are NUL-terminated, writable and live across the call;
        // NULL open_args asks for the defaults, as documented in libvdeplug.h.
        let conn = unsafe {
            lib.vde_open(
                url.as_mut_ptr().cast(),
                descr.as_mut_ptr().cast(),
                std::ptr::null_mut(),
            )
        };
        if conn.is_null() {
            let err = io::Error::last_os_error();
            return Err(match err.raw_os_error() {
                Some(0) | None => io::Error::other(format!("vde_open {vnl}: failed")),
                Some(n) => super::tap::TapError::io(n, format!("vde_open {vnl}")),
            });
        }
        // Owned from here on, so that every error path below closes it.
        let mut c = Conn {
            lib,
            conn,
            fd: -1,
            ctl: None,
        };
        // SAFETY: conn is a live connection returned by vde_open.
        c.fd = unsafe { lib.vde_datafd(conn) };
        if c.fd < 0 {
            return Err(io::Error::other(format!(
                "vde_open {vnl}: connection has no data descriptor"
            )));
        }
        // SAFETY: as above.
        let ctl = unsafe { lib.vde_ctlfd(conn) };
        c.ctl = (ctl >= 0 && ctl != c.fd).then_some(ctl);
        set_nonblocking(c.fd)
            .map_err(|e| io::Error::new(e.kind(), format!("vde_open {vnl}: O_NONBLOCK: {e}")))?;
        Ok(c)
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        // SAFETY: conn came from vde_open and is closed exactly once, here.
        unsafe {
            self.lib.vde_close(self.conn);
        }
    }
}

impl VdeLink {
    /// Opens the vdeplug4 network that `vnl` names, e.g. `vde:///tmp/switch[]` or
    /// `vxvde://239.0.0.1`; `background` is where it opens again after an outage.
    ///
    /// Fails with [`io::ErrorKind::NotFound`] and a message naming the Debian package to
    /// install when libvdeplug is not installed, and with the `errno` of `vde_open` (the
    /// message naming the VNL) when the network cannot be opened.
    pub fn open(vnl: &str, background: Background) -> io::Result<VdeLink> {
        let lib = vde_sys::library()
            .map_err(|e| io::Error::new(io::ErrorKind::NotFound, format!("{vnl}: {e}")))?;
        let conn = Conn::open(lib, vnl)?;
        Ok(VdeLink {
            lib,
            vnl: vnl.to_string(),
            background,
            state: State::Open(conn),
            retry: Retry::default(),
            gone: false,
            told: false,
        })
    }

    fn note(&mut self, e: Option<i32>) {
        self.gone |= e == Some(libc::ECONNREFUSED);
    }

    /// Enters `next`, handing back the state left and its fds.
    fn become_(&mut self, next: State, news: Option<String>) -> Changed {
        let left = std::mem::replace(&mut self.state, next);
        let was = match &left {
            State::Open(c) => [Some(c.fd), c.ctl].into_iter().flatten().collect(),
            State::Opening(pending) => vec![pending.fd()],
            State::Waiting { timer } => vec![timer.as_raw_fd()],
            State::Failed => vec![],
        };
        Changed {
            was,
            left: Box::new(left),
            news,
        }
    }

    fn waiting(&mut self) -> State {
        match self.retry.timer() {
            Ok(timer) => State::Waiting { timer },
            Err(_) => State::Failed,
        }
    }

    /// The timer expired: `vde_open` again, on an opener thread.
    fn again(&mut self) -> Option<Changed> {
        let (lib, vnl) = (self.lib, self.vnl.clone());
        let next = match Pending::start(&self.background, move || Conn::open(lib, &vnl)) {
            Ok(pending) => State::Opening(pending),
            Err(_) => self.waiting(),
        };
        Some(self.become_(next, None))
    }

    /// The opener thread's outcome, if it has one.
    fn opened(&mut self) -> Option<Changed> {
        let State::Opening(pending) = &self.state else {
            return None;
        };
        let done = pending.take()?;
        Some(match done {
            Ok(conn) => {
                self.retry.reset();
                self.gone = false;
                self.told = false;
                let news = format!("{}: open again", self.vnl);
                self.become_(State::Open(conn), Some(news))
            }
            Err(_) => {
                let next = self.waiting();
                self.become_(next, None)
            }
        })
    }
}
/// Sets `O_NONBLOCK` on a descriptor.
fn set_nonblocking(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl F_GETFL/F_SETFL on a descriptor only reads and sets its status flags;
    // an invalid descriptor yields EBADF.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    if flags & libc::O_NONBLOCK == 0 {
        // SAFETY: as above.
        if unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Whether the other end ended the control connection `fd` (it died, or dropped us).
fn ended(fd: RawFd) -> bool {
    let mut b = [0u8; 64];
    match sys::recv(fd, &mut b) {
        Ok(0) => true,
        Ok(_) => false, // nothing is expected here; taken and ignored
        Err(e) => !matches!(
            e.kind(),
            io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
        ),
    }
}

impl Link for VdeLink {
    fn medium(&self) -> Medium {
        Medium::Ethernet
    }

    fn mtu(&self) -> usize {
        1514
    }

    fn poll_fd(&self) -> Option<RawFd> {
        match &self.state {
            State::Open(c) => Some(c.fd),
            State::Opening(pending) => Some(pending.fd()),
            State::Waiting { timer } => Some(timer.as_raw_fd()),
            State::Failed => None,
        }
    }

    fn hup_fd(&self) -> Option<RawFd> {
        match &self.state {
            State::Open(c) => c.ctl,
            _ => None,
        }
    }

    /// Takes one frame. `WouldBlock` when none is waiting (or the network is gone); `Ok(0)`
    /// for an empty or runt read (shorter than an Ethernet header), which the caller ignores.
    fn recv(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let State::Open(c) = &self.state else {
            return Err(io::ErrorKind::WouldBlock.into());
        };
        // SAFETY: conn is live while the state holds it; buf is valid for writes of
        // buf.len() bytes.
        let n = unsafe {
            c.lib
                .vde_recv(c.conn, buf.as_mut_ptr().cast::<c_void>(), buf.len(), 0)
        };
        if n < 0 {
            let err = io::Error::last_os_error();
            return match err.raw_os_error() {
                Some(libc::EAGAIN) => Err(io::ErrorKind::WouldBlock.into()),
                Some(libc::EINTR) => Err(io::ErrorKind::Interrupted.into()),
                e => {
                    self.note(e);
                    Err(err)
                }
            };
        }
        let n = n as usize;
        if n < ETHERNET_HEADER {
            return Ok(0);
        }
        Ok(n.min(buf.len()))
    }

    /// Sends one frame; `WouldBlock` when the switch's queue is full or the network is
    /// opening again (the engine holds the frame and waits for the fd), `ENOBUFS` drops it,
    /// and so does a network that is gone (`ENETDOWN`).
    fn send(&mut self, frame: &[u8]) -> io::Result<()> {
        let c = match &self.state {
            State::Open(_) if self.gone => return Err(sys::errno_err(libc::ENETDOWN)),
            State::Open(c) => c,
            State::Opening(_) => return Err(io::ErrorKind::WouldBlock.into()),
            State::Waiting { .. } | State::Failed => return Err(sys::errno_err(libc::ENETDOWN)),
        };
        loop {
            // SAFETY: conn is live while the state holds it; frame is valid for reads of
            // frame.len() bytes.
            let n = unsafe {
                c.lib
                    .vde_send(c.conn, frame.as_ptr().cast::<c_void>(), frame.len(), 0)
            };
            if n >= 0 {
                return Ok(());
            }
            let err = io::Error::last_os_error();
            return match err.raw_os_error() {
                Some(libc::EINTR) => continue,
                Some(libc::EAGAIN) => Err(io::ErrorKind::WouldBlock.into()),
                Some(libc::ENOBUFS) => Ok(()),
                e => {
                    self.note(e);
                    Err(err)
                }
            };
        }
    }

    fn carrier(&self) -> bool {
        matches!(self.state, State::Open(_)) && !self.gone
    }

    fn poll_open(&mut self, hup: bool) -> Option<Changed> {
        match &self.state {
            State::Open(c) => {
                if hup && !self.gone {
                    self.gone = c.ctl.is_some_and(ended);
                }
                if !self.gone {
                    return None;
                }
                self.told = true;
                let news = format!("{}: the network is gone; opening it again", self.vnl);
                let next = self.waiting();
                Some(self.become_(next, Some(news)))
            }
            State::Opening(_) => self.opened(),
            State::Waiting { timer } if self.retry.due() && retry::expired(timer) => self.again(),
            State::Waiting { .. } | State::Failed => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::{Path, PathBuf};
    use std::process::{Child, Command, Stdio};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::{Duration, Instant};

    /// A `vde_plug null:// switch://DIR` process: a VDE switch at DIR, killed on drop.
    struct Switch {
        child: Child,
        dir: PathBuf,
    }

    impl Switch {
        fn start() -> Switch {
            static N: AtomicUsize = AtomicUsize::new(0);
            let dir = std::env::temp_dir().join(format!(
                "vdestack-test-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            let _ = std::fs::remove_dir_all(&dir);
            let child = match Command::new("vde_plug")
                .arg("null://")
                .arg(format!("switch://{}", dir.display()))
                .stdin(Stdio::null())
                .spawn()
            {
                Ok(child) => child,
                Err(e) if e.kind() == io::ErrorKind::NotFound => panic!(
                    "vde_plug not found: apt-get install vdeplug (Debian package providing \
                     vde_plug), needed to test VDE links"
                ),
                Err(e) => panic!("cannot run vde_plug: {e}"),
            };
            let mut switch = Switch { child, dir };
            switch.wait_ready();
            switch
        }

        /// Waits for the switch's control socket to appear.
        fn wait_ready(&mut self) {
            let ctl = self.dir.join("ctl");
            let deadline = Instant::now() + Duration::from_secs(10);
            while !ctl.exists() {
                if let Some(status) = self.child.try_wait().unwrap() {
                    panic!("vde_plug switch://{} exited: {status}", self.dir.display());
                }
                assert!(
                    Instant::now() < deadline,
                    "vde_plug switch://{}: no control socket after 10 s",
                    self.dir.display()
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }

        fn vnl(&self) -> String {
            format!("vde://{}", self.dir.display())
        }
    }

    impl Drop for Switch {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    /// Runs background jobs at once, on the caller's thread.
    fn inline() -> Background {
        std::rc::Rc::new(|job: super::super::Job| job())
    }

    /// Waits up to `timeout` for `fd` to become readable.
    fn wait_readable(fd: RawFd, timeout: Duration) -> bool {
        let mut pfd = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: pfd is one valid pollfd for the duration of the call.
        let n = unsafe { libc::poll(&mut pfd, 1, timeout.as_millis() as libc::c_int) };
        n > 0 && pfd.revents & libc::POLLIN != 0
    }

    /// Receives the next frame of at least a header, skipping runt reads.
    fn recv_frame(link: &mut VdeLink, buf: &mut [u8]) -> usize {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                wait_readable(link.poll_fd().unwrap(), left),
                "no frame within 5 s"
            );
            match link.recv(buf) {
                Ok(0) => continue,
                Ok(n) => return n,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                    ) =>
                {
                    continue
                }
                Err(e) => panic!("recv: {e}"),
            }
        }
    }

    #[test]
    fn broadcast_frame_crosses_a_switch() {
        let switch = Switch::start();
        let mut a = VdeLink::open(&switch.vnl(), inline()).expect("open a");
        let mut b = VdeLink::open(&switch.vnl(), inline()).expect("open b");
        assert_eq!(a.medium(), Medium::Ethernet);
        assert_eq!(a.mtu(), 1514);
        assert!(a.poll_fd().unwrap() >= 0);

        // Nothing waiting yet: non-blocking.
        let mut buf = [0u8; 1514];
        assert_eq!(
            b.recv(&mut buf).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );

        let mut frame = Vec::new();
        frame.extend_from_slice(&[0xff; 6]); // broadcast
        frame.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x0a]); // locally administered source
        frame.extend_from_slice(&[0x88, 0xb5]); // local experimental EtherType
        frame.extend_from_slice(b"hello from vdestack");
        frame.resize(60, 0);
        a.send(&frame).expect("send");

        let n = recv_frame(&mut b, &mut buf);
        assert_eq!(&buf[..n], &frame[..]);
        drop((a, b));
        drop(switch);
    }

    #[test]
    fn opening_a_missing_switch_fails() {
        let err = VdeLink::open("vde:///nonexistent/sw", inline()).expect_err("no such switch");
        assert!(
            err.to_string().contains("vde:///nonexistent/sw"),
            "error names the VNL: {err}"
        );
        assert!(!Path::new("/nonexistent/sw").exists());
        eprintln!("opening vde:///nonexistent/sw: {err} ({:?})", err.kind());
    }
}
