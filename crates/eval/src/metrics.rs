//! Metrics of a reward model on preference pairs, as pure f64 functions of the reward gap
//! d = r_chosen − r_rejected: strict pairwise accuracy with a seeded bootstrap interval, the
//! top-label expected calibration error (ECE) with the bins of a reliability diagram, the Brier
//! score, and Spearman's rank correlation between d and a gold margin. The conventions (strict `>`, bin
//! edges, tie handling) are those of `tests/fixtures/hf/losses.json` and its `verify_numpy.py`.
//! An empty input gives NaN, as a mean of nothing.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// Bootstrap resamples behind [`PairMetrics::accuracy_ci95`]: enough for the 2.5 % / 97.5 %
/// percentiles to move by well under 0.01 between seeds, and cheap for eval sets of ~10k pairs.
pub const BOOTSTRAP_RESAMPLES: usize = 1000;

/// Equal-width calibration bins on [0, 1].
pub const ECE_BINS: usize = 10;

/// σ(x) = 1 / (1 + e^−x), computed on the side where the exponential cannot overflow.
pub fn sigmoid(x: f64) -> f64 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

/// log σ(x) = min(x, 0) − ln(1 + e^−|x|), finite for every finite x.
pub fn log_sigmoid(x: f64) -> f64 {
    x.min(0.0) - (-x.abs()).exp().ln_1p()
}

fn mean(xs: &[f64]) -> f64 {
    xs.iter().sum::<f64>() / xs.len() as f64
}

/// Pairwise accuracy = mean(1[d > 0]); strict, so a tie counts as wrong.
pub fn pairwise_accuracy(d: &[f64]) -> f64 {
    d.iter().filter(|&&x| x > 0.0).count() as f64 / d.len() as f64
}

/// Brier score = mean((1 − σ(d))²): squared error of P(chosen wins) against the label 1.
pub fn brier(d: &[f64]) -> f64 {
    // 1 − σ(d) = σ(−d), without the cancellation near σ(d) ≈ 1.
    d.iter().map(|&x| sigmoid(-x).powi(2)).sum::<f64>() / d.len() as f64
}

/// One non-empty bin of a reliability diagram.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CalibrationBin {
    /// Bin index in 0..10; the bin covers [lo, hi) (the last one includes 1).
    pub bin: usize,
    pub lo: f64,
    pub hi: f64,
    pub count: usize,
    /// Mean confidence of the pairs in the bin.
    pub mean_conf: f64,
    /// Fraction of the pairs in the bin that are right.
    pub accuracy: f64,
    /// |accuracy − mean_conf|.
    pub gap: f64,
}

/// An expected calibration error and the non-empty bins it was summed over.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Calibration {
    pub ece: f64,
    pub bins: Vec<CalibrationBin>,
}

/// ECE = Σ_b n_b/N · |acc_b − conf_b| over [`ECE_BINS`] equal-width bins,
/// bin = min(⌊10·conf⌋, 9).
fn calibration(conf: &[f64], correct: &[bool]) -> Calibration {
    let n = conf.len();
    let mut sums = [(0usize, 0.0f64, 0.0f64); ECE_BINS]; // (count, Σ conf, Σ correct)
    for (&c, &ok) in conf.iter().zip(correct) {
        let b = ((c * ECE_BINS as f64).floor() as usize).min(ECE_BINS - 1);
        sums[b].0 += 1;
        sums[b].1 += c;
        sums[b].2 += if ok { 1.0 } else { 0.0 };
    }
    let bins: Vec<CalibrationBin> = (0..ECE_BINS)
        .filter(|&b| sums[b].0 > 0)
        .map(|b| {
            let (count, sum_conf, sum_correct) = sums[b];
            let (mean_conf, accuracy) = (sum_conf / count as f64, sum_correct / count as f64);
            CalibrationBin {
                bin: b,
                lo: b as f64 / ECE_BINS as f64,
                hi: (b + 1) as f64 / ECE_BINS as f64,
                count,
                mean_conf,
                accuracy,
                gap: (accuracy - mean_conf).abs(),
            }
        })
        .collect();
    let ece = if n == 0 { f64::NAN } else { bins.iter().map(|b| b.count as f64 / n as f64 * b.gap).sum() };
    Calibration { ece, bins }
}

/// "ECE" of p = σ(d) read as P(chosen wins) against the label 1 that every pair carries:
/// Σ_b n_b/N · |1 − mean(p)_b| with bin = min(⌊10p⌋, 9). Since 1 − p > 0 in every bin this is
/// just mean(1 − p) = mean(σ(−d)), a monotone function of how large the gaps are: a model is
/// rewarded for confident gaps whether or not its confidence matches how often it is right, so
/// this is **not** a calibration measure. Kept because the reference fixture reports it; the
/// headline [`PairMetrics::ece`] is [`ece_toplabel`].
pub fn ece_p(d: &[f64]) -> Calibration {
    let p: Vec<f64> = d.iter().map(|&x| sigmoid(x)).collect();
    calibration(&p, &vec![true; d.len()])
}

