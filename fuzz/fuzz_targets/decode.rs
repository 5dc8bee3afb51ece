//! Arbitrary bytes through the decoder, the chunk assembler and argument binding, with every
//! bound checked after each step. See `dispatcher_fuzz::decode_and_assemble`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    dispatcher_fuzz::decode_and_assemble(data);
});
