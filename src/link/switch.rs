//! `vde://DIR`: a VDE switch (vde_switch, or `vde_plug switch://DIR`), spoken to directly
//! rather than through libvdeplug, so that opening a stack does not wait for the switch.
//!
//! The protocol (version 3): the client binds a datagram socket of its own, sends on a
//! stream connection to `DIR/ctl` a request naming that socket, and reads back the address
//! of the switch's datagram socket for the new port. Frames are then datagrams between the
//! two, and the port lives as long as the stream connection.
//!
//! [`SwitchLink::open`] connects at once, so a missing or dead switch is an error its caller
//! sees, and leaves the rest to a background job: the switch answers a round trip later
//! (0.2-1 ms; much later when busy, never when stopped), and the engine serves every other
//! stack meanwhile. Frames sent before the port is open wait, as on a full link.
//!
//! A switch that goes away (its control connection ends, or it refuses a frame) leaves the
//! link without carrier, dropping frames as a NIC without a cable does, and the link asks
//! for a port again and again (see [`super::retry`]) until a switch answers at the same path.

use std::io;
use std::mem::size_of;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use super::pending::Pending;
use super::retry::{self, Retry};
use super::{Background, Changed, Link, Medium};
use crate::sys;

const MAGIC: u32 = 0xfeed_face;
const VERSION: u32 = 3;
/// "Any free port".
const REQ_NEW_CONTROL: u32 = 0;
/// The description the switch shows for the port.
const DESCR: &[u8] = b"vdestack";
/// The length of an Ethernet header: a shorter datagram is not a frame.
const ETHERNET_HEADER: usize = 14;
/// How long opening waits for a switch whose queue of new connections is full.
const CONNECT_WAIT: libc::timeval = libc::timeval {
    tv_sec: 2,
    tv_usec: 0,
};

/// The switch directory of a locator this module opens: `vde://PATH` with a path and no
/// `[parameters]` (those, and every other plugin, go through libvdeplug).
pub fn native(vnl: &str) -> Option<&str> {
    let path = vnl.strip_prefix("vde://")?;
    (!path.is_empty() && !path.contains('[')).then_some(path)
}

/// A port on a VDE switch.
pub struct SwitchLink {
    vnl: String,
    /// The switch's directory, canonical.
    dir: PathBuf,
    background: Background,
    state: State,
    retry: Retry,
    /// The switch refused a frame (its socket is gone): the port is lost.
    gone: bool,
    /// The user has been told the port is down (once per outage).
    told: bool,
}

impl std::fmt::Debug for SwitchLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SwitchLink")
            .field("vnl", &self.vnl)
            .field("state", &self.state)
            .finish()
    }
}

#[derive(Debug)]
enum State {
    /// The background job is opening the port: (control connection, data socket).
    Opening(Pending<(OwnedFd, OwnedFd)>),
    /// `ctl` is held for the port's life: the switch ends the port when it closes, and
    /// closes it when it dies.
    Open { ctl: OwnedFd, data: OwnedFd },
    /// No port (the switch went away, refused or did not answer): the next request goes
    /// when `timer` expires.
    Waiting { timer: OwnedFd },
    /// No port, and no timer could be made to try again.
    Failed,
}

/// A request for a port: sent, or (Err) a connection a busy switch has yet to take.
type Request = Result<Asked, OwnedFd>;

impl SwitchLink {
    /// Connects to the switch in `dir` and has `background` ask it for a port. Fails, naming
    /// `vnl`, when there is no switch there (`NotFound`) or it is dead (`ConnectionRefused`).
    pub fn open(vnl: &str, dir: &str, background: Background) -> io::Result<SwitchLink> {
        let named = |e: io::Error| io::Error::new(e.kind(), format!("{vnl}: {e}"));
        // The request names our socket by path, and the switch does not share our cwd.
        let dir = std::fs::canonicalize(dir).map_err(named)?;
        let req = request_port(&dir).map_err(named)?;
        let mut link = SwitchLink {
            vnl: vnl.to_string(),
            dir,
            background,
            state: State::Failed,
            retry: Retry::default(),
            gone: false,
            told: false,
        };
        link.state = link.opening(req).map_err(named)?;
        Ok(link)
    }

