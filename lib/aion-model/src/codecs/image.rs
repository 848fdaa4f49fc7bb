//! The image codec: multi-band survey cutouts ⇄ 576 tokens (24×24 grid, FSQ 7·5⁴ = 4375 codes).
//!
//! Port of `aion/codecs/image.py::ImageCodec` / `AutoencoderImageCodec` (`polymathic-aion`
//! 0.0.2); the network is in [`magvit`], the preprocessing in [`preprocess`], the bands in
//! [`band`].
//!
//! Encode: centre crop 96×96 → clamp per band → survey rescale (decided by the first band, as
//! in the reference) → `0.1·asinh(100x)` → 9 band slots → `SubsampledLinear` 9 → 54 → MagViT
//! encoder → 1×1 conv to the FSQ dimension → FSQ tokens (row-major over the 24×24 grid).
//!
//! Deliberate differences from the reference (which crashes or misbehaves there):
//! - the caller's tensor is never modified (the reference clamps and rescales it in place);
//! - decoding with HSC bands multiplies back by `10^1.8` (the reference raises
//!   `AttributeError` in `RescaleToLegacySurvey.backward`);
//! - [`ImageCodec::decode_all`] decodes all 9 slots, each in its own survey's units (the
//!   reference's `bands=None` crashes for the same reason);
//! - bad input is an [`Error`]: images under 96×96, band count ≠ channel count, duplicate or
//!   empty band lists, NaN pixels in the crop, out-of-range tokens.

pub mod band;
pub mod magvit;
pub mod preprocess;

use std::path::Path;

use burn::module::Module;
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor};
use serde::{Deserialize, Serialize};

pub use band::{Band, Survey};
use magvit::{MagVitDecoder, MagVitEncoder, MagVitShape};
use preprocess::{CROP, SubsampledLinear};

use crate::error::{Error, Result};
use crate::hub::layout;
use crate::nn::{Conv2d, Conv2dAlgo};
use crate::quantizers::Fsq;
use crate::weights::{Source, WeightFile};

/// `config.json` of the image codec: the `ImageCodec` constructor arguments (defaults as in
/// 0.0.2). Unknown keys are an error.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageCodecConfig {
    /// FSQ levels per latent channel (released: `[7, 5, 5, 5, 5]`).
    pub quantizer_levels: Vec<u32>,
    /// Bottleneck channels of the MagViT network.
    #[serde(default = "defaults::hidden_dims")]
    pub hidden_dims: usize,
    /// Channels of the multi-survey projection (network input / output).
    #[serde(default = "defaults::projection")]
    pub multisurvey_projection_dims: usize,
    /// Number of 2× down-samplings (96 → 24 for 2).
    #[serde(default = "defaults::n_compressions")]
    pub n_compressions: usize,
    /// Residual units per stage.
    #[serde(default = "defaults::num_consecutive")]
    pub num_consecutive: usize,
    /// Latent channels fed to FSQ (must equal the number of levels).
    #[serde(default = "defaults::embedding_dim")]
    pub embedding_dim: usize,
    /// `f` in `asinh(x/f)·f·m`.
    #[serde(default = "defaults::range_compression_factor")]
    pub range_compression_factor: f64,
    /// `m` in `asinh(x/f)·f·m`.
    #[serde(default = "defaults::mult_factor")]
    pub mult_factor: f64,
}

mod defaults {
    pub fn hidden_dims() -> usize {
        512
    }
    pub fn projection() -> usize {
        54
    }
    pub fn n_compressions() -> usize {
        2
    }
    pub fn num_consecutive() -> usize {
        4
    }
    pub fn embedding_dim() -> usize {
        5
    }
    pub fn range_compression_factor() -> f64 {
        0.01
    }
    pub fn mult_factor() -> f64 {
        10.0
    }
}

impl ImageCodecConfig {
    /// The released codec's configuration (aion-spec §2.1: FSQ `[7, 5, 5, 5, 5]`, 512 hidden
    /// channels, 4 residual units per stage; 70 M parameters).
    pub fn released() -> Self {
        Self {
            quantizer_levels: vec![7, 5, 5, 5, 5],
            hidden_dims: defaults::hidden_dims(),
            multisurvey_projection_dims: defaults::projection(),
            n_compressions: defaults::n_compressions(),
            num_consecutive: defaults::num_consecutive(),
            embedding_dim: defaults::embedding_dim(),
            range_compression_factor: defaults::range_compression_factor(),
            mult_factor: defaults::mult_factor(),
        }
    }

