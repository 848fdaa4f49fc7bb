//! Output datasets shared by the tools: object ids and per-row modality flags.

use std::ops::Range;

use std::collections::BTreeMap;

use aion_io::catalog::{ColumnKind, ColumnValues};
use aion_io::{Catalog, OutputFile};
use aion_model::modality::ModalityTable;
use aion_mpi::Session;
use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use crate::codec_set::ModalityTokens;
use crate::pipeline::{DatasetSpec, Dtype};

/// Where `object_id` comes from.
pub enum ObjectIds {
    /// The catalogue's integer `object_id` column.
    Dataset,
    /// The catalogue's `object_id` column of integers written as decimal strings (the Multimodal
    /// Universe's HATS catalogues).
    Strings,
    /// The global row index (the catalogue has no usable `object_id`).
    RowIndex,
}

impl ObjectIds {
    /// Uses `object_id` when every file holds it as integers (or as strings of integers, checked
    /// on the first row; every row is checked when read), else the row index.
    pub fn detect(catalog: &Catalog) -> Result<Self> {
        let everywhere =
            |i: &aion_io::ColumnInfo| i.row_shape.is_empty() && i.present_in.iter().all(|&p| p);
        Ok(match catalog.info("object_id")? {
            Some(i) if i.kind == ColumnKind::Int && everywhere(&i) => Self::Dataset,
            Some(i) if i.kind == ColumnKind::Str && everywhere(&i) => {
                let first = match catalog.n_rows() {
                    0 => None,
                    _ => match catalog.read("object_id", 0..1)?.values {
                        ColumnValues::Str(v) => v.into_iter().next(),
                        _ => None,
                    },
                };
                match first {
                    Some(s) if s.trim().parse::<i64>().is_err() => {
                        log::warn!(
                            "object_id holds strings that are not integers ('{s}'); writing row \
                             indices instead"
                        );
                        Self::RowIndex
                    }
                    _ => Self::Strings,
                }
            }
            Some(_) => {
                log::warn!(
                    "object_id is not an integer column in every file; writing row indices instead"
                );
                Self::RowIndex
            }
            None => Self::RowIndex,
        })
    }

    /// `"object_id"` or `"row_index"`.
    pub fn source(&self) -> &'static str {
        match self {
            Self::Dataset | Self::Strings => "object_id",
            Self::RowIndex => "row_index",
        }
    }

    /// The `object_id` output dataset.
    pub fn spec(&self) -> DatasetSpec {
        DatasetSpec::new("object_id", Dtype::I64, &[], None).attr("source", self.source())
    }

    /// The ids of `rows`. A missing (null) or non-integer id is an error naming file and row.
    pub fn read(&self, catalog: &Catalog, rows: &Range<usize>) -> Result<Vec<i64>> {
        if matches!(self, Self::RowIndex) {
            return Ok(rows.clone().map(|r| r as i64).collect());
        }
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let col = catalog.read("object_id", rows.clone())?;
        let at = |i: usize| match catalog.locate(rows.start + i) {
            Some((file, r)) => format!("{} row {r}", file.display()),
            None => format!("catalogue row {}", rows.start + i),
        };
        if let Some(i) = col.present.iter().position(|&p| !p) {
            bail!("object_id is missing (null) at {}", at(i));
        }
        match col.values {
            ColumnValues::I64(v) => Ok(v),
            ColumnValues::Str(v) => v
                .iter()
                .enumerate()
                .map(|(i, s)| {
                    s.trim()
                        .parse::<i64>()
                        .with_context(|| format!("object_id '{s}' at {} is not an integer", at(i)))
                })
                .collect(),
            _ => unreachable!("detect() checked the kind"),
        }
    }
}

/// Rows used and rejected per modality over a run, rejected rows counted per reason with the
/// first one's particulars. Every rank adds its chunks; [`Tally::finish`] combines the ranks.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tally {
    modalities: BTreeMap<String, ModalityCount>,
}

