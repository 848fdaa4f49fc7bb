//! `config.json` of the spectrum codec: the keyword arguments of the reference constructor
//! `SpectrumCodec.__init__` (`aion/codecs/spectrum.py`, `polymathic-aion` 0.0.2), with its
//! defaults, and the consistency checks the reference only partly makes.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Constructor arguments of `SpectrumCodec` (missing keys take the reference defaults).
///
/// The reference defaults are inconsistent on purpose-free points (`latent_channels = 512` vs
/// `encoder_dims[-1] = 768`, `embedding_dim = 4` vs `dim = 10`; spec §6.15), so the released
/// `config.json` must override them; [`validate`](Self::validate) rejects inconsistent sets.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SpectrumConfig {
    /// Blocks per encoder stage.
    pub encoder_depths: Vec<usize>,
    /// Channels per encoder stage.
    pub encoder_dims: Vec<usize>,
    /// Blocks per decoder stage.
    pub decoder_depths: Vec<usize>,
    /// Channels per decoder stage (the last is the number of output channels).
    pub decoder_dims: Vec<usize>,
    /// First wavelength of the latent grid (Å).
    pub lambda_min: f64,
    /// Latent grid step (Å).
    pub resolution: f64,
    /// Latent grid length.
    pub num_pixels: usize,
    /// Encoder output channels (must equal `encoder_dims[-1]`).
    pub latent_channels: usize,
    /// Channels fed to the quantizer (must equal `dim`).
    pub embedding_dim: usize,
    /// Upper clamp of the inverse variance (`null` = no clamp at all).
    pub clip_ivar: Option<f64>,
    /// Symmetric clamp of the flux (`null` = none).
    pub clip_flux: Option<f64>,
    /// Factor applied to the normalised flux and istd.
    pub input_scaling: f64,
    /// Range of the normalisation quantizer's buckets (log10 units).
    pub normalization_range: [f64; 2],
    /// LFQ codebook size (also the normalisation quantizer's bucket count).
    pub codebook_size: usize,
    /// LFQ input dimension.
    pub dim: usize,
}

impl SpectrumConfig {
    /// The latent wavelength grid in words, e.g. `"3500 + 0.8 i Angstrom, i = 0..8703"` (the
    /// `wavelength` attribute of decoded spectra).
    pub fn grid_description(&self) -> String {
        format!(
            "{} + {} i Angstrom, i = 0..{}",
            self.lambda_min,
            self.resolution,
            self.num_pixels.saturating_sub(1)
        )
    }
}

impl Default for SpectrumConfig {
    fn default() -> Self {
        Self {
            encoder_depths: vec![3, 3, 9, 3],
            encoder_dims: vec![96, 192, 384, 768],
            decoder_depths: vec![3, 3, 9, 3],
            decoder_dims: vec![384, 192, 96, 1],
            lambda_min: 3500.0,
            resolution: 0.8,
            num_pixels: 8704,
            latent_channels: 512,
            embedding_dim: 4,
            clip_ivar: Some(100.0),
            clip_flux: None,
            input_scaling: 0.2,
            normalization_range: [-1.0, 5.0],
            codebook_size: 1024,
            dim: 10,
        }
    }
}

impl SpectrumConfig {
    /// The released codec's configuration as inferred in spec §2.2 (the Hub file is gated):
    /// the defaults with `latent_channels = 768`, `embedding_dim = 10`.
    pub fn released() -> Self {
        Self {
            latent_channels: 768,
            embedding_dim: 10,
            ..Self::default()
        }
    }

    /// The released architecture at test size (the parity fixture's: one block per stage,
    /// channels 8…64; same grid, codebook and 273 tokens as the released codec).
    pub fn tiny() -> Self {
        Self {
            encoder_depths: vec![1; 4],
            encoder_dims: vec![8, 16, 32, 64],
            decoder_depths: vec![1; 4],
            decoder_dims: vec![32, 16, 8, 1],
            latent_channels: 64,
            embedding_dim: 10,
            ..Self::default()
        }
    }

