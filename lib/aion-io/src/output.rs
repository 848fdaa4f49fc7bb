//! The output file: created by all ranks together, written collectively.
//!
//! Every rank takes part in creating each group, dataset and attribute (HDF5 metadata
//! operations are collective under MPI-IO) with identical arguments, then writes its own rows
//! with an `H5FD_MPIO_COLLECTIVE` transfer. hdf5-metno's high-level `write_slice` always uses
//! independent I/O, so the write itself goes through `hdf5-sys` (the only `unsafe` of the crate).
//! A rank with nothing to write still joins each collective write with an empty selection.
//!
//! Datasets are chunked (about 1 MiB per chunk, whole rows) and allocated at creation, so that
//! later raw-data writes never touch file metadata: a process killed mid-write leaves a file
//! whose structure is intact (see the resume logic of the tools).

use std::path::{Path, PathBuf};

use hdf5::H5Type;
use hdf5::types::VarLenUnicode;
use mpi::raw::AsRaw;
use mpi::topology::SimpleCommunicator;

use crate::error::{Error, Result};

/// Target size of one chunk.
const CHUNK_BYTES: usize = 1 << 20;

/// An output file open on every rank through the MPI-IO driver.
pub struct OutputFile {
    file: hdf5::File,
    path: PathBuf,
    /// Opened by one process with the default driver ([`OutputFile::create_serial`]).
    serial: bool,
}

impl std::fmt::Debug for OutputFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutputFile")
            .field("path", &self.path)
            .finish()
    }
}

impl OutputFile {
    /// Creates (truncating) `path` on all ranks of `world` (collective).
    pub fn create(path: &Path, world: &SimpleCommunicator) -> Result<Self> {
        let file = hdf5::File::with_options()
            .with_fapl(|p| p.mpio(world.as_raw(), None))
            .create(path)
            .map_err(|source| Error::Open {
                path: path.to_path_buf(),
                source,
            })?;
        Ok(Self {
            file,
            path: path.to_path_buf(),
            serial: false,
        })
    }

