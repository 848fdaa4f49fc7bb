//! Resumable runs: the output file records which chunks of rows are complete.
//!
//! Rows are processed in fixed chunks of `chunk_rows` global rows (independent of the rank
//! count). After the rows of a round are written and flushed, each rank sets its chunk's byte in
//! `resume/chunk_done` and the file is flushed again, so a byte is 1 only for rows that are on
//! disk. A run killed at any point (even mid-write) leaves the other bytes 0; re-running the same
//! command recomputes exactly those chunks. A run refuses to resume into an output made with
//! another tool, configuration, model or catalogue: the root attribute `resume_key` (SHA-256 of
//! `resume_key_json`) must match.

use std::path::Path;

use aion_io::OutputFile;
use anyhow::{Context, Result, bail};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// Dataset holding one byte per chunk.
pub const CHUNK_DONE: &str = "resume/chunk_done";

/// The resume record of an output file.
pub struct ResumeLog {
    ds: hdf5::Dataset,
    /// Rows per chunk.
    pub chunk_rows: usize,
    /// Number of chunks.
    pub n_chunks: usize,
}

/// What identifies a run for resuming (everything that changes the output's content).
pub fn key_json(tool: &str, config: &Value, checksums: &str, catalog: &[(String, u64)]) -> Value {
    serde_json::json!({ "tool": tool, "config": config, "checksums": checksums, "catalog": catalog })
}

fn digest(v: &Value) -> String {
    Sha256::digest(v.to_string().as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Catalogue files with their sizes (part of the resume key).
pub fn catalog_identity(paths: &[&Path]) -> Vec<(String, u64)> {
    paths
        .iter()
        .map(|p| {
            (
                p.display().to_string(),
                std::fs::metadata(p).map_or(0, |m| m.len()),
            )
        })
        .collect()
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
                "checksums" => "model weights",
                "catalog" => "catalogue files",
                "config" => "configuration",
                other => other,
            });
            bail!(
                "{path} was made by another run (different {}); refusing to resume into it. \
                 Use --overwrite to start again, or another --output",
                names.collect::<Vec<_>>().join(", ")
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
