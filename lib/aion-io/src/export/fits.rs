//! FITS binary tables through cfitsio (the library the catalogue reader uses, through the
//! `fitsio` crate's file handle and its `fitsio-sys` bindings): the primary HDU carries
//! [`MARKER_KEY`] (who wrote the file) and the provenance, extension 1 is the table. Rows are
//! appended block by block; cfitsio streams them to disk, so memory stays bounded whatever the
//! row count. Compressed output (`.fits.gz`) is not offered: cfitsio builds a gzip file in memory.
//!
//! The fields' metadata (a posterior's bin edges, a spectrum's wavelength grid, the names of a
//! flag mask's bits) follow the table when it is finished ([`FitsTable::finish`]): each numeric
//! array as a float64 image HDU `EXTNAME = '<column>.<key>'` (e.g. `pred_tok_z_pdf.bin_edges`), the
//! rest as the rows (`FIELD`, `KEY`, `VALUE`) of a binary table [`METADATA_EXTNAME`].

#![allow(unsafe_code)]

use std::ffi::{CString, c_char, c_int, c_void};
use std::path::Path;

use fitsio::FitsFile;
use fitsio::sys;

use super::{Block, Dtype, Field, Values, check_blocks};
use crate::catalog::fits::raw::check;

/// Primary-header keyword whose value (`aion-hpc <tool> <version>`) marks a FITS file written
/// by an aion-hpc tool.
pub const MARKER_KEY: &str = "CREATOR";

/// Prefix of [`MARKER_KEY`]'s value in our files.
pub const MARKER_PREFIX: &str = "aion-hpc";

/// `EXTNAME` of the table of the fields' metadata that are not numeric arrays.
pub const METADATA_EXTNAME: &str = "METADATA";

/// The null value of integer columns (`TNULLn`).
pub const INT_NULL: i64 = i64::MIN;

// cfitsio type codes (fitsio.h).
const TBYTE: c_int = 11;
const TLOGICAL: c_int = 14;
const TULONGLONG: c_int = 80;
const TLONGLONG: c_int = 81;
const TFLOAT: c_int = 42;
const TDOUBLE: c_int = 82;
const BINARY_TBL: c_int = 2;
const DOUBLE_IMG: c_int = -64;

/// A FITS file with one binary table being written.
pub struct FitsTable {
    file: FitsFile,
    fields: Vec<Field>,
    rows: usize,
}

fn cstring(s: &str) -> Result<CString, String> {
    CString::new(s).map_err(|_| format!("'{s}' holds a NUL character"))
}

/// `TFORMn` of a field.
fn tform(f: &Field) -> Result<String, String> {
    let n = f.row_len();
    Ok(match f.dtype {
        Dtype::F32 => format!("{n}E"),
        Dtype::F64 => format!("{n}D"),
        Dtype::I64 => format!("{n}K"),
        // cfitsio stores it as `K` with TZERO = 2^63 (the FITS convention for unsigned 64-bit).
        Dtype::U64 => format!("{n}W"),
        Dtype::U8 => format!("{n}B"),
        Dtype::Bool => format!("{n}L"),
        Dtype::Str if f.row_shape.is_empty() => format!("{}A", f.width.max(1)),
        Dtype::Str => {
            return Err(format!(
                "column '{}': arrays of strings are not written to FITS",
                f.name
            ));
        }
    })
}

impl FitsTable {
    /// Creates `path` (which must not exist): a primary HDU with `keys` (keyword, value,
    /// comment; values longer than a card use the `CONTINUE` convention) and [`MARKER_KEY`] =
    /// `marker`, then an empty binary table `extname` of `fields`.
    pub fn create(
        path: &Path,
        extname: &str,
        fields: Vec<Field>,
        marker: &str,
        keys: &[(&str, String, &str)],
    ) -> Result<Self, String> {
        let mut file = FitsFile::create(path).open().map_err(|e| e.to_string())?;
        let mut status = 0;
        let key_marker = cstring(MARKER_KEY)?;
        let value = cstring(marker)?;
        let comment = cstring("software that wrote this file")?;
        // SAFETY: the file is open (primary HDU current); the strings are NUL-terminated and
        // outlive the call.
        unsafe {
            sys::ffpkys(
                file.as_raw(),
                key_marker.as_ptr(),
                value.as_ptr(),
                comment.as_ptr(),
                &mut status,
            )
        };
        check(status)?;
        for (key, value, comment) in keys {
            let (k, v, c) = (cstring(key)?, cstring(value)?, cstring(comment)?);
            // SAFETY: as above; ffpkls writes long strings over CONTINUE cards.
            unsafe {
                sys::ffpkls(
                    file.as_raw(),
                    k.as_ptr(),
                    v.as_ptr(),
                    c.as_ptr(),
                    &mut status,
                )
            };
            check(status).map_err(|m| format!("header keyword {key}: {m}"))?;
        }
        append_table(&mut file, extname, &fields)?;
        Ok(Self {
            file,
            fields,
            rows: 0,
        })
    }
}

