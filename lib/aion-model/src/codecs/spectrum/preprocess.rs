//! Spectrum preprocessing on plain `f32` slices: validation and padding removal, the quantised
//! normalisation, input scaling and the resampling onto the latent wavelength grid.
//!
//! Port of `AutoencoderSpectrumCodec._encode` (`aion/codecs/spectrum.py`), `interp1d` and
//! `LatentSpectralGrid` (`aion/codecs/modules/spectrum.py`) and `ScalarLinearQuantizer`
//! (`aion/codecs/quantizers/__init__.py`) of `polymathic-aion` 0.0.2. Every float operation is
//! done in the reference's order and precision (`f32`, no fused multiply-add), so the resampled
//! arrays match the reference bit for bit up to the last-bit rounding of `10^x`.
//!
//! Rows are handled one by one (they may differ in length), which is what makes the padding fix
//! possible: see [`clean_row`].

use crate::codecs::scalar::bucketize_left;
use crate::error::Error;

use super::SpectrumRow;

/// `torch.nan_to_num` with its defaults: NaN → 0, ±inf → ±`f32::MAX`.
pub fn nan_to_num(x: f32) -> f32 {
    if x.is_nan() {
        0.0
    } else if x == f32::INFINITY {
        f32::MAX
    } else if x == f32::NEG_INFINITY {
        f32::MIN
    } else {
        x
    }
}

/// The valid part of a row: the prefix left after removing the λ ≤ 0 padding.
#[derive(Debug, Clone, Copy)]
pub struct CleanRow<'a> {
    /// Flux.
    pub flux: &'a [f32],
    /// Inverse variance.
    pub ivar: &'a [f32],
    /// `true` = bad pixel.
    pub mask: &'a [bool],
    /// Strictly increasing wavelengths (Å).
    pub wavelength: &'a [f32],
}

/// Validates row `index` and strips its padding.
///
/// **Deviation from the reference (spec §6.16).** MMU SDSS rows are padded to the file's longest
/// row with `λ = −1` (flux edge-padded, ivar 0, mask true). The reference interpolates with the
/// *last* element as the upper bound, so such a row has every latent pixel "out of range" and is
/// encoded as if its spectrum were zero. Here a trailing run of `λ ≤ 0` is padding and is
/// dropped, so a padded row tokenizes exactly as its unpadded version (the padding's mask is true
/// in MMU files, so the reference's normalisation of the unpadded row is the same).
///
/// Errors (the reference would silently produce garbage): rows whose four arrays differ in
/// length, rows with fewer than 2 pixels left after stripping (interpolation needs a segment),
/// `λ ≤ 0` followed by a positive `λ`, wavelengths that are not strictly increasing or not finite,
/// and rows whose every remaining pixel is masked.
pub fn clean_row<'a>(
    index: usize,
    row: &SpectrumRow<'a>,
) -> std::result::Result<CleanRow<'a>, RowError> {
    let err = |reason: &'static str, detail: String| {
        Err(RowError {
            index,
            reason,
            detail,
        })
    };
    let n = row.wavelength.len();
    if row.flux.len() != n || row.ivar.len() != n || row.mask.len() != n {
        return err(
            "arrays of different lengths",
            format!(
                "flux, ivar, mask and wavelength have {}, {}, {} and {n} values",
                row.flux.len(),
                row.ivar.len(),
                row.mask.len()
            ),
        );
    }
    let len = row.wavelength.iter().position(|&w| w <= 0.0).unwrap_or(n);
    if let Some(k) = row.wavelength[len..]
        .iter()
        .position(|&w| w > 0.0 || w.is_nan())
    {
        let k = len + k;
        return err(
            "data after the wavelength padding",
            format!(
                "wavelength {} at index {k} follows the non-positive (padding) wavelength at index {len}",
                row.wavelength[k]
            ),
        );
    }
    if len < 2 {
        return err(
            "fewer than 2 pixels",
            format!("{len} pixel(s) with a positive wavelength; at least 2 are needed"),
        );
    }
    let wl = &row.wavelength[..len];
    if let Some(k) = (0..len).find(|&k| !wl[k].is_finite() || (k > 0 && wl[k] <= wl[k - 1])) {
        return err(
            "wavelength not finite and increasing",
            format!(
                "wavelength is not finite and strictly increasing at index {k} ({} after {})",
                wl[k],
                if k > 0 { wl[k - 1] } else { f32::NAN }
            ),
        );
    }
    if row.mask[..len].iter().all(|&m| m) {
        return err("every pixel masked", "every pixel is masked".into());
    }
    Ok(CleanRow {
        flux: &row.flux[..len],
        ivar: &row.ivar[..len],
        mask: &row.mask[..len],
        wavelength: wl,
    })
}

