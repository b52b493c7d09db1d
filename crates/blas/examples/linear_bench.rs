//! Times `rmtrain_blas::linear` against Burn's `Linear::forward` on MiniLM-L6 shapes (x [2048, 384]
//! through 384→384, 384→1536, 1536→384), forward + backward on `Device::flex().autodiff()`, with 1
//! or 2 model replicas (threads, each its own layer and input) and 1 or 2 OpenBLAS threads per call.
//! The modes run interleaved, round after round, so the machine's noise hits them alike; compare the
//! ratios within a round.
//!
//! `cargo run --release -p rmtrain-blas --example linear_bench -- [ITERS] [ROUNDS]`
//! (RMTRAIN_OPENBLAS=path/to/libscipy_openblas.so if it is not under ./assets/openblas)

use burn::module::Param;
use burn::nn::Linear;
use burn::tensor::{Device, Tensor, TensorData};
use rmtrain_blas::openblas::Matrix;
use std::sync::Barrier;
use std::time::Instant;

const ROWS: usize = 2048;
const SHAPES: [(usize, usize); 3] = [(384, 384), (384, 1536), (1536, 384)];

#[derive(Clone, Copy)]
struct Mode {
    blas: bool,
    /// The three sgemm calls alone on preallocated buffers (the ceiling for `blas`).
    raw: bool,
    replicas: usize,
    blas_threads: usize,
}

impl Mode {
    fn name(&self) -> String {
        match (self.raw, self.blas) {
            (true, _) => format!("sgemm x{} t{}", self.replicas, self.blas_threads),
            (false, true) => format!("blas x{} t{}", self.replicas, self.blas_threads),
            (false, false) => format!("burn x{}", self.replicas),
        }
    }
}

fn filled<const D: usize>(shape: [usize; D], seed: f32, device: &Device) -> Tensor<D> {
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n).map(|i| ((i as f32 * 0.618 + seed).fract() - 0.5) * 0.1).collect();
    Tensor::from_data(TensorData::new(v, shape), device)
}

/// Seconds for `iters` forward + backward steps on each of `mode.replicas` threads at once.
fn time(mode: Mode, d_in: usize, d_out: usize, iters: usize) -> f64 {
    rmtrain_blas::set_threads(mode.blas_threads);
    let barrier = Barrier::new(mode.replicas + 1);
    std::thread::scope(|s| {
        for r in 0..mode.replicas {
            let barrier = &barrier;
            s.spawn(move || {
                let device = Device::flex().autodiff();
                let layer = Linear { weight: Param::from_tensor(filled([d_in, d_out], r as f32 * 0.1, &device)), bias: Some(Param::from_tensor(filled([d_out], 0.3, &device))) };
                let x = filled([ROWS, d_in], 0.7, &device);
                let raw = rmtrain_blas::openblas::get().filter(|_| mode.raw).map(|lib| {
                    let (xs, ws) = (vec![0.01f32; ROWS * d_in], vec![0.02f32; d_in * d_out]);
                    let (mut y, mut dx, mut dw) = (vec![0.0f32; ROWS * d_out], vec![0.0f32; ROWS * d_in], vec![0.0f32; d_in * d_out]);
                    move || {
                        let (xm, wm) = (Matrix::dense(&xs, ROWS, d_in), Matrix::dense(&ws, d_in, d_out));
                        lib.sgemm(xm, wm, 0.0, &mut y);
                        let ym = Matrix::dense(&y, ROWS, d_out);
                        lib.sgemm(ym, wm.t(), 0.0, &mut dx);
                        lib.sgemm(xm.t(), ym, 0.0, &mut dw);
                    }
                });
                if let Some(mut raw) = raw {
                    raw();
                    barrier.wait();
                    (0..iters).for_each(|_| raw());
                    return;
                }
                let step = || {
                    let x = x.clone().require_grad();
                    let y = if mode.blas { rmtrain_blas::linear(&layer, x.clone()) } else { layer.forward(x.clone()) };
                    let grads = y.sum().backward();
                    let dx = x.grad(&grads).expect("dx");
                    let dw = layer.weight.val().grad(&grads).expect("dW");
                    std::hint::black_box((dx, dw));
                };
                step(); // warm-up: allocations, OpenBLAS buffers
                barrier.wait();
                (0..iters).for_each(|_| step());
            });
        }
        barrier.wait();
        let start = Instant::now();
        // the scope joins every replica before returning
        start
    })
    .elapsed()
    .as_secs_f64()
}

