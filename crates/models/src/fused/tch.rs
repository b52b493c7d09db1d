//! BERT's attention probabilities, LayerNorms and Linear layers on libtorch (`--features tch`),
//! each one Burn op:
//! - softmax(scores / √d + mask_bias) ⊙ dropout mask with libtorch's own softmax kernels forward
//!   and backward (`_softmax_backward_data`). Under Burn's autodiff the composed softmax is five
//!   recorded ops (max, sub, exp, sum, div), each with its own backward, over [batch, heads, seq,
//!   keys] tensors.
//! - LayerNorm(x) and LayerNorm(dropout(x) + residual) with libtorch's fused `native_layer_norm`
//!   and its backward. Burn's autodiff has no LayerNorm op: it records the ~9 ops of the composed
//!   formula (mean, sub, square, mean, add, sqrt, div, mul, add) and runs a backward for each.
//!   tch 0.22 binds no `native_layer_norm_backward`, so the op runs its few libtorch ops under
//!   libtorch's own autograd and its backward asks that graph for the input gradients
//!   ([`LibTorchGraph`]).
//! - Linear layers as one libtorch `addmm` on [rows, in] with a hand-written backward (two `mm`
//!   and a row sum). Burn's `linear` keeps [batch, seq, in] inputs batched when seq is a multiple
//!   of 32 (a `bmm` over the batch against the broadcast weight) and adds the bias as a separate
//!   pass; PyTorch's `F.linear` runs one `addmm` on the flattened rows, as here.
//!
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
use burn::module::Param;
use burn::nn::{LayerNorm, Linear};
use burn::tensor::Tensor;
use tch::Kind;

#[backend_extension(LibTorch, Autodiff)]
pub trait TchFusedOps: Backend {
    /// softmax(scores / divisor + mask_bias) over the last dim, then ⊙ the dropout mask.
    fn tch_attention_probs(scores: FloatTensor<Self>, mask_bias: FloatTensor<Self>, divisor: f32, dropout: Option<DropoutMask>) -> FloatTensor<Self>;
    /// x·W + b over the last dim of x; W: [in, out] (Burn's layout), b: [out].
    fn tch_linear(x: FloatTensor<Self>, weight: FloatTensor<Self>, bias: FloatTensor<Self>) -> FloatTensor<Self>;
    /// LayerNorm over the last dim with scale and bias, both [d].
    fn tch_layer_norm(x: FloatTensor<Self>, gamma: FloatTensor<Self>, beta: FloatTensor<Self>, epsilon: f64) -> FloatTensor<Self>;
    /// LayerNorm(dropout(x) + residual), the end of a post-LN transformer sub-block.
    fn tch_residual_layer_norm(x: FloatTensor<Self>, residual: FloatTensor<Self>, gamma: FloatTensor<Self>, beta: FloatTensor<Self>, epsilon: f64, dropout: Option<DropoutMask>) -> FloatTensor<Self>;
}

/// `layer.forward(x)` on a tch device for a layer with a bias (with or without autodiff).
pub fn linear<const D: usize>(layer: &Linear, bias: &Param<Tensor<1>>, x: Tensor<D>) -> Tensor<D> {
    Tensor::from_dispatch(<Dispatch as TchFusedOps>::tch_linear(x.into_dispatch(), layer.weight.val().into_dispatch(), bias.val().into_dispatch()))
}

/// `norm.forward(x)` on a tch device for a norm with a bias (with or without autodiff).
pub fn layer_norm<const D: usize>(norm: &LayerNorm, beta: &Param<Tensor<1>>, epsilon: f64, x: Tensor<D>) -> Tensor<D> {
    let (gamma, beta) = (norm.gamma.val().into_dispatch(), beta.val().into_dispatch());
    Tensor::from_dispatch(<Dispatch as TchFusedOps>::tch_layer_norm(x.into_dispatch(), gamma, beta, epsilon))
}

