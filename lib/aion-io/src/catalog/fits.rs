//! FITS parts, read with cfitsio (through the `fitsio` crate and its `fitsio-sys` bindings;
//! docs/decisions/0005-catalogue-formats.md says why cfitsio).
//!
//! Columns of a FITS file:
//! - every column of every binary or ASCII table HDU (the first HDU holding a name wins), with
//!   its `TDIMn` shape (FITS lists axes fastest first; rows are given here slowest first, so
//!   `TDIM = (96,96,4)` is a row of shape `[4, 96, 96]`); strings as strings (`TDIM = (5,4)` on a
//!   `20A` column: four strings of five characters);
//! - every image HDU of two or more axes whose *last* FITS axis (`NAXISn`) is the object, named
//!   by its `EXTNAME` (`PRIMARY` for the primary HDU): DESI's `B_FLUX` `(nspec, nwave)` is a
//!   column of `nwave` values per row;
//! - one-axis image HDUs are not columns but arrays of the whole file (DESI's `B_WAVELENGTH`),
//!   which survey presets read (`Part::file_array`).
//!
//! cfitsio converts on read: `TSCALn`/`TZEROn` are applied, any numeric type becomes `f32` or
//! `i64`, undefined values (`TNULLn`, `BLANK`) of float reads become NaN, and `.fits.gz` files are
//! read through their compression.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use fitsio::FitsFile;
use fitsio::threadsafe_fitsfile::ThreadsafeFitsFile;

use super::{Column, ColumnKind, ColumnValues, Described, Format, Part, Shape, shape_error};
use crate::error::{Error, Result};

/// Where a column's values are.
#[derive(Debug, Clone, Copy)]
enum Source {
    /// Column `col` (1-based) of a table; strings of `width` characters; `ieee`: stored as
    /// IEEE floats (read as they are, NaN and inf kept), else integers whose undefined value
    /// (`TNULLn`) reads as NaN.
    Table { col: i32, width: usize, ieee: bool },
    /// The pixels of an image HDU (`ieee` as for tables, with `BLANK`).
    Image { ieee: bool },
}

#[derive(Debug, Clone)]
struct FitsColumn {
    /// HDU number (1-based).
    hdu: i32,
    source: Source,
    kind: std::result::Result<ColumnKind, String>,
    row_shape: Vec<usize>,
    rows: usize,
    /// `TUNITn` (empty: none).
    units: String,
}

/// One FITS file.
pub(super) struct FitsPart {
    path: PathBuf,
    file: Mutex<ThreadsafeFitsFile>,
    names: Vec<String>,
    columns: BTreeMap<String, FitsColumn>,
}

impl FitsPart {
    /// Opens `path` and lists the columns of all its HDUs.
    pub(super) fn open(path: &Path) -> Result<Self> {
        let fail = |message: String| Error::OpenAs {
            path: path.to_path_buf(),
            format: Format::Fits,
            message,
        };
        let file = FitsFile::open(path).map_err(|e| fail(e.to_string()))?;
        let file = file.threadsafe();
        let mut names = Vec::new();
        let mut columns = BTreeMap::new();
        {
            let mut f = file.lock().map_err(|e| fail(e.to_string()))?;
            let n = raw::num_hdus(&mut f).map_err(&fail)?;
            for hdu in 1..=n {
                let found =
                    raw::hdu_columns(&mut f, hdu).map_err(|m| fail(format!("HDU {hdu}: {m}")))?;
                for (name, col) in found {
                    if let std::collections::btree_map::Entry::Vacant(e) = columns.entry(name) {
                        names.push(e.key().clone());
                        e.insert(col);
                    }
                }
            }
        }
        Ok(Self {
            path: path.to_path_buf(),
            file: Mutex::new(file),
            names,
            columns,
        })
    }

    fn column(&self, column: &str) -> &FitsColumn {
        &self.columns[column]
    }
}

impl Part for FitsPart {
    fn path(&self) -> &Path {
        &self.path
    }

    fn columns(&self) -> Vec<String> {
        self.names.clone()
    }

    fn has(&self, column: &str) -> bool {
        self.columns.contains_key(column)
    }

    fn describe(&self, column: &str) -> Result<Option<Described>> {
        let Some(c) = self.columns.get(column) else {
            return Ok(None);
        };
        let kind = c
            .kind
            .clone()
            .map_err(|m| shape_error(&self.path, column, &m))?;
        Ok(Some(Described {
            kind,
            shape: Shape::Fixed(c.row_shape.clone()),
        }))
    }

