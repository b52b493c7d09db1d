//! Just enough of the safetensors format to stream it: the header (8-byte little-endian length,
//! then JSON `{name: {dtype, shape, data_offsets}}`) is read alone, and each tensor's bytes are
//! read on demand with a seek, so a file is never loaded whole.

use crate::MergeError;
use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq)]
pub struct TensorInfo {
    pub dtype: String,
    pub shape: Vec<usize>,
    pub start: u64,
    pub end: u64,
}

pub struct StreamedFile {
    pub path: PathBuf,
    file: std::fs::File,
    data_start: u64,
    pub tensors: BTreeMap<String, TensorInfo>,
    pub metadata: Option<serde_json::Value>,
}

impl StreamedFile {
    pub fn open(path: &Path) -> Result<Self, MergeError> {
        let mut file = std::fs::File::open(path).map_err(|e| MergeError::file(path, e))?;
        let mut len = [0u8; 8];
        file.read_exact(&mut len).map_err(|e| MergeError::file(path, format!("not a safetensors file: {e}")))?;
        let n = u64::from_le_bytes(len);
        let size = file.metadata().map_err(|e| MergeError::file(path, e))?.len();
        if n > size.saturating_sub(8) || n > 100 << 20 {
            return Err(MergeError::file(path, format!("not a safetensors file: header length {n} exceeds the file")));
        }
        let mut header = vec![0u8; n as usize];
        file.read_exact(&mut header).map_err(|e| MergeError::file(path, e))?;
        let json: serde_json::Map<String, serde_json::Value> =
            serde_json::from_slice(&header).map_err(|e| MergeError::file(path, format!("invalid safetensors header: {e}")))?;
        let mut tensors = BTreeMap::new();
        let mut metadata = None;
        for (name, v) in json {
            if name == "__metadata__" {
                metadata = Some(v);
                continue;
            }
            let bad = |what: &str| MergeError::file(path, format!("tensor {name}: invalid header field {what}"));
            let dtype = v.get("dtype").and_then(|d| d.as_str()).ok_or_else(|| bad("dtype"))?.to_string();
            let shape = v
                .get("shape")
                .and_then(|s| s.as_array())
                .ok_or_else(|| bad("shape"))?
                .iter()
                .map(|x| x.as_u64().map(|x| x as usize))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| bad("shape"))?;
            let offs = v.get("data_offsets").and_then(|o| o.as_array()).ok_or_else(|| bad("data_offsets"))?;
            let (start, end) = match offs.as_slice() {
                [a, b] => (a.as_u64().ok_or_else(|| bad("data_offsets"))?, b.as_u64().ok_or_else(|| bad("data_offsets"))?),
                _ => return Err(bad("data_offsets")),
            };
            let elems: usize = shape.iter().product();
            if end < start || end - start != (elems * dtype_size(&dtype).ok_or_else(|| bad("dtype"))?) as u64 || 8 + n + end > size {
                return Err(bad("data_offsets"));
            }
            tensors.insert(name, TensorInfo { dtype, shape, start, end });
        }
        Ok(Self { path: path.to_path_buf(), file, data_start: 8 + n, tensors, metadata })
    }

    /// The tensor's bytes as stored.
    pub fn read_raw(&mut self, name: &str) -> Result<Vec<u8>, MergeError> {
        let info = self.tensors.get(name).ok_or_else(|| MergeError::file(&self.path, format!("no tensor {name}")))?.clone();
        let mut bytes = vec![0u8; (info.end - info.start) as usize];
        self.file.seek(SeekFrom::Start(self.data_start + info.start)).map_err(|e| MergeError::file(&self.path, e))?;
        self.file.read_exact(&mut bytes).map_err(|e| MergeError::file(&self.path, e))?;
        Ok(bytes)
    }

    /// Elements `[from, from + count)` of a float tensor as f64: averaging reads tensors in
    /// slices so memory stays at a few MB whatever the tensor's size.
    pub fn read_f64_range(&mut self, name: &str, from: usize, count: usize) -> Result<Vec<f64>, MergeError> {
        let info = self.tensors.get(name).ok_or_else(|| MergeError::file(&self.path, format!("no tensor {name}")))?.clone();
        let size = dtype_size(&info.dtype).expect("validated when the header was read");
        let mut bytes = vec![0u8; count * size];
        self.file
            .seek(SeekFrom::Start(self.data_start + info.start + (from * size) as u64))
            .map_err(|e| MergeError::file(&self.path, e))?;
        self.file.read_exact(&mut bytes).map_err(|e| MergeError::file(&self.path, e))?;
        decode(&info.dtype, &bytes).ok_or_else(|| MergeError::file(&self.path, format!("tensor {name}: dtype {} cannot be averaged", info.dtype)))
    }

    /// The tensor's values as f64 (F32, F16, BF16, F64).
    pub fn read_f64(&mut self, name: &str) -> Result<Vec<f64>, MergeError> {
        let dtype = self.tensors.get(name).ok_or_else(|| MergeError::file(&self.path, format!("no tensor {name}")))?.dtype.clone();
        let bytes = self.read_raw(name)?;
        decode(&dtype, &bytes).ok_or_else(|| MergeError::file(&self.path, format!("tensor {name}: dtype {dtype} cannot be averaged")))
    }
}

