//! The RBoN recipe (`recipes/rbon.toml`): a policy LM writes N candidates per prompt, a proxy
//! reward model (trained here, e.g. on noisy single-rater labels) picks among them by BoN,
//! RBoN-KL and RBoN-WD, and a gold reward model (trained here on other data, e.g. all four VADER
//! domains' mean labels; evaluation only) scores the picks, across β and N. Also writes DPO
//! pairs from the picks for the DeRa recipe. Each stage reuses its output when the settings are
//! unchanged: the reward models through [`crate::runs::reuse_or_train`], the candidates by their
//! settings file.

use crate::bon::{run_bon, BonOutcome, BonRequest, EmbeddingSource, PairsSpec, RewardSource, RmInput};
use crate::recipe::prepare_vader;
use crate::runs::reuse_or_train;
use crate::settings::parse_toml_strict;
use crate::train_set::prepare_train_set;
use crate::{config_error, Result};
use burn::tensor::Device;
use rmtrain_data::VaderOptions;
use rmtrain_eval::bon::{Rule, Sweep};
use rmtrain_merge::Combine;
use rmtrain_models::{CausalLm, GenRequest, Sampling};
use rmtrain_train::trainer::Trainable;
use rmtrain_train::{TrainConfig, TrainRequest};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RbonRecipe {
    pub name: String,
    pub out: PathBuf,
    #[serde(default = "default_device")]
    pub device: String,
    /// VADER pair files to build first (as a reward-model recipe's `[data.vader]`).
    #[serde(default)]
    pub vader: Option<VaderOptions>,
    pub policy: PolicySection,
    pub proxy: RmSection,
    pub gold: RmSection,
    pub bon: BonSection,
}

pub(crate) fn default_device() -> String {
    "cpu".into()
}

/// Who writes the candidates, and how.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PolicySection {
    /// A causal LM: HF folder or `.gguf`.
    pub model: PathBuf,
    /// The prompt, with `{}` replaced by each of `words` (one prompt per word).
    pub prompt: String,
    pub words: Vec<String>,
    /// Through the model's chat template, as one user message.
    #[serde(default = "yes")]
    pub chat: bool,
    /// Candidates per prompt (the largest N of the sweep).
    pub n: usize,
    #[serde(default = "one")]
    pub temperature: f64,
    #[serde(default = "one")]
    pub top_p: f64,
    #[serde(default)]
    pub top_k: usize,
    #[serde(default = "default_new_tokens")]
    pub max_new_tokens: usize,
    #[serde(default)]
    pub stop: Vec<String>,
    #[serde(default)]
    pub seed: u64,
    #[serde(default = "default_batch")]
    pub batch_size: usize,
}

pub(crate) fn yes() -> bool {
    true
}
fn one() -> f64 {
    1.0
}
pub(crate) fn default_new_tokens() -> usize {
    48
}
pub(crate) fn default_batch() -> usize {
    16
}

/// A prompt's ids: through the chat template as one user message (`chat`), else as plain text
/// with the tokenizer's special tokens. Returns the templated text too.
pub(crate) fn prompt_ids(lm: &CausalLm, prompt: &str, chat: bool) -> Result<(Vec<u32>, Option<String>)> {
    if chat {
        let t = lm.apply_chat_template(&json!([{"role": "user", "content": prompt}]))?;
        Ok((lm.encode_chat(&t)?, Some(t)))
    } else {
        Ok((lm.encode_prompt(prompt)?, None))
    }
}

