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
    for key in ["margin", "gold_margin"] {
        if let Some(value) = fields.get_mut(key) {
            // Integers stay integers so a double flip restores the line byte for byte.
            if let Some(i) = value.as_i64() {
                *value = json!(-i);
            } else if let Some(x) = value.as_f64() {
                *value = json!(-x);
            }
        }
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
}
