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
    if let Some(dir) = out.iter().find(|p| p.is_dir()) {
        return Err(Error::Directory { path: dir.clone() });
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
                if f.file.group(dataset).is_ok() {
                    return Err(shape_error(
                        &f.path,
                        dataset,
                        "is an HDF5 group, not a dataset (map one of the datasets inside it)",
                    ));
                }
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

    /// Reads rows `rows` of the float dataset `dataset` into `out` (row-major, resized to the
    /// rows × row length), reusing `out`'s memory: once `out` is large enough, nothing is
    /// allocated and HDF5 writes straight into it. For scans that read many large chunks
    /// (`aion-search`), where allocating fresh buffers per chunk costs more in page faults than
    /// the read itself. Rows of files without the dataset read as NaN.
    pub fn read_f32_into(
        &self,
        dataset: &str,
        rows: Range<usize>,
        out: &mut Vec<f32>,
    ) -> Result<()> {
        let first = || {
            self.files
                .first()
                .map(|f| f.path.clone())
                .unwrap_or_default()
        };
        let info = self.info(dataset)?.ok_or_else(|| Error::MissingDataset {
            path: first(),
            dataset: dataset.to_string(),
        })?;
        if info.kind != ColumnKind::Float {
            return Err(shape_error(&first(), dataset, "is not a float dataset"));
        }
        let row_len: usize = info.row_shape.iter().product();
        let need = rows.len() * row_len;
        if out.len() != need {
            out.clear();
            out.resize(need, 0.0);
        }
        for (fi, f) in self.files.iter().enumerate() {
            let lo = rows.start.max(f.start);
            let hi = rows.end.min(f.start + f.rows);
            if lo >= hi {
                continue;
            }
            let dst = &mut out[(lo - rows.start) * row_len..(hi - rows.start) * row_len];
            if !info.present_in[fi] {
                dst.fill(f32::NAN);
                continue;
            }
            let local = (lo - f.start)..(hi - f.start);
            let err = |source| Error::Read {
                path: f.path.clone(),
                dataset: dataset.to_string(),
                rows: local.clone(),
                source,
            };
            let ds = f.file.dataset(dataset).map_err(err)?;
            raw::read_rows_f32(&ds, local.clone(), dst).map_err(err)?;
        }
        Ok(())
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
        ColumnValues::F32(v) => append(v, ds.read_slice::<f32, _, IxDyn>(sel()).map_err(err)?),
        ColumnValues::I64(v) => append(v, ds.read_slice::<i64, _, IxDyn>(sel()).map_err(err)?),
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

/// Appends the elements of `a` (row-major) to `v`: a move or a `memcpy` for the freshly read,
/// contiguous arrays HDF5 returns (an element-wise copy through `IxDyn` indexing is several times
/// slower than the read itself for wide rows such as embeddings or spectra).
fn append<T: Clone>(v: &mut Vec<T>, a: ndarray::ArrayD<T>) {
    if !a.is_standard_layout() {
        v.extend(a.iter().cloned());
        return;
    }
    let len = a.len();
    let (raw, offset) = a.into_raw_vec_and_offset();
    let offset = offset.unwrap_or(0);
    if v.is_empty() && offset == 0 && raw.len() == len {
        *v = raw;
    } else {
        v.extend_from_slice(&raw[offset..offset + len]);
    }
}

fn pad(values: &mut ColumnValues, n: usize) {
    match values {
        ColumnValues::F32(v) => v.extend(std::iter::repeat_n(f32::NAN, n)),
        ColumnValues::I64(v) => v.extend(std::iter::repeat_n(0, n)),
        ColumnValues::Bool(v) => v.extend(std::iter::repeat_n(false, n)),
        ColumnValues::Str(v) => v.extend(std::iter::repeat_n(String::new(), n)),
    }
}

/// Raw `H5Dread` of whole rows into a caller's buffer (hdf5-metno reads selections only into
/// arrays it allocates).
#[allow(unsafe_code)]
mod raw {
    use std::ops::Range;

    use hdf5_sys::h5d::{H5Dget_space, H5Dread};
    use hdf5_sys::h5p::H5P_DEFAULT;
    use hdf5_sys::h5s::{H5S_seloper_t, H5Sclose, H5Screate_simple, H5Sselect_hyperslab};

    /// Reads rows `rows` of `ds` (any float type, converted by HDF5) into `out`, which must hold
    /// exactly `rows.len()` whole rows.
    pub(super) fn read_rows_f32(
        ds: &hdf5::Dataset,
        rows: Range<usize>,
        out: &mut [f32],
    ) -> hdf5::Result<()> {
        let shape = ds.shape();
        let row_len: usize = shape.get(1..).unwrap_or(&[]).iter().product();
        if shape.is_empty() || rows.end > shape[0] || out.len() != rows.len() * row_len {
            return Err(format!(
                "read of rows {rows:?} of a dataset of shape {shape:?} into {} values",
                out.len()
            )
            .into());
        }
        if out.is_empty() {
            return Ok(());
        }
        let mem_type = hdf5::Datatype::from_type::<f32>()?;
        let mut start = vec![0u64; shape.len()];
        start[0] = rows.start as u64;
        let mut count: Vec<u64> = shape.iter().map(|&d| d as u64).collect();
        count[0] = rows.len() as u64;
        hdf5::sync::sync(|| {
            // SAFETY: every handle is checked before use and closed once; the memory space has
            // exactly `out.len()` elements of `mem_type` (f32), checked above, and `out` is
            // borrowed mutably; the library lock is held.
            unsafe {
                let fspace = H5Dget_space(ds.id());
                if fspace < 0 {
                    return Err("H5Dget_space failed".into());
                }
                let mspace = H5Screate_simple(count.len() as i32, count.as_ptr(), std::ptr::null());
                if mspace < 0 {
                    H5Sclose(fspace);
                    return Err("H5Screate_simple failed".into());
                }
                let mut status = H5Sselect_hyperslab(
                    fspace,
                    H5S_seloper_t::H5S_SELECT_SET,
                    start.as_ptr(),
                    std::ptr::null(),
                    count.as_ptr(),
                    std::ptr::null(),
                );
                if status >= 0 {
                    status = H5Dread(
                        ds.id(),
                        mem_type.id(),
                        mspace,
                        fspace,
                        H5P_DEFAULT,
                        out.as_mut_ptr().cast(),
                    );
                }
                H5Sclose(mspace);
                H5Sclose(fspace);
                if status < 0 {
                    return Err("H5Dread failed".into());
                }
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_f32_into_matches_read_across_files_types_and_gaps() {
        let dir = std::env::temp_dir().join(format!("aion-io-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let paths: Vec<PathBuf> = ["a", "b", "c"]
            .iter()
            .map(|n| dir.join(format!("{n}.h5")))
            .collect();
        let a = hdf5::File::create(&paths[0]).unwrap();
        let xa = ndarray::arr2(&[[1f32, 2.0], [3.0, 4.0], [5.0, 6.0]]);
        a.new_dataset_builder().with_data(&xa).create("x").unwrap();
        let b = hdf5::File::create(&paths[1]).unwrap();
        let xb = ndarray::arr2(&[[7f64, 8.0], [9.0, 10.5]]);
        b.new_dataset_builder().with_data(&xb).create("x").unwrap();
        let c = hdf5::File::create(&paths[2]).unwrap();
        let ids = ndarray::arr1(&[1i64]);
        c.new_dataset_builder()
            .with_data(&ids)
            .create("object_id")
            .unwrap();
        drop((a, b, c));
        let names: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
        let mut cat = Catalog::open(&names).unwrap();
        cat.size_by(&["x".to_string(), "object_id".to_string()])
            .unwrap();
        assert_eq!(cat.n_rows(), 6);
        let mut buf = Vec::new();
        cat.read_f32_into("x", 1..6, &mut buf).unwrap();
        let want = [3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.5];
        assert_eq!(&buf[..8], &want);
        assert!(buf[8].is_nan() && buf[9].is_nan());
        let via_read = cat.read("x", 1..6).unwrap().to_f32().unwrap();
        assert_eq!(&via_read[..8], &buf[..8]);
        // Same size again: the buffer is reused, not reallocated.
        let ptr = buf.as_ptr();
        cat.read_f32_into("x", 0..5, &mut buf).unwrap();
        assert_eq!(buf.as_ptr(), ptr);
        assert_eq!(&buf[..2], &[1.0, 2.0]);
        cat.read_f32_into("x", 2..2, &mut buf).unwrap();
        assert!(buf.is_empty());
        assert!(cat.read_f32_into("object_id", 0..1, &mut buf).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
