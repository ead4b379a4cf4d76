//! Fuzz target: see `edk_ws::fuzzing::read_frames` and fuzz/README.md.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| edk_ws::fuzzing::read_frames(data));
