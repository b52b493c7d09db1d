//! WARM: weight averaging of reward models fine-tuned from one shared initialisation
//! (Ramé et al. 2024, "WARM: On the Benefits of Weight Averaged Reward Models", arXiv 2401.12187;
//! mergekit's `linear` method is the same arithmetic). θ_WARM = Σ_i w_i θ_i with Σ w_i = 1.
//!
//! Streams slice by slice: for each tensor, slices of 1 Mi elements are read from every member with
//! a seek, summed in f64 and written out, so memory holds a few MB, never a tensor or N models. Refuses folders that differ in config, tensor names, shapes, dtypes or tokenizer; warns
//! (refuses under `strict`) when manifests show different init weights, since averaging only
//! works along the linear mode connectivity a shared pre-training + init gives.

use crate::safetensors_stream::{encode, StreamedFile, TensorInfo};
use crate::MergeError;
use rmtrain_core::{AtomicDir, Manifest};
use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};

/// config.json keys that may differ between members: they do not change the weights' layout
/// (WARM members differ in dropout by design).
const CONFIG_KEYS_ALLOWED_TO_DIFFER: [&str; 7] = [
    "_name_or_path",
    "transformers_version",
    "hidden_dropout_prob",
    "attention_probs_dropout_prob",
    "classifier_dropout",
    "dtype",
    "torch_dtype",
];

/// Elements averaged at a time (1 Mi: 8 MiB of f64 accumulator).
const SLICE: usize = 1 << 20;

/// Files copied from the first member (they must be identical across members).
const TOKENIZER_FILES: [&str; 4] = ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt"];

