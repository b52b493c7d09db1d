//! Reward-model training: the Bradley–Terry family of losses, the learning-rate schedule, and the
//! explicit training loop with global-norm clipping, gradient accumulation, evaluation,
//! checkpoints and exact resume.

pub mod adamw;
pub mod checkpoint;
pub mod config;
pub mod dpo;
pub mod contrastive;
pub mod evaluate;
pub mod losses;
pub mod schedule;
pub mod trainer;

pub use config::{AdaptiveMargin, ContrastiveConfig, ContrastiveKind, FlipConfig, LossConfig, MetaRmConfig, Schedule, SmoothingPairs, TrainConfig};
pub use dpo::{encode_dpo_pairs, train_dpo, DpoConfig, DpoExample, DpoLoss, DpoOutcome, DpoRequest};
pub use evaluate::{evaluate_pairs_with_model, pair_metrics, score_pairs};
pub use trainer::{train, TrainOutcome, TrainRequest};

/// Errors of training; each names the file or setting that failed.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error(transparent)]
    Model(#[from] rmtrain_models::ModelError),
    #[error(transparent)]
    Core(#[from] rmtrain_core::CoreError),
    #[error("{0}")]
    Config(String),
    /// A train pair the settings cannot use; the caller knows the file (see [`TrainError::in_file`]).
    #[error("train pairs, line {line}: {message}")]
    TrainPair { line: usize, message: String },
    #[error("{path}: {message}")]
    State { path: std::path::PathBuf, message: String },
    /// Training diverged: stopped before the step that would have written NaN/inf into the model.
    #[error("training diverged at step {step}: the {what} is not finite ({value}); nothing was saved for this step (lower train.lr, or check the data)")]
    NonFinite { step: u64, what: String, value: f64 },
}

impl TrainError {
    /// The error with the train file named: `FILE:LINE: message` for a bad train pair.
    pub fn in_file(self, path: &std::path::Path) -> Self {
        match self {
            Self::TrainPair { line, message } => Self::Config(format!("{}:{line}: {message}", path.display())),
            other => other,
        }
    }
}
