//! The training data of `aion-finetune`: catalogue columns read in parallel and shared by all
//! ranks, the train / validation / test split, tokenization, and the batches of each step.
//!
//! Every rank reads its contiguous block of rows of each needed dataset; the blocks are then
//! all-gathered, so every rank holds the (scalar) columns of the whole catalogue. That is what
//! makes training independent of the rank count: the epoch permutation, each step's global batch
//! and every random mask or noise draw are functions of the seed and the *global* row index,
//! and a rank only computes its share of each global batch. Memory is `rows × values × 4` bytes
//! per rank (about 40 bytes per object for 10 scalar columns).

use std::ops::Range;

use aion_io::Catalog;
use aion_model::codecs::scalar::ScalarCodec;
use aion_model::modality::{Modality, ModalityInfo};
use aion_model::rng::{Rng, mix64, tags};
use aion_model::train::objective::ModalityBatch;
use aion_mpi::{Session, block_range};
use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

/// A whole-catalogue column (row-major values, `width` per row).
#[derive(Debug, Clone, PartialEq)]
pub struct FullColumn {
    /// Values (NaN where absent).
    pub values: Vec<f32>,
    /// Values per row.
    pub width: usize,
}

/// Reads `dataset` (optionally columns `a..b` of a 2-D dataset) for all rows: each rank reads
/// its block, then the blocks are all-gathered. Rows of files without the dataset are NaN.
pub fn read_column(
    session: &Session,
    catalog: &Catalog,
    dataset: &str,
    columns: Option<(usize, usize)>,
) -> Result<FullColumn> {
    let n = catalog.n_rows();
    let mine = block_range(n, session.rank(), session.size());
    let local = crate::collective::agree(session, read_block(catalog, dataset, columns, mine))?;
    let width = local.1;
    let bytes: Vec<u8> = local.0.iter().flat_map(|v| v.to_le_bytes()).collect();
    let values: Vec<f32> = session
        .all_gather_bytes(&bytes)
        .iter()
        .flat_map(|b| {
            b.chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect::<Vec<_>>()
        })
        .collect();
    // A rank without rows reports width 0: take the largest.
    let width = session.max_u64(width as u64) as usize;
    if values.len() != n * width {
        bail!(
            "{dataset}: read {} values for {n} rows of width {width}",
            values.len()
        );
    }
    Ok(FullColumn { values, width })
}

fn read_block(
    catalog: &Catalog,
    dataset: &str,
    columns: Option<(usize, usize)>,
    rows: Range<usize>,
) -> Result<(Vec<f32>, usize)> {
    if rows.is_empty() {
        return Ok((Vec::new(), 0));
    }
    let col = catalog
        .read(dataset, rows.clone())
        .with_context(|| format!("cannot read {dataset} rows {rows:?}"))?;
    let all = col
        .to_f32()
        .with_context(|| format!("{dataset} is not numeric"))?;
    let w = col.row_len();
    let (a, b) = columns.unwrap_or((0, w));
    if b > w {
        bail!("{dataset} has {w} columns, the mapping asks for {a}..{b}");
    }
    let mut out = Vec::with_capacity(rows.len() * (b - a));
    for (r, present) in col.present.iter().enumerate() {
        if *present {
            out.extend_from_slice(&all[r * w + a..r * w + b]);
        } else {
            out.extend(std::iter::repeat_n(f32::NAN, b - a));
        }
    }
    Ok((out, b - a))
}

/// Row indices of the three parts of the catalogue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Split {
    /// Training rows (sorted).
    pub train: Vec<usize>,
    /// Validation rows (early stopping; sorted).
    pub val: Vec<usize>,
    /// Held-out test rows (sorted).
    pub test: Vec<usize>,
}

impl Split {
    /// A seeded random split with exactly `round(val·n)` validation and `round(test·n)` test
    /// rows.
    pub fn random(n: usize, val: f64, test: f64, seed: u64) -> Self {
        let mut rows: Vec<usize> = (0..n).collect();
        Rng::new(seed, tags::SPLIT, n as u64).shuffle(&mut rows);
        let n_test = (test * n as f64).round() as usize;
        let n_val = (val * n as f64).round() as usize;
        let part = |r: Range<usize>| {
            let mut v = rows[r].to_vec();
            v.sort_unstable();
            v
        };
        Self {
            test: part(0..n_test),
            val: part(n_test..n_test + n_val),
            train: part(n_test + n_val..n),
        }
    }

