//! HF `config.json` of the Llama family (Llama, Mistral, Qwen2, SmolLM): the keys the decoder needs
//! are typed, everything else is kept verbatim so a saved checkpoint's config round-trips.
//! RoPE's base is read from transformers-v5's `rope_parameters.rope_theta` or the older top-level
//! `rope_theta`; only the unscaled ("default") RoPE is supported, and any other type is refused by
//! name rather than silently computed wrong.

use crate::ModelError;
use serde::Deserialize;
use serde_json::{Map, Value};
use std::path::Path;

/// `model_type`s this family reads.
pub const LLAMA_MODEL_TYPES: [&str; 3] = ["llama", "mistral", "qwen2"];

fn default_eps() -> f64 {
    1e-6
}
fn default_init_range() -> f64 {
    0.02
}
fn default_act() -> String {
    "silu".into()
}
fn default_positions() -> usize {
    2048
}

#[derive(Debug, Clone, Deserialize)]
pub struct LlamaConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    /// Grouped-query attention: heads sharing one key/value head come in consecutive groups.
    #[serde(default)]
    pub num_key_value_heads: Option<usize>,
    #[serde(default)]
    pub head_dim: Option<usize>,
    #[serde(default = "default_eps")]
    pub rms_norm_eps: f64,
    #[serde(default = "default_positions")]
    pub max_position_embeddings: usize,
    #[serde(default)]
    pub tie_word_embeddings: bool,
    /// Llama/Mistral: biases on q, k, v and o. (Qwen2 always has q/k/v biases, no o bias.)
    #[serde(default)]
    pub attention_bias: bool,
    #[serde(default)]
    pub mlp_bias: bool,
    #[serde(default)]
    pub attention_dropout: f64,
    #[serde(default = "default_act")]
    pub hidden_act: String,
    #[serde(default)]
    pub pad_token_id: Option<u32>,
    #[serde(default)]
    pub bos_token_id: Option<u32>,
    #[serde(default = "default_init_range")]
    pub initializer_range: f64,
    /// Mistral: keys further back than this many positions are not attended.
    #[serde(default)]
    pub sliding_window: Option<usize>,
    #[serde(default)]
    pub use_sliding_window: Option<bool>,
    pub model_type: String,
    #[serde(default)]
    pub architectures: Vec<String>,
    /// Filled by [`LlamaConfig::from_map`] from either RoPE layout.
    #[serde(skip)]
    pub rope_theta: f64,
    /// `eos_token_id` as one id or a list.
    #[serde(skip)]
    pub eos_token_ids: Vec<u32>,
    #[serde(skip)]
    pub raw: Map<String, Value>,
}

