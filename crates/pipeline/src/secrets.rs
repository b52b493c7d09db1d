//! The Secrets of RLHF II recipe (Wang et al. 2024) and MetaRM (Dou et al. 2024), as one runner:
//!
//! 1. `[strength]`: M voter reward models trained on the train pairs with different seeds and data
//!    orders, then μ̂ and σ̂ of every train pair from their reward gaps (in-sample, as the paper);
//!    `strength/train.strength.jsonl` is the train file of every arm;
//! 2. `[meta]`: MetaRM's meta set, groups of k unlabeled texts of a (shifted) pair file;
//! 3. `[ablation]`: each arm (its `set` over [train]) trained once per seed, from the backbone;
//! 4. evaluation of every run with gold labels on every eval set; per arm, the mean of its seeds
//!    with a bootstrap interval over pairs, ECE and Spearman; `report.md`, `report.json`, plots.
//!
//! Runs that finished with the same settings, data and init are reused, so an interrupted recipe
//! picks up where it stopped.

use crate::evaluate::{evaluate_models, Entry, EvalOptions};
use crate::recipe::Recipe;
use crate::settings::apply_sets;
use crate::strength::strength_of_pairs;
use crate::train_set::prepare_train_set;
use crate::runs::{linear_probe, probe_config, reuse_or_train};
use crate::{config_error, Result};
use burn::tensor::Device;
use rmtrain_data::Pair;
use rmtrain_eval::{render_markdown_table, Align, BarSeries, StrengthSummary};
use rmtrain_train::trainer::Trainable;
use rmtrain_train::{TrainConfig, TrainRequest};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::time::Instant;

pub struct SecretsOptions<'a> {
    pub device: &'a Device,
    pub progress: bool,
}

