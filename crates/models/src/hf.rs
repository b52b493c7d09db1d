//! HF safetensors in and out, strictly. Reading gives a [`TensorMap`] from which a model takes each
//! tensor by its HF name with its expected shape; whatever was not taken is reported as unexpected.
//! Writing takes `(hf_name, shape, values)` rows and writes `model.safetensors` with the
//! `{"format": "pt"}` metadata transformers expects.

use crate::ModelError;
use safetensors::tensor::{Dtype, TensorView};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// One tensor read from a safetensors file, converted to f32.
#[derive(Debug, Clone)]
pub struct HostTensor {
    pub shape: Vec<usize>,
    pub values: Vec<f32>,
}

/// Tensors of one safetensors file by name; `take` removes, so leftovers are the unexpected ones.
pub struct TensorMap {
    path: PathBuf,
    tensors: BTreeMap<String, HostTensor>,
    problems: Vec<String>,
}

impl TensorMap {
    pub fn read(path: &Path) -> Result<Self, ModelError> {
        let bytes = std::fs::read(path).map_err(|e| ModelError::file(path, e))?;
        let st = safetensors::SafeTensors::deserialize(&bytes)
            .map_err(|e| ModelError::file(path, format!("not a safetensors file: {e}")))?;
        let mut tensors = BTreeMap::new();
        for (name, view) in st.tensors() {
            if let Some(values) = to_f32(&view) {
                tensors.insert(name, HostTensor { shape: view.shape().to_vec(), values });
            } else {
                // Integer buffers (e.g. `embeddings.position_ids`) are kept only by shape so the
                // caller can decide whether they are tolerated.
                tensors.insert(name, HostTensor { shape: view.shape().to_vec(), values: Vec::new() });
            }
        }
        Ok(Self { path: path.to_path_buf(), tensors, problems: Vec::new() })
    }

    /// A map over tensors already in memory (`label` names them in errors).
    pub fn from_rows(label: &Path, rows: Vec<(String, Vec<usize>, Vec<f32>)>) -> Self {
        let tensors = rows.into_iter().map(|(n, shape, values)| (n, HostTensor { shape, values })).collect();
        Self { path: label.to_path_buf(), tensors, problems: Vec::new() }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    pub fn names(&self) -> impl Iterator<Item = &String> {
        self.tensors.keys()
    }

    /// Takes `name` with the expected shape. A missing or mis-shaped tensor is recorded (so one
    /// error lists every problem) and zeros are returned in its place.
    pub fn take(&mut self, name: &str, shape: &[usize]) -> HostTensor {
        match self.tensors.remove(name) {
            Some(t) if t.shape == shape && t.values.len() == shape.iter().product::<usize>() => t,
            Some(t) => {
                self.problems.push(format!("{name}: shape {:?} (dtype ok: {}), expected {shape:?}", t.shape, !t.values.is_empty()));
                HostTensor { shape: shape.to_vec(), values: vec![0.0; shape.iter().product()] }
            }
            None => {
                self.problems.push(format!("{name}: missing"));
                HostTensor { shape: shape.to_vec(), values: vec![0.0; shape.iter().product()] }
            }
        }
    }

    /// Removes a tensor that is tolerated when present (listed by the caller with its reason).
    pub fn discard(&mut self, name: &str) {
        self.tensors.remove(name);
    }

    /// Fails when any tensor was missing, mis-shaped, or left over (unexpected).
    pub fn finish(self) -> Result<(), ModelError> {
        let mut problems = self.problems;
        let unexpected: BTreeSet<_> = self.tensors.keys().cloned().collect();
        for name in unexpected {
            problems.push(format!("{name}: unexpected"));
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ModelError::Strict { path: self.path, message: problems.join("; ") })
        }
    }
}

fn to_f32(view: &TensorView<'_>) -> Option<Vec<f32>> {
    let data = view.data();
    match view.dtype() {
        Dtype::F32 => Some(data.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()),
        Dtype::F16 => Some(data.chunks_exact(2).map(|b| f16_to_f32(u16::from_le_bytes([b[0], b[1]]))).collect()),
        Dtype::BF16 => Some(data.chunks_exact(2).map(|b| f32::from_bits((u16::from_le_bytes([b[0], b[1]]) as u32) << 16)).collect()),
        Dtype::F64 => Some(
            data.chunks_exact(8)
                .map(|b| f64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]) as f32)
                .collect(),
        ),
        _ => None,
    }
}

fn f16_to_f32(h: u16) -> f32 {
    let sign = ((h >> 15) as u32) << 31;
    let exp = ((h >> 10) & 0x1f) as u32;
    let frac = (h & 0x3ff) as u32;
    let bits = match (exp, frac) {
        (0, 0) => sign,
        (0, _) => {
            // subnormal: renormalise
            let mut e = 127 - 15 + 1;
            let mut f = frac;
            while f & 0x400 == 0 {
                f <<= 1;
                e -= 1;
            }
            sign | (e << 23) | ((f & 0x3ff) << 13)
        }
        (0x1f, _) => sign | 0x7f80_0000 | (frac << 13),
        _ => sign | ((exp + 127 - 15) << 23) | (frac << 13),
    };
    f32::from_bits(bits)
}

/// Writes f32 tensors as a safetensors file (atomically) with `format = pt` metadata.
pub fn write_safetensors(path: &Path, tensors: &[(String, Vec<usize>, Vec<f32>)]) -> Result<(), ModelError> {
    let bytes: Vec<Vec<u8>> = tensors.iter().map(|(_, _, v)| v.iter().flat_map(|x| x.to_le_bytes()).collect()).collect();
    let mut views = Vec::with_capacity(tensors.len());
    for ((name, shape, _), data) in tensors.iter().zip(&bytes) {
        let view = TensorView::new(Dtype::F32, shape.clone(), data)
            .map_err(|e| ModelError::file(path, format!("tensor {name}: {e}")))?;
        views.push((name.clone(), view));
    }
    let metadata = Some(std::collections::HashMap::from([("format".to_string(), "pt".to_string())]));
    let out = safetensors::tensor::serialize(views, &metadata).map_err(|e| ModelError::file(path, e))?;
    rmtrain_core::write_atomic(path, &out)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f16_conversion_matches_known_values() {
        assert_eq!(f16_to_f32(0x3c00), 1.0);
        assert_eq!(f16_to_f32(0xc000), -2.0);
        assert_eq!(f16_to_f32(0x3555), 0.333_251_95);
        assert_eq!(f16_to_f32(0x0001), 5.960_464_5e-8);
    }
}
