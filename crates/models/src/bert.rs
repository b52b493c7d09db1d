//! BERT-family reward model (BERT, MiniLM): the `BertForSequenceClassification` layout with
//! `num_labels = 1`, so a checkpoint loads in transformers and gives the same rewards.
//!
//! reward = classifier(dropout(tanh(pooler.dense(h[CLS]))))
//!
//! Reference: Devlin et al. 2019 (arXiv 1810.04805); transformers `models/bert/modeling_bert.py`
//! (BertEmbeddings, BertSelfAttention with an additive mask, BertPooler, BertForSequenceClassification).
//! Padding never changes a reward: padded keys get exp(−∞)-weight 0 and the reward reads position 0.
//! On flex, scale + mask + softmax + dropout of the attention, GELU, and each dropout + residual +
//! LayerNorm run as fused kernels (`fused`); on tch, Linear and LayerNorm are single libtorch ops
//! (`fused::linear`, `fused::layer_norm`); other devices run the same formulas as Burn ops.
//!
//! HF key map (prefix `bert.` in a sequence-classification checkpoint, none in a bare `BertModel`):
//! | HF name                                              | here                                  |
//! |------------------------------------------------------|---------------------------------------|
//! | embeddings.{word,position,token_type}_embeddings.weight | embeddings.{word,position,token_type}.weight |
//! | embeddings.LayerNorm.{weight,bias}                   | embeddings.layer_norm.{gamma,beta}    |
//! | encoder.layer.N.attention.self.{query,key,value}.*   | layers[N].attention.{query,key,value} |
//! | encoder.layer.N.attention.output.dense.*             | layers[N].attention.output            |
//! | encoder.layer.N.attention.output.LayerNorm.*         | layers[N].attention_norm              |
//! | encoder.layer.N.intermediate.dense.*                 | layers[N].intermediate                |
//! | encoder.layer.N.output.dense.*                       | layers[N].output                      |
//! | encoder.layer.N.output.LayerNorm.*                   | layers[N].output_norm                 |
//! | pooler.dense.*                                       | pooler                                |
//! | classifier.* (no prefix)                             | classifier                            |
//! Linear weights are `[out, in]` in HF and `[in, out]` in Burn: transposed on the way in and out.

use crate::config::BertConfig;
use crate::dropout::{DropoutMask, DropoutRng};
// On flex with OpenBLAS loaded (assets/openblas, scripts/fetch-assets.sh): sgemm; else Burn's ops.
use rmtrain_blas::matmul4;
use crate::fused;
// Linear layers: libtorch's addmm on tch, else as `matmul4`.
use crate::fused::linear;
use crate::hf::TensorMap;
use crate::params::{push_linear, ParamBuilder};
use crate::reward_net::{HfParam, LoadNotes, Pooling, RewardNet};
use burn::module::Module;
use burn::nn::{Embedding, LayerNorm, LayerNormConfig, Linear};
use burn::tensor::{Bool, Device, Int, Tensor};

#[derive(Module, Debug)]
pub struct BertEmbeddings {
    pub word: Embedding,
    pub position: Embedding,
    pub token_type: Embedding,
    pub layer_norm: LayerNorm,
    pub dropout: f64,
    /// The LayerNorm's ε (Burn keeps it private; the fused kernel needs it).
    pub layer_norm_eps: f64,
}

#[derive(Module, Debug)]
pub struct BertAttention {
    pub query: Linear,
    pub key: Linear,
    pub value: Linear,
    pub output: Linear,
    pub probs_dropout: f64,
    pub output_dropout: f64,
    pub num_heads: usize,
}

#[derive(Module, Debug)]
pub struct BertLayer {
    pub attention: BertAttention,
    pub attention_norm: LayerNorm,
    pub intermediate: Linear,
    pub output: Linear,
    pub output_dropout: f64,
    pub output_norm: LayerNorm,
    /// Both LayerNorms' ε (Burn keeps it private; the fused kernel needs it).
    pub layer_norm_eps: f64,
}

