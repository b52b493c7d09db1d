//! Batched matrix products [B, H, M, K] · [B, H, K, N] (attention's Q·Kᵀ and P·V) on OpenBLAS, one
//! sgemm per (b, h), as a Burn backend extension with a hand-written backward:
//! dA = dC·Bᵀ (if A is tracked), dB = Aᵀ·dC (if B is tracked).
//!
//! Flex runs these small products (128×128×32 for MiniLM) at 9–14 GFLOP/s; a loop of OpenBLAS
//! calls at 26–70 on one thread (examples/linear_bench.rs). Operands that are views with a unit
//! stride in one of their last two dims (K = key.swap_dims(2, 3), a head split by permute) go to
//! sgemm as they are, transposed or not; anything else is made contiguous first.

use crate::openblas::{self, Matrix, OpenBlas};
use burn::backend::autodiff::NodeId;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::ops::FloatTensorOps;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Backend, Dispatch, Flex, backend_extension};
use burn::tensor::{DType, Shape, Tensor, TensorData};

#[backend_extension(Flex, Autodiff)]
pub trait BlasMatmul: Backend {
    /// a [B, H, M, K] · b [B, H, K, N] -> [B, H, M, N]
    fn blas_matmul4(a: FloatTensor<Self>, b: FloatTensor<Self>) -> FloatTensor<Self>;
}

/// `a.matmul(b)` for a [B, H, M, K] and b [B, H, K, N] (same B and H, no broadcast), on OpenBLAS
/// for f32 tensors on a flex device when the library is loaded; `a.matmul(b)` everywhere else.
pub fn matmul4(a: Tensor<4>, b: Tensor<4>) -> Tensor<4> {
    let (da, db) = (a.dims(), b.dims());
    let routed = crate::is_f32_on_flex(&a) && b.dtype() == DType::F32 && da[..2] == db[..2] && da[3] == db[2];
    if !routed || openblas::get().is_none() {
        return a.matmul(b);
    }
    Tensor::from_dispatch(<Dispatch as BlasMatmul>::blas_matmul4(a.into_dispatch(), b.into_dispatch()))
}

/// t [B, H, R, C] as B·H matrices over its storage: the offset of each, and the stored form
/// (rows, cols, ld, trans) of every one. Views without a unit stride in the last two dims are
/// made contiguous (hence the returned tensor).
struct Batch {
    t: FlexTensor,
    offsets: Vec<usize>,
    rows: usize,
    cols: usize,
    ld: usize,
    trans: bool,
}

impl Batch {
    fn new(t: FlexTensor) -> Batch {
        Self::strided(&t).unwrap_or_else(|| Self::strided(&t.to_contiguous()).expect("a contiguous tensor is a batch of dense matrices"))
    }

    fn strided(t: &FlexTensor) -> Option<Batch> {
        let layout = t.layout();
        let [nb, nh, r, c] = layout.shape().dims::<4>();
        let s: Vec<usize> = layout.strides().iter().map(|&s| usize::try_from(s).ok()).collect::<Option<_>>()?;
        let (rows, cols, ld, trans) = if s[3] == 1 && (r <= 1 || s[2] >= c) {
            (r, c, if r <= 1 { c.max(1) } else { s[2] }, false)
        } else if s[2] == 1 && (c <= 1 || s[3] >= r) {
            (c, r, if c <= 1 { r.max(1) } else { s[3] }, true)
        } else {
            return None;
        };
        let start = layout.start_offset();
        let (batch_stride, head_stride) = (s[0], s[1]);
        let offsets = (0..nb).flat_map(|b| (0..nh).map(move |h| start + b * batch_stride + h * head_stride)).collect();
        Some(Batch { t: t.clone(), offsets, rows, cols, ld, trans })
    }

    fn matrix(&self, i: usize) -> Matrix<'_> {
        let storage = &self.t.storage::<f32>()[self.offsets[i]..];
        Matrix { data: storage, rows: self.rows, cols: self.cols, ld: self.ld, trans: self.trans }
    }

    /// Rows and columns as used (after `trans`).
    fn dims(&self) -> (usize, usize) {
        if self.trans { (self.cols, self.rows) } else { (self.rows, self.cols) }
    }
}

