//! The verbs `data`, `train`, `score` and `eval`: argument parsing and printing; the work is in
//! the library crates.

use crate::device::{parse_device, parse_devices};
use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use rmtrain_data::{read_pairs, read_score_records, Pair, ScoreInput, VaderOptions};
use rmtrain_eval::markdown_table;
use rmtrain_merge::Combine;
use rmtrain_models::ScoreOptions;
use rmtrain_pipeline::{evaluate_models, normalize_members, score_models, train_config_from_sets, Entry, EvalOptions};
use rmtrain_train::trainer::Trainable;
use rmtrain_train::TrainRequest;
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(Subcommand)]
pub enum DataVerb {
    /// VADER ICWSM-2014 human ratings -> preference pairs per domain (movie, tweets, nyt, amazon).
    ///
    /// Example: rmtrain data vader --raw assets/vader/hutto_ICWSM_2014 --out data/vader --seed 0
    Vader(VaderArgs),
}

#[derive(Args)]
pub struct VaderArgs {
    /// Folder with the *_GroundTruth.txt and *_anonDataRatings.txt files (scripts/fetch-assets.sh).
    #[arg(long, default_value = "assets/vader/hutto_ICWSM_2014")]
    pub raw: PathBuf,
    #[arg(long, default_value = "data/vader")]
    pub out: PathBuf,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Keep a pair when |mean_a − mean_b| ≥ this.
    #[arg(long, default_value_t = 0.5, value_parser = non_negative, allow_negative_numbers = true)]
    pub threshold: f64,
    #[arg(long, default_value_t = 8000, value_parser = at_least::<1>)]
    pub train_pairs: usize,
    #[arg(long, default_value_t = 1000, value_parser = at_least::<1>)]
    pub valid_pairs: usize,
    #[arg(long, default_value_t = 3000, value_parser = at_least::<1>)]
    pub test_pairs: usize,
}

impl VaderArgs {
    pub fn options(&self) -> VaderOptions {
        VaderOptions {
            raw_dir: self.raw.clone(),
            out_dir: self.out.clone(),
            seed: self.seed,
            threshold: self.threshold,
            train_pairs: self.train_pairs,
            valid_pairs: self.valid_pairs,
            test_pairs: self.test_pairs,
            ..VaderOptions::default()
        }
    }
}

pub fn data(v: DataVerb) -> Result<()> {
    match v {
        DataVerb::Vader(a) => {
            let summary = rmtrain_data::import_vader(&a.options())?;
            println!("{summary}");
            Ok(())
        }
    }
}

/// Parses `NAME=PATH`.
pub fn named_path(s: &str) -> Result<(String, PathBuf), String> {
    match s.split_once('=') {
        Some((n, p)) if !n.is_empty() && !p.is_empty() => Ok((n.to_string(), PathBuf::from(p))),
        _ => Err(format!("expected NAME=PATH, got {s:?}")),
    }
}

/// clap parser of a count that must be at least `MIN`, so a bad value is clap's one-line
/// "invalid value '0' for '--batch <BATCH>': must be at least 1" (clap's own range parser would
/// also print u64::MAX as the upper bound).
pub fn at_least<const MIN: usize>(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if n >= MIN => Ok(n),
        Ok(_) => Err(format!("must be at least {MIN}")),
        Err(e) => Err(e.to_string()),
    }
}

/// clap parser of a finite number (no NaN or infinity).
pub fn finite(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(x) if x.is_finite() => Ok(x),
        Ok(_) => Err("expected a finite number".into()),
        Err(e) => Err(e.to_string()),
    }
}

/// clap parser of a finite number ≥ 0.
pub fn non_negative(s: &str) -> Result<f64, String> {
    match finite(s)? {
        x if x >= 0.0 => Ok(x),
        _ => Err("expected a number ≥ 0".into()),
    }
}

#[derive(Args)]
#[command(after_help = "Examples:
  rmtrain train --model assets/all-MiniLM-L6-v2 --train data/vader/movie.mean.train.jsonl \\
      --eval movie=data/vader/movie.test.jsonl --out runs/movie --set lr=3e-5 --set max_train_pairs=3000
  rmtrain train ... --out runs/movie --resume      # continue from the newest checkpoint")]
