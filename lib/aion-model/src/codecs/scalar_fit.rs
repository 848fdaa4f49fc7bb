//! Fitting quantile scalar codecs (`ScalarCodec`, `LogScalarCodec`) on new catalogue columns.
//!
//! Table construction is the reference's `ScalarReservoirQuantizer._generate_index_to_val`
//! (`aion/codecs/quantizers/scalar.py`, polymathic-aion 0.0.2, aion-spec §2.3): sort the
//! reservoir, then linearly interpolate the map `linspace(0,1,R) → sorted` at
//! `linspace(0,1,K)`, all in float32 like the reference (see [`quantile_table`]).
//! For the log variant the reservoir holds `ln(max(x, e^min_log_value))`, as the reference's
//! `_update_reservoirs` stores it.
//!
//! The reference fills its reservoir by streaming reservoir sampling (random replacement), which
//! depends on the order rows arrive in. Here the sample is a **bottom-k sample**: every row gets
//! the key `hash(seed, global row index)` and the `R` rows with the smallest keys are kept. A
//! rank keeps the bottom `R` of its own rows; merging the ranks' samples and keeping the bottom
//! `R` again gives exactly the sample a single process would draw, so the fitted codec does not
//! depend on the number of ranks or on how rows are split. With fewer than `R` usable rows the
//! reservoir is all of them (the reference would pad with `reservoir_default`, which distorts
//! the table). Non-finite values are never sampled (they are rejected at tokenization).

use std::collections::BTreeMap;
use std::path::Path;

pub use crate::codecs::scalar::linspace_f32;
use crate::codecs::scalar::{ScalarConfig, ScalarQuantizer};
use crate::error::{Error, Result};
use crate::fs::write_atomic;
use crate::hub::layout;
use crate::modality::CodecKind;
use crate::rng::{hash, tags};
use crate::weights::{Initialiser, write_stored};

/// The scalar codec kinds that can be fitted.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum FitKind {
    /// `ScalarCodec`: quantiles of the raw values.
    Scalar,
    /// `LogScalarCodec`: quantiles of `ln(max(x, e^min_log_value))`.
    LogScalar {
        /// `min_log_value` (−3 in the reference).
        min_log_value: f64,
    },
}

impl FitKind {
    /// The value the reservoir stores for a raw value (`None` for NaN / ±inf).
    pub fn reservoir_value(self, x: f32) -> Option<f32> {
        if !x.is_finite() {
            return None;
        }
        Some(match self {
            Self::Scalar => x,
            Self::LogScalar { min_log_value } => {
                let min_value = min_log_value.exp() as f32;
                let clamped = if x <= min_value { min_value } else { x };
                f64::from(clamped).ln() as f32
            }
        })
    }

    /// The `CodecKind` name (`"Scalar"` / `"LogScalar"`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Scalar => "Scalar",
            Self::LogScalar { .. } => "LogScalar",
        }
    }
}

/// The quantile table `_index_to_val` of `K` entries from a reservoir (any order, ≥ 2 values).
///
/// The reservoir and both grids are float32 arrays, so `scipy.interpolate.interp1d` takes its
/// generic path (`_call_linear`, not `numpy.interp`), all in float32: `i = searchsorted(x, q)`
/// clipped to `[1, R−1]`, `slope = (y[i] − y[i−1]) / (x[i] − x[i−1])`,
/// `table = slope·(q − x[i−1]) + y[i−1]`. This is reproduced operation by operation.
///
/// # Panics
/// If the reservoir has fewer than 2 values or `k == 0`.
pub fn quantile_table(reservoir: &[f32], k: usize) -> Vec<f32> {
    assert!(reservoir.len() >= 2 && k > 0, "need 2+ samples and K > 0");
    let mut y = reservoir.to_vec();
    y.sort_by(f32::total_cmp);
    let x = linspace_f32(y.len());
    let last = y.len() - 1;
    linspace_f32(k)
        .into_iter()
        .map(|q| {
            // searchsorted(side="left"): first index with x[i] >= q.
            let i = x.partition_point(|&v| v < q).clamp(1, last);
            let slope = (y[i] - y[i - 1]) / (x[i] - x[i - 1]);
            slope * (q - x[i - 1]) + y[i - 1]
        })
        .collect()
}

/// One sampled value: its key, global row and reservoir value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    /// `hash(seed, row)`.
    pub key: u64,
    /// Global catalogue row.
    pub row: u64,
    /// Reservoir value (already log-transformed for log codecs).
    pub value: f32,
}

