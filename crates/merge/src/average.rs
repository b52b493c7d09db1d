//! WARM: weight averaging of reward models fine-tuned from one shared initialisation
//! (Ramé et al. 2024, "WARM: On the Benefits of Weight Averaged Reward Models", arXiv 2401.12187;
//! mergekit's `linear` method is the same arithmetic). θ_WARM = Σ_i w_i θ_i with Σ w_i = 1.
//!
//! Streams slice by slice: each member's weights are memory-mapped, and for each tensor slices of
//! 1 Mi elements are read from every member, summed in f64 and written out in the input dtype, so
//! memory holds a few MB per member, never a tensor or N models. Refuses folders that differ in
//! config, tensor names, shapes, dtypes or tokenizer; warns (refuses under `strict`) when manifests
//! show different init weights, since averaging only works along the linear mode connectivity a
//! shared pre-training + init gives.
//!
//! The average's `rmtrain.json` carries what scoring it needs: the members' `max_length` and, when
//! every member has them, the weighted mean of their reward mean/std (for z-normalised ensembles).

use crate::safetensors_stream::{encode, header, MappedSafetensors, FLOAT_DTYPES, INTEGER_DTYPES};
use crate::MergeError;
use rmtrain_core::{AtomicDir, Manifest};
use safetensors::tensor::TensorInfo;
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

/// The member folders, checked alike and opened.
struct Members {
    /// Each member's mapped `model.safetensors`, in the order of the folders.
    files: Vec<MappedSafetensors>,
    /// Each member's `rmtrain.json`, None where it has none (e.g. an imported HF folder).
    manifests: Vec<Option<Manifest>>,
    warnings: Vec<String>,
}

/// Checks that every folder has the first one's config (up to the allowed keys), tokenizer and
/// tensor layout, and that every tensor is a float that can be averaged or an integer buffer.
fn check_members(dirs: &[PathBuf], strict: bool) -> Result<Members, MergeError> {
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
    let mut files = vec![MappedSafetensors::open(&first.join("model.safetensors"))?];
    // Members are checked to share every dtype below, so the first member's decide.
    if let Some((name, info)) = files[0].tensors.iter().find(|(_, i)| !FLOAT_DTYPES.contains(&i.dtype) && !INTEGER_DTYPES.contains(&i.dtype)) {
        return Err(MergeError::file(
            &files[0].path,
            format!("tensor {name}: dtype {} cannot be averaged (F32, F64, F16 and BF16 can; integer buffers are copied)", info.dtype),
        ));
    }
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
        let f = MappedSafetensors::open(&d.join("model.safetensors"))?;
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
                ("dtype", info.dtype.to_string(), other.dtype.to_string()),
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
    let manifests: Vec<Option<Manifest>> = dirs.iter().map(|d| Manifest::read(d).ok()).collect();
    let inits: Vec<Option<String>> = manifests.iter().map(|m| m.as_ref().and_then(|m| m.init_weights_sha256.clone())).collect();
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
    Ok(Members { files, manifests, warnings })
}

/// The members' common `max_length`. When they differ, the smallest: every member was trained (and
/// had its reward statistics computed) on texts at least that long, so none scores text longer
/// than it has seen. Returns the value, how it was chosen (for the recipe) and any warning.
fn common_max_length(dirs: &[PathBuf], manifests: &[Option<Manifest>]) -> (Option<usize>, &'static str, Option<String>) {
    let lengths: Vec<Option<usize>> = manifests.iter().map(|m| m.as_ref().and_then(|m| m.max_length)).collect();
    let distinct: BTreeSet<&Option<usize>> = lengths.iter().collect();
    if distinct.len() == 1 {
        return match lengths[0] {
            Some(n) => (Some(n), "the members' common value", None),
            None => (None, "none: no member records one", Some("no member's rmtrain.json records max_length: the average has none".into())),
        };
    }
    let smallest = lengths.iter().flatten().min().copied();
    let listed = dirs
        .iter()
        .zip(&lengths)
        .map(|(d, n)| format!("{}={}", d.display(), n.map_or("none".into(), |n| n.to_string())))
        .collect::<Vec<_>>()
        .join(", ");
    let warning = format!("members differ in max_length ({listed}): the average uses the smallest, {}", smallest.map_or("none".into(), |n| n.to_string()));
    (smallest, "the smallest of the members' (they differ)", Some(warning))
}

