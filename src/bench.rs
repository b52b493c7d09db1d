//! `rmtrain bench train|score`: throughput on synthetic ids with a full mask, the protocol of
//! ../shared/bench/rm_step_bench.py: warm-up steps, then the median of timed steps. A train step
//! is forward of chosen+rejected together, Bradley–Terry loss, backward, global clip 1.0 and an
//! AdamW step, with the batch shared by `--replicas` threads as training does; a score step is
//! the forward of the same 2·B sequences. The train breakdown (forward, backward, clip, step) is
//! of the whole step: forward = slowest replica's forward, backward = until all gradients are in.

use crate::device::parse_device;
use crate::verbs::at_least;
use anyhow::{bail, Result};
use burn::module::Module;
use burn::optim::{AdamWConfig, GradientsParams};
use burn::tensor::{Bool, Int, Tensor, TensorData};
use clap::{Args, ValueEnum};
use rand::{Rng, SeedableRng};
use rmtrain_models::{RewardModel, RewardNet};
use std::time::Instant;

#[derive(Clone, Copy, ValueEnum)]
pub enum BenchKind {
    Train,
    Score,
}

#[derive(Args)]
#[command(after_help = "Examples:
  rmtrain bench train --model assets/all-MiniLM-L6-v2 --batch 8 --seq 128
  rmtrain bench score --model assets/all-MiniLM-L6-v2 --batch 8 --seq 128 --steps 20")]
pub struct BenchArgs {
    pub kind: BenchKind,
    #[arg(long)]
    pub model: std::path::PathBuf,
    /// Pairs per step (2·batch sequences).
    #[arg(long, default_value_t = 8, value_parser = at_least::<1>)]
    pub batch: usize,
    /// Tokens per sequence: 2 up to the model's max_position_embeddings.
    #[arg(long, default_value_t = 128, value_parser = at_least::<2>)]
    pub seq: usize,
    /// Untimed steps first (0 = none).
    #[arg(long, default_value_t = 3)]
    pub warmup: usize,
    /// Timed steps; the median is reported.
    #[arg(long, default_value_t = 10, value_parser = at_least::<1>)]
    pub steps: usize,
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Replicas (threads) sharing each step, as `train.replicas` / scoring threads do; at most
    /// --batch are used.
    #[arg(long, default_value_t = 2, value_parser = at_least::<1>)]
    pub replicas: usize,
}

