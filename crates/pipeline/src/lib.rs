//! rmtrain's pipelines as a library: what `rmtrain recipe` and the evaluation verbs do, callable
//! from Rust. A recipe ([`recipe`]) is read strictly and validated up front; one runner per recipe
//! kind ([`single`], [`warm`]) prepares data, trains, merges and evaluates; [`evaluate`] scores
//! every distinct eval text once per model and computes metrics for models and ensembles alike;
//! [`strength`] measures each pair's preference strength with several models (Secrets of RLHF II);
//! [`report`] writes markdown, JSON and plots. The binary keeps only argument parsing and printing.

pub mod bon;
pub mod dera;
pub mod evaluate;
pub mod interpolate;
pub mod lock;
pub mod rbon;
pub mod recipe;
pub mod report;
pub mod runs;
pub mod scoring;
pub mod secrets;
pub mod settings;
pub mod single;
pub mod slurm;
pub mod strength;
pub mod train_set;
pub mod warm;

pub use evaluate::{evaluate_models, Entry, EvalOptions, Evaluation};
pub use recipe::{read_recipe, Recipe};
pub use scoring::{combine_models, load_reward_model, member_stats, normalize_members, score_models};
pub use settings::{apply_sets, dpo_config_from_sets, parse_toml_strict, train_config_from_sets};
pub use strength::{compute_strength, run_strength, strength_of_pairs, strength_rows, write_strength_pairs, write_strength_report, Strength};
pub use train_set::{prepare_train_set, TrainSet};

/// Errors of the pipelines: those of the crates they drive, and settings that cannot run.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(transparent)]
    Train(#[from] rmtrain_train::TrainError),
    #[error(transparent)]
    Model(#[from] rmtrain_models::ModelError),
    #[error(transparent)]
    Data(#[from] rmtrain_data::DataError),
    #[error(transparent)]
    Merge(#[from] rmtrain_merge::MergeError),
    #[error(transparent)]
    Core(#[from] rmtrain_core::CoreError),
    #[error(transparent)]
    Plot(#[from] rmtrain_eval::PlotError),
    /// A recipe, flag or folder that cannot be used: where, and why.
    #[error("{0}")]
    Config(String),
}

pub type Result<T, E = PipelineError> = std::result::Result<T, E>;

pub(crate) fn config_error(message: impl Into<String>) -> PipelineError {
    PipelineError::Config(message.into())
}
