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

use std::path::Path;

use burn::module::Module;
use burn::tensor::activation::{relu, sigmoid};
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor};
use serde::Deserialize;

use crate::codecs::image::preprocess::{CROP, center_crop, check_no_nan};
use crate::error::{Error, Result};
use crate::nn::{BatchNorm2d, Conv2d, Conv2dAlgo, ConvTranspose2d};
use crate::quantizers::Fsq;
use crate::weights::WeightFile;

/// `config.json` of the codec: the `ScalarFieldCodec` constructor arguments. Training-only
/// arguments are accepted and ignored; unknown keys are an error.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScalarFieldConfig {
    /// Encoder output channels `E` (the released value is only known from `config.json`).
    pub encoder_output_dim: usize,
    /// Decoder channels (`None` or 0: `E`).
    #[serde(default)]
    pub decoder_input_dim: Option<usize>,
    /// Latent channels fed to FSQ (`None` or 0: `E`; must equal the number of levels).
    #[serde(default)]
    pub embedding_dim: Option<usize>,
    /// Hidden channels of the residual layers.
    #[serde(default = "defaults::res_hidden_dims")]
    pub res_hidden_dims: usize,
    /// Residual layers in the encoder and in the decoder.
    #[serde(default = "defaults::num_res_layers")]
    pub num_res_layers: usize,
    /// 2× down-samplings (96 → 12 for 3).
    #[serde(default = "defaults::num_downsamples")]
    pub num_downsamples: usize,
    /// Variational mode (not supported: its latents cannot be FSQ-quantized by the reference).
    #[serde(default)]
    pub variational: bool,
    /// `d` in `(1 + 2d)·sigmoid(x) − d` (none: plain sigmoid).
    #[serde(default)]
    pub output_activation_extension: Option<f64>,
    /// FSQ levels.
    #[serde(default = "defaults::levels")]
    pub levels: Vec<u32>,
    /// Whether the weights hold an EMA copy (`ema.*`, unused at inference and skipped).
    #[serde(default)]
    pub ema_model_weights: bool,
    #[serde(default, rename = "lr")]
    _lr: Option<serde_json::Value>,
    #[serde(default, rename = "lr_warmup")]
    _lr_warmup: Option<serde_json::Value>,
    #[serde(default, rename = "begin_cosine_annealing")]
    _begin_cosine_annealing: Option<serde_json::Value>,
    #[serde(default, rename = "lr_cosine_period")]
    _lr_cosine_period: Option<serde_json::Value>,
    #[serde(default, rename = "ema_decay")]
    _ema_decay: Option<serde_json::Value>,
    #[serde(default, rename = "ema_update_freq")]
    _ema_update_freq: Option<serde_json::Value>,
    #[serde(default, rename = "quantisation_loss_weight")]
    _quantisation_loss_weight: Option<serde_json::Value>,
}

mod defaults {
    pub fn res_hidden_dims() -> usize {
        64
    }
    pub fn num_res_layers() -> usize {
        2
    }
    pub fn num_downsamples() -> usize {
        3
    }
    pub fn levels() -> Vec<u32> {
        vec![8, 5, 5, 5]
    }
}

impl ScalarFieldConfig {
    /// Parses and checks a `config.json`.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let cfg: Self =
            serde_json::from_str(&text).map_err(|e| Error::config(path, e.to_string()))?;
        cfg.validate().map_err(|m| Error::config(path, m))?;
        Ok(cfg)
    }

    fn validate(&self) -> std::result::Result<(), String> {
        let (e, n) = (self.encoder_output_dim, self.num_downsamples);
        if self.variational {
            return Err("variational codecs are not supported".into());
        }
        if n == 0 || n > 5 || !CROP.is_multiple_of(1 << n) {
            return Err(format!(
                "num_downsamples = {n}: 96 must be divisible by 2^n, n ≥ 1"
            ));
        }
        if e >> (n - 1) == 0 || self.decoder_dim() >> (n - 1) == 0 || self.res_hidden_dims == 0 {
            return Err(format!("channel counts too small for {n} down-samplings"));
        }
        if self.embedding() != self.levels.len() {
            return Err(format!(
                "embedding_dim = {} but {} FSQ levels",
                self.embedding(),
                self.levels.len()
            ));
        }
        Fsq::new(&self.levels).map_err(|e| e.to_string())?;
        Ok(())
    }

    /// Decoder channels (`decoder_input_dim or encoder_output_dim`).
    pub fn decoder_dim(&self) -> usize {
        self.decoder_input_dim
            .filter(|&d| d > 0)
            .unwrap_or(self.encoder_output_dim)
    }

    /// Latent channels (`embedding_dim or encoder_output_dim`).
    pub fn embedding(&self) -> usize {
        self.embedding_dim
            .filter(|&d| d > 0)
            .unwrap_or(self.encoder_output_dim)
    }

    /// Side of the token grid (12).
    pub fn grid(&self) -> usize {
        CROP >> self.num_downsamples
    }
}

/// `x + Conv1×1(ReLU(BN(Conv3×3(ReLU(x)))))` (`ResLayer`; leaves `net.1`, `net.2`, `net.4`).
#[derive(Module, Debug)]
pub struct ResLayer<B: Backend> {
    conv: Conv2d<B>,
    norm: BatchNorm2d<B>,
    mix: Conv2d<B>,
}

