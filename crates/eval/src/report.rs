//! Markdown rendering of eval results: a generic table builder ([`render_markdown_table`]), a long
//! table with one row per (model, set), and the model × set accuracy matrix a WARM report shows
//! (best member, mean member, WARM and ensembles as rows, domains as columns). Numbers have 3
//! decimals; a missing value is "–".

use crate::metrics::PairMetrics;
use serde::{Deserialize, Serialize};

/// The metrics of one model on one eval set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalRow {
    pub model: String,
    pub set: String,
    pub metrics: PairMetrics,
}

pub(crate) const MISSING: &str = "–";

pub(crate) fn num(x: f64) -> String {
    if x.is_finite() { format!("{x:.3}") } else { MISSING.to_string() }
}

/// `0.835 [0.822, 0.848]`.
fn accuracy_cell(m: &PairMetrics) -> String {
    format!("{} [{}, {}]", num(m.accuracy), num(m.accuracy_ci95.0), num(m.accuracy_ci95.1))
}

/// Column alignment in a Markdown table's separator row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Align {
    /// `---`: no colon, which renderers show left-aligned; for names and interval cells.
    Left,
    /// `---:`, for plain numbers.
    Right,
    /// `:---:`.
    Center,
}

impl Align {
    fn separator(self) -> &'static str {
        match self {
            Align::Left => "---",
            Align::Right => "---:",
            Align::Center => ":---:",
        }
    }
}

/// A `|` inside a cell would split it.
fn cell_text(s: &str) -> String {
    s.replace('|', "\\|")
}

fn push_row<S: AsRef<str>>(out: &mut String, cells: &[S]) {
    out.push('|');
    for c in cells {
        out.push_str(&format!(" {} |", cell_text(c.as_ref())));
    }
    out.push('\n');
}

/// A GitHub Markdown table: the header row, the separator row from `align`, then `rows` in
/// order, each line ending in a newline; `|` in any cell or header is escaped as `\|`.
///
/// # Panics
/// When `align` or a row does not have one entry per header: the columns would shift.
pub fn render_markdown_table(headers: &[&str], align: &[Align], rows: &[Vec<String>]) -> String {
    assert_eq!(align.len(), headers.len(), "one alignment per column");
    let mut out = String::new();
    push_row(&mut out, headers);
    out.push('|');
    for a in align {
        out.push_str(a.separator());
        out.push('|');
    }
    out.push('\n');
    for row in rows {
        assert_eq!(row.len(), headers.len(), "one cell per column");
        push_row(&mut out, row);
    }
    out
}

/// | model | set | n | accuracy [95% CI] | ECE | Brier | Spearman(gap, gold) |, one row per entry
/// of `rows` in order; ECE is the top-label one ([`PairMetrics::ece`]).
pub fn markdown_table(rows: &[EvalRow]) -> String {
    use Align::{Left, Right};
    let headers = ["model", "set", "n", "accuracy [95% CI]", "ECE", "Brier", "Spearman(gap, gold)"];
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let m = &r.metrics;
            vec![
                r.model.clone(),
                r.set.clone(),
                m.n.to_string(),
                accuracy_cell(m),
                num(m.ece),
                num(m.brier),
                m.spearman_gold.map_or(MISSING.to_string(), num),
            ]
        })
        .collect();
    render_markdown_table(&headers, &[Left, Left, Right, Left, Right, Right, Right], &cells)
}

/// Accuracy [95% CI] with `models_order` as rows and `sets_order` as columns; a (model, set) with
/// no row is "–", and rows of models or sets not named in the orders are left out.
pub fn accuracy_matrix_markdown<S: AsRef<str>>(rows: &[EvalRow], models_order: &[S], sets_order: &[S]) -> String {
    let headers: Vec<&str> = std::iter::once("model").chain(sets_order.iter().map(AsRef::as_ref)).collect();
    let cells: Vec<Vec<String>> = models_order
        .iter()
        .map(|model| {
            let accuracies = sets_order.iter().map(|set| {
                let found = rows.iter().find(|r| r.model == model.as_ref() && r.set == set.as_ref());
                found.map_or(MISSING.to_string(), |r| accuracy_cell(&r.metrics))
            });
            std::iter::once(model.as_ref().to_string()).chain(accuracies).collect()
        })
        .collect();
    render_markdown_table(&headers, &vec![Align::Left; headers.len()], &cells)
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

    #[test]
    fn render_markdown_table_aligns_and_escapes_pipes() {
        let rows = vec![vec!["a|b".to_string(), "1".to_string(), "x".to_string()]];
        let got = render_markdown_table(&["name", "n|count", "c"], &[Align::Left, Align::Right, Align::Center], &rows);
        assert_eq!(got, "| name | n\\|count | c |\n|---|---:|:---:|\n| a\\|b | 1 | x |\n");
        assert_eq!(render_markdown_table(&["only"], &[Align::Left], &[]), "| only |\n|---|\n");
    }

    #[test]
    #[should_panic(expected = "one cell per column")]
    fn render_markdown_table_rejects_a_short_row() {
        render_markdown_table(&["a", "b"], &[Align::Left, Align::Left], &[vec!["1".to_string()]]);
    }
}