    fn sample_shape(&self, column: &str) -> Result<Option<Vec<usize>>> {
        Ok(self.columns.get(column).map(|c| c.row_shape.clone()))
    }

    fn units(&self, column: &str) -> Option<String> {
        self.columns.get(column).map(|c| c.units.clone())
    }

    fn rows(&self, column: &str) -> Result<usize> {
        Ok(self.column(column).rows)
    }

    fn file_array(&self, name: &str) -> Result<Option<Vec<f64>>> {
        let fail = |message: String| Error::ReadRows {
            path: self.path.clone(),
            dataset: name.to_string(),
            where_: "the whole array".into(),
            message,
        };
        let guard = self.file.lock().unwrap_or_else(|e| e.into_inner());
        let mut f = guard.lock().map_err(|e| fail(e.to_string()))?;
        let Ok(hdu) = f.hdu(name) else {
            return Ok(None);
        };
        match &hdu.info {
            fitsio::hdu::HduInfo::ImageInfo { shape, .. } if shape.len() == 1 => hdu
                .read_image::<Vec<f64>>(&mut f)
                .map(Some)
                .map_err(|e| fail(e.to_string())),
            _ => Ok(None),
        }
    }

    fn read(&self, column: &str, rows: Range<usize>, out: &mut Column) -> Result<()> {
        let c = self.column(column);
        let fail = |message: String| Error::read_rows(&self.path, column, &rows, message);
        out.check_row_shape(&c.row_shape).map_err(fail)?;
        let n = rows.len() * out.row_len();
        if n > 0 {
            let guard = self.file.lock().unwrap_or_else(|e| e.into_inner());
            let mut f = guard.lock().map_err(|e| fail(e.to_string()))?;
            raw::read(&mut f, c, rows.start, n, &mut out.values).map_err(fail)?;
        }
        out.present.extend(std::iter::repeat_n(true, rows.len()));
        Ok(())
    }
}

/// The cfitsio calls fitsio does not wrap in a form that reads vector columns, string arrays and
/// image rows without panicking on unusual headers.
#[allow(unsafe_code)]
pub(crate) mod raw {
    use std::ffi::{CStr, CString, c_char, c_int, c_void};

    use fitsio::FitsFile;
    use fitsio::sys;

    use super::{ColumnKind, ColumnValues, FitsColumn, Source};

    // cfitsio type codes (fitsio.h).
    const TBIT: c_int = 1;
    const TBYTE: c_int = 11;
    const TSBYTE: c_int = 12;
    const TLOGICAL: c_int = 14;
    const TSTRING: c_int = 16;
    const TUSHORT: c_int = 20;
    const TSHORT: c_int = 21;
    const TUINT: c_int = 30;
    const TINT: c_int = 31;
    const TULONG: c_int = 40;
    const TLONG: c_int = 41;
    const TFLOAT: c_int = 42;
    const TULONGLONG: c_int = 80;
    const TLONGLONG: c_int = 81;
    const TDOUBLE: c_int = 82;
    const KEY_NO_EXIST: c_int = 202;
    const MAX_DIMS: usize = 9;

    /// cfitsio's text for `status`.
    fn message(status: c_int) -> String {
        let mut buf = [0 as c_char; 31];
        // SAFETY: ffgerr writes at most 30 characters and a NUL into the 31-byte buffer.
        unsafe { sys::ffgerr(status, buf.as_mut_ptr()) };
        // SAFETY: the buffer is NUL-terminated (zero-initialised, ffgerr writes a C string).
        let text = unsafe { CStr::from_ptr(buf.as_ptr()) };
        format!("{} (cfitsio status {status})", text.to_string_lossy())
    }

    pub(crate) fn check(status: c_int) -> Result<(), String> {
        if status == 0 {
            Ok(())
        } else {
            Err(message(status))
        }
    }

    /// Number of HDUs.
    pub(super) fn num_hdus(f: &mut FitsFile) -> Result<i32, String> {
        let (mut n, mut status) = (0, 0);
        // SAFETY: `f` is an open file (its pointer is valid while borrowed); outputs are locals.
        unsafe { sys::ffthdu(f.as_raw(), &mut n, &mut status) };
        check(status).map(|()| n)
    }