    /// Checks that the parts are disjoint, inside `0..n`, and that there is training data.
    pub fn check(&self, n: usize) -> Result<()> {
        let mut seen = vec![false; n];
        for &r in self.train.iter().chain(&self.val).chain(&self.test) {
            if r >= n || std::mem::replace(&mut seen[r], true) {
                bail!("the split names row {r} twice or outside the catalogue ({n} rows)");
            }
        }
        if self.train.is_empty() {
            bail!("the split leaves no training rows");
        }
        Ok(())
    }
}

/// One modality's data for all rows: ids, validity, and what noise augmentation needs.
pub struct ModalityData {
    /// The modality.
    pub modality: Modality,
    /// Codec for raw values (`None`: the dataset holds tokens).
    pub codec: Option<ScalarCodec>,
    /// Raw values (or token ids as floats), `[rows, tokens]`.
    pub raw: FullColumn,
    /// Token ids, `[rows, tokens]` (0 where invalid).
    pub ids: Vec<i64>,
    /// Per row: usable.
    pub valid: Vec<bool>,
    /// Per row and token: standard deviation of the noise augmentation.
    pub noise: Option<FullColumn>,
    /// Fed to the encoder.
    pub is_input: bool,
    /// Predicted by the decoder.
    pub is_target: bool,
    /// Loss weight as a target.
    pub weight: f32,
}

impl ModalityData {
    /// Tokenizes `raw` (or takes token ids) for every row.
    pub fn new(modality: impl Into<Modality>, codec: Option<ScalarCodec>, raw: FullColumn) -> Self {
        let modality = modality.into();
        let n_tok = modality.num_tokens();
        let rows = raw.values.len() / n_tok.max(1);
        let mut ids = vec![0i64; rows * n_tok];
        let mut valid = vec![false; rows];
        for r in 0..rows {
            let vals = &raw.values[r * n_tok..(r + 1) * n_tok];
            if let Some(t) = tokens(&modality, codec.as_ref(), vals) {
                ids[r * n_tok..(r + 1) * n_tok].copy_from_slice(&t);
                valid[r] = true;
            }
        }
        Self {
            modality,
            codec,
            raw,
            ids,
            valid,
            noise: None,
            is_input: false,
            is_target: false,
            weight: 1.0,
        }
    }

    /// Token ids of row `r`, with the noise augmentation of `rng` when given.
    fn row_ids(&self, r: usize, rng: Option<&mut Rng>) -> Vec<i64> {
        let n = self.modality.num_tokens();
        let base = &self.ids[r * n..(r + 1) * n];
        let (Some(rng), Some(noise), Some(codec)) = (rng, &self.noise, &self.codec) else {
            return base.to_vec();
        };
        let vals: Vec<f32> = (0..n)
            .map(|j| {
                let (x, s) = (self.raw.values[r * n + j], noise.values[r * n + j]);
                if s.is_finite() && s > 0.0 {
                    (f64::from(x) + rng.normal() * f64::from(s)) as f32
                } else {
                    x
                }
            })
            .collect();
        tokens(&self.modality, Some(codec), &vals).unwrap_or_else(|| base.to_vec())
    }
}

/// Ids of one row's values, `None` if any value is unusable.
fn tokens(m: &ModalityInfo, codec: Option<&ScalarCodec>, vals: &[f32]) -> Option<Vec<i64>> {
    if vals.iter().any(|v| !v.is_finite()) {
        return None;
    }
    match codec {
        Some(c) => Some(
            vals.iter()
                .enumerate()
                .map(|(j, &v)| c.encode_value(j, v))
                .collect(),
        ),
        None => {
            let ids: Vec<i64> = vals.iter().map(|&v| v as i64).collect();
            let ok = ids
                .iter()
                .zip(vals)
                .all(|(&i, &v)| i as f32 == v && i >= 0 && (i as usize) < m.vocab);
            ok.then_some(ids)
        }
    }
}

