//! GGUF (llama.cpp's model file, versions 2 and 3): the header, metadata and tensor table are
//! parsed with every length and offset checked against the file (an error names the file, the
//! byte offset and what was being read); tensors stay in the memory map until taken, then are
//! dequantised one at a time (F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q4_K, Q6_K) under their HF names.
//! A Llama-architecture GGUF stores the rows of Q and K permuted for interleaved RoPE (llama.cpp's
//! `convert_hf_to_gguf.py` `permute`): they are put back in transformers' half-split order here.
//! The tokenizer (`tokenizer.ggml.*`, BPE "gpt2" model) is rebuilt as an HF `tokenizer.json`, and
//! the config as an HF `config.json`, so a model loaded from GGUF saves as an ordinary HF folder.
//!
//! Spec: github.com/ggml-org/ggml docs/gguf.md; block layouts: ggml `ggml-common.h`
//! (`block_q4_0`, `block_q4_1`, `block_q8_0`, `block_q4_K`, `block_q6_K`) and their
//! `dequantize_row_*` in `ggml-quants.c`.

use crate::causal_lm::CausalLm;
use crate::hf::TensorMap;
use crate::llama::LlamaConfig;
use crate::ModelError;
use half::{bf16, f16};
use rmtrain_core::Mmap;
use serde_json::{json, Map, Value as Json};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

const MAGIC: &[u8; 4] = b"GGUF";
const DEFAULT_ALIGNMENT: u64 = 32;

/// A metadata value.
#[derive(Debug, Clone, PartialEq)]
pub enum MetaValue {
    Uint(u64),
    Int(i64),
    Float(f64),
    Bool(bool),
    Str(String),
    Array(Vec<MetaValue>),
}

impl MetaValue {
    pub fn as_u64(&self) -> Option<u64> {
        match self {
            Self::Uint(v) => Some(*v),
            Self::Int(v) => u64::try_from(*v).ok(),
            _ => None,
        }
    }
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Self::Float(v) => Some(*v),
            Self::Uint(v) => Some(*v as f64),
            Self::Int(v) => Some(*v as f64),
            _ => None,
        }
    }
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Self::Str(s) => Some(s),
            _ => None,
        }
    }
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Self::Bool(b) => Some(*b),
            _ => None,
        }
    }
}

/// The ggml tensor types this reader dequantises.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GgmlType {
    F32,
    F16,
    Q4_0,
    Q4_1,
    Q8_0,
    Q4K,
    Q6K,
    Bf16,
}

impl GgmlType {
    /// The type of ggml's numeric code, or the code's name for an unsupported one.
    pub fn from_code(code: u32) -> Result<Self, String> {
        Ok(match code {
            0 => Self::F32,
            1 => Self::F16,
            2 => Self::Q4_0,
            3 => Self::Q4_1,
            8 => Self::Q8_0,
            12 => Self::Q4K,
            14 => Self::Q6K,
            30 => Self::Bf16,
            other => {
                let name = match other {
                    6 => "Q5_0",
                    7 => "Q5_1",
                    9 => "Q8_1",
                    10 => "Q2_K",
                    11 => "Q3_K",
                    13 => "Q5_K",
                    15 => "Q8_K",
                    16..=23 => "an IQ type",
                    24 => "I8",
                    25 => "I16",
                    26 => "I32",
                    27 => "I64",
                    28 => "F64",
                    _ => "unknown",
                };
                return Err(format!("ggml type {other} ({name}) is not supported (supported: F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q4_K, Q6_K)"));
            }
        })
    }

    pub fn code(&self) -> u32 {
        match self {
            Self::F32 => 0,
            Self::F16 => 1,
            Self::Q4_0 => 2,
            Self::Q4_1 => 3,
            Self::Q8_0 => 8,
            Self::Q4K => 12,
            Self::Q6K => 14,
            Self::Bf16 => 30,
        }
    }

    /// (values per block, bytes per block)
    pub fn block(&self) -> (usize, usize) {
        match self {
            Self::F32 => (1, 4),
            Self::F16 | Self::Bf16 => (1, 2),
            Self::Q4_0 => (32, 18),
            Self::Q4_1 => (32, 20),
            Self::Q8_0 => (32, 34),
            Self::Q4K => (256, 144),
            Self::Q6K => (256, 210),
        }
    }
}

#[derive(Debug, Clone)]
pub struct TensorInfo {
    pub name: String,
    /// ggml order: `dims[0]` varies fastest (a PyTorch `[out, in]` weight is `[in, out]` here).
    pub dims: Vec<usize>,
    pub kind: GgmlType,
    /// From the start of the data section.
    pub offset: usize,
}

impl TensorInfo {
    pub fn numel(&self) -> usize {
        self.dims.iter().product()
    }
    pub fn nbytes(&self) -> usize {
        let (values, bytes) = self.kind.block();
        self.numel() / values * bytes
    }
    /// The shape in PyTorch order (slowest dimension first).
    pub fn torch_shape(&self) -> Vec<usize> {
        self.dims.iter().rev().copied().collect()
    }
}

pub struct GgufFile {
    pub path: PathBuf,
    map: Mmap,
    pub version: u32,
    pub metadata: BTreeMap<String, MetaValue>,
    pub tensors: Vec<TensorInfo>,
    data_start: usize,
}

