//! Strict loading of safetensors weight files.
//!
//! The reference loads every weight file with `strict=False`, so a renamed or missing tensor
//! silently keeps its random initial value. [`WeightFile`] is the opposite: every tensor a
//! module asks for must exist with the expected shape, and every tensor in the file must be
//! asked for. Problems are collected (not raised at the first one) and reported together by
//! [`WeightFile::finish`], so a user sees the whole list of offending names at once.
//!
//! Only the safetensors format is read: nothing in a weight file is ever executed.
//!
//! [`WeightFile`] is one [`Source`] of the one description of the weights (see [`source`]);
//! [`Initialiser`] is the other.

mod init;
mod names;
mod source;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use safetensors::tensor::{Dtype, SafeTensors};

use crate::error::{Error, Result, WeightProblem};

pub use init::{EMBED_STD, Initialiser, StoredTensor, stored_bytes, write_stored};
pub use names::{Layout, LinearWeight, ParamNames};
pub use source::{Init, IntType, Reservoir, Source, ValueSpace, transpose};

/// Index entry of one tensor in the file.
#[derive(Debug, Clone)]
struct Entry {
    dtype: Dtype,
    shape: Vec<usize>,
    start: usize,
    end: usize,
}

/// The bytes of a weight file: mapped read-only from the file, or held in memory.
enum Bytes {
    Mapped(memmap2::Mmap),
    Owned(Vec<u8>),
}

impl std::ops::Deref for Bytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Bytes::Mapped(m) => m,
            Bytes::Owned(v) => v,
        }
    }
}

/// An open safetensors file whose tensors are taken one by one by the modules that own them.
pub struct WeightFile {
    path: PathBuf,
    bytes: Bytes,
    data_offset: usize,
    entries: BTreeMap<String, Entry>,
    taken: BTreeSet<String>,
    aliases: BTreeMap<String, String>,
    problems: Vec<WeightProblem>,
    names: ParamNames,
}

impl std::fmt::Debug for WeightFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WeightFile")
            .field("path", &self.path)
            .field("tensors", &self.entries.len())
            .finish()
    }
}