/// `norm.forward(dropout(x) + residual)` on a tch device for a norm with a bias.
pub fn residual_layer_norm<const D: usize>(norm: &LayerNorm, beta: &Param<Tensor<1>>, epsilon: f64, x: Tensor<D>, residual: Tensor<D>, dropout: Option<DropoutMask>) -> Tensor<D> {
    let (gamma, beta) = (norm.gamma.val().into_dispatch(), beta.val().into_dispatch());
    Tensor::from_dispatch(<Dispatch as TchFusedOps>::tch_residual_layer_norm(x.into_dispatch(), residual.into_dispatch(), gamma, beta, epsilon, dropout))
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

/// x's leading dims flattened: [rows, in].
fn rows(x: &tch::Tensor) -> tch::Tensor {
    let d = *x.size().last().expect("a tensor of rank ≥ 1");
    x.reshape([-1, d])
}

/// x·W + b as one `addmm` on x's rows, in x's shape with the last dim W's.
fn affine(x: &tch::Tensor, weight: &tch::Tensor, bias: &tch::Tensor) -> tch::Tensor {
    let mut shape = x.size();
    *shape.last_mut().expect("a tensor of rank ≥ 1") = weight.size()[1];
    bias.addmm(&rows(x), weight).reshape(shape)
}

/// LayerNorm of `z` over its last dim.
fn normalized(z: &tch::Tensor, gamma: &tch::Tensor, beta: &tch::Tensor, epsilon: f64) -> tch::Tensor {
    let d = *z.size().last().expect("a tensor of rank ≥ 1");
    z.layer_norm([d], Some(gamma), Some(beta), epsilon, true)
}

/// dropout(x) + residual.
fn add_dropped(x: &tch::Tensor, residual: &tch::Tensor, dropout: Option<DropoutMask>) -> tch::Tensor {
    match dropout {
        Some(mask) => x * mask_tensor(mask, x) + residual,
        None => x + residual,
    }
}

impl TchFusedOps for LibTorch {
    fn tch_attention_probs(scores: TchTensor, mask_bias: TchTensor, divisor: f32, dropout: Option<DropoutMask>) -> TchTensor {
        let probs = softmax_probs(&scores.tensor, &mask_bias.tensor, divisor);
        TchTensor::new(match dropout {
            Some(mask) => &probs * mask_tensor(mask, &probs),
            None => probs,
        })
    }

    fn tch_linear(x: TchTensor, weight: TchTensor, bias: TchTensor) -> TchTensor {
        TchTensor::new(affine(&x.tensor, &weight.tensor, &bias.tensor))
    }

    fn tch_layer_norm(x: TchTensor, gamma: TchTensor, beta: TchTensor, epsilon: f64) -> TchTensor {
        TchTensor::new(normalized(&x.tensor, &gamma.tensor, &beta.tensor, epsilon))
    }

    fn tch_residual_layer_norm(x: TchTensor, residual: TchTensor, gamma: TchTensor, beta: TchTensor, epsilon: f64, dropout: Option<DropoutMask>) -> TchTensor {
        TchTensor::new(normalized(&add_dropped(&x.tensor, &residual.tensor, dropout), &gamma.tensor, &beta.tensor, epsilon))
    }
}

#[derive(Debug)]
struct LinearBackward;

/// The layer's input and weight.
#[derive(Debug, Clone)]
struct LinearState {
    x: TchTensor,
    weight: TchTensor,
}

impl Backward<LibTorch, 3> for LinearBackward {
    type State = LinearState;

    fn backward(self, ops: Ops<LinearState, 3>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        let grad = grads.consume::<LibTorch>(&ops.node);
        let [x, weight, bias] = ops.parents;
        let LinearState { x: input, weight: w } = ops.state;
        let g = rows(&grad.tensor); // [rows, out]
        if let Some(x) = x {
            grads.register::<LibTorch>(x.id, TchTensor::new(g.mm(&w.tensor.tr()).reshape(input.tensor.size())));
        }
        if let Some(weight) = weight {
            grads.register::<LibTorch>(weight.id, TchTensor::new(rows(&input.tensor).tr().mm(&g)));
        }
        if let Some(bias) = bias {
            grads.register::<LibTorch>(bias.id, TchTensor::new(g.sum_dim_intlist([0i64].as_slice(), false, Kind::Float)));
        }
    }
}

/// A piece of the forward pass run under libtorch's autograd: its inputs as libtorch leaves that
/// require a gradient (in the order of the Burn op's parents) and its output, which carries the
/// libtorch graph. Each tensor keeps its Burn tensor's storage record, so burn-tch never writes
/// in place into a buffer the graph has saved.
#[derive(Debug, Clone)]
struct LibTorchGraph {
    inputs: Vec<TchTensor>,
    output: TchTensor,
}

impl LibTorchGraph {
    /// Runs `f` on leaves sharing the buffers of `inputs`; returns the graph and the output for
    /// Burn (detached, sharing the output's storage record).
    fn record<const N: usize>(inputs: [&TchTensor; N], f: impl FnOnce(&[tch::Tensor; N]) -> tch::Tensor) -> (Self, TchTensor) {
        let leaves: [tch::Tensor; N] = inputs.map(|t| t.tensor.detach().set_requires_grad(true));
        // Grad mode is libtorch's default and burn-tch never turns it off; on for this call anyway.
        let output = tch::with_grad(|| f(&leaves));
        let inputs = leaves.into_iter().zip(inputs).map(|(leaf, t)| TchTensor::from_existing(leaf, t.storage.clone())).collect();
        let output = TchTensor::new(output);
        let detached = TchTensor::from_existing(output.tensor.detach(), output.storage.clone());
        (Self { inputs, output }, detached)
    }

    /// The gradients of the inputs selected by `wanted`, given the output's gradient.
    fn backward(self, grad: &TchTensor, wanted: &[bool]) -> Vec<Option<TchTensor>> {
        let leaves: Vec<&tch::Tensor> = self.inputs.iter().zip(wanted).filter(|(_, w)| **w).map(|(t, _)| &t.tensor).collect();
        if leaves.is_empty() {
            return wanted.iter().map(|_| None).collect();
        }
        // libtorch's C API takes no output gradient: Σ output ⊙ grad has exactly `grad` as the
        // output's gradient.
        let objective = (&self.output.tensor * &grad.tensor).sum(Kind::Float);
        let mut grads = tch::Tensor::run_backward(&[objective], &leaves, false, false).into_iter();
        wanted.iter().map(|&w| if w { grads.next().map(TchTensor::new) } else { None }).collect()
    }
}

/// The backward of an op recorded as a [`LibTorchGraph`], for any number of parents.
#[derive(Debug)]
struct LibTorchGraphBackward;

impl<const N: usize> Backward<LibTorch, N> for LibTorchGraphBackward {
    type State = LibTorchGraph;

    fn backward(self, ops: Ops<LibTorchGraph, N>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        let grad = grads.consume::<LibTorch>(&ops.node);
        let wanted: Vec<bool> = ops.parents.iter().map(Option::is_some).collect();
        for (parent, g) in ops.parents.into_iter().zip(ops.state.backward(&grad, &wanted)) {
            if let (Some(parent), Some(g)) = (parent, g) {
                grads.register::<LibTorch>(parent.id, g);
            }
        }
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

    fn tch_linear(x: FloatTensor<Self>, weight: FloatTensor<Self>, bias: FloatTensor<Self>) -> FloatTensor<Self> {
        match LinearBackward.prepare::<C>([x.node(), weight.node(), bias.node()]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let output = TchTensor::new(affine(&x.primitive().tensor, &weight.primitive().tensor, &bias.primitive().tensor));
                prep.finish(LinearState { x: x.primitive().clone(), weight: weight.primitive().clone() }, output)
            }
            OpsKind::UnTracked(prep) => prep.finish(LibTorch::tch_linear(x.into_primitive(), weight.into_primitive(), bias.into_primitive())),
        }
    }

    fn tch_layer_norm(x: FloatTensor<Self>, gamma: FloatTensor<Self>, beta: FloatTensor<Self>, epsilon: f64) -> FloatTensor<Self> {
        match LibTorchGraphBackward.prepare::<C>([x.node(), gamma.node(), beta.node()]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let (graph, output) = LibTorchGraph::record([x.primitive(), gamma.primitive(), beta.primitive()], |[x, gamma, beta]| normalized(x, gamma, beta, epsilon));
                prep.finish(graph, output)
            }
            OpsKind::UnTracked(prep) => prep.finish(LibTorch::tch_layer_norm(x.into_primitive(), gamma.into_primitive(), beta.into_primitive(), epsilon)),
        }
    }

    fn tch_residual_layer_norm(x: FloatTensor<Self>, residual: FloatTensor<Self>, gamma: FloatTensor<Self>, beta: FloatTensor<Self>, epsilon: f64, dropout: Option<DropoutMask>) -> FloatTensor<Self> {
        let nodes = [x.node(), residual.node(), gamma.node(), beta.node()];
        match LibTorchGraphBackward.prepare::<C>(nodes).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let inputs = [x.primitive(), residual.primitive(), gamma.primitive(), beta.primitive()];
                let (graph, output) = LibTorchGraph::record(inputs, |[x, residual, gamma, beta]| normalized(&add_dropped(x, residual, dropout), gamma, beta, epsilon));
                prep.finish(graph, output)
            }
            OpsKind::UnTracked(prep) => prep.finish(LibTorch::tch_residual_layer_norm(
                x.into_primitive(),
                residual.into_primitive(),
                gamma.into_primitive(),
                beta.into_primitive(),
                epsilon,
                dropout,
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dropout::DropoutRng;
    use crate::fused::{composed_attention_probs, composed_residual_layer_norm};
    use burn::nn::LayerNormConfig;
    use burn::tensor::{Device, TensorData};

    fn libtorch() -> Device {
        Device::libtorch()
    }

    fn values<const D: usize>(shape: [usize; D], seed: u64, scale: f32, device: &Device) -> Tensor<D> {
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

    fn max_diff_n<const D: usize>(a: Tensor<D>, b: Tensor<D>) -> f32 {
        let (a, b): (Vec<f32>, Vec<f32>) = (a.into_data().try_to_vec().expect("f32"), b.into_data().try_to_vec().expect("f32"));
        assert_eq!(a.len(), b.len());
        a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
    }

    fn norm(device: &Device) -> LayerNorm {
        let mut norm = LayerNormConfig::new(32).with_epsilon(1e-12).init(device);
        norm.gamma = Param::from_tensor(values([32], 8, 0.5, device) + 1.0);
        norm.beta = Some(Param::from_tensor(values([32], 9, 0.5, device)));
        norm
    }

    /// LayerNorm and dropout + residual + LayerNorm through libtorch's autograd against Burn's
    /// composed ops on the same device: values and the gradients of x, the residual, γ and β.
    #[test]
    fn tch_layer_norms_match_the_composed_ops() {
        let device = libtorch().autodiff();
        let eps = 1e-12;
        let x = values([2, 5, 32], 10, 2.0, &device) + 0.5;
        let residual = values([2, 5, 32], 11, 2.0, &device) + 3.0;
        let weights = values([2, 5, 32], 12, 1.0, &device);
        for (with_residual, p) in [(false, 0.0), (true, 0.0), (true, 0.3)] {
            let mask = DropoutRng::new(13).next_mask(p);
            let run = |fused: bool| {
                let norm = norm(&device);
                let (x, r) = (x.clone().require_grad(), residual.clone().require_grad());
                let y = match (with_residual, fused) {
                    (false, true) => crate::fused::layer_norm(&norm, eps, x.clone()),
                    (false, false) => norm.forward(x.clone()),
                    (true, true) => crate::fused::residual_layer_norm(&norm, eps, x.clone(), r.clone(), mask),
                    (true, false) => composed_residual_layer_norm(&norm, x.clone(), r.clone(), mask),
                };
                let grads = (y.clone() * weights.clone()).sum().backward();
                let beta = norm.beta.as_ref().expect("a bias").val();
                let dr = if with_residual { r.grad(&grads).expect("dr") } else { r.zeros_like().inner() };
                (y, x.grad(&grads).expect("dx"), dr, norm.gamma.val().grad(&grads).expect("dγ"), beta.grad(&grads).expect("dβ"))
            };
            let ((y, dx, dr, dg, db), (want_y, want_dx, want_dr, want_dg, want_db)) = (run(true), run(false));
            let diffs = [max_diff_n(y, want_y), max_diff_n(dx, want_dx), max_diff_n(dr, want_dr), max_diff_n(dg, want_dg), max_diff_n(db, want_db)];
            assert!(diffs.iter().all(|&d| d < 1e-5), "residual {with_residual}, p = {p}: y, dx, dr, dγ, dβ differ by {diffs:?}");
        }
        // inference (no autodiff)
        let inference = libtorch();
        let norm = norm(&inference);
        let (x, r) = (values([2, 5, 32], 14, 2.0, &inference), values([2, 5, 32], 15, 2.0, &inference));
        let mask = DropoutRng::new(16).next_mask(0.2);
        let d = max_diff_n(crate::fused::residual_layer_norm(&norm, eps, x.clone(), r.clone(), mask), composed_residual_layer_norm(&norm, x.clone(), r, mask));
        assert!(d < 1e-5, "inference, residual: {d}");
        let d = max_diff_n(crate::fused::layer_norm(&norm, eps, x.clone()), norm.forward(x));
        assert!(d < 1e-5, "inference: {d}");
    }

    /// The addmm Linear against Burn's `Linear::forward` on the same device, for a batched input
    /// whose rows Burn keeps batched (seq 32) and one it folds (seq 5): values and gradients.
    #[test]
    fn tch_linear_matches_burns_linear() {
        let device = libtorch().autodiff();
        for seq in [32, 5] {
            let mut layer = burn::nn::LinearConfig::new(24, 40).init(&device);
            layer.weight = Param::from_tensor(values([24, 40], 20, 0.3, &device));
            layer.bias = Some(Param::from_tensor(values([40], 21, 0.3, &device)));
            let x = values([3, seq, 24], 22, 1.0, &device);
            let weights = values([3, seq, 40], 23, 1.0, &device);
            let run = |fused: bool| {
                let x = x.clone().require_grad();
                let y = if fused { crate::fused::linear(&layer, x.clone()) } else { layer.forward(x.clone()) };
                let grads = (y.clone() * weights.clone()).sum().backward();
                let bias = layer.bias.as_ref().expect("a bias").val();
                (y, x.grad(&grads).expect("dx"), layer.weight.val().grad(&grads).expect("dW"), bias.grad(&grads).expect("db"))
            };
            let ((y, dx, dw, db), (want_y, want_dx, want_dw, want_db)) = (run(true), run(false));
            let diffs = [max_diff_n(y, want_y), max_diff_n(dx, want_dx), max_diff_n(dw, want_dw), max_diff_n(db, want_db)];
            assert!(diffs.iter().all(|&d| d < 1e-4), "seq {seq}: y, dx, dW, db differ by {diffs:?}");
        }
    }
}