/// Why a spectrum row cannot be used ([`clean_row`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowError {
    /// The row.
    pub index: usize,
    /// What is wrong, as a fixed phrase (the tools count rejected rows by it).
    pub reason: &'static str,
    /// The row's particulars.
    pub detail: String,
}

impl std::fmt::Display for RowError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "spectrum row {}: {}", self.index, self.detail)
    }
}

impl From<RowError> for Error {
    fn from(e: RowError) -> Self {
        Error::Input(e.to_string())
    }
}

/// `ScalarLinearQuantizer`: fixed buckets (`linspace(-1, 5, 1024)` in the released codec).
#[derive(Debug, Clone, PartialEq)]
pub struct NormQuantizer {
    /// Bucket values, increasing (`normalization_quantizer.buckets`).
    pub buckets: Vec<f32>,
}

impl NormQuantizer {
    /// `clamp(bucketize_left(u), 0, K-1)`.
    pub fn encode(&self, u: f32) -> i64 {
        bucketize_left(u, &self.buckets).min(self.buckets.len() - 1) as i64
    }

    /// The bucket value of a token (the caller checks the range).
    pub fn decode(&self, token: i64) -> f32 {
        self.buckets[token as usize]
    }
}

/// `max(10^u − 1, 0.1)` in `f32`: the flux scale of a quantised normalisation `u`.
pub fn norm_scale(u: f32) -> f32 {
    let p = 10f64.powf(f64::from(u)) as f32;
    (p - 1.0).max(0.1)
}

/// Normalisation of one row: the quantised value and its token.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Normalisation {
    /// `log10(max(mean, 0.1) + 1)` before quantisation.
    pub raw: f32,
    /// The quantised value `û` (a bucket value).
    pub quantized: f32,
    /// Its token (position 0 of the spectrum's tokens).
    pub token: i64,
    /// `max(10^û − 1, 0.1)`, the scale the flux is divided by.
    pub scale: f32,
}

/// Settings of the encoder-side preprocessing (from `config.json` and the buffers).
#[derive(Debug, Clone, PartialEq)]
pub struct Preprocessor {
    /// Latent grid `λ_i` (`latent_grid._wavelength`).
    pub grid: Vec<f32>,
    /// Normalisation quantizer.
    pub norm: NormQuantizer,
    /// `clip_flux` (none in the released codec).
    pub clip_flux: Option<f32>,
    /// `clip_ivar` (100 in the released codec; `None` = no clamp at all, as in the reference).
    pub clip_ivar: Option<f32>,
    /// `input_scaling` (0.2).
    pub input_scaling: f32,
}

impl Preprocessor {
    fn flux(&self, x: f32) -> f32 {
        let f = nan_to_num(x);
        match self.clip_flux {
            Some(c) => f.clamp(-c, c),
            None => f,
        }
    }

    fn istd(&self, x: f32) -> f32 {
        let v = nan_to_num(x);
        let v = match self.clip_ivar {
            Some(c) => v.max(0.0).min(c),
            None => v,
        };
        v.sqrt()
    }

    /// Mean of the unmasked flux over `count + 1` (sic), floored at 0.1, `log10(· + 1)`, quantised.
    ///
    /// The sum is accumulated in `f64` and rounded once; torch sums in `f32` (pairwise), so the
    /// value may differ in the last bits, which only matters within that distance of a bucket
    /// edge (the token then differs by one).
    pub fn normalisation(&self, row: &CleanRow<'_>) -> Normalisation {
        let (mut sum, mut count) = (0f64, 0u32);
        for (&f, &m) in row.flux.iter().zip(row.mask) {
            if !m {
                sum += f64::from(self.flux(f));
                count += 1;
            }
        }
        let mean = (sum as f32) / (count as f32 + 1.0);
        let raw = (f64::from(mean.max(0.1) + 1.0).log10()) as f32;
        let k = self.norm.encode(raw);
        let quantized = self.norm.decode(k);
        Normalisation {
            raw,
            quantized,
            token: self.norm.encode(quantized),
            scale: norm_scale(quantized),
        }
    }

