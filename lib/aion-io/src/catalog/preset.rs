//! Survey presets: how a survey's own files become the columns the tools read.
//!
//! A preset is data (TOML, `configs/surveys/*.toml`, parsed by the tools): which files make one
//! catalogue part ([`FileRole`]), which columns to compute ([`Op`]), and which columns feed which
//! modality (`map`, applied by the tools). The operations are a small fixed set, each a named
//! convention of the surveys, not a scripting language:
//!
//! | op | gives | from |
//! |---|---|---|
//! | `copy` | the column under a new name | `from` |
//! | `multiply` | `from` × `by` (one scalar column: the whole row; one per band: plane *b* × `by[b]`) | float columns |
//! | `ebv_from_transmission` | E(B−V) = −2.5 log10(T) / `coefficient` | a transmission column T |
//! | `constant` | the same strings in every row (`values`, e.g. band names) | — |
//! | `concat` | the rows of `from` one after another (1-D columns) | float columns |
//! | `coadd_arms` | `<name>_flux/_ivar/_lambda/_mask` on one wavelength grid | `<ARM>_WAVELENGTH` (per file), `<ARM>_FLUX/_IVAR/_MASK` (per object) |
//!
//! Sources are the files' own columns (never other computed columns); a computed column hides a
//! file column of the same name. Every source a preset names must be in the part's files, unless
//! the computed column is listed in `optional` (then it is simply absent where its sources are).
//!
//! **Files of a part.** Without `[[files]]` every catalogue file is a part on its own. With them,
//! each file's name must match one role's pattern (one `*`); files whose `*` matched the same text
//! are one part, the first role's file giving the rows (`coadd-X.fits` + `redrock-X.fits`;
//! `train_demo_catalog.fits` + `train_processed_dered_griz_images.npy`). Every file of a part
//! must hold the same number of objects, and the `same_rows` columns must agree row by row.
//! A column is looked up in the part's files in role order (first holding it wins); a `.npy`
//! file is one column named by its role.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{Column, ColumnKind, ColumnValues, Described, Part, Shape};
use crate::error::{Error, Result};

/// A survey preset (the content of `configs/surveys/<name>.toml`).
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Preset {
    /// Name used by `--survey` and in messages.
    pub name: String,
    /// One line on what files it reads.
    #[serde(default)]
    pub about: String,
    /// Files of one catalogue part (empty: each file is a part).
    #[serde(default)]
    pub files: Vec<FileRole>,
    /// Computed columns by name.
    #[serde(default)]
    pub columns: BTreeMap<String, Op>,
    /// Computed columns that are left out, not an error, where their sources are missing.
    #[serde(default)]
    pub optional: Vec<String>,
    /// `token_key = "COLUMN"` (or `"none"`), below the run config's `[map]` and `--map`.
    #[serde(default)]
    pub map: BTreeMap<String, String>,
}

/// One kind of file of a catalogue part.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FileRole {
    /// Name of the role (also the column name of a `.npy` file).
    pub role: String,
    /// File-name pattern with one `*` (`coadd-*.fits`); the text `*` matches pairs the files.
    pub pattern: String,
    /// For `.npy` files: the axis that runs over objects (`(4, N, 23, 23)`: 1).
    #[serde(default)]
    pub object_axis: usize,
    /// Columns this file shares with the part's first file that must agree row by row.
    #[serde(default)]
    pub same_rows: Vec<String>,
}

/// How a computed column is made.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Op {
    /// The column `from` under another name.
    Copy {
        /// Source column.
        from: String,
    },
    /// `from` times `by`: one scalar column scales the whole row; one scalar column per band
    /// scales plane `b` of an image row by `by[b]`.
    Multiply {
        /// Source column (floats).
        from: String,
        /// Scalar factor columns.
        by: Vec<String>,
    },
    /// E(B−V) from a Milky Way transmission T: −2.5 log10(T) / `coefficient` (A_band / E(B−V)).
    EbvFromTransmission {
        /// Transmission column.
        from: String,
        /// A_band / E(B−V) of that band.
        coefficient: f64,
    },
    /// The same strings in every row.
    Constant {
        /// The strings of one row.
        values: Vec<String>,
    },
    /// One-dimensional float columns one after another.
    Concat {
        /// Source columns.
        from: Vec<String>,
    },
    /// Spectrograph arms merged onto one wavelength grid by inverse variance: per grid pixel,
    /// flux = Σ f·ivar / Σ ivar and ivar = Σ ivar over the arms' good pixels (mask 0, ivar > 0);
    /// mask = no good pixel. Gives `<name>_flux`, `_ivar`, `_lambda`, `_mask`.
    CoaddArms {
        /// Arm names: columns `<ARM>_FLUX`, `<ARM>_IVAR`, `<ARM>_MASK` and the file's
        /// `<ARM>_WAVELENGTH` array.
        arms: Vec<String>,
        /// First grid wavelength.
        start: f64,
        /// Grid step.
        step: f64,
        /// Grid pixels.
        pixels: usize,
    },
}

