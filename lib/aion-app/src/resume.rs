//! Resumable runs: the output file records which chunks of rows are complete.
//!
//! Rows are processed in fixed chunks of `chunk_rows` global rows, recorded in the output (a
//! resumed run uses them on any rank count). After the rows of a round are written and flushed, each rank sets its chunk's byte in
//! `resume/chunk_done` and the file is flushed again, so a byte is 1 only for rows that are on
//! disk. A run killed at any point (even mid-write) leaves the other bytes 0; re-running the same
//! command recomputes exactly those chunks. A run refuses to resume into an output made with
//! another tool, configuration, model or catalogue: the root attribute `resume_key` (SHA-256 of
//! `resume_key_json`) must match.
//!
//! Catalogue files are identified by content, not by name: path, size, modification time and a
//! SHA-256 of their first and last [`EDGE_BYTES`] ([`FileIdentity`]). Reading two blocks costs
//! the same for a 1 MB or a 1 TB file, works for any format (HDF5, Parquet, FITS, …) and sees
//! the usual ways a file changes in place: rewritten (new time), appended to or truncated (new
//! size, new last block), edited in its header or footer (HDF5 superblock and metadata, Parquet
//! footer, FITS header) or copied over (new time). An edit in the middle of a large file that
//! keeps its size and modification time (`touch -r`) is not seen.

use std::io::{Read as _, Seek as _, SeekFrom};
use std::path::Path;

use aion_io::OutputFile;
use anyhow::{Context, Result, bail};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// Dataset holding one byte per chunk.
pub const CHUNK_DONE: &str = "resume/chunk_done";

/// The resume record of an output file.
pub struct ResumeLog {
    ds: aion_io::OutputDataset,
    /// Rows per chunk.
    pub chunk_rows: usize,
    /// Number of chunks.
    pub n_chunks: usize,
}

/// Bytes hashed at each end of an input file.
pub const EDGE_BYTES: u64 = 1 << 20;

/// What identifies an input file's content (part of the resume key).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FileIdentity {
    /// The path as given.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// Modification time, nanoseconds since the Unix epoch.
    pub mtime_ns: i128,
    /// SHA-256 of the first and the last [`EDGE_BYTES`] (the whole file when smaller).
    pub sha256_edges: String,
}

impl FileIdentity {
    /// Reads the identity of `path`.
    pub fn of(path: &Path) -> Result<Self> {
        let err = || format!("cannot read {}", path.display());
        let meta = std::fs::metadata(path).with_context(err)?;
        let mtime_ns = meta
            .modified()
            .with_context(err)?
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as i128);
        let mut f = std::fs::File::open(path).with_context(err)?;
        let size = meta.len();
        let mut h = Sha256::new();
        let mut buf = Vec::new();
        (&mut f)
            .take(EDGE_BYTES)
            .read_to_end(&mut buf)
            .with_context(err)?;
        h.update(&buf);
        if size > EDGE_BYTES {
            let tail = (size - EDGE_BYTES).max(EDGE_BYTES);
            buf.clear();
            f.seek(SeekFrom::Start(tail)).with_context(err)?;
            f.take(EDGE_BYTES).read_to_end(&mut buf).with_context(err)?;
            h.update(&buf);
        }
        Ok(Self {
            path: path.display().to_string(),
            size,
            mtime_ns,
            sha256_edges: hex(&h.finalize()),
        })
    }

    /// What differs from `earlier` (the same file at an earlier run), in words.
    fn changes_since(&self, earlier: &Self) -> Vec<String> {
        let mut what = Vec::new();
        if self.size != earlier.size {
            what.push(format!("size {} → {} bytes", earlier.size, self.size));
        }
        if self.mtime_ns != earlier.mtime_ns {
            what.push("modification time".to_string());
        }
        if self.sha256_edges != earlier.sha256_edges {
            what.push(format!(
                "content (SHA-256 of its first and last {} MiB)",
                EDGE_BYTES >> 20
            ));
        }
        what
    }
}

/// The catalogue rows of chunk `c` of a run of `n` rows in chunks of `chunk_rows` (the last
/// chunk may be short).
pub fn chunk_range(c: usize, chunk_rows: usize, n: usize) -> std::ops::Range<usize> {
    (c * chunk_rows).min(n)..((c + 1) * chunk_rows).min(n)
}

