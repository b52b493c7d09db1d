//! Llama-family decoders (Llama, Mistral, Qwen2, SmolLM): RMSNorm, rotary position embeddings
//! (the half-split `rotate_half` form of transformers), grouped-query attention, SwiGLU, tied or
//! untied embeddings, optional attention biases. Two heads on one backbone:
//! - [`LlamaRewardModel`]: `LlamaForSequenceClassification` with `num_labels = 1` (`score.weight`,
//!   no bias), the reward read at the rightmost token that is not the pad id;
//! - [`LlamaLm`]: `LlamaForCausalLM` (`lm_head.weight`, or the embedding matrix when tied), for
//!   log-probs and generation with a key/value cache.
//!
//! Reference: Touvron et al. 2023 (arXiv 2302.13971); transformers `models/llama/modeling_llama.py`
//! (LlamaRMSNorm, LlamaRotaryEmbedding, `repeat_kv`, LlamaForSequenceClassification's pooling).
//!
//! HF key map (prefix `model.` in both heads' checkpoints; a bare `LlamaModel` has none):
//! | HF name                                              | here                               |
//! |------------------------------------------------------|------------------------------------|
//! | model.embed_tokens.weight                            | model.embed_tokens.weight          |
//! | model.layers.N.input_layernorm.weight                | layers[N].input_norm.gamma         |
//! | model.layers.N.self_attn.{q,k,v,o}_proj.{weight,bias} | layers[N].attention.{q,k,v,o}     |
//! | model.layers.N.post_attention_layernorm.weight       | layers[N].post_attention_norm.gamma |
//! | model.layers.N.mlp.{gate,up,down}_proj.{weight,bias} | layers[N].mlp.{gate,up,down}       |
//! | model.norm.weight                                    | model.norm.gamma                   |
//! | score.weight / lm_head.weight                        | score / lm_head                    |

pub mod config;

pub use config::LlamaConfig;

use crate::dropout::DropoutRng;
use crate::hf::TensorMap;
use crate::params::{push_linear, ParamBuilder};
use crate::reward_net::{HfParam, LoadNotes, Pooling, RewardNet};
use burn::module::Module;
use burn::nn::{Embedding, Linear, RmsNorm, RmsNormConfig};
use burn::tensor::activation::{silu, softmax};
use burn::tensor::{Bool, Device, Int, Tensor, TensorData};
// Linear layers: libtorch's addmm on tch, OpenBLAS on flex when loaded, else Burn's ops.
use crate::fused::linear;
use rmtrain_blas::matmul4;

#[derive(Module, Debug)]
pub struct LlamaAttention {
    pub q: Linear,
    pub k: Linear,
    pub v: Linear,
    pub o: Linear,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    pub probs_dropout: f64,
}

#[derive(Module, Debug)]
pub struct LlamaMlp {
    pub gate: Linear,
    pub up: Linear,
    pub down: Linear,
}

#[derive(Module, Debug)]
pub struct LlamaLayer {
    pub input_norm: RmsNorm,
    pub attention: LlamaAttention,
    pub post_attention_norm: RmsNorm,
    pub mlp: LlamaMlp,
}

/// The decoder stack without a head (`LlamaModel`).
#[derive(Module, Debug)]
pub struct LlamaModel {
    pub embed_tokens: Embedding,
    pub layers: Vec<LlamaLayer>,
    pub norm: RmsNorm,
    pub rope_theta: f64,
    /// Mistral's sliding attention window, when the config sets one.
    pub window: Option<usize>,
}

/// Keys and values (after RoPE) of every position seen so far, per layer: [batch, kv_heads, T, head_dim].
#[derive(Debug, Clone, Default)]
pub struct KvCache {
    layers: Vec<Option<(Tensor<4>, Tensor<4>)>>,
}

impl KvCache {
    /// Keeps only the rows `keep` of the batch (finished sequences dropped from a generation).
    pub fn select_rows(&mut self, keep: &[usize]) {
        for slot in self.layers.iter_mut().flatten() {
            let device = slot.0.device();
            let idx = Tensor::<1, Int>::from_data(TensorData::new(keep.iter().map(|&i| i as i64).collect::<Vec<_>>(), [keep.len()]), &device);
            *slot = (slot.0.clone().select(0, idx.clone()), slot.1.clone().select(0, idx));
        }
    }
}