#[derive(Debug, Clone, Default)]
pub struct AverageOptions {
    /// One weight per member (normalised to sum 1); None = uniform.
    pub weights: Option<Vec<f64>>,
    /// Refuse (instead of warning) when members do not share their init weights.
    pub strict: bool,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct AverageReport {
    pub out: PathBuf,
    pub members: Vec<PathBuf>,
    pub weights: Vec<f64>,
    pub tensors: usize,
    pub bytes_written: u64,
    pub warnings: Vec<String>,
}

fn read_json(path: &Path) -> Result<serde_json::Value, MergeError> {
    let text = std::fs::read_to_string(path).map_err(|e| MergeError::file(path, e))?;
    serde_json::from_str(&text).map_err(|e| MergeError::file(path, format!("invalid JSON: {e}")))
}

fn is_float(dtype: &str) -> bool {
    matches!(dtype, "F32" | "F64" | "F16" | "BF16")
}

fn normalised_weights(n: usize, weights: &Option<Vec<f64>>) -> Result<Vec<f64>, MergeError> {
    match weights {
        None => Ok(vec![1.0 / n as f64; n]),
        Some(w) if w.len() != n => Err(MergeError::Options(format!("--weights has {} values for {n} folders", w.len()))),
        Some(w) if w.iter().any(|x| !x.is_finite() || *x < 0.0) || w.iter().sum::<f64>() <= 0.0 => {
            Err(MergeError::Options(format!("--weights must be non-negative with a positive sum, got {w:?}")))
        }
        Some(w) => {
            let s: f64 = w.iter().sum();
            Ok(w.iter().map(|x| x / s).collect())
        }
    }
}

/// Checks that every folder has the first one's config (up to the allowed keys), tokenizer and
/// tensor layout. Returns the opened weight files and warnings.
fn check_members(dirs: &[PathBuf], strict: bool) -> Result<(Vec<StreamedFile>, Vec<String>), MergeError> {
    if dirs.len() < 2 {
        return Err(MergeError::Options(format!("averaging needs at least 2 folders, got {}", dirs.len())));
    }
    let mut warnings = Vec::new();
    let config_of = |d: &Path| -> Result<serde_json::Map<String, serde_json::Value>, MergeError> {
        let path = d.join("config.json");
        match read_json(&path)? {
            serde_json::Value::Object(mut m) => {
                for k in CONFIG_KEYS_ALLOWED_TO_DIFFER {
                    m.remove(k);
                }
                Ok(m)
            }
            _ => Err(MergeError::file(path, "config.json is not a JSON object")),
        }
    };
    let first = &dirs[0];
    let base_config = config_of(first)?;
    // Every tokenizer file the first folder has must be byte-identical in the others.
    let tokenizer_sha = |d: &Path| -> Result<Vec<(&str, Option<String>)>, MergeError> {
        TOKENIZER_FILES
            .iter()
            .map(|f| {
                let p = d.join(f);
                Ok((*f, if p.is_file() { Some(rmtrain_core::sha256_file(&p)?) } else { None }))
            })
            .collect()
    };
    let base_tok = tokenizer_sha(first)?;
    if base_tok[0].1.is_none() {
        return Err(MergeError::file(first.join("tokenizer.json"), "missing"));
    }
    let mut files = vec![StreamedFile::open(&first.join("model.safetensors"))?];
    for d in &dirs[1..] {
        let config = config_of(d)?;
        let keys: BTreeSet<&String> = base_config.keys().chain(config.keys()).collect();
        for k in keys {
            if base_config.get(k) != config.get(k) {
                return Err(MergeError::Mismatch(format!(
                    "config.json key \"{k}\" differs: {} has {}, {} has {}",
                    first.display(),
                    base_config.get(k).map_or("nothing".into(), |v| v.to_string()),
                    d.display(),
                    config.get(k).map_or("nothing".into(), |v| v.to_string())
                )));
            }
        }
        for ((file, a), (_, b)) in base_tok.iter().zip(tokenizer_sha(d)?) {
            if a.is_some() && *a != b {
                return Err(MergeError::Mismatch(format!("{file} differs between {} and {}", first.display(), d.display())));
            }
        }
        let f = StreamedFile::open(&d.join("model.safetensors"))?;
        let a: BTreeSet<&String> = files[0].tensors.keys().collect();
        let b: BTreeSet<&String> = f.tensors.keys().collect();
        if let Some(name) = a.difference(&b).next() {
            return Err(MergeError::Mismatch(format!("tensor {name} is in {} but not in {}", first.display(), d.display())));
        }
        if let Some(name) = b.difference(&a).next() {
            return Err(MergeError::Mismatch(format!("tensor {name} is in {} but not in {}", d.display(), first.display())));
        }
        for (name, info) in &files[0].tensors {
            let other = &f.tensors[name];
            let differs = [
                ("shape", format!("{:?}", info.shape), format!("{:?}", other.shape)),
                ("dtype", info.dtype.clone(), other.dtype.clone()),
            ];
            if let Some((what, a, b)) = differs.into_iter().find(|(_, a, b)| a != b) {
                return Err(MergeError::Mismatch(format!(
                    "tensor {name} has {what} {a} in {} and {b} in {}",
                    first.display(),
                    d.display()
                )));
            }
        }
        files.push(f);
    }
    // Shared init: WARM's premise. Manifests record the sha256 of the weights training began from.
    let inits: Vec<Option<String>> = dirs.iter().map(|d| Manifest::read(d).ok().and_then(|m| m.init_weights_sha256)).collect();
    let distinct: BTreeSet<&Option<String>> = inits.iter().collect();
    if distinct.len() > 1 || inits.iter().any(Option::is_none) {
        let msg = if inits.iter().any(Option::is_none) {
            "some folders have no rmtrain.json init_weights_sha256: a shared initialisation cannot be verified".to_string()
        } else {
            format!(
                "members were trained from different init weights ({}): without a shared init, weights are not linearly mode connected and their average may be poor",
                dirs.iter().zip(&inits).map(|(d, i)| format!("{}={}", d.display(), &i.as_deref().unwrap_or("?")[..12.min(i.as_deref().unwrap_or("?").len())])).collect::<Vec<_>>().join(", ")
            )
        };
        if strict {
            return Err(MergeError::Mismatch(format!("{msg} (--strict)")));
        }
        warnings.push(msg);
    }
    Ok((files, warnings))
}

/// Averages the checkpoint folders `dirs` into the HF folder `out` (written atomically).
pub fn average_checkpoints(dirs: &[PathBuf], out: &Path, opts: &AverageOptions) -> Result<AverageReport, MergeError> {
    let weights = normalised_weights(dirs.len(), &opts.weights)?;
    let (mut files, warnings) = check_members(dirs, opts.strict)?;
    let staging = AtomicDir::new(out)?;

    // Output layout: the first member's tensor order and offsets (identical sizes in every member).
    let mut order: Vec<(String, TensorInfo)> = files[0].tensors.iter().map(|(n, i)| (n.clone(), i.clone())).collect();
    order.sort_by_key(|(_, i)| i.start);
    let mut header = serde_json::Map::new();
    let mut offset = 0u64;
    for (name, info) in &order {
        let len = info.end - info.start;
        header.insert(name.clone(), serde_json::json!({"dtype": info.dtype, "shape": info.shape, "data_offsets": [offset, offset + len]}));
        offset += len;
    }
    header.insert("__metadata__".into(), files[0].metadata.clone().unwrap_or_else(|| serde_json::json!({"format": "pt"})));
    let mut header_bytes = serde_json::to_vec(&header).map_err(|e| MergeError::file(out, e))?;
    while header_bytes.len() % 8 != 0 {
        header_bytes.push(b' '); // the format pads the header with spaces to 8-byte alignment
    }
    let path = staging.path().join("model.safetensors");
    let mut w = std::io::BufWriter::new(std::fs::File::create(&path).map_err(|e| MergeError::file(&path, e))?);
    let io = |e: std::io::Error| MergeError::file(&path, e);
    w.write_all(&(header_bytes.len() as u64).to_le_bytes()).map_err(io)?;
    w.write_all(&header_bytes).map_err(io)?;
    for (name, info) in &order {
        if !is_float(&info.dtype) {
            // Integer buffers (e.g. HF's `embeddings.position_ids`) are not weights: copied when
            // every member has the same bytes, refused otherwise.
            let bytes = files[0].read_raw(name)?;
            for f in files.iter_mut().skip(1) {
                if f.read_raw(name)? != bytes {
                    return Err(MergeError::Mismatch(format!("integer tensor {name} ({}) differs between members", info.dtype)));
                }
            }
            w.write_all(&bytes).map_err(io)?;
            continue;
        }
        // In slices of SLICE elements: memory holds one slice per member, not one tensor.
        let total: usize = info.shape.iter().product();
        let mut from = 0;
        while from < total {
            let count = SLICE.min(total - from);
            let mut acc = vec![0f64; count];
            for (f, wt) in files.iter_mut().zip(&weights) {
                let v = f.read_f64_range(name, from, count)?;
                acc.iter_mut().zip(&v).for_each(|(a, x)| *a += x * wt);
            }
            let bytes = encode(&info.dtype, &acc)
                .ok_or_else(|| MergeError::file(&files[0].path, format!("tensor {name}: dtype {} cannot be averaged", info.dtype)))?;
            w.write_all(&bytes).map_err(io)?;
            from += count;
        }
    }
    w.into_inner().map_err(|e| MergeError::file(&path, e.error().to_string()))?.sync_all().map_err(io)?;

    let first = &dirs[0];
    std::fs::copy(first.join("config.json"), staging.path().join("config.json")).map_err(|e| MergeError::file(first.join("config.json"), e))?;
    for name in TOKENIZER_FILES {
        let src = first.join(name);
        if src.is_file() {
            std::fs::copy(&src, staging.path().join(name)).map_err(|e| MergeError::file(&src, e))?;
        }
    }
    let first_manifest = Manifest::read(first).ok();
    let manifest = Manifest {
        rmtrain_version: env!("CARGO_PKG_VERSION").into(),
        kind: "average".into(),
        init_weights_sha256: first_manifest.as_ref().and_then(|m| m.init_weights_sha256.clone()),
        pooling: first_manifest.as_ref().map(|m| m.pooling.clone()).unwrap_or_default(),
        recipe: serde_json::json!({"method": "weight average (WARM)", "strict": opts.strict}),
        members: dirs
            .iter()
            .zip(&weights)
            .map(|(d, w)| {
                let m = Manifest::read(d).ok();
                serde_json::json!({
                    "dir": d, "weight": w,
                    "init_weights_sha256": m.as_ref().and_then(|m| m.init_weights_sha256.clone()),
                    "seed": m.as_ref().map(|m| m.seed), "step": m.as_ref().map(|m| m.step),
                })
            })
            .collect(),
        ..Default::default()
    };
    manifest.write(staging.path())?;
    let out_dir = staging.commit()?;
    Ok(AverageReport {
        out: out_dir,
        members: dirs.to_vec(),
        weights,
        tensors: order.len(),
        bytes_written: 8 + header_bytes.len() as u64 + offset,
        warnings,
    })
}

/// θ(t) = (1 − t)·A + t·B for every tensor of two checkpoint folders (checked like averaging), in
/// memory, as `(name, shape, values)` rows: the points of a mode-connectivity curve.
pub fn interpolate_tensors(a: &Path, b: &Path, t: f64) -> Result<Vec<(String, Vec<usize>, Vec<f32>)>, MergeError> {
    let (mut files, _) = check_members(&[a.to_path_buf(), b.to_path_buf()], false)?;
    // Float tensors only: integer buffers (position ids) are not parameters of the model.
    let names: Vec<(String, Vec<usize>)> =
        files[0].tensors.iter().filter(|(_, i)| is_float(&i.dtype)).map(|(n, i)| (n.clone(), i.shape.clone())).collect();
    let mut out = Vec::with_capacity(names.len());
    for (name, shape) in names {
        let x = files[0].read_f64(&name)?;
        let y = files[1].read_f64(&name)?;
        out.push((name, shape, x.iter().zip(&y).map(|(x, y)| ((1.0 - t) * x + t * y) as f32).collect()));
    }
    Ok(out)
}
