//! The four scalar codecs: `ScalarCodec`, `LogScalarCodec`, `MultiScalarCodec`, `GridScalarCodec`.
//!
//! Port of `aion/codecs/scalar.py` and `aion/codecs/quantizers/scalar.py` (+ the
//! `ScalarLinearQuantizer` of `aion/codecs/quantizers/__init__.py`), `polymathic-aion` 0.0.2.
//! These codecs are table look-ups, so they are plain Rust on `f32` (no burn tensors): exact,
//! and far cheaper than a tensor round trip.
//!
//! Encoding follows `torch.bucketize(z, boundaries, right=False)` literally, including its
//! binary-search predicate, so that NaN lands where the reference puts it (the top token).

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::hub::layout;
use crate::modality::{CodecKind, Modality, ModalityInfo};
use crate::weights::{Init, Reservoir, Source, ValueSpace, WeightFile};

pub use super::element_fn::ElementFn;

/// `torch.bucketize(value, boundaries, right=False)`: the index of the first boundary `>= value`
/// found by the same binary search torch runs (NaN compares false and goes to the end).
pub fn bucketize_left(value: f32, boundaries: &[f32]) -> usize {
    let (mut start, mut end) = (0usize, boundaries.len());
    while start < end {
        let mid = start + (end - start) / 2;
        #[allow(clippy::neg_cmp_op_on_partial_ord)]
        if !(boundaries[mid] >= value) {
            start = mid + 1;
        } else {
            end = mid;
        }
    }
    start
}

/// The quantizer inside a scalar codec.
#[derive(Debug, Clone, PartialEq)]
pub enum ScalarQuantizer {
    /// `ScalarReservoirQuantizer`: `table` is `_index_to_val` (K sorted quantiles).
    Reservoir {
        /// Quantile table.
        table: Vec<f32>,
    },
    /// `ScalarLogReservoirQuantizer`: values `<= min_value` are raised to it, then `ln`.
    LogReservoir {
        /// Quantile table in natural-log space.
        table: Vec<f32>,
        /// `exp(min_log_value)` as `f32`.
        min_value: f32,
    },
    /// `MultiScalarCompressedReservoirQuantizer`: one table per channel.
    Multi {
        /// Quantile tables, one per channel, in compressed space.
        tables: Vec<Vec<f32>>,
        /// Applied in order before bucketizing.
        compress: Vec<ElementFn>,
        /// Applied in reverse order after the table look-up.
        decompress: Vec<ElementFn>,
    },
    /// `ScalarLinearQuantizer` on [0, 1] (`GridScalarCodec`).
    Grid {
        /// Bucket values (`linspace(0, 1, K)` as stored in the weights).
        buckets: Vec<f32>,
    },
}

impl ScalarQuantizer {
    /// Token of one value of channel `channel`, exactly as the reference computes it.
    pub fn encode_value(&self, channel: usize, x: f32) -> i64 {
        let t = match self {
            ScalarQuantizer::Reservoir { table } => bucketize_left(x, &table[..table.len() - 1]),
            ScalarQuantizer::LogReservoir { table, min_value } => {
                let clamped = if x <= *min_value { *min_value } else { x };
                bucketize_left(ElementFn::Log.apply(clamped), &table[..table.len() - 1])
            }
            ScalarQuantizer::Multi {
                tables, compress, ..
            } => {
                let table = &tables[channel];
                let z = compress.iter().fold(x, |v, f| f.apply(v));
                bucketize_left(z, &table[..table.len() - 1])
            }
            ScalarQuantizer::Grid { buckets } => bucketize_left(x, buckets).min(buckets.len() - 1),
        };
        t as i64
    }

    /// Value a token decodes to (the upper edge of its bin), or `None` outside the codebook.
    pub fn decode_token(&self, channel: usize, token: i64) -> Option<f32> {
        let k = usize::try_from(token).ok()?;
        match self {
            ScalarQuantizer::Reservoir { table } => table.get(k).copied(),
            ScalarQuantizer::LogReservoir { table, .. } => {
                table.get(k).map(|&v| ElementFn::Exp.apply(v))
            }
            ScalarQuantizer::Multi {
                tables, decompress, ..
            } => tables
                .get(channel)?
                .get(k)
                .map(|&v| decompress.iter().rev().fold(v, |acc, f| f.apply(acc))),
            ScalarQuantizer::Grid { buckets } => buckets.get(k).copied(),
        }
    }
}

