//! Seeds derived from seeds: every random stream of rmtrain (data order, dropout masks, a new
//! head's init, label flips, bootstrap resamples) is a pure function of a user seed and counters,
//! so runs repeat bit for bit and a resumed run draws what the uninterrupted one drew.

/// splitmix64 (Steele et al. 2014, the finaliser of Java's SplittableRandom): a bijective mix of
/// 64 bits whose outputs for consecutive inputs are statistically independent.
pub fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A new seed from `seed` and two counters (e.g. step and micro-batch).
pub fn mix_seed(seed: u64, a: u64, b: u64) -> u64 {
    // The counters are spread by odd constants before the mix so (a, b) and (b, a) differ.
    let z = seed ^ a.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ b.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    splitmix64(z.wrapping_sub(0x9E37_79B9_7F4A_7C15))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix64_reference_values() {
        // From the reference C implementation seeded with 0: the first outputs of the generator
        // are splitmix64(k · 0x9E3779B97F4A7C15) for k = 0, 1, ...
        assert_eq!(splitmix64(0), 0xE220_A839_7B1D_CDAF);
        assert_eq!(splitmix64(0x9E37_79B9_7F4A_7C15), 0x6E78_9E6A_A1B9_65F4);
    }

    #[test]
    fn mix_seed_is_the_trainers_historic_function() {
        // The trainer's seeds before this module existed: changing them would change every run.
        fn old(seed: u64, a: u64, b: u64) -> u64 {
            let mut z = seed ^ a.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ b.wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        }
        for (s, a, b) in [(0, 0, 0), (7, 3, 9), (u64::MAX, 12345, 1)] {
            assert_eq!(mix_seed(s, a, b), old(s, a, b));
        }
    }
}
