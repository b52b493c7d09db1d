//! A reward model as a folder: HF `config.json` + `model.safetensors` + `tokenizer.json`. Loads
//! strictly (the family chosen by `model_type`), scores texts (length-bucketed batches, results in
//! input order), and writes itself back as an HF folder transformers loads as the family's
//! sequence classifier (`BertForSequenceClassification`).

use crate::bert::BertRewardModel;
use crate::llama::LlamaRewardModel;
use crate::hf::{weights_sha256, write_safetensors, TensorMap};
use crate::reward_net::{LoadNotes, ModelConfig, RewardNet, RewardNetwork};
use crate::tokenizer::RmTokenizer;
use crate::ModelError;
use burn::module::Module;
use burn::tensor::Device;
use std::path::{Path, PathBuf};

/// Files copied verbatim from the source folder into every checkpoint, when present, so the
/// tokenizer round-trips exactly.
const TOKENIZER_FILES: [&str; 4] = ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt"];

pub struct RewardModel {
    pub config: ModelConfig,
    pub net: RewardNetwork,
    pub tokenizer: RmTokenizer,
    /// Folder (or GGUF file) it was loaded from.
    pub source_dir: PathBuf,
    /// Tokenizer files written into every checkpoint, read when the model was loaded (byte for
    /// byte from an HF folder; rebuilt from the metadata for a GGUF).
    pub tokenizer_files: Vec<(String, Vec<u8>)>,
    /// sha256 of the weights file it was loaded from.
    pub weights_sha256: String,
    /// Parameters initialised rather than loaded (a backbone's new head), tensors ignored.
    pub notes: LoadNotes,
}

#[derive(Debug, Clone)]
pub struct ScoreOptions {
    /// Texts per forward pass. Batches are formed from texts of similar length, so padding is
    /// small; rewards do not depend on it.
    pub batch_size: usize,
    /// Threads scoring batches at once (the flex backend keeps about one core busy per thread).
    pub threads: usize,
}

impl Default for ScoreOptions {
    fn default() -> Self {
        Self { batch_size: 32, threads: 2 }
    }
}

impl RewardModel {
    /// Loads `dir` (config.json, model.safetensors, tokenizer.json) onto `device`.
    pub fn load(dir: &Path, max_length: usize, device: &Device) -> Result<Self, ModelError> {
        Self::load_with_dropout(dir, max_length, device, None)
    }

    /// As [`RewardModel::load`], with every dropout probability (hidden, attention, classifier)
    /// replaced by `dropout` when given: a WARM diversity axis.
    /// `dir` may also be a `.gguf` file (a Llama-family causal LM: the reward head is new).
    pub fn load_with_dropout(dir: &Path, max_length: usize, device: &Device, dropout: Option<f64>) -> Result<Self, ModelError> {
        if dir.is_file() && dir.extension().is_some_and(|e| e == "gguf") {
            let g = crate::gguf::open_model(dir)?;
            let mut config = ModelConfig::Llama(g.config);
            if let Some(p) = dropout {
                config.set_dropout(p);
            }
            let files = vec![("tokenizer.json".to_string(), json_bytes(&g.tokenizer_json)), ("tokenizer_config.json".to_string(), json_bytes(&g.tokenizer_config))];
            return Self::build(dir, config, g.tensors, files, weights_sha256(dir)?, max_length, device);
        }
        if !dir.is_dir() {
            return Err(ModelError::file(dir, "not a model folder or .gguf file (it does not exist or is not a directory)"));
        }
        let mut config = ModelConfig::from_file(&dir.join("config.json"))?;
        if let Some(p) = dropout {
            config.set_dropout(p);
        }
        let tensors = TensorMap::read_dir(dir)?;
        let weights_sha256 = weights_sha256(dir)?;
        Self::build(dir, config, tensors, tokenizer_files(dir)?, weights_sha256, max_length, device)
    }

