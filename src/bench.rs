//! `rmtrain bench train|score`: throughput of one reward model on one device.
//!
//! Synthetic (default): the protocol of ../shared/bench/rm_step_bench.py: 2·B random ids of
//! `--seq` tokens with a full mask, warm-up steps, then the median of timed steps. A train step is
//! forward of chosen+rejected together, Bradley–Terry loss, backward, global clip 1.0 and an AdamW
//! step, with the batch shared by `--replicas` threads as training does (dropout off unless
//! `--dropout`, as the reference); a score step is the forward of the same 2·B sequences. The
//! train breakdown (forward, backward, clip, step) is of the whole step: forward = slowest
//! replica's forward, backward = until all gradients are in.
//!
//! Real data (`--data F.jsonl`): one pass over the pairs in batches of B, each padded to its
//! longest text as training does, in a seeded shuffle or (`--group-by-length`) in the trainer's
//! length-grouped order; scoring batches 2·B texts in file order or sorted by length. Reported:
//! pairs/s and tokens/s over the timed pass, the padding share, and GFLOP/s of the matmul work done
//! (padded tokens, the reference's analytic count: train = 3 × forward).

use crate::device::parse_device;
use crate::verbs::at_least;
use anyhow::{bail, Result};
use burn::optim::{GradientsParams, ModuleOptimizer};
use burn::tensor::{Bool, Int, Tensor, TensorData};
use clap::{Args, ValueEnum};
use rand::{Rng, SeedableRng};
use rmtrain_models::{ModelConfig, RewardModel, RewardNet, RewardNetwork};
use std::path::PathBuf;
use std::time::Instant;

#[derive(Clone, Copy, ValueEnum)]
pub enum BenchKind {
    Train,
    Score,
}

#[derive(Args)]
#[command(after_help = "Examples:
  rmtrain bench train --model assets/all-MiniLM-L6-v2 --batch 8 --seq 128
  rmtrain bench score --model assets/all-MiniLM-L6-v2 --batch 8 --seq 128 --steps 20
  rmtrain bench train --model assets/all-MiniLM-L6-v2 --batch 16 --data data/vader/movie.mean.train.jsonl --limit 3000 --group-by-length")]