impl LlamaConfig {
    pub fn from_map(path: &Path, raw: Map<String, Value>) -> Result<Self, ModelError> {
        let mut config: LlamaConfig = crate::json_fields::from_object(&raw)
            .map_err(|e| ModelError::file(path, format!("not a Llama-family config: {e}")))?;
        config.rope_theta = rope_theta(&raw).map_err(|m| ModelError::file(path, m))?;
        config.eos_token_ids = match raw.get("eos_token_id") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Number(n)) => vec![n.as_u64().and_then(|n| u32::try_from(n).ok()).ok_or_else(|| ModelError::file(path, "field \"eos_token_id\": not a token id"))?],
            Some(Value::Array(a)) => a
                .iter()
                .map(|v| v.as_u64().and_then(|n| u32::try_from(n).ok()))
                .collect::<Option<Vec<u32>>>()
                .ok_or_else(|| ModelError::file(path, "field \"eos_token_id\": a list holding something that is not a token id"))?,
            Some(_) => return Err(ModelError::file(path, "field \"eos_token_id\": expected an id or a list of ids")),
        };
        if config.pad_token_id.is_none() {
            // A decoder RM reads its reward at the last token that is not the pad id, and batches
            // need a pad id: without one, the end-of-sequence token pads (recorded on save).
            config.pad_token_id = config.eos_token_ids.first().copied();
        }
        config.raw = raw;
        config.validate().map_err(|m| ModelError::file(path, m))?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), String> {
        if !LLAMA_MODEL_TYPES.contains(&self.model_type.as_str()) {
            return Err(format!("field \"model_type\": {:?} is not a Llama-family type ({LLAMA_MODEL_TYPES:?})", self.model_type));
        }
        if self.hidden_act != "silu" {
            return Err(format!("field \"hidden_act\": {:?} is not supported (supported: \"silu\")", self.hidden_act));
        }
        if self.pad_token_id.is_none() {
            return Err("field \"pad_token_id\": missing, and no \"eos_token_id\" to pad with".into());
        }
        let heads = self.num_attention_heads;
        if heads == 0 || self.head_dim.is_none() && !self.hidden_size.is_multiple_of(heads) {
            return Err(format!("field \"num_attention_heads\": {heads} does not divide hidden_size {} (and no head_dim is given)", self.hidden_size));
        }
        let kv = self.num_kv_heads();
        if kv == 0 || !heads.is_multiple_of(kv) {
            return Err(format!("field \"num_key_value_heads\": {kv} does not divide num_attention_heads {heads}"));
        }
        if !self.head_dim().is_multiple_of(2) {
            return Err(format!("field \"head_dim\": {} is odd; RoPE rotates pairs of dimensions", self.head_dim()));
        }
        if let Some(num_labels) = self.num_labels()
            && num_labels != 1
        {
            return Err(format!("field \"id2label\": a reward model has num_labels = 1, this config has {num_labels}"));
        }
        Ok(())
    }

    pub fn num_kv_heads(&self) -> usize {
        self.num_key_value_heads.unwrap_or(self.num_attention_heads)
    }

    pub fn head_dim(&self) -> usize {
        self.head_dim.unwrap_or(self.hidden_size / self.num_attention_heads)
    }

    /// Whether q/k/v and o carry biases.
    pub fn qkv_bias(&self) -> bool {
        self.model_type == "qwen2" || self.attention_bias
    }

    pub fn o_bias(&self) -> bool {
        self.model_type != "qwen2" && self.attention_bias
    }

    /// The attention window when one applies (Mistral's `sliding_window`; Qwen2 only with
    /// `use_sliding_window`).
    pub fn window(&self) -> Option<usize> {
        match self.model_type.as_str() {
            "qwen2" if self.use_sliding_window != Some(true) => None,
            _ => self.sliding_window,
        }
    }

    /// The sequence-classification class of this `model_type` (what a reward checkpoint declares).
    pub fn classifier_architecture(&self) -> &'static str {
        match self.model_type.as_str() {
            "mistral" => "MistralForSequenceClassification",
            "qwen2" => "Qwen2ForSequenceClassification",
            _ => "LlamaForSequenceClassification",
        }
    }

    pub fn causal_lm_architecture(&self) -> &'static str {
        match self.model_type.as_str() {
            "mistral" => "MistralForCausalLM",
            "qwen2" => "Qwen2ForCausalLM",
            _ => "LlamaForCausalLM",
        }
    }

    pub fn is_classifier(&self) -> bool {
        self.architectures.iter().any(|a| a.ends_with("ForSequenceClassification"))
    }

    /// Number of labels as transformers derives it (`id2label` wins over `num_labels`), for a
    /// sequence classifier; None for a backbone or causal LM (its head is new).
    pub fn num_labels(&self) -> Option<usize> {
        if !self.is_classifier() {
            return None;
        }
        match self.raw.get("id2label") {
            Some(Value::Object(m)) => Some(m.len()),
            _ => self.raw.get("num_labels").and_then(|v| v.as_u64()).map(|n| n as usize),
        }
    }

    /// The config of a reward checkpoint: the input's keys with the head declared as transformers
    /// writes a `num_labels = 1` sequence classifier, and the pad id the reward is pooled by.
    pub fn to_checkpoint_json(&self) -> Value {
        let mut raw = self.raw.clone();
        raw.insert("architectures".into(), serde_json::json!([self.classifier_architecture()]));
        raw.insert("id2label".into(), serde_json::json!({"0": "LABEL_0"}));
        raw.insert("label2id".into(), serde_json::json!({"LABEL_0": 0}));
        raw.remove("num_labels");
        raw.remove("_name_or_path");
        raw.insert("pad_token_id".into(), serde_json::json!(self.pad_token_id));
        raw.insert("attention_dropout".into(), serde_json::json!(self.attention_dropout));
        Value::Object(raw)
    }

    /// The config of a causal-LM checkpoint (DPO's policy): the input's keys with the family's
    /// `...ForCausalLM` architecture and the pad id.
    pub fn to_lm_checkpoint_json(&self) -> Value {
        let mut raw = self.raw.clone();
        raw.insert("architectures".into(), serde_json::json!([self.causal_lm_architecture()]));
        for k in ["id2label", "label2id", "num_labels", "_name_or_path"] {
            raw.remove(k);
        }
        raw.insert("pad_token_id".into(), serde_json::json!(self.pad_token_id));
        Value::Object(raw)
    }
}