    /// Creates (truncating) `path` for this process alone (default driver, no MPI-IO): for small
    /// outputs written by one rank (`aion-search`'s result). The "collective" methods then
    /// involve this process only (`write_rows` becomes a plain write); the other ranks must not
    /// call them.
    pub fn create_serial(path: &Path) -> Result<Self> {
        let file = hdf5::File::create(path).map_err(|source| Error::Open {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(Self {
            file,
            path: path.to_path_buf(),
            serial: true,
        })
    }

    /// Opens an existing output for appending (collective), e.g. to resume a run.
    pub fn open_rw(path: &Path, world: &SimpleCommunicator) -> Result<Self> {
        let file = hdf5::File::with_options()
            .with_fapl(|p| p.mpio(world.as_raw(), None))
            .open_rw(path)
            .map_err(|source| Error::Open {
                path: path.to_path_buf(),
                source,
            })?;
        Ok(Self {
            file,
            path: path.to_path_buf(),
            serial: false,
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The underlying HDF5 file (reads only; writes go through the collective methods).
    pub fn hdf5(&self) -> &hdf5::File {
        &self.file
    }

    fn write_err(&self, object: &str) -> impl FnOnce(hdf5::Error) -> Error + '_ {
        let object = object.to_string();
        move |source| Error::Write {
            path: self.path.clone(),
            object,
            source,
        }
    }

    /// Creates the groups leading to `name` (`a/b/c` creates `a` and `a/b`) if missing.
    fn ensure_parents(&self, name: &str) -> Result<()> {
        let mut prefix = String::new();
        let parts: Vec<&str> = name.split('/').filter(|s| !s.is_empty()).collect();
        for part in parts.iter().take(parts.len().saturating_sub(1)) {
            if !prefix.is_empty() {
                prefix.push('/');
            }
            prefix.push_str(part);
            if self.file.group(&prefix).is_err() {
                self.file
                    .create_group(&prefix)
                    .map_err(self.write_err(&prefix))?;
            }
        }
        Ok(())
    }

    /// Creates dataset `name` of `n_rows` rows of shape `row_shape` (collective). `fill` is the
    /// value unwritten elements read as (written once at allocation); without it, unwritten
    /// elements are undefined and nothing is pre-written.
    pub fn create_dataset<T>(
        &self,
        name: &str,
        n_rows: usize,
        row_shape: &[usize],
        fill: Option<T>,
    ) -> Result<hdf5::Dataset>
    where
        T: H5Type + Into<hdf5::types::dyn_value::OwnedDynValue>,
    {
        self.ensure_parents(name)?;
        let mut shape = vec![n_rows];
        shape.extend_from_slice(row_shape);
        let row_bytes = row_shape.iter().product::<usize>().max(1) * std::mem::size_of::<T>();
        let chunk_rows = (CHUNK_BYTES / row_bytes).clamp(1, n_rows.max(1));
        let mut chunk = vec![chunk_rows];
        chunk.extend(row_shape.iter().map(|&d| d.max(1)));
        let mut b = self.file.new_dataset::<T>().shape(shape);
        if n_rows > 0 && row_shape.iter().all(|&d| d > 0) {
            b = b.chunk(chunk);
        }
        b = b.alloc_time(Some(hdf5::dataset::AllocTime::Early));
        b = match fill {
            Some(v) => b.fill_value(v).fill_time(hdf5::dataset::FillTime::Alloc),
            None => b.fill_time(hdf5::dataset::FillTime::Never),
        };
        b.create(name).map_err(self.write_err(name))
    }

    /// Opens an existing dataset.
    pub fn dataset(&self, name: &str) -> Result<hdf5::Dataset> {
        self.file.dataset(name).map_err(|source| Error::Read {
            path: self.path.clone(),
            dataset: name.to_string(),
            rows: 0..0,
            source,
        })
    }

    /// Writes rows `start_row..` of `ds` from `data` (row-major, whole rows) in one collective
    /// transfer. Every rank must call this the same number of times for the same dataset; a rank
    /// with nothing to write passes an empty slice.
    pub fn write_rows<T: H5Type>(
        &self,
        ds: &hdf5::Dataset,
        start_row: usize,
        data: &[T],
    ) -> Result<()> {
        let name = ds.name();
        let shape = ds.shape();
        let row_len: usize = shape[1..].iter().product();
        let n = data.len().checked_div(row_len).unwrap_or(0);
        assert_eq!(
            n * row_len,
            data.len(),
            "{name}: partial row in collective write"
        );
        assert!(
            start_row + n <= shape[0] || n == 0,
            "{name}: rows {start_row}+{n} beyond {}",
            shape[0]
        );
        if self.serial {
            if n == 0 {
                return Ok(());
            }
            let mut count = shape.clone();
            count[0] = n;
            let view = ndarray::ArrayView::from_shape(ndarray::IxDyn(&count), data)
                .expect("whole rows, checked above");
            let mut sel: Vec<hdf5::SliceOrIndex> = vec![(start_row..start_row + n).into()];
            sel.extend((1..shape.len()).map(|_| hdf5::SliceOrIndex::from(..)));
            return ds
                .write_slice(&view, hdf5::Hyperslab::from(sel))
                .map_err(self.write_err(&name));
        }
        let dtype = hdf5::Datatype::from_type::<T>().map_err(self.write_err(&name))?;
        let mut count: Vec<u64> = shape.iter().map(|&d| d as u64).collect();
        count[0] = n as u64;
        let mut start = vec![0u64; shape.len()];
        start[0] = start_row as u64;
        raw::collective_write(ds.id(), dtype.id(), &start, &count, data.as_ptr().cast()).map_err(
            |call| Error::Collective {
                path: self.path.clone(),
                dataset: name,
                call,
            },
        )
    }

    /// Writes a string attribute on the root group (collective; same value on every rank).
    pub fn set_attr_str(&self, name: &str, value: &str) -> Result<()> {
        let v: VarLenUnicode = value
            .parse()
            .expect("a Rust string is valid UTF-8 without NUL");
        self.replace_attr(name)?;
        let attr = self
            .file
            .new_attr::<VarLenUnicode>()
            .create(name)
            .map_err(self.write_err(name))?;
        attr.write_scalar(&v).map_err(self.write_err(name))
    }

    /// Writes an integer attribute on the root group (collective; same value on every rank).
    pub fn set_attr_i64(&self, name: &str, value: i64) -> Result<()> {
        self.replace_attr(name)?;
        let attr = self
            .file
            .new_attr::<i64>()
            .create(name)
            .map_err(self.write_err(name))?;
        attr.write_scalar(&value).map_err(self.write_err(name))
    }

    /// Writes a string attribute on a dataset (collective).
    pub fn set_dataset_attr_str(&self, ds: &hdf5::Dataset, name: &str, value: &str) -> Result<()> {
        let v: VarLenUnicode = value
            .parse()
            .expect("a Rust string is valid UTF-8 without NUL");
        if ds.attr(name).is_ok() {
            ds.delete_attr(name).map_err(self.write_err(name))?;
        }
        let attr = ds
            .new_attr::<VarLenUnicode>()
            .create(name)
            .map_err(self.write_err(name))?;
        attr.write_scalar(&v).map_err(self.write_err(name))
    }

    /// Writes a 1-D array-of-strings attribute on a dataset (collective), e.g. the names of
    /// the bits of a flag mask: h5py reads it as an array (`ds.attrs["bit_names"][i]`).
    pub fn set_dataset_attr_strs(
        &self,
        ds: &hdf5::Dataset,
        name: &str,
        values: &[&str],
    ) -> Result<()> {
        let v: Vec<VarLenUnicode> = values
            .iter()
            .map(|s| s.parse().expect("a Rust string is valid UTF-8 without NUL"))
            .collect();
        if ds.attr(name).is_ok() {
            ds.delete_attr(name).map_err(self.write_err(name))?;
        }
        let attr = ds
            .new_attr::<VarLenUnicode>()
            .shape([v.len()])
            .create(name)
            .map_err(self.write_err(name))?;
        attr.write(&v).map_err(self.write_err(name))
    }

    fn replace_attr(&self, name: &str) -> Result<()> {
        if self.file.attr(name).is_ok() {
            self.file.delete_attr(name).map_err(self.write_err(name))?;
        }
        Ok(())
    }

    /// Reads a string attribute of the root group.
    pub fn attr_str(&self, name: &str) -> Option<String> {
        let a = self.file.attr(name).ok()?;
        a.read_scalar::<VarLenUnicode>()
            .ok()
            .map(|s| s.as_str().to_string())
    }

    /// Flushes everything written so far to the file (collective).
    pub fn flush(&self) -> Result<()> {
        self.file.flush().map_err(self.write_err("flush"))
    }
}

/// The raw `H5Dwrite` with a collective transfer property list.
#[allow(unsafe_code)]
mod raw {
    use hdf5_sys::h5::herr_t;
    use hdf5_sys::h5d::H5Dwrite;
    use hdf5_sys::h5i::hid_t;
    use hdf5_sys::h5p::{H5FD_mpio_xfer_t, H5Pclose, H5Pcreate, H5Pset_dxpl_mpio};
    use hdf5_sys::h5s::{
        H5S_seloper_t, H5Sclose, H5Screate_simple, H5Sselect_hyperslab, H5Sselect_none,
    };

    /// Closes an HDF5 handle when dropped.
    struct Handle(hid_t, unsafe extern "C" fn(hid_t) -> herr_t);

    impl Drop for Handle {
        fn drop(&mut self) {
            if self.0 >= 0 {
                // SAFETY: the handle was returned valid by the HDF5 call that created it.
                unsafe { (self.1)(self.0) };
            }
        }
    }

    fn check(status: herr_t, call: &'static str) -> Result<(), &'static str> {
        if status < 0 { Err(call) } else { Ok(()) }
    }

    /// Writes the hyperslab `start`/`count` of dataset `ds` from `buf` collectively.
    /// `count[0] == 0` joins the collective call with an empty selection.
    pub(super) fn collective_write(
        ds: hid_t,
        mem_type: hid_t,
        start: &[u64],
        count: &[u64],
        buf: *const std::ffi::c_void,
    ) -> Result<(), &'static str> {
        hdf5::sync::sync(|| {
            // SAFETY: all handles come from HDF5 calls checked below; `buf` holds
            // prod(count) elements of `mem_type` (checked by the caller); the library lock is held.
            unsafe {
                let dxpl = Handle(H5Pcreate(*hdf5::globals::H5P_DATASET_XFER), H5Pclose);
                if dxpl.0 < 0 {
                    return Err("H5Pcreate");
                }
                check(
                    H5Pset_dxpl_mpio(dxpl.0, H5FD_mpio_xfer_t::H5FD_MPIO_COLLECTIVE),
                    "H5Pset_dxpl_mpio",
                )?;
                let file_space = Handle(hdf5_sys::h5d::H5Dget_space(ds), H5Sclose);
                if file_space.0 < 0 {
                    return Err("H5Dget_space");
                }
                let empty = count.first().copied().unwrap_or(0) == 0;
                let mem_space = Handle(
                    H5Screate_simple(count.len() as i32, count.as_ptr(), std::ptr::null()),
                    H5Sclose,
                );
                if mem_space.0 < 0 {
                    return Err("H5Screate_simple");
                }
                if empty {
                    check(H5Sselect_none(file_space.0), "H5Sselect_none")?;
                    check(H5Sselect_none(mem_space.0), "H5Sselect_none")?;
                } else {
                    check(
                        H5Sselect_hyperslab(
                            file_space.0,
                            H5S_seloper_t::H5S_SELECT_SET,
                            start.as_ptr(),
                            std::ptr::null(),
                            count.as_ptr(),
                            std::ptr::null(),
                        ),
                        "H5Sselect_hyperslab",
                    )?;
                }
                check(
                    H5Dwrite(ds, mem_type, mem_space.0, file_space.0, dxpl.0, buf),
                    "H5Dwrite",
                )
            }
        })
    }
}
