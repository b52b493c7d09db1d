//! Synthetic label noise: flip a known share of preference labels, to measure how a training method
//! degrades as labels get noisier (the controlled counterpart of VADER's single-rater labels).

use crate::{DataError, Pair};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde_json::{Value, json};

/// Flips exactly round(`fraction` · n) pairs, chosen uniformly without replacement with a
/// ChaCha8 generator seeded by `seed`, and returns how many.
///
/// A flip swaps chosen and rejected in the struct and in `fields` (every `chosen*` field with its
/// `rejected*` counterpart, so `chosen_id`, `chosen_rating`... follow their text), negates `margin`
/// and `gold_margin` and `agrees_with_mean`, and toggles `"flipped": true`; flipping the same pair
/// twice gives it back exactly, so two calls with the same seed restore the data.
pub fn flip_labels(pairs: &mut [Pair], fraction: f64, seed: u64) -> Result<usize, DataError> {
    if !(0.0..=1.0).contains(&fraction) {
        return Err(DataError::InvalidOption(format!("flip fraction must be in [0, 1], got {fraction}")));
    }
    let count = (fraction * pairs.len() as f64).round() as usize;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    for index in rand::seq::index::sample(&mut rng, pairs.len(), count) {
        flip(&mut pairs[index]);
    }
    Ok(count)
}

fn flip(pair: &mut Pair) {
    std::mem::swap(&mut pair.chosen, &mut pair.rejected);
    pair.margin = pair.margin.map(|m| -m);
    pair.gold_margin = pair.gold_margin.map(|m| -m);
    pair.strength = pair.strength.map(|m| -m);

    let fields = &mut pair.fields;
    let chosen_keys: Vec<String> = fields.keys().filter(|k| k.starts_with("chosen")).cloned().collect();
    for chosen_key in chosen_keys {
        let rejected_key = format!("rejected{}", &chosen_key["chosen".len()..]);
        if let (Some(c), Some(r)) = (fields.get(&chosen_key).cloned(), fields.get(&rejected_key).cloned()) {
            // insert on an existing key keeps its position: the line's field order is unchanged.
            fields.insert(chosen_key, r);
            fields.insert(rejected_key, c);
        }
    }
    for key in ["margin", "gold_margin", "strength_mean"] {
        if let Some(value) = fields.get_mut(key) {
            negate(value);
        }
    }
    // Each voter's gap turns sign with the pair; σ̂ is unchanged.
    if let Some(Value::Array(gaps)) = fields.get_mut("strength_gaps") {
        gaps.iter_mut().for_each(negate);
    }
    if let Some(Value::Bool(agrees)) = fields.get_mut("agrees_with_mean") {
        *agrees = !*agrees;
    }
    if fields.get("flipped") == Some(&Value::Bool(true)) {
        fields.shift_remove("flipped");
    } else {
        fields.insert("flipped".into(), Value::Bool(true));
    }
}

/// Negates a JSON number; integers stay integers so a double flip restores the line byte for byte.
fn negate(value: &mut Value) {
    if let Some(i) = value.as_i64() {
        *value = json!(-i);
    } else if let Some(x) = value.as_f64() {
        *value = json!(-x);
    }
}

/// Which pairs the strength-based flip swaps (Secrets of RLHF II §2.4.1: the pairs the voters
/// believe mislabelled).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum StrengthFlip {
    /// The round(q · n) pairs of lowest μ̂ (ties broken by file order): the paper's "bottom 20 %"
    /// (main text) or "flip 10 %" (appendix C.2).
    BottomFraction(f64),
    /// Every pair with μ̂ < t (t = 0: the voters prefer the rejected side on average).
    Below(f64),
}

