//! Resemblance sketches: a few 64-bit values per chunk that two chunks sharing most of their
//! content have in common with high probability, while unrelated chunks almost never share
//! one. The writer looks a new chunk's sketch up among the chunks it stored before to find a
//! delta base for content that moved (rows a database rewrote elsewhere in its table), where
//! the chunk at the same place in the previous snapshot holds something else.
//!
//! The method is Broder's min-wise sampling in the form of Finesse and Odess: a gear rolling
//! hash over the chunk, sampled at content-defined positions (one in [`SAMPLE_RATE`]), each
//! of [`FEATURES`] linear transforms of the sampled hashes keeps its maximum (a feature), and
//! each super-feature is a hash of [`FEATURES_PER_SUPER`] features. Two chunks share a
//! super-feature when they share all of its features, that is when the maxima of all its
//! transforms fall on shared content. Sketches never leave the local cache (they are not
//! part of the repository format), are stored there [`keyed`] with a key derived from the
//! repository's, and are only ever used as hints: a base they suggest is kept only when the
//! delta against it is smaller.

/// Super-features per sketch. Measured on the bench's docs dumps (benches/RESULTS.md,
/// "Resemblance sketches"): six of one feature each found better bases than three of four
/// or six of two (a super-feature of several features only matches chunks that are nearly
/// the same, and the chunks of moved rows share half of an old chunk or less), and eight or
/// twelve found no better ones.
pub const SUPER_FEATURES: usize = 6;
/// Features hashed into each super-feature.
const FEATURES_PER_SUPER: usize = 1;
const FEATURES: usize = SUPER_FEATURES * FEATURES_PER_SUPER;
/// One position in this many is sampled (those whose rolling hash has its top bits zero).
const SAMPLE_RATE: u64 = 64;

/// A chunk's sketch: its super-features.
pub type Sketch = [u64; SUPER_FEATURES];

const fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

const GEAR: [u64; 256] = {
    let mut t = [0u64; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = splitmix(0x5ce7_c4e5_0000_0000 + i as u64);
        i += 1;
    }
    t
};

/// The odd multipliers and the addends of the transforms.
const TRANSFORMS: [(u64, u64); FEATURES] = {
    let mut t = [(0u64, 0u64); FEATURES];
    let mut i = 0;
    while i < FEATURES {
        t[i] = (splitmix(0x7a11_0000 + 2 * i as u64) | 1, splitmix(0x7a11_0001 + 2 * i as u64));
        i += 1;
    }
    t
};

/// The sketch of `data`. Chunks too short to sample (a few hundred bytes) get sketches that
/// match little; callers skip small chunks anyway.
pub fn sketch(data: &[u8]) -> Sketch {
    let mut features = [0u64; FEATURES];
    let mut sample = |h: u64| {
        for (f, (m, a)) in features.iter_mut().zip(TRANSFORMS) {
            *f = (*f).max(h.wrapping_mul(m).wrapping_add(a));
        }
    };
    let shift = 64 - SAMPLE_RATE.trailing_zeros();
    let step = |h: u64, b: u8| (h << 1).wrapping_add(GEAR[b as usize]);
    // A shift-left gear hash of 64-bit words is a function of the last 64 bytes only, so the
    // chunk can be hashed as four parts side by side, each begun 63 bytes early without
    // sampling, with the same hashes as one pass: the four independent chains run about
    // twice as fast as one.
    const LANES: usize = 4;
    let part = data.len() / LANES;
    let mut h = 0u64;
    let mut done = 0;
    if part >= 256 {
        let lanes: [&[u8]; LANES] = std::array::from_fn(|i| &data[i * part..(i + 1) * part]);
        let mut hs: [u64; LANES] = std::array::from_fn(|i| {
            data[(i * part).saturating_sub(63)..i * part].iter().fold(0, |h, &b| step(h, b))
        });
        for j in 0..part {
            for (h, lane) in hs.iter_mut().zip(lanes) {
                *h = step(*h, lane[j]);
                if *h >> shift == 0 {
                    sample(*h);
                }
            }
        }
        (h, done) = (hs[LANES - 1], LANES * part);
    }
    for &b in &data[done..] {
        h = step(h, b);
        if h >> shift == 0 {
            sample(h);
        }
    }
    let mut out = [0u64; SUPER_FEATURES];
    for (s, group) in out.iter_mut().zip(features.chunks(FEATURES_PER_SUPER)) {
        *s = group.iter().fold(0x51e7_c400_0000_0001, |x, f| splitmix(x ^ f));
    }
    out
}