/// The bottom-`capacity` sample of a column (by key, ties broken by row).
#[derive(Debug, Clone)]
pub struct BottomK {
    capacity: usize,
    seed: u64,
    kept: BTreeMap<(u64, u64), f32>,
}

impl BottomK {
    /// An empty sample of at most `capacity` values with key seed `seed`.
    pub fn new(capacity: usize, seed: u64) -> Self {
        Self {
            capacity,
            seed,
            kept: BTreeMap::new(),
        }
    }

    /// The key of a global row.
    pub fn key(&self, row: u64) -> u64 {
        hash(self.seed, tags::CODEC_SAMPLE, row)
    }

    /// Offers the reservoir value of global row `row`.
    pub fn offer(&mut self, row: u64, value: f32) {
        self.insert(Sample {
            key: self.key(row),
            row,
            value,
        });
    }

    fn insert(&mut self, s: Sample) {
        if self.kept.len() == self.capacity {
            let Some((&largest, _)) = self.kept.last_key_value() else {
                return;
            };
            if (s.key, s.row) >= largest {
                return;
            }
            self.kept.remove(&largest);
        }
        self.kept.insert((s.key, s.row), s.value);
    }

    /// Adds another (partial) sample drawn with the same seed.
    pub fn merge(&mut self, samples: impl IntoIterator<Item = Sample>) {
        for s in samples {
            self.insert(s);
        }
    }

    /// The kept samples in key order.
    pub fn samples(&self) -> Vec<Sample> {
        self.kept
            .iter()
            .map(|(&(key, row), &value)| Sample { key, row, value })
            .collect()
    }

    /// Number of kept samples.
    pub fn len(&self) -> usize {
        self.kept.len()
    }

    /// Whether nothing was kept.
    pub fn is_empty(&self) -> bool {
        self.kept.is_empty()
    }

    /// Serialises the kept samples (16 + 4 bytes each, little-endian) for an MPI gather.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.kept.len() * 20);
        for s in self.samples() {
            out.extend(s.key.to_le_bytes());
            out.extend(s.row.to_le_bytes());
            out.extend(s.value.to_le_bytes());
        }
        out
    }

    /// Parses [`to_bytes`](Self::to_bytes).
    pub fn parse(bytes: &[u8]) -> Vec<Sample> {
        bytes
            .chunks_exact(20)
            .map(|c| Sample {
                key: u64::from_le_bytes(c[0..8].try_into().expect("8")),
                row: u64::from_le_bytes(c[8..16].try_into().expect("8")),
                value: f32::from_le_bytes(c[16..20].try_into().expect("4")),
            })
            .collect()
    }
}

/// A fitted codec, ready to be written in the Hub layout.
#[derive(Debug, Clone, PartialEq)]
pub struct FittedCodec {
    /// The `modality` config value (the codec folder / column name).
    pub name: String,
    /// Kind.
    pub kind: FitKind,
    /// Reservoir values (in sample-key order).
    pub reservoir: Vec<f32>,
    /// Quantile table (`K` entries).
    pub table: Vec<f32>,
}

impl FittedCodec {
    /// Builds the table from a merged sample; fails with fewer than 2 values.
    pub fn from_sample(name: &str, kind: FitKind, sample: &BottomK, k: usize) -> Result<Self> {
        if sample.len() < 2 || k < 2 {
            return Err(Error::Input(format!(
                "codec {name}: {} usable value(s) and K = {k}; need at least 2 of each",
                sample.len()
            )));
        }
        let reservoir: Vec<f32> = sample.samples().iter().map(|s| s.value).collect();
        let table = quantile_table(&reservoir, k);
        Ok(Self {
            name: name.to_string(),
            kind,
            reservoir,
            table,
        })
    }

    /// Writes `dir/config.json` and `dir/model.safetensors` in the Hub layout (tensors
    /// `quantizer._reservoir`, `quantizer._index_to_val`), loadable by
    /// [`ScalarCodec::load`](super::scalar::ScalarCodec::load). The tensors are those the scalar
    /// codec's description takes, filled with this reservoir (the table is built from it exactly
    /// as [`from_sample`](Self::from_sample) built this one).
    pub fn write_hub(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|source| Error::Write {
            path: dir.to_path_buf(),
            source,
        })?;
        let (kind, min_log_value) = match self.kind {
            FitKind::Scalar => (CodecKind::Scalar, None),
            FitKind::LogScalar { min_log_value } => (CodecKind::LogScalar, Some(min_log_value)),
        };
        let cfg = ScalarConfig {
            modality: self.name.clone(),
            codebook_size: self.table.len(),
            reservoir_size: Some(self.reservoir.len()),
            min_log_value,
            compression_fns: None,
            decompression_fns: None,
            num_quantizers: None,
        };
        let w = Initialiser::new(0).with_reservoirs(vec![self.reservoir.clone()]);
        let q = write_scalar_codec(dir, kind, &self.name, &cfg, w)?;
        debug_assert!(matches!(
            &q,
            ScalarQuantizer::Reservoir { table } | ScalarQuantizer::LogReservoir { table, .. }
                if *table == self.table
        ));
        Ok(())
    }
}

