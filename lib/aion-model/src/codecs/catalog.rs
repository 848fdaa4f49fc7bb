//! The catalog codec (`CatalogCodec`): the objects of a Legacy Survey cutout, five tokens each,
//! and the glue to the transformer's `catalog` vocabulary.
//!
//! Port of `aion/codecs/catalog.py` with `ComposedScalarQuantizer`, `IdentityQuantizer` and
//! `ScalarReservoirQuantizer` of `aion/codecs/quantizers/scalar.py` (`polymathic-aion` 0.0.2,
//! MIT); spec §2.4. The vocabulary facts come from `aion/fourm/modality_info.py`.
//!
//! Layout: `L` object slots per cutout, fields `[X, Y, SHAPE_E1, SHAPE_E2, SHAPE_R]`; `X`, `Y`
//! are pixel indices in the 96-px crop (identity codes 0–95), the shapes use 1024-entry quantile
//! tables. Codec tokens are offset per field by `[0, 96, 192, 1216, 2240]` (3264 codes) and
//! interleaved per slot, `(B, 5L)`; an empty slot is `9999` five times.
//!
//! Deviations from the reference (which crashes or silently corrupts in these cases):
//! * a slot whose fields disagree on being empty is an error naming row and slot (the reference
//!   fails with a shape mismatch, or misplaces values when the counts happen to agree);
//! * `X`/`Y` outside `0..96` are errors (the identity quantizer would emit a code that the
//!   transformer reads as another field's value);
//! * [`CatalogCodec::to_model_ids`] / [`CatalogCodec::from_model_ids`] exist (0.0.2 has no
//!   mapping to model ids at all; spec §6.24).

pub mod mmu;

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::codecs::scalar::ScalarQuantizer;
use crate::error::{Error, Result};
use crate::hub::layout;
use crate::weights::{Init, IntType, Reservoir, Source, ValueSpace, WeightFile};

/// Field names in token order.
pub const FIELDS: [&str; 5] = ["X", "Y", "SHAPE_E1", "SHAPE_E2", "SHAPE_R"];
/// Codes of each position field (`IdentityQuantizer(96)`).
pub const POSITION_CODES: usize = 96;
/// Codes of each shape field (`ScalarReservoirQuantizer(1024, 100000)`).
pub const SHAPE_CODES: usize = 1024;
/// Reservoir length stored with each shape quantizer (unused at inference).
pub const RESERVOIR_SIZE: usize = 100_000;
/// First model id of a codec token in the transformer's `catalog` vocabulary
/// (`MODALITY_INFO["catalog"]["vocab_offset"]`: 200 sentinels, start, end, pad, unk).
pub const VOCAB_OFFSET: i64 = 204;
/// Model id of padding (`padding_idx` of the catalog embeddings).
pub const PAD_ID: i64 = 0;

/// A batch of catalogues in the reference layout: `batch` rows of `len` slots, row-major;
/// a slot whose five fields all equal the codec's empty value (9999) is empty.
#[derive(Debug, Clone, PartialEq)]
pub struct Catalog {
    /// Rows.
    pub batch: usize,
    /// Slots per row (`L`; 20 in MMU files).
    pub len: usize,
    /// Pixel column in the 96-px crop.
    pub x: Vec<i64>,
    /// Pixel row in the 96-px crop.
    pub y: Vec<i64>,
    /// Ellipticity component 1.
    pub shape_e1: Vec<f32>,
    /// Ellipticity component 2.
    pub shape_e2: Vec<f32>,
    /// Half-light radius (arcsec).
    pub shape_r: Vec<f32>,
}

impl Catalog {
    /// A batch of empty slots (`empty` in every field).
    pub fn empty(batch: usize, len: usize, empty: i64) -> Self {
        let n = batch * len;
        Self {
            batch,
            len,
            x: vec![empty; n],
            y: vec![empty; n],
            shape_e1: vec![empty as f32; n],
            shape_e2: vec![empty as f32; n],
            shape_r: vec![empty as f32; n],
        }
    }

    fn check_lengths(&self) -> Result<()> {
        let n = self.batch * self.len;
        let lens = [
            self.x.len(),
            self.y.len(),
            self.shape_e1.len(),
            self.shape_e2.len(),
            self.shape_r.len(),
        ];
        if lens.iter().any(|&l| l != n) {
            return Err(Error::Input(format!(
                "catalog fields X, Y, SHAPE_E1, SHAPE_E2, SHAPE_R have {lens:?} values, expected \
                 {} rows × {} slots = {n}",
                self.batch, self.len
            )));
        }
        Ok(())
    }
}

/// `config.json` of the catalog codec (its constructor arguments).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogConfig {
    /// Value marking an empty slot (9999).
    #[serde(default = "default_mask_value")]
    pub mask_value: i64,
}

impl Default for CatalogConfig {
    fn default() -> Self {
        Self {
            mask_value: default_mask_value(),
        }
    }
}

fn default_mask_value() -> i64 {
    9999
}

