//! Best-of-N selection over a candidates file (what `rmtrain bon` and the RBoN recipe run): proxy
//! rewards from a reward model, a prediction ensemble or a column; the reference log-probs that
//! RBoN-KL needs from a column (`rmtrain generate` writes `ref_logprobs`); the sentence embeddings
//! RBoN-WD needs from an encoder (MiniLM: mean-pooled, L2-normalised) or a column; gold rewards
//! from a reward model or a column, for evaluation only. The sweep over rules, β and N is
//! [`rmtrain_eval::bon`]; this writes its report (`bon.json`, `bon.md`, plots), the picks
//! (`selections.jsonl`) and, when asked, DPO pairs built from the picks.

use crate::scoring::{combine_models, score_models};
use crate::{config_error, Result};
use burn::tensor::Device;
use rmtrain_data::{read_candidate_records, CandidateColumns, CandidateRecord, PromptInput};
use rmtrain_eval::bon::{argmax_first, sweep, Candidates, Rule, Sweep, SweepResult};
use rmtrain_eval::{render_markdown_table, Align};
use rmtrain_merge::Combine;
use rmtrain_models::{RewardModel, ScoreOptions};
use serde_json::{json, Map, Value};
use std::path::{Path, PathBuf};

/// Where the proxy (or gold) rewards come from.
#[derive(Debug, Clone)]
pub enum RewardSource {
    /// One reward model (a WARM average is one), or several combined as a prediction ensemble.
    Models { dirs: Vec<PathBuf>, combine: Combine, normalize: bool },
    /// A column of the candidates file: a list of N numbers per line.
    Column(String),
}

/// Where RBoN-WD's embeddings come from.
#[derive(Debug, Clone)]
pub enum EmbeddingSource {
    /// A BERT sentence encoder folder (all-MiniLM-L6-v2): mean pooling, L2 normalisation.
    Encoder(PathBuf),
    Column(String),
}

/// What the reward models read of a candidate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RmInput {
    /// The response alone (an RM trained on bare texts, as the VADER ones are).
    Response,
    /// The prompt then the response, as a preference pair's side is scored (a text prompt is
    /// joined to the response as is; a conversation is rendered as `role: content` lines and
    /// the response follows as an `assistant:` line).
    PromptAndResponse,
}

/// DPO pairs from the picks: chosen = `rule`'s pick at `beta` among all N candidates, rejected =
/// the candidate with the lowest proxy reward (the worst of N).
#[derive(Debug, Clone)]
pub struct PairsSpec {
    pub path: PathBuf,
    pub rule: Rule,
    pub beta: f64,
}

#[derive(Debug, Clone)]
pub struct BonRequest {
    pub input: PathBuf,
    pub out_dir: PathBuf,
    pub proxy: RewardSource,
    pub gold: Option<RewardSource>,
    pub sweep: Sweep,
    /// Column of reference log-probs (read when present; required by RBoN-KL).
    pub ref_logprobs_column: String,
    /// Needed when the sweep has RBoN-WD.
    pub embeddings: Option<EmbeddingSource>,
    pub rm_input: RmInput,
    /// Truncation of the reward models (None: each one's own, else 128) and of the encoder (None:
    /// its sentence_bert_config.json max_seq_length, else 256).
    pub max_length: Option<usize>,
    pub batch_size: usize,
    pub device: Device,
    pub pairs: Option<PairsSpec>,
    pub progress: bool,
}

/// What a run produced.
#[derive(Debug, Clone)]
pub struct BonOutcome {
    pub result: SweepResult,
    pub markdown: String,
    pub prompts: usize,
    pub candidates: usize,
    /// DPO pairs written (prompts where the pick was not also the worst).
    pub pairs_written: Option<usize>,
}

fn text_of(prompt: Option<&PromptInput>, response: &str, how: RmInput) -> String {
    match (how, prompt) {
        (RmInput::Response, _) | (_, None) => response.to_string(),
        (RmInput::PromptAndResponse, Some(PromptInput::Text(p))) => format!("{p}{response}"),
        (RmInput::PromptAndResponse, Some(PromptInput::Messages(m))) => {
            let lines: Vec<String> = m
                .as_array()
                .map(|a| a.iter().map(|x| format!("{}: {}", x["role"].as_str().unwrap_or(""), x["content"].as_str().unwrap_or(""))).collect())
                .unwrap_or_default();
            format!("{}\nassistant: {response}", lines.join("\n"))
        }
    }
}

