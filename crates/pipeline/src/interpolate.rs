//! Mode connectivity: loss and accuracy of θ(t) = (1 − t)·A + t·B along the line between two
//! checkpoints (Frankle et al. 2020; the premise of WARM), and the loss barrier: how far the
//! curve rises above the straight line joining its ends.

use crate::evaluate::pair_metrics;
use crate::scoring::refuse_untrained;
use crate::Result;
use burn::tensor::Device;
use rmtrain_data::Pair;
use rmtrain_merge::interpolate_tensors;
use rmtrain_models::{RewardModel, ScoreOptions};
use serde::Serialize;
use std::path::Path;

#[derive(Debug, Clone, Serialize)]
pub struct CurvePoint {
    pub t: f64,
    pub set: String,
    /// Mean Bradley–Terry loss −log σ(r_c − r_r).
    pub loss: f64,
    pub accuracy: f64,
}

/// Loss and accuracy at each `t` on each set. `max_length` None = A's (its rmtrain.json), else 128.
pub fn interpolation_curve(a: &Path, b: &Path, ts: &[f64], sets: &[(String, Vec<Pair>)], max_length: Option<usize>, device: &Device) -> Result<Vec<CurvePoint>> {
    let max_length = max_length.or_else(|| rmtrain_core::Manifest::read(a).ok().and_then(|m| m.max_length)).unwrap_or(128);
    let mut points = Vec::new();
    for &t in ts {
        let rm = refuse_untrained(a, RewardModel::load_from_rows(a, interpolate_tensors(a, b, t)?, max_length, device)?)?;
        for (name, pairs) in sets {
            let (rc, rr) = rmtrain_train::score_pairs(&rm, pairs, &ScoreOptions::default())?;
            let loss = rc.iter().zip(&rr).map(|(c, r)| -rmtrain_eval::log_sigmoid(c - r)).sum::<f64>() / rc.len() as f64;
            points.push(CurvePoint { t, set: name.clone(), loss, accuracy: pair_metrics(pairs, &rc, &rr, 0).accuracy });
        }
    }
    Ok(points)
}

/// `steps` evenly spaced t from `t_min` to `t_max`, ends included.
pub fn curve_ts(steps: usize, t_min: f64, t_max: f64) -> Vec<f64> {
    let steps = steps.max(2);
    (0..steps).map(|i| t_min + (t_max - t_min) * i as f64 / (steps - 1) as f64).collect()
}

/// Per set: the largest rise of the loss above the straight line between the curve's ends.
pub fn barriers(points: &[CurvePoint]) -> serde_json::Value {
    let mut out = serde_json::Map::new();
    for s in set_names(points) {
        let curve: Vec<&CurvePoint> = points.iter().filter(|p| p.set == s).collect();
        let (first, last) = (curve[0], curve[curve.len() - 1]);
        let span = (last.t - first.t).max(1e-12);
        let barrier = curve
            .iter()
            .map(|p| p.loss - (first.loss + (last.loss - first.loss) * (p.t - first.t) / span))
            .fold(f64::NEG_INFINITY, f64::max);
        out.insert(s, serde_json::json!({"loss_barrier": barrier}));
    }
    serde_json::Value::Object(out)
}

fn set_names(points: &[CurvePoint]) -> Vec<String> {
    let mut sets: Vec<String> = Vec::new();
    for p in points {
        if !sets.contains(&p.set) {
            sets.push(p.set.clone());
        }
    }
    sets
}

/// Accuracy and loss curves as a PNG, two series per set.
pub fn plot_curve(path: &Path, title: &str, points: &[CurvePoint]) -> Result<()> {
    let series: Vec<(String, Vec<(f64, f64)>)> = set_names(points)
        .iter()
        .flat_map(|s| {
            let acc = points.iter().filter(|p| &p.set == s).map(|p| (p.t, p.accuracy)).collect();
            let loss = points.iter().filter(|p| &p.set == s).map(|p| (p.t, p.loss)).collect();
            [(format!("{s} accuracy"), acc), (format!("{s} loss"), loss)]
        })
        .collect();
    rmtrain_eval::line_chart(path, title, "t (0 = A, 1 = B)", "accuracy / loss", &series)?;
    Ok(())
}

/// The curve, its barriers and the plot written into `out` (`interpolation.json`, `interpolation.png`).
pub fn write_curve(out: &Path, a: &Path, b: &Path, title: &str, points: &[CurvePoint]) -> Result<serde_json::Value> {
    let json = serde_json::json!({"a": a, "b": b, "points": points, "barrier": barriers(points)});
    rmtrain_core::write_json_atomic(&out.join("interpolation.json"), &json)?;
    plot_curve(&out.join("interpolation.png"), title, points)?;
    Ok(json)
}
