//! The verb `strength`: preference strength of each pair by multi-RM voting (Secrets of RLHF II,
//! Eq. 4); argument parsing and printing, the work is `rmtrain_pipeline::run_strength`.

use crate::device::parse_device;
use crate::verbs::at_least;
use anyhow::Result;
use clap::Args;
use std::path::{Path, PathBuf};

#[derive(Args)]
#[command(after_help = "Each output line is the input line with `strength_mean` (μ̂ = mean over the models of
r(chosen) − r(rejected), raw rewards), `strength_std` (σ̂, population std) and `strength_gaps` (one
gap per model, in --model order). The report folder gets strength.json, strength.md and
plots/strength_histogram.png, plots/strength_deciles.png (accuracy vs gold_margin by μ̂ decile).
Example:
  rmtrain strength --model runs/m0/model --model runs/m1/model --model runs/m2/model \\
      --data data/vader/movie.single_rater.train.jsonl --out runs/strength/movie.jsonl")]
pub struct StrengthArgs {
    /// Reward model folder (repeat; at least 2, the paper uses 10 trained with different data orders).
    #[arg(long = "model", required = true)]
    pub models: Vec<PathBuf>,
    /// JSONL pairs to measure (TRL standard, implicit-prompt or conversational).
    #[arg(long)]
    pub data: PathBuf,
    /// Output JSONL: every input line with its strength added.
    #[arg(long)]
    pub out: PathBuf,
    /// Folder for strength.json, strength.md and plots/ (default: the folder of --out).
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// Truncation length (≥ 2: [CLS] and [SEP]); default: the one each model was trained with (its
    /// rmtrain.json), else 128.
    #[arg(long, value_parser = at_least::<2>)]
    pub max_length: Option<usize>,
    #[arg(long, default_value = "cpu")]
    pub device: String,
    #[arg(long)]
    pub no_progress: bool,
}

pub fn strength(a: StrengthArgs) -> Result<()> {
    let device = parse_device(&a.device)?;
    let report = a.report.clone().unwrap_or_else(|| a.out.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new(".")).to_path_buf());
    let summary = rmtrain_pipeline::run_strength(&a.models, &a.data, &a.out, Some(&report), a.max_length, &device, !a.no_progress)?;
    println!("{}", rmtrain_eval::strength_markdown(&summary));
    Ok(())
}