/// `(Σ w_i mean_i, Σ w_i std_i)` of the members' reward statistics when every member records both;
/// else None and a warning naming those that do not. The weighted mean is an approximation of the
/// average's own statistics (which the pipeline may compute and overwrite); it lets a WARM model
/// be z-normalised in an ensemble without rescoring a reference set.
fn weighted_reward_stats(dirs: &[PathBuf], manifests: &[Option<Manifest>], weights: &[f64]) -> (Option<(f64, f64)>, Option<String>) {
    let stats: Vec<Option<(f64, f64)>> = manifests.iter().map(|m| m.as_ref().and_then(|m| m.reward_mean.zip(m.reward_std))).collect();
    let lacking: Vec<String> = dirs.iter().zip(&stats).filter(|(_, s)| s.is_none()).map(|(d, _)| d.display().to_string()).collect();
    if !lacking.is_empty() {
        let warning = format!(
            "{} record no reward_mean/reward_std in rmtrain.json: the average has none (score a reference set with it to z-normalise it in an ensemble)",
            lacking.join(", ")
        );
        return (None, Some(warning));
    }
    let weighted = stats.iter().flatten().zip(weights).fold((0.0, 0.0), |(m, s), ((mi, si), w)| (m + w * mi, s + w * si));
    (Some(weighted), None)
}

/// Averages the checkpoint folders `dirs` into the HF folder `out` (written atomically).
///
/// The average's `rmtrain.json` records:
/// - `max_length`: the members' common value; if they differ, the smallest, with a warning naming
///   each member's;
/// - `reward_mean` / `reward_std`: the weighted mean of the members' (Σ w_i mean_i, Σ w_i std_i)
///   when every member records them, else none, with a warning. An approximation of the average's
///   own statistics, which the pipeline may compute and overwrite; the manifest's `recipe` says so.
pub fn average_checkpoints(dirs: &[PathBuf], out: &Path, opts: &AverageOptions) -> Result<AverageReport, MergeError> {
    let weights = normalised_weights(dirs.len(), &opts.weights)?;
    let Members { files, manifests, mut warnings } = check_members(dirs, opts.strict)?;
    let staging = AtomicDir::new(out)?;
    let (tensors, bytes_written) = write_average(&files, &weights, &staging.path().join("model.safetensors"), out)?;
    copy_config_and_tokenizer(&dirs[0], staging.path())?;
    average_manifest(dirs, &manifests, &weights, opts, &mut warnings).write(staging.path())?;
    let out_dir = staging.commit()?;
    Ok(AverageReport { out: out_dir, members: dirs.to_vec(), weights, tensors, bytes_written, warnings })
}