/// Appends an empty binary table `extname` of `fields` to `file` (it becomes the current HDU):
/// `TUNITn`, the description as the comment of `TTYPEn`, `TDIMn`, `TNULLn`.
fn append_table(file: &mut FitsFile, extname: &str, fields: &[Field]) -> Result<(), String> {
    let mut status = 0;
    let names = fields
        .iter()
        .map(|f| cstring(&f.name))
        .collect::<Result<Vec<_>, _>>()?;
    let forms = fields
        .iter()
        .map(|f| tform(f).and_then(|t| cstring(&t)))
        .collect::<Result<Vec<_>, _>>()?;
    let units = fields
        .iter()
        .map(|f| cstring(f.units.as_deref().unwrap_or("")))
        .collect::<Result<Vec<_>, _>>()?;
    let ptrs =
        |v: &[CString]| -> Vec<*mut c_char> { v.iter().map(|s| s.as_ptr().cast_mut()).collect() };
    let (mut ttype, mut tforms, mut tunit) = (ptrs(&names), ptrs(&forms), ptrs(&units));
    let ext = cstring(extname)?;
    // SAFETY: the three arrays hold `fields.len()` pointers to NUL-terminated strings that
    // outlive the call (cfitsio only reads them).
    unsafe {
        sys::ffcrtb(
            file.as_raw(),
            BINARY_TBL,
            0,
            fields.len() as c_int,
            ttype.as_mut_ptr(),
            tforms.as_mut_ptr(),
            tunit.as_mut_ptr(),
            ext.as_ptr(),
            &mut status,
        )
    };
    check(status).map_err(|m| format!("creating the table: {m}"))?;
    for (i, f) in fields.iter().enumerate() {
        let col = i as c_int + 1;
        if f.row_shape.len() > 1 {
            // FITS lists axes fastest first.
            let mut naxes: Vec<i64> = f.row_shape.iter().rev().map(|&d| d as i64).collect();
            // SAFETY: `naxes` holds `naxis` values; the table HDU is current.
            unsafe {
                sys::ffptdmll(
                    file.as_raw(),
                    col,
                    naxes.len() as c_int,
                    naxes.as_mut_ptr(),
                    &mut status,
                )
            };
            check(status).map_err(|m| format!("column '{}': TDIM: {m}", f.name))?;
        }
        if let Some(d) = &f.description {
            let (k, c) = (cstring(&format!("TTYPE{col}"))?, cstring(d)?);
            // SAFETY: NUL-terminated strings that outlive the call; cfitsio truncates a
            // comment to what fits on the card.
            unsafe { sys::ffmcom(file.as_raw(), k.as_ptr(), c.as_ptr(), &mut status) };
            check(status).map_err(|m| format!("column '{}': comment: {m}", f.name))?;
        }
        if f.nullable && f.dtype == Dtype::I64 {
            let k = cstring(&format!("TNULL{col}"))?;
            let c = cstring("no value")?;
            // SAFETY: as above.
            unsafe { sys::ffpkyj(file.as_raw(), k.as_ptr(), INT_NULL, c.as_ptr(), &mut status) };
            check(status).map_err(|m| format!("column '{}': TNULL: {m}", f.name))?;
        }
    }
    // SAFETY: the table HDU is current; re-reads the keywords written above.
    unsafe { sys::ffrdef(file.as_raw(), &mut status) };
    check(status)
}

impl FitsTable {
    /// Appends `rows` rows, one block per field.
    pub fn write(&mut self, rows: usize, blocks: &[Block]) -> Result<(), String> {
        check_blocks(&self.fields, blocks, rows)?;
        let first = self.rows as i64 + 1;
        for (i, (f, b)) in self.fields.iter().zip(blocks).enumerate() {
            let col = i as c_int + 1;
            write_column(&mut self.file, col, f, b, first)
                .map_err(|m| format!("column '{}': {m}", f.name))?;
        }
        self.rows += rows;
        Ok(())
    }
}

