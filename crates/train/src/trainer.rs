//! The training loop, flat and explicit: Bradley–Terry on (chosen, rejected) batches encoded
//! together as TRL does, AdamW with transformers' no-decay group, warm-up + decay, torch-style
//! global-norm clipping, gradient accumulation, periodic evaluation, metrics JSONL, checkpoints
//! and exact resume. [`train`] reads as its four steps:
//!
//! 1. [`Run::prepare`]: resume from the newest checkpoint or start from the init folder; encode
//!    the pairs; build the optimizer;
//! 2. [`Run::step`]: forward + backward of every micro-batch (split over replicas), global-norm
//!    clipping, the non-finite guard, the optimizer step;
//! 3. [`Run::after_step`]: metrics line, periodic evaluation, checkpoint;
//! 4. [`Run::finish`]: final evaluation, reward statistics, the `model/` folder.
//!
//! Reproducibility: data order is a seeded permutation per epoch (or the file order with
//! `shuffle = false`), and dropout masks are drawn from (seed, step, micro-batch, replica), so a
//! resumed run draws exactly what the uninterrupted run drew.

use crate::checkpoint::{self, TrainerState, STATE_DIR, TRAINER_STATE_FILE};
use crate::config::{ContrastiveConfig, ContrastiveKind, SmoothingPairs, TrainConfig};
use crate::contrastive;
use crate::evaluate::evaluate_pairs_with_model;
use crate::losses;
use crate::schedule::{learning_rate, warmup_steps};
use crate::TrainError;
use burn::module::{Module, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::optim::{GradientsAccumulator, GradientsParams, ModuleOptimizer};
use burn::tensor::{Device, Tensor, TensorData};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rmtrain_core::{mix_seed, AtomicDir, Manifest, MetricsLog};
use rmtrain_data::{MetaGroup, Pair};
use rmtrain_models::{DropoutRng, RewardModel, RewardNet, RewardNetwork, ScoreOptions};
use std::path::PathBuf;
use std::time::Instant;

/// What the optimizer trains: the reward network, plus SwAV's prototypes when that loss is on
/// (they live in the run's `state/`, not in the reward model's checkpoint).
#[derive(Module, Debug)]
pub struct Trained {
    pub net: RewardNetwork,
    pub prototypes: Option<Param<Tensor<2>>>,
}

/// The prototypes' parameter id: far above any model parameter's (those count up from 0 in load
/// order), stable across runs so a resumed optimizer state finds its moments.
const PROTOTYPES_ID: u64 = 1 << 40;
const PROTOTYPES_FILE: &str = "prototypes.json";

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
    /// Base device (not autodiff); training runs on its autodiff wrapper. The model, the
    /// optimizer state and every checkpoint live here.
    pub device: Device,
    /// More devices for data parallelism over several devices (e.g. the other GPUs of a
    /// machine): replica k of a step runs on `[device, replica_devices…][k mod n]` (a fork of
    /// the model there), and its gradients are moved to `device` and summed in replica order.
    /// Empty: every replica on `device`. Needs `train.replicas` ≥ the number of devices.
    pub replica_devices: Vec<Device>,
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
    /// Train pairs with a side longer than `max_length` tokens (trained on truncated).
    pub truncated_pairs: usize,
}

/// Trains one reward model: prepare (or resume) → steps → finish.
pub fn train(req: TrainRequest) -> Result<TrainOutcome, TrainError> {
    let mut run = Run::prepare(&req)?;
    while run.step < run.last_step {
        let stats = run.step()?;
        run.after_step(&req, stats)?;
    }
    run.finish(&req)
}

/// sha256 of the settings a resumed run must share with the run it continues: the resolved config
/// less what only says when to stop, evaluate, save or log.
pub fn resume_fingerprint(cfg: &TrainConfig, trainable: Trainable) -> String {
    let mut v = serde_json::to_value(cfg).expect("the config serializes");
    if let Some(m) = v.as_object_mut() {
        for k in ["max_steps", "eval_every", "eval_max_pairs", "save_every", "keep_checkpoints", "log_every"] {
            m.remove(k);
        }
        m.insert("trainable".into(), format!("{trainable:?}").into());
    }
    rmtrain_core::sha256_bytes(v.to_string().as_bytes())
}

/// [`resume_fingerprint`], plus the content of MetaRM's meta set when the run has one (its path
/// alone is in the config; a rewritten file is another run).
fn run_fingerprint(cfg: &TrainConfig, trainable: Trainable) -> Result<String, TrainError> {
    let settings = resume_fingerprint(cfg, trainable);
    match &cfg.metarm {
        Some(m) => {
            let meta = rmtrain_core::sha256_file(&m.meta_data).map_err(|e| TrainError::Config(format!("train.metarm.meta_data: {e}")))?;
            Ok(rmtrain_core::sha256_bytes(format!("{settings}+meta:{meta}").as_bytes()))
        }
        None => Ok(settings),
    }
}

/// What differs between a checkpoint's state and the run `req` asks for (empty = resumable).
fn resume_mismatches(state: &TrainerState, req: &TrainRequest, init_sha: &str, config_sha: &str) -> Vec<&'static str> {
    // A checkpoint past this run's last step (max_steps lowered since) cannot be continued.
    let last_step = req.config.max_steps.map_or(state.total_steps, |m| m.min(state.total_steps));
    [
        ("step (the checkpoint is past this run's max_steps)", state.step > last_step),
        ("seed", state.seed != req.config.seed),
        ("train data", state.train_data_sha256 != req.train_data_sha256),
        ("init weights", state.init_weights_sha256 != init_sha),
        ("training settings", state.config_sha256 != config_sha),
    ]
    .into_iter()
    .filter(|(_, differs)| *differs)
    .map(|(what, _)| what)
    .collect()
}

