//! Linear layers and attention's batched products on the flex (CPU) backend on OpenBLAS's sgemm,
//! when the library is there.
//!
//! Flex's own gemm runs a MiniLM-sized Linear at about 85 GFLOP/s on 2 threads; OpenBLAS 0.3.34's
//! SkylakeX sgemm reaches about 98 on one thread and 172 on two. [`linear`] is `layer.forward(x)`
//! with the product (and, under autodiff, the backward's two products) in OpenBLAS. The library is
//! opened at run time (see [`openblas`] for where it is looked for), so it is never a build or
//! run-time requirement: without it, and on every other device or dtype, [`linear`] *is*
//! `layer.forward(x)`. [`matmul4`] does the same for `a.matmul(b)` on [B, H, M, K] · [B, H, K, N]
//! (attention's Q·Kᵀ and P·V), where flex is slowest (one sgemm per head: 2–3× flex, measured).

mod linear;
mod matmul;
pub mod openblas;
#[cfg(test)]
mod testing;

pub use linear::linear;
pub use matmul::matmul4;

/// True when `t` is f32 on a flex device, with or without autodiff: where rmtrain's CPU kernels
/// (these products, the fused BERT ops, the fused AdamW) take over from Burn's own ops.
pub fn is_f32_on_flex<const D: usize>(t: &burn::tensor::Tensor<D>) -> bool {
    t.dtype() == burn::tensor::DType::F32 && matches!(t.device().inner().as_dispatch(), burn::backend::DispatchDevice::Flex(_))
}

/// OpenBLAS threads per sgemm call when the library is loaded. rmtrain trains and scores with one
/// model replica per core (2 by default), each calling sgemm from its own thread; with one OpenBLAS
/// thread per call every call runs in its caller's thread, and OpenBLAS's pool is never woken.
/// (A woken pool worker spins for about 80 ms after each call before it sleeps, measured with
/// this library: CPU taken from the replicas and flex's own threads between calls.)
pub const DEFAULT_THREADS: usize = 1;

/// What runs the Linear products: OpenBLAS's `get_config()` line (e.g. "OpenBLAS 0.3.34
/// DYNAMIC_ARCH NO_AFFINITY SkylakeX MAX_THREADS=64") or "flex". Opens the library on first call.
pub fn backend() -> &'static str {
    match openblas::get() {
        Some(lib) => &lib.config,
        None => "flex",
    }
}

/// Why the Linear products run on flex (no library, `RMTRAIN_OPENBLAS=off`, a library that did
/// not open), or `None` when OpenBLAS is loaded.
pub fn fallback_reason() -> Option<&'static str> {
    match openblas::loaded() {
        openblas::Loaded::Blas(_) => None,
        openblas::Loaded::Flex(why) => Some(why),
    }
}

/// Threads OpenBLAS uses per sgemm call, for the whole process ([`DEFAULT_THREADS`] until set).
/// Use `n` = cores / concurrent callers: 2 when a single replica runs on 2 cores (a 2048×384×1536
/// forward + backward then runs 1.7–2× one thread on a quiet machine). Above 1, OpenBLAS's workers
/// spin ~80 ms after every call; `OPENBLAS_THREAD_TIMEOUT=4` in the environment at start-up (read
/// when the library loads) makes them sleep at once. No-op without the library.
pub fn set_threads(n: usize) {
    if let Some(lib) = openblas::get() {
        lib.set_threads(n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    /// Run by `a_bogus_openblas_path_falls_back_to_flex` in a child process (the library is
    /// loaded once per process, so the parent cannot change its mind).
    #[test]
    #[ignore = "a child process of a_bogus_openblas_path_falls_back_to_flex"]
    fn child_report_backend() {
        use burn::nn::LinearConfig;
        use burn::tensor::{Device, Tensor};
        let device = Device::flex().autodiff();
        let layer = LinearConfig::new(8, 4).init(&device);
        let x = Tensor::<2>::ones([3, 8], &device);
        let (got, want) = (linear(&layer, x.clone()), layer.forward(x));
        let bitwise = got.into_data().as_bytes() == want.into_data().as_bytes();
        // twice: the warning must still be printed once
        println!("backend={} backend={} bitwise={bitwise} reason={:?}", backend(), backend(), fallback_reason());
    }

    #[test]
    fn a_bogus_openblas_path_falls_back_to_flex() {
        let exe = std::env::current_exe().expect("the test binary's path");
        for (path, warns) in [("/nonexistent/libscipy_openblas.so", true), (concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml"), true), ("off", false)] {
            let out = Command::new(&exe)
                .args(["--ignored", "--exact", "tests::child_report_backend", "--nocapture", "--test-threads=1"])
                .env(openblas::ENV_PATH, path)
                .env_remove("RMTRAIN_REQUIRE_BLAS")
                .output()
                .expect("run the test binary");
            let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
            assert!(out.status.success(), "{path}: child failed\n{stdout}\n{stderr}");
            assert!(stdout.contains("backend=flex backend=flex bitwise=true"), "{path}: {stdout}");
            let warnings = stderr.lines().filter(|l| l.starts_with("warning:")).count();
            assert_eq!(warnings, usize::from(warns), "{path}: warning lines in\n{stderr}");
            eprintln!("{path}: {}", stderr.lines().find(|l| l.starts_with("warning:")).unwrap_or("(silent)"));
        }
    }
}
