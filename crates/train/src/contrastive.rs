//! Contrastive losses for reward modelling (Secrets of RLHF II, Wang et al. 2024, §3.1): which
//! feature vectors are contrasted ([`instances`]), SimCSE's InfoNCE over two dropout views
//! (Eq. 9; Gao et al. 2021, <https://github.com/princeton-nlp/SimCSE>) and SwAV's swapped prediction
//! of Sinkhorn–Knopp codes (Eq. 7–8; Caron et al. 2020, <https://github.com/facebookresearch/swav>).
//! Every function is a pure tensor function: it runs on the inputs' device, and gradients flow
//! through everything except the SwAV codes, which are targets (computed without gradient).

use burn::tensor::Tensor;
use burn::tensor::activation::log_softmax;
use serde::{Deserialize, Serialize};

/// Floor of a row's L2 norm, as torch's `F.cosine_similarity` (eps = 1e-8, applied to each norm):
/// a zero feature vector gives cosine 0 instead of 0/0.
pub const NORM_EPS: f64 = 1e-8;

/// Which vectors are the contrastive instances (paper §3.1.1); "SwAV-diff" is `Difference`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ContrastiveSamples {
    /// Each response's feature f(x, y) is an instance: {f_c⁽ⁱ⁾, f_r⁽ⁱ⁾}.
    #[default]
    Pairs,
    /// Both signs of the preference difference: {f_c⁽ⁱ⁾ − f_r⁽ⁱ⁾, f_r⁽ⁱ⁾ − f_c⁽ⁱ⁾}.
    Difference,
}

/// The 2n instances of n pairs, `f_chosen`/`f_rejected` [n, d] → [2n, d]: rows 0..n come from the
/// chosen side (`f_c`, or `f_c − f_r`), rows n..2n from the rejected side (`f_r`, or `f_r − f_c`).
/// Call it once per dropout view so that row i of both views is the same instance.
pub fn instances(f_chosen: Tensor<2>, f_rejected: Tensor<2>, samples: ContrastiveSamples) -> Tensor<2> {
    match samples {
        ContrastiveSamples::Pairs => Tensor::cat(vec![f_chosen, f_rejected], 0),
        ContrastiveSamples::Difference => {
            let d = f_chosen - f_rejected; // [n, d]
            Tensor::cat(vec![d.clone(), d.neg()], 0)
        }
    }
}

/// Rows scaled to unit L2 norm: x_i / max(‖x_i‖, [`NORM_EPS`]), [n, d] → [n, d].
/// The floor is taken on the squared norm (max(‖x‖², eps²), the same value after the square
/// root) so that a zero row also has a finite gradient: clamping after the square root would
/// multiply sqrt's infinite derivative at 0 by clamp's zero and give NaN.
pub fn l2_normalize_rows(x: Tensor<2>) -> Tensor<2> {
    let norm = x.clone().powi_scalar(2).sum_dim(1).clamp_min(NORM_EPS * NORM_EPS).sqrt(); // [n, 1]
    x / norm
}

/// Cosine similarity of every row of `a` [n, d] with every row of `b` [m, d] → [n, m], each
/// norm floored at [`NORM_EPS`] as torch's `F.cosine_similarity`.
pub fn cosine_similarity_matrix(a: Tensor<2>, b: Tensor<2>) -> Tensor<2> {
    l2_normalize_rows(a).matmul(l2_normalize_rows(b).transpose())
}

/// SimCSE (paper Eq. 9): ℓ_i = −log( exp(cos(h_s⁽ⁱ⁾, h_t⁽ⁱ⁾)/τ) / Σ_j exp(cos(h_s⁽ⁱ⁾, h_t⁽ʲ⁾)/τ) ),
/// loss = mean_i ℓ_i, i.e. cross-entropy of the logits cos(h_s, h_t)/τ [N, N] with target i for
/// row i. One-directional (s → t) as in SimCSE's `cl_forward`. `h_s`, `h_t` [N, d] are the two
/// dropout views of the same N instances; τ = 0.05 is SimCSE's default (the paper gives none).
/// Burn's `log_softmax` subtracts the row maximum, so logits up to 1/τ are safe.
///
/// # Panics
/// If the views differ in shape: row i of each must be the same instance.
pub fn simcse_loss(h_s: Tensor<2>, h_t: Tensor<2>, temperature: f64) -> Tensor<1> {
    assert_eq!(h_s.dims(), h_t.dims(), "SimCSE views must hold the same instances");
    let [n, _] = h_s.dims();
    let logits = cosine_similarity_matrix(h_s, h_t).div_scalar(temperature); // [N, N]
    let log_p = log_softmax(logits, 1); // [N, N]
    // The positives sit on the diagonal: −mean_i log_p[i, i].
    let diagonal = Tensor::<2>::eye(n, &log_p.device());
    (log_p * diagonal).sum().div_scalar(n as f64).neg()
}