/// Per candidate (flattened over lines), the reward `source` gives.
fn rewards_from(source: &RewardSource, column_values: Option<Vec<f64>>, texts: &[&str], req: &BonRequest, what: &str) -> Result<Vec<f64>> {
    match source {
        RewardSource::Column(_) => Ok(column_values.expect("a column source was read")),
        RewardSource::Models { dirs, combine, normalize } => {
            let bar = rmtrain_core::progress_bar(req.progress, what, "models", dirs.len() as u64, 0);
            let opts = ScoreOptions { batch_size: req.batch_size, ..ScoreOptions::default() };
            let scores = score_models(dirs, texts, req.max_length, &req.device, &opts, &bar)?;
            if scores.truncated > 0 {
                eprintln!("rmtrain: info: {what}: {} of {} texts were scored truncated at max_length", scores.truncated, texts.len());
            }
            if dirs.len() == 1 {
                return Ok(scores.per_model.into_iter().next().expect("one model"));
            }
            let raw: Vec<&[f64]> = scores.per_model.iter().map(Vec::as_slice).collect();
            let paths: Vec<&Path> = dirs.iter().map(PathBuf::as_path).collect();
            combine_models(&raw, &paths, *combine, *normalize)
        }
    }
}

/// The encoder's truncation: `--max-length`, else sentence-transformers' `max_seq_length`, else 256.
fn encoder_max_length(dir: &Path, given: Option<usize>) -> usize {
    given
        .or_else(|| {
            let v: Value = serde_json::from_slice(&std::fs::read(dir.join("sentence_bert_config.json")).ok()?).ok()?;
            v.get("max_seq_length")?.as_u64().map(|n| n as usize)
        })
        .unwrap_or(256)
}

/// Sentence embeddings of `texts` by a BERT encoder folder (mean pooling over the attention mask,
/// then L2 normalisation: sentence-transformers' all-MiniLM-L6-v2).
pub fn embed_texts(dir: &Path, texts: &[&str], max_length: Option<usize>, batch_size: usize, device: &Device) -> Result<Vec<Vec<f64>>> {
    let encoder = RewardModel::load(dir, encoder_max_length(dir, max_length), device)?;
    let (rows, truncated) = encoder.embed_texts(texts, &ScoreOptions { batch_size, ..ScoreOptions::default() })?;
    if truncated > 0 {
        eprintln!("rmtrain: info: embeddings: {truncated} of {} texts were cut at the encoder's max length", texts.len());
    }
    Ok(rows.into_iter().map(|r| r.into_iter().map(f64::from).collect()).collect())
}

