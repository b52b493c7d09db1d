//! The training loop, flat and explicit (forward → loss → backward → clip → step), one screen:
//! Bradley–Terry on (chosen, rejected) batches encoded together as TRL does, AdamW with
//! transformers' no-decay group, warm-up + decay, torch-style global-norm clipping, gradient
//! accumulation, periodic evaluation, metrics JSONL, checkpoints and exact resume.
//!
//! Reproducibility: data order is a seeded permutation per epoch, and the device RNG (dropout) is
//! re-seeded from (seed, step, micro-batch) before every forward, so a resumed run draws exactly
//! what the uninterrupted run drew.

use crate::checkpoint::{self, TrainerState, OPTIMIZER_FILE, STATE_DIR, TRAINER_STATE_FILE};
use crate::config::TrainConfig;
use crate::evaluate::evaluate_pairs_with_model;
use crate::losses;
use crate::schedule::{learning_rate, warmup_steps};
use crate::TrainError;
use burn::module::{Module, ModuleMapper, ModuleVisitor, Param, ParamGroup, ParamId};
use burn::optim::{AdamWConfig, GradientsAccumulator, GradientsParams, ModuleOptimizer};
use burn::tensor::{Device, Tensor, TensorData};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rmtrain_core::{AtomicDir, Manifest, MetricsLog};
use rmtrain_data::Pair;
use rmtrain_models::bert::BertRewardModel;
use rmtrain_models::reward_model::save_hf;
use rmtrain_models::{DropoutRng, RewardModel, ScoreOptions};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Which parameters learn: all (fine-tuning) or only the head (the linear probe of LP-FT).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trainable {
    All,
    HeadOnly,
}

pub struct TrainRequest {
    /// HF folder to start from (a backbone or a reward model).
    pub init: PathBuf,
    pub train_pairs: Vec<Pair>,
    pub train_data_sha256: Option<String>,
    /// Named eval sets, evaluated every `eval_every` steps and at the end.
    pub evals: Vec<(String, Vec<Pair>)>,
    pub config: TrainConfig,
    /// Run folder: metrics.jsonl, checkpoints/, model/.
    pub out: PathBuf,
    /// Continue from the newest checkpoint in `out`.
    pub resume: bool,
    /// The resolved recipe, stored in every manifest.
    pub recipe: serde_json::Value,
    /// Base device (not autodiff); training runs on its autodiff wrapper.
    pub device: Device,
    pub progress: bool,
    pub trainable: Trainable,
}

pub struct TrainOutcome {
    pub model_dir: PathBuf,
    /// Full evaluation of the final model on each eval set, in the request's order.
    pub final_eval: Vec<(String, rmtrain_eval::PairMetrics)>,
    pub steps: u64,
    pub final_metrics: serde_json::Value,
    pub wall_seconds: f64,
}

/// sha256 of the settings a resumed run must share with the run it continues: the resolved config
/// less what only says when to stop, evaluate, save or log.
fn resume_fingerprint(cfg: &TrainConfig, trainable: Trainable) -> String {
    let mut v = serde_json::to_value(cfg).expect("the config serializes");
    if let Some(m) = v.as_object_mut() {
        for k in ["max_steps", "eval_every", "eval_max_pairs", "save_every", "keep_checkpoints", "log_every"] {
            m.remove(k);
        }
        m.insert("trainable".into(), format!("{trainable:?}").into());
    }
    rmtrain_core::sha256_bytes(v.to_string().as_bytes())
}

/// Mixes a seed with counters into a new seed (splitmix64 finaliser).
pub fn mix_seed(seed: u64, a: u64, b: u64) -> u64 {
    let mut z = seed ^ a.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ b.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn epoch_order(n: usize, seed: u64, epoch: u64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(mix_seed(seed, 0xDA7A, epoch)));
    order
}

