//! Best-of-N selection and its regularised variants (RBoN: Jinnai, Morimura, Ariu & Abe 2024,
//! "Regularized Best-of-N Sampling with Minimum Bayes Risk Objective for Language Model
//! Alignment", arXiv 2404.01054). Among N candidate responses y_1..y_N to one prompt, with proxy
//! rewards r_i:
//! - BoN: argmax_i r_i;
//! - RBoN-KL: argmax_i r_i + β·log π_ref(y_i | x) (the paper's KL proxy: a sequence's reference
//!   log-probability; here the true sum over its tokens);
//! - RBoN-WD: argmax_i r_i − β·(1/N)·Σ_j (1 − cos(e_i, e_j)), j over all N including i (the
//!   paper's Wasserstein-1 distance between the candidate's point mass and the empirical
//!   distribution of the N samples, with cosine distance of sentence embeddings as the cost).
//!
//! Ties go to the lowest candidate index (the first maximum, as numpy's argmax). A sweep draws, per prompt,
//! seeded random orders of its candidates and takes nested prefixes as the subsets of size N, so
//! the pick at N = 8 is made among a superset of the candidates seen at N = 4.

use crate::metrics::{bootstrap_ci, spearman};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// A selection rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Rule {
    Bon,
    Kl,
    Wd,
}

impl Rule {
    pub fn name(self) -> &'static str {
        match self {
            Self::Bon => "bon",
            Self::Kl => "kl",
            Self::Wd => "wd",
        }
    }
    /// How the rule is called in reports.
    pub fn label(self) -> &'static str {
        match self {
            Self::Bon => "BoN",
            Self::Kl => "RBoN-KL",
            Self::Wd => "RBoN-WD",
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Rule {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "bon" => Ok(Self::Bon),
            "kl" | "rbon-kl" => Ok(Self::Kl),
            "wd" | "rbon-wd" => Ok(Self::Wd),
            _ => Err(format!("rule {s:?}: expected bon, kl or wd")),
        }
    }
}

/// One prompt's candidates: proxy rewards, and what the regularisers need.
#[derive(Debug, Clone, Default)]
pub struct Candidates {
    pub rewards: Vec<f64>,
    /// log π_ref(y_i | x), summed over the response's tokens (RBoN-KL).
    pub ref_logprobs: Option<Vec<f64>>,
    /// Sentence embeddings (RBoN-WD); need not be normalised.
    pub embeddings: Option<Vec<Vec<f64>>>,
    /// Gold rewards, for evaluation only.
    pub gold: Option<Vec<f64>>,
}

/// cos(a, b); 0 when either vector is zero (it then has no direction).
pub fn cosine(a: &[f64], b: &[f64]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let (na, nb) = (a.iter().map(|x| x * x).sum::<f64>().sqrt(), b.iter().map(|x| x * x).sum::<f64>().sqrt());
    if na == 0.0 || nb == 0.0 {
        0.0
    } else {
        dot / (na * nb)
    }
}

/// The RBoN-WD regulariser of each candidate: (1/N)·Σ_{j=1..N} (1 − cos(e_i, e_j)), j = i included
/// (its term is 0 for a non-zero vector).
pub fn wd_terms(embeddings: &[&[f64]]) -> Vec<f64> {
    let n = embeddings.len() as f64;
    embeddings.iter().map(|a| embeddings.iter().map(|b| 1.0 - cosine(a, b)).sum::<f64>() / n).collect()
}

/// The objective each candidate maximises under `rule` with strength `beta`. `ref_logprobs`
/// (KL) and `wd` ([`wd_terms`], WD) must be given for the rules that use them.
pub fn objective(rule: Rule, beta: f64, rewards: &[f64], ref_logprobs: Option<&[f64]>, wd: Option<&[f64]>) -> Vec<f64> {
    match rule {
        Rule::Bon => rewards.to_vec(),
        Rule::Kl => {
            let lp = ref_logprobs.expect("RBoN-KL needs reference log-probs");
            rewards.iter().zip(lp).map(|(r, l)| r + beta * l).collect()
        }
        Rule::Wd => {
            let w = wd.expect("RBoN-WD needs the WD terms");
            rewards.iter().zip(w).map(|(r, d)| r - beta * d).collect()
        }
    }
}

/// Index of the first maximum (NaN never wins).
pub fn argmax_first(values: &[f64]) -> usize {
    let mut best = 0;
    for (i, &v) in values.iter().enumerate() {
        if v > values[best] || values[best].is_nan() {
            best = i;
        }
    }
    best
}

