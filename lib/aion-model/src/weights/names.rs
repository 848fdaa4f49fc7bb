//! [`ParamNames`]: which stored tensor each parameter of a module came from, recorded by the
//! [`Source`](super::Source) that built the module, and read back when the module is saved.

use std::collections::HashMap;
use std::sync::Arc;

use burn::module::{Module, ModuleVisitor, Param, ParamId};
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;

use super::source::{Init, transpose};
use crate::export::NamedTensor;

/// How a kept parameter relates to its stored tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// Same shape and values.
    AsStored,
    /// Same values in row-major order, another shape.
    Reshaped,
    /// The stored tensor viewed as a `[s₀, s₁·s₂·…]` matrix, transposed (linear weights are
    /// kept `[in, out]`; PyTorch stores `[out, in]`).
    Transposed,
}

/// What the module keeps of one stored tensor.
#[derive(Debug, Clone)]
enum Kept {
    /// A parameter (its values are read from the module when saving).
    Param {
        id: ParamId,
        layout: Layout,
        init: Init,
    },
    /// A constant buffer (position tables): never trained, so the values it was built with are
    /// the values to save.
    Buffer(Arc<Vec<f32>>),
    /// Nothing: the tensor is checked on loading and written as zeros when saving.
    Unkept,
}

#[derive(Debug, Clone)]
struct Entry {
    name: String,
    shape: Vec<usize>,
    kept: Kept,
}

/// The stored name, shape and layout of every tensor a module was built from, in the order the
/// module's constructor took them.
#[derive(Debug, Clone, Default)]
pub struct ParamNames {
    entries: Vec<Entry>,
}

/// One linear layer found in [`ParamNames::linear_weights`].
#[derive(Debug, Clone, PartialEq)]
pub struct LinearWeight {
    /// Its state-dict prefix (`encoder.0.attn.qkv`).
    pub prefix: String,
    /// The weight parameter.
    pub id: ParamId,
    /// Stored shape `[out, in]`.
    pub shape: [usize; 2],
    /// Number of stacked blocks (3 for `qkv`, 2 for `kv`), from its initialisation rule.
    pub packed: usize,
}

impl ParamNames {
    /// Records a parameter built from stored tensor `name` of `shape`.
    pub fn param<B: Backend, const D: usize>(
        &mut self,
        p: &Param<Tensor<B, D>>,
        name: &str,
        shape: &[usize],
        layout: Layout,
        init: &Init,
    ) {
        self.push(
            name,
            shape,
            Kept::Param {
                id: p.id,
                layout,
                init: init.clone(),
            },
        );
    }

    /// Records a constant buffer with the values it was built from.
    pub fn buffer(&mut self, name: &str, shape: &[usize], values: &[f32]) {
        self.push(name, shape, Kept::Buffer(Arc::new(values.to_vec())));
    }

    /// Records a tensor the module does not keep.
    pub fn unkept(&mut self, name: &str, shape: &[usize]) {
        self.push(name, shape, Kept::Unkept);
    }

    fn push(&mut self, name: &str, shape: &[usize], kept: Kept) {
        self.entries.push(Entry {
            name: name.to_string(),
            shape: shape.to_vec(),
            kept,
        });
    }

    /// Number of recorded tensors.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Names and stored shapes, in construction order.
    pub fn stored(&self) -> impl Iterator<Item = (&str, &[usize])> {
        self.entries
            .iter()
            .map(|e| (e.name.as_str(), e.shape.as_slice()))
    }

    /// Number of values in the recorded parameters (buffers and unkept tensors excluded).
    pub fn parameter_count(&self) -> u64 {
        self.entries
            .iter()
            .filter(|e| matches!(e.kept, Kept::Param { .. }))
            .map(|e| e.shape.iter().product::<usize>() as u64)
            .sum()
    }

    /// Names of the tensors the module does not keep.
    pub fn unkept_names(&self) -> Vec<String> {
        self.entries
            .iter()
            .filter(|e| matches!(e.kept, Kept::Unkept))
            .map(|e| e.name.clone())
            .collect()
    }

