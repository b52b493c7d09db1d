//! Direct Preference Optimization of a causal LM (Rafailov et al. 2023, arXiv 2305.18290), with
//! TRL's loss variants, in the same loop shape as the reward-model trainer: AdamW with
//! transformers' no-decay group, warm-up + decay, global-norm clipping, gradient accumulation,
//! metrics JSONL, checkpoints (HF folders transformers loads as `...ForCausalLM`) and exact resume.
//!
//! With π the policy, π_ref the frozen reference (the init weights), and per pair
//! h = (log π(y_c|x) − log π_ref(y_c|x)) − (log π(y_r|x) − log π_ref(y_r|x)):
//! - `sigmoid` (DPO): −(1 − ε)·log σ(β·h) − ε·log σ(−β·h); ε = `label_smoothing` > 0 is the
//!   conservative DPO of TRL (Mitchell 2023), ε = 0 the paper's loss;
//! - `ipo` (Azar et al. 2023, arXiv 2310.12036): (h − 1/(2β))², with log-probs averaged over each
//!   response's tokens, as TRL computes IPO.
//!
//! Log-probs are sums over the response tokens (the prompt is context only), response = its
//! tokens + the end-of-sequence token (TRL appends EOS to chosen and rejected). The reference's
//! log-probs are computed once, before the first step, with the init weights (no gradient).
//! Dropout is off (TRL's `disable_dropout`). Logged per step, with TRL's names: `loss`,
//! `rewards/chosen` = β·(log π − log π_ref)(y_c), `rewards/rejected`, `rewards/accuracies`
//! (chosen > rejected), `rewards/margins`, `logps/chosen`, `logps/rejected`.

use crate::checkpoint::{self, TrainerState, STATE_DIR, TRAINER_STATE_FILE};
use crate::config::Schedule;
use crate::schedule::{learning_rate, warmup_steps};
use crate::trainer::clip_global_norm;
use crate::TrainError;
use burn::module::Module;
use burn::optim::{GradientsAccumulator, GradientsParams};
use burn::tensor::activation::log_sigmoid;
use burn::tensor::{Device, Tensor, TensorData};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rmtrain_core::{mix_seed, AtomicDir, MetricsLog};
use rmtrain_models::{is_no_decay, response_token_logprobs, CausalLm, LlamaLm};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DpoLoss {
    Sigmoid,
    Ipo,
}

impl std::str::FromStr for DpoLoss {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "sigmoid" => Ok(Self::Sigmoid),
            "ipo" => Ok(Self::Ipo),
            _ => Err(format!("loss {s:?}: expected sigmoid or ipo")),
        }
    }
}

/// DPO's settings (defaults as TRL's `DPOConfig` where it has one).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DpoConfig {
    pub beta: f64,
    pub loss: DpoLoss,
    /// ε of conservative DPO (sigmoid loss only).
    pub label_smoothing: f64,
    pub lr: f64,
    pub epochs: usize,
    /// Pairs per optimizer step.
    pub batch_size: usize,
    /// Micro-batches per step (batch_size must divide by it).
    pub grad_accum: usize,
    pub warmup_ratio: f64,
    pub schedule: Schedule,
    pub weight_decay: f64,
    /// Global-norm clipping (0 = off).
    pub max_grad_norm: f64,
    /// Longest prompt + response in tokens: longer responses are cut from the right, then prompts
    /// from the left (TRL keeps the prompt's end).
    pub max_length: usize,
    pub max_steps: Option<u64>,
    pub seed: u64,
    /// Checkpoint every N steps (0 = only the final model).
    pub save_every: u64,
    pub keep_checkpoints: usize,
    pub log_every: u64,
    pub adam_beta1: f64,
    pub adam_beta2: f64,
    pub adam_epsilon: f64,
}

