//! Attention probabilities on libtorch (`--features tch`): softmax(scores / √d + mask_bias) ⊙
//! dropout mask as one op with libtorch's own softmax kernels forward and backward
//! (`_softmax_backward_data`). Under Burn's autodiff the composed softmax is five recorded ops
//! (max, sub, exp, sum, div), each with its own backward, over [batch, heads, seq, keys] tensors.
//! The dropout mask is the same hash-based stream as every other path (`DropoutMask::factor`).
#![allow(deprecated)] // Burn marks its LibTorch backend deprecated; it is the tch device.

use crate::dropout::DropoutMask;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::libtorch::TchTensor;
use burn::backend::tensor::FloatTensor;
use burn::backend::{backend_extension, Autodiff, Backend, Dispatch, LibTorch};
use burn::tensor::Tensor;
use tch::Kind;

#[backend_extension(LibTorch, Autodiff)]
pub trait TchFusedOps: Backend {
    /// softmax(scores / divisor + mask_bias) over the last dim, then ⊙ the dropout mask.
    fn tch_attention_probs(scores: FloatTensor<Self>, mask_bias: FloatTensor<Self>, divisor: f32, dropout: Option<DropoutMask>) -> FloatTensor<Self>;
}

/// The attention probabilities of `scores` on a tch device (with or without autodiff).
pub fn attention_probs(scores: Tensor<4>, mask_bias: Tensor<4>, divisor: f32, dropout: Option<DropoutMask>) -> Tensor<4> {
    Tensor::from_dispatch(<Dispatch as TchFusedOps>::tch_attention_probs(scores.into_dispatch(), mask_bias.into_dispatch(), divisor, dropout))
}

fn softmax_probs(scores: &tch::Tensor, mask_bias: &tch::Tensor, divisor: f32) -> tch::Tensor {
    (scores / divisor as f64 + mask_bias).softmax(-1, Kind::Float)
}

/// The mask's factors (0 or 1/(1−p)) for every element of `like`, row-major, on its device.
fn mask_tensor(mask: DropoutMask, like: &tch::Tensor) -> tch::Tensor {
    let n = like.numel() as u64;
    let factors: Vec<f32> = (0..n).map(|i| mask.factor(i)).collect();
    tch::Tensor::from_slice(&factors).view(like.size().as_slice()).to_device(like.device())
}

impl TchFusedOps for LibTorch {
    fn tch_attention_probs(scores: TchTensor, mask_bias: TchTensor, divisor: f32, dropout: Option<DropoutMask>) -> TchTensor {
        let probs = softmax_probs(&scores.tensor, &mask_bias.tensor, divisor);
        TchTensor::new(match dropout {
            Some(mask) => &probs * mask_tensor(mask, &probs),
            None => probs,
        })
    }
}

#[derive(Debug)]
struct AttentionProbsBackward {
    divisor: f32,
}

/// The probabilities before dropout, and the dropout factors when dropout is on.
#[derive(Debug, Clone)]
struct AttentionState {
    probs: TchTensor,
    mask: Option<TchTensor>,
}

impl Backward<LibTorch, 1> for AttentionProbsBackward {
    type State = AttentionState;

    fn backward(self, ops: Ops<AttentionState, 1>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        let grad = grads.consume::<LibTorch>(&ops.node);
        let [Some(scores)] = ops.parents else { return };
        let AttentionState { probs, mask } = ops.state;
        let grad = match mask {
            Some(mask) => &grad.tensor * &mask.tensor,
            None => grad.tensor,
        };
        let dz = tch::Tensor::internal_softmax_backward_data(&grad, &probs.tensor, -1, Kind::Float);
        grads.register::<LibTorch>(scores.id, TchTensor::new(dz / self.divisor as f64));
    }
}

