//! Markdown rendering of eval results: a long table with one row per (model, set), and the
//! model × set accuracy matrix a WARM report shows (best member, mean member, WARM and ensembles
//! as rows, domains as columns). Numbers have 3 decimals; a missing value is "–".

use crate::metrics::PairMetrics;
use serde::{Deserialize, Serialize};

/// The metrics of one model on one eval set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalRow {
    pub model: String,
    pub set: String,
    pub metrics: PairMetrics,
}

const MISSING: &str = "–";

fn num(x: f64) -> String {
    if x.is_finite() { format!("{x:.3}") } else { MISSING.to_string() }
}

/// `0.835 [0.822, 0.848]`.
fn accuracy_cell(m: &PairMetrics) -> String {
    format!("{} [{}, {}]", num(m.accuracy), num(m.accuracy_ci95.0), num(m.accuracy_ci95.1))
}

/// A `|` inside a name would split the cell.
fn cell_text(s: &str) -> String {
    s.replace('|', "\\|")
}

/// | model | set | n | accuracy [95% CI] | ECE | Brier | Spearman(gap, gold) |, one row per entry
/// of `rows` in order.
pub fn markdown_table(rows: &[EvalRow]) -> String {
    let mut out = String::from("| model | set | n | accuracy [95% CI] | ECE | Brier | Spearman(gap, gold) |\n");
    out.push_str("|---|---|---:|---|---:|---:|---:|\n");
    for r in rows {
        let m = &r.metrics;
        let spearman = m.spearman_gold.map_or(MISSING.to_string(), num);
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} |\n",
            cell_text(&r.model),
            cell_text(&r.set),
            m.n,
            accuracy_cell(m),
            num(m.ece),
            num(m.brier),
            spearman
        ));
    }
    out
}

/// Accuracy [95% CI] with `models_order` as rows and `sets_order` as columns; a (model, set) with
/// no row is "–", and rows of models or sets not named in the orders are left out.
pub fn accuracy_matrix_markdown<S: AsRef<str>>(rows: &[EvalRow], models_order: &[S], sets_order: &[S]) -> String {
    let mut out = String::from("| model |");
    for set in sets_order {
        out.push_str(&format!(" {} |", cell_text(set.as_ref())));
    }
    out.push_str("\n|---|");
    out.push_str(&"---|".repeat(sets_order.len()));
    out.push('\n');
    for model in models_order {
        out.push_str(&format!("| {} |", cell_text(model.as_ref())));
        for set in sets_order {
            let found = rows.iter().find(|r| r.model == model.as_ref() && r.set == set.as_ref());
            out.push_str(&format!(" {} |", found.map_or(MISSING.to_string(), |r| accuracy_cell(&r.metrics))));
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(model: &str, set: &str, accuracy: f64, spearman_gold: Option<f64>) -> EvalRow {
        EvalRow {
            model: model.into(),
            set: set.into(),
            metrics: PairMetrics {
                n: 500,
                accuracy,
                accuracy_ci95: (accuracy - 0.0134, accuracy + 0.0126),
                ece: 0.04149,
                ece_toplabel: 0.03,
                brier: 0.18,
                spearman_gold,
                mean_margin: 1.0,
                mean_reward_chosen: 0.5,
                mean_reward_rejected: -0.5,
            },
        }
    }

    fn two_rows() -> Vec<EvalRow> {
        vec![row("warm", "helpful", 0.835, Some(0.41234)), row("best member", "harmless", 0.7, None)]
    }

    #[test]
    fn markdown_table_two_rows() {
        let expected = "\
| model | set | n | accuracy [95% CI] | ECE | Brier | Spearman(gap, gold) |
|---|---|---:|---|---:|---:|---:|
| warm | helpful | 500 | 0.835 [0.822, 0.848] | 0.041 | 0.180 | 0.412 |
| best member | harmless | 500 | 0.700 [0.687, 0.713] | 0.041 | 0.180 | – |
";
        assert_eq!(markdown_table(&two_rows()), expected);
    }

    #[test]
    fn accuracy_matrix_two_rows() {
        let expected = "\
| model | helpful | harmless |
|---|---|---|
| best member | – | 0.700 [0.687, 0.713] |
| warm | 0.835 [0.822, 0.848] | – |
";
        let got = accuracy_matrix_markdown(&two_rows(), &["best member", "warm"], &["helpful", "harmless"]);
        assert_eq!(got, expected);
    }
}
