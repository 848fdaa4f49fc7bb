//! The segmentation-map codec: a 2-D field (Legacy Survey segmentation map, values in [0, 1]) ⇄
//! 144 tokens (12×12 grid, FSQ 8·5³ = 1000 codes).
//!
//! Port of `aion/codecs/scalar_field.py::ScalarFieldCodec` / `AutoencoderScalarFieldCodec` and
//! of `aion/codecs/modules/convblocks.py::{Encoder2d, Decoder2d, ResBlock, ResLayer}`
//! (`polymathic-aion` 0.0.2): a VQ-VAE-style conv autoencoder. Batch norms run in evaluation
//! mode from their running statistics.
//!
//! Encode: centre crop 96 → three `Conv k4 s2` + ReLU (channel plan `1, E/4, E/2, E`) → 3×3
//! conv → residual layers → 1×1 conv to the FSQ dimension → FSQ tokens (row-major 12×12).
//! Decode: FSQ → 1×1 conv → transposed 3×3 conv → residual layers → three `ReLU → ConvT k4 s2`
//! (channel plan `E, E/4, E/2, 1`: not the mirror of the encoder) → sigmoid → clip to [0, 1].

pub mod config;

use std::path::Path;

use burn::module::Module;
use burn::tensor::activation::{relu, sigmoid};
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor};

pub use config::ScalarFieldConfig;

use crate::codecs::image::preprocess::{CROP, center_crop, check_no_nan};
use crate::error::{Error, Result};
use crate::hub::layout;
use crate::nn::{BatchNorm2d, Conv2d, Conv2dAlgo, ConvTranspose2d};
use crate::quantizers::Fsq;
use crate::weights::{Source, WeightFile};

/// `x + Conv1×1(ReLU(BN(Conv3×3(ReLU(x)))))` (`ResLayer`; leaves `net.1`, `net.2`, `net.4`).
#[derive(Module, Debug)]
pub struct ResLayer<B: Backend> {
    conv: Conv2d<B>,
    norm: BatchNorm2d<B>,
    mix: Conv2d<B>,
}

impl<B: Backend> ResLayer<B> {
    fn load(w: &mut impl Source, prefix: &str, c: usize, hidden: usize, dev: &B::Device) -> Self {
        Self {
            conv: Conv2d::load(w, &format!("{prefix}.net.1"), c, hidden, 3, 1, 1, true, dev),
            norm: BatchNorm2d::load(w, &format!("{prefix}.net.2"), hidden, 1e-5, dev),
            mix: Conv2d::load(w, &format!("{prefix}.net.4"), hidden, c, 1, 1, 0, true, dev),
        }
    }

    /// # Shapes
    /// `[B, C, H, W] -> [B, C, H, W]`
    fn forward(&self, x: Tensor<B, 4>, algo: Conv2dAlgo) -> Tensor<B, 4> {
        let y = self.conv.forward_with(relu(x.clone()), algo);
        let y = self.mix.forward_with(relu(self.norm.forward(y)), algo);
        x + y
    }
}

fn load_res<B: Backend>(
    w: &mut impl Source,
    prefix: &str,
    cfg: &ScalarFieldConfig,
    c: usize,
    dev: &B::Device,
) -> Vec<ResLayer<B>> {
    (0..cfg.num_res_layers)
        .map(|j| ResLayer::load(w, &format!("{prefix}.net.{j}"), c, cfg.res_hidden_dims, dev))
        .collect()
}

/// Channel plan `[first, wide >> (n−1), …, wide >> 1, last]` of `Encoder2d` / `Decoder2d`.
fn plan(first: usize, wide: usize, last: usize, n: usize) -> Vec<usize> {
    let mut dims = vec![first];
    dims.extend((1..n).map(|i| wide >> (n - i)));
    dims.push(last);
    dims
}

/// `Encoder2d(1 → E)`: `n` × (`Conv k4 s2 p1`, ReLU), a 3×3 conv, residual layers.
#[derive(Module, Debug)]
pub struct Encoder2d<B: Backend> {
    downs: Vec<Conv2d<B>>,
    conv: Conv2d<B>,
    res: Vec<ResLayer<B>>,
}