pub fn train(req: TrainRequest) -> Result<TrainOutcome, TrainError> {
    let cfg = &req.config;
    cfg.validate().map_err(TrainError::Config)?;
    let started = Instant::now();
    let ad = req.device.clone().autodiff();
    ad.seed(mix_seed(cfg.seed, 0x1417, 0)); // a new head's init (dropout uses DropoutRng, per step)

    // Resume: the newest checkpoint's weights, optimizer and step; else the init folder.
    let resume_from = if req.resume { checkpoint::list_checkpoints(&req.out).pop() } else { None };
    if req.resume && resume_from.is_none() {
        return Err(TrainError::Config(format!("--resume: no checkpoint under {}", checkpoint::checkpoints_dir(&req.out).display())));
    }
    if !req.resume {
        // A fresh run into a used folder starts clean: old checkpoints would otherwise be pruned
        // against (or resumed in place of) this run's, and metrics.jsonl would mix two runs.
        let _ = std::fs::remove_dir_all(checkpoint::checkpoints_dir(&req.out));
        let _ = std::fs::remove_file(req.out.join("metrics.jsonl"));
    }
    let init_sha = rmtrain_core::sha256_file(&req.init.join("model.safetensors"))?;
    let config_sha = resume_fingerprint(cfg, req.trainable);
    let (load_dir, state) = match &resume_from {
        Some((_, dir)) => {
            let state = checkpoint::read_state(dir)?;
            let differs = [
                ("seed", state.seed != cfg.seed),
                ("train data", state.train_data_sha256 != req.train_data_sha256),
                ("init weights", state.init_weights_sha256 != init_sha),
                ("training settings", state.config_sha256 != config_sha),
            ];
            let what: Vec<&str> = differs.iter().filter(|(_, d)| *d).map(|(w, _)| *w).collect();
            if !what.is_empty() {
                return Err(TrainError::State {
                    path: dir.join(STATE_DIR).join(TRAINER_STATE_FILE),
                    message: format!("--resume: {} differ from the run being resumed", what.join(", ")),
                });
            }
            (dir.clone(), Some(state))
        }
        None => (req.init.clone(), None),
    };
    let rm = RewardModel::load_with_dropout(&load_dir, cfg.max_length, &ad, cfg.dropout)?;
    let RewardModel { config: bert_config, net, tokenizer, initialised, .. } = rm;
    // Tokenizer files are always copied from the init folder: a resumed run's checkpoint folder
    // may be pruned while the run goes on.
    let source_dir = req.init.clone();
    let mut net = net;

    let pairs: &[Pair] = match cfg.max_train_pairs {
        Some(n) => &req.train_pairs[..n.min(req.train_pairs.len())],
        None => &req.train_pairs,
    };
    if pairs.is_empty() {
        return Err(TrainError::Config("no train pairs".into()));
    }
    let encoded: Vec<(Vec<u32>, Vec<u32>)> = pairs
        .iter()
        .map(|p| Ok((tokenizer.encode(&p.chosen_text())?, tokenizer.encode(&p.rejected_text())?)))
        .collect::<Result<_, rmtrain_models::ModelError>>()?;
    let steps_per_epoch = pairs.len().div_ceil(cfg.batch_size) as u64;
    let total_steps = steps_per_epoch * cfg.epochs as u64;
    let last_step = cfg.max_steps.map_or(total_steps, |m| m.min(total_steps));
    let warmup = warmup_steps(cfg.warmup_ratio, cfg.warmup_steps, total_steps);

    let adamw = |wd: f64| {
        AdamWConfig::new()
            .with_beta_1(cfg.adam_beta1 as f32)
            .with_beta_2(cfg.adam_beta2 as f32)
            .with_epsilon(cfg.adam_epsilon as f32)
            .with_weight_decay(wd as f32)
    };
    let mut optim: ModuleOptimizer =
        adamw(cfg.weight_decay).init().with_group(ParamGroup::from_ids(net.no_decay_param_ids()), adamw(0.0).build(), None);
    let trainable_ids: Option<Vec<ParamId>> = (req.trainable == Trainable::HeadOnly).then(|| net.head_param_ids());

    let mut step = 0u64;
    if let (Some(state), Some((_, dir))) = (&state, &resume_from) {
        let path = dir.join(STATE_DIR).join(OPTIMIZER_FILE);
        optim = optim.load(&path).map_err(|e| TrainError::State { path: path.clone(), message: format!("{e:?}") })?;
        step = state.step;
        MetricsLog::truncate_after(&req.out.join("metrics.jsonl"), step)?;
    }
    let mut log = MetricsLog::append(&req.out.join("metrics.jsonl"))?;
    let bar = progress_bar(req.progress, last_step, step);
    let score_opts = ScoreOptions::default();
    let mut window = Window::default();
    let mut order = epoch_order(pairs.len(), cfg.data_seed.unwrap_or(cfg.seed), step / steps_per_epoch.max(1));
    let mut order_epoch = step / steps_per_epoch;
    let micro = cfg.batch_size / cfg.grad_accum;

    let manifest_for = |step: u64, final_metrics: serde_json::Value| Manifest {
        rmtrain_version: env!("CARGO_PKG_VERSION").into(),
        kind: "train".into(),
        recipe: req.recipe.clone(),
        seed: cfg.seed,
        step,
        train_data_sha256: req.train_data_sha256.clone(),
        init_weights_sha256: Some(init_sha.clone()),
        pooling: "bert_pooler_cls".into(),
        final_metrics,
        max_length: Some(cfg.max_length),
        train_config: serde_json::to_value(cfg).expect("the config serializes"),
        ..Default::default()
    };

    while step < last_step {
        let epoch = step / steps_per_epoch;
        if epoch != order_epoch {
            order = epoch_order(pairs.len(), cfg.data_seed.unwrap_or(cfg.seed), epoch);
            order_epoch = epoch;
        }
        let pos = (step % steps_per_epoch) as usize;
        let batch: Vec<usize> = order[pos * cfg.batch_size..((pos + 1) * cfg.batch_size).min(pairs.len())].to_vec();
        let lr = learning_rate(cfg.schedule, cfg.lr, step, warmup, total_steps);
        let tick = Instant::now();
        let mut accumulator = GradientsAccumulator::new();
        let mut tokens = 0usize;
        for (m, chunk) in batch.chunks(micro).enumerate() {
            // The micro-batch's pairs are split over replicas that run forward + backward at once,
            // one thread each; their gradients are summed in replica order (deterministic).
            let parts: Vec<&[usize]> = split_even(chunk, cfg.replicas.max(1));
            let batch_len = batch.len();
            let results = run_replicas(&net, parts.len(), |k, model| {
                let part = parts[k];
                let seed = mix_seed(cfg.seed, step + 1, (m * cfg.replicas.max(1) + k) as u64);
                let seqs: Vec<&[u32]> =
                    part.iter().map(|&i| encoded[i].0.as_slice()).chain(part.iter().map(|&i| encoded[i].1.as_slice())).collect();
                let b = tokenizer.collate(&seqs);
                let (ids, mask) = b.to_tensors(&ad);
                let mut rng = DropoutRng::new(seed);
                // [2 · pairs]: chosen then rejected
                let rewards = match &trainable_ids {
                    Some(_) => model.forward_frozen_backbone(ids, mask, Some(&mut rng)),
                    None => model.forward_with(ids, mask, Some(&mut rng)),
                };
                let n = part.len();
                let r_c = rewards.clone().narrow(0, 0, n);
                let r_r = rewards.narrow(0, n, n);
                let loss = pair_loss(cfg, r_c.clone(), r_r.clone(), part, pairs, &ad);
                // Parts are weighted by their share of the batch (the last may be short).
                let mut grads = loss.clone().mul_scalar(n as f64 / batch_len as f64).backward();
                let grads = match &trainable_ids {
                    Some(ids) => GradientsParams::from_params(&mut grads, &model, ids),
                    None => GradientsParams::from_grads(grads, &model),
                };
                let loss = loss.into_scalar::<f32>() as f64;
                (grads, loss * n as f64, to_vec(r_c), to_vec(r_r), b.num_tokens())
            });
            for (grads, loss_times_n, r_c, r_r, n_tokens) in results {
                accumulator.accumulate(&net, grads);
                window.add(loss_times_n, &r_c, &r_r);
                tokens += n_tokens;
            }
        }
        let mut grads = accumulator.grads();
        let grad_norm = clip_global_norm(&net, &mut grads, cfg.max_grad_norm);
        net = optim.step(lr, net, grads);
        step += 1;
        window.finish_step(grad_norm, tokens, tick.elapsed().as_secs_f64());

        if step % cfg.log_every.max(1) == 0 || step == last_step {
            let mut record = window.drain();
            record.insert("step".into(), step.into());
            record.insert("epoch".into(), serde_json::json!(step as f64 / steps_per_epoch as f64));
            record.insert("lr".into(), lr.into());
            bar.set_message(format!(
                "loss {:.4} acc {:.3}",
                record.get("loss").and_then(|v| v.as_f64()).unwrap_or(f64::NAN),
                record.get("accuracy").and_then(|v| v.as_f64()).unwrap_or(f64::NAN)
            ));
            log.log(&serde_json::Value::Object(record))?;
        }
        if cfg.eval_every > 0 && step % cfg.eval_every == 0 && step < last_step && !req.evals.is_empty() {
            let rm = RewardModel { config: bert_config.clone(), net: net.clone(), tokenizer: tokenizer.clone(), source_dir: source_dir.clone(), weights_sha256: String::new(), initialised: Vec::new() };
            let mut record = serde_json::Map::new();
            record.insert("step".into(), step.into());
            for (name, set) in &req.evals {
                let set = &set[..cfg.eval_max_pairs.map_or(set.len(), |m| m.min(set.len()))];
                let m = evaluate_pairs_with_model(&rm, set, &score_opts, cfg.seed)?;
                record.insert(format!("eval_{name}_accuracy"), m.accuracy.into());
                record.insert(format!("eval_{name}_ece"), m.ece.into());
                record.insert(format!("eval_{name}_margin"), m.mean_margin.into());
            }
            log.log(&serde_json::Value::Object(record))?;
        }
        let save_now = (cfg.save_every > 0 && step % cfg.save_every == 0) || step == last_step;
        if save_now {
            let dir = AtomicDir::new(&checkpoint::step_dir(&req.out, step))?;
            save_hf(dir.path(), &bert_config, &net, &source_dir)?;
            manifest_for(step, serde_json::Value::Null).write(dir.path())?;
            std::fs::create_dir_all(dir.path().join(STATE_DIR)).map_err(|e| rmtrain_core::CoreError::io(dir.path(), e))?;
            let opt_path = dir.path().join(STATE_DIR).join(OPTIMIZER_FILE);
            optim.save(&opt_path).map_err(|e| TrainError::State { path: opt_path.clone(), message: format!("{e:?}") })?;
            let state = TrainerState {
                step,
                total_steps,
                epoch: step / steps_per_epoch,
                position_in_epoch: step % steps_per_epoch,
                seed: cfg.seed,
                train_data_sha256: req.train_data_sha256.clone(),
                init_weights_sha256: init_sha.clone(),
                config_sha256: config_sha.clone(),
            };
            rmtrain_core::write_json_atomic(&dir.path().join(STATE_DIR).join(TRAINER_STATE_FILE), &state)?;
            dir.commit()?;
            checkpoint::prune(&req.out, cfg.keep_checkpoints);
        }
        bar.inc(1);
    }
    bar.finish_and_clear();

    // Final evaluation on the full eval sets, reward statistics for ensembles, the final folder.
    let rm = RewardModel { config: bert_config, net: net.valid(), tokenizer, source_dir, weights_sha256: String::new(), initialised };
    let mut final_metrics = serde_json::Map::new();
    let mut final_eval = Vec::new();
    for (name, set) in &req.evals {
        let m = evaluate_pairs_with_model(&rm, set, &score_opts, cfg.seed)?;
        final_metrics.insert(name.clone(), serde_json::to_value(&m).expect("metrics serialize"));
        final_eval.push((name.clone(), m));
    }
    let (mean, std) = reward_stats(&rm, pairs, &score_opts)?;
    let final_metrics = serde_json::Value::Object(final_metrics);
    let model_dir = req.out.join("model");
    let dir = AtomicDir::new(&model_dir)?;
    rm.save_hf(dir.path())?;
    let mut manifest = manifest_for(step, final_metrics.clone());
    manifest.reward_mean = Some(mean);
    manifest.reward_std = Some(std);
    manifest.write(dir.path())?;
    dir.commit()?;
    log.log(&serde_json::json!({"step": step, "final": final_metrics, "wall_seconds": started.elapsed().as_secs_f64()}))?;
    Ok(TrainOutcome { model_dir, final_eval, steps: step, final_metrics, wall_seconds: started.elapsed().as_secs_f64() })
}