impl WeightFile {
    /// Maps (read-only) and indexes a safetensors file. Mapping instead of reading saves a
    /// copy of the whole file per process (1.3 GB for AION-1 base) and the time to fill it with
    /// fresh pages, and lets the ranks of a node share the page cache. The file must not be
    /// truncated while a tool loads it (as for any memory-mapped reader, e.g. the reference's
    /// `safetensors`); it is never written.
    #[allow(unsafe_code)]
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let io = |source| Error::Io {
            path: path.clone(),
            source,
        };
        let file = std::fs::File::open(&path).map_err(io)?;
        // SAFETY: a read-only private mapping of a file this process only reads; its bytes are
        // copied out (decoded) tensor by tensor while the file is open.
        let map = unsafe { memmap2::MmapOptions::new().populate().map(&file) }.map_err(io)?;
        Self::index(path, Bytes::Mapped(map))
    }

    /// Indexes safetensors bytes held in memory (`label` names them in messages).
    pub fn from_bytes(label: impl Into<PathBuf>, bytes: Vec<u8>) -> Result<Self> {
        Self::index(label.into(), Bytes::Owned(bytes))
    }

    fn index(path: PathBuf, bytes: Bytes) -> Result<Self> {
        let (header_len, metadata) =
            SafeTensors::read_metadata(&bytes).map_err(|e| Error::SafeTensors {
                path: path.clone(),
                message: e.to_string(),
            })?;
        let entries = metadata
            .tensors()
            .into_iter()
            .map(|(name, info)| {
                let entry = Entry {
                    dtype: info.dtype,
                    shape: info.shape.clone(),
                    start: info.data_offsets.0,
                    end: info.data_offsets.1,
                };
                (name, entry)
            })
            .collect();
        Ok(Self {
            path,
            bytes,
            data_offset: header_len + 8,
            entries,
            taken: BTreeSet::new(),
            aliases: BTreeMap::new(),
            problems: Vec::new(),
            names: ParamNames::default(),
        })
    }

    /// The file this was read from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Names of all tensors in the file, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(String::as_str)
    }

    /// Whether the file holds a tensor of this name.
    pub fn contains(&self, name: &str) -> bool {
        self.entries.contains_key(name)
    }

    /// Shape of a tensor in the file, if present.
    pub fn shape(&self, name: &str) -> Option<&[usize]> {
        self.entries.get(name).map(|e| e.shape.as_slice())
    }

    /// Lets a request for `wanted` be served by the stored tensor `stored` when `wanted` itself is
    /// absent (the Hub files store shared tensors under one name only, e.g. `mod_emb`).
    pub fn alias(&mut self, wanted: impl Into<String>, stored: impl Into<String>) {
        self.aliases.insert(wanted.into(), stored.into());
    }

    /// Marks a tensor as used without reading it (e.g. a buffer this implementation recomputes).
    pub fn skip(&mut self, name: &str) {
        if self.entries.contains_key(name) {
            self.taken.insert(name.to_string());
        }
    }

    /// Marks a tensor that the module stores no copy of as used, after checking that it exists
    /// (directly or through an alias) with the expected shape; records a problem otherwise.
    /// Returns whether it was found with that shape.
    pub fn take_unused(&mut self, name: &str, shape: &[usize]) -> bool {
        self.lookup(name, shape).is_some()
    }

    /// Resolves `name` through the alias table and checks shape; records a problem otherwise.
    fn lookup(&mut self, name: &str, expected: &[usize]) -> Option<Entry> {
        let key = if self.entries.contains_key(name) {
            name.to_string()
        } else if let Some(stored) = self
            .aliases
            .get(name)
            .filter(|s| self.entries.contains_key(*s))
        {
            stored.clone()
        } else {
            self.problems.push(WeightProblem::Missing {
                name: name.to_string(),
                expected: expected.to_vec(),
            });
            return None;
        };
        self.taken.insert(key.clone());
        let entry = self.entries[&key].clone();
        if entry.shape != expected {
            self.problems.push(WeightProblem::Shape {
                name: name.to_string(),
                expected: expected.to_vec(),
                found: entry.shape.clone(),
            });
            return None;
        }
        Some(entry)
    }

    fn raw(&self, e: &Entry) -> &[u8] {
        &self.bytes[self.data_offset + e.start..self.data_offset + e.end]
    }

    /// Reads a floating-point tensor as `f32` values in row-major order.
    ///
    /// Missing or mis-shaped tensors are recorded and yield zeros, so that loading can go on
    /// and [`finish`](Self::finish) can list every problem.
    pub fn f32s(&mut self, name: &str, shape: &[usize]) -> Vec<f32> {
        let n: usize = shape.iter().product();
        let Some(e) = self.lookup(name, shape) else {
            return vec![0.0; n];
        };
        let raw = self.raw(&e);
        let out: Option<Vec<f32>> = match e.dtype {
            Dtype::F32 => Some(
                raw.chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                    .collect(),
            ),
            Dtype::F64 => Some(
                raw.chunks_exact(8)
                    .map(|b| f64::from_le_bytes(b.try_into().expect("chunk of 8")) as f32)
                    .collect(),
            ),
            Dtype::F16 => Some(
                raw.chunks_exact(2)
                    .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
                    .collect(),
            ),
            Dtype::BF16 => Some(
                raw.chunks_exact(2)
                    .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
                    .collect(),
            ),
            _ => None,
        };
        out.unwrap_or_else(|| {
            self.problems.push(WeightProblem::DType {
                name: name.to_string(),
                found: format!("{:?}", e.dtype),
            });
            vec![0.0; n]
        })
    }

    /// [`f32s`](Self::f32s) of a `[rows, cols]` tensor, returned transposed (`[cols, rows]`,
    /// row-major): an `f32` tensor is decoded straight into the transposed layout, without the
    /// intermediate copy of [`transpose`]`(f32s(…))`.
    pub fn f32s_transposed(&mut self, name: &str, [rows, cols]: [usize; 2]) -> Vec<f32> {
        let direct = self
            .entries
            .get(name)
            .is_some_and(|e| e.dtype == Dtype::F32 && e.shape == [rows, cols]);
        if !direct {
            return transpose(&self.f32s(name, &[rows, cols]), rows, cols);
        }
        let e = self.lookup(name, &[rows, cols]).expect("checked above");
        let raw = self.raw(&e);
        let value = |i: usize| f32::from_le_bytes(raw[4 * i..4 * i + 4].try_into().expect("4"));
        source::transpose_with(rows, cols, value)
    }

    /// Reads an integer (or bool) tensor as `i64` values in row-major order.
    pub fn i64s(&mut self, name: &str, shape: &[usize]) -> Vec<i64> {
        let n: usize = shape.iter().product();
        let Some(e) = self.lookup(name, shape) else {
            return vec![0; n];
        };
        let raw = self.raw(&e);
        let out: Option<Vec<i64>> = match e.dtype {
            Dtype::I64 => Some(
                raw.chunks_exact(8)
                    .map(|b| i64::from_le_bytes(b.try_into().expect("8")))
                    .collect(),
            ),
            Dtype::I32 => Some(
                raw.chunks_exact(4)
                    .map(|b| i64::from(i32::from_le_bytes([b[0], b[1], b[2], b[3]])))
                    .collect(),
            ),
            Dtype::I16 => Some(
                raw.chunks_exact(2)
                    .map(|b| i64::from(i16::from_le_bytes([b[0], b[1]])))
                    .collect(),
            ),
            Dtype::U8 | Dtype::BOOL => Some(raw.iter().map(|&b| i64::from(b)).collect()),
            Dtype::I8 => Some(raw.iter().map(|&b| i64::from(b as i8)).collect()),
            _ => None,
        };
        out.unwrap_or_else(|| {
            self.problems.push(WeightProblem::DType {
                name: name.to_string(),
                found: format!("{:?}", e.dtype),
            });
            vec![0; n]
        })
    }

    /// Whether any problem has been recorded so far.
    pub fn has_problems(&self) -> bool {
        !self.problems.is_empty()
    }

    /// Ends strict loading: fails if any tensor was missing or mis-shaped, or if the file holds
    /// tensors that nothing took.
    pub fn finish(mut self) -> Result<()> {
        for (name, e) in &self.entries {
            if !self.taken.contains(name) {
                self.problems.push(WeightProblem::Unexpected {
                    name: name.clone(),
                    shape: e.shape.clone(),
                });
            }
        }
        if self.problems.is_empty() {
            Ok(())
        } else {
            Err(Error::Weights {
                path: self.path,
                problems: self.problems,
            })
        }
    }
}