    /// Scaled flux and inverse standard deviation of a row, resampled onto the latent grid
    /// (written into `flux_out` and `istd_out`, both of the grid's length).
    pub fn resample(
        &self,
        row: &CleanRow<'_>,
        scale: f32,
        flux_out: &mut [f32],
        istd_out: &mut [f32],
    ) {
        let s = self.input_scaling;
        let f: Vec<f32> = row
            .flux
            .iter()
            .map(|&x| (self.flux(x) / scale - 1.0) * s)
            .collect();
        let i: Vec<f32> = row
            .ivar
            .iter()
            .map(|&x| (self.istd(x) / scale) * s)
            .collect();
        interp1d(row.wavelength, &f, &self.grid, flux_out);
        interp1d(row.wavelength, &i, &self.grid, istd_out);
    }
}

/// The reference's `interp1d` for one row: linear interpolation of `(x, y)` at `xnew`, with 0
/// outside `[x[0], x[last]]`.
///
/// `j = searchsorted_left(x, xnew) − 1` clamped to `[0, len−2]`;
/// `y[j] + (xnew − x[j])·(y[j] − y[j+1]) / (x[j] − x[j+1])`, each step rounded to `f32` as torch
/// does. At `xnew == x[k]` the left segment is used. `x` must be increasing (checked by
/// [`clean_row`] for observed grids; the latent grid is). `xnew` may be in any order; NaN gives NaN.
pub fn interp1d(x: &[f32], y: &[f32], xnew: &[f32], out: &mut [f32]) {
    debug_assert!(x.len() >= 2 && x.len() == y.len() && xnew.len() == out.len());
    let (lo, hi) = (x[0], x[x.len() - 1]);
    for (o, &xn) in out.iter_mut().zip(xnew) {
        if xn < lo || xn > hi {
            *o = 0.0;
            continue;
        }
        let j = x
            .partition_point(|&v| v < xn)
            .saturating_sub(1)
            .min(x.len() - 2);
        let slope = (y[j] - y[j + 1]) / (x[j] - x[j + 1]);
        *o = y[j] + (xn - x[j]) * slope;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row<'a>(f: &'a [f32], iv: &'a [f32], m: &'a [bool], w: &'a [f32]) -> SpectrumRow<'a> {
        SpectrumRow {
            flux: f,
            ivar: iv,
            mask: m,
            wavelength: w,
        }
    }

    #[test]
    fn interp_uses_left_segment_and_zero_outside() {
        let x = [1.0f32, 2.0, 4.0];
        let y = [10.0f32, 20.0, 0.0];
        let xn = [0.5f32, 1.0, 1.5, 2.0, 3.0, 4.0, 4.5];
        let mut out = [9f32; 7];
        interp1d(&x, &y, &xn, &mut out);
        assert_eq!(out, [0.0, 10.0, 15.0, 20.0, 10.0, 0.0, 0.0]);
    }

    #[test]
    fn padding_is_stripped_and_bad_rows_rejected() {
        let f = [1.0f32; 5];
        let iv = [1.0f32; 5];
        let m = [false; 5];
        let w = [4000.0f32, 4001.0, 4002.0, -1.0, -1.0];
        let c = clean_row(0, &row(&f, &iv, &m, &w)).unwrap();
        assert_eq!(c.wavelength.len(), 3);
        let bad = |w: &[f32], m: &[bool], what: &str| {
            let e = clean_row(7, &row(&f[..w.len()], &iv[..w.len()], m, w)).unwrap_err();
            let s = e.to_string();
            assert!(s.contains("row 7") && s.contains(what), "{s}");
        };
        bad(&[4000.0, -1.0, 4002.0], &m[..3], "follows");
        bad(
            &[4000.0, 4000.0, 4002.0],
            &m[..3],
            "strictly increasing at index 1",
        );
        bad(&[4000.0, f32::NAN, 4002.0], &m[..3], "index 1");
        bad(&[4000.0, -1.0], &m[..2], "at least 2");
        bad(&[], &[], "at least 2");
        bad(&[4000.0, 4001.0], &[true, true], "masked");
        let e = clean_row(1, &row(&f, &iv[..2], &m, &w)).unwrap_err();
        assert!(e.to_string().contains("5, 2, 5 and 5"), "{e}");
    }

    #[test]
    fn nan_to_num_matches_torch() {
        assert_eq!(nan_to_num(f32::NAN), 0.0);
        assert_eq!(nan_to_num(f32::INFINITY), f32::MAX);
        assert_eq!(nan_to_num(f32::NEG_INFINITY), f32::MIN);
        assert_eq!(nan_to_num(-2.5), -2.5);
    }
}