#[derive(Module, Debug)]
pub struct BertRewardModel {
    pub embeddings: BertEmbeddings,
    pub layers: Vec<BertLayer>,
    pub pooler: Linear,
    pub head_dropout: f64,
    pub classifier: Linear,
}

impl BertAttention {
    /// x: [batch, seq, d]; mask_bias: [batch, 1, 1, seq] (0 for real keys, −∞-like for padding).
    /// Returns the output projection before its dropout, which the layer fuses into its LayerNorm.
    fn forward(&self, x: Tensor<3>, mask_bias: Tensor<4>, rng: &mut Option<&mut DropoutRng>) -> Tensor<3> {
        let seq = x.dims()[1];
        let mask = rng.as_mut().and_then(|r| r.next_mask(self.probs_dropout));
        if mask.is_none() {
            // tch CPU: one op (fused projections, libtorch's flash attention)
            if let Some(context) = fused::self_attention([&self.query, &self.key, &self.value], &x, &mask_bias, self.num_heads) {
                return linear(&self.output, context);
            }
        }
        self.composed(x, mask_bias, mask, seq)
    }

    /// [`BertAttention::forward`] for the first query position only (the [CLS] token): keys and
    /// values from every position, x: [batch, seq, d] -> [batch, 1, d]. Row 0 of the full
    /// forward's output, with the same attention dropout factors there.
    fn forward_first_query(&self, x: Tensor<3>, mask_bias: Tensor<4>, rng: &mut Option<&mut DropoutRng>) -> Tensor<3> {
        let mask = rng.as_mut().and_then(|r| r.next_mask(self.probs_dropout));
        self.composed(x, mask_bias, mask, 1)
    }

    /// Attention of the first `queries` positions (all, or the [CLS] row) over every key, in
    /// Burn's ops and rmtrain's fused softmax: [batch, queries, d].
    fn composed(&self, x: Tensor<3>, mask_bias: Tensor<4>, mask: Option<DropoutMask>, queries: usize) -> Tensor<3> {
        let [batch, seq, d] = x.dims();
        let heads = self.num_heads;
        let head_dim = d / heads;
        // [batch, rows, d] -> [batch, heads, rows, head_dim]
        let split = |t: Tensor<3>, rows: usize| t.reshape([batch, rows, heads, head_dim]).swap_dims(1, 2);
        let x_queries = if queries == seq { x.clone() } else { x.clone().narrow(1, 0, queries) };
        let q = split(linear(&self.query, x_queries), queries);
        let k = split(linear(&self.key, x.clone()), seq);
        let v = split(linear(&self.value, x), seq);
        // [batch, heads, queries, seq]
        let scores = matmul4(q, k.swap_dims(2, 3));
        // softmax(scores / √head_dim + mask_bias) ⊙ dropout mask, one fused op on flex; the
        // mask's factors are those of the whole [seq, seq] tensor, so a subset of rows is masked
        // after the op (`apply_rows`)
        let scale = (head_dim as f64).sqrt() as f32;
        let probs = if queries == seq {
            fused::attention_probs(scores, mask_bias, scale, mask)
        } else {
            let probs = fused::attention_probs(scores, mask_bias, scale, None);
            match mask {
                Some(mask) => mask.apply_rows(probs, seq * seq),
                None => probs,
            }
        };
        // [batch, heads, queries, head_dim] -> [batch, queries, d]
        let context = matmul4(probs, v).swap_dims(1, 2).reshape([batch, queries, d]);
        linear(&self.output, context)
    }
}

