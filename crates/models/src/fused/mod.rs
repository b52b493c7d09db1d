//! Fused kernels for the BERT encoder on the flex (CPU) backend, as a Burn backend extension with
//! hand-written backward passes:
//! - attention probabilities: softmax(scores / √d + mask_bias) along the keys, then dropout, in one
//!   pass (Burn's autodiff records the softmax as five ops, each with its own backward, over
//!   [batch, heads, seq, seq] tensors);
//! - GELU (exact erf) with a vectorizable erf (flex calls libm's scalar `erff` per element);
//! - LayerNorm, whose forward and backward burn-autodiff decomposes into ~9 ops.
//!
//! Only f32 tensors on a flex device (with or without autodiff) take the fused path; f32 tensors
//! on a tch device take libtorch's own kernels for the same ops, and the Linear layers as one
//! `addmm` (`tch.rs`); every other device or dtype runs the composed Burn ops it always
//! ran (`composed_*` below, also what the parity tests compare against). The fused ops compute
//! the same formulas in f32, so results differ from the composed ops by rounding only.

mod kernels;
#[cfg(feature = "tch")]
mod tch;

use crate::dropout::DropoutMask;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Backend, Dispatch, Flex, backend_extension};
use burn::nn::{LayerNorm, Linear};
use burn::tensor::activation::softmax;
use burn::tensor::{Shape, Tensor, TensorData};

#[backend_extension(Flex, Autodiff)]
pub trait FusedOps: Backend {
    /// softmax(scores / divisor + mask_bias) over the last dim, then ⊙ the dropout mask.
    /// scores: [batch, heads, seq, keys]; mask_bias: [batch, 1, 1, keys], a constant (it gets no
    /// gradient).
    fn attention_probs(scores: FloatTensor<Self>, mask_bias: FloatTensor<Self>, divisor: f32, dropout: Option<DropoutMask>) -> FloatTensor<Self>;
    /// x·Φ(x), Φ the standard normal CDF (erf form).
    fn gelu_erf(x: FloatTensor<Self>) -> FloatTensor<Self>;
    /// LayerNorm over the last dim with scale and bias, both [d].
    fn layer_norm_affine(x: FloatTensor<Self>, gamma: FloatTensor<Self>, beta: FloatTensor<Self>, epsilon: f64) -> FloatTensor<Self>;
    /// LayerNorm(dropout(x) + residual), the end of a post-LN transformer sub-block.
    fn residual_layer_norm(x: FloatTensor<Self>, residual: FloatTensor<Self>, gamma: FloatTensor<Self>, beta: FloatTensor<Self>, epsilon: f64, dropout: Option<DropoutMask>) -> FloatTensor<Self>;
}

/// True when `t` takes the fused path: f32 on a flex device, with or without autodiff.
fn fusable<const D: usize>(t: &Tensor<D>) -> bool {
    rmtrain_blas::is_f32_on_flex(t)
}

/// softmax(scores / divisor + mask_bias, keys) ⊙ dropout mask, fused on flex.
/// scores: [batch, heads, seq, keys]; mask_bias: [batch, 1, 1, keys] -> [batch, heads, seq, keys]
pub fn attention_probs(scores: Tensor<4>, mask_bias: Tensor<4>, divisor: f32, dropout: Option<DropoutMask>) -> Tensor<4> {
    #[cfg(feature = "tch")]
    if on_libtorch(&scores) {
        return tch::attention_probs(scores, mask_bias, divisor, dropout);
    }
    if !fusable(&scores) {
        return composed_attention_probs(scores, mask_bias, divisor, dropout);
    }
    Tensor::from_dispatch(<Dispatch as FusedOps>::attention_probs(scores.into_dispatch(), mask_bias.into_dispatch(), divisor, dropout))
}

pub(crate) fn composed_attention_probs(scores: Tensor<4>, mask_bias: Tensor<4>, divisor: f32, dropout: Option<DropoutMask>) -> Tensor<4> {
    let probs = softmax(scores.div_scalar(divisor) + mask_bias, 3);
    match dropout {
        Some(mask) => mask.apply(probs),
        None => probs,
    }
}

