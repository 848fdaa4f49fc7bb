//! The aion-hpc output being exported: its per-object datasets (first axis = catalogue row),
//! their types, shapes and self-description (`units`, `label`, `bit_names`, grids), read in
//! blocks of rows.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};

use aion_io::export::{Block, Dtype, Field, Values};
use anyhow::{Context, Result, bail};
use hdf5::types::{FloatSize, IntSize, TypeDescriptor, VarLenUnicode};

use crate::output::read_rows;

/// Groups left out unless named with `--datasets`: the resume record, per-token context
/// vectors and raw logits (large, and of little use outside the HDF5 file).
pub const SKIPPED_BY_DEFAULT: [&str; 3] = ["resume/", "tokens/", "logits/"];

/// Attributes that name a grid dataset (not per object) describing a dataset's last axis.
const GRID_ATTRS: [&str; 3] = ["wavelength", "bin_edges", "bin_centres"];

/// Grids of at most this many values are copied into the Parquet field metadata.
const MAX_GRID_VALUES: usize = 1 << 20;

/// One per-object dataset of the output.
#[derive(Debug, Clone)]
pub struct ResultDataset {
    /// Its path in the file (`pred/tok_z/mean`).
    pub path: String,
    /// Its column (units, description and metadata from its attributes).
    pub field: Field,
}

/// An aion-hpc output opened for export.
pub struct Results {
    /// The file.
    pub path: PathBuf,
    file: hdf5::File,
    /// Its rows (length of `object_id`).
    pub rows: usize,
    /// The tool that wrote it (root attribute `tool`).
    pub tool: String,
    /// Where its `object_id` came from: `object_id` (the catalogue's) or `row_index`.
    pub id_source: String,
    /// Every per-object dataset: `object_id`, then the others in file order (groups depth
    /// first, names sorted).
    pub datasets: Vec<ResultDataset>,
}

fn str_attr(loc: &hdf5::Location, name: &str) -> Option<String> {
    loc.attr(name)
        .ok()?
        .read_scalar::<VarLenUnicode>()
        .ok()
        .map(|s| s.as_str().to_string())
}

fn str_list_attr(loc: &hdf5::Location, name: &str) -> Option<Vec<String>> {
    let a = loc.attr(name).ok()?;
    if a.ndim() != 1 {
        return None;
    }
    a.read_raw::<VarLenUnicode>()
        .ok()
        .map(|v| v.iter().map(|s| s.as_str().to_string()).collect())
}

/// Every dataset path under `g`.
fn walk(g: &hdf5::Group, prefix: &str, out: &mut Vec<String>) -> Result<()> {
    let mut names = g.member_names()?;
    names.sort();
    for name in names {
        let full = format!("{prefix}{name}");
        if g.dataset(&name).is_ok() {
            out.push(full);
        } else if let Ok(sub) = g.group(&name) {
            walk(&sub, &format!("{full}/"), out)?;
        }
    }
    Ok(())
}

/// The export type of an HDF5 data type; `None` for types not exported.
fn dtype_of(td: &TypeDescriptor) -> Option<Dtype> {
    Some(match td {
        TypeDescriptor::Float(FloatSize::U4) => Dtype::F32,
        TypeDescriptor::Float(FloatSize::U8) => Dtype::F64,
        TypeDescriptor::Integer(_) => Dtype::I64,
        TypeDescriptor::Unsigned(IntSize::U1) => Dtype::U8,
        TypeDescriptor::Unsigned(_) => Dtype::U64,
        TypeDescriptor::Boolean => Dtype::Bool,
        _ => return None,
    })
}