impl Op {
    /// The file columns it reads.
    fn sources(&self) -> Vec<String> {
        match self {
            Op::Copy { from } | Op::EbvFromTransmission { from, .. } => vec![from.clone()],
            Op::Multiply { from, by } => std::iter::once(from).chain(by).cloned().collect(),
            Op::Constant { .. } => Vec::new(),
            Op::Concat { from } => from.clone(),
            Op::CoaddArms { arms, .. } => arms
                .iter()
                .flat_map(|a| ["FLUX", "IVAR", "MASK"].map(|s| format!("{a}_{s}")))
                .collect(),
        }
    }

    /// Names of the columns it gives.
    fn outputs(&self, name: &str) -> Vec<String> {
        match self {
            Op::CoaddArms { .. } => ARM_OUTPUTS.map(|s| format!("{name}_{s}")).to_vec(),
            _ => vec![name.to_string()],
        }
    }
}

const ARM_OUTPUTS: [&str; 4] = ["flux", "ivar", "lambda", "mask"];

impl Preset {
    /// Checks what can be checked without files: patterns with one `*`, distinct roles and
    /// column names, `optional` naming computed columns, band lists not empty.
    pub fn validate(&self, source: &Path) -> Result<()> {
        let fail = |message: String| Error::Preset {
            preset: self.name.clone(),
            path: source.to_path_buf(),
            message,
        };
        let mut roles = Vec::new();
        for f in &self.files {
            if f.pattern.matches('*').count() != 1 || f.pattern.contains(['/', '?', '[']) {
                return Err(fail(format!(
                    "file role '{}': pattern '{}' must be a file name with exactly one '*'",
                    f.role, f.pattern
                )));
            }
            if roles.contains(&&f.role) {
                return Err(fail(format!("file role '{}' is given twice", f.role)));
            }
            roles.push(&f.role);
        }
        let outputs: Vec<String> = self
            .columns
            .iter()
            .flat_map(|(n, op)| op.outputs(n))
            .collect();
        for o in &self.optional {
            if !self.columns.contains_key(o) {
                return Err(fail(format!(
                    "'optional' names '{o}', which is not one of its columns ({})",
                    self.columns.keys().cloned().collect::<Vec<_>>().join(", ")
                )));
            }
        }
        for (name, op) in &self.columns {
            let empty = match op {
                Op::Multiply { by, .. } => by.is_empty(),
                Op::Constant { values } => values.is_empty(),
                Op::Concat { from } => from.is_empty(),
                Op::CoaddArms {
                    arms, step, pixels, ..
                } => arms.is_empty() || *step <= 0.0 || *pixels == 0,
                Op::Copy { .. } | Op::EbvFromTransmission { .. } => false,
            };
            if empty {
                return Err(fail(format!(
                    "column '{name}': empty list or non-positive grid"
                )));
            }
            if let Some(s) = op.sources().iter().find(|s| outputs.contains(s)) {
                return Err(fail(format!(
                    "column '{name}' reads '{s}', which the preset computes; sources must be \
                     columns of the files"
                )));
            }
        }
        Ok(())
    }

