//! The train pairs a run uses: read, cut to `max_train_pairs`, labels flipped on purpose by the
//! noise harness, and the fingerprint that tells a resumed or reused run it saw the same data.

use crate::Result;
use rmtrain_data::Pair;
use std::path::Path;

pub struct TrainSet {
    pub pairs: Vec<Pair>,
    /// sha256 of the file plus the flip settings: equal fingerprints mean equal pairs.
    pub data_sha256: String,
    /// Pairs whose labels were flipped on purpose.
    pub flipped: usize,
}

/// The first `max_pairs` pairs of `path` (all when None), with round(`flip_fraction` · n) labels
/// flipped (seeded by `flip_seed`).
pub fn prepare_train_set(path: &Path, max_pairs: Option<usize>, flip_fraction: f64, flip_seed: u64) -> Result<TrainSet> {
    let mut pairs = rmtrain_data::read_pairs(path)?;
    if let Some(n) = max_pairs {
        pairs.truncate(n);
    }
    let flipped = rmtrain_data::flip_labels(&mut pairs, flip_fraction, flip_seed)?;
    let data_sha256 = format!("{}+flip{}@{}", rmtrain_core::sha256_file(path)?, flip_fraction, flip_seed);
    Ok(TrainSet { pairs, data_sha256, flipped })
}