/// Where the new tokens sit: their positions (for RoPE) and which keys each batch row may see.
/// Built on the host: a decoder's masks depend on padding and on the cache length.
#[derive(Debug, Clone)]
pub struct Positions {
    pub batch: usize,
    /// New tokens per row (the forward's sequence length).
    pub seq: usize,
    /// [batch, seq] RoPE position of each new token.
    pub positions: Vec<usize>,
    /// [batch, keys] whether each key (cached ones first, then the new tokens) is a real token.
    pub key_mask: Vec<bool>,
}

impl Positions {
    /// Right-padded (or unpadded) sequences read from position 0: positions 0..seq, as transformers
    /// uses when no position ids are given. `mask` [batch, seq], true = real token.
    pub fn from_start(mask: &[bool], batch: usize, seq: usize) -> Self {
        Self { batch, seq, positions: (0..batch).flat_map(|_| 0..seq).collect(), key_mask: mask.to_vec() }
    }

    /// Positions that count real tokens only (what `generate` uses with left padding):
    /// position = number of real tokens before it in the row, so a left-padded row is computed as
    /// if unpadded. `key_mask` covers every key (cached and new), the new ones last.
    pub fn counting_real(key_mask: &[bool], batch: usize, seq: usize) -> Self {
        let keys = key_mask.len() / batch.max(1);
        let mut positions = Vec::with_capacity(batch * seq);
        for b in 0..batch {
            let row = &key_mask[b * keys..(b + 1) * keys];
            let mut count = row[..keys - seq].iter().filter(|&&m| m).count();
            for &real in &row[keys - seq..] {
                positions.push(count); // a pad token's position is never attended: any value does
                count += usize::from(real);
            }
        }
        Self { batch, seq, positions, key_mask: key_mask.to_vec() }
    }

    fn keys(&self) -> usize {
        self.key_mask.len() / self.batch.max(1)
    }

    /// Additive attention bias [batch, 1, seq, keys]: 0 where a query may attend a key (a real key
    /// at or before it, within the window), f32's lowest value elsewhere (weight exactly 0 after
    /// softmax, as transformers' masks).
    fn bias(&self, window: Option<usize>, device: &Device) -> Tensor<4> {
        let (b, s, t) = (self.batch, self.seq, self.keys());
        let past = t - s;
        let mut v = vec![f32::MIN; b * s * t];
        for r in 0..b {
            for i in 0..s {
                let q = past + i;
                let lo = window.map_or(0, |w| (q + 1).saturating_sub(w));
                for j in lo..=q {
                    if self.key_mask[r * t + j] {
                        v[(r * s + i) * t + j] = 0.0;
                    }
                }
            }
        }
        Tensor::from_data(TensorData::new(v, [b, 1, s, t]), device)
    }

    /// RoPE tables cos, sin: [batch, 1, seq, head_dim], `rotate_half` layout (frequencies repeated
    /// for both halves). inv_freq = θ^(−2i/d) in f32 as transformers computes it. Each distinct
    /// position's row is computed once (every row of a training batch has the same positions).
    fn rope(&self, theta: f64, head_dim: usize, device: &Device) -> (Tensor<4>, Tensor<4>) {
        let half = head_dim / 2;
        let inv_freq: Vec<f32> = (0..half).map(|i| 1.0 / (theta as f32).powf((2 * i) as f32 / head_dim as f32)).collect();
        let positions = self.positions.iter().max().map_or(0, |&p| p + 1);
        // [position, head_dim] tables
        let (mut cos_rows, mut sin_rows) = (Vec::with_capacity(positions * head_dim), Vec::with_capacity(positions * head_dim));
        for p in 0..positions {
            let angles: Vec<f32> = inv_freq.iter().map(|f| p as f32 * f).collect();
            for _ in 0..2 {
                cos_rows.extend(angles.iter().map(|a| a.cos()));
                sin_rows.extend(angles.iter().map(|a| a.sin()));
            }
        }
        let gather = |rows: &[f32]| -> Vec<f32> { self.positions.iter().flat_map(|&p| rows[p * head_dim..(p + 1) * head_dim].iter().copied()).collect() };
        let shape = [self.batch, 1, self.seq, head_dim];
        (Tensor::from_data(TensorData::new(gather(&cos_rows), shape), device), Tensor::from_data(TensorData::new(gather(&sin_rows), shape), device))
    }
}

