//! Preference data for reward-model training: the pair type and JSONL readers for TRL's preference
//! formats ([`pairs`]), the importer that turns the VADER ICWSM-2014 human sentiment ratings into a
//! preference testbed with gold labels ([`vader`]), and label-noise injection ([`noise`]).

pub mod candidates;
pub mod meta;
pub mod noise;
pub mod pairs;
pub mod prompts;
pub mod vader;

pub use candidates::{read_candidate_records, CandidateColumns, CandidateRecord};
pub use meta::{meta_groups_from_texts, read_meta_groups, write_meta_groups, MetaGroup};
pub use noise::{flip_by_strength, flip_labels, StrengthFlip};
pub use pairs::{Pair, ScoreInput, ScoreRecord, distinct_texts, parse_pair_line, read_pairs, read_score_records, write_pairs_jsonl};
pub use prompts::{read_prompt_records, PromptInput, PromptRecord};
pub use vader::{DOMAINS, DomainSummary, Snippet, VaderOptions, VaderSummary, import_vader, load_domain};

use std::path::PathBuf;

/// Errors of this crate. Each one that comes from a file names the file, and the line when there is
/// one, so a message reads like `data/x.jsonl:7: field "chosen": missing`.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    /// `message` is serde_json's, with its "line 1" dropped: we parse one line at a time, so only the
    /// column says anything.
    #[error("{}:{line}: invalid JSON: {message}", path.display())]
    Json { path: PathBuf, line: usize, message: String },
    #[error("{}:{line}: field \"{field}\": {problem}", path.display())]
    Field { path: PathBuf, line: usize, field: String, problem: String },
    /// A line that is malformed as a whole (not a JSON object, not `id<TAB>...`).
    #[error("{}:{line}: {problem}", path.display())]
    Line { path: PathBuf, line: usize, problem: String },
    #[error("{}: no records", path.display())]
    NoRecords { path: PathBuf },
    #[error("invalid option: {0}")]
    InvalidOption(String),
    #[error("pair {index}: {problem}")]
    InvalidPair { index: usize, problem: String },
    #[error(transparent)]
    Core(#[from] rmtrain_core::CoreError),
}

impl DataError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io { path: path.into(), source }
    }
}