/// op(a)·op(b) for every (b, h), op = transpose where `ta`/`tb`: [B, H, M, N], contiguous.
fn products(lib: &OpenBlas, a: &Batch, ta: bool, b: &Batch, tb: bool) -> FlexTensor {
    let [nb, nh, _, _] = a.t.layout().shape().dims::<4>();
    let m = if ta { a.dims().1 } else { a.dims().0 };
    let n = if tb { b.dims().0 } else { b.dims().1 };
    let mut out = vec![0.0f32; nb * nh * m * n];
    for (i, c) in out.chunks_exact_mut((m * n).max(1)).enumerate() {
        let (am, bm) = (a.matrix(i), b.matrix(i));
        lib.sgemm(if ta { am.t() } else { am }, if tb { bm.t() } else { bm }, 0.0, c);
    }
    FlexTensor::from_data(TensorData::new(out, Shape::new([nb, nh, m, n])))
}

fn forward(a: FlexTensor, b: FlexTensor) -> FlexTensor {
    match openblas::get() {
        Some(lib) => products(lib, &Batch::new(a), false, &Batch::new(b), false),
        None => Flex::float_matmul(a, b),
    }
}

impl BlasMatmul for Flex {
    fn blas_matmul4(a: FlexTensor, b: FlexTensor) -> FlexTensor {
        forward(a, b)
    }
}

/// Backward of C = A·B; parents [A, B].
#[derive(Debug)]
struct MatmulBackward;

/// The checkpointed A (when B needs a gradient) and B (when A does).
type MatmulState = (Option<NodeId>, Option<NodeId>);

impl Backward<Flex, 2> for MatmulBackward {
    type State = MatmulState;

    fn backward(self, ops: Ops<MatmulState, 2>, grads: &mut Gradients, checkpointer: &mut Checkpointer) {
        let dc = grads.consume::<Flex>(&ops.node);
        let [a, b] = ops.parents;
        let (a_state, b_state) = ops.state;
        let lib = openblas::get();
        let dc_batch = lib.map(|_| Batch::new(dc.clone()));
        if let Some(node) = a {
            let rhs = checkpointer.retrieve_node_output::<FlexTensor>(b_state.expect("B is checkpointed when A is tracked"));
            let da = match (lib, &dc_batch) {
                (Some(lib), Some(dc)) => products(lib, dc, false, &Batch::new(rhs), true),
                _ => Flex::float_matmul(dc.clone(), Flex::float_swap_dims(rhs, 2, 3)),
            };
            grads.register::<Flex>(node.id, da);
        }
        if let Some(node) = b {
            let lhs = checkpointer.retrieve_node_output::<FlexTensor>(a_state.expect("A is checkpointed when B is tracked"));
            let db = match (lib, &dc_batch) {
                (Some(lib), Some(dc)) => products(lib, &Batch::new(lhs), true, dc, false),
                _ => Flex::float_matmul(Flex::float_swap_dims(lhs, 2, 3), dc),
            };
            grads.register::<Flex>(node.id, db);
        }
    }
}