/// What every layer of one forward shares.
struct Context {
    cos: Tensor<4>,
    sin: Tensor<4>,
    bias: Tensor<4>,
}

/// x·cos + rotate_half(x)·sin, rotate_half(x) = (−x₂, x₁) for the two halves of the head dim.
fn apply_rope(x: Tensor<4>, cos: &Tensor<4>, sin: &Tensor<4>) -> Tensor<4> {
    let half = x.dims()[3] / 2;
    let rotated = Tensor::cat(vec![x.clone().narrow(3, half, half).neg(), x.clone().narrow(3, 0, half)], 3);
    x * cos.clone() + rotated * sin.clone()
}

impl LlamaAttention {
    fn forward(&self, x: Tensor<3>, ctx: &Context, cache: Option<&mut Option<(Tensor<4>, Tensor<4>)>>, rng: &mut Option<&mut DropoutRng>) -> Tensor<3> {
        let [b, s, _] = x.dims();
        let (h, kv, hd) = (self.num_heads, self.num_kv_heads, self.head_dim);
        let split = |t: Tensor<3>, heads: usize| t.reshape([b, s, heads, hd]).swap_dims(1, 2);
        let q = apply_rope(split(linear(&self.q, x.clone()), h), &ctx.cos, &ctx.sin);
        let k = apply_rope(split(linear(&self.k, x.clone()), kv), &ctx.cos, &ctx.sin);
        let v = split(linear(&self.v, x), kv);
        let (k, v) = match cache {
            Some(slot) => {
                let (k, v) = match slot.take() {
                    Some((pk, pv)) => (Tensor::cat(vec![pk, k], 2), Tensor::cat(vec![pv, v], 2)),
                    None => (k, v),
                };
                *slot = Some((k.clone(), v.clone()));
                (k, v)
            }
            None => (k, v),
        };
        let t = k.dims()[2];
        // Grouped-query attention without copying K/V per head: the `rep` query heads of one
        // key/value head are consecutive (transformers' repeat_kv order), so [b, h, s, hd] viewed
        // as [b, kv, rep·s, hd] meets each group's keys in one product.
        let rep = h / kv;
        let scores = matmul4(q.reshape([b, kv, rep * s, hd]), k.swap_dims(2, 3)).reshape([b, h, s, t]);
        let probs = softmax(scores.div_scalar((hd as f64).sqrt()) + ctx.bias.clone(), 3);
        let probs = match rng.as_mut() {
            Some(r) => r.apply(probs, self.probs_dropout),
            None => probs,
        };
        let context = matmul4(probs.reshape([b, kv, rep * s, t]), v).reshape([b, h, s, hd]).swap_dims(1, 2).reshape([b, s, h * hd]);
        linear(&self.o, context)
    }
}

impl LlamaLayer {
    fn forward(&self, x: Tensor<3>, ctx: &Context, cache: Option<&mut Option<(Tensor<4>, Tensor<4>)>>, rng: &mut Option<&mut DropoutRng>) -> Tensor<3> {
        let attended = x.clone() + self.attention.forward(self.input_norm.forward(x), ctx, cache, rng);
        let normed = self.post_attention_norm.forward(attended.clone());
        let m = &self.mlp;
        attended + linear(&m.down, silu(linear(&m.gate, normed.clone())) * linear(&m.up, normed))
    }
}