    /// A model from `dir`'s config and tokenizer with weights given in memory (HF names and
    /// layout), e.g. a point on the line between two checkpoints.
    pub fn load_from_rows(dir: &Path, rows: Vec<(String, Vec<usize>, Vec<f32>)>, max_length: usize, device: &Device) -> Result<Self, ModelError> {
        let config = ModelConfig::from_file(&dir.join("config.json"))?;
        let tensors = TensorMap::from_rows(&dir.join("model.safetensors"), rows);
        Self::build(dir, config, tensors, tokenizer_files(dir)?, String::new(), max_length, device)
    }

    #[allow(clippy::too_many_arguments)]
    fn build(
        dir: &Path,
        config: ModelConfig,
        mut tensors: TensorMap,
        tokenizer_files: Vec<(String, Vec<u8>)>,
        weights_sha256: String,
        max_length: usize,
        device: &Device,
    ) -> Result<Self, ModelError> {
        let (net, notes) = match &config {
            ModelConfig::Bert(c) => {
                let (net, notes) = BertRewardModel::load(c, &mut tensors, device);
                (RewardNetwork::Bert(net), notes)
            }
            ModelConfig::Llama(c) => {
                let pad_id = c.pad_token_id.expect("LlamaConfig::from_map resolves the pad id");
                let (net, notes) = LlamaRewardModel::load(c, pad_id, &mut tensors, device);
                (RewardNetwork::Llama(net), notes)
            }
        };
        tensors.finish()?;
        let max_length = max_length.min(config.max_position_embeddings());
        let tokenizer_json = tokenizer_files
            .iter()
            .find(|(n, _)| n == "tokenizer.json")
            .ok_or_else(|| ModelError::file(dir.join("tokenizer.json"), "missing: a reward model needs its tokenizer"))?;
        let tokenizer = RmTokenizer::from_bytes(&dir.join("tokenizer.json"), &tokenizer_json.1, max_length, config.pad_token_id())?;
        Ok(Self { config, net, tokenizer, source_dir: dir.to_path_buf(), tokenizer_files, weights_sha256, notes })
    }

    /// A model whose weights are `net` (a training state), with this model's config and tokenizer.
    pub fn with_net(&self, net: RewardNetwork) -> Self {
        Self {
            config: self.config.clone(),
            net,
            tokenizer: self.tokenizer.clone(),
            source_dir: self.source_dir.clone(),
            tokenizer_files: self.tokenizer_files.clone(),
            weights_sha256: String::new(),
            notes: LoadNotes::default(),
        }
    }

    /// Rewards of `texts` in their order, with the current weights in inference mode.
    pub fn score_texts(&self, texts: &[&str], opts: &ScoreOptions) -> Result<Vec<f32>, ModelError> {
        Ok(self.score_texts_counting(texts, opts)?.0)
    }

    /// As [`score_texts`](Self::score_texts), also counting the texts longer than `max_length`
    /// tokens, which were truncated (cut from the right, as transformers does; TRL's
    /// RewardTrainer drops such pairs from training instead).
    pub fn score_texts_counting(&self, texts: &[&str], opts: &ScoreOptions) -> Result<(Vec<f32>, usize), ModelError> {
        let (rows, truncated) = self.map_batches(texts, opts, |net, ids, mask| {
            let r = net.forward(ids, mask).into_data().convert::<f32>().try_to_vec::<f32>().expect("rewards are floats");
            r.into_iter().map(|x| vec![x]).collect()
        })?;
        Ok((rows.into_iter().map(|r| r[0]).collect(), truncated))
    }

    /// Sentence embeddings of `texts` in their order: the last hidden states averaged over the
    /// real tokens (attention mask), then L2-normalised, as sentence-transformers' MiniLM
    /// (Pooling mean + Normalize) computes them. BERT encoders only; the head is not used, so a
    /// bare backbone (a new, random head) is fine. Also counts the texts cut at `max_length`.
    pub fn embed_texts(&self, texts: &[&str], opts: &ScoreOptions) -> Result<(Vec<Vec<f32>>, usize), ModelError> {
        if !matches!(self.net, RewardNetwork::Bert(_)) {
            return Err(ModelError::file(&self.source_dir, "sentence embeddings need a BERT encoder (e.g. all-MiniLM-L6-v2); this is a decoder"));
        }
        self.map_batches(texts, opts, |net, ids, mask| {
            let RewardNetwork::Bert(bert) = net else { unreachable!("checked above") };
            let [batch, seq] = ids.dims();
            let weights = mask.clone().float().reshape([batch, seq, 1]);
            let hidden = bert.encode(ids, mask);
            let d = hidden.dims()[2];
            let summed = (hidden * weights.clone()).sum_dim(1).reshape([batch, d]);
            let counts = weights.sum_dim(1).reshape([batch, 1]).clamp_min(1e-9);
            let mean = summed / counts;
            let norm = mean.clone().powi_scalar(2).sum_dim(1).sqrt().clamp_min(1e-12);
            let unit = (mean / norm).into_data().convert::<f32>().try_to_vec::<f32>().expect("embeddings are floats");
            unit.chunks(d).map(<[f32]>::to_vec).collect()
        })
    }

