//! `Linear::forward` on OpenBLAS, as a Burn backend extension with a hand-written backward.
//!
//! y = x·W + b with x [..., d_in] read as one [rows, d_in] matrix, W [d_in, d_out] (Burn's layout)
//! and b [d_out]; the forward writes b into every row of y and lets sgemm add x·W (beta = 1).
//! The backward (autodiff) computes only what a tracked parent needs:
//! - dX = dY·Wᵀ (if x is tracked),
//! - dW = Xᵀ·dY (if W is tracked; a linear probe's frozen backbone skips it),
//! - db = Σ_rows dY (if b is tracked), summed in f64.
//!
//! Like Burn's own autodiff Linear (burn-autodiff-0.22.1/src/ops/module.rs), x and W are
//! checkpointed only when the other's gradient needs them. A weight held as a transposed view
//! (Burn's `LinearLayout::Col`) goes to sgemm as a transposed operand, without a copy.

use crate::openblas::{self, Matrix};
use burn::backend::autodiff::NodeId;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::ops::ModuleOps;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Backend, Dispatch, Flex, backend_extension};
use burn::nn::Linear;
use burn::tensor::{DType, Shape, Tensor, TensorData};

// Two methods rather than one with `Option<FloatTensor<Self>>`: the 0.22.1 macro passes an
// optional tensor through undispatched (a type error in the generated code).
#[backend_extension(Flex, Autodiff)]
pub trait BlasLinear: Backend {
    /// x [..., d_in] · weight [d_in, d_out] + bias [d_out] -> [..., d_out]
    fn blas_linear(x: FloatTensor<Self>, weight: FloatTensor<Self>, bias: FloatTensor<Self>) -> FloatTensor<Self>;
    /// x [..., d_in] · weight [d_in, d_out] -> [..., d_out]
    fn blas_linear_no_bias(x: FloatTensor<Self>, weight: FloatTensor<Self>) -> FloatTensor<Self>;
}

/// `layer.forward(x)`, with the products in OpenBLAS for f32 tensors on a flex device (with or
/// without autodiff) when the library is loaded; `layer.forward(x)` itself everywhere else.
/// x: [..., d_in] -> [..., d_out]
pub fn linear<const D: usize>(layer: &Linear, x: Tensor<D>) -> Tensor<D> {
    let weight = layer.weight.val();
    let bias = layer.bias.as_ref().map(|b| b.val());
    let f32_flex = crate::is_f32_on_flex(&x) && weight.dtype() == DType::F32 && bias.as_ref().is_none_or(|b| b.dtype() == DType::F32);
    if !f32_flex || openblas::get().is_none() {
        return layer.forward(x);
    }
    let [d_in, _] = weight.dims();
    assert_eq!(x.dims()[D - 1], d_in, "linear: input [.., {}] for a Linear of d_input {d_in}", x.dims()[D - 1]);
    let (x, weight) = (x.into_dispatch(), weight.into_dispatch());
    Tensor::from_dispatch(match bias {
        Some(bias) => <Dispatch as BlasLinear>::blas_linear(x, weight, bias.into_dispatch()),
        None => <Dispatch as BlasLinear>::blas_linear_no_bias(x, weight),
    })
}

fn shape(t: &FlexTensor) -> Shape {
    t.layout().shape().clone()
}

fn contiguous(t: FlexTensor) -> FlexTensor {
    if t.is_contiguous() { t } else { t.to_contiguous() }
}

fn values(t: &FlexTensor) -> &[f32] {
    t.as_slice::<f32>().expect("a contiguous f32 tensor (`linear` routes only f32 here)")
}

fn tensor(values: Vec<f32>, shape: Shape) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(values, shape))
}

/// `shape` with its last dim replaced by `last`.
fn with_last(shape: &Shape, last: usize) -> Shape {
    let mut dims = shape.to_vec();
    *dims.last_mut().expect("linear needs at least a 1-D input") = last;
    Shape::from(dims)
}