/// What identifies a run for resuming (everything that changes the output's content).
pub fn key_json(tool: &str, config: &Value, checksums: &str, catalog: &[FileIdentity]) -> Value {
    serde_json::json!({ "tool": tool, "config": config, "checksums": checksums, "catalog": catalog })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn digest(v: &Value) -> String {
    hex(&Sha256::digest(v.to_string().as_bytes()))
}

/// The identities of the catalogue files (part of the resume key).
pub fn catalog_identity(paths: &[&Path]) -> Result<Vec<FileIdentity>> {
    paths.iter().map(|p| FileIdentity::of(p)).collect()
}

/// `different configuration: batch_size, survey_preset`: the settings that differ.
fn config_changes(stored: &Value, key: &Value) -> String {
    let (Some(old), Some(new)) = (stored.as_object(), key.as_object()) else {
        return "different configuration".to_string();
    };
    let changed: Vec<&str> = old
        .keys()
        .chain(new.keys())
        .filter(|k| old.get(*k) != new.get(*k))
        .map(String::as_str)
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    format!("different configuration: {}", changed.join(", "))
}

/// Why the catalogue of `key` differs from that of `stored`, naming each changed file.
fn catalog_changes(stored: &Value, key: &Value) -> String {
    let parse = |v: &Value| -> Option<Vec<FileIdentity>> {
        serde_json::from_value(v.get("catalog")?.clone()).ok()
    };
    let (Some(old), Some(new)) = (parse(stored), parse(key)) else {
        return "different catalogue files".to_string();
    };
    let old_paths: Vec<&str> = old.iter().map(|f| f.path.as_str()).collect();
    let new_paths: Vec<&str> = new.iter().map(|f| f.path.as_str()).collect();
    if old_paths != new_paths {
        return format!("different catalogue files: {old_paths:?} then, {new_paths:?} now");
    }
    let changed: Vec<String> = new
        .iter()
        .zip(&old)
        .filter_map(|(n, o)| {
            let what = n.changes_since(o);
            (!what.is_empty()).then(|| {
                format!(
                    "catalogue file {} changed since the output was started ({})",
                    n.path,
                    what.join(", ")
                )
            })
        })
        .collect();
    changed.join("; ")
}

impl ResumeLog {
    /// Creates the record in a new output (collective).
    pub fn create(out: &OutputFile, n_rows: usize, chunk_rows: usize, key: &Value) -> Result<Self> {
        let n_chunks = n_rows.div_ceil(chunk_rows);
        let ds = out.create_dataset::<u8>(CHUNK_DONE, n_chunks, &[], Some(0))?;
        out.set_attr_i64("chunk_rows", chunk_rows as i64)?;
        out.set_attr_str("resume_key_json", &key.to_string())?;
        out.set_attr_str("resume_key", &digest(key))?;
        Ok(Self {
            ds,
            chunk_rows,
            n_chunks,
        })
    }

    /// Opens the record of an existing output made by the same run (collective), and returns the
    /// chunks already done. Refuses an output made with another configuration, naming what differs.
    pub fn open(out: &OutputFile, key: &Value) -> Result<(Self, Vec<bool>)> {
        let path = out.path().display();
        let stored = out.attr_str("resume_key_json").with_context(|| {
            format!("{path} exists but was not written by an aion-hpc tool (no resume record); use --overwrite to replace it")
        })?;
        let stored: Value = serde_json::from_str(&stored).context("unreadable resume record")?;
        if digest(&stored) != digest(key) {
            let what: Vec<&str> = ["tool", "config", "checksums", "catalog"]
                .into_iter()
                .filter(|k| stored.get(k) != key.get(k))
                .collect();
            let names = what.iter().map(|w| match *w {
                "checksums" => "different model weights".to_string(),
                "catalog" => catalog_changes(&stored, key),
                "config" => config_changes(&stored["config"], &key["config"]),
                other => format!("different {other}"),
            });
            bail!(
                "{path} was made by another run ({}); refusing to resume into it. \
                 Use --overwrite to start again, or another --output",
                names.collect::<Vec<_>>().join("; ")
            );
        }
        let ds = out.dataset(CHUNK_DONE)?;
        let done: Vec<u8> = ds
            .read_raw()
            .with_context(|| format!("{path}: cannot read {CHUNK_DONE}"))?;
        let chunk_rows = out
            .hdf5()
            .attr("chunk_rows")
            .and_then(|a| a.read_scalar::<i64>())
            .context("chunk_rows")?;
        let log = Self {
            ds,
            chunk_rows: chunk_rows as usize,
            n_chunks: done.len(),
        };
        Ok((log, done.into_iter().map(|b| b != 0).collect()))
    }

    /// Marks this rank's chunk of the round as done (collective; `None` when the rank had none).
    pub fn mark(&self, out: &OutputFile, chunk: Option<usize>) -> Result<()> {
        match chunk {
            Some(c) => out.write_rows(&self.ds, c, &[1u8])?,
            None => out.write_rows::<u8>(&self.ds, 0, &[])?,
        }
        Ok(())
    }
}
