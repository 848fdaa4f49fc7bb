//! [`ModalityTable`]: the modalities one model directory knows, and [`Modality`], a cheap
//! handle on one of them.

use std::fmt;
use std::ops::Deref;
use std::path::Path;
use std::sync::Arc;

use super::extra::{ExtraModalitiesFile, ExtraModality};
use super::{MODALITIES, ModalityInfo, modality_id};
use crate::error::{Error, Result};
use crate::hub::layout;

/// The per-row flag masks of the tools are `u64`: built-ins plus extras may not exceed this.
pub const MAX_MODALITIES: usize = 64;

/// A handle on one modality's facts, cheap to clone and to keep (in a token batch, a codec, a
/// model's embedding): a built-in's `'static` entry of [`MODALITIES`], or an extra modality
/// shared with the [`ModalityTable`] that read it. It dereferences to [`ModalityInfo`];
/// two handles are equal when their facts are. Functions that keep a modality take
/// `impl Into<Modality>` (a built-in `&'static ModalityInfo`, a `Modality` or a `&Modality`);
/// functions that only read one take `&ModalityInfo`.
#[derive(Clone)]
pub enum Modality {
    /// One of the 40 built-ins.
    Builtin(&'static ModalityInfo),
    /// An extra modality of a model directory (`modalities.json`).
    Extra(Arc<ModalityInfo>),
}

impl Deref for Modality {
    type Target = ModalityInfo;

    fn deref(&self) -> &ModalityInfo {
        match self {
            Self::Builtin(m) => m,
            Self::Extra(m) => m,
        }
    }
}

impl From<&'static ModalityInfo> for Modality {
    fn from(m: &'static ModalityInfo) -> Self {
        Self::Builtin(m)
    }
}

impl From<&Modality> for Modality {
    fn from(m: &Modality) -> Self {
        m.clone()
    }
}

impl PartialEq for Modality {
    fn eq(&self, other: &Self) -> bool {
        **self == **other
    }
}

impl Eq for Modality {}

impl fmt::Debug for Modality {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        (**self).fmt(f)
    }
}

/// The modalities a model knows: the 40 built-ins ([`MODALITIES`]), then the extra modalities
/// of its directory in `modalities.json` order. [`crate::ModelDir::open`] builds it once and
/// every tool path resolves token keys through it; [`index`](Self::index) is the bit of a
/// modality in the tools' per-row flag masks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ModalityTable {
    extras: Vec<Arc<ModalityInfo>>,
}

impl ModalityTable {
    /// The built-in modalities alone.
    pub fn builtin() -> Self {
        Self::default()
    }

    /// The built-ins plus the extra modalities directory `dir` lists (none when it has no
    /// `modalities.json`); errors name that file.
    pub fn read_dir(dir: &Path) -> Result<Self> {
        let mut table = Self::builtin();
        let Some(file) = ExtraModalitiesFile::read_dir(dir)? else {
            return Ok(table);
        };
        let path = layout::extras(dir);
        for spec in &file.modalities {
            table.add(spec).map_err(|e| match e {
                Error::Input(m) => Error::config(&path, m),
                other => other,
            })?;
        }
        Ok(table)
    }

    /// Adds one extra modality and returns it. Adding the same description again returns the
    /// existing entry; a different description under a known key, a built-in key, a
    /// modality-id collision or more than [`MAX_MODALITIES`] modalities in total are errors.
    pub fn add(&mut self, spec: &ExtraModality) -> Result<Modality> {
        let bad = |m: String| Error::Input(format!("extra modality: {m}"));
        let kind = spec.validate().map_err(bad)?;
        let candidate = spec.info(kind);
        let key = spec.token_key.as_str();
        if MODALITIES.iter().any(|m| m.token_key == key) {
            return Err(bad(format!("{key} is a built-in modality")));
        }
        if let Some(existing) = self.extras.iter().find(|m| m.token_key == key) {
            return if **existing == candidate {
                Ok(Modality::Extra(existing.clone()))
            } else {
                Err(bad(format!(
                    "{key} is already registered with other facts ({:?})",
                    **existing
                )))
            };
        }
        let id = modality_id(key);
        if let Some(other) = self.iter().find(|m| m.id() == id) {
            return Err(bad(format!(
                "{key} has modality id {id}, the same as {} (choose another key)",
                other.token_key
            )));
        }
        if self.len() >= MAX_MODALITIES {
            return Err(bad(format!(
                "cannot register {key}: at most {MAX_MODALITIES} modalities in total"
            )));
        }
        let info = Arc::new(candidate);
        self.extras.push(info.clone());
        Ok(Modality::Extra(info))
    }

