//! `[train]` of a recipe: a plain struct, strict (an unknown key is an error), every default with
//! its reason. Defaults follow transformers' Trainer / TRL's RewardConfig unless noted.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Schedule {
    Linear,
    Cosine,
    Constant,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    /// Passes over the train pairs.
    pub epochs: u32,
    /// Pairs per optimizer step (per micro-batch × grad_accum). TRL's examples use 8–16.
    pub batch_size: usize,
    /// Micro-batches accumulated per optimizer step; batch_size must divide evenly.
    pub grad_accum: usize,
    /// Peak learning rate (AdamW). 3e-5 is the usual BERT-base fine-tuning value.
    pub lr: f64,
    /// Decoupled weight decay; biases and LayerNorm weights are exempt, as in transformers.
    pub weight_decay: f64,
    /// Adam's epsilon: torch's default (Burn's is 1e-5).
    pub adam_epsilon: f64,
    pub adam_beta1: f64,
    pub adam_beta2: f64,
    /// Share of the optimizer steps spent warming up (ceil, as transformers).
    pub warmup_ratio: f64,
    /// Overrides warmup_ratio when set.
    pub warmup_steps: Option<u64>,
    pub schedule: Schedule,
    /// Clip the global L2 norm over all gradients to this (torch `clip_grad_norm_`, as
    /// transformers' Trainer). 0 switches clipping off (as `max_grad_norm = 0` does in transformers);
    /// absent = 1.0, transformers' default.
    pub max_grad_norm: f64,
    /// Stop after this many optimizer steps (the schedule still spans the full run); 0 saves the
    /// starting weights as they are (a new head without a probe).
    pub max_steps: Option<u64>,
    /// Use only the first N train pairs (the importer writes them in random order).
    pub max_train_pairs: Option<usize>,
    /// Model replicas that run forward + backward of one micro-batch's parts in parallel threads
    /// (data parallelism on one CPU; gradients summed in a fixed order, so runs stay bitwise
    /// reproducible for a given value). The flex backend keeps about one core busy per replica.
    pub replicas: usize,
    /// Seeds data order, dropout and any new head's init.
    pub seed: u64,
    /// Visit the pairs in a seeded random order each epoch (transformers' default); false = the
    /// file order, every epoch (for step-by-step comparisons with another trainer).
    pub shuffle: bool,
    /// Seeds the data order alone when set (WARM varies it apart from the seed).
    pub data_seed: Option<u64>,
    /// Overrides the config's hidden/attention/classifier dropout (WARM's diversity axis).
    pub dropout: Option<f64>,
    /// Truncation length in tokens, special tokens included.
    pub max_length: usize,
    /// Evaluate on the eval sets every N optimizer steps (0 = only at the end).
    pub eval_every: u64,
    /// Cap on eval pairs per set during training (the final evaluation uses all of them).
    pub eval_max_pairs: Option<usize>,
    /// Write a checkpoint every N optimizer steps (0 = only at the end).
    pub save_every: u64,
    /// Keep this many step checkpoints (the final model is always kept).
    pub keep_checkpoints: usize,
    /// Log averaged metrics every N optimizer steps.
    pub log_every: u64,
    pub loss: LossConfig,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LossConfig {
    /// Subtract each pair's `margin` field inside the sigmoid (Llama-2); pairs lacking it use 0.
    pub use_margin: bool,
    /// Label smoothing ε (Secrets of RLHF II); None = off. 0.1 is the paper's value.
    pub label_smoothing: Option<f64>,
    /// Reward centering coefficient (Eisenstein et al. 2023); None = off. TRL suggests 0.01.
    pub center_rewards_coefficient: Option<f64>,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            epochs: 1,
            batch_size: 16,
            grad_accum: 1,
            lr: 3e-5,
            weight_decay: 0.01,
            adam_epsilon: 1e-8,
            adam_beta1: 0.9,
            adam_beta2: 0.999,
            warmup_ratio: 0.1,
            warmup_steps: None,
            schedule: Schedule::Linear,
            max_grad_norm: 1.0,
            max_steps: None,
            max_train_pairs: None,
            replicas: 2,
            seed: 0,
            shuffle: true,
            data_seed: None,
            dropout: None,
            max_length: 128,
            eval_every: 0,
            eval_max_pairs: None,
            save_every: 0,
            keep_checkpoints: 2,
            log_every: 10,
            loss: LossConfig::default(),
        }
    }
}

impl TrainConfig {
    /// The clipping threshold, None when clipping is off.
    pub fn clip_norm(&self) -> Option<f64> {
        (self.max_grad_norm > 0.0).then_some(self.max_grad_norm)
    }

    pub fn validate(&self) -> Result<(), String> {
        if !(self.max_grad_norm >= 0.0 && self.max_grad_norm.is_finite()) {
            return Err(format!("train.max_grad_norm must be ≥ 0 (0 = no clipping), got {}", self.max_grad_norm));
        }
        for (name, v) in [("weight_decay", self.weight_decay), ("adam_epsilon", self.adam_epsilon)] {
            if !(v >= 0.0 && v.is_finite()) {
                return Err(format!("train.{name} must be ≥ 0, got {v}"));
            }
        }
        for (name, v) in [("adam_beta1", self.adam_beta1), ("adam_beta2", self.adam_beta2)] {
            if !(0.0..1.0).contains(&v) {
                return Err(format!("train.{name} must be in [0, 1), got {v}"));
            }
        }
        if self.replicas == 0 {
            return Err("train.replicas must be at least 1".into());
        }
        for (name, zero) in [
            ("max_train_pairs", self.max_train_pairs == Some(0)),
            ("eval_max_pairs", self.eval_max_pairs == Some(0)),
            ("log_every", self.log_every == 0),
            ("keep_checkpoints", self.keep_checkpoints == 0),
        ] {
            if zero {
                return Err(format!("train.{name} must be at least 1"));
            }
        }
        if let Some(c) = self.loss.center_rewards_coefficient
            && !(c >= 0.0 && c.is_finite())
        {
            return Err(format!("train.loss.center_rewards_coefficient must be ≥ 0, got {c}"));
        }
        if self.batch_size == 0 || self.grad_accum == 0 || !self.batch_size.is_multiple_of(self.grad_accum) {
            return Err(format!(
                "train.batch_size ({}) must be a positive multiple of train.grad_accum ({})",
                self.batch_size, self.grad_accum
            ));
        }
        if !(self.lr > 0.0 && self.lr.is_finite()) {
            return Err(format!("train.lr must be positive, got {}", self.lr));
        }
        if !(0.0..=1.0).contains(&self.warmup_ratio) {
            return Err(format!("train.warmup_ratio must be in [0, 1], got {}", self.warmup_ratio));
        }
        if let Some(p) = self.dropout
            && !(0.0..1.0).contains(&p)
        {
            return Err(format!("train.dropout must be in [0, 1), got {p}"));
        }
        if let Some(e) = self.loss.label_smoothing
            && !(0.0..0.5).contains(&e)
        {
            return Err(format!("train.loss.label_smoothing must be in [0, 0.5), got {e}"));
        }
        if self.loss.label_smoothing.is_some_and(|e| e > 0.0) && self.loss.use_margin {
            return Err("train.loss.label_smoothing and train.loss.use_margin cannot be combined (pick one)".into());
        }
        if self.epochs == 0 {
            return Err("train.epochs must be at least 1".into());
        }
        if self.max_length < 2 {
            return Err(format!("train.max_length must be at least 2, got {}", self.max_length));
        }
        Ok(())
    }
}