/// Bounds-checked little-endian reads; errors say where and what.
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], String> {
        match self.pos.checked_add(n) {
            Some(end) if end <= self.bytes.len() => {
                let s = &self.bytes[self.pos..end];
                self.pos = end;
                Ok(s)
            }
            _ => Err(format!("byte {}: {what}: needs {n} bytes, the file ends at {}", self.pos, self.bytes.len())),
        }
    }
    fn u8(&mut self, what: &str) -> Result<u8, String> {
        Ok(self.take(1, what)?[0])
    }
    fn u16(&mut self, what: &str) -> Result<u16, String> {
        Ok(u16::from_le_bytes(self.take(2, what)?.try_into().expect("2 bytes")))
    }
    fn u32(&mut self, what: &str) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.take(4, what)?.try_into().expect("4 bytes")))
    }
    fn u64(&mut self, what: &str) -> Result<u64, String> {
        Ok(u64::from_le_bytes(self.take(8, what)?.try_into().expect("8 bytes")))
    }
    /// A count that must fit what is left of the file (each item takes at least `min_item` bytes).
    fn count(&mut self, what: &str, min_item: usize) -> Result<usize, String> {
        let at = self.pos;
        let n = self.u64(what)?;
        let left = (self.bytes.len() - self.pos) as u64;
        if n > left / min_item.max(1) as u64 {
            return Err(format!("byte {at}: {what}: {n} items cannot fit in the {left} bytes left"));
        }
        Ok(n as usize)
    }
    fn string(&mut self, what: &str) -> Result<String, String> {
        let at = self.pos;
        let n = self.count(what, 1)?;
        let b = self.take(n, what)?;
        String::from_utf8(b.to_vec()).map_err(|_| format!("byte {at}: {what}: not UTF-8"))
    }
    fn value(&mut self, kind: u32, what: &str, depth: usize) -> Result<MetaValue, String> {
        Ok(match kind {
            0 => MetaValue::Uint(self.u8(what)? as u64),
            1 => MetaValue::Int(self.u8(what)? as i8 as i64),
            2 => MetaValue::Uint(self.u16(what)? as u64),
            3 => MetaValue::Int(self.u16(what)? as i16 as i64),
            4 => MetaValue::Uint(self.u32(what)? as u64),
            5 => MetaValue::Int(self.u32(what)? as i32 as i64),
            6 => MetaValue::Float(f32::from_bits(self.u32(what)?) as f64),
            7 => match self.u8(what)? {
                0 => MetaValue::Bool(false),
                1 => MetaValue::Bool(true),
                b => return Err(format!("byte {}: {what}: bool byte {b}", self.pos - 1)),
            },
            8 => MetaValue::Str(self.string(what)?),
            9 => {
                if depth > 2 {
                    return Err(format!("byte {}: {what}: arrays nested deeper than 3", self.pos));
                }
                let item = self.u32(what)?;
                let n = self.count(what, 1)?;
                let mut items = Vec::with_capacity(n.min(1 << 20));
                for _ in 0..n {
                    items.push(self.value(item, what, depth + 1)?);
                }
                MetaValue::Array(items)
            }
            10 => MetaValue::Uint(self.u64(what)?),
            11 => MetaValue::Int(self.u64(what)? as i64),
            12 => MetaValue::Float(f64::from_bits(self.u64(what)?)),
            other => return Err(format!("byte {}: {what}: value type {other} is not a GGUF type (0..=12)", self.pos - 4)),
        })
    }
}

impl GgufFile {
    /// Maps and parses `path`; no tensor data is read.
    pub fn open(path: &Path) -> Result<Self, ModelError> {
        let map = rmtrain_core::map_readonly(path)?;
        let (version, metadata, tensors, data_start) = parse(&map).map_err(|m| ModelError::file(path, m))?;
        Ok(Self { path: path.to_path_buf(), map, version, metadata, tensors, data_start })
    }

    pub fn get(&self, key: &str) -> Option<&MetaValue> {
        self.metadata.get(key)
    }

    /// The tensor's bytes in the file.
    pub fn data(&self, t: &TensorInfo) -> &[u8] {
        &self.map[self.data_start + t.offset..self.data_start + t.offset + t.nbytes()]
    }

    /// The tensor dequantised to f32, in its stored (ggml) element order, its pages then released.
    pub fn dequantize(&self, t: &TensorInfo) -> Vec<f32> {
        let values = dequantize(t.kind, self.data(t), t.numel());
        let start = self.data_start + t.offset;
        rmtrain_core::mmap::release(&self.map, start..start + t.nbytes());
        values
    }
}

type Parsed = (u32, BTreeMap<String, MetaValue>, Vec<TensorInfo>, usize);

fn parse(bytes: &[u8]) -> Result<Parsed, String> {
    let mut r = Reader { bytes, pos: 0 };
    if r.take(4, "magic")? != MAGIC {
        return Err("not a GGUF file (the first 4 bytes are not \"GGUF\")".into());
    }
    let version = r.u32("version")?;
    if !(2..=3).contains(&version) {
        return Err(format!("byte 4: GGUF version {version} is not supported (supported: 2, 3)"));
    }
    // A tensor-table entry takes at least 8 + 4 + 4 + 8 bytes; a key-value pair 8 + 4 + 1.
    let n_tensors = r.count("tensor_count", 24)?;
    let n_kv = r.count("metadata_kv_count", 13)?;
    let mut metadata = BTreeMap::new();
    for i in 0..n_kv {
        let key = r.string(&format!("metadata key {i}"))?;
        let kind = r.u32(&format!("metadata {key:?} type"))?;
        let value = r.value(kind, &format!("metadata {key:?}"), 0)?;
        metadata.insert(key, value);
    }
    let alignment = match metadata.get("general.alignment") {
        None => DEFAULT_ALIGNMENT,
        Some(v) => match v.as_u64() {
            Some(a) if a > 0 && a.is_power_of_two() => a,
            _ => return Err(format!("metadata \"general.alignment\": {v:?} is not a power of two")),
        },
    } as usize;
    let mut tensors = Vec::with_capacity(n_tensors);
    for i in 0..n_tensors {
        let name = r.string(&format!("tensor {i} name"))?;
        let what = format!("tensor {name:?}");
        let n_dims = r.u32(&what)? as usize;
        if !(1..=4).contains(&n_dims) {
            return Err(format!("byte {}: {what}: {n_dims} dimensions (1 to 4 allowed)", r.pos - 4));
        }
        let mut dims = Vec::with_capacity(n_dims);
        for _ in 0..n_dims {
            dims.push(usize::try_from(r.u64(&what)?).map_err(|_| format!("{what}: a dimension does not fit in memory"))?);
        }
        let kind = GgmlType::from_code(r.u32(&what)?).map_err(|m| format!("{what}: {m}"))?;
        let offset = r.u64(&what)? as usize;
        let numel = dims.iter().try_fold(1usize, |a, &d| a.checked_mul(d)).ok_or_else(|| format!("{what}: dimensions {dims:?} overflow"))?;
        let (per_block, block_bytes) = kind.block();
        if !numel.is_multiple_of(per_block) || !dims[0].is_multiple_of(per_block) {
            return Err(format!("{what}: {dims:?} is not a whole number of {per_block}-value {kind:?} blocks per row"));
        }
        // Its size in bytes (and in f32 once dequantised) must be a number: the file-size check
        // below needs it, and a wrapped product would pass it.
        if (numel / per_block).checked_mul(block_bytes).is_none() || numel.checked_mul(4).is_none() {
            return Err(format!("{what}: dimensions {dims:?} are too large to address"));
        }
        if !offset.is_multiple_of(alignment) {
            return Err(format!("{what}: offset {offset} is not aligned to {alignment}"));
        }
        tensors.push(TensorInfo { name, dims, kind, offset });
    }
    let data_start = r.pos.div_ceil(alignment) * alignment;
    for t in &tensors {
        let end = data_start.checked_add(t.offset).and_then(|s| s.checked_add(t.nbytes()));
        if end.is_none_or(|e| e > bytes.len()) {
            return Err(format!("tensor {:?}: its {} bytes at offset {} run past the end of the file ({} bytes)", t.name, t.nbytes(), t.offset, bytes.len()));
        }
    }
    Ok((version, metadata, tensors, data_start))
}

