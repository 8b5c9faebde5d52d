#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // hostile bytes: an error is fine, a panic or an unbounded allocation is a bug
    let _ = {
        let _ = repo::format::lock::LeaseBody::decode(data);
        repo::format::lock::LeaseName::decode(&String::from_utf8_lossy(data))
    };
});
