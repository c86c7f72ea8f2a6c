#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| amps::fuzz::ts_stream(data));