/// `s` with each super-feature replaced by the keyed BLAKE3 of its place and value: equal
/// super-features stay equal, and without the key nobody can compute the sketch of a guessed
/// chunk to compare it with those a cache holds.
pub fn keyed(s: &Sketch, key: &[u8; 32]) -> Sketch {
    std::array::from_fn(|k| {
        let mut m = [0u8; 9];
        m[0] = k as u8;
        m[1..].copy_from_slice(&s[k].to_le_bytes());
        let mut w = [0u8; 8];
        w.copy_from_slice(&blake3::keyed_hash(key, &m).as_bytes()[..8]);
        u64::from_le_bytes(w)
    })
}

/// How many super-features two sketches share.
pub fn shared(a: &Sketch, b: &Sketch) -> usize {
    a.iter().zip(b).filter(|(x, y)| x == y).count()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn random(n: usize, seed: u64) -> Vec<u8> {
        (0..n as u64).map(|i| splitmix(seed.wrapping_mul(1 << 40) + i) as u8).collect()
    }

    #[test]
    fn a_chunk_with_a_few_edits_shares_super_features_and_an_unrelated_one_none() {
        let mut hits = 0;
        for seed in 1..=20u64 {
            let a = random(128 << 10, seed);
            // ten 40-byte rewrites, as a database rewrites a few rows
            let mut b = a.clone();
            for k in 0..10 {
                let at = (k * 12_973 + seed as usize * 101) % (b.len() - 40);
                b[at..at + 40].copy_from_slice(&random(40, 1000 + seed * 10 + k as u64));
            }
            let other = random(128 << 10, 500 + seed);
            assert_eq!(shared(&sketch(&a), &sketch(&other)), 0, "seed {seed}");
            hits += usize::from(shared(&sketch(&a), &sketch(&b)) > 0);
        }
        // a super-feature survives when its maximum did not fall on a rewritten byte; with
        // 400 of 131,072 bytes rewritten nearly every pair shares one
        assert!(hits >= 18, "only {hits} of 20 edited chunks matched their original");
    }

    #[test]
    fn content_that_moved_within_a_chunk_keeps_its_sketch() {
        let a = random(64 << 10, 7);
        let mut b = a[20_000..].to_vec();
        b.extend_from_slice(&a[..20_000]);
        assert!(shared(&sketch(&a), &sketch(&b)) >= 2);
    }

    #[test]
    fn keying_keeps_equal_features_equal_and_depends_on_the_key_and_place() {
        let a = sketch(&random(64 << 10, 9));
        let mut b = sketch(&random(64 << 10, 10));
        b[2] = a[2];
        let (k1, k2) = ([1u8; 32], [2u8; 32]);
        assert_eq!(shared(&keyed(&a, &k1), &keyed(&b, &k1)), 1);
        assert_eq!(keyed(&a, &k1)[2], keyed(&b, &k1)[2]);
        assert_eq!(shared(&keyed(&a, &k1), &keyed(&a, &k2)), 0);
        let same = [a[0]; SUPER_FEATURES];
        let k = keyed(&same, &k1);
        assert!(k.iter().skip(1).all(|x| *x != k[0]), "the place is hashed in");
    }

    #[test]
    fn hashing_in_four_parts_gives_the_sketch_of_one_pass() {
        let one_pass = |data: &[u8]| {
            let mut f = [0u64; FEATURES];
            let mut h = 0u64;
            for &b in data {
                h = (h << 1).wrapping_add(GEAR[b as usize]);
                if h >> (64 - SAMPLE_RATE.trailing_zeros()) == 0 {
                    for (f, (m, a)) in f.iter_mut().zip(TRANSFORMS) {
                        *f = (*f).max(h.wrapping_mul(m).wrapping_add(a));
                    }
                }
            }
            let mut out = [0u64; SUPER_FEATURES];
            for (s, group) in out.iter_mut().zip(f.chunks(FEATURES_PER_SUPER)) {
                *s = group.iter().fold(0x51e7_c400_0000_0001, |x, f| splitmix(x ^ f));
            }
            out
        };
        for n in [0, 1, 1023, 1024, 1025, 4099, 65_536, 131_071] {
            let d = random(n, n as u64 + 1);
            assert_eq!(sketch(&d), one_pass(&d), "{n} bytes");
        }
    }

    #[test]
    fn the_sketch_is_fixed() {
        // sketches live in caches: a change of the method makes old entries useless (not
        // wrong: a suggested base is only kept when the delta pays), so it should be deliberate
        let s = sketch(&random(32 << 10, 3));
        let golden = [
            0xdb89_d458_0b38_d571,
            0xa9ba_5cbc_ea8e_b11c,
            0xadc8_5a1c_d6e2_4a6e,
            0xb596_b176_7d88_2ebd,
            0x6d98_74cf_c2fc_f854,
            0x2062_8e19_298e_1887,
        ];
        assert_eq!(s, golden);
    }
}
