//! Parquet parts (arrow-rs `parquet`): plain Parquet files and HATS partition files.
//!
//! Columns are the file's top-level columns, and the fields of struct columns as
//! `<struct>_<field>` (also for a list of structs, the Multimodal Universe's HATS layout of
//! per-band images): `image.flux` is `image_flux`, `spectrum.lambda` is `spectrum_lambda`, so an
//! MMU HATS catalogue has the column names of the MMU HDF5 files. A row may hold nested lists of
//! any depth (list, large list, fixed-size list); all rows of a column must have one shape (fixed
//! by the schema for fixed-size lists, else checked row by row against the first non-null row).
//! A null row is absent (not an error); a read decodes only the leaf columns it needs, and only
//! the row groups that hold the rows asked for.

use std::collections::BTreeMap;
use std::fs::File;
use std::ops::Range;
use std::path::{Path, PathBuf};

use arrow_array::cast::AsArray;
use arrow_array::types::{Float32Type, Float64Type, Int64Type};
use arrow_array::{Array, ArrayRef};
use arrow_buffer::NullBuffer;
use arrow_cast::{CastOptions, cast_with_options};
use arrow_schema::{DataType, Fields};
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReaderBuilder, RowSelection,
    RowSelector,
};

use super::{Column, ColumnKind, ColumnValues, Described, Format, Part, Shape, pad, shape_error};
use crate::error::{Error, Result};

/// A column of the file: where its values are and what they are.
struct Leaf {
    /// Struct fields from the root column down to the values.
    fields: Vec<String>,
    /// The Parquet leaf columns to decode.
    leaves: Vec<usize>,
    /// Value kind, or why the column cannot be read.
    kind: std::result::Result<ColumnKind, String>,
    /// The row shape, when every list level has a fixed size.
    fixed: Option<Vec<usize>>,
}

/// One Parquet file.
pub(super) struct ParquetPart {
    path: PathBuf,
    meta: ArrowReaderMetadata,
    rows: usize,
    names: Vec<String>,
    columns: BTreeMap<String, Leaf>,
}

impl ParquetPart {
    /// Reads the footer of `path` (a Parquet file, or a HATS partition file when `format` is
    /// [`Format::Hats`], which only changes messages).
    pub(super) fn open(path: &Path, format: Format) -> Result<Self> {
        let fail = |message: String| Error::OpenAs {
            path: path.to_path_buf(),
            format: if format == Format::Hats {
                Format::Parquet
            } else {
                format
            },
            message,
        };
        let file = File::open(path).map_err(|e| fail(e.to_string()))?;
        let meta = ArrowReaderMetadata::load(&file, ArrowReaderOptions::new())
            .map_err(|e| fail(e.to_string()))?;
        let rows = usize::try_from(meta.metadata().file_metadata().num_rows())
            .map_err(|_| fail("negative row count".into()))?;
        let mut found = Vec::new();
        let mut next_leaf = 0;
        for f in meta.schema().fields() {
            collect(
                f.name().clone(),
                vec![f.name().clone()],
                &[],
                f.data_type(),
                &mut next_leaf,
                &mut found,
            );
        }
        let mut names = Vec::with_capacity(found.len());
        let mut columns = BTreeMap::new();
        for (name, leaf) in found {
            // A top-level column shadows a struct field of the same flattened name.
            if let std::collections::btree_map::Entry::Vacant(e) = columns.entry(name) {
                names.push(e.key().clone());
                e.insert(leaf);
            }
        }
        Ok(Self {
            path: path.to_path_buf(),
            meta,
            rows,
            names,
            columns,
        })
    }

    fn leaf(&self, column: &str) -> &Leaf {
        &self.columns[column]
    }

    fn read_error(&self, column: &str, where_: String, message: impl ToString) -> Error {
        Error::ReadRows {
            path: self.path.clone(),
            dataset: column.to_string(),
            where_,
            message: message.to_string(),
        }
    }