/// The checkpoint a `--resume` continues (its state and folder), refused when it is not a stop of
/// this run; for a fresh run, None, and the run folder is cleared of an earlier run's traces.
fn resume_point(req: &TrainRequest, init_sha: &str, config_sha: &str) -> Result<Option<(TrainerState, PathBuf)>, TrainError> {
    if !req.resume {
        // A fresh run into a used folder starts clean: old checkpoints would otherwise be pruned
        // against (or resumed in place of) this run's, metrics.jsonl would mix two runs, and an
        // old model/ would survive a run that fails.
        let _ = std::fs::remove_dir_all(checkpoint::checkpoints_dir(&req.out));
        let _ = std::fs::remove_file(req.out.join("metrics.jsonl"));
        let _ = std::fs::remove_dir_all(req.out.join("model"));
        return Ok(None);
    }
    let Some((_, dir)) = checkpoint::list_checkpoints(&req.out).pop() else {
        return Err(TrainError::Config(format!("--resume: no checkpoint under {}", checkpoint::checkpoints_dir(&req.out).display())));
    };
    let state = checkpoint::read_state(&dir)?;
    let what = resume_mismatches(&state, req, init_sha, config_sha);
    if !what.is_empty() {
        return Err(TrainError::State {
            path: dir.join(STATE_DIR).join(TRAINER_STATE_FILE),
            message: format!("--resume: {} differ from the run being resumed", what.join(", ")),
        });
    }
    Ok(Some((state, dir)))
}

/// Whether the newest checkpoint in `req.out` is a stop of exactly the run `req` asks for (same
/// seed, data, init weights and settings), so resuming it continues that run. A checkpoint of
/// other settings (a recipe changed since) is not: the run must start fresh.
pub fn can_resume(req: &TrainRequest) -> Result<bool, TrainError> {
    let Some((_, dir)) = checkpoint::list_checkpoints(&req.out).pop() else { return Ok(false) };
    let Ok(state) = checkpoint::read_state(&dir) else { return Ok(false) };
    let init_sha = rmtrain_models::hf::weights_sha256(&req.init)?;
    Ok(resume_mismatches(&state, req, &init_sha, &run_fingerprint(&req.config, req.trainable)?).is_empty())
}

/// The pairs of each epoch in the order they are used: a seeded permutation, or the file order.
/// With `group_by_length`, each run of [`LENGTH_GROUP_BATCHES`] batches of that order is sorted by
/// length, longest first (transformers' `group_by_length`: its LengthGroupedSampler's megabatches),
/// so a batch holds pairs of similar length and pays for little padding; which pairs share a
/// megabatch is still the seeded draw, and the order is a function of (seed, epoch) alone.
pub fn epoch_order(encoded: &[EncodedPair], cfg: &TrainConfig, epoch: u64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..encoded.len()).collect();
    if cfg.shuffle {
        let seed = cfg.data_seed.unwrap_or(cfg.seed);
        order.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(mix_seed(seed, 0xDA7A, epoch)));
    }
    if cfg.group_by_length {
        // A pair's chosen and rejected texts are padded together: its length is the longer one.
        let len = |i: usize| encoded[i].0.len().max(encoded[i].1.len());
        for mega in order.chunks_mut(cfg.batch_size * LENGTH_GROUP_BATCHES) {
            mega.sort_by_key(|&i| std::cmp::Reverse(len(i)));
        }
    }
    order
}

/// Batches per length-sorted megabatch (transformers' `mega_batch_mult` default).
const LENGTH_GROUP_BATCHES: usize = 50;

/// The meta groups of optimizer step `step` (0-based): consecutive runs of `per_step` groups of a
/// seeded permutation of the meta set, a new permutation each time the set is used up, so the
/// groups of any step follow from the seed alone (resume draws what the uninterrupted run drew).
fn meta_batch(n: usize, per_step: usize, seed: u64, step: u64) -> Vec<usize> {
    let per_step = per_step.min(n) as u64;
    let pass = |cycle: u64| {
        let mut order: Vec<usize> = (0..n).collect();
        order.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(mix_seed(seed, 0x3E7A, cycle)));
        order
    };
    let mut current: Option<(u64, Vec<usize>)> = None;
    (step * per_step..(step + 1) * per_step)
        .map(|pos| {
            let cycle = pos / n as u64;
            if current.as_ref().is_none_or(|(c, _)| *c != cycle) {
                current = Some((cycle, pass(cycle)));
            }
            current.as_ref().expect("set above").1[(pos % n as u64) as usize]
        })
        .collect()
}

/// θ + η·g as new autodiff leaves with the same parameter ids (parameters without a gradient
/// are kept as they are), so gradients taken at the result map back onto θ's parameters.
fn ascend<M: Module>(model: &M, grads: &GradientsParams, eta: f64) -> M {
    struct Ascend<'a> {
        grads: &'a GradientsParams,
        eta: f64,
    }
    impl ModuleMapper for Ascend<'_> {
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
            let grad = self.grads.get::<D>(param.id);
            param.map(|t| {
                let inner = t.inner();
                let moved = match grad {
                    Some(g) => inner + g.mul_scalar(self.eta),
                    None => inner,
                };
                Tensor::<D>::from_inner(moved).require_grad()
            })
        }
    }
    model.clone().map(&mut Ascend { grads, eta })
}