impl Default for DpoConfig {
    fn default() -> Self {
        Self {
            beta: 0.1,
            loss: DpoLoss::Sigmoid,
            label_smoothing: 0.0,
            lr: 1e-6,
            epochs: 1,
            batch_size: 8,
            grad_accum: 1,
            warmup_ratio: 0.1,
            schedule: Schedule::Linear,
            weight_decay: 0.0,
            max_grad_norm: 1.0,
            max_length: 512,
            max_steps: None,
            seed: 0,
            save_every: 0,
            keep_checkpoints: 1,
            log_every: 1,
            adam_beta1: 0.9,
            adam_beta2: 0.999,
            adam_epsilon: 1e-8,
        }
    }
}

impl DpoConfig {
    pub fn validate(&self) -> Result<(), String> {
        let positive = |name: &str, v: f64| if v > 0.0 && v.is_finite() { Ok(()) } else { Err(format!("dpo.{name}: {v} must be > 0")) };
        positive("beta", self.beta)?;
        positive("lr", self.lr)?;
        if !(0.0..0.5).contains(&self.label_smoothing) {
            return Err(format!("dpo.label_smoothing: {} must be in [0, 0.5)", self.label_smoothing));
        }
        if self.label_smoothing > 0.0 && self.loss != DpoLoss::Sigmoid {
            return Err("dpo.label_smoothing: only the sigmoid loss has label smoothing".into());
        }
        if self.batch_size == 0 || self.grad_accum == 0 || !self.batch_size.is_multiple_of(self.grad_accum) {
            return Err(format!("dpo.batch_size {} must be a positive multiple of dpo.grad_accum {}", self.batch_size, self.grad_accum));
        }
        if self.epochs == 0 {
            return Err("dpo.epochs: must be ≥ 1".into());
        }
        if self.max_length < 2 {
            return Err("dpo.max_length: must be ≥ 2".into());
        }
        if !(0.0..=1.0).contains(&self.warmup_ratio) {
            return Err(format!("dpo.warmup_ratio: {} must be in [0, 1]", self.warmup_ratio));
        }
        if !(self.weight_decay >= 0.0 && self.max_grad_norm >= 0.0) {
            return Err("dpo.weight_decay and dpo.max_grad_norm must be ≥ 0".into());
        }
        Ok(())
    }
}

/// One preference pair as token ids: the prompt (with its special tokens or chat template), the
/// chosen and rejected responses (each ending with the end-of-sequence token).
#[derive(Debug, Clone, PartialEq)]
pub struct DpoExample {
    pub prompt: Vec<u32>,
    pub chosen: Vec<u32>,
    pub rejected: Vec<u32>,
    /// Line of the pairs file (for messages).
    pub line: usize,
}

impl DpoExample {
    /// Cut to `max_length` tokens per side: the response from the right first (down to one
    /// token), then the prompt from the left. Returns whether anything was cut.
    fn truncate(&mut self, max_length: usize) -> bool {
        let mut cut = false;
        for resp in [&mut self.chosen, &mut self.rejected] {
            let room = max_length.saturating_sub(self.prompt.len()).max(1);
            if resp.len() > room {
                resp.truncate(room);
                cut = true;
            }
        }
        let longest = self.chosen.len().max(self.rejected.len());
        if self.prompt.len() + longest > max_length {
            let keep = max_length - longest;
            self.prompt.drain(..self.prompt.len() - keep);
            cut = true;
        }
        cut
    }
}

/// The DPO loss of each pair and the implicit rewards, from summed (or, for IPO, averaged)
/// log-probs of the policy (tensors, with gradients) and the reference (numbers).
pub struct DpoTerms {
    /// Per pair, [n].
    pub losses: Tensor<1>,
    /// β·(log π − log π_ref) of chosen and rejected, [n] each (no gradient needed).
    pub reward_chosen: Tensor<1>,
    pub reward_rejected: Tensor<1>,
}