/// A loaded catalog codec.
#[derive(Debug, Clone, PartialEq)]
pub struct CatalogCodec {
    /// Value marking an empty slot, in the input fields and in codec tokens (9999).
    pub mask_value: i64,
    /// Quantile tables of SHAPE_E1, SHAPE_E2, SHAPE_R.
    shapes: [ScalarQuantizer; 3],
}

impl CatalogCodec {
    /// Loads `config.json` + `model.safetensors` from a codec folder (`codecs/catalog/`).
    ///
    /// Strict. Keys may start with `_quantizer.` (module `state_dict`) or `quantizer.`.
    pub fn load(dir: &Path) -> Result<Self> {
        let config_path = layout::config(dir);
        let text = std::fs::read_to_string(&config_path).map_err(|source| Error::Io {
            path: config_path.clone(),
            source,
        })?;
        let cfg: CatalogConfig =
            serde_json::from_str(&text).map_err(|e| Error::config(&config_path, e.to_string()))?;
        let mut w = WeightFile::open(layout::weights(dir))?;
        let codec = Self::from_weights(&cfg, &mut w);
        w.finish()?;
        codec
    }

    /// Builds the codec from a weight source: the one description of its weights (two identity
    /// quantizers with their code counts, three quantile tables with their reservoirs). Fails
    /// when the code counts are not 96 (checked only if the source recorded no problem).
    pub fn from_weights(cfg: &CatalogConfig, w: &mut impl Source) -> Result<Self> {
        w.stored_prefix("_quantizer.", "quantizer.", false);
        let q = |f: &str| format!("_quantizer.quantizers.{f}");
        let codes = Init::Ints(vec![POSITION_CODES as i64]);
        let mut size = |f: &str| {
            let name = format!("{}._codebook_size", q(f));
            w.ints(&name, &[], IntType::I64, &codes)[0]
        };
        let sizes = [size("X"), size("Y")];
        let shapes = ["SHAPE_E1", "SHAPE_E2", "SHAPE_R"].map(|f| {
            let reservoir = Init::Reservoir(Reservoir {
                quantity: f.to_string(),
                channel: 0,
                space: ValueSpace::Linear,
            });
            w.floats(
                &format!("{}._reservoir", q(f)),
                &[RESERVOIR_SIZE],
                &reservoir,
            );
            let table = w.floats(
                &format!("{}._index_to_val", q(f)),
                &[SHAPE_CODES],
                &Init::QuantileTable,
            );
            ScalarQuantizer::Reservoir { table }
        });
        if !w.has_problems() && sizes != [POSITION_CODES as i64; 2] {
            return Err(Error::config(
                w.label(),
                format!("X/Y codebook sizes {sizes:?}, expected {POSITION_CODES}"),
            ));
        }
        Ok(Self {
            mask_value: cfg.mask_value,
            shapes,
        })
    }

    /// Per-field code offsets `[0, 96, 192, 1216, 2240]`.
    pub fn offsets() -> [i64; 5] {
        let p = POSITION_CODES as i64;
        let s = SHAPE_CODES as i64;
        [0, p, 2 * p, 2 * p + s, 2 * p + 2 * s]
    }

    /// Codes of field `f` (96 or 1024).
    fn field_size(f: usize) -> i64 {
        if f < 2 {
            POSITION_CODES as i64
        } else {
            SHAPE_CODES as i64
        }
    }

    /// Total codec codebook (3264).
    pub fn codebook_size() -> i64 {
        Self::offsets()[4] + SHAPE_CODES as i64
    }

    /// Tokenizes a batch: row-major `(batch, 5·len)` codec tokens, empty slots = `mask_value`.
    pub fn encode(&self, cat: &Catalog) -> Result<Vec<i64>> {
        cat.check_lengths()?;
        let mut out = Vec::with_capacity(cat.x.len() * 5);
        for i in 0..cat.x.len() {
            let (row, slot) = (i / cat.len.max(1), i % cat.len.max(1));
            out.extend(
                self.encode_slot(cat, i)
                    .map_err(|m| Error::Input(format!("catalog row {row}, slot {slot}: {m}")))?,
            );
        }
        Ok(out)
    }

    /// The five codec tokens of flat slot `i`.
    fn encode_slot(&self, cat: &Catalog, i: usize) -> std::result::Result<[i64; 5], String> {
        let empty = self.mask_value;
        let shapes = [cat.shape_e1[i], cat.shape_e2[i], cat.shape_r[i]];
        let is_empty = [
            cat.x[i] == empty,
            cat.y[i] == empty,
            shapes[0] == empty as f32,
            shapes[1] == empty as f32,
            shapes[2] == empty as f32,
        ];
        if is_empty.iter().all(|&e| e) {
            return Ok([empty; 5]);
        }
        if is_empty.iter().any(|&e| e) {
            return Err(partly_empty(is_empty, empty));
        }
        let offsets = Self::offsets();
        let mut t = [0i64; 5];
        for (f, v) in [cat.x[i], cat.y[i]].into_iter().enumerate() {
            if !(0..POSITION_CODES as i64).contains(&v) {
                return Err(format!(
                    "{} = {v} is outside the 96-px crop (0..96)",
                    FIELDS[f]
                ));
            }
            t[f] = v + offsets[f];
        }
        for (k, (q, v)) in self.shapes.iter().zip(shapes).enumerate() {
            t[k + 2] = q.encode_value(0, v) + offsets[k + 2];
        }
        Ok(t)
    }