/// The configured loss on one micro-batch.
fn pair_loss(cfg: &TrainConfig, r_c: Tensor<1>, r_r: Tensor<1>, chunk: &[usize], pairs: &[Pair], device: &Device) -> Tensor<1> {
    let mut loss = match cfg.loss.label_smoothing {
        Some(eps) if eps > 0.0 => losses::bradley_terry_smoothed(r_c.clone(), r_r.clone(), eps),
        _ => {
            let margin = cfg.loss.use_margin.then(|| {
                let m: Vec<f32> = chunk.iter().map(|&i| pairs[i].margin.unwrap_or(0.0) as f32).collect();
                Tensor::<1>::from_data(TensorData::new(m, [chunk.len()]), device)
            });
            losses::bradley_terry(r_c.clone(), r_r.clone(), margin)
        }
    };
    if let Some(coef) = cfg.loss.center_rewards_coefficient {
        loss = loss + losses::center_term(r_c, r_r, coef);
    }
    loss
}

/// Splits `items` into `parts` contiguous runs of near-equal length (fewer when items are few).
fn split_even(items: &[usize], parts: usize) -> Vec<&[usize]> {
    let parts = parts.min(items.len()).max(1);
    let (base, extra) = (items.len() / parts, items.len() % parts);
    let mut out = Vec::with_capacity(parts);
    let mut start = 0;
    for k in 0..parts {
        let len = base + usize::from(k < extra);
        out.push(&items[start..start + len]);
        start += len;
    }
    out
}

