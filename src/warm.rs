//! The WARM recipe (Ramé et al. 2024, arXiv 2401.12187): M reward models fine-tuned from one
//! shared initialisation with diverse hyper-parameters (seed, data order, learning rate, dropout),
//! after one shared linear probe of the head (LP-FT), then averaged in weight space and compared
//! with every member and with prediction ensembles on in-domain and shifted eval sets.
//!
//! Run folder: `shared-init/` (the shared new head, linear-probed), `members/member-K/`, `warm/` (the average),
//! `report.md`, `report.json`, `plots/`. A member whose `model/` exists is not trained again, so
//! `--member K` runs can be spread over processes or machines and the recipe then only averages
//! and evaluates.

use crate::merge_verbs::{barriers, interpolation_curve, plot_curve};
use crate::recipe::{prepare_vader, Recipe};
use crate::verbs::{load_evals, member_stats, score_members};
use anyhow::{bail, Context, Result};
use rmtrain_data::{flip_labels, read_pairs, Pair};
use rmtrain_eval::PairMetrics;
use rmtrain_merge::{average_checkpoints, combine, AverageOptions, Combine};
use rmtrain_models::ScoreOptions;
use rmtrain_train::trainer::Trainable;
use rmtrain_train::{Schedule, TrainConfig, TrainRequest};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MembersSection {
    /// One seed per member (dropout, and data order unless `data_seeds` is given): M = its length.
    pub seeds: Vec<u64>,
    /// Data-order seeds per member; empty = each member's seed.
    #[serde(default)]
    pub data_seeds: Vec<u64>,
    /// Learning rate per member; empty = train.lr for all.
    #[serde(default)]
    pub lr: Vec<f64>,
    /// Dropout per member; empty = the model config's.
    #[serde(default)]
    pub dropout: Vec<f64>,
    /// Steps of the shared linear probe (head only, backbone frozen) every member starts from;
    /// 0 = no probe: members still share one new head, seeded by train.seed.
    #[serde(default)]
    pub shared_linear_probe_steps: u64,
    /// The probe's learning rate (constant): the head alone tolerates a large one.
    #[serde(default = "default_probe_lr")]
    pub linear_probe_lr: f64,
}