impl<C: CheckpointStrategy> BlasMatmul for Autodiff<Flex, C> {
    fn blas_matmul4(a: FloatTensor<Self>, b: FloatTensor<Self>) -> FloatTensor<Self> {
        let (a_tracked, b_tracked) = (a.is_tracked(), b.is_tracked());
        match MatmulBackward.prepare::<C>([a.node(), b.node()]).compute_bound().stateful() {
            OpsKind::Tracked(mut prep) => {
                let state = (b_tracked.then(|| prep.checkpoint(&a)), a_tracked.then(|| prep.checkpoint(&b)));
                prep.finish(state, forward(a.into_primitive(), b.into_primitive()))
            }
            OpsKind::UnTracked(prep) => prep.finish(forward(a.into_primitive(), b.into_primitive())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::openblas::tests::calls;
    use crate::testing::{assert_close, blas_loaded, values};
    use burn::tensor::Device;

    /// The operands as attention makes them, with `Device::flex().autodiff()`: A [2, 3, 5, 8] as a
    /// head split of [2, 5, 3, 8] (swap_dims(1, 2): strided batches), B = K.swap_dims(2, 3) a
    /// transposed view, and for P·V a contiguous A and a head-split B.
    fn check(name: &str, qk: bool, a_tracked: bool, b_tracked: bool) {
        let device = Device::flex().autodiff();
        let loaded = blas_loaded(name);
        let tol = loaded.then_some(1e-5);
        let (a, b) = if qk {
            (values([2, 5, 3, 8], 1, 1.0, &device).swap_dims(1, 2), values([2, 7, 3, 8], 2, 1.0, &device).swap_dims(1, 2).swap_dims(2, 3))
        } else {
            (values([2, 3, 5, 7], 3, 1.0, &device), values([2, 7, 3, 8], 4, 1.0, &device).swap_dims(1, 2))
        };
        let weights = values([2, 3, 5, if qk { 7 } else { 8 }], 5, 1.0, &device);
        let run = |blas: bool| {
            let a = if a_tracked { a.clone().require_grad() } else { a.clone() };
            let b = if b_tracked { b.clone().require_grad() } else { b.clone() };
            let c = if blas { matmul4(a.clone(), b.clone()) } else { a.clone().matmul(b.clone()) };
            let grads = (c.clone() * weights.clone()).sum().backward();
            (c, a.grad(&grads), b.grad(&grads))
        };
        let before = calls();
        let (c, da, db) = run(true);
        let sgemms = calls() - before;
        let (want_c, want_da, want_db) = run(false);
        // 6 (b, h) products forward, 6 more per tracked operand backward
        assert_eq!(sgemms, if loaded { 6 * (1 + usize::from(a_tracked) + usize::from(b_tracked)) } else { 0 }, "{name}: sgemm calls");
        assert_close(&format!("{name}: C"), c, want_c, tol);
        for (what, got, want, tracked) in [("dA", da, want_da, a_tracked), ("dB", db, want_db, b_tracked)] {
            match (got, want) {
                (Some(got), Some(want)) => _ = assert_close(&format!("{name}: {what}"), got, want, tol),
                (None, None) => assert!(!tracked, "{name}: {what} missing"),
                _ => panic!("{name}: {what} on one side only"),
            }
        }
    }

    #[test]
    fn matmul4_q_kt_matches_burn_values_and_gradients() {
        check("Q·Kᵀ", true, true, true);
    }

    #[test]
    fn matmul4_p_v_matches_burn_values_and_gradients() {
        check("P·V", false, true, true);
    }

    #[test]
    fn matmul4_computes_only_tracked_gradients() {
        check("Q·Kᵀ, K constant", true, true, false);
        check("P·V, P constant", false, false, true);
    }

    #[test]
    fn matmul4_without_autodiff_and_with_broadcast_matches_burn() {
        let device = Device::flex();
        let loaded = blas_loaded("matmul4 inference");
        let (a, b) = (values([2, 3, 5, 8], 6, 1.0, &device), values([2, 3, 7, 8], 7, 1.0, &device).swap_dims(2, 3));
        let before = calls();
        let got = matmul4(a.clone(), b.clone());
        assert_eq!(calls() - before, if loaded { 6 } else { 0 });
        assert_close("matmul4 inference", got, a.clone().matmul(b), loaded.then_some(1e-5));
        // a broadcast batch is Burn's own matmul, exactly
        let b1 = values([1, 3, 8, 4], 8, 1.0, &device);
        let before = calls();
        let got = matmul4(a.clone(), b1.clone());
        assert_eq!(calls(), before, "a broadcast goes to Burn");
        assert_close("matmul4 broadcast", got, a.matmul(b1), None);
    }
}
