//! [`Source`]: the one description of the weights.
//!
//! Every module's constructor (`load` / `from_weights`) asks its source for each tensor by its
//! name in the reference's state dict, with its stored shape (PyTorch layout) and how it starts
//! in a model made from scratch ([`Init`]). That constructor is the only place a tensor is
//! named. The source decides where the values come from:
//!
//! * [`WeightFile`](super::WeightFile): strictly from a safetensors file (loading);
//! * [`Initialiser`](super::Initialiser): drawn from a seeded generator, and recorded as the
//!   state dict to write (a model from scratch, a random model directory, a new modality).
//!
//! Both record, in [`ParamNames`], the stored name and layout of every burn parameter they hand
//! out; saving a module reads its tensors back through those names
//! ([`ParamNames::state_dict`]). So loading, initialising and saving cannot disagree on a name.

use std::path::Path;

use burn::module::Param;
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};

use super::names::{Layout, ParamNames};
use crate::codecs::element_fn::ElementFn;

/// How a tensor starts in a model made from scratch (ignored when loading).
#[derive(Debug, Clone, PartialEq)]
pub enum Init {
    /// All zeros (biases, LayerNorm shifts, GRN parameters, running means).
    Zeros,
    /// All ones (LayerNorm and BatchNorm scales, running variances).
    Ones,
    /// `N(0, std²)`.
    Normal {
        /// Standard deviation.
        std: f64,
    },
    /// Xavier-uniform for a `[out, in]` weight that packs `packed` equal `[out/packed, in]`
    /// blocks (`qkv`: 3, `kv`: 2): `U(±sqrt(6 / (in + out/packed)))`.
    XavierUniform {
        /// Number of stacked blocks.
        packed: usize,
    },
    /// LeCun-uniform for a `[out, in, k…]` weight: `U(±sqrt(3 / fan_in))`, `fan_in = in·Πk`
    /// (variance `1/fan_in`, which keeps activations at their scale through a random network).
    LeCunUniform,
    /// A transformer token table: `N(0, 0.02²)`, or, when the initialiser makes ordinal scalar
    /// tables and `ordinal` holds, the sin-cos code of the bin rank (see `train::init`).
    TokenTable {
        /// Whether the modality's tokens are ordered (quantile / grid scalars).
        ordinal: bool,
    },
    /// The 2-D sin-cos position table of an `h × w` grid, stored `[1, h·w, D]`.
    SinCos2d {
        /// Grid height.
        h: usize,
        /// Grid width.
        w: usize,
    },
    /// The 1-D sin-cos position table of `n` positions, stored `[1, n, D]`.
    SinCos1d {
        /// Positions.
        n: usize,
    },
    /// Values fixed by the configuration (grids, bucket edges).
    Floats(Vec<f32>),
    /// Integer values fixed by the configuration (FSQ levels, LFQ bit weights, lengths).
    Ints(Vec<i64>),
    /// The reservoir of a scalar quantizer: samples of a catalogue quantity, in the codec's
    /// space (see [`Reservoir`]).
    Reservoir(Reservoir),
    /// The quantile table of the reservoir taken just before (the reference's
    /// `_generate_index_to_val`, [`crate::codecs::scalar_fit::quantile_table`]).
    QuantileTable,
}

/// What a scalar quantizer's reservoir holds.
#[derive(Debug, Clone, PartialEq)]
pub struct Reservoir {
    /// The catalogue quantity (the codec folder name: `FLUX_G`, `bp_coefficients`, `SHAPE_R`…).
    pub quantity: String,
    /// Channel (Gaia XP coefficient index; 0 otherwise).
    pub channel: usize,
    /// The space the codec's table lives in.
    pub space: ValueSpace,
}

/// The space of a scalar quantizer's table.
#[derive(Debug, Clone, PartialEq)]
pub enum ValueSpace {
    /// The raw values (`ScalarCodec`, the catalog's shapes).
    Linear,
    /// `ln(max(x, e^min_log_value))` (`LogScalarCodec`).
    Log {
        /// `min_log_value`.
        min_log_value: f64,
    },
    /// The codec's compression functions applied in order (`MultiScalarCodec`, e.g.
    /// `["arcsinh"]`).
    Compressed(Vec<ElementFn>),
}

/// The stored integer type of an integer tensor (what the reference writes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IntType {
    /// `int32` (FSQ `levels`).
    I32,
    /// `int64` (LFQ mask, lengths, codebook sizes, batch counters).
    I64,
}

/// Where a module's tensors come from while it is built (see the module docs).
pub trait Source {
    /// The values of float tensor `name` with stored `shape`, row-major.
    fn floats(&mut self, name: &str, shape: &[usize], init: &Init) -> Vec<f32>;

    /// [`floats`](Self::floats) of a `[rows, cols]` tensor, transposed to `[cols, rows]`
    /// (row-major). A source may build it without the intermediate row-major copy.
    fn floats_transposed(&mut self, name: &str, shape: [usize; 2], init: &Init) -> Vec<f32> {
        let [rows, cols] = shape;
        transpose(&self.floats(name, &shape, init), rows, cols)
    }

    /// The values of integer tensor `name` with stored `shape`, row-major.
    fn ints(&mut self, name: &str, shape: &[usize], stored: IntType, init: &Init) -> Vec<i64>;

    /// A tensor the reference stores but this implementation never reads: it must be present
    /// with its shape when loading, and is written when initialising.
    fn unused(&mut self, name: &str, shape: &[usize], init: &Init);