/// A reward model this recipe trains: from `backbone` on the `train` files (interleaved line by
/// line, so `train.max_train_pairs` takes from each alike), evaluated on `eval`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RmSection {
    pub backbone: PathBuf,
    pub train: Vec<PathBuf>,
    #[serde(default)]
    pub eval: toml::Table,
    #[serde(default, rename = "settings")]
    pub config: TrainConfig,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BonSection {
    /// Subset sizes N (each ≤ policy.n).
    pub n: Vec<usize>,
    pub beta_kl: Vec<f64>,
    pub beta_wd: Vec<f64>,
    #[serde(default = "default_draws")]
    pub draws: usize,
    #[serde(default)]
    pub seed: u64,
    /// Sentence encoder of RBoN-WD.
    pub embedder: PathBuf,
    /// DPO pairs (chosen = this rule's pick at `pairs_beta` among all N, rejected = the worst).
    #[serde(default = "default_pair_rule")]
    pub pairs_rule: Rule,
    #[serde(default = "default_pair_beta")]
    pub pairs_beta: f64,
}

fn default_draws() -> usize {
    4
}
fn default_pair_rule() -> Rule {
    Rule::Wd
}
fn default_pair_beta() -> f64 {
    1.0
}

/// Whether a recipe file is an RBoN recipe (it has a `[bon]` table).
pub fn is_rbon_recipe(text: &str) -> bool {
    toml::from_str::<toml::Table>(text).is_ok_and(|t| t.contains_key("bon"))
}

pub fn read_rbon_recipe(path: &Path) -> Result<RbonRecipe> {
    let text = std::fs::read_to_string(path).map_err(|e| config_error(format!("{}: cannot read recipe: {e}", path.display())))?;
    let r: RbonRecipe = parse_toml_strict(&text, &path.display().to_string()).map_err(config_error)?;
    r.validate().map_err(|m| config_error(format!("{}: {m}", path.display())))?;
    Ok(r)
}

impl RbonRecipe {
    fn validate(&self) -> std::result::Result<(), String> {
        let p = &self.policy;
        if p.words.is_empty() || !p.prompt.contains("{}") {
            return Err("policy.prompt must contain {} and policy.words must name at least one word".into());
        }
        if p.n == 0 || p.batch_size == 0 || p.max_new_tokens == 0 {
            return Err("policy.n, policy.batch_size and policy.max_new_tokens must be ≥ 1".into());
        }
        if let Some(&n) = self.bon.n.iter().find(|&&n| n == 0 || n > p.n) {
            return Err(format!("bon.n: {n} must be in 1..={} (policy.n)", p.n));
        }
        if self.bon.n.is_empty() {
            return Err("bon.n: give at least one N".into());
        }
        for (what, b) in self.bon.beta_kl.iter().map(|b| ("beta_kl", b)).chain(self.bon.beta_wd.iter().map(|b| ("beta_wd", b))) {
            if !b.is_finite() {
                return Err(format!("bon.{what}: {b} is not a finite number"));
            }
        }
        for (who, rm) in [("proxy", &self.proxy), ("gold", &self.gold)] {
            if rm.train.is_empty() {
                return Err(format!("{who}.train: give at least one pair file"));
            }
            rm.config.validate().map_err(|m| format!("{who}.settings: {m}"))?;
        }
        self.sampling().validate().map_err(|m| format!("policy.{m}"))
    }

    fn sampling(&self) -> Sampling {
        let p = &self.policy;
        Sampling { max_new_tokens: p.max_new_tokens, temperature: p.temperature, top_k: p.top_k, top_p: p.top_p, min_p: 0.0, stop_strings: p.stop.clone(), ignore_eos: false }
    }

    fn prompts(&self) -> Vec<String> {
        self.policy.words.iter().map(|w| self.policy.prompt.replace("{}", w)).collect()
    }
}

/// One line per file in turn (then the longer files' rest), so the first K pairs draw from every
/// file alike.
fn interleave(files: &[PathBuf]) -> Result<String> {
    let mut lines: Vec<Vec<String>> = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(f).map_err(|e| config_error(format!("{}: {e}", f.display())))?;
        lines.push(text.lines().filter(|l| !l.trim().is_empty()).map(str::to_string).collect());
    }
    let longest = lines.iter().map(Vec::len).max().unwrap_or(0);
    let mut out = String::new();
    for k in 0..longest {
        for file in &lines {
            if let Some(l) = file.get(k) {
                out.push_str(l);
                out.push('\n');
            }
        }
    }
    Ok(out)
}

