//! HDF5 parts (hdf5-metno): Multimodal-Universe-style files whose datasets have the object as
//! first axis; datasets inside groups are named `group/name`.

use std::ops::Range;
use std::path::{Path, PathBuf};

use hdf5::types::{FixedAscii, FixedUnicode, TypeDescriptor, VarLenUnicode};
use hdf5::{Hyperslab, Selection, SliceOrIndex};
use ndarray::IxDyn;

use super::{Column, ColumnKind, ColumnValues, Described, Part, Shape, shape_error};
use crate::error::{Error, Result};

/// One HDF5 file.
pub(super) struct H5Part {
    path: PathBuf,
    file: hdf5::File,
}

impl H5Part {
    /// Opens `path` read-only.
    pub(super) fn open(path: &Path) -> Result<Self> {
        let file = hdf5::File::open(path).map_err(|source| Error::Open {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(Self {
            path: path.to_path_buf(),
            file,
        })
    }

    /// The dataset `name`; a group of that name is a clear error.
    fn dataset(&self, name: &str) -> Result<hdf5::Dataset> {
        self.file.dataset(name).map_err(|source| {
            if self.file.group(name).is_ok() {
                let members = self
                    .file
                    .group(name)
                    .and_then(|g| g.member_names())
                    .unwrap_or_default();
                let example: Vec<String> = members
                    .iter()
                    .take(3)
                    .map(|m| format!("{name}/{m}"))
                    .collect();
                shape_error(
                    &self.path,
                    name,
                    &format!(
                        "is an HDF5 group, not a dataset; name one of its datasets (e.g. {})",
                        example.join(", ")
                    ),
                )
            } else {
                Error::Read {
                    path: self.path.clone(),
                    dataset: name.to_string(),
                    rows: 0..0,
                    source,
                }
            }
        })
    }
}

impl Part for H5Part {
    fn path(&self) -> &Path {
        &self.path
    }

    fn units(&self, column: &str) -> Option<String> {
        let attr = self.dataset(column).ok()?.attr("units").ok()?;
        attr.read_scalar::<VarLenUnicode>()
            .map(|u| u.as_str().to_string())
            .or_else(|_| {
                attr.read_scalar::<hdf5::types::VarLenAscii>()
                    .map(|u| u.as_str().to_string())
            })
            .ok()
    }

    fn columns(&self) -> Vec<String> {
        let mut out = Vec::new();
        list_datasets(&self.file, "", 0, &mut out);
        out
    }

    fn has(&self, column: &str) -> bool {
        self.file.link_exists(column)
    }

    fn describe(&self, column: &str) -> Result<Option<Described>> {
        if !self.has(column) {
            return Ok(None);
        }
        let ds = self.dataset(column)?;
        let shape = ds.shape();
        if shape.is_empty() {
            return Err(shape_error(
                &self.path,
                column,
                "is a scalar, expected one row per object",
            ));
        }
        Ok(Some(Described {
            kind: kind_of(&self.path, column, &ds)?,
            shape: Shape::Fixed(shape[1..].to_vec()),
        }))
    }

    fn sample_shape(&self, column: &str) -> Result<Option<Vec<usize>>> {
        Ok(self
            .dataset(column)?
            .shape()
            .get(1..)
            .map(<[usize]>::to_vec))
    }

    fn rows(&self, column: &str) -> Result<usize> {
        self.dataset(column)?
            .shape()
            .first()
            .copied()
            .ok_or_else(|| {
                shape_error(
                    &self.path,
                    column,
                    "is a scalar, expected one row per object",
                )
            })
    }

    fn read(&self, column: &str, rows: Range<usize>, out: &mut Column) -> Result<()> {
        out.present.extend(std::iter::repeat_n(true, rows.len()));
        read_into(self, column, rows, out.row_shape.len(), &mut out.values)
    }

    fn read_f32(
        &self,
        column: &str,
        rows: Range<usize>,
        _row_shape: &[usize],
        dst: &mut [f32],
    ) -> Result<()> {
        let err = |source| Error::Read {
            path: self.path.clone(),
            dataset: column.to_string(),
            rows: rows.clone(),
            source,
        };
        let ds = self.dataset(column)?;
        raw::read_rows_f32(&ds, rows.clone(), dst).map_err(err)
    }
}

/// Dataset paths under `g` (at most 4 groups deep), for messages.
fn list_datasets(g: &hdf5::Group, prefix: &str, depth: usize, out: &mut Vec<String>) {
    for name in g.member_names().unwrap_or_default() {
        let full = format!("{prefix}{name}");
        if g.dataset(&name).is_ok() {
            out.push(full);
        } else if depth < 4
            && let Ok(sub) = g.group(&name)
        {
            list_datasets(&sub, &format!("{full}/"), depth + 1, out);
        }
    }
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
    f: &H5Part,
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
    let ds = f.dataset(dataset)?;
    let sel = || selection(rows.clone(), ndim_rest);
    match out {
        ColumnValues::F32(v) => append(v, ds.read_slice::<f32, _, IxDyn>(sel()).map_err(err)?),
        ColumnValues::F64(v) => append(v, ds.read_slice::<f64, _, IxDyn>(sel()).map_err(err)?),
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
