//! Scoring preference pairs with a reward model: each distinct text is scored once (pairs share
//! snippets), then the pair metrics of `rmtrain-eval` are computed against the stored labels.

use rmtrain_data::{distinct_texts, Pair};
use rmtrain_eval::PairMetrics;
use rmtrain_models::{ModelError, RewardModel, ScoreOptions};

/// Rewards (chosen, rejected) of every pair, in order.
pub fn score_pairs(rm: &RewardModel, pairs: &[Pair], opts: &ScoreOptions) -> Result<(Vec<f64>, Vec<f64>), ModelError> {
    let (texts, slots) = distinct_texts(&[pairs]);
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let rewards = rm.score_texts(&refs, opts)?;
    Ok(slots[0].iter().map(|&(c, r)| (rewards[c] as f64, rewards[r] as f64)).unzip())
}

/// Accuracy, ECE, Brier and (with gold margins on every pair) Spearman of the reward gap.
pub fn evaluate_pairs_with_model(rm: &RewardModel, pairs: &[Pair], opts: &ScoreOptions, seed: u64) -> Result<PairMetrics, ModelError> {
    let (rc, rr) = score_pairs(rm, pairs, opts)?;
    Ok(pair_metrics(pairs, &rc, &rr, seed))
}

/// The metrics of rewards (chosen, rejected) of `pairs`; Spearman against the gold margin when
/// every pair has one. `seed` drives the bootstrap interval.
pub fn pair_metrics(pairs: &[Pair], r_chosen: &[f64], r_rejected: &[f64], seed: u64) -> PairMetrics {
    let gold: Option<Vec<f64>> = pairs.iter().map(|p| p.gold_margin).collect();
    rmtrain_eval::evaluate_pairs(r_chosen, r_rejected, gold.as_deref(), seed)
}