impl LlamaModel {
    /// Final hidden states [batch, seq, d] of `ids` [batch, seq] placed at `pos`. With a cache,
    /// the new keys/values are appended to it and attention also sees the cached ones.
    pub fn forward_hidden(&self, ids: Tensor<2, Int>, pos: &Positions, cache: Option<&mut KvCache>, rng: &mut Option<&mut DropoutRng>) -> Tensor<3> {
        let device = ids.device();
        let head_dim = self.layers.first().map_or(2, |l| l.attention.head_dim);
        let (cos, sin) = pos.rope(self.rope_theta, head_dim, &device);
        let ctx = Context { cos, sin, bias: pos.bias(self.window, &device) };
        let mut x = self.embed_tokens.forward(ids);
        match cache {
            Some(cache) => {
                cache.layers.resize(self.layers.len(), None);
                for (layer, slot) in self.layers.iter().zip(cache.layers.iter_mut()) {
                    x = layer.forward(x, &ctx, Some(slot), rng);
                }
            }
            None => {
                for layer in &self.layers {
                    x = layer.forward(x, &ctx, None, rng);
                }
            }
        }
        self.norm.forward(x)
    }

    /// Loads the backbone's tensors (names under `prefix`, `model.` or none).
    fn load(config: &LlamaConfig, b: &mut ParamBuilder, prefix: &str) -> Self {
        let (d, ff) = (config.hidden_size, config.intermediate_size);
        let (h, kv, hd) = (config.num_attention_heads, config.num_kv_heads(), config.head_dim());
        let norm = |b: &mut ParamBuilder, name: &str| {
            let mut m = RmsNormConfig::new(d).with_epsilon(config.rms_norm_eps).init(b.device);
            m.gamma = b.take(&format!("{name}.weight"), [d]);
            m
        };
        let embed_tokens = b.embedding(&format!("{prefix}embed_tokens.weight"), config.vocab_size, d);
        let layers = (0..config.num_hidden_layers)
            .map(|i| {
                let l = format!("{prefix}layers.{i}");
                let input_norm = norm(b, &format!("{l}.input_layernorm"));
                let a = format!("{l}.self_attn");
                let attention = LlamaAttention {
                    q: b.linear(&format!("{a}.q_proj"), d, h * hd, config.qkv_bias()),
                    k: b.linear(&format!("{a}.k_proj"), d, kv * hd, config.qkv_bias()),
                    v: b.linear(&format!("{a}.v_proj"), d, kv * hd, config.qkv_bias()),
                    o: b.linear(&format!("{a}.o_proj"), h * hd, d, config.o_bias()),
                    num_heads: h,
                    num_kv_heads: kv,
                    head_dim: hd,
                    probs_dropout: config.attention_dropout,
                };
                let post_attention_norm = norm(b, &format!("{l}.post_attention_layernorm"));
                let m = format!("{l}.mlp");
                let mlp = LlamaMlp {
                    gate: b.linear(&format!("{m}.gate_proj"), d, ff, config.mlp_bias),
                    up: b.linear(&format!("{m}.up_proj"), d, ff, config.mlp_bias),
                    down: b.linear(&format!("{m}.down_proj"), ff, d, config.mlp_bias),
                };
                LlamaLayer { input_norm, attention, post_attention_norm, mlp }
            })
            .collect();
        let norm = norm(b, &format!("{prefix}norm"));
        Self { embed_tokens, layers, norm, rope_theta: config.rope_theta, window: config.window() }
    }

    fn hf_params<'a>(&'a self, out: &mut Vec<(String, HfParam<'a>)>) {
        out.push(("model.embed_tokens.weight".into(), HfParam::Matrix(&self.embed_tokens.weight)));
        for (i, layer) in self.layers.iter().enumerate() {
            let l = format!("model.layers.{i}");
            out.push((format!("{l}.input_layernorm.weight"), HfParam::Vector(&layer.input_norm.gamma)));
            let a = &layer.attention;
            for (name, lin) in [("q_proj", &a.q), ("k_proj", &a.k), ("v_proj", &a.v), ("o_proj", &a.o)] {
                push_linear(out, &format!("{l}.self_attn.{name}"), lin);
            }
            out.push((format!("{l}.post_attention_layernorm.weight"), HfParam::Vector(&layer.post_attention_norm.gamma)));
            let m = &layer.mlp;
            for (name, lin) in [("gate_proj", &m.gate), ("up_proj", &m.up), ("down_proj", &m.down)] {
                push_linear(out, &format!("{l}.mlp.{name}"), lin);
            }
        }
        out.push(("model.norm.weight".into(), HfParam::Vector(&self.norm.gamma)));
    }
}

