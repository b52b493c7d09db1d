//! Reports of the recipes: `report.md` (what a person reads), `report.json` (the same numbers for
//! scripts) and the plots under `plots/`, all written atomically into the run folder.

use crate::recipe::Recipe;
use crate::warm::WarmResults;
use crate::Result;
use rmtrain_eval::{accuracy_matrix_markdown, markdown_table, render_markdown_table, Align, BarSeries, EvalRow, PairMetrics};
use rmtrain_train::TrainOutcome;
use std::path::Path;

/// What a single-model recipe produced.
pub struct SingleReport {
    pub outcome: TrainOutcome,
    /// The whole recipe, data preparation and evaluation included.
    pub wall_seconds: f64,
}

impl SingleReport {
    pub fn rows(&self, model: &str) -> Vec<EvalRow> {
        self.outcome.final_eval.iter().map(|(set, m)| EvalRow { model: model.to_string(), set: set.clone(), metrics: m.clone() }).collect()
    }
}

/// A markdown table with left-aligned columns (rmtrain-eval's one builder).
fn md_table(headers: &[String], rows: &[Vec<String>]) -> String {
    let headers: Vec<&str> = headers.iter().map(String::as_str).collect();
    render_markdown_table(&headers, &vec![Align::Left; headers.len()], rows)
}

/// The single-model recipe's report.md / report.json.
pub fn write_single_report(recipe: &Recipe, r: &SingleReport) -> Result<String> {
    let rows = r.rows(&recipe.name);
    let sets: Vec<String> = rows.iter().map(|row| row.set.clone()).collect();
    let truncated = if r.outcome.truncated_pairs > 0 {
        format!(" {} train pairs had a side longer than max_length = {} tokens (trained on truncated).", r.outcome.truncated_pairs, recipe.train.max_length)
    } else {
        String::new()
    };
    let md = format!(
        "# {}\n\nTrained {} optimizer steps from `{}` on `{}`; wall time {:.0} s (training {:.0} s).{truncated}\n\n## Accuracy (gold labels, 95% bootstrap interval)\n\n{}\n## All metrics\n\nECE is the top-label calibration error (confidence max(p, 1 − p) of p = σ(r_c − r_r), 10 bins).\n\n{}",
        recipe.name,
        r.outcome.steps,
        recipe.model.backbone.display(),
        recipe.data.train.display(),
        r.wall_seconds,
        r.outcome.wall_seconds,
        accuracy_matrix_markdown(&rows, std::slice::from_ref(&recipe.name), &sets),
        markdown_table(&rows)
    );
    let json = serde_json::json!({
        "recipe": recipe, "steps": r.outcome.steps, "wall_seconds": r.wall_seconds, "train_seconds": r.outcome.wall_seconds,
        "truncated_train_pairs": r.outcome.truncated_pairs, "model": r.outcome.model_dir, "results": rows,
    });
    rmtrain_core::write_atomic(&recipe.out.join("report.md"), md.as_bytes())?;
    rmtrain_core::write_json_atomic(&recipe.out.join("report.json"), &json)?;
    Ok(md)
}

fn accuracy_cell(m: &PairMetrics) -> String {
    format!("{:.3} [{:.3}, {:.3}]", m.accuracy, m.accuracy_ci95.0, m.accuracy_ci95.1)
}

fn fixed3(values: &[f64]) -> Vec<String> {
    values.iter().map(|a| format!("{a:.3}")).collect()
}