    /// The columns HDU `hdu` (1-based) provides, in order.
    pub(super) fn hdu_columns(
        f: &mut FitsFile,
        hdu: i32,
    ) -> Result<Vec<(String, FitsColumn)>, String> {
        let (mut hdu_type, mut status) = (0, 0);
        // SAFETY: valid open file; outputs are locals.
        unsafe { sys::ffmahd(f.as_raw(), hdu, &mut hdu_type, &mut status) };
        check(status)?;
        if hdu_type == 0 {
            return image_column(f, hdu).map(|c| c.into_iter().collect());
        }
        let (mut nrows, mut ncols) = (0i64, 0);
        // SAFETY: valid open file positioned on a table HDU; outputs are locals.
        unsafe {
            sys::ffgnrwll(f.as_raw(), &mut nrows, &mut status);
            sys::ffgncl(f.as_raw(), &mut ncols, &mut status);
        }
        check(status)?;
        let mut out = Vec::new();
        for col in 1..=ncols {
            let mut name = [0 as c_char; 72];
            let mut unit = [0 as c_char; 72];
            let (mut typecode, mut repeat, mut width) = (0, 0i64, 0i64);
            let (mut stored, mut stored_repeat, mut stored_width) = (0, 0i64, 0i64);
            let mut naxis = 0;
            let mut naxes = [0i64; MAX_DIMS];
            // SAFETY: valid table HDU; `name` has room for a 70-character TTYPE and NUL
            // (FLEN_VALUE = 71); `naxes` holds MAX_DIMS entries as passed.
            unsafe {
                sys::ffgbclll(
                    f.as_raw(),
                    col,
                    name.as_mut_ptr(),
                    unit.as_mut_ptr(),
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                    &mut status,
                );
                if hdu_type == 1 {
                    // ASCII table: ffgbclll is for binary tables; take the name from ffgacl.
                    status = 0;
                    sys::ffgacl(
                        f.as_raw(),
                        col,
                        name.as_mut_ptr(),
                        std::ptr::null_mut(),
                        unit.as_mut_ptr(),
                        std::ptr::null_mut(),
                        std::ptr::null_mut(),
                        std::ptr::null_mut(),
                        std::ptr::null_mut(),
                        std::ptr::null_mut(),
                        &mut status,
                    );
                }
                sys::ffeqtyll(
                    f.as_raw(),
                    col,
                    &mut typecode,
                    &mut repeat,
                    &mut width,
                    &mut status,
                );
                sys::ffgtclll(
                    f.as_raw(),
                    col,
                    &mut stored,
                    &mut stored_repeat,
                    &mut stored_width,
                    &mut status,
                );
                if hdu_type == 2 {
                    sys::ffgtdmll(
                        f.as_raw(),
                        col,
                        MAX_DIMS as c_int,
                        &mut naxis,
                        naxes.as_mut_ptr(),
                        &mut status,
                    );
                }
            }
            check(status).map_err(|m| format!("column {col}: {m}"))?;
            // SAFETY: zero-initialised buffer written as a C string by cfitsio.
            let name = unsafe { CStr::from_ptr(name.as_ptr()) }
                .to_string_lossy()
                .trim()
                .to_string();
            // SAFETY: as `name`.
            let units = unsafe { CStr::from_ptr(unit.as_ptr()) }
                .to_string_lossy()
                .trim()
                .to_string();
            // FITS lists axes fastest first; a row's shape is slowest first.
            let mut dims: Vec<usize> = naxes[..(naxis.max(0) as usize).min(MAX_DIMS)]
                .iter()
                .rev()
                .map(|&d| d.max(0) as usize)
                .collect();
            let kind = match typecode {
                t if t < 0 => Err("is a variable-length array column, which cannot be read".into()),
                TFLOAT | TDOUBLE => Ok(ColumnKind::Float),
                TBYTE | TSBYTE | TUSHORT | TSHORT | TUINT | TINT | TULONG | TLONG | TULONGLONG
                | TLONGLONG => Ok(ColumnKind::Int),
                TLOGICAL => Ok(ColumnKind::Bool),
                TSTRING => Ok(ColumnKind::Str),
                TBIT => Err("is a bit (X) column, which cannot be read".into()),
                t => Err(format!(
                    "has cfitsio type code {t} (complex?), which cannot be read"
                )),
            };
            let width = usize::try_from(width.max(1)).unwrap_or(1);
            if typecode == TSTRING {
                // One string per row unless the column holds several (TDIM = (w, k…) or rAw).
                let strings = usize::try_from(repeat).unwrap_or(0) / width;
                dims = if dims.len() >= 2 {
                    dims[..dims.len() - 1].to_vec()
                } else if strings > 1 {
                    vec![strings]
                } else {
                    Vec::new()
                };
            } else if hdu_type == 1 || dims == [1] || dims.is_empty() {
                dims = if repeat > 1 {
                    vec![repeat as usize]
                } else {
                    Vec::new()
                };
            }
            out.push((
                name,
                FitsColumn {
                    hdu,
                    source: Source::Table {
                        col,
                        width,
                        ieee: matches!(stored, TFLOAT | TDOUBLE),
                    },
                    kind,
                    row_shape: dims,
                    rows: usize::try_from(nrows).unwrap_or(0),
                    units,
                },
            ));
        }
        Ok(out)
    }

