//! Parquet tables through arrow-rs: one row group per block, snappy-compressed (pyarrow's
//! default), the schema's fields carrying `unit` and `description` metadata, the file carrying
//! the key [`MARKER_KEY`] (who wrote it, from what) that tells our files from others.

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use arrow_array::{
    ArrayRef, BooleanArray, FixedSizeListArray, Float32Array, Float64Array, Int64Array,
    RecordBatch, StringArray, UInt8Array, UInt64Array,
};
use arrow_buffer::{BooleanBuffer, NullBuffer};
use arrow_schema::{DataType, Field as ArrowField, Schema, SchemaRef};
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::metadata::KeyValue;
use parquet::file::properties::WriterProperties;
use parquet::file::reader::{FileReader, SerializedFileReader};

use super::{Block, Dtype, Field, Values, check_blocks};

/// Key of the file metadata entry that marks a Parquet file written by an aion-hpc tool (its
/// value: JSON provenance).
pub const MARKER_KEY: &str = "aion-hpc";

/// A Parquet file being written.
pub struct ParquetTable<W: Write + Send> {
    fields: Vec<Field>,
    schema: SchemaRef,
    writer: ArrowWriter<W>,
}

/// The arrow type of a field's single values.
fn value_type(dtype: Dtype) -> DataType {
    match dtype {
        Dtype::F32 => DataType::Float32,
        Dtype::F64 => DataType::Float64,
        Dtype::I64 => DataType::Int64,
        Dtype::U64 => DataType::UInt64,
        Dtype::U8 => DataType::UInt8,
        Dtype::Bool => DataType::Boolean,
        Dtype::Str => DataType::Utf8,
    }
}

/// The element field of the list levels below dimension `level` of `row_shape`.
fn item_field(dtype: Dtype, dims: &[usize]) -> ArrowField {
    ArrowField::new("item", list_type(dtype, dims), false)
}

/// The arrow type of values of shape `dims`: nested fixed-size lists, outermost dimension first.
fn list_type(dtype: Dtype, dims: &[usize]) -> DataType {
    match dims.split_first() {
        None => value_type(dtype),
        Some((&n, rest)) => DataType::FixedSizeList(Arc::new(item_field(dtype, rest)), n as i32),
    }
}

/// The arrow schema of `fields`, with `metadata` (file level).
pub fn schema(fields: &[Field], metadata: HashMap<String, String>) -> SchemaRef {
    let arrow: Vec<ArrowField> = fields
        .iter()
        .map(|f| {
            let mut meta: HashMap<String, String> = f.metadata.clone().into_iter().collect();
            if let Some(u) = &f.units {
                meta.insert("unit".into(), u.clone());
            }
            if let Some(d) = &f.description {
                meta.insert("description".into(), d.clone());
            }
            ArrowField::new(&f.name, list_type(f.dtype, &f.row_shape), f.nullable)
                .with_metadata(meta)
        })
        .collect();
    Arc::new(Schema::new_with_metadata(arrow, metadata))
}

/// The flat array of a block's values, with `nulls`.
fn flat(values: &Values, nulls: Option<NullBuffer>) -> ArrayRef {
    match values {
        Values::F32(v) => Arc::new(Float32Array::new(v.clone().into(), nulls)),
        Values::F64(v) => Arc::new(Float64Array::new(v.clone().into(), nulls)),
        Values::I64(v) => Arc::new(Int64Array::new(v.clone().into(), nulls)),
        Values::U64(v) => Arc::new(UInt64Array::new(v.clone().into(), nulls)),
        Values::U8(v) => Arc::new(UInt8Array::new(v.clone().into(), nulls)),
        Values::Bool(v) => Arc::new(BooleanArray::new(BooleanBuffer::from(v.as_slice()), nulls)),
        Values::Str(v) => {
            let valid = |i: usize| nulls.as_ref().is_none_or(|n| n.is_valid(i));
            Arc::new(StringArray::from_iter(
                v.iter()
                    .enumerate()
                    .map(|(i, s)| valid(i).then_some(s.as_str())),
            ))
        }
    }
}

/// The column of `block` (rows of `field`'s shape): the flat values wrapped in one fixed-size
/// list level per dimension, innermost first; nulls at the row level.
fn column(field: &Field, block: &Block) -> ArrayRef {
    let nulls = block.present.clone().map(NullBuffer::from);
    let dims = &field.row_shape;
    if dims.is_empty() {
        return flat(&block.values, nulls);
    }
    let mut array = flat(&block.values, None);
    for level in (0..dims.len()).rev() {
        let row_nulls = if level == 0 { nulls.clone() } else { None };
        array = Arc::new(FixedSizeListArray::new(
            Arc::new(item_field(field.dtype, &dims[level + 1..])),
            dims[level] as i32,
            array,
            row_nulls,
        ));
    }
    array
}

impl<W: Write + Send> ParquetTable<W> {
    /// Starts a table of `fields` on `out`; `metadata`: file-level key-value metadata (ours
    /// carries [`MARKER_KEY`]).
    pub fn new(
        out: W,
        fields: Vec<Field>,
        metadata: Vec<(String, String)>,
    ) -> Result<Self, String> {
        let schema = schema(&fields, HashMap::new());
        let kv = metadata
            .into_iter()
            .map(|(k, v)| KeyValue::new(k, v))
            .collect();
        let props = WriterProperties::builder()
            .set_compression(Compression::SNAPPY)
            .set_max_row_group_row_count(None)
            .set_key_value_metadata(Some(kv))
            .set_created_by(format!(
                "aion-hpc version {} (arrow-rs parquet)",
                env!("CARGO_PKG_VERSION")
            ))
            .build();
        let writer =
            ArrowWriter::try_new(out, schema.clone(), Some(props)).map_err(|e| e.to_string())?;
        Ok(Self {
            fields,
            schema,
            writer,
        })
    }

    /// Writes `rows` rows (one block per field) as one row group.
    pub fn write(&mut self, rows: usize, blocks: &[Block]) -> Result<(), String> {
        check_blocks(&self.fields, blocks, rows)?;
        let columns: Vec<ArrayRef> = self
            .fields
            .iter()
            .zip(blocks)
            .map(|(f, b)| column(f, b))
            .collect();
        let batch =
            RecordBatch::try_new(self.schema.clone(), columns).map_err(|e| e.to_string())?;
        self.writer.write(&batch).map_err(|e| e.to_string())?;
        self.writer.flush().map_err(|e| e.to_string())
    }

    /// Writes the footer and returns the output.
    pub fn finish(self) -> Result<W, String> {
        self.writer.into_inner().map_err(|e| e.to_string())
    }
}

/// The value of [`MARKER_KEY`] in the Parquet file at `path`: `Ok(None)` when the file has no
/// such key, `Err` when it cannot be read as Parquet.
pub fn marker(path: &Path) -> Result<Option<String>, String> {
    let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let reader = SerializedFileReader::new(file).map_err(|e| e.to_string())?;
    Ok(reader
        .metadata()
        .file_metadata()
        .key_value_metadata()
        .and_then(|kv| kv.iter().find(|k| k.key == MARKER_KEY))
        .and_then(|k| k.value.clone()))
}
