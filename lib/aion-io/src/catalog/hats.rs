//! HATS catalogues (Hierarchical Adaptive Tiling Scheme, the layout LSDB reads and the Multimodal
//! Universe publishes): a directory with
//!
//! ```text
//! properties                     key = value lines (hats_nrows, hats_col_ra, …)
//! partition_info.csv             Norder,Npix of every leaf partition
//! dataset/Norder=K/Dir=D/Npix=P.parquet   (D = P / 10000 · 10000; a directory of Parquet
//!                                          files instead of one file is read in name order)
//! dataset/_metadata, dataset/_common_metadata
//! ```
//!
//! A HATS *collection* (`collection.properties` with `hats_primary_table_url`) is read through its
//! primary catalogue. Partitions are read in (`Norder`, `Npix`) order. Every partition listed
//! must exist, and when `properties` declares `hats_nrows` the partitions must hold exactly that
//! many rows (checked once the catalogue is sized), so a lost partition cannot go unnoticed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::Format;
use crate::error::{Error, Result};

const PROPERTY_FILES: [&str; 2] = ["properties", "hats.properties"];

/// Whether `dir` looks like a HATS catalogue or collection.
pub(super) fn is_catalog(dir: &Path) -> bool {
    PROPERTY_FILES
        .iter()
        .chain(&["partition_info.csv", "collection.properties"])
        .any(|f| dir.join(f).is_file())
}

/// A HATS catalogue's partition files and metadata.
pub(super) struct HatsCatalog {
    /// Partition files, in (Norder, Npix) order (and name order inside a partition directory).
    pub partitions: Vec<PathBuf>,
    /// Metadata files read (properties, partition_info.csv).
    pub metadata: Vec<PathBuf>,
    /// `hats_nrows`, if declared.
    pub declared_rows: Option<u64>,
}

fn error(dir: &Path, message: impl Into<String>) -> Error {
    Error::OpenAs {
        path: dir.to_path_buf(),
        format: Format::Hats,
        message: message.into(),
    }
}

/// The `key = value` lines of a HATS `properties` file, in order (blank lines, `#` comments and
/// lines without `=` are passed over; keys and values trimmed).
pub fn parse_properties(text: &str) -> Vec<(String, String)> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

fn read_properties(path: &Path) -> Result<BTreeMap<String, String>> {
    let text =
        std::fs::read_to_string(path).map_err(|e| error(path, format!("cannot read it: {e}")))?;
    Ok(parse_properties(&text).into_iter().collect())
}

/// Opens the HATS catalogue (or collection) at `dir`.
pub(super) fn open(dir: &Path) -> Result<HatsCatalog> {
    let mut metadata = Vec::new();
    let collection = dir.join("collection.properties");
    let dir = if collection.is_file() {
        let props = read_properties(&collection)?;
        metadata.push(collection.clone());
        let primary = props.get("hats_primary_table_url").ok_or_else(|| {
            error(
                &collection,
                "has no hats_primary_table_url (the collection's main catalogue)",
            )
        })?;
        dir.join(primary)
    } else {
        dir.to_path_buf()
    };
    let mut declared_rows = None;
    if let Some(p) = PROPERTY_FILES
        .iter()
        .map(|f| dir.join(f))
        .find(|p| p.is_file())
    {
        let props = read_properties(&p)?;
        if let Some(n) = props.get("hats_nrows") {
            declared_rows = Some(
                n.parse::<u64>()
                    .map_err(|_| error(&p, format!("hats_nrows = {n} is not a row count")))?,
            );
        }
        metadata.push(p);
    }
    let pixels = match dir.join("partition_info.csv") {
        info if info.is_file() => {
            let pixels = read_partition_info(&info)?;
            metadata.push(info);
            pixels
        }
        _ => {
            let found = scan_partitions(&dir)?;
            log::warn!(
                "{}: no partition_info.csv; reading the {} partition(s) found under dataset/",
                dir.display(),
                found.len()
            );
            found
        }
    };
    if pixels.is_empty() {
        return Err(error(&dir, "lists no partition"));
    }
    let mut partitions = Vec::new();
    for (order, pix) in pixels {
        partitions.extend(partition_files(&dir, order, pix)?);
    }
    Ok(HatsCatalog {
        partitions,
        metadata,
        declared_rows,
    })
}

