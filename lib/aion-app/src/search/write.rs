//! The search result, written by rank 0: an HDF5 file or a CSV file. Layout in
//! `docs/hdf5-schema.md`.

use std::io::Write;
use std::path::Path;

use aion_io::{OutputFile, Provenance};
use anyhow::{Context, Result};

use super::kernel::Metric;
use super::queries::{QuerySet, Status};
use super::topk::{Candidate, badness_of};

/// Output format, from the file name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `.h5`, `.hdf5`, `.hdf`.
    Hdf5,
    /// `.csv`.
    Csv,
}

impl Format {
    /// The format of `path`, by extension.
    pub fn of(path: &Path) -> Result<Self> {
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase);
        match ext.as_deref() {
            Some("h5" | "hdf5" | "hdf") => Ok(Self::Hdf5),
            Some("csv") => Ok(Self::Csv),
            _ => anyhow::bail!(
                "--output {}: the name must end in .h5 / .hdf5 (HDF5) or .csv",
                path.display()
            ),
        }
    }
}

/// The merged result, as `(Q, K)` tables.
#[derive(Debug, Clone, PartialEq)]
pub struct Tables {
    /// Neighbours per query.
    pub k: usize,
    /// Neighbour object ids, −1 past the last neighbour found.
    pub object_id: Vec<i64>,
    /// Neighbour global rows, −1 past the last neighbour found.
    pub row: Vec<i64>,
    /// Scores (cosine, dot, or Euclidean distance), NaN past the last neighbour found.
    pub score: Vec<f32>,
    /// Neighbours found per query.
    pub count: Vec<i64>,
}

impl Tables {
    /// Lays out the sorted candidates of each query.
    pub fn new(results: &[Vec<Candidate>], k: usize, metric: Metric) -> Self {
        let q = results.len();
        let mut t = Self {
            k,
            object_id: vec![-1; q * k],
            row: vec![-1; q * k],
            score: vec![f32::NAN; q * k],
            count: vec![0; q],
        };
        for (j, cands) in results.iter().enumerate() {
            t.count[j] = cands.len() as i64;
            for (i, c) in cands.iter().take(k).enumerate() {
                t.object_id[j * k + i] = c.object_id;
                t.row[j * k + i] = c.row as i64;
                t.score[j * k + i] = metric.score(badness_of(c.key));
            }
        }
        t
    }
}

/// Root attributes beyond the provenance.
pub struct Meta<'a> {
    /// Metric.
    pub metric: Metric,
    /// Neighbours per query.
    pub k: usize,
    /// Whether the query objects were excluded.
    pub exclude_self: bool,
    /// Summary counters, written as the `summary` attribute (JSON).
    pub summary: &'a serde_json::Value,
}

/// First line of the CSV result.
pub const CSV_HEADER: &str =
    "query,query_object_id,query_row,query_status,neighbor,object_id,row,score";

