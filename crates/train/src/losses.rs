//! Losses over rewards, each a pure function of reward tensors ([pairs]) returning a scalar [1].
//! The three lines TRL's RewardTrainer has, plus its two optional regularisers, and the per-pair
//! composition of margin and smoothing the strength-based methods use ([`preference_loss`]).

use burn::tensor::activation::log_sigmoid;
use burn::tensor::Tensor;

/// Bradley–Terry: mean(−log σ(r_c − r_r − m)); `margin` m = 0 gives the plain loss.
/// Llama-2 (Touvron et al. 2023) adds the margin; TRL's `margin` column.
pub fn bradley_terry(r_chosen: Tensor<1>, r_rejected: Tensor<1>, margin: Option<Tensor<1>>) -> Tensor<1> {
    let d = r_chosen - r_rejected;
    let d = match margin {
        Some(m) => d - m,
        None => d,
    };
    log_sigmoid(d).neg().mean()
}

/// Label smoothing ε (Secrets of RLHF II, Wang et al. 2024; conservative DPO):
/// mean(−(1−ε)·log σ(d) − ε·log σ(−d)).
pub fn bradley_terry_smoothed(r_chosen: Tensor<1>, r_rejected: Tensor<1>, epsilon: f64) -> Tensor<1> {
    let d = r_chosen - r_rejected;
    let pos = log_sigmoid(d.clone()).mul_scalar(1.0 - epsilon);
    let neg = log_sigmoid(d.neg()).mul_scalar(epsilon);
    (pos + neg).neg().mean()
}

/// The whole pairwise family in one (the spec's composition; Secrets of RLHF II Eq. 2, 5, 6):
/// z = (r_c − r_r) − m, loss = mean(−(1−α)·log σ(z) − α·log σ(−z)), with a per-pair margin m
/// (None = 0) and a per-pair smoothing α (None = 0). α = 0 and m = 0 is Bradley–Terry exactly.
pub fn preference_loss(r_chosen: Tensor<1>, r_rejected: Tensor<1>, margin: Option<Tensor<1>>, alpha: Option<Tensor<1>>) -> Tensor<1> {
    let z = r_chosen - r_rejected;
    let z = match margin {
        Some(m) => z - m,
        None => z,
    };
    match alpha {
        None => log_sigmoid(z).neg().mean(),
        Some(a) => {
            let pos = log_sigmoid(z.clone()) * a.clone().neg().add_scalar(1.0);
            let neg = log_sigmoid(z.neg()) * a;
            (pos + neg).neg().mean()
        }
    }
}

/// Reward centering (Eisenstein et al. 2023; TRL `center_rewards_coefficient`, suggested 0.01):
/// coef·mean((r_c + r_r)²), added to the loss so rewards stay near zero.
pub fn center_term(r_chosen: Tensor<1>, r_rejected: Tensor<1>, coefficient: f64) -> Tensor<1> {
    (r_chosen + r_rejected).powi_scalar(2).mean().mul_scalar(coefficient)
}