#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
struct ModalityCount {
    used: u64,
    rejected: u64,
    rejected_by_reason: BTreeMap<String, ReasonCount>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct ReasonCount {
    rows: u64,
    first_row: u64,
    first_object_id: i64,
    detail: String,
}

impl Tally {
    /// Adds a chunk starting at global row `start` (`ids`: its object ids).
    pub fn add(&mut self, start: usize, ids: &[i64], tokens: &[ModalityTokens]) {
        for t in tokens {
            let m = self
                .modalities
                .entry(t.modality.token_key.to_string())
                .or_default();
            m.used += t.used.iter().filter(|&&u| u).count() as u64;
            m.rejected += t.rejected.iter().filter(|&&r| r).count() as u64;
            for r in &t.rejections {
                let row = (start + r.row) as u64;
                let first_object_id = ids.get(r.row).copied().unwrap_or(row as i64);
                m.rejected_by_reason
                    .entry(r.reason.to_string())
                    .and_modify(|c| {
                        c.rows += 1;
                        if row < c.first_row {
                            (c.first_row, c.first_object_id) = (row, first_object_id);
                            c.detail.clone_from(&r.detail);
                        }
                    })
                    .or_insert_with(|| ReasonCount {
                        rows: 1,
                        first_row: row,
                        first_object_id,
                        detail: r.detail.clone(),
                    });
            }
        }
    }

    fn merge(&mut self, other: Tally) {
        for (k, o) in other.modalities {
            let m = self.modalities.entry(k).or_default();
            m.used += o.used;
            m.rejected += o.rejected;
            for (reason, c) in o.rejected_by_reason {
                match m.rejected_by_reason.get_mut(&reason) {
                    None => {
                        m.rejected_by_reason.insert(reason, c);
                    }
                    Some(mine) => {
                        mine.rows += c.rows;
                        if c.first_row < mine.first_row {
                            (mine.first_row, mine.first_object_id) =
                                (c.first_row, c.first_object_id);
                            mine.detail = c.detail;
                        }
                    }
                }
            }
        }
    }