    /// Hands the wait for the switch's answer to a background job.
    fn opening(&self, req: Request) -> io::Result<State> {
        let dir = self.dir.clone();
        let pending = Pending::start(&self.background, move || {
            let asked = match req {
                Ok(a) => Ok(a),
                Err(ctl) => connect_and_ask(ctl, &dir),
            };
            asked.and_then(answer)
        })?;
        Ok(State::Opening(pending))
    }

    /// The state to wait in for the next try.
    fn waiting(&mut self) -> State {
        match self.retry.timer() {
            Ok(timer) => State::Waiting { timer },
            Err(_) => State::Failed,
        }
    }

    /// The background job's outcome, if it has one.
    fn opened(&mut self) -> Option<Changed> {
        let State::Opening(pending) = &self.state else {
            return None;
        };
        let done = pending.take()?;
        let news;
        let next = match done {
            Ok((ctl, data)) => {
                self.retry.reset();
                self.gone = false;
                news = std::mem::take(&mut self.told).then(|| format!("{}: port open", self.vnl));
                State::Open { ctl, data }
            }
            Err(e) => {
                news = (!std::mem::replace(&mut self.told, true))
                    .then(|| format!("{}: no port ({e}); asking again", self.vnl));
                self.waiting()
            }
        };
        Some(self.become_(next, news))
    }

    /// Enters `next`, handing back the state left and its fds.
    fn become_(&mut self, next: State, news: Option<String>) -> Changed {
        let left = std::mem::replace(&mut self.state, next);
        let was = match &left {
            State::Opening(pending) => vec![pending.fd()],
            State::Open { ctl, data } => vec![data.as_raw_fd(), ctl.as_raw_fd()],
            State::Waiting { timer } => vec![timer.as_raw_fd()],
            State::Failed => vec![],
        };
        Changed {
            was,
            left: Box::new(left),
            news,
        }
    }

    /// The timer expired: asks the switch for a port again.
    fn again(&mut self) -> Option<Changed> {
        let State::Waiting { timer } = &self.state else {
            return None;
        };
        // Nothing listening yet (or no fd to ask with): the next try, a longer wait away.
        let Ok(next) = request_port(&self.dir).and_then(|req| self.opening(req)) else {
            if self.retry.rearm(timer).is_err() {
                return Some(self.become_(State::Failed, None));
            }
            return None;
        };
        Some(self.become_(next, None))
    }
}

/// Connects to the switch's control socket and sends the request for a port at once: a
/// connection that closes before it has sent one (the process ends first) makes
/// `vde_plug switch://` spin on it. A switch whose queue of new connections is full is
/// alive: its connection comes back (Err) for the job to wait on, and ask.
fn request_port(dir: &Path) -> io::Result<Request> {
    let ctl_path = dir.join("ctl");
    let ctl = sys::unix_socket(libc::SOCK_STREAM | libc::SOCK_NONBLOCK)?;
    let (sun, len) = sys::path_addr(&ctl_path)?;
    match sys::connect_unix(ctl.as_raw_fd(), &sun, len) {
        Ok(()) => Ok(Ok(ask(ctl, dir)?)),
        Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => Ok(Err(ctl)),
        Err(e) => Err(io::Error::new(
            e.kind(),
            format!("{}: {e}", ctl_path.display()),
        )),
    }
}

/// How long the job waits for the switch's answer (taking the connection: [`CONNECT_WAIT`]).
const WAIT_MS: i32 = 5_000;

/// A request for a port, sent: our data socket is bound at `bound` (a file, or None for an
/// abstract name) until the answer.
struct Asked {
    ctl: OwnedFd,
    data: OwnedFd,
    bound: Option<PathBuf>,
}