fn f16_at(b: &[u8], i: usize) -> f32 {
    f16::from_le_bytes([b[i], b[i + 1]]).to_f32()
}

/// The (scale, min) 6-bit pair `j` of a Q4_K block's 12 packed scale bytes (ggml `get_scale_min_k4`).
fn scale_min_k4(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        ((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4), (q[j + 4] >> 4) | ((q[j] >> 6) << 4))
    }
}

/// `n` values of type `kind` from `bytes` (whole blocks; the caller checked the sizes).
pub fn dequantize(kind: GgmlType, bytes: &[u8], n: usize) -> Vec<f32> {
    let (per, size) = kind.block();
    let mut out = Vec::with_capacity(n);
    for b in bytes.chunks_exact(size).take(n / per) {
        match kind {
            GgmlType::F32 => out.push(f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
            GgmlType::F16 => out.push(f16_at(b, 0)),
            GgmlType::Bf16 => out.push(bf16::from_le_bytes([b[0], b[1]]).to_f32()),
            GgmlType::Q8_0 => {
                let d = f16_at(b, 0);
                out.extend(b[2..34].iter().map(|&q| q as i8 as f32 * d));
            }
            GgmlType::Q4_0 => {
                let d = f16_at(b, 0);
                let qs = &b[2..18];
                out.extend(qs.iter().map(|&q| ((q & 0xF) as i32 - 8) as f32 * d));
                out.extend(qs.iter().map(|&q| ((q >> 4) as i32 - 8) as f32 * d));
            }
            GgmlType::Q4_1 => {
                let (d, m) = (f16_at(b, 0), f16_at(b, 2));
                let qs = &b[4..20];
                out.extend(qs.iter().map(|&q| (q & 0xF) as f32 * d + m));
                out.extend(qs.iter().map(|&q| (q >> 4) as f32 * d + m));
            }
            GgmlType::Q4K => {
                let (d, dmin) = (f16_at(b, 0), f16_at(b, 2));
                let (scales, qs) = (&b[4..16], &b[16..144]);
                for (k, q) in qs.chunks_exact(32).enumerate() {
                    let (s1, m1) = scale_min_k4(2 * k, scales);
                    let (s2, m2) = scale_min_k4(2 * k + 1, scales);
                    let (d1, m1, d2, m2) = (d * s1 as f32, dmin * m1 as f32, d * s2 as f32, dmin * m2 as f32);
                    out.extend(q.iter().map(|&x| d1 * (x & 0xF) as f32 - m1));
                    out.extend(q.iter().map(|&x| d2 * (x >> 4) as f32 - m2));
                }
            }
            GgmlType::Q6K => {
                let (ql, qh, sc, d) = (&b[0..128], &b[128..192], &b[192..208], f16_at(b, 208));
                for half in 0..2 {
                    let (ql, qh, sc) = (&ql[64 * half..], &qh[32 * half..], &sc[8 * half..]);
                    let mut y = [0f32; 128];
                    for l in 0..32 {
                        let is = l / 16;
                        let q1 = ((ql[l] & 0xF) | ((qh[l] & 3) << 4)) as i32 - 32;
                        let q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) as i32 - 32;
                        let q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i32 - 32;
                        let q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i32 - 32;
                        y[l] = d * (sc[is] as i8 as f32) * q1 as f32;
                        y[l + 32] = d * (sc[is + 2] as i8 as f32) * q2 as f32;
                        y[l + 64] = d * (sc[is + 4] as i8 as f32) * q3 as f32;
                        y[l + 96] = d * (sc[is + 6] as i8 as f32) * q4 as f32;
                    }
                    out.extend_from_slice(&y);
                }
            }
        }
    }
    out
}

/// Rows of a Q or K weight (or bias) [heads·head_dim, cols] from llama.cpp's interleaved-RoPE
/// order back to transformers' half-split order: within each head, stored row 2j + i is
/// transformers' row i·head_dim/2 + j (the inverse of `convert_hf_to_gguf.py`'s `permute`).
pub fn unpermute_rows(values: &[f32], heads: usize, cols: usize) -> Vec<f32> {
    let rows = values.len() / cols;
    let hd = rows / heads;
    let half = hd / 2;
    let mut out = vec![0f32; values.len()];
    for h in 0..heads {
        for j in 0..half {
            for i in 0..2 {
                let src = h * hd + 2 * j + i;
                let dst = h * hd + i * half + j;
                out[dst * cols..(dst + 1) * cols].copy_from_slice(&values[src * cols..(src + 1) * cols]);
            }
        }
    }
    out
}

