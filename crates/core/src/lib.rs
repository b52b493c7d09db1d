//! Pieces every rmtrain crate shares: atomic file and folder writes, sha256 of files, the run
//! manifest (`rmtrain.json`) and the metrics log. Also derived seeds and progress bars.
//! Nothing here knows about models or tensors.

pub mod fs;
pub mod heap;
pub mod manifest;
pub mod metrics;
pub mod mmap;
pub mod progress;
pub mod seed;

pub use fs::{sha256_bytes, sha256_file, sha256_files, write_atomic, write_json_atomic, AtomicDir};
pub use manifest::Manifest;
pub use metrics::MetricsLog;
pub use mmap::{map_readonly, Mmap};
pub use progress::{progress_bar, ProgressBar};
pub use seed::{mix_seed, splitmix64};

/// Errors of this crate; each carries the path that failed.
#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    #[error("{path}: {source}")]
    Io { path: std::path::PathBuf, source: std::io::Error },
    #[error("{path}: invalid JSON: {source}")]
    Json { path: std::path::PathBuf, source: serde_json::Error },
}

impl CoreError {
    pub fn io(path: impl Into<std::path::PathBuf>, source: std::io::Error) -> Self {
        Self::Io { path: path.into(), source }
    }
}
