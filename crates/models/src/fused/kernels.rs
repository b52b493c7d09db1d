//! The loops behind the fused ops, over plain row-major f32 slices, and the branch-free `exp` and
//! `erf` they use. Written so that LLVM vectorizes the element-wise loops (no calls into libm, a
//! `select` instead of branches); reductions run in one fixed order, so a result does not depend
//! on the vector width the compiler picked.

use crate::dropout::DropoutMask;
use std::f32::consts::{FRAC_1_SQRT_2, LOG2_E};

/// Defines `pub fn $name` that runs its body compiled for AVX-512 or AVX2 when the CPU has them
/// (checked at run time; the crate is built for baseline x86-64, i.e. 4-wide SSE2), else for the
/// baseline. Every variant computes the same IEEE operations in the same order (no FMA contraction,
/// reductions in a fixed order), so all give bit-identical results.
macro_rules! multiversion {
    ($(#[$meta:meta])* pub fn $name:ident / $baseline:ident ($($arg:ident: $ty:ty),* $(,)?) $body:block) => {
        /// The baseline build alone, for the test that holds every variant equal.
        #[cfg(test)]
        pub fn $baseline($($arg: $ty),*) $body

        $(#[$meta])*
        // The one `unsafe` is the call of a `#[target_feature]` function, sound because the
        // features were detected on this CPU just before.
        #[allow(unsafe_code)]
        pub fn $name($($arg: $ty),*) {
            #[inline(always)]
            fn generic($($arg: $ty),*) $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512dq,avx512vl,avx512bw,avx2,fma")]
                fn avx512($($arg: $ty),*) {
                    generic($($arg),*)
                }
                #[target_feature(enable = "avx2,fma")]
                fn avx2($($arg: $ty),*) {
                    generic($($arg),*)
                }
                if std::arch::is_x86_feature_detected!("avx512f")
                    && std::arch::is_x86_feature_detected!("avx512dq")
                    && std::arch::is_x86_feature_detected!("avx512vl")
                    && std::arch::is_x86_feature_detected!("avx512bw")
                {
                    // SAFETY: the CPU has every feature `avx512` is compiled for.
                    return unsafe { avx512($($arg),*) };
                }
                if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
                    // SAFETY: the CPU has every feature `avx2` is compiled for.
                    return unsafe { avx2($($arg),*) };
                }
            }
            generic($($arg),*)
        }
    };
}

/// e^x for x ≤ 88 (the fused ops only take x ≤ 0), within 2 ulp: Cephes `expf` (range reduction
/// x = n·ln2 + r, a degree-7 polynomial for e^r, 2^n built in the exponent bits), branch-free.
/// Below −87.3 the result is 0 (true e^x < 1.2e-38 there), so a masked attention key still gets a
/// weight of exactly 0.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    let xc = x.clamp(-87.3, 88.0);
    // Round xc·log2(e) to the nearest integer n with the 1.5·2^23 trick: n ends up in the low
    // mantissa bits of `v`, which then become the exponent of 2^n.
    let v = xc * LOG2_E + 12_582_912.0;
    let n = v - 12_582_912.0;
    let r = xc - n * 0.693_359_4 - n * -2.121_944_4e-4; // ln2 split in two for an exact n·ln2
    let mut p = 1.987_569_1e-4f32;
    p = p * r + 1.398_2e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 0.166_666_65;
    p = p * r + 0.5;
    let e_r = p * r * r + r + 1.0;
    let pow2n = f32::from_bits(v.to_bits().wrapping_sub(0x4B40_0000).wrapping_add(127) << 23);
    if x < -87.3 { 0.0 } else { e_r * pow2n }
}

