//! A causal LM as a folder (HF `config.json` + safetensors + `tokenizer.json`) or a GGUF file:
//! teacher-forced response log-probs, and batched generation with a key/value cache (left
//! padding, positions that count real tokens only, so a padded row computes what it would alone),
//! greedy or sampled (temperature, top-k, top-p, min-p), stopping at an end-of-sequence token or a
//! stop string; prompts through the model's chat template (Jinja, rendered with minijinja).
//!
//! Log-probs follow the fixtures' convention: the prompt tokenized with the tokenizer's special
//! tokens (BOS where it adds one), the response without, joined, no EOS; per-token f32
//! log-softmax. A generated response's `ref_logprob` is the same sum over its tokens up to (not
//! including) the EOS or stop string, so `rmtrain logprobs` on (prompt, response) gives it back up
//! to re-tokenization of the text.

use crate::hf::TensorMap;
use crate::llama::{KvCache, LlamaConfig, LlamaLm, Positions};
use crate::reward_net::{LoadNotes, ModelConfig};
use crate::ModelError;
use burn::tensor::activation::log_softmax;
use burn::tensor::{Device, Int, Tensor, TensorData};
use rand::{Rng, SeedableRng};
use std::path::{Path, PathBuf};
use tokenizers::Tokenizer;

pub struct CausalLm {
    pub config: LlamaConfig,
    pub net: LlamaLm,
    pub tokenizer: Tokenizer,
    /// Token ids that end a generation (config, generation_config.json, tokenizer metadata).
    pub stop_ids: Vec<u32>,
    /// Jinja chat template (tokenizer_config.json's `chat_template`, or GGUF `tokenizer.chat_template`).
    pub chat_template: Option<String>,
    pub bos_token: Option<String>,
    pub eos_token: Option<String>,
    /// `tokenizer_config.json` as loaded (or rebuilt from GGUF metadata), written back by `save_hf`.
    pub tokenizer_config: serde_json::Value,
    pub source: PathBuf,
    pub notes: LoadNotes,
}

/// How to pick each next token.
#[derive(Debug, Clone)]
pub struct Sampling {
    pub max_new_tokens: usize,
    /// 0 = greedy (argmax); otherwise logits are divided by it before the filters below.
    pub temperature: f64,
    /// Keep the k most likely tokens (0 = off).
    pub top_k: usize,
    /// Keep the smallest set of most likely tokens whose probability reaches p (1 = off).
    pub top_p: f64,
    /// Keep tokens at least min_p times as likely as the most likely one (0 = off).
    pub min_p: f64,
    pub stop_strings: Vec<String>,
    /// Keep going past end-of-sequence tokens (fixed-length decoding, for benchmarks).
    pub ignore_eos: bool,
}

impl Default for Sampling {
    fn default() -> Self {
        Self { max_new_tokens: 64, temperature: 0.0, top_k: 0, top_p: 1.0, min_p: 0.0, stop_strings: Vec::new(), ignore_eos: false }
    }
}