/// The WARM report of one run in `out`: accuracy of every model on every set (best and mean
/// member as reference rows), calibration and rank correlation, timings, the accuracy chart.
pub fn write_warm_report(recipe: &Recipe, out: &Path, r: &WarmResults) -> Result<String> {
    let (best, mean) = r.best_and_mean_member();
    let mut md = format!("# {}\n\n", recipe.name);
    md.push_str(&format!(
        "{} members trained on `{}` ({} pairs, {} labels flipped on purpose); evaluated with gold labels. Accuracy with a 95% bootstrap interval; the first set is in-domain.\n\n",
        r.member_accuracies().len(),
        recipe.data.train.display(),
        recipe.train.max_train_pairs.map_or("all".to_string(), |n| n.to_string()),
        r.flipped_pairs
    ));
    let mut headers = vec!["model".to_string()];
    headers.extend(r.sets.iter().cloned());
    let mut rows = vec![
        [vec!["best member (oracle, per set)".to_string()], fixed3(&best)].concat(),
        [vec!["mean member".to_string()], fixed3(&mean)].concat(),
    ];
    rows.extend(r.models.iter().map(|(label, ms)| [vec![label.clone()], ms.iter().map(accuracy_cell).collect()].concat()));
    md.push_str(&md_table(&headers, &rows));
    md.push_str(
        "\n## ECE / Spearman(reward gap, gold margin)\n\nECE is the top-label calibration error (confidence max(p, 1 − p) of p = σ(r_c − r_r) against whether the preferred side is the gold one, 10 bins). Ensembles combine z-normalised member rewards, so their ECE is on that scale, not comparable one to one with the members'.\n\n",
    );
    let rows: Vec<Vec<String>> = r
        .models
        .iter()
        .map(|(label, ms)| {
            let cells = ms.iter().map(|m| format!("{:.3} / {}", m.ece, m.spearman_gold.map_or("–".to_string(), |s| format!("{s:.3}"))));
            std::iter::once(label.clone()).chain(cells).collect()
        })
        .collect();
    md.push_str(&md_table(&headers, &rows));
    md.push_str(&format!(
        "\nTimings (s): {}\n\nPlots: `plots/accuracy.png`, `plots/reliability_warm.png`{}.\n",
        r.seconds,
        if out.join("plots/interpolation.png").is_file() { ", `plots/interpolation.png`" } else { "" }
    ));

    // Reference rows (best, mean member) have no interval; WARM and the ensembles carry their
    // bootstrap intervals as error bars.
    let mut series = vec![
        BarSeries { label: "best member".into(), values: best.clone(), intervals: None },
        BarSeries { label: "mean member".into(), values: mean.clone(), intervals: None },
    ];
    for (label, ms) in r.models.iter().filter(|(l, _)| l == "WARM" || l.starts_with("ENS-")) {
        series.push(BarSeries {
            label: label.clone(),
            values: ms.iter().map(|m| m.accuracy).collect(),
            intervals: Some(ms.iter().map(|m| m.accuracy_ci95).collect()),
        });
    }
    let lo = series.iter().flat_map(|s| s.values.iter().chain(s.intervals.iter().flatten().map(|(l, _)| l)).copied()).fold(1.0, f64::min);
    rmtrain_eval::bar_chart_grouped(&out.join("plots/accuracy.png"), &format!("{}: gold-label accuracy", recipe.name), &r.sets, &series, Some(((lo - 0.05).max(0.0), 1.0)))?;
    let json = serde_json::json!({
        "recipe": recipe, "sets": r.sets, "flipped_pairs": r.flipped_pairs, "seconds": r.seconds,
        "best_member": best, "mean_member": mean,
        "models": r.models.iter().map(|(l, ms)| serde_json::json!({"model": l, "metrics": r.sets.iter().zip(ms).map(|(s, m)| (s.clone(), serde_json::to_value(m).expect("metrics serialize"))).collect::<serde_json::Map<_, _>>()})).collect::<Vec<_>>(),
    });
    rmtrain_core::write_atomic(&out.join("report.md"), md.as_bytes())?;
    rmtrain_core::write_json_atomic(&out.join("report.json"), &json)?;
    Ok(md)
}

/// Accuracy (mean over eval sets) against the share of flipped train labels (WARM paper, Fig. 5).
pub fn write_noise_report(recipe: &Recipe, all: &[(f64, WarmResults)]) -> Result<String> {
    let mut lines: Vec<(String, Vec<(f64, f64)>)> = Vec::new();
    let mut push = |label: &str, k: f64, acc: f64| match lines.iter_mut().find(|(l, _)| l == label) {
        Some((_, pts)) => pts.push((k * 100.0, acc)),
        None => lines.push((label.to_string(), vec![(k * 100.0, acc)])),
    };
    let avg = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let mut rows = Vec::new();
    for (k, r) in all {
        let (best, mean) = r.best_and_mean_member();
        push("best member", *k, avg(&best));
        push("mean member", *k, avg(&mean));
        let warm = avg(&r.accuracies("WARM").expect("WARM row"));
        push("WARM", *k, warm);
        let ens: Vec<String> = r
            .models
            .iter()
            .filter(|(l, _)| l.starts_with("ENS-"))
            .map(|(l, ms)| {
                let a = avg(&ms.iter().map(|m| m.accuracy).collect::<Vec<_>>());
                push(l, *k, a);
                format!("{l} {a:.3}")
            })
            .collect();
        rows.push(vec![format!("{:.0}%", k * 100.0), format!("{:.3}", avg(&best)), format!("{:.3}", avg(&mean)), format!("{warm:.3}"), ens.join(", ")]);
    }
    let headers: Vec<String> = ["flipped", "best member", "mean member", "WARM", "ENS"].iter().map(|s| s.to_string()).collect();
    let md = format!(
        "# {}: accuracy against label noise\n\nMean gold-label accuracy over the eval sets ({}).\n\n{}",
        recipe.name,
        all[0].1.sets.join(", "),
        md_table(&headers, &rows)
    );
    rmtrain_eval::line_chart(&recipe.out.join("plots/accuracy_vs_noise.png"), "accuracy vs flipped labels", "flipped train labels (%)", "mean accuracy", &lines)?;
    rmtrain_core::write_atomic(&recipe.out.join("report.md"), md.as_bytes())?;
    Ok(md)
}
