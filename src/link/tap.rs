//! `tap://NAME` and `tun://NAME` links: a kernel TAP device (Ethernet frames) or TUN device
//! (bare IP packets, smoltcp `Medium::Ip`), opened natively on `/dev/net/tun`.
//!
//! The link only attaches to the device. It never configures the kernel side of it (link
//! state, addresses, routes): whoever owns the device does that, e.g. a test inside a network
//! namespace it created, or an administrator with `ip tuntap add dev NAME mode tap user USER`.
//! A device this link creates is non-persistent: the kernel removes it when the link is
//! dropped.
//!
//! Only `open`, `ioctl`, `read` and `write` are used on the device; none of them is a socket
//! call that the C library interposes.

use std::ffi::CStr;
use std::fmt;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use super::{Link, Medium};

/// The clone device that TAP and TUN devices are created and attached through.
const TUN_DEVICE: &CStr = c"/dev/net/tun";

/// The longest interface name the kernel accepts (IFNAMSIZ less the terminating NUL).
pub const MAX_NAME_LEN: usize = libc::IFNAMSIZ - 1;

/// The largest frame a TAP link carries: a 1500-byte MTU plus the Ethernet header.
const TAP_MTU: usize = 1514;
/// The largest packet a TUN link carries: a 1500-byte MTU.
const TUN_MTU: usize = 1500;

/// A link to a kernel TAP (`Medium::Ethernet`) or TUN (`Medium::Ip`) device.
///
/// The descriptor is non-blocking and close-on-exec, opened without packet information
/// (`IFF_NO_PI`), so every read is one frame (TAP) or packet (TUN) and every write sends one.
/// [`Link::recv`] returns `WouldBlock` when nothing is waiting; [`Link::send`] returns
/// `WouldBlock` when the kernel has no room (the engine holds the frame) and drops it on
/// `ENOBUFS`, as a NIC would.
#[derive(Debug)]
pub struct TapLink {
    fd: OwnedFd,
    medium: Medium,
    name: String,
}

/// Why [`TapLink::open`] failed: the `errno` of the failing call and a message that names the
/// device (`tap://NAME` or `tun://NAME`) and says what to do about it.
///
/// It is carried inside the returned [`io::Error`], whose kind is that of the `errno`; get the
/// `errno` back with [`errno_of`].
#[derive(Debug, Clone)]
pub struct TapError {
    errno: i32,
    message: String,
}

impl TapError {
    /// The `errno` of the call that failed.
    pub fn errno(&self) -> i32 {
        self.errno
    }

    /// The message, without the `errno` text.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// An `io::Error` that carries `errno` (see [`errno_of`]) and says `message` first: for
    /// the other links' opening errors too, so the engine answers with the right errno.
    pub(super) fn io(errno: i32, message: String) -> io::Error {
        TapError { errno, message }.into_io()
    }

    fn into_io(self) -> io::Error {
        io::Error::new(io::Error::from_raw_os_error(self.errno).kind(), self)
    }
}

impl fmt::Display for TapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {}",
            self.message,
            io::Error::from_raw_os_error(self.errno)
        )
    }
}

impl std::error::Error for TapError {}

/// The `errno` an error carries: its OS error code, or that of a [`TapError`] inside it.
pub fn errno_of(err: &io::Error) -> Option<i32> {
    err.raw_os_error().or_else(|| {
        err.get_ref()?
            .downcast_ref::<TapError>()
            .map(TapError::errno)
    })
}