/// Named values for the metrics log.
type MetricValues = Vec<(&'static str, f64)>;

/// What one optimizer step measured.
struct StepStats {
    lr: f64,
    grad_norm: f64,
    tokens: usize,
    seconds: f64,
}

/// Everything a run carries from one step to the next.
struct Run {
    cfg: TrainConfig,
    /// Config, tokenizer and source folder of the model; its `net` is replaced by the trained one
    /// whenever a model is needed (evaluation, saving).
    template: RewardModel,
    model: Trained,
    optim: ModuleOptimizer,
    /// The train pairs in use, after the strength-based flip.
    pairs: Vec<Pair>,
    /// MetaRM's meta set: each group's token ids.
    meta: Vec<Vec<Vec<u32>>>,
    /// Autodiff wrapper of the request's device.
    ad: Device,
    /// `ad`, then the autodiff wrappers of the request's replica devices.
    devices: Vec<Device>,
    /// Token ids of (chosen, rejected) of every train pair in use.
    encoded: Vec<EncodedPair>,
    truncated_pairs: usize,
    /// Only these parameters learn (the head, for a linear probe); None = all.
    trainable_ids: Option<Vec<ParamId>>,
    step: u64,
    /// The step this process started from (0, or the resumed checkpoint's).
    start_step: u64,
    last_step: u64,
    total_steps: u64,
    steps_per_epoch: u64,
    warmup: u64,
    order: Vec<usize>,
    order_epoch: u64,
    init_sha: String,
    config_sha: String,
    log: MetricsLog,
    window: Window,
    bar: indicatif::ProgressBar,
    started: Instant,
}

impl Run {
    /// Resume from the newest checkpoint (refusing one of other settings) or start from the init
    /// folder; encode the pairs; build AdamW with transformers' no-decay group.
    fn prepare(req: &TrainRequest) -> Result<Self, TrainError> {
        let cfg = req.config.clone();
        cfg.validate().map_err(TrainError::Config)?;
        let started = Instant::now();
        let ad = req.device.clone().autodiff();
        ad.seed(mix_seed(cfg.seed, 0x1417, 0)); // a new head's init (dropout uses DropoutRng, per step)
        let devices: Vec<Device> = std::iter::once(ad.clone()).chain(req.replica_devices.iter().map(|d| d.clone().autodiff())).collect();
        if devices.len() > cfg.replicas.max(1) {
            return Err(TrainError::Config(format!("train.replicas = {} is fewer than the {} devices to train on: set replicas to at least {}", cfg.replicas, devices.len(), devices.len())));
        }

        let init_sha = rmtrain_models::hf::weights_sha256(&req.init)?;
        let config_sha = run_fingerprint(&cfg, req.trainable)?;
        checkpoint::sweep_run_folder(&req.out)?;
        let resume = resume_point(req, &init_sha, &config_sha)?;
        let load_dir = resume.as_ref().map_or(req.init.clone(), |(_, dir)| dir.clone());
        let rm = RewardModel::load_with_dropout(&load_dir, cfg.max_length, &ad, cfg.dropout)?;
        for note in &rm.notes.ignored {
            eprintln!("rmtrain: info: {}: ignored {note}", load_dir.display());
        }
        if req.progress && !rm.notes.initialised.is_empty() {
            eprintln!("train: {}: initialised {} (seed {})", load_dir.display(), rm.notes.initialised.join(", "), cfg.seed);
        }
        if req.trainable == Trainable::HeadOnly && (cfg.metarm.is_some() || cfg.loss.contrastive.is_some()) {
            return Err(TrainError::Config("train.metarm and train.loss.contrastive train the backbone: not available for a head-only (linear probe) run".into()));
        }
        let prototypes = match &cfg.loss.contrastive {
            Some(c) if c.kind == ContrastiveKind::Swav => Some(match &resume {
                Some((_, dir)) => read_prototypes(&dir.join(STATE_DIR).join(PROTOTYPES_FILE), [c.prototypes(), rm.net.feature_dim()], &ad)?,
                None => new_prototypes(c.prototypes(), rm.net.feature_dim(), cfg.seed, &ad),
            }),
            _ => None,
        };
        let model = Trained { net: rm.net.clone(), prototypes };

        let (pairs, flipped) = prepare_pairs(&cfg, &req.train_pairs)?;
        if pairs.is_empty() {
            return Err(TrainError::Config("no train pairs".into()));
        }
        let meta = match &cfg.metarm {
            Some(m) => encode_meta(&rm.tokenizer, &rmtrain_data::read_meta_groups(&m.meta_data).map_err(|e| TrainError::Config(format!("train.metarm.meta_data: {e}")))?)?,
            None => Vec::new(),
        };
        let (encoded, truncated_pairs) = encode_pairs(&rm.tokenizer, &pairs)?;
        let steps_per_epoch = pairs.len().div_ceil(cfg.batch_size) as u64;
        let total_steps = steps_per_epoch * cfg.epochs as u64;
        let last_step = cfg.max_steps.map_or(total_steps, |m| m.min(total_steps));
        let warmup = warmup_steps(cfg.warmup_ratio, cfg.warmup_steps, total_steps);

        let mut optim = adamw_with_no_decay_group(&cfg, &model);
        let trainable_ids = (req.trainable == Trainable::HeadOnly).then(|| model.net.head_param_ids());

        let mut step = 0u64;
        if let Some((state, dir)) = &resume {
            optim = checkpoint::load_optimizer(optim, dir)?;
            step = state.step;
            MetricsLog::truncate_after(&req.out.join("metrics.jsonl"), step)?;
        }
        let mut log = MetricsLog::append(&req.out.join("metrics.jsonl"))?;
        log.log(&serde_json::json!({
            "step": step, "event": if step > 0 { "resume" } else { "start" },
            "train_pairs": pairs.len(), "truncated_pairs": truncated_pairs, "max_length": cfg.max_length,
            "flipped_by_strength": flipped, "meta_groups": meta.len(),
        }))?;
        if req.progress && cfg.flip.is_some() {
            eprintln!("train: flipped {flipped} of {} pairs by preference strength", pairs.len());
        }
        if truncated_pairs > 0 && req.progress {
            eprintln!(
                "train: {truncated_pairs} of {} train pairs have a side longer than max_length = {} tokens: trained on truncated (cut from the right; TRL would drop them)",
                pairs.len(),
                cfg.max_length
            );
        }
        let bar = rmtrain_core::progress_bar(req.progress, "train", "steps", last_step, step);
        let order_epoch = step / steps_per_epoch;
        let order = epoch_order(&encoded, &cfg, order_epoch);
        Ok(Self {
            template: rm,
            model,
            optim,
            pairs,
            meta,
            ad,
            devices,
            encoded,
            truncated_pairs,
            trainable_ids,
            step,
            start_step: step,
            last_step,
            total_steps,
            steps_per_epoch,
            warmup,
            order,
            order_epoch,
            init_sha,
            config_sha,
            log,
            window: Window::default(),
            bar,
            started,
            cfg,
        })
    }

    /// Replica `k`'s gradients on the model's device (moved there when the replica ran on
    /// another device).
    fn on_main_device(&self, k: usize, grads: GradientsParams) -> GradientsParams {
        if replica_device(&self.devices, k) == &self.ad { grads } else { grads.to_device(&self.ad, &self.model) }
    }

    /// One optimizer step: every micro-batch's pairs split over replicas (forward + backward in
    /// parallel threads, gradients summed in replica order), then clip, guard, AdamW.
    fn step(&mut self) -> Result<StepStats, TrainError> {
        let cfg = &self.cfg;
        let epoch = self.step / self.steps_per_epoch;
        if epoch != self.order_epoch {
            self.order = epoch_order(&self.encoded, cfg, epoch);
            self.order_epoch = epoch;
        }
        let pos = (self.step % self.steps_per_epoch) as usize;
        let batch: Vec<usize> = self.order[pos * cfg.batch_size..((pos + 1) * cfg.batch_size).min(self.encoded.len())].to_vec();
        let lr = learning_rate(cfg.schedule, cfg.lr, self.step, self.warmup, self.total_steps);
        let tick = Instant::now();
        let micro = cfg.batch_size / cfg.grad_accum;
        let replicas = cfg.replicas.max(1);
        let mut accumulator = GradientsAccumulator::new();
        let mut tokens = 0usize;
        let mut loss_sum = 0.0;
        let ctx = ReplicaCtx {
            cfg,
            tokenizer: &self.template.tokenizer,
            encoded: &self.encoded,
            trainable_ids: self.trainable_ids.as_deref(),
            devices: &self.devices,
            pairs: &self.pairs,
            batch_len: batch.len(),
        };
        // MetaRM: the Bradley–Terry gradient is taken at θ' = θ + η·∇J, then applied to θ.
        let adapted = match &cfg.metarm {
            Some(meta) => {
                let (adapted, stats) = self.meta_ascent(meta, &ctx)?;
                for (k, v) in stats {
                    self.window.extra(k, v);
                }
                Some(adapted)
            }
            None => None,
        };
        let at = adapted.as_ref().unwrap_or(&self.model);
        let mut contrastive_sum: Option<f64> = None;
        for (m, chunk) in batch.chunks(micro).enumerate() {
            let parts: Vec<&[usize]> = split_even(chunk, replicas);
            let step = self.step;
            let results = run_replicas_on(at, &self.devices, parts.len(), |k, model| {
                ctx.forward_backward(&model, k, parts[k], mix_seed(cfg.seed, step + 1, (m * replicas + k) as u64))
            });
            for (k, r) in results.into_iter().enumerate() {
                accumulator.accumulate(&self.model, self.on_main_device(k, r.grads));
                self.window.add(r.loss_times_n, &r.r_chosen, &r.r_rejected);
                if let Some(cl) = r.contrastive_times_n {
                    *contrastive_sum.get_or_insert(0.0) += cl;
                }
                loss_sum += r.loss_times_n;
                tokens += r.tokens;
            }
        }
        if let Some(cl) = contrastive_sum {
            self.window.extra("contrastive_loss", cl / batch.len() as f64);
        }
        let mut grads = accumulator.grads();
        let grad_norm = clip_global_norm(&self.model, &mut grads, cfg.clip_norm());
        // A non-finite loss or gradient would write NaN into every weight: stop before the step.
        let loss = loss_sum / batch.len() as f64;
        for (what, value) in [("loss", loss), ("gradient norm", grad_norm)] {
            if !value.is_finite() {
                return Err(TrainError::NonFinite { step: self.step + 1, what: what.into(), value });
            }
        }
        self.model = self.optim.step(lr, self.model.clone(), grads);
        self.step += 1;
        Ok(StepStats { lr, grad_norm, tokens, seconds: tick.elapsed().as_secs_f64() })
    }

    /// MetaRM's inner step (Algorithm 1, lines 3–5): J and ∇J on this step's meta groups at θ,
    /// θ' = θ + η·∇J (a plain gradient step: no optimizer, no clipping), and J again at θ'.
    /// Returns θ' and what to log: J before and after, ‖∇J‖ and ‖θ' − θ‖ = η·‖∇J‖.
    fn meta_ascent(&self, meta: &crate::config::MetaRmConfig, ctx: &ReplicaCtx) -> Result<(Trained, MetricValues), TrainError> {
        let groups = meta_batch(self.meta.len(), meta.groups_per_step, self.cfg.data_seed.unwrap_or(self.cfg.seed), self.step);
        let parts = split_even(&groups, self.cfg.replicas.max(1));
        let results = run_replicas_on(&self.model, &self.devices, parts.len(), |k, model| ctx.meta_forward_backward(&model, k, &self.meta, parts[k], groups.len()));
        let mut accumulator = GradientsAccumulator::new();
        let mut j_before = 0.0;
        for (k, (grads, j)) in results.into_iter().enumerate() {
            accumulator.accumulate(&self.model, self.on_main_device(k, grads));
            j_before += j;
        }
        let mut grads = accumulator.grads();
        let grad_norm = clip_global_norm(&self.model, &mut grads, None);
        if !(j_before.is_finite() && grad_norm.is_finite()) {
            return Err(TrainError::NonFinite { step: self.step + 1, what: "MetaRM difference loss or its gradient".into(), value: j_before + grad_norm });
        }
        let adapted = ascend(&self.model, &grads, meta.eta);
        let j_after = groups_difference_loss(&adapted.valid().net, &self.template.tokenizer, &self.meta, &groups, &self.ad.clone().inner())
            .into_scalar::<f32>() as f64
            / groups.len() as f64;
        Ok((adapted, vec![("metarm_j_before", j_before), ("metarm_j_after", j_after), ("metarm_grad_norm", grad_norm), ("metarm_step_norm", meta.eta * grad_norm)]))
    }

    /// The metrics line, the periodic evaluation and the checkpoint due after a step.
    fn after_step(&mut self, req: &TrainRequest, stats: StepStats) -> Result<(), TrainError> {
        let cfg = &self.cfg;
        let step = self.step;
        self.window.finish_step(stats.grad_norm, stats.tokens, stats.seconds);
        if step.is_multiple_of(cfg.log_every.max(1)) || step == self.last_step {
            let mut record = self.window.drain();
            record.insert("step".into(), step.into());
            record.insert("epoch".into(), serde_json::json!(step as f64 / self.steps_per_epoch as f64));
            record.insert("lr".into(), stats.lr.into());
            let get = |k: &str| record.get(k).and_then(|v| v.as_f64()).unwrap_or(f64::NAN);
            self.bar.set_message(format!("loss {:.4} acc {:.3}", get("loss"), get("accuracy")));
            self.log.log(&serde_json::Value::Object(record))?;
        }
        if cfg.eval_every > 0 && step.is_multiple_of(cfg.eval_every) && step < self.last_step && !req.evals.is_empty() {
            let rm = self.template.with_net(self.model.net.clone());
            let mut record = serde_json::Map::new();
            record.insert("step".into(), step.into());
            for (name, set) in &req.evals {
                let set = &set[..cfg.eval_max_pairs.map_or(set.len(), |m| m.min(set.len()))];
                let m = evaluate_pairs_with_model(&rm, set, &ScoreOptions::default(), cfg.seed)?;
                record.insert(format!("eval_{name}_accuracy"), m.accuracy.into());
                record.insert(format!("eval_{name}_ece"), m.ece.into());
                record.insert(format!("eval_{name}_margin"), m.mean_margin.into());
            }
            self.log.log(&serde_json::Value::Object(record))?;
        }
        // The last step's checkpoint is written by `finish`, once the final rewards are known finite.
        if cfg.save_every > 0 && step.is_multiple_of(cfg.save_every) && step < self.last_step {
            self.save_checkpoint(req)?;
        }
        self.bar.inc(1);
        Ok(())
    }

    /// `checkpoints/step-N/`: the HF folder, the manifest and `state/` (optimizer, trainer state),
    /// written atomically; older checkpoints beyond `keep_checkpoints` are pruned.
    fn save_checkpoint(&self, req: &TrainRequest) -> Result<(), TrainError> {
        if let Some(name) = first_non_finite_param(&self.model.net) {
            return Err(TrainError::NonFinite { step: self.step, what: format!("weights ({name})"), value: f64::NAN });
        }
        let dir = AtomicDir::new(&checkpoint::step_dir(&req.out, self.step))?;
        self.template.with_net(self.model.net.clone()).save_hf(dir.path())?;
        self.manifest(req, serde_json::Value::Null).write(dir.path())?;
        std::fs::create_dir_all(dir.path().join(STATE_DIR)).map_err(|e| rmtrain_core::CoreError::io(dir.path(), e))?;
        if let Some(p) = &self.model.prototypes {
            write_prototypes(&dir.path().join(STATE_DIR).join(PROTOTYPES_FILE), p)?;
        }
        let state = TrainerState {
            step: self.step,
            total_steps: self.total_steps,
            epoch: self.step / self.steps_per_epoch,
            position_in_epoch: self.step % self.steps_per_epoch,
            seed: self.cfg.seed,
            train_data_sha256: req.train_data_sha256.clone(),
            init_weights_sha256: self.init_sha.clone(),
            config_sha256: self.config_sha.clone(),
        };
        checkpoint::write_state(dir.path(), &self.optim, &state)?;
        dir.commit()?;
        checkpoint::prune(&req.out, self.cfg.keep_checkpoints);
        Ok(())
    }

    fn manifest(&self, req: &TrainRequest, final_metrics: serde_json::Value) -> Manifest {
        Manifest {
            rmtrain_version: env!("CARGO_PKG_VERSION").into(),
            kind: "train".into(),
            recipe: req.recipe.clone(),
            seed: self.cfg.seed,
            step: self.step,
            train_data_sha256: req.train_data_sha256.clone(),
            init_weights_sha256: Some(self.init_sha.clone()),
            pooling: self.model.net.pooling().name().into(),
            final_metrics,
            max_length: Some(self.cfg.max_length),
            train_config: serde_json::to_value(&self.cfg).expect("the config serializes"),
            ..Default::default()
        }
    }

    /// Final evaluation on the full eval sets, reward statistics for ensembles, the `model/` folder.
    fn finish(self, req: &TrainRequest) -> Result<TrainOutcome, TrainError> {
        self.bar.finish_and_clear();
        let rm = self.template.with_net(self.model.net.valid());
        // Weights can be finite yet overflow in the forward: check the rewards before anything
        // of this state is saved.
        let (mean, std) = reward_stats(&rm, &self.pairs, &ScoreOptions::default())?;
        if !(mean.is_finite() && std.is_finite()) {
            return Err(TrainError::NonFinite { step: self.step, what: "rewards of the final model".into(), value: mean });
        }
        // `after_step` leaves the last step's checkpoint to here; a run resumed at its last step
        // has it already.
        if self.step > self.start_step {
            self.save_checkpoint(req)?;
        }
        let mut final_metrics = serde_json::Map::new();
        let mut final_eval = Vec::new();
        for (name, set) in &req.evals {
            let m = evaluate_pairs_with_model(&rm, set, &ScoreOptions::default(), self.cfg.seed)?;
            final_metrics.insert(name.clone(), serde_json::to_value(&m).expect("metrics serialize"));
            final_eval.push((name.clone(), m));
        }
        let final_metrics = serde_json::Value::Object(final_metrics);
        let model_dir = req.out.join("model");
        let dir = AtomicDir::new(&model_dir)?;
        rm.save_hf(dir.path())?;
        let mut manifest = self.manifest(req, final_metrics.clone());
        manifest.reward_mean = Some(mean);
        manifest.reward_std = Some(std);
        manifest.write(dir.path())?;
        dir.commit()?;
        let wall_seconds = self.started.elapsed().as_secs_f64();
        let mut log = self.log;
        log.log(&serde_json::json!({"step": self.step, "final": final_metrics, "wall_seconds": wall_seconds}))?;
        Ok(TrainOutcome { model_dir, final_eval, steps: self.step, final_metrics, wall_seconds, truncated_pairs: self.truncated_pairs })
    }
}

/// Token ids of a pair's chosen and rejected texts.
pub type EncodedPair = (Vec<u32>, Vec<u32>);

/// Token ids of (chosen, rejected) of every pair, and how many pairs had a side truncated.
pub fn encode_pairs(tokenizer: &rmtrain_models::RmTokenizer, pairs: &[Pair]) -> Result<(Vec<EncodedPair>, usize), TrainError> {
    let mut truncated_pairs = 0;
    let mut encoded = Vec::with_capacity(pairs.len());
    for p in pairs {
        let (chosen, cut_c) = tokenizer.encode_counting(&p.chosen_text())?;
        let (rejected, cut_r) = tokenizer.encode_counting(&p.rejected_text())?;
        truncated_pairs += usize::from(cut_c || cut_r);
        encoded.push((chosen, rejected));
    }
    Ok((encoded, truncated_pairs))
}

/// AdamW as transformers' Trainer builds it: weight decay on every parameter except those
/// [`rmtrain_models::is_no_decay`] names (biases, norm weights), which form a group without it.
fn adamw_with_no_decay_group(cfg: &TrainConfig, model: &Trained) -> ModuleOptimizer {
    // SwAV's prototypes are L2-normalised in the loss: decay would only shrink their raw norm.
    let mut no_decay = model.net.no_decay_param_ids();
    no_decay.extend(model.prototypes.as_ref().map(|p| p.id));
    checkpoint::adamw_groups((cfg.adam_beta1, cfg.adam_beta2), cfg.adam_epsilon, cfg.weight_decay, no_decay)
}

/// The train pairs in use: the first `max_train_pairs`, flipped by strength when `train.flip`
/// asks; every pair carries its μ̂ when a strength-based option needs it. Returns the pairs and
/// how many were flipped.
fn prepare_pairs(cfg: &TrainConfig, all: &[Pair]) -> Result<(Vec<Pair>, usize), TrainError> {
    let mut pairs = all[..cfg.max_train_pairs.map_or(all.len(), |n| n.min(all.len()))].to_vec();
    if cfg.reads_strength() && let Some(p) = pairs.iter().find(|p| !p.strength.is_some_and(f64::is_finite)) {
        return Err(TrainError::TrainPair {
            line: p.line,
            message: "field \"strength_mean\": missing or not finite; train.flip, train.loss.adaptive_margin and smoothing_pairs = \"negative_strength\" need the preference strength of every pair (run `rmtrain strength`, or a recipe's [strength] stage)".into(),
        });
    }
    let flipped = match &cfg.flip {
        Some(f) => {
            let rule = f.rule().map_err(TrainError::Config)?;
            rmtrain_data::flip_by_strength(&mut pairs, rule).map_err(|e| TrainError::Config(e.to_string()))?.len()
        }
        None => 0,
    };
    Ok((pairs, flipped))
}

/// Token ids of every meta group's texts.
fn encode_meta(tokenizer: &rmtrain_models::RmTokenizer, groups: &[MetaGroup]) -> Result<Vec<Vec<Vec<u32>>>, TrainError> {
    groups
        .iter()
        .map(|g| g.texts().iter().map(|t| Ok(tokenizer.encode_counting(t)?.0)).collect::<Result<Vec<_>, TrainError>>())
        .collect()
}

/// SwAV's prototypes [K, d]: standard normal (Box–Muller), drawn from a ChaCha8 generator of the
/// run's seed alone, so they do not depend on what else drew from Burn's global generator.
fn new_prototypes(k: usize, d: usize, seed: u64, device: &Device) -> Param<Tensor<2>> {
    use rand::Rng;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(mix_seed(seed, 0x5A7A, 0));
    let values: Vec<f32> = (0..k * d)
        .map(|_| {
            let (u1, u2): (f64, f64) = (1.0 - rng.random::<f64>(), rng.random::<f64>());
            ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
        })
        .collect();
    let t = Tensor::<2>::from_data(TensorData::new(values, [k, d]), device);
    Param::initialized(ParamId::from(PROTOTYPES_ID), t.require_grad())
}

fn write_prototypes(path: &std::path::Path, p: &Param<Tensor<2>>) -> Result<(), TrainError> {
    let dims = p.val().dims();
    let values = p.val().into_data().convert::<f32>().try_to_vec::<f32>().expect("f32 values");
    rmtrain_core::write_json_atomic(path, &serde_json::json!({"shape": dims, "values": values}))?;
    Ok(())
}

fn read_prototypes(path: &std::path::Path, want: [usize; 2], device: &Device) -> Result<Param<Tensor<2>>, TrainError> {
    let bad = |message: String| TrainError::State { path: path.to_path_buf(), message };
    let text = std::fs::read_to_string(path).map_err(|e| bad(format!("cannot read SwAV prototypes: {e}")))?;
    #[derive(serde::Deserialize)]
    struct Stored {
        shape: [usize; 2],
        values: Vec<f32>,
    }
    let s: Stored = serde_json::from_str(&text).map_err(|e| bad(format!("invalid prototypes: {e}")))?;
    if s.values.len() != s.shape[0] * s.shape[1] || s.shape != want {
        return Err(bad(format!("{} values of shape {:?}; this run needs [prototypes, feature width] = {want:?}", s.values.len(), s.shape)));
    }
    let t = Tensor::<2>::from_data(TensorData::new(s.values, s.shape), device);
    Ok(Param::initialized(ParamId::from(PROTOTYPES_ID), t.require_grad()))
}

/// What every replica of a step reads (shared by reference across the replica threads).
struct ReplicaCtx<'a> {
    cfg: &'a TrainConfig,
    tokenizer: &'a rmtrain_models::RmTokenizer,
    encoded: &'a [EncodedPair],
    trainable_ids: Option<&'a [ParamId]>,
    /// The autodiff devices replicas run on ([`replica_device`]); the first is the model's.
    devices: &'a [Device],
    pairs: &'a [Pair],
    /// Pairs in the whole optimizer step.
    batch_len: usize,
}

