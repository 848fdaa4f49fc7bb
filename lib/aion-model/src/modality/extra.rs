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
//! Registering leaks one [`ModalityInfo`] per new token key into `'static` memory (once per
//! process and key), after which the extra modality behaves like a built-in one:
//! [`super::by_token_key`], [`super::modality_index`] and [`super::all`] see it, `config.json`
//! may name it in `domains_in` / `domains_out`, and its codec loads from `codecs/<codec_dir>/`.
//! Only single-token scalar codecs (`Scalar`, `LogScalar`) are supported for extras.
//!
//! Naming convention: `tok_<quantity>_<band>_<survey>` (e.g. `tok_mag_u_sdss`), following the
//! reference's `tok_flux_g_gaia`; the codec folder is the catalogue column it was fitted on.

use std::path::Path;
use std::sync::RwLock;

use serde::{Deserialize, Serialize};

use super::{CodecKind, MODALITIES, ModalityInfo, TokenLayout, modality_id};
use crate::error::{Error, Result};
use crate::hub::layout;

/// The per-row flag masks of the tools are `u64`: built-ins plus extras may not exceed this.
pub const MAX_MODALITIES: usize = 64;

const FORMAT: &str = "aion-hpc/extra-modalities";

/// Registered extra modalities, in registration order (append-only).
static EXTRAS: RwLock<Vec<&'static ModalityInfo>> = RwLock::new(Vec::new());

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
    /// Checks the description on its own (not against the registry).
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

    fn info(&self, codec: CodecKind) -> ModalityInfo {
        let leak = |s: &str| -> &'static str { Box::leak(s.to_owned().into_boxed_str()) };
        ModalityInfo {
            token_key: leak(&self.token_key),
            class_name: leak(self.class_name.as_deref().unwrap_or(&self.token_key)),
            codec_dir: leak(&self.codec_dir),
            codec,
            vocab: self.vocab,
            layout: TokenLayout::Grid {
                h: self.tokens,
                w: 1,
            },
            dataset: leak(&self.dataset),
            columns: None,
            units: leak(self.units.as_deref().unwrap_or(super::UNKNOWN_UNITS)),
            label: leak(self.label.as_deref().unwrap_or(&self.token_key)),
        }
    }
}

/// The registered extra modalities, in registration order.
pub fn extras() -> Vec<&'static ModalityInfo> {
    EXTRAS.read().expect("registry lock").clone()
}

/// Registers one extra modality and returns its (now `'static`) facts. Registering the same
/// description again returns the existing entry; a different description under a registered
/// key, a built-in key, a modality-id collision or more than [`MAX_MODALITIES`] modalities in
/// total are errors.
pub fn register(spec: &ExtraModality) -> Result<&'static ModalityInfo> {
    let bad = |m: String| Error::Input(format!("extra modality: {m}"));
    let kind = spec.validate().map_err(bad)?;
    let candidate = spec.info(kind);
    let key = spec.token_key.as_str();
    if MODALITIES.iter().any(|m| m.token_key == key) {
        return Err(bad(format!("{key} is a built-in modality")));
    }
    let mut extras = EXTRAS.write().expect("registry lock");
    if let Some(&existing) = extras.iter().find(|m| m.token_key == key) {
        return if *existing == candidate {
            Ok(existing)
        } else {
            Err(bad(format!(
                "{key} is already registered with other facts ({existing:?})"
            )))
        };
    }
    let id = modality_id(key);
    if let Some(other) = MODALITIES
        .iter()
        .chain(extras.iter().copied())
        .find(|m| m.id() == id)
    {
        return Err(bad(format!(
            "{key} has modality id {id}, the same as {} (choose another key)",
            other.token_key
        )));
    }
    if MODALITIES.len() + extras.len() >= MAX_MODALITIES {
        return Err(bad(format!(
            "cannot register {key}: at most {MAX_MODALITIES} modalities in total"
        )));
    }
    let info: &'static ModalityInfo = Box::leak(Box::new(candidate));
    extras.push(info);
    Ok(info)
}

/// Registers the extra modalities a model directory lists (none when it has no
/// `modalities.json`) and returns them.
pub fn register_dir(dir: &Path) -> Result<Vec<&'static ModalityInfo>> {
    let Some(file) = ExtraModalitiesFile::read_dir(dir)? else {
        return Ok(Vec::new());
    };
    let path = layout::extras(dir);
    file.modalities
        .iter()
        .map(|spec| {
            register(spec).map_err(|e| match e {
                Error::Input(m) => Error::config(&path, m),
                other => other,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(key: &str, vocab: usize) -> ExtraModality {
        ExtraModality {
            token_key: key.into(),
            codec: "Scalar".into(),
            codec_dir: "mag_x".into(),
            vocab,
            tokens: 1,
            dataset: "mag_x".into(),
            class_name: None,
            units: None,
            label: None,
        }
    }

    #[test]
    fn registered_modalities_are_found_like_built_ins() {
        let m = register(&spec("tok_test_reg_a", 64)).unwrap();
        assert_eq!(m.vocab, 64);
        assert_eq!(m.num_tokens(), 1);
        assert!(std::ptr::eq(
            super::super::by_token_key("tok_test_reg_a").unwrap(),
            m
        ));
        let i = super::super::modality_index("tok_test_reg_a").unwrap();
        assert!(i >= MODALITIES.len());
        assert!(super::super::all().any(|x| x.token_key == "tok_test_reg_a"));
        // Same facts again: the same entry; other facts: an error.
        assert!(std::ptr::eq(
            register(&spec("tok_test_reg_a", 64)).unwrap(),
            m
        ));
        let e = register(&spec("tok_test_reg_a", 65))
            .unwrap_err()
            .to_string();
        assert!(e.contains("already registered"), "{e}");
    }

    #[test]
    fn bad_descriptions_are_refused() {
        let e = |s: ExtraModality| register(&s).unwrap_err().to_string();
        assert!(e(spec("tok_flux_g", 64)).contains("built-in"));
        assert!(e(spec("mag_u", 64)).contains("must start with tok_"));
        assert!(e(spec("tok_Bad", 64)).contains("must start with tok_"));
        assert!(e(spec("tok_test_vocab", 1)).contains("vocab"));
        let mut s = spec("tok_test_dir", 8);
        s.codec_dir = "../x".into();
        assert!(e(s).contains("plain folder"));
        let mut s = spec("tok_test_codec", 8);
        s.codec = "Image".into();
        assert!(e(s).contains("not supported"));
    }

    #[test]
    fn file_round_trip_and_register_dir() {
        let dir = std::env::temp_dir().join(format!("aion-extra-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        assert!(register_dir(&dir).unwrap().is_empty());
        let f = ExtraModalitiesFile::new(vec![spec("tok_test_file_a", 16)]);
        f.write_dir(&dir).unwrap();
        assert_eq!(ExtraModalitiesFile::read_dir(&dir).unwrap().unwrap(), f);
        let got = register_dir(&dir).unwrap();
        assert_eq!(got[0].token_key, "tok_test_file_a");
        std::fs::write(layout::extras(&dir), "{\"format\":\"x\"}").unwrap();
        assert!(register_dir(&dir).is_err());
        std::fs::remove_dir_all(&dir).ok();
    }
}