/// A loaded scalar codec.
#[derive(Debug, Clone, PartialEq)]
pub struct ScalarCodec {
    /// The modality it serves.
    pub modality: Modality,
    /// Its quantizer.
    pub quantizer: ScalarQuantizer,
}

/// `config.json` of a scalar codec: the union of the four classes' constructor arguments.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScalarConfig {
    /// The quantity's name (`FLUX_G`, `bp_coefficients`, …; the codec folder).
    pub modality: String,
    /// Number of tokens `K`.
    pub codebook_size: usize,
    /// Reservoir length `R` (all but the grid codec).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reservoir_size: Option<usize>,
    /// `min_log_value` of `LogScalarCodec` (default −3).
    #[serde(default = "default_min_log", skip_serializing_if = "Option::is_none")]
    pub min_log_value: Option<f64>,
    /// `MultiScalarCodec`: `torch` functions applied before bucketizing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compression_fns: Option<Vec<String>>,
    /// `MultiScalarCodec`: applied in reverse order after the look-up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decompression_fns: Option<Vec<String>>,
    /// `MultiScalarCodec`: number of channels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_quantizers: Option<usize>,
}

fn default_min_log() -> Option<f64> {
    Some(-3.0)
}

impl ScalarConfig {
    /// The configuration of a released scalar codec for `m` (aion-spec §2.3: 1024 codes,
    /// reservoirs of 1000, `min_log_value` −3, Gaia XP compressed with `arcsinh`).
    pub fn released(m: &ModalityInfo) -> Self {
        let mut cfg = Self {
            modality: m.codec_dir.to_string(),
            codebook_size: 1024,
            reservoir_size: Some(1000),
            min_log_value: None,
            compression_fns: None,
            decompression_fns: None,
            num_quantizers: None,
        };
        match m.codec {
            CodecKind::LogScalar => cfg.min_log_value = Some(-3.0),
            CodecKind::MultiScalar => {
                cfg.compression_fns = Some(vec!["arcsinh".into()]);
                cfg.decompression_fns = Some(vec!["sinh".into()]);
                cfg.num_quantizers = Some(m.num_tokens());
            }
            CodecKind::GridScalar => cfg.reservoir_size = None,
            _ => {}
        }
        cfg
    }

    /// Reads a `config.json`.
    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        serde_json::from_str(&text).map_err(|e| Error::config(path, e.to_string()))
    }

    fn functions(names: &Option<Vec<String>>) -> std::result::Result<Vec<ElementFn>, String> {
        names
            .iter()
            .flatten()
            .map(|s| ElementFn::parse(s).ok_or_else(|| format!("unsupported function torch.{s}")))
            .collect()
    }

    /// The reservoir length, required by all but the grid codec.
    fn reservoir(&self) -> std::result::Result<usize, String> {
        self.reservoir_size
            .ok_or_else(|| "reservoir_size is required".to_string())
    }
}