/// Attention's Q·Kᵀ then P·V for one replica's share of 8 pairs × 128 tokens (batch 8, 12 heads,
/// head dim 32), forward + backward, `matmul4` vs Burn's matmul, 1 replica, 1 OpenBLAS thread.
fn attention(iters: usize, rounds: usize) {
    let (b, h, s, d) = (8, 12, 128, 32);
    let device = Device::flex().autodiff();
    let (q, k, v) = (filled([b, h, s, d], 0.1, &device), filled([b, h, s, d], 0.2, &device), filled([b, h, s, d], 0.3, &device));
    rmtrain_blas::set_threads(1);
    let step = |blas: bool| {
        let (q, k, v) = (q.clone().require_grad(), k.clone().require_grad(), v.clone().require_grad());
        let mm = |a: Tensor<4>, b: Tensor<4>| if blas { rmtrain_blas::matmul4(a, b) } else { a.matmul(b) };
        let out = mm(mm(q.clone(), k.clone().swap_dims(2, 3)), v.clone());
        let grads = out.sum().backward();
        std::hint::black_box((q.grad(&grads), k.grad(&grads), v.grad(&grads)));
    };
    // 2 products, each 2·b·h·s·s·d, forward and 2 backward
    let flop = 6.0 * 2.0 * (b * h * s * s * d) as f64;
    println!("\nattention Q·Kᵀ and P·V [{b}, {h}, {s}, {d}], forward + backward, 1 replica, GFLOP/s");
    for round in 0..rounds {
        let rate = |blas: bool| {
            step(blas);
            let start = Instant::now();
            (0..iters).for_each(|_| step(blas));
            flop * iters as f64 / start.elapsed().as_secs_f64() / 1e9
        };
        let (burn, blas) = (rate(false), rate(true));
        println!("  round {round}: burn {burn:6.1} | matmul4 t1 {blas:6.1}  ({:.2}x)", blas / burn);
    }
}

fn main() {
    let mut args = std::env::args().skip(1).map(|a| a.parse::<usize>().expect("ITERS and ROUNDS are counts"));
    let iters = args.next().unwrap_or(8);
    let rounds = args.next().unwrap_or(3);
    println!("linear backend: {}", rmtrain_blas::backend());
    let loadavg = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("load average at start: {}", loadavg.trim());
    let mut modes = vec![Mode { blas: false, raw: false, replicas: 1, blas_threads: 1 }, Mode { blas: false, raw: false, replicas: 2, blas_threads: 1 }];
    if rmtrain_blas::fallback_reason().is_none() {
        for (replicas, blas_threads) in [(1, 1), (1, 2), (2, 1), (2, 2)] {
            modes.push(Mode { blas: true, raw: false, replicas, blas_threads });
        }
        modes.push(Mode { blas: true, raw: true, replicas: 1, blas_threads: 2 });
        modes.push(Mode { blas: true, raw: true, replicas: 2, blas_threads: 1 });
    }
    for (d_in, d_out) in SHAPES {
        let flop = 6.0 * (ROWS * d_in * d_out) as f64; // forward, dX, dW: 2·M·K·N each
        println!("\nx [{ROWS}, {d_in}] · W [{d_in}, {d_out}], forward + backward, GFLOP/s (all replicas), {iters} steps per replica");
        let mut all: Vec<Vec<f64>> = vec![Vec::new(); modes.len()];
        for round in 0..rounds {
            let line: Vec<String> = modes
                .iter()
                .zip(&mut all)
                .map(|(mode, got)| {
                    let gflops = flop * (iters * mode.replicas) as f64 / time(*mode, d_in, d_out, iters) / 1e9;
                    got.push(gflops);
                    format!("{} {gflops:6.1}", mode.name())
                })
                .collect();
            println!("  round {round}: {}", line.join(" | "));
        }
        let median = |v: &[f64]| {
            let mut v = v.to_vec();
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        let base = median(&all[0]);
        for (mode, got) in modes.iter().zip(&all) {
            println!("  median {:>12}: {:6.1} GFLOP/s  ({:.2}x burn x1)", mode.name(), median(got), median(got) / base);
        }
    }
    if rmtrain_blas::fallback_reason().is_none() {
        attention(iters, rounds);
    }
    rmtrain_blas::set_threads(rmtrain_blas::DEFAULT_THREADS);
    println!("\nload average at end: {}", std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim());
}
