//! `rmtrain bench train|score`: throughput on synthetic ids with a full mask, the protocol of
//! ../shared/bench/rm_step_bench.py: warm-up steps, then the median of timed steps. A train step
//! is forward of chosen+rejected together, Bradley–Terry loss, backward, global clip 1.0 and an
//! AdamW step; a score step is the forward of the same 2·B sequences.

use crate::device::parse_device;
use anyhow::Result;
use burn::module::Module;
use burn::optim::{AdamWConfig, GradientsParams};
use burn::tensor::{Bool, Int, Tensor, TensorData};
use clap::{Args, ValueEnum};
use rand::{Rng, SeedableRng};
use rmtrain_models::RewardModel;
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
    #[arg(long, default_value_t = 8)]
    pub batch: usize,
    /// Tokens per sequence.
    #[arg(long, default_value_t = 128)]
    pub seq: usize,
    #[arg(long, default_value_t = 3)]
    pub warmup: usize,
    #[arg(long, default_value_t = 10)]
    pub steps: usize,
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

pub fn run(a: BenchArgs) -> Result<()> {
    let base = parse_device(&a.device)?;
    let device = match a.kind {
        BenchKind::Train => base.clone().autodiff(),
        BenchKind::Score => base.clone(),
    };
    let rm = RewardModel::load(&a.model, a.seq, &device)?;
    let vocab = rm.config.vocab_size as i64;
    let n = 2 * a.batch;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    let ids: Vec<i64> = (0..n * a.seq).map(|_| rng.random_range(1000.min(vocab - 1)..vocab)).collect();
    let ids = Tensor::<2, Int>::from_data(TensorData::new(ids, [n, a.seq]), &device);
    let mask = Tensor::<2, Bool>::from_data(TensorData::new(vec![true; n * a.seq], [n, a.seq]), &device);
    let mut times = Vec::new();
    // Train only: seconds in forward, backward, global-norm clip and optimizer step.
    let mut parts: Vec<[f64; 4]> = Vec::new();
    match a.kind {
        BenchKind::Score => {
            let net = rm.net.valid();
            for i in 0..a.warmup + a.steps {
                let t = Instant::now();
                let r = net.forward(ids.clone(), mask.clone());
                let _ = r.into_data(); // forces the computation
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
                let rewards = net.forward(ids.clone(), mask.clone());
                let loss = rmtrain_train::losses::bradley_terry(
                    rewards.clone().narrow(0, 0, a.batch),
                    rewards.narrow(0, a.batch, a.batch),
                    None,
                );
                let _ = loss.clone().into_scalar::<f32>(); // forces the forward
                let t_forward = t.elapsed().as_secs_f64();
                let mut grads = GradientsParams::from_grads(loss.backward(), &net);
                let t_backward = t.elapsed().as_secs_f64();
                rmtrain_train::trainer::clip_global_norm(&net, &mut grads, Some(1.0));
                let t_clip = t.elapsed().as_secs_f64();
                net = optim.step(1e-5, net, grads);
                let _ = net.classifier.weight.val().into_data(); // forces the step
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
            "warmup": a.warmup, "steps": a.steps, "median_step_s": median,
            "pairs_per_s": pairs_per_s, "tokens_per_s": pairs_per_s * 2.0 * a.seq as f64,
            "median_forward_backward_clip_step_s": if parts.is_empty() { serde_json::Value::Null } else { serde_json::json!(breakdown) },
            "threads": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        })
    );
    Ok(())
}