impl ReplicaCtx<'_> {
    /// Forward + backward of one replica's share `part` of the step's pairs. With a contrastive
    /// loss, two forwards with independent dropout masks (the views s, t): the RM loss is the mean
    /// over both views and β·L_cl is added (Secrets of RLHF II §3.1.2); the contrastive batch is
    /// this replica's share of the pairs (as a per-device loss without gathering).
    fn forward_backward(&self, model: &Trained, k: usize, part: &[usize], dropout_seed: u64) -> ReplicaResult {
        let device = replica_device(self.devices, k);
        let seqs: Vec<&[u32]> =
            part.iter().map(|&i| self.encoded[i].0.as_slice()).chain(part.iter().map(|&i| self.encoded[i].1.as_slice())).collect();
        let b = self.tokenizer.collate(&seqs);
        let (ids, mask) = b.to_tensors(device);
        let n = part.len();
        // `rm_loss` is what is logged as `loss`: the RM loss alone (over both views), comparable
        // across arms; the contrastive term is logged apart, unweighted.
        let (loss, rm_loss, r_c, r_r, contrastive_loss) = match &self.cfg.loss.contrastive {
            None => {
                let mut rng = DropoutRng::new(dropout_seed);
                // [2 · pairs]: chosen then rejected
                let rewards = match self.trainable_ids {
                    Some(_) => model.net.forward_frozen_backbone(ids, mask, Some(&mut rng)),
                    None => model.net.forward_with(ids, mask, Some(&mut rng)),
                };
                let r_c = rewards.clone().narrow(0, 0, n);
                let r_r = rewards.narrow(0, n, n);
                let loss = pair_loss(self.cfg, r_c.clone(), r_r.clone(), part, self.pairs, device);
                (loss.clone(), loss, r_c, r_r, None)
            }
            Some(c) => {
                let views: Vec<(Tensor<1>, Tensor<2>)> = (0..2u64)
                    .map(|v| {
                        let mut rng = DropoutRng::new(if v == 0 { dropout_seed } else { mix_seed(dropout_seed, 0xC0DE, v) });
                        model.net.forward_features(ids.clone(), mask.clone(), Some(&mut rng))
                    })
                    .collect();
                let mut rm = Vec::with_capacity(2);
                let mut h = Vec::with_capacity(2);
                for (rewards, f) in &views {
                    rm.push(pair_loss(self.cfg, rewards.clone().narrow(0, 0, n), rewards.clone().narrow(0, n, n), part, self.pairs, device));
                    h.push(contrastive::instances(f.clone().narrow(0, 0, n), f.clone().narrow(0, n, n), c.samples));
                }
                let cl = contrastive_loss(c, h.swap_remove(0), h.swap_remove(0), model.prototypes.as_ref());
                let rm = (rm.swap_remove(0) + rm.swap_remove(0)).div_scalar(2.0);
                let (rewards, _) = &views[0];
                let loss = rm.clone() + cl.clone().mul_scalar(c.beta);
                (loss, rm, rewards.clone().narrow(0, 0, n), rewards.clone().narrow(0, n, n), Some(cl))
            }
        };
        // Parts are weighted by their share of the step (the last may be short).
        let mut grads = loss.clone().mul_scalar(n as f64 / self.batch_len as f64).backward();
        let grads = match self.trainable_ids {
            Some(ids) => GradientsParams::from_params(&mut grads, model, ids),
            None => GradientsParams::from_grads(grads, model),
        };
        let cl = contrastive_loss.map(|cl| cl.into_scalar::<f32>() as f64);
        let loss = rm_loss.into_scalar::<f32>() as f64;
        ReplicaResult {
            grads,
            loss_times_n: loss * n as f64,
            contrastive_times_n: cl.map(|x| x * n as f64),
            r_chosen: to_vec(r_c),
            r_rejected: to_vec(r_r),
            tokens: b.num_tokens(),
        }
    }

    /// MetaRM's difference loss J over `groups` of the meta set (their share of the step's
    /// `total` groups, so the replicas' parts sum to the mean over groups), its gradient, and J's
    /// value times that share. Dropout is off: J measures how far apart the model puts a group's
    /// responses, not the noise of dropout.
    fn meta_forward_backward(&self, model: &Trained, k: usize, meta: &[Vec<Vec<u32>>], groups: &[usize], total: usize) -> (GradientsParams, f64) {
        let j = groups_difference_loss(&model.net, self.tokenizer, meta, groups, replica_device(self.devices, k)).div_scalar(total as f64);
        let value = j.clone().into_scalar::<f32>() as f64;
        (GradientsParams::from_grads(j.backward(), model), value)
    }
}