/// Runs `work(k, model_k)` for k in 0..n in parallel threads and returns the results in k order;
/// model 0 is `net` itself, the others [`detached_replica`]s (independent autodiff graphs).
pub fn run_replicas<T: Send>(net: &BertRewardModel, n: usize, work: impl Fn(usize, BertRewardModel) -> T + Sync) -> Vec<T> {
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..n)
            .map(|k| {
                let model = if k == 0 { net.clone() } else { detached_replica(net) };
                let work = &work;
                scope.spawn(move || work(k, model))
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("a replica thread panicked")).collect()
    })
}

/// A copy of `net` whose parameters are new autodiff leaves (same values, same `ParamId`s). Two
/// graphs that share no leaf are independent in Burn's autodiff, so replicas can run forward and
/// backward in parallel threads; their gradients still map to the same parameter ids.
pub fn detached_replica(net: &BertRewardModel) -> BertRewardModel {
    struct Detach;
    impl ModuleMapper for Detach {
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
            // On an inference device there is no graph to separate: the clone is enough.
            param.map(|t| if t.device().is_autodiff() { t.detach().require_grad() } else { t })
        }
    }
    net.clone().map(&mut Detach)
}

fn to_vec(t: Tensor<1>) -> Vec<f64> {
    t.into_data().convert::<f64>().try_to_vec::<f64>().expect("rewards are floats")
}