    /// The root arrays (one per record batch) holding rows `rows` of `column`'s leaves.
    fn read_roots(&self, column: &str, rows: Range<usize>, batch: usize) -> Result<Vec<ArrayRef>> {
        let fail = |e: &dyn std::fmt::Display| {
            self.read_error(column, format!("rows {}..{}", rows.start, rows.end), e)
        };
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let leaf = self.leaf(column);
        let file = File::open(&self.path).map_err(|e| fail(&e))?;
        let schema = self.meta.parquet_schema();
        let mask = ProjectionMask::leaves(schema, leaf.leaves.iter().copied());
        // Only the row groups that overlap `rows`, and inside them only those rows.
        let mut groups = Vec::new();
        let (mut start, mut first, mut total) = (0usize, None, 0usize);
        for (i, g) in self.meta.metadata().row_groups().iter().enumerate() {
            let n = usize::try_from(g.num_rows()).unwrap_or(0);
            if start < rows.end && start + n > rows.start {
                groups.push(i);
                first.get_or_insert(start);
                total += n;
            }
            start += n;
        }
        let skip = rows.start - first.unwrap_or(rows.start);
        let selection = RowSelection::from(vec![
            RowSelector::skip(skip),
            RowSelector::select(rows.len()),
            RowSelector::skip(total.saturating_sub(skip + rows.len())),
        ]);
        let reader = ParquetRecordBatchReaderBuilder::new_with_metadata(file, self.meta.clone())
            .with_projection(mask)
            .with_row_groups(groups)
            .with_row_selection(selection)
            .with_batch_size(batch.max(1))
            .build()
            .map_err(|e| fail(&e))?;
        let mut out = Vec::new();
        let mut got = 0;
        for b in reader {
            let b = b.map_err(|e| fail(&e))?;
            got += b.num_rows();
            out.push(b.column(0).clone());
        }
        if got != rows.len() {
            return Err(fail(&format!("{got} rows read, expected {}", rows.len())));
        }
        Ok(out)
    }
}

impl Part for ParquetPart {
    fn path(&self) -> &Path {
        &self.path
    }

    fn units(&self, column: &str) -> Option<String> {
        // Field metadata `unit` (as aion-export writes it) on the column's top-level field.
        let top = self.columns.get(column)?.fields.first()?;
        let schema = self.meta.schema();
        let field = schema.field_with_name(top).ok()?;
        field.metadata().get("unit").cloned()
    }

    fn columns(&self) -> Vec<String> {
        self.names.clone()
    }

    fn has(&self, column: &str) -> bool {
        self.columns.contains_key(column)
    }

    fn describe(&self, column: &str) -> Result<Option<Described>> {
        let Some(leaf) = self.columns.get(column) else {
            return Ok(None);
        };
        let kind = leaf
            .kind
            .clone()
            .map_err(|m| shape_error(&self.path, column, &m))?;
        let shape = match &leaf.fixed {
            Some(s) => Shape::Fixed(s.clone()),
            None => Shape::FromData,
        };
        Ok(Some(Described { kind, shape }))
    }

    fn sample_shape(&self, column: &str) -> Result<Option<Vec<usize>>> {
        let step = 1024;
        let mut at = 0;
        while at < self.rows {
            let rows = at..(at + step).min(self.rows);
            for root in self.read_roots(column, rows.clone(), step)? {
                let nested = Nested::of(&root, &self.leaf(column).fields[1..]).map_err(|m| {
                    self.read_error(column, format!("rows {}..{}", rows.start, rows.end), m)
                })?;
                if let Some(r) = nested.valid.iter().position(|&v| v) {
                    return Ok(Some(nested.first_shape(r)));
                }
            }
            at = rows.end;
        }
        Ok(None)
    }

    fn rows(&self, _column: &str) -> Result<usize> {
        Ok(self.rows)
    }

    fn read(&self, column: &str, rows: Range<usize>, out: &mut Column) -> Result<()> {
        let mut first = rows.start;
        for root in self.read_roots(column, rows.clone(), rows.len())? {
            let nested = Nested::of(&root, &self.leaf(column).fields[1..]).map_err(|m| {
                self.read_error(column, format!("rows {}..{}", rows.start, rows.end), m)
            })?;
            nested
                .append(&out.row_shape, &mut out.values, &mut out.present)
                .map_err(|(r, m)| self.read_error(column, format!("row {}", first + r), m))?;
            first += root.len();
        }
        Ok(())
    }
}

/// Adds the columns of field `name` (struct fields below `fields`, under list levels `outer`).
fn collect(
    name: String,
    fields: Vec<String>,
    outer: &[Option<usize>],
    dt: &DataType,
    next_leaf: &mut usize,
    out: &mut Vec<(String, Leaf)>,
) {
    let (dims, inner) = list_levels(dt);
    if let DataType::Struct(children) = inner {
        let outer: Vec<Option<usize>> = outer.iter().copied().chain(dims).collect();
        for c in children {
            let mut f = fields.clone();
            f.push(c.name().clone());
            collect(
                format!("{name}_{}", c.name()),
                f,
                &outer,
                c.data_type(),
                next_leaf,
                out,
            );
        }
        return;
    }
    let n = leaf_count(dt);
    let all: Vec<Option<usize>> = outer.iter().copied().chain(dims).collect();
    out.push((
        name,
        Leaf {
            fields,
            leaves: (*next_leaf..*next_leaf + n).collect(),
            kind: kind_of(inner),
            fixed: all.into_iter().collect(),
        },
    ));
    *next_leaf += n;
}

