//! Start-up from the environment, for `LD_PRELOAD` and `vdestack run`.
//!
//! - `VDESTACK_CTL` + `VDESTACK_STACK` + `VDESTACK_KEY`: the engine control name, stack id
//!   and engine key of a stack that another process (`vdestack run`, or an ancestor) runs; it
//!   becomes the default stack. The key is what lets this process use it (see
//!   vdestack::internal::control::key); it survives exec and a change of uid, as the environment does.
//! - otherwise `VDESTACK_NET` (a locator; "" for loopback only), with `VDESTACK_IFNAME` and
//!   `VDESTACK_CMD` (configuration commands): this process creates the stack, makes it the
//!   default, and exports `VDESTACK_CTL`/`VDESTACK_STACK`/`VDESTACK_KEY` so that its
//!   descendants share it. The stack then lives as long as this process.

use std::io;

use vdestack::internal::control::{key, Ctl};
use vdestack::Stack;

use crate::interpose::set_default;

/// Environment variable: the engine's control socket name.
pub const ENV_CTL: &str = key::ENV_CTL;
/// Environment variable: the engine's key.
pub const ENV_KEY: &str = key::ENV_KEY;
/// Environment variable: the stack id within that engine.
pub const ENV_STACK: &str = "VDESTACK_STACK";
/// Environment variable: the locator of a stack to create.
pub const ENV_NET: &str = "VDESTACK_NET";
/// Environment variable: its interface name.
pub const ENV_IFNAME: &str = "VDESTACK_IFNAME";
/// Environment variable: its configuration commands.
pub const ENV_CMD: &str = "VDESTACK_CMD";

#[used]
#[link_section = ".init_array"]
static INIT: extern "C" fn() = init;

extern "C" fn init() {
    crate::guard((), || {
        vdestack::internal::log::init_from_env();
        if let Err(e) = from_env() {
            tracing::error!("the stack from the environment: {e}");
        }
    })
}

fn from_env() -> io::Result<()> {
    key::load_env();
    if let (Ok(ctl), Ok(id)) = (std::env::var(ENV_CTL), std::env::var(ENV_STACK)) {
        let id = id.parse().map_err(|_| {
            io::Error::new(io::ErrorKind::InvalidInput, format!("bad {ENV_STACK}={id}"))
        })?;
        if std::env::var(ENV_KEY)
            .ok()
            .and_then(|k| key::from_hex(&k))
            .is_none()
        {
            // Still attached: calls on fds this process holds work; the others say EACCES.
            tracing::warn!("{ENV_CTL} without a valid {ENV_KEY}: the stack will refuse most calls");
        }
        // Connections show the key the environment gives for this engine.
        set_default(Some(Stack::attach(Ctl::from_name(ctl.into_bytes()), id)));
        return Ok(());
    }
    let Ok(net) = std::env::var(ENV_NET) else {
        return Ok(());
    };
    let ifname = std::env::var(ENV_IFNAME).ok();
    let stack = Stack::new(&net, ifname.as_deref())?;
    if let Ok(cmds) = std::env::var(ENV_CMD) {
        stack
            .cmd(&cmds)
            .map_err(|e| io::Error::other(format!("{ENV_CMD}: {}", e.message)))?;
    }
    let ctl = String::from_utf8_lossy(stack.ctl().name()).into_owned();
    let k = stack
        .ctl()
        .key()
        .ok_or_else(|| io::Error::other("the engine has no key"))?;
    // Set before the program starts any thread of its own.
    std::env::set_var(ENV_CTL, ctl);
    std::env::set_var(ENV_STACK, stack.id().to_string());
    std::env::set_var(ENV_KEY, key::to_hex(&k));
    set_default(Some(Stack::attach(stack.ctl().clone(), stack.id())));
    // The stack lives as long as the process; at exit, what the program wrote last gets
    // its chance to go out first (exit handlers run before the engine thread dies).
    // SAFETY: getpid cannot fail.
    CREATOR.store(
        unsafe { libc::getpid() },
        std::sync::atomic::Ordering::Relaxed,
    );
    // SAFETY: registering a plain extern "C" function.
    unsafe { libc::atexit(linger_at_exit) };
    std::mem::forget(stack);
    Ok(())
}

/// The process that created the stack from the environment.
static CREATOR: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);

extern "C" fn linger_at_exit() {
    crate::guard((), || {
        // SAFETY: getpid cannot fail.
        let me = unsafe { libc::getpid() };
        // A forked child exiting leaves the stack to its parent.
        if me == CREATOR.load(std::sync::atomic::Ordering::Relaxed) {
            if let Some(s) = crate::interpose::default_stack() {
                s.linger(std::time::Duration::from_secs(1));
            }
        }
    })
}