pub struct BenchArgs {
    pub kind: BenchKind,
    #[arg(long)]
    pub model: PathBuf,
    /// Pairs per step (2·batch sequences).
    #[arg(long, default_value_t = 8, value_parser = at_least::<1>)]
    pub batch: usize,
    /// Tokens per sequence: 2 up to the model's max_position_embeddings (with --data: the
    /// truncation length).
    #[arg(long, default_value_t = 128, value_parser = at_least::<2>)]
    pub seq: usize,
    /// Untimed steps first (0 = none); with --data, on the first batches before the timed pass.
    #[arg(long, default_value_t = 3)]
    pub warmup: usize,
    /// Timed steps; the median is reported (synthetic only: --data times one pass).
    #[arg(long, default_value_t = 10, value_parser = at_least::<1>)]
    pub steps: usize,
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Replicas (threads) sharing each step, as `train.replicas` / scoring threads do; at most
    /// --batch are used. Default: 2 on cpu (one per core), 1 elsewhere (libtorch and the GPU
    /// runtimes parallelise each op themselves).
    #[arg(long, value_parser = at_least::<1>)]
    pub replicas: Option<usize>,
    /// Train with the model's dropout (the reference harness turns it off by default).
    #[arg(long)]
    pub dropout: bool,
    /// Real pairs (JSONL, any format `rmtrain train` reads) instead of synthetic ids: one pass.
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// With --data: only the first N pairs.
    #[arg(long)]
    pub limit: Option<usize>,
    /// With --data: batches of similar length (train: the trainer's `group_by_length` order;
    /// score: texts sorted by length, as `rmtrain score` does).
    #[arg(long)]
    pub group_by_length: bool,
    /// With --data: the shuffle seed (train order).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

/// The inputs of one step for one replica: 2·n rows (chosen rows first), n pairs.
struct Share {
    ids: Tensor<2, Int>,
    mask: Tensor<2, Bool>,
    pairs: usize,
}

/// Per-step figures: wall seconds, the train breakdown, pairs, real and padded tokens, matmul FLOPs.
#[derive(Default, Clone, Copy)]
struct StepStats {
    seconds: f64,
    parts: [f64; 4],
    pairs: f64,
    tokens: f64,
    padded_tokens: f64,
    flops: f64,
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
    if a.data.is_none() && (a.limit.is_some() || a.group_by_length) {
        bail!("--limit and --group-by-length need --data");
    }
    let replicas = replicas(&a);
    let steps = match &a.data {
        None => synthetic_steps(&a, &rm, &device)?,
        Some(path) => real_steps(&a, &rm, &device, path)?,
    };
    let (warm, timed) = steps.split_at(a.warmup.min(steps.len()));
    if timed.is_empty() {
        bail!("no timed step: --warmup {} covers every batch", a.warmup);
    }
    let mut times: Vec<f64> = timed.iter().map(|s| s.seconds).collect();
    times.sort_by(|x, y| x.total_cmp(y));
    let median = times[times.len() / 2];
    let sum = |f: fn(&StepStats) -> f64| timed.iter().map(f).sum::<f64>();
    let (seconds, pairs, tokens, padded, flops) =
        (sum(|s| s.seconds), sum(|s| s.pairs), sum(|s| s.tokens), sum(|s| s.padded_tokens), sum(|s| s.flops));
    let kind = match a.kind {
        BenchKind::Train => "train",
        BenchKind::Score => "score",
    };
    let mut out = serde_json::json!({
        "bench": kind, "model": a.model, "device": a.device, "batch_pairs": a.batch, "seq": a.seq,
        "replicas": replicas, "dropout": a.dropout, "warmup": warm.len(), "steps": timed.len(),
        "threads": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
    });
    let fields = out.as_object_mut().expect("an object");
    if a.data.is_none() {
        // Synthetic: the median step, as the reference harness reports.
        let pairs_per_s = a.batch as f64 / median;
        fields.insert("median_step_s".into(), median.into());
        fields.insert("pairs_per_s".into(), pairs_per_s.into());
        fields.insert("tokens_per_s".into(), (pairs_per_s * 2.0 * a.seq as f64).into());
        fields.insert("gflops_per_s".into(), (timed[0].flops / median / 1e9).into());
        if matches!(a.kind, BenchKind::Train) {
            let breakdown: Vec<f64> = (0..4)
                .map(|k| {
                    let mut v: Vec<f64> = timed.iter().map(|s| s.parts[k]).collect();
                    v.sort_by(|x, y| x.total_cmp(y));
                    v[v.len() / 2]
                })
                .collect();
            fields.insert("median_forward_backward_clip_step_s".into(), serde_json::json!(breakdown));
        }
    } else {
        // Real data: totals over the timed pass.
        fields.insert("data".into(), serde_json::json!(a.data));
        fields.insert("group_by_length".into(), a.group_by_length.into());
        fields.insert("seed".into(), a.seed.into());
        fields.insert("seconds".into(), seconds.into());
        fields.insert("pairs".into(), pairs.into());
        fields.insert("pairs_per_s".into(), (pairs / seconds).into());
        fields.insert("tokens_per_s".into(), (tokens / seconds).into());
        fields.insert("padded_tokens_per_s".into(), (padded / seconds).into());
        fields.insert("pad_fraction".into(), (1.0 - tokens / padded).into());
        fields.insert("gflops_per_s".into(), (flops / seconds / 1e9).into());
    }
    fields.insert("peak_rss_mb".into(), peak_rss_mb().map_or(serde_json::Value::Null, serde_json::Value::from));
    println!("{out}");
    Ok(())
}

/// Matmul FLOPs of one sequence's forward of `len` tokens (multiply + add = 2): per layer and
/// token the Q, K, V, O projections 4h², the FFN 2h·I, attention scores and weighted sum 2·len·h
/// (multiply-accumulates); plus the pooler on [CLS] and the one-unit head. The count of
/// ../shared/bench/rm_step_bench.py `analytic_flops`: model FLOPs. A BERT model executes fewer,
/// since its last layer runs for the [CLS] row only (13.9% fewer at MiniLM-L6's sizes, 128 tokens).
fn forward_flops(config: &ModelConfig, len: usize) -> f64 {
    match config {
        ModelConfig::Bert(c) => {
            let (h, i, l, n) = (c.hidden_size as f64, c.intermediate_size as f64, len as f64, c.num_hidden_layers as f64);
            n * l * (2.0 * (4.0 * h * h + 2.0 * h * i) + 2.0 * (2.0 * l * h)) + 2.0 * h * h + 2.0 * h
        }
        // Llama: Q and O are h·(heads·hd), K and V h·(kv·hd), the SwiGLU FFN 3h·I; causal attention
        // still multiplies the full score matrix; the score head is one unit.
        ModelConfig::Llama(c) => {
            let (h, i, l, n) = (c.hidden_size as f64, c.intermediate_size as f64, len as f64, c.num_hidden_layers as f64);
            let (q, kv) = ((c.num_attention_heads * c.head_dim()) as f64, (c.num_kv_heads() * c.head_dim()) as f64);
            n * l * (2.0 * (2.0 * h * q + 2.0 * h * kv + 3.0 * h * i) + 2.0 * (2.0 * l * q)) + 2.0 * h
        }
    }
}

/// Peak resident set of this process (VmHWM), MiB.
fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

fn synthetic_steps(a: &BenchArgs, rm: &RewardModel, device: &burn::tensor::Device) -> Result<Vec<StepStats>> {
    let vocab = rm.config.vocab_size() as i64;
    let n = 2 * a.batch;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    let ids: Vec<i64> = (0..n * a.seq).map(|_| rng.random_range(1000.min(vocab - 1)..vocab)).collect();
    let ids = Tensor::<2, Int>::from_data(TensorData::new(ids, [n, a.seq]), device);
    let mask = Tensor::<2, Bool>::from_data(TensorData::new(vec![true; n * a.seq], [n, a.seq]), device);
    // Pairs of each replica: a contiguous share of the batch (chosen rows i, rejected rows B + i).
    let replicas = replicas(a);
    let shares: Vec<Share> = (0..replicas)
        .map(|k| {
            let (lo, hi) = (k * a.batch / replicas, (k + 1) * a.batch / replicas);
            let rows: Vec<i64> = (lo..hi).chain(a.batch + lo..a.batch + hi).map(|i| i as i64).collect();
            let idx = Tensor::<1, Int>::from_data(TensorData::new(rows.clone(), [rows.len()]), device);
            Share { ids: ids.clone().select(0, idx.clone()), mask: mask.clone().select(0, idx), pairs: hi - lo }
        })
        .collect();
    let flops = 2.0 * a.batch as f64 * forward_flops(&rm.config, a.seq) * train_factor(a.kind);
    let tokens = 2 * a.batch * a.seq;
    let mut net = rm.net.clone();
    let mut optim = ModuleOptimizer::from(rmtrain_train::adamw::FusedAdamW::new(0.9, 0.999, 1e-8, 0.01));
    let mut out = Vec::new();
    for i in 0..a.warmup + a.steps {
        let mut s = match a.kind {
            BenchKind::Score => score_step(&net, &shares),
            BenchKind::Train => {
                let (next, s) = train_step(net, &mut optim, &shares, a.batch, a.dropout.then_some(i as u64));
                net = next;
                s
            }
        };
        s.pairs = a.batch as f64;
        s.tokens = tokens as f64;
        s.padded_tokens = tokens as f64;
        s.flops = flops;
        out.push(s);
    }
    Ok(out)
}

fn replicas(a: &BenchArgs) -> usize {
    let default = if matches!(a.device.as_str(), "cpu" | "flex") { 2 } else { 1 };
    a.replicas.unwrap_or(default).clamp(1, a.batch)
}

fn train_factor(kind: BenchKind) -> f64 {
    match kind {
        BenchKind::Train => 3.0,
        BenchKind::Score => 1.0,
    }
}

/// `net` lives on the inference device `run` loads it on for scoring.
fn score_step(net: &RewardNetwork, shares: &[Share]) -> StepStats {
    let t = Instant::now();
    rmtrain_train::trainer::run_replicas(net, shares.len(), |k, model| {
        model.forward(shares[k].ids.clone(), shares[k].mask.clone()).into_data() // forces the computation
    });
    StepStats { seconds: t.elapsed().as_secs_f64(), ..StepStats::default() }
}

fn train_step(
    net: RewardNetwork,
    optim: &mut ModuleOptimizer,
    shares: &[Share],
    batch: usize,
    dropout_seed: Option<u64>,
) -> (RewardNetwork, StepStats) {
    let t = Instant::now();
    let results = rmtrain_train::trainer::run_replicas(&net, shares.len(), |k, model| {
        let s = &shares[k];
        let mut rng = dropout_seed.map(rmtrain_models::DropoutRng::new);
        let rewards = model.forward_with(s.ids.clone(), s.mask.clone(), rng.as_mut());
        let n = s.pairs;
        let loss = rmtrain_train::losses::bradley_terry(rewards.clone().narrow(0, 0, n), rewards.narrow(0, n, n), None)
            .mul_scalar(n as f64 / batch as f64);
        let forward_s = {
            let _ = loss.clone().into_scalar::<f32>();
            t.elapsed().as_secs_f64()
        };
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
    let net = optim.step(1e-5, net, grads);
    let _ = net.hf_params().pop().map(|(_, p)| p.to_hf()); // forces the step
    let seconds = t.elapsed().as_secs_f64();
    let parts = [t_forward, t_backward - t_forward, t_clip - t_backward, seconds - t_clip];
    (net, StepStats { seconds, parts, ..StepStats::default() })
}

/// One pass over real pairs: `--warmup` untimed batches first (the first batches of the order),
/// then every batch, timed.
fn real_steps(a: &BenchArgs, rm: &RewardModel, device: &burn::tensor::Device, path: &std::path::Path) -> Result<Vec<StepStats>> {
    let mut pairs = rmtrain_data::read_pairs(path)?;
    if let Some(n) = a.limit {
        pairs.truncate(n);
    }
    if pairs.is_empty() {
        bail!("{}: no pairs to benchmark", path.display());
    }
    let (encoded, _) = rmtrain_train::trainer::encode_pairs(&rm.tokenizer, &pairs).map_err(|e| e.in_file(path))?;
    let replicas = replicas(a);
    // The step's time and breakdown, with the batch's counts.
    let with_counts = |timed: StepStats, counts: StepStats| StepStats { seconds: timed.seconds, parts: timed.parts, ..counts };
    let mut out = Vec::new();
    match a.kind {
        BenchKind::Train => {
            let cfg = rmtrain_train::TrainConfig {
                batch_size: a.batch,
                shuffle: true,
                group_by_length: a.group_by_length,
                seed: a.seed,
                ..rmtrain_train::TrainConfig::default()
            };
            let order = rmtrain_train::trainer::epoch_order(&encoded, &cfg, 0);
            let batches: Vec<&[usize]> = order.chunks(a.batch).collect();
            let rows = |part: &[usize]| {
                let texts = part.iter().map(|&p| encoded[p].0.as_slice()).chain(part.iter().map(|&p| encoded[p].1.as_slice())).collect();
                (texts, part.len() as f64)
            };
            let mut net = rm.net.clone();
            let mut optim = ModuleOptimizer::from(rmtrain_train::adamw::FusedAdamW::new(0.9, 0.999, 1e-8, 0.01));
            for (i, batch) in batches.iter().take(a.warmup).chain(&batches).enumerate() {
                let (shares, counts) = shares_of(batch, replicas, rm, device, a.kind, &rows);
                let (next, s) = train_step(net, &mut optim, &shares, batch.len(), a.dropout.then_some(i as u64));
                net = next;
                out.push(with_counts(s, counts));
            }
        }
        BenchKind::Score => {
            let texts: Vec<&[u32]> = encoded.iter().flat_map(|(c, r)| [c.as_slice(), r.as_slice()]).collect();
            let mut order: Vec<usize> = (0..texts.len()).collect();
            if a.group_by_length {
                order.sort_by_key(|&i| texts[i].len());
            }
            let batches: Vec<&[usize]> = order.chunks(2 * a.batch).collect();
            let rows = |part: &[usize]| (part.iter().map(|&i| texts[i]).collect(), part.len() as f64 / 2.0);
            for batch in batches.iter().take(a.warmup).chain(&batches) {
                let (shares, counts) = shares_of(batch, replicas, rm, device, a.kind, &rows);
                out.push(with_counts(score_step(&rm.net, &shares), counts));
            }
        }
    }
    Ok(out)
}

/// One batch as the trainer splits it over replicas (contiguous, near-equal shares), each share
/// padded to its own longest text; `rows` gives a share's texts and its pair count. Returns the
/// shares and their summed counts (pairs, tokens, padded tokens, matmul FLOPs).
fn shares_of<'t>(
    batch: &[usize],
    replicas: usize,
    rm: &RewardModel,
    device: &burn::tensor::Device,
    kind: BenchKind,
    rows: &impl Fn(&[usize]) -> (Vec<&'t [u32]>, f64),
) -> (Vec<Share>, StepStats) {
    let mut total = StepStats::default();
    let shares = rmtrain_train::trainer::split_even(batch, replicas)
        .into_iter()
        .map(|part| {
            let (texts, pairs) = rows(part);
            let b = rm.tokenizer.collate(&texts);
            let (ids, mask) = b.to_tensors(device);
            total.pairs += pairs;
            total.tokens += texts.iter().map(|t| t.len()).sum::<usize>() as f64;
            total.padded_tokens += (b.batch * b.seq) as f64;
            total.flops += texts.len() as f64 * forward_flops(&rm.config, b.seq) * train_factor(kind);
            Share { ids, mask, pairs: part.len() }
        })
        .collect();
    (shares, total)
}