    /// An image HDU of two or more axes as a column named by `EXTNAME`.
    fn image_column(f: &mut FitsFile, hdu: i32) -> Result<Option<(String, FitsColumn)>, String> {
        let (mut naxis, mut bitpix, mut raw_bitpix, mut status) = (0, 0, 0, 0);
        let mut naxes = [0i64; MAX_DIMS];
        // SAFETY: valid file positioned on an image HDU; `naxes` has MAX_DIMS entries.
        unsafe {
            sys::ffgidm(f.as_raw(), &mut naxis, &mut status);
            sys::ffgiszll(
                f.as_raw(),
                MAX_DIMS as c_int,
                naxes.as_mut_ptr(),
                &mut status,
            );
            sys::ffgiet(f.as_raw(), &mut bitpix, &mut status);
            sys::ffgidt(f.as_raw(), &mut raw_bitpix, &mut status);
        }
        check(status)?;
        if naxis < 2 {
            return Ok(None);
        }
        let name = match key_string(f, "EXTNAME")? {
            Some(n) => n,
            None if hdu == 1 => "PRIMARY".to_string(),
            None => return Ok(None),
        };
        let shape: Vec<usize> = naxes[..(naxis as usize).min(MAX_DIMS)]
            .iter()
            .rev()
            .map(|&d| d.max(0) as usize)
            .collect();
        Ok(Some((
            name,
            FitsColumn {
                hdu,
                source: Source::Image {
                    ieee: raw_bitpix < 0,
                },
                kind: Ok(if bitpix < 0 {
                    ColumnKind::Float
                } else {
                    ColumnKind::Int
                }),
                row_shape: shape[1..].to_vec(),
                rows: shape[0],
                units: key_string(f, "BUNIT")?.unwrap_or_default(),
            },
        )))
    }

    /// A string keyword of the current HDU, if present.
    fn key_string(f: &mut FitsFile, key: &str) -> Result<Option<String>, String> {
        let key = CString::new(key).expect("keyword without NUL");
        let mut value = [0 as c_char; 72];
        let mut status = 0;
        // SAFETY: valid file; `value` has room for FLEN_VALUE (71) characters and NUL.
        unsafe {
            sys::ffgkys(
                f.as_raw(),
                key.as_ptr(),
                value.as_mut_ptr(),
                std::ptr::null_mut(),
                &mut status,
            )
        };
        if status == KEY_NO_EXIST {
            return Ok(None);
        }
        check(status)?;
        // SAFETY: NUL-terminated by cfitsio (zero-initialised buffer).
        let v = unsafe { CStr::from_ptr(value.as_ptr()) };
        Ok(Some(v.to_string_lossy().trim().to_string()))
    }

    /// The value undefined integers of column `c` read as when read as floats: `nan`; `None`
    /// for IEEE float columns, read as stored (no null check: cfitsio would turn inf into the
    /// null value too).
    fn float_null<T>(c: &FitsColumn, nan: T) -> Option<T> {
        match c.source {
            Source::Table { ieee, .. } | Source::Image { ieee } => (!ieee).then_some(nan),
        }
    }