pub fn dtype_size(dtype: &str) -> Option<usize> {
    Some(match dtype {
        "F64" | "I64" | "U64" => 8,
        "F32" | "I32" | "U32" => 4,
        "F16" | "BF16" | "I16" | "U16" => 2,
        "I8" | "U8" | "BOOL" => 1,
        _ => return None,
    })
}

fn decode(dtype: &str, b: &[u8]) -> Option<Vec<f64>> {
    Some(match dtype {
        "F32" => b.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f64).collect(),
        "F64" => b.chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes"))).collect(),
        "BF16" => b.chunks_exact(2).map(|c| f32::from_bits((u16::from_le_bytes([c[0], c[1]]) as u32) << 16) as f64).collect(),
        "F16" => b.chunks_exact(2).map(|c| f16_to_f64(u16::from_le_bytes([c[0], c[1]]))).collect(),
        _ => return None,
    })
}

/// Encodes values in `dtype` (round to nearest even for the 16-bit floats).
pub fn encode(dtype: &str, v: &[f64]) -> Option<Vec<u8>> {
    Some(match dtype {
        "F32" => v.iter().flat_map(|x| (*x as f32).to_le_bytes()).collect(),
        "F64" => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        "BF16" => v.iter().flat_map(|x| f32_to_bf16(*x as f32).to_le_bytes()).collect(),
        "F16" => v.iter().flat_map(|x| f32_to_f16(*x as f32).to_le_bytes()).collect(),
        _ => return None,
    })
}

fn f16_to_f64(h: u16) -> f64 {
    let sign = if h >> 15 == 1 { -1.0 } else { 1.0 };
    let exp = ((h >> 10) & 0x1f) as i32;
    let frac = (h & 0x3ff) as f64;
    sign * match exp {
        0 => frac * 2f64.powi(-24),
        31 => if frac == 0.0 { f64::INFINITY } else { f64::NAN },
        _ => (1.0 + frac / 1024.0) * 2f64.powi(exp - 15),
    }
}

fn f32_to_bf16(x: f32) -> u16 {
    let bits = x.to_bits();
    if x.is_nan() {
        return ((bits >> 16) | 0x40) as u16;
    }
    let round = 0x7fff + ((bits >> 16) & 1);
    (bits.wrapping_add(round) >> 16) as u16
}

fn f32_to_f16(x: f32) -> u16 {
    // Through f64 arithmetic: exact for the normal range, which weights live in.
    let sign: u16 = if x.is_sign_negative() { 0x8000 } else { 0 };
    let a = x.abs() as f64;
    if a.is_nan() {
        return sign | 0x7e00;
    }
    if a >= 65520.0 {
        return sign | 0x7c00;
    }
    if a < 2f64.powi(-14) {
        return sign | (a / 2f64.powi(-24)).round_ties_even() as u16;
    }
    let e = a.log2().floor() as i32;
    let m = (a / 2f64.powi(e) - 1.0) * 1024.0;
    let mut m = m.round_ties_even() as u32;
    let mut e = e + 15;
    if m == 1024 {
        m = 0;
        e += 1;
    }
    sign | ((e as u16) << 10) | m as u16
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sixteen_bit_round_trips() {
        for x in [0.0, 1.0, -2.5, 0.333_251_953_125, 6.103_515_625e-5, 1.0e-6] {
            let h = encode("F16", &[x]).expect("f16");
            let back = decode("F16", &h).expect("f16")[0];
            assert!((back - x).abs() <= x.abs() * 1e-3 + 6e-8, "{x} -> {back}");
            let b = encode("BF16", &[x]).expect("bf16");
            let back = decode("BF16", &b).expect("bf16")[0];
            assert!((back - x).abs() <= x.abs() * 8e-3, "{x} -> {back}");
        }
    }
}