impl BertLayer {
    /// x: [batch, seq, d] -> [batch, seq, d]
    fn forward(&self, x: Tensor<3>, mask_bias: Tensor<4>, rng: &mut Option<&mut DropoutRng>) -> Tensor<3> {
        let eps = self.layer_norm_eps;
        // LayerNorm(dropout(sub-block(x)) + x), the masks drawn in the order of the unfused model
        let attention = self.attention.forward(x.clone(), mask_bias, rng);
        let mask = rng.as_mut().and_then(|r| r.next_mask(self.attention.output_dropout));
        let attended = fused::residual_layer_norm(&self.attention_norm, eps, attention, x, mask);
        let hidden = fused::gelu(linear(&self.intermediate, attended.clone())); // exact erf GELU, as HF "gelu"
        let output = linear(&self.output, hidden);
        let mask = rng.as_mut().and_then(|r| r.next_mask(self.output_dropout));
        fused::residual_layer_norm(&self.output_norm, eps, output, attended, mask)
    }

    /// Row 0 (the [CLS] token) of [`BertLayer::forward`], computing every other position only as
    /// keys and values: x: [batch, seq, d] -> [batch, d]. Rows are independent after attention, so
    /// this is the same function (to rounding) with the same dropout factors, drawn in the same
    /// order. In the last layer of a [CLS]-pooled model it skips the query, output, LayerNorm and
    /// feed-forward work of seq − 1 positions.
    fn forward_first_row(&self, x: Tensor<3>, mask_bias: Tensor<4>, rng: &mut Option<&mut DropoutRng>) -> Tensor<2> {
        let [batch, seq, d] = x.dims();
        let eps = self.layer_norm_eps;
        let first = x.clone().narrow(1, 0, 1);
        let attention = self.attention.forward_first_query(x, mask_bias, rng);
        let drop = |rng: &mut Option<&mut DropoutRng>, t: Tensor<3>, p: f64| match rng.as_mut().and_then(|r| r.next_mask(p)) {
            Some(mask) => mask.apply_rows(t, seq * d),
            None => t,
        };
        let attention = drop(rng, attention, self.attention.output_dropout);
        let attended = fused::residual_layer_norm(&self.attention_norm, eps, attention, first, None);
        let hidden = fused::gelu(linear(&self.intermediate, attended.clone()));
        let output = drop(rng, linear(&self.output, hidden), self.output_dropout);
        fused::residual_layer_norm(&self.output_norm, eps, output, attended, None).reshape([batch, d])
    }
}

impl RewardNet for BertRewardModel {
    fn forward_with(&self, ids: Tensor<2, Int>, mask: Tensor<2, Bool>, rng: Option<&mut DropoutRng>) -> Tensor<1> {
        self.forward_features(ids, mask, rng).0
    }

    /// The head's input is the pooled [CLS] output tanh(pooler(h[:, 0])), before the head's dropout.
    fn forward_features(&self, ids: Tensor<2, Int>, mask: Tensor<2, Bool>, mut rng: Option<&mut DropoutRng>) -> (Tensor<1>, Tensor<2>) {
        let pooled = self.pooled_with(ids, mask, &mut rng);
        let [batch, _] = pooled.dims();
        let rewards = self.classifier.forward(dropout(&mut rng, pooled.clone(), self.head_dropout)).reshape([batch]);
        (rewards, pooled)
    }

    fn feature_dim(&self) -> usize {
        self.pooler.weight.dims()[1] // Burn keeps a Linear weight as [in, out]
    }

    /// The backbone runs on the inner (non-autodiff) backend; the head (pooler + classifier)
    /// records the graph. `ids`/`mask` live on the autodiff device like the head.
    fn forward_frozen_backbone(&self, ids: Tensor<2, Int>, mask: Tensor<2, Bool>, mut rng: Option<&mut DropoutRng>) -> Tensor<1> {
        let backbone = self.valid(); // same weights, inner device, no gradient tracking
        let cls = Tensor::<2>::from_inner(backbone.cls_hidden_with(ids.inner(), mask.inner(), &mut rng));
        let batch = cls.dims()[0];
        let pooled = self.pooler.forward(cls).tanh();
        self.classifier.forward(dropout(&mut rng, pooled, self.head_dropout)).reshape([batch])
    }

