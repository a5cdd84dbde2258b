#![no_main]
//! Fuzz target `frames_ip`: see `vdestack::fuzzing`.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    vdestack::fuzzing::run("frames_ip", data);
});
