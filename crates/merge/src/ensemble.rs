//! Prediction ensembles of reward models. Each member's rewards are first z-normalised with the
//! mean/std it recorded on a reference set (its manifest), so members on different scales weigh
//! alike; then per text:
//! - `mean`: (1/M) Σ_m z_m;
//! - `worst`: min_m z_m (worst-case optimisation, Coste et al. 2023, "Reward Model Ensembles Help
//!   Mitigate Overoptimization", arXiv 2310.02743);
//! - `uncertainty:λ`: mean − λ·std_m z_m, population std (uncertainty-weighted optimisation,
//!   same paper; λ = 1 unless given).

use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Combine {
    Mean,
    Worst,
    Uncertainty(f64),
}

impl FromStr for Combine {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "mean" => Ok(Self::Mean),
            "worst" => Ok(Self::Worst),
            "uncertainty" => Ok(Self::Uncertainty(1.0)),
            _ => match s.strip_prefix("uncertainty:").map(str::parse::<f64>) {
                Some(Ok(l)) if l.is_finite() && l >= 0.0 => Ok(Self::Uncertainty(l)),
                _ => Err(format!("--combine {s:?}: expected mean, worst, uncertainty or uncertainty:LAMBDA (λ ≥ 0)")),
            },
        }
    }
}

impl std::fmt::Display for Combine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Mean => write!(f, "mean"),
            Self::Worst => write!(f, "worst"),
            Self::Uncertainty(l) => write!(f, "uncertainty:{l}"),
        }
    }
}

/// (r − mean) / std; a zero std leaves rewards centred but unscaled.
pub fn z_normalize(rewards: &[f64], mean: f64, std: f64) -> Vec<f64> {
    let s = if std > 0.0 { std } else { 1.0 };
    rewards.iter().map(|r| (r - mean) / s).collect()
}

/// Combines `members[m][i]` (member m's normalised reward of text i) into one reward per text.
pub fn combine(members: &[Vec<f64>], rule: Combine) -> Vec<f64> {
    let n = members.first().map_or(0, Vec::len);
    let m = members.len() as f64;
    (0..n)
        .map(|i| {
            let col = members.iter().map(|r| r[i]);
            match rule {
                Combine::Mean => col.sum::<f64>() / m,
                Combine::Worst => col.fold(f64::INFINITY, f64::min),
                Combine::Uncertainty(lambda) => {
                    let mean = members.iter().map(|r| r[i]).sum::<f64>() / m;
                    let var = members.iter().map(|r| (r[i] - mean).powi(2)).sum::<f64>() / m;
                    mean - lambda * var.sqrt()
                }
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn combine_rules_match_hand_computed_values() {
        // Two texts, three members.
        let members = vec![vec![1.0, -1.0], vec![2.0, 0.0], vec![6.0, 1.0]];
        assert_eq!(combine(&members, Combine::Mean), vec![3.0, 0.0]);
        assert_eq!(combine(&members, Combine::Worst), vec![1.0, -1.0]);
        // text 0: mean 3, population var ((4 + 1 + 9) / 3) = 14/3; text 1: var 2/3.
        let u = combine(&members, Combine::Uncertainty(0.5));
        assert!((u[0] - (3.0 - 0.5 * (14.0f64 / 3.0).sqrt())).abs() < 1e-12);
        assert!((u[1] - (0.0 - 0.5 * (2.0f64 / 3.0).sqrt())).abs() < 1e-12);
        assert_eq!(z_normalize(&[3.0, 5.0], 4.0, 2.0), vec![-0.5, 0.5]);
        assert_eq!(z_normalize(&[3.0], 4.0, 0.0), vec![-1.0]);
    }

    #[test]
    fn combine_rule_parsing() {
        assert_eq!("mean".parse::<Combine>(), Ok(Combine::Mean));
        assert_eq!("uncertainty".parse::<Combine>(), Ok(Combine::Uncertainty(1.0)));
        assert_eq!("uncertainty:0.25".parse::<Combine>(), Ok(Combine::Uncertainty(0.25)));
        assert!("uncertainty:-1".parse::<Combine>().is_err());
        assert!("median".parse::<Combine>().is_err());
    }
}