    /// The key map of the table at the top of this file, in `BertForSequenceClassification`'s
    /// checkpoint order.
    fn hf_params(&self) -> Vec<(String, HfParam<'_>)> {
        let mut out: Vec<(String, HfParam<'_>)> = Vec::new();
        let e = &self.embeddings;
        out.push(("bert.embeddings.word_embeddings.weight".into(), HfParam::Matrix(&e.word.weight)));
        out.push(("bert.embeddings.position_embeddings.weight".into(), HfParam::Matrix(&e.position.weight)));
        out.push(("bert.embeddings.token_type_embeddings.weight".into(), HfParam::Matrix(&e.token_type.weight)));
        push_norm(&mut out, "bert.embeddings.LayerNorm", &e.layer_norm);
        for (i, layer) in self.layers.iter().enumerate() {
            let l = format!("bert.encoder.layer.{i}");
            let a = &layer.attention;
            push_linear(&mut out, &format!("{l}.attention.self.query"), &a.query);
            push_linear(&mut out, &format!("{l}.attention.self.key"), &a.key);
            push_linear(&mut out, &format!("{l}.attention.self.value"), &a.value);
            push_linear(&mut out, &format!("{l}.attention.output.dense"), &a.output);
            push_norm(&mut out, &format!("{l}.attention.output.LayerNorm"), &layer.attention_norm);
            push_linear(&mut out, &format!("{l}.intermediate.dense"), &layer.intermediate);
            push_linear(&mut out, &format!("{l}.output.dense"), &layer.output);
            push_norm(&mut out, &format!("{l}.output.LayerNorm"), &layer.output_norm);
        }
        push_linear(&mut out, "bert.pooler.dense", &self.pooler);
        push_linear(&mut out, "classifier", &self.classifier);
        out
    }

    /// The head a linear probe trains: pooler + classifier.
    fn is_head_param(&self, hf_name: &str) -> bool {
        hf_name.starts_with("bert.pooler.") || hf_name.starts_with("classifier.")
    }

    fn pooling(&self) -> Pooling {
        Pooling::BertPoolerCls
    }
}

impl BertRewardModel {
    /// The pooled [CLS] representation tanh(pooler(h[:, 0])): [batch, d]. Contrastive losses and
    /// the embedding-distance of RBoN-WD use it.
    pub fn pooled(&self, ids: Tensor<2, Int>, mask: Tensor<2, Bool>) -> Tensor<2> {
        self.pooled_with(ids, mask, &mut None)
    }

    fn pooled_with(&self, ids: Tensor<2, Int>, mask: Tensor<2, Bool>, rng: &mut Option<&mut DropoutRng>) -> Tensor<2> {
        self.pooler.forward(self.cls_hidden_with(ids, mask, rng)).tanh()
    }

    /// The last hidden state of the [CLS] token, h[:, 0]: [batch, d]. The last layer runs for
    /// that row only ([`BertLayer::forward_first_row`]); `encode(..)[:, 0]` to rounding.
    pub fn cls_hidden(&self, ids: Tensor<2, Int>, mask: Tensor<2, Bool>) -> Tensor<2> {
        self.cls_hidden_with(ids, mask, &mut None)
    }

    fn cls_hidden_with(&self, ids: Tensor<2, Int>, mask: Tensor<2, Bool>, rng: &mut Option<&mut DropoutRng>) -> Tensor<2> {
        let (mut x, mask_bias) = self.embed(ids, mask, rng);
        let Some((last, layers)) = self.layers.split_last() else {
            let [batch, _, d] = x.dims();
            return x.narrow(1, 0, 1).reshape([batch, d]);
        };
        for layer in layers {
            x = layer.forward(x, mask_bias.clone(), rng);
        }
        last.forward_first_row(x, mask_bias, rng)
    }