    /// Decodes `batch` rows of codec tokens as the reference does: a row is truncated to a
    /// multiple of 5, each code has its field offset removed and is clamped to the field's
    /// range; a code that had to be clamped (empty slots, other fields' codes) decodes to −1.
    pub fn decode(&self, tokens: &[i64], batch: usize) -> Result<Catalog> {
        if batch == 0 || !tokens.len().is_multiple_of(batch) {
            return Err(Error::Input(format!(
                "{} catalog tokens do not split into {batch} rows",
                tokens.len()
            )));
        }
        let row_len = tokens.len() / batch;
        let len = row_len / 5;
        let mut cat = Catalog::empty(batch, len, -1);
        let offsets = Self::offsets();
        for r in 0..batch {
            for l in 0..len {
                let i = r * len + l;
                let codes = &tokens[r * row_len + 5 * l..r * row_len + 5 * l + 5];
                let code = |f: usize| {
                    let c = codes[f] - offsets[f];
                    (0..Self::field_size(f)).contains(&c).then_some(c)
                };
                cat.x[i] = code(0).unwrap_or(-1);
                cat.y[i] = code(1).unwrap_or(-1);
                let shape = |k: usize| {
                    code(k + 2)
                        .and_then(|c| self.shapes[k].decode_token(0, c))
                        .unwrap_or(-1.0)
                };
                cat.shape_e1[i] = shape(0);
                cat.shape_e2[i] = shape(1);
                cat.shape_r[i] = shape(2);
            }
        }
        Ok(cat)
    }

    /// Maps codec tokens to the transformer's `catalog` ids: `t → t + 204`, empty (`mask_value`)
    /// → padding id 0 with input-mask `true` (= excluded).
    ///
    /// `row_len` tokens per row, a multiple of 5. Each token must lie in its field's code range,
    /// and the five tokens of a slot must be all empty or all not; errors name row and slot.
    /// (Presumed glue, spec §2.4: 0.0.2 ships none; the numbers are `MODALITY_INFO`'s.)
    pub fn to_model_ids(&self, tokens: &[i64], row_len: usize) -> Result<(Vec<i64>, Vec<bool>)> {
        if row_len == 0 || !row_len.is_multiple_of(5) || !tokens.len().is_multiple_of(row_len) {
            return Err(Error::Input(format!(
                "{} catalog tokens with rows of {row_len}: need rows of a multiple of 5",
                tokens.len()
            )));
        }
        let offsets = Self::offsets();
        let mut ids = Vec::with_capacity(tokens.len());
        let mut mask = Vec::with_capacity(tokens.len());
        for (s, slot) in tokens.chunks(5).enumerate() {
            let (row, l) = (s * 5 / row_len, s % (row_len / 5));
            let fail = |m: String| Error::Input(format!("catalog tokens row {row}, slot {l}: {m}"));
            let is_empty = [0, 1, 2, 3, 4].map(|f| slot[f] == self.mask_value);
            if is_empty.iter().all(|&e| e) {
                ids.extend([PAD_ID; 5]);
                mask.extend([true; 5]);
                continue;
            }
            if is_empty.iter().any(|&e| e) {
                return Err(fail(partly_empty(is_empty, self.mask_value)));
            }
            for (f, &t) in slot.iter().enumerate() {
                let range = offsets[f]..offsets[f] + Self::field_size(f);
                if !range.contains(&t) {
                    return Err(fail(format!("{} token {t} is not in {range:?}", FIELDS[f])));
                }
                ids.push(t + VOCAB_OFFSET);
                mask.push(false);
            }
        }
        Ok((ids, mask))
    }

    /// Inverse of [`to_model_ids`](Self::to_model_ids) for decoding model predictions: id 0 →
    /// `mask_value`, `204..3468` → id − 204; the other special ids (sentinels, start, end, unk)
    /// have no codec meaning and are errors naming their index.
    pub fn from_model_ids(&self, ids: &[i64]) -> Result<Vec<i64>> {
        let top = VOCAB_OFFSET + Self::codebook_size();
        ids.iter()
            .enumerate()
            .map(|(i, &id)| match id {
                PAD_ID => Ok(self.mask_value),
                _ if (VOCAB_OFFSET..top).contains(&id) => Ok(id - VOCAB_OFFSET),
                _ => Err(Error::Input(format!(
                    "catalog model id {id} at index {i} is a special token or out of 0..{top}"
                ))),
            })
            .collect()
    }
}

/// Message for a slot whose fields disagree on being empty.
fn partly_empty(is_empty: [bool; 5], empty: i64) -> String {
    let which: Vec<&str> = (0..5).filter(|&f| is_empty[f]).map(|f| FIELDS[f]).collect();
    format!("{which:?} are empty ({empty}) but the other fields are not")
}
