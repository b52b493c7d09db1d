//! Preference strength of a pair as measured by an ensemble of reward models, after "Secrets of
//! RLHF in Large Language Models Part II: Reward Modeling" (Wang et al. 2024, §2.2,
//! https://arxiv.org/abs/2401.06080): M models each score the pair, d_m = r_m(chosen) −
//! r_m(rejected), and the pair's strength is μ̂ = mean_m d_m with spread σ̂ = population std of
//! the d_m. The paper reads μ̂ < 0 as a likely wrong label and shows label accuracy rising with
//! the μ̂ decile; this file summarizes both (share μ̂ < 0, accuracy per decile against a gold
//! rating, how well μ̂ < 0 finds labels known to be wrong) and renders the summary as Markdown.

use crate::metrics::spearman;
use crate::report::{num, render_markdown_table, Align, MISSING};
use serde::Serialize;

/// One preference pair's strength and what is known about its label.
#[derive(Debug, Clone, PartialEq)]
pub struct StrengthRow {
    /// μ̂: mean over the models of r_m(chosen) − r_m(rejected).
    pub mu: f64,
    /// σ̂: population std of those gaps.
    pub sigma: f64,
    /// Gold rating of chosen − gold rating of rejected (e.g. mean of several raters), when known.
    pub gold_margin: Option<f64>,
    /// Some(true) when the label disagrees with the gold rating (for VADER single-rater files:
    /// `chosen_mean < rejected_mean`); None when unknown.
    pub label_wrong: Option<bool>,
}

/// (μ̂, σ̂) of one pair's per-model gaps d_m: the mean and the population std (÷ M, as in the
/// paper). (NaN, NaN) for no gaps; a NaN gap makes both NaN.
pub fn strength_stats(gaps: &[f64]) -> (f64, f64) {
    let m = gaps.len() as f64;
    let mu = gaps.iter().sum::<f64>() / m;
    let var = gaps.iter().map(|d| (d - mu).powi(2)).sum::<f64>() / m;
    (mu, var.sqrt())
}

/// The pairs of one μ̂ decile.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StrengthDecile {
    /// 1..=10; 1 holds the lowest μ̂.
    pub index: usize,
    pub pairs: usize,
    pub mu_min: f64,
    pub mu_max: f64,
    pub mean_mu: f64,
    pub mean_sigma: f64,
    /// Share of the pairs with a gold margin whose margin is > 0 (the label agrees with gold; a
    /// gold tie counts as disagreeing, as ties do in `pairwise_accuracy`); None when no pair has one.
    pub accuracy: Option<f64>,
    /// Mean gold margin over the pairs that have one.
    pub mean_gold_margin: Option<f64>,
}

/// How well the paper's rule "μ̂ < 0 ⇒ wrong label" finds the labels known to be wrong, over the
/// pairs whose `label_wrong` is known.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Detection {
    pub labels_wrong: usize,
    /// Pairs with μ̂ < 0.
    pub flagged: usize,
    /// Flagged pairs whose label is wrong.
    pub true_positives: usize,
    /// true_positives / flagged; None when nothing is flagged.
    pub precision: Option<f64>,
    /// true_positives / labels_wrong; None when no label is wrong.
    pub recall: Option<f64>,
    /// 2PR / (P + R); 0 when both are 0, None when either is None.
    pub f1: Option<f64>,
}

/// Preference strength over a set of pairs. Means are over all pairs (a NaN μ̂ or σ̂ makes them NaN);
/// an empty set gives NaN means, no deciles and no detection.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StrengthSummary {
    pub pairs: usize,
    /// M, the reward models behind each μ̂.
    pub models: usize,
    /// Share of the pairs with μ̂ < 0.
    pub share_negative: f64,
    pub mean_mu: f64,
    pub mean_sigma: f64,
    /// Spearman ρ(μ̂, gold margin) over the pairs that have a gold margin.
    pub spearman_gold: Option<f64>,
    /// Up to 10 groups of pairs by ascending μ̂, sizes differing by at most 1.
    pub deciles: Vec<StrengthDecile>,
    pub detection: Option<Detection>,
}