impl TapLink {
    /// Creates, or attaches to, the TAP (`Medium::Ethernet`) or TUN (`Medium::Ip`) device
    /// `name`.
    ///
    /// A name the kernel would refuse (empty, longer than [`MAX_NAME_LEN`] bytes, `.`, `..`,
    /// or holding `/`, `:`, NUL or white space) fails with [`io::ErrorKind::InvalidInput`]
    /// (`EINVAL`). Other failures carry the `errno` of `open` or `ioctl(TUNSETIFF)` in a
    /// [`TapError`] whose message names the device: `EPERM` when the caller lacks
    /// CAP_NET_ADMIN and the device is not a pre-created one it owns, `EBUSY` when another
    /// process is attached to the device, `EINVAL` when a device of that name exists but is
    /// of the other kind.
    ///
    /// A name with `%d` lets the kernel choose the number; [`TapLink::name`] gives the result.
    pub fn open(name: &str, medium: Medium) -> io::Result<TapLink> {
        let uri = format!("{}{name}", scheme(medium));
        validate_name(name, &uri)?;

        // SAFETY: TUN_DEVICE is a NUL-terminated static string; open keeps no pointer past the
        // call.
        let raw = unsafe {
            libc::open(
                TUN_DEVICE.as_ptr(),
                libc::O_RDWR | libc::O_NONBLOCK | libc::O_CLOEXEC,
            )
        };
        if raw < 0 {
            return Err(open_error(&uri, last_errno()).into_io());
        }
        // SAFETY: raw is a descriptor open just now, owned by nothing else.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };

        // SAFETY: ifreq is plain data (byte arrays, integers and a union of such and of
        // pointers); all-zero bytes are a valid value of it.
        let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
        for (dst, src) in ifr.ifr_name.iter_mut().zip(name.as_bytes()) {
            *dst = *src as libc::c_char;
        }
        let kind = match medium {
            Medium::Ethernet => libc::IFF_TAP,
            Medium::Ip => libc::IFF_TUN,
        };
        ifr.ifr_ifru.ifru_flags = (kind | libc::IFF_NO_PI) as libc::c_short;
        // SAFETY: TUNSETIFF reads and writes one struct ifreq; ifr is one, live and exclusively
        // borrowed for the duration of the call. fd is an open /dev/net/tun descriptor.
        if unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETIFF, &mut ifr) } < 0 {
            return Err(setiff_error(&uri, name, medium, last_errno()).into_io());
        }

        // The kernel writes back the name it used (it differs from `name` with `%d`).
        let len = ifr
            .ifr_name
            .iter()
            .position(|&c| c == 0)
            .unwrap_or(ifr.ifr_name.len());
        let bytes: Vec<u8> = ifr.ifr_name[..len].iter().map(|&c| c as u8).collect();
        let name = String::from_utf8(bytes).unwrap_or_else(|_| name.to_owned());
        Ok(TapLink { fd, medium, name })
    }

    /// The kernel's name of the device.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Link for TapLink {
    fn medium(&self) -> Medium {
        self.medium
    }

    fn mtu(&self) -> usize {
        match self.medium {
            Medium::Ethernet => TAP_MTU,
            Medium::Ip => TUN_MTU,
        }
    }

    fn poll_fd(&self) -> Option<RawFd> {
        Some(self.fd.as_raw_fd())
    }

    fn recv(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            // SAFETY: buf is valid for writes of buf.len() bytes; the fd is ours and open.
            let n = unsafe {
                libc::read(
                    self.fd.as_raw_fd(),
                    buf.as_mut_ptr().cast::<libc::c_void>(),
                    buf.len(),
                )
            };
            if n >= 0 {
                return Ok(n as usize);
            }
            // EAGAIN has the kind WouldBlock already.
            let err = io::Error::last_os_error();
            if err.raw_os_error() != Some(libc::EINTR) {
                return Err(err);
            }
        }
    }

    fn send(&mut self, frame: &[u8]) -> io::Result<()> {
        loop {
            // SAFETY: frame is valid for reads of frame.len() bytes; the fd is ours and open.
            let n = unsafe {
                libc::write(
                    self.fd.as_raw_fd(),
                    frame.as_ptr().cast::<libc::c_void>(),
                    frame.len(),
                )
            };
            // A TAP/TUN write takes the whole frame or fails.
            if n >= 0 {
                return Ok(());
            }
            let err = io::Error::last_os_error();
            match err.raw_os_error() {
                Some(libc::EINTR) => continue,
                // No room in the kernel: the engine holds the frame until we are writable.
                Some(libc::EAGAIN) => return Err(err),
                Some(libc::ENOBUFS) => return Ok(()),
                _ => return Err(err),
            }
        }
    }
}

/// The locator scheme of a medium, for messages.
fn scheme(medium: Medium) -> &'static str {
    match medium {
        Medium::Ethernet => "tap://",
        Medium::Ip => "tun://",
    }
}