/// Writes a scalar codec into `dir`: `cfg` as its `config.json` (keys in alphabetical order: a
/// `serde_json::Value` object is sorted) and, as its weights, the tensors
/// `ScalarQuantizer::from_weights` takes from `w`. Returns the quantizer they make.
fn write_scalar_codec(
    dir: &Path,
    kind: CodecKind,
    name: &str,
    cfg: &ScalarConfig,
    mut w: Initialiser,
) -> Result<ScalarQuantizer> {
    let json = serde_json::to_value(cfg).expect("json");
    let text = serde_json::to_string_pretty(&json).expect("json");
    write_atomic(&layout::config(dir), format!("{text}\n").as_bytes())?;
    let q = ScalarQuantizer::from_weights(kind, name, cfg, &mut w)
        .map_err(|m| Error::config(dir, m))?;
    write_stored(&layout::weights(dir), w.tensors())?;
    Ok(q)
}

/// Writes the `GridScalarCodec` of a quantity in `[0, 1]` (redshift: `codecs/Z/`) with `k`
/// buckets `linspace(0, 1, K)` in float32, as `GridScalarCodec(name, K)` builds it: the tensors
/// its description takes, under the Hub's names.
pub fn write_grid_codec(dir: &Path, name: &str, k: usize) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|source| Error::Write {
        path: dir.to_path_buf(),
        source,
    })?;
    let cfg = ScalarConfig {
        modality: name.to_string(),
        codebook_size: k,
        reservoir_size: None,
        min_log_value: None,
        compression_fns: None,
        decompression_fns: None,
        num_quantizers: None,
    };
    write_scalar_codec(dir, CodecKind::GridScalar, name, &cfg, Initialiser::new(0)).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_grid_codec_is_written_as_before() {
        // The bundled model's redshift codec was written by the code this replaces.
        let bundled = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../data/models/sdss-photoz-tiny/codecs/Z");
        let dir = std::env::temp_dir().join(format!("aion-grid-codec-{}", std::process::id()));
        write_grid_codec(&dir, "Z", 1024).unwrap();
        for f in ["config.json", "model.safetensors"] {
            let read = |d: &Path| std::fs::read(d.join(f)).unwrap();
            assert_eq!(read(&dir), read(&bundled), "{f}");
        }
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn table_of_a_known_reservoir() {
        // R = 3 → grid [0, .5, 1]; K = 5 → [0, .25, .5, .75, 1]
        let t = quantile_table(&[3.0, 1.0, 2.0], 5);
        assert_eq!(t, vec![1.0, 1.5, 2.0, 2.5, 3.0]);
    }

    #[test]
    fn bottom_k_does_not_depend_on_the_split() {
        let values: Vec<f32> = (0..1000).map(|i| (i as f32 * 0.37).sin()).collect();
        let mut one = BottomK::new(100, 9);
        for (r, &v) in values.iter().enumerate() {
            one.offer(r as u64, v);
        }
        for parts in [2, 3, 7] {
            let mut merged = BottomK::new(100, 9);
            for p in 0..parts {
                let mut part = BottomK::new(100, 9);
                for r in (0..1000).filter(|r| r % parts == p) {
                    part.offer(r as u64, values[r]);
                }
                merged.merge(BottomK::parse(&part.to_bytes()));
            }
            assert_eq!(merged.samples(), one.samples(), "{parts} parts");
        }
        assert_eq!(one.len(), 100);
    }

    #[test]
    fn log_values_are_clamped_and_non_finite_skipped() {
        let k = FitKind::LogScalar {
            min_log_value: -3.0,
        };
        assert_eq!(k.reservoir_value(-1.0), Some(-3.0));
        assert_eq!(k.reservoir_value(1.0), Some(0.0));
        assert_eq!(k.reservoir_value(f32::NAN), None);
        assert_eq!(FitKind::Scalar.reservoir_value(f32::INFINITY), None);
    }
}
