//! Codecs (tokenizers): raw survey data ⇄ discrete tokens.
//!
//! Port of `aion/codecs/` of `polymathic-aion` 0.0.2. One file per reference codec.

pub mod catalog;
pub mod element_fn;
pub mod image;
pub mod plausible;
pub mod scalar;
pub mod scalar_field;
pub mod scalar_fit;
pub mod spectrum;

use std::path::Path;

use burn::tensor::backend::Backend;

use crate::error::Result;
use crate::modality::{CodecKind, Modality};

/// Any codec, loaded by its modality's [`CodecKind`]: the one place that maps a kind to its
/// codec type. Tools get one from [`crate::ModelDir::codec`] and match on the variant to encode
/// or decode (each kind takes its own raw data: values, spectra, images, object lists).
pub enum AnyCodec<B: Backend> {
    /// The four quantile/grid scalar codecs (`Scalar`, `LogScalar`, `MultiScalar`,
    /// `GridScalar`).
    Scalar(scalar::ScalarCodec),
    /// The spectrum codec.
    Spectrum(Box<spectrum::SpectrumCodec<B>>),
    /// The image codec.
    Image(Box<image::ImageCodec<B>>),
    /// The segmentation-map codec.
    Field(Box<scalar_field::ScalarFieldCodec<B>>),
    /// The catalog codec.
    Catalog(catalog::CatalogCodec),
}

impl<B: Backend> AnyCodec<B> {
    /// Loads the codec of modality `m` from its codec folder `dir` (strictly, like each codec's
    /// own `load`).
    pub fn load(m: impl Into<Modality>, dir: &Path, device: &B::Device) -> Result<Self> {
        let m = m.into();
        Ok(match m.codec {
            CodecKind::Scalar
            | CodecKind::LogScalar
            | CodecKind::MultiScalar
            | CodecKind::GridScalar => Self::Scalar(scalar::ScalarCodec::load(m, dir)?),
            CodecKind::Spectrum => {
                Self::Spectrum(Box::new(spectrum::SpectrumCodec::load(dir, device)?))
            }
            CodecKind::Image => Self::Image(Box::new(image::ImageCodec::load(dir, device)?)),
            CodecKind::ScalarField => {
                Self::Field(Box::new(scalar_field::ScalarFieldCodec::load(dir, device)?))
            }
            CodecKind::Catalog => Self::Catalog(catalog::CatalogCodec::load(dir)?),
        })
    }

    /// What the codec is, for messages (`"scalar"`, `"spectrum"`, …).
    pub fn describe(&self) -> &'static str {
        match self {
            Self::Scalar(_) => "scalar",
            Self::Spectrum(_) => "spectrum",
            Self::Image(_) => "image",
            Self::Field(_) => "segmentation map",
            Self::Catalog(_) => "catalog",
        }
    }
}