    /// Groups `paths` into parts by the file roles: per part, the file of each role in role
    /// order. Without roles, each path is a part of one file.
    pub(super) fn group(&self, paths: &[PathBuf]) -> Result<Vec<Vec<PathBuf>>> {
        if self.files.is_empty() {
            return Ok(paths.iter().map(|p| vec![p.clone()]).collect());
        }
        let fail = |path: &Path, message: String| Error::Preset {
            preset: self.name.clone(),
            path: path.to_path_buf(),
            message,
        };
        let patterns = || {
            self.files
                .iter()
                .map(|f| format!("{} ({})", f.pattern, f.role))
                .collect::<Vec<_>>()
                .join(", ")
        };
        // key -> per role the file.
        let mut parts: Vec<(String, Vec<Option<PathBuf>>)> = Vec::new();
        for p in paths {
            let file = p.file_name().map(|f| f.to_string_lossy().to_string());
            let hit = file.as_deref().and_then(|f| {
                self.files
                    .iter()
                    .enumerate()
                    .find_map(|(i, r)| star_match(&r.pattern, f).map(|k| (i, k)))
            });
            let Some((role, key)) = hit else {
                return Err(fail(
                    p,
                    format!(
                        "the file name matches none of the preset's files: {}",
                        patterns()
                    ),
                ));
            };
            let at = match parts.iter().position(|(k, _)| *k == key) {
                Some(i) => i,
                None => {
                    parts.push((key.clone(), vec![None; self.files.len()]));
                    parts.len() - 1
                }
            };
            if let Some(prev) = &parts[at].1[role] {
                return Err(fail(
                    p,
                    format!(
                        "given twice as the {} file of part '{key}' (also {})",
                        self.files[role].role,
                        prev.display()
                    ),
                ));
            }
            parts[at].1[role] = Some(p.clone());
        }
        let mut out = Vec::new();
        for (key, files) in parts {
            let given = files.iter().flatten().next().expect("a part has a file");
            for (i, f) in files.iter().enumerate() {
                if f.is_none() {
                    let want = self.files[i].pattern.replace('*', &key);
                    return Err(fail(
                        given,
                        format!(
                            "its {} file '{want}' is not among the catalogue files; give every \
                             file of the part: {}",
                            self.files[i].role,
                            patterns()
                        ),
                    ));
                }
            }
            out.push(files.into_iter().flatten().collect());
        }
        Ok(out)
    }
}

/// The text `*` matches when `name` fits `pattern` (one `*`).
fn star_match(pattern: &str, name: &str) -> Option<String> {
    let (pre, post) = pattern.split_once('*')?;
    (name.len() >= pre.len() + post.len() && name.starts_with(pre) && name.ends_with(post))
        .then(|| name[pre.len()..name.len() - post.len()].to_string())
}

/// A computed column of a part.
#[derive(Debug, Clone)]
struct Computed {
    op: Op,
    /// For `coadd_arms`: which of its outputs.
    output: usize,
}

/// A catalogue part seen through a preset: its files' columns plus the computed ones.
pub(super) struct PresetPart {
    preset: String,
    files: Vec<Box<dyn Part>>,
    computed: BTreeMap<String, Computed>,
    rows: usize,
}