/// Writes Σ w_i θ_i of every float tensor (and the members' identical integer buffers) to `path`
/// in the first member's tensor order. Returns the tensor count and the bytes written.
fn write_average(files: &[MappedSafetensors], weights: &[f64], path: &Path, out: &Path) -> Result<(usize, u64), MergeError> {
    // Output layout: the first member's tensor order, offsets from 0 (identical sizes in every member).
    let mut order: Vec<(&String, &TensorInfo)> = files[0].tensors.iter().collect();
    order.sort_by_key(|(_, i)| i.data_offsets.0);
    let mut layout = Vec::with_capacity(order.len());
    let mut offset = 0;
    for (name, info) in &order {
        let len = info.data_offsets.1 - info.data_offsets.0;
        layout.push(((*name).clone(), TensorInfo { dtype: info.dtype, shape: info.shape.clone(), data_offsets: (offset, offset + len) }));
        offset += len;
    }
    let mut metadata = files[0].metadata.clone().unwrap_or_default();
    metadata.entry("format".into()).or_insert_with(|| "pt".into());
    let header_bytes = header(Some(metadata), layout).map_err(|e| MergeError::file(out, e))?;
    let mut w = std::io::BufWriter::new(std::fs::File::create(path).map_err(|e| MergeError::file(path, e))?);
    let io = |e: std::io::Error| MergeError::file(path, e);
    w.write_all(&header_bytes).map_err(io)?;
    for (name, info) in &order {
        if INTEGER_DTYPES.contains(&info.dtype) {
            // Integer buffers (e.g. HF's `embeddings.position_ids`) are not weights: copied when
            // every member has the same bytes, refused otherwise. Compared in place in the maps.
            let bytes = files[0].view(name)?.data();
            for f in &files[1..] {
                if f.view(name)?.data() != bytes {
                    return Err(MergeError::Mismatch(format!("integer tensor {name} ({}) differs between members", info.dtype)));
                }
            }
            w.write_all(bytes).map_err(io)?;
            files.iter().for_each(|f| f.release(name));
            continue;
        }
        // In slices of SLICE elements: memory holds one slice per member, not one tensor.
        let total: usize = info.shape.iter().product();
        let mut from = 0;
        while from < total {
            let count = SLICE.min(total - from);
            let mut acc = vec![0f64; count];
            for (f, wt) in files.iter().zip(weights) {
                let v = f.read_f64_range(name, from, count)?;
                acc.iter_mut().zip(&v).for_each(|(a, x)| *a += x * wt);
            }
            let bytes = encode(info.dtype, &acc)
                .ok_or_else(|| MergeError::file(&files[0].path, format!("tensor {name}: dtype {} cannot be averaged", info.dtype)))?;
            w.write_all(&bytes).map_err(io)?;
            from += count;
        }
    }
    w.into_inner().map_err(|e| MergeError::file(path, e.error().to_string()))?.sync_all().map_err(io)?;

    Ok((order.len(), (header_bytes.len() + offset) as u64))
}

/// config.json and the tokenizer files of the first member (checked identical in every member).
fn copy_config_and_tokenizer(first: &Path, staging: &Path) -> Result<(), MergeError> {
    std::fs::copy(first.join("config.json"), staging.join("config.json")).map_err(|e| MergeError::file(first.join("config.json"), e))?;
    for name in TOKENIZER_FILES {
        let src = first.join(name);
        if src.is_file() {
            std::fs::copy(&src, staging.join(name)).map_err(|e| MergeError::file(&src, e))?;
        }
    }
    Ok(())
}

/// The average's `rmtrain.json`: the members and weights, their common max_length and the
/// weighted mean of their reward statistics (warnings when they disagree or lack them).
fn average_manifest(dirs: &[PathBuf], manifests: &[Option<Manifest>], weights: &[f64], opts: &AverageOptions, warnings: &mut Vec<String>) -> Manifest {
    let (max_length, max_length_rule, warning) = common_max_length(dirs, manifests);
    warnings.extend(warning);
    let (reward_stats, warning) = weighted_reward_stats(dirs, manifests, weights);
    warnings.extend(warning);
    let reward_stats_rule = match reward_stats {
        Some(_) => "weighted mean of the members' (an approximation: the pipeline may overwrite it with the average's own statistics)",
        None => "none: not every member records them",
    };
    let first_manifest = manifests[0].as_ref();
    Manifest {
        rmtrain_version: env!("CARGO_PKG_VERSION").into(),
        kind: "average".into(),
        init_weights_sha256: first_manifest.and_then(|m| m.init_weights_sha256.clone()),
        pooling: first_manifest.map(|m| m.pooling.clone()).unwrap_or_default(),
        recipe: serde_json::json!({
            "method": "weight average (WARM)",
            "strict": opts.strict,
            "max_length": max_length_rule,
            "reward_stats": reward_stats_rule,
        }),
        max_length,
        reward_mean: reward_stats.map(|(mean, _)| mean),
        reward_std: reward_stats.map(|(_, std)| std),
        members: dirs
            .iter()
            .zip(weights)
            .zip(manifests)
            .map(|((d, w), m)| {
                serde_json::json!({
                    "dir": d, "weight": w,
                    "init_weights_sha256": m.as_ref().and_then(|m| m.init_weights_sha256.clone()),
                    "seed": m.as_ref().map(|m| m.seed), "step": m.as_ref().map(|m| m.step),
                    "max_length": m.as_ref().and_then(|m| m.max_length),
                    "reward_mean": m.as_ref().and_then(|m| m.reward_mean), "reward_std": m.as_ref().and_then(|m| m.reward_std),
                })
            })
            .collect(),
        ..Default::default()
    }
}