fn default_probe_lr() -> f64 {
    1e-3
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MergeSection {
    /// Member weights for the average (normalised); None = uniform (WARM's default).
    #[serde(default)]
    pub weights: Option<Vec<f64>>,
    /// Prediction ensembles to compare: "mean", "worst", "uncertainty[:λ]".
    #[serde(default = "default_ensembles")]
    pub ensembles: Vec<String>,
    /// Refuse to average members without a shared init.
    #[serde(default)]
    pub strict: bool,
    /// Mode-connectivity curve between two members.
    #[serde(default)]
    pub interpolate: Option<InterpolateSection>,
}

fn default_ensembles() -> Vec<String> {
    vec!["mean".into(), "worst".into(), "uncertainty".into()]
}

impl Default for MergeSection {
    fn default() -> Self {
        Self { weights: None, ensembles: default_ensembles(), strict: false, interpolate: None }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InterpolateSection {
    #[serde(default = "default_pair")]
    pub members: [usize; 2],
    #[serde(default = "default_steps")]
    pub steps: usize,
    /// Eval set to trace it on (default: the first).
    #[serde(default)]
    pub set: Option<String>,
    #[serde(default = "default_curve_pairs")]
    pub max_pairs: usize,
}

fn default_pair() -> [usize; 2] {
    [0, 1]
}
fn default_steps() -> usize {
    5
}
fn default_curve_pairs() -> usize {
    500
}

/// Results of one WARM run, for the report and the noise sweep.
#[derive(Debug, Clone, Serialize)]
pub struct WarmResults {
    pub sets: Vec<String>,
    /// (model label, per-set metrics in `sets` order).
    pub models: Vec<(String, Vec<PairMetrics>)>,
    pub flipped_pairs: usize,
    pub seconds: serde_json::Value,
}

impl WarmResults {
    fn accuracies(&self, label: &str) -> Option<Vec<f64>> {
        self.models.iter().find(|(l, _)| l == label).map(|(_, m)| m.iter().map(|x| x.accuracy).collect())
    }
    fn member_accuracies(&self) -> Vec<Vec<f64>> {
        self.models.iter().filter(|(l, _)| l.starts_with("member-")).map(|(_, m)| m.iter().map(|x| x.accuracy).collect()).collect()
    }
    /// Per set: the best member's accuracy (an oracle choice) and the members' mean.
    fn best_and_mean_member(&self) -> (Vec<f64>, Vec<f64>) {
        let members = self.member_accuracies();
        let n = self.sets.len();
        let best = (0..n).map(|s| members.iter().map(|m| m[s]).fold(f64::NEG_INFINITY, f64::max)).collect();
        let mean = (0..n).map(|s| members.iter().map(|m| m[s]).sum::<f64>() / members.len() as f64).collect();
        (best, mean)
    }
}

pub fn run_warm(recipe: &Recipe, only_member: Option<usize>, progress: bool) -> Result<()> {
    let members = recipe.members.as_ref().expect("run_warm is called for recipes with [members]");
    let m = members.seeds.len();
    for (name, list) in [("data_seeds", members.data_seeds.len()), ("lr", members.lr.len()), ("dropout", members.dropout.len())] {
        if list != 0 && list != m {
            bail!("members.{name} has {list} entries, members.seeds has {m}: give one per member or none");
        }
    }
    if m < 2 {
        bail!("members.seeds: WARM needs at least 2 members, got {m}");
    }
    if let Some(k) = only_member
        && k >= m
    {
        bail!("--member {k}: the recipe has members 0..{}", m - 1);
    }
    validate(recipe)?;
    if let Some(v) = &recipe.data.vader {
        prepare_vader(v)?;
    }
    let sweep = &recipe.data.noise_sweep;
    if sweep.is_empty() {
        let results = run_one(recipe, &recipe.out, recipe.data.flip_fraction, only_member, progress)?;
        if let Some(r) = results {
            write_report(recipe, &recipe.out, &r)?;
        }
        return Ok(());
    }
    // Label-noise sweep: the whole WARM run per flip fraction, then accuracy against noise.
    let mut all = Vec::new();
    for &k in sweep {
        let out = recipe.out.join(format!("noise-{:.3}", k));
        eprintln!("warm: noise level {:.0}% of train labels flipped -> {}", k * 100.0, out.display());
        if let Some(r) = run_one(recipe, &out, k, only_member, progress)? {
            write_report(recipe, &out, &r)?;
            all.push((k, r));
        }
    }
    if !all.is_empty() {
        write_noise_report(recipe, &all)?;
    }
    Ok(())
}

/// Everything the run would otherwise find wrong only after training its members.
fn validate(recipe: &Recipe) -> Result<()> {
    let members = recipe.members.as_ref().expect("members present");
    if recipe.data.eval.is_empty() {
        bail!("data.eval: a WARM recipe needs at least one eval set (the first is the in-domain one)");
    }
    for k in 0..members.seeds.len() {
        member_config(recipe, k).validate().map_err(|m| anyhow::anyhow!("members (member {k}): {m}"))?;
    }
    if !(members.linear_probe_lr > 0.0 && members.linear_probe_lr.is_finite()) {
        bail!("members.linear_probe_lr must be positive, got {}", members.linear_probe_lr);
    }
    let merge = recipe.merge.clone().unwrap_or_default();
    for e in &merge.ensembles {
        e.parse::<Combine>().map_err(|m| anyhow::anyhow!("merge.ensembles: {m}"))?;
    }
    if let Some(w) = &merge.weights
        && w.len() != members.seeds.len()
    {
        bail!("merge.weights has {} values for {} members", w.len(), members.seeds.len());
    }
    if let Some(c) = &merge.interpolate {
        if c.members.iter().any(|&k| k >= members.seeds.len()) || c.members[0] == c.members[1] {
            bail!("merge.interpolate.members: {:?} must be two different members of 0..{}", c.members, members.seeds.len() - 1);
        }
        if let Some(set) = &c.set
            && !recipe.data.eval.contains_key(set)
        {
            bail!("merge.interpolate.set: no eval set {set:?} in data.eval");
        }
    }
    Ok(())
}

fn member_config(recipe: &Recipe, k: usize) -> TrainConfig {
    let s = recipe.members.as_ref().expect("members present");
    let mut cfg = recipe.train.clone();
    cfg.seed = s.seeds[k];
    cfg.data_seed = s.data_seeds.get(k).copied().or(Some(s.seeds[k]));
    if let Some(lr) = s.lr.get(k) {
        cfg.lr = *lr;
    }
    if let Some(p) = s.dropout.get(k) {
        cfg.dropout = Some(*p);
    }
    cfg
}

/// Whether `model` is a finished run of exactly `cfg` on this data from this init (reusable).
fn finished_run_matches(model: &Path, cfg: &TrainConfig, data_sha: &str, init: &Path) -> Result<bool> {
    let Ok(m) = rmtrain_core::Manifest::read(model) else { return Ok(false) };
    if !model.join("model.safetensors").is_file() {
        return Ok(false);
    }
    let init_sha = rmtrain_core::sha256_file(&init.join("model.safetensors")).ok();
    let same = m.train_config == serde_json::to_value(cfg)? && m.train_data_sha256.as_deref() == Some(data_sha) && m.init_weights_sha256 == init_sha;
    if !same {
        eprintln!("warm: {} was trained with other settings, data or init: training it again", model.display());
    }
    Ok(same)
}

/// One WARM run into `out`. Returns None when only one member was asked for.
fn run_one(recipe: &Recipe, out: &Path, flip_fraction: f64, only_member: Option<usize>, progress: bool) -> Result<Option<WarmResults>> {
    let members = recipe.members.as_ref().expect("members present");
    let mut timings = serde_json::Map::new();
    let started = Instant::now();
    let mut train_pairs = read_pairs(&recipe.data.train)?;
    if let Some(n) = recipe.train.max_train_pairs {
        train_pairs.truncate(n);
    }
    let flipped = flip_labels(&mut train_pairs, flip_fraction, recipe.data.flip_seed)?;
    let data_sha = format!(
        "{}+flip{}@{}",
        rmtrain_core::sha256_file(&recipe.data.train)?,
        flip_fraction,
        recipe.data.flip_seed
    );
    let device = crate::device::parse_device(&recipe.device)?;
    let recipe_json = serde_json::to_value(recipe)?;
    let base = |config: TrainConfig, init: PathBuf, run: PathBuf, trainable: Trainable| TrainRequest {
        init,
        train_pairs: train_pairs.clone(),
        train_data_sha256: Some(data_sha.clone()),
        evals: Vec::new(),
        config,
        out: run,
        resume: false,
        recipe: recipe_json.clone(),
        device: device.clone(),
        progress,
        trainable,
    };

    // 1. The shared init every member starts from: the backbone with one seeded new head,
    //    linear-probed on the frozen backbone for `shared_linear_probe_steps` (LP-FT; 0 = none).
    let init_run = out.join("shared-init");
    let init = init_run.join("model");
    let probe_cfg = TrainConfig {
        lr: members.linear_probe_lr,
        schedule: Schedule::Constant,
        warmup_ratio: 0.0,
        warmup_steps: Some(0),
        max_steps: Some(members.shared_linear_probe_steps),
        save_every: 0,
        keep_checkpoints: 1,
        ..recipe.train.clone()
    };
    if !finished_run_matches(&init, &probe_cfg, &data_sha, &recipe.model.backbone)? {
        eprintln!("warm: shared init: new head (seed {}), linear probe {} steps", probe_cfg.seed, members.shared_linear_probe_steps);
        let _ = std::fs::remove_dir_all(&init_run); // an interrupted probe restarts from scratch
        rmtrain_train::train(base(probe_cfg, recipe.model.backbone.clone(), init_run.clone(), Trainable::HeadOnly))?;
    }
    timings.insert("linear_probe".into(), started.elapsed().as_secs_f64().into());

    // 2. Members, one after another (or only `only_member`).
    let member_dir = |k: usize| out.join("members").join(format!("member-{k}"));
    for k in 0..members.seeds.len() {
        if only_member.is_some_and(|o| o != k) {
            continue;
        }
        let cfg = member_config(recipe, k);
        if finished_run_matches(&member_dir(k).join("model"), &cfg, &data_sha, &init)? {
            eprintln!("warm: member {k} already trained, reusing {}", member_dir(k).join("model").display());
            continue;
        }
        eprintln!("warm: member {k}: seed {}, data seed {:?}, lr {}, dropout {:?}", cfg.seed, cfg.data_seed, cfg.lr, cfg.dropout);
        let t = Instant::now();
        let resume = rmtrain_train::checkpoint::list_checkpoints(&member_dir(k)).pop().is_some();
        rmtrain_train::train(TrainRequest { resume, ..base(cfg, init.clone(), member_dir(k), Trainable::All) })?;
        timings.insert(format!("member_{k}"), t.elapsed().as_secs_f64().into());
    }
    if only_member.is_some() {
        return Ok(None);
    }

    // 3. WARM: the weight average of the members.
    let t = Instant::now();
    let member_models: Vec<PathBuf> = (0..members.seeds.len()).map(|k| member_dir(k).join("model")).collect();
    let merge = recipe.merge.clone().unwrap_or_default();
    let warm_dir = out.join("warm");
    let avg = average_checkpoints(&member_models, &warm_dir, &AverageOptions { weights: merge.weights.clone(), strict: merge.strict })?;
    for w in &avg.warnings {
        eprintln!("rmtrain: warning: {w}");
    }
    timings.insert("average".into(), t.elapsed().as_secs_f64().into());

    // 4. Evaluation: each distinct eval text scored once per model.
    let t = Instant::now();
    let eval_paths = recipe.eval_paths();
    let sets = load_evals(&eval_paths)?;
    let set_refs: Vec<&[Pair]> = sets.iter().map(|(_, p)| p.as_slice()).collect();
    let (texts, slots) = rmtrain_data::distinct_texts(&set_refs);
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let opts = ScoreOptions::default();
    let max_len = Some(recipe.train.max_length);
    eprintln!("warm: scoring {} distinct eval texts with {} members, WARM and the shared init", refs.len(), member_models.len());
    let bar = stage_bar(progress, "score", member_models.len() as u64 + 2);
    let mut raw_members = Vec::new();
    for m in &member_models {
        raw_members.push(score_members(std::slice::from_ref(m), &refs, max_len, &device, &opts, false)?.remove(0));
        bar.inc(1);
    }
    let warm_scores = score_members(&[warm_dir.clone()], &refs, max_len, &device, &opts, false)?.remove(0);
    bar.inc(1);
    let init_scores = score_members(&[init.clone()], &refs, max_len, &device, &opts, false)?.remove(0);
    bar.finish_and_clear();
    // Ensembles z-normalise each member with the reward statistics in its manifest.
    let z_members: Vec<Vec<f64>> = member_models
        .iter()
        .zip(&raw_members)
        .map(|(dir, raw)| {
            let (mean, std) = member_stats(dir)?;
            Ok(rmtrain_merge::z_normalize(raw, mean, std))
        })
        .collect::<Result<_>>()?;
    let metrics_of = |rewards: &[f64]| -> Vec<PairMetrics> {
        sets.iter()
            .zip(&slots)
            .map(|((_, pairs), s)| {
                let rc: Vec<f64> = s.iter().map(|&(c, _)| rewards[c]).collect();
                let rr: Vec<f64> = s.iter().map(|&(_, r)| rewards[r]).collect();
                let gold: Option<Vec<f64>> = pairs.iter().map(|p| p.gold_margin).collect();
                rmtrain_eval::evaluate_pairs(&rc, &rr, gold.as_deref(), recipe.train.seed)
            })
            .collect()
    };
    let mut models: Vec<(String, Vec<PairMetrics>)> = Vec::new();
    models.push((if members.shared_linear_probe_steps > 0 { "shared init (LP)".into() } else { "shared init (new head)".into() }, metrics_of(&init_scores)));
    for (k, r) in raw_members.iter().enumerate() {
        models.push((format!("member-{k}"), metrics_of(r)));
    }
    models.push(("WARM".into(), metrics_of(&warm_scores)));
    let z = z_members;
    for e in &merge.ensembles {
        let rule: Combine = e.parse().map_err(|m: String| anyhow::anyhow!("merge.ensembles: {m}"))?;
        models.push((format!("ENS-{rule}"), metrics_of(&combine(&z, rule))));
    }
    timings.insert("evaluation".into(), t.elapsed().as_secs_f64().into());

    // 5. Mode connectivity between two members, and the plots.
    let plots = out.join("plots");
    std::fs::create_dir_all(&plots).with_context(|| format!("{}: cannot create", plots.display()))?;
    if let Some(c) = &merge.interpolate {
        let t = Instant::now();
        let [a, b] = c.members;
        if a >= member_models.len() || b >= member_models.len() {
            bail!("merge.interpolate.members: {a}, {b} out of 0..{}", member_models.len() - 1);
        }
        let set_name = c.set.clone().unwrap_or_else(|| sets[0].0.clone());
        let set: Vec<Pair> = sets
            .iter()
            .find(|(n, _)| *n == set_name)
            .with_context(|| format!("merge.interpolate.set: no eval set {set_name:?}"))?
            .1
            .iter()
            .take(c.max_pairs)
            .cloned()
            .collect();
        let ts: Vec<f64> = (0..c.steps.max(2)).map(|i| i as f64 / (c.steps.max(2) - 1) as f64).collect();
        let curve = interpolation_curve(&member_models[a], &member_models[b], &ts, &[(set_name.clone(), set)], max_len, &device)?;
        plot_curve(&plots.join("interpolation.png"), &format!("member-{a} to member-{b} on {set_name}"), &curve)?;
        rmtrain_core::write_json_atomic(&out.join("interpolation.json"), &serde_json::json!({"members": [a, b], "points": curve, "barrier": barriers(&curve)}))?;
        timings.insert("interpolation".into(), t.elapsed().as_secs_f64().into());
    }
    timings.insert("total".into(), started.elapsed().as_secs_f64().into());
    let results = WarmResults {
        sets: sets.iter().map(|(n, _)| n.clone()).collect(),
        models,
        flipped_pairs: flipped,
        seconds: serde_json::Value::Object(timings),
    };
    // Reliability of WARM on the first (in-domain) set: confidence max(p, 1 − p) of p = σ(r_c − r_r)
    // against how often the preferred side is the gold one.
    let (rc, rr): (Vec<f64>, Vec<f64>) = slots[0].iter().map(|&(c, r)| (warm_scores[c], warm_scores[r])).unzip();
    let d: Vec<f64> = rc.iter().zip(&rr).map(|(c, r)| c - r).collect();
    rmtrain_eval::reliability_diagram(&plots.join("reliability_warm.png"), &format!("WARM on {}, top-label", results.sets[0]), &rmtrain_eval::ece_toplabel(&d).bins)?;
    Ok(Some(results))
}

fn stage_bar(show: bool, stage: &str, total: u64) -> indicatif::ProgressBar {
    if !show {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(total);
    bar.set_style(indicatif::ProgressStyle::with_template("{prefix} [{elapsed_precise}] {wide_bar} {pos}/{len} models").expect("a valid progress template"));
    bar.set_prefix(stage.to_string());
    bar
}

fn cell(m: &PairMetrics) -> String {
    format!("{:.3} [{:.3}, {:.3}]", m.accuracy, m.accuracy_ci95.0, m.accuracy_ci95.1)
}

fn write_report(recipe: &Recipe, out: &Path, r: &WarmResults) -> Result<()> {
    let (best, mean) = r.best_and_mean_member();
    let mut md = format!("# {}\n\n", recipe.name);
    md.push_str(&format!(
        "{} members trained on `{}` ({} pairs, {} labels flipped on purpose); evaluated with gold labels. Accuracy with a 95% bootstrap interval; the first set is in-domain.\n\n",
        r.member_accuracies().len(),
        recipe.data.train.display(),
        recipe.train.max_train_pairs.map_or("all".to_string(), |n| n.to_string()),
        r.flipped_pairs
    ));
    md.push_str(&format!("| model | {} |\n|---|{}\n", r.sets.join(" | "), "---|".repeat(r.sets.len())));
    md.push_str(&format!("| best member (oracle, per set) | {} |\n", best.iter().map(|a| format!("{a:.3}")).collect::<Vec<_>>().join(" | ")));
    md.push_str(&format!("| mean member | {} |\n", mean.iter().map(|a| format!("{a:.3}")).collect::<Vec<_>>().join(" | ")));
    for (label, ms) in &r.models {
        md.push_str(&format!("| {label} | {} |\n", ms.iter().map(cell).collect::<Vec<_>>().join(" | ")));
    }
    md.push_str("\n## ECE / Spearman(reward gap, gold margin)\n\nEnsembles combine z-normalised member rewards, so their ECE is on that scale, not comparable one to one with the members'.\n\n");
    md.push_str(&format!("| model | {} |\n|---|{}\n", r.sets.join(" | "), "---|".repeat(r.sets.len())));
    for (label, ms) in &r.models {
        let cells: Vec<String> = ms
            .iter()
            .map(|m| format!("{:.3} / {}", m.ece, m.spearman_gold.map_or("–".to_string(), |s| format!("{s:.3}"))))
            .collect();
        md.push_str(&format!("| {label} | {} |\n", cells.join(" | ")));
    }
    md.push_str(&format!("\nTimings (s): {}\n\nPlots: `plots/accuracy.png`, `plots/reliability_warm.png`{}.\n", r.seconds, if out.join("plots/interpolation.png").is_file() { ", `plots/interpolation.png`" } else { "" }));

    let bars = |label: &str, values: &[f64]| rmtrain_eval::BarSeries { label: label.into(), values: values.to_vec(), intervals: None };
    let mut series = vec![bars("best member", &best), bars("mean member", &mean)];
    for (label, ms) in r.models.iter().filter(|(l, _)| l == "WARM" || l.starts_with("ENS-")) {
        let (values, intervals) = ms.iter().map(|m| (m.accuracy, m.accuracy_ci95)).unzip();
        series.push(rmtrain_eval::BarSeries { label: label.clone(), values, intervals: Some(intervals) });
    }
    let lo = series.iter().flat_map(|s| s.values.iter().copied()).fold(1.0, f64::min);
    rmtrain_eval::bar_chart_grouped(&out.join("plots/accuracy.png"), &format!("{}: gold-label accuracy", recipe.name), &r.sets, &series, Some(((lo - 0.05).max(0.0), 1.0)))?;
    let json = serde_json::json!({
        "recipe": recipe, "sets": r.sets, "flipped_pairs": r.flipped_pairs, "seconds": r.seconds,
        "best_member": best, "mean_member": mean,
        "models": r.models.iter().map(|(l, ms)| serde_json::json!({"model": l, "metrics": r.sets.iter().zip(ms).map(|(s, m)| (s.clone(), serde_json::to_value(m).expect("metrics serialize"))).collect::<serde_json::Map<_, _>>()})).collect::<Vec<_>>(),
    });
    rmtrain_core::write_atomic(&out.join("report.md"), md.as_bytes())?;
    rmtrain_core::write_json_atomic(&out.join("report.json"), &json)?;
    println!("{md}");
    Ok(())
}

/// Accuracy (mean over eval sets) against the share of flipped train labels (WARM paper, Fig. 5).
fn write_noise_report(recipe: &Recipe, all: &[(f64, WarmResults)]) -> Result<()> {
    let mut lines: Vec<(String, Vec<(f64, f64)>)> = Vec::new();
    let mut push = |label: &str, k: f64, acc: f64| match lines.iter_mut().find(|(l, _)| l == label) {
        Some((_, pts)) => pts.push((k * 100.0, acc)),
        None => lines.push((label.to_string(), vec![(k * 100.0, acc)])),
    };
    let avg = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let mut md = format!("# {}: accuracy against label noise\n\nMean gold-label accuracy over the eval sets ({}).\n\n| flipped | best member | mean member | WARM | ENS |\n|---|---|---|---|---|\n", recipe.name, all[0].1.sets.join(", "));
    for (k, r) in all {
        let (best, mean) = r.best_and_mean_member();
        push("best member", *k, avg(&best));
        push("mean member", *k, avg(&mean));
        let warm = avg(&r.accuracies("WARM").expect("WARM row"));
        push("WARM", *k, warm);
        let ens: Vec<String> = r
            .models
            .iter()
            .filter(|(l, _)| l.starts_with("ENS-"))
            .map(|(l, ms)| {
                let a = avg(&ms.iter().map(|m| m.accuracy).collect::<Vec<_>>());
                push(l, *k, a);
                format!("{l} {a:.3}")
            })
            .collect();
        md.push_str(&format!("| {:.0}% | {:.3} | {:.3} | {:.3} | {} |\n", k * 100.0, avg(&best), avg(&mean), warm, ens.join(", ")));
    }
    std::fs::create_dir_all(recipe.out.join("plots")).with_context(|| format!("{}: cannot create", recipe.out.join("plots").display()))?;
    rmtrain_eval::line_chart(&recipe.out.join("plots/accuracy_vs_noise.png"), "accuracy vs flipped labels", "flipped train labels (%)", "mean accuracy", &lines)?;
    rmtrain_core::write_atomic(&recipe.out.join("report.md"), md.as_bytes())?;
    println!("{md}");
    Ok(())
}
