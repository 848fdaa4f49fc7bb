//! Image preprocessing before the MagViT network, and the multi-survey channel projections.
//!
//! Port of `aion/codecs/preprocessing/image.py` (`CenterCrop`, `Clamp`, `RescaleToLegacySurvey`,
//! `ImagePadder`), of `AutoencoderImageCodec._range_compress` / `_reverse_range_compress`
//! (`aion/codecs/image.py`) and of `aion/codecs/modules/subsampler.py::SubsampledLinear`
//! (`polymathic-aion` 0.0.2).
//!
//! Everything here is a burn tensor op that returns a new tensor: unlike the reference (which
//! clamps and rescales the caller's tensor in place), the caller's data is never modified.

use burn::module::{Module, Param};
use burn::tensor::backend::Backend;
use burn::tensor::{Bool, Tensor, s};

use super::band::{Band, Survey};
use crate::error::{Error, Result};
use crate::weights::{Init, Source};

/// Side of the square the codecs work on.
pub const CROP: usize = 96;

/// Keeps the central `size × size` pixels; offsets are `(H − size)/2`, `(W − size)/2` rounded
/// down (160 → rows 32..128). Images smaller than `size` are an error (the reference never
/// resizes).
///
/// # Shapes
/// `[B, C, H, W] -> [B, C, size, size]`
pub fn center_crop<B: Backend>(x: Tensor<B, 4>, size: usize) -> Result<Tensor<B, 4>> {
    let [_, _, h, w] = x.dims();
    if h < size || w < size {
        return Err(Error::Input(format!(
            "image is {h}×{w} pixels; the codec needs at least {size}×{size}"
        )));
    }
    let (y0, x0) = ((h - size) / 2, (w - size) / 2);
    Ok(x.slice(s![.., .., y0..y0 + size, x0..x0 + size]))
}

/// Fails if any pixel is NaN (it would spread over the whole receptive field and come out as
/// meaningless tokens); the error names the batch rows.
pub fn check_no_nan<B: Backend, const D: usize>(x: &Tensor<B, D>) -> Result<()> {
    let nan = x.clone().is_nan();
    let any: Tensor<B, 1, Bool> = nan.clone().any();
    if !any.into_data().to_vec::<bool>().is_ok_and(|v| v[0]) {
        return Ok(());
    }
    let rows = x.dims()[0];
    let per_row: Vec<bool> = nan
        .reshape([rows as i32, -1])
        .any_dim(1)
        .into_data()
        .to_vec()
        .unwrap_or_default();
    let bad: Vec<usize> = (0..rows)
        .filter(|&r| per_row.get(r) == Some(&true))
        .collect();
    Err(Error::Input(format!(
        "NaN pixels in the central {CROP}×{CROP} crop of batch row(s) {bad:?}"
    )))
}

/// Clips channel `i` to `±bands[i].clamp_bound()`.
///
/// # Shapes
/// `[B, nb, H, W] -> [B, nb, H, W]`
pub fn clamp_bands<B: Backend>(x: Tensor<B, 4>, bands: &[Band]) -> Tensor<B, 4> {
    let channels = bands
        .iter()
        .enumerate()
        .map(|(i, b)| {
            let m = b.clamp_bound();
            x.clone().narrow(1, i, 1).clamp(-m, m)
        })
        .collect();
    Tensor::cat(channels, 1)
}

/// Converts survey units to the codec's (Legacy Survey nanomaggies): divides by the survey's
/// zero-point factor in `f32` (HSC: 63.095734; DES: unchanged).
pub fn to_legacy_units<B: Backend, const D: usize>(
    x: Tensor<B, D>,
    survey: Survey,
) -> Tensor<B, D> {
    match survey {
        Survey::Hsc => x.div_scalar(survey.zero_point_scale()),
        Survey::Des => x,
    }
}

/// Inverse of [`to_legacy_units`]: multiplies by the zero-point factor.
pub fn from_legacy_units<B: Backend, const D: usize>(
    x: Tensor<B, D>,
    survey: Survey,
) -> Tensor<B, D> {
    match survey {
        Survey::Hsc => x.mul_scalar(survey.zero_point_scale()),
        Survey::Des => x,
    }
}

/// `asinh(x / f) · f · m` (the reference's `_range_compress`, same operation order in `f32`).
pub fn range_compress<B: Backend, const D: usize>(x: Tensor<B, D>, f: f64, m: f64) -> Tensor<B, D> {
    x.div_scalar(f).asinh().mul_scalar(f).mul_scalar(m)
}