/// Writes block `b` of field `f` (column `col`) from row `first` (1-based).
fn write_column(
    file: &mut FitsFile,
    col: c_int,
    f: &Field,
    b: &Block,
    first: i64,
) -> Result<(), String> {
    let absent = |r: usize| b.present.as_ref().is_some_and(|p| !p[r]);
    let row_len = f.row_len();
    let mut status = 0;
    // SAFETY: only returns the open file's pointer, valid while `file` is borrowed.
    let raw = unsafe { file.as_raw() };
    let n = b.values.len() as i64;
    let mut put = |code: c_int, data: *mut c_void| {
        // SAFETY: `data` points to `n` values of the type `code` names; the table HDU is
        // current; cfitsio writes past a row's end into the next rows.
        unsafe { sys::ffpcl(raw, code, col, first, 1, n, data, &mut status) };
    };
    match &b.values {
        // Float rows without a value: NaN, FITS' null for floating-point columns.
        Values::F32(v) => {
            let mut v = v.clone();
            for r in (0..v.len() / row_len.max(1)).filter(|&r| absent(r)) {
                v[r * row_len..(r + 1) * row_len].fill(f32::NAN);
            }
            put(TFLOAT, v.as_mut_ptr().cast());
        }
        Values::F64(v) => {
            let mut v = v.clone();
            for r in (0..v.len() / row_len.max(1)).filter(|&r| absent(r)) {
                v[r * row_len..(r + 1) * row_len].fill(f64::NAN);
            }
            put(TDOUBLE, v.as_mut_ptr().cast());
        }
        Values::U64(v) => put(TULONGLONG, v.as_ptr().cast_mut().cast()),
        Values::U8(v) => put(TBYTE, v.as_ptr().cast_mut().cast()),
        Values::I64(v) => {
            let mut v = v.clone();
            for r in (0..v.len() / row_len.max(1)).filter(|&r| absent(r)) {
                v[r * row_len..(r + 1) * row_len].fill(INT_NULL);
            }
            put(TLONGLONG, v.as_mut_ptr().cast());
        }
        Values::Bool(v) => {
            let mut c: Vec<c_char> = v.iter().map(|&x| c_char::from(x)).collect();
            put(TLOGICAL, c.as_mut_ptr().cast());
        }
        Values::Str(v) => {
            if let Some(s) = v.iter().find(|s| s.len() > f.width) {
                return Err(format!(
                    "'{s}' is longer than the column's {} bytes",
                    f.width
                ));
            }
            // Rows without a value: "".
            let strings = v
                .iter()
                .enumerate()
                .map(|(i, s)| cstring(if absent(i / row_len.max(1)) { "" } else { s }))
                .collect::<Result<Vec<_>, _>>()?;
            let mut ptrs: Vec<*mut c_char> =
                strings.iter().map(|s| s.as_ptr().cast_mut()).collect();
            // SAFETY: `ptrs` holds `n` NUL-terminated strings that outlive the call.
            unsafe { sys::ffpcls(raw, col, first, 1, n, ptrs.as_mut_ptr(), &mut status) };
        }
    }
    check(status)?;
    if f.dtype == Dtype::Bool {
        // Logical rows without a value: FITS' undefined logical.
        let rows = b.values.len() / row_len.max(1);
        for r in (0..rows).filter(|&r| absent(r)) {
            // SAFETY: the row exists (just written); the table HDU is current.
            unsafe { sys::ffpclu(raw, col, first + r as i64, 1, row_len as i64, &mut status) };
        }
        check(status)?;
    }
    Ok(())
}

impl FitsTable {
    /// Rows written so far.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Writes the fields' metadata after the table (see the module's notes), flushes everything
    /// to disk and closes the file (errors, such as a full disk, are reported here rather than
    /// lost when the handle is dropped).
    pub fn finish(mut self) -> Result<(), String> {
        self.write_metadata()?;
        let mut status = 0;
        // SAFETY: the file is open.
        unsafe { sys::ffflus(self.file.as_raw(), &mut status) };
        check(status)
    }
}