pub fn dpo_terms(cfg: &DpoConfig, pi_chosen: Tensor<1>, pi_rejected: Tensor<1>, ref_chosen: &[f64], ref_rejected: &[f64]) -> DpoTerms {
    let device = pi_chosen.device();
    let n = ref_chosen.len();
    let t = |v: &[f64]| Tensor::<1>::from_data(TensorData::new(v.iter().map(|&x| x as f32).collect::<Vec<f32>>(), [n]), &device);
    let (rc, rr) = (t(ref_chosen), t(ref_rejected));
    let ratio_c = pi_chosen - rc;
    let ratio_r = pi_rejected - rr;
    let h = ratio_c.clone() - ratio_r.clone();
    let beta = cfg.beta;
    let losses = match cfg.loss {
        DpoLoss::Sigmoid => {
            let eps = cfg.label_smoothing;
            let pos = log_sigmoid(h.clone().mul_scalar(beta)).mul_scalar(-(1.0 - eps));
            if eps > 0.0 {
                pos - log_sigmoid(h.mul_scalar(-beta)).mul_scalar(eps)
            } else {
                pos
            }
        }
        DpoLoss::Ipo => (h - 1.0 / (2.0 * beta)).powi_scalar(2),
    };
    DpoTerms { losses, reward_chosen: ratio_c.mul_scalar(beta), reward_rejected: ratio_r.mul_scalar(beta) }
}

pub struct DpoRequest {
    /// The reference and the policy's start: an HF folder or a `.gguf` file.
    pub init: PathBuf,
    pub examples: Vec<DpoExample>,
    pub out: PathBuf,
    pub config: DpoConfig,
    pub device: Device,
    pub resume: bool,
    pub progress: bool,
    pub train_data_sha256: Option<String>,
}

pub struct DpoOutcome {
    pub model_dir: PathBuf,
    pub steps: u64,
    pub truncated_pairs: usize,
    /// The last logged step's metrics.
    pub last: serde_json::Value,
    pub wall_seconds: f64,
}

/// Encodes TRL preference lines for DPO with `lm`'s tokenizer: a conversational line's prompt
/// goes through the chat template (with the generation prompt) and its responses are the
/// assistant messages' contents; a string prompt is tokenized with the special tokens, or through
/// the chat template as one user message when `chat`; a line without a prompt gets BOS alone (or
/// the first token of nothing: refused). Each response gets the end-of-sequence token appended.
pub fn encode_dpo_pairs(lm: &CausalLm, pairs: &[rmtrain_data::Pair], chat: bool) -> Result<Vec<DpoExample>, TrainError> {
    let eos = lm.eos_token.as_deref().and_then(|t| lm.tokenizer.token_to_id(t)).or_else(|| lm.stop_ids.first().copied());
    let Some(eos) = eos else {
        return Err(TrainError::Config(format!("{}: no end-of-sequence token to end the responses with", lm.source.display())));
    };
    let bad = |p: &rmtrain_data::Pair, m: String| TrainError::TrainPair { line: p.line, message: m };
    let mut out = Vec::with_capacity(pairs.len());
    for p in pairs {
        let conversational = p.is_conversational();
        let prompt = match (p.fields.get("prompt"), conversational) {
            (Some(messages @ serde_json::Value::Array(_)), _) => lm.encode_chat(&lm.apply_chat_template(messages).map_err(|e| bad(p, e.to_string()))?),
            (Some(serde_json::Value::String(text)), false) if chat => {
                lm.encode_chat(&lm.apply_chat_template(&serde_json::json!([{"role": "user", "content": text}])).map_err(|e| bad(p, e.to_string()))?)
            }
            (Some(serde_json::Value::String(text)), false) => lm.encode_prompt(text),
            _ => lm.encode_prompt(""),
        }
        .map_err(|e| bad(p, e.to_string()))?;
        if prompt.is_empty() {
            return Err(bad(p, "field \"prompt\": no prompt tokens (and the tokenizer adds no BOS): DPO needs a prompt to condition on".into()));
        }
        let side = |key: &str, rendered: &str| -> Result<Vec<u32>, TrainError> {
            let text = match p.fields.get(key) {
                Some(serde_json::Value::Array(messages)) => messages.iter().filter_map(|m| m.get("content").and_then(|c| c.as_str())).collect::<Vec<_>>().join("\n"),
                _ => rendered.to_string(),
            };
            let mut ids = lm.encode_response(&text).map_err(|e| bad(p, e.to_string()))?;
            ids.push(eos);
            Ok(ids)
        };
        out.push(DpoExample { chosen: side("chosen", &p.chosen)?, rejected: side("rejected", &p.rejected)?, prompt, line: p.line });
    }
    Ok(out)
}