/// Σ of J over `groups` of the meta set, from one forward (no dropout) of all their texts on
/// `device`: the ascent's objective and, at θ', the logged J after the inner step.
fn groups_difference_loss(net: &RewardNetwork, tokenizer: &rmtrain_models::RmTokenizer, meta: &[Vec<Vec<u32>>], groups: &[usize], device: &Device) -> Tensor<1> {
    let seqs: Vec<&[u32]> = groups.iter().flat_map(|&g| meta[g].iter().map(Vec::as_slice)).collect();
    let (ids, mask) = tokenizer.collate(&seqs).to_tensors(device);
    let rewards = net.forward_with(ids, mask, None);
    let mut start = 0;
    let mut j = Vec::with_capacity(groups.len());
    for &g in groups {
        let k = meta[g].len();
        j.push(difference_loss(rewards.clone().narrow(0, start, k)));
        start += k;
    }
    Tensor::cat(j, 0).sum()
}

/// MetaRM's difference loss of one group's rewards r [k] (Secrets of RLHF II Eq. 11):
/// J = (2/k²)·Σ_{i<j} σ(|r_i − r_j|), as [1]. The k×k matrix of σ(|r_i − r_j|) counts every pair
/// twice and has σ(0) = ½ on its diagonal, so J = (Σ_all − k/2)/k².
pub fn difference_loss(r: Tensor<1>) -> Tensor<1> {
    let k = r.dims()[0];
    let diff = r.clone().reshape([k, 1]) - r.reshape([1, k]);
    burn::tensor::activation::sigmoid(diff.abs()).sum().sub_scalar(k as f64 / 2.0).div_scalar((k * k) as f64)
}

