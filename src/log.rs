//! Logs. The engine, the links, the control path and the C library report through
//! [`tracing`]: a stack created or deleted, a link opened, lost (NO-CARRIER) or back, a
//! request refused or failed, a frame an impairment dropped, a panic recovered. A Rust
//! program that uses the crate gets these events in its own subscriber; with none, they
//! cost a check of a static each.
//!
//! The CLI and the C library (a program that links or preloads libvdestack.so) install a
//! subscriber of their own that writes to stderr, filtered by `VDESTACK_LOG` in
//! `tracing_subscriber::EnvFilter` syntax: `debug` for everything, `vdestack::link=debug`
//! for the links only, `off` for nothing. Unset, it is `warn`: what vdestack always printed
//! (a link lost or back, a locator it cannot open, a panic recovered).

/// The environment variable that sets the filter.
pub const ENV: &str = "VDESTACK_LOG";

/// Installs a stderr subscriber filtered by `$VDESTACK_LOG` (see the module), unless the
/// process has one already. For the CLI and the C library, never for a Rust program's sake.
pub fn init_from_env() {
    let spec = std::env::var(ENV).unwrap_or_default();
    let spec = if spec.trim().is_empty() {
        "warn"
    } else {
        spec.as_str()
    };
    let filter = match tracing_subscriber::EnvFilter::try_new(spec) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("vdestack: {ENV}={spec}: {e}; logging warnings only");
            tracing_subscriber::EnvFilter::new("warn")
        }
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .try_init();
}
