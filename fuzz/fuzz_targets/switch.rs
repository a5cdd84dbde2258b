#![no_main]
//! Fuzz target `switch`: see `vdestack::fuzzing`.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    vdestack::fuzzing::run("switch", data);
});
