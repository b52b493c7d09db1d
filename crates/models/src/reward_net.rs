//! The seam every reward-model family plugs into. A family (BERT today; Llama-family decoders
//! next) is one file with a Burn module implementing [`RewardNet`]; [`RewardNetwork`] holds one of
//! them and [`ModelConfig`] is chosen from `config.json`'s `model_type` by a plain `match`. The
//! trainer, checkpoints, replicas, clipping, weight-decay groups and the linear probe see only
//! this trait, never a family's fields.
//!
//! What a family provides: the reward forward with a dropout stream, the same with the backbone
//! frozen (LP-FT's linear probe), its parameters under their HF checkpoint names (which also
//! decides weight decay and which parameters form the head), and its pooling rule as data.

use crate::bert::BertRewardModel;
use crate::config::BertConfig;
use crate::dropout::DropoutRng;
use crate::llama::{LlamaConfig, LlamaRewardModel, config::LLAMA_MODEL_TYPES};
use crate::ModelError;
use burn::module::{Module, Param, ParamId};
use burn::tensor::{Bool, Int, Tensor};
use std::path::Path;

/// How a family reads one reward from the last hidden states.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pooling {
    /// BERT: classifier(tanh(pooler(h[CLS]))), position 0 (`BertForSequenceClassification`).
    BertPoolerCls,
    /// Decoders: the head applied at the rightmost token that is not `pad_id`
    /// (`LlamaForSequenceClassification`).
    LastNonPad { pad_id: u32 },
}

impl Pooling {
    /// The name written into `rmtrain.json`.
    pub fn name(&self) -> &'static str {
        match self {
            Self::BertPoolerCls => "bert_pooler_cls",
            Self::LastNonPad { .. } => "last_non_pad",
        }
    }
}

/// What loading did besides taking tensors: parameters it had to initialise (a backbone's new
/// head) and tensors it ignored on purpose (with the reason).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LoadNotes {
    pub initialised: Vec<String>,
    pub ignored: Vec<String>,
}

