//! Reading Multimodal-Universe-style HDF5 catalogues.
//!
//! A catalogue is one or more HDF5 files whose datasets have the object as first axis
//! (`FLUX_G` `(N,)`, `image_array` `(N,4,160,160)`, `coeff` `(N,110)`, …). Several files are
//! read as one catalogue, concatenated in the order given (each glob sorted). A dataset missing
//! from some files is not an error: the rows of those files are marked absent for it, and the
//! tools leave that modality out for those rows.

use std::ops::Range;
use std::path::{Path, PathBuf};

use hdf5::types::{FixedAscii, FixedUnicode, TypeDescriptor, VarLenUnicode};
use hdf5::{Hyperslab, Selection, SliceOrIndex};
use ndarray::IxDyn;

use crate::error::{Error, Result};

/// Kind of values a dataset holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnKind {
    /// Any float type (read as `f32`).
    Float,
    /// Any integer type (read as `i64`).
    Int,
    /// Booleans (h5py's `bool` enum).
    Bool,
    /// Strings (fixed or variable length).
    Str,
}

/// What the catalogue knows about one dataset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnInfo {
    /// Shape of one row (the dataset shape without its first axis).
    pub row_shape: Vec<usize>,
    /// Value kind.
    pub kind: ColumnKind,
    /// For each file: whether it holds the dataset.
    pub present_in: Vec<bool>,
}

/// Values of a block of rows.
#[derive(Debug, Clone, PartialEq)]
pub enum ColumnValues {
    /// Floats, row-major.
    F32(Vec<f32>),
    /// Integers, row-major.
    I64(Vec<i64>),
    /// Booleans, row-major.
    Bool(Vec<bool>),
    /// Strings, row-major.
    Str(Vec<String>),
}

/// A block of rows of one dataset.
#[derive(Debug, Clone, PartialEq)]
pub struct Column {
    /// Shape of one row.
    pub row_shape: Vec<usize>,
    /// Values (row-major; rows whose file lacks the dataset hold defaults).
    pub values: ColumnValues,
    /// Per row: whether its file holds the dataset.
    pub present: Vec<bool>,
}

impl Column {
    /// Values per row.
    pub fn row_len(&self) -> usize {
        self.row_shape.iter().product()
    }

    /// Values as `f32` (integers and booleans converted); `None` for strings.
    pub fn to_f32(&self) -> Option<Vec<f32>> {
        match &self.values {
            ColumnValues::F32(v) => Some(v.clone()),
            ColumnValues::I64(v) => Some(v.iter().map(|&x| x as f32).collect()),
            ColumnValues::Bool(v) => Some(v.iter().map(|&x| f32::from(u8::from(x))).collect()),
            ColumnValues::Str(_) => None,
        }
    }
}

struct CatFile {
    path: PathBuf,
    file: hdf5::File,
    rows: usize,
    start: usize,
}

/// One or more catalogue files read as a single, concatenated table.
pub struct Catalog {
    files: Vec<CatFile>,
    n_rows: usize,
}

impl std::fmt::Debug for Catalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let paths: Vec<_> = self.files.iter().map(|c| (&c.path, c.rows)).collect();
        f.debug_struct("Catalog")
            .field("files", &paths)
            .field("rows", &self.n_rows)
            .finish()
    }
}

/// Expands paths and glob patterns (each pattern's matches sorted) into a file list.
pub fn expand_paths(patterns: &[String]) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for p in patterns {
        if Path::new(p).exists() || !p.contains(['*', '?', '[']) {
            if !Path::new(p).exists() {
                return Err(Error::NoFiles { pattern: p.clone() });
            }
            out.push(PathBuf::from(p));
            continue;
        }
        let mut matched: Vec<PathBuf> = glob::glob(p)
            .map_err(|e| Error::Pattern {
                pattern: p.clone(),
                message: e.to_string(),
            })?
            .filter_map(std::result::Result::ok)
            .collect();
        if matched.is_empty() {
            return Err(Error::NoFiles { pattern: p.clone() });
        }
        matched.sort();
        out.extend(matched);
    }
    Ok(out)
}

impl Catalog {
    /// Opens the files matched by `patterns` (row counts are set by [`Catalog::size_by`]).
    pub fn open(patterns: &[String]) -> Result<Self> {
        let paths = expand_paths(patterns)?;
        let mut files = Vec::with_capacity(paths.len());
        for path in paths {
            let file = hdf5::File::open(&path).map_err(|source| Error::Open {
                path: path.clone(),
                source,
            })?;
            files.push(CatFile {
                path,
                file,
                rows: 0,
                start: 0,
            });
        }
        Ok(Self { files, n_rows: 0 })
    }