/// RoPE's base from either layout; a scaled RoPE type is refused.
fn rope_theta(raw: &Map<String, Value>) -> Result<f64, String> {
    let params = raw.get("rope_parameters").filter(|v| !v.is_null());
    let scaling = raw.get("rope_scaling").filter(|v| !v.is_null());
    for (field, v) in [("rope_parameters", params), ("rope_scaling", scaling)] {
        if let Some(v) = v {
            let kind = v.get("rope_type").or_else(|| v.get("type")).and_then(|t| t.as_str()).unwrap_or("default");
            if kind != "default" {
                return Err(format!("field \"{field}.rope_type\": {kind:?} is not supported (supported: \"default\")"));
            }
        }
    }
    let theta = params.and_then(|p| p.get("rope_theta")).or_else(|| raw.get("rope_theta"));
    match theta {
        None => Ok(10_000.0), // transformers' LlamaConfig default
        Some(v) => v.as_f64().filter(|t| *t > 0.0).ok_or_else(|| format!("field \"rope_theta\": {v} is not a positive number")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: Value) -> Result<LlamaConfig, String> {
        let Value::Object(map) = json else { panic!("object") };
        LlamaConfig::from_map(Path::new("config.json"), map).map_err(|e| e.to_string())
    }

    fn base() -> Value {
        serde_json::json!({"model_type": "llama", "vocab_size": 10, "eos_token_id": 2, "hidden_size": 8, "intermediate_size": 16,
            "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1})
    }

    #[test]
    fn both_rope_layouts_give_the_base() {
        let mut v5 = base();
        v5["rope_parameters"] = serde_json::json!({"rope_theta": 500000.0, "rope_type": "default"});
        assert_eq!(parse(v5).expect("v5").rope_theta, 500000.0);
        let mut old = base();
        old["rope_theta"] = serde_json::json!(100000.0);
        old["rope_scaling"] = Value::Null;
        assert_eq!(parse(old).expect("old").rope_theta, 100000.0);
        assert_eq!(parse(base()).expect("default").rope_theta, 10000.0);
    }

    #[test]
    fn scaled_rope_and_bad_head_counts_are_refused_by_field() {
        let mut scaled = base();
        scaled["rope_scaling"] = serde_json::json!({"rope_type": "llama3", "factor": 8.0});
        assert!(parse(scaled).expect_err("llama3").contains("rope_scaling.rope_type"));
        let mut kv = base();
        kv["num_key_value_heads"] = serde_json::json!(3);
        assert!(parse(kv).expect_err("kv").contains("num_key_value_heads"));
        let mut act = base();
        act["hidden_act"] = serde_json::json!("gelu");
        assert!(parse(act).expect_err("act").contains("hidden_act"));
    }

    #[test]
    fn eos_is_an_id_or_a_list_and_qwen2_has_qkv_biases() {
        let mut c = base();
        c["eos_token_id"] = serde_json::json!([2, 7]);
        c["model_type"] = serde_json::json!("qwen2");
        let c = parse(c).expect("qwen2");
        assert_eq!(c.eos_token_ids, vec![2, 7]);
        assert!(c.qkv_bias() && !c.o_bias());
        assert_eq!(c.head_dim(), 4);
    }
}
