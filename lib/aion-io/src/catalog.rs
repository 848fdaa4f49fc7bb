//! Reading catalogues: one table of objects, whatever the file format.
//!
//! A catalogue is one or more *parts* read as a single table, one row per object. A part is a
//! table whose columns have the object as first axis (`FLUX_G` `(N,)`, `image_array`
//! `(N,4,160,160)`, `coeff` `(N,110)`, …):
//!
//! | format | a part is | columns | reader |
//! |---|---|---|---|
//! | HDF5 (Multimodal Universe) | a file | its datasets (`group/name` inside groups) | [`h5`] |
//! | Parquet | a file | its columns; struct fields as `<struct>_<field>` | [`pq`] |
//! | HATS | a partition file `dataset/Norder=K/Dir=D/Npix=P.parquet` | as Parquet | [`hats`], [`pq`] |
//! | FITS | a file | binary-table columns, and image HDUs whose first axis is the object (named by `EXTNAME`) | [`fits`] |
//!
//! **Global row order** (the row index every tool reports and the ranks split): parts in the
//! order the paths were given, each glob pattern's matches sorted by name; a HATS catalogue's
//! partitions by (`Norder`, `Npix`); then rows in file order. [`Catalog::paths`] lists every file
//! read, so a resumed run can tell whether its inputs changed.
//!
//! A column missing from some parts is not an error: the rows of those parts are marked absent
//! for it, and the tools leave that modality out for those rows. A null value (Parquet, HATS)
//! marks that row absent the same way. The rest of the pipeline sees only [`Column`]s.

pub(crate) mod fits;
mod format;
mod h5;
mod hats;
mod npy;
mod pq;
pub mod preset;

pub use hats::parse_properties;

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

pub use format::Format;
pub use preset::Preset;

use crate::error::{Error, Result};

/// Kind of values a column holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnKind {
    /// Any float type (read as `f32`).
    Float,
    /// Any integer type (read as `i64`).
    Int,
    /// Booleans.
    Bool,
    /// Strings (fixed or variable length).
    Str,
}

/// What the catalogue knows about one column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnInfo {
    /// Shape of one row (the column's shape without its first axis).
    pub row_shape: Vec<usize>,
    /// Value kind.
    pub kind: ColumnKind,
    /// For each part ([`Catalog::files`]): whether it holds the column.
    pub present_in: Vec<bool>,
}

/// Values of a block of rows.
#[derive(Debug, Clone, PartialEq)]
pub enum ColumnValues {
    /// Floats, row-major.
    F32(Vec<f32>),
    /// Floats at double precision, row-major ([`Catalog::read_f64`]).
    F64(Vec<f64>),
    /// Integers, row-major.
    I64(Vec<i64>),
    /// Booleans, row-major.
    Bool(Vec<bool>),
    /// Strings, row-major.
    Str(Vec<String>),
}

/// A block of rows of one column.
#[derive(Debug, Clone, PartialEq)]
pub struct Column {
    /// Shape of one row.
    pub row_shape: Vec<usize>,
    /// Values (row-major; absent rows hold defaults: NaN, 0, false, "").
    pub values: ColumnValues,
    /// Per row: whether it has a value (its part holds the column and the value is not null).
    pub present: Vec<bool>,
}

impl Column {
    /// No rows yet: room for `rows` rows of `row_shape`, of `kind`'s type (floats as `f32`, or
    /// as `f64` with `f64`).
    fn empty(kind: ColumnKind, f64: bool, row_shape: Vec<usize>, rows: usize) -> Self {
        let n = rows * row_shape.iter().product::<usize>();
        let values = match kind {
            ColumnKind::Float if f64 => ColumnValues::F64(Vec::with_capacity(n)),
            ColumnKind::Float => ColumnValues::F32(Vec::with_capacity(n)),
            ColumnKind::Int => ColumnValues::I64(Vec::with_capacity(n)),
            ColumnKind::Bool => ColumnValues::Bool(Vec::with_capacity(n)),
            ColumnKind::Str => ColumnValues::Str(Vec::with_capacity(n)),
        };
        Self {
            row_shape,
            values,
            present: Vec::with_capacity(rows),
        }
    }

    /// Whether a part's rows of shape `here` can be appended: the message if not.
    fn check_row_shape(&self, here: &[usize]) -> std::result::Result<(), String> {
        if here == self.row_shape.as_slice() {
            return Ok(());
        }
        Err(format!(
            "rows of shape {here:?} here but {:?} in other files",
            self.row_shape
        ))
    }