const DECILES: usize = 10;

fn mean(xs: impl Iterator<Item = f64>) -> Option<f64> {
    let (n, sum) = xs.fold((0usize, 0.0), |(n, sum), x| (n + 1, sum + x));
    (n > 0).then(|| sum / n as f64)
}

fn ratio(num: usize, den: usize) -> Option<f64> {
    (den > 0).then(|| num as f64 / den as f64)
}

fn decile(index: usize, rows: &[&StrengthRow]) -> StrengthDecile {
    let golds: Vec<f64> = rows.iter().filter_map(|r| r.gold_margin).collect();
    StrengthDecile {
        index,
        pairs: rows.len(),
        mu_min: rows.iter().map(|r| r.mu).fold(f64::INFINITY, f64::min),
        mu_max: rows.iter().map(|r| r.mu).fold(f64::NEG_INFINITY, f64::max),
        mean_mu: mean(rows.iter().map(|r| r.mu)).unwrap_or(f64::NAN),
        mean_sigma: mean(rows.iter().map(|r| r.sigma)).unwrap_or(f64::NAN),
        accuracy: ratio(golds.iter().filter(|&&g| g > 0.0).count(), golds.len()),
        mean_gold_margin: mean(golds.into_iter()),
    }
}

/// Pairs by ascending μ̂ (ties in input order), cut into min(10, n) groups whose sizes differ by at
/// most 1, the first groups taking the extra pairs: 25 pairs give 3,3,3,3,3,2,2,2,2,2.
fn deciles(rows: &[StrengthRow]) -> Vec<StrengthDecile> {
    let mut sorted: Vec<&StrengthRow> = rows.iter().collect();
    sorted.sort_by(|a, b| a.mu.total_cmp(&b.mu)); // stable: ties keep input order
    let groups = sorted.len().min(DECILES);
    let mut rest = sorted.as_slice();
    (0..groups)
        .map(|g| {
            let size = sorted.len() / groups + usize::from(g < sorted.len() % groups);
            let (group, tail) = rest.split_at(size);
            rest = tail;
            decile(g + 1, group)
        })
        .collect()
}

fn detection(rows: &[StrengthRow]) -> Option<Detection> {
    let known: Vec<(bool, bool)> = rows.iter().filter_map(|r| r.label_wrong.map(|wrong| (r.mu < 0.0, wrong))).collect();
    if known.is_empty() {
        return None;
    }
    let labels_wrong = known.iter().filter(|(_, wrong)| *wrong).count();
    let flagged = known.iter().filter(|(flag, _)| *flag).count();
    let true_positives = known.iter().filter(|(flag, wrong)| *flag && *wrong).count();
    let (precision, recall) = (ratio(true_positives, flagged), ratio(true_positives, labels_wrong));
    let f1 = match (precision, recall) {
        (Some(p), Some(r)) if p + r > 0.0 => Some(2.0 * p * r / (p + r)),
        (Some(_), Some(_)) => Some(0.0),
        _ => None,
    };
    Some(Detection { labels_wrong, flagged, true_positives, precision, recall, f1 })
}

/// Summarizes the strengths of `rows`, scored by `models` reward models.
pub fn summarize_strength(rows: &[StrengthRow], models: usize) -> StrengthSummary {
    let (mu, gold): (Vec<f64>, Vec<f64>) = rows.iter().filter_map(|r| r.gold_margin.map(|g| (r.mu, g))).unzip();
    StrengthSummary {
        pairs: rows.len(),
        models,
        share_negative: ratio(rows.iter().filter(|r| r.mu < 0.0).count(), rows.len()).unwrap_or(f64::NAN),
        mean_mu: mean(rows.iter().map(|r| r.mu)).unwrap_or(f64::NAN),
        mean_sigma: mean(rows.iter().map(|r| r.sigma)).unwrap_or(f64::NAN),
        spearman_gold: spearman(&mu, &gold),
        deciles: deciles(rows),
        detection: detection(rows),
    }
}

fn opt(x: Option<f64>) -> String {
    x.map_or(MISSING.to_string(), num)
}

