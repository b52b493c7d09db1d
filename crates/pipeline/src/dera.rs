//! The DeRa recipe (`recipes/dera.toml`): DPO-align the reference LM on preference pairs (those
//! `recipes/rbon.toml` builds from its RBoN picks), then sample with DeRa's mixed logits
//! λ·h_aligned + (1 − λ)·h_ref over a list of λ in one decoding pass, and measure per λ the gold
//! and proxy reward of the samples and their Monte-Carlo KL to the reference. DeRa's claim (Liu et
//! al., ICML 2024): the λ model approximates the model aligned at KL strength β/λ; the check
//! trains DPO at β/λ for the λ values in `dpo.check_lambdas` and puts it beside them.

use crate::scoring::score_models;
use crate::settings::parse_toml_strict;
use crate::{config_error, Result};
use burn::tensor::Device;
use rmtrain_eval::metrics::bootstrap_ci;
use rmtrain_models::{CausalLm, GenRequest, Realign, Sampling, ScoreOptions};
use rmtrain_train::{encode_dpo_pairs, train_dpo, DpoConfig, DpoRequest};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeraRecipe {
    pub name: String,
    pub out: PathBuf,
    #[serde(default = "crate::rbon::default_device")]
    pub device: String,
    /// The reference LM (HF folder or `.gguf`): DPO's init and reference, DeRa's h_ref.
    pub reference: PathBuf,
    pub dpo: DpoSection,
    pub sample: SampleSection,
    pub judges: JudgesSection,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DpoSection {
    /// Preference pairs (TRL formats), e.g. runs/rbon/dpo_pairs.jsonl.
    pub pairs: PathBuf,
    #[serde(default = "crate::rbon::yes")]
    pub chat: bool,
    #[serde(default)]
    pub settings: DpoConfig,
    /// λ values whose matching DPO model (β/λ) is trained too and sampled beside DeRa's.
    #[serde(default)]
    pub check_lambdas: Vec<f64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SampleSection {
    /// The prompt, `{}` replaced by each word.
    pub prompt: String,
    pub words: Vec<String>,
    #[serde(default = "crate::rbon::yes")]
    pub chat: bool,
    pub n: usize,
    pub lambdas: Vec<f64>,
    #[serde(default = "crate::rbon::default_new_tokens")]
    pub max_new_tokens: usize,
    #[serde(default)]
    pub stop: Vec<String>,
    #[serde(default)]
    pub seed: u64,
    #[serde(default = "crate::rbon::default_batch")]
    pub batch_size: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JudgesSection {
    pub proxy: PathBuf,
    pub gold: PathBuf,
}

/// Whether a recipe file is a DeRa recipe (it has a `[sample]` table with `lambdas`).
pub fn is_dera_recipe(text: &str) -> bool {
    toml::from_str::<toml::Table>(text).is_ok_and(|t| t.get("sample").and_then(|s| s.get("lambdas")).is_some())
}

pub fn read_dera_recipe(path: &Path) -> Result<DeraRecipe> {
    let text = std::fs::read_to_string(path).map_err(|e| config_error(format!("{}: cannot read recipe: {e}", path.display())))?;
    let r: DeraRecipe = parse_toml_strict(&text, &path.display().to_string()).map_err(config_error)?;
    r.validate().map_err(|m| config_error(format!("{}: {m}", path.display())))?;
    Ok(r)
}

impl DeraRecipe {
    fn validate(&self) -> std::result::Result<(), String> {
        self.dpo.settings.validate().map_err(|m| format!("dpo.settings: {}", m.trim_start_matches("dpo.")))?;
        let s = &self.sample;
        if s.words.is_empty() || !s.prompt.contains("{}") {
            return Err("sample.prompt must contain {} and sample.words must name at least one word".into());
        }
        if s.n == 0 || s.batch_size == 0 || s.max_new_tokens == 0 || s.lambdas.is_empty() {
            return Err("sample.n, sample.batch_size, sample.max_new_tokens must be ≥ 1 and sample.lambdas non-empty".into());
        }
        if let Some(l) = s.lambdas.iter().chain(&self.dpo.check_lambdas).find(|l| !l.is_finite() || **l < 0.0) {
            return Err(format!("λ = {l}: must be a finite number ≥ 0"));
        }
        if let Some(l) = self.dpo.check_lambdas.iter().find(|l| **l == 0.0) {
            return Err(format!("dpo.check_lambdas: λ = {l} would need β/λ = ∞"));
        }
        Ok(())
    }

    /// Pure sampling (temperature 1, no filters): the samples are drawn from π_λ itself, so the
    /// mean of log π_λ − log π_ref over them estimates KL(π_λ ‖ π_ref).
    fn sampling(&self) -> Sampling {
        Sampling { max_new_tokens: self.sample.max_new_tokens, temperature: 1.0, top_k: 0, top_p: 1.0, min_p: 0.0, stop_strings: self.sample.stop.clone(), ignore_eos: false }
    }
}

/// Trains (or reuses) the DPO model of `cfg` into `dir`; returns its model folder.
fn dpo_model(r: &DeraRecipe, cfg: &DpoConfig, dir: &Path, device: &Device, progress: bool) -> Result<PathBuf> {
    let model = dir.join("model");
    let data_sha = rmtrain_core::sha256_file(&r.dpo.pairs)?;
    let init_sha = rmtrain_models::hf::weights_sha256(&r.reference)?;
    if let Ok(text) = std::fs::read_to_string(model.join("rmtrain.json"))
        && let Ok(m) = serde_json::from_str::<Value>(&text)
        && m["dpo_config"] == serde_json::to_value(cfg).expect("a config serialises")
        && m["train_data_sha256"].as_str() == Some(data_sha.as_str())
        && m["init_weights_sha256"].as_str() == Some(init_sha.as_str())
        && model.join("model.safetensors").is_file()
    {
        eprintln!("{}: DPO at β = {} already trained, reusing {}", r.name, cfg.beta, model.display());
        return Ok(model);
    }
    eprintln!("{}: DPO at β = {} on {}", r.name, cfg.beta, r.dpo.pairs.display());
    let pairs = rmtrain_data::read_pairs(&r.dpo.pairs)?;
    let lm = CausalLm::load(&r.reference, device)?;
    let examples = encode_dpo_pairs(&lm, &pairs, r.dpo.chat).map_err(|e| e.in_file(&r.dpo.pairs))?;
    drop(lm);
    train_dpo(DpoRequest {
        init: r.reference.clone(),
        examples,
        out: dir.to_path_buf(),
        config: cfg.clone(),
        device: device.clone(),
        resume: false,
        progress,
        train_data_sha256: Some(data_sha),
    })?;
    Ok(model)
}

/// One sampled response with what the report needs.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Sample {
    /// "DeRa λ = x" or "DPO β = y".
    arm: String,
    lambda: Option<f64>,
    beta: f64,
    prompt: usize,
    text: String,
    ref_logprob: f64,
    policy_logprob: f64,
}

/// An aligned model (DPO at `beta`) and the λ values it is decoded with: (Some(λ), λ) for a DeRa
/// arm, (None, 1) for the model alone.
struct Aligned {
    model: PathBuf,
    beta: f64,
    lambdas: Vec<(Option<f64>, f64)>,
}

/// Samples `sample.n` responses per prompt from each (aligned model, λ) arm, in one realigned
/// decoding per aligned model; seeds are shared across arms (common random numbers).
fn draw(r: &DeraRecipe, reference: &CausalLm, arms: &[Aligned], device: &Device, progress: bool) -> Result<(Vec<Sample>, f64, usize)> {
    let prompts: Vec<String> = r.sample.words.iter().map(|w| r.sample.prompt.replace("{}", w)).collect();
    let mut ids = Vec::with_capacity(prompts.len());
    for p in &prompts {
        ids.push(crate::rbon::prompt_ids(reference, p, r.sample.chat)?.0);
    }
    let mut samples = Vec::new();
    let (mut seconds, mut tokens) = (0.0, 0usize);
    for Aligned { model, beta, lambdas } in arms {
        let aligned = CausalLm::load(model, device)?;
        let (mut requests, mut lam, mut meta) = (Vec::new(), Vec::new(), Vec::new());
        for (i, p) in ids.iter().enumerate() {
            for &(label, l) in lambdas {
                for k in 0..r.sample.n {
                    requests.push(GenRequest { prompt: p.clone(), seed: rmtrain_core::mix_seed(r.sample.seed, i as u64, k as u64) });
                    lam.push(l);
                    meta.push((i, label));
                }
            }
        }
        let bar = rmtrain_core::progress_bar(progress, "dera", "tokens", (requests.len() * r.sample.max_new_tokens) as u64, 0);
        let started = Instant::now();
        let gens = reference.generate_realigned(&requests, &Realign { aligned: &aligned, lambdas: &lam }, &r.sampling(), r.sample.batch_size, &mut |n| bar.inc(n as u64))?;
        bar.finish_and_clear();
        seconds += started.elapsed().as_secs_f64();
        for ((i, label), g) in meta.into_iter().zip(gens) {
            tokens += g.ids.len();
            let arm = match label {
                Some(lambda) => format!("DeRa λ = {lambda}"),
                None => format!("DPO β = {beta}"),
            };
            samples.push(Sample { arm, lambda: label, beta: *beta, prompt: i, text: g.text.trim().to_string(), ref_logprob: g.ref_logprob(), policy_logprob: g.realigned_logprob().expect("realigned") });
        }
    }
    Ok((samples, seconds, tokens))
}

/// One arm's figures: means over prompts of the per-prompt means, with 95 % bootstrap intervals.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ArmRow {
    pub arm: String,
    pub lambda: Option<f64>,
    /// The KL strength it stands for: β/λ for DeRa, β for a DPO model.
    pub effective_beta: Option<f64>,
    pub gold: f64,
    pub gold_ci: (f64, f64),
    pub proxy: f64,
    pub kl: f64,
    pub kl_ci: (f64, f64),
    pub mean_tokens_of_text: f64,
}

pub struct DeraOutcome {
    pub rows: Vec<ArmRow>,
    pub report: PathBuf,
    pub wall_seconds: f64,
}

pub fn run_dera(r: &DeraRecipe, device: &Device, progress: bool) -> Result<DeraOutcome> {
    let started = Instant::now();
    for (what, p) in [("reference", &r.reference), ("dpo.pairs", &r.dpo.pairs), ("judges.proxy", &r.judges.proxy), ("judges.gold", &r.judges.gold)] {
        if !p.exists() {
            return Err(config_error(format!("{what}: {}: no such file or folder (recipes/rbon.toml makes the pairs and the judges; scripts/fetch-assets.sh the reference)", p.display())));
        }
    }
    std::fs::create_dir_all(&r.out).map_err(|e| config_error(format!("{}: {e}", r.out.display())))?;
    let beta = r.dpo.settings.beta;
    let aligned = dpo_model(r, &r.dpo.settings, &r.out.join("dpo"), device, progress)?;
    let mut arms = vec![Aligned { model: aligned, beta, lambdas: r.sample.lambdas.iter().map(|&l| (Some(l), l)).collect() }];
    for &l in &r.dpo.check_lambdas {
        let cfg = DpoConfig { beta: beta / l, ..r.dpo.settings.clone() };
        let m = dpo_model(r, &cfg, &r.out.join(format!("dpo-beta-{}", beta / l)), device, progress)?;
        arms.push(Aligned { model: m, beta: beta / l, lambdas: vec![(None, 1.0)] });
    }
    let dpo_seconds = started.elapsed().as_secs_f64();
    let reference = CausalLm::load(&r.reference, device)?;
    let (samples, gen_seconds, tokens) = draw(r, &reference, &arms, device, progress)?;
    drop(reference);
    let texts: Vec<&str> = samples.iter().map(|s| s.text.as_str()).collect();
    let bar = rmtrain_core::ProgressBar::hidden();
    let scores = score_models(&[r.judges.proxy.clone(), r.judges.gold.clone()], &texts, None, device, &ScoreOptions::default(), &bar)?;
    let (proxy, gold) = (&scores.per_model[0], &scores.per_model[1]);
    let mut lines = String::new();
    for (k, s) in samples.iter().enumerate() {
        let mut v = serde_json::to_value(s).expect("a sample serialises");
        v["proxy_reward"] = json!(proxy[k]);
        v["gold_reward"] = json!(gold[k]);
        lines.push_str(&v.to_string());
        lines.push('\n');
    }
    rmtrain_core::write_atomic(&r.out.join("samples.jsonl"), lines.as_bytes())?;

    // Per arm: per-prompt means, then the mean over prompts with a bootstrap interval.
    let mut order: Vec<String> = Vec::new();
    for s in &samples {
        if !order.contains(&s.arm) {
            order.push(s.arm.clone());
        }
    }
    let prompts = r.sample.words.len();
    let rows: Vec<ArmRow> = order
        .iter()
        .map(|arm| {
            let idx: Vec<usize> = (0..samples.len()).filter(|&k| &samples[k].arm == arm).collect();
            let per_prompt = |f: &dyn Fn(usize) -> f64| -> Vec<f64> {
                (0..prompts)
                    .map(|p| {
                        let ks: Vec<usize> = idx.iter().copied().filter(|&k| samples[k].prompt == p).collect();
                        ks.iter().map(|&k| f(k)).sum::<f64>() / ks.len().max(1) as f64
                    })
                    .collect()
            };
            let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
            let g = per_prompt(&|k| gold[k]);
            let kl = per_prompt(&|k| samples[k].policy_logprob - samples[k].ref_logprob);
            let first = &samples[idx[0]];
            ArmRow {
                arm: arm.clone(),
                lambda: first.lambda,
                effective_beta: match first.lambda {
                    Some(l) if l > 0.0 => Some(first.beta / l),
                    Some(_) => None,
                    None => Some(first.beta),
                },
                gold: mean(&g),
                gold_ci: bootstrap_ci(&g, mean, 1000, 0),
                proxy: mean(&per_prompt(&|k| proxy[k])),
                kl: mean(&kl),
                kl_ci: bootstrap_ci(&kl, mean, 1000, 0),
                mean_tokens_of_text: idx.iter().map(|&k| samples[k].text.split_whitespace().count() as f64).sum::<f64>() / idx.len().max(1) as f64,
            }
        })
        .collect();
    let dera: Vec<&ArmRow> = rows.iter().filter(|a| a.lambda.is_some()).collect();
    let checks: Vec<&ArmRow> = rows.iter().filter(|a| a.lambda.is_none()).collect();
    let mut series = vec![
        ("DeRa, gold reward".to_string(), dera.iter().map(|a| (a.kl, a.gold)).collect::<Vec<_>>()),
        ("DeRa, proxy reward".to_string(), dera.iter().map(|a| (a.kl, a.proxy)).collect()),
    ];
    if !checks.is_empty() {
        series.push(("DPO at β/λ, gold reward".into(), checks.iter().map(|a| (a.kl, a.gold)).collect()));
        series.push(("DPO at β/λ, proxy reward".into(), checks.iter().map(|a| (a.kl, a.proxy)).collect()));
    }
    rmtrain_eval::line_chart(&r.out.join("plots/reward_vs_kl.png"), &format!("DeRa sweep (DPO β = {beta}): reward vs KL to the reference, λ in order"), "KL(π ‖ π_ref), nats per response (Monte-Carlo)", "mean reward of the samples", &series)?;
    let table_rows: Vec<Vec<String>> = rows
        .iter()
        .map(|a| {
            vec![
                a.arm.clone(),
                a.effective_beta.map_or("∞ (reference)".into(), |b| format!("{b:.4}")),
                format!("{:.4} [{:.4}, {:.4}]", a.gold, a.gold_ci.0, a.gold_ci.1),
                format!("{:.4}", a.proxy),
                format!("{:.3} [{:.3}, {:.3}]", a.kl, a.kl_ci.0, a.kl_ci.1),
                format!("{:.1}", a.mean_tokens_of_text),
            ]
        })
        .collect();
    use rmtrain_eval::Align::{Left, Right};
    let table = rmtrain_eval::render_markdown_table(&["arm", "KL strength β/λ", "gold reward [95% CI]", "proxy reward", "KL to reference [95% CI]", "words per response"], &[Left, Right, Right, Right, Right, Right], &table_rows);
    let md = format!(
        "# {}\n\nReference `{}`; aligned by DPO (β = {beta}, {} loss) on `{}`. {} prompts × {} samples per arm, pure sampling (temperature 1, no filters), at most {} new tokens; one decoding pass per aligned model with every λ in the batch. Judges: proxy `{}`, gold `{}` (the response alone). Means over prompts of the per-prompt means; KL(π ‖ π_ref) = mean over samples of Σ_t log π(y_t) − log π_ref(y_t).\n\n{table}\nPlot: `plots/reward_vs_kl.png`. Samples with their rewards: `samples.jsonl`.\n\nTimings (s): DPO {dpo_seconds:.0}, sampling {gen_seconds:.0} ({tokens} tokens), total {:.0}.\n",
        r.name,
        r.reference.display(),
        serde_json::to_value(r.dpo.settings.loss).expect("serialises").as_str().unwrap_or(""),
        r.dpo.pairs.display(),
        prompts,
        r.sample.n,
        r.sample.max_new_tokens,
        r.judges.proxy.display(),
        r.judges.gold.display(),
        started.elapsed().as_secs_f64()
    );
    let report = r.out.join("report.md");
    rmtrain_core::write_atomic(&report, md.as_bytes())?;
    rmtrain_core::write_json_atomic(&r.out.join("report.json"), &json!({"recipe": r, "rows": rows, "timings": {"dpo": dpo_seconds, "sampling": gen_seconds, "tokens": tokens, "total": started.elapsed().as_secs_f64()}}))?;
    Ok(DeraOutcome { rows, report, wall_seconds: started.elapsed().as_secs_f64() })
}