    /// Values per row.
    pub fn row_len(&self) -> usize {
        self.row_shape.iter().product()
    }

    /// Values as `f32` (integers and booleans converted); `None` for strings.
    pub fn to_f32(&self) -> Option<Vec<f32>> {
        match &self.values {
            ColumnValues::F32(v) => Some(v.clone()),
            ColumnValues::F64(v) => Some(v.iter().map(|&x| x as f32).collect()),
            ColumnValues::I64(v) => Some(v.iter().map(|&x| x as f32).collect()),
            ColumnValues::Bool(v) => Some(v.iter().map(|&x| f32::from(u8::from(x))).collect()),
            ColumnValues::Str(_) => None,
        }
    }
}

/// Row shape of a column in one part, as far as its schema tells.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Shape {
    /// Fixed by the schema (HDF5 dataspace, FITS `TFORM`/`TDIM`, Parquet fixed-size lists).
    Fixed(Vec<usize>),
    /// Variable-length lists (Parquet): taken from the data, every row must agree.
    FromData,
}

/// A column of one part: kind and shape.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Described {
    kind: ColumnKind,
    shape: Shape,
}

/// One table of a catalogue (a file, or a HATS partition file). Each format implements it;
/// [`Catalog`] concatenates parts and never looks at the format.
trait Part: Send + Sync {
    /// The file.
    fn path(&self) -> &Path;
    /// Names of the columns it holds, in its own order.
    fn columns(&self) -> Vec<String>;
    /// Whether it holds `column`.
    fn has(&self, column: &str) -> bool;
    /// Kind and shape of `column`, or `None` if the part does not hold it.
    fn describe(&self, column: &str) -> Result<Option<Described>>;
    /// For a [`Shape::FromData`] column: the shape of its first non-null row (`None`: all null).
    fn sample_shape(&self, column: &str) -> Result<Option<Vec<usize>>>;
    /// Number of rows of `column` (the part's rows for one-table formats).
    fn rows(&self, column: &str) -> Result<usize>;
    /// Appends rows `rows` (part-local) of `column`, each of `out.row_shape`, to `out`'s values,
    /// and per row whether it has a value to `out.present` (a null row: `false`, its values
    /// padded).
    fn read(&self, column: &str, rows: Range<usize>, out: &mut Column) -> Result<()>;
    /// A one-dimensional array the file holds once for all its objects (a FITS 1-D image HDU
    /// such as DESI's `B_WAVELENGTH`), by name; `None` if the part holds no such array.
    fn file_array(&self, _name: &str) -> Result<Option<Vec<f64>>> {
        Ok(None)
    }
    /// The file `column`'s values come from (a survey preset's part joins several files).
    fn source_file(&self, _column: &str) -> &Path {
        self.path()
    }
    /// The units the file states for `column` (FITS `TUNITn`, HDF5 attribute `units`, Parquet
    /// field metadata `unit`), if any.
    fn units(&self, _column: &str) -> Option<String> {
        None
    }
    /// Reads rows `rows` of the float column `column` into `dst` (exactly rows × row length;
    /// NaN for null rows).
    fn read_f32(
        &self,
        column: &str,
        rows: Range<usize>,
        row_shape: &[usize],
        dst: &mut [f32],
    ) -> Result<()> {
        let mut out = Column::empty(ColumnKind::Float, false, row_shape.to_vec(), rows.len());
        self.read(column, rows, &mut out)?;
        if let ColumnValues::F32(v) = out.values {
            dst.copy_from_slice(&v);
        }
        Ok(())
    }
}

struct CatPart {
    part: Box<dyn Part>,
    rows: usize,
    start: usize,
}

/// One or more catalogue parts read as a single, concatenated table.
pub struct Catalog {
    format: Format,
    parts: Vec<CatPart>,
    metadata: Vec<PathBuf>,
    declared_rows: Option<(PathBuf, u64)>,
    n_rows: usize,
    infos: Mutex<BTreeMap<String, Option<ColumnInfo>>>,
    preset: Option<Preset>,
}

impl std::fmt::Debug for Catalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts: Vec<_> = self.parts.iter().map(|c| (c.part.path(), c.rows)).collect();
        f.debug_struct("Catalog")
            .field("format", &self.format)
            .field("parts", &parts)
            .field("rows", &self.n_rows)
            .finish()
    }
}

