//! Reward models on Burn: one trait every family implements ([`RewardNet`]), the BERT family
//! (BERT, MiniLM) with the exact `BertForSequenceClassification` head, strict HF safetensors
//! loading and saving, and the HF tokenizer with our own padding. A checkpoint is an HF folder
//! transformers can load.

pub mod bert;
pub mod causal_lm;
pub mod config;
pub mod dropout;
pub mod fused;
pub mod gguf;
pub mod hf;
pub mod json_fields;
pub mod llama;
pub(crate) mod params;
pub mod reward_model;
pub mod reward_net;
pub mod tokenizer;

pub use bert::BertRewardModel;
pub use causal_lm::{response_token_logprobs, CausalLm, Finish, GenRequest, Generation, Realign, Sampling};
pub use config::BertConfig;
pub use llama::{LlamaConfig, LlamaLm, LlamaRewardModel};
pub use dropout::{DropoutMask, DropoutRng};
pub use reward_model::{RewardModel, ScoreOptions};
pub use reward_net::{is_no_decay, HfParam, LoadNotes, ModelConfig, Pooling, RewardNet, RewardNetwork};
pub use tokenizer::{Batch, RmTokenizer};

use std::path::PathBuf;

/// Errors of model loading, saving and tokenizing; each names the file and the tensor or key.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("{path}: {message}")]
    File { path: PathBuf, message: String },
    #[error("{path}: strict load failed: {message}")]
    Strict { path: PathBuf, message: String },
    #[error(transparent)]
    Core(#[from] rmtrain_core::CoreError),
}

impl ModelError {
    pub fn file(path: impl Into<PathBuf>, message: impl std::fmt::Display) -> Self {
        Self::File { path: path.into(), message: message.to_string() }
    }
}