    /// Whether any catalogue file holds `dataset`.
    pub fn has(&self, dataset: &str) -> bool {
        self.files.iter().any(|f| f.file.link_exists(dataset))
    }

    /// Sizes each file by the `datasets` the run reads: within a file they must agree on the
    /// number of rows, and a file must hold at least one of them.
    pub fn size_by(&mut self, datasets: &[String]) -> Result<()> {
        let mut start = 0;
        for f in &mut self.files {
            f.rows = file_rows(&f.path, &f.file, datasets)?;
            f.start = start;
            start += f.rows;
        }
        self.n_rows = start;
        Ok(())
    }

    /// Total number of rows.
    pub fn n_rows(&self) -> usize {
        self.n_rows
    }

    /// The catalogue files in order.
    pub fn paths(&self) -> Vec<&Path> {
        self.files.iter().map(|f| f.path.as_path()).collect()
    }

    /// Describes a dataset, or `None` if no file holds it. Files that hold it must agree on
    /// its row shape and kind.
    pub fn info(&self, dataset: &str) -> Result<Option<ColumnInfo>> {
        let mut info: Option<ColumnInfo> = None;
        let mut present_in = Vec::with_capacity(self.files.len());
        for f in &self.files {
            let Ok(ds) = f.file.dataset(dataset) else {
                present_in.push(false);
                continue;
            };
            present_in.push(true);
            let shape = ds.shape();
            let kind = kind_of(&f.path, dataset, &ds)?;
            let row_shape = shape.get(1..).unwrap_or(&[]).to_vec();
            if shape.is_empty() {
                return Err(shape_error(
                    &f.path,
                    dataset,
                    "is a scalar, expected one row per object",
                ));
            }
            match &info {
                None => {
                    info = Some(ColumnInfo {
                        row_shape,
                        kind,
                        present_in: Vec::new(),
                    })
                }
                Some(i) if i.row_shape != row_shape || i.kind != kind => {
                    let msg = format!(
                        "rows of shape {row_shape:?} ({kind:?}) here but {:?} ({:?}) in an earlier file",
                        i.row_shape, i.kind
                    );
                    return Err(shape_error(&f.path, dataset, &msg));
                }
                Some(_) => {}
            }
        }
        Ok(info.map(|i| ColumnInfo { present_in, ..i }))
    }

    /// Reads rows `rows` (global indices) of `dataset`.
    pub fn read(&self, dataset: &str, rows: Range<usize>) -> Result<Column> {
        let info = self.info(dataset)?.ok_or_else(|| Error::MissingDataset {
            path: self
                .files
                .first()
                .map(|f| f.path.clone())
                .unwrap_or_default(),
            dataset: dataset.to_string(),
        })?;
        let row_len: usize = info.row_shape.iter().product();
        let n = rows.len();
        let mut present = Vec::with_capacity(n);
        let mut values = match info.kind {
            ColumnKind::Float => ColumnValues::F32(Vec::with_capacity(n * row_len)),
            ColumnKind::Int => ColumnValues::I64(Vec::with_capacity(n * row_len)),
            ColumnKind::Bool => ColumnValues::Bool(Vec::with_capacity(n * row_len)),
            ColumnKind::Str => ColumnValues::Str(Vec::with_capacity(n * row_len)),
        };
        for (fi, f) in self.files.iter().enumerate() {
            let lo = rows.start.max(f.start);
            let hi = rows.end.min(f.start + f.rows);
            if lo >= hi {
                continue;
            }
            let local = (lo - f.start)..(hi - f.start);
            present.extend(std::iter::repeat_n(info.present_in[fi], local.len()));
            if info.present_in[fi] {
                read_into(f, dataset, local, info.row_shape.len(), &mut values)?;
            } else {
                pad(&mut values, local.len() * row_len);
            }
        }
        Ok(Column {
            row_shape: info.row_shape,
            values,
            present,
        })
    }

    /// Which file holds global row `row`, and the row's index in that file.
    pub fn locate(&self, row: usize) -> Option<(&Path, usize)> {
        self.files
            .iter()
            .find(|f| row >= f.start && row < f.start + f.rows)
            .map(|f| (f.path.as_path(), row - f.start))
    }
}

fn shape_error(path: &Path, dataset: &str, message: &str) -> Error {
    Error::Shape {
        path: path.to_path_buf(),
        dataset: dataset.to_string(),
        message: message.to_string(),
    }
}

