//! Test helpers shared by the parity tests: deterministic inputs, the BLAS-or-skip check and
//! elementwise comparison.

use burn::tensor::{Device, Tensor, TensorData};

/// Deterministic values uniform in [−scale, scale).
pub fn values<const D: usize>(shape: [usize; D], seed: u64, scale: f32, device: &Device) -> Tensor<D> {
    let n: usize = shape.iter().product();
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let v: Vec<f32> = (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            scale * ((s >> 40) as f32 / (1u64 << 23) as f32 - 1.0)
        })
        .collect();
    Tensor::from_data(TensorData::new(v, shape), device)
}

/// Whether OpenBLAS is loaded. When it is not, says why on stderr (`skipped: ...`), and fails
/// instead under RMTRAIN_REQUIRE_BLAS=1 (CI fetches the library first).
pub fn blas_loaded(test: &str) -> bool {
    match crate::fallback_reason() {
        None => true,
        Some(why) => {
            assert!(std::env::var("RMTRAIN_REQUIRE_BLAS").as_deref() != Ok("1"), "{test}: RMTRAIN_REQUIRE_BLAS=1 but OpenBLAS is not loaded: {why}");
            // Straight to stderr: libtest captures `eprintln!` of passing tests, and a skip must show.
            let line = format!("skipped: {test} compares OpenBLAS with flex, but {why}; checked the fallback is bitwise Burn's own op instead\n");
            let _ = std::io::Write::write_all(&mut std::io::stderr(), line.as_bytes());
            false
        }
    }
}

pub fn floats<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().try_to_vec::<f32>().expect("f32")
}

/// |a − b| ≤ tol·max(1, |b|) elementwise (bitwise equal when `tol` is None); returns max |a − b|.
pub fn assert_close<const D: usize>(what: &str, a: Tensor<D>, b: Tensor<D>, tol: Option<f32>) -> f32 {
    assert_eq!(a.dims(), b.dims(), "{what}: shapes");
    let (a, b) = (floats(a), floats(b));
    let mut worst = 0.0f32;
    for (i, (x, y)) in a.iter().zip(&b).enumerate() {
        match tol {
            Some(tol) => assert!((x - y).abs() <= tol * y.abs().max(1.0), "{what}[{i}]: blas {x} vs burn {y}"),
            None => assert_eq!(x.to_bits(), y.to_bits(), "{what}[{i}]: fallback {x} vs burn {y}"),
        }
        worst = worst.max((x - y).abs());
    }
    eprintln!("{what}: max |blas − burn| = {worst:e}");
    worst
}

