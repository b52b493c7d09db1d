//! Preference strength by multi-RM voting, after "Secrets of RLHF in Large Language Models Part II:
//! Reward Modeling" (Wang et al. 2024, §2.2, Eq. 4, https://arxiv.org/abs/2401.06080): M reward
//! models trained on the same pairs each score every pair, d_m = r_m(chosen) − r_m(rejected), and
//! the pair's strength is μ̂ = mean_m d_m with spread σ̂ = population std (÷ M) of the d_m. The gaps
//! are raw rewards, not z-normalised, as in the paper; μ̂ < 0 marks a likely wrong label.
//!
//! [`run_strength`] is what `rmtrain strength` (and a recipe stage) runs: score, write every input
//! line back with `strength_mean` / `strength_std` / `strength_gaps`, summarize (share μ̂ < 0, label
//! accuracy per μ̂ decile, μ̂ < 0 as a wrong-label detector) and write the report.

use crate::scoring::score_models;
use crate::{config_error, Result};
use burn::tensor::Device;
use rmtrain_data::Pair;
use rmtrain_eval::{strength_markdown, strength_stats, summarize_strength, BarSeries, StrengthRow, StrengthSummary};
use rmtrain_models::ScoreOptions;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

/// Bins of the μ̂ histogram: enough to show the negative tail of a few thousand pairs.
const HISTOGRAM_BINS: usize = 40;

/// The strength of each pair of a set, in the set's order.
#[derive(Debug, Clone, PartialEq)]
pub struct Strength {
    /// Per pair, per model (in the order the models were given): d_m = r_m(chosen) − r_m(rejected).
    pub gaps: Vec<Vec<f64>>,
    /// Per pair: μ̂, the mean of its gaps.
    pub mean: Vec<f64>,
    /// Per pair: σ̂, the population std of its gaps.
    pub std: Vec<f64>,
    /// Distinct texts longer than a model's max_length (scored truncated; the largest count over models).
    pub truncated_texts: usize,
}

impl Strength {
    /// From each model's rewards of distinct texts (`per_model[m][t]`) and each pair's (chosen,
    /// rejected) text index, as `rmtrain_data::distinct_texts` gives them.
    fn from_rewards(per_model: &[Vec<f64>], slots: &[(usize, usize)], truncated_texts: usize) -> Self {
        let gaps: Vec<Vec<f64>> = slots.iter().map(|&(c, r)| per_model.iter().map(|rewards| rewards[c] - rewards[r]).collect()).collect();
        let (mean, std) = gaps.iter().map(|d| strength_stats(d)).unzip();
        Self { gaps, mean, std, truncated_texts }
    }
}

fn require_two_models(models: &[PathBuf]) -> Result<()> {
    match models.len() {
        0 | 1 => Err(config_error(format!("preference strength needs at least 2 models (the paper uses 10), got {}", models.len()))),
        _ => Ok(()),
    }
}

/// Scores every distinct text of `pairs` once per model (one model in memory at a time) and
/// computes each pair's gaps, μ̂ and σ̂. `max_length` None = each model's own (its rmtrain.json).
/// Fewer than 2 models is an error: one model's σ̂ would be 0 for every pair.
pub fn compute_strength(models: &[PathBuf], pairs: &[Pair], max_length: Option<usize>, device: &Device, progress: bool) -> Result<Strength> {
    require_two_models(models)?;
    let (texts, slots) = rmtrain_data::distinct_texts(&[pairs]);
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let bar = rmtrain_core::progress_bar(progress, "strength", "models", models.len() as u64, 0);
    let scores = score_models(models, &refs, max_length, device, &ScoreOptions::default(), &bar)?;
    Ok(Strength::from_rewards(&scores.per_model, &slots[0], scores.truncated))
}

/// Writes every pair's input fields as they were, plus `strength_mean` (μ̂), `strength_std` (σ̂)
/// and `strength_gaps` (one per model, in the order the models were given), one JSON line per
/// pair, atomically. A field of that name already on the line (a file measured before) is replaced
/// in place.
pub fn write_strength_pairs(path: &Path, pairs: &[Pair], strength: &Strength) -> Result<()> {
    let mut out = Vec::new();
    for (i, pair) in pairs.iter().enumerate() {
        let mut fields = pair.fields.clone();
        fields.insert("strength_mean".into(), json!(strength.mean[i]));
        fields.insert("strength_std".into(), json!(strength.std[i]));
        fields.insert("strength_gaps".into(), json!(strength.gaps[i]));
        serde_json::to_writer(&mut out, &fields).expect("a map of JSON values always serializes");
        out.push(b'\n');
    }
    Ok(rmtrain_core::write_atomic(path, &out)?)
}

