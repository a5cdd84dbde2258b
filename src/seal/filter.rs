//! The seccomp filter of a sealed program, in classic BPF, written out by hand: it is a
//! short decision list on the syscall number and a few argument words, which a small
//! assembler with labels states more plainly than a dependency would (libseccomp is C,
//! seccompiler has no user-notification action).
//!
//! What it does, for the native architecture:
//! - socket(): AF_UNIX goes on; AF_INET/AF_INET6 go to the supervisor, which makes a stack
//!   socket; AF_NETLINK's sock_diag goes on; every other family (packet, the other netlink
//!   protocols, vsock, ...) fails with EAFNOSUPPORT.
//! - socketpair(): AF_UNIX goes on; AF_INET/AF_INET6 fail with EOPNOTSUPP, as Linux says;
//!   others with EAFNOSUPPORT.
//! - io_uring_setup(): ENOSYS, so programs fall back to plain syscalls.
//! - sendto()/recvfrom() without an address go on (data on a connected socket); with one,
//!   to the supervisor.
//! - the other socket calls on an fd go to the supervisor, unless they carry
//!   [`SEAL_MARK`](crate::sys::SEAL_MARK) in their sixth argument (the preloaded library's
//!   own plumbing).
//! - anything else goes on.
//!
//! x32 syscalls fail with ENOSYS. On x86_64, 32-bit (i386) programs may make AF_UNIX
//! sockets only, and their socketcall() multiplexer (whose arguments the filter cannot
//! read) fails with ENOSYS.

use crate::sys::SEAL_MARK;

/// AUDIT_ARCH_* of the architecture this is built for (linux/audit.h).
#[cfg(target_arch = "x86_64")]
pub const NATIVE_ARCH: u32 = 0xc000_003e;
/// AUDIT_ARCH_* of the architecture this is built for (linux/audit.h).
#[cfg(target_arch = "aarch64")]
pub const NATIVE_ARCH: u32 = 0xc000_00b7;

/// AUDIT_ARCH_I386.
#[cfg(target_arch = "x86_64")]
const I386: u32 = 0x4000_0003;
/// __X32_SYSCALL_BIT.
#[cfg(target_arch = "x86_64")]
const X32_BIT: u32 = 0x4000_0000;

/// The socket calls on an fd that the supervisor answers unless marked.
const FD_CALLS: &[libc::c_long] = &[
    libc::SYS_bind,
    libc::SYS_connect,
    libc::SYS_listen,
    libc::SYS_accept,
    libc::SYS_accept4,
    libc::SYS_getsockname,
    libc::SYS_getpeername,
    libc::SYS_getsockopt,
    libc::SYS_setsockopt,
    libc::SYS_shutdown,
    libc::SYS_sendmsg,
    libc::SYS_recvmsg,
    libc::SYS_sendmmsg,
    libc::SYS_recvmmsg,
];

/// Offsets in struct seccomp_data.
const NR: u32 = 0;
const ARCH: u32 = 4;
/// The low 32-bit word of argument `i` (little endian).
const fn arg_lo(i: u32) -> u32 {
    16 + 8 * i
}
const fn arg_hi(i: u32) -> u32 {
    20 + 8 * i
}

const LD_ABS: u16 = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
const JEQ: u16 = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
const JSET: u16 = (libc::BPF_JMP | libc::BPF_JSET | libc::BPF_K) as u16;
const RET: u16 = (libc::BPF_RET | libc::BPF_K) as u16;

const ALLOW: u32 = libc::SECCOMP_RET_ALLOW;
const NOTIFY: u32 = libc::SECCOMP_RET_USER_NOTIF;
const fn errno(e: i32) -> u32 {
    libc::SECCOMP_RET_ERRNO | (e as u32 & libc::SECCOMP_RET_DATA)
}

/// Where a conditional jump goes.
#[derive(Clone, Copy, PartialEq)]
enum To {
    Next,
    Label(usize),
}

/// A program being written: instructions whose jumps name labels, resolved at the end.
#[derive(Default)]
struct Asm {
    code: Vec<(u16, To, To, u32)>,
    labels: Vec<Option<usize>>,
}

impl Asm {
    fn label(&mut self) -> To {
        self.labels.push(None);
        To::Label(self.labels.len() - 1)
    }
    fn here(&mut self, l: To) {
        if let To::Label(i) = l {
            self.labels[i] = Some(self.code.len());
        }
    }
    fn load(&mut self, off: u32) {
        self.code.push((LD_ABS, To::Next, To::Next, off));
    }
    /// If A == k go to `yes`, else to `no`.
    fn jeq(&mut self, k: u32, yes: To, no: To) {
        self.code.push((JEQ, yes, no, k));
    }
    fn jset(&mut self, k: u32, yes: To, no: To) {
        self.code.push((JSET, yes, no, k));
    }
    fn ret(&mut self, action: u32) {
        self.code.push((RET, To::Next, To::Next, action));
    }
    /// The program, jumps resolved; panics on an unplaced label or a jump that does not fit
    /// (a bug in [`program`], checked by its tests).
    fn finish(self) -> Vec<libc::sock_filter> {
        let at = |i: usize, t: To| -> u8 {
            match t {
                To::Next => 0,
                To::Label(l) => {
                    let target = self.labels[l].expect("label placed");
                    u8::try_from(target - i - 1).expect("jump fits")
                }
            }
        };
        self.code
            .iter()
            .enumerate()
            .map(|(i, &(code, jt, jf, k))| libc::sock_filter {
                code,
                jt: at(i, jt),
                jf: at(i, jf),
                k,
            })
            .collect()
    }
}

