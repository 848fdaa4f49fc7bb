//! The spectrum codec (`SpectrumCodec`): quantised normalisation, resampling onto a fixed
//! latent wavelength grid, a 1-D ConvNeXt-V2 autoencoder and lookup-free quantization.
//!
//! Port of `aion/codecs/spectrum.py` (+ `modules/convnext.py`, `modules/spectrum.py`,
//! `quantizers/lookup_free_quantization.py`) of `polymathic-aion` 0.0.2 (MIT); spec §2.2.
//! One codec serves DESI and SDSS spectra (`tok_spectrum_desi`, `tok_spectrum_sdss`).
//!
//! Tokens per spectrum: `[k_norm, lfq_0, …, lfq_{N−1}]` (273 for the released codec), the
//! normalisation token first. Preprocessing and resampling run in plain Rust per row (rows may
//! differ in length); the network runs batched in burn.
//!
//! Deviations from the reference, all on inputs where it produces garbage or nothing useful:
//! * padded rows (`λ ≤ 0` tail, MMU SDSS files) are stripped instead of zeroing the whole
//!   spectrum (spec §6.16), and malformed rows are rejected ([`preprocess::clean_row`]);
//! * decoding checks token ranges (the reference indexes out of bounds or wraps);
//! * the decoded mask flags requested wavelengths outside the latent grid; the reference returns
//!   all-false on the latent grid and, on an observed grid, true *inside* the grid and false
//!   outside (an artefact of interpolating `−∞` logits; spec §6.19 describes it as all true);
//! * no inverse-variance is returned (the reference returns ones).

pub mod config;
pub mod convnext;
pub mod lfq;
pub mod network;
pub mod patch;
pub mod preprocess;

use std::path::Path;

use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};

use crate::error::{Error, Result};
use crate::hub::layout;
use crate::weights::{Init, IntType, Source, WeightFile};

pub use config::SpectrumConfig;
use lfq::Lfq;
use network::SpectrumNetwork;
use preprocess::{NormQuantizer, Normalisation, Preprocessor, interp1d, norm_scale};

/// One observed spectrum (all four slices of equal length; a `λ ≤ 0` tail is padding).
#[derive(Debug, Clone, Copy)]
pub struct SpectrumRow<'a> {
    /// Flux (1e-17 erg/s/cm²/Å in MMU files); NaN/inf are mapped as `torch.nan_to_num` does.
    pub flux: &'a [f32],
    /// Inverse variance of the flux.
    pub ivar: &'a [f32],
    /// `true` = bad pixel (excluded from the normalisation only, as in the reference).
    pub mask: &'a [bool],
    /// Wavelength in Å, strictly increasing over the non-padding part.
    pub wavelength: &'a [f32],
}

/// Output of [`SpectrumCodec::decode`].
///
/// Per-row `Vec`s rather than one tensor because requested grids may differ in length.
#[derive(Debug, Clone)]
pub struct DecodedSpectra<B: Backend> {
    /// De-normalised flux on the latent grid, `[B, num_pixels]` (always computed).
    pub latent_flux: Tensor<B, 2>,
    /// Flux per row on the requested grid (the latent grid when none was given).
    pub flux: Vec<Vec<f32>>,
    /// The grid of each row of `flux`.
    pub wavelength: Vec<Vec<f32>>,
    /// `true` where the flux carries no information: requested wavelengths outside the latent
    /// grid (there the flux is just the normalisation scale) or NaN.
    pub mask: Vec<Vec<bool>>,
}

/// Result of the per-row preprocessing, exposed for diagnostics and parity tests.
#[derive(Debug, Clone)]
pub struct Preprocessed {
    /// Normalisation of each row.
    pub norms: Vec<Normalisation>,
    /// Scaled flux on the latent grid before `asinh`, row-major `[B, num_pixels]`.
    pub latent_flux: Vec<f32>,
    /// Scaled inverse standard deviation on the latent grid before `asinh`, `[B, num_pixels]`.
    pub latent_istd: Vec<f32>,
}

/// A loaded spectrum codec.
#[derive(Debug)]
pub struct SpectrumCodec<B: Backend> {
    config: SpectrumConfig,
    network: SpectrumNetwork<B>,
    lfq: Lfq,
    pre: Preprocessor,
    device: B::Device,
}