pub struct TrainArgs {
    /// HF folder to start from: a backbone (BertModel) or a reward model.
    #[arg(long)]
    pub model: PathBuf,
    /// JSONL pairs (TRL standard, implicit-prompt or conversational).
    #[arg(long)]
    pub train: PathBuf,
    /// Eval set NAME=PATH (repeatable).
    #[arg(long = "eval", value_parser = named_path)]
    pub evals: Vec<(String, PathBuf)>,
    /// Run folder (metrics.jsonl, checkpoints/, model/).
    #[arg(long)]
    pub out: PathBuf,
    /// A [train] setting KEY=VALUE in TOML syntax (repeatable), e.g. lr=2e-5, epochs=2, dropout=0.05.
    #[arg(long = "set")]
    pub set: Vec<String>,
    /// Continue the run in --out from its newest checkpoint.
    #[arg(long)]
    pub resume: bool,
    /// cpu, tch, wgpu, cuda or cuda:N; a comma-separated list trains one model data-parallel over
    /// several devices (e.g. cuda:0,cuda:1 with --set replicas=2): the model lives on the first,
    /// replica k of each step runs on device k mod n.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Train only the head (pooler + classifier) on the frozen backbone: a linear probe.
    #[arg(long)]
    pub head_only: bool,
    #[arg(long)]
    pub no_progress: bool,
}

pub fn load_evals(evals: &[(String, PathBuf)]) -> Result<Vec<(String, Vec<Pair>)>> {
    evals.iter().map(|(n, p)| Ok((n.clone(), read_pairs(p)?))).collect()
}

pub fn train(a: TrainArgs) -> Result<()> {
    let config = train_config_from_sets(&a.set)?;
    let train_pairs = read_pairs(&a.train)?;
    let evals = load_evals(&a.evals)?;
    let mut devices = parse_devices(&a.device)?;
    let device = devices.remove(0);
    let recipe = serde_json::json!({
        "model": a.model, "train": a.train, "eval": a.evals.iter().map(|(n, p)| (n.clone(), p.display().to_string())).collect::<Vec<_>>(),
        "train_config": config,
    });
    let outcome = rmtrain_train::train(TrainRequest {
        init: a.model,
        train_data_sha256: Some(rmtrain_core::sha256_file(&a.train)?),
        train_pairs,
        evals,
        config,
        out: a.out,
        resume: a.resume,
        recipe,
        device,
        replica_devices: devices,
        progress: !a.no_progress,
        trainable: if a.head_only { Trainable::HeadOnly } else { Trainable::All },
    })
    .map_err(|e| e.in_file(&a.train))?;
    println!(
        "{}",
        serde_json::json!({"model": outcome.model_dir, "steps": outcome.steps, "wall_seconds": outcome.wall_seconds, "truncated_train_pairs": outcome.truncated_pairs, "final": outcome.final_metrics})
    );
    Ok(())
}

/// The model, or the members of an ensemble and how to combine them (`score` and `eval`).
#[derive(Args)]
pub struct EnsembleArgs {
    /// Reward model folder (repeat for an ensemble).
    #[arg(long = "model", required = true)]
    pub models: Vec<PathBuf>,
    /// How an ensemble combines its members' rewards.
    #[arg(long, default_value = "mean")]
    pub combine: Combine,
    /// Combine raw member rewards, without z-normalisation.
    #[arg(long)]
    pub no_normalize: bool,
}

#[derive(Args)]
#[command(after_help = "Input lines: {\"text\": ...} gets `reward`; a pair line (TRL standard, implicit-prompt or
conversational) gets `reward_chosen` and `reward_rejected`. Every input field is kept.
With several --model, members' rewards are z-normalised with the statistics in their rmtrain.json
and combined by --combine (mean, worst, uncertainty[:λ] = mean − λ·std); member rewards are kept
in `member_rewards` (or `member_rewards_chosen`/`_rejected`).
Examples:
  rmtrain score --model runs/movie/model --input texts.jsonl > scored.jsonl
  rmtrain score --model m0 --model m1 --model m2 --combine uncertainty:0.5 --input pairs.jsonl")]