/// The prefix of the backbone's tensor names in this file: `model.` (a head's checkpoint) or none
/// (a bare `LlamaModel`).
fn backbone_prefix(tensors: &TensorMap) -> &'static str {
    if tensors.names().any(|n| n.starts_with("model.")) { "model." } else { "" }
}

/// Tensors some checkpoints carry that are not parameters: RoPE's `inv_freq` buffer (recomputed
/// from the config).
fn discard_buffers(tensors: &mut TensorMap, notes: &mut LoadNotes) {
    let buffers: Vec<String> = tensors.names().filter(|n| n.ends_with("rotary_emb.inv_freq")).cloned().collect();
    if !buffers.is_empty() {
        notes.ignored.push(format!("{} RoPE inv_freq buffers (recomputed from the config)", buffers.len()));
    }
    for name in &buffers {
        tensors.discard(name);
    }
}

/// `LlamaForSequenceClassification` with one label: reward = score(h[last non-pad token]).
#[derive(Module, Debug)]
pub struct LlamaRewardModel {
    pub model: LlamaModel,
    pub score: Linear,
    pub pad_id: u32,
}

/// Row-major host copies of ids and mask.
fn host_batch(ids: &Tensor<2, Int>, mask: &Tensor<2, Bool>) -> (Vec<i64>, Vec<bool>) {
    let ids = ids.clone().into_data().convert::<i64>().try_to_vec::<i64>().expect("token ids are integers");
    let mask = mask.clone().into_data().try_to_vec::<bool>().expect("a mask is boolean");
    (ids, mask)
}

impl LlamaRewardModel {
    /// The hidden state at each row's pooled position (the rightmost token that is not the pad id;
    /// position 0 when every token is the pad id, as transformers' argmax gives) [batch, d].
    fn pooled_with(&self, ids: Tensor<2, Int>, mask: Tensor<2, Bool>, rng: &mut Option<&mut DropoutRng>) -> Tensor<2> {
        let [batch, seq] = ids.dims();
        let (host_ids, host_mask) = host_batch(&ids, &mask);
        let pos = Positions::from_start(&host_mask, batch, seq);
        let hidden = self.model.forward_hidden(ids, &pos, None, rng);
        self.pool(hidden, &host_ids)
    }

    fn pool(&self, hidden: Tensor<3>, host_ids: &[i64]) -> Tensor<2> {
        let [batch, seq, d] = hidden.dims();
        let last: Vec<i64> = (0..batch)
            .map(|b| (0..seq).rev().find(|&j| host_ids[b * seq + j] != i64::from(self.pad_id)).unwrap_or(0) as i64)
            .collect();
        let idx = Tensor::<1, Int>::from_data(TensorData::new(last, [batch]), &hidden.device()).reshape([batch, 1, 1]).expand([batch, 1, d]);
        hidden.gather(1, idx).reshape([batch, d])
    }

    /// Loads a reward model, or a backbone / causal LM whose new `score` head is initialised as
    /// transformers does (N(0, initializer_range)). A causal LM's `lm_head.weight` is ignored
    /// (noted). `pad_id` is the config's `pad_token_id` (the caller resolves a missing one).
    pub fn load(config: &LlamaConfig, pad_id: u32, tensors: &mut TensorMap, device: &Device) -> (Self, LoadNotes) {
        let mut notes = LoadNotes::default();
        discard_buffers(tensors, &mut notes);
        let is_classifier = config.is_classifier();
        if !is_classifier && tensors.contains("lm_head.weight") {
            tensors.discard("lm_head.weight");
            notes.ignored.push("lm_head.weight (the causal LM head; a reward model does not use it)".into());
        }
        let prefix = backbone_prefix(tensors);
        let mut b = ParamBuilder::new(tensors, device, config.initializer_range);
        let model = LlamaModel::load(config, &mut b, prefix);
        let score = if is_classifier {
            b.linear("score", config.hidden_size, 1, false)
        } else {
            notes.initialised.push("score.weight (new reward head)".into());
            b.fresh_linear(config.hidden_size, 1, false)
        };
        (Self { model, score, pad_id }, notes)
    }
}