/// Waits for a busy switch to take the connection, then asks.
fn connect_and_ask(ctl: OwnedFd, dir: &Path) -> io::Result<Asked> {
    sys::set_nonblocking(ctl.as_raw_fd(), false)?;
    set_connect_wait(&ctl)?;
    let (sun, len) = sys::path_addr(&dir.join("ctl"))?;
    sys::connect_unix(ctl.as_raw_fd(), &sun, len)?;
    sys::set_nonblocking(ctl.as_raw_fd(), true)?;
    ask(ctl, dir)
}

/// Binds a data socket and sends the request for a port whose frames go to it.
fn ask(ctl: OwnedFd, dir: &Path) -> io::Result<Asked> {
    let data = sys::unix_socket(libc::SOCK_DGRAM | libc::SOCK_NONBLOCK)?;
    let (sun, bound) = if same_netns(&ctl) {
        (bind_abstract(&data)?, None)
    } else {
        let (sun, path) = bind_in(&data, dir)?;
        (sun, Some(path))
    };
    let sent = match &bound {
        Some(path) => permit(path, &dir.join("ctl")),
        None => Ok(()),
    }
    .and_then(|()| {
        let req = request(&sun);
        match sys::send(ctl.as_raw_fd(), &req)? {
            n if n == req.len() => Ok(()),
            _ => Err(io::Error::other("short write of the request")),
        }
    });
    match sent {
        Ok(()) => Ok(Asked { ctl, data, bound }),
        Err(e) => {
            remove(&bound);
            Err(e)
        }
    }
}

fn remove(bound: &Option<PathBuf>) {
    if let Some(path) = bound {
        let _ = std::fs::remove_file(path);
    }
}

/// Whether the switch behind `ctl` shares our network namespace, where abstract socket
/// names live. Then our data socket takes one, not a file in the switch's directory: no
/// file to remove, and no contention with the switch for the directory (creating sockets
/// there cost ~1 ms each on ext4 while the switch created its own).
fn same_netns(ctl: &OwnedFd) -> bool {
    let Ok(cred) = sys::peer_cred(ctl.as_raw_fd()) else {
        return false;
    };
    if cred.pid <= 0 {
        return false;
    }
    let theirs = std::fs::metadata(format!("/proc/{}/ns/net", cred.pid));
    let ours = std::fs::metadata("/proc/self/ns/net");
    matches!((theirs, ours), (Ok(a), Ok(b)) if (a.dev(), a.ino()) == (b.dev(), b.ino()))
}

/// Waits for the switch's answer and connects the data socket to the port it names.
fn answer(asked: Asked) -> io::Result<(OwnedFd, OwnedFd)> {
    let r = connect_port(&asked.ctl, &asked.data);
    // Connected (or failed): the name has done its job either way.
    remove(&asked.bound);
    r.map(|()| (asked.ctl, asked.data))
}

fn connect_port(ctl: &OwnedFd, data: &OwnedFd) -> io::Result<()> {
    if sys::poll_one(ctl.as_raw_fd(), libc::POLLIN, WAIT_MS)? == 0 {
        return Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("the switch did not answer within {} s", WAIT_MS / 1000),
        ));
    }
    let mut answer = [0u8; size_of::<libc::sockaddr_un>()];
    let n = sys::recv(ctl.as_raw_fd(), &mut answer)?;
    if n == 0 {
        return Err(io::Error::new(
            io::ErrorKind::ConnectionRefused,
            "the switch closed the connection without giving a port",
        ));
    }
    let bad = || {
        io::Error::new(
            io::ErrorKind::InvalidData,
            "malformed answer from the switch",
        )
    };
    let (family, path) = answer[..n].split_at_checked(2).ok_or_else(bad)?;
    if u16::from_ne_bytes([family[0], family[1]]) != libc::AF_UNIX as u16 {
        return Err(bad());
    }
    let path = &path[..path.iter().position(|b| *b == 0).unwrap_or(path.len())];
    if path.is_empty() {
        return Err(bad());
    }
    use std::os::unix::ffi::OsStrExt;
    let (sun, len) = sys::path_addr(Path::new(std::ffi::OsStr::from_bytes(path)))?;
    sys::connect_unix(data.as_raw_fd(), &sun, len)
}

