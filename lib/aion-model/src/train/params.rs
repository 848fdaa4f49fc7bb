//! The trainable parameters of a module as one flat `f32` vector.
//!
//! Trainable = float parameters that require a gradient (buffers such as the zero LayerNorm
//! biases of `norm_bias = false` models, and everything under `no_grad()`, are left out).
//! Their order is the module's visiting order, which is fixed by its structure; so a module
//! rebuilt from a checkpoint lists the same parameters in the same order, and the optimiser
//! state saved as flat vectors applies again exactly.

use std::collections::HashMap;

use burn::module::{AutodiffModule, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Tensor, TensorData};

/// One trainable parameter's place in the flat vector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slot {
    /// burn's parameter id.
    pub id: ParamId,
    /// Its shape.
    pub shape: Vec<usize>,
    /// Offset in the flat vector.
    pub offset: usize,
}

impl Slot {
    /// Number of values.
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    /// Whether the parameter is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The layout of the flat vector.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Flat {
    /// Parameters in visiting order.
    pub slots: Vec<Slot>,
    /// Total number of values.
    pub len: usize,
}

impl Flat {
    /// Per value: whether it belongs to a matrix (weight decay is applied to parameters with
    /// two or more dimensions only, not to biases, norms or single vectors).
    pub fn decay_mask(&self) -> Vec<bool> {
        let mut out = Vec::with_capacity(self.len);
        for s in &self.slots {
            let matrix = s.shape.iter().filter(|&&n| n > 1).count() >= 2;
            out.extend(std::iter::repeat_n(matrix, s.len()));
        }
        out
    }

    /// The shapes, in order (to check that a checkpoint fits).
    pub fn shapes(&self) -> Vec<Vec<usize>> {
        self.slots.iter().map(|s| s.shape.clone()).collect()
    }
}

fn host<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .to_vec::<f32>()
        .expect("f32 tensor data")
}

struct Layout {
    flat: Flat,
}

impl<B: Backend> ModuleVisitor<B> for Layout {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let t = param.val();
        if !t.is_require_grad() {
            return;
        }
        let shape = t.dims().to_vec();
        let n: usize = shape.iter().product();
        self.flat.slots.push(Slot {
            id: param.id,
            shape,
            offset: self.flat.len,
        });
        self.flat.len += n;
    }
}

/// The trainable parameters of `module`.
pub fn layout<B: AutodiffBackend, M: AutodiffModule<B>>(module: &M) -> Flat {
    let mut v = Layout {
        flat: Flat::default(),
    };
    module.visit(&mut v);
    v.flat
}

struct Gather<'a, B: AutodiffBackend> {
    index: HashMap<ParamId, &'a Slot>,
    grads: Option<&'a B::Gradients>,
    out: Vec<f32>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for Gather<'_, B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let Some(slot) = self.index.get(&param.id) else {
            return;
        };
        let range = slot.offset..slot.offset + slot.len();
        let t = param.val();
        let values = match self.grads {
            None => Some(host(t.inner())),
            Some(g) => t.grad(g).map(host),
        };
        if let Some(v) = values {
            self.out[range].copy_from_slice(&v);
        }
    }
}

fn gather<B: AutodiffBackend, M: AutodiffModule<B>>(
    module: &M,
    flat: &Flat,
    grads: Option<&B::Gradients>,
) -> Vec<f32> {
    let mut v = Gather::<B> {
        index: flat.slots.iter().map(|s| (s.id, s)).collect(),
        grads,
        out: vec![0.0; flat.len],
    };
    module.visit(&mut v);
    v.out
}

/// The current values of the trainable parameters.
pub fn values<B: AutodiffBackend, M: AutodiffModule<B>>(module: &M, flat: &Flat) -> Vec<f32> {
    gather(module, flat, None)
}

/// The gradients of the trainable parameters (zeros for a parameter the loss does not reach).
pub fn gradients<B: AutodiffBackend, M: AutodiffModule<B>>(
    module: &M,
    flat: &Flat,
    grads: &B::Gradients,
) -> Vec<f32> {
    gather(module, flat, Some(grads))
}

struct Assign<'a> {
    index: HashMap<ParamId, &'a Slot>,
    values: &'a [f32],
}

impl<B: AutodiffBackend> ModuleMapper<B> for Assign<'_> {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let (id, tensor, mapper) = param.consume();
        let Some(slot) = self.index.get(&id) else {
            return Param::from_mapped_value(id, tensor, mapper);
        };
        let data = self.values[slot.offset..slot.offset + slot.len()].to_vec();
        let shape: [usize; D] = slot.shape.clone().try_into().expect("rank matches");
        let device = tensor.device();
        let fresh = Tensor::<B, D>::from_data(TensorData::new(data, shape), &device).require_grad();
        Param::from_mapped_value(id, fresh, mapper)
    }
}

/// `module` with its trainable parameters set to `values` (same ids, gradients required).
pub fn assign<B: AutodiffBackend, M: AutodiffModule<B>>(
    module: M,
    flat: &Flat,
    values: &[f32],
) -> M {
    assert_eq!(values.len(), flat.len, "flat vector length");
    let mut m = Assign {
        index: flat.slots.iter().map(|s| (s.id, s)).collect(),
        values,
    };
    module.map(&mut m)
}