/// One tensor in memory: HF name, shape, f32 values (row-major).
pub type NamedTensor = (String, Vec<usize>, Vec<f32>);

/// θ(t) = (1 − t)·A + t·B for every tensor of two checkpoint folders (checked like averaging), in
/// memory, as `(name, shape, values)` rows: the points of a mode-connectivity curve.
pub fn interpolate_tensors(a: &Path, b: &Path, t: f64) -> Result<Vec<NamedTensor>, MergeError> {
    let Members { files, .. } = check_members(&[a.to_path_buf(), b.to_path_buf()], false)?;
    // Float tensors only: integer buffers (position ids) are not parameters of the model.
    let names = files[0].tensors.iter().filter(|(_, i)| FLOAT_DTYPES.contains(&i.dtype));
    let mut out = Vec::new();
    for (name, info) in names {
        let x = files[0].read_f64(name)?;
        let y = files[1].read_f64(name)?;
        out.push((name.clone(), info.shape.clone(), x.iter().zip(&y).map(|(x, y)| ((1.0 - t) * x + t * y) as f32).collect()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use safetensors::tensor::{Dtype, TensorView};
    use safetensors::SafeTensors;

    type Rows = Vec<(&'static str, Dtype, Vec<usize>, Vec<u8>)>;

    fn le<const N: usize>(values: impl IntoIterator<Item = [u8; N]>) -> Vec<u8> {
        values.into_iter().flatten().collect()
    }

    /// A folder with the files averaging reads: a one-key config, a tokenizer, weights from
    /// `rows` and `manifest` as rmtrain.json.
    fn member(root: &Path, name: &str, rows: &Rows, manifest: Manifest) -> PathBuf {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir).expect("dir");
        std::fs::write(dir.join("config.json"), r#"{"hidden_size": 2}"#).expect("config");
        std::fs::write(dir.join("tokenizer.json"), "{}").expect("tokenizer");
        let views: Vec<(String, TensorView)> =
            rows.iter().map(|(n, d, s, b)| (n.to_string(), TensorView::new(*d, s.clone(), b).expect("view"))).collect();
        std::fs::write(dir.join("model.safetensors"), safetensors::tensor::serialize(views, None).expect("serialize")).expect("weights");
        manifest.write(&dir).expect("manifest");
        dir
    }

    fn rows(w: [f32; 2], h: [f64; 2], ids: [i64; 3]) -> Rows {
        vec![
            ("w", Dtype::F32, vec![2], le(w.map(f32::to_le_bytes))),
            ("h", Dtype::F16, vec![2], le(h.map(|x| half::f16::from_f64(x).to_le_bytes()))),
            ("b", Dtype::BF16, vec![2], le(h.map(|x| half::bf16::from_f64(x).to_le_bytes()))),
            ("ids", Dtype::I64, vec![3], le(ids.map(i64::to_le_bytes))),
        ]
    }

    fn trained(max_length: usize, stats: Option<(f64, f64)>) -> Manifest {
        Manifest {
            kind: "train".into(),
            init_weights_sha256: Some("0".repeat(64)),
            max_length: Some(max_length),
            reward_mean: stats.map(|s| s.0),
            reward_std: stats.map(|s| s.1),
            ..Default::default()
        }
    }

    #[test]
    fn the_average_keeps_dtypes_and_its_manifest_carries_max_length_and_weighted_reward_stats() {
        let root = tempfile::tempdir().expect("tmp");
        let a = member(root.path(), "a", &rows([1.0, 2.0], [1.0, -2.0], [0, 1, 2]), trained(64, Some((1.0, 2.0))));
        let b = member(root.path(), "b", &rows([5.0, 6.0], [3.0, 2.0], [0, 1, 2]), trained(64, Some((3.0, 4.0))));
        let out = root.path().join("avg");
        let opts = AverageOptions { weights: Some(vec![3.0, 1.0]), strict: true };
        let report = average_checkpoints(&[a, b], &out, &opts).expect("average");
        assert!(report.warnings.is_empty(), "{:?}", report.warnings);

        let manifest = Manifest::read(&out).expect("manifest");
        assert_eq!(manifest.max_length, Some(64));
        assert_eq!((manifest.reward_mean, manifest.reward_std), (Some(0.75 * 1.0 + 0.25 * 3.0), Some(0.75 * 2.0 + 0.25 * 4.0)));
        assert!(manifest.recipe["reward_stats"].as_str().expect("rule").starts_with("weighted mean"), "{}", manifest.recipe);

        let bytes = std::fs::read(out.join("model.safetensors")).expect("weights");
        assert_eq!(report.bytes_written, bytes.len() as u64);
        let st = SafeTensors::deserialize(&bytes).expect("a valid safetensors file");
        let (_, metadata) = SafeTensors::read_metadata(&bytes).expect("metadata");
        assert_eq!(metadata.metadata().as_ref().and_then(|m| m.get("format")).map(String::as_str), Some("pt"));
        let read = |name: &str, dtype: Dtype| {
            let view = st.tensor(name).expect("tensor");
            assert_eq!(view.dtype(), dtype, "{name} keeps its dtype");
            crate::safetensors_stream::decode(dtype, view.data()).expect("float")
        };
        assert_eq!(read("w", Dtype::F32), vec![2.0, 3.0]);
        assert_eq!(read("h", Dtype::F16), vec![1.5, -1.0]);
        assert_eq!(read("b", Dtype::BF16), vec![1.5, -1.0]);
        assert_eq!(st.tensor("ids").expect("ids").data(), le([0i64, 1, 2].map(i64::to_le_bytes)).as_slice(), "integer buffer copied");
    }

    #[test]
    fn members_that_differ_in_max_length_or_lack_reward_stats_average_with_warnings() {
        let root = tempfile::tempdir().expect("tmp");
        let a = member(root.path(), "a", &rows([1.0, 2.0], [1.0, 2.0], [0, 1, 2]), trained(64, Some((1.0, 2.0))));
        let b = member(root.path(), "b", &rows([1.0, 2.0], [1.0, 2.0], [0, 1, 2]), trained(32, None));
        let out = root.path().join("avg");
        let report = average_checkpoints(&[a.clone(), b.clone()], &out, &Default::default()).expect("average");
        let manifest = Manifest::read(&out).expect("manifest");
        assert_eq!(manifest.max_length, Some(32), "the smallest");
        assert_eq!((manifest.reward_mean, manifest.reward_std), (None, None));
        let warned = |parts: &[&str]| report.warnings.iter().any(|w| parts.iter().all(|p| w.contains(p)));
        let (a, b) = (a.display().to_string(), b.display().to_string());
        assert!(warned(&["max_length", &format!("{a}=64"), &format!("{b}=32")]), "{:?}", report.warnings);
        assert!(warned(&["reward_mean", &b]) && !warned(&["reward_mean", &format!("{a},")]), "{:?}", report.warnings);
    }

    #[test]
    fn integer_buffers_that_differ_are_refused_and_leave_no_output() {
        let root = tempfile::tempdir().expect("tmp");
        let a = member(root.path(), "a", &rows([1.0, 2.0], [1.0, 2.0], [0, 1, 2]), trained(64, None));
        let b = member(root.path(), "b", &rows([1.0, 2.0], [1.0, 2.0], [0, 1, 3]), trained(64, None));
        let out = root.path().join("avg");
        let err = average_checkpoints(&[a, b], &out, &Default::default()).expect_err("refused").to_string();
        assert!(err.contains("integer tensor ids (I64) differs between members"), "{err}");
        assert!(!out.exists());
    }
}