impl<C: CheckpointStrategy> TchFusedOps for Autodiff<LibTorch, C> {
    fn tch_attention_probs(scores: FloatTensor<Self>, mask_bias: FloatTensor<Self>, divisor: f32, dropout: Option<DropoutMask>) -> FloatTensor<Self> {
        let mask_bias = mask_bias.into_primitive();
        match (AttentionProbsBackward { divisor }).prepare::<C>([scores.node()]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let probs = TchTensor::new(softmax_probs(&scores.primitive().tensor, &mask_bias.tensor, divisor));
                let (output, mask) = match dropout {
                    Some(mask) => {
                        let mask = TchTensor::new(mask_tensor(mask, &probs.tensor));
                        (TchTensor::new(&probs.tensor * &mask.tensor), Some(mask))
                    }
                    // The output is the state's tensor: share its storage record so neither is
                    // ever modified in place while the other lives.
                    None => (TchTensor::from_existing(probs.tensor.shallow_clone(), probs.storage.clone()), None),
                };
                prep.finish(AttentionState { probs, mask }, output)
            }
            OpsKind::UnTracked(prep) => prep.finish(LibTorch::tch_attention_probs(scores.into_primitive(), mask_bias, divisor, dropout)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dropout::DropoutRng;
    use crate::fused::composed_attention_probs;
    use burn::tensor::{Device, TensorData};

    fn libtorch() -> Device {
        Device::libtorch()
    }

    fn values(shape: [usize; 4], seed: u64, scale: f32, device: &Device) -> Tensor<4> {
        let n: usize = shape.iter().product();
        let v: Vec<f32> = (0..n as u64).map(|i| scale * ((rmtrain_core::splitmix64(seed ^ rmtrain_core::splitmix64(i)) >> 40) as f32 / (1u64 << 23) as f32 - 1.0)).collect();
        Tensor::from_data(TensorData::new(v, shape), device)
    }

    fn mask_bias(device: &Device) -> Tensor<4> {
        // batch 0: no padding; batch 1: the last 2 of 6 keys padded.
        let v: Vec<f32> = [[0.0; 6], [0.0, 0.0, 0.0, 0.0, f32::MIN, f32::MIN]].iter().flatten().copied().collect();
        Tensor::from_data(TensorData::new(v, [2, 1, 1, 6]), device)
    }

    fn max_diff(a: Tensor<4>, b: Tensor<4>) -> f32 {
        let (a, b): (Vec<f32>, Vec<f32>) = (a.into_data().try_to_vec().expect("f32"), b.into_data().try_to_vec().expect("f32"));
        a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
    }

    /// libtorch's softmax forward/backward against Burn's composed ops on the same device, with
    /// and without dropout (the same mask stream), values and score gradients.
    #[test]
    fn tch_attention_probs_match_the_composed_ops() {
        let device = libtorch().autodiff();
        let divisor = 8f32.sqrt();
        for p in [0.0, 0.3] {
            let scores = values([2, 3, 4, 6], 1, 6.0, &device);
            let weights = values([2, 3, 4, 6], 2, 1.0, &device);
            let mask = DropoutRng::new(5).next_mask(p);
            let run = |fused: bool| {
                let s = scores.clone().require_grad();
                let out = if fused { attention_probs(s.clone(), mask_bias(&device), divisor, mask) } else { composed_attention_probs(s.clone(), mask_bias(&device), divisor, mask) };
                let grads = (out.clone() * weights.clone()).sum().backward();
                (out, s.grad(&grads).expect("scores get a gradient"))
            };
            let ((out, grad), (want, want_grad)) = (run(true), run(false));
            let (dv, dg) = (max_diff(out.clone(), want), max_diff(grad, want_grad));
            assert!(dv < 1e-6 && dg < 1e-6, "p = {p}: values differ by {dv}, gradients by {dg}");
            let out: Vec<f32> = out.into_data().try_to_vec().expect("f32");
            assert!(out[72..].chunks(6).all(|row| row[4] == 0.0 && row[5] == 0.0), "padded keys get 0");
            if p > 0.0 {
                assert!(out.iter().filter(|&&v| v == 0.0).count() > 30, "dropout drops");
            }
        }
        // inference (no autodiff)
        let (scores, mask) = (values([2, 3, 4, 6], 3, 6.0, &libtorch()), DropoutRng::new(6).next_mask(0.2));
        let d = max_diff(attention_probs(scores.clone(), mask_bias(&libtorch()), divisor, mask), composed_attention_probs(scores, mask_bias(&libtorch()), divisor, mask));
        assert!(d < 1e-6, "inference: {d}");
    }
}