/// `Norder,Npix` pairs of `partition_info.csv`, sorted (columns found by their header names).
fn read_partition_info(path: &Path) -> Result<Vec<(u32, u64)>> {
    let text =
        std::fs::read_to_string(path).map_err(|e| error(path, format!("cannot read it: {e}")))?;
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let header: Vec<&str> = lines
        .next()
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .collect();
    let col = |name: &str| {
        header
            .iter()
            .position(|h| *h == name)
            .ok_or_else(|| error(path, format!("has no '{name}' column (header: {header:?})")))
    };
    let (o, p) = (col("Norder")?, col("Npix")?);
    let mut pixels = Vec::new();
    for (i, line) in lines.enumerate() {
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        let parsed = fields
            .get(o)
            .and_then(|v| v.parse::<u32>().ok())
            .zip(fields.get(p).and_then(|v| v.parse::<u64>().ok()));
        let Some(pixel) = parsed else {
            return Err(error(
                path,
                format!("line {}: '{line}' is not Norder,Npix", i + 2),
            ));
        };
        pixels.push(pixel);
    }
    pixels.sort_unstable();
    pixels.dedup();
    Ok(pixels)
}

/// Partitions found as `dataset/Norder=K/Dir=D/Npix=P[.parquet]`, sorted.
fn scan_partitions(dir: &Path) -> Result<Vec<(u32, u64)>> {
    let pattern = dir.join("dataset/Norder=*/Dir=*/Npix=*");
    let mut pixels = Vec::new();
    for entry in glob::glob(&pattern.to_string_lossy())
        .map_err(|e| error(dir, e.to_string()))?
        .filter_map(std::result::Result::ok)
    {
        let order = entry
            .parent()
            .and_then(Path::parent)
            .and_then(|p| p.file_name())
            .and_then(|n| n.to_str()?.strip_prefix("Norder=")?.parse::<u32>().ok());
        let pix = entry.file_name().and_then(|n| {
            n.to_str()?
                .strip_prefix("Npix=")?
                .split('.')
                .next()?
                .parse::<u64>()
                .ok()
        });
        if let (Some(o), Some(p)) = (order, pix) {
            pixels.push((o, p));
        }
    }
    pixels.sort_unstable();
    pixels.dedup();
    Ok(pixels)
}

/// The file(s) of partition (`order`, `pix`): `Npix=P.parquet`, or the Parquet files of a
/// directory `Npix=P` / `Npix=P.parquet` in name order. A missing partition is an error.
fn partition_files(dir: &Path, order: u32, pix: u64) -> Result<Vec<PathBuf>> {
    let base = dir
        .join("dataset")
        .join(format!("Norder={order}"))
        .join(format!("Dir={}", pix / 10_000 * 10_000));
    let file = base.join(format!("Npix={pix}.parquet"));
    if file.is_file() {
        return Ok(vec![file]);
    }
    for d in [file.clone(), base.join(format!("Npix={pix}"))] {
        if d.is_dir() {
            let mut files: Vec<PathBuf> = std::fs::read_dir(&d)
                .map_err(|e| error(&d, format!("cannot list it: {e}")))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    p.is_file()
                        && !p
                            .file_name()
                            .is_some_and(|n| n.to_string_lossy().starts_with(['.', '_']))
                })
                .collect();
            files.sort();
            if files.is_empty() {
                return Err(error(
                    &d,
                    format!("partition Norder={order} Npix={pix} holds no file"),
                ));
            }
            return Ok(files);
        }
    }
    Err(error(
        dir,
        format!(
            "partition Norder={order} Npix={pix} is listed in partition_info.csv but its file {} \
             is missing",
            file.display()
        ),
    ))
}
