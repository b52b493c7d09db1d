//! `rmtrain.json`, the manifest beside every checkpoint's HF files: what produced the weights
//! (resolved recipe, seed, step), what they were trained on and from (sha256 of the train data and
//! of the init weights), the final metrics, and reward normalisation statistics for ensembles.

use crate::CoreError;
use serde::{Deserialize, Serialize};
use std::path::Path;

pub const MANIFEST_FILE: &str = "rmtrain.json";

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Manifest {
    /// Format version of this file.
    pub rmtrain_version: String,
    /// What made this checkpoint: "train", "average", "import".
    pub kind: String,
    /// The recipe as resolved (defaults filled in), as JSON.
    pub recipe: serde_json::Value,
    pub seed: u64,
    pub step: u64,
    pub train_data_sha256: Option<String>,
    /// sha256 of the init weights' safetensors file: equal values mean a shared init (WARM).
    pub init_weights_sha256: Option<String>,
    /// How the reward is read from the backbone, e.g. "bert_pooler_cls".
    pub pooling: String,
    /// Reward mean/std on a reference set, for z-normalised ensembles.
    pub reward_mean: Option<f64>,
    pub reward_std: Option<f64>,
    pub final_metrics: serde_json::Value,
    /// Truncation length the model was trained (and its reward statistics computed) with.
    pub max_length: Option<usize>,
    /// The resolved training settings, to tell whether a finished run matches a recipe.
    pub train_config: serde_json::Value,
    /// For averaged checkpoints: member folders and their weights.
    pub members: Vec<serde_json::Value>,
}

impl Manifest {
    pub fn read(dir: &Path) -> Result<Self, CoreError> {
        let path = dir.join(MANIFEST_FILE);
        let text = std::fs::read_to_string(&path).map_err(|e| CoreError::io(&path, e))?;
        serde_json::from_str(&text).map_err(|e| CoreError::Json { path, source: e })
    }

    pub fn write(&self, dir: &Path) -> Result<(), CoreError> {
        crate::write_json_atomic(&dir.join(MANIFEST_FILE), self)
    }
}
