//! The AION-1 modalities: one constant table, not one type per modality.
//!
//! Port of the facts in `aion/modalities.py`, `aion/codecs/config.py` (codec per modality) and
//! `aion/fourm/modality_info.py` (vocabulary, token grid) of `polymathic-aion` 0.0.2.
//! `dataset` is the Multimodal Universe (MMU) HDF5 dataset that feeds the modality by default;
//! a run can remap it (`--map TOKEN_KEY=DATASET`).

use std::borrow::Cow;

use sha2::{Digest, Sha256};

pub mod extra;
mod table;

pub use extra::ExtraModality;
pub use table::{MAX_MODALITIES, Modality, ModalityTable};

/// Which codec turns a modality's raw values into tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CodecKind {
    /// MagViT auto-encoder + FSQ (`ImageCodec`).
    Image,
    /// ConvNeXt-V2 1-D auto-encoder + LFQ (`SpectrumCodec`).
    Spectrum,
    /// Quantile table in linear space (`ScalarCodec`).
    Scalar,
    /// Quantile table in log space (`LogScalarCodec`).
    LogScalar,
    /// One quantile table per channel after compression functions (`MultiScalarCodec`).
    MultiScalar,
    /// Fixed linear grid on [0, 1] (`GridScalarCodec`, redshift).
    GridScalar,
    /// Object list of a cutout (`CatalogCodec`).
    Catalog,
    /// Segmentation map auto-encoder + FSQ (`ScalarFieldCodec`).
    ScalarField,
}

impl CodecKind {
    /// Whether this is one of the four quantile/grid scalar codecs.
    pub fn is_scalar(self) -> bool {
        matches!(
            self,
            Self::Scalar | Self::LogScalar | Self::MultiScalar | Self::GridScalar
        )
    }
}

/// How the transformer embeds the modality's tokens (4M's `type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenLayout {
    /// `"img"` type: a fixed number of tokens on an `h × w` grid with 2-D sin-cos positions.
    Grid {
        /// Grid height (`image_size[0] / patch_size`).
        h: usize,
        /// Grid width.
        w: usize,
    },
    /// `"seq_token"` type (the catalog): a variable-length sequence with 1-D sin-cos positions.
    Sequence {
        /// Maximum sequence length the modality was trained with.
        max_length: usize,
    },
}

/// The facts about one modality: a built-in's are `const` ([`MODALITIES`], borrowed strings),
/// an extra modality's come from its model directory's `modalities.json` (owned strings, held
/// by a [`ModalityTable`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModalityInfo {
    /// Key in token dictionaries and in the transformer (`tok_flux_g`, …).
    pub token_key: Text,
    /// Reference class name in `aion.modalities`.
    pub class_name: Text,
    /// Codec folder in the Hub layout: `codecs/<codec_dir>/`.
    pub codec_dir: Text,
    /// Codec kind.
    pub codec: CodecKind,
    /// Transformer vocabulary size.
    pub vocab: usize,
    /// Token layout.
    pub layout: TokenLayout,
    /// Default MMU dataset (or dataset prefix for images, spectra and catalogs).
    pub dataset: Text,
    /// For multi-channel scalars stored in one dataset: the column range used.
    pub columns: Option<(usize, usize)>,
    /// Units of the modality's values (and of decoded tokens, posteriors, generated values),
    /// as a string astropy's `Unit()` and FITS `TUNIT` read: `""` = dimensionless (redshift,
    /// ellipticities), `"mag"`, `"nmgy"` (nanomaggies), `"deg"`, …; [`UNKNOWN_UNITS`] for an
    /// extra modality whose `modalities.json` does not say.
    pub units: Text,
    /// Axis label for figures and the `label` attribute of output datasets ("redshift z",
    /// "g-band flux (Legacy Survey)", …).
    pub label: Text,
}

/// A string of [`ModalityInfo`]: borrowed for the built-ins, owned for extra modalities.
pub type Text = Cow<'static, str>;

/// The `units` of an extra modality whose description gives none.
pub const UNKNOWN_UNITS: &str = "unknown";

impl ModalityInfo {
    /// Tokens per object (for the catalog: the maximum length).
    pub fn num_tokens(&self) -> usize {
        match self.layout {
            TokenLayout::Grid { h, w } => h * w,
            TokenLayout::Sequence { max_length } => max_length,
        }
    }

    /// The 15-bit modality id: `sha256(token_key) mod 2^15` (4M's `id`).
    pub fn id(&self) -> u16 {
        modality_id(&self.token_key)
    }