impl PresetPart {
    /// Joins the files of one part (first = rows) and checks them against the preset.
    pub(super) fn new(preset: &Preset, files: Vec<Box<dyn Part>>) -> Result<Self> {
        let primary = files[0].path().to_path_buf();
        let fail = |path: &Path, message: String| Error::Preset {
            preset: preset.name.clone(),
            path: path.to_path_buf(),
            message,
        };
        let holder = |c: &str| files.iter().find(|f| f.has(c));
        let mut computed = BTreeMap::new();
        for (name, op) in &preset.columns {
            let missing: Vec<String> = op
                .sources()
                .into_iter()
                .filter(|s| holder(s).is_none())
                .collect();
            let arrays_missing = match op {
                Op::CoaddArms { arms, .. } => {
                    let mut m = Vec::new();
                    for a in arms {
                        let w = format!("{a}_WAVELENGTH");
                        let mut found = false;
                        for f in &files {
                            found |= f.file_array(&w)?.is_some();
                        }
                        if !found {
                            m.push(w);
                        }
                    }
                    m
                }
                _ => Vec::new(),
            };
            if !missing.is_empty() || !arrays_missing.is_empty() {
                if preset.optional.contains(name) {
                    continue;
                }
                let all: Vec<String> = missing.into_iter().chain(arrays_missing).collect();
                let mut cols: Vec<String> = files.iter().flat_map(|f| f.columns()).collect();
                cols.sort();
                cols.dedup();
                let names: Vec<String> = files
                    .iter()
                    .map(|f| f.path().display().to_string())
                    .collect();
                let similar: Vec<String> = cols
                    .iter()
                    .filter(|c| {
                        let c = c.to_ascii_lowercase();
                        all.iter().any(|m| {
                            let m = m.to_ascii_lowercase();
                            c.contains(&m) || m.contains(&c)
                        })
                    })
                    .cloned()
                    .collect();
                let similar = if similar.is_empty() {
                    String::new()
                } else {
                    format!("similar names: {}; ", short_list(&similar))
                };
                return Err(fail(
                    &primary,
                    format!(
                        "column '{name}' ({}) needs {all:?}, which {} not hold; {similar}their \
                         columns: {}",
                        op_name(op),
                        if names.len() == 1 {
                            "the file does".to_string()
                        } else {
                            format!("the files of this part ({}) do", names.join(", "))
                        },
                        short_list(&cols)
                    ),
                ));
            }
            for (i, out) in op.outputs(name).into_iter().enumerate() {
                computed.insert(
                    out,
                    Computed {
                        op: op.clone(),
                        output: i,
                    },
                );
            }
        }
        // The part's objects: the first source column the preset reads from the first file, or
        // the first file's first column.
        let referenced: Vec<String> = preset.columns.values().flat_map(Op::sources).collect();
        let reference = referenced
            .iter()
            .find(|c| files[0].has(c))
            .cloned()
            .or_else(|| files[0].columns().into_iter().next());
        let rows = match &reference {
            Some(c) => files[0].rows(c)?,
            None => 0,
        };
        // Every file of the part must describe the same objects.
        for (i, f) in files.iter().enumerate().skip(1) {
            let role = &preset.files[i];
            let cols: Vec<String> = referenced
                .iter()
                .chain(&role.same_rows)
                .filter(|c| f.has(c))
                .cloned()
                .collect();
            for c in &cols {
                let n = f.rows(c)?;
                if n != rows {
                    return Err(fail(
                        f.path(),
                        format!(
                            "its column '{c}' has {n} rows but {} has {rows} (column '{}'); the \
                             files of one part must hold the same objects in the same order",
                            primary.display(),
                            reference.as_deref().unwrap_or("?")
                        ),
                    ));
                }
            }
            for key in &role.same_rows {
                check_same_rows(preset, files[0].as_ref(), f.as_ref(), key, rows)?;
            }
        }
        Ok(Self {
            preset: preset.name.clone(),
            files,
            computed,
            rows,
        })
    }

    /// The part's files after the first (they are read too: resume keys include them).
    pub(super) fn side_files(&self) -> Vec<PathBuf> {
        self.files[1..]
            .iter()
            .map(|f| f.path().to_path_buf())
            .collect()
    }

    fn holder(&self, column: &str) -> Option<&dyn Part> {
        self.files
            .iter()
            .find(|f| f.has(column))
            .map(|f| f.as_ref())
    }

    fn fail(&self, column: &str, rows: &Range<usize>, message: String) -> Error {
        Error::ReadRows {
            path: self.files[0].path().to_path_buf(),
            dataset: column.to_string(),
            where_: format!(
                "rows {}..{} (survey preset '{}')",
                rows.start, rows.end, self.preset
            ),
            message,
        }
    }

    /// Describes a file column.
    fn describe_file(&self, column: &str) -> Result<(ColumnKind, Vec<usize>)> {
        let f = self
            .holder(column)
            .expect("checked at open: preset sources exist");
        let d = f.describe(column)?.expect("the holder holds it");
        let shape = match d.shape {
            Shape::Fixed(s) => s,
            Shape::FromData => f.sample_shape(column)?.unwrap_or_default(),
        };
        Ok((d.kind, shape))
    }

    /// Reads a file column's rows: values, row shape, presence.
    fn read_file(
        &self,
        column: &str,
        rows: Range<usize>,
    ) -> Result<(ColumnValues, Vec<usize>, Vec<bool>)> {
        let (kind, shape) = self.describe_file(column)?;
        let mut out = Column::empty(kind, false, shape, rows.len());
        self.holder(column)
            .expect("checked at open")
            .read(column, rows, &mut out)?;
        Ok((out.values, out.row_shape, out.present))
    }

    /// A float file column's rows (integers and booleans converted).
    fn read_floats(
        &self,
        column: &str,
        rows: Range<usize>,
    ) -> Result<(Vec<f32>, Vec<usize>, Vec<bool>)> {
        let (v, shape, present) = self.read_file(column, rows.clone())?;
        let v = match v {
            ColumnValues::F32(v) => v,
            ColumnValues::F64(v) => v.into_iter().map(|x| x as f32).collect(),
            ColumnValues::I64(v) => v.into_iter().map(|x| x as f32).collect(),
            ColumnValues::Bool(v) => v.into_iter().map(|x| f32::from(u8::from(x))).collect(),
            ColumnValues::Str(_) => {
                return Err(self.fail(column, &rows, "holds strings, not numbers".into()));
            }
        };
        Ok((v, shape, present))
    }