/// How batches are drawn and masked.
#[derive(Debug, Clone, Copy)]
pub struct Masking {
    /// Run seed.
    pub seed: u64,
    /// Probability that an available input modality that is also a target is hidden.
    pub mask_ratio: f64,
    /// Soft-label width for scalar targets.
    pub soft_sigma: f32,
}

/// The step used for validation masks (fixed, so evaluations are comparable).
pub const EVAL_STEP: u64 = u64::MAX;

/// The batch of `rows` at `step`: per row, which modalities are inputs and which are targets
/// (with noise augmentation at training steps, i.e. unless `step == EVAL_STEP`).
pub fn build_batch(
    data: &[ModalityData],
    rows: &[usize],
    step: u64,
    how: Masking,
) -> Vec<ModalityBatch> {
    let train = step != EVAL_STEP;
    let stream = how.seed ^ mix64(step);
    let mut out: Vec<ModalityBatch> = data
        .iter()
        .map(|d| ModalityBatch {
            modality: d.modality.clone(),
            ids: Vec::with_capacity(rows.len() * d.modality.num_tokens()),
            input: Vec::with_capacity(rows.len()),
            target_weight: Vec::with_capacity(rows.len()),
            soft_sigma: if d.codec.is_some() {
                how.soft_sigma
            } else {
                0.0
            },
        })
        .collect();
    for &r in rows {
        let mut mask_rng = Rng::new(stream, tags::MASK, r as u64);
        let mut noise_rng = Rng::new(stream, tags::NOISE, r as u64);
        // Hidden flags of the maskable modalities (inputs that are also targets).
        let mut hidden: Vec<bool> = data
            .iter()
            .map(|d| d.valid[r] && d.is_input && d.is_target && mask_rng.uniform() < how.mask_ratio)
            .collect();
        let visible = |h: &[bool]| {
            data.iter()
                .zip(h)
                .any(|(d, &h)| d.valid[r] && d.is_input && !h)
        };
        if !visible(&hidden) {
            let cand: Vec<usize> = (0..data.len()).filter(|&i| hidden[i]).collect();
            if !cand.is_empty() {
                hidden[cand[mask_rng.below(cand.len())]] = false;
            }
        }
        for ((d, b), &h) in data.iter().zip(&mut out).zip(&hidden) {
            let ids = d.row_ids(r, train.then_some(&mut noise_rng));
            b.ids.extend(ids);
            b.input.push(d.valid[r] && d.is_input && !h);
            let target = d.valid[r] && d.is_target && (h || !d.is_input);
            b.target_weight.push(if target { d.weight } else { 0.0 });
        }
    }
    out
}

/// The global batch of `step`: a slice of the epoch's permutation of the training rows
/// (the last partial batch of an epoch is dropped; with fewer rows than a batch, all rows).
pub fn global_batch(train: &[usize], batch: usize, step: u64, seed: u64) -> Vec<usize> {
    let per_epoch = (train.len() / batch).max(1) as u64;
    let (epoch, i) = (step / per_epoch, (step % per_epoch) as usize);
    let mut perm = train.to_vec();
    Rng::new(seed, tags::EPOCH, epoch).shuffle(&mut perm);
    let b = batch.min(perm.len());
    perm[i * b..(i + 1) * b].to_vec()
}

/// Epoch of a step.
pub fn epoch_of(train_rows: usize, batch: usize, step: u64) -> u64 {
    step / (train_rows / batch).max(1) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_is_exact_and_disjoint() {
        let s = Split::random(100, 0.1, 0.2, 3);
        assert_eq!((s.train.len(), s.val.len(), s.test.len()), (70, 10, 20));
        s.check(100).unwrap();
        assert_eq!(s, Split::random(100, 0.1, 0.2, 3));
        assert_ne!(s, Split::random(100, 0.1, 0.2, 4));
    }

    #[test]
    fn batches_cover_the_epoch() {
        let train: Vec<usize> = (0..10).collect();
        let mut seen: Vec<usize> = (0..5).flat_map(|s| global_batch(&train, 2, s, 1)).collect();
        seen.sort_unstable();
        assert_eq!(seen, train);
        assert_eq!(global_batch(&train, 2, 5, 1).len(), 2);
        assert_eq!(epoch_of(10, 2, 5), 1);
    }
}
