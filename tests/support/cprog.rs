//! Shared by the tests that build and run C programs against the C library.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Command;

/// The workspace root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The release build's library; fails, saying how to build it, when it is missing.
pub fn library() -> PathBuf {
    let lib = root().join("target/release/libvdestack.so");
    assert!(
        lib.exists(),
        "{} is missing: build the workspace first (cargo build --release --workspace)",
        lib.display()
    );
    lib
}

/// Fails, naming the Debian package, when `tool` is not installed.
pub fn need(tool: &str, package: &str) {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(found, "this test needs `{tool}`: apt-get install {package}");
}

/// A fresh scratch directory for test `name` of `suite`.
pub fn scratch(suite: &str, name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("vdestack-{suite}-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}
