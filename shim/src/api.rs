//! libvdestack's API: `vdestack.h`.

use std::collections::HashSet;
use std::ffi::{c_char, c_int, CStr};
use std::io::Write;
use std::os::fd::IntoRawFd;
use std::sync::Mutex;

use vdestack::Stack;

use crate::{guard, int_call, set_errno};

/// `struct vdestack`, opaque to C.
pub struct VdeStack(Stack);

/// The stacks handed out and not yet deleted, by address: a pointer that is not one of them
/// is refused without being read.
static LIVE: Mutex<Option<HashSet<usize>>> = Mutex::new(None);

fn live(p: *const VdeStack) -> bool {
    let live = LIVE.lock().unwrap_or_else(|e| e.into_inner());
    live.as_ref().is_some_and(|s| s.contains(&(p as usize)))
}

/// The stack behind a pointer C gave us, or EINVAL.
fn stack<'a>(p: *const VdeStack) -> std::io::Result<&'a Stack> {
    if p.is_null() || !live(p) {
        return Err(std::io::Error::from_raw_os_error(libc::EINVAL));
    }
    // SAFETY: p is one of the live boxes vde_addstack leaked; only vde_delstack frees it.
    Ok(unsafe { &(*p).0 })
}

/// A C string argument: None for NULL, EINVAL when not UTF-8.
///
/// # Safety
/// `s` is NULL or a NUL-terminated string.
unsafe fn text<'a>(s: *const c_char) -> std::io::Result<Option<&'a str>> {
    if s.is_null() {
        return Ok(None);
    }
    // SAFETY: the caller passes a NUL-terminated string.
    let s = unsafe { CStr::from_ptr(s) };
    s.to_str()
        .map(Some)
        .map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))
}

/// Creates a stack on the network `vdenet` names (NULL or "": loopback only), with its
/// interface called `ifname` (NULL: vde0). NULL with errno on failure.
///
/// # Safety
/// `vdenet` and `ifname` are NULL or NUL-terminated strings.
#[no_mangle]
pub unsafe extern "C" fn vde_addstack(
    vdenet: *const c_char,
    ifname: *const c_char,
) -> *mut VdeStack {
    guard(std::ptr::null_mut(), || {
        // SAFETY: as the caller promises.
        let args = unsafe { text(vdenet).and_then(|v| Ok((v, text(ifname)?))) };
        let made = args.and_then(|(vnl, ifname)| {
            // A locator wrong on its face: say why, as the engine does for one it cannot open.
            vdestack::internal::link::check(vnl.unwrap_or(""))
                .inspect_err(|e| tracing::warn!("{e}"))?;
            Stack::new(vnl.unwrap_or(""), ifname)
        });
        match made {
            Ok(s) => {
                let p = Box::into_raw(Box::new(VdeStack(s)));
                let mut live = LIVE.lock().unwrap_or_else(|e| e.into_inner());
                live.get_or_insert_with(HashSet::new).insert(p as usize);
                p
            }
            Err(e) => {
                // Stack::new's errors carry a message, and the errno in their kind.
                set_errno(vdestack::internal::link::errno_of(&e));
                std::ptr::null_mut()
            }
        }
    })
}

/// Ends a stack: its sockets read EOF, its network is left. NULL or an unknown pointer does
/// nothing.
///
/// # Safety
/// `stack` is NULL or a pointer vde_addstack returned.
#[no_mangle]
pub unsafe extern "C" fn vde_delstack(stack: *mut VdeStack) {
    guard((), || {
        let mut live = LIVE.lock().unwrap_or_else(|e| e.into_inner());
        if live.as_mut().is_some_and(|s| s.remove(&(stack as usize))) {
            drop(live);
            // SAFETY: it was live, so it is a box vde_addstack leaked, and no longer listed.
            let s = unsafe { Box::from_raw(stack) };
            crate::interpose::forget_default(s.0.id());
        }
    })
}

/// Runs configuration commands (`/bin/ip link set vde0 up; /bin/ip addr add ...`) and
/// returns a shell's exit status; messages go to stderr, `show` output to stdout. -1 with
/// EINVAL for a NULL or unknown stack or NULL commands.
///
/// # Safety
/// `stack` is NULL or a pointer vde_addstack returned; `cmds` NULL or a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn vde_stackcmd(stack: *mut VdeStack, cmds: *const c_char) -> c_int {
    int_call(|| {
        let s = self::stack(stack)?;
        // SAFETY: as the caller promises.
        let cmds = unsafe { text(cmds)? }
            .ok_or_else(|| std::io::Error::from_raw_os_error(libc::EINVAL))?;
        Ok(match s.cmd_output(cmds) {
            Ok(out) => {
                print!("{out}");
                let _ = std::io::stdout().flush();
                0
            }
            Err(e) => {
                eprintln!("{}", e.message);
                e.status
            }
        })
    })
}

/// socket(2) in `stack`. -1 with errno on failure.
///
/// # Safety
/// `stack` is NULL or a pointer vde_addstack returned.
#[no_mangle]
pub unsafe extern "C" fn vde_msocket(
    stack: *mut VdeStack,
    domain: c_int,
    ty: c_int,
    protocol: c_int,
) -> c_int {
    let fd = int_call(|| {
        Ok(self::stack(stack)?
            .socket(domain, ty, protocol)?
            .into_raw_fd())
    });
    if fd >= 0 {
        crate::fdtable::set(fd, crate::fdtable::stack_kind(ty));
    }
    fd
}

/// Makes `socket()` create AF_INET/AF_INET6 sockets in `stack`; NULL gives them back to
/// the kernel.
///
/// # Safety
/// `stack` is NULL or a pointer vde_addstack returned.
#[no_mangle]
pub unsafe extern "C" fn vde_default_stack(stack: *mut VdeStack) {
    guard((), || {
        if stack.is_null() {
            crate::interpose::set_default(None);
        } else if let Ok(s) = self::stack(stack) {
            crate::interpose::set_default(Some(Stack::attach(s.ctl().clone(), s.id())));
        } else {
            set_errno(libc::EINVAL);
        }
    })
}