/// The candidate (index into `subset`) `rule` picks among the candidates `subset` of `c`.
pub fn select(rule: Rule, beta: f64, c: &Candidates, subset: &[usize]) -> usize {
    let rewards: Vec<f64> = subset.iter().map(|&i| c.rewards[i]).collect();
    let lp: Option<Vec<f64>> = c.ref_logprobs.as_ref().map(|l| subset.iter().map(|&i| l[i]).collect());
    let wd: Option<Vec<f64>> = match (rule, &c.embeddings) {
        (Rule::Wd, Some(e)) => Some(wd_terms(&subset.iter().map(|&i| e[i].as_slice()).collect::<Vec<_>>())),
        _ => None,
    };
    argmax_first(&objective(rule, beta, &rewards, lp.as_deref(), wd.as_deref()))
}

/// What a sweep varies.
#[derive(Debug, Clone)]
pub struct Sweep {
    /// Each rule with its list of β (BoN's β is ignored: give it [0]).
    pub rules: Vec<(Rule, Vec<f64>)>,
    /// Subset sizes; each at most the number of candidates of every prompt.
    pub ns: Vec<usize>,
    /// Random orders drawn per prompt (results are averaged over them).
    pub draws: usize,
    pub seed: u64,
}

/// One (rule, β, N) point of a sweep, averaged over prompts (and draws).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SweepPoint {
    pub rule: Rule,
    pub beta: f64,
    pub n: usize,
    /// Mean proxy reward of the picks.
    pub proxy: f64,
    /// Mean gold reward of the picks, with its 95 % bootstrap interval over prompts.
    pub gold: Option<f64>,
    pub gold_ci: Option<(f64, f64)>,
    /// Mean reference log-prob of the picks (when known).
    pub ref_logprob: Option<f64>,
    /// Share of prompts (and draws) whose pick differs from BoN's.
    pub differs_from_bon: f64,
}

/// What any rule is measured against, per N: a uniformly random candidate and the gold-best one.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Baseline {
    pub n: usize,
    pub random_gold: f64,
    pub oracle_gold: f64,
}

/// How well the proxy orders the candidates the way the gold reward does.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Correlation {
    /// Over all candidates of all prompts pooled.
    pub pearson: Option<f64>,
    pub spearman: Option<f64>,
    /// Spearman within each prompt, averaged over the prompts where it is defined (what a
    /// selection among one prompt's candidates depends on).
    pub within_prompt_spearman: Option<f64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SweepResult {
    pub points: Vec<SweepPoint>,
    pub baselines: Vec<Baseline>,
    pub correlation: Option<Correlation>,
    /// Per prompt, per draw, the pick of every point (`picks[p][d][k]` = candidate index for
    /// `points[k]`).
    #[serde(skip)]
    pub picks: Vec<Vec<Vec<usize>>>,
}

/// Pearson's r; None when n < 2, lengths differ, or a side is constant.
pub fn pearson(x: &[f64], y: &[f64]) -> Option<f64> {
    if x.len() != y.len() || x.len() < 2 || x.iter().chain(y).any(|v| !v.is_finite()) {
        return None;
    }
    let n = x.len() as f64;
    let (mx, my) = (x.iter().sum::<f64>() / n, y.iter().sum::<f64>() / n);
    let (mut cov, mut vx, mut vy) = (0.0, 0.0, 0.0);
    for (a, b) in x.iter().zip(y) {
        cov += (a - mx) * (b - my);
        vx += (a - mx).powi(2);
        vy += (b - my).powi(2);
    }
    (vx > 0.0 && vy > 0.0).then(|| cov / (vx * vy).sqrt())
}