    /// Reads and [validates](Self::validate) a `config.json`.
    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let config: Self =
            serde_json::from_str(&text).map_err(|e| Error::config(path, e.to_string()))?;
        config.validate().map_err(|m| Error::config(path, m))?;
        Ok(config)
    }

    /// Encoder length reduction: `4·2^(stages−1)`.
    pub fn downsampling(&self) -> usize {
        4 << self.encoder_dims.len().saturating_sub(1)
    }

    /// Decoder length expansion: `2·2^(stages−2)·4` (the last upsampling has k = s = 4).
    pub fn upsampling(&self) -> usize {
        match self.decoder_dims.len() {
            0 => 1,
            1 => 2,
            n => 2 << (n - 2) << 2,
        }
    }

    /// Latent positions per spectrum (272 for the released codec).
    pub fn latent_len(&self) -> usize {
        self.num_pixels / self.downsampling()
    }

    /// Tokens per spectrum: the normalisation token plus one per latent position (273).
    pub fn num_tokens(&self) -> usize {
        1 + self.latent_len()
    }

    /// Checks what the reference asserts (`encoder_dims[-1] == latent_channels`) and what it
    /// would only get wrong later (LFQ projections, lengths that do not round-trip, a 2-channel
    /// decoder, which this implementation does not support).
    pub fn validate(&self) -> std::result::Result<(), String> {
        let fail = |m: String| Err(m);
        if self.encoder_dims.is_empty() || self.encoder_dims.len() != self.encoder_depths.len() {
            return fail(
                "encoder_dims and encoder_depths must be non-empty and equally long".into(),
            );
        }
        if self.decoder_dims.len() < 2 || self.decoder_dims.len() != self.decoder_depths.len() {
            return fail(
                "decoder_dims and decoder_depths must be equally long, with ≥ 2 stages".into(),
            );
        }
        if self.encoder_dims.last() != Some(&self.latent_channels) {
            return fail(format!(
                "latent_channels {} differs from the last encoder dim {:?}",
                self.latent_channels,
                self.encoder_dims.last()
            ));
        }
        if self.embedding_dim != self.dim {
            return fail(format!(
                "embedding_dim {} != dim {}: LFQ projections are not supported",
                self.embedding_dim, self.dim
            ));
        }
        if self.dim >= 31 || self.codebook_size != 1 << self.dim {
            return fail(format!(
                "codebook_size {} is not 2^dim (dim {}): LFQ projections are not supported",
                self.codebook_size, self.dim
            ));
        }
        if self.decoder_dims.last() != Some(&1) {
            return fail("only a decoder with 1 output channel (flux) is supported".into());
        }
        let (down, up) = (self.downsampling(), self.upsampling());
        if down != up || self.num_pixels == 0 || !self.num_pixels.is_multiple_of(down) {
            return fail(format!(
                "num_pixels {} must be a positive multiple of the encoder's reduction {down}, \
                 which must equal the decoder's expansion {up}",
                self.num_pixels
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn released_config_is_consistent_and_has_273_tokens() {
        let c = SpectrumConfig::released();
        c.validate().unwrap();
        assert_eq!(c.num_tokens(), 273);
        assert!(SpectrumConfig::default().validate().is_err());
        assert_eq!(c.grid_description(), "3500 + 0.8 i Angstrom, i = 0..8703");
        let other = SpectrumConfig {
            lambda_min: 3600.5,
            resolution: 1.0,
            num_pixels: 100,
            ..c
        };
        assert_eq!(other.grid_description(), "3600.5 + 1 i Angstrom, i = 0..99");
    }

    #[test]
    fn partial_json_takes_defaults_and_null_clip() {
        let c: SpectrumConfig = serde_json::from_str(
            r#"{"latent_channels": 768, "embedding_dim": 10, "clip_ivar": null}"#,
        )
        .unwrap();
        assert_eq!(c.clip_ivar, None);
        assert_eq!(c.encoder_dims, vec![96, 192, 384, 768]);
        assert!(serde_json::from_str::<SpectrumConfig>(r#"{"bogus": 1}"#).is_err());
    }
}