/// Reward mean and std over the texts of (up to 512) train pairs: the reference statistics used
/// to z-normalise members of a prediction ensemble.
fn reward_stats(rm: &RewardModel, pairs: &[Pair], opts: &ScoreOptions) -> Result<(f64, f64), TrainError> {
    let sample = &pairs[..pairs.len().min(512)];
    let (rc, rr) = crate::evaluate::score_pairs(rm, sample, opts)?;
    let all: Vec<f64> = rc.into_iter().chain(rr).collect();
    let mean = all.iter().sum::<f64>() / all.len() as f64;
    let var = all.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / all.len() as f64;
    Ok((mean, var.sqrt()))
}

/// torch `clip_grad_norm_`: the L2 norm over all gradients together; when above `max_norm`,
/// every gradient is scaled by max_norm / (norm + 1e-6). Returns the norm before clipping.
pub fn clip_global_norm(net: &BertRewardModel, grads: &mut GradientsParams, max_norm: Option<f64>) -> f64 {
    struct SumSquares<'a> {
        grads: &'a GradientsParams,
        parts: Vec<Tensor<1>>,
    }
    impl ModuleVisitor for SumSquares<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            if let Some(g) = self.grads.get::<D>(param.id) {
                self.parts.push(g.square().sum());
            }
        }
    }
    struct Scale<'a> {
        grads: &'a mut GradientsParams,
        factor: f64,
    }
    impl ModuleVisitor for Scale<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            if let Some(g) = self.grads.remove::<D>(param.id) {
                self.grads.register(param.id, g.mul_scalar(self.factor));
            }
        }
    }
    let mut sum = SumSquares { grads, parts: Vec::new() };
    net.visit(&mut sum);
    if sum.parts.is_empty() {
        return 0.0;
    }
    let norm = (Tensor::cat(sum.parts, 0).sum().into_scalar::<f32>() as f64).sqrt();
    if let Some(max) = max_norm {
        let factor = max / (norm + 1e-6);
        if factor < 1.0 {
            net.visit(&mut Scale { grads, factor });
        }
    }
    norm
}