/// Exact (erf) GELU, as HF's "gelu"; fused on flex.
pub fn gelu<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    if !fusable(&x) {
        return burn::tensor::activation::gelu(x);
    }
    Tensor::from_dispatch(<Dispatch as FusedOps>::gelu_erf(x.into_dispatch()))
}

/// True when `t` takes the libtorch path: f32 on a tch device, with or without autodiff.
#[cfg(feature = "tch")]
fn on_libtorch<const D: usize>(t: &Tensor<D>) -> bool {
    t.dtype() == burn::tensor::DType::F32 && matches!(t.device().inner().as_dispatch(), burn::backend::DispatchDevice::LibTorch(_))
}

/// True when `t` is f32 on libtorch's CPU device (where its flash-attention CPU kernel runs).
#[cfg(feature = "tch")]
#[allow(deprecated)] // Burn marks its LibTorch backend deprecated; it is the tch device.
fn on_libtorch_cpu<const D: usize>(t: &Tensor<D>) -> bool {
    t.dtype() == burn::tensor::DType::F32 && matches!(t.device().inner().as_dispatch(), burn::backend::DispatchDevice::LibTorch(burn::backend::libtorch::LibTorchDevice::Cpu))
}

/// BERT's attention context without attention dropout as one op on tch's CPU device: the Q/K/V
/// projections as one `addmm`, then libtorch's flash-attention CPU kernel forward and backward
/// (what PyTorch's `scaled_dot_product_attention` runs there). x: [batch, seq, d]; mask_bias:
/// [batch, 1, 1, seq]; returns [batch, seq, d], or None on other devices and for projections
/// without a bias, where the caller runs the composed ops.
pub fn self_attention(projections: [&Linear; 3], x: &Tensor<3>, mask_bias: &Tensor<4>, heads: usize) -> Option<Tensor<3>> {
    #[cfg(feature = "tch")]
    if on_libtorch_cpu(x)
        && let [Some(bq), Some(bk), Some(bv)] = projections.map(|p| p.bias.as_ref())
    {
        let [query, key, value] = projections;
        return Some(tch::self_attention(query, key, value, [bq, bk, bv], x.clone(), mask_bias.clone(), heads));
    }
    let _ = (projections, x, mask_bias, heads);
    None
}

/// `layer.forward(x)`: one `addmm` with its own backward on tch (for a layer with a bias),
/// OpenBLAS on flex when loaded (`rmtrain_blas::linear`), else Burn's op.
pub fn linear<const D: usize>(layer: &Linear, x: Tensor<D>) -> Tensor<D> {
    #[cfg(feature = "tch")]
    if let Some(bias) = layer.bias.as_ref().filter(|_| on_libtorch(&x)) {
        return tch::linear(layer, bias, x);
    }
    rmtrain_blas::linear(layer, x)
}

/// `norm.forward(x)`, fused on flex and tch (for a norm with a bias). `epsilon` must be the
/// norm's own (Burn keeps that field private).
pub fn layer_norm<const D: usize>(norm: &LayerNorm, epsilon: f64, x: Tensor<D>) -> Tensor<D> {
    #[cfg(feature = "tch")]
    if let Some(beta) = norm.beta.as_ref().filter(|_| on_libtorch(&x)) {
        return tch::layer_norm(norm, beta, epsilon, x);
    }
    let Some(beta) = norm.beta.as_ref().filter(|_| fusable(&x)) else {
        return norm.forward(x);
    };
    let (gamma, beta) = (norm.gamma.val().into_dispatch(), beta.val().into_dispatch());
    Tensor::from_dispatch(<Dispatch as FusedOps>::layer_norm_affine(x.into_dispatch(), gamma, beta, epsilon))
}

/// `norm.forward(dropout(x) + residual)`, fused on flex and tch (for a norm with a bias);
/// `epsilon` as in [`layer_norm`].
pub fn residual_layer_norm<const D: usize>(norm: &LayerNorm, epsilon: f64, x: Tensor<D>, residual: Tensor<D>, dropout: Option<DropoutMask>) -> Tensor<D> {
    #[cfg(feature = "tch")]
    if let Some(beta) = norm.beta.as_ref().filter(|_| on_libtorch(&x)) {
        return tch::residual_layer_norm(norm, beta, epsilon, x, residual, dropout);
    }
    let Some(beta) = norm.beta.as_ref().filter(|_| fusable(&x)) else {
        return composed_residual_layer_norm(norm, x, residual, dropout);
    };
    let (gamma, beta) = (norm.gamma.val().into_dispatch(), beta.val().into_dispatch());
    Tensor::from_dispatch(<Dispatch as FusedOps>::residual_layer_norm(x.into_dispatch(), residual.into_dispatch(), gamma, beta, epsilon, dropout))
}