/// `sinh(x / m / f) · f` (the reference's `_reverse_range_compress`).
pub fn range_decompress<B: Backend, const D: usize>(
    x: Tensor<B, D>,
    f: f64,
    m: f64,
) -> Tensor<B, D> {
    x.div_scalar(m).div_scalar(f).sinh().mul_scalar(f)
}

/// Writes input channel `i` to slot `bands[i].slot()` of a zero 9-channel tensor; returns it
/// with the slot-presence mask (`ImagePadder.forward`; the mask is the same for every row).
///
/// # Shapes
/// `[B, nb, H, W] -> ([B, 9, H, W], [9])`
pub fn pad_to_slots<B: Backend>(x: Tensor<B, 4>, bands: &[Band]) -> (Tensor<B, 4>, [bool; 9]) {
    let [b, _, h, w] = x.dims();
    let mut mask = [false; Band::SLOTS];
    let slots = Band::ALL
        .iter()
        .map(
            |slot_band| match bands.iter().position(|b| b == slot_band) {
                Some(i) => {
                    mask[slot_band.slot()] = true;
                    x.clone().narrow(1, i, 1)
                }
                None => Tensor::zeros([b, 1, h, w], &x.device()),
            },
        )
        .collect();
    (Tensor::cat(slots, 1), mask)
}

/// The channels of the 9-slot tensor that `bands` name, in that order (`ImagePadder.backward`).
///
/// # Shapes
/// `[B, 9, H, W] -> [B, nb, H, W]`
pub fn select_slots<B: Backend>(x: Tensor<B, 4>, bands: &[Band]) -> Tensor<B, 4> {
    let channels = bands
        .iter()
        .map(|b| x.clone().narrow(1, b.slot(), 1))
        .collect();
    Tensor::cat(channels, 1)
}

/// `SubsampledLinear`: a per-pixel linear map between the 9 band slots and the multi-survey
/// projection space (54 channels in the released codec).
#[derive(Module, Debug)]
pub struct SubsampledLinear<B: Backend> {
    /// Weight `[d_out, d_in]` (PyTorch layout).
    pub weight: Param<Tensor<B, 2>>,
    /// Bias `[d_out]`.
    pub bias: Param<Tensor<B, 1>>,
}

impl<B: Backend> SubsampledLinear<B> {
    /// Loads `<prefix>.weight` `[d_out, d_in]` and `<prefix>.bias` `[d_out]`.
    pub fn load(
        w: &mut impl Source,
        prefix: &str,
        d_in: usize,
        d_out: usize,
        device: &B::Device,
    ) -> Self {
        let weight = format!("{prefix}.weight");
        Self {
            weight: w.param(&weight, [d_out, d_in], &Init::LeCunUniform, device),
            bias: w.param(&format!("{prefix}.bias"), [d_out], &Init::Zeros, device),
        }
    }

    /// `W v + b` at every pixel.
    ///
    /// # Shapes
    /// `[B, d_in, H, W] -> [B, d_out, H, W]`
    fn pointwise(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let [b, c, h, w] = x.dims();
        let [d_out, _] = self.weight.dims();
        let y = self
            .weight
            .val()
            .unsqueeze::<3>()
            .matmul(x.reshape([b, c, h * w]))
            + self.bias.val().reshape([1, d_out, 1]);
        y.reshape([b, d_out, h, w])
    }

    /// Into the projection space: `sqrt(d_in / n_present) · (W v + b)` (the bias is scaled
    /// too, as in the reference). Absent slots must hold zeros (as [`pad_to_slots`] leaves
    /// them), which makes the reference's masking a no-op, so it is not repeated here.
    ///
    /// # Shapes
    /// `[B, d_in, H, W] -> [B, d_out, H, W]`
    pub fn forward_in(&self, x: Tensor<B, 4>, n_present: usize) -> Tensor<B, 4> {
        let d_in = self.weight.dims()[1];
        // torch: (int / int64 tensor) is a float32 true division, then ** 0.5.
        let scale = (d_in as f32 / n_present as f32).sqrt();
        self.pointwise(x).mul_scalar(scale)
    }

    /// Out of the projection space: `W v + b` (the reference multiplies by an all-ones mask).
    ///
    /// # Shapes
    /// `[B, d_in, H, W] -> [B, d_out, H, W]`
    pub fn forward_out(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        self.pointwise(x)
    }
}
