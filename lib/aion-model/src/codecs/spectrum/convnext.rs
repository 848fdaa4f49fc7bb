//! 1-D ConvNeXt-V2 encoder and decoder of the spectrum codec.
//!
//! Port of `ConvNextBlock1d`, `ConvNextEncoder1d`, `ConvNextDecoder1d`
//! (`aion/codecs/modules/convnext.py`) and `GRN` / channels-first `LayerNorm`
//! (`aion/codecs/modules/utils.py`) of `polymathic-aion` 0.0.2, themselves adapted from
//! facebookresearch/ConvNeXt-V2. No layer scale and no drop path (the reference has neither).

use burn::module::{Module, Param};
use burn::tensor::Tensor;
use burn::tensor::activation::gelu;
use burn::tensor::backend::Backend;

use crate::nn::{Conv1d, LayerNorm, Linear};
use crate::weights::{Init, Source};

use super::patch::{PatchConv1d, PatchConvTranspose1d};

/// Epsilon of every LayerNorm inside the encoder and decoder.
const LN_EPS: f64 = 1e-6;
/// Epsilon of the GRN denominator.
const GRN_EPS: f64 = 1e-6;

/// Global response normalisation (ConvNeXt-V2) over the **sequence** axis.
#[derive(Module, Debug)]
pub struct Grn<B: Backend> {
    /// `γ` `[1, 1, K]`.
    pub gamma: Param<Tensor<B, 3>>,
    /// `β` `[1, 1, K]`.
    pub beta: Param<Tensor<B, 3>>,
}

impl<B: Backend> Grn<B> {
    /// Loads `<prefix>.gamma` and `<prefix>.beta` (zeros from scratch, as ConvNeXt-V2: the
    /// block starts as the identity plus its input).
    pub fn load(w: &mut impl Source, prefix: &str, k: usize, device: &B::Device) -> Self {
        Self {
            gamma: w.param(&format!("{prefix}.gamma"), [1, 1, k], &Init::Zeros, device),
            beta: w.param(&format!("{prefix}.beta"), [1, 1, k], &Init::Zeros, device),
        }
    }

    /// `G = ‖x‖₂` over N, `Nx = G / (mean_K G + 1e-6)`, `γ·(x·Nx) + β + x`.
    ///
    /// # Shapes
    /// `[B, N, K] -> [B, N, K]`
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let g = x.clone().mul(x.clone()).sum_dim(1).sqrt();
        let nx = g.clone().div(g.mean_dim(2).add_scalar(GRN_EPS));
        let y = x.clone().mul(nx).mul(self.gamma.val());
        y.add(self.beta.val()).add(x)
    }
}

/// One ConvNeXt-V2 block: depthwise conv k7 → LN → Linear ×4 → GELU → GRN → Linear, residual.
#[derive(Module, Debug)]
pub struct Block<B: Backend> {
    dwconv: Conv1d<B>,
    norm: LayerNorm<B>,
    pwconv1: Linear<B>,
    grn: Grn<B>,
    pwconv2: Linear<B>,
}

impl<B: Backend> Block<B> {
    /// Loads the block at `<prefix>` with `c` channels.
    pub fn load(w: &mut impl Source, prefix: &str, c: usize, device: &B::Device) -> Self {
        let p = |leaf: &str| format!("{prefix}.{leaf}");
        Self {
            dwconv: Conv1d::load(w, &p("dwconv"), c, c, 7, 1, 3, c, true, device),
            norm: LayerNorm::load(w, &p("norm"), c, LN_EPS, true, device),
            pwconv1: Linear::load(
                w,
                &p("pwconv1"),
                (c, 4 * c),
                true,
                Init::LeCunUniform,
                device,
            ),
            grn: Grn::load(w, &p("grn"), 4 * c, device),
            pwconv2: Linear::load(
                w,
                &p("pwconv2"),
                (4 * c, c),
                true,
                Init::LeCunUniform,
                device,
            ),
        }
    }

    /// # Shapes
    /// `[B, C, N] -> [B, C, N]`
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let y = self.dwconv.forward(x.clone()).swap_dims(1, 2);
        let y = self.pwconv1.forward(self.norm.forward(y));
        let y = self.pwconv2.forward(self.grn.forward(gelu(y)));
        x.add(y.swap_dims(1, 2))
    }
}

/// A sequence of blocks at one width.
#[derive(Module, Debug)]
pub struct Stage<B: Backend> {
    blocks: Vec<Block<B>>,
}

impl<B: Backend> Stage<B> {
    fn load(w: &mut impl Source, prefix: &str, c: usize, depth: usize, dev: &B::Device) -> Self {
        let blocks = (0..depth)
            .map(|b| Block::load(w, &format!("{prefix}.{b}"), c, dev))
            .collect();
        Self { blocks }
    }

    fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        self.blocks.iter().fold(x, |x, b| b.forward(x))
    }
}

/// A resampling layer: optional channels-first LN, a stride = kernel conv, optional LN.
#[derive(Module, Debug)]
pub struct Resample<B: Backend> {
    pre_norm: Option<LayerNorm<B>>,
    down: Option<PatchConv1d<B>>,
    up: Option<PatchConvTranspose1d<B>>,
    post_norm: Option<LayerNorm<B>>,
}