/// The HF name of a llama.cpp tensor name (`blk.N.attn_q.weight` -> `model.layers.N.self_attn.q_proj.weight`).
fn hf_name(gguf: &str) -> Option<String> {
    let top = match gguf {
        "token_embd.weight" => Some("model.embed_tokens.weight"),
        "output_norm.weight" => Some("model.norm.weight"),
        "output.weight" => Some("lm_head.weight"),
        _ => None,
    };
    if let Some(t) = top {
        return Some(t.to_string());
    }
    let rest = gguf.strip_prefix("blk.")?;
    let (layer, tail) = rest.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    let (part, kind) = tail.rsplit_once('.')?;
    let hf = match part {
        "attn_norm" => "input_layernorm",
        "ffn_norm" => "post_attention_layernorm",
        "attn_q" => "self_attn.q_proj",
        "attn_k" => "self_attn.k_proj",
        "attn_v" => "self_attn.v_proj",
        "attn_output" => "self_attn.o_proj",
        "ffn_gate" => "mlp.gate_proj",
        "ffn_up" => "mlp.up_proj",
        "ffn_down" => "mlp.down_proj",
        _ => return None,
    };
    Some(format!("model.layers.{layer}.{hf}.{kind}"))
}

/// A GGUF tensor waiting in its file, with how to put its rows back in HF order.
pub(crate) struct PendingTensor {
    file: Arc<GgufFile>,
    info: TensorInfo,
    /// Q/K of a Llama-architecture file: the head count to un-permute with.
    unpermute_heads: Option<usize>,
}

impl PendingTensor {
    pub(crate) fn shape(&self) -> Vec<usize> {
        self.info.torch_shape()
    }

    pub(crate) fn describe(&self) -> String {
        format!("{:?}", self.info.kind)
    }

    pub(crate) fn load(self) -> Vec<f32> {
        let values = self.file.dequantize(&self.info);
        match self.unpermute_heads {
            // A 2-D weight's rows are `dims[0]` values long (ggml order); a bias has rows of one.
            Some(heads) => unpermute_rows(&values, heads, if self.info.dims.len() == 2 { self.info.dims[0] } else { 1 }),
            None => values,
        }
    }
}

fn meta_u64(f: &GgufFile, key: &str) -> Result<Option<u64>, ModelError> {
    match f.get(key) {
        None => Ok(None),
        Some(v) => v.as_u64().map(Some).ok_or_else(|| ModelError::file(&f.path, format!("metadata {key:?}: {v:?} is not an unsigned integer"))),
    }
}

fn meta_required(f: &GgufFile, key: &str) -> Result<u64, ModelError> {
    meta_u64(f, key)?.ok_or_else(|| ModelError::file(&f.path, format!("metadata {key:?}: missing")))
}

/// The HF `config.json` a GGUF's metadata describes (Llama family), as transformers' GGUF loader
/// maps the keys; `tie_word_embeddings` when the file has no `output.weight`.
pub fn hf_config(f: &GgufFile) -> Result<Map<String, Json>, ModelError> {
    let arch = f.get("general.architecture").and_then(|v| v.as_str()).ok_or_else(|| ModelError::file(&f.path, "metadata \"general.architecture\": missing"))?;
    let model_type = match arch {
        "llama" => "llama",
        "qwen2" => "qwen2",
        other => return Err(ModelError::file(&f.path, format!("metadata \"general.architecture\": {other:?} is not supported (supported: \"llama\", \"qwen2\")"))),
    };
    let key = |k: &str| format!("{arch}.{k}");
    if let Some(kind) = f.get(&key("rope.scaling.type")).and_then(|v| v.as_str())
        && kind != "none"
    {
        return Err(ModelError::file(&f.path, format!("metadata \"{}\": {kind:?} is not supported (unscaled RoPE only)", key("rope.scaling.type"))));
    }
    let heads = meta_required(f, &key("attention.head_count"))?;
    let hidden = meta_required(f, &key("embedding_length"))?;
    let tokens = match f.get("tokenizer.ggml.tokens") {
        Some(MetaValue::Array(a)) => Some(a.len() as u64),
        _ => None,
    };
    let vocab = match meta_u64(f, &key("vocab_size"))?.or(tokens) {
        Some(v) => v,
        None => return Err(ModelError::file(&f.path, format!("metadata \"{}\": missing (and no tokenizer.ggml.tokens)", key("vocab_size")))),
    };
    let head_dim = meta_u64(f, &key("attention.key_length"))?.or(meta_u64(f, &key("rope.dimension_count"))?).unwrap_or(hidden / heads.max(1));
    let tied = !f.tensors.iter().any(|t| t.name == "output.weight");
    let eps = f.get(&key("attention.layer_norm_rms_epsilon")).and_then(|v| v.as_f64()).unwrap_or(1e-6);
    // f32 metadata widened to f64: 9.999999747378752e-06 for 1e-5. Round to the f32 it was.
    let eps = (eps as f32).to_string().parse::<f64>().unwrap_or(eps);
    let theta = f.get(&key("rope.freq_base")).and_then(|v| v.as_f64()).unwrap_or(10_000.0);
    let mut c = Map::new();
    c.insert("architectures".into(), json!([if model_type == "qwen2" { "Qwen2ForCausalLM" } else { "LlamaForCausalLM" }]));
    c.insert("model_type".into(), json!(model_type));
    c.insert("vocab_size".into(), json!(vocab));
    c.insert("hidden_size".into(), json!(hidden));
    c.insert("intermediate_size".into(), json!(meta_required(f, &key("feed_forward_length"))?));
    c.insert("num_hidden_layers".into(), json!(meta_required(f, &key("block_count"))?));
    c.insert("num_attention_heads".into(), json!(heads));
    c.insert("num_key_value_heads".into(), json!(meta_u64(f, &key("attention.head_count_kv"))?.unwrap_or(heads)));
    c.insert("head_dim".into(), json!(head_dim));
    c.insert("max_position_embeddings".into(), json!(meta_u64(f, &key("context_length"))?.unwrap_or(2048)));
    c.insert("rms_norm_eps".into(), json!(eps));
    c.insert("rope_theta".into(), json!((theta as f32) as f64));
    c.insert("hidden_act".into(), json!("silu"));
    c.insert("tie_word_embeddings".into(), json!(tied));
    c.insert("attention_bias".into(), json!(false));
    c.insert("mlp_bias".into(), json!(false));
    for (ours, theirs) in [("bos_token_id", "tokenizer.ggml.bos_token_id"), ("eos_token_id", "tokenizer.ggml.eos_token_id"), ("pad_token_id", "tokenizer.ggml.padding_token_id")] {
        if let Some(v) = meta_u64(f, theirs)? {
            c.insert(ours.into(), json!(v));
        }
    }
    c.insert("torch_dtype".into(), json!("float32"));
    Ok(c)
}