fn file_rows(path: &Path, file: &hdf5::File, datasets: &[String]) -> Result<usize> {
    let mut rows: Option<(String, usize)> = None;
    for name in datasets {
        let Ok(ds) = file.dataset(name) else { continue };
        let Some(&n) = ds.shape().first() else {
            return Err(shape_error(
                path,
                name,
                "is a scalar, expected one row per object",
            ));
        };
        match &rows {
            None => rows = Some((name.clone(), n)),
            Some((reference, expected)) if *expected != n => {
                return Err(Error::RowCount {
                    path: path.to_path_buf(),
                    dataset: name.clone(),
                    reference: reference.clone(),
                    expected: *expected,
                    found: n,
                });
            }
            Some(_) => {}
        }
    }
    rows.map(|(_, n)| n).ok_or_else(|| Error::MissingDataset {
        path: path.to_path_buf(),
        dataset: format!("any of [{}]", datasets.join(", ")),
    })
}

fn kind_of(path: &Path, dataset: &str, ds: &hdf5::Dataset) -> Result<ColumnKind> {
    let td = ds
        .dtype()
        .and_then(|t| t.to_descriptor())
        .map_err(|e| shape_error(path, dataset, &format!("unsupported data type ({e})")))?;
    Ok(match td {
        TypeDescriptor::Float(_) => ColumnKind::Float,
        TypeDescriptor::Integer(_) | TypeDescriptor::Unsigned(_) => ColumnKind::Int,
        TypeDescriptor::Boolean => ColumnKind::Bool,
        TypeDescriptor::Enum(e) if e.members.len() == 2 => ColumnKind::Bool,
        TypeDescriptor::FixedAscii(_)
        | TypeDescriptor::FixedUnicode(_)
        | TypeDescriptor::VarLenAscii
        | TypeDescriptor::VarLenUnicode => ColumnKind::Str,
        other => {
            return Err(shape_error(
                path,
                dataset,
                &format!("unsupported data type {other:?}"),
            ));
        }
    })
}

fn selection(rows: Range<usize>, ndim_rest: usize) -> Selection {
    let mut h: Vec<SliceOrIndex> = vec![rows.into()];
    h.extend((0..ndim_rest).map(|_| SliceOrIndex::from(..)));
    Hyperslab::from(h).into()
}

fn read_into(
    f: &CatFile,
    dataset: &str,
    rows: Range<usize>,
    ndim_rest: usize,
    out: &mut ColumnValues,
) -> Result<()> {
    let err = |source| Error::Read {
        path: f.path.clone(),
        dataset: dataset.to_string(),
        rows: rows.clone(),
        source,
    };
    let ds = f.file.dataset(dataset).map_err(err)?;
    let sel = || selection(rows.clone(), ndim_rest);
    match out {
        ColumnValues::F32(v) => {
            v.extend(ds.read_slice::<f32, _, IxDyn>(sel()).map_err(err)?.iter())
        }
        ColumnValues::I64(v) => {
            v.extend(ds.read_slice::<i64, _, IxDyn>(sel()).map_err(err)?.iter())
        }
        ColumnValues::Bool(v) => match ds.read_slice::<bool, _, IxDyn>(sel()) {
            Ok(a) => v.extend(a.iter()),
            Err(_) => v.extend(
                ds.read_slice::<u8, _, IxDyn>(sel())
                    .map_err(err)?
                    .iter()
                    .map(|&b| b != 0),
            ),
        },
        ColumnValues::Str(v) => {
            let td = ds.dtype().and_then(|t| t.to_descriptor()).map_err(err)?;
            let trim = |s: &str| s.trim_end_matches(['\0', ' ']).to_string();
            match td {
                TypeDescriptor::VarLenAscii | TypeDescriptor::VarLenUnicode => {
                    let a = ds
                        .read_slice::<VarLenUnicode, _, IxDyn>(sel())
                        .map_err(err)?;
                    v.extend(a.iter().map(|s| trim(s.as_str())));
                }
                TypeDescriptor::FixedAscii(_) => {
                    let a = ds
                        .read_slice::<FixedAscii<64>, _, IxDyn>(sel())
                        .map_err(err)?;
                    v.extend(a.iter().map(|s| trim(s.as_str())));
                }
                _ => {
                    let a = ds
                        .read_slice::<FixedUnicode<64>, _, IxDyn>(sel())
                        .map_err(err)?;
                    v.extend(a.iter().map(|s| trim(s.as_str())));
                }
            }
        }
    }
    Ok(())
}

fn pad(values: &mut ColumnValues, n: usize) {
    match values {
        ColumnValues::F32(v) => v.extend(std::iter::repeat_n(f32::NAN, n)),
        ColumnValues::I64(v) => v.extend(std::iter::repeat_n(0, n)),
        ColumnValues::Bool(v) => v.extend(std::iter::repeat_n(false, n)),
        ColumnValues::Str(v) => v.extend(std::iter::repeat_n(String::new(), n)),
    }
}