    /// The axis title of a figure: the label with its units in brackets when it has units
    /// (`"g-band flux (Legacy Survey) [nmgy]"`, `"redshift z"`).
    pub fn axis_title(&self) -> String {
        if self.units.is_empty() || self.units == UNKNOWN_UNITS {
            self.label.to_string()
        } else {
            format!("{} [{}]", self.label, self.units)
        }
    }
}

/// The facts of a built-in modality as `const` values can build them: [`ModalityInfo`] has
/// owned strings (for extras), so a `const` cannot copy one; this `Copy` twin can.
#[derive(Clone, Copy)]
struct Facts {
    token_key: &'static str,
    class_name: &'static str,
    codec_dir: &'static str,
    codec: CodecKind,
    vocab: usize,
    layout: TokenLayout,
    dataset: &'static str,
    columns: Option<(usize, usize)>,
    units: &'static str,
    label: &'static str,
}

impl Facts {
    /// The modality these facts describe.
    const fn info(self) -> ModalityInfo {
        ModalityInfo {
            token_key: Cow::Borrowed(self.token_key),
            class_name: Cow::Borrowed(self.class_name),
            codec_dir: Cow::Borrowed(self.codec_dir),
            codec: self.codec,
            vocab: self.vocab,
            layout: self.layout,
            dataset: Cow::Borrowed(self.dataset),
            columns: self.columns,
            units: Cow::Borrowed(self.units),
            label: Cow::Borrowed(self.label),
        }
    }

    /// The modality with `units` and `label` set.
    const fn described(self, units: &'static str, label: &'static str) -> ModalityInfo {
        Facts {
            units,
            label,
            ..self
        }
        .info()
    }
}

/// `int(sha256(key).hexdigest(), 16) % 2**15`: only the last two bytes of the digest matter.
pub fn modality_id(token_key: &str) -> u16 {
    let digest = Sha256::digest(token_key.as_bytes());
    let lo = u16::from_be_bytes([digest[30], digest[31]]);
    lo & 0x7fff
}

const fn scalar(
    token_key: &'static str,
    class_name: &'static str,
    codec_dir: &'static str,
    codec: CodecKind,
    dataset: &'static str,
) -> Facts {
    Facts {
        token_key,
        class_name,
        codec_dir,
        codec,
        vocab: 1024,
        layout: TokenLayout::Grid { h: 1, w: 1 },
        dataset,
        columns: None,
        units: "",
        label: token_key,
    }
}

use CodecKind::{GridScalar, LogScalar, Scalar};