    /// Last hidden states [batch, seq, d].
    pub fn encode(&self, ids: Tensor<2, Int>, mask: Tensor<2, Bool>) -> Tensor<3> {
        self.encode_with(ids, mask, &mut None)
    }

    fn encode_with(&self, ids: Tensor<2, Int>, mask: Tensor<2, Bool>, rng: &mut Option<&mut DropoutRng>) -> Tensor<3> {
        let (mut x, mask_bias) = self.embed(ids, mask, rng);
        for layer in &self.layers {
            x = layer.forward(x, mask_bias.clone(), rng);
        }
        x
    }

    /// The embeddings' output [batch, seq, d] and the attention's key mask bias [batch, 1, 1, seq].
    fn embed(&self, ids: Tensor<2, Int>, mask: Tensor<2, Bool>, rng: &mut Option<&mut DropoutRng>) -> (Tensor<3>, Tensor<4>) {
        let [batch, seq] = ids.dims();
        let device = ids.device();
        let positions = Tensor::<1, Int>::arange(0..seq as i64, &device).reshape([1, seq]).expand([batch, seq]);
        let token_types = Tensor::<2, Int>::zeros([batch, seq], &device);
        let e = &self.embeddings;
        let x = e.word.forward(ids) + e.position.forward(positions) + e.token_type.forward(token_types);
        let x = dropout(rng, fused::layer_norm(&e.layer_norm, e.layer_norm_eps, x), e.dropout);
        // [batch, seq] -> [batch, 1, 1, seq]; f32's lowest finite value, as transformers uses, so a
        // padded key's softmax weight is exactly 0.
        let mask_bias = Tensor::<2>::zeros([batch, seq], &device)
            .mask_fill(mask.bool_not(), f32::MIN)
            .reshape([batch, 1, 1, seq]);
        (x, mask_bias)
    }

