//! sendmmsg(2) and recvmmsg(2) on a UDP stack fd: one datagram after another, each as
//! [`calls`](super::calls) sends or receives one. (On a TCP stack fd the kernel runs them
//! on the pair: no address is involved.)

use std::io;
use std::mem::offset_of;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use super::calls::{again, read_msghdr, waits, Answer, Receive, Target};
use super::remote::{self, MAX_DATA};
use crate::socket as vs;

/// The most entries one call takes (the kernel's UIO_MAXIOV).
const MAX_ENTRIES: u64 = 1024;

fn entry(vec: u64, i: u64) -> u64 {
    vec + i * size_of::<libc::mmsghdr>() as u64
}

fn set_len(t: &Target, at: u64, n: usize) -> io::Result<()> {
    t.write_value(at + offset_of!(libc::mmsghdr, msg_len) as u64, &(n as u32))
}

/// One datagram to send: its data and address, copied from the target.
fn datagram(t: &Target, msg: u64) -> io::Result<(Vec<u8>, Option<SocketAddr>)> {
    let h = read_msghdr(t, msg)?;
    let iovs = remote::read_iovecs(t.n.tid, h.iov, h.iovlen)?;
    if iovs.iter().map(|i| i.1).sum::<usize>() > MAX_DATA {
        return Err(io::Error::from_raw_os_error(libc::EMSGSIZE));
    }
    let data = remote::gather(t.n.tid, &iovs, MAX_DATA)?;
    t.check()?;
    let to = if h.name != 0 && h.namelen != 0 {
        Some(t.read_addr(h.name, h.namelen as u64)?)
    } else {
        None
    };
    Ok((data, to))
}

/// sendmmsg(2): as many datagrams as go without waiting, once the first has gone (which
/// waits as the fd says); the count sent, or the first one's error.
pub fn sendmmsg(t: Target, fd: OwnedFd) -> io::Result<Answer> {
    let (vec, flags) = (t.arg(1), t.int(3));
    let count = (t.arg(2) as u32 as u64).min(MAX_ENTRIES);
    let mut msgs = Vec::new();
    for i in 0..count {
        match datagram(&t, entry(vec, i)) {
            Ok(m) => msgs.push((entry(vec, i), m)),
            Err(e) if i == 0 => return Err(e),
            Err(_) => break,
        }
    }
    let send = move |t: &Target, fd: RawFd| -> io::Result<usize> {
        let mut sent = 0;
        for (at, (data, to)) in &msgs {
            match vs::send_to(fd, data, *to, flags | libc::MSG_DONTWAIT) {
                Ok(n) => set_len(t, *at, n)?,
                Err(e) if sent == 0 => return Err(e),
                Err(_) => break,
            }
            sent += 1;
        }
        Ok(sent)
    };
    let f = fd.as_raw_fd();
    match send(&t, f) {
        Err(e) if again(&e) && waits(f, flags) => Ok(Answer::Later(Box::new(move || loop {
            t.wait(fd.as_raw_fd(), libc::POLLOUT)?;
            match send(&t, fd.as_raw_fd()) {
                Err(e) if again(&e) => continue,
                r => return r.map(|n| Answer::Value(n as i64)),
            }
        }))),
        r => r.map(|n| Answer::Value(n as i64)),
    }
}

/// recvmmsg(2): the first datagram waits as the fd and flags say, the others are taken if
/// they are there already (as with MSG_WAITFORONE; the timeout is not applied); the count
/// received, or the first one's error.
pub fn recvmmsg(t: Target, fd: OwnedFd) -> io::Result<Answer> {
    let (vec, flags) = (t.arg(1), t.int(3) & !libc::MSG_WAITFORONE);
    let count = (t.arg(2) as u32 as u64).min(MAX_ENTRIES);
    let f = fd.as_raw_fd();
    let mut entries = Vec::new();
    for i in 0..count {
        match Receive::of_msg(&t, f, entry(vec, i), flags) {
            Ok(r) => entries.push((entry(vec, i), r)),
            Err(e) if i == 0 => return Err(e),
            Err(_) => break,
        }
    }
    let room = entries.iter().map(|e| e.1.cap).max().unwrap_or(0);
    let mut buf = vec![0u8; room.min(MAX_DATA)];
    let recv = move |t: &Target, fd: RawFd, buf: &mut [u8]| -> io::Result<usize> {
        let mut got = 0;
        for (at, r) in &entries {
            match r.once(t, fd, buf) {
                Ok(n) => set_len(t, *at, n)?,
                Err(e) if got == 0 => return Err(e),
                Err(_) => break,
            }
            got += 1;
        }
        Ok(got)
    };
    match recv(&t, f, &mut buf) {
        Err(e) if again(&e) && waits(f, flags) => Ok(Answer::Later(Box::new(move || loop {
            t.wait(fd.as_raw_fd(), libc::POLLIN)?;
            match recv(&t, fd.as_raw_fd(), &mut buf) {
                Err(e) if again(&e) => continue,
                r => return r.map(|n| Answer::Value(n as i64)),
            }
        }))),
        r => r.map(|n| Answer::Value(n as i64)),
    }
}
