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

/// A file's identity for [`prefetch_sha256`]: canonical path, length and modification time.
type Stamp = (PathBuf, u64, Option<std::time::SystemTime>);

fn stamp(path: &Path) -> Option<Stamp> {
    let m = std::fs::metadata(path).ok()?;
    Some((
        std::fs::canonicalize(path).ok()?,
        m.len(),
        m.modified().ok(),
    ))
}

/// Digests being computed ahead of [`checksums`], with the stamp of the file they read.
type Pending = (Stamp, std::thread::JoinHandle<Option<String>>);
static PREFETCHED: std::sync::Mutex<Vec<Pending>> = std::sync::Mutex::new(Vec::new());

/// Starts computing the SHA-256 of `path` on a thread of its own, so that rank 0 hashes the
/// transformer's weights (about 1 s for AION-1 base) while it loads them rather than after;
/// [`checksums`] takes the result if the file's length and time are unchanged, and hashes the
/// file itself otherwise. A file that cannot be read is left to `checksums` (and its message).
pub fn prefetch_sha256(path: &Path) {
    let Some(st) = stamp(path) else { return };
    let file = st.0.clone();
    let spawned = std::thread::Builder::new()
        .name("sha256".into())
        .spawn(move || aion_model::weights::sha256_file(&file).ok());
    if let (Ok(handle), Ok(mut pending)) = (spawned, PREFETCHED.lock()) {
        pending.push((st, handle));
    }
}

/// SHA-256 of `path`: the prefetched digest when there is one for the file as it is now.
fn sha256_of(path: &Path) -> Result<String> {
    let now = stamp(path);
    let taken = PREFETCHED.lock().ok().and_then(|mut p| {
        let i = p
            .iter()
            .position(|(st, _)| Some(&st.0) == now.as_ref().map(|n| &n.0))?;
        Some(p.swap_remove(i))
    });
    if let Some((st, handle)) = taken
        && now.as_ref() == Some(&st)
        && let Ok(Some(digest)) = handle.join()
        && stamp(path) == now
    {
        return Ok(digest);
    }
    Ok(aion_model::weights::sha256_file(path)?)
}

/// SHA-256 of each file, keyed by its path relative to `root`; computed on rank 0 and broadcast.
pub fn checksums(session: &Session, root: &Path, files: &[PathBuf]) -> Result<String> {
    let json = if session.is_root() {
        let mut map = BTreeMap::new();
        for f in files {
            let rel = f.strip_prefix(root).unwrap_or(f).display().to_string();
            map.insert(rel, sha256_of(f)?);
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

    #[test]
    fn a_prefetched_digest_is_used_only_for_the_file_as_it_is() {
        use aion_model::weights::sha256_file;
        let dir = std::env::temp_dir().join(format!("aion-prefetch-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("model.safetensors");
        std::fs::write(&f, vec![7u8; 3 << 20]).unwrap();
        super::prefetch_sha256(&f);
        assert_eq!(super::sha256_of(&f).unwrap(), sha256_file(&f).unwrap());
        // Changed after the prefetch started: the new content's digest, not the stale one.
        super::prefetch_sha256(&f);
        std::fs::write(&f, vec![8u8; (3 << 20) + 1]).unwrap();
        assert_eq!(super::sha256_of(&f).unwrap(), sha256_file(&f).unwrap());
        // A file that vanished is an error naming it, prefetched or not.
        super::prefetch_sha256(&f);
        std::fs::remove_file(&f).unwrap();
        let e = super::sha256_of(&f).unwrap_err();
        assert!(format!("{e:#}").contains("model.safetensors"), "{e:#}");
        std::fs::remove_dir_all(&dir).ok();
    }
}
