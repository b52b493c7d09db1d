//! Combining reward models: WARM weight averaging streamed from safetensors files (no model in
//! memory), and prediction ensembles over z-normalised member rewards.

pub mod average;
pub mod ensemble;
pub mod safetensors_stream;

pub use average::{average_checkpoints, interpolate_tensors, AverageOptions, AverageReport, NamedTensor};
pub use ensemble::{combine, z_normalize, Combine};

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum MergeError {
    #[error("{path}: {message}")]
    File { path: PathBuf, message: String },
    /// The folders cannot be averaged: what differs, and where.
    #[error("cannot average: {0}")]
    Mismatch(String),
    #[error("{0}")]
    Options(String),
    #[error(transparent)]
    Core(#[from] rmtrain_core::CoreError),
}

impl MergeError {
    pub fn file(path: impl Into<PathBuf>, message: impl std::fmt::Display) -> Self {
        Self::File { path: path.into(), message: message.to_string() }
    }
}