/// The settings a resume must share: everything that changes the arithmetic (not where the run
/// stops, how often it logs or saves, or how many checkpoints it keeps).
fn sha_of_config(cfg: &DpoConfig) -> String {
    let same = DpoConfig { max_steps: None, save_every: 0, keep_checkpoints: 1, log_every: 1, ..cfg.clone() };
    rmtrain_core::sha256_bytes(serde_json::to_string(&same).expect("the config serialises").as_bytes())
}

/// The policy log-prob of each item (summed, or averaged over its tokens), with gradients.
fn policy_logps(net: &LlamaLm, items: &[(&[u32], &[u32])], pad: u32, average: bool) -> Tensor<1> {
    let flat = response_token_logprobs(net, items, pad).expect("every response has its EOS token");
    let device = flat.device();
    let n = flat.dims()[0];
    // [items, tokens] segment matrix: row i selects item i's tokens (scaled for the average).
    let mut seg = vec![0f32; items.len() * n];
    let mut at = 0;
    for (i, (_, r)) in items.iter().enumerate() {
        let w = if average { 1.0 / r.len() as f32 } else { 1.0 };
        for k in 0..r.len() {
            seg[i * n + at + k] = w;
        }
        at += r.len();
    }
    let seg = Tensor::<2>::from_data(TensorData::new(seg, [items.len(), n]), &device);
    seg.matmul(flat.reshape([n, 1])).reshape([items.len()])
}

/// The reference log-probs (summed, or averaged for IPO) of every example's chosen and rejected
/// response under `reference` (the init weights, on a device without gradients).
fn reference_logps(reference: &CausalLm, examples: &[DpoExample], average: bool) -> Result<(Vec<f64>, Vec<f64>), TrainError> {
    let items: Vec<(Vec<u32>, Vec<u32>)> = examples.iter().flat_map(|e| [(e.prompt.clone(), e.chosen.clone()), (e.prompt.clone(), e.rejected.clone())]).collect();
    let lps = reference.logprobs(&items, 8)?;
    let reduce = |lp: &Vec<f32>| {
        let s: f64 = lp.iter().map(|&x| x as f64).sum();
        if average { s / lp.len().max(1) as f64 } else { s }
    };
    let (mut c, mut r) = (Vec::with_capacity(examples.len()), Vec::with_capacity(examples.len()));
    for pair in lps.chunks(2) {
        c.push(reduce(&pair[0]));
        r.push(reduce(&pair[1]));
    }
    Ok((c, r))
}