/// erf(x) within 1.3e-7 absolute over all of f32 (the test checks [−10, 10] against f64 libm),
/// branch-free: fdlibm's rational approximation for |x| < 0.84375 (erf = x + x·P(x²)/Q(x²)) and
/// 1 − erfc(|x|) beyond, erfc from the Chebyshev fit erfc(z) ≈ t·exp(−z² + poly(t)), t = 1/(1+z/2),
/// relative error < 1.2e-7 (Numerical Recipes §6.2, `erfcc`). Both halves are computed and one is
/// selected, which vectorizes.
#[inline(always)]
#[allow(clippy::excessive_precision)] // the coefficients as published
pub fn erf(x: f32) -> f32 {
    let a = x.abs();
    let z = x * x;
    let p = 1.283_791_7e-1f32 + z * (-3.250_421e-1 + z * (-2.848_175e-2 + z * (-5.770_270_2e-3 + z * -2.376_301_7e-5)));
    let q = 1.0f32 + z * (3.979_172e-1 + z * (6.502_225e-2 + z * (5.081_306_2e-3 + z * (1.324_947_4e-4 + z * -3.960_228_2e-6))));
    let small = x + x * (p / q);
    let t = 1.0 / (1.0 + 0.5 * a);
    let poly = -1.265_512_2f32
        + t * (1.000_023_7
            + t * (0.374_091_96
                + t * (0.096_784_18 + t * (-0.186_288_06 + t * (0.278_868_07 + t * (-1.135_203_9 + t * (1.488_515_9 + t * (-0.822_152_2 + t * 0.170_872_77))))))));
    let erfc = t * exp(-a * a + poly);
    let large = (1.0 - erfc).copysign(x);
    if a < 0.84375 { small } else { large }
}

const INV_SQRT_2PI: f32 = 0.398_942_3;

multiversion! {
    /// GELU with the exact (erf) CDF, as HF's "gelu": x·Φ(x) = ½x(1 + erf(x/√2)), in place.
    pub fn gelu / gelu_baseline (x: &mut [f32]) {
        for x in x.iter_mut() {
            *x = 0.5 * *x * (1.0 + erf(*x * FRAC_1_SQRT_2));
        }
    }
}

multiversion! {
    /// d/dx of GELU times the incoming gradient, g ← g·(Φ(x) + x·φ(x)) in place.
    pub fn gelu_backward / gelu_backward_baseline (x: &[f32], grad: &mut [f32]) {
        for (g, &x) in grad.iter_mut().zip(x) {
            let cdf = 0.5 * (1.0 + erf(x * FRAC_1_SQRT_2));
            let pdf = INV_SQRT_2PI * exp(-0.5 * x * x);
            *g *= cdf + x * pdf;
        }
    }
}

/// Σ a_i·b_i in 16 interleaved partial sums (element i into sum i mod 16), added up in a fixed
/// order: vectorizes, and gives the same bits whatever the vector width.
#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 16];
    let (a16, b16) = (a.chunks_exact(16), b.chunks_exact(16));
    let (a_tail, b_tail) = (a16.remainder(), b16.remainder());
    for (a, b) in a16.zip(b16) {
        for k in 0..16 {
            acc[k] += a[k] * b[k];
        }
    }
    for (k, (a, b)) in a_tail.iter().zip(b_tail).enumerate() {
        acc[k] += a * b;
    }
    pairwise16(acc)
}

/// Σ x_i, in the same order as `dot`.
#[inline(always)]
fn sum(xs: &[f32]) -> f32 {
    let mut acc = [0.0f32; 16];
    let x16 = xs.chunks_exact(16);
    let tail = x16.remainder();
    for x in x16 {
        for k in 0..16 {
            acc[k] += x[k];
        }
    }
    for (k, x) in tail.iter().enumerate() {
        acc[k] += x;
    }
    pairwise16(acc)
}

/// Row maximum in 16 interleaved partial maxima (`f32::max` over one running value does not
/// vectorize).
#[inline(always)]
fn max(xs: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; 16];
    let x16 = xs.chunks_exact(16);
    let tail = x16.remainder();
    for x in x16 {
        for k in 0..16 {
            acc[k] = acc[k].max(x[k]);
        }
    }
    for (k, &x) in tail.iter().enumerate() {
        acc[k] = acc[k].max(x);
    }
    acc.into_iter().fold(f32::NEG_INFINITY, f32::max)
}