pub(crate) fn composed_residual_layer_norm<const D: usize>(norm: &LayerNorm, x: Tensor<D>, residual: Tensor<D>, dropout: Option<DropoutMask>) -> Tensor<D> {
    let x = match dropout {
        Some(mask) => mask.apply(x),
        None => x,
    };
    norm.forward(x + residual)
}

fn contiguous(t: FlexTensor) -> FlexTensor {
    if t.is_contiguous() { t } else { t.to_contiguous() }
}

fn values(t: &FlexTensor) -> &[f32] {
    t.as_slice::<f32>().expect("a contiguous f32 tensor (the fused ops only take f32)")
}

fn shape(t: &FlexTensor) -> Shape {
    t.layout().shape().clone()
}

fn tensor(values: Vec<f32>, shape: Shape) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(values, shape))
}

/// `t` with a storage of exactly its elements in order, so a kernel can overwrite it in place
/// through `storage_mut` (which copies first when the storage is shared).
fn owned(t: FlexTensor) -> FlexTensor {
    let t = contiguous(t);
    if values(&t).len() == t.storage::<f32>().len() { t } else { tensor(values(&t).to_vec(), shape(&t)) }
}

/// The attention probabilities before dropout (computed in the scores' buffer when nothing else
/// holds it), and after dropout when it is on.
fn attention_forward(scores: FlexTensor, mask_bias: &FlexTensor, divisor: f32, dropout: Option<DropoutMask>) -> (FlexTensor, Option<FlexTensor>) {
    let dims = shape(&scores);
    let [batch, heads, seq, keys] = dims.dims::<4>();
    let mask_bias = contiguous(mask_bias.clone());
    let mask_bias = values(&mask_bias);
    assert_eq!(mask_bias.len(), batch * keys, "mask_bias must be [batch, 1, 1, keys]");
    let mut probs = owned(scores);
    let p = probs.storage_mut::<f32>();
    let mut out = dropout.map(|_| vec![0.0f32; p.len()]);
    let per_seq = heads * seq * keys;
    for b in 0..batch {
        let rows = kernels::AttentionRows { bias: &mask_bias[b * keys..(b + 1) * keys], divisor, first_row: b * heads * seq, dropout };
        let out = out.as_mut().map(|o| &mut o[b * per_seq..(b + 1) * per_seq]);
        kernels::attention_probs(&rows, &mut p[b * per_seq..(b + 1) * per_seq], out);
    }
    (probs, out.map(|o| tensor(o, dims)))
}

/// dropout(x) + residual, in x's buffer when nothing else holds it.
fn add_dropped(x: FlexTensor, residual: &FlexTensor, dropout: Option<DropoutMask>) -> FlexTensor {
    let mut z = owned(x);
    let residual = contiguous(residual.clone());
    assert_eq!(shape(&z), shape(&residual), "x and residual must have one shape");
    kernels::add_dropped(z.storage_mut(), values(&residual), dropout);
    z
}

/// LayerNorm forward: y, x̂ and 1/σ per row.
fn layer_norm_forward(x: &FlexTensor, gamma: &FlexTensor, beta: &FlexTensor, epsilon: f64) -> (FlexTensor, FlexTensor, Vec<f32>) {
    let dims = shape(x);
    let (x, gamma, beta) = (contiguous(x.clone()), contiguous(gamma.clone()), contiguous(beta.clone()));
    let x = values(&x);
    let d = values(&gamma).len();
    let mut y = vec![0.0f32; x.len()];
    let mut xhat = vec![0.0f32; x.len()];
    let mut rstd = vec![0.0f32; x.len() / d];
    kernels::layer_norm(x, values(&gamma), values(&beta), epsilon as f32, &mut y, &mut xhat, &mut rstd);
    (tensor(y, dims.clone()), tensor(xhat, dims), rstd)
}