/// Writes the HDF5 result (rank 0 only, plain HDF5: the result is small, and a collective
/// MPI-IO file would cost more in metadata round trips than the data), all at once: into a
/// temporary sibling, synced and renamed to `path` when complete (removed on failure;
/// [`crate::guard::write_staged`]).
pub fn hdf5(
    path: &Path,
    prov: &Provenance,
    meta: &Meta<'_>,
    queries: &QuerySet,
    status: &[Status],
    t: &Tables,
) -> Result<()> {
    crate::guard::write_staged(path, |tmp| {
        let k = meta.k;
        let out = OutputFile::create_serial(tmp)?;
        prov.write(&out)?;
        out.set_attr_str("metric", meta.metric.name())?;
        out.set_attr_i64("k", k as i64)?;
        out.set_attr_i64("exclude_self", i64::from(meta.exclude_self))?;
        out.set_attr_str("score", score_meaning(meta.metric))?;
        out.set_attr_str("summary", &meta.summary.to_string())?;
        let q = queries.len();

        let ds = out.create_dataset::<i64>("query_object_id", q, &[], Some(-1))?;
        out.set_dataset_attr_str(
            &ds,
            "description",
            "object id of each query (-1 for vectors from a file without object_id)",
        )?;
        out.write_rows(&ds, 0, &queries.object_ids)?;
        let ds = out.create_dataset::<i64>("query_row", q, &[], Some(-1))?;
        out.set_dataset_attr_str(
            &ds,
            "description",
            "global row of each query in the embedding files (-1 for vectors from a file)",
        )?;
        out.write_rows(&ds, 0, &queries.rows)?;
        let ds = out.create_dataset::<u8>("query_status", q, &[], Some(0))?;
        out.set_dataset_attr_str(&ds, "codes", &Status::table_json())?;
        let codes: Vec<u8> = status.iter().map(|&s| s as u8).collect();
        out.write_rows(&ds, 0, &codes)?;

        let ds = out.create_dataset::<i64>("neighbors/count", q, &[], Some(0))?;
        out.set_dataset_attr_str(
            &ds,
            "description",
            "neighbours found (< k when fewer valid rows, or when the query is not usable)",
        )?;
        out.write_rows(&ds, 0, &t.count)?;
        let ds = out.create_dataset::<i64>("neighbors/object_id", q, &[k], Some(-1))?;
        out.write_rows(&ds, 0, &t.object_id)?;
        let ds = out.create_dataset::<i64>("neighbors/row", q, &[k], Some(-1))?;
        out.set_dataset_attr_str(
            &ds,
            "description",
            "global row index (embedding files concatenated in the order given)",
        )?;
        out.write_rows(&ds, 0, &t.row)?;
        let ds = out.create_dataset::<f32>("neighbors/score", q, &[k], Some(f32::NAN))?;
        out.set_dataset_attr_str(&ds, "description", score_meaning(meta.metric))?;
        out.set_dataset_attr_str(&ds, "units", "")?;
        out.set_dataset_attr_str(&ds, "label", score_meaning(meta.metric))?;
        out.write_rows(&ds, 0, &t.score)?;
        out.set_attr_str("end_time", &crate::provenance::now_utc())?;
        out.flush()?;
        out.close()?;
        Ok(())
    })
}

/// What `score` means for `metric`.
pub fn score_meaning(metric: Metric) -> &'static str {
    match metric {
        Metric::Cosine => {
            "cosine similarity (higher is closer), best first; ties by smaller row; NaN = no neighbour"
        }
        Metric::Dot => {
            "dot product (higher is closer), best first; ties by smaller row; NaN = no neighbour"
        }
        Metric::L2 => {
            "Euclidean distance (not squared; smaller is closer), best first; ties by smaller row; NaN = no neighbour"
        }
    }
}

/// Writes the CSV result (rank 0 only): one line per query and neighbour slot, `k` per query
/// (the HDF5 tables flattened; −1 / `nan` past the last neighbour found). All at once: a failed
/// write (a full disk) leaves no partial file.
pub fn csv(path: &Path, queries: &QuerySet, status: &[Status], t: &Tables) -> Result<()> {
    crate::guard::write_file(path, |w| csv_into(w, queries, status, t))
        .with_context(|| format!("cannot write {}", path.display()))
}

fn csv_into(w: &mut impl Write, queries: &QuerySet, status: &[Status], t: &Tables) -> Result<()> {
    writeln!(w, "{CSV_HEADER}")?;
    let k = t.k;
    for (j, st) in status.iter().enumerate() {
        for i in 0..k {
            let s = t.score[j * k + i];
            writeln!(
                w,
                "{j},{},{},{},{},{},{},{}",
                queries.object_ids[j],
                queries.rows[j],
                st.name(),
                i + 1,
                t.object_id[j * k + i],
                t.row[j * k + i],
                if s.is_nan() {
                    "nan".to_string()
                } else {
                    s.to_string()
                }
            )?;
        }
    }
    Ok(())
}
