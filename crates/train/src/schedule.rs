//! Learning rate at an optimizer step, as transformers' schedulers compute it (stepped after each
//! optimizer step, so step 0 of a warm-up runs at lr 0):
//! 1. warm-up, step < w: lr · step / max(1, w);
//! 2. then, with progress p = (step − w) / max(1, total − w):
//!    linear: lr · max(0, 1 − p); cosine: lr · max(0, ½(1 + cos(π·p))); constant: lr.
//!
//! w = ceil(warmup_ratio · total) unless `warmup_steps` is given.

use crate::config::Schedule;

pub fn learning_rate(schedule: Schedule, peak: f64, step: u64, warmup: u64, total: u64) -> f64 {
    if step < warmup {
        return peak * step as f64 / warmup.max(1) as f64;
    }
    let progress = (step - warmup) as f64 / (total.saturating_sub(warmup)).max(1) as f64;
    match schedule {
        Schedule::Linear => peak * (1.0 - progress).max(0.0),
        Schedule::Cosine => peak * (0.5 * (1.0 + (std::f64::consts::PI * progress).cos())).max(0.0),
        Schedule::Constant => peak,
    }
}

pub fn warmup_steps(ratio: f64, explicit: Option<u64>, total: u64) -> u64 {
    explicit.unwrap_or_else(|| (ratio * total as f64).ceil() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warmup_then_linear_decay_hand_values() {
        // total 10, warm-up 2: 0, 0.5, then 1 − (s−2)/8.
        let lr: Vec<f64> = (0..10).map(|s| learning_rate(Schedule::Linear, 1.0, s, 2, 10)).collect();
        let want = [0.0, 0.5, 1.0, 0.875, 0.75, 0.625, 0.5, 0.375, 0.25, 0.125];
        for (a, b) in lr.iter().zip(want) {
            assert!((a - b).abs() < 1e-12, "{lr:?}");
        }
        assert!((learning_rate(Schedule::Cosine, 1.0, 6, 2, 10) - 0.5).abs() < 1e-12);
        assert_eq!(warmup_steps(0.1, None, 188), 19);
        assert_eq!(warmup_steps(0.1, Some(5), 188), 5);
    }
}