/// Trains (or reuses) one reward model of the recipe into `dir`; returns its model folder and
/// its final metrics per eval set.
fn reward_model(who: &str, rm: &RmSection, dir: &Path, device: &Device, progress: bool) -> Result<(PathBuf, Value)> {
    std::fs::create_dir_all(dir).map_err(|e| config_error(format!("{}: {e}", dir.display())))?;
    let train_file = if rm.train.len() == 1 {
        rm.train[0].clone()
    } else {
        let f = dir.join("train.jsonl");
        rmtrain_core::write_atomic(&f, interleave(&rm.train)?.as_bytes())?;
        f
    };
    let set = prepare_train_set(&train_file, rm.config.max_train_pairs, 0.0, 0)?;
    let evals = rm
        .eval
        .iter()
        .map(|(name, v)| {
            let p = PathBuf::from(v.as_str().ok_or_else(|| config_error(format!("{who}.eval.{name}: expected a path")))?);
            Ok((name.clone(), rmtrain_data::read_pairs(&p)?))
        })
        .collect::<Result<Vec<_>>>()?;
    let req = TrainRequest {
        init: rm.backbone.clone(),
        train_data_sha256: Some(set.data_sha256),
        train_pairs: set.pairs,
        evals,
        config: rm.config.clone(),
        out: dir.to_path_buf(),
        resume: false,
        recipe: serde_json::to_value(rm).expect("a section serialises"),
        device: device.clone(),
        replica_devices: Vec::new(),
        progress,
        trainable: Trainable::All,
    };
    reuse_or_train(req, who, who, "", &train_file)?;
    let model = dir.join("model");
    let metrics = rmtrain_core::Manifest::read(&model).map(|m| m.final_metrics).unwrap_or(Value::Null);
    Ok((model, metrics))
}

/// What generating the candidates took.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct GenerationStats {
    pub prompts: usize,
    pub n: usize,
    pub tokens: usize,
    pub seconds: f64,
    pub reused: bool,
}

/// `policy.n` samples for each prompt into `path` (the `rmtrain generate` line format), reused
/// when `path` holds the candidates of exactly these settings.
fn candidates(r: &RbonRecipe, path: &Path, device: &Device, progress: bool) -> Result<GenerationStats> {
    let settings_path = path.with_extension("settings.json");
    let wanted = json!({"policy": r.policy, "policy_sha256": rmtrain_models::hf::weights_sha256(&r.policy.model)?});
    if path.is_file()
        && let Ok(text) = std::fs::read_to_string(&settings_path)
        && let Ok(old) = serde_json::from_str::<Value>(&text)
        && old.get("settings") == Some(&wanted)
    {
        eprintln!("{}: candidates already generated, reusing {}", r.name, path.display());
        let mut stats: GenerationStats = serde_json::from_value(old["stats"].clone()).unwrap_or_default();
        stats.reused = true;
        return Ok(stats);
    }
    let lm = CausalLm::load(&r.policy.model, device)?;
    let prompts = r.prompts();
    let mut requests = Vec::with_capacity(prompts.len() * r.policy.n);
    let mut texts = Vec::with_capacity(prompts.len());
    for (i, p) in prompts.iter().enumerate() {
        let (ids, text) = prompt_ids(&lm, p, r.policy.chat)?;
        texts.push(text);
        for k in 0..r.policy.n {
            requests.push(GenRequest { prompt: ids.clone(), seed: rmtrain_core::mix_seed(r.policy.seed, i as u64, k as u64) });
        }
    }
    let bar = rmtrain_core::progress_bar(progress, "generate", "tokens", (requests.len() * r.policy.max_new_tokens) as u64, 0);
    let started = Instant::now();
    let gens = lm.generate(&requests, &r.sampling(), r.policy.batch_size, &mut |n| bar.inc(n as u64))?;
    bar.finish_and_clear();
    let seconds = started.elapsed().as_secs_f64();
    let mut out = String::new();
    for (((p, word), text), g) in prompts.iter().zip(&r.policy.words).zip(&texts).zip(gens.chunks(r.policy.n)) {
        let mut line = json!({
            "prompt": p, "word": word,
            "responses": g.iter().map(|x| x.text.trim().to_string()).collect::<Vec<_>>(),
            "ref_logprobs": g.iter().map(|x| x.ref_logprob()).collect::<Vec<_>>(),
            "num_tokens": g.iter().map(|x| x.ids.len()).collect::<Vec<_>>(),
            "finish_reasons": g.iter().map(|x| x.finish.name()).collect::<Vec<_>>(),
        });
        if let Some(t) = text {
            line["prompt_text"] = json!(t);
        }
        out.push_str(&line.to_string());
        out.push('\n');
    }
    let stats = GenerationStats { prompts: prompts.len(), n: r.policy.n, tokens: gens.iter().map(|g| g.ids.len()).sum(), seconds, reused: false };
    rmtrain_core::write_atomic(path, out.as_bytes())?;
    rmtrain_core::write_json_atomic(&settings_path, &json!({"settings": wanted, "stats": stats}))?;
    Ok(stats)
}

