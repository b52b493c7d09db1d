//! Reward models as scorers: loading a folder that must hold a trained head, scoring texts with
//! one or several models, and combining several into a prediction ensemble (z-normalised with the
//! reward statistics each member recorded, then mean / worst / uncertainty).

use crate::{config_error, Result};
use burn::tensor::Device;
use rmtrain_core::ProgressBar;
use rmtrain_merge::{combine, z_normalize, Combine};
use rmtrain_models::{RewardModel, ScoreOptions};
use std::path::{Path, PathBuf};

/// Loads a folder for scoring. It must hold a trained head (a bare backbone would score with a
/// random one). `max_length` None = the one the model was trained with (its rmtrain.json), else
/// 128. Tensors ignored on purpose (pre-training heads) are reported on stderr.
pub fn load_reward_model(dir: &Path, max_length: Option<usize>, device: &Device) -> Result<RewardModel> {
    let max_length = max_length.or_else(|| rmtrain_core::Manifest::read(dir).ok().and_then(|m| m.max_length)).unwrap_or(128);
    let rm = refuse_untrained(dir, RewardModel::load(dir, max_length, device)?)?;
    for note in &rm.notes.ignored {
        eprintln!("rmtrain: info: {}: ignored {note}", dir.display());
    }
    Ok(rm)
}

/// `rm` (loaded from `dir`) when its head was loaded, an error when any of it would be random.
pub fn refuse_untrained(dir: &Path, rm: RewardModel) -> Result<RewardModel> {
    if rm.notes.initialised.is_empty() {
        return Ok(rm);
    }
    Err(config_error(format!("{}: not a reward model: {} would be random (train it first)", dir.display(), rm.notes.initialised.join(", "))))
}

/// The reward mean/std a member recorded on its reference set (rmtrain.json).
pub fn member_stats(dir: &Path) -> Result<(f64, f64)> {
    let m = rmtrain_core::Manifest::read(dir)
        .map_err(|e| config_error(format!("{}: an ensemble member needs its rmtrain.json (or combine raw rewards): {e}", dir.display())))?;
    match (m.reward_mean, m.reward_std) {
        (Some(mean), Some(std)) => Ok((mean, std)),
        _ => Err(config_error(format!(
            "{}: rmtrain.json has no reward_mean/reward_std to z-normalise with (combine raw rewards instead)",
            dir.join("rmtrain.json").display()
        ))),
    }
}

/// Rewards of `texts` by each model (raw), and how many texts the models truncated (the largest
/// count over models: they may have different max_length).
pub struct Scores {
    pub per_model: Vec<Vec<f64>>,
    pub truncated: usize,
}

/// Scores `texts` with every model in `models`, one model in memory at a time; `bar` advances
/// by one per model (pass `ProgressBar::hidden()` for none).
pub fn score_models(models: &[PathBuf], texts: &[&str], max_length: Option<usize>, device: &Device, opts: &ScoreOptions, bar: &ProgressBar) -> Result<Scores> {
    let mut per_model = Vec::with_capacity(models.len());
    let mut truncated = 0;
    for dir in models {
        let rm = load_reward_model(dir, max_length, device)?;
        let (rewards, cut) = rm.score_texts_counting(texts, opts)?;
        truncated = truncated.max(cut);
        per_model.push(rewards.into_iter().map(f64::from).collect());
        bar.inc(1);
    }
    bar.finish_and_clear();
    Ok(Scores { per_model, truncated })
}

/// Each model's raw rewards z-normalised with the statistics in its manifest (`dirs[i]`).
pub fn normalize_members(raw: &[&[f64]], dirs: &[&Path]) -> Result<Vec<Vec<f64>>> {
    raw.iter()
        .zip(dirs)
        .map(|(r, dir)| {
            let (mean, std) = member_stats(dir)?;
            Ok(z_normalize(r, mean, std))
        })
        .collect()
}

/// One reward per text from several models' raw rewards: each member z-normalised with its
/// manifest statistics (unless `normalize` is false), then combined by `rule`.
pub fn combine_models(raw: &[&[f64]], dirs: &[&Path], rule: Combine, normalize: bool) -> Result<Vec<f64>> {
    let members = if normalize { normalize_members(raw, dirs)? } else { raw.iter().map(|r| r.to_vec()).collect() };
    Ok(combine(&members, rule))
}
