//! What every recipe runner does with a run folder: reuse a finished run of the same settings,
//! data and init, resume a stopped one, or train it; and the shared linear probe (LP-FT) that WARM
//! members and ablation arms start from, built once under a lock.

use crate::lock::FileLock;
use crate::Result;
use rmtrain_train::trainer::{can_resume, Trainable};
use rmtrain_train::{Schedule, TrainConfig, TrainRequest};
use std::path::{Path, PathBuf};

/// The settings of a shared linear probe (LP-FT): `train` at a constant `lr` for `steps` steps,
/// without warm-up or step checkpoints; the backbone methods (MetaRM, contrastive) are off, as
/// only the head learns.
pub(crate) fn probe_config(train: &TrainConfig, steps: u64, lr: f64) -> TrainConfig {
    let mut probe = TrainConfig {
        lr,
        schedule: Schedule::Constant,
        warmup_ratio: 0.0,
        warmup_steps: Some(0),
        max_steps: Some(steps),
        save_every: 0,
        keep_checkpoints: 1,
        metarm: None,
        ..train.clone()
    };
    probe.loss.contrastive = None;
    probe
}

/// What `model` holds against a run of `cfg` on this data from this init.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FinishedRun {
    /// A finished run of exactly these settings, data and init: reusable.
    Matches,
    /// A finished run of other settings, data or init.
    Differs,
    Missing,
}

pub(crate) fn finished_run(model: &Path, cfg: &TrainConfig, data_sha: &str, init: &Path) -> Result<FinishedRun> {
    let Ok(m) = rmtrain_core::Manifest::read(model) else { return Ok(FinishedRun::Missing) };
    if !model.join("model.safetensors").is_file() {
        return Ok(FinishedRun::Missing);
    }
    let init_sha = rmtrain_models::hf::weights_sha256(init).ok();
    let same = m.train_config == serde_json::to_value(cfg).expect("a config serializes")
        && m.train_data_sha256.as_deref() == Some(data_sha)
        && m.init_weights_sha256 == init_sha;
    Ok(if same { FinishedRun::Matches } else { FinishedRun::Differs })
}

/// Whether `model` is a finished run of exactly `cfg` on this data from this init (reusable);
/// says so when a finished run of other settings will be trained again.
pub(crate) fn finished_run_matches(model: &Path, cfg: &TrainConfig, data_sha: &str, init: &Path) -> Result<bool> {
    let found = finished_run(model, cfg, data_sha, init)?;
    if found == FinishedRun::Differs {
        eprintln!("rmtrain: {} was trained with other settings, data or init: training it again", model.display());
    }
    Ok(found == FinishedRun::Matches)
}

/// The shared init in `req.out` (a head-only run): reused when a finished probe matches, else
/// trained from scratch, under the lock `<out>.lock` so parallel processes build it once. Returns
/// its model folder.
pub(crate) fn linear_probe(mut req: TrainRequest, who: &str) -> Result<PathBuf> {
    req.trainable = Trainable::HeadOnly;
    let init = req.out.join("model");
    let _lock = FileLock::acquire(&req.out.with_extension("lock"), &format!("{who}: shared init"))?;
    if finished_run_matches(&init, &req.config, req.train_data_sha256.as_deref().unwrap_or(""), &req.init)? {
        return Ok(init);
    }
    eprintln!("{who}: shared init: new head (seed {}), linear probe {} steps", req.config.seed, req.config.max_steps.unwrap_or(0));
    let _ = std::fs::remove_dir_all(&req.out); // an interrupted probe restarts from scratch
    rmtrain_train::train(req)?;
    Ok(init)
}

/// `req` reused when its folder holds a finished run of these settings, data and init; resumed
/// when its newest checkpoint is a stop of this run; else trained fresh. `label` and `detail`
/// name it in the progress lines; a bad train pair is reported against `data`. Returns whether
/// it trained.
pub(crate) fn reuse_or_train(mut req: TrainRequest, who: &str, label: &str, detail: &str, data: &Path) -> Result<bool> {
    let model = req.out.join("model");
    if finished_run_matches(&model, &req.config, req.train_data_sha256.as_deref().unwrap_or(""), &req.init)? {
        eprintln!("{who}: {label} already trained, reusing {}", model.display());
        return Ok(false);
    }
    req.resume = can_resume(&req)?;
    eprintln!("{who}: training {label}{detail}{}", if req.resume { " (resuming its newest checkpoint)" } else { "" });
    rmtrain_train::train(req).map_err(|e| e.in_file(data))?;
    Ok(true)
}