    /// Every linear layer weight (`<prefix>.weight`, kept transposed), in construction order.
    pub fn linear_weights(&self) -> Vec<LinearWeight> {
        self.entries
            .iter()
            .filter_map(|e| match (&e.kept, e.shape.as_slice()) {
                (
                    Kept::Param {
                        id,
                        layout: Layout::Transposed,
                        init,
                    },
                    &[out, inp],
                ) => Some(LinearWeight {
                    prefix: e.name.strip_suffix(".weight")?.to_string(),
                    id: *id,
                    shape: [out, inp],
                    packed: match init {
                        Init::XavierUniform { packed } => *packed,
                        _ => 1,
                    },
                }),
                _ => None,
            })
            .collect()
    }

    /// The module's state dict under the stored names, in PyTorch layout and construction
    /// order (unkept tensors as zeros).
    ///
    /// # Panics
    /// If `module` lacks a recorded parameter (it was not built from these names; see
    /// [`rebind`](Self::rebind)).
    pub fn state_dict<B: Backend, M: Module<B>>(&self, module: &M) -> Vec<NamedTensor> {
        let wanted: HashMap<ParamId, usize> = self
            .entries
            .iter()
            .enumerate()
            .filter_map(|(i, e)| match e.kept {
                Kept::Param { id, .. } => Some((id, i)),
                _ => None,
            })
            .collect();
        let mut values = Values {
            wanted,
            found: vec![None; self.entries.len()],
        };
        module.visit(&mut values);
        self.entries
            .iter()
            .zip(values.found)
            .map(|(e, found)| {
                let n: usize = e.shape.iter().product();
                let data = match &e.kept {
                    Kept::Param { layout, .. } => {
                        let kept = found.unwrap_or_else(|| {
                            panic!("the module has no parameter for {}", e.name)
                        });
                        match layout {
                            Layout::Transposed => transpose(&kept, n / e.shape[0], e.shape[0]),
                            Layout::AsStored | Layout::Reshaped => kept,
                        }
                    }
                    Kept::Buffer(v) => v.to_vec(),
                    Kept::Unkept => vec![0.0; n],
                };
                NamedTensor::new(e.name.clone(), e.shape.clone(), data)
            })
            .collect()
    }

    /// These names for `other`, a module of the same structure as `built` (the module they
    /// were recorded for): parameters are paired in burn's visiting order, which depends only
    /// on the structure. Used for modules assembled by hand (e.g. a freshly initialised probe
    /// head).
    ///
    /// # Panics
    /// If the two modules do not have the same number of float parameters.
    pub fn rebind<B: Backend, M: Module<B>>(&self, built: &M, other: &M) -> Self {
        let (a, b) = (ids(built), ids(other));
        assert_eq!(a.len(), b.len(), "modules of different structure");
        let map: HashMap<ParamId, ParamId> = a.into_iter().zip(b).collect();
        let mut out = self.clone();
        for e in &mut out.entries {
            if let Kept::Param { id, .. } = &mut e.kept {
                *id = map[id];
            }
        }
        out
    }
}

/// The float parameter ids of a module in visiting order.
fn ids<B: Backend, M: Module<B>>(m: &M) -> Vec<ParamId> {
    struct Ids(Vec<ParamId>);
    impl<B: Backend> ModuleVisitor<B> for Ids {
        fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<B, D>>) {
            self.0.push(p.id);
        }
    }
    let mut v = Ids(Vec::new());
    m.visit(&mut v);
    v.0
}

/// Collects the values of the wanted parameters (row-major, as kept).
struct Values {
    wanted: HashMap<ParamId, usize>,
    found: Vec<Option<Vec<f32>>>,
}

impl<B: Backend> ModuleVisitor<B> for Values {
    fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<B, D>>) {
        if let Some(&i) = self.wanted.get(&p.id) {
            let data = p
                .val()
                .into_data()
                .convert::<f32>()
                .to_vec::<f32>()
                .expect("f32 tensor data");
            self.found[i] = Some(data);
        }
    }
}