/// A few summary lines, then one table row per μ̂ decile; numbers with 3 decimals, "–" when missing.
pub fn strength_markdown(s: &StrengthSummary) -> String {
    use Align::{Left, Right};
    let detector = match &s.detection {
        Some(d) => format!(
            "precision {} ({} of {} flagged), recall {} ({} of {} wrong labels), F1 {}",
            opt(d.precision),
            d.true_positives,
            d.flagged,
            opt(d.recall),
            d.true_positives,
            d.labels_wrong,
            opt(d.f1)
        ),
        None => format!("{MISSING} (no pair's label is known to be right or wrong)"),
    };
    let mut out = format!(
        "- pairs: {}, reward models: {}\n- mean μ̂: {}, mean σ̂: {}\n- share with μ̂ < 0: {}\n\
         - Spearman(μ̂, gold margin): {}\n- μ̂ < 0 as a wrong-label detector: {detector}\n\n",
        s.pairs,
        s.models,
        num(s.mean_mu),
        num(s.mean_sigma),
        num(s.share_negative),
        opt(s.spearman_gold)
    );
    let headers = ["decile", "pairs", "μ̂ range", "mean σ̂", "label accuracy vs gold", "mean gold margin"];
    let cells: Vec<Vec<String>> = s
        .deciles
        .iter()
        .map(|d| {
            vec![
                d.index.to_string(),
                d.pairs.to_string(),
                format!("[{}, {}]", num(d.mu_min), num(d.mu_max)),
                num(d.mean_sigma),
                opt(d.accuracy),
                opt(d.mean_gold_margin),
            ]
        })
        .collect();
    out.push_str(&render_markdown_table(&headers, &[Right, Right, Left, Right, Right, Right], &cells));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOL: f64 = 1e-12;

    fn assert_close(a: f64, b: f64, what: &str) {
        assert!((a - b).abs() <= TOL, "{what}: {a} vs {b}");
    }

    fn row(mu: f64, sigma: f64, gold_margin: Option<f64>, label_wrong: Option<bool>) -> StrengthRow {
        StrengthRow { mu, sigma, gold_margin, label_wrong }
    }

    #[test]
    fn strength_stats_by_hand() {
        // mean 7/3; variance ((4/3)² + (1/3)² + (5/3)²) / 3 = 14/9, std √14 / 3.
        let (mu, sigma) = strength_stats(&[1.0, 2.0, 4.0]);
        assert_close(mu, 2.3333333333333335, "mean");
        assert_close(sigma, 1.247219128924647, "population std");
        assert_eq!(strength_stats(&[-0.5]), (-0.5, 0.0));
        let (mu, sigma) = strength_stats(&[]);
        assert!(mu.is_nan() && sigma.is_nan(), "empty gives NaN");
    }

    /// μ̂ = −12..=12 in a shuffled order (7i mod 25 is a permutation), σ̂ = |μ̂| / 2, gold margins
    /// chosen so that decile 1 has none, decile 5 is 2/3 right and decile 6 half right.
    fn twenty_five() -> Vec<StrengthRow> {
        (0..25)
            .map(|i| {
                let mu = ((7 * i) % 25) as f64 - 12.0;
                let gold = match mu as i64 {
                    -12..=-10 => None,
                    3 => Some(0.5),
                    4 => Some(-0.5),
                    _ => Some(mu), // 0 is a gold tie: the label does not agree
                };
                row(mu, mu.abs() / 2.0, gold, None)
            })
            .collect()
    }

    #[test]
    fn deciles_of_25_pairs() {
        let s = summarize_strength(&twenty_five(), 4);
        let sizes: Vec<usize> = s.deciles.iter().map(|d| d.pairs).collect();
        assert_eq!(sizes, [3, 3, 3, 3, 3, 2, 2, 2, 2, 2]);
        let indices: Vec<usize> = s.deciles.iter().map(|d| d.index).collect();
        assert_eq!(indices, (1..=10).collect::<Vec<_>>());
        let ranges: Vec<(f64, f64)> = s.deciles.iter().map(|d| (d.mu_min, d.mu_max)).collect();
        assert_eq!(ranges[0], (-12.0, -10.0));
        assert_eq!(ranges[4], (0.0, 2.0));
        assert_eq!(ranges[5], (3.0, 4.0));
        assert_eq!(ranges[9], (11.0, 12.0));

        let first = &s.deciles[0];
        assert_close(first.mean_mu, -11.0, "decile 1 mean μ̂");
        assert_close(first.mean_sigma, 5.5, "decile 1 mean σ̂: (6 + 5.5 + 5) / 3");
        assert_eq!((first.accuracy, first.mean_gold_margin), (None, None), "no gold in decile 1");
        let fifth = &s.deciles[4]; // gold 0, 1, 2
        assert_close(fifth.accuracy.expect("gold"), 2.0 / 3.0, "a gold tie is not agreement");
        assert_close(fifth.mean_gold_margin.expect("gold"), 1.0, "decile 5 mean gold");
        let sixth = &s.deciles[5]; // gold 0.5, −0.5
        assert_eq!((sixth.accuracy, sixth.mean_gold_margin), (Some(0.5), Some(0.0)));
        assert_eq!(s.deciles[1].accuracy, Some(0.0), "negative gold margins");

        assert_eq!((s.pairs, s.models), (25, 4));
        assert_close(s.share_negative, 12.0 / 25.0, "share μ̂ < 0");
        assert_close(s.mean_mu, 0.0, "mean μ̂");
        assert_close(s.mean_sigma, 156.0 / 2.0 / 25.0, "mean σ̂: Σ|μ̂| = 156");
        assert_eq!(s.detection, None);
    }

    #[test]
    fn deciles_keep_input_order_on_ties_and_never_empty() {
        let rows = [row(1.0, 0.1, None, None), row(0.0, 0.2, None, None), row(1.0, 0.3, None, None), row(0.0, 0.4, None, None)];
        let s = summarize_strength(&rows, 2);
        let sigmas: Vec<f64> = s.deciles.iter().map(|d| d.mean_sigma).collect();
        assert_eq!(sigmas, [0.2, 0.4, 0.1, 0.3], "4 pairs: 4 groups of 1, ties in input order");
        assert!(summarize_strength(&[], 2).deciles.is_empty());
    }

    /// Six pairs: one wrong label flagged (TP), one right label flagged (FP), two wrong labels
    /// missed (μ̂ = 2, and μ̂ = 0, which is not < 0), one right label kept, one unknown.
    fn six() -> Vec<StrengthRow> {
        vec![
            row(-1.0, 0.5, Some(-1.0), Some(true)),
            row(-0.5, 0.5, Some(2.0), Some(false)),
            row(2.0, 0.5, None, Some(true)),
            row(1.0, 0.5, Some(3.0), Some(false)),
            row(-3.0, 0.5, None, None),
            row(0.0, 0.5, Some(-4.0), Some(true)),
        ]
    }

    #[test]
    fn detection_precision_recall_by_hand() {
        let s = summarize_strength(&six(), 3);
        let d = s.detection.expect("labels known");
        assert_eq!((d.labels_wrong, d.flagged, d.true_positives), (3, 2, 1));
        assert_eq!(d.precision, Some(0.5));
        assert_close(d.recall.expect("wrong labels exist"), 1.0 / 3.0, "recall");
        assert_close(d.f1.expect("both defined"), 0.4, "F1 = (2 · 1/2 · 1/3) / (5/6)");
        assert_close(s.share_negative, 0.5, "three of six have μ̂ < 0, the unknown one included");
    }

    #[test]
    fn detection_none_cases() {
        let no_flag = [row(1.0, 0.0, None, Some(true)), row(2.0, 0.0, None, Some(false))];
        let d = summarize_strength(&no_flag, 2).detection.expect("labels known");
        assert_eq!((d.flagged, d.precision, d.recall, d.f1), (0, None, Some(0.0), None));
        let no_wrong = [row(-1.0, 0.0, None, Some(false))];
        let d = summarize_strength(&no_wrong, 2).detection.expect("labels known");
        assert_eq!((d.precision, d.recall, d.f1), (Some(0.0), None, None));
        let missed = [row(-1.0, 0.0, None, Some(false)), row(1.0, 0.0, None, Some(true))];
        let d = summarize_strength(&missed, 2).detection.expect("labels known");
        assert_eq!((d.precision, d.recall, d.f1), (Some(0.0), Some(0.0), Some(0.0)), "P = R = 0 gives F1 = 0");
    }

    #[test]
    fn empty_summary_is_nan_and_none() {
        let s = summarize_strength(&[], 5);
        assert_eq!((s.pairs, s.models, s.spearman_gold, s.detection), (0, 5, None, None));
        assert!(s.share_negative.is_nan() && s.mean_mu.is_nan() && s.mean_sigma.is_nan());
    }

    #[test]
    fn spearman_skips_pairs_without_gold() {
        // Over (μ̂, gold) = (3, 10), (1, 30), (0, −5): rank differences 1, −1, 0 → 1 − 6·2/24.
        // Counting the missing gold as 0 would give 0.4.
        let rows = [row(3.0, 0.0, Some(10.0), None), row(1.0, 0.0, Some(30.0), None), row(2.0, 0.0, None, None), row(0.0, 0.0, Some(-5.0), None)];
        assert_close(summarize_strength(&rows, 2).spearman_gold.expect("defined"), 0.5, "spearman");
        let no_gold = [row(1.0, 0.0, None, None), row(2.0, 0.0, None, None)];
        assert_eq!(summarize_strength(&no_gold, 2).spearman_gold, None);
    }

    #[test]
    fn markdown_of_six_pairs() {
        // Six pairs in six groups of one, sorted μ̂: −3, −1, −0.5, 0, 1, 2.
        let got = strength_markdown(&summarize_strength(&six(), 3));
        let expected = "\
- pairs: 6, reward models: 3
- mean μ̂: -0.250, mean σ̂: 0.500
- share with μ̂ < 0: 0.500
- Spearman(μ̂, gold margin): 0.400
- μ̂ < 0 as a wrong-label detector: precision 0.500 (1 of 2 flagged), recall 0.333 (1 of 3 wrong labels), F1 0.400

| decile | pairs | μ̂ range | mean σ̂ | label accuracy vs gold | mean gold margin |
|---:|---:|---|---:|---:|---:|
| 1 | 1 | [-3.000, -3.000] | 0.500 | – | – |
| 2 | 1 | [-1.000, -1.000] | 0.500 | 0.000 | -1.000 |
| 3 | 1 | [-0.500, -0.500] | 0.500 | 1.000 | 2.000 |
| 4 | 1 | [0.000, 0.000] | 0.500 | 0.000 | -4.000 |
| 5 | 1 | [1.000, 1.000] | 0.500 | 1.000 | 3.000 |
| 6 | 1 | [2.000, 2.000] | 0.500 | – | – |
";
        assert_eq!(got, expected);
    }

    #[test]
    fn markdown_without_labels_or_gold() {
        let got = strength_markdown(&summarize_strength(&[row(1.0, 0.25, None, None)], 2));
        assert!(got.contains("- Spearman(μ̂, gold margin): –\n"), "{got}");
        assert!(got.contains("detector: – (no pair's label is known to be right or wrong)\n"), "{got}");
        assert!(got.ends_with("| 1 | 1 | [1.000, 1.000] | 0.250 | – | – |\n"), "{got}");
    }

    /// The accuracy-by-decile chart needs no chart of its own: grouped bars with one series.
    #[test]
    fn decile_accuracy_draws_as_grouped_bars() {
        let s = summarize_strength(&twenty_five(), 4);
        let groups: Vec<String> = s.deciles.iter().map(|d| d.index.to_string()).collect();
        let accuracy = s.deciles.iter().map(|d| d.accuracy.unwrap_or(f64::NAN)).collect();
        let series = [crate::BarSeries { label: "label accuracy vs gold".into(), values: accuracy, intervals: None }];
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("accuracy_by_decile.png");
        crate::bar_chart_grouped(&path, "label accuracy by μ decile", &groups, &series, Some((0.0, 1.0))).expect("bars");
        assert!(std::fs::metadata(&path).expect("written").len() > 0);
    }
}