impl<B: Backend> SpectrumCodec<B> {
    /// Loads `config.json` + `model.safetensors` from a codec folder (`codecs/spectrum/`).
    ///
    /// Strict: every tensor of the reference `state_dict` must be present with the configured
    /// shape, and nothing else. The LFQ buffer may be named `_quantizer.` (module) or
    /// `quantizer.` (the scalar codecs' Hub convention).
    pub fn load(dir: &Path, device: &B::Device) -> Result<Self> {
        let config = SpectrumConfig::read(&layout::config(dir))?;
        let mut w = WeightFile::open(layout::weights(dir))?;
        let codec = Self::from_weights(config, &mut w, device);
        w.finish()?;
        codec
    }

    /// Builds the codec from a weight source: the one description of its weights (the network,
    /// the LFQ bit weights, the normalisation buckets and the latent grid buffers). The buffers
    /// are checked against the configuration when the source recorded no problem; with
    /// problems, the caller's [`WeightFile::finish`] lists them.
    pub fn from_weights(
        config: SpectrumConfig,
        w: &mut impl Source,
        device: &B::Device,
    ) -> Result<Self> {
        w.stored_prefix("_quantizer.", "quantizer.", false);
        let network = SpectrumNetwork::load(w, &config, device);
        // LFQ: bit weights 2^(d−1) … 1, channel 0 the most significant.
        let bits = Init::Ints((0..config.dim).rev().map(|i| 1i64 << i).collect());
        let mask = w.ints(
            "_quantizer._quantizer.mask",
            &[config.dim],
            IntType::I64,
            &bits,
        );
        let k = config.codebook_size;
        let [lo, hi] = config.normalization_range.map(|v| v as f32);
        let linspace = crate::codecs::scalar_fit::linspace_f32(k);
        let edges = Init::Floats(linspace.iter().map(|t| lo + (hi - lo) * t).collect());
        let buckets = w.floats("normalization_quantizer.buckets", &[k], &edges);
        let grid = load_grid(w, &config);
        let label = w.label().to_path_buf();
        if w.has_problems() {
            return Err(Error::config(label, "the weights do not match the codec"));
        }
        let grid = grid.map_err(|m| Error::config(&label, m))?;
        check_buckets(&buckets, &config).map_err(|m| Error::config(&label, m))?;
        let lfq = Lfq::new(mask, config.codebook_size).map_err(|m| Error::config(&label, m))?;
        let pre = Preprocessor {
            grid,
            norm: NormQuantizer { buckets },
            clip_flux: config.clip_flux.map(|c| c as f32),
            clip_ivar: config.clip_ivar.map(|c| c as f32),
            input_scaling: config.input_scaling as f32,
        };
        Ok(Self {
            config,
            network,
            lfq,
            pre,
            device: device.clone(),
        })
    }

    /// The codec's configuration.
    pub fn config(&self) -> &SpectrumConfig {
        &self.config
    }

    /// The latent wavelength grid `λ_i = λ_min + res·i` as stored in the weights.
    pub fn latent_wavelength(&self) -> &[f32] {
        &self.pre.grid
    }

    /// Tokens per spectrum (273 for the released codec).
    pub fn num_tokens(&self) -> usize {
        self.config.num_tokens()
    }