/// The weight [d_in, d_out] as an sgemm operand: dense, or a transposed view of a dense
/// [d_out, d_in] (`LinearLayout::Col`, or what an adapter's transpose left), copied otherwise.
/// Returns the tensor that owns the storage with the operand's shape (W, not its stored form).
fn weight_operand(w: FlexTensor) -> (FlexTensor, usize, usize, bool) {
    let [d_in, d_out] = shape(&w).dims::<2>();
    let layout = w.layout();
    if layout.is_contiguous() {
        return (w, d_in, d_out, false);
    }
    if layout.strides() == [1, d_in as isize] {
        return (w, d_in, d_out, true);
    }
    (w.to_contiguous(), d_in, d_out, false)
}

/// `Matrix` over the weight held by `weight_operand`.
fn weight_matrix(w: &FlexTensor, d_in: usize, d_out: usize, transposed_view: bool) -> Matrix<'_> {
    let start = w.layout().start_offset();
    let storage = &w.storage::<f32>()[start..start + d_in * d_out];
    if transposed_view {
        // stored as [d_out, d_in] row-major: W = (stored)ᵀ
        Matrix::dense(storage, d_out, d_in).t()
    } else {
        Matrix::dense(storage, d_in, d_out)
    }
}

/// y = x·W + b on OpenBLAS.
fn forward(lib: &openblas::OpenBlas, x: FlexTensor, w: FlexTensor, bias: Option<FlexTensor>) -> FlexTensor {
    let x = contiguous(x);
    let (w, d_in, d_out, wt) = weight_operand(w);
    let out_shape = with_last(&shape(&x), d_out);
    let rows = shape(&x).num_elements() / d_in.max(1);
    // y starts as b in every row and sgemm adds x·W to it (beta = 1).
    let (mut y, beta) = match bias {
        Some(b) => (values(&contiguous(b)).repeat(rows), 1.0),
        None => (vec![0.0f32; rows * d_out], 0.0),
    };
    lib.sgemm(Matrix::dense(values(&x), rows, d_in), weight_matrix(&w, d_in, d_out, wt), beta, &mut y);
    tensor(y, out_shape)
}

/// dX = dY·Wᵀ, in x's shape.
fn x_backward(lib: &openblas::OpenBlas, w: FlexTensor, dy: &FlexTensor) -> FlexTensor {
    let (w, d_in, d_out, wt) = weight_operand(w);
    let rows = shape(dy).num_elements() / d_out.max(1);
    let mut dx = vec![0.0f32; rows * d_in];
    lib.sgemm(Matrix::dense(values(dy), rows, d_out), weight_matrix(&w, d_in, d_out, wt).t(), 0.0, &mut dx);
    tensor(dx, with_last(&shape(dy), d_in))
}

/// dW = Xᵀ·dY, [d_in, d_out].
fn weight_backward(lib: &openblas::OpenBlas, x: FlexTensor, dy: &FlexTensor) -> FlexTensor {
    let x = contiguous(x);
    let dims = shape(&x);
    let d_in = dims[dims.num_dims() - 1];
    let d_out = shape(dy)[dims.num_dims() - 1];
    let rows = dims.num_elements() / d_in.max(1);
    let mut dw = vec![0.0f32; d_in * d_out];
    lib.sgemm(Matrix::dense(values(&x), rows, d_in).t(), Matrix::dense(values(dy), rows, d_out), 0.0, &mut dw);
    tensor(dw, Shape::new([d_in, d_out]))
}

/// db = Σ over rows of dY, accumulated in f64 (rows can be thousands).
fn bias_backward(dy: &FlexTensor) -> FlexTensor {
    let dims = shape(dy);
    let d_out = dims[dims.num_dims() - 1];
    let mut sum = vec![0.0f64; d_out];
    for row in values(dy).chunks_exact(d_out.max(1)) {
        sum.iter_mut().zip(row).for_each(|(s, &v)| *s += f64::from(v));
    }
    tensor(sum.into_iter().map(|s| s as f32).collect(), Shape::new([d_out]))
}

/// y = x·W (+ b) on OpenBLAS, or flex's own when the library is not loaded.
fn flex_forward(x: FlexTensor, weight: FlexTensor, bias: Option<FlexTensor>) -> FlexTensor {
    match openblas::get() {
        Some(lib) => forward(lib, x, weight, bias),
        None => <Flex as ModuleOps<Flex>>::linear(x, weight, bias),
    }
}

impl BlasLinear for Flex {
    fn blas_linear(x: FlexTensor, weight: FlexTensor, bias: FlexTensor) -> FlexTensor {
        flex_forward(x, weight, Some(bias))
    }

