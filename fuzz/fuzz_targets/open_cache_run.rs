#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // a damaged local cache run: an error is fine, a panic or an unbounded allocation is a bug
    let dir = std::env::temp_dir().join(format!("fuzz-run-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    let path = dir.join("index.redb.1.run");
    if std::fs::write(&path, data).is_err() {
        return;
    }
    if let Ok(run) = repo::repo::blobrun::Run::open(&path) {
        if let Ok(it) = run.iter() {
            for e in it.take(1000) {
                let _ = e;
            }
        }
        let _ = run.copies(&[0x80; 32]);
        let mut cursor = None;
        let _ = run.get_sorted(&[0x80; 64], &mut cursor);
    }
});
