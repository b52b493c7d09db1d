//! Dropout with masks drawn from a counter-based hash of (seed, call, element) instead of the
//! backend's global RNG. Burn seeds one RNG per backend, shared by every thread; data-parallel
//! replicas training in two threads would then draw each other's masks in a racy order. Here a
//! mask depends only on the seed the trainer passes for that replica and step, so training is
//! bit-for-bit reproducible (and resumable) whatever the thread schedule.

use burn::tensor::{Tensor, TensorData};
use rmtrain_core::splitmix64;

/// Dropout state of one forward pass: every dropout site asks it for the next mask.
pub struct DropoutRng {
    seed: u64,
    calls: u64,
}

impl DropoutRng {
    pub fn new(seed: u64) -> Self {
        Self { seed, calls: 0 }
    }

    /// Inverted dropout: zeroes each element with probability `p`, scales survivors by 1/(1−p).
    pub fn apply<const D: usize>(&mut self, x: Tensor<D>, p: f64) -> Tensor<D> {
        match self.next_mask(p) {
            Some(mask) => mask.apply(x),
            None => x,
        }
    }

    /// The mask of the next dropout site, or `None` when `p ≤ 0` (which, like `apply`, draws
    /// nothing, so the stream of masks is the same whichever of the two a site uses). Fused kernels
    /// take the mask itself and evaluate it element by element instead of reading a mask tensor.
    pub fn next_mask(&mut self, p: f64) -> Option<DropoutMask> {
        if p <= 0.0 {
            return None;
        }
        self.calls += 1;
        Some(DropoutMask {
            key: splitmix64(self.seed ^ splitmix64(self.calls)),
            // Keep when a uniform u ∈ [0, 1) (53 bits of the hash) is ≥ p.
            threshold: (p * (1u64 << 53) as f64) as u64,
            scale: (1.0 / (1.0 - p)) as f32,
        })
    }
}

/// One dropout site's mask: element `i` (row-major over the masked tensor) is kept, and scaled by
/// `scale` = 1/(1−p), when 53 bits of splitmix64(key + i) are at least p·2^53.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DropoutMask {
    key: u64,
    threshold: u64,
    scale: f32,
}

impl DropoutMask {
    /// The factor element `i` is multiplied by: 0 (dropped) or 1/(1−p) (kept).
    #[inline(always)]
    pub fn factor(&self, i: u64) -> f32 {
        if splitmix64_inline(self.key.wrapping_add(i)) >> 11 >= self.threshold { self.scale } else { 0.0 }
    }

    /// x ⊙ mask, the mask uploaded as a tensor of factors.
    pub fn apply<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        let shape = x.dims();
        let n: usize = shape.iter().product();
        let mask: Vec<f32> = (0..n as u64).map(|i| self.factor(i)).collect();
        let mask = Tensor::<D>::from_data(TensorData::new(mask, shape), &x.device());
        x * mask
    }
}

/// `rmtrain_core::splitmix64`, inlinable into the fused kernels' loops (which then vectorize; a
/// call into another crate per element does not). The test below holds the two equal.
#[inline(always)]
fn splitmix64_inline(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Device;

    #[test]
    fn the_inlined_splitmix64_is_the_cores() {
        for i in 0..100_000u64 {
            let x = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (i << 7);
            assert_eq!(splitmix64_inline(x), splitmix64(x));
        }
    }

    #[test]
    fn drops_about_p_and_rescales_and_repeats_with_the_seed() {
        let x = Tensor::<2>::ones([100, 100], &Device::flex());
        let a: Vec<f32> = DropoutRng::new(7).apply(x.clone(), 0.1).into_data().try_to_vec().expect("f32");
        let b: Vec<f32> = DropoutRng::new(7).apply(x.clone(), 0.1).into_data().try_to_vec().expect("f32");
        let c: Vec<f32> = DropoutRng::new(8).apply(x, 0.1).into_data().try_to_vec().expect("f32");
        assert_eq!(a, b);
        assert_ne!(a, c);
        let dropped = a.iter().filter(|&&v| v == 0.0).count();
        assert!((900..1100).contains(&dropped), "{dropped} of 10000 dropped at p = 0.1");
        assert!(a.iter().all(|&v| v == 0.0 || (v - 1.0 / 0.9).abs() < 1e-6));
    }
}