/// One arm's results on one eval set: the mean over seeds.
#[derive(Debug, Clone, Serialize)]
pub struct ArmSet {
    pub set: String,
    /// Mean accuracy over seeds, and a 95% bootstrap interval over pairs of the per-pair accuracy
    /// averaged over seeds.
    pub accuracy: f64,
    pub accuracy_ci95: (f64, f64),
    pub per_seed_accuracy: Vec<f64>,
    pub ece: f64,
    pub spearman_gold: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ArmResult {
    pub name: String,
    pub set: Vec<String>,
    pub sets: Vec<ArmSet>,
    /// Pairs the arm's flip turned over (the same for every seed).
    pub flipped_pairs: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct SecretsResults {
    pub strength: Option<StrengthSummary>,
    pub arms: Vec<ArmResult>,
    pub seconds: serde_json::Map<String, serde_json::Value>,
}

/// Runs the stages the recipe has: strength, meta set, ablation, evaluation, report.
pub fn run_secrets(recipe: &Recipe, opts: &SecretsOptions) -> Result<SecretsResults> {
    let started = Instant::now();
    let eval_sets = recipe.prepare_data()?;
    let out = recipe.out.clone();
    let set = prepare_train_set(&recipe.data.train, recipe.train.max_train_pairs, recipe.data.flip_fraction, recipe.data.flip_seed)?;
    let recipe_json = serde_json::to_value(recipe).expect("a recipe serializes");
    let mut seconds = serde_json::Map::new();
    let mut time = |what: &str, since: Instant| {
        seconds.insert(what.into(), since.elapsed().as_secs_f64().round().into());
    };
    let request = |config: TrainConfig, init: &Path, pairs: &[Pair], data_sha: &str, run: PathBuf| TrainRequest {
        init: init.to_path_buf(),
        train_pairs: pairs.to_vec(),
        train_data_sha256: Some(data_sha.to_string()),
        evals: Vec::new(),
        config,
        out: run,
        resume: false,
        recipe: recipe_json.clone(),
        device: opts.device.clone(),
        replica_devices: Vec::new(),
        progress: opts.progress,
        trainable: Trainable::All,
    };
    let arm_configs = arm_configs(recipe, &set.pairs)?;

    // 0. The shared init: the backbone's new head, linear-probed (LP-FT), or the backbone itself.
    let init = match &recipe.init {
        Some(i) => {
            let t = Instant::now();
            let probe = probe_config(&plain_config(&recipe.train), i.linear_probe_steps, i.linear_probe_lr);
            let init = linear_probe(request(probe, &recipe.model.backbone, &set.pairs, &set.data_sha256, out.join("shared-init")), "secrets")?;
            time("linear_probe", t);
            init
        }
        None => recipe.model.backbone.clone(),
    };

    // 1. Voters and the strength of every train pair.
    let (mut train_pairs, mut data_sha, mut strength) = (set.pairs.clone(), set.data_sha256.clone(), None);
    let mut train_file = recipe.data.train.clone();
    if let Some(s) = &recipe.strength {
        let t = Instant::now();
        let mut voters = Vec::with_capacity(s.voters);
        for k in 0..s.voters {
            let seed = s.first_seed + k as u64;
            let cfg = TrainConfig { seed, data_seed: Some(seed), ..plain_config(&recipe.train) };
            let run = out.join("strength").join(format!("voter-{k}"));
            reuse_or_train(request(cfg, &init, &set.pairs, &set.data_sha256, run.clone()), "secrets", &format!("strength voter {k} (seed {seed})"), "", &recipe.data.train)?;
            voters.push(run.join("model"));
        }
        time("voters", t);
        let t = Instant::now();
        let path = out.join("strength").join("train.strength.jsonl");
        let summary = strength_of_pairs(&voters, &set.pairs, &path, Some(&out.join("strength")), None, opts.device, opts.progress)?;
        eprintln!("{}", rmtrain_eval::strength_markdown(&summary));
        train_pairs = rmtrain_data::read_pairs(&path)?;
        data_sha = format!("{}+strength:{}", set.data_sha256, rmtrain_core::sha256_file(&path)?);
        train_file = path;
        strength = Some(summary);
        time("strength", t);
    }

    // 2. The meta set.
    if let Some(m) = &recipe.meta {
        let pairs = rmtrain_data::read_pairs(&m.from)?;
        let (texts, _) = rmtrain_data::distinct_texts(&[&pairs]);
        let groups = rmtrain_data::meta_groups_from_texts(&texts, m.k, m.groups, m.seed)?;
        rmtrain_data::write_meta_groups(&m.out, &groups)?;
        eprintln!("secrets: meta set {}: {} groups of {} texts from {}", m.out.display(), groups.len(), m.k, m.from.display());
    }

    // 3. The arms, seed by seed.
    let Some(ablation) = &recipe.ablation else {
        let results = SecretsResults { strength, arms: Vec::new(), seconds };
        write_report(recipe, &results)?;
        return Ok(results);
    };
    let t = Instant::now();
    let mut runs = Vec::new();
    let mut flipped = Vec::new();
    for (arm, base) in ablation.arms.iter().zip(&arm_configs) {
        // A MetaRM arm is also a run of its meta set's content (its path alone is in the config).
        let data_sha = match &base.metarm {
            Some(m) => format!("{data_sha}+meta:{}", rmtrain_core::sha256_file(&m.meta_data)?),
            None => data_sha.clone(),
        };
        for &seed in &ablation.seeds {
            let cfg = TrainConfig { seed, data_seed: Some(seed), ..base.clone() };
            let run = out.join("arms").join(arm_folder(&arm.name)).join(format!("seed-{seed}"));
            let arm_started = Instant::now();
            reuse_or_train(request(cfg, &init, &train_pairs, &data_sha, run.clone()), "secrets", &format!("arm {:?} seed {seed}", arm.name), "", &train_file)?;
            time(&format!("arm {} seed {seed}", arm.name), arm_started);
            runs.push(run);
        }
        flipped.push(flipped_pairs(&runs[runs.len() - 1]));
    }
    time("arms", t);

    // 4. Evaluation: every run on every set, each distinct text scored once per model.
    let t = Instant::now();
    let models: Vec<PathBuf> = runs.iter().map(|r| r.join("model")).collect();
    let entries: Vec<Entry> = (0..models.len()).map(|i| Entry::Model { label: format!("run-{i}"), model: i }).collect();
    let evaluation = evaluate_models(&models, &entries, &eval_sets, &EvalOptions { max_length: None, device: opts.device, seed: 0, progress: opts.progress })?;
    let seeds = ablation.seeds.len();
    let mut arms = Vec::with_capacity(ablation.arms.len());
    for (a, arm) in ablation.arms.iter().enumerate() {
        let rows = a * seeds..(a + 1) * seeds;
        let sets = evaluation
            .sets
            .iter()
            .enumerate()
            .map(|(s, name)| {
                let per_seed: Vec<&rmtrain_eval::PairMetrics> = rows.clone().map(|r| &evaluation.rows[r].1[s]).collect();
                let n = evaluation.gaps[rows.start][s].len();
                // Per pair: the share of seeds that rank it right (ties count wrong, as accuracy does).
                let correct: Vec<f64> = (0..n).map(|i| rows.clone().filter(|&r| evaluation.gaps[r][s][i] > 0.0).count() as f64 / seeds as f64).collect();
                let mean = |xs: &[f64]| xs.iter().sum::<f64>() / xs.len() as f64;
                let spearman: Vec<f64> = per_seed.iter().filter_map(|m| m.spearman_gold).collect();
                ArmSet {
                    set: name.clone(),
                    accuracy: mean(&correct),
                    accuracy_ci95: rmtrain_eval::bootstrap_ci(&correct, mean, 1000, 0),
                    per_seed_accuracy: per_seed.iter().map(|m| m.accuracy).collect(),
                    ece: mean(&per_seed.iter().map(|m| m.ece).collect::<Vec<_>>()),
                    spearman_gold: (spearman.len() == per_seed.len()).then(|| mean(&spearman)),
                }
            })
            .collect();
        arms.push(ArmResult { name: arm.name.clone(), set: arm.set.clone(), sets, flipped_pairs: flipped[a] });
    }
    time("evaluation", t);
    time("total", started);
    let results = SecretsResults { strength, arms, seconds };
    write_report(recipe, &results)?;
    Ok(results)
}

/// Every arm's settings, checked before anything trains: an arm that reads μ̂ needs `[strength]`
/// or a train file that carries it; a MetaRM arm's meta set must exist or be `[meta].out`.
fn arm_configs(recipe: &Recipe, train_pairs: &[Pair]) -> Result<Vec<TrainConfig>> {
    let Some(ablation) = &recipe.ablation else { return Ok(Vec::new()) };
    let mut configs = Vec::with_capacity(ablation.arms.len());
    for arm in &ablation.arms {
        let cfg = apply_sets(&recipe.train, &arm.set).map_err(|e| config_error(format!("ablation arm {:?}: {e}", arm.name)))?;
        if cfg.reads_strength()
            && recipe.strength.is_none()
            && let Some(p) = train_pairs.iter().find(|p| p.strength.is_none())
        {
            return Err(config_error(format!(
                "ablation arm {:?} reads the preference strength, but there is no [strength] section and {}:{} has no \"strength_mean\"",
                arm.name,
                recipe.data.train.display(),
                p.line
            )));
        }
        if let Some(m) = &cfg.metarm
            && !m.meta_data.is_file()
            && recipe.meta.as_ref().is_none_or(|meta| meta.out != m.meta_data)
        {
            return Err(config_error(format!(
                "ablation arm {:?}: metarm.meta_data {}: no such file, and not the [meta] stage's out",
                arm.name,
                m.meta_data.display()
            )));
        }
        configs.push(cfg);
    }
    Ok(configs)
}

/// [train] without the per-arm methods: what the voters are trained with.
fn plain_config(train: &TrainConfig) -> TrainConfig {
    let mut cfg = TrainConfig { flip: None, metarm: None, ..train.clone() };
    cfg.loss = rmtrain_train::LossConfig { center_rewards_coefficient: train.loss.center_rewards_coefficient, ..Default::default() };
    cfg
}

/// An arm's folder under `arms/`: letters and digits kept (lower case), everything else `-`.
pub fn arm_folder(name: &str) -> String {
    let s: String = name.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' }).collect();
    s.trim_matches('-').to_string()
}

/// The flip count the run logged at its start (0 when none).
fn flipped_pairs(run: &Path) -> usize {
    let Ok(text) = std::fs::read_to_string(run.join("metrics.jsonl")) else { return 0 };
    text.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find_map(|v| v.get("flipped_by_strength").and_then(|f| f.as_u64()))
        .unwrap_or(0) as usize
}

/// report.md, report.json and plots/accuracy.png.
fn write_report(recipe: &Recipe, r: &SecretsResults) -> Result<()> {
    let out = &recipe.out;
    let mut md = format!("# {}\n\nBackbone `{}`, train pairs `{}`.\n", recipe.name, recipe.model.backbone.display(), recipe.data.train.display());
    if let Some(s) = &r.strength {
        md += &format!(
            "\n## Preference strength ({} voters, in-sample)\n\n{}\nPlots: `strength/plots/strength_histogram.png`, `strength/plots/strength_deciles.png`.\n",
            s.models,
            rmtrain_eval::strength_markdown(s)
        );
    }
    if !r.arms.is_empty() {
        let sets: Vec<String> = r.arms[0].sets.iter().map(|s| s.set.clone()).collect();
        let seeds = r.arms[0].sets[0].per_seed_accuracy.len();
        let mut headers = vec!["arm".to_string()];
        headers.extend(sets.iter().cloned());
        let h: Vec<&str> = headers.iter().map(String::as_str).collect();
        let align = vec![Align::Left; h.len()];
        let table = |cell: &dyn Fn(&ArmSet) -> String| {
            let rows: Vec<Vec<String>> = r.arms.iter().map(|a| std::iter::once(a.name.clone()).chain(a.sets.iter().map(cell)).collect()).collect();
            render_markdown_table(&h, &align, &rows)
        };
        md += &format!(
            "\n## Ablation: accuracy with gold labels (mean of {seeds} seeds, 95% bootstrap interval over pairs)\n\n{}\n### Accuracy per seed\n\n{}\n### Top-label ECE (mean of seeds)\n\n{}\n### Spearman of the reward gap vs the gold margin (mean of seeds)\n\n{}\n### Arms\n\n{}\n",
            table(&|s| format!("{:.3} [{:.3}, {:.3}]", s.accuracy, s.accuracy_ci95.0, s.accuracy_ci95.1)),
            table(&|s| s.per_seed_accuracy.iter().map(|a| format!("{a:.3}")).collect::<Vec<_>>().join(" / ")),
            table(&|s| format!("{:.3}", s.ece)),
            table(&|s| s.spearman_gold.map_or("–".into(), |x| format!("{x:.3}"))),
            render_markdown_table(
                &["arm", "settings over [train]", "pairs flipped"],
                &[Align::Left, Align::Left, Align::Right],
                &r.arms
                    .iter()
                    .map(|a| vec![a.name.clone(), if a.set.is_empty() { "–".into() } else { format!("`{}`", a.set.join("`, `")) }, a.flipped_pairs.to_string()])
                    .collect::<Vec<_>>()
            )
        );
        let series: Vec<BarSeries> = r
            .arms
            .iter()
            .map(|a| BarSeries {
                label: a.name.clone(),
                values: a.sets.iter().map(|s| s.accuracy).collect(),
                intervals: Some(a.sets.iter().map(|s| s.accuracy_ci95).collect()),
            })
            .collect();
        let lo = r.arms.iter().flat_map(|a| a.sets.iter().map(|s| s.accuracy_ci95.0)).fold(1.0f64, f64::min);
        rmtrain_eval::bar_chart_grouped(
            &out.join("plots/accuracy.png"),
            &format!("{}: accuracy per arm (gold labels, mean of seeds)", recipe.name),
            &sets,
            &series,
            Some(((lo - 0.05).max(0.0), 1.0)),
        )?;
        md += "\nPlot: `plots/accuracy.png`.\n";
    }
    md += &format!("\n## Wall time (s)\n\n```\n{}\n```\n", serde_json::to_string_pretty(&r.seconds).expect("json"));
    rmtrain_core::write_atomic(&out.join("report.md"), md.as_bytes())?;
    rmtrain_core::write_json_atomic(&out.join("report.json"), &serde_json::json!({"recipe": recipe, "results": r}))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arm_folders_are_plain_names() {
        assert_eq!(arm_folder("+flip+margin"), "flip-margin");
        assert_eq!(arm_folder("BT"), "bt");
        assert_eq!(arm_folder("+SwAV (diff)"), "swav--diff");
        assert_eq!(arm_folder("+"), "");
    }
}
