//! Append-only JSONL metrics log (one JSON object a line, flushed per line so a crash keeps what
//! was logged). Metric names follow TRL's RewardTrainer: `loss`, `accuracy`, `margin`,
//! `mean_reward`, `min_reward`, `max_reward`, `num_tokens`; eval ones are prefixed `eval_<set>_`.

use crate::CoreError;
use std::io::Write;
use std::path::{Path, PathBuf};

pub struct MetricsLog {
    path: PathBuf,
    file: std::fs::File,
}

impl MetricsLog {
    /// Opens `path` for appending (a resumed run keeps its earlier lines).
    pub fn append(path: &Path) -> Result<Self, CoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| CoreError::io(dir, e))?;
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| CoreError::io(path, e))?;
        Ok(Self { path: path.to_path_buf(), file })
    }

    pub fn log(&mut self, record: &serde_json::Value) -> Result<(), CoreError> {
        let mut line = record.to_string();
        line.push('\n');
        self.file.write_all(line.as_bytes()).map_err(|e| CoreError::io(&self.path, e))?;
        self.file.flush().map_err(|e| CoreError::io(&self.path, e))
    }

    /// Drops lines whose `step` is beyond `last_step` (used on resume: a run stopped after logging
    /// step k but before checkpointing it will log those steps again).
    pub fn truncate_after(path: &Path, last_step: u64) -> Result<(), CoreError> {
        let Ok(text) = std::fs::read_to_string(path) else { return Ok(()) };
        // A line that is not JSON is the half-written last line of a killed run: dropped.
        let kept: Vec<&str> = text
            .lines()
            .filter(|l| serde_json::from_str::<serde_json::Value>(l).is_ok_and(|v| v.get("step").and_then(|s| s.as_u64()).is_none_or(|s| s <= last_step)))
            .collect();
        let mut out = kept.join("\n");
        if !out.is_empty() {
            out.push('\n');
        }
        crate::write_atomic(path, out.as_bytes())
    }
}
