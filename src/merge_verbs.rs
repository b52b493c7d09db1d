//! The verbs `average` (WARM weight averaging) and `interpolate` (the mode-connectivity curve
//! between two checkpoints).

use crate::device::parse_device;
use crate::verbs::{at_least, finite, load_evals, named_path};
use anyhow::{bail, Result};
use clap::Args;
use rmtrain_merge::{average_checkpoints, AverageOptions};
use rmtrain_pipeline::interpolate::{curve_ts, interpolation_curve, write_curve};
use std::path::PathBuf;

#[derive(Args)]
#[command(after_help = "Streams tensor by tensor (memory: about one tensor, not N models). Refuses folders whose
config, tensor names, shapes, dtypes or tokenizer differ; warns when their manifests show
different init weights (refuses with --strict).
Examples:
  rmtrain average runs/warm/members/member-0/model runs/warm/members/member-1/model --out runs/warm/warm
  rmtrain average A B C --weights 0.5,0.3,0.2 --out merged --strict")]
pub struct AverageArgs {
    /// Checkpoint folders (HF: config.json, model.safetensors, tokenizer.json).
    #[arg(required = true, num_args = 2..)]
    pub dirs: Vec<PathBuf>,
    #[arg(long)]
    pub out: PathBuf,
    /// Comma-separated weights, one per folder (normalised to sum 1); default uniform.
    // Hyphen values pass, so `--weights -1,2` reaches the check in average_checkpoints (which
    // names the flag) instead of clap's "unexpected argument '-1,2'".
    #[arg(long, value_delimiter = ',', allow_hyphen_values = true)]
    pub weights: Option<Vec<f64>>,
    /// Refuse folders that were not trained from the same init weights.
    #[arg(long)]
    pub strict: bool,
}

pub fn average(a: AverageArgs) -> Result<()> {
    let started = std::time::Instant::now();
    let report = average_checkpoints(&a.dirs, &a.out, &AverageOptions { weights: a.weights, strict: a.strict })?;
    for w in &report.warnings {
        eprintln!("rmtrain: warning: {w}");
    }
    let mut json = serde_json::to_value(&report)?;
    json["seconds"] = serde_json::json!(started.elapsed().as_secs_f64());
    println!("{json}");
    Ok(())
}

#[derive(Args)]
#[command(after_help = "Evaluates θ(t) = (1 − t)·A + t·B at --steps evenly spaced t in [0, 1] (extend with
--t-min/--t-max), reporting Bradley–Terry loss and accuracy per set: the barrier is how far the
curve rises above the line joining its ends. Writes interpolation.json and interpolation.png.
Examples:
  rmtrain interpolate runs/warm/members/member-0/model runs/warm/members/member-1/model --steps 5 \\
      --data movie=data/vader/movie.valid.jsonl --out runs/interp")]
pub struct InterpolateArgs {
    pub a: PathBuf,
    pub b: PathBuf,
    /// Points on the curve, both ends included.
    #[arg(long, default_value_t = 5, value_parser = at_least::<2>)]
    pub steps: usize,
    #[arg(long, default_value_t = 0.0, value_parser = finite, allow_negative_numbers = true)]
    pub t_min: f64,
    #[arg(long, default_value_t = 1.0, value_parser = finite, allow_negative_numbers = true)]
    pub t_max: f64,
    /// Eval set NAME=PATH (repeatable).
    #[arg(long = "data", value_parser = named_path, required = true)]
    pub data: Vec<(String, PathBuf)>,
    /// Use at most this many pairs of each set.
    #[arg(long, value_parser = at_least::<1>)]
    pub max_pairs: Option<usize>,
    #[arg(long)]
    pub out: PathBuf,
    /// Truncation length (≥ 2); default: A's (its rmtrain.json), else 128.
    #[arg(long, value_parser = at_least::<2>)]
    pub max_length: Option<usize>,
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

pub fn interpolate(a: InterpolateArgs) -> Result<()> {
    if a.t_min >= a.t_max {
        bail!("--t-min ({}) must be below --t-max ({})", a.t_min, a.t_max);
    }
    let device = parse_device(&a.device)?;
    let mut sets = load_evals(&a.data)?;
    if let Some(m) = a.max_pairs {
        sets.iter_mut().for_each(|(_, p)| p.truncate(m));
    }
    let points = interpolation_curve(&a.a, &a.b, &curve_ts(a.steps, a.t_min, a.t_max), &sets, a.max_length, &device)?;
    let json = write_curve(&a.out, &a.a, &a.b, "loss and accuracy between two checkpoints", &points)?;
    println!("{}", serde_json::to_string_pretty(&json)?);
    Ok(())
}