    fn describe_computed(&self, c: &Computed) -> Result<Described> {
        let fixed = |kind, shape| Described {
            kind,
            shape: Shape::Fixed(shape),
        };
        let scalar = |col: &str| -> Result<()> {
            let (k, s) = self.describe_file(col)?;
            if k == ColumnKind::Str || s.iter().product::<usize>() != 1 {
                return Err(Error::Shape {
                    path: self.files[0].path().to_path_buf(),
                    dataset: col.to_string(),
                    message: format!(
                        "survey preset '{}' needs one number per row here, found rows of shape \
                         {s:?} ({k:?})",
                        self.preset
                    ),
                });
            }
            Ok(())
        };
        Ok(match &c.op {
            Op::Copy { from } => {
                let (k, s) = self.describe_file(from)?;
                fixed(k, s)
            }
            Op::Multiply { from, by } => {
                let (_, s) = self.describe_file(from)?;
                for b in by {
                    scalar(b)?;
                }
                if by.len() > 1 && s.first() != Some(&by.len()) {
                    return Err(Error::Shape {
                        path: self.files[0].path().to_path_buf(),
                        dataset: from.clone(),
                        message: format!(
                            "survey preset '{}' scales its {} planes by {} columns ({}), but \
                             its rows have shape {s:?}",
                            self.preset,
                            s.first().copied().unwrap_or(0),
                            by.len(),
                            by.join(", ")
                        ),
                    });
                }
                fixed(ColumnKind::Float, s)
            }
            Op::EbvFromTransmission { from, .. } => {
                scalar(from)?;
                fixed(ColumnKind::Float, Vec::new())
            }
            Op::Constant { values } => fixed(ColumnKind::Str, vec![values.len()]),
            Op::Concat { from } => {
                let mut n = 0;
                for f in from {
                    let (_, s) = self.describe_file(f)?;
                    n += s.iter().product::<usize>();
                }
                fixed(ColumnKind::Float, vec![n])
            }
            Op::CoaddArms { pixels, .. } => {
                let kind = if c.output == 3 {
                    ColumnKind::Bool
                } else {
                    ColumnKind::Float
                };
                fixed(kind, vec![*pixels])
            }
        })
    }

