//! The HATS export: the input catalogue's partitioning, one Parquet file per input partition
//! file (same `dataset/Norder=K/Dir=D/Npix=P.parquet` path, same rows in the same order), the
//! files shared among the ranks; then the catalogue's metadata, as `hats` reads it:
//! `properties` (the input's, with this export's builder, date and size), `partition_info.csv`
//! and `dataset/_common_metadata` (the schema). The input's sky maps (`point_map.fits`, …) are
//! copied: the export has the same rows at the same positions. `dataset/_metadata` (every row
//! group's statistics in one file) is not written; `hats` and LSDB do without it.

use std::collections::BTreeSet;
use std::io::{BufWriter, Write as _};
use std::path::{Path, PathBuf};

use aion_io::Catalog;
use aion_io::export::parquet::{MARKER_KEY, ParquetTable};
use aion_mpi::Session;
use anyhow::{Context, Result, bail};

use super::{ExportArgs, Plan, write_rows};
use crate::collective::agree;
use crate::guard::{replace_dir, temp_sibling};
use crate::progress::Progress;

/// The catalogue's root directory (the parent of `dataset/`) from one of its partition files.
fn root_of(part: &Path) -> Result<PathBuf> {
    part.ancestors()
        .find(|a| a.file_name().is_some_and(|n| n == "dataset"))
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .with_context(|| {
            format!(
                "{}: a HATS partition file outside a dataset/ directory",
                part.display()
            )
        })
}

/// `key = value` lines of the catalogue's `properties` (or `hats.properties`), in order.
fn properties(root: &Path) -> Result<Vec<(String, String)>> {
    let path = ["properties", "hats.properties"]
        .iter()
        .map(|f| root.join(f))
        .find(|p| p.is_file())
        .with_context(|| format!("{}: a HATS catalogue without properties", root.display()))?;
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    Ok(aion_io::catalog::parse_properties(&text))
}

fn root(catalog: &Catalog) -> Result<PathBuf> {
    let first = catalog
        .files()
        .first()
        .map(|p| p.to_path_buf())
        .context("the HATS catalogue has no partition file")?;
    root_of(&first)
}

/// Columns every partition of the export needs: the sky position (`hats_col_ra`,
/// `hats_col_dec`) and the spatial index (`hats_col_healpix`, `_healpix_29` by default), those
/// the catalogue has.
pub fn required_columns(catalog: &Catalog) -> Result<Vec<String>> {
    let props = properties(&root(catalog)?)?;
    let get = |k: &str, default: &str| {
        props
            .iter()
            .find(|(key, _)| key == k)
            .map_or(default.to_string(), |(_, v)| v.clone())
    };
    let cols = [
        get("hats_col_ra", "ra"),
        get("hats_col_dec", "dec"),
        get("hats_col_healpix", "_healpix_29"),
    ];
    let missing: Vec<&String> = cols[..2].iter().filter(|c| !catalog.has(c)).collect();
    if !missing.is_empty() {
        bail!(
            "the HATS catalogue has no column {:?} (its sky position, hats_col_ra / hats_col_dec)",
            missing
        );
    }
    Ok(cols.into_iter().filter(|c| catalog.has(c)).collect())
}

/// `(Norder, Npix)` of a partition file's path (`…/Norder=K/Dir=D/Npix=P.parquet`, or a file
/// inside the directory `Npix=P`).
fn pixel(rel: &Path) -> Option<(u32, u64)> {
    let mut order = None;
    let mut pix = None;
    for c in rel.components() {
        let c = c.as_os_str().to_string_lossy();
        if let Some(k) = c.strip_prefix("Norder=") {
            order = k.parse().ok();
        } else if let Some(p) = c.strip_prefix("Npix=") {
            pix = p.split('.').next().and_then(|p| p.parse().ok());
        }
    }
    order.zip(pix)
}

