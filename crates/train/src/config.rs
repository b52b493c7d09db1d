//! `[train]` of a recipe: a plain struct, strict (an unknown key is an error), every default with
//! its reason. Defaults follow transformers' Trainer / TRL's RewardConfig unless noted.

use crate::contrastive::ContrastiveSamples;
use rmtrain_data::StrengthFlip;
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
    /// Sort each run of 50 batches of the seeded order by length (transformers' `group_by_length`):
    /// batches of similar lengths pay for less padding. Off by default.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub group_by_length: bool,
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
    /// Flip the labels of the pairs the strength voters distrust (Secrets of RLHF II §2.4.1);
    /// None = off. Needs `strength_mean` on every pair.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flip: Option<FlipConfig>,
    /// MetaRM (Dou et al. 2024; Secrets of RLHF II §3.2, Algorithm 1): an inner ascent step on the
    /// difference loss J of a meta set before each Bradley–Terry step; None = off.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metarm: Option<MetaRmConfig>,
    pub loss: LossConfig,
}

// Every setting added after the first release is left out of the serialized config when off, so
// the manifests and resume fingerprints of earlier runs still match a default config.

/// `[train.flip]`: exactly one rule.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlipConfig {
    /// Flip the round(q · n) pairs of lowest μ̂: 0.2 in the paper's main text, 0.1 in App. C.2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bottom_fraction: Option<f64>,
    /// Flip every pair with μ̂ below this (0.0: the voters prefer the rejected side).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub below: Option<f64>,
}

impl FlipConfig {
    pub fn rule(&self) -> Result<StrengthFlip, String> {
        match (self.bottom_fraction, self.below) {
            (Some(q), None) if (0.0..=1.0).contains(&q) => Ok(StrengthFlip::BottomFraction(q)),
            (Some(q), None) => Err(format!("train.flip.bottom_fraction must be in [0, 1], got {q}")),
            (None, Some(t)) if t.is_finite() => Ok(StrengthFlip::Below(t)),
            (None, Some(t)) => Err(format!("train.flip.below must be finite, got {t}")),
            _ => Err("train.flip: give exactly one of bottom_fraction, below".into()),
        }
    }
}

/// `[train.metarm]`: first-order MetaRM (the spec's [DEC]: no second-order term).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetaRmConfig {
    /// JSONL of groups `{"prompt": str (optional), "responses": [str, str, ...]}`: several
    /// responses to one prompt, unlabeled (the paper: 5 policy samples per prompt).
    pub meta_data: std::path::PathBuf,
    /// Inner ascent step size η of θ' = θ + η·∇J (plain gradient, no optimizer). The paper:
    /// 5e-6 for Llama-2-7B, with 1e-6..1e-5 giving similar results.
    #[serde(default = "default_eta")]
    pub eta: f64,
    /// Meta groups (prompts) per optimizer step (the paper: 16, as the pair batch).
    #[serde(default = "default_meta_groups")]
    pub groups_per_step: usize,
}

