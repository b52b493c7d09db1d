//! The checkpoint's own `tokenizer.json` (HF tokenizers crate) with its padding switched off and
//! its truncation set to our `max_length` (counting special tokens, cut from the right, as
//! transformers does): batches are padded here, to their longest sequence, never to a fixed 128.

use crate::ModelError;
use burn::tensor::{Bool, Device, Int, Tensor, TensorData};
use std::path::{Path, PathBuf};
use tokenizers::{Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy};

#[derive(Clone)]
pub struct RmTokenizer {
    inner: Tokenizer,
    pad_id: u32,
    max_length: usize,
    path: PathBuf,
}

/// Token ids of several texts, right-padded to the longest.
#[derive(Debug, Clone)]
pub struct Batch {
    /// [batch, seq] row-major.
    pub ids: Vec<i64>,
    /// [batch, seq], true = real token.
    pub mask: Vec<bool>,
    pub batch: usize,
    pub seq: usize,
    /// Real tokens per row.
    pub lengths: Vec<usize>,
}

impl Batch {
    pub fn num_tokens(&self) -> usize {
        self.lengths.iter().sum()
    }

    pub fn to_tensors(&self, device: &Device) -> (Tensor<2, Int>, Tensor<2, Bool>) {
        let ids = Tensor::<2, Int>::from_data(TensorData::new(self.ids.clone(), [self.batch, self.seq]), device);
        let mask = Tensor::<2, Bool>::from_data(TensorData::new(self.mask.clone(), [self.batch, self.seq]), device);
        (ids, mask)
    }
}

impl RmTokenizer {
    /// `pad_id`: the config's `pad_token_id` when set, else the tokenizer's padding token, else 0.
    pub fn from_file(path: &Path, max_length: usize, pad_id: Option<u32>) -> Result<Self, ModelError> {
        let bytes = std::fs::read(path).map_err(|e| ModelError::file(path, e))?;
        Self::from_bytes(path, &bytes, max_length, pad_id)
    }

    /// As [`from_file`](Self::from_file) from the file's bytes (`path` names it in errors).
    pub fn from_bytes(path: &Path, bytes: &[u8], max_length: usize, pad_id: Option<u32>) -> Result<Self, ModelError> {
        if max_length < 2 {
            return Err(ModelError::file(path, format!("max_length {max_length} leaves no room for text")));
        }
        // The tokenizers crate panics on some malformed files (a decoder's fields of the wrong
        // type: found by tests/fuzz): that is a bad file too, not a crash.
        let parsed = std::panic::catch_unwind(|| Tokenizer::from_bytes(bytes)).map_err(|panic| {
            let why = panic.downcast_ref::<String>().cloned().or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string())).unwrap_or_default();
            ModelError::file(path, format!("cannot load tokenizer: malformed ({why})"))
        })?;
        let mut inner = parsed.map_err(|e| ModelError::file(path, format!("cannot load tokenizer: {e}")))?;
        let pad_from_file = inner.get_padding().map(|p| p.pad_id);
        inner.with_padding(None);
        inner
            .with_truncation(Some(TruncationParams {
                direction: TruncationDirection::Right,
                max_length,
                strategy: TruncationStrategy::LongestFirst,
                stride: 0,
            }))
            .map_err(|e| ModelError::file(path, format!("cannot set truncation: {e}")))?;
        let pad_id = pad_id.or(pad_from_file).unwrap_or(0);
        Ok(Self { inner, pad_id, max_length, path: path.to_path_buf() })
    }

    pub fn max_length(&self) -> usize {
        self.max_length
    }

    /// Ids of one text, with special tokens, truncated.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, ModelError> {
        Ok(self.encode_counting(text)?.0)
    }

    /// Ids of one text and whether it was longer than `max_length` (and so truncated).
    pub fn encode_counting(&self, text: &str) -> Result<(Vec<u32>, bool), ModelError> {
        let enc = self.inner.encode(text, true).map_err(|e| ModelError::file(&self.path, format!("cannot encode text: {e}")))?;
        Ok((enc.get_ids().to_vec(), !enc.get_overflowing().is_empty()))
    }

    /// Ids of every text and how many of them were truncated.
    pub fn encode_all_counting(&self, texts: &[&str]) -> Result<(Vec<Vec<u32>>, usize), ModelError> {
        let mut truncated = 0;
        let ids = texts
            .iter()
            .map(|t| {
                let (ids, cut) = self.encode_counting(t)?;
                truncated += usize::from(cut);
                Ok(ids)
            })
            .collect::<Result<_, ModelError>>()?;
        Ok((ids, truncated))
    }

    /// Right-pads sequences to the longest one.
    pub fn collate(&self, seqs: &[&[u32]]) -> Batch {
        let seq = seqs.iter().map(|s| s.len()).max().unwrap_or(0).max(1);
        let mut ids = Vec::with_capacity(seqs.len() * seq);
        let mut mask = Vec::with_capacity(seqs.len() * seq);
        for s in seqs {
            ids.extend(s.iter().map(|&t| t as i64));
            ids.extend(std::iter::repeat_n(self.pad_id as i64, seq - s.len()));
            mask.extend(std::iter::repeat_n(true, s.len()));
            mask.extend(std::iter::repeat_n(false, seq - s.len()));
        }
        Batch { ids, mask, batch: seqs.len(), seq, lengths: seqs.iter().map(|s| s.len()).collect() }
    }
}