/// Writes the export (collective): each rank its share of the partition files, rank 0 the
/// metadata; returns the number of partition files.
pub fn write(session: &Session, plan: &Plan, args: &ExportArgs, prov: &str) -> Result<usize> {
    let catalog = plan.catalog.as_ref().expect("HATS needs the catalogue");
    let root_dir = root(catalog)?;
    let files: Vec<PathBuf> = catalog.files().iter().map(|p| p.to_path_buf()).collect();
    let rels: Vec<PathBuf> = files
        .iter()
        .map(|f| {
            f.strip_prefix(&root_dir)
                .map(Path::to_path_buf)
                .with_context(|| format!("{} is outside {}", f.display(), root_dir.display()))
        })
        .collect::<Result<_>>()?;
    let staging =
        PathBuf::from(session.broadcast_string(&temp_sibling(&args.output).display().to_string()));
    let made = if session.is_root() {
        std::fs::create_dir(&staging)
            .with_context(|| format!("cannot create {}", staging.display()))
    } else {
        Ok(())
    };
    agree(session, made)?;
    let result = (|| -> Result<()> {
        let n = catalog.n_rows();
        let (rank, size) = (session.rank(), session.size());
        // Contiguous shares balanced by rows: part i goes to the rank whose share holds its
        // first row.
        let mine: Vec<usize> = (0..files.len())
            .filter(|&i| {
                let start = catalog.part_rows(i).start;
                n == 0 && rank == 0 || n > 0 && (start * size / n).min(size - 1) == rank
            })
            .collect();
        let my_rows: usize = mine.iter().map(|&i| catalog.part_rows(i).len()).sum();
        let what = "exported (rank 0's partitions)";
        let mut progress = Progress::new(session.is_root(), my_rows as u64, what);
        let mut done = 0;
        let written = mine.iter().try_for_each(|&i| -> Result<()> {
            let out = staging.join(&rels[i]);
            if let Some(dir) = out.parent() {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("cannot create {}", dir.display()))?;
            }
            let file = std::fs::File::create_new(&out)
                .with_context(|| format!("cannot create {}", out.display()))?;
            let table = ParquetTable::new(
                BufWriter::new(file),
                plan.fields(),
                vec![(MARKER_KEY.to_string(), prov.to_string())],
            )
            .map_err(|m| anyhow::anyhow!("{}: {m}", out.display()))?;
            let rows = catalog.part_rows(i);
            write_rows(plan, rows, &mut progress, &mut done, table, &out)?
                .into_inner()
                .map_err(|e| e.into_error())
                .and_then(|f| f.sync_all())
                .with_context(|| format!("cannot write {}", out.display()))
        });
        progress.finish();
        agree(session, written)?;
        let meta = if session.is_root() {
            write_metadata(plan, &root_dir, &rels, &staging, prov)
                .and_then(|()| replace_dir(&staging, &args.output))
        } else {
            Ok(())
        };
        agree(session, meta)
    })();
    if result.is_err() && session.is_root() {
        let _ = std::fs::remove_dir_all(&staging);
    }
    result.map(|()| files.len())
}

/// Rank 0: `properties`, `partition_info.csv`, `dataset/_common_metadata` and the input's sky
/// maps, in `staging`.
fn write_metadata(
    plan: &Plan,
    root_dir: &Path,
    rels: &[PathBuf],
    staging: &Path,
    prov: &str,
) -> Result<()> {
    let common = staging.join("dataset/_common_metadata");
    std::fs::create_dir_all(staging.join("dataset"))?;
    let file = std::fs::File::create_new(&common)
        .with_context(|| format!("cannot create {}", common.display()))?;
    let table = ParquetTable::new(
        BufWriter::new(file),
        plan.fields(),
        vec![(MARKER_KEY.to_string(), prov.to_string())],
    )
    .map_err(|m| anyhow::anyhow!("{}: {m}", common.display()))?;
    table
        .finish()
        .map_err(|m| anyhow::anyhow!("{}: {m}", common.display()))?
        .flush()?;

    let pixels: BTreeSet<(u32, u64)> = rels.iter().filter_map(|r| pixel(r)).collect();
    let mut csv = String::from("Norder,Npix\n");
    for (k, p) in &pixels {
        csv.push_str(&format!("{k},{p}\n"));
    }
    std::fs::write(staging.join("partition_info.csv"), csv)?;

    let bytes: u64 = rels
        .iter()
        .filter_map(|r| std::fs::metadata(staging.join(r)).ok())
        .map(|m| m.len())
        .sum();
    let replaced = [
        (
            "hats_builder",
            format!("aion-hpc aion-export v{}", env!("CARGO_PKG_VERSION")),
        ),
        (
            "hats_creation_date",
            format!("{}UTC", &crate::provenance::now_utc()[..16]),
        ),
        ("hats_estsize", (bytes / 1024).to_string()),
        ("hats_nrows", plan.results.rows.to_string()),
    ];
    let mut props = properties(root_dir)?;
    for (k, v) in &replaced {
        match props.iter_mut().find(|(key, _)| key == k) {
            Some(e) => e.1 = v.clone(),
            None => props.push((k.to_string(), v.clone())),
        }
    }
    let mut text = String::from("#HATS catalog (aion-export)\n");
    for (k, v) in props {
        text.push_str(&format!("{k}={v}\n"));
    }
    std::fs::write(staging.join("properties"), text)?;

    for e in std::fs::read_dir(root_dir)? {
        let p = e?.path();
        if p.is_file() && p.extension().is_some_and(|x| x == "fits") {
            let to = staging.join(p.file_name().expect("a file name"));
            std::fs::copy(&p, &to)
                .with_context(|| format!("cannot copy {} to {}", p.display(), to.display()))?;
        }
    }
    Ok(())
}
