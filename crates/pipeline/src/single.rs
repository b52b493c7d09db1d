//! A recipe without `[members]`: prepare the data, train one reward model, evaluate it on every
//! eval set, write `report.md` / `report.json` into the run folder.

use crate::recipe::Recipe;
use crate::report::{write_single_report, SingleReport};
use crate::train_set::prepare_train_set;
use crate::Result;
use burn::tensor::Device;
use rmtrain_train::trainer::Trainable;
use rmtrain_train::TrainRequest;
use std::time::Instant;

pub struct RunOptions<'a> {
    pub device: &'a Device,
    /// More devices the training replicas spread over (`TrainRequest::replica_devices`).
    pub replica_devices: &'a [Device],
    /// Continue the run from its newest checkpoint.
    pub resume: bool,
    pub progress: bool,
}

/// Runs a single-model recipe end to end and returns its report (also written to disk).
pub fn run_single(recipe: &Recipe, opts: &RunOptions) -> Result<SingleReport> {
    let started = Instant::now();
    let eval_sets = recipe.prepare_data()?;
    let set = prepare_train_set(&recipe.data.train, recipe.train.max_train_pairs, recipe.data.flip_fraction, recipe.data.flip_seed)?;
    if set.flipped > 0 {
        eprintln!("recipe {}: flipped {} train labels (data.flip_fraction = {})", recipe.name, set.flipped, recipe.data.flip_fraction);
    }
    eprintln!(
        "recipe {}: {} train pairs, eval sets: {}",
        recipe.name,
        set.pairs.len(),
        eval_sets.iter().map(|(n, s)| format!("{n} ({})", s.len())).collect::<Vec<_>>().join(", ")
    );
    let outcome = rmtrain_train::train(TrainRequest {
        init: recipe.model.backbone.clone(),
        train_data_sha256: Some(set.data_sha256),
        train_pairs: set.pairs,
        evals: eval_sets,
        config: recipe.train.clone(),
        out: recipe.out.clone(),
        resume: opts.resume,
        recipe: serde_json::to_value(recipe).expect("a recipe serializes"),
        device: opts.device.clone(),
        replica_devices: opts.replica_devices.to_vec(),
        progress: opts.progress,
        trainable: Trainable::All,
    })?;
    let report = SingleReport { outcome, wall_seconds: started.elapsed().as_secs_f64() };
    write_single_report(recipe, &report)?;
    Ok(report)
}