impl ScalarQuantizer {
    /// Builds the quantizer of a codec of `kind` for `quantity` (its codec folder name) from a
    /// weight source: the one description of the scalar codecs' weights. Module names are
    /// `_quantizer.…`; the Hub files store them as `quantizer.…` (both are read; an initialiser
    /// writes the Hub's). The error is for an invalid configuration (messages without a path).
    pub fn from_weights(
        kind: CodecKind,
        quantity: &str,
        cfg: &ScalarConfig,
        w: &mut impl Source,
    ) -> std::result::Result<Self, String> {
        w.stored_prefix("_quantizer.", "quantizer.", true);
        let k = cfg.codebook_size;
        let reservoir = |channel, space| {
            Init::Reservoir(Reservoir {
                quantity: quantity.to_string(),
                channel,
                space,
            })
        };
        Ok(match kind {
            CodecKind::Scalar | CodecKind::LogScalar => {
                let r = cfg.reservoir()?;
                let min_log = cfg.min_log_value.unwrap_or(-3.0);
                let space = if kind == CodecKind::Scalar {
                    ValueSpace::Linear
                } else {
                    ValueSpace::Log {
                        min_log_value: min_log,
                    }
                };
                w.floats("_quantizer._reservoir", &[r], &reservoir(0, space));
                let table = w.floats("_quantizer._index_to_val", &[k], &Init::QuantileTable);
                if kind == CodecKind::Scalar {
                    ScalarQuantizer::Reservoir { table }
                } else {
                    ScalarQuantizer::LogReservoir {
                        table,
                        min_value: min_log.exp() as f32,
                    }
                }
            }
            CodecKind::MultiScalar => {
                let r = cfg.reservoir()?;
                let n = cfg.num_quantizers.unwrap_or(1);
                let compress = ScalarConfig::functions(&cfg.compression_fns)?;
                let decompress = ScalarConfig::functions(&cfg.decompression_fns)?;
                if compress.len() != decompress.len() {
                    return Err("compression_fns and decompression_fns differ in length".into());
                }
                let tables = (0..n)
                    .map(|i| {
                        let p = format!("_quantizer.quantizers.{i}");
                        let space = ValueSpace::Compressed(compress.clone());
                        w.floats(&format!("{p}._reservoir"), &[r], &reservoir(i, space));
                        w.floats(&format!("{p}._index_to_val"), &[k], &Init::QuantileTable)
                    })
                    .collect();
                ScalarQuantizer::Multi {
                    tables,
                    compress,
                    decompress,
                }
            }
            CodecKind::GridScalar => {
                let buckets = Init::Floats(linspace_f32(k));
                ScalarQuantizer::Grid {
                    buckets: w.floats("_quantizer.buckets", &[k], &buckets),
                }
            }
            other => return Err(format!("{other:?} is not a scalar codec")),
        })
    }
}

impl ScalarCodec {
    /// Loads `config.json` + `model.safetensors` from a codec folder (`codecs/<name>/`).
    ///
    /// Both the Hub's `quantizer.` prefix and the module's `_quantizer.` prefix are accepted.
    /// Loading is strict: every tensor must be present with the configured shape and used.
    pub fn load(modality: impl Into<Modality>, dir: &Path) -> Result<Self> {
        let modality = modality.into();
        let config_path = layout::config(dir);
        let cfg = ScalarConfig::read(&config_path)?;
        let mut w = WeightFile::open(layout::weights(dir))?;
        let codec = Self::from_weights(&modality, &cfg, &mut w)
            .map_err(|m| Error::config(&config_path, m))?;
        w.finish()?;
        if codec.channels() != modality.num_tokens() {
            return Err(Error::config(
                &config_path,
                format!(
                    "{} channels, but {} takes {}",
                    codec.channels(),
                    modality.token_key,
                    modality.num_tokens()
                ),
            ));
        }
        Ok(codec)
    }

    /// The codec of `modality` from a weight source (see [`ScalarQuantizer::from_weights`]).
    pub fn from_weights(
        modality: impl Into<Modality>,
        cfg: &ScalarConfig,
        w: &mut impl Source,
    ) -> std::result::Result<Self, String> {
        let modality = modality.into();
        let quantizer = ScalarQuantizer::from_weights(modality.codec, &modality.codec_dir, cfg, w)?;
        Ok(Self {
            modality,
            quantizer,
        })
    }

    /// Values per object (55 for Gaia XP, else 1).
    pub fn channels(&self) -> usize {
        match &self.quantizer {
            ScalarQuantizer::Multi { tables, .. } => tables.len(),
            _ => 1,
        }
    }

    /// Number of distinct tokens the codec emits.
    pub fn codebook_size(&self) -> usize {
        match &self.quantizer {
            ScalarQuantizer::Reservoir { table } | ScalarQuantizer::LogReservoir { table, .. } => {
                table.len()
            }
            ScalarQuantizer::Multi { tables, .. } => tables.first().map_or(0, Vec::len),
            ScalarQuantizer::Grid { buckets } => buckets.len(),
        }
    }

