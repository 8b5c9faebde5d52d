#![no_main]
use libfuzzer_sys::fuzz_target;
use repo::codec::crypto::MasterKeys;
use repo::format::envelope::{CipherKind, MAGIC_SNAPSHOT};

fuzz_target!(|data: &[u8]| {
    let keys = MasterKeys::from_bytes(&[7u8; 96]);
    for cipher in [CipherKind::None, CipherKind::Aes256Gcm] {
        if let Ok(body) = repo::repo::open_object(&keys, cipher, MAGIC_SNAPSHOT, data, "fuzz") {
            let _ = repo::format::snapshot::Snapshot::decode(&body);
        }
    }
});