/// Reads, scores, sweeps and writes. Everything is computed before the first file is written;
/// the report folder appears whole (written beside, then renamed).
pub fn run_bon(req: &BonRequest) -> Result<BonOutcome> {
    if req.sweep.rules.is_empty() {
        return Err(config_error("bon: no selection rule"));
    }
    // The rules the sweep and the DPO pairs use: what must be read or computed.
    let rules: Vec<Rule> = req.sweep.rules.iter().map(|r| r.0).chain(req.pairs.as_ref().map(|p| p.rule)).collect();
    if rules.contains(&Rule::Wd) && req.embeddings.is_none() {
        return Err(config_error("bon: RBoN-WD needs embeddings (an encoder folder or an embedding column)"));
    }
    let mut columns = CandidateColumns::default();
    let column = |s: Option<&RewardSource>| match s {
        Some(RewardSource::Column(c)) => Some(c.clone()),
        _ => None,
    };
    let (proxy_col, gold_col) = (column(Some(&req.proxy)), column(req.gold.as_ref()));
    columns.required_numbers.extend(proxy_col.iter().cloned());
    columns.required_numbers.extend(gold_col.iter().cloned());
    columns.optional_numbers.push(req.ref_logprobs_column.clone());
    if let Some(EmbeddingSource::Column(c)) = &req.embeddings {
        columns.embeddings = Some(c.clone());
    }
    let records = read_candidate_records(&req.input, &columns, true)?;
    let n_cand = records[0].responses.len();
    let lp_slot = columns.required_numbers.len();
    if rules.contains(&Rule::Kl)
        && let Some(r) = records.iter().find(|r| r.numbers[lp_slot].is_none())
    {
        return Err(config_error(format!(
            "{}:{}: field \"{}\": missing (RBoN-KL needs each response's reference log-prob; `rmtrain generate` writes them, `rmtrain logprobs` computes them)",
            req.input.display(),
            r.line,
            req.ref_logprobs_column
        )));
    }
    let mut ns = req.sweep.ns.clone();
    if ns.is_empty() {
        ns.push(n_cand);
    }
    if let Some(&n) = ns.iter().find(|&&n| n == 0 || n > n_cand) {
        return Err(config_error(format!("bon: N = {n}: each line of {} has {n_cand} responses (N must be 1..={n_cand})", req.input.display())));
    }
    let texts: Vec<String> = records.iter().flat_map(|r| r.responses.iter().map(|resp| text_of(r.prompt.as_ref(), resp, req.rm_input))).collect();
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let flat = |slot: usize| -> Vec<f64> { records.iter().flat_map(|r| r.numbers[slot].clone().expect("a required column")).collect() };
    let proxy = rewards_from(&req.proxy, proxy_col.as_ref().map(|_| flat(0)), &refs, req, "proxy")?;
    let gold = match &req.gold {
        None => None,
        Some(g) => Some(rewards_from(g, gold_col.as_ref().map(|_| flat(usize::from(proxy_col.is_some()))), &refs, req, "gold")?),
    };
    let embeddings: Option<Vec<Vec<f64>>> = match (&req.embeddings, rules.contains(&Rule::Wd)) {
        (Some(EmbeddingSource::Encoder(dir)), true) => {
            // The encoder reads the response alone: WD compares the candidates with each other.
            let responses: Vec<&str> = records.iter().flat_map(|r| r.responses.iter().map(String::as_str)).collect();
            Some(embed_texts(dir, &responses, None, req.batch_size, &req.device)?)
        }
        (Some(EmbeddingSource::Column(_)), true) => Some(records.iter().flat_map(|r| r.embeddings.clone().expect("read")).collect()),
        _ => None,
    };
    let prompts: Vec<Candidates> = records
        .iter()
        .enumerate()
        .map(|(p, r)| {
            let span = p * n_cand..(p + 1) * n_cand;
            Candidates {
                rewards: proxy[span.clone()].to_vec(),
                ref_logprobs: r.numbers[lp_slot].clone(),
                embeddings: embeddings.as_ref().map(|e| e[span.clone()].to_vec()),
                gold: gold.as_ref().map(|g| g[span].to_vec()),
            }
        })
        .collect();
    let s = Sweep { ns, ..req.sweep.clone() };
    let result = sweep(&prompts, &s);
    let markdown = bon_markdown(req, &s, &result, records.len(), n_cand);
    let pairs = req.pairs.as_ref().map(|spec| dpo_pairs(spec, &records, &prompts));
    write_report(req, &s, &result, &markdown, &records, &prompts)?;
    let pairs_written = match (&req.pairs, pairs) {
        (Some(spec), Some(lines)) => {
            let mut out = Vec::new();
            for l in &lines {
                serde_json::to_writer(&mut out, l).expect("JSON values serialise");
                out.push(b'\n');
            }
            rmtrain_core::write_atomic(&spec.path, &out)?;
            Some(lines.len())
        }
        _ => None,
    };
    Ok(BonOutcome { result, markdown, prompts: records.len(), candidates: n_cand, pairs_written })
}

/// One TRL preference line per prompt: the prompt as given, chosen = the pick, rejected = the
/// lowest proxy reward; prompts where both are the same candidate are skipped.
fn dpo_pairs(spec: &PairsSpec, records: &[CandidateRecord], prompts: &[Candidates]) -> Vec<Map<String, Value>> {
    let mut out = Vec::new();
    for (r, c) in records.iter().zip(prompts) {
        let all: Vec<usize> = (0..c.rewards.len()).collect();
        let chosen = rmtrain_eval::bon::select(spec.rule, spec.beta, c, &all);
        let negated: Vec<f64> = c.rewards.iter().map(|x| -x).collect();
        let rejected = argmax_first(&negated);
        if chosen == rejected {
            continue;
        }
        let mut line = Map::new();
        let side = |i: usize| -> Value {
            match &r.prompt {
                Some(PromptInput::Messages(_)) => json!([{"role": "assistant", "content": r.responses[i]}]),
                _ => json!(r.responses[i]),
            }
        };
        match &r.prompt {
            Some(PromptInput::Text(p)) => {
                line.insert("prompt".into(), json!(p));
            }
            Some(PromptInput::Messages(m)) => {
                line.insert("prompt".into(), m.clone());
            }
            None => {}
        }
        line.insert("chosen".into(), side(chosen));
        line.insert("rejected".into(), side(rejected));
        line.insert("chosen_index".into(), json!(chosen));
        line.insert("rejected_index".into(), json!(rejected));
        line.insert("proxy_chosen".into(), json!(c.rewards[chosen]));
        line.insert("proxy_rejected".into(), json!(c.rewards[rejected]));
        line.insert("pair_rule".into(), json!(format!("{}@{}", spec.rule, spec.beta)));
        line.insert("source_line".into(), json!(r.line));
        out.push(line);
    }
    out
}