    fn read_computed<'o>(
        &self,
        column: &str,
        c: &Computed,
        rows: Range<usize>,
        out: &'o mut Column,
    ) -> Result<()> {
        let n = rows.len();
        let floats = |values: &'o mut ColumnValues| -> Result<&'o mut Vec<f32>> {
            match values {
                ColumnValues::F32(v) => Ok(v),
                _ => Err(self.fail(column, &rows, "computed floats read as another type".into())),
            }
        };
        match &c.op {
            Op::Copy { from } => {
                // The computed column has the source's row shape (`describe_computed`).
                self.holder(from)
                    .expect("checked at open")
                    .read(from, rows, out)?;
            }
            Op::Multiply { from, by } => {
                let (mut v, shape, mut p) = self.read_floats(from, rows.clone())?;
                let row_len: usize = shape.iter().product();
                let plane = if by.len() > 1 {
                    row_len / by.len()
                } else {
                    row_len
                };
                for (b, col) in by.iter().enumerate() {
                    let (f, _, q) = self.read_floats(col, rows.clone())?;
                    for r in 0..n {
                        p[r] &= q[r];
                        let at = r * row_len + if by.len() > 1 { b * plane } else { 0 };
                        for x in &mut v[at..at + plane] {
                            *x *= f[r];
                        }
                    }
                }
                floats(&mut out.values)?.extend(v);
                out.present.extend(p);
            }
            Op::EbvFromTransmission { from, coefficient } => {
                let (t, _, p) = self.read_floats(from, rows.clone())?;
                floats(&mut out.values)?.extend(
                    t.iter()
                        .map(|&t| (-2.5 * f64::from(t).log10() / coefficient) as f32),
                );
                out.present.extend(p);
            }
            Op::Constant { values } => {
                let ColumnValues::Str(v) = &mut out.values else {
                    return Err(self.fail(column, &rows, "strings read as another type".into()));
                };
                for _ in 0..n {
                    v.extend(values.iter().cloned());
                }
                out.present.extend(std::iter::repeat_n(true, n));
            }
            Op::Concat { from } => {
                let parts: Vec<(Vec<f32>, Vec<usize>, Vec<bool>)> = from
                    .iter()
                    .map(|f| self.read_floats(f, rows.clone()))
                    .collect::<Result<_>>()?;
                let o = floats(&mut out.values)?;
                for r in 0..n {
                    for (v, s, _) in &parts {
                        let len: usize = s.iter().product();
                        o.extend_from_slice(&v[r * len..(r + 1) * len]);
                    }
                    out.present.push(parts.iter().all(|(_, _, p)| p[r]));
                }
            }
            Op::CoaddArms {
                arms,
                start,
                step,
                pixels,
            } => {
                let merged = self.coadd(column, arms, *start, *step, *pixels, rows.clone())?;
                match (c.output, &mut out.values) {
                    (3, ColumnValues::Bool(o)) => o.extend(merged.mask),
                    (i, ColumnValues::F32(o)) => o.extend(match i {
                        0 => merged.flux,
                        1 => merged.ivar,
                        _ => merged.lambda,
                    }),
                    _ => return Err(self.fail(column, &rows, "read as another type".into())),
                }
                out.present.extend(std::iter::repeat_n(true, n));
            }
        }
        Ok(())
    }

    /// Merges the arms of rows `rows` onto the grid (see [`Op::CoaddArms`]). Products f·ivar in
    /// `f32`, sums in `f64`, in arm order then pixel order.
    fn coadd(
        &self,
        column: &str,
        arms: &[String],
        start: f64,
        step: f64,
        pixels: usize,
        rows: Range<usize>,
    ) -> Result<Merged> {
        let n = rows.len();
        let mut num = vec![0f64; n * pixels];
        let mut wsum = vec![0f64; n * pixels];
        let mut good_any = vec![false; n * pixels];
        for arm in arms {
            let wname = format!("{arm}_WAVELENGTH");
            let mut wave = None;
            for f in &self.files {
                if let Some(w) = f.file_array(&wname)? {
                    wave = Some(w);
                    break;
                }
            }
            let wave = wave.expect("checked at open: the arrays exist");
            // Grid index of each arm pixel; it must fall on the grid.
            let mut idx = Vec::with_capacity(wave.len());
            for (j, &w) in wave.iter().enumerate() {
                let k = ((w - start) / step).round_ties_even();
                if !(0.0..pixels as f64).contains(&k) || (w - (start + k * step)).abs() > step / 4.0
                {
                    return Err(self.fail(
                        column,
                        &rows,
                        format!(
                            "{wname}[{j}] = {w} is not on the grid {start} + k × {step} \
                             (k < {pixels}) the preset merges the arms onto"
                        ),
                    ));
                }
                idx.push(k as usize);
            }
            let (flux, fs, _) = self.read_floats(&format!("{arm}_FLUX"), rows.clone())?;
            let (ivar, is, _) = self.read_floats(&format!("{arm}_IVAR"), rows.clone())?;
            let (mask, ms, _) = self.read_floats(&format!("{arm}_MASK"), rows.clone())?;
            for (name, s) in [("FLUX", &fs), ("IVAR", &is), ("MASK", &ms)] {
                if s.iter().product::<usize>() != wave.len() {
                    return Err(self.fail(
                        &format!("{arm}_{name}"),
                        &rows,
                        format!(
                            "rows of {} values but {wname} has {}",
                            s.iter().product::<usize>(),
                            wave.len()
                        ),
                    ));
                }
            }
            let len = wave.len();
            for r in 0..n {
                for j in 0..len {
                    let (f, iv, m) = (flux[r * len + j], ivar[r * len + j], mask[r * len + j]);
                    if m == 0.0 && iv > 0.0 {
                        let k = r * pixels + idx[j];
                        num[k] += f64::from(f * iv);
                        wsum[k] += f64::from(iv);
                        good_any[k] = true;
                    }
                }
            }
        }
        let lambda_row: Vec<f32> = (0..pixels)
            .map(|i| (((start + i as f64 * step) * 10.0).round_ties_even() / 10.0) as f32)
            .collect();
        Ok(Merged {
            flux: num
                .iter()
                .zip(&wsum)
                .map(|(&a, &w)| {
                    if w > 0.0 {
                        (a / w.max(1e-30)) as f32
                    } else {
                        0.0
                    }
                })
                .collect(),
            ivar: wsum.iter().map(|&w| w as f32).collect(),
            lambda: (0..n).flat_map(|_| lambda_row.iter().copied()).collect(),
            mask: good_any
                .iter()
                .zip(&wsum)
                .map(|(&g, &w)| !g || w < 1e-6)
                .collect(),
        })
    }
}