/// Bounds how long connect waits for a switch whose backlog is full (SO_SNDTIMEO governs an
/// AF_UNIX connect).
fn set_connect_wait(fd: &OwnedFd) -> io::Result<()> {
    // SAFETY: setsockopt with a timeval that lives across the call.
    let r = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_SNDTIMEO,
            (&CONNECT_WAIT as *const libc::timeval).cast(),
            size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Binds `data` to a fresh name in the switch's directory, as libvdeplug does.
fn bind_in(data: &OwnedFd, dir: &Path) -> io::Result<(libc::sockaddr_un, PathBuf)> {
    loop {
        let path = dir.join(format!(".vds{}-{}", std::process::id(), next()));
        let (sun, len) = sys::path_addr(&path)?;
        match sys::bind_unix(data.as_raw_fd(), &sun, len) {
            Err(e) if e.raw_os_error() == Some(libc::EADDRINUSE) => continue,
            r => return r.map(|_| (sun, path)),
        }
    }
}

/// Binds `data` to a fresh abstract name that fills the whole address: the switch connects
/// with the full `sockaddr_un` length, and an abstract name is every byte of it.
fn bind_abstract(data: &OwnedFd) -> io::Result<libc::sockaddr_un> {
    loop {
        let name = format!("vdestack-port:{}:{}", std::process::id(), next());
        let (mut sun, len) = sys::path_addr(Path::new(&name))?;
        let last = sun.sun_path.len() - 1;
        sun.sun_path.copy_within(..last, 1);
        sun.sun_path[0] = 0;
        match sys::bind_unix(data.as_raw_fd(), &sun, len) {
            Err(e) if e.raw_os_error() == Some(libc::EADDRINUSE) => continue,
            r => return r.map(|_| sun),
        }
    }
}

/// A number for a new name, unique in this process.
fn next() -> u32 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// Lets the switch send to our socket: only us, unless the switch runs as another user (not
/// root); then its group if we share it, else everyone (what libvdeplug does).
fn permit(bound: &Path, ctl: &Path) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mut mode = 0o700;
    let sw = std::fs::metadata(ctl)?;
    // SAFETY: geteuid cannot fail.
    let me = unsafe { libc::geteuid() };
    if sw.uid() != 0 && sw.uid() != me {
        mode = match std::os::unix::fs::chown(bound, None, Some(sw.gid())) {
            Ok(()) => 0o770,
            Err(_) => 0o777,
        };
    }
    std::fs::set_permissions(bound, std::fs::Permissions::from_mode(mode))
}

/// The request for a new port whose frames go to the socket at `sun`.
fn request(sun: &libc::sockaddr_un) -> Vec<u8> {
    let mut req = Vec::with_capacity(12 + size_of::<libc::sockaddr_un>() + DESCR.len());
    for word in [MAGIC, VERSION, REQ_NEW_CONTROL] {
        req.extend_from_slice(&word.to_ne_bytes());
    }
    req.extend_from_slice(&sun.sun_family.to_ne_bytes());
    req.extend(sun.sun_path.iter().map(|c| *c as u8));
    req.extend_from_slice(DESCR);
    req
}

impl SwitchLink {
    /// A switch that refuses our frames is gone (its socket is): the port is lost, and the
    /// next [`Link::poll_open`] asks for another.
    fn check_gone(&mut self, e: &io::Error) {
        self.gone |= e.raw_os_error() == Some(libc::ECONNREFUSED);
    }
}

/// Whether the switch ended the control connection (it died, or dropped the port).
fn ended(ctl: &OwnedFd) -> bool {
    let mut b = [0u8; 64];
    match sys::recv(ctl.as_raw_fd(), &mut b) {
        Ok(0) => true,
        Ok(_) => false, // nothing is expected here; taken and ignored
        Err(e) => e.kind() != io::ErrorKind::WouldBlock,
    }
}

