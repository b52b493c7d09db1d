//! Evaluation of reward models on preference pairs: metrics of the reward gap d = r_chosen −
//! r_rejected (accuracy with a bootstrap interval, calibration, Brier, Spearman against gold
//! margins), Markdown tables of the results, and dependency-free PNG plots of them.

pub mod metrics;
pub mod plot;
pub mod report;

pub use metrics::{
    bootstrap_accuracy_ci, bootstrap_ci, brier, ece_p, ece_toplabel, evaluate_pairs, log_sigmoid, pairwise_accuracy,
    sigmoid, spearman, Calibration, CalibrationBin, PairMetrics,
};
pub use plot::{bar_chart_grouped, encode_png, line_chart, reliability_diagram};
pub use report::{accuracy_matrix_markdown, markdown_table, EvalRow};
