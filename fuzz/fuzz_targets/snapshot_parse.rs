#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| proxier_testkit::fuzz::targets::snapshot_parse(data));