    /// Combines every rank's tally (collective), logs the rejections per reason on rank 0 and
    /// returns `{token_key: {used, rejected, rejected_by_reason: {reason: {rows, first_row,
    /// first_object_id, detail}}}}` (the same on every rank).
    pub fn finish(self, session: &Session) -> Result<serde_json::Value> {
        let mine = serde_json::to_vec(&self)?;
        let merged = session.reduce_bytes(mine, |a, b| {
            let mut a: Tally = serde_json::from_slice(&a).unwrap_or_default();
            a.merge(serde_json::from_slice(&b).unwrap_or_default());
            serde_json::to_vec(&a).unwrap_or_default()
        });
        let all: Tally =
            serde_json::from_slice(&session.broadcast_bytes(&merged.unwrap_or_default()))?;
        if session.is_root() {
            for (key, m) in &all.modalities {
                if m.rejected == 0 {
                    continue;
                }
                let reasons: Vec<String> = m
                    .rejected_by_reason
                    .iter()
                    .map(|(reason, c)| {
                        format!(
                            "{} x {reason} (first: row {}, object_id {}: {})",
                            c.rows, c.first_row, c.first_object_id, c.detail
                        )
                    })
                    .collect();
                log::warn!(
                    "{key}: {} row(s) rejected, flagged in modalities_rejected: {}",
                    m.rejected,
                    reasons.join("; ")
                );
            }
        }
        Ok(serde_json::to_value(&all.modalities)?)
    }
}

/// Writes the three flag masks of the rows starting at `start` (collective; an empty `tokens`
/// with `n = 0` joins the writes with nothing); bits as in [`flag_specs`].
pub fn write_masks(
    modalities: &ModalityTable,
    run: &crate::pipeline::RunOutput,
    start: usize,
    tokens: &[ModalityTokens],
    n: usize,
) -> Result<()> {
    let [used, rejected, repaired] = masks(modalities, tokens, n);
    run.sets.write(&run.out, "modalities_used", start, &used)?;
    run.sets
        .write(&run.out, "modalities_rejected", start, &rejected)?;
    run.sets
        .write(&run.out, "modalities_repaired", start, &repaired)?;
    Ok(())
}

/// A dataset that is not per row (a grid: posterior bin edges, a wavelength grid), written once
/// into a new output. `data` is row-major over `shape`.
pub struct Constant {
    /// Path in the file.
    pub name: String,
    /// Shape (`[rows, …]`).
    pub shape: Vec<usize>,
    /// Values.
    pub data: Vec<f64>,
    /// `units` attribute (astropy notation).
    pub units: String,
    /// `label` attribute.
    pub label: String,
}

/// Writes `constants` as float64 datasets with their `units` and `label` (collective; rank 0
/// supplies the data). Datasets that exist already (a resumed run) are left as they are.
pub fn write_constants(
    session: &aion_mpi::Session,
    run: &crate::pipeline::RunOutput,
    constants: &[Constant],
) -> Result<()> {
    for c in constants {
        if run.out.hdf5().link_exists(&c.name) {
            continue;
        }
        let ds = run
            .out
            .create_dataset::<f64>(&c.name, c.shape[0], &c.shape[1..], None)?;
        run.out.set_dataset_attr_str(&ds, "units", &c.units)?;
        run.out.set_dataset_attr_str(&ds, "label", &c.label)?;
        let data: &[f64] = if session.is_root() { &c.data } else { &[] };
        run.out.write_rows(&ds, 0, data)?;
    }
    if !constants.is_empty() {
        run.out.flush()?;
    }
    Ok(())
}

/// Rows `rows` of dataset `ds` as flat row-major values (for figures drawn from an output).
pub fn read_rows<T: hdf5::H5Type + Copy>(ds: &hdf5::Dataset, rows: Range<usize>) -> Result<Vec<T>> {
    let dims = ds.shape().len();
    let mut sel: Vec<hdf5::SliceOrIndex> = vec![rows.into()];
    sel.extend((1..dims).map(|_| hdf5::SliceOrIndex::from(..)));
    let a: ndarray::ArrayD<T> = ds
        .read_slice(hdf5::Hyperslab::from(sel))
        .with_context(|| format!("cannot read {}", ds.name()))?;
    Ok(a.iter().copied().collect())
}

/// Writes the root attribute `modality_bits`: the token keys of `modalities`, bit `i` of the
/// masks = entry `i`.
pub fn write_modality_bits(out: &OutputFile, modalities: &ModalityTable) -> Result<()> {
    let names: Vec<String> = modalities.iter().map(|m| m.token_key.to_string()).collect();
    out.set_attr_str("modality_bits", &serde_json::to_string(&names)?)?;
    Ok(())
}

/// The `modalities_used` / `modalities_rejected` / `modalities_repaired` bit-mask datasets
/// (bit i = entry i of `modalities`, built-ins then the model's extras). Each
/// carries the names of its bits as the array attribute `bit_names`, so a reader decodes a mask
/// without the docs: `[n for i, n in enumerate(ds.attrs["bit_names"]) if mask >> i & 1]`.
pub fn flag_specs(modalities: &ModalityTable) -> Vec<DatasetSpec> {
    let names: Vec<String> = modalities.iter().map(|m| m.token_key.to_string()).collect();
    [
        (
            "modalities_used",
            "modalities whose tokens were used for this row",
        ),
        (
            "modalities_rejected",
            "modalities present but unusable for this row (left out)",
        ),
        (
            "modalities_repaired",
            "modalities used after repairing values as the reference does",
        ),
    ]
    .into_iter()
    .map(|(name, meaning)| {
        DatasetSpec::new(name, Dtype::U64, &[], Some(0.0))
            .attr(
                "meaning",
                format!("bit mask: bit i set = {meaning}; bit i names the modality bit_names[i]"),
            )
            .attr_list("bit_names", names.clone())
    })
    .collect()
}

/// Per-row bit masks of used, rejected and repaired modalities (bits: `modalities`).
pub fn masks(modalities: &ModalityTable, batch: &[ModalityTokens], n: usize) -> [Vec<u64>; 3] {
    let mut used = vec![0u64; n];
    let mut rejected = vec![0u64; n];
    let mut repaired = vec![0u64; n];
    for t in batch {
        let bit = 1u64
            << modalities
                .index(&t.modality.token_key)
                .expect("known modality");
        for r in 0..n {
            if t.used[r] {
                used[r] |= bit;
            }
            if t.rejected[r] {
                rejected[r] |= bit;
            }
            if t.repaired[r] {
                repaired[r] |= bit;
            }
        }
    }
    [used, rejected, repaired]
}

/// Rows read at a time by [`warn_duplicate_ids`].
const ID_BLOCK: usize = 1 << 20;

/// Warns (rank 0) when the catalogue's integer `object_id` holds duplicates, with their count
/// and the first duplicated id in row order and its rows: outputs are keyed by row, but users
/// join them by id. Rank 0 reads the whole column (8 bytes per row, twice that in memory while
/// sorting). Collective (the read error, if any, is agreed).
pub fn warn_duplicate_ids(session: &aion_mpi::Session, catalog: &Catalog) -> Result<()> {
    let found = if session.is_root() {
        duplicate_ids(catalog)
    } else {
        Ok(None)
    };
    if let Some(d) = crate::collective::agree(session, found)? {
        let rows: Vec<String> = d.rows.iter().map(|r| r.to_string()).collect();
        log::warn!(
            "object_id is not unique: {} row(s) repeat an earlier row's id (first: object_id {} \
             at rows {}{}); outputs are in catalogue row order, so join them by row, not by id",
            d.repeats,
            d.example,
            rows.join(", "),
            if d.more_rows { ", …" } else { "" }
        );
    }
    Ok(())
}

/// Duplicated ids of a catalogue.
#[derive(Debug, PartialEq)]
struct Duplicates {
    /// Rows whose id appeared at an earlier row.
    repeats: usize,
    /// The first duplicated id in row order.
    example: i64,
    /// Its first rows (up to 5).
    rows: Vec<usize>,
    /// Whether it has more rows.
    more_rows: bool,
}

fn duplicate_ids(catalog: &Catalog) -> Result<Option<Duplicates>> {
    let n = catalog.n_rows();
    let int_ids = catalog
        .info("object_id")?
        .is_some_and(|i| i.kind == ColumnKind::Int && i.row_shape.is_empty());
    if !int_ids || n < 2 {
        return Ok(None);
    }
    let mut ids = Vec::with_capacity(n);
    for start in (0..n).step_by(ID_BLOCK) {
        let col = catalog.read("object_id", start..(start + ID_BLOCK).min(n))?;
        match col.values {
            aion_io::catalog::ColumnValues::I64(v) => ids.extend(
                v.into_iter()
                    .zip(col.present)
                    .map(|(id, p)| p.then_some(id)),
            ),
            _ => return Ok(None),
        }
    }
    Ok(find_duplicates(&ids))
}

/// The duplicates among `ids` (`None` = row without an id, never a duplicate).
fn find_duplicates(ids: &[Option<i64>]) -> Option<Duplicates> {
    let mut sorted: Vec<i64> = ids.iter().flatten().copied().collect();
    sorted.sort_unstable();
    let repeats = sorted.windows(2).filter(|w| w[0] == w[1]).count();
    if repeats == 0 {
        return None;
    }
    let is_dup = |id: i64| {
        let i = sorted.partition_point(|&x| x < id);
        sorted.get(i + 1) == Some(&id)
    };
    let example = ids.iter().flatten().copied().find(|&id| is_dup(id))?;
    let all: Vec<usize> = ids
        .iter()
        .enumerate()
        .filter(|(_, id)| **id == Some(example))
        .map(|(r, _)| r)
        .collect();
    Some(Duplicates {
        repeats,
        example,
        rows: all.iter().take(5).copied().collect(),
        more_rows: all.len() > 5,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_duplicates_in_row_order() {
        assert_eq!(find_duplicates(&[Some(3), Some(1), None, None]), None);
        let ids = [Some(9), Some(4), Some(7), Some(4), Some(9), Some(9), None];
        let d = find_duplicates(&ids).unwrap();
        assert_eq!(
            d,
            Duplicates {
                repeats: 3,
                example: 9,
                rows: vec![0, 4, 5],
                more_rows: false
            }
        );
    }
}