/// SwAV's Sinkhorn–Knopp codes (swav `distributed_sinkhorn`, one process): `scores` [B, K] of B
/// instances against K prototypes → codes q [B, K] whose rows each sum to 1 and whose columns
/// approach B/K each (equipartition: every prototype gets an equal share of the batch).
///
/// Q = exp(scores/ε)ᵀ [K, B] divided by its total; then `iterations` times: each prototype's row
/// scaled to sum 1/K, then each instance's column to sum 1/B; finally Q·B. The last step is the
/// column normalisation, so the instance sums are exactly 1 for any `iterations` ≥ 1, while the
/// prototype sums reach B/K only as the iterations converge (SwAV uses 3 iterations, ε = 0.05).
///
/// The codes are targets: they carry no gradient, whatever `scores` carries. The maximum of
/// scores/ε is subtracted before `exp`: a constant factor on Q that the first division by the
/// total cancels exactly, so the codes are unchanged while exp cannot overflow (scores/ε reaches
/// 1/ε = 20 for cosine scores, more for unnormalised ones). Entries more than ~87 below the
/// maximum still underflow to 0 in f32; a prototype whose whole row underflows gives NaN, as in
/// the reference code, so keep scores cosine-like when ε is small.
pub fn sinkhorn(scores: Tensor<2>, epsilon: f64, iterations: usize) -> Tensor<2> {
    let [b, k] = scores.dims();
    // `detach` alone keeps a leaf's require_grad (the codes would still be tracked);
    // set_require_grad(false) gives an untracked constant on an autodiff device, a no-op elsewhere.
    let scaled = scores.set_require_grad(false).div_scalar(epsilon); // [B, K]
    let scaled = scaled.clone() - scaled.max().unsqueeze::<2>();
    let q = scaled.exp().transpose(); // [K, B]
    let mut q = q.clone() / q.sum().unsqueeze::<2>();
    for _ in 0..iterations {
        q = q.clone() / q.clone().sum_dim(1).mul_scalar(k as f64); // each prototype sums to 1/K
        q = q.clone() / q.clone().sum_dim(0).mul_scalar(b as f64); // each instance sums to 1/B
    }
    q.mul_scalar(b as f64).transpose() // [B, K]
}

/// SwAV swapped prediction (paper Eq. 7–8): ℓ = ℓ(h_t, q_s) + ℓ(h_s, q_t), where
/// ℓ(h_t, q_s) = −mean_i Σ_k q_s[i,k] log p_t[i,k], p_v = softmax(h_v · cᵀ / τ) over the K
/// prototypes, and q_v = [`sinkhorn`] of the view's own scores (no gradient). `h_s`, `h_t` [B, d]
/// are two views of the same instances, `prototypes` [K, d]; all three are L2-normalised per row
/// here. SwAV (`main_swav.py`) instead re-normalises the prototype weights in place before each
/// step, so here the gradient also passes through the normalisation; the forward value is the same.
///
/// Eq. 7 sums the two swapped terms; SwAV's code averages them over the views (loss / 2 for two
/// crops). The factor 2 is absorbed in β. Reference defaults: τ = 0.1, ε = 0.05, 3 iterations.
///
/// # Panics
/// If the views differ in shape, or the prototypes' width is not the features' width.
pub fn swav_loss(
    h_s: Tensor<2>,
    h_t: Tensor<2>,
    prototypes: Tensor<2>,
    temperature: f64,
    epsilon: f64,
    iterations: usize,
) -> Tensor<1> {
    assert_eq!(h_s.dims(), h_t.dims(), "SwAV views must hold the same instances");
    assert_eq!(h_s.dims()[1], prototypes.dims()[1], "prototypes must have the features' width");
    let c = l2_normalize_rows(prototypes).transpose(); // [d, K]
    let scores_s = l2_normalize_rows(h_s).matmul(c.clone()); // [B, K]
    let scores_t = l2_normalize_rows(h_t).matmul(c); // [B, K]
    let q_s = sinkhorn(scores_s.clone(), epsilon, iterations);
    let q_t = sinkhorn(scores_t.clone(), epsilon, iterations);
    swapped_prediction(scores_t, q_s, temperature) + swapped_prediction(scores_s, q_t, temperature)
}