/// Trains `req.init` with DPO on `req.examples`; writes `metrics.jsonl`, `checkpoints/step-N/`
/// (HF folder + `state/`) every `save_every` steps and `model/` at the end.
pub fn train_dpo(req: DpoRequest) -> Result<DpoOutcome, TrainError> {
    let cfg = req.config.clone();
    cfg.validate().map_err(TrainError::Config)?;
    if req.examples.is_empty() {
        return Err(TrainError::Config("dpo: no pairs".into()));
    }
    let started = Instant::now();
    let ad = req.device.clone().autodiff();
    let init_sha = rmtrain_models::hf::weights_sha256(&req.init)?;
    let config_sha = sha_of_config(&cfg);
    checkpoint::sweep_run_folder(&req.out)?;
    // Resume: the newest checkpoint of this very run, or a clean start.
    let resume = if req.resume {
        let Some((_, dir)) = checkpoint::list_checkpoints(&req.out).pop() else {
            return Err(TrainError::Config(format!("--resume: no checkpoint under {}", checkpoint::checkpoints_dir(&req.out).display())));
        };
        let state = checkpoint::read_state(&dir)?;
        let mut differ = Vec::new();
        if state.init_weights_sha256 != init_sha {
            differ.push("init weights");
        }
        if state.config_sha256 != config_sha || state.seed != cfg.seed {
            differ.push("settings");
        }
        if state.train_data_sha256 != req.train_data_sha256 {
            differ.push("train data");
        }
        if !differ.is_empty() {
            return Err(TrainError::State { path: dir.join(STATE_DIR).join(TRAINER_STATE_FILE), message: format!("--resume: {} differ from the run being resumed", differ.join(", ")) });
        }
        Some((state, dir))
    } else {
        let _ = std::fs::remove_dir_all(checkpoint::checkpoints_dir(&req.out));
        let _ = std::fs::remove_file(req.out.join("metrics.jsonl"));
        let _ = std::fs::remove_dir_all(req.out.join("model"));
        None
    };
    std::fs::create_dir_all(&req.out).map_err(|e| rmtrain_core::CoreError::io(&req.out, e))?;

    let mut examples = req.examples.clone();
    let truncated_pairs = examples.iter_mut().map(|e| usize::from(e.truncate(cfg.max_length))).sum::<usize>();
    let average = cfg.loss == DpoLoss::Ipo;
    let load_dir = resume.as_ref().map_or(req.init.clone(), |(_, d)| d.clone());
    let template = CausalLm::load(&load_dir, &ad)?;
    // A fresh run starts from the init: its weights, without gradient tracking, are the reference.
    let (ref_c, ref_r) = match &resume {
        None => reference_logps(&template.with_net(template.net.valid()), &examples, average)?,
        Some(_) => reference_logps(&CausalLm::load(&req.init, &req.device)?, &examples, average)?,
    };
    let pad = template.pad_id();
    let mut net = template.net.clone();
    let no_decay = net.hf_params().into_iter().filter(|(n, _)| is_no_decay(n)).map(|(_, p)| p.id()).collect();
    let mut optim = checkpoint::adamw_groups((cfg.adam_beta1, cfg.adam_beta2), cfg.adam_epsilon, cfg.weight_decay, no_decay);

    let steps_per_epoch = examples.len().div_ceil(cfg.batch_size) as u64;
    let total_steps = steps_per_epoch * cfg.epochs as u64;
    let last_step = cfg.max_steps.map_or(total_steps, |m| m.min(total_steps));
    let warmup = warmup_steps(cfg.warmup_ratio, None, total_steps);
    let mut step = 0u64;
    if let Some((state, dir)) = &resume {
        optim = checkpoint::load_optimizer(optim, dir)?;
        step = state.step;
        MetricsLog::truncate_after(&req.out.join("metrics.jsonl"), step)?;
    }
    let start_step = step;
    let mut log = MetricsLog::append(&req.out.join("metrics.jsonl"))?;
    log.log(&serde_json::json!({"step": step, "event": if step > 0 { "resume" } else { "start" }, "pairs": examples.len(), "truncated_pairs": truncated_pairs, "loss_type": cfg.loss, "beta": cfg.beta}))?;
    let bar = rmtrain_core::progress_bar(req.progress, "dpo", "steps", last_step, step);
    let order_for = |epoch: u64| {
        let mut o: Vec<usize> = (0..examples.len()).collect();
        o.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(mix_seed(cfg.seed, 0xD90, epoch)));
        o
    };
    let mut order_epoch = step / steps_per_epoch;
    let mut order = order_for(order_epoch);
    let mut last = serde_json::Value::Null;
    let save = |net: &LlamaLm, dir: &Path| -> Result<(), TrainError> { Ok(template.with_net(net.valid()).save_hf(dir)?) };
    while step < last_step {
        let epoch = step / steps_per_epoch;
        if epoch != order_epoch {
            order = order_for(epoch);
            order_epoch = epoch;
        }
        let pos = (step % steps_per_epoch) as usize;
        let batch: Vec<usize> = order[pos * cfg.batch_size..((pos + 1) * cfg.batch_size).min(examples.len())].to_vec();
        let lr = learning_rate(cfg.schedule, cfg.lr, step, warmup, total_steps);
        let tick = Instant::now();
        let mut acc = GradientsAccumulator::new();
        let (mut loss_sum, mut rc_sum, mut rr_sum, mut right, mut margin_sum, mut lpc_sum, mut lpr_sum) = (0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0);
        let micro = cfg.batch_size / cfg.grad_accum;
        for chunk in batch.chunks(micro) {
            // Chosen rows first, then rejected: one padded forward for both.
            let items: Vec<(&[u32], &[u32])> = chunk
                .iter()
                .map(|&i| (examples[i].prompt.as_slice(), examples[i].chosen.as_slice()))
                .chain(chunk.iter().map(|&i| (examples[i].prompt.as_slice(), examples[i].rejected.as_slice())))
                .collect();
            let logps = policy_logps(&net, &items, pad, average);
            let n = chunk.len();
            let (pc, pr) = (logps.clone().narrow(0, 0, n), logps.narrow(0, n, n));
            let rc: Vec<f64> = chunk.iter().map(|&i| ref_c[i]).collect();
            let rr: Vec<f64> = chunk.iter().map(|&i| ref_r[i]).collect();
            let lpc = to_vec(pc.clone());
            let lpr = to_vec(pr.clone());
            let terms = dpo_terms(&cfg, pc, pr, &rc, &rr);
            // The step's loss is the mean over its pairs: each micro-batch adds its share.
            let loss = terms.losses.sum().mul_scalar(1.0 / batch.len() as f64);
            loss_sum += loss.clone().into_scalar::<f32>() as f64;
            let (wc, wr) = (to_vec(terms.reward_chosen), to_vec(terms.reward_rejected));
            for k in 0..n {
                rc_sum += wc[k];
                rr_sum += wr[k];
                right += f64::from(u8::from(wc[k] > wr[k]));
                margin_sum += wc[k] - wr[k];
                lpc_sum += lpc[k];
                lpr_sum += lpr[k];
            }
            acc.accumulate(&net, GradientsParams::from_grads(loss.backward(), &net));
        }
        let mut grads = acc.grads();
        let clip = (cfg.max_grad_norm > 0.0).then_some(cfg.max_grad_norm);
        let grad_norm = clip_global_norm(&net, &mut grads, clip);
        for (what, value) in [("loss", loss_sum), ("gradient norm", grad_norm)] {
            if !value.is_finite() {
                return Err(TrainError::NonFinite { step: step + 1, what: what.into(), value });
            }
        }
        net = optim.step(lr, net, grads);
        step += 1;
        let b = batch.len() as f64;
        let record = serde_json::json!({
            "step": step, "epoch": step as f64 / steps_per_epoch as f64, "lr": lr, "loss": loss_sum,
            "rewards/chosen": rc_sum / b, "rewards/rejected": rr_sum / b, "rewards/accuracies": right / b,
            "rewards/margins": margin_sum / b, "logps/chosen": lpc_sum / b, "logps/rejected": lpr_sum / b,
            "grad_norm": grad_norm, "seconds": tick.elapsed().as_secs_f64(),
        });
        if step.is_multiple_of(cfg.log_every.max(1)) || step == last_step {
            log.log(&record)?;
            bar.set_message(format!("loss {loss_sum:.4} acc {:.3}", right / b));
        }
        last = record;
        if (cfg.save_every > 0 && step.is_multiple_of(cfg.save_every)) || step == last_step {
            let dir = AtomicDir::new(&checkpoint::step_dir(&req.out, step))?;
            save(&net, dir.path())?;
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
            checkpoint::write_state(dir.path(), &optim, &state)?;
            dir.commit()?;
            checkpoint::prune(&req.out, cfg.keep_checkpoints);
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    let model_dir = req.out.join("model");
    let dir = AtomicDir::new(&model_dir)?;
    save(&net, dir.path())?;
    rmtrain_core::write_json_atomic(
        &dir.path().join("rmtrain.json"),
        &serde_json::json!({"kind": "dpo", "rmtrain_version": env!("CARGO_PKG_VERSION"), "step": step, "init": req.init, "init_weights_sha256": init_sha,
                            "train_data_sha256": req.train_data_sha256, "dpo_config": cfg, "last": last}),
    )?;
    dir.commit()?;
    let wall_seconds = started.elapsed().as_secs_f64();
    log.log(&serde_json::json!({"step": step, "final": true, "resumed_from": start_step, "wall_seconds": wall_seconds}))?;
    Ok(DpoOutcome { model_dir, steps: step, truncated_pairs, last, wall_seconds })
}

fn to_vec(t: Tensor<1>) -> Vec<f64> {
    t.into_data().convert::<f64>().try_to_vec::<f64>().expect("floats")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn terms(cfg: &DpoConfig, pc: f64, pr: f64, rc: f64, rr: f64) -> (f64, f64, f64) {
        let d = Device::flex();
        let t = |x: f64| Tensor::<1>::from_data(TensorData::new(vec![x as f32], [1]), &d);
        let out = dpo_terms(cfg, t(pc), t(pr), &[rc], &[rr]);
        (to_vec(out.losses)[0], to_vec(out.reward_chosen)[0], to_vec(out.reward_rejected)[0])
    }

    /// By hand: log π(y_c) = −10, log π(y_r) = −12, log π_ref = −11 for both, β = 0.1:
    /// h = (−10 + 11) − (−12 + 11) = 2; DPO: −log σ(0.2) = log(1 + e^−0.2) = 0.598138869;
    /// ε = 0.1: 0.9·0.598138869 + 0.1·log(1 + e^0.2) = 0.9·0.598138869 + 0.1·0.798138869 = 0.618138869;
    /// IPO: (2 − 1/0.2)² = 9; rewards β·1 = 0.1 and β·(−1) = −0.1.
    #[test]
    fn losses_match_hand_computation() {
        let mut cfg = DpoConfig::default();
        let (l, wc, wr) = terms(&cfg, -10.0, -12.0, -11.0, -11.0);
        assert!((l - 0.598_138_869).abs() < 1e-6, "{l}");
        assert!((wc - 0.1).abs() < 1e-6 && (wr + 0.1).abs() < 1e-6, "{wc} {wr}");
        cfg.label_smoothing = 0.1;
        let (l, _, _) = terms(&cfg, -10.0, -12.0, -11.0, -11.0);
        assert!((l - 0.618_138_869).abs() < 1e-6, "{l}");
        cfg.label_smoothing = 0.0;
        cfg.loss = DpoLoss::Ipo;
        let (l, _, _) = terms(&cfg, -10.0, -12.0, -11.0, -11.0);
        assert!((l - 9.0).abs() < 1e-5, "{l}");
        // At the start the policy is the reference: h = 0, the DPO loss is log 2.
        let (l, _, _) = terms(&DpoConfig::default(), -7.0, -9.0, -7.0, -9.0);
        assert!((l - std::f64::consts::LN_2).abs() < 1e-6, "{l}");
    }

    #[test]
    fn truncation_cuts_responses_then_the_prompt_start() {
        let mut e = DpoExample { prompt: (0..6).collect(), chosen: vec![10; 5], rejected: vec![11; 2], line: 1 };
        assert!(e.truncate(8));
        assert_eq!((e.prompt.len(), e.chosen.len(), e.rejected.len()), (6, 2, 2));
        let mut e = DpoExample { prompt: (0..10).collect(), chosen: vec![10; 3], rejected: vec![11; 1], line: 1 };
        assert!(e.truncate(8));
        // Responses keep one token each (room = max(8 − 10, 1)), then the prompt keeps its end.
        assert_eq!((e.prompt.clone(), e.chosen.len()), ((3..10).collect::<Vec<u32>>(), 1));
        let mut e = DpoExample { prompt: vec![1, 2], chosen: vec![3], rejected: vec![4], line: 1 };
        assert!(!e.truncate(8));
    }

    #[test]
    fn config_errors_name_the_key() {
        let bad = DpoConfig { label_smoothing: 0.1, loss: DpoLoss::Ipo, ..DpoConfig::default() };
        assert!(bad.validate().expect_err("ipo + ε").contains("label_smoothing"));
        let bad = DpoConfig { batch_size: 6, grad_accum: 4, ..DpoConfig::default() };
        assert!(bad.validate().expect_err("accum").contains("grad_accum"));
        assert!(DpoConfig { beta: 0.0, ..DpoConfig::default() }.validate().expect_err("beta").contains("dpo.beta"));
    }
}