/// The filter.
pub fn program() -> Vec<libc::sock_filter> {
    let mut a = Asm::default();
    let allow = a.label();
    let notify = a.label();
    let enosys = a.label();
    let eafnosupport = a.label();
    let eopnotsupp = a.label();
    let socket = a.label();
    let socketpair = a.label();
    let addr = a.label();
    let mark = a.label();
    let foreign = a.label();

    a.load(ARCH);
    a.jeq(NATIVE_ARCH, To::Next, foreign);
    a.load(NR);
    #[cfg(target_arch = "x86_64")]
    a.jset(X32_BIT, enosys, To::Next);
    a.jeq(libc::SYS_socket as u32, socket, To::Next);
    a.jeq(libc::SYS_socketpair as u32, socketpair, To::Next);
    a.jeq(libc::SYS_io_uring_setup as u32, enosys, To::Next);
    a.jeq(libc::SYS_sendto as u32, addr, To::Next);
    a.jeq(libc::SYS_recvfrom as u32, addr, To::Next);
    for &nr in FD_CALLS {
        a.jeq(nr as u32, mark, To::Next);
    }
    a.ret(ALLOW);

    // The domain is an int: its low word is all the kernel reads.
    a.here(socket);
    a.load(arg_lo(0));
    a.jeq(libc::AF_UNIX as u32, allow, To::Next);
    a.jeq(libc::AF_INET as u32, notify, To::Next);
    a.jeq(libc::AF_INET6 as u32, notify, To::Next);
    // sock_diag (what `ss` reads; the C library asks it how a pair was shut) reaches no
    // network: the other netlink protocols stay refused.
    a.jeq(libc::AF_NETLINK as u32, To::Next, eafnosupport);
    a.load(arg_lo(2));
    a.jeq(libc::NETLINK_SOCK_DIAG as u32, allow, eafnosupport);

    a.here(socketpair);
    a.load(arg_lo(0));
    a.jeq(libc::AF_UNIX as u32, allow, To::Next);
    a.jeq(libc::AF_INET as u32, eopnotsupp, To::Next);
    a.jeq(libc::AF_INET6 as u32, eopnotsupp, eafnosupport);

    // sendto/recvfrom: the address pointer (argument 4) NULL.
    a.here(addr);
    a.load(arg_lo(4));
    a.jeq(0, To::Next, notify);
    a.load(arg_hi(4));
    a.jeq(0, allow, notify);

    a.here(mark);
    a.load(arg_lo(5));
    a.jeq(SEAL_MARK as u64 as u32, To::Next, notify);
    a.load(arg_hi(5));
    a.jeq((SEAL_MARK as u64 >> 32) as u32, allow, notify);

    a.here(foreign);
    #[cfg(target_arch = "x86_64")]
    {
        let socket32 = a.label();
        a.jeq(I386, To::Next, enosys);
        a.load(NR);
        a.jeq(102, enosys, To::Next); // socketcall
        a.jeq(libc::SYS_io_uring_setup as u32, enosys, To::Next); // same number on i386
        a.jeq(359, socket32, To::Next); // socket
        a.jeq(360, socket32, allow); // socketpair
        a.here(socket32);
        a.load(arg_lo(0));
        a.jeq(libc::AF_UNIX as u32, allow, eafnosupport);
    }
    #[cfg(not(target_arch = "x86_64"))]
    a.ret(errno(libc::ENOSYS));

    a.here(allow);
    a.ret(ALLOW);
    a.here(notify);
    a.ret(NOTIFY);
    a.here(enosys);
    a.ret(errno(libc::ENOSYS));
    a.here(eafnosupport);
    a.ret(errno(libc::EAFNOSUPPORT));
    a.here(eopnotsupp);
    a.ret(errno(libc::EOPNOTSUPP));
    a.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs the program on one syscall as the kernel would (the instructions it uses only).
    fn run(prog: &[libc::sock_filter], arch: u32, nr: i64, args: [u64; 6]) -> u32 {
        let mut data = [0u8; 64];
        data[0..4].copy_from_slice(&(nr as i32).to_le_bytes());
        data[4..8].copy_from_slice(&arch.to_le_bytes());
        for (i, a) in args.iter().enumerate() {
            data[16 + 8 * i..24 + 8 * i].copy_from_slice(&a.to_le_bytes());
        }
        let (mut pc, mut acc) = (0usize, 0u32);
        loop {
            let f = &prog[pc];
            pc += 1;
            match f.code {
                LD_ABS => {
                    let o = f.k as usize;
                    acc = u32::from_le_bytes(data[o..o + 4].try_into().unwrap());
                }
                JEQ => pc += if acc == f.k { f.jt } else { f.jf } as usize,
                JSET => pc += if acc & f.k != 0 { f.jt } else { f.jf } as usize,
                RET => return f.k,
                c => panic!("unexpected instruction {c:#x}"),
            }
        }
    }

    fn native(nr: i64, args: [u64; 6]) -> u32 {
        run(&program(), NATIVE_ARCH, nr, args)
    }

    const MARK: u64 = SEAL_MARK as u64;

    #[test]
    fn sockets_by_family() {
        let s = libc::SYS_socket;
        assert_eq!(native(s, [libc::AF_UNIX as u64, 1, 0, 0, 0, 0]), ALLOW);
        assert_eq!(native(s, [libc::AF_INET as u64, 1, 0, 0, 0, 0]), NOTIFY);
        assert_eq!(native(s, [libc::AF_INET6 as u64, 2, 0, 0, 0, 0]), NOTIFY);
        // High bits of the register do not change the int the kernel reads.
        assert_eq!(
            native(s, [1 << 32 | libc::AF_INET as u64, 1, 0, 0, 0, 0]),
            NOTIFY
        );
        for f in [
            libc::AF_PACKET,
            libc::AF_NETLINK,
            libc::AF_VSOCK,
            libc::AF_BLUETOOTH,
        ] {
            assert_eq!(
                native(s, [f as u64, 3, 0, 0, 0, 0]),
                errno(libc::EAFNOSUPPORT)
            );
        }
        let diag = libc::NETLINK_SOCK_DIAG as u64;
        assert_eq!(
            native(s, [libc::AF_NETLINK as u64, 2, diag, 0, 0, 0]),
            ALLOW
        );
        assert_eq!(
            native(s, [libc::AF_NETLINK as u64, 2, 0, 0, 0, 0]),
            errno(libc::EAFNOSUPPORT),
            "NETLINK_ROUTE"
        );
        let p = libc::SYS_socketpair;
        assert_eq!(native(p, [libc::AF_UNIX as u64, 1, 0, 0, 0, 0]), ALLOW);
        assert_eq!(
            native(p, [libc::AF_INET as u64, 1, 0, 0, 0, 0]),
            errno(libc::EOPNOTSUPP)
        );
        assert_eq!(
            native(p, [libc::AF_NETLINK as u64, 1, 0, 0, 0, 0]),
            errno(libc::EAFNOSUPPORT)
        );
    }

    #[test]
    fn fd_calls_notify_unless_marked() {
        for &nr in FD_CALLS {
            assert_eq!(native(nr, [3, 0, 0, 0, 0, 0]), NOTIFY, "{nr}");
            assert_eq!(native(nr, [3, 0, 0, 0, 0, MARK]), ALLOW, "{nr}");
            // Half a mark is none.
            assert_eq!(native(nr, [3, 0, 0, 0, 0, MARK & 0xffff_ffff]), NOTIFY);
            assert_eq!(native(nr, [3, 0, 0, 0, 0, MARK ^ 1 << 40]), NOTIFY);
        }
    }

    #[test]
    fn data_calls_notify_with_an_address() {
        for nr in [libc::SYS_sendto, libc::SYS_recvfrom] {
            assert_eq!(native(nr, [3, 0x1000, 10, 0, 0, 0]), ALLOW);
            assert_eq!(native(nr, [3, 0x1000, 10, 0, 0x2000, 16]), NOTIFY);
            assert_eq!(native(nr, [3, 0x1000, 10, 0, 1 << 40, 16]), NOTIFY);
            // The mark does not let an address through.
            assert_eq!(native(nr, [3, 0x1000, 10, 0, 0x2000, MARK]), NOTIFY);
        }
    }

    #[test]
    fn everything_else_goes_on_and_io_uring_does_not() {
        for nr in [
            libc::SYS_read,
            libc::SYS_write,
            libc::SYS_openat,
            libc::SYS_close,
        ] {
            assert_eq!(native(nr, [3, 0, 0, 0, 0, 0]), ALLOW);
        }
        assert_eq!(
            native(libc::SYS_io_uring_setup, [8, 0, 0, 0, 0, 0]),
            errno(libc::ENOSYS)
        );
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn x32_and_i386() {
        let x32 = libc::SYS_socket | X32_BIT as i64;
        assert_eq!(
            native(x32, [libc::AF_UNIX as u64, 1, 0, 0, 0, 0]),
            errno(libc::ENOSYS)
        );
        let prog = program();
        let i386 = |nr, a0| run(&prog, I386, nr, [a0, 1, 0, 0, 0, 0]);
        assert_eq!(i386(102, 1), errno(libc::ENOSYS));
        assert_eq!(i386(359, libc::AF_UNIX as u64), ALLOW);
        assert_eq!(i386(359, libc::AF_INET as u64), errno(libc::EAFNOSUPPORT));
        assert_eq!(i386(360, libc::AF_INET as u64), errno(libc::EAFNOSUPPORT));
        assert_eq!(i386(3, 0), ALLOW);
        assert_eq!(
            run(&prog, 0x1234, 41, [2, 1, 0, 0, 0, 0]),
            errno(libc::ENOSYS)
        );
    }
}