#[inline(always)]
fn pairwise16(acc: [f32; 16]) -> f32 {
    let mut a = acc;
    for width in [8, 4, 2, 1] {
        for k in 0..width {
            a[k] += a[k + width];
        }
    }
    a[0]
}

/// Attention probabilities of one [rows, n] block of scores whose rows all belong to one sequence:
/// p = softmax(s / divisor + bias) along each row, then out = p ⊙ dropout mask. `first_row` is the
/// block's first row in the whole [batch·heads·seq, n] tensor (the mask is indexed row-major over
/// it). The scores are replaced by p; `out` (when dropout is on) receives p ⊙ mask.
pub struct AttentionRows<'a> {
    pub bias: &'a [f32],
    pub divisor: f32,
    pub first_row: usize,
    pub dropout: Option<DropoutMask>,
}

multiversion! {
    pub fn attention_probs / attention_probs_baseline (rows: &AttentionRows<'_>, scores: &mut [f32], out: Option<&mut [f32]>) {
        let mut out = out;
        let n = rows.bias.len();
        for (r, p) in scores.chunks_exact_mut(n).enumerate() {
            for (p, &b) in p.iter_mut().zip(rows.bias) {
                *p = *p / rows.divisor + b;
            }
            let max = max(p);
            for p in p.iter_mut() {
                *p = exp(*p - max);
            }
            let inv = 1.0 / sum(p);
            for p in p.iter_mut() {
                *p *= inv;
            }
            if let (Some(mask), Some(out)) = (rows.dropout, out.as_deref_mut()) {
                let base = ((rows.first_row + r) * n) as u64;
                for (j, (o, &p)) in out[r * n..(r + 1) * n].iter_mut().zip(p.iter()).enumerate() {
                    *o = p * mask.factor(base + j as u64);
                }
            }
        }
    }
}

multiversion! {
    /// Gradient of the scores from the gradient of `attention_probs`' output, in place:
    /// grad ← P ⊙ (dP − rowsum(dP ⊙ P)) / divisor, dP = grad ⊙ mask.
    pub fn attention_probs_backward / attention_probs_backward_baseline (probs: &[f32], grad: &mut [f32], n: usize, divisor: f32, dropout: Option<DropoutMask>) {
        for (r, (p, o)) in probs.chunks_exact(n).zip(grad.chunks_exact_mut(n)).enumerate() {
            if let Some(mask) = dropout {
                let base = (r * n) as u64;
                for (j, o) in o.iter_mut().enumerate() {
                    *o *= mask.factor(base + j as u64);
                }
            }
            let dot = dot(o, p);
            for (o, &p) in o.iter_mut().zip(p) {
                *o = p * (*o - dot) / divisor;
            }
        }
    }
}

multiversion! {
    /// x ← dropout(x) + residual, the sum a post-LN transformer block normalizes; element i
    /// (row-major over x) uses the mask's factor i.
    pub fn add_dropped / add_dropped_baseline (x: &mut [f32], residual: &[f32], dropout: Option<DropoutMask>) {
        match dropout {
            Some(mask) => {
                for (i, (x, &r)) in x.iter_mut().zip(residual).enumerate() {
                    *x = *x * mask.factor(i as u64) + r;
                }
            }
            None => {
                for (x, &r) in x.iter_mut().zip(residual) {
                    *x += r;
                }
            }
        }
    }
}

multiversion! {
    /// g ← g ⊙ mask, the gradient through a dropout.
    pub fn mask_gradient / mask_gradient_baseline (g: &mut [f32], mask: DropoutMask) {
        for (i, g) in g.iter_mut().enumerate() {
            *g *= mask.factor(i as u64);
        }
    }
}