/// Top-label ECE: conf = max(p, 1 − p) with p = σ(d), correct = 1[d > 0] (a tie is wrong at
/// conf 0.5), bin = min(⌊10·conf⌋, 9); ECE = Σ_b n_b/N · |acc_b − conf_b|. This asks whether the
/// model is right as often as it is confident (Guo et al. 2017, "On Calibration of Modern Neural
/// Networks", https://arxiv.org/abs/1706.04599), the question a reliability diagram shows.
pub fn ece_toplabel(d: &[f64]) -> Calibration {
    let conf: Vec<f64> = d.iter().map(|&x| sigmoid(x.abs())).collect(); // max(p, 1−p) = σ(|d|)
    let correct: Vec<bool> = d.iter().map(|&x| x > 0.0).collect();
    calibration(&conf, &correct)
}

/// 1-based ranks, ties sharing the mean of the ranks they span.
fn average_ranks(xs: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..xs.len()).collect();
    order.sort_by(|&a, &b| xs[a].total_cmp(&xs[b]));
    let mut ranks = vec![0.0; xs.len()];
    let mut start = 0;
    while start < order.len() {
        let mut end = start + 1;
        while end < order.len() && xs[order[end]] == xs[order[start]] {
            end += 1;
        }
        let rank = (start + end + 1) as f64 / 2.0; // mean of start+1 ..= end
        for &i in &order[start..end] {
            ranks[i] = rank;
        }
        start = end;
    }
    ranks
}

/// Spearman's ρ = Pearson correlation of the average ranks of `x` and `y`.
/// None when n < 2, the lengths differ, a value is NaN, or a side is constant (ρ undefined).
pub fn spearman(x: &[f64], y: &[f64]) -> Option<f64> {
    if x.len() != y.len() || x.len() < 2 || x.iter().chain(y).any(|v| v.is_nan()) {
        return None;
    }
    let (rx, ry) = (average_ranks(x), average_ranks(y));
    let (mx, my) = (mean(&rx), mean(&ry));
    let (mut cov, mut vx, mut vy) = (0.0, 0.0, 0.0);
    for (a, b) in rx.iter().zip(&ry) {
        cov += (a - mx) * (b - my);
        vx += (a - mx).powi(2);
        vy += (b - my).powi(2);
    }
    (vx > 0.0 && vy > 0.0).then(|| cov / (vx * vy).sqrt())
}

/// Linear-interpolation quantile of sorted values (numpy's default), q in [0, 1].
fn quantile_sorted(sorted: &[f64], q: f64) -> f64 {
    let pos = q * (sorted.len() - 1) as f64;
    let (i, frac) = (pos.floor() as usize, pos.fract());
    match sorted.get(i + 1) {
        Some(next) => sorted[i] + frac * (next - sorted[i]),
        None => sorted[i],
    }
}

/// 95 % percentile bootstrap interval of `stat(values)`: `n_resamples` resamples of size N drawn
/// with replacement by a ChaCha8 generator seeded with `seed`; returns the 2.5 % and 97.5 %
/// quantiles of the resampled statistic. (NaN, NaN) when `values` is empty or `n_resamples` is 0.
pub fn bootstrap_ci(values: &[f64], stat: impl Fn(&[f64]) -> f64, n_resamples: usize, seed: u64) -> (f64, f64) {
    if values.is_empty() || n_resamples == 0 {
        return (f64::NAN, f64::NAN);
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut sample = vec![0.0; values.len()];
    let mut stats: Vec<f64> = (0..n_resamples)
        .map(|_| {
            for s in sample.iter_mut() {
                *s = values[rng.random_range(0..values.len())];
            }
            stat(&sample)
        })
        .collect();
    stats.sort_by(f64::total_cmp);
    (quantile_sorted(&stats, 0.025), quantile_sorted(&stats, 0.975))
}

/// 95 % bootstrap interval of [`pairwise_accuracy`] (see [`bootstrap_ci`]).
pub fn bootstrap_accuracy_ci(d: &[f64], n_resamples: usize, seed: u64) -> (f64, f64) {
    let right: Vec<f64> = d.iter().map(|&x| if x > 0.0 { 1.0 } else { 0.0 }).collect();
    bootstrap_ci(&right, mean, n_resamples, seed)
}

/// Everything an eval reports about one model on one preference set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PairMetrics {
    pub n: usize,
    pub accuracy: f64,
    pub accuracy_ci95: (f64, f64),
    /// Top-label ECE ([`ece_toplabel`]); [`ece_p`] is not reported here, as it does not measure
    /// calibration.
    pub ece: f64,
    pub brier: f64,
    /// Spearman ρ between d and the gold margin, when the set has one.
    pub spearman_gold: Option<f64>,
    /// mean(d).
    pub mean_margin: f64,
    pub mean_reward_chosen: f64,
    pub mean_reward_rejected: f64,
}

