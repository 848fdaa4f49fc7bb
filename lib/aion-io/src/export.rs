//! Tables for the tools astronomers use, written block by block (memory bounded): Parquet files
//! through arrow-rs ([`parquet::ParquetTable`], also the partition files of a HATS catalogue)
//! and FITS binary tables through cfitsio ([`fits::FitsTable`]). `aion-export` fills them with
//! the per-object datasets of an aion-hpc output joined with catalogue columns.
//!
//! A table is a list of [`Field`]s (name, type, shape of one row, units, description) and is
//! written in blocks of rows, one [`Block`] per field. How fields map to each format
//! (`docs/hdf5-schema.md`, "Export"):
//!
//! | field | Parquet | FITS |
//! |---|---|---|
//! | scalar | a column of the type | `1E`, `1D`, `1K`, `1B`, `1L`, `wA` |
//! | row shape `[a, b, …]` | nested fixed-size lists (`a` lists of `b` values) | a vector column of `a·b·…` values, `TDIMn = (…, b, a)` |
//! | units, description | field metadata `unit`, `description` | `TUNITn`, the comment of `TTYPEn` |
//! | no value (catalogue null) | null | NaN (floats), `TNULLn` (integers), `F`/undefined (logicals), `""` |
//! | `uint64` | `uint64` | `1K` with `TZEROn = 2^63` (read as `uint64` by astropy) |

pub mod fits;
pub mod parquet;

use std::collections::BTreeMap;

/// Type of the values of a field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dtype {
    /// `float32`.
    F32,
    /// `float64`.
    F64,
    /// `int64`.
    I64,
    /// `uint64` (flag masks).
    U64,
    /// `uint8`.
    U8,
    /// Booleans.
    Bool,
    /// UTF-8 strings.
    Str,
}

/// One column of an exported table.
#[derive(Debug, Clone, PartialEq)]
pub struct Field {
    /// Column name.
    pub name: String,
    /// Value type.
    pub dtype: Dtype,
    /// Shape of one row (`[]`: a scalar per row).
    pub row_shape: Vec<usize>,
    /// Units in the notation of astropy's `Unit()` and FITS `TUNIT` (`""`: dimensionless);
    /// `None`: not known.
    pub units: Option<String>,
    /// What the column holds, in words.
    pub description: Option<String>,
    /// Whether rows may have no value ([`Block::present`]).
    pub nullable: bool,
    /// Strings (FITS only): the longest value, in bytes (at least 1).
    pub width: usize,
    /// More key-value metadata (Parquet field metadata; JSON values such as `bit_names` or a
    /// posterior's `bin_edges`). FITS tables leave them out.
    pub metadata: BTreeMap<String, String>,
}

impl Field {
    /// A field of `dtype` and `row_shape`, without units, description or nulls.
    pub fn new(name: impl Into<String>, dtype: Dtype, row_shape: Vec<usize>) -> Self {
        Self {
            name: name.into(),
            dtype,
            row_shape,
            units: None,
            description: None,
            nullable: false,
            width: 1,
            metadata: BTreeMap::new(),
        }
    }

    /// Values per row.
    pub fn row_len(&self) -> usize {
        self.row_shape.iter().product()
    }
}

/// Values of a block of rows of one field, row-major.
#[derive(Debug, Clone, PartialEq)]
pub enum Values {
    /// `float32`.
    F32(Vec<f32>),
    /// `float64`.
    F64(Vec<f64>),
    /// `int64`.
    I64(Vec<i64>),
    /// `uint64`.
    U64(Vec<u64>),
    /// `uint8`.
    U8(Vec<u8>),
    /// Booleans.
    Bool(Vec<bool>),
    /// Strings.
    Str(Vec<String>),
}

impl Values {
    /// Number of values.
    pub fn len(&self) -> usize {
        match self {
            Self::F32(v) => v.len(),
            Self::F64(v) => v.len(),
            Self::I64(v) => v.len(),
            Self::U64(v) => v.len(),
            Self::U8(v) => v.len(),
            Self::Bool(v) => v.len(),
            Self::Str(v) => v.len(),
        }
    }

    /// Whether there are no values.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The type of the values.
    pub fn dtype(&self) -> Dtype {
        match self {
            Self::F32(_) => Dtype::F32,
            Self::F64(_) => Dtype::F64,
            Self::I64(_) => Dtype::I64,
            Self::U64(_) => Dtype::U64,
            Self::U8(_) => Dtype::U8,
            Self::Bool(_) => Dtype::Bool,
            Self::Str(_) => Dtype::Str,
        }
    }
}

/// A block of rows of one field.
#[derive(Debug, Clone, PartialEq)]
pub struct Block {
    /// Values of every row (rows without a value hold a default).
    pub values: Values,
    /// Per row, whether it has a value; `None`: every row has one.
    pub present: Option<Vec<bool>>,
}

impl Block {
    /// A block whose rows all have values.
    pub fn full(values: Values) -> Self {
        Self {
            values,
            present: None,
        }
    }

    /// Checks the block against `field` for `rows` rows (type, length, presence); a message
    /// naming the field otherwise.
    fn check(&self, field: &Field, rows: usize) -> Result<(), String> {
        let name = &field.name;
        if self.values.dtype() != field.dtype {
            return Err(format!(
                "column '{name}': {:?} values for a {:?} column",
                self.values.dtype(),
                field.dtype
            ));
        }
        if self.values.len() != rows * field.row_len() {
            return Err(format!(
                "column '{name}': {} values for {rows} rows of {} values",
                self.values.len(),
                field.row_len()
            ));
        }
        if let Some(p) = &self.present {
            if p.len() != rows {
                return Err(format!(
                    "column '{name}': {} presence flags for {rows} rows",
                    p.len()
                ));
            }
            if !field.nullable && p.iter().any(|&v| !v) {
                return Err(format!("column '{name}': a row without a value"));
            }
        }
        Ok(())
    }
}

/// Checks a block of `rows` rows against the fields, one block per field.
fn check_blocks(fields: &[Field], blocks: &[Block], rows: usize) -> Result<(), String> {
    if blocks.len() != fields.len() {
        return Err(format!(
            "{} blocks for {} columns",
            blocks.len(),
            fields.len()
        ));
    }
    fields
        .iter()
        .zip(blocks)
        .try_for_each(|(f, b)| b.check(f, rows))
}