    /// A tensor the reference stores that is accepted when present and never required
    /// (training counters such as BatchNorm's `num_batches_tracked`); written when
    /// initialising.
    fn optional(&mut self, name: &str, shape: &[usize], stored: IntType, init: &Init);

    /// Tensors whose names start with `prefix` may be stored under `hub_prefix` instead (the
    /// Hub's scalar codecs write `quantizer.` for the module's `_quantizer.`): a loader accepts
    /// both; an initialiser writes `hub_prefix` when `write_hub`, else `prefix`.
    fn stored_prefix(&mut self, prefix: &str, hub_prefix: &str, write_hub: bool);

    /// A request for `wanted` may be served by the stored tensor `stored` (a shared tensor kept
    /// under one name, e.g. `mod_emb`); when both are stored, `stored`'s copy (of `shape`) is
    /// ignored.
    fn alias(&mut self, wanted: &str, stored: &str, shape: &[usize]);

    /// Tensors whose names start with `prefix` are accepted and ignored when present (e.g. an
    /// EMA copy of the weights); never written.
    fn ignore_prefix(&mut self, prefix: &str);

    /// Subsequent random draws come from stream `stream` (one per modality, so that adding a
    /// modality changes no other tensor); no effect when loading.
    fn stream(&mut self, stream: u64);

    /// Whether a problem has been recorded (value checks are then skipped: the problem list is
    /// what the caller reports).
    fn has_problems(&self) -> bool;

    /// What the tensors come from, for messages (the weight file's path).
    fn label(&self) -> &Path;

    /// The parameter names recorded so far.
    fn names_mut(&mut self) -> &mut ParamNames;

    /// A float tensor as a (trainable) parameter, kept in its stored layout.
    fn param<B: Backend, const D: usize>(
        &mut self,
        name: &str,
        shape: [usize; D],
        init: &Init,
        device: &B::Device,
    ) -> Param<Tensor<B, D>>
    where
        Self: Sized,
    {
        let values = self.floats(name, &shape, init);
        let p = Param::from_tensor(Tensor::from_data(TensorData::new(values, shape), device));
        self.names_mut()
            .param(&p, name, &shape, Layout::AsStored, init);
        p
    }

    /// A `[out, in]` weight kept transposed as `[in, out]` (linear layers), contiguous.
    fn param_transposed<B: Backend>(
        &mut self,
        name: &str,
        [d_out, d_in]: [usize; 2],
        init: &Init,
        device: &B::Device,
    ) -> Param<Tensor<B, 2>>
    where
        Self: Sized,
    {
        let kept = self.floats_transposed(name, [d_out, d_in], init);
        let p = Param::from_tensor(Tensor::from_data(
            TensorData::new(kept, [d_in, d_out]),
            device,
        ));
        self.names_mut()
            .param(&p, name, &[d_out, d_in], Layout::Transposed, init);
        p
    }

    /// A float tensor turned into a parameter by `f` (a reshape, or a reshape and a transposed
    /// view: `layout` says which, so that saving can undo it).
    fn param_with<B: Backend, const S: usize, const D: usize>(
        &mut self,
        name: &str,
        shape: [usize; S],
        init: &Init,
        layout: Layout,
        device: &B::Device,
        f: impl FnOnce(Tensor<B, S>) -> Tensor<B, D>,
    ) -> Param<Tensor<B, D>>
    where
        Self: Sized,
    {
        let values = self.floats(name, &shape, init);
        let t = f(Tensor::from_data(TensorData::new(values, shape), device));
        let p = Param::from_tensor(t);
        self.names_mut().param(&p, name, &shape, layout, init);
        p
    }

    /// A constant (non-trainable, never mapped) buffer, reshaped to `kept`; its values are
    /// recorded for saving.
    fn buffer<B: Backend, const D: usize>(
        &mut self,
        name: &str,
        shape: &[usize],
        kept: [usize; D],
        init: &Init,
        device: &B::Device,
    ) -> Tensor<B, D>
    where
        Self: Sized,
    {
        let values = self.floats(name, shape, init);
        self.names_mut().buffer(name, shape, &values);
        Tensor::from_data(TensorData::new(values, kept), device)
    }

    /// A tensor the module takes but does not keep (written as zeros when saving, or copied
    /// from the file the model came from): see [`Source::unused`].
    fn unkept(&mut self, name: &str, shape: &[usize], init: &Init)
    where
        Self: Sized,
    {
        self.unused(name, shape, init);
        self.names_mut().unkept(name, shape);
    }
}

/// `[rows, cols]` row-major → `[cols, rows]`, in 64×64 tiles (a plain loop misses the cache on
/// every write: 4 % of a base-size `aion-embed` run was this loop).
pub fn transpose(stored: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    assert_eq!(stored.len(), rows * cols, "transpose: {rows}×{cols}");
    transpose_with(rows, cols, |i| stored[i])
}

/// The `[cols, rows]` transpose of the row-major `[rows, cols]` matrix whose element at flat
/// index `i` is `value(i)`, built in 64×64 tiles (a plain loop misses the cache on every
/// write).
pub(crate) fn transpose_with(rows: usize, cols: usize, value: impl Fn(usize) -> f32) -> Vec<f32> {
    const TILE: usize = 64;
    let mut out = vec![0f32; rows * cols];
    for r0 in (0..rows).step_by(TILE) {
        for c0 in (0..cols).step_by(TILE) {
            for r in r0..(r0 + TILE).min(rows) {
                for c in c0..(c0 + TILE).min(cols) {
                    out[c * rows + r] = value(r * cols + c);
                }
            }
        }
    }
    out
}
