//! Building Burn modules from HF tensors, shared by every family: parameters get stable ids (0, 1,
//! 2, ... in load order), so an optimizer state saved for one load of a checkpoint matches the next
//! load (exact resume). HF keeps a `Linear` weight as `[out, in]`, Burn as `[in, out]`: transposed
//! on the way in here and on the way out by [`HfParam::LinearWeight`].

use crate::hf::TensorMap;
use crate::reward_net::HfParam;
use burn::module::{Param, ParamId};
use burn::nn::{Embedding, EmbeddingConfig, Linear, LinearConfig};
use burn::tensor::{Device, Distribution, Tensor, TensorData};

pub(crate) struct ParamBuilder<'a> {
    pub tensors: &'a mut TensorMap,
    pub device: &'a Device,
    next_id: u64,
    /// Standard deviation of a new weight (the config's `initializer_range`).
    init_std: f64,
}

impl<'a> ParamBuilder<'a> {
    pub fn new(tensors: &'a mut TensorMap, device: &'a Device, init_std: f64) -> Self {
        Self { tensors, device, next_id: 0, init_std }
    }

    pub fn param<const D: usize>(&mut self, values: Vec<f32>, shape: [usize; D]) -> Param<Tensor<D>> {
        let tensor = Tensor::<D>::from_data(TensorData::new(values, shape), self.device);
        let mut p = Param::from_tensor(tensor);
        p.id = ParamId::from(self.next_id);
        self.next_id += 1;
        p
    }

    /// A tensor stored in the same layout in HF and Burn (norm weights, biases, embeddings).
    pub fn take<const D: usize>(&mut self, name: &str, shape: [usize; D]) -> Param<Tensor<D>> {
        let t = self.tensors.take(name, &shape);
        self.param(t.values, shape)
    }

    pub fn embedding(&mut self, name: &str, rows: usize, d: usize) -> Embedding {
        let mut m = EmbeddingConfig::new(1, 1).init(self.device);
        m.weight = self.take(name, [rows, d]);
        m
    }

    /// `{name}.weight` ([out, in] in the file) and, when `bias`, `{name}.bias`.
    pub fn linear(&mut self, name: &str, d_in: usize, d_out: usize, bias: bool) -> Linear {
        let w = self.tensors.take(&format!("{name}.weight"), &[d_out, d_in]);
        let b = bias.then(|| self.tensors.take(&format!("{name}.bias"), &[d_out]).values);
        self.linear_from(transpose(&w.values, d_out, d_in), b, d_in, d_out)
    }

    /// A new layer the way transformers initialises one: weight N(0, initializer_range), bias 0.
    pub fn fresh_linear(&mut self, d_in: usize, d_out: usize, bias: bool) -> Linear {
        let w = Tensor::<2>::random([d_in, d_out], Distribution::Normal(0.0, self.init_std), self.device);
        let w = w.into_data().try_to_vec::<f32>().expect("a float tensor converts to f32");
        self.linear_from(w, bias.then(|| vec![0.0; d_out]), d_in, d_out)
    }

    fn linear_from(&mut self, w_in_out: Vec<f32>, bias: Option<Vec<f32>>, d_in: usize, d_out: usize) -> Linear {
        // A 1×1 layer with bias, whatever is replaced: its two random draws keep the device's RNG
        // stream (and so every seeded new head) as it always was.
        let mut m = LinearConfig::new(1, 1).init(self.device);
        m.weight = self.param(w_in_out, [d_in, d_out]);
        m.bias = bias.map(|b| self.param(b, [d_out]));
        m
    }
}

/// Row-major [rows, cols] -> [cols, rows].
pub(crate) fn transpose(values: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0.0; values.len()];
    for r in 0..rows {
        for c in 0..cols {
            out[c * rows + r] = values[r * cols + c];
        }
    }
    out
}

/// `{name}.weight` and `{name}.bias` (when the layer has one) in HF layout.
pub(crate) fn push_linear<'a>(out: &mut Vec<(String, HfParam<'a>)>, name: &str, l: &'a Linear) {
    out.push((format!("{name}.weight"), HfParam::LinearWeight(&l.weight)));
    if let Some(b) = &l.bias {
        out.push((format!("{name}.bias"), HfParam::Vector(b)));
    }
}