    fn blas_linear_no_bias(x: FlexTensor, weight: FlexTensor) -> FlexTensor {
        flex_forward(x, weight, None)
    }
}

/// Backward of y = x·W (+ b); parents [x, W] or [x, W, b].
#[derive(Debug)]
struct LinearBackward;

/// The checkpointed x (when W needs a gradient) and W (when x does).
type LinearState = (Option<NodeId>, Option<NodeId>);

impl<const N: usize> Backward<Flex, N> for LinearBackward {
    type State = LinearState;

    fn backward(self, ops: Ops<LinearState, N>, grads: &mut Gradients, checkpointer: &mut Checkpointer) {
        let dy = contiguous(grads.consume::<Flex>(&ops.node));
        let mut parents = ops.parents.into_iter();
        let (x, w, b) = (parents.next().flatten(), parents.next().flatten(), parents.next().flatten());
        let (x_state, w_state) = ops.state;
        let lib = openblas::get();
        if let Some(node) = x {
            let weight = checkpointer.retrieve_node_output::<FlexTensor>(w_state.expect("W is checkpointed when x is tracked"));
            let dx = match lib {
                Some(lib) => x_backward(lib, weight, &dy),
                None => <Flex as ModuleOps<Flex>>::linear_x_backward(weight, dy.clone()),
            };
            grads.register::<Flex>(node.id, dx);
        }
        if let Some(node) = w {
            let input = checkpointer.retrieve_node_output::<FlexTensor>(x_state.expect("x is checkpointed when W is tracked"));
            let dw = match lib {
                Some(lib) => weight_backward(lib, input, &dy),
                None => <Flex as ModuleOps<Flex>>::linear_weight_backward(input, dy.clone()),
            };
            grads.register::<Flex>(node.id, dw);
        }
        if let Some(node) = b {
            grads.register::<Flex>(node.id, bias_backward(&dy));
        }
    }
}

impl<C: CheckpointStrategy> BlasLinear for Autodiff<Flex, C> {
    fn blas_linear(x: FloatTensor<Self>, weight: FloatTensor<Self>, bias: FloatTensor<Self>) -> FloatTensor<Self> {
        let (x_tracked, w_tracked) = (x.is_tracked(), weight.is_tracked());
        match LinearBackward.prepare::<C>([x.node(), weight.node(), bias.node()]).compute_bound().stateful() {
            OpsKind::Tracked(mut prep) => {
                // x is only needed for W's gradient, and W only for x's.
                let state = (w_tracked.then(|| prep.checkpoint(&x)), x_tracked.then(|| prep.checkpoint(&weight)));
                prep.finish(state, flex_forward(x.into_primitive(), weight.into_primitive(), Some(bias.into_primitive())))
            }
            OpsKind::UnTracked(prep) => prep.finish(flex_forward(x.into_primitive(), weight.into_primitive(), Some(bias.into_primitive()))),
        }
    }