/// The value of [`MARKER_KEY`] in the primary header of the FITS file at `path`: `Ok(None)`
/// when it has none, `Err` when it cannot be read as FITS.
pub fn marker(path: &Path) -> Result<Option<String>, String> {
    let mut f = FitsFile::open(path).map_err(|e| e.to_string())?;
    let primary = f.primary_hdu().map_err(|e| e.to_string())?;
    Ok(primary.read_key::<String>(&mut f, MARKER_KEY).ok())
}

impl FitsTable {
    /// Each field's numeric-array metadata as a float64 image HDU `<column>.<key>`; its
    /// other metadata as rows of the [`METADATA_EXTNAME`] table.
    fn write_metadata(&mut self) -> Result<(), String> {
        let mut rows: Vec<(String, String, String)> = Vec::new();
        for f in &self.fields {
            for (key, value) in &f.metadata {
                match numeric_array(value) {
                    Some((grid, shape)) => {
                        write_grid(&mut self.file, &format!("{}.{key}", f.name), grid, &shape)
                            .map_err(|m| format!("column '{}': {key}: {m}", f.name))?;
                    }
                    None => rows.push((f.name.clone(), key.clone(), value.clone())),
                }
            }
        }
        if rows.is_empty() {
            return Ok(());
        }
        let column = |name: &str, values: Vec<String>| {
            let mut field = Field::new(name, Dtype::Str, Vec::new());
            field.width = values.iter().map(String::len).max().unwrap_or(1).max(1);
            (field, Block::full(Values::Str(values)))
        };
        let (fields, blocks): (Vec<Field>, Vec<Block>) = [
            column("FIELD", rows.iter().map(|r| r.0.clone()).collect()),
            column("KEY", rows.iter().map(|r| r.1.clone()).collect()),
            column("VALUE", rows.iter().map(|r| r.2.clone()).collect()),
        ]
        .into_iter()
        .unzip();
        append_table(&mut self.file, METADATA_EXTNAME, &fields)?;
        for (i, (f, b)) in fields.iter().zip(&blocks).enumerate() {
            write_column(&mut self.file, i as c_int + 1, f, b, 1)
                .map_err(|m| format!("{METADATA_EXTNAME} column '{}': {m}", f.name))?;
        }
        Ok(())
    }
}

/// A metadata value that is a numeric array: a JSON array of numbers, or an object with
/// `values` (and optionally a C-order `shape`), as the export gives a grid dataset. With its shape.
fn numeric_array(value: &str) -> Option<(Vec<f64>, Vec<usize>)> {
    let json: serde_json::Value = serde_json::from_str(value).ok()?;
    let (values, shape) = match &json {
        serde_json::Value::Array(_) => (&json, None),
        serde_json::Value::Object(o) => (o.get("values")?, o.get("shape")),
        _ => return None,
    };
    let values: Vec<f64> = serde_json::from_value(values.clone()).ok()?;
    let shape: Vec<usize> = match shape {
        Some(s) => serde_json::from_value(s.clone()).ok()?,
        None => vec![values.len()],
    };
    (!values.is_empty() && shape.iter().product::<usize>() == values.len())
        .then_some((values, shape))
}

/// Appends a float64 image HDU `extname` holding `values` of C-order `shape`.
fn write_grid(
    file: &mut FitsFile,
    extname: &str,
    mut values: Vec<f64>,
    shape: &[usize],
) -> Result<(), String> {
    let mut status = 0;
    // FITS lists axes fastest first.
    let mut naxes: Vec<i64> = shape.iter().rev().map(|&d| d as i64).collect();
    let n = values.len() as i64;
    let (key, name) = (cstring("EXTNAME")?, cstring(extname)?);
    let comment = cstring("the column and metadata key this array describes")?;
    // SAFETY: `naxes` holds the axes; `values` holds their product, `n`, doubles; the strings are
    // NUL-terminated and outlive the calls; the new image HDU is current after ffcrimll.
    unsafe {
        sys::ffcrimll(
            file.as_raw(),
            DOUBLE_IMG,
            naxes.len() as c_int,
            naxes.as_mut_ptr(),
            &mut status,
        );
        sys::ffpkys(
            file.as_raw(),
            key.as_ptr(),
            name.as_ptr(),
            comment.as_ptr(),
            &mut status,
        );
        sys::ffppr(
            file.as_raw(),
            TDOUBLE,
            1,
            n,
            values.as_mut_ptr().cast(),
            &mut status,
        );
    }
    check(status)
}