/// The errno of the last failed call.
fn last_errno() -> i32 {
    io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

/// Refuses names the kernel would refuse (its `dev_valid_name`), before touching the device.
fn validate_name(name: &str, uri: &str) -> io::Result<()> {
    let why = if name.is_empty() {
        "the device name is empty".to_owned()
    } else if name.len() > MAX_NAME_LEN {
        format!(
            "the device name is {} bytes long; at most {MAX_NAME_LEN} are allowed",
            name.len()
        )
    } else if name == "." || name == ".." {
        format!("{name:?} is not a device name")
    } else if let Some(c) = name
        .chars()
        .find(|&c| c == '/' || c == ':' || c == '\0' || c.is_whitespace())
    {
        format!("a device name cannot hold {c:?}")
    } else {
        return Ok(());
    };
    Err(TapError {
        errno: libc::EINVAL,
        message: format!("{uri}: {why}"),
    }
    .into_io())
}

/// The error of a failed `open("/dev/net/tun")`.
fn open_error(uri: &str, errno: i32) -> TapError {
    let message = match errno {
        libc::ENOENT | libc::ENODEV | libc::ENXIO => format!(
            "{uri}: /dev/net/tun is missing: load the tun module (modprobe tun) or create the \
             node (mknod /dev/net/tun c 10 200)"
        ),
        libc::EPERM => cap_message(uri),
        libc::EACCES => format!(
            "{uri}: opening /dev/net/tun needs read and write permission on it (and \
             CAP_NET_ADMIN or a pre-created device owned by you)"
        ),
        _ => format!("{uri}: opening /dev/net/tun"),
    };
    TapError { errno, message }
}

/// The error of a failed `ioctl(TUNSETIFF)`.
fn setiff_error(uri: &str, name: &str, medium: Medium, errno: i32) -> TapError {
    let (kind, other) = match medium {
        Medium::Ethernet => ("TAP", "TUN"),
        Medium::Ip => ("TUN", "TAP"),
    };
    let message = match errno {
        libc::EPERM | libc::EACCES => cap_message(uri),
        libc::EBUSY => {
            format!("{uri}: device {name} is in use: another descriptor is attached to it already")
        }
        libc::EINVAL => format!(
            "{uri}: cannot attach to {name} as a {kind} device (is it a {other} device, \
             multi-queue, or not a tun/tap device at all?)"
        ),
        _ => format!("{uri}: attaching /dev/net/tun to {name} (TUNSETIFF)"),
    };
    TapError { errno, message }
}

fn cap_message(uri: &str) -> String {
    let name = uri.split_once("://").map_or(uri, |(_, n)| n);
    let mode = if uri.starts_with("tun://") {
        "tun"
    } else {
        "tap"
    };
    format!(
        "{uri}: opening /dev/net/tun needs CAP_NET_ADMIN or a pre-created device owned by you \
         (ip tuntap add dev {name} mode {mode} user $USER)"
    )
}

/// The integration tests' namespace helper, shared so the kernel-facing rule lives in one place.
#[cfg(test)]
#[path = "../../tests/support/netns.rs"]
mod test_netns;

#[cfg(test)]
mod tests {
    //! The kernel-facing tests obey the rule for tests that touch the kernel's network: the
    //! device is opened in the root namespace with no address and down, moved at once into a
    //! namespace that the test creates (and deletes, also on panic), and only configured
    //! there (`ip -n NS ...`). Frames go only to that namespace's kernel.

    use super::*;
    use std::time::{Duration, Instant};

    use super::test_netns as netns;
    use netns::NetNs;

    /// The Internet checksum (RFC 1071) of `data`.
    fn checksum(data: &[u8]) -> u16 {
        let mut sum: u32 = data
            .chunks(2)
            .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
            .sum();
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        !(sum as u16)
    }

    /// Sends `request` every 500 ms and reads until a frame that `is_reply` accepts arrives,
    /// for at most 3 s. Other frames (IPv6 router solicitations, MLD, ...) are skipped.
    fn exchange(link: &mut TapLink, request: &[u8], is_reply: impl Fn(&[u8]) -> bool) -> Vec<u8> {
        let deadline = Instant::now() + Duration::from_secs(3);
        let mut next_send = Instant::now();
        let mut buf = vec![0u8; link.mtu() + 64];
        let mut skipped = Vec::new();
        loop {
            let now = Instant::now();
            assert!(
                now < deadline,
                "{}: no reply within 3 s; skipped {} frames: {skipped:02x?}",
                link.name(),
                skipped.len()
            );
            if now >= next_send {
                link.send(request).expect("send");
                next_send = now + Duration::from_millis(500);
            }
            let wait = next_send.min(deadline).saturating_duration_since(now);
            let mut pfd = libc::pollfd {
                fd: link.poll_fd().expect("a tap link has a descriptor"),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd, live across the call.
            let r = unsafe { libc::poll(&mut pfd, 1, wait.as_millis() as libc::c_int + 1) };
            if r < 0 {
                let e = io::Error::last_os_error();
                assert_eq!(e.kind(), io::ErrorKind::Interrupted, "poll: {e}");
            }
            loop {
                match link.recv(&mut buf) {
                    Ok(n) if is_reply(&buf[..n]) => return buf[..n].to_vec(),
                    Ok(n) => skipped.push(buf[..n.min(64)].to_vec()),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => panic!("recv on {}: {e}", link.name()),
                }
            }
        }
    }

    #[test]
    fn names_the_kernel_refuses_are_invalid_input() {
        let long = "a".repeat(MAX_NAME_LEN + 1);
        for (name, medium) in [
            ("", Medium::Ethernet),
            (long.as_str(), Medium::Ethernet),
            (long.as_str(), Medium::Ip),
            ("a/b", Medium::Ethernet),
            ("a b", Medium::Ip),
            ("a:0", Medium::Ethernet),
            ("a\0b", Medium::Ethernet),
            ("..", Medium::Ip),
        ] {
            let err = TapLink::open(name, medium).expect_err(name);
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{name:?}: {err}");
            assert_eq!(errno_of(&err), Some(libc::EINVAL), "{name:?}");
            let uri = format!("{}{name}", scheme(medium));
            assert!(err.to_string().starts_with(&uri), "{err}");
        }
        assert!(validate_name(&"a".repeat(MAX_NAME_LEN), "tap://x").is_ok());
        assert!(validate_name("tap%d", "tap://x").is_ok());
    }

    #[test]
    fn errors_name_the_device_and_carry_the_errno() {
        let err = cap_message("tap://x");
        assert!(err.starts_with(
            "tap://x: opening /dev/net/tun needs CAP_NET_ADMIN or a pre-created device owned by you"
        ));
        let e = setiff_error("tun://y", "y", Medium::Ip, libc::EPERM).into_io();
        assert_eq!(e.kind(), io::ErrorKind::PermissionDenied);
        assert_eq!(errno_of(&e), Some(libc::EPERM));
        assert!(
            e.to_string()
                .starts_with("tun://y: opening /dev/net/tun needs"),
            "{e}"
        );
        assert!(e.to_string().contains("mode tun"), "{e}");
        let e = open_error("tap://z", libc::ENOENT).into_io();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
        assert_eq!(errno_of(&e), Some(libc::ENOENT));
        assert_eq!(
            errno_of(&io::Error::from_raw_os_error(libc::EBUSY)),
            Some(libc::EBUSY)
        );
        assert_eq!(errno_of(&io::Error::other("x")), None);
    }

    /// TAP: the kernel of a namespace answers a hand-made ARP request.
    #[test]
    fn tap_link_exchanges_arp_with_a_namespace() {
        const OUR_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
        const OUR_IP: [u8; 4] = [10, 213, 0, 2];
        const KERNEL_IP: [u8; 4] = [10, 213, 0, 1];

        netns::require_tools();
        // Declared before the link, so the link (and with it the device) goes first.
        let ns = NetNs::new();
        let dev = format!("vdstt{}", std::process::id());
        let mut link = TapLink::open(&dev, Medium::Ethernet).expect("open tap");
        assert_eq!(link.name(), dev);
        assert_eq!(link.medium(), Medium::Ethernet);
        assert_eq!(link.mtu(), 1514);
        assert!(link.poll_fd().is_some());
        let mut buf = [0u8; 1600];
        let e = link.recv(&mut buf).expect_err("nothing is waiting");
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock);

        // A second open of the device, or one as the other kind, fails with the errno.
        let e = TapLink::open(&dev, Medium::Ethernet).expect_err("busy");
        assert_eq!(errno_of(&e), Some(libc::EBUSY), "{e}");
        assert!(e.to_string().starts_with(&format!("tap://{dev}: ")), "{e}");
        let e = TapLink::open(&dev, Medium::Ip).expect_err("tap opened as tun");
        assert_eq!(errno_of(&e), Some(libc::EINVAL), "{e}");
        assert!(e.to_string().starts_with(&format!("tun://{dev}: ")), "{e}");

        ns.move_link(&dev);
        ns.ip(&["link", "set", "dev", &dev, "up"]);
        ns.ip(&["addr", "add", "10.213.0.1/24", "dev", &dev]);

        let mut request = Vec::with_capacity(60);
        request.extend_from_slice(&[0xff; 6]); // broadcast
        request.extend_from_slice(&OUR_MAC);
        request.extend_from_slice(&0x0806u16.to_be_bytes()); // ARP
        request.extend_from_slice(&1u16.to_be_bytes()); // Ethernet
        request.extend_from_slice(&0x0800u16.to_be_bytes()); // IPv4
        request.extend_from_slice(&[6, 4]);
        request.extend_from_slice(&1u16.to_be_bytes()); // request
        request.extend_from_slice(&OUR_MAC);
        request.extend_from_slice(&OUR_IP);
        request.extend_from_slice(&[0; 6]);
        request.extend_from_slice(&KERNEL_IP);
        request.resize(60, 0); // minimum frame size

        let reply = exchange(&mut link, &request, |f| {
            f.len() >= 42
                && f[12..14] == [0x08, 0x06]
                && f[20..22] == 2u16.to_be_bytes()
                && f[28..32] == KERNEL_IP
        });
        assert_eq!(reply[0..6], OUR_MAC, "reply is sent to us");
        assert_eq!(reply[14..20], [0, 1, 8, 0, 6, 4]);
        assert_eq!(
            reply[22..28],
            reply[6..12],
            "sender MAC is the frame's source"
        );
        assert_eq!(reply[32..38], OUR_MAC);
        assert_eq!(reply[38..42], OUR_IP);
        drop(link);
        drop(ns);
    }

    /// TUN: the kernel of a namespace answers a hand-made ICMP echo request.
    #[test]
    fn tun_link_exchanges_icmp_echo_with_a_namespace() {
        const OUR_IP: [u8; 4] = [10, 214, 0, 2];
        const KERNEL_IP: [u8; 4] = [10, 214, 0, 1];
        const ID: u16 = 0x7d57;
        const SEQ: u16 = 1;
        const PAYLOAD: &[u8] = b"vdestack tun test";

        netns::require_tools();
        let ns = NetNs::new();
        let dev = format!("vdsttun{}", std::process::id());
        let mut link = TapLink::open(&dev, Medium::Ip).expect("open tun");
        assert_eq!(link.name(), dev);
        assert_eq!(link.medium(), Medium::Ip);
        assert_eq!(link.mtu(), 1500);

        ns.move_link(&dev);
        ns.ip(&["addr", "add", "10.214.0.1/24", "dev", &dev]);
        ns.ip(&["link", "set", "dev", &dev, "up"]);

        let mut icmp = Vec::new();
        icmp.extend_from_slice(&[8, 0, 0, 0]); // echo request, checksum below
        icmp.extend_from_slice(&ID.to_be_bytes());
        icmp.extend_from_slice(&SEQ.to_be_bytes());
        icmp.extend_from_slice(PAYLOAD);
        let sum = checksum(&icmp);
        icmp[2..4].copy_from_slice(&sum.to_be_bytes());

        let mut packet = Vec::new();
        packet.extend_from_slice(&[0x45, 0]);
        packet.extend_from_slice(&((20 + icmp.len()) as u16).to_be_bytes());
        packet.extend_from_slice(&0x1234u16.to_be_bytes()); // identification
        packet.extend_from_slice(&0x4000u16.to_be_bytes()); // DF
        packet.extend_from_slice(&[64, 1, 0, 0]); // TTL, ICMP, checksum below
        packet.extend_from_slice(&OUR_IP);
        packet.extend_from_slice(&KERNEL_IP);
        let sum = checksum(&packet);
        packet[10..12].copy_from_slice(&sum.to_be_bytes());
        packet.extend_from_slice(&icmp);

        let reply = exchange(&mut link, &packet, |p| {
            p.len() >= 28
                && p[0] >> 4 == 4
                && p[9] == 1
                && p[12..16] == KERNEL_IP
                && p[16..20] == OUR_IP
                && p.get(usize::from(p[0] & 0xf) * 4) == Some(&0)
        });
        let ihl = usize::from(reply[0] & 0xf) * 4;
        assert_eq!(checksum(&reply[..ihl]), 0, "IPv4 header checksum");
        let icmp = &reply[ihl..usize::from(u16::from_be_bytes([reply[2], reply[3]]))];
        assert_eq!(checksum(icmp), 0, "ICMP checksum");
        assert_eq!(icmp[0..2], [0, 0], "echo reply");
        assert_eq!(icmp[4..6], ID.to_be_bytes());
        assert_eq!(icmp[6..8], SEQ.to_be_bytes());
        assert_eq!(&icmp[8..], PAYLOAD);
        drop(link);
        drop(ns);
    }
}