fn fmt_ci(v: Option<f64>, ci: Option<(f64, f64)>) -> String {
    match (v, ci) {
        (Some(v), Some((lo, hi))) => format!("{v:.4} [{lo:.4}, {hi:.4}]"),
        (Some(v), None) => format!("{v:.4}"),
        _ => "–".into(),
    }
}

fn fmt_opt(v: Option<f64>, digits: usize) -> String {
    v.filter(|x| x.is_finite()).map_or("–".into(), |x| format!("{x:.digits$}"))
}

fn source_name(s: &RewardSource) -> String {
    match s {
        RewardSource::Column(c) => format!("column `{c}`"),
        RewardSource::Models { dirs, .. } if dirs.len() == 1 => format!("`{}`", dirs[0].display()),
        RewardSource::Models { dirs, combine, normalize } => {
            let names: Vec<String> = dirs.iter().map(|d| format!("`{}`", d.display())).collect();
            format!("ensemble ({combine}{}) of {}", if *normalize { ", z-normalised" } else { "" }, names.join(", "))
        }
    }
}

fn bon_markdown(req: &BonRequest, s: &Sweep, r: &SweepResult, prompts: usize, n_cand: usize) -> String {
    let mut md = format!(
        "# Best-of-N selection\n\n{prompts} prompts × {n_cand} candidates from `{}`. Proxy: {}. Gold: {}. Subsets: {} seeded random draw(s) per prompt (seed {}), nested over N.\n\n",
        req.input.display(),
        source_name(&req.proxy),
        req.gold.as_ref().map_or("none".into(), source_name),
        s.draws.max(1),
        s.seed
    );
    if let Some(c) = &r.correlation {
        md += &format!(
            "Proxy–gold agreement over all candidates: Pearson r = {}, Spearman ρ = {}; Spearman within a prompt, averaged: {}. RBoN's claim (regularisation helps) is conditional on a proxy that correlates poorly with gold.\n\n",
            fmt_opt(c.pearson, 3),
            fmt_opt(c.spearman, 3),
            fmt_opt(c.within_prompt_spearman, 3)
        );
    }
    for &n in &s.ns {
        md += &format!("## N = {n}\n\n");
        let bon_gold = r.points.iter().find(|p| p.n == n && p.rule == Rule::Bon).and_then(|p| p.gold);
        let mut rows: Vec<Vec<String>> = r
            .points
            .iter()
            .filter(|p| p.n == n)
            .map(|p| {
                vec![
                    p.rule.label().to_string(),
                    if p.rule == Rule::Bon { "–".into() } else { format!("{}", p.beta) },
                    fmt_ci(p.gold, p.gold_ci),
                    match (p.gold, bon_gold) {
                        (Some(g), Some(b)) if p.rule != Rule::Bon => format!("{:+.4}", g - b),
                        _ => "–".into(),
                    },
                    format!("{:.4}", p.proxy),
                    fmt_opt(p.ref_logprob, 2),
                    fmt_opt(Some(p.differs_from_bon), 3),
                ]
            })
            .collect();
        if let Some(b) = r.baselines.iter().find(|b| b.n == n) {
            rows.push(vec!["random pick".into(), "–".into(), format!("{:.4}", b.random_gold), "–".into(), "–".into(), "–".into(), "–".into()]);
            rows.push(vec!["gold-best pick (oracle)".into(), "–".into(), format!("{:.4}", b.oracle_gold), "–".into(), "–".into(), "–".into(), "–".into()]);
        }
        md += &render_markdown_table(
            &["rule", "β", "gold reward of the pick [95% CI]", "Δ gold vs BoN", "proxy reward", "log π_ref", "picks ≠ BoN"],
            &[Align::Left, Align::Right, Align::Right, Align::Right, Align::Right, Align::Right, Align::Right],
            &rows,
        );
        md += "\n";
    }
    md
}

