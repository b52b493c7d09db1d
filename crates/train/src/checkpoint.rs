//! Checkpoint folders of a run: `checkpoints/step-NNNNNN/` holds the HF folder, `rmtrain.json`,
//! and `state/` (optimizer moments as burnpack, `trainer_state.json`: step, seed, data position),
//! enough to continue the same run bit for bit. The final model goes to `model/` without state.

use crate::TrainError;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

pub const STATE_DIR: &str = "state";
pub const OPTIMIZER_FILE: &str = "optimizer.bpk";
pub const TRAINER_STATE_FILE: &str = "trainer_state.json";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TrainerState {
    /// Optimizer steps done.
    pub step: u64,
    pub total_steps: u64,
    pub epoch: u64,
    /// Batches of the current epoch already consumed (the epoch's order is a function of the seed).
    pub position_in_epoch: u64,
    pub seed: u64,
    pub train_data_sha256: Option<String>,
    /// sha256 of the weights the run started from (not of this checkpoint).
    pub init_weights_sha256: String,
    /// sha256 of the training settings a resume must share (see `trainer::resume_fingerprint`).
    pub config_sha256: String,
}

pub fn checkpoints_dir(run: &Path) -> PathBuf {
    run.join("checkpoints")
}

pub fn step_dir(run: &Path, step: u64) -> PathBuf {
    checkpoints_dir(run).join(format!("step-{step:06}"))
}

/// Step checkpoints of a run, oldest first.
pub fn list_checkpoints(run: &Path) -> Vec<(u64, PathBuf)> {
    let Ok(entries) = std::fs::read_dir(checkpoints_dir(run)) else { return Vec::new() };
    let mut found: Vec<(u64, PathBuf)> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let step = name.strip_prefix("step-")?.parse().ok()?;
            e.path().join(STATE_DIR).join(TRAINER_STATE_FILE).is_file().then(|| (step, e.path()))
        })
        .collect();
    found.sort();
    found
}

pub fn read_state(ckpt: &Path) -> Result<TrainerState, TrainError> {
    let path = ckpt.join(STATE_DIR).join(TRAINER_STATE_FILE);
    let text = std::fs::read_to_string(&path).map_err(|e| TrainError::State { path: path.clone(), message: e.to_string() })?;
    serde_json::from_str(&text).map_err(|e| TrainError::State { path, message: format!("invalid trainer state: {e}") })
}

/// The optimizer state of checkpoint `ckpt` loaded into `optim` (its parameter ids are the
/// model's, which the loaders assign in a fixed order).
pub fn load_optimizer(optim: burn::optim::ModuleOptimizer, ckpt: &Path) -> Result<burn::optim::ModuleOptimizer, TrainError> {
    let path = ckpt.join(STATE_DIR).join(OPTIMIZER_FILE);
    optim.load(&path).map_err(|e| TrainError::State { path: path.clone(), message: format!("{e:?}") })
}

/// Writes `state/` into a checkpoint folder being built: the optimizer and the trainer state.
pub fn write_state(dir: &Path, optim: &burn::optim::ModuleOptimizer, state: &TrainerState) -> Result<(), TrainError> {
    let state_dir = dir.join(STATE_DIR);
    std::fs::create_dir_all(&state_dir).map_err(|e| rmtrain_core::CoreError::io(dir, e))?;
    let opt_path = state_dir.join(OPTIMIZER_FILE);
    optim.save(&opt_path).map_err(|e| TrainError::State { path: opt_path.clone(), message: format!("{e:?}") })?;
    rmtrain_core::write_json_atomic(&state_dir.join(TRAINER_STATE_FILE), state)?;
    Ok(())
}

/// AdamW as transformers' Trainer builds it: weight decay `wd` on every parameter except
/// `no_decay` (biases, norm weights), which form a group without it.
pub fn adamw_groups(betas: (f64, f64), epsilon: f64, wd: f64, no_decay: Vec<burn::module::ParamId>) -> burn::optim::ModuleOptimizer {
    let adamw = |wd: f64| crate::adamw::FusedAdamW::new(betas.0 as f32, betas.1 as f32, epsilon as f32, wd as f32);
    burn::optim::ModuleOptimizer::from(adamw(wd)).with_group(burn::module::ParamGroup::from_ids(no_decay), adamw(0.0), None)
}

/// Removes all but the newest `keep` step checkpoints.
pub fn prune(run: &Path, keep: usize) {
    let all = list_checkpoints(run);
    let n = all.len().saturating_sub(keep.max(1));
    for (_, dir) in all.into_iter().take(n) {
        let _ = rmtrain_core::fs::remove_dir_atomic(&dir);
    }
}

/// Before a run starts or resumes in `run`: what a killed earlier process left half-written there
/// (temporary files, partial checkpoint folders, an interrupted replacement of `model/`) is
/// cleaned up, so only whole checkpoints are seen.
pub fn sweep_run_folder(run: &Path) -> Result<(), rmtrain_core::CoreError> {
    let mut done = Vec::new();
    for dir in [run.to_path_buf(), checkpoints_dir(run)] {
        done.extend(rmtrain_core::fs::sweep_stale_temporaries(&dir)?);
    }
    if !done.is_empty() {
        let names: Vec<String> = done.iter().filter_map(|p| p.file_name()).map(|n| n.to_string_lossy().into_owned()).collect();
        eprintln!("rmtrain: cleaned up {} half-written entries of a killed run in {}: {}", done.len(), run.display(), names.join(", "));
    }
    Ok(())
}
