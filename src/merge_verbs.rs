//! The verbs `average` (WARM weight averaging) and `interpolate` (the mode-connectivity curve
//! between two checkpoints).

use crate::device::parse_device;
use crate::verbs::{at_least, finite, load_evals, named_path};
use anyhow::{bail, Result};
use clap::Args;
use rmtrain_data::Pair;
use rmtrain_merge::{average_checkpoints, interpolate_tensors, AverageOptions};
use rmtrain_models::{RewardModel, ScoreOptions};
use serde::Serialize;
use std::path::{Path, PathBuf};

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

#[derive(Debug, Clone, Serialize)]
pub struct CurvePoint {
    pub t: f64,
    pub set: String,
    pub loss: f64,
    pub accuracy: f64,
}

/// Loss and accuracy along the line between two checkpoints.
pub fn interpolation_curve(a: &Path, b: &Path, ts: &[f64], sets: &[(String, Vec<Pair>)], max_length: Option<usize>, device: &burn::tensor::Device) -> Result<Vec<CurvePoint>> {
    let max_length = max_length.or_else(|| rmtrain_core::Manifest::read(a).ok().and_then(|m| m.max_length)).unwrap_or(128);
    let mut points = Vec::new();
    for &t in ts {
        let rm = RewardModel::load_from_rows(a, interpolate_tensors(a, b, t)?, max_length, device)?;
        if !rm.initialised.is_empty() {
            bail!("{}: not a reward model: {} would be random", a.display(), rm.initialised.join(", "));
        }
        for (name, pairs) in sets {
            let (rc, rr) = rmtrain_train::score_pairs(&rm, pairs, &ScoreOptions::default())?;
            let d: Vec<f64> = rc.iter().zip(&rr).map(|(c, r)| c - r).collect();
            let loss = d.iter().map(|x| -rmtrain_eval::log_sigmoid(*x)).sum::<f64>() / d.len() as f64;
            points.push(CurvePoint { t, set: name.clone(), loss, accuracy: rmtrain_eval::pairwise_accuracy(&d) });
        }
    }
    Ok(points)
}

/// Accuracy and loss curves as a PNG, one series per set.
pub fn plot_curve(path: &Path, title: &str, points: &[CurvePoint]) -> Result<()> {
    let mut sets: Vec<String> = Vec::new();
    for p in points {
        if !sets.contains(&p.set) {
            sets.push(p.set.clone());
        }
    }
    let series: Vec<(String, Vec<(f64, f64)>)> = sets
        .iter()
        .flat_map(|s| {
            let acc = points.iter().filter(|p| &p.set == s).map(|p| (p.t, p.accuracy)).collect();
            let loss = points.iter().filter(|p| &p.set == s).map(|p| (p.t, p.loss)).collect();
            [(format!("{s} accuracy"), acc), (format!("{s} loss"), loss)]
        })
        .collect();
    rmtrain_eval::line_chart(path, title, "t (0 = A, 1 = B)", "accuracy / loss", &series)?;
    Ok(())
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
    let ts: Vec<f64> = (0..a.steps).map(|i| a.t_min + (a.t_max - a.t_min) * i as f64 / (a.steps - 1) as f64).collect();
    let points = interpolation_curve(&a.a, &a.b, &ts, &sets, a.max_length, &device)?;
    std::fs::create_dir_all(&a.out).map_err(|e| anyhow::anyhow!("{}: {e}", a.out.display()))?;
    let json = serde_json::json!({"a": a.a, "b": a.b, "points": points, "barrier": barriers(&points)});
    rmtrain_core::write_json_atomic(&a.out.join("interpolation.json"), &json)?;
    plot_curve(&a.out.join("interpolation.png"), "loss and accuracy between two checkpoints", &points)?;
    println!("{}", serde_json::to_string_pretty(&json)?);
    Ok(())
}

/// Per set: the largest rise of the loss above the straight line between the curve's ends.
pub fn barriers(points: &[CurvePoint]) -> serde_json::Value {
    let mut out = serde_json::Map::new();
    let mut sets: Vec<&String> = points.iter().map(|p| &p.set).collect();
    sets.dedup();
    for s in sets {
        let curve: Vec<&CurvePoint> = points.iter().filter(|p| &p.set == s).collect();
        let (first, last) = (curve[0], curve[curve.len() - 1]);
        let span = (last.t - first.t).max(1e-12);
        let barrier = curve
            .iter()
            .map(|p| p.loss - (first.loss + (last.loss - first.loss) * (p.t - first.t) / span))
            .fold(f64::NEG_INFINITY, f64::max);
        out.insert(s.clone(), serde_json::json!({"loss_barrier": barrier}));
    }
    serde_json::Value::Object(out)
}
