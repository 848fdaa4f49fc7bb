//! Output datasets shared by the tools: object ids and per-row modality flags.

use std::ops::Range;

use aion_io::catalog::ColumnKind;
use aion_io::{Catalog, OutputFile};
use aion_model::modality::{MODALITIES, modality_index};
use anyhow::Result;

use crate::codec_set::ModalityTokens;
use crate::run_config::{Binding, Source};

/// Dataset suffixes read for a group source (images, spectra, catalogs).
pub const GROUP_SUFFIXES: &[&str] = &[
    "array", "flux", "band", "ivar", "lambda", "mask", "X", "Y", "SHAPE_E1", "SHAPE_E2", "SHAPE_R",
];

/// Every dataset that may be read for `bindings`, plus `object_id` (used to size the files).
pub fn candidate_datasets(bindings: &[Binding]) -> Vec<String> {
    let mut out = vec!["object_id".to_string()];
    for b in bindings {
        match &b.source {
            Source::Tokens { dataset } | Source::Scalar { dataset, .. } => {
                out.push(dataset.clone())
            }
            Source::Group { prefix } => {
                out.extend(GROUP_SUFFIXES.iter().map(|s| format!("{prefix}_{s}")))
            }
        }
    }
    out
}

/// Where `object_id` comes from.
pub enum ObjectIds {
    /// The catalogue's integer `object_id` dataset.
    Dataset,
    /// The global row index (the catalogue has no usable `object_id`).
    RowIndex,
}

impl ObjectIds {
    /// Uses `object_id` when every file holds it as integers, else the row index.
    pub fn detect(catalog: &Catalog) -> Result<Self> {
        Ok(match catalog.info("object_id")? {
            Some(i)
                if i.kind == ColumnKind::Int
                    && i.row_shape.is_empty()
                    && i.present_in.iter().all(|&p| p) =>
            {
                Self::Dataset
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
            Self::Dataset => "object_id",
            Self::RowIndex => "row_index",
        }
    }

    /// Creates the `object_id` dataset (collective).
    pub fn create(&self, out: &OutputFile, n: usize) -> Result<hdf5::Dataset> {
        let ds = out.create_dataset::<i64>("object_id", n, &[], None)?;
        out.set_dataset_attr_str(&ds, "source", self.source())?;
        Ok(ds)
    }

    /// Writes the ids of `rows` (collective).
    pub fn write(
        &self,
        out: &OutputFile,
        ds: &hdf5::Dataset,
        catalog: &Catalog,
        rows: &Range<usize>,
    ) -> Result<()> {
        let ids: Vec<i64> = match self {
            Self::RowIndex => rows.clone().map(|r| r as i64).collect(),
            Self::Dataset if rows.is_empty() => Vec::new(),
            Self::Dataset => match catalog.read("object_id", rows.clone())?.values {
                aion_io::catalog::ColumnValues::I64(v) => v,
                _ => unreachable!("detect() checked the kind"),
            },
        };
        out.write_rows(ds, rows.start, &ids)?;
        Ok(())
    }
}

/// The `modalities_used` / `modalities_rejected` bit masks (bit i = `MODALITIES[i]`).
pub struct RowFlags {
    used: hdf5::Dataset,
    rejected: hdf5::Dataset,
}

impl RowFlags {
    /// Creates both datasets and the root attribute `modality_bits` naming the bits (collective).
    pub fn create(out: &OutputFile, n: usize) -> Result<Self> {
        let names: Vec<&str> = MODALITIES.iter().map(|m| m.token_key).collect();
        out.set_attr_str("modality_bits", &serde_json::to_string(&names)?)?;
        let used = out.create_dataset::<u64>("modalities_used", n, &[], Some(0))?;
        let rejected = out.create_dataset::<u64>("modalities_rejected", n, &[], Some(0))?;
        Ok(Self { used, rejected })
    }

    /// Writes the masks of the rows starting at `start` (collective).
    pub fn write(&self, out: &OutputFile, start: usize, batch: &[ModalityTokens]) -> Result<()> {
        let n = batch.first().map_or(0, |t| t.used.len());
        let (used, rejected) = masks(batch, n);
        out.write_rows(&self.used, start, &used)?;
        out.write_rows(&self.rejected, start, &rejected)?;
        Ok(())
    }
}

/// Per-row bit masks of used and rejected modalities.
pub fn masks(batch: &[ModalityTokens], n: usize) -> (Vec<u64>, Vec<u64>) {
    let mut used = vec![0u64; n];
    let mut rejected = vec![0u64; n];
    for t in batch {
        let bit = 1u64 << modality_index(t.modality.token_key).expect("known modality");
        for r in 0..n {
            if t.used[r] {
                used[r] |= bit;
            }
            if t.rejected[r] {
                rejected[r] |= bit;
            }
        }
    }
    (used, rejected)
}
