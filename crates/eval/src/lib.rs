//! Evaluation of reward models on preference pairs: metrics of the reward gap d = r_chosen −
//! r_rejected (accuracy with a bootstrap interval, top-label calibration, Brier, Spearman against
//! gold margins), Markdown tables of the results, and PNG charts of them drawn with `plotters`
//! (text in an embedded DejaVu Sans, so no system font or C library is needed), and the preference
//! strength μ̂ ± σ̂ an ensemble assigns to each pair (Secrets of RLHF II, §2.2).

pub mod bon;
pub mod metrics;
pub mod plot;
pub mod report;
pub mod strength;

pub use metrics::{
    bootstrap_accuracy_ci, bootstrap_ci, brier, ece_p, ece_toplabel, evaluate_pairs, log_sigmoid, pairwise_accuracy,
    sigmoid, spearman, Calibration, CalibrationBin, PairMetrics,
};
pub use plot::{bar_chart_grouped, histogram, line_chart, reliability_diagram, BarSeries, PlotError};
pub use report::{accuracy_matrix_markdown, markdown_table, render_markdown_table, Align, EvalRow};
pub use strength::{strength_markdown, strength_stats, summarize_strength, Detection, StrengthDecile, StrengthRow, StrengthSummary};
