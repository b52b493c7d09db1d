//! `rmtrain recipe FILE.toml`: a strict TOML recipe (an unknown key is an error naming it and its
//! line) that prepares data, trains one reward model and writes a report. Paths are relative to
//! the directory rmtrain runs in (the repository root in the README's commands).

use crate::device::parse_device;
use crate::verbs::load_evals;
use anyhow::{Context, Result};
use clap::Args;
use rmtrain_data::{read_pairs, VaderOptions};
use rmtrain_eval::{accuracy_matrix_markdown, markdown_table, EvalRow};
use rmtrain_train::trainer::Trainable;
use rmtrain_train::{TrainConfig, TrainRequest};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(Args)]
#[command(after_help = "Examples:
  rmtrain recipe recipes/single.toml
  rmtrain recipe recipes/single_rater.toml --resume   # continue an interrupted run")]
pub struct RecipeArgs {
    pub file: PathBuf,
    /// Continue the recipe's run from its newest checkpoint.
    #[arg(long)]
    pub resume: bool,
    /// WARM recipes: train only member K (then average with a run without --member).
    #[arg(long)]
    pub member: Option<usize>,
    #[arg(long)]
    pub no_progress: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recipe {
    pub name: String,
    /// Run folder.
    pub out: PathBuf,
    #[serde(default = "default_device")]
    pub device: String,
    pub model: ModelSection,
    pub data: DataSection,
    #[serde(default)]
    pub train: TrainConfig,
    /// WARM: train several members and average them (see `warm.rs`).
    #[serde(default)]
    pub members: Option<crate::warm::MembersSection>,
    #[serde(default)]
    pub merge: Option<crate::warm::MergeSection>,
}

impl Recipe {
    /// Eval sets as (name, path), in the recipe's order.
    pub fn eval_paths(&self) -> Vec<(String, PathBuf)> {
        self.data.eval.iter().map(|(n, v)| (n.clone(), PathBuf::from(v.as_str().expect("checked in read_recipe")))).collect()
    }
}

fn default_device() -> String {
    "cpu".into()
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSection {
    /// HF folder: a backbone (BertModel) or a reward model to continue from.
    pub backbone: PathBuf,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataSection {
    pub train: PathBuf,
    /// Named eval sets, evaluated in this order.
    #[serde(default)]
    pub eval: toml::Table,
    /// When present, VADER pairs are built first (skipped when `out` already holds them with the
    /// same options).
    pub vader: Option<VaderOptions>,
    /// Label-noise harness: flip this share of the train pairs (chosen <-> rejected), seeded, on
    /// top of the labels' own source.
    #[serde(default)]
    pub flip_fraction: f64,
    #[serde(default)]
    pub flip_seed: u64,
    /// WARM recipes: repeat the whole run at each of these flip shares and plot accuracy
    /// against noise (e.g. [0.0, 0.1, 0.25, 0.4]).
    #[serde(default)]
    pub noise_sweep: Vec<f64>,
}

/// Reads a recipe strictly; errors read `FILE:LINE: message`.
pub fn read_recipe(path: &Path) -> Result<Recipe> {
    let text = std::fs::read_to_string(path).with_context(|| format!("{}: cannot read recipe", path.display()))?;
    let recipe: Recipe = toml::from_str(&text).map_err(|e| {
        let line = e.span().map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1);
        match line {
            Some(l) => anyhow::anyhow!("{}:{l}: {}", path.display(), e.message()),
            None => anyhow::anyhow!("{}: {}", path.display(), e.message()),
        }
    })?;
    recipe.train.validate().map_err(|m| anyhow::anyhow!("{}: {m}", path.display()))?;
    for k in std::iter::once(&recipe.data.flip_fraction).chain(&recipe.data.noise_sweep) {
        if !(0.0..=1.0).contains(k) {
            anyhow::bail!("{}: data.flip_fraction / data.noise_sweep values must be in [0, 1], got {k}", path.display());
        }
    }
    for (name, v) in &recipe.data.eval {
        if !v.is_str() {
            anyhow::bail!("{}: data.eval.{name}: expected a path string", path.display());
        }
    }
    Ok(recipe)
}

pub fn run(a: RecipeArgs) -> Result<()> {
    let started = Instant::now();
    let recipe = read_recipe(&a.file)?;
    let device = parse_device(&recipe.device).with_context(|| format!("{}: device", a.file.display()))?;
    if recipe.members.is_some() {
        crate::warm::run_warm(&recipe, a.member, !a.no_progress)?;
        eprintln!("recipe {}: done in {:.0} s; report in {}", recipe.name, started.elapsed().as_secs_f64(), recipe.out.join("report.md").display());
        return Ok(());
    }
    if a.member.is_some() {
        anyhow::bail!("{}: --member needs a recipe with a [members] section", a.file.display());
    }
    if !recipe.data.noise_sweep.is_empty() {
        anyhow::bail!("{}: data.noise_sweep needs a recipe with a [members] section", a.file.display());
    }
    if let Some(v) = &recipe.data.vader {
        prepare_vader(v)?;
    }
    let eval_sets = load_evals(&recipe.eval_paths())?;
    let mut train_pairs = read_pairs(&recipe.data.train)?;
    if let Some(n) = recipe.train.max_train_pairs {
        train_pairs.truncate(n);
    }
    let flipped = rmtrain_data::flip_labels(&mut train_pairs, recipe.data.flip_fraction, recipe.data.flip_seed)?;
    if flipped > 0 {
        eprintln!("recipe {}: flipped {flipped} train labels (data.flip_fraction = {})", recipe.name, recipe.data.flip_fraction);
    }
    let recipe_json = serde_json::to_value(&recipe)?;
    eprintln!("recipe {}: {} train pairs (using {}), eval sets: {}", recipe.name, train_pairs.len(),
        recipe.train.max_train_pairs.map_or(train_pairs.len(), |m| m.min(train_pairs.len())),
        eval_sets.iter().map(|(n, s)| format!("{n} ({})", s.len())).collect::<Vec<_>>().join(", "));
    let outcome = rmtrain_train::train(TrainRequest {
        init: recipe.model.backbone.clone(),
        train_data_sha256: Some(format!("{}+flip{}@{}", rmtrain_core::sha256_file(&recipe.data.train)?, recipe.data.flip_fraction, recipe.data.flip_seed)),
        train_pairs,
        evals: eval_sets,
        config: recipe.train.clone(),
        out: recipe.out.clone(),
        resume: a.resume,
        recipe: recipe_json.clone(),
        device,
        progress: !a.no_progress,
        trainable: Trainable::All,
    })?;
    let rows: Vec<EvalRow> = outcome
        .final_eval
        .iter()
        .map(|(set, m)| EvalRow { model: recipe.name.clone(), set: set.clone(), metrics: m.clone() })
        .collect();
    let wall = started.elapsed().as_secs_f64();
    let sets: Vec<String> = rows.iter().map(|r| r.set.clone()).collect();
    let report_md = format!(
        "# {}\n\nTrained {} optimizer steps from `{}` on `{}`; wall time {:.0} s (training {:.0} s).\n\n## Accuracy (gold labels, 95% bootstrap interval)\n\n{}\n## All metrics\n\n{}",
        recipe.name,
        outcome.steps,
        recipe.model.backbone.display(),
        recipe.data.train.display(),
        wall,
        outcome.wall_seconds,
        accuracy_matrix_markdown(&rows, &[recipe.name.clone()], &sets),
        markdown_table(&rows)
    );
    let report_json = serde_json::json!({
        "recipe": recipe_json, "steps": outcome.steps, "wall_seconds": wall, "train_seconds": outcome.wall_seconds,
        "model": outcome.model_dir, "results": rows,
    });
    rmtrain_core::write_atomic(&recipe.out.join("report.md"), report_md.as_bytes())?;
    rmtrain_core::write_json_atomic(&recipe.out.join("report.json"), &report_json)?;
    println!("{report_md}");
    eprintln!("recipe {}: done in {:.0} s; model in {}, report in {}", recipe.name, wall, outcome.model_dir.display(), recipe.out.join("report.md").display());
    Ok(())
}

/// Builds the VADER pair files unless `out/summary.json` shows they were built with these options.
pub fn prepare_vader(opts: &VaderOptions) -> Result<()> {
    let summary_path = opts.out_dir.join("summary.json");
    let wanted = serde_json::to_value(opts)?;
    if let Ok(text) = std::fs::read_to_string(&summary_path)
        && let Ok(old) = serde_json::from_str::<serde_json::Value>(&text)
        && old.get("options") == Some(&wanted)
    {
        return Ok(());
    }
    if !opts.raw_dir.is_dir() {
        anyhow::bail!("{}: VADER ratings not found; run scripts/fetch-assets.sh first", opts.raw_dir.display());
    }
    let summary = rmtrain_data::import_vader(opts)?;
    eprintln!("{summary}");
    Ok(())
}