/// The random order of prompt `p`'s `m` candidates in draw `d`: one ChaCha8 stream per
/// (seed, prompt, draw), so adding prompts or draws changes no other prompt's subsets.
pub fn candidate_order(seed: u64, p: usize, d: usize, m: usize) -> Vec<usize> {
    let stream = seed ^ (p as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (d as u64).wrapping_mul(0xC2B2_AE3D_27D4_EB4F);
    let mut rng = ChaCha8Rng::seed_from_u64(stream);
    let mut order: Vec<usize> = (0..m).collect();
    order.shuffle(&mut rng);
    order
}

/// Runs every (rule, β, N) of `sweep` over `prompts`. Every prompt needs at least max(N)
/// candidates, and the inputs the chosen rules use (checked by the caller, who can name the line).
pub fn sweep(prompts: &[Candidates], s: &Sweep) -> SweepResult {
    let mut points: Vec<(Rule, f64, usize)> = Vec::new();
    for &n in &s.ns {
        for (rule, betas) in &s.rules {
            for &b in betas {
                points.push((*rule, b, n));
            }
        }
    }
    let draws = s.draws.max(1);
    let picks: Vec<Vec<Vec<usize>>> = prompts
        .iter()
        .enumerate()
        .map(|(p, c)| {
            (0..draws)
                .map(|d| {
                    let order = candidate_order(s.seed, p, d, c.rewards.len());
                    points
                        .iter()
                        .map(|&(rule, beta, n)| {
                            // The subset in candidate order, so a tie goes to the lowest index.
                            let mut subset = order[..n].to_vec();
                            subset.sort_unstable();
                            subset[select(rule, beta, c, &subset)]
                        })
                        .collect()
                })
                .collect()
        })
        .collect();
    let has_gold = prompts.iter().all(|c| c.gold.is_some()) && !prompts.is_empty();
    let has_lp = prompts.iter().all(|c| c.ref_logprobs.is_some()) && !prompts.is_empty();
    // Per prompt: the mean over draws of f(prompt, pick).
    let per_prompt = |k: usize, f: &dyn Fn(&Candidates, usize) -> f64| -> Vec<f64> {
        prompts.iter().zip(&picks).map(|(c, pd)| pd.iter().map(|d| f(c, d[k])).sum::<f64>() / draws as f64).collect()
    };
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    let bon_index = |n: usize| points.iter().position(|&(r, _, m)| r == Rule::Bon && m == n);
    let out_points = points
        .iter()
        .enumerate()
        .map(|(k, &(rule, beta, n))| {
            let gold = has_gold.then(|| per_prompt(k, &|c, i| c.gold.as_ref().expect("gold")[i]));
            let differs = match bon_index(n) {
                Some(b) => {
                    let total: usize = picks.iter().flatten().filter(|d| d[k] != d[b]).count();
                    total as f64 / (prompts.len() * draws).max(1) as f64
                }
                None => f64::NAN,
            };
            SweepPoint {
                rule,
                beta,
                n,
                proxy: mean(&per_prompt(k, &|c, i| c.rewards[i])),
                gold: gold.as_ref().map(|g| mean(g)),
                gold_ci: gold.as_ref().map(|g| bootstrap_ci(g, mean, 1000, s.seed)),
                ref_logprob: has_lp.then(|| mean(&per_prompt(k, &|c, i| c.ref_logprobs.as_ref().expect("lp")[i]))),
                differs_from_bon: differs,
            }
        })
        .collect();
    let baselines = if has_gold {
        s.ns.iter()
            .map(|&n| {
                let (mut random, mut oracle) = (0.0, 0.0);
                for (p, c) in prompts.iter().enumerate() {
                    let g = c.gold.as_ref().expect("gold");
                    for d in 0..draws {
                        let order = candidate_order(s.seed, p, d, g.len());
                        let sub: Vec<f64> = order[..n].iter().map(|&i| g[i]).collect();
                        random += mean(&sub);
                        oracle += sub.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                    }
                }
                let count = (prompts.len() * draws) as f64;
                Baseline { n, random_gold: random / count, oracle_gold: oracle / count }
            })
            .collect()
    } else {
        Vec::new()
    };
    let correlation = has_gold.then(|| {
        let proxy: Vec<f64> = prompts.iter().flat_map(|c| c.rewards.iter().copied()).collect();
        let gold: Vec<f64> = prompts.iter().flat_map(|c| c.gold.as_ref().expect("gold").iter().copied()).collect();
        let within: Vec<f64> = prompts.iter().filter_map(|c| spearman(&c.rewards, c.gold.as_ref().expect("gold"))).collect();
        Correlation {
            pearson: pearson(&proxy, &gold),
            spearman: spearman(&proxy, &gold),
            within_prompt_spearman: (!within.is_empty()).then(|| mean(&within)),
        }
    });
    SweepResult { points: out_points, baselines, correlation, picks }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wd_term_is_the_mean_cosine_distance_including_itself() {
        // Hand computation: e0 = (1, 0), e1 = (0, 2), e2 = (−3, 0).
        // cos(e0, e1) = 0, cos(e0, e2) = −1, cos(e1, e2) = 0.
        // wd0 = (0 + 1 + 2) / 3 = 1; wd1 = (1 + 0 + 1) / 3 = 2/3; wd2 = (2 + 1 + 0) / 3 = 1.
        let e: [&[f64]; 3] = [&[1.0, 0.0], &[0.0, 2.0], &[-3.0, 0.0]];
        let w = wd_terms(&e);
        for (got, want) in w.iter().zip([1.0, 2.0 / 3.0, 1.0]) {
            assert!((got - want).abs() < 1e-15, "{w:?}");
        }
        // With rewards (0.5, 0.2, 0.6) and β = 0.5 the objective is (0, −2/15, 0.1): WD picks 2,
        // and β = 1 gives (−0.5, −7/15, −0.4): candidate 2 again; β = 3: (−2.5, −1.8, −2.4) → 1.
        let r = [0.5, 0.2, 0.6];
        assert_eq!(argmax_first(&objective(Rule::Wd, 0.5, &r, None, Some(&w))), 2);
        assert_eq!(argmax_first(&objective(Rule::Wd, 3.0, &r, None, Some(&w))), 1);
    }

    /// Every objective value and pick of ../../tests/fixtures/hf/rbon.json (float64, numpy).
    #[test]
    fn objectives_and_picks_match_rbon_json() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/hf/rbon.json");
        let f: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).expect("rbon.json")).expect("json");
        let floats = |v: &serde_json::Value| -> Vec<f64> { v.as_array().expect("list").iter().map(|x| x.as_f64().expect("number")).collect() };
        let (beta_kl, beta_wd) = (f["beta_kl"].as_f64().expect("β"), f["beta_wd"].as_f64().expect("β"));
        for p in f["prompts"].as_array().expect("prompts") {
            let rewards = floats(&p["rewards"]);
            let lp = floats(&p["ref_logprobs"]);
            let emb: Vec<Vec<f64>> = p["embeddings"].as_array().expect("embeddings").iter().map(floats).collect();
            let refs: Vec<&[f64]> = emb.iter().map(Vec::as_slice).collect();
            let wd = wd_terms(&refs);
            let close = |got: &[f64], key: &str| {
                for (g, w) in got.iter().zip(floats(&p[key])) {
                    assert!((g - w).abs() < 1e-12, "prompt {}: {key}: {g} vs {w}", p["prompt_index"]);
                }
            };
            close(&wd, "wd_term");
            close(&objective(Rule::Bon, 0.0, &rewards, None, None), "objective_bon");
            close(&objective(Rule::Kl, beta_kl, &rewards, Some(&lp), None), "objective_kl");
            close(&objective(Rule::Wd, beta_wd, &rewards, None, Some(&wd)), "objective_wd");
            let c = Candidates { rewards, ref_logprobs: Some(lp), embeddings: Some(emb), gold: None };
            let all: Vec<usize> = (0..c.rewards.len()).collect();
            for (rule, beta, key) in [(Rule::Bon, 0.0, "selected_bon"), (Rule::Kl, beta_kl, "selected_kl"), (Rule::Wd, beta_wd, "selected_wd")] {
                assert_eq!(select(rule, beta, &c, &all) as u64, p[key].as_u64().expect("index"), "prompt {}: {key}", p["prompt_index"]);
            }
        }
    }

    #[test]
    fn ties_go_to_the_first_and_nan_never_wins() {
        assert_eq!(argmax_first(&[1.0, 3.0, 3.0]), 1);
        assert_eq!(argmax_first(&[f64::NAN, 0.0, -1.0]), 1);
        assert_eq!(cosine(&[0.0, 0.0], &[1.0, 0.0]), 0.0);
    }

    #[test]
    fn subsets_are_nested_prefixes_of_a_per_prompt_order() {
        let a = candidate_order(7, 3, 0, 32);
        assert_eq!(a, candidate_order(7, 3, 0, 32), "seeded");
        assert_ne!(a, candidate_order(7, 4, 0, 32), "per prompt");
        assert_ne!(a, candidate_order(7, 3, 1, 32), "per draw");
        let mut sorted = a.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..32).collect::<Vec<_>>());
    }

    #[test]
    fn a_sweep_at_full_n_picks_the_argmax_and_measures_it_with_gold() {
        // Two prompts of 4 candidates; the proxy prefers candidate 3, gold prefers 0.
        let c = Candidates {
            rewards: vec![0.1, 0.2, 0.3, 0.9],
            ref_logprobs: Some(vec![-1.0, -3.0, -4.0, -20.0]),
            embeddings: None,
            gold: Some(vec![1.0, 0.5, 0.2, -1.0]),
        };
        let s = Sweep { rules: vec![(Rule::Bon, vec![0.0]), (Rule::Kl, vec![0.1])], ns: vec![4], draws: 3, seed: 1 };
        let r = sweep(&[c.clone(), c], &s);
        // BoN takes 3 (gold −1). KL, β = 0.1: (0.1−0.1, 0.2−0.3, 0.3−0.4, 0.9−2) = (0, −0.1, −0.1, −1.1): 0.
        assert_eq!(r.points[0].gold, Some(-1.0));
        assert_eq!(r.points[1].gold, Some(1.0));
        assert_eq!(r.points[1].differs_from_bon, 1.0);
        assert_eq!(r.baselines[0].oracle_gold, 1.0);
        assert!((r.baselines[0].random_gold - 0.175).abs() < 1e-12);
        let corr = r.correlation.expect("gold given");
        assert!(corr.within_prompt_spearman.expect("defined") < -0.9);
    }
}