impl<B: Backend> Resample<B> {
    fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let mut x = x;
        if let Some(n) = &self.pre_norm {
            x = n.forward_channels_first(x);
        }
        if let Some(c) = &self.down {
            x = c.forward(x);
        }
        if let Some(c) = &self.up {
            x = c.forward(x);
        }
        if let Some(n) = &self.post_norm {
            x = n.forward_channels_first(x);
        }
        x
    }
}

/// `ConvNextEncoder1d`: stem (conv k4 s4 + LN), then per stage s ≥ 1 (LN + conv k2 s2), blocks,
/// and a final LN. Downsamples by `4·2^(stages−1)`.
#[derive(Module, Debug)]
pub struct Encoder<B: Backend> {
    resample: Vec<Resample<B>>,
    stages: Vec<Stage<B>>,
    norm: LayerNorm<B>,
}

impl<B: Backend> Encoder<B> {
    /// Loads `<prefix>.{downsample_layers,stages,norm}` for `in_chans` inputs.
    pub fn load(
        w: &mut impl Source,
        prefix: &str,
        in_chans: usize,
        depths: &[usize],
        dims: &[usize],
        dev: &B::Device,
    ) -> Self {
        let mut resample = Vec::new();
        for (s, &c) in dims.iter().enumerate() {
            let p = format!("{prefix}.downsample_layers.{s}");
            resample.push(if s == 0 {
                Resample {
                    pre_norm: None,
                    down: Some(PatchConv1d::load(w, &format!("{p}.0"), in_chans, c, 4, dev)),
                    up: None,
                    post_norm: Some(LayerNorm::load(w, &format!("{p}.1"), c, LN_EPS, true, dev)),
                }
            } else {
                let c0 = dims[s - 1];
                Resample {
                    pre_norm: Some(LayerNorm::load(w, &format!("{p}.0"), c0, LN_EPS, true, dev)),
                    down: Some(PatchConv1d::load(w, &format!("{p}.1"), c0, c, 2, dev)),
                    up: None,
                    post_norm: None,
                }
            });
        }
        let stages = dims
            .iter()
            .zip(depths)
            .enumerate()
            .map(|(s, (&c, &d))| Stage::load(w, &format!("{prefix}.stages.{s}"), c, d, dev))
            .collect();
        let last = *dims.last().expect("at least one stage");
        let norm = LayerNorm::load(w, &format!("{prefix}.norm"), last, LN_EPS, true, dev);
        Self {
            resample,
            stages,
            norm,
        }
    }

    /// # Shapes
    /// `[B, in_chans, P] -> [B, dims[-1], P / (4·2^(stages−1))]`
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let x = self
            .resample
            .iter()
            .zip(&self.stages)
            .fold(x, |x, (r, s)| s.forward(r.forward(x)));
        self.norm.forward_channels_first(x)
    }
}

/// `ConvNextDecoder1d`: stem (transposed conv k2 s2 + LN), then per stage s ≥ 1 (LN + transposed
/// conv, k2 s2 except k4 s4 for the last), blocks. No final norm. Upsamples by `2^(stages+1)`.
#[derive(Module, Debug)]
pub struct Decoder<B: Backend> {
    resample: Vec<Resample<B>>,
    stages: Vec<Stage<B>>,
}

impl<B: Backend> Decoder<B> {
    /// Loads `<prefix>.{upsample_layers,stages}` for `in_chans` inputs.
    pub fn load(
        w: &mut impl Source,
        prefix: &str,
        in_chans: usize,
        depths: &[usize],
        dims: &[usize],
        dev: &B::Device,
    ) -> Self {
        let n = dims.len();
        let mut resample = Vec::new();
        for (s, &c) in dims.iter().enumerate() {
            let p = format!("{prefix}.upsample_layers.{s}");
            resample.push(if s == 0 {
                Resample {
                    pre_norm: None,
                    down: None,
                    up: Some(PatchConvTranspose1d::load(
                        w,
                        &format!("{p}.0"),
                        in_chans,
                        c,
                        2,
                        dev,
                    )),
                    post_norm: Some(LayerNorm::load(w, &format!("{p}.1"), c, LN_EPS, true, dev)),
                }
            } else {
                let c0 = dims[s - 1];
                let k = if s < n - 1 { 2 } else { 4 };
                Resample {
                    pre_norm: Some(LayerNorm::load(w, &format!("{p}.0"), c0, LN_EPS, true, dev)),
                    down: None,
                    up: Some(PatchConvTranspose1d::load(
                        w,
                        &format!("{p}.1"),
                        c0,
                        c,
                        k,
                        dev,
                    )),
                    post_norm: None,
                }
            });
        }
        let stages = dims
            .iter()
            .zip(depths)
            .enumerate()
            .map(|(s, (&c, &d))| Stage::load(w, &format!("{prefix}.stages.{s}"), c, d, dev))
            .collect();
        Self { resample, stages }
    }

    /// # Shapes
    /// `[B, in_chans, N] -> [B, dims[-1], N·2^(stages+1)]`
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        self.resample
            .iter()
            .zip(&self.stages)
            .fold(x, |x, (r, s)| s.forward(r.forward(x)))
    }
}