impl Link for SwitchLink {
    fn medium(&self) -> Medium {
        Medium::Ethernet
    }

    fn mtu(&self) -> usize {
        1514
    }

    fn poll_fd(&self) -> Option<RawFd> {
        match &self.state {
            State::Opening(pending) => Some(pending.fd()),
            State::Open { data, .. } => Some(data.as_raw_fd()),
            State::Waiting { timer } => Some(timer.as_raw_fd()),
            State::Failed => None,
        }
    }

    fn hup_fd(&self) -> Option<RawFd> {
        match &self.state {
            State::Open { ctl, .. } => Some(ctl.as_raw_fd()),
            _ => None,
        }
    }

    /// Takes one frame; `WouldBlock` when none waits (or there is no port), `Ok(0)` for a
    /// datagram too short to be a frame.
    fn recv(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let State::Open { data, .. } = &self.state else {
            return Err(io::ErrorKind::WouldBlock.into());
        };
        let n = sys::recv(data.as_raw_fd(), buf).inspect_err(|e| self.check_gone(e))?;
        Ok(if n < ETHERNET_HEADER { 0 } else { n })
    }

    /// Sends one frame; `WouldBlock` when the switch's queue is full or the port is still
    /// opening (the engine holds the frame). A full socket buffer (`ENOBUFS`) drops it, and
    /// so does a link without a port (`ENETDOWN`).
    fn send(&mut self, frame: &[u8]) -> io::Result<()> {
        match &self.state {
            State::Open { .. } if self.gone => Err(sys::errno_err(libc::ENETDOWN)),
            State::Open { data, .. } => match sys::send(data.as_raw_fd(), frame) {
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => Ok(()),
                r => r.map(drop).inspect_err(|e| self.check_gone(e)),
            },
            State::Opening(_) => Err(io::ErrorKind::WouldBlock.into()),
            State::Waiting { .. } | State::Failed => Err(sys::errno_err(libc::ENETDOWN)),
        }
    }

    fn carrier(&self) -> bool {
        matches!(self.state, State::Open { .. }) && !self.gone
    }

    fn poll_open(&mut self, hup: bool) -> Option<Changed> {
        match &self.state {
            State::Opening(_) => self.opened(),
            State::Open { ctl, .. } => {
                if hup && !self.gone {
                    self.gone = ended(ctl);
                }
                if !self.gone {
                    return None;
                }
                self.told = true;
                let news = format!("{}: the switch is gone; asking for a port again", self.vnl);
                let next = self.waiting();
                Some(self.become_(next, Some(news)))
            }
            State::Waiting { timer } if self.retry.due() && retry::expired(timer) => self.again(),
            State::Waiting { .. } | State::Failed => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_switch_paths_are_spoken_to_directly() {
        assert_eq!(native("vde:///tmp/sw"), Some("/tmp/sw"));
        assert_eq!(native("vde://sw"), Some("sw"));
        assert_eq!(
            native("vde://"),
            None,
            "the default switch: libvdeplug's fallbacks"
        );
        assert_eq!(native("vde:///tmp/sw[port=3]"), None);
        assert_eq!(native("switch:///tmp/sw"), None);
        assert_eq!(native("/tmp/sw"), None);
    }

    #[test]
    fn the_request_is_a_version_3_new_port() {
        let (sun, _) = sys::path_addr(Path::new("/tmp/sw/.vds1-0")).unwrap();
        let req = request(&sun);
        assert_eq!(req.len(), 12 + size_of::<libc::sockaddr_un>() + DESCR.len());
        assert_eq!(req[..4], 0xfeed_faceu32.to_ne_bytes());
        assert_eq!(req[4..8], 3u32.to_ne_bytes());
        assert_eq!(req[8..12], 0u32.to_ne_bytes());
        assert_eq!(req[12..14], (libc::AF_UNIX as u16).to_ne_bytes());
        assert_eq!(&req[14..14 + 15], b"/tmp/sw/.vds1-0");
        assert!(req.ends_with(DESCR));
    }
}
