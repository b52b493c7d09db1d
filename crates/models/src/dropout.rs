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
        let row_len = x.dims()[D - 1];
        self.apply_rows(x, row_len)
    }

    /// x ⊙ the mask of a larger tensor at the elements `x` was cut from: x's rows of `row_len`
    /// elements (its last dim) are elements [k·row_stride, k·row_stride + row_len) of the masked
    /// tensor, row-major. With `row_stride = row_len` this is [`DropoutMask::apply`]. The BERT
    /// layer that computes only the [CLS] rows uses it to draw exactly the factors the whole
    /// layer would have used there.
    pub fn apply_rows<const D: usize>(&self, x: Tensor<D>, row_stride: usize) -> Tensor<D> {
        let shape = x.dims();
        let row_len = shape[D - 1];
        let n: usize = shape.iter().product();
        let mut mask = Vec::with_capacity(n);
        for row in 0..n.checked_div(row_len).unwrap_or(0) {
            let first = (row * row_stride) as u64;
            mask.extend((first..first + row_len as u64).map(|i| self.factor(i)));
        }
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

    #[test]
    fn rows_cut_from_a_tensor_get_that_tensors_factors() {
        let device = Device::flex();
        let mask = DropoutRng::new(3).next_mask(0.5).expect("p > 0");
        // [4, 5, 6] masked whole, then its rows [:, 0, :] and [:, 2, :] masked on their own
        let whole: Vec<f32> = mask.apply(Tensor::<3>::ones([4, 5, 6], &device)).into_data().try_to_vec().expect("f32");
        for first in [0usize, 2] {
            let rows: Vec<f32> = mask.apply_rows(Tensor::<3>::ones([4, 1, 6], &device), 5 * 6).into_data().try_to_vec().expect("f32");
            let rows_at: Vec<f32> = if first == 0 {
                rows
            } else {
                // the rows at offset 2·6 of each block: shift the key by that offset
                let shifted = DropoutMask { key: mask.key.wrapping_add(12), ..mask };
                shifted.apply_rows(Tensor::<3>::ones([4, 1, 6], &device), 5 * 6).into_data().try_to_vec().expect("f32")
            };
            let expected: Vec<f32> = (0..4).flat_map(|b| whole[b * 30 + first * 6..b * 30 + first * 6 + 6].to_vec()).collect();
            assert_eq!(rows_at, expected, "rows {first}");
            assert!(expected.contains(&0.0) && expected.contains(&2.0), "both factors occur");
        }
        // row_stride = row_len is `apply`
        let x = Tensor::<2>::ones([7, 9], &device);
        assert_eq!(mask.apply_rows(x.clone(), 9).into_data(), mask.apply(x).into_data());
    }
}