    /// Appends `n` values of column `c` from row `first` to `v`, read as cfitsio type `code`
    /// (`TFLOAT` for `f32`, `TDOUBLE` for `f64`, `TLONGLONG` for `i64`); undefined values read
    /// as `null` where one is given ([`float_null`]).
    #[allow(clippy::too_many_arguments)]
    fn read_numbers<T: Copy + Default>(
        f: &mut FitsFile,
        c: &FitsColumn,
        first: usize,
        n: usize,
        row_len: usize,
        code: c_int,
        null: Option<T>,
        v: &mut Vec<T>,
        status: &mut c_int,
    ) {
        let at = v.len();
        v.resize(at + n, T::default());
        let mut anynul = 0;
        let mut null_value = null.unwrap_or_default();
        let nul: *mut c_void = match null {
            Some(_) => (&raw mut null_value).cast(),
            None => std::ptr::null_mut(),
        };
        let dst = v[at..].as_mut_ptr().cast::<c_void>();
        // SAFETY: `dst` has room for exactly `n` values of type `T`, which `code` names; `nul`
        // is null or points to `null_value`, which outlives the call; the HDU is current.
        unsafe {
            match c.source {
                Source::Table { col, .. } => sys::ffgcv(
                    f.as_raw(),
                    code,
                    col,
                    first as i64 + 1,
                    1,
                    n as i64,
                    nul,
                    dst,
                    &mut anynul,
                    status,
                ),
                Source::Image { .. } => sys::ffgpv(
                    f.as_raw(),
                    code,
                    (first * row_len) as i64 + 1,
                    n as i64,
                    nul,
                    dst,
                    &mut anynul,
                    status,
                ),
            }
        };
    }

    /// Appends `n` values of column `c` starting at row `first` (0-based) to `out`.
    pub(super) fn read(
        f: &mut FitsFile,
        c: &FitsColumn,
        first: usize,
        n: usize,
        out: &mut ColumnValues,
    ) -> Result<(), String> {
        let mut status = 0;
        let mut kind = 0;
        // SAFETY: valid open file; outputs are locals.
        unsafe { sys::ffmahd(f.as_raw(), c.hdu, &mut kind, &mut status) };
        check(status)?;
        let row_len: usize = c.row_shape.iter().product();
        let mut anynul = 0;
        match (c.source, out) {
            (_, ColumnValues::F32(v)) => {
                let null = float_null(c, f32::NAN);
                read_numbers(f, c, first, n, row_len, TFLOAT, null, v, &mut status);
            }
            (_, ColumnValues::F64(v)) => {
                let null = float_null(c, f64::NAN);
                read_numbers(f, c, first, n, row_len, TDOUBLE, null, v, &mut status);
            }
            (_, ColumnValues::I64(v)) => {
                read_numbers(f, c, first, n, row_len, TLONGLONG, None, v, &mut status);
            }
            (Source::Table { col, .. }, ColumnValues::Bool(v)) => {
                let mut buf = vec![0 as c_char; n];
                // SAFETY: `buf` has room for `n` logical values; the HDU is current.
                unsafe {
                    sys::ffgcvl(
                        f.as_raw(),
                        col,
                        first as i64 + 1,
                        1,
                        n as i64,
                        0,
                        buf.as_mut_ptr(),
                        &mut anynul,
                        &mut status,
                    )
                };
                v.extend(buf.iter().map(|&b| b != 0));
            }
            (Source::Table { col, width, .. }, ColumnValues::Str(v)) => {
                let mut bufs: Vec<Vec<c_char>> =
                    (0..n).map(|_| vec![0 as c_char; width + 1]).collect();
                let mut ptrs: Vec<*mut c_char> = bufs.iter_mut().map(|b| b.as_mut_ptr()).collect();
                let mut nul = [0 as c_char; 1];
                // SAFETY: `n` buffers of `width + 1` characters (cfitsio writes at most the
                // column's string width and a NUL into each); the HDU is current.
                unsafe {
                    sys::ffgcvs(
                        f.as_raw(),
                        col,
                        first as i64 + 1,
                        1,
                        n as i64,
                        nul.as_mut_ptr(),
                        ptrs.as_mut_ptr(),
                        &mut anynul,
                        &mut status,
                    )
                };
                for b in &bufs {
                    // SAFETY: each buffer is zero-initialised and NUL-terminated within bounds.
                    let s = unsafe { CStr::from_ptr(b.as_ptr()) };
                    v.push(s.to_string_lossy().trim_end().to_string());
                }
            }
            (Source::Image { .. }, _) => return Err("image HDUs hold numbers only".into()),
        }
        check(status)
    }
}