    /// The released architecture at test size: 32 hidden channels, 2 residual units per
    /// stage (the parity fixture's; same inputs and tokens as the released codec).
    pub fn tiny() -> Self {
        Self {
            hidden_dims: 32,
            num_consecutive: 2,
            ..Self::released()
        }
    }

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
        let n = self.n_compressions;
        if n > 5 || !CROP.is_multiple_of(1 << n) {
            return Err(format!("n_compressions = {n}: 96 must be divisible by 2^n"));
        }
        if self.hidden_dims == 0 || !self.hidden_dims.is_multiple_of(1 << n) {
            return Err(format!(
                "hidden_dims = {} must be a positive multiple of 2^n_compressions",
                self.hidden_dims
            ));
        }
        if self.embedding_dim != self.quantizer_levels.len() {
            return Err(format!(
                "embedding_dim = {} but {} quantizer levels",
                self.embedding_dim,
                self.quantizer_levels.len()
            ));
        }
        if self.multisurvey_projection_dims == 0 {
            return Err("multisurvey_projection_dims must be positive".into());
        }
        if !(self.range_compression_factor > 0.0 && self.mult_factor.is_finite()) {
            return Err("range_compression_factor must be positive".into());
        }
        Fsq::new(&self.quantizer_levels).map_err(|e| e.to_string())?;
        Ok(())
    }

    /// The MagViT network's shape.
    pub fn magvit(&self) -> MagVitShape {
        MagVitShape {
            n_bands: self.multisurvey_projection_dims,
            hidden_dims: self.hidden_dims,
            n_compressions: self.n_compressions,
            num_consecutive: self.num_consecutive,
        }
    }

    /// Side of the token grid: `96 / 2^n_compressions` (24).
    pub fn grid(&self) -> usize {
        CROP >> self.n_compressions
    }

    /// Tokens per image (576).
    pub fn num_tokens(&self) -> usize {
        self.grid() * self.grid()
    }
}

/// Every intermediate of an encode, for validation against the reference.
#[derive(Debug, Clone)]
pub struct ImageEncoding<B: Backend> {
    /// After crop, clamp, survey rescale and range compression `[B, nb, 96, 96]`.
    pub range_compressed: Tensor<B, 4>,
    /// Written into the 9 band slots `[B, 9, 96, 96]`.
    pub padded: Tensor<B, 4>,
    /// Which slots are present (same for every row).
    pub channel_mask: [bool; 9],
    /// After `subsample_in` `[B, 54, 96, 96]`.
    pub subsampled: Tensor<B, 4>,
    /// MagViT encoder output `[B, hidden_dims, 24, 24]`.
    pub encoder_out: Tensor<B, 4>,
    /// After `pre_quant_proj`, flattened `[B, D, 576]`.
    pub pre_quant: Tensor<B, 3>,
    /// FSQ levels normalised to `[-1, 1]` `[B, D, 576]`.
    pub quantized: Tensor<B, 3>,
    /// Tokens `[B, 576]`.
    pub tokens: Tensor<B, 2, Int>,
}

/// The image codec with its weights.
#[derive(Module, Debug)]
pub struct ImageCodec<B: Backend> {
    subsample_in: SubsampledLinear<B>,
    subsample_out: SubsampledLinear<B>,
    pre_quant_proj: Conv2d<B>,
    post_quant_proj: Conv2d<B>,
    encoder: MagVitEncoder<B>,
    decoder: MagVitDecoder<B>,
    fsq: Fsq,
    config: ImageCodecConfig,
    algo: Conv2dAlgo,
}

