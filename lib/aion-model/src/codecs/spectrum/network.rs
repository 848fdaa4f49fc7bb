//! The learned part of the spectrum codec: ConvNeXt encoder → LayerNorm → 1×1 conv to the LFQ
//! dimension, and 1×1 conv → ConvNeXt decoder.
//!
//! Port of the `pre_quant_norm`, `quant_conv`, `post_quant_conv` path of
//! `AutoencoderSpectrumCodec` (`aion/codecs/spectrum.py`, `polymathic-aion` 0.0.2).

use burn::module::Module;
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;

use crate::nn::{Conv1d, LayerNorm};
use crate::weights::Source;

use super::config::SpectrumConfig;
use super::convnext::{Decoder, Encoder};

/// Epsilon of `pre_quant_norm` (a plain `torch.nn.LayerNorm`, unlike the 1e-6 of the blocks).
const PRE_QUANT_EPS: f64 = 1e-5;

/// Encoder and decoder networks with their quantizer-side projections.
#[derive(Module, Debug)]
pub struct SpectrumNetwork<B: Backend> {
    encoder: Encoder<B>,
    pre_quant_norm: LayerNorm<B>,
    quant_conv: Conv1d<B>,
    post_quant_conv: Conv1d<B>,
    decoder: Decoder<B>,
}

impl<B: Backend> SpectrumNetwork<B> {
    /// Loads every learned tensor of the codec (names as in the reference `state_dict`).
    pub fn load(w: &mut impl Source, cfg: &SpectrumConfig, device: &B::Device) -> Self {
        let (lat, emb) = (cfg.latent_channels, cfg.embedding_dim);
        Self {
            encoder: Encoder::load(
                w,
                "encoder",
                2,
                &cfg.encoder_depths,
                &cfg.encoder_dims,
                device,
            ),
            pre_quant_norm: LayerNorm::load(w, "pre_quant_norm", lat, PRE_QUANT_EPS, true, device),
            quant_conv: Conv1d::load(w, "quant_conv", lat, emb, 1, 1, 0, 1, true, device),
            post_quant_conv: Conv1d::load(w, "post_quant_conv", emb, lat, 1, 1, 0, 1, true, device),
            decoder: Decoder::load(
                w,
                "decoder",
                lat,
                &cfg.decoder_depths,
                &cfg.decoder_dims,
                device,
            ),
        }
    }

    /// Pre-quantisation latents of `asinh`-compressed (flux, istd) on the latent grid.
    ///
    /// # Shapes
    /// `[B, 2, P] -> [B, embedding_dim, P / 32]`
    pub fn encode(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let h = self.encoder.forward(x);
        let h = self.pre_quant_norm.forward_channels_first(h);
        self.quant_conv.forward(h)
    }

    /// Decoder output (normalised flux, before the de-normalisation) of code vectors.
    ///
    /// # Shapes
    /// `[B, embedding_dim, N] -> [B, N·32]`
    pub fn decode(&self, codes: Tensor<B, 3>) -> Tensor<B, 2> {
        let h = self.post_quant_conv.forward(codes);
        self.decoder.forward(h).squeeze_dim(1)
    }
}
