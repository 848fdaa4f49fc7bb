//! Modalities beyond the 40 of AION-1, registered at run time (a new survey's columns).
//!
//! A model directory that uses extra modalities lists them in `modalities.json` (next to
//! `config.json`; [`crate::hub::layout::extras`]):
//!
//! ```json
//! {"format": "aion-hpc/extra-modalities", "version": 1, "modalities": [
//!   {"token_key": "tok_mag_u_sdss", "codec": "Scalar", "codec_dir": "mag_u",
//!    "vocab": 1024, "tokens": 1, "dataset": "mag_u", "class_name": "SDSSMagU",
//!    "units": "mag", "label": "u-band magnitude (SDSS)"}]}
//! ```
//!
//! [`ModalityTable::read_dir`](super::ModalityTable::read_dir) (called once by
//! [`crate::ModelDir::open`]) adds them to the directory's [`ModalityTable`](super::ModalityTable),
//! after which an extra modality behaves like a built-in one for everything that resolves token
//! keys through that table: `config.json` may name it in `domains_in` / `domains_out`, and its
//! codec loads from `codecs/<codec_dir>/`. Only single-token scalar codecs (`Scalar`,
//! `LogScalar`) are supported for extras.
//!
//! Naming convention: `tok_<quantity>_<band>_<survey>` (e.g. `tok_mag_u_sdss`), following the
//! reference's `tok_flux_g_gaia`; the codec folder is the catalogue column it was fitted on.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::{CodecKind, ModalityInfo, TokenLayout};
use crate::error::{Error, Result};
use crate::hub::layout;

const FORMAT: &str = "aion-hpc/extra-modalities";

/// The description of one extra modality, as stored in `modalities.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExtraModality {
    /// Token key (`tok_…`, lower-case ASCII letters, digits and `_`).
    pub token_key: String,
    /// Codec kind: `"Scalar"` (quantiles in linear space) or `"LogScalar"` (in log space).
    pub codec: String,
    /// Codec folder under `codecs/`.
    pub codec_dir: String,
    /// Transformer vocabulary (the codec's codebook size).
    pub vocab: usize,
    /// Tokens per object (1).
    #[serde(default = "one")]
    pub tokens: usize,
    /// Default catalogue dataset that feeds the modality.
    pub dataset: String,
    /// A class-like name for messages (default: the token key).
    #[serde(default)]
    pub class_name: Option<String>,
    /// Units of the values, as astropy's `Unit()` reads them (`"mag"`, `""` = dimensionless);
    /// absent: [`super::UNKNOWN_UNITS`] in the outputs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub units: Option<String>,
    /// Axis label for figures and outputs (default: the token key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
}

fn one() -> usize {
    1
}

/// The content of `modalities.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExtraModalitiesFile {
    /// Always `"aion-hpc/extra-modalities"`.
    pub format: String,
    /// Format version (1).
    pub version: u32,
    /// The modalities.
    pub modalities: Vec<ExtraModality>,
}

impl ExtraModalitiesFile {
    /// A file listing `modalities`.
    pub fn new(modalities: Vec<ExtraModality>) -> Self {
        Self {
            format: FORMAT.into(),
            version: 1,
            modalities,
        }
    }

    /// Reads `dir/modalities.json`; `Ok(None)` when the model has no extra modalities.
    pub fn read_dir(dir: &Path) -> Result<Option<Self>> {
        let path = layout::extras(dir);
        if !path.exists() {
            return Ok(None);
        }
        let text = std::fs::read_to_string(&path).map_err(|source| Error::Io {
            path: path.clone(),
            source,
        })?;
        let file: Self =
            serde_json::from_str(&text).map_err(|e| Error::config(&path, e.to_string()))?;
        if file.format != FORMAT || file.version != 1 {
            return Err(Error::config(
                &path,
                format!("expected format {FORMAT:?} version 1"),
            ));
        }
        Ok(Some(file))
    }

    /// Writes `dir/modalities.json` (pretty JSON).
    pub fn write_dir(&self, dir: &Path) -> Result<()> {
        let path = layout::extras(dir);
        let text = serde_json::to_string_pretty(self).expect("serialisable");
        crate::fs::write_atomic(&path, format!("{text}\n").as_bytes())
    }
}

impl ExtraModality {
    /// Checks the description on its own (not against a table).
    pub fn validate(&self) -> std::result::Result<CodecKind, String> {
        let key = &self.token_key;
        let ok_chars = |s: &str| {
            !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        };
        if !key.starts_with("tok_") || !ok_chars(key) {
            return Err(format!(
                "token key {key:?} must start with tok_ and use only a-z, 0-9 and _"
            ));
        }
        let plain = |s: &str| {
            !s.is_empty()
                && s != "."
                && s != ".."
                && !s.contains(['/', '\\'])
                && s.chars().all(|c| !c.is_control())
        };
        if !plain(&self.codec_dir) {
            return Err(format!(
                "{key}: codec_dir {:?} is not a plain folder name",
                self.codec_dir
            ));
        }
        if self.dataset.is_empty() {
            return Err(format!("{key}: dataset is empty"));
        }
        let kind = match self.codec.as_str() {
            "Scalar" => CodecKind::Scalar,
            "LogScalar" => CodecKind::LogScalar,
            other => {
                return Err(format!(
                    "{key}: codec {other:?} is not supported for extra modalities (Scalar, LogScalar)"
                ));
            }
        };
        if self.vocab < 2 {
            return Err(format!("{key}: vocab {} must be at least 2", self.vocab));
        }
        if self.tokens != 1 {
            return Err(format!("{key}: only one token per object is supported"));
        }
        Ok(kind)
    }

    /// The facts of the modality (`codec` from [`validate`](Self::validate)).
    pub(super) fn info(&self, codec: CodecKind) -> ModalityInfo {
        let text = |s: &str| s.to_owned().into();
        ModalityInfo {
            token_key: text(&self.token_key),
            class_name: text(self.class_name.as_deref().unwrap_or(&self.token_key)),
            codec_dir: text(&self.codec_dir),
            codec,
            vocab: self.vocab,
            layout: TokenLayout::Grid {
                h: self.tokens,
                w: 1,
            },
            dataset: text(&self.dataset),
            columns: None,
            units: text(self.units.as_deref().unwrap_or(super::UNKNOWN_UNITS)),
            label: text(self.label.as_deref().unwrap_or(&self.token_key)),
        }
    }
}
