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
        if p <= 0.0 {
            return x;
        }
        self.calls += 1;
        let shape = x.dims();
        let n: usize = shape.iter().product();
        let key = splitmix64(self.seed ^ splitmix64(self.calls));
        let scale = (1.0 / (1.0 - p)) as f32;
        // Keep when a uniform u ∈ [0, 1) (53 bits of the hash) is ≥ p.
        let threshold = (p * (1u64 << 53) as f64) as u64;
        let mask: Vec<f32> = (0..n as u64)
            .map(|i| if splitmix64(key.wrapping_add(i)) >> 11 >= threshold { scale } else { 0.0 })
            .collect();
        let mask = Tensor::<D>::from_data(TensorData::new(mask, shape), &x.device());
        x * mask
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Device;

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
