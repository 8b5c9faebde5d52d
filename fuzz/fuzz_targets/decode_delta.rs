#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // layout: base length u16 LE, base, delta frame; a hostile frame or base gives an error
    // (or wrong bytes, which the chunk id check catches), never a panic or a buffer beyond
    // the raw length
    if data.len() < 2 {
        return;
    }
    let n = u16::from_le_bytes([data[0], data[1]]) as usize;
    let Some(base) = data.get(2..2 + n) else { return };
    let frame = &data[2 + n..];
    if let Ok(out) = repo::codec::compress::decompress_delta(base, frame, 65536) {
        assert!(out.len() <= 65536);
    }
});