/// The summary rows of `pairs`: μ̂, σ̂, the gold margin, and whether the label is known to be wrong:
/// `chosen_mean < rejected_mean` when both are numbers (VADER pairs carry each side's mean human
/// rating, and a label flip swaps them with their texts), unknown otherwise.
pub fn strength_rows(pairs: &[Pair], strength: &Strength) -> Vec<StrengthRow> {
    pairs
        .iter()
        .enumerate()
        .map(|(i, pair)| {
            let side_mean = |key: &str| pair.fields.get(key).and_then(Value::as_f64);
            let label_wrong = match (side_mean("chosen_mean"), side_mean("rejected_mean")) {
                (Some(chosen), Some(rejected)) => Some(chosen < rejected),
                _ => None,
            };
            StrengthRow { mu: strength.mean[i], sigma: strength.std[i], gold_margin: pair.gold_margin, label_wrong }
        })
        .collect()
}

/// Writes into `dir`: `strength.json` (the summary and `model_dirs`), `strength.md`, and under
/// `plots/` the μ̂ histogram (`strength_histogram.png`) and the label accuracy against gold per μ̂
/// decile (`strength_deciles.png`, only when some pair has a gold margin), each file atomically.
pub fn write_strength_report(dir: &Path, summary: &StrengthSummary, mean: &[f64], models: &[PathBuf]) -> Result<()> {
    rmtrain_eval::histogram(
        &dir.join("plots/strength_histogram.png"),
        &format!("Preference strength of {} pairs ({} reward models)", summary.pairs, summary.models),
        "mean reward gap over the models (chosen − rejected)",
        mean,
        HISTOGRAM_BINS,
    )?;
    let has_gold = summary.deciles.iter().any(|d| d.accuracy.is_some());
    if has_gold {
        // Groups are named by decile and its mean gap, so the x axis reads as strength.
        let groups: Vec<String> = summary.deciles.iter().map(|d| format!("{} ({:+.2})", d.index, d.mean_mu)).collect();
        let accuracy = BarSeries {
            label: "label agrees with gold".into(),
            values: summary.deciles.iter().map(|d| d.accuracy.unwrap_or(f64::NAN)).collect(),
            intervals: None,
        };
        rmtrain_eval::bar_chart_grouped(
            &dir.join("plots/strength_deciles.png"),
            "Labels agreeing with gold by strength decile (1 = weakest; mean gap in parentheses)",
            &groups,
            &[accuracy],
            Some((0.0, 1.0)),
        )?;
    }
    let model_list: Vec<String> = models.iter().map(|m| format!("`{}`", m.display())).collect();
    let plots = if has_gold {
        "`plots/strength_histogram.png`, `plots/strength_deciles.png`"
    } else {
        "`plots/strength_histogram.png` (no pair has a gold margin: no accuracy by decile)"
    };
    let md = format!(
        "# Preference strength\n\nμ̂ = mean over the reward models of r(chosen) − r(rejected) (raw rewards), σ̂ = their population std (Secrets of RLHF II, Eq. 4). Models: {}.\n\n{}\nPlots: {plots}.\n",
        model_list.join(", "),
        strength_markdown(summary)
    );
    let mut json = serde_json::to_value(summary).expect("a strength summary serializes");
    if let Value::Object(fields) = &mut json {
        fields.insert("model_dirs".into(), json!(models));
    }
    rmtrain_core::write_json_atomic(&dir.join("strength.json"), &json)?;
    rmtrain_core::write_atomic(&dir.join("strength.md"), md.as_bytes())?;
    Ok(())
}

/// Measures the preference strength of the pairs in `data` with `models`: writes `out` (the input
/// lines with their strength) and, when `report_dir` is given, the report there. Everything is
/// computed before the first file is written.
pub fn run_strength(
    models: &[PathBuf],
    data: &Path,
    out: &Path,
    report_dir: Option<&Path>,
    max_length: Option<usize>,
    device: &Device,
    progress: bool,
) -> Result<StrengthSummary> {
    require_two_models(models)?; // before reading the data
    strength_of_pairs(models, &rmtrain_data::read_pairs(data)?, out, report_dir, max_length, device, progress)
}