/// The tensors of a GGUF under HF names (Q/K rows un-permuted for the `llama` architecture).
/// Tensors with no HF counterpart (e.g. `rope_freqs.weight`) are an error naming them.
pub(crate) fn tensor_map(file: Arc<GgufFile>, config: &LlamaConfig) -> Result<TensorMap, ModelError> {
    let llama_rope = file.get("general.architecture").and_then(|v| v.as_str()) == Some("llama");
    let mut pending = Vec::new();
    let mut unknown = Vec::new();
    for info in &file.tensors {
        let Some(name) = hf_name(&info.name) else {
            unknown.push(info.name.clone());
            continue;
        };
        let heads = if !llama_rope {
            None
        } else if name.ends_with("self_attn.q_proj.weight") || name.ends_with("self_attn.q_proj.bias") {
            Some(config.num_attention_heads)
        } else if name.ends_with("self_attn.k_proj.weight") || name.ends_with("self_attn.k_proj.bias") {
            Some(config.num_kv_heads())
        } else {
            None
        };
        pending.push((name, PendingTensor { file: file.clone(), info: info.clone(), unpermute_heads: heads }));
    }
    if !unknown.is_empty() {
        return Err(ModelError::Strict { path: file.path.clone(), message: format!("tensors with no Llama counterpart: {}", unknown.join(", ")) });
    }
    Ok(TensorMap::from_gguf(&file.path, pending))
}