pub struct ScoreArgs {
    #[command(flatten)]
    pub ensemble: EnsembleArgs,
    #[arg(long)]
    pub input: PathBuf,
    /// Truncation length (≥ 2: [CLS] and [SEP]); default: the one the model was trained with (its
    /// rmtrain.json), else 128.
    #[arg(long, value_parser = at_least::<2>)]
    pub max_length: Option<usize>,
    #[arg(long, default_value_t = 32, value_parser = at_least::<1>)]
    pub batch_size: usize,
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

pub fn score(a: ScoreArgs) -> Result<()> {
    let device = parse_device(&a.device)?;
    let records = read_score_records(&a.input)?;
    let mut texts: Vec<String> = Vec::new();
    for r in &records {
        match &r.input {
            ScoreInput::Text(t) => texts.push(t.clone()),
            ScoreInput::Pair(p) => {
                texts.push(p.chosen_text());
                texts.push(p.rejected_text());
            }
        }
    }
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let opts = ScoreOptions { batch_size: a.batch_size, ..ScoreOptions::default() };
    let e = &a.ensemble;
    let scores = score_models(&e.models, &refs, a.max_length, &device, &opts, &rmtrain_core::ProgressBar::hidden())?;
    if scores.truncated > 0 {
        eprintln!("rmtrain: info: {} of {} texts are longer than max_length tokens and were scored truncated (cut from the right)", scores.truncated, refs.len());
    }
    let dirs: Vec<&Path> = e.models.iter().map(PathBuf::as_path).collect();
    let raw: Vec<&[f64]> = scores.per_model.iter().map(Vec::as_slice).collect();
    // An ensemble combines (and reports) its members on the z-normalised scale.
    let members = if raw.len() > 1 && !e.no_normalize { normalize_members(&raw, &dirs)? } else { scores.per_model.clone() };
    let rewards = if members.len() == 1 { members[0].clone() } else { rmtrain_merge::combine(&members, e.combine) };
    print_scored(records, &rewards, &members)
}

/// Writes every record with its reward(s) added (and each member's, for an ensemble). Everything
/// is computed before the first line is written: an error leaves no partial output.
fn print_scored(records: Vec<rmtrain_data::ScoreRecord>, rewards: &[f64], members: &[Vec<f64>]) -> Result<()> {
    let mut out = String::new();
    let mut next = 0usize;
    let member_values = |i: usize| serde_json::json!(members.iter().map(|m| m[i]).collect::<Vec<_>>());
    for r in records {
        let mut fields = r.fields;
        match r.input {
            ScoreInput::Text(_) => {
                fields.insert("reward".into(), serde_json::json!(rewards[next]));
                if members.len() > 1 {
                    fields.insert("member_rewards".into(), member_values(next));
                }
                next += 1;
            }
            ScoreInput::Pair(_) => {
                fields.insert("reward_chosen".into(), serde_json::json!(rewards[next]));
                fields.insert("reward_rejected".into(), serde_json::json!(rewards[next + 1]));
                if members.len() > 1 {
                    fields.insert("member_rewards_chosen".into(), member_values(next));
                    fields.insert("member_rewards_rejected".into(), member_values(next + 1));
                }
                next += 2;
            }
        }
        out.push_str(&serde_json::Value::Object(fields).to_string());
        out.push('\n');
    }
    std::io::stdout().lock().write_all(out.as_bytes()).context("writing stdout")?;
    Ok(())
}

#[derive(Args)]
#[command(after_help = "Examples:
  rmtrain eval --model runs/movie/model --data movie=data/vader/movie.test.jsonl --data nyt=data/vader/nyt.test.jsonl
  rmtrain eval --model M --data test=pairs.jsonl --json report.json --markdown report.md
  rmtrain eval --model m0 --model m1 --combine worst --data movie=data/vader/movie.test.jsonl")]
pub struct EvalArgs {
    #[command(flatten)]
    pub ensemble: EnsembleArgs,
    /// Eval set NAME=PATH (repeatable).
    #[arg(long = "data", value_parser = named_path, required = true)]
    pub data: Vec<(String, PathBuf)>,
    /// Also write the results as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Also write the markdown table here.
    #[arg(long)]
    pub markdown: Option<PathBuf>,
    /// Truncation length (≥ 2: [CLS] and [SEP]); default: the one the model was trained with (its
    /// rmtrain.json), else 128.
    #[arg(long, value_parser = at_least::<2>)]
    pub max_length: Option<usize>,
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Seed of the bootstrap confidence intervals.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

pub fn eval(a: EvalArgs) -> Result<()> {
    let device = parse_device(&a.device)?;
    let sets = load_evals(&a.data)?;
    if sets.is_empty() {
        bail!("eval: no --data sets");
    }
    let e = &a.ensemble;
    let entry = if e.models.len() == 1 {
        Entry::Model { label: e.models[0].display().to_string(), model: 0 }
    } else {
        Entry::Ensemble { label: format!("ensemble-{} of {}", e.combine, e.models.len()), members: (0..e.models.len()).collect(), rule: e.combine, normalize: !e.no_normalize }
    };
    let evaluation = evaluate_models(&e.models, &[entry], &sets, &EvalOptions { max_length: a.max_length, device: &device, seed: a.seed, progress: false })?;
    if evaluation.truncated_texts > 0 {
        eprintln!("rmtrain: info: {} of {} distinct texts are longer than max_length tokens and were scored truncated (cut from the right)", evaluation.truncated_texts, evaluation.distinct_texts);
    }
    let rows = evaluation.eval_rows();
    let json = serde_json::to_value(&rows)?;
    let table = markdown_table(&rows);
    let mut json_bytes = serde_json::to_vec_pretty(&json)?;
    json_bytes.push(b'\n');
    // Both files are written only after everything succeeded (each atomically).
    for (path, bytes) in [(&a.json, json_bytes.as_slice()), (&a.markdown, table.as_bytes())] {
        if let Some(p) = path {
            rmtrain_core::write_atomic(p, bytes)?;
        }
    }
    println!("{}", serde_json::to_string_pretty(&json)?);
    println!("{table}");
    Ok(())
}