/// Eq. 8 averaged over instances: −mean_i Σ_k codes[i,k] · log softmax(scores[i,:]/τ)[k].
fn swapped_prediction(scores: Tensor<2>, codes: Tensor<2>, temperature: f64) -> Tensor<1> {
    let log_p = log_softmax(scores.div_scalar(temperature), 1); // [B, K]
    (codes * log_p).sum_dim(1).mean().neg()
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Device, TensorData};

    type Matrix = Vec<Vec<f64>>;

    fn tensor(rows: &Matrix, device: &Device) -> Tensor<2> {
        let shape = [rows.len(), rows[0].len()];
        let flat: Vec<f32> = rows.iter().flatten().map(|&v| v as f32).collect();
        Tensor::<2>::from_data(TensorData::new(flat, shape), device)
    }

    fn matrix<const D: usize>(t: Tensor<D>) -> Matrix {
        let dims = t.dims();
        let cols = if D == 1 { 1 } else { dims[D - 1] };
        let flat: Vec<f32> = t.into_data().convert::<f32>().try_to_vec().expect("f32");
        flat.chunks(cols).map(|r| r.iter().map(|&v| v as f64).collect()).collect()
    }

    fn scalar(t: Tensor<1>) -> f64 {
        t.into_scalar::<f32>() as f64
    }

    fn fixture() -> serde_json::Value {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/hf/losses.json");
        let text = std::fs::read_to_string(path).expect("tests/fixtures/hf/losses.json is checked in");
        serde_json::from_str(&text).expect("losses.json is valid JSON")
    }

    fn rows(v: &serde_json::Value) -> Matrix {
        serde_json::from_value(v.clone()).expect("a matrix of numbers")
    }

    /// Deterministic, irregular test values in [-1, 1].
    fn wavy(n: usize, d: usize, phase: f64) -> Matrix {
        (0..n).map(|i| (0..d).map(|j| (1.3 * i as f64 + 0.7 * j as f64 + phase).sin()).collect()).collect()
    }

    fn assert_rel(got: f64, want: f64, rel: f64, what: &str) {
        assert!((got - want).abs() <= rel * want.abs().max(1e-6), "{what}: {got} vs {want}");
    }

    fn assert_all_close(got: &Matrix, want: &Matrix, tol: f64, what: &str) {
        assert_eq!(got.len(), want.len(), "{what}: rows");
        for (g, w) in got.iter().flatten().zip(want.iter().flatten()) {
            assert!((g - w).abs() <= tol, "{what}: {got:?} vs {want:?}");
        }
    }

    fn row_sums(m: &Matrix) -> Vec<f64> {
        m.iter().map(|r| r.iter().sum()).collect()
    }

    fn col_sums(m: &Matrix) -> Vec<f64> {
        (0..m[0].len()).map(|k| m.iter().map(|r| r[k]).sum()).collect()
    }

    // ---- an independent f64 SwAV, straight from the formulas (no tensor code) ----

    fn normalize(m: &Matrix) -> Matrix {
        m.iter()
            .map(|r| {
                let n = r.iter().map(|v| v * v).sum::<f64>().sqrt().max(NORM_EPS);
                r.iter().map(|v| v / n).collect()
            })
            .collect()
    }

    fn dot_rows(a: &Matrix, b: &Matrix) -> Matrix {
        a.iter().map(|x| b.iter().map(|y| x.iter().zip(y).map(|(p, q)| p * q).sum()).collect()).collect()
    }

    /// Sinkhorn on [B, K], written over instances/prototypes without transposing.
    fn sinkhorn_f64(scores: &Matrix, eps: f64, iters: usize) -> Matrix {
        let (b, k) = (scores.len(), scores[0].len());
        let mut q: Matrix = scores.iter().map(|r| r.iter().map(|s| (s / eps).exp()).collect()).collect();
        let total: f64 = q.iter().flatten().sum();
        q.iter_mut().flatten().for_each(|v| *v /= total);
        for _ in 0..iters {
            let per_prototype = col_sums(&q);
            for r in q.iter_mut() {
                for (v, s) in r.iter_mut().zip(&per_prototype) {
                    *v /= s * k as f64;
                }
            }
            for r in q.iter_mut() {
                let s: f64 = r.iter().sum();
                r.iter_mut().for_each(|v| *v /= s * b as f64);
            }
        }
        q.iter_mut().flatten().for_each(|v| *v *= b as f64);
        q
    }

    fn swapped_f64(scores: &Matrix, codes: &Matrix, tau: f64) -> f64 {
        let per_instance = scores.iter().zip(codes).map(|(s, q)| {
            let log_z = s.iter().map(|v| (v / tau).exp()).sum::<f64>().ln();
            -s.iter().zip(q).map(|(v, qk)| qk * (v / tau - log_z)).sum::<f64>()
        });
        per_instance.sum::<f64>() / scores.len() as f64
    }

    fn swav_f64(h_s: &Matrix, h_t: &Matrix, c: &Matrix, tau: f64, eps: f64, iters: usize) -> f64 {
        let c = normalize(c);
        let scores_s = dot_rows(&normalize(h_s), &c);
        let scores_t = dot_rows(&normalize(h_t), &c);
        let (q_s, q_t) = (sinkhorn_f64(&scores_s, eps, iters), sinkhorn_f64(&scores_t, eps, iters));
        swapped_f64(&scores_t, &q_s, tau) + swapped_f64(&scores_s, &q_t, tau)
    }

    // ---- instances ----

    #[test]
    fn instances_pairs_stack_chosen_then_rejected() {
        let dev = Device::flex();
        let (c, r) = (vec![vec![1.0, 2.0], vec![3.0, 4.0]], vec![vec![5.0, 6.0], vec![7.0, 8.0]]);
        let got = matrix(instances(tensor(&c, &dev), tensor(&r, &dev), ContrastiveSamples::Pairs));
        assert_eq!(got, vec![vec![1.0, 2.0], vec![3.0, 4.0], vec![5.0, 6.0], vec![7.0, 8.0]]);
    }

    #[test]
    fn instances_difference_stack_both_signs() {
        let dev = Device::flex();
        let (c, r) = (vec![vec![1.0, 2.0], vec![3.0, 4.0]], vec![vec![5.0, 7.0], vec![2.0, 4.0]]);
        let got = matrix(instances(tensor(&c, &dev), tensor(&r, &dev), ContrastiveSamples::Difference));
        assert_eq!(got, vec![vec![-4.0, -5.0], vec![1.0, 0.0], vec![4.0, 5.0], vec![-1.0, 0.0]]);
    }

    #[test]
    fn samples_serde_names_are_lowercase() {
        assert_eq!(serde_json::to_string(&ContrastiveSamples::Pairs).expect("serialises"), "\"pairs\"");
        let diff: ContrastiveSamples = serde_json::from_str("\"difference\"").expect("lowercase name parses");
        assert_eq!(diff, ContrastiveSamples::Difference);
        assert!(serde_json::from_str::<ContrastiveSamples>("\"Pairs\"").is_err());
    }

    // ---- SimCSE against the HF fixture ----

    #[test]
    fn cosine_matrix_matches_hf_fixture() {
        let (f, dev) = (fixture(), Device::flex());
        let (z1, z2) = (rows(&f["inputs"]["z1"]), rows(&f["inputs"]["z2"]));
        let got = matrix(cosine_similarity_matrix(tensor(&z1, &dev), tensor(&z2, &dev)));
        assert_all_close(&got, &rows(&f["simcse"]["cos_sim"]), 1e-6, "cos_sim");
    }

    #[test]
    fn simcse_matches_hf_fixture() {
        let (f, dev) = (fixture(), Device::flex());
        let (z1, z2) = (rows(&f["inputs"]["z1"]), rows(&f["inputs"]["z2"]));
        let tau = f["inputs"]["simcse_temperature"].as_f64().expect("temperature");
        let loss = scalar(simcse_loss(tensor(&z1, &dev), tensor(&z2, &dev), tau));
        assert_rel(loss, f["simcse"]["loss"].as_f64().expect("loss"), 1e-5, "simcse loss");
    }

    #[test]
    fn simcse_zero_feature_row_stays_finite() {
        // A zero vector (e.g. Difference of two identical responses) has cosine 0 with everything.
        let dev = Device::flex().autodiff();
        let mut a = wavy(3, 4, 0.0);
        a[1] = vec![0.0; 4];
        let h_s = tensor(&a, &dev).require_grad();
        let loss = simcse_loss(h_s.clone(), tensor(&wavy(3, 4, 0.3), &dev), 0.05);
        let grads = loss.backward();
        assert!(scalar(loss).is_finite());
        let g = matrix(h_s.grad(&grads).expect("h_s takes part in the loss"));
        assert!(g.iter().flatten().all(|v| v.is_finite()), "{g:?}");
    }

    // ---- Sinkhorn ----

    #[test]
    fn sinkhorn_converges_to_equipartition() {
        let dev = Device::flex();
        let (b, k) = (6, 4);
        // Cosine-like scores at SwAV's ε: e^(2/ε) between extremes, so convergence takes ~100
        // iterations (50 leave the prototype sums 1e-3 off).
        let scores = normalize(&wavy(b, k, 0.2));
        let q = matrix(sinkhorn(tensor(&scores, &dev), 0.05, 200));
        for s in row_sums(&q) {
            assert!((s - 1.0).abs() < 1e-4, "instance sums {:?}", row_sums(&q));
        }
        for s in col_sums(&q) {
            assert!((s - b as f64 / k as f64).abs() < 1e-4, "prototype sums {:?}", col_sums(&q));
        }
        assert_all_close(&q, &sinkhorn_f64(&scores, 0.05, 200), 1e-4, "codes vs f64");
    }

    #[test]
    fn sinkhorn_three_iterations_instance_sums_are_one() {
        let dev = Device::flex();
        let scores = normalize(&wavy(6, 4, 0.2));
        let q = matrix(sinkhorn(tensor(&scores, &dev), 0.05, 3));
        for s in row_sums(&q) {
            assert!((s - 1.0).abs() < 1e-6, "instance sums {:?}", row_sums(&q));
        }
        assert_all_close(&q, &sinkhorn_f64(&scores, 0.05, 3), 1e-5, "codes vs f64");
    }

    #[test]
    fn sinkhorn_large_scores_do_not_overflow() {
        // scores/ε ≈ 2000: exp overflows f32 without the max shift; with it the codes are those
        // of the unshifted scores (a constant added to all scores cancels in the normalisation).
        let dev = Device::flex();
        let scores = normalize(&wavy(6, 4, 0.2));
        let shifted: Matrix = scores.iter().map(|r| r.iter().map(|v| v + 100.0).collect()).collect();
        let q = matrix(sinkhorn(tensor(&shifted, &dev), 0.05, 3));
        assert!(q.iter().flatten().all(|v| v.is_finite()), "{q:?}");
        assert_all_close(&q, &sinkhorn_f64(&scores, 0.05, 3), 1e-4, "shifted codes");
    }

    #[test]
    fn sinkhorn_codes_carry_no_gradient() {
        let dev = Device::flex().autodiff();
        let x = tensor(&normalize(&wavy(6, 4, 0.2)), &dev).require_grad();
        let codes = sinkhorn(x.clone(), 0.05, 3);
        assert!(!codes.is_tracked(), "the codes must be constants of the graph");
        // d/dx Σ codes ⊙ x is the codes themselves only if no gradient flows through them.
        let grads = (codes.clone() * x.clone()).sum().backward();
        let g = matrix(x.grad(&grads).expect("x takes part in the product"));
        assert_all_close(&g, &matrix(codes), 1e-7, "gradient = codes");
    }

    // ---- SwAV ----

    #[test]
    fn swav_matches_plain_f64_reference() {
        let dev = Device::flex();
        let (h_s, h_t, c) = (wavy(6, 5, 0.0), wavy(6, 5, 0.4), wavy(4, 5, 2.1));
        for (tau, eps, iters) in [(0.1, 0.05, 3), (0.5, 0.1, 1)] {
            let got = scalar(swav_loss(tensor(&h_s, &dev), tensor(&h_t, &dev), tensor(&c, &dev), tau, eps, iters));
            assert_rel(got, swav_f64(&h_s, &h_t, &c, tau, eps, iters), 1e-5, "swav loss");
        }
    }

    #[test]
    fn swav_gradients_reach_features_and_prototypes() {
        let dev = Device::flex().autodiff();
        let h_s = tensor(&wavy(6, 5, 0.0), &dev).require_grad();
        let h_t = tensor(&wavy(6, 5, 0.4), &dev);
        let c = tensor(&wavy(4, 5, 2.1), &dev).require_grad();
        let grads = swav_loss(h_s.clone(), h_t, c.clone(), 0.1, 0.05, 3).backward();
        for (name, g) in [("h_s", h_s.grad(&grads)), ("prototypes", c.grad(&grads))] {
            let g = matrix(g.expect("a gradient"));
            assert!(g.iter().flatten().all(|v| v.is_finite()), "{name}: {g:?}");
            assert!(g.iter().flatten().any(|v| v.abs() > 1e-6), "{name}: {g:?}");
        }
    }
}