impl<B: Backend> ImageCodec<B> {
    /// Loads `config.json` and `model.safetensors` from a codec folder (`codecs/image/`).
    ///
    /// Loading is strict: every tensor of the reference state dict must be present with its
    /// shape, and nothing else may be in the file; the stored FSQ `levels` buffer (under
    /// `_quantizer.` or `quantizer.`) must equal `quantizer_levels`.
    pub fn load(dir: &Path, device: &B::Device) -> Result<Self> {
        let config = ImageCodecConfig::from_file(&layout::config(dir))?;
        let mut w = WeightFile::open(layout::weights(dir))?;
        let codec = Self::from_weights(config, &mut w, device)?;
        w.finish()?;
        Ok(codec)
    }

    /// Builds the codec from an open weight file (the caller calls [`WeightFile::finish`]), or
    /// from any [`Source`]: the one description of the codec's weights.
    pub fn from_weights(
        config: ImageCodecConfig,
        w: &mut impl Source,
        device: &B::Device,
    ) -> Result<Self> {
        let fsq = Fsq::load(w, "_quantizer", &config.quantizer_levels)?;
        let (slots, proj) = (Band::SLOTS, config.multisurvey_projection_dims);
        let (hidden, emb) = (config.hidden_dims, config.embedding_dim);
        let shape = config.magvit();
        Ok(Self {
            subsample_in: SubsampledLinear::load(w, "subsample_in", slots, proj, device),
            subsample_out: SubsampledLinear::load(w, "subsample_out", proj, slots, device),
            pre_quant_proj: Conv2d::load(w, "pre_quant_proj", hidden, emb, 1, 1, 0, true, device),
            post_quant_proj: Conv2d::load(w, "post_quant_proj", emb, hidden, 1, 1, 0, true, device),
            encoder: MagVitEncoder::load(w, "model", &shape, device),
            decoder: MagVitDecoder::load(w, "model", &shape, device),
            fsq,
            algo: Conv2dAlgo::for_backend::<B>(device),
            config,
        })
    }

    /// The configuration it was loaded with.
    pub fn config(&self) -> &ImageCodecConfig {
        &self.config
    }

    /// The FSQ quantizer.
    pub fn quantizer(&self) -> &Fsq {
        &self.fsq
    }

    /// How convolutions are evaluated (chosen per backend at load time).
    pub fn conv_algo(&self) -> Conv2dAlgo {
        self.algo
    }

    /// Overrides the convolution strategy (both give the same result up to float rounding).
    pub fn set_conv_algo(&mut self, algo: Conv2dAlgo) {
        self.algo = algo;
    }

    /// Tokens of a batch of cutouts.
    ///
    /// `flux` is in the survey's units (HSC counts at zero point 27, or DES / Legacy Survey
    /// nanomaggies); `bands[i]` names channel `i`. Mixed-survey lists are rescaled by the first
    /// band's survey, as in the reference.
    ///
    /// # Shapes
    /// `flux [B, nb, H, W]` (H, W ≥ 96) `-> [B, 576]`
    pub fn encode(&self, flux: Tensor<B, 4>, bands: &[Band]) -> Result<Tensor<B, 2, Int>> {
        let x = self.preprocess(flux, bands)?;
        let (padded, mask) = preprocess::pad_to_slots(x, bands);
        let n_present = mask.iter().filter(|&&m| m).count();
        let h = self
            .encoder
            .forward(self.subsample_in.forward_in(padded, n_present), self.algo);
        Ok(self.fsq.encode(self.project_latent(h)))
    }

    /// [`encode`](Self::encode) keeping every intermediate.
    ///
    /// # Shapes
    /// `flux [B, nb, H, W]`; see [`ImageEncoding`] for the outputs.
    pub fn encode_with_intermediates(
        &self,
        flux: Tensor<B, 4>,
        bands: &[Band],
    ) -> Result<ImageEncoding<B>> {
        let range_compressed = self.preprocess(flux, bands)?;
        let (padded, channel_mask) = preprocess::pad_to_slots(range_compressed.clone(), bands);
        let n_present = channel_mask.iter().filter(|&&m| m).count();
        let subsampled = self.subsample_in.forward_in(padded.clone(), n_present);
        let encoder_out = self.encoder.forward(subsampled.clone(), self.algo);
        let pre_quant = self.project_latent(encoder_out.clone());
        Ok(ImageEncoding {
            quantized: self.fsq.quantize(pre_quant.clone()),
            tokens: self.fsq.encode(pre_quant.clone()),
            range_compressed,
            padded,
            channel_mask,
            subsampled,
            encoder_out,
            pre_quant,
        })
    }