    /// The modality with token key `key`.
    pub fn get(&self, key: &str) -> Option<Modality> {
        self.iter().find(|m| m.token_key == key)
    }

    /// The position of modality `key` in [`iter`](Self::iter) (the bit of the per-row flag
    /// masks).
    pub fn index(&self, key: &str) -> Option<usize> {
        self.iter().position(|m| m.token_key == key)
    }

    /// Every modality: the built-ins, then the extras in file order.
    pub fn iter(&self) -> impl Iterator<Item = Modality> + '_ {
        MODALITIES
            .iter()
            .map(Modality::Builtin)
            .chain(self.extras())
    }

    /// The extra modalities, in file order.
    pub fn extras(&self) -> impl Iterator<Item = Modality> + '_ {
        self.extras.iter().cloned().map(Modality::Extra)
    }

    /// How many modalities the table holds (built-ins included).
    pub fn len(&self) -> usize {
        MODALITIES.len() + self.extras.len()
    }

    /// Never true (the built-ins are always there); for clippy's `len_without_is_empty`.
    pub fn is_empty(&self) -> bool {
        false
    }
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
    fn added_modalities_are_found_like_built_ins() {
        let mut table = ModalityTable::builtin();
        let m = table.add(&spec("tok_test_reg_a", 64)).unwrap();
        assert_eq!(m.vocab, 64);
        assert_eq!(m.num_tokens(), 1);
        assert_eq!(table.get("tok_test_reg_a").unwrap(), m);
        let i = table.index("tok_test_reg_a").unwrap();
        assert!(i >= MODALITIES.len());
        assert!(table.iter().any(|x| x.token_key == "tok_test_reg_a"));
        assert_eq!(table.get("tok_z").unwrap().vocab, 1025);
        assert_eq!(table.index("tok_image"), Some(0));
        // Only the table that read it knows an extra.
        assert!(ModalityTable::builtin().get("tok_test_reg_a").is_none());
        assert!(super::super::by_token_key("tok_test_reg_a").is_none());
        // Same facts again: the same entry; other facts: an error.
        assert_eq!(table.add(&spec("tok_test_reg_a", 64)).unwrap(), m);
        assert_eq!(table.len(), MODALITIES.len() + 1);
        let e = table
            .add(&spec("tok_test_reg_a", 65))
            .unwrap_err()
            .to_string();
        assert!(e.contains("already registered"), "{e}");
    }

    #[test]
    fn bad_descriptions_are_refused() {
        let e = |s: ExtraModality| ModalityTable::builtin().add(&s).unwrap_err().to_string();
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
        let mut full = ModalityTable::builtin();
        for i in 0..MAX_MODALITIES - MODALITIES.len() {
            full.add(&spec(&format!("tok_test_full_{i}"), 8)).unwrap();
        }
        let e = full
            .add(&spec("tok_test_full_x", 8))
            .unwrap_err()
            .to_string();
        assert!(e.contains("at most 64"), "{e}");
    }

    #[test]
    fn file_round_trip_and_read_dir() {
        let dir = std::env::temp_dir().join(format!("aion-extra-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        assert_eq!(
            ModalityTable::read_dir(&dir).unwrap(),
            ModalityTable::builtin()
        );
        let f = ExtraModalitiesFile::new(vec![spec("tok_test_file_a", 16)]);
        f.write_dir(&dir).unwrap();
        assert_eq!(ExtraModalitiesFile::read_dir(&dir).unwrap().unwrap(), f);
        let got = ModalityTable::read_dir(&dir).unwrap();
        assert_eq!(got.extras().next().unwrap().token_key, "tok_test_file_a");
        std::fs::write(layout::extras(&dir), "{\"format\":\"x\"}").unwrap();
        assert!(ModalityTable::read_dir(&dir).is_err());
        std::fs::remove_dir_all(&dir).ok();
    }
}
