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
//! - Self-attention without attention dropout (training with dropout off, and scoring) on the
//!   CPU: the Q, K and V projections as one `addmm` against [Wq | Wk | Wv], then libtorch's
//!   flash-attention CPU kernel forward and backward, the kernels PyTorch's
//!   `scaled_dot_product_attention` runs. No [batch, heads, seq, seq] tensor is stored.
//!
//! The dropout mask is the same hash-based stream as every other path (`DropoutMask::factor`).
#![allow(deprecated)] // Burn marks its LibTorch backend deprecated; it is the tch device.

use crate::dropout::DropoutMask;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::autodiff::NodeId;
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
    /// softmax(Q·Kᵀ/√dₕ + mask_bias)·V per head, [Q | K | V] = x·W + b; libtorch CPU tensors only.
    /// x: [batch, seq, d]; W: [d, 3d] (Burn's layout); b: [3d]; mask_bias: [batch, 1, 1, seq], a
    /// constant. Returns the heads' context, [batch, seq, d].
    fn tch_self_attention(x: FloatTensor<Self>, weight: FloatTensor<Self>, bias: FloatTensor<Self>, mask_bias: FloatTensor<Self>, heads: usize) -> FloatTensor<Self>;
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

/// The attention context of `x` (Q/K/V projections and softmax(Q·Kᵀ/√dₕ + mask_bias)·V) on the
/// tch CPU device without attention dropout, with or without autodiff.
pub fn self_attention(query: &Linear, key: &Linear, value: &Linear, biases: [&Param<Tensor<1>>; 3], x: Tensor<3>, mask_bias: Tensor<4>, heads: usize) -> Tensor<3> {
    let weight = Tensor::cat(vec![query.weight.val(), key.weight.val(), value.weight.val()], 1);
    let bias = Tensor::cat(biases.iter().map(|b| b.val()).collect(), 0);
    Tensor::from_dispatch(<Dispatch as TchFusedOps>::tch_self_attention(x.into_dispatch(), weight.into_dispatch(), bias.into_dispatch(), mask_bias.into_dispatch(), heads))
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

/// [Q | K | V] as [batch, seq, 3d] → Q, K and V as [batch, heads, seq, dₕ] views (no copy).
fn split_heads(qkv: &tch::Tensor, heads: usize) -> [tch::Tensor; 3] {
    let (s, h) = (qkv.size(), heads as i64);
    let per_head = qkv.view([s[0], s[1], 3, h, s[2] / 3 / h]).permute([2, 0, 3, 1, 4]);
    [0, 1, 2].map(|i| per_head.get(i))
}

/// [batch, heads, seq, dₕ] → [batch, seq, heads·dₕ], contiguous.
fn merge_heads(t: &tch::Tensor) -> tch::Tensor {
    let s = t.size();
    t.transpose(1, 2).reshape([s[0], s[2], s[1] * s[3]])
}

/// 1/√dₕ, the scale of Q·Kᵀ.
fn attention_scale(q: &tch::Tensor) -> f64 {
    1.0 / (q.size()[3] as f64).sqrt()
}

/// libtorch's flash-attention CPU forward: the output [batch, heads, seq, dₕ] and the rows'
/// log-sum-exp, which its backward takes.
fn flash_attention(qkv: &tch::Tensor, mask_bias: &tch::Tensor, heads: usize) -> (tch::Tensor, tch::Tensor) {
    let [q, k, v] = split_heads(qkv, heads);
    tch::Tensor::internal_scaled_dot_product_flash_attention_for_cpu(&q, &k, &v, 0.0, false, Some(mask_bias), attention_scale(&q))
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

    fn tch_self_attention(x: TchTensor, weight: TchTensor, bias: TchTensor, mask_bias: TchTensor, heads: usize) -> TchTensor {
        let (out, _) = flash_attention(&affine(&x.tensor, &weight.tensor, &bias.tensor), &mask_bias.tensor, heads);
        TchTensor::new(merge_heads(&out))
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
        register_affine_grads(grads, ops.parents.map(|p| p.map(|node| node.id)), &ops.state, &grad.tensor);
    }
}

/// The gradients of x·W + b's parents [x, W, b], given the output's gradient.
fn register_affine_grads(grads: &mut Gradients, parents: [Option<NodeId>; 3], state: &LinearState, grad: &tch::Tensor) {
    let [x, weight, bias] = parents;
    let g = rows(grad); // [rows, out]
    if let Some(x) = x {
        grads.register::<LibTorch>(x, TchTensor::new(g.mm(&state.weight.tensor.tr()).reshape(state.x.tensor.size())));
    }
    if let Some(weight) = weight {
        grads.register::<LibTorch>(weight, TchTensor::new(rows(&state.x.tensor).tr().mm(&g)));
    }
    if let Some(bias) = bias {
        grads.register::<LibTorch>(bias, TchTensor::new(g.sum_dim_intlist([0i64].as_slice(), false, Kind::Float)));
    }
}

#[derive(Debug)]
struct SelfAttentionBackward {
    heads: usize,
}

/// What the flash-attention backward takes, and the projection's input and weight.
#[derive(Debug, Clone)]
struct SelfAttentionState {
    projection: LinearState,
    qkv: TchTensor,
    out: TchTensor,
    logsumexp: TchTensor,
    mask_bias: TchTensor,
}

impl Backward<LibTorch, 3> for SelfAttentionBackward {
    type State = SelfAttentionState;

    fn backward(self, ops: Ops<SelfAttentionState, 3>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        let grad = grads.consume::<LibTorch>(&ops.node);
        let state = &ops.state;
        let [q, k, v] = split_heads(&state.qkv.tensor, self.heads);
        let s = grad.tensor.size();
        let grad_out = grad.tensor.reshape([s[0], s[1], self.heads as i64, -1]).transpose(1, 2);
        let mask = Some(&state.mask_bias.tensor);
        let (dq, dk, dv) = tch::Tensor::internal_scaled_dot_product_flash_attention_for_cpu_backward(&grad_out, &q, &k, &v, &state.out.tensor, &state.logsumexp.tensor, 0.0, false, mask, attention_scale(&q));
        let dqkv = tch::Tensor::cat(&[merge_heads(&dq), merge_heads(&dk), merge_heads(&dv)], 2);
        register_affine_grads(grads, ops.parents.map(|p| p.map(|node| node.id)), &state.projection, &dqkv);
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
        let mut out: Vec<Option<TchTensor>> = Vec::with_capacity(wanted.len());
        for &w in wanted {
            let grad = if w { grads.next() } else { None };
            out.push(grad.map(|g| {
                // libtorch hands one tensor to several inputs where the gradients are equal (both
                // summands of x + residual get the same one). Two storage records over one buffer
                // would let Burn update either in place (e.g. ⊙ a dropout mask) under the other,
                // so an alias shares the first one's record.
                match out.iter().flatten().find(|earlier| earlier.tensor.data_ptr() == g.data_ptr()) {
                    Some(earlier) => TchTensor::from_existing(g, earlier.storage.clone()),
                    None => TchTensor::new(g),
                }
            }));
        }
        out
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

    fn tch_self_attention(x: FloatTensor<Self>, weight: FloatTensor<Self>, bias: FloatTensor<Self>, mask_bias: FloatTensor<Self>, heads: usize) -> FloatTensor<Self> {
        let mask_bias = mask_bias.into_primitive();
        match (SelfAttentionBackward { heads }).prepare::<C>([x.node(), weight.node(), bias.node()]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let qkv = affine(&x.primitive().tensor, &weight.primitive().tensor, &bias.primitive().tensor);
                let (out, logsumexp) = flash_attention(&qkv, &mask_bias.tensor, heads);
                let output = TchTensor::new(merge_heads(&out));
                let projection = LinearState { x: x.primitive().clone(), weight: weight.primitive().clone() };
                prep.finish(SelfAttentionState { projection, qkv: TchTensor::new(qkv), out: TchTensor::new(out), logsumexp: TchTensor::new(logsumexp), mask_bias }, output)
            }
            OpsKind::UnTracked(prep) => prep.finish(LibTorch::tch_self_attention(x.into_primitive(), weight.into_primitive(), bias.into_primitive(), mask_bias, heads)),
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

    /// x + residual hands one gradient tensor to both summands. Here x's gradient is then updated
    /// by Burn (x = u ⊙ constant, whose backward may multiply in place): the residual's gradient
    /// must not change with it (it did when both had their own storage record).
    #[test]
    fn tch_residual_layer_norm_gradients_do_not_alias() {
        let device = libtorch().autodiff();
        let eps = 1e-12;
        let factors = values([2, 5, 32], 20, 1.0, &device).greater_elem(0.0).float() * 2.0;
        let weights = values([2, 5, 32], 21, 1.0, &device);
        let run = |fused: bool| {
            let norm = norm(&device);
            let (u, r) = (values([2, 5, 32], 22, 2.0, &device).require_grad(), values([2, 5, 32], 23, 2.0, &device).require_grad());
            let x = u.clone() * factors.clone();
            let y = if fused { crate::fused::residual_layer_norm(&norm, eps, x, r.clone(), None) } else { composed_residual_layer_norm(&norm, x, r.clone(), None) };
            let grads = (y * weights.clone()).sum().backward();
            (u.grad(&grads).expect("du"), r.grad(&grads).expect("dr"))
        };
        let ((du, dr), (want_du, want_dr)) = (run(true), run(false));
        let diffs = [max_diff_n(du, want_du), max_diff_n(dr, want_dr)];
        assert!(diffs.iter().all(|&d| d < 1e-5), "du, dr differ by {diffs:?}");
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

    /// The fused projections + flash attention against Burn's composed ops (three Linear layers,
    /// Q·Kᵀ, the composed softmax, ·V) on the same device, with padded keys: the context and the
    /// gradients of x and of every weight and bias, with and without autodiff.
    #[test]
    fn tch_self_attention_matches_the_composed_ops() {
        let (batch, seq, d, heads) = (2, 6, 32, 4);
        let composed = |layers: &[Linear; 3], x: Tensor<3>, mask_bias: Tensor<4>| {
            let split = |t: Tensor<3>| t.reshape([batch, seq, heads, d / heads]).swap_dims(1, 2);
            let [q, k, v] = [0, 1, 2].map(|i| split(layers[i].forward(x.clone())));
            let probs = composed_attention_probs(q.matmul(k.swap_dims(2, 3)), mask_bias, ((d / heads) as f32).sqrt(), None);
            probs.matmul(v).swap_dims(1, 2).reshape([batch, seq, d])
        };
        let layers_on = |device: &Device| {
            [0, 1, 2].map(|i| {
                let mut layer = burn::nn::LinearConfig::new(d, d).init(device);
                layer.weight = Param::from_tensor(values([d, d], 30 + i, 0.4, device));
                layer.bias = Some(Param::from_tensor(values([d], 40 + i, 0.3, device)));
                layer
            })
        };
        let device = libtorch().autodiff();
        let layers = layers_on(&device);
        let x = values([batch, seq, d], 50, 1.0, &device);
        let weights = values([batch, seq, d], 51, 1.0, &device);
        let run = |fused: bool| {
            let x = x.clone().require_grad();
            let y = if fused {
                crate::fused::self_attention([&layers[0], &layers[1], &layers[2]], &x, &mask_bias(&device), heads).expect("the tch CPU path")
            } else {
                composed(&layers, x.clone(), mask_bias(&device))
            };
            let grads = (y.clone() * weights.clone()).sum().backward();
            let mut out = vec![max_flat(y), max_flat(x.grad(&grads).expect("dx"))];
            for layer in &layers {
                out.push(max_flat(layer.weight.val().grad(&grads).expect("dW")));
                out.push(max_flat(layer.bias.as_ref().expect("a bias").val().grad(&grads).expect("db")));
            }
            out
        };
        let (got, want) = (run(true), run(false));
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            let diff = g.iter().zip(w).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
            assert!(diff < 2e-5, "output {i} (y, dx, then dW, db per projection) differs by {diff}");
        }
        // the padded keys get no weight: changing x at the padded positions of batch 1 leaves
        // every row of batch 1 as it was
        let inference = libtorch();
        let layers = layers_on(&inference);
        let y = |x: Tensor<3>| max_flat(crate::fused::self_attention([&layers[0], &layers[1], &layers[2]], &x, &mask_bias(&inference), heads).expect("tch CPU"));
        let x = values([batch, seq, d], 52, 1.0, &inference);
        let moved = x.clone().slice_assign([1..2, 4..6, 0..d], values([1, 2, d], 53, 5.0, &inference));
        let (a, b) = (y(x.clone()), y(moved));
        let batch1 = seq * d..2 * seq * d;
        assert!(a[batch1.clone()].chunks(d).take(4).zip(b[batch1].chunks(d)).all(|(r, s)| r == s), "padded keys leak into the real rows");
        let d_inf = a.iter().zip(&max_flat(composed(&layers, x, mask_bias(&inference)))).map(|(p, q)| (p - q).abs()).fold(0.0, f32::max);
        assert!(d_inf < 2e-5, "inference differs by {d_inf}");
    }

    fn max_flat<const D: usize>(t: Tensor<D>) -> Vec<f32> {
        t.into_data().try_to_vec().expect("f32")
    }
}