fn default_eta() -> f64 {
    5e-6
}
fn default_meta_groups() -> usize {
    16
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LossConfig {
    /// Subtract each pair's `margin` field inside the sigmoid (Llama-2); pairs lacking it use 0.
    pub use_margin: bool,
    /// Label smoothing α (Secrets of RLHF II Eq. 5): −(1−α)·log σ(z) − α·log σ(−z); None = off.
    /// The paper gives no value; 0.1 is cDPO's usual one.
    pub label_smoothing: Option<f64>,
    /// Which pairs are smoothed: all, or only those with μ̂ < 0 (the paper's "soft label" recipe).
    #[serde(skip_serializing_if = "SmoothingPairs::is_all")]
    pub smoothing_pairs: SmoothingPairs,
    /// Adaptive margin m = scale·μ̂ inside the sigmoid (Secrets of RLHF II Eq. 6 as intended);
    /// None = off.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub adaptive_margin: Option<AdaptiveMargin>,
    /// Contrastive auxiliary loss over two dropout views (Secrets of RLHF II §3.1); None = off.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub contrastive: Option<ContrastiveConfig>,
    /// Reward centering coefficient (Eisenstein et al. 2023); None = off. TRL suggests 0.01.
    pub center_rewards_coefficient: Option<f64>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SmoothingPairs {
    #[default]
    All,
    /// Only pairs with μ̂ < 0 (needs `strength_mean`).
    NegativeStrength,
}

impl SmoothingPairs {
    /// The default, left out of serialized configs so that runs made before these settings
    /// existed keep their fingerprints (and stay reusable and resumable).
    pub fn is_all(&self) -> bool {
        *self == Self::All
    }
}

/// m_i = scale·μ̂_i, then optionally clamped at 0 (Llama-2-like non-negative margins) and capped
/// to [−cap, cap].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdaptiveMargin {
    #[serde(default = "one")]
    pub scale: f64,
    #[serde(default)]
    pub clamp_zero: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cap: Option<f64>,
}

fn one() -> f64 {
    1.0
}

impl AdaptiveMargin {
    /// The margin of a pair of strength `mu`.
    pub fn margin(&self, mu: f64) -> f64 {
        let mut m = self.scale * mu;
        if self.clamp_zero {
            m = m.max(0.0);
        }
        if let Some(cap) = self.cap {
            m = m.clamp(-cap, cap);
        }
        m
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ContrastiveKind {
    /// InfoNCE between the two views (Eq. 9).
    Simcse,
    /// Swapped prediction of Sinkhorn codes over trainable prototypes (Eq. 7–8).
    Swav,
}

/// `[train.loss.contrastive]`. L = mean over the two views of the RM loss + β·L_cl.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContrastiveConfig {
    pub kind: ContrastiveKind,
    /// Instances: `pairs` {f(c), f(r)} or `difference` {f(c) − f(r), f(r) − f(c)}.
    #[serde(default)]
    pub samples: ContrastiveSamples,
    /// Weight β of L_cl. Paper: SimCSE 1, SwAV 0.1, SwAV-diff 0.5 (App. B.2).
    #[serde(default = "one")]
    pub beta: f64,
    /// τ. Not in the paper: SimCSE's 0.05 and SwAV's 0.1 by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    /// SwAV prototypes K. Paper: 50 (pairs), 20 (difference).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prototypes: Option<usize>,
    /// Sinkhorn ε and iterations (SwAV's reference defaults 0.05 and 3).
    #[serde(default = "default_sinkhorn_eps")]
    pub sinkhorn_epsilon: f64,
    #[serde(default = "default_sinkhorn_iterations")]
    pub sinkhorn_iterations: usize,
}

fn default_sinkhorn_eps() -> f64 {
    0.05
}
fn default_sinkhorn_iterations() -> usize {
    3
}

impl ContrastiveConfig {
    pub fn temperature(&self) -> f64 {
        self.temperature.unwrap_or(match self.kind {
            ContrastiveKind::Simcse => 0.05,
            ContrastiveKind::Swav => 0.1,
        })
    }

    pub fn prototypes(&self) -> usize {
        self.prototypes.unwrap_or(match self.samples {
            ContrastiveSamples::Pairs => 50,
            ContrastiveSamples::Difference => 20,
        })
    }

    fn validate(&self) -> Result<(), String> {
        let p = "train.loss.contrastive";
        if !(self.beta >= 0.0 && self.beta.is_finite()) {
            return Err(format!("{p}.beta must be ≥ 0, got {}", self.beta));
        }
        for (name, v) in [("temperature", self.temperature()), ("sinkhorn_epsilon", self.sinkhorn_epsilon)] {
            if !(v > 0.0 && v.is_finite()) {
                return Err(format!("{p}.{name} must be positive, got {v}"));
            }
        }
        if self.prototypes() < 2 {
            return Err(format!("{p}.prototypes must be at least 2, got {}", self.prototypes()));
        }
        if self.sinkhorn_iterations == 0 {
            return Err(format!("{p}.sinkhorn_iterations must be at least 1"));
        }
        Ok(())
    }
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
            group_by_length: false,
            dropout: None,
            max_length: 128,
            eval_every: 0,
            eval_max_pairs: None,
            save_every: 0,
            keep_checkpoints: 2,
            log_every: 10,
            flip: None,
            metarm: None,
            loss: LossConfig::default(),
        }
    }
}

impl TrainConfig {
    /// Whether a setting reads each pair's preference strength μ̂ (`strength_mean`): the flip, the
    /// adaptive margin, or smoothing of the μ̂ < 0 pairs.
    pub fn reads_strength(&self) -> bool {
        self.flip.is_some()
            || self.loss.adaptive_margin.is_some()
            || (self.loss.label_smoothing.is_some() && self.loss.smoothing_pairs == SmoothingPairs::NegativeStrength)
    }

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
        if self.loss.use_margin && self.loss.adaptive_margin.is_some() {
            return Err("train.loss.use_margin (the pairs' margin field) and train.loss.adaptive_margin cannot be combined: pick one".into());
        }
        if self.loss.smoothing_pairs != SmoothingPairs::All && self.loss.label_smoothing.is_none() {
            return Err("train.loss.smoothing_pairs needs train.loss.label_smoothing".into());
        }
        if let Some(m) = &self.loss.adaptive_margin {
            if !m.scale.is_finite() {
                return Err(format!("train.loss.adaptive_margin.scale must be finite, got {}", m.scale));
            }
            if let Some(cap) = m.cap
                && !(cap > 0.0 && cap.is_finite())
            {
                return Err(format!("train.loss.adaptive_margin.cap must be positive, got {cap}"));
            }
        }
        if let Some(c) = &self.loss.contrastive {
            c.validate()?;
        }
        if let Some(f) = &self.flip {
            f.rule()?;
        }
        if let Some(m) = &self.metarm {
            if !(m.eta >= 0.0 && m.eta.is_finite()) {
                return Err(format!("train.metarm.eta must be ≥ 0, got {}", m.eta));
            }
            if m.groups_per_step == 0 {
                return Err("train.metarm.groups_per_step must be at least 1".into());
            }
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
