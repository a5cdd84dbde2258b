#![no_main]
//! Fuzz target `stackcmd`: see `vdestack::fuzzing`.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    vdestack::fuzzing::run("stackcmd", data);
});