/// Every modality AION-1 knows, in the order of the reference's `MODALITY_INFO`-based domains.
pub const MODALITIES: &[ModalityInfo] = &[
    Facts {
        token_key: "tok_image",
        class_name: "LegacySurveyImage",
        codec_dir: "image",
        codec: CodecKind::Image,
        vocab: 4375,
        layout: TokenLayout::Grid { h: 24, w: 24 },
        dataset: "image",
        columns: None,
        units: "nmgy",
        label: "Legacy Survey image flux",
    }
    .info(),
    Facts {
        token_key: "tok_image_hsc",
        class_name: "HSCImage",
        codec_dir: "image",
        codec: CodecKind::Image,
        vocab: 4375,
        layout: TokenLayout::Grid { h: 24, w: 24 },
        dataset: "image",
        columns: None,
        units: "10**(-1.8) nmgy",
        label: "HSC image flux",
    }
    .info(),
    Facts {
        token_key: "tok_spectrum_desi",
        class_name: "DESISpectrum",
        codec_dir: "spectrum",
        codec: CodecKind::Spectrum,
        vocab: 1024,
        layout: TokenLayout::Grid { h: 273, w: 1 },
        dataset: "spectrum",
        columns: None,
        units: "1e-17 erg / (s cm2 Angstrom)",
        label: "DESI spectral flux density",
    }
    .info(),
    Facts {
        token_key: "tok_spectrum_sdss",
        class_name: "SDSSSpectrum",
        codec_dir: "spectrum",
        codec: CodecKind::Spectrum,
        vocab: 1024,
        layout: TokenLayout::Grid { h: 273, w: 1 },
        dataset: "spectrum",
        columns: None,
        units: "1e-17 erg / (s cm2 Angstrom)",
        label: "SDSS spectral flux density",
    }
    .info(),
    Facts {
        token_key: "tok_segmap",
        class_name: "LegacySurveySegmentationMap",
        codec_dir: "segmentation_map",
        codec: CodecKind::ScalarField,
        vocab: 1000,
        layout: TokenLayout::Grid { h: 12, w: 12 },
        dataset: "segmap",
        columns: None,
        units: "",
        label: "segmentation map",
    }
    .info(),
    Facts {
        token_key: "catalog",
        class_name: "LegacySurveyCatalog",
        codec_dir: "catalog",
        codec: CodecKind::Catalog,
        vocab: 3468,
        layout: TokenLayout::Sequence { max_length: 50 },
        dataset: "catalog",
        columns: None,
        units: "",
        label: "object catalogue of the cutout",
    }
    .info(),
    scalar(
        "tok_flux_g",
        "LegacySurveyFluxG",
        "FLUX_G",
        LogScalar,
        "FLUX_G",
    )
    .described("nmgy", "g-band flux (Legacy Survey)"),
    scalar(
        "tok_flux_r",
        "LegacySurveyFluxR",
        "FLUX_R",
        LogScalar,
        "FLUX_R",
    )
    .described("nmgy", "r-band flux (Legacy Survey)"),
    scalar(
        "tok_flux_i",
        "LegacySurveyFluxI",
        "FLUX_I",
        LogScalar,
        "FLUX_I",
    )
    .described("nmgy", "i-band flux (Legacy Survey)"),
    scalar(
        "tok_flux_z",
        "LegacySurveyFluxZ",
        "FLUX_Z",
        LogScalar,
        "FLUX_Z",
    )
    .described("nmgy", "z-band flux (Legacy Survey)"),
    scalar(
        "tok_flux_w1",
        "LegacySurveyFluxW1",
        "FLUX_W1",
        LogScalar,
        "FLUX_W1",
    )
    .described("nmgy", "W1 flux (WISE, Legacy Survey)"),
    scalar(
        "tok_flux_w2",
        "LegacySurveyFluxW2",
        "FLUX_W2",
        LogScalar,
        "FLUX_W2",
    )
    .described("nmgy", "W2 flux (WISE, Legacy Survey)"),
    scalar(
        "tok_flux_w3",
        "LegacySurveyFluxW3",
        "FLUX_W3",
        LogScalar,
        "FLUX_W3",
    )
    .described("nmgy", "W3 flux (WISE, Legacy Survey)"),
    scalar(
        "tok_flux_w4",
        "LegacySurveyFluxW4",
        "FLUX_W4",
        LogScalar,
        "FLUX_W4",
    )
    .described("nmgy", "W4 flux (WISE, Legacy Survey)"),
    scalar(
        "tok_shape_r",
        "LegacySurveyShapeR",
        "SHAPE_R",
        LogScalar,
        "SHAPE_R",
    )
    .described("arcsec", "half-light radius (Legacy Survey)"),
    scalar(
        "tok_shape_e1",
        "LegacySurveyShapeE1",
        "SHAPE_E1",
        Scalar,
        "SHAPE_E1",
    )
    .described("", "ellipticity e1 (Legacy Survey)"),
    scalar(
        "tok_shape_e2",
        "LegacySurveyShapeE2",
        "SHAPE_E2",
        Scalar,
        "SHAPE_E2",
    )
    .described("", "ellipticity e2 (Legacy Survey)"),
    scalar("tok_ebv", "LegacySurveyEBV", "EBV", Scalar, "EBV").described("mag", "reddening E(B−V)"),
    Facts {
        vocab: 1025,
        ..scalar("tok_z", "Z", "Z", GridScalar, "Z")
    }
    .described("", "redshift z"),
    scalar("tok_a_g", "HSCAG", "a_g", Scalar, "a_g").described("mag", "g-band extinction (HSC)"),
    scalar("tok_a_r", "HSCAR", "a_r", Scalar, "a_r").described("mag", "r-band extinction (HSC)"),
    scalar("tok_a_i", "HSCAI", "a_i", Scalar, "a_i").described("mag", "i-band extinction (HSC)"),
    scalar("tok_a_z", "HSCAZ", "a_z", Scalar, "a_z").described("mag", "z-band extinction (HSC)"),
    scalar("tok_a_y", "HSCAY", "a_y", Scalar, "a_y").described("mag", "y-band extinction (HSC)"),
    scalar(
        "tok_mag_g",
        "HSCMagG",
        "g_cmodel_mag",
        Scalar,
        "g_cmodel_mag",
    )
    .described("mag", "g-band cmodel magnitude (HSC)"),
    scalar(
        "tok_mag_r",
        "HSCMagR",
        "r_cmodel_mag",
        Scalar,
        "r_cmodel_mag",
    )
    .described("mag", "r-band cmodel magnitude (HSC)"),
    scalar(
        "tok_mag_i",
        "HSCMagI",
        "i_cmodel_mag",
        Scalar,
        "i_cmodel_mag",
    )
    .described("mag", "i-band cmodel magnitude (HSC)"),
    scalar(
        "tok_mag_z",
        "HSCMagZ",
        "z_cmodel_mag",
        Scalar,
        "z_cmodel_mag",
    )
    .described("mag", "z-band cmodel magnitude (HSC)"),
    scalar(
        "tok_mag_y",
        "HSCMagY",
        "y_cmodel_mag",
        Scalar,
        "y_cmodel_mag",
    )
    .described("mag", "y-band cmodel magnitude (HSC)"),
    scalar(
        "tok_shape11",
        "HSCShape11",
        "i_sdssshape_shape11",
        Scalar,
        "i_sdssshape_shape11",
    )
    .described("arcsec2", "i-band second moment I11 (HSC)"),
    scalar(
        "tok_shape22",
        "HSCShape22",
        "i_sdssshape_shape22",
        Scalar,
        "i_sdssshape_shape22",
    )
    .described("arcsec2", "i-band second moment I22 (HSC)"),
    scalar(
        "tok_shape12",
        "HSCShape12",
        "i_sdssshape_shape12",
        Scalar,
        "i_sdssshape_shape12",
    )
    .described("arcsec2", "i-band second moment I12 (HSC)"),
    scalar(
        "tok_flux_g_gaia",
        "GaiaFluxG",
        "phot_g_mean_flux",
        LogScalar,
        "phot_g_mean_flux",
    )
    .described("electron / s", "G mean flux (Gaia)"),
    scalar(
        "tok_flux_bp_gaia",
        "GaiaFluxBp",
        "phot_bp_mean_flux",
        LogScalar,
        "phot_bp_mean_flux",
    )
    .described("electron / s", "BP mean flux (Gaia)"),
    scalar(
        "tok_flux_rp_gaia",
        "GaiaFluxRp",
        "phot_rp_mean_flux",
        LogScalar,
        "phot_rp_mean_flux",
    )
    .described("electron / s", "RP mean flux (Gaia)"),
    scalar(
        "tok_parallax",
        "GaiaParallax",
        "parallax",
        LogScalar,
        "parallax",
    )
    .described("mas", "parallax (Gaia)"),
    scalar("tok_ra", "Ra", "ra", Scalar, "ra").described("deg", "right ascension"),
    scalar("tok_dec", "Dec", "dec", Scalar, "dec").described("deg", "declination"),
    Facts {
        layout: TokenLayout::Grid { h: 55, w: 1 },
        columns: Some((0, 55)),
        ..scalar(
            "tok_xp_bp",
            "GaiaXpBp",
            "bp_coefficients",
            CodecKind::MultiScalar,
            "coeff",
        )
    }
    .described("electron / s", "BP spectrum coefficients (Gaia XP)"),
    Facts {
        layout: TokenLayout::Grid { h: 55, w: 1 },
        columns: Some((55, 110)),
        ..scalar(
            "tok_xp_rp",
            "GaiaXpRp",
            "rp_coefficients",
            CodecKind::MultiScalar,
            "coeff",
        )
    }
    .described("electron / s", "RP spectrum coefficients (Gaia XP)"),
];