multiversion! {
    /// LayerNorm over rows of length `gamma.len()`: y = x̂·γ + β, x̂ = (x − mean)/√(var + ε) with the
    /// biased variance. Also returns x̂ and 1/√(var + ε) per row for the backward pass.
    pub fn layer_norm / layer_norm_baseline (x: &[f32], gamma: &[f32], beta: &[f32], epsilon: f32, y: &mut [f32], xhat: &mut [f32], rstd: &mut [f32]) {
        let d = gamma.len();
        let rows = x.chunks_exact(d).zip(y.chunks_exact_mut(d)).zip(xhat.chunks_exact_mut(d));
        for (((x, y), xh), rs) in rows.zip(rstd.iter_mut()) {
            let mean = sum(x) / d as f32;
            for (xh, &x) in xh.iter_mut().zip(x) {
                *xh = x - mean;
            }
            let var = dot(xh, xh) / d as f32;
            let std = (var + epsilon).sqrt();
            *rs = 1.0 / std;
            for (((y, xh), &g), &b) in y.iter_mut().zip(xh.iter_mut()).zip(gamma).zip(beta) {
                *xh /= std;
                *y = *xh * g + b;
            }
        }
    }
}

multiversion! {
    /// LayerNorm backward, in place: g ← dx = rstd·(gγ − mean(gγ) − x̂·mean(gγ·x̂)) per row;
    /// dγ = Σ_rows g·x̂ and dβ = Σ_rows g, accumulated into `dgamma`/`dbeta` row by row.
    pub fn layer_norm_backward / layer_norm_backward_baseline (grad: &mut [f32], xhat: &[f32], rstd: &[f32], gamma: &[f32], dgamma: &mut [f32], dbeta: &mut [f32]) {
        let d = gamma.len();
        for ((dx, xh), &rs) in grad.chunks_exact_mut(d).zip(xhat.chunks_exact(d)).zip(rstd) {
            for (((dx, &xh), &gm), (dg, db)) in dx.iter_mut().zip(xh).zip(gamma).zip(dgamma.iter_mut().zip(dbeta.iter_mut())) {
                *db += *dx;
                *dg += *dx * xh;
                *dx *= gm;
            }
            let mean_g = sum(dx) / d as f32;
            let mean_gx = dot(dx, xh) / d as f32;
            for (dx, &xh) in dx.iter_mut().zip(xh) {
                *dx = rs * (*dx - mean_g - xh * mean_gx);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::flex::ops::unary::erf_f64;

    /// Every f32 step of 1e-6 over [−10, 10] (2·10^7 points) against libm's f64 erf.
    #[test]
    fn erf_is_within_2e_7_of_f64_erf_over_minus_10_to_10() {
        let n = 20_000_000;
        let (worst, at) = (0..=n)
            .map(|i| (-10.0 + 20.0 * i as f64 / n as f64) as f32)
            .map(|x| ((erf(x) as f64 - erf_f64(x as f64)).abs(), x))
            .fold((0.0, 0.0), |a, b| if b.0 > a.0 { b } else { a });
        assert!(worst <= 2e-7, "erf off by {worst:e} at {at}");
        assert_eq!(erf(0.0), 0.0);
        assert_eq!(erf(f32::INFINITY), 1.0);
        assert_eq!(erf(-20.0), -1.0);
    }

    fn noise(n: usize, seed: u64, scale: f32) -> Vec<f32> {
        (0..n as u64).map(|i| scale * ((rmtrain_core::splitmix64(seed ^ rmtrain_core::splitmix64(i)) >> 40) as f32 / (1u64 << 23) as f32 - 1.0)).collect()
    }

    /// The SIMD builds this CPU runs must give the baseline build's bits (what keeps runs
    /// reproducible across machines). Row lengths 37 and 128 cover the partial-lane tails.
    #[test]
    fn every_simd_variant_gives_the_baseline_bits() {
        println!("avx512: {}, avx2: {}", std::arch::is_x86_feature_detected!("avx512f"), std::arch::is_x86_feature_detected!("avx2"));
        let x = noise(6 * 128 * 37, 1, 8.0);
        let g = noise(x.len(), 2, 1.0);
        let (mut a, mut b) = (x.clone(), x.clone());
        gelu(&mut a);
        gelu_baseline(&mut b);
        assert_eq!(a, b, "gelu");
        let (mut a, mut b) = (g.clone(), g.clone());
        gelu_backward(&x, &mut a);
        gelu_backward_baseline(&x, &mut b);
        assert_eq!(a, b, "gelu backward");
        for n in [37, 128] {
            let bias: Vec<f32> = (0..n).map(|j| if j % 5 == 4 { f32::MIN } else { 0.0 }).collect();
            let mask = crate::dropout::DropoutRng::new(3).next_mask(0.1);
            let rows = AttentionRows { bias: &bias, divisor: 5.656_854, first_row: 7, dropout: mask };
            let m = 6 * 37 * 128 / n * n;
            let (mut pa, mut pb) = (x[..m].to_vec(), x[..m].to_vec());
            let (mut oa, mut ob) = (vec![0.0; m], vec![0.0; m]);
            attention_probs(&rows, &mut pa, Some(&mut oa));
            attention_probs_baseline(&rows, &mut pb, Some(&mut ob));
            assert_eq!((&pa, &oa), (&pb, &ob), "attention probs, rows of {n}");
            let (mut ga, mut gb) = (g[..m].to_vec(), g[..m].to_vec());
            attention_probs_backward(&pa, &mut ga, n, 5.656_854, mask);
            attention_probs_backward_baseline(&pa, &mut gb, n, 5.656_854, mask);
            assert_eq!(ga, gb, "attention probs backward, rows of {n}");
            let (gamma, beta) = (noise(n, 4, 1.0), noise(n, 5, 1.0));
            let (mut ya, mut yb, mut xa, mut xb) = (vec![0.0; m], vec![0.0; m], vec![0.0; m], vec![0.0; m]);
            let (mut ra, mut rb) = (vec![0.0; m / n], vec![0.0; m / n]);
            layer_norm(&x[..m], &gamma, &beta, 1e-12, &mut ya, &mut xa, &mut ra);
            layer_norm_baseline(&x[..m], &gamma, &beta, 1e-12, &mut yb, &mut xb, &mut rb);
            assert_eq!((&ya, &xa, &ra), (&yb, &xb, &rb), "layer norm, rows of {n}");
            let (mut ga, mut gb) = (g[..m].to_vec(), g[..m].to_vec());
            let (mut dga, mut dgb, mut dba, mut dbb) = (vec![0.0; n], vec![0.0; n], vec![0.0; n], vec![0.0; n]);
            layer_norm_backward(&mut ga, &xa, &ra, &gamma, &mut dga, &mut dba);
            layer_norm_backward_baseline(&mut gb, &xa, &ra, &gamma, &mut dgb, &mut dbb);
            assert_eq!((&ga, &dga, &dba), (&gb, &dgb, &dbb), "layer norm backward, rows of {n}");
        }
        let (mut a, mut b) = (x.clone(), x.clone());
        let mask = crate::dropout::DropoutRng::new(4).next_mask(0.1);
        add_dropped(&mut a, &g, mask);
        add_dropped_baseline(&mut b, &g, mask);
        assert_eq!(a, b, "dropout + residual");
        mask_gradient(&mut a, mask.expect("p > 0"));
        mask_gradient_baseline(&mut b, mask.expect("p > 0"));
        assert_eq!(a, b, "dropout gradient");
    }

    #[test]
    fn exp_is_within_3_ulp_and_underflows_to_exactly_0() {
        let mut worst = 0.0f64;
        for i in 0..=2_000_000 {
            let x = -87.0 + 87.0 * i as f64 / 2e6;
            let x = x as f32;
            let want = (x as f64).exp();
            worst = worst.max((exp(x) as f64 - want).abs() / want);
        }
        assert!(worst < 3.0 * f32::EPSILON as f64, "relative error {worst:e}");
        assert_eq!(exp(0.0), 1.0);
        assert_eq!(exp(-100.0), 0.0);
        assert_eq!(exp(f32::MIN), 0.0);
    }
}