struct Merged {
    flux: Vec<f32>,
    ivar: Vec<f32>,
    lambda: Vec<f32>,
    mask: Vec<bool>,
}

fn op_name(op: &Op) -> &'static str {
    match op {
        Op::Copy { .. } => "copy",
        Op::Multiply { .. } => "multiply",
        Op::EbvFromTransmission { .. } => "ebv_from_transmission",
        Op::Constant { .. } => "constant",
        Op::Concat { .. } => "concat",
        Op::CoaddArms { .. } => "coadd_arms",
    }
}

/// At most 40 names, then a count.
fn short_list(names: &[String]) -> String {
    let shown: Vec<&str> = names.iter().take(40).map(String::as_str).collect();
    match names.len().saturating_sub(40) {
        0 => shown.join(", "),
        more => format!("{} … and {more} more", shown.join(", ")),
    }
}

/// The `key` column of `other` must equal the first file's, row by row.
fn check_same_rows(
    preset: &Preset,
    first: &dyn Part,
    other: &dyn Part,
    key: &str,
    rows: usize,
) -> Result<()> {
    let fail = |path: &Path, message: String| Error::Preset {
        preset: preset.name.clone(),
        path: path.to_path_buf(),
        message,
    };
    for f in [first, other] {
        if !f.has(key) {
            return Err(fail(
                f.path(),
                format!("has no column '{key}', which the preset matches its files by"),
            ));
        }
    }
    let read = |f: &dyn Part| -> Result<Vec<String>> {
        let d = f.describe(key)?.expect("checked: has it");
        let shape = match d.shape {
            Shape::Fixed(s) => s,
            Shape::FromData => f.sample_shape(key)?.unwrap_or_default(),
        };
        let mut out = Column::empty(d.kind, false, shape, rows);
        f.read(key, 0..rows, &mut out)?;
        Ok(match out.values {
            ColumnValues::F32(v) => v.iter().map(f32::to_string).collect(),
            ColumnValues::F64(v) => v.iter().map(f64::to_string).collect(),
            ColumnValues::I64(v) => v.iter().map(i64::to_string).collect(),
            ColumnValues::Bool(v) => v.iter().map(bool::to_string).collect(),
            ColumnValues::Str(v) => v,
        })
    };
    let (a, b) = (read(first)?, read(other)?);
    if let Some(r) = (0..a.len().min(b.len())).find(|&r| a[r] != b[r]) {
        return Err(fail(
            other.path(),
            format!(
                "row {r}: {key} = {} here but {} in {}; the files of one part must hold the same \
                 objects in the same order",
                b[r],
                a[r],
                first.path().display()
            ),
        ));
    }
    Ok(())
}

impl Part for PresetPart {
    fn path(&self) -> &Path {
        self.files[0].path()
    }

    fn units(&self, column: &str) -> Option<String> {
        match self.computed.get(column).map(|c| &c.op) {
            // A copy keeps its units; so does a column scaled by columns without units (the
            // Milky Way transmissions of the Legacy Survey presets).
            Some(Op::Copy { from }) => self.units(from),
            Some(Op::Multiply { from, by }) => by
                .iter()
                .all(|b| self.units(b).is_none_or(|u| u.trim().is_empty()))
                .then(|| self.units(from))
                .flatten(),
            Some(_) => None,
            None => self.holder(column).and_then(|f| f.units(column)),
        }
    }

    fn source_file(&self, column: &str) -> &Path {
        // A computed column comes from the file of its first source (its pixels or fluxes).
        let column = self
            .computed
            .get(column)
            .and_then(|c| c.op.sources().into_iter().next())
            .unwrap_or_else(|| column.to_string());
        self.holder(&column).map_or(self.path(), |f| f.path())
    }

    fn columns(&self) -> Vec<String> {
        let mut names: Vec<String> = self.files.iter().flat_map(|f| f.columns()).collect();
        names.extend(self.computed.keys().cloned());
        let mut seen = std::collections::BTreeSet::new();
        names.retain(|n| seen.insert(n.clone()));
        names
    }