/// Looks a built-in modality up by token key. Extra modalities are only known to the
/// [`ModalityTable`] of their model directory: a tool resolves keys through that table
/// ([`crate::ModelDir::modalities`]); this function serves code that only ever deals with the
/// 40 built-ins (the presets, tests, examples).
pub fn by_token_key(token_key: &str) -> Option<&'static ModalityInfo> {
    MODALITIES.iter().find(|m| m.token_key == token_key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_match_the_reference_table() {
        // Values from aion-spec.md §1.1 (computed by the reference's MODALITY_INFO).
        let t = |key: &str, id: u16| assert_eq!(by_token_key(key).unwrap().id(), id, "{key}");
        t("tok_image", 18665);
        t("tok_image_hsc", 13799);
        t("tok_spectrum_desi", 289);
        t("tok_spectrum_sdss", 2489);
        t("tok_segmap", 11864);
        t("catalog", 12119);
        t("tok_flux_g", 14685);
        t("tok_z", 9755);
        t("tok_mag_g", 28104);
        t("tok_a_r", 1702);
        t("tok_shape12", 31216);
        t("tok_parallax", 2340);
        t("tok_xp_bp", 14064);
        t("tok_xp_rp", 13385);
    }

    #[test]
    fn table_is_complete_and_unique() {
        assert_eq!(MODALITIES.len(), 40);
        let mut keys: Vec<_> = MODALITIES.iter().map(|m| &m.token_key).collect();
        keys.sort_unstable();
        keys.dedup();
        assert_eq!(keys.len(), 40);
        assert_eq!(by_token_key("tok_z").unwrap().vocab, 1025);
        assert_eq!(by_token_key("tok_image").unwrap().num_tokens(), 576);
        assert_eq!(by_token_key("tok_spectrum_sdss").unwrap().num_tokens(), 273);
        assert_eq!(by_token_key("tok_xp_rp").unwrap().columns, Some((55, 110)));
    }
}