impl Source for WeightFile {
    fn floats(&mut self, name: &str, shape: &[usize], _init: &Init) -> Vec<f32> {
        self.f32s(name, shape)
    }

    fn floats_transposed(&mut self, name: &str, shape: [usize; 2], _init: &Init) -> Vec<f32> {
        self.f32s_transposed(name, shape)
    }

    fn ints(&mut self, name: &str, shape: &[usize], _stored: IntType, _init: &Init) -> Vec<i64> {
        self.i64s(name, shape)
    }

    fn unused(&mut self, name: &str, shape: &[usize], _init: &Init) {
        self.take_unused(name, shape);
    }

    fn optional(&mut self, name: &str, _shape: &[usize], _stored: IntType, _init: &Init) {
        self.skip(name);
    }

    fn stored_prefix(&mut self, prefix: &str, hub_prefix: &str, _write_hub: bool) {
        let stored: Vec<String> = self
            .names()
            .filter(|n| n.starts_with(hub_prefix))
            .map(String::from)
            .collect();
        for s in stored {
            let wanted = format!("{prefix}{}", &s[hub_prefix.len()..]);
            self.alias(wanted, s);
        }
    }

    fn alias(&mut self, wanted: &str, stored: &str, shape: &[usize]) {
        WeightFile::alias(self, wanted, stored);
        if self.contains(wanted) && self.contains(stored) {
            self.take_unused(stored, shape);
        }
    }

    fn ignore_prefix(&mut self, prefix: &str) {
        let ignored: Vec<String> = self
            .names()
            .filter(|n| n.starts_with(prefix))
            .map(String::from)
            .collect();
        ignored.iter().for_each(|n| self.skip(n));
    }

    fn stream(&mut self, _stream: u64) {}

    fn has_problems(&self) -> bool {
        WeightFile::has_problems(self)
    }

    fn label(&self) -> &Path {
        self.path()
    }

    fn names_mut(&mut self) -> &mut ParamNames {
        &mut self.names
    }
}

/// SHA-256 of a file, hex encoded (recorded in output provenance).
pub fn sha256_file(path: impl AsRef<Path>) -> Result<String> {
    use sha2::{Digest, Sha256};
    use std::io::Read;
    let path = path.as_ref();
    let mut f = std::fs::File::open(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests;