    fn has(&self, column: &str) -> bool {
        self.computed.contains_key(column) || self.holder(column).is_some()
    }

    fn describe(&self, column: &str) -> Result<Option<Described>> {
        if let Some(c) = self.computed.get(column) {
            return self.describe_computed(c).map(Some);
        }
        match self.holder(column) {
            Some(f) => f.describe(column),
            None => Ok(None),
        }
    }

    fn sample_shape(&self, column: &str) -> Result<Option<Vec<usize>>> {
        if let Some(c) = self.computed.get(column) {
            return Ok(match self.describe_computed(c)?.shape {
                Shape::Fixed(s) => Some(s),
                Shape::FromData => None,
            });
        }
        match self.holder(column) {
            Some(f) => f.sample_shape(column),
            None => Ok(None),
        }
    }

    fn rows(&self, column: &str) -> Result<usize> {
        if self.computed.contains_key(column) {
            return Ok(self.rows);
        }
        self.holder(column)
            .map_or(Ok(self.rows), |f| f.rows(column))
    }

    fn read(&self, column: &str, rows: Range<usize>, out: &mut Column) -> Result<()> {
        if let Some(c) = self.computed.get(column) {
            return self.read_computed(column, c, rows, out);
        }
        self.holder(column)
            .expect("the catalogue reads only columns a part holds")
            .read(column, rows, out)
    }

    fn file_array(&self, name: &str) -> Result<Option<Vec<f64>>> {
        for f in &self.files {
            if let Some(a) = f.file_array(name)? {
                return Ok(Some(a));
            }
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn preset(toml_files: &[(&str, &str)]) -> Preset {
        Preset {
            name: "t".into(),
            files: toml_files
                .iter()
                .map(|(r, p)| FileRole {
                    role: r.to_string(),
                    pattern: p.to_string(),
                    object_axis: 0,
                    same_rows: Vec::new(),
                })
                .collect(),
            ..Preset::default()
        }
    }

    #[test]
    fn files_pair_by_the_text_the_star_matches() {
        assert_eq!(
            star_match("coadd-*.fits", "coadd-4-1.fits").as_deref(),
            Some("4-1")
        );
        assert_eq!(star_match("*cat.fits", "cat.fits").as_deref(), Some(""));
        assert_eq!(star_match("coadd-*.fits", "redrock-4.fits"), None);
        let p = preset(&[("coadd", "coadd-*.fits"), ("redrock", "redrock-*.fits")]);
        let paths: Vec<PathBuf> = [
            "d/redrock-b.fits",
            "d/coadd-a.fits",
            "d/coadd-b.fits",
            "e/redrock-a.fits",
        ]
        .iter()
        .map(PathBuf::from)
        .collect();
        let g = p.group(&paths).unwrap();
        assert_eq!(
            g,
            [
                vec![
                    PathBuf::from("d/coadd-b.fits"),
                    PathBuf::from("d/redrock-b.fits")
                ],
                vec![
                    PathBuf::from("d/coadd-a.fits"),
                    PathBuf::from("e/redrock-a.fits")
                ],
            ]
        );
        let e = p.group(&paths[..3]).unwrap_err().to_string();
        assert!(
            e.contains("coadd-a.fits") && e.contains("'redrock-a.fits'"),
            "{e}"
        );
        let e = p
            .group(&[PathBuf::from("coadd-a.fits"), PathBuf::from("coadd-a.fits")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("given twice"), "{e}");
        let e = p.group(&[PathBuf::from("x.fits")]).unwrap_err().to_string();
        assert!(e.contains("x.fits") && e.contains("matches none"), "{e}");
    }

    #[test]
    fn malformed_presets_are_refused() {
        let src = Path::new("p.toml");
        let mut p = preset(&[("a", "a-*-*.fits")]);
        assert!(
            p.validate(src)
                .unwrap_err()
                .to_string()
                .contains("exactly one")
        );
        p = preset(&[]);
        p.columns.insert(
            "coeff".into(),
            Op::Concat {
                from: vec!["x".into()],
            },
        );
        p.columns.insert(
            "y".into(),
            Op::Copy {
                from: "coeff".into(),
            },
        );
        assert!(
            p.validate(src)
                .unwrap_err()
                .to_string()
                .contains("computes")
        );
        p.columns.remove("y");
        p.optional.push("z".into());
        assert!(p.validate(src).unwrap_err().to_string().contains("'z'"));
    }
}
