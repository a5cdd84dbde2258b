//! Links: where a stack's frames go. A link is chosen by the locator (VNL) given to
//! [`crate::Stack::new`]: a vdeplug4 locator, `tap://NAME`, `tun://NAME`, `mem://NAME` (with
//! netem-like impairments: `mem://NAME[loss=2%/delay=5ms]`), or nothing at all (loopback only).

pub mod hint;
pub mod impair;
pub mod mem;
pub mod pending;
pub mod retry;
pub mod switch;
pub mod tap;
pub mod vde;

use std::io;
use std::os::fd::RawFd;

/// What a link carries: whole Ethernet frames, or bare IP packets (TUN).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Medium {
    /// Ethernet frames (VDE, TAP, mem://).
    Ethernet,
    /// IP packets with no link header (TUN).
    Ip,
}

/// One end of a network that a stack is plugged into.
///
/// Links are driven by the engine thread only. A link either has a file descriptor that
/// becomes readable when frames arrive ([`Link::poll_fd`]) or is woken in-process
/// (mem://, through the [`Wake`] handle given when it was opened).
pub trait Link {
    /// The kind of frames this link carries.
    fn medium(&self) -> Medium;
    /// The largest frame (Ethernet) or packet (IP) this link carries, headers included.
    fn mtu(&self) -> usize;
    /// A descriptor that becomes readable when frames are waiting, if the link has one.
    fn poll_fd(&self) -> Option<RawFd>;
    /// Takes one waiting frame into `buf` and returns its length; `WouldBlock` when none.
    fn recv(&mut self, buf: &mut [u8]) -> io::Result<usize>;
    /// Sends one frame. `WouldBlock` means the link is full and the frame was not sent: the
    /// engine keeps it and stops transmitting until [`Link::poll_fd`] is writable, as a NIC
    /// with a full ring would. Other errors drop the frame.
    fn send(&mut self, frame: &[u8]) -> io::Result<()>;
    /// What the link did to the last frame [`Link::send`] took, when it did more than send
    /// it (an impairment dropped, duplicated or corrupted it): a packet capture marks the
    /// frame with it. Asked only while a capture is under way.
    fn last_send_note(&self) -> Option<&'static str> {
        None
    }
    /// Tells the link the stack's addresses on it, whenever they change. A link that knows
    /// its members' addresses (mem://) delivers an ARP request only to the address's owner.
    fn set_addrs(&mut self, _addrs: &[std::net::IpAddr]) {}
    /// Takes one waiting frame whole, for links that hold frames in memory (mem://); None
    /// for links that read into a buffer with [`Link::recv`].
    fn recv_owned(&mut self) -> Option<io::Result<Vec<u8>>> {
        None
    }
    /// For a link whose frames arrive some time after they were sent (an impaired mem://):
    /// how long until the first waiting frame is due, if one waits for its time. The engine
    /// polls the stack then; [`Link::recv`] gives no frame before.
    fn due_in(&self) -> Option<std::time::Duration> {
        None
    }
    /// Whether frames need checksums: not on a link whose frames never leave the process.
    fn checksummed(&self) -> bool {
        true
    }
    /// Whether the link reaches its network (`ip link` shows NO-CARRIER when not): not while
    /// a switch port is still opening, nor while its switch is gone.
    fn carrier(&self) -> bool {
        true
    }
    /// Another fd to watch, for a link whose network can go away: it polls readable when
    /// it does (a switch's control connection, which the switch ends as it dies).
    fn hup_fd(&self) -> Option<RawFd> {
        None
    }
    /// For a link that opens in the background (a VDE switch answers a round trip after
    /// [`open`]) or opens again when its network comes back: called on every event of its
    /// fds (`hup`: the event said a peer hung up) and after every round of work. Says when
    /// [`Link::poll_fd`] or [`Link::hup_fd`] name other fds from now on.
    fn poll_open(&mut self, _hup: bool) -> Option<Changed> {
        None
    }
}

/// A link watches other fds now ([`Link::poll_open`]).
#[derive(Debug)]
pub struct Changed {
    /// The fds the engine watched until now, for it to stop watching them before they close.
    pub was: Vec<RawFd>,
    /// What keeps them open until then: the state the link left.
    pub left: Box<dyn std::any::Any>,
    /// What to tell the user, if anything: the port did not open, the network went away, it
    /// is back.
    pub news: Option<String>,
}

/// How an in-process link tells the engine that a stack has frames waiting.
///
/// The engine drains the list after each round of work; mem:// links are only touched from
/// the engine thread, so no further wake-up is needed.
#[derive(Clone, Debug)]
pub struct Wake {
    /// The stack to wake.
    pub stack: usize,
    /// The engine's list of stacks with frames waiting.
    pub ready: std::rc::Rc<std::cell::RefCell<Vec<usize>>>,
}

impl Wake {
    /// Marks the stack as having frames waiting.
    pub fn wake(&self) {
        self.ready.borrow_mut().push(self.stack);
    }
}

/// A blocking piece of work a link hands over.
pub type Job = Box<dyn FnOnce() + Send>;

/// Where a link hands the blocking part of its opening, when it opens and whenever it opens
/// again: each job starts at once on a thread of its own (the engine's opener threads).
pub type Background = std::rc::Rc<dyn Fn(Job)>;

/// Opens the link a locator names. `None` means the stack has loopback only.
pub fn open(vnl: &str, wake: Wake, background: Background) -> io::Result<Option<Box<dyn Link>>> {
    if vnl.is_empty() {
        return Ok(None);
    }
    if let Some(name) = vnl.strip_prefix("mem://") {
        return Ok(Some(Box::new(mem::MemLink::open(name, wake)?)));
    }
    if let Some(name) = vnl.strip_prefix("tap://") {
        return Ok(Some(Box::new(tap::TapLink::open(name, Medium::Ethernet)?)));
    }
    if let Some(name) = vnl.strip_prefix("tun://") {
        return Ok(Some(Box::new(tap::TapLink::open(name, Medium::Ip)?)));
    }
    if let Some(dir) = switch::native(vnl) {
        return Ok(Some(Box::new(switch::SwitchLink::open(
            vnl, dir, background,
        )?)));
    }
    Ok(Some(Box::new(vde::VdeLink::open(vnl, background)?)))
}

/// Checks what can be checked of a locator without opening it (the parameters of a
/// `mem://` link), so that a bad one is refused with its message where it was given.
pub fn check(vnl: &str) -> io::Result<()> {
    if let Some(spec) = vnl.strip_prefix("mem://") {
        impair::split(spec).map_err(|e| io::Error::new(e.kind(), format!("{vnl}: {e}")))?;
    }
    Ok(())
}

/// The errno behind a link error: the OS error, or the one a link's own error carries, or
/// the closest one for its kind.
pub fn errno_of(e: &io::Error) -> i32 {
    if let Some(n) = tap::errno_of(e) {
        return n;
    }
    match e.kind() {
        io::ErrorKind::NotFound => libc::ENOENT,
        io::ErrorKind::ConnectionRefused => libc::ECONNREFUSED,
        io::ErrorKind::TimedOut => libc::ETIMEDOUT,
        io::ErrorKind::NotADirectory => libc::ENOTDIR,
        io::ErrorKind::PermissionDenied => libc::EPERM,
        io::ErrorKind::InvalidInput => libc::EINVAL,
        io::ErrorKind::Unsupported => libc::EPROTONOSUPPORT,
        _ => libc::EIO,
    }
}
