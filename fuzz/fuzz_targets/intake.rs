//! Arbitrary payloads into a real running service (memory broker, in-process pool): it must
//! account for each of them and keep answering. See `dispatcher_fuzz::Intake`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    dispatcher_fuzz::Intake::get().feed(data);
});