/// SimCSE or SwAV between the two views' instances.
fn contrastive_loss(c: &ContrastiveConfig, h_s: Tensor<2>, h_t: Tensor<2>, prototypes: Option<&Param<Tensor<2>>>) -> Tensor<1> {
    match c.kind {
        ContrastiveKind::Simcse => contrastive::simcse_loss(h_s, h_t, c.temperature()),
        ContrastiveKind::Swav => {
            let p = prototypes.expect("a SwAV run has prototypes");
            contrastive::swav_loss(h_s, h_t, p.val(), c.temperature(), c.sinkhorn_epsilon, c.sinkhorn_iterations)
        }
    }
}

struct ReplicaResult {
    grads: GradientsParams,
    loss_times_n: f64,
    contrastive_times_n: Option<f64>,
    r_chosen: Vec<f64>,
    r_rejected: Vec<f64>,
    tokens: usize,
}

/// The margin m of a pair in the configured loss: the adaptive margin from its μ̂, or its
/// `margin` field (`use_margin`), or 0.
pub fn pair_margin(cfg: &TrainConfig, pair: &Pair) -> f64 {
    match &cfg.loss.adaptive_margin {
        Some(a) => a.margin(pair.strength.unwrap_or(0.0)),
        None if cfg.loss.use_margin => pair.margin.unwrap_or(0.0),
        None => 0.0,
    }
}