/// The accuracy of a model on each eval set, from its final metrics.
fn accuracy_cells(metrics: &Value, sets: &[String]) -> Vec<String> {
    sets.iter()
        .map(|s| match (metrics[s]["accuracy"].as_f64(), metrics[s]["accuracy_ci95"].as_array()) {
            (Some(a), Some(ci)) if ci.len() == 2 => format!("{a:.3} [{:.3}, {:.3}]", ci[0].as_f64().unwrap_or(f64::NAN), ci[1].as_f64().unwrap_or(f64::NAN)),
            (Some(a), _) => format!("{a:.3}"),
            _ => "–".into(),
        })
        .collect()
}

pub struct RbonOutcome {
    pub bon: BonOutcome,
    pub report: PathBuf,
    pub pairs: PathBuf,
    pub wall_seconds: f64,
}

/// Runs the recipe: VADER data, proxy and gold reward models, candidates, the BoN sweep, the DPO
/// pairs, and `report.md` / `report.json` in `out`.
pub fn run_rbon(r: &RbonRecipe, device: &Device, progress: bool) -> Result<RbonOutcome> {
    let started = Instant::now();
    let mut timings = serde_json::Map::new();
    let mut tick = Instant::now();
    let mut lap = |name: &str, t: &mut Instant| {
        timings.insert(name.into(), json!(t.elapsed().as_secs_f64()));
        *t = Instant::now();
    };
    if let Some(v) = &r.vader
        && let Some(summary) = prepare_vader(v)?
    {
        eprintln!("{summary}");
    }
    for (what, p) in [("policy.model", &r.policy.model), ("proxy.backbone", &r.proxy.backbone), ("gold.backbone", &r.gold.backbone), ("bon.embedder", &r.bon.embedder)] {
        if !p.exists() {
            return Err(config_error(format!("{what}: {}: no such file or folder (scripts/fetch-assets.sh fetches the testbed)", p.display())));
        }
    }
    std::fs::create_dir_all(&r.out).map_err(|e| config_error(format!("{}: {e}", r.out.display())))?;
    let (proxy, proxy_metrics) = reward_model("proxy", &r.proxy, &r.out.join("proxy"), device, progress)?;
    lap("proxy_rm", &mut tick);
    let (gold, gold_metrics) = reward_model("gold", &r.gold, &r.out.join("gold"), device, progress)?;
    lap("gold_rm", &mut tick);
    let cands = r.out.join("candidates.jsonl");
    let generation = candidates(r, &cands, device, progress)?;
    lap("candidates", &mut tick);
    let pairs = r.out.join("dpo_pairs.jsonl");
    let req = BonRequest {
        input: cands.clone(),
        out_dir: r.out.join("bon"),
        proxy: RewardSource::Models { dirs: vec![proxy.clone()], combine: Combine::Mean, normalize: false },
        gold: Some(RewardSource::Models { dirs: vec![gold.clone()], combine: Combine::Mean, normalize: false }),
        sweep: Sweep { rules: vec![(Rule::Bon, vec![0.0]), (Rule::Kl, r.bon.beta_kl.clone()), (Rule::Wd, r.bon.beta_wd.clone())], ns: r.bon.n.clone(), draws: r.bon.draws, seed: r.bon.seed },
        ref_logprobs_column: "ref_logprobs".into(),
        embeddings: Some(EmbeddingSource::Encoder(r.bon.embedder.clone())),
        rm_input: RmInput::Response,
        max_length: None,
        batch_size: 32,
        device: device.clone(),
        pairs: Some(PairsSpec { path: pairs.clone(), rule: r.bon.pairs_rule, beta: r.bon.pairs_beta }),
        progress,
    };
    let bon = run_bon(&req)?;
    lap("bon", &mut tick);
    timings.insert("total".into(), json!(started.elapsed().as_secs_f64()));

    let mut sets: Vec<String> = r.gold.eval.keys().cloned().collect();
    for k in r.proxy.eval.keys() {
        if !sets.contains(k) {
            sets.push(k.clone());
        }
    }
    let header: Vec<&str> = std::iter::once("reward model").chain(sets.iter().map(String::as_str)).collect();
    let rows = vec![
        std::iter::once(format!("proxy: {}", r.proxy.train.iter().map(|p| p.file_name().map_or(String::new(), |n| n.to_string_lossy().into_owned())).collect::<Vec<_>>().join(", ")))
            .chain(accuracy_cells(&proxy_metrics, &sets))
            .collect::<Vec<_>>(),
        std::iter::once(format!("gold: {}", r.gold.train.iter().map(|p| p.file_name().map_or(String::new(), |n| n.to_string_lossy().into_owned())).collect::<Vec<_>>().join(", ")))
            .chain(accuracy_cells(&gold_metrics, &sets))
            .collect(),
    ];
    let align: Vec<rmtrain_eval::Align> = std::iter::once(rmtrain_eval::Align::Left).chain(sets.iter().map(|_| rmtrain_eval::Align::Right)).collect();
    let mut md = format!(
        "# {}\n\nPolicy `{}`: {} prompts × {} samples (temperature {}, top-p {}, at most {} new tokens), {} tokens in {:.0} s{}.\n\n## Reward models (accuracy on gold-labelled pairs, 95 % bootstrap interval)\n\n",
        r.name,
        r.policy.model.display(),
        generation.prompts,
        generation.n,
        r.policy.temperature,
        r.policy.top_p,
        r.policy.max_new_tokens,
        generation.tokens,
        generation.seconds,
        if generation.reused { " (reused)" } else { "" }
    );
    md += &rmtrain_eval::render_markdown_table(&header, &align, &rows);
    md += "\n";
    md += &bon.markdown.replacen("# Best-of-N selection", "## Best-of-N selection", 1).replace("\n## N = ", "\n### N = ");
    md += &format!(
        "\nDPO pairs for the DeRa recipe: `{}` ({} pairs: chosen = {} at β = {}, rejected = the lowest proxy reward of the {}).\n\nTimings (s): {}\n",
        pairs.display(),
        bon.pairs_written.unwrap_or(0),
        r.bon.pairs_rule.label(),
        r.bon.pairs_beta,
        r.policy.n,
        Value::Object(timings.clone())
    );
    let report = r.out.join("report.md");
    rmtrain_core::write_atomic(&report, md.as_bytes())?;
    rmtrain_core::write_json_atomic(
        &r.out.join("report.json"),
        &json!({"recipe": r, "proxy": {"model": proxy, "metrics": proxy_metrics}, "gold": {"model": gold, "metrics": gold_metrics},
                "generation": generation, "bon": r.out.join("bon/bon.json"), "pairs": pairs, "timings": timings}),
    )?;
    Ok(RbonOutcome { bon, report, pairs, wall_seconds: started.elapsed().as_secs_f64() })
}