    fn blas_linear_no_bias(x: FloatTensor<Self>, weight: FloatTensor<Self>) -> FloatTensor<Self> {
        let (x_tracked, w_tracked) = (x.is_tracked(), weight.is_tracked());
        match LinearBackward.prepare::<C>([x.node(), weight.node()]).compute_bound().stateful() {
            OpsKind::Tracked(mut prep) => {
                let state = (w_tracked.then(|| prep.checkpoint(&x)), x_tracked.then(|| prep.checkpoint(&weight)));
                prep.finish(state, flex_forward(x.into_primitive(), weight.into_primitive(), None))
            }
            OpsKind::UnTracked(prep) => prep.finish(flex_forward(x.into_primitive(), weight.into_primitive(), None)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::openblas::tests::calls;
    use crate::testing::{assert_close, blas_loaded, values};
    use burn::module::Param;
    use burn::tensor::Device;

    /// A Linear d_in → d_out with deterministic weights; `transposed` stores W as a view of a dense
    /// [d_out, d_in] (what `LinearLayout::Col` and HF loading give); `frozen` W requires no grad.
    fn layer(d_in: usize, d_out: usize, bias: bool, transposed: bool, frozen: bool, device: &Device) -> Linear {
        let weight = if transposed { values([d_out, d_in], 1, 0.5, device).transpose() } else { values([d_in, d_out], 1, 0.5, device) };
        Linear {
            weight: Param::from_tensor(weight).set_require_grad(!frozen),
            bias: bias.then(|| Param::from_tensor(values([d_out], 2, 0.5, device))),
        }
    }

    struct Outputs<const D: usize> {
        y: Tensor<D>,
        dx: Tensor<D>,
        dw: Option<Tensor<2>>,
        db: Option<Tensor<1>>,
    }

    fn run<const D: usize>(layer: &Linear, x: &Tensor<D>, blas: bool) -> Outputs<D> {
        let x = x.clone().require_grad();
        let y = if blas { linear(layer, x.clone()) } else { layer.forward(x.clone()) };
        // a weighted sum, so every output element gets a different gradient
        let grads = (y.clone() * values(y.dims(), 3, 1.0, &y.device())).sum().backward();
        Outputs {
            dx: x.grad(&grads).expect("x requires grad"),
            dw: layer.weight.val().grad(&grads),
            db: layer.bias.as_ref().and_then(|b| b.val().grad(&grads)),
            y,
        }
    }

    /// `linear` vs `layer.forward` on an autodiff flex device: values and the gradients of x, W
    /// and b, and the number of sgemm calls (so a silent fallback cannot pass for BLAS).
    fn check<const D: usize>(name: &str, x_shape: [usize; D], d_out: usize, bias: bool, transposed: bool, frozen: bool) {
        let device = Device::flex().autodiff();
        let loaded = blas_loaded(name);
        let tol = loaded.then_some(1e-5);
        let layer = layer(x_shape[D - 1], d_out, bias, transposed, frozen, &device);
        let x = values(x_shape, 4, 2.0, &device);
        let before = calls();
        let got = run(&layer, &x, true);
        let sgemms = calls() - before;
        let want = run(&layer, &x, false);
        // forward, dX, and dW unless W is frozen
        assert_eq!(sgemms, if !loaded { 0 } else if frozen { 2 } else { 3 }, "{name}: sgemm calls");
        assert_close(&format!("{name}: y"), got.y, want.y, tol);
        assert_close(&format!("{name}: dx"), got.dx, want.dx, tol);
        match (got.dw, want.dw) {
            (Some(got), Some(want)) => _ = assert_close(&format!("{name}: dW"), got, want, tol),
            (None, None) => assert!(frozen, "{name}: W got no gradient"),
            _ => panic!("{name}: dW present on one side only"),
        }
        match (got.db, want.db) {
            (Some(got), Some(want)) => _ = assert_close(&format!("{name}: db"), got, want, tol),
            (None, None) => assert!(!bias, "{name}: b got no gradient"),
            _ => panic!("{name}: db present on one side only"),
        }
    }

    #[test]
    fn linear_2d_with_bias_matches_burn_values_and_gradients() {
        check("2-D, bias", [7, 48], 24, true, false, false);
    }

    #[test]
    fn linear_3d_with_bias_matches_burn_values_and_gradients() {
        check("3-D, bias", [2, 5, 48], 40, true, false, false);
    }

    #[test]
    fn linear_2d_without_bias_matches_burn_values_and_gradients() {
        check("2-D, no bias", [9, 33], 17, false, false, false);
    }

    #[test]
    fn linear_3d_without_bias_matches_burn_values_and_gradients() {
        check("3-D, no bias", [3, 4, 40], 64, false, false, false);
    }

    #[test]
    fn linear_with_a_transposed_weight_view_matches_burn() {
        check("3-D, W a transposed view", [2, 6, 48], 20, true, true, false);
    }

    #[test]
    fn linear_probe_frozen_weight_gets_no_gradient_and_skips_dw() {
        check("linear probe (W frozen)", [2, 5, 48], 24, true, false, true);
    }

    #[test]
    fn linear_without_autodiff_matches_burn() {
        let device = Device::flex();
        let loaded = blas_loaded("inference");
        for transposed in [false, true] {
            let layer = layer(48, 24, true, transposed, false, &device);
            let x = values([3, 4, 48], 5, 2.0, &device);
            let before = calls();
            let got = linear(&layer, x.clone());
            assert_eq!(calls() - before, usize::from(loaded), "one sgemm per forward");
            assert_close(&format!("inference, transposed W {transposed}"), got, layer.forward(x), loaded.then_some(1e-5));
        }
    }
}
