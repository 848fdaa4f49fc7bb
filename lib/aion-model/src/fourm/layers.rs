//! 4M's conventions for the layers every part of the transformer builds (blocks, attention,
//! embeddings, the model's own norms): how linear weights are initialised and how LayerNorms
//! are loaded.

use burn::module::Param;
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;

use crate::config::AionConfig;
use crate::nn::LayerNorm;
use crate::weights::{Init, Source};

/// 4M's initialisation of linear weights: Xavier-uniform, packed projections (`qkv`, `kv`) as
/// separate `D×D` blocks.
pub(crate) fn xavier(packed: usize) -> Init {
    Init::XavierUniform { packed }
}

/// 4M's LayerNorm (eps 1e-6). Its `bias` is always in the file: a parameter when `norm_bias`,
/// otherwise a persistent buffer (zeros when trained) that the reference still adds; it is
/// loaded either way and, as a buffer, excluded from gradients.
pub(crate) fn norm<B: Backend>(
    w: &mut impl Source,
    prefix: &str,
    d: usize,
    cfg: &AionConfig,
    device: &B::Device,
) -> LayerNorm<B> {
    let mut ln = LayerNorm::load(w, prefix, d, 1e-6, true, device);
    if !cfg.norm_bias {
        ln.bias = ln
            .bias
            .map(|b: Param<Tensor<B, 1>>| b.set_require_grad(false));
    }
    ln
}
