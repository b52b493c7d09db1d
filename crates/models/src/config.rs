//! HF `config.json` of the BERT family, deserialized straight into a struct (candle style): keys we
//! need are typed, everything else is kept verbatim so a saved checkpoint's config round-trips.

use crate::ModelError;
use serde::Deserialize;
use std::path::Path;

fn default_eps() -> f64 {
    1e-12 // BERT's own default in transformers
}
fn default_dropout() -> f64 {
    0.1
}
fn default_type_vocab() -> usize {
    2
}
fn default_act() -> String {
    "gelu".into()
}
fn default_init_range() -> f64 {
    0.02
}

#[derive(Debug, Clone, Deserialize)]
pub struct BertConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    pub max_position_embeddings: usize,
    #[serde(default = "default_type_vocab")]
    pub type_vocab_size: usize,
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    #[serde(default = "default_dropout")]
    pub hidden_dropout_prob: f64,
    #[serde(default = "default_dropout")]
    pub attention_probs_dropout_prob: f64,
    /// transformers: the classifier uses this when set, else `hidden_dropout_prob`.
    #[serde(default)]
    pub classifier_dropout: Option<f64>,
    #[serde(default = "default_act")]
    pub hidden_act: String,
    #[serde(default)]
    pub pad_token_id: Option<u32>,
    #[serde(default = "default_init_range")]
    pub initializer_range: f64,
    #[serde(default)]
    pub model_type: Option<String>,
    #[serde(default)]
    pub position_embedding_type: Option<String>,
    #[serde(default)]
    pub architectures: Vec<String>,
    /// The file as read, for writing it back with only the head keys changed.
    #[serde(skip)]
    pub raw: serde_json::Map<String, serde_json::Value>,
}

impl BertConfig {
    pub fn from_file(path: &Path) -> Result<Self, ModelError> {
        let text = std::fs::read_to_string(path).map_err(|e| ModelError::file(path, e))?;
        let raw: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(&text).map_err(|e| ModelError::file(path, format!("invalid JSON: {e}")))?;
        Self::from_map(path, raw)
    }

    /// The config from `config.json`'s parsed object (`path` names it in errors).
    pub fn from_map(path: &Path, raw: serde_json::Map<String, serde_json::Value>) -> Result<Self, ModelError> {
        let mut config: BertConfig = crate::json_fields::from_object(&raw)
            .map_err(|e| ModelError::file(path, format!("not a BERT config: {e}")))?;
        config.raw = raw;
        config.validate().map_err(|m| ModelError::file(path, m))?;
        Ok(config)
    }

    /// Hidden, attention and classifier dropout all set to `p`.
    pub fn set_dropout(&mut self, p: f64) {
        self.hidden_dropout_prob = p;
        self.attention_probs_dropout_prob = p;
        self.classifier_dropout = Some(p);
        self.raw.insert("classifier_dropout".into(), serde_json::json!(p));
    }

    fn validate(&self) -> Result<(), String> {
        if let Some(t) = &self.model_type
            && !matches!(t.as_str(), "bert")
        {
            return Err(format!("field \"model_type\": {t:?} is not supported (supported: \"bert\")"));
        }
        if self.hidden_act != "gelu" {
            return Err(format!("field \"hidden_act\": {:?} is not supported (supported: \"gelu\")", self.hidden_act));
        }
        if let Some(p) = &self.position_embedding_type
            && p != "absolute"
        {
            return Err(format!("field \"position_embedding_type\": {p:?} is not supported (supported: \"absolute\")"));
        }
        if self.num_attention_heads == 0 || !self.hidden_size.is_multiple_of(self.num_attention_heads) {
            return Err(format!(
                "field \"num_attention_heads\": {} does not divide hidden_size {}",
                self.num_attention_heads, self.hidden_size
            ));
        }
        if let Some(num_labels) = self.num_labels()
            && num_labels != 1
        {
            return Err(format!("field \"id2label\": a reward model has num_labels = 1, this config has {num_labels}"));
        }
        Ok(())
    }

    /// Number of labels as transformers derives it (`id2label` wins over `num_labels`).
    pub fn num_labels(&self) -> Option<usize> {
        if self.architectures.iter().all(|a| a != "BertForSequenceClassification") {
            return None; // a backbone: the head is new, its label count is ours to choose
        }
        match self.raw.get("id2label") {
            Some(serde_json::Value::Object(m)) => Some(m.len()),
            _ => self.raw.get("num_labels").and_then(|v| v.as_u64()).map(|n| n as usize),
        }
    }

    pub fn head_dropout(&self) -> f64 {
        self.classifier_dropout.unwrap_or(self.hidden_dropout_prob)
    }

    /// The config written into a checkpoint: the input's keys, with the head declared the way
    /// transformers writes a `num_labels = 1` sequence classifier, and the dropouts actually used.
    pub fn to_checkpoint_json(&self) -> serde_json::Value {
        let mut raw = self.raw.clone();
        raw.insert("architectures".into(), serde_json::json!(["BertForSequenceClassification"]));
        raw.insert("id2label".into(), serde_json::json!({"0": "LABEL_0"}));
        raw.insert("label2id".into(), serde_json::json!({"LABEL_0": 0}));
        raw.remove("num_labels");
        raw.insert("hidden_dropout_prob".into(), serde_json::json!(self.hidden_dropout_prob));
        raw.insert("attention_probs_dropout_prob".into(), serde_json::json!(self.attention_probs_dropout_prob));
        raw.remove("_name_or_path");
        serde_json::Value::Object(raw)
    }
}