    /// Validates, de-pads, normalises and resamples every row (see [`preprocess::clean_row`]).
    pub fn preprocess(&self, rows: &[SpectrumRow<'_>]) -> Result<Preprocessed> {
        let p = self.pre.grid.len();
        let mut out = Preprocessed {
            norms: Vec::with_capacity(rows.len()),
            latent_flux: vec![0.0; rows.len() * p],
            latent_istd: vec![0.0; rows.len() * p],
        };
        for (i, row) in rows.iter().enumerate() {
            let clean = preprocess::clean_row(i, row)?;
            let norm = self.pre.normalisation(&clean);
            let span = i * p..(i + 1) * p;
            self.pre.resample(
                &clean,
                norm.scale,
                &mut out.latent_flux[span.clone()],
                &mut out.latent_istd[span],
            );
            out.norms.push(norm);
        }
        Ok(out)
    }

    /// The network input: `asinh` of (flux, istd) on the latent grid.
    ///
    /// # Shapes
    /// `-> [B, 2, num_pixels]`
    pub fn network_input(&self, pre: &Preprocessed) -> Tensor<B, 3> {
        let p = self.pre.grid.len();
        let b = pre.norms.len();
        let mut x = Vec::with_capacity(b * 2 * p);
        for i in 0..b {
            for src in [&pre.latent_flux, &pre.latent_istd] {
                x.extend(
                    src[i * p..(i + 1) * p]
                        .iter()
                        .map(|&v| f64::from(v).asinh() as f32),
                );
            }
        }
        Tensor::from_data(TensorData::new(x, [b, 2, p]), &self.device)
    }

    /// Pre-quantisation latents (the LFQ input) of preprocessed rows.
    ///
    /// # Shapes
    /// `-> [B, dim, N]` (`N = num_tokens − 1`)
    pub fn pre_quant(&self, pre: &Preprocessed) -> Tensor<B, 3> {
        self.network.encode(self.network_input(pre))
    }

    /// Tokenizes a batch of spectra.
    ///
    /// # Shapes
    /// `rows: B` rows of any lengths `-> [B, num_tokens]` (token 0 = normalisation)
    pub fn encode(&self, rows: &[SpectrumRow<'_>]) -> Result<Tensor<B, 2, Int>> {
        if rows.is_empty() {
            return Err(Error::Input("no spectrum to encode".into()));
        }
        let pre = self.preprocess(rows)?;
        let codes = self.lfq.encode(self.pre_quant(&pre));
        let norm: Vec<i64> = pre.norms.iter().map(|n| n.token).collect();
        let norm =
            Tensor::<B, 1, Int>::from_data(TensorData::new(norm, [rows.len()]), &self.device);
        Ok(Tensor::cat(vec![norm.unsqueeze_dim(1), codes], 1))
    }

    /// Network output (normalised space) and flux scale of each row, after checking the tokens.
    ///
    /// # Shapes
    /// `tokens: [B, num_tokens] -> ([B, num_pixels], B scales)`
    pub fn decode_latent(&self, tokens: Tensor<B, 2, Int>) -> Result<(Tensor<B, 2>, Vec<f32>)> {
        let [b, t] = tokens.dims();
        if t != self.num_tokens() || b == 0 {
            return Err(Error::Input(format!(
                "spectrum tokens have shape [{b}, {t}], expected [B ≥ 1, {}]",
                self.num_tokens()
            )));
        }
        let all: Vec<i64> = tokens
            .into_data()
            .convert::<i64>()
            .to_vec()
            .map_err(|e| Error::Input(format!("cannot read spectrum tokens: {e:?}")))?;
        let (k_norm, k_lfq) = (
            self.pre.norm.buckets.len() as i64,
            self.lfq.codebook_size() as i64,
        );
        let mut scales = Vec::with_capacity(b);
        let mut lfq = Vec::with_capacity(b * (t - 1));
        for (r, row) in all.chunks(t).enumerate() {
            if let Some(p) =
                (0..t).find(|&p| !(0..if p == 0 { k_norm } else { k_lfq }).contains(&row[p]))
            {
                return Err(Error::Input(format!(
                    "spectrum token {} at row {r}, position {p} is outside 0..{}",
                    row[p],
                    if p == 0 { k_norm } else { k_lfq }
                )));
            }
            scales.push(norm_scale(self.pre.norm.decode(row[0])));
            lfq.extend_from_slice(&row[1..]);
        }
        let codes = self.lfq.decode::<B>(&lfq, b, &self.device)?;
        Ok((self.network.decode(codes), scales))
    }

    /// Decodes tokens to flux: on the latent grid, or resampled per row onto `wavelength`
    /// (one grid per row, any lengths, any order).
    ///
    /// As in the reference, resampling happens in normalised space and the flux is
    /// `(out + 1)·max(10^û − 1, 0.1)`; the `asinh` and the 0.2 input scaling are not inverted,
    /// and requested wavelengths outside the latent grid get `out = 0`, i.e. flux = the scale.
    pub fn decode(
        &self,
        tokens: Tensor<B, 2, Int>,
        wavelength: Option<&[Vec<f32>]>,
    ) -> Result<DecodedSpectra<B>> {
        let (out, scales) = self.decode_latent(tokens)?;
        let [b, p] = out.dims();
        if let Some(w) = wavelength.filter(|w| w.len() != b) {
            return Err(Error::Input(format!(
                "{} wavelength grids for {b} spectra",
                w.len()
            )));
        }
        let scale_t = Tensor::<B, 1>::from_data(TensorData::new(scales.clone(), [b]), &self.device);
        let latent_flux = out.clone().add_scalar(1.0).mul(scale_t.unsqueeze_dim(1));
        let grid = &self.pre.grid;
        let (flux, wavelength, mask) = match wavelength {
            None => {
                let rows = host(latent_flux.clone())?
                    .chunks(p)
                    .map(<[f32]>::to_vec)
                    .collect();
                (rows, vec![grid.clone(); b], vec![vec![false; p]; b])
            }
            Some(ws) => {
                let (flux, mask) = self.resample_decoded(&host(out)?, &scales, ws);
                (flux, ws.to_vec(), mask)
            }
        };
        Ok(DecodedSpectra {
            latent_flux,
            flux,
            wavelength,
            mask,
        })
    }

    /// Interpolates decoder outputs (normalised space, row-major `[B, num_pixels]`) onto each
    /// row's grid and de-normalises; the mask flags wavelengths outside the latent grid.
    fn resample_decoded(
        &self,
        out: &[f32],
        scales: &[f32],
        grids: &[Vec<f32>],
    ) -> (Vec<Vec<f32>>, Vec<Vec<bool>>) {
        let grid = &self.pre.grid;
        let p = grid.len();
        let (lo, hi) = (grid[0], grid[p - 1]);
        let mut flux = Vec::with_capacity(grids.len());
        for (i, w) in grids.iter().enumerate() {
            let mut f = vec![0f32; w.len()];
            interp1d(grid, &out[i * p..(i + 1) * p], w, &mut f);
            f.iter_mut().for_each(|x| *x = (*x + 1.0) * scales[i]);
            flux.push(f);
        }
        let mask = grids
            .iter()
            .map(|w| w.iter().map(|&x| !(lo..=hi).contains(&x)).collect())
            .collect();
        (flux, mask)
    }
}

/// Copies a float tensor to the host.
fn host<B: Backend>(t: Tensor<B, 2>) -> Result<Vec<f32>> {
    t.into_data()
        .convert::<f32>()
        .to_vec()
        .map_err(|e| Error::Input(format!("cannot read decoded flux: {e:?}")))
}

/// Reads the `latent_grid.*` buffers and checks them against the config.
fn load_grid(w: &mut impl Source, cfg: &SpectrumConfig) -> std::result::Result<Vec<f32>, String> {
    let p = cfg.num_pixels;
    let value = |v: f64| Init::Floats(vec![v as f32]);
    let lambda_min = w.floats("latent_grid.lambda_min", &[], &value(cfg.lambda_min))[0];
    let resolution = w.floats("latent_grid.resolution", &[], &value(cfg.resolution))[0];
    let length = Init::Ints(vec![p as i64]);
    let length = w.ints("latent_grid.length", &[], IntType::I64, &length)[0];
    let steps = (0..p).map(|i| (cfg.lambda_min + cfg.resolution * i as f64) as f32);
    let grid = w.floats(
        "latent_grid._wavelength",
        &[1, p],
        &Init::Floats(steps.collect()),
    );
    if w.has_problems() {
        return Ok(grid); // reported by `finish`
    }
    if length != p as i64
        || lambda_min != cfg.lambda_min as f32
        || resolution != cfg.resolution as f32
    {
        return Err(format!(
            "latent grid buffers (λ_min {lambda_min}, step {resolution}, length {length}) differ \
             from config.json ({}, {}, {p})",
            cfg.lambda_min, cfg.resolution
        ));
    }
    let off = grid.iter().enumerate().find(|&(i, &v)| {
        let want = cfg.lambda_min + cfg.resolution * i as f64;
        (f64::from(v) - want).abs() > 1e-6 * want.abs().max(1.0)
    });
    if let Some((i, v)) = off {
        return Err(format!(
            "latent_grid._wavelength[{i}] = {v} is not λ_min + step·{i}"
        ));
    }
    Ok(grid)
}

/// Checks the normalisation buckets against `normalization_range` (`linspace(lo, hi, K)`).
fn check_buckets(buckets: &[f32], cfg: &SpectrumConfig) -> std::result::Result<(), String> {
    let [lo, hi] = cfg.normalization_range;
    let ok_ends = buckets
        .first()
        .is_some_and(|&v| (f64::from(v) - lo).abs() < 1e-5)
        && buckets
            .last()
            .is_some_and(|&v| (f64::from(v) - hi).abs() < 1e-5);
    if !ok_ends
        || buckets
            .windows(2)
            .any(|p| p[1].partial_cmp(&p[0]) != Some(std::cmp::Ordering::Greater))
    {
        return Err(format!(
            "normalization_quantizer.buckets is not an increasing linspace({lo}, {hi}, {})",
            buckets.len()
        ));
    }
    Ok(())
}