    /// Runs `f` (inference mode) over `texts` in length-sorted batches of `opts.batch_size` on
    /// `opts.threads` threads; `f` returns one row per text of its batch. Rows come back in input
    /// order, with the number of texts truncated at `max_length`.
    fn map_batches<F>(&self, texts: &[&str], opts: &ScoreOptions, f: F) -> Result<(Vec<Vec<f32>>, usize), ModelError>
    where
        F: Fn(&RewardNetwork, burn::tensor::Tensor<2, burn::tensor::Int>, burn::tensor::Tensor<2, burn::tensor::Bool>) -> Vec<Vec<f32>> + Sync,
    {
        let net = self.net.valid();
        let (ids, truncated) = self.tokenizer.encode_all_counting(texts)?;
        let mut order: Vec<usize> = (0..texts.len()).collect();
        order.sort_by_key(|&i| ids[i].len());
        let chunks: Vec<&[usize]> = order.chunks(opts.batch_size.max(1)).collect();
        let threads = opts.threads.clamp(1, chunks.len().max(1));
        let device = net.devices().into_iter().next().expect("a model has parameters on a device");
        // Thread t runs chunks t, t + threads, ...; every row lands in its input slot.
        let done: Vec<Vec<(usize, Vec<f32>)>> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..threads)
                .map(|t| {
                    let (net, chunks, ids, device, f) = (&net, &chunks, &ids, &device, &f);
                    scope.spawn(move || {
                        let mut out = Vec::new();
                        for chunk in chunks.iter().skip(t).step_by(threads) {
                            let seqs: Vec<&[u32]> = chunk.iter().map(|&i| ids[i].as_slice()).collect();
                            let (t_ids, t_mask) = self.tokenizer.collate(&seqs).to_tensors(device);
                            out.extend(chunk.iter().copied().zip(f(net, t_ids, t_mask)));
                        }
                        out
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().expect("a batch thread panicked")).collect()
        });
        let mut rows = vec![Vec::new(); texts.len()];
        for (i, r) in done.into_iter().flatten() {
            rows[i] = r;
        }
        Ok((rows, truncated))
    }

    /// Writes the HF folder (config.json, model.safetensors, tokenizer files) into `dir`
    /// (which must exist; callers write into an `AtomicDir`).
    pub fn save_hf(&self, dir: &Path) -> Result<(), ModelError> {
        write_safetensors(&dir.join("model.safetensors"), &self.net.hf_tensors())?;
        rmtrain_core::write_json_atomic(&dir.join("config.json"), &self.config.to_checkpoint_json())?;
        for (name, bytes) in &self.tokenizer_files {
            rmtrain_core::write_atomic(&dir.join(name), bytes)?;
        }
        Ok(())
    }
}

/// The tokenizer files of an HF folder that exist ([`TOKENIZER_FILES`]), read byte for byte.
fn tokenizer_files(dir: &Path) -> Result<Vec<(String, Vec<u8>)>, ModelError> {
    let mut files = Vec::new();
    for name in TOKENIZER_FILES {
        let src = dir.join(name);
        if src.is_file() {
            files.push((name.to_string(), std::fs::read(&src).map_err(|e| ModelError::file(&src, e))?));
        }
    }
    Ok(files)
}

fn json_bytes(v: &serde_json::Value) -> Vec<u8> {
    serde_json::to_vec_pretty(v).expect("a JSON value serialises")
}
