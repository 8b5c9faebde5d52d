#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // hostile bytes: an error is fine, a panic or an unbounded allocation is a bug
    let _ = repo::format::bundle::Bundle::decode(data);
});