    /// Checks the inputs, then crop → clamp → survey rescale → range compression.
    ///
    /// # Shapes
    /// `[B, nb, H, W] -> [B, nb, 96, 96]`
    fn preprocess(&self, flux: Tensor<B, 4>, bands: &[Band]) -> Result<Tensor<B, 4>> {
        Band::check_distinct(bands)?;
        let nb = flux.dims()[1];
        if nb != bands.len() {
            return Err(Error::Input(format!(
                "the image has {nb} channels but {} bands are named",
                bands.len()
            )));
        }
        let x = preprocess::center_crop(flux, CROP)?;
        preprocess::check_no_nan(&x)?;
        let x = preprocess::clamp_bands(x, bands);
        let x = preprocess::to_legacy_units(x, bands[0].survey());
        let cfg = &self.config;
        Ok(preprocess::range_compress(
            x,
            cfg.range_compression_factor,
            cfg.mult_factor,
        ))
    }

    /// `pre_quant_proj`, then flatten the grid row-major.
    ///
    /// # Shapes
    /// `[B, hidden_dims, g, g] -> [B, D, g·g]`
    fn project_latent(&self, h: Tensor<B, 4>) -> Tensor<B, 3> {
        let z = self.pre_quant_proj.forward_with(h, self.algo);
        let [b, d, gh, gw] = z.dims();
        z.reshape([b, d, gh * gw])
    }

    /// Decodes tokens to images of the requested bands, in the first band's survey units
    /// (HSC: ×10^1.8, the inverse of the encode rescale; DES: nanomaggies).
    ///
    /// # Shapes
    /// `tokens [B, 576] -> [B, nb, 96, 96]`
    pub fn decode(&self, tokens: Tensor<B, 2, Int>, bands: &[Band]) -> Result<Tensor<B, 4>> {
        Band::check_distinct(bands)?;
        let slots = self.decode_slots(tokens)?;
        let x = preprocess::select_slots(slots, bands);
        Ok(preprocess::from_legacy_units(x, bands[0].survey()))
    }

    /// Decodes tokens to all 9 band slots ([`Band::ALL`] order), each in its own survey's units
    /// (HSC slots ×10^1.8). The reference's `decode(tokens)` without bands crashes.
    ///
    /// # Shapes
    /// `tokens [B, 576] -> [B, 9, 96, 96]`
    pub fn decode_all(&self, tokens: Tensor<B, 2, Int>) -> Result<Tensor<B, 4>> {
        let slots = self.decode_slots(tokens)?;
        let hsc = preprocess::from_legacy_units(slots.clone().narrow(1, 0, 5), Survey::Hsc);
        Ok(Tensor::cat(vec![hsc, slots.narrow(1, 5, 4)], 1))
    }

    /// Tokens → the 9 slots in Legacy Survey units (before band selection and rescale).
    ///
    /// # Shapes
    /// `tokens [B, 576] -> [B, 9, 96, 96]`
    pub fn decode_slots(&self, tokens: Tensor<B, 2, Int>) -> Result<Tensor<B, 4>> {
        let n = tokens.dims()[1];
        if n != self.config.num_tokens() {
            return Err(Error::Input(format!(
                "expected {} image tokens per row, got {n}",
                self.config.num_tokens()
            )));
        }
        self.fsq.check_tokens(&tokens)?;
        Ok(self.decode_latent(self.fsq.decode(tokens)))
    }

    /// The decoder from de-quantized latents to the 9 slots in Legacy Survey units.
    ///
    /// # Shapes
    /// `z [B, D, 576] -> [B, 9, 96, 96]`
    pub fn decode_latent(&self, z: Tensor<B, 3>) -> Tensor<B, 4> {
        let [b, d, _] = z.dims();
        let g = self.config.grid();
        let h = self
            .post_quant_proj
            .forward_with(z.reshape([b, d, g, g]), self.algo);
        let x = self
            .subsample_out
            .forward_out(self.decoder.forward(h, self.algo));
        let cfg = &self.config;
        preprocess::range_decompress(x, cfg.range_compression_factor, cfg.mult_factor)
    }
}