impl<B: Backend> Encoder2d<B> {
    fn load(w: &mut impl Source, cfg: &ScalarFieldConfig, dev: &B::Device) -> Self {
        let (e, n) = (cfg.encoder_output_dim, cfg.num_downsamples);
        let dims = plan(1, e, e, n);
        let net = |i: usize| format!("encoder.net.{i}");
        Self {
            downs: (0..n)
                .map(|i| Conv2d::load(w, &net(2 * i), dims[i], dims[i + 1], 4, 2, 1, true, dev))
                .collect(),
            conv: Conv2d::load(w, &net(2 * n), e, e, 3, 1, 1, true, dev),
            res: load_res(w, &net(2 * n + 1), cfg, e, dev),
        }
    }

    /// # Shapes
    /// `[B, 1, 96, 96] -> [B, E, 96/2^n, 96/2^n]`
    fn forward(&self, x: Tensor<B, 4>, algo: Conv2dAlgo) -> Tensor<B, 4> {
        let x = self
            .downs
            .iter()
            .fold(x, |x, c| relu(c.forward_with(x, algo)));
        let x = self.conv.forward_with(x, algo);
        self.res.iter().fold(x, |x, r| r.forward(x, algo))
    }
}

/// `Decoder2d(D → 1)`: a transposed 3×3 conv, residual layers, `n` × (ReLU, `ConvT k4 s2 p1`).
#[derive(Module, Debug)]
pub struct Decoder2d<B: Backend> {
    conv: ConvTranspose2d<B>,
    res: Vec<ResLayer<B>>,
    ups: Vec<ConvTranspose2d<B>>,
}

impl<B: Backend> Decoder2d<B> {
    fn load(w: &mut impl Source, cfg: &ScalarFieldConfig, dev: &B::Device) -> Self {
        let (d, n) = (cfg.decoder_dim(), cfg.num_downsamples);
        let dims = plan(d, d, 1, n);
        let net = |i: usize| format!("decoder.net.{i}");
        Self {
            conv: ConvTranspose2d::load(w, &net(0), d, d, 3, 1, 1, true, dev),
            res: load_res(w, &net(1), cfg, d, dev),
            ups: (0..n)
                .map(|i| {
                    ConvTranspose2d::load(
                        w,
                        &net(3 + 2 * i),
                        dims[i],
                        dims[i + 1],
                        4,
                        2,
                        1,
                        true,
                        dev,
                    )
                })
                .collect(),
        }
    }

    /// # Shapes
    /// `[B, D, g, g] -> [B, 1, g·2^n, g·2^n]`
    fn forward(&self, x: Tensor<B, 4>, algo: Conv2dAlgo) -> Tensor<B, 4> {
        let x = self
            .res
            .iter()
            .fold(self.conv.forward(x), |x, r| r.forward(x, algo));
        self.ups.iter().fold(x, |x, up| up.forward(relu(x)))
    }
}

/// The segmentation-map codec with its weights.
#[derive(Module, Debug)]
pub struct ScalarFieldCodec<B: Backend> {
    encoder: Encoder2d<B>,
    decoder: Decoder2d<B>,
    encode_proj: Conv2d<B>,
    decode_proj: Conv2d<B>,
    fsq: Fsq,
    config: ScalarFieldConfig,
    algo: Conv2dAlgo,
}

impl<B: Backend> ScalarFieldCodec<B> {
    /// Loads `config.json` and `model.safetensors` from a codec folder
    /// (`codecs/segmentation_map/`), strictly (see [`crate::weights::WeightFile`]).
    pub fn load(dir: &Path, device: &B::Device) -> Result<Self> {
        let config = ScalarFieldConfig::from_file(&layout::config(dir))?;
        let mut w = WeightFile::open(layout::weights(dir))?;
        let codec = Self::from_weights(config, &mut w, device)?;
        w.finish()?;
        Ok(codec)
    }