/// The HF `tokenizer.json` (as JSON) of a GGUF's `tokenizer.ggml.*` metadata: a byte-level BPE
/// ("gpt2" model) with the pre-tokenizer `tokenizer.ggml.pre` names, control and user-defined
/// tokens as added tokens, BOS prepended when `tokenizer.ggml.add_bos_token` is true.
pub fn hf_tokenizer_json(f: &GgufFile) -> Result<Json, ModelError> {
    let err = |m: String| ModelError::file(&f.path, m);
    let model = f.get("tokenizer.ggml.model").and_then(|v| v.as_str()).unwrap_or("");
    if model != "gpt2" {
        return Err(err(format!("metadata \"tokenizer.ggml.model\": {model:?} is not supported (supported: \"gpt2\", byte-level BPE)")));
    }
    let strings = |key: &str| -> Result<Vec<String>, ModelError> {
        match f.get(key) {
            Some(MetaValue::Array(a)) => a.iter().map(|v| v.as_str().map(str::to_string).ok_or_else(|| err(format!("metadata {key:?}: an item is not a string")))).collect(),
            _ => Err(err(format!("metadata {key:?}: missing or not an array"))),
        }
    };
    let tokens = strings("tokenizer.ggml.tokens")?;
    let merges = strings("tokenizer.ggml.merges")?;
    let types: Vec<u64> = match f.get("tokenizer.ggml.token_type") {
        Some(MetaValue::Array(a)) => a.iter().map(|v| v.as_u64().unwrap_or(1)).collect(),
        _ => vec![1; tokens.len()],
    };
    let pre = f.get("tokenizer.ggml.pre").and_then(|v| v.as_str()).unwrap_or("default");
    let byte_level = json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true});
    let pre_tokenizer = match pre {
        "default" | "gpt2" => byte_level,
        // SmolLM: every digit on its own, then GPT-2's byte-level split (llama.cpp's "smollm").
        "smollm" => json!({"type": "Sequence", "pretokenizers": [{"type": "Digits", "individual_digits": true}, byte_level]}),
        other => return Err(err(format!("metadata \"tokenizer.ggml.pre\": {other:?} is not supported (supported: \"default\", \"gpt2\", \"smollm\")"))),
    };
    let vocab: Map<String, Json> = tokens.iter().enumerate().map(|(i, t)| (t.clone(), json!(i))).collect();
    let added: Vec<Json> = tokens
        .iter()
        .enumerate()
        .filter(|(i, _)| matches!(types.get(*i), Some(3) | Some(4)))
        .map(|(i, t)| json!({"id": i, "content": t, "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": types[i] == 3}))
        .collect();
    let add_bos = f.get("tokenizer.ggml.add_bos_token").and_then(|v| v.as_bool()).unwrap_or(false);
    let post_processor = match (add_bos, meta_u64(f, "tokenizer.ggml.bos_token_id")?) {
        (true, Some(bos)) => {
            let bos_tok = tokens.get(bos as usize).ok_or_else(|| err(format!("metadata \"tokenizer.ggml.bos_token_id\": {bos} is not a token")))?;
            json!({"type": "TemplateProcessing",
                "single": [{"SpecialToken": {"id": bos_tok, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
                "pair": [{"SpecialToken": {"id": bos_tok, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
                "special_tokens": {bos_tok.as_str(): {"id": bos_tok, "ids": [bos], "tokens": [bos_tok]}}})
        }
        _ => json!({"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": false, "use_regex": true}),
    };
    Ok(json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": null,
        "pre_tokenizer": pre_tokenizer,
        "post_processor": post_processor,
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null, "end_of_word_suffix": null,
                  "fuse_unk": false, "byte_fallback": false, "ignore_merges": false, "vocab": vocab, "merges": merges}
    }))
}

/// `tokenizer_config.json` for a GGUF: special tokens by content and the chat template.
pub fn hf_tokenizer_config(f: &GgufFile) -> Result<Json, ModelError> {
    let token = |key: &str| -> Result<Option<String>, ModelError> {
        let Some(id) = meta_u64(f, key)? else { return Ok(None) };
        match f.get("tokenizer.ggml.tokens") {
            Some(MetaValue::Array(a)) => Ok(a.get(id as usize).and_then(|v| v.as_str()).map(str::to_string)),
            _ => Ok(None),
        }
    };
    let mut c = Map::new();
    for (ours, key) in [("bos_token", "tokenizer.ggml.bos_token_id"), ("eos_token", "tokenizer.ggml.eos_token_id"), ("pad_token", "tokenizer.ggml.padding_token_id"), ("unk_token", "tokenizer.ggml.unknown_token_id")] {
        if let Some(t) = token(key)? {
            c.insert(ours.into(), json!(t));
        }
    }
    if let Some(t) = f.get("tokenizer.chat_template").and_then(|v| v.as_str()) {
        c.insert("chat_template".into(), json!(t));
    }
    c.insert("add_bos_token".into(), json!(f.get("tokenizer.ggml.add_bos_token").and_then(|v| v.as_bool()).unwrap_or(false)));
    c.insert("tokenizer_class".into(), json!("PreTrainedTokenizerFast"));
    c.insert("model_max_length".into(), json!(meta_u64(f, &format!("{}.context_length", f.get("general.architecture").and_then(|v| v.as_str()).unwrap_or("llama")))?.unwrap_or(2048)));
    Ok(Json::Object(c))
}

/// Everything an HF folder would hold, from one GGUF: config, tensors, tokenizer files.
pub(crate) struct GgufModel {
    pub config: LlamaConfig,
    pub tensors: TensorMap,
    pub tokenizer_json: Json,
    pub tokenizer_config: Json,
}

pub(crate) fn open_model(path: &Path) -> Result<GgufModel, ModelError> {
    let file = Arc::new(GgufFile::open(path)?);
    let config = LlamaConfig::from_map(path, hf_config(&file)?)?;
    let tensors = tensor_map(file.clone(), &config)?;
    Ok(GgufModel { config, tensors, tokenizer_json: hf_tokenizer_json(&file)?, tokenizer_config: hf_tokenizer_config(&file)? })
}

/// A causal LM from a GGUF file.
pub(crate) fn load_causal_lm(path: &Path, device: &burn::tensor::Device) -> Result<CausalLm, ModelError> {
    let GgufModel { config, tensors, tokenizer_json, tokenizer_config } = open_model(path)?;
    let tokenizer = tokenizers::Tokenizer::from_bytes(tokenizer_json.to_string().as_bytes())
        .map_err(|e| ModelError::file(path, format!("tokenizer rebuilt from the metadata does not load: {e}")))?;
    CausalLm::from_parts(config, tensors, tokenizer, &tokenizer_config, None, path, device)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unpermute_inverts_llama_cpp_permute() {
        // llama.cpp: w.reshape(heads, 2, hd/2, cols).swapaxes(1, 2).reshape(...)
        let (heads, hd, cols) = (3, 8, 2);
        let hf: Vec<f32> = (0..heads * hd * cols).map(|x| x as f32).collect();
        let mut stored = vec![0f32; hf.len()];
        for h in 0..heads {
            for i in 0..2 {
                for j in 0..hd / 2 {
                    let src = h * hd + i * hd / 2 + j; // [h, i, j]
                    let dst = h * hd + j * 2 + i; // [h, j, i]
                    stored[dst * cols..(dst + 1) * cols].copy_from_slice(&hf[src * cols..(src + 1) * cols]);
                }
            }
        }
        assert_ne!(stored, hf);
        assert_eq!(unpermute_rows(&stored, heads, cols), hf);
    }

    #[test]
    fn names_map_to_transformers() {
        assert_eq!(hf_name("blk.7.attn_k.weight").as_deref(), Some("model.layers.7.self_attn.k_proj.weight"));
        assert_eq!(hf_name("blk.0.ffn_norm.weight").as_deref(), Some("model.layers.0.post_attention_layernorm.weight"));
        assert_eq!(hf_name("token_embd.weight").as_deref(), Some("model.embed_tokens.weight"));
        assert_eq!(hf_name("rope_freqs.weight"), None);
    }
}

#[cfg(test)]
mod quant_tests {
    use super::*;

    /// Blocks of every supported type dequantised by llama.cpp's `gguf` Python package
    /// (scripts/make_gguf_quant_fixture.py): ours must give the same values.
    #[test]
    fn dequantisation_matches_llama_cpp_reference_values() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/gguf/quants.json");
        let json: Json = serde_json::from_str(&std::fs::read_to_string(&path).expect("fixture")).expect("json");
        let mut checked = 0;
        for (name, case) in json.as_object().expect("object") {
            let Some(code) = case.get("code").and_then(|c| c.as_u64()) else { continue };
            let kind = GgmlType::from_code(code as u32).expect("supported");
            let hex = case["hex"].as_str().expect("hex");
            let bytes: Vec<u8> = (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex")).collect();
            let want: Vec<f32> = case["values"].as_array().expect("values").iter().map(|v| v.as_f64().expect("f") as f32).collect();
            let got = dequantize(kind, &bytes, want.len());
            assert_eq!(got.len(), want.len(), "{name}");
            for (i, (a, b)) in got.iter().zip(&want).enumerate() {
                assert!((a - b).abs() <= 1e-6 * b.abs().max(1e-3), "{name}[{i}]: {a} vs {b}");
            }
            checked += 1;
        }
        assert_eq!(checked, 7, "Q4_0, Q4_1, Q8_0, Q4_K, Q6_K, F16, BF16");
    }

    #[test]
    fn truncated_and_malformed_headers_are_refused_with_the_byte_and_field() {
        let mut b = Vec::new();
        b.extend_from_slice(b"GGUF");
        b.extend_from_slice(&3u32.to_le_bytes());
        b.extend_from_slice(&0u64.to_le_bytes()); // no tensor
        b.extend_from_slice(&1u64.to_le_bytes()); // one key ...
        b.extend_from_slice(&100u64.to_le_bytes()); // ... whose name claims 100 bytes
        b.extend_from_slice(b"abcdefgh");
        let err = |bytes: &[u8]| parse(bytes).expect_err("must fail");
        assert!(err(&b).contains("byte 24: metadata key 0"), "{}", err(&b));
        assert!(err(b"GGML").contains("not a GGUF file"));
        let mut v1 = b[..8].to_vec();
        v1[4] = 1;
        assert!(err(&v1).contains("version 1"), "{}", err(&v1));
        let mut huge = b[..8].to_vec();
        huge.extend_from_slice(&u64::MAX.to_le_bytes());
        assert!(err(&huge).contains("tensor_count"), "{}", err(&huge));
    }
}

#[cfg(test)]
mod file_tests {
    use super::*;
    use crate::causal_lm::CausalLm;

    /// A typed metadata value for the writer.
    enum W {
        U32(u32),
        F32(f32),
        Bool(bool),
        Str(String),
        Strs(Vec<String>),
        I32s(Vec<i32>),
    }

    fn put_str(b: &mut Vec<u8>, s: &str) {
        b.extend_from_slice(&(s.len() as u64).to_le_bytes());
        b.extend_from_slice(s.as_bytes());
    }

    /// A GGUF v3 file: metadata, then tensors `(name, ggml dims, type, bytes)` 32-byte aligned.
    fn write_gguf(path: &Path, meta: &[(&str, W)], tensors: &[(String, Vec<usize>, GgmlType, Vec<u8>)]) {
        let mut b = Vec::new();
        b.extend_from_slice(b"GGUF");
        b.extend_from_slice(&3u32.to_le_bytes());
        b.extend_from_slice(&(tensors.len() as u64).to_le_bytes());
        b.extend_from_slice(&(meta.len() as u64).to_le_bytes());
        for (k, v) in meta {
            put_str(&mut b, k);
            match v {
                W::U32(x) => {
                    b.extend_from_slice(&4u32.to_le_bytes());
                    b.extend_from_slice(&x.to_le_bytes());
                }
                W::F32(x) => {
                    b.extend_from_slice(&6u32.to_le_bytes());
                    b.extend_from_slice(&x.to_le_bytes());
                }
                W::Bool(x) => {
                    b.extend_from_slice(&7u32.to_le_bytes());
                    b.push(u8::from(*x));
                }
                W::Str(s) => {
                    b.extend_from_slice(&8u32.to_le_bytes());
                    put_str(&mut b, s);
                }
                W::Strs(v) => {
                    b.extend_from_slice(&9u32.to_le_bytes());
                    b.extend_from_slice(&8u32.to_le_bytes());
                    b.extend_from_slice(&(v.len() as u64).to_le_bytes());
                    for s in v {
                        put_str(&mut b, s);
                    }
                }
                W::I32s(v) => {
                    b.extend_from_slice(&9u32.to_le_bytes());
                    b.extend_from_slice(&5u32.to_le_bytes());
                    b.extend_from_slice(&(v.len() as u64).to_le_bytes());
                    for x in v {
                        b.extend_from_slice(&x.to_le_bytes());
                    }
                }
            }
        }
        let mut offset = 0usize;
        let mut offsets = Vec::new();
        for (name, dims, kind, bytes) in tensors {
            put_str(&mut b, name);
            b.extend_from_slice(&(dims.len() as u32).to_le_bytes());
            for d in dims {
                b.extend_from_slice(&(*d as u64).to_le_bytes());
            }
            b.extend_from_slice(&kind.code().to_le_bytes());
            b.extend_from_slice(&(offset as u64).to_le_bytes());
            offsets.push(offset);
            offset = (offset + bytes.len()).div_ceil(32) * 32;
        }
        let start = b.len().div_ceil(32) * 32;
        b.resize(start, 0);
        for ((_, _, _, bytes), off) in tensors.iter().zip(offsets) {
            b.resize(start + off, 0);
            b.extend_from_slice(bytes);
        }
        std::fs::write(path, b).expect("write gguf");
    }

    /// llama.cpp's `permute`: half-split rows -> interleaved, per head.
    fn permute_rows(values: &[f32], heads: usize, cols: usize) -> Vec<f32> {
        let hd = values.len() / cols / heads;
        let mut out = vec![0f32; values.len()];
        for h in 0..heads {
            for i in 0..2 {
                for j in 0..hd / 2 {
                    let (src, dst) = (h * hd + i * hd / 2 + j, h * hd + 2 * j + i);
                    out[dst * cols..(dst + 1) * cols].copy_from_slice(&values[src * cols..(src + 1) * cols]);
                }
            }
        }
        out
    }

    fn fixture(p: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/hf").join(p)
    }

    /// tiny-llama-lm written as a Llama GGUF the way llama.cpp's converter writes one (Q/K rows
    /// permuted, ggml dimension order, tokenizer in the metadata, embeddings in F16 on request)
    /// must load into the same model: same token ids, same log-probs, same greedy ids.
    #[test]
    fn a_llama_gguf_written_here_loads_as_the_hf_folder_it_came_from() {
        let dir = std::env::temp_dir().join(format!("rmtrain-gguf-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("tiny.gguf");
        let hf = fixture("tiny-llama-lm");
        let config: Json = serde_json::from_str(&std::fs::read_to_string(hf.join("config.json")).expect("config")).expect("json");
        let tok: Json = serde_json::from_str(&std::fs::read_to_string(hf.join("tokenizer.json")).expect("tok")).expect("json");
        let mut tokens: Vec<(u64, String)> = tok["model"]["vocab"].as_object().expect("vocab").iter().map(|(t, i)| (i.as_u64().expect("id"), t.clone())).collect();
        tokens.sort();
        let special: Vec<u64> = tok["added_tokens"].as_array().expect("added").iter().map(|a| a["id"].as_u64().expect("id")).collect();
        let merges: Vec<String> = tok["model"]["merges"]
            .as_array()
            .expect("merges")
            .iter()
            .map(|m| match m {
                Json::String(s) => s.clone(),
                Json::Array(p) => format!("{} {}", p[0].as_str().expect("a"), p[1].as_str().expect("b")),
                _ => panic!("merge"),
            })
            .collect();
        let heads = config["num_attention_heads"].as_u64().expect("heads") as usize;
        let kv = config["num_key_value_heads"].as_u64().expect("kv") as usize;
        let meta = vec![
            ("general.architecture", W::Str("llama".into())),
            ("llama.block_count", W::U32(config["num_hidden_layers"].as_u64().expect("n") as u32)),
            ("llama.context_length", W::U32(256)),
            ("llama.embedding_length", W::U32(config["hidden_size"].as_u64().expect("d") as u32)),
            ("llama.feed_forward_length", W::U32(config["intermediate_size"].as_u64().expect("ff") as u32)),
            ("llama.attention.head_count", W::U32(heads as u32)),
            ("llama.attention.head_count_kv", W::U32(kv as u32)),
            ("llama.rope.freq_base", W::F32(10000.0)),
            ("llama.attention.layer_norm_rms_epsilon", W::F32(1e-6)),
            ("tokenizer.ggml.model", W::Str("gpt2".into())),
            ("tokenizer.ggml.pre", W::Str("default".into())),
            ("tokenizer.ggml.tokens", W::Strs(tokens.iter().map(|(_, t)| t.clone()).collect())),
            ("tokenizer.ggml.token_type", W::I32s(tokens.iter().map(|(i, _)| if special.contains(i) { 3 } else { 1 }).collect())),
            ("tokenizer.ggml.merges", W::Strs(merges)),
            ("tokenizer.ggml.bos_token_id", W::U32(1)),
            ("tokenizer.ggml.eos_token_id", W::U32(2)),
            ("tokenizer.ggml.padding_token_id", W::U32(0)),
            ("tokenizer.ggml.add_bos_token", W::Bool(true)),
        ];
        let mut st = TensorMap::read(&hf.join("model.safetensors")).expect("read");
        let names: Vec<String> = st.names().cloned().collect();
        let gguf_name = |hf: &str| -> String {
            let table = [("model.embed_tokens.weight", "token_embd.weight"), ("model.norm.weight", "output_norm.weight"), ("lm_head.weight", "output.weight")];
            if let Some((_, g)) = table.iter().find(|(h, _)| *h == hf) {
                return g.to_string();
            }
            let rest = hf.strip_prefix("model.layers.").expect("layer");
            let (n, tail) = rest.split_once('.').expect("n");
            let part = [("input_layernorm", "attn_norm"), ("post_attention_layernorm", "ffn_norm"), ("self_attn.q_proj", "attn_q"), ("self_attn.k_proj", "attn_k"),
                ("self_attn.v_proj", "attn_v"), ("self_attn.o_proj", "attn_output"), ("mlp.gate_proj", "ffn_gate"), ("mlp.up_proj", "ffn_up"), ("mlp.down_proj", "ffn_down")];
            let (p, kind) = tail.rsplit_once('.').expect("kind");
            format!("blk.{n}.{}.{kind}", part.iter().find(|(h, _)| *h == p).expect("part").1)
        };
        let mut tensors = Vec::new();
        let safetensors_shapes: Vec<(String, Vec<usize>)> = {
            let bytes = std::fs::read(hf.join("model.safetensors")).expect("read");
            let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).expect("meta");
            names.iter().map(|n| (n.clone(), meta.info(n).expect("info").shape.clone())).collect()
        };
        for (name, shape) in safetensors_shapes {
            let mut values = st.take(&name, &shape).values;
            let cols = if shape.len() == 2 { shape[1] } else { 1 };
            if name.ends_with("q_proj.weight") {
                values = permute_rows(&values, heads, cols);
            } else if name.ends_with("k_proj.weight") {
                values = permute_rows(&values, kv, cols);
            }
            let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
            tensors.push((gguf_name(&name), shape.iter().rev().copied().collect(), GgmlType::F32, bytes));
        }
        write_gguf(&path, &meta, &tensors);

        let device = burn::tensor::Device::flex();
        let (a, b) = (CausalLm::load(&hf, &device).expect("hf"), CausalLm::load(&path, &device).expect("gguf"));
        let rows: Vec<Json> = std::fs::read_to_string(fixture("tiny-llama-lm/logprobs.jsonl")).expect("rows").lines().map(|l| serde_json::from_str(l).expect("json")).collect();
        let mut items = Vec::new();
        for row in &rows {
            let (p, r) = (row["prompt"].as_str().expect("p"), row["response"].as_str().expect("r"));
            assert_eq!(a.encode_prompt(p).expect("a"), b.encode_prompt(p).expect("b"), "{p:?}");
            assert_eq!(a.encode_response(r).expect("a"), b.encode_response(r).expect("b"), "{r:?}");
            assert_eq!(a.decode(&a.encode_response(r).expect("a")).expect("d"), b.decode(&b.encode_response(r).expect("b")).expect("d"));
            items.push((b.encode_prompt(p).expect("p"), b.encode_response(r).expect("r")));
        }
        let (la, lb) = (a.logprobs(&items, 8).expect("a"), b.logprobs(&items, 8).expect("b"));
        for (x, y) in la.iter().flatten().zip(lb.iter().flatten()) {
            assert!((x - y).abs() < 1e-5, "{x} vs {y}");
        }
        assert_eq!(b.stop_ids, vec![2]);
        let config_b = hf_config(&GgufFile::open(&path).expect("open")).expect("config");
        assert_eq!(config_b["tie_word_embeddings"], json!(false));
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }
}
