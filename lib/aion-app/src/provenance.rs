//! Building the provenance record of a run (root attributes + `<output>.run.json`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use aion_io::{Catalog, Provenance};
use aion_mpi::Session;
use anyhow::Result;

/// Git commit the tools were built from.
pub const GIT_COMMIT: &str = env!("AION_GIT_COMMIT");

/// UTC time now as RFC 3339 (seconds).
pub fn now_utc() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// Gregorian date of a day count since 1970-01-01 (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// SHA-256 of each file, keyed by its path relative to `root`; computed on rank 0 and broadcast.
pub fn checksums(session: &Session, root: &Path, files: &[PathBuf]) -> Result<String> {
    let json = if session.is_root() {
        let mut map = BTreeMap::new();
        for f in files {
            let rel = f.strip_prefix(root).unwrap_or(f).display().to_string();
            map.insert(rel, aion_model::weights::sha256_file(f)?);
        }
        serde_json::to_string(&map)?
    } else {
        String::new()
    };
    Ok(session.broadcast_string(&json))
}

/// The catalogue's files and row counts as JSON.
pub fn catalog_json(catalog: &Catalog) -> String {
    let files: Vec<String> = catalog
        .paths()
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    serde_json::json!({ "files": files, "rows": catalog.n_rows() }).to_string()
}

/// Assembles the provenance record (start time taken from rank 0).
pub fn build(
    session: &Session,
    tool: &str,
    config_json: String,
    model_dir: &Path,
    checksums_json: String,
    catalog: &Catalog,
) -> Provenance {
    Provenance {
        tool: tool.to_string(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        git_commit: GIT_COMMIT.to_string(),
        config_json,
        model_dir: model_dir.display().to_string(),
        checksums_json,
        catalog_json: catalog_json(catalog),
        n_ranks: session.size(),
        slurm_job_id: session.slurm().job_id,
        start_time: session.broadcast_string(&now_utc()),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn civil_dates() {
        assert_eq!(super::civil_from_days(0), (1970, 1, 1));
        assert_eq!(super::civil_from_days(20_417), (2025, 11, 25));
        assert_eq!(super::civil_from_days(11_016), (2000, 2, 29));
    }
}