pub fn run(a: BenchArgs) -> Result<()> {
    let base = parse_device(&a.device)?;
    let device = match a.kind {
        BenchKind::Train => base.clone().autodiff(),
        BenchKind::Score => base.clone(),
    };
    let rm = RewardModel::load(&a.model, a.seq, &device)?;
    // load clamps the tokenizer's truncation to the position table, but the synthetic ids below
    // are not truncated: a longer --seq would index past the table inside Burn and panic.
    let positions = rm.config.max_position_embeddings();
    if a.seq > positions {
        let model = a.model.display();
        bail!("--seq {}: {model} has max_position_embeddings = {positions}; use --seq {positions} or less", a.seq);
    }
    let vocab = rm.config.vocab_size() as i64;
    let n = 2 * a.batch;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    let ids: Vec<i64> = (0..n * a.seq).map(|_| rng.random_range(1000.min(vocab - 1)..vocab)).collect();
    let ids = Tensor::<2, Int>::from_data(TensorData::new(ids, [n, a.seq]), &device);
    let mask = Tensor::<2, Bool>::from_data(TensorData::new(vec![true; n * a.seq], [n, a.seq]), &device);
    let mut times = Vec::new();
    // Train only: seconds in forward, backward, global-norm clip and optimizer step.
    let mut parts: Vec<[f64; 4]> = Vec::new();
    // Pairs of each replica: a contiguous share of the batch (chosen rows i, rejected rows B + i).
    let replicas = a.replicas.clamp(1, a.batch);
    let shares: Vec<(usize, usize)> = (0..replicas).map(|k| (k * a.batch / replicas, (k + 1) * a.batch / replicas)).collect();
    let rows = |t: &Tensor<2, Int>, m: &Tensor<2, Bool>, (lo, hi): (usize, usize)| {
        let pick = |x: Vec<i64>| Tensor::<1, Int>::from_data(TensorData::new(x.clone(), [x.len()]), &device);
        let idx = pick((lo..hi).chain(a.batch + lo..a.batch + hi).map(|i| i as i64).collect());
        (t.clone().select(0, idx.clone()), m.clone().select(0, idx))
    };
    match a.kind {
        BenchKind::Score => {
            let net = rm.net.valid();
            for i in 0..a.warmup + a.steps {
                let t = Instant::now();
                rmtrain_train::trainer::run_replicas(&net, replicas, |k, model| {
                    let (ids, mask) = rows(&ids, &mask, shares[k]);
                    model.forward(ids, mask).into_data() // forces the computation
                });
                if i >= a.warmup {
                    times.push(t.elapsed().as_secs_f64());
                }
            }
        }
        BenchKind::Train => {
            let mut net = rm.net;
            let mut optim = AdamWConfig::new().with_weight_decay(0.01).with_epsilon(1e-8).init();
            for i in 0..a.warmup + a.steps {
                let t = Instant::now();
                let results = rmtrain_train::trainer::run_replicas(&net, replicas, |k, model| {
                    let (lo, hi) = shares[k];
                    let (ids, mask) = rows(&ids, &mask, (lo, hi));
                    let rewards = model.forward_with(ids, mask, Some(&mut rmtrain_models::DropoutRng::new(i as u64)));
                    let n = hi - lo;
                    let loss = rmtrain_train::losses::bradley_terry(rewards.clone().narrow(0, 0, n), rewards.narrow(0, n, n), None)
                        .mul_scalar(n as f64 / a.batch as f64);
                    let forward_s = { let _ = loss.clone().into_scalar::<f32>(); t.elapsed().as_secs_f64() };
                    (GradientsParams::from_grads(loss.backward(), &model), forward_s)
                });
                let t_forward = results.iter().map(|r| r.1).fold(0.0, f64::max);
                let mut acc = burn::optim::GradientsAccumulator::new();
                for (g, _) in results {
                    acc.accumulate(&net, g);
                }
                let mut grads = acc.grads();
                let t_backward = t.elapsed().as_secs_f64();
                rmtrain_train::trainer::clip_global_norm(&net, &mut grads, Some(1.0));
                let t_clip = t.elapsed().as_secs_f64();
                net = optim.step(1e-5, net, grads);
                let _ = net.hf_params().pop().map(|(_, p)| p.to_hf()); // forces the step
                if i >= a.warmup {
                    times.push(t.elapsed().as_secs_f64());
                    parts.push([t_forward, t_backward - t_forward, t_clip - t_backward, t.elapsed().as_secs_f64() - t_clip]);
                }
            }
        }
    }
    let breakdown: Vec<f64> = (0..4)
        .map(|k| {
            let mut v: Vec<f64> = parts.iter().map(|p| p[k]).collect();
            v.sort_by(|x, y| x.total_cmp(y));
            v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
        })
        .collect();
    times.sort_by(|x, y| x.total_cmp(y));
    let median = times[times.len() / 2];
    let pairs_per_s = a.batch as f64 / median;
    let kind = match a.kind {
        BenchKind::Train => "train",
        BenchKind::Score => "score",
    };
    println!(
        "{}",
        serde_json::json!({
            "bench": kind, "model": a.model, "device": a.device, "batch_pairs": a.batch, "seq": a.seq,
            "warmup": a.warmup, "steps": a.steps, "replicas": replicas, "median_step_s": median,
            "pairs_per_s": pairs_per_s, "tokens_per_s": pairs_per_s * 2.0 * a.seq as f64,
            "median_forward_backward_clip_step_s": if parts.is_empty() { serde_json::Value::Null } else { serde_json::json!(breakdown) },
            "threads": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        })
    );
    Ok(())
}