    /// Loads a reward model (or a bare backbone, whose head is then initialised the way
    /// transformers does: pooler/classifier weights N(0, initializer_range), biases 0).
    ///
    /// Tolerated exceptions to strict loading, each with its reason, reported in the notes:
    /// - `embeddings.position_ids`: a non-parameter buffer older transformers saved;
    /// - `cls.predictions.*`, `cls.seq_relationship.*`: the pre-training heads (masked LM, next
    ///   sentence) of checkpoints such as bert-base-uncased, which a reward model does not use
    ///   (transformers drops them likewise when it loads a sequence classifier);
    /// - a missing `classifier.*` when the config's architecture is not a sequence classifier (a
    ///   backbone has no head yet); a missing `pooler.*` likewise (sentence-transformers exports
    ///   drop it).
    pub fn load(config: &BertConfig, tensors: &mut TensorMap, device: &Device) -> (Self, LoadNotes) {
        let prefix = if tensors.names().any(|n| n.starts_with("bert.")) { "bert." } else { "" };
        let is_classifier = config.architectures.iter().any(|a| a == "BertForSequenceClassification");
        let mut notes = LoadNotes::default();
        tensors.discard(&format!("{prefix}embeddings.position_ids"));
        let pretraining_heads: Vec<String> =
            tensors.names().filter(|n| n.starts_with("cls.predictions.") || n.starts_with("cls.seq_relationship.")).cloned().collect();
        if !pretraining_heads.is_empty() {
            notes.ignored.push(format!("{} tensors of the pre-training heads cls.predictions.*, cls.seq_relationship.*", pretraining_heads.len()));
        }
        for name in &pretraining_heads {
            tensors.discard(name);
        }
        let mut b = ParamBuilder::new(tensors, device, config.initializer_range);
        let eps = config.layer_norm_eps;
        let d = config.hidden_size;
        let p = prefix;
        let embeddings = BertEmbeddings {
            word: b.embedding(&format!("{p}embeddings.word_embeddings.weight"), config.vocab_size, d),
            position: b.embedding(&format!("{p}embeddings.position_embeddings.weight"), config.max_position_embeddings, d),
            token_type: b.embedding(&format!("{p}embeddings.token_type_embeddings.weight"), config.type_vocab_size, d),
            layer_norm: layer_norm(&mut b, &format!("{p}embeddings.LayerNorm"), d, eps),
            dropout: config.hidden_dropout_prob,
            layer_norm_eps: config.layer_norm_eps,
        };
        let layers = (0..config.num_hidden_layers)
            .map(|i| {
                let l = format!("{p}encoder.layer.{i}");
                BertLayer {
                    attention: BertAttention {
                        query: b.linear(&format!("{l}.attention.self.query"), d, d, true),
                        key: b.linear(&format!("{l}.attention.self.key"), d, d, true),
                        value: b.linear(&format!("{l}.attention.self.value"), d, d, true),
                        output: b.linear(&format!("{l}.attention.output.dense"), d, d, true),
                        probs_dropout: config.attention_probs_dropout_prob,
                        output_dropout: config.hidden_dropout_prob,
                        num_heads: config.num_attention_heads,
                    },
                    attention_norm: layer_norm(&mut b, &format!("{l}.attention.output.LayerNorm"), d, eps),
                    intermediate: b.linear(&format!("{l}.intermediate.dense"), d, config.intermediate_size, true),
                    output: b.linear(&format!("{l}.output.dense"), config.intermediate_size, d, true),
                    output_dropout: config.hidden_dropout_prob,
                    output_norm: layer_norm(&mut b, &format!("{l}.output.LayerNorm"), d, eps),
                    layer_norm_eps: config.layer_norm_eps,
                }
            })
            .collect();
        let pooler_name = format!("{p}pooler.dense");
        let pooler = if is_classifier || b.tensors.contains(&format!("{pooler_name}.weight")) {
            b.linear(&pooler_name, d, d, true)
        } else {
            notes.initialised.push(format!("{pooler_name}.{{weight,bias}} (absent from the backbone)"));
            b.fresh_linear(d, d, true)
        };
        let classifier = if is_classifier {
            b.linear("classifier", d, 1, true)
        } else {
            notes.initialised.push("classifier.{weight,bias} (new reward head)".to_string());
            b.fresh_linear(d, 1, true)
        };
        let model = BertRewardModel {
            embeddings,
            layers,
            pooler,
            head_dropout: config.head_dropout(),
            classifier,
        };
        (model, notes)
    }
}

fn dropout<const D: usize>(rng: &mut Option<&mut DropoutRng>, x: Tensor<D>, p: f64) -> Tensor<D> {
    match rng {
        Some(r) => r.apply(x, p),
        None => x,
    }
}

/// A LayerNorm `{name}.{weight,bias}` of width `d` (Burn keeps ε private; the fused kernel gets it
/// from the config).
fn layer_norm(b: &mut ParamBuilder, name: &str, d: usize, eps: f64) -> LayerNorm {
    let mut m = LayerNormConfig::new(d).with_epsilon(eps).init(b.device);
    m.gamma = b.take(&format!("{name}.weight"), [d]);
    m.beta = Some(b.take(&format!("{name}.bias"), [d]));
    m
}

fn push_norm<'a>(out: &mut Vec<(String, HfParam<'a>)>, name: &str, n: &'a LayerNorm) {
    out.push((format!("{name}.weight"), HfParam::Vector(&n.gamma)));
    if let Some(b) = &n.beta {
        out.push((format!("{name}.bias"), HfParam::Vector(b)));
    }
}

#[cfg(test)]
mod tests {
    use crate::dropout::DropoutRng;
    use crate::reward_model::RewardModel;
    use crate::reward_net::{HfParam, RewardNet, RewardNetwork};
    use burn::tensor::{Bool, Device, Int, Tensor, TensorData};

    fn devices() -> Vec<Device> {
        #[allow(unused_mut)]
        let mut v = vec![Device::flex()];
        #[cfg(feature = "tch")]
        v.push({
            #[allow(deprecated)]
            Device::libtorch()
        });
        v
    }

