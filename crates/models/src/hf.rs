//! HF safetensors in and out, strictly. Reading maps the file and gives a [`TensorMap`] from which a
//! model takes each tensor by its HF name with its expected shape; whatever was not taken is
//! reported as unexpected. A tensor is converted to f32 only when taken, and its mapped pages are
//! then released, so loading holds the model's own copy plus the file pages of the one tensor being
//! converted, never the whole file or an f32 copy of all of it (what a billion-parameter checkpoint
//! needs). Writing takes `(hf_name, shape, values)` rows and writes `model.safetensors` with the
//! `{"format": "pt"}` metadata transformers expects.

use crate::ModelError;
use half::{bf16, f16};
use rmtrain_core::Mmap;
use safetensors::tensor::{Dtype, TensorInfo, TensorView};
use safetensors::SafeTensors;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The little-endian u64 header length that opens every safetensors file; tensor data starts
/// right after the header it announces.
const HEADER_LEN_BYTES: usize = 8;

/// The dtypes a model's parameters are read from (converted to f32 on `take`).
const FLOAT_DTYPES: [Dtype; 4] = [Dtype::F32, Dtype::F16, Dtype::BF16, Dtype::F64];

/// One tensor read from a safetensors file, converted to f32.
#[derive(Debug, Clone)]
pub struct HostTensor {
    pub shape: Vec<usize>,
    pub values: Vec<f32>,
}

/// A tensor not taken yet.
enum Stored {
    /// Still in mapped file number `.0` (a shard), in its stored dtype.
    Mapped(usize, TensorInfo),
    /// Already f32 in memory ([`TensorMap::from_rows`]).
    Host(HostTensor),
    /// In a GGUF file, dequantised on `take` ([`TensorMap::from_gguf`]).
    Gguf(crate::gguf::PendingTensor),
}

/// A memory-mapped safetensors file; its tensors' `data_offsets` count from `data_start`.
struct MappedFile {
    map: Mmap,
    data_start: usize,
}

impl MappedFile {
    fn bytes(&self, info: &TensorInfo) -> std::ops::Range<usize> {
        let (start, end) = info.data_offsets;
        self.data_start + start..self.data_start + end
    }

    fn view(&self, info: &TensorInfo) -> TensorView<'_> {
        TensorView::new(info.dtype, info.shape.clone(), &self.map[self.bytes(info)])
            .expect("read_metadata checked every tensor's offsets and size against the file")
    }
}

/// Tensors of one safetensors file by name; `take` removes, so leftovers are the unexpected ones.
pub struct TensorMap {
    path: PathBuf,
    /// The mapped files behind the `Stored::Mapped` tensors (one, or a sharded checkpoint's
    /// shards; none for [`TensorMap::from_rows`]).
    files: Vec<MappedFile>,
    tensors: BTreeMap<String, Stored>,
    problems: Vec<String>,
}

impl TensorMap {
    /// Maps `path` and reads its header; no tensor data is read until [`TensorMap::take`].
    pub fn read(path: &Path) -> Result<Self, ModelError> {
        let mut map = Self { path: path.to_path_buf(), files: Vec::new(), tensors: BTreeMap::new(), problems: Vec::new() };
        map.add_file(path)?;
        Ok(map)
    }

    /// The weights of an HF folder: `model.safetensors`, or the shards that
    /// `model.safetensors.index.json` lists (each tensor must be in the shard its `weight_map`
    /// names, and no tensor in two shards).
    pub fn read_dir(dir: &Path) -> Result<Self, ModelError> {
        let single = dir.join(WEIGHTS_FILE);
        let index = dir.join(WEIGHTS_INDEX);
        if single.is_file() || !index.is_file() {
            return Self::read(&single);
        }
        let shards = shard_files(&index)?;
        let mut map = Self { path: index.clone(), files: Vec::new(), tensors: BTreeMap::new(), problems: Vec::new() };
        for (shard, names) in &shards {
            let before: BTreeSet<String> = map.tensors.keys().cloned().collect();
            map.add_file(&dir.join(shard))?;
            let added: BTreeSet<String> = map.tensors.keys().filter(|n| !before.contains(*n)).cloned().collect();
            if let Some(name) = names.iter().find(|n| !added.contains(*n)) {
                return Err(ModelError::file(&index, format!("field \"weight_map\": {name:?} is not in {shard}")));
            }
        }
        Ok(map)
    }