impl Results {
    /// Opens `path`, an output of an aion-hpc tool whose run finished.
    pub fn open(path: &Path) -> Result<Self> {
        let file = hdf5::File::open(path)
            .with_context(|| format!("cannot open {} as HDF5", path.display()))?;
        let tool = str_attr(&file, "tool")
            .filter(|t| t.starts_with("aion-"))
            .with_context(|| {
                format!(
                    "{} was not written by an aion-hpc tool (no root attribute 'tool'); \
                     aion-export reads the outputs of aion-tokenize, aion-embed, aion-predict \
                     and aion-generate",
                    path.display()
                )
            })?;
        if str_attr(&file, "end_time").is_none_or(|t| t.is_empty()) {
            bail!(
                "{} is incomplete: its run ({tool}) has not finished (no end_time), so some rows \
                 are not written yet; resume the run, then export",
                path.display()
            );
        }
        let ids = file.dataset("object_id").with_context(|| {
            format!(
                "{} has no per-object results (no dataset object_id): an {tool} output is not \
                 a table of catalogue rows",
                path.display()
            )
        })?;
        let rows = ids.shape().first().copied().unwrap_or(0);
        let id_source = str_attr(&ids, "source").unwrap_or_else(|| "row_index".into());
        let mut names = Vec::new();
        walk(&file, "", &mut names)?;
        // Grids (wavelengths, bin edges) describe other datasets; they are not per object even
        // when their length happens to equal the row count.
        let mut grids = Vec::new();
        for name in &names {
            let ds = file.dataset(name)?;
            grids.extend(GRID_ATTRS.iter().filter_map(|a| str_attr(&ds, a)));
        }
        let mut datasets = Vec::new();
        for name in names {
            let ds = file.dataset(&name)?;
            let shape = ds.shape();
            if shape.first() != Some(&rows) || grids.contains(&name) {
                continue;
            }
            let td = ds.dtype().and_then(|t| t.to_descriptor())?;
            let Some(dtype) = dtype_of(&td) else {
                log::debug!("{name}: type {td:?} is not exported");
                continue;
            };
            let mut field = Field::new(name.replace('/', "_"), dtype, shape[1..].to_vec());
            field.units = str_attr(&ds, "units");
            field.description = str_attr(&ds, "label");
            field.metadata.insert("hdf5_dataset".into(), name.clone());
            for attr in ds.attr_names()? {
                if attr == "units" || attr == "label" {
                    continue;
                }
                if let Some(v) = str_attr(&ds, &attr) {
                    if GRID_ATTRS.contains(&attr.as_str()) {
                        field
                            .metadata
                            .insert(attr.clone(), grid_json(&file, &v)?.unwrap_or(v));
                    } else {
                        field.metadata.insert(attr, v);
                    }
                } else if let Some(list) = str_list_attr(&ds, &attr) {
                    field.metadata.insert(attr, serde_json::to_string(&list)?);
                }
            }
            datasets.push(ResultDataset { path: name, field });
        }
        // The key first, as catalogues have it.
        datasets.sort_by_key(|d| d.path != "object_id");
        Ok(Self {
            path: path.to_path_buf(),
            file,
            rows,
            tool,
            id_source,
            datasets,
        })
    }

    /// Datasets exported without `--datasets`: all but [`SKIPPED_BY_DEFAULT`].
    pub fn default_datasets(&self) -> Vec<&ResultDataset> {
        self.datasets
            .iter()
            .filter(|d| !SKIPPED_BY_DEFAULT.iter().any(|p| d.path.starts_with(p)))
            .collect()
    }

    /// The datasets named (a group name selects every dataset under it).
    pub fn select(&self, names: &[String]) -> Result<Vec<&ResultDataset>> {
        let mut out: Vec<&ResultDataset> = Vec::new();
        for n in names {
            let n = n.trim_matches('/');
            let group = format!("{n}/");
            let found: Vec<&ResultDataset> = self
                .datasets
                .iter()
                .filter(|d| d.path == n || d.path.starts_with(&group))
                .collect();
            if found.is_empty() {
                bail!(
                    "{}: no per-object dataset or group '{n}'; it has: {}",
                    self.path.display(),
                    self.datasets
                        .iter()
                        .map(|d| d.path.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
            for d in found {
                if !out.iter().any(|o| o.path == d.path) {
                    out.push(d);
                }
            }
        }
        Ok(out)
    }

    /// Rows `rows` of dataset `d`.
    pub fn read(&self, d: &ResultDataset, rows: Range<usize>) -> Result<Block> {
        let ds = self.file.dataset(&d.path)?;
        let values = match d.field.dtype {
            Dtype::F32 => Values::F32(read_rows(&ds, rows)?),
            Dtype::F64 => Values::F64(read_rows(&ds, rows)?),
            Dtype::I64 => Values::I64(read_rows(&ds, rows)?),
            Dtype::U64 => Values::U64(read_rows(&ds, rows)?),
            Dtype::U8 => Values::U8(read_rows(&ds, rows)?),
            Dtype::Bool => Values::Bool(read_rows(&ds, rows)?),
            Dtype::Str => unreachable!("strings are not exported from results"),
        };
        Ok(Block::full(values))
    }

    /// Rows `rows` of `object_id`.
    pub fn object_ids(&self, rows: Range<usize>) -> Result<Vec<i64>> {
        read_rows(&self.file.dataset("object_id")?, rows)
    }

    /// A string root attribute.
    pub fn attr(&self, name: &str) -> Option<String> {
        str_attr(&self.file, name)
    }
}

/// The values of grid dataset `name` as JSON (`{"dataset", "shape", "values"}`), or `None` when
/// it is missing or too large to copy.
fn grid_json(file: &hdf5::File, name: &str) -> Result<Option<String>> {
    let Ok(ds) = file.dataset(name) else {
        return Ok(None);
    };
    if ds.size() > MAX_GRID_VALUES {
        return Ok(None);
    }
    let values: Vec<f64> = ds.read_raw()?;
    let doc: BTreeMap<&str, serde_json::Value> = BTreeMap::from([
        ("dataset", name.into()),
        ("shape", ds.shape().into()),
        ("values", values.into()),
    ]);
    Ok(Some(serde_json::to_string(&doc)?))
}
