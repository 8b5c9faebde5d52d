#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // hostile bytes: an error is fine, a panic or an unbounded allocation is a bug. Both
    // layouts of an index body (`RIDX`, and a sorted index part `RIXS`)
    let _ = repo::format::index::IndexFile::decode(data);
    let _ = repo::format::index::IndexFile::decode_sorted(data);
    // the walk of parts already checked must not panic either on bytes never checked
    let _ = repo::format::index::sorted_table(data);
    let _ = repo::format::index::walk_checked_sorted(data, |_| {});
});