impl FusedOps for Flex {
    fn attention_probs(scores: FlexTensor, mask_bias: FlexTensor, divisor: f32, dropout: Option<DropoutMask>) -> FlexTensor {
        let (probs, out) = attention_forward(scores, &mask_bias, divisor, dropout);
        out.unwrap_or(probs)
    }

    fn gelu_erf(x: FlexTensor) -> FlexTensor {
        let mut y = owned(x);
        kernels::gelu(y.storage_mut());
        y
    }

    fn layer_norm_affine(x: FlexTensor, gamma: FlexTensor, beta: FlexTensor, epsilon: f64) -> FlexTensor {
        // Flex's own fused inference kernel.
        burn::backend::flex::ops::activation::layer_norm(x, gamma, Some(beta), epsilon)
    }

    fn residual_layer_norm(x: FlexTensor, residual: FlexTensor, gamma: FlexTensor, beta: FlexTensor, epsilon: f64, dropout: Option<DropoutMask>) -> FlexTensor {
        Self::layer_norm_affine(add_dropped(x, &residual, dropout), gamma, beta, epsilon)
    }
}

#[derive(Debug)]
struct AttentionProbsBackward {
    divisor: f32,
    dropout: Option<DropoutMask>,
}

impl Backward<Flex, 1> for AttentionProbsBackward {
    /// The probabilities before dropout.
    type State = FlexTensor;

    fn backward(self, ops: Ops<FlexTensor, 1>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        let grad = grads.consume::<Flex>(&ops.node);
        let [Some(scores)] = ops.parents else { return };
        let dims = shape(&grad);
        let keys = dims[dims.num_dims() - 1];
        let mut grad = owned(grad);
        let probs = contiguous(ops.state);
        kernels::attention_probs_backward(values(&probs), grad.storage_mut(), keys, self.divisor, self.dropout);
        grads.register::<Flex>(scores.id, grad);
    }
}

#[derive(Debug)]
struct GeluBackward;

impl Backward<Flex, 1> for GeluBackward {
    /// The input x.
    type State = FlexTensor;

    fn backward(self, ops: Ops<FlexTensor, 1>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        let grad = grads.consume::<Flex>(&ops.node);
        let [Some(x)] = ops.parents else { return };
        let (mut grad, input) = (owned(grad), contiguous(ops.state));
        kernels::gelu_backward(values(&input), grad.storage_mut());
        grads.register::<Flex>(x.id, grad);
    }
}

#[derive(Debug)]
struct LayerNormBackward;

/// x̂, 1/σ per row, γ.
#[derive(Clone, Debug)]
struct LayerNormState {
    xhat: FlexTensor,
    rstd: Vec<f32>,
    gamma: FlexTensor,
}

/// LayerNorm backward: dz (in the incoming gradient's buffer), dγ, dβ.
fn layer_norm_backward(grad: FlexTensor, state: LayerNormState) -> (FlexTensor, FlexTensor, FlexTensor) {
    let mut grad = owned(grad);
    let gamma = contiguous(state.gamma);
    let d = values(&gamma).len();
    let (mut dgamma, mut dbeta) = (vec![0.0f32; d], vec![0.0f32; d]);
    let xhat = contiguous(state.xhat);
    kernels::layer_norm_backward(grad.storage_mut(), values(&xhat), &state.rstd, values(&gamma), &mut dgamma, &mut dbeta);
    (grad, tensor(dgamma, Shape::new([d])), tensor(dbeta, Shape::new([d])))
}

impl Backward<Flex, 3> for LayerNormBackward {
    type State = LayerNormState;

    fn backward(self, ops: Ops<LayerNormState, 3>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        let grad = grads.consume::<Flex>(&ops.node);
        let (dx, dgamma, dbeta) = layer_norm_backward(grad, ops.state);
        for (parent, g) in ops.parents.into_iter().zip([dx, dgamma, dbeta]) {
            if let Some(parent) = parent {
                grads.register::<Flex>(parent.id, g);
            }
        }
    }
}

#[derive(Debug)]
struct ResidualLayerNormBackward {
    dropout: Option<DropoutMask>,
}

impl Backward<Flex, 4> for ResidualLayerNormBackward {
    type State = LayerNormState;

