//! The target's memory: sockaddrs, msghdrs, iovecs and buffers, copied in and out with
//! process_vm_readv/writev. Every value is copied once into this process and checked
//! here, never read twice (another thread of the target may change it meanwhile); a bad
//! pointer is EFAULT for the target, never a fault of ours.

use std::io;
use std::net::SocketAddr;

/// The most a trapped data call moves at once: a datagram's limit, and room for TCP
/// (whose send may return less, as a nonblocking one can).
pub const MAX_DATA: usize = 256 * 1024;

fn efault() -> io::Error {
    io::Error::from_raw_os_error(libc::EFAULT)
}

/// Reads `buf.len()` bytes at `addr` in thread `tid`'s memory: EFAULT unless all of them.
pub fn read(tid: u32, addr: u64, buf: &mut [u8]) -> io::Result<()> {
    if buf.is_empty() {
        return Ok(());
    }
    if addr == 0 {
        return Err(efault());
    }
    let local = libc::iovec {
        iov_base: buf.as_mut_ptr() as *mut _,
        iov_len: buf.len(),
    };
    let remote = libc::iovec {
        iov_base: addr as *mut _,
        iov_len: buf.len(),
    };
    // SAFETY: local describes `buf`, ours to write; the kernel checks the remote range.
    let n = unsafe { libc::process_vm_readv(tid as libc::pid_t, &local, 1, &remote, 1, 0) };
    match n {
        n if n as usize == buf.len() => Ok(()),
        n if n >= 0 => Err(efault()),
        _ => Err(gone_or_fault()),
    }
}

/// Writes `data` at `addr` in thread `tid`'s memory: EFAULT unless all of it.
pub fn write(tid: u32, addr: u64, data: &[u8]) -> io::Result<()> {
    if data.is_empty() {
        return Ok(());
    }
    if addr == 0 {
        return Err(efault());
    }
    let local = libc::iovec {
        iov_base: data.as_ptr() as *mut _,
        iov_len: data.len(),
    };
    let remote = libc::iovec {
        iov_base: addr as *mut _,
        iov_len: data.len(),
    };
    // SAFETY: local describes `data`, which the kernel only reads.
    let n = unsafe { libc::process_vm_writev(tid as libc::pid_t, &local, 1, &remote, 1, 0) };
    match n {
        n if n as usize == data.len() => Ok(()),
        n if n >= 0 => Err(efault()),
        _ => Err(gone_or_fault()),
    }
}

/// process_vm_* failed: EFAULT stays, anything else (ESRCH: the thread is gone; EPERM)
/// is passed on as it is.
fn gone_or_fault() -> io::Error {
    io::Error::last_os_error()
}

/// Reads a plain value (a msghdr, an int, a socklen_t) at `addr`.
pub fn read_value<T: Copy>(tid: u32, addr: u64) -> io::Result<T> {
    let mut v = std::mem::MaybeUninit::<T>::zeroed();
    // SAFETY: the bytes of v, size_of::<T>() of them, are ours to write.
    let bytes =
        unsafe { std::slice::from_raw_parts_mut(v.as_mut_ptr() as *mut u8, size_of::<T>()) };
    read(tid, addr, bytes)?;
    // SAFETY: every byte was written; T is plain old data (callers use C structs and ints).
    Ok(unsafe { v.assume_init() })
}

/// Writes a plain value at `addr`.
pub fn write_value<T: Copy>(tid: u32, addr: u64, v: &T) -> io::Result<()> {
    // SAFETY: the bytes of *v, a plain value.
    let bytes = unsafe { std::slice::from_raw_parts(v as *const T as *const u8, size_of::<T>()) };
    write(tid, addr, bytes)
}

/// Reads a socket address of `len` bytes at `addr`, with the kernel's errors: EFAULT for a
/// bad pointer, EINVAL for a length too short or too long, EAFNOSUPPORT for a family that
/// is not IPv4 or IPv6.
pub fn read_addr(tid: u32, addr: u64, len: u64) -> io::Result<SocketAddr> {
    let len = usize::try_from(len).unwrap_or(usize::MAX);
    if len > size_of::<libc::sockaddr_storage>() {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    let mut bytes = [0u8; size_of::<libc::sockaddr_storage>()];
    read(tid, addr, &mut bytes[..len])?;
    crate::socket::parse_addr(&bytes[..len])
}

/// Writes a socket address as the kernel does for getsockname, accept, recvfrom: the
/// length at `lenp` says how much room there is; the address is cut to it and the full
/// length written back. Both NULL: nothing wanted.
pub fn write_addr(tid: u32, a: SocketAddr, addr: u64, lenp: u64) -> io::Result<()> {
    if addr == 0 && lenp == 0 {
        return Ok(());
    }
    if lenp == 0 {
        return Err(efault());
    }
    let room: libc::socklen_t = read_value(tid, lenp)?;
    if (room as i32) < 0 {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    let (ss, n) = crate::sys::std_to_sockaddr(&a);
    // SAFETY: the bytes of a sockaddr_storage, plain old data.
    let bytes = unsafe {
        std::slice::from_raw_parts(
            &ss as *const _ as *const u8,
            size_of::<libc::sockaddr_storage>(),
        )
    };
    write(tid, addr, &bytes[..(room as usize).min(n as usize)])?;
    write_value(tid, lenp, &n)
}

/// The iovecs of a msghdr: (base, len) each; EMSGSIZE past UIO_MAXIOV, as the kernel.
pub fn read_iovecs(tid: u32, iov: u64, count: u64) -> io::Result<Vec<(u64, usize)>> {
    const UIO_MAXIOV: u64 = 1024;
    if count > UIO_MAXIOV {
        return Err(io::Error::from_raw_os_error(libc::EMSGSIZE));
    }
    let mut raw = vec![0u8; count as usize * size_of::<libc::iovec>()];
    read(tid, iov, &mut raw)?;
    Ok(raw
        .chunks_exact(size_of::<libc::iovec>())
        .map(|c| {
            let base = u64::from_ne_bytes(c[0..8].try_into().unwrap_or_default());
            let len = u64::from_ne_bytes(c[8..16].try_into().unwrap_or_default());
            (base, len as usize)
        })
        .collect())
}

/// Gathers what iovecs point at, up to `limit` bytes in all.
pub fn gather(tid: u32, iovs: &[(u64, usize)], limit: usize) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    for &(base, len) in iovs {
        let take = len.min(limit - out.len());
        let at = out.len();
        out.resize(at + take, 0);
        read(tid, base, &mut out[at..])?;
        if out.len() == limit {
            break;
        }
    }
    Ok(out)
}

/// Scatters `data` over iovecs.
pub fn scatter(tid: u32, iovs: &[(u64, usize)], mut data: &[u8]) -> io::Result<()> {
    for &(base, len) in iovs {
        if data.is_empty() {
            break;
        }
        let k = len.min(data.len());
        write(tid, base, &data[..k])?;
        data = &data[k..];
    }
    Ok(())
}