/// Computes [`PairMetrics`] from per-pair rewards; `seed` drives the accuracy bootstrap
/// ([`BOOTSTRAP_RESAMPLES`] resamples).
///
/// # Panics
/// When `r_rejected` or `gold_margin` is not as long as `r_chosen`: the pairs would be misaligned.
pub fn evaluate_pairs(r_chosen: &[f64], r_rejected: &[f64], gold_margin: Option<&[f64]>, seed: u64) -> PairMetrics {
    assert_eq!(r_chosen.len(), r_rejected.len(), "one rejected reward per chosen reward");
    if let Some(gold) = gold_margin {
        assert_eq!(gold.len(), r_chosen.len(), "one gold margin per pair");
    }
    let d: Vec<f64> = r_chosen.iter().zip(r_rejected).map(|(c, r)| c - r).collect();
    PairMetrics {
        n: d.len(),
        accuracy: pairwise_accuracy(&d),
        accuracy_ci95: bootstrap_accuracy_ci(&d, BOOTSTRAP_RESAMPLES, seed),
        ece: ece_toplabel(&d).ece,
        brier: brier(&d),
        spearman_gold: gold_margin.and_then(|gold| spearman(&d, gold)),
        mean_margin: mean(&d),
        mean_reward_chosen: mean(r_chosen),
        mean_reward_rejected: mean(r_rejected),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOL: f64 = 1e-12;

    fn fixture() -> serde_json::Value {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/hf/losses.json");
        let text = std::fs::read_to_string(path).expect("tests/fixtures/hf/losses.json is checked in");
        serde_json::from_str(&text).expect("losses.json is valid JSON")
    }

    fn floats(v: &serde_json::Value) -> Vec<f64> {
        serde_json::from_value(v.clone()).expect("a list of numbers")
    }

    fn fixture_d() -> (Vec<f64>, Vec<f64>, Vec<f64>) {
        let f = fixture();
        let (rc, rr) = (floats(&f["inputs"]["r_c"]), floats(&f["inputs"]["r_r"]));
        let d = rc.iter().zip(&rr).map(|(c, r)| c - r).collect();
        (rc, rr, d)
    }

    fn assert_close(a: f64, b: f64, what: &str) {
        assert!((a - b).abs() <= TOL, "{what}: {a} vs {b}");
    }

    fn assert_bins_match(got: &Calibration, expected: &serde_json::Value) {
        assert_close(got.ece, expected["value"].as_f64().expect("value"), "ece");
        // The fixture bins also list `members`, which serde ignores.
        let want: Vec<CalibrationBin> = serde_json::from_value(expected["bins"].clone()).expect("bins");
        assert_eq!(got.bins.len(), want.len());
        for (g, w) in got.bins.iter().zip(&want) {
            assert_eq!((g.bin, g.count), (w.bin, w.count));
            for (a, b, what) in [
                (g.lo, w.lo, "lo"),
                (g.hi, w.hi, "hi"),
                (g.mean_conf, w.mean_conf, "mean_conf"),
                (g.accuracy, w.accuracy, "accuracy"),
                (g.gap, w.gap, "gap"),
            ] {
                assert_close(a, b, &format!("bin {} {what}", g.bin));
            }
        }
    }

    #[test]
    fn sigmoid_matches_fixture_and_is_stable() {
        let (_, _, d) = fixture_d();
        for (x, p) in d.iter().zip(floats(&fixture()["p_sigmoid_d"])) {
            assert_close(sigmoid(*x), p, "sigmoid");
        }
        assert_eq!(sigmoid(-1000.0), 0.0);
        assert_eq!(sigmoid(1000.0), 1.0);
        assert_close(log_sigmoid(0.0), -(2.0f64).ln(), "log_sigmoid(0)");
        assert_close(log_sigmoid(-1000.0), -1000.0, "log_sigmoid(-1000)");
        assert_close(log_sigmoid(2.0), sigmoid(2.0).ln(), "log_sigmoid(2)");
    }

    #[test]
    fn accuracy_and_ece_match_fixture() {
        let f = fixture();
        let (_, _, d) = fixture_d();
        assert_close(pairwise_accuracy(&d), f["pairwise_accuracy"]["value"].as_f64().expect("value"), "accuracy");
        assert_bins_match(&ece_p(&d), &f["ece_p"]);
        assert_bins_match(&ece_toplabel(&d), &f["ece_toplabel"]);
    }

    #[test]
    fn evaluate_pairs_on_fixture() {
        let f = fixture();
        let (rc, rr, d) = fixture_d();
        let m = evaluate_pairs(&rc, &rr, None, 0);
        assert_eq!(m.n, 6);
        assert_close(m.accuracy, 0.5, "accuracy");
        assert_close(m.ece, f["ece_toplabel"]["value"].as_f64().expect("value"), "ece is top-label");
        assert_close(m.mean_margin, d.iter().sum::<f64>() / 6.0, "mean_margin");
        assert_close(m.mean_reward_chosen, 3.0 / 6.0, "mean_reward_chosen");
        assert_close(m.mean_reward_rejected, -0.25 / 6.0, "mean_reward_rejected");
        assert_eq!(m.spearman_gold, None);
        // A gold margin equal to d ranks identically.
        assert_close(evaluate_pairs(&rc, &rr, Some(&d), 0).spearman_gold.expect("defined"), 1.0, "spearman");
    }

    #[test]
    fn ece_p_reduces_to_mean_sigmoid_of_minus_d() {
        let (_, _, d) = fixture_d();
        let mean_sigmoid_minus_d = d.iter().map(|&x| sigmoid(-x)).sum::<f64>() / d.len() as f64;
        assert_close(ece_p(&d).ece, mean_sigmoid_minus_d, "ece_p = mean σ(−d)");
    }

    /// Regression: the headline ECE was [`ece_p`], which gave this calibrated model 0.375.
    #[test]
    fn headline_ece_is_zero_for_a_calibrated_model() {
        // σ(ln 3) = 3/4 confidence everywhere, and 3 of the 4 pairs right.
        let l3 = 3.0f64.ln();
        let m = evaluate_pairs(&[l3, l3, l3, 0.0], &[0.0, 0.0, 0.0, l3], None, 0);
        assert_close(m.ece, 0.0, "top-label ECE");
        assert_close(ece_p(&[l3, l3, l3, -l3]).ece, 0.375, "ece_p");
    }

    #[test]
    fn ties_are_wrong() {
        assert_eq!(pairwise_accuracy(&[1.0, 0.0, -1.0, 2.0]), 0.5);
        let c = ece_toplabel(&[0.0]);
        assert_eq!((c.bins[0].bin, c.bins[0].mean_conf, c.bins[0].accuracy), (5, 0.5, 0.0));
    }

    #[test]
    fn brier_by_hand() {
        assert_close(brier(&[0.0]), 0.25, "brier(0)");
        // σ(ln 3) = 3/4: ((1/4)² + (1/2)²) / 2 = (1/16 + 1/4) / 2.
        assert_close(brier(&[3.0f64.ln(), 0.0]), 0.15625, "brier");
    }

    #[test]
    fn spearman_with_ties_by_hand() {
        // ranks x = [1, 2.5, 2.5, 4], y = [1, 3, 2, 4]: cov 4.5, var 4.5 and 5 → 3/√10.
        let rho = spearman(&[1.0, 2.0, 2.0, 3.0], &[10.0, 30.0, 20.0, 40.0]).expect("defined");
        assert_close(rho, 3.0 / 10f64.sqrt(), "spearman");
        assert_close(spearman(&[1.0, 2.0, 3.0], &[3.0, 2.0, 1.0]).expect("defined"), -1.0, "reversed");
        assert_eq!(spearman(&[1.0], &[1.0]), None);
        assert_eq!(spearman(&[1.0, 1.0, 1.0], &[1.0, 2.0, 3.0]), None);
        assert_eq!(spearman(&[1.0, f64::NAN], &[1.0, 2.0]), None);
    }

    #[test]
    fn bootstrap_is_seeded_and_contains_the_estimate() {
        let d: Vec<f64> = (0..40).map(|i| if i % 4 == 0 { -1.0 } else { 0.5 }).collect();
        let acc = pairwise_accuracy(&d);
        let (lo, hi) = bootstrap_accuracy_ci(&d, 500, 7);
        assert_eq!((lo, hi), bootstrap_accuracy_ci(&d, 500, 7));
        // Accuracy quantiles are multiples of 1/40 and may agree across seeds; a mean of
        // continuous values shows that the seed is used.
        let x: Vec<f64> = (0..40).map(|i| (i as f64 * 0.7).sin()).collect();
        assert_ne!(bootstrap_ci(&x, mean, 200, 1), bootstrap_ci(&x, mean, 200, 2));
        assert!(lo < acc && acc < hi, "{lo} < {acc} < {hi}");
        assert!(lo > 0.5 && hi < 0.95, "interval [{lo}, {hi}] too wide for 40 pairs");
        assert_eq!(bootstrap_ci(&[2.0; 5], mean, 10, 0), (2.0, 2.0));
        assert!(bootstrap_accuracy_ci(&[], 10, 0).0.is_nan());
    }
}