    fn max_abs_diff(a: Tensor<2>, b: Tensor<2>) -> f32 {
        let (a, b): (Vec<f32>, Vec<f32>) = (a.into_data().try_to_vec().expect("f32"), b.into_data().try_to_vec().expect("f32"));
        assert_eq!(a.len(), b.len());
        a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
    }

    /// The [CLS]-only last layer is row 0 of the whole encoder: values, the dropout factors drawn
    /// (high rates, so many are dropped) and every parameter's gradient.
    #[test]
    fn the_cls_only_last_layer_is_row_0_of_the_whole_encoder_with_dropout_and_gradients() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/hf/tiny-bert-rm");
        for device in devices() {
            for dropout in [0.0, 0.3] {
                let device = device.clone().autodiff();
                let rm = RewardModel::load_with_dropout(&dir, 128, &device, Some(dropout)).expect("load the tiny RM");
                let RewardNetwork::Bert(bert) = &rm.net else { panic!("a BERT fixture") };
                // 3 sequences of 9 positions, the second padded after 5, the third after 2
                let lengths = [9usize, 5, 2];
                let ids: Vec<i64> = (0..27).map(|i| 1 + (i * 37 % 800) as i64).collect();
                let mask: Vec<bool> = (0..27).map(|i| i % 9 < lengths[i / 9]).collect();
                let ids = Tensor::<2, Int>::from_data(TensorData::new(ids, [3, 9]), &device);
                let mask = Tensor::<2, Bool>::from_data(TensorData::new(mask, [3, 9]), &device);
                let weights = Tensor::<2>::from_data(TensorData::new((0..96).map(|i| ((i * 7 % 13) as f32 - 6.0) / 5.0).collect::<Vec<f32>>(), [3, 32]), &device);
                let run = |cls_only: bool| {
                    let mut rng = DropoutRng::new(5);
                    let mut rng = (dropout > 0.0).then_some(&mut rng);
                    let cls = if cls_only {
                        bert.cls_hidden_with(ids.clone(), mask.clone(), &mut rng)
                    } else {
                        bert.encode_with(ids.clone(), mask.clone(), &mut rng).narrow(1, 0, 1).reshape([3, 32])
                    };
                    let grads = (cls.clone() * weights.clone()).sum().backward();
                    let grads: Vec<(String, Tensor<2>)> = bert
                        .hf_params()
                        .into_iter()
                        .filter(|(name, _)| !bert.is_head_param(name)) // not on the path to h[CLS]
                        .map(|(name, p)| {
                            let g = match p {
                                HfParam::Vector(p) => p.val().grad(&grads).map(|g| {
                                    let n = g.dims()[0];
                                    g.reshape([1, n])
                                }),
                                HfParam::Matrix(p) | HfParam::LinearWeight(p) => p.val().grad(&grads),
                            };
                            (name.clone(), g.unwrap_or_else(|| panic!("{name} gets a gradient")))
                        })
                        .collect();
                    (cls, grads)
                };
                let ((cls, grads), (full, want)) = (run(true), run(false));
                let label = format!("{:?}, dropout {dropout}", device);
                assert!(max_abs_diff(cls.clone(), full.clone()) < 1e-5, "{label}: [CLS] hidden state");
                let dropped = cls.equal_elem(0.0).int().sum().into_scalar::<i64>();
                assert_eq!(dropped, 0, "{label}: the output is LayerNorm'd, never dropped");
                for ((name, g), (_, w)) in grads.into_iter().zip(want) {
                    let scale = w.clone().abs().max().into_scalar::<f32>().max(1e-3);
                    let diff = max_abs_diff(g, w);
                    assert!(diff <= 2e-5 * scale.max(1.0), "{label}: d {name}: {diff} (max |grad| {scale})");
                }
            }
        }
    }
}
