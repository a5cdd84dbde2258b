//! `libvdestack.so.0`: libvdestack's C API (`vdestack.h`) over vdestack, and the socket
//! calls a C program makes on its fds.
//!
//! - [`api`]: `vde_addstack`, `vde_delstack`, `vde_stackcmd`, `vde_msocket`,
//!   `vde_default_stack`.
//! - [`interpose`]: `socket`, `bind`, `connect`, ... exported under libc's names. A call on a
//!   stack fd goes to the engine; any other goes to libc at once (found with
//!   `dlsym(RTLD_NEXT)`, see [`real`]).
//! - [`preload`]: with `LD_PRELOAD`, the stack named by the environment becomes the default
//!   one, so an unmodified program's sockets live in it.
//!
//! No panic crosses the ABI: every export runs under [`guard`].

pub mod api;
pub mod fdtable;
pub mod interpose;
pub mod preload;
pub mod real;
pub mod resolv;

use std::io;
use std::panic::{catch_unwind, AssertUnwindSafe};

/// Sets the C `errno`.
pub fn set_errno(e: i32) {
    // SAFETY: __errno_location returns this thread's errno slot.
    unsafe { *libc::__errno_location() = e };
}

/// The errno an error stands for (EIO when it carries none).
pub fn errno_of(e: &io::Error) -> i32 {
    e.raw_os_error().unwrap_or(libc::EIO)
}

/// Runs `f`, turning a panic into `fail` with errno EIO: nothing unwinds into C.
pub fn guard<T>(fail: T, f: impl FnOnce() -> T) -> T {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|_| {
        set_errno(libc::EIO);
        fail
    })
}

/// Runs `f` for a call that returns an int: Ok(v) → v, Err(e) → -1 with errno set.
pub fn int_call(f: impl FnOnce() -> io::Result<i32>) -> i32 {
    guard(-1, || match f() {
        Ok(v) => v,
        Err(e) => {
            set_errno(errno_of(&e));
            -1
        }
    })
}