    /// Maps one safetensors file and adds its tensors (a name already present is refused).
    fn add_file(&mut self, path: &Path) -> Result<(), ModelError> {
        let map = rmtrain_core::map_readonly(path)?;
        let (header_len, metadata) =
            SafeTensors::read_metadata(&map).map_err(|e| ModelError::file(path, format!("not a safetensors file: {e}")))?;
        let k = self.files.len();
        for (name, info) in metadata.tensors() {
            if self.tensors.insert(name.clone(), Stored::Mapped(k, info.clone())).is_some() {
                return Err(ModelError::file(path, format!("tensor {name:?} is also in another shard")));
            }
        }
        self.files.push(MappedFile { map, data_start: HEADER_LEN_BYTES + header_len });
        Ok(())
    }

    /// A map over tensors already in memory (`label` names them in errors).
    pub fn from_rows(label: &Path, rows: Vec<(String, Vec<usize>, Vec<f32>)>) -> Self {
        let tensors = rows.into_iter().map(|(n, shape, values)| (n, Stored::Host(HostTensor { shape, values }))).collect();
        Self { path: label.to_path_buf(), files: Vec::new(), tensors, problems: Vec::new() }
    }

    /// A map over a GGUF file's tensors, already under their HF names.
    pub(crate) fn from_gguf(path: &Path, tensors: Vec<(String, crate::gguf::PendingTensor)>) -> Self {
        let tensors = tensors.into_iter().map(|(n, t)| (n, Stored::Gguf(t))).collect();
        Self { path: path.to_path_buf(), files: Vec::new(), tensors, problems: Vec::new() }
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

    /// Takes `name` with the expected shape, converted to f32 from its stored float dtype. A
    /// missing, mis-shaped or non-float tensor is recorded (so one error lists every problem) and
    /// zeros are returned in its place.
    pub fn take(&mut self, name: &str, shape: &[usize]) -> HostTensor {
        let zeros = || HostTensor { shape: shape.to_vec(), values: vec![0.0; shape.iter().product()] };
        let problem = match self.tensors.remove(name) {
            None => "missing".to_string(),
            Some(Stored::Host(t)) if t.shape == shape && t.values.len() == shape.iter().product::<usize>() => return t,
            Some(Stored::Host(t)) => format!("shape {:?}, expected {shape:?}", t.shape),
            Some(Stored::Gguf(t)) if t.shape() == shape => return HostTensor { shape: shape.to_vec(), values: t.load() },
            Some(Stored::Gguf(t)) => format!("shape {:?} ({}), expected {shape:?}", t.shape(), t.describe()),
            Some(Stored::Mapped(k, info)) => match (info.shape == shape, FLOAT_DTYPES.contains(&info.dtype)) {
                (true, true) => {
                    let file = &self.files[k];
                    let values = to_f32(&file.view(&info)).expect("every FLOAT_DTYPES dtype converts");
                    // Converted: its file pages need not stay resident beside the f32 copy.
                    rmtrain_core::mmap::release(&file.map, file.bytes(&info));
                    return HostTensor { shape: shape.to_vec(), values };
                }
                (true, false) => format!("dtype {}, expected a float dtype (F32, F16, BF16 or F64)", info.dtype),
                (false, true) => format!("shape {:?}, expected {shape:?}", info.shape),
                (false, false) => format!("shape {:?} and dtype {}, expected {shape:?} of a float dtype", info.shape, info.dtype),
            },
        };
        self.problems.push(format!("{name}: {problem}"));
        zeros()
    }

    /// Removes a tensor that is tolerated when present (listed by the caller with its reason).
    pub fn discard(&mut self, name: &str) {
        self.tensors.remove(name);
    }

    /// Fails when any tensor was missing, mis-shaped, not a float, or left over (unexpected).
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

/// The weights file of an HF folder, and the index of a sharded one.
pub const WEIGHTS_FILE: &str = "model.safetensors";
pub const WEIGHTS_INDEX: &str = "model.safetensors.index.json";

/// The shards an index names, each with the tensors its `weight_map` puts there, in file order.
fn shard_files(index: &Path) -> Result<Vec<(String, Vec<String>)>, ModelError> {
    let text = std::fs::read_to_string(index).map_err(|e| ModelError::file(index, e))?;
    let json: serde_json::Value = serde_json::from_str(&text).map_err(|e| ModelError::file(index, format!("invalid JSON: {e}")))?;
    let map = json
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| ModelError::file(index, "field \"weight_map\": missing or not an object"))?;
    let mut shards: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, file) in map {
        let file = file.as_str().ok_or_else(|| ModelError::file(index, format!("field \"weight_map.{name}\": not a file name")))?;
        if file.contains('/') || file.contains("..") {
            return Err(ModelError::file(index, format!("field \"weight_map.{name}\": {file:?} is not a file in this folder")));
        }
        shards.entry(file.to_string()).or_default().push(name.clone());
    }
    if shards.is_empty() {
        return Err(ModelError::file(index, "field \"weight_map\": empty"));
    }
    Ok(shards.into_iter().collect())
}

