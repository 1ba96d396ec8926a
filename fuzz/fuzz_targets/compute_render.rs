#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| proxier_fuzz::targets::compute_render(data));