/// The label smoothing α of a pair: `label_smoothing` on the pairs `smoothing_pairs` selects, else 0.
pub fn pair_alpha(cfg: &TrainConfig, pair: &Pair) -> f64 {
    match (cfg.loss.label_smoothing, cfg.loss.smoothing_pairs) {
        (Some(a), SmoothingPairs::All) => a,
        (Some(a), SmoothingPairs::NegativeStrength) if pair.strength.is_some_and(|s| s < 0.0) => a,
        _ => 0.0,
    }
}

/// The configured loss on one micro-batch: z = Δ − m with each pair's [`pair_margin`], smoothed
/// by its [`pair_alpha`], plus reward centering.
fn pair_loss(cfg: &TrainConfig, r_c: Tensor<1>, r_r: Tensor<1>, chunk: &[usize], pairs: &[Pair], device: &Device) -> Tensor<1> {
    let per_pair = |f: &dyn Fn(&Pair) -> f64| {
        let v: Vec<f32> = chunk.iter().map(|&i| f(&pairs[i]) as f32).collect();
        Tensor::<1>::from_data(TensorData::new(v, [chunk.len()]), device)
    };
    let margin = (cfg.loss.adaptive_margin.is_some() || cfg.loss.use_margin).then(|| per_pair(&|p| pair_margin(cfg, p)));
    let alpha = cfg.loss.label_smoothing.filter(|&a| a > 0.0).map(|_| per_pair(&|p| pair_alpha(cfg, p)));
    let mut loss = losses::preference_loss(r_c.clone(), r_r.clone(), margin, alpha);
    if let Some(coef) = cfg.loss.center_rewards_coefficient {
        loss = loss + losses::center_term(r_c, r_r, coef);
    }
    loss
}