impl<B: Backend> ResLayer<B> {
    fn load(w: &mut WeightFile, prefix: &str, c: usize, hidden: usize, dev: &B::Device) -> Self {
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
    w: &mut WeightFile,
    prefix: &str,
    cfg: &ScalarFieldConfig,
    c: usize,
    dev: &B::Device,
) -> Vec<ResLayer<B>> {
    (0..cfg.num_res_layers)
        .map(|j| ResLayer::load(w, &format!("{prefix}.net.{j}"), c, cfg.res_hidden_dims, dev))
        .collect()
}

/// Channel plan `[first, last >> (n−1), …, last >> 1, last_out]` of `Encoder2d` / `Decoder2d`.
fn plan(first: usize, wide: usize, last: usize, n: usize) -> Vec<usize> {
    let mut dims = vec![first];
    dims.extend((1..n).map(|i| wide >> (n - i)));
    dims.push(last);
    dims
}

/// The segmentation-map codec with its weights.
#[derive(Module, Debug)]
pub struct ScalarFieldCodec<B: Backend> {
    downs: Vec<Conv2d<B>>,
    enc_conv: Conv2d<B>,
    enc_res: Vec<ResLayer<B>>,
    encode_proj: Conv2d<B>,
    decode_proj: Conv2d<B>,
    dec_conv: ConvTranspose2d<B>,
    dec_res: Vec<ResLayer<B>>,
    ups: Vec<ConvTranspose2d<B>>,
    fsq: Fsq,
    config: ScalarFieldConfig,
    algo: Conv2dAlgo,
}

impl<B: Backend> ScalarFieldCodec<B> {
    /// Loads `config.json` and `model.safetensors` from a codec folder
    /// (`codecs/segmentation_map/`), strictly (see [`crate::weights::WeightFile`]).
    pub fn load(dir: &Path, device: &B::Device) -> Result<Self> {
        let config = ScalarFieldConfig::from_file(&dir.join("config.json"))?;
        let mut w = WeightFile::open(dir.join("model.safetensors"))?;
        let codec = Self::from_weights(config, &mut w, device)?;
        w.finish()?;
        Ok(codec)
    }

    /// Builds the codec from an open weight file (the caller calls [`WeightFile::finish`]).
    pub fn from_weights(
        config: ScalarFieldConfig,
        w: &mut WeightFile,
        dev: &B::Device,
    ) -> Result<Self> {
        let fsq = Fsq::new(&config.levels)?;
        if !w.contains("_quantizer.levels") && w.contains("quantizer.levels") {
            w.alias("_quantizer.levels", "quantizer.levels");
        }
        let stored = w.i64s("_quantizer.levels", &[fsq.dim()]);
        if !w.has_problems() {
            fsq.check_levels_buffer(&stored)
                .map_err(|e| Error::config(w.path(), e.to_string()))?;
        }
        if config.ema_model_weights {
            let ema: Vec<String> = w
                .names()
                .filter(|n| n.starts_with("ema."))
                .map(String::from)
                .collect();
            ema.iter().for_each(|n| w.skip(n));
        }
        let (e, d, n) = (
            config.encoder_output_dim,
            config.decoder_dim(),
            config.num_downsamples,
        );
        let emb = config.embedding();
        let enc_plan = plan(1, e, e, n);
        let downs = (0..n)
            .map(|i| {
                let p = format!("encoder.net.{}", 2 * i);
                Conv2d::load(w, &p, enc_plan[i], enc_plan[i + 1], 4, 2, 1, true, dev)
            })
            .collect();
        let dec_plan = plan(d, d, 1, n);
        let ups = (0..n)
            .map(|i| {
                let p = format!("decoder.net.{}", 3 + 2 * i);
                ConvTranspose2d::load(w, &p, dec_plan[i], dec_plan[i + 1], 4, 2, 1, true, dev)
            })
            .collect();
        Ok(Self {
            downs,
            enc_conv: Conv2d::load(
                w,
                &format!("encoder.net.{}", 2 * n),
                e,
                e,
                3,
                1,
                1,
                true,
                dev,
            ),
            enc_res: load_res(w, &format!("encoder.net.{}", 2 * n + 1), &config, e, dev),
            encode_proj: Conv2d::load(w, "encode_proj", e, emb, 1, 1, 0, true, dev),
            decode_proj: Conv2d::load(w, "decode_proj", emb, d, 1, 1, 0, true, dev),
            dec_conv: ConvTranspose2d::load(w, "decoder.net.0", d, d, 3, 1, 1, true, dev),
            dec_res: load_res(w, "decoder.net.1", &config, d, dev),
            ups,
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
        let x = self
            .downs
            .iter()
            .fold(x, |x, c| relu(c.forward_with(x, self.algo)));
        let x = self.enc_conv.forward_with(x, self.algo);
        Ok(self.enc_res.iter().fold(x, |x, r| r.forward(x, self.algo)))
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
        let x = self
            .decode_proj
            .forward_with(z.reshape([b, d, g, g]), self.algo);
        let x = self
            .dec_res
            .iter()
            .fold(self.dec_conv.forward(x), |x, r| r.forward(x, self.algo));
        let x = self.ups.iter().fold(x, |x, up| up.forward(relu(x)));
        let mut y = sigmoid(x);
        if let Some(ext) = self.config.output_activation_extension {
            y = y.mul_scalar(1.0 + 2.0 * ext).sub_scalar(ext);
        }
        let [_, _, h, w] = y.dims();
        Ok(y.clamp(0.0, 1.0).reshape([b, h, w]))
    }
}
