//! The 4M encoder–decoder transformer of AION-1.
//!
//! Port of `aion/model.py::AION` and `aion/fourm/fm.py::{FourM, FM}` (polymathic-aion 0.0.2),
//! inference path (aion-spec §3): token ids of several modalities are embedded, concatenated,
//! partitioned so that masked tokens go last, cut to `num_encoder_tokens`, and encoded; the
//! context (`decoder_proj_context(encoder output) + embeddings`) is what `AION.encode` returns.
//! The decoder turns one learned mask token per requested target position into logits.
//!
//! Every module is a burn [`Module`](burn::module::Module) with [`Param`](burn::module::Param)
//! weights, so the autodiff backend can fine-tune it; position tables and the LayerNorm bias
//! buffers of `norm_bias = false` models are not trainable.
//!
//! Module map: [`embeddings`] (per-modality tables and heads), [`attention`], [`block`],
//! [`Aion`] itself, and [`generate`] (the iterative sampler: MaskGIT, ROAR, single pass).

pub mod attention;
pub mod block;
pub mod embeddings;
pub mod generate;

mod assemble;
mod layers;
mod model;

use burn::tensor::backend::Backend;
use burn::tensor::{Bool, Int, Tensor};

use crate::modality::Modality;

pub use model::Aion;

/// The tokens of one input modality for a batch of objects.
#[derive(Debug, Clone)]
pub struct TokenInput<B: Backend> {
    /// The modality (its token key must be in the model's `domains_in`).
    pub modality: Modality,
    /// Token ids `[B, N]`; `N` is the modality's token count (any `1..=512` for the catalog).
    pub ids: Tensor<B, 2, Int>,
    /// Optional `[B, N]` mask, true = leave this token out (a missing modality is a row of
    /// trues).
    pub mask: Option<Tensor<B, 2, Bool>>,
}

impl<B: Backend> TokenInput<B> {
    /// An input without mask.
    pub fn new(modality: impl Into<Modality>, ids: Tensor<B, 2, Int>) -> Self {
        Self {
            modality: modality.into(),
            ids,
            mask: None,
        }
    }

    /// The same input with a mask (true = leave out).
    pub fn with_mask(self, mask: Tensor<B, 2, Bool>) -> Self {
        Self {
            mask: Some(mask),
            ..self
        }
    }
}

/// The encoder output, as `AION.encode` returns it, with its padding mask.
#[derive(Debug, Clone)]
pub struct Encoded<B: Backend> {
    /// Context vectors `[B, K, D]`: `decoder_proj_context(encoder_norm(…)) + embeddings`.
    /// Per row, the non-masked tokens come first in input order, then the masked ones; masked
    /// positions hold values too (the reference returns them as well).
    pub context: Tensor<B, 3>,
    /// `[B, K]`, true where the position is a masked token (the attention key mask).
    pub mask: Tensor<B, 2, Bool>,
    /// `[B, K]` modality id ([`ModalityInfo::id`]) of each position, −1 where masked.
    pub modality: Tensor<B, 2, Int>,
}

/// The pooled embedding of one object: the mean of its context vectors over its valid tokens,
/// accumulated in f64 in token order. `context` is the row's `[K, D]` block of
/// [`Encoded::context`], `masked` its `[K]` row of [`Encoded::mask`]; `out` gets the `D` means,
/// NaN when no token is valid. What [`Aion::embed`] returns and `aion-embed` writes.
pub fn pool_mean(context: &[f32], masked: &[bool], out: &mut [f32]) {
    let d = out.len();
    let mut acc = vec![0f64; d];
    let mut n = 0usize;
    for (t, &m) in masked.iter().enumerate() {
        if !m {
            n += 1;
            for (a, &v) in acc.iter_mut().zip(&context[t * d..(t + 1) * d]) {
                *a += f64::from(v);
            }
        }
    }
    for (o, a) in out.iter_mut().zip(acc) {
        *o = if n == 0 {
            f32::NAN
        } else {
            (a / n as f64) as f32
        };
    }
}

/// How [`Aion::predict`] treats several targets requested together.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DecoderMode {
    /// Reproduces the reference: `AION.forward` builds a decoder self-attention mask that is
    /// true everywhere, so every decoder token receives the mean of the values of *all*
    /// requested target tokens, and targets influence each other (aion-spec §3.5, §6.1).
    #[default]
    Joint,
    /// Each target decoded as if it had been requested alone (self-attention averages over the
    /// target's own tokens only), in one pass.
    Independent,
}
