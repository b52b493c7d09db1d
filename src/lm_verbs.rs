//! The causal-LM verbs `logprobs` and `generate`: argument parsing and printing; the model work is
//! in `rmtrain_models::causal_lm`.

use crate::device::parse_device;
use crate::verbs::{at_least, non_negative};
use anyhow::{Context, Result};
use clap::Args;
use rmtrain_data::{read_prompt_records, PromptInput, PromptRecord};
use rmtrain_models::{CausalLm, GenRequest, Realign, Sampling};
use serde_json::{json, Map, Value};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// What both verbs read and where they write.
#[derive(Args)]
pub struct LmInput {
    /// Causal LM: an HF folder (LlamaForCausalLM, Qwen2, Mistral) or a .gguf file.
    #[arg(long)]
    pub model: PathBuf,
    /// JSONL lines with `prompt` (a string or a conversation) or `messages`; `logprobs` also
    /// needs `response`.
    #[arg(long)]
    pub input: PathBuf,
    /// Write the lines here (atomically) instead of stdout.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Put a string prompt through the model's chat template, as one user message.
    #[arg(long)]
    pub chat: bool,
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

#[derive(Args)]
pub struct LogprobsArgs {
    #[command(flatten)]
    pub io: LmInput,
    #[arg(long, default_value_t = 8, value_parser = at_least::<1>)]
    pub batch_size: usize,
}

#[derive(Args)]
pub struct GenerateArgs {
    #[command(flatten)]
    pub io: LmInput,
    /// Samples per prompt.
    #[arg(long, default_value_t = 1, value_parser = at_least::<1>)]
    pub n: usize,
    #[arg(long, default_value_t = 64, value_parser = at_least::<1>)]
    pub max_new_tokens: usize,
    /// 0 = greedy.
    #[arg(long, default_value_t = 1.0, value_parser = non_negative)]
    pub temperature: f64,
    /// Keep the k most likely tokens (0 = off).
    #[arg(long, default_value_t = 0)]
    pub top_k: usize,
    /// Nucleus sampling: keep the most likely tokens up to this probability mass (1 = off).
    #[arg(long, default_value_t = 1.0)]
    pub top_p: f64,
    /// Keep tokens at least this fraction as likely as the most likely one (0 = off).
    #[arg(long, default_value_t = 0.0)]
    pub min_p: f64,
    /// Stop when this string appears (repeatable); it is cut from the response.
    #[arg(long = "stop")]
    pub stop: Vec<String>,
    /// Do not stop at end-of-sequence tokens: every sample gets --max-new-tokens (benchmarks).
    #[arg(long)]
    pub ignore_eos: bool,
    /// Sample k of prompt i draws from its own stream seeded by (seed, i, k): results do not
    /// depend on --batch-size.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Sequences decoded together.
    #[arg(long, default_value_t = 16, value_parser = at_least::<1>)]
    pub batch_size: usize,
    #[arg(long)]
    pub no_progress: bool,
    /// DeRa: the aligned model (an HF folder or .gguf sharing --model's tokenizer); each step
    /// samples from softmax(λ·h_aligned + (1 − λ)·h_ref), --model being the reference.
    #[arg(long, requires = "lambda")]
    pub aligned: Option<PathBuf>,
    /// DeRa's λ values, comma-separated (0 = reference, 1 = aligned, > 1 extrapolates): one output
    /// line per input line and λ, all decoded in the same batches.
    #[arg(long, value_delimiter = ',', allow_hyphen_values = true, value_parser = crate::verbs::finite, requires = "aligned")]
    pub lambda: Vec<f64>,
}

/// The prompt's token ids, and its text when the chat template made it.
fn prompt_ids(lm: &CausalLm, r: &PromptRecord, chat: bool, input: &Path) -> Result<(Vec<u32>, Option<String>)> {
    let at = || format!("{}:{}", input.display(), r.line);
    let templated = |messages: &Value| -> Result<(Vec<u32>, Option<String>)> {
        let text = lm.apply_chat_template(messages).with_context(at)?;
        Ok((lm.encode_chat(&text).with_context(at)?, Some(text)))
    };
    match &r.prompt {
        PromptInput::Text(t) if chat => templated(&json!([{"role": "user", "content": t}])),
        PromptInput::Text(t) => Ok((lm.encode_prompt(t).with_context(at)?, None)),
        PromptInput::Messages(m) => templated(m),
    }
}

/// Writes the lines to `out` atomically, or to stdout; nothing is written before all are ready.
fn emit(lines: Vec<Map<String, Value>>, out: Option<&Path>) -> Result<()> {
    let mut text = String::new();
    for l in lines {
        text.push_str(&Value::Object(l).to_string());
        text.push('\n');
    }
    match out {
        Some(p) => rmtrain_core::write_atomic(p, text.as_bytes()).with_context(|| format!("writing {}", p.display())),
        None => std::io::stdout().lock().write_all(text.as_bytes()).context("writing stdout"),
    }
}

pub fn logprobs(a: LogprobsArgs) -> Result<()> {
    let io = &a.io;
    let device = parse_device(&io.device)?;
    let records = read_prompt_records(&io.input, true)?;
    let lm = CausalLm::load(&io.model, &device)?;
    let mut items = Vec::with_capacity(records.len());
    for r in &records {
        let (p, _) = prompt_ids(&lm, r, io.chat, &io.input)?;
        let resp = lm.encode_response(r.response.as_deref().expect("read_prompt_records requires a response"))?;
        items.push((p, resp));
    }
    let lps = lm.logprobs(&items, a.batch_size)?;
    let lines = records
        .into_iter()
        .zip(lps)
        .map(|(r, lp)| {
            let mut f = r.fields;
            f.insert("logprob".into(), json!(lp.iter().map(|&x| x as f64).sum::<f64>()));
            f.insert("logprobs".into(), json!(lp));
            f
        })
        .collect();
    emit(lines, io.out.as_deref())
}

pub fn generate(a: GenerateArgs) -> Result<()> {
    let sampling = Sampling { max_new_tokens: a.max_new_tokens, temperature: a.temperature, top_k: a.top_k, top_p: a.top_p, min_p: a.min_p, stop_strings: a.stop.clone(), ignore_eos: a.ignore_eos };
    sampling.validate().map_err(|m| anyhow::anyhow!("--{}", m.replacen('_', "-", 2)))?;
    let io = &a.io;
    let device = parse_device(&io.device)?;
    let records = read_prompt_records(&io.input, false)?;
    let lm = CausalLm::load(&io.model, &device)?;
    let aligned = a.aligned.as_ref().map(|p| CausalLm::load(p, &device)).transpose()?;
    // Without DeRa one "λ" (None); with it, every λ per line, sharing the line's seeds (common
    // random numbers: the λ values differ by their logits only).
    let lambdas: Vec<Option<f64>> = if aligned.is_some() { a.lambda.iter().copied().map(Some).collect() } else { vec![None] };
    let mut requests = Vec::with_capacity(records.len() * lambdas.len() * a.n);
    let mut request_lambdas = Vec::with_capacity(requests.capacity());
    let mut texts = Vec::with_capacity(records.len());
    for (i, r) in records.iter().enumerate() {
        let (ids, text) = prompt_ids(&lm, r, io.chat, &io.input)?;
        texts.push(text);
        for lambda in &lambdas {
            for k in 0..a.n {
                requests.push(GenRequest { prompt: ids.clone(), seed: rmtrain_core::mix_seed(a.seed, i as u64, k as u64) });
                request_lambdas.push(lambda.unwrap_or(0.0));
            }
        }
    }
    let bar = rmtrain_core::progress_bar(!a.no_progress, "generate", "tokens", (requests.len() * a.max_new_tokens) as u64, 0);
    let started = Instant::now();
    let mut produced = 0u64;
    let mut on_step = |n: usize| {
        produced += n as u64;
        bar.inc(n as u64);
        bar.set_message(format!("{:.1} tokens/s", produced as f64 / started.elapsed().as_secs_f64().max(1e-9)));
    };
    let generations = match &aligned {
        Some(al) => lm.generate_realigned(&requests, &Realign { aligned: al, lambdas: &request_lambdas }, &sampling, a.batch_size, &mut on_step)?,
        None => lm.generate(&requests, &sampling, a.batch_size, &mut on_step)?,
    };
    bar.finish_and_clear();
    let seconds = started.elapsed().as_secs_f64();
    let new_tokens: usize = generations.iter().map(|g| g.ids.len()).sum();
    eprintln!(
        "generate: {} prompts × {} samples{}, {new_tokens} tokens kept ({produced} decoded) in {seconds:.1} s: {:.1} tokens/s, batch {}",
        records.len(),
        a.n,
        if aligned.is_some() { format!(" × {} λ values", lambdas.len()) } else { String::new() },
        produced as f64 / seconds.max(1e-9),
        a.batch_size
    );
    let mut lines = Vec::with_capacity(records.len() * lambdas.len());
    let mut per_line = generations.chunks(a.n);
    let mut kl_by_lambda: Vec<(f64, f64)> = vec![(0.0, 0.0); lambdas.len()];
    for (r, text) in records.into_iter().zip(texts) {
        for (li, lambda) in lambdas.iter().enumerate() {
            let gens = per_line.next().expect("a chunk per line and λ");
            let mut f = r.fields.clone();
            if let Some(t) = &text {
                f.insert("prompt_text".into(), json!(t));
            }
            f.insert("responses".into(), json!(gens.iter().map(|g| g.text.clone()).collect::<Vec<_>>()));
            f.insert("ref_logprobs".into(), json!(gens.iter().map(|g| g.ref_logprob()).collect::<Vec<_>>()));
            f.insert("num_tokens".into(), json!(gens.iter().map(|g| g.ids.len()).collect::<Vec<_>>()));
            f.insert("finish_reasons".into(), json!(gens.iter().map(|g| g.finish.name()).collect::<Vec<_>>()));
            let mut generator = json!({"model": io.model.display().to_string(), "seed": a.seed, "temperature": a.temperature, "top_k": a.top_k, "top_p": a.top_p, "min_p": a.min_p, "max_new_tokens": a.max_new_tokens});
            if let (Some(lambda), Some(p)) = (lambda, &a.aligned) {
                let realigned: Vec<f64> = gens.iter().map(|g| g.realigned_logprob().expect("DeRa generations carry π_λ log-probs")).collect();
                // Monte-Carlo KL(π_λ ‖ π_ref) of this line: mean over its samples of log π_λ − log π_ref.
                let kl = gens.iter().zip(&realigned).map(|(g, lp)| lp - g.ref_logprob()).sum::<f64>() / gens.len() as f64;
                kl_by_lambda[li].0 += kl;
                kl_by_lambda[li].1 += 1.0;
                f.insert("lambda".into(), json!(lambda));
                f.insert("realigned_logprobs".into(), json!(realigned));
                f.insert("kl_to_ref".into(), json!(kl));
                generator["aligned"] = json!(p.display().to_string());
                generator["lambda"] = json!(lambda);
            }
            f.insert("generator".into(), generator);
            lines.push(f);
        }
    }
    for (lambda, (sum, count)) in lambdas.iter().zip(&kl_by_lambda) {
        if let Some(l) = lambda {
            eprintln!("generate: λ = {l}: Monte-Carlo KL(π_λ ‖ π_ref) = {:.4} nats per response (mean over lines)", sum / count.max(1.0));
        }
    }
    emit(lines, io.out.as_deref())
}