    /// Builds the codec from an open weight file (the caller calls [`WeightFile::finish`]), or
    /// any [`Source`]: the one description of its weights. With `ema_model_weights`, the `ema.*`
    /// copy is skipped (the reference encodes and decodes with the live weights).
    pub fn from_weights(
        config: ScalarFieldConfig,
        w: &mut impl Source,
        dev: &B::Device,
    ) -> Result<Self> {
        let fsq = Fsq::load(w, "_quantizer", &config.levels)?;
        if config.ema_model_weights {
            w.ignore_prefix("ema.");
        }
        let (e, d, emb) = (
            config.encoder_output_dim,
            config.decoder_dim(),
            config.embedding(),
        );
        Ok(Self {
            encoder: Encoder2d::load(w, &config, dev),
            decoder: Decoder2d::load(w, &config, dev),
            encode_proj: Conv2d::load(w, "encode_proj", e, emb, 1, 1, 0, true, dev),
            decode_proj: Conv2d::load(w, "decode_proj", emb, d, 1, 1, 0, true, dev),
            fsq,
            algo: Conv2dAlgo::for_backend::<B>(dev),
            config,
        })
    }

    /// The configuration it was loaded with.
    pub fn config(&self) -> &ScalarFieldConfig {
        &self.config
    }

    /// The FSQ quantizer.
    pub fn quantizer(&self) -> &Fsq {
        &self.fsq
    }

    /// Overrides the convolution strategy (same result up to float rounding).
    pub fn set_conv_algo(&mut self, algo: Conv2dAlgo) {
        self.algo = algo;
    }

    /// `Encoder2d` on the centre crop.
    ///
    /// # Shapes
    /// `field [B, H, W]` (H, W ≥ 96) `-> [B, E, 12, 12]`
    pub fn encoder_out(&self, field: Tensor<B, 3>) -> Result<Tensor<B, 4>> {
        let x = center_crop(field.unsqueeze_dim::<4>(1), CROP)?;
        check_no_nan(&x)?;
        Ok(self.encoder.forward(x, self.algo))
    }

    /// Latents before quantization.
    ///
    /// # Shapes
    /// `field [B, H, W] -> [B, D, 144]`
    pub fn pre_quant(&self, field: Tensor<B, 3>) -> Result<Tensor<B, 3>> {
        let z = self
            .encode_proj
            .forward_with(self.encoder_out(field)?, self.algo);
        let [b, d, h, w] = z.dims();
        Ok(z.reshape([b, d, h * w]))
    }

    /// Tokens of a batch of fields.
    ///
    /// # Shapes
    /// `field [B, H, W] -> [B, 144]`
    pub fn encode(&self, field: Tensor<B, 3>) -> Result<Tensor<B, 2, Int>> {
        Ok(self.fsq.encode(self.pre_quant(field)?))
    }

    /// Fields of a batch of tokens, in [0, 1].
    ///
    /// # Shapes
    /// `tokens [B, 144] -> [B, 96, 96]`
    pub fn decode(&self, tokens: Tensor<B, 2, Int>) -> Result<Tensor<B, 3>> {
        let g = self.config.grid();
        let [b, n] = tokens.dims();
        if n != g * g {
            return Err(Error::Input(format!(
                "expected {} segmap tokens per row, got {n}",
                g * g
            )));
        }
        self.fsq.check_tokens(&tokens)?;
        let z = self.fsq.decode(tokens);
        let d = z.dims()[1];
        let h = self
            .decode_proj
            .forward_with(z.reshape([b, d, g, g]), self.algo);
        let x = self.decoder.forward(h, self.algo);
        let mut y = if self.config.sigmoid_output().unwrap_or(true) {
            sigmoid(x)
        } else {
            x
        };
        if let Some(ext) = self.config.output_activation_extension {
            y = y.mul_scalar(1.0 + 2.0 * ext).sub_scalar(ext);
        }
        let [_, _, h, w] = y.dims();
        Ok(y.clamp(0.0, 1.0).reshape([b, h, w]))
    }
}