/// [`run_strength`] on pairs already read (a recipe's train pairs).
pub fn strength_of_pairs(
    models: &[PathBuf],
    pairs: &[Pair],
    out: &Path,
    report_dir: Option<&Path>,
    max_length: Option<usize>,
    device: &Device,
    progress: bool,
) -> Result<StrengthSummary> {
    let strength = compute_strength(models, pairs, max_length, device, progress)?;
    if strength.truncated_texts > 0 {
        eprintln!(
            "rmtrain: info: {} distinct texts are longer than max_length tokens and were scored truncated (cut from the right)",
            strength.truncated_texts
        );
    }
    let summary = summarize_strength(&strength_rows(pairs, &strength), models.len());
    write_strength_pairs(out, pairs, &strength)?;
    if let Some(dir) = report_dir {
        write_strength_report(dir, &summary, &strength.mean, models)?;
    }
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(line: Value) -> Pair {
        rmtrain_data::parse_pair_line(line, Path::new("test.jsonl"), 1).expect("a valid pair")
    }

    #[test]
    fn gaps_mean_and_population_std_by_hand() {
        // Texts 0..4; pair 0 = (0, 1), pair 1 = (2, 3), pair 2 = (1, 0) (the first, reversed).
        let per_model = vec![vec![1.0, 0.0, 2.0, 5.0], vec![3.0, 0.0, 2.0, 3.0], vec![2.0, 1.0, 0.0, 0.5]];
        let s = Strength::from_rewards(&per_model, &[(0, 1), (2, 3), (1, 0)], 4);
        assert_eq!(s.gaps, vec![vec![1.0, 3.0, 1.0], vec![-3.0, -1.0, -0.5], vec![-1.0, -3.0, -1.0]]);
        // Pair 0: μ̂ = 5/3, σ̂² = ((1 − 5/3)² · 2 + (3 − 5/3)²) / 3 = (8/9 + 16/9) / 3 = 8/9 (÷ M, not M − 1).
        assert!((s.mean[0] - 5.0 / 3.0).abs() < 1e-12 && (s.std[0] - (8.0f64 / 9.0).sqrt()).abs() < 1e-12, "{s:?}");
        // Pair 1: μ̂ = −1.5, deviations −1.5, 0.5, 1 → σ̂² = (2.25 + 0.25 + 1) / 3.
        assert!((s.mean[1] + 1.5).abs() < 1e-12 && (s.std[1] - (3.5f64 / 3.0).sqrt()).abs() < 1e-12, "{s:?}");
        // Swapping chosen and rejected negates μ̂ and keeps σ̂.
        assert_eq!((s.mean[2], s.std[2]), (-s.mean[0], s.std[0]));
        assert_eq!(s.truncated_texts, 4);
    }

    #[test]
    fn fewer_than_two_models_is_refused_with_the_count() {
        let pairs = vec![pair(json!({"chosen": "a", "rejected": "b"}))];
        for models in [vec![], vec![PathBuf::from("/nonexistent/one-model")]] {
            let err = compute_strength(&models, &pairs, None, &Device::flex(), false).expect_err("one model is not an ensemble").to_string();
            assert!(err.contains("at least 2 models") && err.contains(&format!("got {}", models.len())), "{err}");
        }
    }

    #[test]
    fn rows_know_a_label_is_wrong_only_from_both_side_means() {
        let pairs = vec![
            pair(json!({"chosen": "a", "rejected": "b", "gold_margin": -0.5, "chosen_mean": 1.0, "rejected_mean": 1.5})),
            pair(json!({"chosen": "a", "rejected": "b", "gold_margin": 0.5, "chosen_mean": 2, "rejected_mean": 1.5})),
            pair(json!({"chosen": "a", "rejected": "b", "chosen_mean": 1.0})),
            pair(json!({"chosen": "a", "rejected": "b", "chosen_mean": "1.0", "rejected_mean": 2.0})),
        ];
        let s = Strength::from_rewards(&[vec![0.0, 1.0], vec![0.0, 3.0]], &[(0, 1); 4], 0);
        let rows = strength_rows(&pairs, &s);
        assert_eq!(rows.iter().map(|r| r.label_wrong).collect::<Vec<_>>(), [Some(true), Some(false), None, None]);
        assert_eq!(rows.iter().map(|r| r.gold_margin).collect::<Vec<_>>(), [Some(-0.5), Some(0.5), None, None]);
        assert!(rows.iter().all(|r| r.mu == -2.0 && r.sigma == 1.0), "{rows:?}");
    }

    #[test]
    fn strength_lines_keep_every_input_field_in_order() {
        let pairs = vec![
            pair(json!({"prompt": "Q: ", "chosen": "a", "rejected": "b", "id": 7, "strength_mean": 9.5, "meta": {"k": [1, 2]}})),
            pair(json!({"chosen": [{"role": "assistant", "content": "a"}], "rejected": [{"role": "assistant", "content": "b"}]})),
        ];
        let s = Strength::from_rewards(&[vec![2.0, 1.0], vec![1.0, 1.0]], &[(0, 1), (1, 0)], 0);
        let path = std::env::temp_dir().join(format!("rmtrain-strength-lines-{}.jsonl", std::process::id()));
        write_strength_pairs(&path, &pairs, &s).expect("write");
        let text = std::fs::read_to_string(&path).expect("read");
        let _ = std::fs::remove_file(&path);
        let lines: Vec<serde_json::Map<String, Value>> = text.lines().map(|l| serde_json::from_str(l).expect("json")).collect();
        assert_eq!(lines.len(), 2);
        let keys: Vec<&str> = lines[0].keys().map(String::as_str).collect();
        // A stale strength field is replaced where it stood; the new ones follow the input's.
        assert_eq!(keys, ["prompt", "chosen", "rejected", "id", "strength_mean", "meta", "strength_std", "strength_gaps"]);
        for (line, pair) in lines.iter().zip(&pairs) {
            for (key, value) in pair.fields.iter().filter(|(k, _)| !k.starts_with("strength_")) {
                assert_eq!(line.get(key), Some(value), "{key}");
            }
        }
        assert_eq!((&lines[0]["strength_mean"], &lines[0]["strength_std"], &lines[0]["strength_gaps"]), (&json!(0.5), &json!(0.5), &json!([1.0, 0.0])));
        assert_eq!((&lines[1]["strength_mean"], &lines[1]["strength_std"]), (&json!(-0.5), &json!(0.5)));
    }
}