fn write_report(req: &BonRequest, s: &Sweep, r: &SweepResult, markdown: &str, records: &[CandidateRecord], prompts: &[Candidates]) -> Result<()> {
    let dir = rmtrain_core::AtomicDir::new(&req.out_dir)?;
    let d = dir.path();
    let mut json = serde_json::to_value(r).expect("a sweep result serialises");
    if let Value::Object(f) = &mut json {
        f.insert("input".into(), json!(req.input));
        f.insert("prompts".into(), json!(records.len()));
        f.insert("candidates".into(), json!(records[0].responses.len()));
        f.insert("proxy".into(), json!(source_name(&req.proxy)));
        f.insert("gold".into(), json!(req.gold.as_ref().map(source_name)));
        f.insert("draws".into(), json!(s.draws.max(1)));
        f.insert("seed".into(), json!(s.seed));
        f.insert("rm_input".into(), json!(if req.rm_input == RmInput::Response { "response" } else { "prompt+response" }));
    }
    rmtrain_core::write_json_atomic(&d.join("bon.json"), &json)?;
    rmtrain_core::write_atomic(&d.join("bon.md"), markdown.as_bytes())?;
    // Each prompt's candidates with their rewards, and every point's pick of draw 0.
    let mut lines = Vec::new();
    for ((rec, c), picks) in records.iter().zip(prompts).zip(&r.picks) {
        let mut f = rec.fields.clone();
        f.insert("proxy_rewards".into(), json!(c.rewards));
        if let Some(g) = &c.gold {
            f.insert("gold_rewards".into(), json!(g));
        }
        let selected: Vec<Value> = r
            .points
            .iter()
            .zip(&picks[0])
            .map(|(p, &i)| json!({"rule": p.rule, "beta": p.beta, "n": p.n, "index": i, "response": rec.responses[i]}))
            .collect();
        f.insert("selected".into(), json!(selected));
        serde_json::to_writer(&mut lines, &f).expect("JSON values serialise");
        lines.push(b'\n');
    }
    rmtrain_core::write_atomic(&d.join("selections.jsonl"), &lines)?;
    if r.correlation.is_some() {
        write_plots(d, s, r)?;
    }
    dir.commit()?;
    Ok(())
}

/// Gold reward of the pick against β (one plot per regularised rule, at the largest N, BoN as a
/// flat line) and against N (BoN, each regularised rule at its best β by gold, random, oracle).
fn write_plots(d: &Path, s: &Sweep, r: &SweepResult) -> Result<()> {
    let n_max = *s.ns.iter().max().expect("an N");
    let bon = |n: usize| r.points.iter().find(|p| p.rule == Rule::Bon && p.n == n).and_then(|p| p.gold);
    for rule in [Rule::Kl, Rule::Wd] {
        let pts: Vec<(f64, f64)> =
            r.points.iter().filter(|p| p.rule == rule && p.n == n_max && p.beta > 0.0).filter_map(|p| Some((p.beta.log10(), p.gold?))).collect();
        if pts.is_empty() {
            continue;
        }
        let mut series = vec![(format!("{} (N = {n_max})", rule.label()), pts.clone())];
        if let Some(b) = bon(n_max) {
            let (lo, hi) = pts.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, z), p| (a.min(p.0), z.max(p.0)));
            series.push((format!("BoN (N = {n_max})"), vec![(lo, b), (hi, b)]));
        }
        rmtrain_eval::line_chart(
            &d.join(format!("plots/gold_vs_beta_{}.png", rule.name())),
            &format!("Gold reward of the pick vs β, {}", rule.label()),
            "log10 β",
            "mean gold reward of the pick",
            &series,
        )?;
    }
    let mut series: Vec<(String, Vec<(f64, f64)>)> = Vec::new();
    let x = |n: usize| (n as f64).log2();
    series.push(("BoN".into(), s.ns.iter().filter_map(|&n| Some((x(n), bon(n)?))).collect()));
    for rule in [Rule::Kl, Rule::Wd] {
        // Its best β at the largest N (chosen with the gold reward: an upper bound for the rule).
        let best = r.points.iter().filter(|p| p.rule == rule && p.n == n_max).filter_map(|p| Some((p.beta, p.gold?))).max_by(|a, b| a.1.total_cmp(&b.1));
        if let Some((beta, _)) = best {
            let pts = s.ns.iter().filter_map(|&n| r.points.iter().find(|p| p.rule == rule && p.n == n && p.beta == beta).and_then(|p| Some((x(n), p.gold?)))).collect();
            series.push((format!("{} (β = {beta})", rule.label()), pts));
        }
    }
    series.push(("random pick".into(), r.baselines.iter().map(|b| (x(b.n), b.random_gold)).collect()));
    series.push(("gold-best pick".into(), r.baselines.iter().map(|b| (x(b.n), b.oracle_gold)).collect()));
    rmtrain_eval::line_chart(&d.join("plots/gold_vs_n.png"), "Gold reward of the pick vs N", "log2 N", "mean gold reward of the pick", &series)?;
    Ok(())
}