/// Running sums of the train metrics between two log lines (TRL's names).
#[derive(Default)]
struct Window {
    loss_sum: f64,
    pairs: usize,
    correct: usize,
    margin_sum: f64,
    reward_sum: f64,
    min_reward: f64,
    max_reward: f64,
    grad_norm_sum: f64,
    steps: usize,
    tokens: usize,
    seconds: f64,
}

impl Window {
    fn add(&mut self, loss_times_n: f64, r_c: &[f64], r_r: &[f64]) {
        if self.pairs == 0 {
            self.min_reward = f64::INFINITY;
            self.max_reward = f64::NEG_INFINITY;
        }
        self.loss_sum += loss_times_n;
        self.pairs += r_c.len();
        for (c, r) in r_c.iter().zip(r_r) {
            self.correct += usize::from(c > r);
            self.margin_sum += c - r;
            self.reward_sum += c + r;
            self.min_reward = self.min_reward.min(c.min(*r));
            self.max_reward = self.max_reward.max(c.max(*r));
        }
    }

    fn finish_step(&mut self, grad_norm: f64, tokens: usize, seconds: f64) {
        self.grad_norm_sum += grad_norm;
        self.steps += 1;
        self.tokens += tokens;
        self.seconds += seconds;
    }

    fn drain(&mut self) -> serde_json::Map<String, serde_json::Value> {
        let n = self.pairs.max(1) as f64;
        let out = serde_json::json!({
            "loss": self.loss_sum / n,
            "accuracy": self.correct as f64 / n,
            "margin": self.margin_sum / n,
            "mean_reward": self.reward_sum / (2.0 * n),
            "min_reward": self.min_reward,
            "max_reward": self.max_reward,
            "grad_norm": self.grad_norm_sum / self.steps.max(1) as f64,
            "num_tokens": self.tokens,
            "tokens_per_second": self.tokens as f64 / self.seconds.max(1e-9),
            "pairs_per_second": self.pairs as f64 / self.seconds.max(1e-9),
        });
        *self = Window::default();
        match out {
            serde_json::Value::Object(m) => m,
            _ => unreachable!("json! of an object literal is an object"),
        }
    }
}

fn progress_bar(show: bool, total: u64, done: u64) -> indicatif::ProgressBar {
    if !show {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(total);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{prefix} [{elapsed_precise}] {wide_bar} {pos}/{len} steps (eta {eta}) {msg}")
            .expect("a valid progress template"),
    );
    bar.set_prefix("train");
    bar.set_position(done);
    bar
}

/// Path helpers re-exported for the CLI.
pub fn model_dir(run: &Path) -> PathBuf {
    run.join("model")
}