/// The list levels of `dt` (their fixed size, if any) and the type below them.
fn list_levels(dt: &DataType) -> (Vec<Option<usize>>, &DataType) {
    let mut dims = Vec::new();
    let mut t = dt;
    loop {
        t = match t {
            DataType::List(f) | DataType::LargeList(f) => {
                dims.push(None);
                f.data_type()
            }
            DataType::FixedSizeList(f, k) => {
                dims.push(usize::try_from(*k).ok());
                f.data_type()
            }
            _ => return (dims, t),
        };
    }
}

/// Parquet leaf columns under a field of type `dt` (in schema order, as arrow-rs maps them).
fn leaf_count(dt: &DataType) -> usize {
    match dt {
        DataType::Struct(children) => fields_leaves(children),
        DataType::List(f)
        | DataType::LargeList(f)
        | DataType::FixedSizeList(f, _)
        | DataType::Map(f, _) => leaf_count(f.data_type()),
        _ => 1,
    }
}

fn fields_leaves(fields: &Fields) -> usize {
    fields.iter().map(|f| leaf_count(f.data_type())).sum()
}

fn kind_of(dt: &DataType) -> std::result::Result<ColumnKind, String> {
    Ok(match dt {
        DataType::Float16
        | DataType::Float32
        | DataType::Float64
        | DataType::Decimal128(..)
        | DataType::Decimal256(..) => ColumnKind::Float,
        DataType::Int8
        | DataType::Int16
        | DataType::Int32
        | DataType::Int64
        | DataType::UInt8
        | DataType::UInt16
        | DataType::UInt32
        | DataType::UInt64 => ColumnKind::Int,
        DataType::Boolean => ColumnKind::Bool,
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => ColumnKind::Str,
        DataType::Dictionary(_, v) => return kind_of(v),
        other => {
            return Err(format!(
                "holds values of type {other}, which cannot be read"
            ));
        }
    })
}

/// A batch of one column's rows as list levels over a flat array of leaf values.
struct Nested {
    /// Per row: whether it has a value (neither it nor an enclosing struct is null).
    valid: Vec<bool>,
    /// Per list level, outermost first: element `j` of the level above spans elements
    /// `bounds[j]..bounds[j + 1]` below (the last level indexes the leaf values).
    bounds: Vec<Vec<usize>>,
    /// Per list level: nulls among its elements (a null inside a row is an error).
    nulls: Vec<Option<NullBuffer>>,
    leaf: ArrayRef,
}

impl Nested {
    /// Walks `root` down through struct `fields` and every list level.
    fn of(root: &ArrayRef, fields: &[String]) -> std::result::Result<Self, String> {
        let mut valid = vec![true; root.len()];
        let mut bounds: Vec<Vec<usize>> = Vec::new();
        let mut nulls: Vec<Option<NullBuffer>> = Vec::new();
        let mut cur = root.clone();
        let mut fields = fields;
        loop {
            let nested = matches!(
                cur.data_type(),
                DataType::List(_)
                    | DataType::LargeList(_)
                    | DataType::FixedSizeList(..)
                    | DataType::Struct(_)
            );
            // Nulls of the rows themselves (also of a struct they are in, or of a scalar): the
            // row is absent. Nulls of lists or structs inside a row: recorded for the checks.
            // Nulls of values inside a row: handled per value when copied.
            if let Some(n) = cur.logical_nulls().filter(|n| n.null_count() > 0) {
                match nulls.last_mut() {
                    None => valid.iter_mut().zip(n.iter()).for_each(|(v, ok)| *v &= ok),
                    Some(last) if nested => {
                        *last = Some(match last.take() {
                            Some(prev) => NullBuffer::new(prev.inner() & n.inner()),
                            None => n,
                        })
                    }
                    Some(_) => {}
                }
            }
            let next = match cur.data_type() {
                DataType::List(_) => {
                    let l = cur.as_list::<i32>();
                    bounds.push(l.value_offsets().iter().map(|&o| o as usize).collect());
                    l.values().clone()
                }
                DataType::LargeList(_) => {
                    let l = cur.as_list::<i64>();
                    bounds.push(l.value_offsets().iter().map(|&o| o as usize).collect());
                    l.values().clone()
                }
                DataType::FixedSizeList(_, k) => {
                    let l = cur.as_fixed_size_list();
                    let k = *k as usize;
                    bounds.push((0..=l.len()).map(|i| i * k).collect());
                    l.values().clone()
                }
                DataType::Struct(_) => {
                    let Some((f, rest)) = fields.split_first() else {
                        return Err("is a struct; name one of its fields".into());
                    };
                    fields = rest;
                    cur = cur
                        .as_struct()
                        .column_by_name(f)
                        .ok_or_else(|| format!("has no field '{f}'"))?
                        .clone();
                    continue;
                }
                _ => break,
            };
            nulls.push(None);
            cur = next;
        }
        Ok(Self {
            valid,
            bounds,
            nulls,
            leaf: cur,
        })
    }