/// Splits `items` into `parts` contiguous runs of near-equal length (fewer when items are few).
pub fn split_even(items: &[usize], parts: usize) -> Vec<&[usize]> {
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
/// This is the CPU executor's data parallelism: one model, its batch split over threads.
pub fn run_replicas<M: Module, T: Send>(net: &M, n: usize, work: impl Fn(usize, M) -> T + Sync) -> Vec<T> {
    run_replicas_on(net, &[], n, work)
}

/// The device replica `k` runs on: `devices[k mod n]` (the first is the model's own).
fn replica_device(devices: &[Device], k: usize) -> &Device {
    &devices[k % devices.len()]
}

/// [`run_replicas`] over several devices: replica k runs on `devices[k mod n]` (a fork of `net`
/// there, same parameter ids) when that is not `net`'s device. `devices` empty or of one device:
/// every replica on `net`'s device.
pub fn run_replicas_on<M: Module, T: Send>(net: &M, devices: &[Device], n: usize, work: impl Fn(usize, M) -> T + Sync) -> Vec<T> {
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..n)
            .map(|k| {
                let elsewhere = devices.len() > 1 && replica_device(devices, k) != &devices[0];
                let model = match k {
                    _ if elsewhere => net.clone().fork(replica_device(devices, k)),
                    0 => net.clone(),
                    _ => detached_replica(net),
                };
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
pub fn detached_replica<M: Module>(net: &M) -> M {
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

/// The HF name of the first parameter holding a NaN or an infinity, if any.
fn first_non_finite_param(net: &RewardNetwork) -> Option<String> {
    net.hf_params().into_iter().find_map(|(name, p)| (!p.is_finite()).then_some(name))
}

/// Reward mean and std over the texts of (up to 512) train pairs: the reference statistics used
/// to z-normalise members of a prediction ensemble.
pub fn reward_stats(rm: &RewardModel, pairs: &[Pair], opts: &ScoreOptions) -> Result<(f64, f64), TrainError> {
    let sample = &pairs[..pairs.len().min(512)];
    let (rc, rr) = crate::evaluate::score_pairs(rm, sample, opts)?;
    let all: Vec<f64> = rc.into_iter().chain(rr).collect();
    let mean = all.iter().sum::<f64>() / all.len() as f64;
    let var = all.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / all.len() as f64;
    Ok((mean, var.sqrt()))
}

/// torch `clip_grad_norm_`: the L2 norm over all gradients together; when above `max_norm`,
/// every gradient is scaled by max_norm / (norm + 1e-6). Returns the norm before clipping.
pub fn clip_global_norm<M: Module>(net: &M, grads: &mut GradientsParams, max_norm: Option<f64>) -> f64 {
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
    /// One value per step of the optional methods (MetaRM's J, the contrastive loss): sum and count.
    extras: Vec<(&'static str, f64, usize)>,
}

impl Window {
    fn extra(&mut self, name: &'static str, value: f64) {
        match self.extras.iter_mut().find(|(n, _, _)| *n == name) {
            Some((_, sum, count)) => {
                *sum += value;
                *count += 1;
            }
            None => self.extras.push((name, value, 1)),
        }
    }

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
        let mut out = serde_json::json!({
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
        for (name, sum, count) in &self.extras {
            out[*name] = (sum / *count as f64).into();
        }
        *self = Window::default();
        match out {
            serde_json::Value::Object(m) => m,
            _ => unreachable!("json! of an object literal is an object"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(lengths: &[(usize, usize)]) -> Vec<EncodedPair> {
        lengths.iter().map(|&(c, r)| (vec![1; c], vec![1; r])).collect()
    }

    /// Tokens a step pays for: every batch padded to its longest pair, both sides.
    fn padded_tokens(order: &[usize], e: &[EncodedPair], batch: usize) -> usize {
        order.chunks(batch).map(|b| 2 * b.len() * b.iter().map(|&i| e[i].0.len().max(e[i].1.len())).max().unwrap_or(0)).sum()
    }

    #[test]
    fn length_grouping_reorders_within_megabatches_only_and_cuts_padding() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        let lengths: Vec<(usize, usize)> = (0..1000).map(|_| (rand::Rng::random_range(&mut rng, 5..120), rand::Rng::random_range(&mut rng, 5..120))).collect();
        let e = encoded(&lengths);
        let plain_cfg = TrainConfig { batch_size: 4, seed: 3, ..TrainConfig::default() };
        let grouped_cfg = TrainConfig { group_by_length: true, ..plain_cfg.clone() };
        let plain = epoch_order(&e, &plain_cfg, 2);
        let grouped = epoch_order(&e, &grouped_cfg, 2);
        assert_eq!(grouped, epoch_order(&e, &grouped_cfg, 2), "a function of (seed, epoch)");
        assert_ne!(grouped, epoch_order(&e, &grouped_cfg, 3), "each epoch draws again");
        // The same pairs in each megabatch of 4 · 50 = 200, longest first.
        for (a, b) in plain.chunks(200).zip(grouped.chunks(200)) {
            let (mut a, b2) = (a.to_vec(), b.to_vec());
            a.sort_unstable();
            let mut b_sorted = b2.clone();
            b_sorted.sort_unstable();
            assert_eq!(a, b_sorted);
            let lens: Vec<usize> = b2.iter().map(|&i| lengths[i].0.max(lengths[i].1)).collect();
            assert!(lens.windows(2).all(|w| w[0] >= w[1]), "sorted longest first");
        }
        let (p, g) = (padded_tokens(&plain, &e, 4), padded_tokens(&grouped, &e, 4));
        assert!((g as f64) < 0.8 * p as f64, "padded tokens {p} -> {g}");
        // Off: exactly the seeded permutation.
        assert_eq!(plain, epoch_order(&e, &plain_cfg, 2));
    }
}
