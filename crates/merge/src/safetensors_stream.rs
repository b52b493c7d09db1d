//! A member's `model.safetensors` for streaming: memory-mapped, its header parsed and validated by
//! the `safetensors` crate, each tensor read in slices straight from the map. The pages of a slice
//! are handed back to the kernel once decoded, so a pass over N members keeps a few MB resident,
//! never a file. Floats are decoded to f64 and encoded back with `half` (round to nearest even).

use crate::MergeError;
use half::{bf16, f16};
use rmtrain_core::Mmap;
use safetensors::tensor::{Dtype, Metadata, TensorInfo, TensorView};
use safetensors::SafeTensors;
use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::path::{Path, PathBuf};

/// The little-endian u64 header length that opens every safetensors file; tensor data starts
/// right after the header it announces, and a header is padded with spaces to this alignment.
const HEADER_LEN_BYTES: usize = 8;

/// Float dtypes that can be averaged (decoded to f64 and encoded back).
pub const FLOAT_DTYPES: [Dtype; 4] = [Dtype::F32, Dtype::F64, Dtype::F16, Dtype::BF16];

/// Integer (and bool) dtypes: buffers such as HF's `embeddings.position_ids`, not weights.
pub const INTEGER_DTYPES: [Dtype; 9] =
    [Dtype::BOOL, Dtype::U8, Dtype::I8, Dtype::U16, Dtype::I16, Dtype::U32, Dtype::I32, Dtype::U64, Dtype::I64];

pub struct MappedSafetensors {
    pub path: PathBuf,
    /// Every tensor's dtype, shape and offsets (relative to `data_start`), by name.
    pub tensors: BTreeMap<String, TensorInfo>,
    /// The file's `__metadata__` strings (transformers writes `{"format": "pt"}`).
    pub metadata: Option<HashMap<String, String>>,
    map: Mmap,
    data_start: usize,
}

impl MappedSafetensors {
    pub fn open(path: &Path) -> Result<Self, MergeError> {
        let map = rmtrain_core::map_readonly(path)?;
        let (header_len, metadata) =
            SafeTensors::read_metadata(&map).map_err(|e| MergeError::file(path, format!("not a safetensors file: {e}")))?;
        let tensors = metadata.tensors().into_iter().map(|(name, info)| (name, info.clone())).collect();
        Ok(Self {
            path: path.to_path_buf(),
            tensors,
            metadata: metadata.metadata().clone(),
            map,
            data_start: HEADER_LEN_BYTES + header_len,
        })
    }

    fn info(&self, name: &str) -> Result<&TensorInfo, MergeError> {
        self.tensors.get(name).ok_or_else(|| MergeError::file(&self.path, format!("no tensor {name}")))
    }

    fn bytes(&self, info: &TensorInfo) -> Range<usize> {
        let (start, end) = info.data_offsets;
        self.data_start + start..self.data_start + end
    }

    /// The tensor as stored, a view into the map (nothing is copied).
    pub fn view(&self, name: &str) -> Result<TensorView<'_>, MergeError> {
        let info = self.info(name)?;
        TensorView::new(info.dtype, info.shape.clone(), &self.map[self.bytes(info)])
            .map_err(|e| MergeError::file(&self.path, format!("tensor {name}: {e}")))
    }

    /// Hands the pages of `name` back to the kernel: call once its bytes have been used.
    pub fn release(&self, name: &str) {
        if let Some(info) = self.tensors.get(name) {
            rmtrain_core::mmap::release(&self.map, self.bytes(info));
        }
    }

    /// Elements `[from, from + count)` of a float tensor as f64: averaging reads tensors in
    /// slices so memory stays at a few MB whatever the tensor's size. Each slice is read once, so
    /// its pages are released as soon as it is decoded.
    pub fn read_f64_range(&self, name: &str, from: usize, count: usize) -> Result<Vec<f64>, MergeError> {
        let info = self.info(name)?;
        let size = info.dtype.bitsize() / 8;
        let elements: usize = info.shape.iter().product();
        if from + count > elements {
            return Err(MergeError::file(&self.path, format!("tensor {name}: elements {from}..{} of {elements}", from + count)));
        }
        let tensor = self.bytes(info);
        let range = tensor.start + from * size..tensor.start + (from + count) * size;
        let values = decode(info.dtype, &self.map[range.clone()]).ok_or_else(|| self.not_float(name, info.dtype))?;
        rmtrain_core::mmap::release(&self.map, range);
        Ok(values)
    }

    /// The whole float tensor as f64.
    pub fn read_f64(&self, name: &str) -> Result<Vec<f64>, MergeError> {
        let elements = self.info(name)?.shape.iter().product();
        self.read_f64_range(name, 0, elements)
    }

    fn not_float(&self, name: &str, dtype: Dtype) -> MergeError {
        MergeError::file(&self.path, format!("tensor {name}: dtype {dtype} cannot be averaged"))
    }
}

