//! Engine keys: who may use an engine's stacks.
//!
//! Each engine draws a 128-bit secret from getrandom when it starts. A control connection
//! that shows it in its hello may do everything on that engine; one without it may only act
//! on a socket whose fd it attaches to the request (see docs/architecture.md, "Who may use
//! a stack"). This module keeps the keys this process holds, by engine control name: the
//! key of its own engine (forked children have the same memory, so they hold it too), and
//! the one the environment gives (`VDESTACK_CTL` with `VDESTACK_KEY`, set by `vdestack run`
//! and by a preloaded creator for their descendants, which keep it across exec and a change
//! of uid).

use std::sync::{Mutex, OnceLock};

pub use super::proto::Key;

/// Environment variable: the engine's control name.
pub const ENV_CTL: &str = "VDESTACK_CTL";
/// Environment variable: that engine's key, 32 hex digits.
pub const ENV_KEY: &str = "VDESTACK_KEY";

/// The keys this process holds, by engine control name (few: one engine per process, and
/// the environment's). Slots are written once and read without a lock: a child forked while
/// another thread of its parent was adding one must not wait for it.
static KEYS: [OnceLock<(Vec<u8>, Key)>; 8] = [const { OnceLock::new() }; 8];
/// Serialises writers.
static ADDING: Mutex<()> = Mutex::new(());

/// A fresh key from the kernel's CSPRNG; an error (never a weak key) if there is none.
pub fn generate() -> std::io::Result<Key> {
    let mut k = [0u8; 16];
    let mut got = 0;
    while got < k.len() {
        // SAFETY: the pointer and length stay within `k`.
        let n = unsafe { libc::getrandom(k[got..].as_mut_ptr().cast(), k.len() - got, 0) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return Err(e);
        }
        got += n as usize;
    }
    Ok(k)
}

/// Records that this process holds `key` for the engine named `ctl` (an engine's key never
/// changes; beyond 8 engines, handles that carry their key still work).
pub fn remember(ctl: &[u8], key: Key) {
    let _one = ADDING.lock().unwrap_or_else(|e| e.into_inner());
    if find(ctl).is_none() {
        if let Some(slot) = KEYS.iter().find(|s| s.get().is_none()) {
            let _ = slot.set((ctl.to_vec(), key));
        }
    }
}

fn find(ctl: &[u8]) -> Option<Key> {
    KEYS.iter()
        .filter_map(|s| s.get())
        .find(|(n, _)| n == ctl)
        .map(|(_, k)| *k)
}

/// The key this process holds for the engine named `ctl`, if any.
pub fn lookup(ctl: &[u8]) -> Option<Key> {
    load_env();
    find(ctl)
}

/// Takes the environment's key, once. The C library calls it as it loads; otherwise the
/// first lookup does.
pub fn load_env() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        if let (Some(ctl), Some(key)) = (std::env::var_os(ENV_CTL), std::env::var(ENV_KEY).ok()) {
            if let Some(k) = from_hex(&key) {
                use std::os::unix::ffi::OsStrExt;
                remember(ctl.as_bytes(), k);
            }
        }
    });
}

/// A key as 32 lowercase hex digits, for the environment.
pub fn to_hex(key: &Key) -> String {
    key.iter().map(|b| format!("{b:02x}")).collect()
}

/// Parses [`to_hex`]'s form.
pub fn from_hex(s: &str) -> Option<Key> {
    let s = s.trim().as_bytes();
    if s.len() != 32 {
        return None;
    }
    let mut k = [0u8; 16];
    for (i, pair) in s.chunks(2).enumerate() {
        let digit = |c: u8| (c as char).to_digit(16);
        k[i] = (digit(pair[0])? * 16 + digit(pair[1])?) as u8;
    }
    Some(k)
}

/// Compares two keys in time that does not depend on where they differ.
pub fn same(a: &Key, b: &Key) -> bool {
    let diff = a.iter().zip(b).fold(0u8, |d, (x, y)| d | (x ^ y));
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trips() {
        let k = generate().unwrap();
        assert_eq!(from_hex(&to_hex(&k)), Some(k));
        assert_eq!(to_hex(&[0xab; 16]), "ab".repeat(16));
        assert_eq!(from_hex("abc"), None);
        assert_eq!(from_hex(&"zz".repeat(16)), None);
        assert_eq!(from_hex(&"é".repeat(16)), None);
    }

    #[test]
    fn keys_differ_and_compare() {
        let (a, b) = (generate().unwrap(), generate().unwrap());
        assert_ne!(a, b);
        assert!(same(&a, &a));
        assert!(!same(&a, &b));
        let mut c = a;
        c[15] ^= 1;
        assert!(!same(&a, &c));
    }

    #[test]
    fn remembered_by_name() {
        remember(b"vds:test.1", [1; 16]);
        remember(b"vds:test.2", [2; 16]);
        remember(b"vds:test.1", [3; 16]);
        assert_eq!(lookup(b"vds:test.1"), Some([1; 16]));
        assert_eq!(lookup(b"vds:test.2"), Some([2; 16]));
        assert_eq!(lookup(b"vds:test.3"), None);
    }
}