impl RewardNet for LlamaRewardModel {
    fn forward_with(&self, ids: Tensor<2, Int>, mask: Tensor<2, Bool>, rng: Option<&mut DropoutRng>) -> Tensor<1> {
        self.forward_features(ids, mask, rng).0
    }

    /// The head's input is the last non-pad token's final hidden state.
    fn forward_features(&self, ids: Tensor<2, Int>, mask: Tensor<2, Bool>, mut rng: Option<&mut DropoutRng>) -> (Tensor<1>, Tensor<2>) {
        let pooled = self.pooled_with(ids, mask, &mut rng);
        let batch = pooled.dims()[0];
        (self.score.forward(pooled.clone()).reshape([batch]), pooled)
    }

    fn feature_dim(&self) -> usize {
        self.score.weight.dims()[0] // Burn keeps a Linear weight as [in, out]
    }

    fn forward_frozen_backbone(&self, ids: Tensor<2, Int>, mask: Tensor<2, Bool>, mut rng: Option<&mut DropoutRng>) -> Tensor<1> {
        let backbone = self.valid(); // same weights, inner device, no gradient tracking
        let pooled = Tensor::<2>::from_inner(backbone.pooled_with(ids.inner(), mask.inner(), &mut rng));
        let batch = pooled.dims()[0];
        self.score.forward(pooled).reshape([batch])
    }

    fn hf_params(&self) -> Vec<(String, HfParam<'_>)> {
        let mut out = Vec::new();
        self.model.hf_params(&mut out);
        push_linear(&mut out, "score", &self.score);
        out
    }

    fn is_head_param(&self, hf_name: &str) -> bool {
        hf_name.starts_with("score.")
    }

    fn pooling(&self) -> Pooling {
        Pooling::LastNonPad { pad_id: self.pad_id }
    }
}

/// `LlamaForCausalLM`: next-token logits from the backbone.
#[derive(Module, Debug)]
pub struct LlamaLm {
    pub model: LlamaModel,
    /// None: tied to the input embeddings (`tie_word_embeddings`).
    pub lm_head: Option<Linear>,
}

impl LlamaLm {
    /// Loads a causal LM. With `tie_word_embeddings` the output matrix is the embedding matrix and
    /// a stored `lm_head.weight` (some exports write the copy) is ignored, noted.
    pub fn load(config: &LlamaConfig, tensors: &mut TensorMap, device: &Device) -> (Self, LoadNotes) {
        let mut notes = LoadNotes::default();
        discard_buffers(tensors, &mut notes);
        if config.tie_word_embeddings && tensors.contains("lm_head.weight") {
            tensors.discard("lm_head.weight");
            notes.ignored.push("lm_head.weight (tied: the embedding matrix is used)".into());
        }
        let prefix = backbone_prefix(tensors);
        let mut b = ParamBuilder::new(tensors, device, config.initializer_range);
        let model = LlamaModel::load(config, &mut b, prefix);
        let lm_head = (!config.tie_word_embeddings).then(|| b.linear("lm_head", config.hidden_size, config.vocab_size, false));
        (Self { model, lm_head }, notes)
    }

    /// Logits [batch, seq, vocab] of hidden states [batch, seq, d].
    pub fn logits(&self, hidden: Tensor<3>) -> Tensor<3> {
        match &self.lm_head {
            Some(head) => linear(head, hidden),
            None => {
                let [b, s, d] = hidden.dims();
                let w = self.model.embed_tokens.weight.val(); // [vocab, d]
                let vocab = w.dims()[0];
                hidden.reshape([b * s, d]).matmul(w.transpose()).reshape([b, s, vocab])
            }
        }
    }

    /// Logits of every position of `ids` placed at `pos` (appending to `cache` when given).
    pub fn forward(&self, ids: Tensor<2, Int>, pos: &Positions, cache: Option<&mut KvCache>) -> Tensor<3> {
        self.logits(self.model.forward_hidden(ids, pos, cache, &mut None))
    }

    pub fn hf_params(&self) -> Vec<(String, HfParam<'_>)> {
        let mut out = Vec::new();
        self.model.hf_params(&mut out);
        if let Some(head) = &self.lm_head {
            push_linear(&mut out, "lm_head", head);
        }
        out
    }
}