/// The values of little-endian `bytes` in `dtype` as f64; None when `dtype` is not in [`FLOAT_DTYPES`].
pub fn decode(dtype: Dtype, b: &[u8]) -> Option<Vec<f64>> {
    Some(match dtype {
        Dtype::F32 => b.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f64).collect(),
        Dtype::F64 => b.chunks_exact(8).map(|c| f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]])).collect(),
        Dtype::F16 => b.chunks_exact(2).map(|c| f16::from_le_bytes([c[0], c[1]]).to_f64()).collect(),
        Dtype::BF16 => b.chunks_exact(2).map(|c| bf16::from_le_bytes([c[0], c[1]]).to_f64()).collect(),
        _ => return None,
    })
}

/// `values` encoded little-endian in `dtype`, rounded to nearest even; None when `dtype` is not
/// in [`FLOAT_DTYPES`].
pub fn encode(dtype: Dtype, values: &[f64]) -> Option<Vec<u8>> {
    Some(match dtype {
        Dtype::F32 => values.iter().flat_map(|x| (*x as f32).to_le_bytes()).collect(),
        Dtype::F64 => values.iter().flat_map(|x| x.to_le_bytes()).collect(),
        Dtype::F16 => values.iter().flat_map(|x| f16::from_f64(*x).to_le_bytes()).collect(),
        Dtype::BF16 => values.iter().flat_map(|x| bf16::from_f64(*x).to_le_bytes()).collect(),
        _ => return None,
    })
}

/// The start of a safetensors file holding `tensors` (in file order, offsets contiguous from 0):
/// the header length, then the header, typed and validated by `safetensors::Metadata`, padded with
/// spaces to 8 bytes as the format asks. The tensors' bytes are then written after it in order,
/// which lets a writer stream them instead of holding them for `safetensors::serialize`.
pub fn header(metadata: Option<HashMap<String, String>>, tensors: Vec<(String, TensorInfo)>) -> Result<Vec<u8>, String> {
    let metadata = Metadata::new(metadata, tensors).map_err(|e| format!("invalid safetensors header: {e}"))?;
    let mut json = serde_json::to_vec(&metadata).map_err(|e| format!("invalid safetensors header: {e}"))?;
    json.resize(json.len().next_multiple_of(HEADER_LEN_BYTES), b' ');
    let mut out = (json.len() as u64).to_le_bytes().to_vec();
    out.extend(json);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sixteen_bit_floats_round_trip_and_round_to_nearest_even() {
        for x in [0.0, 1.0, -2.5, 0.333_251_953_125, 6.103_515_625e-5, 1.0e-6] {
            let back = decode(Dtype::F16, &encode(Dtype::F16, &[x]).expect("f16")).expect("f16")[0];
            assert!((back - x).abs() <= x.abs() * 1e-3 + 6e-8, "{x} -> {back}");
            let back = decode(Dtype::BF16, &encode(Dtype::BF16, &[x]).expect("bf16")).expect("bf16")[0];
            assert!((back - x).abs() <= x.abs() * 8e-3, "{x} -> {back}");
        }
        // 1 + 2^-11 lies halfway between two f16 values: ties go to the even one, 1.0.
        assert_eq!(encode(Dtype::F16, &[1.0 + 2f64.powi(-11)]), Some(vec![0x00, 0x3c]));
        assert_eq!(encode(Dtype::BF16, &[-3.0]), Some(vec![0x40, 0xc0]));
        assert_eq!(decode(Dtype::I32, &[0; 4]), None);
    }

    #[test]
    fn a_written_header_reads_back_with_the_safetensors_crate() {
        let info = |dtype, shape: Vec<usize>, at: (usize, usize)| TensorInfo { dtype, shape, data_offsets: at };
        let tensors = vec![("b".to_string(), info(Dtype::F32, vec![2], (0, 8))), ("a".to_string(), info(Dtype::F16, vec![3], (8, 14)))];
        let mut file = header(Some(HashMap::from([("format".to_string(), "pt".to_string())])), tensors).expect("header");
        assert_eq!((file.len() - HEADER_LEN_BYTES) % 8, 0, "8-byte aligned");
        file.extend([0u8; 14]);
        let st = SafeTensors::deserialize(&file).expect("valid file");
        assert_eq!(st.tensor("a").expect("a").shape(), &[3]);
        let (_, metadata) = SafeTensors::read_metadata(&file).expect("metadata");
        assert_eq!(metadata.metadata().as_ref().and_then(|m| m.get("format")).map(String::as_str), Some("pt"));
        // Offsets that leave a gap are refused, not written.
        let gap = vec![("a".to_string(), info(Dtype::F32, vec![1], (4, 8)))];
        assert!(header(None, gap).is_err());
    }
}
