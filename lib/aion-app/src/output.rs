//! Output datasets shared by the tools: object ids and per-row modality flags.

use std::ops::Range;

use aion_io::catalog::ColumnKind;
use aion_io::{Catalog, OutputFile};
use aion_model::modality::{all, modality_index};
use anyhow::{Context, Result};

use crate::codec_set::ModalityTokens;
use crate::pipeline::{DatasetSpec, Dtype};
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

    /// The `object_id` output dataset.
    pub fn spec(&self) -> DatasetSpec {
        DatasetSpec::new("object_id", Dtype::I64, &[], None).attr("source", self.source())
    }

    /// The ids of `rows`.
    pub fn read(&self, catalog: &Catalog, rows: &Range<usize>) -> Result<Vec<i64>> {
        Ok(match self {
            Self::RowIndex => rows.clone().map(|r| r as i64).collect(),
            Self::Dataset if rows.is_empty() => Vec::new(),
            Self::Dataset => match catalog.read("object_id", rows.clone())?.values {
                aion_io::catalog::ColumnValues::I64(v) => v,
                _ => unreachable!("detect() checked the kind"),
            },
        })
    }
}

/// Writes the three flag masks of the rows starting at `start` (collective; an empty `tokens`
/// with `n = 0` joins the writes with nothing).
pub fn write_masks(
    run: &crate::pipeline::RunOutput,
    start: usize,
    tokens: &[ModalityTokens],
    n: usize,
) -> Result<()> {
    let [used, rejected, repaired] = masks(tokens, n);
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

/// Writes the root attribute `modality_bits`: the token keys, bit `i` of the masks = entry `i`.
pub fn write_modality_bits(out: &OutputFile) -> Result<()> {
    let names: Vec<&str> = all().map(|m| m.token_key).collect();
    out.set_attr_str("modality_bits", &serde_json::to_string(&names)?)?;
    Ok(())
}

/// The `modalities_used` / `modalities_rejected` / `modalities_repaired` bit-mask datasets
/// (bit i = entry i of `aion_model::modality::all()`, built-ins then registered extras). Each
/// carries the names of its bits as the array attribute `bit_names`, so a reader decodes a mask
/// without the docs: `[n for i, n in enumerate(ds.attrs["bit_names"]) if mask >> i & 1]`.
pub fn flag_specs() -> Vec<DatasetSpec> {
    let names: Vec<String> = all().map(|m| m.token_key.to_string()).collect();
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

/// Per-row bit masks of used, rejected and repaired modalities.
pub fn masks(batch: &[ModalityTokens], n: usize) -> [Vec<u64>; 3] {
    let mut used = vec![0u64; n];
    let mut rejected = vec![0u64; n];
    let mut repaired = vec![0u64; n];
    for t in batch {
        let bit = 1u64 << modality_index(t.modality.token_key).expect("known modality");
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
