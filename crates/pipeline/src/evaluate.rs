//! Evaluating reward models and ensembles on named pair sets, in one place: every distinct text
//! of every set is scored once per model (pairs drawn from a pool of snippets share most texts),
//! ensembles combine those scores, and each entry gets the pair metrics of `rmtrain-eval` per set
//! (accuracy with a bootstrap interval, top-label ECE, Brier, Spearman against gold margins).

use crate::scoring::{combine_models, score_models};
use crate::Result;
use burn::tensor::Device;
use rmtrain_data::Pair;
use rmtrain_eval::{EvalRow, PairMetrics};
use rmtrain_merge::Combine;
use rmtrain_models::ScoreOptions;
pub use rmtrain_train::evaluate::pair_metrics;
use std::path::{Path, PathBuf};

/// One row of an evaluation.
#[derive(Debug, Clone)]
pub enum Entry {
    /// The rewards of `models[model]`.
    Model { label: String, model: usize },
    /// A prediction ensemble of `models[i]` for i in `members`, combined by `rule` (after
    /// z-normalising each member when `normalize`).
    Ensemble { label: String, members: Vec<usize>, rule: Combine, normalize: bool },
}

impl Entry {
    pub fn label(&self) -> &str {
        match self {
            Self::Model { label, .. } | Self::Ensemble { label, .. } => label,
        }
    }
}

pub struct EvalOptions<'a> {
    /// Truncation length; None = each model's own (its rmtrain.json), else 128.
    pub max_length: Option<usize>,
    pub device: &'a Device,
    /// Seed of the bootstrap intervals.
    pub seed: u64,
    pub progress: bool,
}

pub struct Evaluation {
    pub sets: Vec<String>,
    /// Per entry, in the order given: its label and its metrics per set (in `sets` order).
    pub rows: Vec<(String, Vec<PairMetrics>)>,
    /// Per entry, per set: the reward gaps d = r_chosen − r_rejected of its pairs.
    pub gaps: Vec<Vec<Vec<f64>>>,
    pub distinct_texts: usize,
    /// Distinct texts longer than the models' max_length (scored truncated).
    pub truncated_texts: usize,
}

impl Evaluation {
    /// The long form: one row per (entry, set).
    pub fn eval_rows(&self) -> Vec<EvalRow> {
        self.rows
            .iter()
            .flat_map(|(label, ms)| self.sets.iter().zip(ms).map(|(set, m)| EvalRow { model: label.clone(), set: set.clone(), metrics: m.clone() }))
            .collect()
    }

}

/// Scores every distinct text of `sets` with each of `models` once, then computes every entry's
/// metrics on every set.
pub fn evaluate_models(models: &[PathBuf], entries: &[Entry], sets: &[(String, Vec<Pair>)], opts: &EvalOptions) -> Result<Evaluation> {
    let set_refs: Vec<&[Pair]> = sets.iter().map(|(_, p)| p.as_slice()).collect();
    let (texts, slots) = rmtrain_data::distinct_texts(&set_refs);
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let bar = rmtrain_core::progress_bar(opts.progress, "score", "models", models.len() as u64, 0);
    let scores = score_models(models, &refs, opts.max_length, opts.device, &ScoreOptions::default(), &bar)?;
    let (per_model, truncated_texts) = (scores.per_model, scores.truncated);
    let mut rows = Vec::with_capacity(entries.len());
    let mut gaps = Vec::with_capacity(entries.len());
    for entry in entries {
        let rewards = match entry {
            Entry::Model { model, .. } => per_model[*model].clone(),
            Entry::Ensemble { members, rule, normalize, .. } => {
                let raw: Vec<&[f64]> = members.iter().map(|&i| per_model[i].as_slice()).collect();
                let dirs: Vec<&Path> = members.iter().map(|&i| models[i].as_path()).collect();
                combine_models(&raw, &dirs, *rule, *normalize)?
            }
        };
        let (metrics, entry_gaps): (Vec<PairMetrics>, Vec<Vec<f64>>) = sets
            .iter()
            .zip(&slots)
            .map(|((_, pairs), slot)| {
                let (rc, rr): (Vec<f64>, Vec<f64>) = slot.iter().map(|&(c, r)| (rewards[c], rewards[r])).unzip();
                let m = pair_metrics(pairs, &rc, &rr, opts.seed);
                (m, rc.iter().zip(&rr).map(|(c, r)| c - r).collect())
            })
            .unzip();
        rows.push((entry.label().to_string(), metrics));
        gaps.push(entry_gaps);
    }
    Ok(Evaluation { sets: sets.iter().map(|(n, _)| n.clone()).collect(), rows, gaps, distinct_texts: texts.len(), truncated_texts })
}