/// A parameter as the HF checkpoint stores it.
pub enum HfParam<'a> {
    /// Same layout in Burn and HF (embeddings, norms, biases).
    Vector(&'a Param<Tensor<1>>),
    Matrix(&'a Param<Tensor<2>>),
    /// A `Linear` weight: Burn keeps `[in, out]`, HF `[out, in]`.
    LinearWeight(&'a Param<Tensor<2>>),
}

impl HfParam<'_> {
    pub fn id(&self) -> ParamId {
        match self {
            Self::Vector(p) => p.id,
            Self::Matrix(p) | Self::LinearWeight(p) => p.id,
        }
    }

    /// Whether every value is finite (no NaN, no infinity).
    pub fn is_finite(&self) -> bool {
        match self {
            Self::Vector(p) => p.val().is_finite().all().into_scalar::<bool>(),
            Self::Matrix(p) | Self::LinearWeight(p) => p.val().is_finite().all().into_scalar::<bool>(),
        }
    }

    /// Shape in the HF layout and the values, row-major.
    pub fn to_hf(&self) -> (Vec<usize>, Vec<f32>) {
        let floats = |data: burn::tensor::TensorData| data.convert::<f32>().try_to_vec::<f32>().expect("a float tensor converts to f32");
        match self {
            Self::Vector(p) => (p.val().dims().to_vec(), floats(p.val().into_data())),
            Self::Matrix(p) => (p.val().dims().to_vec(), floats(p.val().into_data())),
            Self::LinearWeight(p) => {
                let [d_in, d_out] = p.val().dims();
                (vec![d_out, d_in], floats(p.val().transpose().into_data()))
            }
        }
    }
}

/// transformers' `Trainer.get_decay_parameter_names`: no weight decay for biases and
/// normalisation weights, recognised by name (`bias`, `layernorm`, `rmsnorm`, a `norm` path
/// component, a `_norm` suffix), so a new family needs no hand list.
pub fn is_no_decay(hf_name: &str) -> bool {
    let n = hf_name.to_ascii_lowercase();
    let parts: Vec<&str> = n.split('.').collect();
    n.contains("bias")
        || n.contains("layernorm")
        || n.contains("rmsnorm")
        || parts.iter().any(|p| *p == "norm" || p.ends_with("_norm"))
}

pub trait RewardNet: Module {
    /// ids, mask: [batch, seq] (mask true = real token) -> rewards [batch]; dropout drawn from
    /// `rng` when given (training), none otherwise.
    fn forward_with(&self, ids: Tensor<2, Int>, mask: Tensor<2, Bool>, rng: Option<&mut DropoutRng>) -> Tensor<1>;

    /// Rewards and the reward head's input f(x, y) [batch, feature_dim] (what the contrastive losses
    /// of Secrets of RLHF II §3.1 compare), from one forward with dropout drawn from `rng`.
    fn forward_features(&self, ids: Tensor<2, Int>, mask: Tensor<2, Bool>, rng: Option<&mut DropoutRng>) -> (Tensor<1>, Tensor<2>);

    /// Width of [`forward_features`](Self::forward_features)' features.
    fn feature_dim(&self) -> usize;

    /// As [`forward_with`](Self::forward_with) with the backbone run on the inner (non-autodiff)
    /// backend: only the head records a graph and gets gradients (the linear probe of LP-FT).
    fn forward_frozen_backbone(&self, ids: Tensor<2, Int>, mask: Tensor<2, Bool>, rng: Option<&mut DropoutRng>) -> Tensor<1>;

    /// Every parameter under its HF checkpoint name, in checkpoint order.
    fn hf_params(&self) -> Vec<(String, HfParam<'_>)>;

    /// Whether an HF parameter name belongs to the reward head (what a linear probe trains).
    fn is_head_param(&self, hf_name: &str) -> bool;

    fn pooling(&self) -> Pooling;

    /// Rewards without dropout (inference).
    fn forward(&self, ids: Tensor<2, Int>, mask: Tensor<2, Bool>) -> Tensor<1> {
        self.forward_with(ids, mask, None)
    }

    /// `(hf_name, shape in HF layout, values)` of every parameter: what a checkpoint holds.
    fn hf_tensors(&self) -> Vec<(String, Vec<usize>, Vec<f32>)> {
        self.hf_params()
            .into_iter()
            .map(|(name, p)| {
                let (shape, values) = p.to_hf();
                (name, shape, values)
            })
            .collect()
    }

    /// Ids of the parameters without weight decay ([`is_no_decay`]).
    fn no_decay_param_ids(&self) -> Vec<ParamId> {
        self.hf_params().into_iter().filter(|(n, _)| is_no_decay(n)).map(|(_, p)| p.id()).collect()
    }

    /// Ids of the head's parameters.
    fn head_param_ids(&self) -> Vec<ParamId> {
        self.hf_params().into_iter().filter(|(n, _)| self.is_head_param(n)).map(|(_, p)| p.id()).collect()
    }
}

/// The HF `config.json` of a supported family, chosen by its `model_type`.
#[derive(Debug, Clone)]
pub enum ModelConfig {
    Bert(BertConfig),
    Llama(LlamaConfig),
}

impl ModelConfig {
    /// Reads `config.json` and picks the family: `model_type` decides; a config without one is
    /// BERT when its `architectures` name a BERT class (older sentence-transformers exports).
    pub fn from_file(path: &Path) -> Result<Self, ModelError> {
        let text = std::fs::read_to_string(path).map_err(|e| ModelError::file(path, e))?;
        let raw: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(&text).map_err(|e| ModelError::file(path, format!("invalid JSON: {e}")))?;
        let model_type = raw.get("model_type").and_then(|v| v.as_str()).map(str::to_string);
        let bert_architecture = raw
            .get("architectures")
            .and_then(|v| v.as_array())
            .is_some_and(|a| a.iter().any(|x| x.as_str().is_some_and(|s| s.starts_with("Bert"))));
        const SUPPORTED: &str = "\"bert\", \"llama\", \"mistral\", \"qwen2\"";
        match model_type.as_deref() {
            Some("bert") => Ok(Self::Bert(BertConfig::from_map(path, raw)?)),
            Some(t) if LLAMA_MODEL_TYPES.contains(&t) => Ok(Self::Llama(LlamaConfig::from_map(path, raw)?)),
            None if bert_architecture => Ok(Self::Bert(BertConfig::from_map(path, raw)?)),
            None => Err(ModelError::file(path, format!("field \"model_type\": missing (supported: {SUPPORTED})"))),
            Some(other) => Err(ModelError::file(path, format!("field \"model_type\": {other:?} is not supported (supported: {SUPPORTED})"))),
        }
    }

    pub fn max_position_embeddings(&self) -> usize {
        match self {
            Self::Bert(c) => c.max_position_embeddings,
            Self::Llama(c) => c.max_position_embeddings,
        }
    }

    pub fn vocab_size(&self) -> usize {
        match self {
            Self::Bert(c) => c.vocab_size,
            Self::Llama(c) => c.vocab_size,
        }
    }

    pub fn pad_token_id(&self) -> Option<u32> {
        match self {
            Self::Bert(c) => c.pad_token_id,
            Self::Llama(c) => c.pad_token_id,
        }
    }

    /// Every dropout probability of the family replaced by `p` (a WARM diversity axis). Llama
    /// decoders have attention dropout only (`attention_dropout`).
    pub fn set_dropout(&mut self, p: f64) {
        match self {
            Self::Bert(c) => c.set_dropout(p),
            Self::Llama(c) => c.attention_dropout = p,
        }
    }

    /// The config written into a checkpoint (the family's sequence-classification layout).
    pub fn to_checkpoint_json(&self) -> serde_json::Value {
        match self {
            Self::Bert(c) => c.to_checkpoint_json(),
            Self::Llama(c) => c.to_checkpoint_json(),
        }
    }
}

/// One reward network of any supported family.
#[derive(Module, Debug)]
#[allow(clippy::large_enum_variant)] // one per model, moved rarely
pub enum RewardNetwork {
    Bert(BertRewardModel),
    Llama(LlamaRewardModel),
}

impl RewardNet for RewardNetwork {
    fn forward_with(&self, ids: Tensor<2, Int>, mask: Tensor<2, Bool>, rng: Option<&mut DropoutRng>) -> Tensor<1> {
        match self {
            Self::Bert(m) => m.forward_with(ids, mask, rng),
            Self::Llama(m) => m.forward_with(ids, mask, rng),
        }
    }

    fn forward_frozen_backbone(&self, ids: Tensor<2, Int>, mask: Tensor<2, Bool>, rng: Option<&mut DropoutRng>) -> Tensor<1> {
        match self {
            Self::Bert(m) => m.forward_frozen_backbone(ids, mask, rng),
            Self::Llama(m) => m.forward_frozen_backbone(ids, mask, rng),
        }
    }

    fn forward_features(&self, ids: Tensor<2, Int>, mask: Tensor<2, Bool>, rng: Option<&mut DropoutRng>) -> (Tensor<1>, Tensor<2>) {
        match self {
            Self::Bert(m) => m.forward_features(ids, mask, rng),
            Self::Llama(m) => m.forward_features(ids, mask, rng),
        }
    }

    fn feature_dim(&self) -> usize {
        match self {
            Self::Bert(m) => m.feature_dim(),
            Self::Llama(m) => m.feature_dim(),
        }
    }

    fn hf_params(&self) -> Vec<(String, HfParam<'_>)> {
        match self {
            Self::Bert(m) => m.hf_params(),
            Self::Llama(m) => m.hf_params(),
        }
    }

    fn is_head_param(&self, hf_name: &str) -> bool {
        match self {
            Self::Bert(m) => m.is_head_param(hf_name),
            Self::Llama(m) => m.is_head_param(hf_name),
        }
    }

    fn pooling(&self) -> Pooling {
        match self {
            Self::Bert(m) => m.pooling(),
            Self::Llama(m) => m.pooling(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_decay_names_follow_transformers() {
        for name in ["bert.embeddings.LayerNorm.weight", "classifier.bias", "model.norm.weight", "model.layers.0.input_layernorm.weight", "x.q_norm.weight"] {
            assert!(is_no_decay(name), "{name}");
        }
        for name in ["bert.encoder.layer.0.attention.self.query.weight", "score.weight", "model.embed_tokens.weight", "bert.pooler.dense.weight"] {
            assert!(!is_no_decay(name), "{name}");
        }
    }
}