impl Sampling {
    /// Checks the numbers; the message names the option.
    pub fn validate(&self) -> Result<(), String> {
        if !(self.temperature >= 0.0 && self.temperature.is_finite()) {
            return Err(format!("temperature: {} must be ≥ 0 (0 = greedy)", self.temperature));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(format!("top_p: {} must be in (0, 1]", self.top_p));
        }
        if !(0.0..1.0).contains(&self.min_p) {
            return Err(format!("min_p: {} must be in [0, 1)", self.min_p));
        }
        if self.max_new_tokens == 0 {
            return Err("max_new_tokens: must be ≥ 1".into());
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finish {
    /// An end-of-sequence token was generated (not part of `ids` or `text`).
    Eos,
    /// A stop string appeared (cut from `text`).
    Stop,
    /// `max_new_tokens` reached.
    Length,
}

impl Finish {
    pub fn name(&self) -> &'static str {
        match self {
            Self::Eos => "eos",
            Self::Stop => "stop",
            Self::Length => "length",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Generation {
    /// New token ids (without the EOS that ended them).
    pub ids: Vec<u32>,
    pub text: String,
    /// log π(token | prefix) under the generating model at temperature 1 (no filters), per token;
    /// with DeRa, under the reference model (the one `generate_realigned` is called on).
    pub token_logprobs: Vec<f32>,
    /// With DeRa only: log π_λ(token | prefix) under the realigned distribution
    /// softmax(λ·h_aligned + (1 − λ)·h_ref) at temperature 1, per token.
    pub realigned_logprobs: Option<Vec<f32>>,
    pub finish: Finish,
}

impl Generation {
    pub fn ref_logprob(&self) -> f64 {
        self.token_logprobs.iter().map(|&x| x as f64).sum()
    }

    /// Σ log π_λ over the tokens (DeRa only).
    pub fn realigned_logprob(&self) -> Option<f64> {
        self.realigned_logprobs.as_ref().map(|l| l.iter().map(|&x| x as f64).sum())
    }
}

/// Decoding-time realignment (DeRa: Liu et al., "Decoding-time Realignment of Language Models",
/// ICML 2024): each step's next-token logits are λ·h_aligned + (1 − λ)·h_ref, which approximates
/// the model aligned with KL strength β/λ when `aligned` was aligned from the reference at β.
/// λ = 0 is the reference, 1 the aligned model, λ > 1 extrapolates.
pub struct Realign<'a> {
    pub aligned: &'a CausalLm,
    /// One λ per request.
    pub lambdas: &'a [f64],
}

/// One generation request: a prompt's ids and the seed of its sampling stream.
#[derive(Debug, Clone)]
pub struct GenRequest {
    pub prompt: Vec<u32>,
    pub seed: u64,
}

fn read_json(path: &Path) -> Result<Option<serde_json::Value>, ModelError> {
    if !path.is_file() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(path).map_err(|e| ModelError::file(path, e))?;
    serde_json::from_str(&text).map(Some).map_err(|e| ModelError::file(path, format!("invalid JSON: {e}")))
}

/// A special token in tokenizer_config.json: a string or `{"content": ...}`.
fn token_string(v: Option<&serde_json::Value>) -> Option<String> {
    match v? {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Object(m) => m.get("content").and_then(|c| c.as_str()).map(str::to_string),
        _ => None,
    }
}

fn ids_in(v: Option<&serde_json::Value>) -> Vec<u32> {
    match v {
        Some(serde_json::Value::Number(n)) => n.as_u64().map(|n| vec![n as u32]).unwrap_or_default(),
        Some(serde_json::Value::Array(a)) => a.iter().filter_map(|x| x.as_u64()).map(|n| n as u32).collect(),
        _ => Vec::new(),
    }
}

impl CausalLm {
    /// Loads an HF folder (config.json of a Llama-family model, safetensors, tokenizer.json) or a
    /// `.gguf` file.
    pub fn load(path: &Path, device: &Device) -> Result<Self, ModelError> {
        if path.is_file() && path.extension().is_some_and(|e| e == "gguf") {
            return crate::gguf::load_causal_lm(path, device);
        }
        if !path.is_dir() {
            return Err(ModelError::file(path, "not a model folder or .gguf file (it does not exist)"));
        }
        let config_path = path.join("config.json");
        let config = match ModelConfig::from_file(&config_path)? {
            ModelConfig::Llama(c) => c,
            ModelConfig::Bert(_) => return Err(ModelError::file(&config_path, "field \"model_type\": \"bert\" is not a causal LM")),
        };
        let tensors = TensorMap::read_dir(path)?;
        let tok_path = path.join("tokenizer.json");
        let tokenizer = Tokenizer::from_file(&tok_path).map_err(|e| ModelError::file(&tok_path, format!("cannot load tokenizer: {e}")))?;
        let mut tok_config = read_json(&path.join("tokenizer_config.json"))?.unwrap_or_else(|| serde_json::json!({}));
        // Newer transformers save the template beside the tokenizer config instead of inside it.
        if tok_config.get("chat_template").is_none()
            && let (Some(map), Ok(t)) = (tok_config.as_object_mut(), std::fs::read_to_string(path.join("chat_template.jinja")))
        {
            map.insert("chat_template".into(), serde_json::Value::String(t));
        }
        let gen_config = read_json(&path.join("generation_config.json"))?;
        Self::from_parts(config, tensors, tokenizer, &tok_config, gen_config.as_ref(), path, device)
    }

    /// What an HF folder and a GGUF both give: the config, the tensors, the tokenizer with its
    /// `tokenizer_config.json` keys (special tokens, chat template) and, when there is one,
    /// `generation_config.json`. Generation stops at every EOS id any of them names.
    pub(crate) fn from_parts(
        config: LlamaConfig,
        mut tensors: TensorMap,
        mut tokenizer: Tokenizer,
        tok_config: &serde_json::Value,
        gen_config: Option<&serde_json::Value>,
        source: &Path,
        device: &Device,
    ) -> Result<Self, ModelError> {
        let (net, notes) = LlamaLm::load(&config, &mut tensors, device);
        tensors.finish()?;
        let chat_template = tok_config.get("chat_template").and_then(|c| c.as_str()).map(str::to_string);
        let (bos_token, eos_token) = (token_string(tok_config.get("bos_token")), token_string(tok_config.get("eos_token")));
        let mut stop_ids = config.eos_token_ids.clone();
        stop_ids.extend(ids_in(gen_config.and_then(|g| g.get("eos_token_id"))));
        stop_ids.extend(eos_token.as_deref().and_then(|t| tokenizer.token_to_id(t)));
        stop_ids.sort_unstable();
        stop_ids.dedup();
        tokenizer.with_padding(None);
        let _ = tokenizer.with_truncation(None);
        Ok(Self { config, net, tokenizer, stop_ids, chat_template, bos_token, eos_token, tokenizer_config: tok_config.clone(), source: source.to_path_buf(), notes })
    }

    /// This model (config, tokenizer, template, stop ids) with the weights `net` (a training state).
    pub fn with_net(&self, net: LlamaLm) -> Self {
        Self {
            config: self.config.clone(),
            net,
            tokenizer: self.tokenizer.clone(),
            stop_ids: self.stop_ids.clone(),
            chat_template: self.chat_template.clone(),
            bos_token: self.bos_token.clone(),
            eos_token: self.eos_token.clone(),
            tokenizer_config: self.tokenizer_config.clone(),
            source: self.source.clone(),
            notes: LoadNotes::default(),
        }
    }

    /// Writes an HF folder transformers loads as the family's causal LM (`LlamaForCausalLM`, ...):
    /// `config.json`, `model.safetensors` (transformers' names; no `lm_head.weight` when tied),
    /// `tokenizer.json`, `tokenizer_config.json` (with the chat template) and
    /// `generation_config.json` (the stop ids). `dir` must exist (callers write into an `AtomicDir`).
    pub fn save_hf(&self, dir: &Path) -> Result<(), ModelError> {
        let tensors: Vec<(String, Vec<usize>, Vec<f32>)> = self.net.hf_params().into_iter().map(|(name, p)| {
            let (shape, values) = p.to_hf();
            (name, shape, values)
        }).collect();
        crate::hf::write_safetensors(&dir.join("model.safetensors"), &tensors)?;
        rmtrain_core::write_json_atomic(&dir.join("config.json"), &self.config.to_lm_checkpoint_json())?;
        let tok = self.tokenizer.to_string(true).map_err(|e| ModelError::file(&self.source, format!("cannot serialise the tokenizer: {e}")))?;
        rmtrain_core::write_atomic(&dir.join("tokenizer.json"), tok.as_bytes())?;
        let mut tok_config = self.tokenizer_config.clone();
        if let (Some(map), Some(t)) = (tok_config.as_object_mut(), &self.chat_template) {
            map.insert("chat_template".into(), serde_json::Value::String(t.clone()));
        }
        rmtrain_core::write_json_atomic(&dir.join("tokenizer_config.json"), &tok_config)?;
        let eos: serde_json::Value = match self.stop_ids.as_slice() {
            [one] => serde_json::json!(one),
            many => serde_json::json!(many),
        };
        let mut generation = serde_json::json!({"eos_token_id": eos, "pad_token_id": self.pad_id()});
        if let Some(bos) = self.bos_token.as_deref().and_then(|t| self.tokenizer.token_to_id(t)) {
            generation["bos_token_id"] = serde_json::json!(bos);
        }
        rmtrain_core::write_json_atomic(&dir.join("generation_config.json"), &generation)?;
        Ok(())
    }

    fn encode(&self, text: &str, special: bool) -> Result<Vec<u32>, ModelError> {
        let enc = self.tokenizer.encode(text, special).map_err(|e| ModelError::file(&self.source, format!("cannot encode text: {e}")))?;
        Ok(enc.get_ids().to_vec())
    }

    /// A prompt's ids, with the tokenizer's special tokens (BOS where it adds one).
    pub fn encode_prompt(&self, text: &str) -> Result<Vec<u32>, ModelError> {
        self.encode(text, true)
    }

    /// A response's ids, without special tokens.
    pub fn encode_response(&self, text: &str) -> Result<Vec<u32>, ModelError> {
        self.encode(text, false)
    }

    /// Ids of a chat-formatted prompt: the template's text, tokenized without adding special
    /// tokens again (the template writes them), as transformers' `apply_chat_template(tokenize=True)`.
    pub fn encode_chat(&self, text: &str) -> Result<Vec<u32>, ModelError> {
        self.encode(text, false)
    }

    pub fn decode(&self, ids: &[u32]) -> Result<String, ModelError> {
        self.tokenizer.decode(ids, true).map_err(|e| ModelError::file(&self.source, format!("cannot decode ids: {e}")))
    }

    /// `messages` ([{"role", "content"}]) through the chat template with the generation prompt
    /// appended (`add_generation_prompt = true`).
    pub fn apply_chat_template(&self, messages: &serde_json::Value) -> Result<String, ModelError> {
        let template = self.chat_template.as_deref().ok_or_else(|| ModelError::file(&self.source, "the model has no chat template (tokenizer_config.json chat_template or GGUF tokenizer.chat_template)"))?;
        let mut env = minijinja::Environment::new();
        env.add_function("raise_exception", |msg: String| -> Result<String, minijinja::Error> {
            Err(minijinja::Error::new(minijinja::ErrorKind::InvalidOperation, msg))
        });
        env.add_template("chat", template).map_err(|e| ModelError::file(&self.source, format!("chat template: {e}")))?;
        let ctx = minijinja::context! {
            messages => minijinja::Value::from_serialize(messages),
            add_generation_prompt => true,
            bos_token => self.bos_token.clone().unwrap_or_default(),
            eos_token => self.eos_token.clone().unwrap_or_default(),
        };
        env.get_template("chat")
            .and_then(|t| t.render(ctx))
            .map_err(|e| ModelError::file(&self.source, format!("chat template: {e}")))
    }

    fn device(&self) -> Device {
        self.net.model.embed_tokens.weight.val().device()
    }

    /// The id padded batches use (config `pad_token_id`, else 0).
    pub fn pad_id(&self) -> u32 {
        self.config.pad_token_id.unwrap_or(0)
    }

    /// log π(response_i | prompt, response_<i) of every response token, for each (prompt ids,
    /// response ids) item, in input order; `batch_size` items per forward (sorted by length).
    pub fn logprobs(&self, items: &[(Vec<u32>, Vec<u32>)], batch_size: usize) -> Result<Vec<Vec<f32>>, ModelError> {
        let mut order: Vec<usize> = (0..items.len()).collect();
        order.sort_by_key(|&i| items[i].0.len() + items[i].1.len());
        let mut out = vec![Vec::new(); items.len()];
        for chunk in order.chunks(batch_size.max(1)) {
            for (i, lp) in chunk.iter().zip(self.logprobs_batch(&chunk.iter().map(|&i| &items[i]).collect::<Vec<_>>())?) {
                out[*i] = lp;
            }
        }
        Ok(out)
    }

    fn logprobs_batch(&self, items: &[&(Vec<u32>, Vec<u32>)]) -> Result<Vec<Vec<f32>>, ModelError> {
        if items.iter().any(|(p, r)| p.is_empty() && !r.is_empty()) {
            return Err(ModelError::file(&self.source, "a prompt of no tokens: the first response token has nothing to condition on"));
        }
        let pairs: Vec<(&[u32], &[u32])> = items.iter().map(|(p, r)| (p.as_slice(), r.as_slice())).collect();
        let Some(lp) = response_token_logprobs(&self.net, &pairs, self.pad_id()) else {
            return Ok(vec![Vec::new(); items.len()]);
        };
        let lp: Vec<f32> = lp.into_data().convert::<f32>().try_to_vec().expect("floats");
        let mut out = Vec::with_capacity(items.len());
        let mut at = 0;
        for (_, r) in &pairs {
            out.push(lp[at..at + r.len()].to_vec());
            at += r.len();
        }
        Ok(out)
    }

    /// Generates one continuation per request, `batch_size` requests at a time (sorted by prompt
    /// length, so little padding), results in request order. Request k samples from its own
    /// stream (`seed`), so a result does not depend on the batch it ran in. `progress` gets the
    /// number of tokens each step produced.
    pub fn generate(&self, requests: &[GenRequest], sampling: &Sampling, batch_size: usize, progress: &mut dyn FnMut(usize)) -> Result<Vec<Generation>, ModelError> {
        self.generate_with(requests, None, sampling, batch_size, progress)
    }

    /// As [`generate`](Self::generate), decoding with DeRa's mixed logits: this model is the
    /// reference, `realign.aligned` the aligned one (same tokenizer and vocabulary), request k
    /// with λ = `realign.lambdas[k]`. Both models run on the same padded batch, each with its own
    /// KV cache. Each generation carries log-probs under the reference and under π_λ.
    pub fn generate_realigned(&self, requests: &[GenRequest], realign: &Realign, sampling: &Sampling, batch_size: usize, progress: &mut dyn FnMut(usize)) -> Result<Vec<Generation>, ModelError> {
        let a = realign.aligned;
        if realign.lambdas.len() != requests.len() {
            return Err(ModelError::file(&self.source, format!("DeRa: {} λ values for {} requests", realign.lambdas.len(), requests.len())));
        }
        if let Some(l) = realign.lambdas.iter().find(|l| !l.is_finite()) {
            return Err(ModelError::file(&self.source, format!("DeRa: λ = {l} is not a finite number")));
        }
        let (v_ref, v_al) = (self.config.vocab_size, a.config.vocab_size);
        let (t_ref, t_al) = (self.tokenizer.get_vocab_size(true), a.tokenizer.get_vocab_size(true));
        if v_ref != v_al || t_ref != t_al || self.stop_ids != a.stop_ids {
            return Err(ModelError::file(
                &a.source,
                format!(
                    "DeRa needs the aligned model to share the reference's vocabulary: vocab_size {v_al} vs {v_ref}, tokenizer {t_al} vs {t_ref} tokens, stop ids {:?} vs {:?} ({})",
                    a.stop_ids,
                    self.stop_ids,
                    self.source.display()
                ),
            ));
        }
        self.generate_with(requests, Some(realign), sampling, batch_size, progress)
    }

    fn generate_with(&self, requests: &[GenRequest], realign: Option<&Realign>, sampling: &Sampling, batch_size: usize, progress: &mut dyn FnMut(usize)) -> Result<Vec<Generation>, ModelError> {
        sampling.validate().map_err(|m| ModelError::file(&self.source, m))?;
        if let Some(k) = requests.iter().position(|r| r.prompt.is_empty()) {
            return Err(ModelError::file(&self.source, format!("request {k}: a prompt of no tokens")));
        }
        let mut order: Vec<usize> = (0..requests.len()).collect();
        order.sort_by_key(|&i| requests[i].prompt.len());
        let mut out: Vec<Option<Generation>> = vec![None; requests.len()];
        for chunk in order.chunks(batch_size.max(1)) {
            let reqs: Vec<&GenRequest> = chunk.iter().map(|&i| &requests[i]).collect();
            let mix = realign.map(|r| (r.aligned, chunk.iter().map(|&i| r.lambdas[i]).collect::<Vec<f64>>()));
            for (i, g) in chunk.iter().zip(self.generate_batch(&reqs, mix.as_ref().map(|(a, l)| (*a, l.as_slice())), sampling, progress)?) {
                out[*i] = Some(g);
            }
        }
        Ok(out.into_iter().map(|g| g.expect("every request was generated")).collect())
    }

    /// One padded batch; with `mix` = (aligned model, λ per request), DeRa's mixed logits.
    fn generate_batch(&self, reqs: &[&GenRequest], mix: Option<(&CausalLm, &[f64])>, sampling: &Sampling, progress: &mut dyn FnMut(usize)) -> Result<Vec<Generation>, ModelError> {
        let device = self.device();
        let batch = reqs.len();
        let longest = reqs.iter().map(|r| r.prompt.len()).max().unwrap_or(1);
        let (mut ids, mut key_mask) = (Vec::with_capacity(batch * longest), Vec::with_capacity(batch * longest));
        for r in reqs {
            let pad = longest - r.prompt.len();
            ids.extend(std::iter::repeat_n(self.pad_id() as i64, pad));
            ids.extend(r.prompt.iter().map(|&t| t as i64));
            key_mask.extend(std::iter::repeat_n(false, pad));
            key_mask.extend(std::iter::repeat_n(true, r.prompt.len()));
        }
        let mut rngs: Vec<rand_chacha::ChaCha8Rng> = reqs.iter().map(|r| rand_chacha::ChaCha8Rng::seed_from_u64(r.seed)).collect();
        let mut results: Vec<Generation> = (0..batch)
            .map(|_| Generation { ids: Vec::new(), text: String::new(), token_logprobs: Vec::new(), realigned_logprobs: mix.map(|_| Vec::new()), finish: Finish::Length })
            .collect();
        // alive[slot] = the request (row of `results`) the cache's row `slot` belongs to
        let mut alive: Vec<usize> = (0..batch).collect();
        let mut cache = KvCache::default();
        let mut aligned_cache = KvCache::default();
        let mut input = Tensor::<2, Int>::from_data(TensorData::new(ids, [batch, longest]), &device);
        let mut seq = longest;
        for _ in 0..sampling.max_new_tokens {
            let n = alive.len();
            let pos = Positions::counting_real(&key_mask, n, seq);
            let last_row = |logits: Tensor<3>| -> (Vec<f32>, usize) {
                let vocab = logits.dims()[2];
                (logits.narrow(1, seq - 1, 1).reshape([n, vocab]).into_data().convert::<f32>().try_to_vec().expect("floats"), vocab)
            };
            let aligned_last = mix.map(|(a, _)| last_row(a.net.forward(input.clone(), &pos, Some(&mut aligned_cache))).0);
            let (last, vocab) = last_row(self.net.forward(input, &pos, Some(&mut cache)));
            let mut mixed = Vec::new();
            let mut next = Vec::with_capacity(n);
            let mut keep = Vec::with_capacity(n);
            for (slot, &row) in alive.iter().enumerate() {
                let l = &last[slot * vocab..(slot + 1) * vocab];
                // DeRa: λ·h_aligned + (1 − λ)·h_ref, in f32 as the logits are.
                let policy = match (&aligned_last, mix) {
                    (Some(al), Some((_, lambdas))) => {
                        let lam = lambdas[row] as f32;
                        let a = &al[slot * vocab..(slot + 1) * vocab];
                        mixed.clear();
                        mixed.extend(a.iter().zip(l).map(|(&x, &y)| lam * x + (1.0 - lam) * y));
                        mixed.as_slice()
                    }
                    _ => l,
                };
                let token = pick(policy, sampling, &mut rngs[row]);
                let res = &mut results[row];
                if !sampling.ignore_eos && self.stop_ids.contains(&token) {
                    res.finish = Finish::Eos;
                    continue;
                }
                res.ids.push(token);
                res.token_logprobs.push(log_prob(l, token));
                if let Some(r) = res.realigned_logprobs.as_mut() {
                    r.push(log_prob(policy, token));
                }
                if !sampling.stop_strings.is_empty() {
                    let text = self.decode(&res.ids)?;
                    if let Some(cut) = sampling.stop_strings.iter().filter_map(|s| text.find(s.as_str())).min() {
                        // The token completing the stop string is not kept; the text ends before it.
                        res.ids.pop();
                        res.token_logprobs.pop();
                        if let Some(r) = res.realigned_logprobs.as_mut() {
                            r.pop();
                        }
                        res.text = text[..cut].to_string();
                        res.finish = Finish::Stop;
                        continue;
                    }
                }
                next.push(token as i64);
                keep.push(slot);
            }
            progress(n);
            if keep.is_empty() {
                break;
            }
            // Rows that finished leave the batch (and the cache); the others get their new token.
            let keys = key_mask.len() / n;
            let mut mask = Vec::with_capacity(keep.len() * (keys + 1));
            for &slot in &keep {
                mask.extend_from_slice(&key_mask[slot * keys..(slot + 1) * keys]);
                mask.push(true);
            }
            key_mask = mask;
            if keep.len() < n {
                cache.select_rows(&keep);
                if mix.is_some() {
                    aligned_cache.select_rows(&keep);
                }
            }
            alive = keep.iter().map(|&slot| alive[slot]).collect();
            input = Tensor::<2, Int>::from_data(TensorData::new(next, [alive.len(), 1]), &device);
            seq = 1;
        }
        for res in &mut results {
            if res.finish != Finish::Stop {
                res.text = self.decode(&res.ids)?;
            }
        }
        Ok(results)
    }
}

/// log π(r_t | p, r_<t) of every response token of every (prompt, response) item, flattened in
/// item order: one right-padded forward of the joined sequences, log-softmax (f32) at the
/// positions that predict response tokens. On an autodiff device the result carries gradients
/// (DPO's policy log-probs). None when no item has a response token. Every prompt with a
/// response must have at least one token.
pub fn response_token_logprobs(net: &LlamaLm, items: &[(&[u32], &[u32])], pad_id: u32) -> Option<Tensor<1>> {
    if items.iter().all(|(_, r)| r.is_empty()) {
        return None;
    }
    let device = net.model.embed_tokens.weight.val().device();
    let batch = items.len();
    let seq = items.iter().map(|(p, r)| p.len() + r.len()).max().unwrap_or(1).max(1);
    let (mut ids, mut mask) = (Vec::with_capacity(batch * seq), Vec::with_capacity(batch * seq));
    for (p, r) in items {
        let n = p.len() + r.len();
        ids.extend(p.iter().chain(r.iter()).map(|&t| t as i64));
        ids.extend(std::iter::repeat_n(pad_id as i64, seq - n));
        mask.extend(std::iter::repeat_n(true, n));
        mask.extend(std::iter::repeat_n(false, seq - n));
    }
    let t_ids = Tensor::<2, Int>::from_data(TensorData::new(ids, [batch, seq]), &device);
    let hidden = net.model.forward_hidden(t_ids, &Positions::from_start(&mask, batch, seq), None, &mut None);
    let d = hidden.dims()[2];
    // The hidden states that predict each response token: positions prompt_len−1 .. n−2.
    let mut spans = Vec::new();
    let mut targets = Vec::new();
    for (row, (p, r)) in items.iter().enumerate() {
        if !r.is_empty() {
            spans.push(hidden.clone().narrow(0, row, 1).narrow(1, p.len() - 1, r.len()).reshape([r.len(), d]));
            targets.extend(r.iter().map(|&t| t as i64));
        }
    }
    let n = targets.len();
    let x = Tensor::cat(spans, 0).reshape([1, n, d]);
    let logits = net.logits(x);
    let vocab = logits.dims()[2];
    let idx = Tensor::<2, Int>::from_data(TensorData::new(targets, [n, 1]), &device);
    Some(log_softmax(logits.reshape([n, vocab]), 1).gather(1, idx).reshape([n]))
}

/// log-softmax of `logits` at `token`, in f64 for the sum.
fn log_prob(logits: &[f32], token: u32) -> f32 {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let lse = max as f64 + logits.iter().map(|&x| ((x - max) as f64).exp()).sum::<f64>().ln();
    (logits[token as usize] as f64 - lse) as f32
}

/// The next token: argmax at temperature 0 (the first maximum, as torch.argmax), else a draw
/// from softmax(logits / T) restricted by top-k, then top-p, then min-p (transformers' order).
/// Only top-p needs the candidates sorted; top-k is a partial selection, so plain temperature
/// sampling over a 49k vocabulary costs one pass.
fn pick(logits: &[f32], s: &Sampling, rng: &mut impl Rng) -> u32 {
    if s.temperature == 0.0 {
        let mut best = 0;
        for (i, &x) in logits.iter().enumerate() {
            if x > logits[best] {
                best = i;
            }
        }
        return best as u32;
    }
    let t = s.temperature;
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    // (token, unnormalised probability); the most likely token has weight 1
    let mut probs: Vec<(u32, f64)> = logits.iter().enumerate().map(|(i, &x)| (i as u32, ((x as f64 - max) / t).exp())).collect();
    let more_likely = |a: &(u32, f64), b: &(u32, f64)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
    if s.top_k > 0 && s.top_k < probs.len() {
        probs.select_nth_unstable_by(s.top_k - 1, more_likely);
        probs.truncate(s.top_k);
    }
    if s.top_p < 1.0 {
        probs.sort_by(more_likely);
        let total: f64 = probs.iter().map(|p| p.1).sum();
        let mut acc = 0.0;
        let mut keep = probs.len();
        for (i, p) in probs.iter().enumerate() {
            acc += p.1 / total;
            if acc >= s.top_p {
                keep = i + 1;
                break;
            }
        }
        probs.truncate(keep);
    }
    if s.min_p > 0.0 {
        let floor = s.min_p; // relative to the most likely token's weight, 1
        probs.retain(|p| p.1 >= floor);
    }
    let total: f64 = probs.iter().map(|p| p.1).sum();
    let mut u = rng.random::<f64>() * total;
    for &(token, p) in &probs {
        if u < p {
            return token;
        }
        u -= p;
    }
    probs.last().expect("at least the most likely token is kept").0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_keep_what_each_rule_says() {
        let logits: Vec<f32> = [0.5f64, 0.3, 0.15, 0.05].iter().map(|p| p.ln() as f32).collect();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let draws = |s: &Sampling, rng: &mut rand_chacha::ChaCha8Rng| {
            let mut seen = [0usize; 4];
            for _ in 0..4000 {
                seen[pick(&logits, s, rng) as usize] += 1;
            }
            seen
        };
        let base = Sampling { temperature: 1.0, ..Sampling::default() };
        let all = draws(&base, &mut rng);
        assert!(all.iter().all(|&c| c > 0), "{all:?}");
        assert!((all[0] as f64 / 4000.0 - 0.5).abs() < 0.03, "{all:?}");
        let k2 = draws(&Sampling { top_k: 2, ..base.clone() }, &mut rng);
        assert_eq!((k2[2], k2[3]), (0, 0), "{k2:?}");
        assert!((k2[0] as f64 / 4000.0 - 0.5 / 0.8).abs() < 0.03, "{k2:?}");
        // top-p 0.8: 0.5 + 0.3 reaches it, the rest are cut
        let p = draws(&Sampling { top_p: 0.8, ..base.clone() }, &mut rng);
        assert_eq!((p[2], p[3]), (0, 0), "{p:?}");
        // min-p 0.25: keeps p ≥ 0.125, i.e. the first three
        let m = draws(&Sampling { min_p: 0.25, ..base.clone() }, &mut rng);
        assert!(m[2] > 0 && m[3] == 0, "{m:?}");
        assert_eq!(pick(&logits, &Sampling::default(), &mut rng), 0, "greedy");
    }

    #[test]
    fn log_prob_is_the_log_softmax() {
        let logits = [1.0f32, 2.0, 3.0];
        let z: f64 = logits.iter().map(|&x| (x as f64).exp()).sum();
        assert!((log_prob(&logits, 1) as f64 - (2.0 - z.ln())).abs() < 1e-6);
    }
}