    /// Shape of row `r`: the length of its first element at each level.
    fn first_shape(&self, r: usize) -> Vec<usize> {
        let mut j = r;
        self.bounds
            .iter()
            .map(|b| {
                let len = b[j + 1] - b[j];
                j = b[j];
                len
            })
            .collect()
    }

    /// The leaf values of row `r`, checking that it has shape `dims` everywhere.
    fn leaf_range(&self, r: usize, dims: &[usize]) -> std::result::Result<Range<usize>, String> {
        if dims.len() != self.bounds.len() {
            return Err(format!(
                "holds {}-D values per row here, but rows of shape {dims:?} elsewhere",
                self.bounds.len()
            ));
        }
        let (mut a, mut b) = (r, r + 1);
        for (k, (bounds, &d)) in self.bounds.iter().zip(dims).enumerate() {
            for j in a..b {
                let len = bounds[j + 1] - bounds[j];
                if len != d {
                    return Err(format!(
                        "has {len} values on axis {k} where every row has {d} (row shape {dims:?})"
                    ));
                }
                if k > 0 && self.nulls[k - 1].as_ref().is_some_and(|n| n.is_null(j)) {
                    return Err(format!("has a null list inside the row (axis {k})"));
                }
            }
            (a, b) = (bounds[a], bounds[b]);
        }
        Ok(a..b)
    }

    /// Appends every row (of shape `dims`) to `out`; null rows are padded and not `present`.
    /// Errors carry the batch-local row.
    fn append(
        &self,
        dims: &[usize],
        out: &mut ColumnValues,
        present: &mut Vec<bool>,
    ) -> std::result::Result<(), (usize, String)> {
        let row_len: usize = dims.iter().product();
        let to = match out {
            ColumnValues::F32(_) => DataType::Float32,
            ColumnValues::F64(_) => DataType::Float64,
            ColumnValues::I64(_) => DataType::Int64,
            ColumnValues::Bool(_) => DataType::Boolean,
            ColumnValues::Str(_) => DataType::Utf8,
        };
        let strict = CastOptions {
            safe: false,
            ..Default::default()
        };
        let leaf = cast_with_options(&self.leaf, &to, &strict).map_err(|e| (0, e.to_string()))?;
        for (r, &valid) in self.valid.iter().enumerate() {
            if !valid {
                present.push(false);
                pad(out, row_len);
                continue;
            }
            let range = self.leaf_range(r, dims).map_err(|m| (r, m))?;
            present.push(true);
            match out {
                ColumnValues::F32(v) => {
                    let a = leaf.as_primitive::<Float32Type>();
                    if a.null_count() == 0 {
                        v.extend_from_slice(&a.values()[range]);
                    } else {
                        v.extend(range.map(|i| if a.is_valid(i) { a.value(i) } else { f32::NAN }));
                    }
                }
                ColumnValues::F64(v) => {
                    let a = leaf.as_primitive::<Float64Type>();
                    if a.null_count() == 0 {
                        v.extend_from_slice(&a.values()[range]);
                    } else {
                        v.extend(range.map(|i| if a.is_valid(i) { a.value(i) } else { f64::NAN }));
                    }
                }
                ColumnValues::I64(v) => {
                    let a = leaf.as_primitive::<Int64Type>();
                    if let Some(i) = range.clone().find(|&i| a.is_null(i)) {
                        return Err((r, format!("null integer at value {}", i - range.start)));
                    }
                    v.extend_from_slice(&a.values()[range]);
                }
                ColumnValues::Bool(v) => {
                    let a = leaf.as_boolean();
                    v.extend(range.map(|i| a.is_valid(i) && a.value(i)));
                }
                ColumnValues::Str(v) => {
                    let a = leaf.as_string::<i32>();
                    v.extend(range.map(|i| {
                        if a.is_valid(i) {
                            a.value(i).trim_end_matches(['\0', ' ']).to_string()
                        } else {
                            String::new()
                        }
                    }));
                }
            }
        }
        Ok(())
    }
}
