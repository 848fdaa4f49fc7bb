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
//! | other metadata: a grid (JSON numbers) | field metadata | an image HDU `<column>.<key>` |
//! | other metadata | field metadata | a row of the `METADATA` table |
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
    /// posterior's `bin_edges`). FITS files hold them after the table ([`fits`]).
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Catalog;
    use crate::catalog::ColumnValues;

    /// Three rows of every type, with nulls, in two blocks: the fields and blocks.
    fn table() -> (Vec<Field>, Vec<Vec<Block>>) {
        let mut fields = vec![
            Field::new("id", Dtype::I64, vec![]),
            Field::new("vec", Dtype::F32, vec![2, 3]),
            Field::new("mask", Dtype::U64, vec![]),
            Field::new("x", Dtype::F64, vec![]),
            Field::new("n", Dtype::I64, vec![]),
            Field::new("flag", Dtype::Bool, vec![]),
            Field::new("name", Dtype::Str, vec![]),
        ];
        for f in &mut fields[3..] {
            f.nullable = true;
        }
        fields[6].width = 6;
        fields[1].units = Some("mag".into());
        let block = |rows: std::ops::Range<usize>, present: Vec<bool>| {
            let r: Vec<usize> = rows.collect();
            let p = Some(present);
            vec![
                Block::full(Values::I64(r.iter().map(|&i| i as i64 + 10).collect())),
                Block::full(Values::F32(
                    r.iter()
                        .flat_map(|&i| (0..6).map(move |k| (i * 6 + k) as f32))
                        .collect(),
                )),
                Block::full(Values::U64(
                    r.iter().map(|&i| (1u64 << 48) + i as u64).collect(),
                )),
                Block {
                    values: Values::F64(r.iter().map(|&i| 0.1 + i as f64).collect()),
                    present: p.clone(),
                },
                Block {
                    values: Values::I64(r.iter().map(|&i| -(i as i64)).collect()),
                    present: p.clone(),
                },
                Block {
                    values: Values::Bool(r.iter().map(|&i| i % 2 == 0).collect()),
                    present: p.clone(),
                },
                Block {
                    values: Values::Str(r.iter().map(|&i| "ab".repeat(i + 1)).collect()),
                    present: p,
                },
            ]
        };
        (
            fields,
            vec![block(0..2, vec![true, false]), block(2..3, vec![true])],
        )
    }

    fn read(path: &std::path::Path, column: &str) -> crate::Column {
        let mut cat = Catalog::open(&[path.display().to_string()]).unwrap();
        cat.size_by(&["id".to_string()]).unwrap();
        assert_eq!(cat.n_rows(), 3);
        cat.read_f64(column, 0..3).unwrap()
    }

    /// What every format must give back.
    fn check_common(path: &std::path::Path) {
        assert_eq!(read(path, "id").values, ColumnValues::I64(vec![10, 11, 12]));
        let v = read(path, "vec");
        assert_eq!(v.row_shape, [2, 3]);
        assert_eq!(
            v.values,
            ColumnValues::F64((0..18).map(|k| k as f64).collect())
        );
        let m = read(path, "mask");
        let want: Vec<i64> = (0..3).map(|i| (1i64 << 48) + i).collect();
        assert_eq!(m.values, ColumnValues::I64(want));
    }

    #[test]
    fn parquet_round_trips_shapes_types_and_nulls() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.parquet");
        let (fields, blocks) = table();
        let file = std::fs::File::create(&path).unwrap();
        let mut t =
            parquet::ParquetTable::new(file, fields, vec![("aion-hpc".into(), "{}".into())])
                .unwrap();
        for (b, rows) in blocks.iter().zip([2, 1]) {
            t.write(rows, b).unwrap();
        }
        t.finish().unwrap();
        assert_eq!(parquet::marker(&path).unwrap().as_deref(), Some("{}"));
        check_common(&path);
        for c in ["x", "n", "flag", "name"] {
            assert_eq!(read(&path, c).present, [true, false, true], "{c}");
        }
        let x = read(&path, "x").values;
        let ColumnValues::F64(x) = x else {
            panic!("{x:?}")
        };
        assert_eq!((x[0], x[2]), (0.1, 2.1));
        assert_eq!(
            read(&path, "name").values,
            ColumnValues::Str(vec!["ab".into(), String::new(), "ababab".into()])
        );
        // A block that does not fit its field is refused, naming the column.
        let (fields, mut blocks) = table();
        blocks[0][1] = Block::full(Values::F32(vec![0.0; 5]));
        let file = std::fs::File::create(dir.path().join("bad.parquet")).unwrap();
        let mut t = parquet::ParquetTable::new(file, fields, vec![]).unwrap();
        let err = t.write(2, &blocks[0]).unwrap_err();
        assert!(err.contains("'vec'"), "{err}");
    }

    #[test]
    fn fits_round_trips_shapes_types_and_nulls() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.fits");
        let (fields, blocks) = table();
        let keys = [(
            "AIONPROV",
            "{\"long\": \"".to_string() + &"x".repeat(200) + "\"}",
            "",
        )];
        let mut t = fits::FitsTable::create(&path, "AION", fields, "aion-hpc test", &keys).unwrap();
        for (b, rows) in blocks.iter().zip([2, 1]) {
            t.write(rows, b).unwrap();
        }
        assert_eq!(t.rows(), 3);
        t.finish().unwrap();
        assert_eq!(
            fits::marker(&path).unwrap().as_deref(),
            Some("aion-hpc test")
        );
        check_common(&path);
        let x = read(&path, "x").values;
        let ColumnValues::F64(x) = x else {
            panic!("{x:?}")
        };
        assert!(x[0] == 0.1 && x[1].is_nan() && x[2] == 2.1, "{x:?}");
        assert_eq!(
            read(&path, "n").values,
            ColumnValues::I64(vec![0, fits::INT_NULL, -2])
        );
        assert_eq!(
            read(&path, "name").values,
            ColumnValues::Str(vec!["ab".into(), String::new(), "ababab".into()])
        );
    }
}