/// sha256 identifying a folder's weights: of `model.safetensors`, or for a sharded checkpoint of
/// the index followed by every shard's own sha256 (in file-name order).
/// A `.gguf` file: its own sha256.
pub fn weights_sha256(dir: &Path) -> Result<String, ModelError> {
    if dir.is_file() {
        return Ok(rmtrain_core::sha256_file(dir)?);
    }
    let single = dir.join(WEIGHTS_FILE);
    let index = dir.join(WEIGHTS_INDEX);
    if single.is_file() || !index.is_file() {
        return Ok(rmtrain_core::sha256_file(&single)?);
    }
    let mut parts = vec![rmtrain_core::sha256_file(&index)?];
    for (shard, _) in shard_files(&index)? {
        parts.push(rmtrain_core::sha256_file(&dir.join(shard))?);
    }
    Ok(rmtrain_core::sha256_bytes(parts.join("+").as_bytes()))
}

/// The tensor's values as f32, or None for a dtype not in [`FLOAT_DTYPES`] (integers, bool, fp8).
fn to_f32(view: &TensorView<'_>) -> Option<Vec<f32>> {
    let data = view.data();
    Some(match view.dtype() {
        Dtype::F32 => data.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect(),
        Dtype::F16 => data.chunks_exact(2).map(|b| f16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
        Dtype::BF16 => data.chunks_exact(2).map(|b| bf16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
        Dtype::F64 => data
            .chunks_exact(8)
            .map(|b| f64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]) as f32)
            .collect(),
        _ => return None,
    })
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
    let out = safetensors::tensor::serialize(views, metadata).map_err(|e| ModelError::file(path, e))?;
    rmtrain_core::write_atomic(path, &out)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes `(name, dtype, shape, little-endian bytes)` rows as a safetensors file.
    fn write_raw(path: &Path, rows: &[(&str, Dtype, Vec<usize>, Vec<u8>)]) {
        let views: Vec<(String, TensorView)> = rows
            .iter()
            .map(|(n, d, s, b)| (n.to_string(), TensorView::new(*d, s.clone(), b).expect("view")))
            .collect();
        std::fs::write(path, safetensors::tensor::serialize(views, None).expect("serialize")).expect("write");
    }

    fn le16(bits: &[u16]) -> Vec<u8> {
        bits.iter().flat_map(|b| b.to_le_bytes()).collect()
    }

    #[test]
    fn take_converts_each_float_dtype_from_the_map() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("model.safetensors");
        write_raw(
            &path,
            &[
                // f16: 1, -2, the nearest to 1/3, the smallest subnormal.
                ("half", Dtype::F16, vec![4], le16(&[0x3c00, 0xc000, 0x3555, 0x0001])),
                ("brain", Dtype::BF16, vec![2], le16(&[0x3f80, 0xc040])),
                ("double", Dtype::F64, vec![1], 0.1f64.to_le_bytes().to_vec()),
                ("single", Dtype::F32, vec![2, 1], [1.5f32, -0.25].iter().flat_map(|x| x.to_le_bytes()).collect()),
            ],
        );
        let mut map = TensorMap::read(&path).expect("read");
        assert_eq!(map.take("half", &[4]).values, vec![1.0, -2.0, 0.333_251_95, 5.960_464_5e-8]);
        assert_eq!(map.take("brain", &[2]).values, vec![1.0, -3.0]);
        assert_eq!(map.take("double", &[1]).values, vec![0.1f32]);
        assert_eq!(map.take("single", &[2, 1]).values, vec![1.5, -0.25]);
        map.finish().expect("every tensor taken");
    }

    #[test]
    fn strict_loading_reports_every_problem_at_once_and_names_integer_dtypes() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("model.safetensors");
        let f32s = |n: usize| vec![0u8; 4 * n];
        write_raw(
            &path,
            &[
                ("ids", Dtype::I64, vec![3], vec![0u8; 24]),
                ("wrong_shape", Dtype::F32, vec![2, 3], f32s(6)),
                ("extra", Dtype::F32, vec![1], f32s(1)),
                ("fine", Dtype::F32, vec![2], f32s(2)),
            ],
        );
        let mut map = TensorMap::read(&path).expect("read");
        assert!(map.contains("ids") && map.names().count() == 4);
        assert_eq!(map.take("ids", &[3]).values, vec![0.0; 3], "zeros stand in for a refused tensor");
        map.take("wrong_shape", &[3, 2]);
        map.take("absent", &[1]);
        map.take("fine", &[2]);
        let err = map.finish().expect_err("must fail").to_string();
        for part in ["ids: dtype I64, expected a float dtype", "wrong_shape: shape [2, 3], expected [3, 2]", "absent: missing", "extra: unexpected"] {
            assert!(err.contains(part), "{err} lacks {part:?}");
        }
        assert!(!err.contains("fine"), "{err}");
    }

    #[test]
    fn a_file_that_is_not_safetensors_is_refused_by_name() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("model.safetensors");
        std::fs::write(&path, b"not a safetensors file").expect("write");
        let err = TensorMap::read(&path).err().expect("must fail").to_string();
        assert!(err.contains("model.safetensors") && err.contains("not a safetensors file"), "{err}");
    }

    #[test]
    fn written_tensors_read_back() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("model.safetensors");
        write_safetensors(&path, &[("w".into(), vec![2, 2], vec![1.0, 2.0, 3.0, 4.0])]).expect("write");
        let mut map = TensorMap::read(&path).expect("read");
        assert_eq!(map.take("w", &[2, 2]).values, vec![1.0, 2.0, 3.0, 4.0]);
        map.finish().expect("strict");
    }

    /// Peak resident memory (VmHWM) of loading weights the size of all-MiniLM-L6-v2's (22.7 M
    /// f32 parameters, 91 MB): the file is written first, then the peak is reset and every tensor
    /// taken and kept (standing in for the model's own copy). Reading the whole file and
    /// converting it up front peaked at twice the model (+172 MiB); converting tensor by tensor
    /// from the map stays near one copy (+91 MiB). The bound sits between the two.
    /// `--nocapture` prints the figures.
    #[cfg(target_os = "linux")]
    #[test]
    fn loading_peaks_near_one_copy_of_the_weights() {
        let (d, ff, vocab, layers) = (384, 1536, 30522, 6);
        let mut shapes: Vec<(String, Vec<usize>)> = vec![
            ("embeddings.word_embeddings.weight".into(), vec![vocab, d]),
            ("embeddings.position_embeddings.weight".into(), vec![512, d]),
            ("embeddings.token_type_embeddings.weight".into(), vec![2, d]),
        ];
        for l in 0..layers {
            for (name, shape) in [("q", vec![d, d]), ("k", vec![d, d]), ("v", vec![d, d]), ("o", vec![d, d]), ("up", vec![ff, d]), ("down", vec![d, ff])] {
                shapes.push((format!("layer.{l}.{name}.bias"), vec![shape[0]]));
                shapes.push((format!("layer.{l}.{name}.weight"), shape));
            }
        }
        let dir = std::env::temp_dir().join(format!("rmtrain-rss-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("model.safetensors");
        {
            let rows: Vec<(String, Vec<usize>, Vec<f32>)> = shapes
                .iter()
                .map(|(n, s)| (n.clone(), s.clone(), (0..s.iter().product::<usize>()).map(|i| (i % 97) as f32 * 1e-3).collect()))
                .collect();
            write_safetensors(&path, &rows).expect("write");
        }
        let status = |key: &str| -> f64 {
            let text = std::fs::read_to_string("/proc/self/status").expect("status");
            let line = text.lines().find(|l| l.starts_with(key)).expect("key");
            line.split_whitespace().nth(1).expect("kB").parse::<f64>().expect("number") / 1024.0
        };
        std::fs::write("/proc/self/clear_refs", "5").expect("reset the peak");
        let base = status("VmRSS:");
        let mut map = TensorMap::read(&path).expect("read");
        let mut model = Vec::new();
        for (name, shape) in &shapes {
            model.push(map.take(name, shape));
        }
        map.finish().expect("strict");
        let params: usize = model.iter().map(|t| t.values.len()).sum();
        println!(
            "file {:.1} MiB, model copy {:.1} MiB; RSS before {base:.1} MiB, peak {:.1} MiB (+{:.1}), after {:.1} MiB (anon {:.1}, file {:.1})",
            std::fs::metadata(&path).expect("size").len() as f64 / (1 << 20) as f64,
            (params * 4) as f64 / (1 << 20) as f64,
            status("VmHWM:"),
            status("VmHWM:") - base,
            status("VmRSS:"),
            status("RssAnon:"),
            status("RssFile:"),
        );
        let (peak, copy) = (status("VmHWM:") - base, (params * 4) as f64 / (1 << 20) as f64);
        std::fs::remove_dir_all(&dir).expect("cleanup");
        assert!(peak < 1.5 * copy, "loading peaked at +{peak:.1} MiB for a {copy:.1} MiB model: more than one copy in memory");
    }
}