    /// Token of one value of channel `channel`, exactly as the reference computes it.
    pub fn encode_value(&self, channel: usize, x: f32) -> i64 {
        self.quantizer.encode_value(channel, x)
    }

    /// Encodes a row-major `(n, channels)` block of values.
    pub fn encode(&self, values: &[f32]) -> Vec<i64> {
        let c = self.channels();
        values
            .iter()
            .enumerate()
            .map(|(i, &x)| self.encode_value(i % c, x))
            .collect()
    }

    /// Value a token decodes to (the upper edge of its bin), or `None` outside the codebook.
    pub fn decode_token(&self, channel: usize, token: i64) -> Option<f32> {
        self.quantizer.decode_token(channel, token)
    }

    /// Decodes a row-major `(n, channels)` block of tokens (`NaN` for tokens outside the codebook).
    pub fn decode(&self, tokens: &[i64]) -> Vec<f32> {
        let c = self.channels();
        tokens
            .iter()
            .enumerate()
            .map(|(i, &t)| self.decode_token(i % c, t).unwrap_or(f32::NAN))
            .collect()
    }
}

/// `torch.linspace(0, 1, n)` in float32, bit for bit: its CPU kernel computes `start + i·step`
/// for the first half and `end − (n−1−i)·step` for the second (so both ends are exact), each as
/// one fused multiply-add.
pub fn linspace_f32(n: usize) -> Vec<f32> {
    if n == 1 {
        return vec![0.0];
    }
    let step = 1.0f32 / (n - 1) as f32;
    let half = n / 2;
    (0..n)
        .map(|i| {
            if i < half {
                i as f32 * step
            } else {
                (-((n - 1 - i) as f32)).mul_add(step, 1.0)
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucketize_matches_torch_semantics() {
        let b = [0.0f32, 1.0, 2.0, 3.0];
        let t = |x: f32, want: usize| assert_eq!(bucketize_left(x, &b), want, "{x}");
        t(-1.0, 0);
        t(0.0, 0); // equal to a boundary -> that boundary (right=False)
        t(0.5, 1);
        t(1.0, 1);
        t(3.0, 3);
        t(3.5, 4);
        t(f32::NAN, 4);
        t(f32::INFINITY, 4);
        t(f32::NEG_INFINITY, 0);
    }

    fn codec(q: ScalarQuantizer) -> ScalarCodec {
        ScalarCodec {
            modality: crate::modality::by_token_key("tok_ebv").unwrap().into(),
            quantizer: q,
        }
    }

    #[test]
    fn reservoir_ignores_last_entry_and_decodes_upper_edge() {
        let c = codec(ScalarQuantizer::Reservoir {
            table: vec![0.0, 1.0, 2.0, 3.0],
        });
        assert_eq!(
            c.encode(&[-5.0, 0.5, 2.5, 9.0, f32::NAN]),
            vec![0, 1, 3, 3, 3]
        );
        assert_eq!(
            c.decode(&[1, 3, 4])
                .iter()
                .take(2)
                .copied()
                .collect::<Vec<_>>(),
            vec![1.0, 3.0]
        );
        assert!(c.decode(&[4])[0].is_nan());
    }

    #[test]
    fn log_reservoir_clamps_below_min() {
        let table: Vec<f32> = vec![-3.0, -1.0, 0.0, 1.0];
        let c = codec(ScalarQuantizer::LogReservoir {
            table,
            min_value: (-3.0f64).exp() as f32,
        });
        // negative flux is raised to e^-3 -> ln = -3 -> token 0
        assert_eq!(c.encode(&[-2.0, 0.0, 1.0, 2.0]), vec![0, 0, 2, 3]);
    }

    #[test]
    fn grid_clamps_into_range() {
        let buckets: Vec<f32> = (0..5).map(|i| i as f32 / 4.0).collect();
        let c = codec(ScalarQuantizer::Grid { buckets });
        assert_eq!(
            c.encode(&[-0.1, 0.0, 0.1, 0.25, 1.0, 1.5, f32::NAN]),
            vec![0, 0, 1, 1, 4, 4, 4]
        );
    }
}