/// Flips the pairs `rule` selects by their preference strength (chosen ↔ rejected, μ̂ and every
/// voter's gap negated, `"flipped": true`, as [`flip_labels`] does) and returns their indices in
/// ascending order. Every pair must carry `strength_mean`.
pub fn flip_by_strength(pairs: &mut [Pair], rule: StrengthFlip) -> Result<Vec<usize>, DataError> {
    let mut strengths = Vec::with_capacity(pairs.len());
    for (index, p) in pairs.iter().enumerate() {
        match p.strength {
            Some(s) if s.is_finite() => strengths.push(s),
            _ => {
                return Err(DataError::InvalidPair {
                    index,
                    problem: "no finite \"strength_mean\" (compute it with `rmtrain strength` or the recipe's [strength] stage)".into(),
                })
            }
        }
    }
    let mut chosen: Vec<usize> = match rule {
        StrengthFlip::BottomFraction(q) => {
            if !(0.0..=1.0).contains(&q) {
                return Err(DataError::InvalidOption(format!("strength flip fraction must be in [0, 1], got {q}")));
            }
            let mut order: Vec<usize> = (0..pairs.len()).collect();
            order.sort_by(|&a, &b| strengths[a].total_cmp(&strengths[b]).then(a.cmp(&b)));
            order.truncate((q * pairs.len() as f64).round() as usize);
            order
        }
        StrengthFlip::Below(t) => (0..pairs.len()).filter(|&i| strengths[i] < t).collect(),
    };
    chosen.sort_unstable();
    for &i in &chosen {
        flip(&mut pairs[i]);
    }
    Ok(chosen)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(n: usize) -> Vec<Pair> {
        (0..n)
            .map(|i| {
                let value = json!({"chosen": format!("good {i}"), "rejected": format!("bad {i}"), "gold_margin": 0.5,
                                   "margin": 2, "chosen_id": i, "rejected_id": 100 + i});
                crate::parse_pair_line(value, std::path::Path::new("mem"), i + 1).expect("valid pair")
            })
            .collect()
    }

    #[test]
    fn flips_exactly_the_requested_count() {
        let mut data = pairs(10);
        assert_eq!(flip_labels(&mut data, 0.25, 3).expect("valid fraction"), 3); // round(2.5) = 3
        let flipped: Vec<&Pair> = data.iter().filter(|p| p.fields.get("flipped") == Some(&json!(true))).collect();
        assert_eq!(flipped.len(), 3);
        for p in flipped {
            assert!(p.chosen.starts_with("bad") && p.fields["chosen"].as_str().expect("text").starts_with("bad"));
            assert_eq!((p.gold_margin, p.margin), (Some(-0.5), Some(-2.0)));
            assert_eq!((p.fields["margin"].clone(), p.fields["gold_margin"].clone()), (json!(-2), json!(-0.5)));
            assert_eq!(
                p.fields["chosen_id"].as_u64().expect("id"),
                p.fields["rejected_id"].as_u64().expect("id") + 100
            );
        }
        assert!(flip_labels(&mut data, 1.5, 0).is_err());
    }

    #[test]
    fn same_seed_same_flips_and_a_double_flip_restores() {
        let original = pairs(50);
        let (mut a, mut b) = (original.clone(), original.clone());
        flip_labels(&mut a, 0.3, 7).expect("flip");
        flip_labels(&mut b, 0.3, 7).expect("flip");
        assert_eq!(a, b);
        let mut c = original.clone();
        flip_labels(&mut c, 0.3, 8).expect("flip");
        assert_ne!(a, c);
        flip_labels(&mut a, 0.3, 7).expect("flip back");
        assert_eq!(a, original);
    }

    fn with_strength(mus: &[f64]) -> Vec<Pair> {
        mus.iter()
            .enumerate()
            .map(|(i, &mu)| {
                let value = json!({"chosen": format!("good {i}"), "rejected": format!("bad {i}"), "strength_mean": mu,
                                   "strength_std": 0.5, "strength_gaps": [mu - 0.5, mu + 0.5]});
                crate::parse_pair_line(value, std::path::Path::new("mem"), i + 1).expect("valid pair")
            })
            .collect()
    }

    #[test]
    fn strength_flip_swaps_exactly_the_selected_pairs() {
        let mus = [0.3, -1.0, 2.0, -0.2, 0.0, 1.5, -3.0, 0.7, 0.1, -0.5];
        // Bottom 20 % of 10 = the 2 lowest: -3.0 (index 6), -1.0 (index 1).
        let mut data = with_strength(&mus);
        assert_eq!(flip_by_strength(&mut data, StrengthFlip::BottomFraction(0.2)).expect("flip"), vec![1, 6]);
        for (i, p) in data.iter().enumerate() {
            let flipped = [1, 6].contains(&i);
            assert_eq!(p.chosen.starts_with("bad"), flipped, "pair {i}");
            assert_eq!(p.strength, Some(if flipped { -mus[i] } else { mus[i] }), "pair {i}");
            assert_eq!(p.fields["strength_mean"], json!(if flipped { -mus[i] } else { mus[i] }));
            assert_eq!(p.fields["strength_std"], json!(0.5));
            if flipped {
                assert_eq!(p.fields["strength_gaps"], json!([-(mus[i] - 0.5), -(mus[i] + 0.5)]));
                assert_eq!(p.fields["flipped"], json!(true));
            }
        }
        // μ̂ < 0: indices 1, 3, 6, 9 (0.0 is not below 0).
        let mut data = with_strength(&mus);
        assert_eq!(flip_by_strength(&mut data, StrengthFlip::Below(0.0)).expect("flip"), vec![1, 3, 6, 9]);
        assert!(data.iter().all(|p| p.strength.expect("set") >= 0.0));
        // Ties at the cut go by file order.
        let mut tied = with_strength(&[1.0, 0.0, 0.0, 0.0]);
        assert_eq!(flip_by_strength(&mut tied, StrengthFlip::BottomFraction(0.5)).expect("flip"), vec![1, 2]);
    }

    #[test]
    fn strength_flip_needs_a_strength_on_every_pair() {
        let mut data = pairs(3);
        let err = flip_by_strength(&mut data, StrengthFlip::Below(0.0)).expect_err("no strength").to_string();
        assert!(err.starts_with("pair 0: no finite \"strength_mean\""), "{err}");
        let mut ok = with_strength(&[1.0]);
        assert!(flip_by_strength(&mut ok, StrengthFlip::BottomFraction(1.5)).is_err());
    }
}