    fn backward(self, ops: Ops<LayerNormState, 4>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        let grad = grads.consume::<Flex>(&ops.node);
        let (dz, dgamma, dbeta) = layer_norm_backward(grad, ops.state);
        // z = dropout(x) + residual: dresidual = dz, dx = dz ⊙ mask (a copy: dz is shared then).
        let mut dx = dz.clone();
        if let Some(mask) = self.dropout {
            kernels::mask_gradient(dx.storage_mut(), mask);
        }
        for (parent, g) in ops.parents.into_iter().zip([dx, dz, dgamma, dbeta]) {
            if let Some(parent) = parent {
                grads.register::<Flex>(parent.id, g);
            }
        }
    }
}

impl<C: CheckpointStrategy> FusedOps for Autodiff<Flex, C> {
    fn attention_probs(scores: FloatTensor<Self>, mask_bias: FloatTensor<Self>, divisor: f32, dropout: Option<DropoutMask>) -> FloatTensor<Self> {
        let mask_bias = mask_bias.into_primitive();
        match (AttentionProbsBackward { divisor, dropout }).prepare::<C>([scores.node()]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let (probs, out) = attention_forward(scores.into_primitive(), &mask_bias, divisor, dropout);
                let output = out.unwrap_or_else(|| probs.clone());
                prep.finish(probs, output)
            }
            OpsKind::UnTracked(prep) => prep.finish(Flex::attention_probs(scores.into_primitive(), mask_bias, divisor, dropout)),
        }
    }

    fn gelu_erf(x: FloatTensor<Self>) -> FloatTensor<Self> {
        match GeluBackward.prepare::<C>([x.node()]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let input = x.primitive().clone();
                prep.finish(input.clone(), Flex::gelu_erf(input))
            }
            OpsKind::UnTracked(prep) => prep.finish(Flex::gelu_erf(x.into_primitive())),
        }
    }

    fn layer_norm_affine(x: FloatTensor<Self>, gamma: FloatTensor<Self>, beta: FloatTensor<Self>, epsilon: f64) -> FloatTensor<Self> {
        match LayerNormBackward.prepare::<C>([x.node(), gamma.node(), beta.node()]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let (y, xhat, rstd) = layer_norm_forward(x.primitive(), gamma.primitive(), beta.primitive(), epsilon);
                prep.finish(LayerNormState { xhat, rstd, gamma: gamma.primitive().clone() }, y)
            }
            OpsKind::UnTracked(prep) => {
                prep.finish(Flex::layer_norm_affine(x.into_primitive(), gamma.into_primitive(), beta.into_primitive(), epsilon))
            }
        }
    }

    fn residual_layer_norm(x: FloatTensor<Self>, residual: FloatTensor<Self>, gamma: FloatTensor<Self>, beta: FloatTensor<Self>, epsilon: f64, dropout: Option<DropoutMask>) -> FloatTensor<Self> {
        let nodes = [x.node(), residual.node(), gamma.node(), beta.node()];
        match (ResidualLayerNormBackward { dropout }).prepare::<C>(nodes).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let z = add_dropped(x.into_primitive(), residual.primitive(), dropout);
                let (y, xhat, rstd) = layer_norm_forward(&z, gamma.primitive(), beta.primitive(), epsilon);
                prep.finish(LayerNormState { xhat, rstd, gamma: gamma.primitive().clone() }, y)
            }
            OpsKind::UnTracked(prep) => prep.finish(Flex::residual_layer_norm(
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
    use burn::module::Param;
    use burn::nn::LayerNormConfig;
    use burn::tensor::Device;
    use rmtrain_core::splitmix64;

    /// Deterministic values uniform in [offset − scale, offset + scale].
    fn values<const D: usize>(shape: [usize; D], seed: u64, offset: f32, scale: f32, device: &Device) -> Tensor<D> {
        let n: usize = shape.iter().product();
        let v: Vec<f32> = (0..n as u64).map(|i| offset + scale * ((splitmix64(seed ^ splitmix64(i)) >> 40) as f32 / (1u64 << 23) as f32 - 1.0)).collect();
        Tensor::from_data(TensorData::new(v, shape), device)
    }

    /// Asserts |a − b| ≤ tol·max(1, |b|) elementwise; returns the largest |a − b|.
    fn assert_close<const D: usize>(what: &str, a: Tensor<D>, b: Tensor<D>, tol: f32) -> f32 {
        assert_eq!(a.dims(), b.dims(), "{what}: shapes");
        let a: Vec<f32> = a.into_data().try_to_vec().expect("f32");
        let b: Vec<f32> = b.into_data().try_to_vec().expect("f32");
        let mut worst = 0.0f32;
        for (i, (x, y)) in a.iter().zip(&b).enumerate() {
            let d = (x - y).abs();
            assert!(d <= tol * y.abs().max(1.0), "{what}[{i}]: fused {x} vs composed {y}");
            worst = worst.max(d);
        }
        println!("{what}: max |fused − composed| = {worst:e}");
        worst
    }

    fn mask_bias(device: &Device) -> Tensor<4> {
        // batch 0: no padding; batch 1: last 2 of 6 keys padded; batch 2: every key padded.
        let keep = [[true; 6], [true, true, true, true, false, false], [false; 6]];
        let v: Vec<f32> = keep.iter().flatten().map(|&k| if k { 0.0 } else { f32::MIN }).collect();
        Tensor::from_data(TensorData::new(v, [3, 1, 1, 6]), device)
    }

    #[test]
    fn attention_probs_match_softmax_and_dropout_values_and_gradients() {
        let device = Device::flex().autodiff();
        let divisor = 8f32.sqrt();
        for p in [0.0, 0.3] {
            let mask = DropoutRng::new(11).next_mask(p);
            let scores = values([3, 2, 5, 6], 1, 0.0, 6.0, &device);
            let weights = values([3, 2, 5, 6], 2, 0.0, 1.0, &device);
            let run = |fused: bool| {
                let s = scores.clone().require_grad();
                let out = if fused {
                    attention_probs(s.clone(), mask_bias(&device), divisor, mask)
                } else {
                    composed_attention_probs(s.clone(), mask_bias(&device), divisor, mask)
                };
                let grads = (out.clone() * weights.clone()).sum().backward();
                (out, s.grad(&grads).expect("scores get a gradient"))
            };
            let ((out, grad), (want_out, want_grad)) = (run(true), run(false));
            assert_close(&format!("attention probs, p = {p}"), out.clone(), want_out, 1e-5);
            assert_close(&format!("d scores, p = {p}"), grad, want_grad, 1e-5);
            // a fully padded row attends uniformly, a padded key gets exactly 0
            let out: Vec<f32> = out.into_data().try_to_vec().expect("f32");
            if p == 0.0 {
                assert!(out[2 * 60..].iter().all(|&v| (v - 1.0 / 6.0).abs() < 1e-7));
                assert!(out[60..120].chunks(6).all(|row| row[4] == 0.0 && row[5] == 0.0));
            } else {
                assert!(out.iter().filter(|&&v| v == 0.0).count() > 20, "dropout drops");
            }
        }
        // the inference path (no autodiff) too
        let flex = Device::flex();
        let scores = values([3, 2, 5, 6], 3, 0.0, 6.0, &flex);
        let mask = DropoutRng::new(12).next_mask(0.2);
        let fused = attention_probs(scores.clone(), mask_bias(&flex), divisor, mask);
        assert_close("attention probs (inference)", fused, composed_attention_probs(scores, mask_bias(&flex), divisor, mask), 1e-5);
    }

    #[test]
    fn gelu_matches_burns_values_and_gradients() {
        let device = Device::flex().autodiff();
        let x = values([4, 300], 4, 0.0, 7.0, &device);
        let weights = values([4, 300], 5, 0.0, 1.0, &device);
        let run = |fused: bool| {
            let x = x.clone().require_grad();
            let y = if fused { gelu(x.clone()) } else { burn::tensor::activation::gelu(x.clone()) };
            let grads = (y.clone() * weights.clone()).sum().backward();
            (y, x.grad(&grads).expect("x gets a gradient"))
        };
        let ((y, grad), (want_y, want_grad)) = (run(true), run(false));
        assert_close("gelu", y, want_y, 1e-5);
        assert_close("d gelu", grad, want_grad, 1e-5);
    }

    #[test]
    fn layer_norm_matches_burns_values_and_gradients() {
        let device = Device::flex().autodiff();
        let eps = 1e-12;
        let x = values([2, 5, 32], 6, 3.0, 2.0, &device);
        let weights = values([2, 5, 32], 7, 0.0, 1.0, &device);
        let run = |fused: bool| {
            let mut norm = LayerNormConfig::new(32).with_epsilon(eps).init(&device);
            norm.gamma = Param::from_tensor(values([32], 8, 1.0, 0.5, &device));
            norm.beta = Some(Param::from_tensor(values([32], 9, 0.0, 0.5, &device)));
            let x = x.clone().require_grad();
            let y = if fused { layer_norm(&norm, eps, x.clone()) } else { norm.forward(x.clone()) };
            let grads = (y.clone() * weights.clone()).sum().backward();
            let beta = norm.beta.as_ref().expect("a bias").val();
            (y, x.grad(&grads).expect("dx"), norm.gamma.val().grad(&grads).expect("dγ"), beta.grad(&grads).expect("dβ"))
        };
        let ((y, dx, dg, db), (want_y, want_dx, want_dg, want_db)) = (run(true), run(false));
        assert_close("layer norm", y, want_y, 1e-5);
        assert_close("d layer norm / dx", dx, want_dx, 1e-5);
        assert_close("d layer norm / dγ", dg, want_dg, 1e-5);
        assert_close("d layer norm / dβ", db, want_db, 1e-5);
    }

    #[test]
    fn residual_layer_norm_matches_burns_values_and_gradients() {
        let device = Device::flex().autodiff();
        let eps = 1e-12;
        let x = values([2, 5, 32], 10, 0.5, 2.0, &device);
        let residual = values([2, 5, 32], 11, 3.0, 2.0, &device);
        let weights = values([2, 5, 32], 12, 0.0, 1.0, &device);
        for p in [0.0, 0.3] {
            let mask = DropoutRng::new(13).next_mask(p);
            let run = |fused: bool| {
                let mut norm = LayerNormConfig::new(32).with_epsilon(eps).init(&device);
                norm.gamma = Param::from_tensor(values([32], 8, 1.0, 0.5, &device));
                norm.beta = Some(Param::from_tensor(values([32], 9, 0.0, 0.5, &device)));
                let (x, r) = (x.clone().require_grad(), residual.clone().require_grad());
                let y = if fused {
                    residual_layer_norm(&norm, eps, x.clone(), r.clone(), mask)
                } else {
                    composed_residual_layer_norm(&norm, x.clone(), r.clone(), mask)
                };
                let grads = (y.clone() * weights.clone()).sum().backward();
                let beta = norm.beta.as_ref().expect("a bias").val();
                let d = |t: Tensor<1>| t.grad(&grads).expect("a gradient");
                (y, x.grad(&grads).expect("dx"), r.grad(&grads).expect("dr"), d(norm.gamma.val()), d(beta))
            };
            let ((y, dx, dr, dg, db), (want_y, want_dx, want_dr, want_dg, want_db)) = (run(true), run(false));
            assert_close(&format!("residual layer norm, p = {p}"), y, want_y, 1e-5);
            assert_close(&format!("d residual layer norm / dx, p = {p}"), dx, want_dx, 1e-5);
            assert_close(&format!("d residual layer norm / dresidual, p = {p}"), dr, want_dr, 1e-5);
            assert_close(&format!("d residual layer norm / dγ, p = {p}"), dg, want_dg, 1e-5);
            assert_close(&format!("d residual layer norm / dβ, p = {p}"), db, want_db, 1e-5);
        }
        // the inference path
        let flex = Device::flex();
        let mut norm = LayerNormConfig::new(32).with_epsilon(eps).init(&flex);
        norm.beta = Some(Param::from_tensor(values([32], 9, 0.0, 0.5, &flex)));
        let (x, r) = (values([2, 5, 32], 10, 0.5, 2.0, &flex), values([2, 5, 32], 11, 3.0, 2.0, &flex));
        let mask = DropoutRng::new(14).next_mask(0.2);
        let fused = residual_layer_norm(&norm, eps, x.clone(), r.clone(), mask);
        assert_close("residual layer norm (inference)", fused, composed_residual_layer_norm(&norm, x, r, mask), 1e-5);
    }
}