/// Expands paths and glob patterns (each pattern's matches sorted) into a path list. Paths may
/// be files or (HATS) directories.
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
    /// Opens the files matched by `patterns`, telling their format from their content (row counts
    /// are set by [`Catalog::size_by`]).
    pub fn open(patterns: &[String]) -> Result<Self> {
        Self::open_as(patterns, None)
    }

    /// Opens the files matched by `patterns` as `format` (`None`: tell it from each file's
    /// content). Files of different formats in one catalogue are refused.
    pub fn open_as(patterns: &[String], format: Option<Format>) -> Result<Self> {
        Self::open_with(patterns, format, None)
    }

    /// Opens the files matched by `patterns` as `format`, seen through a survey `preset`
    /// ([`preset`]: its file roles group the files into parts, its computed columns are added).
    pub fn open_with(
        patterns: &[String],
        format: Option<Format>,
        preset: Option<&Preset>,
    ) -> Result<Self> {
        let paths = expand_paths(patterns)?;
        let groups = match preset {
            Some(p) => p.group(&paths)?,
            None => paths.iter().map(|p| vec![p.clone()]).collect(),
        };
        let mut first: Option<(PathBuf, Format)> = None;
        for p in groups.iter().map(|g| &g[0]) {
            let f = match format {
                Some(f) => f,
                None => format::detect(p)?,
            };
            match &first {
                None => first = Some((p.clone(), f)),
                Some((q, g)) if *g != f => {
                    return Err(Error::MixedFormats {
                        first: q.clone(),
                        first_format: *g,
                        path: p.clone(),
                        format: f,
                    });
                }
                Some(_) => {}
            }
        }
        let format = first.map_or(Format::Hdf5, |(_, f)| f);
        let mut parts: Vec<Box<dyn Part>> = Vec::new();
        let mut metadata = Vec::new();
        let mut declared_rows = None;
        for group in &groups {
            let p = &group[0];
            if format != Format::Hats && p.is_dir() {
                return Err(format::directory_error(p));
            }
            let mut opened: Vec<Box<dyn Part>> = Vec::new();
            match format {
                Format::Hdf5 => opened.push(Box::new(h5::H5Part::open(p)?)),
                Format::Parquet => opened.push(Box::new(pq::ParquetPart::open(p, format)?)),
                Format::Fits => opened.push(Box::new(fits::FitsPart::open(p)?)),
                Format::Hats => {
                    let cat = hats::open(p)?;
                    for f in &cat.partitions {
                        opened.push(Box::new(pq::ParquetPart::open(f, format)?));
                    }
                    metadata.extend(cat.metadata);
                    if let Some(n) = cat.declared_rows {
                        let prev = declared_rows.map_or(0, |(_, m)| m);
                        declared_rows = Some((p.clone(), prev + n));
                    }
                }
            }
            let Some(preset) = preset else {
                parts.extend(opened);
                continue;
            };
            if group.len() == 1 {
                for part in opened {
                    parts.push(Box::new(preset::PresetPart::new(preset, vec![part])?));
                }
                continue;
            }
            if format == Format::Hats {
                return Err(Error::Preset {
                    preset: preset.name.clone(),
                    path: p.clone(),
                    message: "a HATS catalogue cannot be joined with other files by a preset's \
                              file roles; join them into the catalogue first"
                        .into(),
                });
            }
            for (side, role) in group.iter().zip(&preset.files).skip(1) {
                opened.push(open_side(side, &role.role, role.object_axis)?);
            }
            let part = preset::PresetPart::new(preset, opened)?;
            metadata.extend(part.side_files());
            parts.push(Box::new(part));
        }
        let parts = parts
            .into_iter()
            .map(|part| CatPart {
                part,
                rows: 0,
                start: 0,
            })
            .collect();
        Ok(Self {
            format,
            parts,
            metadata,
            declared_rows,
            n_rows: 0,
            infos: Mutex::new(BTreeMap::new()),
            preset: preset.cloned(),
        })
    }

    /// The survey preset the catalogue is read through, if any.
    pub fn preset(&self) -> Option<&Preset> {
        self.preset.as_ref()
    }

    /// The catalogue's format.
    pub fn format(&self) -> Format {
        self.format
    }

    /// Whether any part holds `column`.
    pub fn has(&self, column: &str) -> bool {
        self.parts.iter().any(|p| p.part.has(column))
    }

    /// Every column name of the catalogue (union over parts, sorted), for messages.
    pub fn columns(&self) -> Vec<String> {
        let mut names: Vec<String> = self.parts.iter().flat_map(|p| p.part.columns()).collect();
        names.sort();
        names.dedup();
        names
    }

    /// Sizes each part by the `columns` the run reads: within a part they must agree on the
    /// number of rows, and a part must hold at least one of them.
    pub fn size_by(&mut self, columns: &[String]) -> Result<()> {
        let mut start = 0;
        for p in &mut self.parts {
            p.rows = part_rows(p.part.as_ref(), columns)?;
            p.start = start;
            start += p.rows;
        }
        self.n_rows = start;
        if let Some((dir, declared)) = &self.declared_rows
            && *declared != start as u64
        {
            return Err(Error::OpenAs {
                path: dir.clone(),
                format: Format::Hats,
                message: format!(
                    "its properties declare {declared} rows (hats_nrows) but its partition files \
                     hold {start}: a partition is missing or was changed"
                ),
            });
        }
        Ok(())
    }

    /// Total number of rows.
    pub fn n_rows(&self) -> usize {
        self.n_rows
    }

    /// Every file read: the data files in row order, then metadata files (a HATS catalogue's
    /// `properties`, `partition_info.csv`) and the files a survey preset joins to the parts.
    pub fn paths(&self) -> Vec<&Path> {
        self.files()
            .into_iter()
            .chain(self.metadata.iter().map(PathBuf::as_path))
            .collect()
    }

    /// [`Catalog::paths`] as one line for messages: `a.h5, b.h5`.
    pub fn paths_text(&self) -> String {
        self.paths()
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The file the values of `column` come from in part `part` (for a survey preset's part,
    /// the joined file holding them, e.g. the `.npy` cutouts, not the FITS catalogue).
    pub fn source_file(&self, part: usize, column: &str) -> Option<&Path> {
        self.parts.get(part).map(|p| p.part.source_file(column))
    }

    /// The units the first file holding `column` states for it (FITS `TUNITn`, HDF5 attribute
    /// `units`, Parquet field metadata `unit`; a survey preset's copied or scaled column keeps
    /// its source's), if any.
    pub fn units(&self, column: &str) -> Option<String> {
        self.parts
            .iter()
            .find(|p| p.part.has(column))
            .and_then(|p| p.part.units(column))
            .filter(|u| !u.trim().is_empty())
    }

    /// The data files, one per part, in row order (entry `i` is `ColumnInfo::present_in[i]`).
    pub fn files(&self) -> Vec<&Path> {
        self.parts.iter().map(|p| p.part.path()).collect()
    }

    /// Describes a column, or `None` if no part holds it. Parts that hold it must agree on its
    /// row shape and kind.
    pub fn info(&self, column: &str) -> Result<Option<ColumnInfo>> {
        if let Some(i) = self.lock_infos().get(column) {
            return Ok(i.clone());
        }
        let info = self.describe(column)?;
        self.lock_infos().insert(column.to_string(), info.clone());
        Ok(info)
    }

    fn lock_infos(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Option<ColumnInfo>>> {
        self.infos.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn describe(&self, column: &str) -> Result<Option<ColumnInfo>> {
        let mut present_in = Vec::with_capacity(self.parts.len());
        let mut kind: Option<(ColumnKind, &Path)> = None;
        let mut fixed: Option<(Vec<usize>, &Path)> = None;
        let mut from_data = Vec::new();
        for (i, p) in self.parts.iter().enumerate() {
            let Some(d) = p.part.describe(column)? else {
                present_in.push(false);
                continue;
            };
            present_in.push(true);
            let path = p.part.path();
            match &kind {
                None => kind = Some((d.kind, path)),
                Some((k, first)) if *k != d.kind => {
                    let msg = format!(
                        "holds {:?} values here but {k:?} in {}",
                        d.kind,
                        first.display()
                    );
                    return Err(shape_error(path, column, &msg));
                }
                Some(_) => {}
            }
            match d.shape {
                Shape::Fixed(s) => match &fixed {
                    None => fixed = Some((s, path)),
                    Some((f, first)) if *f != s => {
                        let msg =
                            format!("rows of shape {s:?} here but {f:?} in {}", first.display());
                        return Err(shape_error(path, column, &msg));
                    }
                    Some(_) => {}
                },
                Shape::FromData => from_data.push(i),
            }
        }
        let Some((kind, _)) = kind else {
            return Ok(None);
        };
        // Variable-length lists take the shape of the first non-null row in row order; the
        // reads check every other row against it.
        let mut row_shape = fixed.as_ref().map(|(s, _)| s.clone());
        if row_shape.is_none() {
            for &i in &from_data {
                if let Some(s) = self.parts[i].part.sample_shape(column)? {
                    row_shape = Some(s);
                    break;
                }
            }
        }
        let row_shape = match row_shape {
            Some(s) => s,
            None => {
                let first = self.parts[from_data[0]].part.path();
                return Err(shape_error(
                    first,
                    column,
                    "has no value in any row (every row is null), so its shape is unknown",
                ));
            }
        };
        Ok(Some(ColumnInfo {
            row_shape,
            kind,
            present_in,
        }))
    }

    fn missing(&self, column: &str) -> Error {
        Error::MissingDataset {
            path: self
                .parts
                .first()
                .map(|p| p.part.path().to_path_buf())
                .unwrap_or_default(),
            dataset: column.to_string(),
        }
    }

    /// Reads rows `rows` (global indices) of `column`.
    pub fn read(&self, column: &str, rows: Range<usize>) -> Result<Column> {
        self.read_as(column, rows, false)
    }

    /// As [`Catalog::read`], but a float column is read at double precision
    /// ([`ColumnValues::F64`]): exact for `float64` sources such as `ra` and `dec` (and for
    /// `float32` ones), for `aion-export`, which copies catalogue columns.
    pub fn read_f64(&self, column: &str, rows: Range<usize>) -> Result<Column> {
        self.read_as(column, rows, true)
    }

    fn read_as(&self, column: &str, rows: Range<usize>, f64: bool) -> Result<Column> {
        let info = self.info(column)?.ok_or_else(|| self.missing(column))?;
        let mut out = Column::empty(info.kind, f64, info.row_shape, rows.len());
        let row_len = out.row_len();
        for (i, p) in self.parts.iter().enumerate() {
            let lo = rows.start.max(p.start);
            let hi = rows.end.min(p.start + p.rows);
            if lo >= hi {
                continue;
            }
            let local = (lo - p.start)..(hi - p.start);
            if info.present_in[i] {
                p.part.read(column, local, &mut out)?;
            } else {
                out.present.extend(std::iter::repeat_n(false, local.len()));
                pad(&mut out.values, local.len() * row_len);
            }
        }
        Ok(out)
    }

    /// Reads rows `rows` of the float column `column` into `out` (row-major, resized to the
    /// rows × row length), reusing `out`'s memory: once `out` is large enough, nothing is
    /// allocated and HDF5 writes straight into it. For scans that read many large chunks
    /// (`aion-search`), where allocating fresh buffers per chunk costs more in page faults than
    /// the read itself. Rows without a value read as NaN.
    pub fn read_f32_into(
        &self,
        column: &str,
        rows: Range<usize>,
        out: &mut Vec<f32>,
    ) -> Result<()> {
        let info = self.info(column)?.ok_or_else(|| self.missing(column))?;
        if info.kind != ColumnKind::Float {
            let first = self
                .parts
                .first()
                .map(|p| p.part.path().to_path_buf())
                .unwrap_or_default();
            return Err(shape_error(&first, column, "is not a float column"));
        }
        let row_len: usize = info.row_shape.iter().product();
        let need = rows.len() * row_len;
        if out.len() != need {
            out.clear();
            out.resize(need, 0.0);
        }
        for (i, p) in self.parts.iter().enumerate() {
            let lo = rows.start.max(p.start);
            let hi = rows.end.min(p.start + p.rows);
            if lo >= hi {
                continue;
            }
            let dst = &mut out[(lo - rows.start) * row_len..(hi - rows.start) * row_len];
            if !info.present_in[i] {
                dst.fill(f32::NAN);
                continue;
            }
            let local = (lo - p.start)..(hi - p.start);
            p.part.read_f32(column, local, &info.row_shape, dst)?;
        }
        Ok(())
    }

    /// Which file holds global row `row`, and the row's index in that file.
    pub fn locate(&self, row: usize) -> Option<(&Path, usize)> {
        self.parts
            .iter()
            .find(|p| row >= p.start && row < p.start + p.rows)
            .map(|p| (p.part.path(), row - p.start))
    }

    /// The global rows of part `i` ([`Catalog::files`] order).
    pub fn part_rows(&self, i: usize) -> Range<usize> {
        let p = &self.parts[i];
        p.start..p.start + p.rows
    }
}

/// Opens a file a preset joins to a part: a `.npy` array (column `role`, objects along
/// `object_axis`), or an HDF5, Parquet or FITS table.
fn open_side(path: &Path, role: &str, object_axis: usize) -> Result<Box<dyn Part>> {
    if npy::is_npy(path) {
        return Ok(Box::new(npy::NpyPart::open(path, role, object_axis)?));
    }
    Ok(match format::detect(path)? {
        Format::Hdf5 => Box::new(h5::H5Part::open(path)?),
        Format::Parquet => Box::new(pq::ParquetPart::open(path, Format::Parquet)?),
        Format::Fits => Box::new(fits::FitsPart::open(path)?),
        Format::Hats => return Err(format::directory_error(path)),
    })
}

fn shape_error(path: &Path, column: &str, message: &str) -> Error {
    Error::Shape {
        path: path.to_path_buf(),
        dataset: column.to_string(),
        message: message.to_string(),
    }
}

fn part_rows(part: &dyn Part, columns: &[String]) -> Result<usize> {
    let mut rows: Option<(String, usize)> = None;
    for name in columns {
        if !part.has(name) {
            continue;
        }
        let n = part.rows(name)?;
        match &rows {
            None => rows = Some((name.clone(), n)),
            Some((reference, expected)) if *expected != n => {
                return Err(Error::RowCount {
                    path: part.path().to_path_buf(),
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
        path: part.path().to_path_buf(),
        dataset: format!("any of [{}]", columns.join(", ")),
    })
}

/// Appends `n` default values (NaN, 0, false, "") for absent rows.
fn pad(values: &mut ColumnValues, n: usize) {
    match values {
        ColumnValues::F32(v) => v.extend(std::iter::repeat_n(f32::NAN, n)),
        ColumnValues::F64(v) => v.extend(std::iter::repeat_n(f64::NAN, n)),
        ColumnValues::I64(v) => v.extend(std::iter::repeat_n(0, n)),
        ColumnValues::Bool(v) => v.extend(std::iter::repeat_n(false, n)),
        ColumnValues::Str(v) => v.extend(std::iter::repeat_n(String::new(), n)),
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
        assert_eq!(cat.format(), Format::Hdf5);
        cat.size_by(&["x".to_string(), "object_id".to_string()])
            .unwrap();
        assert_eq!(cat.n_rows(), 6);
        let mut buf = Vec::new();
        cat.read_f32_into("x", 1..6, &mut buf).unwrap();
        let want = [3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.5];
        assert_eq!(&buf[..8], &want);
        assert!(buf[8].is_nan() && buf[9].is_nan());
        let col = cat.read("x", 1..6).unwrap();
        assert_eq!(col.present, [true, true, true, true, false]);
        let via_read = col.to_f32().unwrap();
        assert_eq!(&via_read[..8], &buf[..8]);
        // Same size again: the buffer is reused, not reallocated.
        let ptr = buf.as_ptr();
        cat.read_f32_into("x", 0..5, &mut buf).unwrap();
        assert_eq!(buf.as_ptr(), ptr);
        assert_eq!(&buf[..2], &[1.0, 2.0]);
        cat.read_f32_into("x", 2..2, &mut buf).unwrap();
        assert!(buf.is_empty());
        assert!(cat.read_f32_into("object_id", 0..1, &mut buf).is_err());
        assert_eq!(cat.columns(), ["object_id", "x"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn groups_directories_and_mixed_formats_are_clear_errors() {
        let dir = std::env::temp_dir().join(format!("aion-io-groups-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let h5 = dir.join("g.h5");
        let f = hdf5::File::create(&h5).unwrap();
        let g = f.create_group("grp").unwrap();
        g.new_dataset_builder()
            .with_data(&ndarray::arr1(&[1f32, 2.0]))
            .create("x")
            .unwrap();
        drop((g, f));
        let mut cat = Catalog::open(&[h5.display().to_string()]).unwrap();
        assert!(cat.has("grp") && cat.has("grp/x"));
        let e = cat.info("grp").unwrap_err().to_string();
        assert!(e.contains("grp") && e.contains("group"), "{e}");
        cat.size_by(&["grp/x".into()]).unwrap();
        assert_eq!(
            cat.read("grp/x", 0..2).unwrap().to_f32().unwrap(),
            [1.0, 2.0]
        );

        let e = Catalog::open(&[dir.display().to_string()])
            .unwrap_err()
            .to_string();
        assert!(e.contains("is a directory"), "{e}");

        let pq = dir.join("t.parquet");
        std::fs::write(&pq, b"PAR1 not really").unwrap();
        let e = Catalog::open(&[h5.display().to_string(), pq.display().to_string()])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("mixes formats") && e.contains("t.parquet"),
            "{e}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
